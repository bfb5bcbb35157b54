// Can a jailed VMM use KVM? Starts the VMM binary in a throwaway jail exactly
// as a sandbox's (own uid, cgroup, namespaces, pivot_root, seccomp, its own
// /dev/kvm node), with `-accel kvm` and a machine that is never run, asks it
// over QMP whether KVM is enabled, looks at the node it sees, and tears the
// jail down. Used by `ztee doctor` and the jail tests; needs root.
#pragma once

#include <ztee/result.hpp>

#include <sys/types.h>

#include <string>
#include <vector>

#include "jail/jail.hpp"

namespace ztee::detail {

struct JailedKvmProbeRequest {
  std::string state_dir;  // ids/ and the throwaway jail go here
  std::string binary;     // canonical path of the VMM binary (also its path in the jail)
  std::string vmm_root;   // ensure_vmm_root
  CgroupLayout cgroups;
  const std::vector<sock_filter>* seccomp = nullptr;
  uint32_t id_first = 600000, id_count = 65536;
  // Extra QEMU arguments (a machine, a kernel to load); empty: "-M none".
  std::vector<std::string> machine;
  std::vector<std::pair<std::string, std::string>> read_only;  // as JailRequest::read_only
  int timeout_ms = 10000;
  // > 0: then let the guest run (QMP cont) this long and check the VMM is
  // still alive and running: its vCPUs entered KVM_RUN under the filter.
  int run_ms = 0;
};

struct JailedKvmProbe {
  bool kvm_enabled = false;  // QMP query-kvm: enabled and present
  uid_t vmm_uid = 0;         // the VMM process's uid
  // /dev/kvm as the VMM saw it (stat through /proc/<pid>/root).
  uid_t node_uid = 0;
  gid_t node_gid = 0;
  mode_t node_mode = 0;
  dev_t node_rdev = 0;
  std::string qmp_reply;  // query-kvm's reply, verbatim
  bool ran = false;       // run_ms > 0: still alive and "running" after it
  std::string status_reply;  // query-status's reply, verbatim
};

// Fails with the VMM's own words when it could not start (e.g. "Could not
// access KVM kernel module: Permission denied") or the jail step that failed.
Result<JailedKvmProbe> probe_kvm_in_jail(const JailedKvmProbeRequest& req);

}  // namespace ztee::detail
