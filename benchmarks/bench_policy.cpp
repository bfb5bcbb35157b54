// ztee-bench-policy: what the control plane costs per tool call.
//
//   1. classification alone with the default policy (a mix of calls that hit
//      the first, middle and last rules and none), p50 per call;
//   2. audit appends with each durability policy, records/s, against plain
//      write() of the same bytes to a file in the same run;
//   3. the gate's own overhead per call -- classification plus the six audit
//      records a run-tier call writes, with batch and with fsync durability -- against
//      exec("true") on a pooled sandbox measured in the same run (target:
//      <= 2 % of it).
//
// Usage: ztee-bench-policy [--classify N] [--appends N] [--execs N]
// Needs root and the guest image (part 3 boots a pool).
#include <ztee/policy.hpp>

#include "bench_common.hpp"

#include <filesystem>

using namespace ztee;
using namespace ztee::bench;

namespace {

std::vector<ToolCall> sample_calls() {
  std::vector<ToolCall> calls(6);
  calls[0].tool = "read_file", calls[0].command = "cat /work/report.csv";
  calls[1].tool = "python", calls[1].command = "python3 -c 'import pandas; print(1)'";
  calls[2].tool = "write_file", calls[2].command = "tee /work/out.txt", calls[2].writes = {"/work/out.txt"};
  calls[3].tool = "shell", calls[3].argv = {"bash", "-c", "ls -la /work && du -sh /work"};
  calls[4].tool = "unknown_tool", calls[4].command = "frobnicate --all";
  calls[5].tool = "read_file", calls[5].command = "cat x", calls[5].labels = {"pii"};
  return calls;
}

std::string record_fields() {
  // About the size of an "exec" record of the gate.
  return "\"argv\":null,\"text_sha256\":\"7d865e959b2466918c9863afca942d0fb89d7c9ac0c99bafc3749504ded97730\","
         "\"text_len\":42,\"env_keys\":[\"HOME\",\"API_KEY\"],\"cwd\":\"/work\",\"user\":\"\"";
}

double appends_per_s(const std::string& path, Durability d, int n) {
  std::filesystem::remove(path);
  AuditOptions o;
  o.path = path;
  o.durability = d;
  o.batch_ms = 100;
  auto log = AuditLog::open(o);
  if (!log) die("audit open: " + log.error().message);
  std::string fields = record_fields();
  uint64_t t0 = now_ns();
  for (int i = 0; i < n; ++i)
    if (!log->append("exec", "bench-trace", fields)) die("append failed");
  double s = static_cast<double>(now_ns() - t0) / 1e9;
  return n / s;
}

double plain_writes_per_s(const std::string& path, int n, size_t bytes) {
  std::filesystem::remove(path);
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) die("open failed");
  std::string line(bytes - 1, 'x');
  line += '\n';
  uint64_t t0 = now_ns();
  for (int i = 0; i < n; ++i)
    if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) die("write failed");
  double s = static_cast<double>(now_ns() - t0) / 1e9;
  ::close(fd);
  return n / s;
}

}  // namespace

