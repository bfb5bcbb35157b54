#include "proc/child.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>

namespace ztee::detail {

namespace {

// What a failed child sends back: the step that failed and its errno.
struct ChildError {
  int step;
  int err;
};

[[noreturn]] void child_fail(int err_fd, int step, int err) {
  ChildError ce{step, err};
  (void)!::write(err_fd, &ce, sizeof ce);
  ::_exit(127);
}

// True when the parent is gone: every write end of `alive_r`'s pipe is
// closed (the child closed its own copy before asking).
bool parent_gone(int alive_r) {
  struct pollfd p{alive_r, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLHUP);
}

// The confinement steps, in order. Async-signal-safe: system calls on data
// the parent prepared; nothing allocates.
// Steps that use the parent's fd numbers: run before the fds are moved.
void confine_early(const Confinement& c, int err_fd) {
  using S = Confinement;
  if (c.netns_fd >= 0) {
    // Safe: the netns fd was opened by the parent for this sandbox only.
    if (::setns(c.netns_fd, CLONE_NEWNET) < 0) child_fail(err_fd, S::kStepNetns, errno);
  }
  for (const auto& l : c.rlimits)
    if (::prlimit(0, static_cast<__rlimit_resource>(l.resource), &l.value, nullptr) < 0)
      child_fail(err_fd, S::kStepRlimits, errno);
  for (int fd : c.cgroup_procs_fds) {
    // Safe: "0" moves only the writer (this child) into the sandbox's cgroup.
    if (::write(fd, "0", 1) != 1) child_fail(err_fd, S::kStepCgroup, errno);
  }
}

void confine(const Confinement& c, int err_fd, bool die_with_parent, int alive_r) {
  using S = Confinement;
  if (!c.root.empty()) {
    const char* root = c.root.c_str();
    // Safe: this child has its own mount namespace (CLONE_NEWNS); making it
    // private keeps every mount below from propagating to the host.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0)
      child_fail(err_fd, S::kStepMountPrivate, errno);
    if (::mount(root, root, nullptr, MS_BIND, nullptr) < 0) child_fail(err_fd, S::kStepMounts, errno);
    for (const auto& m : c.mounts) {
      // Safe: sources and targets were resolved by the parent; targets lie inside the jail root.
      if (::mount(m.source.c_str(), m.target.c_str(), nullptr, MS_BIND, nullptr) < 0)
        child_fail(err_fd, S::kStepMounts, errno);
      if (m.remount_flags &&
          ::mount(nullptr, m.target.c_str(), nullptr, MS_BIND | MS_REMOUNT | m.remount_flags, nullptr) < 0)
        child_fail(err_fd, S::kStepMounts, errno);
    }
    if (c.root_remount_flags &&
        ::mount(nullptr, root, nullptr, MS_BIND | MS_REMOUNT | c.root_remount_flags, nullptr) < 0)
      child_fail(err_fd, S::kStepMounts, errno);
    // Safe: pivot_root in a private namespace; the old root is detached next.
    if (::chdir(root) < 0 || ::syscall(SYS_pivot_root, ".", ".") < 0) child_fail(err_fd, S::kStepPivotRoot, errno);
    if (::umount2(".", MNT_DETACH) < 0 || ::chdir("/") < 0) child_fail(err_fd, S::kStepUmountOldRoot, errno);
  }
  // Raw system calls: glibc's set*id wrappers would signal threads that only
  // exist in the parent.
  if (c.uid != 0 || c.gid != 0 || !c.groups.empty()) {
    if (::syscall(SYS_setgroups, c.groups.size(), c.groups.data()) < 0) child_fail(err_fd, S::kStepGroups, errno);
  }
  if (c.uid != 0 || c.gid != 0) {
    // Safe: drops every capability with root; nothing privileged runs after.
    if (::syscall(SYS_setresgid, c.gid, c.gid, c.gid) < 0) child_fail(err_fd, S::kStepUid, errno);
    if (::syscall(SYS_setresuid, c.uid, c.uid, c.uid) < 0) child_fail(err_fd, S::kStepUid, errno);
    // Changing credentials cleared the parent-death signal: set it again.
    if (die_with_parent) {
      if (::prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) child_fail(err_fd, S::kStepParentDeath, errno);
      if (parent_gone(alive_r)) ::_exit(127);
    }
  }
  if (c.no_new_privs && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) child_fail(err_fd, S::kStepNoNewPrivs, errno);
  if (!c.seccomp.empty()) {
    sock_fprog prog{static_cast<unsigned short>(c.seccomp.size()), const_cast<sock_filter*>(c.seccomp.data())};
    // Safe: installed after no_new_privs; execve and the loader are allowed by the filter.
    if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) child_fail(err_fd, S::kStepSeccomp, errno);
  }
}

}  // namespace

