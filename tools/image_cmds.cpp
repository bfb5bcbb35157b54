// ztee image keygen|sign|verify|gate|push|pull.
#include "image_cmds.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/evp.h>
#include <simdjson.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>

#include "agent/json.hpp"
#include "image/image.hpp"
#include "image/trust.hpp"
#include "image/vuln_gate.hpp"
#include "io/fd.hpp"

namespace ztee::cli {

namespace {

using detail::Image;
using detail::json_quote;

constexpr int kExitError = 125;
constexpr int kExitRefused = 1;

const char kImageUsage[] =
    "usage: ztee image build [--out DIR] [--kernel minimal|debian] [--force] [--verify-reproducible]\n"
    "       ztee image keygen --out PREFIX\n"
    "       ztee image sign --key KEY.pem DIR\n"
    "       ztee image verify [--key PUB.pem]... [--require-vuln-gate] DIR\n"
    "       ztee image gate DIR --report REPORT.json --max-severity LEVEL [--allow FILE]\n"
    "       ztee image push DIR --oci LAYOUT_DIR[:TAG]\n"
    "       ztee image pull --oci LAYOUT_DIR[:TAG] --out DIR [--key PUB.pem]...\n"
    "\n"
    "build    builds the guest image (kernel, initramfs with ztee-agent, read-only\n"
    "         root filesystem, CycloneDX SBOM sbom.cdx.json and manifest.json) from\n"
    "         Debian packages. --verify-reproducible then rebuilds it from scratch in a\n"
    "         temporary directory and compares every file byte for byte (exit 1 on\n"
    "         any difference; the manifest's \"non_reproducible\" says what may still\n"
    "         differ when built on another host). The guest kernel: --kernel minimal\n"
    "         (the default) builds it from Debian's linux-source-6.1 with the fragment\n"
    "         guest/kernel/ztee-minimal.config on top of tinyconfig (minutes the first\n"
    "         time, then cached in $ZTEE_KERNEL_CACHE or /var/cache/ztee/kernels);\n"
    "         --kernel debian uses Debian's cloud kernel package instead.\n"
    "keygen   writes a new ECDSA P-256 key pair: PREFIX.key (PKCS#8 PEM, mode 0600)\n"
    "         and PREFIX.pub (PEM public key).\n"
    "sign     checks every digest of DIR, then signs DIR/manifest.json with KEY.pem\n"
    "         into DIR/manifest.json.sig (base64 DER ECDSA over the SHA-256 of the\n"
    "         manifest: the format of `cosign sign-blob --key`).\n"
    "verify   checks the signature with each --key (one must match; without --key the\n"
    "         signature is not checked) and every artifact digest; with\n"
    "         --require-vuln-gate also a passing recorded gate verdict. Exit 1 if\n"
    "         anything does not match.\n"
    "gate     reads a Trivy or Grype JSON report of the image and fails (exit 1) on a\n"
    "         finding of severity LEVEL or above (low, medium, high, critical) that the\n"
    "         allow-list FILE ([{\"id\", \"reason\", \"expires\": \"YYYY-MM-DD\"}]) does not\n"
    "         cover; an expired entry no longer allows. Records the report's sha256 and\n"
    "         the verdict in manifest.json (which removes its signature: sign again).\n"
    "push     copies the image into an OCI image layout (artifactType\n"
    "         application/vnd.libztee.image.v1; TAG default latest).\n"
    "pull     copies the image tagged TAG out of an OCI image layout into DIR (which\n"
    "         must not exist), checking every blob digest and the image's digests (and\n"
    "         the signature with --key) before DIR appears.\n";

int usage(const std::string& msg) {
  std::fprintf(stderr, "ztee: %s\n\n%s", msg.c_str(), kImageUsage);
  return kExitError;
}

int fail(const std::string& msg) {
  std::fprintf(stderr, "ztee: %s\n", msg.c_str());
  return kExitError;
}

int refuse(const std::string& msg) {
  std::fprintf(stderr, "ztee: %s\n", msg.c_str());
  return kExitRefused;
}

bool is_help(const std::string& a) { return a == "-h" || a == "--help"; }

// "--name VALUE" or "--name=VALUE" at args[i].
struct Args {
  std::vector<std::string> v;
  size_t i = 0;
  std::string err;
  bool done() const { return i >= v.size(); }
  const std::string& peek() const { return v[i]; }
  bool take(const char* name, std::string* out) {
    const std::string& a = v[i];
    size_t n = std::strlen(name);
    if (a.compare(0, n, name) != 0) return false;
    if (a.size() == n) {
      if (i + 1 >= v.size()) {
        err = std::string(name) + " needs a value";
        ++i;
        return true;
      }
      *out = v[i + 1];
      i += 2;
      return true;
    }
    if (a[n] != '=') return false;
    *out = a.substr(n + 1);
    ++i;
    return true;
  }
};

// Writes data to path atomically (a temporary file beside it, then rename).
Result<void> write_atomic(const std::string& path, std::string_view data, mode_t mode = 0644) {
  std::string tmp = path + ".tmp";
  detail::UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd.valid() || ::fchmod(fd.get(), mode) != 0 ||
      ::write(fd.get(), data.data(), data.size()) != static_cast<ssize_t>(data.size()) || ::fsync(fd.get()) != 0 ||
      ::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return make_error(Errc::kIo, fmt::format("cannot write {}: {}", path, std::strerror(e)), e);
  }
  return {};
}

struct Copied {
  std::string sha256;
  uint64_t size = 0;
};

// Copies src to dst (created, mode 0644), hashing what it copies.
Result<Copied> copy_hashing(const std::string& src, const std::string& dst) {
  detail::UniqueFd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.valid()) {
    int e = errno;
    return make_error(Errc::kIo, fmt::format("cannot open {}: {}", src, std::strerror(e)), e);
  }
  detail::UniqueFd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!out.valid()) {
    int e = errno;
    return make_error(Errc::kIo, fmt::format("cannot create {}: {}", dst, std::strerror(e)), e);
  }
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  std::unique_ptr<char[]> buf(new char[1 << 20]);
  Copied c;
  for (;;) {
    ssize_t n = ::read(in.get(), buf.get(), 1 << 20);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      return make_error(Errc::kIo, fmt::format("read {}: {}", src, std::strerror(e)), e);
    }
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), buf.get(), static_cast<size_t>(n));
    for (ssize_t off = 0; off < n;) {
      ssize_t w = ::write(out.get(), buf.get() + off, static_cast<size_t>(n - off));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        int e = errno;
        return make_error(Errc::kIo, fmt::format("write {}: {}", dst, std::strerror(e)), e);
      }
      off += w;
    }
    c.size += static_cast<uint64_t>(n);
  }
  if (::fsync(out.get()) != 0) {
    int e = errno;
    return make_error(Errc::kIo, fmt::format("fsync {}: {}", dst, std::strerror(e)), e);
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  for (unsigned k = 0; k < len; ++k) c.sha256 += fmt::format("{:02x}", md[k]);
  return c;
}

