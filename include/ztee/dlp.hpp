// libztee data guardrails: an output DLP scanner (payment cards, IBANs, SSNs,
// e-mail addresses, phone numbers, private keys, cloud and SaaS tokens, JWTs,
// caller patterns) and a state-mutation guardrail (orchestrator control
// structures injected through tool output: chat-template role markers,
// tool-call JSON, prompt placeholders, "ignore previous instructions",
// invisible/bidi Unicode, ANSI escapes, oversized base64).
//
// Both run in one pass over the bytes. Detection is Hyperscan in streaming
// mode, so a match that spans chunk boundaries is found exactly as in one
// buffer. Hyperscan reports where a match ends; its start is recovered by RE2
// over the bounded window before that end (long patterns: from their opener),
// and each match is then checked by a validator (Luhn and issuer ranges, IBAN
// length and mod-97, SSN ranges, JWT header, ...). The digit-shaped
// detectors (card, iban, ssn and phone), which have no useful literal for
// Hyperscan to anchor on, are found by a vectorised scan for the fixed shapes
// every match of theirs contains; RE2 then decides each end it proposes with
// the detector's expression, so the findings are the same.
//
// Typical use on a command's output (the gate and the exec paths):
//
//   auto scanner = DlpScanner::create(DlpOptions{});   // once; share it
//   auto out = scanner->open("stdout");                // one per stream
//   for (chunk : output) deliver(out->feed(chunk));    // never raw values
//   deliver(out->finish());
//   if (out->blocked()) fail the call (out->block_reason());
//   record out->findings(), out->anomalies();
//
// Composition with SecretScrubber: both are feed()/finish() filters over the
// same bytes; chain them (`dlp.feed(scrubber.feed(chunk))`, then
// `dlp.feed(scrubber.finish())` followed by `dlp.finish()`). Offsets in
// findings then refer to the scrubbed stream: always to the bytes given to
// feed().
//
// Modes (DLP detectors) -- what replaces a finding's bytes in the output:
//   kReport  nothing: the bytes pass unchanged, only the event is recorded.
//   kMask    every letter and digit except the last four becomes '*';
//            separators stay ("**** **** **** 1111").
//   kRedact  "[REDACTED:<detector>]".
//   kHash    "[<detector>:<8 hex>]": the first 4 bytes of HMAC-SHA256(key,
//            canonical value). The canonical value drops separators (card,
//            phone, SSN digits; IBAN upper-case without spaces; e-mail
//            lower-cased), so the same value always gives the same token
//            under one key (DlpOptions::hash_key; random per scanner when
//            empty).
//   kBlock   as kRedact, and the stream reports blocked(): the caller must
//            fail the call.
// Actions (injection rules):
//   kReport  bytes unchanged, anomaly recorded.
//   kStrip   the matched bytes are removed from the output.
//   kFail    bytes unchanged, blocked() becomes true: the caller must fail
//            the call (bytes released before the decision were delivered).
//
// Events never contain the matched value: a finding is {detector, stream,
// offset, length, mode}; an anomaly is {rule, stream, offset, length, action}.
// Offsets and lengths count bytes of the input stream.
//
// Overlaps: candidates are taken leftmost first, the longest on a tie, then
// in detector order; one that overlaps an accepted one is dropped. Editing
// detectors/rules (any mode but kReport, action kStrip) and reporting ones
// are resolved separately, so a report-mode finding may overlap an edited
// one. Adjacent hits of one injection rule are merged into one anomaly.
//
// Hold-back bound. feed() returns only bytes whose fate is decided: the
// stream holds back the last hold_back_bytes() bytes (the widest short
// pattern among the editing detectors/rules, plus one; 48 bytes more for
// card, iban, ssn and phone, whose ends are found that far behind the
// input; about 300 bytes with the defaults, dominated by e-mail addresses)
// and, while a long pattern may be in progress, everything from its start:
//   - private_key: from "-----BEGIN ... PRIVATE KEY-----" until the END line,
//     at most 8 KiB of body (kPemCap). A block with no END within that bound
//     (or before finish()) is a finding anyway, marked truncated, covering
//     the BEGIN line and the next bytes up to the bound (or to the end of the
//     stream): the mode applies to them, bytes after it are scanned afresh.
//   - jwt: from "eyJ" (after a byte that is not base64url or '.') until the
//     token's end is matched, at most 16 KiB (kJwtCap). Longer tokens are not
//     JWT findings; a base64url blob starting "eyJ" that is no JWT is held
//     until that bound passes (or finish()).
//   - base64_blob (only when its action is kStrip): a run is known to be a
//     blob once it is 4097 bytes long, so the window grows to 4098 bytes;
//     the blob is then held until it ends, at most 1 MiB; a longer run is an
//     anomaly of its first 1 MiB (truncated) and the rest passes.
// With only report-mode detectors and report/fail rules nothing is held
// back. finish() releases everything.
//
// Threads: a DlpScanner is immutable after create() and may be shared by any
// number of threads; each DlpStream is used by one thread at a time.
//
// Instruction sets: the digit-shape scan picks its block kernel when a
// scanner is created (AVX-512BW, AVX2 or SSE2 as the CPU has; portable C++
// elsewhere). The environment variable ZTEE_DLP_ISA (avx512bw, avx2, sse2,
// portable; unset, empty or "auto": the CPU's best) forces one, for tests
// and comparisons: the findings are the same. An unknown name, or one the
// CPU lacks, makes create() fail with kInvalidArgument.
#pragma once

