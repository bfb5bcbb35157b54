// Unit tests of what `ztee serve` parses from callers: multipart bodies, key
// files, base64, percent-encoding; and the JSON strings it writes.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <zlib.h>

#include "serve/http.hpp"
#include "serve/util.hpp"

using namespace ztee::serve;

TEST_CASE("json_str escapes and replaces invalid UTF-8") {
  CHECK(json_str("a\"b\\c\n\x01") == "\"a\\\"b\\\\c\\n\\u0001\"");
  CHECK(json_str("h\xc3\xa9llo") == "\"h\xc3\xa9llo\"");
  CHECK(json_str("\xff") == "\"\xef\xbf\xbd\"");
  CHECK(json_str("\xc3") == "\"\xef\xbf\xbd\"");          // truncated sequence
  CHECK(json_str("\xe0\x80\xaf") == "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");  // overlong
  CHECK(json_str("\xed\xa0\x80") == "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");  // surrogate
}

TEST_CASE("base64 round trip, URL-safe and unpadded input") {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  for (size_t n : {0u, 1u, 2u, 3u, 4u, 255u, 256u}) {
    auto d = base64_decode(base64_encode(all.substr(0, n)));
    REQUIRE(d);
    CHECK(*d == all.substr(0, n));
  }
  CHECK(*base64_decode("dXNlcjo") == "user:");
  CHECK(*base64_decode("-_8") == "\xfb\xff");
  CHECK_FALSE(base64_decode("!!!!"));
}

TEST_CASE("key file: hashes, limits, errors name the line") {
  std::string h(64, 'a');
  auto k = parse_key_file("# keys\n\nsha256:" + h + " name=ci max_sandboxes=3 # comment\n", "keys");
  REQUIRE(k);
  REQUIRE(k->size() == 1);
  CHECK((*k)[0].sha256 == h);
  CHECK((*k)[0].name == "ci");
  CHECK((*k)[0].max_sandboxes == 3);
  auto bad = parse_key_file("sha256:" + h + "\ne2b_0123\n", "keys");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message.find("keys:2:") == 0);
  CHECK_FALSE(parse_key_file("sha256:" + h + " max_sandboxes=0\n", "k"));
  CHECK_FALSE(parse_key_file("sha256:" + std::string(64, 'A') + "\n", "k"));
  CHECK_FALSE(parse_key_file("sha256:" + h + " color=red\n", "k"));
  CHECK(valid_key_format(new_api_key()));
  CHECK_FALSE(valid_key_format("e2b_0123"));
  CHECK_FALSE(valid_key_format("xyz_" + std::string(40, '0')));
  CHECK(sha256_hex_of("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_CASE("multipart/form-data") {
  CHECK(multipart_boundary("multipart/form-data; boundary=XyZ") == "XyZ");
  CHECK(multipart_boundary("Multipart/Form-Data;boundary=\"a b\"") == "a b");
  CHECK(multipart_boundary("application/octet-stream") == "");
  CHECK(multipart_boundary("multipart/form-data") == "");
  std::string body =
      "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/tmp/a.txt\"\r\nContent-Type: text/plain\r\n\r\n"
      "line1\r\nline2\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b\"\r\n\r\n"
      "\x01\x02--X\r\n--XyZ--\r\n";
  auto parts = parse_multipart(std::string_view(body.data(), body.size()), "XyZ");
  REQUIRE(parts);
  REQUIRE(parts->size() == 2);
  CHECK((*parts)[0].name == "file");
  CHECK((*parts)[0].filename == "/tmp/a.txt");
  CHECK((*parts)[0].data == "line1\r\nline2");
  CHECK((*parts)[1].filename == "b");
  CHECK((*parts)[1].data.size() == 5);
  CHECK_FALSE(parse_multipart("no boundary here", "XyZ"));
  CHECK_FALSE(parse_multipart("--XyZ\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nunterminated", "XyZ"));
  CHECK_FALSE(parse_multipart("--XyZ\r\nX-Other: 1\r\n\r\ndata\r\n--XyZ--", "XyZ"));
  CHECK_FALSE(parse_multipart("--XyZ\r\nbroken header\r\n\r\ndata\r\n--XyZ--", "XyZ"));
  auto empty = parse_multipart("--XyZ--\r\n", "XyZ");
  REQUIRE(empty);
  CHECK(empty->empty());
}

TEST_CASE("percent-decoding and query parameters") {
  CHECK(percent_decode("a%2Fb+c%zz%4", true) == "a/b c%zz%4");
  CHECK(percent_decode("a+b", false) == "a+b");
  HttpRequest r;
  r.query = "path=%2Ftmp%2Fx%20y&username=&flag";
  bool found = false;
  CHECK(r.query_param("path", &found) == "/tmp/x y");
  CHECK(found);
  CHECK(r.query_param("username", &found).empty());
  CHECK(found);
  r.query_param("flag", &found);
  CHECK(found);
  r.query_param("missing", &found);
  CHECK_FALSE(found);
}

static std::string gzip(const std::string& in) {
  z_stream z{};
  REQUIRE(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::string out(deflateBound(&z, in.size()) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

TEST_CASE("gunzip: round trip, truncation, garbage, size limit") {
  std::string text(200000, 'a');
  auto g = gzip(text);
  auto r = gunzip(g, 1 << 20);
  REQUIRE(r);
  CHECK(*r == text);
  CHECK_FALSE(gunzip(g.substr(0, g.size() / 2), 1 << 20));
  CHECK_FALSE(gunzip("not gzip at all", 1 << 20));
  auto bomb = gunzip(g, 1000);  // 200 KB of 'a' is a few hundred bytes of gzip
  REQUIRE_FALSE(bomb);
  CHECK(bomb.error().message.find("inflates to over 1000 bytes") != std::string::npos);
  auto empty = gunzip(gzip(""), 10);
  REQUIRE(empty);
  CHECK(empty->empty());
}
