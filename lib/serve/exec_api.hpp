// POST /v1/exec: a one-shot JSON API for orchestrators that do not speak
// E2B's protocol. One call = a sandbox (leased from the warm pool when its
// template has one, else booted or cloned), one command, the sandbox
// destroyed, the output returned:
//
//   request  {"template": "base", "cmd": "echo hi" | "argv": ["echo", "hi"],
//             "env": {"K": "V"}, "cwd": "/tmp", "user": "user" | "root" | ...,
//             "stdin": "text" | "stdin_base64": "...", "timeout_ms": 60000,
//             "max_output_bytes": 1048576}
//   response {"sandbox_id", "template", "exit_code", "signal", "timed_out",
//             "truncated", "stdout", "stderr", ["stdout_base64"],
//             ["stderr_base64"], "duration_ms", "exec_ms"}
//
// Authenticated by X-API-Key; each call holds one of its key's concurrent
// sandboxes (429 + Retry-After beyond). The sandbox is destroyed before the
// answer is sent, and also when the client disconnects first (the command is
// killed). Loop thread only, except where said.
#pragma once

#include <ztee/ztee.hpp>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "serve/guard.hpp"
#include "serve/http.hpp"
#include "serve/metrics.hpp"
#include "serve/util.hpp"

namespace ztee::serve {

// A checked /v1/exec request.
struct ExecRequest {
  std::string tmpl = "base";
  ExecOptions exec;  // argv, env, cwd, user, stdin_data, timeout_ms, output_cap
};
// Parses and checks a /v1/exec body. Fails (kInvalidArgument) with a message
// that names the field and what it must be. Any thread.
Result<ExecRequest> parse_exec_request(std::string_view body);

// What /v1/exec needs from the server around it.
struct ExecHost {
  // Runs fn on the loop thread (dropped after shutdown). Any thread.
  std::function<void(std::function<void()>)> post;
  // Runs fn on a worker thread (may block).
  std::function<void(std::function<void()>)> offload;
  // A function (run on a worker) that starts a sandbox of the template, or
  // nullptr with *error set when there is no such template.
  std::function<std::function<Result<Sandbox>()>(std::string_view tmpl, std::string* error)> starter;
  // Takes one of the key's sandbox slots, or answers 429 itself and returns
  // false; release gives the slot back.
  std::function<bool(const ApiKey&, HttpExchange&)> admit;
  std::function<void(const ApiKey&)> release;
  std::function<void(std::string_view)> log;
  Metrics* metrics = nullptr;
  // With a policy (serve/guard.hpp): classifies the command (argv as it
  // will run) and calls then with the verdict on the loop thread; a refused
  // call is answered 403, an allowed one runs within its tier's limits and
  // its end is given to exited. Empty: every command runs.
  std::function<void(const std::vector<std::string>& argv, const ApiKey&, std::function<void(Verdict)> then)> check;
  std::function<void(const Verdict&, const ApiKey&, const std::string& sandbox, const Result<ExecResult>&)> exited;
};

class ExecApi {
 public:
  explicit ExecApi(ExecHost host) : host_(std::move(host)) {}
  void handle(HttpRequest& req, std::shared_ptr<HttpExchange> ex, const ApiKey& key);
  // Calls in flight that hold a sandbox.
  size_t sandboxes() const;
  // At shutdown: kills every command and returns the sandboxes, for the
  // caller to destroy; later completions are dropped.
  std::vector<Sandbox> abort_all();

  struct Job;

 private:
  void run(ExecRequest r, std::shared_ptr<HttpExchange> ex, const ApiKey& key, std::shared_ptr<Verdict> verdict);
  void finish(const std::shared_ptr<Job>& job, int status, std::string body, ExecOutcome outcome);

  ExecHost host_;
  std::map<uint64_t, std::shared_ptr<Job>> jobs_;
  uint64_t next_job_ = 1;
  bool shut_ = false;
};

}  // namespace ztee::serve
