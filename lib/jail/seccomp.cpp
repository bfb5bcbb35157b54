#include <fmt/format.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "jail/jail.hpp"

namespace ztee::detail {

namespace {

// What QEMU 7.2 (microvm, TCG) was seen calling in libztee's configurations,
// collected with `strace -ff` over the integration suites (cold boot, exec
// and file traffic, pause/resume, snapshot save over a passed fd, restore
// from an inherited fd), including execve and the dynamic loader (the filter
// is installed before exec). The second group is not seen under TCG here but
// is on paths we use elsewhere: KVM vCPU kicks (tgkill, rt_sigtimedwait), the
// KVM and TAP ioctls, thread signal returns, block writes, vDSO fallbacks,
// and libztee's own close_range between the filter and exec.
const char* const kVmmSyscalls[] = {
    "access", "arch_prctl", "brk", "clock_nanosleep", "close", "eventfd2", "execve", "exit", "exit_group",
    "fadvise64", "fchdir", "fcntl", "fstatfs", "ftruncate", "futex", "get_mempolicy", "getdents64", "getpeername",
    "getrandom", "getsockname", "getsockopt", "gettid", "lseek", "madvise", "memfd_create", "mmap", "mprotect",
    "munmap", "newfstatat", "openat", "poll", "ppoll", "prctl", "pread64", "preadv", "prlimit64", "read",
    "readlink", "readv", "recvmsg", "rseq", "rt_sigaction", "rt_sigprocmask", "sched_getaffinity", "seccomp",
    "sendmsg", "set_mempolicy", "set_robust_list", "set_tid_address", "setsockopt", "signalfd4", "statfs",
    "sysinfo", "write", "writev",
    // not seen under TCG here (see above)
    "close_range", "rt_sigreturn", "sigaltstack", "restart_syscall", "tgkill", "getpid", "rt_sigtimedwait",
    "ioctl", "pwrite64", "pwritev", "clock_gettime", "gettimeofday", "nanosleep", "mremap", "shutdown",
    "fallocate", "fdatasync", "fsync",
    // with -accel kvm, QEMU reads the host kernel's version at KVM set-up
    // (seen with strace on a kvm_pvm host; a jailed KVM VMM died without it)
    "uname",
    // QEMU's event loop falls back to epoll once io_uring is refused (below)
    "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait",
};

// Refused with ENOSYS rather than killed: QEMU probes for io_uring and falls
// back to ppoll, and io_uring submissions would bypass this filter. clone3
// passes its flags in memory the filter cannot read, so it is refused too:
// glibc then creates QEMU's threads with clone, whose flags are checked.
const char* const kVmmRefused[] = {"io_uring_setup", "clone3"};

// clone may create threads, never namespaces: a user namespace would hand a
// compromised VMM a root of its own to probe the kernel with.
constexpr uint64_t kCloneNamespaceFlags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
                                          CLONE_NEWNET | CLONE_NEWCGROUP;

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
  if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                                SCMP_A0(SCMP_CMP_MASKED_EQ, kCloneNamespaceFlags, 0));
      rc < 0)
    return make_error(Errc::kInternal, fmt::format("jail: seccomp_rule_add(clone): {}", std::strerror(-rc)), -rc);
  for (const char* name : kVmmRefused) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;
    if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), nr, 0); rc < 0)
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
