#include "net.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <net/route.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "util.hpp"

namespace ztee::guest {

namespace {

bool parse_ipv4(const std::string& text, uint32_t* out) {
  in_addr a{};
  if (text.empty() || ::inet_pton(AF_INET, text.c_str(), &a) != 1) return false;
  *out = a.s_addr;
  return true;
}

sockaddr make_sin(uint32_t addr_be) {
  sockaddr sa{};
  auto* sin = reinterpret_cast<sockaddr_in*>(&sa);
  sin->sin_family = AF_INET;
  sin->sin_addr.s_addr = addr_be;
  return sa;
}

// The first non-loopback interface the kernel made (virtio-net: eth0).
std::string find_interface() {
  std::string best;
  if (DIR* d = ::opendir("/sys/class/net")) {
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n == "." || n == ".." || n == "lo") continue;
      if (best.empty() || n < best) best = n;
    }
    ::closedir(d);
  }
  return best;
}

std::string sys_error(const std::string& what, int err) { return what + ": " + std::strerror(err); }

}  // namespace

bool parse_ipv4_cidr(const std::string& text, uint32_t* addr_be, int* prefix) {
  auto slash = text.find('/');
  if (slash == std::string::npos || slash + 1 >= text.size() || text.size() - slash > 3) return false;
  int p = 0;
  for (size_t i = slash + 1; i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') return false;
    p = p * 10 + (text[i] - '0');
  }
  if (p > 32) return false;
  if (!parse_ipv4(text.substr(0, slash), addr_be)) return false;
  *prefix = p;
  return true;
}

std::string configure_network(const NetConfig& cfg) {
  uint32_t addr = 0, gw = 0, dns = 0;
  int prefix = 0;
  if (!parse_ipv4_cidr(cfg.address, &addr, &prefix)) return "net.address must look like a.b.c.d/prefix";
  if (!parse_ipv4(cfg.gateway, &gw)) return "net.gateway must be an IPv4 address";
  if (!cfg.dns.empty() && !parse_ipv4(cfg.dns, &dns)) return "net.dns must be an IPv4 address";
  std::string ifname = find_interface();
  if (ifname.empty()) return "no network interface in the guest (is the virtio_net module in the image?)";

  Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) return sys_error("socket", errno);
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
  ifr.ifr_addr = make_sin(addr);
  if (::ioctl(s.get(), SIOCSIFADDR, &ifr) != 0) return sys_error("set address of " + ifname, errno);
  uint32_t mask = prefix == 0 ? 0 : htonl(~uint32_t{0} << (32 - prefix));
  ifr.ifr_netmask = make_sin(mask);
  if (::ioctl(s.get(), SIOCSIFNETMASK, &ifr) != 0) return sys_error("set netmask of " + ifname, errno);
  if (::ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0) return sys_error("get flags of " + ifname, errno);
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  if (::ioctl(s.get(), SIOCSIFFLAGS, &ifr) != 0) return sys_error("bring up " + ifname, errno);

  // A restored clone sits behind a new host-side device: drop the old one's
  // cached hardware address so the next packet asks again.
  arpreq ar{};
  ar.arp_pa = make_sin(gw);
  std::strncpy(ar.arp_dev, ifname.c_str(), sizeof ar.arp_dev - 1);
  if (::ioctl(s.get(), SIOCDARP, &ar) != 0 && errno != ENXIO && errno != ENOENT)
    return sys_error("flush neighbour entry of the gateway", errno);

  rtentry rt{};
  rt.rt_dst = make_sin(0);
  rt.rt_genmask = make_sin(0);
  rt.rt_gateway = make_sin(gw);
  rt.rt_flags = RTF_UP | RTF_GATEWAY;
  rt.rt_dev = ifr.ifr_name;
  if (::ioctl(s.get(), SIOCADDRT, &rt) != 0 && errno != EEXIST) return sys_error("add default route", errno);

  // The root is an overlay with a tmpfs upper layer: /etc is writable.
  if (cfg.dns.empty()) {
    if (::unlink("/etc/resolv.conf") != 0 && errno != ENOENT) return sys_error("remove /etc/resolv.conf", errno);
    return {};
  }
  std::string text = "nameserver " + cfg.dns + "\n";
  ::unlink("/etc/resolv.conf");  // may be a dangling symlink in the image
  Fd f(::open("/etc/resolv.conf", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!f.valid()) return sys_error("write /etc/resolv.conf", errno);
  if (::write(f.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()))
    return sys_error("write /etc/resolv.conf", errno);
  return {};
}

}  // namespace ztee::guest
