// Child processes: spawned with clone3(CLONE_PIDFD), watched through their
// pidfd, killed and reaped by the owner.
#pragma once

#include <ztee/result.hpp>

#include <sys/types.h>

#include <string>
#include <vector>

#include "io/fd.hpp"

namespace ztee::detail {

struct SpawnSpec {
  std::vector<std::string> argv;  // argv[0] is the path to exec (no PATH search)
  std::vector<std::string> env;   // "K=V"; the whole environment
  // fds[i] becomes fd 3+i in the child; stdin is /dev/null; stdout and
  // stderr become `output_fd` (or /dev/null when -1).
  std::vector<int> fds;
  int output_fd = -1;
  // Deliver SIGKILL to the child when the spawning thread exits.
  bool die_with_parent = true;
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
