// The host side of mounted workspaces (lib/workspace): the tree scan, the
// ext4 image (checked with e2fsck and debugfs), the sync-back of changes with
// every refusal, conflicts and atomicity, and the review patch. No VM.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "image/image.hpp"
#include "workspace/workspace.hpp"
#include "../why.hpp"

namespace fs = std::filesystem;
using namespace ztee;
using namespace ztee::detail;

namespace {

struct Tmp {
  std::string path;
  // in_memory: under /dev/shm when there is one (many small files are made
  // much faster there than on a busy disk).
  explicit Tmp(const char* what = "ws", bool in_memory = false) {
    const char* base = in_memory && fs::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
    std::string t = fmt::format("{}/ztee-{}-test.XXXXXX", base, what);
    REQUIRE(::mkdtemp(t.data()) != nullptr);
    path = t;
  }
  ~Tmp() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& rel) const { return path + "/" + rel; }
};

void put(const std::string& p, const std::string& s) {
  fs::create_directories(fs::path(p).parent_path());
  std::ofstream(p, std::ios::binary | std::ios::trunc) << s;
}
std::string get(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Everything a reader can see of a tree: names, types, modes, contents,
// symlink targets. Equal hashes: byte-identical trees.
std::string tree_hash(const std::string& dir) {
  std::string acc;
  std::vector<std::string> lines;
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator(); ++it) {
    struct stat st{};
    REQUIRE(::lstat(it->path().c_str(), &st) == 0);
    std::string rel = fs::relative(it->path(), dir).string();
    std::string what;
    if (S_ISREG(st.st_mode)) what = "f " + sha256_hex(get(it->path()));
    if (S_ISDIR(st.st_mode)) what = "d";
    if (S_ISLNK(st.st_mode)) what = "l " + fs::read_symlink(it->path()).string();
    lines.push_back(fmt::format("{} {:o} {}", rel, st.st_mode, what));
  }
  std::sort(lines.begin(), lines.end());
  for (const auto& l : lines) acc += l + "\n";
  return sha256_hex(acc);
}

std::string sh(const std::string& cmd, int* status = nullptr) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  if (status) *status = st;
  return out;
}

Change file_change(Change::Kind kind, std::string path, const std::string& content, uint32_t mode = 0644) {
  Change c;
  c.kind = kind;
  c.type = FileType::kFile;
  c.path = std::move(path);
  c.mount = "/workspace";
  c.size = content.size();
  c.mode = mode;
  c.sha256 = sha256_hex(content);
  return c;
}
Change dir_change(Change::Kind kind, std::string path, uint32_t mode = 0755) {
  Change c;
  c.kind = kind;
  c.type = FileType::kDir;
  c.path = std::move(path);
  c.mount = "/workspace";
  c.mode = mode;
  return c;
}
Change link_change(Change::Kind kind, std::string path, std::string target) {
  Change c;
  c.kind = kind;
  c.type = FileType::kSymlink;
  c.path = std::move(path);
  c.mount = "/workspace";
  c.link_target = std::move(target);
  c.size = c.link_target.size();
  c.mode = 0777;
  return c;
}
Change deleted(FileType t, std::string path) {
  Change c;
  c.kind = Change::Kind::kDeleted;
  c.type = t;
  c.path = std::move(path);
  c.mount = "/workspace";
  return c;
}

// The guest's files: path -> content.
struct Guest {
  std::map<std::string, std::string> files;
  int fetches = 0;
  FetchFn fn() {
    return [this](const Change& c) -> Result<std::string> {
      ++fetches;
      auto it = files.find(c.path);
      if (it == files.end()) return make_error(Errc::kNotFound, "no such guest file");
      return it->second;
    };
  }
};

mode_t current_umask() {
  mode_t m = ::umask(022);
  ::umask(m);
  return m;
}

// A small repository-like host tree.
void make_repo(const Tmp& t) {
  put(t / "README.md", "# demo\nline two\n");
  put(t / "src/main.py", "print('hello')\n");
  put(t / "src/util.py", "def f():\n    return 1\n");
  put(t / "docs/old/notes.txt", "old notes\n");
  put(t / "empty", "");
  REQUIRE(::symlink("src/main.py", (t / "main-link").c_str()) == 0);
}

