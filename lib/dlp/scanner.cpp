// DlpScanner / DlpStream: one Hyperscan streaming database for every
// detector and rule, start recovery, validation, overlap resolution and the
// hold-back window (see include/ztee/dlp.hpp for the contract).
//
// Hyperscan in streaming mode reports where each match ends, exactly as it
// would over one buffer. Start-of-match tracking (SOM) is refused for these
// patterns ("Pattern is too large"), so the start is recovered afterwards:
// a short pattern's match lies within its maximum width before the end, and
// RE2 finds its leftmost start in that window (the same expression, with $
// disabled before the end of the stream, in a group followed by \z: RE2
// then runs its reverse automaton from the end and reads back only as far
// as the match can reach). A long pattern's start is the
// start of its opener. Candidates are then trimmed to their core, validated,
// and decided leftmost-first once no undiscovered candidate can start before
// them; output is released up to that point.
//
// The digit-shaped detectors (Shape) stay out of the Hyperscan database: on
// output full of numbers (timestamps, ids, base64) their automata would step
// through every digit and capital (and the '+' phones' literal, '+' and a
// digit, is common in base64). Instead, a block kernel (AVX-512BW, AVX2,
// SSE2 or portable, picked at run time) turns each 64-byte block into seven
// byte-class bit masks and a cheap test of a few shifts and ANDs (a
// separator then four digits, 13 digits, two capitals then two digits, '+'
// then a digit): most blocks stop there. A block that passes gets its full
// masks, shifted and ANDed into witness masks: positions where a fixed shape
// every match of the detector contains ends (ddd-dd-dddd; ddd[.-]dddd; 13
// digits; dddd[ -]dddd; 15 capitals/digits; XXXX XXXX; +d after a lead
// byte). From each witness a short walk over the token proposes the ends
// that can follow it, and RE2 runs the detector's expression over the window
// before each: the same ends Hyperscan would have reported. Witnesses are taken kShapeLag bytes behind the input so a
// walk never runs past it (finish() takes the rest).
#include <ztee/dlp.hpp>

#include "dlp/patterns.hpp"
#include "dlp/validators.hpp"

#include <fmt/format.h>
#include <hs/hs.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <re2/re2.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <array>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <set>

namespace ztee {

const char* dlp_mode_name(DlpMode m) {
  switch (m) {
    case DlpMode::kReport: return "report";
    case DlpMode::kMask: return "mask";
    case DlpMode::kRedact: return "redact";
    case DlpMode::kHash: return "hash";
    case DlpMode::kBlock: return "block";
  }
  return "?";
}

const char* injection_action_name(InjectionAction a) {
  switch (a) {
    case InjectionAction::kReport: return "report";
    case InjectionAction::kStrip: return "strip";
    case InjectionAction::kFail: return "fail";
  }
  return "?";
}

std::vector<DlpDetector> DlpOptions::default_detectors() {
  std::vector<DlpDetector> v;
  for (const auto& d : detail::dlp::builtin_detectors())
    if (d.name != "generic_secret") v.push_back({d.name, DlpMode::kRedact});
  return v;
}

std::vector<std::string> DlpOptions::builtin_detectors() {
  std::vector<std::string> v;
  for (const auto& d : detail::dlp::builtin_detectors()) v.push_back(d.name);
  return v;
}

std::vector<std::string> DlpOptions::builtin_injection_rules() {
  std::vector<std::string> v;
  for (const auto& r : detail::dlp::builtin_rules()) v.push_back(r.name);
  return v;
}

namespace detail {

using namespace detail::dlp;

namespace {

using ByteSet = std::array<bool, 256>;

// "A-Za-z0-9_\\-" style set; "*" is every byte.
ByteSet byte_set(std::string_view spec) {
  ByteSet s{};
  if (spec == "*") {
    s.fill(true);
    return s;
  }
  for (size_t i = 0; i < spec.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(spec[i]);
    if (c == '\\' && i + 1 < spec.size()) {
      s[static_cast<unsigned char>(spec[++i])] = true;
    } else if (i + 2 < spec.size() && spec[i + 1] == '-') {
      for (unsigned x = c; x <= static_cast<unsigned char>(spec[i + 2]); ++x) s[x] = true;
      i += 2;
    } else {
      s[c] = true;
    }
  }
  return s;
}

// The expression with every $ outside a class and not escaped replaced by a
// never-matching class: for RE2 before the end of the stream.
std::string without_dollar(std::string_view re) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < re.size(); ++i) {
    char c = re[i];
    if (c == '\\' && i + 1 < re.size()) {
      out += c;
      out += re[++i];
      continue;
    }
    if (in_class) {
      if (c == ']') in_class = false;
      out += c;
      continue;
    }
    if (c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < re.size() && re[i + 1] == '^') out += re[++i];
      if (i + 1 < re.size() && re[i + 1] == ']') out += re[++i];
      continue;
    }
    out += (c == '$') ? std::string("[^\\x00-\\xff]") : std::string(1, c);
  }
  return out;
}

std::string literal_regex(std::string_view lit) {
  std::string out;
  for (unsigned char c : lit) out += fmt::format("\\x{:02x}", c);
  return out;
}

bool valid_name(std::string_view n) {
  if (n.empty() || n.size() > 64) return false;
  for (char c : n)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  return true;
}

// Witnesses are taken this many bytes behind the input (>= every walk's
// reach plus a two-byte trail).
constexpr uint64_t kShapeLag = 48;

struct ClassMasks {  // bit i: byte i of the block
  uint64_t digit = 0, d26 = 0, letter = 0, upper = 0, alnum = 0, dash = 0, space = 0, dot = 0, plus = 0, under = 0;
};

// The masks the cheap test of every block uses (sep: ' ', '-' or '.'; word:
// a letter, digit, '_' or '+', the bytes that cannot lead a '+' phone).
struct FilterMasks {
  uint64_t digit = 0, d26 = 0, letter = 0, alnum = 0, sep = 0, plus = 0, word = 0;
};

inline FilterMasks filter_of(const ClassMasks& m) {
  return {m.digit, m.d26, m.letter, m.alnum, m.dash | m.space | m.dot, m.plus, m.alnum | m.under | m.plus};
}

// What the block scan carries from one block to the next.
struct ShapeCarry {
  ClassMasks prev;       // the previous block's masks (clear before the stream)
  uint64_t pending = 0;  // a witness may end in the next block (an IBAN's lead)
};

// Bit i of the result: bit i - k of the stream (cur after prev), 0 < k < 64.
inline uint64_t shifted(uint64_t cur, uint64_t prev, int k) {
  return static_cast<uint64_t>(((static_cast<unsigned __int128>(cur) << 64) | prev) >> (64 - k));
}

// The cheap test every block gets: false when no witness (see witnesses())
// can end in it. Each witness contains one of these: a separator, then four
// digits after a digit (ddd-dd-dddd, ddd[.-]dddd, [2-6]ddd[ -]dddd); a run
// of 13 digits from [2-6] after a non-digit (the bare card witness itself);
// two capitals then two digits after a byte that is no letter or digit (an
// IBAN's lead, whose witness ends 10 or 11 bytes later, perhaps in the next
// block); a digit after a '+' after a byte that is no word byte (the '+'
// phone witness itself). Moves `p` and `pending` on to this block.
[[gnu::always_inline]] inline bool shape_step(const FilterMasks& m, FilterMasks& p, uint64_t& pending) {
  uint64_t d = m.digit, pd = p.digit;
  uint64_t d2 = d & shifted(d, pd, 1), pd2 = pd & (pd << 1);
  uint64_t d4 = d2 & shifted(d2, pd2, 2), pd4 = pd2 & (pd2 << 2);
  uint64_t hit = d4 & shifted(m.sep, p.sep, 4) & shifted(d, pd, 5);
  hit |= d4 & shifted(d4, pd4, 4) & shifted(d4, pd4, 8) & shifted(m.d26, p.d26, 12) & ~shifted(d, pd, 13);
  hit |= d & shifted(m.plus, p.plus, 1) & ~shifted(m.word, p.word, 2);
  uint64_t lead = d2 & shifted(m.letter, p.letter, 2) & shifted(m.letter, p.letter, 3) & ~shifted(m.alnum, p.alnum, 4);
  hit |= lead | pending;
  pending = lead >> 53;
  p = m;
  return hit != 0;
}

// shape_step() for eight blocks at once, a block in each lane of a vector
// (GCC vector extensions: compiled for the instruction set of each kernel
// it is inlined into). Block j's masks are m[j]; `p` and `pending` come
// from the block before block 0 and move on to block 7. Returns bit j set
// when block j passes; lead[j] >> 53 is the pending flag block j leaves.
struct FilterLanes {
  alignas(64) uint64_t digit[8], d26[8], letter[8], alnum[8], sep[8], plus[8], word[8];
};

