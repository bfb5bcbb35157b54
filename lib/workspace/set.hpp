// The workspace mounts of one sandbox: their read-only disk images (built
// when the sandbox is created, before its VMM starts) and the host trees as
// they were read. Shared by the sandbox's Image; removed with the last user.
#pragma once

#include <ztee/result.hpp>
#include <ztee/ztee.hpp>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "io/fd.hpp"
#include "workspace/workspace.hpp"

namespace ztee::detail {

struct WorkspaceSet {
  struct Entry {
    Mount mount;        // host_dir canonical (realpath)
    std::string image;  // <dir>/m<i>.ext4
    // The host tree the image was built from, then updated by each in-place
    // export (update_base) so that a later export does not take this one's
    // writes for conflicts. Guarded by export_mu.
    mutable HostTree tree;
  };
  mutable std::mutex export_mu;  // one export at a time per sandbox
  // Guards dir and owner. Never export_mu here: destroy (on the loop
  // thread) must not wait for an export, which waits for the loop.
  mutable std::mutex images_mu;
  mutable std::string dir;  // <state_dir>/ws-<hex>, holding the images and a lock file; "" once removed
  mutable UniqueFd owner;   // flock on <dir>/owner: a live set (collect_garbage)
  std::vector<Entry> entries;

  WorkspaceSet() = default;
  WorkspaceSet(const WorkspaceSet&) = delete;
  WorkspaceSet& operator=(const WorkspaceSet&) = delete;
  ~WorkspaceSet();  // removes dir
  // Removes the images now (the sandbox is destroyed). Idempotent.
  void remove_images() const;
  const Entry* find(std::string_view guest_path) const;
};

// Checks `mounts` (see Mount) and builds one image per mount under a new
// directory in state_dir. Slow for big trees (mkfs.ext4 copies every file):
// call off the loop thread. Nothing is left behind on failure.
Result<std::shared_ptr<WorkspaceSet>> make_workspaces(const std::string& state_dir, const std::vector<Mount>& mounts);

// Changes as a JSON array (the shape the guest's DIFF reply has; paths
// that are not UTF-8 as "path_hex").
std::string changes_json(const std::vector<Change>& changes);

// `now` minus `base` (both from DIFF): what changed since base was taken.
std::vector<Change> subtract_changes(const std::vector<Change>& now, const std::vector<Change>& base);

}  // namespace ztee::detail
