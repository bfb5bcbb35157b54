// The jail's host-side pieces without a VM: id leases, the seccomp program,
// step reporting from a confined child, and leftover removal.
#include <doctest/doctest.h>
#include <elf.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/filter.h>
#include <linux/io_uring.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "jail/jail.hpp"
#include "proc/child.hpp"
#include "../why.hpp"

using namespace ztee::detail;
namespace fs = std::filesystem;

namespace {

std::string temp_dir() {
  char t[] = "/tmp/ztee-jail-unit.XXXXXX";
  REQUIRE(::mkdtemp(t) != nullptr);
  return t;
}

bool exists(const std::string& p) {
  struct stat st{};
  return ::lstat(p.c_str(), &st) == 0;
}

}  // namespace

TEST_CASE("jail ids: distinct leases, released files, stale files reclaimed, exhaustion named") {
  std::string dir = temp_dir();
  const std::string host = dir + "/host-ids.lock";  // not the host's: other processes' sandboxes hold indexes there
  auto a = allocate_id(dir, 1000, 4, host);
  auto b = allocate_id(dir, 1000, 4, host);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a->index() == 1);
  CHECK(b->index() == 2);
  CHECK(a->id() == 1001);
  CHECK(exists(dir + "/ids/1"));
  std::ifstream f(dir + "/ids/1");
  std::string pid;
  f >> pid;
  CHECK(pid == std::to_string(::getpid()));
  // A file left by an owner that is gone (nobody holds its lock) is taken over.
  { std::ofstream(dir + "/ids/3") << "999999\n"; }
  auto c = allocate_id(dir, 1000, 4, host);
  REQUIRE(c.ok());
  CHECK(c->index() == 3);
  auto d = allocate_id(dir, 1000, 4, host);
  REQUIRE(!d.ok());
  CHECK(d.error().message.find("id_count") != std::string::npos);
  CHECK(a->release().ok());
  CHECK(!exists(dir + "/ids/1"));
  auto e = allocate_id(dir, 1000, 4, host);
  REQUIRE(e.ok());
  CHECK(e->index() == 1);
  for (auto* l : {&*b, &*c, &*e}) CHECK(l->release().ok());
  CHECK(!exists(dir + "/ids/2"));
  CHECK(!exists(dir + "/ids/3"));
  fs::remove_all(dir);
}

TEST_CASE("jail ids: runtimes with different state dirs never share an id index (uid, network slot)") {
  std::string d1 = temp_dir(), d2 = temp_dir(), d3 = temp_dir();
  const std::string host = d1 + "/host-ids.lock";  // stands in for /run/ztee/ids.lock
  auto a = allocate_id(d1, 2000, 8, host);
  REQUIRE(a.ok());
  auto b = allocate_id(d2, 2000, 8, host);  // its own ids/ is empty, index 1 is still taken
  REQUIRE(b.ok());
  CHECK(a->index() == 1);
  CHECK(b->index() == 2);
  CHECK(!exists(d2 + "/ids/1"));  // the file it tried is not left behind
  // Another id range still skips the indexes in use: network slots follow the index.
  auto c = allocate_id(d3, 3000, 8, host);
  REQUIRE(c.ok());
  CHECK(c->index() == 3);
  CHECK(c->id() == 3003);
  // Released host-wide too.
  CHECK(a->release().ok());
  auto d = allocate_id(d2, 2000, 8, host);
  REQUIRE(d.ok());
  CHECK(d->index() == 1);
  for (auto* l : {&*b, &*c, &*d}) CHECK(l->release().ok());
  for (const auto& d : {d1, d2, d3}) fs::remove_all(d);
}

TEST_CASE("jail seccomp: the VMM filter exports as a BPF program") {
  auto p = build_vmm_seccomp(false);
  REQUIRE_MESSAGE(p.ok(), why(p));
  CHECK(p->size() > 30);
}

namespace {

// Runs `body` in a forked child under the VMM filter; returns its wait status.
template <typename Body>
int under_vmm_filter(Body body) {
  auto p = build_vmm_seccomp(false);
  REQUIRE(p.ok());
  sock_fprog prog{static_cast<unsigned short>(p->size()), p->data()};
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0)
      ::_exit(100);
    ::_exit(body());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

}  // namespace

