// ztee-bench-pool: warm pool and snapshot clones (issue 4).
//
//   lease_p50_us / _p99_us   Pool::lease from a non-empty pool (min_ready 4,
//                            max_total 8); the release (destroy) and the refill
//                            happen outside the timed part. Baseline: starting
//                            one sandbox from the same template without a pool
//                            (Runtime::create_sandbox with template_dir): the
//                            cost the pool hides.
//   clone_to_exec_p50_ms     create_sandbox(template_dir) to the first result of
//                            exec {"true"}, with a pre-spawned VMM (prespawn=1).
//                            Baseline: a cold boot to the first `true` result.
//                            Also printed: the same with prespawn=0.
//   clone_private_mib        N (32) idle clones alive at once: mean private host
//                            memory per clone VMM beyond the template's clean
//                            page-cache pages (/proc/<pid>/smaps). Baseline: the
//                            same figure for one cold-booted sandbox.
//   churn_per_s / churn_p99_ms  lease -> exec true -> destroy through a pool
//                            (min_ready 2, max_total 6, refill_concurrency 2).
//                            Baseline: create_sandbox(template_dir) -> exec ->
//                            destroy without a pool.
//   (printed, not a metric)  the first `python3 -c pass` after a lease from a
//                            pool with the default warm-up and from one with
//                            PoolOptions::warm_up = that command.
//
// Phases run in the order clone-to-exec, lease, memory, churn, then the
// warm-up comparison (printed, not a metric); measured and
// baseline samples are interleaved within each phase. The template is made
// once (a cold-booted snapshottable sandbox, snapshotted) in the runtime's
// state dir and removed at exit.
//
// Usage: ztee-bench-pool [--leases N] [--lease-baselines N] [--clone-samples N]
//        [--cold-samples N] [--p0-samples N] [--clones N] [--seconds S]
//        [--direct-seconds S] [--skip-memory] [--warm-samples N]
#include <ztee/ztee.hpp>

#include <dirent.h>
#include <sys/resource.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "bench_common.hpp"

using namespace ztee;
using namespace ztee::bench;

