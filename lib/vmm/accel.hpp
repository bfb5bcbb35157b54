// Which accelerator can run the guest image on this host.
//
// A /dev/kvm node alone does not mean hardware KVM: the module behind it may
// be kvm_pvm, a paravirtual hypervisor that runs only guest kernels built for
// it (a stock kernel crawls, then dies with "KVM: emulation failure"). The
// probe names the provider from /sys/module and the CPU's vmx/svm flags, and
// checks that the node is a character device that answers KVM_GET_API_VERSION.
#pragma once

#include <ztee/result.hpp>

#include <sys/types.h>

#include <string>

namespace ztee::detail {

struct KvmHost {
  enum class Kind {
    kAbsent,    // no /dev/kvm (or not a character device)
    kHardware,  // kvm_intel with vmx, or kvm_amd with svm
    kPvm,       // kvm_pvm: only PVM-built guest kernels
    kUnknown,   // a /dev/kvm whose provider is none of the above
  };
  Kind kind = Kind::kAbsent;
  std::string node;      // the node's path ("/dev/kvm")
  std::string provider;  // "kvm_intel", "kvm_amd", "kvm_pvm" or ""
  dev_t rdev = 0;        // the node's device number (for the jail's own node)
  // This process opened the node read-write and KVM_GET_API_VERSION said 12.
  bool opens = false;
  int open_errno = 0;  // why not, when !opens
  // One line: "/dev/kvm is kvm_pvm, which runs only PVM guest kernels".
  std::string describe() const;
};

// Where the probe looks; tests point these at a fake tree.
struct KvmProbePaths {
  std::string node = "/dev/kvm";
  std::string sys_module = "/sys/module";
  std::string cpuinfo = "/proc/cpuinfo";
};

// A few stats, one open and one ioctl: cheap enough to run per Runtime.
KvmHost probe_kvm_host(const KvmProbePaths& paths = {});

struct AccelChoice {
  bool kvm = false;
  // Why: "hardware KVM: kvm_intel", "/dev/kvm is kvm_pvm, which runs only
  // PVM guest kernels", "accel tcg requested", ...
  std::string reason;
};

// The accelerator for `requested` ("auto", "kvm", "tcg"; empty: $ZTEE_ACCEL,
// else "auto"). `own_node`: the VMM gets a KVM node of its own (the jail
// makes one owned by its uid), so the host node's permissions do not matter;
// else the VMM runs as this process and must be able to open the host node.
// auto picks KVM only on hardware KVM the VMM can open; otherwise TCG, with
// the reason. An explicit "kvm" that cannot run a stock guest kernel fails
// (kBackendUnavailable) with the reason and what to do.
Result<AccelChoice> choose_accel(const std::string& requested, const KvmHost& host, bool own_node);

// What $ZTEE_ACCEL (or "auto") resolves `requested` to when it is empty.
std::string effective_accel_request(const std::string& requested);

}  // namespace ztee::detail
