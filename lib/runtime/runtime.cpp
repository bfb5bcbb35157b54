#include <fmt/format.h>
#include <pwd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "agent/protocol.hpp"
#include "agent/json.hpp"
#include "runtime/impl.hpp"
#include "workspace/set.hpp"
#include "vmm/qemu/qemu.hpp"

namespace ztee {

using detail::call_on_loop;
using detail::RuntimeImpl;
using detail::SandboxImpl;

const char* version() { return ZTEE_VERSION; }

const char* errc_name(Errc c) {
  switch (c) {
    case Errc::kOk: return "ok";
    case Errc::kInvalidArgument: return "invalid argument";
    case Errc::kNoMemory: return "out of memory";
    case Errc::kInternal: return "internal error";
    case Errc::kNotFound: return "not found";
    case Errc::kImage: return "image error";
    case Errc::kBackendUnavailable: return "backend unavailable";
    case Errc::kTimeout: return "timeout";
    case Errc::kSandboxFailed: return "sandbox failed";
    case Errc::kClosed: return "closed";
    case Errc::kIo: return "I/O error";
    case Errc::kProtocol: return "protocol error";
    case Errc::kGuest: return "guest error";
    case Errc::kPermission: return "permission denied";
    case Errc::kUnsupported: return "unsupported";
    case Errc::kConflict: return "conflict";
  }
  return "unknown";
}

const char* change_kind_name(Change::Kind k) {
  switch (k) {
    case Change::Kind::kCreated: return "created";
    case Change::Kind::kModified: return "modified";
    case Change::Kind::kDeleted: return "deleted";
  }
  return "unknown";
}

const char* sandbox_state_name(SandboxState s) {
  switch (s) {
    case SandboxState::kStarting: return "starting";
    case SandboxState::kReady: return "ready";
    case SandboxState::kFailed: return "failed";
    case SandboxState::kDestroyed: return "destroyed";
  }
  return "?";
}

namespace {

std::string env_or(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : "";
}

std::string home_dir() {
  std::string h = env_or("HOME");
  if (!h.empty()) return h;
  if (struct passwd* pw = ::getpwuid(::getuid())) return pw->pw_dir;
  return "/tmp";
}

Result<void> mkdir_p(const std::string& path, mode_t mode) {
  std::string cur;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || (path[i] == '/' && i > 0)) {
      cur = path.substr(0, i);
      if (::mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) {
        int e = errno;
        return make_error(e == EACCES ? Errc::kPermission : Errc::kIo,
                          fmt::format("cannot create directory {}: {}", cur, std::strerror(e)), e);
      }
    }
  }
  return {};
}

std::string new_sandbox_id() {
  unsigned char b[6];
  if (::getrandom(b, sizeof b, 0) != static_cast<ssize_t>(sizeof b)) std::memset(b, 0, sizeof b);
  return fmt::format("sb-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}", b[0], b[1], b[2], b[3], b[4], b[5]);
}

// An agent speaking another protocol would never answer HELLO: refuse at
// once, saying what to do.
Result<void> check_agent_protocol(const detail::Image& image) {
  if (image.agent_protocol == proto::kVersion) return {};
  return make_error(Errc::kImage,
                    fmt::format("guest image {}: its agent speaks protocol {}{}, this libztee speaks {}: rebuild the "
                                "image with this libztee's `ztee image build` (then make new templates from it)",
                                image.dir, image.agent_protocol,
                                image.agent_protocol == 1 ? " (its manifest has no \"agent_protocol\")" : "",
                                proto::kVersion));
}

}  // namespace

std::string detail::default_state_dir() {
  std::string s = env_or("ZTEE_STATE_DIR");
  if (!s.empty()) return s;
  if (::geteuid() == 0) return "/run/ztee";
  std::string x = env_or("XDG_RUNTIME_DIR");
  if (!x.empty()) return x + "/ztee";
  return fmt::format("/tmp/ztee-{}", ::getuid());
}


std::string default_image_dir() {
  std::string e = env_or("ZTEE_IMAGE_DIR");
  if (!e.empty()) return e;
  if (::geteuid() == 0) return "/var/lib/ztee/images/default";
  std::string data = env_or("XDG_DATA_HOME");
  if (data.empty()) data = home_dir() + "/.local/share";
  return data + "/ztee/images/default";
}

detail::RuntimeImpl::~RuntimeImpl() {
  // The last reference may drop on the loop thread itself (inside a
  // callback); a thread cannot join itself, so hand the loop to another.
  if (loop && loop->in_loop_thread()) {
    std::thread([l = std::move(loop)]() mutable { l.reset(); }).detach();
  }
}

