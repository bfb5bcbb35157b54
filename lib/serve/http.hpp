// HTTP/1.1 server for `ztee serve`: sockets on a detail::Loop (io_uring),
// requests parsed by Debian's http-parser. Loop thread only, except where a
// method says otherwise.
//
// What it enforces for every connection: a cap on open connections (503
// beyond it), a deadline for a request's headers (408) and for an idle
// keep-alive connection (closed), a body size limit (413, then the
// connection is closed), header and URL size limits (431, 414), and a cap on
// bytes queued for a client that does not read (the connection is closed).
// One request per connection is handled at a time; pipelined requests wait.
#pragma once

#include <ztee/result.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "io/fd.hpp"
#include "io/loop.hpp"

namespace ztee::serve {

struct HttpLimits {
  size_t max_connections = 1024;
  size_t max_body = 64u << 20;          // bytes of one request body
  size_t max_header_bytes = 32u << 10;  // request line + headers
  uint32_t header_timeout_ms = 10000;   // first byte of a request to the end of its headers
  uint32_t body_idle_ms = 30000;        // longest pause while a body arrives
  uint32_t idle_timeout_ms = 60000;     // keep-alive connection with no request
  size_t max_queued_out = 8u << 20;     // unsent response bytes before the client counts as gone
};

// One parsed request. Header names are lower-cased.
struct HttpRequest {
  std::string method;
  std::string target;  // as sent: path and query
  std::string path;    // target before '?', percent-decoded
  std::string query;   // after '?', raw
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool keep_alive = true;
  std::string peer;  // "addr:port"

  // The first header with this (lower-case) name, or nullptr.
  const std::string* header(std::string_view lower_name) const;
  // A query parameter, percent-decoded ('+' is a space); nullopt-like empty
  // with *found = false when absent.
  std::string query_param(std::string_view name, bool* found = nullptr) const;
};

class Connection;

// The response side of one request. Loop thread only. Exactly one of
// respond() or start_stream() ... end_stream() should be used; if the
// exchange is dropped without either, the client gets a 500.
class HttpExchange {
 public:
  explicit HttpExchange(std::shared_ptr<Connection> c) : conn_(std::move(c)) {}
  ~HttpExchange();
  HttpExchange(const HttpExchange&) = delete;
  HttpExchange& operator=(const HttpExchange&) = delete;

  // A complete response with Content-Length.
  void respond(int status, std::string_view content_type, std::string body,
               const std::vector<std::pair<std::string, std::string>>& extra = {});
  // Starts a chunked response.
  void start_stream(int status, std::string_view content_type,
                    const std::vector<std::pair<std::string, std::string>>& extra = {});
  // Sends one chunk; false when the client is gone (the caller should stop).
  bool write_chunk(std::string_view data);
  void end_stream();
  // True once the client disconnected or was dropped.
  bool gone() const;
  // Runs once if the connection closes before the response is complete.
  void on_gone(std::function<void()> fn);
  // Runs once when the exchange ends: with the status at respond() or
  // end_stream(), or 499 when the client went away first.
  void on_finish(std::function<void(int status)> fn) { on_finish_ = std::move(fn); }

 private:
  friend class Connection;
  std::shared_ptr<Connection> conn_;
  void finish(int status);
  std::function<void()> on_gone_;
  std::function<void(int)> on_finish_;
  int status_ = 0;
  bool started_ = false;
  bool done_ = false;
};

using HttpHandler = std::function<void(HttpRequest&, std::shared_ptr<HttpExchange>)>;

class HttpServer {
 public:
  // Listens on "ADDR:PORT" (IPv4 or [IPv6]; port 0 picks one) and serves on
  // `loop`. Call from any thread; the handler runs on the loop thread.
  static Result<std::unique_ptr<HttpServer>> start(detail::Loop& loop, const std::string& listen,
                                                   HttpLimits limits, HttpHandler handler);
  ~HttpServer();  // stop() must have run on the loop thread first
  // Stops accepting and closes every connection. Loop thread.
  void stop();
  uint16_t port() const { return port_; }
  size_t connections() const;

  struct State;

 private:
  HttpServer() = default;
  void arm_accept();
  std::shared_ptr<State> st_;
  uint16_t port_ = 0;
};

// Checks an "ADDR:PORT" for HttpServer::start without listening.
Result<void> check_listen_address(const std::string& listen);

// Reason phrase of an HTTP status ("Not Found").
const char* http_reason(int status);
// Percent-decodes s ('+' as space only when plus_space).
std::string percent_decode(std::string_view s, bool plus_space);

}  // namespace ztee::serve
