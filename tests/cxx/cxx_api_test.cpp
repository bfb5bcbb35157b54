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
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>
#include "../why.hpp"

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
    REQUIRE_MESSAGE(src.ok(), why(src));
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
    REQUIRE_MESSAGE(clone.ok(), why(clone));
    CHECK(run_ok(*clone, "cat /tmp/from-template").stdout_data == "tpl\n");
  }

  {
    ztee::PoolOptions po;
    po.template_dir = tpl;
    po.min_ready = 1;
    po.max_total = 2;
    po.warm_up = "echo warmed > /tmp/warm";
    auto pool = runtime().create_pool(po);
    REQUIRE_MESSAGE(pool.ok(), why(pool));
    auto a = pool->lease(60000);
    REQUIRE_MESSAGE(a.ok(), why(a));
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
    REQUIRE_MESSAGE(d.ok(), why(d));
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
    REQUIRE_MESSAGE(sb.ok(), why(sb));
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

// ---- workspaces -----------------------------------------------------------------

namespace {

void write_text(const std::string& path, const std::string& text) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  REQUIRE(f != nullptr);
  std::fputs(text.c_str(), f);
  std::fclose(f);
}

std::string read_text(const std::string& path) {
  std::string out;
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return "<missing>";
  char buf[256];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}

}  // namespace

TEST_CASE("workspaces: mounts, diff, patch, reviewed export, conflict") {
  CHECK(ztee::has_feature("workspaces"));
  char tmpl[] = "/tmp/ztee-cxx-ws.XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  std::string base = tmpl, host = base + "/repo";
  std::filesystem::create_directory(host);
  write_text(host + "/main.txt", "one\n");
  write_text(host + "/other.txt", "two\n");

  ztee::SandboxOptions so;
  so.mounts = {{host, "/proc/x"}};
  auto bad = runtime().create_sandbox(so);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().status == ZTEE_E_INVALID_ARGUMENT);
  CHECK(bad.error().message.find("/proc/x") != std::string::npos);
  so.mounts = {{base + "/missing", "/work"}};
  CHECK(runtime().create_sandbox(so).error().status == ZTEE_E_NOT_FOUND);
  so.mounts = {{std::string("rel\0x", 5), "/work"}};
  CHECK(runtime().create_sandbox(so).error().status == ZTEE_E_INVALID_ARGUMENT);

  so.mounts = {{host, "/work"}};
  so.diff_log = base + "/diff.jsonl";
  auto sbr = runtime().create_sandbox(so);
  REQUIRE_MESSAGE(sbr.ok(), why(sbr));
  ztee::Sandbox sb = std::move(sbr).value();
  run_ok(sb, "echo changed >> /work/main.txt && echo x >> /work/other.txt && echo n > /work/new.txt");
  CHECK(read_text(host + "/main.txt") == "one\n");

  auto diff = sb.diff("/work");
  REQUIRE_MESSAGE(diff.ok(), why(diff));
  REQUIRE(diff->size() == 3);
  CHECK((*diff)[0].path == "main.txt");
  CHECK((*diff)[0].kind == ztee::ChangeKind::kModified);
  CHECK((*diff)[1].path == "new.txt");
  CHECK((*diff)[1].kind == ztee::ChangeKind::kCreated);
  CHECK((*diff)[1].type == ztee::FileType::kFile);
  CHECK((*diff)[1].size == 2);
  CHECK((*diff)[1].mount == "/work");
  CHECK((*diff)[1].sha256.size() == 64);
  CHECK(sb.diff("/elsewhere").error().status == ZTEE_E_NOT_FOUND);

  auto patch = sb.patch("", {"main.txt"});
  REQUIRE_MESSAGE(patch.ok(), why(patch));
  CHECK(patch->find("+changed") != std::string::npos);
  CHECK(patch->find("other.txt") == std::string::npos);

  {  // An approver that throws: nothing is written.
    ztee::ExportOptions eo;
    eo.approve = [](const ztee::Change& c) -> bool {
      if (c.path == "other.txt") throw std::runtime_error("reviewer crashed");
      return true;
    };
    auto r = sb.export_changes(eo);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().status == ztee::kCallbackThrew);
    CHECK(r.error().message.find("reviewer crashed") != std::string::npos);
    CHECK_THROWS_AS(r.value(), std::runtime_error);
    CHECK(read_text(host + "/main.txt") == "one\n");
    CHECK(read_text(host + "/new.txt") == "<missing>");
  }
  {  // What the approver approves; a change after approval is declined; conflicts.
    std::vector<std::string> asked;
    ztee::ExportOptions eo;
    eo.approve = [&](const ztee::Change& c) {
      asked.push_back(c.path);
      if (c.path == "new.txt") run_ok(sb, "echo swapped > /work/new.txt");  // after it was shown
      return c.path == "main.txt" || c.path == "new.txt";
    };
    auto r = sb.export_changes(eo);
    REQUIRE_MESSAGE(r.ok(), why(r));
    CHECK(asked == std::vector<std::string>{"main.txt", "new.txt", "other.txt"});
    REQUIRE(r->applied.size() == 1);
    CHECK(r->applied[0].path == "main.txt");
    REQUIRE(r->declined.size() == 2);
    CHECK(r->declined[0].path == "new.txt");
    CHECK(r->declined[0].size == 8);  // the swapped content, not written
    CHECK(read_text(host + "/main.txt") == "one\nchanged\n");
    CHECK(read_text(host + "/new.txt") == "<missing>");

    ztee::ExportOptions to_dest;
    to_dest.dest_dir = base + "/dest";
    std::filesystem::create_directory(to_dest.dest_dir);
    to_dest.paths = {"new.txt"};
    auto d = sb.export_changes(to_dest);
    REQUIRE_MESSAGE(d.ok(), why(d));
    CHECK(read_text(to_dest.dest_dir + "/new.txt") == "swapped\n");

    write_text(host + "/other.txt", "edited on the host\n");
    auto c = sb.export_changes({});
    REQUIRE_FALSE(c.ok());
    CHECK(c.error().status == ZTEE_E_CONFLICT);
    CHECK(c.error().message.find("other.txt") != std::string::npos);
    CHECK(read_text(host + "/new.txt") == "<missing>");
    ztee::ExportOptions nope;
    nope.paths = {"nope.txt"};
    CHECK(sb.export_changes(nope).error().status == ZTEE_E_INVALID_ARGUMENT);
  }
  std::string id = sb.id();
  REQUIRE(sb.destroy().ok());
  CHECK(read_text(base + "/diff.jsonl").find(id) != std::string::npos);
  std::filesystem::remove_all(base);
}

