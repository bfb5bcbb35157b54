#include "image/trust.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "io/fd.hpp"

namespace ztee::detail {

namespace {

using PkeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using BioPtr = std::unique_ptr<BIO, decltype(&BIO_free)>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)>;

std::string openssl_reason() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "no detail from OpenSSL";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

// ECDSA P-256 only: what `cosign sign-blob --key` makes and verifies.
Result<void> check_p256(EVP_PKEY* k, const std::string& name) {
  char group[64] = {};
  size_t len = 0;
  if (!EVP_PKEY_is_a(k, "EC") ||
      EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &len) != 1 ||
      std::strcmp(group, "prime256v1") != 0)
    return make_error(Errc::kInvalidArgument,
                      fmt::format("{}: not an ECDSA P-256 key (libztee signs and verifies images with P-256 only; "
                                  "make one with `ztee image keygen`)",
                                  name));
  return {};
}

}  // namespace

std::string base64_encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(n < 0 ? 0 : static_cast<size_t>(n));
  return out;
}

Result<std::string> base64_decode(std::string_view text) {
  std::string in;
  for (char c : text)
    if (c != '\n' && c != '\r' && c != ' ' && c != '\t') in += c;
  if (in.empty() || in.size() % 4 != 0) return make_error(Errc::kInvalidArgument, "not base64 (length)");
  std::string out(in.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  if (n < 0) return make_error(Errc::kInvalidArgument, "not base64");
  size_t pad = in.size() >= 2 && in[in.size() - 2] == '=' ? 2 : (in.back() == '=' ? 1 : 0);
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

Result<std::vector<PublicKey>> load_public_keys(const std::vector<std::string>& entries) {
  std::vector<PublicKey> keys;
  for (size_t i = 0; i < entries.size(); ++i) {
    const std::string& e = entries[i];
    PublicKey pk;
    std::string pem;
    if (e.find("-----BEGIN") != std::string::npos) {
      pk.name = fmt::format("trusted key #{} (PEM text)", i + 1);
      pem = e;
    } else {
      pk.name = e;
      if (e.empty()) return make_error(Errc::kInvalidArgument, fmt::format("trusted key #{} is empty: give a PEM public key path or text", i + 1));
      auto text = read_file_limited(e, 1 << 20);
      if (!text)
        return make_error(Errc::kInvalidArgument, fmt::format("trusted key {}: {}", e, text.error().message), text.error().sys_errno);
      pem = std::move(*text);
    }
    BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
    EVP_PKEY* raw = bio ? PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr) : nullptr;
    if (!raw) {
      ERR_clear_error();
      return make_error(Errc::kInvalidArgument,
                        fmt::format("trusted key {}: not a PEM public key (\"-----BEGIN PUBLIC KEY-----\"); a private "
                                    "key does not belong here: pass the .pub file",
                                    pk.name));
    }
    pk.key.reset(raw, EVP_PKEY_free);
    if (auto r = check_p256(raw, "trusted key " + pk.name); !r) return std::move(r).error();
    keys.push_back(std::move(pk));
  }
  return keys;
}

Result<std::string> sign_blob(const std::string& key_path, std::string_view data) {
  auto text = read_file_limited(key_path, 1 << 20);
  if (!text) return make_error(Errc::kInvalidArgument, fmt::format("signing key {}", text.error().message), text.error().sys_errno);
  BioPtr bio(BIO_new_mem_buf(text->data(), static_cast<int>(text->size())), BIO_free);
  // An empty passphrase callback: encrypted keys fail instead of prompting.
  PkeyPtr key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, [](char*, int, int, void*) { return 0; }, nullptr) : nullptr,
              EVP_PKEY_free);
  if (!key) {
    ERR_clear_error();
    return make_error(Errc::kInvalidArgument,
                      fmt::format("signing key {}: not an unencrypted PEM private key (make one with `ztee image keygen "
                                  "--out PREFIX`)",
                                  key_path));
  }
  if (auto r = check_p256(key.get(), "signing key " + key_path); !r) return std::move(r).error();
  MdCtxPtr ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  size_t len = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1)
    return make_error(Errc::kInternal, "ECDSA signing failed: " + openssl_reason());
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1)
    return make_error(Errc::kInternal, "ECDSA signing failed: " + openssl_reason());
  sig.resize(len);
  return base64_encode(sig);
}

