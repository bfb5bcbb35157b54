// libztee: the installable C++ API.
//
// A header-only C++17 layer over the stable C ABI (ztee.h): every call here
// is an inline function that calls ztee_* functions, so a C++ program built
// against this header needs only libztee.so and keeps working across
// libztee releases exactly as a C program does. It adds no exported symbol
// to libztee.so. Installed next to ztee.h: #include <ztee.hpp> and link
// libztee (CMake: ztee::ztee; pkg-config: ztee).
//
//  - Handles (Runtime, Sandbox, Pool, Cancel) are move-only and release
//    their C handle in their destructor (a Sandbox's destroys its VM). A
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

// The status of an exec whose on_stdout or on_stderr callback threw. This
// layer's own code: the C ABI never returns it (its codes count down from -1).
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

  ztee_cancel* c_handle() const noexcept { return h_.get(); }
  explicit operator bool() const noexcept { return static_cast<bool>(h_); }

 private:
  std::unique_ptr<ztee_cancel, detail::CancelFree> h_;
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
};

inline std::optional<Error> to_c(const SandboxOptions& o, const char* fn, CSandboxOptions& out) {
  ztee_status st = ztee_sandbox_options_init(&out.c, sizeof out.c);
  if (st != ZTEE_OK) return last_error(st);
  for (const std::string* s : {&o.image_dir, &o.template_dir, &o.net_dns})
    if (auto e = no_nul(*s, fn, "a SandboxOptions string")) return e;
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

// What the output callbacks of one exec share with it.
struct StreamState {
  const ExecOptions* opts = nullptr;
  ztee_cancel* cancel = nullptr;
  std::exception_ptr error;  // the first exception a callback threw
  std::string message;       // which callback, and what it threw
};

// The C callbacks (the runtime's event-loop thread). Nothing unwinds out.
template <bool Stdout>
void on_output(void* user_data, const char* data, size_t len) noexcept {
  auto* s = static_cast<StreamState*>(user_data);
  if (s->error) return;  // the command is being cancelled: drop the rest
  const char* which = Stdout ? "ExecOptions::on_stdout" : "ExecOptions::on_stderr";
#if ZTEE_HPP_EXCEPTIONS
  try {
    (Stdout ? s->opts->on_stdout : s->opts->on_stderr)(std::string_view(data, len));
  } catch (...) {
    s->error = std::current_exception();
    try {
      try {
        throw;
      } catch (const std::exception& e) {
        s->message = std::string(which) + " threw: " + e.what() + "; the command was cancelled";
      } catch (...) {
        s->message = std::string(which) + " threw an exception not derived from std::exception; the command "
                                          "was cancelled";
      }
    } catch (...) {  // building the message ran out of memory
    }
    ztee_cancel_trigger(s->cancel);
  }
#else
  (void)which;
  (Stdout ? s->opts->on_stdout : s->opts->on_stderr)(std::string_view(data, len));
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

    detail::StreamState state;
    state.opts = &opts;
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
    ExecResult r;
    r.exit_code = res->exit_code;
    r.signal = res->signal;
    r.timed_out = res->timed_out != 0;
    r.truncated = res->truncated != 0;
    r.cancelled = res->cancelled != 0;
    r.duration_us = res->duration_us;
    r.stdout_data.assign(res->stdout_data, res->stdout_len);
    r.stderr_data.assign(res->stderr_data, res->stderr_len);
    return r;
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

}  // namespace capi_v0
}  // namespace ztee

#endif  // ZTEE_HPP
