// Unit tests of the policy gate's pure parts (serve/guard.hpp): the tool
// calls the server builds, the refusal text, the approver's reply and the
// tier limits (no VM, no network).
#include <doctest/doctest.h>

#include <string>

#include "serve/guard.hpp"

using namespace ztee;
using namespace ztee::serve;

namespace {

CallContext ctx() {
  CallContext c;
  c.sandbox = "sb-1-n";
  c.key_name = "main";
  c.metadata = {{"team", "a"}, {"b", "x=y"}};
  return c;
}

}  // namespace

TEST_CASE("command_tool_call: the SDK's bash -l -c line is the text rules match; other argv joined") {
  auto c = command_tool_call({"/bin/bash", "-l", "-c", "echo hi; ls"}, ctx());
  CHECK(c.tool == "e2b.commands.run");
  CHECK(c.command == "echo hi; ls");
  CHECK(c.argv.empty());
  CHECK(c.text() == "echo hi; ls");
  CHECK(c.writes.empty());
  CHECK(c.network.empty());
  CHECK(c.labels == std::vector<std::string>{"key:main", "meta:b=x=y", "meta:team=a"});
  CHECK(command_tool_call({"/bin/sh", "-c", "true"}, ctx()).text() == "true");
  auto a = command_tool_call({"/bin/bash", "-l", "-c"}, ctx());  // no line: kept as argv
  CHECK(a.command.empty());
  CHECK(a.text() == "/bin/bash -l -c");
  auto b = command_tool_call({"/bin/bash", "-l", "-c", "x", "extra"}, ctx());  // $0 given: not the SDK's form
  CHECK(b.text() == "/bin/bash -l -c x extra");
  CHECK(command_tool_call({"id"}, CallContext{}).labels.empty());
  // A command started with its stdin open says so: what it reads later is not classified.
  CHECK(command_tool_call({"cat"}, CallContext{}, true).labels == std::vector<std::string>{"stdin"});
  CHECK(command_tool_call({"/bin/bash", "-l", "-c", "cat"}, ctx(), true).labels.back() == "stdin");
}

TEST_CASE("files_tool_call: op and paths, the paths as writes") {
  auto c = files_tool_call("move", {"/tmp/a", "/tmp/b"}, ctx());
  CHECK(c.tool == "e2b.files.write");
  CHECK(c.text() == "move /tmp/a /tmp/b");
  CHECK(c.writes == std::vector<std::string>{"/tmp/a", "/tmp/b"});
}

TEST_CASE("classified by a policy: anchored rules see the whole shell line, writes_files sees file calls") {
  auto p = Policy::parse(R"({"version": 1,
    "tiers": {"L0": {"action": "run", "timeout_ms": 5000, "output_cap": 100}, "L2": {"action": "audit"}, "L5": {"action": "deny"}},
    "rules": [
      {"name": "echo", "tool": ["e2b.commands.run"], "command": "^echo [a-z]+$", "tier": "L0"},
      {"name": "team-a-writes", "tool": ["e2b.files.*"], "writes_files": true, "labels": ["meta:team=a"], "tier": "L2"}
    ]})");
  REQUIRE(p);
  CallContext other = ctx();
  other.metadata = {{"team", "b"}};
  auto d = p->classify(command_tool_call({"/bin/bash", "-l", "-c", "echo hi"}, ctx()));
  CHECK(d.action == TierAction::kRun);
  CHECK(d.limits.output_cap == 100);
  CHECK(p->classify(command_tool_call({"/bin/bash", "-l", "-c", "echo hi; rm x"}, ctx())).action == TierAction::kDeny);
  CHECK(p->classify(files_tool_call("write", {"/tmp/x"}, ctx())).action == TierAction::kAudit);
  CHECK(p->classify(files_tool_call("write", {"/tmp/x"}, other)).rule_index == -1);
}

TEST_CASE("denial_message names tier, action, rule and why") {
  Decision d;
  d.tier = 4;
  d.action = TierAction::kApprove;
  d.rule = "removals";
  d.rule_index = 2;
  CHECK(denial_message(d, "no approval within 2000 ms: denied") ==
        "refused by the server's policy (tier L4 approve, rule \"removals\"): no approval within 2000 ms: denied");
  Decision none;
  CHECK(denial_message(none, "nothing allows this call (fail closed)") ==
        "refused by the server's policy (tier L5 deny, no rule of the server's policy matched): nothing allows this call "
        "(fail closed)");
}

TEST_CASE("parse_approval_reply: only a 200 with a boolean approve decides; everything else denies") {
  auto r = parse_approval_reply(200, R"({"approve": true, "by": "alice"})");
  CHECK(r.approve);
  CHECK(r.by == "alice");
  r = parse_approval_reply(200, R"({"approve": true})");
  CHECK(r.approve);
  CHECK(r.by == "approver-url");
  r = parse_approval_reply(200, R"({"approve": false, "by": "bob", "reason": "too risky"})");
  CHECK(!r.approve);
  CHECK(r.by == "bob");
  CHECK(r.reason == "too risky");
  CHECK(parse_approval_reply(200, R"({"approve": false})").reason == "no reason given");
  r = parse_approval_reply(500, R"({"approve": true})");
  CHECK(!r.approve);
  CHECK(r.reason == "the approver answered HTTP 500");
  for (const char* body : {"", "yes", "[true]", R"({"approve": "true"})", R"({"approve": 1})", R"({"ok": true})",
                           R"({"approve": true)"}) {
    CAPTURE(body);
    CHECK(!parse_approval_reply(200, body).approve);
  }
  CHECK(parse_approval_reply(200, "nope").reason == "the approver's reply is not a JSON object");
  CHECK(parse_approval_reply(200, "{}").reason == "the approver's reply has no boolean \"approve\"");
}

TEST_CASE("apply_tier_limits: the smaller of each non-zero pair") {
  uint32_t t = 60000;
  uint64_t cap = 1 << 20;
  TierLimits l;
  apply_tier_limits(l, &t, &cap);
  CHECK(t == 60000);
  CHECK(cap == (1u << 20));
  l.timeout_ms = 1500;
  l.output_cap = 1000;
  apply_tier_limits(l, &t, &cap);
  CHECK(t == 1500);
  CHECK(cap == 1000);
  l.timeout_ms = 90000;  // a tier never lengthens what the caller asked
  l.output_cap = 5000;
  apply_tier_limits(l, &t, &cap);
  CHECK(t == 1500);
  CHECK(cap == 1000);
  uint32_t none = 0;  // no caller timeout: the tier's
  uint64_t nocap = 0;
  l.timeout_ms = 700;
  apply_tier_limits(l, &none, &nocap);
  CHECK(none == 700);
  CHECK(nocap == 5000);
}
