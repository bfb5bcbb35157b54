// _ztee: the low-level Python module. It includes only the C ABI (ztee.h);
// the Pythonic API lives in ztee/__init__.py.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "ztee.h"

#include <cerrno>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace {

// Makes the exception to raise from (code, errno, message); ztee/__init__.py
// installs one that picks the public exception class.
py::object g_error_type;

// Reads the last error while still on the thread (and without the GIL
// released long enough for another call to overwrite it).
struct Failure {
  ztee_status code = ZTEE_OK;
  int sys_errno = 0;
  std::string message;
};

Failure capture(ztee_status st) {
  const ztee_error* e = ztee_last_error();
  return Failure{st, e->sys_errno, e->message ? e->message : ""};
}

[[noreturn]] void raise(const Failure& f) {
  // g_error_type is a factory: it returns the exception instance to raise.
  py::object exc = g_error_type(static_cast<int>(f.code), f.sys_errno, f.message);
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
  throw py::error_already_set();
}

std::optional<std::string> opt_str(const py::object& o) {
  if (o.is_none()) return std::nullopt;
  return py::str(o).cast<std::string>();
}

class Runtime {
 public:
  Runtime(py::object image_dir, py::object state_dir, py::object qemu_binary, py::object accel,
          py::object backend, bool jail, std::vector<std::string> trusted_keys, bool require_vuln_gate) {
    auto img = opt_str(image_dir), st = opt_str(state_dir), qemu = opt_str(qemu_binary),
         acc = opt_str(accel), be = opt_str(backend);
    ztee_runtime_options o = ZTEE_RUNTIME_OPTIONS_INIT;
    o.image_dir = img ? img->c_str() : nullptr;
    o.state_dir = st ? st->c_str() : nullptr;
    o.qemu_binary = qemu ? qemu->c_str() : nullptr;
    o.accel = acc ? acc->c_str() : nullptr;
    o.backend = be ? be->c_str() : nullptr;
    o.jail_disabled = jail ? 0 : 1;
    std::vector<const char*> keys;
    for (const auto& k : trusted_keys) keys.push_back(k.c_str());
    o.trusted_keys = keys.empty() ? nullptr : keys.data();
    o.trusted_key_count = keys.size();
    o.require_vuln_gate = require_vuln_gate ? 1 : 0;
    ztee_runtime* rt = nullptr;
    Failure f;
    {
      py::gil_scoped_release nogil;
      ztee_status s = ztee_runtime_create(&o, &rt);
      if (s != ZTEE_OK) f = capture(s);
    }
    if (f.code != ZTEE_OK) raise(f);
    rt_ = rt;
  }
  ~Runtime() { close(); }
  std::string backend() const { return rt_ ? ztee_runtime_backend(rt_) : ""; }
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  void close() {
    if (!rt_) return;
    ztee_runtime* rt = rt_;
    rt_ = nullptr;
    py::gil_scoped_release nogil;
    ztee_runtime_free(rt);
  }
  ztee_runtime* get() const {
    if (!rt_) {
      Failure f{ZTEE_E_CLOSED, 0, "the runtime was closed"};
      raise(f);
    }
    return rt_;
  }

 private:
  ztee_runtime* rt_ = nullptr;
};

// State shared with the streaming callbacks during one exec.
struct StreamCtx {
  py::object on_stdout, on_stderr;
  std::optional<py::error_already_set> error;  // the first exception a callback raised
  ztee_cancel* cancel = nullptr;               // triggered when a callback raises
};

void call_stream(StreamCtx* ctx, py::object& fn, const char* data, size_t len) {
  // Runs on the runtime's event-loop thread: take the GIL, and never let a
  // Python exception unwind into C.
  py::gil_scoped_acquire gil;
  if (ctx->error) return;
  try {
    fn(py::bytes(data, len));
  } catch (py::error_already_set& e) {
    ctx->error.emplace(std::move(e));
  } catch (const std::exception& e) {
    try {
      PyErr_SetString(PyExc_RuntimeError, e.what());
      ctx->error.emplace();
    } catch (...) {
    }
  } catch (...) {
  }
  // A callback that raised ends the command: its output has nowhere to go.
  if (ctx->error) ztee_cancel_trigger(ctx->cancel);
}

extern "C" void on_stdout_cb(void* ud, const char* data, size_t len) {
  auto* ctx = static_cast<StreamCtx*>(ud);
  call_stream(ctx, ctx->on_stdout, data, len);
}
extern "C" void on_stderr_cb(void* ud, const char* data, size_t len) {
  auto* ctx = static_cast<StreamCtx*>(ud);
  call_stream(ctx, ctx->on_stderr, data, len);
}

// Runs a blocking C call without the GIL; raises on failure.
template <typename F>
void call(F&& f) {
  Failure fail;
  {
    py::gil_scoped_release nogil;
    ztee_status s = f();
    if (s != ZTEE_OK) fail = capture(s);
  }
  if (fail.code != ZTEE_OK) raise(fail);
}

// ztee_sandbox_options with the strings it points to.
struct SandboxOpts {
  std::optional<std::string> image_dir, template_dir, dns;
  std::vector<std::string> allow;
  std::vector<const char*> allow_ptrs;
  ztee_sandbox_options o = ZTEE_SANDBOX_OPTIONS_INIT;

  SandboxOpts(py::object image, uint32_t vcpus, uint32_t memory_mib, uint32_t boot_timeout_ms,
              uint32_t exec_timeout_ms, uint64_t output_cap, py::object tpl, bool snapshottable,
              std::vector<std::string> allow_, py::object dns_, int32_t guest_aslr)
      : image_dir(opt_str(image)), template_dir(opt_str(tpl)), dns(opt_str(dns_)), allow(std::move(allow_)) {
    for (const auto& a : allow) allow_ptrs.push_back(a.c_str());
    o.net_allow = allow_ptrs.empty() ? nullptr : allow_ptrs.data();
    o.net_allow_count = allow_ptrs.size();
    o.net_dns = dns ? dns->c_str() : nullptr;
    o.image_dir = image_dir ? image_dir->c_str() : nullptr;
    o.vcpus = vcpus;
    o.memory_mib = memory_mib;
    o.boot_timeout_ms = boot_timeout_ms;
    o.exec_timeout_ms = exec_timeout_ms;
    o.output_cap = output_cap;
    o.template_dir = template_dir ? template_dir->c_str() : nullptr;
    o.snapshottable = snapshottable ? 1 : 0;
    o.guest_aslr = guest_aslr;
  }

