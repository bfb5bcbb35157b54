// `ztee serve`: E2B's control plane and envd on one listener.
//
// Threads: the HTTP loop (a detail::Loop) owns all server state (sandboxes,
// processes, streams); blocking libztee calls (boots, file I/O, destroy) run
// on a few worker threads and post their results back; exec output arrives
// on the Runtime's loop thread and is posted to the HTTP loop.
#include "serve/serve.hpp"

#include <ztee/ztee.hpp>

#include <openssl/crypto.h>
#include <simdjson.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <future>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "serve/exec_api.hpp"
#include "serve/guard.hpp"
#include "serve/metrics.hpp"
#include "serve/cluster.hpp"
#include "serve/util.hpp"

namespace ztee::serve {

namespace {

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::object;

// The envd version the SDK is told: >= 0.4.0 (no default "user"), >= 0.5.2
// (the SDK sends closeStdin), 0.5.7 (octet-stream
// uploads when asked for), < 0.6.2 (the SDK itself refuses file metadata and
// watch-entry options with a clear TemplateError).
constexpr const char* kEnvdVersion = "0.5.7";
constexpr size_t kReplayBytes = 1u << 20;  // output kept per command for commands.connect
constexpr uint64_t kOutputCap = 256ull << 20;
constexpr size_t kMaxJsonBody = 1u << 20;  // control-plane and RPC bodies
constexpr int64_t kMaxTimeoutS = 86400;
constexpr size_t kMaxProcs = 256;  // running commands per sandbox

// E2B's default account: "user" (uid/gid 1000, home /home/user), added to a
// sandbox whose image lacks it (in a pool: once, in its template).
constexpr const char* kDefaultUser = "user";
constexpr const char* kProvisionUser =
    "grep -q '^user:' /etc/passwd || { echo 'user:*:1000:1000::/home/user:/bin/bash' >> /etc/passwd && "
    "{ grep -q '^user:' /etc/group || echo 'user:*:1000:' >> /etc/group; }; } && "
    "h=$(awk -F: '$1==\"user\"{print $6}' /etc/passwd) && mkdir -p \"$h\" && chown user: \"$h\"";

class Workers {
 public:
  explicit Workers(uint32_t n) {
    for (uint32_t i = 0; i < std::max(1u, n); ++i) threads_.emplace_back([this] { run(); });
  }
  ~Workers() { stop(); }
  void submit(std::function<void()> fn) {
    {
      std::lock_guard lk(mu_);
      q_.push_back(std::move(fn));
    }
    cv_.notify_one();
  }
  void stop() {
    {
      std::lock_guard lk(mu_);
      if (stop_) return;
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock lk(mu_);
        cv_.wait(lk, [&] { return stop_ || !q_.empty(); });
        if (q_.empty()) return;
        fn = std::move(q_.front());
        q_.pop_front();
      }
      fn();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> q_;
  std::vector<std::thread> threads_;
  bool stop_ = false;
};

struct Sub {
  std::shared_ptr<HttpExchange> ex;
  uint64_t ka_timer = 0;
  uint32_t ka_ms = 0;
  bool closed = false;
};

struct Proc {
  uint32_t pid = 0;
  std::string cmd, cwd, tag;
  std::vector<std::string> args;
  std::map<std::string, std::string> envs;
  ExecCancel cancel;
  ExecInput input;  // started with stdin: true
  std::deque<std::string> replay;  // encoded data events
  size_t replay_bytes = 0;
  std::vector<std::shared_ptr<Sub>> subs;
  bool ended = false;
  std::function<void(const Result<ExecResult>&)> on_end;  // with a policy: records the outcome
  // Stdin the command has no room for yet, in arrival order (SendInput,
  // StreamInput, CloseStdin): each call is answered once all of its bytes
  // went in, as envd's SendInput returns once the command's pipe took them.
  struct PendingInput {
    std::string data;  // what is left of it
    bool close = false;  // CloseStdin, after what comes before
    // Called once: no code for success, else the Connect code and message.
    // Empty for a StreamInput message other than the last.
    std::function<void(std::string_view code, std::string_view message)> done;
  };
  std::deque<PendingInput> pending_input;
  size_t pending_bytes = 0;
  uint64_t input_timer = 0;
  uint64_t input_retry_ms = 0;
};

struct Box {
  std::string id, template_id, key, token;
  Sandbox sb;
  std::map<std::string, std::string> metadata, envs;
  int64_t started_ms = 0, end_ms = 0;
  uint64_t timer = 0;
  std::map<uint32_t, std::shared_ptr<Proc>> procs;
  uint32_t next_pid = 1;
  bool dead = false;
};

struct Template {
  std::string name;
  std::string dir;        // image dir or snapshot template dir
  bool snapshot = false;  // dir is a snapshot template
};

std::string err_json(int code, std::string_view message) {
  return fmt::format("{{\"code\":{},\"message\":{}}}", code, json_str(message));
}

// Connect's HTTP status for an error code.
int connect_status(std::string_view code) {
  if (code == "invalid_argument" || code == "failed_precondition" || code == "out_of_range") return 400;
  if (code == "unauthenticated") return 401;
  if (code == "permission_denied") return 403;
  if (code == "not_found") return 404;
  if (code == "already_exists" || code == "aborted") return 409;
  if (code == "resource_exhausted") return 429;
  if (code == "unimplemented") return 501;
  if (code == "unavailable") return 503;
  if (code == "deadline_exceeded") return 504;
  return 500;
}

const char* rpc_code(const Error& e) {
  switch (e.code) {
    case Errc::kNotFound: return "not_found";
    case Errc::kInvalidArgument: return "invalid_argument";
    case Errc::kPermission: return "permission_denied";
    case Errc::kTimeout: return "deadline_exceeded";
    case Errc::kClosed:
    case Errc::kSandboxFailed: return "unavailable";
    case Errc::kUnsupported: return "unimplemented";
    case Errc::kGuest:
      if (e.sys_errno == EEXIST) return "already_exists";
      if (e.sys_errno == EISDIR || e.sys_errno == ENOTEMPTY || e.sys_errno == ENOTDIR) return "invalid_argument";
      return "unknown";
    default: return "internal";
  }
}

int http_status_for(const Error& e) {
  switch (e.code) {
    case Errc::kNotFound: return 404;
    case Errc::kInvalidArgument: return 400;
    case Errc::kPermission: return 403;
    case Errc::kTimeout: return 504;
    case Errc::kClosed:
    case Errc::kSandboxFailed: return 502;
    case Errc::kGuest:
      if (e.sys_errno == EISDIR || e.sys_errno == ENOTDIR) return 400;
      if (e.sys_errno == ENOSPC) return 507;
      return 500;
    default: return 500;
  }
}

std::string envelope(uint8_t flags, std::string_view json) {
  std::string out(5, '\0');
  out[0] = static_cast<char>(flags);
  uint32_t n = static_cast<uint32_t>(json.size());
  out[1] = static_cast<char>(n >> 24);
  out[2] = static_cast<char>(n >> 16);
  out[3] = static_cast<char>(n >> 8);
  out[4] = static_cast<char>(n);
  out.append(json);
  return out;
}

std::string end_error_json(std::string_view code, std::string_view message) {
  return fmt::format("{{\"error\":{{\"code\":\"{}\",\"message\":{}}}}}", code, json_str(message));
}

std::string base_name(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  size_t slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

std::string parent_dir(std::string_view path) {
  size_t slash = path.rfind('/');
  if (slash == std::string_view::npos || slash == 0) return "/";
  return std::string(path.substr(0, slash));
}

// E2B resolves relative paths (and "~") against the user's home; here the
// default user is root.
std::string home_of(std::string_view user) {
  return user == "root" ? "/root" : "/home/" + std::string(user.empty() ? kDefaultUser : user);
}

std::string resolve_path(std::string_view p, std::string_view user) {
  std::string home = home_of(user);
  if (p.empty() || p == "~") return home;
  if (p.substr(0, 2) == "~/") return home + std::string(p.substr(1));
  if (p.front() == '/') return std::string(p);
  return home + "/" + std::string(p);
}

std::string permissions_string(FileType t, uint32_t mode) {
  std::string s;
  s += t == FileType::kDir ? 'd' : t == FileType::kSymlink ? 'L' : '-';
  const char* rwx = "rwxrwxrwx";
  for (int i = 0; i < 9; ++i) s += (mode & (0400u >> i)) ? rwx[i] : '-';
  return s;
}

const char* file_type_name(FileType t) {
  switch (t) {
    case FileType::kFile: return "FILE_TYPE_FILE";
    case FileType::kDir: return "FILE_TYPE_DIRECTORY";
    case FileType::kSymlink: return "FILE_TYPE_SYMLINK";
    default: return "FILE_TYPE_UNSPECIFIED";
  }
}

std::string entry_json(const FileInfo& fi, const std::string& path) {
  return fmt::format(
      "{{\"name\":{},\"type\":\"{}\",\"path\":{},\"size\":\"{}\",\"mode\":{},\"permissions\":\"{}\",\"owner\":\"\","
      "\"group\":\"\",\"modifiedTime\":\"{}\"}}",
      json_str(base_name(path)), file_type_name(fi.type), json_str(path), fi.size, fi.mode,
      permissions_string(fi.type, fi.mode), rfc3339(fi.mtime_ns / 1000000));
}

// A string -> string JSON object (metadata, envVars, envs). False when the
// value is not such an object.
bool string_map(element e, std::map<std::string, std::string>& out) {
  if (e.is_null()) return true;
  object o;
  if (e.get(o) != simdjson::SUCCESS) return false;
  for (auto field : o) {
    std::string_view v;
    if (field.value.get(v) != simdjson::SUCCESS) return false;
    out[std::string(field.key)] = std::string(v);
  }
  return true;
}

bool field(object o, std::string_view k, element& out) {
  return o.at_key(k).get(out) == simdjson::SUCCESS && !out.is_null();
}

// Protobuf JSON allows integers as numbers or strings.
bool pb_uint(element e, uint64_t& out) {
  if (e.get(out) == simdjson::SUCCESS) return true;
  std::string_view s;
  if (e.get(s) != simdjson::SUCCESS || s.empty() || s.size() > 19) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  out = v;
  return true;
}

}  // namespace

struct Server::Impl {
  ServeOptions opts;
  std::unique_ptr<detail::Loop> loop;  // first member: destroyed last
  Runtime rt;
  Pool pool;
  std::unique_ptr<Workers> workers;
  Metrics metrics;
  std::unique_ptr<ExecApi> exec_api;  // POST /v1/exec
  std::unique_ptr<HttpServer> http;
  std::unique_ptr<CallGuard> guard;  // --policy; null: nothing is classified
  std::map<std::string, ApiKey> keys;  // by sha256
  std::map<std::string, Template> templates;
  std::vector<PeerUrl> peers;  // asked by list (--peer)
  std::map<std::string, std::shared_ptr<Box>> boxes;
  std::map<std::string, uint32_t> pending_by_key;
  uint32_t pending = 0;
  simdjson::dom::parser json;
  bool shut = false;
  // Cleared on the loop thread at the end of shutdown(): what was posted
  // after that (and runs from ~Loop) must not touch this object.
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);

