// Privileged tests of lib/net: real namespaces, veth, macvlan, TAP and nftables, no VMs.
// Traffic goes only to namespaces this file creates (198.18.0.0/30) and to the
// host address of the veth it creates for them.
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "net/net.hpp"
#include "../why.hpp"

using namespace ztee;
using namespace ztee::detail;

namespace {

// Runs a shell command; returns its exit status and stdout+stderr.
int sh(const std::string& cmd, std::string* out = nullptr) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  std::string s;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) s.append(buf, n);
  int st = ::pclose(p);
  if (out) *out = s;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// A command run inside the namespace held by `ns_fd` of this process.
std::string in_ns(int ns_fd, const std::string& cmd) {
  return fmt::format("nsenter --net=/proc/{}/fd/{} {}", ::getpid(), ns_fd, cmd);
}

int count_fds() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n - 1;  // the DIR's own fd
}

// Inodes of every network namespace referenced from /proc: processes', threads' and open fds'.
std::set<ino_t> live_netns_inodes() {
  std::set<ino_t> out;
  auto add = [&](const std::string& path) {
    struct stat st{};
    if (::stat(path.c_str(), &st) == 0) out.insert(st.st_ino);
  };
  DIR* proc = ::opendir("/proc");
  while (dirent* e = ::readdir(proc)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::string base = std::string("/proc/") + e->d_name;
    add(base + "/ns/net");
    if (DIR* fds = ::opendir((base + "/fd").c_str())) {
      while (dirent* f = ::readdir(fds)) {
        if (f->d_name[0] == '.') continue;
        char link[64];
        std::string p = base + "/fd/" + f->d_name;
        ssize_t n = ::readlink(p.c_str(), link, sizeof link - 1);
        if (n > 4 && std::string_view(link, static_cast<size_t>(n)).starts_with("net:")) add(p);
      }
      ::closedir(fds);
    }
  }
  ::closedir(proc);
  return out;
}

ino_t inode_of(int fd) {
  struct stat st{};
  REQUIRE(::fstat(fd, &st) == 0);
  return st.st_ino;
}

// Every link name in the host namespace.
std::set<std::string> host_links() {
  std::set<std::string> out;
  if (struct if_nameindex* ids = ::if_nameindex()) {
    for (struct if_nameindex* i = ids; i->if_index != 0; ++i) out.insert(i->if_name);
    ::if_freenameindex(ids);
  }
  return out;
}

// The host links as they are with the shared pair present (the first slot makes it).
std::set<std::string> host_links_with_pair(const NetEnv& env) {
  auto r = ensure_host_links(env);
  REQUIRE_MESSAGE(r.ok(), why(r));
  auto l = host_links();
  CHECK(l.count(kHostLink) == 1);
  CHECK(l.count(kHostParent) == 1);
  return l;
}

bool slots_in_use() {
  auto r = host_slots_in_use();
  REQUIRE_MESSAGE(r.ok(), why(r));
  return *r;
}

std::string mac_text(const std::array<uint8_t, 6>& m) {
  return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]);
}

NetPolicy policy_of(std::vector<std::string> allow, std::string dns = "") {
  auto p = parse_net_policy(allow, dns);
  REQUIRE_MESSAGE(p.ok(), why(p));
  return *p;
}

std::string read_file(const char* path) {
  std::string s;
  FILE* f = std::fopen(path, "r");
  if (!f) return s;
  char buf[64];
  size_t n = std::fread(buf, 1, sizeof buf, f);
  std::fclose(f);
  s.assign(buf, n);
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

// Slot indices used here sit high in the default pool, away from a runtime's low ids.
constexpr uint32_t kSlotA = 16000, kSlotB = 16001;

}  // namespace

