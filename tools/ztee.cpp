// ztee: the command-line tool (run, pool, image build, doctor, gc, call,
// policy, audit, version).
//
// Exit codes follow docker: the command's own exit code; 128+N if signal N
// killed it; 124 if it timed out (like timeout(1)); 125 when ztee itself
// fails (bad usage, no image, boot failure); 127 if the command was not found;
// 126 if the policy gate denied a `ztee call`.
#include <ztee/ztee.hpp>

#include "image/image.hpp"
#include "image_cmds.hpp"
#include "policy_cmds.hpp"
#include "serve_cmd.hpp"
#include "jail/jail.hpp"
#include "jail/kvm_probe.hpp"
#include "runtime/impl.hpp"
#include "vmm/accel.hpp"
#include "vmm/qemu/qemu.hpp"

#include <fcntl.h>
#include <liburing.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#ifndef ZTEE_SOURCE_DIR
#define ZTEE_SOURCE_DIR ""
#endif

namespace {

constexpr int kExitError = 125;
constexpr int kExitNotFound = 127;
constexpr int kExitTimeout = 124;

const char kMainUsage[] =
    "usage: ztee <command> [options]\n"
    "\n"
    "Runs commands in throwaway microVMs.\n"
    "\n"
    "commands:\n"
    "  run [options] -- CMD...   boot a sandbox, run CMD in it, destroy it\n"
    "  pool [options]            fill a warm pool, lease sandboxes from it, show its status\n"
    "  image build|keygen|sign|verify|gate|push|pull\n"
    "                            build the guest image (with its SBOM); sign and verify it;\n"
    "                            gate it on a vulnerability report; copy it to/from an OCI layout\n"
    "  doctor                    check that this host can run sandboxes\n"
    "  gc [--state-dir DIR]      remove what crashed or killed processes left behind\n"
    "  serve --keys FILE         serve E2B's API here: E2B SDK programs run unchanged\n"
    "  call --tool NAME -- CMD   run a tool call through the policy gate (tiers, approval,\n"
    "                            secrets by reference, audit log)\n"
    "  policy check FILE         validate a policy; explain which rule a sample call hits\n"
    "  audit verify FILE...      check an audit log's hash chain (and HMACs)\n"
    "  version                   print the version\n"
    "\n"
    "Run `ztee <command> --help` for a command's options.\n";

const char kRunUsage[] =
    "usage: ztee run [options] -- CMD [ARG...]\n"
    "\n"
    "Boots a sandbox, runs CMD in it with its output streamed to ours, and\n"
    "destroys the sandbox. A single CMD argument that contains spaces is run\n"
    "by /bin/sh -c.\n"
    "\n"
    "options:\n"
    "  --timeout S     kill the command after S seconds (exit status 124)\n"
    "  --image DIR     guest image directory (default: $ZTEE_IMAGE_DIR or the default image)\n"
    "  --template DIR  start as a clone of this snapshot template instead of a cold\n"
    "                  boot (--memory and --vcpus must match the template's)\n"
    "  --memory MIB    guest memory in MiB (default 256)\n"
    "  --vcpus N       guest vCPUs (default 1)\n"
    "  --accel auto|kvm|tcg\n"
    "                  accelerator (default: $ZTEE_ACCEL, else auto: KVM only on\n"
    "                  hardware KVM, else software emulation; `ztee doctor` says\n"
    "                  which this host gets and why)\n"
    "  --env K=V       set an environment variable (repeatable)\n"
    "  --cwd DIR       working directory in the guest (default /)\n"
    "  --allow CIDR:PORT[/tcp|/udp]\n"
    "                  let the sandbox reach CIDR on PORT (or LO-HI); repeatable.\n"
    "                  Without --allow or --dns the sandbox has no network at all.\n"
    "  --dns ADDR      let the sandbox query the resolver ADDR on port 53\n"
    "  --guest-aslr auto|on|off\n"
    "                  address-space randomisation inside the guest (default auto:\n"
    "                  off under software emulation, where it slows every exec;\n"
    "                  on with KVM)\n"
    "  --trusted-key PUB.pem\n"
    "                  refuse an image (or a template's image) whose manifest.json is\n"
    "                  not signed by this key (repeatable: any of them; see `ztee image sign`)\n"
    "  --require-vuln-gate\n"
    "                  refuse an image without a passing `ztee image gate` verdict\n"
    "  --mount HOST:GUEST\n"
    "                  show host directory HOST read-only at GUEST (repeatable); the\n"
    "                  guest may change what it sees there, the host stays untouched\n"
    "  --diff          after the command, list what it changed (A/M/D lines on stderr)\n"
    "  --patch FILE    after the command, write a unified diff of the mounts' text\n"
    "                  changes to FILE (- for stdout)\n"
    "  --export all|PATH[,PATH...]\n"
    "                  after the command, apply these changes of the mounts to the host\n"
    "                  directories, asking y/n for each on the terminal; nothing is\n"
    "                  applied if a host file changed meanwhile or a change is unsafe\n"
    "  --yes           with --export: apply without asking\n"
    "  --diff-log FILE append one JSON line with the sandbox's diff to FILE when it ends\n"
    "  -h, --help      show this help\n"
    "\n"
    "exit status: the command's; 128+N if killed by signal N; 124 on timeout;\n"
    "127 if the command was not found; 125 if ztee itself failed (or --export\n"
    "applied nothing because of a conflict or an unsafe change).\n";

const char kPoolUsage[] =
    "usage: ztee pool [options]\n"
    "\n"
    "Creates a warm pool in this process, waits until --min-ready sandboxes are\n"
    "READY, leases --leases sandboxes one after another (each runs `true` and is\n"
    "destroyed), and prints the pool's status as it goes and at the end.\n"
    "By default the pool boots one sandbox, snapshots it into a template and\n"
    "fills itself with clones of it.\n"
    "\n"
    "options:\n"
    "  --min-ready N   READY sandboxes to keep waiting (default 2)\n"
    "  --max-total N   ready + starting + leased, at most (default 8)\n"
    "  --cold          cold-boot every sandbox (no snapshot template)\n"
    "  --template DIR  clone this template (made by a snapshot) instead of making one\n"
    "  --leases N      sandboxes to lease (default 3; 0: only fill the pool)\n"
    "  --wait S        give up if the pool is not filled after S seconds (default 180)\n"
    "  --image DIR     guest image directory (default: $ZTEE_IMAGE_DIR or the default image)\n"
    "  --memory MIB    guest memory in MiB (default 256)\n"
    "  --vcpus N       guest vCPUs (default 1)\n"
    "  --accel auto|kvm|tcg\n"
    "                  accelerator (default: $ZTEE_ACCEL, else auto: KVM only on\n"
    "                  hardware KVM, else software emulation; `ztee doctor` says\n"
    "                  which this host gets and why)\n"
    "  --trusted-key PUB.pem, --require-vuln-gate\n"
    "                  refuse an image not signed by this key (repeatable) / without a\n"
    "                  passing vulnerability gate verdict (as `ztee run`)\n"
    "  --warm-up CMD   shell command each new sandbox runs once before it is READY\n"
    "                  (default: true); e.g. 'python3 -c pass' if the leases run python\n"
    "  -h, --help      show this help\n"
    "\n"
    "output: `status: ready=N starting=N leased=N created=N failed=N leases=N\n"
    "lease_timeouts=N backing_off=yes|no` when it changes, `last_error: ...` when a\n"
    "start failed, `lease K: ...` per lease, and at the end the status, the last\n"
    "error and `lease_wait: <10us=N <100us=N ... >=10s=N`.\n"
    "exit status: 0 on success, 125 if the pool could not be filled or a lease failed.\n";

const char kDoctorUsage[] =
    "usage: ztee doctor\n"
    "\n"
    "Checks what sandboxes need on this host: KVM (whether this image can run\n"
    "under it), the backend and accelerator a runtime would pick and why, what a\n"
    "jailed VMM can open (as root: a throwaway jail with its own /dev/kvm), TUN,\n"
    "io_uring, cgroups, QEMU and the guest image. Prints one line per check (OK,\n"
    "WARN or FAIL with what to do) and exits 1 if any check failed.\n"
    "Honours $ZTEE_ACCEL as a runtime does.\n";

const char kVersionUsage[] = "usage: ztee version\n\nPrints the version of ztee and libztee.\n";

int usage_error(const std::string& msg, const char* usage) {
  std::fprintf(stderr, "ztee: %s\n\n%s", msg.c_str(), usage);
  return kExitError;
}

int fail(const std::string& msg) {
  std::fprintf(stderr, "ztee: %s\n", msg.c_str());
  return kExitError;
}

bool is_help(std::string_view a) { return a == "-h" || a == "--help"; }

// Writes all of `data` to fd; gives up silently if the reader went away.
void write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
}

