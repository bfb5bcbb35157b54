#include "jail/jail.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace ztee::detail {

namespace fs = std::filesystem;

namespace {

Error skeleton_error(const std::string& what, int e) {
  return make_error(Errc::kIo, fmt::format("jail: cannot build the jail skeleton: {}: {}", what, std::strerror(e)), e);
}

Result<void> make_dir(const std::string& p, mode_t mode) {
  if (::mkdir(p.c_str(), mode) != 0) return skeleton_error("mkdir " + p, errno);
  ::chmod(p.c_str(), mode);  // past the umask
  return {};
}

Result<void> make_file(const std::string& p) {
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0444);
  if (fd < 0) return skeleton_error("create " + p, errno);
  ::close(fd);
  return {};
}

// Mount points (as /proc/self/mountinfo spells them) at or under `dir`.
std::vector<std::string> mounts_under(const std::string& dir) {
  std::vector<std::string> out;
  std::ifstream mi("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mi, line)) {
    size_t pos = 0;
    for (int field = 0; field < 4 && pos != std::string::npos; ++field) pos = line.find(' ', pos + 1);
    if (pos == std::string::npos) continue;
    std::string mp = line.substr(pos + 1, line.find(' ', pos + 1) - pos - 1);
    if (mp == dir || mp.starts_with(dir + "/")) out.push_back(mp);
  }
  return out;
}

bool exists(const std::string& p) {
  struct stat st{};
  return ::lstat(p.c_str(), &st) == 0;
}

}  // namespace

const char* jail_test_fail_step() {
  const char* v = std::getenv("ZTEE_JAIL_TEST_FAIL_STEP");
  return v && *v ? v : nullptr;
}

std::string SandboxJail::jail_path(const std::string& host) const {
  for (const auto& [h, j] : path_map) {
    if (host == h) return j;
    if (host.starts_with(h + "/")) return j + host.substr(h.size());
  }
  return "";
}

