#include "agent.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/random.h>
#include <signal.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "boot.hpp"
#include "net.hpp"
#include "request.hpp"

extern char** environ;

namespace ztee::guest {

using nlohmann::json;
using proto::MsgType;

namespace {

constexpr size_t kOutHigh = 4u << 20;  // stop reading children above this much queued output
constexpr size_t kOutLow = 1u << 20;   // resume below this
constexpr uint64_t kDefaultOutputCap = 16u << 20;
constexpr int kDrainMs = 200;
constexpr int kRetryMs = 50;
constexpr const char* kAgentVersion = "ztee-agent 0.1.0";

// Where a command's start failed, as the spawned child reports it.
enum Stage : int { kStageSetup = 0, kStageCwd = 1, kStageUser = 2, kStageExec = 3 };

// What the spawned child needs, all built before the clone. The child shares
// the agent's memory until execve, so it writes `stage` and `error` back here
// when a step fails.
struct SpawnRequest {
  const char* path = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  const char* cwd = nullptr;
  int in = -1, out = -1, err = -1;
  uid_t uid = 0;
  gid_t gid = 0;
  bool failed = false;
  int stage = kStageSetup;
  int error = 0;
};

// The child of a spawn, on its own stack in the agent's address space. Only
// system calls from here to execve: uid and gid change by raw syscall, so no
// libc state (shared with the suspended agent) is touched. The agent installs
// no signal handlers (it ignores SIGPIPE and takes SIGCHLD by signalfd), so a
// signal arriving here can only end this child.
int spawn_child(void* arg) {
  auto* r = static_cast<SpawnRequest*>(arg);
  struct sigaction dfl{};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(SIGPIPE, &dfl, nullptr);  // ignored in the agent; default for the command
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);  // the agent blocks SIGCHLD for its signalfd
  ::setsid();                                  // own session and process group: kill(-pid) reaches it all
  if (::dup2(r->in, 0) < 0 || ::dup2(r->out, 1) < 0 || ::dup2(r->err, 2) < 0) goto fail;
  r->stage = kStageUser;
  // Dropping root in the child only: gid and groups first, uid last.
  if (r->uid != 0 || r->gid != 0) {
    if (::syscall(SYS_setgroups, 1, &r->gid) != 0 || ::syscall(SYS_setgid, r->gid) != 0 ||
        ::syscall(SYS_setuid, r->uid) != 0)
      goto fail;
  }
  r->stage = kStageCwd;
  if (::chdir(r->cwd) != 0) goto fail;  // as the user: a directory it may not enter is refused
  r->stage = kStageExec;
  ::execve(r->path, r->argv, r->envp);
fail:
  r->error = errno;
  r->failed = true;
  ::_exit(127);
}

// Starts a command like posix_spawn does: the child shares the agent's memory
// (CLONE_VM) and the agent waits until it has called execve or failed
// (CLONE_VFORK). No page tables are copied and neither side takes
// copy-on-write faults, which under emulation was a millisecond of every exec,
// and a failure is known here, synchronously. Returns the pid, or -1 with
// errno set if the clone itself failed; r->failed says whether the command
// started.
pid_t spawn(SpawnRequest* r) {
  constexpr size_t kStack = 64 << 10;
  static char* stack = [] {
    // One stack for every spawn, under a guard page: the agent is single-threaded
    // and suspended while a child runs on it, and an exec'd child has its own.
    void* m = ::mmap(nullptr, kStack + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (m == MAP_FAILED) return static_cast<char*>(nullptr);
    ::mprotect(m, 4096, PROT_NONE);
    return static_cast<char*>(m);
  }();
  if (!stack) {
    errno = ENOMEM;
    return -1;
  }
  return ::clone(spawn_child, stack + 4096 + kStack, CLONE_VM | CLONE_VFORK | SIGCHLD, r);
}

Fd make_timer() {
  return Fd(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
}

void arm_timer(int fd, uint64_t ms) {
  itimerspec its{};
  its.it_value.tv_sec = static_cast<time_t>(ms / 1000);
  its.it_value.tv_nsec = static_cast<long>((ms % 1000) * 1000000);
  if (ms == 0) its.it_value.tv_nsec = 1;
  ::timerfd_settime(fd, 0, &its, nullptr);
}

void drain_timer(int fd) {
  uint64_t n;
  ssize_t r = ::read(fd, &n, sizeof n);
  (void)r;
}

struct User {
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home = "/root";
  std::string name = "root";
};

// Splits s at sep, calling f(field) for each field (empty ones included).
template <typename F>
void split(std::string_view s, char sep, F&& f) {
  for (;;) {
    size_t at = s.find(sep);
    f(s.substr(0, at));
    if (at == std::string_view::npos) return;
    s.remove_prefix(at + 1);
  }
}

// Parses a decimal uid/gid field; false unless it is all digits and fits.
bool parse_id(std::string_view f, uint32_t* out) {
  if (f.empty() || f.size() > 10) return false;
  uint64_t v = 0;
  for (char c : f) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > 0xffffffffu) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}

// /etc/passwd lookup without NSS (the agent is static): `who` is a name or a
// uid; a bare uid of up to nine digits that has no entry stands for itself
// (gid = uid, home /). Every exec calls this, so it splits string_views
// rather than building a stream per line.
bool lookup_user(const std::string& who, User* out) {
  // /etc/passwd as last read, re-read only when stat says it changed (an exec
  // then costs one stat instead of an open, reads and a close).
  static struct {
    bool valid = false;
    struct stat st{};
    std::string text;
  } cache;
  struct stat st{};
  if (::stat("/etc/passwd", &st) != 0) {
    cache.valid = false;
    cache.text.clear();
  } else if (!cache.valid || st.st_dev != cache.st.st_dev || st.st_ino != cache.st.st_ino ||
             st.st_size != cache.st.st_size || st.st_mtim.tv_sec != cache.st.st_mtim.tv_sec ||
             st.st_mtim.tv_nsec != cache.st.st_mtim.tv_nsec || st.st_ctim.tv_sec != cache.st.st_ctim.tv_sec ||
             st.st_ctim.tv_nsec != cache.st.st_ctim.tv_nsec) {
    cache.text = read_file("/etc/passwd");
    cache.valid = true;
    cache.st = st;
  }
  const std::string& text = cache.text;
  bool numeric = !who.empty() && who.find_first_not_of("0123456789") == std::string::npos;
  bool found = false;
  split(text, '\n', [&](std::string_view line) {
    if (found) return;
    std::string_view f[7];
    size_t n = 0;
    split(line, ':', [&](std::string_view part) {
      if (n < 7) f[n] = part;
      ++n;
    });
    if (n < 6 || !(f[0] == who || (numeric && f[2] == who))) return;
    uint32_t uid, gid;
    if (!parse_id(f[2], &uid) || !parse_id(f[3], &gid)) return;
    out->uid = uid;
    out->gid = gid;
    out->name = std::string(f[0]);
    out->home = std::string(f[5]);
    found = true;
  });
  if (found) return true;
  if (numeric && who.size() <= 9) {
    out->uid = out->gid = static_cast<uid_t>(std::stoul(who));
    out->name = who;
    out->home = "/";
    return true;
  }
  return false;
}

std::string find_in_path(const std::string& cmd, const std::string& path_var) {
  if (cmd.find('/') != std::string::npos) return cmd;
  std::string found;
  split(path_var, ':', [&](std::string_view dir) {
    if (!found.empty() || dir.empty() || dir[0] != '/') return;
    std::string p = std::string(dir) + "/" + cmd;
    struct stat st{};
    if (::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0) found = std::move(p);
  });
  return found;
}

bool parse_hex(const std::string& hex, std::string* out) {
  if (hex.size() % 2) return false;
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  out->clear();
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = nib(hex[i]), lo = nib(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi << 4 | lo));
  }
  return true;
}

