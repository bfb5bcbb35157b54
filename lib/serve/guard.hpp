// The policy gate and audit log in front of `ztee serve` (--policy,
// --audit, --approver-url). Off unless --policy is given.
//
// What becomes a ToolCall (classified by ztee::Policy, see ztee/policy.hpp):
//   "e2b.commands.run"  process.Process/Start and POST /v1/exec: the command
//                       text rules match is the shell line of `bash -l -c LINE`
//                       (how the SDK sends every commands.run), else the argv
//                       joined with spaces;
//   "e2b.files.write"   POST /files, filesystem.Filesystem/MakeDir, Move and
//                       Remove: argv ["write"|"mkdir"|"move"|"remove", paths...],
//                       writes = the paths (so writes_files rules match).
// Labels: "key:<API key name>", "meta:K=V" for each sandbox metadata entry,
// and "stdin" for a command started with its stdin open. Network: always none
// (the server's sandboxes have no network). Reads (GET /files, Stat,
// ListDir), List, Connect, signals and what is later written to an open
// stdin (SendInput, StreamInput) are not classified: a command that reads
// its stdin (a shell, an interpreter) runs whatever it is sent, so a policy
// that must see every command should give "stdin"-labelled calls an approve
// or deny tier.
//
// Actions: run -> runs; audit -> recorded, runs; approve -> the call's JSON
// is POSTed to the approver URL, which answers {"approve": true, "by": "..."}
// or {"approve": false, "reason": "..."}; no approver, an error, a malformed
// reply or no reply before the tier's approval deadline denies (fail
// closed); deny -> refused. The approver is asked on its own thread: the
// server's loop never waits. A tier's timeout_ms and output_cap bound the
// command.
//
// Audit records (hash-chained, ztee::AuditLog): sandbox_create,
// sandbox_kill, call, decision, approval_asked / approval_granted /
// approval_denied / approval_expired, denied, exit. Each carries the
// sandbox id and the API key's name, never the key; commands are recorded
// by sha256 and length, as the Gate records them.
#pragma once

#include <ztee/policy.hpp>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ztee::serve {

// The tool names of the classified calls.
inline constexpr std::string_view kToolCommand = "e2b.commands.run";
inline constexpr std::string_view kToolFilesWrite = "e2b.files.write";

// Who asks, from which sandbox: recorded with every record of a call.
struct CallContext {
  std::string sandbox;   // "" when the call has no sandbox yet (/v1/exec)
  std::string key_name;  // the API key's name from the key file ("" when unnamed)
  std::map<std::string, std::string> metadata;
};

// The ToolCall for a command (argv as the server will run it).
// with_stdin: the command is started with its stdin open (SendInput later
// feeds it); the call then carries the label "stdin".
ToolCall command_tool_call(const std::vector<std::string>& argv, const CallContext& ctx, bool with_stdin = false);
// The ToolCall for a file operation (op: write, mkdir, move, remove).
ToolCall files_tool_call(std::string_view op, const std::vector<std::string>& paths, const CallContext& ctx);

// One line a refused caller sees: names the tier, the rule and why.
std::string denial_message(const Decision& d, std::string_view why);

struct ApprovalReply {
  bool approve = false;
  std::string by;      // who answered ("approver-url" when the reply names nobody)
  std::string reason;  // a denial's reason
};
// Reads the approver's HTTP reply. Anything but a 200 with a JSON object
// whose "approve" is a boolean is a denial, with the reason saying why.
ApprovalReply parse_approval_reply(long http_status, std::string_view body);

// Bounds an exec by the tier's limits: the smaller of each non-zero pair.
void apply_tier_limits(const TierLimits& l, uint32_t* timeout_ms, uint64_t* output_cap);

struct Verdict {
  bool allowed = false;
  std::string message;  // when refused: denial_message(...)
  Decision decision;
  std::string trace;    // the audit trace id of this call
};

struct GuardOptions {
  Policy policy;
  AuditLog audit;            // empty: nothing is recorded
  std::string approver_url;  // empty: approve tiers are denied
  // Runs fn on the server's loop thread. Any thread.
  std::function<void(std::function<void()>)> post;
  std::function<void(std::string_view)> log;
};

// Loop thread only, except where said.
class CallGuard {
 public:
  explicit CallGuard(GuardOptions o);
  ~CallGuard() { stop(); }
  // Classifies call, records it, asks the approver when the tier says so;
  // then (on the loop thread; at once unless an approval is asked) calls
  // then with the verdict.
  void check(ToolCall call, const CallContext& ctx, std::function<void(Verdict)> then);
  // Records how an allowed command ended.
  void exit(const Verdict& v, const CallContext& ctx, const Result<ExecResult>& r);
  // Records a sandbox's create or kill.
  void sandbox_event(std::string_view event, const CallContext& ctx, std::string_view detail);
  // Ends pending approvals (denied) and joins their threads.
  void stop();

 private:
  void record(std::string_view event, std::string_view trace, const CallContext& ctx, std::string_view fields);

  GuardOptions o_;
  // Approvals in flight, each on its own detached thread; stop() waits for them.
  std::mutex mu_;
  std::condition_variable cv_;
  size_t asking_ = 0;
  std::atomic<bool> stopping_{false};
};

}  // namespace ztee::serve
