// Validators of DLP candidates (see validators.hpp).
#include "dlp/validators.hpp"

#include <simdjson.h>

#include <algorithm>
#include <array>
#include <cmath>

namespace ztee::detail::dlp {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
bool is_lower(char c) { return c >= 'a' && c <= 'z'; }

std::string digits_of(std::string_view s) {
  std::string d;
  for (char c : s)
    if (is_digit(c)) d += c;
  return d;
}

int prefix_num(std::string_view d, size_t n) {
  int v = 0;
  for (size_t i = 0; i < n && i < d.size(); ++i) v = v * 10 + (d[i] - '0');
  return v;
}

}  // namespace

bool luhn_ok(std::string_view digits) {
  int sum = 0;
  bool dbl = false;
  for (size_t i = digits.size(); i-- > 0;) {
    int v = digits[i] - '0';
    if (dbl) {
      v *= 2;
      if (v > 9) v -= 9;
    }
    sum += v;
    dbl = !dbl;
  }
  return !digits.empty() && sum % 10 == 0;
}

bool card_issuer_ok(std::string_view d) {
  size_t n = d.size();
  if (n < 13 || n > 19) return false;
  int p1 = prefix_num(d, 1), p2 = prefix_num(d, 2), p3 = prefix_num(d, 3), p4 = prefix_num(d, 4),
      p6 = prefix_num(d, 6);
  auto len_in = [n](size_t lo, size_t hi) { return n >= lo && n <= hi; };
  if (p1 == 4) return n == 13 || n == 16 || n == 19;                                   // Visa
  if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) return n == 16;            // Mastercard
  if (p2 == 34 || p2 == 37) return n == 15;                                            // Amex
  if (p4 == 6011 || (p3 >= 644 && p3 <= 649) || p2 == 65 || (p6 >= 622126 && p6 <= 622925))
    return len_in(16, 19);                                                             // Discover
  if (p4 >= 3528 && p4 <= 3589) return len_in(16, 19);                                 // JCB
  if ((p3 >= 300 && p3 <= 305) || p4 == 3095 || p2 == 36 || p2 == 38 || p2 == 39)
    return len_in(14, 19);                                                             // Diners
  if (p2 == 62) return len_in(16, 19);                                                 // UnionPay
  if (p4 == 5018 || p4 == 5020 || p4 == 5038 || p4 == 5893 || p4 == 6304 || p4 == 6759 || p4 == 6761 ||
      p4 == 6762 || p4 == 6763)
    return len_in(13, 19);                                                             // Maestro
  return false;
}

bool valid_card(std::string_view s, Span* out) {
  std::string d = digits_of(s);
  if (!card_issuer_ok(d) || !luhn_ok(d)) return false;
  out->off = 0;
  out->len = s.size();
  out->canonical = d;
  return true;
}

int iban_length(std::string_view cc) {
  struct Entry {
    const char* cc;
    int len;
  };
  static constexpr Entry kTable[] = {
      {"AD", 24}, {"AE", 23}, {"AL", 28}, {"AT", 20}, {"AZ", 28}, {"BA", 20}, {"BE", 16}, {"BG", 22},
      {"BH", 22}, {"BR", 29}, {"BY", 28}, {"CH", 21}, {"CR", 22}, {"CY", 28}, {"CZ", 24}, {"DE", 22},
      {"DK", 18}, {"DO", 28}, {"EE", 20}, {"EG", 29}, {"ES", 24}, {"FI", 18}, {"FO", 18}, {"FR", 27},
      {"GB", 22}, {"GE", 22}, {"GI", 23}, {"GL", 18}, {"GR", 27}, {"GT", 28}, {"HR", 21}, {"HU", 28},
      {"IE", 22}, {"IL", 23}, {"IQ", 23}, {"IS", 26}, {"IT", 27}, {"JO", 30}, {"KW", 30}, {"KZ", 20},
      {"LB", 28}, {"LC", 32}, {"LI", 21}, {"LT", 20}, {"LU", 20}, {"LV", 21}, {"MC", 27}, {"MD", 24},
      {"ME", 22}, {"MK", 19}, {"MR", 27}, {"MT", 31}, {"MU", 30}, {"NL", 18}, {"NO", 15}, {"PK", 24},
      {"PL", 28}, {"PS", 29}, {"PT", 25}, {"QA", 29}, {"RO", 24}, {"RS", 22}, {"SA", 24}, {"SC", 31},
      {"SE", 24}, {"SI", 19}, {"SK", 24}, {"SM", 27}, {"TN", 24}, {"TR", 26}, {"UA", 29}, {"VA", 22},
      {"VG", 24}, {"XK", 20},
  };
  for (const auto& e : kTable)
    if (cc == e.cc) return e.len;
  return 0;
}