// The image's files in a fixed order: (key, artifact) for every artifact the
// manifest lists.
std::vector<std::pair<const char*, const detail::Artifact*>> artifacts_of(const Image& img) {
  std::vector<std::pair<const char*, const detail::Artifact*>> v = {{"kernel", &img.kernel}};
  if (!img.vmlinux.path.empty()) v.emplace_back("vmlinux", &img.vmlinux);
  v.emplace_back("initramfs", &img.initramfs);
  v.emplace_back("rootfs", &img.rootfs);
  if (!img.sbom.path.empty()) v.emplace_back("sbom", &img.sbom);
  return v;
}

std::string base_name(const std::string& p) { return p.substr(p.rfind('/') + 1); }

// Re-emits manifest.json with top-level `key` set to `value_json` (appended
// if absent), objects down to depth 2 one member per line. Returns the text.
Result<std::string> manifest_with(const Image& img, std::string_view key, const std::string& value_json) {
  simdjson::dom::parser parser;
  simdjson::dom::object root;
  if (parser.parse(simdjson::padded_string(img.manifest_bytes)).get(root))
    return make_error(Errc::kImage, fmt::format("{}/manifest.json is not a JSON object", img.dir));
  std::string out = "{\n";
  bool first = true, replaced = false;
  auto member = [&](std::string_view k, const std::string& v) {
    out += first ? "" : ",\n";
    first = false;
    out += "  " + json_quote(k) + ": " + v;
  };
  for (auto field : root) {
    if (field.key == key) {
      member(field.key, value_json);
      replaced = true;
      continue;
    }
    simdjson::dom::object obj;
    if (!field.value.get_object().get(obj)) {
      std::string inner = "{\n";
      bool f2 = true;
      for (auto f : obj) {
        inner += f2 ? "" : ",\n";
        f2 = false;
        inner += "    " + json_quote(f.key) + ": " + simdjson::minify(f.value);
      }
      inner += f2 ? "}" : "\n  }";
      member(field.key, f2 ? "{}" : inner);
    } else {
      member(field.key, simdjson::minify(field.value));
    }
  }
  if (!replaced) member(key, value_json);
  out += "\n}\n";
  return out;
}

