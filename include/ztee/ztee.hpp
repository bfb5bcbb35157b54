// libztee public C++ API.
//
// A Runtime owns one event-loop thread (io_uring) that drives every sandbox it
// creates. Every method here is thread-safe: blocking calls post a request to
// the loop and wait for its completion. Callbacks (ExecOptions::on_stdout,
// on_stderr) run on the runtime's event-loop thread and must not block or
// throw.
//
// SECURITY: everything that comes back from a sandbox (stdout, stderr, file
// bytes, names) was produced by code that may be hostile. Treat it as
// untrusted input.
#pragma once

#include <ztee/dlp.hpp>
#include <ztee/result.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ztee {

namespace detail {
class RuntimeImpl;
class SandboxImpl;
struct CancelState;
struct InputState;
class PoolImpl;
}  // namespace detail

// Library version "MAJOR.MINOR.PATCH".
const char* version();

// The jail every VMM runs in (see lib/jail). On by default; needs root.
//
// SECURITY: with enabled = false the VMM runs as the calling user, in the
// host's namespaces, with no cgroup limits, no seccomp filter and the whole
// host filesystem visible: a guest that escapes QEMU owns everything the
// caller can reach. Only for development on machines where that is acceptable.
//
// SECURITY (template clones): QEMU 7.2 opens a template's memory file
// read-write even for a private (copy-on-write) mapping, so clone VMMs get
// the template group (gid id_first) as a supplementary group and the file is
// root:<id_first> 0660. A compromised clone VMM could therefore write its own
// template's memory file (only that one: each clone's jail shows only its
// template), changing the pages of sibling clones that they have not yet
// written themselves. Other templates, images and the host are not reachable.
struct JailOptions {
  bool enabled = true;
  // Sandboxes get uid = gid = id_first + n for n in 1..id_count-1 (n is also
  // the sandbox's network slot); id_first itself is the template group.
  // Allocated across processes by lock files under <state_dir>/ids, and
  // host-wide (byte locks in /run/ztee/ids.lock) so that runtimes with
  // different state dirs never share an id, a uid or a network slot.
  uint32_t id_first = 600000;
  uint32_t id_count = 65536;
  // Cgroup for the sandboxes' cgroups, below the runtime process's own
  // cgroup in each hierarchy (or from the hierarchy root when it starts
  // with '/'). cgroup v2 when the unified hierarchy has memory, cpu and
  // pids; else v1.
  std::string cgroup_parent = "ztee";
  // Where the read-only VMM root (binary, libraries, firmware) is built
  // once per VMM binary. Empty: /var/lib/ztee/vmm.
  std::string vmm_cache_dir;
};

