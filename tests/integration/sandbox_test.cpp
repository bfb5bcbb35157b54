// Exec and file operations against one shared, real microVM.
#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "common.hpp"
#include "../why.hpp"

using ztee::Errc;

TEST_CASE("python runs inside the microVM") {
  auto r = test::shared().run("python3 -c 'print(6*7)'");
  REQUIRE_MESSAGE(r.ok(), why(r));
  CHECK(r->stdout_data == "42\n");
  CHECK(r->exit_code == 0);
  CHECK(r->signal == 0);
  CHECK(!r->timed_out);
  CHECK(r->duration_us > 0);
  CHECK(test::shared().backend().rfind("qemu/", 0) == 0);
}

TEST_CASE("argv, env, cwd, stdin and exit status") {
  ztee::ExecOptions o;
  o.argv = {"sh", "-c", "echo \"$GREETING from $(pwd)\"; cat; echo oops >&2; exit 7"};
  o.env = {{"GREETING", "hello"}};
  o.cwd = "/tmp";
  o.stdin_data = std::string("from stdin\n");
  auto r = test::shared().exec(o);
  REQUIRE_MESSAGE(r.ok(), why(r));
  CHECK(r->stdout_data == "hello from /tmp\nfrom stdin\n");
  CHECK(r->stderr_data == "oops\n");
  CHECK(r->exit_code == 7);

  auto sig = test::shared().run("kill -TERM $$");
  REQUIRE(sig.ok());
  CHECK(sig->signal == 15);
  CHECK(sig->exit_code == -1);

  // The guest's hostname and a user other than root.
  auto host = test::shared().run("hostname");
  REQUIRE(host.ok());
  CHECK(host->stdout_data == test::shared().id() + "\n");
  ztee::ExecOptions nobody;
  nobody.argv = {"id", "-u"};
  nobody.user = "nobody";
  auto u = test::shared().exec(nobody);
  REQUIRE_MESSAGE(u.ok(), why(u));
  CHECK(u->stdout_data == "65534\n");
}

TEST_CASE("users, groups and start failures as the guest agent's spawn reports them") {
  auto& sb = test::shared();
  // A user added after earlier execs is seen (the agent re-reads a changed
  // /etc/passwd), with its uid, gid, supplementary groups (only its own gid),
  // HOME and a session of its own.
  REQUIRE(sb.run("echo 'ztee-t:x:4321:4322:test:/tmp/ztee-t-home:/bin/sh' >> /etc/passwd").ok());
  ztee::ExecOptions as;
  as.argv = {"sh", "-c", "id -u; id -g; id -G; echo $HOME $USER; test $$ -eq \"$(cut -d' ' -f6 /proc/$$/stat)\" && echo leader"};
  as.user = "ztee-t";
  auto r = sb.exec(as);
  REQUIRE_MESSAGE(r.ok(), why(r));
  CHECK(r->stdout_data == "4321\n4322\n4322\n/tmp/ztee-t-home ztee-t\nleader\n");
  // A bare uid without an entry stands for itself.
  as.user = "2345";
  as.argv = {"sh", "-c", "id -u; id -g"};
  r = sb.exec(as);
  REQUIRE_MESSAGE(r.ok(), why(r));
  CHECK(r->stdout_data == "2345\n2345\n");
  as.user = "no-such-user";
  auto bad_user = sb.exec(as);
  REQUIRE(!bad_user.ok());
  CHECK(bad_user.error().message.find("unknown user: no-such-user") != std::string::npos);

  // exec itself failing: a file that is not executable, and one the user may not run.
  REQUIRE(sb.run("printf 'echo hi\\n' > /tmp/noexec && chmod 644 /tmp/noexec && "
                 "printf '#!/bin/sh\\necho hi\\n' > /tmp/rootonly && chmod 700 /tmp/rootonly").ok());
  ztee::ExecOptions ne;
  ne.argv = {"/tmp/noexec"};
  auto r1 = sb.exec(ne);
  REQUIRE(!r1.ok());
  CHECK(r1.error().message.find("exec /tmp/noexec") != std::string::npos);
  CHECK(r1.error().message.find("ermission denied") != std::string::npos);
  ne.argv = {"/tmp/rootonly"};
  CHECK(sb.exec(ne).ok());
  ne.user = "nobody";
  auto r2 = sb.exec(ne);
  REQUIRE(!r2.ok());
  CHECK(r2.error().message.find("exec /tmp/rootonly") != std::string::npos);
  // A cwd the user may not enter fails at that step, named.
  REQUIRE(sb.run("mkdir -p /tmp/private && chmod 700 /tmp/private").ok());
  ztee::ExecOptions pc;
  pc.argv = {"true"};
  pc.cwd = "/tmp/private";
  pc.user = "nobody";
  auto r3 = sb.exec(pc);
  REQUIRE(!r3.ok());
  CHECK(r3.error().message.find("cwd /tmp/private") != std::string::npos);
  // None of the failed starts left a process behind, and the agent still serves.
  auto zombies = sb.run("grep -l '^State:.*Z' /proc/[0-9]*/status | wc -l");
  REQUIRE(zombies.ok());
  CHECK(zombies->stdout_data == "0\n");
  REQUIRE(sb.run("sed -i '/^ztee-t:/d' /etc/passwd && rm -rf /tmp/noexec /tmp/rootonly /tmp/private").ok());
  CHECK(sb.ping().ok());
}