Result<Runtime> Runtime::create(RuntimeOptions opts) {
  if (opts.backend.empty()) opts.backend = "auto";
  if (opts.backend != "auto" && opts.backend != "qemu") {
    if (opts.backend == "firecracker")
      return make_error(Errc::kBackendUnavailable,
                        "backend firecracker is not available in this build yet: use \"qemu\" or \"auto\"");
    return make_error(Errc::kInvalidArgument,
                      fmt::format("unknown backend \"{}\": use \"auto\" or \"qemu\"", opts.backend));
  }
  detail::TrustPolicy trust;
  auto keys = detail::load_public_keys(opts.trusted_keys);
  if (!keys) return std::move(keys).error();
  trust.keys = std::move(*keys);
  trust.require_vuln_gate = opts.require_vuln_gate;
  if (opts.state_dir.empty()) opts.state_dir = detail::default_state_dir();
  if (opts.image_dir.empty()) opts.image_dir = default_image_dir();
  if (opts.state_dir[0] != '/')
    return make_error(Errc::kInvalidArgument, fmt::format("state_dir \"{}\" must be an absolute path", opts.state_dir));
  if (auto r = mkdir_p(opts.state_dir, 0700); !r) return std::move(r).error();
  const JailOptions& jo = opts.jail;
  // A jailed VMM gets a KVM node of its own (lib/jail), so the host node's
  // permissions are not what decides.
  auto qemu = detail::probe_qemu(opts.qemu_binary, opts.accel, jo.enabled);
  if (!qemu) return std::move(qemu).error();
  if (jo.id_count < 2 || jo.id_first == 0 || uint64_t{jo.id_first} + jo.id_count > 0xfffffffeull)
    return make_error(Errc::kInvalidArgument,
                      fmt::format("jail id range {}+{} is invalid: id_first must be > 0, id_count >= 2, and the "
                                  "range must end below 4294967294",
                                  jo.id_first, jo.id_count));
  if (auto r = mkdir_p(opts.state_dir + "/ids", 0700); !r) return std::move(r).error();
  // What crashed processes left in this state directory goes first. A piece
  // that cannot be removed does not stop the runtime; `ztee gc` reports it.
  (void)collect_garbage(opts);
  std::optional<RuntimeImpl::JailShared> jail;
  if (jo.enabled) {
    if (::geteuid() != 0)
      return make_error(Errc::kPermission,
                        "the VMM jail needs root (namespaces, cgroups, a uid per sandbox): run as root, or set "
                        "RuntimeOptions::jail.enabled = false (SECURITY: the VMM then runs unconfined, as you)",
                        EPERM);
    RuntimeImpl::JailShared js;
    js.kvm = qemu->kvm;
    auto layout = detail::detect_cgroups(jo.cgroup_parent);
    if (!layout) return std::move(layout).error();
    js.cgroups = std::move(*layout);
    auto filter = detail::build_vmm_seccomp(qemu->kvm);
    if (!filter) return std::move(filter).error();
    js.seccomp = std::move(*filter);
    auto root = detail::ensure_vmm_root(jo.vmm_cache_dir.empty() ? "/var/lib/ztee/vmm" : jo.vmm_cache_dir,
                                        qemu->binary, qemu->kvm);
    if (!root) return std::move(root).error();
    js.vmm_root = std::move(*root);
    std::error_code ec;
    js.binary = std::filesystem::canonical(qemu->binary, ec).string();
    if (ec) return make_error(Errc::kIo, fmt::format("cannot resolve {}: {}", qemu->binary, ec.message()), ec.value());
    jail = std::move(js);
  }
  auto loop = detail::Loop::create();
  if (!loop) return std::move(loop).error();
  auto impl = std::make_shared<RuntimeImpl>();
  impl->jail = std::move(jail);
  impl->trust = std::move(trust);
  impl->opts = std::move(opts);
  impl->loop = std::move(*loop);
  impl->driver = std::make_unique<detail::QemuDriver>(*qemu);
  // Public handles share their own count: when the last goes, pre-spawned
  // VMMs (which hold the runtime) are destroyed; live sandboxes keep it.
  RuntimeImpl* raw = impl.get();
  std::shared_ptr<RuntimeImpl> handle(raw, [impl = std::move(impl)](RuntimeImpl*) mutable {
    auto rt = std::move(impl);
    auto retire = [rt](std::function<void()> all_done) {
      rt->handles_gone = true;
      auto waiting = std::move(rt->waiting);
      rt->waiting.clear();
      auto left = std::make_shared<size_t>(0);
      for (auto& [dir, q] : waiting) *left += q.size();
      if (*left == 0) return all_done();
      for (auto& [dir, q] : waiting)
        for (auto& sb : q)
          sb->destroy([sb, left, all_done](Result<void>) {
            if (--*left == 0) all_done();
          });
    };
    if (rt->loop->in_loop_thread()) {
      rt->loop->post([retire] { retire([] {}); });
      return;
    }
    // Off the loop thread: wait until the pre-spawned VMMs are torn down, so
    // a process that exits right after leaves none of their jails behind.
    (void)call_on_loop<bool>(*rt->loop, [&](auto done) { retire([done]() mutable { done(true); }); });
  });
  return Runtime(std::move(handle));
}

