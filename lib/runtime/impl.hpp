// Private: RuntimeImpl and SandboxImpl, the state machines behind the public
// Runtime and Sandbox handles.
#pragma once

#include <ztee/ztee.hpp>

#include <simdjson.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "agent/channel.hpp"
#include "image/image.hpp"
#include "image/trust.hpp"
#include "io/loop.hpp"
#include "io/stream.hpp"
#include "jail/jail.hpp"
#include "net/net.hpp"
#include "proc/child.hpp"
#include "vmm/driver.hpp"
#include "vmm/qemu/qmp.hpp"

namespace ztee::detail {

struct CancelLink;

// bytes random bytes (getrandom) as lowercase hex.
std::string random_hex(size_t bytes);

// $ZTEE_STATE_DIR, else /run/ztee for root, else $XDG_RUNTIME_DIR/ztee or /tmp/ztee-<uid>.
std::string default_state_dir();

class RuntimeImpl : public std::enable_shared_from_this<RuntimeImpl> {
 public:
  ~RuntimeImpl();
  // Any thread, may block (hashes artifacts not verified before): validates
  // opts, loads the image (or the template's) and verifies its digests.
  Result<Image> prepare(const SandboxOptions& opts);
  // Loop thread: starts a sandbox (cold boot, or restore when
  // opts.template_dir is set) whose image `prepare` verified. `done` runs on
  // the loop thread with the READY sandbox or the error; a failed start
  // leaves nothing behind.
  // background: the sandbox is for a pool's ready queue, nobody waits on it
  // yet: its VMM runs at background CPU weight until set_foreground().
  void start_sandbox(const SandboxOptions& opts, Image image,
                     std::function<void(Result<std::shared_ptr<SandboxImpl>>)> done, bool background = false);

  RuntimeOptions opts;
  // Set when opts.jail.enabled: what every sandbox's jail shares.
  struct JailShared {
    CgroupLayout cgroups;
    std::vector<sock_filter> seccomp;
    std::string vmm_root;  // ensure_vmm_root
    std::string binary;    // the VMM binary's canonical path (also its path in the jail)
    bool kvm = false;
  };
  std::optional<JailShared> jail;
  NetEnv net_env;
  // Any thread: makes the host ready for network slots (its firewall table
  // and forwarding), checked on every networked create.
  Result<void> ensure_network();
  std::mutex net_mu;
  std::unique_ptr<Loop> loop;
  std::unique_ptr<Driver> driver;
  ImageVerifier verifier;
  TrustPolicy trust;  // from opts.trusted_keys and opts.require_vuln_gate
  // Loop thread: VMMs started and waiting for a template's state, by
  // template dir (RuntimeOptions::prespawn of them each).
  std::map<std::string, std::deque<std::shared_ptr<SandboxImpl>>> waiting;
  bool handles_gone = false;  // loop thread: no public Runtime handle is left
  void replenish(const SandboxOptions& opts, const Image& image);
  // Loop thread: hands over (for destruction) the VMMs waiting for a
  // template that is going away.
  std::deque<std::shared_ptr<SandboxImpl>> take_prespawned(const std::string& template_dir);
};

// Runs `start(done)` on the loop thread and blocks the caller until `done`
// is called. Refuses to run on the loop thread itself (it would deadlock).
template <typename T, typename Start>
Result<T> call_on_loop(Loop& loop, Start&& start) {
  if (loop.in_loop_thread())
    return make_error(Errc::kInvalidArgument,
                      "blocking libztee call made from a callback on the event-loop thread: "
                      "callbacks must not block; use exec_async or call from another thread");
  std::promise<Result<T>> p;
  auto fut = p.get_future();
  loop.post([&p, &start] { start([&p](Result<T> r) { p.set_value(std::move(r)); }); });
  return fut.get();
}

// The live parts of a VM, owned on the loop thread. Its destructor kills and
// reaps the VMM and tears down the jail, the id and the sandbox directory,
// wherever it runs.
struct VmParts {
  Child process;
  std::shared_ptr<Stream> agent_stream, qmp_stream, console_stream, log_stream;
  std::unique_ptr<AgentChannel> agent;
  std::unique_ptr<QmpClient> qmp;
  std::string dir;
  std::string state_dir, sandbox_id;
  IdLease id;                       // the sandbox's uid/gid and network slot
  std::optional<CgroupLayout> jail;  // set when the VMM is jailed
  std::string mem_host_path;        // guest RAM file of a snapshottable sandbox
  UniqueFd state_fd;                // a clone's template state (also the VMM's incoming fd)
  std::string incoming_uri;         // "fd:N" in the VMM
  std::optional<NetSlot> net;       // the sandbox's network namespace, TAP, macvlan and firewall
  UniqueFd owner;                   // flock'ed <dir>/owner: "<pid> <id index>"; gc leaves the dir alone while held
  void close_io();  // loop thread
  // After the VMM is reaped: removes the jail (cgroups, skeleton, run dir),
  // releases the id and removes the directory. The error names what is left.
  // Safe to call twice.
  Result<void> teardown();
  bool torn_down = false;
  ~VmParts();
};

class SandboxImpl : public std::enable_shared_from_this<SandboxImpl> {
 public:
  using Done = std::function<void(Result<void>)>;

