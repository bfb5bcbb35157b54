// Policy parsing and classification, the audit log's chain and its verifier,
// and the secret scrubber. No VM: the gate's runs are in integration.
#include <ztee/policy.hpp>

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;
using namespace ztee;

namespace {

std::string parse_error(std::string_view json) {
  auto p = Policy::parse(json, "p.json");
  REQUIRE_FALSE(p.ok());
  CHECK(p.error().code == Errc::kInvalidArgument);
  return p.error().message;
}

ToolCall call(std::string tool, std::string cmd = "x") {
  ToolCall c;
  c.tool = std::move(tool);
  c.command = std::move(cmd);
  return c;
}

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/ztee-policy-test.XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::vector<std::string> read_lines(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

void write_lines(const fs::path& p, const std::vector<std::string>& lines) {
  std::ofstream out(p, std::ios::trunc);
  for (const auto& l : lines) out << l << '\n';
}

}  // namespace

TEST_CASE("policy: malformed or unknown input is refused with its line and reason") {
  CHECK(parse_error("{\"version\": 1,\n \"rules\": [],\n \"colour\": 3}") == "p.json: line 3: unknown key \"colour\" (version, tiers, rules)");
  CHECK(parse_error("{\"version\": 2, \"rules\": []}").find("line 1: policy version 2 is not supported") != std::string::npos);
  CHECK(parse_error("{\"version\": 1,\n\"tiers\": {\"L0\": {\"action\": \"run\"}},\n\"rules\": [\n {\"tool\": \"a\",\n  \"tier\": \"L0\", \"colour\": 1}]}")
            .find("line 5: unknown rule key \"colour\"") != std::string::npos);
  CHECK(parse_error("{\"version\": 1,\n\"tiers\": {\"L7\": {\"action\": \"run\"}}, \"rules\": []}").find("line 2: unknown tier \"L7\"") !=
        std::string::npos);
  CHECK(parse_error("{\"version\": 1,\n\"tiers\": {\"L1\": {\"action\": \"maybe\"}}, \"rules\": []}").find("line 2: unknown action \"maybe\"") !=
        std::string::npos);
  CHECK(parse_error("{\"version\": 1, \"tiers\": {\"L1\": {\"action\": \"run\"}},\n\"rules\": [{\"command\": \"(unclosed\", \"tier\": \"L1\"}]}")
            .find("line 2: \"command\" is not a valid RE2 regex") != std::string::npos);
  CHECK(parse_error("{\"version\": 1, \"tiers\": {\"L1\": {\"action\": \"run\"}},\n\"rules\": [\n{\"name\": \"r\", \"tier\": \"L3\"}]}")
            .find("line 3: rule \"r\" names tier L3, which \"tiers\" does not define") != std::string::npos);
  CHECK(parse_error("{\"version\": 1, \"rules\": [{\"name\": \"r\"}]}").find("rule has no \"tier\"") != std::string::npos);
  CHECK(parse_error("{\"version\": 1,\n\"rules\": [,]}").find("line 2") != std::string::npos);
  CHECK(parse_error("{\"version\": 1, \"rules\": []} trailing").find("malformed JSON") != std::string::npos);
  CHECK(parse_error("[1]").find("a policy is a JSON object") != std::string::npos);
  CHECK(parse_error("{\"rules\": []}").find("\"version\": 1 is missing") != std::string::npos);
  auto missing = Policy::load("/nonexistent/policy.json");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().code == Errc::kNotFound);
}

