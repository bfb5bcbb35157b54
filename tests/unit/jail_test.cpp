// The jail's host-side pieces without a VM: id leases, the seccomp program,
// step reporting from a confined child, and leftover removal.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "jail/jail.hpp"
#include "proc/child.hpp"

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
  auto a = allocate_id(dir, 1000, 4);
  auto b = allocate_id(dir, 1000, 4);
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
  auto c = allocate_id(dir, 1000, 4);
  REQUIRE(c.ok());
  CHECK(c->index() == 3);
  auto d = allocate_id(dir, 1000, 4);
  REQUIRE(!d.ok());
  CHECK(d.error().message.find("id_count") != std::string::npos);
  CHECK(a->release().ok());
  CHECK(!exists(dir + "/ids/1"));
  auto e = allocate_id(dir, 1000, 4);
  REQUIRE(e.ok());
  CHECK(e->index() == 1);
  for (auto* l : {&*b, &*c, &*e}) CHECK(l->release().ok());
  CHECK(!exists(dir + "/ids/2"));
  CHECK(!exists(dir + "/ids/3"));
  fs::remove_all(dir);
}

TEST_CASE("jail seccomp: the VMM filter exports as a BPF program") {
  auto p = build_vmm_seccomp(false);
  REQUIRE_MESSAGE(p.ok(), p.error().message);
  CHECK(p->size() > 30);
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
  REQUIRE_MESSAGE(ok.ok(), ok.error().message);
  ok->kill_and_reap();
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
  CHECK_MESSAGE(r.ok(), r.error().message);
  CHECK(!exists(dir + "/root"));
  CHECK(!exists(dir + "/run"));
  CHECK(detect_cgroups("../up").error().code == ztee::Errc::kInvalidArgument);
  CHECK(detect_cgroups("").error().code == ztee::Errc::kInvalidArgument);
  fs::remove_all(state);
}
