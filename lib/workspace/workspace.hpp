// Host side of mounted workspaces (SandboxOptions::mounts): the read-only
// disk image a mount is served from, the record of the host tree taken when
// the sandbox starts, and the sync-back of approved changes
// (Sandbox::export_changes).
//
// SECURITY: the changes and the file contents come from the guest and are
// hostile. Nothing here trusts a path, a type, a mode or a digest the guest
// sent: every path is checked, every content is re-hashed, and every write
// stays beneath the destination directory without following a symlink.
#pragma once

#include <ztee/result.hpp>
#include <ztee/ztee.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace ztee::detail {

// What one host entry looked like (lstat, never following symlinks).
struct HostEntry {
  FileType type = FileType::kOther;
  uint32_t mode = 0;  // st_mode & 07777
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  uint64_t dev = 0, ino = 0;
  uint64_t nlink = 0;
};

// Relative path ("a/b.txt"; "" is the root itself) -> entry. The whole tree.
using HostTree = std::map<std::string, HostEntry>;

struct TreeLimits {
  uint64_t max_entries = 1'000'000;
  uint64_t max_bytes = 64ull << 30;
};

// Walks `dir` (absolute) without following symlinks, never leaving its file
// system. Fails (kInvalidArgument) naming the path on a limit or an
// unreadable entry.
Result<HostTree> scan_host_tree(const std::string& dir, const TreeLimits& limits = {});

// Builds a read-only ext4 image of `dir` at `image_path` (created; must not
// exist) with mkfs.ext4 -d, sized from the tree. Returns the tree as it was
// read: scanned before and after the build, and kConflict if it changed
// meanwhile (the image would be torn). Leaves nothing behind on failure.
Result<HostTree> build_mount_image(const std::string& dir, const std::string& image_path,
                                   const TreeLimits& limits = {});

// Content of a changed file as the guest has it now. Called only for
// regular files being written.
using FetchFn = std::function<Result<std::string>(const Change&)>;

struct ApplyResult {
  std::vector<Change> applied;
};

// Applies `changes` (all from one mount, paths relative to it) to `dest_dir`.
// dest_dir is the mount's host_dir (then `base` is that tree at sandbox
// start and every touched path must be unchanged since: otherwise kConflict
// naming each path, and nothing is applied) or a separate existing directory
// (base is then ignored... see export.cpp for the exact rules).
// Refuses (kPermission, nothing applied) paths with "..", absolute paths,
// device/fifo/socket types, setuid/setgid bits, symlinks whose target leaves
// the directory, a fetched content whose sha256 differs from the change's,
// and a host path that is or passes through a symlink or a hard-linked file.
// Each file is written to a temporary in its directory, fsynced and renamed
// over (atomic per file).
Result<ApplyResult> apply_changes(const std::string& dest_dir, const HostTree* base, const std::vector<Change>& changes,
                                  const FetchFn& fetch);

// A unified diff (like `diff -u`, paths a/<rel> and b/<rel>) of the text files
// among `changes` against `host_dir`; binary files get a "Binary files ...
// differ" line. For review, not for applying.
Result<std::string> unified_patch(const std::string& host_dir, const std::vector<Change>& changes, const FetchFn& fetch);

}  // namespace ztee::detail