std::string Runtime::backend_description() const {
  if (!impl_) return "";
  std::string d = impl_->driver->description();
  std::string why = impl_->driver->choice_reason();
  if (impl_->driver->emulated()) why += why.empty() ? "guests run under software emulation" : ": guests run under software emulation";
  return why.empty() ? d : d + " (" + why + ")";
}

const RuntimeOptions& Runtime::options() const { return impl_->opts; }

Result<detail::Image> detail::RuntimeImpl::prepare(const SandboxOptions& opts) {
  if (opts.vcpus < 1 || opts.vcpus > 64)
    return make_error(Errc::kInvalidArgument, fmt::format("vcpus {} out of range: use 1..64", opts.vcpus));
  if (opts.memory_mib < 64 || opts.memory_mib > 65536)
    return make_error(Errc::kInvalidArgument,
                      fmt::format("memory_mib {} out of range: use 64..65536", opts.memory_mib));
  if (opts.boot_timeout_ms == 0) return make_error(Errc::kInvalidArgument, "boot_timeout_ms must be positive");
  if (opts.guest_aslr != GuestAslr::kAuto && opts.guest_aslr != GuestAslr::kOn && opts.guest_aslr != GuestAslr::kOff)
    return make_error(Errc::kInvalidArgument, fmt::format("guest_aslr {} is not a GuestAslr value: use kAuto, kOn or kOff",
                                                          static_cast<int>(opts.guest_aslr)));
  if (opts.network.enabled()) {
    auto policy = parse_net_policy(opts.network.allow, opts.network.dns);
    if (!policy) return std::move(policy).error();
    if (auto r = ensure_network(); !r) return std::move(r).error();
  }
  if (opts.template_dir.empty()) {
    auto image = detail::load_image_manifest(opts.image_dir.empty() ? this->opts.image_dir : opts.image_dir);
    if (!image) return std::move(image).error();
    if (auto v = detail::check_image_trust(*image, trust); !v) return std::move(v).error();
    if (auto v = verifier.verify(*image); !v) return std::move(v).error();
    if (auto v = check_agent_protocol(*image); !v) return std::move(v).error();
    return image;
  }
  if (opts.snapshottable)
    return make_error(Errc::kInvalidArgument, "a sandbox cloned from a template cannot itself be snapshottable");
  const std::string& tdir = opts.template_dir;
  auto t = detail::load_template_manifest(tdir);
  if (!t) return std::move(t).error();
  auto mismatch = [&](std::string what) {
    return make_error(Errc::kImage, fmt::format("template {} does not fit: {}", tdir, what));
  };
  if (t->backend != driver->description())
    return mismatch(fmt::format("it was made with backend {}, this runtime uses {}", t->backend, driver->description()));
  if (t->backend_version != driver->version())
    return mismatch(fmt::format("it was saved by {}, this runtime runs {}; make a new template", t->backend_version,
                                driver->version()));
  if (t->vcpus != opts.vcpus || t->memory_mib != opts.memory_mib)
    return mismatch(fmt::format("it has {} vcpus and {} MiB; the sandbox asks for {} and {} (set them to match)",
                                t->vcpus, t->memory_mib, opts.vcpus, opts.memory_mib));
  if (t->nic != opts.network.enabled())
    return mismatch(t->nic ? "it was saved with a network device: clones need a network policy (SandboxOptions::network)"
                           : "it was saved without a network device: make a template from a sandbox with a network "
                             "policy to clone networked sandboxes");
  auto image = detail::load_image_manifest(t->image_dir);
  if (!image) return std::move(image).error();
  if (auto v = detail::check_image_trust(*image, trust); !v) return std::move(v).error();
  if (!trust.keys.empty() && t->image_signature != image->signature)
    return mismatch(t->image_signature.empty()
                        ? fmt::format("its template.json records no image signature (it was made from an unsigned "
                                      "image), and this runtime requires signed images; make a new template from {}",
                                      t->image_dir)
                        : fmt::format("its template.json records another signature of the image at {} than its "
                                      "manifest.json.sig has now (the image was re-signed or changed); make a new "
                                      "template",
                                      t->image_dir));
  if (image->kernel.sha256 != t->kernel_sha256 || image->initramfs.sha256 != t->initramfs_sha256 ||
      image->rootfs.sha256 != t->rootfs_sha256 || image->vmlinux.sha256 != t->vmlinux_sha256)
    return mismatch(fmt::format("the image at {} changed since the template was made; make a new template",
                                t->image_dir));
  if (auto v = verifier.verify(*image); !v) return std::move(v).error();
  // Guest memory is hashed once per runtime (then cached by file identity);
  // the small device state is checked again before every restore.
  if (auto v = verifier.verify_one(t->mem, "template memory"); !v) return std::move(v).error();
  if (auto v = verifier.verify_one(t->state, "template state"); !v) return std::move(v).error();
  if (auto v = check_agent_protocol(*image); !v) return std::move(v).error();
  image->snapshot = detail::Image::Snapshot{tdir, t->state, t->mem};
  return image;
}

