// ztee-net-vm-tests: doctest's main, then the host-wide network state this
// process made (the host firewall table, ip_forward) is removed again once
// its last sandbox network is gone, so later suites see the host as it was.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <ztee/ztee.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  doctest::Context ctx(argc, argv);
  int rc = ctx.run();
  if (ctx.shouldExit()) return rc;
  if (auto r = ztee::remove_unused_host_network(); !r) {
    std::fprintf(stderr, "removing the host network table failed: %s\n", r.error().message.c_str());
    return rc ? rc : 1;
  }
  return rc;
}
