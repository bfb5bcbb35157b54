// The jailer: everything a VMM process is confined by, prepared in the parent
// and applied by the child between clone3 and execve (proc/child.hpp's
// Confinement). Per sandbox: a dedicated uid/gid from a range, a cgroup with
// its memory, CPU and pids limits (cgroup v2 when the unified hierarchy has
// the controllers, else v1), rlimits, new mount/PID/IPC/UTS namespaces, a
// read-only jail root holding only what the VMM needs (with KVM, a /dev/kvm
// node of its own owned by its uid), no_new_privs and a
// seccomp allowlist. Teardown removes each piece and checks it is gone.
#pragma once

#include <ztee/result.hpp>

#include <linux/filter.h>
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "io/fd.hpp"
#include "proc/child.hpp"

namespace ztee::detail {

// ------------------------------------------------------------------- ids --

// A uid=gid from [id_first, id_first + id_count) held by this process: the
// lock file <state_dir>/ids/<index> (holding the owner's pid) is flock'ed for
// as long as the lease lives. Index 0 is never handed out: id_first is the
// template group (see JailOptions in ztee.hpp). The index doubles as the
// sandbox's network slot number.
class IdLease {
 public:
  IdLease() = default;
  IdLease(IdLease&&) noexcept = default;
  IdLease& operator=(IdLease&& o) noexcept;
  ~IdLease() { (void)release(); }
  bool valid() const { return fd_.valid(); }
  uint32_t index() const { return index_; }
  uint32_t id() const { return id_; }  // uid and gid
  const std::string& path() const { return path_; }
  // Unlinks the lock file and drops the lock; fails (naming the file) if it
  // could not be removed. Safe to call twice.
  Result<void> release();