const char* confinement_step_name(int step) {
  using S = Confinement;
  switch (step) {
    case S::kStepNetns: return "join the sandbox's network namespace (setns)";
    case S::kStepRlimits: return "set resource limits (prlimit)";
    case S::kStepCgroup: return "join the sandbox's cgroup (write cgroup.procs)";
    case S::kStepMountPrivate: return "make mounts private in the new mount namespace";
    case S::kStepMounts: return "bind-mount the jail's files";
    case S::kStepPivotRoot: return "pivot_root into the jail";
    case S::kStepUmountOldRoot: return "unmount the old root";
    case S::kStepGroups: return "set supplementary groups (setgroups)";
    case S::kStepUid: return "drop to the sandbox's uid/gid (setresgid/setresuid)";
    case S::kStepParentDeath: return "set the parent-death signal";
    case S::kStepNoNewPrivs: return "set no_new_privs";
    case S::kStepSeccomp: return "install the seccomp filter";
    case S::kStepCloseFds: return "close inherited fds";
    case S::kStepExec: return "exec";
  }
  return "start";
}

Result<Child> spawn(const SpawnSpec& spec) {
  if (spec.argv.empty()) return make_error(Errc::kInvalidArgument, "spawn: empty argv");
  // Everything the child needs is prepared before clone: after it only
  // async-signal-safe calls run there.
  std::vector<char*> argv;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) < 0) {
    int e = errno;
    return make_error(Errc::kIo, fmt::format("pipe2: {}", std::strerror(e)), e);
  }
  UniqueFd err_r(err_pipe[0]), err_w(err_pipe[1]);
  int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull < 0) {
    int e = errno;
    return make_error(Errc::kIo, fmt::format("open /dev/null: {}", std::strerror(e)), e);
  }
  UniqueFd devnull_fd(devnull);
  // The child checks the parent is still there after setting its death
  // signal: this pipe's write end stays open only in the parent.
  int alive_pipe[2];
  if (::pipe2(alive_pipe, O_CLOEXEC) < 0) {
    int e = errno;
    return make_error(Errc::kIo, fmt::format("pipe2: {}", std::strerror(e)), e);
  }
  UniqueFd alive_r(alive_pipe[0]), alive_w(alive_pipe[1]);
  const Confinement* conf = spec.confinement;

  int pidfd = -1;
  clone_args args{};
  args.flags = CLONE_PIDFD | (conf ? conf->clone_flags : 0);
  if (conf && conf->cgroup_dir_fd >= 0) {
    args.flags |= CLONE_INTO_CGROUP;
    args.cgroup = static_cast<uint64_t>(conf->cgroup_dir_fd);
  }
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  args.exit_signal = SIGCHLD;
  long pid = ::syscall(SYS_clone3, &args, sizeof args);
  if (pid < 0) {
    int e = errno;
    return make_error(Errc::kIo, fmt::format("clone3: {}", std::strerror(e)), e);
  }
  if (pid == 0) {
    // Child. Tie its life to the spawning thread so a crashed host leaves no VMM.
    ::close(alive_w.get());
    if (spec.die_with_parent) {
      if (::prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) child_fail(err_w.get(), 0, errno);
      if (parent_gone(alive_r.get())) ::_exit(127);
    }
    sigset_t all;
    sigemptyset(&all);
    ::sigprocmask(SIG_SETMASK, &all, nullptr);
    // Move the inherited fds above the target range, then into place: dup2
    // clears O_CLOEXEC on the copies only.
    const int base = 3;
    const int n = static_cast<int>(spec.fds.size());
    int moved[64];
    int err_fd = err_w.get();
    if (conf) confine_early(*conf, err_fd);
    if (n > 64) child_fail(err_fd, 0, E2BIG);
    // The error pipe moves too, to the slot right after the inherited fds,
    // so closing everything above it keeps it.
    err_fd = ::fcntl(err_fd, F_DUPFD_CLOEXEC, base + n + 8);
    if (err_fd < 0) child_fail(err_w.get(), 0, errno);
    for (int i = 0; i < n; ++i) {
      moved[i] = ::fcntl(spec.fds[i], F_DUPFD_CLOEXEC, base + n + 8);
      if (moved[i] < 0) child_fail(err_fd, 0, errno);
    }
    int out = spec.output_fd >= 0 ? spec.output_fd : devnull_fd.get();
    if (::dup2(devnull_fd.get(), 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(out, 2) < 0)
      child_fail(err_fd, 0, errno);
    for (int i = 0; i < n; ++i) {
      if (::dup2(moved[i], base + i) < 0) child_fail(err_fd, 0, errno);
    }
    if (::dup3(err_fd, base + n, O_CLOEXEC) < 0) child_fail(err_fd, 0, errno);
    err_fd = base + n;
    if (conf) {
      confine(*conf, err_fd, spec.die_with_parent, alive_r.get());
      if (conf->close_other_fds && ::syscall(SYS_close_range, base + n + 1, ~0U, 0) < 0)
        child_fail(err_fd, Confinement::kStepCloseFds, errno);
    }
    ::execve(argv[0], argv.data(), envp.data());
    child_fail(err_fd, Confinement::kStepExec, errno);
  }
  err_w.reset();
  alive_r.reset();
  UniqueFd pfd(pidfd);
  Child child(static_cast<pid_t>(pid), std::move(pfd));
  ChildError ce{};
  ssize_t r;
  do {
    r = ::read(err_r.get(), &ce, sizeof ce);
  } while (r < 0 && errno == EINTR);
  if (r > 0 && r != sizeof ce) {
    child.kill_and_reap();
    return make_error(Errc::kInternal, fmt::format("cannot start {}: the child sent a garbled status", spec.argv[0]));
  }
  if (r == sizeof ce) {
    child.kill_and_reap();
    int e = ce.err;
    if (ce.step > 0 && ce.step != Confinement::kStepExec)
      return make_error(e == EPERM || e == EACCES ? Errc::kPermission : Errc::kIo,
                        fmt::format("cannot start {}: jail step {} ({}) failed: {}", spec.argv[0], ce.step,
                                    confinement_step_name(ce.step), std::strerror(e)),
                        e);
    Errc code = e == ENOENT ? Errc::kNotFound : Errc::kIo;
    return make_error(code, fmt::format("cannot start {}: {}", spec.argv[0], std::strerror(e)), e);
  }
  return child;  // the child has exec'd: it no longer looks at the alive pipe
}

