// The VMM driver interface. A Driver launches a VM process for a sandbox and
// hands back the host ends of its channels; the runtime drives them.
#pragma once

#include <ztee/result.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "image/image.hpp"
#include "io/fd.hpp"
#include "proc/child.hpp"

namespace ztee::detail {

struct VmConfig {
  std::string id;       // sandbox id
  std::string dir;      // per-sandbox state directory (exists)
  Image image;          // verified
  uint32_t vcpus = 1;
  uint32_t memory_mib = 256;
  // Guest RAM: empty for anonymous memory; else this file, mapped shared
  // (the VM writes into it: a snapshot source) or private (copy-on-write
  // over a template's memory: a clone).
  std::string mem_path;
  bool mem_shared = false;
  // Start paused, waiting for incoming state (a clone).
  bool incoming = false;
  // The saved device state to restore, open for reading: inherited by the
  // VMM (LaunchedVm::incoming_uri names it). -1: none.
  int incoming_fd = -1;
  // Networking (supplied by lib/net): the namespace the VMM joins before it
  // starts, a TAP device's fd handed to the VMM, and text appended to the
  // guest kernel's command line. -1 / empty: none.
  int netns_fd = -1;
  int tap_fd = -1;
  std::string extra_cmdline;
  // Extra read-only raw disks after the root disk, the i-th with the serial
  // "ztee-m<i>" (workspace mounts; the guest agent finds them by serial).
  std::vector<std::string> disks;
  // The VMM binary to exec; empty: the driver's own. A jailed VMM runs the
  // copy at the same path inside its jail root.
  std::string binary;
  // Applied to the VMM child before exec (lib/jail); null: unconfined. The
  // paths above (image, mem_path) are then paths inside the jail.
  const Confinement* confinement = nullptr;
};

// Host ends of a launched VM's channels: all connected stream sockets.
struct VmChannels {
  UniqueFd agent;    // the agent byte stream (virtio-serial port / vsock)
  UniqueFd control;  // the VMM's control socket (QMP / REST)
  UniqueFd console;  // the guest's serial console
  UniqueFd log;      // the VMM's own stdout+stderr
};

struct LaunchedVm {
  Child process;
  VmChannels channels;
  // The migration URI of VmConfig::incoming_fd inside the VMM ("fd:6").
  std::string incoming_uri;
};

class Driver {
 public:
  virtual ~Driver() = default;
  // "qemu/tcg", "qemu/kvm"
  virtual std::string description() const = 0;
  // True when guests run under software emulation (TCG), where guest code
  // is translated per VMM process.
  virtual bool emulated() const = 0;
  // Why this backend and accelerator were chosen, e.g. "/dev/kvm is
  // kvm_pvm, which runs only PVM guest kernels" or "hardware KVM: kvm_intel".
  virtual std::string choice_reason() const = 0;
  // The VMM's own version line, e.g. "QEMU emulator version 7.2.22"; asked
  // once and cached. May block (runs the binary): not on the loop thread.
  virtual std::string version() = 0;
  // Spawns the VMM. Called on the loop thread (the VMM's parent-death signal
  // follows the spawning thread, which lives as long as the runtime).
  virtual Result<LaunchedVm> launch(const VmConfig& cfg) = 0;
};

}  // namespace ztee::detail
