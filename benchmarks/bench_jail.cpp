// Jail set-up cost per sandbox. Times, interleaved (A, B, A, B, ...):
//   baseline: spawn of the VMM binary (`qemu-system-x86_64 --version`),
//             unconfined, from clone3 until its execve succeeded;
//   jailed:   the parent-side prepare (id lease, jail skeleton, cgroups with
//             limits) plus the same spawn confined (new network, mount,
//             PID, IPC and UTS namespaces, mounts, pivot_root, uid drop,
//             no_new_privs, seccomp, closed fds) until its execve succeeded;
//   and, for comparison (not the metric), the jailed spawn joining one
//   shared empty network namespace instead of a new one per VMM.
// The metric is what the jail adds: the median over the pairs of
// (B - A), the parent-side prepare plus the confined spawn's extra time; the
// baseline is A itself (a VMM spawn without any jail). B's own p50 (the
// jailed spawn's total, VMM spawn included) is printed beside it.
// Each jailed child must then exit 0 (the loader and QEMU ran under the
// filter). Teardown (cgroup rmdir, skeleton removal, id release) is timed
// and printed, not counted. Needs root. Usage: ztee-bench-jail [--runs N] [--warmup N]
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <filesystem>
#include <thread>

#include "bench_common.hpp"
#include "jail/jail.hpp"

using namespace ztee;
using namespace ztee::bench;
using namespace ztee::detail;

namespace {


int wait_exit(Child& c) {
  siginfo_t si{};
  while (::waitid(P_PIDFD, static_cast<id_t>(c.pidfd()), &si, WEXITED) < 0 && errno == EINTR) {
  }
  c.try_reap();
  return si.si_code == CLD_EXITED ? si.si_status : 128 + si.si_status;
}

}  // namespace

