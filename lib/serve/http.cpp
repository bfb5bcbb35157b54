// The socket I/O runs on a detail::Loop of its own (one io_uring, one
// thread), not on the Runtime's: the Runtime keeps its loop private
// (RuntimeImpl), and the public API offers no way to reach it. The server
// uses the same Loop class, so the I/O path is the runtime's, only on a
// second ring.
#include "serve/http.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <unordered_set>

namespace ztee::serve {

using detail::Loop;
using detail::UniqueFd;

const char* http_reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 507: return "Insufficient Storage";
    default: return "Status";
  }
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s, bool plus_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%' && i + 2 < s.size() && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
      out += static_cast<char>(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
      i += 2;
    } else if (c == '+' && plus_space) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

const std::string* HttpRequest::header(std::string_view lower_name) const {
  for (auto& [k, v] : headers)
    if (k == lower_name) return &v;
  return nullptr;
}

std::string HttpRequest::query_param(std::string_view name, bool* found) const {
  std::string_view q = query;
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view part = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
    size_t eq = part.find('=');
    std::string key = percent_decode(part.substr(0, eq), true);
    if (key != name) continue;
    if (found) *found = true;
    return eq == std::string_view::npos ? std::string{} : percent_decode(part.substr(eq + 1), true);
  }
  if (found) *found = false;
  return {};
}

struct HttpServer::State {
  Loop* loop = nullptr;
  UniqueFd listen_fd;
  HttpLimits limits;
  HttpHandler handler;
  std::unordered_set<std::shared_ptr<Connection>> conns;
  bool stopped = false;
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  static constexpr size_t kMaxPipelined = 64 * 1024;

  Connection(std::shared_ptr<HttpServer::State> st, UniqueFd fd, std::string peer)
      : st_(std::move(st)), fd_(std::move(fd)), peer_(std::move(peer)) {
    http_parser_init(&parser_, HTTP_REQUEST);
    parser_.data = this;
    http_parser_settings_init(&settings_);
    settings_.on_message_begin = [](http_parser* p) { return self(p)->on_begin(); };
    settings_.on_url = [](http_parser* p, const char* at, size_t n) { return self(p)->on_url(at, n); };
    settings_.on_header_field = [](http_parser* p, const char* at, size_t n) { return self(p)->on_field(at, n); };
    settings_.on_header_value = [](http_parser* p, const char* at, size_t n) { return self(p)->on_value(at, n); };
    settings_.on_headers_complete = [](http_parser* p) { return self(p)->on_headers_complete(); };
    settings_.on_body = [](http_parser* p, const char* at, size_t n) { return self(p)->on_body(at, n); };
    settings_.on_message_complete = [](http_parser* p) { return self(p)->on_complete(); };
  }

  void start() {
    arm_deadline(st_->limits.idle_timeout_ms, Deadline::kIdle);
    arm_recv();
  }

  // Stops everything now; the fd closes when the last pending op completes.
  void close() {
    if (closed_) return;
    closed_ = true;
    cancel_deadline();
    st_->loop->cancel_fd(fd_.get());
    auto ex = std::move(exchange_);
    if (auto e = ex.lock()) {
      if (!e->done_ && e->on_gone_) {
        auto fn = std::move(e->on_gone_);
        fn();
      }
      if (!e->done_) e->finish(499);
    }
    st_->conns.erase(shared_from_this());
  }
  bool closed() const { return closed_; }

  void send(std::string data) {
    if (closed_ || data.empty()) return;
    queued_ += data.size();
    out_.push_back(std::move(data));
    if (queued_ > st_->limits.max_queued_out) {
      close();  // the client does not read
      return;
    }
    arm_send();
  }

  // The current response is complete: next request, or close.
  void finish_response(bool keep_alive) {
    exchange_.reset();
    if (!keep_alive || !req_.keep_alive) {
      close_after_send_ = true;
      maybe_close_after_send();
      return;
    }
    // The handler may have answered from inside http_parser_execute: go on
    // with the next request from the loop, not from within the parser.
    auto self = shared_from_this();
    st_->loop->post([self] { self->next_request(); });
  }

