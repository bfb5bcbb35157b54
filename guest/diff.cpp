// DIFF: what changed in the overlays' writable layers (guest/README.md).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

// The low-level SHA-256 interface links only the digest itself into the
// static agent (the EVP interface would pull in the provider machinery, +3 MB).
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "agent.hpp"
#include "request.hpp"

namespace ztee::guest {

using nlohmann::json;
using proto::MsgType;

namespace {

constexpr size_t kMaxEntries = 100000;

struct DiffError {
  int err;
  std::string message;
};

const char* type_name(mode_t m) {
  if (S_ISREG(m)) return "file";
  if (S_ISDIR(m)) return "dir";
  if (S_ISLNK(m)) return "symlink";
  return "other";
}

bool valid_utf8(const std::string& s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (len == 0 || i + len > n) return false;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    i += len;
  }
  return true;
}

std::string hex(const unsigned char* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s(n * 2, '0');
  for (size_t i = 0; i < n; ++i) {
    s[2 * i] = d[p[i] >> 4];
    s[2 * i + 1] = d[p[i] & 15];
  }
  return s;
}

// sha256 of a regular file below `dir` (never following a symlink).
std::string file_sha256(int dir, const std::string& name, const std::string& what) {
  Fd fd(::openat(dir, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd.valid()) throw DiffError{errno, errno_text("diff: open " + what, errno)};
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw DiffError{errno, errno_text("diff: read " + what, errno)};
    if (n == 0) break;
    SHA256_Update(&ctx, buf, static_cast<size_t>(n));
  }
  unsigned char md[SHA256_DIGEST_LENGTH];
  unsigned int len = SHA256_DIGEST_LENGTH;
  SHA256_Final(md, &ctx);
  return hex(md, len);
}

std::string link_target(int dir, const std::string& name, const std::string& what) {
  char buf[4096];
  ssize_t n = ::readlinkat(dir, name.c_str(), buf, sizeof buf);
  if (n < 0) throw DiffError{errno, errno_text("diff: readlink " + what, errno)};
  return std::string(buf, static_cast<size_t>(n));
}

struct Walker {
  const Layer& layer;
  const std::vector<std::string>& skip_dirs;  // root layer: mount points and their parents
  json entries = json::array();

  std::string shown(const std::string& rel) const {
    return layer.mount.empty() ? "/" + rel : rel;
  }

  void emit(const char* kind, mode_t type, const std::string& rel, const struct stat* st, int dir,
            const std::string& name, std::string sha = {}) {
    if (entries.size() >= kMaxEntries)
      throw DiffError{E2BIG, "diff: more than " + std::to_string(kMaxEntries) + " changed entries"};
    json e = json::object();
    e["kind"] = kind;
    e["type"] = type_name(type);
    std::string p = shown(rel);
    if (valid_utf8(p))
      e["path"] = p;
    else
      e["path_hex"] = hex(reinterpret_cast<const unsigned char*>(p.data()), p.size());
    if (!layer.mount.empty()) e["mount"] = layer.mount;
    if (st) {
      e["mode"] = st->st_mode & 07777;
      if (S_ISREG(st->st_mode) || S_ISLNK(st->st_mode)) e["size"] = static_cast<uint64_t>(st->st_size);
      if (S_ISREG(st->st_mode)) e["sha256"] = sha.empty() ? file_sha256(dir, name, shown(rel)) : sha;
      if (S_ISLNK(st->st_mode)) {
        std::string t = link_target(dir, name, shown(rel));
        if (valid_utf8(t))
          e["target"] = t;
        else
          e["target_hex"] = hex(reinterpret_cast<const unsigned char*>(t.data()), t.size());
      }
    }
    entries.push_back(std::move(e));
  }