void check_refused(const std::string& dir, const HostTree* base, const std::vector<Change>& changes, Guest& g, Errc code,
                   const std::string& words) {
  std::string before = tree_hash(dir);
  auto r = apply_changes(dir, base, changes, g.fn());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == code);
  CHECK_MESSAGE(r.error().message.find(words) != std::string::npos, why(r));
  CHECK(tree_hash(dir) == before);
  for (const auto& e : fs::recursive_directory_iterator(dir))
    CHECK_MESSAGE(e.path().filename().string().rfind(".ztee-tmp-", 0) != 0, "temporary left: " << e.path());
}

}  // namespace

TEST_CASE("workspace: the scan records every entry by lstat, stays beneath the directory and keeps its limits") {
  Tmp t;
  make_repo(t);
  put(t / "dir with space/ünïcödé ✓.txt", "x");
  REQUIRE(::symlink("/etc", (t / "etc-link").c_str()) == 0);
  auto tree = scan_host_tree(t.path);
  REQUIRE(tree.ok());
  CHECK(tree->at("").type == FileType::kDir);
  CHECK(tree->at("src").type == FileType::kDir);
  CHECK(tree->at("src/main.py").type == FileType::kFile);
  CHECK(tree->at("src/main.py").size == 15);
  CHECK(tree->at("empty").size == 0);
  CHECK(tree->at("main-link").type == FileType::kSymlink);
  CHECK(tree->at("etc-link").type == FileType::kSymlink);
  CHECK(tree->count("etc-link/passwd") == 0);  // not followed
  CHECK(tree->count("dir with space/ünïcödé ✓.txt") == 1);
  CHECK(tree->size() == 13);
  CHECK(tree->at("README.md").mtime_ns > 0);

  auto few = scan_host_tree(t.path, TreeLimits{.max_entries = 5});
  REQUIRE_FALSE(few.ok());
  CHECK(few.error().code == Errc::kInvalidArgument);
  CHECK(few.error().message.find("more than 5 entries") != std::string::npos);
  auto small = scan_host_tree(t.path, TreeLimits{.max_bytes = 20});
  REQUIRE_FALSE(small.ok());
  CHECK(small.error().message.find("more than 20 bytes") != std::string::npos);

  CHECK(scan_host_tree(t / "nope").error().code == Errc::kNotFound);
  CHECK(scan_host_tree("relative/dir").error().code == Errc::kInvalidArgument);
  CHECK(scan_host_tree(t / "README.md").error().code == Errc::kInvalidArgument);
}

TEST_CASE("workspace: a mount point inside the tree is not entered, not imaged and not written through") {
  if (::geteuid() != 0) {
    MESSAGE("skipped: needs root (mounts a tmpfs inside the tree, in a private mount namespace)");
    return;
  }
  // The test runs in a private mount namespace (nothing leaks to the host)
  // and returns to the original one at its end.
  struct NsGuard {
    int fd = ::open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    ~NsGuard() {
      if (fd >= 0 && ::setns(fd, CLONE_NEWNS) != 0) std::fprintf(stderr, "workspace_test: setns back: %s\n", std::strerror(errno));
      if (fd >= 0) ::close(fd);
    }
  } ns;
  if (ns.fd < 0 || ::unshare(CLONE_NEWNS) != 0) {
    MESSAGE("skipped: needs a private mount namespace (unshare(CLONE_NEWNS) failed: " << std::strerror(errno) << ")");
    return;
  }
  REQUIRE(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0);
  Tmp t, out("ws-img");
  make_repo(t);
  fs::create_directories(t / "mnt");
  REQUIRE(::mount("tmpfs", (t / "mnt").c_str(), "tmpfs", 0, "size=1m") == 0);
  put(t / "mnt/inside.txt", "other fs\n");
  auto tree = scan_host_tree(t.path);
  REQUIRE(tree.ok());
  CHECK(tree->at("mnt").type == FileType::kDir);
  CHECK(tree->at("mnt").dev != tree->at("").dev);
  CHECK(tree->count("mnt/inside.txt") == 0);
  auto img = build_mount_image(t.path, out / "m.img");
  REQUIRE_FALSE(img.ok());
  CHECK(img.error().code == Errc::kInvalidArgument);
  CHECK(img.error().message.find("mount point") != std::string::npos);
  CHECK_FALSE(fs::exists(out / "m.img"));
  Guest g;
  g.files["mnt/planted"] = "p\n";
  check_refused(t.path, &*tree, {file_change(Change::Kind::kCreated, "mnt/planted", "p\n")}, g, Errc::kPermission,
                "mount point");
  CHECK_FALSE(fs::exists(t / "mnt/planted"));
  REQUIRE(::umount2((t / "mnt").c_str(), MNT_DETACH) == 0);
}

