// Shared pieces of the benchmarks: the command line, clocks, percentiles, the
// metric lines, and a bare QEMU (the exact argv libztee uses, spawned directly)
// used as a baseline.
#pragma once

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/protocol.hpp"
#include "image/image.hpp"
#include "vmm/qemu/qemu.hpp"

extern char** environ;

namespace ztee::bench {

inline uint64_t now_ns() {
  struct timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

inline double ms_since(uint64_t t0) { return static_cast<double>(now_ns() - t0) / 1e6; }

// Nearest-rank percentile (q in [0,1]); p50 of an even count is the mean of the middle two.
inline double percentile(std::vector<double> v, double q) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  if (q == 0.5 && v.size() % 2 == 0) return (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  if (rank == 0) rank = 1;
  return v[std::min(rank, v.size()) - 1];
}
inline double minimum(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }
inline double maximum(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

// One metric line of the benchmark convention. No baseline: both printed null.
inline void print_metric(std::string_view metric, double value, std::string_view unit,
                         std::optional<double> baseline = std::nullopt) {
  std::string b = "null", r = "null";
  if (baseline && *baseline > 0) {
    b = fmt::format("{:.3f}", *baseline);
    r = fmt::format("{:.3f}", value / *baseline);
  }
  std::fputs(fmt::format("{{\"metric\": \"{}\", \"value\": {:.3f}, \"unit\": \"{}\", \"baseline\": {}, \"ratio\": {}}}\n",
                         metric, value, unit, b, r)
                 .c_str(),
             stdout);
}

[[noreturn]] inline void die(std::string_view what) {
  std::fprintf(stderr, "%.*s\n", static_cast<int>(what.size()), what.data());
  std::exit(1);
}

// A benchmark's command line. Options are declared by reading them: num() takes
// "--name N" (a whole number that fits an int), str() "--name VALUE", flag() a bare "--name";
// finish(), called once all are read and before any work, rejects every
// argument no call read. --help or -h anywhere prints the usage to stdout and
// exits 0; a usage error prints a message and the usage to stderr and exits 2.
class Args {
 public:
  // `usage` is the synopsis printed after "usage: ".
  Args(int argc, char** argv, std::string_view usage) : usage_(usage), args_(argv + 1, argv + argc) {
    used_.assign(args_.size(), false);
    for (std::string_view a : args_)
      if (a == "--help" || a == "-h") {
        std::printf("usage: %.*s\n", static_cast<int>(usage_.size()), usage_.data());
        std::exit(0);
      }
  }

  long num(std::string_view name, long def) {
    auto v = value(name);
    if (!v) return def;
    std::string text(*v);
    char* end = nullptr;
    errno = 0;
    long n = std::strtol(text.c_str(), &end, 10);
    // Callers keep counts in an int, so larger numbers are refused rather than wrapped.
    if (text.empty() || *end != '\0' || errno == ERANGE || n < 0 || n > INT32_MAX)
      fail(fmt::format("{} takes a whole number from 0 to {}, not \"{}\"", name, INT32_MAX, text));
    return n;
  }
  std::string str(std::string_view name, std::string def) {
    auto v = value(name);
    return v ? std::string(*v) : def;
  }
  bool flag(std::string_view name) { return find(name).has_value(); }

  void finish() const {
    for (size_t i = 0; i < args_.size(); ++i)
      if (!used_[i]) fail(fmt::format("unknown argument \"{}\"", args_[i]));
  }

 private:
  // Where `name` stands, marked as read; nullopt when it is absent.
  std::optional<size_t> find(std::string_view name) {
    std::optional<size_t> at;
    for (size_t i = 0; i < args_.size(); ++i) {
      if (args_[i] != name) continue;
      if (at) fail(fmt::format("{} given more than once", name));
      at = i;
      used_[i] = true;
    }
    return at;
  }
  // A value never starts with "--", so a forgotten one is not taken from the next option.
  std::optional<std::string_view> value(std::string_view name) {
    auto at = find(name);
    if (!at) return std::nullopt;
    size_t v = *at + 1;
    if (v >= args_.size() || args_[v].starts_with("--")) fail(fmt::format("{} needs a value", name));
    used_[v] = true;
    return args_[v];
  }
  [[noreturn]] void fail(std::string_view what) const {
    std::fprintf(stderr, "error: %.*s\nusage: %.*s\n", static_cast<int>(what.size()), what.data(),
                 static_cast<int>(usage_.size()), usage_.data());
    std::exit(2);
  }

  std::string usage_;
  std::vector<std::string_view> args_;
  std::vector<bool> used_;
};

inline std::string hello_payload(std::string_view hostname) {
  unsigned char raw[32];
  if (::getrandom(raw, sizeof raw, 0) != static_cast<ssize_t>(sizeof raw)) std::memset(raw, 0, sizeof raw);
  std::string hex;
  for (unsigned char c : raw) hex += fmt::format("{:02x}", c);
  struct timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return fmt::format("{{\"seed\":\"{}\",\"time_ns\":{},\"hostname\":\"{}\"}}", hex,
                     static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec, hostname);
}

// Integer field of a small flat JSON object (the HELLO reply); -1 if absent.
inline int64_t json_field(std::string_view json, std::string_view key) {
  std::string k = fmt::format("\"{}\":", key);
  size_t p = json.find(k);
  if (p == std::string_view::npos) return -1;
  p += k.size();
  while (p < json.size() && json[p] == ' ') ++p;
  return std::strtoll(std::string(json.substr(p, 24)).c_str(), nullptr, 10);
}

// A QEMU process started with exactly the argv libztee builds (QemuDriver::argv)
// and the same channel layout (agent 3, QMP 4, console 5), without libztee's
// event loop. The QMP and console sockets are left unread.
class BareQemu {
 public:
  BareQemu(const detail::QemuConfig& qc, const detail::Image& img) : driver_(qc), image_(img) {}
  BareQemu(const BareQemu&) = delete;
  BareQemu& operator=(const BareQemu&) = delete;
  ~BareQemu() { stop(); }

  // Spawns QEMU; returns false with `err` set on failure.
  bool start(std::string* err) {
    int agent[2], qmp[2], con[2];
    for (int* sv : {agent, qmp, con}) {
      if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        *err = fmt::format("socketpair: {}", std::strerror(errno));
        return false;
      }
    }
    // Move the child ends above 5 so dup2 onto 3..5 never collides or no-ops
    // (a same-fd dup2 would keep FD_CLOEXEC).
    int child_end[3];
    int* pairs[3] = {agent, qmp, con};
    for (int i = 0; i < 3; ++i) {
      child_end[i] = ::fcntl(pairs[i][1], F_DUPFD_CLOEXEC, 10);
      ::close(pairs[i][1]);
    }
    detail::VmConfig cfg;
    cfg.id = fmt::format("bare-{}", ++serial_);
    cfg.image = image_;
    cfg.vcpus = 1;
    cfg.memory_mib = 256;
    std::vector<std::string> args = driver_.argv(cfg, 3, 4, 5);
    std::vector<char*> cargv;
    for (auto& a : args) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    std::string e1 = "PATH=/usr/sbin:/usr/bin:/sbin:/bin", e2 = "LC_ALL=C";
    char* cenv[] = {e1.data(), e2.data(), nullptr};

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    for (int i = 0; i < 3; ++i) posix_spawn_file_actions_adddup2(&fa, child_end[i], 3 + i);
    pid_t pid = 0;
    int rc = ::posix_spawn(&pid, cargv[0], &fa, nullptr, cargv.data(), cenv);
    posix_spawn_file_actions_destroy(&fa);
    for (int fd : child_end) ::close(fd);
    if (rc != 0) {
      for (int* sv : pairs) ::close(sv[0]);
      *err = fmt::format("posix_spawn {}: {}", cargv[0], std::strerror(rc));
      return false;
    }
    pid_ = pid;
    agent_ = agent[0];
    qmp_ = qmp[0];
    con_ = con[0];
    return true;
  }

  // Sends a frame on the agent channel (blocking).
  bool send(proto::MsgType type, uint32_t stream, std::string_view payload) {
    std::string f;
    proto::append_frame(f, type, stream, payload);
    size_t off = 0;
    while (off < f.size()) {
      ssize_t n = ::send(agent_, f.data() + off, f.size() - off, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      off += static_cast<size_t>(n);
    }
    return true;
  }

  // Waits for the first frame of `stream`; returns false on EOF, error or timeout.
  bool wait_frame(uint32_t stream, int timeout_ms, proto::FrameHeader* h, std::string* payload) {
    uint64_t deadline = now_ns() + static_cast<uint64_t>(timeout_ms) * 1000000ull;
    bool got = false;
    char buf[4096];
    while (!got) {
      uint64_t now = now_ns();
      if (now >= deadline) return false;
      struct pollfd p{agent_, POLLIN, 0};
      int pr = ::poll(&p, 1, static_cast<int>((deadline - now) / 1000000ull) + 1);
      if (pr < 0 && errno == EINTR) continue;
      if (pr <= 0) return false;
      ssize_t n = ::recv(agent_, buf, sizeof buf, 0);
      if (n <= 0) return false;
      auto e = decoder_.feed(buf, static_cast<size_t>(n), [&](const proto::FrameHeader& fh, std::string_view pl) {
        if (!got && fh.stream == stream) {
          *h = fh;
          payload->assign(pl);
          got = true;
        }
      });
      if (e != proto::DecodeError::kNone) return false;
    }
    return true;
  }

  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int st;
      while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
      }
      pid_ = 0;
    }
    for (int* fd : {&agent_, &qmp_, &con_}) {
      if (*fd >= 0) ::close(*fd);
      *fd = -1;
    }
    decoder_ = proto::FrameDecoder();
  }

  int agent_fd() const { return agent_; }

 private:
  detail::QemuDriver driver_;
  detail::Image image_;
  pid_t pid_ = 0;
  int agent_ = -1, qmp_ = -1, con_ = -1;
  int serial_ = 0;
  proto::FrameDecoder decoder_;
};

// Loads the default image and probes QEMU the way an unjailed Runtime::create
// does (accel: $ZTEE_ACCEL, else auto).
struct BareSetup {
  detail::QemuConfig qemu;
  detail::Image image;
};

inline BareSetup bare_setup(const std::string& image_dir) {
  auto qc = detail::probe_qemu("", "", false);
  if (!qc) die(fmt::format("probe_qemu: {}", qc.error().message));
  auto img = detail::load_image_manifest(image_dir);
  if (!img) die(fmt::format("load_image_manifest: {}", img.error().message));
  return {*qc, *img};
}

}  // namespace ztee::bench
