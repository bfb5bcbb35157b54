// Image trust: ECDSA P-256 signatures over manifest.json in the format of
// `cosign sign-blob --key` (base64 of the DER signature over the blob's
// SHA-256; public keys as PEM "PUBLIC KEY"), and the runtime policy that
// refuses unsigned, foreign-signed or ungated images.
#pragma once

#include <ztee/result.hpp>

#include <openssl/types.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "image/image.hpp"

namespace ztee::detail {

// The signature file beside manifest.json.
inline constexpr const char* kSignatureFile = "manifest.json.sig";

struct PublicKey {
  std::shared_ptr<EVP_PKEY> key;
  std::string name;  // the path, or "PEM text #i", for error messages
};

// Each entry is a path to a PEM public key or the PEM text itself (it
// contains "-----BEGIN"). Only ECDSA P-256 keys are accepted. Errors
// (kInvalidArgument) name the entry.
Result<std::vector<PublicKey>> load_public_keys(const std::vector<std::string>& entries);

// Signs data (SHA-256, ECDSA) with the PEM private key at key_path; returns the
// base64 DER signature.
Result<std::string> sign_blob(const std::string& key_path, std::string_view data);
// True if sig_b64 (base64 DER, surrounding whitespace ignored) is key's
// signature over data.
bool verify_blob(const PublicKey& key, std::string_view data, std::string_view sig_b64);

// Writes PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (PEM PUBLIC KEY), a
// new P-256 key pair. Refuses to overwrite either file.
Result<void> generate_key_pair(const std::string& prefix);

std::string base64_encode(std::string_view bytes);
Result<std::string> base64_decode(std::string_view text);

struct TrustPolicy {
  std::vector<PublicKey> keys;  // non-empty: a valid signature by one of them is required
  bool require_vuln_gate = false;
  bool enabled() const { return !keys.empty() || require_vuln_gate; }
};

// Checks img's manifest bytes (as loaded) against the policy: the signature
// in manifest.json.sig when keys are set, and a passing vulnerability gate
// verdict when required. Artifact digests are ImageVerifier's. Errors
// (kImage) name the file and the reason.
Result<void> check_image_trust(const Image& img, const TrustPolicy& policy);

}  // namespace ztee::detail
