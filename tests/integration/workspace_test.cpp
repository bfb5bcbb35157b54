// Workspace mounts on real microVMs: a host directory the guest reads but
// never writes, the diff of the guest's writable layers, the reviewed
// sync-back (export_changes) and the forensic diff record.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common.hpp"
#include "../why.hpp"

using ztee::Change;
using ztee::Errc;
namespace fs = std::filesystem;

namespace {

void write(const std::string& path, const std::string& data, mode_t mode = 0644) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << data;
  ::chmod(path.c_str(), mode);
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Names, types, modes, owners, link targets and contents of every entry.
std::string tree_fingerprint(const std::string& root) {
  std::vector<std::string> lines;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
    struct stat st{};
    REQUIRE(::lstat(it->path().c_str(), &st) == 0);
    std::string rel = fs::relative(it->path(), root);
    std::string line = rel + " " + std::to_string(st.st_mode) + " " + std::to_string(st.st_uid) + " " +
                       std::to_string(st.st_nlink) + " " + std::to_string(st.st_mtim.tv_sec) + "." +
                       std::to_string(st.st_mtim.tv_nsec);
    if (S_ISLNK(st.st_mode)) line += " -> " + fs::read_symlink(it->path()).string();
    if (S_ISREG(st.st_mode)) line += " " + slurp(it->path());
    lines.push_back(line);
  }
  std::sort(lines.begin(), lines.end());
  std::string out;
  for (auto& l : lines) out += l + "\n";
  return out;
}

// A small repository on the host.
const std::string& repo() {
  static std::string dir = [] {
    std::string d = test::state_dir() + "/../" + fs::path(test::state_dir()).filename().string() + "-repo";
    fs::remove_all(d);
    write(d + "/README.md", "# demo\n");
    write(d + "/src/main.py", "print('hello')\n");
    write(d + "/src/util.py", "def add(a, b):\n    return a + b\n");
    write(d + "/docs/old.txt", "obsolete\n");
    write(d + "/run.sh", "#!/bin/sh\necho run\n", 0755);
    fs::create_symlink("README.md", d + "/readme-link");
    return fs::weakly_canonical(d).string();
  }();
  return dir;
}

const std::string& diff_log() {
  static std::string p = test::state_dir() + "-difflog.jsonl";
  return p;
}

ztee::Sandbox& mounted() {
  static ztee::Sandbox sb = [] {
    ztee::SandboxOptions o;
    o.mounts = {{repo(), "/workspace"}};
    o.diff_log = diff_log();
    auto r = test::runtime().create_sandbox(o);
    if (!r) FAIL("create_sandbox with a mount: " << r.error().message);
    return std::move(r).value();
  }();
  REQUIRE(sb.state() == ztee::SandboxState::kReady);
  return sb;
}

const Change* find(const std::vector<Change>& cs, const std::string& path) {
  for (const auto& c : cs)
    if (c.path == path) return &c;
  return nullptr;
}

std::string run_ok(ztee::Sandbox& sb, const std::string& cmd) {
  auto r = sb.run(cmd);
  REQUIRE_MESSAGE(r.ok(), cmd << ": " << (r ? "" : r.error().message));
  INFO(cmd << "\nstdout: " << r->stdout_data << "\nstderr: " << r->stderr_data);
  REQUIRE(r->exit_code == 0);
  return r->stdout_data;
}

}  // namespace

TEST_CASE("a mounted host directory is readable in the guest, and writes stay in the guest") {
  std::string before = tree_fingerprint(repo());
  auto& sb = mounted();
  CHECK(run_ok(sb, "cat /workspace/src/main.py") == "print('hello')\n");
  CHECK(run_ok(sb, "/workspace/run.sh") == "run\n");
  CHECK(run_ok(sb, "readlink /workspace/readme-link") == "README.md\n");
  run_ok(sb, "echo scratch > /workspace/scratch.txt && cat /workspace/scratch.txt");
  CHECK(tree_fingerprint(repo()) == before);
  run_ok(sb, "rm /workspace/scratch.txt");
}

