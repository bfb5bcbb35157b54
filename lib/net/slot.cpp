// NetSlot: one sandbox's network namespace, TAP, veth pair and firewall.
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <netlink/errno.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "net/internal.hpp"

namespace ztee::detail {

using namespace netimpl;

namespace {

constexpr uint32_t kTapAddr = ipv4_be(100, 96, 0, 1);
constexpr uint32_t kGuestAddr = ipv4_be(100, 96, 0, 2);

Error sys_error(std::string_view step, int e, std::string_view hint = "") {
  Errc code = (e == EPERM || e == EACCES) ? Errc::kPermission : Errc::kIo;
  std::string h(hint);
  if (h.empty() && code == Errc::kPermission) h = " (network slots need root: CAP_NET_ADMIN and CAP_SYS_ADMIN)";
  return make_error(code, fmt::format("{}: {}{}", step, std::strerror(e), h), e);
}

Error with_context(Error e, std::string_view context) {
  e.message = fmt::format("{}: {}", context, e.message);
  return e;
}

uint32_t slot_base_host(const NetEnv& env, uint32_t slot) { return ntohl(env.pool_be) + 4 * slot; }

// Opens tap0 in the calling thread's namespace.
Result<UniqueFd> open_tap() {
  UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return sys_error("opening /dev/net/tun for the slot's TAP", errno);
  struct ifreq ifr{};
  std::strncpy(ifr.ifr_name, "tap0", IFNAMSIZ - 1);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) return sys_error("creating TAP tap0 (TUNSETIFF)", errno);
  // Persistent: closing the last fd does not unregister tap0 on its own (a
  // synchronous ~20 ms kernel step); it goes with the namespace, which dies
  // when no fd holds it, even after a crash.
  if (::ioctl(fd.get(), TUNSETPERSIST, 1) != 0) return sys_error("making tap0 persistent (TUNSETPERSIST)", errno);
  return fd;
}

// Creates the veth pair: `host_name` in host_sk's namespace, eth0 in ns_fd. Both up.
Result<void> add_veth(nl_sock* host_sk, const std::string& host_name, int ns_fd) {
  rtnl_link* link = rtnl_link_veth_alloc();
  if (!link) return make_error(Errc::kNoMemory, "creating the veth pair: out of memory", ENOMEM);
  rtnl_link* peer = rtnl_link_veth_get_peer(link);
  rtnl_link_set_name(link, host_name.c_str());
  rtnl_link_set_flags(link, IFF_UP);
  rtnl_link_set_name(peer, "eth0");  // not up here: the kernel cannot open a peer before the pair is linked
  rtnl_link_set_ns_fd(peer, ns_fd);
  int rc = rtnl_link_add(host_sk, link, NLM_F_CREATE | NLM_F_EXCL);
  rtnl_link_put(peer);           // the reference get_peer took
  rtnl_link_veth_release(link);  // frees link and peer
  if (rc == -NLE_EXIST)
    return make_error(Errc::kIo,
                      fmt::format("creating veth {}: a link of that name already exists on the host: the slot is in "
                                  "use by another runtime or was left by a crashed one (run `ztee gc`)",
                                  host_name),
                      EEXIST);
  if (rc < 0) return nl_error(rc, fmt::format("creating veth pair {} <-> eth0", host_name));
  return {};
}

Result<int> ifindex_here(const char* name) {
  unsigned idx = ::if_nametoindex(name);
  if (idx == 0) return sys_error(fmt::format("looking up {} in the slot namespace", name), errno);
  return static_cast<int>(idx);
}

Result<int> ifindex_in(nl_sock* sk, const std::string& name) {
  rtnl_link* l = nullptr;
  int rc = rtnl_link_get_kernel(sk, 0, name.c_str(), &l);
  if (rc < 0) return nl_error(rc, fmt::format("looking up link {}", name));
  int idx = rtnl_link_get_ifindex(l);
  rtnl_link_put(l);
  return idx;
}

#define ZTEE_TRY(expr)                            \
  do {                                            \
    auto _r = (expr);                             \
    if (!_r) return std::move(_r).error();        \
  } while (0)

}  // namespace