 private:
  friend Result<IdLease> allocate_id(const std::string&, uint32_t, uint32_t, const std::string&);
  UniqueFd fd_;
  UniqueFd host_fd_;  // holds byte `index` of kHostIdLockPath (OFD lock)
  uint32_t index_ = 0, id_ = 0;
  std::string path_;
};

// Takes the lowest free index in 1..id_count-1. A lock file whose owner is
// gone (no flock held) is reclaimed. The index is also locked host-wide (its
// byte of kHostIdLockPath), so runtimes with different state dirs never
// share a uid or a network slot (which follows the index); where that file
// cannot be opened (not root), indexes are unique per state dir only.
// `host_lock` names that file (tests use their own).
inline constexpr const char* kHostIdLockPath = "/run/ztee/ids.lock";
Result<IdLease> allocate_id(const std::string& state_dir, uint32_t id_first, uint32_t id_count,
                            const std::string& host_lock = kHostIdLockPath);

// ---------------------------------------------------------------- cgroups --

struct CgroupLimits {
  uint64_t memory_bytes = 0;
  uint32_t cpu_percent = 0;  // 100 = one CPU
  uint32_t pids_max = 0;
  // Background CPU weight (v1 cpu.shares 2, v2 cpu.weight 1) instead of the
  // default: for VMMs nobody waits on yet (pool refills, pre-spawned VMMs).
  bool cpu_background = false;
};

// Where the sandbox cgroups live: cgroup v2 when the unified hierarchy has
// the memory, cpu and pids controllers, else the v1 hierarchies of each.
struct CgroupLayout {
  bool v2 = false;
  // v2: one directory; v1: memory, cpu, pids. Each is <mount>/<the runtime
  // process's own cgroup>/<parent> (or <mount>/<parent> when parent starts
  // with '/').
  std::vector<std::string> parents;
};

// Sets a sandbox cgroup's CPU weight: background (v1 cpu.shares 2, v2
// cpu.weight 1) or the default (1024 / 100). A few µs: one write.
Result<void> set_cpu_background(const CgroupLayout& layout, const std::string& name, bool background);

// Reads /proc/self/mountinfo and /proc/self/cgroup. Fails with a message
// naming the missing controller.
Result<CgroupLayout> detect_cgroups(const std::string& parent);

// A sandbox's cgroup directories (one per hierarchy) and open cgroup.procs
// files for the child to join.
// v1: open `tasks` files for the child to write itself into. v2: the
// directory, for clone3's CLONE_INTO_CGROUP (the child starts inside it).
// Either way the kernel's global threadgroup lock is not taken for writing,
// which waits for an RCU grace period (5-30 ms seen) when it was idle.
struct SandboxCgroups {
  std::vector<std::string> dirs;
  std::vector<UniqueFd> procs;
  UniqueFd v2_dir;
};
Result<SandboxCgroups> create_cgroups(const CgroupLayout& layout, const std::string& name, const CgroupLimits& lim);
// Kills what is left in each directory, removes it and checks it is gone;
// the error lists what could not be removed. Works from names alone.
Result<void> remove_cgroups(const CgroupLayout& layout, const std::string& name);
// The sandbox cgroups under the layout's parents (names, deduplicated).
std::vector<std::string> list_cgroups(const CgroupLayout& layout);

// ---------------------------------------------------------------- seccomp --

// The VMM's system-call allowlist as a BPF program (built with libseccomp,
// exported). Anything else kills the process (see jail/seccomp.cpp).
Result<std::vector<sock_filter>> build_vmm_seccomp(bool kvm);

// --------------------------------------------------------------- VMM root --

// A read-only tree under `cache_dir` holding the VMM binary, its shared
// library closure, the dynamic loader, the TCG accelerator module (when
// !kvm) and the firmware, at their host paths (all under usr/). Built once
// per binary identity (dev, inode, size, mtime) and reused; built in a
// temporary directory and renamed into place. Returns its path.
Result<std::string> ensure_vmm_root(const std::string& cache_dir, const std::string& binary, bool kvm);

// ---------------------------------------------------------- sandbox jail --

struct JailRequest {
  std::string state_dir;  // the runtime's
  std::string id;         // sandbox id; its dir <state_dir>/<id> exists
  std::string vmm_root;   // from ensure_vmm_root
  // Host files shown read-only at /image/<name>: {host path, name}.
  std::vector<std::pair<std::string, std::string>> read_only;
  std::string template_mem;            // a clone's template memory file, shown at /template/mem
  // Give the VMM its own /dev/kvm: a node with kvm_node's device number,
  // owned by uid:gid, mode 0600.
  bool kvm = false;
  std::string kvm_node = "/dev/kvm";
  uint32_t uid = 0, gid = 0;
  std::vector<gid_t> groups;
  CgroupLayout cgroups;
  CgroupLimits limits;
  uint64_t fsize_bytes = 0;  // RLIMIT_FSIZE
  // The sandbox's network namespace to join; -1: a new, empty one of the
  // VMM's own (only a loopback that is down), so no VMM is ever in the
  // host's network namespace. ztee-bench-jail measures it against one
  // empty namespace shared by all VMMs: +0.5 ms per spawn (median 1.5 vs
  // 2.0 ms) buys VMMs that cannot share abstract Unix sockets or anything
  // else network-scoped with each other, as Firecracker's jailer does.
  int netns_fd = -1;
  const std::vector<sock_filter>* seccomp = nullptr;
};

// One sandbox's jail on the host side: the skeleton under <dir>/root, the
// writable <dir>/run, the cgroups and the child's Confinement.
struct SandboxJail {
  std::string dir, root, run;
  SandboxCgroups cgroups;
  Confinement confinement;
  // Where a host file shows inside the jail ("" if it is not there).
  std::string jail_path(const std::string& host_path) const;
  std::vector<std::pair<std::string, std::string>> path_map;  // host -> jail
};

// Builds the skeleton and the cgroups. On failure nothing is left behind.
Result<SandboxJail> prepare_jail(const JailRequest& req);

// Removes the jail of sandbox `id` under `state_dir` (skeleton, run dir,
// cgroups) from names alone, after its VMM is gone, and checks each piece is
// gone (no mounts under the sandbox dir either). The error names what was
// left. Also usable for leftovers of a crashed process.
Result<void> remove_jail_leftovers(const std::string& state_dir, const std::string& id, const CgroupLayout& cgroups);

// Test hook: when $ZTEE_JAIL_TEST_FAIL_STEP names a step ("mounts",
// "cgroup", ...), prepare_jail makes that step fail in the child (by a
// missing bind source or a closed fd). Read once per call.
const char* jail_test_fail_step();

}  // namespace ztee::detail
