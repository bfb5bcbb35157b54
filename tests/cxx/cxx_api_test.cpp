// The installable C++ API (capi/ztee.hpp) against real microVMs, built as
// C++17 with only capi/ on the include path and linked to libztee.so, as a
// program outside the tree would be. One sandbox serves most tests; one
// more is booted to make a template for the pool and clone tests.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <ztee.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

ztee::Runtime& runtime() {
  static ztee::Runtime rt = [] {
    auto r = ztee::Runtime::create();
    if (!r) FAIL("Runtime::create: " << r.error().to_string());
    return std::move(r).value();
  }();
  return rt;
}

// The shared sandbox (booted on first use).
ztee::Sandbox& sandbox() {
  static ztee::Sandbox sb = [] {
    auto r = runtime().create_sandbox();
    if (!r) FAIL("create_sandbox: " << r.error().to_string());
    return std::move(r).value();
  }();
  return sb;
}

ztee::ExecResult run_ok(ztee::Sandbox& sb, const std::string& shell) {
  auto r = sb.run(shell, 60000);
  REQUIRE_MESSAGE(r.ok(), shell << ": " << (r ? "" : r.error().to_string()));
  return std::move(r).value();
}

}  // namespace

static_assert(!std::is_copy_constructible_v<ztee::Sandbox> && !std::is_copy_assignable_v<ztee::Sandbox>);
static_assert(!std::is_copy_constructible_v<ztee::Runtime> && !std::is_copy_constructible_v<ztee::Pool>);
static_assert(!std::is_copy_constructible_v<ztee::Cancel>);
static_assert(std::is_nothrow_move_constructible_v<ztee::Sandbox> &&
              std::is_nothrow_move_assignable_v<ztee::Sandbox>);
static_assert(std::is_nothrow_move_constructible_v<ztee::Runtime> &&
              std::is_nothrow_move_constructible_v<ztee::Pool> &&
              std::is_nothrow_move_constructible_v<ztee::Cancel>);

TEST_CASE("version, features and the runtime's backend") {
  std::string v = ztee::version();
  CHECK(std::count(v.begin(), v.end(), '.') == 2);
  CHECK(ztee::has_feature("files"));
  CHECK(ztee::has_feature("pool"));
  CHECK_FALSE(ztee::has_feature("no-such-feature"));
  CHECK_FALSE(ztee::has_feature(std::string("files\0x", 7)));
  std::string backend = runtime().backend();
  CHECK_MESSAGE(backend.rfind("qemu/", 0) == 0, backend);
  CHECK(backend.find(ztee::has_feature("kvm") ? "qemu/kvm" : "qemu/tcg") == 0);
}

TEST_CASE("exec: collected output, exit codes, ids") {
  ztee::Sandbox& sb = sandbox();
  CHECK(sb.id().rfind("sb-", 0) == 0);
  ztee::ExecOptions o;
  o.argv = {"sh", "-c", "echo out; echo err >&2; exit 3"};
  auto r = sb.exec(o);
  REQUIRE(r.ok());
  CHECK(r->exit_code == 3);
  CHECK(r->signal == 0);
  CHECK_FALSE(r->timed_out);
  CHECK_FALSE(r->cancelled);
  CHECK(r->stdout_data == "out\n");
  CHECK(r->stderr_data == "err\n");
  CHECK(r->duration_us > 0);
}

TEST_CASE("exec: stdout and stderr streamed through std::function callbacks") {
  std::mutex mu;  // callbacks run on the runtime's event-loop thread
  std::string out, err;
  int out_calls = 0;
  std::thread::id caller = std::this_thread::get_id(), cb_thread;
  ztee::ExecOptions o;
  o.shell = "for i in 1 2 3; do echo line$i; sleep 0.2; done; echo oops >&2";
  o.on_stdout = [&](std::string_view d) {
    std::lock_guard<std::mutex> l(mu);
    out.append(d);
    ++out_calls;
    cb_thread = std::this_thread::get_id();
  };
  o.on_stderr = [&](std::string_view d) {
    std::lock_guard<std::mutex> l(mu);
    err.append(d);
  };
  auto r = sandbox().exec(o);
  REQUIRE(r.ok());
  std::lock_guard<std::mutex> l(mu);
  CHECK(out == "line1\nline2\nline3\n");
  CHECK(err == "oops\n");
  CHECK(out_calls >= 2);  // streamed as produced, not at the end
  CHECK(cb_thread != caller);
  CHECK(r->stdout_data.empty());  // streamed, not also collected
  CHECK(r->stderr_data.empty());
  CHECK(r->exit_code == 0);
}