Result<Image> load_and_verify_digests(const std::string& dir, bool print) {
  auto img = detail::load_image_manifest(dir);
  if (!img) return std::move(img).error();
  detail::ImageVerifier verifier;
  for (auto [key, art] : artifacts_of(*img)) {
    if (auto r = verifier.verify_one(*art, key); !r) return std::move(r).error();
    if (print) std::printf("OK   %s %s sha256 %s\n", key, base_name(art->path).c_str(), art->sha256.c_str());
  }
  return img;
}

// ---- keygen / sign / verify ---------------------------------------------------

int cmd_keygen(Args a) {
  std::string prefix;
  while (!a.done()) {
    if (is_help(a.peek())) return std::fputs(kImageUsage, stdout), 0;
    if (!a.take("--out", &prefix)) return usage("image keygen: unexpected argument " + a.peek());
    if (!a.err.empty()) return usage(a.err);
  }
  if (prefix.empty()) return usage("image keygen: --out PREFIX is required");
  if (auto r = detail::generate_key_pair(prefix); !r) return fail(r.error().message);
  std::printf("wrote %s.key (private, mode 0600) and %s.pub (public)\n", prefix.c_str(), prefix.c_str());
  return 0;
}

int cmd_sign(Args a) {
  std::string key, dir;
  while (!a.done()) {
    if (is_help(a.peek())) return std::fputs(kImageUsage, stdout), 0;
    if (a.take("--key", &key)) {
      if (!a.err.empty()) return usage(a.err);
    } else if (a.peek().starts_with("-") || !dir.empty()) {
      return usage("image sign: unexpected argument " + a.peek());
    } else {
      dir = a.v[a.i++];
    }
  }
  if (key.empty() || dir.empty()) return usage("image sign: needs --key KEY.pem and an image DIR");
  // Only an image whose files match its manifest gets signed.
  auto img = load_and_verify_digests(dir, false);
  if (!img) return refuse("image sign: " + img.error().message);
  auto sig = detail::sign_blob(key, img->manifest_bytes);
  if (!sig) return fail(sig.error().message);
  std::string spath = dir + "/" + detail::kSignatureFile;
  if (auto r = write_atomic(spath, *sig); !r) return fail(r.error().message);
  std::printf("signed %s/manifest.json (sha256 %s): %s\n", dir.c_str(), detail::sha256_hex(img->manifest_bytes).c_str(),
              spath.c_str());
  return 0;
}