struct RuntimeOptions {
  // Directory for per-sandbox runtime state (sockets, logs). Empty: $ZTEE_STATE_DIR,
  // else /run/ztee when running as root, else $XDG_RUNTIME_DIR/ztee or /tmp/ztee-<uid>.
  std::string state_dir;
  // Guest image directory (holds manifest.json). Empty: $ZTEE_IMAGE_DIR, else the
  // default image dir (see default_image_dir()).
  std::string image_dir;
  // "auto" (default), "qemu". "firecracker" is reserved.
  std::string backend = "auto";
  // QEMU binary; empty: $ZTEE_QEMU, else qemu-system-x86_64 from PATH.
  std::string qemu_binary;
  // Acceleration for QEMU: "auto", "kvm" or "tcg"; empty: $ZTEE_ACCEL, else
  // "auto". auto picks KVM only on hardware KVM (kvm_intel with vmx, kvm_amd
  // with svm) that the VMM can open, and TCG otherwise -- e.g. on a /dev/kvm
  // served by kvm_pvm, which runs only PVM-built guest kernels, not this
  // image's stock one. backend_description() says which and why. "kvm" on a
  // host that cannot run the image fails Runtime::create with the reason
  // (kBackendUnavailable) before any VMM starts.
  std::string accel;
  // VMMs kept started and waiting per template once it has been cloned, so
  // the next clone pays only for the restore. They live until the last
  // Runtime handle goes (a pool's own template: until the pool closes).
  // 0 disables pre-spawning.
  uint32_t prespawn = 1;
  JailOptions jail;
  // Image signature policy. Each entry is the path of a PEM public key
  // ("-----BEGIN PUBLIC KEY-----", ECDSA P-256, e.g. from `ztee image keygen`
  // or a cosign key pair's .pub) or the PEM text itself. When any is set,
  // every image (and the image of every snapshot template) must carry a
  // manifest.json.sig made by one of them over its exact manifest.json
  // (`ztee image sign`), and a template must record the signature its image
  // has now; otherwise sandbox and pool creation fail with kImage, naming the
  // file and the reason, before any VMM starts. Runtime::create fails with
  // kInvalidArgument on an unreadable or non-P-256 key.
  std::vector<std::string> trusted_keys;
  // Refuse (kImage) images whose manifest records no passing vulnerability
  // gate verdict (`ztee image gate`). The verdict is only as trustworthy as
  // the manifest: combine with trusted_keys.
  bool require_vuln_gate = false;
};

// Where `ztee image build` puts the image by default: $ZTEE_IMAGE_DIR, else
// /var/lib/ztee/images/default for root, else $XDG_DATA_HOME (or ~/.local/share)/ztee/images/default.
std::string default_image_dir();

// What a sandbox may reach on the network. The default (nothing listed) is no
// network at all: the guest has no interface but lo.
//
// SECURITY: every entry widens what code in the sandbox can reach. A sandbox
// with a policy gets its own network namespace on the host, a TAP and a
// private-mode macvlan to the host, and an nftables firewall that drops everything not listed.
// The host's own addresses and other sandboxes are never reachable, whatever
// is listed.
struct NetworkPolicy {
  // "CIDR:PORT" or "CIDR:LO-HI", optionally followed by "/tcp" or "/udp"
  // (default both); a bare address is a /32. IPv4 only. E.g.
  // "198.18.0.10:8080/tcp", "10.0.0.0/8:443", "192.0.2.1:5000-5010/udp".
  std::vector<std::string> allow;
  // A resolver the guest may query (port 53, udp and tcp) and that becomes
  // its /etc/resolv.conf. Empty: no DNS.
  std::string dns;
  bool enabled() const { return !allow.empty() || !dns.empty(); }
};

// Address-space layout randomisation for the processes inside the guest.
enum class GuestAslr {
  kAuto,  // off under software emulation (TCG), on with KVM
  kOn,
  kOff,
};

// A host directory a sandbox sees read-only at a guest path
// (SandboxOptions::mounts): "deterministic read, volatile write".
//
// The sandbox gets a read-only disk image built from the directory when it
// starts (a consistent copy: later host changes are not seen); the guest
// mounts it under an overlay whose writable layer lives in guest memory, so
// code inside may change anything it sees there and the host directory is
// never written, by the guest or by the VMM (which opens only the image, and
// read-only). Changes come back only through Sandbox::export_changes.
//
// SECURITY: everything in the directory (names, contents, modes, owners)
// becomes readable by the code in the sandbox. Mount only what it may read.
struct Mount {
  std::string host_dir;    // absolute path of an existing directory
  std::string guest_path;  // absolute guest path, e.g. "/workspace"; not /, /proc, /sys, /dev, /run, /tmp
};

