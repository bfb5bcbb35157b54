// Fuzz target for the caller-controlled network allowlist parser
// (SandboxOptions::network, `ztee run --allow`): one entry per input. An
// accepted entry must print to a canonical form that parses back to itself.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "net/net.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ztee::detail;
  std::string_view entry(reinterpret_cast<const char*>(data), size);
  auto r = parse_net_rule(entry);
  if (!r) {
    if (r.error().message.empty()) __builtin_trap();
    return 0;
  }
  if (r->prefix > 32 || r->port_lo == 0 || r->port_lo > r->port_hi || !(r->tcp || r->udp)) __builtin_trap();
  std::string text = r->text();
  auto again = parse_net_rule(text);
  if (!again || again->text() != text || again->net_be != r->net_be || again->prefix != r->prefix) __builtin_trap();
  (void)parse_net_policy({std::string(entry)}, entry);
  return 0;
}
