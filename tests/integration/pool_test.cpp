// Warm pools against real microVMs: leasing, exhaustion, failures and
// back-off, destroy-on-release, clone isolation, cold-boot pools.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "common.hpp"
#include "jail/jail.hpp"
#include "../why.hpp"

using ztee::Errc;
using namespace std::chrono_literals;

namespace {

// One template shared by the pools below (a cold boot under TCG costs seconds).
const std::string& shared_template() {
  static std::string dir = [] {
    std::string d = test::state_dir() + "/pool-test-template";
    ztee::SandboxOptions o;
    o.snapshottable = true;
    auto sb = test::runtime().create_sandbox(o);
    if (!sb) FAIL("create_sandbox (snapshottable): " << sb.error().message);
    auto s = sb->snapshot(d);
    if (!s) FAIL("snapshot: " << s.error().message);
    return d;
  }();
  return dir;
}

ztee::Pool make_pool(ztee::PoolOptions o) {
  auto p = test::runtime().create_pool(o);
  if (!p) FAIL("create_pool: " << p.error().message);
  return std::move(p).value();
}

// Polls `pred` until it holds or `timeout` passes.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 20000ms) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

uint64_t hist_total(const ztee::PoolStats& s) {
  uint64_t n = 0;
  for (uint64_t c : s.lease_wait_hist) n += c;
  return n;
}

std::set<std::string> sandbox_dirs() {
  std::set<std::string> out;
  if (DIR* d = ::opendir(test::state_dir().c_str())) {
    while (dirent* e = ::readdir(d))
      if (std::string(e->d_name).rfind("sb-", 0) == 0) out.insert(e->d_name);
    ::closedir(d);
  }
  return out;
}

std::string join(const std::set<std::string>& v) {
  std::string out;
  for (auto& x : v) out += x + " ";
  return out;
}

bool has(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

std::map<std::string, std::pair<int64_t, int64_t>> file_times(const std::string& dir) {
  std::map<std::string, std::pair<int64_t, int64_t>> out;
  for (const char* f : {"state", "mem", "template.json"}) {
    struct stat st{};
    if (::stat((dir + "/" + f).c_str(), &st) == 0)
      out[f] = {static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
                static_cast<int64_t>(st.st_size)};
  }
  return out;
}

}  // namespace

TEST_CASE("pool: options are validated with clear messages") {
  ztee::PoolOptions o;
  o.from_snapshot = false;
  o.min_ready = 3;
  o.max_total = 2;
  auto r = test::runtime().create_pool(o);
  REQUIRE(!r.ok());
  CHECK(r.error().code == Errc::kInvalidArgument);
  CHECK(has(r.error().message, "min_ready 3 exceeds max_total 2"));

  o.min_ready = 0;
  o.max_total = 0;
  r = test::runtime().create_pool(o);
  REQUIRE(!r.ok());
  CHECK(has(r.error().message, "max_total"));

  o.max_total = 1;
  o.refill_concurrency = 0;
  r = test::runtime().create_pool(o);
  REQUIRE(!r.ok());
  CHECK(has(r.error().message, "refill_concurrency"));

  o.refill_concurrency = 1;
  o.template_dir = "/nonexistent";
  r = test::runtime().create_pool(o);
  REQUIRE(!r.ok());
  CHECK(has(r.error().message, "from_snapshot=false"));

  // A template that does not exist is refused up front, not in the refill loop.
  o.from_snapshot = true;
  r = test::runtime().create_pool(o);
  REQUIRE(!r.ok());
  CHECK(has(r.error().message, "/nonexistent"));

  ztee::Pool empty;
  CHECK(empty.lease(1).error().code == Errc::kInvalidArgument);
}

TEST_CASE("pool: many threads lease at once and no sandbox is handed out twice") {
  int before = test::count_entries(test::state_dir() + "/templates");
  ztee::PoolOptions o;  // from_snapshot with no template: the pool makes its own
  o.min_ready = 2;
  o.max_total = 8;
  o.refill_concurrency = 2;
  auto pool = make_pool(o);
  CHECK(test::count_entries(test::state_dir() + "/templates") == before + 1);

  constexpr int kThreads = 8;
  std::vector<std::future<ztee::Result<ztee::Sandbox>>> futs;
  for (int i = 0; i < kThreads; ++i)
    futs.push_back(std::async(std::launch::async, [&pool] { return pool.lease(60000); }));
  std::vector<ztee::Sandbox> got;
  for (auto& f : futs) {
    auto r = f.get();
    REQUIRE_MESSAGE(r.ok(), why(r));
    got.push_back(std::move(r).value());
  }
  std::set<std::string> ids;
  std::set<int> pids;
  for (auto& sb : got) {
    CHECK(sb.state() == ztee::SandboxState::kReady);
    ids.insert(sb.id());
    pids.insert(sb.vmm_pid());
  }
  CHECK(ids.size() == kThreads);
  CHECK(pids.size() == kThreads);
  auto s = pool.stats();
  CHECK(s.leased == kThreads);
  CHECK(s.leases == kThreads);
  CHECK(hist_total(s) == kThreads);
  CHECK(s.ready + s.starting + s.leased <= o.max_total);
  auto r = got[3].run("echo leased");
  REQUIRE_MESSAGE(r.ok(), why(r));
  CHECK(r->stdout_data == "leased\n");

  for (auto& sb : got) CHECK(sb.destroy().ok());
  CHECK(eventually([&] { return pool.stats().leased == 0; }));

  // The fast path: with sandboxes ready, a lease is a pop under a mutex and
  // does not wait for a sandbox to start. Its speed is ztee-bench-pool's (and
  // the MESSAGE of "a lease from a non-empty pool takes microseconds"); here
  // only that it came from the ready ones: the pool's own wait histogram puts
  // it under 100 ms, where no clone or boot finishes under TCG (≥ 200 ms).
  REQUIRE(eventually([&] { return pool.stats().ready >= 1; }));
  auto stats0 = pool.stats();
  auto fast = pool.lease(1000);
  REQUIRE(fast.ok());
  auto stats1 = pool.stats();
  uint64_t quick_before = 0, quick_after = 0;
  for (int b = 0; b <= 4; ++b) {
    quick_before += stats0.lease_wait_hist[b];
    quick_after += stats1.lease_wait_hist[b];
  }
  CHECK(quick_after == quick_before + 1);

  // Closing destroys the ready ones and removes the pool's own template.
  pool.close();
  CHECK(pool.stats().ready == 0);
  CHECK(pool.lease(10).error().code == Errc::kClosed);
  CHECK(fast->state() == ztee::SandboxState::kReady);  // leased ones stay with their holder
  CHECK(eventually([&] { return test::count_entries(test::state_dir() + "/templates") == before; }));
  CHECK(fast->destroy().ok());
}

TEST_CASE("pool: exhaustion times out naming the cause; close fails waiters") {
  ztee::PoolOptions o;
  o.template_dir = shared_template();
  o.min_ready = 1;
  o.max_total = 1;
  auto pool = make_pool(o);
  auto a = pool.lease(60000);
  REQUIRE_MESSAGE(a.ok(), why(a));

  auto t0 = std::chrono::steady_clock::now();
  auto b = pool.lease(300);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  REQUIRE(!b.ok());
  CHECK(b.error().code == Errc::kTimeout);
  CHECK(ms >= 290);
  CHECK(ms < 2000);
  INFO(b.error().message);
  CHECK(has(b.error().message, "300 ms"));
  CHECK(has(b.error().message, "1 leased (max_total 1)"));
  CHECK(has(b.error().message, "0 starting"));
  auto s = pool.stats();
  CHECK(s.lease_timeouts == 1);
  CHECK(s.leased == 1);
  CHECK(s.starting == 0);

  // From a callback on the loop thread an empty pool refuses to wait (it would block the loop).
  ztee::Result<ztee::Sandbox> inner = ztee::make_error(Errc::kInternal, "not called");
  ztee::ExecOptions eo;
  eo.shell = "echo x";
  eo.on_stdout = [&](std::string_view) { inner = pool.lease(5000); };
  REQUIRE(a->exec(eo).ok());
  REQUIRE(!inner.ok());
  CHECK(inner.error().code == Errc::kInvalidArgument);
  CHECK(has(inner.error().message, "cannot wait"));

  // A waiter is released with kClosed when the pool closes.
  auto waiter = std::async(std::launch::async, [&pool] { return pool.lease(20000); });
  std::this_thread::sleep_for(100ms);
  auto c0 = std::chrono::steady_clock::now();
  pool.close();
  auto w = waiter.get();
  REQUIRE(!w.ok());
  CHECK(w.error().code == Errc::kClosed);
  CHECK(std::chrono::steady_clock::now() - c0 < 5s);
  CHECK(a->destroy().ok());
  CHECK(::access((shared_template() + "/template.json").c_str(), F_OK) == 0);  // not the pool's to remove
}

TEST_CASE("pool: failing starts are counted and back off instead of spinning") {
  ztee::PoolOptions o;
  o.from_snapshot = false;
  o.sandbox.boot_timeout_ms = 1;  // every start times out
  o.min_ready = 1;
  o.max_total = 2;
  auto pool = make_pool(o);
  REQUIRE(eventually([&] { return pool.stats().failed >= 2; }, 10000ms));
  auto s = pool.stats();
  INFO(s.last_error);
  CHECK(!s.last_error.empty());
  CHECK(has(s.last_error, "boot"));
  CHECK(s.consecutive_failures >= 2);
  CHECK(s.created == 0);
  CHECK(eventually([&] { return pool.stats().backing_off; }, 3000ms));

  auto b = pool.lease(300);
  REQUIRE(!b.ok());
  CHECK(b.error().code == Errc::kTimeout);
  INFO(b.error().message);
  CHECK(has(b.error().message, "starts failed"));
  CHECK(has(b.error().message, "last error"));

  // Back-off: the delay doubles, so a second holds few new attempts.
  uint64_t f0 = pool.stats().failed;
  std::this_thread::sleep_for(1s);
  uint64_t f1 = pool.stats().failed;
  CHECK_MESSAGE(f1 - f0 <= 2, "failures in 1 s: " << f1 - f0);
  pool.close();
  CHECK(pool.stats().backing_off == false);
}

TEST_CASE("pool: warm_up runs in the pool's own template and in each sandbox; a failing one is quoted") {
  // Its own template: the warm-up runs there before the snapshot, then once
  // more in the clone.
  ztee::PoolOptions o;
  o.min_ready = 1;
  o.max_total = 1;
  o.warm_up = "echo w >> /tmp/warm-count";
  {
    auto pool = make_pool(o);
    auto a = pool.lease(60000);
    REQUIRE_MESSAGE(a.ok(), why(a));
    auto r = a->run("cat /tmp/warm-count");
    REQUIRE(r.ok());
    CHECK(r->stdout_data == "w\nw\n");
    CHECK(a->destroy().ok());
  }

  // A failing warm-up in a pool's clones: each start counts as failed, and
  // the error quotes the command, its status and its stderr.
  ztee::PoolOptions f;
  f.template_dir = shared_template();
  f.min_ready = 1;
  f.max_total = 1;
  f.warm_up = "echo no-such-tool >&2; exit 3";
  {
    auto pool = make_pool(f);
    REQUIRE(eventually([&] { return pool.stats().failed >= 1; }));
    auto s = pool.stats();
    INFO(s.last_error);
    CHECK(has(s.last_error, "warm-up `echo no-such-tool >&2; exit 3` exited 3 (stderr: no-such-tool)"));
    CHECK(s.created == 0);
  }

  // Failing in the pool's own template: create_pool fails and leaves no
  // template behind.
  std::string templates = test::state_dir() + "/templates";
  int before = test::count_entries(templates);
  ztee::PoolOptions g = o;
  g.warm_up = "exit 4";
  auto p = test::runtime().create_pool(g);
  REQUIRE_FALSE(p.ok());
  INFO(p.error().message);
  CHECK(p.error().code == Errc::kSandboxFailed);
  CHECK(has(p.error().message, "warm-up `exit 4` exited 4 in the pool's template sandbox"));
  CHECK(test::count_entries(templates) == before);
}

TEST_CASE("pool: a released sandbox is destroyed and the pool refills") {
  ztee::PoolOptions o;
  o.template_dir = shared_template();
  o.min_ready = 1;
  o.max_total = 3;
  auto pool = make_pool(o);
  REQUIRE(eventually([&] { return pool.stats().ready == 1; }));
  auto a = pool.lease(30000);
  REQUIRE_MESSAGE(a.ok(), why(a));
  int pid = a->vmm_pid();
  CHECK(test::process_alive(pid));
  CHECK(a->destroy().ok());
  CHECK(!test::process_alive(pid));
  CHECK(eventually([&] {
    auto s = pool.stats();
    return s.leased == 0 && s.ready == 1;
  }));

  // Dropping the last handle releases it too.
  {
    auto b = pool.lease(30000);
    REQUIRE_MESSAGE(b.ok(), why(b));
    pid = b->vmm_pid();
    CHECK(pool.stats().leased == 1);
  }
  CHECK(eventually([&] { return !test::process_alive(pid); }));
  CHECK(eventually([&] {
    auto s = pool.stats();
    return s.leased == 0 && s.ready == 1;
  }));
  CHECK(pool.stats().failed == 0);
}

TEST_CASE("pool: ready sandboxes wait at background CPU weight; a leased or directly created one has the default") {
  auto l = ztee::detail::detect_cgroups("ztee");
  REQUIRE_MESSAGE(l.ok(), why(l));
  const std::string cpu_dir = l->v2 ? l->parents[0] : l->parents[1];
  const std::string file = l->v2 ? "/cpu.weight" : "/cpu.shares";
  const std::string bg = l->v2 ? "1" : "2", fg = l->v2 ? "100" : "1024";
  auto weight = [&](const std::string& id) {
    std::ifstream in(cpu_dir + "/" + id + file);
    std::string w;
    in >> w;
    return w;
  };
  ztee::PoolOptions o;
  o.template_dir = shared_template();
  o.min_ready = 2;
  o.max_total = 3;
  auto pool = make_pool(o);
  REQUIRE(eventually([&] { return pool.stats().ready == 2; }));
  std::set<std::string> background;
  for (const auto& e : std::filesystem::directory_iterator(cpu_dir)) {
    std::string id = e.path().filename();
    if (id.rfind("sb-", 0) == 0 && weight(id) == bg) background.insert(id);
  }
  CHECK(background.size() >= 2);  // the two ready ones (and any pre-spawned VMM)

  auto a = pool.lease(30000);
  REQUIRE_MESSAGE(a.ok(), why(a));
  CHECK(background.count(a->id()) == 1);  // it waited in the background
  auto r = a->run("true");                // the loop restores the weight before this request
  REQUIRE(r.ok());
  CHECK(weight(a->id()) == fg);

  // A direct create from the same template (it may take a pre-spawned VMM) runs at the default.
  ztee::SandboxOptions so;
  so.template_dir = shared_template();
  auto d = test::runtime().create_sandbox(so);
  REQUIRE_MESSAGE(d.ok(), why(d));
  CHECK(weight(d->id()) == fg);
  CHECK(d->destroy().ok());
  CHECK(a->destroy().ok());
}

TEST_CASE("pool: a ready sandbox that died in the pool is never handed out") {
  std::string sdir = test::state_dir();
  std::set<std::string> before;
  if (DIR* d = ::opendir(sdir.c_str())) {
    while (dirent* e = ::readdir(d)) before.insert(e->d_name);
    ::closedir(d);
  }
  // Cold boots: clones may adopt a pre-spawned VMM (another directory), so
  // only here is the pool's one ready sandbox the one new sb-* directory.
  ztee::PoolOptions o;
  o.from_snapshot = false;
  o.min_ready = 1;
  o.max_total = 2;
  auto pool = make_pool(o);
  REQUIRE(eventually([&] { return pool.stats().ready == 1; }));
  int pid = 0;
  std::string dead_id;
  if (DIR* d = ::opendir(sdir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n.rfind("sb-", 0) == 0 && !before.count(n)) {
        std::ifstream f(sdir + "/" + n + "/vmm.pid");
        f >> pid;
        dead_id = n;
      }
    }
    ::closedir(d);
  }
  REQUIRE(pid > 0);
  REQUIRE(::kill(pid, SIGKILL) == 0);
  CHECK(eventually([&] { return !test::process_alive(pid); }));
  // The health check drops it and refills without a lease asking.
  CHECK(eventually([&] { return pool.stats().failed == 1; }, 5000ms));
  auto r = pool.lease(30000);
  REQUIRE_MESSAGE(r.ok(), why(r));
  CHECK(r->id() != dead_id);
  CHECK(r->state() == ztee::SandboxState::kReady);
  CHECK(r->ping().ok());
  auto s = pool.stats();
  CHECK(s.failed == 1);
  CHECK(has(s.last_error, dead_id));
  CHECK(r->destroy().ok());
}

