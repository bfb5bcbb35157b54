// Unit tests of /v1/exec's request checks and /metrics' text (no VM).
#include <doctest/doctest.h>

#include <string>

#include "serve/exec_api.hpp"
#include "serve/metrics.hpp"

using namespace ztee;
using namespace ztee::serve;

namespace {

std::string refusal(std::string_view body) {
  auto r = parse_exec_request(body);
  REQUIRE_MESSAGE(!r, "accepted: " << body);
  CHECK(r.error().code == Errc::kInvalidArgument);
  return r.error().message;
}

// The value of the sample line that starts with `prefix` + ' '; -1 if none.
double sample(const std::string& text, const std::string& prefix) {
  size_t p = text.find("\n" + prefix + " ");
  if (p == std::string::npos) return -1;
  return std::stod(text.substr(p + prefix.size() + 2));
}

}  // namespace

TEST_CASE("parse_exec_request: defaults and every field") {
  auto r = parse_exec_request(R"({"cmd":"echo hi"})");
  REQUIRE(r);
  CHECK(r->tmpl == "base");
  CHECK(r->exec.argv == std::vector<std::string>{"/bin/bash", "-l", "-c", "echo hi"});
  CHECK(r->exec.user == "user");
  CHECK(r->exec.cwd == "/home/user");
  CHECK(!r->exec.stdin_data);
  CHECK(r->exec.timeout_ms == 60000);
  CHECK(r->exec.output_cap == 1u << 20);

  r = parse_exec_request(R"({"template":"py","argv":["ls","-l"],"env":{"A":"1"},"cwd":"/tmp","user":"root",
                             "stdin_base64":"AAH+","timeout_ms":5,"max_output_bytes":7,"stdin":null})");
  REQUIRE(r);
  CHECK(r->tmpl == "py");
  CHECK(r->exec.argv == std::vector<std::string>{"ls", "-l"});
  CHECK(r->exec.env.at("A") == "1");
  CHECK(r->exec.cwd == "/tmp");
  CHECK(r->exec.user == "root");
  CHECK(*r->exec.stdin_data == std::string("\x00\x01\xfe", 3));
  CHECK(r->exec.timeout_ms == 5);
  CHECK(r->exec.output_cap == 7);
  CHECK(parse_exec_request(R"({"cmd":"x","user":"root"})")->exec.cwd == "/root");
  CHECK(parse_exec_request(R"({"cmd":"x","user":"nobody"})")->exec.cwd == "/");
}

TEST_CASE("parse_exec_request: refusals name the field") {
  CHECK(refusal("").find("empty body") == 0);
  CHECK(refusal("{").find("malformed JSON body") == 0);
  CHECK(refusal("[]") == "the body must be a JSON object");
  CHECK(refusal("{}").find("cmd (a shell command line) or argv") == 0);
  CHECK(refusal(R"({"cmd":"a","argv":["a"]})") == "give cmd or argv, not both");
  CHECK(refusal(R"({"cmd":"a\u0000b"})").find("cmd must be") == 0);
  CHECK(refusal(R"({"argv":[""]})").find("argv[0]") == 0);
  CHECK(refusal(R"({"argv":"ls"})").find("argv must be") == 0);
  CHECK(refusal(R"({"cmd":"a","env":{"A":2}})") == "env.A must be a string");
  CHECK(refusal(R"({"cmd":"a","env":{"":"x"}})").find("env: \"\" is not a usable variable") == 0);
  CHECK(refusal(R"({"cmd":"a","cwd":"rel"})") == "cwd must be an absolute path");
  CHECK(refusal(R"({"cmd":"a","user":"../x y"})").find("user must be") == 0);
  CHECK(refusal(R"({"cmd":"a","stdin":"x","stdin_base64":"eA=="})") == "give stdin or stdin_base64, not both");
  CHECK(refusal(R"({"cmd":"a","stdin_base64":"***"})") == "stdin_base64 is not valid base64");
  CHECK(refusal(R"({"cmd":"a","timeout_ms":0})").find("timeout_ms must be an integer 1..") == 0);
  CHECK(refusal(R"({"cmd":"a","timeout_ms":-1})").find("timeout_ms must be") == 0);
  CHECK(refusal(R"({"cmd":"a","timeout_ms":1.5})").find("timeout_ms must be") == 0);
  CHECK(refusal(R"({"cmd":"a","max_output_bytes":0})").find("max_output_bytes must be") == 0);
  CHECK(refusal(R"({"cmd":"a","template":""})") == "template must be a non-empty string");
  CHECK(refusal(R"({"cmd":"a","Cmd":"b"})").find("unknown field \"Cmd\"") == 0);
}

