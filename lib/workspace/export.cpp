// apply_changes: every check first, then the writes.
#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include "image/image.hpp"
#include "workspace/fs.hpp"
#include "workspace/workspace.hpp"

namespace ztee::detail {

namespace {

constexpr size_t kMaxPath = 4096;
constexpr size_t kMaxName = 255;

std::vector<std::string> split(const std::string& p) {
  std::vector<std::string> out;
  size_t at = 0;
  for (;;) {
    size_t slash = p.find('/', at);
    out.push_back(p.substr(at, slash == std::string::npos ? std::string::npos : slash - at));
    if (slash == std::string::npos) break;
    at = slash + 1;
  }
  return out;
}

std::string parent_of(const std::string& p) {
  auto slash = p.rfind('/');
  return slash == std::string::npos ? "" : p.substr(0, slash);
}
std::string name_of(const std::string& p) {
  auto slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

// Printable form of a guest-sent path for messages.
std::string q(const std::string& p) {
  std::string out = "'";
  for (unsigned char c : p) {
    if (c < 0x20 || c == 0x7f || c == '\\' || c == '\'')
      out += fmt::format("\\x{:02x}", c);
    else
      out += static_cast<char>(c);
  }
  return out + "'";
}

Error refuse(Errc code, const Change& c, const std::string& why) {
  return make_error(code, fmt::format("workspace: refusing the {} {}: {}", change_kind_name(c.kind), q(c.path), why));
}

Result<void> check_path(const Change& c) {
  const std::string& p = c.path;
  if (p.empty()) return refuse(Errc::kInvalidArgument, c, "the path is empty (the mount's root itself is not exported)");
  if (p.find('\0') != std::string::npos) return refuse(Errc::kInvalidArgument, c, "the path contains a NUL byte");
  if (p.size() > kMaxPath) return refuse(Errc::kInvalidArgument, c, fmt::format("the path is longer than {} bytes", kMaxPath));
  if (p[0] == '/') return refuse(Errc::kPermission, c, "the path is absolute; changes in a mount are relative to it");
  for (const auto& comp : split(p)) {
    if (comp.empty()) return refuse(Errc::kInvalidArgument, c, "the path has an empty component ('//' or a trailing '/')");
    if (comp == "..") return refuse(Errc::kPermission, c, "the path has a '..' component");
    if (comp == ".") return refuse(Errc::kPermission, c, "the path has a '.' component");
    if (comp.size() > kMaxName) return refuse(Errc::kInvalidArgument, c, fmt::format("a path component is longer than {} bytes", kMaxName));
  }
  return {};
}

// A relative symlink target that, resolved lexically from the link's
// directory, stays inside the mount.
Result<void> check_link_target(const Change& c) {
  const std::string& t = c.link_target;
  if (t.empty()) return refuse(Errc::kInvalidArgument, c, "the symlink has an empty target");
  if (t.find('\0') != std::string::npos) return refuse(Errc::kInvalidArgument, c, "the symlink target contains a NUL byte");
  if (t.size() > kMaxPath) return refuse(Errc::kInvalidArgument, c, "the symlink target is too long");
  if (t[0] == '/') return refuse(Errc::kPermission, c, fmt::format("the symlink target {} is absolute", q(t)));
  long depth = static_cast<long>(split(c.path).size()) - 1;
  for (const auto& comp : split(t)) {
    if (comp.empty() || comp == ".") continue;
    depth += comp == ".." ? -1 : 1;
    if (depth < 0) return refuse(Errc::kPermission, c, fmt::format("the symlink target {} leaves the directory", q(t)));
  }
  return {};
}

bool is_hex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char ch : s)
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F'))) return false;
  return true;
}
std::string lower(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// What is on the host at a relative path, found one component at a time
// without following a symlink or leaving the destination's file system.
struct Probe {
  enum Kind { kOk, kSymlinkOnWay, kNotDirOnWay, kOtherFsOnWay, kMissingAncestor };
  Kind kind = kOk;
  std::string at;                   // the ancestor the kind refers to
  std::optional<HostEntry> entry;   // kOk: the entry, or nullopt if absent
};

Result<Probe> probe(int root, const std::string& dest, const std::string& rel) {
  auto comps = split(rel);
  UniqueFd cur(::fcntl(root, F_DUPFD_CLOEXEC, 0));
  if (!cur.valid()) return make_error(Errc::kIo, fmt::format("workspace: dup: {}", std::strerror(errno)), errno);
  struct stat root_st{};
  if (::fstat(root, &root_st) < 0) return make_error(Errc::kIo, fmt::format("workspace: stat {}: {}", dest, std::strerror(errno)), errno);
  std::string sofar;
  Probe p;
  for (size_t i = 0; i < comps.size(); ++i) {
    sofar += (i ? "/" : "") + comps[i];
    struct stat st{};
    if (::fstatat(cur.get(), comps[i].c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
      int e = errno;
      if (e != ENOENT)
        return make_error(Errc::kIo, fmt::format("workspace: cannot stat {}/{}: {}", dest, sofar, std::strerror(e)), e);
      if (i + 1 < comps.size()) {
        p.kind = Probe::kMissingAncestor;
        p.at = sofar;
      }
      return p;
    }
    if (i + 1 == comps.size()) {
      p.entry = host_entry_from_stat(st);
      return p;
    }
    p.at = sofar;
    if (S_ISLNK(st.st_mode)) {
      p.kind = Probe::kSymlinkOnWay;
      return p;
    }
    if (!S_ISDIR(st.st_mode)) {
      p.kind = Probe::kNotDirOnWay;
      return p;
    }
    if (st.st_dev != root_st.st_dev) {
      p.kind = Probe::kOtherFsOnWay;
      return p;
    }
    int fd = open_beneath(cur.get(), comps[i], O_PATH | O_DIRECTORY, true);
    if (fd < 0) {
      int e = errno;
      if (e == ELOOP) p.kind = Probe::kSymlinkOnWay;
      else if (e == ENOTDIR) p.kind = Probe::kNotDirOnWay;
      else if (e == EXDEV) p.kind = Probe::kOtherFsOnWay;
      else if (e == ENOENT) p.kind = Probe::kMissingAncestor;
      else return make_error(Errc::kIo, fmt::format("workspace: cannot open {}/{}: {}", dest, sofar, std::strerror(e)), e);
      return p;
    }
    cur.reset(fd);
  }
  return p;
}

// Whether the host entry now is what `base` recorded (both absent counts).
bool unchanged(const HostTree& base, const std::string& rel, const std::optional<HostEntry>& now) {
  auto it = base.find(rel);
  if (it == base.end() || !now) return it == base.end() && !now;
  const HostEntry& b = it->second;
  if (b.type != now->type || b.ino != now->ino || b.mode != now->mode) return false;
  if (b.type == FileType::kDir) return true;
  return b.size == now->size && b.mtime_ns == now->mtime_ns && b.ctime_ns == now->ctime_ns && b.nlink == now->nlink;
}

std::string tmp_name() {
  unsigned char r[8];
  if (::getrandom(r, sizeof r, 0) != static_cast<ssize_t>(sizeof r))
    for (size_t i = 0; i < sizeof r; ++i) r[i] = static_cast<unsigned char>(::rand());  // never reached in practice
  std::string s = ".ztee-tmp-";
  for (unsigned char c : r) s += fmt::format("{:02x}", c);
  return s;
}

struct Planned {
  const Change* change;
  std::optional<HostEntry> host;  // at check time
  std::string content;            // regular files
};

class Applier {
 public:
  Applier(int root, const std::string& dest, const HostTree* base) : root_(root), dest_(dest), base_(base) {}

  Result<void> mkdir(const std::string& rel, uint32_t mode) {
    auto parent = open_parent(rel);
    if (!parent) return std::move(parent).error();
    if (::mkdirat(parent->get(), name_of(rel).c_str(), mode) < 0) {
      int e = errno;
      if (e == EEXIST && !base_) {  // separate destination: an existing directory is kept
        struct stat st{};
        if (::fstatat(parent->get(), name_of(rel).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) return {};
      }
      return fail(rel, "create the directory", e);
    }
    touched_.insert(parent_of(rel));
    return {};
  }

  Result<void> write_file(const std::string& rel, const std::string& content, uint32_t mode) {
    auto parent = open_parent(rel);
    if (!parent) return std::move(parent).error();
    std::string tmp = tmp_name();
    UniqueFd fd(::openat(parent->get(), tmp.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd.valid()) return fail(rel, "create a temporary file beside", errno);
    size_t off = 0;
    while (off < content.size()) {
      ssize_t n = ::write(fd.get(), content.data() + off, content.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return unlink_tmp(parent->get(), tmp, rel, "write", n < 0 ? errno : EIO);
      off += static_cast<size_t>(n);
    }
    if (::fchmod(fd.get(), mode & 0777) < 0) return unlink_tmp(parent->get(), tmp, rel, "chmod", errno);
    if (::fsync(fd.get()) < 0) return unlink_tmp(parent->get(), tmp, rel, "fsync", errno);
    fd.reset();
    return rename_into(parent->get(), tmp, rel);
  }

  Result<void> write_symlink(const std::string& rel, const std::string& target) {
    auto parent = open_parent(rel);
    if (!parent) return std::move(parent).error();
    std::string tmp = tmp_name();
    if (::symlinkat(target.c_str(), parent->get(), tmp.c_str()) < 0) return fail(rel, "create a temporary symlink beside", errno);
    return rename_into(parent->get(), tmp, rel);
  }

  Result<void> chmod_dir(const std::string& rel, uint32_t mode) {
    UniqueFd fd(open_beneath(root_, rel, O_PATH | O_DIRECTORY, true));
    if (!fd.valid()) return fail(rel, "open the directory", errno);
    std::string via = fmt::format("/proc/self/fd/{}", fd.get());
    if (::chmod(via.c_str(), mode & 01777) < 0) return fail(rel, "chmod the directory", errno);
    return {};
  }

  Result<void> remove(const std::string& rel, bool dir) {
    auto parent = open_parent(rel);
    if (!parent) return std::move(parent).error();
    if (::unlinkat(parent->get(), name_of(rel).c_str(), dir ? AT_REMOVEDIR : 0) < 0) {
      int e = errno;
      if (e == ENOENT) return {};  // absent at the checks too (else the re-check caught it)
      if (e == ENOTEMPTY || e == EEXIST)
        return make_error(Errc::kConflict, fmt::format("workspace: the directory {}/{} is no longer empty (the host added "
                                                       "entries during the export){}",
                                                       dest_, rel, applied_note()),
                          e);
      return fail(rel, "remove", e);
    }
    if (dir) touched_.erase(rel);  // its entries were removed first
    touched_.insert(parent_of(rel));
    return {};
  }

  // In place: the host entry must still be what `base` recorded.
  Result<void> recheck(const std::string& rel) {
    if (!base_) return {};
    auto p = probe(root_, dest_, rel);
    if (!p) return std::move(p).error();
    if (p->kind != Probe::kOk || !unchanged(*base_, rel, p->entry))
      return make_error(Errc::kConflict, fmt::format("workspace: {} changed on the host during the export; stopped before "
                                                     "writing it{}",
                                                     q(rel), applied_note()));
    return {};
  }

  Result<void> sync_dirs() {
    for (const auto& rel : touched_) {
      UniqueFd fd(open_beneath(root_, rel, O_RDONLY | O_DIRECTORY, true));
      if (!fd.valid() || ::fsync(fd.get()) < 0) return fail(rel.empty() ? "." : rel, "fsync the directory", errno);
    }
    return {};
  }

  // Records an applied change and what its path (and any parent this call
  // made) looks like on the host now.
  void done(const Change& c) {
    applied_.push_back(c);
    note(c.path);
  }
  void note(const std::string& rel) {
    struct stat st{};
    UniqueFd parent(open_beneath(root_, parent_of(rel), O_PATH | O_DIRECTORY, true));
    if (parent.valid() && ::fstatat(parent.get(), name_of(rel).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0)
      after_[rel] = host_entry_from_stat(st);
    else
      after_[rel] = std::nullopt;
  }
  std::vector<Change> take_applied() { return std::move(applied_); }
  std::map<std::string, std::optional<HostEntry>> take_after() { return std::move(after_); }

 private:
  Result<UniqueFd> open_parent(const std::string& rel) {
    std::string parent = parent_of(rel);
    int fd = open_beneath(root_, parent, O_RDONLY | O_DIRECTORY, true);
    if (fd < 0) return fail(parent.empty() ? "." : parent, "open the directory (without following symlinks)", errno);
    return UniqueFd(fd);
  }

  Result<void> rename_into(int parent, const std::string& tmp, const std::string& rel) {
    if (::renameat(parent, tmp.c_str(), parent, name_of(rel).c_str()) < 0) return unlink_tmp(parent, tmp, rel, "rename over", errno);
    touched_.insert(parent_of(rel));
    return {};
  }

  Error unlink_tmp(int parent, const std::string& tmp, const std::string& rel, const char* what, int e) {
    ::unlinkat(parent, tmp.c_str(), 0);
    return fail(rel, what, e);
  }

  Error fail(const std::string& rel, const char* what, int e) {
    Errc code = e == ELOOP || e == EXDEV ? Errc::kConflict : Errc::kIo;
    return make_error(code, fmt::format("workspace: cannot {} {}/{}: {}{}", what, dest_, rel, std::strerror(e), applied_note()), e);
  }

  std::string applied_note() const {
    if (applied_.empty()) return " (nothing was applied)";
    std::string s = fmt::format(" ({} change(s) already applied: ", applied_.size());
    for (size_t i = 0; i < applied_.size() && i < 10; ++i) s += (i ? ", " : "") + q(applied_[i].path);
    return s + (applied_.size() > 10 ? ", ...)" : ")");
  }

  int root_;
  std::string dest_;
  const HostTree* base_;
  std::set<std::string> touched_;
  std::vector<Change> applied_;
  std::map<std::string, std::optional<HostEntry>> after_;
};

}  // namespace

Result<ApplyResult> apply_changes(const std::string& dest_dir, const HostTree* base, const std::vector<Change>& changes,
                                  const FetchFn& fetch) {
  const bool in_place = base != nullptr;
  // 1. The changes on their own.
  std::set<std::string> paths;
  for (const auto& c : changes) {
    if (c.mount != changes.front().mount)
      return make_error(Errc::kInvalidArgument, fmt::format("workspace: the changes come from more than one mount ({} and {}): "
                                                            "export one mount at a time",
                                                            q(changes.front().mount), q(c.mount)));
    if (auto r = check_path(c); !r) return std::move(r).error();
    if (!paths.insert(c.path).second)
      return refuse(Errc::kInvalidArgument, c, "the path appears more than once in the changes");
    if (c.type == FileType::kOther)
      return refuse(Errc::kPermission, c, "it is a device, fifo or socket (type other); only files, directories and symlinks are exported");
    if (c.kind == Change::Kind::kDeleted) continue;
    if (c.mode & 06000) return refuse(Errc::kPermission, c, fmt::format("its mode {:04o} has the setuid or setgid bit", c.mode & 07777));
    if (c.type == FileType::kSymlink)
      if (auto r = check_link_target(c); !r) return std::move(r).error();
    if (c.type == FileType::kFile && !is_hex64(c.sha256))
      return refuse(Errc::kInvalidArgument, c, "it has no valid sha256 (64 hex digits) to check the content against");
  }
  std::map<std::string, const Change*> by_path;
  for (const auto& c : changes) by_path[c.path] = &c;
  // A path under one being deleted (or a non-directory) cannot be written.
  for (const auto& c : changes) {
    for (std::string p = parent_of(c.path); !p.empty(); p = parent_of(p)) {
      auto f = by_path.find(p);
      if (f == by_path.end()) continue;
      const Change* it = f->second;
      if (it->kind == Change::Kind::kDeleted && c.kind != Change::Kind::kDeleted && in_place)
        return refuse(Errc::kInvalidArgument, c, fmt::format("its directory {} is deleted by the same changes", q(p)));
      if (it->kind != Change::Kind::kDeleted && it->type != FileType::kDir)
        return refuse(Errc::kInvalidArgument, c, fmt::format("{} is not a directory in the same changes", q(p)));
    }
  }

  UniqueFd root(::open(dest_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) {
    int e = errno;
    return make_error(e == ENOENT ? Errc::kNotFound : e == ENOTDIR ? Errc::kInvalidArgument : Errc::kIo,
                      fmt::format("workspace: cannot open the destination directory {}: {}{}", dest_dir, std::strerror(e),
                                  e == ENOENT ? " (create it first)" : ""),
                      e);
  }

  // 2. The host as it is now.
  std::vector<Planned> plan;
  std::vector<std::string> conflicts;
  std::set<std::string> missing_dirs;  // parents to create, not named by a change
  for (const auto& c : changes) {
    auto p = probe(root.get(), dest_dir, c.path);
    if (!p) return std::move(p).error();
    switch (p->kind) {
      case Probe::kSymlinkOnWay:
        return refuse(Errc::kPermission, c, fmt::format("{} on the host is a symlink; exports never follow one", q(p->at)));
      case Probe::kOtherFsOnWay:
        return refuse(Errc::kPermission, c, fmt::format("{} on the host is a mount point of another file system", q(p->at)));
      case Probe::kNotDirOnWay:
        if (in_place) {
          conflicts.push_back(p->at);
          continue;
        }
        return refuse(Errc::kInvalidArgument, c, fmt::format("{} in the destination is not a directory", q(p->at)));
      case Probe::kMissingAncestor:
        if (in_place && base->count(p->at)) {
          conflicts.push_back(p->at);
          continue;
        }
        if (c.kind == Change::Kind::kDeleted) break;
        for (std::string a = parent_of(c.path); !a.empty(); a = parent_of(a))
          if (!paths.count(a)) missing_dirs.insert(a);
        break;
      case Probe::kOk: break;
    }
    if (in_place && !unchanged(*base, c.path, p->entry)) {
      conflicts.push_back(c.path);
      continue;
    }
    if (!in_place && c.kind == Change::Kind::kDeleted) {
      plan.push_back({&c, p->entry, {}});
      continue;
    }
    if (const auto& h = p->entry) {
      if (h->type == FileType::kOther)
        return refuse(Errc::kPermission, c, "the host entry there is a device, fifo or socket");
      if (h->type == FileType::kFile && h->nlink > 1)
        return refuse(Errc::kPermission, c, fmt::format("the host file has {} hard links; replacing one name would silently "
                                                        "split them: remove the other links first",
                                                        h->nlink));
      if (c.kind != Change::Kind::kDeleted && (h->type == FileType::kDir) != (c.type == FileType::kDir))
        return refuse(Errc::kInvalidArgument, c, fmt::format("it turns a {} into a {}; export the deletion and the creation separately",
                                                             h->type == FileType::kDir ? "directory" : "non-directory",
                                                             c.type == FileType::kDir ? "directory" : "non-directory"));
    }
    plan.push_back({&c, p->entry, {}});
  }
  if (!conflicts.empty()) {
    std::sort(conflicts.begin(), conflicts.end());
    conflicts.erase(std::unique(conflicts.begin(), conflicts.end()), conflicts.end());
    std::string list;
    for (size_t i = 0; i < conflicts.size(); ++i) list += (i ? ", " : "") + q(conflicts[i]);
    return make_error(Errc::kConflict, fmt::format("workspace: {} changed on the host since the sandbox started: {}; nothing "
                                                   "was applied (review the host's version, then export again or skip these paths)",
                                                   conflicts.size() == 1 ? "this path" : fmt::format("{} paths", conflicts.size()), list));
  }

  // A deleted directory must be empty once the changes are applied.
  if (in_place) {
    for (const auto& pl : plan) {
      const Change& c = *pl.change;
      if (c.kind != Change::Kind::kDeleted || !pl.host || pl.host->type != FileType::kDir) continue;
      UniqueFd dfd(open_beneath(root.get(), c.path, O_RDONLY | O_DIRECTORY, true));
      if (!dfd.valid()) return make_error(Errc::kIo, fmt::format("workspace: cannot list {}/{}: {}", dest_dir, c.path, std::strerror(errno)), errno);
      DIR* d = ::fdopendir(dfd.release());
      if (!d) return make_error(Errc::kIo, fmt::format("workspace: cannot list {}/{}: {}", dest_dir, c.path, std::strerror(errno)), errno);
      std::unique_ptr<DIR, int (*)(DIR*)> guard(d, ::closedir);
      while (dirent* de = ::readdir(d)) {
        std::string n = de->d_name;
        if (n == "." || n == "..") continue;
        std::string child = c.path + "/" + n;
        auto it = by_path.find(child);
        if (it == by_path.end() || it->second->kind != Change::Kind::kDeleted)
          return refuse(Errc::kInvalidArgument, c,
                        fmt::format("the directory is not empty on the host ({} is not deleted by these changes): include the "
                                    "deletion of everything in it, or leave the directory out",
                                    q(child)));
      }
    }
  }

  // 3. The contents, re-hashed.
  for (auto& pl : plan) {
    const Change& c = *pl.change;
    if (c.kind == Change::Kind::kDeleted || c.type != FileType::kFile) continue;
    if (!fetch) return make_error(Errc::kInvalidArgument, "workspace: apply_changes needs a fetch function for file contents");
    auto content = fetch(c);
    if (!content) {
      Error e = std::move(content).error();
      e.message = fmt::format("workspace: cannot fetch the content of {}: {} (nothing was applied)", q(c.path), e.message);
      return e;
    }
    if (sha256_hex(*content) != lower(c.sha256))
      return refuse(Errc::kPermission, c, "its content no longer has the reviewed sha256 (the guest changed the file after the "
                                          "diff was taken): take the diff again and review it");
    pl.content = std::move(*content);
  }

  // 4. The writes: directories, files and symlinks, deletions, directory modes.
  std::sort(plan.begin(), plan.end(), [](const Planned& a, const Planned& b) { return a.change->path < b.change->path; });
  Applier ap(root.get(), dest_dir, base);
  ApplyResult result;
  std::map<std::string, bool> to_create;  // path -> named by a change (else an implied parent)
  for (const auto& dir : missing_dirs) to_create[dir] = false;
  for (const auto& pl : plan)
    if (pl.change->kind != Change::Kind::kDeleted && pl.change->type == FileType::kDir && !pl.host) to_create[pl.change->path] = true;
  for (const auto& [dir, named] : to_create) {  // parents first
    if (named)
      if (auto r = ap.recheck(dir); !r) return std::move(r).error();
    if (auto r = ap.mkdir(dir, named ? 0700 : 0755); !r) return std::move(r).error();
    if (!named) ap.note(dir);
  }
  for (const auto& pl : plan) {
    const Change& c = *pl.change;
    if (c.kind == Change::Kind::kDeleted || c.type == FileType::kDir) continue;
    if (auto r = ap.recheck(c.path); !r) return std::move(r).error();
    auto r = c.type == FileType::kFile ? ap.write_file(c.path, pl.content, c.mode) : ap.write_symlink(c.path, c.link_target);
    if (!r) return std::move(r).error();
    ap.done(c);
  }
  for (auto it = plan.rbegin(); it != plan.rend(); ++it) {  // children before their directory
    const Change& c = *it->change;
    if (c.kind != Change::Kind::kDeleted) continue;
    if (!in_place) {
      result.deletions_skipped.push_back(c);
      continue;
    }
    if (it->host) {
      if (auto r = ap.recheck(c.path); !r) return std::move(r).error();
      if (auto r = ap.remove(c.path, it->host->type == FileType::kDir); !r) return std::move(r).error();
    }
    ap.done(c);
  }
  for (auto it = plan.rbegin(); it != plan.rend(); ++it) {  // deepest first: a child's mode before its parent's
    const Change& c = *it->change;
    if (c.kind == Change::Kind::kDeleted || c.type != FileType::kDir) continue;
    if (auto r = ap.chmod_dir(c.path, c.mode); !r) return std::move(r).error();
    ap.done(c);
  }
  std::reverse(result.deletions_skipped.begin(), result.deletions_skipped.end());
  if (auto r = ap.sync_dirs(); !r) return std::move(r).error();
  result.applied = ap.take_applied();
  result.host_after = ap.take_after();
  return result;
}

void update_base(HostTree& base, const ApplyResult& result) {
  for (const auto& [rel, entry] : result.host_after) {
    if (entry)
      base[rel] = *entry;
    else
      base.erase(rel);
  }
}

}  // namespace ztee::detail
