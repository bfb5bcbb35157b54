#include <doctest/doctest.h>

#include <sys/socket.h>
#include <poll.h>

#include <atomic>
#include <chrono>
#include <future>

#include "io/loop.hpp"
#include "io/stream.hpp"

using namespace ztee::detail;

TEST_CASE("posted work and timers run on the loop thread, in order") {
  auto loop = Loop::create();
  REQUIRE(loop.ok());
  Loop& l = **loop;
  std::promise<std::string> p;
  auto f = p.get_future();
  l.post([&] {
    CHECK(l.in_loop_thread());
    auto order = std::make_shared<std::string>();
    l.add_timer(30, [&, order] {
      *order += "B";
      p.set_value(*order);
    });
    uint64_t cancelled = l.add_timer(10, [order] { *order += "X"; });
    l.cancel_timer(cancelled);
    l.add_timer(1, [order] { *order += "A"; });
  });
  REQUIRE(f.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  CHECK(f.get() == "AB");
  CHECK(!l.in_loop_thread());
}

TEST_CASE("a stream delivers bytes in order and reports the peer closing") {
  auto loop = Loop::create();
  REQUIRE(loop.ok());
  Loop& l = **loop;
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  UniqueFd a(sv[0]), b(sv[1]);
  std::promise<std::string> p;
  auto f = p.get_future();
  std::shared_ptr<Stream> s;
  l.post([&] {
    s = Stream::make(l, std::move(a), 7);
    auto got = std::make_shared<std::string>();
    s->start([got](std::string_view d) { got->append(d); }, [got, &p](int err) {
      CHECK(err == 0);
      p.set_value(*got);
    });
    // Echo through the send queue too: many small sends stay ordered.
    for (int i = 0; i < 100; ++i) s->send(std::to_string(i % 10));
  });
  std::string expect;
  for (int i = 0; i < 100; ++i) expect += std::to_string(i % 10);
  std::string echoed;
  while (echoed.size() < expect.size()) {
    char buf[256];
    ssize_t n = ::recv(b.get(), buf, sizeof buf, 0);
    REQUIRE(n > 0);
    echoed.append(buf, static_cast<size_t>(n));
  }
  CHECK(echoed == expect);
  std::string msg = "hello, stream of many chunks";
  REQUIRE(::send(b.get(), msg.data(), msg.size(), 0) == static_cast<ssize_t>(msg.size()));
  b.reset();
  REQUIRE(f.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  CHECK(f.get() == msg);
  std::promise<void> closed;
  l.post([&] {
    s->close();
    s.reset();
    closed.set_value();
  });
  closed.get_future().wait();
}

TEST_CASE("closing a stream cancels its pending receive") {
  auto loop = Loop::create();
  REQUIRE(loop.ok());
  Loop& l = **loop;
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  UniqueFd b(sv[1]);
  std::weak_ptr<Stream> weak;
  std::promise<void> done;
  l.post([&] {
    auto s = Stream::make(l, UniqueFd(sv[0]));
    weak = s;
    s->start([](std::string_view) { FAIL("no data expected"); }, [](int) { FAIL("no close callback after close()"); });
    s->close();
    done.set_value();
  });
  done.get_future().wait();
  // The stream (and its fd) go away once the cancelled receive completes.
  for (int i = 0; i < 200 && !weak.expired(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(weak.expired());
}