int main(int argc, char** argv) {
  Args args(argc, argv, "ztee-bench-jail [--runs N] [--warmup N]");
  long runs = args.num("--runs", 50);
  long warmup = args.num("--warmup", 3);
  args.finish();
  if (runs < 1) die("--runs must be >= 1");
  if (::geteuid() != 0) die("ztee-bench-jail needs root (the jail does)");
  auto qemu = probe_qemu("", "", true);
  if (!qemu) die(qemu.error().message);
  std::printf("backend: qemu/%s (%s)\n", qemu->kvm ? "kvm" : "tcg", qemu->accel_reason.c_str());
  auto layout = detect_cgroups("ztee-bench");
  if (!layout) die(layout.error().message);
  auto filter = build_vmm_seccomp(qemu->kvm);
  if (!filter) die(filter.error().message);
  uint64_t t_root = now_ns();
  auto vmm_root = ensure_vmm_root("/var/lib/ztee/vmm", qemu->binary, qemu->kvm);
  if (!vmm_root) die(vmm_root.error().message);
  std::printf("VMM root %s (ready in %.1f ms; built once per binary)\n", vmm_root->c_str(), ms_since(t_root));
  std::string binary = std::filesystem::canonical(qemu->binary).string();
  char tmpl[] = "/tmp/ztee-bench-jail.XXXXXX";
  if (!::mkdtemp(tmpl)) die("mkdtemp failed");
  std::string state = tmpl;
  std::string image = state + "/image-file";
  { FILE* f = std::fopen(image.c_str(), "w"); if (f) std::fclose(f); }

  // The alternative measured beside it: one empty network namespace made
  // up front and joined by every VMM (unshare moves only this thread).
  UniqueFd shared_netns;
  std::thread([&] {
    if (::unshare(CLONE_NEWNET) == 0) shared_netns = UniqueFd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  }).join();
  if (!shared_netns.valid()) die("cannot make a network namespace");
  std::vector<double> bare, jailed, jailed_shared, prepare, teardown;
  for (long i = 0; i < warmup + runs; ++i) {
    bool count = i >= warmup;
    // A: unconfined spawn.
    {
      SpawnSpec spec;
      spec.argv = {binary, "--version"};
      uint64_t t0 = now_ns();
      auto c = spawn(spec);
      double t = ms_since(t0);
      if (!c) die(c.error().message);
      if (int rc = wait_exit(*c); rc != 0) die(fmt::format("bare qemu --version exited {}", rc));
      if (count) bare.push_back(t);
    }
    // B: prepare + confined spawn with a new network namespace of its own
    // (as the runtime does); C: the same joining one shared empty namespace.
    for (int variant = 0; variant < 2; ++variant) {
      std::string id = fmt::format("sb-bench{:06}{}", i, variant);
      uint64_t t0 = now_ns();
      std::string dir = state + "/" + id;
      if (::mkdir(dir.c_str(), 0700) != 0) die("mkdir " + dir);
      auto lease = allocate_id(state, 600000, 65536);
      if (!lease) die(lease.error().message);
      JailRequest req;
      req.state_dir = state;
      req.id = id;
      req.vmm_root = *vmm_root;
      req.read_only = {{image, "kernel"}, {image, "initramfs"}, {image, "rootfs"}};
      req.kvm = qemu->kvm;
      req.uid = req.gid = lease->id();
      req.cgroups = *layout;
      req.limits = {(256ull + 384) << 20, 100, 128};
      req.fsize_bytes = 512ull << 20;
      req.seccomp = &*filter;
      if (variant == 1) req.netns_fd = shared_netns.get();
      auto j = prepare_jail(req);
      if (!j) die(j.error().message);
      double tp = ms_since(t0);
      SpawnSpec spec;
      spec.argv = {binary, "--version"};
      spec.confinement = &j->confinement;
      auto c = spawn(spec);
      double t = ms_since(t0);
      if (!c) die(c.error().message);
      j->cgroups.procs.clear();
      j->cgroups.v2_dir.reset();
      if (int rc = wait_exit(*c); rc != 0) die(fmt::format("jailed qemu --version exited {}", rc));
      uint64_t t1 = now_ns();
      auto r = remove_jail_leftovers(state, id, *layout);
      if (!r) die(r.error().message);
      if (auto rel = lease->release(); !rel) die(rel.error().message);
      ::rmdir(dir.c_str());
      double td = ms_since(t1);
      if (count) {
        (variant == 0 ? jailed : jailed_shared).push_back(t);
        if (variant == 0) {
          prepare.push_back(tp);
          teardown.push_back(td);
        }
      }
    }
  }
  std::filesystem::remove_all(state);
  for (const auto& p : layout->parents) ::rmdir(p.c_str());
  double j50 = percentile(jailed, 0.5), b50 = percentile(bare, 0.5);
  std::vector<double> added, added_shared;
  for (size_t k = 0; k < jailed.size() && k < bare.size(); ++k) {
    added.push_back(jailed[k] - bare[k]);
    added_shared.push_back(jailed_shared[k] - bare[k]);
  }
  double a50 = percentile(added, 0.5);
  std::printf("runs %ld (after %ld warm-up rounds), %s\n", runs, warmup, qemu->kvm ? "kvm" : "tcg");
  std::printf("jailed: prepare + spawn to exec  p50 %.3f ms  p99 %.3f ms  (min %.3f, max %.3f)\n", j50,
              percentile(jailed, 0.99), minimum(jailed), maximum(jailed));
  std::printf("  of which parent-side prepare   p50 %.3f ms\n", percentile(prepare, 0.5));
  std::printf("bare:   spawn to exec            p50 %.3f ms  p99 %.3f ms\n", b50, percentile(bare, 0.99));
  std::printf("jail cost: median of (jailed - bare) over the pairs %.3f ms  (difference of the p50s %.3f ms)\n", a50,
              j50 - b50);
  std::printf("  joining one shared empty netns instead (not used): median %.3f ms  (jailed p50 %.3f ms, p99 %.3f, max %.3f)\n",
              percentile(added_shared, 0.5), percentile(jailed_shared, 0.5), percentile(jailed_shared, 0.99), maximum(jailed_shared));
  std::printf("teardown (not counted)           p50 %.3f ms  p99 %.3f ms\n", percentile(teardown, 0.5),
              percentile(teardown, 0.99));
  print_metric("jail_setup_ms", a50, "ms", b50);
  return 0;
}