// ---- control plane: policy, audit log, gate ----------------------------------

namespace {

const char kPolicy[] =
    "{\n"
    "  \"version\": 1,\n"
    "  \"tiers\": {\n"
    "    \"L0\": {\"action\": \"run\", \"timeout_ms\": 30000},\n"
    "    \"L2\": {\"action\": \"audit\", \"timeout_ms\": 30000},\n"
    "    \"L4\": {\"action\": \"approve\", \"approval_timeout_ms\": 20000},\n"
    "    \"L5\": {\"action\": \"deny\"}\n"
    "  },\n"
    "  \"rules\": [\n"
    "    {\"name\": \"forbidden\", \"tool\": \"format_disk\", \"tier\": \"L5\"},\n"
    "    {\"name\": \"reads\", \"tool\": [\"read_file\", \"cat\"], \"tier\": \"L0\"},\n"
    "    {\"name\": \"writes\", \"tool\": \"write_file\", \"tier\": \"L2\"},\n"
    "    {\"name\": \"code\", \"tool\": [\"python\", \"shell\"], \"tier\": \"L4\"}\n"
    "  ]\n"
    "}\n";

ztee::ToolCall tool_call(std::string tool, std::string command, std::string trace) {
  ztee::ToolCall c;
  c.tool = std::move(tool);
  c.command = std::move(command);
  c.trace_id = std::move(trace);
  return c;
}

}  // namespace

static_assert(!std::is_copy_constructible_v<ztee::Gate> && std::is_nothrow_move_constructible_v<ztee::Gate>);
static_assert(!std::is_copy_constructible_v<ztee::Policy> && !std::is_copy_constructible_v<ztee::AuditLog>);

