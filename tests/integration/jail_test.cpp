// The VMM jail, checked from the host on real microVMs: credentials, seccomp,
// namespaces, cgroup limits, what the jail root holds, and teardown.
#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "common.hpp"
#include "image/image.hpp"
#include "jail/jail.hpp"
#include "jail/kvm_probe.hpp"
#include "../why.hpp"

using ztee::Errc;
namespace fs = std::filesystem;

namespace {

// "Key:\tvalue" lines of /proc/<pid>/status.
std::string status_field(int pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0) {
      std::string v = line.substr(key.size() + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      v.erase(v.find_last_not_of(" \t") + 1);
      return v;
    }
  return "";
}

std::vector<std::string> words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ztee::detail::CgroupLayout layout() {
  auto l = ztee::detail::detect_cgroups("ztee");
  REQUIRE_MESSAGE(l.ok(), why(l));
  return *l;
}

bool exists(const std::string& p) {
  struct stat st{};
  return ::lstat(p.c_str(), &st) == 0;
}

int mounts_under(const std::string& dir) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  int n = 0;
  while (std::getline(in, line))
    if (line.find(" " + dir + "/") != std::string::npos) ++n;
  return n;
}

}  // namespace

TEST_CASE("jail: the VMM runs as its own uid with no_new_privs, a seccomp filter, new namespaces and limits") {
  test::runtime();  // created first: its ids/ directory is not counted by later tests
  auto& sb = test::shared();
  int pid = sb.vmm_pid();
  REQUIRE(pid > 0);
  CHECK(status_field(pid, "Seccomp") == "2");
  CHECK(status_field(pid, "NoNewPrivs") == "1");
  auto uids = words(status_field(pid, "Uid"));
  auto gids = words(status_field(pid, "Gid"));
  REQUIRE(uids.size() == 4);
  REQUIRE(gids.size() == 4);
  uint32_t uid = static_cast<uint32_t>(std::stoul(uids[0]));
  CHECK(uid > 600000);
  CHECK(uid < 600000 + 65536);
  for (auto& u : uids) CHECK(u == uids[0]);
  for (auto& g : gids) CHECK(g == uids[0]);  // gid == uid
  CHECK(status_field(pid, "Groups").empty());
  CHECK(status_field(pid, "CapEff") == "0000000000000000");
  // PID 1 of its own PID namespace, in its own mount, IPC and UTS namespaces.
  auto nspid = words(status_field(pid, "NSpid"));
  REQUIRE(nspid.size() == 2);
  CHECK(nspid[1] == "1");
  // A network namespace of its own even without a network: nothing but lo.
  for (const char* ns : {"pid", "mnt", "ipc", "uts", "net"}) {
    auto theirs = fs::read_symlink(fmt::format("/proc/{}/ns/{}", pid, ns));
    auto ours = fs::read_symlink(fmt::format("/proc/self/ns/{}", ns));
    CHECK_MESSAGE(theirs != ours, ns);
  }
  std::set<std::string> links;
  {
    std::ifstream dev(fmt::format("/proc/{}/net/dev", pid));
    std::string line;
    while (std::getline(dev, line)) {
      auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      auto name = line.substr(0, colon);
      name.erase(0, name.find_first_not_of(' '));
      links.insert(name);
    }
  }
  CHECK(links == std::set<std::string>{"lo"});
  // No environment, and no fd of the host's jail machinery.
  CHECK(read_all(fmt::format("/proc/{}/environ", pid)).empty());
  for (auto& e : fs::directory_iterator(fmt::format("/proc/{}/fd", pid))) {
    std::error_code ec;
    std::string target = fs::read_symlink(e.path(), ec).string();
    CHECK_MESSAGE(target.find("cgroup.procs") == std::string::npos, target);
    CHECK_MESSAGE(target.find("/ids/") == std::string::npos, target);
  }
  // Its cgroup (v1 here: memory, cpu, pids; v2 where the unified hierarchy has them).
  auto l = layout();
  std::string cg = read_all(fmt::format("/proc/{}/cgroup", pid));
  CHECK(cg.find("/ztee/" + sb.id()) != std::string::npos);
  if (l.v2) {
    std::string dir = l.parents[0] + "/" + sb.id();
    CHECK(read_all(dir + "/memory.max") == std::to_string((256ull + 384) << 20) + "\n");
    CHECK(read_all(dir + "/pids.max") == "128\n");
    CHECK(read_all(dir + "/cpu.max") == "100000 100000\n");
  } else {
    CHECK(read_all(l.parents[0] + "/" + sb.id() + "/memory.limit_in_bytes") ==
          std::to_string((256ull + 384) << 20) + "\n");
    CHECK(read_all(l.parents[1] + "/" + sb.id() + "/cpu.cfs_quota_us") == "100000\n");
    CHECK(read_all(l.parents[2] + "/" + sb.id() + "/pids.max") == "128\n");
    CHECK(read_all(l.parents[2] + "/" + sb.id() + "/cgroup.procs").find(std::to_string(pid)) != std::string::npos);
  }
  // Limits on the process itself.
  std::string limits = read_all(fmt::format("/proc/{}/limits", pid));
  CHECK(limits.find("Max core file size        0                    0") != std::string::npos);
  CHECK(limits.find("Max open files            4096                 4096") != std::string::npos);
  CHECK(sb.run("true").ok());
}