[[gnu::always_inline]] inline unsigned shape_step8(const FilterLanes& m, FilterMasks& p, uint64_t& pending,
                                                   uint64_t lead_out[8]) {
  typedef uint64_t V8 __attribute__((vector_size(64)));
  V8 d, d26, L, al, sep, plus, word;
  std::memcpy(&plus, m.plus, 64);
  std::memcpy(&word, m.word, 64);
  std::memcpy(&d, m.digit, 64);
  std::memcpy(&d26, m.d26, 64);
  std::memcpy(&L, m.letter, 64);
  std::memcpy(&al, m.alnum, 64);
  std::memcpy(&sep, m.sep, 64);
  // Lane j: lane j - 1 of v; lane 0: the carry (GCC >= 12 and clang).
#define ZTEE_PREV(v, carry) __builtin_shufflevector(v, (V8){carry}, 8, 0, 1, 2, 3, 4, 5, 6)
#define ZTEE_SH(x, px, k) (((x) << (k)) | ((px) >> (64 - (k))))
  V8 pd = ZTEE_PREV(d, p.digit), pd26 = ZTEE_PREV(d26, p.d26), pL = ZTEE_PREV(L, p.letter);
  V8 pal = ZTEE_PREV(al, p.alnum), psep = ZTEE_PREV(sep, p.sep);
  V8 pplus = ZTEE_PREV(plus, p.plus), pword = ZTEE_PREV(word, p.word);
  V8 d2 = d & ZTEE_SH(d, pd, 1), pd2 = pd & (pd << 1);
  V8 d4 = d2 & ZTEE_SH(d2, pd2, 2), pd4 = pd2 & (pd2 << 2);
  V8 hit = d4 & ZTEE_SH(sep, psep, 4) & ZTEE_SH(d, pd, 5);
  hit |= d4 & ZTEE_SH(d4, pd4, 4) & ZTEE_SH(d4, pd4, 8) & ZTEE_SH(d26, pd26, 12) & ~ZTEE_SH(d, pd, 13);
  hit |= d & ZTEE_SH(plus, pplus, 1) & ~ZTEE_SH(word, pword, 2);
  V8 lead = d2 & ZTEE_SH(L, pL, 2) & ZTEE_SH(L, pL, 3) & ~ZTEE_SH(al, pal, 4);
  hit |= lead | ZTEE_PREV(lead >> 53, pending);
#undef ZTEE_PREV
#undef ZTEE_SH
  std::memcpy(lead_out, &lead, 64);
  p = {m.digit[7], m.d26[7], m.letter[7], m.alnum[7], m.sep[7], m.plus[7], m.word[7]};
  pending = lead_out[7] >> 53;
  uint64_t h[8];
  std::memcpy(h, &hit, 64);
  unsigned bits = 0;
  for (unsigned j = 0; j < 8; ++j) bits |= static_cast<unsigned>(h[j] != 0) << j;
  return bits;
}

// A block kernel, one per instruction set: tests the whole 64-byte blocks
// p[0, 64 * n) in turn, carrying `c`, and stops at the first one
// shape_step() lets through: returns its index, with the masks of the block
// before it in *prev and its own in *cur (the carry has moved on to it).
// Returns n when none is.
using ShapeKernel = size_t (*)(const unsigned char* p, size_t n, ShapeCarry* c, ClassMasks* prev, ClassMasks* cur);

// The loop of a kernel around its FILTER and CLASSIFY (no lambdas: they
// would not inherit the function's target). GROUPS: eight blocks at a time
// first (shape_step8; worth it with 512-bit vectors only).
#define ZTEE_SHAPE_KERNEL(FILTER, CLASSIFY, GROUPS)                        \
  FilterMasks pf = filter_of(c->prev);                                     \
  uint64_t pending = c->pending;                                           \
  size_t k = 0;                                                            \
  for (; GROUPS && k + 8 <= n; k += 8) {                                   \
    FilterLanes lanes;                                                     \
    for (size_t j = 0; j < 8; ++j) {                                       \
      FilterMasks m = FILTER(p + 64 * (k + j));                            \
      lanes.digit[j] = m.digit;                                            \
      lanes.d26[j] = m.d26;                                                \
      lanes.letter[j] = m.letter;                                          \
      lanes.alnum[j] = m.alnum;                                            \
      lanes.sep[j] = m.sep;                                                \
      lanes.plus[j] = m.plus;                                              \
      lanes.word[j] = m.word;                                              \
    }                                                                      \
    uint64_t lead[8];                                                      \
    if (unsigned bits = shape_step8(lanes, pf, pending, lead)) {           \
      size_t j = static_cast<size_t>(__builtin_ctz(bits));                 \
      *prev = k + j ? CLASSIFY(p + 64 * (k + j - 1)) : c->prev;            \
      *cur = c->prev = CLASSIFY(p + 64 * (k + j));                         \
      c->pending = lead[j] >> 53;                                          \
      return k + j;                                                        \
    }                                                                      \
  }                                                                        \
  for (; k < n; ++k) {                                                     \
    if (shape_step(FILTER(p + 64 * k), pf, pending)) {                     \
      *prev = k ? CLASSIFY(p + 64 * (k - 1)) : c->prev;                    \
      *cur = c->prev = CLASSIFY(p + 64 * k);                               \
      c->pending = pending;                                                \
      return k;                                                            \
    }                                                                      \
  }                                                                        \
  if (n) c->prev = CLASSIFY(p + 64 * (n - 1));                             \
  c->pending = pending;                                                    \
  return n;

[[gnu::always_inline]] inline ClassMasks classify_portable(const unsigned char* p) {
  ClassMasks m;
  for (size_t i = 0; i < 64; ++i) {
    unsigned char c = p[i];
    uint64_t b = uint64_t{1} << i;
    bool dg = c >= '0' && c <= '9', up = c >= 'A' && c <= 'Z';
    if (dg) m.digit |= b;
    if (c >= '2' && c <= '6') m.d26 |= b;
    if (up) m.letter |= b;
    if (dg || up) m.upper |= b;
    if (dg || up || (c >= 'a' && c <= 'z')) m.alnum |= b;
    if (c == '-') m.dash |= b;
    if (c == ' ') m.space |= b;
    if (c == '.') m.dot |= b;
    if (c == '+') m.plus |= b;
    if (c == '_') m.under |= b;
  }
  return m;
}

[[gnu::always_inline]] inline FilterMasks filter_portable(const unsigned char* p) { return filter_of(classify_portable(p)); }

size_t kernel_portable(const unsigned char* p, size_t n, ShapeCarry* c, ClassMasks* prev, ClassMasks* cur) {
  ZTEE_SHAPE_KERNEL(filter_portable, classify_portable, false)
}

#if defined(__x86_64__) || defined(__i386__)
#define ZTEE_BITS(MOVEMASK, v) static_cast<uint64_t>(static_cast<uint32_t>(MOVEMASK(v)))
#define ZTEE_IN(SUB, MIN, EQ, SET1, MOVEMASK, lo, span) \
  (t = SUB(x, SET1(lo)), ZTEE_BITS(MOVEMASK, EQ(MIN(t, SET1(span)), t)))

[[gnu::always_inline]] inline ClassMasks classify_sse2(const unsigned char* p) {
  ClassMasks m;
  for (int k = 0; k < 4; ++k) {
    __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * k)), t;
    int sh = 16 * k;
    uint64_t dm = ZTEE_IN(_mm_sub_epi8, _mm_min_epu8, _mm_cmpeq_epi8, _mm_set1_epi8, _mm_movemask_epi8, '0', 9);
    uint64_t um = ZTEE_IN(_mm_sub_epi8, _mm_min_epu8, _mm_cmpeq_epi8, _mm_set1_epi8, _mm_movemask_epi8, 'A', 25);
    uint64_t lm = ZTEE_IN(_mm_sub_epi8, _mm_min_epu8, _mm_cmpeq_epi8, _mm_set1_epi8, _mm_movemask_epi8, 'a', 25);
    m.digit |= dm << sh;
    m.d26 |= ZTEE_IN(_mm_sub_epi8, _mm_min_epu8, _mm_cmpeq_epi8, _mm_set1_epi8, _mm_movemask_epi8, '2', 4) << sh;
    m.letter |= um << sh;
    m.upper |= (dm | um) << sh;
    m.alnum |= (dm | um | lm) << sh;
    m.dash |= ZTEE_BITS(_mm_movemask_epi8, _mm_cmpeq_epi8(x, _mm_set1_epi8('-'))) << sh;
    m.space |= ZTEE_BITS(_mm_movemask_epi8, _mm_cmpeq_epi8(x, _mm_set1_epi8(' '))) << sh;
    m.dot |= ZTEE_BITS(_mm_movemask_epi8, _mm_cmpeq_epi8(x, _mm_set1_epi8('.'))) << sh;
    m.plus |= ZTEE_BITS(_mm_movemask_epi8, _mm_cmpeq_epi8(x, _mm_set1_epi8('+'))) << sh;
    m.under |= ZTEE_BITS(_mm_movemask_epi8, _mm_cmpeq_epi8(x, _mm_set1_epi8('_'))) << sh;
  }
  return m;
}

[[gnu::always_inline]] inline FilterMasks filter_sse2(const unsigned char* p) {
  FilterMasks m;
  for (int k = 0; k < 4; ++k) {
    __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * k)), t;
    int sh = 16 * k;
    uint64_t dm = ZTEE_IN(_mm_sub_epi8, _mm_min_epu8, _mm_cmpeq_epi8, _mm_set1_epi8, _mm_movemask_epi8, '0', 9);
    uint64_t um = ZTEE_IN(_mm_sub_epi8, _mm_min_epu8, _mm_cmpeq_epi8, _mm_set1_epi8, _mm_movemask_epi8, 'A', 25);
    uint64_t d26 = ZTEE_IN(_mm_sub_epi8, _mm_min_epu8, _mm_cmpeq_epi8, _mm_set1_epi8, _mm_movemask_epi8, '2', 4);
    uint64_t sep = ZTEE_IN(_mm_sub_epi8, _mm_min_epu8, _mm_cmpeq_epi8, _mm_set1_epi8, _mm_movemask_epi8, '-', 1) |
                   ZTEE_BITS(_mm_movemask_epi8, _mm_cmpeq_epi8(x, _mm_set1_epi8(' ')));
    uint64_t pm = ZTEE_BITS(_mm_movemask_epi8, _mm_cmpeq_epi8(x, _mm_set1_epi8('+')));
    uint64_t us = ZTEE_BITS(_mm_movemask_epi8, _mm_cmpeq_epi8(x, _mm_set1_epi8('_')));
    x = _mm_or_si128(x, _mm_set1_epi8(0x20));  // letters of either case
    uint64_t am = ZTEE_IN(_mm_sub_epi8, _mm_min_epu8, _mm_cmpeq_epi8, _mm_set1_epi8, _mm_movemask_epi8, 'a', 25);
    m.digit |= dm << sh;
    m.d26 |= d26 << sh;
    m.letter |= um << sh;
    m.alnum |= (dm | am) << sh;
    m.sep |= sep << sh;
    m.plus |= pm << sh;
    m.word |= (dm | am | pm | us) << sh;
  }
  return m;
}

