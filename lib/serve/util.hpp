// Small helpers of `ztee serve`: JSON string escaping, base64, time stamps,
// API keys, and the multipart/form-data splitter for envd's POST /files.
#pragma once

#include <ztee/result.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ztee::serve {

// s as a JSON string literal, quotes included. Bytes that are not valid
// UTF-8 become U+FFFD, so hostile output cannot break the document.
std::string json_str(std::string_view s);
std::string base64_encode(std::string_view data);
// nullopt on malformed input.
std::optional<std::string> base64_decode(std::string_view text);
// RFC 3339 UTC with milliseconds, e.g. "2026-12-01T17:35:54.123Z".
std::string rfc3339(int64_t unix_ms);
int64_t now_unix_ms();
// Random bytes from OpenSSL as lower-case hex.
std::string random_hex(size_t bytes);

// One API key entry of the key file: the SHA-256 of the key and its limits.
struct ApiKey {
  std::string sha256;  // hex of SHA-256 over the whole key ("e2b_...")
  std::string name;    // for logs; never the key
  uint32_t max_sandboxes = 20;  // concurrent sandboxes; beyond: 429
};

// Parses a key file: one key per line, "sha256:<64 hex> [name=N] [max_sandboxes=N]",
// '#' starts a comment. Fails (kInvalidArgument) naming the line.
Result<std::vector<ApiKey>> parse_key_file(std::string_view text, std::string_view file_name);
// True for "e2b_" followed by 40 lower-case hex digits (E2B's format).
bool valid_key_format(std::string_view key);
// A new key "e2b_<40 hex>".
std::string new_api_key();
std::string sha256_hex_of(std::string_view data);

// Inflates a gzip stream (Content-Encoding: gzip). Fails (kInvalidArgument)
// on malformed input, or when the result would be over max_out bytes.
Result<std::string> gunzip(std::string_view data, size_t max_out);

// One part of a multipart/form-data body.
struct FormPart {
  std::string name;      // from Content-Disposition
  std::string filename;  // from Content-Disposition; empty if none
  std::string data;
};
// The boundary parameter of a multipart/form-data Content-Type; empty if
// the type is not multipart/form-data or has no usable boundary.
std::string multipart_boundary(std::string_view content_type);
// Splits a multipart body. Fails (kInvalidArgument) with what is wrong.
Result<std::vector<FormPart>> parse_multipart(std::string_view body, std::string_view boundary);

}  // namespace ztee::serve
