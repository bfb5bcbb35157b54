// The gate: classify -> (approve) -> resolve secrets -> run in a fresh or
// pooled sandbox -> scrub -> tear down, recording every step.
#include <ztee/policy.hpp>

#include "agent/json.hpp"
#include "image/image.hpp"
#include "runtime/impl.hpp"

#include <fmt/format.h>

#include <condition_variable>
#include <fstream>
#include <sstream>
#include <mutex>
#include <unordered_map>

namespace ztee {

namespace {

constexpr std::string_view kSecretScheme = "secret://";

std::string q(std::string_view s) { return detail::json_quote(s); }

std::string qlist(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += ',';
    detail::json_append_string(out, v[i]);
  }
  return out + "]";
}

template <typename Map>
std::string qkeys(const Map& m) {
  std::vector<std::string> keys;
  for (const auto& [k, v] : m) keys.push_back(k);
  return qlist(keys);
}

std::optional<std::string_view> secret_ref(std::string_view v) {
  if (v.substr(0, kSecretScheme.size()) != kSecretScheme) return std::nullopt;
  return v.substr(kSecretScheme.size());
}

// What leaves a sandbox on one stream: secrets scrubbed, then DLP.
struct OutFilter {
  SecretScrubber scrub;
  std::optional<DlpStream> dlp;
  std::string feed(std::string_view s) {
    std::string t = scrub.feed(s);
    return dlp ? dlp->feed(t) : t;
  }
  std::string finish() {
    std::string t = scrub.finish();
    if (!dlp) return t;
    std::string out = dlp->feed(t);
    out += dlp->finish();
    return out;
  }
  bool blocked() const { return dlp && dlp->blocked(); }
};

}  // namespace

namespace detail {

class GateImpl {
 public:
  enum class Answer { kPending, kGranted, kDenied };
  struct Pending {
    Answer answer = Answer::kPending;
    std::string who, reason;
  };

  Runtime rt;
  GateOptions opts;
  std::mutex mu;
  std::condition_variable cv;
  std::unordered_map<std::string, std::shared_ptr<Pending>> pending;