struct SandboxOptions {
  std::string image_dir;          // empty: the runtime's image
  uint32_t vcpus = 1;             // 1..64
  uint32_t memory_mib = 256;      // 64..65536
  uint32_t boot_timeout_ms = 60000;
  // Default per-exec limits, used when ExecOptions leaves them zero.
  uint32_t exec_timeout_ms = 0;   // 0: no timeout
  uint64_t output_cap = 16u << 20;
  // Start from this template directory (made by Sandbox::snapshot) instead
  // of a cold boot: the clone maps the template's memory copy-on-write and
  // is re-identified (entropy, clock, hostname) before it is handed out.
  // vcpus and memory_mib must match the template's.
  std::string template_dir;
  // Keep guest RAM in a file so the sandbox can be snapshotted. Off by
  // default (RAM is then anonymous memory).
  bool snapshottable = false;
  // Limits of the sandbox's VMM process (its cgroup; enforced by the jail).
  uint32_t pids_max = 0;          // 0: 128 (processes + threads)
  uint32_t cpu_percent = 0;       // 100 = one host CPU; 0: vcpus * 100
  uint64_t memory_limit_mib = 0;  // 0: memory_mib + 384 (the VMM's own overhead)
  // Default: no network. A clone's template must have been made from a
  // sandbox that had a network iff this one has one (its NIC is part of the
  // saved device state); each clone gets its own namespace and firewall.
  NetworkPolicy network;
  // ASLR inside the guest (the kernel's randomize_va_space, set by the agent
  // at boot and again when a clone is re-identified, so a clone follows this
  // option, not its template's).
  // Why kAuto turns it off under TCG: QEMU finds translated guest code by
  // virtual address, so a program whose libraries land at new addresses on
  // every run is translated anew every time. A warm `true` took 25.6 ms
  // with ASLR and 9 ms without (benchmarks/README.md).
  // SECURITY: ASLR in the guest only makes a memory-corruption bug in a
  // program inside this sandbox harder to exploit, from data that program
  // reads; it plays no part in keeping the guest from the host or from other
  // sandboxes. Set kOn if the sandbox runs such a program on hostile input
  // and its exploitation matters (e.g. the sandbox holds secrets).
  GuestAslr guest_aslr = GuestAslr::kAuto;
  // Host directories the guest sees read-only (see Mount); at most 16. Each
  // is copied into a read-only disk image when the sandbox is created (about
  // 0.1 s plus the copy; benchmarks/README.md), so mounts need a cold boot:
  // not with template_dir, snapshottable or a pool.
  std::vector<Mount> mounts;
  // When set, destroy() appends one JSON line to this file before the VMM
  // stops: {"sandbox": id, "time_ns": n, "changes": [...]} with diff() of
  // the whole guest (the forensic record of what the sandbox changed), or
  // "error" when it could not be taken (the guest was gone or hostile).
  std::string diff_log;
  // Output DLP (include/ztee/dlp.hpp) on everything this sandbox returns:
  // every exec's stdout and stderr, streamed or collected (ExecResult then
  // carries the findings and anomalies, which never hold the values), and
  // read_file's bytes. A detector in block mode, or an injection rule with
  // kFail, fails the call with kPermission (the command has run; its output
  // is withheld). Empty (the default): off. Streamed output is held back by
  // at most DlpScanner::hold_back_bytes() until its redaction is decided.
  // read_file reports no findings (scan the bytes with DlpScanner::scan for
  // them); export_changes reads the guest's files unscanned (they go to the
  // host directory, not to the caller).
  DlpScanner dlp;
};


// Ends running execs from any thread. trigger() kills each exec's whole
// process group in the guest (SIGKILL); each exec then returns its result
// with ExecResult::cancelled set. A token triggered before an exec starts
// cancels it as soon as it starts. One token may serve several execs, at
// once or one after another; it stays triggered. A default-constructed
// token is empty (cancels nothing): make one with ExecCancel::create().
class ExecCancel {
 public:
  ExecCancel() = default;
  static ExecCancel create();
  void trigger() const;  // any thread; idempotent; a no-op on an empty token
  bool triggered() const;
  // Sends signal `sig` (1..64, the guest's numbering: SIGTERM 15, SIGINT 2,
  // SIGUSR1 10, ...) to the whole process group of every exec running with
  // this token, from any thread. An exec counts from the moment exec() or
  // exec_async() is called: if its command has not started in the guest
  // yet, the signal follows the start. A token no exec has used yet keeps
  // its signals (at most 64) for the first exec that does, as trigger() is
  // kept. Otherwise it is not remembered: with no exec running (they have
  // ended) it does nothing (a no-op, not an error). The exec ends, if the
  // signal ends it, with ExecResult::signal set and cancelled false.
  // Errors: kInvalidArgument for a number outside 1..64 or an empty token.
  Result<void> signal(int sig) const;
  explicit operator bool() const { return static_cast<bool>(state_); }

