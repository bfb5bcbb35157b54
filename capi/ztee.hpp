// libztee: the installable C++ API.
//
// A header-only C++17 layer over the stable C ABI (ztee.h): every call here
// is an inline function that calls ztee_* functions, so a C++ program built
// against this header needs only libztee.so and keeps working across
// libztee releases exactly as a C program does. It adds no exported symbol
// to libztee.so. Installed next to ztee.h: #include <ztee.hpp> and link
// libztee (CMake: ztee::ztee; pkg-config: ztee).
//
//  - Handles (Runtime, Sandbox, Pool, Cancel; the control plane's Policy,
//    AuditLog, Gate) are move-only and release their C handle in their
//    destructor (a Sandbox's destroys its VM). A
//    default-constructed or moved-from handle is empty: destroying it is a
//    no-op and its calls fail with ZTEE_E_INVALID_ARGUMENT. Child handles keep
//    their parent alive, so they may be destroyed in any order.
//  - Errors are values: calls return Result<T> (a value or an Error with the
//    C status, errno and message). Nothing here throws on its own except
//    Result::value() (and * and ->) on an error, and std::bad_alloc.
//  - Options are plain structs (std::string, std::vector, std::map) whose
//    zero / empty fields mean the library's defaults, converted to the C
//    structs for each call.
//  - Every call is thread-safe, as in the C ABI: several threads may use one
//    handle at once (e.g. exec on one Sandbox from many threads, Cancel::
//    trigger from another). Moving, assigning or destroying a handle object
//    must not race with calls on it.
//
// Namespace: the names are ztee::Runtime, ztee::Sandbox, ... They live in
// the inline namespace ztee::capi_v0, so their linkage names differ from
// those of libztee's internal C++ core (include/ztee/ in libztee's source
// tree, also namespace ztee, never installed and not exported by
// libztee.so): code of both may end up in one program without breaking the
// one-definition rule, while callers write plain ztee::. Inside libztee's
// tree, one translation unit must not include both headers (either order
// is a compile error saying so: their names would be ambiguous). Outside the
// tree only this header exists.
//
// SECURITY: everything that comes back from a sandbox (stdout, stderr, file
// contents, names) was produced by code that may be hostile.
#ifndef ZTEE_HPP
#define ZTEE_HPP

#if !defined(__cplusplus) || __cplusplus < 201703L
#error "ztee.hpp needs C++17 or later (C programs include ztee.h)"
#endif
#ifdef ZTEE_INTERNAL_CORE
#error "<ztee.hpp> (the C++ API over the C ABI) and <ztee/ztee.hpp> (libztee's internal C++ core) in one translation unit: use one"
#endif

#include "ztee.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#define ZTEE_HPP_EXCEPTIONS 1
#else
#define ZTEE_HPP_EXCEPTIONS 0
#endif