std::string self_dir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string p(buf, static_cast<size_t>(n));
  auto slash = p.rfind('/');
  return slash == std::string::npos ? "." : p.substr(0, slash);
}

bool parse_u32(const std::string& s, uint32_t& out) {
  if (s.empty() || s[0] == '-') return false;
  char* end = nullptr;
  errno = 0;
  unsigned long v = std::strtoul(s.c_str(), &end, 10);
  if (errno || *end || v > UINT32_MAX) return false;
  out = static_cast<uint32_t>(v);
  return true;
}

// Option parsing shared by the commands: "--name VALUE" or "--name=VALUE".
struct ArgReader {
  std::vector<std::string> args;
  size_t i = 0;

  bool done() const { return i >= args.size(); }
  const std::string& peek() const { return args[i]; }
  // If args[i] is option `name`, consumes it (and its value into *value).
  // Returns false with *err set if the value is missing.
  bool take(const char* name, std::optional<std::string>* value, std::string* err) {
    const std::string& a = args[i];
    size_t n = std::strlen(name);
    if (a.compare(0, n, name) != 0) return false;
    if (a.size() == n) {
      if (!value) {
        ++i;
        return true;
      }
      if (i + 1 >= args.size()) {
        *err = std::string(name) + " needs a value";
        return true;
      }
      *value = args[i + 1];
      i += 2;
      return true;
    }
    if (a[n] == '=' && value) {
      *value = a.substr(n + 1);
      ++i;
      return true;
    }
    return false;
  }
};

// ---- run ----------------------------------------------------------------------

// SIGINT/SIGTERM/SIGHUP while a command runs destroy the sandbox, so no VM
// outlives us. The signals are blocked in every thread and taken by sigwait.
struct SignalWatch {
  sigset_t set;
  ztee::Sandbox* sb = nullptr;
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  int got = 0;
};
SignalWatch g_sig;

void* signal_thread(void*) {
  int sig = 0;
  if (sigwait(&g_sig.set, &sig) != 0) return nullptr;
  pthread_mutex_lock(&g_sig.mu);
  g_sig.got = sig;
  if (g_sig.sb) (void)g_sig.sb->destroy();
  pthread_mutex_unlock(&g_sig.mu);
  return nullptr;
}

bool valid_accel(const std::string& a) { return a == "auto" || a == "kvm" || a == "tcg"; }

const char* change_letter(ztee::Change::Kind k) {
  return k == ztee::Change::Kind::kCreated ? "A" : k == ztee::Change::Kind::kDeleted ? "D" : "M";
}

std::string change_where(const ztee::Change& c) { return c.mount.empty() ? c.path : c.mount + "/" + c.path; }

// Asks on the terminal; false on anything but y/yes.
bool ask_tty(FILE* tty, const std::string& question) {
  std::fprintf(stderr, "%s [y/N] ", question.c_str());
  std::fflush(stderr);
  char line[64];
  if (!std::fgets(line, sizeof line, tty)) return false;
  std::string a(line);
  while (!a.empty() && (a.back() == '\n' || a.back() == ' ')) a.pop_back();
  return a == "y" || a == "Y" || a == "yes";
}

