// ztee.node: libztee for Node.js. Includes only the C ABI (ztee.h).
//
// Every call that can block (boot, exec, files, ping, destroy, lease, close,
// free) runs on a thread of this addon's own pool, never on the JS thread
// nor in libuv's small thread pool (a long exec would starve fs and dns).
// Results and streamed output reach the JS thread through one thread-safe
// function per environment. Its queue is FIFO: an exec's completion is
// queued after every chunk of its output, so a run's promise settles only
// after all of its output callbacks ran.
//
// Handles: a sandbox handle is freed once no call uses it and it was
// destroyed or its wrapper collected (the free destroys the VM, off the JS
// thread). An env cleanup hook destroys whatever is left at exit.
#include <napi.h>

#include <ztee.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

// ---- failures ---------------------------------------------------------------

struct Failure {
  ztee_status code = ZTEE_OK;
  int sys_errno = 0;
  std::string message;
};

// Reads the calling thread's last error: call right after the failing call.
Failure capture(ztee_status s) {
  const ztee_error* e = ztee_last_error();
  Failure f;
  f.code = s;
  f.sys_errno = e->sys_errno;
  f.message = e->code == s ? e->message : std::string(ztee_status_name(s));
  return f;
}

Failure closed_failure() {
  return Failure{ZTEE_E_CLOSED, 0, "the sandbox was destroyed; create a new one"};
}

// ---- handles shared between wrappers, jobs and the cleanup hook -------------

// A handle in use by calls on worker threads. Calls enter() and leave();
// release() marks it for freeing, which happens once no call is inside.
template <typename H, void (*Free)(H*)>
struct Handle {
  using Raw = H;
  std::mutex mu;
  H* h = nullptr;
  int inflight = 0;
  bool released = false;

  explicit Handle(H* handle) : h(handle) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  H* enter() {
    std::lock_guard<std::mutex> l(mu);
    if (h == nullptr || released) return nullptr;
    ++inflight;
    return h;
  }
  // Returns the handle to free when this was the last call after release().
  H* leave() {
    std::lock_guard<std::mutex> l(mu);
    --inflight;
    return take_locked();
  }
  H* release() {
    std::lock_guard<std::mutex> l(mu);
    released = true;
    return take_locked();
  }
  bool usable() {
    std::lock_guard<std::mutex> l(mu);
    return h != nullptr && !released;
  }
  static void free_handle(H* p) { Free(p); }

 private:
  H* take_locked() {
    if (!released || inflight != 0 || h == nullptr) return nullptr;
    H* p = h;
    h = nullptr;
    return p;
  }
};

void free_pool(ztee_pool* p) {
  ztee_pool_close(p);
  ztee_pool_free(p);
}

using SbHandle = Handle<ztee_sandbox, ztee_sandbox_free>;
using PoolHandle = Handle<ztee_pool, free_pool>;
using RtHandle = Handle<ztee_runtime, ztee_runtime_free>;
using AuditHandle = Handle<ztee_audit_log, ztee_audit_free>;
using GateHandle = Handle<ztee_gate, ztee_gate_free>;

// A gate call in flight (defined with the Gate below); abort_call() ends its
// waits: pending approvals denied, a secret lookup failed, the command killed.
struct GateCallCtx;
void abort_call(GateCallCtx& ctx, const std::string& reason, const char* who);

// ---- the worker pool and the registry of live handles -----------------------

// Threads are started on demand (one per concurrently blocking call) and
// kept for reuse; they are joined by the env cleanup hook.
class Core {
 public:
  void post(std::function<void()> fn) {
    std::unique_lock<std::mutex> l(mu_);
    if (stopped_) {
      // After shutdown (finalizers running during teardown): run here.
      l.unlock();
      fn();
      return;
    }
    jobs_.push_back(std::move(fn));
    if (idle_ == 0) {
      threads_.emplace_back([this] { loop(); });
    } else {
      cv_.notify_one();
    }
  }

  template <typename H>
  void track(const std::shared_ptr<H>& h) {
    std::lock_guard<std::mutex> l(mu_);
    registry<H>().insert(h);
  }
  template <typename H>
  void untrack(const std::shared_ptr<H>& h) {
    std::lock_guard<std::mutex> l(mu_);
    registry<H>().erase(h);
  }
  // Wraps and tracks a handle the library has just made, before any JS object
  // holds it, so the env cleanup hook frees it even if the completion never
  // runs; nullptr (the handle freed) when shutting down, as the hook may have
  // passed it by.
  template <typename H>
  std::shared_ptr<H> adopt(typename H::Raw* raw) {
    auto h = std::make_shared<H>(raw);
    track(h);
    if (stopping()) {
      untrack(h);
      H::free_handle(h->release());
      return nullptr;
    }
    return h;
  }
  // Registers a gate call in flight; false once shutdown() began.
  bool track_call(const std::shared_ptr<GateCallCtx>& c) {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_) return false;
    calls_.insert(c);
    return true;
  }
  void untrack_call(const std::shared_ptr<GateCallCtx>& c) {
    std::lock_guard<std::mutex> l(mu_);
    calls_.erase(c);
  }
  template <typename F>
  void each_call(F fn) {
    std::vector<std::shared_ptr<GateCallCtx>> calls;
    {
      std::lock_guard<std::mutex> l(mu_);
      calls.assign(calls_.begin(), calls_.end());
    }
    for (auto& c : calls) fn(*c);
  }
  // Whether shutdown() began: a sandbox created after it is destroyed at once.
  bool stopping() {
    std::lock_guard<std::mutex> l(mu_);
    return stopping_;
  }

  // Frees a handle whose last user went away, off the calling thread.
  template <typename H>
  void free_later(const std::shared_ptr<H>& h, decltype(h->h) p) {
    if (p == nullptr) return;
    post([this, h, p] {
      H::free_handle(p);
      untrack(h);
    });
  }

  // The env is going away: destroy every sandbox (which also ends the calls
  // still running in it), close every pool, wait for every worker, then
  // free all handles, runtimes last.
  void shutdown() {
    std::vector<std::shared_ptr<SbHandle>> sbs;
    std::vector<std::shared_ptr<PoolHandle>> pools;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopping_) return;  // once
      stopping_ = true;
      sbs.assign(sandboxes_.begin(), sandboxes_.end());
      pools.assign(pools_.begin(), pools_.end());
    }
    // Gate calls waiting for an approval or a secret would wait for the JS
    // thread, which is exiting: end them.
    each_call([](GateCallCtx& c) { abort_call(c, "the process is exiting", "ztee"); });
    std::vector<std::thread> stoppers;
    for (auto& p : pools) {
      if (ztee_pool* h = p->enter()) {
        stoppers.emplace_back([p, h] {
          ztee_pool_close(h);
          p->leave();
        });
      }
    }
    for (auto& s : sbs) {
      if (ztee_sandbox* h = s->enter()) {
        stoppers.emplace_back([s, h] {
          ztee_sandbox_destroy(h);
          s->leave();
        });
      }
    }
    for (auto& t : stoppers) t.join();
    std::vector<std::thread> threads;
    {
      std::lock_guard<std::mutex> l(mu_);
      stopped_ = true;
      threads.swap(threads_);
    }
    cv_.notify_all();
    for (auto& t : threads) t.join();
    std::vector<std::shared_ptr<RtHandle>> rts;
    std::vector<std::shared_ptr<GateHandle>> gates;
    std::vector<std::shared_ptr<AuditHandle>> audits;
    {
      std::lock_guard<std::mutex> l(mu_);
      sbs.assign(sandboxes_.begin(), sandboxes_.end());
      pools.assign(pools_.begin(), pools_.end());
      rts.assign(runtimes_.begin(), runtimes_.end());
      gates.assign(gates_.begin(), gates_.end());
      audits.assign(audits_.begin(), audits_.end());
      sandboxes_.clear();
      pools_.clear();
      runtimes_.clear();
      gates_.clear();
      audits_.clear();
    }
    for (auto& s : sbs) ztee_sandbox_free(force(s));
    for (auto& g : gates) ztee_gate_free(force(g));
    for (auto& a : audits) ztee_audit_free(force(a));
    for (auto& p : pools) free_pool(force(p));
    for (auto& r : rts) ztee_runtime_free(force(r));
  }

 private:
  // Takes the handle whatever its state (no thread is left to use it).
  template <typename H>
  static auto force(const std::shared_ptr<H>& h) -> decltype(h->h) {
    std::lock_guard<std::mutex> l(h->mu);
    auto p = h->h;
    h->h = nullptr;
    h->released = true;
    return p;
  }

  void loop() {
    std::unique_lock<std::mutex> l(mu_);
    for (;;) {
      while (jobs_.empty() && !stopped_) {
        ++idle_;
        cv_.wait(l);
        --idle_;
      }
      if (jobs_.empty()) return;
      auto fn = std::move(jobs_.front());
      jobs_.pop_front();
      l.unlock();
      fn();
      l.lock();
    }
  }

  template <typename H>
  std::set<std::shared_ptr<H>>& registry();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  int idle_ = 0;
  bool stopping_ = false;
  bool stopped_ = false;
  std::set<std::shared_ptr<SbHandle>> sandboxes_;
  std::set<std::shared_ptr<PoolHandle>> pools_;
  std::set<std::shared_ptr<RtHandle>> runtimes_;
  std::set<std::shared_ptr<GateHandle>> gates_;
  std::set<std::shared_ptr<AuditHandle>> audits_;
  std::set<std::shared_ptr<GateCallCtx>> calls_;
};

template <>
std::set<std::shared_ptr<SbHandle>>& Core::registry<SbHandle>() { return sandboxes_; }
template <>
std::set<std::shared_ptr<PoolHandle>>& Core::registry<PoolHandle>() { return pools_; }
template <>
std::set<std::shared_ptr<RtHandle>>& Core::registry<RtHandle>() { return runtimes_; }
template <>
std::set<std::shared_ptr<GateHandle>>& Core::registry<GateHandle>() { return gates_; }
template <>
std::set<std::shared_ptr<AuditHandle>>& Core::registry<AuditHandle>() { return audits_; }

// ---- per-env state -----------------------------------------------------------

// Something for the JS thread: run(env) there, or drop() if the env is gone
// (then no napi call may be made: references are leaked with the env).
struct Task {
  virtual ~Task() = default;
  virtual void run(Napi::Env env) = 0;
};

struct AddonData {
  std::shared_ptr<Core> core = std::make_shared<Core>();
  napi_threadsafe_function tsfn = nullptr;
  int pending = 0;  // completions still to come (JS thread only)
  Napi::FunctionReference error_factory;
  Napi::FunctionReference sandbox_ctor, pool_ctor, runtime_ctor;
  Napi::FunctionReference policy_ctor, audit_ctor, gate_ctor;
};

void call_task(napi_env env, napi_value, void*, void* data) {
  auto* t = static_cast<Task*>(data);
  if (env == nullptr) {
    // The env is being torn down; its references go with it.
    delete t;
    return;
  }
  try {
    t->run(Napi::Env(env));
  } catch (const Napi::Error& e) {
    // A bug in this addon (tasks catch what JS callbacks throw): report it
    // rather than letting it unwind into Node.
    napi_fatal_exception(env, e.Value());
  }
  delete t;
}

// Queues a task for the JS thread from any thread. Never blocks. false:
// the env is going away and the task was dropped.
bool enqueue(AddonData* d, Task* t) {
  if (napi_call_threadsafe_function(d->tsfn, t, napi_tsfn_nonblocking) == napi_ok) return true;
  delete t;
  return false;
}

