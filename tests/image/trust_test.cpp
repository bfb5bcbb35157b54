// Image trust in the C++ core: signatures (format and keys), and the
// runtime's policy (RuntimeOptions::trusted_keys, require_vuln_gate) refusing
// images and templates before any VMM starts; one real boot from a signed
// copy of the default image, a template made from it, and its refusal once
// the image's signature changes.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <ztee/ztee.hpp>

#include <dirent.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "image/image.hpp"
#include "image/trust.hpp"
#include "../why.hpp"

namespace fs = std::filesystem;
using namespace ztee;

namespace {

// The test's scratch directory (image copies, keys, the runtime's state),
// removed at exit.
struct Scratch {
  std::string path;
  Scratch() {
    char t[] = "/tmp/ztee-image-test.XXXXXX";
    if (::mkdtemp(t) == nullptr) std::abort();
    path = t;
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
} scratch;

const std::string& tmp() { return scratch.path; }

std::string read(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write(const std::string& p, const std::string& data) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << data;
  REQUIRE(out.good());
}

// keys k1, k2 (P-256) under tmp()
std::string key(const std::string& name) {
  std::string prefix = tmp() + "/" + name;
  if (::access((prefix + ".key").c_str(), F_OK) != 0) REQUIRE(detail::generate_key_pair(prefix).ok());
  return prefix;
}

void sign(const std::string& dir, const std::string& keyname) {
  auto sig = detail::sign_blob(key(keyname) + ".key", read(dir + "/manifest.json"));
  REQUIRE(sig.ok());
  write(dir + "/" + detail::kSignatureFile, *sig);
}

std::string sha256(const std::string& path) {
  auto h = detail::sha256_file(path);
  REQUIRE(h.ok());
  return *h;
}

// A small image whose files are random bytes: fine for every refusal, since
// the runtime refuses before a VMM would read them.
std::string fake_image(const std::string& name, const std::string& extra = "") {
  std::string dir = tmp() + "/" + name;
  fs::create_directories(dir);
  std::string arts;
  for (auto [key, file] : {std::pair{"kernel", "vmlinuz"}, std::pair{"initramfs", "initramfs.cpio"},
                           std::pair{"rootfs", "rootfs.ext4"}, std::pair{"sbom", "sbom.cdx.json"}}) {
    write(dir + "/" + file, std::string(file) + " of " + name);
    arts += std::string(arts.empty() ? "" : ",\n") + "    \"" + key + "\": {\"path\": \"" + file + "\", \"sha256\": \"" +
            sha256(dir + "/" + file) + "\"}";
  }
  write(dir + "/manifest.json", "{\n  \"format\": 1,\n  \"name\": \"" + name + "\",\n  \"artifacts\": {\n" + arts +
                                    "\n  }" + extra + "\n}\n");
  return dir;
}

// Children of this process right now (a started VMM would be one).
int child_count() {
  int n = 0;
  for (const auto& t : fs::directory_iterator("/proc/self/task")) {
    std::string c = read(t.path().string() + "/children");
    std::istringstream in(c);
    std::string pid;
    while (in >> pid) ++n;
  }
  return n;
}

Runtime runtime(std::vector<std::string> keys, bool gate = false) {
  RuntimeOptions o;
  o.state_dir = tmp() + "/state";
  o.trusted_keys = std::move(keys);
  o.require_vuln_gate = gate;
  auto rt = Runtime::create(o);
  if (!rt) FAIL("Runtime::create: " << rt.error().message);
  return std::move(rt).value();
}

// The sandbox creation is refused with kImage and a message containing each of `want`.
void refused(Runtime& rt, const std::string& image, std::vector<std::string> want) {
  SandboxOptions so;
  so.image_dir = image;
  int before = child_count();
  auto sb = rt.create_sandbox(so);
  REQUIRE_FALSE(sb.ok());
  CHECK(sb.error().code == Errc::kImage);
  for (const auto& w : want) CHECK_MESSAGE(sb.error().message.find(w) != std::string::npos, why(sb));
  CHECK(child_count() == before);
}

}  // namespace

TEST_CASE("signatures: cosign sign-blob format, P-256 keys only") {
  for (std::string s : std::vector<std::string>{"a", "ab", "abc", "abcd", std::string("\0\xff\x10\x80", 4)}) {
    auto d = detail::base64_decode(detail::base64_encode(s));
    REQUIRE(d.ok());
    CHECK(*d == s);
  }
  CHECK_FALSE(detail::base64_decode("abc").ok());
  CHECK_FALSE(detail::base64_decode("a$c=").ok());

  std::string k1 = key("k1"), k2 = key("k2");
  struct stat st{};
  REQUIRE(::stat((k1 + ".key").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(read(k1 + ".pub").starts_with("-----BEGIN PUBLIC KEY-----"));
  CHECK_FALSE(detail::generate_key_pair(k1).ok());  // never overwrites

  auto keys = detail::load_public_keys({k1 + ".pub", read(k2 + ".pub")});
  REQUIRE(keys.ok());
  REQUIRE(keys->size() == 2);
  auto sig = detail::sign_blob(k1 + ".key", "blob");
  REQUIRE(sig.ok());
  CHECK(detail::verify_blob((*keys)[0], "blob", *sig));
  CHECK(detail::verify_blob((*keys)[0], "blob", *sig + "\n"));  // a trailing newline is tolerated
  CHECK_FALSE(detail::verify_blob((*keys)[0], "blob!", *sig));
  CHECK_FALSE(detail::verify_blob((*keys)[1], "blob", *sig));
  CHECK_FALSE(detail::verify_blob((*keys)[0], "blob", "bm90IGEgc2lnbmF0dXJl"));

  // The signature is DER ECDSA over SHA-256: OpenSSL's own verification
  // (what cosign verify-blob does) accepts it.
  auto der = detail::base64_decode(*sig);
  REQUIRE(der.ok());
  CHECK(static_cast<unsigned char>((*der)[0]) == 0x30);  // DER SEQUENCE
  FILE* f = std::fopen((k1 + ".pub").c_str(), "r");
  REQUIRE(f);
  EVP_PKEY* pk = PEM_read_PUBKEY(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  REQUIRE(pk);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  CHECK(EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, pk) == 1);
  CHECK(EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(der->data()), der->size(),
                         reinterpret_cast<const unsigned char*>("blob"), 4) == 1);
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(pk);

  // Bad keys: a private key, a missing file, garbage, another curve.
  auto priv = detail::load_public_keys({k1 + ".key"});
  REQUIRE_FALSE(priv.ok());
  CHECK(priv.error().code == Errc::kInvalidArgument);
  CHECK(priv.error().message.find("pass the .pub file") != std::string::npos);
  CHECK_FALSE(detail::load_public_keys({tmp() + "/nope.pub"}).ok());
  CHECK_FALSE(detail::load_public_keys({"-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n"}).ok());
  EVP_PKEY* p384 = EVP_EC_gen("P-384");
  REQUIRE(p384);
  f = std::fopen((tmp() + "/p384.pub").c_str(), "w");
  REQUIRE(f);
  PEM_write_PUBKEY(f, p384);
  std::fclose(f);
  EVP_PKEY_free(p384);
  auto other = detail::load_public_keys({tmp() + "/p384.pub"});
  REQUIRE_FALSE(other.ok());
  CHECK(other.error().message.find("P-256") != std::string::npos);

  RuntimeOptions o;
  o.state_dir = tmp() + "/state";
  o.trusted_keys = {k1 + ".key"};
  auto rt = Runtime::create(o);
  REQUIRE_FALSE(rt.ok());
  CHECK(rt.error().code == Errc::kInvalidArgument);
}

TEST_CASE("the runtime refuses untrusted images before any VMM starts") {
  std::string k1 = key("k1");
  key("k2");
  Runtime rt = runtime({k1 + ".pub"});

  std::string unsigned_img = fake_image("unsigned");
  refused(rt, unsigned_img, {unsigned_img + "/manifest.json", "unsigned", "ztee image sign"});

  std::string other = fake_image("other-key");
  sign(other, "k2");
  refused(rt, other, {other + "/manifest.json.sig", "does not verify with any trusted key", k1 + ".pub"});

  std::string edited = fake_image("edited-manifest");
  sign(edited, "k1");
  write(edited + "/manifest.json", read(edited + "/manifest.json") + " ");
  refused(rt, edited, {edited + "/manifest.json", "does not verify"});

  std::string rootfs = fake_image("tampered-rootfs");
  sign(rootfs, "k1");
  write(rootfs + "/rootfs.ext4", "tampered");
  refused(rt, rootfs, {rootfs + "/rootfs.ext4", "rootfs", "does not match its manifest"});

  std::string sbom = fake_image("tampered-sbom");
  sign(sbom, "k1");
  write(sbom + "/sbom.cdx.json", "{}");
  refused(rt, sbom, {sbom + "/sbom.cdx.json", "SBOM", "does not match its manifest"});

  std::string truncated_sig = fake_image("truncated-sig");
  sign(truncated_sig, "k1");
  write(truncated_sig + "/manifest.json.sig", read(truncated_sig + "/manifest.json.sig").substr(0, 20));
  refused(rt, truncated_sig, {"does not verify"});

  // require_vuln_gate: no verdict, a failing one, a malformed one; a passing
  // one is checked without a boot (the fake image's digests match).
  Runtime gated = runtime({k1 + ".pub"}, true);
  std::string nogate = fake_image("no-gate");
  sign(nogate, "k1");
  refused(gated, nogate, {nogate + "/manifest.json", "no vulnerability gate verdict", "ztee image gate"});
  std::string failing = fake_image("failing-gate", ",\n  \"vuln_gate\": {\"verdict\": \"fail\", \"report_sha256\": \"ab\"}");
  sign(failing, "k1");
  refused(gated, failing, {failing + "/manifest.json", "\"fail\""});
  std::string passing = fake_image("passing-gate", ",\n  \"vuln_gate\": {\"verdict\": \"pass\", \"report_sha256\": \"ab\"}");
  sign(passing, "k1");
  auto img = detail::load_image_manifest(passing);
  REQUIRE(img.ok());
  detail::TrustPolicy policy;
  policy.keys = detail::load_public_keys({k1 + ".pub"}).value();
  policy.require_vuln_gate = true;
  CHECK(detail::check_image_trust(*img, policy).ok());
  std::string bad_gate = fake_image("bad-gate", ",\n  \"vuln_gate\": {\"verdict\": \"maybe\"}");
  refused(gated, bad_gate, {"verdict"});
}

TEST_CASE("an image whose agent speaks another protocol is refused before any VMM starts") {
  Runtime rt = runtime({});
  // Built before manifests recorded it: protocol 1, which had no STDIN_ACK.
  std::string old = fake_image("agent-protocol-1");
  refused(rt, old, {old, "protocol 1", "no \"agent_protocol\"", "speaks 2", "ztee image build"});
  std::string newer = fake_image("agent-protocol-9", ",\n  \"agent_protocol\": 9");
  refused(rt, newer, {newer, "protocol 9", "ztee image build"});
  std::string bad = fake_image("agent-protocol-0", ",\n  \"agent_protocol\": 0");
  refused(rt, bad, {bad + "/manifest.json", "\"agent_protocol\" 0 is out of range"});
  // The default image records the protocol of the agent it carries.
  auto def = detail::load_image_manifest(ztee::default_image_dir());
  REQUIRE(def.ok());
  CHECK(def->agent_protocol == 2);
}

TEST_CASE("a signed copy of the default image boots; its template is refused once the signature changes") {
  std::string def = ztee::default_image_dir();
  if (::access((def + "/manifest.json").c_str(), R_OK) != 0)
    FAIL("no guest image at " << def << ": run tools/dev setup (or set ZTEE_IMAGE_DIR)");
  auto defimg = detail::load_image_manifest(def);
  REQUIRE(defimg.ok());
  // A copy (never the default image itself: other tests boot from it).
  std::string copy = tmp() + "/signed";
  fs::create_directories(copy);
  fs::copy_file(def + "/manifest.json", copy + "/manifest.json");
  for (const detail::Artifact* a : {&defimg->kernel, &defimg->vmlinux, &defimg->initramfs, &defimg->rootfs, &defimg->sbom})
    if (!a->path.empty()) fs::copy_file(a->path, copy + "/" + fs::path(a->path).filename().string());
  sign(copy, "k1");

  Runtime rt = runtime({read(key("k1") + ".pub")});  // PEM text this time
  SandboxOptions so;
  so.image_dir = copy;
  so.snapshottable = true;
  auto sb = rt.create_sandbox(so);
  if (!sb) FAIL("create_sandbox from the signed copy: " << sb.error().message);
  auto r = sb->run("echo signed-boot");
  REQUIRE(r.ok());
  CHECK(r->stdout_data == "signed-boot\n");
  std::string tdir = tmp() + "/template";
  REQUIRE(sb->snapshot(tdir).ok());
  // template.json records the signature the image had.
  std::string tj = read(tdir + "/template.json");
  std::string sig = read(copy + "/manifest.json.sig");
  CHECK(tj.find("\"image_signature\":\"" + sig + "\"") != std::string::npos);

  SandboxOptions co;
  co.template_dir = tdir;
  {
    auto clone = rt.create_sandbox(co);
    if (!clone) FAIL("clone under the policy: " << clone.error().message);
    auto c = clone->run("echo clone");
    REQUIRE(c.ok());
    CHECK(c->stdout_data == "clone\n");
    REQUIRE(clone->destroy().ok());
  }
  // Re-signed (ECDSA signatures differ each time): still a valid image, but
  // not the signature the template was made from.
  sign(copy, "k1");
  REQUIRE(read(copy + "/manifest.json.sig") != sig);
  int before = child_count();
  auto again = rt.create_sandbox(co);
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().code == Errc::kImage);
  CHECK_MESSAGE(again.error().message.find("records another signature") != std::string::npos, why(again));
  CHECK_MESSAGE(again.error().message.find(tdir) != std::string::npos, why(again));
  // Signed by another key: the template's image itself is refused.
  sign(copy, "k2");
  auto foreign = rt.create_sandbox(co);
  REQUIRE_FALSE(foreign.ok());
  CHECK(foreign.error().code == Errc::kImage);
  CHECK_MESSAGE(foreign.error().message.find("does not verify with any trusted key") != std::string::npos,
                foreign.error().message);
  CHECK(child_count() <= before);  // pre-spawned VMMs for the template may only have gone
}
