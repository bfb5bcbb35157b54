#include "agent/replies.hpp"

#include "agent/json.hpp"
#include "agent/protocol.hpp"

#include <algorithm>
#include <optional>
#include <string>

namespace ztee::detail {

namespace {

Error malformed(const char* what) { return make_error(Errc::kProtocol, std::string("malformed ") + what + " reply"); }

bool parse_object(simdjson::dom::parser& p, std::string_view payload, simdjson::dom::object* out) {
  simdjson::dom::element doc;
  if (p.parse(payload.data(), payload.size()).get(doc)) return false;
  return doc.get_object().get(*out) == simdjson::SUCCESS;
}

FileType file_type_from(std::string_view t) {
  if (t == "file") return FileType::kFile;
  if (t == "dir") return FileType::kDir;
  if (t == "symlink") return FileType::kSymlink;
  return FileType::kOther;
}

bool parse_file_info(simdjson::dom::object o, FileInfo* fi) {
  auto type = json_str(o, "type");
  auto size = json_int(o, "size");
  auto mode = json_int(o, "mode");
  if (!type || !size || !mode || *size < 0 || *mode < 0 || *mode > 07777777) return false;
  fi->type = file_type_from(*type);
  fi->size = static_cast<uint64_t>(*size);
  fi->mode = static_cast<uint32_t>(*mode) & 07777;
  fi->mtime_ns = json_int(o, "mtime_ns").value_or(0);
  return true;
}

std::optional<std::string> unhex(std::string_view h) {
  if (h.size() % 2) return std::nullopt;
  std::string out;
  out.reserve(h.size() / 2);
  auto v = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; };
  for (size_t i = 0; i < h.size(); i += 2) {
    int a = v(h[i]), b = v(h[i + 1]);
    if (a < 0 || b < 0) return std::nullopt;
    out.push_back(static_cast<char>(a * 16 + b));
  }
  return out;
}

// "a/b" (relative) or "/a/b" (absolute): no empty, "." or ".." component, no NUL.
bool clean_path(std::string_view p, bool absolute) {
  if (p.empty() || p.size() > 4096 || p.find('\0') != std::string_view::npos) return false;
  if (absolute != (p[0] == '/')) return false;
  if (absolute) p.remove_prefix(1);
  while (true) {
    size_t j = p.find('/');
    std::string_view c = p.substr(0, j);
    if (c.empty() || c == "." || c == "..") return false;
    if (j == std::string_view::npos) return true;
    p.remove_prefix(j + 1);
  }
}

}  // namespace

Result<ExitInfo> parse_exit(simdjson::dom::parser& p, std::string_view payload) {
  simdjson::dom::object o;
  if (!parse_object(p, payload, &o)) return malformed("EXIT");
  auto code = json_int(o, "exit_code");
  auto sig = json_int(o, "signal");
  if (!code || !sig || *code < -1 || *code > 255 || *sig < 0 || *sig > 64) return malformed("EXIT");
  ExitInfo e;
  e.exit_code = static_cast<int>(*code);
  e.signal = static_cast<int>(*sig);
  e.timed_out = json_bool(o, "timed_out").value_or(false);
  e.truncated = json_bool(o, "truncated").value_or(false);
  auto dur = json_int(o, "duration_us");
  e.duration_us = dur && *dur > 0 ? static_cast<uint64_t>(*dur) : 0;
  return e;
}

Result<uint64_t> parse_stdin_ack(simdjson::dom::parser& p, std::string_view payload) {
  simdjson::dom::object o;
  if (!parse_object(p, payload, &o)) return malformed("STDIN_ACK");
  auto n = json_int(o, "bytes");
  if (!n || *n < 1 || *n > static_cast<int64_t>(proto::kStdinWindow)) return malformed("STDIN_ACK");
  return static_cast<uint64_t>(*n);
}

Result<GuestError> parse_guest_error(simdjson::dom::parser& p, std::string_view payload) {
  simdjson::dom::object o;
  if (!parse_object(p, payload, &o)) return malformed("ERROR");
  GuestError g;
  int64_t e = json_int(o, "errno").value_or(0);
  g.sys_errno = (e > 0 && e < 4096) ? static_cast<int>(e) : 0;
  std::string_view msg = json_str(o, "message").value_or("unknown error");
  g.message = std::string(msg.substr(0, kMaxGuestMessage));
  return g;
}