void detail::RuntimeImpl::replenish(const SandboxOptions& opts, const Image& image) {
  if (handles_gone || this->opts.prespawn == 0) return;
  auto& q = waiting[image.snapshot.dir];
  while (q.size() < this->opts.prespawn) {
    auto sb = std::make_shared<SandboxImpl>(shared_from_this(), new_sandbox_id(), opts, image);
    sb->set_background();  // until someone takes it
    if (!sb->launch()) {
      sb->destroy([sb](Result<void>) {});
      return;  // the next clone starts its own VMM and reports the error
    }
    q.push_back(std::move(sb));
  }
}

std::deque<std::shared_ptr<SandboxImpl>> detail::RuntimeImpl::take_prespawned(const std::string& template_dir) {
  std::deque<std::shared_ptr<SandboxImpl>> q;
  auto it = waiting.find(template_dir);
  if (it == waiting.end()) return q;
  q = std::move(it->second);
  waiting.erase(it);
  return q;
}

void detail::RuntimeImpl::start_sandbox(const SandboxOptions& opts, detail::Image image,
                                        std::function<void(Result<std::shared_ptr<SandboxImpl>>)> done,
                                        bool background) {
  std::shared_ptr<SandboxImpl> sb;
  const bool clone = !image.snapshot.dir.empty();
  if (clone) {
    auto& q = waiting[image.snapshot.dir];
    while (!q.empty() && !sb) {
      auto cand = std::move(q.front());
      q.pop_front();
      if (cand->state() == SandboxState::kStarting)
        sb = std::move(cand);
      else
        cand->destroy([cand](Result<void>) {});  // its VMM died while waiting
    }
    // Start the next one once this clone is on its way.
    loop->post([self = shared_from_this(), opts, image] { self->replenish(opts, image); });
  }
  if (sb) {
    if (!background) sb->set_foreground();
    if (auto r = sb->adopt(opts); !r) {
      Error err = std::move(r).error();
      return sb->destroy([sb, err = std::move(err), done = std::move(done)](Result<void>) mutable {
        done(std::move(err));
      });
    }
  } else {
    sb = std::make_shared<SandboxImpl>(shared_from_this(), new_sandbox_id(), opts, std::move(image));
    if (background) sb->set_background();
    if (auto r = sb->launch(); !r) {
      Error err = std::move(r).error();
      return sb->destroy([sb, err = std::move(err), done = std::move(done)](Result<void>) mutable {
        done(std::move(err));
      });
    }
  }
  sb->begin([this, sb, done = std::move(done)](Result<void> r) mutable {
    if (r) return done(sb);
    // Leave nothing behind: tear down what the start began.
    Error err = std::move(r).error();
    loop->post([sb, err = std::move(err), done = std::move(done)]() mutable {
      sb->destroy([sb, err = std::move(err), done = std::move(done)](Result<void>) mutable { done(std::move(err)); });
    });
  });
}

Result<void> detail::RuntimeImpl::ensure_network() {
  std::lock_guard lk(net_mu);
  if (!jail)
    return make_error(Errc::kInvalidArgument,
                      "a network policy needs the jail (RuntimeOptions::jail.enabled): the VMM must run inside the "
                      "sandbox's network namespace");
  // Every time (about a millisecond): `ztee gc` removes the host table
  // whenever no sandbox network exists, e.g. between two of ours.
  return ensure_host_network(net_env);
}

Result<Sandbox> Runtime::create_sandbox(const SandboxOptions& opts) {
  if (!impl_) return make_error(Errc::kInvalidArgument, "Runtime is empty (create it with Runtime::create)");
  // Hashing may take a while the first time: done on the caller's thread.
  auto image = impl_->prepare(opts);
  if (!image) return std::move(image).error();
  if (!opts.mounts.empty()) {
    if (!opts.template_dir.empty() || opts.snapshottable)
      return make_error(Errc::kInvalidArgument,
                        "mounts need a cold-booted sandbox: leave template_dir empty and snapshottable off");
    // mkfs copies every mounted file: on the caller's thread too.
    auto ws = detail::make_workspaces(impl_->opts.state_dir, opts.mounts);
    if (!ws) return std::move(ws).error();
    image->workspaces = std::move(*ws);
  }
  auto sb = call_on_loop<std::shared_ptr<SandboxImpl>>(
      *impl_->loop, [&](auto done) { impl_->start_sandbox(opts, std::move(*image), std::move(done)); });
  if (!sb) return std::move(sb).error();
  return Sandbox(std::move(*sb));
}

