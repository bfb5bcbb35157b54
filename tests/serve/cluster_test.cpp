// Unit tests of what lets several `ztee serve` nodes act as one: node names,
// the node in a sandbox id, --peer URLs, and the peers' list answers.
#include <doctest/doctest.h>

#include "serve/cluster.hpp"

using namespace ztee::serve;

TEST_CASE("node names: what a DNS label and the proxy's map accept") {
  CHECK(check_node_name("a"));
  CHECK(check_node_name("kvm-07"));
  CHECK(check_node_name(std::string(kMaxNodeName, 'x')));
  for (const char* bad : {"", "-a", "a-", "A", "a_b", "a.b", "a b", "é"}) {
    auto r = check_node_name(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("lower-case letters, digits and '-'") != std::string::npos);
  }
  CHECK_FALSE(check_node_name(std::string(kMaxNodeName + 1, 'x')));
  std::string d = default_node_name();
  CHECK(check_node_name(d));
}

TEST_CASE("the node is read back from the sandbox id, and only from a well-formed one") {
  std::string id = cluster_sandbox_id("sb-0123456789ab", "kvm-07");
  CHECK(id == "sb-0123456789ab-kvm-07");
  CHECK(node_of_sandbox_id(id) == std::optional<std::string>("kvm-07"));
  // "<port>-<id>.<domain>" stays one DNS label at the longest node name.
  CHECK(("49983-" + cluster_sandbox_id("sb-0123456789ab", std::string(kMaxNodeName, 'n'))).size() <= 63);
  for (const char* bad : {"sb-0123456789ab", "sb--a", "sb-xyz-a", "sb-012-", "sb-012-A", "xx-012-a", "sb-012-a.b", ""})
    CHECK_FALSE(node_of_sandbox_id(bad));
}

TEST_CASE("--peer URLs") {
  auto p = parse_peer_url("http://10.0.0.12:3000");
  REQUIRE(p);
  CHECK(p->host == "10.0.0.12");
  CHECK(p->port == 3000);
  p = parse_peer_url("http://ztee-peers.ztee.svc.cluster.local:3000/");
  REQUIRE(p);
  CHECK(p->host == "ztee-peers.ztee.svc.cluster.local");
  p = parse_peer_url("http://[::1]:8080");
  REQUIRE(p);
  CHECK(p->host == "::1");
  for (const char* bad : {"https://a:1", "http://a", "http://a:0", "http://a:70000", "http://a:1/x", "http://:1",
                          "http://u@a:1", "a:1", "http://a:b"}) {
    auto r = parse_peer_url(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("expected http://HOST:PORT") != std::string::npos);
  }
}

TEST_CASE("a peer's list answer") {
  auto l = parse_sandbox_list(
      R"([{"sandboxID":"sb-01-b","startedAt":"2026-12-01T10:00:00.000Z","metadata":{"k":"v"}},)"
      R"( {"sandboxID":"sb-02-b", "startedAt":"2026-12-01T09:00:00.000Z"}])");
  REQUIRE(l);
  REQUIRE(l->size() == 2);
  CHECK((*l)[0].id == "sb-01-b");
  CHECK((*l)[0].started_at == "2026-12-01T10:00:00.000Z");
  CHECK((*l)[0].json == R"({"sandboxID":"sb-01-b","startedAt":"2026-12-01T10:00:00.000Z","metadata":{"k":"v"}})");
  CHECK((*l)[1].json == R"({"sandboxID":"sb-02-b","startedAt":"2026-12-01T09:00:00.000Z"})");
  auto empty = parse_sandbox_list("[]");
  REQUIRE(empty);
  CHECK(empty->empty());
  for (const char* bad : {"", "{}", "[1]", R"([{"sandboxID":"x"}])", R"([{"sandboxID":1,"startedAt":"t"}])", "[", "<html>"})
    CHECK_FALSE(parse_sandbox_list(bad));
}

TEST_CASE("peers that do not answer are named, not skipped silently") {
  // Port 1 on loopback: nothing listens there. "localhost" comes from
  // /etc/hosts (no DNS query leaves the machine), each of its addresses asked.
  auto got = list_from_peers({PeerUrl{"127.0.0.1", 1}, PeerUrl{"localhost", 1}}, "/sandboxes",
                             "e2b_0000000000000000000000000000000000000000", 2000);
  CHECK(got.sandboxes.empty());
  REQUIRE(got.unreachable.size() >= 2);
  for (auto& u : got.unreachable) {
    INFO(u);
    CHECK(u.find(":1 (") != std::string::npos);
  }
}