  void next_request() {
    if (closed_) return;
    handling_ = false;
    req_bytes_ = 0;
    arm_deadline(st_->limits.idle_timeout_ms, Deadline::kIdle);
    if (parser_.http_errno == HPE_PAUSED) http_parser_pause(&parser_, 0);
    if (!pending_.empty()) {
      std::string data = std::move(pending_);
      pending_.clear();
      feed(data.data(), data.size());
    }
    if (!closed_ && pending_.size() < kMaxPipelined) arm_recv();
  }

  // An error response before (or instead of) the handler, then close.
  void fail(int status, std::string_view message) {
    if (closed_ || handling_) return;
    handling_ = true;
    std::string body = fmt::format("{{\"code\":{},\"message\":\"{}\"}}", status, message);
    send(fmt::format("HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                     status, http_reason(status), body.size(), body));
    close_after_send_ = true;
    maybe_close_after_send();
  }

  const HttpRequest& request() const { return req_; }

 private:
  enum class Deadline { kNone, kIdle, kHeaders, kBody };
  static Connection* self(http_parser* p) { return static_cast<Connection*>(p->data); }

  void arm_deadline(uint32_t ms, Deadline kind) {
    cancel_deadline();
    deadline_kind_ = kind;
    std::weak_ptr<Connection> w = weak_from_this();
    timer_ = st_->loop->add_timer(ms, [w] {
      if (auto c = w.lock()) c->on_deadline();
    });
  }
  void cancel_deadline() {
    if (timer_) st_->loop->cancel_timer(timer_);
    timer_ = 0;
    deadline_kind_ = Deadline::kNone;
  }
  void on_deadline() {
    timer_ = 0;
    Deadline k = deadline_kind_;
    deadline_kind_ = Deadline::kNone;
    if (k == Deadline::kIdle) {
      close();
    } else if (k == Deadline::kHeaders || k == Deadline::kBody) {
      fail(408, k == Deadline::kHeaders ? "request headers not received in time" : "request body stalled");
    }
  }

  void arm_recv() {
    if (closed_ || recv_pending_) return;
    recv_pending_ = true;
    auto self = shared_from_this();
    st_->loop->recv(fd_.get(), buf_, sizeof buf_, [self](int res) {
      self->recv_pending_ = false;
      if (self->closed_) return;
      if (res <= 0) {
        self->close();  // peer closed or error
        return;
      }
      self->on_data(self->buf_, static_cast<size_t>(res));
      // While a request is handled, pipelined bytes wait; past kMaxPipelined
      // the socket is not read until the response is out (TCP pushes back).
      if (self->pending_.size() < kMaxPipelined) self->arm_recv();
    });
  }

  void on_data(const char* data, size_t n) {
    if (handling_ || parser_.http_errno == HPE_PAUSED) {
      pending_.append(data, n);  // the next request(s), parsed after this response
      return;
    }
    feed(data, n);
  }

  void feed(const char* data, size_t n) {
    size_t used = http_parser_execute(&parser_, &settings_, data, n);
    if (closed_) return;
    auto err = static_cast<http_errno>(parser_.http_errno);
    if (err == HPE_PAUSED) {
      if (used < n) pending_.append(data + used, n - used);
      return;
    }
    if (err != HPE_OK) {
      if (status_on_error_) {
        fail(status_on_error_, status_message_);
      } else {
        fail(400, fmt::format("malformed HTTP request: {}", http_errno_description(err)));
      }
    }
  }

  int on_begin() {
    req_ = HttpRequest{};
    req_.peer = peer_;
    url_.clear();
    field_.clear();
    in_value_ = false;
    req_bytes_ = 0;
    arm_deadline(st_->limits.header_timeout_ms, Deadline::kHeaders);
    return 0;
  }
  bool count(size_t n) {
    req_bytes_ += n;
    if (req_bytes_ > st_->limits.max_header_bytes) {
      status_on_error_ = 431;
      status_message_ = "request headers too large";
      return false;
    }
    return true;
  }
  int on_url(const char* at, size_t n) {
    if (!count(n)) return 1;
    url_.append(at, n);
    return 0;
  }
  int on_field(const char* at, size_t n) {
    if (!count(n)) return 1;
    if (in_value_) {
      in_value_ = false;
      field_.clear();
    }
    field_.append(at, n);
    return 0;
  }
  int on_value(const char* at, size_t n) {
    if (!count(n)) return 1;
    if (!in_value_) {
      in_value_ = true;
      std::string name = field_;
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      req_.headers.emplace_back(std::move(name), std::string{});
    }
    req_.headers.back().second.append(at, n);
    return 0;
  }
  int on_headers_complete() {
    req_.method = http_method_str(static_cast<http_method>(parser_.method));
    req_.target = url_;
    size_t q = url_.find('?');
    req_.path = percent_decode(std::string_view(url_).substr(0, q), false);
    if (q != std::string::npos) req_.query = url_.substr(q + 1);
    if ((parser_.flags & F_CONTENTLENGTH) && parser_.content_length > st_->limits.max_body) {
      status_on_error_ = 413;
      status_message_ = fmt::format("request body of {} bytes is over the limit of {} bytes", parser_.content_length,
                                    st_->limits.max_body);
      return -1;  // http-parser: error
    }
    // A client that asks first (curl does, for bodies over 1 KiB) may send it.
    for (auto& [k, v] : req_.headers)
      if (k == "expect" && (v == "100-continue" || v == "100-Continue")) send("HTTP/1.1 100 Continue\r\n\r\n");
    arm_deadline(st_->limits.body_idle_ms, Deadline::kBody);
    return 0;
  }
  int on_body(const char* at, size_t n) {
    if (req_.body.size() + n > st_->limits.max_body) {
      status_on_error_ = 413;
      status_message_ = fmt::format("request body is over the limit of {} bytes", st_->limits.max_body);
      return 1;
    }
    req_.body.append(at, n);
    arm_deadline(st_->limits.body_idle_ms, Deadline::kBody);
    return 0;
  }
  int on_complete() {
    cancel_deadline();
    req_.keep_alive = http_should_keep_alive(&parser_) != 0;
    handling_ = true;
    http_parser_pause(&parser_, 1);
    auto ex = std::make_shared<HttpExchange>(shared_from_this());
    exchange_ = ex;
    st_->handler(req_, ex);
    return 0;
  }

  void arm_send() {
    if (closed_ || sending_ || out_.empty()) return;
    sending_ = true;
    auto self = shared_from_this();
    const std::string& front = out_.front();
    st_->loop->send(fd_.get(), front.data() + out_off_, front.size() - out_off_, [self](int res) {
      self->sending_ = false;
      if (self->closed_) return;
      if (res <= 0) {
        self->close();
        return;
      }
      self->out_off_ += static_cast<size_t>(res);
      self->queued_ -= static_cast<size_t>(res);
      if (self->out_off_ == self->out_.front().size()) {
        self->out_.pop_front();
        self->out_off_ = 0;
      }
      self->arm_send();
      self->maybe_close_after_send();
    });
  }
  void maybe_close_after_send() {
    if (close_after_send_ && out_.empty() && !sending_) {
      ::shutdown(fd_.get(), SHUT_WR);
      close();
    }
  }

  friend class HttpExchange;
  std::shared_ptr<HttpServer::State> st_;
  UniqueFd fd_;
  std::string peer_;
  http_parser parser_{};
  http_parser_settings settings_{};
  char buf_[16384];
  bool recv_pending_ = false;
  bool sending_ = false;
  bool closed_ = false;
  bool handling_ = false;
  bool close_after_send_ = false;
  std::deque<std::string> out_;
  size_t out_off_ = 0;
  size_t queued_ = 0;
  std::string pending_;
  HttpRequest req_;
  std::string url_, field_;
  bool in_value_ = false;
  size_t req_bytes_ = 0;
  int status_on_error_ = 0;
  std::string status_message_;
  uint64_t timer_ = 0;
  Deadline deadline_kind_ = Deadline::kNone;
  std::weak_ptr<HttpExchange> exchange_;
};

static std::string head(int status, std::string_view content_type, bool keep_alive,
                        const std::vector<std::pair<std::string, std::string>>& extra) {
  std::string h = fmt::format("HTTP/1.1 {} {}\r\n", status, http_reason(status));
  if (!content_type.empty()) h += fmt::format("Content-Type: {}\r\n", content_type);
  for (auto& [k, v] : extra) h += fmt::format("{}: {}\r\n", k, v);
  h += keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
  return h;
}

HttpExchange::~HttpExchange() {
  if (!done_ && conn_ && !conn_->closed()) {
    if (!started_) {
      respond(500, "application/json", R"J({"code":500,"message":"the server dropped this request (a bug in ztee serve)"})J");
    } else {
      conn_->close();
    }
  }
}

void HttpExchange::respond(int status, std::string_view content_type, std::string body,
                           const std::vector<std::pair<std::string, std::string>>& extra) {
  if (done_ || started_) return;
  done_ = true;
  finish(conn_->closed() ? 499 : status);
  if (conn_->closed()) return;
  bool ka = conn_->request().keep_alive;
  std::string msg = head(status, content_type, ka, extra);
  msg += fmt::format("Content-Length: {}\r\n\r\n", body.size());
  if (conn_->request().method != "HEAD") msg += body;
  conn_->send(std::move(msg));
  conn_->finish_response(ka);
}

void HttpExchange::start_stream(int status, std::string_view content_type,
                                const std::vector<std::pair<std::string, std::string>>& extra) {
  if (done_ || started_) return;
  started_ = true;
  status_ = status;
  if (conn_->closed()) return;
  std::string msg = head(status, content_type, conn_->request().keep_alive, extra);
  msg += "Transfer-Encoding: chunked\r\n\r\n";
  conn_->send(std::move(msg));
}

bool HttpExchange::write_chunk(std::string_view data) {
  if (!started_ || done_ || conn_->closed()) return false;
  if (data.empty()) return true;
  std::string msg = fmt::format("{:x}\r\n", data.size());
  msg.append(data);
  msg += "\r\n";
  conn_->send(std::move(msg));
  return !conn_->closed();
}

void HttpExchange::end_stream() {
  if (!started_ || done_) return;
  done_ = true;
  finish(conn_->closed() ? 499 : status_);
  if (conn_->closed()) return;
  conn_->send("0\r\n\r\n");
  conn_->finish_response(conn_->request().keep_alive);
}

bool HttpExchange::gone() const { return conn_->closed(); }

void HttpExchange::on_gone(std::function<void()> fn) { on_gone_ = std::move(fn); }

void HttpExchange::finish(int status) {
  if (auto fn = std::move(on_finish_)) {
    on_finish_ = nullptr;
    fn(status);
  }
}

static Result<std::pair<sockaddr_storage, socklen_t>> parse_listen(const std::string& listen) {
  sockaddr_storage ss{};
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon + 1 == listen.size())
    return make_error(Errc::kInvalidArgument, fmt::format("--listen {}: expected ADDR:PORT, e.g. 127.0.0.1:3000", listen));
  std::string host = listen.substr(0, colon);
  std::string port_s = listen.substr(colon + 1);
  char* end = nullptr;
  long port = std::strtol(port_s.c_str(), &end, 10);
  if (*end || port < 0 || port > 65535)
    return make_error(Errc::kInvalidArgument, fmt::format("--listen {}: bad port {}", listen, port_s));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &a->sin6_addr) != 1)
      return make_error(Errc::kInvalidArgument, fmt::format("--listen {}: bad IPv6 address", listen));
    return std::pair{ss, socklen_t(sizeof(sockaddr_in6))};
  }
  auto* a = reinterpret_cast<sockaddr_in*>(&ss);
  a->sin_family = AF_INET;
  a->sin_port = htons(static_cast<uint16_t>(port));
  if (host.empty()) host = "0.0.0.0";
  if (host == "localhost") host = "127.0.0.1";
  if (inet_pton(AF_INET, host.c_str(), &a->sin_addr) != 1)
    return make_error(Errc::kInvalidArgument, fmt::format("--listen {}: bad IPv4 address {} (use an address, not a name)", listen, host));
  return std::pair{ss, socklen_t(sizeof(sockaddr_in))};
}

