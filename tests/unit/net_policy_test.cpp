// lib/net policy parsing, slot arithmetic and ruleset text (no privileges needed).
#include <doctest/doctest.h>

#include <string>

#include "net/net.hpp"
#include "../why.hpp"

using namespace ztee;
using namespace ztee::detail;

namespace {

std::string canon(const char* entry) {
  auto r = parse_net_rule(entry);
  REQUIRE_MESSAGE(r.ok(), entry, ": ", why(r));
  return r->text();
}

std::string rejection(const char* entry) {
  auto r = parse_net_rule(entry);
  REQUIRE_MESSAGE(!r.ok(), entry, " was accepted as ", r.ok() ? r->text() : "");
  CHECK(r.error().code == Errc::kInvalidArgument);
  CHECK(r.error().message.find(std::string("\"") + entry + "\"") != std::string::npos);
  CHECK(r.error().message.find("accepted forms: ADDR[/PREFIX]:PORT") != std::string::npos);
  return r.error().message;
}

}  // namespace

TEST_CASE("allow rules: accepted forms and their canonical text") {
  CHECK(canon("10.0.0.0/8:443") == "10.0.0.0/8:443");
  CHECK(canon("10.0.0.0/8:443/tcp") == "10.0.0.0/8:443/tcp");
  CHECK(canon("10.0.0.0/8:53/udp") == "10.0.0.0/8:53/udp");
  CHECK(canon("192.0.2.7:8000-8080") == "192.0.2.7/32:8000-8080");
  CHECK(canon("192.0.2.7/32:1-65535/tcp") == "192.0.2.7/32:1-65535/tcp");
  CHECK(canon("0.0.0.0/0:443/tcp") == "0.0.0.0/0:443/tcp");
  CHECK(canon("198.51.100.0/24:80-80") == "198.51.100.0/24:80");
  CHECK(canon("203.0.113.128/25:65535") == "203.0.113.128/25:65535");

  auto r = parse_net_rule("192.0.2.0/24:8000-8080/udp");
  REQUIRE(r.ok());
  CHECK(r->net_be == ipv4_be(192, 0, 2, 0));
  CHECK(r->prefix == 24);
  CHECK(r->port_lo == 8000);
  CHECK(r->port_hi == 8080);
  CHECK_FALSE(r->tcp);
  CHECK(r->udp);
  auto both = parse_net_rule("192.0.2.1:1");
  REQUIRE(both.ok());
  CHECK(both->tcp);
  CHECK(both->udp);
  CHECK(both->prefix == 32);
}

