#include "vmm/qemu/qemu.hpp"

#include "vmm/accel.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/socket.h>
#include <unistd.h>
#include <x86intrin.h>

#include <ctime>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace ztee::detail {

namespace {

std::string find_on_path(const std::string& name) {
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : "";
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/local/bin:/usr/bin:/bin";
  std::stringstream ss(p);
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (dir.empty()) continue;
    std::string cand = dir + "/" + name;
    if (::access(cand.c_str(), X_OK) == 0) return cand;
  }
  return "";
}

Result<std::pair<UniqueFd, UniqueFd>> make_socketpair() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    int e = errno;
    return make_error(Errc::kIo, fmt::format("socketpair: {}", std::strerror(e)), e);
  }
  return std::pair{UniqueFd(sv[0]), UniqueFd(sv[1])};
}

}  // namespace

Result<QemuConfig> probe_qemu(const std::string& binary, const std::string& accel, bool own_node) {
  std::string want = binary;
  if (want.empty()) {
    const char* env = std::getenv("ZTEE_QEMU");
    want = env && *env ? env : "qemu-system-x86_64";
  }
  std::string found = find_on_path(want);
  if (found.empty()) {
    return make_error(Errc::kBackendUnavailable,
                      fmt::format("backend qemu unavailable: {} {} (install it: apt-get install "
                                  "qemu-system-x86, or set ZTEE_QEMU)",
                                  want, want.find('/') == std::string::npos ? "not on PATH" : "is not an executable file"),
                      ENOENT);
  }
  QemuConfig cfg;
  cfg.binary = found;
  auto choice = choose_accel(accel, probe_kvm_host(), own_node);
  if (!choice) return std::move(choice).error();
  cfg.kvm = choice->kvm;
  cfg.accel_reason = std::move(choice->reason);
  if (!cfg.kvm) cfg.tsc_khz = measure_tsc_khz();
  return cfg;
}

uint64_t measure_tsc_khz() {
  auto now_ns = [] {
    struct timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
  };
  uint64_t n0 = now_ns(), t0 = __rdtsc();
  struct timespec nap{0, 20 * 1000 * 1000};
  while (::nanosleep(&nap, &nap) != 0 && errno == EINTR) {
  }
  uint64_t n1 = now_ns(), t1 = __rdtsc();
  if (n1 <= n0 || t1 <= t0) return 0;
  return (t1 - t0) * 1000000ull / (n1 - n0);
}

std::string qemu_kernel_cmdline(const Image& img, uint64_t tsc_khz) {
  std::string cmd = "console=ttyS0 quiet loglevel=1 panic=-1 reboot=t random.trust_cpu=on";
  if (tsc_khz) cmd += fmt::format(" tsc_early_khz={}", tsc_khz);
  if (!img.cmdline.empty()) cmd += " " + img.cmdline;
  return cmd;
}

