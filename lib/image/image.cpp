#include "image/image.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/evp.h>
#include <simdjson.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <tuple>

#include "agent/json.hpp"
#include "io/fd.hpp"

namespace ztee::detail {

namespace {

constexpr const char* kBuildHint = "run `ztee image build` (or tools/dev setup) to build the guest image";

Error image_error(std::string msg, int e = 0) { return make_error(Errc::kImage, std::move(msg), e); }

}  // namespace

Result<std::string> read_file_limited(const std::string& path, size_t max) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    int e = errno;
    return make_error(e == ENOENT ? Errc::kNotFound : Errc::kIo, fmt::format("cannot open {}: {}", path, std::strerror(e)), e);
  }
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      return make_error(Errc::kIo, fmt::format("read {}: {}", path, std::strerror(e)), e);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max) return make_error(Errc::kInvalidArgument, fmt::format("{} is larger than {} bytes", path, max));
  }
  return out;
}

Result<Image> load_image_manifest(const std::string& dir) {
  std::string mpath = dir + "/manifest.json";
  struct stat st{};
  if (::stat(dir.c_str(), &st) != 0)
    return image_error(fmt::format("guest image not found at {}: {}", dir, kBuildHint), errno);
  // Parsed from the bytes read once: a signature check covers exactly what was parsed.
  auto bytes = read_file_limited(mpath, 1 << 20);
  if (!bytes && bytes.error().code == Errc::kInvalidArgument)
    return image_error(fmt::format("guest image manifest {} is larger than 1 MiB: {}", mpath, kBuildHint));
  if (!bytes)
    return image_error(fmt::format("guest image manifest {} is missing or unreadable: {}", mpath, kBuildHint), ENOENT);
  auto parsed = parse_image_manifest(dir, std::move(*bytes));
  if (!parsed) return parsed;
  Image img = std::move(*parsed);
  auto sig = read_file_limited(dir + "/manifest.json.sig", 64 << 10);
  if (sig) {
    img.signature = std::move(*sig);
    img.has_signature = true;
  } else if (sig.error().code != Errc::kNotFound) {
    img.signature_error = sig.error().message;  // only matters to a runtime that checks signatures
  }
  return img;
}

Result<Image> parse_image_manifest(const std::string& dir, std::string bytes) {
  std::string mpath = dir + "/manifest.json";
  Image img;
  img.dir = dir;
  img.manifest_bytes = std::move(bytes);
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (auto perr = parser.parse(simdjson::padded_string(img.manifest_bytes)).get(doc))
    return image_error(fmt::format("guest image manifest {} is not valid JSON ({}): {}", mpath,
                                   simdjson::error_message(perr), kBuildHint));
  int64_t format = 0;
  if (doc["format"].get_int64().get(format) || format != 1)
    return image_error(fmt::format("guest image manifest {} has an unsupported format (want 1): {}", mpath, kBuildHint));
  std::string_view sv;
  if (!doc["name"].get_string().get(sv)) img.name = sv;
  if (!doc["kernel_version"].get_string().get(sv)) img.kernel_version = sv;
  if (!doc["cmdline"].get_string().get(sv)) img.cmdline = sv;
  if (int64_t ap = 0; !doc["agent_protocol"].get_int64().get(ap)) {
    if (ap < 1 || ap > 255)
      return image_error(fmt::format("guest image manifest {}: \"agent_protocol\" {} is out of range: {}", mpath, ap,
                                     kBuildHint));
    img.agent_protocol = static_cast<int>(ap);
  }
  auto artifact = [&](const char* key, Artifact* art, bool required) -> Result<void> {
    simdjson::dom::object o;
    if (doc["artifacts"][key].get_object().get(o)) {
      if (!required) return {};
      return image_error(fmt::format("guest image manifest {} lacks artifact \"{}\": {}", mpath, key, kBuildHint));
    }
    std::string_view p, digest;
    if (o["path"].get_string().get(p) || o["sha256"].get_string().get(digest) || p.empty() || p == "." || p == ".." ||
        p.find('/') != std::string_view::npos || digest.size() != 64 ||
        digest.find_first_not_of("0123456789abcdef") != std::string_view::npos)
      return image_error(fmt::format("guest image manifest {}: artifact \"{}\" needs a plain file name and a "
                                     "64-hex-digit sha256: {}",
                                     mpath, key, kBuildHint));
    art->path = dir + "/" + std::string(p);
    art->sha256 = std::string(digest);
    std::string_view f;
    if (!o["format"].get_string().get(f)) art->format = f;
    return {};
  };
  for (auto [key, art, required] : {std::tuple{"kernel", &img.kernel, true}, std::tuple{"initramfs", &img.initramfs, true},
                                    std::tuple{"rootfs", &img.rootfs, true}, std::tuple{"vmlinux", &img.vmlinux, false},
                                    std::tuple{"sbom", &img.sbom, false}})
    if (auto r = artifact(key, art, required); !r) return std::move(r).error();
  simdjson::dom::object gate;
  if (!doc["vuln_gate"].get_object().get(gate)) {
    if (!gate["verdict"].get_string().get(sv)) img.vuln_gate.verdict = sv;
    if (!gate["report_sha256"].get_string().get(sv)) img.vuln_gate.report_sha256 = sv;
    if (img.vuln_gate.verdict != "pass" && img.vuln_gate.verdict != "fail")
      return image_error(fmt::format("guest image manifest {}: \"vuln_gate\" needs a verdict \"pass\" or \"fail\": run "
                                     "`ztee image gate` again",
                                     mpath));
  }
  return img;
}

