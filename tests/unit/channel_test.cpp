// The host-side channel treats the guest as hostile: frame types only the
// host may send, and malformed frames, end the channel with a reason.
#include <doctest/doctest.h>

#include <string>

#include "agent/channel.hpp"

using namespace ztee::detail;
using namespace ztee::proto;

TEST_CASE("frames are routed to their stream; unknown streams are ignored") {
  std::string fatal;
  AgentChannel ch(nullptr, [&](std::string r) { fatal = r; });
  std::string got;
  uint32_t id = ch.open_stream([&](const FrameHeader& h, std::string_view p) {
    CHECK(h.type == MsgType::kStdout);
    got.append(p);
  });
  std::string wire;
  append_frame(wire, MsgType::kStdout, id, "abc");
  append_frame(wire, MsgType::kStdout, id + 100, "ignored");
  append_frame(wire, MsgType::kStdout, id, "def");
  ch.receive(wire);
  CHECK(got == "abcdef");
  CHECK(fatal.empty());
}

TEST_CASE("STDIN_ACK is a guest message: routed to its exec's stream") {
  std::string fatal;
  AgentChannel ch(nullptr, [&](std::string r) { fatal = r; });
  int acks = 0;
  uint32_t id = ch.open_stream([&](const FrameHeader& h, std::string_view) { acks += h.type == MsgType::kStdinAck; });
  std::string wire;
  append_frame(wire, MsgType::kStdinAck, id, R"({"bytes":4})");
  ch.receive(wire);
  CHECK(acks == 1);
  CHECK(fatal.empty());
}

TEST_CASE("a guest sending a host-only message type ends the channel") {
  for (MsgType t : {MsgType::kExec, MsgType::kStdin, MsgType::kShutdown, MsgType::kPing, MsgType::kFileWrite}) {
    std::string fatal;
    AgentChannel ch(nullptr, [&](std::string r) { fatal = r; });
    int calls = 0;
    uint32_t id = ch.open_stream([&](const FrameHeader&, std::string_view) { ++calls; });
    std::string wire;
    append_frame(wire, t, id, "{}");
    ch.receive(wire);
    CHECK(calls == 0);
    CHECK(fatal.find("protocol violation") != std::string::npos);
  }
}

TEST_CASE("garbage ends the channel once, and nothing after it is delivered") {
  int fatal_calls = 0;
  std::string reason;
  AgentChannel ch(nullptr, [&](std::string r) {
    ++fatal_calls;
    reason = r;
  });
  int calls = 0;
  uint32_t id = ch.open_stream([&](const FrameHeader&, std::string_view) { ++calls; });
  ch.receive(std::string(64, '\xff'));
  std::string wire;
  append_frame(wire, MsgType::kStdout, id, "late");
  ch.receive(wire);
  CHECK(calls == 0);
  CHECK(fatal_calls == 1);
  CHECK(reason.find("bad magic") != std::string::npos);
}

TEST_CASE("a handler may close its own stream and the channel while running") {
  std::string fatal;
  AgentChannel ch(nullptr, [&](std::string r) { fatal = r; });
  uint32_t id = 0;
  id = ch.open_stream([&](const FrameHeader&, std::string_view) {
    ch.close_stream(id);
    ch.close();
  });
  std::string wire;
  append_frame(wire, MsgType::kExit, id, "{}");
  append_frame(wire, MsgType::kExit, id, "{}");
  ch.receive(wire);
  CHECK(ch.open_streams() == 0);
}
