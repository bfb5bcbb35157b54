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
    {
      std::lock_guard<std::mutex> l(mu_);
      sbs.assign(sandboxes_.begin(), sandboxes_.end());
      pools.assign(pools_.begin(), pools_.end());
      rts.assign(runtimes_.begin(), runtimes_.end());
      sandboxes_.clear();
      pools_.clear();
      runtimes_.clear();
    }
    for (auto& s : sbs) ztee_sandbox_free(force(s));
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
};

template <>
std::set<std::shared_ptr<SbHandle>>& Core::registry<SbHandle>() { return sandboxes_; }
template <>
std::set<std::shared_ptr<PoolHandle>>& Core::registry<PoolHandle>() { return pools_; }
template <>
std::set<std::shared_ptr<RtHandle>>& Core::registry<RtHandle>() { return runtimes_; }

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

// Queues a task for the JS thread from any thread. Never blocks.
void enqueue(AddonData* d, Task* t) {
  if (napi_call_threadsafe_function(d->tsfn, t, napi_tsfn_nonblocking) != napi_ok) delete t;
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

// Sandbox options, owned (strings outlive the JS call).
struct SandboxOpts {
  std::optional<std::string> image_dir, template_dir, dns;
  std::vector<std::string> allow;
  std::vector<const char*> allow_c;
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
  }
  const ztee_sandbox_options* get() {
    allow_c = c_strs(allow);
    o.image_dir = c_str(image_dir);
    o.template_dir = c_str(template_dir);
    o.net_dns = c_str(dns);
    o.net_allow = allow_c.empty() ? nullptr : allow_c.data();
    o.net_allow_count = allow_c.size();
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
                        InstanceAccessor<&Cancel::Triggered>("triggered")});
  }
  explicit Cancel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Cancel>(info), c_(new_cancel(info.Env())) {}
  const CancelPtr& ptr() const { return c_; }

 private:
  void Trigger(const Napi::CallbackInfo&) { ztee_cancel_trigger(c_.get()); }
  Napi::Value Triggered(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), ztee_cancel_triggered(c_.get()) != 0);
  }
  CancelPtr c_;  // shared with the execs using it: freed after they returned
};

// ---- Runtime -----------------------------------------------------------------------

struct RuntimeOpts {
  std::optional<std::string> state_dir, image_dir, backend, qemu, accel;
  bool jail = true;
  void parse(Napi::Object js) {
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

  // Wraps a new handle: tracked before the JS object exists, so the env
  // cleanup hook destroys it even if the completion never runs.
  static std::shared_ptr<SbHandle> adopt(Core& core, ztee_sandbox* sb) {
    auto h = std::make_shared<SbHandle>(sb);
    core.track(h);
    if (core.stopping()) {
      // Shutting down: the cleanup hook may have passed this one by.
      core.untrack(h);
      ztee_sandbox_free(h->release());
      return nullptr;
    }
    return h;
  }
  static Napi::Value wrap(Napi::Env env, std::shared_ptr<SbHandle>& h) {
    return data_of(env)->sandbox_ctor.New({Napi::External<std::shared_ptr<SbHandle>>::New(env, &h)});
  }

 private:
  // A call on the sandbox's handle from a worker thread.
  struct SbJob : Job {
    std::shared_ptr<SbHandle> h;
    std::shared_ptr<Core> core;
    SbJob(Napi::Env env, Sandbox* sb) : Job(env), h(sb->h_), core(sb->core_) {}
    virtual ztee_status call(ztee_sandbox* sb) = 0;
    void work() override {
      ztee_sandbox* sb = h->enter();
      if (sb == nullptr) {
        failure_ = closed_failure();
        return;
      }
      ztee_status s = call(sb);
      if (s != ZTEE_OK) failure_ = capture(s);
      done(sb);
      if (ztee_sandbox* p = h->leave()) {
        ztee_sandbox_free(p);
        core->untrack(h);
      }
    }
    virtual void done(ztee_sandbox*) {}
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
        h = Sandbox::adopt(*core, sb);
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
  //      onOutput(stream 1|2, Buffer) | undefined, Cancel | undefined)
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
        Napi::Object r = Napi::Object::New(env);
        r.Set("exitCode", Napi::Number::New(env, res->exit_code));
        r.Set("signal", Napi::Number::New(env, res->signal));
        r.Set("timedOut", Napi::Boolean::New(env, res->timed_out != 0));
        r.Set("truncated", Napi::Boolean::New(env, res->truncated != 0));
        r.Set("cancelled", Napi::Boolean::New(env, res->cancelled != 0));
        r.Set("durationMs", Napi::Number::New(env, static_cast<double>(res->duration_us) / 1000.0));
        r.Set("stdout", Napi::Buffer<char>::Copy(env, res->stdout_data, res->stdout_len));
        r.Set("stderr", Napi::Buffer<char>::Copy(env, res->stderr_data, res->stderr_len));
        return r;
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

 private:
  // A call on the pool's handle from a worker thread.
  struct PoolJob : Job {
    std::shared_ptr<PoolHandle> h;
    std::shared_ptr<Core> core;
    PoolJob(Napi::Env env, Pool* p) : Job(env), h(p->h_), core(p->core_) {}
    virtual void call(ztee_pool* p) = 0;
    void work() override {
      ztee_pool* p = h->enter();
      if (p == nullptr) {
        failure_ = Failure{ZTEE_E_CLOSED, 0, "the pool was closed"};
        return;
      }
      call(p);
      if (ztee_pool* q = h->leave()) {
        free_pool(q);
        core->untrack(h);
      }
    }
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
        h = std::make_shared<PoolHandle>(p);
        core->track(h);
        if (core->stopping()) {
          core->untrack(h);
          free_pool(h->release());
          h.reset();
          failure_ = Failure{ZTEE_E_CLOSED, 0, "the process is exiting"};
        }
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
      void call(ztee_pool* p) override {
        ztee_sandbox* s = nullptr;
        ztee_status st = ztee_pool_lease(p, ms, &s);
        if (st != ZTEE_OK) {
          failure_ = capture(st);
          return;
        }
        sb = Sandbox::adopt(*core, s);
        if (!sb) failure_ = Failure{ZTEE_E_CLOSED, 0, "the process is exiting"};
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
      void call(ztee_pool* p) override { ztee_pool_close(p); }
    };
    return Job::start(new J(info.Env(), this));
  }

  std::shared_ptr<Core> core_;
  std::shared_ptr<PoolHandle> h_;
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
  exports.Set("version", Napi::Function::New<Version>(env, "version"));
  exports.Set("hasFeature", Napi::Function::New<HasFeature>(env, "hasFeature"));
  exports.Set("statusName", Napi::Function::New<StatusName>(env, "statusName"));
  exports.Set("shutdown", Napi::Function::New<Shutdown>(env, "shutdown"));
  exports.Set("setErrorFactory", Napi::Function::New<SetErrorFactory>(env, "setErrorFactory"));
  return exports;
}

}  // namespace

NODE_API_MODULE(ztee, Init)