// --diff, --patch and --export, after the command, on the live sandbox.
// Returns 0, or kExitError after printing why.
int after_run(ztee::Sandbox& sb, const ztee::SandboxOptions& sopts, bool show_diff, const std::string& patch_to,
              const std::string& export_what, bool yes) {
  if (show_diff) {
    auto d = sb.diff();
    if (!d) return fail("--diff: " + d.error().message);
    for (const auto& c : *d) std::fprintf(stderr, "%s %s\n", change_letter(c.kind), change_where(c).c_str());
  }
  if (!patch_to.empty()) {
    std::string all;
    for (const auto& m : sopts.mounts) {
      auto p = sb.patch(m.guest_path);
      if (!p) return fail("--patch: " + p.error().message);
      all += *p;
    }
    if (patch_to == "-") {
      write_all(STDOUT_FILENO, all);
    } else {
      FILE* f = std::fopen(patch_to.c_str(), "w");
      if (!f || std::fwrite(all.data(), 1, all.size(), f) != all.size() || std::fclose(f) != 0)
        return fail("--patch: cannot write " + patch_to + ": " + std::strerror(errno));
    }
  }
  if (!export_what.empty()) {
    std::vector<std::string> paths;
    if (export_what != "all") {
      size_t start = 0;
      while (start <= export_what.size()) {
        size_t comma = export_what.find(',', start);
        std::string p = export_what.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (!p.empty()) paths.push_back(p);
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    }
    FILE* tty = yes ? nullptr : std::fopen("/dev/tty", "r");
    for (const auto& m : sopts.mounts) {
      ztee::ExportOptions eo;
      eo.mount = m.guest_path;
      // A path names a change of whichever mount has it: "GUEST/rel" or plain "rel" with one mount.
      for (const auto& p : paths) {
        if (p.rfind(m.guest_path + "/", 0) == 0)
          eo.paths.push_back(p.substr(m.guest_path.size() + 1));
        else if (sopts.mounts.size() == 1 && p[0] != '/')
          eo.paths.push_back(p);
      }
      if (!paths.empty() && eo.paths.empty()) continue;
      if (!yes)
        eo.approve = [&](const ztee::Change& c) {
          return ask_tty(tty, std::string("export ") + change_letter(c.kind) + " " + change_where(c) + " to " +
                                  m.host_dir + "?");
        };
      auto r = sb.export_changes(eo);
      if (!r) {
        if (tty) std::fclose(tty);
        return fail("--export: " + r.error().message + " (nothing was applied to " + m.host_dir + ")");
      }
      for (const auto& c : r->applied)
        std::fprintf(stderr, "ztee: exported %s %s\n", change_letter(c.kind), change_where(c).c_str());
    }
    if (tty) std::fclose(tty);
  }
  return 0;
}

int cmd_run(ArgReader r) {
  ztee::RuntimeOptions ropts;
  ztee::SandboxOptions sopts;
  ztee::ExecOptions eopts;
  double timeout_s = 0;
  bool show_diff = false, yes = false;
  std::string patch_to, export_what;
  std::string err;
  while (!r.done()) {
    std::optional<std::string> v;
    const std::string& a = r.peek();
    if (a == "--") {
      ++r.i;
      break;
    }
    if (is_help(a)) {
      std::fputs(kRunUsage, stdout);
      return 0;
    }
    if (r.take("--timeout", &v, &err)) {
      if (!err.empty()) return usage_error(err, kRunUsage);
      char* end = nullptr;
      timeout_s = std::strtod(v->c_str(), &end);
      if (v->empty() || *end || !(timeout_s > 0) || timeout_s > 4e6)
        return usage_error("--timeout: not a positive number of seconds: " + *v, kRunUsage);
    } else if (r.take("--image", &v, &err)) {
      if (!err.empty()) return usage_error(err, kRunUsage);
      ropts.image_dir = *v;
    } else if (r.take("--template", &v, &err)) {
      if (!err.empty()) return usage_error(err, kRunUsage);
      if (v->empty()) return usage_error("--template: empty directory", kRunUsage);
      sopts.template_dir = *v;
    } else if (r.take("--memory", &v, &err)) {
      if (!err.empty()) return usage_error(err, kRunUsage);
      if (!parse_u32(*v, sopts.memory_mib) || sopts.memory_mib == 0)
        return usage_error("--memory: not a size in MiB: " + *v, kRunUsage);
    } else if (r.take("--vcpus", &v, &err)) {
      if (!err.empty()) return usage_error(err, kRunUsage);
      if (!parse_u32(*v, sopts.vcpus) || sopts.vcpus == 0)
        return usage_error("--vcpus: not a CPU count: " + *v, kRunUsage);
    } else if (r.take("--env", &v, &err)) {
      if (!err.empty()) return usage_error(err, kRunUsage);
      auto eq = v->find('=');
      if (eq == std::string::npos || eq == 0)
        return usage_error("--env: expected KEY=VALUE, got: " + *v, kRunUsage);
      eopts.env[v->substr(0, eq)] = v->substr(eq + 1);
    } else if (r.take("--cwd", &v, &err)) {
      if (!err.empty()) return usage_error(err, kRunUsage);
      eopts.cwd = *v;
    } else if (r.take("--allow", &v, &err)) {
      if (!err.empty()) return usage_error(err, kRunUsage);
      sopts.network.allow.push_back(*v);  // checked by create_sandbox, which quotes a bad entry
    } else if (r.take("--dns", &v, &err)) {
      if (!err.empty()) return usage_error(err, kRunUsage);
      sopts.network.dns = *v;
    } else if (r.take("--accel", &v, &err)) {
      if (!err.empty()) return usage_error(err, kRunUsage);
      if (!valid_accel(*v)) return usage_error("--accel: expected auto, kvm or tcg, got: " + *v, kRunUsage);
      ropts.accel = *v;
    } else if (r.take("--trusted-key", &v, &err)) {
      if (!err.empty()) return usage_error(err, kRunUsage);
      ropts.trusted_keys.push_back(*v);
    } else if (a == "--require-vuln-gate") {
      ropts.require_vuln_gate = true;
      ++r.i;
    } else if (r.take("--guest-aslr", &v, &err)) {
      if (!err.empty()) return usage_error(err, kRunUsage);
      if (*v == "auto") sopts.guest_aslr = ztee::GuestAslr::kAuto;
      else if (*v == "on") sopts.guest_aslr = ztee::GuestAslr::kOn;
      else if (*v == "off") sopts.guest_aslr = ztee::GuestAslr::kOff;
      else return usage_error("--guest-aslr: expected auto, on or off, got: " + *v, kRunUsage);
    } else if (r.take("--mount", &v, &err)) {
      if (!err.empty()) return usage_error(err, kRunUsage);
      // GUEST has no ':' (checked by the runtime), HOST may.
      auto colon = v->rfind(':');
      if (colon == std::string::npos || colon == 0 || colon + 1 == v->size())
        return usage_error("--mount: expected HOST:GUEST, e.g. $PWD:/workspace, got: " + *v, kRunUsage);
      std::string host = v->substr(0, colon);
      if (host[0] != '/') {
        char cwd[4096];
        if (::getcwd(cwd, sizeof cwd)) host = std::string(cwd) + "/" + host;
      }
      sopts.mounts.push_back({host, v->substr(colon + 1)});
    } else if (a == "--diff") {
      show_diff = true;
      ++r.i;
    } else if (r.take("--patch", &v, &err)) {
      if (!err.empty()) return usage_error(err, kRunUsage);
      patch_to = *v;
    } else if (r.take("--export", &v, &err)) {
      if (!err.empty()) return usage_error(err, kRunUsage);
      if (v->empty()) return usage_error("--export: expected all or PATH[,PATH...]", kRunUsage);
      export_what = *v;
    } else if (a == "--yes") {
      yes = true;
      ++r.i;
    } else if (r.take("--diff-log", &v, &err)) {
      if (!err.empty()) return usage_error(err, kRunUsage);
      sopts.diff_log = *v;
    } else if (!a.empty() && a[0] == '-') {
      return usage_error("run: unknown option " + a, kRunUsage);
    } else {
      break;  // the command starts here
    }
  }
  std::vector<std::string> cmd(r.args.begin() + static_cast<long>(r.i), r.args.end());
  if (cmd.empty()) return usage_error("run: no command given", kRunUsage);
  if ((!patch_to.empty() || !export_what.empty()) && sopts.mounts.empty())
    return usage_error("--patch and --export need --mount", kRunUsage);
  if (!export_what.empty() && !yes && ::access("/dev/tty", R_OK) != 0)
    return usage_error("--export asks on the terminal and there is none: add --yes to apply without asking",
                       kRunUsage);
  if (cmd.size() == 1 && cmd[0].find_first_of(" \t\n") != std::string::npos)
    eopts.shell = cmd[0];
  else
    eopts.argv = std::move(cmd);
  if (timeout_s > 0) eopts.timeout_ms = static_cast<uint32_t>(std::ceil(timeout_s * 1000));
  eopts.on_stdout = [](std::string_view d) { write_all(STDOUT_FILENO, d); };
  eopts.on_stderr = [](std::string_view d) { write_all(STDERR_FILENO, d); };

  // Block the termination signals before any thread starts, so only the
  // watcher thread receives them.
  sigemptyset(&g_sig.set);
  sigaddset(&g_sig.set, SIGINT);
  sigaddset(&g_sig.set, SIGTERM);
  sigaddset(&g_sig.set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &g_sig.set, nullptr);
  pthread_t watcher;
  if (pthread_create(&watcher, nullptr, signal_thread, nullptr) == 0) pthread_detach(watcher);

  auto rt = ztee::Runtime::create(ropts);
  if (!rt) return fail(rt.error().message);
  auto sb = rt->create_sandbox(sopts);
  if (!sb) return fail(sb.error().message);

  pthread_mutex_lock(&g_sig.mu);
  int early = g_sig.got;
  g_sig.sb = &sb.value();
  pthread_mutex_unlock(&g_sig.mu);
  if (early) {
    (void)sb->destroy();
    return 128 + early;
  }

  auto res = sb->exec(eopts);
  int after = 0;
  if (res && !g_sig.got && (show_diff || !patch_to.empty() || !export_what.empty()))
    after = after_run(*sb, sopts, show_diff, patch_to, export_what, yes);

  pthread_mutex_lock(&g_sig.mu);
  g_sig.sb = nullptr;
  int sig = g_sig.got;
  pthread_mutex_unlock(&g_sig.mu);
  auto destroyed = sb->destroy();
  if (after) return after;
  if (sig) return 128 + sig;
  if (!res) {
    if (res.error().code == ztee::Errc::kNotFound && !eopts.argv.empty()) {
      std::fprintf(stderr, "ztee: %s\n", res.error().message.c_str());
      return kExitNotFound;
    }
    return fail(res.error().message);
  }
  if (!destroyed && destroyed.error().code != ztee::Errc::kClosed)
    std::fprintf(stderr, "ztee: warning: %s\n", destroyed.error().message.c_str());
  const ztee::ExecResult& er = res.value();
  // Output not streamed (should not happen with callbacks set) is still shown.
  write_all(STDOUT_FILENO, er.stdout_data);
  write_all(STDERR_FILENO, er.stderr_data);
  if (er.truncated) std::fprintf(stderr, "ztee: output truncated at the sandbox's output cap\n");
  if (er.timed_out) return kExitTimeout;
  if (er.signal) return 128 + er.signal;
  return er.exit_code < 0 ? kExitError : er.exit_code;
}

// ---- pool -----------------------------------------------------------------------

std::atomic<int> g_pool_signal{0};
extern "C" void on_pool_signal(int sig) { g_pool_signal.store(sig); }

std::string pool_status_line(const ztee::PoolStats& s) {
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "status: ready=%u starting=%u leased=%u created=%" PRIu64 " failed=%" PRIu64
                " leases=%" PRIu64 " lease_timeouts=%" PRIu64 " backing_off=%s",
                s.ready, s.starting, s.leased, s.created, s.failed, s.leases, s.lease_timeouts,
                s.backing_off ? "yes" : "no");
  std::string line = buf;
  if (s.consecutive_failures)
    line += " consecutive_failures=" + std::to_string(s.consecutive_failures);
  return line;
}