AddonData* data_of(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

Napi::Error make_error(Napi::Env env, const Failure& f) {
  AddonData* d = data_of(env);
  if (d != nullptr && !d->error_factory.IsEmpty()) {
    Napi::Value v = d->error_factory.Call({Napi::Number::New(env, f.code),
                                           Napi::String::New(env, ztee_status_name(f.code)),
                                           Napi::Number::New(env, f.sys_errno),
                                           Napi::String::New(env, f.message)});
    return Napi::Error(env, v);
  }
  Napi::Error e = Napi::Error::New(env, f.message);
  e.Set("code", Napi::String::New(env, ztee_status_name(f.code)));
  e.Set("status", Napi::Number::New(env, f.code));
  e.Set("errno", Napi::Number::New(env, f.sys_errno));
  return e;
}

[[noreturn]] void throw_invalid(Napi::Env env, const std::string& msg) {
  throw make_error(env, Failure{ZTEE_E_INVALID_ARGUMENT, 0, msg});
}

// A blocking call: work() runs on a worker thread and returns a Failure
// (code ZTEE_OK on success); settle() then runs on the JS thread and
// resolves with what it returns. The pending count keeps the loop alive.
class Job : public Task {
 public:
  explicit Job(Napi::Env env) : deferred_(Napi::Promise::Deferred::New(env)), data_(data_of(env)) {}
  Napi::Promise promise() const { return deferred_.Promise(); }

  virtual void work() = 0;
  virtual Napi::Value settle(Napi::Env env) { return env.Undefined(); }

  // Starts the job; ownership passes to the worker and then the JS thread.
  static Napi::Promise start(Job* job) {
    Napi::Promise p = job->promise();
    AddonData* d = job->data_;
    if (d->pending++ == 0) napi_ref_threadsafe_function(job->deferred_.Env(), d->tsfn);
    d->core->post([job] {
      job->work();
      enqueue(job->data_, job);
    });
    return p;
  }

  void run(Napi::Env env) override {
    AddonData* d = data_;
    if (--d->pending == 0) napi_unref_threadsafe_function(env, d->tsfn);
    Napi::HandleScope scope(env);
    if (failure_.code != ZTEE_OK) {
      deferred_.Reject(make_error(env, failure_).Value());
      return;
    }
    try {
      deferred_.Resolve(settle(env));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

 protected:
  Failure failure_;
  Napi::Promise::Deferred deferred_;
  AddonData* data_;
};

// A call on a wrapper's handle from a worker thread. The handle is pinned for
// the call (enter/leave); if the wrapper released it meanwhile and this was
// its last call, it is freed here. A failing call() has its error captured.
template <typename HandleT>
class HandleJob : public Job {
 public:
  using Raw = typename HandleT::Raw;
  HandleJob(Napi::Env env, std::shared_ptr<HandleT> handle, std::shared_ptr<Core> core, Failure closed)
      : Job(env), h(std::move(handle)), core(std::move(core)), closed_(std::move(closed)) {}
  virtual ztee_status call(Raw* p) = 0;
  virtual void done(Raw*) {}  // after call(), the handle still pinned
  void work() override {
    Raw* p = h->enter();
    if (p == nullptr) {
      failure_ = closed_;
      return;
    }
    ztee_status s = call(p);
    if (s != ZTEE_OK) failure_ = capture(s);
    done(p);
    if (Raw* q = h->leave()) {
      HandleT::free_handle(q);
      core->untrack(h);
    }
  }

 protected:
  std::shared_ptr<HandleT> h;
  std::shared_ptr<Core> core;

 private:
  Failure closed_;
};

// ---- argument helpers ------------------------------------------------------------

std::optional<std::string> opt_string(Napi::Object o, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return std::nullopt;
  if (!v.IsString()) throw_invalid(o.Env(), std::string(key) + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

uint64_t opt_uint(Napi::Object o, const char* key, uint64_t max = UINT32_MAX) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return 0;
  if (!v.IsNumber()) throw_invalid(o.Env(), std::string(key) + " must be a number");
  double x = v.As<Napi::Number>().DoubleValue();
  if (!(x >= 0) || x > static_cast<double>(max) || x != static_cast<double>(static_cast<uint64_t>(x))) {
    throw_invalid(o.Env(), std::string(key) + " must be a non-negative integer no larger than " +
                               std::to_string(max) + ", got " + v.ToString().Utf8Value());
  }
  return static_cast<uint64_t>(x);
}

int32_t opt_int(Napi::Object o, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return 0;
  if (!v.IsNumber()) throw_invalid(o.Env(), std::string(key) + " must be a number");
  return v.As<Napi::Number>().Int32Value();
}

Napi::Object opts_arg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return Napi::Object::New(info.Env());
  if (!info[i].IsObject()) throw_invalid(info.Env(), "options must be an object");
  return info[i].As<Napi::Object>();
}

std::string path_arg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsString()) throw_invalid(info.Env(), "path must be a string");
  std::string s = info[i].As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos) throw_invalid(info.Env(), "path must not contain NUL");
  return s;
}

std::vector<std::string> string_list(Napi::Env env, Napi::Value v, const char* what) {
  std::vector<std::string> out;
  if (v.IsUndefined() || v.IsNull()) return out;
  if (!v.IsArray()) throw_invalid(env, std::string(what) + " must be an array of strings");
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value e = a.Get(i);
    if (!e.IsString()) throw_invalid(env, std::string(what) + " must be an array of strings");
    out.push_back(e.As<Napi::String>().Utf8Value());
  }
  return out;
}

std::vector<const char*> c_strs(const std::vector<std::string>& v) {
  std::vector<const char*> out;
  out.reserve(v.size());
  for (const auto& s : v) out.push_back(s.c_str());
  return out;
}

const char* c_str(const std::optional<std::string>& s) { return s ? s->c_str() : nullptr; }

// An optional string argument (undefined or null: none) without NUL bytes.
std::optional<std::string> optional_string_arg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return std::nullopt;
  if (!info[i].IsString()) throw_invalid(info.Env(), std::string(what) + " must be a string");
  std::string s = info[i].As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos) throw_invalid(info.Env(), std::string(what) + " must not contain NUL");
  return s;
}

// A JS object of an exec result (defined with the gate's results below).
Napi::Object exec_result_obj(Napi::Env env, const ztee_exec_result* res);

// Sandbox options, owned (strings outlive the JS call).
struct SandboxOpts {
  std::optional<std::string> image_dir, template_dir, dns, diff_log;
  std::vector<std::string> allow;
  std::vector<const char*> allow_c;
  std::vector<std::pair<std::string, std::string>> mounts;  // host dir, guest path
  std::vector<ztee_mount> mounts_c;
  std::vector<std::string> dlp_block;
  std::vector<const char*> dlp_block_c;
  ztee_sandbox_options o = ZTEE_SANDBOX_OPTIONS_INIT;

  void parse(Napi::Object js, bool with_template) {
    image_dir = opt_string(js, "imageDir");
    if (with_template) template_dir = opt_string(js, "templateDir");
    dns = opt_string(js, "dns");
    allow = string_list(js.Env(), js.Get("allow"), "allow");
    o.vcpus = static_cast<uint32_t>(opt_uint(js, "vcpus"));
    o.memory_mib = static_cast<uint32_t>(opt_uint(js, "memoryMib"));
    o.boot_timeout_ms = static_cast<uint32_t>(opt_uint(js, "bootTimeoutMs"));
    o.exec_timeout_ms = static_cast<uint32_t>(opt_uint(js, "timeoutMs"));
    o.output_cap = opt_uint(js, "outputCap", UINT64_MAX >> 12);
    o.snapshottable = js.Get("snapshottable").ToBoolean() ? 1 : 0;
    o.guest_aslr = opt_int(js, "guestAslr");
    diff_log = opt_string(js, "diffLog");
    if (diff_log && diff_log->find('\0') != std::string::npos) throw_invalid(js.Env(), "diffLog must not contain NUL");
    o.dlp = js.Get("dlp").ToBoolean() ? 1 : 0;
    dlp_block = string_list(js.Env(), js.Get("dlpBlock"), "dlpBlock");
    Napi::Value m = js.Get("mounts");
    if (!m.IsUndefined() && !m.IsNull()) {
      if (!m.IsArray()) throw_invalid(js.Env(), "mounts must be an array of {hostDir, guestPath}");
      Napi::Array a = m.As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); i++) {
        Napi::Value e = a.Get(i);
        if (!e.IsObject()) throw_invalid(js.Env(), "mounts must be an array of {hostDir, guestPath}");
        auto host = opt_string(e.As<Napi::Object>(), "hostDir");
        auto guest = opt_string(e.As<Napi::Object>(), "guestPath");
        if (!host || !guest) throw_invalid(js.Env(), "mounts[" + std::to_string(i) + "] needs hostDir and guestPath strings");
        if ((*host + *guest).find('\0') != std::string::npos)
          throw_invalid(js.Env(), "mounts[" + std::to_string(i) + "]: hostDir and guestPath must not contain NUL");
        mounts.emplace_back(*host, *guest);
      }
    }
  }
  const ztee_sandbox_options* get() {
    mounts_c.clear();
    for (const auto& [host, guest] : mounts) mounts_c.push_back(ztee_mount{host.c_str(), guest.c_str()});
    o.mounts = mounts_c.empty() ? nullptr : mounts_c.data();
    o.mount_count = mounts_c.size();
    o.diff_log = c_str(diff_log);
    allow_c = c_strs(allow);
    o.image_dir = c_str(image_dir);
    o.template_dir = c_str(template_dir);
    o.net_dns = c_str(dns);
    o.net_allow = allow_c.empty() ? nullptr : allow_c.data();
    o.net_allow_count = allow_c.size();
    dlp_block_c = c_strs(dlp_block);
    o.dlp_block = dlp_block_c.empty() ? nullptr : dlp_block_c.data();
    o.dlp_block_count = dlp_block_c.size();
    return &o;
  }
};

// ---- Cancel ------------------------------------------------------------------------

using CancelPtr = std::shared_ptr<ztee_cancel>;

CancelPtr new_cancel(Napi::Env env) {
  ztee_cancel* c = nullptr;
  ztee_status s = ztee_cancel_create(&c);
  if (s != ZTEE_OK) throw make_error(env, capture(s));
  return CancelPtr(c, ztee_cancel_free);
}

class Cancel : public Napi::ObjectWrap<Cancel> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Cancel",
                       {InstanceMethod<&Cancel::Trigger>("trigger"),
                        InstanceMethod<&Cancel::Signal>("signal"),
                        InstanceAccessor<&Cancel::Triggered>("triggered")});
  }
  explicit Cancel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Cancel>(info), c_(new_cancel(info.Env())) {}
  const CancelPtr& ptr() const { return c_; }

 private:
  void Trigger(const Napi::CallbackInfo&) { ztee_cancel_trigger(c_.get()); }
  Napi::Value Triggered(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), ztee_cancel_triggered(c_.get()) != 0);
  }
  // signal(n): to the execs running with the token now; never blocks.
  void Signal(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsNumber()) throw_invalid(info.Env(), "signal needs a signal number");
    double n = info[0].As<Napi::Number>().DoubleValue();
    int sig = (n >= -1 && n <= 65 && n == static_cast<int>(n)) ? static_cast<int>(n) : -1;
    ztee_status s = ztee_cancel_signal(c_.get(), sig);
    if (s != ZTEE_OK) throw make_error(info.Env(), capture(s));
  }
  CancelPtr c_;  // shared with the execs using it: freed after they returned
};

// ---- Input (stdin streamed to one exec) --------------------------------------------

using InputPtr = std::shared_ptr<ztee_input>;

class Input : public Napi::ObjectWrap<Input> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Input",
                       {InstanceMethod<&Input::Write>("write"), InstanceMethod<&Input::Close>("close"),
                        InstanceAccessor<&Input::Buffered>("buffered")});
  }
  explicit Input(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Input>(info) {
    ztee_input* in = nullptr;
    ztee_status s = ztee_input_create(&in);
    if (s != ZTEE_OK) throw make_error(info.Env(), capture(s));
    in_ = InputPtr(in, ztee_input_free);
  }
  const InputPtr& ptr() const { return in_; }

 private:
  // write(Buffer) -> true when queued, false when the bound of bytes
  // waiting on the host is reached (EAGAIN: nothing queued; retry later).
  // ztee_input_write never blocks, so this runs on the JS thread.
  Napi::Value Write(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsBuffer()) throw_invalid(env, "write needs a Buffer");
    auto b = info[0].As<Napi::Buffer<char>>();
    ztee_status s = ztee_input_write(in_.get(), b.Data(), b.Length());
    if (s == ZTEE_OK) return Napi::Boolean::New(env, true);
    Failure f = capture(s);
    if (s == ZTEE_E_IO && f.sys_errno == EAGAIN) return Napi::Boolean::New(env, false);
    throw make_error(env, f);
  }
  void Close(const Napi::CallbackInfo&) { ztee_input_close(in_.get()); }
  Napi::Value Buffered(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(ztee_input_buffered(in_.get())));
  }
  InputPtr in_;  // shared with the exec using it: freed after it returned
};

// ---- Runtime -----------------------------------------------------------------------