TEST_CASE("a slot has its links inside its namespace, a neighbour entry outside, and destroy removes all") {
  NetEnv env;
  auto before_links = host_links_with_pair(env);
  int before_fds = count_fds();
  std::string host_fwd = read_file("/proc/sys/net/ipv4/ip_forward");

  auto s = NetSlot::create(env, kSlotA, policy_of({"10.0.0.0/8:443/tcp", "192.0.2.7:8000-8080"}, "192.0.2.53"));
  REQUIRE_MESSAGE(s.ok(), why(s));
  CHECK(s->guest_cmdline() == "ztee.net=100.96.0.2/30,100.96.0.1,dns=192.0.2.53");
  CHECK(ipv4_text(s->host_addr_be()) == "100.97.0.1");  // the shared gateway on ztee0
  CHECK(ipv4_text(s->slot_addr_be()) == "100.97.250.2");
  REQUIRE(s->tap_fd() >= 0);
  REQUIRE(s->netns_fd() >= 0);
  CHECK((::fcntl(s->tap_fd(), F_GETFD) & FD_CLOEXEC) != 0);
  CHECK((::fcntl(s->netns_fd(), F_GETFD) & FD_CLOEXEC) != 0);

  CHECK((s->mac()[0] & 0x03) == 0x02);  // unicast, locally administered

  // Host side: no link of the slot's; the shared gateway; the neighbour entry.
  std::string out;
  CHECK(host_links() == before_links);
  REQUIRE(sh("ip -4 -o addr show dev ztee0", &out) == 0);
  CHECK(out.find("inet 100.97.0.1/16") != std::string::npos);
  REQUIRE(sh("ip -o link show dev ztee0", &out) == 0);
  CHECK(out.find(",UP") != std::string::npos);
  CHECK(sh("ip -6 -o addr show dev ztee0", &out) == 0);
  CHECK(out.empty());
  REQUIRE(sh("ip -o addr show dev ztee0p", &out) == 0);
  CHECK(out.empty());  // the macvlans' parent has no address
  REQUIRE(sh("ip neigh show 100.97.250.2 dev ztee0", &out) == 0);
  CHECK(out.find("lladdr " + mac_text(s->mac())) != std::string::npos);

  // Inside: lo, tap0, eth0 with addresses, the default route, ip_forward, no IPv6.
  REQUIRE(sh(in_ns(s->netns_fd(), "ip -4 -o addr"), &out) == 0);
  CHECK(out.find("lo    inet 127.0.0.1/8") != std::string::npos);
  CHECK(out.find("tap0    inet 100.96.0.1/30") != std::string::npos);
  CHECK(out.find("eth0    inet 100.97.250.2/16") != std::string::npos);
  REQUIRE(sh(in_ns(s->netns_fd(), "ip -o link"), &out) == 0);
  CHECK(out.find("tap0: <") != std::string::npos);
  CHECK(out.find("eth0@") != std::string::npos);
  REQUIRE(sh(in_ns(s->netns_fd(), "ip -d -o link show eth0"), &out) == 0);
  CHECK(out.find("macvlan mode private") != std::string::npos);
  CHECK(out.find("link/ether " + mac_text(s->mac())) != std::string::npos);
  REQUIRE(sh(in_ns(s->netns_fd(), "ip -4 route show default"), &out) == 0);
  CHECK(out.find("default via 100.97.0.1 dev eth0") != std::string::npos);
  REQUIRE(sh(in_ns(s->netns_fd(), "ip -6 -o addr"), &out) == 0);
  CHECK(out.empty());
  REQUIRE(sh(in_ns(s->netns_fd(), "cat /proc/sys/net/ipv4/ip_forward"), &out) == 0);
  CHECK(out == "1\n");
  CHECK(read_file("/proc/sys/net/ipv4/ip_forward") == host_fwd);  // the host's is untouched by a slot

  // The firewall: default-deny with the allow rules and the DNS resolver.
  REQUIRE(sh(in_ns(s->netns_fd(), "nft list ruleset"), &out) == 0);
  MESSAGE(out);
  CHECK(out.find("table inet ztee") != std::string::npos);
  CHECK(out.find("hook input priority filter; policy drop;") != std::string::npos);
  CHECK(out.find("hook forward priority filter; policy drop;") != std::string::npos);
  CHECK(out.find("ct state established,related accept") != std::string::npos);
  CHECK(out.find("ip daddr 10.0.0.0/8 tcp dport 443 accept") != std::string::npos);
  CHECK(out.find("ip daddr 192.0.2.7 meta l4proto { tcp, udp } th dport 8000-8080 accept") != std::string::npos);
  CHECK(out.find("ip daddr 192.0.2.53 udp dport 53 accept") != std::string::npos);
  CHECK(out.find("ip daddr 192.0.2.53 tcp dport 53 accept") != std::string::npos);
  CHECK(out.find("oifname \"eth0\" masquerade") != std::string::npos);
  CHECK(out.find("ip daddr @host_addrs drop") != std::string::npos);
  CHECK(out.find("127.0.0.1") != std::string::npos);  // a host address in the set
  // Nothing on the host's ruleset from a slot.
  REQUIRE(sh("nft list ruleset", &out) == 0);
  CHECK(out.find("policy drop") == std::string::npos);

  ino_t ns_ino = inode_of(s->netns_fd());
  REQUIRE(live_netns_inodes().count(ns_ino) == 1);
  auto d = s->destroy();
  REQUIRE_MESSAGE(d.ok(), why(d));
  CHECK(s->destroy().ok());  // idempotent
  CHECK(host_links() == before_links);
  REQUIRE(sh("ip neigh show 100.97.250.2 dev ztee0", &out) == 0);
  CHECK(out.empty());
  CHECK(live_netns_inodes().count(ns_ino) == 0);
  CHECK_FALSE(slots_in_use());  // the slot lock went with it
  CHECK(count_fds() == before_fds);
}