size_t kernel_sse2(const unsigned char* p, size_t n, ShapeCarry* c, ClassMasks* prev, ClassMasks* cur) {
  ZTEE_SHAPE_KERNEL(filter_sse2, classify_sse2, false)
}

[[gnu::always_inline]] __attribute__((target("avx2"))) inline ClassMasks classify_avx2(const unsigned char* p) {
  ClassMasks m;
  for (int k = 0; k < 2; ++k) {
    __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32 * k)), t;
    int sh = 32 * k;
    uint64_t dm = ZTEE_IN(_mm256_sub_epi8, _mm256_min_epu8, _mm256_cmpeq_epi8, _mm256_set1_epi8, _mm256_movemask_epi8, '0', 9);
    uint64_t um = ZTEE_IN(_mm256_sub_epi8, _mm256_min_epu8, _mm256_cmpeq_epi8, _mm256_set1_epi8, _mm256_movemask_epi8, 'A', 25);
    uint64_t lm = ZTEE_IN(_mm256_sub_epi8, _mm256_min_epu8, _mm256_cmpeq_epi8, _mm256_set1_epi8, _mm256_movemask_epi8, 'a', 25);
    m.digit |= dm << sh;
    m.d26 |= ZTEE_IN(_mm256_sub_epi8, _mm256_min_epu8, _mm256_cmpeq_epi8, _mm256_set1_epi8, _mm256_movemask_epi8, '2', 4)
             << sh;
    m.letter |= um << sh;
    m.upper |= (dm | um) << sh;
    m.alnum |= (dm | um | lm) << sh;
    m.dash |= ZTEE_BITS(_mm256_movemask_epi8, _mm256_cmpeq_epi8(x, _mm256_set1_epi8('-'))) << sh;
    m.space |= ZTEE_BITS(_mm256_movemask_epi8, _mm256_cmpeq_epi8(x, _mm256_set1_epi8(' '))) << sh;
    m.dot |= ZTEE_BITS(_mm256_movemask_epi8, _mm256_cmpeq_epi8(x, _mm256_set1_epi8('.'))) << sh;
    m.plus |= ZTEE_BITS(_mm256_movemask_epi8, _mm256_cmpeq_epi8(x, _mm256_set1_epi8('+'))) << sh;
    m.under |= ZTEE_BITS(_mm256_movemask_epi8, _mm256_cmpeq_epi8(x, _mm256_set1_epi8('_'))) << sh;
  }
  return m;
}

[[gnu::always_inline]] __attribute__((target("avx2"))) inline FilterMasks filter_avx2(const unsigned char* p) {
  FilterMasks m;
  for (int k = 0; k < 2; ++k) {
    __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32 * k)), t;
    int sh = 32 * k;
    uint64_t dm = ZTEE_IN(_mm256_sub_epi8, _mm256_min_epu8, _mm256_cmpeq_epi8, _mm256_set1_epi8, _mm256_movemask_epi8, '0', 9);
    uint64_t um = ZTEE_IN(_mm256_sub_epi8, _mm256_min_epu8, _mm256_cmpeq_epi8, _mm256_set1_epi8, _mm256_movemask_epi8, 'A', 25);
    uint64_t d26 = ZTEE_IN(_mm256_sub_epi8, _mm256_min_epu8, _mm256_cmpeq_epi8, _mm256_set1_epi8, _mm256_movemask_epi8, '2', 4);
    uint64_t sep = ZTEE_IN(_mm256_sub_epi8, _mm256_min_epu8, _mm256_cmpeq_epi8, _mm256_set1_epi8, _mm256_movemask_epi8, '-', 1) |
                   ZTEE_BITS(_mm256_movemask_epi8, _mm256_cmpeq_epi8(x, _mm256_set1_epi8(' ')));
    uint64_t pm = ZTEE_BITS(_mm256_movemask_epi8, _mm256_cmpeq_epi8(x, _mm256_set1_epi8('+')));
    uint64_t us = ZTEE_BITS(_mm256_movemask_epi8, _mm256_cmpeq_epi8(x, _mm256_set1_epi8('_')));
    x = _mm256_or_si256(x, _mm256_set1_epi8(0x20));  // letters of either case
    uint64_t am = ZTEE_IN(_mm256_sub_epi8, _mm256_min_epu8, _mm256_cmpeq_epi8, _mm256_set1_epi8, _mm256_movemask_epi8, 'a', 25);
    m.digit |= dm << sh;
    m.d26 |= d26 << sh;
    m.letter |= um << sh;
    m.alnum |= (dm | am) << sh;
    m.sep |= sep << sh;
    m.plus |= pm << sh;
    m.word |= (dm | am | pm | us) << sh;
  }
  return m;
}

__attribute__((target("avx2"))) size_t kernel_avx2(const unsigned char* p, size_t n, ShapeCarry* c, ClassMasks* prev,
                                                   ClassMasks* cur) {
  ZTEE_SHAPE_KERNEL(filter_avx2, classify_avx2, false)
}
#undef ZTEE_IN
#undef ZTEE_BITS

#define ZTEE_IN(x, lo, span) \
  static_cast<uint64_t>(_mm512_cmple_epu8_mask(_mm512_sub_epi8(x, _mm512_set1_epi8(lo)), _mm512_set1_epi8(span)))
#define ZTEE_IS(x, c) static_cast<uint64_t>(_mm512_cmpeq_epi8_mask(x, _mm512_set1_epi8(c)))

[[gnu::always_inline]] __attribute__((target("avx512f,avx512bw"))) inline ClassMasks classify_avx512(
    const unsigned char* p) {
  const __m512i x = _mm512_loadu_si512(p);
  ClassMasks m;
  m.digit = ZTEE_IN(x, '0', 9);
  m.d26 = ZTEE_IN(x, '2', 4);
  m.letter = ZTEE_IN(x, 'A', 25);
  m.upper = m.digit | m.letter;
  m.alnum = m.upper | ZTEE_IN(x, 'a', 25);
  m.dash = ZTEE_IS(x, '-');
  m.space = ZTEE_IS(x, ' ');
  m.dot = ZTEE_IS(x, '.');
  m.plus = ZTEE_IS(x, '+');
  m.under = ZTEE_IS(x, '_');
  return m;
}

[[gnu::always_inline]] __attribute__((target("avx512f,avx512bw"))) inline FilterMasks filter_avx512(
    const unsigned char* p) {
  const __m512i x = _mm512_loadu_si512(p);
  FilterMasks m;
  m.digit = ZTEE_IN(x, '0', 9);
  m.d26 = ZTEE_IN(x, '2', 4);
  m.letter = ZTEE_IN(x, 'A', 25);
  m.alnum = m.digit | ZTEE_IN(_mm512_or_si512(x, _mm512_set1_epi8(0x20)), 'a', 25);
  m.sep = ZTEE_IN(x, '-', 1) | ZTEE_IS(x, ' ');
  m.plus = ZTEE_IS(x, '+');
  m.word = m.alnum | m.plus | ZTEE_IS(x, '_');
  return m;
}
#undef ZTEE_IN
#undef ZTEE_IS

__attribute__((target("avx512f,avx512bw"))) size_t kernel_avx512(const unsigned char* p, size_t n, ShapeCarry* c,
                                                                  ClassMasks* prev, ClassMasks* cur) {
  ZTEE_SHAPE_KERNEL(filter_avx512, classify_avx512, true)
}
#endif
#undef ZTEE_SHAPE_KERNEL

// The kernel for ZTEE_DLP_ISA (unset, empty or "auto": the best the CPU has).
Result<ShapeKernel> shape_kernel() {
  const char* env = std::getenv("ZTEE_DLP_ISA");
  std::string_view want = env ? env : "";
  if (want == "portable") return kernel_portable;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  bool avx512 = __builtin_cpu_supports("avx512bw"), avx2 = __builtin_cpu_supports("avx2");
  if (want.empty() || want == "auto") return avx512 ? kernel_avx512 : avx2 ? kernel_avx2 : kernel_sse2;
  if (want == "sse2") return kernel_sse2;
  if ((want == "avx2" && avx2) || (want == "avx512bw" && avx512)) return want == "avx2" ? kernel_avx2 : kernel_avx512;
  if (want == "avx2" || want == "avx512bw")
    return make_error(Errc::kInvalidArgument, fmt::format("ZTEE_DLP_ISA={}: this CPU lacks {}", want, want));
#else
  if (want.empty() || want == "auto") return kernel_portable;
  if (want == "sse2" || want == "avx2" || want == "avx512bw")
    return make_error(Errc::kInvalidArgument, fmt::format("ZTEE_DLP_ISA={}: this CPU lacks {}", want, want));
#endif
  return make_error(Errc::kInvalidArgument,
                    fmt::format("ZTEE_DLP_ISA={}: not one of auto, avx512bw, avx2, sse2, portable", want));
}