struct RuntimeOpts {
  std::optional<std::string> state_dir, image_dir, backend, qemu, accel;
  bool jail = true;
  std::vector<std::string> trusted_keys;
  bool require_vuln_gate = false;
  void parse(Napi::Object js) {
    Napi::Value tk = js.Get("trustedKeys");
    if (!tk.IsUndefined() && !tk.IsNull()) {
      if (!tk.IsArray()) throw_invalid(js.Env(), "trustedKeys must be an array of key paths or PEM texts");
      Napi::Array a = tk.As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); ++i) {
        Napi::Value k = a.Get(i);
        if (!k.IsString()) throw_invalid(js.Env(), "trustedKeys must be an array of key paths or PEM texts");
        trusted_keys.push_back(k.As<Napi::String>().Utf8Value());
      }
    }
    require_vuln_gate = js.Get("requireVulnGate").ToBoolean();
    state_dir = opt_string(js, "stateDir");
    image_dir = opt_string(js, "imageDir");
    backend = opt_string(js, "backend");
    qemu = opt_string(js, "qemuBinary");
    accel = opt_string(js, "accel");
    Napi::Value j = js.Get("jail");
    jail = j.IsUndefined() || j.IsNull() || j.ToBoolean();
  }
  ztee_status create(ztee_runtime** out) const {
    ztee_runtime_options o = ZTEE_RUNTIME_OPTIONS_INIT;
    o.state_dir = c_str(state_dir);
    o.image_dir = c_str(image_dir);
    o.backend = c_str(backend);
    o.qemu_binary = c_str(qemu);
    o.accel = c_str(accel);
    o.jail_disabled = jail ? 0 : 1;
    std::vector<const char*> keys;
    for (const auto& k : trusted_keys) keys.push_back(k.c_str());
    o.trusted_keys = keys.empty() ? nullptr : keys.data();
    o.trusted_key_count = keys.size();
    o.require_vuln_gate = require_vuln_gate ? 1 : 0;
    return ztee_runtime_create(&o, out);
  }
};

class Runtime : public Napi::ObjectWrap<Runtime> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Runtime",
                       {InstanceAccessor<&Runtime::Backend>("backend"),
                        InstanceMethod<&Runtime::Close>("close"),
                        StaticMethod<&Runtime::CreateAsync>("createAsync")});
  }

  // new Runtime(opts) creates the runtime on the JS thread (it starts one
  // thread and sweeps the state dir); new Runtime(External) adopts one made
  // by createAsync.
  explicit Runtime(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Runtime>(info) {
    Napi::Env env = info.Env();
    core_ = data_of(env)->core;
    ztee_runtime* rt = nullptr;
    if (info.Length() > 0 && info[0].IsExternal()) {
      rt = info[0].As<Napi::External<ztee_runtime>>().Data();
    } else {
      RuntimeOpts o;
      o.parse(opts_arg(info, 0));
      ztee_status s = o.create(&rt);
      if (s != ZTEE_OK) throw make_error(env, capture(s));
    }
    h_ = std::make_shared<RtHandle>(rt);
    core_->track(h_);
    backend_ = ztee_runtime_backend(rt);
  }
  ~Runtime() override { core_->free_later(h_, h_->release()); }

  ztee_runtime* get(Napi::Env env) {
    std::lock_guard<std::mutex> l(h_->mu);
    if (h_->h == nullptr || h_->released) throw_invalid(env, "the runtime was closed");
    return h_->h;
  }

 private:
  Napi::Value Backend(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), backend_); }
  void Close(const Napi::CallbackInfo&) { core_->free_later(h_, h_->release()); }

  static Napi::Value CreateAsync(const Napi::CallbackInfo& info) {
    struct CreateJob : Job {
      using Job::Job;
      RuntimeOpts opts;
      ztee_runtime* rt = nullptr;
      void work() override {
        ztee_status s = opts.create(&rt);
        if (s != ZTEE_OK) failure_ = capture(s);
      }
      Napi::Value settle(Napi::Env env) override {
        ztee_runtime* r = rt;
        rt = nullptr;
        return data_of(env)->runtime_ctor.New({Napi::External<ztee_runtime>::New(env, r)});
      }
      ~CreateJob() override { ztee_runtime_free(rt); }
    };
    auto* job = new CreateJob(info.Env());
    try {
      job->opts.parse(opts_arg(info, 0));
    } catch (...) {
      delete job;
      throw;
    }
    return Job::start(job);
  }

  std::shared_ptr<Core> core_;
  std::shared_ptr<RtHandle> h_;
  std::string backend_;
};

// ---- Sandbox -------------------------------------------------------------------

// One exec's state shared with the streaming callbacks (runtime event-loop
// thread) and the JS thread. Chunks and the completion are queued in order.
struct ExecCtx {
  AddonData* data = nullptr;
  napi_ref on_output = nullptr;  // JS thread only
  napi_ref thrown = nullptr;     // the first exception on_output threw
  std::atomic<bool> failed{false};
  CancelPtr cancel;
  InputPtr input;
};

struct Chunk : Task {
  ExecCtx* ctx;
  int stream;
  std::string bytes;
  Chunk(ExecCtx* c, int s, const char* d, size_t n) : ctx(c), stream(s), bytes(d, n) {}
  void run(Napi::Env env) override {
    if (ctx->failed.load()) return;
    Napi::HandleScope scope(env);
    napi_value fv = nullptr;
    napi_get_reference_value(env, ctx->on_output, &fv);
    Napi::Function fn(env, fv);
    try {
      fn.Call({Napi::Number::New(env, stream), Napi::Buffer<char>::Copy(env, bytes.data(), bytes.size())});
    } catch (const Napi::Error& e) {
      // The callback threw: the command's output has nowhere to go. Kill it;
      // the exec then rejects with this error.
      ctx->failed.store(true);
      napi_create_reference(env, e.Value(), 1, &ctx->thrown);
      ztee_cancel_trigger(ctx->cancel.get());
    }
  }
};

void on_chunk(ExecCtx* ctx, int stream, const char* data, size_t len) {
  if (ctx->failed.load() || len == 0) return;
  enqueue(ctx->data, new Chunk(ctx, stream, data, len));
}
extern "C" void on_stdout_cb(void* ud, const char* data, size_t len) {
  on_chunk(static_cast<ExecCtx*>(ud), 1, data, len);
}
extern "C" void on_stderr_cb(void* ud, const char* data, size_t len) {
  on_chunk(static_cast<ExecCtx*>(ud), 2, data, len);
}

Napi::Object file_info(Napi::Env env, const ztee_file_info& fi) {
  static const char* const kTypes[] = {"file", "dir", "symlink", "other"};
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", Napi::String::New(env, fi.name != nullptr ? fi.name : ""));
  o.Set("type", Napi::String::New(env, kTypes[fi.type >= 0 && fi.type <= 3 ? fi.type : 3]));
  o.Set("mode", Napi::Number::New(env, fi.mode));
  o.Set("size", Napi::Number::New(env, static_cast<double>(fi.size)));
  o.Set("mtimeNs", Napi::BigInt::New(env, fi.mtime_ns));
  return o;
}

// ---- workspaces: changes and the reviewed export ---------------------------

// Everything that identifies a change and its content (its strings hold no NUL).
std::string change_key(const ztee_change& c) {
  std::string k;
  for (const char* s : {c.path, c.mount, c.sha256, c.link_target}) {
    k += s != nullptr ? s : "";
    k.push_back('\0');
  }
  k += std::to_string(c.kind) + "," + std::to_string(c.type) + "," + std::to_string(c.size) + "," +
       std::to_string(c.mode);
  return k;
}

