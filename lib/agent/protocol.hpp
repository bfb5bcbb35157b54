// libztee host<->guest agent protocol: frame layout, message types and the
// incremental frame decoder. Shared by the host (lib/agent) and the guest
// agent (guest/), so it depends on nothing but the standard library.
//
// A byte stream carries frames. Each frame is a 16-byte little-endian header
// followed by `length` payload bytes:
//
//   offset size field
//   0      4    magic    0x4145545a ("ZTEA" in memory order)
//   4      1    version  kVersion
//   5      1    type     MsgType
//   6      2    flags    Flag bits
//   8      4    stream   request id chosen by the host; 0 is reserved
//   12     4    length   payload bytes, <= kMaxPayload
//
// Control payloads (HELLO, EXEC, EXIT, RESULT, ERROR, SIGNAL, FILE_*) are
// small JSON objects (<= kMaxControlPayload); data payloads (STDIN, STDOUT,
// STDERR, DATA) are raw bytes. See guest/README.md for each message's fields.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace ztee::proto {

inline constexpr uint32_t kMagic = 0x4145545a;
inline constexpr uint8_t kVersion = 2;  // 2: STDIN_ACK (stdin flow control)
inline constexpr size_t kHeaderSize = 16;
inline constexpr uint32_t kMaxPayload = 1u << 20;         // any frame
inline constexpr uint32_t kMaxControlPayload = 64u << 10;  // JSON frames
inline constexpr uint32_t kDataChunk = 64u << 10;          // sender chunking
// Stdin flow control: the host has at most this many STDIN bytes of one exec
// sent and not yet acknowledged by STDIN_ACK, so the agent never holds more
// of them than this (what the command has not read yet).
inline constexpr uint32_t kStdinWindow = 1u << 20;

enum class MsgType : uint8_t {
  kHello = 1,       // h->g {"seed":hex,"time_ns":n,"hostname":s}; g->h reply on same stream
  kExec = 2,        // h->g exec request
  kStdin = 3,       // h->g data; kFlagEof closes the child's stdin
  kStdout = 4,      // g->h data
  kStderr = 5,      // g->h data
  kExit = 6,        // g->h {"exit_code","signal","timed_out","truncated","duration_us"}; ends stream
  kSignal = 7,      // h->g {"signal":n} to a running exec's process group
  kFileWrite = 8,   // h->g {"path","mode","append"} then kData frames, last has kFlagEof
  kData = 9,        // file bytes, either direction; kFlagEof marks the last
  kFileRead = 10,   // h->g {"path","max"}; g->h kData frames then kResult {"size"}
  kFileStat = 11,   // h->g {"path"}; g->h kResult {"type","size","mode","mtime_ns"}
  kFileList = 12,   // h->g {"path"}; g->h kResult {"entries":[{"name","type","size","mode"}]}
  kFileRemove = 13, // h->g {"path","recursive":bool}; g->h kResult {}
  kFileMkdir = 14,  // h->g {"path","parents":bool,"mode"}; g->h kResult {}
  kResult = 15,     // g->h success; ends stream
  kError = 16,      // g->h {"errno":n,"message":s}; ends stream
  kPing = 17,       // h->g empty; g->h kResult empty (round-trip probe)
  kShutdown = 18,   // h->g; guest syncs and powers off
  kReseed = 19,     // h->g {"seed":hex,"time_ns":n,"hostname":s}; g->h kResult {}
  kDiff = 20,       // h->g {"mount"?}; g->h kData frames (a JSON array of changes) then kResult {"entries","bytes"}
  kStdinAck = 21,   // g->h {"bytes":n} on an exec stream: n more STDIN bytes left the agent (see kStdinWindow)
};

enum Flag : uint16_t {
  kFlagEof = 1u << 0,
};

inline constexpr uint16_t kKnownFlags = kFlagEof;

inline bool is_known_type(uint8_t t) { return t >= 1 && t <= 21; }

inline bool is_control_type(MsgType t) {
  switch (t) {
    case MsgType::kStdin:
    case MsgType::kStdout:
    case MsgType::kStderr:
    case MsgType::kData:
      return false;
    default:
      return true;
  }
}

struct FrameHeader {
  uint32_t magic = kMagic;
  uint8_t version = kVersion;
  MsgType type{};
  uint16_t flags = 0;
  uint32_t stream = 0;
  uint32_t length = 0;
};

