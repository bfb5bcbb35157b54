// FILE_* requests. Local file I/O is done synchronously (tmpfs/overlay, fast);
// FILE_READ output is pumped only while the outgoing queue has room.
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "agent.hpp"
#include "request.hpp"

namespace ztee::guest {

using nlohmann::json;
using proto::MsgType;

namespace {

constexpr size_t kPumpLow = 1u << 20;

const char* type_name(mode_t m) {
  if (S_ISREG(m)) return "file";
  if (S_ISDIR(m)) return "dir";
  if (S_ISLNK(m)) return "symlink";
  return "other";
}

std::string dir_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == 0 ? "/" : path.substr(0, slash);
}

int remove_entry(const char* p, const struct stat*, int flag, struct FTW*) {
  return (flag == FTW_DP ? ::rmdir(p) : ::unlink(p)) == 0 ? 0 : -1;
}

}  // namespace

void Agent::handle_file_write(uint32_t stream, const json& req) {
  if (writes_.count(stream)) throw BadRequest("stream " + std::to_string(stream) + " already writes a file");
  auto w = std::make_unique<FileWrite>();
  w->path = req_path(req);
  w->mode = static_cast<mode_t>(opt_u64(req, "mode", 0644, 07777));
  bool append = opt_bool(req, "append", false);
  if (append) {
    w->fd.reset(::open(w->path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, w->mode));
  } else {
    w->tmp = dir_of(w->path) + "/.ztee-write." + std::to_string(stream) + ".tmp";
    ::unlink(w->tmp.c_str());
    w->fd.reset(::open(w->tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, w->mode));
  }
  if (!w->fd.valid()) return send_error(stream, errno, errno_text("open " + w->path, errno));
  writes_[stream] = std::move(w);
}

void Agent::handle_data(uint32_t stream, std::string_view data, bool eof) {
  auto it = writes_.find(stream);
  if (it == writes_.end()) return;  // the write already failed and was answered
  FileWrite& w = *it->second;
  auto fail = [&](int err, const std::string& what) {
    if (!w.tmp.empty()) ::unlink(w.tmp.c_str());
    send_error(stream, err, errno_text(what + " " + w.path, err));
    writes_.erase(stream);
  };
  while (!data.empty()) {
    ssize_t n = ::write(w.fd.get(), data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(errno, "write");
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  if (!eof) return;
  if (::fchmod(w.fd.get(), w.mode) != 0) return fail(errno, "chmod");
  if (::close(w.fd.release()) != 0) return fail(errno, "close");
  if (!w.tmp.empty() && ::rename(w.tmp.c_str(), w.path.c_str()) != 0) return fail(errno, "rename onto");
  writes_.erase(stream);
  send_json(MsgType::kResult, stream, json::object());
}

void Agent::handle_file_read(uint32_t stream, const json& req) {
  if (reads_.count(stream)) throw BadRequest("stream " + std::to_string(stream) + " already reads a file");
  auto r = std::make_unique<FileRead>();
  r->path = req_path(req);
  uint64_t max = opt_u64(req, "max", 0);
  r->fd.reset(::open(r->path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!r->fd.valid()) return send_error(stream, errno, errno_text("open " + r->path, errno));
  struct stat st{};
  if (::fstat(r->fd.get(), &st) != 0) return send_error(stream, errno, errno_text("stat " + r->path, errno));
  if (S_ISDIR(st.st_mode)) return send_error(stream, EISDIR, errno_text("read " + r->path, EISDIR));
  if (!S_ISREG(st.st_mode)) return send_error(stream, EINVAL, "read " + r->path + ": not a regular file");
  r->size = static_cast<uint64_t>(st.st_size);
  if (max > 0 && r->size > max)
    return send_error(stream, EFBIG, "read " + r->path + ": file is " + std::to_string(r->size) +
                                         " bytes, over the limit of " + std::to_string(max));
  reads_[stream] = std::move(r);
  pump_reads();
}

void Agent::pump_reads() {
  while (!reads_.empty() && port_up_ && out_.size() - out_off_ < kPumpLow) {
    for (auto it = reads_.begin(); it != reads_.end();) {
      FileRead& r = *it->second;
      uint32_t stream = it->first;
      char buf[proto::kDataChunk];
      uint64_t want = std::min<uint64_t>(sizeof buf, r.size - r.sent);
      ssize_t n = want ? ::pread(r.fd.get(), buf, want, static_cast<off_t>(r.sent)) : 0;
      if (n < 0) {
        if (errno == EINTR) continue;
        send_error(stream, errno, errno_text("read " + r.path, errno));
        it = reads_.erase(it);
        continue;
      }
      r.sent += static_cast<uint64_t>(n);
      bool done = n == 0 || r.sent >= r.size;  // n == 0: the file shrank meanwhile
      send(MsgType::kData, stream, std::string_view(buf, static_cast<size_t>(n)),
           done ? proto::kFlagEof : 0);
      if (done) {
        send_json(MsgType::kResult, stream, json{{"size", r.sent}});
        it = reads_.erase(it);
      } else {
        ++it;
      }
    }
  }
}

void Agent::handle_file_stat(uint32_t stream, const json& req) {
  std::string path = req_path(req);
  struct stat st{};
  if (::lstat(path.c_str(), &st) != 0) return send_error(stream, errno, errno_text("stat " + path, errno));
  send_json(MsgType::kResult, stream,
            json{{"type", type_name(st.st_mode)},
                 {"size", static_cast<uint64_t>(st.st_size)},
                 {"mode", st.st_mode & 07777},
                 {"mtime_ns", static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec}});
}

void Agent::handle_file_list(uint32_t stream, const json& req) {
  std::string path = req_path(req);
  DIR* d = ::opendir(path.c_str());
  if (!d) return send_error(stream, errno, errno_text("list " + path, errno));
  struct Entry {
    std::string name;
    const char* type;
    uint64_t size;
    unsigned mode;
  };
  std::vector<Entry> entries;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st{};
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // removed meanwhile
    entries.push_back({name, type_name(st.st_mode), static_cast<uint64_t>(st.st_size), st.st_mode & 07777u});
  }
  ::closedir(d);
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.name < b.name; });
  // The reply must fit one control frame; a huge directory is cut short and says so.
  json list = json::array();
  size_t bytes = 64;
  bool truncated = false;
  for (const auto& e : entries) {
    json j{{"name", e.name}, {"type", e.type}, {"size", e.size}, {"mode", e.mode}};
    size_t add = j.dump(-1, ' ', false, json::error_handler_t::replace).size() + 1;
    if (bytes + add > proto::kMaxControlPayload) {
      truncated = true;
      break;
    }
    bytes += add;
    list.push_back(std::move(j));
  }
  json reply{{"entries", std::move(list)}};
  if (truncated) reply["truncated"] = true;
  send_json(MsgType::kResult, stream, reply);
}

