// The audit log: hash-chained JSON Lines, optionally HMAC'd, appended under
// flock so several processes keep one chain, rotated without breaking it.
#include <ztee/policy.hpp>

#include "agent/json.hpp"
#include "image/image.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <thread>

namespace ztee {

namespace {

constexpr std::string_view kZeroHash = "0000000000000000000000000000000000000000000000000000000000000000";
constexpr std::string_view kHmacField = ",\"hmac\":\"";

std::string hex(const unsigned char* p, size_t n) { return detail::hex_lower(std::string_view(reinterpret_cast<const char*>(p), n)); }

std::string hmac_hex(std::string_view key, std::string_view s) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(s.data()), s.size(),
       md, &len);
  return hex(md, len);
}

std::string utc_now() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t{};
  gmtime_r(&ts.tv_sec, &t);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", t.tm_year + 1900, t.tm_mon + 1, t.tm_mday, t.tm_hour,
                     t.tm_min, t.tm_sec, ts.tv_nsec / 1000);
}

// The last complete line of fd's file (without its newline), "" if none.
Result<std::string> last_line(int fd, off_t size) {
  std::string tail;
  off_t pos = size;
  constexpr off_t kStep = 4096;
  while (pos > 0) {
    off_t start = pos > kStep ? pos - kStep : 0;
    std::string chunk(static_cast<size_t>(pos - start), '\0');
    ssize_t n = pread(fd, chunk.data(), chunk.size(), start);
    if (n != static_cast<ssize_t>(chunk.size()))
      return make_error(Errc::kIo, "audit log: cannot read its last record", errno);
    tail.insert(0, chunk);
    pos = start;
    // Skip the final newline, then look for the one before the last line.
    size_t end = tail.size();
    if (end > 0 && tail[end - 1] == '\n') --end;
    size_t nl = tail.rfind('\n', end == 0 ? 0 : end - 1);
    if (nl != std::string::npos && nl < end) return tail.substr(nl + 1, end - nl - 1);
    if (pos == 0) return tail.substr(0, end);
  }
  return std::string();
}

std::optional<uint64_t> seq_of(std::string_view line) {
  simdjson::dom::parser p;
  simdjson::dom::element el;
  if (p.parse(line.data(), line.size()).get(el)) return std::nullopt;
  uint64_t seq = 0;
  if (el["seq"].get_uint64().get(seq)) return std::nullopt;
  return seq;
}

std::string rotated_name(const std::string& path, int n) { return fmt::format("{}.{}", path, n); }

int highest_rotation(const std::string& path) {
  int n = 0;
  struct stat st{};
  while (stat(rotated_name(path, n + 1).c_str(), &st) == 0) ++n;
  return n;
}

}  // namespace

namespace detail {

class AuditLogImpl {
 public:
  explicit AuditLogImpl(AuditOptions o) : opts(std::move(o)) {}
  ~AuditLogImpl() {
    {
      std::lock_guard lk(mu);
      stop = true;
    }
    cv.notify_all();
    if (flusher.joinable()) flusher.join();
    if (fd >= 0) {
      if ((dirty || unsynced) && opts.durability != Durability::kNone) fdatasync(fd);
      close(fd);
    }
  }

