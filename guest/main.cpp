// ztee-agent: PID 1 of every libztee microVM. See guest/README.md.
//
//   ztee-agent              as /init: boot the VM, then serve port "ztee.agent"
//   ztee-agent --port PATH  (testing) serve an already-set-up device or FIFO pair
//   ztee-agent --protocol   print the host<->agent protocol version it speaks
//                           (the image builder records it in the manifest)
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "agent.hpp"
#include "boot.hpp"
#include "util.hpp"

int main(int argc, char** argv) {
  using namespace ztee::guest;
  timespec boot{};
  ::clock_gettime(CLOCK_BOOTTIME, &boot);
  int64_t start_ms = static_cast<int64_t>(boot.tv_sec) * 1000 + boot.tv_nsec / 1000000;
  std::string port_path;
  if (argc == 2 && std::strcmp(argv[1], "--protocol") == 0 && ::getpid() != 1) {
    std::printf("%d\n", ztee::proto::kVersion);
    return 0;
  }
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--port") == 0 && i + 1 < argc) port_path = argv[++i];
  }
  bool pid1 = ::getpid() == 1;
  try {
    std::vector<Layer> layers;
    if (pid1) layers = boot_or_die();
    Agent agent("ztee.agent", port_path, start_ms);
    agent.set_layers(std::move(layers));
    return agent.run();
  } catch (const std::exception& e) {
    if (pid1) die(std::string("unexpected error: ") + e.what());
    log_line(std::string("fatal: ") + e.what());
    return 1;
  }
}
