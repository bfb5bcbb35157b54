// Private helpers of lib/workspace: stat conversion, beneath-only opens and
// running a host tool.
#pragma once

#include <ztee/result.hpp>

#include <sys/stat.h>

#include <cstddef>
#include <string>
#include <vector>

#include "io/fd.hpp"
#include "workspace/workspace.hpp"

namespace ztee::detail {

HostEntry host_entry_from_stat(const struct stat& st);

// openat2(dirfd, rel, flags, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
// RESOLVE_NO_MAGICLINKS [| RESOLVE_NO_XDEV]); -1 with errno on failure.
int open_beneath(int dirfd, const std::string& rel, int flags, bool no_xdev = false);

// Reads a whole fd (at most `cap` bytes; more is an error, kInvalidArgument).
Result<std::string> read_fd(int fd, size_t cap, const std::string& what);

struct ToolRun {
  int exit_code = -1;  // -1: killed by a signal
  std::string output;  // stdout and stderr together
};

// Runs argv[0] (an absolute path) with a clean environment (LC_ALL=C and a
// fixed PATH), stdin /dev/null, and waits for it. Output beyond `cap` bytes
// is an error (the tool is killed).
Result<ToolRun> run_tool(const std::vector<std::string>& argv, size_t cap = 1 << 20);

// A private directory (0700) under $TMPDIR or /tmp, removed with its
// contents on destruction.
class TempDir {
 public:
  static Result<TempDir> create(const std::string& prefix);
  TempDir(TempDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  TempDir& operator=(TempDir&&) = delete;
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  TempDir() = default;
  std::string path_;
};

}  // namespace ztee::detail