TEST_CASE("a process that left the command's group cannot hold the exec open") {
  auto& sb = test::shared();
  // setsid puts the sleep in a session of its own (the reap's SIGKILL to the
  // group misses it) while it keeps stdout and stderr: the agent drains for
  // at most 200 ms after the command exits, then ends the stream.
  auto start = std::chrono::steady_clock::now();
  auto r = sb.run("setsid sleep 30 & echo started; echo err >&2");
  auto took = std::chrono::steady_clock::now() - start;
  REQUIRE_MESSAGE(r.ok(), why(r));
  CHECK(r->exit_code == 0);
  CHECK(r->stdout_data == "started\n");
  CHECK(r->stderr_data == "err\n");
  CHECK(took < std::chrono::seconds(20));  // not the sleep's 30 s
  REQUIRE(sb.run("for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = sleep ] && kill ${p#/proc/}; done; true").ok());
}

TEST_CASE("stdout is streamed as it is produced") {
  std::vector<std::string> chunks;
  ztee::ExecOptions o;
  o.shell = "for i in 1 2 3; do echo $i; sleep 0.3; done; echo done >&2";
  o.on_stdout = [&](std::string_view d) { chunks.emplace_back(d); };
  std::string err;
  o.on_stderr = [&](std::string_view d) { err.append(d); };
  auto r = test::shared().exec(o);
  REQUIRE(r.ok());
  // Three writes 0.3 s apart cannot arrive as one chunk.
  REQUIRE(chunks.size() == 3);
  CHECK(chunks[0] == "1\n");
  CHECK(chunks[2] == "3\n");
  CHECK(err == "done\n");
  CHECK(r->stdout_data.empty());  // streamed, not also collected
}

TEST_CASE("an output pipe keeps the default size until the command fills it") {
  // The command asks its own pipes (F_GETPIPE_SZ = 1032): stdout before and
  // after 4 MiB of output, and stderr, which it never fills.
  ztee::ExecOptions o;
  o.argv = {"python3", "-c",
            "import fcntl, sys, time\n"
            "before = fcntl.fcntl(1, 1032)\n"
            "sys.stdout.buffer.write(b'x' * (4 << 20)); sys.stdout.flush()\n"
            "time.sleep(0.3)\n"
            "print(before, fcntl.fcntl(1, 1032), fcntl.fcntl(2, 1032), file=sys.stderr)\n"};
  auto r = test::shared().exec(o);
  REQUIRE(r.ok());
  REQUIRE(r->exit_code == 0);
  CHECK(r->stdout_data.size() == (4u << 20));
  CHECK(r->stderr_data == "65536 1048576 65536\n");
}

TEST_CASE("several execs run at once in one sandbox") {
  auto& sb = test::shared();
  REQUIRE(sb.run("rm -f /tmp/fifo && mkfifo /tmp/fifo").ok());
  // The reader can only finish if the writer runs while it waits.
  std::promise<ztee::Result<ztee::ExecResult>> reader;
  ztee::ExecOptions o;
  o.shell = "cat /tmp/fifo";
  o.timeout_ms = 20000;
  sb.exec_async(o, [&](ztee::Result<ztee::ExecResult> r) { reader.set_value(std::move(r)); });
  auto w = sb.run("echo through-the-fifo > /tmp/fifo", 20000);
  REQUIRE(w.ok());
  auto r = reader.get_future().get();
  REQUIRE(r.ok());
  CHECK(r->stdout_data == "through-the-fifo\n");
  CHECK(!r->timed_out);
}

