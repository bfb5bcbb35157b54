// scan_host_tree and build_mount_image.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "workspace/fs.hpp"
#include "workspace/workspace.hpp"

namespace ztee::detail {

namespace {

constexpr uint64_t kBlock = 4096;
constexpr uint64_t kInodeSize = 256;

std::string shown(const std::string& rel) { return rel.empty() ? "." : rel; }

Error io_error(const std::string& dir, const std::string& rel, const char* what, int e) {
  return make_error(e == ENOENT ? Errc::kNotFound : Errc::kIo,
                    fmt::format("workspace: cannot {} {}/{}: {}", what, dir, shown(rel), std::strerror(e)), e);
}

const char* find_mkfs() {
  for (const char* p : {"/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"})
    if (::access(p, X_OK) == 0) return p;
  return nullptr;
}

const char* find_debugfs() {
  for (const char* p : {"/usr/sbin/debugfs", "/sbin/debugfs"})
    if (::access(p, X_OK) == 0) return p;
  return "/usr/sbin/debugfs";
}

uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

// A generous upper bound of what mkfs.ext4 -d needs for the tree; the image
// is sparse, so the slack costs no disk.
struct Sizing {
  uint64_t bytes = 0;
  uint64_t inodes = 0;
};
Sizing size_image(const HostTree& tree) {
  std::map<std::string, uint64_t> dir_bytes;  // directory -> bytes of its entries
  uint64_t blocks = 0;
  for (const auto& [rel, e] : tree) {
    if (!rel.empty()) {
      auto slash = rel.rfind('/');
      std::string parent = slash == std::string::npos ? "" : rel.substr(0, slash);
      uint64_t name = rel.size() - (slash == std::string::npos ? 0 : slash + 1);
      dir_bytes[parent] += 8 + ceil_div(name, 4) * 4;
    }
    switch (e.type) {
      case FileType::kFile: {
        uint64_t b = ceil_div(e.size, kBlock);
        // Extents of at most 32768 blocks; more than 4 need tree blocks.
        blocks += b + (b > 4 * 32768 ? ceil_div(ceil_div(b, 32768), 340) + 1 : 0);
        break;
      }
      case FileType::kSymlink: blocks += e.size >= 60 ? 1 : 0; break;
      case FileType::kDir: dir_bytes[rel] += 24; break;
      case FileType::kOther: break;
    }
  }
  for (const auto& [dir, bytes] : dir_bytes) {
    uint64_t b = ceil_div(bytes, kBlock - 64);
    blocks += b + (b > 1 ? ceil_div(b, 500) + 1 : 0);  // htree index blocks
  }
  Sizing s;
  s.inodes = tree.size() + 64;
  uint64_t data = blocks * kBlock;
  s.bytes = data + data / 8 + s.inodes * kInodeSize * 2 + (16ull << 20);
  s.bytes = ceil_div(s.bytes, kBlock) * kBlock;
  return s;
}

// Paths whose entries differ between two scans (at most `max` named).
std::vector<std::string> tree_differences(const HostTree& a, const HostTree& b, size_t max) {
  std::vector<std::string> out;
  auto ia = a.begin();
  auto ib = b.begin();
  while ((ia != a.end() || ib != b.end()) && out.size() < max) {
    if (ib == b.end() || (ia != a.end() && ia->first < ib->first)) {
      out.push_back(shown(ia->first) + " (removed)");
      ++ia;
    } else if (ia == a.end() || ib->first < ia->first) {
      out.push_back(shown(ib->first) + " (added)");
      ++ib;
    } else {
      if (!(ia->second == ib->second)) out.push_back(shown(ia->first) + " (changed)");
      ++ia;
      ++ib;
    }
  }
  return out;
}

}  // namespace

Result<HostTree> scan_host_tree(const std::string& dir, const TreeLimits& limits) {
  if (dir.empty() || dir[0] != '/')
    return make_error(Errc::kInvalidArgument, fmt::format("workspace: '{}' is not an absolute path: give the directory's absolute path", dir));
  UniqueFd root(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) {
    int e = errno;
    if (e == ENOTDIR)
      return make_error(Errc::kInvalidArgument, fmt::format("workspace: {} is not a directory: mount a directory", dir), e);
    return io_error(dir, "", "open", e);
  }
  struct stat st{};
  if (::fstat(root.get(), &st) < 0) return io_error(dir, "", "stat", errno);
  HostTree tree;
  tree[""] = host_entry_from_stat(st);
  const uint64_t root_dev = st.st_dev;
  uint64_t bytes = 0;
  std::vector<std::string> todo{""};
  while (!todo.empty()) {
    std::string rel = std::move(todo.back());
    todo.pop_back();
    int fd = rel.empty() ? ::fcntl(root.get(), F_DUPFD_CLOEXEC, 0) : open_beneath(root.get(), rel, O_RDONLY | O_DIRECTORY);
    if (fd < 0) {
      int e = errno;
      if (e == ENOENT) {  // vanished (with its subtree, not scanned yet)
        tree.erase(rel);
        continue;
      }
      if (e == ELOOP || e == ENOTDIR || e == EXDEV) {  // replaced by a symlink or a file meanwhile
        if (::fstatat(root.get(), rel.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) tree[rel] = host_entry_from_stat(st);
        continue;
      }
      return io_error(dir, rel, "open the directory", e);
    }
    DIR* d = ::fdopendir(fd);
    if (!d) {
      int e = errno;
      ::close(fd);
      return io_error(dir, rel, "read the directory", e);
    }
    std::unique_ptr<DIR, int (*)(DIR*)> guard(d, ::closedir);
    if (!rel.empty() && ::fstat(::dirfd(d), &st) == 0) tree[rel] = host_entry_from_stat(st);
    for (;;) {
      errno = 0;
      dirent* de = ::readdir(d);
      if (!de) {
        if (errno != 0) return io_error(dir, rel, "read the directory", errno);
        break;
      }
      std::string name = de->d_name;
      if (name == "." || name == "..") continue;
      std::string child = rel.empty() ? name : rel + "/" + name;
      if (::fstatat(::dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT) continue;
        return io_error(dir, child, "stat", errno);
      }
      HostEntry e = host_entry_from_stat(st);
      if (tree.size() >= limits.max_entries)
        return make_error(Errc::kInvalidArgument,
                          fmt::format("workspace: {} has more than {} entries (at {}): mount a smaller directory or raise the limit",
                                      dir, limits.max_entries, child));
      if (e.type == FileType::kFile) {
        bytes += e.size;
        if (bytes > limits.max_bytes)
          return make_error(Errc::kInvalidArgument,
                            fmt::format("workspace: the files in {} hold more than {} bytes (at {}): mount a smaller directory or raise the limit",
                                        dir, limits.max_bytes, child));
      }
      tree[child] = e;
      if (e.type == FileType::kDir && e.dev == root_dev) todo.push_back(std::move(child));
    }
  }
  return tree;
}

Result<HostTree> build_mount_image(const std::string& dir, const std::string& image_path, const TreeLimits& limits) {
  const char* mkfs = find_mkfs();
  if (!mkfs)
    return make_error(Errc::kUnsupported, "workspace: mkfs.ext4 not found in /usr/sbin or /sbin: install e2fsprogs");
  auto before = scan_host_tree(dir, limits);
  if (!before) return before;
  const HostEntry& root = before->at("");
  for (const auto& [rel, e] : *before)
    if (e.dev != root.dev)
      return make_error(Errc::kInvalidArgument,
                        fmt::format("workspace: {}/{} is a mount point of another file system; the image cannot stay on "
                                    "one file system: unmount it, or mount that directory separately",
                                    dir, rel));
  Sizing sz = size_image(*before);

  UniqueFd img(::open(image_path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!img.valid()) {
    int e = errno;
    if (e == EEXIST)
      return make_error(Errc::kInvalidArgument,
                        fmt::format("workspace: the image path {} exists: remove it or choose another path", image_path), e);
    return make_error(e == ENOENT ? Errc::kNotFound : Errc::kIo,
                      fmt::format("workspace: cannot create the image {}: {}", image_path, std::strerror(e)), e);
  }
  struct Remove {
    const std::string& path;
    bool keep = false;
    ~Remove() {
      if (!keep) ::unlink(path.c_str());
    }
  } remove{image_path};
  // No journal, no resize reserve: the image is never written. No
  // metadata_csum: mke2fs -d re-checksums a directory block per entry, which
  // makes large flat directories several times slower (10k files in one
  // directory: 12 s with it, 5 s without); the image is built here and read
  // only, so the checksums would protect nothing.
  // The image's root is owned like dir (mkfs would make it the caller's).
  struct stat st{};
  if (::stat(dir.c_str(), &st) < 0) return io_error(dir, "", "stat", errno);
  // The estimate does not know extended attributes (read only by mkfs): when
  // the blocks or inodes run out, the image grows (sparse: no disk cost).
  for (int attempt = 0;; ++attempt) {
    if (::ftruncate(img.get(), static_cast<off_t>(sz.bytes)) < 0) {
      int e = errno;
      return make_error(Errc::kIo, fmt::format("workspace: cannot size the image {} to {} bytes: {}", image_path, sz.bytes,
                                               std::strerror(e)),
                        e);
    }
    std::vector<std::string> argv = {mkfs, "-F", "-q", "-b", "4096", "-I", "256", "-m", "0",
                                     "-N", std::to_string(sz.inodes), "-O", "^has_journal,^resize_inode,^metadata_csum",
                                     "-E", fmt::format("root_owner={}:{},nodiscard", st.st_uid, st.st_gid),
                                     "-L", "ztee-ws", "-d", dir, image_path};
    auto run = run_tool(argv);
    if (!run) return std::move(run).error();
    if (run->exit_code == 0) break;
    std::string said = run->output;
    while (!said.empty() && (said.back() == '\n' || said.back() == ' ')) said.pop_back();
    bool full = said.find("Could not allocate") != std::string::npos || said.find("No space left") != std::string::npos;
    if (full && attempt < 3) {
      sz.bytes *= 4;
      if (said.find("allocate inode") != std::string::npos) sz.inodes *= 2;
      continue;
    }
    return make_error(Errc::kIo, fmt::format("workspace: mkfs.ext4 -d {} failed ({}): {}", dir,
                                             run->exit_code < 0 ? "killed" : fmt::format("exit status {}", run->exit_code),
                                             said.empty() ? "no message" : said));
  }
  img.reset();

  // mke2fs always makes /lost+found; the guest should see the host tree only.
  if (!before->count("lost+found")) {
    auto rm = run_tool({find_debugfs(), "-w", "-R", "rmdir /lost+found", image_path});
    if (!rm) return std::move(rm).error();
    if (rm->exit_code != 0 || rm->output.find("rmdir:") != std::string::npos)
      return make_error(Errc::kIo, fmt::format("workspace: cannot remove /lost+found from the image of {}: {}", dir, rm->output));
  }

  auto after = scan_host_tree(dir, limits);
  if (!after) return after;
  auto changed = tree_differences(*before, *after, 11);
  if (!changed.empty()) {
    std::string list;
    for (size_t i = 0; i < changed.size() && i < 10; ++i) list += (i ? ", " : "") + changed[i];
    if (changed.size() > 10) list += ", ...";
    return make_error(Errc::kConflict,
                      fmt::format("workspace: {} changed while its image was built ({}); the image could be torn "
                                  "and was removed: retry once the directory is quiet",
                                  dir, list));
  }
  remove.keep = true;
  return before;
}

}  // namespace ztee::detail