void print_pool_summary(const ztee::PoolStats& s) {
  static const char* const kBuckets[8] = {"<10us", "<100us", "<1ms", "<10ms",
                                          "<100ms", "<1s",   "<10s", ">=10s"};
  std::printf("%s\n", pool_status_line(s).c_str());
  std::printf("last_error: %s\n", s.last_error.empty() ? "(none)" : s.last_error.c_str());
  std::string hist = "lease_wait:";
  for (int i = 0; i < 8; ++i)
    hist += std::string(" ") + kBuckets[i] + "=" + std::to_string(s.lease_wait_hist[i]);
  std::printf("%s\n", hist.c_str());
  std::fflush(stdout);
}

int cmd_pool(ArgReader r) {
  ztee::RuntimeOptions ropts;
  ztee::PoolOptions popts;
  uint32_t leases = 3;
  double wait_s = 180;
  std::string err;
  while (!r.done()) {
    std::optional<std::string> v;
    const std::string& a = r.peek();
    if (is_help(a)) {
      std::fputs(kPoolUsage, stdout);
      return 0;
    }
    if (r.take("--min-ready", &v, &err)) {
      if (!err.empty()) return usage_error(err, kPoolUsage);
      if (!parse_u32(*v, popts.min_ready) || popts.min_ready == 0)
        return usage_error("--min-ready: not a count >= 1: " + *v, kPoolUsage);
    } else if (r.take("--max-total", &v, &err)) {
      if (!err.empty()) return usage_error(err, kPoolUsage);
      if (!parse_u32(*v, popts.max_total) || popts.max_total == 0)
        return usage_error("--max-total: not a count >= 1: " + *v, kPoolUsage);
    } else if (r.take("--cold", nullptr, &err)) {
      popts.from_snapshot = false;
    } else if (r.take("--template", &v, &err)) {
      if (!err.empty()) return usage_error(err, kPoolUsage);
      if (v->empty()) return usage_error("--template: empty directory", kPoolUsage);
      popts.template_dir = *v;
    } else if (r.take("--leases", &v, &err)) {
      if (!err.empty()) return usage_error(err, kPoolUsage);
      if (!parse_u32(*v, leases)) return usage_error("--leases: not a count: " + *v, kPoolUsage);
    } else if (r.take("--wait", &v, &err)) {
      if (!err.empty()) return usage_error(err, kPoolUsage);
      char* end = nullptr;
      wait_s = std::strtod(v->c_str(), &end);
      if (v->empty() || *end || !(wait_s > 0) || wait_s > 4e6)
        return usage_error("--wait: not a positive number of seconds: " + *v, kPoolUsage);
    } else if (r.take("--image", &v, &err)) {
      if (!err.empty()) return usage_error(err, kPoolUsage);
      ropts.image_dir = *v;
    } else if (r.take("--memory", &v, &err)) {
      if (!err.empty()) return usage_error(err, kPoolUsage);
      if (!parse_u32(*v, popts.sandbox.memory_mib) || popts.sandbox.memory_mib == 0)
        return usage_error("--memory: not a size in MiB: " + *v, kPoolUsage);
    } else if (r.take("--vcpus", &v, &err)) {
      if (!err.empty()) return usage_error(err, kPoolUsage);
      if (!parse_u32(*v, popts.sandbox.vcpus) || popts.sandbox.vcpus == 0)
        return usage_error("--vcpus: not a CPU count: " + *v, kPoolUsage);
    } else if (r.take("--trusted-key", &v, &err)) {
      if (!err.empty()) return usage_error(err, kPoolUsage);
      ropts.trusted_keys.push_back(*v);
    } else if (a == "--require-vuln-gate") {
      ropts.require_vuln_gate = true;
      ++r.i;
    } else if (r.take("--accel", &v, &err)) {
      if (!err.empty()) return usage_error(err, kPoolUsage);
      if (!valid_accel(*v)) return usage_error("--accel: expected auto, kvm or tcg, got: " + *v, kPoolUsage);
      ropts.accel = *v;
    } else if (r.take("--warm-up", &v, &err)) {
      if (!err.empty()) return usage_error(err, kPoolUsage);
      if (v->empty()) return usage_error("--warm-up: empty command", kPoolUsage);
      popts.warm_up = *v;
    } else {
      return usage_error("pool: unexpected argument " + a, kPoolUsage);
    }
  }
  if (!popts.from_snapshot && !popts.template_dir.empty())
    return usage_error("pool: --cold and --template exclude each other", kPoolUsage);
  if (popts.max_total < popts.min_ready)
    return usage_error("pool: --max-total " + std::to_string(popts.max_total) +
                           " is less than --min-ready " + std::to_string(popts.min_ready),
                       kPoolUsage);

  // Ctrl-C ends the wait; the pool and its VMs are destroyed on the way out.
  struct sigaction sa {};
  sa.sa_handler = on_pool_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);

  auto rt = ztee::Runtime::create(ropts);
  if (!rt) return fail(rt.error().message);
  std::printf("pool: min_ready=%u max_total=%u %s%s; backend %s\n", popts.min_ready,
              popts.max_total,
              !popts.from_snapshot          ? "cold boots"
              : popts.template_dir.empty() ? "clones of a template made now"
                                           : ("clones of " + popts.template_dir).c_str(),
              popts.warm_up.empty() ? "" : ("; warm-up `" + popts.warm_up + "`").c_str(),
              rt->backend_description().c_str());
  std::fflush(stdout);
  auto t0 = std::chrono::steady_clock::now();
  auto pool = rt->create_pool(popts);
  if (!pool) return fail("cannot create the pool: " + pool.error().message);
  auto elapsed_ms = [&t0] {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  std::printf("pool: created in %.0f ms\n", elapsed_ms());

  // Wait until min_ready sandboxes are READY, printing the status as it changes.
  std::string last_line, last_error;
  const double deadline_ms = elapsed_ms() + wait_s * 1000;
  for (;;) {
    ztee::PoolStats s = pool->stats();
    std::string line = pool_status_line(s);
    if (line != last_line) {
      std::printf("%s\n", line.c_str());
      last_line = line;
    }
    if (s.last_error != last_error) {
      if (!s.last_error.empty()) std::printf("last_error: %s\n", s.last_error.c_str());
      last_error = s.last_error;
    }
    std::fflush(stdout);
    if (s.ready >= popts.min_ready) break;
    if (int sig = g_pool_signal.load()) {
      pool->close();
      return 128 + sig;
    }
    if (elapsed_ms() > deadline_ms) {
      print_pool_summary(s);
      return fail("the pool did not fill: " + std::to_string(s.ready) + " of " +
                  std::to_string(popts.min_ready) + " sandboxes ready after " +
                  std::to_string(static_cast<long>(wait_s)) + " s" +
                  (s.last_error.empty() ? std::string(" (no start failed; the host may be slow: try --wait)")
                                        : "; last start failure: " + s.last_error));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::printf("pool: %u ready after %.0f ms\n", popts.min_ready, elapsed_ms());

  int rc = 0;
  for (uint32_t i = 1; i <= leases; ++i) {
    if (int sig = g_pool_signal.load()) {
      rc = 128 + sig;
      break;
    }
    auto l0 = std::chrono::steady_clock::now();
    auto sb = pool->lease();
    double lease_us =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - l0).count();
    if (!sb) {
      std::fprintf(stderr, "ztee: lease %u failed: %s\n", i, sb.error().message.c_str());
      rc = kExitError;
      break;
    }
    ztee::ExecOptions eo;
    eo.argv = {"true"};
    auto e0 = std::chrono::steady_clock::now();
    auto res = sb->exec(eo);
    double exec_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - e0).count();
    std::string id = sb->id();
    (void)sb->destroy();
    if (!res || res->exit_code != 0) {
      std::fprintf(stderr, "ztee: lease %u (%s): `true` failed: %s\n", i, id.c_str(),
                   res ? ("exit code " + std::to_string(res->exit_code)).c_str()
                       : res.error().message.c_str());
      rc = kExitError;
      break;
    }
    std::printf("lease %u: %s in %.0f us; `true` exited 0 in %.1f ms\n", i, id.c_str(), lease_us,
                exec_ms);
    std::printf("%s\n", pool_status_line(pool->stats()).c_str());
    std::fflush(stdout);
  }
  ztee::PoolStats final_stats = pool->stats();
  print_pool_summary(final_stats);
  pool->close();
  return rc;
}