TEST_CASE("policy: parse errors name their line; classify") {
  CHECK(ztee::has_feature("gate"));
  auto bad = ztee::Policy::parse(
      "{\"version\": 1,\n \"tiers\": {\"L0\": {\"action\": \"run\"}},\n"
      " \"rules\": [\n  {\"name\": \"x\", \"tier\": \"L0\", \"colour\": \"red\"}\n ]\n}");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().status == ZTEE_E_INVALID_ARGUMENT);
  CHECK_MESSAGE(bad.error().message.find("line 4") != std::string::npos, why(bad));
  CHECK(bad.error().message.find("colour") != std::string::npos);
  auto missing = ztee::Policy::load("/nonexistent/ztee-policy.json");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().status == ZTEE_E_NOT_FOUND);

  CHECK(std::string(ztee::Policy::default_json()).find("\"read-only-tools\"") != std::string::npos);
  auto def = ztee::Policy::default_policy();
  REQUIRE(def.ok());
  auto d = def->classify(tool_call("read_file", "cat /etc/hostname", ""));
  REQUIRE(d.ok());
  CHECK(d->tier == 0);
  CHECK(d->action == ztee::Action::kRun);
  CHECK(d->rule == "read-only-tools");

  auto p = ztee::Policy::parse(kPolicy);
  REQUIRE_MESSAGE(p.ok(), why(p));
  d = p->classify(tool_call("cat", "cat /etc/hostname", ""));
  REQUIRE(d.ok());
  CHECK(d->tier == 0);
  CHECK(d->rule_index == 1);
  CHECK(d->rule == "reads");
  CHECK(d->reason.find("L0 run") != std::string::npos);
  ztee::ToolCall argv_call;
  argv_call.tool = "python";
  argv_call.argv = {"python3", "-c", "print(1)"};
  d = p->classify(argv_call);
  REQUIRE(d.ok());
  CHECK(d->tier == 4);
  CHECK(d->action == ztee::Action::kApprove);
  d = p->classify(tool_call("launch_rocket", "true", ""));
  REQUIRE(d.ok());
  CHECK(d->action == ztee::Action::kDeny);
  CHECK(d->rule_index == -1);
  CHECK(d->rule.empty());
  // Bad input: no tool; a NUL byte; an empty handle.
  auto no_tool = p->classify(tool_call("", "true", ""));
  REQUIRE_FALSE(no_tool.ok());
  CHECK(no_tool.error().status == ZTEE_E_INVALID_ARGUMENT);
  ztee::ToolCall nul = tool_call("cat", "true", "");
  nul.env = {{"K", std::string("a\0b", 3)}};
  auto nul_r = p->classify(nul);
  REQUIRE_FALSE(nul_r.ok());
  CHECK(nul_r.error().message.find("NUL") != std::string::npos);
  ztee::Policy moved = std::move(p).value();
  CHECK_FALSE(p.value());
  CHECK(p->classify(tool_call("cat", "true", "")).error().status == ZTEE_E_INVALID_ARGUMENT);
  CHECK(moved.classify(tool_call("cat", "true", "")).ok());
}

