#include "io/loop.hpp"

#include <fmt/format.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <future>

namespace ztee::detail {

struct Loop::Op {
  IoCallback cb;
  __kernel_timespec ts{};
  uint64_t timer_id = 0;
};

Result<std::unique_ptr<Loop>> Loop::create(unsigned entries) {
  std::unique_ptr<Loop> loop(new Loop());
  int rc = io_uring_queue_init(entries, &loop->ring_, 0);
  if (rc < 0) {
    return make_error(Errc::kIo,
                      fmt::format("io_uring_queue_init failed: {} (io_uring must be enabled: "
                                  "check sysctl kernel.io_uring_disabled)",
                                  std::strerror(-rc)),
                      -rc);
  }
  loop->ring_ok_ = true;
  int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) {
    int e = errno;
    return make_error(Errc::kIo, fmt::format("eventfd: {}", std::strerror(e)), e);
  }
  loop->wake_fd_.reset(efd);
  loop->arm_wakeup();
  Loop* raw = loop.get();
  std::promise<void> started;
  auto fut = started.get_future();
  loop->thread_ = std::thread([raw, &started] {
    raw->thread_id_ = std::this_thread::get_id();
    started.set_value();
    raw->run();
  });
  fut.wait();
  return loop;
}

Loop::~Loop() {
  if (thread_.joinable()) {
    stop_.store(true);
    uint64_t one = 1;
    (void)!::write(wake_fd_.get(), &one, sizeof one);
    thread_.join();
  }
  // Posted work still runs (teardown is often posted); with the thread gone,
  // this thread is the loop thread now.
  thread_id_ = std::this_thread::get_id();
  stop_.store(false);
  for (;;) {
    std::deque<std::function<void()>> batch;
    {
      std::lock_guard lk(mu_);
      batch.swap(posted_);
    }
    if (batch.empty()) break;
    for (auto& fn : batch) fn();
  }
  if (ring_ok_) io_uring_queue_exit(&ring_);  // cancels what is still in flight
  for (Op* op : live_) delete op;
}

void Loop::post(std::function<void()> fn) {
  {
    std::lock_guard lk(mu_);
    posted_.push_back(std::move(fn));
  }
  uint64_t one = 1;
  (void)!::write(wake_fd_.get(), &one, sizeof one);
}

io_uring_sqe* Loop::get_sqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  while (!sqe) {
    io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
  }
  return sqe;
}

Loop::Op* Loop::new_op(IoCallback cb) {
  Op* op = new Op{std::move(cb)};
  live_.insert(op);
  return op;
}

void Loop::arm_wakeup() {
  io_uring_sqe* sqe = get_sqe();
  io_uring_prep_read(sqe, wake_fd_.get(), &wake_buf_, sizeof wake_buf_, 0);
  io_uring_sqe_set_data(sqe, nullptr);  // nullptr marks the wake-up read
}

void Loop::recv(int fd, void* buf, size_t len, IoCallback cb) {
  io_uring_sqe* sqe = get_sqe();
  io_uring_prep_recv(sqe, fd, buf, len, 0);
  io_uring_sqe_set_data(sqe, new_op(std::move(cb)));
}

void Loop::send(int fd, const void* buf, size_t len, IoCallback cb) {
  io_uring_sqe* sqe = get_sqe();
  io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL);
  io_uring_sqe_set_data(sqe, new_op(std::move(cb)));
}

void Loop::poll(int fd, unsigned events, IoCallback cb) {
  io_uring_sqe* sqe = get_sqe();
  io_uring_prep_poll_add(sqe, fd, events);
  io_uring_sqe_set_data(sqe, new_op(std::move(cb)));
}

void Loop::cancel_fd(int fd) {
  io_uring_sqe* sqe = get_sqe();
  io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data64(sqe, 1);  // completion of the cancel itself is ignored
}

uint64_t Loop::add_timer(uint64_t ms, std::function<void()> cb) {
  uint64_t id = next_timer_++;
  Op* op = new_op([cb = std::move(cb)](int res) {
    if (res == -ETIME) cb();
  });
  op->timer_id = id;
  op->ts.tv_sec = static_cast<long long>(ms / 1000);
  op->ts.tv_nsec = static_cast<long long>((ms % 1000) * 1000000);
  timers_[id] = op;
  io_uring_sqe* sqe = get_sqe();
  io_uring_prep_timeout(sqe, &op->ts, 0, 0);
  io_uring_sqe_set_data(sqe, op);
  return id;
}

void Loop::cancel_timer(uint64_t id) {
  auto it = timers_.find(id);
  if (it == timers_.end()) return;
  Op* op = it->second;
  timers_.erase(it);
  op->cb = nullptr;  // releases what the callback captured now
  io_uring_sqe* sqe = get_sqe();
  io_uring_prep_timeout_remove(sqe, reinterpret_cast<__u64>(op), 0);
  io_uring_sqe_set_data64(sqe, 1);
}

void Loop::run() {
  std::deque<std::function<void()>> batch;
  while (!stop_.load(std::memory_order_relaxed)) {
    io_uring_submit_and_wait(&ring_, 1);
    io_uring_cqe* cqe;
    unsigned head;
    unsigned seen = 0;
    // Collect first, then run: callbacks may queue new submissions.
    struct Done {
      Op* op;
      int res;
    };
    Done done[64];
    unsigned n = 0;
    bool woke = false;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++seen;
      uint64_t ud = io_uring_cqe_get_data64(cqe);
      if (ud == 0) {
        woke = true;
      } else if (ud != 1) {
        done[n++] = Done{reinterpret_cast<Op*>(ud), cqe->res};
      }
      if (n == 64) break;
    }
    io_uring_cq_advance(&ring_, seen);
    for (unsigned i = 0; i < n; ++i) {
      Op* op = done[i].op;
      live_.erase(op);
      if (op->timer_id) timers_.erase(op->timer_id);
      IoCallback cb = std::move(op->cb);
      delete op;
      if (cb) cb(done[i].res);
    }
    if (woke) {
      arm_wakeup();
      {
        std::lock_guard lk(mu_);
        batch.swap(posted_);
      }
      for (auto& fn : batch) {
        if (stop_.load(std::memory_order_relaxed)) break;
        fn();
      }
      batch.clear();
    }
  }
}

}  // namespace ztee::detail