inline void put_le16(unsigned char* p, uint16_t v) {
  p[0] = static_cast<unsigned char>(v);
  p[1] = static_cast<unsigned char>(v >> 8);
}
inline void put_le32(unsigned char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
inline uint16_t get_le16(const unsigned char* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}
inline uint32_t get_le32(const unsigned char* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

inline void encode_header(const FrameHeader& h, unsigned char out[kHeaderSize]) {
  put_le32(out, h.magic);
  out[4] = h.version;
  out[5] = static_cast<unsigned char>(h.type);
  put_le16(out + 6, h.flags);
  put_le32(out + 8, h.stream);
  put_le32(out + 12, h.length);
}

// Appends one whole frame (header + payload) to `out`.
inline void append_frame(std::string& out, MsgType type, uint32_t stream,
                         std::string_view payload, uint16_t flags = 0) {
  unsigned char hdr[kHeaderSize];
  encode_header(FrameHeader{kMagic, kVersion, type, flags, stream,
                            static_cast<uint32_t>(payload.size())},
                hdr);
  out.append(reinterpret_cast<const char*>(hdr), kHeaderSize);
  out.append(payload.data(), payload.size());
}

enum class DecodeError {
  kNone = 0,
  kBadMagic,
  kBadVersion,
  kBadType,
  kBadFlags,
  kBadStream,
  kTooLong,
};

inline const char* decode_error_name(DecodeError e) {
  switch (e) {
    case DecodeError::kNone: return "none";
    case DecodeError::kBadMagic: return "bad magic";
    case DecodeError::kBadVersion: return "unsupported protocol version";
    case DecodeError::kBadType: return "unknown message type";
    case DecodeError::kBadFlags: return "unknown flag bits";
    case DecodeError::kBadStream: return "stream id 0";
    case DecodeError::kTooLong: return "payload length over limit";
  }
  return "?";
}

// Validates a header before any payload byte is buffered, so a hostile peer
// cannot make the reader allocate more than kMaxPayload (or
// kMaxControlPayload for JSON frames).
inline DecodeError decode_header(const unsigned char in[kHeaderSize], FrameHeader* h) {
  h->magic = get_le32(in);
  if (h->magic != kMagic) return DecodeError::kBadMagic;
  h->version = in[4];
  if (h->version != kVersion) return DecodeError::kBadVersion;
  if (!is_known_type(in[5])) return DecodeError::kBadType;
  h->type = static_cast<MsgType>(in[5]);
  h->flags = get_le16(in + 6);
  if (h->flags & ~kKnownFlags) return DecodeError::kBadFlags;
  h->stream = get_le32(in + 8);
  if (h->stream == 0) return DecodeError::kBadStream;
  h->length = get_le32(in + 12);
  uint32_t limit = is_control_type(h->type) ? kMaxControlPayload : kMaxPayload;
  if (h->length > limit) return DecodeError::kTooLong;
  return DecodeError::kNone;
}

// Incremental decoder: feed() arbitrary byte chunks; it calls
// on_frame(const FrameHeader&, std::string_view payload) for each complete
// frame. Stops at the first malformed header and reports it; the caller must
// then drop the connection. Buffered bytes never exceed
// kHeaderSize + kMaxPayload.
class FrameDecoder {
 public:
  template <typename OnFrame>
  DecodeError feed(const char* data, size_t len, OnFrame&& on_frame) {
    if (error_ != DecodeError::kNone) return error_;
    while (len > 0) {
      if (!have_header_) {
        size_t need = kHeaderSize - hdr_fill_;
        size_t take = len < need ? len : need;
        std::memcpy(hdr_ + hdr_fill_, data, take);
        hdr_fill_ += take;
        data += take;
        len -= take;
        if (hdr_fill_ < kHeaderSize) break;
        error_ = decode_header(hdr_, &cur_);
        if (error_ != DecodeError::kNone) return error_;
        have_header_ = true;
        payload_.clear();
        if (cur_.length == 0) {
          finish(on_frame);
          continue;
        }
        payload_.reserve(cur_.length);
      }
      size_t need = cur_.length - payload_.size();
      size_t take = len < need ? len : need;
      payload_.append(data, take);
      data += take;
      len -= take;
      if (payload_.size() == cur_.length) finish(on_frame);
    }
    return DecodeError::kNone;
  }

  DecodeError error() const { return error_; }
  // True when no partial frame is buffered.
  bool idle() const { return !have_header_ && hdr_fill_ == 0; }

 private:
  template <typename OnFrame>
  void finish(OnFrame& on_frame) {
    have_header_ = false;
    hdr_fill_ = 0;
    on_frame(static_cast<const FrameHeader&>(cur_), std::string_view(payload_));
  }

  unsigned char hdr_[kHeaderSize];
  size_t hdr_fill_ = 0;
  bool have_header_ = false;
  FrameHeader cur_{};
  std::string payload_;
  DecodeError error_ = DecodeError::kNone;
};

}  // namespace ztee::proto