TEST_CASE("exec: a callback that throws cancels the command and becomes its error") {
  ztee::Sandbox& sb = sandbox();
  SUBCASE("std::exception from on_stdout, the exec's own cancel token") {
    int calls = 0;
    ztee::ExecOptions o;
    o.shell = "echo first; sleep 30; echo never";
    o.on_stdout = [&](std::string_view) {
      ++calls;
      throw std::runtime_error("boom");
    };
    auto t0 = Clock::now();
    auto r = sb.exec(o);
    CHECK(seconds_since(t0) < 20);  // cancelled, not the 30 s sleep
    REQUIRE_FALSE(r.ok());
    CHECK(calls == 1);
    CHECK(r.error().status == ztee::kCallbackThrew);
    CHECK(std::string(r.error().status_name()) == "kCallbackThrew");
    CHECK(r.error().message.find("ExecOptions::on_stdout threw: boom") != std::string::npos);
    REQUIRE(r.error().exception);
    // value() rethrows what the callback threw.
    CHECK_THROWS_WITH_AS(r.value(), "boom", std::runtime_error);
  }
  SUBCASE("a non-std exception from on_stderr, the caller's token") {
    auto cancel = ztee::Cancel::create();
    REQUIRE(cancel.ok());
    ztee::ExecOptions o;
    o.shell = "echo x >&2; sleep 30";
    o.on_stderr = [](std::string_view) { throw 42; };
    o.cancel = &*cancel;
    auto t0 = Clock::now();
    auto r = sb.exec(o);
    CHECK(seconds_since(t0) < 20);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().status == ztee::kCallbackThrew);
    CHECK(r.error().message.find("ExecOptions::on_stderr threw an exception not derived") != std::string::npos);
    CHECK(cancel->triggered());  // the caller's token ended it and stays triggered
    CHECK_THROWS_AS(r.value(), int);
  }
  SUBCASE("an empty Cancel passed in: the exec still gets a token of its own") {
    ztee::Cancel empty;
    ztee::ExecOptions o;
    o.argv = {"sh", "-c", "echo go; sleep 30"};
    o.on_stdout = [](std::string_view) { throw std::logic_error("stop"); };
    o.cancel = &empty;
    auto t0 = Clock::now();
    auto r = sb.exec(o);
    CHECK(seconds_since(t0) < 20);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().status == ztee::kCallbackThrew);
    CHECK_THROWS_WITH_AS(r.value(), "stop", std::logic_error);
  }
  // The sandbox is unharmed.
  CHECK(run_ok(sb, "echo still fine").stdout_data == "still fine\n");
}

