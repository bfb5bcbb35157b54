// Fuzz target: what `ztee serve` parses itself from callers (the HTTP framing
// is http-parser's). The first byte picks the parser; the rest is its input.
// Checks that nothing crashes and that what the server writes as a JSON
// string is valid JSON holding valid UTF-8.
#include <simdjson.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "serve/exec_api.hpp"
#include "serve/http.hpp"
#include "serve/util.hpp"

using namespace ztee::serve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 7) {
    case 0: {  // multipart: "<content-type>\n<body>"
      size_t nl = in.find('\n');
      std::string_view ct = in.substr(0, nl);
      std::string_view body = nl == std::string_view::npos ? std::string_view{} : in.substr(nl + 1);
      std::string b = multipart_boundary(ct);
      if (b.empty()) b.push_back('B');
      auto parts = parse_multipart(body, b);
      if (parts)
        for (auto& p : *parts)
          if (p.data.size() > body.size()) std::abort();
      break;
    }
    case 1:
      (void)parse_key_file(in, "fuzz");
      break;
    case 2: {
      auto d = base64_decode(in);
      if (d && *base64_decode(base64_encode(*d)) != *d) std::abort();
      break;
    }
    case 3: {
      std::string j = json_str(in);
      simdjson::dom::parser p;
      simdjson::dom::element e;
      std::string_view s;
      if (p.parse(j).get(e) != simdjson::SUCCESS || e.get(s) != simdjson::SUCCESS) std::abort();
      break;
    }
    case 5: {
      auto out = gunzip(in, 1 << 20);
      if (out && out->size() > (1 << 20)) std::abort();
      break;
    }
    case 6: {  // a /v1/exec body
      auto r = parse_exec_request(in);
      if (r && r->exec.argv.empty()) std::abort();
      break;
    }
    case 4: {
      HttpRequest r;
      r.query = std::string(in);
      (void)r.query_param("path");
      (void)percent_decode(in, true);
      break;
    }
  }
  return 0;
}
