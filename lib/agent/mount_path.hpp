// Workspace mount paths, checked the same way by the host (before it puts
// them on the guest kernel's command line) and by the guest agent.
#pragma once

#include <cctype>
#include <string_view>

namespace ztee::proto {

// Absolute, normalised, [A-Za-z0-9._-] components, at most 255 bytes, not /
// and not in /proc, /sys, /dev, /run or /tmp (which the agent mounts itself).
inline bool valid_mount_path(std::string_view p) {
  if (p.size() < 2 || p.size() > 255 || p[0] != '/' || p.back() == '/') return false;
  size_t i = 1;
  while (i <= p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string_view::npos) j = p.size();
    std::string_view c = p.substr(i, j - i);
    if (c.empty() || c == "." || c == "..") return false;
    for (char ch : c)
      if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '_' || ch == '-')) return false;
    i = j + 1;
  }
  for (std::string_view b : {"/proc", "/sys", "/dev", "/run", "/tmp"})
    if (p == b || (p.size() > b.size() && p.substr(0, b.size()) == b && p[b.size()] == '/')) return false;
  return true;
}

}  // namespace ztee::proto