TEST_CASE("two slots coexist; the same slot twice is refused cleanly") {
  NetEnv env;
  auto before = host_links_with_pair(env);
  auto a = NetSlot::create(env, kSlotA, policy_of({"192.0.2.0/24:80"}));
  REQUIRE_MESSAGE(a.ok(), why(a));
  auto b = NetSlot::create(env, kSlotB, policy_of({}));
  REQUIRE_MESSAGE(b.ok(), why(b));
  CHECK(a->mac() != b->mac());
  CHECK(inode_of(a->netns_fd()) != inode_of(b->netns_fd()));
  CHECK(slots_in_use());
  std::string out;
  REQUIRE(sh(in_ns(b->netns_fd(), "ip -4 -o addr show dev eth0"), &out) == 0);
  CHECK(out.find("100.97.250.6/16") != std::string::npos);
  REQUIRE(sh("ip neigh show 100.97.250.6 dev ztee0", &out) == 0);
  CHECK(out.find("lladdr " + mac_text(b->mac())) != std::string::npos);

  int fds = count_fds();
  auto live = live_netns_inodes();
  auto dup = NetSlot::create(env, kSlotA, policy_of({}));
  REQUIRE_FALSE(dup.ok());
  CHECK(dup.error().sys_errno == EBUSY);
  CHECK(dup.error().message.find("creating network slot 16000: slot 16000 is already in use on this host") == 0);
  CHECK(count_fds() == fds);
  CHECK(live_netns_inodes() == live);
  // The failed attempt did not touch the slot that holds the number.
  REQUIRE(sh("ip neigh show 100.97.250.2 dev ztee0", &out) == 0);
  CHECK(out.find("lladdr " + mac_text(a->mac())) != std::string::npos);
  REQUIRE(sh(in_ns(a->netns_fd(), "ip -4 -o addr show dev eth0"), &out) == 0);
  CHECK(out.find("100.97.250.2/16") != std::string::npos);

  REQUIRE(a->destroy().ok());
  REQUIRE(b->destroy().ok());
  CHECK(host_links() == before);
  // A slot number is free again once its holder is destroyed.
  auto again = NetSlot::create(env, kSlotA, policy_of({}));
  REQUIRE_MESSAGE(again.ok(), why(again));
  REQUIRE(again->destroy().ok());
}