int cmd_verify(Args a) {
  std::vector<std::string> keys;
  std::string dir;
  bool require_gate = false;
  while (!a.done()) {
    std::string v;
    if (is_help(a.peek())) return std::fputs(kImageUsage, stdout), 0;
    if (a.take("--key", &v)) {
      if (!a.err.empty()) return usage(a.err);
      keys.push_back(v);
    } else if (a.peek() == "--require-vuln-gate") {
      require_gate = true;
      ++a.i;
    } else if (a.peek().starts_with("-") || !dir.empty()) {
      return usage("image verify: unexpected argument " + a.peek());
    } else {
      dir = a.v[a.i++];
    }
  }
  if (dir.empty()) return usage("image verify: needs an image DIR");
  detail::TrustPolicy policy;
  auto loaded = detail::load_public_keys(keys);
  if (!loaded) return fail(loaded.error().message);
  policy.keys = std::move(*loaded);
  policy.require_vuln_gate = require_gate;
  auto img = detail::load_image_manifest(dir);
  if (!img) return refuse(img.error().message);
  if (auto r = detail::check_image_trust(*img, policy); !r) return refuse(r.error().message);
  if (!policy.keys.empty()) {
    for (const auto& k : policy.keys)
      if (detail::verify_blob(k, img->manifest_bytes, img->signature)) {
        std::printf("OK   signature %s/%s by %s\n", dir.c_str(), detail::kSignatureFile, k.name.c_str());
        break;
      }
  } else {
    std::printf("WARN signature not checked (no --key)\n");
  }
  if (require_gate) std::printf("OK   vulnerability gate: pass (report sha256 %s)\n", img->vuln_gate.report_sha256.c_str());
  std::fflush(stdout);
  auto checked = load_and_verify_digests(dir, true);
  if (!checked) return refuse(checked.error().message);
  if (checked->manifest_bytes != img->manifest_bytes)
    return refuse(fmt::format("{}/manifest.json changed while it was being verified", dir));
  return 0;
}

// ---- gate ---------------------------------------------------------------------

std::string today_utc() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

int cmd_gate(Args a) {
  std::string dir, report, max_sev, allow;
  while (!a.done()) {
    if (is_help(a.peek())) return std::fputs(kImageUsage, stdout), 0;
    if (a.take("--report", &report) || a.take("--max-severity", &max_sev) || a.take("--allow", &allow)) {
      if (!a.err.empty()) return usage(a.err);
    } else if (a.peek().starts_with("-") || !dir.empty()) {
      return usage("image gate: unexpected argument " + a.peek());
    } else {
      dir = a.v[a.i++];
    }
  }
  if (dir.empty() || report.empty() || max_sev.empty())
    return usage("image gate: needs DIR, --report REPORT.json and --max-severity LEVEL");
  int threshold = detail::severity_rank(max_sev);
  if (threshold == 0) return usage("image gate: --max-severity: expected low, medium, high or critical, got " + max_sev);
  auto img = detail::load_image_manifest(dir);
  if (!img) return fail(img.error().message);
  auto text = detail::read_file_limited(report, 256u << 20);
  if (!text) return fail("image gate: report " + text.error().message);
  auto parsed = detail::parse_vuln_report(*text);
  if (!parsed) return fail(fmt::format("image gate: report {}: {}", report, parsed.error().message));
  std::vector<detail::AllowEntry> allows;
  if (!allow.empty()) {
    auto atext = detail::read_file_limited(allow, 16u << 20);
    if (!atext) return fail("image gate: allow-list " + atext.error().message);
    auto entries = detail::parse_allow_list(*atext);
    if (!entries) return fail(fmt::format("image gate: allow-list {}: {}", allow, entries.error().message));
    allows = std::move(*entries);
  }
  std::string today = today_utc();
  detail::GateDecision decision = detail::decide_gate(*parsed, allows, threshold, today);
  for (const auto& l : decision.lines) {
    const auto& f = l.finding;
    switch (l.kind) {
      case detail::GateDecision::Line::kAllow:
        std::printf("ALLOW %s (%s, %s): %s (until %s)\n", f.id.c_str(), f.pkg.c_str(), f.severity.c_str(),
                    l.reason.c_str(), l.expires.c_str());
        break;
      case detail::GateDecision::Line::kExpired:
        std::printf("EXPIRED allow-list entry for %s expired on %s: it no longer allows\n", f.id.c_str(),
                    l.expires.c_str());
        break;
      case detail::GateDecision::Line::kBlock:
        std::printf("BLOCK %s (%s, %s)\n", f.id.c_str(), f.pkg.c_str(), f.severity.c_str());
        break;
    }
  }
  bool pass = decision.pass();
  auto list = [](const std::vector<std::string>& v) {
    std::string o = "[";
    for (const auto& x : v) o += (o.size() > 1 ? "," : "") + json_quote(x);
    return o + "]";
  };
  const std::string& scanner = parsed->scanner;
  size_t nfindings = parsed->findings.size();
  std::string lower = max_sev;
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string gate = fmt::format(
      "{{\"verdict\":\"{}\",\"scanner\":\"{}\",\"report_sha256\":\"{}\",\"max_severity\":\"{}\",\"findings\":{},"
      "\"blocking\":{},\"allowed\":{},\"date\":\"{}\"}}",
      pass ? "pass" : "fail", scanner, detail::sha256_hex(*text), lower, nfindings, list(decision.blocking),
      list(decision.allowed), today);
  auto updated = manifest_with(*img, "vuln_gate", gate);
  if (!updated) return fail(updated.error().message);
  if (auto r = write_atomic(dir + "/manifest.json", *updated); !r) return fail(r.error().message);
  std::string spath = dir + "/" + detail::kSignatureFile;
  bool had_sig = ::unlink(spath.c_str()) == 0;
  std::printf("%s: %zu findings from %s, %zu at or above %s not allowed, %zu allowed; verdict %s recorded in "
              "%s/manifest.json\n",
              pass ? "PASS" : "FAIL", nfindings, scanner.c_str(), decision.blocking.size(), lower.c_str(),
              decision.allowed.size(),
              pass ? "pass" : "fail", dir.c_str());
  if (had_sig)
    std::printf("manifest.json changed: its old signature %s was removed; sign it again (`ztee image sign`)\n",
                spath.c_str());
  return pass ? 0 : kExitRefused;
}