 private:
  friend class detail::SandboxImpl;
  std::shared_ptr<detail::CancelState> state_;
};

// The stdin of one exec, written while it runs (ExecOptions::input), from any
// thread. Bytes written before the exec starts are kept and sent when it
// does. close() ends the stream: the command reads EOF once it has read
// everything written before. A default-constructed handle is empty: make
// one with ExecInput::create(). One handle serves one exec.
//
// Bounds: write() never blocks. The guest takes at most 1 MiB more than the
// command has read (the agent holds it; the host sends more as the command
// reads); the rest waits on the host, at most kMaxBuffered bytes per handle.
// A write that would pass that bound fails with kIo, sys_errno EAGAIN, and
// writes nothing: retry once buffered() has dropped (one write larger than
// kMaxBuffered never fits: split it). So a command that stops reading its
// stdin makes write() fail with EAGAIN once about 2 MiB (plus its pipe) are
// in flight, and costs neither side more memory. Any thread may write, an
// on_stdout callback included (a write only takes a lock and posts to the
// loop).
class ExecInput {
 public:
  static constexpr size_t kMaxBuffered = 1u << 20;

  ExecInput() = default;
  static ExecInput create();
  // Queues `data` for the command's stdin (empty data is a no-op). Errors:
  // kInvalidArgument after close() or on an empty handle; kClosed once the
  // exec has ended (or failed to start); kIo/EAGAIN when the bound is reached.
  Result<void> write(std::string_view data) const;
  // Ends the command's stdin after what was written. Idempotent; a no-op
  // once the exec has ended.
  void close() const;
  size_t buffered() const;  // bytes written but not yet passed to the guest
  explicit operator bool() const { return static_cast<bool>(state_); }

 private:
  friend class detail::SandboxImpl;
  std::shared_ptr<detail::InputState> state_;
};

struct ExecOptions {
  // Either argv (argv[0] searched in PATH) or shell (run by /bin/sh -c).
  std::vector<std::string> argv;
  std::string shell;
  std::map<std::string, std::string> env;  // added to the guest's default env
  std::string cwd;                          // empty: "/"
  std::string user;                         // empty: root; a name or numeric uid
  std::optional<std::string> stdin_data;    // none: stdin is /dev/null
  // Stdin streamed while the command runs (see ExecInput); not together
  // with stdin_data (kInvalidArgument), nor on a handle another exec used.
  ExecInput input;
  uint32_t timeout_ms = 0;                  // 0: the sandbox default
  uint64_t output_cap = 0;                  // bytes of stdout+stderr kept; 0: sandbox default
  // Streaming: called with each chunk as the guest produces it, on the
  // runtime's event-loop thread; must not block. When set, the chunk is not
  // also accumulated in ExecResult.
  std::function<void(std::string_view)> on_stdout;
  std::function<void(std::string_view)> on_stderr;
  // Empty: the exec can end only by itself or its timeout.
  ExecCancel cancel;
};