Result<void> check_listen_address(const std::string& listen) {
  auto a = parse_listen(listen);
  if (!a) return std::move(a).error();
  return {};
}

static std::string peer_name(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
    return fmt::format("{}:{}", buf, ntohs(a->sin_port));
  }
  auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
  inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
  return fmt::format("[{}]:{}", buf, ntohs(a->sin6_port));
}

Result<std::unique_ptr<HttpServer>> HttpServer::start(Loop& loop, const std::string& listen, HttpLimits limits,
                                                      HttpHandler handler) {
  auto addr = parse_listen(listen);
  if (!addr) return std::move(addr).error();
  UniqueFd fd(::socket(addr->first.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return make_error(Errc::kIo, fmt::format("socket: {}", std::strerror(errno)), errno);
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr->first), addr->second) != 0)
    return make_error(Errc::kIo, fmt::format("cannot listen on {}: bind: {}", listen, std::strerror(errno)), errno);
  if (::listen(fd.get(), 512) != 0)
    return make_error(Errc::kIo, fmt::format("cannot listen on {}: {}", listen, std::strerror(errno)), errno);
  sockaddr_storage bound{};
  socklen_t bl = sizeof bound;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &bl);
  std::unique_ptr<HttpServer> s(new HttpServer());
  s->port_ = ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                                                : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  s->st_ = std::make_shared<State>();
  s->st_->loop = &loop;
  s->st_->listen_fd = std::move(fd);
  s->st_->limits = limits;
  s->st_->handler = std::move(handler);
  HttpServer* raw = s.get();
  loop.post([raw] { raw->arm_accept(); });
  return s;
}

