// POST /v1/exec (see exec_api.hpp).
#include "serve/exec_api.hpp"

#include <fmt/format.h>
#include <simdjson.h>

#include <cctype>
#include <chrono>
#include <optional>

namespace ztee::serve {

namespace {

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::object;

constexpr uint32_t kDefaultTimeoutMs = 60000;
constexpr uint32_t kMaxTimeoutMs = 3600000;
constexpr uint64_t kDefaultOutput = 1u << 20;
constexpr uint64_t kMaxOutput = 32u << 20;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string err_body(int code, std::string_view message, std::string_view sandbox_id = {}) {
  return fmt::format("{{\"code\":{},\"message\":{}{}}}", code, json_str(message),
                     sandbox_id.empty() ? "" : ",\"sandbox_id\":" + json_str(sandbox_id));
}

bool has_nul(std::string_view s) { return s.find('\0') != std::string_view::npos; }

bool valid_user(std::string_view u) {
  if (u.empty() || u.size() > 32) return false;
  for (char c : u)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) return false;
  return true;
}

// "stdout": the text (bytes that are not UTF-8 shown as U+FFFD), and, only
// when there were such bytes, "stdout_base64": the exact bytes.
std::string output_fields(std::string_view name, std::string_view data) {
  std::string s = fmt::format("\"{}\":{}", name, json_str(data));
  if (!simdjson::validate_utf8(data.data(), data.size()))
    s += fmt::format(",\"{}_base64\":\"{}\"", name, base64_encode(data));
  return s;
}

}  // namespace

struct ExecApi::Job {
  uint64_t id = 0;
  ApiKey key;
  std::shared_ptr<HttpExchange> ex;
  std::chrono::steady_clock::time_point t0;
  std::string tmpl;
  ExecOptions eo;
  ExecCancel cancel;
  std::optional<Sandbox> sb;
  std::shared_ptr<Verdict> verdict;  // with a policy
  bool gone = false;
  bool done = false;
};

size_t ExecApi::sandboxes() const {
  size_t n = 0;
  for (auto& [_, j] : jobs_)
    if (j->sb) ++n;
  return n;
}

std::vector<Sandbox> ExecApi::abort_all() {
  shut_ = true;
  std::vector<Sandbox> out;
  for (auto& [_, j] : jobs_) {
    j->done = true;
    j->cancel.trigger();
    if (j->sb) out.push_back(*j->sb);
  }
  jobs_.clear();
  return out;
}

