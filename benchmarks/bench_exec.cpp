// ztee-bench-exec: agent round trip and exec latency on one booted sandbox.
//
//   agent_rtt_p50_us / _p99_us  Sandbox::ping (PING -> empty RESULT), baseline: a
//                               round trip through an echo thread over a local
//                               Unix socketpair (the host-side floor of one
//                               cross-thread request/response).
//   exec_true_p50_ms            exec argv {"true"}
//   exec_1mib_p50_ms            exec of `head -c 1048576 /dev/zero`
//                               Both on a default sandbox (GuestAslr::kAuto:
//                               guest ASLR off under TCG); baseline: the same
//                               exec, interleaved, on a second sandbox with
//                               guest ASLR on (the kernel's own default).
//
// Also (printed, not a metric, unless --no-bare): PING sent straight over the
// agent socket of a bare QEMU with the same argv, no libztee event loop, which
// splits the rtt into guest/QEMU cost and libztee's host-side cost.
// Usage: ztee-bench-exec [--pings N] [--execs N] [--big N] [--no-bare]
#include <ztee/ztee.hpp>

#include <thread>

#include "bench_common.hpp"

using namespace ztee;
using namespace ztee::bench;

namespace {

// Echo thread over a socketpair: reads a 16-byte frame header, writes it back.
class Echo {
 public:
  Echo() {
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv_) != 0) die("socketpair failed");
    thread_ = std::thread([fd = sv_[1]] {
      char buf[proto::kHeaderSize];
      for (;;) {
        size_t got = 0;
        while (got < sizeof buf) {
          ssize_t n = ::read(fd, buf + got, sizeof buf - got);
          if (n <= 0) return;
          got += static_cast<size_t>(n);
        }
        if (::write(fd, buf, sizeof buf) != static_cast<ssize_t>(sizeof buf)) return;
      }
    });
  }
  ~Echo() {
    ::shutdown(sv_[0], SHUT_RDWR);
    thread_.join();
    ::close(sv_[0]);
    ::close(sv_[1]);
  }
  double round_trip_us() {
    std::string f;
    proto::append_frame(f, proto::MsgType::kPing, 1, "");
    uint64_t t0 = now_ns();
    if (::write(sv_[0], f.data(), f.size()) != static_cast<ssize_t>(f.size())) die("echo write failed");
    char buf[proto::kHeaderSize];
    size_t got = 0;
    while (got < sizeof buf) {
      ssize_t n = ::read(sv_[0], buf + got, sizeof buf - got);
      if (n <= 0) die("echo read failed");
      got += static_cast<size_t>(n);
    }
    return static_cast<double>(now_ns() - t0) / 1e3;
  }

 private:
  int sv_[2];
  std::thread thread_;
};

double ping_us(Sandbox& sb) {
  uint64_t t0 = now_ns();
  auto r = sb.ping();
  uint64_t t1 = now_ns();
  if (!r) die(fmt::format("ping: {}", r.error().message));
  return static_cast<double>(t1 - t0) / 1e3;
}

double bare_ping_us(BareQemu& q, uint32_t stream) {
  uint64_t t0 = now_ns();
  if (!q.send(proto::MsgType::kPing, stream, "")) die("bare ping: send failed");
  proto::FrameHeader h;
  std::string p;
  if (!q.wait_frame(stream, 10000, &h, &p)) die("bare ping: no reply");
  return static_cast<double>(now_ns() - t0) / 1e3;
}

void summary(const char* what, const std::vector<double>& v, const char* unit) {
  std::printf("  %-34s p50 %9.1f  p99 %9.1f  min %9.1f  max %9.1f %s  (n=%zu)\n", what, percentile(v, 0.5),
              percentile(v, 0.99), minimum(v), maximum(v), unit, v.size());
}

}  // namespace

