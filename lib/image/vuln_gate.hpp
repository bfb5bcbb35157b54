// The vulnerability gate's inputs and decision: Trivy and Grype JSON
// reports, the allow-list, and which findings block (`ztee image gate`).
#pragma once

#include <ztee/result.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace ztee::detail {

struct VulnFinding {
  std::string id, pkg, severity;
};

struct VulnReport {
  std::string scanner;  // "trivy" or "grype"
  std::vector<VulnFinding> findings;
};

// 1 low, 2 medium, 3 high, 4 critical (any case); 0 for anything else
// (negligible, unknown), which never blocks.
int severity_rank(std::string_view severity);

// A Trivy report (Results[].Vulnerabilities[]: VulnerabilityID, PkgName,
// Severity) or a Grype one (matches[]: vulnerability.id, .severity,
// artifact.name). Errors (kInvalidArgument) say what is wrong, not where.
Result<VulnReport> parse_vuln_report(std::string_view json);

struct AllowEntry {
  std::string id, reason, expires;  // expires: YYYY-MM-DD, allows through that day
};
// [{"id", "reason" (non-empty), "expires": "YYYY-MM-DD"}, ...]
Result<std::vector<AllowEntry>> parse_allow_list(std::string_view json);

struct GateDecision {
  struct Line {
    enum Kind { kBlock, kAllow, kExpired } kind;
    VulnFinding finding;
    std::string reason, expires;  // kAllow, kExpired
  };
  std::vector<Line> lines;  // in report order, each id once per kind
  std::vector<std::string> blocking, allowed;  // sorted ids
  bool pass() const { return blocking.empty(); }
};
// Findings of rank >= threshold (1..4) block unless an allow-list entry with
// expires >= today (YYYY-MM-DD) covers their id.
GateDecision decide_gate(const VulnReport& report, const std::vector<AllowEntry>& allow, int threshold,
                         std::string_view today);

}  // namespace ztee::detail
