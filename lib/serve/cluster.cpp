#include "serve/cluster.hpp"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <set>

namespace ztee::serve {

namespace {

bool node_char(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; }
bool hex_char(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

constexpr size_t kMaxListBody = 16u << 20;  // one peer's list answer

struct Transfer {
  std::string address;  // "ip:port", for messages
  std::string body;
  bool too_big = false;
  char error[CURL_ERROR_SIZE] = {};
};

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  if (t->body.size() + n * size > kMaxListBody) {
    t->too_big = true;
    return 0;  // ends the transfer with CURLE_WRITE_ERROR
  }
  t->body.append(data, n * size);
  return n * size;
}

struct EasyFree {
  void operator()(CURL* h) const { curl_easy_cleanup(h); }
};
struct SlistFree {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
struct MultiFree {
  void operator()(CURLM* m) const { curl_multi_cleanup(m); }
};

// Every address HOST resolves to, as "ip:port" ("[ip]:port" for IPv6).
Result<std::vector<std::string>> resolve(const PeerUrl& p) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(p.host.c_str(), nullptr, &hints, &res);
  if (rc != 0) return make_error(Errc::kNotFound, fmt::format("cannot resolve {}: {}", p.host, ::gai_strerror(rc)));
  std::set<std::string> seen;
  std::vector<std::string> out;
  for (addrinfo* a = res; a; a = a->ai_next) {
    char ip[INET6_ADDRSTRLEN] = {};
    std::string s;
    if (a->ai_family == AF_INET) {
      ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr, ip, sizeof ip);
      s = fmt::format("{}:{}", ip, p.port);
    } else if (a->ai_family == AF_INET6) {
      ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr, ip, sizeof ip);
      s = fmt::format("[{}]:{}", ip, p.port);
    } else {
      continue;
    }
    if (seen.insert(s).second) out.push_back(s);
  }
  ::freeaddrinfo(res);
  return out;
}

}  // namespace

Result<void> check_node_name(std::string_view n) {
  auto bad = [&](std::string why) {
    return make_error(Errc::kInvalidArgument,
                      fmt::format("node name '{}' {}: a node name is 1..{} lower-case letters, digits and '-', starting "
                                  "and ending with a letter or digit (it becomes part of sandbox ids and host names)",
                                  n.substr(0, 80), why, kMaxNodeName));
  };
  if (n.empty()) return bad("is empty");
  if (n.size() > kMaxNodeName) return bad(fmt::format("is {} characters long", n.size()));
  if (!std::all_of(n.begin(), n.end(), node_char)) return bad("has a character other than a-z, 0-9 and '-'");
  if (n.front() == '-' || n.back() == '-') return bad("starts or ends with '-'");
  return {};
}

std::string default_node_name() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  std::string out;
  for (const char* c = host; *c && *c != '.'; ++c) {
    char l = (*c >= 'A' && *c <= 'Z') ? static_cast<char>(*c - 'A' + 'a') : *c;
    out += node_char(l) ? l : '-';
  }
  auto trim = [&] {
    while (!out.empty() && out.front() == '-') out.erase(out.begin());
    while (!out.empty() && out.back() == '-') out.pop_back();
  };
  trim();
  if (out.size() > kMaxNodeName) out.resize(kMaxNodeName);
  trim();
  return out.empty() ? "node" : out;
}

std::string cluster_sandbox_id(std::string_view local_id, std::string_view node) {
  return fmt::format("{}-{}", local_id, node);
}

std::optional<std::string> node_of_sandbox_id(std::string_view id) {
  if (id.substr(0, 3) != "sb-") return std::nullopt;
  std::string_view rest = id.substr(3);
  size_t dash = rest.find('-');
  if (dash == 0 || dash == std::string_view::npos) return std::nullopt;
  if (!std::all_of(rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(dash), hex_char)) return std::nullopt;
  std::string_view node = rest.substr(dash + 1);
  if (!check_node_name(node)) return std::nullopt;
  return std::string(node);
}

Result<PeerUrl> parse_peer_url(std::string_view url) {
  auto bad = [&](std::string_view why) {
    return make_error(Errc::kInvalidArgument,
                      fmt::format("--peer {}: {} (expected http://HOST:PORT, e.g. http://10.0.0.12:3000)", url, why));
  };
  if (url.substr(0, 7) != "http://") return bad("only http:// peers are supported");
  std::string_view rest = url.substr(7);
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.find('/') != std::string_view::npos) return bad("a peer URL has no path");
  size_t colon = rest.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return bad("HOST:PORT is missing");
  std::string_view host = rest.substr(0, colon), port = rest.substr(colon + 1);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return bad("an IPv6 address is written [ADDR]");
    host = host.substr(1, host.size() - 2);
  }
  if (host.find_first_of("@?#[] ") != std::string_view::npos) return bad("the host has a character a host name cannot have");
  unsigned long p = 0;
  if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      (p = std::stoul(std::string(port))) == 0 || p > 65535)
    return bad("the port must be 1..65535");
  return PeerUrl{std::string(host), static_cast<uint16_t>(p)};
}

