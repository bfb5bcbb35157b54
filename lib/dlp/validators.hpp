// Validators of DLP candidates: each gets the candidate's bytes (the match
// trimmed of its boundary bytes) and says whether it is a real instance,
// optionally narrowing the span and giving the canonical value kHash uses.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ztee::detail::dlp {

struct Span {
  size_t off = 0;       // within the candidate
  size_t len = 0;
  std::string canonical;  // empty: the bytes themselves
};

bool luhn_ok(std::string_view digits);
// Issuer range and length check on the bare digits.
bool card_issuer_ok(std::string_view digits);
bool valid_card(std::string_view s, Span* out);
// Expected IBAN length for a country code, 0 when unknown.
int iban_length(std::string_view country);
// mod-97 of an IBAN without spaces (1 means valid).
int iban_mod97(std::string_view iban);
bool valid_iban(std::string_view s, Span* out);
bool valid_ssn(std::string_view s, Span* out);
bool valid_email(std::string_view s, Span* out);
bool valid_phone(std::string_view s, Span* out);
bool valid_aws_secret_context(std::string_view s, Span* out);
bool valid_aws_secret_bare(std::string_view s, Span* out);
bool valid_jwt(std::string_view s, Span* out);
double shannon_bits(std::string_view s);
bool valid_generic_secret(std::string_view s, double min_bits, size_t min_len, Span* out);
// base64url (unpadded) decode; false on a bad character.
bool base64url_decode(std::string_view in, std::string* out);

}  // namespace ztee::detail::dlp
