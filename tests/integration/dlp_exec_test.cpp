// SandboxOptions::dlp on real microVMs: every exec's output (collected and
// streamed) and read_file's bytes go through the DLP scanner.
#include <string>
#include <vector>

#include "common.hpp"

using ztee::Errc;

namespace {

ztee::DlpScanner scanner(ztee::DlpMode ssn_mode = ztee::DlpMode::kRedact) {
  ztee::DlpOptions o;
  for (auto& d : o.detectors)
    if (d.name == "ssn") d.mode = ssn_mode;
  auto s = ztee::DlpScanner::create(o);
  if (!s) FAIL("DlpScanner::create: " << s.error().message);
  return std::move(s).value();
}

ztee::Sandbox& dlp_sandbox() {
  static ztee::Sandbox sb = [] {
    ztee::SandboxOptions o;
    o.dlp = scanner(ztee::DlpMode::kBlock);
    auto r = test::runtime().create_sandbox(o);
    if (!r) FAIL("create_sandbox with DLP: " << r.error().message);
    return std::move(r).value();
  }();
  REQUIRE(sb.state() == ztee::SandboxState::kReady);
  return sb;
}

}  // namespace

TEST_CASE("DLP on a sandbox: collected output is redacted and the findings reported") {
  auto& sb = dlp_sandbox();
  auto r = sb.run("printf 'pay 4111 1111 1111 1111 now\\n'; printf 'mail bob@example.com\\n' >&2");
  REQUIRE(r.ok());
  CHECK(r->exit_code == 0);
  CHECK(r->stdout_data == "pay [REDACTED:card] now\n");
  CHECK(r->stderr_data == "mail [REDACTED:email]\n");
  REQUIRE(r->dlp_findings.size() == 2);
  bool card = false, email = false;
  for (const auto& f : r->dlp_findings) {
    if (f.detector == "card") {
      card = true;
      CHECK(f.stream == "stdout");
      CHECK(f.offset == 4);
      CHECK(f.length == 19);
    }
    if (f.detector == "email") email = f.stream == "stderr";
  }
  CHECK(card);
  CHECK(email);
}

TEST_CASE("DLP on a sandbox: a finding split across streamed chunks is never delivered raw") {
  auto& sb = dlp_sandbox();
  std::vector<std::string> chunks;
  ztee::ExecOptions eo;
  // The card number leaves the guest in two writes 300 ms apart: two chunks.
  eo.shell = "printf 'id 4111 1111'; sleep 0.3; printf ' 1111 1111 end\\n'";
  eo.on_stdout = [&](std::string_view d) { chunks.emplace_back(d); };
  auto r = sb.exec(eo);
  REQUIRE(r.ok());
  std::string all;
  for (const auto& c : chunks) {
    CHECK(c.find("4111") == std::string::npos);
    all += c;
  }
  CHECK(all == "id [REDACTED:card] end\n");
  CHECK(r->stdout_data.empty());  // streamed, not collected
  CHECK(r->dlp_findings.size() == 1);
}

TEST_CASE("DLP on a sandbox: a block-mode finding withholds the output") {
  auto& sb = dlp_sandbox();
  auto r = sb.run("echo 'ssn 219-09-9999'");
  REQUIRE(!r.ok());
  CHECK(r.error().code == Errc::kPermission);
  CHECK(r.error().message.find("withheld by DLP") != std::string::npos);
  CHECK(r.error().message.find("219-09-9999") == std::string::npos);
  CHECK(sb.state() == ztee::SandboxState::kReady);  // the sandbox goes on
}

TEST_CASE("DLP on a sandbox: read_file is scanned too") {
  auto& sb = dlp_sandbox();
  REQUIRE(sb.write_file("/tmp/card.txt", "card=5555555555554444\n").ok());
  auto data = sb.read_file("/tmp/card.txt");
  REQUIRE(data.ok());
  CHECK(*data == "card=[REDACTED:card]\n");
  REQUIRE(sb.write_file("/tmp/ssn.txt", "219-09-9999\n").ok());
  auto blocked = sb.read_file("/tmp/ssn.txt");
  REQUIRE(!blocked.ok());
  CHECK(blocked.error().code == Errc::kPermission);
  // A sandbox without DLP reads the same bytes unchanged.
  auto plain = test::shared().write_file("/tmp/card.txt", "card=5555555555554444\n");
  REQUIRE(plain.ok());
  CHECK(test::shared().read_file("/tmp/card.txt").value() == "card=5555555555554444\n");
}
