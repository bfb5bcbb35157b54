#include "agent/channel.hpp"

#include <fmt/format.h>

#include <cstring>

namespace ztee::detail {

bool guest_may_send(proto::MsgType t) {
  using proto::MsgType;
  switch (t) {
    case MsgType::kHello:
    case MsgType::kStdout:
    case MsgType::kStderr:
    case MsgType::kExit:
    case MsgType::kData:
    case MsgType::kResult:
    case MsgType::kError:
    case MsgType::kStdinAck:
      return true;
    default:
      return false;
  }
}

AgentChannel::AgentChannel(std::shared_ptr<Stream> stream, OnFatal on_fatal)
    : stream_(std::move(stream)), on_fatal_(std::move(on_fatal)) {}

AgentChannel::~AgentChannel() { close(); }

void AgentChannel::start() {
  if (!stream_) return;
  stream_->start([this](std::string_view data) { receive(data); },
                 [this](int err) {
                   fatal(err == 0 ? "the guest agent closed its channel"
                                  : fmt::format("agent channel error: {}", std::strerror(err)));
                 });
}

void AgentChannel::receive(std::string_view bytes) {
  if (dead_) return;
  auto err = decoder_.feed(bytes.data(), bytes.size(),
                           [this](const proto::FrameHeader& h, std::string_view payload) {
                             if (dead_) return;
                             if (!guest_may_send(h.type)) {
                               fatal(fmt::format("protocol violation: guest sent message type {}",
                                                 static_cast<int>(h.type)));
                               return;
                             }
                             auto it = handlers_.find(h.stream);
                             if (it == handlers_.end()) return;  // late frame of a finished request
                             auto handler = it->second;  // may close its own stream
                             (*handler)(h, payload);
                           });
  if (err != proto::DecodeError::kNone && !dead_)
    fatal(fmt::format("protocol violation: malformed frame from guest ({})", proto::decode_error_name(err)));
}

uint32_t AgentChannel::open_stream(Handler h) {
  uint32_t id;
  do {
    id = next_stream_++;
    if (next_stream_ == 0) next_stream_ = 1;
  } while (id == 0 || handlers_.count(id));
  handlers_.emplace(id, std::make_shared<Handler>(std::move(h)));
  return id;
}

void AgentChannel::close_stream(uint32_t id) { handlers_.erase(id); }

void AgentChannel::send(proto::MsgType type, uint32_t stream, std::string_view payload, uint16_t flags) {
  if (dead_ || !stream_) return;
  std::string frame;
  frame.reserve(proto::kHeaderSize + payload.size());
  proto::append_frame(frame, type, stream, payload, flags);
  stream_->send(std::move(frame));
}

void AgentChannel::send_data(proto::MsgType type, uint32_t stream, std::string_view data, uint16_t last_flags) {
  if (dead_ || !stream_) return;
  std::string out;
  size_t off = 0;
  do {
    size_t n = std::min<size_t>(proto::kDataChunk, data.size() - off);
    bool last = off + n == data.size();
    proto::append_frame(out, type, stream, data.substr(off, n), last ? last_flags : 0);
    off += n;
  } while (off < data.size());
  stream_->send(std::move(out));
}

void AgentChannel::fatal(std::string reason) {
  if (dead_) return;
  dead_ = true;
  if (stream_) stream_->close();
  handlers_.clear();
  OnFatal cb = std::move(on_fatal_);
  if (cb) cb(std::move(reason));
}

void AgentChannel::close() {
  dead_ = true;
  on_fatal_ = nullptr;
  handlers_.clear();
  if (stream_) stream_->close();
}

}  // namespace ztee::detail
