// Small helpers shared by the guest agent's parts.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace ztee::guest {

// Owns one file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// Writes one line to the console (stderr is the console for PID 1).
void log_line(std::string_view msg);

// "<what>: <strerror(err)>"
std::string errno_text(std::string_view what, int err);

uint64_t monotonic_ns();

// The whole file; "" if it cannot be read.
std::string read_file(const std::string& path);

}  // namespace ztee::guest
