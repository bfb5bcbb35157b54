// ztee-bench-serve: `ztee serve` (issue 14), a real server process on loopback.
//
//   serve_sdk_cycle_p50_ms   the E2B JS SDK (bench_serve.mjs) doing
//                            Sandbox.create -> commands.run('true') -> kill
//                            through the server, pool warm (both pools are
//                            refilled before each sample). Baseline: the same
//                            through the C++ API in this process: Pool::lease
//                            -> exec `/bin/bash -l -c true` (as the SDK's command
//                            runs: as `user` in /home/user) -> destroy, from a pool
//                            of the same size and warm-up.
//                            Interleaved SDK, C++, SDK, ... Target ratio <= 1.3.
//   serve_load_rps, serve_load_p50_ms, serve_load_p99_ms, serve_load_cpu_us_per_req
//                            --clients (50) SDK clients doing commands.run('echo x')
//                            on --sandboxes (5) pooled sandboxes for --seconds (30);
//                            CPU: the server process's own (its threads, not its
//                            VMMs'; the SDK client's own CPU is printed beside).
//                            Baseline: as many threads doing Sandbox::exec of the
//                            same command through the C++ API on as many sandboxes,
//                            as long; CPU: this process's. --load-rounds (2) rounds
//                            of --seconds / rounds each, SDK and C++ interleaved.
//   serve_noop_p50_us, serve_noop_rps, serve_noop_cpu_us_per_req
//                            the server's own cost per request: --conns (4)
//                            keep-alive connections doing GET /healthz in a closed
//                            loop. Baseline: nginx (worker_processes 1, as the
//                            server's one HTTP loop) serving the same body as a
//                            static file, same client. --rounds (3) rounds of
//                            --noop-seconds (3) each, interleaved. Skipped with a
//                            message when nginx is not installed ($ZTEE_BENCH_NGINX:
//                            another nginx binary).
//
// Usage: ztee-bench-serve [--samples N] [--pool N] [--clients N] [--sandboxes N]
//        [--seconds S] [--load-rounds N] [--conns N] [--rounds N] [--noop-seconds S]
//        [--skip-sdk] [--skip-load] [--skip-noop]
// Needs root (the jail), the guest image, node and tests/serve/node_modules
// (tools/dev setup).
#include <ztee/ztee.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "bench_common.hpp"

using namespace ztee;
using namespace ztee::bench;

