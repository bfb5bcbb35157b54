// lib/net: per-sandbox network slots and the egress firewall.
//
// Owns: a sandbox's network namespace (held only by file descriptors), the TAP
// device its VMM uses, the macvlan linking it to the host, addresses and routes
// (all through libnl-route), and the nftables rules inside the slot and in the
// host namespace (through libnftables). No `ip` or `nft` process is run.
//
// Layout (pool P, default 100.97.0.0/16):
//   host namespace, shared by all slots and made once (ensure_host_network):
//     veth pair ztee0 <-> ztee0p. ztee0 holds P+1/prefix, the gateway of
//     every slot; ztee0p has no address and is only the parent of the slots'
//     macvlans. Both up, IPv6 disabled. table inet ztee.
//   slot namespace k: lo up; tap0 100.96.0.1/30 (the guest is 100.96.0.2/30,
//     gateway 100.96.0.1: the same in every slot, so snapshot clones keep their
//     guest config); eth0, a private-mode macvlan on ztee0p with a random MAC,
//     holding P+4k+2/prefix with a default route via P+1; ip_forward=1; IPv6
//     disabled; table inet ztee (default-deny forward, masquerade on eth0).
//     The host's neighbour entry for P+4k+2 on ztee0 is set to eth0's MAC.
//
// Why no per-slot link in the host namespace: removing a link from a namespace
// (delete or move) waits for RCU in the kernel, ~20 ms per link. A slot's
// links all live inside its namespace, which the kernel frees on its own once
// the last fd holding it is closed, so tearing a slot down costs a neighbour
// delete and two closes. Private mode keeps macvlans on ztee0p from reaching
// each other; the host's table drops ztee0 -> ztee0 forwarding as well.
//
// Slot ownership is host-wide, whatever the caller's state directory: a slot
// holds an open-file-description write lock on byte 1+k of kSlotLockPath and
// a read lock on byte 0 (the "slots exist" guard). The kernel drops both when
// the holder exits, even on a crash.
//
// Threads: namespace work runs on a short-lived worker thread that enters the
// slot namespace (unshare or setns affect only that thread); the calling
// thread never changes namespace. The calling thread is assumed to be in the
// host namespace. create() and set_policy() block for a few ms; destroy() for
// well under one.
//
// Errors: every failure names the step, carries the errno where there is one,
// says what to do, and leaves nothing behind.
#pragma once

#include <ztee/result.hpp>

#include <array>
#include <bit>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/fd.hpp"

namespace ztee::detail {

// a.b.c.d in network byte order.
constexpr uint32_t ipv4_be(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return std::bit_cast<uint32_t>(std::array<uint8_t, 4>{a, b, c, d});
}

// One allowlist entry: IPv4 destination net_be/prefix (network byte order,
// host bits zero), destination ports port_lo..port_hi (inclusive), protocols.
struct NetRule {
  uint32_t net_be = 0;
  uint8_t prefix = 32;
  uint16_t port_lo = 0, port_hi = 0;
  bool tcp = true, udp = true;
  // Canonical form, e.g. "10.0.0.0/8:443/tcp", "192.0.2.7/32:8000-8080".
  std::string text() const;
  bool operator==(const NetRule&) const = default;
};

// What a sandbox may reach. Everything else is dropped.
struct NetPolicy {
  std::vector<NetRule> allow;
  std::optional<uint32_t> dns_be;  // resolver: udp+tcp 53 to this address only
  // True when the sandbox gets any network (at least one rule or a resolver).
  bool enabled() const { return !allow.empty() || dns_be.has_value(); }
  bool operator==(const NetPolicy&) const = default;
};

// At most this many allow rules per policy.
inline constexpr size_t kMaxNetRules = 1024;

// Parses one allowlist entry. Accepted forms (IPv4 only):
//   ADDR[/PREFIX]:PORT[/tcp|/udp]   e.g. 10.0.0.0/8:443/tcp, 192.0.2.7:53/udp
//   ADDR[/PREFIX]:LO-HI[/tcp|/udp]  e.g. 192.0.2.0/24:8000-8080
// A bare ADDR means ADDR/32; no suffix means both tcp and udp; the network
// must have no host bits set. Errors (kInvalidArgument) quote the entry and
// list the accepted forms.
Result<NetRule> parse_net_rule(std::string_view entry);

// Parses an allowlist plus an optional DNS resolver address ("" = none).
// A loopback resolver is refused (a sandbox can never reach it).
Result<NetPolicy> parse_net_policy(const std::vector<std::string>& allow, std::string_view dns);

// The address pool slots are cut from; one per runtime. Slot k uses the /30
// at pool + 4k. pool_prefix must be 8..30 and pool_be aligned to it.
struct NetEnv {
  uint32_t pool_be = ipv4_be(100, 97, 0, 0);  // network byte order
  uint8_t pool_prefix = 16;
  uint32_t slot_count() const;  // 0 when the pool itself is invalid
};

// Checks env and the slot index against the pool; kInvalidArgument otherwise.
Result<void> validate_slot(const NetEnv& env, uint32_t slot);

// The host namespace's links shared by all slots.
inline constexpr const char* kHostLink = "ztee0";     // P+1/prefix, every slot's gateway
inline constexpr const char* kHostParent = "ztee0p";  // no address; the macvlans' parent
// The host-wide slot lock file (see the layout notes above).
inline constexpr const char* kSlotLockPath = "/run/ztee/net-slots.lock";

// The nftables ruleset loaded into a slot namespace (exposed for tests).
// host_addrs_be: the host namespace's IPv4 addresses, never reachable.
std::string slot_ruleset(const NetEnv& env, const NetPolicy& policy, const std::vector<uint32_t>& host_addrs_be);

// The host namespace's `table inet ztee` (exposed for tests).
std::string host_ruleset(const NetEnv& env, bool ip_forward_was_off);

// Makes the host ready for slots: creates the ztee0/ztee0p pair
// (ensure_host_links) and `table inet ztee` in the host namespace if they do
// not exist (check, then an atomic `create table` transaction; another process
// creating them at the same time is fine), and sets net.ipv4.ip_forward=1.
// SECURITY / host-wide side effect: ip_forward=1 makes the host route between
// all its interfaces, not only the slots'. When libztee is the one that turned
// it on, the table's comment records it, and remove_host_network_if_unused()
// turns it off again. The host table accepts forwarding only from ztee0;
// other firewalls on the host (iptables, other nft tables with a drop
// policy) still apply to slot traffic.
Result<void> ensure_host_network(const NetEnv& env);
// Only the ztee0/ztee0p pair (NetSlot::create calls it: cheap when present).
// Returns their ifindexes.
struct HostLinks {
  int link = 0;    // ztee0
  int parent = 0;  // ztee0p
};
Result<HostLinks> ensure_host_links(const NetEnv& env);

// One sandbox's network. Move-only RAII: the destructor tears down
// best-effort; destroy() tears down and verifies.
class NetSlot {
 public:
  // Creates slot `slot` (validated against env) with `policy`, making the
  // host links if missing. The host table (ensure_host_network) is needed for
  // traffic to flow, not to create. kInvalidArgument for a bad slot or policy;
  // kIo with EBUSY when another process holds the slot (one that took the
  // index without the host-wide id lock); kIo/kPermission with errno for kernel
  // refusals. Leaves nothing behind on failure.
  static Result<NetSlot> create(const NetEnv& env, uint32_t slot, const NetPolicy& policy);

