// Process ownership of on-disk state: a lock file flock'ed by the owning
// process for as long as it lives (the kernel drops the lock when it dies),
// and a check whether a pid is still the process named on its command line.
#pragma once

#include <ztee/result.hpp>

#include <sys/types.h>

#include <string>
#include <string_view>

#include "io/fd.hpp"

namespace ztee::detail {

// Creates `path` (it must not exist), takes an exclusive flock on it and
// writes `content`. Keep the fd open for as long as the owner lives.
Result<UniqueFd> hold_owner_lock(const std::string& path, std::string_view content);

enum class LockOwner { kLive, kGone, kNoLock };
// kLive: a process holds `path`'s lock; kGone: nobody does (its owner is
// gone); kNoLock: there is no such file.
LockOwner lock_owner(const std::string& path);

// True when `pid` runs (not a zombie) and its command line contains `part`
// (a recycled pid belongs to some other program).
bool process_running_with(pid_t pid, std::string_view part);

}  // namespace ztee::detail