TEST_CASE("calls from many threads share one sandbox safely") {
  // doctest assertions belong to the main thread: the workers only record
  // what went wrong, and the checks run after the join.
  auto& sb = test::shared();
  std::vector<std::thread> threads;
  std::mutex mu;
  std::vector<std::string> failures;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5; ++i) {
        std::string want = std::to_string(t * 100 + i);
        auto r = sb.run("echo " + want);
        std::string bad = !r.ok() ? "error: " + r.error().message
                          : r->stdout_data != want + "\n" ? "got \"" + r->stdout_data + "\" for " + want
                                                          : "";
        if (!bad.empty()) {
          std::lock_guard lk(mu);
          failures.push_back(bad);
        }
      }
    });
  for (auto& th : threads) th.join();
  for (const auto& f : failures) CHECK_MESSAGE(false, f);
  CHECK(failures.empty());
}

TEST_CASE("exec: a cancel token kills the command from another thread; the sandbox stays usable") {
  auto& sb = test::shared();
  auto cancel = ztee::ExecCancel::create();
  REQUIRE(cancel);
  CHECK(!cancel.triggered());
  std::atomic<bool> started{false};
  std::string out;
  ztee::ExecOptions o;
  o.shell = "echo started; sleep 60; echo never";
  o.on_stdout = [&](std::string_view d) {
    out.append(d);
    if (out.find("started") != std::string::npos) started = true;
  };
  o.cancel = cancel;
  // The worker only triggers; every check is on this thread.
  std::thread killer([&] {
    for (int i = 0; i < 3000 && !started; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    cancel.trigger();
  });
  auto r = sb.exec(o);
  killer.join();
  REQUIRE_MESSAGE(r.ok(), why(r));
  CHECK(started);
  CHECK(r->cancelled);
  CHECK(r->signal == 9);
  CHECK(r->exit_code == -1);
  CHECK(out == "started\n");
  CHECK(cancel.triggered());
  // A token that is already triggered cancels the next exec as it starts.
  ztee::ExecOptions o2;
  o2.shell = "sleep 60";
  o2.cancel = cancel;
  auto r2 = sb.exec(o2);
  REQUIRE(r2.ok());
  CHECK(r2->cancelled);
  CHECK_MESSAGE(r2->signal == 9, "exit " << r2->exit_code << " signal " << r2->signal << " after " << r2->duration_us << " us, stderr " << r2->stderr_data);
  // Untriggered and empty tokens change nothing; the sandbox is still usable.
  ztee::ExecOptions o3;
  o3.shell = "echo fine";
  o3.cancel = ztee::ExecCancel::create();
  auto r3 = sb.exec(o3);
  REQUIRE(r3.ok());
  CHECK(!r3->cancelled);
  CHECK(r3->exit_code == 0);
  CHECK(r3->stdout_data == "fine\n");
  ztee::ExecCancel empty;
  CHECK(!empty);
  empty.trigger();  // a no-op
  CHECK(!empty.triggered());
}

TEST_CASE("files: write, read, stat, list, mkdir, remove") {
  auto& sb = test::shared();
  std::string bin;
  for (int i = 0; i < 3 * 1024 * 1024 + 7; ++i) bin.push_back(static_cast<char>(i * 31 % 256));
  REQUIRE(sb.mkdir("/work/a/b", true).ok());
  auto w = sb.write_file("/work/a/b/data.bin", bin, 0600);
  REQUIRE_MESSAGE(w.ok(), why(w));
  auto back = sb.read_file("/work/a/b/data.bin");
  REQUIRE(back.ok());
  CHECK(back->size() == bin.size());
  CHECK(*back == bin);
  auto st = sb.stat("/work/a/b/data.bin");
  REQUIRE(st.ok());
  CHECK(st->type == ztee::FileType::kFile);
  CHECK(st->size == bin.size());
  CHECK(st->mode == 0600);
  REQUIRE(sb.write_file("/work/a/empty", "").ok());
  auto empty = sb.read_file("/work/a/empty");
  REQUIRE(empty.ok());
  CHECK(empty->empty());
  auto ls = sb.list_dir("/work/a");
  REQUIRE(ls.ok());
  REQUIRE(ls->size() == 2);
  CHECK((*ls)[0].name == "b");
  CHECK((*ls)[0].type == ztee::FileType::kDir);
  CHECK((*ls)[1].name == "empty");
  // The guest sees what the host wrote.
  auto sum = sb.run("wc -c < /work/a/b/data.bin");
  REQUIRE(sum.ok());
  CHECK(sum->stdout_data == std::to_string(bin.size()) + "\n");

  auto too_big = sb.read_file("/work/a/b/data.bin", 1000);
  REQUIRE(!too_big.ok());
  CHECK(too_big.error().code == Errc::kInvalidArgument);
  auto missing = sb.read_file("/work/nope");
  REQUIRE(!missing.ok());
  CHECK(missing.error().code == Errc::kNotFound);
  CHECK(missing.error().message.find("/work/nope") != std::string::npos);
  auto relative = sb.read_file("relative/path");
  REQUIRE(!relative.ok());
  CHECK(relative.error().code == Errc::kInvalidArgument);
  auto not_empty = sb.remove("/work/a");
  CHECK(!not_empty.ok());
  REQUIRE(sb.remove("/work/a", true).ok());
  CHECK(sb.stat("/work/a").error().code == Errc::kNotFound);
  CHECK(sb.ping().ok());
}

TEST_CASE("the root filesystem is read-only underneath, writable on top") {
  auto r = test::shared().run("echo x > /usr/ztee-probe && cat /usr/ztee-probe && grep ' / ' /proc/mounts");
  REQUIRE(r.ok());
  CHECK(r->exit_code == 0);
  CHECK(r->stdout_data.find("x\n") == 0);
  CHECK(r->stdout_data.find("overlay") != std::string::npos);
}

TEST_CASE("nonexistent cwd and command fail with clear errors") {
  ztee::ExecOptions o;
  o.argv = {"true"};
  o.cwd = "/no/such/dir";
  auto r = test::shared().exec(o);
  REQUIRE(!r.ok());
  CHECK(r.error().code == Errc::kNotFound);
  CHECK(r.error().message.find("/no/such/dir") != std::string::npos);

  ztee::ExecOptions c;
  c.argv = {"definitely-not-a-command"};
  auto r2 = test::shared().exec(c);
  REQUIRE(!r2.ok());
  CHECK(r2.error().code == Errc::kNotFound);
  CHECK(r2.error().message.find("definitely-not-a-command") != std::string::npos);

  ztee::ExecOptions neither;
  CHECK(test::shared().exec(neither).error().code == Errc::kInvalidArgument);
  CHECK(test::shared().ping().ok());
}

TEST_CASE("a timeout kills the whole process group and the sandbox stays usable") {
  auto& sb = test::shared();
  auto r = sb.run("sleep 100 & sleep 100 & sleep 100", 1000);
  REQUIRE_MESSAGE(r.ok(), why(r));
  CHECK(r->timed_out);
  CHECK(r->signal == 9);
  // No sleep survived: not the leader, not the background children.
  auto ps = sb.run("cat /proc/[0-9]*/comm | grep -c '^sleep$' || true");
  REQUIRE(ps.ok());
  CHECK(ps->stdout_data == "0\n");
  auto after = sb.run("echo still-here");
  REQUIRE(after.ok());
  CHECK(after->stdout_data == "still-here\n");
}

TEST_CASE("output beyond the cap is dropped and flagged") {
  ztee::ExecOptions o;
  o.shell = "head -c 20000000 /dev/zero; echo tail >&2";
  o.output_cap = 1 << 20;
  auto r = test::shared().exec(o);
  REQUIRE(r.ok());
  CHECK(r->truncated);
  CHECK(r->stdout_data.size() + r->stderr_data.size() <= (1u << 20));
  CHECK(r->stdout_data.size() >= (1u << 19));
  CHECK(r->exit_code == 0);

  // Streaming callbacks are capped too.
  size_t streamed = 0;
  ztee::ExecOptions s;
  s.shell = "head -c 5000000 /dev/zero";
  s.output_cap = 100000;
  s.on_stdout = [&](std::string_view d) { streamed += d.size(); };
  auto rs = test::shared().exec(s);
  REQUIRE(rs.ok());
  CHECK(rs->truncated);
  CHECK(streamed <= 100000);
}

TEST_CASE("a blocking call from a callback is refused, not deadlocked") {
  ztee::Result<void> inner = ztee::make_error(Errc::kInternal, "not called");
  ztee::ExecOptions o;
  o.shell = "echo x";
  o.on_stdout = [&](std::string_view) { inner = test::shared().ping(); };
  auto r = test::shared().exec(o);
  REQUIRE(r.ok());
  REQUIRE(!inner.ok());
  CHECK(inner.error().code == Errc::kInvalidArgument);
  CHECK(inner.error().message.find("must not block") != std::string::npos);
}
