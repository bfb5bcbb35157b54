// ztee serve: E2B's API on this machine (lib/serve), from the command line.
#include "serve_cmd.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "serve/cluster.hpp"
#include "serve/serve.hpp"
#include "serve/util.hpp"

namespace ztee::cli {

namespace {

const char kServeUsage[] =
    "usage: ztee serve [--listen ADDR:PORT] --keys FILE [options]\n"
    "       ztee serve keygen --keys FILE [--name NAME] [--max-sandboxes N]\n"
    "\n"
    "Serves E2B's API (control plane and envd) so programs written for E2B's SDKs\n"
    "run their sandboxes here with only environment variables changed:\n"
    "  E2B_API_URL=http://ADDR:PORT E2B_SANDBOX_URL=http://ADDR:PORT E2B_API_KEY=e2b_...\n"
    "Also: POST /v1/exec (one command in a fresh sandbox, JSON in and out),\n"
    "GET /metrics (Prometheus text) and GET /healthz.\n"
    "Stops on SIGINT or SIGTERM, killing every sandbox it started.\n"
    "\n"
    "options:\n"
    "  --listen ADDR:PORT      where to listen (default 127.0.0.1:3000; port 0 picks one)\n"
    "  --keys FILE             API keys (SHA-256 hashes; made by `ztee serve keygen`)\n"
    "  --state-dir DIR         the runtime's state directory\n"
    "  --image DIR             the image of template \"base\" (default: the default image)\n"
    "  --template NAME=DIR     another template: an image dir or a snapshot template dir\n"
    "  --pool N                keep N sandboxes of \"base\" ready (create = a snapshot clone)\n"
    "  --max-sandboxes N       live sandboxes of all keys together (default 32)\n"
    "  --memory MIB            memory of each sandbox (default 256)\n"
    "  --max-connections N     open connections (default 1024; 503 beyond)\n"
    "  --max-body-mib N        request body limit (default 64; 413 beyond)\n"
    "  --header-timeout-ms N   time a client has to send a request's headers (default 10000; 408)\n"
    "  --metrics-auth          GET /metrics needs an X-API-Key too (default: open, counts only)\n"
    "  --node NAME             this node's name, part of every sandbox id (default: from the host\n"
    "                          name); a proxy routes by it (deploy/nginx/ztee-serve.conf)\n"
    "  --peer http://HOST:PORT another node (repeatable; HOST may resolve to several): a list\n"
    "                          answers with their sandboxes too\n"
    "  --no-jail               run VMMs without the jail (development only; see JailOptions)\n"
    "  --policy FILE           classify every command (tool e2b.commands.run) and file write\n"
    "                          (e2b.files.write) by this policy (`ztee policy check FILE`):\n"
    "                          run, audit, approve or deny; refused calls reach the client as\n"
    "                          errors. Without it nothing is classified.\n"
    "  --audit FILE            with --policy: record creates, kills, calls, decisions,\n"
    "                          approvals and exit codes (`ztee audit verify FILE`)\n"
    "  --audit-key-file FILE   HMAC every audit record with the key in FILE\n"
    "  --audit-durability fsync|batch|none\n"
    "                          fsync (default): each record is on disk before the call goes\n"
    "                          on, synced on the server's loop (every client waits for it);\n"
    "                          batch: synced by a background thread at most every 100 ms\n"
    "                          (power loss loses up to 100 ms of records); none: by the kernel\n"
    "  --approver-url URL      approve tiers POST the call's JSON here and wait (up to the\n"
    "                          tier's approval_timeout_ms) for {\"approve\": true|false, \"by\",\n"
    "                          \"reason\"}; without it, or without an answer, they are denied\n"
    "\n"
    "keygen: makes a key e2b_<40 hex>, prints it once on stdout and appends only its\n"
    "SHA-256 to FILE (created 0600). max_sandboxes: concurrent sandboxes (default 20; 429 beyond).\n";

constexpr int kExitError = 125;  // as every ztee command: usage errors and failures of ztee itself

int usage_error(const std::string& msg) {
  fmt::print(stderr, "ztee: serve: {}\n{}", msg, kServeUsage);
  return kExitError;
}

bool parse_u32(const std::string& s, uint32_t& out, uint32_t lo, uint32_t hi) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  unsigned long v = std::strtoul(s.c_str(), &end, 10);
  if (*end || errno || v < lo || v > hi) return false;
  out = static_cast<uint32_t>(v);
  return true;
}

int keygen(const std::vector<std::string>& args) {
  std::string file, name;
  uint32_t max = 20;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto val = [&](std::string& out) {
      if (i + 1 >= args.size()) return false;
      out = args[++i];
      return true;
    };
    std::string v;
    if (a == "--keys") {
      if (!val(file)) return usage_error("--keys needs a FILE");
    } else if (a == "--name") {
      if (!val(name) || name.empty() || name.find_first_of(" \t\n#=") != std::string::npos)
        return usage_error("--name needs a NAME without spaces, '#' or '='");
    } else if (a == "--max-sandboxes") {
      if (!val(v) || !parse_u32(v, max, 1, 100000)) return usage_error("--max-sandboxes needs a number 1..100000");
    } else {
      return usage_error("unknown keygen option " + a);
    }
  }
  if (file.empty()) return usage_error("keygen needs --keys FILE");
  std::string key = serve::new_api_key();
  std::string line = fmt::format("sha256:{}{} max_sandboxes={}\n", serve::sha256_hex_of(key),
                                 name.empty() ? "" : " name=" + name, max);
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    fmt::print(stderr, "ztee: serve keygen: cannot open {}: {}\n", file, std::strerror(errno));
    return kExitError;
  }
  ssize_t w = ::write(fd, line.data(), line.size());
  int err = errno;
  ::close(fd);
  if (w != static_cast<ssize_t>(line.size())) {
    fmt::print(stderr, "ztee: serve keygen: cannot write {}: {}\n", file, std::strerror(err));
    return kExitError;
  }
  fmt::print("{}\n", key);
  fmt::print(stderr, "ztee serve keygen: key added to {} (only its SHA-256 is stored: keep the key now)\n", file);
  return 0;
}

}  // namespace

