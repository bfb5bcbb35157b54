// Allowlist parsing, address arithmetic and the nftables rulesets of lib/net.
#include <arpa/inet.h>
#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "net/internal.hpp"
#include "net/net.hpp"

namespace ztee::detail {

namespace {

constexpr std::string_view kForms =
    "accepted forms: ADDR[/PREFIX]:PORT or ADDR[/PREFIX]:LO-HI, optionally followed by /tcp or /udp "
    "(IPv4 only; a bare ADDR means ADDR/32), e.g. 10.0.0.0/8:443/tcp, 192.0.2.7:53/udp, 192.0.2.0/24:8000-8080";

Error rule_error(std::string_view entry, std::string_view why) {
  return make_error(Errc::kInvalidArgument, fmt::format("net allow rule \"{}\": {} ({})", entry, why, kForms));
}

uint32_t mask_host(uint8_t prefix) { return prefix == 0 ? 0 : ~0u << (32 - prefix); }

bool parse_ipv4(std::string_view s, uint32_t* out_be) {
  if (s.empty() || s.size() > 15) return false;
  char buf[16];
  std::copy(s.begin(), s.end(), buf);
  buf[s.size()] = '\0';
  struct in_addr a{};
  if (::inet_pton(AF_INET, buf, &a) != 1) return false;
  *out_be = a.s_addr;
  return true;
}

// Decimal digits only (no sign, no spaces); false if empty or out of [lo, hi].
bool parse_uint(std::string_view s, unsigned lo, unsigned hi, unsigned* out) {
  if (s.empty() || s.size() > 5) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  unsigned v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < lo || v > hi) return false;
  *out = v;
  return true;
}

// An IPv4 entry has dots before its first ':'; an IPv6 one has two or more ':' and no dot there.
bool looks_ipv6(std::string_view s) {
  if (!s.empty() && s.front() == '[') return true;
  return std::count(s.begin(), s.end(), ':') >= 2 && s.substr(0, s.find(':')).find('.') == std::string_view::npos;
}

}  // namespace

std::string ipv4_text(uint32_t addr_be) {
  const auto* b = reinterpret_cast<const uint8_t*>(&addr_be);
  return fmt::format("{}.{}.{}.{}", b[0], b[1], b[2], b[3]);
}

std::string NetRule::text() const {
  std::string s = fmt::format("{}/{}:", ipv4_text(net_be), prefix);
  s += port_lo == port_hi ? fmt::format("{}", port_lo) : fmt::format("{}-{}", port_lo, port_hi);
  if (tcp && !udp) s += "/tcp";
  if (udp && !tcp) s += "/udp";
  return s;
}

Result<NetRule> parse_net_rule(std::string_view entry) {
  if (entry.empty()) return rule_error(entry, "empty entry");
  if (looks_ipv6(entry)) return rule_error(entry, "IPv6 is not supported yet; only IPv4 destinations are allowed");
  std::string_view rest = entry;
  NetRule r;
  // Protocol suffix.
  if (rest.ends_with("/tcp")) {
    r.udp = false;
    rest.remove_suffix(4);
  } else if (rest.ends_with("/udp")) {
    r.tcp = false;
    rest.remove_suffix(4);
  }
  size_t colon = rest.find(':');
  if (colon == std::string_view::npos) return rule_error(entry, "a port or port range is required after ':'");
  std::string_view cidr = rest.substr(0, colon), ports = rest.substr(colon + 1);
  if (ports.find('/') != std::string_view::npos)
    return rule_error(entry, "the protocol suffix must be /tcp or /udp");

  std::string_view addr = cidr;
  unsigned prefix = 32;
  if (size_t slash = cidr.find('/'); slash != std::string_view::npos) {
    addr = cidr.substr(0, slash);
    if (!parse_uint(cidr.substr(slash + 1), 0, 32, &prefix)) return rule_error(entry, "prefix length must be 0-32");
  }
  uint32_t a = 0;
  if (!parse_ipv4(addr, &a)) return rule_error(entry, fmt::format("\"{}\" is not an IPv4 address", addr));
  uint32_t host = ntohl(a);
  uint32_t m = mask_host(static_cast<uint8_t>(prefix));
  if ((host & ~m) != 0)
    return rule_error(entry, fmt::format("host bits set after /{}; did you mean {}/{}?", prefix,
                                         ipv4_text(htonl(host & m)), prefix));
  r.net_be = a;
  r.prefix = static_cast<uint8_t>(prefix);

  unsigned lo = 0, hi = 0;
  if (size_t dash = ports.find('-'); dash != std::string_view::npos) {
    if (!parse_uint(ports.substr(0, dash), 1, 65535, &lo) || !parse_uint(ports.substr(dash + 1), 1, 65535, &hi))
      return rule_error(entry, "ports must be 1-65535");
    if (lo > hi) return rule_error(entry, fmt::format("port range {}-{} is reversed", lo, hi));
  } else {
    if (!parse_uint(ports, 1, 65535, &lo)) return rule_error(entry, "port must be 1-65535");
    hi = lo;
  }
  r.port_lo = static_cast<uint16_t>(lo);
  r.port_hi = static_cast<uint16_t>(hi);
  return r;
}