void Agent::handle_file_remove(uint32_t stream, const json& req) {
  std::string path = req_path(req);
  bool recursive = opt_bool(req, "recursive", false);
  if (path == "/") throw BadRequest("refusing to remove /");
  struct stat st{};
  if (::lstat(path.c_str(), &st) != 0) return send_error(stream, errno, errno_text("remove " + path, errno));
  int rc;
  if (S_ISDIR(st.st_mode))
    rc = recursive ? ::nftw(path.c_str(), remove_entry, 32, FTW_DEPTH | FTW_PHYS) : ::rmdir(path.c_str());
  else
    rc = ::unlink(path.c_str());
  if (rc != 0) return send_error(stream, errno, errno_text("remove " + path, errno));
  send_json(MsgType::kResult, stream, json::object());
}

void Agent::handle_file_mkdir(uint32_t stream, const json& req) {
  std::string path = req_path(req);
  bool parents = opt_bool(req, "parents", false);
  mode_t mode = static_cast<mode_t>(opt_u64(req, "mode", 0755, 07777));
  auto make = [&](const std::string& p, bool last) -> int {
    if (::mkdir(p.c_str(), last ? mode : 0755) == 0) return 0;
    int err = errno;
    struct stat st{};
    if (err == EEXIST && (parents || !last) && ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    return err;
  };
  if (parents) {
    for (size_t pos = path.find('/', 1); pos != std::string::npos; pos = path.find('/', pos + 1)) {
      if (int err = make(path.substr(0, pos), false))
        return send_error(stream, err, errno_text("mkdir " + path.substr(0, pos), err));
    }
  }
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  if (int err = make(p, true)) return send_error(stream, err, errno_text("mkdir " + path, err));
  send_json(MsgType::kResult, stream, json::object());
}

}  // namespace ztee::guest
