// ztee-bench-dlp: throughput of the output DLP scanner.
//
// Generates a mixed log (log lines, JSON records, code, base64 runs under
// 4 KiB, with findings -- e-mails, cards, IBANs, SSNs, phones, AWS and
// GitHub tokens, JWTs -- planted about every 2 KiB), scans it streamed in
// 4 KiB and 64 KiB chunks with the default detector set (best of --runs),
// and compares with a baseline measured in the same run: Python's `re`
// (/usr/bin/python3) running the same patterns and validators over the same
// bytes (benchmarks/bench_dlp_baseline.py; only its scan is timed). Also
// reports the default detectors plus the shipped injection rules. The
// metrics are the best run; the median is printed beside it. Each figure is
// given twice: per wall-clock second, and per CPU-second of the scanning
// thread (CLOCK_THREAD_CPUTIME_ID; Python: time.thread_time()), which is
// what "per core" means and what a busy shared machine distorts least.
//
// Usage: ztee-bench-dlp [--mib N (256)] [--runs N (3)] [--no-baseline]
//                       [--detectors a,b,... (the default set; a subset shows
//                       what each costs, e.g. card,iban,ssn)]
//                       [--save PATH (keep the generated log, for profiling)]
//                       [--exec-mib N (0: none; a streamed exec of N MiB of the log
//                       with DLP against one without; root and the guest image)]
// No VM, no root, unless --exec-mib.
#include <ztee/dlp.hpp>

#include <ztee/ztee.hpp>

#include "bench_common.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

using namespace ztee;
using namespace ztee::bench;