TEST_CASE("exec: Cancel from another thread") {
  ztee::Cancel empty;
  CHECK_FALSE(empty);
  empty.trigger();  // a no-op
  CHECK_FALSE(empty.triggered());

  auto cancel = ztee::Cancel::create();
  REQUIRE(cancel.ok());
  CHECK_FALSE(cancel->triggered());
  std::atomic<bool> started{false};
  ztee::ExecOptions o;
  o.shell = "echo started; sleep 60";
  o.on_stdout = [&](std::string_view d) {
    if (d.find("started") != std::string_view::npos) started = true;
  };
  o.cancel = &*cancel;
  std::thread killer([&] {
    for (int i = 0; i < 3000 && !started; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    cancel->trigger();
  });
  auto t0 = Clock::now();
  auto r = sandbox().exec(o);
  killer.join();
  CHECK(seconds_since(t0) < 40);
  REQUIRE(r.ok());
  CHECK(started);
  CHECK(r->cancelled);
  CHECK(r->signal == 9);
  CHECK(r->exit_code == -1);
  CHECK(cancel->triggered());
  // A triggered token cancels the next exec as soon as it starts.
  ztee::ExecOptions again;
  again.shell = "sleep 60";
  again.cancel = &*cancel;
  auto r2 = sandbox().exec(again);
  REQUIRE(r2.ok());
  CHECK(r2->cancelled);
}

TEST_CASE("exec: timeout") {
  auto t0 = Clock::now();
  auto r = sandbox().run("echo before; sleep 30", 700);
  CHECK(seconds_since(t0) < 20);
  REQUIRE(r.ok());
  CHECK(r->timed_out);
  CHECK_FALSE(r->cancelled);
  CHECK(r->stdout_data == "before\n");
}

TEST_CASE("exec: env, cwd, user and binary stdin") {
  ztee::ExecOptions o;
  o.argv = {"sh", "-c", "printf '%s|%s|%s|%s|' \"$GREETING\" \"$TWO\" \"$(pwd)\" \"$(id -u)\"; cat"};
  o.env = {{"GREETING", "hello world"}, {"TWO", "a=b"}};
  o.cwd = "/tmp";
  o.user = "nobody";
  std::string in("bin\0\x01\xff\n", 7);
  o.stdin_data = in;
  auto r = sandbox().exec(o);
  REQUIRE(r.ok());
  CHECK(r->exit_code == 0);
  CHECK(r->stdout_data == "hello world|a=b|/tmp|65534|" + in);

  // No stdin_data: /dev/null; an empty one: empty input.
  ztee::ExecOptions n;
  n.shell = "wc -c";
  auto rn = sandbox().exec(n);
  REQUIRE(rn.ok());
  CHECK(rn->stdout_data == "0\n");
  n.stdin_data = std::string();
  rn = sandbox().exec(n);
  REQUIRE(rn.ok());
  CHECK(rn->stdout_data == "0\n");
}

TEST_CASE("files: write, read, stat, list, mkdir, remove with binary data") {
  ztee::Sandbox& sb = sandbox();
  std::string data;
  for (int i = 0; i < (1 << 20); ++i) data.push_back(static_cast<char>((i * 7 + i / 256) & 0xff));
  data[10] = '\0';

  REQUIRE(sb.mkdir("/tmp/cxx/a/b", true).ok());
  CHECK(sb.mkdir("/tmp/cxx/a/b", true).ok());  // parents: an existing dir is fine
  auto again = sb.mkdir("/tmp/cxx/a/b");
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().status == ZTEE_E_GUEST);
  CHECK(again.error().sys_errno == 17);  // EEXIST, the guest's errno

  REQUIRE(sb.write_file("/tmp/cxx/a/blob.bin", data, 0600).ok());
  REQUIRE(sb.write_file("/tmp/cxx/empty", "").ok());
  auto back = sb.read_file("/tmp/cxx/a/blob.bin");
  REQUIRE(back.ok());
  CHECK(back->size() == data.size());
  CHECK(*back == data);
  auto empty = sb.read_file("/tmp/cxx/empty");
  REQUIRE(empty.ok());
  CHECK(empty->empty());
  // The guest sees the same bytes.
  CHECK(run_ok(sb, "cmp -s /tmp/cxx/a/blob.bin /dev/stdin < /tmp/cxx/a/blob.bin && wc -c < /tmp/cxx/a/blob.bin")
            .stdout_data == "1048576\n");

  auto st = sb.stat("/tmp/cxx/a/blob.bin");
  REQUIRE(st.ok());
  CHECK(st->name == "/tmp/cxx/a/blob.bin");
  CHECK(st->type == ztee::FileType::kFile);
  CHECK(st->size == data.size());
  CHECK((st->mode & 07777) == 0600);
  CHECK(st->mtime_ns > 0);
  auto dir = sb.stat("/tmp/cxx/a");
  REQUIRE(dir.ok());
  CHECK(dir->type == ztee::FileType::kDir);

  auto list = sb.list_dir("/tmp/cxx/a");
  REQUIRE(list.ok());
  std::vector<std::string> names;
  for (const auto& e : *list) names.push_back(e.name + (e.type == ztee::FileType::kDir ? "/" : ""));
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"b/", "blob.bin"});

  auto small = sb.read_file("/tmp/cxx/a/blob.bin", 1000);
  REQUIRE_FALSE(small.ok());
  CHECK(small.error().status == ZTEE_E_INVALID_ARGUMENT);

  auto not_empty = sb.remove("/tmp/cxx/a");
  CHECK_FALSE(not_empty.ok());
  REQUIRE(sb.remove("/tmp/cxx", true).ok());
  auto gone = sb.stat("/tmp/cxx/a/blob.bin");
  REQUIRE_FALSE(gone.ok());
  CHECK(gone.error().status == ZTEE_E_NOT_FOUND);
  CHECK_FALSE(gone.error().message.empty());
  auto missing = sb.read_file("/no/such/file");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().status == ZTEE_E_NOT_FOUND);
}

