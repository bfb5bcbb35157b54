// Small helpers for the JSON control payloads: writing (escaping) on the
// host, and checked field access over simdjson's DOM for guest replies.
#pragma once

#include <simdjson.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ztee::detail {

// Appends s as a JSON string literal (with quotes). Bytes that are not valid
// UTF-8 are replaced by U+FFFD so the output is always valid JSON.
void json_append_string(std::string& out, std::string_view s);
std::string json_quote(std::string_view s);

// Checked accessors: nullopt when the field is missing or has the wrong type.
std::optional<int64_t> json_int(simdjson::dom::object obj, std::string_view key);
std::optional<bool> json_bool(simdjson::dom::object obj, std::string_view key);
std::optional<std::string_view> json_str(simdjson::dom::object obj, std::string_view key);

}  // namespace ztee::detail
