#include "serve/metrics.hpp"

#include <fmt/format.h>

#include <cmath>

namespace ztee::serve {

namespace {

constexpr const char* kSourceNames[] = {"pool", "boot", "clone"};
constexpr const char* kOutcomeNames[] = {"exit_zero", "exit_nonzero", "timeout", "client_gone", "error"};

uint64_t load(const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); }

void head(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

}  // namespace

const char* route_class_name(RouteClass r) {
  switch (r) {
    case RouteClass::kHealth: return "health";
    case RouteClass::kMetrics: return "metrics";
    case RouteClass::kControl: return "control";
    case RouteClass::kEnvd: return "envd";
    case RouteClass::kEnvdStream: return "envd_stream";
    case RouteClass::kExec: return "exec";
    default: return "other";
  }
}

void Metrics::Histogram::observe(double seconds) {
  if (!(seconds >= 0)) seconds = 0;
  size_t i = 0;
  while (i < kBuckets.size() && seconds > kBuckets[i]) ++i;
  buckets[i].fetch_add(1, std::memory_order_relaxed);
  count.fetch_add(1, std::memory_order_relaxed);
  sum_us.fetch_add(static_cast<uint64_t>(std::llround(seconds * 1e6)), std::memory_order_relaxed);
}

void Metrics::request(RouteClass r, int status, double seconds) {
  size_t ri = static_cast<size_t>(r);
  if (ri >= kRoutes) return;
  if (status < 100 || status > 599) status = 500;
  bump(requests_[ri][static_cast<size_t>(status - 100)]);
  latency_[ri].observe(seconds);
}

void Metrics::exec_done(ExecOutcome o, double seconds) {
  bump(execs_[static_cast<size_t>(o)]);
  exec_latency_.observe(seconds);
}

static void histogram(std::string& out, std::string_view name, std::string_view labels, const auto& h) {
  uint64_t cum = 0;
  std::string sep = labels.empty() ? "" : ",";
  for (size_t i = 0; i < Metrics::kBuckets.size(); ++i) {
    cum += load(h.buckets[i]);
    out += fmt::format("{}_bucket{{{}{}le=\"{}\"}} {}\n", name, labels, sep, Metrics::kBuckets[i], cum);
  }
  cum += load(h.buckets[Metrics::kBuckets.size()]);
  out += fmt::format("{}_bucket{{{}{}le=\"+Inf\"}} {}\n", name, labels, sep, cum);
  std::string braces = labels.empty() ? "" : fmt::format("{{{}}}", labels);
  out += fmt::format("{}_sum{} {:.6f}\n", name, braces, static_cast<double>(load(h.sum_us)) / 1e6);
  // _count equals the +Inf bucket (read once above, so the two agree).
  out += fmt::format("{}_count{} {}\n", name, braces, cum);
}

std::string Metrics::render(const Gauges& g) const {
  std::string out;
  out.reserve(16384);
  head(out, "ztee_serve_requests_total", "counter",
       "Requests answered, by route class and HTTP status (499: the client went away before the answer).");
  for (size_t r = 0; r < kRoutes; ++r)
    for (size_t c = 0; c < requests_[r].size(); ++c)
      if (uint64_t n = load(requests_[r][c]))
        out += fmt::format("ztee_serve_requests_total{{route=\"{}\",code=\"{}\"}} {}\n",
                           route_class_name(static_cast<RouteClass>(r)), c + 100, n);
  head(out, "ztee_serve_request_duration_seconds", "histogram",
       "Time from a request's arrival to the end of its answer (envd_stream: of the whole command stream).");
  for (size_t r = 0; r < kRoutes; ++r)
    histogram(out, "ztee_serve_request_duration_seconds",
              fmt::format("route=\"{}\"", route_class_name(static_cast<RouteClass>(r))), latency_[r]);

  head(out, "ztee_serve_sandboxes_live", "gauge", "Running sandboxes: of the E2B API (api=\"e2b\") and of /v1/exec calls in flight.");
  out += fmt::format("ztee_serve_sandboxes_live{{api=\"e2b\"}} {}\n", g.sandboxes);
  out += fmt::format("ztee_serve_sandboxes_live{{api=\"exec\"}} {}\n", g.exec_sandboxes);
  head(out, "ztee_serve_sandboxes_max", "gauge", "Live sandboxes the server allows in all (--max-sandboxes).");
  out += fmt::format("ztee_serve_sandboxes_max {}\n", g.max_sandboxes);
  head(out, "ztee_serve_commands_running", "gauge", "envd commands (process.Process/Start) running.");
  out += fmt::format("ztee_serve_commands_running {}\n", g.commands);
  head(out, "ztee_serve_connections", "gauge", "Open HTTP connections.");
  out += fmt::format("ztee_serve_connections {}\n", g.connections);
  head(out, "ztee_serve_sandboxes_started_total", "counter",
       "Sandboxes handed to callers, by how they were obtained: leased from the warm pool, booted from an image, cloned from a snapshot template.");
  for (size_t s = 0; s < started_.size(); ++s)
    out += fmt::format("ztee_serve_sandboxes_started_total{{source=\"{}\"}} {}\n", kSourceNames[s], load(started_[s]));
  head(out, "ztee_serve_sandbox_start_failures_total", "counter", "Sandboxes that could not be leased, booted or cloned.");
  out += fmt::format("ztee_serve_sandbox_start_failures_total {}\n", load(start_failures_));
  head(out, "ztee_serve_sandboxes_destroyed_total", "counter", "Sandboxes destroyed with a verified teardown.");
  out += fmt::format("ztee_serve_sandboxes_destroyed_total {}\n", load(destroyed_));
  head(out, "ztee_serve_sandbox_teardown_failures_total", "counter", "Sandboxes whose teardown reported something left behind.");
  out += fmt::format("ztee_serve_sandbox_teardown_failures_total {}\n", load(teardown_failures_));
  head(out, "ztee_serve_execs_total", "counter", "POST /v1/exec calls that were admitted, by how they ended.");
  for (size_t o = 0; o < execs_.size(); ++o)
    out += fmt::format("ztee_serve_execs_total{{outcome=\"{}\"}} {}\n", kOutcomeNames[o], load(execs_[o]));
  head(out, "ztee_serve_exec_duration_seconds", "histogram",
       "Admitted /v1/exec calls: sandbox start, command and teardown.");
  histogram(out, "ztee_serve_exec_duration_seconds", "", exec_latency_);

  if (g.has_pool) {
    const PoolStats& p = g.pool;
    const char* t = "template=\"base\"";
    auto gauge = [&](std::string_view name, std::string_view help, uint64_t v, const char* type = "gauge") {
      head(out, name, type, help);
      out += fmt::format("{}{{{}}} {}\n", name, t, v);
    };
    gauge("ztee_serve_pool_ready", "READY sandboxes waiting in the warm pool.", p.ready);
    gauge("ztee_serve_pool_starting", "Pool sandboxes being cloned or booted.", p.starting);
    gauge("ztee_serve_pool_leased", "Pool sandboxes leased and not yet destroyed.", p.leased);
    gauge("ztee_serve_pool_target", "READY sandboxes the pool keeps (--pool).", g.pool_target);
    gauge("ztee_serve_pool_backing_off", "1 while refills pause after repeated start failures.", p.backing_off ? 1 : 0);
    gauge("ztee_serve_pool_started_total", "Pool sandboxes that became READY.", p.created, "counter");
    gauge("ztee_serve_pool_start_failures_total", "Pool sandboxes that failed to start.", p.failed, "counter");
    gauge("ztee_serve_pool_leases_total", "Leases from the pool.", p.leases, "counter");
    gauge("ztee_serve_pool_lease_timeouts_total", "Leases that found no READY sandbox in time.", p.lease_timeouts, "counter");
  }
  return out;
}

}  // namespace ztee::serve
