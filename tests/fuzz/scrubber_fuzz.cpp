// Fuzz target for SecretScrubber (include/ztee/policy.hpp), which scrubs
// guest-controlled output. Byte 0: the number of secrets (1..4); then per
// secret a length byte (1..32) and its bytes; then a byte seeding the chunk
// sizes (1..64 bytes, or the whole rest: 0); the rest is the output.
// Invariants: no crash; streamed output equals scrub() of the whole; no
// registered value survives in the output (values that could be made of a
// replacement token's own characters aside); the output is bounded.
#include <ztee/policy.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > (256 << 10)) return 0;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  size_t at = 0;
  const size_t count = 1 + static_cast<uint8_t>(in[at++]) % 4;
  std::vector<std::string> values, names;
  ztee::SecretScrubber scrubber;
  for (size_t i = 0; i < count && at < in.size(); ++i) {
    size_t len = 1 + static_cast<uint8_t>(in[at++]) % 32;
    len = std::min(len, in.size() - at);
    if (len == 0) break;
    values.emplace_back(in.substr(at, len));
    names.push_back(std::string(1, static_cast<char>('A' + i)));
    scrubber.add(names.back(), values.back());
    at += len;
  }
  if (at >= in.size()) return 0;
  const uint8_t chunk_seed = static_cast<uint8_t>(in[at++]);
  std::string_view text = in.substr(at);

  std::string whole = scrubber.scrub(text);
  std::string streamed;
  uint32_t seed = chunk_seed;
  for (size_t pos = 0; pos < text.size();) {
    size_t n = chunk_seed == 0 ? text.size() : 1 + seed % 64;
    seed = seed * 1103515245u + 12345u;
    n = std::min(n, text.size() - pos);
    streamed += scrubber.feed(text.substr(pos, n));
    pos += n;
  }
  streamed += scrubber.finish();
  if (streamed != whole) __builtin_trap();
  // A state left clean: the next stream starts afresh.
  if (scrubber.finish() != "") __builtin_trap();

  // Every replacement is "[secret:X]" (10 bytes) for at least one input byte.
  if (whole.size() > text.size() * 10) __builtin_trap();
  for (const auto& v : values) {
    if (v.find('[') != std::string::npos || v.find(']') != std::string::npos) continue;
    bool in_token = false;
    for (const auto& n : names) in_token = in_token || ("secret:" + n).find(v) != std::string::npos;
    if (in_token) continue;
    if (whole.find(v) != std::string::npos) __builtin_trap();
  }
  return 0;
}
