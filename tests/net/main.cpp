// Entry point of the privileged network tests: skips (exit 77) without root.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (::geteuid() != 0) {
    std::printf("SKIPPED: the network tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create namespaces and links\n");
    return 77;
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
