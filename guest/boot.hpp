// PID 1 boot: from the initramfs to the overlay root, and the agent port.
#pragma once

#include <string>
#include <vector>

#include "util.hpp"

namespace ztee::guest {

// One overlay the agent can report changes of (DIFF): the guest's root
// filesystem, or a workspace mount. The fds stay usable after the switch to
// the new root, where the layers themselves are not visible.
struct Layer {
  std::string mount;  // "" for the root, else the guest path ("/workspace")
  Fd upper;           // the overlay's writable layer (a directory on the tmpfs)
  Fd lower;           // its read-only layer
};

// Mounts the pseudo filesystems, loads the modules listed in
// /etc/ztee/modules, mounts the read-only root with a tmpfs overlay, switches
// into it and sets up /tmp, /dev/pts, /dev/shm, lo and the environment.
// Workspace mounts come from the kernel command line: ztee.mounts=/a,/b names
// the guest paths of the read-only disks after the root (/dev/vdb, /dev/vdc,
// ...), each mounted under an overlay with its own writable layer.
// Returns the layers (root first). On failure prints a line to the console
// and powers off: never returns.
std::vector<Layer> boot_or_die();


// Opens /dev/vportNpM for the virtio-serial port named `name`, waiting up to
// `timeout_ms` for it to appear. Returns -1 (errno set) on failure.
int open_port(const std::string& name, int timeout_ms);

// Prints "ztee-agent: fatal: <msg>" on the console, syncs and powers off.
[[noreturn]] void die(const std::string& msg);

// sync + power off (PID 1). Never returns.
[[noreturn]] void power_off();

}  // namespace ztee::guest
