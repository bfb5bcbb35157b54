#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <set>
#include <sstream>

#include "jail/jail.hpp"

namespace ztee::detail {

namespace {

const char* const kV1Controllers[] = {"memory", "cpu", "pids"};

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) out.push_back(item);
  return out;
}

bool has(const std::vector<std::string>& v, const std::string& x) { return std::find(v.begin(), v.end(), x) != v.end(); }

Result<void> write_file(const std::string& path, const std::string& value) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0 || ::write(fd, value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
    int e = errno;
    if (fd >= 0) ::close(fd);
    return make_error(Errc::kIo, fmt::format("jail: cannot write \"{}\" to {}: {}", value, path, std::strerror(e)), e);
  }
  ::close(fd);
  return {};
}

std::string join_path(const std::string& mount, const std::string& own, const std::string& parent) {
  std::string base = parent.starts_with('/') ? mount : mount + (own == "/" ? "" : own);
  return base + (parent.starts_with('/') ? parent : "/" + parent);
}

std::vector<std::string> unique_dirs(const CgroupLayout& layout, const std::string& name) {
  std::vector<std::string> out;
  for (const auto& p : layout.parents) {
    std::string d = p + "/" + name;
    if (!has(out, d)) out.push_back(d);
  }
  return out;
}

bool exists(const std::string& p) {
  struct stat st{};
  return ::lstat(p.c_str(), &st) == 0;
}

void sleep_ms(int ms) {
  struct timespec ts{0, ms * 1000000L};
  ::nanosleep(&ts, nullptr);
}

}  // namespace

Result<CgroupLayout> detect_cgroups(const std::string& parent) {
  if (parent.empty() || parent.find("..") != std::string::npos)
    return make_error(Errc::kInvalidArgument,
                      fmt::format("jail: cgroup_parent \"{}\" must be a non-empty path without \"..\"", parent));
  std::string v2_mount;
  std::vector<std::pair<std::string, std::vector<std::string>>> v1;  // mount, controllers
  std::ifstream mi("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mi, line)) {
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    auto pre = split(line.substr(0, dash), ' ');
    auto post = split(line.substr(dash + 3), ' ');
    if (pre.size() < 5 || post.size() < 3) continue;
    if (post[0] == "cgroup2" && v2_mount.empty()) v2_mount = pre[4];
    if (post[0] == "cgroup") v1.emplace_back(pre[4], split(post[2], ','));
  }
  std::string v2_own = "/";
  std::vector<std::pair<std::vector<std::string>, std::string>> own;  // controllers, path (v1)
  std::ifstream pc("/proc/self/cgroup");
  while (std::getline(pc, line)) {
    auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string ctl = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (ctl.empty())
      v2_own = path;
    else
      own.emplace_back(split(ctl, ','), path);
  }
  CgroupLayout layout;
  if (!v2_mount.empty()) {
    std::ifstream c(v2_mount + (v2_own == "/" ? "" : v2_own) + "/cgroup.controllers");
    std::string ctl;
    std::getline(c, ctl);
    auto have = split(ctl, ' ');
    if (has(have, "memory") && has(have, "cpu") && has(have, "pids")) {
      layout.v2 = true;
      layout.parents.push_back(join_path(v2_mount, v2_own, parent));
      return layout;
    }
  }
  for (const char* want : kV1Controllers) {
    std::string mount;
    for (auto& [m, opts] : v1)
      if (has(opts, want)) mount = m;
    if (mount.empty())
      return make_error(Errc::kUnsupported,
                        fmt::format("jail: no cgroup {} controller: neither the unified hierarchy (cgroup v2) nor "
                                    "a v1 hierarchy has it; enable it, or set RuntimeOptions::jail.enabled = false",
                                    want));
    std::string path = "/";
    for (auto& [ctls, p] : own)
      if (has(ctls, want)) path = p;
    layout.parents.push_back(join_path(mount, path, parent));
  }
  return layout;
}