#include <ztee/result.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ztee {

namespace detail {
class DlpScannerImpl;
class DlpStreamImpl;
}  // namespace detail

enum class DlpMode { kReport, kMask, kRedact, kHash, kBlock };
const char* dlp_mode_name(DlpMode m);  // "report", "mask", "redact", "hash", "block"

enum class InjectionAction { kReport, kStrip, kFail };
const char* injection_action_name(InjectionAction a);  // "report", "strip", "fail"

// A built-in detector switched on, with its mode. Names:
//   card            payment card numbers, 13-19 digits, bare or in groups of
//                   4 (Amex/Diners 4-6-5/4-6-4) separated by one kind of
//                   space/dash; Luhn-valid and in a known issuer range (Visa,
//                   Mastercard incl. 2-series, Amex, Discover, JCB, Diners,
//                   UnionPay, Maestro) with a length that issuer uses.
//   iban            IBAN, electronic or printed (groups of 4) form, upper
//                   case, country from a table of 60 with its fixed length,
//                   mod-97 check.
//   ssn             US SSN ddd-dd-dddd (area not 000, 666, 9xx; group not
//                   00; serial not 0000).
//   email           addr-spec with a dotted domain and an alphabetic TLD
//                   (file extensions such as .png are not TLDs here).
//   phone           E.164 (+ and 8-15 digits), international with
//                   separators (+CC then groups), and NANP national forms
//                   (415) 555-2671 / 415-555-2671 / 415.555.2671 (area and
//                   exchange 2-9). Bare national digit runs are not phones.
//   private_key     PEM "-----BEGIN [RSA |EC |OPENSSH |ENCRYPTED ...]PRIVATE
//                   KEY-----" ... "-----END ...-----" blocks (body <= 8 KiB).
//   aws_access_key  AKIA/ASIA + 16 base32 characters.
//   aws_secret_key  40 base64 characters after an "aws ... secret/key" name
//                   and ':' or '=' (anywhere, not only after a name, with
//                   DlpOptions::aws_secret_without_context).
//   github_token    ghp_/gho_/ghs_/ghu_/ghr_ tokens and github_pat_.
//   gitlab_token    glpat-.
//   slack_token     xoxa-/xoxb-/xoxp-/xoxr-/xoxs-.
//   stripe_key      sk_live_/rk_live_/pk_live_.
//   jwt             header.payload.signature in base64url (signature not
//                   empty) whose header decodes to a JSON object with a
//                   string "alg".
//   generic_secret  (opt-in: not in default_detectors()) a 24-128 byte token
//                   of letters, digits and +/=_- with Shannon entropy >=
//                   DlpOptions::entropy_bits per byte, at least one digit and
//                   one letter.
struct DlpDetector {
  std::string name;
  DlpMode mode = DlpMode::kRedact;
};

// A caller detector: Hyperscan/RE2 common syntax (both must accept it: no
// backreferences or lookaround), bytes (not UTF-8 aware), every match at
// most 1024 bytes long and never empty. ^ and $ mean start and end of the
// stream. Literals are matched byte for byte. No validator: every match is a
// finding.
struct DlpCustomDetector {
  std::string name;  // [a-z0-9_]+, not a built-in name
  std::vector<std::string> regexes;
  std::vector<std::string> literals;
  bool caseless = false;
  DlpMode mode = DlpMode::kRedact;
};

// A caller injection rule (same syntax rules as DlpCustomDetector).
struct InjectionRule {
  std::string id;  // [a-z0-9_]+, not a built-in id
  std::vector<std::string> regexes;
  std::vector<std::string> literals;
  bool caseless = false;
  InjectionAction action = InjectionAction::kReport;
};