void add_entropy(const std::string& seed) {
  if (seed.empty()) return;
  Fd fd(::open("/dev/urandom", O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return;
  std::vector<char> buf(sizeof(rand_pool_info) + seed.size());
  auto* info = reinterpret_cast<rand_pool_info*>(buf.data());
  info->entropy_count = static_cast<int>(seed.size() * 8);
  info->buf_size = static_cast<int>(seed.size());
  std::memcpy(info->buf, seed.data(), seed.size());
  // RNDADDENTROPY credits the host's seed; plain write() only mixes it in.
  if (::ioctl(fd.get(), RNDADDENTROPY, info) != 0) {
    ssize_t r = ::write(fd.get(), seed.data(), seed.size());
    (void)r;
  }
  // A clone restored from a snapshot shares its template's CRNG state: force
  // a reseed so its random bytes diverge from every other clone's at once.
  (void)::ioctl(fd.get(), RNDRESEEDCRNG);
}

}  // namespace


// ------------------------------------------------------------------ loop

Agent::Agent(std::string port_name, std::string port_path, int64_t start_ms)
    : port_name_(std::move(port_name)), port_path_(std::move(port_path)), start_ms_(start_ms) {
  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_.valid()) throw std::runtime_error(errno_text("epoll_create1", errno));
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  sigfd_.reset(::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!sigfd_.valid()) throw std::runtime_error(errno_text("signalfd", errno));
  watch(sigfd_.get(), EPOLLIN, [this](uint32_t) { on_sigchld(); });
  retry_timer_ = make_timer();
  watch(retry_timer_.get(), EPOLLIN, [this](uint32_t) {
    drain_timer(retry_timer_.get());
    open_port_or_retry();
  });

  int fd = port_path_.empty() ? open_port(port_name_, 5000)
                              : ::open(port_path_.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    std::string what = port_path_.empty() ? "virtio-serial port " + port_name_ : port_path_;
    if (::getpid() == 1) die(errno_text("open agent port " + what, errno));
    throw std::runtime_error(errno_text("open agent port " + what, errno));
  }
  port_.reset(fd);
  open_port_or_retry();
}