// ---------------------------------------------------------------- Sandbox --

namespace {
const std::string kEmpty;
Error empty_handle() { return make_error(Errc::kInvalidArgument, "Sandbox handle is empty"); }
}  // namespace

Sandbox::Sandbox(std::shared_ptr<SandboxImpl> internal) {
  // The handles share their own count; the deleter keeps the sandbox alive
  // until the last handle is gone, then destroys it on the loop thread.
  // In-flight requests hold internal references, so the loop never sees a
  // sandbox vanish under it.
  SandboxImpl* raw = internal.get();
  impl_ = std::shared_ptr<SandboxImpl>(raw, [internal = std::move(internal)](SandboxImpl*) mutable {
    auto sb = std::move(internal);
    auto& loop = *sb->runtime().loop;
    if (loop.in_loop_thread() || sb->state() == SandboxState::kDestroyed) {
      loop.post([sb] {
        if (sb->state() != SandboxState::kDestroyed) sb->destroy([sb](Result<void>) {});
      });
      return;
    }
    // Off the loop thread the handle's end waits for the teardown, so a
    // process that drops its last handle (or exits) leaves nothing behind.
    (void)call_on_loop<bool>(loop, [&](auto done) {
      if (sb->state() == SandboxState::kDestroyed) return done(true);
      sb->destroy([sb, done](Result<void>) mutable { done(true); });
    });
  });
}

const std::string& Sandbox::id() const { return impl_ ? impl_->id() : kEmpty; }
SandboxState Sandbox::state() const { return impl_ ? impl_->state() : SandboxState::kDestroyed; }
std::string Sandbox::failure() const { return impl_ ? impl_->failure() : ""; }
std::string Sandbox::backend() const { return impl_ ? impl_->runtime().driver->description() : ""; }
int Sandbox::vmm_pid() const { return impl_ ? impl_->vmm_pid() : 0; }

namespace {

// SandboxOptions::dlp on one exec: both streams go through a DlpStream; the
// caller's callbacks (or the collected result) get the edited bytes. Runs on
// the loop thread, as the output hooks and the completion do.
struct DlpExec {
  std::optional<DlpStream> out, err;
  std::function<void(std::string_view)> user_out, user_err;
  std::string col_out, col_err;
};

using ExecDone = std::function<void(Result<ExecResult>)>;

Result<void> wrap_dlp(const DlpScanner& scanner, ExecOptions& opts, ExecDone& done) {
  auto st = std::make_shared<DlpExec>();
  auto o = scanner.open("stdout");
  if (!o) return std::move(o).error();
  auto e = scanner.open("stderr");
  if (!e) return std::move(e).error();
  st->out.emplace(std::move(*o));
  st->err.emplace(std::move(*e));
  st->user_out = std::move(opts.on_stdout);
  st->user_err = std::move(opts.on_stderr);
  auto deliver = [](const std::function<void(std::string_view)>& cb, std::string& col, std::string t) {
    if (t.empty()) return;
    if (cb)
      cb(t);
    else
      col += t;
  };
  opts.on_stdout = [st, deliver](std::string_view d) { deliver(st->user_out, st->col_out, st->out->feed(d)); };
  opts.on_stderr = [st, deliver](std::string_view d) { deliver(st->user_err, st->col_err, st->err->feed(d)); };
  done = [st, deliver, done = std::move(done)](Result<ExecResult> r) {
    deliver(st->user_out, st->col_out, st->out->finish());
    deliver(st->user_err, st->col_err, st->err->finish());
    if (!r) return done(std::move(r));
    for (DlpStream* s : {&*st->out, &*st->err}) {
      if (s->blocked())
        return done(make_error(Errc::kPermission,
                               fmt::format("output withheld by DLP: {} (the command ran and exited {})",
                                           s->block_reason(), r->exit_code)));
    }
    ExecResult res = std::move(*r);
    res.stdout_data = std::move(st->col_out);
    res.stderr_data = std::move(st->col_err);
    for (DlpStream* s : {&*st->out, &*st->err}) {
      res.dlp_findings.insert(res.dlp_findings.end(), s->findings().begin(), s->findings().end());
      res.injection_anomalies.insert(res.injection_anomalies.end(), s->anomalies().begin(), s->anomalies().end());
    }
    done(std::move(res));
  };
  return {};
}

}  // namespace

