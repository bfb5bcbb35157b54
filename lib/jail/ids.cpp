#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "jail/jail.hpp"

namespace ztee::detail {

IdLease& IdLease::operator=(IdLease&& o) noexcept {
  if (this != &o) {
    (void)release();
    fd_ = std::move(o.fd_);
    host_fd_ = std::move(o.host_fd_);
    index_ = o.index_;
    id_ = o.id_;
    path_ = std::move(o.path_);
  }
  return *this;
}

Result<void> IdLease::release() {
  if (!fd_.valid()) return {};
  // Unlinked while still locked: nobody can take this file in between.
  int rc = ::unlink(path_.c_str());
  int e = errno;
  fd_.reset();
  host_fd_.reset();
  if (rc != 0 && e != ENOENT)
    return make_error(Errc::kIo, fmt::format("cannot remove id lock file {}: {}", path_, std::strerror(e)), e);
  return {};
}

namespace {

// The host-wide id lock file; an invalid fd where it cannot be made (not root).
UniqueFd open_host_id_locks(const std::string& path) {
  if (path == kHostIdLockPath && ::mkdir("/run/ztee", 0700) != 0 && errno != EEXIST) return {};
  return UniqueFd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
}

}  // namespace

Result<IdLease> allocate_id(const std::string& state_dir, uint32_t id_first, uint32_t id_count,
                            const std::string& host_lock) {
  UniqueFd host = open_host_id_locks(host_lock);
  std::string dir = state_dir + "/ids";
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    int e = errno;
    return make_error(Errc::kIo, fmt::format("jail: cannot create id directory {}: {}", dir, std::strerror(e)), e);
  }
  for (uint32_t n = 1; n < id_count; ++n) {
    std::string path = fmt::format("{}/{}", dir, n);
    for (int attempt = 0; attempt < 3; ++attempt) {
      int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
      if (fd < 0 && errno == EEXIST) {
        // Taken, or left by an owner that is gone: its flock says which.
        fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 && errno == ENOENT) continue;  // released meanwhile: try again
      }
      if (fd < 0) {
        int e = errno;
        return make_error(Errc::kIo, fmt::format("jail: cannot open id lock file {}: {}", path, std::strerror(e)), e);
      }
      UniqueFd f(fd);
      if (::flock(fd, LOCK_EX | LOCK_NB) != 0) break;  // held: next index
      // The lock must be on the file that is at the path now.
      struct stat a{}, b{};
      if (::fstat(fd, &a) != 0 || ::stat(path.c_str(), &b) != 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev)
        continue;
      if (host.get() >= 0) {
        struct flock l{};
        l.l_type = F_WRLCK;
        l.l_whence = SEEK_SET;
        l.l_start = static_cast<off_t>(n);  // the index: network slots follow it, whatever the range
        l.l_len = 1;
        if (::fcntl(host.get(), F_OFD_SETLK, &l) != 0) {
          int e = errno;
          ::unlink(path.c_str());  // still flocked: nobody takes it in between
          if (e == EAGAIN || e == EACCES) break;  // another runtime's (other state dir): next index
          return make_error(Errc::kIo, fmt::format("jail: cannot lock id index {} in {}: {}", n,
                                                   host_lock, std::strerror(e)),
                            e);
        }
      }
      std::string pid = fmt::format("{}\n", ::getpid());
      if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
        int e = errno;
        ::unlink(path.c_str());
        return make_error(Errc::kIo, fmt::format("jail: cannot write id lock file {}: {}", path, std::strerror(e)), e);
      }
      IdLease lease;
      lease.fd_ = std::move(f);
      lease.host_fd_ = std::move(host);
      lease.index_ = n;
      lease.id_ = id_first + n;
      lease.path_ = std::move(path);
      return lease;
    }
  }
  return make_error(Errc::kIo,
                    fmt::format("jail: all {} sandbox ids in {} are taken: destroy sandboxes or raise "
                                "RuntimeOptions::jail.id_count",
                                id_count - 1, dir),
                    EAGAIN);
}

}  // namespace ztee::detail
