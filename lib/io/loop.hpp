// The runtime's event loop: one thread, one io_uring. Owns timers, socket
// I/O and pidfd polling for every sandbox of a Runtime.
//
// post() may be called from any thread. Every other method must be called on
// the loop thread (from a posted function or an I/O callback). Callbacks run
// on the loop thread and must not block.
#pragma once

#include <ztee/result.hpp>

#include <liburing.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "io/fd.hpp"

namespace ztee::detail {

class Loop {
 public:
  using IoCallback = std::function<void(int res)>;  // res: bytes, or -errno

  static Result<std::unique_ptr<Loop>> create(unsigned entries = 256);
  ~Loop();  // stops the thread, runs what was posted, drops pending I/O callbacks
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // Runs fn on the loop thread soon. Thread-safe.
  void post(std::function<void()> fn);
  bool in_loop_thread() const { return std::this_thread::get_id() == thread_id_; }

  // One-shot operations; the callback runs exactly once (unless the loop is
  // destroyed first). Buffers must stay valid until the callback runs.
  void recv(int fd, void* buf, size_t len, IoCallback cb);
  void send(int fd, const void* buf, size_t len, IoCallback cb);  // MSG_NOSIGNAL
  void poll(int fd, unsigned events, IoCallback cb);
  // Cancels every pending operation on fd; their callbacks get -ECANCELED.
  void cancel_fd(int fd);

  // Timers: cb runs once after `ms` unless cancelled first.
  uint64_t add_timer(uint64_t ms, std::function<void()> cb);
  void cancel_timer(uint64_t id);

 private:
  struct Op;
  Loop() = default;
  io_uring_sqe* get_sqe();
  Op* new_op(IoCallback cb);
  void arm_wakeup();
  void run();

  io_uring ring_{};
  bool ring_ok_ = false;
  UniqueFd wake_fd_;
  uint64_t wake_buf_ = 0;
  std::thread thread_;
  std::thread::id thread_id_;
  std::atomic<bool> stop_{false};

  std::mutex mu_;
  std::deque<std::function<void()>> posted_;

  std::unordered_set<Op*> live_;
  std::unordered_map<uint64_t, Op*> timers_;
  uint64_t next_timer_ = 1;
};

}  // namespace ztee::detail
