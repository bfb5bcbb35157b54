// PID 1 boot: from the initramfs to the overlay root, and the agent port.
#pragma once

#include <string>

namespace ztee::guest {

// Mounts the pseudo filesystems, loads the modules listed in
// /etc/ztee/modules, mounts the read-only root with a tmpfs overlay, switches
// into it and sets up /tmp, /dev/pts, /dev/shm, lo and the environment.
// On failure prints a line to the console and powers off: never returns.
void boot_or_die();

// Opens /dev/vportNpM for the virtio-serial port named `name`, waiting up to
// `timeout_ms` for it to appear. Returns -1 (errno set) on failure.
int open_port(const std::string& name, int timeout_ms);

// Prints "ztee-agent: fatal: <msg>" on the console, syncs and powers off.
[[noreturn]] void die(const std::string& msg);

// sync + power off (PID 1). Never returns.
[[noreturn]] void power_off();

}  // namespace ztee::guest