namespace {

std::string g_dir;  // removed at exit

void sleep_ms(long ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

double self_cpu_s() {
  struct rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// CPU time of one process's threads (not its children), seconds: the sum of
// their schedstat run times (ns; finer than utime + stime's clock ticks).
// Threads that already exited are not counted: the server's and nginx's
// threads live as long as they do.
double proc_cpu_s(pid_t pid) {
  double total = 0;
  std::error_code ec;
  for (auto& t : std::filesystem::directory_iterator(fmt::format("/proc/{}/task", pid), ec)) {
    std::ifstream f(t.path() / "schedstat");
    unsigned long long ns = 0;
    if (f >> ns) total += static_cast<double>(ns) / 1e9;
  }
  return total;
}

// Children of pid (from /proc/*/stat).
std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> out;
  for (auto& e : std::filesystem::directory_iterator("/proc")) {
    std::string n = e.path().filename();
    if (n.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f(e.path() / "stat");
    std::string s((std::istreambuf_iterator<char>(f)), {});
    size_t rp = s.rfind(')');
    if (rp == std::string::npos) continue;
    std::istringstream is(s.substr(rp + 2));
    std::string state;
    long ppid = 0;
    is >> state >> ppid;
    if (ppid == pid) out.push_back(static_cast<pid_t>(std::stol(n)));
  }
  return out;
}

// A child process with its stdin/stdout as pipes (stderr to a file).
struct Child {
  pid_t pid = -1;
  FILE* in = nullptr;   // its stdin
  FILE* out = nullptr;  // its stdout
  bool start(std::vector<std::string> argv, const std::vector<std::string>& env, const std::string& err_file) {
    int pin[2], pout[2];
    if (::pipe2(pin, O_CLOEXEC) || ::pipe2(pout, O_CLOEXEC)) return false;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pin[0], 0);
    posix_spawn_file_actions_adddup2(&fa, pout[1], 1);
    posix_spawn_file_actions_addopen(&fa, 2, err_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    std::vector<char*> a, e;
    for (auto& s : argv) a.push_back(s.data());
    a.push_back(nullptr);
    std::vector<std::string> envc = env;
    for (auto& s : envc) e.push_back(s.data());
    e.push_back(nullptr);
    int rc = ::posix_spawnp(&pid, a[0], &fa, nullptr, a.data(), e.data());
    posix_spawn_file_actions_destroy(&fa);
    ::close(pin[0]);
    ::close(pout[1]);
    if (rc != 0) {
      ::close(pin[1]);
      ::close(pout[0]);
      pid = -1;
      return false;
    }
    in = ::fdopen(pin[1], "w");
    out = ::fdopen(pout[0], "r");
    return true;
  }
  std::string line() {
    char* l = nullptr;
    size_t n = 0;
    ssize_t r = ::getline(&l, &n, out);
    std::string s = r > 0 ? std::string(l, static_cast<size_t>(r)) : "";
    std::free(l);
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
  }
  void send(const std::string& s) {
    std::fputs((s + "\n").c_str(), in);
    std::fflush(in);
  }
  int stop(int sig) {
    if (pid <= 0) return -1;
    if (in) std::fclose(in);
    in = nullptr;
    if (sig) ::kill(pid, sig);
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (out) std::fclose(out);
    out = nullptr;
    pid = -1;
    return st;
  }
  ~Child() {
    if (pid > 0) stop(SIGKILL);
  }
};

std::vector<std::string> inherited_env() {
  std::vector<std::string> out;
  for (char** e = environ; *e; ++e) out.emplace_back(*e);
  return out;
}

std::string env_or(const char* name, const char* def) {
  const char* v = std::getenv(name);
  return v && *v ? v : def;
}

// One keep-alive HTTP/1.1 client connection (blocking).
class HttpConn {
 public:
  bool connect(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~HttpConn() {
    if (fd_ >= 0) ::close(fd_);
  }
  // Sends the request and reads one response; its status (0 on failure).
  int request(const std::string& req, std::string* body = nullptr) {
    if (::send(fd_, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) return 0;
    size_t hend;
    while ((hend = buf_.find("\r\n\r\n")) == std::string::npos)
      if (!fill()) return 0;
    int status = std::atoi(buf_.c_str() + 9);
    size_t len = 0;
    std::string head = buf_.substr(0, hend);
    for (auto& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (size_t p = head.find("content-length:"); p != std::string::npos) len = std::strtoul(head.c_str() + p + 15, nullptr, 10);
    while (buf_.size() < hend + 4 + len)
      if (!fill()) return 0;
    if (body) *body = buf_.substr(hend + 4, len);
    buf_.erase(0, hend + 4 + len);
    return status;
  }

 private:
  bool fill() {
    char tmp[16384];
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }
  int fd_ = -1;
  std::string buf_;
};

std::string http_get(uint16_t port, const std::string& path, int* status = nullptr) {
  HttpConn c;
  std::string body;
  int st = c.connect(port) ? c.request(fmt::format("GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path), &body) : 0;
  if (status) *status = st;
  return body;
}

// A sample of a metrics page: the value of `name` (with its label text).
double metric(const std::string& page, const std::string& name) {
  size_t p = page.find("\n" + name + " ");
  if (p == std::string::npos) return -1;
  return std::strtod(page.c_str() + p + name.size() + 2, nullptr);
}

uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t l = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &l);
  ::close(fd);
  return ntohs(a.sin_port);
}

struct NoopResult {
  std::vector<double> lat_us;
  uint64_t requests = 0, errors = 0;
  double seconds = 0, cpu_s = 0;
};

// conns closed-loop clients of GET path for `seconds`; CPU of `pids` around it.
NoopResult noop_round(uint16_t port, const std::string& path, int conns, double seconds, const std::vector<pid_t>& pids) {
  NoopResult r;
  std::mutex mu;
  std::atomic<bool> stop{false};
  std::string req = fmt::format("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", path);
  double cpu0 = 0;
  for (pid_t p : pids) cpu0 += proc_cpu_s(p);
  uint64_t t0 = now_ns();
  std::vector<std::thread> ts;
  for (int c = 0; c < conns; ++c)
    ts.emplace_back([&] {
      HttpConn hc;
      std::vector<double> lat;
      uint64_t errs = 0;
      if (!hc.connect(port)) errs++;
      else
        while (!stop.load(std::memory_order_relaxed)) {
          uint64_t s = now_ns();
          if (hc.request(req) != 200) {
            ++errs;
            break;
          }
          lat.push_back(static_cast<double>(now_ns() - s) / 1e3);
        }
      std::lock_guard lk(mu);
      r.lat_us.insert(r.lat_us.end(), lat.begin(), lat.end());
      r.errors += errs;
    });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : ts) t.join();
  r.seconds = static_cast<double>(now_ns() - t0) / 1e9;
  for (pid_t p : pids) r.cpu_s += proc_cpu_s(p);
  r.cpu_s -= cpu0;
  r.requests = r.lat_us.size();
  return r;
}

bool pools_full(Pool& cxx, uint16_t port, uint32_t target) {
  if (cxx.stats().ready < target) return false;
  std::string page = http_get(port, "/metrics");
  return metric(page, "ztee_serve_pool_ready{template=\"base\"}") >= target;
}

void wait_pools(Pool& cxx, uint16_t port, uint32_t target) {
  for (int i = 0; i < 1200 && !pools_full(cxx, port, target); ++i) sleep_ms(50);
}

}  // namespace

int main(int argc, char** argv) {
  Args args(argc, argv,
            "ztee-bench-serve [--samples N] [--pool N] [--clients N] [--sandboxes N]\n"
            "       [--seconds S] [--load-rounds N] [--conns N] [--rounds N] [--noop-seconds S]\n"
            "       [--skip-sdk] [--skip-load] [--skip-noop]");
  int samples = static_cast<int>(args.num("--samples", 20));
  uint32_t pool_n = static_cast<uint32_t>(args.num("--pool", 2));
  int clients = static_cast<int>(args.num("--clients", 50));
  int nsandboxes = static_cast<int>(args.num("--sandboxes", 5));
  long seconds = args.num("--seconds", 30);
  int load_rounds = std::max(1, static_cast<int>(args.num("--load-rounds", 2)));
  int conns = static_cast<int>(args.num("--conns", 4));
  int rounds = static_cast<int>(args.num("--rounds", 3));
  long noop_s = args.num("--noop-seconds", 3);
  bool skip_sdk = args.flag("--skip-sdk"), skip_load = args.flag("--skip-load"), skip_noop = args.flag("--skip-noop");
  args.finish();
  std::setvbuf(stdout, nullptr, _IOLBF, 0);

  std::string src = ZTEE_SOURCE_DIR;
  std::string ztee_bin = env_or("ZTEE_BIN", ZTEE_CLI_PATH);
  if (::access(ztee_bin.c_str(), X_OK) != 0) die(fmt::format("{} is missing: build the ztee_cli target first", ztee_bin));
  bool need_node = !skip_sdk || !skip_load;
  if (need_node && !std::filesystem::exists(src + "/tests/serve/node_modules/e2b/package.json"))
    die("tests/serve/node_modules is missing: run `tools/dev setup` (npm ci in tests/serve), or pass --skip-sdk --skip-load");

  char tmpl[] = "/tmp/ztee-bench-serve-XXXXXX";
  if (!::mkdtemp(tmpl)) die("mkdtemp failed");
  g_dir = tmpl;
  std::atexit([] {
    std::error_code ec;
    std::filesystem::remove_all(g_dir, ec);
  });

  // A key, then the server.
  std::string key;
  {
    Child kg;
    if (!kg.start({ztee_bin, "serve", "keygen", "--keys", g_dir + "/keys", "--max-sandboxes", "1000"}, {}, "/dev/null"))
      die("cannot run ztee serve keygen");
    key = kg.line();
    kg.stop(0);
  }
  Child server;
  std::string server_log = g_dir + "/server.log";
  if (!server.start({ztee_bin, "serve", "--listen", "127.0.0.1:0", "--keys", g_dir + "/keys", "--pool",
                     std::to_string(pool_n), "--state-dir", g_dir + "/state", "--max-sandboxes", "200"},
                    inherited_env(), server_log))
    die("cannot start ztee serve");
  std::string first = server.line();
  size_t colon = first.rfind(':', first.find(" ("));
  if (first.find("listening on") == std::string::npos || colon == std::string::npos)
    die(fmt::format("ztee serve did not start: {}\n(log: {})", first, server_log));
  uint16_t port = static_cast<uint16_t>(std::atoi(first.c_str() + colon + 1));
  std::string base = fmt::format("http://127.0.0.1:{}", port);
  std::printf("%s\n", first.c_str());

  RuntimeOptions ro;
  ro.state_dir = g_dir + "/state-cxx";
  auto rt = Runtime::create(ro);
  if (!rt) die(fmt::format("Runtime::create: {}", rt.error().message));
  std::printf("backend: %s\n", rt->backend_description().c_str());
  PoolOptions po;
  po.min_ready = pool_n;
  po.max_total = pool_n + static_cast<uint32_t>(nsandboxes) + 2;
  // As the server's pool: E2B's account `user` added, the login shell warmed.
  po.warm_up =
      "grep -q '^user:' /etc/passwd || { echo 'user:*:1000:1000::/home/user:/bin/bash' >> /etc/passwd && "
      "echo 'user:*:1000:' >> /etc/group; } && mkdir -p /home/user && chown user: /home/user && /bin/bash -l -c true";
  auto pool = rt->create_pool(po);
  if (!pool) die(fmt::format("create_pool: {}", pool.error().message));

  Child node;
  if (need_node) {
    std::string path = env_or("PATH", "/usr/bin:/bin");
    if (!node.start({"node", src + "/benchmarks/bench_serve.mjs"},
                    {"PATH=" + path, "E2B_API_URL=" + base, "E2B_SANDBOX_URL=" + base, "E2B_API_KEY=" + key},
                    g_dir + "/node.log"))
      die("cannot start node (Node.js 20+ is needed for the SDK parts; or pass --skip-sdk --skip-load)");
  }
  auto node_cmd = [&](const std::string& cmd, const char* want) {
    node.send(cmd);
    std::string l = node.line();
    if (l.rfind(want, 0) != 0) {
      std::ifstream nl(g_dir + "/node.log");
      std::string log((std::istreambuf_iterator<char>(nl)), {});
      die(fmt::format("bench_serve.mjs: {} -> {}\n{}", cmd, l.empty() ? "(no answer)" : l, log));
    }
    return l;
  };
  wait_pools(*pool, port, pool_n);

  std::vector<std::string> metrics_out;
  if (!skip_sdk) {
    std::printf("\n== SDK create -> commands.run('true') -> kill vs the C++ API (warm pools of %u)\n", pool_n);
    std::vector<double> sdk, cxx;
    auto cxx_cycle = [&]() {
      uint64_t t0 = now_ns();
      auto sb = pool->lease();
      if (!sb) die(fmt::format("lease: {}", sb.error().message));
      ExecOptions eo;
      eo.argv = {"/bin/bash", "-l", "-c", "true"};
      eo.user = "user";
      eo.cwd = "/home/user";
      auto r = sb->exec(eo);
      if (!r || r->exit_code != 0) die("exec of true failed");
      if (auto d = sb->destroy(); !d) die(fmt::format("destroy: {}", d.error().message));
      return ms_since(t0);
    };
    for (int i = 0; i < samples + 2; ++i) {  // the first two pairs warm up
      wait_pools(*pool, port, pool_n);
      double a = std::strtod(node_cmd("cycle", "cycle ").c_str() + 6, nullptr);
      wait_pools(*pool, port, pool_n);
      double b = cxx_cycle();
      if (i >= 2) {
        sdk.push_back(a);
        cxx.push_back(b);
      }
    }
    std::printf("SDK via ztee serve: p50 %.1f ms (min %.1f, p90 %.1f); C++ API: p50 %.1f ms (min %.1f, p90 %.1f); %d pairs\n",
                percentile(sdk, 0.5), minimum(sdk), percentile(sdk, 0.9), percentile(cxx, 0.5), minimum(cxx),
                percentile(cxx, 0.9), samples);
    metrics_out.push_back(fmt::format("serve_sdk_cycle_p50_ms {} {}", percentile(sdk, 0.5), percentile(cxx, 0.5)));
  }

  if (!skip_load) {
    std::printf("\n== %d clients, commands.run('echo x') on %d sandboxes, %ld s, in %d interleaved rounds\n", clients,
                nsandboxes, seconds, load_rounds);
    std::vector<double> slat, clat;
    double sel = 0, cel = 0, scpu = 0, ncpu = 0, ccpu = 0;
    uint64_t serrs = 0, cerrs_total = 0;
    double round_s = static_cast<double>(seconds) / load_rounds;
    for (int round = 0; round < load_rounds; ++round) {
      // Through the server, driven by the SDK in node.
      wait_pools(*pool, port, pool_n);
      node.send(fmt::format("load {} {} {}", clients, nsandboxes, round_s));
      std::string started = node.line();
      if (started != "started") die(fmt::format("bench_serve.mjs load: {} (see {}/node.log)", started, g_dir));
      double cpu0 = proc_cpu_s(server.pid), ncpu0 = proc_cpu_s(node.pid);
      std::string res = node.line();
      scpu += proc_cpu_s(server.pid) - cpu0;
      ncpu += proc_cpu_s(node.pid) - ncpu0;
      unsigned long errs = 0;
      double el = 0;
      int off = 0;
      if (std::sscanf(res.c_str(), "load %lu %lf %n", &errs, &el, &off) != 2)
        die(fmt::format("bench_serve.mjs load: {}", res));
      for (const char* p = res.c_str() + off; *p;) {
        char* e = nullptr;
        double v = std::strtod(p, &e);
        if (e == p) break;
        slat.push_back(v);
        p = *e == ',' ? e + 1 : e;
      }
      serrs += errs;
      sel += el;

      // The same through the C++ API.
      wait_pools(*pool, port, pool_n);
      std::vector<Sandbox> boxes;
      for (int i = 0; i < nsandboxes; ++i) {
        auto sb = pool->lease();
        if (!sb) die(fmt::format("lease: {}", sb.error().message));
        ExecOptions eo;
        eo.argv = {"/bin/bash", "-l", "-c", "echo x"};
        eo.user = "user";
        eo.cwd = "/home/user";
        (void)sb->exec(eo);  // each sandbox's first command outside the count, as on the SDK side
        boxes.push_back(*sb);
      }
      std::mutex mu;
      std::atomic<uint64_t> cerrs{0};
      double ccpu0 = self_cpu_s();
      uint64_t t0 = now_ns(), end = t0 + static_cast<uint64_t>(round_s * 1e9);
      std::vector<std::thread> ts;
      for (int c = 0; c < clients; ++c)
        ts.emplace_back([&, c] {
          Sandbox sb = boxes[static_cast<size_t>(c) % boxes.size()];
          std::vector<double> mine;
          ExecOptions eo;
          eo.argv = {"/bin/bash", "-l", "-c", "echo x"};
          eo.user = "user";
          eo.cwd = "/home/user";
          while (now_ns() < end) {
            uint64_t s = now_ns();
            auto r = sb.exec(eo);
            if (!r || r->stdout_data != "x\n") {
              ++cerrs;
              continue;
            }
            mine.push_back(ms_since(s));
          }
          std::lock_guard lk(mu);
          clat.insert(clat.end(), mine.begin(), mine.end());
        });
      for (auto& t : ts) t.join();
      cel += static_cast<double>(now_ns() - t0) / 1e9;
      ccpu += self_cpu_s() - ccpu0;
      cerrs_total += cerrs.load();
      for (auto& b : boxes) (void)b.destroy();
    }
    if (slat.empty() || clat.empty()) die("no request completed in the load phase: give it more --seconds");
    double rps = static_cast<double>(slat.size()) / sel, crps = static_cast<double>(clat.size()) / cel;
    double cpu_us = scpu * 1e6 / static_cast<double>(slat.size()), ccpu_us = ccpu * 1e6 / static_cast<double>(clat.size());
    std::printf("through ztee serve: %zu requests (%lu errors) in %.1f s: %.1f/s, p50 %.1f ms, p99 %.1f ms, "
                "server CPU %.0f µs/request (the SDK client in node: %.0f µs/request)\n",
                slat.size(), serrs, sel, rps, percentile(slat, 0.5), percentile(slat, 0.99), cpu_us,
                ncpu * 1e6 / static_cast<double>(slat.size()));
    std::printf("through the C++ API: %zu execs (%lu errors) in %.1f s: %.1f/s, p50 %.1f ms, p99 %.1f ms, process CPU %.0f µs/exec\n",
                clat.size(), cerrs_total, cel, crps, percentile(clat, 0.5), percentile(clat, 0.99), ccpu_us);
    metrics_out.push_back(fmt::format("serve_load_rps {} {}", rps, crps));
    metrics_out.push_back(fmt::format("serve_load_p50_ms {} {}", percentile(slat, 0.5), percentile(clat, 0.5)));
    metrics_out.push_back(fmt::format("serve_load_p99_ms {} {}", percentile(slat, 0.99), percentile(clat, 0.99)));
    metrics_out.push_back(fmt::format("serve_load_cpu_us_per_req {} {}", cpu_us, ccpu_us));
  }
  if (node.pid > 0) {
    node.send("quit");
    node.stop(0);
  }

  if (!skip_noop) {
    std::printf("\n== GET /healthz: ztee serve vs nginx (static file), %d connections, %d x %ld s each\n", conns, rounds, noop_s);
    // $ZTEE_BENCH_NGINX names another nginx binary.
    std::string want = env_or("ZTEE_BENCH_NGINX", ""), nginx;
    if (!want.empty()) {
      if (::access(want.c_str(), X_OK) == 0) nginx = want;
    } else {
      for (const char* p : {"/usr/sbin/nginx", "/usr/bin/nginx"})
        if (nginx.empty() && ::access(p, X_OK) == 0) nginx = p;
    }
    if (nginx.empty()) {
      std::printf("SKIP: nginx is not installed (apt-get install nginx; or $ZTEE_BENCH_NGINX): the no-op route "
                  "has no baseline, so it is not measured\n");
    } else {
      std::string nd = g_dir + "/nginx";
      std::filesystem::create_directories(nd + "/www");
      ::chmod(g_dir.c_str(), 0755);
      ::chmod(nd.c_str(), 0755);
      ::chmod((nd + "/www").c_str(), 0755);
      // The same body ztee serve answers.
      std::string body = http_get(port, "/healthz");
      std::ofstream(nd + "/www/healthz") << body;
      ::chmod((nd + "/www/healthz").c_str(), 0644);
      uint16_t nport = free_port();
      std::ofstream(nd + "/nginx.conf") << fmt::format(
          "daemon off;\nworker_processes 1;\npid {0}/nginx.pid;\nerror_log {0}/error.log;\n"
          "events {{ worker_connections 1024; }}\n"
          "http {{\n  access_log off;\n  keepalive_requests 100000000;\n  keepalive_timeout 300s;\n"
          "  client_body_temp_path {0}/tmp;\n  proxy_temp_path {0}/tmp;\n  fastcgi_temp_path {0}/tmp;\n"
          "  uwsgi_temp_path {0}/tmp;\n  scgi_temp_path {0}/tmp;\n"
          "  server {{\n    listen 127.0.0.1:{1};\n    root {0}/www;\n"
          "    location = /healthz {{ default_type application/json; }}\n  }}\n}}\n",
          nd, nport);
      Child ngx;
      if (!ngx.start({nginx, "-p", nd, "-c", nd + "/nginx.conf", "-e", nd + "/error.log"}, {}, nd + "/stderr.log"))
        die("cannot start nginx");
      int st = 0;
      for (int i = 0; i < 100 && st != 200; ++i) {
        sleep_ms(50);
        http_get(nport, "/healthz", &st);
      }
      if (st != 200) die(fmt::format("nginx did not answer GET /healthz (see {}/error.log)", nd));
      std::vector<pid_t> npids{ngx.pid};
      for (pid_t c : children_of(ngx.pid)) npids.push_back(c);
      std::vector<double> zl, nl;
      double zcpu = 0, ncpu = 0, zsec = 0, nsec = 0;
      uint64_t zn = 0, nn = 0, zerr = 0, nerr = 0;
      noop_round(port, "/healthz", conns, 0.5, {server.pid});  // warm-up, not counted
      noop_round(nport, "/healthz", conns, 0.5, npids);
      for (int r = 0; r < rounds; ++r) {
        auto z = noop_round(port, "/healthz", conns, static_cast<double>(noop_s), {server.pid});
        auto n = noop_round(nport, "/healthz", conns, static_cast<double>(noop_s), npids);
        zl.insert(zl.end(), z.lat_us.begin(), z.lat_us.end());
        nl.insert(nl.end(), n.lat_us.begin(), n.lat_us.end());
        zcpu += z.cpu_s, ncpu += n.cpu_s, zsec += z.seconds, nsec += n.seconds;
        zn += z.requests, nn += n.requests, zerr += z.errors, nerr += n.errors;
      }
      ngx.stop(SIGQUIT);
      double zrps = static_cast<double>(zn) / zsec, nrps = static_cast<double>(nn) / nsec;
      double zc = zcpu * 1e6 / static_cast<double>(std::max<uint64_t>(1, zn)),
             nc = ncpu * 1e6 / static_cast<double>(std::max<uint64_t>(1, nn));
      std::printf("ztee serve: %lu requests (%lu errors): %.0f/s, p50 %.0f µs, p99 %.0f µs, CPU %.1f µs/request\n", zn, zerr,
                  zrps, percentile(zl, 0.5), percentile(zl, 0.99), zc);
      std::printf("nginx:      %lu requests (%lu errors): %.0f/s, p50 %.0f µs, p99 %.0f µs, CPU %.1f µs/request\n", nn, nerr,
                  nrps, percentile(nl, 0.5), percentile(nl, 0.99), nc);
      metrics_out.push_back(fmt::format("serve_noop_p50_us {} {}", percentile(zl, 0.5), percentile(nl, 0.5)));
      metrics_out.push_back(fmt::format("serve_noop_rps {} {}", zrps, nrps));
      metrics_out.push_back(fmt::format("serve_noop_cpu_us_per_req {} {}", zc, nc));
    }
  }

  pool->close();
  int st = server.stop(SIGTERM);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) std::printf("warning: ztee serve did not stop cleanly (see %s)\n", server_log.c_str());
  std::printf("\n");
  for (auto& m : metrics_out) {
    char name[64];
    double v = 0, b = 0;
    std::sscanf(m.c_str(), "%63s %lf %lf", name, &v, &b);
    std::string n = name;
    print_metric(n, v, n.find("_ms") != std::string::npos ? "ms" : n.find("_us") != std::string::npos ? "us" : "1/s", b);
  }
  return 0;
}