struct ExecResult {
  int exit_code = -1;    // -1 when killed by a signal
  int signal = 0;        // the signal that ended it, 0 if none
  bool timed_out = false;
  bool truncated = false;  // output beyond output_cap was dropped
  bool cancelled = false;  // ExecOptions::cancel ended it (signal is then SIGKILL)
  uint64_t duration_us = 0;
  std::string stdout_data;
  std::string stderr_data;
  // With SandboxOptions::dlp: what the scanner found (stream "stdout" or
  // "stderr", offsets in the command's raw output).
  std::vector<DlpFinding> dlp_findings;
  std::vector<InjectionAnomaly> injection_anomalies;
};

enum class FileType { kFile, kDir, kSymlink, kOther };

struct FileInfo {
  std::string name;  // entry name (list) or the path (stat)
  FileType type = FileType::kOther;
  uint64_t size = 0;
  uint32_t mode = 0;  // permission bits
  int64_t mtime_ns = 0;
};

// One entry of Sandbox::diff(): what changed in the guest's writable layer.
struct Change {
  enum class Kind { kCreated, kModified, kDeleted };
  Kind kind = Kind::kCreated;
  FileType type = FileType::kOther;  // kDeleted: the type it had
  // In a mount: relative to the mount ("src/main.py"); else the absolute
  // guest path ("/etc/hosts").
  std::string path;
  std::string mount;  // the Mount::guest_path it belongs to; empty: the guest's own filesystem
  uint64_t size = 0;  // files and symlinks (not for kDeleted)
  uint32_t mode = 0;  // permission bits including setuid/setgid/sticky (07777)
  std::string sha256;       // regular files: hex digest of the content
  std::string link_target;  // symlinks
};
const char* change_kind_name(Change::Kind k);  // "created", "modified", "deleted"

// Sandbox::export_changes: which changes of one mount go back to the host.
struct ExportOptions {
  // The mount's guest path; may stay empty when the sandbox has one mount.
  std::string mount;
  // Relative paths to export; a directory selects everything below it.
  // Each must name a change (kInvalidArgument otherwise). Empty: all.
  std::vector<std::string> paths;
  // Asked once per selected change, on the calling thread, before anything
  // is written; false leaves that change out. Null: all selected.
  std::function<bool(const Change&)> approve;
  // Empty: the mount's host directory, where every touched path must be as
  // it was when the sandbox started or as an earlier export left it (else
  // kConflict and nothing is applied). Else an existing directory that
  // receives the created and modified entries (deletions are only reported,
  // in ExportResult::skipped_deletions).
  std::string dest_dir;
};

struct ExportResult {
  std::vector<Change> applied;   // written to the host (in the order applied)
  std::vector<Change> declined;  // selected but not approved
  // dest_dir only: approved deletions, recorded and not carried out (the
  // destination is not the tree they refer to).
  std::vector<Change> skipped_deletions;
};

enum class SandboxState { kStarting, kReady, kFailed, kDestroyed };
const char* sandbox_state_name(SandboxState s);

class Sandbox {
 public:
  Sandbox() = default;
  // Unique id, e.g. "sb-1a2b3c4d".
  const std::string& id() const;
  SandboxState state() const;
  // Why the sandbox failed (empty unless state() == kFailed).
  std::string failure() const;
  // "qemu/tcg", "qemu/kvm".
  std::string backend() const;
  // Host pid of the VMM process (0 after destroy).
  int vmm_pid() const;

  // Runs a command and waits for it to end.
  Result<ExecResult> exec(const ExecOptions& opts);
  // Shorthand: exec of `shell` through /bin/sh -c.
  Result<ExecResult> run(std::string_view shell, uint32_t timeout_ms = 0);
  // Starts a command; `done` runs on the event-loop thread when it ends.
  void exec_async(ExecOptions opts, std::function<void(Result<ExecResult>)> done);

  Result<void> write_file(std::string_view path, std::string_view data, uint32_t mode = 0644);
  // Fails with kInvalidArgument if the file is larger than max_bytes.
  Result<std::string> read_file(std::string_view path, uint64_t max_bytes = 64u << 20);
  Result<FileInfo> stat(std::string_view path);
  Result<std::vector<FileInfo>> list_dir(std::string_view path);
  Result<void> remove(std::string_view path, bool recursive = false);
  Result<void> mkdir(std::string_view path, bool parents = false, uint32_t mode = 0755);