Result<TemplateManifest> load_template_manifest(const std::string& dir) {
  std::string mpath = dir + "/template.json";
  auto terr = [&](std::string what) {
    return make_error(Errc::kImage, fmt::format("template {}: {} (make a template with Sandbox::snapshot, or a "
                                                "pool without template_dir)",
                                                dir, what));
  };
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  auto perr = parser.load(mpath).get(doc);
  if (perr == simdjson::IO_ERROR) return terr("template.json is missing or unreadable");
  if (perr) return terr("template.json is not valid JSON");
  TemplateManifest t;
  int64_t format = 0, vcpus = 0, mem = 0;
  std::string_view sv;
  if (doc["format"].get_int64().get(format) || format != 1) return terr("unsupported template format (want 1)");
  if (doc["vcpus"].get_int64().get(vcpus) || doc["memory_mib"].get_int64().get(mem) || vcpus < 1 || vcpus > 64 ||
      mem < 64 || mem > 65536)
    return terr("vcpus or memory_mib missing or out of range");
  t.vcpus = static_cast<uint32_t>(vcpus);
  t.memory_mib = static_cast<uint32_t>(mem);
  if (doc["backend"].get_string().get(sv)) return terr("backend missing");
  t.backend = sv;
  if (doc["backend_version"].get_string().get(sv)) return terr("backend_version missing");
  t.backend_version = sv;
  bool nic = false;
  if (auto e = doc["nic"].get_bool().get(nic); e && e != simdjson::NO_SUCH_FIELD)
    return terr("field \"nic\" must be true or false");
  t.nic = nic;
  if (doc["image_dir"].get_string().get(sv)) return terr("image_dir missing");
  t.image_dir = sv;
  for (auto [key, out] : {std::pair{"kernel", &t.kernel_sha256}, std::pair{"initramfs", &t.initramfs_sha256},
                          std::pair{"rootfs", &t.rootfs_sha256}, std::pair{"vmlinux", &t.vmlinux_sha256}}) {
    if (!doc["image"][key].get_string().get(sv)) *out = sv;
  }
  if (!doc["image_signature"].get_string().get(sv)) t.image_signature = sv;
  for (auto [key, art] : {std::pair{"state", &t.state}, std::pair{"mem", &t.mem}}) {
    std::string_view p, digest;
    if (doc["artifacts"][key]["path"].get_string().get(p) || doc["artifacts"][key]["sha256"].get_string().get(digest) ||
        p.empty() || p.find('/') != std::string_view::npos || digest.size() != 64)
      return terr(fmt::format("artifact \"{}\" needs a plain file name and a sha256", key));
    art->path = dir + "/" + std::string(p);
    art->sha256 = std::string(digest);
  }
  return t;
}

