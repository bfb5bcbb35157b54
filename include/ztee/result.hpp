// ztee::Result<T>: a value or an Error (code, errno, message). No exceptions
// are used for control flow anywhere in libztee.
#pragma once

// The internal C++ core. libztee's installable C++ API (capi/ztee.hpp, also
// namespace ztee) is a separate layer over the C ABI: never both in one
// translation unit.
#define ZTEE_INTERNAL_CORE 1
#ifdef ZTEE_HPP
#error "<ztee/ztee.hpp> (libztee's internal C++ core) and <ztee.hpp> (the C++ API over the C ABI) in one translation unit: use one"
#endif

#include <cstdint>
#include <string>
#include <utility>
#include <variant>

namespace ztee {

// Error codes. The numbers are the C ABI's ztee_status values and are never
// renumbered; new codes are appended.
enum class Errc : int32_t {
  kOk = 0,
  kInvalidArgument = -1,   // the caller passed something unusable
  kNoMemory = -2,
  kInternal = -3,          // a bug in libztee; the message says where
  kNotFound = -4,          // a file, command or directory does not exist
  kImage = -5,             // guest image missing, incomplete or tampered
  kBackendUnavailable = -6,// the VMM cannot run here (binary missing, no KVM, ...)
  kTimeout = -7,           // a deadline passed (boot, request)
  kSandboxFailed = -8,     // the sandbox died or its guest misbehaved
  kClosed = -9,            // the sandbox or runtime was destroyed
  kIo = -10,               // a host I/O error
  kProtocol = -11,         // the guest sent a malformed frame
  kGuest = -12,            // the guest reported an OS error (errno is the guest's)
  kPermission = -13,       // not permitted (host or guest)
  kUnsupported = -14,      // not implemented by this backend or build
  kConflict = -15,         // the host changed under the call (a file edited since the sandbox started)
};

const char* errc_name(Errc c);

struct Error {
  Errc code = Errc::kInternal;
  int sys_errno = 0;
  std::string message;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}
  Result(Error e) : v_(std::move(e)) {}
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  T& operator*() & { return std::get<0>(v_); }
  const Error& error() const& { return std::get<1>(v_); }
  Error&& error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error e) : err_(std::move(e)), ok_(false) {}
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const& { return err_; }
  Error&& error() && { return std::move(err_); }

 private:
  Error err_;
  bool ok_ = true;
};

inline Error make_error(Errc code, std::string message, int sys_errno = 0) {
  return Error{code, sys_errno, std::move(message)};
}

}  // namespace ztee
