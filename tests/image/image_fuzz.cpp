// Fuzz target for the image supply chain's parsers of caller-controlled
// bytes: manifest.json, Trivy/Grype reports, allow-lists, base64 signatures.
// Each input goes to all of them; accepted inputs must satisfy their
// invariants.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "image/image.hpp"
#include "image/trust.hpp"
#include "image/vuln_gate.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ztee::detail;
  std::string_view in(reinterpret_cast<const char*>(data), size);

  auto img = parse_image_manifest("/nonexistent-image", std::string(in));
  if (img) {
    for (const Artifact* a : {&img->kernel, &img->initramfs, &img->rootfs})
      if (a->path.rfind("/nonexistent-image/", 0) != 0 || a->sha256.size() != 64) __builtin_trap();
    for (const Artifact* a : {&img->vmlinux, &img->sbom})
      if (!a->path.empty() && a->path.find('/', sizeof "/nonexistent-image/" - 1) != std::string::npos) __builtin_trap();
    if (!img->vuln_gate.verdict.empty() && img->vuln_gate.verdict != "pass" && img->vuln_gate.verdict != "fail")
      __builtin_trap();
  } else if (img.error().message.empty()) {
    __builtin_trap();
  }

  auto report = parse_vuln_report(in);
  auto allow = parse_allow_list(in);
  if (allow)
    for (const auto& e : *allow)
      if (e.id.empty() || e.reason.empty() || e.expires.size() != 10) __builtin_trap();
  if (report) {
    for (const auto& f : report->findings)
      if (f.id.empty()) __builtin_trap();
    for (int threshold = 1; threshold <= 4; ++threshold) {
      auto d = decide_gate(*report, allow ? *allow : std::vector<AllowEntry>{}, threshold, "2026-01-01");
      for (const auto& id : d.blocking)
        for (const auto& a : d.allowed)
          if (id == a) __builtin_trap();
    }
  }

  auto decoded = base64_decode(in);
  if (decoded) {
    auto again = base64_decode(base64_encode(*decoded));
    if (!again || *again != *decoded) __builtin_trap();
  }
  return 0;
}
