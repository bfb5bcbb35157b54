// The shipped DLP detectors and injection rules as Hyperscan expressions.
//
// Every expression is written as lead + core + trail, where lead and trail
// are the boundary bytes (or ^ / $) that make the core a whole token; the
// match is trimmed back to its core (at most two bytes each side, those not
// in `front` / `back`) before its validator runs. Long patterns (unbounded,
// or wider than kMaxShortWidth) come with an opener: a short expression for
// their first bytes, whose start is theirs (no opener can occur inside one
// of their matches), so a stream knows where such a match may begin before
// it ends. The numeric detectors (cards, IBANs, SSNs, phones) are not in
// the Hyperscan database: a block-wise scan of byte-class masks finds the
// fixed shapes every match of theirs contains and proposes the ends that
// follow them; RE2 running `regex` decides each end (see Shape).
#pragma once

#include <ztee/dlp.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace ztee::detail::dlp {

// Digit-shaped detectors whose expressions have no literal to anchor on: an
// automaton for them steps through every digit and capital of the input
// (several times slower than the rest of the database together); the '+'
// phones' only literal, '+' and a digit, is common in base64. Each match
// contains one of its shape's witnesses, and ends within a short reach after
// it (scanner.cpp, kWalks).
enum class Shape { kNone, kCard, kIban, kSsn, kNanp, kE164, kIntl };
inline constexpr int kShapes = 7;

enum class Check { kNone, kCard, kIban, kSsn, kEmail, kPhone, kAwsContext, kAwsBare, kJwt, kGeneric };

inline constexpr uint64_t kMaxShortWidth = 1024;  // caller regexes: the widest match allowed
inline constexpr uint64_t kPemCap = 8192;          // private_key body bound (the regex's)
inline constexpr uint64_t kBlobCap = 1 << 20;      // base64_blob: hold a run at most this long
inline constexpr uint64_t kJwtCap = 16384;         // jwt: longest token recognised

struct PatternDef {
  std::string regex;
  // Optional: what Hyperscan scans instead of `regex`, a suffix of it (so it
  // ends wherever `regex` can end) that is cheaper to run; each of its ends is
  // then confirmed by RE2 running `regex` over the window before it.
  std::string prefilter;
  // Not in the Hyperscan database: ends proposed by the shape scan, each
  // confirmed by RE2 running `regex`.
  Shape shape = Shape::kNone;
  Check check = Check::kNone;
  std::string front = "*";  // bytes a core may start with ("*": any, never trimmed)
  std::string back = "*";   // bytes a core may end with
  // Long patterns: `opener` is their opener expression; its core starts
  // `opener_fixed` bytes before its end (0: found like any short match).
  std::string opener;
  uint32_t opener_fixed = 0;
  uint64_t cap = 0;                 // 0: the expression's own maximum width
  bool truncate_on_expiry = false;  // an opener with no match within cap still yields a (truncated) hit
};

struct BuiltinDef {
  std::string name;
  bool injection = false;
  InjectionAction default_action = InjectionAction::kReport;
  bool merge_adjacent = false;
  std::vector<PatternDef> patterns;
};

// Built-in detectors in their priority order (ties between equal spans go to
// the earlier one), then the shipped injection rules.
const std::vector<BuiltinDef>& builtin_detectors();
const std::vector<BuiltinDef>& builtin_rules();

}  // namespace ztee::detail::dlp
