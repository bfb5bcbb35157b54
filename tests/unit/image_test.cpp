#include <doctest/doctest.h>

#include <fmt/format.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>

#include "image/image.hpp"

using namespace ztee::detail;

namespace {
std::string tmpdir() {
  char t[] = "/tmp/ztee-image-test.XXXXXX";
  REQUIRE(mkdtemp(t) != nullptr);
  return t;
}
void write(const std::string& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }
}  // namespace

TEST_CASE("sha256 of a known input") {
  std::string d = tmpdir();
  write(d + "/f", "abc");
  auto h = sha256_file(d + "/f");
  REQUIRE(h.ok());
  CHECK(*h == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  std::system(("rm -rf " + d).c_str());
}

TEST_CASE("manifest errors name the path and the fix; tampering is caught") {
  std::string d = tmpdir();
  auto missing = load_image_manifest(d + "/nope");
  REQUIRE(!missing.ok());
  CHECK(missing.error().code == ztee::Errc::kImage);
  CHECK(missing.error().message.find(d + "/nope") != std::string::npos);
  CHECK(missing.error().message.find("ztee image build") != std::string::npos);

  auto no_manifest = load_image_manifest(d);
  REQUIRE(!no_manifest.ok());
  CHECK(no_manifest.error().message.find("manifest.json") != std::string::npos);

  write(d + "/manifest.json", "{not json");
  CHECK(!load_image_manifest(d).ok());

  write(d + "/k", "kernel");
  write(d + "/i", "initramfs");
  write(d + "/r", "rootfs");
  auto sha = [&](const char* f) { return sha256_file(d + "/" + f).value(); };
  write(d + "/manifest.json",
        fmt::format(R"({{"format":1,"name":"t","artifacts":{{"kernel":{{"path":"k","sha256":"{}"}},)"
                    R"("initramfs":{{"path":"i","sha256":"{}"}},"rootfs":{{"path":"r","sha256":"{}","format":"ext4"}}}}}})",
                    sha("k"), sha("i"), sha("r")));
  auto img = load_image_manifest(d);
  REQUIRE(img.ok());
  CHECK(img->rootfs.format == "ext4");
  ImageVerifier v;
  CHECK(v.verify(*img).ok());
  CHECK(v.verify(*img).ok());  // cached
  write(d + "/r", "rootfs, modified");
  auto bad = v.verify(*img);
  REQUIRE(!bad.ok());
  CHECK(bad.error().code == ztee::Errc::kImage);
  CHECK(bad.error().message.find(d + "/r") != std::string::npos);
  CHECK(bad.error().message.find("does not match") != std::string::npos);
  // Path traversal in a manifest is refused.
  write(d + "/manifest.json",
        R"({"format":1,"artifacts":{"kernel":{"path":"../../etc/passwd","sha256":"0000000000000000000000000000000000000000000000000000000000000000"},"initramfs":{"path":"i","sha256":"0000000000000000000000000000000000000000000000000000000000000000"},"rootfs":{"path":"r","sha256":"0000000000000000000000000000000000000000000000000000000000000000"}}})");
  CHECK(!load_image_manifest(d).ok());
  std::system(("rm -rf " + d).c_str());
}
