// ztee-bench-kernels: the same guest workloads on two images that differ in
// their kernel, in one run: the minimal kernel (the measured image) against
// Debian's cloud kernel (the baseline). Every sample alternates between the
// two images, so machine load affects both alike. Besides wall time each
// figure has the VMM's CPU time (the QEMU process, all threads; see
// vmm_cpu_ms): under software emulation that is the work the guest
// kernel causes, and it stays comparable when other processes share the CPUs.
//
//   ztee-bench-kernels [--minimal DIR] [--debian DIR] [--boots N] [--execs N]
//                      [--big N] [--clones N]
//
// Defaults: --minimal the default image, --debian /var/lib/ztee/images/debian
// (`ztee image build --kernel debian --out /var/lib/ztee/images/debian`),
// 4 boots, 30 execs of `true` and of `python3 -c pass`, 10 execs of 1 MiB of
// stdout, 8 clones (template snapshot -> clone -> first exec `true`).
//
// Exec `true` is also taken apart, each step as many times as `true` (rows
// "parts of an exec"): a ping (the round trip), an exec of a missing command
// (the agent finds nothing on PATH: no child), an exec whose execve fails (the
// child is started), and execs of two static programs built with this
// benchmark (ztee-bench-guest-exit: no C library; ztee-bench-guest-main: glibc
// without the dynamic loader), written into each guest's /tmp.
#include <ztee/ztee.hpp>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>

#include "bench_common.hpp"

using namespace ztee;
using namespace ztee::bench;

