// Fuzz target for the host's parsers of guest JSON replies (EXIT, ERROR,
// HELLO, FILE_STAT, FILE_LIST, DIFF, STDIN_ACK). The first byte picks the parser.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "agent/protocol.hpp"
#include "agent/replies.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ztee::detail;
  if (size == 0) return 0;
  static simdjson::dom::parser parser;
  std::string_view payload(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 7) {
    case 0: (void)parse_exit(parser, payload); break;
    case 1: {
      auto e = parse_guest_error(parser, payload);
      if (e && e->message.size() > kMaxGuestMessage) __builtin_trap();
      break;
    }
    case 2: (void)parse_hello(parser, payload); break;
    case 3: (void)parse_stat(parser, payload, "/p"); break;
    case 6: {
      auto n = parse_stdin_ack(parser, payload);
      if (n && (*n < 1 || *n > ztee::proto::kStdinWindow)) __builtin_trap();
      break;
    }
    case 5: {
      auto d = parse_diff(parser, payload, {"/workspace"});
      if (d)
        for (auto& c : *d) {
          // Paths are clean: relative in a mount, absolute otherwise, never "..".
          if (c.path.empty() || (c.path[0] == '/') != c.mount.empty() || c.path.find("..") == 0 ||
              c.path.find("/../") != std::string::npos || c.path.find('\0') != std::string::npos)
            __builtin_trap();
          if (!c.mount.empty() && c.mount != "/workspace") __builtin_trap();
        }
      break;
    }
    default: {
      auto l = parse_list(parser, payload);
      if (l)
        for (auto& f : *l)
          if (f.name.empty() || f.name.find('/') != std::string::npos) __builtin_trap();
      break;
    }
  }
  return 0;
}
