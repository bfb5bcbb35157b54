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

#include "io/fd.hpp"

namespace ztee::detail {

namespace {

constexpr const char* kBuildHint = "run `ztee image build` (or tools/dev setup) to build the guest image";

Error image_error(std::string msg, int e = 0) { return make_error(Errc::kImage, std::move(msg), e); }

}  // namespace

Result<Image> load_image_manifest(const std::string& dir) {
  std::string mpath = dir + "/manifest.json";
  struct stat st{};
  if (::stat(dir.c_str(), &st) != 0)
    return image_error(fmt::format("guest image not found at {}: {}", dir, kBuildHint), errno);
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  auto perr = parser.load(mpath).get(doc);
  if (perr == simdjson::IO_ERROR)
    return image_error(fmt::format("guest image manifest {} is missing or unreadable: {}", mpath, kBuildHint), ENOENT);
  if (perr)
    return image_error(fmt::format("guest image manifest {} is not valid JSON ({}): {}", mpath,
                                   simdjson::error_message(perr), kBuildHint));
  Image img;
  img.dir = dir;
  int64_t format = 0;
  if (doc["format"].get_int64().get(format) || format != 1)
    return image_error(fmt::format("guest image manifest {} has an unsupported format (want 1): {}", mpath, kBuildHint));
  std::string_view sv;
  if (!doc["name"].get_string().get(sv)) img.name = sv;
  if (!doc["kernel_version"].get_string().get(sv)) img.kernel_version = sv;
  if (!doc["cmdline"].get_string().get(sv)) img.cmdline = sv;
  for (auto [key, art] : {std::pair{"kernel", &img.kernel}, std::pair{"initramfs", &img.initramfs},
                          std::pair{"rootfs", &img.rootfs}}) {
    simdjson::dom::object o;
    if (doc["artifacts"][key].get_object().get(o))
      return image_error(fmt::format("guest image manifest {} lacks artifact \"{}\": {}", mpath, key, kBuildHint));
    std::string_view p, digest;
    if (o["path"].get_string().get(p) || o["sha256"].get_string().get(digest) || p.empty() ||
        p.find('/') != std::string_view::npos || digest.size() != 64)
      return image_error(fmt::format("guest image manifest {}: artifact \"{}\" needs a plain file name and a "
                                     "64-hex-digit sha256: {}",
                                     mpath, key, kBuildHint));
    art->path = dir + "/" + std::string(p);
    art->sha256 = std::string(digest);
    if (!o["format"].get_string().get(sv)) art->format = sv;
  }
  simdjson::dom::object vo;
  if (!doc["artifacts"]["vmlinux"].get_object().get(vo)) {
    std::string_view p, digest;
    if (vo["path"].get_string().get(p) || vo["sha256"].get_string().get(digest) || p.empty() ||
        p.find('/') != std::string_view::npos || digest.size() != 64)
      return image_error(fmt::format("guest image manifest {}: artifact \"vmlinux\" needs a plain file name and a "
                                     "64-hex-digit sha256: {}",
                                     mpath, kBuildHint));
    img.vmlinux.path = dir + "/" + std::string(p);
    img.vmlinux.sha256 = std::string(digest);
  }
  return img;
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
  std::string buf(1 << 20, '\0');
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      return make_error(Errc::kIo, fmt::format("read {}: {}", path, std::strerror(e)), e);
    }
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(n));
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
