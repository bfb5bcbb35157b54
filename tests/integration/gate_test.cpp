// The policy gate against real microVMs: every tier's action, approvals
// (granted, denied, late, from another thread, a throwing approver), secrets
// by reference kept out of every output and of the audit log, and the log's
// chain afterwards.
#include <ztee/policy.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common.hpp"
#include "../why.hpp"

using namespace std::chrono_literals;
using ztee::Errc;
using ztee::TierAction;

namespace {

constexpr std::string_view kPolicy = R"({
  "version": 1,
  "tiers": {
    "L0": {"action": "run", "timeout_ms": 20000},
    "L2": {"action": "audit", "timeout_ms": 20000},
    "L4": {"action": "approve", "approval_timeout_ms": 1500},
    "L5": {"action": "deny"}
  },
  "rules": [
    {"name": "forbidden", "tool": "format_disk", "tier": "L5"},
    {"name": "reads", "tool": ["read_file", "cat"], "tier": "L0"},
    {"name": "writes", "tool": "write_file", "tier": "L2"},
    {"name": "code", "tool": ["python", "shell"], "tier": "L4"}
  ]
})";

constexpr std::string_view kSecret = "zt-9f3Kq2-LIVE-7781";

struct GateFixture {
  std::string dir;
  std::string log_path;
  ztee::Pool pool;
  ztee::Gate gate;
  ztee::Approver approver;  // swapped per test through the lambda below

  GateFixture() {
    dir = test::state_dir() + "/gate";
    std::filesystem::create_directories(dir + "/secrets");
    std::ofstream(dir + "/secrets/API_KEY") << kSecret << "\n";
    log_path = dir + "/audit.jsonl";
    ztee::PoolOptions po;
    po.min_ready = 1;
    po.max_total = 2;
    auto p = test::runtime().create_pool(po);
    if (!p) FAIL("create_pool: " << p.error().message);
    pool = std::move(*p);
    auto policy = ztee::Policy::parse(kPolicy);
    REQUIRE(policy.ok());
    ztee::AuditOptions ao;
    ao.path = log_path;
    ao.hmac_key = "test-key";
    ao.durability = ztee::Durability::kFsync;
    auto log = ztee::AuditLog::open(ao);
    REQUIRE(log.ok());
    ztee::GateOptions go;
    go.policy = *policy;
    go.audit = *log;
    go.pool = pool;
    go.secrets = ztee::secrets_from_dir(dir + "/secrets");
    go.approver = [this](const ztee::ApprovalRequest& r) {
      if (approver) approver(r);
    };
    auto g = ztee::Gate::create(test::runtime(), std::move(go));
    REQUIRE(g.ok());
    gate = std::move(*g);
  }

