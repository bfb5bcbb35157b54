#include <fcntl.h>
#include <sys/file.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <utility>
#include <ctime>

#include "agent/json.hpp"
#include "agent/replies.hpp"
#include "proc/owner.hpp"
#include "runtime/cancel.hpp"
#include "runtime/impl.hpp"
#include "workspace/set.hpp"

namespace ztee::detail {

namespace {

constexpr uint64_t kRequestDeadlineMs = 60000;   // file ops, ping
constexpr size_t kMaxDiffBytes = 64u << 20;
constexpr uint64_t kExecGraceMs = 5000;          // past the guest's own timeout
constexpr size_t kInputHighWater = 256u << 10;   // ExecInput bytes queued on the agent socket
constexpr uint64_t kInputRetryMs = 5;            // ExecInput: next try when the socket was full
constexpr size_t kTailBytes = 8192;
constexpr uint64_t kChannelLossGraceMs = 1000;
constexpr uint64_t kWatchdogMs = 1000;

uint64_t steady_ms() {
  struct timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

void append_tail(std::string& tail, std::string_view data) {
  tail.append(data);
  if (tail.size() > kTailBytes) tail.erase(0, tail.size() - kTailBytes);
}

std::string last_lines(const std::string& s, size_t max_chars) {
  std::string t = s;
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
  if (t.size() > max_chars) t = "…" + t.substr(t.size() - max_chars);
  for (char& c : t)
    if (c == '\r') c = ' ';
  return t;
}

Errc errc_for_guest_errno(int64_t e) {
  switch (e) {
    case ENOENT:
    case ENOTDIR: return Errc::kNotFound;
    case EINVAL:
    case EFBIG:
    case ENAMETOOLONG: return Errc::kInvalidArgument;
    case EACCES:
    case EPERM: return Errc::kPermission;
    default: return Errc::kGuest;
  }
}



Error validate_path(std::string_view path) {
  if (path.empty() || path[0] != '/')
    return make_error(Errc::kInvalidArgument, fmt::format("path \"{}\" must be absolute (start with /)", path));
  if (path.size() > 4096) return make_error(Errc::kInvalidArgument, "path longer than 4096 bytes");
  if (path.find('\0') != std::string_view::npos)
    return make_error(Errc::kInvalidArgument, "path contains a NUL byte");
  return make_error(Errc::kOk, "");
}

}  // namespace

std::string random_hex(size_t bytes) {
  std::string raw(bytes, '\0');
  size_t got = 0;
  while (got < bytes) {
    ssize_t n = ::getrandom(raw.data() + got, bytes - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    got += static_cast<size_t>(n);
  }
  std::string hex;
  for (unsigned char c : raw) hex += fmt::format("{:02x}", c);
  return hex;
}

// ---------------------------------------------------------------- VmParts --

void VmParts::close_io() {
  if (agent) agent->close();
  if (qmp) qmp->close();
  for (auto* s : {&agent_stream, &qmp_stream, &console_stream, &log_stream})
    if (*s) (*s)->close();
}

Result<void> VmParts::teardown() {
  if (torn_down) return {};
  torn_down = true;
  std::vector<std::string> left;
  int err = 0;
  auto note = [&](const Error& e) {
    left.push_back(e.message);
    if (!err) err = e.sys_errno;
  };
  state_fd.reset();
  // The VMM (the TAP's last holder) is gone: the slot's namespace goes with it.
  if (net) {
    if (auto r = net->destroy(); !r) note(r.error());
    net.reset();
  }
  if (jail) {
    if (auto r = remove_jail_leftovers(state_dir, sandbox_id, *jail); !r) note(r.error());
  }
  std::string id_path = id.path();
  if (auto r = id.release(); !r) note(r.error());
  struct stat st{};
  if (!id_path.empty() && ::lstat(id_path.c_str(), &st) == 0) left.push_back("id lock file " + id_path);
  if (!dir.empty()) {
    ::unlink((dir + "/owner").c_str());
    owner.reset();
    ::unlink((dir + "/vmm.pid").c_str());
    ::unlink((dir + "/mem").c_str());
    if (::rmdir(dir.c_str()) != 0 && errno != ENOENT) {
      if (!err) err = errno;
      left.push_back(fmt::format("directory {} ({})", dir, std::strerror(errno)));
    }
  }
  if (left.empty()) return {};
  std::string what;
  for (auto& l : left) what += (what.empty() ? "" : "; ") + l;
  return make_error(Errc::kIo, what, err);
}

VmParts::~VmParts() {
  process.kill_and_reap();
  (void)teardown();
}

// ------------------------------------------------------------ SandboxImpl --

SandboxImpl::SandboxImpl(std::shared_ptr<RuntimeImpl> rt, std::string id, SandboxOptions opts, Image image)
    : rt_(std::move(rt)), id_(std::move(id)), opts_(std::move(opts)), image_(std::move(image)) {}

void SandboxImpl::set_on_gone(std::function<void()> cb) {
  bool now;
  {
    std::lock_guard lk(mu_);
    now = gone_called_;
    if (!now) on_gone_ = std::move(cb);
  }
  if (now && cb) cb();
}

void SandboxImpl::call_on_gone() {
  std::function<void()> cb;
  {
    std::lock_guard lk(mu_);
    if (gone_called_) return;
    gone_called_ = true;
    cb = std::move(on_gone_);
  }
  if (cb) cb();
}

SandboxImpl::~SandboxImpl() {
  call_on_gone();
  // Dropped without destroy(): tear down on the loop thread; VmParts'
  // destructor kills the VMM and removes its directory wherever it runs.
  if (vm_) {
    auto vm = std::move(vm_);
    if (rt_->loop->in_loop_thread()) {
      vm->close_io();
    } else {
      rt_->loop->post([vm] { vm->close_io(); });
    }
  }
}

std::string SandboxImpl::failure() const {
  std::lock_guard lk(mu_);
  return failure_;
}

std::string SandboxImpl::diagnostics() const {
  std::string out;
  if (!log_tail_.empty()) out += fmt::format("; VMM output: {}", last_lines(log_tail_, 1500));
  if (!console_tail_.empty()) out += fmt::format("; guest console: {}", last_lines(console_tail_, 1500));
  return out;
}

std::optional<Error> SandboxImpl::usable() const {
  switch (state_.load()) {
    case SandboxState::kReady: return std::nullopt;
    case SandboxState::kDestroyed:
      return make_error(Errc::kClosed, fmt::format("sandbox {} was destroyed", id_));
    case SandboxState::kFailed:
      return make_error(Errc::kSandboxFailed, fmt::format("sandbox {} failed: {}", id_, failure()));
    case SandboxState::kStarting:
      return make_error(Errc::kInvalidArgument, fmt::format("sandbox {} is not ready yet", id_));
  }
  return std::nullopt;
}

bool SandboxImpl::parse_json(std::string_view payload, simdjson::dom::object* out) {
  simdjson::dom::element doc;
  if (parser_.parse(payload.data(), payload.size()).get(doc)) return false;
  return doc.get_object().get(*out) == simdjson::SUCCESS;
}

void SandboxImpl::protocol_violation(std::string what) {
  fail(Errc::kProtocol, fmt::format("protocol violation: {}", what));
}

Error SandboxImpl::guest_error(std::string_view payload, std::string_view what) {
  auto g = parse_guest_error(parser_, payload);
  if (!g) return std::move(g).error();
  return make_error(errc_for_guest_errno(g->sys_errno), fmt::format("{}: {}", what, g->message), g->sys_errno);
}

uint32_t SandboxImpl::start_request(std::shared_ptr<Request> req, uint64_t deadline_ms) {
  uint32_t sid = vm_->agent->open_stream([this](const proto::FrameHeader& h, std::string_view p) {
    auto it = reqs_.find(h.stream);
    if (it == reqs_.end()) return;
    auto r = it->second;  // keeps it alive if on_frame fails the sandbox
    if (r->on_frame(h, p)) finish_request(h.stream);
  });
  req->keep = shared_from_this();
  if (deadline_ms) {
    req->deadline_ms = steady_ms() + deadline_ms;
    if (!watchdog_timer_) arm_watchdog();
  }
  reqs_.emplace(sid, std::move(req));
  return sid;
}

void SandboxImpl::arm_watchdog() {
  // One coarse timer per sandbox rather than one per request: requests are
  // frequent and their deadlines (tens of seconds) need no precision.
  watchdog_timer_ = rt_->loop->add_timer(kWatchdogMs, [this] {
    watchdog_timer_ = 0;
    uint64_t now = steady_ms();
    bool pending = false;
    for (auto& [sid, r] : reqs_) {
      if (!r->deadline_ms) continue;
      if (now >= r->deadline_ms) {
        fail(Errc::kTimeout, "the guest agent did not answer a request within its deadline");
        return;
      }
      pending = true;
    }
    if (pending) arm_watchdog();
  });
}

void SandboxImpl::finish_request(uint32_t sid) {
  auto it = reqs_.find(sid);
  if (it == reqs_.end()) return;
  reqs_.erase(it);
  if (vm_ && vm_->agent) vm_->agent->close_stream(sid);
}

void SandboxImpl::fail_requests(Errc code, const std::string& reason) {
  auto reqs = std::move(reqs_);
  reqs_.clear();
  for (auto& [sid, r] : reqs) {
    if (vm_ && vm_->agent) vm_->agent->close_stream(sid);
    r->fail(make_error(code, reason));
  }
}

void SandboxImpl::fail(Errc code, std::string reason) {
  auto self = shared_from_this();  // failing requests drops their references
  SandboxState s = state_.load();
  if (s == SandboxState::kFailed || s == SandboxState::kDestroyed) return;
  std::string full = reason + diagnostics();
  {
    std::lock_guard lk(mu_);
    failure_ = full;
  }
  state_.store(SandboxState::kFailed);
  for (uint64_t* t : {&boot_timer_, &lost_timer_, &watchdog_timer_}) {
    if (*t) rt_->loop->cancel_timer(*t);
    *t = 0;
  }
  std::string msg = fmt::format("sandbox {} failed: {}", id_, full);
  fail_requests(Errc::kSandboxFailed, msg);
  if (vm_) {
    vm_->close_io();
    vm_->process.kill();  // reaped by the pidfd watch
  }
  if (boot_done_) {
    Done d = std::move(boot_done_);
    boot_done_ = nullptr;
    d(make_error(code == Errc::kTimeout ? Errc::kTimeout : Errc::kSandboxFailed, msg));
  }
}

void SandboxImpl::agent_lost(std::string reason) {
  if (reason.starts_with("protocol"))
    fail(Errc::kProtocol, std::move(reason));
  else
    channel_lost(std::move(reason));
}

void SandboxImpl::channel_lost(std::string reason) {
  // A dying VMM closes its sockets before its pidfd fires; give the exit (and
  // its console output, the better diagnosis) a moment to win.
  SandboxState s = state_.load();
  if (s == SandboxState::kFailed || s == SandboxState::kDestroyed || lost_timer_) return;
  lost_timer_ = rt_->loop->add_timer(kChannelLossGraceMs, [this, reason = std::move(reason)] {
    lost_timer_ = 0;
    fail(Errc::kSandboxFailed, reason);
  });
}

void SandboxImpl::on_vmm_exit() {
  if (!vm_) return;
  vm_->process.try_reap();
  vmm_pid_.store(0);
  // Drain what the VMM said before dying: its last words are the diagnosis.
  char buf[4096];
  for (auto* s : {vm_->log_stream.get(), vm_->console_stream.get()}) {
    if (!s || s->closed()) continue;
    for (int i = 0; i < 8; ++i) {
      ssize_t n = ::recv(s->fd(), buf, sizeof buf, MSG_DONTWAIT);
      if (n <= 0) break;
      append_tail(s == vm_->log_stream.get() ? log_tail_ : console_tail_, std::string_view(buf, static_cast<size_t>(n)));
    }
  }
  fail(Errc::kSandboxFailed, fmt::format("the VMM process {}", vm_->process.describe_exit()));
}

void SandboxImpl::boot(Done done) {
  if (auto r = launch(); !r) {
    state_.store(SandboxState::kFailed);
    return done(std::move(r).error());
  }
  begin(std::move(done));
}

void SandboxImpl::set_foreground() {
  if (!background_) return;
  background_ = false;
  if (!vm_ || !vm_->jail) return;
  // Best effort: a failure (the cgroup is gone with a dying VMM) leaves the
  // VMM slower, not less confined.
  (void)set_cpu_background(*vm_->jail, id_, false);
}

Result<void> SandboxImpl::adopt(const SandboxOptions& opts) {
  if (vm_ && vm_->net) {
    // A pre-spawned clone's slot was made with an earlier caller's policy.
    auto policy = parse_net_policy(opts.network.allow, opts.network.dns);
    if (!policy) return std::move(policy).error();
    if (*policy != vm_->net->policy()) {
      if (auto r = vm_->net->set_policy(*policy); !r) return r;
    }
  }
  opts_ = opts;
  return {};
}

Result<void> SandboxImpl::launch() {
  auto self = shared_from_this();
  std::string dir = rt_->opts.state_dir + "/" + id_;
  if (::mkdir(dir.c_str(), 0700) != 0) {
    int e = errno;
    return make_error(Errc::kIo, fmt::format("cannot create sandbox directory {}: {}", dir, std::strerror(e)), e);
  }
  // From here on VmParts owns the directory (and all below): destroy()
  // tears down whatever a failed launch left.
  vm_ = std::make_shared<VmParts>();
  vm_->dir = dir;
  vm_->state_dir = rt_->opts.state_dir;
  vm_->sandbox_id = id_;
  const JailOptions& jo = rt_->opts.jail;
  auto lease = allocate_id(rt_->opts.state_dir, jo.id_first, jo.id_count);
  if (!lease) return std::move(lease).error();
  vm_->id = std::move(*lease);
  slot_.store(vm_->id.index());
  // Held for the sandbox's life: collect_garbage reads an unheld lock as "owner gone".
  auto owner = hold_owner_lock(dir + "/owner", fmt::format("{} {}\n", ::getpid(), vm_->id.index()));
  if (!owner) return std::move(owner).error();
  vm_->owner = std::move(*owner);
  VmConfig cfg;
  if (opts_.network.enabled()) {
    // Validated by prepare(); the slot number is the sandbox's id index.
    auto policy = parse_net_policy(opts_.network.allow, opts_.network.dns);
    if (!policy) return std::move(policy).error();
    auto slot = NetSlot::create(rt_->net_env, vm_->id.index(), *policy);
    if (!slot) return std::move(slot).error();
    vm_->net.emplace(std::move(*slot));
    cfg.netns_fd = vm_->net->netns_fd();
    cfg.tap_fd = vm_->net->tap_fd();
  }
  cfg.id = id_;
  cfg.dir = dir;
  cfg.image = image_;
  cfg.vcpus = opts_.vcpus;
  cfg.memory_mib = opts_.memory_mib;
  if (image_.workspaces) {
    std::string paths;
    for (const auto& w : image_.workspaces->entries) {
      // The jailed VMM (uid = gid = the sandbox's id) reads the image through its group.
      if (rt_->jail && (::chown(w.image.c_str(), 0, vm_->id.id()) != 0 || ::chmod(w.image.c_str(), 0640) != 0)) {
        int e = errno;
        return make_error(Errc::kIo, fmt::format("cannot hand {} to the VMM: {}", w.image, std::strerror(e)), e);
      }
      cfg.disks.push_back(w.image);
      paths += (paths.empty() ? "" : ",") + w.mount.guest_path;
    }
    if (!paths.empty()) cfg.extra_cmdline += (cfg.extra_cmdline.empty() ? "ztee.mounts=" : " ztee.mounts=") + paths;
  }
  const bool restoring = !image_.snapshot.dir.empty();
  if (restoring) {
    cfg.mem_path = image_.snapshot.mem.path;  // private mapping: copy-on-write
    cfg.incoming = true;
    // The VMM reads the device state from this fd; begin() checks the digest
    // of this very file before the restore.
    int fd = ::open(image_.snapshot.state.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      int e = errno;
      return make_error(Errc::kImage, fmt::format("template {}: cannot open saved state {}: {}", image_.snapshot.dir,
                                                  image_.snapshot.state.path, std::strerror(e)), e);
    }
    vm_->state_fd.reset(fd);
    cfg.incoming_fd = fd;
  } else if (opts_.snapshottable) {
    cfg.mem_path = rt_->jail ? dir + "/run/mem" : dir + "/mem";
    cfg.mem_shared = true;
    vm_->mem_host_path = cfg.mem_path;
  }
  std::optional<SandboxJail> jail;
  if (rt_->jail) {
    const auto& js = *rt_->jail;
    JailRequest req;
    req.state_dir = rt_->opts.state_dir;
    req.id = id_;
    req.vmm_root = js.vmm_root;
    Image& img = cfg.image;
    std::string& kernel = img.vmlinux.path.empty() ? img.kernel.path : img.vmlinux.path;
    req.read_only = {{kernel, "kernel"}, {img.initramfs.path, "initramfs"}, {img.rootfs.path, "rootfs"}};
    for (size_t i = 0; i < cfg.disks.size(); ++i) req.read_only.emplace_back(cfg.disks[i], fmt::format("mount{}", i));
    if (restoring) {
      req.template_mem = cfg.mem_path;
      req.groups = {jo.id_first};  // the template group: see JailOptions
    }
    req.kvm = js.kvm;
    req.uid = req.gid = vm_->id.id();
    req.cgroups = js.cgroups;
    req.limits.memory_bytes = (opts_.memory_limit_mib ? opts_.memory_limit_mib : opts_.memory_mib + 384ull) << 20;
    req.limits.cpu_percent = opts_.cpu_percent ? opts_.cpu_percent : opts_.vcpus * 100;
    req.limits.pids_max = opts_.pids_max ? opts_.pids_max : 128;
    req.limits.cpu_background = background_;
    req.fsize_bytes = (opts_.memory_mib + 256ull) << 20;  // guest RAM file + device state
    req.netns_fd = cfg.netns_fd;  // -1: the jail makes the VMM an empty one of its own
    req.seccomp = &js.seccomp;
    vm_->jail = js.cgroups;
    auto j = prepare_jail(req);
    if (!j) return std::move(j).error();
    jail = std::move(*j);
    // The VMM sees only jail paths.
    for (std::string* p : {&img.kernel.path, &img.vmlinux.path, &img.initramfs.path, &img.rootfs.path, &cfg.mem_path})
      if (!p->empty()) *p = jail->jail_path(*p);
    for (std::string& d : cfg.disks) d = jail->jail_path(d);
    cfg.binary = js.binary;
    cfg.confinement = &jail->confinement;
  }
  auto launched = rt_->driver->launch(cfg);
  if (!launched) {
    Error err = std::move(launched).error();
    if (err.code == Errc::kNotFound) err.code = Errc::kBackendUnavailable;
    return err;
  }
  vm_->process = std::move(launched->process);
  vm_->incoming_uri = launched->incoming_uri;
  if (vm_->net) vm_->net->release_tap();  // the VMM holds its own copy now
  vmm_pid_.store(vm_->process.pid());
  {
    std::string pid = std::to_string(vm_->process.pid()) + "\n";
    int fd = ::open((dir + "/vmm.pid").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
      (void)!::write(fd, pid.data(), pid.size());
      ::close(fd);
    }
  }
  Loop& loop = *rt_->loop;
  auto& ch = launched->channels;
  vm_->agent_stream = Stream::make(loop, std::move(ch.agent), 256 * 1024);
  vm_->qmp_stream = Stream::make(loop, std::move(ch.control));
  vm_->console_stream = Stream::make(loop, std::move(ch.console), 4096);
  vm_->log_stream = Stream::make(loop, std::move(ch.log), 4096);

  // The sandbox is alive while its VMM is: watch the pidfd.
  std::weak_ptr<SandboxImpl> weak = self;
  std::weak_ptr<VmParts> weak_vm = vm_;
  loop.poll(vm_->process.pidfd(), POLLIN, [weak, weak_vm](int) {
    auto s = weak.lock();
    auto v = weak_vm.lock();
    if (s && v && s->vm_ == v) s->on_vmm_exit();
  });
  vm_->console_stream->start([this](std::string_view d) { append_tail(console_tail_, d); }, [](int) {});
  vm_->log_stream->start([this](std::string_view d) { append_tail(log_tail_, d); }, [](int) {});
  vm_->qmp = std::make_unique<QmpClient>(vm_->qmp_stream, [](std::string_view) {},
                                         [this](std::string reason) { channel_lost(std::move(reason)); });
  vm_->qmp->start();
  vm_->agent = std::make_unique<AgentChannel>(vm_->agent_stream, [this](std::string reason) { agent_lost(std::move(reason)); });
  vm_->agent->start();
  return {};
}

void SandboxImpl::begin(Done done) {
  if (state_.load() != SandboxState::kStarting || !vm_)
    return done(make_error(Errc::kSandboxFailed, fmt::format("sandbox {} failed before it started: {}", id_, failure())));
  boot_done_ = std::move(done);
  boot_timer_ = rt_->loop->add_timer(opts_.boot_timeout_ms, [this] {
    boot_timer_ = 0;
    fail(Errc::kTimeout, fmt::format("boot timed out: the guest agent did not answer within {} ms", opts_.boot_timeout_ms));
  });
  if (image_.snapshot.dir.empty()) return send_hello(proto::MsgType::kHello);
  // The device state is small: check it right before use, every time, through
  // the fd the VMM was given (a new open file: the VMM's offset stays put).
  auto digest = vm_->state_fd.valid() ? sha256_file(fmt::format("/proc/self/fd/{}", vm_->state_fd.get()))
                                      : sha256_file(image_.snapshot.state.path);
  if (!digest || *digest != image_.snapshot.state.sha256)
    return fail(Errc::kSandboxFailed, fmt::format("template {}: saved state {} is missing or does not match its "
                                                  "digest; make a new template",
                                                  image_.snapshot.dir, image_.snapshot.state.path));
  restore_incoming();
}

void SandboxImpl::send_hello(proto::MsgType type) {
  // HELLO (boot) or RESEED (clone): re-identifies the guest (entropy, clock,
  // hostname); its reply means READY.
  auto req = std::make_shared<Request>();
  req->on_frame = [this, type](const proto::FrameHeader& h, std::string_view p) {
    if (h.type == proto::MsgType::kError) {
      fail(Errc::kSandboxFailed, guest_error(p, "guest agent refused HELLO").message);
      return true;
    }
    bool good = type == proto::MsgType::kHello ? h.type == proto::MsgType::kHello && parse_hello(parser_, p)
                                               : h.type == proto::MsgType::kResult;
    if (!good) {
      protocol_violation("bad HELLO/RESEED reply");
      return true;
    }
    if (boot_timer_) {
      rt_->loop->cancel_timer(boot_timer_);
      boot_timer_ = 0;
    }
    state_.store(SandboxState::kReady);
    Done d = std::move(boot_done_);
    boot_done_ = nullptr;
    if (d) d({});
    return true;
  };
  req->fail = [](Error) {};  // boot_done_ carries the failure
  uint32_t sid = start_request(req, 0);
  struct timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  std::string net;
  if (vm_->net) {
    auto g = vm_->net->guest_config();
    net = fmt::format(",\"net\":{{\"address\":{},\"gateway\":{}{}}}", json_quote(g.address), json_quote(g.gateway),
                      g.dns.empty() ? "" : ",\"dns\":" + json_quote(g.dns));
  }
  bool aslr = opts_.guest_aslr == GuestAslr::kOn || (opts_.guest_aslr == GuestAslr::kAuto && !rt_->driver->emulated());
  std::string hello = fmt::format("{{\"seed\":\"{}\",\"time_ns\":{},\"hostname\":{},\"aslr\":{}{}}}", random_hex(32),
                                  static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec, json_quote(id_),
                                  aslr ? "true" : "false", net);
  vm_->agent->send(type, sid, hello);
}

void SandboxImpl::qmp_call(std::string cmd, std::string args, Done done) {
  if (!vm_ || !vm_->qmp) return done(make_error(Errc::kSandboxFailed, "the VMM control channel is closed"));
  vm_->qmp->command(std::move(cmd), std::move(args), [done = std::move(done)](Result<std::string> r) {
    if (!r) return done(std::move(r).error());
    done({});
  });
}

void SandboxImpl::wait_migration(uint64_t deadline_ms, Done done) {
  if (!vm_ || !vm_->qmp) return done(make_error(Errc::kSandboxFailed, "the VMM control channel is closed"));
  vm_->qmp->command("query-migrate", "", [this, deadline_ms, done = std::move(done)](Result<std::string> r) mutable {
    if (!r) return done(std::move(r).error());
    simdjson::dom::object o;
    std::string_view status = "none";
    if (parse_json(*r, &o)) status = json_str(o, "status").value_or("none");
    if (status == "completed") return done({});
    if (status == "failed" || status == "cancelled")
      return done(make_error(Errc::kSandboxFailed, fmt::format("migration {}", status)));
    if (deadline_ms < 2) return done(make_error(Errc::kTimeout, "migration did not complete in time"));
    rt_->loop->add_timer(2, [this, deadline_ms, done = std::move(done)]() mutable {
      wait_migration(deadline_ms - 2, std::move(done));
    });
  });
}

void SandboxImpl::restore_incoming() {
  // QMP commands queue until the handshake is done; each step runs after the
  // previous one answered.
  auto step_failed = [this](const Error& e) {
    fail(e.code == Errc::kTimeout ? Errc::kTimeout : Errc::kSandboxFailed,
         fmt::format("restore from template {} failed: {}", image_.snapshot.dir, e.message));
  };
  qmp_call("migrate-set-capabilities", R"({"capabilities":[{"capability":"x-ignore-shared","state":true}]})",
           [this, step_failed](Result<void> r) {
             if (!r) return step_failed(r.error());
             if (!vm_ || vm_->incoming_uri.empty())
               return step_failed(make_error(Errc::kInternal, "the VMM was started without the saved state"));
             std::string uri = vm_->incoming_uri;
             qmp_call("migrate-incoming", "{\"uri\":" + json_quote(uri) + "}", [this, step_failed](Result<void> r) {
               if (!r) return step_failed(r.error());
               wait_migration(opts_.boot_timeout_ms, [this, step_failed](Result<void> r) {
                 if (!r) return step_failed(r.error());
                 qmp_call("cont", "", [this, step_failed](Result<void> r) {
                   if (!r) return step_failed(r.error());
                   send_hello(proto::MsgType::kReseed);
                 });
               });
             });
           });
}

std::shared_ptr<CancelLink> SandboxImpl::link_cancel(const ExecOptions& o) {
  if (!o.cancel.state_) return nullptr;
  auto link = std::make_shared<CancelLink>();
  link->state = o.cancel.state_;
  // The hook runs on the signalling thread under the token's lock, only
  // while linked: until the exec's `done` runs, which needs this sandbox
  // (held by the exec's caller, task or request), its runtime and its loop.
  Loop* loop = rt_->loop.get();
  link->id = link->state->add([loop, link](int sig) { loop->post([link, sig] { link->fire(sig); }); });
  return link;
}

void SandboxImpl::unlink_when_done(const std::shared_ptr<CancelLink>& link,
                                   std::function<void(Result<ExecResult>)>& done) {
  if (!link) return;
  done = [link, d = std::move(done)](Result<ExecResult> r) {
    link->unlink();
    d(std::move(r));
  };
}

void SandboxImpl::exec(ExecOptions o, std::function<void(Result<ExecResult>)> done,
                       std::shared_ptr<CancelLink> link) {
  if (!link) {
    link = link_cancel(o);
    unlink_when_done(link, done);
  }
  if (auto e = usable()) return done(std::move(*e));
  if (o.argv.empty() == o.shell.empty())
    return done(make_error(Errc::kInvalidArgument, "exec needs either argv or a shell command (not both)"));
  std::shared_ptr<InputState> input = o.input.state_;
  if (input && o.stdin_data)
    return done(make_error(Errc::kInvalidArgument, "exec takes stdin_data or an ExecInput, not both"));
  if (input) {
    std::lock_guard lk(input->mu);
    if (input->taken)
      return done(make_error(Errc::kInvalidArgument,
                             "this ExecInput was given to another exec already: make one per exec with ExecInput::create()"));
    input->taken = true;
  }
  if (o.stdin_data) {
    // One-shot stdin takes the same path as an ExecInput: it is sent as the
    // guest's window allows (proto::kStdinWindow), not all at once.
    input = std::make_shared<InputState>();
    input->buf = std::move(*o.stdin_data);
    input->closed = input->taken = true;
    o.stdin_data.reset();
  }
  // From here on, an early return must end `input` (see fail_input).
  auto fail_input = [&input] {
    if (!input) return;
    std::lock_guard lk(input->mu);
    input->ended = true;
    input->drop();
  };
  if (!o.cwd.empty()) {
    if (auto e = validate_path(o.cwd); e.code != Errc::kOk) {
      fail_input();
      return done(std::move(e));
    }
  }
  std::string j = "{";
  if (!o.argv.empty()) {
    j += "\"argv\":[";
    for (size_t i = 0; i < o.argv.size(); ++i) {
      if (i) j += ',';
      json_append_string(j, o.argv[i]);
    }
    j += "]";
  } else {
    j += "\"shell\":";
    json_append_string(j, o.shell);
  }
  if (!o.env.empty()) {
    j += ",\"env\":{";
    bool first = true;
    for (auto& [k, v] : o.env) {
      if (k.empty() || k.find('=') != std::string::npos) {
        fail_input();
        return done(make_error(Errc::kInvalidArgument, fmt::format("bad environment variable name \"{}\"", k)));
      }
      if (!first) j += ',';
      first = false;
      json_append_string(j, k);
      j += ':';
      json_append_string(j, v);
    }
    j += "}";
  }
  uint32_t timeout = o.timeout_ms ? o.timeout_ms : opts_.exec_timeout_ms;
  uint64_t cap = o.output_cap ? o.output_cap : opts_.output_cap;
  j += fmt::format(",\"cwd\":{},\"user\":{},\"stdin\":{},\"timeout_ms\":{},\"output_cap\":{}}}",
                   json_quote(o.cwd.empty() ? "/" : o.cwd), json_quote(o.user.empty() ? "root" : o.user),
                   input ? "true" : "false", timeout, cap);
  if (j.size() > proto::kMaxControlPayload) {
    fail_input();
    return done(make_error(Errc::kInvalidArgument, "exec request too large (argv/env over 64 KiB)"));
  }

  struct State {
    ExecResult res;
    uint64_t delivered = 0;
    uint64_t cap;
    ExecOptions opts;
    std::function<void(Result<ExecResult>)> done;  // unlinks the token first
    std::shared_ptr<InputState> input;
    bool eof_sent = false, drain_armed = false;
    uint64_t in_sent = 0, in_acked = 0;  // stdin bytes sent; acknowledged by STDIN_ACK
    uint32_t sid = 0;
    void finish(Result<ExecResult> r) {
      if (input) {
        std::lock_guard lk(input->mu);
        input->ended = true;
        input->wake = nullptr;
        input->drop();
      }
      auto d = std::move(done);
      done = nullptr;
      d(std::move(r));
    }
  };
  auto st = std::make_shared<State>();
  st->cap = cap;
  st->done = std::move(done);
  auto req = std::make_shared<Request>();
  req->on_frame = [this, st](const proto::FrameHeader& h, std::string_view p) {
    using proto::MsgType;
    switch (h.type) {
      case MsgType::kStdout:
      case MsgType::kStderr: {
        // The guest enforces the cap; the host enforces it again.
        uint64_t room = st->delivered < st->cap ? st->cap - st->delivered : 0;
        if (p.size() > room) {
          st->res.truncated = true;
          p = p.substr(0, room);
        }
        if (p.empty()) return false;
        st->delivered += p.size();
        bool out = h.type == MsgType::kStdout;
        auto& cb = out ? st->opts.on_stdout : st->opts.on_stderr;
        if (cb)
          cb(p);
        else
          (out ? st->res.stdout_data : st->res.stderr_data).append(p);
        return false;
      }
      case MsgType::kExit: {
        auto e = parse_exit(parser_, p);
        if (!e) {
          protocol_violation("malformed EXIT");
          return true;
        }
        st->res.exit_code = e->exit_code;
        st->res.signal = e->signal;
        st->res.timed_out = e->timed_out;
        st->res.truncated = st->res.truncated || e->truncated;
        st->res.duration_us = e->duration_us;
        st->finish(std::move(st->res));
        return true;
      }
      case MsgType::kError: {
        st->finish(guest_error(p, "exec failed"));
        return true;
      }
      case MsgType::kStdinAck: {
        auto n = parse_stdin_ack(parser_, p);
        if (!n || !st->input || *n > st->in_sent - st->in_acked) {
          protocol_violation("STDIN_ACK for bytes never sent");
          return true;
        }
        st->in_acked += *n;
        drain_input(st, st->sid);
        return false;
      }
      default:
        protocol_violation(fmt::format("unexpected message type {} on an exec stream", static_cast<int>(h.type)));
        return true;
    }
  };
  req->fail = [st](Error e) {
    if (st->done) st->finish(std::move(e));
  };
  st->opts = std::move(o);
  st->input = input;
  uint32_t sid = start_request(req, timeout ? timeout + kExecGraceMs : 0);
  st->sid = sid;
  vm_->agent->send(proto::MsgType::kExec, sid, j);
  std::weak_ptr<SandboxImpl> self = shared_from_this();
  Loop* loop = rt_->loop.get();
  if (input) {
    // Like the cancel hook below: wake runs under the handle's lock while
    // the exec runs, and only posts to the loop.
    {
      std::lock_guard lk(input->mu);
      if (!st->done) return;  // start_request failed it already
      input->wake = [loop, self, st, sid] {
        loop->post([self, st, sid] {
          if (auto s = self.lock()) s->drain_input(st, sid);
        });
      };
    }
    drain_input(st, sid);
  }
  if (link && st->done) {
    // Signals fired so far, and from here on, follow the EXEC frame.
    link->start([self, st, sid](int sig) {
      auto s = self.lock();
      if (!s || !st->done || s->usable()) return;  // ended, or the sandbox is gone
      if (sig == 0) st->res.cancelled = true;
      s->vm_->agent->send(proto::MsgType::kSignal, sid, fmt::format("{{\"signal\":{}}}", sig ? sig : 9));
    });
  }
}

template <typename State>
void SandboxImpl::drain_input(std::shared_ptr<State> st, uint32_t sid) {
  if (!st->done || usable() || st->eof_sent) return;
  InputState& in = *st->input;
  std::lock_guard lk(in.mu);
  // At most proto::kStdinWindow bytes are in the guest unacknowledged (the
  // agent holds what the command has not read yet; its STDIN_ACKs open the
  // window again), and never more than kInputHighWater wait in the agent
  // socket's queue. The rest waits here, within ExecInput's bound.
  auto room = [&] { return proto::kStdinWindow - (st->in_sent - st->in_acked); };
  while (in.pending() > 0 && vm_->agent->queued() < kInputHighWater && room() > 0) {
    size_t n = std::min<size_t>({in.pending(), proto::kDataChunk, room()});
    vm_->agent->send_data(proto::MsgType::kStdin, sid, in.head(n), 0);
    in.consume(n);
    st->in_sent += n;
  }
  if (in.pending() == 0 && in.closed) {
    st->eof_sent = true;
    vm_->agent->send_data(proto::MsgType::kStdin, sid, "", proto::kFlagEof);
  } else if (in.pending() > 0 && !st->drain_armed && room() > 0) {  // the socket is full: retry; a full window waits for an ack
    st->drain_armed = true;
    std::weak_ptr<SandboxImpl> self = shared_from_this();
    rt_->loop->add_timer(kInputRetryMs, [self, st, sid] {
      st->drain_armed = false;
      if (auto s = self.lock()) s->drain_input(st, sid);
    });
  }
}

template <typename T, typename Parse>
std::shared_ptr<SandboxImpl::Request> SandboxImpl::reply_request(std::string what,
                                                                 std::function<void(Result<T>)> done, Parse parse) {
  auto d = std::make_shared<std::function<void(Result<T>)>>(std::move(done));
  auto req = std::make_shared<Request>();
  req->on_frame = [this, d, what = std::move(what), parse = std::move(parse)](const proto::FrameHeader& h,
                                                                              std::string_view p) {
    auto cb = std::move(*d);
    if (h.type == proto::MsgType::kError) {
      cb(guest_error(p, what));
    } else if (h.type != proto::MsgType::kResult) {
      cb(make_error(Errc::kProtocol, fmt::format("{}: unexpected reply", what)));
      protocol_violation(fmt::format("unexpected message type {} in reply to {}", static_cast<int>(h.type), what));
    } else if (Result<T> v = parse(p); !v) {
      cb(v.error());
      protocol_violation(fmt::format("malformed reply to {}", what));
    } else {
      cb(std::move(v));
    }
    return true;
  };
  req->fail = [d](Error e) {
    if (*d) {
      auto cb = std::move(*d);
      cb(std::move(e));
    }
  };
  return req;
}

void SandboxImpl::simple_op(proto::MsgType type, std::string json, Done done) {
  if (auto e = usable()) return done(std::move(*e));
  auto req = reply_request<void>("guest", std::move(done), [](std::string_view) { return Result<void>(); });
  uint32_t sid = start_request(std::move(req), kRequestDeadlineMs);
  vm_->agent->send(type, sid, json);
}

void SandboxImpl::ping(Done done) { simple_op(proto::MsgType::kPing, "", std::move(done)); }

void SandboxImpl::write_file(std::string path, std::string data, uint32_t mode, Done done) {
  if (auto e = validate_path(path); e.code != Errc::kOk) return done(std::move(e));
  if (auto e = usable()) return done(std::move(*e));
  auto req = reply_request<void>(fmt::format("write {}", path), std::move(done),
                                 [](std::string_view) { return Result<void>(); });
  uint32_t sid = start_request(std::move(req), kRequestDeadlineMs);
  vm_->agent->send(proto::MsgType::kFileWrite, sid,
                   fmt::format("{{\"path\":{},\"mode\":{},\"append\":false}}", json_quote(path), mode & 07777));
  vm_->agent->send_data(proto::MsgType::kData, sid, data, proto::kFlagEof);
}

void SandboxImpl::data_request(proto::MsgType type, std::string payload, uint64_t max, std::string what,
                               std::function<void(Result<std::string>)> done) {
  if (auto e = usable()) return done(std::move(*e));
  struct State {
    std::string data;
    bool eof = false;
    std::function<void(Result<std::string>)> done;
  };
  auto st = std::make_shared<State>();
  st->done = std::move(done);
  auto req = std::make_shared<Request>();
  req->on_frame = [this, st, max, what](const proto::FrameHeader& h, std::string_view p) {
    switch (h.type) {
      case proto::MsgType::kData:
        if (st->eof || st->data.size() + p.size() > max) {
          protocol_violation(fmt::format("guest sent more data than {} may return ({} bytes)", what, max));
          return true;
        }
        st->data.append(p);
        st->eof = h.flags & proto::kFlagEof;
        return false;
      case proto::MsgType::kResult: {
        auto d = std::move(st->done);
        d(std::move(st->data));
        return true;
      }
      case proto::MsgType::kError: {
        auto d = std::move(st->done);
        d(guest_error(p, what));
        return true;
      }
      default:
        protocol_violation(fmt::format("unexpected reply to {}", what));
        return true;
    }
  };
  req->fail = [st](Error e) {
    if (st->done) {
      auto d = std::move(st->done);
      d(std::move(e));
    }
  };
  uint32_t sid = start_request(req, kRequestDeadlineMs);
  vm_->agent->send(type, sid, payload);
}

void SandboxImpl::read_file(std::string path, uint64_t max, std::function<void(Result<std::string>)> done) {
  if (auto e = validate_path(path); e.code != Errc::kOk) return done(std::move(e));
  data_request(proto::MsgType::kFileRead, fmt::format("{{\"path\":{},\"max\":{}}}", json_quote(path), max), max,
               fmt::format("read {}", path), std::move(done));
}

void SandboxImpl::raw_diff(std::string mount, std::function<void(Result<std::string>)> done) {
  data_request(proto::MsgType::kDiff, mount.empty() ? "{}" : "{\"mount\":" + json_quote(mount) + "}", kMaxDiffBytes,
               "diff", std::move(done));
}

void SandboxImpl::diff(std::string mount, std::function<void(Result<std::vector<Change>>)> done) {
  std::vector<std::string> mounts;
  if (image_.workspaces)
    for (const auto& w : image_.workspaces->entries) mounts.push_back(w.mount.guest_path);
  if (!mount.empty() && mount != "/" && std::find(mounts.begin(), mounts.end(), mount) == mounts.end())
    return done(make_error(Errc::kNotFound, fmt::format("sandbox {} has no mount at \"{}\" (its mounts: {})", id_, mount,
                                                        mounts.empty() ? "none" : fmt::format("{}", fmt::join(mounts, ", ")))));
  // The root layer is asked for as a whole and filtered here: the agent's
  // "mount" field names workspace mounts only.
  std::string ask = mount == "/" ? "" : mount;
  if (!image_.snapshot.dir.empty() && !diff_base_) {
    // A clone: its template's own changes are not the clone's.
    std::string text;
    std::string path = image_.snapshot.dir + "/diff-base.json";
    if (int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC); fd >= 0) {
      char buf[65536];
      ssize_t n;
      while ((n = ::read(fd, buf, sizeof buf)) > 0 && text.size() < kMaxDiffBytes) text.append(buf, static_cast<size_t>(n));
      ::close(fd);
      auto base = parse_diff(parser_, text, mounts);
      if (!base)
        return done(make_error(Errc::kImage, fmt::format("template {}: {} is damaged; make a new template",
                                                         image_.snapshot.dir, path)));
      diff_base_ = std::move(*base);
    } else {
      diff_base_.emplace();  // a template from before diffs were recorded
    }
  }
  raw_diff(ask, [this, mount, mounts, done = std::move(done)](Result<std::string> r) mutable {
    if (!r) return done(std::move(r).error());
    auto changes = parse_diff(parser_, *r, mounts);
    if (!changes) {
      protocol_violation("malformed DIFF data");
      return done(std::move(changes).error());
    }
    std::vector<Change> out = diff_base_ ? subtract_changes(*changes, *diff_base_) : std::move(*changes);
    if (mount == "/") std::erase_if(out, [](const Change& c) { return !c.mount.empty(); });
    done(std::move(out));
  });
}

void SandboxImpl::write_diff_record(const Result<std::vector<Change>>& changes) {
  struct timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  std::string line = fmt::format("{{\"sandbox\":{},\"time_ns\":{},", json_quote(id_),
                                 static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec);
  line += changes ? "\"changes\":" + changes_json(changes.value()) : "\"error\":" + json_quote(changes.error().message);
  line += "}\n";
  int fd = ::open(opts_.diff_log.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return;  // reported by nobody: destroy must go on
  (void)!::write(fd, line.data(), line.size());
  ::fsync(fd);
  ::close(fd);
}

void SandboxImpl::stat(std::string path, std::function<void(Result<FileInfo>)> done) {
  if (auto e = validate_path(path); e.code != Errc::kOk) return done(std::move(e));
  if (auto e = usable()) return done(std::move(*e));
  auto req = reply_request<FileInfo>(fmt::format("stat {}", path), std::move(done),
                                     [this, path](std::string_view p) { return parse_stat(parser_, p, path); });
  uint32_t sid = start_request(std::move(req), kRequestDeadlineMs);
  vm_->agent->send(proto::MsgType::kFileStat, sid, fmt::format("{{\"path\":{}}}", json_quote(path)));
}

void SandboxImpl::list_dir(std::string path, std::function<void(Result<std::vector<FileInfo>>)> done) {
  if (auto e = validate_path(path); e.code != Errc::kOk) return done(std::move(e));
  if (auto e = usable()) return done(std::move(*e));
  auto req = reply_request<std::vector<FileInfo>>(fmt::format("list {}", path), std::move(done),
                                                  [this](std::string_view p) { return parse_list(parser_, p); });
  uint32_t sid = start_request(std::move(req), kRequestDeadlineMs);
  vm_->agent->send(proto::MsgType::kFileList, sid, fmt::format("{{\"path\":{}}}", json_quote(path)));
}

void SandboxImpl::pause(bool pause, Done done) {
  if (auto e = usable()) return done(std::move(*e));
  qmp_call(pause ? "stop" : "cont", "", std::move(done));
}

void SandboxImpl::snapshot_save(std::string dir, Done done) {
  if (auto e = usable()) return done(std::move(*e));
  if (!opts_.snapshottable)
    return done(make_error(Errc::kInvalidArgument,
                           "snapshot needs a sandbox created with SandboxOptions::snapshottable = true"));
  if (!reqs_.empty())
    return done(make_error(Errc::kInvalidArgument, "snapshot needs an idle sandbox: a request is still running"));
  // What the template itself changed, so a clone's diff() shows only its own.
  raw_diff("", [this, self = shared_from_this(), dir, done = std::move(done)](Result<std::string> r) mutable {
    if (!r) {
      fail(Errc::kSandboxFailed, "snapshot failed: " + r.error().message);
      return done(make_error(r.error().code, fmt::format("snapshot of sandbox {} failed: {}", id_, r.error().message)));
    }
    std::string path = dir + "/diff-base.json";
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    bool ok = fd >= 0 && ::write(fd, r->data(), r->size()) == static_cast<ssize_t>(r->size()) && ::fsync(fd) == 0;
    int e = errno;
    if (fd >= 0) ::close(fd);
    if (!ok)
      return done(make_error(Errc::kIo, fmt::format("snapshot: cannot write {}: {}", path, std::strerror(e)), e));
    loop_post_snapshot(std::move(dir), std::move(done));
  });
}

void SandboxImpl::loop_post_snapshot(std::string dir, Done done) {
  // Off the DIFF reply's stack: that request is finished by then.
  rt_->loop->post([this, self = shared_from_this(), dir = std::move(dir), done = std::move(done)]() mutable {
    if (auto e = usable()) return done(std::move(*e));
    snapshot_save_state(std::move(dir), std::move(done));
  });
}

void SandboxImpl::snapshot_save_state(std::string dir, Done done) {
  auto failed = [this, done](const Error& e) mutable {
    fail(Errc::kSandboxFailed, "snapshot failed: " + e.message);
    done(make_error(e.code, fmt::format("snapshot of sandbox {} failed: {}", id_, e.message), e.sys_errno));
  };
  // The VMM writes the device state into an fd this process opened and
  // hands over on the QMP socket ("getfd"): no path, no shell.
  std::string state_path = dir + "/state";
  int sfd = ::open(state_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
  if (sfd < 0) {
    int e = errno;
    return done(make_error(Errc::kIo, fmt::format("snapshot: cannot create {}: {}", state_path, std::strerror(e)), e));
  }
  auto state_fd = std::make_shared<UniqueFd>(sfd);
  std::string uri = "fd:ztee-state";
  qmp_call("stop", "", [this, uri, dir, done, failed, state_fd](Result<void> r) mutable {
    if (!r) return failed(r.error());
    qmp_call("migrate-set-capabilities", R"({"capabilities":[{"capability":"x-ignore-shared","state":true}]})",
             [this, uri, dir, done, failed, state_fd](Result<void> r) mutable {
               if (!r) return failed(r.error());
               if (!vm_ || !vm_->qmp) return failed(make_error(Errc::kSandboxFailed, "the VMM control channel is closed"));
               vm_->qmp->command_with_fd("getfd", R"({"fdname":"ztee-state"})", state_fd->get(),
                                         [this, uri, dir, done, failed, state_fd](Result<std::string> r) mutable {
               state_fd->reset();
               if (!r) return failed(r.error());
               qmp_call("migrate", "{\"uri\":" + json_quote(uri) + "}",
                        [this, dir, done, failed](Result<void> r) mutable {
                          if (!r) return failed(r.error());
                          wait_migration(60000, [this, dir, done, failed](Result<void> r) mutable {
                            if (!r) return failed(r.error());
                            snapshot_dir_ = dir;  // finish_destroy moves the memory file there
                            destroy(std::move(done));
                          });
                        });
                                         });
             });
  });
}

void SandboxImpl::destroy(Done done) {
  auto self = shared_from_this();  // failing requests drops their references
  SandboxState s = state_.load();
  if (s == SandboxState::kDestroyed)
    return done(make_error(Errc::kClosed, fmt::format("sandbox {} was already destroyed", id_)));
  if (!opts_.diff_log.empty() && !diff_logged_) {
    diff_logged_ = true;
    if (s != SandboxState::kReady) {
      write_diff_record(make_error(Errc::kSandboxFailed, fmt::format("sandbox {} was {}: no diff", id_,
                                                                     sandbox_state_name(s))));
    } else {
      return diff("", [this, self, done = std::move(done)](Result<std::vector<Change>> r) mutable {
        write_diff_record(r);
        if (state_.load() == SandboxState::kDestroyed) return done({});  // destroyed meanwhile
        destroy(std::move(done));
      });
    }
  }
  state_.store(SandboxState::kDestroyed);
  for (uint64_t* t : {&boot_timer_, &lost_timer_, &watchdog_timer_}) {
    if (*t) rt_->loop->cancel_timer(*t);
    *t = 0;
  }
  fail_requests(Errc::kClosed, fmt::format("sandbox {} was destroyed", id_));
  if (!vm_) {
    call_on_gone();
    return done({});
  }
  vm_->close_io();
  if (vm_->process.try_reap()) return finish_destroy(std::move(done));
  vm_->process.kill();
  rt_->loop->poll(vm_->process.pidfd(), POLLIN, [self, done = std::move(done)](int) mutable {
    self->finish_destroy(std::move(done));
  });
}

void SandboxImpl::finish_destroy(Done done) {
  // The VMM is gone: nothing reads the workspace images any more.
  if (image_.workspaces) image_.workspaces->remove_images();
  if (vm_->net) {
    // The VMM is gone (the pidfd said so), so nothing holds the slot's TAP:
    // closing the slot's fds frees its namespace (well under 1 ms). The id,
    // and so the slot number, is released only after.
    vm_->process.kill_and_reap();
    if (auto r = vm_->net->destroy(); !r) net_teardown_error_ = r.error().message;
    vm_->net.reset();
  }
  auto vm = std::move(vm_);
  vm->process.kill_and_reap();  // returns at once: the pidfd said it exited
  vmm_pid_.store(0);
  pid_t pid = vm->process.pid();
  std::string dir = vm->dir;
  std::vector<std::weak_ptr<Stream>> streams = {vm->agent_stream, vm->qmp_stream, vm->console_stream,
                                                vm->log_stream};
  std::string snapshot_error;
  if (!snapshot_dir_.empty()) {
    // The VMM is gone: its memory file is now the template's, unchanged.
    std::string from = vm->mem_host_path, to = snapshot_dir_ + "/mem";
    if (::rename(from.c_str(), to.c_str()) != 0) {
      int e = errno;
      std::string staged = rt_->opts.state_dir + "/" + id_ + ".mem";
      if (e == EXDEV && ::rename(from.c_str(), staged.c_str()) == 0)
        snapshot_staged_mem_ = staged;  // copied across filesystems by the caller
      else
        snapshot_error = fmt::format("cannot move guest memory to {}: {}", to, std::strerror(e));
    }
    snapshot_dir_.clear();
  }
  auto torn = vm->teardown();  // jail, cgroups, id, directory
  vm.reset();  // closes channels
  std::vector<std::string> left;
  if (!net_teardown_error_.empty()) left.push_back(std::exchange(net_teardown_error_, {}));
  if (!torn) left.push_back(torn.error().message);
  // The pid was reaped, so a live process here is a recycled pid unless it is our VMM.
  if (process_running_with(pid, id_)) left.push_back(fmt::format("VMM process {}", pid));
  struct stat st{};
  if (!dir.empty() && ::lstat(dir.c_str(), &st) == 0) left.push_back(fmt::format("directory {}", dir));
  for (auto& w : streams)
    if (!w.expired()) left.push_back("a socket with I/O still pending");
  call_on_gone();
  if (!left.empty()) {
    std::string what;
    for (auto& l : left) what += (what.empty() ? "" : ", ") + l;
    return done(make_error(Errc::kIo, fmt::format("destroy of sandbox {} left behind: {}", id_, what)));
  }
  if (!snapshot_error.empty()) return done(make_error(Errc::kIo, snapshot_error));
  done({});
}

}  // namespace ztee::detail