int iban_mod97(std::string_view iban) {
  if (iban.size() < 5) return -1;
  int rem = 0;
  auto add = [&rem](char c) {
    if (is_digit(c)) {
      rem = (rem * 10 + (c - '0')) % 97;
    } else {
      int v = c - 'A' + 10;
      rem = (rem * 100 + v) % 97;
    }
  };
  for (size_t i = 4; i < iban.size(); ++i) add(iban[i]);
  for (size_t i = 0; i < 4; ++i) add(iban[i]);
  return rem;
}

bool valid_iban(std::string_view s, Span* out) {
  std::string c;
  for (char ch : s)
    if (ch != ' ') c += ch;
  if (c.size() < 5) return false;
  int want = iban_length(std::string_view(c).substr(0, 2));
  if (want == 0 || static_cast<int>(c.size()) != want) return false;
  for (char ch : c)
    if (!is_digit(ch) && !is_upper(ch)) return false;
  if (iban_mod97(c) != 1) return false;
  out->off = 0;
  out->len = s.size();
  out->canonical = c;
  return true;
}

bool valid_ssn(std::string_view s, Span* out) {
  std::string d = digits_of(s);
  if (d.size() != 9) return false;
  int area = prefix_num(d, 3), group = prefix_num(d.substr(3), 2), serial = prefix_num(d.substr(5), 4);
  if (area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0) return false;
  out->off = 0;
  out->len = s.size();
  out->canonical = d;
  return true;
}

bool valid_email(std::string_view s, Span* out) {
  size_t at = s.find('@');
  if (at == std::string_view::npos || at == 0 || s.find('@', at + 1) != std::string_view::npos) return false;
  std::string_view local = s.substr(0, at), domain = s.substr(at + 1);
  if (local.front() == '.' || local.back() == '.' || local.find("..") != std::string_view::npos) return false;
  size_t dot = domain.rfind('.');
  if (dot == std::string_view::npos) return false;
  // Each label: not empty, no leading/trailing '-'.
  size_t b = 0;
  while (b <= domain.size()) {
    size_t e = domain.find('.', b);
    if (e == std::string_view::npos) e = domain.size();
    std::string_view label = domain.substr(b, e - b);
    if (label.empty() || label.front() == '-' || label.back() == '-') return false;
    b = e + 1;
  }
  std::string tld;
  for (char c : domain.substr(dot + 1)) tld += static_cast<char>(c | 0x20);
  static constexpr const char* kNotTld[] = {
      "png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "js", "mjs", "ts", "css", "map", "json",
      "html", "htm", "xml", "txt", "md", "py", "rb", "go", "rs", "java", "class", "jar", "so", "dll",
      "exe", "bin", "lock", "log", "yaml", "yml", "toml", "ini", "cfg", "tar", "gz", "zip", "whl", "egg",
      "pdf", "woff", "woff2", "ttf", "otf", "mp3", "mp4", "wav", "lua", "sh"};
  for (const char* x : kNotTld)
    if (tld == x) return false;
  out->off = 0;
  out->len = s.size();
  out->canonical.clear();
  for (char c : s) out->canonical += (is_upper(c) ? static_cast<char>(c | 0x20) : c);
  return true;
}