TEST_CASE("pool: a clone's writes are invisible to the template and to other clones") {
  auto before = file_times(shared_template());
  REQUIRE(before.size() == 3);
  ztee::PoolOptions o;
  o.template_dir = shared_template();
  o.min_ready = 2;
  o.max_total = 4;
  o.refill_concurrency = 2;
  auto pool = make_pool(o);
  auto a = pool.lease(30000);
  auto b = pool.lease(30000);
  REQUIRE_MESSAGE(a.ok(), why(a));
  REQUIRE_MESSAGE(b.ok(), why(b));
  REQUIRE(a->write_file("/tmp/only-in-a", "secret of a").ok());
  REQUIRE(a->run("echo changed > /etc/only-in-a && sync").ok());
  CHECK(a->read_file("/tmp/only-in-a").value() == "secret of a");
  auto sb = b->stat("/tmp/only-in-a");
  REQUIRE(!sb.ok());
  CHECK(sb.error().code == Errc::kNotFound);
  CHECK(b->run("test -e /etc/only-in-a").value().exit_code == 1);
  // A clone made after the writes does not see them either.
  auto c = pool.lease(30000);
  REQUIRE_MESSAGE(c.ok(), why(c));
  CHECK(c->stat("/tmp/only-in-a").error().code == Errc::kNotFound);
  CHECK(c->run("test -e /etc/only-in-a").value().exit_code == 1);
  // Clones are re-identified.
  auto ha = a->run("hostname").value().stdout_data;
  auto hb = b->run("hostname").value().stdout_data;
  CHECK(ha != hb);
  for (auto* s : {&a, &b, &c}) CHECK((*s)->destroy().ok());
  pool.close();
  CHECK(file_times(shared_template()) == before);
}

