#include <doctest/doctest.h>

#include <simdjson.h>

#include "agent/json.hpp"

using namespace ztee::detail;

TEST_CASE("json_quote escapes and always yields valid JSON") {
  CHECK(json_quote("plain") == "\"plain\"");
  CHECK(json_quote("a\"b\\c\n\t\x01") == "\"a\\\"b\\\\c\\n\\t\\u0001\"");
  CHECK(json_quote("caf\xC3\xA9") == "\"caf\xC3\xA9\"");
  // Invalid UTF-8 (lone continuation, overlong, truncated, surrogate) becomes U+FFFD.
  for (std::string bad : {std::string("\x80"), std::string("\xC0\xAF"), std::string("\xE2\x82"),
                          std::string("\xED\xA0\x80")}) {
    std::string q = json_quote(bad);
    CHECK(q.find("\xEF\xBF\xBD") != std::string::npos);
    simdjson::dom::parser p;
    simdjson::dom::element e;
    CHECK(p.parse(q).get(e) == simdjson::SUCCESS);
  }
}

TEST_CASE("checked accessors reject wrong types") {
  simdjson::dom::parser p;
  simdjson::dom::object o;
  REQUIRE(p.parse(std::string(R"({"a":1,"b":true,"c":"x","d":1.5})")).get_object().get(o) == simdjson::SUCCESS);
  CHECK(json_int(o, "a") == 1);
  CHECK(!json_int(o, "b"));
  CHECK(!json_int(o, "d"));
  CHECK(!json_int(o, "missing"));
  CHECK(json_bool(o, "b") == true);
  CHECK(json_str(o, "c") == "x");
  CHECK(!json_str(o, "a"));
}