namespace {

struct Image {
  std::string label;  // "debian" or "minimal"
  std::string dir;
  std::string kernel;  // manifest kernel_version
};

// CPU time of a VMM, in ms: its cgroup's usage (the jail gives every VMM its
// own cgroup; threads that have exited included) from cgroup v2's cpu.stat or
// v1's cpuacct.usage, else the sum of its threads' run time from
// /proc/PID/task/*/schedstat (threads that have exited are then missing; the
// VMM's are long-lived).
double vmm_cpu_ms(int pid) {
  std::ifstream cg(fmt::format("/proc/{}/cgroup", pid));
  std::string line;
  while (std::getline(cg, line)) {
    auto c1 = line.find(':'), c2 = line.find(':', c1 + 1);
    if (c1 == std::string::npos || c2 == std::string::npos) continue;
    std::string ctrl = line.substr(c1 + 1, c2 - c1 - 1), path = line.substr(c2 + 1);
    if (path == "/") continue;  // the root group counts everything on the host
    if (ctrl.empty()) {
      std::ifstream st("/sys/fs/cgroup" + path + "/cpu.stat");
      std::string key;
      unsigned long long v = 0;
      while (st >> key >> v)
        if (key == "usage_usec") return static_cast<double>(v) / 1e3;
    } else if (ctrl.find("cpuacct") != std::string::npos) {
      for (const char* mnt : {"/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/cpu,cpuacct"}) {
        std::ifstream u(std::string(mnt) + path + "/cpuacct.usage");
        unsigned long long ns = 0;
        if (u >> ns) return static_cast<double>(ns) / 1e6;
      }
    }
  }
  double ms = 0;
  bool any = false;
  std::error_code ec;
  for (auto& t : std::filesystem::directory_iterator(fmt::format("/proc/{}/task", pid), ec)) {
    std::ifstream f(t.path() / "schedstat");
    unsigned long long ns = 0;
    if (f >> ns) {
      ms += static_cast<double>(ns) / 1e6;
      any = true;
    }
  }
  if (!any) die(fmt::format("cannot read the CPU time of VMM {} (/proc/{}/task/*/schedstat)", pid, pid));
  return ms;
}

std::string manifest_kernel(const std::string& dir) {
  auto img = detail::load_image_manifest(dir);
  if (!img) die(fmt::format("no usable guest image at {}: {}", dir, img.error().message));
  return img->kernel_version;
}

struct Samples {
  std::vector<double> wall, cpu;
};

struct Row {
  std::string metric, what;
  std::array<Samples, 2> s;  // [0] debian, [1] minimal
};

Sandbox boot(Runtime& rt, const Image& img, bool snapshottable = false) {
  SandboxOptions o;
  o.image_dir = img.dir;
  o.snapshottable = snapshottable;
  auto sb = rt.create_sandbox(o);
  if (!sb) die(fmt::format("create_sandbox on {}: {}", img.dir, sb.error().message));
  return std::move(*sb);
}

void exec_ok(Sandbox& sb, const std::vector<std::string>& argv, uint64_t want_stdout = UINT64_MAX) {
  ExecOptions e;
  e.argv = argv;
  auto r = sb.exec(e);
  if (!r) die(fmt::format("exec {}: {}", argv[0], r.error().message));
  if (r->exit_code != 0) die(fmt::format("exec {}: exit {} ({})", argv[0], r->exit_code, r->stderr_data));
  if (want_stdout != UINT64_MAX && r->stdout_data.size() != want_stdout)
    die(fmt::format("exec {}: {} bytes of stdout, want {}", argv[0], r->stdout_data.size(), want_stdout));
}

// An exec that must fail to start (the command is missing).
void exec_fails(Sandbox& sb, const std::string& cmd) {
  ExecOptions e;
  e.argv = {cmd};
  auto r = sb.exec(e);
  if (r) die(fmt::format("exec {} did not fail (exit {})", cmd, r->exit_code));
}

// A file next to this program (the guest programs built with it).
std::string beside_me(const std::string& name) {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  auto p = self.parent_path() / name;
  std::ifstream f(p, std::ios::binary);
  if (ec || !f) die(fmt::format("{} is missing next to this benchmark: build it (cmake --build build)", p.string()));
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void destroy_ok(Sandbox& sb) {
  if (auto d = sb.destroy(); !d) die(fmt::format("destroy {}: {}", sb.id(), d.error().message));
}

void print_row(const Row& r) {
  double dw = percentile(r.s[0].wall, 0.5), mw = percentile(r.s[1].wall, 0.5);
  double dc = percentile(r.s[0].cpu, 0.5), mc = percentile(r.s[1].cpu, 0.5);
  std::printf("  %-34s wall p50 %8.2f / %8.2f ms (%.2f)   VMM CPU p50 %8.2f / %8.2f ms (%.2f)  n=%zu\n",
              r.what.c_str(), dw, mw, mw / dw, dc, mc, mc / dc, r.s[0].wall.size());
  // The ratio's own spread: the samples in five consecutive blocks, each with
  // its own p50 ratio. On a host whose speed drifts, one run's ratio is only
  // as good as the blocks agree.
  constexpr size_t kBlocks = 5;
  size_t n = r.s[0].wall.size();
  if (n < 5 * kBlocks) return;
  double lo = 1e300, hi = 0;
  for (size_t b = 0; b < kBlocks; ++b) {
    size_t from = b * n / kBlocks, to = (b + 1) * n / kBlocks;
    std::vector<double> d(r.s[0].wall.begin() + from, r.s[0].wall.begin() + to);
    std::vector<double> m(r.s[1].wall.begin() + from, r.s[1].wall.begin() + to);
    double ratio = percentile(m, 0.5) / percentile(d, 0.5);
    lo = std::min(lo, ratio);
    hi = std::max(hi, ratio);
  }
  std::printf("  %-34s wall p50 ratio in %zu blocks of ~%zu: %.2f-%.2f\n", "", kBlocks, n / kBlocks, lo, hi);
}

}  // namespace

int main(int argc, char** argv) {
  Args args(argc, argv,
            "ztee-bench-kernels [--minimal DIR] [--debian DIR] [--boots N] [--execs N]\n"
            "                          [--big N] [--clones N]");
  std::string minimal_dir = args.str("--minimal", default_image_dir());
  std::string debian_dir = args.str("--debian", "/var/lib/ztee/images/debian");
  long boots = args.num("--boots", 4);
  long execs = args.num("--execs", 30);
  long big = args.num("--big", 10);
  long clones = args.num("--clones", 8);
  args.finish();
  if (boots < 1 || execs < 1 || big < 1 || clones < 0) die("--boots, --execs, --big must be >= 1, --clones >= 0");
  std::array<Image, 2> img{Image{"debian", debian_dir, ""}, Image{"minimal", minimal_dir, ""}};
  for (auto& i : img) i.kernel = manifest_kernel(i.dir);
  if (img[1].kernel.find("-ztee-minimal") == std::string::npos)
    die(fmt::format("{} has kernel {}, not the minimal one: pass --minimal DIR "
                    "(`ztee image build --kernel minimal --out DIR`)",
                    img[1].dir, img[1].kernel));
  if (img[0].kernel.find("-ztee-minimal") != std::string::npos)
    die(fmt::format("{} has the minimal kernel {}: pass --debian DIR "
                    "(`ztee image build --kernel debian --out DIR`)",
                    img[0].dir, img[0].kernel));

  auto rt = Runtime::create();
  if (!rt) die(fmt::format("Runtime::create: {}", rt.error().message));
  std::printf("backend: %s\n", rt->backend_description().c_str());
  for (auto& i : img) std::printf("%-8s %s (kernel %s)\n", i.label.c_str(), i.dir.c_str(), i.kernel.c_str());
  std::printf("each figure: debian / minimal (minimal / debian); samples alternate between the images\n\n");
  std::fflush(stdout);

  // Warm-up boot of each (page cache, the runtime's one-time image checks).
  for (auto& i : img) {
    Sandbox sb = boot(*rt, i);
    destroy_ok(sb);
  }

  Row boot_row{"kernel_boot_to_ready", "cold boot -> READY", {}};
  for (long n = 0; n < boots; ++n) {
    for (int k = 0; k < 2; ++k) {
      uint64_t t0 = now_ns();
      Sandbox sb = boot(*rt, img[k]);
      boot_row.s[k].wall.push_back(ms_since(t0));
      boot_row.s[k].cpu.push_back(vmm_cpu_ms(sb.vmm_pid()));
      destroy_ok(sb);
    }
  }

  // Warm execs: one sandbox per image, execs alternate between them.
  std::array<Sandbox, 2> sb{boot(*rt, img[0]), boot(*rt, img[1])};
  struct Work {
    std::string metric, what;
    std::vector<std::string> argv;
    long n;
    uint64_t stdout_bytes;
  };
  std::vector<Work> work{
      {"kernel_exec_true", "warm exec true", {"true"}, execs, 0},
      {"kernel_exec_1mib", "warm exec head -c 1MiB /dev/zero", {"head", "-c", "1048576", "/dev/zero"}, big, 1u << 20},
      {"kernel_exec_python", "warm exec python3 -c pass", {"python3", "-c", "pass"}, execs, 0},
  };
  std::vector<Row> rows{boot_row};
  // A row of n samples of `run` on each sandbox, alternating between them,
  // after one uncounted run on each (translation warm-up).
  auto alternate = [&](const std::string& metric, const std::string& what, long n,
                       const std::function<void(Sandbox&)>& run) {
    for (int k = 0; k < 2; ++k) run(sb[k]);
    Row r{metric, what, {}};
    for (long i = 0; i < n; ++i) {
      for (int k = 0; k < 2; ++k) {
        double c0 = vmm_cpu_ms(sb[k].vmm_pid());
        uint64_t t0 = now_ns();
        run(sb[k]);
        r.s[k].wall.push_back(ms_since(t0));
        r.s[k].cpu.push_back(vmm_cpu_ms(sb[k].vmm_pid()) - c0);
      }
    }
    rows.push_back(std::move(r));
  };
  for (auto& w : work)
    alternate(w.metric, w.what, w.n, [&w](Sandbox& s) { exec_ok(s, w.argv, w.stdout_bytes); });
  // The parts of an exec of `true`, each alternating between the images.
  for (int k = 0; k < 2; ++k)
    for (const char* prog : {"ztee-bench-guest-exit", "ztee-bench-guest-main"})
      if (auto w = sb[k].write_file(std::string("/tmp/") + prog, beside_me(prog), 0755); !w)
        die(fmt::format("write /tmp/{} into {}: {}", prog, img[k].label, w.error().message));
  struct Part {
    std::string metric, what;
    std::function<void(Sandbox&)> run;
  };
  std::vector<Part> parts{
      {"kernel_part_ping", "part: ping (round trip)",
       [](Sandbox& s) {
         if (auto p = s.ping(); !p) die(fmt::format("ping: {}", p.error().message));
       }},
      {"kernel_part_exec_not_on_path", "part: exec, not on PATH (no child)",
       [](Sandbox& s) { exec_fails(s, "ztee-bench-no-such-command"); }},
      {"kernel_part_exec_failed_execve", "part: exec, execve fails",
       [](Sandbox& s) { exec_fails(s, "/ztee-bench-no-such-file"); }},
      {"kernel_part_exec_static_nolibc", "part: exec static, no libc",
       [](Sandbox& s) { exec_ok(s, {"/tmp/ztee-bench-guest-exit"}); }},
      {"kernel_part_exec_static_glibc", "part: exec static glibc main",
       [](Sandbox& s) { exec_ok(s, {"/tmp/ztee-bench-guest-main"}); }},
  };
  for (auto& p : parts) alternate(p.metric, p.what, execs, p.run);

  for (auto& s : sb) destroy_ok(s);

  // Snapshot clones: a template per image, then clone -> first exec.
  if (clones > 0) {
    auto tmp = std::filesystem::temp_directory_path() / fmt::format("ztee-bench-kernels.{}", ::getpid());
    std::filesystem::create_directories(tmp);
    std::array<std::string, 2> tpl;
    for (int k = 0; k < 2; ++k) {
      Sandbox t = boot(*rt, img[k], true);
      exec_ok(t, {"true"});
      tpl[k] = (tmp / img[k].label).string();
      if (auto s = t.snapshot(tpl[k]); !s) die(fmt::format("snapshot of {}: {}", img[k].label, s.error().message));
    }
    Row r{"kernel_clone_first_exec", "clone -> first exec true", {}};
    for (long n = 0; n < clones; ++n) {
      for (int k = 0; k < 2; ++k) {
        SandboxOptions o;
        o.image_dir = img[k].dir;
        o.template_dir = tpl[k];
        uint64_t t0 = now_ns();
        auto c = rt->create_sandbox(o);
        if (!c) die(fmt::format("clone of {}: {}", img[k].label, c.error().message));
        exec_ok(*c, {"true"});
        r.s[k].wall.push_back(ms_since(t0));
        r.s[k].cpu.push_back(vmm_cpu_ms(c->vmm_pid()));
        destroy_ok(*c);
      }
    }
    rows.push_back(std::move(r));
    std::error_code ec;
    std::filesystem::remove_all(tmp, ec);
  }

  std::printf("debian / minimal (minimal / debian):\n");
  for (auto& r : rows) print_row(r);
  std::printf("\ntargets under TCG: cold boot <= 0.7x, warm exec true <= 0.65x the Debian kernel's\n\n");
  for (auto& r : rows) {
    print_metric(r.metric + "_ms", percentile(r.s[1].wall, 0.5), "ms", percentile(r.s[0].wall, 0.5));
    print_metric(r.metric + "_vmm_cpu_ms", percentile(r.s[1].cpu, 0.5), "ms", percentile(r.s[0].cpu, 0.5));
  }
  return 0;
}
