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
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ztee::detail {

struct CancelState {
  std::mutex mu;
  bool triggered = false;
  bool used = false;       // an exec has registered a hook
  std::vector<int> early;  // signals sent before that, for the first exec (at most kMaxEarly)
  static constexpr size_t kMaxEarly = 64;
  uint64_t next_id = 1;
  // Called with 0 for trigger() (cancel: SIGKILL), else with a signal number.
  std::map<uint64_t, std::function<void(int)>> hooks;

  // Registers `hook`; runs it with 0 at once if already triggered, then with
  // each early signal. Returns its id.
  uint64_t add(std::function<void(int)> hook);
  void remove(uint64_t id);
  void trigger();
  void signal(int sig);
};

// Ties one exec to its token from before the exec task reaches the loop:
// Sandbox::exec and exec_async link before they post the exec, so a signal
// sent once the call has begun reaches the command: it follows its EXEC frame.
// The hook only posts fire() to the loop; the fields below `id` are the loop
// thread's.
struct CancelLink {
  std::shared_ptr<CancelState> state;
  uint64_t id = 0;
  std::function<void(int)> deliver;  // set once the EXEC frame is sent
  std::vector<int> pending;          // fired before that (0: cancel), in order
  bool ended = false;

  // Loop thread: hands `sig` (0: cancel) to the exec; before its EXEC frame
  // is sent, it waits for it (see start()).
  void fire(int sig) {
    if (ended) return;
    if (deliver)
      deliver(sig);
    else if (sig == 0 || pending.size() < CancelState::kMaxEarly)  // a cancel is never dropped
      pending.push_back(sig);
  }
  // Loop thread, once the EXEC frame is sent: `d` delivers from now on.
  void start(std::function<void(int)> d) {
    deliver = std::move(d);
    for (int sig : std::exchange(pending, {})) deliver(sig);
  }
  // Loop thread, when the exec ends (or never starts): no hook runs after.
  void unlink() {
    if (ended) return;
    ended = true;
    deliver = nullptr;
    pending.clear();
    state->remove(id);
  }
};

struct InputState {
  std::mutex mu;
  std::string buf;     // buf[off..]: written, not yet handed to the agent channel
  size_t off = 0;
  bool closed = false; // close() was called
  bool taken = false;  // an exec took this handle
  bool ended = false;  // that exec ended
  std::function<void()> wake;  // set while the exec runs; posts a drain

  // Under mu: wakes the exec, if one runs.
  void notify() {
    if (wake) wake();
  }
  // Under mu.
  size_t pending() const { return buf.size() - off; }
  std::string_view head(size_t n) const { return std::string_view(buf).substr(off, n); }
  void consume(size_t n) {  // compacts once the sent part is the larger one
    off += n;
    if (off * 2 >= buf.size()) {
      buf.erase(0, off);
      off = 0;
    }
  }
  void drop() {
    buf.clear();
    off = 0;
  }
};

}  // namespace ztee::detail