  // Everything below a lower directory that the upper layer hides.
  void deleted_below(int lower_dir, const std::string& rel, const std::vector<std::string>& keep) {
    for (auto& [name, st] : list(lower_dir)) {
      if (std::find(keep.begin(), keep.end(), name) != keep.end()) continue;
      std::string r = rel + "/" + name;
      if (S_ISDIR(st.st_mode)) {
        Fd sub(::openat(lower_dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (sub.valid()) deleted_below(sub.get(), r, {});
      }
      emit("deleted", st.st_mode, r, nullptr, -1, name);
    }
  }

  static std::vector<std::pair<std::string, struct stat>> list(int dir) {
    std::vector<std::pair<std::string, struct stat>> out;
    int d = ::dup(dir);
    if (d < 0) throw DiffError{errno, errno_text("diff: dup", errno)};
    DIR* dp = ::fdopendir(d);
    if (!dp) {
      ::close(d);
      throw DiffError{errno, errno_text("diff: opendir", errno)};
    }
    ::rewinddir(dp);
    while (dirent* e = ::readdir(dp)) {
      if (!std::strcmp(e->d_name, ".") || !std::strcmp(e->d_name, "..")) continue;
      struct stat st{};
      if (::fstatat(dir, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone meanwhile
      out.emplace_back(e->d_name, st);
    }
    ::closedir(dp);
    std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.first < b.first; });
    return out;
  }

  void walk(int upper, int lower, const std::string& rel) {
    for (auto& [name, st] : list(upper)) {
      std::string r = rel.empty() ? name : rel + "/" + name;
      struct stat lst{};
      bool in_lower = lower >= 0 && ::fstatat(lower, name.c_str(), &lst, AT_SYMLINK_NOFOLLOW) == 0;
      if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) {  // whiteout: deleted
        if (!in_lower) continue;
        if (S_ISDIR(lst.st_mode)) {
          Fd sub(::openat(lower, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
          if (sub.valid()) deleted_below(sub.get(), r, {});
        }
        emit("deleted", lst.st_mode, r, nullptr, -1, name);
        continue;
      }
      if (S_ISDIR(st.st_mode)) {
        Fd sub(::openat(upper, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!sub.valid()) throw DiffError{errno, errno_text("diff: open " + shown(r), errno)};
        char v[4] = {};
        bool opaque = ::fgetxattr(sub.get(), "trusted.overlay.opaque", v, sizeof v) == 1 && v[0] == 'y';
        bool lower_dir = in_lower && S_ISDIR(lst.st_mode);
        bool skip = std::find(skip_dirs.begin(), skip_dirs.end(), "/" + r) != skip_dirs.end();
        if (!skip) {
          if (!lower_dir)
            emit(in_lower ? "modified" : "created", st.st_mode, r, &st, upper, name);
          else if ((st.st_mode & 07777) != (lst.st_mode & 07777))
            emit("modified", st.st_mode, r, &st, upper, name);
        }
        Fd lsub;
        if (lower_dir) lsub.reset(::openat(lower, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (opaque && lsub.valid()) {
          std::vector<std::string> keep;
          for (auto& c : list(sub.get())) keep.push_back(c.first);
          deleted_below(lsub.get(), r, keep);
          walk(sub.get(), -1, r);
        } else {
          walk(sub.get(), lsub.valid() ? lsub.get() : -1, r);
        }
        continue;
      }
      if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) {
        emit(in_lower ? "modified" : "created", st.st_mode, r, &st, upper, name);
        continue;
      }
      if (in_lower && (st.st_mode & S_IFMT) == (lst.st_mode & S_IFMT) && st.st_mode == lst.st_mode &&
          st.st_size == lst.st_size) {
        // Copied up but maybe unchanged (touch, chown, or rewritten with the same bytes).
        if (S_ISREG(st.st_mode)) {
          std::string a = file_sha256(upper, name, shown(r));
          if (a == file_sha256(lower, name, shown(r))) continue;
          emit("modified", st.st_mode, r, &st, upper, name, a);
          continue;
        }
        if (link_target(upper, name, shown(r)) == link_target(lower, name, shown(r))) continue;
      }
      emit(in_lower ? "modified" : "created", st.st_mode, r, &st, upper, name);
    }
  }
};

}  // namespace

void Agent::handle_diff(uint32_t stream, const json& req) {
  std::string only;  // one mount's guest path; empty: all layers
  if (auto it = req.find("mount"); it != req.end()) {
    if (!it->is_string()) throw BadRequest("field \"mount\" must be a string");
    only = it->get<std::string>();
  }
  std::vector<std::string> skip;
  for (const Layer& l : layers_) {
    if (l.mount.empty()) continue;
    for (size_t p = l.mount.size(); p != std::string::npos && p > 0; p = l.mount.rfind('/', p - 1))
      skip.push_back(l.mount.substr(0, p));
  }
  bool found = only.empty();
  json all = json::array();
  try {
    for (const Layer& l : layers_) {
      if (!only.empty() && l.mount != only) continue;
      found = true;
      Walker w{l, skip};
      w.walk(l.upper.get(), l.lower.get(), "");
      for (auto& e : w.entries) all.push_back(std::move(e));
    }
  } catch (const DiffError& e) {
    return send_error(stream, e.err, e.message);
  }
  if (!found) return send_error(stream, ENOENT, "diff: no workspace mount at " + only);
  if (layers_.empty()) return send_error(stream, ENOTSUP, "diff: the agent was not started as PID 1 of a VM");
  std::string text = all.dump();
  size_t off = 0;
  do {
    size_t n = std::min<size_t>(proto::kDataChunk, text.size() - off);
    send(MsgType::kData, stream, std::string_view(text).substr(off, n), off + n >= text.size() ? proto::kFlagEof : 0);
    off += n;
  } while (off < text.size());
  send_json(MsgType::kResult, stream, json{{"entries", all.size()}, {"bytes", text.size()}});
}

}  // namespace ztee::guest
