// libztee control plane: tool calls classified by a policy into risk tiers,
// approvals that fail closed, secrets passed by reference, and a
// tamper-evident audit log. The raw Sandbox API stays; a Gate is how agent
// frameworks are meant to run tool calls.
//
// Trust model: the gate decides whether a call runs and with which limits,
// records what happened, and keeps secret values out of everything the caller
// sees. It cannot tell a benign program from a malicious one that matches the
// same rule: containing what runs is the microVM's job.
#pragma once

#include <ztee/dlp.hpp>
#include <ztee/result.hpp>
#include <ztee/ztee.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ztee {

namespace detail {
class PolicyImpl;
class AuditLogImpl;
class GateImpl;
}  // namespace detail

// ---------------------------------------------------------------- tool calls

// One request of an agent to run a tool.
struct ToolCall {
  std::string tool;                          // the tool's name, e.g. "python", "read_file"
  std::string command;                       // a shell command, or
  std::vector<std::string> argv;             // an argv (used when command is empty)
  std::map<std::string, std::string> env;    // values may be secret references: "secret://NAME"
  std::string cwd;
  std::string user;
  std::optional<std::string> stdin_data;
  std::map<std::string, std::string> files;  // written into the sandbox first; "secret://NAME" is resolved
  std::vector<std::string> writes;           // paths the call says it writes (files' paths count too)
  std::vector<std::string> network;          // hosts/CIDRs the call asks to reach
  std::string trace_id;                      // the caller's request/trace id (recorded)
  std::vector<std::string> labels;           // free-form, e.g. "pii", "readonly"
  std::function<void(std::string_view)> on_stdout;  // scrubbed of secrets
  std::function<void(std::string_view)> on_stderr;
  ExecCancel cancel;

  // The text rules' regexes are matched against: command, else argv joined
  // with spaces.
  std::string text() const;
};

// ------------------------------------------------------------------- policy

enum class TierAction { kRun, kAudit, kApprove, kDeny };
const char* tier_action_name(TierAction a);

struct TierLimits {
  uint32_t timeout_ms = 0;          // 0: the sandbox default
  uint64_t output_cap = 0;          // 0: the sandbox default
  uint32_t memory_mib = 0;          // 0: the gate's default sandbox size
  std::vector<std::string> network; // hosts/CIDRs calls at this tier may ask for
  uint32_t approval_timeout_ms = 0; // approve tiers: deadline for an answer (0: 300000)
};

struct Tier {
  int level = 0;  // 0..5 ("L0".."L5")
  TierAction action = TierAction::kDeny;
  TierLimits limits;
};

// A rule matches when every condition it sets holds; unset conditions match
// anything. Lists are any-of.
struct PolicyRule {
  std::string name;
  std::vector<std::string> tool;     // fnmatch globs over ToolCall::tool
  std::string command;               // RE2 regex searched in ToolCall::text()
  std::optional<bool> network;       // the call asks for network (or not)
  std::optional<bool> writes_files;  // the call lists paths it writes (or not)
  std::vector<std::string> labels;   // any of these labels present
  int tier = 5;
  int line = 0;                      // where it was defined (0: built in code)
};

struct PolicySpec {
  std::vector<Tier> tiers;           // at most one per level
  std::vector<PolicyRule> rules;     // ordered: the first match decides
};

struct Decision {
  int tier = 5;
  TierAction action = TierAction::kDeny;
  std::string rule;       // the matching rule's name; "" when none matched
  int rule_index = -1;    // -1: no rule matched (the call is denied: fail closed)
  TierLimits limits;
  std::string reason;     // one line, for logs and errors
};

class Policy {
 public:
  Policy() = default;
  // Parses a JSON policy. Unknown keys, bad tiers/actions, invalid regexes and
  // rules naming an undefined tier are refused with "line N: reason".
  static Result<Policy> parse(std::string_view json, std::string_view origin = "policy");
  static Result<Policy> load(const std::string& path);
  static Result<Policy> from_spec(PolicySpec spec);
  // The policy that ships with libztee (read-only tools L0 run; internal
  // writes L2 audit; code execution, destructive writes, network and PII L4
  // approve; anything else denied). Its JSON text: default_policy_json().
  static Policy default_policy();
  static std::string_view default_policy_json();

  Decision classify(const ToolCall& call) const;
  const PolicySpec& spec() const;
  explicit operator bool() const { return static_cast<bool>(impl_); }

 private:
  explicit Policy(std::shared_ptr<const detail::PolicyImpl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const detail::PolicyImpl> impl_;
};

// ---------------------------------------------------------------- audit log

enum class Durability {
  kFsync,  // fdatasync after every record: a returned append survives power loss
  kBatch,  // fdatasync at most every batch_ms: power loss loses up to batch_ms of records
  kNone,   // left to the kernel: power loss loses what the page cache held (~30 s)
};

struct AuditOptions {
  std::string path;                  // JSON Lines file, created 0600 if missing
  Durability durability = Durability::kFsync;  // as in C, Python, Go and the CLI
  uint32_t batch_ms = 100;
  std::string hmac_key;              // non-empty: every record also carries an HMAC-SHA256
  uint64_t rotate_bytes = 0;         // >0: rename to <path>.<n> past this size; the chain continues
};

// Append-only, hash-chained JSON Lines. Every record has "seq", "ts",
// "trace", "event", the fields given, "prev" (sha256 of the previous record's
// line, 64 zeros for the first) and, with a key, "hmac". Appends from several
// processes to one file are serialised with flock and keep one chain.
class AuditLog {
 public:
  AuditLog() = default;
  static Result<AuditLog> open(AuditOptions opts);
  // `fields` is the inner part of a JSON object (`"k":v,...`), may be empty.
  Result<uint64_t> append(std::string_view event, std::string_view trace_id, std::string_view fields);
  // Like append, but under kFsync the record is synced by the next commit()
  // (or a later synced append) instead of at once: for writers that batch
  // the records of one step, e.g. the gate, which commits before a command
  // runs and before a call returns.
  Result<uint64_t> append_deferred(std::string_view event, std::string_view trace_id, std::string_view fields);
  // kFsync: fdatasync if a deferred record is not yet on disk; else nothing.
  Result<void> commit();
  Result<void> flush();  // fdatasync now, whatever the durability
  const std::string& path() const;
  explicit operator bool() const { return static_cast<bool>(impl_); }