  NetSlot(NetSlot&&) noexcept;
  NetSlot& operator=(NetSlot&&) noexcept;
  NetSlot(const NetSlot&) = delete;
  NetSlot& operator=(const NetSlot&) = delete;
  ~NetSlot();

  uint32_t slot() const { return slot_; }
  // The namespace (O_CLOEXEC). Valid until destroy(); owned by the slot.
  int netns_fd() const { return ns_.get(); }
  // The TAP (tap0, IFF_TAP|IFF_NO_PI, persistent, O_CLOEXEC), or -1 after
  // release_tap(). Persistent: tap0 outlives its fds and is deleted with the
  // namespace (asynchronously, once no fd holds the namespace).
  // Give it to the VMM as `-netdev tap,fd=N` (dup it without O_CLOEXEC into
  // the child); the namespace lives as long as any copy of it is open.
  int tap_fd() const { return tap_.get(); }
  // Hands over the slot's copy of the TAP fd (close it once the VMM has its own).
  UniqueFd release_tap() { return std::move(tap_); }
  // The slot's eth0 MAC (random, locally administered).
  const std::array<uint8_t, 6>& mac() const { return mac_; }
  // The gateway (ztee0's address, the same for every slot) and the slot's
  // eth0 address (network byte order).
  uint32_t host_addr_be() const;
  uint32_t slot_addr_be() const;
  // Kernel command-line parameter for the guest agent:
  // "ztee.net=100.96.0.2/30,100.96.0.1" plus ",dns=<ip>" when a resolver is allowed.
  std::string guest_cmdline() const;
  // The same for the guest agent's HELLO / RESEED "net" object.
  struct GuestConfig {
    std::string address;  // "100.96.0.2/30"
    std::string gateway;  // "100.96.0.1"
    std::string dns;      // resolver, or "" when none is allowed
  };
  GuestConfig guest_config() const;
  const NetPolicy& policy() const { return policy_; }

  // Replaces the slot's firewall in one transaction (host addresses are
  // re-read), then drops the slot's connection-tracking entries so flows the
  // new policy forbids do not live on. On failure the old rules stay.
  Result<void> set_policy(const NetPolicy& policy);

  // Tears down: closes the TAP and namespace fds (the kernel then frees the
  // namespace with tap0 and eth0 in it), deletes the host's neighbour entry
  // for the slot, and releases the slot lock. The VMM must be dead first: a
  // TAP fd it still holds keeps the namespace alive. The error names what
  // was left. Idempotent.
  Result<void> destroy();

 private:
  NetSlot() = default;
  void teardown_best_effort();

  NetEnv env_{};
  uint32_t slot_ = 0;
  UniqueFd ns_;
  UniqueFd tap_;
  UniqueFd lock_;  // the host-wide slot lock; valid while the slot exists
  std::array<uint8_t, 6> mac_{};
  NetPolicy policy_;
};

// For gc, after a crash: when no process holds `slot`, deletes the host's
// neighbour entry for its address (everything else of a slot lives in its
// namespace, which died with its holder). True when an entry was removed.
Result<bool> remove_slot_leftovers(const NetEnv& env, uint32_t slot);
// Whether any process holds a slot on this host (the lock file's guard byte).
Result<bool> host_slots_in_use();
// When no process holds a slot: deletes the host `table inet ztee` and the
// ztee0/ztee0p pair, and turns ip_forward off again if libztee turned it on.
// Holds the guard byte exclusively meanwhile, so no slot is created during
// the removal. Returns ok (doing nothing) while slots remain.
Result<void> remove_host_network_if_unused(const NetEnv& env);

// Internal helpers shared by the module's sources.
std::string ipv4_text(uint32_t addr_be);

}  // namespace ztee::detail