TEST_CASE("gate: run through a pool, deny, approvals, secrets, DLP, audit log") {
  char dir[] = "/tmp/ztee-cxx-gate.XXXXXX";
  REQUIRE(mkdtemp(dir) != nullptr);
  std::string base = dir, log_path = base + "/audit.jsonl";
  const std::string secret = "zt-cxx-LIVE-4242", key = "cxx-audit-key";
  auto t0 = Clock::now();

  ztee::PoolOptions po;
  po.min_ready = 1;
  po.max_total = 2;
  po.lease_timeout_ms = 60000;
  auto pool = runtime().create_pool(po);
  REQUIRE_MESSAGE(pool.ok(), why(pool));
  auto policy = ztee::Policy::parse(kPolicy);
  REQUIRE(policy.ok());
  ztee::AuditOptions ao;
  ao.path = log_path;
  ao.hmac_key = key;
  ao.durability = ztee::Durability::kBatch;
  auto log = ztee::AuditLog::open(ao);
  REQUIRE_MESSAGE(log.ok(), why(log));
  auto seq = log->append("cxx_start", "cxx-test", "\"n\":1");
  REQUIRE_MESSAGE(seq.ok(), why(seq));
  auto bad_fields = log->append("cxx_bad", "", "\"n\":");
  REQUIRE_FALSE(bad_fields.ok());
  CHECK(bad_fields.error().status == ZTEE_E_INVALID_ARGUMENT);

  // The approver's behaviour, set per call.
  enum class Mode { kFromThread, kThrow };
  Mode mode = Mode::kFromThread;
  int approver_calls = 0;
  ztee::ApprovalRequest seen;
  std::thread answer;
  std::atomic<ztee_status> answer_status{ZTEE_E_INTERNAL};
  std::vector<std::string> asked;

  ztee::GateOptions go;
  go.policy = &*policy;
  go.audit = &*log;
  go.pool = &*pool;
  go.approver = [&](const ztee::ApprovalRequest& req, ztee::Gate& gate) {
    ++approver_calls;
    seen = req;
    if (mode == Mode::kThrow) throw std::runtime_error("approver exploded");
    answer = std::thread([&gate, &answer_status, token = req.token] {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      auto r = gate.approve(token, "bob via thread");
      answer_status = r.ok() ? ZTEE_OK : r.error().status;
    });
  };
  go.secrets = [&](const std::string& name) -> std::optional<std::string> {
    asked.push_back(name);
    if (name == "BOOM") throw std::runtime_error("vault unreachable");
    if (name == "API_KEY") return secret;
    return std::nullopt;
  };
  auto gate_r = ztee::Gate::create(runtime(), go);
  REQUIRE_MESSAGE(gate_r.ok(), why(gate_r));
  // Moved: the callbacks must see the new object.
  ztee::Gate gate = std::move(gate_r).value();
  // The gate keeps its own references.
  { ztee::Policy gone = std::move(policy).value(); }

  {  // L0 run, leased from the pool.
    uint64_t before = pool->stats()->leases;
    auto r = gate.call(tool_call("cat", "cat /etc/hostname >/dev/null && echo read-ok", "cxx-run"));
    REQUIRE_MESSAGE(r.ok(), why(r));
    CHECK(r->ran);
    CHECK(r->decision.action == ztee::Action::kRun);
    CHECK(r->decision.rule == "reads");
    CHECK(r->sandbox_id.rfind("sb-", 0) == 0);
    CHECK(r->denial.empty());
    REQUIRE(r->exec.has_value());
    CHECK(r->exec->exit_code == 0);
    CHECK(r->exec->stdout_data == "read-ok\n");
    CHECK(pool->stats()->leases == before + 1);
  }
  {  // L5 deny: nothing runs.
    auto r = gate.call(tool_call("format_disk", "mkfs /dev/vda", "cxx-deny"));
    REQUIRE(r.ok());
    CHECK_FALSE(r->ran);
    CHECK(r->decision.action == ztee::Action::kDeny);
    CHECK(r->decision.rule == "forbidden");
    CHECK_FALSE(r->denial.empty());
    CHECK(r->sandbox_id.empty());
    CHECK_FALSE(r->exec.has_value());
  }
  {  // L4: approved later from another std::thread.
    mode = Mode::kFromThread;
    auto r = gate.call(tool_call("shell", "echo approved-ran", "cxx-approve"));
    if (answer.joinable()) answer.join();
    REQUIRE_MESSAGE(r.ok(), why(r));
    CHECK(approver_calls == 1);
    CHECK(answer_status.load() == ZTEE_OK);
    CHECK(seen.deadline_ms > 10000);
    CHECK(seen.deadline_ms <= 20000);
    CHECK(seen.description.find("\"tool\":\"shell\"") != std::string::npos);
    CHECK(seen.description.find("\"trace\":\"cxx-approve\"") != std::string::npos);
    CHECK(r->ran);
    CHECK(r->decision.action == ztee::Action::kApprove);
    CHECK(r->approved_by == "bob via thread");
    REQUIRE(r->exec.has_value());
    CHECK(r->exec->stdout_data == "approved-ran\n");
    // The answered token is gone.
    auto again = gate.approve(seen.token, "again");
    REQUIRE_FALSE(again.ok());
    CHECK(again.error().status == ZTEE_E_NOT_FOUND);
    CHECK(gate.deny("no-such-token", "x").error().status == ZTEE_E_NOT_FOUND);
  }
  {  // L4: an approver that throws denies the call with what it threw.
    mode = Mode::kThrow;
    uint64_t before = pool->stats()->leases;
    auto r = gate.call(tool_call("shell", "echo never", "cxx-throw"));
    REQUIRE_MESSAGE(r.ok(), why(r));
    CHECK(approver_calls == 2);
    CHECK_FALSE(r->ran);
    CHECK_MESSAGE(r->denial.find("approver exploded") != std::string::npos, r->denial);
    CHECK_FALSE(r->exec.has_value());
    CHECK(pool->stats()->leases == before);
  }
  {  // A secret from the lambda, in env and a file; scrubbed from the
     // collected stdout and the streamed stderr. L2 audit.
    std::mutex mu;
    std::string err;
    ztee::ToolCall c = tool_call("write_file",
                                 "echo \"$API_KEY\"; cat /tmp/cred; echo; echo \"$PLAIN\"; "
                                 "echo \"err $API_KEY\" >&2",
                                 "cxx-secret");
    c.env = {{"API_KEY", "secret://API_KEY"}, {"PLAIN", "visible"}};
    c.files = {{"/tmp/cred", "secret://API_KEY"}};
    c.writes = {"/tmp/out"};
    c.on_stderr = [&](std::string_view d) {
      std::lock_guard<std::mutex> l(mu);
      err.append(d);
    };
    auto r = gate.call(c);
    REQUIRE_MESSAGE(r.ok(), why(r));
    CHECK(std::find(asked.begin(), asked.end(), "API_KEY") != asked.end());
    CHECK(r->ran);
    CHECK(r->decision.action == ztee::Action::kAudit);
    REQUIRE(r->exec.has_value());
    CHECK(r->exec->stdout_data.find(secret) == std::string::npos);
    CHECK(r->exec->stdout_data == "[secret:API_KEY]\n[secret:API_KEY]\nvisible\n");
    CHECK(r->exec->stderr_data.empty());  // streamed
    std::lock_guard<std::mutex> l(mu);
    CHECK(err == "err [secret:API_KEY]\n");
  }
  {  // Unknown and throwing resolvers: nothing runs.
    uint64_t before = pool->stats()->leases;
    ztee::ToolCall c = tool_call("cat", "true", "cxx-nope");
    c.env = {{"X", "secret://NOPE"}};
    auto r = gate.call(c);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().status == ZTEE_E_NOT_FOUND);
    CHECK(r.error().message.find("secret://NOPE") != std::string::npos);
    c.env = {{"X", "secret://BOOM"}};
    c.trace_id = "cxx-boom";
    r = gate.call(c);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().status == ZTEE_E_INTERNAL);
    CHECK_MESSAGE(r.error().message.find("vault unreachable") != std::string::npos, why(r));
    CHECK(pool->stats()->leases == before);
  }
  {  // A ToolCall output callback that throws cancels the call and becomes its error.
    ztee::ToolCall c = tool_call("cat", "echo first; sleep 30; echo never", "cxx-cb-throw");
    c.on_stdout = [](std::string_view) { throw std::runtime_error("sink full"); };
    auto t_cb = Clock::now();
    auto r = gate.call(c);
    CHECK(seconds_since(t_cb) < 20);  // cancelled, not the 30 s sleep
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().status == ztee::kCallbackThrew);
    CHECK_MESSAGE(r.error().message.find("ToolCall::on_stdout threw: sink full") != std::string::npos,
                  r.error().message);
    CHECK(r.error().exception != nullptr);
  }
  {  // Output DLP on a second gate over the same pool (default policy).
    ztee::GateOptions dgo;
    dgo.pool = &*pool;
    dgo.dlp = true;
    auto dgate = ztee::Gate::create(runtime(), dgo);
    REQUIRE_MESSAGE(dgate.ok(), why(dgate));
    auto r = dgate->call(tool_call("read_file", "echo pay 4111 1111 1111 1111 now", "cxx-dlp"));
    REQUIRE_MESSAGE(r.ok(), why(r));
    CHECK(r->ran);
    CHECK_FALSE(r->blocked);
    CHECK(r->dlp_findings == 1);
    REQUIRE(r->exec.has_value());
    CHECK(r->exec->stdout_data == "pay [REDACTED:card] now\n");
    dgo.dlp_block = {"no_such_detector"};
    auto bogus = ztee::Gate::create(runtime(), dgo);
    REQUIRE_FALSE(bogus.ok());
    CHECK(bogus.error().message.find("no_such_detector") != std::string::npos);
  }

  { ztee::Gate done = std::move(gate); }  // frees the gate: its log reference goes
  CHECK_FALSE(gate);
  CHECK(gate.call(tool_call("cat", "true", "")).error().status == ZTEE_E_INVALID_ARGUMENT);
  REQUIRE(log->flush().ok());
  { ztee::AuditLog closed = std::move(log).value(); }

  std::string text;
  {
    std::FILE* f = std::fopen(log_path.c_str(), "rb");
    REQUIRE(f != nullptr);
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
    std::fclose(f);
  }
  CHECK(text.find(secret) == std::string::npos);
  CHECK(text.find("\"trace\":\"cxx-approve\",\"event\":\"approval_granted\"") != std::string::npos);
  CHECK(text.find("\"trace\":\"cxx-throw\",\"event\":\"approval_denied\"") != std::string::npos);
  auto rep = ztee::verify_audit_log({log_path}, key);
  REQUIRE_MESSAGE(rep.ok(), why(rep));
  CHECK_MESSAGE(rep->ok, rep->problem);
  CHECK(rep->records > 10);
  CHECK(rep->problem.empty());
  auto wrong_key = ztee::verify_audit_log({log_path}, "not-the-key");
  REQUIRE(wrong_key.ok());
  CHECK_FALSE(wrong_key->ok);
  CHECK_FALSE(wrong_key->problem.empty());
  CHECK(ztee::verify_audit_log({}).error().status == ZTEE_E_INVALID_ARGUMENT);
  std::filesystem::remove_all(base);
  MESSAGE("gate test took " << seconds_since(t0) << " s");
}

