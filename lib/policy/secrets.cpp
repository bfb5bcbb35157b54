// Secrets by reference: host-side resolvers and the scrubber that keeps
// resolved values (and their hex and base64 forms) out of everything a call
// returns.
#include <ztee/policy.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace ztee {

namespace {

bool valid_secret_name(std::string_view n) {
  if (n.empty() || n.size() > 255 || n[0] == '.') return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
  });
}

std::string to_hex(std::string_view v, bool upper) {
  const char* d = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  std::string out;
  out.reserve(v.size() * 2);
  for (unsigned char c : v) out += d[c >> 4], out += d[c & 15];
  return out;
}

std::string to_base64(std::string_view v, bool url, bool pad) {
  const char* a = url ? "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                      : "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 3 <= v.size(); i += 3) {
    uint32_t n = (uint8_t(v[i]) << 16) | (uint8_t(v[i + 1]) << 8) | uint8_t(v[i + 2]);
    out += a[n >> 18], out += a[(n >> 12) & 63], out += a[(n >> 6) & 63], out += a[n & 63];
  }
  if (size_t rest = v.size() - i; rest > 0) {
    uint32_t n = uint8_t(v[i]) << 16;
    if (rest == 2) n |= uint8_t(v[i + 1]) << 8;
    out += a[n >> 18], out += a[(n >> 12) & 63];
    if (rest == 2) out += a[(n >> 6) & 63];
    if (pad) out += rest == 2 ? "=" : "==";
  }
  return out;
}

}  // namespace

SecretResolver secrets_from_dir(std::string dir) {
  return [dir = std::move(dir)](std::string_view name) -> Result<std::string> {
    if (!valid_secret_name(name))
      return make_error(Errc::kInvalidArgument, fmt::format("secret name \"{}\" is not [A-Za-z0-9_.-]+", name));
    std::ifstream in(dir + "/" + std::string(name), std::ios::binary);
    if (!in) return make_error(Errc::kNotFound, fmt::format("secret \"{}\" is not in {}", name, dir));
    std::stringstream ss;
    ss << in.rdbuf();
    std::string v = ss.str();
    if (!v.empty() && v.back() == '\n') v.pop_back();
    if (v.empty()) return make_error(Errc::kNotFound, fmt::format("secret \"{}\" in {} is empty", name, dir));
    return v;
  };
}

SecretResolver secrets_from_env(std::string prefix) {
  return [prefix = std::move(prefix)](std::string_view name) -> Result<std::string> {
    if (!valid_secret_name(name))
      return make_error(Errc::kInvalidArgument, fmt::format("secret name \"{}\" is not [A-Za-z0-9_.-]+", name));
    const char* v = getenv((prefix + std::string(name)).c_str());
    if (!v || !*v) return make_error(Errc::kNotFound, fmt::format("secret \"{}\": ${}{} is not set", name, prefix, name));
    return std::string(v);
  };
}

void SecretScrubber::add(std::string name, std::string_view value) {
  if (value.empty()) return;
  auto push = [&](std::string bytes) {
    if (bytes.empty()) return;
    for (const auto& p : patterns_)
      if (p.bytes == bytes) return;
    longest_ = std::max(longest_, bytes.size());
    patterns_.push_back({std::move(bytes), name});
  };
  push(std::string(value));
  if (value.size() < 4) return;  // encoded forms of very short values would match noise
  push(to_hex(value, false));
  push(to_hex(value, true));
  for (bool url : {false, true}) {
    push(to_base64(value, url, true));
    // Inside a longer base64 text the value starts at one of three offsets:
    // keep only the characters that depend on the value's bytes alone.
    for (size_t k = 0; k < 3; ++k) {
      std::string padded(k, '\0');
      padded += value;
      std::string enc = to_base64(padded, url, false);
      size_t first = (8 * k + 5) / 6, end = (8 * padded.size()) / 6;
      if (end > first && end - first >= 6) push(enc.substr(first, end - first));
    }
  }
}

std::string SecretScrubber::replace_all(std::string_view s, size_t* consumed, bool final) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    if (!final && s.size() - i < longest_) break;  // a match could continue in the next chunk
    const Pattern* best = nullptr;
    for (const auto& p : patterns_)
      if (p.bytes.size() <= s.size() - i && (!best || p.bytes.size() > best->bytes.size()) &&
          s.compare(i, p.bytes.size(), p.bytes) == 0)
        best = &p;
    if (best) {
      out += "[secret:";
      out += best->name;
      out += ']';
      i += best->bytes.size();
    } else {
      out += s[i++];
    }
  }
  *consumed = i;
  return out;
}

std::string SecretScrubber::feed(std::string_view chunk) {
  if (patterns_.empty()) return std::string(chunk);
  pending_.append(chunk);
  size_t used = 0;
  std::string out = replace_all(pending_, &used, false);
  pending_.erase(0, used);
  return out;
}

std::string SecretScrubber::finish() {
  size_t used = 0;
  std::string out = replace_all(pending_, &used, true);
  pending_.clear();
  return out;
}

std::string SecretScrubber::scrub(std::string_view whole) {
  std::string saved = std::move(pending_);
  pending_.clear();
  std::string out = feed(whole);
  out += finish();
  pending_ = std::move(saved);
  return out;
}

}  // namespace ztee
