#include "serve/util.hpp"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <zlib.h>

#include <fmt/format.h>

#include <chrono>
#include <ctime>

namespace ztee::serve {

std::string json_str(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size();
  for (size_t i = 0; i < n;) {
    unsigned char c = p[i];
    if (c < 0x80) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
          if (c < 0x20 || c == 0x7f) out += fmt::format("\\u{:04x}", c);
          else out += static_cast<char>(c);
      }
      ++i;
      continue;
    }
    // Validate one UTF-8 sequence (no overlongs, no surrogates, <= U+10FFFF).
    size_t len = 0;
    uint32_t cp = 0;
    if (c >= 0xc2 && c <= 0xdf) len = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) len = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) len = 4, cp = c & 0x07;
    bool ok = len > 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) ok = false;
      else cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    if (ok && ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff))))
      ok = false;
    if (!ok) {
      out += "\xef\xbf\xbd";
      ++i;
      continue;
    }
    out.append(s.substr(i, len));
    i += len;
  }
  out += '"';
  return out;
}

std::string base64_encode(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3), '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(data.data()), static_cast<int>(data.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  std::string t(text);
  // Protobuf JSON accepts URL-safe and unpadded base64 too.
  for (char& c : t) {
    if (c == '-') c = '+';
    else if (c == '_') c = '/';
  }
  while (t.size() % 4) t += '=';
  if (t.empty()) return std::string{};
  std::string out(3 * t.size() / 4, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(t.data()),
                          static_cast<int>(t.size()));
  if (n < 0) return std::nullopt;
  size_t pad = 0;
  if (t.size() >= 1 && t[t.size() - 1] == '=') ++pad;
  if (t.size() >= 2 && t[t.size() - 2] == '=') ++pad;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

int64_t now_unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string rfc3339(int64_t unix_ms) {
  time_t secs = static_cast<time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, static_cast<int>(unix_ms % 1000));
}

std::string random_hex(size_t bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes)) != 1) std::abort();
  std::string out;
  for (unsigned char c : raw) out += fmt::format("{:02x}", c);
  return out;
}

std::string sha256_hex_of(std::string_view data) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), d);
  std::string out;
  for (unsigned char c : d) out += fmt::format("{:02x}", c);
  return out;
}

bool valid_key_format(std::string_view key) {
  if (key.size() != 44 || key.substr(0, 4) != "e2b_") return false;
  for (char c : key.substr(4))
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::string new_api_key() { return "e2b_" + random_hex(20); }

Result<std::vector<ApiKey>> parse_key_file(std::string_view text, std::string_view file_name) {
  std::vector<ApiKey> keys;
  size_t line_no = 0;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    ++line_no;
    if (size_t hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    std::vector<std::string_view> words;
    while (!line.empty()) {
      size_t b = line.find_first_not_of(" \t\r");
      if (b == std::string_view::npos) break;
      line = line.substr(b);
      size_t e = line.find_first_of(" \t\r");
      words.push_back(line.substr(0, e));
      line = e == std::string_view::npos ? std::string_view{} : line.substr(e);
    }
    if (words.empty()) continue;
    auto bad = [&](std::string_view why) {
      return make_error(Errc::kInvalidArgument, fmt::format("{}:{}: {} (expected \"sha256:<64 hex> [name=NAME] "
                                                            "[max_sandboxes=N]\"; add keys with `ztee serve keygen --keys {}`)",
                                                            file_name, line_no, why, file_name));
    };
    ApiKey k;
    std::string_view h = words[0];
    if (h.substr(0, 7) != "sha256:" || h.size() != 71) return bad("not a key hash");
    k.sha256 = std::string(h.substr(7));
    for (char c : k.sha256)
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return bad("the hash is not lower-case hex");
    for (size_t i = 1; i < words.size(); ++i) {
      std::string_view w = words[i];
      if (w.substr(0, 5) == "name=") {
        k.name = std::string(w.substr(5));
      } else if (w.substr(0, 14) == "max_sandboxes=") {
        std::string v(w.substr(14));
        char* end = nullptr;
        unsigned long n = std::strtoul(v.c_str(), &end, 10);
        if (v.empty() || *end || n == 0 || n > 100000) return bad("max_sandboxes must be 1..100000");
        k.max_sandboxes = static_cast<uint32_t>(n);
      } else {
        return bad(fmt::format("unknown field {}", w));
      }
    }
    if (k.name.empty()) k.name = k.sha256.substr(0, 12);
    keys.push_back(std::move(k));
  }
  return keys;
}

Result<std::string> gunzip(std::string_view data, size_t max_out) {
  z_stream z{};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) return make_error(Errc::kNoMemory, "inflateInit2 failed");
  std::string out;
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  char buf[65536];
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof buf;
    rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&z);
      return make_error(Errc::kInvalidArgument, fmt::format("malformed gzip body: {}", z.msg ? z.msg : "truncated"));
    }
    out.append(buf, sizeof buf - z.avail_out);
    if (out.size() > max_out) {
      inflateEnd(&z);
      return make_error(Errc::kInvalidArgument, fmt::format("gzip body inflates to over {} bytes", max_out));
    }
    if (rc == Z_OK && z.avail_in == 0 && z.avail_out != 0) {
      inflateEnd(&z);
      return make_error(Errc::kInvalidArgument, "malformed gzip body: truncated");
    }
  }
  inflateEnd(&z);
  return out;
}