TEST_CASE("policy: the default policy maps the LOW/MEDIUM/HIGH matrix and denies what no rule matches") {
  Policy p = Policy::default_policy();
  auto d = p.classify(call("read_file", "cat /etc/hostname"));
  CHECK(d.tier == 0);
  CHECK(d.action == TierAction::kRun);
  CHECK(d.rule == "read-only-tools");

  ToolCall w = call("write_file", "tee /work/a");
  w.writes = {"/work/a"};
  d = p.classify(w);
  CHECK(d.tier == 2);
  CHECK(d.action == TierAction::kAudit);

  CHECK(p.classify(call("python", "print(1)")).action == TierAction::kApprove);
  CHECK(p.classify(call("python", "print(1)")).rule == "code-execution");
  CHECK(p.classify(call("shell", "ls; rm -rf /data")).rule == "destructive-command");
  CHECK(p.classify(call("read_file", "rm -fr /")).rule == "destructive-command");
  ToolCall pii = call("read_file");
  pii.labels = {"pii"};
  CHECK(p.classify(pii).action == TierAction::kApprove);
  ToolCall net = call("read_file");
  net.network = {"198.18.0.1"};
  CHECK(p.classify(net).rule == "network");
  // A read-only tool that writes is not read-only: nothing else matches it.
  ToolCall ro_writes = call("read_file");
  ro_writes.writes = {"/x"};
  CHECK(p.classify(ro_writes).action == TierAction::kDeny);

  d = p.classify(call("launch_missiles"));
  CHECK(d.action == TierAction::kDeny);
  CHECK(d.rule_index == -1);
  CHECK(d.reason.find("fail closed") != std::string::npos);
  CHECK(Policy().classify(call("read_file")).action == TierAction::kDeny);
}

TEST_CASE("policy: rules are ordered, conditions combine, limits come with the tier") {
  auto p = Policy::parse(R"({"version": 1,
    "tiers": {"L1": {"action": "run", "timeout_ms": 5000, "output_cap": 1024, "memory_mib": 128, "network": ["198.18.0.7"]},
              "L3": {"action": "audit"}, "L5": {"action": "deny"}},
    "rules": [
      {"name": "blocked", "tool": "curl*", "labels": ["untrusted"], "tier": "L5"},
      {"name": "curl", "tool": ["curl*", "wget"], "network": true, "tier": "L1"},
      {"name": "grep-ish", "command": "^grep\\s", "tier": "L3"}
    ]})");
  REQUIRE(p.ok());
  ToolCall c = call("curl7");
  c.network = {"198.18.0.7"};
  auto d = p->classify(c);
  CHECK(d.rule == "curl");
  CHECK(d.limits.timeout_ms == 5000);
  CHECK(d.limits.output_cap == 1024);
  CHECK(d.limits.memory_mib == 128);
  CHECK(d.limits.network == std::vector<std::string>{"198.18.0.7"});
  c.labels = {"x", "untrusted"};
  CHECK(p->classify(c).rule == "blocked");
  CHECK(p->classify(call("curl")).action == TierAction::kDeny);  // no network asked: "curl" does not match
  ToolCall g;
  g.tool = "anything";
  g.argv = {"grep", "-r", "x"};
  CHECK(p->classify(g).rule == "grep-ish");
  g.argv = {"egrep", "x"};
  CHECK(p->classify(g).rule_index == -1);
  CHECK(p->spec().rules.size() == 3);
  CHECK(p->spec().rules[2].line == 7);
}