uint32_t NetSlot::host_addr_be() const { return htonl(slot_base_host(env_, slot_) + 1); }
uint32_t NetSlot::slot_addr_be() const { return htonl(slot_base_host(env_, slot_) + 2); }

std::string NetSlot::guest_cmdline() const {
  std::string s = fmt::format("ztee.net={}/30,{}", ipv4_text(kGuestAddr), ipv4_text(kTapAddr));
  if (policy_.dns_be) s += fmt::format(",dns={}", ipv4_text(*policy_.dns_be));
  return s;
}

NetSlot::GuestConfig NetSlot::guest_config() const {
  return {ipv4_text(kGuestAddr) + "/30", ipv4_text(kTapAddr), policy_.dns_be ? ipv4_text(*policy_.dns_be) : ""};
}

Result<NetSlot> NetSlot::create(const NetEnv& env, uint32_t slot, const NetPolicy& policy) {
  ZTEE_TRY(validate_slot(env, slot));
  if (policy.allow.size() > kMaxNetRules)
    return make_error(Errc::kInvalidArgument, fmt::format("net policy has {} rules; at most {} are supported",
                                                          policy.allow.size(), kMaxNetRules));
  NetSlot s;
  s.env_ = env;
  s.slot_ = slot;
  s.policy_ = policy;
  const std::string host_name = slot_host_ifname(slot);
  const std::string context = fmt::format("creating network slot {} ({})", slot, host_name);

  auto host_sk = NlSock::open("host namespace");
  if (!host_sk) return with_context(std::move(host_sk).error(), context);
  auto host_addrs = ipv4_addrs(host_sk->get());
  if (!host_addrs) return with_context(std::move(host_addrs).error(), context);
  const std::string rules = slot_ruleset(env, policy, *host_addrs);
  const uint32_t host_ip = s.host_addr_be(), slot_ip = s.slot_addr_be();
  bool veth_made = false;

  auto built = on_worker_thread(
      [&]() -> Result<void> {
        // A fresh namespace for this worker thread only; the fd keeps it alive after the thread exits.
        if (::unshare(CLONE_NEWNET) != 0) return sys_error("creating the slot's network namespace (unshare)", errno);
        s.ns_ = UniqueFd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
        if (!s.ns_.valid()) return sys_error("opening the slot's namespace (/proc/thread-self/ns/net)", errno);
        // No IPv6 in the slot: links created below inherit disable_ipv6 from "default".
        ZTEE_TRY(write_sysctl("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1", true));
        ZTEE_TRY(write_sysctl("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1", true));
        ZTEE_TRY(write_sysctl("/proc/sys/net/ipv4/ip_forward", "1"));
        auto sk = NlSock::open("slot namespace");
        if (!sk) return std::move(sk).error();
        ZTEE_TRY(link_up(sk->get(), 1, "lo"));
        auto tap = open_tap();
        if (!tap) return std::move(tap).error();
        s.tap_ = std::move(*tap);
        auto tap_idx = ifindex_here("tap0");
        if (!tap_idx) return std::move(tap_idx).error();
        ZTEE_TRY(add_addr(sk->get(), *tap_idx, "tap0", kTapAddr, 30));
        ZTEE_TRY(link_up(sk->get(), *tap_idx, "tap0"));

        ZTEE_TRY(add_veth(host_sk->get(), host_name, s.ns_.get()));
        veth_made = true;
        auto host_idx = ifindex_in(host_sk->get(), host_name);
        if (!host_idx) return std::move(host_idx).error();
        ZTEE_TRY(add_addr(host_sk->get(), *host_idx, host_name, host_ip, 30));
        auto eth_idx = ifindex_here("eth0");
        if (!eth_idx) return std::move(eth_idx).error();
        ZTEE_TRY(add_addr(sk->get(), *eth_idx, "eth0", slot_ip, 30));
        ZTEE_TRY(link_up(sk->get(), *eth_idx, "eth0"));
        ZTEE_TRY(add_default_route(sk->get(), *eth_idx, host_ip));
        auto fw = nft_run(rules, "loading the slot firewall");
        if (!fw) return std::move(fw).error();
        return {};
      },
      context);
  if (built) {
    // Back on the calling (host-namespace) thread: no IPv6 on the host end either.
    built = write_sysctl(fmt::format("/proc/sys/net/ipv6/conf/{}/disable_ipv6", host_name).c_str(), "1", true);
  }
  if (!built) {
    Error e = with_context(std::move(built).error(), context);
    s.tap_.reset();
    s.ns_.reset();
    if (veth_made) {
      auto d = delete_link(host_sk->get(), host_name);
      if (!d) e.message += fmt::format("; cleanup also failed: {} (run `ztee gc`)", d.error().message);
    }
    return e;
  }
  s.host_ifname_ = host_name;
  return s;
}

