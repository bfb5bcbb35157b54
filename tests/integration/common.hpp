// Shared set-up for the real-VM tests: one runtime and one booted sandbox per
// process (cold boots take seconds under TCG), plus helpers.
#pragma once

#include <doctest/doctest.h>
#include <ztee/ztee.hpp>

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace test {

inline std::string image_dir() {
  std::string d = ztee::default_image_dir();
  struct stat st{};
  if (::stat((d + "/manifest.json").c_str(), &st) != 0)
    FAIL("no guest image at " << d << ": run tools/dev setup (or set ZTEE_IMAGE_DIR)");
  return d;
}

// The suite's state dir, removed when the process exits (after the runtime:
// statics go in reverse order of construction, and runtime() makes this one
// first), unless ZTEE_TEST_KEEP=1 or something is still mounted under it.
inline const std::string& state_dir() {
  struct Dir {
    std::string path;
    ~Dir() {
      if (const char* k = std::getenv("ZTEE_TEST_KEEP"); k && std::string(k) == "1") return;
      std::ifstream mi("/proc/self/mountinfo");
      std::string line;
      while (std::getline(mi, line))
        if (line.find(" " + path + "/") != std::string::npos || line.find(" " + path + " ") != std::string::npos) {
          std::fprintf(stderr, "note: %s kept: something is still mounted under it\n", path.c_str());
          return;
        }
      // A VMM of a pool may still be going away: retry for up to a second.
      std::error_code ec;
      for (int i = 0; i < 20; ++i) {
        ec.clear();
        std::filesystem::remove_all(path, ec);
        if (!ec) return;
        ::usleep(50000);
      }
      std::fprintf(stderr, "note: %s kept: %s\n", path.c_str(), ec.message().c_str());
    }
  };
  static Dir dir = [] {
    char t[] = "/tmp/ztee-itest.XXXXXX";
    REQUIRE(::mkdtemp(t) != nullptr);
    return Dir{t};
  }();
  return dir.path;
}

inline ztee::Runtime& runtime() {
  static ztee::Runtime rt = [] {
    ztee::RuntimeOptions o;
    o.image_dir = image_dir();
    o.state_dir = state_dir();
    auto r = ztee::Runtime::create(o);
    if (!r) FAIL("Runtime::create: " << r.error().message);
    return std::move(r).value();
  }();
  return rt;
}

// The shared sandbox: booted once, used by every test that leaves it usable.
inline ztee::Sandbox& shared() {
  static ztee::Sandbox sb = [] {
    auto r = runtime().create_sandbox();
    if (!r) FAIL("create_sandbox: " << r.error().message);
    return std::move(r).value();
  }();
  REQUIRE(sb.state() == ztee::SandboxState::kReady);
  return sb;
}

inline int count_fds() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') ++n;
    ::closedir(d);
  }
  return n;
}

inline int count_entries(const std::string& dir) {
  int n = 0;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') ++n;
    ::closedir(d);
  }
  return n;
}

// Entries in the shared state dir, counted after the runtime exists (it
// creates what it keeps there, e.g. ids/, when it starts).
inline int count_state_entries() {
  (void)runtime();
  return count_entries(state_dir());
}

inline bool process_alive(int pid) { return pid > 0 && ::kill(pid, 0) == 0; }

}  // namespace test
