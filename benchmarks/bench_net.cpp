// ztee-bench-net: one network slot set up and torn down through libztee
// (NetSlot::create + destroy) against the same set-up done with `ip` and `nft`
// commands (netns, sysctls, TAP, the private macvlan on ztee0p, addresses,
// route, the same ruleset, the host's neighbour entry), interleaved in the
// same run. Needs root.
// Usage: ztee-bench-net [--cycles N] [--warmup N]
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include "bench_common.hpp"
#include "net/internal.hpp"
#include "net/net.hpp"

using namespace ztee;
using namespace ztee::detail;
using namespace ztee::bench;

namespace {

constexpr uint32_t kZteeSlot = 16002;
constexpr uint32_t kBaseSlot = 16003;
constexpr const char* kBaseNs = "zb-net";
// A new MAC per cycle, as libztee's random ones: `ip netns del` returns
// before the kernel has destroyed the namespace's macvlan, and a second
// macvlan with the same address on ztee0p cannot come up (EADDRINUSE).
std::string base_mac(long cycle) {
  return fmt::format("02:7a:62:{:02x}:{:02x}:{:02x}", (cycle >> 16) & 0xff, (cycle >> 8) & 0xff, cycle & 0xff);
}

// Runs argv (PATH search) with stdout to /dev/null and stderr to a file the
// caller may quote; returns the exit status.
constexpr const char* kErrFile = "/tmp/ztee-bench-net.err";
int run(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, kErrFile, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  pid_t pid = 0;
  int rc = ::posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void must(const std::vector<std::string>& args) {
  if (run(args) != 0) {
    std::string cmd;
    for (const auto& a : args) cmd += a + " ";
    std::ifstream err(kErrFile);
    std::string said((std::istreambuf_iterator<char>(err)), std::istreambuf_iterator<char>());
    die("baseline command failed: " + cmd + (said.empty() ? "" : "(" + said.substr(0, said.find('\n')) + ")"));
  }
}

void baseline_cleanup(const std::string& slot_ip) {
  run({"ip", "netns", "del", kBaseNs});
  run({"ip", "neigh", "del", slot_ip, "dev", kHostLink});
}

// The same slot with commands: returns the wall time in ms.
double baseline_cycle(const std::string& rules_path, const std::string& gateway, const std::string& slot_ip,
                      const std::string& prefix, long cycle) {
  const std::string ns = kBaseNs;
  const std::string mac = base_mac(cycle);
  uint64_t t0 = now_ns();
  must({"ip", "netns", "add", ns});
  must({"ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1", "net.ipv4.ip_forward=1"});
  must({"ip", "-n", ns, "link", "set", "lo", "up"});
  must({"ip", "-n", ns, "tuntap", "add", "tap0", "mode", "tap"});
  must({"ip", "-n", ns, "addr", "add", "100.96.0.1/30", "dev", "tap0"});
  must({"ip", "-n", ns, "link", "set", "tap0", "up"});
  must({"ip", "link", "add", "link", kHostParent, "name", "eth0", "netns", ns, "address", mac, "type", "macvlan",
        "mode", "private"});
  must({"ip", "-n", ns, "addr", "add", slot_ip + "/" + prefix, "dev", "eth0"});
  must({"ip", "-n", ns, "link", "set", "eth0", "up"});
  must({"ip", "-n", ns, "route", "add", "default", "via", gateway});
  must({"ip", "netns", "exec", ns, "nft", "-f", rules_path});
  must({"ip", "neigh", "replace", slot_ip, "lladdr", mac, "dev", kHostLink, "nud", "reachable"});
  must({"ip", "neigh", "del", slot_ip, "dev", kHostLink});
  must({"ip", "netns", "del", ns});
  return static_cast<double>(now_ns() - t0) / 1e6;
}

double ztee_cycle(const NetEnv& env, const NetPolicy& policy, double* create_ms) {
  uint64_t t0 = now_ns();
  auto s = NetSlot::create(env, kZteeSlot, policy);
  uint64_t t1 = now_ns();
  if (!s) die(fmt::format("NetSlot::create: {}", s.error().message));
  auto d = s->destroy();
  uint64_t t2 = now_ns();
  if (!d) die(fmt::format("NetSlot::destroy: {}", d.error().message));
  *create_ms = static_cast<double>(t1 - t0) / 1e6;
  return static_cast<double>(t2 - t0) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  Args args(argc, argv, "ztee-bench-net [--cycles N] [--warmup N]");
  long cycles = args.num("--cycles", 50);
  long warmup = args.num("--warmup", 3);
  args.finish();
  if (cycles < 1) die("--cycles must be >= 1");
  if (::geteuid() != 0) die("ztee-bench-net needs root (it creates namespaces, links and nftables rules)");

  std::printf("backend: none (network slots only: no VMM runs, so no accelerator is used)\n");
  NetEnv env;
  auto policy = parse_net_policy({"10.0.0.0/8:443/tcp", "192.0.2.0/24:8000-8080", "198.51.100.7:53/udp"}, "192.0.2.53");
  if (!policy) die(policy.error().message);
  bool had_links = ::if_nametoindex(kHostLink) != 0;
  // Both sides use the shared host pair; making it is not part of a slot's cost.
  auto links = ensure_host_links(env);
  if (!links) die(links.error().message);

  // The baseline loads the very ruleset libztee generates for its slot.
  char path[] = "/tmp/ztee-bench-net-XXXXXX.nft";
  int fd = ::mkstemps(path, 4);
  if (fd < 0) die("mkstemps failed");
  ::close(fd);
  const std::string rules_path = path;
  // Host addresses as libztee reads them, so both load the same set.
  auto sk = netimpl::NlSock::open("host namespace");
  if (!sk) die(sk.error().message);
  auto hosts = netimpl::ipv4_addrs(sk->get());
  if (!hosts) die(hosts.error().message);
  std::ofstream(rules_path) << slot_ruleset(env, *policy, *hosts);
  const std::string gateway = ipv4_text(htonl(ntohl(env.pool_be) + 1));
  const std::string slot_ip = ipv4_text(htonl(ntohl(env.pool_be) + 4 * kBaseSlot + 2));
  const std::string prefix = std::to_string(env.pool_prefix);

  baseline_cleanup(slot_ip);
  for (long i = 0; i < warmup; ++i) {
    double c;
    ztee_cycle(env, *policy, &c);
    baseline_cycle(rules_path, gateway, slot_ip, prefix, i);
  }
  std::vector<double> zt, zc, bt;
  for (long i = 0; i < cycles; ++i) {
    double c;
    zt.push_back(ztee_cycle(env, *policy, &c));
    zc.push_back(c);
    bt.push_back(baseline_cycle(rules_path, gateway, slot_ip, prefix, warmup + i));
  }
  ::unlink(rules_path.c_str());
  if (!had_links) (void)remove_host_network_if_unused(env);

  double zp = percentile(zt, 0.5), bp = percentile(bt, 0.5);
  std::printf("network slot set-up + tear-down over %ld interleaved pairs (%ld warm-up pairs not counted):\n", cycles,
              warmup);
  std::printf("  libztee NetSlot create+destroy: p50 %.2f ms  min %.2f  max %.2f  (create alone p50 %.2f ms)\n", zp,
              minimum(zt), maximum(zt), percentile(zc, 0.5));
  std::printf("  ip + nft commands (14 processes): p50 %.2f ms  min %.2f  max %.2f\n", bp, minimum(bt), maximum(bt));
  std::printf("  ratio p50: %.3f (target <= 0.1)\n\n", zp / bp);
  print_metric("net_slot_ms", zp, "ms", bp);
  return 0;
}