// The export's approve callback (the worker thread in the C call; no JS):
// yes for exactly the changes the caller approved as reviewed, so one the
// guest altered after the review, or a new one, is declined.
extern "C" int approve_reviewed(const ztee_change* c, void* ud) {
  try {
    return static_cast<const std::set<std::string>*>(ud)->count(change_key(*c)) ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

Napi::Object change_obj(Napi::Env env, const ztee_change& c) {
  static const char* const kKinds[] = {"created", "modified", "deleted"};
  static const char* const kTypes[] = {"file", "dir", "symlink", "other"};
  auto str = [&](const char* s) { return Napi::String::New(env, s != nullptr ? s : ""); };
  Napi::Object o = Napi::Object::New(env);
  o.Set("kind", Napi::String::New(env, kKinds[c.kind >= 0 && c.kind <= 2 ? c.kind : 1]));
  o.Set("type", Napi::String::New(env, kTypes[c.type >= 0 && c.type <= 3 ? c.type : 3]));
  o.Set("path", str(c.path));
  o.Set("mount", str(c.mount));
  o.Set("size", Napi::Number::New(env, static_cast<double>(c.size)));
  o.Set("mode", Napi::Number::New(env, c.mode));
  o.Set("sha256", str(c.sha256));
  o.Set("linkTarget", str(c.link_target));
  std::string k = change_key(c);
  o.Set("key", Napi::Buffer<char>::Copy(env, k.data(), k.size()));
  return o;
}

Napi::Array change_array(Napi::Env env, const ztee_change_list& l) {
  Napi::Array a = Napi::Array::New(env, l.count);
  for (size_t i = 0; i < l.count; i++) a.Set(static_cast<uint32_t>(i), change_obj(env, l.entries[i]));
  return a;
}

class Sandbox : public Napi::ObjectWrap<Sandbox> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Sandbox",
                       {InstanceAccessor<&Sandbox::Id>("id"),
                        InstanceAccessor<&Sandbox::Alive>("alive"),
                        InstanceMethod<&Sandbox::Exec>("exec"),
                        InstanceMethod<&Sandbox::Ping>("ping"),
                        InstanceMethod<&Sandbox::Destroy>("destroy"),
                        InstanceMethod<&Sandbox::Pause>("pause"),
                        InstanceMethod<&Sandbox::Resume>("resume"),
                        InstanceMethod<&Sandbox::Snapshot>("snapshot"),
                        InstanceMethod<&Sandbox::ReadFile>("readFile"),
                        InstanceMethod<&Sandbox::WriteFile>("writeFile"),
                        InstanceMethod<&Sandbox::Stat>("stat"),
                        InstanceMethod<&Sandbox::ListDir>("listDir"),
                        InstanceMethod<&Sandbox::Mkdir>("mkdir"),
                        InstanceMethod<&Sandbox::Remove>("remove"),
                        InstanceMethod<&Sandbox::Diff>("diff"),
                        InstanceMethod<&Sandbox::ExportChanges>("exportChanges"),
                        InstanceMethod<&Sandbox::Patch>("patch"),
                        StaticMethod<&Sandbox::Create>("create")});
  }

  // Constructed only from native code, around a handle already tracked.
  explicit Sandbox(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Sandbox>(info) {
    core_ = data_of(info.Env())->core;
    if (info.Length() < 1 || !info[0].IsExternal()) {
      throw Napi::TypeError::New(info.Env(), "use Sandbox.create() (or Pool.lease())");
    }
    h_ = *info[0].As<Napi::External<std::shared_ptr<SbHandle>>>().Data();
    std::lock_guard<std::mutex> l(h_->mu);
    id_ = ztee_sandbox_id(h_->h);
  }
  // Collected without destroy(): destroy it off the JS thread.
  ~Sandbox() override {
    if (h_) core_->free_later(h_, h_->release());
  }

  static Napi::Value wrap(Napi::Env env, std::shared_ptr<SbHandle>& h) {
    return data_of(env)->sandbox_ctor.New({Napi::External<std::shared_ptr<SbHandle>>::New(env, &h)});
  }

 private:
  // A call on the sandbox's handle from a worker thread.
  struct SbJob : HandleJob<SbHandle> {
    SbJob(Napi::Env env, Sandbox* sb) : HandleJob(env, sb->h_, sb->core_, closed_failure()) {}
  };

  template <typename F>
  Napi::Value simple(const Napi::CallbackInfo& info, F fn) {
    struct J : SbJob {
      F fn;
      J(Napi::Env env, Sandbox* sb, F f) : SbJob(env, sb), fn(std::move(f)) {}
      ztee_status call(ztee_sandbox* sb) override { return fn(sb); }
    };
    return Job::start(new J(info.Env(), this, std::move(fn)));
  }

  Napi::Value Id(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), id_); }
  Napi::Value Alive(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), h_->usable()); }

  static Napi::Value Create(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw_invalid(env, "Sandbox.create needs a Runtime");
    Runtime* rt = Runtime::Unwrap(info[0].As<Napi::Object>());
    struct CreateJob : Job {
      using Job::Job;
      SandboxOpts opts;
      ztee_runtime* rt = nullptr;
      std::shared_ptr<Core> core;
      std::shared_ptr<SbHandle> h;
      Napi::ObjectReference runtime;  // alive until settled
      void work() override {
        ztee_sandbox* sb = nullptr;
        ztee_status s = ztee_sandbox_create(rt, opts.get(), &sb);
        if (s != ZTEE_OK) {
          failure_ = capture(s);
          return;
        }
        h = core->adopt<SbHandle>(sb);
        if (!h) failure_ = Failure{ZTEE_E_CLOSED, 0, "the process is exiting"};
      }
      Napi::Value settle(Napi::Env env) override { return Sandbox::wrap(env, h); }
    };
    auto* job = new CreateJob(env);
    try {
      job->rt = rt->get(env);
      job->opts.parse(opts_arg(info, 1), true);
      job->core = data_of(env)->core;
      job->runtime = Napi::Persistent(info[0].As<Napi::Object>());
    } catch (...) {
      delete job;
      throw;
    }
    return Job::start(job);
  }

  // exec({argv | shell, env, cwd, user, stdin, timeoutMs, outputCap},
  //      onOutput(stream 1|2, Buffer) | undefined, Cancel | undefined,
  //      Input | undefined)
  Napi::Value Exec(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct ExecJob : SbJob {
      std::vector<std::string> argv, envv;
      std::optional<std::string> shell, cwd, user;
      std::string stdin_data;
      bool has_stdin = false;
      ztee_exec_options o = ZTEE_EXEC_OPTIONS_INIT;
      ExecCtx* ctx = new ExecCtx;
      ztee_exec_result* res = nullptr;
      using SbJob::SbJob;
      ~ExecJob() override {
        ztee_exec_result_free(res);
        delete ctx;
      }
      ztee_status call(ztee_sandbox* sb) override {
        auto argv_c = c_strs(argv);
        auto env_c = c_strs(envv);
        o.argv = argv.empty() ? nullptr : argv_c.data();
        o.argc = argv_c.size();
        o.shell = c_str(shell);
        o.env = env_c.empty() ? nullptr : env_c.data();
        o.env_count = env_c.size();
        o.cwd = c_str(cwd);
        o.user = c_str(user);
        o.stdin_data = has_stdin ? stdin_data.data() : nullptr;
        o.stdin_len = stdin_data.size();
        o.cancel = ctx->cancel.get();
        o.input = ctx->input.get();
        o.user_data = ctx;
        return ztee_sandbox_exec(sb, &o, &res);
      }
      void run(Napi::Env env) override {
        Napi::HandleScope scope(env);
        if (ctx->on_output != nullptr) napi_delete_reference(env, ctx->on_output);
        ctx->on_output = nullptr;
        if (ctx->thrown != nullptr) {
          // A callback threw: reject with its error whatever the exec did.
          napi_value err = nullptr;
          napi_get_reference_value(env, ctx->thrown, &err);
          napi_delete_reference(env, ctx->thrown);
          ctx->thrown = nullptr;
          if (--data_->pending == 0) napi_unref_threadsafe_function(env, data_->tsfn);
          deferred_.Reject(err);
          return;
        }
        Job::run(env);
      }
      Napi::Value settle(Napi::Env env) override {
        return exec_result_obj(env, res);
      }
    };
    auto* job = new ExecJob(env, this);
    try {
      Napi::Object js = opts_arg(info, 0);
      job->argv = string_list(env, js.Get("argv"), "argv");
      job->shell = opt_string(js, "shell");
      if (job->argv.empty() == !job->shell) throw_invalid(env, "exec needs argv (a non-empty array) or shell");
      Napi::Value ev = js.Get("env");
      if (!ev.IsUndefined() && !ev.IsNull()) {
        if (!ev.IsObject()) throw_invalid(env, "env must be an object of strings");
        Napi::Object eo = ev.As<Napi::Object>();
        Napi::Array keys = eo.GetPropertyNames();
        for (uint32_t i = 0; i < keys.Length(); i++) {
          std::string k = keys.Get(i).ToString().Utf8Value();
          Napi::Value v = eo.Get(k);
          if (!v.IsString()) throw_invalid(env, "env." + k + " must be a string");
          if (k.empty() || k.find('=') != std::string::npos) throw_invalid(env, "bad env name '" + k + "'");
          job->envv.push_back(k + "=" + v.As<Napi::String>().Utf8Value());
        }
      }
      job->cwd = opt_string(js, "cwd");
      job->user = opt_string(js, "user");
      Napi::Value in = js.Get("stdin");
      if (in.IsBuffer()) {
        auto b = in.As<Napi::Buffer<char>>();
        job->stdin_data.assign(b.Data(), b.Length());
        job->has_stdin = true;
      } else if (in.IsString()) {
        job->stdin_data = in.As<Napi::String>().Utf8Value();
        job->has_stdin = true;
      } else if (!in.IsUndefined() && !in.IsNull()) {
        throw_invalid(env, "stdin must be a string or a Buffer");
      }
      job->o.timeout_ms = static_cast<uint32_t>(opt_uint(js, "timeoutMs"));
      job->o.output_cap = opt_uint(js, "outputCap", UINT64_MAX >> 12);
      job->ctx->data = data_of(env);
      if (info.Length() > 1 && info[1].IsFunction()) {
        napi_create_reference(env, info[1], 1, &job->ctx->on_output);
        job->o.on_stdout = on_stdout_cb;
        job->o.on_stderr = on_stderr_cb;
      }
      if (info.Length() > 2 && info[2].IsObject()) {
        job->ctx->cancel = Cancel::Unwrap(info[2].As<Napi::Object>())->ptr();
      } else if (job->ctx->on_output != nullptr) {
        job->ctx->cancel = new_cancel(env);  // a throwing callback must end the command
      }
      if (info.Length() > 3 && info[3].IsObject()) job->ctx->input = Input::Unwrap(info[3].As<Napi::Object>())->ptr();
    } catch (...) {
      if (job->ctx->on_output != nullptr) napi_delete_reference(env, job->ctx->on_output);
      delete job;
      throw;
    }
    return Job::start(job);
  }

  Napi::Value Ping(const Napi::CallbackInfo& info) {
    return simple(info, [](ztee_sandbox* sb) { return ztee_sandbox_ping(sb); });
  }
  Napi::Value Pause(const Napi::CallbackInfo& info) {
    return simple(info, [](ztee_sandbox* sb) { return ztee_sandbox_pause(sb); });
  }
  Napi::Value Resume(const Napi::CallbackInfo& info) {
    return simple(info, [](ztee_sandbox* sb) { return ztee_sandbox_resume(sb); });
  }
  Napi::Value Snapshot(const Napi::CallbackInfo& info) {
    std::string dir = path_arg(info, 0);
    return simple(info, [dir](ztee_sandbox* sb) { return ztee_sandbox_snapshot(sb, dir.c_str()); });
  }

  // Destroys the VM, then frees the handle once no call is inside.
  Napi::Value Destroy(const Napi::CallbackInfo& info) {
    struct J : SbJob {
      using SbJob::SbJob;
      ztee_status call(ztee_sandbox* sb) override { return ztee_sandbox_destroy(sb); }
      void done(ztee_sandbox*) override { h->release(); }
    };
    return Job::start(new J(info.Env(), this));
  }

  Napi::Value ReadFile(const Napi::CallbackInfo& info) {
    struct J : SbJob {
      using SbJob::SbJob;
      std::string path;
      uint64_t max = 0;
      void* data = nullptr;
      size_t len = 0;
      ~J() override { ztee_free(data); }
      ztee_status call(ztee_sandbox* sb) override {
        return ztee_sandbox_read_file(sb, path.c_str(), max, &data, &len);
      }
      Napi::Value settle(Napi::Env env) override {
        char* p = static_cast<char*>(data);
        data = nullptr;
        return Napi::Buffer<char>::NewOrCopy(env, p, len, [](Napi::Env, char* q) { ztee_free(q); });
      }
    };
    auto* job = new J(info.Env(), this);
    try {
      job->path = path_arg(info, 0);
      if (info.Length() > 1 && info[1].IsNumber()) {
        double m = info[1].As<Napi::Number>().DoubleValue();
        if (!(m >= 0)) throw_invalid(info.Env(), "maxBytes must be a non-negative number");
        job->max = static_cast<uint64_t>(m);
      }
    } catch (...) {
      delete job;
      throw;
    }
    return Job::start(job);
  }

  Napi::Value WriteFile(const Napi::CallbackInfo& info) {
    std::string path = path_arg(info, 0);
    if (info.Length() < 2 || !info[1].IsBuffer()) throw_invalid(info.Env(), "data must be a Buffer");
    auto b = info[1].As<Napi::Buffer<char>>();
    auto bytes = std::make_shared<std::string>(b.Data(), b.Length());
    uint32_t mode = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().Uint32Value() : 0;
    return simple(info, [path, bytes, mode](ztee_sandbox* sb) {
      return ztee_sandbox_write_file(sb, path.c_str(), bytes->data(), bytes->size(), mode);
    });
  }

  Napi::Value Stat(const Napi::CallbackInfo& info) {
    struct J : SbJob {
      using SbJob::SbJob;
      std::string path;
      ztee_file_info* fi = nullptr;
      ~J() override { ztee_file_info_free(fi); }
      ztee_status call(ztee_sandbox* sb) override { return ztee_sandbox_stat(sb, path.c_str(), &fi); }
      Napi::Value settle(Napi::Env env) override { return file_info(env, *fi); }
    };
    auto* job = new J(info.Env(), this);
    try {
      job->path = path_arg(info, 0);
    } catch (...) {
      delete job;
      throw;
    }
    return Job::start(job);
  }

  Napi::Value ListDir(const Napi::CallbackInfo& info) {
    struct J : SbJob {
      using SbJob::SbJob;
      std::string path;
      ztee_dir_list* list = nullptr;
      ~J() override { ztee_dir_list_free(list); }
      ztee_status call(ztee_sandbox* sb) override { return ztee_sandbox_list_dir(sb, path.c_str(), &list); }
      Napi::Value settle(Napi::Env env) override {
        Napi::Array a = Napi::Array::New(env, list->count);
        for (size_t i = 0; i < list->count; i++) a.Set(static_cast<uint32_t>(i), file_info(env, list->entries[i]));
        return a;
      }
    };
    auto* job = new J(info.Env(), this);
    try {
      job->path = path_arg(info, 0);
    } catch (...) {
      delete job;
      throw;
    }
    return Job::start(job);
  }

  Napi::Value Mkdir(const Napi::CallbackInfo& info) {
    std::string path = path_arg(info, 0);
    int parents = info.Length() > 1 && info[1].ToBoolean() ? 1 : 0;
    uint32_t mode = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().Uint32Value() : 0;
    return simple(info, [path, parents, mode](ztee_sandbox* sb) {
      return ztee_sandbox_mkdir(sb, path.c_str(), parents, mode);
    });
  }

  Napi::Value Remove(const Napi::CallbackInfo& info) {
    std::string path = path_arg(info, 0);
    int recursive = info.Length() > 1 && info[1].ToBoolean() ? 1 : 0;
    return simple(info, [path, recursive](ztee_sandbox* sb) {
      return ztee_sandbox_remove(sb, path.c_str(), recursive);
    });
  }

  // diff(mount | undefined) -> [change]
  Napi::Value Diff(const Napi::CallbackInfo& info) {
    struct J : SbJob {
      using SbJob::SbJob;
      std::optional<std::string> mount;
      ztee_change_list* list = nullptr;
      ~J() override { ztee_change_list_free(list); }
      ztee_status call(ztee_sandbox* sb) override { return ztee_sandbox_diff(sb, c_str(mount), &list); }
      Napi::Value settle(Napi::Env env) override { return change_array(env, *list); }
    };
    auto* job = new J(info.Env(), this);
    try {
      job->mount = optional_string_arg(info, 0, "mount");
    } catch (...) {
      delete job;
      throw;
    }
    return Job::start(job);
  }

  // exportChanges({mount, paths, destDir}, keys | undefined) -> {applied, declined}.
  // keys undefined: every selected change (approve NULL); else only those
  // whose key Buffer is listed ([] declines all: nothing is written and the
  // selection comes back in declined).
  Napi::Value ExportChanges(const Napi::CallbackInfo& info) {
    struct J : SbJob {
      using SbJob::SbJob;
      std::optional<std::string> mount, dest;
      std::vector<std::string> paths;
      std::set<std::string> keys;
      bool filter = false;
      ztee_export_result* res = nullptr;
      ~J() override { ztee_export_result_free(res); }
      ztee_status call(ztee_sandbox* sb) override {
        std::vector<const char*> ps = c_strs(paths);
        ztee_export_options o = ZTEE_EXPORT_OPTIONS_INIT;
        o.mount = c_str(mount);
        o.paths = ps.empty() ? nullptr : ps.data();
        o.path_count = ps.size();
        o.dest_dir = c_str(dest);
        if (filter) {
          o.approve = approve_reviewed;
          o.user_data = &keys;
        }
        return ztee_sandbox_export_changes(sb, &o, &res);
      }
      Napi::Value settle(Napi::Env env) override {
        Napi::Object r = Napi::Object::New(env);
        r.Set("applied", change_array(env, res->applied));
        r.Set("declined", change_array(env, res->declined));
        return r;
      }
    };
    auto* job = new J(info.Env(), this);
    try {
      Napi::Object o = opts_arg(info, 0);
      job->mount = opt_string(o, "mount");
      job->dest = opt_string(o, "destDir");
      if ((job->mount.value_or("") + job->dest.value_or("")).find('\0') != std::string::npos)
        throw_invalid(info.Env(), "mount and destDir must not contain NUL");
      job->paths = string_list(info.Env(), o.Get("paths"), "paths");
      for (const auto& p : job->paths)
        if (p.find('\0') != std::string::npos) throw_invalid(info.Env(), "paths must not contain NUL");
      if (info.Length() > 1 && !info[1].IsUndefined()) {
        if (!info[1].IsArray()) throw_invalid(info.Env(), "keys must be an array of Buffers");
        Napi::Array a = info[1].As<Napi::Array>();
        for (uint32_t i = 0; i < a.Length(); i++) {
          Napi::Value k = a.Get(i);
          if (!k.IsBuffer()) throw_invalid(info.Env(), "keys must be an array of Buffers");
          auto b = k.As<Napi::Buffer<char>>();
          job->keys.emplace(b.Data(), b.Length());
        }
        job->filter = true;
      }
    } catch (...) {
      delete job;
      throw;
    }
    return Job::start(job);
  }

  // patch(mount | undefined, paths | undefined) -> Buffer (the guest's bytes)
  Napi::Value Patch(const Napi::CallbackInfo& info) {
    struct J : SbJob {
      using SbJob::SbJob;
      std::optional<std::string> mount;
      std::vector<std::string> paths;
      char* text = nullptr;
      ~J() override { ztee_free(text); }
      ztee_status call(ztee_sandbox* sb) override {
        std::vector<const char*> ps = c_strs(paths);
        return ztee_sandbox_patch(sb, c_str(mount), ps.empty() ? nullptr : ps.data(), ps.size(), &text);
      }
      Napi::Value settle(Napi::Env env) override {
        return Napi::Buffer<char>::Copy(env, text != nullptr ? text : "", text != nullptr ? std::strlen(text) : 0);
      }
    };
    auto* job = new J(info.Env(), this);
    try {
      job->mount = optional_string_arg(info, 0, "mount");
      job->paths = string_list(info.Env(), info.Length() > 1 ? info[1] : info.Env().Undefined(), "paths");
      for (const auto& p : job->paths)
        if (p.find('\0') != std::string::npos) throw_invalid(info.Env(), "paths must not contain NUL");
    } catch (...) {
      delete job;
      throw;
    }
    return Job::start(job);
  }

  std::shared_ptr<Core> core_;
  std::shared_ptr<SbHandle> h_;
  std::string id_;
};