TEST_CASE("allow rules: rejections quote the entry, say why and show the forms") {
  CHECK(rejection("10.0.0.0/8:80x").find("port must be 1-65535") != std::string::npos);
  CHECK(rejection("10.0.0.0/8:0").find("\"10.0.0.0/8:0\": port must be 1-65535") != std::string::npos);
  CHECK(rejection("10.0.0.0/8:65536").find("port must be 1-65535") != std::string::npos);
  CHECK(rejection("10.0.0.0/8:-5").find("ports must be 1-65535") != std::string::npos);
  CHECK(rejection("10.0.0.0/8:90-80").find("reversed") != std::string::npos);
  CHECK(rejection("10.0.0.0/8:80-").find("ports must be 1-65535") != std::string::npos);
  CHECK(rejection("10.0.0.0/8:+80").find("port must be 1-65535") != std::string::npos);
  CHECK(rejection("10.0.0.0/8: 80").find("port must be 1-65535") != std::string::npos);
  CHECK(rejection("10.0.0.0/8").find("a port or port range is required") != std::string::npos);
  CHECK(rejection("10.0.0.0/8:").find("port must be 1-65535") != std::string::npos);
  CHECK(rejection("10.0.0.0/33:80").find("prefix length must be 0-32") != std::string::npos);
  CHECK(rejection("10.0.0.0/:80").find("prefix length must be 0-32") != std::string::npos);
  CHECK(rejection("10.0.0.0/x:80").find("prefix length must be 0-32") != std::string::npos);
  CHECK(rejection("10.0.0.1/8:80").find("did you mean 10.0.0.0/8?") != std::string::npos);
  CHECK(rejection("10.0.0:80").find("\"10.0.0\" is not an IPv4 address") != std::string::npos);
  CHECK(rejection("10.0.0.256:80").find("is not an IPv4 address") != std::string::npos);
  CHECK(rejection("010.0.0.1:80").find("is not an IPv4 address") != std::string::npos);
  CHECK(rejection("example.com:443").find("is not an IPv4 address") != std::string::npos);
  CHECK(rejection(":443").find("is not an IPv4 address") != std::string::npos);
  CHECK(rejection("10.0.0.1:80/sctp").find("protocol suffix must be /tcp or /udp") != std::string::npos);
  CHECK(rejection("10.0.0.1:80/tcp/udp").find("protocol suffix") != std::string::npos);
  CHECK(rejection("10.0.0.1:80/TCP").find("protocol suffix") != std::string::npos);
  CHECK(rejection("10.0.0.1:80:90").find("port must be 1-65535") != std::string::npos);
  CHECK(rejection("[2001:db8::1]:443").find("IPv6 is not supported yet") != std::string::npos);
  CHECK(rejection("2001:db8::/32:443").find("IPv6 is not supported yet") != std::string::npos);
  CHECK(rejection(" 10.0.0.1:80").find("is not an IPv4 address") != std::string::npos);
  auto empty = parse_net_rule("");
  REQUIRE_FALSE(empty.ok());
  CHECK(empty.error().message.find("empty entry") != std::string::npos);
}

TEST_CASE("policies: rules, resolver, limits") {
  auto p = parse_net_policy({"10.0.0.0/8:443/tcp", "192.0.2.7:53/udp"}, "192.0.2.53");
  REQUIRE(p.ok());
  CHECK(p->allow.size() == 2);
  REQUIRE(p->dns_be.has_value());
  CHECK(*p->dns_be == ipv4_be(192, 0, 2, 53));
  CHECK(p->enabled());

  auto none = parse_net_policy({}, "");
  REQUIRE(none.ok());
  CHECK_FALSE(none->enabled());
  auto dns_only = parse_net_policy({}, "192.0.2.53");
  REQUIRE(dns_only.ok());
  CHECK(dns_only->enabled());

  auto bad = parse_net_policy({"10.0.0.0/8:443", "nope"}, "");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().message.find("\"nope\"") != std::string::npos);
  auto loop = parse_net_policy({}, "127.0.0.53");
  REQUIRE_FALSE(loop.ok());
  CHECK(loop.error().message.find("loopback resolver") != std::string::npos);
  auto v6 = parse_net_policy({}, "2001:db8::53");
  REQUIRE_FALSE(v6.ok());
  CHECK(v6.error().message.find("IPv6 is not supported yet") != std::string::npos);
  auto junk = parse_net_policy({}, "dns.example");
  REQUIRE_FALSE(junk.ok());
  CHECK(junk.error().message.find("\"dns.example\": not an IPv4 address") != std::string::npos);

  std::vector<std::string> many(kMaxNetRules + 1, "192.0.2.1:80");
  auto too_many = parse_net_policy(many, "");
  REQUIRE_FALSE(too_many.ok());
  CHECK(too_many.error().message.find("at most 1024") != std::string::npos);
}

