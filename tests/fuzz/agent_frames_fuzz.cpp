// Fuzz target for the host's parsing of guest-controlled bytes: the frame
// decoder and the channel's routing/validation. Built as a libFuzzer target
// with clang (-DZTEE_FUZZ=ON), and always as a corpus replayer that CTest runs.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "agent/channel.hpp"
#include "agent/protocol.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ztee;
  // Several streams open, as during real execs; handlers look at payloads.
  detail::AgentChannel ch(nullptr, [](std::string) {});
  size_t seen = 0;
  for (int i = 0; i < 4; ++i)
    ch.open_stream([&](const proto::FrameHeader& h, std::string_view p) {
      seen += p.size();
      if (h.type == proto::MsgType::kExit) ch.close_stream(h.stream);
    });
  // Feed in irregular chunks so partial headers are exercised.
  size_t off = 0, step = 1;
  while (off < size) {
    size_t n = std::min(step, size - off);
    ch.receive(std::string_view(reinterpret_cast<const char*>(data) + off, n));
    off += n;
    step = step * 3 % 97 + 1;
  }
  return 0;
}
