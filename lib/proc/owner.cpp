#include "proc/owner.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>

#include <cerrno>
#include <cstring>

namespace ztee::detail {

namespace {

std::string read_proc(const std::string& path) {
  std::string out;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return out;
  char buf[4096];
  ssize_t n;
  while (out.size() < 65536 && (n = ::read(fd.get(), buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

}  // namespace

Result<UniqueFd> hold_owner_lock(const std::string& path, std::string_view content) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd.valid() || ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    return make_error(Errc::kIo, fmt::format("cannot create and lock {}: {}", path, std::strerror(e)), e);
  }
  if (!content.empty()) (void)!::write(fd.get(), content.data(), content.size());
  return fd;
}

LockOwner lock_owner(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) return LockOwner::kNoLock;
  return ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0 ? LockOwner::kLive : LockOwner::kGone;
}

bool process_running_with(pid_t pid, std::string_view part) {
  if (pid <= 0) return false;
  std::string st = read_proc(fmt::format("/proc/{}/stat", pid));
  auto rp = st.rfind(')');
  if (rp == std::string::npos || rp + 2 >= st.size() || st[rp + 2] == 'Z' || st[rp + 2] == 'X') return false;
  return read_proc(fmt::format("/proc/{}/cmdline", pid)).find(part) != std::string::npos;
}

}  // namespace ztee::detail
