// ExecCancel's shared state: a triggered flag and the hooks of the execs
// that use the token. Hooks run under the mutex, so once remove() returns no
// hook of that exec can still be running (hooks only post to a loop).
//
// ExecInput's shared state: the bytes written and not yet sent, and the hook
// of the exec that took it (which posts a drain to the sandbox's loop).
#pragma once

#include <ztee/ztee.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>

namespace ztee::detail {

struct CancelState {
  std::mutex mu;
  bool triggered = false;
  uint64_t next_id = 1;
  // Called with 0 for trigger() (cancel: SIGKILL), else with a signal number.
  std::map<uint64_t, std::function<void(int)>> hooks;

  // Registers `hook`; runs it with 0 at once if already triggered. Returns its id.
  uint64_t add(std::function<void(int)> hook);
  void remove(uint64_t id);
  void trigger();
  void signal(int sig);
};

struct InputState {
  std::mutex mu;
  std::string buf;     // written, not yet handed to the agent channel
  bool closed = false; // close() was called
  bool taken = false;  // an exec took this handle
  bool ended = false;  // that exec ended
  std::function<void()> wake;  // set while the exec runs; posts a drain

  // Under mu: wakes the exec, if one runs.
  void notify() {
    if (wake) wake();
  }
};

}  // namespace ztee::detail
