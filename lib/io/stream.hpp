// A connected socket driven by the Loop: a receive loop delivering chunks to
// a callback, and an ordered send queue. Loop thread only.
#pragma once

#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "io/fd.hpp"
#include "io/loop.hpp"

namespace ztee::detail {

class Stream : public std::enable_shared_from_this<Stream> {
 public:
  using OnData = std::function<void(std::string_view)>;
  using OnClose = std::function<void(int err)>;  // 0: peer closed; else errno

  static std::shared_ptr<Stream> make(Loop& loop, UniqueFd fd, size_t chunk = 64 * 1024) {
    return std::shared_ptr<Stream>(new Stream(loop, std::move(fd), chunk));
  }

  // Starts receiving. on_close runs once, after which no callback runs.
  void start(OnData on_data, OnClose on_close);
  // Queues bytes to send, in order.
  void send(std::string data);
  // Stops both directions now; pending operations are cancelled; no callback
  // runs afterwards. The fd is closed when the last operation has completed.
  void close();
  bool closed() const { return closed_; }
  size_t queued() const { return queued_; }  // bytes given to send() and not yet sent
  int fd() const { return fd_.get(); }

 private:
  Stream(Loop& loop, UniqueFd fd, size_t chunk) : loop_(loop), fd_(std::move(fd)), buf_(chunk, '\0') {}
  void arm_recv();
  void arm_send();
  void finish(int err);

  Loop& loop_;
  UniqueFd fd_;
  std::string buf_;
  OnData on_data_;
  OnClose on_close_;
  std::deque<std::string> out_;
  size_t out_off_ = 0;
  size_t queued_ = 0;
  bool sending_ = false;
  bool closed_ = false;
  bool in_callback_ = false;
};

}  // namespace ztee::detail