TEST_CASE("bad slot indices and pools fail cleanly") {
  auto before = host_links();
  int fds = count_fds();
  NetEnv env;
  auto r = NetSlot::create(env, 16384, NetPolicy{});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::kInvalidArgument);
  CHECK(r.error().message.find("slots 0-16383") != std::string::npos);

  NetEnv small;
  small.pool_be = ipv4_be(10, 200, 0, 0);
  small.pool_prefix = 28;  // 4 slots
  CHECK_FALSE(NetSlot::create(small, 4, NetPolicy{}).ok());
  NetEnv unaligned;
  unaligned.pool_be = ipv4_be(10, 200, 0, 1);
  auto u = NetSlot::create(unaligned, 0, NetPolicy{});
  REQUIRE_FALSE(u.ok());
  CHECK(u.error().message.find("10.200.0.1/16") != std::string::npos);
  NetEnv tiny;
  tiny.pool_prefix = 31;
  CHECK_FALSE(NetSlot::create(tiny, 0, NetPolicy{}).ok());
  CHECK_FALSE(ensure_host_network(tiny).ok());

  auto bad = parse_net_policy({"10.0.0.0/8:80", "10.0.0.0/8:0"}, "");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().message.find("\"10.0.0.0/8:0\": port must be 1-65535") != std::string::npos);
  CHECK(count_fds() == fds);
  CHECK(host_links() == before);
}

TEST_CASE("a failure late in create (the firewall refused) leaves nothing behind") {
  NetEnv env;
  auto before_links = host_links_with_pair(env);
  int before_fds = count_fds();
  auto before_ns = live_netns_inodes();
  NetPolicy p;
  NetRule bad;
  bad.prefix = 33;  // bypasses the parser: nftables rejects the ruleset after the links exist
  bad.port_lo = bad.port_hi = 80;
  p.allow.push_back(bad);
  auto s = NetSlot::create(env, kSlotA, p);
  REQUIRE_FALSE(s.ok());
  MESSAGE(s.error().message);
  CHECK(s.error().message.find("creating network slot 16000: loading the slot firewall") == 0);
  CHECK(host_links() == before_links);
  std::string out;
  REQUIRE(sh("ip neigh show 100.97.250.2 dev ztee0", &out) == 0);
  CHECK(out.empty());
  CHECK_FALSE(slots_in_use());
  CHECK(count_fds() == before_fds);
  CHECK(live_netns_inodes() == before_ns);
}

TEST_CASE("200 create/destroy cycles leave no link, neighbour entry, fd, lock or namespace behind") {
  NetEnv env;
  auto before_links = host_links_with_pair(env);
  int before_fds = count_fds();
  auto before_ns = live_netns_inodes();
  NetPolicy p = policy_of({"192.0.2.0/24:443/tcp"}, "192.0.2.53");
  for (int i = 0; i < 200; ++i) {
    auto s = NetSlot::create(env, kSlotA + static_cast<uint32_t>(i % 3), p);
    REQUIRE_MESSAGE(s.ok(), why(s));
    if (i % 2 == 0) {
      auto d = s->destroy();
      REQUIRE_MESSAGE(d.ok(), why(d));
    }  // odd cycles: the destructor tears down
  }
  CHECK(host_links() == before_links);
  std::string out;
  REQUIRE(sh("ip neigh show dev ztee0", &out) == 0);
  CHECK(out.find("100.97.250.") == std::string::npos);
  CHECK_FALSE(slots_in_use());
  CHECK(count_fds() == before_fds);
  CHECK(live_netns_inodes() == before_ns);
}