// ---- image build ----------------------------------------------------------------

std::string find_image_build_script() {
  std::string candidates[] = {
      self_dir() + "/../share/ztee/image-build.sh",
      std::string(ZTEE_SOURCE_DIR) + "/tools/image-build.sh",
  };
  for (const auto& c : candidates)
    if (!c.empty() && c[0] == '/' && ::access(c.c_str(), R_OK) == 0) return c;
  // Relative fallback for a build tree without the install step.
  std::string beside = self_dir() + "/../../tools/image-build.sh";
  if (::access(beside.c_str(), R_OK) == 0) return beside;
  return {};
}

int cmd_image(ArgReader r) {
  if (r.done()) return usage_error("image: missing subcommand (build, keygen, sign, verify, gate, push, pull)", ztee::cli::image_usage());
  std::string sub = r.peek();
  if (is_help(sub)) {
    std::fputs(ztee::cli::image_usage(), stdout);
    return 0;
  }
  ++r.i;
  if (sub != "build") {
    int rc = ztee::cli::image_dispatch(sub, std::vector<std::string>(r.args.begin() + static_cast<long>(r.i), r.args.end()));
    return rc == -1 ? usage_error("image: unknown subcommand " + sub, ztee::cli::image_usage()) : rc;
  }
  std::string out, kernel;
  bool force = false, reproducible = false;
  std::string err;
  while (!r.done()) {
    std::optional<std::string> v;
    const std::string& a = r.peek();
    if (is_help(a)) {
      std::fputs(ztee::cli::image_usage(), stdout);
      return 0;
    }
    if (r.take("--out", &v, &err)) {
      if (!err.empty()) return usage_error(err, ztee::cli::image_usage());
      out = *v;
    } else if (r.take("--kernel", &v, &err)) {
      if (!err.empty()) return usage_error(err, ztee::cli::image_usage());
      if (*v != "debian" && *v != "minimal")
        return usage_error("image build: --kernel must be minimal or debian, not " + *v, ztee::cli::image_usage());
      kernel = *v;
    } else if (a == "--force") {
      force = true;
      ++r.i;
    } else if (a == "--verify-reproducible") {
      reproducible = true;
      ++r.i;
    } else {
      return usage_error("image build: unexpected argument " + a, ztee::cli::image_usage());
    }
  }
  if (out.empty()) out = ztee::default_image_dir();
  std::string script = find_image_build_script();
  if (script.empty())
    return fail("image-build.sh not found (looked in " + self_dir() +
                "/../share/ztee/ and the source tree's tools/): reinstall ztee");
  // Beside the CLI in a build tree; under libexec/ztee/ when installed.
  std::string agent;
  for (const std::string& c : {self_dir() + "/ztee-agent", self_dir() + "/../libexec/ztee/ztee-agent"})
    if (agent.empty() && ::access(c.c_str(), X_OK) == 0) agent = c;
  if (agent.empty())
    return fail("ztee-agent not found (looked beside " + self_dir() + " and in " + self_dir() +
                "/../libexec/ztee/): reinstall ztee");
  std::vector<std::string> argv = {"/bin/bash", script, "--out", out, "--agent", agent};
  if (!kernel.empty()) argv.insert(argv.end(), {"--kernel", kernel});
  if (force) argv.push_back("--force");
  if (reproducible) argv.push_back("--verify-reproducible");
  std::vector<char*> cargv;
  for (auto& s : argv) cargv.push_back(s.data());
  cargv.push_back(nullptr);
  std::fflush(nullptr);
  ::execv(cargv[0], cargv.data());
  return fail("cannot run " + script + ": " + std::strerror(errno));
}