// A witness kind: which detector it serves and how its walk goes on.
struct Walk {
  Shape shape;
  bool digits;          // run class: digits (else capitals and digits)
  const char* seps;     // one of these may join two runs ("": none)
  const char* seps2;    // a trail byte after which the match may end one byte later
  uint32_t reach;       // run ends considered at most this far after the witness
  // A match may end before a separator that joins two runs (IBAN: its trail
  // is any non-alphanumeric byte; card: no, a space or dash before a digit
  // is no trail of its expression).
  bool ends_inside;
  bool plus = false;  // a '+' phone: walk_plus() instead
};
// The witnesses: SSN and NANP phones end with theirs (ddd-dd-dddd,
// ddd[.-]dddd). Cards and IBANs begin with theirs, a lead byte and the first
// bytes of the match: a non-digit then [2-6] and 12 digits (bare) or
// [2-6]ddd[ -]dddd (grouped, 4-4-4-x and 4-6-x alike); a byte that is no
// letter or digit, then two capitals, two digits and 11 capitals/digits
// (electronic) or AA99 XXXX XXXX (printed). Reaches: the longest match
// (19 digits; 4-4-4-4-4 = 24 bytes; 34; 4 + 7 * 5 + 4 = 43) less the bytes
// of the match in the witness. The '+' phones (E.164 and international with
// separators) begin with theirs: a byte that is no letter, digit, '_' or
// '+', then '+' and a digit; the core goes on at most 44 bytes after it.
constexpr Walk kWalks[] = {
    {Shape::kSsn, true, "", "", 0, true},     {Shape::kNanp, true, "", ".", 0, true},
    {Shape::kCard, true, "", " -", 6, true},  {Shape::kCard, true, " -", " -", 15, false},
    {Shape::kIban, false, "", "", 19, true},  {Shape::kIban, false, " ", "", 29, true},
    {Shape::kE164, true, "", "", 44, true, true}, {Shape::kIntl, true, "", "", 44, true, true},
};
constexpr int kWalkKinds = sizeof(kWalks) / sizeof(kWalks[0]);

// A block's masks with the runs the witnesses are built from. Shifts
// reach into the previous block (its bits, computed the same way), so every
// byte is classified once; before the stream every mask is clear (the
// expressions' ^ counts as "not a digit/letter").
struct BlockBits {
  uint64_t d = 0, d26 = 0, L = 0, u = 0, al = 0, dash = 0, sp = 0, dot = 0, plus = 0, word = 0;
  uint64_t d2 = 0, d4 = 0, d8 = 0, u2 = 0, u4 = 0, u8 = 0, lldd = 0;  // lldd: last byte of two capitals, two digits
};

// Bit i of the result: bit i - k of the stream of `f` (cur after prev).
inline uint64_t back(const BlockBits& cur, const BlockBits& prev, uint64_t BlockBits::*f, int k) {
  return (cur.*f << k) | (prev.*f >> (64 - k));
}

inline BlockBits derive(const ClassMasks& m, const BlockBits& prev) {
  using X = BlockBits;
  BlockBits b;
  b.d = m.digit, b.d26 = m.d26, b.L = m.letter, b.u = m.upper, b.al = m.alnum;
  b.dash = m.dash, b.sp = m.space, b.dot = m.dot, b.plus = m.plus, b.word = m.alnum | m.under | m.plus;
  b.d2 = b.d & back(b, prev, &X::d, 1);
  b.d4 = b.d2 & back(b, prev, &X::d2, 2);
  b.d8 = b.d4 & back(b, prev, &X::d4, 4);
  b.u2 = b.u & back(b, prev, &X::u, 1);
  b.u4 = b.u2 & back(b, prev, &X::u2, 2);
  b.u8 = b.u4 & back(b, prev, &X::u4, 4);
  b.lldd = b.d2 & back(b, prev, &X::L, 2) & back(b, prev, &X::L, 3);
  return b;
}

// Each kind is tested on its rarest part first (a separator before four
// digits; eight digits; two capitals and two digits): most blocks stop there.
inline void witnesses(const BlockBits& c, const BlockBits& p, uint64_t w[kWalkKinds]) {
  auto B = [&](uint64_t BlockBits::*f, int k) { return back(c, p, f, k); };
  using X = BlockBits;
  for (int k = 0; k < kWalkKinds; ++k) w[k] = 0;
  if (uint64_t sep4 = c.d4 & (B(&X::dash, 4) | B(&X::dot, 4) | B(&X::sp, 4))) {
    uint64_t dash4 = sep4 & B(&X::dash, 4);
    if (dash4) w[0] = dash4 & B(&X::d2, 5) & B(&X::dash, 7) & B(&X::d2, 8) & B(&X::d, 10);
    w[1] = (dash4 | (sep4 & B(&X::dot, 4))) & B(&X::d2, 5) & B(&X::d, 7);
    w[3] = (dash4 | (sep4 & B(&X::sp, 4))) & ~B(&X::d, 9) & B(&X::d26, 8) & B(&X::d2, 6) & B(&X::d, 5);
  }
  if (c.d8) w[2] = c.d8 & B(&X::d4, 8) & B(&X::d26, 12) & ~B(&X::d, 13);
  if (c.lldd | (p.lldd >> 50)) {
    w[4] = c.u8 & B(&X::lldd, 11) & B(&X::u, 10) & B(&X::u2, 8) & ~B(&X::al, 15);
    w[5] = c.u4 & B(&X::sp, 4) & B(&X::u4, 5) & B(&X::sp, 9) & B(&X::lldd, 10) & ~B(&X::al, 14);
  }
  w[6] = w[7] = c.d & B(&X::plus, 1) & ~B(&X::word, 2);
}

struct HsDatabase {
  hs_database_t* db = nullptr;
  hs_scratch_t* scratch = nullptr;
  ~HsDatabase() {
    if (scratch) hs_free_scratch(scratch);
    if (db) hs_free_database(db);
  }
};

}  // namespace

struct Owner {
  std::string name;
  bool injection = false;
  DlpMode mode = DlpMode::kReport;
  InjectionAction action = InjectionAction::kReport;
  int track = 1;  // 0: edits the output; 1: events only
  bool merge_adjacent = false;
  std::string redacted;  // "[REDACTED:<name>]"
};

struct Pattern {
  int owner = 0;
  std::string regex;
  unsigned hs_flags = 0;
  bool caseless = false;
  bool opener = false;
  int group = -1;            // long pattern group (its opener and its match)
  uint32_t opener_fixed = 0;
  Check check = Check::kNone;
  ByteSet front{}, back{};
  uint64_t max_width = 0;
  bool confirm = false;      // Hyperscan runs a prefilter (or a shape scan proposes ends): RE2 decides
  Shape shape = Shape::kNone;
  std::shared_ptr<RE2> re_mid, re_eod;  // short matches and openers found by RE2
};

struct Group {
  int owner = 0;
  uint64_t cap = 0;
  bool truncate_on_expiry = false;
};

class DlpScannerImpl {
 public:
  DlpOptions opts;
  std::vector<Owner> owners;
  std::vector<Pattern> patterns;
  std::vector<Group> groups;
  HsDatabase hs;
  std::string hash_key;
  uint64_t window[2] = {0, 0};  // per track: no unseen candidate starts before total - window
  uint64_t keep = 0;            // bytes kept for start recovery
  bool has_edits = false;
  int shape_pattern[kShapes] = {-1, -1, -1, -1, -1, -1, -1};  // pattern of each Shape in use
  bool any_shape = false;
  ShapeKernel kernel = nullptr;  // the block kernel of the shape scan

  Result<void> build();
  Result<void> add_pattern(int owner, const PatternDef& def, bool caller, bool caseless);
};

namespace {

Error invalid(std::string msg) { return make_error(Errc::kInvalidArgument, std::move(msg)); }

}  // namespace