  Result<void> open_file() {
    int f = ::open(opts.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (f < 0) return make_error(Errc::kIo, fmt::format("audit log {}: cannot open it: {}", opts.path, strerror(errno)), errno);
    if (fd >= 0) {
      if (unsynced) fdatasync(fd);  // deferred records of the file we leave
      unsynced = false;
      close(fd);
    }
    fd = f;
    known_size = -1;  // re-read the tail on the next append
    return {};
  }

  // Called with the flock held: brings last_hash/last_seq up to the file's end.
  Result<void> sync_tail(off_t size) {
    if (size == known_size) return {};
    std::string line;
    if (size > 0) {
      int rfd = ::open(opts.path.c_str(), O_RDONLY | O_CLOEXEC);
      if (rfd < 0) return make_error(Errc::kIo, fmt::format("audit log {}: cannot read it", opts.path), errno);
      auto l = last_line(rfd, size);
      close(rfd);
      if (!l) return std::move(l).error();
      line = std::move(*l);
    } else if (int n = highest_rotation(opts.path); n > 0) {
      // A fresh file after rotation continues the chain of the newest rotated one.
      int rfd = ::open(rotated_name(opts.path, n).c_str(), O_RDONLY | O_CLOEXEC);
      if (rfd >= 0) {
        struct stat st{};
        fstat(rfd, &st);
        auto l = last_line(rfd, st.st_size);
        close(rfd);
        if (l) line = std::move(*l);
      }
    }
    if (line.empty()) {
      last_hash = std::string(kZeroHash);
      last_seq = 0;
    } else {
      auto seq = seq_of(line);
      if (!seq)
        return make_error(Errc::kInvalidArgument,
                          fmt::format("audit log {}: its last record is not a libztee audit record; refusing to append "
                                      "(run `ztee audit verify {}`)", opts.path, opts.path));
      last_hash = detail::sha256_hex(line);
      last_seq = *seq;
    }
    known_size = size;
    return {};
  }

  Result<uint64_t> append(std::string_view event, std::string_view trace, std::string_view fields, bool defer = false) {
    std::lock_guard lk(mu);
    defer_sync = defer;
    for (int attempt = 0;; ++attempt) {
      if (flock(fd, LOCK_EX) != 0) return make_error(Errc::kIo, "audit log: flock failed", errno);
      // Another process may have rotated the file: our fd then names the old one.
      struct stat mine{}, now{};
      fstat(fd, &mine);
      if (attempt < 3 && (stat(opts.path.c_str(), &now) != 0 || now.st_ino != mine.st_ino || now.st_dev != mine.st_dev)) {
        flock(fd, LOCK_UN);
        if (auto r = open_file(); !r) return std::move(r).error();
        continue;
      }
      auto r = write_locked(mine.st_size, event, trace, fields);
      flock(fd, LOCK_UN);
      if (r) {
        dirty = true;
        if (opts.durability == Durability::kBatch) cv.notify_all();
      }
      return r;
    }
  }

  Result<uint64_t> write_locked(off_t size, std::string_view event, std::string_view trace, std::string_view fields) {
    if (auto r = sync_tail(size); !r) return std::move(r).error();
    uint64_t seq = last_seq + 1;
    std::string line;
    line.reserve(160 + fields.size());
    line += fmt::format("{{\"seq\":{},\"ts\":\"{}\",\"trace\":", seq, utc_now());
    detail::json_append_string(line, trace);
    line += ",\"event\":";
    detail::json_append_string(line, event);
    if (!fields.empty()) {
      line += ',';
      line += fields;
    }
    line += ",\"prev\":\"";
    line += last_hash;
    line += "\"}";
    if (!opts.hmac_key.empty()) {
      std::string mac = hmac_hex(opts.hmac_key, line);
      line.pop_back();
      line += kHmacField;
      line += mac;
      line += "\"}";
    }
    std::string hash = detail::sha256_hex(line);
    line += '\n';
    ssize_t n = ::write(fd, line.data(), line.size());
    if (n != static_cast<ssize_t>(line.size())) {
      int e = errno;
      // A partial record would break the chain for everyone: cut it off again.
      if (n > 0) ftruncate(fd, size);
      known_size = -1;
      return make_error(Errc::kIo, fmt::format("audit log {}: write failed: {}", opts.path, strerror(e)), e);
    }
    if (opts.durability == Durability::kFsync) {
      if (defer_sync) {
        unsynced = true;
      } else if (fdatasync(fd) != 0) {
        return make_error(Errc::kIo, fmt::format("audit log {}: fdatasync failed", opts.path), errno);
      } else {
        unsynced = false;
      }
    }
    last_hash = std::move(hash);
    last_seq = seq;
    known_size = size + static_cast<off_t>(line.size());
    if (opts.rotate_bytes > 0 && static_cast<uint64_t>(known_size) >= opts.rotate_bytes) rotate_locked();
    return seq;
  }

  void rotate_locked() {
    if (opts.durability != Durability::kNone) fdatasync(fd);
    unsynced = false;
    int n = highest_rotation(opts.path) + 1;
    if (rename(opts.path.c_str(), rotated_name(opts.path, n).c_str()) != 0) return;  // retried next append
    // The next append (ours or another process's) sees the inode change and
    // starts the new file, continuing from the rotated file's last record.
  }

  void flush_loop() {
    std::unique_lock lk(mu);
    while (!stop) {
      cv.wait(lk, [&] { return stop || dirty; });
      if (stop) break;
      cv.wait_for(lk, std::chrono::milliseconds(opts.batch_ms), [&] { return stop; });
      if (dirty && fd >= 0) {
        // Synced on a duplicate with the lock released, so appends go on meanwhile.
        int f = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
        dirty = false;
        lk.unlock();
        if (f >= 0) {
          fdatasync(f);
          ::close(f);
        }
        lk.lock();
      }
    }
  }

  AuditOptions opts;
  std::mutex mu;
  std::condition_variable cv;
  std::thread flusher;
  bool stop = false;
  bool dirty = false;
  bool defer_sync = false;  // the append in progress is deferred
  bool unsynced = false;    // kFsync: a deferred record is not yet on disk
  int fd = -1;
  off_t known_size = -1;
  std::string last_hash;
  uint64_t last_seq = 0;
};

}  // namespace detail

Result<AuditLog> AuditLog::open(AuditOptions opts) {
  if (opts.path.empty()) return make_error(Errc::kInvalidArgument, "audit log: path is empty");
  if (opts.durability == Durability::kBatch && opts.batch_ms == 0) opts.batch_ms = 100;
  auto impl = std::make_shared<detail::AuditLogImpl>(std::move(opts));
  if (auto r = impl->open_file(); !r) return std::move(r).error();
  if (impl->opts.durability == Durability::kBatch) impl->flusher = std::thread([p = impl.get()] { p->flush_loop(); });
  return AuditLog(std::move(impl));
}

Result<uint64_t> AuditLog::append(std::string_view event, std::string_view trace_id, std::string_view fields) {
  if (!impl_) return make_error(Errc::kClosed, "audit log: not open");
  return impl_->append(event, trace_id, fields);
}

Result<uint64_t> AuditLog::append_deferred(std::string_view event, std::string_view trace_id, std::string_view fields) {
  if (!impl_) return make_error(Errc::kClosed, "audit log: not open");
  return impl_->append(event, trace_id, fields, true);
}

Result<void> AuditLog::commit() {
  if (!impl_) return make_error(Errc::kClosed, "audit log: not open");
  std::lock_guard lk(impl_->mu);
  if (impl_->opts.durability != Durability::kFsync || !impl_->unsynced) return {};
  if (fdatasync(impl_->fd) != 0) return make_error(Errc::kIo, "audit log: fdatasync failed", errno);
  impl_->unsynced = false;
  return {};
}

Result<void> AuditLog::flush() {
  if (!impl_) return make_error(Errc::kClosed, "audit log: not open");
  std::lock_guard lk(impl_->mu);
  if (fdatasync(impl_->fd) != 0) return make_error(Errc::kIo, "audit log: fdatasync failed", errno);
  impl_->dirty = false;
  impl_->unsynced = false;
  return {};
}

const std::string& AuditLog::path() const {
  static const std::string empty;
  return impl_ ? impl_->opts.path : empty;
}

AuditVerifyReport verify_audit_log(const std::vector<std::string>& files, std::string_view key) {
  AuditVerifyReport rep;
  struct Rec {
    std::string line, where;
    uint64_t seq = 0;
    bool parsed = false;
  };
  std::vector<Rec> recs;
  simdjson::dom::parser parser;
  for (const auto& file : files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
      rep.problem = fmt::format("{}: cannot open it", file);
      return rep;
    }
    uint64_t lineno = 0;
    for (std::string line; std::getline(in, line);) {
      Rec r;
      r.where = fmt::format("{} line {}", file, ++lineno);
      if (in.eof()) {
        rep.problem = fmt::format("{}: the last record has no newline: a write was cut off, or the file was edited", r.where);
        return rep;
      }
      simdjson::dom::element el;
      r.parsed = !parser.parse(line.data(), line.size()).get(el) && !el["seq"].get_uint64().get(r.seq);
      r.line = std::move(line);
      recs.push_back(std::move(r));
    }
  }
  std::string prev_hash(kZeroHash);
  uint64_t prev_seq = 0;
  for (size_t i = 0; i < recs.size(); ++i) {
    const Rec& r = recs[i];
    simdjson::dom::element el;
    std::string_view prev;
    if (!r.parsed || parser.parse(r.line.data(), r.line.size()).get(el) || el["prev"].get_string().get(prev)) {
      rep.problem = fmt::format("{}: not a JSON record with \"seq\" and \"prev\": edited or inserted", r.where);
      return rep;
    }
    uint64_t want = prev_seq + 1;
    if (r.seq != want) {
      auto later = std::find_if(recs.begin() + static_cast<long>(i) + 1, recs.end(),
                                [&](const Rec& x) { return x.parsed && x.seq == want; });
      if (r.seq < want)
        rep.problem = fmt::format("record {} ({}) follows record {}: inserted (or reordered)", r.seq, r.where, prev_seq);
      else if (later != recs.end())
        rep.problem = fmt::format("record {} ({}) is out of place: record {} comes later ({}): reordered", r.seq, r.where,
                                  want, later->where);
      else
        rep.problem = fmt::format("record {} ({}): records {}..{} are missing: removed", r.seq, r.where, want, r.seq - 1);
      return rep;
    }
    if (!key.empty()) {
      size_t pos = r.line.rfind(kHmacField);
      if (pos == std::string::npos) {
        rep.problem = fmt::format("record {} ({}): no \"hmac\": inserted or rewritten without the key", r.seq, r.where);
        return rep;
      }
      std::string body = r.line.substr(0, pos) + "}";
      std::string_view mac(r.line);
      mac = mac.substr(pos + kHmacField.size());
      if (mac.size() < 2 || mac.substr(mac.size() - 2) != "\"}" || mac.substr(0, mac.size() - 2) != hmac_hex(key, body)) {
        rep.problem = fmt::format("record {} ({}): its HMAC does not match: edited (or a different key)", r.seq, r.where);
        return rep;
      }
    }
    if (prev != prev_hash) {
      rep.problem = fmt::format("record {} ({}): \"prev\" is not the hash of record {}: record {} was edited "
                                "(or this record's \"prev\")", r.seq, r.where, prev_seq, prev_seq);
      return rep;
    }
    prev_hash = detail::sha256_hex(r.line);
    prev_seq = r.seq;
    ++rep.records;
  }
  rep.ok = true;
  return rep;
}

}  // namespace ztee
