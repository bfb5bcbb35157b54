#include "agent/replies.hpp"

#include "agent/json.hpp"

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

}  // namespace ztee::detail