Result<void> DlpScannerImpl::add_pattern(int owner, const PatternDef& def, bool caller, bool caseless) {
  const std::string& oname = owners[static_cast<size_t>(owner)].name;
  auto info_of = [&](const std::string& re, unsigned flags, hs_expr_info_t** info) -> Result<void> {
    hs_compile_error_t* err = nullptr;
    if (hs_expression_info(re.c_str(), flags, info, &err) != HS_SUCCESS) {
      std::string m = err ? err->message : "unknown error";
      hs_free_compile_error(err);
      return invalid(fmt::format("{} '{}': regex '{}' is not accepted by Hyperscan: {}",
                                 owners[static_cast<size_t>(owner)].injection ? "injection rule" : "detector", oname,
                                 re, m));
    }
    return {};
  };
  auto make_re2 = [&](const std::string& re, std::shared_ptr<RE2>* mid, std::shared_ptr<RE2>* eod) -> Result<void> {
    RE2::Options o;
    o.set_encoding(RE2::Options::EncodingLatin1);
    o.set_log_errors(false);
    o.set_case_sensitive(!caseless);
    o.set_dot_nl(false);
    // Both are searched for a match ending at the end of the text they are
    // given, so they end in \z: RE2 then runs its reverse automaton from
    // that end and reads only as far back as a match can reach.
    RE2 plain(re, o), plain_mid(without_dollar(re), o);
    if (!plain.ok() || !plain_mid.ok())
      return invalid(fmt::format("{} '{}': regex '{}' is not accepted by RE2 (libztee needs the syntax both "
                                 "Hyperscan and RE2 accept): {}",
                                 owners[static_cast<size_t>(owner)].injection ? "injection rule" : "detector", oname,
                                 re, plain.ok() ? plain_mid.error() : plain.error()));
    *eod = std::make_shared<RE2>("(?:" + re + ")\\z", o);
    *mid = std::make_shared<RE2>("(?:" + without_dollar(re) + ")\\z", o);
    if (!(*eod)->ok() || !(*mid)->ok())
      return make_error(Errc::kInternal, fmt::format("{} '{}': regex '{}' does not compile in a group before \\z: {}",
                                                     owners[static_cast<size_t>(owner)].injection ? "injection rule" : "detector",
                                                     oname, re, (*eod)->ok() ? (*mid)->error() : (*eod)->error()));
    return {};
  };
  unsigned flags = caseless ? HS_FLAG_CASELESS : 0;

  Pattern p;
  p.owner = owner;
  p.regex = def.prefilter.empty() ? def.regex : def.prefilter;
  p.confirm = !def.prefilter.empty() || def.shape != Shape::kNone;
  p.shape = def.shape;
  p.hs_flags = flags;
  p.caseless = caseless;
  p.check = def.check;
  p.front = byte_set(def.front);
  p.back = byte_set(def.back);
  hs_expr_info_t* info = nullptr;
  if (auto r = info_of(def.regex, flags, &info); !r) return r;
  p.max_width = info->max_width;
  bool empty = info->min_width == 0;
  std::free(info);
  if (empty)
    return invalid(fmt::format("{} '{}': regex '{}' can match the empty string; make it match at least one byte",
                               owners[static_cast<size_t>(owner)].injection ? "injection rule" : "detector", oname,
                               def.regex));

  if (def.opener.empty()) {
    if (p.max_width > kMaxShortWidth) {
      if (caller)
        return invalid(fmt::format("{} '{}': regex '{}' can match more than {} bytes{}; bound its repeats (e.g. "
                                   "{{1,256}} instead of + or *)",
                                   owners[static_cast<size_t>(owner)].injection ? "injection rule" : "detector",
                                   oname, def.regex, kMaxShortWidth,
                                   p.max_width == UINT_MAX ? " (it is unbounded)" : ""));
      return make_error(Errc::kInternal, fmt::format("built-in {} pattern too wide without an opener", oname));
    }
    if (auto r = make_re2(def.regex, &p.re_mid, &p.re_eod); !r) return r;
    patterns.push_back(std::move(p));
    return {};
  }

  // A long pattern: its opener first.
  Group g;
  g.owner = owner;
  g.cap = def.cap ? def.cap : p.max_width;
  g.truncate_on_expiry = def.truncate_on_expiry;
  if (g.cap == UINT_MAX || g.cap == 0) return make_error(Errc::kInternal, "long pattern without a cap");
  int gid = static_cast<int>(groups.size());
  groups.push_back(g);
  Pattern o;
  o.owner = owner;
  o.regex = def.opener;
  o.hs_flags = flags;
  o.caseless = caseless;
  o.opener = true;
  o.group = gid;
  o.opener_fixed = def.opener_fixed;
  o.front = p.front;
  o.back = byte_set("*");
  if (auto r = info_of(def.opener, flags, &info); !r) return r;
  o.max_width = info->max_width;
  std::free(info);
  if (!o.opener_fixed)
    if (auto r = make_re2(def.opener, &o.re_mid, &o.re_eod); !r) return r;
  patterns.push_back(std::move(o));
  p.group = gid;
  patterns.push_back(std::move(p));
  return {};
}

Result<void> DlpScannerImpl::build() {
  // Owners and their patterns.
  std::set<std::string> names;
  const auto& bdet = builtin_detectors();
  for (const auto& d : opts.detectors) {
    auto it = std::find_if(bdet.begin(), bdet.end(), [&](const BuiltinDef& b) { return b.name == d.name; });
    if (it == bdet.end())
      return invalid(fmt::format("unknown DLP detector '{}' (built-in detectors: {}; caller patterns go in "
                                 "DlpOptions::custom)",
                                 d.name, fmt::join(DlpOptions::builtin_detectors(), ", ")));
    if (!names.insert(d.name).second) return invalid(fmt::format("DLP detector '{}' is listed twice", d.name));
  }
  if (opts.entropy_min_length < 16 || opts.entropy_min_length > 128)
    return invalid("DlpOptions::entropy_min_length must be within 16..128");
  if (!(opts.entropy_bits > 0 && opts.entropy_bits <= 8)) return invalid("DlpOptions::entropy_bits must be within (0, 8]");
  // Built-ins in their own priority order, whatever the order of the list.
  for (const auto& b : bdet) {
    auto it = std::find_if(opts.detectors.begin(), opts.detectors.end(), [&](const DlpDetector& d) { return d.name == b.name; });
    if (it == opts.detectors.end()) continue;
    Owner o;
    o.name = b.name;
    o.mode = it->mode;
    o.track = it->mode == DlpMode::kReport ? 1 : 0;
    int oid = static_cast<int>(owners.size());
    owners.push_back(o);
    for (const auto& p : b.patterns)
      if (auto r = add_pattern(oid, p, false, false); !r) return r;
    if (b.name == "aws_secret_key" && opts.aws_secret_without_context) {
      PatternDef bare;
      bare.regex = "(?:^|[^A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?:[^A-Za-z0-9/+=]|$)";
      bare.check = Check::kAwsBare;
      bare.front = "A-Za-z0-9/+";
      bare.back = "A-Za-z0-9/+";
      if (auto r = add_pattern(oid, bare, false, false); !r) return r;
    }
  }
  for (const auto& c : opts.custom) {
    if (!valid_name(c.name)) return invalid(fmt::format("custom detector name '{}': use [a-z0-9_]+ (1-64 bytes)", c.name));
    if (!names.insert(c.name).second || std::any_of(bdet.begin(), bdet.end(), [&](const BuiltinDef& b) { return b.name == c.name; }))
      return invalid(fmt::format("custom detector '{}': the name is taken (built-in or listed twice)", c.name));
    if (c.regexes.empty() && c.literals.empty())
      return invalid(fmt::format("custom detector '{}': give at least one regex or literal", c.name));
    Owner o;
    o.name = c.name;
    o.mode = c.mode;
    o.track = c.mode == DlpMode::kReport ? 1 : 0;
    int oid = static_cast<int>(owners.size());
    owners.push_back(o);
    for (const auto& re : c.regexes)
      if (auto r = add_pattern(oid, PatternDef{re}, true, c.caseless); !r) return r;
    for (const auto& lit : c.literals) {
      if (lit.empty()) return invalid(fmt::format("custom detector '{}': an empty literal", c.name));
      if (auto r = add_pattern(oid, PatternDef{literal_regex(lit)}, true, c.caseless); !r) return r;
    }
  }
  std::set<std::string> rule_ids;
  const auto& brules = builtin_rules();
  for (const auto& entry : opts.injection_actions) {
    const std::string& id = entry.first;  // not a structured binding: clang before 16 cannot capture one in a lambda
    if (std::none_of(brules.begin(), brules.end(), [&](const BuiltinDef& b) { return b.name == id; }))
      return invalid(fmt::format("DlpOptions::injection_actions: unknown rule '{}' (shipped rules: {})", id,
                                 fmt::join(DlpOptions::builtin_injection_rules(), ", ")));
  }
  if (opts.injection) {
    for (const auto& b : brules) {
      Owner o;
      o.name = b.name;
      o.injection = true;
      auto it = opts.injection_actions.find(b.name);
      o.action = it == opts.injection_actions.end() ? b.default_action : it->second;
      o.track = o.action == InjectionAction::kStrip ? 0 : 1;
      o.merge_adjacent = b.merge_adjacent;
      rule_ids.insert(b.name);
      int oid = static_cast<int>(owners.size());
      owners.push_back(o);
      for (const auto& p : b.patterns)
        if (auto r = add_pattern(oid, p, false, false); !r) return r;
    }
  }
  for (const auto& rule : opts.injection_rules) {
    if (!valid_name(rule.id)) return invalid(fmt::format("injection rule id '{}': use [a-z0-9_]+ (1-64 bytes)", rule.id));
    if (!rule_ids.insert(rule.id).second || std::any_of(brules.begin(), brules.end(), [&](const BuiltinDef& b) { return b.name == rule.id; }))
      return invalid(fmt::format("injection rule '{}': the id is taken (shipped rule or listed twice)", rule.id));
    if (rule.regexes.empty() && rule.literals.empty())
      return invalid(fmt::format("injection rule '{}': give at least one regex or literal", rule.id));
    Owner o;
    o.name = rule.id;
    o.injection = true;
    o.action = rule.action;
    o.track = rule.action == InjectionAction::kStrip ? 0 : 1;
    int oid = static_cast<int>(owners.size());
    owners.push_back(o);
    for (const auto& re : rule.regexes)
      if (auto r = add_pattern(oid, PatternDef{re}, true, rule.caseless); !r) return r;
    for (const auto& lit : rule.literals) {
      if (lit.empty()) return invalid(fmt::format("injection rule '{}': an empty literal", rule.id));
      if (auto r = add_pattern(oid, PatternDef{literal_regex(lit)}, true, rule.caseless); !r) return r;
    }
  }
  if (patterns.empty()) return invalid("DlpOptions: no detector and no injection rule is enabled");

  for (auto& o : owners) o.redacted = fmt::format("[REDACTED:{}]", o.name);

  // Windows. A shape pattern's ends are found up to kShapeLag bytes late,
  // and its witness masks need the 64-byte block before.
  for (size_t i = 0; i < patterns.size(); ++i) {
    const auto& p = patterns[i];
    if (p.group >= 0 && !p.opener) continue;  // long matches: bounded by their opener
    int t = owners[static_cast<size_t>(p.owner)].track;
    uint64_t lag = p.shape == Shape::kNone ? 0 : kShapeLag;
    // A '+' phone is found when its witness (its lead, '+' and a digit) is,
    // kShapeLag bytes behind the input: it starts at most that far and two
    // bytes back.
    bool from_start = p.shape == Shape::kE164 || p.shape == Shape::kIntl;
    window[t] = std::max(window[t], from_start ? kShapeLag + 2 : p.max_width + lag);
    keep = std::max(keep, p.max_width + 1 + lag + (lag ? 128 : 0));  // two blocks of masks
    if (p.shape != Shape::kNone) {
      if (shape_pattern[static_cast<int>(p.shape)] >= 0)
        return make_error(Errc::kInternal, "two built-in patterns with one shape");
      shape_pattern[static_cast<int>(p.shape)] = static_cast<int>(i);
      any_shape = true;
    }
  }
  has_edits = std::any_of(owners.begin(), owners.end(), [](const Owner& o) { return o.track == 0; });
  auto k = shape_kernel();
  if (!k) return std::move(k).error();
  kernel = *k;

  // The database.
  std::vector<const char*> exprs;
  std::vector<unsigned> flags, ids;
  for (size_t i = 0; i < patterns.size(); ++i) {
    if (patterns[i].shape != Shape::kNone) continue;
    exprs.push_back(patterns[i].regex.c_str());
    flags.push_back(patterns[i].hs_flags);
    ids.push_back(static_cast<unsigned>(i));
  }
  hs_compile_error_t* err = nullptr;
  if (!exprs.empty() && hs_compile_multi(exprs.data(), flags.data(), ids.data(), static_cast<unsigned>(exprs.size()), HS_MODE_STREAM,
                       nullptr, &hs.db, &err) != HS_SUCCESS) {
    std::string where = "the database";
    if (err && err->expression >= 0) {
      const auto& p = patterns[static_cast<size_t>(err->expression)];
      where = fmt::format("'{}' regex '{}'", owners[static_cast<size_t>(p.owner)].name, p.regex);
    }
    std::string m = err ? err->message : "unknown error";
    hs_free_compile_error(err);
    return invalid(fmt::format("Hyperscan cannot compile {}: {}", where, m));
  }
  if (hs.db && hs_alloc_scratch(hs.db, &hs.scratch) != HS_SUCCESS) return make_error(Errc::kNoMemory, "hs_alloc_scratch failed");

  hash_key = opts.hash_key;
  if (hash_key.empty()) {
    hash_key.resize(32);
    if (RAND_bytes(reinterpret_cast<unsigned char*>(hash_key.data()), 32) != 1)
      return make_error(Errc::kInternal, "RAND_bytes failed for the DLP hash key");
  }
  return {};
}