// ---- Pool ----------------------------------------------------------------------------

class Pool : public Napi::ObjectWrap<Pool> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Pool",
                       {InstanceMethod<&Pool::Lease>("lease"),
                        InstanceMethod<&Pool::Stats>("stats"),
                        InstanceMethod<&Pool::Close>("close"),
                        StaticMethod<&Pool::Create>("create")});
  }

  explicit Pool(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Pool>(info) {
    core_ = data_of(info.Env())->core;
    if (info.Length() < 1 || !info[0].IsExternal()) {
      throw Napi::TypeError::New(info.Env(), "use Pool.create()");
    }
    h_ = *info[0].As<Napi::External<std::shared_ptr<PoolHandle>>>().Data();
  }
  // Collected without close(): close it off the JS thread.
  ~Pool() override {
    if (h_) core_->free_later(h_, h_->release());
  }
  const std::shared_ptr<PoolHandle>& handle() const { return h_; }

 private:
  // A call on the pool's handle from a worker thread.
  struct PoolJob : HandleJob<PoolHandle> {
    PoolJob(Napi::Env env, Pool* p) : HandleJob(env, p->h_, p->core_, Failure{ZTEE_E_CLOSED, 0, "the pool was closed"}) {}
  };

  static Napi::Value Create(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw_invalid(env, "Pool.create needs a Runtime");
    Runtime* rt = Runtime::Unwrap(info[0].As<Napi::Object>());
    struct CreateJob : Job {
      using Job::Job;
      SandboxOpts sopts;
      std::optional<std::string> template_dir, warm_up;
      ztee_pool_options o = ZTEE_POOL_OPTIONS_INIT;
      ztee_runtime* rt = nullptr;
      std::shared_ptr<Core> core;
      std::shared_ptr<PoolHandle> h;
      Napi::ObjectReference runtime;  // alive until settled
      void work() override {
        o.sandbox = sopts.get();
        o.template_dir = c_str(template_dir);
        o.warm_up = c_str(warm_up);
        ztee_pool* p = nullptr;
        ztee_status s = ztee_pool_create(rt, &o, &p);
        if (s != ZTEE_OK) {
          failure_ = capture(s);
          return;
        }
        h = core->adopt<PoolHandle>(p);
        if (!h) failure_ = Failure{ZTEE_E_CLOSED, 0, "the process is exiting"};
      }
      Napi::Value settle(Napi::Env env) override {
        return data_of(env)->pool_ctor.New({Napi::External<std::shared_ptr<PoolHandle>>::New(env, &h)});
      }
    };
    auto* job = new CreateJob(env);
    try {
      Napi::Object js = opts_arg(info, 1);
      job->rt = rt->get(env);
      job->sopts.parse(js, false);
      job->template_dir = opt_string(js, "templateDir");
      job->warm_up = opt_string(js, "warmUp");
      job->o.cold_boot = js.Get("coldBoot").ToBoolean() ? 1 : 0;
      job->o.min_ready = static_cast<uint32_t>(opt_uint(js, "minReady"));
      job->o.max_total = static_cast<uint32_t>(opt_uint(js, "maxTotal"));
      job->o.refill_concurrency = static_cast<uint32_t>(opt_uint(js, "refillConcurrency"));
      job->o.lease_timeout_ms = static_cast<uint32_t>(opt_uint(js, "leaseTimeoutMs"));
      job->core = data_of(env)->core;
      job->runtime = Napi::Persistent(info[0].As<Napi::Object>());
    } catch (...) {
      delete job;
      throw;
    }
    return Job::start(job);
  }

  Napi::Value Lease(const Napi::CallbackInfo& info) {
    struct J : PoolJob {
      using PoolJob::PoolJob;
      uint32_t ms = 0;
      std::shared_ptr<SbHandle> sb;
      ztee_status call(ztee_pool* p) override {
        ztee_sandbox* s = nullptr;
        ztee_status st = ztee_pool_lease(p, ms, &s);
        if (st != ZTEE_OK) return st;
        sb = core->adopt<SbHandle>(s);
        if (!sb) failure_ = Failure{ZTEE_E_CLOSED, 0, "the process is exiting"};
        return ZTEE_OK;
      }
      Napi::Value settle(Napi::Env env) override { return Sandbox::wrap(env, sb); }
    };
    auto* job = new J(info.Env(), this);
    job->ms = static_cast<uint32_t>(opt_uint(opts_arg(info, 0), "timeoutMs"));
    return Job::start(job);
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ztee_pool_stats st = ZTEE_POOL_STATS_INIT;
    std::string last;
    // Non-blocking (a mutex in the library); the handle is pinned meanwhile.
    ztee_pool* p = h_->enter();
    if (p == nullptr) throw make_error(env, Failure{ZTEE_E_CLOSED, 0, "the pool was closed"});
    ztee_status s = ztee_pool_stats_get(p, &st);
    Failure f;
    if (s != ZTEE_OK) f = capture(s);
    char* msg = nullptr;
    if (s == ZTEE_OK && ztee_pool_last_error(p, &msg) == ZTEE_OK) {
      last = msg;
      ztee_free(msg);
    }
    core_->free_later(h_, h_->leave());
    if (s != ZTEE_OK) throw make_error(env, f);
    Napi::Object o = Napi::Object::New(env);
    o.Set("ready", st.ready);
    o.Set("starting", st.starting);
    o.Set("leased", st.leased);
    o.Set("consecutiveFailures", st.consecutive_failures);
    o.Set("backingOff", Napi::Boolean::New(env, st.backing_off != 0));
    o.Set("created", static_cast<double>(st.created));
    o.Set("failed", static_cast<double>(st.failed));
    o.Set("leases", static_cast<double>(st.leases));
    o.Set("leaseTimeouts", static_cast<double>(st.lease_timeouts));
    Napi::Array hist = Napi::Array::New(env, 8);
    for (uint32_t i = 0; i < 8; i++) hist.Set(i, static_cast<double>(st.lease_wait_hist[i]));
    o.Set("leaseWaitHist", hist);
    o.Set("lastError", last);
    return o;
  }

  // Closes the pool (ready sandboxes destroyed; leased ones stay with their
  // holders). The handle stays for stats() until the wrapper is collected.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    struct J : PoolJob {
      using PoolJob::PoolJob;
      ztee_status call(ztee_pool* p) override {
        ztee_pool_close(p);
        return ZTEE_OK;
      }
    };
    return Job::start(new J(info.Env(), this));
  }

  std::shared_ptr<Core> core_;
  std::shared_ptr<PoolHandle> h_;
};

// ---- control plane: Policy, AuditLog, Gate ------------------------------------------------

