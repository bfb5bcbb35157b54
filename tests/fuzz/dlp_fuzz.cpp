// Fuzz target for the output DLP stream scanner (include/ztee/dlp.hpp) over
// guest-controlled output. Byte 0 picks one of two scanners (odd: every
// built-in detector including generic_secret, modes mask, redact, hash and
// block in turn, the shipped injection actions; even: everything in report
// mode), byte 1 seeds the chunk sizes (1..64 bytes; 0: the whole input), the
// rest is the output. Two scanners only: each costs a Hyperscan compile.
// Invariants: no crash; the streamed output and events equal the one-buffer
// scan; report mode passes the bytes unchanged and holds nothing back; the
// output is bounded by the input plus a replacement token per finding;
// events lie inside the input, in offset order; a block-mode finding blocks;
// and, when nothing was stripped, no edited finding's raw value (occurring
// once in the input) survives in the output. CTest replays the seeds once
// per shape-scan kernel (ZTEE_DLP_ISA, tests/fuzz/CMakeLists.txt).
#include <ztee/dlp.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace {

using namespace ztee;

constexpr DlpMode kEditing[] = {DlpMode::kMask, DlpMode::kRedact, DlpMode::kHash, DlpMode::kBlock};
constexpr size_t kMaxToken = 48;  // "[REDACTED:<name>]" / "[<name>:<8 hex>]" for the built-in names

const DlpScanner& scanner_for(bool editing) {
  static DlpScanner cache[2];
  DlpScanner& s = cache[editing ? 1 : 0];
  if (s) return s;
  DlpOptions o;
  o.detectors.clear();
  size_t i = 0;
  for (const auto& name : DlpOptions::builtin_detectors()) o.detectors.push_back({name, editing ? kEditing[i++ % 4] : DlpMode::kReport});
  if (!editing)
    for (const auto& id : DlpOptions::builtin_injection_rules()) o.injection_actions[id] = InjectionAction::kReport;
  o.hash_key = "fuzz-key";
  auto created = DlpScanner::create(o);
  if (!created) {
    // e.g. ZTEE_DLP_ISA naming an instruction set this CPU lacks (the replay test then counts as skipped)
    std::fprintf(stderr, "%s\n", created.error().message.c_str());
    __builtin_trap();
  }
  s = std::move(*created);
  return s;
}

bool same_events(const DlpStream& st, const DlpScanResult& one) {
  const auto& f = st.findings();
  const auto& a = st.anomalies();
  if (f.size() != one.findings.size() || a.size() != one.anomalies.size()) return false;
  for (size_t i = 0; i < f.size(); ++i)
    if (f[i].detector != one.findings[i].detector || f[i].offset != one.findings[i].offset ||
        f[i].length != one.findings[i].length || f[i].mode != one.findings[i].mode)
      return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].rule != one.anomalies[i].rule || a[i].offset != one.anomalies[i].offset || a[i].length != one.anomalies[i].length)
      return false;
  return st.blocked() == one.blocked;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2 || size > (1 << 20)) return 0;
  const bool editing = (data[0] & 1) != 0;
  const DlpScanner& scanner = scanner_for(editing);
  std::string_view in(reinterpret_cast<const char*>(data) + 2, size - 2);

  auto one = scanner.scan(in, "stdout");
  if (!one) __builtin_trap();

  auto st = scanner.open("stdout");
  if (!st) __builtin_trap();
  std::string out;
  uint32_t seed = data[1];
  size_t at = 0;
  while (at < in.size()) {
    size_t n = data[1] == 0 ? in.size() : 1 + (seed % 64);
    seed = seed * 1103515245u + 12345u;
    n = std::min(n, in.size() - at);
    out += st->feed(in.substr(at, n));
    at += n;
    // Only report-mode detectors and report rules: nothing is held back.
    if (!editing && st->bytes_out() != st->bytes_in()) __builtin_trap();
  }
  out += st->finish();

  if (out != one->output) __builtin_trap();
  if (!same_events(*st, *one)) __builtin_trap();
  if (st->bytes_in() != in.size() || st->bytes_out() != out.size()) __builtin_trap();
  if (!editing && (out != in || one->blocked)) __builtin_trap();
  if (out.size() > in.size() + kMaxToken * one->findings.size()) __builtin_trap();

  uint64_t prev = 0;
  for (const auto& f : one->findings) {
    if (f.length == 0 || f.offset + f.length > in.size() || f.offset < prev) __builtin_trap();
    prev = f.offset;
    if (f.stream != "stdout") __builtin_trap();
  }
  prev = 0;
  for (const auto& a : one->anomalies) {
    if (a.length == 0 || a.offset + a.length > in.size() || a.offset < prev) __builtin_trap();
    prev = a.offset;
  }
  bool stripped = false;
  for (const auto& a : one->anomalies) stripped = stripped || a.action == InjectionAction::kStrip;
  for (const auto& f : one->findings)
    if (f.mode == DlpMode::kBlock && (!one->blocked || one->block_reason.empty())) __builtin_trap();

  if (editing && !stripped) {
    for (const auto& f : one->findings) {
      std::string_view raw = in.substr(f.offset, f.length);
      size_t alnum = 0;
      for (char ch : raw) alnum += (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
      if (raw.size() < 8 || alnum <= 4) continue;  // mask keeps the last four
      if (in.find(raw) != f.offset || in.find(raw, f.offset + 1) != std::string_view::npos) continue;
      if (out.find(raw) != std::string::npos) __builtin_trap();
    }
  }
  return 0;
}