// ------------------------------------------------------------------ stream

class DlpStreamImpl {
 public:
  DlpStreamImpl(std::shared_ptr<const DlpScannerImpl> sc, std::string name) : sc_(std::move(sc)), name_(std::move(name)) {}
  ~DlpStreamImpl() {
    if (hs_) hs_close_stream(hs_, scratch_, nullptr, nullptr);
    if (scratch_) hs_free_scratch(scratch_);
  }
  Result<void> open() {
    if (!sc_->hs.db) return {};  // shape patterns only
    if (hs_clone_scratch(sc_->hs.scratch, &scratch_) != HS_SUCCESS) return make_error(Errc::kNoMemory, "hs_clone_scratch failed");
    if (hs_open_stream(sc_->hs.db, 0, &hs_) != HS_SUCCESS) return make_error(Errc::kNoMemory, "hs_open_stream failed");
    return {};
  }

  std::string feed(std::string_view chunk);
  std::string finish();

  std::vector<DlpFinding> findings_;
  std::vector<InjectionAnomaly> anomalies_;
  bool blocked_ = false;
  std::string reason_;
  uint64_t total_ = 0, out_bytes_ = 0;

 private:
  struct Cand {
    uint64_t start = 0, end = 0;
    int owner = 0;
    int pattern = 0;
    bool truncated = false;
    std::string rep;
    const std::string* fixed = nullptr;  // instead of rep: the detector's redact token
    const std::string& text() const { return fixed ? *fixed : rep; }
  };
  struct Open {
    int group;
    uint64_t start;
  };

  static int on_match(unsigned id, unsigned long long from, unsigned long long to, unsigned flags, void* ctx) {
    static_cast<DlpStreamImpl*>(ctx)->match(id, to);
    return 0;
  }
  void match(unsigned id, uint64_t to);
  void scan_shapes();
  void walk(const Walk& k, int pid, uint64_t witness_end);
  void walk_plus(int pid, uint64_t witness_end);
  void propose(int pid, uint64_t to);
  bool recover_start(const Pattern& p, uint64_t to, uint64_t* start);
  // Stream bytes [a, b): kept bytes (buf_, from base_) then the chunk being
  // fed (cur_, from cur_at_). A range across both is copied into join_: the
  // view is good until the next call.
  std::string_view bytes(uint64_t a, uint64_t b) {
    if (a >= cur_at_) return cur_.substr(static_cast<size_t>(a - cur_at_), static_cast<size_t>(b - a));
    if (b <= cur_at_) return std::string_view(buf_).substr(static_cast<size_t>(a - base_), static_cast<size_t>(b - a));
    join_.assign(buf_, static_cast<size_t>(a - base_), std::string::npos);
    join_.append(cur_.substr(0, static_cast<size_t>(b - cur_at_)));
    return join_;
  }
  unsigned char byte_at(uint64_t x) const {
    return static_cast<unsigned char>(x >= cur_at_ ? cur_[static_cast<size_t>(x - cur_at_)]
                                                   : buf_[static_cast<size_t>(x - base_)]);
  }
  void add_candidate(const Pattern& p, int pid, uint64_t s, uint64_t e, bool truncated);
  std::string replacement(const Owner& o, std::string_view value, const std::string& canonical) const;
  uint64_t frontier(int track) const;
  void expire(bool final);
  void decide(bool final);
  std::string release(bool final);
  void absorb(uint64_t keep);
  void fail(std::string why);

  std::shared_ptr<const DlpScannerImpl> sc_;
  std::string name_;
  hs_stream_t* hs_ = nullptr;
  hs_scratch_t* scratch_ = nullptr;
  std::string buf_;         // bytes [base_, cur_at_) kept from earlier chunks
  std::string_view cur_;    // the chunk feed() is scanning, from cur_at_
  uint64_t cur_at_ = 0;
  std::string join_;
  uint64_t base_ = 0, emitted_ = 0;
  bool ending_ = false, finished_ = false, failed_ = false;
  std::vector<Open> open_;
  std::vector<Cand> pending_[2];
  std::vector<Cand> edits_;
  uint64_t last_end_[2] = {0, 0};
  int last_owner_[2] = {-1, -1};
  size_t last_anomaly_[2] = {SIZE_MAX, SIZE_MAX};
  uint64_t shape_pos_ = 0;  // witnesses ending before this are done
  std::array<uint64_t, 8> proposed_[kShapes] = {};  // recent ends proposed per shape (+1; 0: none)
  unsigned proposed_at_[kShapes] = {};
};

void DlpStreamImpl::fail(std::string why) {
  if (failed_) return;
  failed_ = true;
  blocked_ = true;
  reason_ = "DLP scanner internal error: " + why;
}

bool DlpStreamImpl::recover_start(const Pattern& p, uint64_t to, uint64_t* start) {
  uint64_t lo = to > p.max_width + 1 ? to - p.max_width - 1 : 0;
  if (lo < base_) {
    fail(fmt::format("match window before the kept bytes ({} < {})", lo, base_));
    return false;
  }
  std::string_view text = bytes(lo, to);
  const RE2& re = ending_ && to == total_ ? *p.re_eod : *p.re_mid;
  // The expression ends in \z: the leftmost match is the one from the
  // smallest start that matches exactly up to `to`.
  re2::StringPiece m;
  if (re.Match(text, 0, text.size(), RE2::UNANCHORED, &m, 1)) {
    *start = lo + static_cast<uint64_t>(m.data() - text.data());
    return true;
  }
  if (p.confirm) return false;  // the prefilter's end is not one of the pattern's
  // Hyperscan and RE2 disagree about this match: a caller regex outside the
  // syntax both read alike. Keep the whole window: fail safe.
  *start = lo;
  return true;
}

void DlpStreamImpl::match(unsigned id, uint64_t to) {
  if (failed_) return;
  const Pattern& p = sc_->patterns[id];
  uint64_t start = 0;
  if (p.opener) {
    if (p.opener_fixed) {
      start = to - p.opener_fixed;
    } else {
      if (!recover_start(p, to, &start)) return;
      for (int k = 0; k < 2 && start < to && !p.front[static_cast<unsigned char>(bytes(start, start + 1)[0])]; ++k) ++start;
    }
    for (const auto& o : open_)
      if (o.group == p.group && o.start == start) return;
    open_.push_back({p.group, start});
    return;
  }
  if (p.group >= 0) {
    // The latest opener of the group; no opener lies inside a match.
    auto best = open_.end();
    for (auto it = open_.begin(); it != open_.end(); ++it)
      if (it->group == p.group && it->start < to && (best == open_.end() || it->start > best->start)) best = it;
    if (best == open_.end()) return;  // expired: already reported truncated
    // Beyond the cap the opener expires (at the end of this feed): the same
    // decision whatever the chunking.
    if (to > best->start + sc_->groups[static_cast<size_t>(p.group)].cap) return;
    start = best->start;
    open_.erase(best);
  } else if (!recover_start(p, to, &start)) {
    return;
  }
  add_candidate(p, static_cast<int>(id), start, to, false);
}

