// ztee-bench-boot: cold boot to agent READY through libztee
// (Runtime::create_sandbox) against bare QEMU started with the same argv, the
// benchmark itself sending HELLO and waiting for the guest's reply.
// Runs are interleaved (libztee, bare, libztee, bare, ...) so machine load
// affects both alike. Usage: ztee-bench-boot [--runs N] [--warmup N]
#include <ztee/ztee.hpp>

#include "bench_common.hpp"

using namespace ztee;
using namespace ztee::bench;

namespace {

struct BareBoot {
  double ms;
  int64_t uptime_ms, agent_start_ms;
};

BareBoot bare_boot(BareQemu& q) {
  std::string err;
  uint64_t t0 = now_ns();
  if (!q.start(&err)) die("bare qemu: " + err);
  // The virtio-serial port buffers nothing until the guest opens it; the
  // HELLO sits in the socket until then, as it does for libztee.
  if (!q.send(proto::MsgType::kHello, 1, hello_payload("bare"))) die("bare qemu: sending HELLO failed");
  proto::FrameHeader h;
  std::string reply;
  if (!q.wait_frame(1, 60000, &h, &reply)) die("bare qemu: no HELLO reply within 60 s");
  uint64_t t1 = now_ns();
  q.stop();
  if (h.type != proto::MsgType::kHello) die(fmt::format("bare qemu: HELLO answered with type {}", int(h.type)));
  return {static_cast<double>(t1 - t0) / 1e6, json_field(reply, "uptime_ms"), json_field(reply, "agent_start_ms")};
}

double ztee_boot(Runtime& rt, double* destroy_ms) {
  uint64_t t0 = now_ns();
  auto sb = rt.create_sandbox();
  uint64_t t1 = now_ns();
  if (!sb) die(fmt::format("create_sandbox: {}", sb.error().message));
  auto d = sb->destroy();
  *destroy_ms = static_cast<double>(now_ns() - t1) / 1e6;
  if (!d) die(fmt::format("destroy: {}", d.error().message));
  return static_cast<double>(t1 - t0) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  Args args(argc, argv, "ztee-bench-boot [--runs N] [--warmup N]");
  long runs = args.num("--runs", 5);
  long warmup = args.num("--warmup", 1);
  args.finish();
  if (runs < 1) die("--runs must be >= 1");

  auto rt = Runtime::create();
  if (!rt) die(fmt::format("Runtime::create: {}", rt.error().message));
  std::printf("backend: %s\nimage: %s\n", rt->backend_description().c_str(), rt->options().image_dir.c_str());
  BareSetup setup = bare_setup(rt->options().image_dir);
  BareQemu bare(setup.qemu, setup.image);

  // Warm-up pairs (not counted): page cache, and libztee's one-time image hash.
  for (long i = 0; i < warmup; ++i) {
    double dm;
    double z = ztee_boot(*rt, &dm);
    BareBoot b = bare_boot(bare);
    std::printf("warm-up %ld: libztee %.1f ms, bare %.1f ms\n", i + 1, z, b.ms);
  }

  std::vector<double> zt, bt, destroy, guest_up, guest_agent;
  for (long i = 0; i < runs; ++i) {
    double dm;
    double z = ztee_boot(*rt, &dm);
    BareBoot b = bare_boot(bare);
    zt.push_back(z);
    bt.push_back(b.ms);
    destroy.push_back(dm);
    if (b.uptime_ms >= 0) guest_up.push_back(static_cast<double>(b.uptime_ms));
    if (b.agent_start_ms >= 0) guest_agent.push_back(static_cast<double>(b.agent_start_ms));
    std::printf("run %ld: libztee %.1f ms (destroy %.1f ms), bare %.1f ms (guest uptime at reply %lld ms, agent "
                "started at %lld ms)\n",
                i + 1, z, dm, b.ms, static_cast<long long>(b.uptime_ms), static_cast<long long>(b.agent_start_ms));
    std::fflush(stdout);
  }

  double zp = percentile(zt, 0.5), bp = percentile(bt, 0.5);
  std::printf("\nboot to READY over %ld interleaved pairs:\n", runs);
  std::printf("  libztee create_sandbox: p50 %.1f ms  min %.1f  max %.1f\n", zp, minimum(zt), maximum(zt));
  std::printf("  bare qemu (same argv):  p50 %.1f ms  min %.1f  max %.1f\n", bp, minimum(bt), maximum(bt));
  std::printf("  ratio p50: %.3f (target <= 1.10)   libztee - bare: %+.1f ms\n", zp / bp, zp - bp);
  std::printf("  libztee destroy: p50 %.1f ms (not part of the metric)\n", percentile(destroy, 0.5));
  if (!guest_up.empty() && !guest_agent.empty()) {
    double up = percentile(guest_up, 0.5), ag = percentile(guest_agent, 0.5);
    std::printf("  bare guest, CLOCK_BOOTTIME p50: agent started at %.0f ms (kernel + initramfs), HELLO reply at "
                "%.0f ms;\n  the rest of the bare figure (~%.0f ms) is QEMU start-up, kernel load and the guest's "
                "early boot before its clock starts\n",
                ag, up, bp - up);
  }
  std::printf("\n");
  print_metric("boot_to_ready_ms", zp, "ms", bp);
  return 0;
}