  // What changed in the guest's writable layers since it booted (or since
  // its template was made, for a clone): created, modified and deleted
  // entries, sorted by mount and path. `mount` = a mount's guest path gives
  // that mount only; "/" the guest's own filesystem only; empty: both.
  // SECURITY: the list comes from the guest and is only its claim;
  // export_changes checks every entry again.
  Result<std::vector<Change>> diff(std::string_view mount = {});
  // Applies the approved part of a mount's diff to the host (see
  // ExportOptions). All checks run before the first write; a failing check
  // applies nothing: kConflict (a host file changed since the sandbox
  // started), kPermission (a path with "..", a symlink leaving the
  // directory, a device, setuid/setgid bits, a hard link, content that no
  // longer matches the diff's sha256). Each file is replaced atomically.
  // SECURITY: this is the one way data written in a sandbox reaches a host
  // directory: approve only what was reviewed.
  Result<ExportResult> export_changes(const ExportOptions& opts);
  // A unified diff (diff -u) of a mount's text changes against the host
  // directory, for review; binary files are named, not shown.
  Result<std::string> patch(std::string_view mount = {}, const std::vector<std::string>& paths = {});

  // One no-op round trip to the guest agent.
  Result<void> ping();

  // Stops / restarts the guest's vCPUs. Calls that reach the guest wait
  // while it is paused (their deadlines still run).
  Result<void> pause();
  Result<void> resume();

  // Turns this sandbox into a template in `dir` (created; must not exist):
  // pauses it, saves its device state, and moves its memory file there. The
  // sandbox is destroyed afterwards: a template must stay pristine. Needs
  // SandboxOptions::snapshottable. Clone with SandboxOptions::template_dir.
  Result<void> snapshot(std::string_view dir);

  // Kills the VMM, removes sockets and files, and checks they are gone.
  // A second call returns kClosed.
  Result<void> destroy();

  explicit operator bool() const { return static_cast<bool>(impl_); }

 private:
  friend class Runtime;
  friend class detail::PoolImpl;
  // Wraps a started sandbox in a public handle: when the last handle goes,
  // the sandbox is destroyed.
  explicit Sandbox(std::shared_ptr<detail::SandboxImpl> impl);
  std::shared_ptr<detail::SandboxImpl> impl_;
};

struct PoolOptions {
  SandboxOptions sandbox;          // vcpus, memory, image, limits of each sandbox
  // Template to clone from. Empty: the pool boots one sandbox, snapshots it
  // into its own template (under the runtime's state dir) and clones that.
  std::string template_dir;
  bool from_snapshot = true;       // false: every sandbox is a cold boot
  uint32_t min_ready = 2;          // keep this many READY sandboxes waiting
  uint32_t max_total = 8;          // ready + starting + leased, at most
  uint32_t refill_concurrency = 1; // sandboxes started at once
  uint32_t lease_timeout_ms = 30000;  // default deadline for lease()
  // Run by /bin/sh -c in each new sandbox, once, before it counts as READY;
  // it must exit 0 within sandbox.boot_timeout_ms, else that start counts as
  // failed (PoolStats::last_error quotes it). Empty: exec of `true`. Under
  // TCG a sandbox's first run of a program translates the program's code,
  // so warming with what the lease holders will run makes their first run
  // as fast as a later one (the first `python3 -c pass` after a lease:
  // 808 ms with the default warm-up, 135 ms warmed with it; benchmarks/README.md). A pool that makes its own template runs it there
  // too, before the snapshot, so the files it read are in every clone's page
  // cache. What it writes stays in the sandbox a holder gets.
  std::string warm_up;
};