 private:
  explicit AuditLog(std::shared_ptr<detail::AuditLogImpl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<detail::AuditLogImpl> impl_;
};

struct AuditVerifyReport {
  bool ok = false;
  uint64_t records = 0;
  std::string problem;  // the first problem: "record 7 (file F line 7): edited ..."
};

// Verifies one chain across files given oldest first (a rotated log:
// path.1, path.2, ..., path). With a key, every HMAC is checked too, which
// also detects a rewritten chain. A removed tail cannot be seen from the
// files alone: compare the last seq with what the gate reported.
AuditVerifyReport verify_audit_log(const std::vector<std::string>& files, std::string_view hmac_key = {});

// ------------------------------------------------------------------ secrets

// Looks a secret up by name: its value, or an error (kNotFound when unknown).
using SecretResolver = std::function<Result<std::string>(std::string_view name)>;

// Built-in resolvers: a file per secret under dir (dir/NAME), and the host
// environment variable prefix+NAME.
SecretResolver secrets_from_dir(std::string dir);
SecretResolver secrets_from_env(std::string prefix = "ZTEE_SECRET_");

// Replaces every occurrence of the registered values, and of their hex and
// base64 forms, with "[secret:NAME]". Streaming: feed() holds back the bytes
// that could still start a match and returns the rest; finish() returns
// what is left.
class SecretScrubber {
 public:
  void add(std::string name, std::string_view value);
  bool empty() const { return patterns_.empty(); }
  std::string feed(std::string_view chunk);
  std::string finish();
  std::string scrub(std::string_view whole);  // feed + finish on a fresh state

 private:
  struct Pattern {
    std::string bytes;
    std::string name;
  };
  std::string replace_all(std::string_view s, size_t* safe_end, bool final);
  std::vector<Pattern> patterns_;
  size_t longest_ = 0;
  std::string pending_;
};

// --------------------------------------------------------------------- gate

struct ApprovalRequest {
  std::string token;        // answer with Gate::approve / Gate::deny
  std::string description;  // JSON: tool, text, env keys, writes, network, labels, tier, rule, trace
  std::chrono::steady_clock::time_point deadline;
};

// Called on the thread running the call; may answer at once or later from any
// thread. Throwing counts as a denial.
using Approver = std::function<void(const ApprovalRequest&)>;

struct GateOptions {
  Policy policy;                     // empty: Policy::default_policy()
  AuditLog audit;                    // empty: nothing is recorded (not recommended)
  Approver approver;                 // empty: approve tiers are denied
  SecretResolver secrets;            // empty: secret references fail the call
  SandboxOptions sandbox;            // for calls not served by the pool
  Pool pool;                         // optional: run/audit calls without network lease from it
  // Output DLP and injection rules over stdout/stderr (after secrets are
  // scrubbed), streamed and collected; findings and anomalies are recorded
  // (never their values). A block-mode finding or a fail-action rule makes
  // the call's output withheld (CallResult::blocked). Empty: off.
  DlpScanner dlp;
};

struct CallResult {
  Decision decision;
  bool ran = false;           // false: denied (decision.reason / denial say why)
  std::string denial;         // why it did not run
  std::string approved_by;    // approve tiers: who answered
  ExecResult exec;            // stdout/stderr scrubbed of secrets (and filtered by DLP)
  std::string sandbox_id;
  bool blocked = false;       // DLP blocked the output: exec's stdout/stderr are empty,
                              // denial says why (streamed chunks before the finding
                              // were delivered; the finding itself never was)
  std::vector<DlpFinding> findings;        // DLP, both streams
  std::vector<InjectionAnomaly> anomalies;
};

class Gate {
 public:
  Gate() = default;
  static Result<Gate> create(Runtime rt, GateOptions opts);
  // Classifies, asks for approval when the tier says so, resolves secrets,
  // runs the call in a fresh (or pooled) sandbox that is destroyed after it,
  // and records every step. A denied call is a successful Result with ran =
  // false; errors are failures to run an allowed call.
  Result<CallResult> call(ToolCall call);
  Decision classify(const ToolCall& call) const;
  // Answers a pending approval; false when the token is unknown or already
  // answered or expired (the late answer is ignored and recorded).
  bool approve(std::string_view token, std::string_view who = "approver");
  bool deny(std::string_view token, std::string_view reason, std::string_view who = "approver");
  explicit operator bool() const { return static_cast<bool>(impl_); }

 private:
  explicit Gate(std::shared_ptr<detail::GateImpl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<detail::GateImpl> impl_;
};

}  // namespace ztee