TEST_CASE("pool: cold-boot pool, and the last handle dropped on the loop thread") {
  ztee::PoolOptions o;
  o.from_snapshot = false;
  o.min_ready = 1;
  o.max_total = 2;
  auto pool = make_pool(o);
  auto a = pool.lease(60000);
  REQUIRE_MESSAGE(a.ok(), why(a));
  auto r = a->run("echo cold");
  REQUIRE_MESSAGE(r.ok(), why(r));
  CHECK(r->stdout_data == "cold\n");
  CHECK(pool.stats().created >= 1);

  // Drop the only Pool handle inside a callback on the event-loop thread: it
  // must close without waiting (no deadlock).
  std::promise<void> dropped;
  auto fut = dropped.get_future();
  ztee::ExecOptions eo;
  eo.shell = "true";
  a->exec_async(eo, [p = std::move(pool), &dropped](ztee::Result<ztee::ExecResult>) mutable {
    p = ztee::Pool();
    dropped.set_value();
  });
  CHECK(fut.wait_for(10s) == std::future_status::ready);
  CHECK(a->ping().ok());  // a leased sandbox outlives its pool
  CHECK(a->destroy().ok());
}

TEST_CASE("pool: a lease from a non-empty pool takes microseconds") {
  ztee::PoolOptions o;  // its own template: close() must then leave nothing, pre-spawned VMMs included
  o.min_ready = 4;
  o.max_total = 8;
  o.refill_concurrency = 2;
  auto dirs_before = sandbox_dirs();
  int templates_before = test::count_entries(test::state_dir() + "/templates");
  auto pool = make_pool(o);
  std::vector<int64_t> us;
  std::vector<ztee::Sandbox> held;
  for (int round = 0; round < 2; ++round) {
    REQUIRE(eventually([&] { return pool.stats().ready == 4; }));
    for (int i = 0; i < 4; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      auto r = pool.lease(30000);
      us.push_back(std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count());
      REQUIRE_MESSAGE(r.ok(), why(r));
      held.push_back(std::move(r).value());
    }
    for (auto& sb : held) CHECK(sb.destroy().ok());
    held.clear();
  }
  std::sort(us.begin(), us.end());
  int64_t p50 = us[us.size() / 2];
  MESSAGE("lease from a non-empty pool: p50 " << p50 << " µs, max " << us.back() << " µs over " << us.size());
  CHECK(p50 <= 1000);  // target 50 µs; loose here so a loaded CI machine does not flake
  auto s = pool.stats();
  CHECK(s.lease_wait_hist[0] + s.lease_wait_hist[1] + s.lease_wait_hist[2] >= 4);
  CHECK(hist_total(s) == 8);
  // close() returns once nothing of the pool is left: refills in flight
  // included (min_ready 4 means some are starting now).
  pool.close();
  // (Earlier tests' sandboxes may finish going away meanwhile: only new ones count.)
  std::set<std::string> left;
  for (auto& d : sandbox_dirs())
    if (!dirs_before.count(d)) left.insert(d);
  CHECK_MESSAGE(left.empty(), "left behind by the closed pool: " << join(left));
  CHECK(test::count_entries(test::state_dir() + "/templates") == templates_before);
}