NetSlot::NetSlot(NetSlot&& o) noexcept
    : env_(o.env_),
      slot_(o.slot_),
      ns_(std::move(o.ns_)),
      tap_(std::move(o.tap_)),
      host_ifname_(std::exchange(o.host_ifname_, std::string())),
      policy_(std::move(o.policy_)) {}

NetSlot& NetSlot::operator=(NetSlot&& o) noexcept {
  if (this != &o) {
    teardown_best_effort();
    env_ = o.env_;
    slot_ = o.slot_;
    ns_ = std::move(o.ns_);
    tap_ = std::move(o.tap_);
    host_ifname_ = std::exchange(o.host_ifname_, std::string());
    policy_ = std::move(o.policy_);
  }
  return *this;
}

NetSlot::~NetSlot() { teardown_best_effort(); }

void NetSlot::teardown_best_effort() {
  if (host_ifname_.empty()) return;
  auto r = destroy();
  (void)r;
}

Result<void> NetSlot::set_policy(const NetPolicy& policy) {
  if (host_ifname_.empty() || !ns_.valid())
    return make_error(Errc::kClosed, fmt::format("setting the policy of network slot {}: the slot was destroyed", slot_));
  if (policy.allow.size() > kMaxNetRules)
    return make_error(Errc::kInvalidArgument, fmt::format("net policy has {} rules; at most {} are supported",
                                                          policy.allow.size(), kMaxNetRules));
  const std::string context = fmt::format("setting the policy of network slot {} ({})", slot_, host_ifname_);
  auto host_sk = NlSock::open("host namespace");
  if (!host_sk) return with_context(std::move(host_sk).error(), context);
  auto host_addrs = ipv4_addrs(host_sk->get());
  if (!host_addrs) return with_context(std::move(host_addrs).error(), context);
  const std::string rules = slot_ruleset(env_, policy, *host_addrs);
  auto r = on_worker_thread(
      [&]() -> Result<void> {
        // Enter the slot namespace on this worker thread only; it exits right after.
        if (::setns(ns_.get(), CLONE_NEWNET) != 0) return sys_error("entering the slot namespace (setns)", errno);
        auto fw = nft_run(rules, "loading the slot firewall");
        if (!fw) return std::move(fw).error();
        return conntrack_flush();
      },
      context);
  if (!r) return with_context(std::move(r).error(), context);
  policy_ = policy;
  return {};
}

Result<void> NetSlot::destroy() {
  if (host_ifname_.empty()) return {};
  const std::string name = std::exchange(host_ifname_, std::string());
  const std::string context = fmt::format("destroying network slot {} ({})", slot_, name);
  tap_.reset();
  ns_.reset();
  auto sk = NlSock::open("host namespace");
  if (!sk) return with_context(std::move(sk).error(), context);
  // Deleting one end of a veth deletes both; the namespace is gone once no fd holds it.
  auto d = delete_link(sk->get(), name);
  if (!d) return with_context(std::move(d).error(), context + " (left: host link " + name + "; run `ztee gc`)");
  auto still = link_exists(sk->get(), name);
  if (!still) return with_context(std::move(still).error(), context);
  if (*still)
    return make_error(Errc::kIo, fmt::format("{}: host link {} still exists after deletion (run `ztee gc`)", context, name),
                      EBUSY);
  return {};
}

}  // namespace ztee::detail
