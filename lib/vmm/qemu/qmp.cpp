#include "vmm/qemu/qmp.hpp"

#include <fmt/format.h>

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "agent/json.hpp"

namespace ztee::detail {

QmpClient::QmpClient(std::shared_ptr<Stream> stream, OnEvent on_event, OnFatal on_fatal)
    : stream_(std::move(stream)), on_event_(std::move(on_event)), on_fatal_(std::move(on_fatal)) {}

QmpClient::~QmpClient() { close(); }

void QmpClient::start() {
  stream_->start([this](std::string_view d) { receive(d); },
                 [this](int err) {
                   fatal(err == 0 ? "QMP connection closed" : fmt::format("QMP: {}", std::strerror(err)));
                 });
}

void QmpClient::receive(std::string_view bytes) {
  while (!bytes.empty() && !dead_) {
    size_t nl = bytes.find('\n');
    if (nl == std::string_view::npos) {
      if (line_.size() + bytes.size() > kMaxLine) return fatal("QMP line over 1 MiB");
      line_.append(bytes);
      return;
    }
    if (line_.size() + nl > kMaxLine) return fatal("QMP line over 1 MiB");
    line_.append(bytes.substr(0, nl));
    bytes.remove_prefix(nl + 1);
    std::string line = std::move(line_);
    line_.clear();
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) handle_line(line);
  }
}

void QmpClient::handle_line(std::string_view line) {
  simdjson::dom::element doc;
  if (parser_.parse(line.data(), line.size()).get(doc)) return fatal("QMP sent invalid JSON");
  simdjson::dom::object obj;
  if (doc.get_object().get(obj)) return fatal("QMP sent a non-object");
  if (!greeted_) {
    if (obj["QMP"].error()) return fatal("QMP greeting missing");
    greeted_ = true;
    send_now("qmp_capabilities", "", 0);
    return;
  }
  std::string_view event;
  if (!obj["event"].get_string().get(event)) {
    if (on_event_) on_event_(event);
    return;
  }
  uint64_t id;
  if (obj["id"].get_uint64().get(id)) return;  // untagged reply: ignore
  if (id == 0) {
    if (obj["error"].error() == simdjson::NO_SUCH_FIELD) {
      ready_ = true;
      while (!queued_.empty()) {
        auto q = std::move(queued_.front());
        queued_.pop_front();
        send_now(q.cmd, q.args, q.id);
      }
    } else {
      fatal("QMP capabilities negotiation failed");
    }
    return;
  }
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  Reply reply = std::move(it->second);
  pending_.erase(it);
  simdjson::dom::object err;
  if (!obj["error"].get_object().get(err)) {
    std::string_view desc = "unknown error";
    if (err["desc"].get_string().get(desc)) desc = "unknown error";
    reply(make_error(Errc::kSandboxFailed, fmt::format("QMP error: {}", desc)));
    return;
  }
  simdjson::dom::element ret;
  std::string out = obj["return"].get(ret) ? std::string("{}") : simdjson::minify(ret);
  reply(std::move(out));
}

void QmpClient::command(std::string cmd, std::string args_json, Reply reply) {
  if (dead_) {
    reply(make_error(Errc::kSandboxFailed, "QMP connection is closed"));
    return;
  }
  uint64_t id = next_id_++;
  pending_[id] = std::move(reply);
  if (!ready_) {
    queued_.push_back({std::move(cmd), std::move(args_json), id});
    return;
  }
  send_now(cmd, args_json, id);
}

void QmpClient::command_with_fd(std::string cmd, std::string args_json, int fd, Reply reply) {
  if (dead_) return reply(make_error(Errc::kSandboxFailed, "QMP connection is closed"));
  if (!ready_ || !pending_.empty() || !queued_.empty() || !stream_)
    return reply(make_error(Errc::kInternal, fmt::format("QMP: {} with an fd needs an idle, negotiated connection", cmd)));
  uint64_t id = next_id_++;
  std::string msg = "{\"execute\":" + json_quote(cmd);
  if (!args_json.empty()) msg += ",\"arguments\":" + args_json;
  msg += fmt::format(",\"id\":{}}}\n", id);
  // Straight onto the socket: nothing else is queued on it (checked above).
  iovec iov{msg.data(), msg.size()};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = ctl;
  mh.msg_controllen = sizeof ctl;
  cmsghdr* cm = CMSG_FIRSTHDR(&mh);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cm), &fd, sizeof fd);
  ssize_t n;
  do {
    n = ::sendmsg(stream_->fd(), &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(msg.size())) {
    int e = n < 0 ? errno : EAGAIN;
    reply(make_error(Errc::kIo, fmt::format("QMP: cannot send {} with an fd: {}", cmd, std::strerror(e)), e));
    if (n > 0) fatal("QMP: a command was cut short");
    return;
  }
  pending_[id] = std::move(reply);
}

void QmpClient::send_now(const std::string& cmd, const std::string& args, uint64_t id) {
  std::string msg = "{\"execute\":" + json_quote(cmd);
  if (!args.empty()) msg += ",\"arguments\":" + args;
  msg += fmt::format(",\"id\":{}}}\n", id);
  if (stream_) stream_->send(std::move(msg));
}

void QmpClient::fatal(std::string reason) {
  if (dead_) return;
  dead_ = true;
  if (stream_) stream_->close();
  auto pending = std::move(pending_);
  pending_.clear();
  queued_.clear();
  for (auto& [id, r] : pending) r(make_error(Errc::kSandboxFailed, reason));
  OnFatal cb = std::move(on_fatal_);
  if (cb) cb(std::move(reason));
}

void QmpClient::close() {
  if (dead_) return;
  on_fatal_ = nullptr;
  fatal("QMP closed");
}

}  // namespace ztee::detail
