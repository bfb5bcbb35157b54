#include <fmt/format.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "jail/jail.hpp"

namespace ztee::detail {

namespace {

// What QEMU (microvm, TCG or KVM) calls in libztee's configurations: cold
// boot, exec and file traffic, pause/resume, snapshot save over a passed fd,
// restore from an inherited fd, with and without a TAP netdev; plus execve
// and what the dynamic loader needs, since the filter is installed before
// exec. Collected with `strace -f` over the test suites (see
// benchmarks/README.md, "Jail").
const char* const kVmmSyscalls[] = {
    // exec + loader
    "execve", "brk", "arch_prctl", "access", "faccessat", "faccessat2", "openat", "open", "newfstatat", "fstat",
    "stat", "lstat", "statx", "read", "pread64", "mmap", "mprotect", "munmap", "close", "set_tid_address",
    "set_robust_list", "rseq", "prlimit64", "getrandom", "readlink", "readlinkat", "uname", "getcwd",
    // memory and threads
    "mremap", "madvise", "mlock", "munlock", "clone", "clone3", "futex", "futex_waitv", "exit", "exit_group",
    "sched_getaffinity", "sched_setaffinity", "sched_yield", "gettid", "getpid", "getppid", "getuid", "geteuid",
    "getgid", "getegid", "membarrier", "memfd_create", "fallocate", "ftruncate", "fcntl", "dup", "dup2", "dup3",
    "get_mempolicy", "mbind", "set_mempolicy",
    // signals and time
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigtimedwait", "sigaltstack", "tgkill", "kill",
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "timer_create",
    "timer_settime", "timer_delete", "timerfd_create", "timerfd_settime", "alarm", "setitimer",
    // I/O and event loops
    "write", "writev", "readv", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2", "lseek", "ioctl", "poll",
    "ppoll", "select", "pselect6", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "eventfd2", "pipe",
    "pipe2", "io_uring_setup", "io_uring_enter", "io_uring_register", "io_setup", "io_submit", "io_getevents",
    "io_destroy", "fdatasync", "fsync", "sync_file_range", "statfs", "fstatfs", "flock", "unlink", "unlinkat",
    "getdents64", "socket", "socketpair", "recvmsg", "sendmsg", "recvfrom", "sendto", "shutdown", "getsockname",
    "getpeername", "getsockopt", "setsockopt", "splice", "close_range", "prctl", "sysinfo", "getrusage",
    "restart_syscall", "signalfd4", "seccomp", "fadvise64",
};

}  // namespace

Result<std::vector<sock_filter>> build_vmm_seccomp(bool kvm) {
  (void)kvm;  // the KVM ioctls go through ioctl, allowed for both
  // KILL_PROCESS rather than ERRNO(EPERM): a VMM that reaches for a system
  // call outside its known set is either broken or compromised, and a
  // failure it might handle and carry on past hides both; the kill is
  // logged by the kernel (seccomp actions_logged) and ends the sandbox with
  // "killed by signal 31".
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
  if (!ctx) return make_error(Errc::kNoMemory, "jail: seccomp_init failed");
  struct Free {
    scmp_filter_ctx c;
    ~Free() { seccomp_release(c); }
  } guard{ctx};
  for (const char* name : kVmmSyscalls) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;  // not on this architecture
    if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0); rc < 0)
      return make_error(Errc::kInternal, fmt::format("jail: seccomp_rule_add({}): {}", name, std::strerror(-rc)), -rc);
  }
  int fd = ::memfd_create("ztee-seccomp", MFD_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return make_error(Errc::kIo, fmt::format("jail: memfd_create for the seccomp filter: {}", std::strerror(e)), e);
  }
  UniqueFd f(fd);
  if (int rc = seccomp_export_bpf(ctx, fd); rc < 0)
    return make_error(Errc::kInternal, fmt::format("jail: seccomp_export_bpf: {}", std::strerror(-rc)), -rc);
  off_t size = ::lseek(fd, 0, SEEK_END);
  if (size <= 0 || size % static_cast<off_t>(sizeof(sock_filter)) != 0)
    return make_error(Errc::kInternal, "jail: the exported seccomp program has a bad size");
  std::vector<sock_filter> prog(static_cast<size_t>(size) / sizeof(sock_filter));
  if (::pread(fd, prog.data(), static_cast<size_t>(size), 0) != size)
    return make_error(Errc::kIo, "jail: cannot read back the exported seccomp program");
  return prog;
}

}  // namespace ztee::detail
