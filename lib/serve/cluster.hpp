// Several `ztee serve` nodes as one service, without a cluster manager.
//
// Each node has a name (--node). A sandbox's id names the node that runs it:
// "sb-<hex>-<node>" (the libztee sandbox id, a dash, the node name), so a
// reverse proxy routes every later request for it (the /sandboxes/<id> paths,
// envd's E2b-Sandbox-Id header, or a "<port>-<id>.<domain>" host name) to
// that node by matching the id alone (deploy/nginx/ztee-serve.conf).
// Creates and lists go to any node; a node that receives a list asks its
// --peer nodes for theirs (with X-Ztee-No-Fanout, so they do not ask on) and
// answers with all of them.
#pragma once

#include <ztee/result.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ztee::serve {

// Longest node name: the id stays inside one DNS label (63 bytes) in
// E2B's "<port>-<sandbox id>.<domain>" host names.
constexpr size_t kMaxNodeName = 32;

// A node name: 1..32 lower-case letters, digits and '-', starting and ending
// with a letter or digit. Fails (kInvalidArgument) saying what is wrong.
Result<void> check_node_name(std::string_view name);
// This machine's host name made into a node name (first label, lower-case,
// other characters as '-', cut to kMaxNodeName); "node" if nothing is left.
std::string default_node_name();

// The E2B sandbox id of libztee sandbox `local_id` ("sb-<hex>") on `node`.
std::string cluster_sandbox_id(std::string_view local_id, std::string_view node);
// The node named in a sandbox id; nullopt when the id is not "sb-<hex>-<node>".
std::optional<std::string> node_of_sandbox_id(std::string_view id);

// A peer, as --peer gives it: "http://HOST:PORT" (HOST: a name, which may
// resolve to several nodes, e.g. a headless Kubernetes Service, or an IP).
struct PeerUrl {
  std::string host;
  uint16_t port = 0;
};
Result<PeerUrl> parse_peer_url(std::string_view url);

// One sandbox of a list answer (an element of GET /sandboxes).
struct ListedSandbox {
  std::string id;
  std::string started_at;  // RFC 3339 as written by ztee serve: sorts as text
  std::string json;        // the element, minified
};
// Parses a GET /sandboxes answer body (a JSON array of sandbox objects).
// Fails (kInvalidArgument) on anything else.
Result<std::vector<ListedSandbox>> parse_sandbox_list(std::string_view body);

// What the peers said to one list request.
struct PeerListing {
  std::vector<ListedSandbox> sandboxes;
  std::vector<std::string> unreachable;  // "<address> (<why>)", one per peer address that did not answer
};

// GETs `target` (path and query) from every address of every peer at once,
// with X-API-Key `api_key` and X-Ztee-No-Fanout: 1, each within timeout_ms.
// Blocking: call it off the event loop.
PeerListing list_from_peers(const std::vector<PeerUrl>& peers, std::string_view target, std::string_view api_key,
                            uint32_t timeout_ms);

// The header that asks a node for its own sandboxes only.
constexpr const char* kNoFanoutHeader = "x-ztee-no-fanout";

}  // namespace ztee::serve