Agent::~Agent() = default;

void Agent::watch(int fd, uint32_t events, Handler h) {
  uint32_t gen = ++next_gen_;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = (static_cast<uint64_t>(gen) << 32) | static_cast<uint32_t>(fd);
  handlers_[fd] = Watch{gen, events, std::move(h)};
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
    log_line(errno_text("epoll add fd " + std::to_string(fd), errno));
}

void Agent::rewatch(int fd, uint32_t events) {
  auto it = handlers_.find(fd);
  if (it == handlers_.end() || it->second.events == events) return;
  it->second.events = events;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = (static_cast<uint64_t>(it->second.gen) << 32) | static_cast<uint32_t>(fd);
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev);
}

void Agent::unwatch(int fd) {
  if (handlers_.erase(fd)) ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
}

int Agent::run() {
  if (::getpid() == 1) log_line("ready");
  epoll_event evs[32];
  for (;;) {
    // Pending FILE_READs with room in the queue: poll, pump again, then flush.
    bool can_pump = !reads_.empty() && port_up_ && out_.size() - out_off_ < kOutLow;
    int n = ::epoll_wait(epoll_.get(), evs, 32, can_pump ? 0 : -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die(errno_text("epoll_wait", errno));
    }
    for (int i = 0; i < n; ++i) {
      int fd = static_cast<int>(evs[i].data.u64 & 0xffffffffu);
      uint32_t gen = static_cast<uint32_t>(evs[i].data.u64 >> 32);
      auto it = handlers_.find(fd);
      if (it == handlers_.end() || it->second.gen != gen) continue;  // closed meanwhile
      Handler h = it->second.handler;
      h(evs[i].events);
    }
    if (!drain_pending_.empty()) arm_pending_drains();
    pump_reads();
    flush_out();
    throttle_check();
  }
}

// ------------------------------------------------------------------ port

void Agent::open_port_or_retry() {
  if (port_up_ || !port_.valid()) return;
  port_up_ = true;
  decoder_ = proto::FrameDecoder();
  watch(port_.get(), EPOLLIN, [this](uint32_t ev) { on_port(ev); });
}

void Agent::port_lost(const char* why) {
  if (!port_up_) return;
  port_up_ = false;
  unwatch(port_.get());
  // A half-written frame cannot be resumed on a new connection: drop the queue.
  out_.clear();
  out_off_ = 0;
  port_wants_out_ = false;
  (void)why;
  arm_timer(retry_timer_.get(), kRetryMs);
}

void Agent::on_port(uint32_t events) {
  if (events & EPOLLIN) {
    char buf[64 * 1024];
    for (int i = 0; i < 16 && port_up_; ++i) {
      ssize_t r = ::read(port_.get(), buf, sizeof buf);
      if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) break;
        port_lost("read error");
        return;
      }
      if (r == 0) {
        port_lost("eof");
        return;
      }
      auto err = decoder_.feed(buf, static_cast<size_t>(r),
                               [this](const proto::FrameHeader& h, std::string_view p) { on_frame(h, p); });
      if (err != proto::DecodeError::kNone) {
        log_line(std::string("bad frame from host: ") + proto::decode_error_name(err));
        port_lost("bad frame");
        return;
      }
      if (static_cast<size_t>(r) < sizeof buf) break;
    }
  }
  if (!port_up_) return;
  if (events & (EPOLLHUP | EPOLLERR)) {
    port_lost("hangup");
    return;
  }
  if (events & EPOLLOUT) flush_out();
}

