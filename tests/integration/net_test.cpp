// Network policy, isolation, limits and teardown, probed from inside real
// microVMs. The "internet" is a network namespace this test creates (test
// servers on 198.18.0.0/24, reached through a veth on 198.19.0.0/24); no
// packet goes anywhere else.
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "common.hpp"
#include "../why.hpp"

extern char** environ;

using ztee::Errc;

namespace {

constexpr int kPortA = 47080;  // served by the internet namespace and by the host
constexpr int kPortB = 47090;  // served by the internet namespace only

int sh(const std::string& cmd) {
  int rc = std::system((cmd + " >/dev/null 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The test's own internet: a namespace with test servers, routed from the host.
class Internet {
 public:
  Internet() {
    std::string tag = std::to_string(::getpid());
    ns_ = "ztee-inet-" + tag;
    host_if_ = "ztinet" + tag.substr(0, 8);
    ready_ = test::state_dir() + "/inet-ready";
    ::unlink(ready_.c_str());
    const std::vector<std::string> setup = {
        "ip netns add " + ns_,
        "ip link add " + host_if_ + " type veth peer name inet0 netns " + ns_,
        "ip addr add 198.19.0.1/24 dev " + host_if_,
        "ip link set " + host_if_ + " up",
        "ip -n " + ns_ + " link set lo up",
        "ip -n " + ns_ + " addr add 198.19.0.2/24 dev inet0",
        "ip -n " + ns_ + " link set inet0 up",
        "ip -n " + ns_ + " addr add 198.18.0.10/32 dev lo",
        "ip -n " + ns_ + " addr add 198.18.0.11/32 dev lo",
        "ip -n " + ns_ + " addr add 198.18.0.53/32 dev lo",
        "ip route add 198.18.0.0/24 via 198.19.0.2 dev " + host_if_,
    };
    // A failed set-up throws out of the constructor (no destructor then):
    // undo what was done first, so no namespace, link or route is left.
    for (const auto& c : setup)
      if (sh(c) != 0) {
        teardown();
        FAIL("test internet set-up failed at: " << c);
      }
    std::vector<std::string> args = {"ip", "netns", "exec", ns_, "/usr/bin/python3", ZTEE_INET_SERVER, ready_,
                                     "tcp:198.18.0.10:" + std::to_string(kPortA),
                                     "tcp:198.18.0.10:" + std::to_string(kPortB),
                                     "tcp:198.18.0.11:" + std::to_string(kPortA), "udp:198.18.0.53:53"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (int e = ::posix_spawnp(&server_, "ip", nullptr, nullptr, argv.data(), environ); e != 0) {
      server_ = -1;
      teardown();
      FAIL("starting the test internet's servers: " << std::strerror(e));
    }
    for (int i = 0; i < 500 && read_text(ready_).find("ready") == std::string::npos; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (read_text(ready_).find("ready") == std::string::npos) {
      teardown();
      FAIL("the test internet's servers did not report ready within 5 s");
    }
  }
  ~Internet() { teardown(); }

 private:
  void teardown() {
    if (server_ > 0) {
      ::kill(server_, SIGKILL);
      ::waitpid(server_, nullptr, 0);
    }
    sh("ip route del 198.18.0.0/24 via 198.19.0.2");
    sh("ip link del " + host_if_);
    sh("ip netns del " + ns_);
    server_ = -1;
  }

  std::string ns_, host_if_, ready_;
  pid_t server_ = -1;
};

Internet& internet() {
  static Internet inet;
  return inet;
}

// A TCP listener on the host (every address, kPortA) that counts connections.
class HostListener {
 public:
  HostListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(kPortA);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
    thread_ = std::thread([this] {
      for (;;) {
        int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        ++accepted;
        ::close(c);
      }
    });
  }
  ~HostListener() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  std::atomic<int> accepted{0};

 private:
  int fd_ = -1;
  std::thread thread_;
};

// Every IPv4 address of the host's own namespace.
std::vector<std::string> host_addresses() {
  std::vector<std::string> out;
  ifaddrs* ifa = nullptr;
  REQUIRE(::getifaddrs(&ifa) == 0);
  for (ifaddrs* i = ifa; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    char buf[INET_ADDRSTRLEN];
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof buf);
    out.emplace_back(buf);
  }
  ::freeifaddrs(ifa);
  return out;
}

// The slot-side address of every live slot: the host's neighbour entries on
// ztee0, which libztee sets for each slot it creates (/proc/net/arp).
std::vector<std::string> slot_addresses() {
  std::vector<std::string> out;
  FILE* f = std::fopen("/proc/net/arp", "r");
  REQUIRE(f != nullptr);
  char line[256];
  while (std::fgets(line, sizeof line, f)) {
    char ip[64], hw[64], flags[16], mac[64], mask[16], dev[64];
    if (std::sscanf(line, "%63s %63s %15s %63s %15s %63s", ip, hw, flags, mac, mask, dev) == 6 &&
        std::string(dev) == "ztee0")
      out.emplace_back(ip);
  }
  std::fclose(f);
  return out;
}

// The host's links, without the ztee0/ztee0p pair all slots share (made by
// the first slot, removed by `ztee gc` when no slot is left): a sandbox must
// leave no link of its own.
std::set<std::string> host_links() {
  std::set<std::string> out;
  if (DIR* d = ::opendir("/sys/class/net")) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') out.insert(e->d_name);
    ::closedir(d);
  }
  out.erase("ztee0");
  out.erase("ztee0p");
  return out;
}

const char kProbe[] = R"(import socket, sys
for t in sys.argv[1:]:
    proto, a, p = t.split(':')
    try:
        if proto == 'tcp':
            s = socket.create_connection((a, int(p)), timeout=2)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(2)
            s.sendto(b'q', (a, int(p)))
        s.settimeout(2)
        print(t, 'OK', s.recv(100).decode().strip(), flush=True)
    except Exception as e:
        print(t, 'FAIL', type(e).__name__, flush=True)
)";

// Runs the probe in the guest: target ("tcp:ADDR:PORT" / "udp:ADDR:PORT") -> its line.
std::map<std::string, std::string> probe(ztee::Sandbox& sb, const std::vector<std::string>& targets) {
  REQUIRE(sb.write_file("/tmp/probe.py", kProbe).ok());
  std::string cmd = "python3 /tmp/probe.py";
  for (const auto& t : targets) cmd += " " + t;
  auto r = sb.run(cmd, 120000);
  REQUIRE(r.ok());
  INFO("probe output: " << r->stdout_data << r->stderr_data);
  REQUIRE(r->exit_code == 0);
  std::map<std::string, std::string> out;
  std::istringstream lines(r->stdout_data);
  std::string line;
  while (std::getline(lines, line)) {
    auto sp = line.find(' ');
    if (sp != std::string::npos) out[line.substr(0, sp)] = line.substr(sp + 1);
  }
  for (const auto& t : targets) REQUIRE_MESSAGE(out.count(t), "no probe result for " << t);
  return out;
}

bool ok(const std::map<std::string, std::string>& m, const std::string& t) { return m.at(t).rfind("OK", 0) == 0; }

std::string tcp(const std::string& addr, int port) { return "tcp:" + addr + ":" + std::to_string(port); }

ztee::Sandbox networked(std::vector<std::string> allow, std::string dns = "") {
  ztee::SandboxOptions o;
  o.network.allow = std::move(allow);
  o.network.dns = std::move(dns);
  auto sb = test::runtime().create_sandbox(o);
  if (!sb) FAIL("create_sandbox with a network: " << sb.error().message);
  return std::move(sb).value();
}

}  // namespace

TEST_CASE("a sandbox without a network has no interface but lo") {
  auto r = test::shared().run("ls /sys/class/net");
  REQUIRE(r.ok());
  CHECK(r->stdout_data == "lo\n");
}

TEST_CASE("a malformed allow entry is refused with the entry quoted, leaving nothing behind") {
  int before = test::count_state_entries();
  auto links = host_links();
  for (const char* bad : {"198.18.0.10", "198.18.0.10:0", "198.18.0.10/33:80", "example.com:80",
                          "198.18.0.10:80/icmp", "::1:80", ""}) {
    ztee::SandboxOptions o;
    o.network.allow = {bad};
    auto r = test::runtime().create_sandbox(o);
    REQUIRE(!r.ok());
    CHECK(r.error().code == Errc::kInvalidArgument);
    CHECK_MESSAGE(r.error().message.find(std::string("\"") + bad + "\"") != std::string::npos,
                  r.error().message);
  }
  ztee::SandboxOptions o;
  o.network.dns = "not-an-address";
  auto r = test::runtime().create_sandbox(o);
  REQUIRE(!r.ok());
  CHECK(r.error().code == Errc::kInvalidArgument);
  CHECK(test::count_state_entries() == before);
  CHECK(host_links() == links);
}

TEST_CASE("egress: only the allowed address and port are reachable; DNS only when allowed") {
  internet();
  auto sb = networked({"198.18.0.10:" + std::to_string(kPortA) + "/tcp"});
  auto names = sb.run("ls /sys/class/net");
  REQUIRE(names.ok());
  CHECK(names->stdout_data == "eth0\nlo\n");
  auto m = probe(sb, {tcp("198.18.0.10", kPortA), tcp("198.18.0.10", kPortB), tcp("198.18.0.11", kPortA),
                      "udp:198.18.0.53:53"});
  CHECK(ok(m, tcp("198.18.0.10", kPortA)));
  CHECK(m.at(tcp("198.18.0.10", kPortA)) == "OK ok 198.18.0.10:" + std::to_string(kPortA));
  CHECK_FALSE(ok(m, tcp("198.18.0.10", kPortB)));
  CHECK_FALSE(ok(m, tcp("198.18.0.11", kPortA)));
  CHECK_FALSE(ok(m, "udp:198.18.0.53:53"));
  auto resolv = sb.run("cat /etc/resolv.conf 2>/dev/null; true");
  REQUIRE(resolv.ok());
  CHECK(resolv->stdout_data.find("nameserver") == std::string::npos);

  auto dns = networked({}, "198.18.0.53");
  auto d = probe(dns, {"udp:198.18.0.53:53", tcp("198.18.0.10", kPortA)});
  CHECK(d.at("udp:198.18.0.53:53") == "OK dns-ok 198.18.0.53");
  CHECK_FALSE(ok(d, tcp("198.18.0.10", kPortA)));
  auto rc = dns.run("cat /etc/resolv.conf");
  REQUIRE(rc.ok());
  CHECK(rc->stdout_data == "nameserver 198.18.0.53\n");
}

TEST_CASE("isolation: the host's addresses and a sibling sandbox are unreachable even when everything is allowed") {
  internet();
  HostListener host;
  std::string any = "0.0.0.0/0:" + std::to_string(kPortA) + "/tcp";
  auto sibling = networked({any});
  REQUIRE(sibling.run("nohup python3 -c \"import socket; s=socket.socket(); s.bind(('0.0.0.0', " +
                      std::to_string(kPortA) + ")); s.listen(); [s.accept()[0].close() for _ in iter(int, 1)]\" "
                      ">/dev/null 2>&1 &")
              .ok());
  auto sb = networked({any});
  std::vector<std::string> targets = {tcp("198.18.0.10", kPortA), tcp("100.96.0.1", kPortA)};
  for (const auto& a : host_addresses()) targets.push_back(tcp(a, kPortA));
  auto slots = slot_addresses();
  CHECK(slots.size() >= 2);  // this sandbox's and the sibling's, at least
  for (const auto& a : slots) targets.push_back(tcp(a, kPortA));
  auto m = probe(sb, targets);
  CHECK_MESSAGE(ok(m, targets[0]), "the control target must be reachable: " << m.at(targets[0]));
  for (size_t i = 1; i < targets.size(); ++i) CHECK_MESSAGE(!ok(m, targets[i]), targets[i] << " " << m.at(targets[i]));
  CHECK(host.accepted.load() == 0);
}

TEST_CASE("limits: a fork bomb and a memory hog in one guest leave the host and a sibling working") {
  ztee::SandboxOptions o;
  o.memory_mib = 256;
  auto victim = test::runtime().create_sandbox(o);
  REQUIRE(victim.ok());
  auto hog = victim->run("python3 -c 'b = bytearray(1 << 30)'", 60000);
  REQUIRE(hog.ok());
  CHECK(hog->exit_code != 0);  // the guest's own memory ran out, not the host's
  CHECK(test::shared().run("echo alive")->stdout_data == "alive\n");
  auto bomb = victim->run("b() { b | b & }; b; sleep 30", 8000);
  // The bomb may take the guest down (an error) or run into the timeout:
  // either way only this sandbox suffers.
  if (bomb.ok()) CHECK_MESSAGE(bomb->timed_out, "exit " << bomb->exit_code << " " << bomb->stderr_data.substr(0, 300));
  auto alive = test::shared().run("echo alive");
  REQUIRE(alive.ok());
  CHECK(alive->stdout_data == "alive\n");
  CHECK(victim->destroy().ok());
}

TEST_CASE("200 networked create/exec/destroy cycles leave no process, mount, cgroup, link, fd or file behind") {
  internet();
  // Clones of a networked template: each cycle gets a fresh namespace, TAP,
  // macvlan and firewall. A runtime of its own, so the VMMs it keeps pre-spawned
  // for the template go with it at the end of this test.
  ztee::RuntimeOptions ro;
  ro.image_dir = test::image_dir();
  ro.state_dir = test::state_dir();
  auto rt_or = ztee::Runtime::create(ro);
  REQUIRE(rt_or.ok());
  ztee::Runtime rt = std::move(rt_or).value();
  std::string tpl = test::state_dir() + "/net-template";
  {
    ztee::SandboxOptions o;
    o.snapshottable = true;
    o.network.allow = {"198.18.0.10:" + std::to_string(kPortA) + "/tcp"};
    auto sb = rt.create_sandbox(o);
    REQUIRE(sb.ok());
    REQUIRE(sb->snapshot(tpl).ok());
  }
  // Mounts in this (the host's) mount namespace that could be a sandbox's:
  // below the state dir, under /run/ztee, or a namespace file. Others' come
  // and go with whatever else runs on the host.
  auto our_mounts = [] {
    std::ifstream in("/proc/self/mountinfo");
    int n = 0;
    for (std::string line; std::getline(in, line);)
      if (line.find(test::state_dir()) != std::string::npos || line.find("/run/ztee") != std::string::npos ||
          line.find(" nsfs ") != std::string::npos)
        ++n;
    return n;
  };
  auto children = [] {
    int n = 0;
    std::string me = std::to_string(::getpid());
    if (DIR* d = ::opendir("/proc")) {
      while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        std::string st = read_text(std::string("/proc/") + e->d_name + "/stat");
        auto rp = st.rfind(')');
        if (rp == std::string::npos) continue;
        std::istringstream f(st.substr(rp + 2));
        std::string state, ppid;
        f >> state >> ppid;
        if (ppid == me) ++n;
      }
      ::closedir(d);
    }
    return n;
  };
  // Where the sandboxes' cgroups are (JailOptions::cgroup_parent "ztee"):
  // the pids hierarchy on cgroup v1, below this process's cgroup on v2.
  std::string cg_root = "/sys/fs/cgroup/pids/ztee/";
  if (::access("/sys/fs/cgroup/pids", F_OK) != 0) {
    std::string self = read_text("/proc/self/cgroup");  // "0::/path\n"
    auto at = self.find("0::");
    REQUIRE(at != std::string::npos);
    std::string rel = self.substr(at + 3, self.find('\n', at) - at - 3);
    cg_root = "/sys/fs/cgroup" + (rel == "/" ? "" : rel) + "/ztee/";
  }
  std::vector<std::string> ids;
  // Warm-up cycle: lets the runtime create what it keeps (pre-spawned VMMs, host table).
  auto clone_once = [&](bool check_egress) {
    ztee::SandboxOptions o;
    o.template_dir = tpl;
    o.network.allow = {"198.18.0.10:" + std::to_string(kPortA) + "/tcp"};
    auto sb = rt.create_sandbox(o);
    REQUIRE_MESSAGE(sb.ok(), why(sb));
    ids.push_back(sb->id());
    // The cgroup is there while the clone lives: the check at the end can fail.
    if (check_egress) {
      std::string live = cg_root + sb->id();
      CHECK_MESSAGE(::access(live.c_str(), F_OK) == 0, live);
      auto m = probe(*sb, {tcp("198.18.0.10", kPortA), tcp("198.18.0.10", kPortB)});
      CHECK(ok(m, tcp("198.18.0.10", kPortA)));
      CHECK_FALSE(ok(m, tcp("198.18.0.10", kPortB)));
    } else {
      auto r = sb->run("true");
      REQUIRE(r.ok());
      REQUIRE(r->exit_code == 0);
    }
    auto d = sb->destroy();
    REQUIRE_MESSAGE(d.ok(), why(d));
  };
  clone_once(true);  // a restored clone reaches the network through its own new slot
  int entries = test::count_state_entries();  // first: it may start the shared runtime (fds)
  int fds = test::count_fds(), mounts = our_mounts(), kids = children();
  auto links = host_links();
  ids.clear();
  for (int i = 0; i < 200; ++i) clone_once(false);
  CHECK(test::count_fds() == fds);
  CHECK(our_mounts() == mounts);
  CHECK(children() == kids);
  CHECK(test::count_state_entries() == entries);
  CHECK(host_links() == links);
  // No clone's cgroup is left (by name: other processes' sandboxes may come
  // and go in the same hierarchy meanwhile).
  REQUIRE(ids.size() == 200);
  std::string left;
  for (const auto& id : ids)
    if (::access((cg_root + id).c_str(), F_OK) == 0) left += " " + id;
  CHECK_MESSAGE(left.empty(), "cgroups left:" << left);
}