TEST_CASE("exec: Input streams stdin to cat; Cancel::signal reaches a trap") {
  auto in = ztee::Input::create();
  REQUIRE(in.ok());
  std::mutex mu;
  std::string out;
  auto seen = [&](const std::string& want) {
    for (int i = 0; i < 3000; ++i) {
      {
        std::lock_guard lk(mu);
        if (out == want) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  };
  ztee::ExecOptions o;
  o.argv = {"cat"};
  o.input = &*in;
  o.on_stdout = [&](std::string_view d) {
    std::lock_guard lk(mu);
    out.append(d);
  };
  CHECK(in->write("a\n").ok());
  std::atomic<bool> fed{false};
  std::thread feeder([&] {
    fed = seen("a\n") && in->write("b\n").ok() && seen("a\nb\n");
    in->close();
  });
  auto r = sandbox().exec(o);
  feeder.join();
  REQUIRE(r.ok());
  CHECK(fed);
  CHECK(r->exit_code == 0);
  CHECK(out == "a\nb\n");
  CHECK_FALSE(in->write("late").ok());  // after close()

  auto ctl = ztee::Cancel::create();
  REQUIRE(ctl.ok());
  out.clear();
  ztee::ExecOptions so;
  so.shell = "trap 'echo got INT; exit 4' INT; echo ready; while :; do sleep 0.05; done";
  so.cancel = &*ctl;
  so.on_stdout = o.on_stdout;
  std::atomic<bool> sent{false};
  std::thread sender([&] { sent = seen("ready\n") && ctl->signal(2).ok(); });
  auto r2 = sandbox().exec(so);
  sender.join();
  REQUIRE(r2.ok());
  CHECK(sent);
  CHECK(r2->exit_code == 4);
  CHECK_FALSE(r2->cancelled);
  CHECK(out == "ready\ngot INT\n");
  CHECK(ctl->signal(2).ok());        // nothing runs: a no-op
  CHECK_FALSE(ctl->signal(65).ok());  // out of range
}