TEST_CASE("invalid arguments: status, message, and the exception form") {
  ztee::Sandbox& sb = sandbox();
  ztee::ExecOptions none;
  auto r = sb.exec(none);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().status == ZTEE_E_INVALID_ARGUMENT);
  CHECK(std::string(r.error().status_name()) == "ZTEE_E_INVALID_ARGUMENT");
  CHECK(r.error().message.find("set ExecOptions::argv or ExecOptions::shell") != std::string::npos);
  CHECK(r.error().to_string().rfind("ZTEE_E_INVALID_ARGUMENT: ", 0) == 0);
  CHECK_FALSE(r.error().exception);
  try {
    (void)r.value();
    FAIL("value() did not throw");
  } catch (const ztee::Exception& e) {
    CHECK(e.error().status == ZTEE_E_INVALID_ARGUMENT);
    CHECK(std::string(e.what()).find("ExecOptions::argv") != std::string::npos);
  }
  CHECK_THROWS_AS((void)r->exit_code, ztee::Exception);

  ztee::ExecOptions both;
  both.argv = {"true"};
  both.shell = "true";
  CHECK(sb.exec(both).error().status == ZTEE_E_INVALID_ARGUMENT);

  ztee::ExecOptions bad_env;
  bad_env.shell = "true";
  bad_env.env = {{"A=B", "c"}};
  auto e = sb.exec(bad_env);
  REQUIRE_FALSE(e.ok());
  CHECK(e.error().message.find("env key 'A=B'") != std::string::npos);

  auto nul = sb.write_file(std::string("/tmp/a\0b", 8), "x");
  REQUIRE_FALSE(nul.ok());
  CHECK(nul.error().status == ZTEE_E_INVALID_ARGUMENT);
  CHECK(nul.error().message.find("NUL") != std::string::npos);

  // From the library itself: read through ztee_last_error() right after the call.
  auto rel = sb.snapshot("relative/dir");
  REQUIRE_FALSE(rel.ok());
  CHECK(rel.error().status == ZTEE_E_INVALID_ARGUMENT);
  CHECK_FALSE(rel.error().message.empty());
  auto aslr = runtime().create_sandbox([] {
    ztee::SandboxOptions so;
    so.guest_aslr = static_cast<ztee::GuestAslr>(9);
    return so;
  }());
  REQUIRE_FALSE(aslr.ok());
  CHECK(aslr.error().status == ZTEE_E_INVALID_ARGUMENT);
  CHECK(aslr.error().message.find("aslr") != std::string::npos);
  ztee::RuntimeOptions ro;
  ro.accel = "warp-drive";
  auto rt = ztee::Runtime::create(ro);
  REQUIRE_FALSE(rt.ok());
  CHECK(rt.error().status == ZTEE_E_INVALID_ARGUMENT);
  CHECK(rt.error().message.find("warp-drive") != std::string::npos);

  // An INVALID_ARGUMENT snapshot leaves the sandbox as it was.
  CHECK(sb.ping().ok());
}

TEST_CASE("ping, pause and resume from two threads") {
  ztee::Sandbox& sb = sandbox();
  REQUIRE(sb.ping().ok());
  REQUIRE(sb.pause().ok());
  std::atomic<bool> done{false};
  ztee::Result<ztee::ExecResult> r = ztee::Error{};
  std::thread t([&] {
    r = sb.run("echo after resume", 60000);
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CHECK_FALSE(done);  // waits while the guest is paused
  REQUIRE(sb.resume().ok());
  t.join();
  REQUIRE(r.ok());
  CHECK(r->stdout_data == "after resume\n");
}

TEST_CASE("several threads exec on one sandbox at once") {
  std::vector<std::thread> threads;
  std::vector<std::string> outs(4);
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&, i] {
      auto r = sandbox().run("echo " + std::to_string(i), 60000);
      outs[static_cast<size_t>(i)] = r ? r->stdout_data : r.error().to_string();
    });
  for (auto& t : threads) t.join();
  for (int i = 0; i < 4; ++i) CHECK(outs[static_cast<size_t>(i)] == std::to_string(i) + "\n");
}