// A string for the C ABI: a NUL byte would cut it short without a word.
std::string c_string(Napi::Env env, Napi::Value v, const std::string& what) {
  if (!v.IsString()) throw_invalid(env, what + " must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos) throw_invalid(env, what + " must not contain NUL");
  return s;
}

std::optional<std::string> opt_c_string(Napi::Object o, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return std::nullopt;
  return c_string(o.Env(), v, key);
}

std::vector<std::string> c_string_list(Napi::Env env, Napi::Value v, const char* what) {
  std::vector<std::string> out = string_list(env, v, what);
  for (const auto& s : out) {
    if (s.find('\0') != std::string::npos) throw_invalid(env, std::string(what) + " entries must not contain NUL");
  }
  return out;
}

// The bytes of a string (UTF-8) or a Buffer / Uint8Array; false for other values.
bool bytes_of(Napi::Value v, std::string* out) {
  if (v.IsString()) {
    *out = v.As<Napi::String>().Utf8Value();
    return true;
  }
  if (v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array) {
    auto u = v.As<Napi::Uint8Array>();
    out->assign(reinterpret_cast<const char*>(u.Data()), u.ByteLength());
    return true;
  }
  return false;
}

void wipe(std::string& s) {
  if (!s.empty()) explicit_bzero(s.data(), s.size());
  s.clear();
}

// A tool call read from JS, owning its strings (ztee_tool_call borrows them).
struct ToolCallSpec {
  std::string tool, stdin_data;
  std::optional<std::string> command, cwd, user, trace;
  std::vector<std::string> argv, env, writes, network, labels, paths, contents;
  std::vector<size_t> lens;
  bool has_stdin = false;
  std::vector<const char*> argv_c, env_c, writes_c, network_c, labels_c, paths_c, contents_c;
  ztee_tool_call c = ZTEE_TOOL_CALL_INIT;

  // to_run: the call must say what to run (a gate call; classify needs only tool).
  void parse(Napi::Env e, Napi::Object js, bool to_run) {
    Napi::Value t = js.Get("tool");
    if (!t.IsString() || t.As<Napi::String>().Utf8Value().empty()) {
      throw_invalid(e, "a tool call needs tool, the tool's name (a non-empty string)");
    }
    tool = c_string(e, t, "tool");
    command = opt_c_string(js, "command");
    argv = c_string_list(e, js.Get("argv"), "argv");
    if (command && !argv.empty()) throw_invalid(e, "a tool call takes command (a shell string) or argv, not both");
    if (to_run && !command && argv.empty()) {
      throw_invalid(e, "a tool call needs command (a shell string) or argv (a non-empty array of strings)");
    }
    Napi::Value ev = js.Get("env");
    if (!ev.IsUndefined() && !ev.IsNull()) {
      if (!ev.IsObject() || ev.IsArray()) throw_invalid(e, "env must be an object of strings");
      Napi::Object eo = ev.As<Napi::Object>();
      Napi::Array keys = eo.GetPropertyNames();
      for (uint32_t i = 0; i < keys.Length(); i++) {
        std::string k = keys.Get(i).ToString().Utf8Value();
        if (k.empty() || k.find('=') != std::string::npos || k.find('\0') != std::string::npos) {
          throw_invalid(e, "bad env name '" + k + "'");
        }
        env.push_back(k + "=" + c_string(e, eo.Get(k), "env." + k));
      }
    }
    Napi::Value fv = js.Get("files");
    if (!fv.IsUndefined() && !fv.IsNull()) {
      if (!fv.IsObject() || fv.IsArray()) throw_invalid(e, "files must be an object: guest path -> string or Buffer");
      Napi::Object fo = fv.As<Napi::Object>();
      Napi::Array keys = fo.GetPropertyNames();
      for (uint32_t i = 0; i < keys.Length(); i++) {
        std::string path = c_string(e, keys.Get(i), "a files path");
        std::string bytes;
        if (!bytes_of(fo.Get(path), &bytes)) throw_invalid(e, "files['" + path + "'] must be a string or a Buffer");
        paths.push_back(std::move(path));
        contents.push_back(std::move(bytes));
      }
    }
    cwd = opt_c_string(js, "cwd");
    user = opt_c_string(js, "user");
    trace = opt_c_string(js, "traceId");
    Napi::Value in = js.Get("stdin");
    if (!in.IsUndefined() && !in.IsNull()) {
      if (!bytes_of(in, &stdin_data)) throw_invalid(e, "stdin must be a string or a Buffer");
      has_stdin = true;
    }
    writes = c_string_list(e, js.Get("writes"), "writes");
    network = c_string_list(e, js.Get("network"), "network");
    labels = c_string_list(e, js.Get("labels"), "labels");
  }

  ztee_tool_call* get() {
    auto list = [](const std::vector<std::string>& v, std::vector<const char*>& cv, const char* const** p,
                   size_t* n) {
      cv = c_strs(v);
      *p = cv.empty() ? nullptr : cv.data();
      *n = cv.size();
    };
    c.tool = tool.c_str();
    c.command = c_str(command);
    list(argv, argv_c, &c.argv, &c.argc);
    list(env, env_c, &c.env, &c.env_count);
    paths_c = c_strs(paths);
    contents_c.clear();
    lens.clear();
    for (const auto& b : contents) {
      contents_c.push_back(b.data());
      lens.push_back(b.size());
    }
    c.file_paths = paths_c.empty() ? nullptr : paths_c.data();
    c.file_contents = contents_c.empty() ? nullptr : contents_c.data();
    c.file_lengths = lens.empty() ? nullptr : lens.data();
    c.file_count = paths_c.size();
    c.cwd = c_str(cwd);
    c.user = c_str(user);
    c.stdin_data = has_stdin ? stdin_data.data() : nullptr;
    c.stdin_len = has_stdin ? stdin_data.size() : 0;
    list(writes, writes_c, &c.writes, &c.writes_count);
    list(network, network_c, &c.network, &c.network_count);
    list(labels, labels_c, &c.labels, &c.labels_count);
    c.trace_id = c_str(trace);
    return &c;
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

Napi::Object decision_obj(Napi::Env env, int32_t tier, int32_t action, int32_t rule_index, const char* rule,
                          const char* reason) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("tier", Napi::Number::New(env, tier));
  o.Set("action", Napi::String::New(env, action_name(action)));
  o.Set("ruleIndex", Napi::Number::New(env, rule_index));
  o.Set("rule", Napi::String::New(env, rule != nullptr ? rule : ""));
  o.Set("reason", Napi::String::New(env, reason != nullptr ? reason : ""));
  return o;
}

Napi::Object exec_result_obj(Napi::Env env, const ztee_exec_result* res) {
  Napi::Object r = Napi::Object::New(env);
  r.Set("exitCode", Napi::Number::New(env, res->exit_code));
  r.Set("signal", Napi::Number::New(env, res->signal));
  r.Set("timedOut", Napi::Boolean::New(env, res->timed_out != 0));
  r.Set("truncated", Napi::Boolean::New(env, res->truncated != 0));
  r.Set("cancelled", Napi::Boolean::New(env, res->cancelled != 0));
  r.Set("durationMs", Napi::Number::New(env, static_cast<double>(res->duration_us) / 1000.0));
  r.Set("dlpFindings", Napi::Number::New(env, res->dlp_findings));
  r.Set("injectionAnomalies", Napi::Number::New(env, res->injection_anomalies));
  r.Set("stdout", Napi::Buffer<char>::Copy(env, res->stdout_data, res->stdout_len));
  r.Set("stderr", Napi::Buffer<char>::Copy(env, res->stderr_data, res->stderr_len));
  return r;
}

// ---- Policy (parse, load and classify are quick: on the JS thread) ----

class Policy : public Napi::ObjectWrap<Policy> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Policy",
                       {InstanceMethod<&Policy::Classify>("classify"),
                        InstanceMethod<&Policy::Close>("close"),
                        StaticMethod<&Policy::Parse>("parse"),
                        StaticMethod<&Policy::Load>("load"),
                        StaticMethod<&Policy::Default>("default"),
                        StaticMethod<&Policy::DefaultJson>("defaultJson")});
  }
  explicit Policy(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Policy>(info) {
    if (info.Length() < 1 || !info[0].IsExternal()) throw Napi::TypeError::New(info.Env(), "use Policy.parse()");
    p_ = info[0].As<Napi::External<ztee_policy>>().Data();
  }
  ~Policy() override { ztee_policy_free(p_); }

  ztee_policy* get(Napi::Env env) {
    if (p_ == nullptr) throw make_error(env, Failure{ZTEE_E_CLOSED, 0, "the policy was closed"});
    return p_;
  }

 private:
  static Napi::Value wrap(Napi::Env env, ztee_status s, ztee_policy* p) {
    if (s != ZTEE_OK) throw make_error(env, capture(s));
    return data_of(env)->policy_ctor.New({Napi::External<ztee_policy>::New(env, p)});
  }
  static Napi::Value Parse(const Napi::CallbackInfo& info) {
    std::string text;
    if (info.Length() < 1 || !bytes_of(info[0], &text)) {
      throw_invalid(info.Env(), "Policy.parse takes the policy's JSON text (a string or a Buffer)");
    }
    ztee_policy* p = nullptr;
    ztee_status s = ztee_policy_parse(text.data(), text.size(), &p);
    return wrap(info.Env(), s, p);
  }
  static Napi::Value Load(const Napi::CallbackInfo& info) {
    std::string path = path_arg(info, 0);
    ztee_policy* p = nullptr;
    ztee_status s = ztee_policy_load(path.c_str(), &p);
    return wrap(info.Env(), s, p);
  }
  static Napi::Value Default(const Napi::CallbackInfo& info) {
    ztee_policy* p = nullptr;
    ztee_status s = ztee_policy_default(&p);
    return wrap(info.Env(), s, p);
  }
  static Napi::Value DefaultJson(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), ztee_policy_default_json());
  }
  Napi::Value Classify(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ztee_policy* p = get(env);
    ToolCallSpec spec;
    spec.parse(env, opts_arg(info, 0), false);
    ztee_decision* d = nullptr;
    ztee_status s = ztee_policy_classify(p, spec.get(), &d);
    if (s != ZTEE_OK) throw make_error(env, capture(s));
    Napi::Object o = decision_obj(env, d->tier, d->action, d->rule_index, d->rule, d->reason);
    ztee_decision_free(d);
    return o;
  }
  void Close(const Napi::CallbackInfo&) {
    ztee_policy_free(p_);  // gates made with it keep their own reference
    p_ = nullptr;
  }

  ztee_policy* p_ = nullptr;
};

// ---- AuditLog (open, append, flush and free may sync the disk: on workers) ----

class AuditLog : public Napi::ObjectWrap<AuditLog> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "AuditLog",
                       {InstanceMethod<&AuditLog::Append>("append"),
                        InstanceMethod<&AuditLog::Flush>("flush"),
                        InstanceMethod<&AuditLog::Close>("close"),
                        StaticMethod<&AuditLog::Open>("open")});
  }
  explicit AuditLog(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AuditLog>(info) {
    core_ = data_of(info.Env())->core;
    if (info.Length() < 1 || !info[0].IsExternal()) throw Napi::TypeError::New(info.Env(), "use AuditLog.open()");
    h_ = *info[0].As<Napi::External<std::shared_ptr<AuditHandle>>>().Data();
  }
  ~AuditLog() override {
    if (h_) core_->free_later(h_, h_->release());
  }
  const std::shared_ptr<AuditHandle>& handle() const { return h_; }

 private:
  struct AuditJob : HandleJob<AuditHandle> {
    AuditJob(Napi::Env env, AuditLog* a)
        : HandleJob(env, a->h_, a->core_, Failure{ZTEE_E_CLOSED, 0, "the audit log was closed"}) {}
  };

  // open({path, durability (0..2), batchMs, hmacKey (Buffer), rotateBytes})
  static Napi::Value Open(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct OpenJob : Job {
      using Job::Job;
      std::string path, key;
      ztee_audit_options o = ZTEE_AUDIT_OPTIONS_INIT;
      std::shared_ptr<Core> core;
      std::shared_ptr<AuditHandle> h;
      ~OpenJob() override { wipe(key); }
      void work() override {
        o.path = path.c_str();
        o.hmac_key = key.empty() ? nullptr : key.data();
        o.hmac_key_len = key.size();
        ztee_audit_log* l = nullptr;
        ztee_status s = ztee_audit_open(&o, &l);
        if (s != ZTEE_OK) {
          failure_ = capture(s);
          return;
        }
        h = core->adopt<AuditHandle>(l);
        if (!h) failure_ = Failure{ZTEE_E_CLOSED, 0, "the process is exiting"};
      }
      Napi::Value settle(Napi::Env env) override {
        return data_of(env)->audit_ctor.New({Napi::External<std::shared_ptr<AuditHandle>>::New(env, &h)});
      }
    };
    auto* job = new OpenJob(env);
    try {
      Napi::Object js = opts_arg(info, 0);
      Napi::Value pv = js.Get("path");
      if (!pv.IsString()) throw_invalid(env, "AuditLog.open needs path (a string)");
      job->path = c_string(env, pv, "path");
      job->o.durability = opt_int(js, "durability");
      job->o.batch_ms = static_cast<uint32_t>(opt_uint(js, "batchMs"));
      job->o.rotate_bytes = opt_uint(js, "rotateBytes", UINT64_MAX >> 12);
      Napi::Value kv = js.Get("hmacKey");
      if (!kv.IsUndefined() && !kv.IsNull() && !bytes_of(kv, &job->key)) {
        throw_invalid(env, "hmacKey must be a string or a Buffer");
      }
      job->core = data_of(env)->core;
    } catch (...) {
      delete job;
      throw;
    }
    return Job::start(job);
  }

  // append(event, traceId, fieldsJsonInner) -> seq
  Napi::Value Append(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct J : AuditJob {
      using AuditJob::AuditJob;
      std::string event, trace, fields;
      uint64_t seq = 0;
      ztee_status call(ztee_audit_log* l) override {
        return ztee_audit_append(l, event.c_str(), trace.c_str(), fields.c_str(), &seq);
      }
      Napi::Value settle(Napi::Env env) override { return Napi::Number::New(env, static_cast<double>(seq)); }
    };
    auto* job = new J(env, this);
    try {
      job->event = c_string(env, info[0], "event");
      if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull()) job->trace = c_string(env, info[1], "traceId");
      if (info.Length() > 2 && !info[2].IsUndefined() && !info[2].IsNull()) job->fields = c_string(env, info[2], "fields");
    } catch (...) {
      delete job;
      throw;
    }
    return Job::start(job);
  }

  Napi::Value Flush(const Napi::CallbackInfo& info) {
    struct J : AuditJob {
      using AuditJob::AuditJob;
      ztee_status call(ztee_audit_log* l) override { return ztee_audit_flush(l); }
    };
    return Job::start(new J(info.Env(), this));
  }

  // Drops this reference (gates using the log keep it); the sync and close
  // happen off the JS thread.
  void Close(const Napi::CallbackInfo&) { core_->free_later(h_, h_->release()); }

  std::shared_ptr<Core> core_;
  std::shared_ptr<AuditHandle> h_;
};

// verifyAuditLog(files, key Buffer | undefined) -> {ok, records, problem}
Napi::Value VerifyAuditLog(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct J : Job {
    using Job::Job;
    std::vector<std::string> files;
    std::string key;
    ztee_audit_report* rep = nullptr;
    ~J() override {
      ztee_audit_report_free(rep);
      wipe(key);
    }
    void work() override {
      auto fc = c_strs(files);
      ztee_status s = ztee_audit_verify(fc.data(), fc.size(), key.empty() ? nullptr : key.data(), key.size(), &rep);
      if (s != ZTEE_OK) failure_ = capture(s);
    }
    Napi::Value settle(Napi::Env env) override {
      Napi::Object o = Napi::Object::New(env);
      o.Set("ok", Napi::Boolean::New(env, rep->ok != 0));
      o.Set("records", Napi::Number::New(env, static_cast<double>(rep->records)));
      o.Set("problem", Napi::String::New(env, rep->problem));
      return o;
    }
  };
  auto* job = new J(env);
  try {
    job->files = c_string_list(env, info.Length() > 0 ? info[0] : env.Undefined(), "files");
    if (job->files.empty()) throw_invalid(env, "verifyAuditLog needs at least one file (oldest first)");
    if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull() && !bytes_of(info[1], &job->key)) {
      throw_invalid(env, "key must be a string or a Buffer");
    }
  } catch (...) {
    delete job;
    throw;
  }
  return Job::start(job);
}

