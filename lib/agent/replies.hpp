// Parsers for the JSON replies the guest sends (EXIT, STDIN_ACK, ERROR, HELLO,
// FILE_STAT, FILE_LIST, DIFF). SECURITY: every payload is guest-controlled: each
// field is type- and range-checked, strings are bounded, and anything
// malformed is a kProtocol error (the caller then fails that sandbox).
// Fuzzed by tests/fuzz/agent_replies_fuzz.cpp.
#pragma once

#include <ztee/ztee.hpp>

#include <simdjson.h>

#include <string_view>
#include <vector>

namespace ztee::detail {

struct ExitInfo {
  int exit_code = -1;
  int signal = 0;
  bool timed_out = false;
  bool truncated = false;
  uint64_t duration_us = 0;
};

struct GuestError {
  int sys_errno = 0;      // 0 when missing or out of range
  std::string message;    // at most kMaxGuestMessage bytes
};

inline constexpr size_t kMaxGuestMessage = 1024;

Result<ExitInfo> parse_exit(simdjson::dom::parser& p, std::string_view payload);
Result<GuestError> parse_guest_error(simdjson::dom::parser& p, std::string_view payload);
// STDIN_ACK's byte count: 1..kStdinWindow.
Result<uint64_t> parse_stdin_ack(simdjson::dom::parser& p, std::string_view payload);
// True for a HELLO reply carrying an integer "protocol".
bool parse_hello(simdjson::dom::parser& p, std::string_view payload);
Result<FileInfo> parse_stat(simdjson::dom::parser& p, std::string_view payload, std::string_view path);
Result<std::vector<FileInfo>> parse_list(simdjson::dom::parser& p, std::string_view payload);
// DIFF's data: a JSON array of changes. Paths are checked: a root change is
// absolute, a mount change relative, neither has empty, "." or ".."
// components or NUL; a mount change names one of `mounts`.
Result<std::vector<Change>> parse_diff(simdjson::dom::parser& p, std::string_view data,
                                       const std::vector<std::string>& mounts);

}  // namespace ztee::detail
