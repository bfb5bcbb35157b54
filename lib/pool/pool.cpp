#include "pool/pool.hpp"

#include "proc/owner.hpp"

#include <fmt/format.h>
#include <sys/random.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>

#include "runtime/impl.hpp"

namespace ztee {

namespace detail {

namespace {

constexpr uint64_t kBackoffBaseMs = 100;
constexpr uint64_t kBackoffMaxMs = 30000;
constexpr uint64_t kHealthCheckMs = 1000;  // how often ready sandboxes are checked for a dead VMM
constexpr uint64_t kCloseGraceMs = 10000;   // close() waits at most boot_timeout_ms plus this

using Clock = std::chrono::steady_clock;

uint64_t backoff_delay_ms(uint32_t consecutive_failures) {
  uint32_t shift = std::min<uint32_t>(consecutive_failures > 0 ? consecutive_failures - 1 : 0, 20);
  return std::min(kBackoffMaxMs, kBackoffBaseMs << shift);
}

int hist_bucket(uint64_t wait_us) {
  uint64_t limit = 10;
  for (int i = 0; i < 7; ++i, limit *= 10)
    if (wait_us < limit) return i;
  return 7;
}

}  // namespace

ExecOptions warm_up_exec(const PoolOptions& o) {
  ExecOptions e;
  if (o.warm_up.empty())
    e.argv = {"true"};
  else
    e.shell = o.warm_up;
  e.timeout_ms = o.sandbox.boot_timeout_ms;
  e.output_cap = 64u << 10;
  return e;
}

std::string warm_up_failure(const PoolOptions& o, const Result<ExecResult>& r) {
  std::string what = o.warm_up.empty() ? "warm-up exec of `true`" : fmt::format("warm-up `{}`", o.warm_up);
  if (!r) return fmt::format("{} failed: {}", what, r.error().message);
  std::string how = r->timed_out ? fmt::format("timed out after {} ms (sandbox.boot_timeout_ms)", o.sandbox.boot_timeout_ms)
                    : r->signal  ? fmt::format("was killed by signal {}", r->signal)
                                 : fmt::format("exited {}", r->exit_code);
  std::string err = r->stderr_data.size() > 200 ? "..." + r->stderr_data.substr(r->stderr_data.size() - 200)
                                                 : r->stderr_data;
  while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
  return err.empty() ? fmt::format("{} {}", what, how) : fmt::format("{} {} (stderr: {})", what, how, err);
}

PoolImpl::PoolImpl(std::shared_ptr<RuntimeImpl> rt, PoolOptions opts, SandboxOptions sandbox, Image image,
                   std::string owned_template)
    : rt_(std::move(rt)),
      opts_(std::move(opts)),
      sandbox_opts_(std::move(sandbox)),
      image_(std::move(image)),
      owned_template_(std::move(owned_template)) {}

PoolImpl::~PoolImpl() {
  // Every start in flight holds a reference: none is restoring from the
  // template any more.
  if (!owned_template_.empty() && !template_removed_) {
    std::error_code ec;
    std::filesystem::remove_all(owned_template_, ec);
  }
  if (!owned_template_.empty()) ::unlink(owner_lock_path(owned_template_).c_str());
}

// ------------------------------------------------------------ any thread --

Sandbox PoolImpl::hand_out(std::shared_ptr<SandboxImpl> sb) {
  // Ready sandboxes wait at background CPU weight; the holder's gets the
  // default. Posted: the loop runs it before any request the holder sends.
  rt_->loop->post([sb] { sb->set_foreground(); });
  std::weak_ptr<PoolImpl> weak = weak_from_this();
  sb->set_on_gone([weak] {
    auto self = weak.lock();
    if (!self) return;
    {
      std::lock_guard lk(self->mu_);
      if (self->leased_ > 0) --self->leased_;
    }
    self->schedule_refill();
  });
  return Sandbox(std::move(sb));
}

void PoolImpl::record_wait(uint64_t wait_us) { ++counters_.lease_wait_hist[hist_bucket(wait_us)]; }

std::string PoolImpl::shortage_locked(uint32_t deadline_ms) const {
  std::string msg = fmt::format(
      "no sandbox became ready within {} ms: the pool has {} ready, {} starting, {} leased (max_total {})",
      deadline_ms, ready_.size(), starting_, leased_, opts_.max_total);
  if (counters_.failed == 0) {
    msg += "; no start has failed";
  } else {
    msg += fmt::format("; {} starts failed ({} in a row{})", counters_.failed, counters_.consecutive_failures,
                       backing_off_ ? ", refills backing off" : "");
    if (!counters_.last_error.empty()) msg += fmt::format("; last error: {}", counters_.last_error);
  }
  if (starting_ + ready_.size() + leased_ >= opts_.max_total && leased_ > 0)
    msg += "; release a leased sandbox or raise max_total";
  return msg;
}

Result<Sandbox> PoolImpl::lease(uint32_t deadline_ms) {
  if (deadline_ms == 0) deadline_ms = opts_.lease_timeout_ms;
  const auto t0 = Clock::now();
  auto waited_us = [&t0] {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count());
  };
  // Ready sandboxes found dead are destroyed on every way out, after the lock.
  struct Reaper {
    PoolImpl* pool;
    std::vector<std::shared_ptr<SandboxImpl>> dead;
    ~Reaper() {
      if (dead.empty()) return;
      pool->rt_->loop->post([self = pool->shared_from_this(), dead = std::move(dead)] {
        for (auto& sb : dead) self->destroy_counted(sb);
      });
    }
  } reaper{this, {}};
  std::shared_ptr<SandboxImpl> got;
  {
    std::unique_lock lk(mu_);
    if (closed_) return make_error(Errc::kClosed, "the pool is closed");
    prune_dead_locked(reaper.dead);
    if (!ready_.empty()) {
      got = std::move(ready_.front());
      ready_.pop_front();
    }
    if (got) {
      ++leased_;
      ++counters_.leases;
      record_wait(waited_us());
    } else if (rt_->loop->in_loop_thread()) {
      // Refills run on this very thread: waiting here could only time out.
      return make_error(Errc::kInvalidArgument,
                        "lease from a callback on the event-loop thread found no ready sandbox and cannot wait: "
                        "callbacks must not block; lease from another thread");
    } else {
      Waiter w;
      waiters_.push_back(&w);
      lk.unlock();
      schedule_refill();  // a waiter raises the refill target
      lk.lock();
      w.cv.wait_until(lk, t0 + std::chrono::milliseconds(deadline_ms), [&w] { return w.sandbox || w.closed; });
      if (w.sandbox) {
        got = std::move(w.sandbox);  // counted as leased by the hand-off
        record_wait(waited_us());
      } else {
        auto it = std::find(waiters_.begin(), waiters_.end(), &w);
        if (it != waiters_.end()) waiters_.erase(it);
        if (w.closed) return make_error(Errc::kClosed, "the pool was closed while waiting for a sandbox");
        ++counters_.lease_timeouts;
        return make_error(Errc::kTimeout, shortage_locked(deadline_ms));
      }
    }
  }
  schedule_refill();
  return hand_out(std::move(got));
}

PoolStats PoolImpl::stats() const {
  std::lock_guard lk(mu_);
  PoolStats s = counters_;
  s.ready = static_cast<uint32_t>(ready_.size());
  s.starting = starting_;
  s.leased = leased_;
  s.backing_off = backing_off_;
  return s;
}

void PoolImpl::start() {
  rt_->loop->post([self = shared_from_this()] {
    self->refill();
    self->start_health_check();
  });
}

void PoolImpl::schedule_refill() {
  if (refill_posted_.exchange(true)) return;
  // Debounced by kRefillDelayMs on the loop: triggers in that window (a burst
  // of leases) make one pass, and a lease returns before the loop thread
  // starts the refill's spawns, which on a busy host would otherwise take
  // the lease thread's CPU for milliseconds. A refill itself takes 100+ ms.
  rt_->loop->post([weak = weak_from_this()] {
    auto self = weak.lock();
    if (!self) return;
    self->rt_->loop->add_timer(kRefillDelayMs, [weak] {
      if (auto self = weak.lock()) {
        self->refill_posted_.store(false);
        self->refill();
      }
    });
  });
}

void PoolImpl::close() {
  std::deque<std::shared_ptr<SandboxImpl>> ready;
  {
    std::lock_guard lk(mu_);
    if (closed_) return;
    closed_ = true;
    backing_off_ = false;
    ready.swap(ready_);
    destroying_ += static_cast<uint32_t>(ready.size());
    for (Waiter* w : waiters_) {
      w->closed = true;
      w->cv.notify_one();
    }
    waiters_.clear();
  }
  rt_->loop->post([self = shared_from_this(), ready = std::move(ready)] {
    if (self->backoff_timer_) {
      self->rt_->loop->cancel_timer(self->backoff_timer_);
      self->backoff_timer_ = 0;
    }
    for (auto& sb : ready) self->destroy_counted(sb);
  });
  retire_if_idle();
  // The last handle dropped inside a callback: nothing here may wait.
  if (rt_->loop->in_loop_thread()) return;
  // Leave nothing behind: wait for starts in flight and the destroys.
  {
    std::unique_lock lk(mu_);
    idle_cv_.wait_for(lk, std::chrono::milliseconds(uint64_t{sandbox_opts_.boot_timeout_ms} + kCloseGraceMs),
                      [this] { return starting_ == 0 && destroying_ == 0 && template_removed_; });
  }
}

void PoolImpl::destroy_counted(std::shared_ptr<SandboxImpl> sb) {
  sb->destroy([self = shared_from_this(), sb](Result<void>) {
    {
      std::lock_guard lk(self->mu_);
      --self->destroying_;
    }
    self->idle_cv_.notify_all();
  });
}

void PoolImpl::retire_if_idle() {
  {
    std::lock_guard lk(mu_);
    if (!closed_ || starting_ > 0 || retiring_) return;
    retiring_ = true;
  }
  // Posted: a start posts its pre-spawn replenish first, so this runs after it.
  rt_->loop->post([self = shared_from_this()] {
    if (!self->owned_template_.empty()) {
      // Pre-spawned VMMs waiting for this template would outlive it.
      if (auto q = self->rt_->take_prespawned(self->owned_template_); !q.empty()) {
        {
          std::lock_guard lk(self->mu_);
          self->destroying_ += static_cast<uint32_t>(q.size());
        }
        for (auto& sb : q) self->destroy_counted(sb);
      }
      std::error_code ec;
      std::filesystem::remove_all(self->owned_template_, ec);
    }
    {
      std::lock_guard lk(self->mu_);
      self->template_removed_ = true;
    }
    self->idle_cv_.notify_all();
  });
}

// ----------------------------------------------------------- loop thread --

void PoolImpl::refill() {
  uint32_t n = 0;
  std::vector<std::shared_ptr<SandboxImpl>> dead;
  {
    std::lock_guard lk(mu_);
    if (closed_) return;
    prune_dead_locked(dead);
    const size_t want = opts_.min_ready + waiters_.size();
    while (!backing_off_) {
      size_t have = ready_.size() + starting_;
      if (have >= want || have + leased_ >= opts_.max_total || starting_ >= opts_.refill_concurrency) break;
      ++starting_;
      ++n;
    }
  }
  for (auto& sb : dead) destroy_counted(std::move(sb));
  for (uint32_t i = 0; i < n; ++i) {
    rt_->start_sandbox(sandbox_opts_, image_, [self = shared_from_this()](Result<std::shared_ptr<SandboxImpl>> r) {
      if (!r) return self->on_started(std::move(r));
      // Warm-up: one exec before the sandbox counts as ready. A fresh VMM's
      // first exec is its slowest (under TCG it translates the guest's code
      // anew); the lease holder should not pay for it.
      auto sb = std::move(r).value();
      sb->exec(detail::warm_up_exec(self->opts_), [self, sb](Result<ExecResult> er) {
        if (er && er->exit_code == 0) return self->on_started(sb);
        std::string why = detail::warm_up_failure(self->opts_, er);
        sb->destroy([sb](Result<void>) {});
        self->on_started(make_error(Errc::kSandboxFailed, fmt::format("{} in {}", why, sb->id())));
      });
    }, /*background=*/true);
  }
}

void PoolImpl::on_started(Result<std::shared_ptr<SandboxImpl>> r) {
  std::shared_ptr<SandboxImpl> discard;
  uint64_t backoff_ms = 0;
  {
    std::lock_guard lk(mu_);
    --starting_;
    if (!r) {
      ++counters_.failed;
      ++counters_.consecutive_failures;
      counters_.last_error = r.error().message;
      if (!closed_) {
        backing_off_ = true;
        backoff_ms = backoff_delay_ms(counters_.consecutive_failures);
      }
    } else {
      ++counters_.created;
      counters_.consecutive_failures = 0;
      auto sb = std::move(r).value();
      if (closed_) {
        ++destroying_;
        discard = std::move(sb);
      } else if (!waiters_.empty()) {
        Waiter* w = waiters_.front();
        waiters_.pop_front();
        w->sandbox = std::move(sb);
        ++leased_;
        ++counters_.leases;
        w->cv.notify_one();
      } else {
        ready_.push_back(std::move(sb));
      }
    }
  }
  idle_cv_.notify_all();  // close() waits for starting_ to reach 0
  if (discard) destroy_counted(std::move(discard));
  if (backoff_ms) {
    start_backoff(backoff_ms);
  } else {
    refill();
  }
  retire_if_idle();
}

void PoolImpl::prune_dead_locked(std::vector<std::shared_ptr<SandboxImpl>>& dead) {
  for (auto it = ready_.begin(); it != ready_.end();) {
    if ((*it)->state() == SandboxState::kReady) {
      ++it;
      continue;
    }
    // Its VMM died while it waited in the pool: never hand it out.
    ++counters_.failed;
    counters_.last_error = fmt::format("ready sandbox {} died in the pool: {}", (*it)->id(), (*it)->failure());
    ++destroying_;
    dead.push_back(std::move(*it));
    it = ready_.erase(it);
  }
}

void PoolImpl::start_health_check() {
  rt_->loop->add_timer(kHealthCheckMs, [weak = weak_from_this()] {
    auto self = weak.lock();
    if (!self) return;
    {
      std::lock_guard lk(self->mu_);
      if (self->closed_) return;
    }
    self->refill();  // prunes dead ready sandboxes, then tops up
    self->start_health_check();
  });
}

void PoolImpl::start_backoff(uint64_t delay_ms) {
  if (backoff_timer_) rt_->loop->cancel_timer(backoff_timer_);
  backoff_timer_ = rt_->loop->add_timer(delay_ms, [weak = weak_from_this()] {
    auto self = weak.lock();
    if (!self) return;
    self->backoff_timer_ = 0;
    {
      std::lock_guard lk(self->mu_);
      self->backing_off_ = false;
    }
    self->refill();
  });
}

}  // namespace detail

