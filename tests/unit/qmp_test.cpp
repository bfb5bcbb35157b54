#include <doctest/doctest.h>

#include <sys/socket.h>

#include <future>

#include "io/loop.hpp"
#include "vmm/qemu/qmp.hpp"

using namespace ztee::detail;

TEST_CASE("QMP: greeting, negotiation, replies by id, events, hostile lines") {
  auto loop = Loop::create();
  REQUIRE(loop.ok());
  Loop& l = **loop;
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  UniqueFd peer(sv[1]);
  std::promise<std::string> reply;
  std::unique_ptr<QmpClient> q;
  std::string event, fatal;
  l.post([&] {
    q = std::make_unique<QmpClient>(Stream::make(l, UniqueFd(sv[0])), [&](std::string_view e) { event = e; },
                                    [&](std::string r) { fatal = r; });
    q->start();
    // Queued until the capabilities handshake completes.
    q->command("query-kvm", "", [&](ztee::Result<std::string> r) { reply.set_value(r.ok() ? r.value() : "ERR"); });
  });
  auto read_line = [&] {
    std::string line;
    char c;
    while (::recv(peer.get(), &c, 1, 0) == 1 && c != '\n') line += c;
    return line;
  };
  auto say = [&](std::string s) { REQUIRE(::send(peer.get(), s.data(), s.size(), 0) == (ssize_t)s.size()); };
  say("{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n");
  CHECK(read_line() == R"({"execute":"qmp_capabilities","id":0})");
  say("{\"return\": {}, \"id\": 0}\r\n");
  CHECK(read_line() == R"({"execute":"query-kvm","id":1})");
  say("{\"event\": \"STOP\", \"timestamp\": {}}\r\n{\"return\": {\"enabled\": false, \"present\": false}, \"id\": 1}\r\n");
  auto f = reply.get_future();
  REQUIRE(f.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  CHECK(f.get() == R"({"enabled":false,"present":false})");
  CHECK(event == "STOP");
  say("this is not json\n");
  std::promise<void> sync;
  for (int i = 0; i < 100 && fatal.empty(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(fatal == "QMP sent invalid JSON");
  l.post([&] {
    q.reset();
    sync.set_value();
  });
  sync.get_future().wait();
}

TEST_CASE("QMP: an endless line is refused, not buffered") {
  std::string fatal;
  QmpClient q(nullptr, nullptr, [&](std::string r) { fatal = r; });
  std::string chunk(64 * 1024, 'a');
  for (int i = 0; i < 17 && fatal.empty(); ++i) q.receive(chunk);
  CHECK(fatal == "QMP line over 1 MiB");
}