  SandboxImpl(std::shared_ptr<RuntimeImpl> rt, std::string id, SandboxOptions opts, Image image);
  ~SandboxImpl();

  // ---- loop thread only ----
  // boot = launch (spawn the VMM, wire its channels) + begin (cold boot or
  // restore, until READY). A pre-spawned clone is launched early and begun
  // when someone asks for it.
  void boot(Done done);
  Result<void> launch();
  void begin(Done done);
  // Takes the caller's options for a pre-spawned sandbox (same template).
  // Fails when the new network policy cannot be loaded into the slot.
  Result<void> adopt(const SandboxOptions& opts);
  // Before launch: start the VMM at background CPU weight (pool refills and
  // pre-spawned VMMs), so the work callers wait on gets the CPU first.
  void set_background() { background_ = true; }
  // Back to the default CPU weight once someone holds the sandbox. A no-op
  // without a jail (no cgroup) or when already in the foreground.
  void set_foreground();
  // `link` ties the exec to opts.cancel (see CancelLink); exec() makes it
  // when none is given. A given link's unlink_when_done wraps `done` already.
  void exec(ExecOptions opts, std::function<void(Result<ExecResult>)> done,
            std::shared_ptr<CancelLink> link = nullptr);
  // Any thread: registers the exec's hook on opts.cancel (null for no
  // token). The hook posts to this sandbox's loop; unlink_when_done must
  // wrap the exec's `done`, and `done` must run, or the token keeps it.
  std::shared_ptr<CancelLink> link_cancel(const ExecOptions& opts);
  static void unlink_when_done(const std::shared_ptr<CancelLink>& link,
                               std::function<void(Result<ExecResult>)>& done);
  // Passes an exec's ExecInput bytes (and its EOF) to the agent as the
  // socket takes them; State is exec()'s own.
  template <typename State>
  void drain_input(std::shared_ptr<State> st, uint32_t sid);
  void ping(Done done);
  void write_file(std::string path, std::string data, uint32_t mode, Done done);
  void read_file(std::string path, uint64_t max, std::function<void(Result<std::string>)> done);
  void stat(std::string path, std::function<void(Result<FileInfo>)> done);
  void list_dir(std::string path, std::function<void(Result<std::vector<FileInfo>>)> done);
  void simple_op(proto::MsgType type, std::string json, Done done);
  // DIFF, relative to the template's record for a clone. `mount`: "" all,
  // "/" the root only, else that mount.
  void diff(std::string mount, std::function<void(Result<std::vector<Change>>)> done);
  void destroy(Done done);
  void pause(bool pause, Done done);
  // Saves device state into dir/state and moves guest memory to dir/mem,
  // then destroys the sandbox. dir exists and is empty.
  void snapshot_save(std::string dir, Done done);

