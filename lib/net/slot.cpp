// NetSlot: one sandbox's network namespace, TAP, macvlan and firewall; the slot lock.
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <netlink/errno.h>
#include <netlink/route/link.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "net/internal.hpp"

namespace ztee::detail::netimpl {

Result<UniqueFd> open_slot_locks(bool create) {
  auto fail = [](std::string step, int e) {
    return make_error(e == EACCES || e == EPERM ? Errc::kPermission : Errc::kIo,
                      fmt::format("{}: {}", step, std::strerror(e)), e);
  };
  if (create && ::mkdir("/run/ztee", 0700) != 0 && errno != EEXIST) return fail("creating /run/ztee", errno);
  UniqueFd fd(create ? ::open(kSlotLockPath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)
                     : ::open(kSlotLockPath, O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid() && !(errno == ENOENT && !create))
    return fail(fmt::format("opening the slot lock file {}", kSlotLockPath), errno);
  return fd;
}

namespace {
struct flock one_byte(short type, off_t at) {
  struct flock l{};
  l.l_type = type;
  l.l_whence = SEEK_SET;
  l.l_start = at;
  l.l_len = 1;
  return l;
}
}  // namespace

int lock_byte(int fd, int cmd, short type, off_t at) {
  struct flock l = one_byte(type, at);
  while (::fcntl(fd, cmd, &l) != 0)
    if (errno != EINTR || cmd != F_OFD_SETLKW) return errno;
  return 0;
}

Result<bool> byte_held(int fd, off_t at) {
  struct flock l = one_byte(F_WRLCK, at);
  if (::fcntl(fd, F_OFD_GETLK, &l) != 0) {
    int e = errno;
    return make_error(Errc::kIo, fmt::format("probing byte {} of {}: {}", at, kSlotLockPath, std::strerror(e)), e);
  }
  return l.l_type != F_UNLCK;
}

}  // namespace ztee::detail::netimpl

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

// By name in the calling thread's namespace (an ioctl, no netlink round trip).
Result<int> ifindex_here(const char* name, std::string_view where = "the slot namespace") {
  unsigned idx = ::if_nametoindex(name);
  if (idx == 0) return sys_error(fmt::format("looking up {} in {}", name, where), errno);
  return static_cast<int>(idx);
}

// Takes the host-wide lock of `slot` (layout notes in net.hpp).
Result<UniqueFd> lock_slot(uint32_t slot) {
  auto fd = open_slot_locks(true);
  if (!fd) return std::move(fd).error();
  // Waits only while `ztee gc` removes the host links (it holds the guard exclusively).
  if (int e = lock_byte(fd->get(), F_OFD_SETLKW, F_RDLCK, kGuardByte))
    return sys_error(fmt::format("locking {} (guard byte)", kSlotLockPath), e);
  if (int e = lock_byte(fd->get(), F_OFD_SETLK, F_WRLCK, slot_byte(slot))) {
    if (e == EAGAIN || e == EACCES)
      return make_error(Errc::kIo,
                        fmt::format("slot {} is already in use on this host (slot numbers follow jail id indexes, which "
                                    "are locked host-wide in /run/ztee/ids.lock: is another process using the same index "
                                    "without that lock, e.g. an older libztee?)",
                                    slot),
                        EBUSY);
    return sys_error(fmt::format("locking slot {} in {}", slot, kSlotLockPath), e);
  }
  return fd;
}

#define ZTEE_TRY(expr)                            \
  do {                                            \
    auto _r = (expr);                             \
    if (!_r) return std::move(_r).error();        \
  } while (0)

}  // namespace