TEST_CASE("slot indices and pools") {
  NetEnv env;
  CHECK(env.pool_be == ipv4_be(100, 97, 0, 0));
  CHECK(env.slot_count() == 16384);
  CHECK(validate_slot(env, 0).ok());
  CHECK(validate_slot(env, 16383).ok());
  auto over = validate_slot(env, 16384);
  REQUIRE_FALSE(over.ok());
  CHECK(over.error().message.find("slots 0-16383") != std::string::npos);
  NetEnv wide;
  wide.pool_be = ipv4_be(10, 0, 0, 0);
  wide.pool_prefix = 8;
  CHECK(wide.slot_count() == (1u << 22));
  NetEnv bad;
  bad.pool_be = ipv4_be(100, 97, 0, 4);
  CHECK(bad.slot_count() == 0);
  CHECK_FALSE(validate_slot(bad, 0).ok());
  bad.pool_be = ipv4_be(100, 97, 0, 0);
  bad.pool_prefix = 31;
  CHECK(bad.slot_count() == 0);
  bad.pool_prefix = 7;
  CHECK(bad.slot_count() == 0);
}

TEST_CASE("the slot ruleset is one default-deny transaction") {
  NetEnv env;
  auto p = parse_net_policy({"10.0.0.0/8:443/tcp", "192.0.2.7:53/udp", "198.51.100.0/24:8000-8080"}, "192.0.2.53");
  REQUIRE(p.ok());
  std::string r = slot_ruleset(env, *p, {ipv4_be(192, 0, 2, 2), ipv4_be(127, 0, 0, 1), ipv4_be(192, 0, 2, 2)});
  CHECK(r.rfind("flush ruleset\ntable inet ztee {", 0) == 0);
  CHECK(r.find("elements = { 127.0.0.1, 192.0.2.2 }") != std::string::npos);  // sorted, duplicates gone
  CHECK(r.find("hook forward priority filter; policy drop;") != std::string::npos);
  CHECK(r.find("hook input priority filter; policy drop;") != std::string::npos);
  CHECK(r.find("ip daddr 100.97.0.0/16 drop") != std::string::npos);
  CHECK(r.find("ip daddr 192.0.2.53 udp dport 53 accept") != std::string::npos);
  CHECK(r.find("ip daddr 192.0.2.53 tcp dport 53 accept") != std::string::npos);
  CHECK(r.find("ip daddr 10.0.0.0/8 tcp dport 443 accept") != std::string::npos);
  CHECK(r.find("ip daddr 192.0.2.7/32 udp dport 53 accept") != std::string::npos);
  CHECK(r.find("ip daddr 198.51.100.0/24 meta l4proto { tcp, udp } th dport 8000-8080 accept") != std::string::npos);
  // The drops come before any accept.
  CHECK(r.find("@host_addrs drop") < r.find("dport 53 accept"));
  CHECK(r.find("127.0.0.0/8") < r.find("dport 443 accept"));

  auto closed = slot_ruleset(env, NetPolicy{}, {});
  CHECK(closed.find("elements") == std::string::npos);
  CHECK(closed.find(" accept\n    ip daddr") == std::string::npos);
  CHECK(closed.find("dport") == std::string::npos);
}

TEST_CASE("the host table records who turned ip_forward on") {
  NetEnv env;
  std::string on = host_ruleset(env, true), kept = host_ruleset(env, false);
  CHECK(on.rfind("create table inet ztee { comment \"libztee slots; ip_forward set by libztee\"; }", 0) == 0);
  CHECK(kept.find("ip_forward was already on") != std::string::npos);
  CHECK(on.find("iifname { \"ztee0\", \"ztee0p\" } drop") != std::string::npos);  // input: nothing from slots
  CHECK(on.find("iifname \"ztee0\" oifname \"ztee0\" drop") != std::string::npos);  // no slot -> slot hairpin
  CHECK(on.find("iifname \"ztee0p\" drop") != std::string::npos);
  CHECK(on.find("iifname \"ztee0\" ip saddr != 100.97.0.0/16 drop") != std::string::npos);
  CHECK(on.find("ip saddr 100.97.0.0/16 oifname != \"ztee0\" masquerade") != std::string::npos);
  // The hairpin drop comes before the accept of everything else from ztee0.
  CHECK(on.find("iifname \"ztee0\" oifname \"ztee0\" drop") < on.find("iifname \"ztee0\" accept"));
}
