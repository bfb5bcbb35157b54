// collect_garbage: removes what sandboxes and pools of processes that are
// gone (crashed, killed, exited without destroying) left in a state directory.
//
// Liveness is read from flocks, never from pids alone: a live sandbox holds
// <state>/<id>/owner, a live id lease <state>/ids/<n>, a live pool its
// <state>/templates/<name>.owner, a live sandbox's workspace images
// <state>/ws-<hex>/owner. A lock nobody holds belongs to a process
// that is gone.
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "jail/jail.hpp"
#include "net/net.hpp"
#include "pool/pool.hpp"
#include "proc/owner.hpp"
#include "runtime/impl.hpp"

namespace ztee {

namespace fs = std::filesystem;

namespace {

// Something made by a start still in progress elsewhere may briefly lack
// its lock; anything younger than this is left alone.
constexpr auto kGrace = std::chrono::seconds(30);

std::string read_small(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool older_than_grace(const std::string& path) {
  struct stat st{};
  if (::lstat(path.c_str(), &st) != 0) return true;
  auto age = std::chrono::system_clock::now() - std::chrono::system_clock::from_time_t(st.st_mtime);
  return age > kGrace;
}

// Kills the sandbox's VMM if it still runs (checked by its command line,
// which names the sandbox) and waits up to 2 s for it to go.
Result<void> kill_vmm(const std::string& dir, const std::string& id) {
  std::string text = read_small(dir + "/vmm.pid");
  pid_t pid = static_cast<pid_t>(std::atoi(text.c_str()));
  if (!detail::process_running_with(pid, id)) return {};  // gone, or a recycled pid
  ::kill(pid, SIGKILL);
  for (int i = 0; i < 200 && detail::process_running_with(pid, id); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (detail::process_running_with(pid, id))
    return make_error(Errc::kIo, fmt::format("VMM process {} of sandbox {} did not die after SIGKILL", pid, id));
  return {};
}

}  // namespace

Result<GcReport> collect_garbage(const RuntimeOptions& in) {
  RuntimeOptions opts = in;
  if (opts.state_dir.empty()) opts.state_dir = detail::default_state_dir();
  if (opts.state_dir.empty() || opts.state_dir[0] != '/')
    return make_error(Errc::kInvalidArgument, fmt::format("state_dir \"{}\" must be an absolute path", opts.state_dir));
  GcReport report;
  std::vector<std::string> failed;
  struct stat sst{};
  if (::stat(opts.state_dir.c_str(), &sst) != 0) return report;  // nothing was ever made there

  std::optional<detail::CgroupLayout> cgroups;
  if (opts.jail.enabled && ::geteuid() == 0) {
    auto l = detail::detect_cgroups(opts.jail.cgroup_parent);
    if (l) cgroups = std::move(*l);
  }
  auto note_fail = [&](const std::string& what, const Error& e) { failed.push_back(what + ": " + e.message); };

  // Sandboxes (and pre-spawned VMMs) whose owner is gone.
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(opts.state_dir, ec)) {
    std::string name = e.path().filename();
    if (name.rfind("sb-", 0) != 0 || !e.is_directory(ec)) continue;
    std::string dir = e.path();
    detail::LockOwner o = detail::lock_owner(dir + "/owner");
    if (o == detail::LockOwner::kLive) {
      report.live.push_back(name);
      continue;
    }
    if (o == detail::LockOwner::kNoLock && !older_than_grace(dir)) continue;
    bool ok = true;
    if (auto r = kill_vmm(dir, name); !r) {
      note_fail("sandbox " + name, r.error());
      continue;  // its cgroup and jail are still in use
    }
    // A crashed sandbox's network slot: its links lived in its namespace,
    // which died with the process; the host's neighbour entry for it is
    // left. The slot number is in the owner file: "<pid> <index>".
    long pid = 0, index = 0;
    if (std::sscanf(read_small(dir + "/owner").c_str(), "%ld %ld", &pid, &index) == 2 && index > 0) {
      auto n = detail::remove_slot_leftovers(detail::NetEnv{}, static_cast<uint32_t>(index));
      if (!n) {
        note_fail("sandbox " + name, n.error());
        ok = false;
      } else if (*n) {
        report.removed.push_back(fmt::format("network neighbour entry of slot {}", index));
      }
    }
    if (cgroups) {
      if (auto r = detail::remove_jail_leftovers(opts.state_dir, name, *cgroups); !r) {
        note_fail("sandbox " + name, r.error());
        ok = false;
      }
    }
    if (!ok) continue;
    fs::remove_all(dir, ec);
    if (ec || fs::exists(dir, ec))
      failed.push_back(fmt::format("sandbox directory {}: {}", dir, ec ? ec.message() : "still there"));
    else
      report.removed.push_back("sandbox " + name);
  }

  // Workspace images (copies of mounted host directories) of processes that
  // are gone: <state>/ws-*/owner is held while a sandbox uses them.
  for (const auto& e : fs::directory_iterator(opts.state_dir, ec)) {
    std::string name = e.path().filename();
    if (name.rfind("ws-", 0) != 0 || !e.is_directory(ec)) continue;
    std::string dir = e.path();
    detail::LockOwner o = detail::lock_owner(dir + "/owner");
    if (o == detail::LockOwner::kLive || (o == detail::LockOwner::kNoLock && !older_than_grace(dir))) continue;
    fs::remove_all(dir, ec);
    if (ec || fs::exists(dir, ec))
      failed.push_back(fmt::format("workspace images {}: {}", dir, ec ? ec.message() : "still there"));
    else
      report.removed.push_back("workspace images " + name);
  }

  // Id leases nobody holds.
  for (const auto& e : fs::directory_iterator(opts.state_dir + "/ids", ec)) {
    std::string path = e.path();
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) continue;
    detail::UniqueFd f(fd);
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) continue;
    // Unlinked while locked, as a release does: nobody takes it in between.
    if (::unlink(path.c_str()) == 0) report.removed.push_back("id lease " + path);
  }

