// Private: PoolImpl, the warm pool behind the public Pool handle.
//
// Threads: lease(), stats() and close() run on any thread; refills, start
// completions and the back-off timer run on the runtime's loop thread. All
// counters, the ready deque and the waiter list live under mu_; the loop
// thread never blocks on anything but mu_ (held only for bookkeeping).
#pragma once

#include <ztee/ztee.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "io/fd.hpp"
#include "image/image.hpp"

namespace ztee::detail {

class RuntimeImpl;
class SandboxImpl;

// A pool's own template <dir>/<name> is owned while "<dir>/.<name>.owner" is flock'ed.
inline std::string owner_lock_path(const std::string& template_dir) {
  auto slash = template_dir.rfind('/');
  return template_dir.substr(0, slash + 1) + "." + template_dir.substr(slash + 1) + ".owner";
}

// The exec each new sandbox of a pool runs before it counts as ready
// (PoolOptions::warm_up, or `true`), and the message when it failed.
ExecOptions warm_up_exec(const PoolOptions& o);
std::string warm_up_failure(const PoolOptions& o, const Result<ExecResult>& r);

class PoolImpl : public std::enable_shared_from_this<PoolImpl> {
 public:
  // `sandbox` carries the template_dir every refill restores from (empty:
  // cold boots); `image` is what RuntimeImpl::prepare returned for it.
  // `owned_template`, when set, is removed once the pool is closed and no
  // start is in flight.
  PoolImpl(std::shared_ptr<RuntimeImpl> rt, PoolOptions opts, SandboxOptions sandbox, Image image,
           std::string owned_template);
  ~PoolImpl();
  PoolImpl(const PoolImpl&) = delete;
  PoolImpl& operator=(const PoolImpl&) = delete;

  // flock'ed owner_lock_path(owned template) while the pool lives (collect_garbage
  // removes templates whose lock nobody holds); set once, before start().
  UniqueFd owner_lock;

  // ---- any thread ----
  Result<Sandbox> lease(uint32_t deadline_ms);
  PoolStats stats() const;
  // Idempotent. Off the loop thread it waits (at most boot_timeout_ms plus
  // 10 s) until no start is in flight and every sandbox the pool still held
  // is destroyed; on the loop thread it only starts that and returns.
  void close();
  // Asks the loop for a refill; coalesces repeated requests.
  void schedule_refill();
  // Starts filling and the periodic health check of ready sandboxes.
  void start();

 private:
  struct Waiter {
    std::condition_variable cv;
    std::shared_ptr<SandboxImpl> sandbox;  // set by the loop on hand-off
    bool closed = false;
  };

  // ---- loop thread ----
  void refill();
  void on_started(Result<std::shared_ptr<SandboxImpl>> r);
  void start_backoff(uint64_t delay_ms);
  void start_health_check();
  // Once closed with no start in flight: drops the runtime's pre-spawned
  // VMMs for the owned template and removes it (posted to the loop).
  void retire_if_idle();
  // Destroys a sandbox already counted in destroying_ (loop thread).
  void destroy_counted(std::shared_ptr<SandboxImpl> sb);

  Sandbox hand_out(std::shared_ptr<SandboxImpl> sb);  // any thread, mu_ not held
  void record_wait(uint64_t wait_us);                 // mu_ held
  std::string shortage_locked(uint32_t deadline_ms) const;  // mu_ held
  // Moves ready sandboxes whose VMM died into `dead`, counting them as failed.
  void prune_dead_locked(std::vector<std::shared_ptr<SandboxImpl>>& dead);  // mu_ held

  const std::shared_ptr<RuntimeImpl> rt_;
  const PoolOptions opts_;
  const SandboxOptions sandbox_opts_;
  const Image image_;
  const std::string owned_template_;

  mutable std::mutex mu_;
  std::deque<std::shared_ptr<SandboxImpl>> ready_;
  std::deque<Waiter*> waiters_;  // oldest first; each lives on its lease() caller's stack
  uint32_t starting_ = 0, leased_ = 0;
  uint32_t destroying_ = 0;          // discarded sandboxes whose destroy has not completed
  std::condition_variable idle_cv_;  // starting_ or destroying_ went down
  PoolStats counters_;  // created, failed, leases, timeouts, failures, last_error, hist
  bool closed_ = false;
  bool backing_off_ = false;
  bool retiring_ = false;
  bool template_removed_ = false;  // retire_if_idle finished (owned template or not)

  std::atomic<bool> refill_posted_{false};
  static constexpr uint64_t kRefillDelayMs = 2;  // see schedule_refill
  uint64_t backoff_timer_ = 0;  // loop thread only
};

}  // namespace ztee::detail