struct PoolStats {
  uint32_t ready = 0, starting = 0, leased = 0;
  uint64_t created = 0;        // sandboxes that became READY
  uint64_t failed = 0;         // sandboxes that failed to start (discarded)
  uint64_t leases = 0, lease_timeouts = 0;
  uint32_t consecutive_failures = 0;
  bool backing_off = false;    // refills paused after repeated failures
  std::string last_error;      // the latest start failure, empty if none
  // Lease wait histogram: counts of leases that waited < 10 µs, < 100 µs,
  // < 1 ms, < 10 ms, < 100 ms, < 1 s, < 10 s, >= 10 s.
  uint64_t lease_wait_hist[8] = {};
};

// A warm pool: READY sandboxes kept waiting, refilled in the background on
// the runtime's event loop. Each new sandbox runs one `true` before it counts
// as ready, so the lease holder's first exec is not a fresh VMM's slow one. A leased sandbox belongs to the caller alone and
// is destroyed when released (destroy() or the last handle dropped): never
// recycled.
class Pool {
 public:
  Pool() = default;
  // Hands out a READY sandbox, waiting up to deadline_ms (0: the pool's
  // lease_timeout_ms) for one; kTimeout when none came in time.
  Result<Sandbox> lease(uint32_t deadline_ms = 0);
  PoolStats stats() const;
  // Destroys the ready sandboxes and stops refilling. Leased sandboxes stay
  // with their holders. Also done when the last Pool handle goes away.
  void close();
  explicit operator bool() const { return static_cast<bool>(impl_); }

 private:
  friend class Runtime;
  explicit Pool(std::shared_ptr<detail::PoolImpl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<detail::PoolImpl> impl_;
};

// What collect_garbage removed, and the sandboxes it left alone.
struct GcReport {
  std::vector<std::string> removed;  // e.g. "sandbox sb-…", "cgroup sb-…", "network neighbour entry of slot 3", "id lease …"
  std::vector<std::string> live;     // sandboxes whose process still runs
};

// Removes what sandboxes and pools of processes that are gone (crashed,
// killed with SIGKILL, exited without destroying) left in the state
// directory `opts.state_dir` (empty: the default): their VMMs if still
// running, jail directories, cgroups, id leases, leftover network links and
// pool templates. Sandboxes of live processes are never touched. Runtime::create
// runs it on its state directory; `ztee gc` runs it from the command line.
// Fails (kIo) naming each piece it could not remove.
Result<GcReport> collect_garbage(const RuntimeOptions& opts = {});

// Removes the host's sandbox-network firewall table (`table inet ztee`) when
// no sandbox network link is left, and turns net.ipv4.ip_forward off again
// if libztee turned it on. Does nothing while any slot exists. Not safe
// against another process creating its first networked sandbox at the same
// moment: for `ztee gc` and tests.
Result<void> remove_unused_host_network();

class Runtime {
 public:
  // Starts the event loop. Fails if io_uring or the state dir is unusable.
  static Result<Runtime> create(RuntimeOptions opts = {});
  Runtime() = default;

  // Boots a sandbox and waits until its agent is READY (or the boot timeout).
  Result<Sandbox> create_sandbox(const SandboxOptions& opts = {});

  // Creates a pool and waits until its template exists (not until it is full).
  Result<Pool> create_pool(const PoolOptions& opts = {});

  // The backend and accelerator and why, e.g. "qemu/kvm (hardware KVM:
  // kvm_intel)" or "qemu/tcg (/dev/kvm is kvm_pvm, which runs only PVM guest
  // kernels: guests run under software emulation)".
  std::string backend_description() const;
  const RuntimeOptions& options() const;

  explicit operator bool() const { return static_cast<bool>(impl_); }

 private:
  explicit Runtime(std::shared_ptr<detail::RuntimeImpl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<detail::RuntimeImpl> impl_;
};

}  // namespace ztee
