// Host side of mounted workspaces (SandboxOptions::mounts): the read-only
// disk image a mount is served from, the record of the host tree taken when
// the sandbox starts, and the sync-back of approved changes
// (Sandbox::export_changes). Nothing here needs a VM.
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
#include <optional>
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
  bool operator==(const HostEntry&) const = default;
};

// Relative path ("a/b.txt"; "" is the root itself) -> entry. The whole tree,
// sorted by path (byte order).
using HostTree = std::map<std::string, HostEntry>;

struct TreeLimits {
  uint64_t max_entries = 1'000'000;  // entries including the root
  uint64_t max_bytes = 64ull << 30;  // sum of the regular files' sizes
};

// Walks `dir` (an absolute path to a directory; the caller's, trusted, so a
// symlink there is followed once) with openat2/fstatat, never following a
// symlink beneath it. It stays on dir's file system: a directory that is a
// mount point of another file system is recorded (with its own `dev`) but
// not entered. An entry that vanishes during the walk is left out.
// Fails with kInvalidArgument naming the limit and the fix when a limit is
// passed, kNotFound when dir does not exist, kIo (naming the path) on an
// unreadable directory.
Result<HostTree> scan_host_tree(const std::string& dir, const TreeLimits& limits = {});

// Builds a read-only ext4 image of `dir` at `image_path` (created with mode
// 0600, owned by the caller; it must not exist) with `mkfs.ext4 -d`: no
// journal, no metadata checksums, 4 KiB blocks, 256-byte inodes, no reserved
// blocks, label "ztee-ws", the root owned like dir, and mke2fs's /lost+found
// removed unless dir has one. It is sized from the tree (a sparse file: the
// slack costs no disk; should mkfs run out of blocks or inodes, as extended
// attributes are not in the estimate, the image grows and is rebuilt, at
// most three times). The tree is scanned before and after the build; if
// it changed meanwhile the image could be torn, so the call fails with
// kConflict naming the changed paths. A mount point of another file system
// inside dir is refused (kInvalidArgument: mkfs would copy it). Entries of
// any type are copied (devices and fifos too: the guest must mount the image
// nodev). Returns the tree as it was read (the `base` for apply_changes).
// Leaves nothing behind on failure.
//
// Cost: about 0.5 s for 10k files of 1 KiB in 100 directories (warm cache);
// mke2fs -d is superlinear in the size of one directory (10k files in a
// single directory: about 5 s).
Result<HostTree> build_mount_image(const std::string& dir, const std::string& image_path,
                                   const TreeLimits& limits = {});

// Content of a changed file as the guest has it now. Called only for
// regular files being written (or diffed), once per file, before anything is
// written. Its result is never trusted: it is re-hashed against
// Change::sha256.
using FetchFn = std::function<Result<std::string>(const Change&)>;

struct ApplyResult {
  std::vector<Change> applied;  // in the order applied
  // Separate destination only: the kDeleted changes, recorded and not acted
  // on (the destination is not the tree they refer to).
  std::vector<Change> deletions_skipped;
  // What each path the call wrote or removed (applied changes and the
  // parent directories it made) looks like on the host now; nullopt:
  // removed. In place, update_base() folds it into the base tree.
  std::map<std::string, std::optional<HostEntry>> host_after;
};

