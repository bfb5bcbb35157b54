#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "agent/protocol.hpp"

using namespace ztee::proto;

namespace {
struct Got {
  MsgType type;
  uint32_t stream;
  uint16_t flags;
  std::string payload;
};
std::vector<Got> feed_all(FrameDecoder& d, const std::string& bytes, size_t step, DecodeError* err) {
  std::vector<Got> out;
  *err = DecodeError::kNone;
  for (size_t i = 0; i < bytes.size() && *err == DecodeError::kNone; i += step) {
    size_t n = std::min(step, bytes.size() - i);
    *err = d.feed(bytes.data() + i, n, [&](const FrameHeader& h, std::string_view p) {
      out.push_back({h.type, h.stream, h.flags, std::string(p)});
    });
  }
  return out;
}
std::string header(uint32_t magic, uint8_t version, uint8_t type, uint16_t flags, uint32_t stream, uint32_t len) {
  unsigned char h[kHeaderSize];
  put_le32(h, magic);
  h[4] = version;
  h[5] = type;
  put_le16(h + 6, flags);
  put_le32(h + 8, stream);
  put_le32(h + 12, len);
  return std::string(reinterpret_cast<char*>(h), kHeaderSize);
}
}  // namespace

TEST_CASE("frames round-trip whatever the chunking") {
  std::string wire;
  append_frame(wire, MsgType::kStdout, 7, "hello");
  append_frame(wire, MsgType::kExit, 7, R"({"exit_code":0})");
  append_frame(wire, MsgType::kData, 9, "", kFlagEof);
  std::string big(100000, 'x');
  append_frame(wire, MsgType::kStderr, 3, big);
  for (size_t step : {1u, 3u, 16u, 17u, 4096u, 1u << 20}) {
    FrameDecoder d;
    DecodeError err;
    auto got = feed_all(d, wire, step, &err);
    CHECK(err == DecodeError::kNone);
    REQUIRE(got.size() == 4);
    CHECK(got[0].type == MsgType::kStdout);
    CHECK(got[0].payload == "hello");
    CHECK(got[1].type == MsgType::kExit);
    CHECK(got[2].flags == kFlagEof);
    CHECK(got[2].payload.empty());
    CHECK(got[3].payload == big);
    CHECK(got[3].stream == 3);
    CHECK(d.idle());
  }
}

TEST_CASE("hostile headers are rejected before any payload is buffered") {
  struct Case {
    std::string bytes;
    DecodeError want;
  };
  std::vector<Case> cases = {
      {header(0xdeadbeef, kVersion, 4, 0, 1, 1), DecodeError::kBadMagic},
      {header(kMagic, kVersion + 1, 4, 0, 1, 1), DecodeError::kBadVersion},
      {header(kMagic, kVersion - 1, 4, 0, 1, 1), DecodeError::kBadVersion},  // an agent of an older image
      {header(kMagic, kVersion, 0, 0, 1, 1), DecodeError::kBadType},
      {header(kMagic, kVersion, 200, 0, 1, 1), DecodeError::kBadType},
      {header(kMagic, kVersion, 22, 0, 1, 1), DecodeError::kBadType},  // one past the last (kStdinAck)
      {header(kMagic, kVersion, 4, 0x8000, 1, 1), DecodeError::kBadFlags},
      {header(kMagic, kVersion, 4, 0, 0, 1), DecodeError::kBadStream},
      {header(kMagic, kVersion, 4, 0, 1, kMaxPayload + 1), DecodeError::kTooLong},
      {header(kMagic, kVersion, 4, 0, 1, 0xffffffff), DecodeError::kTooLong},
      // JSON control frames have a lower limit than data frames.
      {header(kMagic, kVersion, static_cast<uint8_t>(MsgType::kExit), 0, 1, kMaxControlPayload + 1),
       DecodeError::kTooLong},
  };
  for (auto& c : cases) {
    FrameDecoder d;
    DecodeError err;
    auto got = feed_all(d, c.bytes, 1, &err);
    CHECK(got.empty());
    CHECK(err == c.want);
    // A decoder that failed stays failed.
    CHECK(d.feed("x", 1, [](const FrameHeader&, std::string_view) {}) == c.want);
  }
}

TEST_CASE("a data frame at exactly the limit is accepted") {
  std::string wire = header(kMagic, kVersion, 4, 0, 1, kMaxPayload) + std::string(kMaxPayload, 'a');
  FrameDecoder d;
  DecodeError err;
  auto got = feed_all(d, wire, 65536, &err);
  CHECK(err == DecodeError::kNone);
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload.size() == kMaxPayload);
}