uint32_t NetSlot::host_addr_be() const { return htonl(ntohl(env_.pool_be) + 1); }
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
  const std::string context = fmt::format("creating network slot {}", slot);

  auto lock = lock_slot(slot);
  if (!lock) return with_context(std::move(lock).error(), context);
  auto host = ensure_host_links(env);
  if (!host) return with_context(std::move(host).error(), context);
  auto host_sk = NlSock::open("host namespace");
  if (!host_sk) return with_context(std::move(host_sk).error(), context);
  auto host_addrs = ipv4_addrs(host_sk->get());
  if (!host_addrs) return with_context(std::move(host_addrs).error(), context);
  const std::string rules = slot_ruleset(env, policy, *host_addrs);
  const uint32_t gateway = s.host_addr_be(), slot_ip = s.slot_addr_be();
  if (::getrandom(s.mac_.data(), s.mac_.size(), 0) != static_cast<ssize_t>(s.mac_.size()))
    return with_context(sys_error("choosing the slot's MAC address (getrandom)", errno), context);
  s.mac_[0] = static_cast<uint8_t>((s.mac_[0] & 0xfe) | 0x02);  // unicast, locally administered

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

        // eth0 is made from the host namespace (its parent is there) straight into the slot's.
        ZTEE_TRY(add_macvlan(host_sk->get(), host->parent, "eth0", s.mac_, s.ns_.get()));
        auto eth_idx = ifindex_here("eth0");
        if (!eth_idx) return std::move(eth_idx).error();
        ZTEE_TRY(add_addr(sk->get(), *eth_idx, "eth0", slot_ip, env.pool_prefix));
        ZTEE_TRY(link_up(sk->get(), *eth_idx, "eth0"));
        ZTEE_TRY(add_default_route(sk->get(), *eth_idx, gateway));
        auto fw = nft_run(rules, "loading the slot firewall");
        if (!fw) return std::move(fw).error();
        return {};
      },
      context);
  // The host reaches the slot through this entry at once, even when an
  // earlier slot with the same address (and another MAC) is in its cache.
  if (built) built = neigh_replace(host_sk->get(), host->link, slot_ip, s.mac_);
  if (!built) {
    // Closing the fds frees the namespace and everything made in it.
    s.tap_.reset();
    s.ns_.reset();
    return with_context(std::move(built).error(), context);
  }
  s.lock_ = std::move(*lock);
  return s;
}

NetSlot::NetSlot(NetSlot&& o) noexcept
    : env_(o.env_),
      slot_(o.slot_),
      ns_(std::move(o.ns_)),
      tap_(std::move(o.tap_)),
      lock_(std::move(o.lock_)),
      mac_(o.mac_),
      policy_(std::move(o.policy_)) {}

NetSlot& NetSlot::operator=(NetSlot&& o) noexcept {
  if (this != &o) {
    teardown_best_effort();
    env_ = o.env_;
    slot_ = o.slot_;
    ns_ = std::move(o.ns_);
    tap_ = std::move(o.tap_);
    lock_ = std::move(o.lock_);
    mac_ = o.mac_;
    policy_ = std::move(o.policy_);
  }
  return *this;
}

NetSlot::~NetSlot() { teardown_best_effort(); }

void NetSlot::teardown_best_effort() {
  if (!lock_.valid()) return;
  auto r = destroy();
  (void)r;
}

Result<void> NetSlot::set_policy(const NetPolicy& policy) {
  if (!lock_.valid() || !ns_.valid())
    return make_error(Errc::kClosed, fmt::format("setting the policy of network slot {}: the slot was destroyed", slot_));
  if (policy.allow.size() > kMaxNetRules)
    return make_error(Errc::kInvalidArgument, fmt::format("net policy has {} rules; at most {} are supported",
                                                          policy.allow.size(), kMaxNetRules));
  const std::string context = fmt::format("setting the policy of network slot {}", slot_);
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

Result<bool> host_slots_in_use() {
  auto fd = open_slot_locks(false);
  if (!fd) return std::move(fd).error();
  if (!fd->valid()) return false;
  return byte_held(fd->get(), kGuardByte);
}

Result<bool> remove_slot_leftovers(const NetEnv& env, uint32_t slot) {
  if (!validate_slot(env, slot)) return false;  // never a slot (ids run past the pool)
  auto fd = open_slot_locks(false);
  if (!fd) return std::move(fd).error();
  if (fd->valid()) {
    auto held = byte_held(fd->get(), slot_byte(slot));
    if (!held) return std::move(held).error();
    if (*held) return false;  // a live holder
  }
  unsigned link = ::if_nametoindex(kHostLink);
  if (link == 0) return false;
  auto sk = NlSock::open("host namespace");
  if (!sk) return std::move(sk).error();
  return neigh_delete(sk->get(), static_cast<int>(link), htonl(slot_base_host(env, slot) + 2));
}

Result<void> NetSlot::destroy() {
  if (!lock_.valid()) return {};
  const std::string context = fmt::format("destroying network slot {}", slot_);
  // The last fds: the kernel frees the namespace, tap0 and eth0 on its own.
  tap_.reset();
  ns_.reset();
  UniqueFd lock = std::move(lock_);  // released when this returns, whatever happens
  auto sk = NlSock::open("host namespace");
  if (!sk) return with_context(std::move(sk).error(), context);
  auto host_link = ifindex_here(kHostLink, "the host namespace");
  if (!host_link) {
    // No ztee0 (removed by gc after a crash?): no neighbour entry either.
    if (host_link.error().sys_errno == ENODEV) return {};
    return with_context(std::move(host_link).error(), context);
  }
  auto d = neigh_delete(sk->get(), *host_link, slot_addr_be());
  if (!d) return with_context(std::move(d).error(), context + " (left: the host's neighbour entry; it expires on its own)");
  return {};
}

}  // namespace ztee::detail
