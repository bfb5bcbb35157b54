#include "workspace/fs.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "proc/child.hpp"

namespace ztee::detail {

HostEntry host_entry_from_stat(const struct stat& st) {
  HostEntry e;
  if (S_ISREG(st.st_mode))
    e.type = FileType::kFile;
  else if (S_ISDIR(st.st_mode))
    e.type = FileType::kDir;
  else if (S_ISLNK(st.st_mode))
    e.type = FileType::kSymlink;
  else
    e.type = FileType::kOther;
  e.mode = st.st_mode & 07777;
  e.size = static_cast<uint64_t>(st.st_size);
  e.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  e.ctime_ns = static_cast<int64_t>(st.st_ctim.tv_sec) * 1'000'000'000 + st.st_ctim.tv_nsec;
  e.dev = st.st_dev;
  e.ino = st.st_ino;
  e.nlink = st.st_nlink;
  return e;
}

int open_beneath(int dirfd, const std::string& rel, int flags, bool no_xdev) {
  open_how how{};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC | O_NOFOLLOW);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | (no_xdev ? RESOLVE_NO_XDEV : 0);
  long fd;
  do {
    fd = ::syscall(SYS_openat2, dirfd, rel.empty() ? "." : rel.c_str(), &how, sizeof how);
  } while (fd < 0 && (errno == EINTR || errno == EAGAIN));
  return static_cast<int>(fd);
}

Result<std::string> read_fd(int fd, size_t cap, const std::string& what) {
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      return make_error(Errc::kIo, fmt::format("cannot read {}: {}", what, std::strerror(e)), e);
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > cap)
      return make_error(Errc::kInvalidArgument, fmt::format("{} is longer than {} bytes", what, cap));
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Result<ToolRun> run_tool(const std::vector<std::string>& argv, size_t cap) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) < 0) {
    int e = errno;
    return make_error(Errc::kIo, fmt::format("pipe2: {}", std::strerror(e)), e);
  }
  UniqueFd r(p[0]), w(p[1]);
  SpawnSpec spec;
  spec.argv = argv;
  spec.env = {"LC_ALL=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
  spec.output_fd = w.get();
  auto child = spawn(spec);
  w.reset();
  if (!child) return std::move(child).error();
  auto out = read_fd(r.get(), cap, fmt::format("the output of {}", argv[0]));
  if (!out) return std::move(out).error();  // ~Child kills and reaps it
  r.reset();
  siginfo_t si{};
  int rc;
  do {
    rc = ::waitid(P_PIDFD, static_cast<id_t>(child->pidfd()), &si, WEXITED);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    int e = errno;
    return make_error(Errc::kInternal, fmt::format("waiting for {}: {}", argv[0], std::strerror(e)), e);
  }
  (void)child->try_reap();  // already reaped: only marks it so
  ToolRun run;
  run.exit_code = si.si_code == CLD_EXITED ? si.si_status : -1;
  run.output = std::move(*out);
  return run;
}

Result<TempDir> TempDir::create(const std::string& prefix) {
  const char* env = std::getenv("TMPDIR");
  std::string base = env && env[0] == '/' ? env : "/tmp";
  std::string tmpl = base + "/" + prefix + ".XXXXXX";
  if (!::mkdtemp(tmpl.data())) {
    int e = errno;
    return make_error(Errc::kIo, fmt::format("cannot create a temporary directory in {}: {}", base, std::strerror(e)), e);
  }
  TempDir t;
  t.path_ = tmpl;
  return t;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace ztee::detail