std::vector<std::string> QemuDriver::argv(const VmConfig& cfg, int agent_fd, int qmp_fd, int console_fd,
                                          int tap_fd) const {
  std::string machine = "microvm,x-option-roms=off,rtc=on";
  if (!cfg.mem_path.empty()) machine += ",memory-backend=ram";
  std::vector<std::string> a = {
      cfg.binary.empty() ? cfg_.binary : cfg.binary,
      "-M", machine,
      "-accel", cfg_.kvm ? "kvm" : "tcg",
      "-cpu", cfg_.kvm ? "host" : "max",
      "-m", std::to_string(cfg.memory_mib),
      "-smp", std::to_string(cfg.vcpus),
      "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
      "-name", cfg.id,
      "-kernel", cfg.image.vmlinux.path.empty() ? cfg.image.kernel.path : cfg.image.vmlinux.path,
      "-initrd", cfg.image.initramfs.path,
      "-append", qemu_kernel_cmdline(cfg.image, cfg_.tsc_khz) + (cfg.extra_cmdline.empty() ? "" : " " + cfg.extra_cmdline),
      "-drive", fmt::format("id=root,file={},format=raw,if=none,readonly=on", cfg.image.rootfs.path),
      "-device", "virtio-blk-device,drive=root",
      "-device", "virtio-serial-device",
      "-chardev", fmt::format("socket,id=agent,fd={}", agent_fd),
      "-device", "virtserialport,chardev=agent,name=ztee.agent",
      "-device", "virtio-rng-device",
      "-chardev", fmt::format("socket,id=con,fd={}", console_fd),
      "-serial", "chardev:con",
      "-chardev", fmt::format("socket,id=qmp,fd={}", qmp_fd),
      "-mon", "chardev=qmp,mode=control",
  };
  if (!cfg.mem_path.empty()) {
    a.push_back("-object");
    a.push_back(fmt::format("memory-backend-file,id=ram,size={}M,mem-path={},share={}", cfg.memory_mib,
                            cfg.mem_path, cfg.mem_shared ? "on" : "off"));
  }
  for (size_t i = 0; i < cfg.disks.size(); ++i) {
    // readonly=on: QEMU opens the image O_RDONLY and the guest sees a read-only disk.
    a.insert(a.end(), {"-drive", fmt::format("id=m{},file={},format=raw,if=none,readonly=on", i, cfg.disks[i]),
                       "-device", fmt::format("virtio-blk-device,drive=m{},serial=ztee-m{}", i, i)});
  }
  if (tap_fd >= 0) {
    a.insert(a.end(), {"-netdev", fmt::format("tap,id=net0,fd={}", tap_fd), "-device", "virtio-net-device,netdev=net0"});
  }
  if (cfg.incoming) {
    a.push_back("-incoming");
    a.push_back("defer");
  }
  return a;
}

std::string QemuDriver::version() {
  std::lock_guard lk(version_mu_);
  if (!version_.empty()) return version_;
  auto out = make_socketpair();
  if (!out) return "unknown";
  SpawnSpec spec;
  spec.argv = {cfg_.binary, "--version"};
  spec.env = {"LC_ALL=C"};
  spec.output_fd = out->second.get();
  auto child = spawn(spec);
  out->second.reset();
  if (!child) return "unknown";
  std::string text;
  char buf[512];
  ssize_t n;
  while (text.size() < 4096 && (n = ::read(out->first.get(), buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  child->kill_and_reap();
  std::string line = text.substr(0, text.find('\n'));
  version_ = line.empty() ? "unknown" : line;
  return version_;
}

Result<LaunchedVm> QemuDriver::launch(const VmConfig& cfg) {
  auto agent = make_socketpair();
  if (!agent) return std::move(agent).error();
  auto qmp = make_socketpair();
  if (!qmp) return std::move(qmp).error();
  auto con = make_socketpair();
  if (!con) return std::move(con).error();
  auto log = make_socketpair();
  if (!log) return std::move(log).error();

  SpawnSpec spec;
  // Child fd layout: 3 agent, 4 qmp, 5 console, then the TAP fd and the
  // incoming state when there are; stdout/stderr: log socket.
  spec.fds = {agent->second.get(), qmp->second.get(), con->second.get()};
  int tap = -1, incoming = -1;
  if (cfg.tap_fd >= 0) {
    tap = 3 + static_cast<int>(spec.fds.size());
    spec.fds.push_back(cfg.tap_fd);
  }
  if (cfg.incoming_fd >= 0) {
    incoming = 3 + static_cast<int>(spec.fds.size());
    spec.fds.push_back(cfg.incoming_fd);
  }
  spec.argv = argv(cfg, 3, 4, 5, tap);
  // A jailed VMM gets an empty environment; it needs none.
  if (!cfg.confinement) spec.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"};
  spec.output_fd = log->second.get();
  spec.confinement = cfg.confinement;
  auto child = spawn(spec);
  if (!child) return std::move(child).error();
  LaunchedVm vm;
  if (incoming >= 0) vm.incoming_uri = fmt::format("fd:{}", incoming);
  vm.process = std::move(*child);
  vm.channels.agent = std::move(agent->first);
  vm.channels.control = std::move(qmp->first);
  vm.channels.console = std::move(con->first);
  vm.channels.log = std::move(log->first);
  return vm;  // the child ends close here, in the parent
}

}  // namespace ztee::detail