Result<ExecResult> Sandbox::exec(const ExecOptions& opts) {
  if (!impl_) return empty_handle();
  auto sb = impl_;
  detail::Loop& loop = *sb->runtime().loop;
  // Linked to opts.cancel before the exec is posted, as in exec_async (on the
  // loop thread call_on_loop refuses the call: nothing to link).
  std::shared_ptr<detail::CancelLink> link;
  if (!loop.in_loop_thread()) link = sb->link_cancel(opts);
  return call_on_loop<ExecResult>(loop, [&](auto done) {
    ExecDone d = std::move(done);
    detail::SandboxImpl::unlink_when_done(link, d);
    if (sb->options().dlp) {
      ExecOptions o = opts;
      if (auto w = wrap_dlp(sb->options().dlp, o, d); !w) return d(std::move(w).error());
      return sb->exec(std::move(o), std::move(d), link);
    }
    sb->exec(opts, std::move(d), link);
  });
}

Result<ExecResult> Sandbox::run(std::string_view shell, uint32_t timeout_ms) {
  ExecOptions o;
  o.shell = std::string(shell);
  o.timeout_ms = timeout_ms;
  return exec(o);
}

void Sandbox::exec_async(ExecOptions opts, std::function<void(Result<ExecResult>)> done) {
  if (!impl_) return done(empty_handle());
  auto sb = impl_;
  // Linked to opts.cancel before the exec is posted: a signal sent once this
  // returns reaches the command (see ExecCancel::signal).
  auto link = sb->link_cancel(opts);
  detail::SandboxImpl::unlink_when_done(link, done);
  sb->runtime().loop->post([sb, link, opts = std::move(opts), done = std::move(done)]() mutable {
    if (sb->options().dlp) {
      ExecDone d = std::move(done);
      if (auto w = wrap_dlp(sb->options().dlp, opts, d); !w) return d(std::move(w).error());
      return sb->exec(std::move(opts), std::move(d), link);
    }
    sb->exec(std::move(opts), std::move(done), link);
  });
}

Result<void> Sandbox::write_file(std::string_view path, std::string_view data, uint32_t mode) {
  if (!impl_) return empty_handle();
  auto sb = impl_;
  return call_on_loop<void>(*sb->runtime().loop, [&](auto done) {
    sb->write_file(std::string(path), std::string(data), mode, std::move(done));
  });
}

namespace {
Result<std::string> raw_read(const std::shared_ptr<SandboxImpl>& sb, std::string_view path, uint64_t max_bytes) {
  return call_on_loop<std::string>(*sb->runtime().loop, [&](auto done) {
    sb->read_file(std::string(path), max_bytes, std::move(done));
  });
}
}  // namespace

Result<std::string> Sandbox::read_file(std::string_view path, uint64_t max_bytes) {
  if (!impl_) return empty_handle();
  auto data = raw_read(impl_, path, max_bytes);
  if (!data || !impl_->options().dlp) return data;
  auto scanned = impl_->options().dlp.scan(*data, "file");
  if (!scanned) return std::move(scanned).error();
  if (scanned->blocked)
    return make_error(Errc::kPermission, fmt::format("read {}: withheld by DLP: {}", path, scanned->block_reason));
  return std::move(scanned->output);
}

Result<FileInfo> Sandbox::stat(std::string_view path) {
  if (!impl_) return empty_handle();
  auto sb = impl_;
  return call_on_loop<FileInfo>(*sb->runtime().loop,
                                [&](auto done) { sb->stat(std::string(path), std::move(done)); });
}

Result<std::vector<FileInfo>> Sandbox::list_dir(std::string_view path) {
  if (!impl_) return empty_handle();
  auto sb = impl_;
  return call_on_loop<std::vector<FileInfo>>(*sb->runtime().loop,
                                             [&](auto done) { sb->list_dir(std::string(path), std::move(done)); });
}

Result<void> Sandbox::remove(std::string_view path, bool recursive) {
  if (!impl_) return empty_handle();
  if (path.empty() || path[0] != '/')
    return make_error(Errc::kInvalidArgument, fmt::format("path \"{}\" must be absolute (start with /)", path));
  if (path == "/") return make_error(Errc::kInvalidArgument, "refusing to remove /");
  auto sb = impl_;
  std::string j = fmt::format("{{\"path\":{},\"recursive\":{}}}", detail::json_quote(path), recursive);
  return call_on_loop<void>(*sb->runtime().loop, [&](auto done) {
    sb->simple_op(proto::MsgType::kFileRemove, j, std::move(done));
  });
}