Result<std::vector<ListedSandbox>> parse_sandbox_list(std::string_view body) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (auto e = parser.parse(body.data(), body.size()).get(doc); e != simdjson::SUCCESS)
    return make_error(Errc::kInvalidArgument, fmt::format("not JSON: {}", simdjson::error_message(e)));
  simdjson::dom::array arr;
  if (doc.get(arr) != simdjson::SUCCESS) return make_error(Errc::kInvalidArgument, "not a JSON array");
  std::vector<ListedSandbox> out;
  for (simdjson::dom::element el : arr) {
    simdjson::dom::object o;
    std::string_view id, started;
    if (el.get(o) != simdjson::SUCCESS || o["sandboxID"].get(id) != simdjson::SUCCESS ||
        o["startedAt"].get(started) != simdjson::SUCCESS)
      return make_error(Errc::kInvalidArgument, "an element is not a sandbox (an object with sandboxID and startedAt)");
    out.push_back(ListedSandbox{std::string(id), std::string(started), simdjson::minify(el)});
  }
  return out;
}

PeerListing list_from_peers(const std::vector<PeerUrl>& peers, std::string_view target, std::string_view api_key,
                            uint32_t timeout_ms) {
  static std::once_flag curl_init;
  std::call_once(curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  PeerListing out;
  std::vector<std::string> addresses;
  for (auto& p : peers) {
    auto a = resolve(p);
    if (!a) out.unreachable.push_back(fmt::format("{}:{} ({})", p.host, p.port, a.error().message));
    else addresses.insert(addresses.end(), a->begin(), a->end());
  }
  curl_slist* raw = nullptr;
  for (std::string h : {fmt::format("X-API-Key: {}", api_key), std::string("X-Ztee-No-Fanout: 1"),
                        std::string("Accept: application/json")}) {
    curl_slist* l = curl_slist_append(raw, h.c_str());
    if (!l) {
      curl_slist_free_all(raw);
      out.unreachable.push_back("(out of memory)");
      return out;
    }
    raw = l;
  }
  std::unique_ptr<curl_slist, SlistFree> headers(raw);
  std::unique_ptr<CURLM, MultiFree> multi(curl_multi_init());
  std::vector<std::unique_ptr<Transfer>> transfers;
  std::vector<std::unique_ptr<CURL, EasyFree>> easies;
  for (auto& addr : addresses) {
    auto t = std::make_unique<Transfer>();
    t->address = addr;
    std::unique_ptr<CURL, EasyFree> h(curl_easy_init());
    if (!multi || !h) {
      out.unreachable.push_back(fmt::format("{} (cannot set up an HTTP request)", addr));
      continue;
    }
    std::string url = fmt::format("http://{}{}", addr, target);
    curl_easy_setopt(h.get(), CURLOPT_URL, url.c_str());
    curl_easy_setopt(h.get(), CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(h.get(), CURLOPT_PROXY, "");  // never through an http_proxy from the environment
    curl_easy_setopt(h.get(), CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h.get(), CURLOPT_TIMEOUT_MS, static_cast<long>(timeout_ms));
    curl_easy_setopt(h.get(), CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(std::min<uint32_t>(timeout_ms, 2000)));
    curl_easy_setopt(h.get(), CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h.get(), CURLOPT_WRITEDATA, t.get());
    curl_easy_setopt(h.get(), CURLOPT_ERRORBUFFER, t->error);
    curl_easy_setopt(h.get(), CURLOPT_PRIVATE, t.get());
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h.get(), CURLOPT_PROTOCOLS_STR, "http");
#endif
    if (curl_multi_add_handle(multi.get(), h.get()) != CURLM_OK) {
      out.unreachable.push_back(fmt::format("{} (cannot start an HTTP request)", addr));
      continue;
    }
    transfers.push_back(std::move(t));
    easies.push_back(std::move(h));
  }
  int running = static_cast<int>(easies.size());
  while (running > 0) {
    if (curl_multi_perform(multi.get(), &running) != CURLM_OK) break;
    if (running > 0 && curl_multi_poll(multi.get(), nullptr, 0, 200, nullptr) != CURLM_OK) break;
  }
  int left = 0;
  std::set<Transfer*> done;
  while (CURLMsg* msg = curl_multi_info_read(multi.get(), &left)) {
    if (msg->msg != CURLMSG_DONE) continue;
    Transfer* t = nullptr;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &t);
    if (!t) continue;
    done.insert(t);
    if (msg->data.result != CURLE_OK) {
      std::string why = t->too_big ? fmt::format("its answer is over {} bytes", kMaxListBody)
                        : t->error[0]  ? std::string(t->error)
                                       : curl_easy_strerror(msg->data.result);
      out.unreachable.push_back(fmt::format("{} ({})", t->address, why));
      continue;
    }
    long status = 0;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
    if (status == 401) {
      out.unreachable.push_back(fmt::format(
          "{} (answered 401: the API key is not in its key file; every node needs the same key file)", t->address));
      continue;
    }
    if (status != 200) {
      out.unreachable.push_back(fmt::format("{} (answered HTTP {})", t->address, status));
      continue;
    }
    auto list = parse_sandbox_list(t->body);
    if (!list) {
      out.unreachable.push_back(fmt::format("{} (its answer is not a sandbox list: {})", t->address, list.error().message));
      continue;
    }
    for (auto& s : *list) out.sandboxes.push_back(std::move(s));
  }
  for (auto& t : transfers)
    if (!done.count(t.get())) out.unreachable.push_back(fmt::format("{} (no answer)", t->address));
  for (auto& h : easies) curl_multi_remove_handle(multi.get(), h.get());
  return out;
}

}  // namespace ztee::serve