void Agent::flush_out() {
  if (!port_up_) return;
  while (out_off_ < out_.size()) {
    ssize_t w = ::write(port_.get(), out_.data() + out_off_, out_.size() - out_off_);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      port_lost("write error");
      return;
    }
    out_off_ += static_cast<size_t>(w);
  }
  if (out_off_ == out_.size()) {
    out_.clear();
    out_off_ = 0;
  } else if (out_off_ > (1u << 20)) {
    out_.erase(0, out_off_);
    out_off_ = 0;
  }
  update_port_events();
}

void Agent::update_port_events() {
  if (!port_up_) return;
  bool want = out_off_ < out_.size();
  if (want != port_wants_out_) {
    port_wants_out_ = want;
    rewatch(port_.get(), EPOLLIN | (want ? EPOLLOUT : 0u));
  }
}

void Agent::throttle_check() {
  size_t pending = out_.size() - out_off_;
  bool want = throttled_ ? pending > kOutLow : pending > kOutHigh;
  if (want == throttled_) return;
  throttled_ = want;
  for (auto& [stream, e] : execs_) {
    if (e->out.valid()) rewatch(e->out.get(), throttled_ ? 0u : EPOLLIN);
    if (e->err.valid()) rewatch(e->err.get(), throttled_ ? 0u : EPOLLIN);
  }
}

void Agent::send(MsgType t, uint32_t stream, std::string_view payload, uint16_t flags) {
  if (!port_up_) return;  // nobody to deliver to
  proto::append_frame(out_, t, stream, payload, flags);
}

void Agent::send_json(MsgType t, uint32_t stream, const json& j) {
  send(t, stream, j.dump(-1, ' ', false, json::error_handler_t::replace));
}

void Agent::send_error(uint32_t stream, int err, const std::string& message) {
  std::string m = message.size() > 8192 ? message.substr(0, 8192) + "..." : message;
  send_json(MsgType::kError, stream, json{{"errno", err}, {"message", m}});
}

// ------------------------------------------------------------------ dispatch

void Agent::on_frame(const proto::FrameHeader& h, std::string_view payload) {
  bool eof = (h.flags & proto::kFlagEof) != 0;
  switch (h.type) {
    case MsgType::kPing:
      send(MsgType::kResult, h.stream, {});
      return;
    case MsgType::kStdin:
      handle_stdin(h.stream, payload, eof);
      return;
    case MsgType::kData:
      handle_data(h.stream, payload, eof);
      return;
    default:
      break;
  }
  try {
    json req = payload.empty() ? json::object() : json::parse(payload, nullptr, false);
    if (req.is_discarded() || !req.is_object()) throw BadRequest("payload is not a JSON object");
    handle_control(h, req);
  } catch (const BadRequest& e) {
    send_error(h.stream, e.errno_, std::string("bad request: ") + e.what());
  } catch (const std::bad_alloc&) {
    send_error(h.stream, ENOMEM, "out of memory");
  } catch (const std::exception& e) {
    send_error(h.stream, EINVAL, std::string("bad request: ") + e.what());
  }
}

void Agent::handle_control(const proto::FrameHeader& h, const json& req) {
  uint32_t s = h.stream;
  switch (h.type) {
    case MsgType::kHello: return handle_hello(s, req, false);
    case MsgType::kReseed: return handle_hello(s, req, true);
    case MsgType::kExec: return handle_exec(s, req);
    case MsgType::kSignal: return handle_signal(s, req);
    case MsgType::kFileWrite:
      handle_file_write(s, req);
      if (h.flags & proto::kFlagEof) handle_data(s, {}, true);
      return;
    case MsgType::kFileRead: return handle_file_read(s, req);
    case MsgType::kFileStat: return handle_file_stat(s, req);
    case MsgType::kFileList: return handle_file_list(s, req);
    case MsgType::kFileRemove: return handle_file_remove(s, req);
    case MsgType::kFileMkdir: return handle_file_mkdir(s, req);
    case MsgType::kDiff: return handle_diff(s, req);
    case MsgType::kShutdown:
      flush_out();
      power_off();
    default:
      throw BadRequest("unexpected message type " + std::to_string(static_cast<int>(h.type)) +
                       " from host");
  }
}