void DlpStreamImpl::propose(int pid, uint64_t to) {
  int sh = static_cast<int>(sc_->patterns[static_cast<size_t>(pid)].shape);
  auto& recent = proposed_[sh];
  if (std::find(recent.begin(), recent.end(), to + 1) != recent.end()) return;
  recent[proposed_at_[sh]++ % recent.size()] = to + 1;
  uint64_t start = 0;
  const Pattern& p = sc_->patterns[static_cast<size_t>(pid)];
  if (!recover_start(p, to, &start)) return;
  add_candidate(p, pid, start, to, false);
}

// From a witness ending at `witness_end` (its last byte + 1, a run byte):
// every end e of a run of k's class within its reach, the runs joined by
// single separators; each proposes the ends a trail of one or two bytes
// (or the end of the stream) gives.
void DlpStreamImpl::walk(const Walk& k, int pid, uint64_t witness_end) {
  auto in_run = [&](unsigned char c) {
    return (c >= '0' && c <= '9') || (!k.digits && c >= 'A' && c <= 'Z');
  };
  auto one_of = [](const char* set, unsigned char c) { return c != 0 && std::strchr(set, c) != nullptr; };
  uint64_t limit = witness_end + k.reach;
  uint64_t x = witness_end;
  while (true) {
    if (x < total_ && in_run(byte_at(x))) {
      if (++x > limit) return;
      continue;
    }
    // x: a run end.
    if (x == total_) {
      if (ending_) propose(pid, x);
      return;
    }
    unsigned char c = byte_at(x);
    bool joins = one_of(k.seps, c) && x + 1 < total_ && in_run(byte_at(x + 1));
    if (!joins || k.ends_inside) {
      propose(pid, x + 1);
      if (one_of(k.seps2, c) && x + 2 <= total_) propose(pid, x + 2);
    }
    if (!joins || x + 1 > limit) return;
    x += 2;
  }
}

// From a '+' phone witness ending at `witness_end`: every c at most 44
// bytes on such that [witness_end, c) holds only digits, separators and
// parentheses and byte c - 1 is a digit or ')' proposes the end its trail
// gives (a byte that is no letter, digit or '_'; or the end of the stream).
void DlpStreamImpl::walk_plus(int pid, uint64_t witness_end) {
  auto core = [](unsigned char b) {
    return (b >= '0' && b <= '9') || b == ' ' || b == '.' || b == '-' || b == '(' || b == ')';
  };
  auto word = [](unsigned char b) {
    return (b >= '0' && b <= '9') || (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') || b == '_';
  };
  for (uint64_t c = witness_end; c <= witness_end + 44; ++c) {
    unsigned char last = byte_at(c - 1);
    if ((last >= '0' && last <= '9') || last == ')') {
      if (c == total_) {
        if (ending_) propose(pid, c);
        return;
      }
      if (!word(byte_at(c))) propose(pid, c + 1);
    }
    if (c == total_ || !core(byte_at(c))) return;
  }
}

void DlpStreamImpl::scan_shapes() {
  if (!sc_->any_shape) return;
  uint64_t limit = ending_ ? total_ : (total_ > kShapeLag ? total_ - kShapeLag : 0);
  if (shape_pos_ >= limit) return;
  const uint64_t from = shape_pos_;
  // 64-byte blocks at multiples of 64 in the stream. A block wholly in the
  // chunk or wholly in the kept bytes is read in place; one across both, or
  // cut short by the end of the input, from a copy padded with zero bytes
  // (which are in no class).
  alignas(64) unsigned char tmp[64];
  auto padded = [&](uint64_t q) -> const unsigned char* {
    if (q < base_) {
      fail(fmt::format("shape block before the kept bytes ({} < {})", q, base_));
      return nullptr;
    }
    size_t n = static_cast<size_t>(std::min<uint64_t>(64, total_ - q));
    std::string_view b = bytes(q, q + n);
    std::memcpy(tmp, b.data(), n);
    std::memset(tmp + n, 0, 64 - n);
    return tmp;
  };
  uint64_t q = from & ~uint64_t{63};
  ShapeCarry carry;
  ClassMasks pm, cm;
  if (q >= 64) {
    const unsigned char* p = padded(q - 64);
    if (!p) return;
    sc_->kernel(p, 1, &carry, &pm, &cm);  // only its carry is needed
  }
  while (q < limit && !failed_) {
    const unsigned char* p = nullptr;
    uint64_t blocks = (limit - q + 63) / 64;  // up to the one holding limit - 1
    if (q >= cur_at_ && q + 64 <= total_) {
      p = reinterpret_cast<const unsigned char*>(cur_.data()) + (q - cur_at_);
      blocks = std::min(blocks, (total_ - q) / 64);
    } else if (q >= base_ && q + 64 <= cur_at_) {
      p = reinterpret_cast<const unsigned char*>(buf_.data()) + (q - base_);
      blocks = std::min(blocks, (cur_at_ - q) / 64);
    } else {
      if (!(p = padded(q))) return;
      blocks = 1;
    }
    size_t k = sc_->kernel(p, static_cast<size_t>(blocks), &carry, &pm, &cm);
    q += 64 * static_cast<uint64_t>(k);
    if (k == blocks) continue;
    // Block q may hold witnesses: compute them, keep those ending in [from, limit).
    BlockBits prev = derive(pm, BlockBits{});  // its high bits, the ones used, need nothing before it
    BlockBits cur = derive(cm, prev);
    uint64_t w[kWalkKinds];
    witnesses(cur, prev, w);
    uint64_t lo = from > q ? from - q : 0, hi = std::min<uint64_t>(64, limit - q);
    uint64_t keep = (hi >= 64 ? ~uint64_t{0} : (uint64_t{1} << hi) - 1) & ~((uint64_t{1} << lo) - 1);
    for (int kind = 0; kind < kWalkKinds && !failed_; ++kind) {
      uint64_t bits = w[kind] & keep;
      if (!bits) continue;
      int pid = sc_->shape_pattern[static_cast<int>(kWalks[kind].shape)];
      if (pid < 0) continue;
      for (; bits && !failed_; bits &= bits - 1) {
        uint64_t end = q + static_cast<uint64_t>(__builtin_ctzll(bits)) + 1;
        if (kWalks[kind].plus) walk_plus(pid, end);
        else walk(kWalks[kind], pid, end);
      }
    }
    q += 64;
  }
  if (!failed_) shape_pos_ = limit;
}

void DlpStreamImpl::add_candidate(const Pattern& p, int pid, uint64_t s, uint64_t e, bool truncated) {
  if (!truncated) {
    for (int k = 0; k < 2 && s < e && !p.front[static_cast<unsigned char>(bytes(s, s + 1)[0])]; ++k) ++s;
    for (int k = 0; k < 2 && s < e && !p.back[static_cast<unsigned char>(bytes(e - 1, e)[0])]; ++k) --e;
  }
  if (s >= e) return;
  std::string_view v = bytes(s, e);
  Span sp;
  sp.len = v.size();
  bool ok = true;
  if (!truncated) {
    switch (p.check) {
      case Check::kNone: break;
      case Check::kCard: ok = valid_card(v, &sp); break;
      case Check::kIban: ok = valid_iban(v, &sp); break;
      case Check::kSsn: ok = valid_ssn(v, &sp); break;
      case Check::kEmail: ok = valid_email(v, &sp); break;
      case Check::kPhone: ok = valid_phone(v, &sp); break;
      case Check::kAwsContext: ok = valid_aws_secret_context(v, &sp); break;
      case Check::kAwsBare: ok = valid_aws_secret_bare(v, &sp); break;
      case Check::kJwt: ok = valid_jwt(v, &sp); break;
      case Check::kGeneric: ok = valid_generic_secret(v, sc_->opts.entropy_bits, sc_->opts.entropy_min_length, &sp); break;
    }
  }
  if (!ok || sp.len == 0) return;
  const Owner& o = sc_->owners[static_cast<size_t>(p.owner)];
  Cand c;
  c.start = s + sp.off;
  c.end = c.start + sp.len;
  c.owner = p.owner;
  c.pattern = pid;
  c.truncated = truncated;
  if (o.track == 0 && !o.injection && (o.mode == DlpMode::kRedact || o.mode == DlpMode::kBlock)) c.fixed = &o.redacted;
  else if (o.track == 0) c.rep = replacement(o, v.substr(sp.off, sp.len), sp.canonical);
  pending_[o.track].push_back(std::move(c));
}

std::string DlpStreamImpl::replacement(const Owner& o, std::string_view value, const std::string& canonical) const {
  if (o.injection) return {};  // strip
  switch (o.mode) {
    case DlpMode::kReport: return std::string(value);
    case DlpMode::kRedact:
    case DlpMode::kBlock: return o.redacted;
    case DlpMode::kMask: {
      std::string out(value);
      size_t keep = 4;
      for (size_t i = out.size(); i-- > 0;) {
        char c = out[i];
        bool alnum = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        if (!alnum) continue;
        if (keep > 0) --keep;
        else out[i] = '*';
      }
      return out;
    }
    case DlpMode::kHash: {
      std::string_view data = canonical.empty() ? value : std::string_view(canonical);
      unsigned char md[EVP_MAX_MD_SIZE];
      unsigned int md_len = 0;
      HMAC(EVP_sha256(), sc_->hash_key.data(), static_cast<int>(sc_->hash_key.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), md, &md_len);
      return fmt::format("[{}:{:02x}{:02x}{:02x}{:02x}]", o.name, md[0], md[1], md[2], md[3]);
    }
  }
  return fmt::format("[REDACTED:{}]", o.name);
}

uint64_t DlpStreamImpl::frontier(int track) const {
  uint64_t w = sc_->window[track];
  uint64_t f = total_ > w ? total_ - w : 0;
  for (const auto& o : open_)
    if (sc_->owners[static_cast<size_t>(sc_->groups[static_cast<size_t>(o.group)].owner)].track == track)
      f = std::min(f, o.start);
  return f;
}

void DlpStreamImpl::expire(bool final) {
  for (size_t i = 0; i < open_.size();) {
    const Group& g = sc_->groups[static_cast<size_t>(open_[i].group)];
    uint64_t s = open_[i].start;
    if (!final && total_ < s + g.cap) {
      ++i;
      continue;
    }
    if (g.truncate_on_expiry) {
      // The group's match pattern follows its opener.
      int pid = -1;
      for (size_t k = 0; k < sc_->patterns.size(); ++k)
        if (sc_->patterns[k].group == open_[i].group && !sc_->patterns[k].opener) pid = static_cast<int>(k);
      add_candidate(sc_->patterns[static_cast<size_t>(pid)], pid, s, std::min(s + g.cap, total_), true);
    }
    open_.erase(open_.begin() + static_cast<long>(i));
  }
}

void DlpStreamImpl::decide(bool final) {
  for (int t = 0; t < 2; ++t) {
    auto& P = pending_[t];
    if (P.empty()) continue;
    uint64_t f = final ? std::numeric_limits<uint64_t>::max() : frontier(t);
    std::sort(P.begin(), P.end(), [](const Cand& a, const Cand& b) {
      if (a.start != b.start) return a.start < b.start;
      if (a.end != b.end) return a.end > b.end;
      if (a.owner != b.owner) return a.owner < b.owner;
      return a.pattern < b.pattern;
    });
    size_t i = 0;
    for (; i < P.size() && P[i].start < f; ++i) {
      Cand& c = P[i];
      if (c.start < last_end_[t] && last_owner_[t] >= 0) continue;  // overlaps an accepted one
      const Owner& o = sc_->owners[static_cast<size_t>(c.owner)];
      bool merged = false;
      if (o.injection) {
        if (o.merge_adjacent && last_owner_[t] == c.owner && c.start == last_end_[t] && last_anomaly_[t] != SIZE_MAX) {
          anomalies_[last_anomaly_[t]].length += c.end - c.start;
          merged = true;
        } else {
          anomalies_.push_back({o.name, name_, c.start, c.end - c.start, o.action, c.truncated});
          last_anomaly_[t] = anomalies_.size() - 1;
        }
        if (o.action == InjectionAction::kFail && !blocked_) {
          blocked_ = true;
          reason_ = fmt::format("injection rule {} (fail) at {} offset {}", o.name, name_, c.start);
        }
      } else {
        findings_.push_back({o.name, name_, c.start, c.end - c.start, o.mode, c.truncated});
        if (o.mode == DlpMode::kBlock && !blocked_) {
          blocked_ = true;
          reason_ = fmt::format("{} (block) at {} offset {}", o.name, name_, c.start);
        }
      }
      (void)merged;
      last_end_[t] = c.end;
      last_owner_[t] = c.owner;
      if (t == 0) edits_.push_back(std::move(c));
    }
    P.erase(P.begin(), P.begin() + static_cast<long>(i));
  }
}

std::string DlpStreamImpl::release(bool final) {
  uint64_t r = (final || !sc_->has_edits) ? total_ : frontier(0);
  std::string out;
  size_t size = r > emitted_ ? static_cast<size_t>(r - emitted_) : 0;
  for (const auto& e : edits_) size += e.text().size();
  out.reserve(size);  // one allocation, no regrowth
  auto append = [&](uint64_t a, uint64_t b) {  // no copy through join_
    if (a < cur_at_) out.append(bytes(a, std::min(b, cur_at_)));
    if (b > cur_at_) out.append(bytes(std::max(a, cur_at_), b));
  };
  for (auto& e : edits_) {
    if (e.start > emitted_) append(emitted_, e.start);
    out += e.text();
    emitted_ = std::max(emitted_, e.end);
  }
  edits_.clear();
  if (r > emitted_) {
    append(emitted_, r);
    emitted_ = r;
  }
  // Keep what start recovery, open long patterns and the unreleased tail need.
  uint64_t keep = std::min(emitted_, total_ > sc_->keep ? total_ - sc_->keep : 0);
  for (const auto& o : open_) keep = std::min(keep, o.start);
  absorb(std::max(keep, base_));
  out_bytes_ += out.size();
  return out;
}

// The chunk's bytes from `keep` on become kept bytes (only those: a large
// chunk is not copied whole).
void DlpStreamImpl::absorb(uint64_t keep) {
  if (keep >= cur_at_) {
    buf_.assign(cur_.substr(static_cast<size_t>(keep - cur_at_)));
  } else {
    buf_.erase(0, static_cast<size_t>(keep - base_));
    buf_.append(cur_);
  }
  base_ = keep;
  cur_ = {};
  cur_at_ = total_;
}

std::string DlpStreamImpl::feed(std::string_view chunk) {
  if (failed_) return {};
  if (finished_) {
    fail("feed() after finish()");
    return {};
  }
  if (chunk.empty()) return {};
  cur_ = chunk;
  cur_at_ = total_;
  total_ += chunk.size();
  if (hs_ && hs_scan_stream(hs_, chunk.data(), static_cast<unsigned>(chunk.size()), 0, scratch_, on_match, this) !=
                 HS_SUCCESS)
    fail("hs_scan_stream failed");
  if (!failed_) scan_shapes();
  if (failed_) {
    absorb(base_);
    return {};
  }
  expire(false);
  decide(false);
  return release(false);
}

std::string DlpStreamImpl::finish() {
  if (finished_ || failed_) return {};
  ending_ = true;
  hs_error_t rc = hs_ ? hs_close_stream(hs_, scratch_, on_match, this) : HS_SUCCESS;
  hs_ = nullptr;
  if (rc != HS_SUCCESS) fail("hs_close_stream failed");
  scan_shapes();
  if (failed_) return {};
  expire(true);
  decide(true);
  std::string out = release(true);
  finished_ = true;
  buf_.clear();
  buf_.shrink_to_fit();
  // Each track decides in offset order: with one track in use they are sorted already.
  auto by_offset = [](const auto& a, const auto& b) { return a.offset < b.offset; };
  if (!std::is_sorted(findings_.begin(), findings_.end(), by_offset))
    std::stable_sort(findings_.begin(), findings_.end(), by_offset);
  if (!std::is_sorted(anomalies_.begin(), anomalies_.end(), by_offset))
    std::stable_sort(anomalies_.begin(), anomalies_.end(), by_offset);
  return out;
}

}  // namespace detail