Result<SandboxJail> prepare_jail(const JailRequest& req) {
  SandboxJail j;
  j.dir = req.state_dir + "/" + req.id;
  j.root = j.dir + "/root";
  j.run = j.dir + "/run";
  auto fail = [&](Error err) -> Result<SandboxJail> {
    j.cgroups.procs.clear();
    j.cgroups.v2_dir.reset();
    if (auto r = remove_jail_leftovers(req.state_dir, req.id, req.cgroups); !r)
      err.message += "; cleaning up also failed: " + r.error().message;
    return err;
  };
  auto& c = j.confinement;
  const std::string& root = j.root;
  // The skeleton: mount points only, owned by root; the child fills them.
  for (const char* d : {"", "/usr", "/image", "/dev", "/run"})
    if (auto r = make_dir(root + d, 0755); !r) return fail(r.error());
  for (const char* l : {"lib", "lib64", "bin"})
    if (::symlink((std::string("usr/") + l).c_str(), (root + "/" + l).c_str()) != 0)
      return fail(skeleton_error("symlink " + root + "/" + l, errno));
  if (auto r = make_dir(j.run, 0700); !r) return fail(r.error());
  if (::chown(j.run.c_str(), req.uid, req.gid) != 0) return fail(skeleton_error("chown " + j.run, errno));

  constexpr unsigned long kRo = MS_RDONLY | MS_NOSUID | MS_NODEV;
  c.root = root;
  c.mounts.push_back({req.vmm_root + "/usr", root + "/usr", kRo});
  for (const auto& [host, name] : req.read_only) {
    std::string target = root + "/image/" + name;
    if (auto r = make_file(target); !r) return fail(r.error());
    c.mounts.push_back({host, target, kRo | MS_NOEXEC});
    j.path_map.emplace_back(host, "/image/" + name);
  }
  if (!req.template_mem.empty()) {
    if (auto r = make_dir(root + "/template", 0755); !r) return fail(r.error());
    std::string target = root + "/template/mem";
    if (auto r = make_file(target); !r) return fail(r.error());
    // Writable: QEMU 7.2 opens mem-path O_RDWR even for a private mapping.
    c.mounts.push_back({req.template_mem, target, MS_NOSUID | MS_NODEV | MS_NOEXEC});
    j.path_map.emplace_back(req.template_mem, "/template/mem");
  }
  for (const char* d : {"null", "urandom"}) {
    std::string target = root + "/dev/" + d;
    if (auto r = make_file(target); !r) return fail(r.error());
    c.mounts.push_back({std::string("/dev/") + d, target, MS_NOSUID | MS_NOEXEC});
  }
  if (req.kvm) {
    // The VMM's own KVM node (as Firecracker's jailer makes one): the host's
    // device number, owned by the sandbox uid, mode 0600. The host node keeps
    // its owner and mode; no group is shared between sandboxes.
    std::string target = root + "/dev/kvm";
    struct stat st{};
    if (::stat(req.kvm_node.c_str(), &st) != 0) return fail(skeleton_error("stat " + req.kvm_node, errno));
    if (!S_ISCHR(st.st_mode)) return fail(skeleton_error(req.kvm_node + " is not a character device", ENODEV));
    if (::mknod(target.c_str(), S_IFCHR | 0600, st.st_rdev) != 0) return fail(skeleton_error("mknod " + target, errno));
    if (::chown(target.c_str(), req.uid, req.gid) != 0 || ::chmod(target.c_str(), 0600) != 0)
      return fail(skeleton_error("chown " + target, errno));
    // Bound onto itself: its own mount, without the root's nodev.
    c.mounts.push_back({target, target, MS_NOSUID | MS_NOEXEC});
  }
  c.mounts.push_back({j.run, root + "/run", MS_NOSUID | MS_NODEV | MS_NOEXEC});
  j.path_map.emplace_back(j.run, "/run");
  if (const char* step = jail_test_fail_step(); step && std::string(step) == "mounts")
    c.mounts.push_back({j.dir + "/missing-bind-source", root + "/run", 0});
  c.root_remount_flags = kRo;

  auto cg = create_cgroups(req.cgroups, req.id, req.limits);
  if (!cg) return fail(cg.error());
  j.cgroups = std::move(*cg);
  for (auto& fd : j.cgroups.procs) c.cgroup_procs_fds.push_back(fd.get());
  c.cgroup_dir_fd = j.cgroups.v2_dir.get();

  auto lim = [](rlim_t v) { return rlimit{v, v}; };
  c.rlimits = {{RLIMIT_NOFILE, lim(4096)}, {RLIMIT_CORE, lim(0)}};
  if (req.fsize_bytes) c.rlimits.push_back({RLIMIT_FSIZE, lim(req.fsize_bytes)});
  // The uid is the sandbox's alone, so NPROC bounds this VMM's threads.
  if (req.limits.pids_max) c.rlimits.push_back({RLIMIT_NPROC, lim(req.limits.pids_max)});
  c.clone_flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS;
  // Every VMM is in a network namespace other than the host's: the
  // sandbox's, or a new empty one of its own.
  if (req.netns_fd >= 0) c.netns_fd = req.netns_fd;
  else c.clone_flags |= CLONE_NEWNET;
  c.uid = req.uid;
  c.gid = req.gid;
  c.groups = req.groups;
  c.no_new_privs = true;
  if (req.seccomp) c.seccomp = *req.seccomp;
  c.close_other_fds = true;
  return j;
}

Result<void> remove_jail_leftovers(const std::string& state_dir, const std::string& id, const CgroupLayout& cgroups) {
  std::string dir = state_dir + "/" + id;
  std::vector<std::string> left;
  int err = 0;
  if (auto r = remove_cgroups(cgroups, id); !r) {
    left.push_back(r.error().message);
    err = r.error().sys_errno;
  }
  // The jail's mounts live in the VMM's own mount namespace and vanish with
  // it; one seen here was not made by the jail: detach it, never delete through it.
  auto mounts = mounts_under(dir);
  for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
  mounts = mounts_under(dir);
  for (const auto& m : mounts) left.push_back("mount " + m);
  if (mounts.empty()) {
    for (const std::string& p : {dir + "/root", dir + "/run"}) {
      std::error_code ec;
      fs::remove_all(p, ec);
      if (exists(p)) {
        left.push_back(fmt::format("directory {} ({})", p, ec ? ec.message() : "still there"));
        if (ec) err = ec.value();
      }
    }
  }
  if (left.empty()) return {};
  std::string what;
  for (auto& l : left) what += (what.empty() ? "" : ", ") + l;
  return make_error(Errc::kIo, fmt::format("jail of sandbox {} left behind: {}", id, what), err);
}

}  // namespace ztee::detail