namespace {

struct Rng {
  uint64_t s;
  uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  size_t below(size_t n) { return static_cast<size_t>(next() % n); }
};

const char kAlnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void rand_chars(Rng& r, std::string& out, const char* alphabet, size_t alen, size_t n) {
  for (size_t i = 0; i < n; ++i) out += alphabet[r.below(alen)];
}

std::string luhn_card(Rng& r, const std::string& prefix, size_t len) {
  std::string s = prefix;
  while (s.size() < len - 1) s += static_cast<char>('0' + r.below(10));
  int sum = 0;
  bool dbl = true;
  for (size_t i = s.size(); i-- > 0;) {
    int v = s[i] - '0';
    if (dbl) v = v * 2 > 9 ? v * 2 - 9 : v * 2;
    sum += v;
    dbl = !dbl;
  }
  s += static_cast<char>('0' + (10 - sum % 10) % 10);
  return s;
}

std::string finding(Rng& r, int kind) {
  std::string s;
  switch (kind) {
    case 0: return fmt::format("user{}@example{}.com", r.below(100000), r.below(100));
    case 1: {
      std::string c = luhn_card(r, "4", 16);
      return c.substr(0, 4) + " " + c.substr(4, 4) + " " + c.substr(8, 4) + " " + c.substr(12, 4);
    }
    case 2: return luhn_card(r, "5" + std::to_string(1 + r.below(5)), 16);
    case 3: {  // DE IBAN with a computed check
      std::string bban;
      for (int i = 0; i < 18; ++i) bban += static_cast<char>('0' + r.below(10));
      std::string t = bban + "131400";  // "DE00" rearranged: D=13 E=14
      int rem = 0;
      for (char c : t) rem = (rem * 10 + (c - '0')) % 97;
      return fmt::format("DE{:02d}{}", 98 - rem, bban);
    }
    case 4: return fmt::format("{:03d}-{:02d}-{:04d}", 100 + r.below(500), 1 + r.below(98), 1 + r.below(9998));
    case 5: return fmt::format("({}) 555-{:04d}", 200 + r.below(700), r.below(10000));
    case 6: s = "AKIA"; rand_chars(r, s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 32, 16); return s;
    case 7: s = "ghp_"; rand_chars(r, s, kAlnum, 62, 36); return s;
    default:
      s = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwiaWF0IjoxNTE2MjM5MDIyfQ.";
      rand_chars(r, s, kAlnum, 62, 43);
      return s;
  }
}

// About `bytes` of mixed output; `planted` counts the findings put in.
std::string generate(size_t bytes, size_t* planted) {
  Rng r{0x9e3779b97f4a7c15ull};
  std::string d;
  d.reserve(bytes + 8192);
  static const char* code[] = {
      "    for (size_t i = 0; i < n; ++i) sum += v[i] * w[i];\n",
      "def parse(line):\n    key, _, value = line.partition('=')\n    return key.strip(), value.strip()\n",
      "    if (rc != 0) { fprintf(stderr, \"read failed: %s\\n\", strerror(errno)); return -1; }\n",
      "import os, sys\nfrom pathlib import Path\nROOT = Path(__file__).resolve().parent\n",
      "  const auto it = map.find(key);\n  if (it == map.end()) return std::nullopt;\n",
  };
  static const char* levels[] = {"INFO", "DEBUG", "WARN", "ERROR"};
  static const char* paths[] = {"/api/v1/items", "/api/v1/users", "/healthz", "/static/app.js", "/api/v2/orders"};
  size_t next_plant = 2048;
  *planted = 0;
  while (d.size() < bytes) {
    switch (r.below(10)) {
      case 0: case 1: case 2: case 3:
        d += fmt::format("2024-03-{:02d}T{:02d}:{:02d}:{:02d}.{:03d}Z {} svc=api req={:016x} path={}/{} took={}ms status={}\n",
                         1 + r.below(28), r.below(24), r.below(60), r.below(60), r.below(1000), levels[r.below(4)],
                         r.next(), paths[r.below(5)], r.below(100000), r.below(2000), r.below(2) ? 200 : 404);
        break;
      case 4: case 5:
        d += fmt::format("{{\"id\":{},\"user\":\"u{}\",\"ts\":{},\"items\":[{},{},{}],\"ok\":true,\"note\":\"order shipped\"}}\n",
                         r.below(10000000), r.below(100000), 1700000000000ull + r.below(1000000000), r.below(1000),
                         r.below(1000), r.below(1000));
        break;
      case 6: case 7:
        d += code[r.below(5)];
        break;
      case 8: {
        size_t lines = 1 + r.below(8);  // runs well under 4 KiB
        for (size_t i = 0; i < lines; ++i) {
          rand_chars(r, d, kB64, 64, 76);
          d += '\n';
        }
        break;
      }
      default:
        d += "The quick brown fox jumps over the lazy dog; nothing to see in this sentence, really.\n";
    }
    if (d.size() >= next_plant) {
      d += "value: " + finding(r, static_cast<int>(r.below(9))) + "\n";
      ++*planted;
      next_plant = d.size() + 2048;
    }
  }
  return d;
}

uint64_t thread_cpu_ns() {
  struct timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

struct Pass {
  double mb_s = 0;  // best of the runs, wall clock
  double median = 0;
  double cpu_mb_s = 0;  // per CPU-second of the scanning thread: best of the runs
  double cpu_median = 0;
  size_t findings = 0;
  size_t anomalies = 0;
  size_t out_bytes = 0;
};

Pass scan_streamed(const DlpScanner& s, const std::string& data, size_t chunk, int runs) {
  Pass best;
  std::vector<double> all, all_cpu;
  for (int i = 0; i < runs; ++i) {
    auto st = s.open("stdout");
    if (!st) die("open: " + st.error().message);
    size_t out = 0;
    uint64_t t0 = now_ns(), c0 = thread_cpu_ns();
    for (size_t at = 0; at < data.size(); at += chunk)
      out += st->feed(std::string_view(data).substr(at, chunk)).size();
    out += st->finish().size();
    double secs = static_cast<double>(now_ns() - t0) / 1e9;
    double cpu_secs = static_cast<double>(thread_cpu_ns() - c0) / 1e9;
    double mbs = static_cast<double>(data.size()) / 1e6 / secs;
    double cpu_mbs = static_cast<double>(data.size()) / 1e6 / cpu_secs;
    all.push_back(mbs);
    all_cpu.push_back(cpu_mbs);
    if (mbs > best.mb_s) {
      best.mb_s = mbs;
      best.findings = st->findings().size();
      best.anomalies = st->anomalies().size();
      best.out_bytes = out;
    }
    best.cpu_mb_s = std::max(best.cpu_mb_s, cpu_mbs);
  }
  best.median = median_of(all);
  best.cpu_median = median_of(all_cpu);
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  Args args(argc, argv,
            "ztee-bench-dlp [--mib N (256)] [--runs N (3)] [--no-baseline]\n"
            "                      [--detectors a,b,... (the default set; a subset shows\n"
            "                      what each costs, e.g. card,iban,ssn)]\n"
            "                      [--save PATH (keep the generated log, for profiling)]\n"
            "                      [--exec-mib N (0: none; a streamed exec of N MiB of the log\n"
            "                      with DLP against one without; root and the guest image)]");
  long mib = args.num("--mib", 256);
  int runs = static_cast<int>(args.num("--runs", 3));
  bool baseline = !args.flag("--no-baseline");
  std::string subset = args.str("--detectors", "");
  std::string save = args.str("--save", "");
  long exec_mib = args.num("--exec-mib", 0);
  args.finish();
  if (mib <= 0 || runs <= 0) die("--mib and --runs take a positive number");
  // The generated log is --mib MiB and a few KiB more.
  if (exec_mib > mib) die("--exec-mib is larger than --mib");
  double load[3] = {0, 0, 0};
  if (::getloadavg(load, 3) == 3) std::fprintf(stderr, "load average at start: %.2f %.2f %.2f\n", load[0], load[1], load[2]);
  size_t planted = 0;
  uint64_t tg = now_ns();
  std::string data = generate(static_cast<size_t>(mib) << 20, &planted);
  std::fprintf(stderr, "generated %.1f MiB (%zu findings planted) in %.1f s\n", data.size() / 1048576.0, planted,
               ms_since(tg) / 1000);

  if (!save.empty()) {
    std::ofstream f(save, std::ios::binary);
    f.write(data.data(), static_cast<std::streamsize>(data.size()));
  }

  DlpOptions dlp_only;
  dlp_only.injection = false;
  if (!subset.empty()) {
    dlp_only.detectors.clear();
    for (size_t a = 0; a <= subset.size();) {
      size_t b = std::min(subset.find(',', a), subset.size());
      dlp_only.detectors.push_back({subset.substr(a, b - a), DlpMode::kRedact});
      a = b + 1;
    }
  }
  uint64_t tc = now_ns();
  auto s = DlpScanner::create(dlp_only);
  if (!s) die("create: " + s.error().message);
  double compile_ms = ms_since(tc);
  DlpOptions with_rules = dlp_only;
  with_rules.injection = true;
  auto both = DlpScanner::create(with_rules);
  if (!both) die("create: " + both.error().message);

  Pass p64 = scan_streamed(*s, data, 64 << 10, runs);
  Pass p4 = scan_streamed(*s, data, 4 << 10, runs);
  Pass pi = scan_streamed(*both, data, 64 << 10, runs);
  std::fprintf(stderr, "default detectors: %zu findings (planted %zu), hold-back %zu bytes, compile %.0f ms\n",
               p64.findings, planted, s->hold_back_bytes(), compile_ms);
  std::fprintf(stderr, "with injection rules: %zu findings, %zu anomalies\n", pi.findings, pi.anomalies);
  if (subset.empty() && p64.findings < planted) die("fewer findings than planted: the scanner missed some");

  std::optional<double> py, py_cpu;
  if (baseline) {
    std::string path = fmt::format("/tmp/ztee-bench-dlp-{}.log", ::getpid());
    {
      std::ofstream f(path, std::ios::binary);
      f.write(data.data(), static_cast<std::streamsize>(data.size()));
      if (!f) die("cannot write " + path);
    }
    std::string script = (std::filesystem::path(__FILE__).parent_path() / "bench_dlp_baseline.py").string();
    std::string cmd = fmt::format("/usr/bin/python3 '{}' '{}'", script, path);
    std::fprintf(stderr, "baseline: %s (this takes a while)\n", cmd.c_str());
    FILE* p = ::popen(cmd.c_str(), "r");
    std::string line;
    if (p) {
      char buf[4096];
      while (std::fgets(buf, sizeof buf, p)) line += buf;
      ::pclose(p);
    }
    std::filesystem::remove(path);
    auto field = [&](std::string_view key) {
      size_t k = line.find(fmt::format("\"{}\":", key));
      return k == std::string::npos ? 0.0 : std::strtod(line.c_str() + k + key.size() + 3, nullptr);
    };
    double secs = field("seconds"), cpu_secs = field("cpu_seconds");
    if (secs <= 0 || cpu_secs <= 0) die("baseline failed: " + line);
    py = static_cast<double>(data.size()) / 1e6 / secs;
    py_cpu = static_cast<double>(data.size()) / 1e6 / cpu_secs;
    std::fprintf(stderr, "baseline: %s", line.c_str());
  }

  std::fprintf(stderr,
               "best (median) of %d runs, wall clock: 64 KiB chunks: %.0f (%.0f) MB/s; 4 KiB chunks: %.0f (%.0f) MB/s; "
               "+injection rules (64 KiB): %.0f (%.0f) MB/s\n",
               runs, p64.mb_s, p64.median, p4.mb_s, p4.median, pi.mb_s, pi.median);
  std::fprintf(stderr,
               "best (median) of %d runs, per CPU-second of the scanning thread: 64 KiB chunks: %.0f (%.0f) MB/s; "
               "4 KiB chunks: %.0f (%.0f) MB/s; +injection rules (64 KiB): %.0f (%.0f) MB/s\n",
               runs, p64.cpu_mb_s, p64.cpu_median, p4.cpu_mb_s, p4.cpu_median, pi.cpu_mb_s, pi.cpu_median);
  if (py)
    std::fprintf(stderr,
                 "Python re: %.2f MB/s wall, %.2f MB/s per CPU-second; ratio (best): wall %.0f (64 KiB) %.0f (4 KiB), "
                 "CPU %.0f (64 KiB) %.0f (4 KiB)\n",
                 *py, *py_cpu, p64.mb_s / *py, p4.mb_s / *py, p64.cpu_mb_s / *py_cpu, p4.cpu_mb_s / *py_cpu);
  if (::getloadavg(load, 3) == 3) std::fprintf(stderr, "load average at end: %.2f %.2f %.2f\n", load[0], load[1], load[2]);
  // --exec-mib N: a streamed exec of N MiB of this log (cat of a file in the
  // guest) on a sandbox with SandboxOptions::dlp, against the same on one
  // without, alternating, best of --runs each. Needs root and the guest image.
  std::optional<double> exec_dlp_ms, exec_plain_ms;
  if (exec_mib > 0) {
    auto rt = Runtime::create(RuntimeOptions{});
    if (!rt) die("runtime: " + rt.error().message);
    SandboxOptions with;
    with.dlp = *s;
    with.memory_mib = 512;
    SandboxOptions without;
    without.memory_mib = 512;
    auto a = rt->create_sandbox(with);
    auto b = rt->create_sandbox(without);
    if (!a || !b) die("create_sandbox: " + (a ? b.error().message : a.error().message));
    std::string_view part(data.data(), static_cast<size_t>(exec_mib) << 20);
    for (Sandbox* sb : {&*a, &*b})
      if (auto w = sb->write_file("/root/log", part); !w) die("write_file: " + w.error().message);
    auto timed = [&](Sandbox& sb) {
      uint64_t bytes = 0;
      ExecOptions eo;
      eo.argv = {"cat", "/root/log"};
      eo.output_cap = (static_cast<uint64_t>(exec_mib) << 20) * 2;
      eo.on_stdout = [&](std::string_view d) { bytes += d.size(); };
      uint64_t t0 = now_ns();
      auto r = sb.exec(eo);
      double ms = ms_since(t0);
      if (!r || r->exit_code != 0 || bytes == 0) die("exec cat failed");
      return ms;
    };
    double best_dlp = 1e18, best_plain = 1e18;
    for (int i = 0; i < runs; ++i) {
      best_plain = std::min(best_plain, timed(*b));
      best_dlp = std::min(best_dlp, timed(*a));
    }
    exec_dlp_ms = best_dlp;
    exec_plain_ms = best_plain;
    std::fprintf(stderr, "streamed exec of %ld MiB: %.0f ms with DLP, %.0f ms without (%.1f%% overhead)\n", exec_mib,
                 best_dlp, best_plain, (best_dlp / best_plain - 1) * 100);
  }
  print_metric("dlp_scan_64k_mb_s", p64.mb_s, "MB/s", py);
  print_metric("dlp_scan_4k_mb_s", p4.mb_s, "MB/s", py);
  print_metric("dlp_injection_scan_64k_mb_s", pi.mb_s, "MB/s");
  print_metric("dlp_scan_64k_cpu_mb_s", p64.cpu_mb_s, "MB/s", py_cpu);
  print_metric("dlp_scan_4k_cpu_mb_s", p4.cpu_mb_s, "MB/s", py_cpu);
  print_metric("dlp_injection_scan_64k_cpu_mb_s", pi.cpu_mb_s, "MB/s");
  if (py) print_metric("python_re_baseline_mb_s", *py, "MB/s");
  if (py_cpu) print_metric("python_re_baseline_cpu_mb_s", *py_cpu, "MB/s");
  if (exec_dlp_ms) print_metric("dlp_streamed_exec_ms", *exec_dlp_ms, "ms", exec_plain_ms);
  return 0;
}