TEST_CASE("jail: the jail root seen from the host holds nothing but what the VMM needs") {
  auto& sb = test::shared();
  std::string root = fmt::format("/proc/{}/root", sb.vmm_pid());
  std::set<std::string> top;
  for (auto& e : fs::directory_iterator(root)) top.insert(e.path().filename().string());
  CHECK(top == std::set<std::string>{"bin", "dev", "image", "lib", "lib64", "run", "usr"});
  std::set<std::string> dev, image;
  for (auto& e : fs::directory_iterator(root + "/dev")) dev.insert(e.path().filename().string());
  for (auto& e : fs::directory_iterator(root + "/image")) image.insert(e.path().filename().string());
  // With KVM, the VMM's own node; never the host's (its owner would be root).
  bool kvm = test::runtime().backend_description().starts_with("qemu/kvm");
  CHECK(dev == (kvm ? std::set<std::string>{"kvm", "null", "urandom"} : std::set<std::string>{"null", "urandom"}));
  if (kvm) {
    struct stat st{};
    REQUIRE(::stat((root + "/dev/kvm").c_str(), &st) == 0);
    CHECK(st.st_uid == std::stoul(words(status_field(sb.vmm_pid(), "Uid"))[0]));
    CHECK((st.st_mode & 07777) == 0600);
  }
  CHECK(image == std::set<std::string>{"initramfs", "kernel", "rootfs"});
  CHECK(test::count_entries(root + "/run") == 0);  // no snapshot memory in a plain sandbox
  // usr holds the VMM, shared libraries, the loader, the TCG module and firmware only.
  int files = 0;
  for (auto it = fs::recursive_directory_iterator(root + "/usr"); it != fs::recursive_directory_iterator(); ++it) {
    if (!it->is_regular_file() || it->is_symlink()) continue;
    ++files;
    std::string name = it->path().filename().string();
    bool firmware = it->path().parent_path().parent_path().filename() == "share";  // usr/share/{qemu,seabios}
    bool ok = name == "qemu-system-x86_64" || name.find(".so") != std::string::npos || firmware;
    CHECK_MESSAGE(ok, it->path().string());
  }
  CHECK(files > 10);
  for (const char* absent : {"/bin/sh", "/usr/bin/sh", "/etc", "/proc", "/tmp", "/sys", "/usr/bin/cat"})
    CHECK_MESSAGE(!exists(root + absent), absent);
  // Read-only everywhere but /run.
  int fd = ::open((root + "/newfile").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  int open_errno = errno;  // before CHECK: reporting a success (-s) may change errno
  CHECK(fd < 0);
  CHECK(open_errno == EROFS);
  if (fd >= 0) ::close(fd);
  // The host sees no mount of it.
  CHECK(mounts_under(test::state_dir()) == 0);
}

TEST_CASE("jail: a failing jail step names the step and leaves nothing behind") {
  test::shared();
  auto l = layout();
  auto cgroups_before = ztee::detail::list_cgroups(l);
  int entries_before = test::count_state_entries();
  int ids_before = test::count_entries(test::state_dir() + "/ids");
  ::setenv("ZTEE_JAIL_TEST_FAIL_STEP", "mounts", 1);
  auto r = test::runtime().create_sandbox();
  ::unsetenv("ZTEE_JAIL_TEST_FAIL_STEP");
  REQUIRE(!r.ok());
  CHECK(r.error().message.find("jail step") != std::string::npos);
  CHECK(r.error().message.find("bind-mount the jail's files") != std::string::npos);
  CHECK(r.error().sys_errno == ENOENT);
  CHECK(test::count_state_entries() == entries_before);
  CHECK(test::count_entries(test::state_dir() + "/ids") == ids_before);
  // Cgroups are host-wide, and another test process (integration_net runs
  // beside this one) may start sandboxes meanwhile. So: every cgroup that
  // was not there before holds a process (a live VMM) or soon goes; one left
  // empty is what this create leaked.
  auto leaked = [&] {
    std::vector<std::string> out;
    for (const auto& c : ztee::detail::list_cgroups(l)) {
      if (std::find(cgroups_before.begin(), cgroups_before.end(), c) != cgroups_before.end()) continue;
      bool empty = true;
      for (const auto& parent : l.parents) {
        std::ifstream procs(parent + "/" + c + "/cgroup.procs");
        std::string pid;
        if (procs >> pid) empty = false;
      }
      if (empty) out.push_back(c);
    }
    return out;
  };
  auto left = leaked();
  for (int i = 0; i < 60 && !left.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    left = leaked();
  }
  CHECK_MESSAGE(left.empty(), "empty cgroups left: " << fmt::format("{}", fmt::join(left, ", ")));
  CHECK(mounts_under(test::state_dir()) == 0);
}

TEST_CASE("jail: destroy removes the jail, cgroup and id, and checks they are gone") {
  auto l = layout();
  auto sbr = test::runtime().create_sandbox();
  REQUIRE_MESSAGE(sbr.ok(), why(sbr));
  auto sb = std::move(sbr).value();
  int pid = sb.vmm_pid();
  uint32_t uid = static_cast<uint32_t>(std::stoul(words(status_field(pid, "Uid"))[0]));
  std::string id_file = fmt::format("{}/ids/{}", test::state_dir(), uid - 600000);
  std::string dir = test::state_dir() + "/" + sb.id();
  CHECK(exists(id_file));
  CHECK(read_all(id_file) == std::to_string(::getpid()) + "\n");
  CHECK(exists(dir + "/root/usr"));
  auto names = ztee::detail::list_cgroups(l);
  CHECK(std::find(names.begin(), names.end(), sb.id()) != names.end());
  auto d = sb.destroy();
  REQUIRE_MESSAGE(d.ok(), why(d));
  CHECK(!test::process_alive(pid));
  CHECK(!exists(id_file));
  CHECK(!exists(dir));
  for (auto& p : l.parents) CHECK(!exists(p + "/" + sb.id()));
  CHECK(mounts_under(test::state_dir()) == 0);
}

TEST_CASE("jail: bad jail options are clear errors") {
  ztee::RuntimeOptions ro;
  ro.state_dir = test::state_dir();
  ro.jail.id_first = 0;
  auto r = ztee::Runtime::create(ro);
  REQUIRE(!r.ok());
  CHECK(r.error().code == Errc::kInvalidArgument);
  CHECK(r.error().message.find("id_first") != std::string::npos);
  ro.jail.id_first = 600000;
  ro.jail.cgroup_parent = "../escape";
  auto c = ztee::Runtime::create(ro);
  REQUIRE(!c.ok());
  CHECK(c.error().code == Errc::kInvalidArgument);
  CHECK(c.error().message.find("cgroup_parent") != std::string::npos);
}

TEST_CASE("jail: a clone's VMM reaches its template's memory through the template group only") {
  std::string tdir = test::state_dir() + "/jail-template";
  ztee::SandboxOptions so;
  so.snapshottable = true;
  auto src = test::runtime().create_sandbox(so);
  REQUIRE_MESSAGE(src.ok(), why(src));
  // The guest RAM file lives in the jail's /run, owned by the sandbox's uid.
  int spid = src->vmm_pid();
  struct stat st{};
  REQUIRE(::stat(fmt::format("/proc/{}/root/run/mem", spid).c_str(), &st) == 0);
  CHECK(st.st_uid == std::stoul(words(status_field(spid, "Uid"))[0]));
  auto s = src->snapshot(tdir);
  REQUIRE_MESSAGE(s.ok(), why(s));
  REQUIRE(::stat((tdir + "/mem").c_str(), &st) == 0);
  CHECK(st.st_uid == 0);
  CHECK(st.st_gid == 600000);
  CHECK((st.st_mode & 07777) == 0660);
  REQUIRE(::stat((tdir + "/state").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0640);
  ztee::SandboxOptions co;
  co.template_dir = tdir;
  auto clone = test::runtime().create_sandbox(co);
  REQUIRE_MESSAGE(clone.ok(), why(clone));
  int pid = clone->vmm_pid();
  CHECK(status_field(pid, "Groups") == "600000");
  CHECK(status_field(pid, "Seccomp") == "2");
  std::set<std::string> top;
  for (auto& e : fs::directory_iterator(fmt::format("/proc/{}/root", pid))) top.insert(e.path().filename().string());
  CHECK(top == std::set<std::string>{"bin", "dev", "image", "lib", "lib64", "run", "template", "usr"});
  CHECK(test::count_entries(fmt::format("/proc/{}/root/template", pid)) == 1);
  auto out = clone->run("cat /tmp/marker 2>/dev/null; echo ok");
  REQUIRE(out.ok());
  CHECK(out->stdout_data.find("ok") != std::string::npos);
  CHECK(clone->destroy().ok());
  std::system(("rm -rf " + tdir).c_str());
}

TEST_CASE("jail: a jailed VMM with -accel kvm opens a /dev/kvm node of its own, owned by its uid") {
  // Below the runtime's accelerator choice: wherever a /dev/kvm exists (a
  // kvm_pvm one included), the jail must let its VMM initialise KVM.
  struct stat host{};
  if (::stat("/dev/kvm", &host) != 0 || !S_ISCHR(host.st_mode)) {
    MESSAGE("SKIP jailed KVM node: this host has no /dev/kvm (needs one, hardware KVM or kvm_pvm)");
    return;
  }
  auto l = layout();
  auto filter = ztee::detail::build_vmm_seccomp(true);
  REQUIRE_MESSAGE(filter.ok(), why(filter));
  auto binary = fs::canonical("/usr/bin/qemu-system-x86_64").string();
  auto vmm_root = ztee::detail::ensure_vmm_root("/var/lib/ztee/vmm", binary, false);
  REQUIRE_MESSAGE(vmm_root.ok(), why(vmm_root));
  auto img = ztee::detail::load_image_manifest(test::image_dir());
  REQUIRE_MESSAGE(img.ok(), why(img));
  int entries_before = test::count_state_entries();
  ztee::detail::JailedKvmProbeRequest req;
  req.state_dir = test::state_dir();
  req.binary = binary;
  req.vmm_root = *vmm_root;
  req.cgroups = l;
  req.seccomp = &*filter;
  // The sandbox's own machine and kernel, created paused: vCPUs and guest
  // memory are set up under KVM and the seccomp filter. (Under kvm_pvm this
  // stock kernel would crawl and later fail; 1.5 s of it is enough here.)
  req.read_only = {{img->kernel.path, "kernel"}, {img->initramfs.path, "initramfs"}};
  req.machine = {"-M", "microvm,x-option-roms=off", "-cpu", "host", "-m", "256",
                 "-kernel", img->kernel.path, "-initrd", img->initramfs.path};
  req.run_ms = 1500;  // then the guest runs: its vCPU enters KVM_RUN under the filter
  auto p = ztee::detail::probe_kvm_in_jail(req);
  REQUIRE_MESSAGE(p.ok(), why(p));
  CHECK_MESSAGE(p->kvm_enabled, p->qmp_reply);
  CHECK_MESSAGE(p->ran, p->status_reply);
  CHECK(p->vmm_uid > 600000);
  CHECK(p->node_uid == p->vmm_uid);
  CHECK(p->node_gid == p->vmm_uid);
  CHECK(p->node_mode == 0600);
  CHECK(p->node_rdev == host.st_rdev);
  // The host's node is untouched.
  struct stat after{};
  REQUIRE(::stat("/dev/kvm", &after) == 0);
  CHECK(after.st_uid == host.st_uid);
  CHECK(after.st_gid == host.st_gid);
  CHECK(after.st_mode == host.st_mode);
  // Nothing left behind (other runtimes on the host may add and remove
  // cgroups of their own meanwhile: only the probe's are looked for).
  CHECK(test::count_state_entries() == entries_before);
  for (const auto& name : ztee::detail::list_cgroups(l)) CHECK_MESSAGE(!name.starts_with("sb-kvmprobe-"), name);
  CHECK(mounts_under(test::state_dir()) == 0);
}