TEST_CASE("a released TAP fd keeps the namespace until it is closed; destroy still releases the slot") {
  NetEnv env;
  auto before = host_links_with_pair(env);
  auto s = NetSlot::create(env, kSlotA, NetPolicy{});
  REQUIRE_MESSAGE(s.ok(), why(s));
  UniqueFd tap = s->release_tap();
  CHECK(s->tap_fd() == -1);
  REQUIRE(tap.valid());
  ino_t ns_ino = inode_of(s->netns_fd());
  REQUIRE(s->destroy().ok());
  CHECK(host_links() == before);
  CHECK_FALSE(slots_in_use());
  struct ifreq ifr{};
  CHECK(::ioctl(tap.get(), TUNGETIFF, &ifr) == 0);  // tap0 (and so its namespace) lives on
  CHECK(std::string(ifr.ifr_name) == "tap0");
  tap.reset();
  CHECK(live_netns_inodes().count(ns_ino) == 0);
}

// ---- End-to-end forwarding, with namespaces standing in for the guest and the internet.

namespace {

constexpr const char* kInetNs = "ztee-t-inet";
constexpr const char* kGuestNs = "ztee-t-guest";

void cleanup_world() {
  sh(fmt::format("ip netns del {}", kInetNs));
  sh(fmt::format("ip netns del {}", kGuestNs));
  sh("ip link del zt-inet");
}

// Owns the test's "internet" and "guest" namespaces; removes them even when a check fails.
struct World {
  bool had_run_netns = ::access("/run/netns", F_OK) == 0;
  World() {
    cleanup_world();
    std::string out;
    for (std::string c : {fmt::format("ip netns add {}", kInetNs), fmt::format("ip netns add {}", kGuestNs),
                          fmt::format("ip link add zt-inet type veth peer name inet0 netns {}", kInetNs),
                          std::string("ip addr add 198.18.0.1/30 dev zt-inet"), std::string("ip link set zt-inet up"),
                          fmt::format("ip -n {} addr add 198.18.0.2/30 dev inet0", kInetNs),
                          fmt::format("ip -n {} link set inet0 up", kInetNs),
                          fmt::format("ip -n {} link set lo up", kInetNs)}) {
      REQUIRE_MESSAGE(sh(c, &out) == 0, c, ": ", out);
    }
  }
  ~World() {
    cleanup_world();
    if (!had_run_netns) ::rmdir("/run/netns");
  }
};

// Runs f on a thread inside the named namespace (setns affects that thread only).
template <typename F>
void in_named_ns(const char* name, F&& f) {
  std::thread t([&] {
    // Assertions stay on the main thread: this thread only does the work.
    int fd = ::open(fmt::format("/run/netns/{}", name).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    int rc = ::setns(fd, CLONE_NEWNET);
    ::close(fd);
    if (rc == 0) f();
  });
  t.join();
}

int listen_on(const char* ip, uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  ::inet_pton(AF_INET, ip, &a.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 8) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Runs f on a thread inside the namespace held by ns_fd.
template <typename F>
void in_fd_ns(int ns_fd, F&& f) {
  std::thread t([&] {
    if (::setns(ns_fd, CLONE_NEWNET) == 0) f();
  });
  t.join();
}

// Connects to ip:port within timeout_ms (in the calling thread's namespace) and sends "ping".
bool try_connect(const char* ip, uint16_t port, int timeout_ms) {
  bool ok = false;
  {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return false;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    ::inet_pton(AF_INET, ip, &a.sin_addr);
    int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, timeout_ms) == 1) {
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        rc = err == 0 ? 0 : -1;
      }
    }
    if (rc == 0) ok = ::send(fd, "ping", 4, MSG_NOSIGNAL) == 4;
    ::close(fd);
  }
  return ok;
}

// From the guest namespace: connects to ip:port within timeout_ms and sends "ping".
bool guest_connects(const char* ip, uint16_t port, int timeout_ms = 700) {
  bool ok = false;
  in_named_ns(kGuestNs, [&] { ok = try_connect(ip, port, timeout_ms); });
  return ok;
}

