// ztee call / policy / audit: the control plane from the command line.
#include "policy_cmds.hpp"

#include <ztee/policy.hpp>

#include <fmt/format.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

namespace ztee::cli {

namespace {

constexpr int kExitError = 125;
constexpr int kExitDenied = 126;
constexpr int kExitTimeout = 124;

const char kCallUsage[] =
    "usage: ztee call --tool NAME [options] -- CMD [ARG...]\n"
    "\n"
    "Runs one tool call through the policy gate: classifies it, asks for approval\n"
    "when its tier says so, resolves secret references, runs it in a fresh microVM\n"
    "and records every step in the audit log. Exits 126 when the call is denied.\n"
    "\n"
    "options:\n"
    "  --policy FILE          JSON policy (default: the built-in one, `ztee policy default`)\n"
    "  --tool NAME            the tool's name (required)\n"
    "  --env KEY=VALUE        environment; VALUE may be secret://NAME\n"
    "  --file PATH=CONTENT    write a guest file first; CONTENT may be secret://NAME\n"
    "  --writes PATH          a path the call writes (classification)\n"
    "  --network HOST         a host/CIDR the call needs (classification and egress)\n"
    "  --label LABEL          a caller label, e.g. pii\n"
    "  --trace ID             request/trace id recorded with every audit record\n"
    "  --cwd DIR, --user NAME working directory and guest account\n"
    "  --audit FILE           append the audit records to FILE (hash-chained JSON Lines)\n"
    "  --audit-key-file FILE  also HMAC every record with the key in FILE\n"
    "  --durability MODE      fsync (default), batch or none\n"
    "  --secrets-dir DIR      resolve secret://NAME from DIR/NAME\n"
    "  --secrets-env          resolve secret://NAME from $ZTEE_SECRET_NAME\n"
    "  --approver-cmd CMD     host shell command asked for approvals: gets the call's JSON\n"
    "                         on stdin; exit 0 approves, anything else denies; its first\n"
    "                         output line names who answered (or why not)\n"
    "  --approval-timeout S   override the tier's approval deadline\n"
    "Without --approver-cmd, approvals are asked on the terminal, or denied when there is none.\n";

const char kPolicyUsage[] =
    "usage: ztee policy check FILE [--tool NAME [--label L] [--network H] [--writes P] [-- CMD...]]\n"
    "       ztee policy default\n"
    "\n"
    "check: loads FILE (line and reason on error) and lists its tiers and rules; with\n"
    "--tool, says which rule a sample call hits and what happens to it.\n"
    "default: prints the built-in policy.\n";

const char kAuditUsage[] =
    "usage: ztee audit verify FILE... [--key KEY | --key-file FILE]\n"
    "\n"
    "Verifies the hash chain (and with a key, every HMAC) of an audit log given\n"
    "oldest file first (FILE.1 FILE.2 ... FILE after rotation). Prints OK and the\n"
    "record count, or the first record that was edited, removed, reordered or\n"
    "inserted (exit 1).\n";

int usage(const std::string& msg, const char* text) {
  std::fprintf(stderr, "ztee: %s\n\n%s", msg.c_str(), text);
  return kExitError;
}

bool is_help(const std::string& a) { return a == "-h" || a == "--help"; }

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

// "--name VALUE" or "--name=VALUE" at args[i].
bool opt(const std::vector<std::string>& args, size_t& i, const char* name, std::string* out, std::string* err) {
  const std::string& a = args[i];
  size_t n = std::strlen(name);
  if (a.compare(0, n, name) != 0) return false;
  if (a.size() == n) {
    if (i + 1 >= args.size()) {
      *err = std::string(name) + " needs a value";
      return true;
    }
    *out = args[++i];
    ++i;
    return true;
  }
  if (a[n] != '=') return false;
  *out = a.substr(n + 1);
  ++i;
  return true;
}

const char* action_word(TierAction a) {
  switch (a) {
    case TierAction::kRun: return "runs at once";
    case TierAction::kAudit: return "is recorded, then runs";
    case TierAction::kApprove: return "waits for approval";
    case TierAction::kDeny: return "is denied";
  }
  return "is denied";
}

// Shared by call and policy check: the classification fields of a call.
bool call_option(const std::vector<std::string>& args, size_t& i, ToolCall& c, std::string* err) {
  std::string v;
  if (opt(args, i, "--tool", &v, err)) return c.tool = v, true;
  if (opt(args, i, "--label", &v, err)) return c.labels.push_back(v), true;
  if (opt(args, i, "--network", &v, err)) return c.network.push_back(v), true;
  if (opt(args, i, "--writes", &v, err)) return c.writes.push_back(v), true;
  return false;
}

// Runs `cmd` with `input` on stdin; returns its exit status and first output line.
std::pair<int, std::string> run_host(const std::string& cmd, const std::string& input) {
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) return {-1, "pipe failed"};
  pid_t pid = fork();
  if (pid < 0) return {-1, "fork failed"};
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  (void)!write(in[1], input.data(), input.size());
  close(in[1]);
  std::string text;
  char buf[512];
  for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
  close(out[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  std::string first = text.substr(0, text.find('\n'));
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), first};
}

int cmd_call(const std::vector<std::string>& args) {
  ToolCall c;
  std::string policy_path, audit_path, key_file, durability = "fsync", secrets_dir, approver_cmd, err, v;
  bool secrets_env = false;
  double approval_timeout_s = 0;
  size_t i = 0;
  for (; i < args.size();) {
    const std::string& a = args[i];
    if (is_help(a)) return std::fputs(kCallUsage, stdout), 0;
    if (a == "--") {
      ++i;
      break;
    }
    if (call_option(args, i, c, &err)) {
    } else if (opt(args, i, "--policy", &policy_path, &err) || opt(args, i, "--audit", &audit_path, &err) ||
               opt(args, i, "--audit-key-file", &key_file, &err) || opt(args, i, "--durability", &durability, &err) ||
               opt(args, i, "--secrets-dir", &secrets_dir, &err) || opt(args, i, "--approver-cmd", &approver_cmd, &err) ||
               opt(args, i, "--trace", &c.trace_id, &err) || opt(args, i, "--cwd", &c.cwd, &err) ||
               opt(args, i, "--user", &c.user, &err)) {
    } else if (opt(args, i, "--env", &v, &err) || opt(args, i, "--file", &v, &err)) {
      bool is_env = a.rfind("--env", 0) == 0;
      auto eq = v.find('=');
      if (err.empty() && (eq == std::string::npos || eq == 0))
        return usage(fmt::format("{}: expected {}, got: {}", is_env ? "--env" : "--file", is_env ? "KEY=VALUE" : "PATH=CONTENT", v), kCallUsage);
      if (err.empty()) (is_env ? c.env : c.files)[v.substr(0, eq)] = v.substr(eq + 1);
    } else if (opt(args, i, "--approval-timeout", &v, &err)) {
      char* end = nullptr;
      approval_timeout_s = std::strtod(v.c_str(), &end);
      if (err.empty() && (*end || approval_timeout_s <= 0)) return usage("--approval-timeout: not a positive number of seconds: " + v, kCallUsage);
    } else if (a == "--secrets-env") {
      secrets_env = true;
      ++i;
    } else {
      return usage("call: unknown option " + a, kCallUsage);
    }
    if (!err.empty()) return usage(err, kCallUsage);
  }
  std::vector<std::string> cmd(args.begin() + static_cast<long>(i), args.end());
  if (durability != "fsync" && durability != "batch" && durability != "none")
    return usage("--durability: expected fsync, batch or none, got: " + durability, kCallUsage);
  if (c.tool.empty()) return usage("call: --tool NAME is required", kCallUsage);
  if (cmd.empty()) return usage("call: no command given (after --)", kCallUsage);
  if (cmd.size() == 1 && cmd[0].find_first_of(" \t\n;|&") != std::string::npos)
    c.command = cmd[0];
  else
    c.argv = cmd;

  GateOptions go;
  if (!policy_path.empty()) {
    auto p = Policy::load(policy_path);
    if (!p) return std::fprintf(stderr, "ztee: %s\n", p.error().message.c_str()), kExitError;
    go.policy = *p;
  } else {
    go.policy = Policy::default_policy();
  }
  if (approval_timeout_s > 0) {
    PolicySpec spec = go.policy.spec();
    for (auto& t : spec.tiers) t.limits.approval_timeout_ms = static_cast<uint32_t>(approval_timeout_s * 1000);
    go.policy = std::move(Policy::from_spec(std::move(spec))).value();
  }
  if (!audit_path.empty()) {
    AuditOptions ao;
    ao.path = audit_path;
    if (durability == "fsync") ao.durability = Durability::kFsync;
    else if (durability == "batch") ao.durability = Durability::kBatch;
    else ao.durability = Durability::kNone;
    if (!key_file.empty()) {
      auto k = read_file(key_file);
      if (!k || k->empty()) return std::fprintf(stderr, "ztee: --audit-key-file %s: cannot read a key from it\n", key_file.c_str()), kExitError;
      ao.hmac_key = *k;
    }
    auto log = AuditLog::open(ao);
    if (!log) return std::fprintf(stderr, "ztee: %s\n", log.error().message.c_str()), kExitError;
    go.audit = *log;
  }
  std::vector<SecretResolver> chain;
  if (!secrets_dir.empty()) chain.push_back(secrets_from_dir(secrets_dir));
  if (secrets_env) chain.push_back(secrets_from_env());
  if (!chain.empty())
    go.secrets = [chain](std::string_view name) -> Result<std::string> {
      Result<std::string> last = make_error(Errc::kNotFound, "unknown secret");
      for (const auto& r : chain) {
        last = r(name);
        if (last || last.error().code != Errc::kNotFound) return last;
      }
      return last;
    };

  Gate* gate_ptr = nullptr;
  if (!approver_cmd.empty()) {
    go.approver = [&](const ApprovalRequest& req) {
      auto [status, line] = run_host(approver_cmd, req.description + "\n");
      if (status == 0) gate_ptr->approve(req.token, line.empty() ? "approver-cmd" : line);
      else gate_ptr->deny(req.token, line.empty() ? fmt::format("approver-cmd exited {}", status) : line, "approver-cmd");
    };
  } else if (isatty(STDIN_FILENO)) {
    go.approver = [&](const ApprovalRequest& req) {
      std::fprintf(stderr, "ztee: approval needed for %s\napprove? [y/N] ", req.description.c_str());
      std::fflush(stderr);
      char line[64] = {};
      bool yes = std::fgets(line, sizeof line, stdin) && (line[0] == 'y' || line[0] == 'Y');
      if (yes) gate_ptr->approve(req.token, fmt::format("terminal of uid {}", getuid()));
      else gate_ptr->deny(req.token, "answered no on the terminal", fmt::format("terminal of uid {}", getuid()));
    };
  }
  c.on_stdout = [](std::string_view d) { (void)!write(STDOUT_FILENO, d.data(), d.size()); };
  c.on_stderr = [](std::string_view d) { (void)!write(STDERR_FILENO, d.data(), d.size()); };

  auto rt = Runtime::create();
  if (!rt) return std::fprintf(stderr, "ztee: %s\n", rt.error().message.c_str()), kExitError;
  auto gate = Gate::create(*rt, std::move(go));
  if (!gate) return std::fprintf(stderr, "ztee: %s\n", gate.error().message.c_str()), kExitError;
  gate_ptr = &gate.value();
  auto res = gate->call(std::move(c));
  if (!res) return std::fprintf(stderr, "ztee: %s\n", res.error().message.c_str()), kExitError;
  if (!res->ran) {
    std::fprintf(stderr, "ztee: denied: %s (tier L%d, %s)\n", res->denial.c_str(), res->decision.tier,
                 res->decision.rule.empty() ? "no rule matched" : ("rule \"" + res->decision.rule + "\"").c_str());
    return kExitDenied;
  }
  const ExecResult& er = res->exec;
  (void)!write(STDOUT_FILENO, er.stdout_data.data(), er.stdout_data.size());
  (void)!write(STDERR_FILENO, er.stderr_data.data(), er.stderr_data.size());
  if (er.timed_out) return kExitTimeout;
  if (er.signal) return 128 + er.signal;
  return er.exit_code < 0 ? kExitError : er.exit_code;
}

int cmd_policy(const std::vector<std::string>& args) {
  if (args.empty()) return usage("policy: missing subcommand (check, default)", kPolicyUsage);
  if (is_help(args[0])) return std::fputs(kPolicyUsage, stdout), 0;
  if (args[0] == "default") {
    std::fputs(std::string(Policy::default_policy_json()).c_str(), stdout);
    return 0;
  }
  if (args[0] != "check") return usage("policy: unknown subcommand " + args[0], kPolicyUsage);
  if (args.size() < 2 || args[1].rfind("--", 0) == 0) return usage("policy check: FILE is missing", kPolicyUsage);
  auto p = Policy::load(args[1]);
  if (!p) return std::fprintf(stderr, "ztee: %s\n", p.error().message.c_str()), 1;
  ToolCall c;
  std::string err;
  size_t i = 2;
  for (; i < args.size();) {
    if (args[i] == "--") {
      ++i;
      break;
    }
    if (!call_option(args, i, c, &err)) return usage("policy check: unknown option " + args[i], kPolicyUsage);
    if (!err.empty()) return usage(err, kPolicyUsage);
  }
  for (; i < args.size(); ++i) c.argv.push_back(args[i]);
  if (c.tool.empty()) {
    const auto& spec = p->spec();
    std::printf("OK: %s: %zu tiers, %zu rules\n", args[1].c_str(), spec.tiers.size(), spec.rules.size());
    for (const auto& t : spec.tiers)
      std::printf("  L%d %s%s\n", t.level, tier_action_name(t.action),
                  t.limits.timeout_ms ? fmt::format(" (timeout {} ms)", t.limits.timeout_ms).c_str() : "");
    for (size_t k = 0; k < spec.rules.size(); ++k)
      std::printf("  %zu. \"%s\" (line %d) -> L%d\n", k + 1, spec.rules[k].name.c_str(), spec.rules[k].line, spec.rules[k].tier);
    std::printf("  anything else -> denied\n");
    return 0;
  }
  auto d = p->classify(c);
  if (d.rule_index < 0) {
    std::printf("no rule matches: the call is denied (fail closed)\n");
    return 0;
  }
  std::printf("rule %d \"%s\" (line %d) -> L%d %s: the call %s\n", d.rule_index + 1, d.rule.c_str(),
              p->spec().rules[static_cast<size_t>(d.rule_index)].line, d.tier, tier_action_name(d.action), action_word(d.action));
  return 0;
}

int cmd_audit(const std::vector<std::string>& args) {
  if (args.empty()) return usage("audit: missing subcommand (verify)", kAuditUsage);
  if (is_help(args[0])) return std::fputs(kAuditUsage, stdout), 0;
  if (args[0] != "verify") return usage("audit: unknown subcommand " + args[0], kAuditUsage);
  std::vector<std::string> files;
  std::string key, key_file, err;
  for (size_t i = 1; i < args.size();) {
    if (is_help(args[i])) return std::fputs(kAuditUsage, stdout), 0;
    if (opt(args, i, "--key-file", &key_file, &err) || opt(args, i, "--key", &key, &err)) {
      if (!err.empty()) return usage(err, kAuditUsage);
      continue;
    }
    if (args[i].rfind("--", 0) == 0) return usage("audit verify: unknown option " + args[i], kAuditUsage);
    files.push_back(args[i++]);
  }
  if (files.empty()) return usage("audit verify: no FILE given", kAuditUsage);
  if (!key_file.empty()) {
    auto k = read_file(key_file);
    if (!k || k->empty()) return std::fprintf(stderr, "ztee: --key-file %s: cannot read a key from it\n", key_file.c_str()), kExitError;
    key = *k;
  }
  auto rep = verify_audit_log(files, key);
  if (!rep.ok) {
    std::printf("TAMPERED: %s\n", rep.problem.c_str());
    return 1;
  }
  std::printf("OK: %llu records, chain intact%s\n", static_cast<unsigned long long>(rep.records),
              key.empty() ? " (no key: a rewrite of the whole chain would not show)" : ", every HMAC matches");
  return 0;
}

}  // namespace

int dispatch(const std::string& cmd, const std::vector<std::string>& args) {
  if (cmd == "call") return cmd_call(args);
  if (cmd == "policy") return cmd_policy(args);
  if (cmd == "audit") return cmd_audit(args);
  return -1;
}

}  // namespace ztee::cli
