// libnl-route helpers of lib/net: links, addresses, routes, sysctls.
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/macvlan.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/route.h>
#include <netlink/socket.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "net/internal.hpp"

namespace ztee::detail::netimpl {

namespace {

struct NlAddrPut {
  void operator()(nl_addr* a) const { nl_addr_put(a); }
};
using NlAddrPtr = std::unique_ptr<nl_addr, NlAddrPut>;
struct LinkPut {
  void operator()(rtnl_link* l) const { rtnl_link_put(l); }
};
using LinkPtr = std::unique_ptr<rtnl_link, LinkPut>;
struct AddrPut {
  void operator()(rtnl_addr* a) const { rtnl_addr_put(a); }
};
struct RoutePut {
  void operator()(rtnl_route* r) const { rtnl_route_put(r); }
};
struct CachePut {
  void operator()(nl_cache* c) const { nl_cache_free(c); }
};
struct NeighPut {
  void operator()(rtnl_neigh* n) const { rtnl_neigh_put(n); }
};
using NeighPtr = std::unique_ptr<rtnl_neigh, NeighPut>;

NlAddrPtr v4(uint32_t addr_be, int prefix) {
  NlAddrPtr a(nl_addr_build(AF_INET, &addr_be, sizeof addr_be));
  if (a) nl_addr_set_prefixlen(a.get(), prefix);
  return a;
}

Error no_memory(std::string_view step) { return make_error(Errc::kNoMemory, fmt::format("{}: out of memory", step), ENOMEM); }

}  // namespace

NlSock::~NlSock() {
  if (sk_) nl_socket_free(sk_);
}

Result<NlSock> NlSock::open(std::string_view where) {
  NlSock s;
  s.sk_ = nl_socket_alloc();
  if (!s.sk_) return no_memory(fmt::format("opening a netlink socket ({})", where));
  int rc = nl_connect(s.sk_, NETLINK_ROUTE);
  if (rc < 0) return nl_error(rc, fmt::format("opening a netlink socket ({})", where));
  // nl_connect leaves the descriptor inheritable; a VMM spawned meanwhile must not get it.
  ::fcntl(nl_socket_get_fd(s.sk_), F_SETFD, FD_CLOEXEC);
  return s;
}

int nl_errno(int nlerr) {
  switch (nlerr < 0 ? -nlerr : nlerr) {
    case NLE_EXIST: return EEXIST;
    case NLE_PERM: return EPERM;
    case NLE_NOACCESS: return EACCES;
    case NLE_NODEV: return ENODEV;
    case NLE_OBJ_NOTFOUND: return ENOENT;
    case NLE_NOMEM: return ENOMEM;
    case NLE_INVAL: return EINVAL;
    case NLE_RANGE: return ERANGE;
    case NLE_BUSY: return EBUSY;
    case NLE_AGAIN: return EAGAIN;
    case NLE_OPNOTSUPP: return EOPNOTSUPP;
    case NLE_AF_NOSUPPORT: return EAFNOSUPPORT;
    case NLE_NOADDR: return EADDRNOTAVAIL;
    default: return EIO;
  }
}

Error nl_error(int nlerr, std::string_view step) {
  int e = nl_errno(nlerr);
  Errc code = (e == EPERM || e == EACCES) ? Errc::kPermission : e == ENOMEM ? Errc::kNoMemory : Errc::kIo;
  std::string hint = code == Errc::kPermission ? " (network slots need CAP_NET_ADMIN: run as root)" : "";
  return make_error(code, fmt::format("{}: {}{}", step, nl_geterror(nlerr), hint), e);
}

Result<std::vector<uint32_t>> ipv4_addrs(nl_sock* sk) {
  nl_cache* raw = nullptr;
  int rc = rtnl_addr_alloc_cache(sk, &raw);
  if (rc < 0) return nl_error(rc, "listing the host's addresses");
  std::unique_ptr<nl_cache, CachePut> cache(raw);
  std::vector<uint32_t> out;
  for (nl_object* o = nl_cache_get_first(raw); o; o = nl_cache_get_next(o)) {
    auto* a = reinterpret_cast<rtnl_addr*>(o);
    if (rtnl_addr_get_family(a) != AF_INET) continue;
    nl_addr* local = rtnl_addr_get_local(a);
    if (!local || nl_addr_get_len(local) != 4) continue;
    uint32_t v;
    std::memcpy(&v, nl_addr_get_binary_addr(local), 4);
    out.push_back(v);
  }
  return out;
}

Result<void> link_up(nl_sock* sk, int ifindex, std::string_view name) {
  LinkPtr orig(rtnl_link_alloc()), change(rtnl_link_alloc());
  if (!orig || !change) return no_memory("setting a link up");
  rtnl_link_set_ifindex(orig.get(), ifindex);
  rtnl_link_set_flags(change.get(), IFF_UP);
  int rc = rtnl_link_change(sk, orig.get(), change.get(), 0);
  if (rc < 0) return nl_error(rc, fmt::format("setting link {} up", name));
  return {};
}

Result<void> add_addr(nl_sock* sk, int ifindex, std::string_view name, uint32_t addr_be, int prefix) {
  std::unique_ptr<rtnl_addr, AddrPut> a(rtnl_addr_alloc());
  NlAddrPtr local = v4(addr_be, prefix);
  if (!a || !local) return no_memory("adding an address");
  rtnl_addr_set_ifindex(a.get(), ifindex);
  rtnl_addr_set_family(a.get(), AF_INET);
  int rc = rtnl_addr_set_local(a.get(), local.get());
  if (rc >= 0) rc = rtnl_addr_add(sk, a.get(), 0);
  if (rc < 0) return nl_error(rc, fmt::format("adding address {}/{} to {}", ipv4_text(addr_be), prefix, name));
  return {};
}

Result<void> add_default_route(nl_sock* sk, int ifindex, uint32_t gw_be) {
  std::unique_ptr<rtnl_route, RoutePut> r(rtnl_route_alloc());
  NlAddrPtr dst = v4(0, 0), gw = v4(gw_be, 32);
  rtnl_nexthop* nh = rtnl_route_nh_alloc();
  if (!r || !dst || !gw || !nh) {
    if (nh) rtnl_route_nh_free(nh);
    return no_memory("adding the default route");
  }
  rtnl_route_set_family(r.get(), AF_INET);
  rtnl_route_set_table(r.get(), RT_TABLE_MAIN);
  rtnl_route_set_protocol(r.get(), RTPROT_STATIC);
  rtnl_route_set_dst(r.get(), dst.get());
  rtnl_route_nh_set_ifindex(nh, ifindex);
  rtnl_route_nh_set_gateway(nh, gw.get());
  rtnl_route_add_nexthop(r.get(), nh);  // the route owns nh from here
  int rc = rtnl_route_add(sk, r.get(), NLM_F_CREATE | NLM_F_EXCL);
  if (rc < 0) return nl_error(rc, fmt::format("adding the default route via {}", ipv4_text(gw_be)));
  return {};
}

Result<void> delete_link(nl_sock* sk, const std::string& name) {
  LinkPtr l(rtnl_link_alloc());
  if (!l) return no_memory("deleting a link");
  rtnl_link_set_name(l.get(), name.c_str());
  int rc = rtnl_link_delete(sk, l.get());
  if (rc < 0 && rc != -NLE_NODEV && rc != -NLE_OBJ_NOTFOUND) return nl_error(rc, fmt::format("deleting link {}", name));
  return {};
}

Result<bool> link_exists(nl_sock* sk, const std::string& name) {
  rtnl_link* raw = nullptr;
  int rc = rtnl_link_get_kernel(sk, 0, name.c_str(), &raw);
  LinkPtr l(raw);
  if (rc == -NLE_NODEV || rc == -NLE_OBJ_NOTFOUND) return false;
  if (rc < 0) return nl_error(rc, fmt::format("looking up link {}", name));
  return true;
}

Result<void> add_macvlan(nl_sock* sk, int parent_ifindex, const std::string& name, const std::array<uint8_t, 6>& mac,
                         int ns_fd) {
  LinkPtr l(rtnl_link_macvlan_alloc());
  NlAddrPtr ll(nl_addr_build(AF_LLC, mac.data(), mac.size()));
  if (!l || !ll) return no_memory("creating the slot's macvlan");
  int rc = rtnl_link_macvlan_set_mode(l.get(), MACVLAN_MODE_PRIVATE);
  if (rc < 0) return nl_error(rc, "creating the slot's macvlan (mode private)");
  rtnl_link_set_link(l.get(), parent_ifindex);
  rtnl_link_set_name(l.get(), name.c_str());
  rtnl_link_set_addr(l.get(), ll.get());
  rtnl_link_set_ns_fd(l.get(), ns_fd);
  rc = rtnl_link_add(sk, l.get(), NLM_F_CREATE | NLM_F_EXCL);
  if (rc < 0) return nl_error(rc, fmt::format("creating macvlan {} (private mode) on {}", name, kHostParent));
  return {};
}

Result<void> add_veth_pair(nl_sock* sk, const std::string& name, const std::string& peer_name) {
  rtnl_link* link = rtnl_link_veth_alloc();
  if (!link) return no_memory("creating a veth pair");
  rtnl_link* peer = rtnl_link_veth_get_peer(link);
  rtnl_link_set_name(link, name.c_str());
  rtnl_link_set_name(peer, peer_name.c_str());
  int rc = rtnl_link_add(sk, link, NLM_F_CREATE | NLM_F_EXCL);
  rtnl_link_put(peer);           // the reference get_peer took
  rtnl_link_veth_release(link);  // frees link and peer
  if (rc == -NLE_EXIST) return make_error(Errc::kIo, fmt::format("creating veth pair {} <-> {}: exists", name, peer_name), EEXIST);
  if (rc < 0) return nl_error(rc, fmt::format("creating veth pair {} <-> {}", name, peer_name));
  return {};
}

Result<void> neigh_replace(nl_sock* sk, int ifindex, uint32_t addr_be, const std::array<uint8_t, 6>& mac) {
  NeighPtr n(rtnl_neigh_alloc());
  NlAddrPtr dst = v4(addr_be, 32);
  NlAddrPtr ll(nl_addr_build(AF_LLC, mac.data(), mac.size()));
  if (!n || !dst || !ll) return no_memory("adding a neighbour entry");
  rtnl_neigh_set_ifindex(n.get(), ifindex);
  rtnl_neigh_set_family(n.get(), AF_INET);
  int rc = rtnl_neigh_set_dst(n.get(), dst.get());
  rtnl_neigh_set_lladdr(n.get(), ll.get());
  rtnl_neigh_set_state(n.get(), NUD_REACHABLE);
  if (rc >= 0) rc = rtnl_neigh_add(sk, n.get(), NLM_F_CREATE | NLM_F_REPLACE);
  if (rc < 0) return nl_error(rc, fmt::format("setting the host's neighbour entry for {}", ipv4_text(addr_be)));
  return {};
}

Result<bool> neigh_delete(nl_sock* sk, int ifindex, uint32_t addr_be) {
  NeighPtr n(rtnl_neigh_alloc());
  NlAddrPtr dst = v4(addr_be, 32);
  if (!n || !dst) return no_memory("deleting a neighbour entry");
  rtnl_neigh_set_ifindex(n.get(), ifindex);
  rtnl_neigh_set_family(n.get(), AF_INET);
  int rc = rtnl_neigh_set_dst(n.get(), dst.get());
  if (rc >= 0) rc = rtnl_neigh_delete(sk, n.get(), 0);
  if (rc == -NLE_OBJ_NOTFOUND || rc == -NLE_NODEV) return false;
  if (rc < 0) return nl_error(rc, fmt::format("deleting the host's neighbour entry for {}", ipv4_text(addr_be)));
  return true;
}

Result<void> write_sysctl(const char* path, std::string_view value, bool missing_ok) {
  int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT && missing_ok) return {};
    return make_error(e == EACCES || e == EPERM ? Errc::kPermission : Errc::kIo,
                      fmt::format("opening {}: {}", path, std::strerror(e)), e);
  }
  ssize_t n = ::write(fd, value.data(), value.size());
  int e = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(value.size()))
    return make_error(Errc::kIo, fmt::format("writing \"{}\" to {}: {}", value, path, std::strerror(n < 0 ? e : EIO)),
                      n < 0 ? e : EIO);
  return {};
}

Result<std::string> read_sysctl(const char* path) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return make_error(Errc::kIo, fmt::format("opening {}: {}", path, std::strerror(e)), e);
  }
  char buf[64];
  ssize_t n = ::read(fd, buf, sizeof buf);
  int e = errno;
  ::close(fd);
  if (n < 0) return make_error(Errc::kIo, fmt::format("reading {}: {}", path, std::strerror(e)), e);
  std::string s(buf, static_cast<size_t>(n));
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace ztee::detail::netimpl
