#include "jail/kvm_probe.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "proc/owner.hpp"

namespace ztee::detail {

namespace {

using Clock = std::chrono::steady_clock;

// Reads from `fd` until `text` holds a line (after `from`) that contains
// `want`, the peer closes, or the deadline passes.
bool read_until(int fd, std::string& text, size_t from, std::string_view want, Clock::time_point deadline) {
  char buf[4096];
  while (text.find(want, from) == std::string::npos || text.find('\n', text.find(want, from)) == std::string::npos) {
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    if (left <= 0) return false;
    struct pollfd p{fd, POLLIN, 0};
    int rc = ::poll(&p, 1, left);
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) return false;
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return false;
    if (text.size() < (1u << 20)) text.append(buf, static_cast<size_t>(n));
  }
  return true;
}

std::string drain(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while (out.size() < 65536 && (n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0) out.append(buf, static_cast<size_t>(n));
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

}  // namespace

Result<JailedKvmProbe> probe_kvm_in_jail(const JailedKvmProbeRequest& req) {
  if (req.seccomp == nullptr) return make_error(Errc::kInvalidArgument, "probe_kvm_in_jail: no seccomp filter");
  auto lease = allocate_id(req.state_dir, req.id_first, req.id_count);
  if (!lease) return std::move(lease).error();
  unsigned char rnd[4] = {};
  (void)::getrandom(rnd, sizeof rnd, 0);
  std::string id = fmt::format("sb-kvmprobe-{:02x}{:02x}{:02x}{:02x}", rnd[0], rnd[1], rnd[2], rnd[3]);
  std::string dir = req.state_dir + "/" + id;
  if (::mkdir(dir.c_str(), 0700) != 0) {
    int e = errno;
    return make_error(Errc::kIo, fmt::format("cannot create {}: {}", dir, std::strerror(e)), e);
  }
  // Owned like a sandbox's directory, so `ztee gc` removes it if we crash.
  auto owner = hold_owner_lock(dir + "/owner", fmt::format("{} 0", ::getpid()));
  auto cleanup = [&](Error err) -> Result<JailedKvmProbe> {
    if (auto r = remove_jail_leftovers(req.state_dir, id, req.cgroups); !r) err.message += "; " + r.error().message;
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    (void)lease->release();
    return err;
  };
  if (!owner) return cleanup(owner.error());

  JailRequest jr;
  jr.state_dir = req.state_dir;
  jr.id = id;
  jr.vmm_root = req.vmm_root;
  jr.read_only = req.read_only;
  jr.kvm = true;
  jr.uid = jr.gid = lease->id();
  jr.cgroups = req.cgroups;
  jr.limits = {512ull << 20, 100, 64, false};
  jr.fsize_bytes = 16ull << 20;
  jr.seccomp = req.seccomp;
  auto jail = prepare_jail(jr);
  if (!jail) return cleanup(jail.error());

  int qmp[2], log[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, qmp) != 0) return cleanup(make_error(Errc::kIo, "socketpair", errno));
  UniqueFd qmp_host(qmp[0]), qmp_vmm(qmp[1]);
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, log) != 0) return cleanup(make_error(Errc::kIo, "socketpair", errno));
  UniqueFd log_host(log[0]), log_vmm(log[1]);

  SpawnSpec spec;
  spec.argv = {req.binary, "-name", id, "-accel", "kvm", "-nodefaults", "-no-user-config", "-display", "none", "-S",
               "-chardev", "socket,id=qmp,fd=3", "-mon", "chardev=qmp,mode=control"};
  if (req.machine.empty()) spec.argv.insert(spec.argv.end(), {"-M", "none"});
  for (const auto& a : req.machine) {
    std::string arg = a;
    for (const auto& [host, jailed] : jail->path_map)
      if (arg == host) arg = jailed;
    spec.argv.push_back(arg);
  }
  spec.fds = {qmp_vmm.get()};
  spec.output_fd = log_vmm.get();
  spec.confinement = &jail->confinement;
  auto child = spawn(spec);
  jail->cgroups.procs.clear();
  jail->cgroups.v2_dir.reset();
  qmp_vmm.reset();
  log_vmm.reset();
  if (!child) return cleanup(child.error());
  {
    FILE* f = std::fopen((dir + "/vmm.pid").c_str(), "w");
    if (f) {
      std::fprintf(f, "%d\n", child->pid());
      std::fclose(f);
    }
  }

  JailedKvmProbe out;
  auto deadline = Clock::now() + std::chrono::milliseconds(req.timeout_ms);
  std::string text;
  auto vmm_failed = [&](const std::string& what) {
    bool ended = child->try_reap();
    std::string how = ended ? child->describe_exit() : "";
    child->kill_and_reap();
    std::string said = drain(log_host.get());
    return make_error(Errc::kBackendUnavailable, fmt::format("the jailed VMM {}{}{}", what,
                                                             how.empty() ? "" : " (" + how + ")",
                                                             said.empty() ? "" : ": " + said));
  };
  if (!read_until(qmp_host.get(), text, 0, "\"QMP\"", deadline)) return cleanup(vmm_failed("did not start"));
  const char cmds[] = "{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"query-kvm\"}\n";
  if (::write(qmp_host.get(), cmds, sizeof cmds - 1) != static_cast<ssize_t>(sizeof cmds - 1))
    return cleanup(vmm_failed("closed its control socket"));
  size_t from = text.find('\n') + 1;
  if (!read_until(qmp_host.get(), text, from, "\"present\"", deadline))
    return cleanup(vmm_failed("did not answer query-kvm"));
  size_t at = text.find("\"present\"", from);
  size_t bol = text.rfind('\n', at);
  out.qmp_reply = text.substr(bol + 1, text.find('\n', at) - bol - 1);
  while (!out.qmp_reply.empty() && out.qmp_reply.back() == '\r') out.qmp_reply.pop_back();
  out.kvm_enabled = out.qmp_reply.find("\"enabled\": true") != std::string::npos &&
                    out.qmp_reply.find("\"present\": true") != std::string::npos;

  if (req.run_ms > 0) {
    const char cont[] = "{\"execute\":\"cont\"}\n";
    if (::write(qmp_host.get(), cont, sizeof cont - 1) != static_cast<ssize_t>(sizeof cont - 1))
      return cleanup(vmm_failed("closed its control socket"));
    ::usleep(static_cast<useconds_t>(req.run_ms) * 1000);
    const char status[] = "{\"execute\":\"query-status\"}\n";
    from = text.size();
    if (::write(qmp_host.get(), status, sizeof status - 1) != static_cast<ssize_t>(sizeof status - 1) ||
        !read_until(qmp_host.get(), text, from, "\"status\"", Clock::now() + std::chrono::seconds(5)))
      return cleanup(vmm_failed("died while its guest ran"));
    at = text.find("\"status\"", from);
    bol = text.rfind('\n', at);
    out.status_reply = text.substr(bol + 1, text.find('\n', at) - bol - 1);
    out.ran = out.status_reply.find("\"running\"") != std::string::npos && !child->try_reap();
  }
  std::string proc = fmt::format("/proc/{}", child->pid());
  {
    FILE* f = std::fopen((proc + "/status").c_str(), "r");
    char line[256];
    while (f && std::fgets(line, sizeof line, f))
      if (std::strncmp(line, "Uid:", 4) == 0) out.vmm_uid = static_cast<uid_t>(std::strtoul(line + 4, nullptr, 10));
    if (f) std::fclose(f);
  }
  struct stat st{};
  if (::stat((proc + "/root/dev/kvm").c_str(), &st) == 0) {
    out.node_uid = st.st_uid;
    out.node_gid = st.st_gid;
    out.node_mode = st.st_mode & 07777;
    out.node_rdev = st.st_rdev;
  }
  child->kill_and_reap();
  if (auto r = remove_jail_leftovers(req.state_dir, id, req.cgroups); !r) return cleanup(r.error());
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (auto r = lease->release(); !r) return std::move(r).error();
  return out;
}

}  // namespace ztee::detail