void Agent::handle_hello(uint32_t stream, const json& req, bool reseed) {
  std::string seed_hex = opt_string(req, "seed");
  std::string seed;
  if (seed_hex.size() > 1024 || !parse_hex(seed_hex, &seed))
    throw BadRequest("seed must be an even-length hex string of at most 1024 digits");
  const json* t = field(req, "time_ns");
  if (t && !t->is_number_integer()) throw BadRequest("field \"time_ns\" must be an integer");
  std::string host = opt_string(req, "hostname");
  if (host.size() > 64) throw BadRequest("hostname longer than 64 bytes");
  const json* aslr = field(req, "aslr");
  if (aslr && !aslr->is_boolean()) throw BadRequest("field \"aslr\" must be a boolean");

  add_entropy(seed);
  if (t) {
    int64_t ns = t->get<int64_t>();
    timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
    if (ns < 0 || ::clock_settime(CLOCK_REALTIME, &ts) != 0)
      return send_error(stream, ns < 0 ? EINVAL : errno, errno_text("set clock", ns < 0 ? EINVAL : errno));
  }
  if (!host.empty() && ::sethostname(host.data(), host.size()) != 0)
    return send_error(stream, errno, errno_text("sethostname " + host, errno));
  if (aslr) {
    // 2: full randomisation (the kernel's default), 0: none. Applies to
    // programs started from now on.
    const char* value = aslr->get<bool>() ? "2\n" : "0\n";
    Fd fd(::open("/proc/sys/kernel/randomize_va_space", O_WRONLY | O_CLOEXEC));
    if (!fd.valid() || ::write(fd.get(), value, 2) != 2)
      return send_error(stream, errno, errno_text("write /proc/sys/kernel/randomize_va_space", errno));
  }
  if (const json* n = field(req, "net")) {
    if (!n->is_object()) throw BadRequest("field \"net\" must be an object");
    NetConfig cfg{opt_string(*n, "address"), opt_string(*n, "gateway"), opt_string(*n, "dns")};
    if (std::string err = configure_network(cfg); !err.empty()) return send_error(stream, EINVAL, "network: " + err);
  }

  if (reseed) return send_json(MsgType::kResult, stream, json::object());
  utsname u{};
  ::uname(&u);
  timespec up{};
  ::clock_gettime(CLOCK_BOOTTIME, &up);
  send_json(MsgType::kHello, stream,
            json{{"agent", kAgentVersion},
                 {"protocol", proto::kVersion},
                 {"kernel", u.release},
                 {"uptime_ms", static_cast<int64_t>(up.tv_sec) * 1000 + up.tv_nsec / 1000000},
                 {"agent_start_ms", start_ms_}});
}

// ------------------------------------------------------------------ exec