int main(int argc, char** argv) {
  Args args(argc, argv, "ztee-bench-policy [--classify N] [--appends N] [--execs N]");
  const int classify_n = static_cast<int>(args.num("--classify", 200000));
  const int append_n = static_cast<int>(args.num("--appends", 20000));
  const int fsync_n = std::max(50, append_n / 100);
  const int exec_n = static_cast<int>(args.num("--execs", 60));
  args.finish();

  // 1. Classification.
  Policy policy = Policy::default_policy();
  auto calls = sample_calls();
  std::vector<double> per_call;
  per_call.reserve(static_cast<size_t>(classify_n));
  size_t sink = 0;
  for (int i = 0; i < classify_n; ++i) {
    const ToolCall& c = calls[static_cast<size_t>(i) % calls.size()];
    uint64_t t0 = now_ns();
    Decision d = policy.classify(c);
    per_call.push_back(static_cast<double>(now_ns() - t0) / 1e3);
    sink += static_cast<size_t>(d.tier);
  }
  double classify_p50 = percentile(per_call, 0.5);
  std::printf("classification, default policy, %d calls over %zu call shapes: p50 %.2f us, p99 %.2f us (sink %zu)\n",
              classify_n, calls.size(), classify_p50, percentile(per_call, 0.99), sink);

  // 2. Audit appends vs plain write() of the same bytes.
  char tmpl[] = "/tmp/ztee-bench-policy.XXXXXX";
  if (!::mkdtemp(tmpl)) die("mkdtemp");
  std::string dir = tmpl;
  std::string probe = dir + "/probe.jsonl";
  (void)appends_per_s(probe, Durability::kNone, 1);
  size_t record_bytes = std::filesystem::file_size(probe);
  double none_rps = appends_per_s(dir + "/none.jsonl", Durability::kNone, append_n);
  double batch_rps = appends_per_s(dir + "/batch.jsonl", Durability::kBatch, append_n);
  double fsync_rps = appends_per_s(dir + "/fsync.jsonl", Durability::kFsync, fsync_n);
  double plain_rps = plain_writes_per_s(dir + "/plain.log", append_n, record_bytes);
  std::printf("audit append (%zu-byte records): none %.0f/s, batch %.0f/s, fsync %.0f/s (%d records); "
              "plain write() %.0f/s\n", record_bytes, none_rps, batch_rps, fsync_rps, fsync_n, plain_rps);
  std::printf("(the file system of %s decides the fsync figure)\n", dir.c_str());

  // 3. The gate's overhead per call against exec("true") on a pooled sandbox.
  auto rt = Runtime::create();
  if (!rt) die("runtime: " + rt.error().message);
  std::printf("backend: %s\n", rt->backend_description().c_str());
  PoolOptions po;
  po.min_ready = 1;
  po.max_total = 2;
  auto pool = rt->create_pool(po);
  if (!pool) die("pool: " + pool.error().message);
  auto sb = pool->lease(120000);
  if (!sb) die("lease: " + sb.error().message);
  ExecOptions eo;
  eo.argv = {"true"};
  for (int i = 0; i < 10; ++i) (void)sb->exec(eo);  // the first runs translate code under TCG
  std::vector<double> exec_ms;
  for (int i = 0; i < exec_n; ++i) {
    uint64_t t0 = now_ns();
    auto r = sb->exec(eo);
    exec_ms.push_back(ms_since(t0));
    if (!r || r->exit_code != 0) die("exec true failed");
  }
  (void)sb->destroy();
  double exec_p50_us = percentile(exec_ms, 0.5) * 1e3;

  // The gate's own work per call: classification plus the six records of a
  // run-tier call (call, decision, sandbox, exec, exit, teardown).
  std::string fields = record_fields();
  auto gate_overhead = [&](Durability d, int n) {
    AuditOptions ao;
    ao.path = dir + "/gate-" + std::to_string(static_cast<int>(d)) + ".jsonl";
    ao.durability = d;
    auto log = AuditLog::open(ao);
    if (!log) die("audit: " + log.error().message);
    std::vector<double> us;
    for (int i = 0; i < n; ++i) {
      uint64_t t0 = now_ns();
      Decision dec = policy.classify(calls[0]);
      // As the gate writes them: deferred, committed before the command
      // runs and before the call returns.
      for (const char* ev : {"call", "decision", "sandbox", "exec"})
        if (!log->append_deferred(ev, "bench-trace", fields)) die("append failed");
      if (!log->commit()) die("commit failed");
      for (const char* ev : {"exit", "teardown"})
        if (!log->append_deferred(ev, "bench-trace", fields)) die("append failed");
      if (!log->commit()) die("commit failed");
      us.push_back(static_cast<double>(now_ns() - t0) / 1e3);
      sink += static_cast<size_t>(dec.tier);
    }
    return percentile(us, 0.5);
  };
  double gate_batch = gate_overhead(Durability::kBatch, 2000);
  double gate_fsync = gate_overhead(Durability::kFsync, 200);
  std::printf("exec(\"true\") on a pooled sandbox: p50 %.0f us over %d\n", exec_p50_us, exec_n);
  std::printf("gate overhead per call (classify + 6 audit records): batch p50 %.1f us = %.3f %% of it; "
              "fsync (the default; two syncs a call) p50 %.1f us = %.3f %% (target <= 2 %%)\n",
              gate_batch, 100.0 * gate_batch / exec_p50_us, gate_fsync, 100.0 * gate_fsync / exec_p50_us);
  std::filesystem::remove_all(dir);

  print_metric("policy_classify_p50_us", classify_p50, "us");
  print_metric("audit_append_none_per_s", none_rps, "records/s", plain_rps);
  print_metric("audit_append_batch_per_s", batch_rps, "records/s", plain_rps);
  print_metric("audit_append_fsync_per_s", fsync_rps, "records/s", plain_rps);
  print_metric("gate_overhead_batch_p50_us", gate_batch, "us", exec_p50_us);
  print_metric("gate_overhead_fsync_p50_us", gate_fsync, "us", exec_p50_us);
  return 0;
}
