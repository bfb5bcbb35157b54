// Guest images: manifest.json parsing and sha256 verification of every
// artifact before it is handed to a VMM.
#pragma once

#include <ztee/result.hpp>

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <memory>
#include <string>
#include <string_view>

namespace ztee::detail {

struct WorkspaceSet;

struct Artifact {
  std::string path;    // absolute
  std::string sha256;  // lowercase hex
  std::string format;  // rootfs: "ext4"
};

struct Image {
  std::string dir;
  std::string name;
  std::string kernel_version;
  std::string cmdline;  // extra kernel arguments the image needs
  int agent_protocol = 1;  // manifest "agent_protocol": the agent's proto::kVersion (absent: 1, the first)
  Artifact kernel, initramfs, rootfs;
  Artifact vmlinux;  // optional: uncompressed ELF kernel (PVH boot); empty path if absent
  Artifact sbom;     // optional: CycloneDX SBOM (sbom.cdx.json); empty path if absent
  // manifest.json exactly as parsed (what a signature covers), and the
  // base64 signature from manifest.json.sig if that file exists.
  std::string manifest_bytes;
  std::string signature;
  bool has_signature = false;
  std::string signature_error;  // manifest.json.sig exists but could not be read
  // "vuln_gate" recorded by `ztee image gate`: verdict "pass" or "fail".
  struct VulnGate {
    std::string verdict, report_sha256;
  } vuln_gate;
  // Set when a sandbox starts from a template (Sandbox::snapshot): the saved
  // device state and the guest memory file the clone maps copy-on-write.
  struct Snapshot {
    std::string dir;
    Artifact state, mem;
  } snapshot;
  // The sandbox's workspace mounts (SandboxOptions::mounts): read-only disks
  // after the root disk. Null: none.
  std::shared_ptr<const WorkspaceSet> workspaces;
};

// A template directory's template.json, written by Sandbox::snapshot.
struct TemplateManifest {
  std::string backend;     // driver description, e.g. "qemu/tcg"
  std::string backend_version;  // e.g. "QEMU emulator version 7.2.22"
  std::string image_dir;
  uint32_t vcpus = 0, memory_mib = 0;
  bool nic = false;        // the saved VM has a network device (clones need a network policy)
  std::string kernel_sha256, initramfs_sha256, rootfs_sha256, vmlinux_sha256;
  // The image's manifest.json.sig when the template was made (empty: unsigned).
  std::string image_signature;
  Artifact state, mem;     // absolute paths
};
Result<TemplateManifest> load_template_manifest(const std::string& dir);
// Writes dir/template.json atomically.
Result<void> write_template_manifest(const std::string& dir, const TemplateManifest& t);

// Reads DIR/manifest.json (and manifest.json.sig if present). Errors name the path and the fix.
Result<Image> load_image_manifest(const std::string& dir);
// The manifest part of load_image_manifest: bytes as read from DIR/manifest.json.
Result<Image> parse_image_manifest(const std::string& dir, std::string bytes);

// Reads a whole file of at most max bytes (larger: kInvalidArgument).
Result<std::string> read_file_limited(const std::string& path, size_t max);

// sha256 of a file as lowercase hex.
Result<std::string> sha256_file(const std::string& path);
// sha256 of bytes as lowercase hex.
std::string sha256_hex(std::string_view data);
// Bytes as lowercase hex.
std::string hex_lower(std::string_view bytes);

// Verifies artifacts against their manifest digests. A file whose identity
// (device, inode, size, mtime, ctime) matches one verified before is not
// hashed again; any change to the file changes its ctime, so it is.
class ImageVerifier {
 public:
  Result<void> verify(const Image& img);

 private:
  struct Identity {
    dev_t dev;
    ino_t ino;
    off_t size;
    int64_t mtime_ns, ctime_ns;
    std::string sha256;
    bool operator==(const Identity&) const = default;
  };

 public:
  Result<void> verify_one(const Artifact& a, const char* what);

 private:
  std::mutex mu_;
  std::map<std::string, Identity> verified_;
};

}  // namespace ztee::detail