// ---- Gate ----

// A secret lookup handed to the JS thread; the worker waits for done.
struct SecretReq {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  ztee_status status = ZTEE_E_INTERNAL;
  std::string value;  // wiped once handed to libztee
  std::string error;  // why the lookup failed

  ~SecretReq() { wipe(value); }
  // First answer wins; a late one (after the wait gave up) is dropped.
  void finish(ztee_status st, std::string v, std::string err) {
    {
      std::lock_guard<std::mutex> l(mu);
      if (!done) {
        done = true;
        status = st;
        value.swap(v);
        error = std::move(err);
      }
    }
    wipe(v);
    cv.notify_all();
  }
};

struct GateCallCtx : std::enable_shared_from_this<GateCallCtx> {
  AddonData* data = nullptr;
  const void* owner = nullptr;                    // the GateHandle the call runs on
  ExecCtx out;                                    // streamed output, as an exec's
  napi_ref approver = nullptr, secret = nullptr;  // JS thread only
  uint32_t secret_timeout_ms = 30000;
  std::mutex mu;
  ztee_gate* gate = nullptr;  // while ztee_gate_call runs
  std::vector<std::string> tokens;
  std::shared_ptr<SecretReq> waiting;
  bool aborted = false;
  std::string abort_reason, abort_who;
  std::string note;  // why a secret lookup failed, for the call's error

  void drop_refs(napi_env env) {
    for (napi_ref* r : {&out.on_output, &approver, &secret}) {
      if (*r != nullptr) napi_delete_reference(env, *r);
      *r = nullptr;
    }
  }
  // Denies a pending approval of this call (if the call still runs).
  void deny(const std::string& token, const std::string& reason, const char* who) {
    std::lock_guard<std::mutex> l(mu);
    if (gate != nullptr) ztee_gate_deny(gate, token.c_str(), reason.c_str(), who);
  }
};

// The call the current worker thread runs in ztee_gate_call: the approver
// and secret callbacks run on that thread.
thread_local GateCallCtx* t_call = nullptr;

void abort_call(GateCallCtx& c, const std::string& reason, const char* who) {
  std::lock_guard<std::mutex> l(c.mu);
  if (c.aborted) return;
  c.aborted = true;
  c.abort_reason = reason;
  c.abort_who = who;
  if (c.gate != nullptr) {
    // Answers never block for long; an already answered token is ignored.
    for (const auto& t : c.tokens) ztee_gate_deny(c.gate, t.c_str(), reason.c_str(), who);
  }
  if (c.waiting) c.waiting->finish(ZTEE_E_CLOSED, "", reason);
  ztee_cancel_trigger(c.out.cancel.get());
}

struct ApprovalTask : Task {
  std::shared_ptr<GateCallCtx> ctx;
  std::string token, description;
  uint32_t deadline_ms;
  ApprovalTask(std::shared_ptr<GateCallCtx> c, const char* t, const char* d, uint32_t ms)
      : ctx(std::move(c)), token(t), description(d), deadline_ms(ms) {}
  void run(Napi::Env env) override {
    Napi::HandleScope scope(env);
    if (ctx->approver == nullptr) {
      ctx->deny(token, "the approver is gone", "ztee");
      return;
    }
    napi_value fv = nullptr;
    napi_get_reference_value(env, ctx->approver, &fv);
    try {
      Napi::Function(env, fv).Call({Napi::String::New(env, token), Napi::String::New(env, description),
                                    Napi::Number::New(env, deadline_ms)});
    } catch (const Napi::Error& e) {
      ctx->deny(token, "the approver threw: " + e.Message(), "gate");
    }
  }
};

extern "C" void gate_approver_cb(void*, ztee_gate* gate, const char* token, const char* description,
                                 uint32_t deadline_ms) {
  GateCallCtx* c = t_call;
  if (c == nullptr) {
    ztee_gate_deny(gate, token, "the Node binding has no call for this approval", "ztee");
    return;
  }
  {
    std::lock_guard<std::mutex> l(c->mu);
    if (c->aborted) {
      ztee_gate_deny(gate, token, c->abort_reason.c_str(), c->abort_who.c_str());
      return;
    }
    c->tokens.emplace_back(token);
  }
  // Returns at once: the gate waits for approve()/deny() from the JS thread.
  if (!enqueue(c->data, new ApprovalTask(c->shared_from_this(), token, description, deadline_ms))) {
    ztee_gate_deny(gate, token, "the JS thread is gone", "ztee");
  }
}

std::string error_text(Napi::Value v) {
  try {
    if (v.IsObject()) {
      Napi::Value m = v.As<Napi::Object>().Get("message");
      if (m.IsString()) return m.As<Napi::String>().Utf8Value();
    }
    return v.ToString().Utf8Value();
  } catch (const Napi::Error&) {
    return "(an error that cannot be shown)";
  }
}

struct SecretTask : Task {
  std::shared_ptr<GateCallCtx> ctx;
  std::shared_ptr<SecretReq> req;
  std::string name;
  SecretTask(std::shared_ptr<GateCallCtx> c, std::shared_ptr<SecretReq> r, const char* n)
      : ctx(std::move(c)), req(std::move(r)), name(n) {}
  void run(Napi::Env env) override {
    Napi::HandleScope scope(env);
    {
      std::lock_guard<std::mutex> l(req->mu);
      if (req->done) return;  // aborted or given up meanwhile
    }
    if (ctx->secret == nullptr) {
      req->finish(ZTEE_E_INTERNAL, "", "the secret resolver is gone");
      return;
    }
    std::shared_ptr<SecretReq> r = req;
    // done(err, value): value a non-empty string or Buffer, or undefined for
    // a name the resolver does not know.
    Napi::Function done = Napi::Function::New(
        env,
        [r](const Napi::CallbackInfo& info) {
          Napi::Value err = info.Length() > 0 ? info[0] : info.Env().Undefined();
          Napi::Value v = info.Length() > 1 ? info[1] : info.Env().Undefined();
          std::string bytes;
          if (!err.IsUndefined() && !err.IsNull()) {
            r->finish(ZTEE_E_INTERNAL, "", "the secret resolver failed: " + error_text(err));
          } else if (v.IsUndefined() || v.IsNull()) {
            r->finish(ZTEE_E_NOT_FOUND, "", "");
          } else if (bytes_of(v, &bytes)) {
            if (bytes.empty()) {
              r->finish(ZTEE_E_NOT_FOUND, "", "");
            } else {
              r->finish(ZTEE_OK, std::move(bytes), "");
            }
          } else {
            r->finish(ZTEE_E_INTERNAL, "",
                      "the secret resolver returned neither a string, a Buffer nor undefined");
          }
        },
        "done");
    napi_value fv = nullptr;
    napi_get_reference_value(env, ctx->secret, &fv);
    try {
      Napi::Function(env, fv).Call({Napi::String::New(env, name), done});
    } catch (const Napi::Error& e) {
      req->finish(ZTEE_E_INTERNAL, "", "the secret resolver failed: " + e.Message());
    }
  }
};

// Blocks this worker (never the JS thread) while the JS thread looks the
// secret up, up to the gate's secret timeout.
extern "C" ztee_status gate_secret_cb(void*, const char* name, ztee_secret_value* out) {
  GateCallCtx* c = t_call;
  if (c == nullptr) return ZTEE_E_INTERNAL;
  auto req = std::make_shared<SecretReq>();
  {
    std::lock_guard<std::mutex> l(c->mu);
    if (c->aborted) {
      c->note = c->abort_reason;
      return ZTEE_E_CLOSED;
    }
    c->waiting = req;
  }
  bool queued = enqueue(c->data, new SecretTask(c->shared_from_this(), req, name));
  bool answered = false;
  {
    std::unique_lock<std::mutex> l(req->mu);
    if (queued) {
      answered = req->cv.wait_for(l, std::chrono::milliseconds(c->secret_timeout_ms), [&] { return req->done; });
    }
    req->done = true;  // a later answer is dropped
  }
  // done is set: no other thread writes req any more.
  {
    std::lock_guard<std::mutex> l(c->mu);
    c->waiting.reset();
    if (!queued) {
      c->note = "the JS thread is gone";
    } else if (!answered) {
      c->note = "the secret resolver did not answer for \"" + std::string(name) + "\" within " +
                std::to_string(c->secret_timeout_ms) + " ms";
    } else if (req->status != ZTEE_OK && req->status != ZTEE_E_NOT_FOUND) {
      c->note = req->error;
    }
  }
  if (!queued) return ZTEE_E_CLOSED;
  if (!answered) return ZTEE_E_TIMEOUT;
  if (req->status != ZTEE_OK) return req->status;
  ztee_status s = ztee_secret_value_set(out, req->value.data(), req->value.size());
  wipe(req->value);
  return s;
}