// Accepts one connection on a listening socket and returns the peer address and the bytes.
std::string accept_one(int lfd, std::string* peer) {
  pollfd p{lfd, POLLIN, 0};
  if (::poll(&p, 1, 2000) != 1) return "";
  sockaddr_in a{};
  socklen_t len = sizeof a;
  int c = ::accept4(lfd, reinterpret_cast<sockaddr*>(&a), &len, SOCK_CLOEXEC);
  if (c < 0) return "";
  char ip[INET_ADDRSTRLEN];
  *peer = ::inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
  char buf[16];
  pollfd q{c, POLLIN, 0};
  ssize_t n = ::poll(&q, 1, 2000) == 1 ? ::recv(c, buf, sizeof buf, 0) : -1;
  ::close(c);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

}  // namespace

TEST_CASE("end to end: a guest stand-in reaches only what the policy allows") {
  NetEnv env;
  std::string out;
  // Start from a host without the sandbox-network table. Another suite's
  // runtime may have left it (runtimes keep it); with no slot left it is
  // removed here, as `ztee gc` would.
  if (sh("nft list table inet ztee", &out) == 0) {
    REQUIRE_MESSAGE(!slots_in_use(), "network slots are in use: another process runs sandboxes");
    REQUIRE(remove_host_network_if_unused(env).ok());
  }
  std::string fwd_before = read_file("/proc/sys/net/ipv4/ip_forward");
  REQUIRE(sh("nft list table inet ztee", &out) != 0);  // no host table before
  {
    World world;
    struct HostNet {
      NetEnv env;
      ~HostNet() { (void)remove_host_network_if_unused(env); }
    } host_net{env};
    auto e = ensure_host_network(env);
    REQUIRE_MESSAGE(e.ok(), why(e));
    CHECK(read_file("/proc/sys/net/ipv4/ip_forward") == "1");
    auto e2 = ensure_host_network(env);  // idempotent
    REQUIRE_MESSAGE(e2.ok(), why(e2));
    REQUIRE(sh("nft list table inet ztee", &out) == 0);
    CHECK(out.find("iifname { \"ztee0\", \"ztee0p\" } drop") != std::string::npos);
    CHECK(out.find("iifname \"ztee0\" oifname \"ztee0\" drop") != std::string::npos);
    CHECK(out.find("ip saddr 100.97.0.0/16 oifname != \"ztee0\" masquerade") != std::string::npos);
    CHECK(out.find("ip_forward set by libztee") != std::string::npos);

    // Listeners: two ports in the "internet", one on the host's own veth address.
    int srv_allowed = -1, srv_other = -1;
    in_named_ns(kInetNs, [&] {
      srv_allowed = listen_on("198.18.0.2", 8080);
      srv_other = listen_on("198.18.0.2", 9090);
    });
    UniqueFd a_fd(srv_allowed), o_fd(srv_other), h_fd(listen_on("198.18.0.1", 8080));
    REQUIRE(a_fd.valid());
    REQUIRE(o_fd.valid());
    REQUIRE(h_fd.valid());

    auto s = NetSlot::create(env, kSlotA, policy_of({"198.18.0.0/30:8080/tcp"}));
    REQUIRE_MESSAGE(s.ok(), why(s));
    // The guest stand-in: the TAP is swapped for a veth named tap0 whose peer is in the guest namespace.
    s->release_tap().reset();
    int ns = s->netns_fd();
    for (std::string c : {in_ns(ns, "ip link del tap0"), in_ns(ns, fmt::format("ip link add tap0 type veth peer name g0 netns {}", kGuestNs)),
                          in_ns(ns, "ip addr add 100.96.0.1/30 dev tap0"), in_ns(ns, "ip link set tap0 up"),
                          fmt::format("ip -n {} addr add 100.96.0.2/30 dev g0", kGuestNs),
                          fmt::format("ip -n {} link set g0 up", kGuestNs),
                          fmt::format("ip -n {} route add default via 100.96.0.1", kGuestNs)}) {
      REQUIRE_MESSAGE(sh(c, &out) == 0, c, ": ", out);
    }

    CHECK(guest_connects("198.18.0.2", 8080));
    std::string peer;
    CHECK(accept_one(a_fd.get(), &peer) == "ping");
    CHECK(peer == "198.18.0.1");  // masqueraded twice: slot eth0, then the host
    CHECK_FALSE(guest_connects("198.18.0.2", 9090));  // listening, but not allowed
    CHECK_FALSE(guest_connects("198.18.0.1", 8080));  // a host address: never reachable
    CHECK_FALSE(guest_connects(ipv4_text(s->host_addr_be()).c_str(), 8080));  // the slots' gateway on ztee0

    // Slots cannot reach each other even with every firewall out of the way:
    // with both slots' rulesets flushed and the host table letting replies
    // in, a listener on slot B's eth0 address is reachable from the host
    // (control) but not from slot A's namespace (private-mode macvlans: A's
    // ARP for B reaches only the host, which does not answer for B).
    auto b = NetSlot::create(env, kSlotB, NetPolicy{});
    REQUIRE_MESSAGE(b.ok(), why(b));
    const std::string b_ip = ipv4_text(b->slot_addr_be());
    REQUIRE(sh(in_ns(b->netns_fd(), "nft flush ruleset"), &out) == 0);
    REQUIRE(sh(in_ns(s->netns_fd(), "nft flush ruleset"), &out) == 0);  // set_policy below reloads it
    REQUIRE(sh("nft insert rule inet ztee input iifname ztee0 ct state established accept", &out) == 0);
    int b_listen = -1;
    in_fd_ns(b->netns_fd(), [&] { b_listen = listen_on("0.0.0.0", 7070); });
    UniqueFd b_fd(b_listen);
    REQUIRE(b_fd.valid());
    CHECK(try_connect(b_ip.c_str(), 7070, 1500));  // control (the host table goes at the end of this test)
    bool from_a = true;
    in_fd_ns(s->netns_fd(), [&] { from_a = try_connect(b_ip.c_str(), 7070, 1500); });
    CHECK_FALSE(from_a);
    REQUIRE(b->destroy().ok());

    // A new policy takes effect at once.
    auto sp = s->set_policy(policy_of({"198.18.0.2:9090/tcp"}));
    REQUIRE_MESSAGE(sp.ok(), why(sp));
    CHECK(guest_connects("198.18.0.2", 9090));
    CHECK(accept_one(o_fd.get(), &peer) == "ping");
    CHECK_FALSE(guest_connects("198.18.0.2", 8080));
    // udp-only rule does not open tcp.
    REQUIRE(s->set_policy(policy_of({"198.18.0.2:8080/udp"})).ok());
    CHECK_FALSE(guest_connects("198.18.0.2", 8080));

    REQUIRE(s->destroy().ok());
    // The host table and links stay while a slot exists; go with the last one.
    auto other = NetSlot::create(env, kSlotB, NetPolicy{});
    REQUIRE(other.ok());
    REQUIRE(remove_host_network_if_unused(env).ok());
    CHECK(sh("nft list table inet ztee", &out) == 0);
    CHECK(host_links().count(kHostParent) == 1);
    REQUIRE(other->destroy().ok());
  }
  auto r = remove_host_network_if_unused(env);
  REQUIRE_MESSAGE(r.ok(), why(r));
  CHECK(sh("nft list table inet ztee", &out) != 0);
  CHECK(host_links().count(kHostLink) == 0);
  CHECK(host_links().count(kHostParent) == 0);
  CHECK(read_file("/proc/sys/net/ipv4/ip_forward") == fwd_before);
  CHECK(sh(fmt::format("ip netns list | grep -c ztee-t-"), &out) != 0);
}