TEST_CASE("Metrics: counts, cumulative buckets at their bounds, what a server without a pool shows") {
  Metrics m;
  m.request(RouteClass::kExec, 200, 0.001);  // exactly a bound: in le="0.001"
  m.request(RouteClass::kExec, 200, 0.0011);
  m.request(RouteClass::kExec, 429, 100);    // past every bound: +Inf only
  m.request(RouteClass::kHealth, 999, 0);    // not a status: counted as 500
  m.sandbox_started(SandboxSource::kClone);
  m.exec_done(ExecOutcome::kTimeout, 2);
  Metrics::Gauges g;
  g.sandboxes = 3;
  g.exec_sandboxes = 1;
  std::string t = m.render(g);
  CHECK(t.back() == '\n');
  CHECK(sample(t, R"(ztee_serve_requests_total{route="exec",code="200"})") == 2);
  CHECK(sample(t, R"(ztee_serve_requests_total{route="exec",code="429"})") == 1);
  CHECK(sample(t, R"(ztee_serve_requests_total{route="health",code="500"})") == 1);
  CHECK(sample(t, R"(ztee_serve_requests_total{route="health",code="999"})") == -1);
  CHECK(sample(t, R"(ztee_serve_request_duration_seconds_bucket{route="exec",le="0.0005"})") == 0);
  CHECK(sample(t, R"(ztee_serve_request_duration_seconds_bucket{route="exec",le="0.001"})") == 1);
  CHECK(sample(t, R"(ztee_serve_request_duration_seconds_bucket{route="exec",le="0.0025"})") == 2);
  CHECK(sample(t, R"(ztee_serve_request_duration_seconds_bucket{route="exec",le="60"})") == 2);
  CHECK(sample(t, R"(ztee_serve_request_duration_seconds_bucket{route="exec",le="+Inf"})") == 3);
  CHECK(sample(t, R"(ztee_serve_request_duration_seconds_count{route="exec"})") == 3);
  CHECK(sample(t, R"(ztee_serve_request_duration_seconds_sum{route="exec"})") == doctest::Approx(100.0021));
  CHECK(sample(t, R"(ztee_serve_sandboxes_live{api="e2b"})") == 3);
  CHECK(sample(t, R"(ztee_serve_sandboxes_live{api="exec"})") == 1);
  CHECK(sample(t, R"(ztee_serve_sandboxes_started_total{source="clone"})") == 1);
  CHECK(sample(t, R"(ztee_serve_execs_total{outcome="timeout"})") == 1);
  CHECK(sample(t, R"(ztee_serve_exec_duration_seconds_bucket{le="2.5"})") == 1);
  CHECK(t.find("ztee_serve_pool_") == std::string::npos);
  g.has_pool = true;
  g.pool_target = 4;
  g.pool.ready = 2;
  g.pool.leases = 9;
  t = m.render(g);
  CHECK(sample(t, R"(ztee_serve_pool_target{template="base"})") == 4);
  CHECK(sample(t, R"(ztee_serve_pool_ready{template="base"})") == 2);
  CHECK(sample(t, R"(ztee_serve_pool_leases_total{template="base"})") == 9);
  // Every family is declared once, before its samples.
  CHECK(t.find("# TYPE ztee_serve_pool_leases_total counter\n") < t.find("ztee_serve_pool_leases_total{"));
}