int serve_main(const std::vector<std::string>& args) {
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h" || args[0] == "help")) {
    std::fputs(kServeUsage, stdout);
    return 0;
  }
  if (!args.empty() && args[0] == "keygen") return keygen({args.begin() + 1, args.end()});
  serve::ServeOptions o;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    std::string v;
    auto val = [&]() {
      if (i + 1 >= args.size()) return false;
      v = args[++i];
      return true;
    };
    uint32_t n = 0;
    if (a == "--listen") {
      if (!val()) return usage_error("--listen needs ADDR:PORT");
      o.listen = v;
    } else if (a == "--keys") {
      if (!val()) return usage_error("--keys needs a FILE");
      o.keys_file = v;
    } else if (a == "--state-dir") {
      if (!val()) return usage_error("--state-dir needs a DIR");
      o.state_dir = v;
    } else if (a == "--image") {
      if (!val()) return usage_error("--image needs a DIR");
      o.image_dir = v;
    } else if (a == "--template") {
      if (!val() || v.find('=') == std::string::npos || v.find('=') == 0)
        return usage_error("--template needs NAME=DIR");
      o.templates[v.substr(0, v.find('='))] = v.substr(v.find('=') + 1);
    } else if (a == "--pool") {
      if (!val() || !parse_u32(v, o.pool, 0, 64)) return usage_error("--pool needs a number 0..64");
    } else if (a == "--max-sandboxes") {
      if (!val() || !parse_u32(v, o.max_sandboxes, 1, 10000)) return usage_error("--max-sandboxes needs a number 1..10000");
    } else if (a == "--memory") {
      if (!val() || !parse_u32(v, o.memory_mib, 64, 65536)) return usage_error("--memory needs MiB 64..65536");
    } else if (a == "--max-connections") {
      if (!val() || !parse_u32(v, n, 1, 1000000)) return usage_error("--max-connections needs a number");
      o.limits.max_connections = n;
    } else if (a == "--max-body-mib") {
      if (!val() || !parse_u32(v, n, 1, 4096)) return usage_error("--max-body-mib needs a number 1..4096");
      o.limits.max_body = static_cast<size_t>(n) << 20;
    } else if (a == "--header-timeout-ms") {
      if (!val() || !parse_u32(v, n, 100, 3600000)) return usage_error("--header-timeout-ms needs a number 100..3600000");
      o.limits.header_timeout_ms = n;
    } else if (a == "--metrics-auth") {
      o.metrics_auth = true;
    } else if (a == "--node") {
      if (!val()) return usage_error("--node needs a NAME");
      if (auto r = serve::check_node_name(v); !r) return usage_error(r.error().message);
      o.node = v;
    } else if (a == "--peer") {
      if (!val()) return usage_error("--peer needs http://HOST:PORT");
      if (auto r = serve::parse_peer_url(v); !r) return usage_error(r.error().message);
      o.peers.push_back(v);
    } else if (a == "--policy") {
      if (!val()) return usage_error("--policy needs a FILE");
      o.policy_file = v;
    } else if (a == "--audit") {
      if (!val()) return usage_error("--audit needs a FILE");
      o.audit_file = v;
    } else if (a == "--audit-durability") {
      if (!val() || (v != "fsync" && v != "batch" && v != "none"))
        return usage_error("--audit-durability needs fsync, batch or none");
      o.audit_durability = v == "fsync" ? ztee::Durability::kFsync
                           : v == "batch" ? ztee::Durability::kBatch
                                          : ztee::Durability::kNone;
    } else if (a == "--audit-key-file") {
      if (!val()) return usage_error("--audit-key-file needs a FILE");
      o.audit_key_file = v;
    } else if (a == "--approver-url") {
      if (!val() || (v.rfind("http://", 0) != 0 && v.rfind("https://", 0) != 0))
        return usage_error("--approver-url needs an http:// or https:// URL");
      o.approver_url = v;
    } else if (a == "--no-jail") {
      o.jail = false;
    } else {
      return usage_error("unknown option " + a);
    }
  }
  if (o.node.empty()) o.node = serve::default_node_name();
  // SIGINT/SIGTERM are taken with sigwait below; blocked before any thread starts.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::mutex log_mu;
  o.log = [&log_mu](std::string_view line) {
    std::lock_guard lk(log_mu);
    fmt::print(stderr, "ztee serve: {}\n", line);
  };
  auto server = serve::Server::start(o);
  if (!server) {
    fmt::print(stderr, "ztee: serve: {}\n", server.error().message);
    return kExitError;
  }
  std::string host = o.listen.substr(0, o.listen.rfind(':'));
  fmt::print("ztee serve: listening on http://{}:{} ({}; pool {}; node {}{})\n", host, (*server)->port(),
             (*server)->backend_description(), o.pool, o.node, o.policy_file.empty() ? "" : "; policy " + o.policy_file);
  std::fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  fmt::print(stderr, "ztee serve: {} received, killing every sandbox\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  (*server)->shutdown();
  fmt::print(stderr, "ztee serve: stopped\n");
  return 0;
}

}  // namespace ztee::cli