// ---- doctor -----------------------------------------------------------------------

struct Doctor {
  int fails = 0;
  void ok(const std::string& what) { std::printf("OK   %s\n", what.c_str()); }
  void warn(const std::string& what, const std::string& todo) {
    std::printf("WARN %s: %s\n", what.c_str(), todo.c_str());
  }
  void bad(const std::string& what, const std::string& todo) {
    std::printf("FAIL %s: %s\n", what.c_str(), todo.c_str());
    ++fails;
  }
};

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string find_in_path(const std::string& name) {
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : "";
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    std::string p = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return {};
}

// What a default runtime would run guests on, and why; then, as root, what a
// jailed VMM can open: a throwaway jail with its own /dev/kvm node.
void check_kvm(Doctor& d) {
  using ztee::detail::KvmHost;
  const bool jailed = ::geteuid() == 0;  // a default runtime jails its VMMs (root only)
  KvmHost host = ztee::detail::probe_kvm_host();
  auto choice = ztee::detail::choose_accel("", host, jailed);
  const char* slower = "sandboxes run under TCG (software emulation: boots and commands are several times slower)";
  if (!choice) {
    d.bad("KVM", choice.error().message);
  } else {
    switch (host.kind) {
      case KvmHost::Kind::kAbsent:
        d.warn("KVM", std::string("no /dev/kvm: ") + slower +
                          "; on a host with hardware virtualisation, load kvm_intel or kvm_amd");
        break;
      case KvmHost::Kind::kPvm:
        d.warn("KVM", "/dev/kvm is present but cannot run this image: it is " + host.provider +
                          ", which runs only PVM-built guest kernels (the image's kernel is not one); " + slower);
        break;
      case KvmHost::Kind::kUnknown:
        d.warn("KVM", host.describe() + ": auto does not use it; " + slower + " (--accel kvm tries it anyway)");
        break;
      case KvmHost::Kind::kHardware:
        if (choice->kvm) d.ok("KVM: " + host.describe() + ": sandboxes run under KVM");
        else d.warn("KVM", choice->reason + "; " + slower);
        break;
    }
  }
  auto qemu = ztee::detail::probe_qemu("", "", jailed);
  if (qemu)
    d.ok(std::string("backend: qemu/") + (qemu->kvm ? "kvm" : "tcg") + " (" + qemu->accel_reason + ")" +
         (std::getenv("ZTEE_ACCEL") && *std::getenv("ZTEE_ACCEL") ? " [$ZTEE_ACCEL is set]" : ""));
  else
    d.bad("backend", qemu.error().message);
  if (host.kind == KvmHost::Kind::kAbsent) return;
  if (!jailed) {
    if (host.opens) d.ok("KVM node: " + host.node + " opens for this user (VMMs run unjailed, as this user)");
    else d.warn("KVM node", host.node + " does not open for this user (" + std::strerror(host.open_errno) + ")");
    return;
  }
  // What the jailed VMM can open, not what root can.
  bool needed = qemu && qemu->kvm;
  auto report = [&](const std::string& why) {
    if (needed) d.bad("KVM node", why + ": sandboxes cannot start under KVM");
    else d.warn("KVM node", why + " (not needed here: sandboxes use TCG)");
  };
  if (!qemu) return;
  auto layout = ztee::detail::detect_cgroups("ztee");
  if (!layout) return report("cannot check the jail: " + layout.error().message);
  auto filter = ztee::detail::build_vmm_seccomp(true);
  if (!filter) return report("cannot check the jail: " + filter.error().message);
  std::error_code ec;
  std::string binary = std::filesystem::canonical(qemu->binary, ec).string();
  auto root = ztee::detail::ensure_vmm_root("/var/lib/ztee/vmm", binary, qemu->kvm);
  if (!root) return report("cannot check the jail: " + root.error().message);
  std::string state = ztee::detail::default_state_dir();
  ::mkdir(state.c_str(), 0700);
  ztee::detail::JailedKvmProbeRequest req;
  req.state_dir = state;
  req.binary = binary;
  req.vmm_root = *root;
  req.cgroups = *layout;
  req.seccomp = &*filter;
  auto p = ztee::detail::probe_kvm_in_jail(req);
  if (!p) return report("a jailed VMM cannot use KVM: " + p.error().message);
  if (!p->kvm_enabled) return report("a jailed VMM started but KVM is not enabled in it: " + p->qmp_reply);
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(p->node_mode));
  d.ok("KVM node: a jailed VMM (uid " + std::to_string(p->vmm_uid) + ") opens its own /dev/kvm (owner uid " +
       std::to_string(p->node_uid) + ", mode " + mode + ") and initialises KVM" +
       (needed ? "" : "; unused here, as sandboxes use TCG"));
}