void Agent::handle_exec(uint32_t stream, const json& req) {
  if (execs_.count(stream)) throw BadRequest("stream " + std::to_string(stream) + " already runs a command");
  std::vector<std::string> args;
  if (const json* a = field(req, "argv")) {
    if (!a->is_array() || a->empty()) throw BadRequest("field \"argv\" must be a non-empty array of strings");
    for (const auto& v : *a) {
      if (!v.is_string()) throw BadRequest("field \"argv\" must be a non-empty array of strings");
      args.push_back(v.get<std::string>());
    }
    if (field(req, "shell")) throw BadRequest("give either \"argv\" or \"shell\", not both");
  } else if (const json* sh = field(req, "shell")) {
    if (!sh->is_string()) throw BadRequest("field \"shell\" must be a string");
    args = {"/bin/sh", "-c", sh->get<std::string>()};
  } else {
    throw BadRequest("exec needs \"argv\" or \"shell\"");
  }
  for (const auto& a : args)
    if (a.find('\0') != std::string::npos) throw BadRequest("argument contains a NUL byte");

  std::string cwd = opt_string(req, "cwd", "/");
  if (cwd.empty() || cwd.find('\0') != std::string::npos) throw BadRequest("bad cwd");
  std::string who = "root";
  if (const json* u = field(req, "user")) {
    if (u->is_number_unsigned()) who = std::to_string(u->get<uint64_t>());
    else if (u->is_string()) who = u->get<std::string>();
    else throw BadRequest("field \"user\" must be a name or a uid");
  }
  if (who.empty()) who = "root";
  User user;
  if (!lookup_user(who, &user)) throw BadRequest("unknown user: " + who);

  // Environment: the agent's defaults, then HOME/USER for the user, then the request.
  // The agent's environment is set once at boot (boot.cpp) and not changed after.
  static const std::map<std::string, std::string> base_env = [] {
    std::map<std::string, std::string> m;
    for (char** e = environ; *e; ++e) {
      std::string_view kv = *e;
      auto eq = kv.find('=');
      if (eq != std::string_view::npos) m.emplace(kv.substr(0, eq), kv.substr(eq + 1));
    }
    return m;
  }();
  std::map<std::string, std::string> env = base_env;
  if (user.uid != 0) {
    env["HOME"] = user.home;
    env["USER"] = env["LOGNAME"] = user.name;
  }
  if (const json* e = field(req, "env")) {
    if (!e->is_object()) throw BadRequest("field \"env\" must be an object of strings");
    for (const auto& [k, v] : e->items()) {
      if (!v.is_string() || k.empty() || k.find('=') != std::string::npos ||
          k.find('\0') != std::string::npos || v.get<std::string>().find('\0') != std::string::npos)
        throw BadRequest("bad env entry \"" + k + "\"");
      env[k] = v.get<std::string>();
    }
  }
  bool want_stdin = opt_bool(req, "stdin", false);
  uint64_t timeout_ms = opt_u64(req, "timeout_ms", 0, 1ull << 40);
  uint64_t cap = opt_u64(req, "output_cap", 0);
  if (cap == 0) cap = kDefaultOutputCap;

  std::string path = find_in_path(args[0], env.count("PATH") ? env["PATH"] : "");
  if (path.empty()) return send_error(stream, ENOENT, "command not found: " + args[0]);

  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strs;
  for (auto& [k, v] : env) env_strs.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : env_strs) envp.push_back(s.data());
  envp.push_back(nullptr);

  int outp[2], errp[2], inp[2] = {-1, -1};
  if (::pipe2(outp, O_CLOEXEC) != 0) return send_error(stream, errno, errno_text("pipe", errno));
  Fd out_r(outp[0]), out_w(outp[1]);
  if (::pipe2(errp, O_CLOEXEC) != 0) return send_error(stream, errno, errno_text("pipe", errno));
  Fd err_r(errp[0]), err_w(errp[1]);
  Fd in_r, in_w;
  if (want_stdin) {
    if (::pipe2(inp, O_CLOEXEC) != 0) return send_error(stream, errno, errno_text("pipe", errno));
    in_r.reset(inp[0]);
    in_w.reset(inp[1]);
  } else {
    if (!devnull_.valid()) devnull_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!devnull_.valid()) return send_error(stream, errno, errno_text("open /dev/null", errno));
  }

  SpawnRequest sr;
  sr.path = path.c_str();
  sr.argv = argv.data();
  sr.envp = envp.data();
  sr.cwd = cwd.c_str();
  sr.in = want_stdin ? in_r.get() : devnull_.get();
  sr.out = out_w.get();
  sr.err = err_w.get();
  sr.uid = user.uid;
  sr.gid = user.gid;
  uint64_t start = monotonic_ns();
  pid_t pid = spawn(&sr);
  if (pid < 0) return send_error(stream, errno, errno_text("clone", errno));
  if (sr.failed) {
    // The child has exited; on_sigchld reaps it (its pid maps to no stream).
    int err = sr.error;
    switch (sr.stage) {
      case kStageCwd: return send_error(stream, err, errno_text("cwd " + cwd, err));
      case kStageUser: return send_error(stream, err, errno_text("switch to user " + who, err));
      case kStageExec:
        return send_error(stream, err,
                          err == ENOENT ? "command not found: " + args[0] : errno_text("exec " + args[0], err));
      default: return send_error(stream, err, errno_text("set up stdio", err));
    }
  }

  auto e = std::make_unique<Exec>();
  e->stream = stream;
  e->pid = pid;
  e->start_ns = start;
  e->cap = cap;
  e->out = std::move(out_r);
  e->err = std::move(err_r);
  if (want_stdin) {
    e->in = std::move(in_w);
    ::fcntl(e->in.get(), F_SETFL, O_NONBLOCK);
  }
  // The pipes keep the kernel's default size (64 KiB) until a command fills
  // one: on_exec_output grows it then.
  ::fcntl(e->out.get(), F_SETFL, O_NONBLOCK);
  ::fcntl(e->err.get(), F_SETFL, O_NONBLOCK);
  Exec& ref = *e;
  execs_[stream] = std::move(e);
  pid_to_stream_[pid] = stream;

  uint32_t rd = throttled_ ? 0u : EPOLLIN;
  watch(ref.out.get(), rd, [this, stream](uint32_t) {
    if (auto it = execs_.find(stream); it != execs_.end()) on_exec_output(*it->second, 1);
  });
  watch(ref.err.get(), rd, [this, stream](uint32_t) {
    if (auto it = execs_.find(stream); it != execs_.end()) on_exec_output(*it->second, 2);
  });
  if (timeout_ms > 0) {
    ref.timer = make_timer();
    arm_timer(ref.timer.get(), timeout_ms);
    watch(ref.timer.get(), EPOLLIN, [this, stream](uint32_t) {
      auto it = execs_.find(stream);
      if (it == execs_.end()) return;
      Exec& x = *it->second;
      drain_timer(x.timer.get());
      close_exec_fd(x, x.timer);
      if (!x.reaped) {
        x.timed_out = true;
        ::kill(-x.pid, SIGKILL);
      }
    });
  }
}

