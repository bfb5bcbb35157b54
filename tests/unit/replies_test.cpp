// Parsers of guest replies: hostile input is a protocol error, never a value.
#include <doctest/doctest.h>

#include <string>

#include "agent/protocol.hpp"
#include "agent/replies.hpp"

using namespace ztee::detail;

TEST_CASE("EXIT: fields are type- and range-checked") {
  simdjson::dom::parser p;
  auto ok = parse_exit(p, R"({"exit_code":3,"signal":0,"timed_out":true,"truncated":false,"duration_us":42})");
  REQUIRE(ok.ok());
  CHECK(ok->exit_code == 3);
  CHECK(ok->timed_out);
  CHECK(ok->duration_us == 42);
  for (const char* bad : {R"({"exit_code":256,"signal":0})", R"({"exit_code":0,"signal":65})",
                          R"({"exit_code":"0","signal":0})", R"({"signal":0})", "[]", "not json", ""}) {
    auto r = parse_exit(p, bad);
    REQUIRE(!r.ok());
    CHECK(r.error().code == ztee::Errc::kProtocol);
  }
  // A negative duration is not trusted.
  CHECK(parse_exit(p, R"({"exit_code":0,"signal":0,"duration_us":-5})")->duration_us == 0);
}

TEST_CASE("STDIN_ACK: a byte count within the stdin window, nothing else") {
  simdjson::dom::parser p;
  auto ok = parse_stdin_ack(p, R"({"bytes":262144})");
  REQUIRE(ok.ok());
  CHECK(*ok == 262144u);
  auto whole = parse_stdin_ack(p, R"({"bytes":1048576})");
  REQUIRE(whole.ok());
  CHECK(*whole == ztee::proto::kStdinWindow);
  for (const char* bad : {R"({"bytes":0})", R"({"bytes":-1})", R"({"bytes":1048577})", R"({"bytes":"5"})",
                          R"({"bytes":1e3})", R"({"n":5})", "[]", ""}) {
    auto r = parse_stdin_ack(p, bad);
    REQUIRE_MESSAGE(!r.ok(), bad);
    CHECK(r.error().code == ztee::Errc::kProtocol);
  }
}

TEST_CASE("ERROR: errno bounded, message truncated") {
  simdjson::dom::parser p;
  std::string long_msg(5000, 'x');
  auto e = parse_guest_error(p, R"({"errno":99999,"message":")" + long_msg + "\"}");
  REQUIRE(e.ok());
  CHECK(e->sys_errno == 0);
  CHECK(e->message.size() == kMaxGuestMessage);
  auto two = parse_guest_error(p, R"({"errno":2,"message":"gone"})");
  CHECK(two->sys_errno == 2);
  CHECK(two->message == "gone");
}

TEST_CASE("FILE_LIST: names are single path components") {
  simdjson::dom::parser p;
  auto good = parse_list(p, R"({"entries":[{"name":"a","type":"dir","size":0,"mode":493}]})");
  REQUIRE(good.ok());
  REQUIRE(good->size() == 1);
  CHECK((*good)[0].type == ztee::FileType::kDir);
  CHECK((*good)[0].mode == 0755);
  for (const char* name : {"..", ".", "a/b", ""}) {
    std::string j = std::string(R"({"entries":[{"name":")") + name + R"(","type":"file","size":1,"mode":420}]})";
    CHECK(!parse_list(p, j).ok());
  }
  CHECK(!parse_list(p, R"({"entries":[{"name":"a","type":"file","size":-1,"mode":420}]})").ok());
  CHECK(!parse_list(p, R"({"entries":{}})").ok());
  auto st = parse_stat(p, R"({"type":"symlink","size":7,"mode":511,"mtime_ns":5})", "/x");
  REQUIRE(st.ok());
  CHECK(st->name == "/x");
  CHECK(st->type == ztee::FileType::kSymlink);
  CHECK(!parse_stat(p, R"({"type":"file"})", "/x").ok());
  CHECK(parse_hello(p, R"({"protocol":1})"));
  CHECK(!parse_hello(p, R"({"protocol":"1"})"));
}
