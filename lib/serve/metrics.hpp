// `ztee serve`'s counters and their Prometheus text exposition (format
// 0.0.4) for GET /metrics.
//
// Counters and histograms are atomics: any thread may record. Gauges (pool,
// live sandboxes, connections) are read by the caller when it renders.
#pragma once

#include <ztee/ztee.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

namespace ztee::serve {

// What a request was for; one label value of the request metrics.
enum class RouteClass : uint8_t {
  kHealth,      // /health, /healthz on the control plane
  kMetrics,     // /metrics
  kControl,     // /sandboxes, /v2/sandboxes (and unknown control-plane paths)
  kEnvd,        // envd: /files, /health and unary Connect calls
  kEnvdStream,  // envd: process.Process/Start and Connect (lasts as long as the command)
  kExec,        // POST /v1/exec
  kCount
};
const char* route_class_name(RouteClass r);

// How a sandbox was obtained.
enum class SandboxSource : uint8_t { kPool, kBoot, kClone, kCount };

// How a /v1/exec call ended.
enum class ExecOutcome : uint8_t {
  kExitZero,    // the command exited 0
  kExitNonzero, // exited with another status or was killed by a signal
  kTimeout,     // ran past timeout_ms
  kClientGone,  // the client disconnected; the command was killed
  kError,       // no sandbox, or the sandbox failed
  kCount
};

class Metrics {
 public:
  // Upper bounds (seconds) of the latency histogram's buckets; +Inf follows.
  static constexpr std::array<double, 16> kBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                      0.25,   0.5,   1,      2.5,   5,     10,   30,    60};

  void request(RouteClass r, int status, double seconds);
  void sandbox_started(SandboxSource s) { bump(started_[static_cast<size_t>(s)]); }
  void sandbox_start_failed() { bump(start_failures_); }
  void sandbox_destroyed(bool clean) { bump(clean ? destroyed_ : teardown_failures_); }
  void exec_done(ExecOutcome o, double seconds);

  // What the caller knows at render time.
  struct Gauges {
    uint64_t sandboxes = 0;       // live sandboxes of the control plane
    uint64_t exec_sandboxes = 0;  // sandboxes of /v1/exec calls in flight
    uint64_t max_sandboxes = 0;
    uint64_t commands = 0;        // envd commands running
    uint64_t connections = 0;     // open HTTP connections
    bool has_pool = false;
    uint32_t pool_target = 0;
    PoolStats pool;
  };
  std::string render(const Gauges& g) const;

 private:
  static void bump(std::atomic<uint64_t>& c) { c.fetch_add(1, std::memory_order_relaxed); }

  struct Histogram {
    std::array<std::atomic<uint64_t>, kBuckets.size() + 1> buckets{};  // not cumulative; last: > 60 s
    std::atomic<uint64_t> count{0};
    std::atomic<uint64_t> sum_us{0};
    void observe(double seconds);
  };
  static constexpr size_t kRoutes = static_cast<size_t>(RouteClass::kCount);
  // By status code 100..599 (others count as 500).
  std::array<std::array<std::atomic<uint64_t>, 500>, kRoutes> requests_{};
  std::array<Histogram, kRoutes> latency_{};
  std::array<std::atomic<uint64_t>, static_cast<size_t>(SandboxSource::kCount)> started_{};
  std::atomic<uint64_t> start_failures_{0}, destroyed_{0}, teardown_failures_{0};
  std::array<std::atomic<uint64_t>, static_cast<size_t>(ExecOutcome::kCount)> execs_{};
  Histogram exec_latency_;
};

}  // namespace ztee::serve
