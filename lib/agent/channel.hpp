// Host side of the agent protocol: frames in and out of one sandbox's agent
// socket, demultiplexed by stream id. Loop thread only.
//
// SECURITY: every byte read here comes from the guest. The decoder bounds
// every length before buffering; frame types the guest may not send, and
// frames that fail to decode, end the channel through on_fatal.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "agent/protocol.hpp"
#include "io/stream.hpp"

namespace ztee::detail {

class AgentChannel {
 public:
  using Handler = std::function<void(const proto::FrameHeader&, std::string_view payload)>;
  using OnFatal = std::function<void(std::string reason)>;

  AgentChannel(std::shared_ptr<Stream> stream, OnFatal on_fatal);
  ~AgentChannel();
  void start();

  // Registers a handler for a new stream and returns its id.
  uint32_t open_stream(Handler h);
  void close_stream(uint32_t id);
  void send(proto::MsgType type, uint32_t stream, std::string_view payload, uint16_t flags = 0);
  // Sends bytes as kData-sized chunks of `type`; the last carries `last_flags`.
  void send_data(proto::MsgType type, uint32_t stream, std::string_view data, uint16_t last_flags);
  void close();
  size_t open_streams() const { return handlers_.size(); }
  // Bytes sent and not yet taken by the guest's side of the socket.
  size_t queued() const { return stream_ ? stream_->queued() : 0; }

  // Feeds bytes as if received (tests and the fuzz target use this).
  void receive(std::string_view bytes);

 private:
  void fatal(std::string reason);

  std::shared_ptr<Stream> stream_;
  OnFatal on_fatal_;
  proto::FrameDecoder decoder_;
  std::unordered_map<uint32_t, std::shared_ptr<Handler>> handlers_;
  uint32_t next_stream_ = 1;
  bool dead_ = false;
};

// Which frame types a guest may send to the host.
bool guest_may_send(proto::MsgType t);

}  // namespace ztee::detail