namespace ztee {
inline namespace capi_v0 {

// ---- errors -------------------------------------------------------------

// The status of an exec whose on_stdout or on_stderr callback threw (or of
// an export_changes whose approve threw). This layer's own code: the C ABI
// never returns it (its codes count down from -1).
inline constexpr ztee_status kCallbackThrew = -1000;

struct Error {
  ztee_status status = ZTEE_E_INTERNAL;  // a ZTEE_E_* code, or kCallbackThrew
  int sys_errno = 0;                     // OS errno (host or guest), 0 if none
  std::string message;                   // what went wrong and what to do
  // The exception an output callback threw (status kCallbackThrew), else null.
  std::exception_ptr exception;

  // "ZTEE_E_TIMEOUT", ..., "kCallbackThrew".
  const char* status_name() const noexcept {
    return status == kCallbackThrew ? "kCallbackThrew" : ztee_status_name(status);
  }
  // "ZTEE_E_NOT_FOUND: <message> (errno 2)".
  std::string to_string() const {
    std::string s = std::string(status_name()) + ": " + message;
    if (sys_errno != 0) s += " (errno " + std::to_string(sys_errno) + ")";
    return s;
  }
};

// Thrown by Result::value() (and * and ->) when the result holds an Error
// (except one from a throwing callback: value() rethrows that exception).
class Exception : public std::runtime_error {
 public:
  explicit Exception(Error error)
      : std::runtime_error(error.to_string()), error_(std::make_shared<const Error>(std::move(error))) {}
  const Error& error() const noexcept { return *error_; }

 private:
  std::shared_ptr<const Error> error_;  // shared: copying an exception must not throw
};

namespace detail {

[[noreturn]] inline void throw_error(const Error& e) {
#if ZTEE_HPP_EXCEPTIONS
  if (e.exception) std::rethrow_exception(e.exception);
  throw Exception(e);
#else
  std::fprintf(stderr, "ztee: Result::value() on an error: %s\n", e.to_string().c_str());
  std::abort();
#endif
}

// The calling thread's last error, read right after the call that failed
// with `status` (the C ABI keeps it per thread until the thread's next call).
inline Error last_error(ztee_status status) {
  const ztee_error* e = ztee_last_error();
  if (e->code != status)  // cannot happen; keep the status the call returned
    return Error{status, 0, ztee_status_name(status), nullptr};
  return Error{status, e->sys_errno, e->message, nullptr};
}

inline Error invalid(std::string message) {
  return Error{ZTEE_E_INVALID_ARGUMENT, 0, std::move(message), nullptr};
}

inline Error empty_handle(const char* fn) {
  return invalid(std::string("ztee::") + fn +
                 ": the handle is empty (default-constructed or moved from): use one returned by create, "
                 "create_sandbox, create_pool or lease");
}

// A std::string holding `s`, or an error when `s` has a NUL byte (the C
// ABI takes NUL-terminated strings: the rest would be silently dropped).
inline std::optional<Error> no_nul(std::string_view s, const char* fn, const char* what) {
  if (s.find('\0') == std::string_view::npos) return std::nullopt;
  return invalid(std::string("ztee::") + fn + ": " + what + " contains a NUL byte; remove it");
}

// NULL for an empty string (the C ABI's "default").
inline const char* or_null(const std::string& s) { return s.empty() ? nullptr : s.c_str(); }

// Pointers into a std::vector<std::string>, or an error naming `what` when
// an entry has a NUL byte.
inline std::optional<Error> c_strings(const std::vector<std::string>& in, const char* fn, const char* what,
                                      std::vector<const char*>& out) {
  out.clear();
  out.reserve(in.size());
  for (const std::string& s : in) {
    if (auto e = no_nul(s, fn, what)) return e;
    out.push_back(s.c_str());
  }
  return std::nullopt;
}

struct RuntimeFree {
  void operator()(ztee_runtime* p) const noexcept { ztee_runtime_free(p); }
};
struct SandboxFree {
  void operator()(ztee_sandbox* p) const noexcept { ztee_sandbox_free(p); }
};
struct PoolFree {
  void operator()(ztee_pool* p) const noexcept { ztee_pool_free(p); }
};
struct CancelFree {
  void operator()(ztee_cancel* p) const noexcept { ztee_cancel_free(p); }
};
struct InputFree {
  void operator()(ztee_input* p) const noexcept { ztee_input_free(p); }
};
struct ExecResultFree {
  void operator()(ztee_exec_result* p) const noexcept { ztee_exec_result_free(p); }
};
struct FileInfoFree {
  void operator()(ztee_file_info* p) const noexcept { ztee_file_info_free(p); }
};
struct DirListFree {
  void operator()(ztee_dir_list* p) const noexcept { ztee_dir_list_free(p); }
};
struct MemFree {
  void operator()(void* p) const noexcept { ztee_free(p); }
};

}  // namespace detail

// A value or an Error, like C++23's std::expected. [[nodiscard]]: a failed
// call must be looked at. value(), * and -> throw on an error (ztee::
// Exception, or the callback's own exception); check ok() first to stay
// exception-free.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & { return check(), *std::get_if<0>(&v_); }
  const T& value() const& { return check(), *std::get_if<0>(&v_); }
  T&& value() && { return check(), std::move(*std::get_if<0>(&v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  template <typename U>
  T value_or(U&& fallback) const& {
    return ok() ? *std::get_if<0>(&v_) : static_cast<T>(std::forward<U>(fallback));
  }

  // Precondition: !ok() (otherwise std::bad_variant_access).
  const Error& error() const& { return std::get<1>(v_); }
  Error&& error() && { return std::get<1>(std::move(v_)); }

 private:
  void check() const {
    if (!ok()) detail::throw_error(*std::get_if<1>(&v_));
  }
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)) {}

  bool ok() const noexcept { return !error_.has_value(); }
  explicit operator bool() const noexcept { return ok(); }
  // Throws on an error, like Result<T>::value().
  void value() const {
    if (error_) detail::throw_error(*error_);
  }
  // Precondition: !ok() (otherwise std::bad_optional_access).
  const Error& error() const& { return error_.value(); }
  Error&& error() && { return std::move(error_).value(); }

 private:
  std::optional<Error> error_;
};

namespace detail {
inline Result<void> status_result(ztee_status st) {
  if (st == ZTEE_OK) return {};
  return last_error(st);
}
}  // namespace detail

// ---- version, features ------------------------------------------------------

// The library's version "MAJOR.MINOR.PATCH" (of the libztee.so in use).
inline const char* version() noexcept { return ztee_version(); }

// Whether this build of libztee supports `feature` (see ztee_has_feature:
// "qemu", "kvm", "streaming", "files", "pool", "snapshot", "network",
// "jail", "guest_aslr", ...). False for unknown names.
inline bool has_feature(std::string_view feature) {
  if (feature.find('\0') != std::string_view::npos) return false;
  return ztee_has_feature(std::string(feature).c_str()) != 0;
}

// ---- options and results ----------------------------------------------------

struct RuntimeOptions {
  std::string state_dir;    // empty: $ZTEE_STATE_DIR or /run/ztee (root)
  std::string image_dir;    // empty: $ZTEE_IMAGE_DIR or the default image
  std::string backend;      // empty or "auto", "qemu"
  std::string qemu_binary;  // empty: $ZTEE_QEMU or qemu-system-x86_64 on PATH
  // "auto", "kvm" or "tcg"; empty: $ZTEE_ACCEL, else "auto" (KVM only on
  // hardware KVM; Runtime::backend() says which and why).
  std::string accel;
  // true (default): every VMM runs in a per-sandbox jail; Runtime::create
  // then needs root (ZTEE_E_PERMISSION otherwise).
  // SECURITY: false runs each VMM with the caller's uid and privileges, and
  // sandboxes cannot have a network. Use only for development.
  bool jail = true;
};

// ASLR for the processes inside the guest (ztee_sandbox_options.guest_aslr).
enum class GuestAslr : int32_t {
  kAuto = ZTEE_GUEST_ASLR_AUTO,  // off under software emulation, on with KVM
  kOn = ZTEE_GUEST_ASLR_ON,
  kOff = ZTEE_GUEST_ASLR_OFF,
};

// A host directory the guest sees read-only at guest_path
// (SandboxOptions::mounts; ztee_mount).
// SECURITY: everything in the directory becomes readable by the code in the
// sandbox. Mount only what it may read.
struct Mount {
  std::string host_dir;    // absolute path of an existing directory
  std::string guest_path;  // absolute guest path, e.g. "/workspace"; not /, /proc, /sys, /dev, /run, /tmp
};

// Zero fields take the library's defaults (shown).
struct SandboxOptions {
  std::string image_dir;         // empty: the runtime's image
  uint32_t vcpus = 0;            // 0: 1
  uint32_t memory_mib = 0;       // 0: 256
  uint32_t boot_timeout_ms = 0;  // 0: 60000
  uint32_t exec_timeout_ms = 0;  // default per-exec timeout; 0: none
  uint64_t output_cap = 0;       // default per-exec output cap in bytes; 0: 16 MiB
  // Start as a clone of this template (made by Sandbox::snapshot) instead of
  // a cold boot. SECURITY: use only directories no untrusted user can write.
  std::string template_dir;
  bool snapshottable = false;    // keep guest RAM in a file so snapshot() works
  // Egress allowlist, "CIDR:PORT" or "CIDR:LO-HI" with an optional "/tcp" or
  // "/udp"; empty (and no net_dns): no network at all.
  // SECURITY: every entry widens what sandboxed code can reach.
  std::vector<std::string> net_allow;
  std::string net_dns;           // a resolver the guest may query; empty: none
  // SECURITY: guest ASLR only hardens programs inside the sandbox; it plays
  // no part in isolating the guest.
  GuestAslr guest_aslr = GuestAslr::kAuto;
  // Workspaces ("deterministic read, volatile write"; has_feature(
  // "workspaces")): host directories the guest sees read-only, at most 16.
  // Each is copied into a read-only disk image when the sandbox is created;
  // the guest's writes stay in its memory and reach the host only through
  // Sandbox::export_changes. Needs a cold boot: not with template_dir,
  // snapshottable or a pool (ZTEE_E_INVALID_ARGUMENT). Errors at creation:
  // ZTEE_E_NOT_FOUND (host_dir missing), ZTEE_E_INVALID_ARGUMENT (a relative
  // host_dir, a bad guest_path, overlapping guest paths), ZTEE_E_CONFLICT
  // (the tree changed while it was copied).
  // SECURITY: everything in the directories becomes readable by the sandbox.
  std::vector<Mount> mounts;
  // Non-empty: destroying the sandbox first appends one JSON line with its
  // diff to this file ({"sandbox", "time_ns", "changes"}). Empty: none.
  std::string diff_log;
};

// Ends running execs from any thread (ztee_cancel). Move-only; empty when
// default-constructed: make one with Cancel::create().
class Cancel {
 public:
  Cancel() = default;
  // Takes ownership of a C token.
  explicit Cancel(ztee_cancel* owned) noexcept : h_(owned) {}

  static Result<Cancel> create() {
    ztee_cancel* c = nullptr;
    ztee_status st = ztee_cancel_create(&c);
    if (st != ZTEE_OK) return detail::last_error(st);
    return Cancel(c);
  }
  // Kills the process group of every exec running with this token; each
  // returns its ExecResult with cancelled set. It stays triggered. Any
  // thread, a streaming callback included; never blocks; a no-op on an empty
  // token.
  void trigger() const noexcept { ztee_cancel_trigger(h_.get()); }
  bool triggered() const noexcept { return ztee_cancel_triggered(h_.get()) != 0; }
  // Sends signal `sig` (1..64) to the process group of every exec running
  // with this token now; with none running, a no-op (ztee_cancel_signal).
  Result<void> signal(int sig) const { return detail::status_result(ztee_cancel_signal(h_.get(), sig)); }

  ztee_cancel* c_handle() const noexcept { return h_.get(); }
  explicit operator bool() const noexcept { return static_cast<bool>(h_); }

 private:
  std::unique_ptr<ztee_cancel, detail::CancelFree> h_;
};

// Stdin streamed to one running exec (ExecOptions::input; ztee_input_*):
// write() from any thread, never blocking (at most ZTEE_INPUT_MAX_BUFFERED
// bytes wait; past that an Error with kIo and sys_errno EAGAIN), close()
// for EOF. Bytes written before the exec starts are sent when it does.
class Input {
 public:
  Input() = default;
  // Takes ownership of a C handle.
  explicit Input(ztee_input* owned) noexcept : h_(owned) {}

  static Result<Input> create() {
    ztee_input* in = nullptr;
    ztee_status st = ztee_input_create(&in);
    if (st != ZTEE_OK) return detail::last_error(st);
    return Input(in);
  }
  Result<void> write(std::string_view data) const {
    return detail::status_result(ztee_input_write(h_.get(), data.data(), data.size()));
  }
  void close() const noexcept { ztee_input_close(h_.get()); }
  size_t buffered() const noexcept { return ztee_input_buffered(h_.get()); }

  ztee_input* c_handle() const noexcept { return h_.get(); }
  explicit operator bool() const noexcept { return static_cast<bool>(h_); }

 private:
  std::unique_ptr<ztee_input, detail::InputFree> h_;
};

struct ExecOptions {
  // Either argv (argv[0] searched in PATH) or shell (run by /bin/sh -c).
  std::vector<std::string> argv;
  std::string shell;
  std::map<std::string, std::string> env;  // added to the guest's default env
  std::string cwd;                         // empty: "/"
  std::string user;                        // empty: root
  std::optional<std::string> stdin_data;   // none: stdin is /dev/null
  uint32_t timeout_ms = 0;                 // 0: the sandbox's default
  uint64_t output_cap = 0;                 // 0: the sandbox's default
  // Streaming: called with each chunk as the guest produces it, on the
  // runtime's event-loop thread (not the caller's); must not block. A
  // streamed stream is not also collected in ExecResult. A callback that
  // throws ends the command: the exception is caught (it never unwinds
  // through libztee), the exec is cancelled (through `cancel` if set, which
  // then stays triggered, else a token of its own), no further chunks are
  // delivered, and exec() returns an Error with status kCallbackThrew whose
  // `exception` holds what was thrown.
  std::function<void(std::string_view)> on_stdout;
  std::function<void(std::string_view)> on_stderr;
  // Borrowed: it must outlive the exec() call. Null (or an empty Cancel): none.
  const Cancel* cancel = nullptr;
  // Stdin written while the command runs; not with stdin_data. Borrowed, as
  // cancel. Null (or an empty Input): none.
  const Input* input = nullptr;
};

struct ExecResult {
  int exit_code = -1;       // -1 if ended by a signal
  int signal = 0;           // 0 if none
  bool timed_out = false;   // the timeout killed the process group
  bool truncated = false;   // output beyond the cap was dropped
  bool cancelled = false;   // ExecOptions::cancel ended it (signal 9)
  uint64_t duration_us = 0;
  std::string stdout_data;  // may hold any bytes; empty when streamed
  std::string stderr_data;
};

enum class FileType : int32_t {
  kFile = ZTEE_FILE_TYPE_FILE,
  kDir = ZTEE_FILE_TYPE_DIR,
  kSymlink = ZTEE_FILE_TYPE_SYMLINK,
  kOther = ZTEE_FILE_TYPE_OTHER,
};

struct FileInfo {
  std::string name;  // the path (stat) or the entry's name (list_dir); from the guest
  FileType type = FileType::kOther;
  uint32_t mode = 0;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
};

enum class ChangeKind : int32_t {
  kCreated = ZTEE_CHANGE_CREATED,
  kModified = ZTEE_CHANGE_MODIFIED,
  kDeleted = ZTEE_CHANGE_DELETED,
};

// One change in a guest's writable layer (Sandbox::diff, ExportResult).
// Every field is the guest's claim: treat it as hostile input.
struct Change {
  ChangeKind kind = ChangeKind::kCreated;
  FileType type = FileType::kOther;  // kDeleted: the type it had
  std::string path;         // in a mount: relative to it; else absolute. Any byte but NUL
  std::string mount;        // the mount's guest path; empty: the guest's own filesystem
  uint64_t size = 0;        // files and symlinks; 0 for deletions
  uint32_t mode = 0;        // permission bits with setuid/setgid/sticky (07777); 0 for deletions
  std::string sha256;       // regular files: 64 hex digits; else empty
  std::string link_target;  // symlinks; else empty
};

// Which changes of one mount Sandbox::export_changes writes back, and where.
struct ExportOptions {
  std::string mount;               // the mount's guest path; empty when the sandbox has one mount
  // Relative paths to export (a directory selects everything below it), each
  // naming a change (ZTEE_E_INVALID_ARGUMENT otherwise). Empty: every change.
  std::vector<std::string> paths;
  // Asked once per selected change, on the calling thread, before anything
  // is written: true approves it. Empty: every selected change. A change the
  // guest alters after it was approved (or one that appears after) is
  // declined, never written. One that throws fails the call with
  // kCallbackThrew (Error::exception holds what it threw) and nothing is
  // written.
  std::function<bool(const Change&)> approve;
  // Empty: the mount's host directory, where every touched path must be as
  // it was when the sandbox started (ZTEE_E_CONFLICT naming the others, and
  // nothing is applied). Else an existing directory that receives the
  // created and modified entries (deletions are not applied there).
  std::string dest_dir;
};

struct ExportResult {
  std::vector<Change> applied;   // written
  std::vector<Change> declined;  // selected but not approved (or changed after approval)
};

struct PoolOptions {
  SandboxOptions sandbox;           // every sandbox's options; template_dir must stay empty
  std::string template_dir;         // empty: the pool makes its own template
  bool cold_boot = false;           // true: every sandbox is a cold boot (no template)
  uint32_t min_ready = 0;           // 0: 2
  uint32_t max_total = 0;           // 0: 8
  uint32_t refill_concurrency = 0;  // 0: 1
  uint32_t lease_timeout_ms = 0;    // Pool::lease's deadline when it passes 0; 0: 30000
  std::string warm_up;              // run in each new sandbox before READY; empty: `true`
};

struct PoolStats {
  uint32_t ready = 0;
  uint32_t starting = 0;
  uint32_t leased = 0;
  uint32_t consecutive_failures = 0;
  bool backing_off = false;
  uint64_t created = 0;
  uint64_t failed = 0;
  uint64_t leases = 0;
  uint64_t lease_timeouts = 0;
  // Leases by time waited: < 10 us, < 100 us, < 1 ms, < 10 ms, < 100 ms,
  // < 1 s, < 10 s, >= 10 s.
  std::array<uint64_t, 8> lease_wait_hist{};
};

namespace detail {

// A ztee_sandbox_options pointing into `o` (and into its own array), valid
// while both live.
struct CSandboxOptions {
  ztee_sandbox_options c;
  std::vector<const char*> allow;
  std::vector<ztee_mount> mounts;
};

inline std::optional<Error> to_c(const SandboxOptions& o, const char* fn, CSandboxOptions& out) {
  ztee_status st = ztee_sandbox_options_init(&out.c, sizeof out.c);
  if (st != ZTEE_OK) return last_error(st);
  for (const std::string* s : {&o.image_dir, &o.template_dir, &o.net_dns, &o.diff_log})
    if (auto e = no_nul(*s, fn, "a SandboxOptions string")) return e;
  out.mounts.clear();
  for (const Mount& m : o.mounts) {
    if (auto e = no_nul(m.host_dir + m.guest_path, fn, "a SandboxOptions::mounts entry")) return e;
    out.mounts.push_back(ztee_mount{m.host_dir.c_str(), m.guest_path.c_str()});
  }
  out.c.mounts = out.mounts.empty() ? nullptr : out.mounts.data();
  out.c.mount_count = out.mounts.size();
  out.c.diff_log = or_null(o.diff_log);
  out.c.image_dir = or_null(o.image_dir);
  out.c.vcpus = o.vcpus;
  out.c.memory_mib = o.memory_mib;
  out.c.boot_timeout_ms = o.boot_timeout_ms;
  out.c.exec_timeout_ms = o.exec_timeout_ms;
  out.c.output_cap = o.output_cap;
  out.c.template_dir = or_null(o.template_dir);
  out.c.snapshottable = o.snapshottable ? 1 : 0;
  out.allow.clear();
  for (const std::string& a : o.net_allow) {
    if (auto e = no_nul(a, fn, "a SandboxOptions::net_allow entry")) return e;
    out.allow.push_back(a.c_str());
  }
  out.c.net_allow = out.allow.empty() ? nullptr : out.allow.data();
  out.c.net_allow_count = out.allow.size();
  out.c.net_dns = or_null(o.net_dns);
  out.c.guest_aslr = static_cast<int32_t>(o.guest_aslr);
  return std::nullopt;
}

inline FileInfo to_file_info(const ztee_file_info& i) {
  FileInfo f;
  f.name = i.name ? i.name : "";
  f.type = (i.type >= ZTEE_FILE_TYPE_FILE && i.type <= ZTEE_FILE_TYPE_OTHER) ? static_cast<FileType>(i.type)
                                                                              : FileType::kOther;
  f.mode = i.mode;
  f.size = i.size;
  f.mtime_ns = i.mtime_ns;
  return f;
}

inline Change to_change(const ztee_change& c) {
  Change r;
  r.kind = (c.kind >= ZTEE_CHANGE_CREATED && c.kind <= ZTEE_CHANGE_DELETED) ? static_cast<ChangeKind>(c.kind)
                                                                             : ChangeKind::kModified;
  r.type = (c.type >= ZTEE_FILE_TYPE_FILE && c.type <= ZTEE_FILE_TYPE_OTHER) ? static_cast<FileType>(c.type)
                                                                              : FileType::kOther;
  r.path = c.path ? c.path : "";
  r.mount = c.mount ? c.mount : "";
  r.size = c.size;
  r.mode = c.mode;
  r.sha256 = c.sha256 ? c.sha256 : "";
  r.link_target = c.link_target ? c.link_target : "";
  return r;
}

inline std::vector<Change> to_changes(const ztee_change_list& l) {
  std::vector<Change> out;
  out.reserve(l.count);
  for (size_t i = 0; i < l.count; ++i) out.push_back(to_change(l.entries[i]));
  return out;
}

// Everything that identifies a change and its content (its strings hold no NUL).
inline std::string change_key(const ztee_change& c) {
  std::string k;
  for (const char* s : {c.path, c.mount, c.sha256, c.link_target}) {
    k += s ? s : "";
    k.push_back('\0');
  }
  k += std::to_string(c.kind) + "," + std::to_string(c.type) + "," + std::to_string(c.size) + "," +
       std::to_string(c.mode);
  return k;
}

// export_changes' C approve callbacks (the calling thread). decline_all: the
// selection comes back in `declined` and nothing is written. approve_listed:
// yes for exactly the changes whose keys are in *user_data (a sorted vector).
inline int decline_all(const ztee_change*, void*) noexcept { return 0; }
inline int approve_listed(const ztee_change* c, void* user_data) noexcept {
  const auto* keys = static_cast<const std::vector<std::string>*>(user_data);
#if ZTEE_HPP_EXCEPTIONS
  try {
    return std::binary_search(keys->begin(), keys->end(), change_key(*c)) ? 1 : 0;
  } catch (...) {  // out of memory: decline
    return 0;
  }
#else
  return std::binary_search(keys->begin(), keys->end(), change_key(*c)) ? 1 : 0;
#endif
}

struct ChangeListFree {
  void operator()(ztee_change_list* p) const noexcept { ztee_change_list_free(p); }
};
struct ExportResultFree {
  void operator()(ztee_export_result* p) const noexcept { ztee_export_result_free(p); }
};

inline ExecResult to_exec_result(const ztee_exec_result& c) {
  ExecResult r;
  r.exit_code = c.exit_code;
  r.signal = c.signal;
  r.timed_out = c.timed_out != 0;
  r.truncated = c.truncated != 0;
  r.cancelled = c.cancelled != 0;
  r.duration_us = c.duration_us;
  r.stdout_data.assign(c.stdout_data, c.stdout_len);
  r.stderr_data.assign(c.stderr_data, c.stderr_len);
  return r;
}

// What the output callbacks of one exec (or gate call) share with it.
struct StreamState {
  const std::function<void(std::string_view)>* on_stdout = nullptr;
  const std::function<void(std::string_view)>* on_stderr = nullptr;
  const char* owner = "ExecOptions";  // names the callback in the message
  ztee_cancel* cancel = nullptr;
  std::exception_ptr error;  // the first exception a callback threw
  std::string message;       // which callback, and what it threw
};

// The C callbacks (the runtime's event-loop thread). Nothing unwinds out.
template <bool Stdout>
void on_output(void* user_data, const char* data, size_t len) noexcept {
  auto* s = static_cast<StreamState*>(user_data);
  if (s->error) return;  // the command is being cancelled: drop the rest
  const char* which = Stdout ? "::on_stdout" : "::on_stderr";
#if ZTEE_HPP_EXCEPTIONS
  try {
    (Stdout ? *s->on_stdout : *s->on_stderr)(std::string_view(data, len));
  } catch (...) {
    s->error = std::current_exception();
    try {
      try {
        throw;
      } catch (const std::exception& e) {
        s->message = std::string(s->owner) + which + " threw: " + e.what() + "; the command was cancelled";
      } catch (...) {
        s->message = std::string(s->owner) + which +
                     " threw an exception not derived from std::exception; the command was cancelled";
      }
    } catch (...) {  // building the message ran out of memory
    }
    ztee_cancel_trigger(s->cancel);
  }
#else
  (void)which;
  (Stdout ? *s->on_stdout : *s->on_stderr)(std::string_view(data, len));
#endif
}

}  // namespace detail

// ---- sandbox ------------------------------------------------------------------

// A microVM. Move-only; the destructor destroys the VM (ztee_sandbox_free).
class Sandbox {
 public:
  Sandbox() = default;
  // Takes ownership of a C handle.
  explicit Sandbox(ztee_sandbox* owned) noexcept : h_(owned) {}

  // "sb-…"; "" for an empty handle.
  std::string id() const { return ztee_sandbox_id(h_.get()); }

  // Runs a command and waits for it to end. A command that exits non-zero,
  // times out or is cancelled is a success of this call (see ExecResult).
  // SECURITY: the command runs as root inside the guest (unless `user`).
  // Errors: ZTEE_E_INVALID_ARGUMENT, ZTEE_E_NOT_FOUND (command or cwd
  // missing), ZTEE_E_SANDBOX_FAILED, ZTEE_E_CLOSED, kCallbackThrew.
  Result<ExecResult> exec(const ExecOptions& opts) {
    if (!h_) return detail::empty_handle("Sandbox::exec");
    const char* fn = "Sandbox::exec";
    if (opts.argv.empty() && opts.shell.empty())
      return detail::invalid("ztee::Sandbox::exec: nothing to run: set ExecOptions::argv or ExecOptions::shell");
    if (!opts.argv.empty() && !opts.shell.empty())
      return detail::invalid("ztee::Sandbox::exec: set either ExecOptions::argv or ExecOptions::shell, not both");
    std::vector<const char*> argv;
    argv.reserve(opts.argv.size());
    for (const std::string& a : opts.argv) {
      if (auto e = detail::no_nul(a, fn, "an ExecOptions::argv entry")) return std::move(*e);
      argv.push_back(a.c_str());
    }
    std::vector<std::string> env;
    std::vector<const char*> envp;
    env.reserve(opts.env.size());
    envp.reserve(opts.env.size());
    for (const auto& [key, val] : opts.env) {
      if (key.empty() || key.find('=') != std::string::npos)
        return detail::invalid("ztee::Sandbox::exec: ExecOptions::env key '" + key +
                               "' is empty or contains '=': use a variable name");
      if (auto e = detail::no_nul(key + val, fn, "an ExecOptions::env entry")) return std::move(*e);
      env.push_back(key + "=" + val);
      envp.push_back(env.back().c_str());
    }
    for (const std::string* s : {&opts.shell, &opts.cwd, &opts.user})
      if (auto e = detail::no_nul(*s, fn, "ExecOptions::shell, cwd or user")) return std::move(*e);

    ztee_exec_options o;
    ztee_status st = ztee_exec_options_init(&o, sizeof o);
    if (st != ZTEE_OK) return detail::last_error(st);
    o.argv = argv.empty() ? nullptr : argv.data();
    o.argc = argv.size();
    o.shell = detail::or_null(opts.shell);
    o.env = envp.empty() ? nullptr : envp.data();
    o.env_count = envp.size();
    o.cwd = detail::or_null(opts.cwd);
    o.user = detail::or_null(opts.user);
    if (opts.stdin_data) {
      o.stdin_data = opts.stdin_data->data();  // non-NULL even when empty: empty stdin
      o.stdin_len = opts.stdin_data->size();
    }
    o.timeout_ms = opts.timeout_ms;
    o.output_cap = opts.output_cap;
    if (opts.input && *opts.input) o.input = opts.input->c_handle();

    detail::StreamState state;
    state.on_stdout = &opts.on_stdout;
    state.on_stderr = &opts.on_stderr;
    std::unique_ptr<ztee_cancel, detail::CancelFree> own_cancel;
    if (opts.cancel && *opts.cancel) {
      state.cancel = opts.cancel->c_handle();
    } else if (opts.on_stdout || opts.on_stderr) {
      // A callback that throws must be able to end the command.
      ztee_cancel* c = nullptr;
      st = ztee_cancel_create(&c);
      if (st != ZTEE_OK) return detail::last_error(st);
      own_cancel.reset(c);
      state.cancel = c;
    }
    o.cancel = state.cancel;
    if (opts.on_stdout) o.on_stdout = &detail::on_output<true>;
    if (opts.on_stderr) o.on_stderr = &detail::on_output<false>;
    o.user_data = &state;

    ztee_exec_result* raw = nullptr;
    st = ztee_sandbox_exec(h_.get(), &o, &raw);
    std::optional<Error> failure;
    if (st != ZTEE_OK) failure = detail::last_error(st);  // before any other ztee_* call
    std::unique_ptr<ztee_exec_result, detail::ExecResultFree> res(raw);
    if (state.error) {
      std::string msg = state.message.empty() ? "an output callback threw; the command was cancelled"
                                              : std::move(state.message);
      return Error{kCallbackThrew, 0, std::move(msg), state.error};
    }
    if (failure) return std::move(*failure);
    return detail::to_exec_result(*res);
  }

  // Runs `shell` through /bin/sh -c, stdout and stderr collected.
  Result<ExecResult> run(std::string_view shell, uint32_t timeout_ms = 0) {
    ExecOptions o;
    o.shell = std::string(shell);
    o.timeout_ms = timeout_ms;
    return exec(o);
  }

  // Files. Paths are guest paths. Errors: ZTEE_E_NOT_FOUND, ZTEE_E_GUEST
  // (sys_errno is the guest's errno), ZTEE_E_CLOSED, ZTEE_E_SANDBOX_FAILED,
  // ZTEE_E_INVALID_ARGUMENT.

  // Creates or replaces a file (any bytes). mode 0: 0644.
  Result<void> write_file(std::string_view path, std::string_view data, uint32_t mode = 0) {
    if (!h_) return detail::empty_handle("Sandbox::write_file");
    if (auto e = detail::no_nul(path, "Sandbox::write_file", "the path")) return std::move(*e);
    return detail::status_result(
        ztee_sandbox_write_file(h_.get(), std::string(path).c_str(), data.data(), data.size(), mode));
  }

  // Reads a whole file (any bytes). max_bytes 0: 64 MiB; a larger file fails
  // with ZTEE_E_INVALID_ARGUMENT.
  Result<std::string> read_file(std::string_view path, uint64_t max_bytes = 0) {
    if (!h_) return detail::empty_handle("Sandbox::read_file");
    if (auto e = detail::no_nul(path, "Sandbox::read_file", "the path")) return std::move(*e);
    void* data = nullptr;
    size_t len = 0;
    ztee_status st = ztee_sandbox_read_file(h_.get(), std::string(path).c_str(), max_bytes, &data, &len);
    if (st != ZTEE_OK) return detail::last_error(st);
    std::unique_ptr<void, detail::MemFree> owned(data);
    return std::string(static_cast<const char*>(data), len);
  }

  Result<FileInfo> stat(std::string_view path) {
    if (!h_) return detail::empty_handle("Sandbox::stat");
    if (auto e = detail::no_nul(path, "Sandbox::stat", "the path")) return std::move(*e);
    ztee_file_info* raw = nullptr;
    ztee_status st = ztee_sandbox_stat(h_.get(), std::string(path).c_str(), &raw);
    if (st != ZTEE_OK) return detail::last_error(st);
    std::unique_ptr<ztee_file_info, detail::FileInfoFree> info(raw);
    return detail::to_file_info(*info);
  }

  // Entries named without their directory, in the guest's order.
  Result<std::vector<FileInfo>> list_dir(std::string_view path) {
    if (!h_) return detail::empty_handle("Sandbox::list_dir");
    if (auto e = detail::no_nul(path, "Sandbox::list_dir", "the path")) return std::move(*e);
    ztee_dir_list* raw = nullptr;
    ztee_status st = ztee_sandbox_list_dir(h_.get(), std::string(path).c_str(), &raw);
    if (st != ZTEE_OK) return detail::last_error(st);
    std::unique_ptr<ztee_dir_list, detail::DirListFree> list(raw);
    std::vector<FileInfo> out;
    out.reserve(list->count);
    for (size_t i = 0; i < list->count; ++i) out.push_back(detail::to_file_info(list->entries[i]));
    return out;
  }

  // A file or an empty directory; recursive: a whole tree.
  Result<void> remove(std::string_view path, bool recursive = false) {
    if (!h_) return detail::empty_handle("Sandbox::remove");
    if (auto e = detail::no_nul(path, "Sandbox::remove", "the path")) return std::move(*e);
    return detail::status_result(ztee_sandbox_remove(h_.get(), std::string(path).c_str(), recursive ? 1 : 0));
  }

  // parents: also missing parents (an existing directory is then fine).
  // mode 0: 0755.
  Result<void> mkdir(std::string_view path, bool parents = false, uint32_t mode = 0) {
    if (!h_) return detail::empty_handle("Sandbox::mkdir");
    if (auto e = detail::no_nul(path, "Sandbox::mkdir", "the path")) return std::move(*e);
    return detail::status_result(
        ztee_sandbox_mkdir(h_.get(), std::string(path).c_str(), parents ? 1 : 0, mode));
  }

  // ---- workspaces (SandboxOptions::mounts) ----

  // What changed in the guest's writable layers since it booted (or, for a
  // clone, since its template was made), sorted by mount and path. mount: a
  // mount's guest path for that mount only, "/" for the guest's own
  // filesystem only, empty for both.
  // SECURITY: the list is the guest's claim; export_changes checks every
  // entry again.
  // Errors: ZTEE_E_NOT_FOUND (no such mount), ZTEE_E_PROTOCOL (a malformed
  // reply: the sandbox is failed), ZTEE_E_GUEST.
  Result<std::vector<Change>> diff(std::string_view mount = {}) {
    if (!h_) return detail::empty_handle("Sandbox::diff");
    if (auto e = detail::no_nul(mount, "Sandbox::diff", "the mount")) return std::move(*e);
    std::string m(mount);
    ztee_change_list* raw = nullptr;
    ztee_status st = ztee_sandbox_diff(h_.get(), detail::or_null(m), &raw);
    if (st != ZTEE_OK) return detail::last_error(st);
    std::unique_ptr<ztee_change_list, detail::ChangeListFree> list(raw);
    return detail::to_changes(*list);
  }

  // Applies the approved part of a mount's diff to the host (see
  // ExportOptions). Every check runs before the first write, and a failing
  // one applies nothing; each file is written to a temporary, synced and
  // renamed into place. With an approver the selection is taken first (one
  // more diff of the guest), the approver asked, and only changes identical
  // to approved ones are written.
  // SECURITY: the one way data written in a sandbox reaches a host
  // directory: approve only what was reviewed (see patch()).
  // Errors: ZTEE_E_CONFLICT (host paths changed since the sandbox started,
  // named), ZTEE_E_PERMISSION (a path with "..", a symlink on the way or
  // leaving the directory, a device or fifo, setuid/setgid bits, a
  // hard-linked host file, content that no longer matches its sha256),
  // ZTEE_E_INVALID_ARGUMENT (no mounts, several and none named, a path that
  // names no change), ZTEE_E_NOT_FOUND (no such mount, dest_dir missing),
  // kCallbackThrew.
  Result<ExportResult> export_changes(const ExportOptions& opts) {
    const char* fn = "Sandbox::export_changes";
    if (!h_) return detail::empty_handle(fn);
    for (const std::string* s : {&opts.mount, &opts.dest_dir})
      if (auto e = detail::no_nul(*s, fn, "ExportOptions::mount or dest_dir")) return std::move(*e);
    std::vector<const char*> paths;
    if (auto e = detail::c_strings(opts.paths, fn, "an ExportOptions::paths entry", paths)) return std::move(*e);
    ztee_export_options o;
    ztee_status st = ztee_export_options_init(&o, sizeof o);
    if (st != ZTEE_OK) return detail::last_error(st);
    o.mount = detail::or_null(opts.mount);
    o.paths = paths.empty() ? nullptr : paths.data();
    o.path_count = paths.size();
    o.dest_dir = detail::or_null(opts.dest_dir);
    auto run = [&]() -> Result<ExportResult> {
      ztee_export_result* raw = nullptr;
      ztee_status s = ztee_sandbox_export_changes(h_.get(), &o, &raw);
      if (s != ZTEE_OK) return detail::last_error(s);
      std::unique_ptr<ztee_export_result, detail::ExportResultFree> res(raw);
      return ExportResult{detail::to_changes(res->applied), detail::to_changes(res->declined)};
    };
    if (!opts.approve) return run();

    // The approver is asked here, not from inside the C call, so that one
    // that throws leaves nothing written.
    o.approve = &detail::decline_all;
    ztee_export_result* raw = nullptr;
    st = ztee_sandbox_export_changes(h_.get(), &o, &raw);
    if (st != ZTEE_OK) return detail::last_error(st);
    std::unique_ptr<ztee_export_result, detail::ExportResultFree> review(raw);
    std::vector<std::string> keys;
    for (size_t i = 0; i < review->declined.count; ++i) {
      const ztee_change& c = review->declined.entries[i];
#if ZTEE_HPP_EXCEPTIONS
      bool yes = false;
      try {
        yes = opts.approve(detail::to_change(c));
      } catch (...) {
        std::string msg;
        try {
          try {
            throw;
          } catch (const std::exception& e) {
            msg = std::string("ExportOptions::approve threw: ") + e.what() + "; nothing was written";
          } catch (...) {
            msg = "ExportOptions::approve threw an exception not derived from std::exception; nothing was written";
          }
        } catch (...) {  // building the message ran out of memory
        }
        return Error{kCallbackThrew, 0, std::move(msg), std::current_exception()};
      }
#else
      bool yes = opts.approve(detail::to_change(c));
#endif
      if (yes) keys.push_back(detail::change_key(c));
    }
    if (keys.empty()) return ExportResult{{}, detail::to_changes(review->declined)};
    std::sort(keys.begin(), keys.end());
    o.approve = &detail::approve_listed;
    o.user_data = &keys;
    return run();
  }

  // A unified diff (diff -u) of a mount's text changes against its host
  // directory, for review (binary files are named, not shown). mount and
  // paths as in ExportOptions. The text holds the guest's bytes.
  Result<std::string> patch(std::string_view mount = {}, const std::vector<std::string>& paths = {}) {
    const char* fn = "Sandbox::patch";
    if (!h_) return detail::empty_handle(fn);
    if (auto e = detail::no_nul(mount, fn, "the mount")) return std::move(*e);
    std::vector<const char*> ps;
    if (auto e = detail::c_strings(paths, fn, "a paths entry", ps)) return std::move(*e);
    std::string m(mount);
    char* text = nullptr;
    ztee_status st = ztee_sandbox_patch(h_.get(), detail::or_null(m), ps.empty() ? nullptr : ps.data(), ps.size(), &text);
    if (st != ZTEE_OK) return detail::last_error(st);
    std::unique_ptr<void, detail::MemFree> owned(text);
    return std::string(text ? text : "");
  }

  // One no-op round trip to the guest agent.
  Result<void> ping() {
    if (!h_) return detail::empty_handle("Sandbox::ping");
    return detail::status_result(ztee_sandbox_ping(h_.get()));
  }

  // Stop / restart the guest's vCPUs (any thread); calls that reach the
  // guest wait while it is paused.
  Result<void> pause() {
    if (!h_) return detail::empty_handle("Sandbox::pause");
    return detail::status_result(ztee_sandbox_pause(h_.get()));
  }
  Result<void> resume() {
    if (!h_) return detail::empty_handle("Sandbox::resume");
    return detail::status_result(ztee_sandbox_resume(h_.get()));
  }

  // Turns the sandbox into a template in `dir` (absolute; must not exist)
  // and CONSUMES it: later calls fail with ZTEE_E_CLOSED (see
  // ztee_sandbox_snapshot). Needs SandboxOptions::snapshottable.
  // SECURITY: the template holds the guest's whole memory.
  Result<void> snapshot(std::string_view dir) {
    if (!h_) return detail::empty_handle("Sandbox::snapshot");
    if (auto e = detail::no_nul(dir, "Sandbox::snapshot", "the directory")) return std::move(*e);
    return detail::status_result(ztee_sandbox_snapshot(h_.get(), std::string(dir).c_str()));
  }

  // Stops the VM and removes what it left on the host, then checks; the
  // destructor does the same without reporting. A second call fails with
  // ZTEE_E_CLOSED.
  Result<void> destroy() {
    if (!h_) return detail::empty_handle("Sandbox::destroy");
    return detail::status_result(ztee_sandbox_destroy(h_.get()));
  }

  ztee_sandbox* c_handle() const noexcept { return h_.get(); }
  explicit operator bool() const noexcept { return static_cast<bool>(h_); }

 private:
  std::unique_ptr<ztee_sandbox, detail::SandboxFree> h_;
};

// ---- pool ---------------------------------------------------------------------

// A warm pool of READY sandboxes (ztee_pool). Move-only; the destructor
// closes and frees it (leased sandboxes keep working). It must not run
// while another thread still blocks in lease(): call close() first, which
// makes such leases fail with ZTEE_E_CLOSED.
class Pool {
 public:
  Pool() = default;
  // Takes ownership of a C handle.
  explicit Pool(ztee_pool* owned) noexcept : h_(owned) {}

  // A READY sandbox, the caller's alone (never recycled), waiting up to
  // deadline_ms (0: the pool's lease_timeout_ms). Any thread.
  // Errors: ZTEE_E_TIMEOUT (see last_error()), ZTEE_E_CLOSED.
  Result<Sandbox> lease(uint32_t deadline_ms = 0) {
    if (!h_) return detail::empty_handle("Pool::lease");
    ztee_sandbox* sb = nullptr;
    ztee_status st = ztee_pool_lease(h_.get(), deadline_ms, &sb);
    if (st != ZTEE_OK) return detail::last_error(st);
    return Sandbox(sb);
  }

  Result<PoolStats> stats() const {
    if (!h_) return detail::empty_handle("Pool::stats");
    ztee_pool_stats c = ZTEE_POOL_STATS_INIT;
    ztee_status st = ztee_pool_stats_get(h_.get(), &c);
    if (st != ZTEE_OK) return detail::last_error(st);
    PoolStats s;
    s.ready = c.ready;
    s.starting = c.starting;
    s.leased = c.leased;
    s.consecutive_failures = c.consecutive_failures;
    s.backing_off = c.backing_off != 0;
    s.created = c.created;
    s.failed = c.failed;
    s.leases = c.leases;
    s.lease_timeouts = c.lease_timeouts;
    for (size_t i = 0; i < s.lease_wait_hist.size(); ++i) s.lease_wait_hist[i] = c.lease_wait_hist[i];
    return s;
  }

  // The latest sandbox start failure ("" if none).
  Result<std::string> last_error() const {
    if (!h_) return detail::empty_handle("Pool::last_error");
    char* msg = nullptr;
    ztee_status st = ztee_pool_last_error(h_.get(), &msg);
    if (st != ZTEE_OK) return detail::last_error(st);
    std::unique_ptr<void, detail::MemFree> owned(msg);
    return std::string(msg ? msg : "");
  }

  // Destroys the READY sandboxes and stops refilling; waiting and later
  // leases fail with ZTEE_E_CLOSED. Idempotent; a no-op on an empty handle.
  void close() noexcept { ztee_pool_close(h_.get()); }

  ztee_pool* c_handle() const noexcept { return h_.get(); }
  explicit operator bool() const noexcept { return static_cast<bool>(h_); }

 private:
  std::unique_ptr<ztee_pool, detail::PoolFree> h_;
};

// ---- runtime ------------------------------------------------------------------

// One event-loop thread that drives its sandboxes and pools. Move-only; the
// destructor drops this reference (the loop stops once every sandbox and
// pool of it is gone too).
class Runtime {
 public:
  Runtime() = default;
  // Takes ownership of a C handle.
  explicit Runtime(ztee_runtime* owned) noexcept : h_(owned) {}

  // Errors: ZTEE_E_INVALID_ARGUMENT, ZTEE_E_BACKEND_UNAVAILABLE, ZTEE_E_IO,
  // ZTEE_E_PERMISSION (the jail needs root: see RuntimeOptions::jail).
  static Result<Runtime> create(const RuntimeOptions& opts = {}) {
    for (const std::string* s : {&opts.state_dir, &opts.image_dir, &opts.backend, &opts.qemu_binary, &opts.accel})
      if (auto e = detail::no_nul(*s, "Runtime::create", "a RuntimeOptions string")) return std::move(*e);
    ztee_runtime_options o;
    ztee_status st = ztee_runtime_options_init(&o, sizeof o);
    if (st != ZTEE_OK) return detail::last_error(st);
    o.state_dir = detail::or_null(opts.state_dir);
    o.image_dir = detail::or_null(opts.image_dir);
    o.backend = detail::or_null(opts.backend);
    o.qemu_binary = detail::or_null(opts.qemu_binary);
    o.accel = detail::or_null(opts.accel);
    o.jail_disabled = opts.jail ? 0 : 1;
    ztee_runtime* rt = nullptr;
    st = ztee_runtime_create(&o, &rt);
    if (st != ZTEE_OK) return detail::last_error(st);
    return Runtime(rt);
  }

  // Boots a microVM and waits until it is ready.
  // SECURITY: the sandbox runs arbitrary code.
  // Errors: ZTEE_E_IMAGE, ZTEE_E_BACKEND_UNAVAILABLE, ZTEE_E_TIMEOUT,
  // ZTEE_E_SANDBOX_FAILED, ZTEE_E_INVALID_ARGUMENT.
  Result<Sandbox> create_sandbox(const SandboxOptions& opts = {}) const {
    if (!h_) return detail::empty_handle("Runtime::create_sandbox");
    detail::CSandboxOptions c;
    if (auto e = detail::to_c(opts, "Runtime::create_sandbox", c)) return std::move(*e);
    ztee_sandbox* sb = nullptr;
    ztee_status st = ztee_sandbox_create(h_.get(), &c.c, &sb);
    if (st != ZTEE_OK) return detail::last_error(st);
    return Sandbox(sb);
  }

  // Creates a pool and waits until its template exists (not until it is
  // full). SECURITY: up to max_total VMs that run arbitrary code.
  Result<Pool> create_pool(const PoolOptions& opts = {}) const {
    if (!h_) return detail::empty_handle("Runtime::create_pool");
    detail::CSandboxOptions sbo;
    if (auto e = detail::to_c(opts.sandbox, "Runtime::create_pool", sbo)) return std::move(*e);
    for (const std::string* s : {&opts.template_dir, &opts.warm_up})
      if (auto e = detail::no_nul(*s, "Runtime::create_pool", "PoolOptions::template_dir or warm_up"))
        return std::move(*e);
    ztee_pool_options o;
    ztee_status st = ztee_pool_options_init(&o, sizeof o);
    if (st != ZTEE_OK) return detail::last_error(st);
    o.sandbox = &sbo.c;
    o.template_dir = detail::or_null(opts.template_dir);
    o.cold_boot = opts.cold_boot ? 1 : 0;
    o.min_ready = opts.min_ready;
    o.max_total = opts.max_total;
    o.refill_concurrency = opts.refill_concurrency;
    o.lease_timeout_ms = opts.lease_timeout_ms;
    o.warm_up = detail::or_null(opts.warm_up);
    ztee_pool* pool = nullptr;
    st = ztee_pool_create(h_.get(), &o, &pool);
    if (st != ZTEE_OK) return detail::last_error(st);
    return Pool(pool);
  }

  // "qemu/tcg (…why…)" or "qemu/kvm (…)"; the first word is stable. "" for
  // an empty handle.
  std::string backend() const { return ztee_runtime_backend(h_.get()); }

  ztee_runtime* c_handle() const noexcept { return h_.get(); }
  explicit operator bool() const noexcept { return static_cast<bool>(h_); }

 private:
  std::unique_ptr<ztee_runtime, detail::RuntimeFree> h_;
};

// ---- control plane: policy, audit log, gate -----------------------------------
//
// Whether a tool call of an agent runs, with which limits, and what is
// recorded (ztee_policy_*, ztee_audit_*, ztee_gate_*; has_feature("gate")).
// A policy sorts each call into a tier L0..L5 whose action is run, audit,
// approve (run once an approver says yes before a deadline) or deny; a call
// no rule matches is denied (fail closed).
// SECURITY: the gate cannot tell a benign program from a malicious one that
// matches the same rule: containing what runs is the microVM's job. A policy
// is trusted input.

enum class Action : int32_t {
  kRun = ZTEE_ACTION_RUN,          // runs
  kAudit = ZTEE_ACTION_AUDIT,      // runs; for calls the log must show
  kApprove = ZTEE_ACTION_APPROVE,  // runs once an approver says yes
  kDeny = ZTEE_ACTION_DENY,        // never runs
};

// A policy's verdict on one tool call.
struct Decision {
  int tier = 5;                  // 0..5 (L0..L5); 5 when no rule matched
  Action action = Action::kDeny;
  int rule_index = -1;           // the matching rule's index in "rules"; -1: none (denied)
  std::string rule;              // the matching rule's name; "" when none
  std::string reason;            // one line for logs, e.g. "rule \"reads\" -> L0 run"
};

// One request of an agent to run a tool (ztee_tool_call). Empty fields are
// unset.
struct ToolCall {
  std::string tool;               // the tool's name, e.g. "python" (required)
  // Exactly one of: a shell command (/bin/sh -c) or an argv.
  std::string command;
  std::vector<std::string> argv;
  // A value "secret://NAME" is resolved by the gate on the host (see
  // GateOptions::secrets) and scrubbed from the output as "[secret:NAME]".
  std::map<std::string, std::string> env;
  // Written into the sandbox before the command runs: absolute guest path ->
  // bytes. A content that is exactly "secret://NAME" becomes the secret (the
  // file then 0600). Paths count as writes for the policy.
  std::map<std::string, std::string> files;
  std::string cwd;                        // empty: "/"
  std::string user;                       // empty: root
  std::optional<std::string> stdin_data;  // none: stdin is /dev/null
  std::vector<std::string> writes;        // guest paths the call says it writes
  // Hosts/CIDRs to reach; each must be in its tier's "network" list, else the
  // call is denied. SECURITY: what is allowed becomes the sandbox's egress
  // allowlist.
  std::vector<std::string> network;
  std::vector<std::string> labels;        // free-form, e.g. "pii", "readonly"
  std::string trace_id;                   // recorded with every event; empty: "call-<random>"
  // Streamed output, scrubbed of secret values (and filtered by DLP): as
  // ExecOptions::on_stdout / on_stderr (event-loop thread, must not block; a
  // callback that throws cancels the command and Gate::call returns an
  // Error with status kCallbackThrew). Ignored by Policy::classify.
  std::function<void(std::string_view)> on_stdout;
  std::function<void(std::string_view)> on_stderr;
  // Borrowed: it must outlive the call. Null (or an empty Cancel): none.
  const Cancel* cancel = nullptr;
};

namespace detail {

struct PolicyFree {
  void operator()(ztee_policy* p) const noexcept { ztee_policy_free(p); }
};
struct DecisionFree {
  void operator()(ztee_decision* p) const noexcept { ztee_decision_free(p); }
};
struct AuditLogFree {
  void operator()(ztee_audit_log* p) const noexcept { ztee_audit_free(p); }
};
struct AuditReportFree {
  void operator()(ztee_audit_report* p) const noexcept { ztee_audit_report_free(p); }
};
struct CallResultFree {
  void operator()(ztee_call_result* p) const noexcept { ztee_call_result_free(p); }
};
struct GateFree {
  void operator()(ztee_gate* p) const noexcept { ztee_gate_free(p); }
};

// A ztee_tool_call pointing into a ToolCall and into its own arrays, valid
// while both live. Callbacks and cancel are left unset.
struct CToolCall {
  ztee_tool_call c;
  std::vector<const char*> argv, envp, paths, contents, writes, network, labels;
  std::vector<std::string> env;
  std::vector<size_t> lengths;
};

inline std::optional<Error> to_c(const ToolCall& t, const char* fn, CToolCall& out) {
  ztee_status st = ztee_tool_call_init(&out.c, sizeof out.c);
  if (st != ZTEE_OK) return last_error(st);
  for (const std::string* s : {&t.tool, &t.command, &t.cwd, &t.user, &t.trace_id})
    if (auto e = no_nul(*s, fn, "ToolCall::tool, command, cwd, user or trace_id")) return e;
  if (auto e = c_strings(t.argv, fn, "a ToolCall::argv entry", out.argv)) return e;
  if (auto e = c_strings(t.writes, fn, "a ToolCall::writes entry", out.writes)) return e;
  if (auto e = c_strings(t.network, fn, "a ToolCall::network entry", out.network)) return e;
  if (auto e = c_strings(t.labels, fn, "a ToolCall::labels entry", out.labels)) return e;
  out.env.clear();
  out.env.reserve(t.env.size());
  out.envp.clear();
  for (const auto& [key, val] : t.env) {
    if (key.empty() || key.find('=') != std::string::npos)
      return invalid(std::string("ztee::") + fn + ": ToolCall::env key '" + key +
                     "' is empty or contains '=': use a variable name");
    if (auto e = no_nul(key + val, fn, "a ToolCall::env entry")) return e;
    out.env.push_back(key + "=" + val);
  }
  for (const std::string& e : out.env) out.envp.push_back(e.c_str());
  out.paths.clear();
  out.contents.clear();
  out.lengths.clear();
  for (const auto& [path, data] : t.files) {
    if (auto e = no_nul(path, fn, "a ToolCall::files path")) return e;
    out.paths.push_back(path.c_str());
    out.contents.push_back(data.data());
    out.lengths.push_back(data.size());
  }
  ztee_tool_call& c = out.c;
  c.tool = or_null(t.tool);
  c.command = or_null(t.command);
  c.argv = out.argv.empty() ? nullptr : out.argv.data();
  c.argc = out.argv.size();
  c.env = out.envp.empty() ? nullptr : out.envp.data();
  c.env_count = out.envp.size();
  c.file_paths = out.paths.empty() ? nullptr : out.paths.data();
  c.file_contents = out.contents.empty() ? nullptr : out.contents.data();
  c.file_lengths = out.lengths.empty() ? nullptr : out.lengths.data();
  c.file_count = out.paths.size();
  c.cwd = or_null(t.cwd);
  c.user = or_null(t.user);
  if (t.stdin_data) {
    c.stdin_data = t.stdin_data->data();  // non-NULL even when empty: empty stdin
    c.stdin_len = t.stdin_data->size();
  }
  c.writes = out.writes.empty() ? nullptr : out.writes.data();
  c.writes_count = out.writes.size();
  c.network = out.network.empty() ? nullptr : out.network.data();
  c.network_count = out.network.size();
  c.labels = out.labels.empty() ? nullptr : out.labels.data();
  c.labels_count = out.labels.size();
  c.trace_id = or_null(t.trace_id);
  return std::nullopt;
}

inline Action to_action(int32_t a) {
  return (a >= ZTEE_ACTION_RUN && a <= ZTEE_ACTION_DENY) ? static_cast<Action>(a) : Action::kDeny;
}

}  // namespace detail

// A parsed, immutable policy (ztee_policy). Move-only; any number of
// threads may classify with one policy at once.
class Policy {
 public:
  Policy() = default;
  // Takes ownership of a C handle.
  explicit Policy(ztee_policy* owned) noexcept : h_(owned) {}

  // Parses a JSON policy (see ztee_policy_parse for the format).
  // Errors: ZTEE_E_INVALID_ARGUMENT, message "policy: line N: reason".
  static Result<Policy> parse(std::string_view json) {
    ztee_policy* p = nullptr;
    ztee_status st = ztee_policy_parse(json.data(), json.size(), &p);
    if (st != ZTEE_OK) return detail::last_error(st);
    return Policy(p);
  }
  // Reads and parses a policy file ("PATH: line N: reason").
  // Errors: as parse; ZTEE_E_NOT_FOUND (cannot open path).
  static Result<Policy> load(std::string_view path) {
    if (auto e = detail::no_nul(path, "Policy::load", "the path")) return std::move(*e);
    ztee_policy* p = nullptr;
    ztee_status st = ztee_policy_load(std::string(path).c_str(), &p);
    if (st != ZTEE_OK) return detail::last_error(st);
    return Policy(p);
  }
  // The policy that ships with libztee: read-only tools L0 run; internal
  // writes L2 audit; code execution, destructive commands and writes,
  // network and PII labels L4 approve; anything else denied.
  static Result<Policy> default_policy() {
    ztee_policy* p = nullptr;
    ztee_status st = ztee_policy_default(&p);
    if (st != ZTEE_OK) return detail::last_error(st);
    return Policy(p);
  }
  // The JSON text of the default policy (static storage).
  static const char* default_json() noexcept { return ztee_policy_default_json(); }

  // Classifies a call; nothing runs (secret references are not resolved;
  // callbacks and cancel are ignored).
  // Errors: ZTEE_E_INVALID_ARGUMENT (no tool, a malformed entry).
  Result<Decision> classify(const ToolCall& call) const {
    if (!h_) return detail::empty_handle("Policy::classify");
    detail::CToolCall c;
    if (auto e = detail::to_c(call, "Policy::classify", c)) return std::move(*e);
    ztee_decision* raw = nullptr;
    ztee_status st = ztee_policy_classify(h_.get(), &c.c, &raw);
    if (st != ZTEE_OK) return detail::last_error(st);
    std::unique_ptr<ztee_decision, detail::DecisionFree> d(raw);
    return Decision{d->tier, detail::to_action(d->action), d->rule_index, d->rule, d->reason};
  }

  ztee_policy* c_handle() const noexcept { return h_.get(); }
  explicit operator bool() const noexcept { return static_cast<bool>(h_); }

 private:
  std::unique_ptr<ztee_policy, detail::PolicyFree> h_;
};

enum class Durability : int32_t {
  kFsync = ZTEE_DURABILITY_FSYNC,  // fdatasync after every record (default)
  kBatch = ZTEE_DURABILITY_BATCH,  // at most every batch_ms: power loss loses up to batch_ms
  kNone = ZTEE_DURABILITY_NONE,    // left to the kernel
};

struct AuditOptions {
  std::string path;                           // the log file, created 0600 if missing (required)
  Durability durability = Durability::kFsync;
  uint32_t batch_ms = 0;                      // kBatch's interval; 0: 100
  // Non-empty: every record also carries an HMAC-SHA256 with this key (any
  // bytes), so verify_audit_log with the key detects a rewritten chain.
  std::string hmac_key;
  uint64_t rotate_bytes = 0;                  // > 0: rotate to <path>.<n> past this size
};

// An append-only, hash-chained JSON Lines file (ztee_audit_log). Move-only;
// thread-safe. Records appended from several threads and processes to one
// file keep one chain.
class AuditLog {
 public:
  AuditLog() = default;
  // Takes ownership of a C handle.
  explicit AuditLog(ztee_audit_log* owned) noexcept : h_(owned) {}

  // Opens (creating if missing) the log; appends continue its chain.
  // Errors: ZTEE_E_INVALID_ARGUMENT (no path), ZTEE_E_IO (cannot open).
  static Result<AuditLog> open(const AuditOptions& opts) {
    if (opts.path.empty())
      return detail::invalid("ztee::AuditLog::open: AuditOptions::path is empty: name the log file");
    if (auto e = detail::no_nul(opts.path, "AuditLog::open", "AuditOptions::path")) return std::move(*e);
    ztee_audit_options o;
    ztee_status st = ztee_audit_options_init(&o, sizeof o);
    if (st != ZTEE_OK) return detail::last_error(st);
    o.path = opts.path.c_str();
    o.durability = static_cast<int32_t>(opts.durability);
    o.batch_ms = opts.batch_ms;
    o.hmac_key = opts.hmac_key.empty() ? nullptr : opts.hmac_key.data();
    o.hmac_key_len = opts.hmac_key.size();
    o.rotate_bytes = opts.rotate_bytes;
    ztee_audit_log* log = nullptr;
    st = ztee_audit_open(&o, &log);
    if (st != ZTEE_OK) return detail::last_error(st);
    return AuditLog(log);
  }

  // Appends one record of `event` (non-empty) for trace_id; fields_json_inner
  // is the inner part of a JSON object on one line ("\"user\":\"alice\"",
  // empty: none) without the record's own keys. Returns the record's seq.
  // Blocks for the write (and sync). Errors: ZTEE_E_INVALID_ARGUMENT, ZTEE_E_IO.
  Result<uint64_t> append(std::string_view event, std::string_view trace_id = {},
                          std::string_view fields_json_inner = {}) {
    if (!h_) return detail::empty_handle("AuditLog::append");
    for (std::string_view s : {event, trace_id, fields_json_inner})
      if (auto e = detail::no_nul(s, "AuditLog::append", "the event, trace id or fields")) return std::move(*e);
    uint64_t seq = 0;
    std::string ev(event), tr(trace_id), fields(fields_json_inner);
    ztee_status st = ztee_audit_append(h_.get(), ev.c_str(), tr.c_str(), fields.c_str(), &seq);
    if (st != ZTEE_OK) return detail::last_error(st);
    return seq;
  }

  // fdatasync now (kBatch / kNone: make everything appended so far durable).
  Result<void> flush() {
    if (!h_) return detail::empty_handle("AuditLog::flush");
    return detail::status_result(ztee_audit_flush(h_.get()));
  }

  ztee_audit_log* c_handle() const noexcept { return h_.get(); }
  explicit operator bool() const noexcept { return static_cast<bool>(h_); }

 private:
  std::unique_ptr<ztee_audit_log, detail::AuditLogFree> h_;
};

struct AuditReport {
  bool ok = false;       // every record present, in order, unedited
  uint64_t records = 0;  // records checked
  std::string problem;   // the first problem; "" when ok
};

// Verifies one chain across `files` given oldest first (a rotated log:
// path.1, path.2, ..., path); with a key, every record's HMAC too. A log
// that fails verification is a success with ok false. A removed tail cannot
// be seen from the files alone: compare the last seq with what append or
// the gate reported. Errors: ZTEE_E_INVALID_ARGUMENT (no files).
inline Result<AuditReport> verify_audit_log(const std::vector<std::string>& files, std::string_view key = {}) {
  std::vector<const char*> paths;
  if (auto e = detail::c_strings(files, "verify_audit_log", "a file name", paths)) return std::move(*e);
  ztee_audit_report* raw = nullptr;
  ztee_status st = ztee_audit_verify(paths.empty() ? nullptr : paths.data(), paths.size(),
                                     key.empty() ? nullptr : key.data(), key.size(), &raw);
  if (st != ZTEE_OK) return detail::last_error(st);
  std::unique_ptr<ztee_audit_report, detail::AuditReportFree> rep(raw);
  return AuditReport{rep->ok != 0, rep->records, rep->problem};
}

class Gate;

// A call of an approve tier waiting for an answer (see GateOptions::approver).
struct ApprovalRequest {
  std::string token;        // answer with Gate::approve / Gate::deny(token, ...)
  std::string description;  // JSON: tool, text, env_keys, cwd, user, writes, network,
                            // labels, tier, rule, trace; never secret values
  uint32_t deadline_ms = 0; // no answer by then denies the call
};

struct GateOptions {
  // Null: the default policy. The gate keeps its own reference: the Policy
  // may be destroyed once the gate exists (likewise audit and pool).
  const Policy* policy = nullptr;
  // Null: nothing is recorded (not recommended). Its append errors do not
  // fail calls.
  const AuditLog* audit = nullptr;
  // Asked for every call of an approve tier, on the thread in Gate::call,
  // which waits: answer with gate.approve / gate.deny, at once or later from
  // any thread, within deadline_ms (copy the token). Empty: such calls are
  // denied. An approver that throws denies the call with what it threw.
  std::function<void(const ApprovalRequest&, Gate&)> approver;
  // Looks up the secret NAME of "secret://NAME" (on the thread in
  // Gate::call; may block): its value (not empty), or std::nullopt when it
  // does not know the name (secrets_dir, then secrets_env_prefix are asked
  // next). A resolver that throws fails the call with ZTEE_E_INTERNAL.
  // SECURITY: a value reaches the sandboxed process; it is scrubbed (with
  // its hex and base64 forms) from output, errors and the log, but the
  // process may leak it in other forms.
  std::function<std::optional<std::string>(const std::string& name)> secrets;
  std::string secrets_dir;         // a file per secret: <dir>/NAME; empty: none
  std::string secrets_env_prefix;  // the host variable <prefix>NAME; empty: none
  // Options of the sandboxes of calls the pool does not serve; a tier's
  // memory_mib overrides memory_mib.
  SandboxOptions sandbox;
  // Null: every call boots a sandbox. Else calls without network and without
  // a tier memory_mib lease from it. The gate keeps the pool open until it is
  // destroyed (not past Pool::close).
  const Pool* pool = nullptr;
  // Output DLP: scans stdout and stderr (after secrets are scrubbed) with
  // libztee's default detectors ("[REDACTED:<detector>]") and injection rules
  // (see ztee_gate_options.dlp).
  bool dlp = false;
  // Detector names (e.g. "card", "private_key") whose findings block the
  // call's output instead (CallResult::blocked). Implies dlp. An unknown name
  // is ZTEE_E_INVALID_ARGUMENT at Gate::create.
  std::vector<std::string> dlp_block;
};

// What Gate::call did.
struct CallResult {
  bool ran = false;          // the command ran (see exec); false: denied
  Decision decision;
  std::string denial;        // why it did not run ("" when it ran), or why DLP blocked its output
  std::string approved_by;   // approve tiers: who said yes
  std::string sandbox_id;    // the sandbox it ran in ("" when denied)
  // When it ran: stdout/stderr scrubbed of secrets (and filtered by DLP).
  std::optional<ExecResult> exec;
  bool blocked = false;      // DLP blocked the output (GateOptions::dlp_block)
  uint32_t dlp_findings = 0;
  uint32_t injection_anomalies = 0;
};

namespace detail {

// What the C callbacks of a gate reach: the gate's callbacks and the Gate
// object that owns it (kept current across moves).
struct GateState {
  std::function<void(const ApprovalRequest&, Gate&)> approver;
  std::function<std::optional<std::string>(const std::string&)> secrets;
  Gate* self = nullptr;
  std::unique_ptr<ztee_gate, GateFree> h;  // freed first: no callback runs after
};

// The message of a secret resolver that threw on this thread ("" if none).
inline std::string& secret_threw() {
  static thread_local std::string message;
  return message;
}

inline void gate_approver(void* user_data, ztee_gate* gate, const char* token, const char* description,
                          uint32_t deadline_ms) noexcept;

inline ztee_status gate_secret(void* user_data, const char* name, ztee_secret_value* out) noexcept {
  auto* s = static_cast<GateState*>(user_data);
#if ZTEE_HPP_EXCEPTIONS
  try {
    std::optional<std::string> v = s->secrets(name);
    if (!v) return ZTEE_E_NOT_FOUND;
    return ztee_secret_value_set(out, v->data(), v->size());
  } catch (...) {
    try {
      try {
        throw;
      } catch (const std::exception& e) {
        secret_threw() = std::string("GateOptions::secrets threw for '") + name + "': " + e.what();
      } catch (...) {
        secret_threw() = std::string("GateOptions::secrets threw for '") + name +
                         "' an exception not derived from std::exception";
      }
    } catch (...) {  // building the message ran out of memory
    }
    return ZTEE_E_INTERNAL;
  }
#else
  std::optional<std::string> v = s->secrets(name);
  if (!v) return ZTEE_E_NOT_FOUND;
  return ztee_secret_value_set(out, v->data(), v->size());
#endif
}

}  // namespace detail

// Runs tool calls under a policy (ztee_gate): classify -> ask for approval
// when the tier says so -> resolve secret references -> run in a fresh (or
// pooled) sandbox destroyed afterwards -> scrub secrets (and DLP) from the
// output, recording every step in the audit log. Move-only; Gate::call from
// many threads runs at once. The destructor must not run while a call is
// running on it.
class Gate {
 public:
  Gate() = default;
  Gate(Gate&& o) noexcept : s_(std::move(o.s_)) {
    if (s_) s_->self = this;
  }
  Gate& operator=(Gate&& o) noexcept {
    s_ = std::move(o.s_);
    if (s_) s_->self = this;
    return *this;
  }
  ~Gate() = default;

  // Creates a gate on `rt` (kept alive by the gate, as are the policy, audit
  // log and pool). Errors: ZTEE_E_INVALID_ARGUMENT (bad options, an unknown
  // dlp_block detector).
  static Result<Gate> create(const Runtime& rt, GateOptions opts = {}) {
    const char* fn = "Gate::create";
    if (!rt) return detail::empty_handle(fn);
    if ((opts.policy && !*opts.policy) || (opts.audit && !*opts.audit) || (opts.pool && !*opts.pool))
      return detail::invalid("ztee::Gate::create: GateOptions::policy, audit or pool points to an empty handle: "
                             "pass null or a live one");
    for (const std::string* s : {&opts.secrets_dir, &opts.secrets_env_prefix})
      if (auto e = detail::no_nul(*s, fn, "GateOptions::secrets_dir or secrets_env_prefix")) return std::move(*e);
    detail::CSandboxOptions sbo;
    if (auto e = detail::to_c(opts.sandbox, fn, sbo)) return std::move(*e);
    std::vector<const char*> block;
    if (auto e = detail::c_strings(opts.dlp_block, fn, "a GateOptions::dlp_block entry", block))
      return std::move(*e);

    auto state = std::make_unique<detail::GateState>();
    state->approver = std::move(opts.approver);
    state->secrets = std::move(opts.secrets);
    ztee_gate_options o;
    ztee_status st = ztee_gate_options_init(&o, sizeof o);
    if (st != ZTEE_OK) return detail::last_error(st);
    o.policy = opts.policy ? opts.policy->c_handle() : nullptr;
    o.audit = opts.audit ? opts.audit->c_handle() : nullptr;
    if (state->approver) {
      o.approver = &detail::gate_approver;
      o.approver_data = state.get();
    }
    if (state->secrets) {
      o.resolver = &detail::gate_secret;
      o.resolver_data = state.get();
    }
    o.secrets_dir = detail::or_null(opts.secrets_dir);
    o.secrets_env_prefix = detail::or_null(opts.secrets_env_prefix);
    o.sandbox = &sbo.c;
    o.pool = opts.pool ? opts.pool->c_handle() : nullptr;
    o.dlp = opts.dlp ? 1 : 0;
    o.dlp_block = block.empty() ? nullptr : block.data();
    o.dlp_block_count = block.size();
    ztee_gate* g = nullptr;
    st = ztee_gate_create(rt.c_handle(), &o, &g);
    if (st != ZTEE_OK) return detail::last_error(st);
    state->h.reset(g);
    return Gate(std::move(state));
  }

  // Runs one tool call through the gate and waits for it. A denied call is
  // a success with ran false; errors are failures to run an allowed call.
  // The approver and secret resolver run on this thread during the call.
  // SECURITY: an allowed call runs arbitrary code as root in its guest.
  // Errors: ZTEE_E_INVALID_ARGUMENT (no tool, nothing to run, both command
  // and argv), ZTEE_E_NOT_FOUND (a secret no resolver knows: nothing runs;
  // command or cwd missing), ZTEE_E_INTERNAL (GateOptions::secrets threw),
  // kCallbackThrew, and those of Sandbox::exec.
  Result<CallResult> call(const ToolCall& call) {
    const char* fn = "Gate::call";
    if (!s_) return detail::empty_handle(fn);
    detail::CToolCall c;
    if (auto e = detail::to_c(call, fn, c)) return std::move(*e);

    detail::StreamState state;
    state.on_stdout = &call.on_stdout;
    state.on_stderr = &call.on_stderr;
    state.owner = "ToolCall";
    std::unique_ptr<ztee_cancel, detail::CancelFree> own_cancel;
    if (call.cancel && *call.cancel) {
      state.cancel = call.cancel->c_handle();
    } else if (call.on_stdout || call.on_stderr) {
      // A callback that throws must be able to end the command.
      ztee_cancel* cc = nullptr;
      ztee_status st = ztee_cancel_create(&cc);
      if (st != ZTEE_OK) return detail::last_error(st);
      own_cancel.reset(cc);
      state.cancel = cc;
    }
    c.c.cancel = state.cancel;
    if (call.on_stdout) c.c.on_stdout = &detail::on_output<true>;
    if (call.on_stderr) c.c.on_stderr = &detail::on_output<false>;
    c.c.user_data = &state;

    detail::secret_threw().clear();
    ztee_call_result* raw = nullptr;
    ztee_status st = ztee_gate_call(s_->h.get(), &c.c, &raw);
    std::optional<Error> failure;
    if (st != ZTEE_OK) failure = detail::last_error(st);  // before any other ztee_* call
    std::unique_ptr<ztee_call_result, detail::CallResultFree> res(raw);
    if (state.error) {
      std::string msg = state.message.empty() ? "an output callback threw; the command was cancelled"
                                              : std::move(state.message);
      return Error{kCallbackThrew, 0, std::move(msg), state.error};
    }
    if (failure) {
      if (!detail::secret_threw().empty()) {
        failure->message = detail::secret_threw() + " (" + failure->message + ")";
        detail::secret_threw().clear();
      }
      return std::move(*failure);
    }
    CallResult r;
    r.ran = res->ran != 0;
    r.decision = Decision{res->tier, detail::to_action(res->action), res->rule_index, res->rule, res->reason};
    r.denial = res->denial;
    r.approved_by = res->approved_by;
    r.sandbox_id = res->sandbox_id;
    if (res->exec) r.exec = detail::to_exec_result(*res->exec);
    r.blocked = res->blocked != 0;
    r.dlp_findings = res->dlp_findings;
    r.injection_anomalies = res->injection_anomalies;
    return r;
  }

  // Answer a pending approval (any thread, the approver included). who is
  // recorded (empty: "approver"); so is the reason of a denial.
  // Errors: ZTEE_E_NOT_FOUND (unknown, already answered or expired token;
  // the late answer is ignored and recorded).
  Result<void> approve(std::string_view token, std::string_view who = {}) {
    if (!s_) return detail::empty_handle("Gate::approve");
    for (std::string_view s : {token, who})
      if (auto e = detail::no_nul(s, "Gate::approve", "the token or who")) return std::move(*e);
    std::string t(token), w(who);
    return detail::status_result(ztee_gate_approve(s_->h.get(), t.c_str(), detail::or_null(w)));
  }
  Result<void> deny(std::string_view token, std::string_view reason = {}, std::string_view who = {}) {
    if (!s_) return detail::empty_handle("Gate::deny");
    for (std::string_view s : {token, reason, who})
      if (auto e = detail::no_nul(s, "Gate::deny", "the token, reason or who")) return std::move(*e);
    std::string t(token), r(reason), w(who);
    return detail::status_result(ztee_gate_deny(s_->h.get(), t.c_str(), detail::or_null(r), detail::or_null(w)));
  }

  ztee_gate* c_handle() const noexcept { return s_ ? s_->h.get() : nullptr; }
  explicit operator bool() const noexcept { return static_cast<bool>(s_); }

 private:
  explicit Gate(std::unique_ptr<detail::GateState> s) noexcept : s_(std::move(s)) { s_->self = this; }
  std::unique_ptr<detail::GateState> s_;
};

namespace detail {

inline void gate_approver(void* user_data, ztee_gate* gate, const char* token, const char* description,
                          uint32_t deadline_ms) noexcept {
  auto* s = static_cast<GateState*>(user_data);
#if ZTEE_HPP_EXCEPTIONS
  try {
    s->approver(ApprovalRequest{token, description ? description : "", deadline_ms}, *s->self);
  } catch (...) {
    // Deny with what it threw (an answer it gave first stands: this one is
    // then ignored).
    const char* fallback = "GateOptions::approver threw";
    try {
      std::string reason;
      try {
        throw;
      } catch (const std::exception& e) {
        reason = std::string("GateOptions::approver threw: ") + e.what();
      } catch (...) {
        reason = "GateOptions::approver threw an exception not derived from std::exception";
      }
      ztee_gate_deny(gate, token, reason.c_str(), nullptr);
    } catch (...) {  // building the message ran out of memory
      ztee_gate_deny(gate, token, fallback, nullptr);
    }
  }
#else
  (void)gate;
  s->approver(ApprovalRequest{token, description ? description : "", deadline_ms}, *s->self);
#endif
}

}  // namespace detail

}  // namespace capi_v0
}  // namespace ztee

#endif  // ZTEE_HPP