// Applies `changes` (all from one mount, paths relative to it) to `dest_dir`
// (an existing directory; the caller's path, trusted).
//
// Two modes, chosen by `base`:
//  - In place (`base` = the mount's tree at sandbox start, dest_dir = the
//    mount's host_dir): every path a change names must look now as it did
//    in `base` (type, mode, size, mtime_ns, ctime_ns, ino, nlink; or absent
//    then and now); a directory by type, ino and mode only (its size
//    and times change with its entries, which are compared one by one).
//    Otherwise kConflict naming every conflicting path, nothing applied.
//    Deletions are carried out: files and symlinks with unlinkat, a
//    directory only if it is empty once the other changes are applied (every
//    entry it has on the host is deleted by a change in the list), else
//    kInvalidArgument naming an entry left.
//  - Separate destination (`base` == nullptr): created and modified files,
//    symlinks and directories are written into dest_dir (empty or not) at
//    their relative paths, creating missing parent directories (mode 0755,
//    minus the umask); an existing file or symlink there is replaced, an
//    existing directory keeps its entries and gets the change's mode.
//    Deletions are not acted on: they are returned in deletions_skipped.
//
// Refused before anything is written, with kPermission: absolute paths,
// "." or ".." components, FileType::kOther (devices, fifos, sockets; also a
// host entry of that type in the way), mode bits 06000 (setuid/setgid, on
// files and directories), symlink targets that are absolute or, resolved
// lexically from the link's directory, climb out of it, a host path that
// passes through a symlink or a mount point, a host target that is a regular
// file with more than one hard link, and fetched content whose sha256 is not
// Change::sha256 (the guest changed the file after the diff was reviewed).
// With kInvalidArgument: an empty path (the mount root), empty components,
// NUL bytes or over-long paths, a missing or malformed sha256, duplicate
// paths, changes from more than one mount, a change that turns a directory
// into a non-directory or back, a path beneath a directory the same changes
// delete (in place) or beneath a non-directory they write, and a separate
// destination where a non-directory stands in for a parent directory.
//
// Writing: each file goes to a temporary (".ztee-tmp-*", mode 0600) in its
// own directory, is written, fchmod'ed, fsynced and renamed over the target
// (atomic per file; symlinks likewise via symlinkat + renameat); each touched
// directory is fsynced at the end. Parents are opened with openat2
// (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS) from dest_dir,
// so a symlink swapped in after the checks is not followed either. Modes: a
// file gets mode & 0777 (a sticky bit on a file means nothing on Linux and is
// dropped), a directory mode & 01777. Files and directories are created by
// the calling process and owned by its uid/gid; a replaced file does not
// keep its owner, extended attributes or ACLs. New directories are created
// first (parents first, mode 0700 until their mode is set), then files and
// symlinks are written, then deletions are made (entries before their
// directory), then directory modes are set (deepest first). Fetched contents
// are fetched (and checked) before the first write and held in memory until
// written. ApplyResult::applied lists the changes in that order.
//
// The checks run first and nothing is applied if any fails. Should the host
// change between the checks and the writes (a race the checks cannot
// exclude), the call stops at the changed path with kConflict, and the
// message names what was already applied.
Result<ApplyResult> apply_changes(const std::string& dest_dir, const HostTree* base, const std::vector<Change>& changes,
                                  const FetchFn& fetch);

// Folds an in-place export's host_after into `base` (the tree at sandbox
// start), so that a later export of the same paths compares with what this
// one wrote instead of reporting its own writes as conflicts. A failed
// export that already applied changes (a race, see apply_changes) leaves
// those paths in conflict until the caller rescans.
void update_base(HostTree& base, const ApplyResult& result);

// A unified diff of the regular files among `changes` against `host_dir`,
// produced by `diff -u` (GNU diffutils) on private temporary copies (a 0700
// directory removed before returning): headers "--- a/<path>" and
// "+++ b/<path>", a created file against /dev/null, a deleted one to
// /dev/null; a path with quotes, backslashes or control characters is
// C-quoted as git does. A side with a NUL byte in its first 8 KiB gets
// "Binary files a/<path> and b/<path> differ" instead. Directories and
// symlinks are not in the patch. Host files are read without following
// symlinks beneath host_dir; fetched contents are checked against
// Change::sha256 (kPermission otherwise). For review, not for applying.
Result<std::string> unified_patch(const std::string& host_dir, const std::vector<Change>& changes, const FetchFn& fetch);

}  // namespace ztee::detail
