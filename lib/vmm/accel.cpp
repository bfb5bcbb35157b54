#include "vmm/accel.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace ztee::detail {

namespace {

bool is_dir(const std::string& p) {
  struct stat st{};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// True when the first "flags" line of cpuinfo lists `flag`.
bool cpu_has_flag(const std::string& cpuinfo, const std::string& flag) {
  std::ifstream f(cpuinfo);
  std::string line;
  while (std::getline(f, line)) {
    if (!line.starts_with("flags")) continue;
    size_t colon = line.find(':');
    if (colon == std::string::npos) return false;
    std::istringstream words(line.substr(colon + 1));
    std::string w;
    while (words >> w)
      if (w == flag) return true;
    return false;
  }
  return false;
}

}  // namespace

std::string KvmHost::describe() const {
  switch (kind) {
    case Kind::kAbsent: return fmt::format("no {}", node);
    case Kind::kHardware: return fmt::format("hardware KVM: {}", provider);
    case Kind::kPvm: return fmt::format("{} is {}, which runs only PVM guest kernels", node, provider);
    case Kind::kUnknown:
      return fmt::format("{} is not hardware KVM (no kvm_intel with vmx, no kvm_amd with svm)", node);
  }
  return node;
}

KvmHost probe_kvm_host(const KvmProbePaths& paths) {
  KvmHost h;
  h.node = paths.node;
  struct stat st{};
  if (::stat(paths.node.c_str(), &st) != 0 || !S_ISCHR(st.st_mode)) {
    h.open_errno = errno ? errno : ENODEV;
    return h;
  }
  h.rdev = st.st_rdev;
  int fd = ::open(paths.node.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    h.open_errno = errno;
  } else {
    int v = ::ioctl(fd, KVM_GET_API_VERSION, 0);
    if (v == KVM_API_VERSION) h.opens = true;
    else h.open_errno = v < 0 ? errno : EPROTO;
    ::close(fd);
  }
  auto loaded = [&](const char* m) { return is_dir(paths.sys_module + "/" + m); };
  if (loaded("kvm_intel") && cpu_has_flag(paths.cpuinfo, "vmx")) {
    h.kind = KvmHost::Kind::kHardware;
    h.provider = "kvm_intel";
  } else if (loaded("kvm_amd") && cpu_has_flag(paths.cpuinfo, "svm")) {
    h.kind = KvmHost::Kind::kHardware;
    h.provider = "kvm_amd";
  } else if (loaded("kvm_pvm")) {
    h.kind = KvmHost::Kind::kPvm;
    h.provider = "kvm_pvm";
  } else {
    h.kind = KvmHost::Kind::kUnknown;
  }
  return h;
}

std::string effective_accel_request(const std::string& requested) {
  if (!requested.empty()) return requested;
  const char* env = std::getenv("ZTEE_ACCEL");
  return env && *env ? env : "auto";
}

Result<AccelChoice> choose_accel(const std::string& requested_in, const KvmHost& host, bool own_node) {
  const std::string requested = effective_accel_request(requested_in);
  const bool from_env = requested_in.empty() && requested != "auto";
  if (requested != "auto" && requested != "kvm" && requested != "tcg")
    return make_error(Errc::kInvalidArgument,
                      fmt::format("unknown accel \"{}\"{}: use auto, kvm or tcg", requested,
                                  from_env ? " (from $ZTEE_ACCEL)" : ""));
  if (requested == "tcg")
    return AccelChoice{false, from_env ? "ZTEE_ACCEL=tcg" : "accel tcg requested"};
  // A jailed VMM opens its own node, which only root can make; the probe ran
  // as root then, so `opens` still says whether the device answers at all.
  const bool can_open = host.opens;
  std::string open_problem;
  if (host.kind != KvmHost::Kind::kAbsent && !can_open)
    open_problem = fmt::format("{} cannot be opened by this process ({}){}", host.node, std::strerror(host.open_errno),
                               own_node || host.open_errno != EACCES
                                   ? ""
                                   : ": add this user to group kvm, or run as root");
  if (requested == "kvm") {
    auto refuse = [&](const std::string& why, const std::string& todo) -> Result<AccelChoice> {
      return make_error(Errc::kBackendUnavailable,
                        fmt::format("accel kvm{} cannot run this image: {}; {}", from_env ? " (from $ZTEE_ACCEL)" : "",
                                    why, todo));
    };
    switch (host.kind) {
      case KvmHost::Kind::kAbsent:
        return refuse(host.describe(), "load kvm_intel or kvm_amd on a host with hardware virtualisation, or use "
                                       "accel auto or tcg");
      case KvmHost::Kind::kPvm:
        return refuse(host.describe() + " (this image's kernel is not built for PVM)", "use accel auto or tcg");
      case KvmHost::Kind::kHardware:
      case KvmHost::Kind::kUnknown:
        // Unknown providers are the caller's call: they asked for KVM by name.
        if (!can_open) return refuse(open_problem, "use accel auto or tcg");
        return AccelChoice{true, host.kind == KvmHost::Kind::kHardware
                                     ? host.describe()
                                     : "accel kvm requested on a /dev/kvm that is not known hardware KVM"};
    }
  }
  // auto
  switch (host.kind) {
    case KvmHost::Kind::kHardware:
      if (can_open) return AccelChoice{true, host.describe()};
      return AccelChoice{false, fmt::format("{}: {}", host.describe(), open_problem)};
    case KvmHost::Kind::kAbsent:
      return AccelChoice{false, "no usable /dev/kvm"};
    case KvmHost::Kind::kPvm:
      return AccelChoice{false, host.describe()};
    case KvmHost::Kind::kUnknown:
      return AccelChoice{false, host.describe() + "; set accel kvm to use it anyway"};
  }
  return AccelChoice{false, "no usable /dev/kvm"};
}

}  // namespace ztee::detail
