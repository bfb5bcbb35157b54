#include "proc/child.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>

namespace ztee::detail {

namespace {

[[noreturn]] void child_fail(int err_fd, int err) {
  (void)!::write(err_fd, &err, sizeof err);
  ::_exit(127);
}

}  // namespace

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
  pid_t parent = ::getpid();

  int pidfd = -1;
  clone_args args{};
  args.flags = CLONE_PIDFD;
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  args.exit_signal = SIGCHLD;
  long pid = ::syscall(SYS_clone3, &args, sizeof args);
  if (pid < 0) {
    int e = errno;
    return make_error(Errc::kIo, fmt::format("clone3: {}", std::strerror(e)), e);
  }
  if (pid == 0) {
    // Child. Tie its life to the spawning thread so a crashed host leaves no VMM.
    if (spec.die_with_parent) {
      if (::prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) child_fail(err_w.get(), errno);
      if (::getppid() != parent) ::_exit(127);
    }
    sigset_t all;
    sigemptyset(&all);
    ::sigprocmask(SIG_SETMASK, &all, nullptr);
    // Move the inherited fds above the target range, then into place: dup2
    // clears O_CLOEXEC on the copies only.
    const int base = 3;
    const int n = static_cast<int>(spec.fds.size());
    int moved[64];
    if (n > 64) child_fail(err_w.get(), E2BIG);
    for (int i = 0; i < n; ++i) {
      moved[i] = ::fcntl(spec.fds[i], F_DUPFD_CLOEXEC, base + n + 8);
      if (moved[i] < 0) child_fail(err_w.get(), errno);
    }
    int out = spec.output_fd >= 0 ? spec.output_fd : devnull_fd.get();
    if (::dup2(devnull_fd.get(), 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(out, 2) < 0)
      child_fail(err_w.get(), errno);
    for (int i = 0; i < n; ++i) {
      if (::dup2(moved[i], base + i) < 0) child_fail(err_w.get(), errno);
    }
    ::execve(argv[0], argv.data(), envp.data());
    child_fail(err_w.get(), errno);
  }
  err_w.reset();
  UniqueFd pfd(pidfd);
  Child child(static_cast<pid_t>(pid), std::move(pfd));
  int child_err = 0;
  ssize_t r;
  do {
    r = ::read(err_r.get(), &child_err, sizeof child_err);
  } while (r < 0 && errno == EINTR);
  if (r == sizeof child_err) {
    child.kill_and_reap();
    Errc code = child_err == ENOENT ? Errc::kNotFound : Errc::kIo;
    return make_error(code, fmt::format("cannot start {}: {}", spec.argv[0], std::strerror(child_err)),
                      child_err);
  }
  return child;
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