  // The image sandboxes boot from, named by its manifest's sha256 (the
  // manifest lists every artifact's digest). Computed once.
  const std::string& image_digest() {
    std::call_once(image_once, [&] {
      std::string dir = opts.sandbox.image_dir;
      if (dir.empty()) dir = rt.options().image_dir;
      if (dir.empty()) dir = default_image_dir();
      image_dir = dir;
      std::ifstream in(dir + "/manifest.json", std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      image_sha = in ? detail::sha256_hex(ss.str()) : "";
    });
    return image_sha;
  }
  std::once_flag image_once;
  std::string image_dir, image_sha;

  void record(std::string_view event, std::string_view trace, std::string_view fields) {
    // Synced in groups (commit): before a command runs and before a call returns.
    if (opts.audit) (void)opts.audit.append_deferred(event, trace, fields);
  }

  bool answer(std::string_view token, Answer a, std::string_view who, std::string_view reason) {
    std::shared_ptr<Pending> p;
    {
      std::lock_guard lk(mu);
      auto it = pending.find(std::string(token));
      if (it != pending.end() && it->second->answer == Answer::kPending) {
        p = it->second;
        p->answer = a;
        p->who = who;
        p->reason = reason;
      }
    }
    if (p) {
      cv.notify_all();
      return true;
    }
    record("approval_ignored", "",
           fmt::format("\"token\":{},\"by\":{},\"answer\":{},\"why\":\"unknown, already answered or expired\"", q(token),
                       q(who), q(a == Answer::kGranted ? "approve" : "deny")));
    if (opts.audit) (void)opts.audit.commit();
    return false;
  }

  std::string describe(const ToolCall& c, const Decision& d, const std::string& trace) {
    return fmt::format(
        "{{\"tool\":{},\"text\":{},\"env_keys\":{},\"cwd\":{},\"user\":{},\"writes\":{},\"network\":{},\"labels\":{},"
        "\"tier\":\"L{}\",\"rule\":{},\"trace\":{}}}",
        q(c.tool), q(c.text()), qkeys(c.env), q(c.cwd), q(c.user), qlist(c.writes), qlist(c.network), qlist(c.labels),
        d.tier, q(d.rule), q(trace));
  }

  // Returns "" when granted (and sets who), else the denial.
  std::string ask(const ToolCall& c, const Decision& d, const std::string& trace, std::string* who) {
    if (!opts.approver) {
      record("approval_denied", trace, "\"by\":\"gate\",\"reason\":\"no approver is configured\"");
      return "approval needed but no approver is configured: denied";
    }
    uint32_t wait_ms = d.limits.approval_timeout_ms ? d.limits.approval_timeout_ms : 300000;
    ApprovalRequest req;
    req.token = detail::random_hex(16);
    req.description = describe(c, d, trace);
    req.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
    auto p = std::make_shared<Pending>();
    {
      std::lock_guard lk(mu);
      pending.emplace(req.token, p);
    }
    record("approval_asked", trace, fmt::format("\"token\":{},\"deadline_ms\":{}", q(req.token), wait_ms));
    std::string thrown;
    try {
      opts.approver(req);
    } catch (const std::exception& e) {
      thrown = e.what();
      if (thrown.empty()) thrown = "exception";
    } catch (...) {
      thrown = "unknown exception";
    }
    std::unique_lock lk(mu);
    if (!thrown.empty() && p->answer == Answer::kPending) {
      p->answer = Answer::kDenied;
      p->who = "gate";
      p->reason = "the approver threw: " + thrown;
    }
    cv.wait_until(lk, req.deadline, [&] { return p->answer != Answer::kPending; });
    pending.erase(req.token);
    Pending out = *p;
    if (out.answer == Answer::kPending) {
      p->answer = Answer::kDenied;  // a late answer finds nothing to change
      lk.unlock();
      record("approval_expired", trace, fmt::format("\"token\":{},\"after_ms\":{}", q(req.token), wait_ms));
      return fmt::format("no approval within {} ms: denied", wait_ms);
    }
    lk.unlock();
    if (out.answer == Answer::kGranted) {
      record("approval_granted", trace, fmt::format("\"token\":{},\"by\":{}", q(req.token), q(out.who)));
      *who = out.who;
      return "";
    }
    record("approval_denied", trace,
           fmt::format("\"token\":{},\"by\":{},\"reason\":{}", q(req.token), q(out.who), q(out.reason)));
    return fmt::format("denied by {}: {}", out.who, out.reason);
  }

  Result<CallResult> call(ToolCall c) {
    auto r = call_steps(std::move(c));
    if (opts.audit) (void)opts.audit.commit();
    return r;
  }

  Result<CallResult> call_steps(ToolCall c) {
    CallResult res;
    std::string trace = c.trace_id.empty() ? "call-" + detail::random_hex(8) : c.trace_id;
    std::string text = c.text();
    record("call", trace,
           fmt::format("\"tool\":{},\"text_sha256\":\"{}\",\"text_len\":{},\"env_keys\":{},\"writes\":{},\"network\":{},"
                       "\"labels\":{}",
                       q(c.tool), detail::sha256_hex(text), text.size(), qkeys(c.env), qlist(c.writes), qlist(c.network),
                       qlist(c.labels)));
    if (c.tool.empty() || (c.command.empty() && c.argv.empty()))
      return make_error(Errc::kInvalidArgument, "tool call: set tool and a command (or argv)");
    res.decision = opts.policy.classify(c);
    const Decision& d = res.decision;
    record("decision", trace,
           fmt::format("\"tier\":\"L{}\",\"action\":\"{}\",\"rule\":{},\"reason\":{}", d.tier, tier_action_name(d.action),
                       q(d.rule), q(d.reason)));
    auto deny = [&](std::string why) -> Result<CallResult> {
      res.denial = std::move(why);
      record("denied", trace, fmt::format("\"reason\":{}", q(res.denial)));
      return res;
    };
    if (d.action == TierAction::kDeny) return deny(d.reason);
    for (const auto& n : c.network)
      if (std::find(d.limits.network.begin(), d.limits.network.end(), n) == d.limits.network.end())
        return deny(fmt::format("network \"{}\" is not allowed at tier L{}", n, d.tier));
    if (d.action == TierAction::kApprove) {
      std::string why = ask(c, d, trace, &res.approved_by);
      if (!why.empty()) return deny(std::move(why));
    }

    // Secrets: resolved on the host, before any sandbox is touched.
    SecretScrubber scrub;
    std::vector<std::string> used;
    auto resolve = [&](std::string& value) -> Result<void> {
      auto name = secret_ref(value);
      if (!name) return {};
      if (!opts.secrets)
        return make_error(Errc::kNotFound, fmt::format("secret reference \"{}\": no secret resolver is configured", value));
      Result<std::string> v = make_error(Errc::kInternal, "");
      try {
        v = opts.secrets(*name);
      } catch (...) {
        v = make_error(Errc::kInternal, "the secret resolver threw");
      }
      if (!v) {
        Error e = std::move(v).error();
        e.message = fmt::format("secret reference \"{}\": {}", value, e.message);
        return e;
      }
      std::string n(*name);
      scrub.add(n, *v);
      if (std::find(used.begin(), used.end(), n) == used.end()) used.push_back(n);
      value = std::move(*v);
      return {};
    };
    ExecOptions eo;
    eo.env = c.env;
    for (auto& [k, v] : eo.env) {
      if (auto r = resolve(v); !r) {
        record("secret_unresolved", trace, fmt::format("\"error\":{}", q(r.error().message)));
        return std::move(r).error();
      }
    }
    std::map<std::string, std::string> files = c.files;
    std::map<std::string, std::string> file_secret;  // path -> secret name
    for (auto& [path, content] : files) {
      auto name = secret_ref(content);
      if (name) file_secret[path] = std::string(*name);
      if (auto r = resolve(content); !r) {
        record("secret_unresolved", trace, fmt::format("\"error\":{}", q(r.error().message)));
        return std::move(r).error();
      }
    }
    if (!used.empty()) record("secrets", trace, fmt::format("\"names\":{}", qlist(used)));

    // The sandbox: pooled when the call needs nothing a pool sandbox lacks.
    Sandbox sb;
    bool pooled = false;
    if (opts.pool && c.network.empty() && d.limits.memory_mib == 0) {
      auto l = opts.pool.lease();
      if (l) sb = std::move(*l), pooled = true;
    }
    if (!sb) {
      SandboxOptions so = opts.sandbox;
      if (d.limits.memory_mib) so.memory_mib = d.limits.memory_mib;
      so.network.allow = c.network;
      auto s = rt.create_sandbox(so);
      if (!s) {
        record("sandbox_failed", trace, fmt::format("\"error\":{}", q(s.error().message)));
        return std::move(s).error();
      }
      sb = std::move(*s);
    }
    res.sandbox_id = sb.id();
    const std::string& image_sha256 = image_digest();
    record("sandbox", trace,
           fmt::format("\"id\":{},\"pooled\":{},\"backend\":{},\"image\":{},\"image_manifest_sha256\":{},"
                       "\"memory_mib\":{},\"network\":{}",
                       q(sb.id()), pooled, q(sb.backend()), q(image_dir), q(image_sha256),
                       pooled ? 0 : (d.limits.memory_mib ? d.limits.memory_mib : opts.sandbox.memory_mib), qlist(c.network)));

    auto teardown = [&]() {
      auto r = sb.destroy();
      record("teardown", trace,
             fmt::format("\"id\":{},\"ok\":{},\"error\":{}", q(res.sandbox_id), r.ok(), q(r ? "" : r.error().message)));
    };

    for (const auto& [path, content] : files) {
      auto w = sb.write_file(path, content, file_secret.count(path) ? 0600 : 0644);
      if (auto it = file_secret.find(path); it != file_secret.end())
        record("file_write", trace, fmt::format("\"path\":{},\"size\":{},\"secret\":{}", q(path), content.size(), q(it->second)));
      else
        record("file_write", trace,
               fmt::format("\"path\":{},\"size\":{},\"sha256\":\"{}\"", q(path), content.size(), detail::sha256_hex(content)));
      if (!w) {
        Error e = std::move(w).error();
        e.message = scrub.scrub(e.message);
        teardown();
        return e;
      }
    }
    eo.argv = c.argv;
    eo.shell = c.command;
    eo.cwd = c.cwd;
    eo.user = c.user;
    eo.stdin_data = c.stdin_data;
    eo.timeout_ms = d.limits.timeout_ms;
    eo.output_cap = d.limits.output_cap;
    eo.cancel = c.cancel;
    auto make_filter = [&](const char* name) -> Result<OutFilter> {
      OutFilter f{scrub, std::nullopt};
      if (opts.dlp) {
        auto st = opts.dlp.open(name);
        if (!st) return std::move(st).error();
        f.dlp.emplace(std::move(*st));
      }
      return f;
    };
    auto out_f = make_filter("stdout"), err_f = make_filter("stderr");
    if (!out_f || !err_f) {
      teardown();
      return out_f ? std::move(err_f).error() : std::move(out_f).error();
    }
    if (c.on_stdout)
      eo.on_stdout = [&](std::string_view s) {
        if (out_f->blocked()) return;
        if (auto t = out_f->feed(s); !t.empty() && !out_f->blocked()) c.on_stdout(t);
      };
    if (c.on_stderr)
      eo.on_stderr = [&](std::string_view s) {
        if (err_f->blocked()) return;
        if (auto t = err_f->feed(s); !t.empty() && !err_f->blocked()) c.on_stderr(t);
      };
    record("exec", trace,
           fmt::format("\"argv\":{},\"text_sha256\":\"{}\",\"text_len\":{},\"env_keys\":{},\"cwd\":{},\"user\":{}",
                       c.command.empty() ? qlist(c.argv) : "null", detail::sha256_hex(text), text.size(), qkeys(c.env), q(c.cwd),
                       q(c.user)));
    if (opts.audit) (void)opts.audit.commit();  // what is about to run is on disk first
    auto r = sb.exec(eo);
    if (c.on_stdout)
      if (auto t = out_f->finish(); !t.empty() && !out_f->blocked()) c.on_stdout(t);
    if (c.on_stderr)
      if (auto t = err_f->finish(); !t.empty() && !err_f->blocked()) c.on_stderr(t);
    if (!r) {
      Error e = std::move(r).error();
      e.message = scrub.scrub(e.message);
      record("exec_failed", trace, fmt::format("\"error\":{}", q(e.message)));
      teardown();
      return e;
    }
    res.exec = std::move(*r);
    // Collected output (a stream without a callback) goes through the same filter.
    auto filter_all = [](OutFilter& f, std::string& data) {
      std::string out = f.feed(data);
      out += f.finish();
      data = std::move(out);
    };
    if (!c.on_stdout) filter_all(*out_f, res.exec.stdout_data);
    if (!c.on_stderr) filter_all(*err_f, res.exec.stderr_data);
    for (OutFilter* f : {&*out_f, &*err_f}) {
      if (!f->dlp) continue;
      for (const auto& x : f->dlp->findings()) {
        record("dlp_finding", trace,
               fmt::format("\"detector\":{},\"stream\":{},\"offset\":{},\"length\":{},\"mode\":\"{}\"", q(x.detector),
                           q(x.stream), x.offset, x.length, dlp_mode_name(x.mode)));
        res.findings.push_back(x);
      }
      for (const auto& x : f->dlp->anomalies()) {
        record("injection_anomaly", trace,
               fmt::format("\"rule\":{},\"stream\":{},\"offset\":{},\"length\":{},\"action\":\"{}\"", q(x.rule),
                           q(x.stream), x.offset, x.length, injection_action_name(x.action)));
        res.anomalies.push_back(x);
      }
      if (f->blocked() && !res.blocked) {
        res.blocked = true;
        res.denial = "output blocked: " + f->dlp->block_reason();
      }
    }
    if (res.blocked) {
      res.exec.stdout_data.clear();
      res.exec.stderr_data.clear();
      record("output_blocked", trace, fmt::format("\"reason\":{}", q(res.denial)));
    }
    res.ran = true;
    record("exit", trace,
           fmt::format("\"code\":{},\"signal\":{},\"timed_out\":{},\"cancelled\":{},\"truncated\":{},\"duration_us\":{},"
                       "\"stdout_bytes\":{},\"stderr_bytes\":{}",
                       res.exec.exit_code, res.exec.signal, res.exec.timed_out, res.exec.cancelled, res.exec.truncated,
                       res.exec.duration_us, res.exec.stdout_data.size(), res.exec.stderr_data.size()));
    teardown();
    return res;
  }
};

}  // namespace detail

Result<Gate> Gate::create(Runtime rt, GateOptions opts) {
  if (!rt) return make_error(Errc::kInvalidArgument, "gate: the runtime is empty");
  if (!opts.policy) opts.policy = Policy::default_policy();
  auto impl = std::make_shared<detail::GateImpl>();
  impl->rt = std::move(rt);
  impl->opts = std::move(opts);
  return Gate(std::move(impl));
}

Result<CallResult> Gate::call(ToolCall call) {
  if (!impl_) return make_error(Errc::kClosed, "gate: empty");
  return impl_->call(std::move(call));
}

Decision Gate::classify(const ToolCall& call) const {
  if (!impl_) return Decision{};
  return impl_->opts.policy.classify(call);
}

bool Gate::approve(std::string_view token, std::string_view who) {
  return impl_ && impl_->answer(token, detail::GateImpl::Answer::kGranted, who, "");
}

bool Gate::deny(std::string_view token, std::string_view reason, std::string_view who) {
  return impl_ && impl_->answer(token, detail::GateImpl::Answer::kDenied, who, reason);
}

}  // namespace ztee