TEST_CASE("hostile code cannot write the host directory, whatever it tries") {
  std::string before = tree_fingerprint(repo());
  auto& sb = mounted();
  // Every attempt runs as guest root; each either fails or lands in the
  // guest's memory only.
  const char* attempts[] = {
      "mount -o remount,rw /workspace",
      "for d in /dev/vd*; do blockdev --setrw $d; dd if=/dev/zero of=$d bs=4096 count=16 conv=notrunc,fsync; done",
      "mkdir -p /mnt/x && mount -o rw /dev/vdb /mnt/x",
      "mkdir -p /mnt/y && mount -t ext4 -o ro,noload /dev/vdb /mnt/y && mount -o remount,rw /mnt/y",
      "chmod 777 /workspace/README.md && chown 1234 /workspace/src/main.py",
      "ln -sf /etc/passwd /workspace/README.md && echo pwned >> /workspace/README.md",
      "echo pwned > /workspace/src/util.py && rm -rf /workspace/docs",
      "touch -d 2001-01-01 /workspace/run.sh",
      "sync; echo 3 > /proc/sys/vm/drop_caches",
  };
  for (const char* cmd : attempts) {
    auto r = sb.run(cmd);
    REQUIRE(r.ok());
  }
  // The raw disk refuses writes: read-only for the guest kernel and the VMM.
  auto dd = sb.run("dd if=/dev/zero of=/dev/vdb bs=512 count=1 conv=notrunc,fsync 2>&1");
  REQUIRE(dd.ok());
  CHECK(dd->exit_code != 0);
  CHECK(sb.state() == ztee::SandboxState::kReady);
  CHECK(tree_fingerprint(repo()) == before);
  // The guest's view did change: restore it for the next cases (a fresh
  // sandbox would cost a boot).
  auto d = sb.diff("/workspace");
  REQUIRE(d.ok());
  CHECK(find(*d, "src/util.py") != nullptr);
  CHECK(find(*d, "docs/old.txt") != nullptr);
}

TEST_CASE("diff lists created, modified, deleted, renamed and chmod-ed entries with digests") {
  // A fresh sandbox over the same tree: the hostile case left changes behind.
  ztee::SandboxOptions o;
  o.mounts = {{repo(), "/workspace"}, {repo() + "/docs", "/data/docs"}};
  auto sb = test::runtime().create_sandbox(o);
  REQUIRE_MESSAGE(sb.ok(), (sb ? "" : sb.error().message));
  auto none = sb->diff("/workspace");
  REQUIRE(none.ok());
  CHECK(none->empty());
  run_ok(*sb,
         "cd /workspace && echo new > new.txt && echo more >> src/main.py && rm docs/old.txt && "
         "mv src/util.py src/helpers.py && chmod 700 run.sh && mkdir -p pkg/sub && echo x > pkg/sub/y && "
         "ln -s ../README.md pkg/link && echo root-change > /root/note && echo d > /data/docs/added");
  auto d = sb->diff("/workspace");
  REQUIRE(d.ok());
  auto at = [&](const std::string& p) {
    const Change* c = find(*d, p);
    INFO("path " << p);
    REQUIRE(c != nullptr);
    CHECK(c->mount == "/workspace");
    return *c;
  };
  CHECK(at("new.txt").kind == Change::Kind::kCreated);
  CHECK(at("new.txt").sha256 + "\n" == run_ok(*sb, "sha256sum /workspace/new.txt | cut -d' ' -f1"));
  CHECK(at("new.txt").size == 4);
  CHECK(at("src/main.py").kind == Change::Kind::kModified);
  CHECK(at("docs/old.txt").kind == Change::Kind::kDeleted);
  CHECK(at("src/util.py").kind == Change::Kind::kDeleted);
  CHECK(at("src/helpers.py").kind == Change::Kind::kCreated);
  CHECK(at("run.sh").kind == Change::Kind::kModified);
  CHECK(at("run.sh").mode == 0700);
  CHECK(at("pkg").type == ztee::FileType::kDir);
  CHECK(at("pkg/sub/y").kind == Change::Kind::kCreated);
  CHECK(at("pkg/link").type == ztee::FileType::kSymlink);
  CHECK(at("pkg/link").link_target == "../README.md");
  CHECK(find(*d, "README.md") == nullptr);
  // The same content hashes the same on both sides.
  std::string sum = run_ok(*sb, "sha256sum /workspace/src/main.py | cut -d' ' -f1");
  CHECK(at("src/main.py").sha256 + "\n" == sum);

  auto root = sb->diff("/");
  REQUIRE(root.ok());
  const Change* note = find(*root, "/root/note");
  REQUIRE(note != nullptr);
  CHECK(note->mount.empty());
  for (const auto& c : *root) CHECK(c.mount.empty());
  CHECK(find(*root, "/workspace") == nullptr);  // mount points are not changes
  CHECK(find(*root, "/data") == nullptr);

  auto docs = sb->diff("/data/docs");
  REQUIRE(docs.ok());
  REQUIRE(docs->size() == 1);
  CHECK((*docs)[0].path == "added");

  auto all = sb->diff();
  REQUIRE(all.ok());
  CHECK(all->size() == d->size() + root->size() + docs->size());

  auto bad = sb->diff("/nowhere");
  REQUIRE(!bad.ok());
  CHECK(bad.error().code == Errc::kNotFound);
}