namespace {

// Starts `ztee run` holding a live networked sandbox in state dir `state`,
// waits until the command inside runs, then kills the ztee process with
// SIGKILL. Returns the sandbox id it left behind.
std::string crash_with_live_sandbox(const std::string& state) {
  int out[2];
  REQUIRE(::pipe(out) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    ::close(out[1]);
    ::setenv("ZTEE_STATE_DIR", state.c_str(), 1);
    ::execl(ZTEE_CLI, "ztee", "run", "--allow", "198.18.0.10:47080/tcp", "--", "sh", "-c", "echo started; sleep 120",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  std::string got;
  char buf[256];
  while (got.find("started") == std::string::npos) {
    ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  ::close(out[0]);
  REQUIRE_MESSAGE(got.find("started") != std::string::npos, "ztee run did not start: " << got);
  std::string id;
  for (const auto& e : std::filesystem::directory_iterator(state))
    if (e.path().filename().string().rfind("sb-", 0) == 0) id = e.path().filename();
  REQUIRE(!id.empty());
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return id;
}

// The host's neighbour entry for a slot's address, from `ip neigh` ("" when none).
std::string neighbour_of(const std::string& ip) {
  FILE* p = ::popen(("ip neigh show " + ip + " dev ztee0").c_str(), "r");
  if (!p) return "";
  std::string out;
  char buf[256];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  ::pclose(p);
  return out;
}

// The slot address of the sandbox whose owner file says "<pid> <index>".
std::string slot_address_of(const std::string& state, const std::string& id) {
  long pid = 0, index = 0;
  FILE* f = std::fopen((state + "/" + id + "/owner").c_str(), "r");
  REQUIRE(f != nullptr);
  REQUIRE(std::fscanf(f, "%ld %ld", &pid, &index) == 2);
  std::fclose(f);
  uint32_t a = (100u << 24) | (97u << 16);
  in_addr x{htonl(a + 4 * static_cast<uint32_t>(index) + 2)};
  char buf[INET_ADDRSTRLEN];
  return ::inet_ntop(AF_INET, &x, buf, sizeof buf);
}

bool leftovers_gone(const std::string& state, const std::string& id) {
  std::error_code ec;
  bool gone = !std::filesystem::exists(state + "/" + id, ec);
  for (const char* c : {"pids", "memory", "cpu"})
    gone = gone && !std::filesystem::exists(std::string("/sys/fs/cgroup/") + c + "/ztee/" + id, ec);
  return gone && test::count_entries(state + "/ids") == 0;
}

}  // namespace

TEST_CASE("crash recovery: `ztee gc` and a new Runtime remove what a SIGKILLed process left") {
  internet();
  auto links = host_links();
  for (int round = 0; round < 2; ++round) {
    std::string state = test::state_dir() + "/crash-" + std::to_string(round);
    std::string id = crash_with_live_sandbox(state);
    CHECK_FALSE(leftovers_gone(state, id));  // the crash did leave something: the test can fail
    std::string slot_ip = slot_address_of(state, id);
    CHECK(neighbour_of(slot_ip).find("lladdr") != std::string::npos);  // the slot's host-side entry
    if (round == 0) {
      std::string cmd = std::string(ZTEE_CLI) + " gc --state-dir " + state;
      FILE* p = ::popen(cmd.c_str(), "r");
      REQUIRE(p);
      std::string out;
      char buf[256];
      while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
      CHECK(::pclose(p) == 0);
      CHECK_MESSAGE(out.find("removed sandbox " + id) != std::string::npos, out);
    } else {
      ztee::RuntimeOptions o;
      o.state_dir = state;
      auto rt = ztee::Runtime::create(o);
      REQUIRE(rt.ok());
    }
    CHECK(leftovers_gone(state, id));
    CHECK_MESSAGE(neighbour_of(slot_ip).empty(), neighbour_of(slot_ip));
    // The VMM died with its parent, and its network namespace, TAP and macvlan with it.
    for (int i = 0; i < 200 && host_links() != links; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    CHECK(host_links() == links);
  }
}