  // Workspaces: (host_dir, guest_path) pairs and the diff log (Sandbox only).
  void set_workspaces(std::vector<std::pair<std::string, std::string>> m, py::object log) {
    mounts = std::move(m);
    diff_log = opt_str(log);
    mount_structs.clear();
    for (const auto& [host, guest] : mounts) mount_structs.push_back(ztee_mount{host.c_str(), guest.c_str()});
    o.mounts = mount_structs.empty() ? nullptr : mount_structs.data();
    o.mount_count = mount_structs.size();
    o.diff_log = diff_log ? diff_log->c_str() : nullptr;
  }
  std::vector<std::pair<std::string, std::string>> mounts;
  std::vector<ztee_mount> mount_structs;
  std::optional<std::string> diff_log;

  // Output DLP on the sandbox's execs and reads (Sandbox only).
  void set_dlp(bool on, std::vector<std::string> block) {
    dlp_block = std::move(block);
    dlp_block_ptrs.clear();
    for (const auto& b : dlp_block) dlp_block_ptrs.push_back(b.c_str());
    o.dlp = on ? 1 : 0;
    o.dlp_block = dlp_block_ptrs.empty() ? nullptr : dlp_block_ptrs.data();
    o.dlp_block_count = dlp_block_ptrs.size();
  }
  std::vector<std::string> dlp_block;
  std::vector<const char*> dlp_block_ptrs;
};

// ---- workspaces: changes and the reviewed export ----------------------------

// Everything that identifies a change's content; the strings hold no NUL.
std::string change_key(const ztee_change& c) {
  std::string k;
  for (const char* s : {c.path, c.mount, c.sha256, c.link_target}) {
    k += s ? s : "";
    k.push_back('\0');
  }
  k += std::to_string(c.kind) + "," + std::to_string(c.type) + "," + std::to_string(c.size) + "," +
       std::to_string(c.mode);
  return k;
}

