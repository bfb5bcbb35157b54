#include "image/vuln_gate.hpp"

#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>
#include <set>

namespace ztee::detail {

namespace {

Error invalid(std::string msg) { return make_error(Errc::kInvalidArgument, std::move(msg)); }

bool valid_date(std::string_view d) {
  if (d.size() != 10 || d[4] != '-' || d[7] != '-') return false;
  for (size_t i : {0, 1, 2, 3, 5, 6, 8, 9})
    if (!std::isdigit(static_cast<unsigned char>(d[i]))) return false;
  int y = std::stoi(std::string(d.substr(0, 4))), m = std::stoi(std::string(d.substr(5, 2))),
      day = std::stoi(std::string(d.substr(8, 2)));
  static const int kDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return y >= 1970 && m >= 1 && m <= 12 && day >= 1 && day <= kDays[m - 1];
}

}  // namespace

int severity_rank(std::string_view severity) {
  std::string s(severity);
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (s == "low") return 1;
  if (s == "medium") return 2;
  if (s == "high") return 3;
  if (s == "critical") return 4;
  return 0;
}

Result<VulnReport> parse_vuln_report(std::string_view json) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (auto e = parser.parse(simdjson::padded_string(json)).get(doc))
    return invalid(fmt::format("not valid JSON ({})", simdjson::error_message(e)));
  VulnReport r;
  simdjson::dom::array arr;
  std::string_view sv;
  if (!doc["Results"].get_array().get(arr)) {
    r.scanner = "trivy";
    for (auto res : arr) {
      simdjson::dom::array vulns;
      if (res["Vulnerabilities"].get_array().get(vulns)) continue;  // absent or null: nothing found
      for (auto v : vulns) {
        VulnFinding f;
        if (v["VulnerabilityID"].get_string().get(sv) || sv.empty())
          return invalid("a Trivy finding lacks \"VulnerabilityID\"");
        f.id = sv;
        if (!v["PkgName"].get_string().get(sv)) f.pkg = sv;
        if (!v["Severity"].get_string().get(sv)) f.severity = sv;
        r.findings.push_back(std::move(f));
      }
    }
  } else if (!doc["matches"].get_array().get(arr)) {
    r.scanner = "grype";
    for (auto m : arr) {
      VulnFinding f;
      if (m["vulnerability"]["id"].get_string().get(sv) || sv.empty())
        return invalid("a Grype match lacks \"vulnerability.id\"");
      f.id = sv;
      if (!m["vulnerability"]["severity"].get_string().get(sv)) f.severity = sv;
      if (!m["artifact"]["name"].get_string().get(sv)) f.pkg = sv;
      r.findings.push_back(std::move(f));
    }
  } else {
    return invalid(
        "neither a Trivy JSON report (\"Results\") nor a Grype JSON report (\"matches\"): run `trivy ... --format "
        "json` or `grype ... -o json`");
  }
  return r;
}

Result<std::vector<AllowEntry>> parse_allow_list(std::string_view json) {
  simdjson::dom::parser parser;
  simdjson::dom::array entries;
  if (parser.parse(simdjson::padded_string(json)).get_array().get(entries))
    return invalid("must be a JSON array of {\"id\", \"reason\", \"expires\"}");
  std::vector<AllowEntry> out;
  size_t n = 0;
  for (auto e : entries) {
    ++n;
    std::string_view id, reason, expires;
    if (e["id"].get_string().get(id) || id.empty() || e["reason"].get_string().get(reason) || reason.empty() ||
        e["expires"].get_string().get(expires) || !valid_date(expires))
      return invalid(fmt::format("entry #{} needs \"id\", a non-empty \"reason\" and \"expires\": \"YYYY-MM-DD\"", n));
    out.push_back({std::string(id), std::string(reason), std::string(expires)});
  }
  return out;
}

GateDecision decide_gate(const VulnReport& report, const std::vector<AllowEntry>& allow, int threshold,
                         std::string_view today) {
  std::map<std::string, const AllowEntry*> by_id;
  for (const auto& a : allow) {
    auto [it, fresh] = by_id.emplace(a.id, &a);
    if (!fresh && a.expires > it->second->expires) it->second = &a;  // the longest-lived entry counts
  }
  GateDecision d;
  std::set<std::string> blocking, allowed, expired;
  for (const auto& f : report.findings) {
    if (severity_rank(f.severity) < threshold) continue;
    auto it = by_id.find(f.id);
    if (it != by_id.end() && std::string_view(it->second->expires) >= today) {
      if (allowed.insert(f.id).second)
        d.lines.push_back({GateDecision::Line::kAllow, f, it->second->reason, it->second->expires});
      continue;
    }
    if (it != by_id.end() && expired.insert(f.id).second)
      d.lines.push_back({GateDecision::Line::kExpired, f, it->second->reason, it->second->expires});
    if (blocking.insert(f.id).second) d.lines.push_back({GateDecision::Line::kBlock, f, {}, {}});
  }
  d.blocking.assign(blocking.begin(), blocking.end());
  d.allowed.assign(allowed.begin(), allowed.end());
  return d;
}

}  // namespace ztee::detail