std::string multipart_boundary(std::string_view ct) {
  size_t semi = ct.find(';');
  std::string type(ct.substr(0, semi));
  while (!type.empty() && type.back() == ' ') type.pop_back();
  for (char& c : type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (type != "multipart/form-data" || semi == std::string_view::npos) return {};
  std::string_view rest = ct.substr(semi + 1);
  while (!rest.empty()) {
    size_t b = rest.find_first_not_of(" \t;");
    if (b == std::string_view::npos) break;
    rest = rest.substr(b);
    size_t e = rest.find(';');
    std::string_view param = rest.substr(0, e);
    rest = e == std::string_view::npos ? std::string_view{} : rest.substr(e);
    if (param.size() > 9 && (param.substr(0, 9) == "boundary=" || param.substr(0, 9) == "Boundary=")) {
      std::string_view v = param.substr(9);
      if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
      if (v.empty() || v.size() > 70) return {};  // RFC 2046: 1..70 characters
      return std::string(v);
    }
  }
  return {};
}

// The value of a parameter (name="x" or filename="y") in a
// Content-Disposition header value.
static std::string disposition_param(std::string_view v, std::string_view key) {
  size_t pos = 0;
  while ((pos = v.find(key, pos)) != std::string_view::npos) {
    bool boundary_ok = pos == 0 || v[pos - 1] == ' ' || v[pos - 1] == ';' || v[pos - 1] == '\t';
    size_t after = pos + key.size();
    if (boundary_ok && after < v.size() && v[after] == '=') {
      std::string_view rest = v.substr(after + 1);
      if (!rest.empty() && rest.front() == '"') {
        std::string out;
        for (size_t i = 1; i < rest.size(); ++i) {
          if (rest[i] == '\\' && i + 1 < rest.size()) out += rest[++i];
          else if (rest[i] == '"') return out;
          else out += rest[i];
        }
        return out;
      }
      size_t e = rest.find(';');
      return std::string(rest.substr(0, e));
    }
    pos = after;
  }
  return {};
}

Result<std::vector<FormPart>> parse_multipart(std::string_view body, std::string_view boundary) {
  auto bad = [](std::string_view why) {
    return make_error(Errc::kInvalidArgument, fmt::format("malformed multipart/form-data body: {}", why));
  };
  std::string delim = "--" + std::string(boundary);
  std::vector<FormPart> parts;
  size_t pos = body.find(delim);
  if (pos == std::string_view::npos) return bad("no boundary line");
  pos += delim.size();
  std::string next_delim = "\r\n" + delim;
  for (;;) {
    if (body.substr(pos, 2) == "--") return parts;  // closing delimiter
    if (body.substr(pos, 2) != "\r\n") return bad("boundary line not followed by CRLF");
    pos += 2;
    size_t hdr_end = body.find("\r\n\r\n", pos);
    if (hdr_end == std::string_view::npos) return bad("part headers without an end");
    std::string_view headers = body.substr(pos, hdr_end - pos);
    if (headers.size() > 16384) return bad("part headers too large");
    FormPart part;
    bool has_disposition = false;
    while (!headers.empty()) {
      size_t nl = headers.find("\r\n");
      std::string_view h = headers.substr(0, nl);
      headers = nl == std::string_view::npos ? std::string_view{} : headers.substr(nl + 2);
      size_t colon = h.find(':');
      if (colon == std::string_view::npos) return bad("part header without ':'");
      std::string name(h.substr(0, colon));
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::string_view value = h.substr(colon + 1);
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
      if (name == "content-disposition") {
        has_disposition = true;
        part.name = disposition_param(value, "name");
        part.filename = disposition_param(value, "filename");
      }
    }
    if (!has_disposition) return bad("part without Content-Disposition");
    size_t data_begin = hdr_end + 4;
    size_t data_end = body.find(next_delim, data_begin);
    if (data_end == std::string_view::npos) return bad("part without a closing boundary");
    part.data = std::string(body.substr(data_begin, data_end - data_begin));
    parts.push_back(std::move(part));
    if (parts.size() > 1000) return bad("more than 1000 parts");
    pos = data_end + next_delim.size();
  }
}

}  // namespace ztee::serve