Result<SandboxCgroups> create_cgroups(const CgroupLayout& layout, const std::string& name, const CgroupLimits& lim) {
  SandboxCgroups out;
  auto undo = [&](Error err) -> Result<SandboxCgroups> {
    out.procs.clear();
    out.v2_dir.reset();
    for (auto it = out.dirs.rbegin(); it != out.dirs.rend(); ++it) ::rmdir(it->c_str());
    return err;
  };
  for (size_t i = 0; i < layout.parents.size(); ++i) {
    const std::string& parent = layout.parents[i];
    std::string dir = parent + "/" + name;
    if (has(out.dirs, dir)) continue;
    // The parent is shared by every sandbox (and runtime): created once, kept.
    for (size_t pos = 1; pos <= parent.size(); ++pos) {
      if (pos == parent.size() || parent[pos] == '/') {
        std::string p = parent.substr(0, pos);
        if (::mkdir(p.c_str(), 0755) != 0 && errno != EEXIST) {
          int e = errno;
          return undo(make_error(Errc::kIo, fmt::format("jail: cannot create cgroup {}: {}", p, std::strerror(e)), e));
        }
      }
    }
    if (layout.v2) {
      // Delegate the controllers down to the sandbox's level.
      if (auto r = write_file(parent + "/cgroup.subtree_control", "+memory +cpu +pids"); !r) return undo(r.error());
    }
    if (::mkdir(dir.c_str(), 0755) != 0) {
      int e = errno;
      return undo(make_error(Errc::kIo, fmt::format("jail: cannot create cgroup {}: {}", dir, std::strerror(e)), e));
    }
    out.dirs.push_back(dir);
    std::vector<std::pair<std::string, std::string>> settings;
    bool mem = layout.v2 || layout.parents[0] == parent;
    bool cpu = layout.v2 || layout.parents[1] == parent;
    bool pids = layout.v2 || layout.parents[2] == parent;
    if (mem && lim.memory_bytes)
      settings.emplace_back(layout.v2 ? "memory.max" : "memory.limit_in_bytes", std::to_string(lim.memory_bytes));
    if (mem && lim.memory_bytes && layout.v2) settings.emplace_back("memory.swap.max", "0");
    if (cpu && lim.cpu_percent) {
      uint64_t quota = uint64_t{lim.cpu_percent} * 1000;  // per 100 ms period
      if (layout.v2) {
        settings.emplace_back("cpu.max", fmt::format("{} 100000", quota));
      } else {
        settings.emplace_back("cpu.cfs_period_us", "100000");
        settings.emplace_back("cpu.cfs_quota_us", std::to_string(quota));
      }
    }
    if (cpu && lim.cpu_background) settings.emplace_back(layout.v2 ? "cpu.weight" : "cpu.shares", layout.v2 ? "1" : "2");
    if (pids && lim.pids_max) settings.emplace_back("pids.max", std::to_string(lim.pids_max));
    for (auto& [file, value] : settings) {
      std::string path = dir + "/" + file;
      if (file == "memory.swap.max" && !exists(path)) continue;  // no swap accounting
      if (auto r = write_file(path, value); !r) return undo(r.error());
    }
    if (!layout.v2 && mem && lim.memory_bytes && exists(dir + "/memory.memsw.limit_in_bytes")) {
      if (auto r = write_file(dir + "/memory.memsw.limit_in_bytes", std::to_string(lim.memory_bytes)); !r)
        return undo(r.error());
    }
    if (layout.v2) {
      // The child is cloned straight into it (CLONE_INTO_CGROUP).
      int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (fd < 0) {
        int e = errno;
        return undo(make_error(Errc::kIo, fmt::format("jail: cannot open {}: {}", dir, std::strerror(e)), e));
      }
      out.v2_dir = UniqueFd(fd);
      continue;
    }
    // v1: the child joins through `tasks`, moving only its one thread: the
    // kernel then skips the global threadgroup lock (see SandboxCgroups).
    // The child is single-threaded, so its thread is its whole process.
    int fd = ::open((dir + "/tasks").c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
      int e = errno;
      return undo(make_error(Errc::kIo, fmt::format("jail: cannot open {}/tasks: {}", dir, std::strerror(e)), e));
    }
    out.procs.emplace_back(fd);
  }
  return out;
}

Result<void> set_cpu_background(const CgroupLayout& layout, const std::string& name, bool background) {
  if (layout.parents.size() < (layout.v2 ? 1u : 2u))
    return make_error(Errc::kInternal, "set_cpu_background: the cgroup layout has no cpu hierarchy");
  const std::string dir = (layout.v2 ? layout.parents[0] : layout.parents[1]) + "/" + name;
  if (layout.v2) return write_file(dir + "/cpu.weight", background ? "1" : "100");
  return write_file(dir + "/cpu.shares", background ? "2" : "1024");
}

Result<void> remove_cgroups(const CgroupLayout& layout, const std::string& name) {
  std::vector<std::string> left;
  int last_err = 0;
  for (const auto& dir : unique_dirs(layout, name)) {
    if (!exists(dir)) continue;
    for (int attempt = 0; attempt < 200 && exists(dir); ++attempt) {
      // Anything still in it (there should be nothing once the VMM is reaped) is killed first.
      std::ifstream procs(dir + "/cgroup.procs");
      std::string pid;
      while (std::getline(procs, pid))
        if (!pid.empty()) ::kill(static_cast<pid_t>(std::stol(pid)), SIGKILL);
      if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) break;
      last_err = errno;
      if (last_err != EBUSY) break;
      sleep_ms(10);  // exiting tasks leave the cgroup a moment after they are reaped
    }
    if (exists(dir)) left.push_back(dir);
  }
  if (left.empty()) return {};
  std::string what;
  for (auto& l : left) what += (what.empty() ? "" : ", ") + l;
  return make_error(Errc::kIo, fmt::format("cgroup {} could not be removed: {}", what, std::strerror(last_err)),
                    last_err);
}

std::vector<std::string> list_cgroups(const CgroupLayout& layout) {
  std::set<std::string> names;
  for (const auto& p : layout.parents) {
    DIR* d = ::opendir(p.c_str());
    if (!d) continue;
    while (dirent* e = ::readdir(d))
      if (e->d_type == DT_DIR && e->d_name[0] != '.') names.insert(e->d_name);
    ::closedir(d);
  }
  return {names.begin(), names.end()};
}

}  // namespace ztee::detail
