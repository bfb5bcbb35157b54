// ExecCancel's shared state: a triggered flag and the hooks of the execs
// that use the token. Hooks run under the mutex, so once remove() returns no
// hook of that exec can still be running (hooks only post to a loop).
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
  std::map<uint64_t, std::function<void()>> hooks;

  // Registers `hook`; runs it at once if already triggered. Returns its id.
  uint64_t add(std::function<void()> hook);
  void remove(uint64_t id);
  void trigger();
};

}  // namespace ztee::detail
