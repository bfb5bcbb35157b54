// `ztee serve`: an HTTP server that speaks E2B's wire protocol, so programs
// written against E2B's SDKs run their sandboxes on libztee microVMs with
// only environment variables changed (E2B_API_URL, E2B_SANDBOX_URL,
// E2B_API_KEY).
//
// Two planes share one listener:
//   control plane (E2B's REST API, api-openapi.yml): /sandboxes, /v2/sandboxes,
//     authenticated by X-API-Key;
//   sandbox plane (E2B's envd: /health, /files and Connect-RPC
//     process.Process / filesystem.Filesystem with the JSON codec), chosen
//     by the E2b-Sandbox-Id header (or a "<port>-<sandbox id>.<domain>" Host)
//     and authenticated by the sandbox's X-Access-Token.
// Beside them: POST /v1/exec (a one-shot JSON API, serve/exec_api.hpp),
// GET /metrics (Prometheus text, serve/metrics.hpp) and GET /healthz.
//
// Every sandbox is a real libztee sandbox (jail, no network, verified
// teardown), leased from a warm pool when the template has one, and
// destroyed when its timeout passes or it is killed.
#pragma once

#include <ztee/policy.hpp>
#include <ztee/result.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "serve/http.hpp"

namespace ztee::serve {

struct ServeOptions {
  std::string listen = "127.0.0.1:3000";  // ADDR:PORT; port 0 picks one
  std::string state_dir;                  // the Runtime's state dir (empty: its default)
  std::string image_dir;                  // the "base" template's image (empty: the default image)
  // Key file (see parse_key_file). Required: the server refuses to start
  // without at least one key.
  std::string keys_file;
  // READY sandboxes kept waiting for the "base" template (a ztee::Pool,
  // so a create is a lease of a snapshot clone). 0: every create boots.
  uint32_t pool = 0;
  uint32_t max_sandboxes = 32;  // live sandboxes of all keys together
  // More templates: name -> directory holding manifest.json (an image: a
  // cold boot per sandbox) or a snapshot template made by Sandbox::snapshot
  // (a clone per sandbox). "base" is always the default image.
  std::map<std::string, std::string> templates;
  uint32_t memory_mib = 256;  // of each sandbox (reported as memoryMB)
  bool jail = true;           // JailOptions::enabled
  uint32_t workers = 8;       // threads for blocking sandbox calls (file I/O, boots)
  HttpLimits limits;
  // This node's name in a cluster of `ztee serve` nodes (serve/cluster.hpp):
  // part of every sandbox id, "sb-<hex>-<node>", so a proxy routes by it.
  // Empty: from the host name (default_node_name()).
  std::string node;
  // Other nodes, "http://HOST:PORT": a list answers with their sandboxes too.
  std::vector<std::string> peers;
  // GET /metrics needs an X-API-Key too. Off: it is open to whoever reaches
  // the listener (it holds only counts, no ids, keys or metadata).
  bool metrics_auth = false;
  // The policy gate (serve/guard.hpp): every command and file write
  // through the server is classified by the policy in this JSON file.
  // Empty: off (nothing is classified or recorded).
  std::string policy_file;
  std::string audit_file;      // with a policy: the audit log (hash-chained JSON Lines)
  std::string audit_key_file;  // HMAC key of every audit record (optional)
  // kFsync: each record is synced before the call goes on, on the server's
  // event loop (every client waits for the disk). kBatch: a background
  // thread syncs at most every 100 ms (power loss loses up to that much).
  Durability audit_durability = Durability::kFsync;
  std::string approver_url;    // approve tiers ask it; empty: they are denied
  // Log lines (one event each); empty: stderr.
  std::function<void(std::string_view)> log;
};

class Server {
 public:
  // Starts the runtime (and pool), then listens. Blocks until the pool's
  // template exists. Fails with a message that says what to do.
  static Result<std::unique_ptr<Server>> start(ServeOptions opts);
  // Stops listening, kills every sandbox (verified teardown) and returns
  // when they are gone. Idempotent; also run by the destructor.
  void shutdown();
  ~Server();
  uint16_t port() const;
  // "qemu/tcg (...)": what runs the sandboxes.
  std::string backend_description() const;

  struct Impl;

 private:
  Server() = default;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ztee::serve