HttpServer::~HttpServer() = default;

void HttpServer::arm_accept() {
  auto st = st_;
  if (st->stopped) return;
  st->loop->poll(st->listen_fd.get(), POLLIN, [this, st](int res) {
    if (st->stopped) return;
    if (res < 0 && res != -EINTR) {
      // Transient (e.g. -ECANCELED is only seen after stop()); try again.
    }
    for (;;) {
      sockaddr_storage ss{};
      socklen_t sl = sizeof ss;
      int c = ::accept4(st->listen_fd.get(), reinterpret_cast<sockaddr*>(&ss), &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (c < 0) break;
      UniqueFd cfd(c);
      int one = 1;
      ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (st->conns.size() >= st->limits.max_connections) {
        static const std::string kBusy = [] {
          std::string body = R"({"code":503,"message":"too many connections: try again shortly"})";
          return fmt::format("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                             "Connection: close\r\nContent-Length: {}\r\n\r\n{}", body.size(), body);
        }();
        ssize_t w = ::send(c, kBusy.data(), kBusy.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
        continue;  // closed by cfd
      }
      auto conn = std::make_shared<Connection>(st, std::move(cfd), peer_name(ss));
      st->conns.insert(conn);
      conn->start();
    }
    arm_accept();
  });
}

void HttpServer::stop() {
  st_->stopped = true;
  st_->loop->cancel_fd(st_->listen_fd.get());
  auto conns = st_->conns;
  for (auto& c : conns) c->close();
  st_->conns.clear();
}

size_t HttpServer::connections() const { return st_->conns.size(); }

}  // namespace ztee::serve