TEST_CASE("snapshot, clone, pool lease and move semantics") {
  char tmpl[] = "/tmp/ztee-cxx-test.XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  std::string base = tmpl, tpl = base + "/tpl";

  {
    ztee::SandboxOptions so;
    so.snapshottable = true;
    auto src = runtime().create_sandbox(so);
    REQUIRE_MESSAGE(src.ok(), src.error().to_string());
    run_ok(*src, "echo tpl > /tmp/from-template");
    std::string id = src->id();
    REQUIRE(src->snapshot(tpl).ok());
    CHECK(src->id() == id);  // the handle lives on, the VM is gone
    auto closed = src->ping();
    REQUIRE_FALSE(closed.ok());
    CHECK(closed.error().status == ZTEE_E_CLOSED);
  }
  CHECK(std::filesystem::exists(tpl + "/template.json"));

  {  // A clone of the template.
    ztee::SandboxOptions so;
    so.template_dir = tpl;
    auto clone = runtime().create_sandbox(so);
    REQUIRE_MESSAGE(clone.ok(), clone.error().to_string());
    CHECK(run_ok(*clone, "cat /tmp/from-template").stdout_data == "tpl\n");
  }

  {
    ztee::PoolOptions po;
    po.template_dir = tpl;
    po.min_ready = 1;
    po.max_total = 2;
    po.warm_up = "echo warmed > /tmp/warm";
    auto pool = runtime().create_pool(po);
    REQUIRE_MESSAGE(pool.ok(), pool.error().to_string());
    auto a = pool->lease(60000);
    REQUIRE_MESSAGE(a.ok(), a.error().to_string());
    CHECK(run_ok(*a, "cat /tmp/warm /tmp/from-template").stdout_data == "warmed\ntpl\n");
    auto st = pool->stats();
    REQUIRE(st.ok());
    CHECK(st->leased == 1);
    CHECK(st->leases == 1);
    CHECK(st->failed == 0);
    uint64_t waits = 0;
    for (uint64_t n : st->lease_wait_hist) waits += n;
    CHECK(waits == 1);
    auto le = pool->last_error();
    REQUIRE(le.ok());
    CHECK(le->empty());

    // Moves: the moved-from handles are empty, safe to use and to destroy.
    ztee::Sandbox b = std::move(a).value();
    CHECK_FALSE(a.value());
    CHECK(a->id().empty());
    auto empty_call = a->ping();
    REQUIRE_FALSE(empty_call.ok());
    CHECK(empty_call.error().status == ZTEE_E_INVALID_ARGUMENT);
    CHECK(empty_call.error().message.find("moved from") != std::string::npos);
    CHECK(b.ping().ok());
    ztee::Sandbox c;
    CHECK_FALSE(c);
    c = std::move(b);  // move-assign into an empty handle
    CHECK_FALSE(b);
    CHECK(c.ping().ok());
    auto d = pool->lease(60000);
    REQUIRE_MESSAGE(d.ok(), d.error().to_string());
    std::string c_id = c.id();
    c = std::move(d).value();  // move-assign over a live one: that sandbox is destroyed
    CHECK(c.id() != c_id);
    CHECK(c.ping().ok());

    ztee::Pool p2 = std::move(pool).value();
    CHECK_FALSE(pool.value());
    CHECK(pool->lease(1).error().status == ZTEE_E_INVALID_ARGUMENT);
    pool->close();  // a no-op on an empty handle

    // A closed pool refuses leases; its leased sandbox keeps working after
    // the pool is freed.
    p2.close();
    auto after = p2.lease(1000);
    REQUIRE_FALSE(after.ok());
    CHECK(after.error().status == ZTEE_E_CLOSED);
    { ztee::Pool dropped = std::move(p2); }
    CHECK(run_ok(c, "echo still here").stdout_data == "still here\n");
    REQUIRE(c.destroy().ok());
    CHECK(c.destroy().error().status == ZTEE_E_CLOSED);
  }

  {  // Runtime and Cancel moves; a sandbox outlives its runtime's handle.
    auto rt = ztee::Runtime::create();
    REQUIRE(rt.ok());
    ztee::Runtime moved = std::move(rt).value();
    CHECK_FALSE(rt.value());
    CHECK(rt->backend().empty());
    CHECK(rt->create_sandbox().error().status == ZTEE_E_INVALID_ARGUMENT);
    ztee::SandboxOptions so;
    so.template_dir = tpl;
    auto sb = moved.create_sandbox(so);
    REQUIRE_MESSAGE(sb.ok(), sb.error().to_string());
    { ztee::Runtime gone = std::move(moved); }
    CHECK(run_ok(*sb, "echo orphan").stdout_data == "orphan\n");

    auto cancel = ztee::Cancel::create();
    REQUIRE(cancel.ok());
    ztee::Cancel c2 = std::move(cancel).value();
    CHECK_FALSE(cancel.value());
    c2.trigger();
    CHECK(c2.triggered());
  }
  std::filesystem::remove_all(base);
}
