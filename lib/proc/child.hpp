// Child processes: spawned with clone3(CLONE_PIDFD), watched through their
// pidfd, killed and reaped by the owner.
#pragma once

#include <ztee/result.hpp>

#include <linux/filter.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "io/fd.hpp"

namespace ztee::detail {

// What a confined child does between clone3 and execve, prepared in full by
// the parent (lib/jail builds it). The child runs only system calls on this
// data: no allocation, no locks. Steps run in the order of the fields; a
// failing step is reported as (step, errno) and the child exits.
struct Confinement {
  enum Step : int {
    kStepNetns = 1,
    kStepRlimits,
    kStepCgroup,
    kStepMountPrivate,
    kStepMounts,
    kStepPivotRoot,
    kStepUmountOldRoot,
    kStepGroups,
    kStepUid,
    kStepParentDeath,
    kStepNoNewPrivs,
    kStepSeccomp,
    kStepCloseFds,
    kStepExec,
  };
  // Extra clone3 flags (CLONE_NEWNS, CLONE_NEWPID, ...).
  uint64_t clone_flags = 0;
  int netns_fd = -1;  // joined with setns(CLONE_NEWNET) when >= 0
  struct Limit {
    int resource;
    rlimit value;
  };
  std::vector<Limit> rlimits;
  // Open O_WRONLY cgroup `tasks` (or cgroup.procs) files: the child writes
  // "0" (itself) to each.
  std::vector<int> cgroup_procs_fds;
  // A cgroup v2 directory: clone3 starts the child in it (CLONE_INTO_CGROUP).
  int cgroup_dir_fd = -1;
  // The new root (absolute host path; empty: no pivot_root) and what is
  // mounted under it, in order. `target` is a host path inside `root`.
  struct Mount {
    std::string source, target;
    unsigned long remount_flags = 0;  // 0: writable bind; else a read-only/nosuid/... remount
  };
  std::string root;
  std::vector<Mount> mounts;
  unsigned long root_remount_flags = 0;  // applied to the root's own bind at the end
  // Credentials; uid 0 keeps root (no switch).
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
  bool no_new_privs = false;
  std::vector<sock_filter> seccomp;  // empty: no filter
  bool close_other_fds = false;
};

// Names a Confinement step for error messages ("pivot_root into the jail").
const char* confinement_step_name(int step);

struct SpawnSpec {
  std::vector<std::string> argv;  // argv[0] is the path to exec (no PATH search)
  std::vector<std::string> env;   // "K=V"; the whole environment
  // fds[i] becomes fd 3+i in the child; stdin is /dev/null; stdout and
  // stderr become `output_fd` (or /dev/null when -1).
  std::vector<int> fds;
  int output_fd = -1;
  // Deliver SIGKILL to the child when the spawning thread exits.
  bool die_with_parent = true;
  // Confinement applied before exec; null: none. Borrowed for the call.
  const Confinement* confinement = nullptr;
};

class Child {
 public:
  Child() = default;
  Child(pid_t pid, UniqueFd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}
  Child(Child&&) noexcept = default;
  Child& operator=(Child&& o) noexcept {
    if (this != &o) {
      kill_and_reap();
      pid_ = o.pid_;
      o.pid_ = 0;
      pidfd_ = std::move(o.pidfd_);
      reaped_ = o.reaped_;
      status_ = o.status_;
    }
    return *this;
  }
  ~Child() { kill_and_reap(); }

  pid_t pid() const { return pid_; }
  int pidfd() const { return pidfd_.get(); }
  bool running() const { return pid_ > 0 && !reaped_; }

  // Sends SIGKILL (through the pidfd: never hits a recycled pid).
  void kill();
  // Non-blocking reap. True if the child has been reaped (now or before).
  bool try_reap();
  // Blocking: SIGKILL then wait. Safe to call twice.
  void kill_and_reap();
  // Human-readable exit description, e.g. "exited with status 1", "killed by signal 9".
  std::string describe_exit() const;

 private:
  pid_t pid_ = 0;
  UniqueFd pidfd_;
  bool reaped_ = false;
  int status_ = 0;  // si_code/si_status packed as wait status
};

Result<Child> spawn(const SpawnSpec& spec);

}  // namespace ztee::detail