// ---- OCI image layout -----------------------------------------------------------

constexpr const char* kArtifactType = "application/vnd.libztee.image.v1";
constexpr const char* kManifestType = "application/vnd.oci.image.manifest.v1+json";
constexpr const char* kIndexType = "application/vnd.oci.image.index.v1+json";
constexpr const char* kEmptyType = "application/vnd.oci.empty.v1+json";
constexpr const char* kTitle = "org.opencontainers.image.title";
constexpr const char* kRefName = "org.opencontainers.image.ref.name";

const char* media_type(const std::string& key) {
  if (key == "kernel") return "application/vnd.libztee.kernel.v1";
  if (key == "vmlinux") return "application/vnd.libztee.vmlinux.v1";
  if (key == "initramfs") return "application/vnd.libztee.initramfs.v1.cpio";
  if (key == "rootfs") return "application/vnd.libztee.rootfs.v1.ext4";
  if (key == "sbom") return "application/vnd.cyclonedx+json";
  if (key == "manifest") return "application/vnd.libztee.image.manifest.v1+json";
  return "application/vnd.libztee.image.signature.v1";  // signature
}

// "LAYOUT_DIR[:TAG]": the tag is what follows the last ':' after the last '/'.
std::pair<std::string, std::string> split_layout(const std::string& s) {
  auto colon = s.rfind(':');
  auto slash = s.rfind('/');
  if (colon == std::string::npos || (slash != std::string::npos && colon < slash)) return {s, "latest"};
  return {s.substr(0, colon), s.substr(colon + 1)};
}

bool valid_tag(const std::string& t) {
  if (t.empty() || t.size() > 128) return false;
  for (char c : t)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') return false;
  return std::isalnum(static_cast<unsigned char>(t[0])) || t[0] == '_';
}

std::string blob_path(const std::string& layout, const std::string& hex) { return layout + "/blobs/sha256/" + hex; }

// Stores bytes as a blob; returns its descriptor fields.
Result<Copied> put_blob_bytes(const std::string& layout, std::string_view bytes) {
  Copied c{detail::sha256_hex(bytes), bytes.size()};
  std::string p = blob_path(layout, c.sha256);
  if (::access(p.c_str(), F_OK) != 0)
    if (auto r = write_atomic(p, bytes); !r) return std::move(r).error();
  return c;
}