// ------------------------------------------------------------ public API --

namespace {

std::string random_name() {
  unsigned char b[8];
  if (::getrandom(b, sizeof b, 0) != static_cast<ssize_t>(sizeof b)) std::memset(b, 0, sizeof b);
  std::string s = "pool-";
  for (unsigned char c : b) s += fmt::format("{:02x}", c);
  return s;
}

// The public handle's deleter: the last Pool handle closes the pool. In-flight
// starts and timers hold the PoolImpl itself, not the handle.
struct CloseOnRelease {
  std::shared_ptr<detail::PoolImpl> core;
  void operator()(detail::PoolImpl*) {
    auto c = std::move(core);
    c->close();
  }
};

Error pool_empty() { return make_error(Errc::kInvalidArgument, "Pool handle is empty (create it with Runtime::create_pool)"); }

}  // namespace

Result<Sandbox> Pool::lease(uint32_t deadline_ms) {
  if (!impl_) return pool_empty();
  return impl_->lease(deadline_ms);
}

PoolStats Pool::stats() const { return impl_ ? impl_->stats() : PoolStats{}; }

void Pool::close() {
  if (impl_) impl_->close();
}

Result<Pool> Runtime::create_pool(const PoolOptions& opts) {
  if (!impl_) return make_error(Errc::kInvalidArgument, "Runtime is empty (create it with Runtime::create)");
  if (impl_->loop->in_loop_thread())
    return make_error(Errc::kInvalidArgument,
                      "create_pool blocks: call it from a thread other than the runtime's event-loop thread");
  if (opts.max_total < 1) return make_error(Errc::kInvalidArgument, "max_total must be at least 1");
  if (!opts.sandbox.mounts.empty())
    return make_error(Errc::kInvalidArgument,
                      "a pool cannot mount host directories (its sandboxes are clones of one template): create "
                      "sandboxes with SandboxOptions::mounts instead");
  if (opts.min_ready > opts.max_total)
    return make_error(Errc::kInvalidArgument, fmt::format("min_ready {} exceeds max_total {}: use min_ready <= max_total",
                                                          opts.min_ready, opts.max_total));
  if (opts.refill_concurrency < 1) return make_error(Errc::kInvalidArgument, "refill_concurrency must be at least 1");
  if (opts.lease_timeout_ms == 0) return make_error(Errc::kInvalidArgument, "lease_timeout_ms must be positive");

  std::string tpl = opts.template_dir;
  if (!opts.sandbox.template_dir.empty()) {
    if (!tpl.empty() && tpl != opts.sandbox.template_dir)
      return make_error(Errc::kInvalidArgument,
                        fmt::format("template_dir \"{}\" and sandbox.template_dir \"{}\" differ: set one of them", tpl,
                                    opts.sandbox.template_dir));
    tpl = opts.sandbox.template_dir;
  }
  if (!opts.from_snapshot && !tpl.empty())
    return make_error(Errc::kInvalidArgument,
                      fmt::format("template_dir \"{}\" given with from_snapshot=false: a cold-boot pool uses no template",
                                  tpl));

  std::string owned;
  detail::UniqueFd owner_lock;
  // Until the pool owns it, a failed create removes the lock file again.
  struct LockFileGuard {
    std::string* owned;
    bool keep = false;
    ~LockFileGuard() {
      if (!keep && !owned->empty()) ::unlink(detail::owner_lock_path(*owned).c_str());
    }
  } lock_guard_file{&owned};
  if (opts.from_snapshot && tpl.empty()) {
    // Boot one sandbox and turn it into the pool's own template.
    std::string parent = impl_->opts.state_dir + "/templates";
    if (::mkdir(parent.c_str(), 0700) != 0 && errno != EEXIST) {
      int e = errno;
      return make_error(Errc::kIo, fmt::format("cannot create {}: {}", parent, std::strerror(e)), e);
    }
    owned = parent + "/" + random_name();
    auto lock = detail::hold_owner_lock(detail::owner_lock_path(owned), "");
    if (!lock) return std::move(lock).error();
    owner_lock = std::move(*lock);
    SandboxOptions so = opts.sandbox;
    so.template_dir.clear();
    so.snapshottable = true;
    auto sb = create_sandbox(so);
    if (!sb) {
      Error e = std::move(sb).error();
      e.message = "booting the pool's template sandbox: " + e.message;
      return e;
    }
    if (!opts.warm_up.empty()) {
      auto w = sb->exec(detail::warm_up_exec(opts));
      if (!w || w->exit_code != 0) {
        (void)sb->destroy();  // `owned` is made only by the snapshot below
        return make_error(Errc::kSandboxFailed,
                          fmt::format("{} in the pool's template sandbox", detail::warm_up_failure(opts, w)));
      }
    }
    if (auto s = sb->snapshot(owned); !s) {
      (void)sb->destroy();
      std::error_code ec;
      std::filesystem::remove_all(owned, ec);
      Error e = std::move(s).error();
      e.message = fmt::format("snapshotting the pool's template into {}: {}", owned, e.message);
      return e;
    }
    tpl = owned;
  }

  SandboxOptions so = opts.sandbox;
  so.template_dir = opts.from_snapshot ? tpl : "";
  // Verify once here so the loop thread's starts hit the verified cache.
  auto image = impl_->prepare(so);
  if (!image) {
    if (!owned.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(owned, ec);
    }
    return std::move(image).error();
  }
  auto core = std::make_shared<detail::PoolImpl>(impl_, opts, std::move(so), std::move(image).value(), owned);
  core->owner_lock = std::move(owner_lock);
  lock_guard_file.keep = true;
  core->start();
  detail::PoolImpl* raw = core.get();
  return Pool(std::shared_ptr<detail::PoolImpl>(raw, CloseOnRelease{std::move(core)}));
}

}  // namespace ztee