struct DlpOptions {
  // Built-in detectors in use (each name at most once). Default: every
  // built-in except generic_secret, mode kRedact.
  std::vector<DlpDetector> detectors = default_detectors();
  std::vector<DlpCustomDetector> custom;
  // The shipped injection rules (builtin_injection_rules()); actions may be
  // overridden per id. Default actions: invisible_unicode and ansi_escape
  // strip, the others report.
  bool injection = true;
  std::map<std::string, InjectionAction> injection_actions;
  std::vector<InjectionRule> injection_rules;  // the caller's, added to (or instead of) the shipped ones
  // kHash key. Empty: 32 random bytes per scanner (tokens then compare only
  // within one scanner).
  std::string hash_key;
  bool aws_secret_without_context = false;
  double entropy_bits = 4.2;         // generic_secret threshold (bits per byte)
  uint32_t entropy_min_length = 24;  // generic_secret minimum length (>= 16)

  static std::vector<DlpDetector> default_detectors();
  static std::vector<std::string> builtin_detectors();  // every built-in name
  // The shipped rule ids: role_marker, tool_call_json, template_placeholder,
  // ignore_instructions, invisible_unicode (U+200B-200F, U+202A-202E,
  // U+2066-2069, U+FEFF, tags U+E0000-E007F, UTF-8 encoded), ansi_escape
  // (CSI, OSC, two-byte ESC sequences), base64_blob (a run of more than
  // 4096 base64 characters).
  static std::vector<std::string> builtin_injection_rules();
};

// One DLP hit. Never holds the value.
struct DlpFinding {
  std::string detector;
  std::string stream;     // the name given to DlpScanner::open
  uint64_t offset = 0;    // first byte in the input stream
  uint64_t length = 0;
  DlpMode mode = DlpMode::kReport;
  bool truncated = false; // private_key without END within the bound
};

// One injection-rule hit. Never holds the bytes.
struct InjectionAnomaly {
  std::string rule;
  std::string stream;
  uint64_t offset = 0;
  uint64_t length = 0;
  InjectionAction action = InjectionAction::kReport;
  bool truncated = false; // base64_blob longer than 1 MiB
};

struct DlpScanResult {
  std::string output;                   // the input with modes/actions applied
  std::vector<DlpFinding> findings;     // by offset
  std::vector<InjectionAnomaly> anomalies;
  bool blocked = false;
  std::string block_reason;
};

// The scan state of one output stream. Move-only; owns its Hyperscan stream
// and scratch. After an internal error (none expected) it fails closed:
// blocked() is true, block_reason() says why, and nothing more is output.
class DlpStream {
 public:
  DlpStream() = default;
  DlpStream(DlpStream&&) noexcept;
  DlpStream& operator=(DlpStream&&) noexcept;
  ~DlpStream();

  // Scans `chunk` and returns the output bytes now decided (possibly empty;
  // at most hold_back_bytes() plus any open long pattern are kept).
  std::string feed(std::string_view chunk);
  // Ends the stream: returns what was held back. feed() afterwards is an
  // error (it returns "" and blocks the stream).
  std::string finish();
  // Decided so far; by offset once finish() has returned.
  const std::vector<DlpFinding>& findings() const;
  const std::vector<InjectionAnomaly>& anomalies() const;
  bool blocked() const;
  // Why blocked() is true: "card (block) at stdout offset 120", "injection
  // rule role_marker (fail) at ...": never the value. Empty otherwise.
  const std::string& block_reason() const;
  uint64_t bytes_in() const;
  uint64_t bytes_out() const;
  explicit operator bool() const { return static_cast<bool>(impl_); }

 private:
  friend class DlpScanner;
  explicit DlpStream(std::unique_ptr<detail::DlpStreamImpl> impl);
  std::unique_ptr<detail::DlpStreamImpl> impl_;
};

// The compiled detectors and rules (one Hyperscan database). Cheap to copy
// (shared, immutable).
class DlpScanner {
 public:
  DlpScanner() = default;
  // Compiles the options. Unknown detector or rule names, duplicate names,
  // invalid or unbounded caller regexes are refused (kInvalidArgument) with
  // a message naming the entry.
  static Result<DlpScanner> create(DlpOptions opts);
  // A stream named `stream_name` (recorded in every event, e.g. "stdout").
  Result<DlpStream> open(std::string stream_name) const;
  // One-shot: open + feed(whole) + finish.
  Result<DlpScanResult> scan(std::string_view whole, std::string stream_name = "") const;
  // The bytes feed() holds back at most outside long patterns (see above).
  size_t hold_back_bytes() const;
  const DlpOptions& options() const;
  explicit operator bool() const { return static_cast<bool>(impl_); }

 private:
  explicit DlpScanner(std::shared_ptr<const detail::DlpScannerImpl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const detail::DlpScannerImpl> impl_;
};

}  // namespace ztee
