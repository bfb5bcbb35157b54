// Private helpers of lib/net: libnl sockets, nftables, sysctls, worker threads.
#pragma once

#include <fmt/format.h>

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "net/net.hpp"

struct nl_sock;

namespace ztee::detail::netimpl {

// The host table's comment: how a later process learns who turned ip_forward on.
inline constexpr std::string_view kHostCommentForwardOn = "libztee slots; ip_forward set by libztee";
inline constexpr std::string_view kHostCommentForwardKept = "libztee slots; ip_forward was already on";

// An rtnetlink socket, bound to the network namespace of the thread that opened it.
class NlSock {
 public:
  NlSock() = default;
  NlSock(NlSock&& o) noexcept : sk_(std::exchange(o.sk_, nullptr)) {}
  NlSock& operator=(NlSock&& o) noexcept {
    std::swap(sk_, o.sk_);
    return *this;
  }
  NlSock(const NlSock&) = delete;
  NlSock& operator=(const NlSock&) = delete;
  ~NlSock();
  nl_sock* get() const { return sk_; }
  static Result<NlSock> open(std::string_view where);

 private:
  nl_sock* sk_ = nullptr;
};

// An error from a libnl return code (negative NLE_*), naming the step.
Error nl_error(int nlerr, std::string_view step);
// The errno closest to a libnl error code.
int nl_errno(int nlerr);

// IPv4 addresses (network byte order) of the namespace `sk` is bound to.
Result<std::vector<uint32_t>> ipv4_addrs(nl_sock* sk);
// Sets a link up by index.
Result<void> link_up(nl_sock* sk, int ifindex, std::string_view name);
// Adds addr_be/prefix to a link.
Result<void> add_addr(nl_sock* sk, int ifindex, std::string_view name, uint32_t addr_be, int prefix);
// Adds the default route via gw_be on ifindex.
Result<void> add_default_route(nl_sock* sk, int ifindex, uint32_t gw_be);
// Deletes a link by name; a link already gone is fine.
Result<void> delete_link(nl_sock* sk, const std::string& name);
// Whether a link of that name exists in sk's namespace.
Result<bool> link_exists(nl_sock* sk, const std::string& name);
// Creates a private-mode macvlan `name` on parent_ifindex (in sk's
// namespace) with address `mac`, directly inside the namespace ns_fd. Down.
Result<void> add_macvlan(nl_sock* sk, int parent_ifindex, const std::string& name, const std::array<uint8_t, 6>& mac,
                         int ns_fd);
// Creates a veth pair in sk's namespace, both ends down. EEXIST when `name` exists.
Result<void> add_veth_pair(nl_sock* sk, const std::string& name, const std::string& peer_name);
// Sets (create or replace) the IPv4 neighbour entry addr -> mac on ifindex, state REACHABLE.
Result<void> neigh_replace(nl_sock* sk, int ifindex, uint32_t addr_be, const std::array<uint8_t, 6>& mac);
// Deletes the IPv4 neighbour entry for addr on ifindex; an entry already
// gone is fine. True when there was one.
Result<bool> neigh_delete(nl_sock* sk, int ifindex, uint32_t addr_be);

// The host-wide slot lock file (kSlotLockPath): byte kGuardByte guards the
// host links, byte slot_byte(k) is slot k. Opened read-write and created
// (with /run/ztee) when `create`; else read-only, and an invalid fd when the
// file does not exist.
inline constexpr off_t kGuardByte = 0;
inline off_t slot_byte(uint32_t slot) { return 1 + static_cast<off_t>(slot); }
Result<UniqueFd> open_slot_locks(bool create);
// An open-file-description lock on byte `at`: cmd F_OFD_SETLK or
// F_OFD_SETLKW (EINTR retried), type F_RDLCK or F_WRLCK. 0 or the errno.
int lock_byte(int fd, int cmd, short type, off_t at);
// Whether another open file description holds byte `at` (F_OFD_GETLK).
Result<bool> byte_held(int fd, off_t at);

// Runs nft commands in the calling thread's namespace as one transaction;
// returns nft's output. `step` names the operation in errors.
Result<std::string> nft_run(std::string_view commands, std::string_view step);
// Flushes the connection-tracking table of the calling thread's namespace.
Result<void> conntrack_flush();

// Writes a /proc/sys file of the calling thread's namespace.
// missing_ok: a file that does not exist (e.g. no IPv6) is not an error.
Result<void> write_sysctl(const char* path, std::string_view value, bool missing_ok = false);
Result<std::string> read_sysctl(const char* path);

// Runs f() -> Result<void> on a new thread and joins it. Namespace switches
// (unshare/setns) inside f affect only that thread, which then exits.
template <typename F>
Result<void> on_worker_thread(F&& f, std::string_view what) {
  Result<void> out = make_error(Errc::kInternal, fmt::format("{}: the worker thread did not run", what));
  try {
    std::thread t([&] { out = f(); });
    t.join();
  } catch (const std::system_error& e) {
    return make_error(Errc::kIo, fmt::format("{}: cannot start a worker thread: {}", what, e.what()), e.code().value());
  }
  return out;
}

}  // namespace ztee::detail::netimpl