// Copies a file into the layout as a blob, checking it against `want` (if set).
Result<Copied> put_blob_file(const std::string& layout, const std::string& src, const std::string& want) {
  std::string tmp = fmt::format("{}/blobs/sha256/.incoming.{}", layout, ::getpid());
  auto c = copy_hashing(src, tmp);
  if (!c) {
    ::unlink(tmp.c_str());
    return c;
  }
  if (!want.empty() && c->sha256 != want) {
    ::unlink(tmp.c_str());
    return make_error(Errc::kImage, fmt::format("{} does not match its manifest (sha256 {}, expected {}): not pushed",
                                                src, c->sha256, want));
  }
  if (::rename(tmp.c_str(), blob_path(layout, c->sha256).c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return make_error(Errc::kIo, fmt::format("cannot store blob {}: {}", c->sha256, std::strerror(e)), e);
  }
  return c;
}

std::string descriptor(const char* type, const Copied& c, const std::string& title) {
  std::string d = fmt::format("{{\"mediaType\":\"{}\",\"digest\":\"sha256:{}\",\"size\":{}", type, c.sha256, c.size);
  if (!title.empty()) d += fmt::format(",\"annotations\":{{\"{}\":{}}}", kTitle, json_quote(title));
  return d + "}";
}

int cmd_push(Args a) {
  std::string dir, oci;
  while (!a.done()) {
    if (is_help(a.peek())) return std::fputs(kImageUsage, stdout), 0;
    if (a.take("--oci", &oci)) {
      if (!a.err.empty()) return usage(a.err);
    } else if (a.peek().starts_with("-") || !dir.empty()) {
      return usage("image push: unexpected argument " + a.peek());
    } else {
      dir = a.v[a.i++];
    }
  }
  if (dir.empty() || oci.empty()) return usage("image push: needs DIR and --oci LAYOUT_DIR[:TAG]");
  auto [layout, tag] = split_layout(oci);
  if (!valid_tag(tag)) return usage("image push: invalid tag \"" + tag + "\" (letters, digits, _ . -)");
  auto img = detail::load_image_manifest(dir);
  if (!img) return fail(img.error().message);
  std::error_code ec;
  std::filesystem::create_directories(layout + "/blobs/sha256", ec);
  if (ec) return fail(fmt::format("cannot create {}/blobs/sha256: {}", layout, ec.message()));
  std::string marker = layout + "/oci-layout";
  if (::access(marker.c_str(), F_OK) != 0)
    if (auto r = write_atomic(marker, "{\"imageLayoutVersion\":\"1.0.0\"}"); !r) return fail(r.error().message);

  std::vector<std::string> layers;
  for (auto [key, art] : artifacts_of(*img)) {
    auto c = put_blob_file(layout, art->path, art->sha256);
    if (!c) return refuse("image push: " + c.error().message);
    layers.push_back(descriptor(media_type(key), *c, base_name(art->path)));
  }
  auto m = put_blob_bytes(layout, img->manifest_bytes);
  if (!m) return fail(m.error().message);
  layers.push_back(descriptor(media_type("manifest"), *m, "manifest.json"));
  if (img->has_signature) {
    auto s = put_blob_bytes(layout, img->signature);
    if (!s) return fail(s.error().message);
    layers.push_back(descriptor(media_type("signature"), *s, detail::kSignatureFile));
  }
  auto config = put_blob_bytes(layout, "{}");
  if (!config) return fail(config.error().message);
  std::string joined;
  for (const auto& l : layers) joined += (joined.empty() ? "" : ",") + l;
  std::string manifest = fmt::format(
      "{{\"schemaVersion\":2,\"mediaType\":\"{}\",\"artifactType\":\"{}\",\"config\":{},\"layers\":[{}],"
      "\"annotations\":{{\"{}\":{}}}}}",
      kManifestType, kArtifactType, descriptor(kEmptyType, *config, ""), joined, kTitle, json_quote(img->name));
  auto mb = put_blob_bytes(layout, manifest);
  if (!mb) return fail(mb.error().message);

  // index.json: this tag's entry replaced, the others kept.
  std::vector<std::string> entries;
  std::string ipath = layout + "/index.json";
  if (::access(ipath.c_str(), F_OK) == 0) {
    auto itext = detail::read_file_limited(ipath, 16u << 20);
    simdjson::dom::parser ip;
    simdjson::dom::array arr;
    if (!itext || ip.parse(simdjson::padded_string(*itext))["manifests"].get_array().get(arr))
      return fail(fmt::format("{} is not an OCI image index: push into an empty directory or a layout", ipath));
    for (auto e : arr) {
      std::string_view ref;
      if (!e["annotations"][kRefName].get_string().get(ref) && ref == tag) continue;
      entries.push_back(simdjson::minify(e));
    }
  }
  entries.push_back(fmt::format(
      "{{\"mediaType\":\"{}\",\"artifactType\":\"{}\",\"digest\":\"sha256:{}\",\"size\":{},\"annotations\":{{\"{}\":{}}}}}",
      kManifestType, kArtifactType, mb->sha256, mb->size, kRefName, json_quote(tag)));
  std::string index = fmt::format("{{\"schemaVersion\":2,\"mediaType\":\"{}\",\"manifests\":[", kIndexType);
  for (size_t k = 0; k < entries.size(); ++k) index += (k ? "," : "") + entries[k];
  index += "]}";
  if (auto r = write_atomic(ipath, index); !r) return fail(r.error().message);
  std::printf("pushed %s to %s:%s (manifest sha256:%s, %zu layers)\n", dir.c_str(), layout.c_str(), tag.c_str(),
              mb->sha256.c_str(), layers.size());
  return 0;
}

bool plain_name(std::string_view n) {
  return !n.empty() && n != "." && n != ".." && n.find('/') == std::string_view::npos && n[0] != '.';
}

int cmd_pull(Args a) {
  std::string oci, out;
  std::vector<std::string> keys;
  while (!a.done()) {
    std::string v;
    if (is_help(a.peek())) return std::fputs(kImageUsage, stdout), 0;
    if (a.take("--oci", &oci) || a.take("--out", &out)) {
      if (!a.err.empty()) return usage(a.err);
    } else if (a.take("--key", &v)) {
      if (!a.err.empty()) return usage(a.err);
      keys.push_back(v);
    } else {
      return usage("image pull: unexpected argument " + a.peek());
    }
  }
  if (oci.empty() || out.empty()) return usage("image pull: needs --oci LAYOUT_DIR[:TAG] and --out DIR");
  auto [layout, tag] = split_layout(oci);
  detail::TrustPolicy policy;
  auto loaded = detail::load_public_keys(keys);
  if (!loaded) return fail(loaded.error().message);
  policy.keys = std::move(*loaded);
  struct stat st{};
  if (::lstat(out.c_str(), &st) == 0) return fail("image pull: " + out + " exists: pull into a new directory");

  auto itext = detail::read_file_limited(layout + "/index.json", 16u << 20);
  if (!itext) return fail(fmt::format("image pull: {} is not an OCI image layout: {}", layout, itext.error().message));
  simdjson::dom::parser ip;
  simdjson::dom::array arr;
  if (ip.parse(simdjson::padded_string(*itext))["manifests"].get_array().get(arr))
    return fail(fmt::format("image pull: {}/index.json has no \"manifests\" array", layout));
  std::string digest;
  uint64_t msize = 0;
  for (auto e : arr) {
    std::string_view ref, d;
    if (e["annotations"][kRefName].get_string().get(ref) || ref != tag) continue;
    if (e["digest"].get_string().get(d) || e["size"].get_uint64().get(msize)) break;
    digest = d;
  }
  if (digest.empty()) return fail(fmt::format("image pull: {} has no image tagged \"{}\"", layout, tag));
  if (!digest.starts_with("sha256:") || digest.size() != 71 ||
      digest.find_first_not_of("0123456789abcdef", 7) != std::string::npos)
    return refuse(fmt::format("image pull: tag {} points at an unsupported digest {}", tag, digest));
  auto mtext = detail::read_file_limited(blob_path(layout, digest.substr(7)), 4u << 20);
  if (!mtext) return fail("image pull: OCI manifest " + mtext.error().message);
  if (detail::sha256_hex(*mtext) != digest.substr(7) || mtext->size() != msize)
    return refuse(fmt::format("image pull: OCI manifest blob {} does not match its digest or size", digest));
  simdjson::dom::parser mp;
  simdjson::dom::element man;
  std::string_view sv;
  if (mp.parse(simdjson::padded_string(*mtext)).get(man) || man["artifactType"].get_string().get(sv) ||
      sv != kArtifactType)
    return refuse(fmt::format("image pull: {}:{} is not a libztee image (artifactType {})", layout, tag, kArtifactType));
  simdjson::dom::array layers;
  if (man["layers"].get_array().get(layers)) return refuse("image pull: the OCI manifest has no layers");

  std::filesystem::path outp = std::filesystem::absolute(out).lexically_normal();
  if (outp.filename().empty()) outp = outp.parent_path();
  std::string tmp = (outp.parent_path() / ("." + outp.filename().string() + ".pull")).string();
  std::error_code ec;
  std::filesystem::remove_all(tmp, ec);
  if (::mkdir(tmp.c_str(), 0755) != 0) return fail(fmt::format("cannot create {}: {}", tmp, std::strerror(errno)));
  auto abort = [&](int rc, const std::string& msg) {
    std::filesystem::remove_all(tmp, ec);
    return rc == kExitRefused ? refuse(msg) : fail(msg);
  };
  struct Layer {
    std::string title, hex;
    uint64_t size = 0;
  };
  std::vector<Layer> wanted;
  std::set<std::string> names;
  for (auto l : layers) {
    std::string_view d, title;
    uint64_t size = 0;
    if (l["digest"].get_string().get(d) || l["size"].get_uint64().get(size) ||
        l["annotations"][kTitle].get_string().get(title) || !plain_name(title) || !names.insert(std::string(title)).second ||
        !d.starts_with("sha256:") || d.size() != 71 || d.find_first_not_of("0123456789abcdef", 7) != std::string_view::npos)
      return abort(kExitRefused, "image pull: a layer lacks a sha256 digest, a size or a plain, unique file name title");
    wanted.push_back({std::string(title), std::string(d.substr(7)), size});
  }
  auto fetch = [&](const Layer& l) -> int {
    auto c = copy_hashing(blob_path(layout, l.hex), tmp + "/" + l.title);
    if (!c) return abort(kExitError, "image pull: " + c.error().message);
    if (c->sha256 != l.hex || c->size != l.size)
      return abort(kExitRefused, fmt::format("image pull: blob {} ({}) does not match its digest or size", l.hex, l.title));
    return 0;
  };
  // manifest.json first: it says which other files belong to the image.
  auto mlayer = std::find_if(wanted.begin(), wanted.end(), [](const Layer& l) { return l.title == "manifest.json"; });
  if (mlayer == wanted.end()) return abort(kExitRefused, "image pull: the OCI manifest has no manifest.json layer");
  if (int rc = fetch(*mlayer)) return rc;
  auto listed = detail::load_image_manifest(tmp);
  if (!listed) return abort(kExitRefused, "image pull: " + listed.error().message);
  std::set<std::string> allowed = {"manifest.json", detail::kSignatureFile};
  for (auto [key, art] : artifacts_of(*listed)) allowed.insert(base_name(art->path));
  for (const auto& l : wanted) {
    if (l.title == "manifest.json") continue;
    if (!allowed.count(l.title))
      return abort(kExitRefused, fmt::format("image pull: layer \"{}\" is not a file of the image's manifest.json", l.title));
    if (int rc = fetch(l)) return rc;
  }
  // The pulled files must form an intact image before DIR appears.
  auto img = load_and_verify_digests(tmp, false);
  if (!img) return abort(kExitRefused, "image pull: " + img.error().message);
  if (auto r = detail::check_image_trust(*img, policy); !r) return abort(kExitRefused, "image pull: " + r.error().message);
  if (::rename(tmp.c_str(), outp.c_str()) != 0)
    return abort(kExitError, fmt::format("cannot rename {} to {}: {}", tmp, out, std::strerror(errno)));
  std::printf("pulled %s:%s into %s (%zu files, digests%s verified)\n", layout.c_str(), tag.c_str(), out.c_str(),
              names.size(), policy.keys.empty() ? "" : " and signature");
  return 0;
}

}  // namespace

const char* image_usage() { return kImageUsage; }

int image_dispatch(const std::string& sub, const std::vector<std::string>& args) {
  Args a;
  a.v = args;
  if (sub == "keygen") return cmd_keygen(std::move(a));
  if (sub == "sign") return cmd_sign(std::move(a));
  if (sub == "verify") return cmd_verify(std::move(a));
  if (sub == "gate") return cmd_gate(std::move(a));
  if (sub == "push") return cmd_push(std::move(a));
  if (sub == "pull") return cmd_pull(std::move(a));
  return -1;
}

}  // namespace ztee::cli