bool verify_blob(const PublicKey& key, std::string_view data, std::string_view sig_b64) {
  auto der = base64_decode(sig_b64);
  if (!der) return false;
  MdCtxPtr ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  bool ok = ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key.key.get()) == 1 &&
            EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(der->data()), der->size(),
                             reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
  ERR_clear_error();
  return ok;
}

Result<void> generate_key_pair(const std::string& prefix) {
  if (prefix.empty()) return make_error(Errc::kInvalidArgument, "keygen: empty --out prefix");
  std::string priv = prefix + ".key", pub = prefix + ".pub";
  PkeyPtr key(EVP_EC_gen("P-256"), EVP_PKEY_free);
  if (!key) return make_error(Errc::kInternal, "P-256 key generation failed: " + openssl_reason());
  BioPtr mpriv(BIO_new(BIO_s_mem()), BIO_free), mpub(BIO_new(BIO_s_mem()), BIO_free);
  if (!mpriv || !mpub || PEM_write_bio_PrivateKey(mpriv.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1 ||
      PEM_write_bio_PUBKEY(mpub.get(), key.get()) != 1)
    return make_error(Errc::kInternal, "PEM encoding failed: " + openssl_reason());
  auto write_new = [](const std::string& path, BIO* b, mode_t mode) -> Result<void> {
    char* p = nullptr;
    long n = BIO_get_mem_data(b, &p);
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
    if (!fd.valid()) {
      int e = errno;
      return make_error(e == EEXIST ? Errc::kInvalidArgument : Errc::kIo,
                        fmt::format("cannot create {}: {}{}", path, std::strerror(e),
                                    e == EEXIST ? " (keygen never overwrites a key: pick another --out)" : ""),
                        e);
    }
    if (::fchmod(fd.get(), mode) != 0 || ::write(fd.get(), p, static_cast<size_t>(n)) != n || ::fsync(fd.get()) != 0) {
      int e = errno;
      ::unlink(path.c_str());
      return make_error(Errc::kIo, fmt::format("cannot write {}: {}", path, std::strerror(e)), e);
    }
    return {};
  };
  if (auto r = write_new(priv, mpriv.get(), 0600); !r) return r;
  if (auto r = write_new(pub, mpub.get(), 0644); !r) {
    ::unlink(priv.c_str());
    return r;
  }
  return {};
}

Result<void> check_image_trust(const Image& img, const TrustPolicy& policy) {
  std::string mpath = img.dir + "/manifest.json";
  if (!policy.keys.empty()) {
    std::string spath = img.dir + "/" + kSignatureFile;
    if (!img.signature_error.empty())
      return make_error(Errc::kImage, fmt::format("guest image signature {} cannot be read: {}", spath,
                                                  img.signature_error));
    if (!img.has_signature)
      return make_error(Errc::kImage,
                        fmt::format("guest image manifest {} is unsigned ({} is missing) and this runtime requires a "
                                    "signature by a trusted key: sign it with `ztee image sign --key KEY.pem {}`",
                                    mpath, spath, img.dir));
    bool ok = false;
    for (const auto& k : policy.keys) ok = ok || verify_blob(k, img.manifest_bytes, img.signature);
    if (!ok) {
      std::string names;
      for (const auto& k : policy.keys) names += (names.empty() ? "" : ", ") + k.name;
      return make_error(Errc::kImage,
                        fmt::format("guest image manifest {}: signature {} does not verify with any trusted key ({}): "
                                    "the manifest was changed after signing, or it was signed by another key",
                                    mpath, spath, names));
    }
  }
  if (policy.require_vuln_gate) {
    if (img.vuln_gate.verdict.empty())
      return make_error(Errc::kImage,
                        fmt::format("guest image manifest {} records no vulnerability gate verdict and this runtime "
                                    "requires a passing one: run `ztee image gate {} --report REPORT.json "
                                    "--max-severity LEVEL` (then sign it again)",
                                    mpath, img.dir));
    if (img.vuln_gate.verdict != "pass")
      return make_error(Errc::kImage,
                        fmt::format("guest image manifest {}: its vulnerability gate verdict is \"{}\" (report sha256 "
                                    "{}), and this runtime requires \"pass\"",
                                    mpath, img.vuln_gate.verdict, img.vuln_gate.report_sha256));
  }
  return {};
}

}  // namespace ztee::detail
