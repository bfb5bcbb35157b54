#include "workspace/set.hpp"

#include <fmt/format.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <cstring>
#include <filesystem>

#include "agent/mount_path.hpp"
#include "image/image.hpp"
#include "agent/json.hpp"
#include "proc/owner.hpp"
#include "runtime/impl.hpp"

namespace ztee::detail {

namespace {
constexpr size_t kMaxMounts = 16;
}  // namespace

WorkspaceSet::~WorkspaceSet() { remove_images(); }

void WorkspaceSet::remove_images() const {
  std::lock_guard lk(images_mu);
  if (dir.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  dir.clear();
  owner.reset();
}

const WorkspaceSet::Entry* WorkspaceSet::find(std::string_view guest_path) const {
  if (guest_path.empty() && entries.size() == 1) return &entries[0];
  for (const auto& e : entries)
    if (e.mount.guest_path == guest_path) return &e;
  return nullptr;
}

Result<std::shared_ptr<WorkspaceSet>> make_workspaces(const std::string& state_dir, const std::vector<Mount>& mounts) {
  if (mounts.size() > kMaxMounts)
    return make_error(Errc::kInvalidArgument, fmt::format("{} mounts: at most {} per sandbox", mounts.size(), kMaxMounts));
  std::vector<Mount> checked;
  for (const Mount& m : mounts) {
    if (!proto::valid_mount_path(m.guest_path))
      return make_error(Errc::kInvalidArgument,
                        fmt::format("mount guest path \"{}\": use an absolute path of [A-Za-z0-9._-] components, "
                                    "not / and not under /proc, /sys, /dev, /run or /tmp",
                                    m.guest_path));
    if (m.host_dir.empty() || m.host_dir[0] != '/')
      return make_error(Errc::kInvalidArgument,
                        fmt::format("mount host directory \"{}\" must be an absolute path", m.host_dir));
    char real[PATH_MAX];
    if (!::realpath(m.host_dir.c_str(), real)) {
      int e = errno;
      return make_error(e == ENOENT ? Errc::kNotFound : Errc::kInvalidArgument,
                        fmt::format("mount host directory {}: {}", m.host_dir, std::strerror(e)), e);
    }
    struct stat st{};
    if (::stat(real, &st) != 0 || !S_ISDIR(st.st_mode))
      return make_error(Errc::kInvalidArgument, fmt::format("mount host directory {} is not a directory", m.host_dir));
    for (const Mount& o : checked) {
      const std::string& a = o.guest_path;
      const std::string& b = m.guest_path;
      if (a == b || b.rfind(a + "/", 0) == 0 || a.rfind(b + "/", 0) == 0)
        return make_error(Errc::kInvalidArgument,
                          fmt::format("mounts at {} and {} overlap: give each its own guest path", a, b));
    }
    checked.push_back(Mount{real, m.guest_path});
  }
  auto set = std::make_shared<WorkspaceSet>();
  if (checked.empty()) return set;
  std::string dir = state_dir + "/ws-" + random_hex(8);
  if (::mkdir(dir.c_str(), 0700) != 0) {
    int e = errno;
    return make_error(Errc::kIo, fmt::format("cannot create {}: {}", dir, std::strerror(e)), e);
  }
  set->dir = dir;  // from here on the set's destructor removes it
  auto owner = hold_owner_lock(dir + "/owner", fmt::format("{}\n", ::getpid()));
  if (!owner) return std::move(owner).error();
  set->owner = std::move(*owner);
  for (size_t i = 0; i < checked.size(); ++i) {
    std::string image = fmt::format("{}/m{}.ext4", dir, i);
    auto tree = build_mount_image(checked[i].host_dir, image);
    if (!tree) {
      Error e = std::move(tree).error();
      e.message = fmt::format("mount {} at {}: {}", checked[i].host_dir, checked[i].guest_path, e.message);
      return e;
    }
    set->entries.push_back(WorkspaceSet::Entry{checked[i], image, std::move(*tree)});
  }
  return set;
}

namespace {

bool utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    i += len;
  }
  return true;
}

const char* type_name(FileType t) {
  switch (t) {
    case FileType::kFile: return "file";
    case FileType::kDir: return "dir";
    case FileType::kSymlink: return "symlink";
    case FileType::kOther: break;
  }
  return "other";
}

bool same(const Change& a, const Change& b) {
  return a.kind == b.kind && a.type == b.type && a.mode == b.mode && a.size == b.size && a.sha256 == b.sha256 &&
         a.link_target == b.link_target;
}

}  // namespace

std::string changes_json(const std::vector<Change>& changes) {
  std::string out = "[";
  for (const Change& c : changes) {
    if (out.size() > 1) out += ',';
    out += fmt::format("{{\"kind\":\"{}\",\"type\":\"{}\"", change_kind_name(c.kind), type_name(c.type));
    out += utf8(c.path) ? ",\"path\":" + json_quote(c.path) : ",\"path_hex\":\"" + hex_lower(c.path) + "\"";
    if (!c.mount.empty()) out += ",\"mount\":" + json_quote(c.mount);
    if (c.kind != Change::Kind::kDeleted) {
      out += fmt::format(",\"mode\":{},\"size\":{}", c.mode, c.size);
      if (!c.sha256.empty()) out += ",\"sha256\":\"" + c.sha256 + "\"";
      if (c.type == FileType::kSymlink)
        out += utf8(c.link_target) ? ",\"target\":" + json_quote(c.link_target)
                                   : ",\"target_hex\":\"" + hex_lower(c.link_target) + "\"";
    }
    out += '}';
  }
  out += ']';
  return out;
}

std::vector<Change> subtract_changes(const std::vector<Change>& now, const std::vector<Change>& base) {
  auto key = [](const Change& c) { return std::make_pair(c.mount, c.path); };
  std::map<std::pair<std::string, std::string>, const Change*> b;
  for (const Change& c : base) b[key(c)] = &c;
  std::vector<Change> out;
  for (const Change& c : now) {
    auto it = b.find(key(c));
    if (it != b.end()) {
      const Change& was = *it->second;
      bool unchanged = same(c, was);
      Change d = c;
      if (c.kind != Change::Kind::kDeleted)  // absent at base: created since; else modified since
        d.kind = was.kind == Change::Kind::kDeleted ? Change::Kind::kCreated : Change::Kind::kModified;
      b.erase(it);
      if (!unchanged) out.push_back(std::move(d));
      continue;
    }
    out.push_back(c);
  }
  // In base but not now: reverted to what the read-only layer has.
  for (auto& [k, c] : b) {
    Change d;
    d.mount = c->mount;
    d.path = c->path;
    d.type = c->type;
    d.kind = c->kind == Change::Kind::kCreated ? Change::Kind::kDeleted
             : c->kind == Change::Kind::kDeleted ? Change::Kind::kCreated
                                                : Change::Kind::kModified;
    out.push_back(std::move(d));
  }
  std::sort(out.begin(), out.end(), [&](const Change& x, const Change& y) { return key(x) < key(y); });
  return out;
}

}  // namespace ztee::detail