Result<void> write_template_manifest(const std::string& dir, const TemplateManifest& t) {
  auto base = [](const std::string& p) { return p.substr(p.rfind('/') + 1); };
  std::string json = fmt::format(
      "{{\"format\":1,\"backend\":{},\"backend_version\":{},\"vcpus\":{},\"memory_mib\":{},\"nic\":{},\"image_dir\":{},\"image\":{{"
      "\"kernel\":\"{}\",\"initramfs\":\"{}\",\"rootfs\":\"{}\",\"vmlinux\":\"{}\"}},\"image_signature\":{},\"artifacts\":{{"
      "\"state\":{{\"path\":\"{}\",\"sha256\":\"{}\"}},\"mem\":{{\"path\":\"{}\",\"sha256\":\"{}\"}}}}}}\n",
      json_quote(t.backend), json_quote(t.backend_version), t.vcpus, t.memory_mib, t.nic ? "true" : "false",
      json_quote(t.image_dir), t.kernel_sha256, t.initramfs_sha256, t.rootfs_sha256,
      t.vmlinux_sha256, json_quote(t.image_signature), base(t.state.path), t.state.sha256, base(t.mem.path), t.mem.sha256);
  std::string tmp = dir + "/.template.json.tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid() || ::write(fd.get(), json.data(), json.size()) != static_cast<ssize_t>(json.size()) ||
      ::fsync(fd.get()) != 0 || ::rename(tmp.c_str(), (dir + "/template.json").c_str()) != 0) {
    int e = errno;
    return make_error(Errc::kIo, fmt::format("cannot write {}/template.json: {}", dir, std::strerror(e)), e);
  }
  return {};
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  return hex_lower(std::string_view(reinterpret_cast<const char*>(md), len));
}

std::string hex_lower(std::string_view bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out(2 * bytes.size(), '0');
  for (size_t i = 0; i < bytes.size(); ++i) {
    auto b = static_cast<unsigned char>(bytes[i]);
    out[2 * i] = digits[b >> 4], out[2 * i + 1] = digits[b & 15];
  }
  return out;
}

Result<std::string> sha256_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    int e = errno;
    return make_error(e == ENOENT ? Errc::kNotFound : Errc::kIo,
                      fmt::format("cannot open {}: {}", path, std::strerror(e)), e);
  }
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    return make_error(Errc::kInternal, "OpenSSL sha256 initialisation failed");
  // 64 KiB, not zero-filled: a buffer malloc keeps in pages it already has.
  // A zeroed 1 MiB one came back as fresh pages on every call: ~5 ms of
  // page faults on each clone's check of its 0.1 MiB state file (0.5 ms now).
  std::unique_ptr<char[]> buf(new char[64 << 10]);
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.get(), 64 << 10);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      return make_error(Errc::kIo, fmt::format("read {}: {}", path, std::strerror(e)), e);
    }
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), buf.get(), static_cast<size_t>(n));
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  std::string hex;
  for (unsigned i = 0; i < len; ++i) hex += fmt::format("{:02x}", md[i]);
  return hex;
}

Result<void> ImageVerifier::verify(const Image& img) {
  if (auto r = verify_one(img.kernel, "kernel"); !r) return r;
  if (auto r = verify_one(img.initramfs, "initramfs"); !r) return r;
  if (!img.vmlinux.path.empty())
    if (auto r = verify_one(img.vmlinux, "vmlinux"); !r) return r;
  if (!img.sbom.path.empty())
    if (auto r = verify_one(img.sbom, "SBOM"); !r) return r;
  return verify_one(img.rootfs, "rootfs");
}

Result<void> ImageVerifier::verify_one(const Artifact& a, const char* what) {
  struct stat st{};
  if (::stat(a.path.c_str(), &st) != 0)
    return image_error(fmt::format("guest image {} {} is missing: {}", what, a.path, kBuildHint), errno);
  Identity id{st.st_dev, st.st_ino, st.st_size,
              static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
              static_cast<int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec, a.sha256};
  {
    std::lock_guard lk(mu_);
    auto it = verified_.find(a.path);
    if (it != verified_.end() && it->second == id) return {};
  }
  auto digest = sha256_file(a.path);
  if (!digest) return image_error(fmt::format("guest image {}: {}", what, digest.error().message), digest.error().sys_errno);
  if (*digest != a.sha256)
    return image_error(fmt::format("guest image {} {} does not match its manifest (sha256 {} , expected {}): the "
                                   "file was modified or corrupted; rebuild with `ztee image build --force`",
                                   what, a.path, *digest, a.sha256));
  std::lock_guard lk(mu_);
  verified_[a.path] = id;
  return {};
}

}  // namespace ztee::detail