  // Runs fn on the loop thread, unless the server has shut down by then. Any thread.
  void post(std::function<void()> fn) {
    loop->post([a = alive, fn = std::move(fn)] {
      if (*a) fn();
    });
  }

  void log(std::string_view line) {
    if (opts.log) opts.log(line);
    else fmt::print(stderr, "ztee serve: {}\n", line);
  }

  template <class T>
  void offload(std::function<T()> work, std::function<void(T)> then) {
    workers->submit([this, work = std::move(work), then = std::move(then)]() mutable {
      auto r = std::make_shared<T>(work());
      post([r, then = std::move(then)]() mutable { then(std::move(*r)); });
    });
  }

  // ---------------------------------------------------------------- routing

  void handle(HttpRequest& req, std::shared_ptr<HttpExchange> ex) {
    auto t0 = std::chrono::steady_clock::now();
    std::string sandbox_id;
    if (auto* h = req.header("e2b-sandbox-id")) {
      sandbox_id = *h;
    } else if (auto* host = req.header("host")) {
      // "<port>-<sandbox id>.<domain>", as the SDK addresses envd without E2B_SANDBOX_URL.
      size_t dash = host->find('-'), dot = host->find('.');
      if (dash != std::string::npos && dot != std::string::npos && dash < dot && dash > 0 &&
          host->substr(0, dash).find_first_not_of("0123456789") == std::string::npos)
        sandbox_id = host->substr(dash + 1, dot - dash - 1);
    }
    RouteClass rc = !sandbox_id.empty()
                        ? (req.path == "/process.Process/Start" || req.path == "/process.Process/Connect" ? RouteClass::kEnvdStream
                                                                                                          : RouteClass::kEnvd)
                    : req.path == "/health" || req.path == "/healthz" ? RouteClass::kHealth
                    : req.path == "/metrics"                          ? RouteClass::kMetrics
                    : req.path == "/v1/exec"                          ? RouteClass::kExec
                                                                      : RouteClass::kControl;
    ex->on_finish([this, a = alive, rc, t0](int status) {
      if (*a)
        metrics.request(rc, status, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    });
    if (!sandbox_id.empty()) return envd(req, std::move(ex), sandbox_id);
    control(req, std::move(ex));
  }

  // ---------------------------------------------------------- control plane

  const ApiKey* authenticate(const HttpRequest& req, std::shared_ptr<HttpExchange>& ex) {
    const std::string* k = req.header("x-api-key");
    if (!k || k->empty()) {
      ex->respond(401, "application/json",
                  err_json(401, "missing X-API-Key header: set E2B_API_KEY to a key from the server's key file"));
      return nullptr;
    }
    if (!valid_key_format(*k)) {
      ex->respond(401, "application/json", err_json(401, "invalid API key: it must be e2b_ followed by 40 hex digits"));
      return nullptr;
    }
    auto it = keys.find(sha256_hex_of(*k));
    if (it == keys.end()) {
      ex->respond(401, "application/json", err_json(401, "invalid API key: not in the server's key file"));
      return nullptr;
    }
    return &it->second;
  }

  // Parses a JSON object body into out. An empty body is allowed (present =
  // false) when allow_empty. Answers 400/413 itself and returns false.
  bool parse_body(const HttpRequest& req, std::shared_ptr<HttpExchange>& ex, object& out, bool& present,
                  bool allow_empty) {
    present = false;
    if (req.body.empty() && allow_empty) return true;
    if (req.body.size() > kMaxJsonBody) {
      ex->respond(413, "application/json", err_json(413, fmt::format("JSON body over {} bytes", kMaxJsonBody)));
      return false;
    }
    auto r = json.parse(req.body.data(), req.body.size());
    if (r.error() != simdjson::SUCCESS || r.value_unsafe().get(out) != simdjson::SUCCESS) {
      ex->respond(400, "application/json",
                  err_json(400, fmt::format("malformed JSON body: {}",
                                            r.error() != simdjson::SUCCESS ? simdjson::error_message(r.error())
                                                                           : "expected an object")));
      return false;
    }
    present = true;
    return true;
  }

  std::shared_ptr<Box> owned_box(const std::string& id, const ApiKey& key) {
    auto it = boxes.find(id);
    if (it == boxes.end() || it->second->key != key.sha256) return nullptr;
    return it->second;
  }

  void control(HttpRequest& req, std::shared_ptr<HttpExchange> ex) {
    const std::string& m = req.method;
    std::string_view p = req.path;
    if (m == "GET" && (p == "/health" || p == "/healthz")) {
      ex->respond(200, "application/json", R"({"status":"ok"})");
      return;
    }
    if (m == "GET" && p == "/metrics" && !opts.metrics_auth) return serve_metrics(ex);
    const ApiKey* key = authenticate(req, ex);
    if (!key) return;
    if (p == "/metrics" && m == "GET") return serve_metrics(ex);
    if (p == "/v1/exec") return exec_api->handle(req, ex, *key);
    std::vector<std::string> seg;
    for (size_t i = 1; i <= p.size();) {
      size_t s = p.find('/', i);
      if (s == std::string_view::npos) s = p.size();
      seg.emplace_back(p.substr(i, s - i));
      i = s + 1;
    }
    bool v2 = !seg.empty() && seg[0] == "v2";
    if (v2) seg.erase(seg.begin());
    if (seg.empty() || seg[0] != "sandboxes") return not_found_route(req, ex);
    if (seg.size() == 1) {
      if (m == "POST") return create(req, ex, *key);
      if (m == "GET") return list(req, ex, *key, v2);
      return not_found_route(req, ex);
    }
    auto box = owned_box(seg[1], *key);
    auto missing = [&] { ex->respond(404, "application/json", err_json(404, not_found_message(seg[1]))); };
    if (seg.size() == 2) {
      if (m == "GET") {
        if (!box) return missing();
        ex->respond(200, "application/json", sandbox_json(*box, true));
        return;
      }
      if (m == "DELETE") {
        if (!box) return missing();
        kill_box(box, "killed by the API", [ex](Result<void> r) {
          if (!r) ex->respond(500, "application/json", err_json(500, r.error().message));
          else ex->respond(204, "", "");
        });
        return;
      }
      return not_found_route(req, ex);
    }
    if (seg.size() == 3 && m == "POST") {
      const std::string& action = seg[2];
      if (action == "timeout" || action == "refreshes" || action == "connect" || action == "resume") {
        object o;
        bool present = false;
        if (!parse_body(req, ex, o, present, action != "timeout")) return;
        if (!box) return missing();
        int64_t secs = -1;
        element t;
        if (present) {
          const char* name = action == "refreshes" ? "duration" : "timeout";
          if (field(o, name, t) && (t.get(secs) != simdjson::SUCCESS || secs < 0 || secs > kMaxTimeoutS)) {
            ex->respond(400, "application/json",
                        err_json(400, fmt::format("{} must be an integer 0..{} (seconds)", name, kMaxTimeoutS)));
            return;
          }
        }
        if (action == "timeout") {
          if (secs < 0) {
            ex->respond(400, "application/json", err_json(400, "timeout (seconds) is required"));
            return;
          }
          set_end(box, now_unix_ms() + secs * 1000);
          ex->respond(204, "", "");
          return;
        }
        if (secs >= 0) set_end(box, std::max(box->end_ms, now_unix_ms() + secs * 1000));
        if (action == "refreshes") {
          ex->respond(204, "", "");
          return;
        }
        ex->respond(200, "application/json", new_sandbox_json(*box));
        return;
      }
      if (action == "pause" || action == "snapshots" || action == "fork") {
        ex->respond(501, "application/json",
                    err_json(501, fmt::format("{} is not supported by ztee serve: sandboxes cannot be paused or forked "
                                              "(they run until killed or their timeout)",
                                              action)));
        return;
      }
    }
    not_found_route(req, ex);
  }

  void serve_metrics(std::shared_ptr<HttpExchange>& ex) {
    Metrics::Gauges g;
    g.sandboxes = boxes.size();
    g.exec_sandboxes = exec_api->sandboxes();
    g.max_sandboxes = opts.max_sandboxes;
    for (auto& [_, b] : boxes) g.commands += b->procs.size();
    g.connections = http->connections();
    g.has_pool = static_cast<bool>(pool);
    g.pool_target = opts.pool;
    if (pool) g.pool = pool.stats();
    ex->respond(200, "text/plain; version=0.0.4; charset=utf-8", metrics.render(g));
  }

  // Takes one of the key's sandbox slots (and one of the server's), or
  // answers 429 with Retry-After and returns false.
  bool admit(const ApiKey& key, HttpExchange& ex) {
    uint32_t live = 0;
    for (auto& [_, bx] : boxes)
      if (bx->key == key.sha256) ++live;
    live += pending_by_key[key.sha256];
    if (live >= key.max_sandboxes || boxes.size() + pending >= opts.max_sandboxes) {
      bool per_key = live >= key.max_sandboxes;
      ex.respond(429, "application/json",
                 err_json(429, per_key ? fmt::format("this API key has {} sandboxes running, its limit: kill one first", live)
                                       : fmt::format("the server runs its maximum of {} sandboxes: try again later",
                                                     opts.max_sandboxes)),
                 {{"Retry-After", "5"}});
      return false;
    }
    ++pending;
    ++pending_by_key[key.sha256];
    return true;
  }
  void release(const std::string& key_hash) {
    --pending;
    --pending_by_key[key_hash];
  }

  // A function (run on a worker thread) that starts a sandbox of tp: a
  // lease from the pool, or a boot / clone with the account `user` added.
  std::function<Result<Sandbox>()> starter(const Template& tp) {
    bool use_pool = static_cast<bool>(pool) && tp.name == "base";
    SandboxOptions so;
    so.memory_mib = opts.memory_mib;
    if (tp.snapshot) so.template_dir = tp.dir;
    else so.image_dir = tp.dir;
    SandboxSource src = use_pool ? SandboxSource::kPool : tp.snapshot ? SandboxSource::kClone : SandboxSource::kBoot;
    return [use_pool, so, src, rt_copy = rt, pool_copy = pool, m = &metrics]() mutable -> Result<Sandbox> {
      auto sb = [&]() -> Result<Sandbox> {
        if (use_pool) return pool_copy.lease(120000);  // provisioned by the pool's warm-up
        auto sb = rt_copy.create_sandbox(so);
        if (!sb) return sb;
        auto r = sb->run(kProvisionUser, 30000);
        if (!r || r->exit_code != 0) {
          std::string why = !r ? r.error().message : r->stderr_data;
          (void)sb->destroy();
          return make_error(Errc::kSandboxFailed, "could not add the account `user` to the sandbox: " + why);
        }
        return sb;
      }();
      if (sb) m->sandbox_started(src);
      else m->sandbox_start_failed();
      return sb;
    };
  }

  void not_found_route(const HttpRequest& req, std::shared_ptr<HttpExchange>& ex) {
    ex->respond(404, "application/json",
                err_json(404, fmt::format("{} {} is not an endpoint of ztee serve (it serves /sandboxes, /v2/sandboxes "
                                          "and their timeout, connect and refreshes actions, /v1/exec, /metrics "
                                          "and /healthz)",
                                          req.method, req.path)));
  }

  std::string new_sandbox_json(const Box& b) {
    return fmt::format(
        "{{\"templateID\":{},\"sandboxID\":{},\"clientID\":\"ztee\",\"envdVersion\":\"{}\",\"envdAccessToken\":\"{}\","
        "\"trafficAccessToken\":null,\"domain\":null}}",
        json_str(b.template_id), json_str(b.id), kEnvdVersion, b.token);
  }

  std::string sandbox_json(const Box& b, bool detail) {
    std::string meta = "{";
    for (auto& [k, v] : b.metadata) {
      if (meta.size() > 1) meta += ',';
      meta += json_str(k) + ":" + json_str(v);
    }
    meta += "}";
    std::string s = fmt::format(
        "{{\"templateID\":{},\"alias\":{},\"sandboxID\":{},\"clientID\":\"ztee\",\"startedAt\":\"{}\",\"endAt\":\"{}\","
        "\"cpuCount\":1,\"memoryMB\":{},\"diskSizeMB\":0,\"metadata\":{},\"state\":\"running\",\"envdVersion\":\"{}\","
        "\"volumeMounts\":[]",
        json_str(b.template_id), json_str(b.template_id), json_str(b.id), rfc3339(b.started_ms), rfc3339(b.end_ms),
        opts.memory_mib, meta, kEnvdVersion);
    if (detail)
      s += fmt::format(",\"envdAccessToken\":\"{}\",\"allowInternetAccess\":false,\"domain\":null", b.token);
    s += "}";
    return s;
  }

  void set_end(const std::shared_ptr<Box>& b, int64_t end_ms) {
    b->end_ms = end_ms;
    if (b->timer) loop->cancel_timer(b->timer);
    int64_t wait = std::max<int64_t>(0, end_ms - now_unix_ms());
    std::weak_ptr<Box> w = b;
    b->timer = loop->add_timer(static_cast<uint64_t>(wait), [this, w] {
      auto box = w.lock();
      if (!box || box->dead) return;
      box->timer = 0;
      log(fmt::format("sandbox {}: timeout reached, killing it", box->id));
      kill_box(box, "its timeout passed", [this, id = box->id](Result<void> r) {
        if (!r) log(fmt::format("sandbox {}: teardown failed: {}", id, r.error().message));
      });
    });
  }

  void create(HttpRequest& req, std::shared_ptr<HttpExchange>& ex, const ApiKey& key) {
    object o;
    bool present = false;
    if (!parse_body(req, ex, o, present, false)) return;
    auto bad = [&](std::string msg) { ex->respond(400, "application/json", err_json(400, msg)); };
    element e;
    std::string_view tmpl = "base";
    if (field(o, "templateID", e) && e.get(tmpl) != simdjson::SUCCESS) return bad("templateID must be a string");
    int64_t timeout_s = 15;
    if (field(o, "timeout", e) && (e.get(timeout_s) != simdjson::SUCCESS || timeout_s < 0 || timeout_s > kMaxTimeoutS))
      return bad(fmt::format("timeout must be an integer 0..{} (seconds)", kMaxTimeoutS));
    auto b = std::make_shared<Box>();
    if (field(o, "metadata", e) && !string_map(e, b->metadata)) return bad("metadata must be an object of strings");
    if (field(o, "envVars", e) && !string_map(e, b->envs)) return bad("envVars must be an object of strings");
    bool flag = false;
    if (field(o, "autoPause", e) && e.get(flag) == simdjson::SUCCESS && flag)
      return bad("autoPause is not supported by ztee serve: a sandbox is killed when its timeout passes");
    if (field(o, "allow_internet_access", e) && e.get(flag) == simdjson::SUCCESS && flag)
      return bad("allow_internet_access is not available through ztee serve: its sandboxes have no network");
    if (object net; field(o, "network", e) && e.get(net) == simdjson::SUCCESS && net.size() > 0)
      return bad("network rules are not available through ztee serve: its sandboxes have no network");
    if (field(o, "mcp", e)) return bad("mcp is not supported by ztee serve");
    if (field(o, "volumeMounts", e)) return bad("volumeMounts are not supported by ztee serve");
    auto t = templates.find(std::string(tmpl));
    if (t == templates.end()) {
      std::string names;
      for (auto& [n, _] : templates) names += (names.empty() ? "" : ", ") + n;
      ex->respond(404, "application/json",
                  err_json(404, fmt::format("template '{}' not found: this server has {} (register more with "
                                            "`ztee serve --template NAME=DIR`)",
                                            tmpl, names)));
      return;
    }
    if (!admit(key, *ex)) return;
    b->template_id = t->first;
    b->key = key.sha256;
    b->token = random_hex(16);
    offload<Result<Sandbox>>(
        starter(t->second),
        [this, ex, b, timeout_s, key_hash = key.sha256](Result<Sandbox> r) mutable {
          release(key_hash);
          if (!r) {
            int status = r.error().code == Errc::kTimeout ? 503 : 500;
            log(fmt::format("create failed: {}", r.error().message));
            ex->respond(status, "application/json", err_json(status, "sandbox start failed: " + r.error().message));
            return;
          }
          b->sb = std::move(r.value());
          b->id = cluster_sandbox_id(b->sb.id(), opts.node);
          b->started_ms = now_unix_ms();
          if (shut || ex->gone()) {
            // Nobody will learn its id: do not keep it (destroyed when b goes).
            log(fmt::format("sandbox {} discarded: its creator is gone", b->id));
            return;
          }
          boxes[b->id] = b;
          if (guard) guard->sandbox_event("sandbox_create", ctx_of(*b), "template " + b->template_id);
          set_end(b, b->started_ms + timeout_s * 1000);
          log(fmt::format("sandbox {} created (template {}, timeout {} s)", b->id, b->template_id, timeout_s));
          ex->respond(201, "application/json", new_sandbox_json(*b));
        });
  }

  void list(HttpRequest& req, std::shared_ptr<HttpExchange>& ex, const ApiKey& key, bool v2) {
    std::map<std::string, std::string> want;
    bool has = false;
    std::string meta = req.query_param("metadata", &has);
    if (has && !meta.empty()) {
      std::string_view q = meta;
      while (!q.empty()) {
        size_t amp = q.find('&');
        std::string_view pair = q.substr(0, amp);
        q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
        size_t eq = pair.find('=');
        if (eq == std::string_view::npos) {
          ex->respond(400, "application/json", err_json(400, "metadata filter must be key=value pairs joined by &"));
          return;
        }
        want[percent_decode(pair.substr(0, eq), true)] = percent_decode(pair.substr(eq + 1), true);
      }
    }
    std::string state = req.query_param("state", &has);
    bool running_wanted = !has || state.empty() || state.find("running") != std::string::npos;
    size_t limit = SIZE_MAX;
    std::string tok;
    if (v2) {
      std::string ls = req.query_param("limit", &has);
      limit = 100;
      if (has) {
        char* end = nullptr;
        long n = std::strtol(ls.c_str(), &end, 10);
        if (ls.empty() || *end || n < 1 || n > 100) {
          ex->respond(400, "application/json", err_json(400, "limit must be 1..100"));
          return;
        }
        limit = static_cast<size_t>(n);
      }
      tok = req.query_param("nextToken", &has);
    }
    std::vector<ListedSandbox> sel;
    if (running_wanted) {
      for (auto& [_, b] : boxes) {
        if (b->key != key.sha256) continue;
        bool ok = true;
        for (auto& [k, v] : want) {
          auto it = b->metadata.find(k);
          if (it == b->metadata.end() || it->second != v) ok = false;
        }
        if (ok) sel.push_back(ListedSandbox{b->id, rfc3339(b->started_ms), sandbox_json(*b, false)});
      }
    }
    if (peers.empty() || req.header(kNoFanoutHeader)) return list_page(ex, std::move(sel), limit, tok, {});
    // The other nodes' sandboxes: each peer answers the same filter for its own (v1: unpaged).
    std::string target = "/sandboxes" + (req.query.empty() ? "" : "?" + req.query);
    std::string api_key = *req.header("x-api-key");  // checked by authenticate()
    offload<PeerListing>(
        [ps = peers, target, api_key] { return list_from_peers(ps, target, api_key, 5000); },
        [this, ex, sel = std::move(sel), limit, tok](PeerListing pl) mutable {
          std::set<std::string> ids;
          for (auto& s : sel) ids.insert(s.id);
          for (auto& s : pl.sandboxes) {
            auto n = node_of_sandbox_id(s.id);
            if ((n && *n == opts.node) || !ids.insert(s.id).second) continue;  // this node's own: listed already
            sel.push_back(std::move(s));
          }
          std::vector<std::pair<std::string, std::string>> extra;
          if (!pl.unreachable.empty()) {
            std::string which;
            for (auto& u : pl.unreachable) which += (which.empty() ? "" : "; ") + u;
            for (char& c : which)
              if (static_cast<unsigned char>(c) < 0x20) c = ' ';
            log(fmt::format("list: without the sandboxes of peers that did not answer: {}", which));
            extra.emplace_back("x-ztee-unreachable-peers", which);
          }
          list_page(ex, std::move(sel), limit, tok, extra);
        });
  }

  // Sorts a list answer by start time and answers one page of it (v2:
  // limit and nextToken, the id of the previous page's last sandbox).
  void list_page(std::shared_ptr<HttpExchange> ex, std::vector<ListedSandbox> sel, size_t limit, const std::string& tok,
                 std::vector<std::pair<std::string, std::string>> extra) {
    std::sort(sel.begin(), sel.end(), [](auto& a, auto& b) {
      return a.started_at != b.started_at ? a.started_at < b.started_at : a.id < b.id;
    });
    size_t begin = 0;
    if (!tok.empty()) {
      auto it = std::find_if(sel.begin(), sel.end(), [&](auto& b) { return b.id == tok; });
      if (it == sel.end()) {
        // That sandbox is gone: where the next page starts is not knowable.
        ex->respond(400, "application/json", err_json(400, "nextToken is stale (its sandbox was killed): list again"));
        return;
      }
      begin = static_cast<size_t>(it - sel.begin()) + 1;
    }
    if (limit != SIZE_MAX && begin + limit < sel.size()) extra.emplace_back("x-next-token", sel[begin + limit - 1].id);
    std::string out = "[";
    for (size_t i = begin; i < sel.size() && i - begin < limit; ++i) {
      if (out.size() > 1) out += ',';
      out += sel[i].json;
    }
    out += "]";
    ex->respond(200, "application/json", out, extra);
  }

  // 404 text for an id this node does not run: names the node that does.
  std::string not_found_message(const std::string& id) {
    auto n = node_of_sandbox_id(id);
    if (n && *n != opts.node)
      return fmt::format("sandbox {} runs on node {}, not on this node ({}): send its requests through the proxy that "
                         "routes by node (deploy/nginx/ztee-serve.conf)",
                         id, *n, opts.node);
    return fmt::format("sandbox {} not found", id);
  }

  void kill_box(std::shared_ptr<Box> b, std::string_view why, std::function<void(Result<void>)> then) {
    if (b->dead) return then(Result<void>());
    b->dead = true;
    boxes.erase(b->id);
    if (b->timer) loop->cancel_timer(b->timer);
    b->timer = 0;
    for (auto& [_, p] : b->procs) {
      p->cancel.trigger();
      end_subs(*p, end_error_json("unavailable", fmt::format("the sandbox was killed ({})", why)), "");
      if (auto end = std::exchange(p->on_end, nullptr)) end(make_error(Errc::kClosed, fmt::format("the sandbox was killed ({})", why)));
    }
    b->procs.clear();
    if (guard) guard->sandbox_event("sandbox_kill", ctx_of(*b), why);
    Sandbox sb = b->sb;
    std::string id = b->id;
    offload<Result<void>>([sb]() mutable { return sb.destroy(); },
                          [this, id, then = std::move(then)](Result<void> r) {
                            metrics.sandbox_destroyed(static_cast<bool>(r));
                            log(fmt::format("sandbox {} destroyed{}", id, r ? "" : ": " + r.error().message));
                            then(std::move(r));
                          });
  }

  // ------------------------------------------------------------ sandbox plane

  void envd(HttpRequest& req, std::shared_ptr<HttpExchange> ex, const std::string& id) {
    auto it = boxes.find(id);
    if (auto n = node_of_sandbox_id(id); it == boxes.end() && n && *n != opts.node) {
      ex->respond(404, "application/json", err_json(404, not_found_message(id)));
      return;
    }
    if (it == boxes.end()) {
      // As E2B's proxy answers for a sandbox that is not running: 502.
      ex->respond(502, "application/json",
                  fmt::format("{{\"code\":502,\"message\":{},\"sandboxId\":{}}}",
                              json_str(fmt::format("sandbox {} is not running (killed, timed out or never created)", id)),
                              json_str(id)));
      return;
    }
    auto box = it->second;
    const std::string* tok = req.header("x-access-token");
    bool is_rpc = req.path.find('.') != std::string::npos && req.path.rfind('/') > 1;
    bool token_ok = tok && tok->size() == box->token.size() &&
                    CRYPTO_memcmp(tok->data(), box->token.data(), tok->size()) == 0;  // constant time
    if (!(req.method == "GET" && req.path == "/health") && !token_ok) {
      if (is_rpc) {
        ex->respond(401, "application/json",
                    fmt::format("{{\"code\":\"unauthenticated\",\"message\":{}}}",
                                json_str("missing or wrong X-Access-Token for this sandbox")));
      } else {
        ex->respond(401, "application/json", err_json(401, "missing or wrong X-Access-Token for this sandbox"));
      }
      return;
    }
    if (req.path == "/health") {
      ex->respond(204, "", "");
      return;
    }
    if (req.path == "/files") {
      if (req.method == "GET") return files_get(req, ex, box);
      if (req.method == "POST") return files_post(req, ex, box);
    }
    if (req.method == "POST" && (req.path.rfind("/process.Process/", 0) == 0 ||
                                 req.path.rfind("/filesystem.Filesystem/", 0) == 0))
      return rpc(req, ex, box);
    ex->respond(404, "application/json",
                err_json(404, fmt::format("{} {} is not an envd endpoint ztee serve implements", req.method, req.path)));
  }

  void files_get(HttpRequest& req, std::shared_ptr<HttpExchange>& ex, std::shared_ptr<Box> box) {
    bool has = false;
    std::string path = req.query_param("path", &has);
    std::string user = req.query_param("username");
    if (!has || path.empty()) {
      ex->respond(400, "application/json", err_json(400, "the path query parameter is required"));
      return;
    }
    path = resolve_path(path, user);
    Sandbox sb = box->sb;
    offload<Result<std::string>>([sb, path]() mutable { return sb.read_file(path); },
                                 [ex, path](Result<std::string> r) {
                                   if (!r) {
                                     int st = http_status_for(r.error());
                                     ex->respond(st, "application/json", err_json(st, r.error().message));
                                     return;
                                   }
                                   ex->respond(200, "application/octet-stream", std::move(r.value()),
                                               {{"Content-Disposition", "attachment; filename=" + json_str(base_name(path))}});
                                 });
  }

  void files_post(HttpRequest& req, std::shared_ptr<HttpExchange>& ex, std::shared_ptr<Box> box) {
    bool has = false;
    std::string qpath = req.query_param("path", &has);
    std::string user = req.query_param("username");
    if (user.empty()) user = kDefaultUser;
    const std::string* ct = req.header("content-type");
    std::vector<std::pair<std::string, std::string>> files;  // path, data
    std::string boundary = ct ? multipart_boundary(*ct) : std::string();
    if (!boundary.empty()) {
      auto parts = parse_multipart(req.body, boundary);
      if (!parts) {
        ex->respond(400, "application/json", err_json(400, parts.error().message));
        return;
      }
      for (auto& p : *parts) {
        std::string path = (has && !qpath.empty() && parts->size() == 1) ? qpath : p.filename;
        if (path.empty()) {
          ex->respond(400, "application/json", err_json(400, "a file part has no filename and there is no path parameter"));
          return;
        }
        files.emplace_back(resolve_path(path, user), std::move(p.data));
      }
    } else if (ct && ct->rfind("application/octet-stream", 0) == 0) {
      if (!has || qpath.empty()) {
        ex->respond(400, "application/json", err_json(400, "the path query parameter is required for an octet-stream upload"));
        return;
      }
      std::string body = std::move(req.body);
      if (auto* enc = req.header("content-encoding"); enc && *enc != "identity") {
        if (*enc != "gzip") {
          ex->respond(400, "application/json", err_json(400, "Content-Encoding " + *enc + " is not supported (gzip is)"));
          return;
        }
        auto plain = gunzip(body, opts.limits.max_body);
        if (!plain) {
          int st = plain.error().message.find("inflates to over") != std::string::npos ? 413 : 400;
          ex->respond(st, "application/json", err_json(st, plain.error().message));
          return;
        }
        body = std::move(plain.value());
      }
      files.emplace_back(resolve_path(qpath, user), std::move(body));
    } else {
      ex->respond(400, "application/json",
                  err_json(400, "Content-Type must be multipart/form-data (with a boundary) or application/octet-stream"));
      return;
    }
    if (files.empty()) {
      ex->respond(400, "application/json", err_json(400, "no file in the request"));
      return;
    }
    if (guard) {
      std::vector<std::string> paths;
      for (auto& f : files) paths.push_back(f.first);
      return guard->check(files_tool_call("write", paths, ctx_of(*box)), ctx_of(*box),
                          [this, ex, box, files = std::move(files), user](Verdict v) mutable {
                            if (!v.allowed) return ex->respond(403, "application/json", err_json(403, v.message));
                            if (box->dead)
                              return ex->respond(502, "application/json", err_json(502, "the sandbox was killed meanwhile"));
                            files_write(ex, box, std::move(files), user);
                          });
    }
    files_write(ex, box, std::move(files), user);
  }

  void files_write(std::shared_ptr<HttpExchange> ex, std::shared_ptr<Box> box,
                   std::vector<std::pair<std::string, std::string>> files, std::string user) {
    Sandbox sb = box->sb;
    offload<Result<std::string>>(
        [sb, files = std::move(files), user]() mutable -> Result<std::string> {
          std::string out = "[";
          for (auto& [path, data] : files) {
            auto md = sb.mkdir(parent_dir(path), true);
            if (!md && md.error().code != Errc::kGuest) return std::move(md).error();
            auto w = sb.write_file(path, data);
            if (!w) return std::move(w).error();
            if (user != "root") {
              ExecOptions eo;
              eo.argv = {"chown", "--", user + ":", path};
              eo.timeout_ms = 30000;
              auto r = sb.exec(eo);
              if (!r) return std::move(r).error();
              if (r->exit_code != 0)
                return make_error(Errc::kPermission, fmt::format("cannot give {} to user {}: {}", path, user, r->stderr_data));
            }
            if (out.size() > 1) out += ',';
            out += fmt::format("{{\"name\":{},\"type\":\"file\",\"path\":{}}}", json_str(base_name(path)), json_str(path));
          }
          return out + "]";
        },
        [ex](Result<std::string> r) {
          if (!r) {
            int st = r.error().code == Errc::kPermission ? 401 : http_status_for(r.error());
            ex->respond(st, "application/json", err_json(st, r.error().message));
            return;
          }
          ex->respond(200, "application/json", std::move(r.value()));
        });
  }

  // ------------------------------------------------------------- Connect RPC

  struct Rpc {
    std::shared_ptr<HttpExchange> ex;
    bool streaming = false;
    std::string method;  // "process.Process/Start"
    std::string user;
    uint32_t timeout_ms = 0;
    uint32_t keepalive_ms = 0;
    std::string payload;                // with a policy: the message, read again once allowed
    std::shared_ptr<Verdict> verdict;  // with a policy: set once the call is allowed
  };

  void rpc_ok(Rpc& rpc, std::string json_body) {
    if (rpc.streaming) {
      rpc.ex->start_stream(200, "application/connect+json");
      rpc.ex->write_chunk(envelope(0, json_body));
      rpc.ex->write_chunk(envelope(2, "{}"));
      rpc.ex->end_stream();
    } else {
      rpc.ex->respond(200, "application/json", std::move(json_body));
    }
  }

  void rpc_fail(Rpc& rpc, std::string_view code, std::string_view message) {
    if (rpc.streaming) {
      rpc.ex->start_stream(200, "application/connect+json");
      rpc.ex->write_chunk(envelope(2, end_error_json(code, message)));
      rpc.ex->end_stream();
    } else {
      rpc.ex->respond(connect_status(code), "application/json",
                      fmt::format("{{\"code\":\"{}\",\"message\":{}}}", code, json_str(message)));
    }
  }

  // The policy gate (--policy).
  CallContext ctx_of(const Box& b) {
    CallContext c;
    c.sandbox = b.id;
    if (auto k = keys.find(b.key); k != keys.end()) c.key_name = k->second.name;
    c.metadata = b.metadata;
    return c;
  }

  // Classifies an RPC's call; once allowed, the RPC runs again with the
  // verdict (its message read again from rpc.payload).
  void guard_rpc(Rpc& rpc, std::shared_ptr<Box> box, ToolCall call) {
    guard->check(std::move(call), ctx_of(*box), [this, rpc, box](Verdict v) mutable {
      if (!v.allowed) return rpc_fail(rpc, "permission_denied", v.message);
      if (box->dead) return rpc_fail(rpc, "unavailable", "the sandbox was killed while the call waited for approval");
      if (rpc.ex->gone())
        return guard->exit(v, ctx_of(*box), make_error(Errc::kClosed, "the client left before the call could run"));
      rpc.verdict = std::make_shared<Verdict>(std::move(v));
      object o;
      if (json.parse(rpc.payload.data(), rpc.payload.size()).get(o) != simdjson::SUCCESS)
        return rpc_fail(rpc, "internal", "the request message could not be read again");
      if (rpc.method == "process.Process/Start") return proc_start(rpc, o, box);
      fs_call(rpc, o, box);
    });
  }

  void rpc(HttpRequest& req, std::shared_ptr<HttpExchange>& ex, std::shared_ptr<Box> box) {
    Rpc rpc;
    rpc.ex = ex;
    rpc.method = req.path.substr(1);
    const std::string* ct = req.header("content-type");
    std::string ctype = ct ? ct->substr(0, ct->find(';')) : "";
    if (ctype == "application/connect+json") {
      rpc.streaming = true;
    } else if (ctype != "application/json") {
      ex->respond(415, "application/json",
                  fmt::format("{{\"code\":\"unimplemented\",\"message\":{}}}",
                              json_str("ztee serve speaks Connect with the JSON codec only (application/json, "
                                       "application/connect+json), not " + ctype)));
      return;
    }
    if (auto* t = req.header("connect-timeout-ms")) rpc.timeout_ms = static_cast<uint32_t>(std::min(std::strtoull(t->c_str(), nullptr, 10), 0xffffffffull));
    if (auto* k = req.header("keepalive-ping-interval"))
      rpc.keepalive_ms = static_cast<uint32_t>(std::min(std::strtoull(k->c_str(), nullptr, 10), 3600ull) * 1000);
    if (auto* a = req.header("authorization"); a && a->rfind("Basic ", 0) == 0) {
      auto dec = base64_decode(std::string_view(*a).substr(6));
      if (!dec) return rpc_fail(rpc, "invalid_argument", "malformed Authorization header");
      rpc.user = dec->substr(0, dec->find(':'));
    }
    std::string_view payload = req.body;
    if (rpc.streaming && rpc.method == "process.Process/StreamInput") return proc_stream_input(rpc, payload, box);
    if (rpc.streaming) {
      if (payload.size() < 5) return rpc_fail(rpc, "invalid_argument", "missing Connect envelope in the request body");
      auto flags = static_cast<uint8_t>(payload[0]);
      uint32_t n = (uint32_t(uint8_t(payload[1])) << 24) | (uint32_t(uint8_t(payload[2])) << 16) |
                   (uint32_t(uint8_t(payload[3])) << 8) | uint32_t(uint8_t(payload[4]));
      if (flags & 0x01) return rpc_fail(rpc, "unimplemented", "compressed Connect messages are not supported");
      if (payload.size() - 5 != n) return rpc_fail(rpc, "invalid_argument", "Connect envelope length does not match the body");
      payload = payload.substr(5);
    }
    if (payload.size() > kMaxJsonBody) return rpc_fail(rpc, "resource_exhausted", "request message too large");
    if (guard) rpc.payload = std::string(payload);
    auto parsed = json.parse(payload.data(), payload.size());
    object o;
    if (parsed.error() != simdjson::SUCCESS || parsed.value_unsafe().get(o) != simdjson::SUCCESS)
      return rpc_fail(rpc, "invalid_argument",
                      fmt::format("malformed JSON message: {}",
                                  parsed.error() != simdjson::SUCCESS ? simdjson::error_message(parsed.error())
                                                                      : "expected an object"));
    const std::string& m = rpc.method;
    if (m == "process.Process/Start" && rpc.streaming) return proc_start(rpc, o, box);
    if (m == "process.Process/Connect" && rpc.streaming) return proc_connect(rpc, o, box);
    if (m == "process.Process/List" && !rpc.streaming) return proc_list(rpc, box);
    if (m == "process.Process/SendSignal" && !rpc.streaming) return proc_signal(rpc, o, box);
    if (m == "process.Process/SendInput" && !rpc.streaming) return proc_input(rpc, o, box);
    if (m == "process.Process/CloseStdin" && !rpc.streaming) return proc_close_stdin(rpc, o, box);
    if (m == "process.Process/Update") return rpc_fail(rpc, "unimplemented", "PTY commands are not supported by ztee serve");
    if (m.rfind("filesystem.Filesystem/", 0) == 0 && !rpc.streaming) return fs_call(rpc, o, box);
    if (m == "filesystem.Filesystem/WatchDir" || m.find("Watcher") != std::string::npos)
      return rpc_fail(rpc, "unimplemented", "watching directories is not supported by ztee serve");
    rpc_fail(rpc, "unimplemented", fmt::format("{} is not implemented by ztee serve", m));
  }

  std::shared_ptr<Proc> select_proc(object o, Box& box) {
    element sel, v;
    if (!field(o, "process", sel)) return nullptr;
    object so;
    if (sel.get(so) != simdjson::SUCCESS) return nullptr;
    uint64_t pid = 0;
    if (field(so, "pid", v) && pb_uint(v, pid)) {
      auto it = box.procs.find(static_cast<uint32_t>(pid));
      return it == box.procs.end() ? nullptr : it->second;
    }
    std::string_view tag;
    if (field(so, "tag", v) && v.get(tag) == simdjson::SUCCESS) {
      for (auto& [_, p] : box.procs)
        if (p->tag == tag) return p;
    }
    return nullptr;
  }

  static std::string start_event(uint32_t pid) {
    return fmt::format("{{\"event\":{{\"start\":{{\"pid\":{}}}}}}}", pid);
  }

  void add_sub(const std::shared_ptr<Proc>& p, Rpc& rpc) {
    auto sub = std::make_shared<Sub>();
    sub->ex = rpc.ex;
    sub->ka_ms = rpc.keepalive_ms;
    std::weak_ptr<Proc> wp = p;
    std::weak_ptr<Sub> ws = sub;
    rpc.ex->on_gone([this, wp, ws] {
      auto s = ws.lock();
      if (!s) return;
      s->closed = true;
      if (s->ka_timer) loop->cancel_timer(s->ka_timer);
      s->ka_timer = 0;
      if (auto pp = wp.lock()) std::erase(pp->subs, s);  // the command goes on, detached (as E2B)
    });
    p->subs.push_back(sub);
    arm_keepalive(sub);
  }

  void arm_keepalive(const std::shared_ptr<Sub>& s) {
    if (!s->ka_ms || s->closed) return;
    std::weak_ptr<Sub> ws = s;
    s->ka_timer = loop->add_timer(s->ka_ms, [this, ws] {
      auto sub = ws.lock();
      if (!sub || sub->closed) return;
      sub->ka_timer = 0;
      sub->ex->write_chunk(envelope(0, R"({"event":{"keepalive":{}}})"));
      arm_keepalive(sub);
    });
  }

  void send_event(Proc& p, const std::string& env) {
    auto subs = p.subs;
    for (auto& s : subs)
      if (!s->closed) s->ex->write_chunk(env);
  }

  // Ends every stream of p: an optional last event, then the end message.
  void end_subs(Proc& p, const std::string& end_json, const std::string& last_event) {
    auto subs = std::move(p.subs);
    p.subs.clear();
    for (auto& s : subs) {
      if (s->closed) continue;
      s->closed = true;
      if (s->ka_timer) loop->cancel_timer(s->ka_timer);
      s->ka_timer = 0;
      if (!last_event.empty()) s->ex->write_chunk(envelope(0, last_event));
      s->ex->write_chunk(envelope(2, end_json));
      s->ex->end_stream();
    }
  }

  void proc_start(Rpc& rpc, object o, std::shared_ptr<Box> box) {
    element pe, v;
    object po;
    if (!field(o, "process", pe) || pe.get(po) != simdjson::SUCCESS)
      return rpc_fail(rpc, "invalid_argument", "process (the command) is required");
    if (field(o, "pty", v)) return rpc_fail(rpc, "unimplemented", "PTY commands are not supported by ztee serve");
    bool with_stdin = false;
    if (field(o, "stdin", v) && v.get(with_stdin) != simdjson::SUCCESS)
      return rpc_fail(rpc, "invalid_argument", "stdin must be true or false");
    auto p = std::make_shared<Proc>();
    std::string_view sv;
    if (!field(po, "cmd", v) || v.get(sv) != simdjson::SUCCESS || sv.empty())
      return rpc_fail(rpc, "invalid_argument", "process.cmd is required");
    p->cmd = std::string(sv);
    if (field(po, "args", v)) {
      array a;
      if (v.get(a) != simdjson::SUCCESS) return rpc_fail(rpc, "invalid_argument", "process.args must be a list of strings");
      for (auto x : a) {
        if (x.get(sv) != simdjson::SUCCESS) return rpc_fail(rpc, "invalid_argument", "process.args must be a list of strings");
        p->args.emplace_back(sv);
      }
    }
    if (field(po, "envs", v) && !string_map(v, p->envs))
      return rpc_fail(rpc, "invalid_argument", "process.envs must be an object of strings");
    if (field(po, "cwd", v)) {
      if (v.get(sv) != simdjson::SUCCESS) return rpc_fail(rpc, "invalid_argument", "process.cwd must be a string");
      p->cwd = std::string(sv);
    }
    if (field(o, "tag", v) && v.get(sv) == simdjson::SUCCESS) p->tag = std::string(sv);
    ExecOptions eo;
    eo.argv.push_back(p->cmd);
    eo.argv.insert(eo.argv.end(), p->args.begin(), p->args.end());
    if (guard && !rpc.verdict) return guard_rpc(rpc, box, command_tool_call(eo.argv, ctx_of(*box), with_stdin));
    eo.env = box->envs;
    for (auto& [k, val] : p->envs) eo.env[k] = val;
    std::string user = rpc.user.empty() ? kDefaultUser : rpc.user;
    eo.user = user;
    if (!p->cwd.empty()) eo.cwd = resolve_path(p->cwd, user);
    else if (user == "root" || user == kDefaultUser) eo.cwd = home_of(user);
    else eo.cwd = "/";
    eo.timeout_ms = rpc.timeout_ms;
    eo.output_cap = kOutputCap;
    if (rpc.verdict) {
      apply_tier_limits(rpc.verdict->decision.limits, &eo.timeout_ms, &eo.output_cap);
      p->on_end = [this, v = rpc.verdict, ctx = ctx_of(*box)](const Result<ExecResult>& r) {
        if (guard) guard->exit(*v, ctx, r);
      };
    }
    p->cancel = ExecCancel::create();
    eo.cancel = p->cancel;
    if (with_stdin) {
      p->input = ExecInput::create();
      eo.input = p->input;
    }
    if (box->procs.size() >= kMaxProcs)
      return rpc_fail(rpc, "resource_exhausted", fmt::format("{} commands run in this sandbox already: kill some first", kMaxProcs));
    p->pid = box->next_pid++;
    std::weak_ptr<Proc> wp = p;
    auto out = [this, wp](bool is_stdout) {
      return [this, wp, is_stdout](std::string_view chunk) {
        post([this, wp, is_stdout, data = std::string(chunk)] {
          if (auto pp = wp.lock()) on_output(*pp, is_stdout, data);
        });
      };
    };
    eo.on_stdout = out(true);
    eo.on_stderr = out(false);
    box->procs[p->pid] = p;
    rpc.ex->start_stream(200, "application/connect+json");
    rpc.ex->write_chunk(envelope(0, start_event(p->pid)));
    add_sub(p, rpc);
    std::weak_ptr<Box> wb = box;
    uint32_t timeout_ms = eo.timeout_ms;
    box->sb.exec_async(std::move(eo), [this, wp, wb, timeout_ms](Result<ExecResult> r) {
      post([this, wp, wb, timeout_ms, r = std::move(r)]() mutable {
        auto pp = wp.lock();
        if (!pp) return;
        on_exit(pp, wb.lock(), std::move(r), timeout_ms);
      });
    });
  }

  void on_output(Proc& p, bool is_stdout, const std::string& data) {
    if (p.ended) return;
    std::string ev = fmt::format("{{\"event\":{{\"data\":{{\"{}\":\"{}\"}}}}}}", is_stdout ? "stdout" : "stderr",
                                 base64_encode(data));
    std::string env = envelope(0, ev);
    send_event(p, env);
    p.replay_bytes += env.size();
    p.replay.push_back(std::move(env));
    while (p.replay_bytes > kReplayBytes && !p.replay.empty()) {
      p.replay_bytes -= p.replay.front().size();
      p.replay.pop_front();
    }
  }

  void on_exit(std::shared_ptr<Proc> p, std::shared_ptr<Box> box, Result<ExecResult> r, uint32_t timeout_ms) {
    if (p->ended) return;
    p->ended = true;
    if (p->on_end) p->on_end(r);
    if (box) box->procs.erase(p->pid);
    if (!r) {
      end_subs(*p, end_error_json(rpc_code(r.error()), r.error().message), "");
      return;
    }
    const ExecResult& x = *r;
    if (x.timed_out) {
      end_subs(*p,
               end_error_json("deadline_exceeded",
                              fmt::format("the command ran past its timeout of {} ms and was killed", timeout_ms)),
               "");
      return;
    }
    std::string status, error;
    if (x.signal) {
      status = x.signal == 9 ? "signal: killed" : fmt::format("signal: {}", x.signal);
      error = status;
    } else {
      status = fmt::format("exit status {}", x.exit_code);
      if (x.exit_code != 0) error = status;
    }
    std::string ev = fmt::format("{{\"event\":{{\"end\":{{\"exitCode\":{},\"exited\":{},\"status\":{}{}}}}}}}",
                                 x.signal ? -1 : x.exit_code, x.signal ? "false" : "true", json_str(status),
                                 error.empty() ? "" : ",\"error\":" + json_str(error));
    end_subs(*p, "{}", ev);
  }

  void proc_connect(Rpc& rpc, object o, std::shared_ptr<Box> box) {
    auto p = select_proc(o, *box);
    if (!p) return rpc_fail(rpc, "not_found", "no running command with that pid or tag");
    rpc.ex->start_stream(200, "application/connect+json");
    rpc.ex->write_chunk(envelope(0, start_event(p->pid)));
    for (auto& env : p->replay) rpc.ex->write_chunk(env);
    add_sub(p, rpc);
  }

  void proc_list(Rpc& rpc, std::shared_ptr<Box> box) {
    std::string out = "{\"processes\":[";
    bool first = true;
    for (auto& [pid, p] : box->procs) {
      if (!first) out += ',';
      first = false;
      std::string args, envs;
      for (auto& a : p->args) args += (args.empty() ? "" : ",") + json_str(a);
      for (auto& [k, v] : p->envs) envs += (envs.empty() ? "" : ",") + json_str(k) + ":" + json_str(v);
      out += fmt::format("{{\"config\":{{\"cmd\":{},\"args\":[{}],\"envs\":{{{}}}{}}},\"pid\":{}{}}}", json_str(p->cmd), args,
                         envs, p->cwd.empty() ? "" : ",\"cwd\":" + json_str(p->cwd), pid,
                         p->tag.empty() ? "" : ",\"tag\":" + json_str(p->tag));
    }
    rpc_ok(rpc, out + "]}");
  }

  // SendSignal: the proto names SIGNAL_SIGKILL and SIGNAL_SIGTERM; ztee serve
  // also takes SIGNAL_SIG<NAME> for Linux's other names and any number 1..64
  // (proto JSON allows an enum as its number).
  static int signal_number(element v) {
    uint64_t num = 0;
    std::string_view name;
    if (pb_uint(v, num)) return num >= 1 && num <= 64 ? static_cast<int>(num) : 0;
    if (v.get(name) != simdjson::SUCCESS || name.rfind("SIGNAL_SIG", 0) != 0) return 0;
    name.remove_prefix(std::strlen("SIGNAL_SIG"));
    static const std::pair<std::string_view, int> kNames[] = {
        {"HUP", 1},   {"INT", 2},   {"QUIT", 3},  {"ILL", 4},    {"TRAP", 5},   {"ABRT", 6},   {"BUS", 7},
        {"FPE", 8},   {"KILL", 9},  {"USR1", 10}, {"SEGV", 11},  {"USR2", 12},  {"PIPE", 13},  {"ALRM", 14},
        {"TERM", 15}, {"CHLD", 17}, {"CONT", 18}, {"STOP", 19},  {"TSTP", 20},  {"TTIN", 21},  {"TTOU", 22},
        {"URG", 23},  {"XCPU", 24}, {"XFSZ", 25}, {"VTALRM", 26}, {"PROF", 27}, {"WINCH", 28}, {"IO", 29},
        {"PWR", 30},  {"SYS", 31}};
    for (auto& [n, num2] : kNames)
      if (n == name) return num2;
    return 0;
  }

  void proc_signal(Rpc& rpc, object o, std::shared_ptr<Box> box) {
    element v;
    int sig = field(o, "signal", v) ? signal_number(v) : 0;
    if (!sig)
      return rpc_fail(rpc, "invalid_argument",
                      "signal must be SIGNAL_SIGKILL, SIGNAL_SIGTERM, another SIGNAL_SIG<NAME> (e.g. SIGNAL_SIGINT) "
                      "or a number 1..64");
    auto p = select_proc(o, *box);
    if (!p) return rpc_fail(rpc, "not_found", "no running command with that pid or tag");
    // SIGKILL is a cancel (the command ends "signal: killed", as before);
    // any other signal goes to the command's process group as it is.
    if (sig == 9) p->cancel.trigger();
    else if (auto r = p->cancel.signal(sig); !r) return rpc_fail(rpc, rpc_code(r.error()), r.error().message);
    rpc_ok(rpc, "{}");
  }

  // The command's stdin, or the reason it has none.
  const char* stdin_of(const std::shared_ptr<Proc>& p) {
    if (!p) return "no running command with that pid or tag";
    if (!p->input) return "the command was started without stdin: start it with stdin: true to send it input";
    return nullptr;
  }

  // The bytes of one ProcessInput message ({"stdin": base64} or {"pty": ...});
  // an empty string when it carries none. Else the Connect code and message.
  std::optional<std::pair<std::string, std::string>> input_bytes(object o, std::string* out) {
    element in, v;
    object io;
    std::string_view b64;
    out->clear();
    if (!field(o, "input", in) || in.get(io) != simdjson::SUCCESS)
      return std::pair<std::string, std::string>("invalid_argument", "input is required");
    if (field(io, "pty", v))
      return std::pair<std::string, std::string>("unimplemented", "PTY commands are not supported by ztee serve");
    if (!field(io, "stdin", v)) return std::nullopt;  // proto3: empty bytes are left out
    if (v.get(b64) != simdjson::SUCCESS)
      return std::pair<std::string, std::string>("invalid_argument", "input.stdin must be base64 bytes");
    auto data = base64_decode(b64);
    if (!data) return std::pair<std::string, std::string>("invalid_argument", "input.stdin is not valid base64");
    *out = std::move(*data);
    return std::nullopt;
  }

  // Bytes that may wait here for one command's stdin (beyond what its
  // ExecInput and the guest hold); a SendInput past it is refused.
  static constexpr size_t kMaxPendingInput = 8u << 20;

  // Why `more` bytes may not queue for p's stdin now, if they may not.
  std::optional<std::string> no_room(const Proc& p, size_t more) {
    if (p.pending_bytes + more <= kMaxPendingInput) return std::nullopt;
    return fmt::format("the command reads its stdin slower than it is sent: {} bytes wait for it already (at most {}); "
                       "send again once it has read them",
                       p.pending_bytes, kMaxPendingInput);
  }

  // Queues `piece` behind p's pending input and passes on what fits.
  void feed_input(const std::shared_ptr<Proc>& p, Proc::PendingInput piece) {
    p->pending_bytes += piece.data.size();
    p->pending_input.push_back(std::move(piece));
    pump_input(p);
  }

  // Passes p's pending input to its ExecInput as room frees up, answering
  // each call once its bytes are in; retries on a timer (2 ms, doubling to
  // 50 ms while nothing moves). Once the command has ended or its stdin was
  // closed, every waiting call fails.
  void pump_input(const std::shared_ptr<Proc>& p) {
    bool moved = false;
    while (!p->pending_input.empty()) {
      Proc::PendingInput& f = p->pending_input.front();
      if (f.close) {
        p->input.close();
      } else {
        while (!f.data.empty()) {
          size_t n = std::min(f.data.size(), ExecInput::kMaxBuffered / 4);
          auto r = p->input.write(std::string_view(f.data).substr(0, n));
          if (!r) {
            const Error& e = r.error();
            if (e.code == Errc::kIo && e.sys_errno == EAGAIN) {
              if (moved) p->input_retry_ms = 0;
              p->input_retry_ms = std::min<uint64_t>(p->input_retry_ms ? p->input_retry_ms * 2 : 2, 50);
              if (!p->input_timer)
                p->input_timer = loop->add_timer(p->input_retry_ms, [this, p] {
                  p->input_timer = 0;
                  pump_input(p);
                });
              return;
            }
            bool closed = e.code == Errc::kInvalidArgument;
            auto waiting = std::move(p->pending_input);
            p->pending_input.clear();
            p->pending_bytes = 0;
            for (auto& w : waiting)
              if (w.done)
                w.done(closed ? "failed_precondition" : "not_found",
                       closed ? "the command's stdin was closed (CloseStdin)" : "the command has ended");
            return;
          }
          f.data.erase(0, n);
          p->pending_bytes -= n;
          moved = true;
        }
      }
      auto done = std::move(f.done);
      p->pending_input.pop_front();
      if (done) done("", "");
    }
    p->input_retry_ms = 0;
  }

  // Answers `rpc` when its input is in (a copy of the exchange is kept).
  std::function<void(std::string_view, std::string_view)> answer(const Rpc& rpc) {
    return [this, r = rpc](std::string_view code, std::string_view message) mutable {
      if (code.empty())
        rpc_ok(r, "{}");
      else
        rpc_fail(r, code, message);
    };
  }

  void proc_input(Rpc& rpc, object o, std::shared_ptr<Box> box) {
    auto p = select_proc(o, *box);
    if (auto why = stdin_of(p)) return rpc_fail(rpc, p ? "failed_precondition" : "not_found", why);
    std::string data;
    if (auto err = input_bytes(o, &data)) return rpc_fail(rpc, err->first, err->second);
    if (data.empty() && p->pending_input.empty()) return rpc_ok(rpc, "{}");
    if (auto full = no_room(*p, data.size())) return rpc_fail(rpc, "resource_exhausted", *full);
    feed_input(p, Proc::PendingInput{std::move(data), false, answer(rpc)});
  }

  void proc_close_stdin(Rpc& rpc, object o, std::shared_ptr<Box> box) {
    auto p = select_proc(o, *box);
    if (auto why = stdin_of(p)) return rpc_fail(rpc, p ? "failed_precondition" : "not_found", why);
    feed_input(p, Proc::PendingInput{"", true, answer(rpc)});
  }

  // StreamInput is client-streaming. This server reads a request's whole
  // body before it answers, so the messages are applied in order once the
  // client ends its stream (at most kMaxJsonBody of them in all): the input
  // arrives at the end, not as it is sent. The E2B SDK does not call it
  // (commands.sendStdin is SendInput).
  void proc_stream_input(Rpc& rpc, std::string_view body, std::shared_ptr<Box> box) {
    if (body.size() > kMaxJsonBody) return rpc_fail(rpc, "resource_exhausted", "request stream too large");
    std::shared_ptr<Proc> p;
    std::vector<std::string> pieces;  // applied once the whole stream is known to be well-formed
    bool ended = false;
    while (!body.empty()) {
      if (ended || body.size() < 5) return rpc_fail(rpc, "invalid_argument", "malformed Connect envelope in the request stream");
      auto flags = static_cast<uint8_t>(body[0]);
      uint32_t n = (uint32_t(uint8_t(body[1])) << 24) | (uint32_t(uint8_t(body[2])) << 16) |
                   (uint32_t(uint8_t(body[3])) << 8) | uint32_t(uint8_t(body[4]));
      if (flags & 0x01) return rpc_fail(rpc, "unimplemented", "compressed Connect messages are not supported");
      if (body.size() - 5 < n) return rpc_fail(rpc, "invalid_argument", "Connect envelope length runs past the body");
      std::string_view msg = body.substr(5, n);
      body.remove_prefix(5 + n);
      if (flags & 0x02) {  // end of the client's stream
        ended = true;
        continue;
      }
      auto parsed = json.parse(msg.data(), msg.size());
      object o, ev;
      element v;
      if (parsed.error() != simdjson::SUCCESS || parsed.value_unsafe().get(o) != simdjson::SUCCESS)
        return rpc_fail(rpc, "invalid_argument", "malformed JSON message in the request stream");
      if (field(o, "start", v) && v.get(ev) == simdjson::SUCCESS) {
        p = select_proc(ev, *box);
        if (auto why = stdin_of(p)) return rpc_fail(rpc, p ? "failed_precondition" : "not_found", why);
      } else if (field(o, "data", v) && v.get(ev) == simdjson::SUCCESS) {
        if (!p) return rpc_fail(rpc, "invalid_argument", "the request stream must begin with a start message");
        std::string data;
        if (auto err = input_bytes(ev, &data)) return rpc_fail(rpc, err->first, err->second);
        if (!data.empty()) pieces.push_back(std::move(data));
      } else if (!field(o, "keepalive", v)) {
        return rpc_fail(rpc, "invalid_argument", "each message needs start, data or keepalive");
      }
    }
    if (pieces.empty()) return rpc_ok(rpc, "{}");
    size_t total = 0;
    for (auto& d : pieces) total += d.size();
    if (auto full = no_room(*p, total)) return rpc_fail(rpc, "resource_exhausted", *full);
    for (size_t i = 0; i < pieces.size(); ++i)
      feed_input(p, Proc::PendingInput{std::move(pieces[i]), false,
                                       i + 1 == pieces.size() ? answer(rpc) : nullptr});
  }

  void fs_call(Rpc& rpc, object o, std::shared_ptr<Box> box) {
    std::string method = rpc.method.substr(std::strlen("filesystem.Filesystem/"));
    element v;
    std::string_view sv;
    auto str = [&](const char* k) -> std::optional<std::string> {
      if (!field(o, k, v) || v.get(sv) != simdjson::SUCCESS || sv.empty()) return std::nullopt;
      return resolve_path(sv, rpc.user);
    };
    if (guard && !rpc.verdict && (method == "MakeDir" || method == "Remove" || method == "Move")) {
      std::vector<std::string> paths;
      for (const char* k : {"path", "source", "destination"})
        if (auto s = str(k)) paths.push_back(*s);
      std::string op = method == "MakeDir" ? "mkdir" : method == "Remove" ? "remove" : "move";
      return guard_rpc(rpc, box, files_tool_call(op, paths, ctx_of(*box)));
    }
    Sandbox sb = box->sb;
    auto finish = [this, rpc](Result<std::string> r) mutable {
      if (!r) return rpc_fail(rpc, rpc_code(r.error()), r.error().message);
      rpc_ok(rpc, std::move(r.value()));
    };
    if (method == "Stat") {
      auto path = str("path");
      if (!path) return rpc_fail(rpc, "invalid_argument", "path is required");
      return offload<Result<std::string>>(
          [sb, path = *path]() mutable -> Result<std::string> {
            auto st = sb.stat(path);
            if (!st) return std::move(st).error();
            return "{\"entry\":" + entry_json(*st, path) + "}";
          },
          finish);
    }
    if (method == "ListDir") {
      auto path = str("path");
      if (!path) return rpc_fail(rpc, "invalid_argument", "path is required");
      uint64_t depth = 1;
      if (field(o, "depth", v) && (!pb_uint(v, depth) || depth > 32))
        return rpc_fail(rpc, "invalid_argument", "depth must be 1..32");
      if (depth == 0) depth = 1;
      return offload<Result<std::string>>(
          [sb, path = *path, depth]() mutable -> Result<std::string> {
            auto st = sb.stat(path);
            if (!st) return std::move(st).error();
            if (st->type != FileType::kDir)
              return make_error(Errc::kInvalidArgument, fmt::format("{} is not a directory", path));
            std::string out = "{\"entries\":[";
            bool first = true;
            std::vector<std::pair<std::string, uint64_t>> todo{{path, 1}};
            size_t count = 0;
            while (!todo.empty()) {
              auto [dir, level] = todo.back();
              todo.pop_back();
              auto l = sb.list_dir(dir);
              if (!l) {
                if (level == 1) return std::move(l).error();
                continue;  // a subdirectory that went away or is unreadable
              }
              for (auto& fi : *l) {
                std::string child = (dir == "/" ? "" : dir) + "/" + fi.name;
                if (!first) out += ',';
                first = false;
                out += entry_json(fi, child);
                if (++count > 100000) return make_error(Errc::kInvalidArgument, "more than 100000 entries: list less deep");
                if (fi.type == FileType::kDir && level < depth) todo.emplace_back(child, level + 1);
              }
            }
            return out + "]}";
          },
          finish);
    }
    if (method == "MakeDir") {
      auto path = str("path");
      if (!path) return rpc_fail(rpc, "invalid_argument", "path is required");
      std::string user = rpc.user.empty() ? kDefaultUser : rpc.user;
      return offload<Result<std::string>>(
          [sb, path = *path, user]() mutable -> Result<std::string> {
            if (auto st = sb.stat(path); st)
              return make_error(Errc::kGuest, fmt::format("{} already exists", path), EEXIST);
            auto r = sb.mkdir(path, true);
            if (!r) return std::move(r).error();
            if (user != "root") {
              ExecOptions eo;
              eo.argv = {"chown", "--", user + ":", path};
              eo.timeout_ms = 30000;
              auto c = sb.exec(eo);
              if (!c) return std::move(c).error();
              if (c->exit_code != 0)
                return make_error(Errc::kPermission, fmt::format("cannot give {} to user {}: {}", path, user, c->stderr_data));
            }
            auto st = sb.stat(path);
            if (!st) return std::move(st).error();
            return "{\"entry\":" + entry_json(*st, path) + "}";
          },
          finish);
    }
    if (method == "Remove") {
      auto path = str("path");
      if (!path) return rpc_fail(rpc, "invalid_argument", "path is required");
      return offload<Result<std::string>>(
          [sb, path = *path]() mutable -> Result<std::string> {
            auto r = sb.remove(path, true);
            if (!r && r.error().code != Errc::kNotFound) return std::move(r).error();
            return std::string("{}");
          },
          finish);
    }
    if (method == "Move") {
      auto src = str("source"), dst = str("destination");
      if (!src || !dst) return rpc_fail(rpc, "invalid_argument", "source and destination are required");
      return offload<Result<std::string>>(
          [sb, src = *src, dst = *dst]() mutable -> Result<std::string> {
            // The guest agent has no rename: mv -T renames (never moves into a directory).
            if (auto st = sb.stat(src); !st) return std::move(st).error();
            ExecOptions eo;
            eo.argv = {"mv", "-T", "--", src, dst};
            eo.timeout_ms = 60000;
            auto r = sb.exec(eo);
            if (!r) return std::move(r).error();
            if (r->exit_code != 0) {
              std::string msg = fmt::format("rename {} to {}: {}", src, dst, r->stderr_data);
              while (!msg.empty() && msg.back() == '\n') msg.pop_back();
              if (r->stderr_data.find("No such file") != std::string::npos) return make_error(Errc::kNotFound, msg);
              return make_error(Errc::kGuest, msg);
            }
            auto st = sb.stat(dst);
            if (!st) return std::move(st).error();
            return "{\"entry\":" + entry_json(*st, dst) + "}";
          },
          finish);
    }
    rpc_fail(rpc, "unimplemented", fmt::format("filesystem.Filesystem/{} is not implemented by ztee serve", method));
  }
};

Result<std::unique_ptr<Server>> Server::start(ServeOptions opts) {
  auto impl = std::make_unique<Impl>();
  impl->opts = std::move(opts);
  ServeOptions& o = impl->opts;
  // Arguments and keys first: refused before anything boots.
  if (auto l = check_listen_address(o.listen); !l) return std::move(l).error();
  if (o.keys_file.empty())
    return make_error(Errc::kInvalidArgument,
                      "no key file: pass --keys FILE (create one with `ztee serve keygen --keys FILE`)");
  std::ifstream kf(o.keys_file);
  if (!kf)
    return make_error(Errc::kInvalidArgument,
                      fmt::format("cannot read key file {}: {} (create it with `ztee serve keygen --keys {}`)", o.keys_file,
                                  std::strerror(errno), o.keys_file));
  std::stringstream ss;
  ss << kf.rdbuf();
  auto keys = parse_key_file(ss.str(), o.keys_file);
  if (!keys) return std::move(keys).error();
  if (keys->empty())
    return make_error(Errc::kInvalidArgument,
                      fmt::format("key file {} has no keys: add one with `ztee serve keygen --keys {}`", o.keys_file, o.keys_file));
  for (auto& k : *keys) impl->keys[k.sha256] = k;
  if (o.node.empty()) o.node = default_node_name();
  if (auto n = check_node_name(o.node); !n) return std::move(n).error();
  for (auto& url : o.peers) {
    auto p = parse_peer_url(url);
    if (!p) return std::move(p).error();
    impl->peers.push_back(*p);
  }

  GuardOptions go;
  if (!o.policy_file.empty()) {
    auto pol = Policy::load(o.policy_file);
    if (!pol) return std::move(pol).error();
    go.policy = std::move(pol.value());
    if (!o.audit_file.empty()) {
      AuditOptions ao;
      ao.path = o.audit_file;
      ao.durability = o.audit_durability;
      if (!o.audit_key_file.empty()) {
        std::ifstream kin(o.audit_key_file, std::ios::binary);
        std::stringstream ks;
        ks << kin.rdbuf();
        ao.hmac_key = ks.str();
        while (!ao.hmac_key.empty() && (ao.hmac_key.back() == '\n' || ao.hmac_key.back() == '\r')) ao.hmac_key.pop_back();
        if (!kin || ao.hmac_key.empty())
          return make_error(Errc::kInvalidArgument,
                            fmt::format("--audit-key-file {}: cannot read a key from it (put a secret of 32+ random bytes in it)",
                                        o.audit_key_file));
      }
      auto log = AuditLog::open(ao);
      if (!log) return std::move(log).error();
      go.audit = std::move(log.value());
    } else if (!o.audit_key_file.empty()) {
      return make_error(Errc::kInvalidArgument, "--audit-key-file needs --audit FILE");
    }
    go.approver_url = o.approver_url;
  } else if (!o.audit_file.empty() || !o.approver_url.empty() || !o.audit_key_file.empty()) {
    return make_error(Errc::kInvalidArgument, "--audit, --audit-key-file and --approver-url need --policy FILE");
  }
  if (o.audit_durability != Durability::kFsync && o.audit_file.empty())
    return make_error(Errc::kInvalidArgument, "--audit-durability needs --audit FILE");

  RuntimeOptions ro;
  ro.state_dir = o.state_dir;
  ro.image_dir = o.image_dir;
  ro.jail.enabled = o.jail;
  auto rt = Runtime::create(ro);
  if (!rt) return std::move(rt).error();
  impl->rt = std::move(rt.value());
  impl->templates["base"] = Template{"base", o.image_dir, false};
  for (auto& [name, dir] : o.templates) {
    if (name == "base")
      return make_error(Errc::kInvalidArgument, "--template base=...: base is the default image; use --image DIR instead");
    bool is_image = ::access((dir + "/manifest.json").c_str(), F_OK) == 0;
    bool is_snapshot = !is_image && ::access((dir + "/template.json").c_str(), F_OK) == 0;
    if (!is_image && !is_snapshot)
      return make_error(Errc::kInvalidArgument,
                        fmt::format("--template {}={}: neither an image (a directory with manifest.json) nor a snapshot template (with template.json)",
                                    name, dir));
    impl->templates[name] = Template{name, dir, is_snapshot};
  }
  if (o.pool) {
    PoolOptions po;
    po.sandbox.memory_mib = o.memory_mib;
    po.sandbox.image_dir = o.image_dir;
    po.min_ready = o.pool;
    po.max_total = o.pool + o.max_sandboxes;
    po.lease_timeout_ms = 120000;
    // The SDK runs every command through `/bin/bash -l -c`: run it once so
    // a leased sandbox's first command is a warm one (under TCG the first
    // run of a program translates its code).
    po.warm_up = std::string(kProvisionUser) + " && /bin/bash -l -c true";
    auto pool = impl->rt.create_pool(po);
    if (!pool) return make_error(pool.error().code, "warm pool for template base: " + pool.error().message);
    impl->pool = std::move(pool.value());
  }
  auto loop = detail::Loop::create();
  if (!loop) return std::move(loop).error();
  impl->loop = std::move(loop.value());
  impl->workers = std::make_unique<Workers>(o.workers);
  Impl* raw = impl.get();
  if (!o.policy_file.empty()) {
    go.post = [raw](std::function<void()> fn) { raw->post(std::move(fn)); };
    go.log = [raw](std::string_view line) { raw->log(line); };
    impl->guard = std::make_unique<CallGuard>(std::move(go));
  }
  ExecHost eh;
  eh.post = [raw](std::function<void()> fn) { raw->post(std::move(fn)); };
  eh.offload = [raw](std::function<void()> fn) { raw->workers->submit(std::move(fn)); };
  eh.starter = [raw](std::string_view name, std::string* error) -> std::function<Result<Sandbox>()> {
    auto t = raw->templates.find(std::string(name));
    if (t != raw->templates.end()) return raw->starter(t->second);
    std::string names;
    for (auto& [n, _] : raw->templates) names += (names.empty() ? "" : ", ") + n;
    *error = fmt::format("template '{}' not found: this server has {}", name, names);
    return nullptr;
  };
  eh.admit = [raw](const ApiKey& k, HttpExchange& ex) { return raw->admit(k, ex); };
  eh.release = [raw](const ApiKey& k) { raw->release(k.sha256); };
  eh.log = [raw](std::string_view line) { raw->log(line); };
  eh.metrics = &impl->metrics;
  if (impl->guard) {
    eh.check = [raw](const std::vector<std::string>& argv, const ApiKey& k, std::function<void(Verdict)> then) {
      CallContext ctx;
      ctx.key_name = k.name;
      raw->guard->check(command_tool_call(argv, ctx), ctx, std::move(then));
    };
    eh.exited = [raw](const Verdict& v, const ApiKey& k, const std::string& sandbox, const Result<ExecResult>& r) {
      CallContext ctx;
      ctx.key_name = k.name;
      ctx.sandbox = sandbox;
      raw->guard->exit(v, ctx, r);
    };
  }
  impl->exec_api = std::make_unique<ExecApi>(std::move(eh));
  auto http = HttpServer::start(*impl->loop, o.listen, o.limits,
                                [raw](HttpRequest& req, std::shared_ptr<HttpExchange> ex) { raw->handle(req, std::move(ex)); });
  if (!http) return std::move(http).error();
  impl->http = std::move(http.value());
  std::unique_ptr<Server> s(new Server());
  s->impl_ = std::move(impl);
  return s;
}

uint16_t Server::port() const { return impl_->http->port(); }

std::string Server::backend_description() const { return impl_->rt.backend_description(); }

void Server::shutdown() {
  if (!impl_ || impl_->shut) return;
  Impl* im = impl_.get();
  std::promise<std::vector<Sandbox>> got;
  im->loop->post([im, &got] {
    im->shut = true;
    im->http->stop();
    std::vector<Sandbox> all;
    for (auto& [_, b] : im->boxes) {
      b->dead = true;
      if (b->timer) im->loop->cancel_timer(b->timer);
      for (auto& [__, p] : b->procs) p->cancel.trigger();
      all.push_back(b->sb);
    }
    im->boxes.clear();
    for (auto& sb : im->exec_api->abort_all()) all.push_back(sb);
    got.set_value(std::move(all));
  });
  auto all = got.get_future().get();
  for (auto& sb : all) {
    auto r = sb.destroy();
    im->log(fmt::format("sandbox {} destroyed at shutdown{}", sb.id(), r ? "" : ": " + r.error().message));
  }
  if (im->guard) im->guard->stop();  // pending approvals end (denied)
  im->workers->stop();  // runs what is queued (creates in flight end here)
  // Their results (a sandbox nobody asked for any more is dropped, and so
  // destroyed) and any last exec output run now; nothing after.
  std::promise<void> drained;
  im->loop->post([im, &drained] {
    *im->alive = false;
    drained.set_value();
  });
  drained.get_future().get();
  if (im->pool) im->pool.close();
}

Server::~Server() { shutdown(); }

}  // namespace ztee::serve