class Gate : public Napi::ObjectWrap<Gate> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Gate",
                       {InstanceMethod<&Gate::Call>("call"),
                        InstanceMethod<&Gate::Approve>("approve"),
                        InstanceMethod<&Gate::Deny>("deny"),
                        InstanceMethod<&Gate::Abort>("abort"),
                        InstanceMethod<&Gate::Close>("close"),
                        StaticMethod<&Gate::Create>("create")});
  }
  explicit Gate(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Gate>(info) {
    core_ = data_of(info.Env())->core;
    if (info.Length() < 1 || !info[0].IsExternal()) throw Napi::TypeError::New(info.Env(), "use Gate.create()");
    h_ = *info[0].As<Napi::External<std::shared_ptr<GateHandle>>>().Data();
  }
  // Collected without close(): freed off the JS thread (a call in flight
  // holds the wrapper, so none runs).
  ~Gate() override {
    if (h_) core_->free_later(h_, h_->release());
  }

 private:
  // create(runtime, {policy, audit, pool, sandbox, secretsDir,
  //        secretsEnvPrefix, approver: bool, secrets: bool, secretTimeoutMs})
  static Napi::Value Create(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    AddonData* d = data_of(env);
    if (info.Length() < 1 || !info[0].IsObject()) throw_invalid(env, "Gate.create needs a Runtime");
    ztee_runtime* rt = Runtime::Unwrap(info[0].As<Napi::Object>())->get(env);
    Napi::Object js = opts_arg(info, 1);
    ztee_gate_options o = ZTEE_GATE_OPTIONS_INIT;
    auto object_of = [&](const char* key, Napi::FunctionReference& ctor, const char* what) -> Napi::Object {
      Napi::Value v = js.Get(key);
      if (v.IsUndefined() || v.IsNull()) return Napi::Object();
      if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(ctor.Value())) {
        throw_invalid(env, std::string(key) + " must be " + what);
      }
      return v.As<Napi::Object>();
    };
    Napi::Object pol = object_of("policy", d->policy_ctor, "a Policy");
    Napi::Object aud = object_of("audit", d->audit_ctor, "an AuditLog");
    Napi::Object pool = object_of("pool", d->pool_ctor, "a Pool");
    if (!pol.IsEmpty()) o.policy = Policy::Unwrap(pol)->get(env);
    SandboxOpts sopts;
    Napi::Value sv = js.Get("sandbox");
    if (sv.IsObject()) {
      sopts.parse(sv.As<Napi::Object>(), false);
      o.sandbox = sopts.get();
    }
    std::optional<std::string> dir = opt_c_string(js, "secretsDir");
    std::optional<std::string> prefix = opt_c_string(js, "secretsEnvPrefix");
    o.secrets_dir = c_str(dir);
    o.secrets_env_prefix = c_str(prefix);
    o.dlp = js.Get("dlp").ToBoolean() ? 1 : 0;
    std::vector<std::string> block;
    std::vector<const char*> block_c;
    Napi::Value bv = js.Get("dlpBlock");
    if (!bv.IsUndefined() && !bv.IsNull()) {
      if (!bv.IsArray()) throw_invalid(env, "dlpBlock must be an array of detector names");
      Napi::Array a = bv.As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); ++i) {
        Napi::Value n = a.Get(i);
        if (!n.IsString()) throw_invalid(env, "dlpBlock must be an array of detector names");
        block.push_back(n.As<Napi::String>().Utf8Value());
      }
      for (const auto& b : block) block_c.push_back(b.c_str());
      o.dlp_block = block_c.empty() ? nullptr : block_c.data();
      o.dlp_block_count = block_c.size();
    }
    if (js.Get("approver").ToBoolean()) o.approver = gate_approver_cb;
    if (js.Get("secrets").ToBoolean()) o.resolver = gate_secret_cb;
    uint32_t secret_ms = static_cast<uint32_t>(opt_uint(js, "secretTimeoutMs"));
    // The audit log and pool are pinned while the gate takes its references.
    std::shared_ptr<AuditHandle> ah;
    std::shared_ptr<PoolHandle> ph;
    if (!aud.IsEmpty()) {
      ah = AuditLog::Unwrap(aud)->handle();
      o.audit = ah->enter();
      if (o.audit == nullptr) throw make_error(env, Failure{ZTEE_E_CLOSED, 0, "the audit log was closed"});
    }
    if (!pool.IsEmpty()) {
      ph = Pool::Unwrap(pool)->handle();
      o.pool = ph->enter();
      if (o.pool == nullptr) {
        if (ah) d->core->free_later(ah, ah->leave());
        throw make_error(env, Failure{ZTEE_E_CLOSED, 0, "the pool was closed"});
      }
    }
    ztee_gate* g = nullptr;
    ztee_status s = ztee_gate_create(rt, &o, &g);
    Failure f;
    if (s != ZTEE_OK) f = capture(s);
    if (ah) d->core->free_later(ah, ah->leave());
    if (ph) d->core->free_later(ph, ph->leave());
    if (s != ZTEE_OK) throw make_error(env, f);
    auto h = std::make_shared<GateHandle>(g);
    d->core->track(h);
    Napi::Object obj = d->gate_ctor.New({Napi::External<std::shared_ptr<GateHandle>>::New(env, &h)});
    Gate* w = Gate::Unwrap(obj);
    w->secret_timeout_ms_ = secret_ms != 0 ? secret_ms : 30000;
    if (!pool.IsEmpty()) w->pool_ = Napi::Persistent(pool);  // not collected (and closed) under the gate
    return obj;
  }

  // call(spec, {output(stream, Buffer), approver(token, json, ms),
  //      secret(name, done)}, Cancel) -> raw call result
  Napi::Value Call(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct CallJob : Job {
      std::shared_ptr<GateHandle> h;
      std::shared_ptr<Core> core;
      std::shared_ptr<GateCallCtx> ctx = std::make_shared<GateCallCtx>();
      ToolCallSpec spec;
      ztee_call_result* res = nullptr;
      ztee_gate* g = nullptr;      // entered by call() on the JS thread, left here
      bool out = false, err = false;
      Napi::ObjectReference gate;  // the wrapper (and its pool) outlive the call
      CallJob(Napi::Env env, Gate* g) : Job(env), h(g->h_), core(g->core_) {}
      ~CallJob() override { ztee_call_result_free(res); }
      void work() override {
        if (!core->track_call(ctx)) {
          failure_ = Failure{ZTEE_E_CLOSED, 0, "the process is exiting"};
        } else {
          {
            std::lock_guard<std::mutex> l(ctx->mu);
            ctx->gate = g;
          }
          ztee_tool_call* tc = spec.get();
          tc->cancel = ctx->out.cancel.get();
          if (ctx->out.on_output != nullptr) {
            // Only the streams with a callback: the others are collected.
            if (out) tc->on_stdout = on_stdout_cb;
            if (err) tc->on_stderr = on_stderr_cb;
            tc->user_data = &ctx->out;
          }
          t_call = ctx.get();
          ztee_status s = ztee_gate_call(g, tc, &res);
          t_call = nullptr;
          if (s != ZTEE_OK) failure_ = capture(s);
          {
            std::lock_guard<std::mutex> l(ctx->mu);
            ctx->gate = nullptr;
            if (s != ZTEE_OK && !ctx->note.empty()) failure_.message += " (" + ctx->note + ")";
          }
          core->untrack_call(ctx);
        }
        if (ztee_gate* p = h->leave()) {
          ztee_gate_free(p);
          core->untrack(h);
        }
      }
      void run(Napi::Env env) override {
        Napi::HandleScope scope(env);
        ctx->drop_refs(env);
        if (ctx->out.thrown != nullptr) {
          // An output callback threw: reject with its error.
          napi_value err = nullptr;
          napi_get_reference_value(env, ctx->out.thrown, &err);
          napi_delete_reference(env, ctx->out.thrown);
          ctx->out.thrown = nullptr;
          if (--data_->pending == 0) napi_unref_threadsafe_function(env, data_->tsfn);
          deferred_.Reject(err);
          return;
        }
        Job::run(env);
      }
      Napi::Value settle(Napi::Env env) override {
        Napi::Object o = Napi::Object::New(env);
        o.Set("ran", Napi::Boolean::New(env, res->ran != 0));
        o.Set("decision", decision_obj(env, res->tier, res->action, res->rule_index, res->rule, res->reason));
        o.Set("denial", Napi::String::New(env, res->denial));
        o.Set("approvedBy", Napi::String::New(env, res->approved_by));
        o.Set("sandboxId", Napi::String::New(env, res->sandbox_id));
        o.Set("blocked", Napi::Boolean::New(env, res->blocked != 0));
        o.Set("dlpFindings", Napi::Number::New(env, res->dlp_findings));
        o.Set("injectionAnomalies", Napi::Number::New(env, res->injection_anomalies));
        o.Set("exec", res->exec != nullptr ? Napi::Value(exec_result_obj(env, res->exec)) : env.Null());
        return o;
      }
    };
    auto* job = new CallJob(env, this);
    GateCallCtx& c = *job->ctx;
    try {
      job->spec.parse(env, opts_arg(info, 0), true);
      c.data = data_of(env);
      c.owner = h_.get();
      c.out.data = c.data;
      c.secret_timeout_ms = secret_timeout_ms_;
      if (info.Length() > 1 && info[1].IsObject()) {
        Napi::Object hooks = info[1].As<Napi::Object>();
        auto ref = [&](const char* key, napi_ref* out) {
          Napi::Value v = hooks.Get(key);
          if (v.IsFunction()) napi_create_reference(env, v, 1, out);
        };
        ref("output", &c.out.on_output);
        ref("approver", &c.approver);
        ref("secret", &c.secret);
        job->out = hooks.Get("stdout").ToBoolean();
        job->err = hooks.Get("stderr").ToBoolean();
      }
      if (info.Length() > 2 && info[2].IsObject()) {
        c.out.cancel = Cancel::Unwrap(info[2].As<Napi::Object>())->ptr();
      } else {
        c.out.cancel = new_cancel(env);  // a throwing output callback must end the command
      }
      job->gate = Napi::Persistent(info.This().As<Napi::Object>());
      // Pinned now: a close() right after this call waits for it.
      job->g = h_->enter();
      if (job->g == nullptr) throw make_error(env, Failure{ZTEE_E_CLOSED, 0, "the gate was closed"});
    } catch (...) {
      c.drop_refs(env);
      delete job;
      throw;
    }
    return Job::start(job);
  }

  Napi::Value answer(const Napi::CallbackInfo& info, bool approve) {
    Napi::Env env = info.Env();
    std::string token = c_string(env, info.Length() > 0 ? info[0] : env.Undefined(), "token");
    auto opt = [&](size_t i, const char* what) -> std::optional<std::string> {
      if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return std::nullopt;
      return c_string(env, info[i], what);
    };
    std::optional<std::string> reason, who;
    if (approve) {
      who = opt(1, "who");
    } else {
      reason = opt(1, "reason");
      who = opt(2, "who");
    }
    ztee_gate* g = h_->enter();
    if (g == nullptr) {
      // Closed, but a call still in flight on it may wait for this answer.
      bool found = false;
      ztee_status s = ZTEE_OK;
      Failure f;
      core_->each_call([&](GateCallCtx& c) {
        std::lock_guard<std::mutex> l(c.mu);
        if (found || c.owner != h_.get() || c.gate == nullptr ||
            std::find(c.tokens.begin(), c.tokens.end(), token) == c.tokens.end()) {
          return;
        }
        found = true;
        s = approve ? ztee_gate_approve(c.gate, token.c_str(), c_str(who))
                    : ztee_gate_deny(c.gate, token.c_str(), c_str(reason), c_str(who));
        if (s != ZTEE_OK) f = capture(s);
      });
      if (!found) throw make_error(env, Failure{ZTEE_E_CLOSED, 0, "the gate was closed"});
      if (s != ZTEE_OK) throw make_error(env, f);
      return env.Undefined();
    }
    ztee_status s = approve ? ztee_gate_approve(g, token.c_str(), c_str(who))
                            : ztee_gate_deny(g, token.c_str(), c_str(reason), c_str(who));
    Failure f;
    if (s != ZTEE_OK) f = capture(s);
    core_->free_later(h_, h_->leave());
    if (s != ZTEE_OK) throw make_error(env, f);
    return env.Undefined();
  }
  Napi::Value Approve(const Napi::CallbackInfo& info) { return answer(info, true); }
  Napi::Value Deny(const Napi::CallbackInfo& info) { return answer(info, false); }

  // abort(Cancel, reason): ends the call started with this Cancel, wherever
  // it waits (approval, secret lookup, command).
  void Abort(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw_invalid(env, "abort needs the call's Cancel");
    ztee_cancel* target = Cancel::Unwrap(info[0].As<Napi::Object>())->ptr().get();
    std::string reason = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value()
                                                                 : "the call was aborted";
    core_->each_call([&](GateCallCtx& c) {
      if (c.out.cancel.get() == target) abort_call(c, reason, "caller");
    });
  }

  // No new calls; calls in flight finish, then the gate is freed (off the
  // JS thread: freeing it may close its pool).
  void Close(const Napi::CallbackInfo&) { core_->free_later(h_, h_->release()); }

  std::shared_ptr<Core> core_;
  std::shared_ptr<GateHandle> h_;
  uint32_t secret_timeout_ms_ = 30000;
  Napi::ObjectReference pool_;
};

}  // namespace

// ---- module ------------------------------------------------------------------------------

namespace {

Napi::Value Version(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), ztee_version()); }
Napi::Value HasFeature(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw_invalid(info.Env(), "feature must be a string");
  return Napi::Boolean::New(info.Env(), ztee_has_feature(info[0].As<Napi::String>().Utf8Value().c_str()) != 0);
}
Napi::Value StatusName(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), ztee_status_name(info[0].ToNumber().Int32Value()));
}
void SetErrorFactory(const Napi::CallbackInfo& info) {
  data_of(info.Env())->error_factory = Napi::Persistent(info[0].As<Napi::Function>());
}

// Called from process.on('exit') (Node runs no env cleanup hook when the main
// thread exits) and by the env cleanup hook (worker threads).
void Shutdown(const Napi::CallbackInfo& info) { data_of(info.Env())->core->shutdown(); }

void cleanup(void* arg) {
  auto* d = static_cast<AddonData*>(arg);
  d->core->shutdown();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* d = new AddonData;
  env.SetInstanceData<AddonData>(d);  // deleted with the env, after cleanup()
  napi_add_env_cleanup_hook(env, cleanup, d);
  napi_status s = napi_create_threadsafe_function(env, nullptr, nullptr, Napi::String::New(env, "ztee"), 0, 1,
                                                  nullptr, nullptr, nullptr, call_task, &d->tsfn);
  if (s != napi_ok) throw Napi::Error::New(env, "ztee: cannot create a thread-safe function");
  napi_unref_threadsafe_function(env, d->tsfn);

  Napi::Function rt = Runtime::Init(env);
  Napi::Function sb = Sandbox::Init(env);
  Napi::Function pool = Pool::Init(env);
  d->runtime_ctor = Napi::Persistent(rt);
  d->sandbox_ctor = Napi::Persistent(sb);
  d->pool_ctor = Napi::Persistent(pool);
  exports.Set("Runtime", rt);
  exports.Set("Sandbox", sb);
  exports.Set("Pool", pool);
  exports.Set("Cancel", Cancel::Init(env));
  exports.Set("Input", Input::Init(env));
  exports.Set("INPUT_MAX_BUFFERED", Napi::Number::New(env, static_cast<double>(ZTEE_INPUT_MAX_BUFFERED)));
  Napi::Function policy = Policy::Init(env);
  Napi::Function audit = AuditLog::Init(env);
  Napi::Function gate = Gate::Init(env);
  d->policy_ctor = Napi::Persistent(policy);
  d->audit_ctor = Napi::Persistent(audit);
  d->gate_ctor = Napi::Persistent(gate);
  exports.Set("Policy", policy);
  exports.Set("AuditLog", audit);
  exports.Set("Gate", gate);
  exports.Set("verifyAuditLog", Napi::Function::New<VerifyAuditLog>(env, "verifyAuditLog"));
  exports.Set("version", Napi::Function::New<Version>(env, "version"));
  exports.Set("hasFeature", Napi::Function::New<HasFeature>(env, "hasFeature"));
  exports.Set("statusName", Napi::Function::New<StatusName>(env, "statusName"));
  exports.Set("shutdown", Napi::Function::New<Shutdown>(env, "shutdown"));
  exports.Set("setErrorFactory", Napi::Function::New<SetErrorFactory>(env, "setErrorFactory"));
  return exports;
}

}  // namespace

NODE_API_MODULE(ztee, Init)
