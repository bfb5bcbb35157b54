// nftables (libnftables) for lib/net: the slot firewall and the host table.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <nftables/libnftables.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "net/internal.hpp"

namespace ztee::detail::netimpl {

namespace {

struct CtxFree {
  void operator()(nft_ctx* c) const { nft_ctx_free(c); }
};

// nft's error text quotes the input with carets under it; keep its "Error:" lines.
std::string error_lines(const char* s) {
  std::string in = s ? s : "", out;
  size_t pos = 0;
  while (pos < in.size()) {
    size_t nl = in.find('\n', pos);
    std::string line = in.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    if (size_t e = line.find("Error: "); e != std::string::npos) out += (out.empty() ? "" : "; ") + line.substr(e + 7);
    if (nl == std::string::npos) break;
    pos = nl + 1;
  }
  return out.empty() ? in : out;
}

std::string trimmed(const char* s) {
  std::string t = s ? s : "";
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
  return t;
}

}  // namespace

Result<std::string> nft_run(std::string_view commands, std::string_view step) {
  // The context opens its netlink socket in the calling thread's namespace.
  std::unique_ptr<nft_ctx, CtxFree> ctx(nft_ctx_new(NFT_CTX_DEFAULT));
  if (!ctx) return make_error(Errc::kNoMemory, fmt::format("{}: nft_ctx_new failed", step), ENOMEM);
  if (nft_ctx_buffer_output(ctx.get()) != 0 || nft_ctx_buffer_error(ctx.get()) != 0)
    return make_error(Errc::kInternal, fmt::format("{}: cannot buffer nftables output", step));
  std::string buf(commands);
  int rc = nft_run_cmd_from_buffer(ctx.get(), buf.c_str());
  if (rc != 0) {
    std::string err = trimmed(error_lines(nft_ctx_get_error_buffer(ctx.get())).c_str());
    bool perm = err.find("Operation not permitted") != std::string::npos;
    return make_error(perm ? Errc::kPermission : Errc::kIo,
                      fmt::format("{}: nftables refused the ruleset: {}{}", step, err.empty() ? "(no message)" : err,
                                  perm ? " (run as root: CAP_NET_ADMIN is needed)" : ""),
                      perm ? EPERM : EIO);
  }
  return trimmed(nft_ctx_get_output_buffer(ctx.get()));
}

Result<void> conntrack_flush() {
  int fd = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) {
    int e = errno;
    return make_error(Errc::kIo, fmt::format("flushing the slot's connection tracking: socket: {}", std::strerror(e)), e);
  }
  struct {
    nlmsghdr nh;
    nfgenmsg nf;
  } req{};
  req.nh.nlmsg_len = sizeof req;
  req.nh.nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  req.nh.nlmsg_seq = 1;
  req.nf.nfgen_family = AF_INET;
  req.nf.version = NFNETLINK_V0;
  int err = 0;
  if (::send(fd, &req, sizeof req, 0) != static_cast<ssize_t>(sizeof req)) {
    err = errno;
  } else {
    char buf[512];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0) {
      err = errno;
    } else if (static_cast<size_t>(n) >= sizeof(nlmsghdr) + sizeof(nlmsgerr)) {
      auto* h = reinterpret_cast<nlmsghdr*>(buf);
      if (h->nlmsg_type == NLMSG_ERROR) err = -reinterpret_cast<nlmsgerr*>(NLMSG_DATA(h))->error;
    }
  }
  ::close(fd);
  if (err != 0)
    return make_error(Errc::kIo, fmt::format("flushing the slot's connection tracking: {}", std::strerror(err)), err);
  return {};
}

}  // namespace ztee::detail::netimpl