void check_tun(Doctor& d) {
  int fd = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd >= 0) {
    ::close(fd);
    d.ok("TUN: /dev/net/tun usable");
  } else {
    d.bad("TUN", std::string("/dev/net/tun not usable (") + std::strerror(errno) +
                     "): run `modprobe tun` (needed for sandbox networking)");
  }
}

void check_io_uring(Doctor& d) {
  struct io_uring ring;
  int rc = io_uring_queue_init(8, &ring, 0);
  if (rc == 0) {
    io_uring_queue_exit(&ring);
    d.ok("io_uring: io_uring_queue_init works");
  } else {
    d.bad("io_uring", std::string("io_uring_queue_init failed (") + std::strerror(-rc) +
                          "): needs Linux >= 5.10 with io_uring allowed "
                          "(sysctl kernel.io_uring_disabled=0; containers: seccomp profile)");
  }
}

void check_cgroups(Doctor& d) {
  std::string v2 = read_text("/sys/fs/cgroup/cgroup.controllers");
  if (::access("/sys/fs/cgroup/cgroup.controllers", R_OK) == 0) {
    d.ok("cgroups: v2, controllers: " + (v2.empty() ? std::string("(none delegated)") : v2));
    if (v2.find("memory") == std::string::npos || v2.find("pids") == std::string::npos)
      d.warn("cgroups", "memory or pids controller missing: sandbox limits will not be enforced");
    return;
  }
  std::string have;
  for (const char* c : {"cpu", "cpuacct", "memory", "pids", "cpuset", "devices"})
    if (is_dir(std::string("/sys/fs/cgroup/") + c)) have += std::string(have.empty() ? "" : " ") + c;
  if (!have.empty()) {
    d.ok("cgroups: v1, controllers: " + have +
         (is_dir("/sys/fs/cgroup/unified") ? " (hybrid, v2 at /sys/fs/cgroup/unified)" : ""));
    return;
  }
  d.bad("cgroups", "no cgroup filesystem at /sys/fs/cgroup: mount cgroup2 there "
                   "(mount -t cgroup2 none /sys/fs/cgroup)");
}