void Agent::close_exec_fd(Exec& e, Fd& fd) {
  (void)e;
  if (!fd.valid()) return;
  unwatch(fd.get());
  fd.reset();
}

void Agent::on_exec_output(Exec& e, int which) {
  Fd& fd = which == 1 ? e.out : e.err;
  if (!fd.valid()) return;
  // Up to 4 chunks per wake-up; each frame carries at most kDataChunk bytes.
  for (int i = 0; i < 4; ++i) {
    char buf[proto::kDataChunk];
    ssize_t r = ::read(fd.get(), buf, sizeof buf);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (r <= 0) {
      close_exec_fd(e, fd);
      maybe_finish(e);  // may destroy e
      return;
    }
    uint64_t n = static_cast<uint64_t>(r);
    uint64_t room = e.cap > e.forwarded ? e.cap - e.forwarded : 0;
    if (n > room) {
      e.truncated = true;
      n = room;
    }
    if (n > 0) {
      send(which == 1 ? MsgType::kStdout : MsgType::kStderr, e.stream, std::string_view(buf, n));
      e.forwarded += n;
    }
    if (static_cast<size_t>(r) < sizeof buf) return;
    // A full chunk: the command writes faster than one pipe's worth per
    // wake-up. A bigger pipe means fewer wake-ups per MiB (context switches
    // are dear under TCG); most commands never get here, and so skip the
    // two fcntls and the bigger ring (about 0.1 ms of an exec under TCG).
    bool& grown = which == 1 ? e.out_grown : e.err_grown;
    if (!grown) {
      grown = true;
      ::fcntl(fd.get(), F_SETPIPE_SZ, which == 1 ? 1 << 20 : 256 << 10);
    }
  }
}

void Agent::handle_stdin(uint32_t stream, std::string_view data, bool eof) {
  auto it = execs_.find(stream);
  if (it == execs_.end()) return;  // finished already (the host forgot the stream too), or never asked for stdin
  Exec& e = *it->second;
  if (!e.in.valid()) {
    // The command closed its stdin: the bytes go nowhere, but they still
    // free the host's window.
    stdin_consumed(e, data.size());
    return;
  }
  // The host keeps at most kStdinWindow bytes unacknowledged, so in_buf
  // stays within that (on_exec_stdin_writable compacts what was written).
  e.in_buf.append(data);
  if (eof) e.in_eof = true;
  on_exec_stdin_writable(e);
}

void Agent::stdin_consumed(Exec& e, uint64_t n) {
  e.in_unacked += n;
  bool drained = e.in_off == e.in_buf.size();
  if (e.in_unacked == 0 || (e.in_unacked < proto::kStdinWindow / 4 && !drained)) return;
  char ack[40];
  int len = std::snprintf(ack, sizeof ack, "{\"bytes\":%llu}", static_cast<unsigned long long>(e.in_unacked));
  send(MsgType::kStdinAck, e.stream, std::string_view(ack, static_cast<size_t>(len)));
  e.in_unacked = 0;
}

void Agent::on_exec_stdin_writable(Exec& e) {
  uint64_t moved = 0;
  while (e.in_off < e.in_buf.size()) {
    ssize_t w = ::write(e.in.get(), e.in_buf.data() + e.in_off, e.in_buf.size() - e.in_off);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      moved += e.in_buf.size() - e.in_off;  // EPIPE: the command closed its stdin
      e.in_off = e.in_buf.size();
      e.in_eof = true;
      break;
    }
    e.in_off += static_cast<size_t>(w);
    moved += static_cast<uint64_t>(w);
  }
  // Compact once the consumed head is the larger part.
  if (e.in_off > 0 && e.in_off * 2 >= e.in_buf.size()) {
    e.in_buf.erase(0, e.in_off);
    e.in_off = 0;
  }
  bool empty = e.in_off == e.in_buf.size();
  bool watched = handlers_.count(e.in.get()) != 0;
  if (empty && e.in_eof) {
    close_exec_fd(e, e.in);
  } else if (!empty && !watched) {
    uint32_t stream = e.stream;
    watch(e.in.get(), EPOLLOUT, [this, stream](uint32_t) {
      if (auto it = execs_.find(stream); it != execs_.end()) on_exec_stdin_writable(*it->second);
    });
  } else if (empty && watched) {
    unwatch(e.in.get());
  }
  stdin_consumed(e, moved);
}