int main(int argc, char** argv) {
  Args args(argc, argv, "ztee-bench-exec [--pings N] [--execs N] [--big N] [--no-bare]");
  long pings = args.num("--pings", 2000);
  long execs = args.num("--execs", 50);
  long bigs = args.num("--big", 20);
  bool with_bare = !args.flag("--no-bare");
  args.finish();
  if (pings < 1 || execs < 1 || bigs < 1) die("counts must be >= 1");

  auto rt = Runtime::create();
  if (!rt) die(fmt::format("Runtime::create: {}", rt.error().message));
  std::printf("backend: %s\n", rt->backend_description().c_str());
  uint64_t t0 = now_ns();
  auto sbr = rt->create_sandbox();
  if (!sbr) die(fmt::format("create_sandbox: {}", sbr.error().message));
  Sandbox sb = std::move(*sbr);
  std::printf("sandbox %s ready in %.0f ms\n", sb.id().c_str(), static_cast<double>(now_ns() - t0) / 1e6);

  std::optional<BareQemu> bare;
  if (with_bare) {
    BareSetup setup = bare_setup(rt->options().image_dir);
    bare.emplace(setup.qemu, setup.image);
    std::string err;
    if (!bare->start(&err)) die("bare qemu: " + err);
    if (!bare->send(proto::MsgType::kHello, 1, hello_payload("bare"))) die("bare qemu: HELLO send failed");
    proto::FrameHeader h;
    std::string p;
    if (!bare->wait_frame(1, 60000, &h, &p)) die("bare qemu: no HELLO reply");
    std::printf("bare qemu ready (direct agent socket, no libztee loop)\n");
  }

  Echo echo;
  uint32_t bare_stream = 2;
  // Warm-up: caches, branch predictors, the guest's first wake-ups.
  for (int i = 0; i < 200; ++i) {
    (void)ping_us(sb);
    (void)echo.round_trip_us();
    if (bare) (void)bare_ping_us(*bare, bare_stream++);
  }

  // Interleaved per sample: libztee ping, echo, bare ping.
  std::vector<double> rtt, floor_us, bare_rtt;
  for (long i = 0; i < pings; ++i) {
    rtt.push_back(ping_us(sb));
    floor_us.push_back(echo.round_trip_us());
    if (bare) bare_rtt.push_back(bare_ping_us(*bare, bare_stream++));
  }
  if (bare) bare->stop();  // the exec figures run with the two sandboxes only

  // The exec baseline: a sandbox with guest ASLR on, where every run of a
  // program maps its libraries at new addresses (under TCG: translated anew).
  SandboxOptions aslr_opts;
  aslr_opts.guest_aslr = GuestAslr::kOn;
  auto sbr2 = rt->create_sandbox(aslr_opts);
  if (!sbr2) die(fmt::format("create_sandbox (guest ASLR on): {}", sbr2.error().message));
  Sandbox sb_aslr = std::move(*sbr2);

  // Each sample: one exec on the default sandbox, then one on the ASLR one.
  auto timed_exec = [](Sandbox& s, const ExecOptions& o, size_t want_bytes, const char* what,
                       std::vector<double>& wall, std::vector<double>* guest) {
    uint64_t a = now_ns();
    auto r = s.exec(o);
    uint64_t b = now_ns();
    if (!r) die(fmt::format("exec {}: {}", what, r.error().message));
    if (r->exit_code != 0 || r->stdout_data.size() != want_bytes || r->truncated)
      die(fmt::format("exec {}: exit {} with {} bytes of stdout", what, r->exit_code, r->stdout_data.size()));
    wall.push_back(static_cast<double>(b - a) / 1e6);
    if (guest) guest->push_back(static_cast<double>(r->duration_us) / 1e3);
  };
  std::vector<double> ex_true, ex_true_guest, ex_true_aslr;
  ExecOptions tr;
  tr.argv = {"true"};
  for (int i = 0; i < 3; ++i) {
    (void)sb.exec(tr);
    (void)sb_aslr.exec(tr);
  }
  for (long i = 0; i < execs; ++i) {
    timed_exec(sb, tr, 0, "true", ex_true, &ex_true_guest);
    timed_exec(sb_aslr, tr, 0, "true (guest ASLR on)", ex_true_aslr, nullptr);
  }

  constexpr size_t kMiB = 1u << 20;
  std::vector<double> ex_big, ex_big_aslr;
  ExecOptions big;
  big.argv = {"head", "-c", std::to_string(kMiB), "/dev/zero"};
  (void)sb.exec(big);
  (void)sb_aslr.exec(big);
  for (long i = 0; i < bigs; ++i) {
    timed_exec(sb, big, kMiB, "head", ex_big, nullptr);
    timed_exec(sb_aslr, big, kMiB, "head (guest ASLR on)", ex_big_aslr, nullptr);
  }
  if (auto d = sb.destroy(); !d) die(fmt::format("destroy: {}", d.error().message));
  if (auto d = sb_aslr.destroy(); !d) die(fmt::format("destroy: {}", d.error().message));

  double rtt50 = percentile(rtt, 0.5), rtt99 = percentile(rtt, 0.99);
  double fl50 = percentile(floor_us, 0.5), fl99 = percentile(floor_us, 0.99);
  std::printf("\nagent round trip (interleaved per sample):\n");
  summary("libztee Sandbox::ping", rtt, "us");
  summary("socketpair echo thread (floor)", floor_us, "us");
  if (!bare_rtt.empty()) {
    summary("bare qemu PING, same thread", bare_rtt, "us");
    std::printf("  => libztee host-side share of p50: %.1f us of %.1f us (guest+QEMU: %.1f us)\n",
                rtt50 - percentile(bare_rtt, 0.5), rtt50, percentile(bare_rtt, 0.5));
  }
  std::printf("  target: agent_rtt_p50 <= 150 us: %s\n", rtt50 <= 150 ? "met" : "NOT met");
  std::printf("\nexec (interleaved: default sandbox, then one with guest ASLR on):\n");
  summary("exec {\"true\"} wall", ex_true, "ms");
  summary("exec {\"true\"} guest duration_us", ex_true_guest, "ms");
  summary("exec {\"true\"} wall, guest ASLR on", ex_true_aslr, "ms");
  summary("exec head -c 1MiB /dev/zero wall", ex_big, "ms");
  summary("exec head -c 1MiB, guest ASLR on", ex_big_aslr, "ms");
  double big50 = percentile(ex_big, 0.5);
  std::printf("  1 MiB stdout throughput at p50: %.1f MiB/s (includes the exec itself)\n", 1000.0 / big50);
  std::printf("\n");
  print_metric("agent_rtt_p50_us", rtt50, "us", fl50);
  print_metric("agent_rtt_p99_us", rtt99, "us", fl99);
  print_metric("exec_true_p50_ms", percentile(ex_true, 0.5), "ms", percentile(ex_true_aslr, 0.5));
  print_metric("exec_1mib_p50_ms", big50, "ms", percentile(ex_big_aslr, 0.5));
  return 0;
}