  // ---- any thread ----
  // Runs once when the sandbox goes away: destroy(), failure followed by
  // destroy, or the last handle dropped. May run on any thread.
  void set_on_gone(std::function<void()> cb);
  const std::string& id() const { return id_; }
  SandboxState state() const { return state_.load(); }
  std::string failure() const;
  int vmm_pid() const { return vmm_pid_.load(); }
  // The sandbox's id index (uid = gid = jail.id_first + slot): also its
  // network slot number. 0 before launch.
  uint32_t slot() const { return slot_.load(); }
  RuntimeImpl& runtime() { return *rt_; }
  const Image& image() const { return image_; }
  const SandboxOptions& options() const { return opts_; }
  const std::shared_ptr<RuntimeImpl>& runtime_ptr() const { return rt_; }

 private:
  bool background_ = false;  // loop thread only
  struct Request {
    // Returns true when the request has completed.
    std::function<bool(const proto::FrameHeader&, std::string_view)> on_frame;
    std::function<void(Error)> fail;
    uint64_t deadline_ms = 0;  // steady-clock ms; 0: none
    std::shared_ptr<SandboxImpl> keep;  // the sandbox outlives its requests
  };

  std::optional<Error> usable() const;
  // A request answered by one RESULT (parsed by `parse` into the value; a
  // parse error is a protocol violation) or ERROR.
  template <typename T, typename Parse>
  std::shared_ptr<Request> reply_request(std::string what, std::function<void(Result<T>)> done, Parse parse);
  uint32_t start_request(std::shared_ptr<Request> req, uint64_t deadline_ms);
  void finish_request(uint32_t stream);
  // Marks the sandbox failed, fails every pending request and stops the VMM.
  void fail(Errc code, std::string reason);
  void fail_requests(Errc code, const std::string& reason);
  void on_vmm_exit();
  void restore_incoming();
  void send_hello(proto::MsgType type);
  // Polls query-migrate until it completes, fails or `deadline_ms` passes.
  void wait_migration(uint64_t deadline_ms, Done done);
  void qmp_call(std::string cmd, std::string args, Done done);
  void channel_lost(std::string reason);
  // The agent channel ended: a protocol violation fails the sandbox, else as channel_lost.
  void agent_lost(std::string reason);
  void finish_destroy(Done done);
  std::string diagnostics() const;
  Error guest_error(std::string_view payload, std::string_view what);
  bool parse_json(std::string_view payload, simdjson::dom::object* out);
  void protocol_violation(std::string what);

  std::shared_ptr<RuntimeImpl> rt_;
  const std::string id_;
  SandboxOptions opts_;  // written only by adopt(), before begin()
  const Image image_;
  std::atomic<SandboxState> state_{SandboxState::kStarting};
  std::atomic<int> vmm_pid_{0};
  std::atomic<uint32_t> slot_{0};
  mutable std::mutex mu_;
  std::string failure_;

  // loop thread only
  std::shared_ptr<VmParts> vm_;
  std::unordered_map<uint32_t, std::shared_ptr<Request>> reqs_;
  Done boot_done_;
  uint64_t boot_timer_ = 0;
  uint64_t lost_timer_ = 0;
  uint64_t watchdog_timer_ = 0;  // armed while a request has a deadline
  void arm_watchdog();
  std::string console_tail_, log_tail_;
  std::string snapshot_dir_;        // set while snapshot_save tears down
  bool diff_logged_ = false;        // destroy() took the diff_log record
  // A clone's template's own changes (its diff-base.json), loaded once.
  std::optional<std::vector<Change>> diff_base_;
  void raw_diff(std::string mount, std::function<void(Result<std::string>)> done);
  // A request answered by DATA frames (at most `max` bytes, the last with
  // kFlagEof) and then RESULT, or by ERROR; `what` names it in errors.
  void data_request(proto::MsgType type, std::string payload, uint64_t max, std::string what,
                    std::function<void(Result<std::string>)> done);
  void loop_post_snapshot(std::string dir, Done done);
  void snapshot_save_state(std::string dir, Done done);
  void write_diff_record(const Result<std::vector<Change>>& changes);
  std::string net_teardown_error_;  // what the network slot's teardown left, for finish_destroy
 public:
  std::string snapshot_staged_mem_; // loop thread; read by Sandbox::snapshot
 private:
  std::function<void()> on_gone_;  // guarded by mu_
  bool gone_called_ = false;       // guarded by mu_
  void call_on_gone();
  simdjson::dom::parser parser_;
};

}  // namespace ztee::detail