bool valid_phone(std::string_view s, Span* out) {
  // A '(' that does not open a 3-digit area code is the boundary before the number.
  size_t off = 0;
  if (!s.empty() && s[0] == '(' && !(s.size() > 4 && s[4] == ')')) off = 1;
  s.remove_prefix(off);
  std::string d = digits_of(s);
  bool plus = !s.empty() && s.front() == '+';
  if (plus) {
    // E.164 / international: country code + subscriber, 8-15 digits in all.
    if (d.size() < 8 || d.size() > 15 || d[0] == '0') return false;
    // International with separators: "+1" numbers must be NANP-shaped.
    if (d[0] == '1' && s.size() > d.size() + 1) {
      if (d.size() != 11 || d[1] < '2' || d[4] < '2') return false;
    }
  } else {
    // NANP national forms: optional leading 1, then NXX NXX XXXX.
    if (d.size() == 11 && d[0] == '1') d.erase(0, 1);
    if (d.size() != 10 || d[0] < '2' || d[3] < '2') return false;
    // One kind of separator between the groups (parenthesised area aside).
    if (s.find('(') == std::string_view::npos) {
      char sep = 0;
      size_t start = (s.size() > 10 && s[0] == '1') ? 1 : 0;
      for (size_t i = start; i < s.size(); ++i) {
        char c = s[i];
        if (is_digit(c)) continue;
        if (i == 1 && start == 1) continue;  // the separator after the leading 1
        if (sep == 0) sep = c;
        else if (c != sep) return false;
      }
    }
    d = "1" + d;
  }
  out->off = off;
  out->len = s.size();
  out->canonical = "+" + d;
  return true;
}

namespace {
bool has_classes(std::string_view s) {
  bool u = false, l = false, dg = false;
  for (char c : s) u |= is_upper(c), l |= is_lower(c), dg |= is_digit(c);
  return u && l && dg;
}
}  // namespace

bool valid_aws_secret_context(std::string_view s, Span* out) {
  if (s.size() < 40) return false;
  std::string_view v = s.substr(s.size() - 40);
  if (!has_classes(v)) return false;
  out->off = s.size() - 40;
  out->len = 40;
  out->canonical.clear();
  return true;
}

bool valid_aws_secret_bare(std::string_view s, Span* out) {
  if (s.size() != 40 || !has_classes(s) || shannon_bits(s) < 4.2) return false;
  out->off = 0;
  out->len = 40;
  out->canonical.clear();
  return true;
}

bool base64url_decode(std::string_view in, std::string* out) {
  out->clear();
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v;
    if (is_upper(c)) v = c - 'A';
    else if (is_lower(c)) v = c - 'a' + 26;
    else if (is_digit(c)) v = c - '0' + 52;
    else if (c == '-' || c == '+') v = 62;
    else if (c == '_' || c == '/') v = 63;
    else if (c == '=') break;
    else return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      *out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return true;
}

bool valid_jwt(std::string_view s, Span* out) {
  size_t d1 = s.find('.');
  if (d1 == std::string_view::npos) return false;
  size_t d2 = s.find('.', d1 + 1);
  if (d2 == std::string_view::npos || s.find('.', d2 + 1) != std::string_view::npos) return false;
  std::string header;
  if (!base64url_decode(s.substr(0, d1), &header) || header.empty() || header[0] != '{') return false;
  simdjson::dom::parser parser;
  simdjson::dom::element el;
  if (parser.parse(header).get(el) != simdjson::SUCCESS) return false;
  simdjson::dom::object obj;
  if (el.get_object().get(obj) != simdjson::SUCCESS) return false;
  std::string_view alg;
  if (obj["alg"].get_string().get(alg) != simdjson::SUCCESS) return false;
  out->off = 0;
  out->len = s.size();
  out->canonical.clear();
  return true;
}

double shannon_bits(std::string_view s) {
  if (s.empty()) return 0;
  std::array<uint32_t, 256> n{};
  for (unsigned char c : s) ++n[c];
  double h = 0, len = static_cast<double>(s.size());
  for (uint32_t k : n)
    if (k) {
      double p = k / len;
      h -= p * std::log2(p);
    }
  return h;
}

bool valid_generic_secret(std::string_view s, double min_bits, size_t min_len, Span* out) {
  if (s.size() < min_len) return false;
  bool digit = false, alpha = false;
  for (char c : s) digit |= is_digit(c), alpha |= (is_upper(c) || is_lower(c));
  if (!digit || !alpha || shannon_bits(s) < min_bits) return false;
  out->off = 0;
  out->len = s.size();
  out->canonical.clear();
  return true;
}

}  // namespace ztee::detail::dlp