// The export's approve callback (the calling thread, without the GIL): yes
// for exactly the changes the caller approved as reviewed, so one the guest
// changed after the review, or a new one, is declined.
extern "C" int approve_reviewed(const ztee_change* c, void* ud) {
  try {
    return static_cast<const std::set<std::string>*>(ud)->count(change_key(*c)) ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

py::dict change_dict(const ztee_change& c) {
  static const char* const kKinds[] = {"created", "modified", "deleted"};
  static const char* const kTypes[] = {"file", "dir", "symlink", "other"};
  auto text = [](const char* s) { return py::bytes(s ? s : "").attr("decode")("utf-8", "surrogateescape"); };
  py::dict d;
  d["kind"] = (c.kind >= 0 && c.kind <= 2) ? kKinds[c.kind] : "modified";
  d["type"] = (c.type >= 0 && c.type <= 3) ? kTypes[c.type] : "other";
  d["path"] = text(c.path);
  d["mount"] = text(c.mount);
  d["size"] = c.size;
  d["mode"] = c.mode;
  d["sha256"] = text(c.sha256);
  d["link_target"] = text(c.link_target);
  d["key"] = py::bytes(change_key(c));
  return d;
}

py::list change_list(const ztee_change_list& l) {
  py::list out;
  for (size_t i = 0; i < l.count; ++i) out.append(change_dict(l.entries[i]));
  return out;
}

// A cancel token (ztee_cancel): trigger() from any thread kills the execs
// that run with it.
class Cancel {
 public:
  Cancel() { call([&] { return ztee_cancel_create(&c_); }); }
  ~Cancel() { ztee_cancel_free(c_); }
  Cancel(const Cancel&) = delete;
  Cancel& operator=(const Cancel&) = delete;
  void trigger() { ztee_cancel_trigger(c_); }
  bool triggered() const { return ztee_cancel_triggered(c_) != 0; }
  // Sends `sig` to the execs running with the token now (never blocks).
  void signal(int sig) {
    ztee_status s = ztee_cancel_signal(c_, sig);
    if (s != ZTEE_OK) raise(capture(s));
  }
  ztee_cancel* get() const { return c_; }

 private:
  ztee_cancel* c_ = nullptr;
};

// Stdin streamed to one exec (ztee_input): write() never blocks; it returns
// false when the bound of bytes waiting on the host is reached (EAGAIN) and
// the caller retries (ztee/__init__.py's Input.write does).
class Input {
 public:
  Input() { call([&] { return ztee_input_create(&in_); }); }
  ~Input() { ztee_input_free(in_); }
  Input(const Input&) = delete;
  Input& operator=(const Input&) = delete;
  bool write(py::buffer data) {
    py::buffer_info b = data.request();
    if (b.ndim != 1 || b.itemsize != 1) throw py::type_error("Input.write takes bytes-like data");
    ztee_status s = ztee_input_write(in_, b.ptr, static_cast<size_t>(b.size));
    if (s == ZTEE_OK) return true;
    Failure f = capture(s);
    if (s == ZTEE_E_IO && f.sys_errno == EAGAIN) return false;
    raise(f);
  }
  void close() { ztee_input_close(in_); }
  size_t buffered() const { return ztee_input_buffered(in_); }
  ztee_input* get() const { return in_; }

 private:
  ztee_input* in_ = nullptr;
};

class Sandbox {
 public:
  Sandbox(Runtime& rt, py::object image_dir, uint32_t vcpus, uint32_t memory_mib,
          uint32_t boot_timeout_ms, uint32_t exec_timeout_ms, uint64_t output_cap,
          py::object template_dir, bool snapshottable, std::vector<std::string> allow, py::object dns,
          int32_t guest_aslr, std::vector<std::pair<std::string, std::string>> mounts, py::object diff_log,
          bool dlp, std::vector<std::string> dlp_block) {
    SandboxOpts so(image_dir, vcpus, memory_mib, boot_timeout_ms, exec_timeout_ms, output_cap,
                   template_dir, snapshottable, std::move(allow), dns, guest_aslr);
    so.set_workspaces(std::move(mounts), diff_log);
    so.set_dlp(dlp, std::move(dlp_block));
    ztee_runtime* r = rt.get();
    ztee_sandbox* sb = nullptr;
    call([&] { return ztee_sandbox_create(r, &so.o, &sb); });
    sb_ = sb;
  }
  // Takes ownership of a handle (a leased sandbox).
  explicit Sandbox(ztee_sandbox* sb) : sb_(sb) {}
  ~Sandbox() { close(); }
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  // Frees the handle (destroying the VM if still running).
  void close() {
    if (!sb_) return;
    ztee_sandbox* sb = sb_;
    sb_ = nullptr;
    py::gil_scoped_release nogil;
    ztee_sandbox_free(sb);
  }

  std::string id() const { return ztee_sandbox_id(get()); }

  void destroy() {
    ztee_sandbox* sb = get();
    call([&] { return ztee_sandbox_destroy(sb); });
  }

  void ping() {
    ztee_sandbox* sb = get();
    call([&] { return ztee_sandbox_ping(sb); });
  }

  void pause() {
    ztee_sandbox* sb = get();
    call([&] { return ztee_sandbox_pause(sb); });
  }

  void resume() {
    ztee_sandbox* sb = get();
    call([&] { return ztee_sandbox_resume(sb); });
  }

  void snapshot(const std::string& dir) {
    ztee_sandbox* sb = get();
    call([&] { return ztee_sandbox_snapshot(sb, dir.c_str()); });
  }

  // Returns a dict; ztee/__init__.py wraps it in a Result.
  py::dict exec(py::object argv, py::object shell, py::object env, py::object cwd,
                py::object stdin_data, uint32_t timeout_ms, uint64_t output_cap,
                py::object on_stdout, py::object on_stderr, py::object cancel, py::object user) {
    ztee_sandbox* sb = get();
    std::vector<std::string> args;
    std::vector<const char*> argp;
    std::optional<std::string> sh = opt_str(shell);
    if (!argv.is_none()) {
      for (auto a : argv) args.push_back(py::str(a).cast<std::string>());
      for (auto& a : args) argp.push_back(a.c_str());
    }
    std::vector<std::string> envs;
    std::vector<const char*> envp;
    if (!env.is_none()) {
      for (auto kv : env.cast<py::dict>())
        envs.push_back(py::str(kv.first).cast<std::string>() + "=" +
                       py::str(kv.second).cast<std::string>());
      for (auto& e : envs) envp.push_back(e.c_str());
    }
    std::optional<std::string> wd = opt_str(cwd);
    std::optional<std::string> who = opt_str(user);
    std::optional<std::string> in;
    ztee_input* streamed = nullptr;
    if (py::isinstance<Input>(stdin_data)) {
      streamed = stdin_data.cast<Input&>().get();
    } else if (!stdin_data.is_none()) {
      if (py::isinstance<py::str>(stdin_data))
        in = stdin_data.cast<std::string>();
      else
        in = std::string(py::bytes(stdin_data));
    }

    ztee_exec_options o = ZTEE_EXEC_OPTIONS_INIT;
    o.argv = argv.is_none() ? nullptr : argp.data();
    o.argc = argv.is_none() ? 0 : argp.size();
    if (!argv.is_none() && argp.empty()) o.argv = nullptr;  // the library reports it
    o.shell = sh ? sh->c_str() : nullptr;
    o.env = envp.empty() ? nullptr : envp.data();
    o.env_count = envp.size();
    o.cwd = wd ? wd->c_str() : nullptr;
    o.user = who ? who->c_str() : nullptr;
    o.stdin_data = in ? in->data() : nullptr;
    o.stdin_len = in ? in->size() : 0;
    o.input = streamed;
    o.timeout_ms = timeout_ms;
    o.output_cap = output_cap;
    StreamCtx ctx;
    ctx.on_stdout = on_stdout;
    ctx.on_stderr = on_stderr;
    if (!on_stdout.is_none()) o.on_stdout = on_stdout_cb;
    if (!on_stderr.is_none()) o.on_stderr = on_stderr_cb;
    o.user_data = &ctx;
    // The caller's token, or one of this call's own when a callback may
    // need to end the command.
    std::unique_ptr<Cancel> own;
    if (!cancel.is_none()) {
      ctx.cancel = cancel.cast<Cancel&>().get();
    } else if (!on_stdout.is_none() || !on_stderr.is_none()) {
      own = std::make_unique<Cancel>();
      ctx.cancel = own->get();
    }
    o.cancel = ctx.cancel;

    ztee_exec_result* res = nullptr;
    Failure f;
    {
      py::gil_scoped_release nogil;
      ztee_status s = ztee_sandbox_exec(sb, &o, &res);
      if (s != ZTEE_OK) f = capture(s);
    }
    std::unique_ptr<ztee_exec_result, void (*)(ztee_exec_result*)> owned(res, ztee_exec_result_free);
    if (ctx.error) {
      ctx.error->restore();
      throw py::error_already_set();
    }
    if (f.code != ZTEE_OK) raise(f);
    py::dict d;
    d["exit_code"] = res->exit_code;
    d["signal"] = res->signal;
    d["timed_out"] = res->timed_out != 0;
    d["truncated"] = res->truncated != 0;
    d["cancelled"] = res->cancelled != 0;
    d["duration_us"] = res->duration_us;
    d["dlp_findings"] = res->dlp_findings;
    d["injection_anomalies"] = res->injection_anomalies;
    d["stdout"] = py::bytes(res->stdout_data, res->stdout_len);
    d["stderr"] = py::bytes(res->stderr_data, res->stderr_len);
    return d;
  }

  void write_file(const std::string& path, py::bytes data, uint32_t mode) {
    ztee_sandbox* sb = get();
    std::string bytes = data;
    call([&] { return ztee_sandbox_write_file(sb, path.c_str(), bytes.data(), bytes.size(), mode); });
  }

  py::bytes read_file(const std::string& path, uint64_t max_bytes) {
    ztee_sandbox* sb = get();
    void* data = nullptr;
    size_t len = 0;
    call([&] { return ztee_sandbox_read_file(sb, path.c_str(), max_bytes, &data, &len); });
    std::unique_ptr<void, void (*)(void*)> owned(data, ztee_free);
    return py::bytes(static_cast<const char*>(data), len);
  }

  py::dict stat(const std::string& path) {
    ztee_sandbox* sb = get();
    ztee_file_info* fi = nullptr;
    call([&] { return ztee_sandbox_stat(sb, path.c_str(), &fi); });
    std::unique_ptr<ztee_file_info, void (*)(ztee_file_info*)> owned(fi, ztee_file_info_free);
    return info_dict(*fi);
  }

  py::list list_dir(const std::string& path) {
    ztee_sandbox* sb = get();
    ztee_dir_list* dl = nullptr;
    call([&] { return ztee_sandbox_list_dir(sb, path.c_str(), &dl); });
    std::unique_ptr<ztee_dir_list, void (*)(ztee_dir_list*)> owned(dl, ztee_dir_list_free);
    py::list out;
    for (size_t i = 0; i < dl->count; ++i) out.append(info_dict(dl->entries[i]));
    return out;
  }

  void remove(const std::string& path, bool recursive) {
    ztee_sandbox* sb = get();
    call([&] { return ztee_sandbox_remove(sb, path.c_str(), recursive ? 1 : 0); });
  }

  void mkdir(const std::string& path, bool parents, uint32_t mode) {
    ztee_sandbox* sb = get();
    call([&] { return ztee_sandbox_mkdir(sb, path.c_str(), parents ? 1 : 0, mode); });
  }

  py::list diff(py::object mount) {
    ztee_sandbox* sb = get();
    auto m = opt_str(mount);
    ztee_change_list* list = nullptr;
    call([&] { return ztee_sandbox_diff(sb, m ? m->c_str() : nullptr, &list); });
    std::unique_ptr<ztee_change_list, void (*)(ztee_change_list*)> owned(list, ztee_change_list_free);
    return change_list(*list);
  }

  // keys None: every selected change is exported (approve NULL). Else only
  // those whose key (from diff/export dicts) is listed; [] declines all,
  // which writes nothing and returns the selection in "declined".
  py::dict export_changes(py::object mount, std::vector<std::string> paths, py::object dest_dir, py::object keys) {
    ztee_sandbox* sb = get();
    auto m = opt_str(mount), dest = opt_str(dest_dir);
    std::vector<const char*> ps;
    for (const auto& p : paths) ps.push_back(p.c_str());
    std::set<std::string> approved;
    ztee_export_options o = ZTEE_EXPORT_OPTIONS_INIT;
    o.mount = m ? m->c_str() : nullptr;
    o.paths = ps.empty() ? nullptr : ps.data();
    o.path_count = ps.size();
    o.dest_dir = dest ? dest->c_str() : nullptr;
    if (!keys.is_none()) {
      for (auto k : keys) approved.insert(std::string(py::bytes(k.cast<py::object>())));
      o.approve = approve_reviewed;
      o.user_data = &approved;
    }
    ztee_export_result* res = nullptr;
    call([&] { return ztee_sandbox_export_changes(sb, &o, &res); });
    std::unique_ptr<ztee_export_result, void (*)(ztee_export_result*)> owned(res, ztee_export_result_free);
    py::dict d;
    d["applied"] = change_list(res->applied);
    d["declined"] = change_list(res->declined);
    d["skipped_deletions"] = change_list(res->skipped_deletions);
    return d;
  }

  py::bytes patch(py::object mount, std::vector<std::string> paths) {
    ztee_sandbox* sb = get();
    auto m = opt_str(mount);
    std::vector<const char*> ps;
    for (const auto& p : paths) ps.push_back(p.c_str());
    char* text = nullptr;
    call([&] { return ztee_sandbox_patch(sb, m ? m->c_str() : nullptr, ps.empty() ? nullptr : ps.data(), ps.size(), &text); });
    std::unique_ptr<void, void (*)(void*)> owned(text, ztee_free);
    return py::bytes(text ? text : "");
  }

 private:
  ztee_sandbox* get() const {
    if (!sb_) raise(Failure{ZTEE_E_CLOSED, 0, "the sandbox handle was closed"});
    return sb_;
  }

  static py::dict info_dict(const ztee_file_info& fi) {
    static const char* const kTypes[] = {"file", "dir", "symlink", "other"};
    py::dict d;
    d["name"] = py::bytes(fi.name ? fi.name : "").attr("decode")("utf-8", "surrogateescape");
    d["type"] = (fi.type >= 0 && fi.type <= 3) ? kTypes[fi.type] : "other";
    d["mode"] = fi.mode;
    d["size"] = fi.size;
    d["mtime_ns"] = fi.mtime_ns;
    return d;
  }

  ztee_sandbox* sb_ = nullptr;
};

class Pool {
 public:
  Pool(Runtime& rt, py::object template_dir, bool cold_boot, uint32_t min_ready,
       uint32_t max_total, uint32_t refill_concurrency, uint32_t lease_timeout_ms,
       py::object image_dir, uint32_t vcpus, uint32_t memory_mib, uint32_t boot_timeout_ms,
       uint32_t exec_timeout_ms, uint64_t output_cap, std::vector<std::string> allow, py::object dns,
       int32_t guest_aslr, py::object warm_up) {
    SandboxOpts so(image_dir, vcpus, memory_mib, boot_timeout_ms, exec_timeout_ms, output_cap,
                   py::none(), false, std::move(allow), dns, guest_aslr);
    auto tpl = opt_str(template_dir);
    auto warm = opt_str(warm_up);
    ztee_pool_options o = ZTEE_POOL_OPTIONS_INIT;
    o.warm_up = warm ? warm->c_str() : nullptr;
    o.sandbox = &so.o;
    o.template_dir = tpl ? tpl->c_str() : nullptr;
    o.cold_boot = cold_boot ? 1 : 0;
    o.min_ready = min_ready;
    o.max_total = max_total;
    o.refill_concurrency = refill_concurrency;
    o.lease_timeout_ms = lease_timeout_ms;
    ztee_runtime* r = rt.get();
    ztee_pool* pool = nullptr;
    call([&] { return ztee_pool_create(r, &o, &pool); });
    pool_ = pool;
  }
  ~Pool() { free(); }
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  std::unique_ptr<Sandbox> lease(uint32_t deadline_ms) {
    ztee_pool* pool = get();
    ztee_sandbox* sb = nullptr;
    call([&] { return ztee_pool_lease(pool, deadline_ms, &sb); });
    return std::make_unique<Sandbox>(sb);
  }

  py::dict stats() {
    ztee_pool* pool = get();
    ztee_pool_stats st = ZTEE_POOL_STATS_INIT;
    char* msg = nullptr;
    call([&] {
      ztee_status s = ztee_pool_stats_get(pool, &st);
      return s != ZTEE_OK ? s : ztee_pool_last_error(pool, &msg);
    });
    std::unique_ptr<char, void (*)(void*)> owned(msg, ztee_free);
    py::dict d;
    d["ready"] = st.ready;
    d["starting"] = st.starting;
    d["leased"] = st.leased;
    d["created"] = st.created;
    d["failed"] = st.failed;
    d["leases"] = st.leases;
    d["lease_timeouts"] = st.lease_timeouts;
    d["consecutive_failures"] = st.consecutive_failures;
    d["backing_off"] = st.backing_off != 0;
    d["last_error"] = py::bytes(msg ? msg : "").attr("decode")("utf-8", "replace");
    py::list hist;
    for (uint64_t v : st.lease_wait_hist) hist.append(v);
    d["lease_wait_hist"] = hist;
    return d;
  }

  ztee_pool* handle() const { return get(); }

  // Stops refilling and destroys the ready sandboxes; the handle stays for stats().
  void close() {
    ztee_pool* pool = pool_;
    if (!pool) return;
    py::gil_scoped_release nogil;
    ztee_pool_close(pool);
  }

  void free() {
    if (!pool_) return;
    ztee_pool* pool = pool_;
    pool_ = nullptr;
    py::gil_scoped_release nogil;
    ztee_pool_free(pool);
  }

 private:
  ztee_pool* get() const {
    if (!pool_) raise(Failure{ZTEE_E_CLOSED, 0, "the pool handle was freed"});
    return pool_;
  }
  ztee_pool* pool_ = nullptr;
};

// ---- control plane ----------------------------------------------------------------

// The Python exception a gate callback (approver, secret resolver) raised
// during a call on this thread; gate.call re-raises it.
struct GateCallCtx {
  std::optional<py::error_already_set> error;
};
thread_local GateCallCtx* t_gate_call = nullptr;

std::vector<const char*> c_strs(const std::vector<std::string>& v) {
  std::vector<const char*> out;
  for (const auto& s : v) out.push_back(s.c_str());
  return out;
}

std::vector<std::string> str_list(const py::object& o, const char* what) {
  std::vector<std::string> out;
  if (o.is_none()) return out;
  if (py::isinstance<py::str>(o) || py::isinstance<py::bytes>(o))
    throw py::type_error(std::string(what) + " must be a list of strings, not a single string");
  for (auto item : o) out.push_back(py::str(item).cast<std::string>());
  return out;
}

std::string bytes_or_str(const py::handle& o) {
  if (py::isinstance<py::bytes>(o)) return std::string(py::reinterpret_borrow<py::bytes>(o));
  if (py::isinstance<py::bytearray>(o)) return std::string(py::bytes(py::reinterpret_borrow<py::object>(o)));
  return py::str(o).cast<std::string>();
}

// A ztee_tool_call with the strings it points to.
struct ToolCallBuf {
  std::string tool;
  std::optional<std::string> command, cwd, user, stdin_data, trace;
  std::vector<std::string> argv, env, paths, contents, writes, network, labels;
  std::vector<const char*> argv_p, env_p, paths_p, contents_p, writes_p, network_p, labels_p;
  std::vector<size_t> lengths;
  ztee_tool_call c = ZTEE_TOOL_CALL_INIT;

  ToolCallBuf(const std::string& tool_, py::object command_, py::object argv_, py::object env_, py::object files,
              py::object cwd_, py::object user_, py::object stdin_, py::object writes_, py::object network_,
              py::object labels_, py::object trace_)
      : tool(tool_), command(opt_str(command_)), cwd(opt_str(cwd_)), user(opt_str(user_)), trace(opt_str(trace_)) {
    argv = str_list(argv_, "argv");
    writes = str_list(writes_, "writes");
    network = str_list(network_, "network");
    labels = str_list(labels_, "labels");
    if (!env_.is_none())
      for (auto kv : env_.cast<py::dict>())
        env.push_back(py::str(kv.first).cast<std::string>() + "=" + py::str(kv.second).cast<std::string>());
    if (!files.is_none())
      for (auto kv : files.cast<py::dict>()) {
        paths.push_back(py::str(kv.first).cast<std::string>());
        contents.push_back(bytes_or_str(kv.second));
      }
    if (!stdin_.is_none()) stdin_data = bytes_or_str(stdin_);
    argv_p = c_strs(argv), env_p = c_strs(env), paths_p = c_strs(paths), writes_p = c_strs(writes);
    network_p = c_strs(network), labels_p = c_strs(labels);
    for (const auto& x : contents) contents_p.push_back(x.data()), lengths.push_back(x.size());
    c.tool = tool.c_str();
    c.command = command ? command->c_str() : nullptr;
    if (!argv_.is_none()) {
      c.argv = argv_p.empty() ? nullptr : argv_p.data();
      c.argc = argv_p.size();
    }
    c.env = env_p.empty() ? nullptr : env_p.data();
    c.env_count = env_p.size();
    c.file_paths = paths_p.empty() ? nullptr : paths_p.data();
    c.file_contents = contents_p.empty() ? nullptr : contents_p.data();
    c.file_lengths = lengths.empty() ? nullptr : lengths.data();
    c.file_count = paths_p.size();
    c.cwd = cwd ? cwd->c_str() : nullptr;
    c.user = user ? user->c_str() : nullptr;
    c.stdin_data = stdin_data ? stdin_data->data() : nullptr;
    c.stdin_len = stdin_data ? stdin_data->size() : 0;
    c.writes = writes_p.empty() ? nullptr : writes_p.data();
    c.writes_count = writes_p.size();
    c.network = network_p.empty() ? nullptr : network_p.data();
    c.network_count = network_p.size();
    c.labels = labels_p.empty() ? nullptr : labels_p.data();
    c.labels_count = labels_p.size();
    c.trace_id = trace ? trace->c_str() : nullptr;
  }
};

const char* action_name(int32_t a) {
  switch (a) {
    case ZTEE_ACTION_RUN: return "run";
    case ZTEE_ACTION_AUDIT: return "audit";
    case ZTEE_ACTION_APPROVE: return "approve";
    default: return "deny";
  }
}

py::str text(const char* s) { return py::bytes(s ? s : "").attr("decode")("utf-8", "replace"); }

class Policy {
 public:
  explicit Policy(ztee_policy* p) : p_(p) {}
  ~Policy() { ztee_policy_free(p_); }
  Policy(const Policy&) = delete;
  Policy& operator=(const Policy&) = delete;

  static std::unique_ptr<Policy> parse(const std::string& json) {
    ztee_policy* p = nullptr;
    call([&] { return ztee_policy_parse(json.data(), json.size(), &p); });
    return std::make_unique<Policy>(p);
  }
  static std::unique_ptr<Policy> load(const std::string& path) {
    ztee_policy* p = nullptr;
    call([&] { return ztee_policy_load(path.c_str(), &p); });
    return std::make_unique<Policy>(p);
  }
  static std::unique_ptr<Policy> dflt() {
    ztee_policy* p = nullptr;
    call([&] { return ztee_policy_default(&p); });
    return std::make_unique<Policy>(p);
  }

  py::dict classify(const std::string& tool, py::object command, py::object argv, py::object env, py::object files,
                    py::object writes, py::object network, py::object labels) {
    ToolCallBuf b(tool, command, argv, env, files, py::none(), py::none(), py::none(), writes, network, labels,
                  py::none());
    ztee_decision* d = nullptr;
    call([&] { return ztee_policy_classify(p_, &b.c, &d); });
    std::unique_ptr<ztee_decision, void (*)(ztee_decision*)> owned(d, ztee_decision_free);
    py::dict out;
    out["tier"] = d->tier;
    out["action"] = action_name(d->action);
    out["rule_index"] = d->rule_index;
    out["rule"] = text(d->rule);
    out["reason"] = text(d->reason);
    return out;
  }
  ztee_policy* get() const { return p_; }

 private:
  ztee_policy* p_ = nullptr;
};

class AuditLog {
 public:
  AuditLog(const std::string& path, int32_t durability, uint32_t batch_ms, py::object hmac_key, uint64_t rotate_bytes) {
    std::optional<std::string> key;
    if (!hmac_key.is_none()) key = bytes_or_str(hmac_key);
    ztee_audit_options o = ZTEE_AUDIT_OPTIONS_INIT;
    o.path = path.c_str();
    o.durability = durability;
    o.batch_ms = batch_ms;
    o.hmac_key = key ? key->data() : nullptr;
    o.hmac_key_len = key ? key->size() : 0;
    o.rotate_bytes = rotate_bytes;
    ztee_audit_log* log = nullptr;
    call([&] { return ztee_audit_open(&o, &log); });
    log_ = log;
  }
  ~AuditLog() { close(); }
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  uint64_t append(const std::string& event, const std::string& trace, const std::string& fields) {
    ztee_audit_log* log = get();
    uint64_t seq = 0;
    call([&] { return ztee_audit_append(log, event.c_str(), trace.c_str(), fields.c_str(), &seq); });
    return seq;
  }
  void flush() {
    ztee_audit_log* log = get();
    call([&] { return ztee_audit_flush(log); });
  }
  void close() {
    if (!log_) return;
    ztee_audit_log* log = log_;
    log_ = nullptr;
    py::gil_scoped_release nogil;
    ztee_audit_free(log);
  }
  ztee_audit_log* get() const {
    if (!log_) raise(Failure{ZTEE_E_CLOSED, 0, "the audit log was closed"});
    return log_;
  }

 private:
  ztee_audit_log* log_ = nullptr;
};

py::dict verify_audit_log(std::vector<std::string> files, py::object key) {
  std::optional<std::string> k;
  if (!key.is_none()) k = bytes_or_str(key);
  auto ptrs = c_strs(files);
  ztee_audit_report* rep = nullptr;
  call([&] {
    return ztee_audit_verify(ptrs.data(), ptrs.size(), k ? k->data() : nullptr, k ? k->size() : 0, &rep);
  });
  std::unique_ptr<ztee_audit_report, void (*)(ztee_audit_report*)> owned(rep, ztee_audit_report_free);
  py::dict d;
  d["ok"] = rep->ok != 0;
  d["records"] = rep->records;
  d["problem"] = text(rep->problem);
  return d;
}

// What the gate's C callbacks reach (owned by the Gate, stable address).
struct GateCallbacks {
  py::object approver;  // (token, description_json, deadline_ms) -> None | True | False | str
  py::object secrets;   // (name) -> str | bytes | None
};

std::string exception_text(py::error_already_set& e) {
  try {
    std::string type = py::str(e.type().attr("__name__"));
    std::string msg = py::str(e.value());
    return msg.empty() ? type : type + ": " + msg;
  } catch (...) {
    return "an exception";
  }
}

extern "C" void gate_approver_cb(void* ud, ztee_gate* gate, const char* token, const char* description,
                                 uint32_t deadline_ms) {
  auto* cbs = static_cast<GateCallbacks*>(ud);
  std::string deny_reason;
  int approve = 0;  // 1 approve, -1 deny
  std::string who = "approver";
  {
    py::gil_scoped_acquire gil;
    try {
      py::object answer = cbs->approver(std::string(token), text(description), deadline_ms);
      if (py::isinstance<py::bool_>(answer)) {
        approve = answer.cast<bool>() ? 1 : -1;
        deny_reason = "the approver said no";
      } else if (py::isinstance<py::str>(answer)) {
        approve = 1;
        who = answer.cast<std::string>();
      }
    } catch (py::error_already_set& e) {
      approve = -1;
      deny_reason = "the approver raised " + exception_text(e);
      who = "gate";
    } catch (const std::exception& e) {
      approve = -1;
      deny_reason = std::string("the approver failed: ") + e.what();
      who = "gate";
    } catch (...) {
      approve = -1;
      deny_reason = "the approver failed";
      who = "gate";
    }
  }
  // Answered after the callback returned (e.g. already from inside it) is
  // not an error here.
  if (approve > 0) (void)ztee_gate_approve(gate, token, who.c_str());
  if (approve < 0) (void)ztee_gate_deny(gate, token, deny_reason.c_str(), who.c_str());
}

extern "C" ztee_status gate_secret_cb(void* ud, const char* name, ztee_secret_value* out) {
  auto* cbs = static_cast<GateCallbacks*>(ud);
  py::gil_scoped_acquire gil;
  try {
    py::object v = cbs->secrets(std::string(name));
    if (v.is_none()) return ZTEE_E_NOT_FOUND;
    std::string value = bytes_or_str(v);
    if (value.empty()) return ZTEE_E_NOT_FOUND;
    return ztee_secret_value_set(out, value.data(), value.size());
  } catch (py::error_already_set& e) {
    if (t_gate_call && !t_gate_call->error) t_gate_call->error.emplace(std::move(e));
  } catch (...) {
  }
  return ZTEE_E_INTERNAL;
}

class Gate {
 public:
  Gate(Runtime& rt, py::object policy, py::object audit, py::object approver, py::object secrets,
       py::object secrets_dir, py::object secrets_env_prefix, py::object pool, bool dlp,
       std::vector<std::string> dlp_block, py::object image_dir, uint32_t vcpus,
       uint32_t memory_mib, uint32_t boot_timeout_ms, uint32_t exec_timeout_ms, uint64_t output_cap,
       std::vector<std::string> allow, py::object dns, int32_t guest_aslr);
  ~Gate() { close(); }
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;

  py::dict call_tool(const std::string& tool, py::object command, py::object argv, py::object env, py::object files,
                     py::object cwd, py::object user, py::object stdin_, py::object writes, py::object network,
                     py::object labels, py::object trace, py::object on_stdout, py::object on_stderr,
                     py::object cancel);

  void approve(const std::string& token, const std::string& who) {
    ztee_gate* g = get();
    call([&] { return ztee_gate_approve(g, token.c_str(), who.c_str()); });
  }
  void deny(const std::string& token, const std::string& reason, const std::string& who) {
    ztee_gate* g = get();
    call([&] { return ztee_gate_deny(g, token.c_str(), reason.c_str(), who.c_str()); });
  }
  void close() {
    if (!g_) return;
    ztee_gate* g = g_;
    g_ = nullptr;
    {
      py::gil_scoped_release nogil;
      ztee_gate_free(g);
    }
  }

 private:
  ztee_gate* get() const {
    if (!g_) raise(Failure{ZTEE_E_CLOSED, 0, "the gate was closed"});
    return g_;
  }
  std::unique_ptr<GateCallbacks> cbs_ = std::make_unique<GateCallbacks>();
  ztee_gate* g_ = nullptr;
};

Gate::Gate(Runtime& rt, py::object policy, py::object audit, py::object approver, py::object secrets,
           py::object secrets_dir, py::object secrets_env_prefix, py::object pool, bool dlp,
           std::vector<std::string> dlp_block, py::object image_dir, uint32_t vcpus,
           uint32_t memory_mib, uint32_t boot_timeout_ms, uint32_t exec_timeout_ms, uint64_t output_cap,
           std::vector<std::string> allow, py::object dns, int32_t guest_aslr) {
  SandboxOpts so(image_dir, vcpus, memory_mib, boot_timeout_ms, exec_timeout_ms, output_cap, py::none(), false,
                 std::move(allow), dns, guest_aslr);
  auto dir = opt_str(secrets_dir), prefix = opt_str(secrets_env_prefix);
  ztee_gate_options o = ZTEE_GATE_OPTIONS_INIT;
  o.policy = policy.is_none() ? nullptr : policy.cast<Policy&>().get();
  o.audit = audit.is_none() ? nullptr : audit.cast<AuditLog&>().get();
  o.pool = pool.is_none() ? nullptr : pool.cast<Pool&>().handle();
  cbs_->approver = approver;
  cbs_->secrets = secrets;
  if (!approver.is_none()) {
    o.approver = gate_approver_cb;
    o.approver_data = cbs_.get();
  }
  if (!secrets.is_none()) {
    o.resolver = gate_secret_cb;
    o.resolver_data = cbs_.get();
  }
  o.secrets_dir = dir ? dir->c_str() : nullptr;
  o.secrets_env_prefix = prefix ? prefix->c_str() : nullptr;
  o.sandbox = &so.o;
  std::vector<const char*> block;
  for (const auto& b : dlp_block) block.push_back(b.c_str());
  o.dlp = dlp ? 1 : 0;
  o.dlp_block = block.empty() ? nullptr : block.data();
  o.dlp_block_count = block.size();
  ztee_runtime* r = rt.get();
  ztee_gate* g = nullptr;
  call([&] { return ztee_gate_create(r, &o, &g); });
  g_ = g;
}

py::dict Gate::call_tool(const std::string& tool, py::object command, py::object argv, py::object env,
                         py::object files, py::object cwd, py::object user, py::object stdin_, py::object writes,
                         py::object network, py::object labels, py::object trace, py::object on_stdout,
                         py::object on_stderr, py::object cancel) {
  ztee_gate* g = get();
  ToolCallBuf b(tool, command, argv, env, files, cwd, user, stdin_, writes, network, labels, trace);
  StreamCtx ctx;
  ctx.on_stdout = on_stdout;
  ctx.on_stderr = on_stderr;
  if (!on_stdout.is_none()) b.c.on_stdout = on_stdout_cb;
  if (!on_stderr.is_none()) b.c.on_stderr = on_stderr_cb;
  b.c.user_data = &ctx;
  std::unique_ptr<Cancel> own;
  if (!cancel.is_none()) {
    ctx.cancel = cancel.cast<Cancel&>().get();
  } else if (!on_stdout.is_none() || !on_stderr.is_none()) {
    own = std::make_unique<Cancel>();
    ctx.cancel = own->get();
  }
  b.c.cancel = ctx.cancel;

  GateCallCtx gctx;
  ztee_call_result* res = nullptr;
  Failure f;
  {
    py::gil_scoped_release nogil;
    GateCallCtx* saved = t_gate_call;
    t_gate_call = &gctx;
    ztee_status s = ztee_gate_call(g, &b.c, &res);
    if (s != ZTEE_OK) f = capture(s);
    t_gate_call = saved;
  }
  std::unique_ptr<ztee_call_result, void (*)(ztee_call_result*)> owned(res, ztee_call_result_free);
  if (gctx.error) {
    gctx.error->restore();
    throw py::error_already_set();
  }
  if (ctx.error) {
    ctx.error->restore();
    throw py::error_already_set();
  }
  if (f.code != ZTEE_OK) raise(f);
  py::dict d;
  d["ran"] = res->ran != 0;
  d["tier"] = res->tier;
  d["action"] = action_name(res->action);
  d["rule_index"] = res->rule_index;
  d["rule"] = text(res->rule);
  d["reason"] = text(res->reason);
  d["denial"] = text(res->denial);
  d["approved_by"] = text(res->approved_by);
  d["sandbox_id"] = text(res->sandbox_id);
  d["blocked"] = res->blocked != 0;
  d["dlp_findings"] = res->dlp_findings;
  d["injection_anomalies"] = res->injection_anomalies;
  if (res->exec) {
    const ztee_exec_result* e = res->exec;
    py::dict x;
    x["exit_code"] = e->exit_code;
    x["signal"] = e->signal;
    x["timed_out"] = e->timed_out != 0;
    x["truncated"] = e->truncated != 0;
    x["cancelled"] = e->cancelled != 0;
    x["duration_us"] = e->duration_us;
    x["stdout"] = py::bytes(e->stdout_data, e->stdout_len);
    x["stderr"] = py::bytes(e->stderr_data, e->stderr_len);
    d["exec"] = x;
  } else {
    d["exec"] = py::none();
  }
  return d;
}

}  // namespace

PYBIND11_MODULE(_ztee, m) {
  m.doc() = "libztee's C ABI for Python (use the `ztee` package instead).";

  g_error_type = py::reinterpret_borrow<py::object>(PyExc_RuntimeError);
  // The exception classes are defined in Python; __init__.py installs their
  // factory through set_error_factory().
  m.def("set_error_factory", [](py::object t) { g_error_type = t; });
  m.def("version", [] { return std::string(ztee_version()); });
  m.def("has_feature", [](const std::string& f) { return ztee_has_feature(f.c_str()) != 0; });
  m.def("status_name", [](int st) { return std::string(ztee_status_name(st)); });

  py::class_<Cancel>(m, "Cancel")
      .def(py::init<>())
      .def("trigger", &Cancel::trigger)
      .def("signal", &Cancel::signal, py::arg("sig"))
      .def_property_readonly("triggered", &Cancel::triggered);

  py::class_<Input>(m, "Input")
      .def(py::init<>())
      .def("write", &Input::write, py::arg("data"))
      .def("close", &Input::close)
      .def_property_readonly("buffered", &Input::buffered);
  m.attr("INPUT_MAX_BUFFERED") = py::int_(static_cast<size_t>(ZTEE_INPUT_MAX_BUFFERED));

  py::class_<Runtime>(m, "Runtime")
      .def(py::init<py::object, py::object, py::object, py::object, py::object, bool, std::vector<std::string>,
                    bool>(),
           py::arg("image_dir") = py::none(), py::arg("state_dir") = py::none(),
           py::arg("qemu_binary") = py::none(), py::arg("accel") = py::none(),
           py::arg("backend") = py::none(), py::arg("jail") = true,
           py::arg("trusted_keys") = std::vector<std::string>{}, py::arg("require_vuln_gate") = false)
      .def_property_readonly("backend", &Runtime::backend)
      .def("close", &Runtime::close);

  py::class_<Sandbox>(m, "Sandbox")
      .def(py::init<Runtime&, py::object, uint32_t, uint32_t, uint32_t, uint32_t, uint64_t,
                    py::object, bool, std::vector<std::string>, py::object, int32_t,
                    std::vector<std::pair<std::string, std::string>>, py::object, bool, std::vector<std::string>>(),
           py::arg("runtime"), py::arg("image_dir") = py::none(), py::arg("vcpus") = 0,
           py::arg("memory_mib") = 0, py::arg("boot_timeout_ms") = 0,
           py::arg("exec_timeout_ms") = 0, py::arg("output_cap") = 0,
           py::arg("template_dir") = py::none(), py::arg("snapshottable") = false,
           py::arg("allow") = std::vector<std::string>{}, py::arg("dns") = py::none(),
           py::arg("guest_aslr") = 0, py::arg("mounts") = std::vector<std::pair<std::string, std::string>>{},
           py::arg("diff_log") = py::none(), py::arg("dlp") = false,
           py::arg("dlp_block") = std::vector<std::string>{}, py::keep_alive<1, 2>())
      .def_property_readonly("id", &Sandbox::id)
      .def("close", &Sandbox::close)
      .def("destroy", &Sandbox::destroy)
      .def("ping", &Sandbox::ping)
      .def("pause", &Sandbox::pause)
      .def("resume", &Sandbox::resume)
      .def("snapshot", &Sandbox::snapshot, py::arg("dir"))
      .def("exec", &Sandbox::exec, py::arg("argv") = py::none(), py::arg("shell") = py::none(),
           py::arg("env") = py::none(), py::arg("cwd") = py::none(), py::arg("stdin") = py::none(),
           py::arg("timeout_ms") = 0, py::arg("output_cap") = 0, py::arg("on_stdout") = py::none(),
           py::arg("on_stderr") = py::none(), py::arg("cancel") = py::none(),
           py::arg("user") = py::none())
      .def("write_file", &Sandbox::write_file, py::arg("path"), py::arg("data"), py::arg("mode") = 0)
      .def("read_file", &Sandbox::read_file, py::arg("path"), py::arg("max_bytes") = 0)
      .def("stat", &Sandbox::stat, py::arg("path"))
      .def("list_dir", &Sandbox::list_dir, py::arg("path"))
      .def("remove", &Sandbox::remove, py::arg("path"), py::arg("recursive") = false)
      .def("mkdir", &Sandbox::mkdir, py::arg("path"), py::arg("parents") = false,
           py::arg("mode") = 0)
      .def("diff", &Sandbox::diff, py::arg("mount") = py::none())
      .def("export_changes", &Sandbox::export_changes, py::arg("mount") = py::none(),
           py::arg("paths") = std::vector<std::string>{}, py::arg("dest_dir") = py::none(),
           py::arg("keys") = py::none())
      .def("patch", &Sandbox::patch, py::arg("mount") = py::none(), py::arg("paths") = std::vector<std::string>{});

  // A leased Sandbox needs no keep_alive: the C handle keeps its runtime alive.
  py::class_<Pool>(m, "Pool")
      .def(py::init<Runtime&, py::object, bool, uint32_t, uint32_t, uint32_t, uint32_t, py::object,
                    uint32_t, uint32_t, uint32_t, uint32_t, uint64_t, std::vector<std::string>,
                    py::object, int32_t, py::object>(),
           py::arg("runtime"), py::arg("template_dir") = py::none(), py::arg("cold_boot") = false,
           py::arg("min_ready") = 0, py::arg("max_total") = 0, py::arg("refill_concurrency") = 0,
           py::arg("lease_timeout_ms") = 0, py::arg("image_dir") = py::none(),
           py::arg("vcpus") = 0, py::arg("memory_mib") = 0, py::arg("boot_timeout_ms") = 0,
           py::arg("exec_timeout_ms") = 0, py::arg("output_cap") = 0,
           py::arg("allow") = std::vector<std::string>{}, py::arg("dns") = py::none(),
           py::arg("guest_aslr") = 0, py::arg("warm_up") = py::none(), py::keep_alive<1, 2>())
      .def("lease", &Pool::lease, py::arg("deadline_ms") = 0)
      .def("stats", &Pool::stats)
      .def("close", &Pool::close)
      .def("free", &Pool::free);

  py::class_<Policy>(m, "Policy")
      .def_static("parse", &Policy::parse, py::arg("json"))
      .def_static("load", &Policy::load, py::arg("path"))
      .def_static("default", &Policy::dflt)
      .def_static("default_json", [] { return std::string(ztee_policy_default_json()); })
      .def("classify", &Policy::classify, py::arg("tool"), py::arg("command") = py::none(),
           py::arg("argv") = py::none(), py::arg("env") = py::none(), py::arg("files") = py::none(),
           py::arg("writes") = py::none(), py::arg("network") = py::none(), py::arg("labels") = py::none());

  py::class_<AuditLog>(m, "AuditLog")
      .def(py::init<const std::string&, int32_t, uint32_t, py::object, uint64_t>(), py::arg("path"),
           py::arg("durability") = ZTEE_DURABILITY_FSYNC, py::arg("batch_ms") = 0, py::arg("hmac_key") = py::none(),
           py::arg("rotate_bytes") = 0)
      .def("append", &AuditLog::append, py::arg("event"), py::arg("trace_id") = "", py::arg("fields") = "")
      .def("flush", &AuditLog::flush)
      .def("close", &AuditLog::close);

  m.def("verify_audit_log", &verify_audit_log, py::arg("files"), py::arg("key") = py::none());

  // The gate's C handle keeps its runtime, policy, audit log and pool alive.
  py::class_<Gate>(m, "Gate")
      .def(py::init<Runtime&, py::object, py::object, py::object, py::object, py::object, py::object, py::object,
                    bool, std::vector<std::string>, py::object, uint32_t, uint32_t, uint32_t, uint32_t, uint64_t,
                    std::vector<std::string>, py::object, int32_t>(),
           py::arg("runtime"), py::arg("policy") = py::none(), py::arg("audit") = py::none(),
           py::arg("approver") = py::none(), py::arg("secrets") = py::none(), py::arg("secrets_dir") = py::none(),
           py::arg("secrets_env_prefix") = py::none(), py::arg("pool") = py::none(), py::arg("dlp") = false,
           py::arg("dlp_block") = std::vector<std::string>{},
           py::arg("image_dir") = py::none(), py::arg("vcpus") = 0, py::arg("memory_mib") = 0,
           py::arg("boot_timeout_ms") = 0, py::arg("exec_timeout_ms") = 0, py::arg("output_cap") = 0,
           py::arg("allow") = std::vector<std::string>{}, py::arg("dns") = py::none(), py::arg("guest_aslr") = 0)
      .def("call", &Gate::call_tool, py::arg("tool"), py::arg("command") = py::none(), py::arg("argv") = py::none(),
           py::arg("env") = py::none(), py::arg("files") = py::none(), py::arg("cwd") = py::none(),
           py::arg("user") = py::none(), py::arg("stdin") = py::none(), py::arg("writes") = py::none(),
           py::arg("network") = py::none(), py::arg("labels") = py::none(), py::arg("trace_id") = py::none(),
           py::arg("on_stdout") = py::none(), py::arg("on_stderr") = py::none(), py::arg("cancel") = py::none())
      .def("approve", &Gate::approve, py::arg("token"), py::arg("who") = "approver")
      .def("deny", &Gate::deny, py::arg("token"), py::arg("reason") = "", py::arg("who") = "approver")
      .def("close", &Gate::close);

  // Drop the error type before the interpreter tears down.
  py::module_::import("atexit").attr("register")(py::cpp_function([] { g_error_type = py::object(); }));
}
