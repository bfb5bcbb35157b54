// The QEMU backend: `qemu-system-x86_64 -M microvm`, KVM when the host has
// hardware KVM, TCG otherwise (vmm/accel.hpp). Control over QMP; the agent on virtio-serial port
// `ztee.agent`; console on the ISA serial port. All channels are socketpairs
// created before the VMM starts, so nothing races on socket paths.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "vmm/driver.hpp"

namespace ztee::detail {

struct QemuConfig {
  std::string binary;  // absolute path
  bool kvm = false;
  // Why this accelerator (vmm/accel.hpp's AccelChoice::reason).
  std::string accel_reason;
  // Under TCG the guest's TSC ticks at the host's rate. Telling the guest
  // kernel that rate (tsc_early_khz) skips its PIT calibration, which fails on
  // a busy host and then hangs the boot.
  uint64_t tsc_khz = 0;
};

// The host TSC rate in kHz, measured against CLOCK_MONOTONIC_RAW (~20 ms).
uint64_t measure_tsc_khz();

// Resolves the QEMU binary and acceleration. `binary` empty: $ZTEE_QEMU, else
// qemu-system-x86_64 on PATH. `accel`: auto|kvm|tcg, empty: $ZTEE_ACCEL or
// auto (vmm/accel.hpp's choose_accel; `own_node`: the jail gives the VMM its
// own KVM node).
Result<QemuConfig> probe_qemu(const std::string& binary, const std::string& accel, bool own_node);

class QemuDriver final : public Driver {
 public:
  explicit QemuDriver(QemuConfig cfg) : cfg_(std::move(cfg)) {}
  std::string description() const override { return cfg_.kvm ? "qemu/kvm" : "qemu/tcg"; }
  bool emulated() const override { return !cfg_.kvm; }
  std::string choice_reason() const override { return cfg_.accel_reason; }
  Result<LaunchedVm> launch(const VmConfig& cfg) override;
  std::string version() override;
  // The argv without the channel fds' numbers bound (exposed for tests and
  // the boot benchmark's bare-QEMU baseline).
  // tap_fd: the TAP device's fd number in the VMM (-1: no network).
  std::vector<std::string> argv(const VmConfig& cfg, int agent_fd, int qmp_fd, int console_fd, int tap_fd = -1) const;

 private:
  QemuConfig cfg_;
  std::mutex version_mu_;
  std::string version_;
};

// Kernel command line shared by every QEMU boot.
std::string qemu_kernel_cmdline(const Image& img, uint64_t tsc_khz);

}  // namespace ztee::detail