TEST_CASE("audit: records chain, verify says OK with the count, and finds each kind of tampering") {
  TempDir dir;
  auto path = dir.path / "audit.jsonl";
  for (std::string key : {"", "k3y"}) {
    fs::remove(path);
    AuditOptions o;
    o.path = path;
    o.durability = Durability::kNone;
    o.hmac_key = key;
    {
      auto log = AuditLog::open(o);
      REQUIRE(log.ok());
      for (int i = 1; i <= 6; ++i) {
        auto seq = log->append("exec", "trace-1", fmt::format("\"n\":{}", i));
        REQUIRE(seq.ok());
        CHECK(*seq == static_cast<uint64_t>(i));
      }
    }
    auto rep = verify_audit_log({path}, key);
    CHECK_MESSAGE(rep.ok, rep.problem);
    CHECK(rep.records == 6);
    const auto good = read_lines(path);
    CHECK(good[0].find("\"prev\":\"0000000000000000") != std::string::npos);
    CHECK(good[0].find("\"trace\":\"trace-1\"") != std::string::npos);
    CHECK((good[0].find("\"hmac\":") != std::string::npos) == !key.empty());

    auto tampered = [&](std::vector<std::string> lines) {
      write_lines(path, lines);
      auto r = verify_audit_log({path}, key);
      CHECK_FALSE(r.ok);
      return r.problem;
    };
    auto edited = good;
    edited[2].replace(edited[2].find("\"n\":3"), 5, "\"n\":9");
    // Without a key the next record's "prev" gives it away; with one, its own HMAC.
    CHECK(tampered(edited).find(key.empty() ? "record 3 was edited" : "record 3 (") != std::string::npos);
    auto removed = good;
    removed.erase(removed.begin() + 3);
    CHECK(tampered(removed).find("records 4..4 are missing") != std::string::npos);
    auto reordered = good;
    std::swap(reordered[1], reordered[2]);
    CHECK(tampered(reordered).find("record 3 (") != std::string::npos);
    CHECK(tampered(reordered).find("reordered") != std::string::npos);
    auto inserted = good;
    inserted.insert(inserted.begin() + 2, good[1]);
    CHECK(tampered(inserted).find("record 2 (") != std::string::npos);
    CHECK(tampered(inserted).find("inserted") != std::string::npos);
    auto junk = good;
    junk[4] = "not json";
    CHECK(tampered(junk).find("line 5: not a JSON record") != std::string::npos);
    write_lines(path, good);
  }
  // Rewriting the whole chain consistently is caught only with the key: the
  // rewritten file passes without it.
  {
    fs::remove(path);
    AuditOptions o;
    o.path = path;
    o.durability = Durability::kNone;
    auto log = AuditLog::open(o);
    REQUIRE(log.ok());
    REQUIRE(log->append("a", "t", "").ok());
  }
  CHECK_FALSE(verify_audit_log({path}, "k3y").ok);
  CHECK(verify_audit_log({path}, "k3y").problem.find("no \"hmac\"") != std::string::npos);
  CHECK(verify_audit_log({path}).ok);
}

TEST_CASE("audit: two processes appending to one log keep one valid chain") {
  TempDir dir;
  auto path = dir.path / "shared.jsonl";
  constexpr int kPerProcess = 300;
  pid_t kids[2];
  for (auto& k : kids) {
    k = fork();
    REQUIRE(k >= 0);
    if (k == 0) {
      AuditOptions o;
      o.path = path;
      o.durability = Durability::kNone;
      o.hmac_key = "key";
      auto log = AuditLog::open(o);
      if (!log) _exit(2);
      for (int i = 0; i < kPerProcess; ++i)
        if (!log->append("exec", "t", fmt::format("\"pid\":{}", getpid()))) _exit(3);
      _exit(0);
    }
  }
  for (auto k : kids) {
    int st = 0;
    waitpid(k, &st, 0);
    CHECK(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 0);
  }
  auto rep = verify_audit_log({path}, "key");
  CHECK_MESSAGE(rep.ok, rep.problem);
  CHECK(rep.records == 2 * kPerProcess);
}