Result<NetPolicy> parse_net_policy(const std::vector<std::string>& allow, std::string_view dns) {
  NetPolicy p;
  if (allow.size() > kMaxNetRules)
    return make_error(Errc::kInvalidArgument,
                      fmt::format("net allowlist has {} entries; at most {} are supported", allow.size(), kMaxNetRules));
  for (const auto& e : allow) {
    auto r = parse_net_rule(e);
    if (!r) return std::move(r).error();
    p.allow.push_back(*r);
  }
  if (!dns.empty()) {
    if (looks_ipv6(dns))
      return make_error(Errc::kInvalidArgument,
                        fmt::format("net dns resolver \"{}\": IPv6 is not supported yet; give an IPv4 address", dns));
    uint32_t a = 0;
    if (!parse_ipv4(dns, &a))
      return make_error(Errc::kInvalidArgument,
                        fmt::format("net dns resolver \"{}\": not an IPv4 address (e.g. 192.0.2.53)", dns));
    if ((ntohl(a) >> 24) == 127)
      return make_error(Errc::kInvalidArgument,
                        fmt::format("net dns resolver \"{}\": a loopback resolver is unreachable from a sandbox; "
                                    "name a resolver the host can route to",
                                    dns));
    p.dns_be = a;
  }
  return p;
}

uint32_t NetEnv::slot_count() const {
  if (pool_prefix < 8 || pool_prefix > 30) return 0;
  if ((ntohl(pool_be) & ~mask_host(pool_prefix)) != 0) return 0;
  return 1u << (30 - pool_prefix);
}

Result<void> validate_slot(const NetEnv& env, uint32_t slot) {
  uint32_t n = env.slot_count();
  if (n == 0)
    return make_error(Errc::kInvalidArgument,
                      fmt::format("network pool {}/{} is invalid: the prefix must be 8-30 with no host bits set",
                                  ipv4_text(env.pool_be), env.pool_prefix));
  if (slot >= n)
    return make_error(Errc::kInvalidArgument,
                      fmt::format("network slot {} is outside the pool {}/{} (slots 0-{}); use a smaller index or a "
                                  "larger pool",
                                  slot, ipv4_text(env.pool_be), env.pool_prefix, n - 1));
  return {};
}

std::string slot_ruleset(const NetEnv& env, const NetPolicy& policy, const std::vector<uint32_t>& host_addrs_be) {
  std::vector<uint32_t> hosts = host_addrs_be;
  std::sort(hosts.begin(), hosts.end());
  hosts.erase(std::unique(hosts.begin(), hosts.end()), hosts.end());

  std::string s = "flush ruleset\ntable inet ztee {\n";
  s += "  set host_addrs {\n    type ipv4_addr\n";
  if (!hosts.empty()) {
    s += "    elements = { ";
    for (size_t i = 0; i < hosts.size(); ++i) s += (i ? ", " : "") + ipv4_text(hosts[i]);
    s += " }\n";
  }
  s += "  }\n";
  s +=
      "  chain input {\n"
      "    type filter hook input priority filter; policy drop;\n"
      "    iif \"lo\" accept\n"
      "    ct state established,related accept\n"
      "  }\n"
      "  chain forward {\n"
      "    type filter hook forward priority filter; policy drop;\n"
      "    ct state established,related accept\n"
      "    iifname != \"tap0\" drop\n"
      "    oifname != \"eth0\" drop\n"
      "    meta nfproto != ipv4 drop\n"
      "    ip daddr { 0.0.0.0/8, 100.96.0.0/15, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4, 240.0.0.0/4 } drop\n";
  s += fmt::format("    ip daddr {}/{} drop\n", ipv4_text(env.pool_be), env.pool_prefix);
  s += "    ip daddr @host_addrs drop\n";
  if (policy.dns_be) {
    s += fmt::format("    ip daddr {} udp dport 53 accept\n", ipv4_text(*policy.dns_be));
    s += fmt::format("    ip daddr {} tcp dport 53 accept\n", ipv4_text(*policy.dns_be));
  }
  for (const auto& r : policy.allow) {
    std::string ports = r.port_lo == r.port_hi ? fmt::format("{}", r.port_lo) : fmt::format("{}-{}", r.port_lo, r.port_hi);
    std::string proto = r.tcp && r.udp ? "meta l4proto { tcp, udp } th" : r.tcp ? "tcp" : "udp";
    s += fmt::format("    ip daddr {}/{} {} dport {} accept\n", ipv4_text(r.net_be), r.prefix, proto, ports);
  }
  s +=
      "  }\n"
      "  chain postrouting {\n"
      "    type nat hook postrouting priority srcnat; policy accept;\n"
      "    oifname \"eth0\" masquerade\n"
      "  }\n"
      "}\n";
  return s;
}

std::string host_ruleset(const NetEnv& env, bool ip_forward_was_off) {
  std::string pool = fmt::format("{}/{}", ipv4_text(env.pool_be), env.pool_prefix);
  return fmt::format(
      "create table inet ztee {{ comment \"{}\"; }}\n"
      "table inet ztee {{\n"
      "  chain input {{\n"
      "    type filter hook input priority filter; policy accept;\n"
      "    iifname {{ \"ztee0\", \"ztee0p\" }} drop\n"
      "  }}\n"
      "  chain forward {{\n"
      "    type filter hook forward priority filter; policy accept;\n"
      "    iifname \"ztee0p\" drop\n"
      "    oifname \"ztee0p\" drop\n"
      "    iifname \"ztee0\" oifname \"ztee0\" drop\n"
      "    iifname \"ztee0\" meta nfproto != ipv4 drop\n"
      "    iifname \"ztee0\" ip saddr != {} drop\n"
      "    iifname \"ztee0\" accept\n"
      "    oifname \"ztee0\" ct state established,related accept\n"
      "    oifname \"ztee0\" drop\n"
      "  }}\n"
      "  chain postrouting {{\n"
      "    type nat hook postrouting priority srcnat; policy accept;\n"
      "    ip saddr {} oifname != \"ztee0\" masquerade\n"
      "  }}\n"
      "}}\n",
      ip_forward_was_off ? netimpl::kHostCommentForwardOn : netimpl::kHostCommentForwardKept, pool, pool);
}

}  // namespace ztee::detail