// ------------------------------------------------------------ public faces

DlpStream::DlpStream(std::unique_ptr<detail::DlpStreamImpl> impl) : impl_(std::move(impl)) {}
DlpStream::DlpStream(DlpStream&&) noexcept = default;
DlpStream& DlpStream::operator=(DlpStream&&) noexcept = default;
DlpStream::~DlpStream() = default;

std::string DlpStream::feed(std::string_view chunk) { return impl_ ? impl_->feed(chunk) : std::string(); }
std::string DlpStream::finish() { return impl_ ? impl_->finish() : std::string(); }

namespace {
const std::vector<DlpFinding> kNoFindings;
const std::vector<InjectionAnomaly> kNoAnomalies;
const std::string kNoReason;
}  // namespace

const std::vector<DlpFinding>& DlpStream::findings() const { return impl_ ? impl_->findings_ : kNoFindings; }
const std::vector<InjectionAnomaly>& DlpStream::anomalies() const { return impl_ ? impl_->anomalies_ : kNoAnomalies; }
bool DlpStream::blocked() const { return impl_ && impl_->blocked_; }
const std::string& DlpStream::block_reason() const { return impl_ ? impl_->reason_ : kNoReason; }
uint64_t DlpStream::bytes_in() const { return impl_ ? impl_->total_ : 0; }
uint64_t DlpStream::bytes_out() const { return impl_ ? impl_->out_bytes_ : 0; }

Result<DlpScanner> DlpScanner::create(DlpOptions opts) {
  auto impl = std::make_shared<detail::DlpScannerImpl>();
  impl->opts = std::move(opts);
  if (auto r = impl->build(); !r) return std::move(r).error();
  return DlpScanner(std::move(impl));
}

Result<DlpStream> DlpScanner::open(std::string stream_name) const {
  if (!impl_) return make_error(Errc::kInvalidArgument, "DlpScanner::open on an empty scanner: create() it first");
  auto s = std::make_unique<detail::DlpStreamImpl>(impl_, std::move(stream_name));
  if (auto r = s->open(); !r) return std::move(r).error();
  return DlpStream(std::move(s));
}

Result<DlpScanResult> DlpScanner::scan(std::string_view whole, std::string stream_name) const {
  auto st = open(std::move(stream_name));
  if (!st) return std::move(st).error();
  DlpScanResult r;
  r.output = st->feed(whole);
  r.output += st->finish();
  r.findings = st->findings();
  r.anomalies = st->anomalies();
  r.blocked = st->blocked();
  r.block_reason = st->block_reason();
  return r;
}

size_t DlpScanner::hold_back_bytes() const { return impl_ && impl_->has_edits ? impl_->window[0] : 0; }

const DlpOptions& DlpScanner::options() const {
  static const DlpOptions kEmpty{};
  return impl_ ? impl_->opts : kEmpty;
}

}  // namespace ztee