void check_qemu(Doctor& d) {
  const char* env = std::getenv("ZTEE_QEMU");
  std::string name = (env && *env) ? env : "qemu-system-x86_64";
  std::string bin = find_in_path(name);
  if (bin.empty()) {
    d.bad("QEMU", name + " not found" + (env && *env ? " ($ZTEE_QEMU)" : " on PATH") +
                      ": apt-get install qemu-system-x86");
    return;
  }
  std::string cmd = "'" + bin + "' --version 2>&1";
  std::string line;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[256];
    if (std::fgets(buf, sizeof buf, p)) line = buf;
    int st = ::pclose(p);
    while (!line.empty() && line.back() == '\n') line.pop_back();
    if (st != 0 || line.empty()) {
      d.bad("QEMU", bin + " --version failed: reinstall qemu-system-x86");
      return;
    }
  }
  d.ok("QEMU: " + bin + ": " + line);
}

void check_image(Doctor& d) {
  std::string dir = ztee::default_image_dir();
  std::string manifest = dir + "/manifest.json";
  if (::access(manifest.c_str(), R_OK) != 0) {
    d.bad("image", "no " + manifest + ": run `ztee image build`");
    return;
  }
  auto img = ztee::detail::load_image_manifest(dir);
  if (!img) {
    d.bad("image", img.error().message + " (fix: `ztee image build --force`)");
    return;
  }
  std::string missing;
  for (const auto* a : {&img->kernel, &img->initramfs, &img->rootfs})
    if (::access(a->path.c_str(), R_OK) != 0) missing += " " + a->path;
  if (!missing.empty()) {
    d.bad("image", dir + ": artifacts missing:" + missing + ": run `ztee image build --force`");
    return;
  }
  d.ok("image: " + dir + (img->kernel_version.empty() ? "" : " (kernel " + img->kernel_version + ")"));
}

const char kGcUsage[] =
    "usage: ztee gc [--state-dir DIR]\n"
    "\n"
    "Removes what sandboxes and pools of processes that are gone (crashed, killed,\n"
    "exited without destroying them) left in a state directory: running VMMs,\n"
    "jail directories, cgroups, id leases, network links and pool templates.\n"
    "Sandboxes of live processes are left alone. Once no sandbox network is left,\n"
    "also removes the host's `table inet ztee` (and turns ip_forward off again if\n"
    "libztee turned it on). Every Runtime does the first part when it starts.\n"
    "\n"
    "options:\n"
    "  --state-dir DIR  state directory (default: $ZTEE_STATE_DIR, else /run/ztee as root)\n"
    "  -h, --help       show this help\n"
    "\n"
    "exit status: 0 when everything left behind was removed; 125 otherwise.\n";

int cmd_gc(ArgReader r) {
  ztee::RuntimeOptions ropts;
  std::string err;
  while (!r.done()) {
    std::optional<std::string> v;
    const std::string& a = r.peek();
    if (is_help(a)) {
      std::fputs(kGcUsage, stdout);
      return 0;
    }
    if (r.take("--state-dir", &v, &err)) {
      if (!err.empty()) return usage_error(err, kGcUsage);
      ropts.state_dir = *v;
    } else {
      return usage_error("gc: unexpected argument " + a, kGcUsage);
    }
  }
  auto rep = ztee::collect_garbage(ropts);
  if (!rep) {
    std::fprintf(stderr, "ztee gc: %s\n", rep.error().message.c_str());
    return kExitError;
  }
  for (const auto& x : rep->removed) std::printf("removed %s\n", x.c_str());
  if (!rep->live.empty()) std::printf("left %zu sandbox(es) of running processes alone\n", rep->live.size());
  if (rep->live.empty()) {
    if (auto h = ztee::remove_unused_host_network(); !h) {
      std::fprintf(stderr, "ztee gc: %s\n", h.error().message.c_str());
      return kExitError;
    }
  }
  if (rep->removed.empty()) std::printf("nothing to remove\n");
  return 0;
}

int cmd_doctor(ArgReader r) {
  if (!r.done()) {
    if (is_help(r.peek())) {
      std::fputs(kDoctorUsage, stdout);
      return 0;
    }
    return usage_error("doctor: unexpected argument " + r.peek(), kDoctorUsage);
  }
  Doctor d;
  check_kvm(d);
  check_tun(d);
  check_io_uring(d);
  check_cgroups(d);
  check_qemu(d);
  check_image(d);
  std::fflush(stdout);
  return d.fails ? 1 : 0;
}

int cmd_version(ArgReader r) {
  if (!r.done()) {
    if (is_help(r.peek())) {
      std::fputs(kVersionUsage, stdout);
      return 0;
    }
    return usage_error("version: unexpected argument " + r.peek(), kVersionUsage);
  }
  std::printf("ztee %s\n", ztee::version());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Every command writes to pipes that may close early (a pager, an
  // approver command that answers without reading its input): EPIPE is an
  // error to handle where it matters, never a reason to die mid-teardown.
  ::signal(SIGPIPE, SIG_IGN);
  ArgReader r;
  r.args.assign(argv + 1, argv + argc);
  if (r.done()) return usage_error("no command given", kMainUsage);
  std::string cmd = r.peek();
  ++r.i;
  if (is_help(cmd) || cmd == "help") {
    std::fputs(kMainUsage, stdout);
    return 0;
  }
  if (cmd == "--version" || cmd == "version") return cmd_version(r);
  if (cmd == "run") return cmd_run(std::move(r));
  if (cmd == "pool") return cmd_pool(std::move(r));
  if (cmd == "image") return cmd_image(std::move(r));
  if (cmd == "doctor") return cmd_doctor(std::move(r));
  if (cmd == "gc") return cmd_gc(std::move(r));
  if (cmd == "serve") return ztee::cli::serve_main(std::vector<std::string>(r.args.begin() + static_cast<long>(r.i), r.args.end()));
  if (cmd == "call" || cmd == "policy" || cmd == "audit")
    return ztee::cli::dispatch(cmd, std::vector<std::string>(r.args.begin() + static_cast<long>(r.i), r.args.end()));
  return usage_error("unknown command " + cmd, kMainUsage);
}