bool parse_hello(simdjson::dom::parser& p, std::string_view payload) {
  simdjson::dom::object o;
  return parse_object(p, payload, &o) && json_int(o, "protocol").has_value();
}

Result<FileInfo> parse_stat(simdjson::dom::parser& p, std::string_view payload, std::string_view path) {
  simdjson::dom::object o;
  FileInfo fi;
  fi.name = std::string(path);
  if (!parse_object(p, payload, &o) || !parse_file_info(o, &fi)) return malformed("FILE_STAT");
  return fi;
}

Result<std::vector<FileInfo>> parse_list(simdjson::dom::parser& p, std::string_view payload) {
  simdjson::dom::object o;
  simdjson::dom::array entries;
  if (!parse_object(p, payload, &o) || o["entries"].get_array().get(entries)) return malformed("FILE_LIST");
  std::vector<FileInfo> out;
  for (auto e : entries) {
    simdjson::dom::object eo;
    FileInfo fi;
    auto name = e.get_object().get(eo) ? std::nullopt : json_str(eo, "name");
    // A name is one path component: never empty, ".", ".." or containing '/' or NUL.
    if (!name || name->empty() || *name == "." || *name == ".." ||
        name->find_first_of(std::string_view("/\0", 2)) != std::string_view::npos || !parse_file_info(eo, &fi))
      return malformed("FILE_LIST");
    fi.name = std::string(*name);
    out.push_back(std::move(fi));
  }
  return out;
}

Result<std::vector<Change>> parse_diff(simdjson::dom::parser& p, std::string_view data,
                                       const std::vector<std::string>& mounts) {
  simdjson::dom::element doc;
  simdjson::dom::array arr;
  if (p.parse(data.data(), data.size()).get(doc) || doc.get_array().get(arr)) return malformed("DIFF");
  std::vector<Change> out;
  for (auto e : arr) {
    simdjson::dom::object o;
    if (e.get_object().get(o)) return malformed("DIFF");
    Change c;
    auto kind = json_str(o, "kind");
    auto type = json_str(o, "type");
    if (!kind || !type) return malformed("DIFF");
    if (*kind == "created")
      c.kind = Change::Kind::kCreated;
    else if (*kind == "modified")
      c.kind = Change::Kind::kModified;
    else if (*kind == "deleted")
      c.kind = Change::Kind::kDeleted;
    else
      return malformed("DIFF");
    c.type = file_type_from(*type);
    if (auto m = json_str(o, "mount")) {
      if (std::find(mounts.begin(), mounts.end(), *m) == mounts.end()) return malformed("DIFF");
      c.mount = std::string(*m);
    }
    if (auto path = json_str(o, "path"))
      c.path = std::string(*path);
    else if (auto h = json_str(o, "path_hex"); h && unhex(*h))
      c.path = *unhex(*h);
    if (!clean_path(c.path, c.mount.empty())) return malformed("DIFF");
    if (c.kind != Change::Kind::kDeleted) {
      auto mode = json_int(o, "mode");
      if (!mode || *mode < 0 || *mode > 07777) return malformed("DIFF");
      c.mode = static_cast<uint32_t>(*mode);
      auto size = json_int(o, "size");
      if (size && *size < 0) return malformed("DIFF");
      c.size = size ? static_cast<uint64_t>(*size) : 0;
      if (c.type == FileType::kFile) {
        auto sha = json_str(o, "sha256");
        if (!sha || sha->size() != 64 || !unhex(*sha)) return malformed("DIFF");
        c.sha256 = std::string(*sha);
      }
      if (c.type == FileType::kSymlink) {
        if (auto t = json_str(o, "target"))
          c.link_target = std::string(*t);
        else if (auto th = json_str(o, "target_hex"); th && unhex(*th))
          c.link_target = *unhex(*th);
        else
          return malformed("DIFF");
        if (c.link_target.empty() || c.link_target.size() > 4096) return malformed("DIFF");
      }
    }
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace ztee::detail