void Child::kill() {
  if (!running()) return;
  ::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
}

bool Child::try_reap() {
  if (pid_ <= 0) return true;
  if (reaped_) return true;
  siginfo_t si{};
  int rc = ::waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &si, WEXITED | WNOHANG);
  if (rc == 0 && si.si_pid != 0) {
    reaped_ = true;
    status_ = si.si_code == CLD_EXITED ? (si.si_status & 0xff) << 8 : (si.si_status & 0x7f);
    return true;
  }
  if (rc < 0 && errno == ECHILD) {
    reaped_ = true;
    return true;
  }
  return false;
}

void Child::kill_and_reap() {
  if (pid_ <= 0 || reaped_) return;
  kill();
  siginfo_t si{};
  int rc;
  do {
    rc = ::waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &si, WEXITED);
  } while (rc < 0 && errno == EINTR);
  reaped_ = true;
  if (rc == 0)
    status_ = si.si_code == CLD_EXITED ? (si.si_status & 0xff) << 8 : (si.si_status & 0x7f);
}

std::string Child::describe_exit() const {
  if (!reaped_) return "still running";
  if (WIFEXITED(status_)) return fmt::format("exited with status {}", WEXITSTATUS(status_));
  if (WIFSIGNALED(status_)) return fmt::format("killed by signal {} ({})", WTERMSIG(status_), strsignal(WTERMSIG(status_)));
  return "ended";
}

}  // namespace ztee::detail