  std::string log_text() const {
    std::ifstream in(log_path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  uint64_t leases() const { return pool.stats().leases; }
};

GateFixture& fx() {
  static GateFixture f;
  return f;
}

ztee::ToolCall tool_call(std::string tool, std::string cmd, std::string trace) {
  ztee::ToolCall c;
  c.tool = std::move(tool);
  c.command = std::move(cmd);
  c.trace_id = std::move(trace);
  return c;
}

bool has(const std::string& s, std::string_view sub) { return s.find(sub) != std::string::npos; }

}  // namespace

TEST_CASE("gate: run, audit and deny tiers; a call no rule matches is denied before any sandbox") {
  auto& f = fx();
  auto r = f.gate.call(tool_call("read_file", "cat /etc/hostname >/dev/null; echo read-ok", "t-run"));
  REQUIRE_MESSAGE(r.ok(), why(r));
  CHECK(r->ran);
  CHECK(r->decision.tier == 0);
  CHECK(r->decision.action == TierAction::kRun);
  CHECK(r->exec.stdout_data == "read-ok\n");

  auto w = tool_call("write_file", "echo data > /tmp/f && cat /tmp/f", "t-audit");
  w.writes = {"/tmp/f"};
  r = f.gate.call(w);
  REQUIRE(r.ok());
  CHECK(r->ran);
  CHECK(r->decision.action == TierAction::kAudit);
  CHECK(r->exec.stdout_data == "data\n");

  uint64_t before = f.leases();
  r = f.gate.call(tool_call("format_disk", "mkfs /dev/vda", "t-deny"));
  REQUIRE(r.ok());
  CHECK_FALSE(r->ran);
  CHECK(r->decision.rule == "forbidden");
  r = f.gate.call(tool_call("unknown_tool", "true", "t-nomatch"));
  REQUIRE(r.ok());
  CHECK_FALSE(r->ran);
  CHECK(has(r->denial, "fail closed"));
  auto net = tool_call("read_file", "true", "t-net");
  net.network = {"198.18.0.9"};
  r = f.gate.call(net);
  REQUIRE(r.ok());
  CHECK_FALSE(r->ran);
  CHECK(has(r->denial, "network \"198.18.0.9\" is not allowed at tier L0"));
  CHECK(f.leases() == before);

  std::string log = f.log_text();
  CHECK(has(log, "\"trace\":\"t-run\",\"event\":\"exec\""));
  CHECK(has(log, "\"trace\":\"t-audit\",\"event\":\"exit\""));
  CHECK(has(log, "\"trace\":\"t-deny\",\"event\":\"denied\""));
  CHECK_FALSE(has(log, "\"trace\":\"t-deny\",\"event\":\"sandbox\""));
  CHECK(has(log, "\"trace\":\"t-run\",\"event\":\"teardown\""));
  CHECK(has(log, "\"pooled\":true"));
  CHECK(has(log, "\"image_manifest_sha256\":\""));
  CHECK_FALSE(has(log, "\"image_manifest_sha256\":\"\""));
}

TEST_CASE("gate: approvals: at once, from another thread, denied, late, throwing; all recorded") {
  auto& f = fx();
  SUBCASE("granted inside the callback") {
    f.approver = [&](const ztee::ApprovalRequest& req) {
      CHECK(has(req.description, "\"tool\":\"python\""));
      CHECK(has(req.description, "\"tier\":\"L4\""));
      CHECK(f.gate.approve(req.token, "alice"));
    };
    auto r = f.gate.call(tool_call("python", "python3 -c 'print(6*7)'", "t-ok"));
    REQUIRE(r.ok());
    CHECK(r->ran);
    CHECK(r->approved_by == "alice");
    CHECK(r->exec.stdout_data == "42\n");
  }
  SUBCASE("granted later from another thread") {
    std::thread t;
    f.approver = [&](const ztee::ApprovalRequest& req) {
      t = std::thread([&, token = req.token] {
        std::this_thread::sleep_for(300ms);
        CHECK(f.gate.approve(token, "bob via webhook"));
      });
    };
    auto r = f.gate.call(tool_call("shell", "echo later", "t-thread"));
    t.join();
    REQUIRE(r.ok());
    CHECK(r->ran);
    CHECK(r->approved_by == "bob via webhook");
  }
  SUBCASE("denied, with the reason") {
    uint64_t before = f.leases();
    f.approver = [&](const ztee::ApprovalRequest& req) { CHECK(f.gate.deny(req.token, "not today", "carol")); };
    auto r = f.gate.call(tool_call("shell", "echo no", "t-denied"));
    REQUIRE(r.ok());
    CHECK_FALSE(r->ran);
    CHECK(r->denial == "denied by carol: not today");
    CHECK(f.leases() == before);
  }
  SUBCASE("no answer before the deadline: denied; the late answer is ignored") {
    std::string token;
    f.approver = [&](const ztee::ApprovalRequest& req) { token = req.token; };
    auto t0 = std::chrono::steady_clock::now();
    auto r = f.gate.call(tool_call("shell", "echo late", "t-late"));
    REQUIRE(r.ok());
    CHECK_FALSE(r->ran);
    CHECK(has(r->denial, "no approval within 1500 ms"));
    CHECK(std::chrono::steady_clock::now() - t0 >= 1500ms);
    CHECK_FALSE(f.gate.approve(token, "too-late"));
    CHECK(has(f.log_text(), "\"event\":\"approval_ignored\",\"token\":\"" + token));
  }
  SUBCASE("an approver that throws denies") {
    f.approver = [](const ztee::ApprovalRequest&) { throw std::runtime_error("chat service down"); };
    auto r = f.gate.call(tool_call("shell", "echo x", "t-throw"));
    REQUIRE(r.ok());
    CHECK_FALSE(r->ran);
    CHECK(has(r->denial, "the approver threw: chat service down"));
  }
  f.approver = nullptr;
  std::string log = f.log_text();
  CHECK(has(log, "\"event\":\"approval_granted\""));
}

TEST_CASE("gate: secrets by reference reach the process only and are scrubbed from every output and the log") {
  auto& f = fx();
  f.approver = [&](const ztee::ApprovalRequest& req) { f.gate.approve(req.token, "test"); };
  // The value leaves the guest split across output chunks, in hex and in
  // base64, on both streams, and from a file whose content was a reference.
  auto c = tool_call("shell",
                     "printf %s \"$API_KEY\" | head -c 7; sleep 0.3; printf '%s\\n' \"$API_KEY\" | tail -c +8; "
                     "printf %s \"$API_KEY\" | od -An -tx1 | tr -d ' \\n'; echo; "
                     "printf %s \"$API_KEY\" | base64; cat /tmp/cred; echo; echo \"$API_KEY\" >&2",
                     "t-secret");
  c.env = {{"API_KEY", "secret://API_KEY"}, {"PLAIN", "visible"}};
  c.files = {{"/tmp/cred", "secret://API_KEY"}};
  std::string streamed;
  c.on_stdout = [&](std::string_view s) { streamed += s; };
  auto r = f.gate.call(c);
  REQUIRE_MESSAGE(r.ok(), why(r));
  REQUIRE(r->ran);
  // stdout was streamed (so not collected); stderr was collected.
  const std::string err = r->exec.stderr_data;
  INFO("streamed stdout: " << streamed << " stderr: " << err);
  CHECK(streamed == "[secret:API_KEY]\n[secret:API_KEY]\n[secret:API_KEY]\n[secret:API_KEY]\n");
  CHECK(r->exec.stdout_data.empty());
  CHECK(err == "[secret:API_KEY]\n");
  std::string log = f.log_text();
  CHECK_FALSE(has(log, kSecret));
  CHECK(has(log, "\"event\":\"secrets\",\"names\":[\"API_KEY\"]"));
  CHECK(has(log, "\"env_keys\":[\"API_KEY\",\"PLAIN\"]"));
  CHECK_FALSE(has(log, "visible"));  // env values are never recorded

  uint64_t before = f.leases();
  auto bad = tool_call("read_file", "true", "t-badref");
  bad.env = {{"X", "secret://NOPE"}};
  auto b = f.gate.call(bad);
  REQUIRE_FALSE(b.ok());
  CHECK(b.error().code == Errc::kNotFound);
  CHECK(has(b.error().message, "secret reference \"secret://NOPE\""));
  CHECK(f.leases() == before);
  f.approver = nullptr;
}

TEST_CASE("gate: the audit log of all the calls above verifies, and a one-byte edit is found") {
  auto& f = fx();
  auto r = f.gate.call(tool_call("cat", "true", "t-verify"));
  REQUIRE(r.ok());
  auto rep = ztee::verify_audit_log({f.log_path}, "test-key");
  CHECK_MESSAGE(rep.ok, rep.problem);
  CHECK(rep.records >= 7);  // call, decision, sandbox, exec, exit, teardown of the call above at least
  std::string text = f.log_text();
  auto pos = text.find("\"code\":0");
  REQUIRE(pos != std::string::npos);
  std::string copy = f.dir + "/audit-edited.jsonl";
  text[pos + 7] = '1';
  std::ofstream(copy) << text;
  auto bad = ztee::verify_audit_log({copy}, "test-key");
  CHECK_FALSE(bad.ok);
  CHECK(has(bad.problem, "HMAC does not match"));
}

TEST_CASE("gate: output DLP redacts findings split across chunks, records them without values, and can block") {
  auto& f = fx();
  auto scanner = ztee::DlpScanner::create({});
  REQUIRE(scanner.ok());
  auto policy = ztee::Policy::parse(kPolicy);
  REQUIRE(policy.ok());
  std::string log_path = f.dir + "/dlp-audit.jsonl";
  ztee::AuditOptions ao;
  ao.path = log_path;
  auto log = ztee::AuditLog::open(ao);
  REQUIRE(log.ok());
  ztee::GateOptions go;
  go.policy = *policy;
  go.audit = *log;
  go.pool = f.pool;
  go.dlp = *scanner;
  auto g = ztee::Gate::create(test::runtime(), go);
  REQUIRE(g.ok());

  // A Visa test number and an e-mail address, the card cut in two by a pause
  // (two output chunks); stderr carries an injection marker.
  auto c = tool_call("read_file",
                     "printf 'card 4111 1111 '; sleep 0.3; printf '1111 1111 and mail jane.doe@example.org\\n'; "
                     "printf '<|im_start|>system\\n' >&2",
                     "t-dlp");
  std::string streamed;
  c.on_stdout = [&](std::string_view s) {
    CHECK(s.find("4111 1111") == std::string_view::npos);  // no raw part of the card ever leaves
    streamed += s;
  };
  auto r = g->call(c);
  REQUIRE_MESSAGE(r.ok(), why(r));
  CHECK(r->ran);
  CHECK_MESSAGE(!r->blocked, r->denial << " stderr: " << r->exec.stderr_data);
  CHECK(streamed == "card [REDACTED:card] and mail [REDACTED:email]\n");
  CHECK(r->findings.size() == 2);
  REQUIRE(r->anomalies.size() == 1);
  CHECK(r->anomalies[0].rule == "role_marker");
  std::ifstream in(log_path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  CHECK(has(text, "\"event\":\"dlp_finding\",\"detector\":\"card\",\"stream\":\"stdout\""));
  CHECK(has(text, "\"event\":\"injection_anomaly\",\"rule\":\"role_marker\",\"stream\":\"stderr\""));
  // No part of the card as written, nor the address. (Not a bare "4111": the
  // log's timestamps and hash-chain digests are digits too, and hold any
  // four-digit string now and then.)
  for (const char* part : {"4111 1111", "1111 1111", "4111111111111111", "jane.doe"})
    CHECK_MESSAGE(!has(text, part), part);

  // Block mode: the collected output is withheld and the call says why.
  ztee::DlpOptions block;
  block.detectors = {{"card", ztee::DlpMode::kBlock}};
  auto blocker = ztee::DlpScanner::create(block);
  REQUIRE(blocker.ok());
  go.dlp = *blocker;
  auto g2 = ztee::Gate::create(test::runtime(), go);
  REQUIRE(g2.ok());
  r = g2->call(tool_call("read_file", "echo before; echo 4111111111111111; echo after", "t-block"));
  REQUIRE(r.ok());
  CHECK(r->ran);
  CHECK(r->blocked);
  CHECK(r->exec.stdout_data.empty());
  CHECK(has(r->denial, "output blocked"));
  CHECK_FALSE(has(r->denial, "4111"));
}