Result<ExecRequest> parse_exec_request(std::string_view body) {
  auto bad = [](std::string msg) { return make_error(Errc::kInvalidArgument, std::move(msg)); };
  if (body.empty()) return bad("empty body: send a JSON object such as {\"cmd\": \"echo hi\"}");
  thread_local simdjson::dom::parser parser;  // keeps its buffers between calls
  auto parsed = parser.parse(body.data(), body.size());
  object o;
  if (parsed.error() != simdjson::SUCCESS) return bad(fmt::format("malformed JSON body: {}", simdjson::error_message(parsed.error())));
  if (parsed.value_unsafe().get(o) != simdjson::SUCCESS) return bad("the body must be a JSON object");

  ExecRequest out;
  std::optional<std::string> cmd;
  std::vector<std::string> argv;
  bool have_argv = false;
  std::string user = "user";
  std::optional<std::string> stdin_data;
  uint32_t timeout_ms = kDefaultTimeoutMs;
  uint64_t max_output = kDefaultOutput;
  std::string cwd;
  std::string_view sv;
  for (auto field : o) {
    std::string_view k = field.key;
    element v = field.value;
    if (v.is_null()) continue;
    if (k == "template") {
      if (v.get(sv) != simdjson::SUCCESS || sv.empty()) return bad("template must be a non-empty string");
      out.tmpl = std::string(sv);
    } else if (k == "cmd") {
      if (v.get(sv) != simdjson::SUCCESS || sv.empty() || has_nul(sv))
        return bad("cmd must be a non-empty string without NUL bytes (run by /bin/bash -l -c)");
      cmd = std::string(sv);
    } else if (k == "argv") {
      array a;
      if (v.get(a) != simdjson::SUCCESS || a.size() == 0) return bad("argv must be a non-empty array of strings");
      argv.clear();
      for (auto x : a) {
        if (x.get(sv) != simdjson::SUCCESS || has_nul(sv)) return bad("argv must be a non-empty array of strings without NUL bytes");
        argv.emplace_back(sv);
      }
      if (argv[0].empty()) return bad("argv[0] (the program) must not be empty");
      have_argv = true;
    } else if (k == "env") {
      object eo;
      if (v.get(eo) != simdjson::SUCCESS) return bad("env must be an object of strings");
      for (auto e : eo) {
        if (e.value.get(sv) != simdjson::SUCCESS) return bad(fmt::format("env.{} must be a string", e.key));
        if (e.key.empty() || e.key.find('=') != std::string_view::npos || has_nul(e.key) || has_nul(sv))
          return bad(fmt::format("env: {} is not a usable variable (names must be non-empty, without '=' or NUL)",
                                 json_str(e.key)));
        out.exec.env[std::string(e.key)] = std::string(sv);
      }
    } else if (k == "cwd") {
      if (v.get(sv) != simdjson::SUCCESS || sv.empty() || sv.front() != '/' || has_nul(sv))
        return bad("cwd must be an absolute path");
      cwd = std::string(sv);
    } else if (k == "user") {
      if (v.get(sv) != simdjson::SUCCESS || !valid_user(sv))
        return bad("user must be a guest account name or uid (letters, digits, '_', '-', '.'; at most 32)");
      user = std::string(sv);
    } else if (k == "stdin" || k == "stdin_base64") {
      if (stdin_data) return bad("give stdin or stdin_base64, not both");
      if (v.get(sv) != simdjson::SUCCESS) return bad(fmt::format("{} must be a string", k));
      if (k == "stdin") {
        stdin_data = std::string(sv);
      } else {
        auto dec = base64_decode(sv);
        if (!dec) return bad("stdin_base64 is not valid base64");
        stdin_data = std::move(*dec);
      }
    } else if (k == "timeout_ms") {
      uint64_t t = 0;
      if (v.get(t) != simdjson::SUCCESS || t < 1 || t > kMaxTimeoutMs)
        return bad(fmt::format("timeout_ms must be an integer 1..{}", kMaxTimeoutMs));
      timeout_ms = static_cast<uint32_t>(t);
    } else if (k == "max_output_bytes") {
      if (v.get(max_output) != simdjson::SUCCESS || max_output < 1 || max_output > kMaxOutput)
        return bad(fmt::format("max_output_bytes must be an integer 1..{}", kMaxOutput));
    } else {
      return bad(fmt::format("unknown field {} (known: template, cmd, argv, env, cwd, user, stdin, stdin_base64, "
                             "timeout_ms, max_output_bytes)",
                             json_str(k)));
    }
  }
  if (cmd && have_argv) return bad("give cmd or argv, not both");
  if (!cmd && !have_argv) return bad("cmd (a shell command line) or argv (an array of strings) is required");
  out.exec.argv = cmd ? std::vector<std::string>{"/bin/bash", "-l", "-c", *cmd} : std::move(argv);
  out.exec.user = user;
  out.exec.cwd = !cwd.empty() ? cwd : user == "root" ? "/root" : user == "user" ? "/home/user" : "/";
  out.exec.stdin_data = std::move(stdin_data);
  out.exec.timeout_ms = timeout_ms;
  out.exec.output_cap = max_output;
  return out;
}

void ExecApi::handle(HttpRequest& req, std::shared_ptr<HttpExchange> ex, const ApiKey& key) {
  if (req.method != "POST") {
    ex->respond(405, "application/json", err_body(405, "/v1/exec takes POST with a JSON body"), {{"Allow", "POST"}});
    return;
  }
  auto parsed = parse_exec_request(req.body);
  if (!parsed) {
    ex->respond(400, "application/json", err_body(400, parsed.error().message));
    return;
  }
  if (host_.check) {
    std::vector<std::string> argv = parsed->exec.argv;
    auto r = std::make_shared<ExecRequest>(std::move(parsed.value()));
    host_.check(argv, key, [this, ex, key, r](Verdict v) {
      if (shut_) return;
      if (!v.allowed) return ex->respond(403, "application/json", err_body(403, v.message));
      if (ex->gone()) {
        if (host_.exited) host_.exited(v, key, "", make_error(Errc::kClosed, "the client left before the call could run"));
        return;
      }
      apply_tier_limits(v.decision.limits, &r->exec.timeout_ms, &r->exec.output_cap);
      run(std::move(*r), ex, key, std::make_shared<Verdict>(std::move(v)));
    });
    return;
  }
  run(std::move(parsed.value()), std::move(ex), key, nullptr);
}