namespace {

std::string g_template;  // removed at exit

void remove_template() {
  if (g_template.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(g_template, ec);
}

double cpu_s(int who) {
  struct rusage ru{};
  ::getrusage(who, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

void sleep_ms(long ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

std::string loadavg() {
  double l[3] = {0, 0, 0};
  if (::getloadavg(l, 3) < 0) return "?";
  return fmt::format("{:.2f} {:.2f} {:.2f}", l[0], l[1], l[2]);
}

void phase(const char* name) {
  std::printf("\n== %s (load average %s)\n", name, loadavg().c_str());
  std::fflush(stdout);
}

void check_true(Sandbox& sb, const char* what) {
  ExecOptions o;
  o.argv = {"true"};
  auto r = sb.exec(o);
  if (!r) die(fmt::format("{}: exec true in {}: {}", what, sb.id(), r.error().message));
  if (r->exit_code != 0) die(fmt::format("{}: exec true in {}: exit code {}", what, sb.id(), r->exit_code));
}

double destroy_ms(Sandbox& sb, const char* what) {
  uint64_t t0 = now_ns();
  auto d = sb.destroy();
  if (!d) die(fmt::format("{}: destroy {}: {}", what, sb.id(), d.error().message));
  return ms_since(t0);
}

void summary(const char* what, const std::vector<double>& v, const char* unit) {
  if (v.empty()) return;
  std::printf("  %-44s p50 %9.2f  p99 %9.2f  min %9.2f  max %9.2f %s  (n=%zu)\n", what, percentile(v, 0.5),
              percentile(v, 0.99), minimum(v), maximum(v), unit, v.size());
}

// Waits until the pool holds `ready` READY sandboxes and starts none.
void wait_settled(Pool& pool, uint32_t ready, const char* what) {
  uint64_t t0 = now_ns();
  for (;;) {
    PoolStats s = pool.stats();
    if (s.ready >= ready && s.starting == 0) return;
    if (s.backing_off || ms_since(t0) > 60000)
      die(fmt::format("{}: pool did not refill to {} ready within 60 s (ready {}, starting {}, failed {}, last error: "
                      "{})",
                      what, ready, s.ready, s.starting, s.failed, s.last_error));
    sleep_ms(5);
  }
}

void print_pool_stats(const PoolStats& s) {
  static const char* buckets[8] = {"<10us", "<100us", "<1ms", "<10ms", "<100ms", "<1s", "<10s", ">=10s"};
  std::printf("  pool stats: created %llu, failed %llu, leases %llu, lease timeouts %llu; lease-wait histogram:",
              static_cast<unsigned long long>(s.created), static_cast<unsigned long long>(s.failed),
              static_cast<unsigned long long>(s.leases), static_cast<unsigned long long>(s.lease_timeouts));
  for (int i = 0; i < 8; ++i)
    if (s.lease_wait_hist[i]) std::printf(" %s:%llu", buckets[i], static_cast<unsigned long long>(s.lease_wait_hist[i]));
  std::printf("\n");
  if (s.failed) die(fmt::format("pool: {} sandboxes failed to start; last error: {}", s.failed, s.last_error));
}

// ---- clone to first exec ---------------------------------------------------

struct Split {
  double create_ms, exec_ms, guest_ms;  // guest_ms: the exec's own duration_us, as the guest reports it
  double total() const { return create_ms + exec_ms; }
};

Split to_first_exec(Runtime& rt, const SandboxOptions& so, const char* what) {
  ExecOptions o;
  o.argv = {"true"};
  uint64_t t0 = now_ns();
  auto sb = rt.create_sandbox(so);
  uint64_t t1 = now_ns();
  if (!sb) die(fmt::format("{}: create_sandbox: {}", what, sb.error().message));
  auto r = sb->exec(o);
  uint64_t t2 = now_ns();
  if (!r) die(fmt::format("{}: exec true: {}", what, r.error().message));
  if (r->exit_code != 0) die(fmt::format("{}: exec true: exit code {}", what, r->exit_code));
  destroy_ms(*sb, what);
  return {static_cast<double>(t1 - t0) / 1e6, static_cast<double>(t2 - t1) / 1e6,
          static_cast<double>(r->duration_us) / 1e3};
}

// ---- memory -----------------------------------------------------------------

struct Mem {
  double rss = 0, pss = 0, priv_clean = 0, priv_dirty = 0, shared_clean = 0, shared_dirty = 0;
  double tpl_priv_clean = 0, tpl_priv_dirty = 0, tpl_rss = 0;  // the template memory file's mapping
  double anon = 0;
  double priv() const { return priv_clean + priv_dirty; }
  // Private beyond the template's clean page-cache pages (pages of the
  // template file that only this process happens to map count as
  // Private_Clean but are shared page cache, not a per-clone copy).
  double priv_beyond_template() const { return priv() - tpl_priv_clean; }
};

// Sums /proc/<pid>/smaps (kB) per field; fields of mappings of files under
// `tpl_dir` (or of /template/mem, its path inside a VMM's jail) are also
// summed apart.
Mem read_smaps(int pid, const std::string& tpl_dir) {
  std::ifstream in(fmt::format("/proc/{}/smaps", pid));
  if (!in) die(fmt::format("cannot read /proc/{}/smaps", pid));
  Mem m;
  std::string line;
  bool in_tpl = false;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    // A mapping header starts with a hex range "start-end perms ...".
    size_t colon = line.find(':');
    size_t dash = line.find('-');
    if (dash != std::string::npos && (colon == std::string::npos || dash < colon) &&
        std::isxdigit(static_cast<unsigned char>(line[0]))) {
      // A jailed VMM names the file by its path inside the jail.
      in_tpl = !tpl_dir.empty() && (line.find(tpl_dir + "/") != std::string::npos || line.ends_with(" /template/mem"));
      continue;
    }
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    double kb = std::strtod(line.c_str() + colon + 1, nullptr);
    double mib = kb / 1024.0;
    if (key == "Rss") {
      m.rss += mib;
      if (in_tpl) m.tpl_rss += mib;
    } else if (key == "Pss") {
      m.pss += mib;
    } else if (key == "Private_Clean") {
      m.priv_clean += mib;
      if (in_tpl) m.tpl_priv_clean += mib;
    } else if (key == "Private_Dirty") {
      m.priv_dirty += mib;
      if (in_tpl) m.tpl_priv_dirty += mib;
    } else if (key == "Shared_Clean") {
      m.shared_clean += mib;
    } else if (key == "Shared_Dirty") {
      m.shared_dirty += mib;
    } else if (key == "Anonymous") {
      m.anon += mib;
    }
  }
  return m;
}

// The rollup figures, as the brief asks for them (cross-check of read_smaps).
std::map<std::string, double> read_rollup(int pid) {
  std::ifstream in(fmt::format("/proc/{}/smaps_rollup", pid));
  if (!in) die(fmt::format("cannot read /proc/{}/smaps_rollup", pid));
  std::map<std::string, double> r;
  std::string line;
  while (std::getline(in, line)) {
    size_t colon = line.find(':');
    if (colon == std::string::npos || line.find("kB") == std::string::npos) continue;
    r[line.substr(0, colon)] = std::strtod(line.c_str() + colon + 1, nullptr) / 1024.0;
  }
  return r;
}

double mem_available_mib() {
  std::ifstream in("/proc/meminfo");
  std::string k;
  double v;
  std::string unit;
  while (in >> k >> v >> unit)
    if (k == "MemAvailable:") return v / 1024.0;
  return NAN;
}

void print_mem(const char* what, const Mem& m) {
  std::printf("  %-22s Rss %7.1f  Pss %7.1f  Private %7.1f (clean %6.1f dirty %6.1f)  Shared_Clean %7.1f  "
              "Anonymous %7.1f  template-file map: Rss %6.1f, Private_Clean %6.1f, Private_Dirty %6.1f  "
              "=> private beyond template %6.1f MiB\n",
              what, m.rss, m.pss, m.priv(), m.priv_clean, m.priv_dirty, m.shared_clean, m.anon, m.tpl_rss,
              m.tpl_priv_clean, m.tpl_priv_dirty, m.priv_beyond_template());
}

// The metric line of bench_common.hpp, with the ratio in significant digits
// (lease / clone start is ~1e-4: three decimals would print 0.000).
void metric(std::string_view name, double value, std::string_view unit, std::optional<double> baseline) {
  std::string b = "null", r = "null";
  if (baseline && *baseline > 0 && std::isfinite(*baseline)) {
    b = fmt::format("{:.3f}", *baseline);
    r = fmt::format("{:.4g}", value / *baseline);
  }
  std::fputs(fmt::format("{{\"metric\": \"{}\", \"value\": {:.3f}, \"unit\": \"{}\", \"baseline\": {}, \"ratio\": {}}}\n",
                         name, value, unit, b, r)
                 .c_str(),
             stdout);
}

// The mappings of a VMM with the most private memory (where the MiB go).
void print_top_mappings(int pid, const char* what, int n) {
  std::ifstream in(fmt::format("/proc/{}/smaps", pid));
  struct Map {
    std::string name;
    double size = 0, priv = 0, rss = 0;
  };
  std::vector<Map> maps;
  std::string line;
  while (std::getline(in, line)) {
    size_t colon = line.find(':');
    size_t dash = line.find('-');
    if (!line.empty() && dash != std::string::npos && (colon == std::string::npos || dash < colon) &&
        std::isxdigit(static_cast<unsigned char>(line[0]))) {
      Map m;
      std::istringstream ls(line);
      std::string range, perms, off, dev, inode, path;
      ls >> range >> perms >> off >> dev >> inode;
      std::getline(ls, path);
      size_t p = path.find_first_not_of(' ');
      m.name = perms + " " + (p == std::string::npos ? "[anon]" : path.substr(p));
      maps.push_back(m);
      continue;
    }
    if (maps.empty() || colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    double mib = std::strtod(line.c_str() + colon + 1, nullptr) / 1024.0;
    if (key == "Size") maps.back().size = mib;
    if (key == "Rss") maps.back().rss = mib;
    if (key == "Private_Clean" || key == "Private_Dirty") maps.back().priv += mib;
  }
  std::sort(maps.begin(), maps.end(), [](const Map& a, const Map& b) { return a.priv > b.priv; });
  std::printf("  %s: largest private mappings (MiB):\n", what);
  for (int i = 0; i < n && i < static_cast<int>(maps.size()); ++i)
    std::printf("    private %7.1f  rss %7.1f  size %8.1f  %s\n", maps[i].priv, maps[i].rss, maps[i].size,
                maps[i].name.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  Args args(argc, argv,
            "ztee-bench-pool [--leases N] [--lease-baselines N] [--clone-samples N]\n"
            "       [--cold-samples N] [--p0-samples N] [--clones N] [--seconds S]\n"
            "       [--direct-seconds S] [--skip-memory] [--warm-samples N]");
  const long leases = args.num("--leases", 30);
  const long lease_baselines = args.num("--lease-baselines", 6);
  const long clone_samples = args.num("--clone-samples", 10);
  const long cold_samples = args.num("--cold-samples", 3);
  const long p0_samples = args.num("--p0-samples", 5);
  const long clones = args.num("--clones", 32);
  const long churn_s = args.num("--seconds", 20);
  const long direct_s = args.num("--direct-seconds", 10);
  const bool skip_memory = args.flag("--skip-memory");
  const long warm_samples = args.num("--warm-samples", 3);
  args.finish();
  if (leases < 2 || lease_baselines < 1 || clone_samples < 1 || cold_samples < 1 || p0_samples < 0 || clones < 1 ||
      churn_s < 2 || direct_s < 1 || warm_samples < 0)
    die("bad arguments: counts must be >= 1 (--leases >= 2), seconds >= 2");
  const uint64_t t_start = now_ns();

  auto rtr = Runtime::create();
  if (!rtr) die(fmt::format("Runtime::create: {}", rtr.error().message));
  Runtime rt = std::move(*rtr);
  RuntimeOptions o0;
  o0.prespawn = 0;
  auto rt0r = Runtime::create(o0);
  if (!rt0r) die(fmt::format("Runtime::create (prespawn=0): {}", rt0r.error().message));
  Runtime rt0 = std::move(*rt0r);
  std::printf("backend: %s\nimage: %s\nstate dir: %s\nload average at start: %s\n", rt.backend_description().c_str(),
              rt.options().image_dir.c_str(), rt.options().state_dir.c_str(), loadavg().c_str());

  // ---- setup: image hash (first cold boot), template ----
  phase("setup");
  {
    uint64_t t0 = now_ns();
    auto sb = rt.create_sandbox();
    if (!sb) die(fmt::format("warm-up cold boot: {}", sb.error().message));
    std::printf("  warm-up cold boot (includes the runtime's one-time image hash): %.0f ms\n", ms_since(t0));
    check_true(*sb, "warm-up");
    destroy_ms(*sb, "warm-up");
  }
  g_template = fmt::format("{}/bench-pool-template-{}", rt.options().state_dir, ::getpid());
  std::atexit(remove_template);
  {
    SandboxOptions so;
    so.snapshottable = true;
    uint64_t t0 = now_ns();
    auto sb = rt.create_sandbox(so);
    if (!sb) die(fmt::format("template boot: {}", sb.error().message));
    double boot = ms_since(t0);
    check_true(*sb, "template");
    uint64_t t1 = now_ns();
    auto s = sb->snapshot(g_template);
    if (!s) die(fmt::format("snapshot into {}: {}", g_template, s.error().message));
    std::printf("  template: snapshottable boot %.0f ms, snapshot %.0f ms -> %s\n", boot, ms_since(t1),
                g_template.c_str());
    for (auto& e : std::filesystem::directory_iterator(g_template))
      if (e.is_regular_file())
        std::printf("    %-16s %10.1f MiB\n", e.path().filename().c_str(), static_cast<double>(e.file_size()) / 1048576.0);
  }
  SandboxOptions tso;
  tso.template_dir = g_template;
  for (Runtime* r : {&rt, &rt0}) {  // one-time hash of the template memory, per runtime
    uint64_t t0 = now_ns();
    Split s = to_first_exec(*r, tso, "warm-up clone");
    std::printf("  warm-up clone (%s; includes hashing the template memory once per runtime): create %.0f ms, first "
                "exec %.0f ms, total %.0f ms\n",
                r == &rt ? "prespawn=1" : "prespawn=0", s.create_ms, s.exec_ms, ms_since(t0));
  }

  // ---- clone to first exec ----
  phase("clone to first exec");
  std::vector<Split> pre, p0, cold;
  for (long i = 0; i < clone_samples; ++i) {
    sleep_ms(1000);  // the replacement pre-spawned VMM is up; the machine idle
    Split s = to_first_exec(rt, tso, "clone (prespawn=1)");
    pre.push_back(s);
    std::printf("  %2ld: clone prespawn=1 %6.1f ms (create %6.1f + exec %5.1f)", i + 1, s.total(), s.create_ms,
                s.exec_ms);
    if (i < p0_samples) {
      sleep_ms(300);
      Split z = to_first_exec(rt0, tso, "clone (prespawn=0)");
      p0.push_back(z);
      std::printf("  | prespawn=0 %6.1f ms (create %6.1f + exec %5.1f)", z.total(), z.create_ms, z.exec_ms);
    }
    // Spread the cold boots over the run.
    if (static_cast<long>(cold.size()) < cold_samples &&
        i * cold_samples / clone_samples >= static_cast<long>(cold.size())) {
      sleep_ms(300);
      Split c = to_first_exec(rt, SandboxOptions{}, "cold boot");
      cold.push_back(c);
      std::printf("  | cold %7.1f ms (create %7.1f + exec %5.1f)", c.total(), c.create_ms, c.exec_ms);
    }
    std::printf("\n");
    std::fflush(stdout);
  }
  auto totals = [](const std::vector<Split>& v) {
    std::vector<double> t;
    for (auto& s : v) t.push_back(s.total());
    return t;
  };
  auto creates = [](const std::vector<Split>& v) {
    std::vector<double> t;
    for (auto& s : v) t.push_back(s.create_ms);
    return t;
  };
  auto execs = [](const std::vector<Split>& v) {
    std::vector<double> t;
    for (auto& s : v) t.push_back(s.exec_ms);
    return t;
  };
  summary("clone prespawn=1: create -> first true", totals(pre), "ms");
  summary("  of which create_sandbox (restore+RESEED)", creates(pre), "ms");
  summary("  of which first exec true", execs(pre), "ms");
  {
    std::vector<double> g;
    for (auto& s : pre) g.push_back(s.guest_ms);
    summary("  first exec: guest-reported duration", g, "ms");
  }
  summary("clone prespawn=0: create -> first true", totals(p0), "ms");
  summary("  of which create_sandbox", creates(p0), "ms");
  summary("  of which first exec true", execs(p0), "ms");
  summary("cold boot: create -> first true", totals(cold), "ms");
  summary("  of which create_sandbox (boot)", creates(cold), "ms");
  summary("  of which first exec true", execs(cold), "ms");
  const double c2e = percentile(totals(pre), 0.5), cold50 = percentile(totals(cold), 0.5);
  std::printf("  ratio clone/cold p50: %.3f (target <= 0.05); clone p50 %.1f ms (target <= 60 ms): %s\n", c2e / cold50,
              c2e, c2e <= 60 ? "met" : "NOT met");

  // ---- lease ----
  phase("lease from a non-empty pool");
  std::vector<double> lease_us, base_us;
  {
    PoolOptions po;
    po.sandbox = tso;
    po.min_ready = 4;
    po.max_total = 8;
    po.refill_concurrency = 2;
    uint64_t t0 = now_ns();
    auto pr = rt.create_pool(po);
    if (!pr) die(fmt::format("create_pool: {}", pr.error().message));
    Pool pool = std::move(*pr);
    wait_settled(pool, po.min_ready, "lease pool fill");
    std::printf("  pool filled to %u ready in %.0f ms\n", po.min_ready, ms_since(t0));
    std::vector<double> refill_ms;
    long lease_blocked = 0, lease_preempted = 0;
    long every = std::max(1L, leases / lease_baselines);
    for (long i = 0; i < leases; ++i) {
      PoolStats before = pool.stats();
      if (before.ready < po.min_ready) die("lease: pool not full before a lease");
      struct rusage ru0{}, ru1{};
      ::getrusage(RUSAGE_THREAD, &ru0);
      uint64_t a = now_ns();
      auto sb = pool.lease(5000);
      uint64_t b = now_ns();
      ::getrusage(RUSAGE_THREAD, &ru1);
      if (!sb) die(fmt::format("lease {}: {}", i + 1, sb.error().message));
      lease_us.push_back(static_cast<double>(b - a) / 1e3);
      long vol = ru1.ru_nvcsw - ru0.ru_nvcsw, invol = ru1.ru_nivcsw - ru0.ru_nivcsw;
      if (vol) ++lease_blocked;
      if (invol) ++lease_preempted;
      if (lease_us.back() > 500)
        std::printf("  lease %ld took %.0f us: %ld voluntary (blocked) and %ld involuntary (preempted) context switches\n",
                    i + 1, lease_us.back(), vol, invol);
      if (sb->state() != SandboxState::kReady) die(fmt::format("lease {}: sandbox not READY", i + 1));
      check_true(*sb, "leased sandbox");
      destroy_ms(*sb, "leased sandbox");
      uint64_t r0 = now_ns();
      wait_settled(pool, po.min_ready, "lease refill");
      refill_ms.push_back(ms_since(r0));
      if (i % every == every - 1 && static_cast<long>(base_us.size()) < lease_baselines) {
        sleep_ms(1000);  // as for the clone figure: the pre-spawned VMM is ready, the machine idle
        uint64_t c = now_ns();
        auto bs = rt.create_sandbox(tso);
        uint64_t d = now_ns();
        if (!bs) die(fmt::format("lease baseline: create_sandbox: {}", bs.error().message));
        base_us.push_back(static_cast<double>(d - c) / 1e3);
        destroy_ms(*bs, "lease baseline");
        wait_settled(pool, po.min_ready, "lease baseline");
      }
    }
    summary("Pool::lease (non-empty pool)", lease_us, "us");
    summary("create_sandbox(template_dir) (baseline)", base_us, "us");
    summary("refill after release (exec+destroy untimed)", refill_ms, "ms");
    std::printf("  leases that blocked (voluntary switch, e.g. on the pool mutex): %ld; preempted: %ld (of %ld)\n",
                lease_blocked, lease_preempted, leases);
    PoolStats s = pool.stats();
    print_pool_stats(s);
    if (s.leases != static_cast<uint64_t>(leases)) die(fmt::format("lease: pool counted {} leases", s.leases));
    pool.close();
  }

  // ---- memory ----
  double mem_metric = NAN, mem_base = NAN;
  if (!skip_memory) {
    phase(fmt::format("memory of {} idle clones", clones).c_str());
    double avail0 = mem_available_mib();
    auto cold_sb = rt.create_sandbox();
    if (!cold_sb) die(fmt::format("memory baseline: cold boot: {}", cold_sb.error().message));
    check_true(*cold_sb, "memory baseline");
    double avail1 = mem_available_mib();
    std::vector<Sandbox> live(static_cast<size_t>(clones));
    std::atomic<long> next{0};
    std::mutex err_mu;
    std::string err;
    uint64_t t0 = now_ns();
    std::vector<std::thread> th;
    for (int k = 0; k < 4; ++k)
      th.emplace_back([&] {
        for (long i; (i = next.fetch_add(1)) < clones;) {
          auto sb = rt.create_sandbox(tso);
          if (!sb) {
            std::lock_guard lk(err_mu);
            err = sb.error().message;
            return;
          }
          ExecOptions o;
          o.argv = {"true"};
          auto r = sb->exec(o);
          if (!r || r->exit_code != 0) {
            std::lock_guard lk(err_mu);
            err = r ? fmt::format("exit code {}", r->exit_code) : r.error().message;
            return;
          }
          live[static_cast<size_t>(i)] = std::move(*sb);
        }
      });
    for (auto& t : th) t.join();
    if (!err.empty()) die(fmt::format("memory: clone failed: {}", err));
    double create_all = ms_since(t0);
    std::vector<int> pids;
    for (auto& sb : live) {
      if (!sb || sb.state() != SandboxState::kReady || sb.vmm_pid() <= 0) die("memory: a clone is not READY");
      pids.push_back(sb.vmm_pid());
    }
    std::sort(pids.begin(), pids.end());
    if (std::unique(pids.begin(), pids.end()) != pids.end()) die("memory: two clones share a VMM pid");
    std::printf("  %ld clones created (4 threads, each ran one `true`) in %.0f ms; sleeping 2 s\n", clones, create_all);
    sleep_ms(2000);
    double avail2 = mem_available_mib();
    std::vector<Mem> ms;
    double roll_priv = 0, roll_pss = 0, roll_rss = 0;
    for (auto& sb : live) {
      ms.push_back(read_smaps(sb.vmm_pid(), g_template));
      auto r = read_rollup(sb.vmm_pid());
      roll_priv += r["Private_Clean"] + r["Private_Dirty"];
      roll_pss += r["Pss"];
      roll_rss += r["Rss"];
    }
    Mem cold_m = read_smaps(cold_sb->vmm_pid(), "");
    auto cold_roll = read_rollup(cold_sb->vmm_pid());
    Mem mean;
    for (auto& m : ms) {
      mean.rss += m.rss / clones;
      mean.pss += m.pss / clones;
      mean.priv_clean += m.priv_clean / clones;
      mean.priv_dirty += m.priv_dirty / clones;
      mean.shared_clean += m.shared_clean / clones;
      mean.shared_dirty += m.shared_dirty / clones;
      mean.anon += m.anon / clones;
      mean.tpl_rss += m.tpl_rss / clones;
      mean.tpl_priv_clean += m.tpl_priv_clean / clones;
      mean.tpl_priv_dirty += m.tpl_priv_dirty / clones;
    }
    std::vector<double> pb;
    for (auto& m : ms) pb.push_back(m.priv_beyond_template());
    std::printf("  per-VMM figures in MiB (/proc/<pid>/smaps):\n");
    print_mem("clone (mean)", mean);
    print_mem("cold-booted sandbox", cold_m);
    summary("clone private beyond template", pb, "MiB");
    print_top_mappings(live[0].vmm_pid(), "first clone", 6);
    print_top_mappings(cold_sb->vmm_pid(), "cold-booted sandbox", 6);
    std::printf("  smaps_rollup cross-check: clone mean Private %.1f, Pss %.1f, Rss %.1f MiB; cold Private %.1f, Pss "
                "%.1f, Rss %.1f MiB\n",
                roll_priv / clones, roll_pss / clones, roll_rss / clones,
                cold_roll["Private_Clean"] + cold_roll["Private_Dirty"], cold_roll["Pss"], cold_roll["Rss"]);
    std::printf("  MemAvailable: cold sandbox took %.1f MiB; %ld clones took %.1f MiB (%.1f MiB per clone, incl. "
                "kernel page tables and the page cache they pulled in)\n",
                avail0 - avail1, clones, avail1 - avail2, (avail1 - avail2) / clones);
    mem_metric = mean.priv_beyond_template();
    mem_base = cold_m.priv();
    std::printf("  clone_private_mib %.1f MiB (target <= 16): %s\n", mem_metric, mem_metric <= 16 ? "met" : "NOT met");
    uint64_t d0 = now_ns();
    for (auto& sb : live) destroy_ms(sb, "memory clone");
    std::printf("  destroyed %ld clones in %.0f ms\n", clones, ms_since(d0));
    destroy_ms(*cold_sb, "memory baseline");
  }

  // ---- churn ----
  phase("churn");
  std::vector<double> pool_cycle, direct_cycle, churn_lease, churn_exec, churn_destroy;
  double pool_secs = 0, direct_secs = 0;
  {
    PoolOptions po;
    po.sandbox = tso;
    po.min_ready = 2;
    po.max_total = 6;
    po.refill_concurrency = 2;
    auto pr = rt.create_pool(po);
    if (!pr) die(fmt::format("create_pool (churn): {}", pr.error().message));
    Pool pool = std::move(*pr);
    wait_settled(pool, po.min_ready, "churn pool fill");
    ExecOptions tr;
    tr.argv = {"true"};
    // Two rounds: pool half, direct half, pool half, direct half.
    for (int round = 0; round < 2; ++round) {
      const double pool_budget = static_cast<double>(churn_s) * 1e3 / 2, direct_budget = static_cast<double>(direct_s) * 1e3 / 2;
      double cs0 = cpu_s(RUSAGE_SELF), cc0 = cpu_s(RUSAGE_CHILDREN);
      uint64_t s0 = now_ns();
      long n = 0;
      while (ms_since(s0) < pool_budget) {
        uint64_t a = now_ns();
        auto sb = pool.lease(30000);
        if (!sb) die(fmt::format("churn: lease: {}", sb.error().message));
        uint64_t b = now_ns();
        auto r = sb->exec(tr);
        if (!r) die(fmt::format("churn: exec: {}", r.error().message));
        if (r->exit_code != 0) die(fmt::format("churn: exec true: exit code {}", r->exit_code));
        uint64_t c = now_ns();
        destroy_ms(*sb, "churn");
        uint64_t d = now_ns();
        pool_cycle.push_back(static_cast<double>(d - a) / 1e6);
        churn_lease.push_back(static_cast<double>(b - a) / 1e6);
        churn_exec.push_back(static_cast<double>(c - b) / 1e6);
        churn_destroy.push_back(static_cast<double>(d - c) / 1e6);
        ++n;
      }
      double ps = ms_since(s0) / 1e3;
      pool_secs += ps;
      double cs1 = cpu_s(RUSAGE_SELF), cc1 = cpu_s(RUSAGE_CHILDREN);
      std::printf("  round %d pool:   %4ld cycles in %.1f s = %.2f/s (load %s); CPU per cycle: this process %.0f ms, "
                  "reaped VMMs %.0f ms\n",
                  round + 1, n, ps, n / ps, loadavg().c_str(), (cs1 - cs0) * 1e3 / n, (cc1 - cc0) * 1e3 / n);
      // Let the pool finish refilling so it does not compete with the direct half.
      wait_settled(pool, po.min_ready, "churn settle");
      cs0 = cpu_s(RUSAGE_SELF);
      cc0 = cpu_s(RUSAGE_CHILDREN);
      s0 = now_ns();
      n = 0;
      while (ms_since(s0) < direct_budget) {
        uint64_t a = now_ns();
        auto sb = rt.create_sandbox(tso);
        if (!sb) die(fmt::format("churn baseline: create_sandbox: {}", sb.error().message));
        auto r = sb->exec(tr);
        if (!r) die(fmt::format("churn baseline: exec: {}", r.error().message));
        if (r->exit_code != 0) die(fmt::format("churn baseline: exec true: exit code {}", r->exit_code));
        destroy_ms(*sb, "churn baseline");
        direct_cycle.push_back(ms_since(a));
        ++n;
      }
      double ds = ms_since(s0) / 1e3;
      direct_secs += ds;
      cs1 = cpu_s(RUSAGE_SELF);
      cc1 = cpu_s(RUSAGE_CHILDREN);
      std::printf("  round %d direct: %4ld cycles in %.1f s = %.2f/s (load %s); CPU per cycle: this process %.0f ms, "
                  "reaped VMMs %.0f ms\n",
                  round + 1, n, ds, n / ds, loadavg().c_str(), (cs1 - cs0) * 1e3 / n, (cc1 - cc0) * 1e3 / n);
    }
    summary("pool cycle (lease+exec+destroy)", pool_cycle, "ms");
    summary("  lease (incl. waiting for a refill)", churn_lease, "ms");
    summary("  exec true", churn_exec, "ms");
    summary("  destroy", churn_destroy, "ms");
    summary("direct cycle (create+exec+destroy)", direct_cycle, "ms");
    print_pool_stats(pool.stats());
    pool.close();
  }
  const double churn_rate = static_cast<double>(pool_cycle.size()) / pool_secs;
  const double direct_rate = static_cast<double>(direct_cycle.size()) / direct_secs;
  std::printf("  churn %.2f/s (target >= 10/s): %s; direct %.2f/s\n", churn_rate, churn_rate >= 10 ? "met" : "NOT met",
              direct_rate);

  // ---- PoolOptions::warm_up (printed, not a metric) ----
  if (warm_samples > 0) {
    phase("first python3 run after a lease, by warm-up");
    // Two pools of the same template: the default warm-up (`true`) and one
    // that runs what the holder will run. Leases alternate between them.
    const std::string py = "python3 -c pass";
    std::vector<double> first_default, first_warmed;
    PoolOptions pd;
    pd.sandbox = tso;
    pd.min_ready = 1;
    pd.max_total = 1;
    PoolOptions pw = pd;
    pw.warm_up = py;
    auto pdr = rt.create_pool(pd);
    auto pwr = rt.create_pool(pw);
    if (!pdr || !pwr) die(fmt::format("create_pool (warm-up): {}", !pdr ? pdr.error().message : pwr.error().message));
    for (long i = 0; i < warm_samples; ++i) {
      for (Pool* p : {&*pdr, &*pwr}) {
        wait_settled(*p, 1, "warm-up pool fill");
        auto sb = p->lease(120000);
        if (!sb) die(fmt::format("lease (warm-up pool): {}", sb.error().message));
        uint64_t t0 = now_ns();
        auto r = sb->run(py);
        double ms = ms_since(t0);
        if (!r || r->exit_code != 0) die(fmt::format("{} after a lease failed", py));
        (p == &*pdr ? first_default : first_warmed).push_back(ms);
        destroy_ms(*sb, "warm-up lease");
      }
    }
    summary("first `python3 -c pass`, warm_up default", first_default, "ms");
    summary("first `python3 -c pass`, warm_up = it", first_warmed, "ms");
    std::printf("  ratio warmed / default p50: %.3f (not a metric)\n",
                percentile(first_warmed, 0.5) / percentile(first_default, 0.5));
  }

  const double l50 = percentile(lease_us, 0.5), l99 = percentile(lease_us, 0.99);
  const double b50 = percentile(base_us, 0.5);
  std::printf("\nlease p50 %.1f us (target <= 50): %s; p99 %.1f us (target <= 500): %s\n", l50,
              l50 <= 50 ? "met" : "NOT met", l99, l99 <= 500 ? "met" : "NOT met");
  std::printf("total run time %.1f s, load average at end %s\n\n", ms_since(t_start) / 1e3, loadavg().c_str());
  metric("lease_p50_us", l50, "us", b50);
  metric("lease_p99_us", l99, "us", percentile(base_us, 0.99));
  metric("clone_to_exec_p50_ms", c2e, "ms", cold50);
  if (!skip_memory) metric("clone_private_mib", mem_metric, "MiB", mem_base);
  metric("churn_per_s", churn_rate, "1/s", direct_rate);
  metric("churn_p99_ms", percentile(pool_cycle, 0.99), "ms", percentile(direct_cycle, 0.99));
  return 0;
}