TEST_CASE("export_changes applies only what was approved, and a patch shows it first") {
  std::string work = repo() + "-export";
  fs::remove_all(work);
  fs::copy(repo(), work, fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  ztee::SandboxOptions o;
  o.mounts = {{work, "/workspace"}};
  auto sb = test::runtime().create_sandbox(o);
  REQUIRE_MESSAGE(sb.ok(), (sb ? "" : sb.error().message));
  // The agent loop: edit two files, delete one, review, approve one, apply.
  run_ok(*sb,
         "cd /workspace && echo \"print('bye')\" >> src/main.py && echo '# more' >> README.md && "
         "rm docs/old.txt");
  auto d = sb->diff("/workspace");
  REQUIRE(d.ok());
  CHECK(d->size() == 3);
  auto patch = sb->patch("/workspace", {"src/main.py"});
  REQUIRE_MESSAGE(patch.ok(), (patch ? "" : patch.error().message));
  CHECK(patch->find("a/src/main.py") != std::string::npos);
  CHECK(patch->find("+print('bye')") != std::string::npos);
  CHECK(patch->find("README") == std::string::npos);

  std::string readme_before = slurp(work + "/README.md");
  ztee::ExportOptions eo;
  std::vector<std::string> asked;
  eo.approve = [&](const Change& c) {
    asked.push_back(c.path);
    return c.path == "src/main.py";
  };
  auto r = sb->export_changes(eo);
  REQUIRE_MESSAGE(r.ok(), (r ? "" : r.error().message));
  CHECK(asked.size() == 3);
  REQUIRE(r->applied.size() == 1);
  CHECK(r->applied[0].path == "src/main.py");
  CHECK(r->declined.size() == 2);
  CHECK(slurp(work + "/src/main.py") == "print('hello')\nprint('bye')\n");
  CHECK(slurp(work + "/README.md") == readme_before);
  CHECK(fs::exists(work + "/docs/old.txt"));

  // Selecting by path; a path that is not a change is refused.
  ztee::ExportOptions del;
  del.paths = {"docs"};
  auto r2 = sb->export_changes(del);
  REQUIRE_MESSAGE(r2.ok(), (r2 ? "" : r2.error().message));
  CHECK(!fs::exists(work + "/docs/old.txt"));
  // An earlier export's own writes are not conflicts for a later one.
  ztee::ExportOptions again;
  again.paths = {"src/main.py"};
  auto r2b = sb->export_changes(again);
  REQUIRE_MESSAGE(r2b.ok(), (r2b ? "" : r2b.error().message));
  CHECK(slurp(work + "/src/main.py") == "print('hello')\nprint('bye')\n");
  del.paths = {"no/such/change"};
  auto r3 = sb->export_changes(del);
  REQUIRE(!r3.ok());
  CHECK(r3.error().code == Errc::kInvalidArgument);

  // A host file edited since the sandbox started is a conflict: nothing applied.
  write(work + "/README.md", "# edited on the host\n");
  std::string host = tree_fingerprint(work);
  ztee::ExportOptions rest;
  auto r4 = sb->export_changes(rest);
  REQUIRE(!r4.ok());
  CHECK(r4.error().code == Errc::kConflict);
  CHECK(r4.error().message.find("README.md") != std::string::npos);
  CHECK(tree_fingerprint(work) == host);

  // A separate destination receives the changes instead.
  std::string dest = work + "-dest";
  fs::remove_all(dest);
  fs::create_directories(dest);
  ztee::ExportOptions to;
  to.dest_dir = dest;
  to.paths = {"README.md", "docs"};
  auto r5 = sb->export_changes(to);
  REQUIRE_MESSAGE(r5.ok(), (r5 ? "" : r5.error().message));
  CHECK(slurp(dest + "/README.md") == "# demo\n# more\n");
  REQUIRE(r5->skipped_deletions.size() == 1);
  CHECK(r5->skipped_deletions[0].path == "docs/old.txt");
  CHECK(tree_fingerprint(work) == host);
}

TEST_CASE("export_changes refuses unsafe changes and applies nothing") {
  std::string work = repo() + "-unsafe";
  fs::remove_all(work);
  fs::copy(repo(), work, fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  ztee::SandboxOptions o;
  o.mounts = {{work, "/workspace"}};
  auto sb = test::runtime().create_sandbox(o);
  REQUIRE_MESSAGE(sb.ok(), (sb ? "" : sb.error().message));
  std::string host = tree_fingerprint(work);
  struct Case {
    const char* setup;
    const char* path;
  } cases[] = {
      {"cd /workspace && echo x > suid && chmod 4755 suid", "suid"},
      {"cd /workspace && echo x > sgid && chmod 2755 sgid", "sgid"},
      {"cd /workspace && ln -s /etc/passwd escape", "escape"},
      {"cd /workspace && ln -s ../../../etc escape2", "escape2"},
      {"cd /workspace && mknod dev c 1 3", "dev"},
      {"cd /workspace && mkfifo fifo", "fifo"},
  };
  for (const auto& c : cases) {
    INFO(c.setup);
    run_ok(*sb, c.setup);
    ztee::ExportOptions eo;
    eo.paths = {c.path, "src"};  // with a harmless change: still nothing applied
    run_ok(*sb, "echo harmless >> /workspace/src/main.py");
    auto r = sb->export_changes(eo);
    REQUIRE(!r.ok());
    CHECK(r.error().code == Errc::kPermission);
    CHECK(tree_fingerprint(work) == host);
  }
  // Content changed after the review (the diff's digest) is refused too;
  // exercised by the unit tests of lib/workspace, which can interleave.
  CHECK(sb->destroy().ok());
}

TEST_CASE("the forensic diff record is written when the sandbox is destroyed") {
  auto& sb = mounted();
  std::string id = sb.id();
  REQUIRE(sb.destroy().ok());
  std::string log = slurp(diff_log());
  INFO(log);
  CHECK(std::count(log.begin(), log.end(), '\n') == 1);
  CHECK(log.find("\"sandbox\":\"" + id + "\"") != std::string::npos);
  CHECK(log.find("\"path\":\"src/util.py\"") != std::string::npos);
  CHECK(log.find("\"mount\":\"/workspace\"") != std::string::npos);
}

TEST_CASE("bad mounts are refused before anything starts, and leave nothing behind") {
  int before = test::count_state_entries();
  auto fails = [&](std::vector<ztee::Mount> m, Errc code, const char* words) {
    ztee::SandboxOptions o;
    o.mounts = std::move(m);
    auto r = test::runtime().create_sandbox(o);
    REQUIRE(!r.ok());
    CHECK(r.error().code == code);
    CHECK_MESSAGE(r.error().message.find(words) != std::string::npos, why(r));
  };
  fails({{"/nonexistent-dir", "/w"}}, Errc::kNotFound, "/nonexistent-dir");
  fails({{"relative", "/w"}}, Errc::kInvalidArgument, "absolute");
  fails({{repo(), "w"}}, Errc::kInvalidArgument, "guest path");
  fails({{repo(), "/"}}, Errc::kInvalidArgument, "guest path");
  fails({{repo(), "/proc/x"}}, Errc::kInvalidArgument, "guest path");
  fails({{repo(), "/a/../b"}}, Errc::kInvalidArgument, "guest path");
  fails({{repo(), "/w x"}}, Errc::kInvalidArgument, "guest path");
  fails({{repo(), "/w"}, {repo(), "/w/sub"}}, Errc::kInvalidArgument, "overlap");
  fails({{repo() + "/README.md", "/w"}}, Errc::kInvalidArgument, "not a directory");
  ztee::SandboxOptions snap;
  snap.mounts = {{repo(), "/w"}};
  snap.snapshottable = true;
  auto r = test::runtime().create_sandbox(snap);
  REQUIRE(!r.ok());
  CHECK(r.error().message.find("cold-booted") != std::string::npos);
  ztee::PoolOptions po;
  po.sandbox.mounts = {{repo(), "/w"}};
  auto p = test::runtime().create_pool(po);
  REQUIRE(!p.ok());
  CHECK(p.error().code == Errc::kInvalidArgument);
  CHECK(test::count_state_entries() == before);
}

TEST_CASE("collect_garbage removes the workspace images a dead process left, and keeps live ones") {
  std::string sd = test::state_dir() + "-gc";
  fs::remove_all(sd);
  fs::create_directories(sd);
  // Left by a process that died: an unheld lock, older than the grace period.
  fs::create_directories(sd + "/ws-dead");
  write(sd + "/ws-dead/owner", "1\n");
  write(sd + "/ws-dead/m0.ext4", "image bytes");
  struct timespec old[2] = {{::time(nullptr) - 3600, 0}, {::time(nullptr) - 3600, 0}};
  REQUIRE(::utimensat(AT_FDCWD, (sd + "/ws-dead").c_str(), old, 0) == 0);
  // Held by a live sandbox (here: this process).
  fs::create_directories(sd + "/ws-live");
  int fd = ::open((sd + "/ws-live/owner").c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(::flock(fd, LOCK_EX | LOCK_NB) == 0);
  REQUIRE(::utimensat(AT_FDCWD, (sd + "/ws-live").c_str(), old, 0) == 0);
  ztee::RuntimeOptions o;
  o.state_dir = sd;
  auto r = ztee::collect_garbage(o);
  REQUIRE_MESSAGE(r.ok(), (r ? "" : r.error().message));
  CHECK(!fs::exists(sd + "/ws-dead"));
  CHECK(fs::exists(sd + "/ws-live/owner"));
  ::close(fd);
  // A mounted sandbox's images exist while it lives and go with it.
  ztee::SandboxOptions so;
  so.mounts = {{repo(), "/workspace"}};
  auto before = test::count_state_entries();
  auto sb = test::runtime().create_sandbox(so);
  REQUIRE(sb.ok());
  bool found = false;
  for (const auto& e : fs::directory_iterator(test::state_dir()))
    found = found || e.path().filename().string().rfind("ws-", 0) == 0;
  CHECK(found);
  REQUIRE(sb->destroy().ok());
  CHECK(test::count_state_entries() == before);
  fs::remove_all(sd);
}