TEST_CASE("workspace: the mount image holds the tree (e2fsck clean, listed by debugfs) and failures leave nothing") {
  Tmp t, out("ws-img");
  make_repo(t);
  put(t / "dir with space/ünïcödé ✓.txt", "unicode\n");
  put(t / "big.bin", std::string(3 << 20, 'z'));
  std::string long_target(200, 'a');
  REQUIRE(::symlink(long_target.c_str(), (t / "long-link").c_str()) == 0);
  REQUIRE(::chmod((t / "src/main.py").c_str(), 0750) == 0);
  std::string img = out / "ws.img";
  auto tree = build_mount_image(t.path, img);
  REQUIRE_MESSAGE(tree.ok(), why(tree));
  CHECK(tree->count("src/util.py") == 1);
  struct stat st{};
  REQUIRE(::stat(img.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  int status = 0;
  std::string fsck = sh("/usr/sbin/e2fsck -fn " + img, &status);
  CHECK_MESSAGE(status == 0, fsck);
  std::string root = sh("/usr/sbin/debugfs -R 'ls -p /' " + img);
  for (const char* name : {"/README.md/", "/src/", "/docs/", "/empty/", "/main-link/", "/big.bin/", "/dir with space/"})
    CHECK_MESSAGE(root.find(name) != std::string::npos, name << " not in\n" << root);
  CHECK(root.find("lost+found") == std::string::npos);  // only what the host has
  CHECK(sh("/usr/sbin/debugfs -R 'cat /src/main.py' " + img).find("print('hello')") != std::string::npos);
  CHECK(sh("/usr/sbin/debugfs -R 'cat \"/dir with space/ünïcödé ✓.txt\"' " + img).find("unicode") != std::string::npos);
  CHECK(sh("/usr/sbin/debugfs -R 'stat /main-link' " + img).find("Fast link dest: \"src/main.py\"") != std::string::npos);
  CHECK(sh("/usr/sbin/debugfs -R 'stat /src/main.py' " + img).find("Mode:  0750") != std::string::npos);
  CHECK(sh("/usr/sbin/debugfs -R 'stat /big.bin' " + img).find("Size: 3145728") != std::string::npos);
  CHECK(sh("/usr/sbin/dumpe2fs -h " + img).find("ztee-ws") != std::string::npos);

  // The image path exists: refused, the file left as it was.
  auto again = build_mount_image(t.path, img);
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().code == Errc::kInvalidArgument);
  CHECK(again.error().message.find("exists") != std::string::npos);
  CHECK(fs::exists(img));
  // mkfs fails (an unreadable file for a non-root caller is not portable
  // here; a missing directory is): nothing left.
  auto missing = build_mount_image(t / "nope", out / "x.img");
  CHECK_FALSE(missing.ok());
  CHECK_FALSE(fs::exists(out / "x.img"));
}

TEST_CASE("workspace: a 10k-file tree images in about a second") {
  Tmp t("ws", true), out("ws-img");
  std::string kib(1024, 'k');
  for (int d = 0; d < 100; ++d) {
    fs::create_directories(t / fmt::format("d{:03}", d));
    for (int f = 0; f < 100; ++f) put(t / fmt::format("d{:03}/file {} ✓.txt", d, f), kib);
  }
  auto t0 = std::chrono::steady_clock::now();
  auto tree = build_mount_image(t.path, out / "10k.img");
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  REQUIRE_MESSAGE(tree.ok(), why(tree));
  CHECK(tree->size() == 10'101);
  struct stat st{};
  REQUIRE(::stat((out / "10k.img").c_str(), &st) == 0);
  MESSAGE(fmt::format("10k files of 1 KiB: image built in {} ms (scan, mkfs.ext4 -d, rescan); {} MiB apparent, {} MiB on disk",
                      ms, st.st_size >> 20, (st.st_blocks * 512) >> 20));
  int status = 0;
  std::string fsck = sh("/usr/sbin/e2fsck -fn " + out / "10k.img", &status);
  CHECK_MESSAGE(status == 0, fsck);
  CHECK(sh("/usr/sbin/debugfs -R 'ls -p /d042' " + out / "10k.img").find("/file 99 ✓.txt/") != std::string::npos);

}

TEST_CASE("workspace: a tree that changes while its image is built is refused") {
  Tmp t, out("ws-img");
  make_repo(t);
  for (int f = 0; f < 200; ++f) put(t / fmt::format("d{}/f{}", f / 50, f), "x");
  // A writer keeps changing one file while the image is built.
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 0; !stop; ++i) {
      put(t / "src/main.py", fmt::format("print({})\n", i));
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  auto torn = build_mount_image(t.path, out / "torn.img");
  stop = true;
  writer.join();
  REQUIRE_FALSE(torn.ok());
  CHECK(torn.error().code == Errc::kConflict);
  CHECK(torn.error().message.find("src/main.py (changed)") != std::string::npos);
  CHECK_FALSE(fs::exists(out / "torn.img"));
}

TEST_CASE("workspace: an image grows when extended attributes need more blocks than the estimate") {
  Tmp t("ws", true), out("ws-img");
  std::string value(3000, 'v');
  for (int f = 0; f < 6000; ++f) {  // 60 directories: mke2fs -d is slow on large ones
    if (f % 100 == 0) fs::create_directory(t / fmt::format("d{}", f / 100));
    std::string p = t / fmt::format("d{}/f{}", f / 100, f % 100);
    ::close(::open(p.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
    if (::setxattr(p.c_str(), "user.big", value.data(), value.size(), 0) != 0) {
      MESSAGE("skipped: " << t.path << " does not take user extended attributes (" << std::strerror(errno) << ")");
      return;
    }
  }
  auto tree = build_mount_image(t.path, out / "x.img");
  REQUIRE_MESSAGE(tree.ok(), why(tree));
  int status = 0;
  std::string fsck = sh("/usr/sbin/e2fsck -fn " + out / "x.img", &status);
  CHECK_MESSAGE(status == 0, fsck);
  CHECK(sh("/usr/sbin/debugfs -R 'ea_list /d59/f99' " + out / "x.img").find("user.big (3000)") != std::string::npos);
}

TEST_CASE("workspace: changes are applied in place: files, symlinks, directories, modes and deletions") {
  Tmp t;
  make_repo(t);
  auto base = scan_host_tree(t.path);
  REQUIRE(base.ok());
  Guest g;
  g.files["src/main.py"] = "print('changed')\n";
  g.files["src/new.py"] = "x = 1\n";
  g.files["pkg/sub/mod.py"] = "y = 2\n";
  g.files["tool.sh"] = "#!/bin/sh\n";
  std::vector<Change> changes = {
      file_change(Change::Kind::kModified, "src/main.py", g.files["src/main.py"]),
      file_change(Change::Kind::kCreated, "src/new.py", g.files["src/new.py"]),
      dir_change(Change::Kind::kCreated, "pkg", 0750),
      dir_change(Change::Kind::kCreated, "pkg/sub", 0700),
      file_change(Change::Kind::kCreated, "pkg/sub/mod.py", g.files["pkg/sub/mod.py"]),
      file_change(Change::Kind::kCreated, "tool.sh", g.files["tool.sh"], 01755),  // sticky dropped on a file
      link_change(Change::Kind::kCreated, "pkg/link", "../src/new.py"),
      deleted(FileType::kFile, "src/util.py"),
      deleted(FileType::kDir, "docs/old"),
      deleted(FileType::kFile, "docs/old/notes.txt"),
      deleted(FileType::kSymlink, "main-link"),
      dir_change(Change::Kind::kModified, "docs", 0700),
  };
  auto r = apply_changes(t.path, &*base, changes, g.fn());
  REQUIRE_MESSAGE(r.ok(), why(r));
  CHECK(r->applied.size() == changes.size());
  CHECK(r->deletions_skipped.empty());
  CHECK(g.fetches == 4);
  CHECK(get(t / "src/main.py") == "print('changed')\n");
  CHECK(get(t / "src/new.py") == "x = 1\n");
  CHECK(get(t / "pkg/sub/mod.py") == "y = 2\n");
  CHECK(fs::read_symlink(t / "pkg/link") == "../src/new.py");
  CHECK(get(t / "pkg/link") == "x = 1\n");
  CHECK_FALSE(fs::exists(t / "src/util.py"));
  CHECK_FALSE(fs::exists(t / "docs/old"));
  CHECK_FALSE(fs::is_symlink(t / "main-link"));
  CHECK(get(t / "README.md") == "# demo\nline two\n");
  struct stat st{};
  REQUIRE(::stat((t / "tool.sh").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0755);
  CHECK(st.st_uid == ::getuid());
  REQUIRE(::stat((t / "pkg").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0750);
  REQUIRE(::stat((t / "pkg/sub").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0700);
  REQUIRE(::stat((t / "docs").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0700);
  for (const auto& e : fs::recursive_directory_iterator(t.path))
    CHECK(e.path().filename().string().rfind(".ztee-tmp-", 0) != 0);

  // host_after is what a rescan sees for the written and removed paths.
  auto rescan = scan_host_tree(t.path);
  REQUIRE(rescan.ok());
  for (const auto& [rel, entry] : r->host_after) {
    if (!entry) {
      CHECK_MESSAGE(rescan->count(rel) == 0, rel);
      continue;
    }
    REQUIRE_MESSAGE(rescan->count(rel) == 1, rel);
    CHECK_MESSAGE(rescan->at(rel) == *entry, rel);
  }
  CHECK(r->host_after.size() == changes.size());

  // A second export of a path the first one wrote: a conflict with the tree
  // at start, fine once the base is updated.
  g.files["src/main.py"] = "print('changed again')\n";
  std::vector<Change> again = {file_change(Change::Kind::kModified, "src/main.py", g.files["src/main.py"])};
  auto stale = apply_changes(t.path, &*base, again, g.fn());
  REQUIRE_FALSE(stale.ok());
  CHECK(stale.error().code == Errc::kConflict);
  update_base(*base, *r);
  auto second = apply_changes(t.path, &*base, again, g.fn());
  REQUIRE_MESSAGE(second.ok(), why(second));
  CHECK(get(t / "src/main.py") == "print('changed again')\n");

  // A file created in a directory the changes do not name: its parents are made.
  auto base2 = scan_host_tree(t.path);
  REQUIRE(base2.ok());
  g.files["a/b/c.txt"] = "deep\n";
  auto deep = apply_changes(t.path, &*base2, {file_change(Change::Kind::kCreated, "a/b/c.txt", "deep\n")}, g.fn());
  REQUIRE_MESSAGE(deep.ok(), why(deep));
  CHECK(get(t / "a/b/c.txt") == "deep\n");
  CHECK(deep->host_after.count("a") == 1);
  CHECK(deep->host_after.at("a")->type == FileType::kDir);
  CHECK((deep->host_after.at("a")->mode & 0777) == (0755 & ~current_umask()));
}

TEST_CASE("workspace: a separate destination gets the writes; deletions are only recorded") {
  Tmp host, dest("ws-dest");
  make_repo(host);
  put(dest / "src/main.py", "dest's own version\n");
  put(dest / "keep.txt", "kept\n");
  Guest g;
  g.files["src/main.py"] = "print('changed')\n";
  g.files["lib/new.py"] = "z\n";
  std::vector<Change> changes = {
      file_change(Change::Kind::kModified, "src/main.py", g.files["src/main.py"]),
      file_change(Change::Kind::kCreated, "lib/new.py", g.files["lib/new.py"], 0600),
      deleted(FileType::kFile, "README.md"),
      deleted(FileType::kFile, "keep.txt"),
      dir_change(Change::Kind::kCreated, "out", 0750),
  };
  std::string host_before = tree_hash(host.path);
  auto r = apply_changes(dest.path, nullptr, changes, g.fn());
  REQUIRE_MESSAGE(r.ok(), why(r));
  CHECK(r->applied.size() == 3);
  REQUIRE(r->deletions_skipped.size() == 2);
  CHECK(r->deletions_skipped[0].path == "README.md");
  CHECK(get(dest / "src/main.py") == "print('changed')\n");
  CHECK(get(dest / "lib/new.py") == "z\n");
  CHECK(get(dest / "keep.txt") == "kept\n");
  CHECK(fs::is_directory(dest / "out"));
  CHECK(tree_hash(host.path) == host_before);

  // A directory where a file goes: refused, nothing written.
  fs::create_directories(dest / "blocker.txt");
  g.files["blocker.txt"] = "b\n";
  g.files["fresh.txt"] = "f\n";
  check_refused(dest.path, nullptr,
                {file_change(Change::Kind::kCreated, "fresh.txt", "f\n"), file_change(Change::Kind::kCreated, "blocker.txt", "b\n")}, g,
                Errc::kInvalidArgument, "turns a directory into a non-directory");
  auto missing = apply_changes(dest / "nope", nullptr, {}, g.fn());
  CHECK(missing.error().code == Errc::kNotFound);
}

TEST_CASE("workspace: every unsafe change is refused and leaves the host tree byte-identical") {
  Tmp t, elsewhere("ws-elsewhere");
  make_repo(t);
  put(t / "hard/a", "linked\n");
  REQUIRE(::link((t / "hard/a").c_str(), (t / "hard/b").c_str()) == 0);
  REQUIRE(::symlink(elsewhere.path.c_str(), (t / "out-link").c_str()) == 0);
  auto base = scan_host_tree(t.path);
  REQUIRE(base.ok());
  Guest g;
  g.files["x.txt"] = "x\n";
  Change ok = file_change(Change::Kind::kCreated, "x.txt", "x\n");
  auto with = [&](Change c) { return std::vector<Change>{ok, std::move(c)}; };
  auto bad_path = [&](std::string p) {
    Change c = ok;
    c.path = std::move(p);
    return c;
  };

  check_refused(t.path, &*base, with(bad_path("../escape.txt")), g, Errc::kPermission, "'..' component");
  check_refused(t.path, &*base, with(bad_path("src/../../escape.txt")), g, Errc::kPermission, "'..' component");
  check_refused(t.path, &*base, with(bad_path("/etc/passwd")), g, Errc::kPermission, "absolute");
  check_refused(t.path, &*base, with(bad_path("src//a")), g, Errc::kInvalidArgument, "empty component");
  check_refused(t.path, &*base, with(bad_path("src/")), g, Errc::kInvalidArgument, "empty component");
  check_refused(t.path, &*base, with(bad_path("./a")), g, Errc::kPermission, "'.' component");
  check_refused(t.path, &*base, with(bad_path(std::string("a\0b", 3))), g, Errc::kInvalidArgument, "NUL");
  check_refused(t.path, &*base, with(bad_path("")), g, Errc::kInvalidArgument, "empty");
  check_refused(t.path, &*base, {ok, ok}, g, Errc::kInvalidArgument, "more than once");
  Change other_mount = ok;
  other_mount.path = "y";
  other_mount.mount = "/other";
  check_refused(t.path, &*base, with(other_mount), g, Errc::kInvalidArgument, "more than one mount");

  Change dev = ok;
  dev.path = "dev0";
  dev.type = FileType::kOther;
  check_refused(t.path, &*base, with(dev), g, Errc::kPermission, "device, fifo or socket");
  g.files["suid"] = "s";
  check_refused(t.path, &*base, with(file_change(Change::Kind::kCreated, "suid", "s", 04755)), g, Errc::kPermission, "setuid");
  check_refused(t.path, &*base, with(file_change(Change::Kind::kCreated, "suid", "s", 02755)), g, Errc::kPermission, "setgid");
  check_refused(t.path, &*base, with(dir_change(Change::Kind::kCreated, "sgid-dir", 02775)), g, Errc::kPermission, "setgid");

  g.files["hard/a"] = "new\n";
  check_refused(t.path, &*base, with(file_change(Change::Kind::kModified, "hard/a", "new\n")), g, Errc::kPermission, "hard links");
  check_refused(t.path, &*base, with(deleted(FileType::kFile, "hard/b")), g, Errc::kPermission, "hard links");

  check_refused(t.path, &*base, with(link_change(Change::Kind::kCreated, "l", "/etc/shadow")), g, Errc::kPermission, "absolute");
  check_refused(t.path, &*base, with(link_change(Change::Kind::kCreated, "src/l", "../../outside")), g, Errc::kPermission,
                "leaves the directory");
  check_refused(t.path, &*base, with(link_change(Change::Kind::kCreated, "l", "src/../..")), g, Errc::kPermission,
                "leaves the directory");

  // The guest changed the file after the diff was reviewed.
  Change stale = file_change(Change::Kind::kCreated, "stale.txt", "reviewed\n");
  g.files["stale.txt"] = "something else\n";
  check_refused(t.path, &*base, with(stale), g, Errc::kPermission, "sha256");
  Change no_sha = stale;
  no_sha.sha256 = "zz";
  check_refused(t.path, &*base, with(no_sha), g, Errc::kInvalidArgument, "sha256");

  // A change whose parent on the host is a symlink (to a directory outside).
  g.files["out-link/planted"] = "p\n";
  check_refused(t.path, &*base, with(file_change(Change::Kind::kCreated, "out-link/planted", "p\n")), g, Errc::kPermission,
                "is a symlink");
  CHECK(fs::is_empty(elsewhere.path));
  // A directory turned into a file.
  check_refused(t.path, &*base, with(file_change(Change::Kind::kModified, "src", "x\n")), g, Errc::kInvalidArgument,
                "turns a directory");
  // A deleted directory that would keep entries on the host.
  check_refused(t.path, &*base, with(deleted(FileType::kDir, "src")), g, Errc::kInvalidArgument, "not empty on the host");
  CHECK(fs::exists(t / "src/main.py"));
  // Creating inside a directory the same changes delete.
  g.files["docs/old/new.txt"] = "n\n";
  check_refused(t.path, &*base,
                {deleted(FileType::kDir, "docs/old"), deleted(FileType::kFile, "docs/old/notes.txt"),
                 file_change(Change::Kind::kCreated, "docs/old/new.txt", "n\n")},
                g, Errc::kInvalidArgument, "deleted by the same changes");
  // A fetch that fails.
  g.files.erase("x.txt");
  check_refused(t.path, &*base, {ok}, g, Errc::kNotFound, "cannot fetch");
}

TEST_CASE("workspace: symlink tricks on the host between the scan and the export") {
  Tmp t, elsewhere("ws-elsewhere");
  make_repo(t);
  auto base = scan_host_tree(t.path);
  REQUIRE(base.ok());
  // src becomes a symlink to a directory outside after the sandbox started.
  fs::rename(t / "src", t / "src.moved");
  REQUIRE(::symlink(elsewhere.path.c_str(), (t / "src").c_str()) == 0);
  Guest g;
  g.files["src/main.py"] = "pwned\n";
  g.files["src/new.py"] = "pwned\n";
  check_refused(t.path, &*base, {file_change(Change::Kind::kModified, "src/main.py", "pwned\n")}, g, Errc::kPermission,
                "'src' on the host is a symlink");
  check_refused(t.path, &*base, {file_change(Change::Kind::kCreated, "src/new.py", "pwned\n")}, g, Errc::kPermission,
                "is a symlink");
  check_refused(t.path, &*base, {deleted(FileType::kFile, "src/util.py")}, g, Errc::kPermission, "is a symlink");
  CHECK(fs::is_empty(elsewhere.path));
  // The same in a separate destination.
  Tmp dest("ws-dest");
  REQUIRE(::symlink(elsewhere.path.c_str(), (dest / "src").c_str()) == 0);
  check_refused(dest.path, nullptr, {file_change(Change::Kind::kCreated, "src/new.py", "pwned\n")}, g, Errc::kPermission,
                "is a symlink");
  CHECK(fs::is_empty(elsewhere.path));
}

TEST_CASE("workspace: host edits since the start are conflicts, all named in one error, nothing applied") {
  Tmp t;
  make_repo(t);
  auto base = scan_host_tree(t.path);
  REQUIRE(base.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  put(t / "src/main.py", "print('edited on the host')\n");  // modified by the user meanwhile
  put(t / "src/new.py", "host's own new file\n");           // created by the user at the same path
  fs::remove(t / "src/util.py");                             // deleted by the user
  Guest g;
  g.files["src/main.py"] = "guest\n";
  g.files["src/new.py"] = "guest\n";
  g.files["README.md"] = "fine\n";
  std::vector<Change> changes = {
      file_change(Change::Kind::kModified, "README.md", "fine\n"),
      file_change(Change::Kind::kModified, "src/main.py", "guest\n"),
      file_change(Change::Kind::kCreated, "src/new.py", "guest\n"),
      deleted(FileType::kFile, "src/util.py"),
  };
  std::string before = tree_hash(t.path);
  auto r = apply_changes(t.path, &*base, changes, g.fn());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::kConflict);
  CHECK(r.error().message.find("3 paths") != std::string::npos);
  for (const char* p : {"'src/main.py'", "'src/new.py'", "'src/util.py'"})
    CHECK_MESSAGE(r.error().message.find(p) != std::string::npos, why(r));
  CHECK(r.error().message.find("README") == std::string::npos);
  CHECK(tree_hash(t.path) == before);
  CHECK(g.fetches == 0);  // conflicts are found before any content is fetched
}

TEST_CASE("workspace: nothing is applied when the third of three changes fails") {
  Tmp t;
  make_repo(t);
  auto base = scan_host_tree(t.path);
  REQUIRE(base.ok());
  Guest g;
  g.files["a.txt"] = "a\n";
  g.files["README.md"] = "b\n";
  g.files["z.txt"] = "tampered\n";
  std::vector<Change> changes = {
      file_change(Change::Kind::kCreated, "a.txt", "a\n"),
      file_change(Change::Kind::kModified, "README.md", "b\n"),
      file_change(Change::Kind::kCreated, "z.txt", "reviewed\n"),
  };
  check_refused(t.path, &*base, changes, g, Errc::kPermission, "sha256");
  CHECK_FALSE(fs::exists(t / "a.txt"));
  CHECK(get(t / "README.md") == "# demo\nline two\n");
  // And the conflict case: the third conflicts.
  g.files["z.txt"] = "reviewed\n";
  put(t / "z.txt", "appeared on the host\n");
  check_refused(t.path, &*base, changes, g, Errc::kConflict, "'z.txt'");
  CHECK_FALSE(fs::exists(t / "a.txt"));
}

TEST_CASE("workspace: the review patch is diff -u against the host, with binary files and odd names") {
  Tmp t;
  make_repo(t);
  put(t / "bin.dat", std::string("\x7f" "ELF\0\0\0", 7));
  put(t / "odd \"name\".txt", "one\n");
  REQUIRE(::symlink("/etc", (t / "etc").c_str()) == 0);
  Guest g;
  g.files["README.md"] = "# demo\nline 2\n";
  g.files["src/added.py"] = "new\n";
  g.files["bin.dat"] = std::string("\x7f" "ELF\1\0\0", 7);
  g.files["odd \"name\".txt"] = "two\n";
  std::vector<Change> changes = {
      file_change(Change::Kind::kModified, "README.md", g.files["README.md"]),
      file_change(Change::Kind::kCreated, "src/added.py", g.files["src/added.py"]),
      deleted(FileType::kFile, "src/util.py"),
      file_change(Change::Kind::kModified, "bin.dat", g.files["bin.dat"]),
      file_change(Change::Kind::kModified, "odd \"name\".txt", g.files["odd \"name\".txt"]),
      dir_change(Change::Kind::kCreated, "newdir"),
      link_change(Change::Kind::kCreated, "l", "README.md"),
  };
  // Its private copies go under TMPDIR and are gone afterwards.
  Tmp scratch("ws-scratch");
  const char* old_tmpdir = std::getenv("TMPDIR");
  std::string saved = old_tmpdir ? old_tmpdir : "";
  ::setenv("TMPDIR", scratch.path.c_str(), 1);
  bool used_scratch = false;
  FetchFn inner = g.fn();
  FetchFn watching = [&](const Change& c) {
    used_scratch = used_scratch || !fs::is_empty(scratch.path);
    return inner(c);
  };
  auto p = unified_patch(t.path, changes, watching);
  if (old_tmpdir)
    ::setenv("TMPDIR", saved.c_str(), 1);
  else
    ::unsetenv("TMPDIR");
  CHECK(used_scratch);
  CHECK(fs::is_empty(scratch.path));
  REQUIRE_MESSAGE(p.ok(), why(p));
  const std::string& s = *p;
  INFO(s);
  CHECK(s.find("--- a/README.md\n+++ b/README.md\n@@ -1,2 +1,2 @@\n # demo\n-line two\n+line 2\n") != std::string::npos);
  CHECK(s.find("--- /dev/null\n+++ b/src/added.py\n@@ -0,0 +1 @@\n+new\n") != std::string::npos);
  CHECK(s.find("--- a/src/util.py\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-def f():\n-    return 1\n") != std::string::npos);
  CHECK(s.find("Binary files a/bin.dat and b/bin.dat differ\n") != std::string::npos);
  CHECK(s.find("--- \"a/odd \\\"name\\\".txt\"\n") != std::string::npos);
  CHECK(s.find("newdir") == std::string::npos);
  CHECK(s.find("README.md\n+++") != std::string::npos);
  // diff itself agrees the patch applies to the host tree.
  Tmp copy("ws-copy");
  sh(fmt::format("cp -a {}/. {}", t.path, copy.path));
  {
    std::string plain = s;
    auto bin = plain.find("Binary files");
    plain.erase(bin, plain.find('\n', bin) + 1 - bin);
    std::ofstream(copy / "p.diff") << plain;
  }
  int status = 0;
  std::string out = sh(fmt::format("cd {} && patch -p1 --dry-run < p.diff", copy.path), &status);
  if (fs::exists("/usr/bin/patch")) CHECK_MESSAGE(status == 0, out);

  // The guest's content no longer matches the reviewed digest.
  g.files["src/added.py"] = "changed after review\n";
  auto stale = unified_patch(t.path, changes, g.fn());
  REQUIRE_FALSE(stale.ok());
  CHECK(stale.error().code == Errc::kPermission);
  // The host file is reached through a symlink: not followed.
  g.files["etc/passwd"] = "x\n";
  auto through = unified_patch(t.path, {file_change(Change::Kind::kModified, "etc/passwd", "x\n")}, g.fn());
  REQUIRE_FALSE(through.ok());
  CHECK(through.error().code == Errc::kPermission);
  auto dots = unified_patch(t.path, {file_change(Change::Kind::kModified, "../x", "x\n")}, g.fn());
  CHECK(dots.error().code == Errc::kPermission);
}