TEST_CASE("audit: rotation keeps the chain across files; fsync and batch durability write the same records") {
  TempDir dir;
  auto path = dir.path / "rot.jsonl";
  AuditOptions o;
  o.path = path;
  o.durability = Durability::kFsync;
  o.rotate_bytes = 1000;
  {
    auto log = AuditLog::open(o);
    REQUIRE(log.ok());
    for (int i = 0; i < 20; ++i) REQUIRE(log->append("exec", "t", "\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"").ok());
  }
  std::vector<std::string> files;
  for (int n = 1; fs::exists(path.string() + "." + std::to_string(n)); ++n) files.push_back(path.string() + "." + std::to_string(n));
  CHECK(files.size() >= 2);
  files.push_back(path);
  auto rep = verify_audit_log(files);
  CHECK_MESSAGE(rep.ok, rep.problem);
  CHECK(rep.records == 20);
  // A file left out breaks the chain where it was.
  auto partial = files;
  partial.erase(partial.begin() + 1);
  CHECK_FALSE(verify_audit_log(partial).ok);

  auto bpath = dir.path / "batch.jsonl";
  o.path = bpath;
  o.durability = Durability::kBatch;
  o.batch_ms = 5;
  o.rotate_bytes = 0;
  {
    auto log = AuditLog::open(o);
    REQUIRE(log.ok());
    for (int i = 0; i < 50; ++i) REQUIRE(log->append("exec", "t", "").ok());
    REQUIRE(log->flush().ok());
  }
  CHECK(verify_audit_log({bpath}).records == 50);
  // Appending to a file that is not an audit log is refused.
  auto other = dir.path / "other.txt";
  std::ofstream(other) << "hello\n";
  o.path = other;
  auto log = AuditLog::open(o);
  REQUIRE(log.ok());
  auto r = log->append("exec", "t", "");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find("not a libztee audit record") != std::string::npos);
}

TEST_CASE("secrets: values, hex and base64 forms are scrubbed at every chunk split") {
  const std::string secret = "s3cr3t-T0ken-42";
  SecretScrubber s;
  s.add("API_KEY", secret);
  std::string hex;
  for (unsigned char c : secret) hex += fmt::format("{:02x}", c);
  std::string hexu;
  for (unsigned char c : secret) hexu += fmt::format("{:02X}", c);
  const std::string full = "a " + secret + " b " + hex + " c " + hexu + " d czNjcjN0LVQwa2VuLTQy e " + secret + secret;
  const std::string want = "a [secret:API_KEY] b [secret:API_KEY] c [secret:API_KEY] d [secret:API_KEY] e "
                           "[secret:API_KEY][secret:API_KEY]";
  CHECK(s.scrub(full) == want);
  for (size_t cut1 = 0; cut1 <= full.size(); ++cut1) {
    for (size_t cut2 = cut1; cut2 <= full.size(); cut2 += 7) {
      SecretScrubber st = s;
      std::string out = st.feed(std::string_view(full).substr(0, cut1));
      out += st.feed(std::string_view(full).substr(cut1, cut2 - cut1));
      out += st.feed(std::string_view(full).substr(cut2));
      out += st.finish();
      REQUIRE_MESSAGE(out == want, "cuts " << cut1 << "," << cut2);
    }
  }
  // Inside a longer base64 text, at each of the three alignments.
  const char* b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (size_t k = 0; k < 3; ++k) {
    std::string data = std::string(k + 3, 'Q') + secret + "trailing bytes";
    std::string enc;
    for (size_t i = 0; i + 3 <= data.size(); i += 3) {
      uint32_t n = (uint8_t(data[i]) << 16) | (uint8_t(data[i + 1]) << 8) | uint8_t(data[i + 2]);
      enc += b64[n >> 18], enc += b64[(n >> 12) & 63], enc += b64[(n >> 6) & 63], enc += b64[n & 63];
    }
    std::string out = s.scrub(enc);
    CHECK_MESSAGE(out.find("[secret:API_KEY]") != std::string::npos, "alignment " << k << ": " << out);
  }
  CHECK(s.scrub("nothing here") == "nothing here");
  SecretScrubber none;
  CHECK(none.feed("abc") == "abc");
}

TEST_CASE("secrets: the built-in resolvers") {
  TempDir dir;
  std::ofstream(dir.path / "DB_PASSWORD") << "hunter2\n";
  auto r = secrets_from_dir(dir.path);
  auto v = r("DB_PASSWORD");
  REQUIRE(v.ok());
  CHECK(*v == "hunter2");
  CHECK(r("MISSING").error().code == Errc::kNotFound);
  CHECK(r("../etc/passwd").error().code == Errc::kInvalidArgument);
  setenv("ZTEE_SECRET_TOKEN_X", "abc123", 1);
  auto e = secrets_from_env();
  auto x = e("TOKEN_X");
  REQUIRE(x.ok());
  CHECK(*x == "abc123");
  CHECK(e("TOKEN_Y").error().code == Errc::kNotFound);
  unsetenv("ZTEE_SECRET_TOKEN_X");
}

TEST_CASE("audit: deferred appends are synced by commit, and verify like any others") {
  TempDir dir;
  AuditOptions o;
  o.path = dir.path / "deferred.jsonl";
  o.durability = Durability::kFsync;
  auto log = AuditLog::open(o);
  REQUIRE(log.ok());
  for (int i = 0; i < 4; ++i) REQUIRE(log->append_deferred("step", "t", "").ok());
  REQUIRE(log->commit().ok());
  REQUIRE(log->append("done", "t", "").ok());
  REQUIRE(log->commit().ok());  // nothing pending: a no-op
  auto rep = verify_audit_log({o.path});
  CHECK_MESSAGE(rep.ok, rep.problem);
  CHECK(rep.records == 5);
}