void ExecApi::run(ExecRequest parsed, std::shared_ptr<HttpExchange> ex, const ApiKey& key, std::shared_ptr<Verdict> verdict) {
  auto job = std::make_shared<Job>();
  std::string tmpl = parsed.tmpl;
  job->eo = std::move(parsed.exec);
  job->verdict = std::move(verdict);

  std::string why;
  auto start = host_.starter(tmpl, &why);
  if (!start) {
    ex->respond(404, "application/json", err_body(404, why));
    return;
  }
  if (!host_.admit(key, *ex)) return;

  job->id = next_job_++;
  job->key = key;
  job->ex = ex;
  job->t0 = std::chrono::steady_clock::now();
  job->tmpl = tmpl;
  job->cancel = ExecCancel::create();
  job->eo.cancel = job->cancel;
  jobs_[job->id] = job;

  std::weak_ptr<Job> wj = job;
  ex->on_gone([this, wj] {
    auto j = wj.lock();
    if (!j || j->done) return;
    j->gone = true;
    j->cancel.trigger();
    host_.log(fmt::format("exec {}: the client disconnected; killing its command{}", j->id,
                          j->sb ? " in sandbox " + j->sb->id() : ""));
  });

  host_.offload([this, start = std::move(start), job] {
    auto r = std::make_shared<Result<Sandbox>>(start());
    host_.post([this, job, r] {
      if (shut_ || job->done) return;  // a started sandbox is destroyed with its last handle
      if (!*r) {
        int st = r->error().code == Errc::kTimeout ? 503 : 500;
        return finish(job, st, err_body(st, "sandbox start failed: " + r->error().message), ExecOutcome::kError);
      }
      job->sb = std::move(r->value());
      if (job->gone) {
        Sandbox sb = *job->sb;
        host_.offload([this, sb, job]() mutable {
          auto d = sb.destroy();
          if (host_.metrics) host_.metrics->sandbox_destroyed(static_cast<bool>(d));
          host_.post([this, job] { finish(job, 499, "", ExecOutcome::kClientGone); });
        });
        return;
      }
      ExecOptions eo = std::move(job->eo);
      job->sb->exec_async(std::move(eo), [this, job](Result<ExecResult> x) {
        auto xr = std::make_shared<Result<ExecResult>>(std::move(x));
        host_.post([this, job, xr] {
          if (shut_ || job->done) return;
          int status = 200;
          std::string body;
          ExecOutcome outcome;
          std::string id = job->sb->id();
          if (job->verdict && host_.exited) host_.exited(*job->verdict, job->key, id, *xr);
          if (!*xr) {
            status = 502;
            body = err_body(502, "the sandbox failed while running the command: " + xr->error().message, id);
            outcome = ExecOutcome::kError;
          } else {
            const ExecResult& x = **xr;
            outcome = job->gone      ? ExecOutcome::kClientGone
                      : x.timed_out  ? ExecOutcome::kTimeout
                      : x.exit_code == 0 && !x.signal ? ExecOutcome::kExitZero
                                                      : ExecOutcome::kExitNonzero;
            // duration_ms is filled in after the teardown.
            body = fmt::format(
                "{{\"sandbox_id\":{},\"template\":{},\"exit_code\":{},\"signal\":{},\"timed_out\":{},\"truncated\":{},{},{},"
                "\"exec_ms\":{:.3f},\"duration_ms\":",
                json_str(id), json_str(job->tmpl), x.exit_code, x.signal, x.timed_out ? "true" : "false",
                x.truncated ? "true" : "false", output_fields("stdout", x.stdout_data),
                output_fields("stderr", x.stderr_data), static_cast<double>(x.duration_us) / 1000.0);
          }
          Sandbox sb = *job->sb;
          host_.offload([this, sb, job, status, body = std::move(body), outcome]() mutable {
            auto d = sb.destroy();
            if (host_.metrics) host_.metrics->sandbox_destroyed(static_cast<bool>(d));
            if (!d) host_.log(fmt::format("exec {}: teardown of sandbox {}: {}", job->id, sb.id(), d.error().message));
            host_.post([this, job, status, body = std::move(body), outcome]() mutable {
              if (status == 200) body += fmt::format("{:.3f}}}", seconds_since(job->t0) * 1000.0);
              finish(job, job->gone ? 499 : status, std::move(body), outcome);
            });
          });
        });
      });
    });
  });
}

void ExecApi::finish(const std::shared_ptr<Job>& job, int status, std::string body, ExecOutcome outcome) {
  if (job->done) return;
  job->done = true;
  jobs_.erase(job->id);
  host_.release(job->key);
  double secs = seconds_since(job->t0);
  if (host_.metrics) host_.metrics->exec_done(outcome, secs);
  if (outcome == ExecOutcome::kClientGone)
    host_.log(fmt::format("exec {}: sandbox {} destroyed after its client left", job->id, job->sb ? job->sb->id() : "(none)"));
  if (status != 499) job->ex->respond(status, "application/json", std::move(body));
  job->ex.reset();
}

}  // namespace ztee::serve