Result<void> Sandbox::mkdir(std::string_view path, bool parents, uint32_t mode) {
  if (!impl_) return empty_handle();
  if (path.empty() || path[0] != '/')
    return make_error(Errc::kInvalidArgument, fmt::format("path \"{}\" must be absolute (start with /)", path));
  auto sb = impl_;
  std::string j = fmt::format("{{\"path\":{},\"parents\":{},\"mode\":{}}}", detail::json_quote(path), parents,
                              mode & 07777);
  return call_on_loop<void>(*sb->runtime().loop, [&](auto done) {
    sb->simple_op(proto::MsgType::kFileMkdir, j, std::move(done));
  });
}

Result<void> Sandbox::ping() {
  if (!impl_) return empty_handle();
  auto sb = impl_;
  return call_on_loop<void>(*sb->runtime().loop, [&](auto done) { sb->ping(std::move(done)); });
}

Result<void> Sandbox::pause() {
  if (!impl_) return empty_handle();
  auto sb = impl_;
  return call_on_loop<void>(*sb->runtime().loop, [&](auto done) { sb->pause(true, std::move(done)); });
}

Result<void> Sandbox::resume() {
  if (!impl_) return empty_handle();
  auto sb = impl_;
  return call_on_loop<void>(*sb->runtime().loop, [&](auto done) { sb->pause(false, std::move(done)); });
}

Result<void> Sandbox::snapshot(std::string_view dir_view) {
  if (!impl_) return empty_handle();
  std::string dir(dir_view);
  if (dir.empty() || dir[0] != '/')
    return make_error(Errc::kInvalidArgument, fmt::format("template dir \"{}\" must be an absolute path", dir));
  if (::mkdir(dir.c_str(), 0700) != 0) {
    int e = errno;
    return make_error(e == EEXIST ? Errc::kInvalidArgument : Errc::kIo,
                      fmt::format("cannot create template dir {}: {}{}", dir, std::strerror(e),
                                  e == EEXIST ? " (pick a new directory)" : ""),
                      e);
  }
  auto cleanup = [&dir] {
    for (const char* f : {"/state", "/mem", "/template.json", "/.template.json.tmp", "/diff-base.json"})
      ::unlink((dir + f).c_str());
    ::rmdir(dir.c_str());
  };
  auto sb = impl_;
  auto r = call_on_loop<void>(*sb->runtime().loop, [&](auto done) { sb->snapshot_save(dir, std::move(done)); });
  std::string staged = call_on_loop<std::string>(*sb->runtime().loop, [&](auto done) {
                         done(std::exchange(sb->snapshot_staged_mem_, std::string()));
                       }).value();
  if (!staged.empty()) {
    // Across filesystems: copy on this thread (the loop must not block), then drop the staged file.
    std::error_code ec;
    std::filesystem::copy_file(staged, dir + "/mem", ec);
    ::unlink(staged.c_str());
    if (ec && r) r = make_error(Errc::kIo, fmt::format("cannot copy guest memory to {}/mem: {}", dir, ec.message()));
  }
  if (!r) {
    cleanup();
    return r;
  }
  const detail::Image& img = sb->image();
  detail::TemplateManifest t;
  t.backend = sb->runtime().driver->description();
  t.backend_version = sb->runtime().driver->version();
  t.image_dir = img.dir;
  t.vcpus = sb->options().vcpus;
  t.memory_mib = sb->options().memory_mib;
  t.nic = sb->options().network.enabled();
  t.kernel_sha256 = img.kernel.sha256;
  t.initramfs_sha256 = img.initramfs.sha256;
  t.rootfs_sha256 = img.rootfs.sha256;
  t.vmlinux_sha256 = img.vmlinux.sha256;
  t.image_signature = img.signature;
  t.state.path = dir + "/state";
  t.mem.path = dir + "/mem";
  for (auto* a : {&t.state, &t.mem}) {
    auto h = detail::sha256_file(a->path);
    if (!h) {
      cleanup();
      return std::move(h).error();
    }
    a->sha256 = *h;
  }
  // Clone VMMs open the memory file read-write (QEMU 7.2, see JailOptions)
  // through the template group; the state file reaches them as an fd.
  const JailOptions& jo = sb->runtime().opts.jail;
  if (jo.enabled) {
    if (::chown(t.mem.path.c_str(), 0, jo.id_first) != 0 || ::chmod(t.mem.path.c_str(), 0660) != 0 ||
        ::chmod(t.state.path.c_str(), 0640) != 0) {
      int e = errno;
      cleanup();
      return make_error(Errc::kIo, fmt::format("cannot set the owner of {} to root:{}: {}", t.mem.path, jo.id_first,
                                               std::strerror(e)), e);
    }
  }
  if (auto w = detail::write_template_manifest(dir, t); !w) {
    cleanup();
    return w;
  }
  return {};
}