TEST_CASE("jail seccomp: clone3 is refused with ENOSYS and a namespace-creating clone kills the VMM") {
  int st = under_vmm_filter([] {
    clone_args args{};
    args.exit_signal = SIGCHLD;
    long r = ::syscall(SYS_clone3, &args, sizeof args);
    if (r != -1 || errno != ENOSYS) return 1;
    io_uring_params params{};
    r = ::syscall(SYS_io_uring_setup, 4, &params);  // io_uring would bypass the filter
    return r == -1 && errno == ENOSYS ? 0 : 3;
  });
  CHECK(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
  st = under_vmm_filter([] {
    (void)::syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    return 2;  // not reached: the filter kills the process
  });
  CHECK(WIFSIGNALED(st));
  CHECK(WTERMSIG(st) == SIGSYS);
  st = under_vmm_filter([] {
    (void)::syscall(SYS_unshare, CLONE_NEWNET);
    return 2;
  });
  CHECK(WIFSIGNALED(st));
}

TEST_CASE("jail: a confined child's failing step is named with its errno") {
  Confinement c;
  c.netns_fd = 1 << 20;  // not an fd: setns fails with EBADF
  SpawnSpec spec;
  spec.argv = {"/bin/true"};
  spec.confinement = &c;
  auto r = spawn(spec);
  REQUIRE(!r.ok());
  CHECK(r.error().sys_errno == EBADF);
  CHECK(r.error().message.find("jail step 1 (join the sandbox's network namespace (setns))") != std::string::npos);

  Confinement g;
  g.cgroup_procs_fds = {1 << 20};
  spec.confinement = &g;
  auto r2 = spawn(spec);
  REQUIRE(!r2.ok());
  CHECK(r2.error().message.find("join the sandbox's cgroup") != std::string::npos);

  // no_new_privs alone works for anyone, and the child runs.
  Confinement n;
  n.no_new_privs = true;
  n.close_other_fds = true;
  spec.confinement = &n;
  auto ok = spawn(spec);
  REQUIRE_MESSAGE(ok.ok(), why(ok));
  ok->kill_and_reap();
}

// Where a cgroup2 hierarchy is mounted ("" if none).
std::string cgroup2_mount() {
  std::ifstream mi("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mi, line)) {
    auto dash = line.find(" - cgroup2 ");
    if (dash == std::string::npos) continue;
    std::istringstream f(line);
    std::string id, parent, dev, root, mp;
    f >> id >> parent >> dev >> root >> mp;
    return mp;
  }
  return "";
}

TEST_CASE("jail: a child joins its cgroup without the global threadgroup lock (v1 tasks, v2 CLONE_INTO_CGROUP)") {
  if (::geteuid() != 0) {
    MESSAGE("SKIP cgroup joins: needs root");
    return;
  }
  // v2: the child is cloned straight into the directory.
  std::string v2 = cgroup2_mount();
  if (v2.empty()) {
    MESSAGE("SKIP CLONE_INTO_CGROUP: no cgroup2 hierarchy mounted here");
  } else {
    std::string dir = fmt::format("{}/ztee-unit-{}", v2, ::getpid());
    REQUIRE(::mkdir(dir.c_str(), 0755) == 0);
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    Confinement c;
    c.cgroup_dir_fd = fd;
    SpawnSpec spec;
    spec.argv = {"/bin/sleep", "5"};
    spec.confinement = &c;
    auto child = spawn(spec);
    ::close(fd);
    REQUIRE_MESSAGE(child.ok(), why(child));
    std::ifstream cg(fmt::format("/proc/{}/cgroup", child->pid()));
    std::string all((std::istreambuf_iterator<char>(cg)), std::istreambuf_iterator<char>());
    CHECK_MESSAGE(all.find(fmt::format("0::/ztee-unit-{}\n", ::getpid())) != std::string::npos, all);
    child->kill_and_reap();
    CHECK(::rmdir(dir.c_str()) == 0);
  }
  // v1 (or v2, where that is what the host has): the layout the runtime uses.
  auto layout = detect_cgroups(fmt::format("ztee-unit-{}", ::getpid()));
  REQUIRE_MESSAGE(layout.ok(), why(layout));
  auto cg = create_cgroups(*layout, "sb-join", {});
  REQUIRE_MESSAGE(cg.ok(), why(cg));
  CHECK(cg->v2_dir.valid() == layout->v2);
  CHECK(cg->procs.size() == (layout->v2 ? 0u : cg->dirs.size()));
  Confinement c;
  for (auto& f : cg->procs) c.cgroup_procs_fds.push_back(f.get());
  c.cgroup_dir_fd = cg->v2_dir.get();
  SpawnSpec spec;
  spec.argv = {"/bin/sleep", "5"};
  spec.confinement = &c;
  auto child = spawn(spec);
  REQUIRE_MESSAGE(child.ok(), why(child));
  std::ifstream in(fmt::format("/proc/{}/cgroup", child->pid()));
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK_MESSAGE(all.find("/sb-join\n") != std::string::npos, all);
  child->kill_and_reap();
  cg->procs.clear();
  cg->v2_dir.reset();
  CHECK(remove_cgroups(*layout, "sb-join").ok());
  for (auto& p : layout->parents) ::rmdir(p.c_str());
}

TEST_CASE("jail: leftovers are removed from names alone; bad cgroup parents are refused") {
  std::string state = temp_dir();
  std::string dir = state + "/sb-test";
  fs::create_directories(dir + "/root/usr");
  fs::create_directories(dir + "/run");
  { std::ofstream(dir + "/run/mem") << "x"; }
  ::symlink("usr/lib", (dir + "/root/lib").c_str());
  CgroupLayout none;
  auto r = remove_jail_leftovers(state, "sb-test", none);
  CHECK_MESSAGE(r.ok(), why(r));
  CHECK(!exists(dir + "/root"));
  CHECK(!exists(dir + "/run"));
  CHECK(detect_cgroups("../up").error().code == ztee::Errc::kInvalidArgument);
  CHECK(detect_cgroups("").error().code == ztee::Errc::kInvalidArgument);
  fs::remove_all(state);
}

TEST_CASE("jail: a VMM binary the jail cannot carry is refused with what to do, before anything is built") {
  std::string dir = temp_dir();
  std::string cache = dir + "/vmm";
  auto write = [&](const std::string& name, const std::string& bytes) {
    std::string p = dir + "/" + name;
    std::ofstream(p, std::ios::binary) << bytes;
    ::chmod(p.c_str(), 0755);
    return p;
  };
  auto elf = [](unsigned char cls, uint16_t machine, std::vector<uint32_t> segments) {
    Elf64_Ehdr eh{};
    std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = cls;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = ET_DYN;
    eh.e_machine = machine;
    eh.e_version = EV_CURRENT;
    eh.e_phoff = sizeof eh;
    eh.e_ehsize = sizeof eh;
    eh.e_phentsize = sizeof(Elf64_Phdr);
    eh.e_phnum = static_cast<uint16_t>(segments.size());
    std::string out(reinterpret_cast<const char*>(&eh), sizeof eh);
    for (uint32_t type : segments) {
      Elf64_Phdr ph{};
      ph.p_type = type;
      out.append(reinterpret_cast<const char*>(&ph), sizeof ph);
    }
    return out;
  };
  struct Case {
    std::string file, says;
  };
  std::vector<Case> cases = {
      {write("wrapper.sh", "#!/bin/sh\nexec /usr/bin/qemu-system-x86_64 \"$@\"\n"), "is a script (#!), not an ELF program"},
      {write("text", "qemu"), "is not an ELF program"},
      {write("static", elf(ELFCLASS64, EM_X86_64, {PT_LOAD, PT_NOTE})), "is statically linked"},
      {write("arm64", elf(ELFCLASS64, EM_AARCH64, {PT_INTERP})), "is not an x86-64 (64-bit) ELF program"},
      {write("nophdr", elf(ELFCLASS64, EM_X86_64, {})), "has no valid program headers"},
      {write("truncated", elf(ELFCLASS64, EM_X86_64, {PT_LOAD, PT_INTERP}).substr(0, sizeof(Elf64_Ehdr) + 10)),
       "has no valid program headers (truncated)"},
  };
  for (const auto& c : cases) {
    auto r = ensure_vmm_root(cache, c.file, false);
    REQUIRE_MESSAGE(!r.ok(), c.file);
    CHECK(r.error().code == ztee::Errc::kUnsupported);
    CHECK_MESSAGE(r.error().message.find(c.file + " " + c.says) != std::string::npos, r.error().message);
    CHECK_MESSAGE(r.error().message.find("ZTEE_QEMU") != std::string::npos, r.error().message);
    std::string made = "refused before the cache directory is made: " + c.file;
    CHECK_MESSAGE(!exists(cache), made);
  }
  auto missing = ensure_vmm_root(cache, dir + "/absent", false);
  CHECK(!missing.ok());
  CHECK(!exists(cache));
  fs::remove_all(dir);
}