  // Pool templates of pools that are gone.
  std::string tdir = opts.state_dir + "/templates";
  for (const auto& e : fs::directory_iterator(tdir, ec)) {
    std::string path = e.path();
    if (!e.is_directory(ec)) continue;
    detail::LockOwner o = detail::lock_owner(detail::owner_lock_path(path));
    if (o == detail::LockOwner::kLive || (o == detail::LockOwner::kNoLock && !older_than_grace(path))) continue;
    fs::remove_all(path, ec);
    ::unlink(detail::owner_lock_path(path).c_str());
    if (fs::exists(path, ec))
      failed.push_back("pool template " + path);
    else
      report.removed.push_back("pool template " + path);
  }
  for (const auto& e : fs::directory_iterator(tdir, ec)) {
    std::string name = e.path().filename();
    if (name.size() > 7 && name[0] == '.' && name.ends_with(".owner") &&
        !fs::exists(tdir + "/" + name.substr(1, name.size() - 7), ec) && detail::lock_owner(e.path()) == detail::LockOwner::kGone)
      ::unlink(e.path().c_str());
  }

  // Cgroups of sandboxes whose directory is gone (a crash between the two),
  // once they are empty and old: a live VMM is always inside its cgroup.
  if (cgroups) {
    for (const auto& name : detail::list_cgroups(*cgroups)) {
      if (name.rfind("sb-", 0) != 0 || fs::exists(opts.state_dir + "/" + name, ec)) continue;
      bool empty = true, old = true;
      for (const auto& parent : cgroups->parents) {
        std::string d = parent + "/" + name;
        if (!fs::exists(d, ec)) continue;
        if (!read_small(d + "/cgroup.procs").empty()) empty = false;
        if (!older_than_grace(d)) old = false;
      }
      if (!empty || !old) continue;
      if (auto r = detail::remove_cgroups(*cgroups, name); !r)
        note_fail("cgroup " + name, r.error());
      else
        report.removed.push_back("cgroup " + name);
    }
  }

  if (!failed.empty()) {
    std::string what;
    for (const auto& f : failed) what += (what.empty() ? "" : "; ") + f;
    return make_error(Errc::kIo, fmt::format("garbage collection in {} left: {}", opts.state_dir, what));
  }
  return report;
}

Result<void> remove_unused_host_network() { return detail::remove_host_network_if_unused(detail::NetEnv{}); }

}  // namespace ztee