namespace ztee::detail {

using netimpl::nft_run;

namespace {

constexpr const char* kIpForward = "/proc/sys/net/ipv4/ip_forward";

// The host table's listing, or nullopt when it does not exist.
Result<std::optional<std::string>> host_table_listing() {
  auto out = nft_run("list table inet ztee", "reading the host's nftables table inet ztee");
  if (out) return std::optional<std::string>(std::move(*out));
  if (out.error().message.find("No such file or directory") != std::string::npos)
    return std::optional<std::string>();
  return std::move(out).error();
}

}  // namespace

Result<HostLinks> ensure_host_links(const NetEnv& env) {
  if (env.slot_count() == 0) {
    auto v = validate_slot(env, 0);
    return std::move(v).error();
  }
  unsigned parent = ::if_nametoindex(kHostParent), link = ::if_nametoindex(kHostLink);
  if (parent != 0 && link != 0) return HostLinks{static_cast<int>(link), static_cast<int>(parent)};
  const std::string step = fmt::format("making the host links {} <-> {}", kHostLink, kHostParent);
  if (parent != 0 || link != 0)
    return make_error(Errc::kIo,
                      fmt::format("{}: {} exists without {}: it is not libztee's pair; remove it (ip link del {})", step,
                                  parent ? kHostParent : kHostLink, parent ? kHostLink : kHostParent,
                                  parent ? kHostParent : kHostLink),
                      EEXIST);
  auto sk = netimpl::NlSock::open("host namespace");
  if (!sk) return std::move(sk).error();
  // Another process making the pair at the same time is fine: both then finish the set-up.
  if (auto r = netimpl::add_veth_pair(sk->get(), kHostLink, kHostParent); !r && r.error().sys_errno != EEXIST) {
    Error e = std::move(r).error();
    e.message = fmt::format("{}: {}", step, e.message);
    return e;
  }
  for (const char* name : {kHostLink, kHostParent}) {
    auto w = netimpl::write_sysctl(fmt::format("/proc/sys/net/ipv6/conf/{}/disable_ipv6", name).c_str(), "1", true);
    if (!w) return std::move(w).error();
  }
  link = ::if_nametoindex(kHostLink);
  parent = ::if_nametoindex(kHostParent);
  if (link == 0 || parent == 0)
    return make_error(Errc::kIo, fmt::format("{}: the pair vanished while it was set up (a concurrent `ztee gc`?); retry",
                                             step),
                      ENODEV);
  const uint32_t gateway = htonl(ntohl(env.pool_be) + 1);
  if (auto a = netimpl::add_addr(sk->get(), static_cast<int>(link), kHostLink, gateway, env.pool_prefix);
      !a && a.error().sys_errno != EEXIST)
    return std::move(a).error();
  if (auto u = netimpl::link_up(sk->get(), static_cast<int>(parent), kHostParent); !u) return std::move(u).error();
  if (auto u = netimpl::link_up(sk->get(), static_cast<int>(link), kHostLink); !u) return std::move(u).error();
  return HostLinks{static_cast<int>(link), static_cast<int>(parent)};
}

Result<void> ensure_host_network(const NetEnv& env) {
  auto links = ensure_host_links(env);
  if (!links) return std::move(links).error();
  auto fwd = netimpl::read_sysctl(kIpForward);
  if (!fwd) return std::move(fwd).error();
  bool was_off = *fwd == "0";

  auto listing = host_table_listing();
  if (!listing) return std::move(listing).error();
  if (!listing->has_value()) {
    // `create table` fails the whole transaction when the table exists, so of
    // several processes racing here exactly one installs the rules.
    auto made = nft_run(host_ruleset(env, was_off), "creating the host's nftables table inet ztee");
    if (!made) {
      auto again = host_table_listing();
      if (!again || !again->has_value()) return std::move(made).error();
    }
  }
  if (was_off) {
    auto w = netimpl::write_sysctl(kIpForward, "1");
    if (!w) {
      Error e = std::move(w).error();
      e.message = fmt::format("enabling IPv4 forwarding for network slots: {}", e.message);
      return e;
    }
  }
  return {};
}

Result<void> remove_host_network_if_unused(const NetEnv&) {
  auto lock = netimpl::open_slot_locks(true);
  if (!lock) return std::move(lock).error();
  // Exclusive on the guard byte: no slot exists, and none is created until this returns.
  if (int e = netimpl::lock_byte(lock->get(), F_OFD_SETLK, F_WRLCK, netimpl::kGuardByte)) {
    if (e == EAGAIN || e == EACCES) return {};  // slots in use
    return make_error(Errc::kIo, fmt::format("locking {} (guard byte): {}", kSlotLockPath, std::strerror(e)), e);
  }
  auto listing = host_table_listing();
  if (!listing) return std::move(listing).error();
  bool restore = false;
  if (listing->has_value()) {
    restore = (*listing)->find(netimpl::kHostCommentForwardOn) != std::string::npos;
    // Deleting by handle-free name fails cleanly if another process removed it meanwhile.
    auto del = nft_run("delete table inet ztee", "deleting the host's nftables table inet ztee");
    if (!del) {
      auto again = host_table_listing();
      if (!again || again->has_value()) return std::move(del).error();
    }
  }
  if (::if_nametoindex(kHostLink) != 0) {
    auto sk = netimpl::NlSock::open("host namespace");
    if (!sk) return std::move(sk).error();
    // Deleting one end of the pair deletes both.
    if (auto d = netimpl::delete_link(sk->get(), kHostLink); !d) return std::move(d).error();
  }
  if (restore) return netimpl::write_sysctl(kIpForward, "0");
  return {};
}

}  // namespace ztee::detail