void Agent::handle_signal(uint32_t stream, const json& req) {
  uint64_t sig = opt_u64(req, "signal", 0, 64);
  if (sig == 0) throw BadRequest("field \"signal\" must be 1..64");
  auto it = execs_.find(stream);
  if (it == execs_.end() || it->second->reaped) return;  // raced with exit: nothing to do
  // The child called setsid before execve (spawn returns only after that), so
  // its process group exists for as long as anything of the command runs.
  ::kill(-it->second->pid, static_cast<int>(sig));
}

void Agent::on_sigchld() {
  signalfd_siginfo si;
  while (::read(sigfd_.get(), &si, sizeof si) == sizeof si) {
  }
  // PID 1 reaps every orphan; only our direct children map to a stream.
  for (;;) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) break;
    auto it = pid_to_stream_.find(pid);
    if (it == pid_to_stream_.end()) continue;
    uint32_t stream = it->second;
    pid_to_stream_.erase(it);
    if (auto e = execs_.find(stream); e != execs_.end()) exec_reaped(*e->second, status);
  }
}

void Agent::exec_reaped(Exec& e, int status) {
  e.reaped = true;
  e.status = status;
  ::kill(-e.pid, SIGKILL);  // whatever the command left behind in its group
  close_exec_fd(e, e.timer);
  close_exec_fd(e, e.in);
  // Pipes still open: their EOF usually sits in the same epoll batch as the
  // SIGCHLD (the command closed them before it exited), so the drain timer is
  // armed only if they are still open once that batch is handled.
  if (e.out.valid() || e.err.valid()) drain_pending_.push_back(e.stream);
  maybe_finish(e);
}

void Agent::arm_pending_drains() {
  std::vector<uint32_t> pending;
  pending.swap(drain_pending_);
  for (uint32_t stream : pending) {
    auto it = execs_.find(stream);
    if (it == execs_.end()) continue;  // finished within the batch
    Exec& e = *it->second;
    if (!e.out.valid() && !e.err.valid()) continue;
    // Bounded drain: a process that escaped the group may hold the pipes open.
    e.drain = make_timer();
    arm_timer(e.drain.get(), kDrainMs);
    watch(e.drain.get(), EPOLLIN, [this, stream](uint32_t) {
      auto it = execs_.find(stream);
      if (it == execs_.end()) return;
      Exec& x = *it->second;
      x.in_drain = true;
      for (int which : {1, 2}) {
        Fd& fd = which == 1 ? x.out : x.err;
        for (int i = 0; i < 64 && fd.valid(); ++i) on_exec_output(x, which);
      }
      x.in_drain = false;
      close_exec_fd(x, x.out);
      close_exec_fd(x, x.err);
      maybe_finish(x);
    });
  }
}

void Agent::maybe_finish(Exec& e) {
  if (e.reaped && !e.in_drain && !e.out.valid() && !e.err.valid()) finish_exec(e.stream);
}

void Agent::finish_exec(uint32_t stream) {
  auto it = execs_.find(stream);
  if (it == execs_.end()) return;
  std::unique_ptr<Exec> e = std::move(it->second);
  execs_.erase(it);
  close_exec_fd(*e, e->drain);
  close_exec_fd(*e, e->timer);
  close_exec_fd(*e, e->in);

  int code = -1, sig = 0;
  if (WIFEXITED(e->status)) code = WEXITSTATUS(e->status);
  else if (WIFSIGNALED(e->status)) sig = WTERMSIG(e->status);
  // Numbers and booleans only: formatted directly (as JSON), which under
  // emulation is a tenth of a millisecond cheaper per exec than building a
  // json object and dumping it.
  char msg[192];
  int n = std::snprintf(msg, sizeof msg,
                        "{\"exit_code\":%d,\"signal\":%d,\"timed_out\":%s,\"truncated\":%s,\"duration_us\":%llu}",
                        code, sig, e->timed_out ? "true" : "false", e->truncated ? "true" : "false",
                        static_cast<unsigned long long>((monotonic_ns() - e->start_ns) / 1000));
  send(MsgType::kExit, stream, std::string_view(msg, static_cast<size_t>(n)));
}

}  // namespace ztee::guest