Result<std::vector<Change>> Sandbox::diff(std::string_view mount) {
  if (!impl_) return empty_handle();
  auto sb = impl_;
  return call_on_loop<std::vector<Change>>(*sb->runtime().loop,
                                           [&](auto done) { sb->diff(std::string(mount), std::move(done)); });
}

namespace {

// The mount `name` names (or the only one), and its changes selected by `paths`.
Result<const detail::WorkspaceSet::Entry*> find_mount(const detail::Image& img, std::string_view name,
                                                      const std::string& id) {
  const detail::WorkspaceSet::Entry* w = img.workspaces ? img.workspaces->find(name) : nullptr;
  if (w) return w;
  if (!img.workspaces || img.workspaces->entries.empty())
    return make_error(Errc::kInvalidArgument, fmt::format("sandbox {} has no mounts (SandboxOptions::mounts)", id));
  return make_error(name.empty() ? Errc::kInvalidArgument : Errc::kNotFound,
                    name.empty() ? fmt::format("sandbox {} has {} mounts: name one", id, img.workspaces->entries.size())
                                 : fmt::format("sandbox {} has no mount at \"{}\"", id, name));
}

Result<std::vector<Change>> select_changes(std::vector<Change> all, const std::vector<std::string>& paths) {
  if (paths.empty()) return all;
  std::vector<Change> out;
  std::vector<bool> used(paths.size());
  for (Change& c : all) {
    bool take = false;
    for (size_t i = 0; i < paths.size(); ++i) {
      const std::string& p = paths[i];
      if (c.path == p || (c.path.size() > p.size() && c.path.compare(0, p.size(), p) == 0 && c.path[p.size()] == '/')) {
        take = true;
        used[i] = true;
      }
    }
    if (take) out.push_back(std::move(c));
  }
  for (size_t i = 0; i < paths.size(); ++i)
    if (!used[i])
      return make_error(Errc::kInvalidArgument,
                        fmt::format("\"{}\" is not among the mount's changes (see diff())", paths[i]));
  return out;
}

}  // namespace

Result<ExportResult> Sandbox::export_changes(const ExportOptions& opts) {
  if (!impl_) return empty_handle();
  auto w = find_mount(impl_->image(), opts.mount, impl_->id());
  if (!w) return std::move(w).error();
  const auto* ws = *w;
  auto changes = diff(ws->mount.guest_path);
  if (!changes) return std::move(changes).error();
  auto selected = select_changes(std::move(*changes), opts.paths);
  if (!selected) return std::move(selected).error();
  ExportResult res;
  std::vector<Change> approved;
  for (Change& c : *selected) {
    if (!opts.approve || opts.approve(c))
      approved.push_back(std::move(c));
    else
      res.declined.push_back(std::move(c));
  }
  std::string guest_root = ws->mount.guest_path;
  detail::FetchFn fetch = [this, guest_root](const Change& c) -> Result<std::string> {
    return raw_read(impl_, guest_root + "/" + c.path, std::max<uint64_t>(c.size, 1));
  };
  bool to_host = opts.dest_dir.empty();
  std::lock_guard lk(impl_->image().workspaces->export_mu);
  auto applied = detail::apply_changes(to_host ? ws->mount.host_dir : opts.dest_dir, to_host ? &ws->tree : nullptr,
                                       approved, fetch);
  if (!applied) return std::move(applied).error();
  if (to_host) detail::update_base(ws->tree, *applied);
  res.applied = std::move(applied->applied);
  res.skipped_deletions = std::move(applied->deletions_skipped);
  return res;
}

Result<std::string> Sandbox::patch(std::string_view mount, const std::vector<std::string>& paths) {
  if (!impl_) return empty_handle();
  auto w = find_mount(impl_->image(), mount, impl_->id());
  if (!w) return std::move(w).error();
  const auto* ws = *w;
  auto changes = diff(ws->mount.guest_path);
  if (!changes) return std::move(changes).error();
  auto selected = select_changes(std::move(*changes), paths);
  if (!selected) return std::move(selected).error();
  std::string guest_root = ws->mount.guest_path;
  detail::FetchFn fetch = [this, guest_root](const Change& c) -> Result<std::string> {
    return raw_read(impl_, guest_root + "/" + c.path, std::max<uint64_t>(c.size, 1));
  };
  return detail::unified_patch(ws->mount.host_dir, *selected, fetch);
}

Result<void> Sandbox::destroy() {
  if (!impl_) return empty_handle();
  auto sb = impl_;
  return call_on_loop<void>(*sb->runtime().loop, [&](auto done) { sb->destroy(std::move(done)); });
}

}  // namespace ztee
