/*
 * libztee: the stable C ABI.
 *
 * Every code-running tool call of an AI agent runs in its own microVM with its
 * own guest kernel. This header is C99 and includes only standard headers.
 *
 * Conventions
 *  - Functions return ztee_status: ZTEE_OK (0) or a negative error code. After
 *    a failure, ztee_last_error() describes it for the calling thread.
 *  - Constructors write *out only on success. Every handle has a NULL-safe
 *    *_free. Child handles keep their parent alive, so handles may be freed in
 *    any order.
 *  - Options structs start with uint32_t struct_size. Initialise them with the
 *    ZTEE_*_OPTIONS_INIT macro or ztee_*_options_init(); a zero field means its
 *    default. A struct_size this library does not know fails with
 *    ZTEE_E_INVALID_ARGUMENT, except a larger one (a program built against a
 *    newer ztee.h, up to 4096 bytes): that is accepted when every byte past
 *    this library's layout is zero, and refused (ZTEE_E_INVALID_ARGUMENT)
 *    when one is not, since a field this library does not know cannot be
 *    honoured. Output structs (ztee_pool_stats) of a larger size get the
 *    fields this library knows and zeros after them.
 *  - Strings passed in are borrowed for the duration of the call. Memory the
 *    library returns is released with the matching *_free or ztee_free.
 *  - All functions are thread-safe. Callbacks run on the runtime's event-loop
 *    thread, must not block and must not unwind (no C++ exceptions, no longjmp).
 *
 * SECURITY: bytes that come back from a sandbox (stdout, stderr, file
 * contents, names) are produced by code that may be hostile.
 */
#ifndef ZTEE_H
#define ZTEE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(ZTEE_BUILDING_LIBRARY)
#define ZTEE_API __attribute__((visibility("default")))
#else
#define ZTEE_API
#endif

/* ---- status codes (never renumbered) ----------------------------------- */

typedef int32_t ztee_status;

#define ZTEE_OK 0
#define ZTEE_E_INVALID_ARGUMENT (-1)    /* bad argument or options; see message */
#define ZTEE_E_NO_MEMORY (-2)
#define ZTEE_E_INTERNAL (-3)            /* a bug in libztee; message kept */
#define ZTEE_E_NOT_FOUND (-4)           /* file, command or directory missing */
#define ZTEE_E_IMAGE (-5)               /* guest image missing, incomplete or tampered */
#define ZTEE_E_BACKEND_UNAVAILABLE (-6) /* the VMM cannot run on this host */
#define ZTEE_E_TIMEOUT (-7)             /* a boot or request deadline passed */
#define ZTEE_E_SANDBOX_FAILED (-8)      /* the sandbox died or its guest misbehaved */
#define ZTEE_E_CLOSED (-9)              /* the sandbox was destroyed */
#define ZTEE_E_IO (-10)                 /* host I/O error */
#define ZTEE_E_PROTOCOL (-11)           /* the guest sent a malformed frame */
#define ZTEE_E_GUEST (-12)              /* the guest reported an OS error */
#define ZTEE_E_PERMISSION (-13)         /* not permitted (host or guest) */
#define ZTEE_E_UNSUPPORTED (-14)        /* not implemented by this backend or build */
#define ZTEE_E_CONFLICT (-15)           /* the host changed under the call (export: a file edited since the sandbox started) */

/* ---- errors, version, features ----------------------------------------- */

typedef struct ztee_error {
  ztee_status code;     /* the status of the failed call */
  int sys_errno;        /* OS errno (host or guest), 0 if none */
  const char *message;  /* what went wrong and what to do; never NULL */
} ztee_error;

/* The calling thread's last failure. Never NULL, and message is never NULL;
 * code is ZTEE_OK if this thread has not failed yet. A successful call does
 * not clear it. Valid until the thread's next ztee_* call. */
ZTEE_API const ztee_error *ztee_last_error(void);

/* Symbolic name of a status, e.g. "ZTEE_E_TIMEOUT". Never NULL. */
ZTEE_API const char *ztee_status_name(ztee_status status);

/* Library version "MAJOR.MINOR.PATCH". Static storage. */
ZTEE_API const char *ztee_version(void);

/* 1 if this build supports `feature`, else 0 (also for NULL or an unknown
 * name). Known features: "qemu", "firecracker", "kvm" (a runtime created
 * now with default options would run guests under KVM: hardware KVM the VMM
 * can open, and $ZTEE_ACCEL not "tcg"; a /dev/kvm served by kvm_pvm is not),
 * "streaming", "files", "pool" (ztee_pool_*), "snapshot"
 * (ztee_sandbox_snapshot, pause/resume, template_dir), "network"
 * (ztee_sandbox_options.net_allow / net_dns), "jail" (every VMM jailed),
 * "guest_aslr" (ztee_sandbox_options.guest_aslr), "gate" (the control plane:
 * ztee_policy_*, ztee_audit_*, ztee_gate_*), "exec_input" (ztee_input_*,
 * ztee_exec_options.input, ztee_cancel_signal). */
ZTEE_API int ztee_has_feature(const char *feature);

/* Releases memory returned by the library (file contents). NULL-safe. */
ZTEE_API void ztee_free(void *ptr);

/* ---- runtime ------------------------------------------------------------ */

typedef struct ztee_runtime ztee_runtime;

typedef struct ztee_runtime_options {
  uint32_t struct_size;
  const char *state_dir;  /* NULL: $ZTEE_STATE_DIR or /run/ztee (root) */
  const char *image_dir;  /* NULL: $ZTEE_IMAGE_DIR or the default image */
  const char *backend;    /* NULL or "auto", "qemu" */
  const char *qemu_binary;/* NULL: $ZTEE_QEMU or qemu-system-x86_64 on PATH */
  /* NULL: $ZTEE_ACCEL, else "auto". "auto" picks KVM only on hardware KVM
   * (kvm_intel/kvm_amd) and TCG otherwise (ztee_runtime_backend says why);
   * "kvm" fails with ZTEE_E_BACKEND_UNAVAILABLE where it cannot run the
   * image (no /dev/kvm, or kvm_pvm, which runs only PVM guest kernels);
   * "tcg" always emulates. */
  const char *accel;
  /* ---- appended after 0.2 (0.2's size: offsetof(ztee_runtime_options, jail_disabled)) */
  /* 0 (default): every VMM runs in a per-sandbox jail (own uid, cgroup,
   * namespaces, pivot_root, seccomp); ztee_runtime_create then needs root
   * and fails with ZTEE_E_PERMISSION otherwise. Non-zero: no jail.
   * SECURITY: without the jail a VMM runs with the caller's uid and
   * privileges, and sandboxes cannot have a network (net_allow / net_dns
   * then fail with ZTEE_E_INVALID_ARGUMENT). Use only for development. */
  int32_t jail_disabled;
  /* ---- appended after 0.4 (0.4's size: offsetof(ztee_runtime_options, trusted_keys)) */
  /* Image signature policy: trusted_key_count strings, each the path of a
   * PEM public key (ECDSA P-256, "-----BEGIN PUBLIC KEY-----"; a cosign .pub
   * works) or the PEM text itself; borrowed for the call. When any is given,
   * ztee_sandbox_create and ztee_pool_create fail with ZTEE_E_IMAGE (naming
   * the file and the reason) before any VMM starts unless the image's
   * manifest.json.sig is one of these keys' signature of its manifest.json
   * (`ztee image sign`), every digest matches, and a template's
   * template.json records the image's current signature.
   * Errors at ztee_runtime_create: ZTEE_E_INVALID_ARGUMENT for an unreadable
   * or non-P-256 key, or a NULL array or entry with a count. */
  const char *const *trusted_keys;
  size_t trusted_key_count;
  /* Non-zero: refuse (ZTEE_E_IMAGE) an image without a passing
   * `ztee image gate` verdict recorded in its manifest. */
  int32_t require_vuln_gate;
} ztee_runtime_options;

#define ZTEE_RUNTIME_OPTIONS_INIT {sizeof(ztee_runtime_options), NULL, NULL, NULL, NULL, NULL, 0, NULL, 0, 0}

/* Zero-fills *opts and sets struct_size. size must be sizeof(*opts) as the
 * caller knows it. Errors: ZTEE_E_INVALID_ARGUMENT (opts NULL, size unknown). */
ZTEE_API ztee_status ztee_runtime_options_init(ztee_runtime_options *opts, size_t size);

/* Starts a runtime (one event-loop thread). opts may be NULL for defaults.
 * Also removes what crashed processes left in its state directory (see
 * `ztee gc`).
 * Errors: ZTEE_E_INVALID_ARGUMENT, ZTEE_E_BACKEND_UNAVAILABLE, ZTEE_E_IO,
 * ZTEE_E_PERMISSION (the jail needs root: see jail_disabled). */
ZTEE_API ztee_status ztee_runtime_create(const ztee_runtime_options *opts, ztee_runtime **out);

/* Drops the caller's reference. The event loop stops once every sandbox of
 * this runtime is freed too. NULL-safe. */
ZTEE_API void ztee_runtime_free(ztee_runtime *rt);

/* The backend and accelerator this runtime runs guests on, and why, e.g.
 * "qemu/kvm (hardware KVM: kvm_intel)" or "qemu/tcg (/dev/kvm is kvm_pvm,
 * which runs only PVM guest kernels: guests run under software emulation)".
 * The first word ("qemu/kvm", "qemu/tcg") is stable; the reason is prose.
 * Valid as long as rt; "" for NULL. Any thread. */
ZTEE_API const char *ztee_runtime_backend(const ztee_runtime *rt);

/* ---- sandbox ------------------------------------------------------------ */

typedef struct ztee_sandbox ztee_sandbox;

/* A host directory and where the guest sees it (ztee_sandbox_options.mounts).
 * Strings are borrowed for the call. */
typedef struct ztee_mount {
  const char *host_dir;   /* absolute path of an existing directory */
  const char *guest_path; /* e.g. "/workspace" */
} ztee_mount;

typedef struct ztee_sandbox_options {
  uint32_t struct_size;
  const char *image_dir;    /* NULL: the runtime's image */
  uint32_t vcpus;           /* 0: 1 */
  uint32_t memory_mib;      /* 0: 256 */
  uint32_t boot_timeout_ms; /* 0: 60000 */
  uint32_t exec_timeout_ms; /* default per-exec timeout; 0: none */
  uint64_t output_cap;      /* default per-exec output cap in bytes; 0: 16 MiB */
  /* ---- appended after 0.1 (0.1's size: offsetof(ztee_sandbox_options, template_dir)) */
  /* Start from this template directory (made by ztee_sandbox_snapshot)
   * instead of a cold boot: the clone maps the template's memory
   * copy-on-write and is re-identified (entropy, clock, hostname, id) before
   * it is returned. vcpus and memory_mib must match the template's (0 means
   * their defaults, 1 and 256, as always).
   * NULL: cold boot from the image.
   * SECURITY: the template's saved device state is loaded into the VMM and
   * its memory becomes the guest's: use only directories that no untrusted
   * user can write. */
  const char *template_dir;
  /* Non-zero: keep guest RAM in a file so ztee_sandbox_snapshot works.
   * 0 (default): anonymous memory; snapshots fail with
   * ZTEE_E_INVALID_ARGUMENT. */
  int32_t snapshottable;
  /* ---- appended after 0.2 (0.2's size: offsetof(ztee_sandbox_options, net_allow)) */
  /* Egress allowlist: net_allow_count strings "CIDR:PORT" or "CIDR:LO-HI",
   * each optionally followed by "/tcp" or "/udp" (default both); a bare
   * address is a /32; IPv4 only. E.g. "198.18.0.10:8080/tcp".
   * No entries and net_dns NULL (the default): no network at all, the guest
   * has no interface but lo. A malformed entry fails the create with
   * ZTEE_E_INVALID_ARGUMENT quoting it.
   * SECURITY: every entry widens what sandboxed code can reach. The sandbox
   * gets its own network namespace, TAP and nftables firewall that drops
   * everything else; the host's own addresses and other sandboxes are never
   * reachable, whatever is listed. Strings are borrowed for the call. */
  const char *const *net_allow;
  size_t net_allow_count;
  /* A resolver address the guest may query on port 53 (udp and tcp); it
   * becomes the guest's /etc/resolv.conf. NULL: no DNS. */
  const char *net_dns;
  /* ---- appended after 0.3 (0.3's size: offsetof(ztee_sandbox_options, guest_aslr)) */
  /* ASLR for the processes inside the guest: ZTEE_GUEST_ASLR_AUTO (0, the
   * default: off under software emulation, on with KVM), ZTEE_GUEST_ASLR_ON
   * or ZTEE_GUEST_ASLR_OFF; any other value is ZTEE_E_INVALID_ARGUMENT.
   * Under software emulation QEMU finds translated guest code by virtual
   * address, so with ASLR every run of a program translates its code anew
   * (a warm `true`: 25.6 ms with ASLR, 9 ms without). A clone follows this
   * field, not its template's setting.
   * SECURITY: guest ASLR only hardens programs inside this sandbox against
   * exploitation by data they read; it plays no part in isolating the guest
   * from the host or from other sandboxes. */
  int32_t guest_aslr;
  /* ---- appended after 0.5 (0.5's size: offsetof(ztee_sandbox_options, mounts)) */
  /* Host directories the guest sees read-only (at most 16): each is copied
   * into a read-only disk image when the sandbox is created and mounted at
   * its guest path under an overlay whose writes stay in guest memory. The
   * host directory is never written by the sandbox; changes come back only
   * through ztee_sandbox_export_changes. Needs a cold boot: not with
   * template_dir, snapshottable or a pool (ZTEE_E_INVALID_ARGUMENT).
   * Errors: ZTEE_E_NOT_FOUND (host_dir missing), ZTEE_E_INVALID_ARGUMENT (a
   * relative host_dir, a guest_path that is not absolute, has other than
   * [A-Za-z0-9._-] components or lies in /, /proc, /sys, /dev, /run or /tmp,
   * overlapping guest paths), ZTEE_E_CONFLICT (the tree changed while it
   * was copied).
   * SECURITY: everything in the directories becomes readable by the code in
   * the sandbox. */
  const ztee_mount *mounts;
  size_t mount_count;
  /* When set, destroying the sandbox first appends one JSON line to this
   * file: {"sandbox": id, "time_ns": n, "changes": [...]} (ztee_sandbox_diff
   * of the whole guest), or "error" when it could not be taken. NULL: none. */
  const char *diff_log;
  /* Output DLP on everything this sandbox returns, as ztee_gate_options.dlp
   * does for a gate: 1 scans every exec's stdout and stderr (streamed and
   * collected; streamed bytes are held back until a finding's redaction is
   * decided) and ztee_sandbox_read_file's bytes with the default detectors
   * (each finding replaced by "[REDACTED:<detector>]") and injection rules.
   * ztee_exec_result.dlp_findings / injection_anomalies count the hits.
   * 0: off. */
  int32_t dlp;
  /* Detector names whose findings withhold the output instead: the exec or
   * read then fails with ZTEE_E_PERMISSION (the command has run). Implies
   * dlp. An unknown name is ZTEE_E_INVALID_ARGUMENT. */
  const char *const *dlp_block;
  size_t dlp_block_count;
} ztee_sandbox_options;


#define ZTEE_GUEST_ASLR_AUTO 0
#define ZTEE_GUEST_ASLR_ON 1
#define ZTEE_GUEST_ASLR_OFF 2

#define ZTEE_SANDBOX_OPTIONS_INIT \
  {sizeof(ztee_sandbox_options), NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL, 0, NULL, 0, NULL, 0}

/* Like ztee_runtime_options_init, for ztee_sandbox_options. Besides
 * sizeof(ztee_sandbox_options), the size of every earlier published layout
 * is accepted (offsetof(ztee_sandbox_options, template_dir) for 0.1 callers,
 * offsetof(ztee_sandbox_options, net_allow) for 0.2 callers,
 * offsetof(ztee_sandbox_options, guest_aslr) for 0.3 callers,
 * offsetof(ztee_sandbox_options, mounts) for 0.5 callers);
 * a size in the middle of a field is ZTEE_E_INVALID_ARGUMENT. */
ZTEE_API ztee_status ztee_sandbox_options_init(ztee_sandbox_options *opts, size_t size);

/* Boots a microVM and waits until its guest agent is ready. opts may be NULL.
 * SECURITY: the sandbox runs arbitrary code; it has no network unless
 * opts->net_allow / net_dns name what it may reach.
 * Errors: ZTEE_E_IMAGE (with the path and `ztee image build` as the fix),
 * ZTEE_E_BACKEND_UNAVAILABLE, ZTEE_E_TIMEOUT, ZTEE_E_SANDBOX_FAILED. */
ZTEE_API ztee_status ztee_sandbox_create(ztee_runtime *rt, const ztee_sandbox_options *opts,
                                         ztee_sandbox **out);

/* Stops the VM and removes everything it left on the host, then checks.
 * A second call fails with ZTEE_E_CLOSED. */
ZTEE_API ztee_status ztee_sandbox_destroy(ztee_sandbox *sb);

/* Destroys the sandbox if still running, then frees the handle. NULL-safe. */
ZTEE_API void ztee_sandbox_free(ztee_sandbox *sb);

/* The sandbox id ("sb-…"); valid while the handle lives. "" for NULL. */
ZTEE_API const char *ztee_sandbox_id(const ztee_sandbox *sb);

/* One no-op round trip to the guest agent.
 * Errors: ZTEE_E_CLOSED, ZTEE_E_SANDBOX_FAILED, ZTEE_E_TIMEOUT. */
ZTEE_API ztee_status ztee_sandbox_ping(ztee_sandbox *sb);

/* Stops (pause) or restarts (resume) the guest's vCPUs. While paused, calls
 * that reach the guest (exec, files, ping) wait for a resume; their own
 * deadlines keep running.
 * Threads: any thread, e.g. pause from one thread while another's exec waits.
 * Errors: ZTEE_E_INVALID_ARGUMENT (sb NULL), ZTEE_E_CLOSED,
 * ZTEE_E_SANDBOX_FAILED. */
ZTEE_API ztee_status ztee_sandbox_pause(ztee_sandbox *sb);
ZTEE_API ztee_status ztee_sandbox_resume(ztee_sandbox *sb);

/* Turns the sandbox into a template in directory `dir` (an absolute path,
 * created by the call with mode 0700: it must not exist, its parent must):
 * pauses the VM, saves its device state, moves its memory file there and
 * writes the template's manifest (template.json). Start clones with
 * ztee_sandbox_options.template_dir or ztee_pool_options.template_dir.
 *
 * The sandbox is CONSUMED: after the call the VM is gone (a template must
 * stay pristine), and every later call on `sb` fails with ZTEE_E_CLOSED
 * (ztee_sandbox_id still works; the handle must still be freed with
 * ztee_sandbox_free). Exception: a failure with ZTEE_E_INVALID_ARGUMENT
 * (checked before anything happens) leaves the sandbox as it was. On any
 * failure `dir` is removed again.
 * Needs a sandbox created with snapshottable != 0 and no call running in it.
 * SECURITY: the template holds the guest's whole memory (anything a command
 * left in RAM, e.g. secrets) and every clone starts with it: keep `dir`
 * readable by trusted users only, and snapshot only sandboxes that ran
 * trusted code.
 * Errors: ZTEE_E_INVALID_ARGUMENT (sb or dir NULL, dir relative or existing,
 * not snapshottable, a call still running), ZTEE_E_IO, ZTEE_E_CLOSED,
 * ZTEE_E_SANDBOX_FAILED, ZTEE_E_TIMEOUT, ZTEE_E_UNSUPPORTED. */
ZTEE_API ztee_status ztee_sandbox_snapshot(ztee_sandbox *sb, const char *dir);

/* ---- exec --------------------------------------------------------------- */

/* Receives a chunk of output as the guest produces it. Runs on the runtime's
 * event-loop thread; must not block. `data` is valid only during the call. */
typedef void (*ztee_output_cb)(void *user_data, const char *data, size_t len);

typedef struct ztee_exec_options {
  uint32_t struct_size;
  const char *const *argv;   /* argv[0..argc-1]; or NULL and set shell */
  size_t argc;
  const char *shell;         /* run by /bin/sh -c when argv is NULL */
  const char *const *env;    /* "KEY=VALUE" strings */
  size_t env_count;
  const char *cwd;           /* NULL: "/" */
  const char *user;          /* NULL: root */
  const void *stdin_data;    /* NULL: stdin is /dev/null */
  size_t stdin_len;
  uint32_t timeout_ms;       /* 0: the sandbox default */
  uint64_t output_cap;       /* 0: the sandbox default */
  ztee_output_cb on_stdout;  /* if set, stdout is streamed, not collected */
  ztee_output_cb on_stderr;  /* if set, stderr is streamed, not collected */
  void *user_data;
  /* ---- appended after 0.3 (0.3's size: offsetof(ztee_exec_options, cancel)) */
  /* A cancel token (ztee_cancel_create): ztee_cancel_trigger from any thread
   * kills this command's process group; the exec then returns its result
   * with cancelled = 1. NULL: none. Borrowed: it must outlive the call. */
  struct ztee_cancel *cancel;
  /* ---- appended after 0.6 (0.6's size: offsetof(ztee_exec_options, input)) */
  /* Stdin written while the command runs (ztee_input_create); not together
   * with stdin_data (ZTEE_E_INVALID_ARGUMENT). One input serves one exec.
   * NULL: none. Borrowed: it must outlive the call. */
  struct ztee_input *input;
} ztee_exec_options;

#define ZTEE_EXEC_OPTIONS_INIT \
  {sizeof(ztee_exec_options), NULL, 0, NULL, NULL, 0, NULL, NULL, NULL, 0, 0, 0, NULL, NULL, NULL, NULL, NULL}

/* Like ztee_runtime_options_init, for ztee_exec_options. */
ZTEE_API ztee_status ztee_exec_options_init(ztee_exec_options *opts, size_t size);

typedef struct ztee_exec_result {
  int32_t exit_code;    /* -1 if ended by a signal */
  int32_t signal;       /* 0 if none */
  int32_t timed_out;    /* 1 if the timeout killed the process group */
  int32_t truncated;    /* 1 if output beyond the cap was dropped */
  uint64_t duration_us;
  char *stdout_data;    /* never NULL; NUL-terminated for convenience; may hold
                           NULs; empty when streamed through on_stdout */
  size_t stdout_len;
  char *stderr_data;
  size_t stderr_len;
  /* ---- appended after 0.3 (results are allocated by the library) */
  int32_t cancelled;    /* 1 if ztee_exec_options.cancel ended it (signal 9) */
  /* ---- appended after 0.5 */
  uint32_t dlp_findings;        /* ztee_sandbox_options.dlp: findings in stdout and stderr */
  uint32_t injection_anomalies; /* ztee_sandbox_options.dlp: injection rule hits */
} ztee_exec_result;

/* Runs a command in the sandbox and waits for it to end. On success *out is
 * a result to release with ztee_exec_result_free. A command that exits
 * non-zero is a success of this call (see exit_code).
 * SECURITY: the command runs with root privileges inside the guest.
 * Errors: ZTEE_E_INVALID_ARGUMENT, ZTEE_E_NOT_FOUND (command or cwd missing),
 * ZTEE_E_SANDBOX_FAILED (the guest died), ZTEE_E_CLOSED. */
ZTEE_API ztee_status ztee_sandbox_exec(ztee_sandbox *sb, const ztee_exec_options *opts,
                                       ztee_exec_result **out);

/* Releases a result of ztee_sandbox_exec and its buffers. NULL-safe. */
ZTEE_API void ztee_exec_result_free(ztee_exec_result *result);

/* A cancel token for execs (ztee_exec_options.cancel), e.g. to honour a
 * caller's deadline or an abort from another thread. One token may serve
 * several execs; once triggered it stays triggered, and an exec started
 * with a triggered token is cancelled as soon as it starts. */
typedef struct ztee_cancel ztee_cancel;

/* Errors: ZTEE_E_INVALID_ARGUMENT (out NULL), ZTEE_E_NO_MEMORY. */
ZTEE_API ztee_status ztee_cancel_create(ztee_cancel **out);

/* Kills the process group of every exec running with this token (SIGKILL in
 * the guest); each such ztee_sandbox_exec then returns ZTEE_OK with
 * cancelled = 1. Any thread, including a streaming callback; never blocks;
 * idempotent; NULL-safe. */
ZTEE_API void ztee_cancel_trigger(ztee_cancel *cancel);

/* 1 once triggered, else 0 (also for NULL). */
ZTEE_API int ztee_cancel_triggered(const ztee_cancel *cancel);

/* Frees the token; execs still running with it must have returned. NULL-safe. */
ZTEE_API void ztee_cancel_free(ztee_cancel *cancel);

/* Sends signal `sig` (1..64, the guest's Linux numbers: SIGINT 2, SIGUSR1
 * 10, SIGTERM 15, ...) to the process group of every exec running with this
 * token: an exec counts from the moment ztee_sandbox_exec is called (a
 * command that has not started in the guest yet gets the signal right after
 * its start). A token no exec has used yet keeps its signals (at most 64)
 * for the first exec that does. Otherwise, with no exec running (they have
 * ended), it does nothing and returns ZTEE_OK.
 * An exec a signal ends returns ZTEE_OK with `signal` set and cancelled = 0.
 * Any thread; never blocks. Errors: ZTEE_E_INVALID_ARGUMENT (NULL token,
 * sig outside 1..64). Since LIBZTEE_0.7 (feature "exec_input"). */
ZTEE_API ztee_status ztee_cancel_signal(ztee_cancel *cancel, int sig);

/* Stdin for one exec, written while it runs (ztee_exec_options.input), from
 * any thread. Bytes written before the exec starts are kept and sent when it
 * does; ztee_input_close ends the command's stdin (EOF) after them.
 * Since LIBZTEE_0.7 (feature "exec_input"). */
typedef struct ztee_input ztee_input;

/* Errors: ZTEE_E_INVALID_ARGUMENT (out NULL), ZTEE_E_NO_MEMORY. */
ZTEE_API ztee_status ztee_input_create(ztee_input **out);

/* Queues `len` bytes for the command's stdin; never blocks. At most
 * ZTEE_INPUT_MAX_BUFFERED bytes wait on the host (until the sandbox's agent
 * connection takes them); a write that would pass that writes nothing and
 * fails with ZTEE_E_IO and errno EAGAIN: retry once ztee_input_buffered is
 * lower (a single write larger than the bound never fits: split it). The
 * guest takes at most 1 MiB more than the command has read; the rest waits
 * on the host, so a command that stops reading makes writes fail with
 * EAGAIN, not memory grow.
 * Errors: ZTEE_E_INVALID_ARGUMENT (NULL input, data NULL with len > 0, or
 * after ztee_input_close), ZTEE_E_CLOSED (the exec has ended or never
 * started), ZTEE_E_IO/EAGAIN (bound reached). len 0: ZTEE_OK, nothing sent. */
ZTEE_API ztee_status ztee_input_write(ztee_input *input, const void *data, size_t len);

#define ZTEE_INPUT_MAX_BUFFERED ((size_t)1 << 20)

/* Ends the command's stdin once what was written has been sent. Any thread;
 * idempotent; NULL-safe; a no-op after the exec ended. */
ZTEE_API void ztee_input_close(ztee_input *input);

/* Bytes written and not yet passed to the guest (0 for NULL). */
ZTEE_API size_t ztee_input_buffered(const ztee_input *input);

/* Frees the input; the exec using it must have returned. NULL-safe. */
ZTEE_API void ztee_input_free(ztee_input *input);

/* ---- files -------------------------------------------------------------- */

#define ZTEE_FILE_TYPE_FILE 0
#define ZTEE_FILE_TYPE_DIR 1
#define ZTEE_FILE_TYPE_SYMLINK 2
#define ZTEE_FILE_TYPE_OTHER 3

typedef struct ztee_file_info {
  const char *name;   /* owned by the enclosing result */
  int32_t type;       /* ZTEE_FILE_TYPE_* */
  uint32_t mode;
  uint64_t size;
  int64_t mtime_ns;
} ztee_file_info;

typedef struct ztee_dir_list {
  ztee_file_info *entries;
  size_t count;
} ztee_dir_list;

/* File operations. Paths are guest paths; NULL sb or path fails with
 * ZTEE_E_INVALID_ARGUMENT. Errors: ZTEE_E_NOT_FOUND (path or its parent
 * missing), ZTEE_E_GUEST (another guest OS error; sys_errno is the guest's
 * errno), ZTEE_E_CLOSED, ZTEE_E_SANDBOX_FAILED.
 * SECURITY: names and contents read back come from the guest (untrusted). */

/* Writes (creates or replaces) a file in the guest. mode 0: 0644.
 * data may be NULL when len is 0. */
ZTEE_API ztee_status ztee_sandbox_write_file(ztee_sandbox *sb, const char *path, const void *data,
                                             size_t len, uint32_t mode);

/* Reads a whole file. *data (release with ztee_free) is NUL-terminated;
 * *data and *len are written only on success.
 * max_bytes 0: 64 MiB. Larger files fail with ZTEE_E_INVALID_ARGUMENT. */
ZTEE_API ztee_status ztee_sandbox_read_file(ztee_sandbox *sb, const char *path, uint64_t max_bytes,
                                            void **data, size_t *len);

/* Describes one path (name is the path). *out is released with
 * ztee_file_info_free. */
ZTEE_API ztee_status ztee_sandbox_stat(ztee_sandbox *sb, const char *path, ztee_file_info **out);
ZTEE_API void ztee_file_info_free(ztee_file_info *info); /* NULL-safe */

/* Lists a directory (entries named without their directory; order as the
 * guest returns it). *out is released with ztee_dir_list_free, which also
 * releases every entry's name. entries is NULL when count is 0. */
ZTEE_API ztee_status ztee_sandbox_list_dir(ztee_sandbox *sb, const char *path, ztee_dir_list **out);
ZTEE_API void ztee_dir_list_free(ztee_dir_list *list); /* NULL-safe */

/* ---- workspaces: diff and reviewed export --------------------------------- */

#define ZTEE_CHANGE_CREATED 0
#define ZTEE_CHANGE_MODIFIED 1
#define ZTEE_CHANGE_DELETED 2

/* One change in a guest's writable layer. Strings are owned by the list
 * that holds the entry. */
typedef struct ztee_change {
  int32_t kind;            /* ZTEE_CHANGE_* */
  int32_t type;            /* ZTEE_FILE_TYPE_* (for a deletion: the type it had) */
  const char *path;        /* in a mount: relative to it; else absolute. May hold any byte but NUL */
  const char *mount;       /* the mount's guest path; "" for the guest's own filesystem */
  uint64_t size;           /* files and symlinks; 0 for deletions */
  uint32_t mode;           /* permission bits with setuid/setgid/sticky (07777); 0 for deletions */
  const char *sha256;      /* regular files: 64 hex digits; else "" */
  const char *link_target; /* symlinks; else "" */
} ztee_change;

typedef struct ztee_change_list {
  ztee_change *entries; /* NULL when count is 0 */
  size_t count;
} ztee_change_list;

/* What changed in the guest's writable layers since it booted (or, for a
 * clone, since its template was made), sorted by mount and path. mount: a
 * mount's guest path for that mount only, "/" for the guest's own
 * filesystem only, NULL or "" for both. *out is released with
 * ztee_change_list_free.
 * SECURITY: the list is the guest's claim; ztee_sandbox_export_changes
 * checks every entry again.
 * Errors: ZTEE_E_NOT_FOUND (no such mount), ZTEE_E_PROTOCOL (a malformed
 * reply: the sandbox is failed), ZTEE_E_GUEST. */
ZTEE_API ztee_status ztee_sandbox_diff(ztee_sandbox *sb, const char *mount, ztee_change_list **out);
ZTEE_API void ztee_change_list_free(ztee_change_list *list); /* NULL-safe */

typedef struct ztee_export_options {
  uint32_t struct_size;
  /* The mount's guest path; NULL when the sandbox has exactly one mount. */
  const char *mount;
  /* Relative paths to export (a directory selects everything below it);
   * each must name a change. path_count 0: every change. */
  const char *const *paths;
  size_t path_count;
  /* Asked once per selected change, on the calling thread, before anything
   * is written: non-zero approves it. NULL: all selected are approved. */
  int (*approve)(const ztee_change *change, void *user_data);
  void *user_data;
  /* NULL: write into the mount's host directory, where every touched path
   * must be as it was when the sandbox started. Else an existing directory
   * that receives the created and modified entries (deletions are reported
   * in skipped_deletions only). An earlier in-place export's writes are not
   * conflicts for a later one. */
  const char *dest_dir;
} ztee_export_options;

#define ZTEE_EXPORT_OPTIONS_INIT {sizeof(ztee_export_options), NULL, NULL, 0, NULL, NULL, NULL}
ZTEE_API ztee_status ztee_export_options_init(ztee_export_options *opts, size_t size);

typedef struct ztee_export_result {
  ztee_change_list applied;           /* written to the host */
  ztee_change_list declined;          /* selected but not approved */
  ztee_change_list skipped_deletions; /* dest_dir only: deletions recorded, not carried out */
} ztee_export_result;

/* Applies the approved part of a mount's diff to the host. Every check runs
 * before the first write, and a failing one applies nothing:
 * ZTEE_E_CONFLICT names each host path changed since the sandbox started;
 * ZTEE_E_PERMISSION a path with "..", a symlink on the way or leaving the
 * directory, a device or fifo, setuid/setgid bits, a hard-linked host file,
 * or content that no longer matches the diff's sha256. Each file is written
 * to a temporary, synced and renamed into place. *out is released with
 * ztee_export_result_free.
 * SECURITY: this is the one way data written in a sandbox reaches a host
 * directory: approve only what was reviewed. */
ZTEE_API ztee_status ztee_sandbox_export_changes(ztee_sandbox *sb, const ztee_export_options *opts,
                                                 ztee_export_result **out);
ZTEE_API void ztee_export_result_free(ztee_export_result *result); /* NULL-safe */

/* A unified diff (diff -u) of a mount's text changes against its host
 * directory, for review (binary files are named, not shown). paths as in
 * ztee_export_options. *out (NUL-terminated) is released with ztee_free. */
ZTEE_API ztee_status ztee_sandbox_patch(ztee_sandbox *sb, const char *mount, const char *const *paths,
                                        size_t path_count, char **out);

/* Removes a file or an empty directory; recursive != 0 removes a tree. */
ZTEE_API ztee_status ztee_sandbox_remove(ztee_sandbox *sb, const char *path, int recursive);
/* Creates a directory; parents != 0 also creates missing parents (and an
 * existing directory is then not an error). mode 0: 0755. */
ZTEE_API ztee_status ztee_sandbox_mkdir(ztee_sandbox *sb, const char *path, int parents, uint32_t mode);

/* ---- pool --------------------------------------------------------------- */

/* A warm pool: READY sandboxes kept waiting, refilled in the background on
 * the runtime's event-loop thread (by default as clones of a snapshot
 * template, so a refill costs a state restore, not a boot). A leased sandbox
 * belongs to the caller alone; it is destroyed when freed and never returned
 * to the pool. Every function here is thread-safe; ztee_pool_lease may run
 * in many threads at once and never hands a sandbox out twice. */
typedef struct ztee_pool ztee_pool;

typedef struct ztee_pool_options {
  uint32_t struct_size;
  /* Options of every sandbox of the pool (vcpus, memory, image, limits).
   * NULL: defaults. Borrowed for the call. Its template_dir must be NULL
   * (use the pool's template_dir below). */
  const ztee_sandbox_options *sandbox;
  /* Template to clone from (made by ztee_sandbox_snapshot). NULL: the pool
   * boots one sandbox, snapshots it into its own template under the
   * runtime's state dir, and clones that.
   * SECURITY: as ztee_sandbox_options.template_dir. */
  const char *template_dir;
  int32_t cold_boot;           /* non-zero: every sandbox is a cold boot (no
                                  template); 0: clones of a snapshot */
  uint32_t min_ready;          /* READY sandboxes kept waiting; 0: 2 */
  uint32_t max_total;          /* ready + starting + leased, at most; 0: 8 */
  uint32_t refill_concurrency; /* sandboxes started at once; 0: 1 */
  uint32_t lease_timeout_ms;   /* ztee_pool_lease's deadline when it passes 0;
                                  0: 30000 */
  /* ---- appended after 0.3 (0.3's size: offsetof(ztee_pool_options, warm_up)) */
  /* Run by /bin/sh -c in each new sandbox, once, before it counts as READY;
   * it must exit 0 within the sandbox's boot timeout, else that start counts
   * as failed (ztee_pool_last_error quotes it). NULL or "": `true`. Under
   * software emulation a sandbox's first run of a program translates its
   * code: warming with what lease holders will run (e.g. "python3 -c pass")
   * makes their first run as fast as a later one. A pool that makes its own
   * template runs it there too, before the snapshot; a failure there fails
   * ztee_pool_create. What it writes stays in the sandbox a holder gets.
   * Borrowed for the call. */
  const char *warm_up;
} ztee_pool_options;

#define ZTEE_POOL_OPTIONS_INIT {sizeof(ztee_pool_options), NULL, NULL, 0, 0, 0, 0, 0, NULL}

/* Like ztee_runtime_options_init, for ztee_pool_options (the 0.3 size,
 * offsetof(ztee_pool_options, warm_up), is accepted too). */
ZTEE_API ztee_status ztee_pool_options_init(ztee_pool_options *opts, size_t size);

/* Creates a pool and waits until its template exists (booting and
 * snapshotting a sandbox when template_dir is NULL and cold_boot is 0); it
 * does not wait until min_ready sandboxes are READY (watch
 * ztee_pool_stats). opts may be NULL for defaults. The pool keeps `rt`
 * alive. *out is released with ztee_pool_free.
 * SECURITY: the pool runs up to max_total VMs that run arbitrary code.
 * Errors: ZTEE_E_INVALID_ARGUMENT (bad struct_size, cold_boot with
 * template_dir, max_total < min_ready, sandbox->template_dir set),
 * ZTEE_E_IMAGE (image or template missing, corrupt or not matching vcpus /
 * memory), ZTEE_E_BACKEND_UNAVAILABLE, ZTEE_E_TIMEOUT, ZTEE_E_SANDBOX_FAILED
 * (the template's sandbox failed), ZTEE_E_IO. */
ZTEE_API ztee_status ztee_pool_create(ztee_runtime *rt, const ztee_pool_options *opts,
                                      ztee_pool **out);

/* Hands out a READY sandbox, waiting up to deadline_ms milliseconds for one
 * (0: the pool's lease_timeout_ms). *out is the caller's alone: use it like
 * any sandbox and release it with ztee_sandbox_free (or destroy it); it is
 * never recycled. It keeps working after the pool is closed or freed.
 * Threads: any thread; concurrent leases never share a sandbox.
 * Errors: ZTEE_E_INVALID_ARGUMENT (pool or out NULL), ZTEE_E_TIMEOUT (none
 * became READY in time; the message says whether the pool is backing off
 * after start failures, and ztee_pool_last_error says why they failed),
 * ZTEE_E_CLOSED (the pool was closed). */
ZTEE_API ztee_status ztee_pool_lease(ztee_pool *pool, uint32_t deadline_ms, ztee_sandbox **out);

/* The pool's counters. The caller sets out->struct_size (ZTEE_POOL_STATS_INIT)
 * and the library fills the fields that fit in that size: callers built
 * against an older ztee.h get the fields they know. The counts are one
 * consistent snapshot. */
typedef struct ztee_pool_stats {
  uint32_t struct_size;
  uint32_t ready;                /* READY and waiting to be leased */
  uint32_t starting;             /* booting or restoring */
  uint32_t leased;               /* handed out and not yet destroyed */
  uint32_t consecutive_failures; /* start failures since the last success */
  int32_t backing_off;           /* 1: refills paused after repeated failures */
  uint64_t created;              /* sandboxes that became READY, ever */
  uint64_t failed;               /* sandboxes that failed to start (discarded) */
  uint64_t leases;               /* successful ztee_pool_lease calls */
  uint64_t lease_timeouts;       /* leases that failed with ZTEE_E_TIMEOUT */
  /* Leases by time waited: < 10 us, < 100 us, < 1 ms, < 10 ms, < 100 ms,
   * < 1 s, < 10 s, >= 10 s. */
  uint64_t lease_wait_hist[8];
} ztee_pool_stats;

#define ZTEE_POOL_STATS_INIT {sizeof(ztee_pool_stats), 0, 0, 0, 0, 0, 0, 0, 0, 0, {0}}

/* Fills *out (see ztee_pool_stats); a closed pool still reports its counts.
 * Errors: ZTEE_E_INVALID_ARGUMENT (pool or out NULL, out->struct_size 0 or
 * not a size this library knows). */
ZTEE_API ztee_status ztee_pool_stats_get(const ztee_pool *pool, ztee_pool_stats *out);

/* The pool's latest sandbox start failure as a message ("" if none so far),
 * the reason behind ztee_pool_stats.failed and backing_off. On success *out
 * is a NUL-terminated string to release with ztee_free.
 * Errors: ZTEE_E_INVALID_ARGUMENT (pool or out NULL). */
ZTEE_API ztee_status ztee_pool_last_error(const ztee_pool *pool, char **out);

/* Destroys the READY sandboxes and stops refilling; leases waiting in other
 * threads and later leases fail with ZTEE_E_CLOSED. Leased sandboxes stay
 * with their holders. Blocks while sandboxes that are still starting are
 * stopped (at most about their boot timeout). A second call is a no-op.
 * NULL-safe. */
ZTEE_API void ztee_pool_close(ztee_pool *pool);

/* Closes the pool (see ztee_pool_close) and frees the handle; a pool that
 * a gate still uses (ztee_gate_options.pool) is closed when the last such
 * gate is freed instead. Leased sandboxes keep working and are freed on
 * their own. NULL-safe. Like every
 * *_free, it must not run while another thread still uses the handle (e.g.
 * blocks in ztee_pool_lease): call ztee_pool_close first, which makes such
 * calls return ZTEE_E_CLOSED, and free the pool once they have returned. */
ZTEE_API void ztee_pool_free(ztee_pool *pool);

/* ---- control plane: policy, audit log, gate (0.5) ---------------------- */

/* The control plane decides whether a tool call of an agent runs and with
 * which limits, records what happened, and keeps secret values out of
 * everything the caller sees. A policy sorts each call into a risk tier
 * L0..L5 whose action is run, audit (run and record), approve (run only once
 * an approver says yes before a deadline; no answer is a denial) or deny. A
 * call that no rule matches is denied (fail closed). ztee_has_feature("gate")
 * is 1 where these functions exist.
 *
 * SECURITY: the gate cannot tell a benign program from a malicious one that
 * matches the same rule: containing what runs is the microVM's job. A policy
 * is trusted input (its author decides what runs without asking). */

#define ZTEE_ACTION_RUN 0     /* runs */
#define ZTEE_ACTION_AUDIT 1   /* runs; meant for calls the log must show */
#define ZTEE_ACTION_APPROVE 2 /* runs once an approver says yes */
#define ZTEE_ACTION_DENY 3    /* never runs */

/* One request of an agent to run a tool: what ztee_policy_classify sorts and
 * ztee_gate_call runs. An options-style struct: set struct_size
 * (ZTEE_TOOL_CALL_INIT or ztee_tool_call_init); zero fields are unset.
 * Every pointer is borrowed for the call. Arrays may be NULL only when their
 * count is 0; a NULL entry is ZTEE_E_INVALID_ARGUMENT. */
typedef struct ztee_tool_call {
  uint32_t struct_size;
  const char *tool;            /* the tool's name, e.g. "python" (required) */
  const char *command;         /* a shell command (/bin/sh -c), or NULL and */
  const char *const *argv;     /* an argv[0..argc-1]; exactly one of the two */
  size_t argc;
  /* "KEY=VALUE" strings (a key at most once). A value "secret://NAME" is
   * resolved by the gate's resolvers on the host and scrubbed from output. */
  const char *const *env;
  size_t env_count;
  /* Files written into the sandbox before the command runs:
   * file_paths[i] (absolute guest path, each at most once) gets
   * file_contents[i], file_lengths[i] bytes long (file_lengths NULL: every
   * content is a NUL-terminated string). A content that is exactly
   * "secret://NAME" is replaced by the secret (and the file made 0600).
   * Paths count as writes for the policy's writes_files. */
  const char *const *file_paths;
  const char *const *file_contents;
  const size_t *file_lengths;
  size_t file_count;
  const char *cwd;             /* NULL: "/" */
  const char *user;            /* NULL: root; else a guest account name or uid */
  const void *stdin_data;      /* NULL: stdin is /dev/null */
  size_t stdin_len;
  const char *const *writes;   /* guest paths the call says it writes */
  size_t writes_count;
  /* Hosts/CIDRs the call asks to reach; each must be in its tier's
   * "network" list, else the call is denied. A call with network never
   * runs in a pooled sandbox.
   * SECURITY: what is allowed here becomes the sandbox's egress allowlist. */
  const char *const *network;
  size_t network_count;
  const char *const *labels;   /* free-form, e.g. "pii", "readonly" */
  size_t labels_count;
  const char *trace_id;        /* recorded with every event; NULL: "call-<random>" */
  /* Streamed output, scrubbed of secret values (as with
   * ztee_exec_options.on_stdout: runs on the runtime's event-loop thread,
   * must not block; a stream with a callback is not collected). */
  ztee_output_cb on_stdout;
  ztee_output_cb on_stderr;
  void *user_data;
  struct ztee_cancel *cancel;  /* as ztee_exec_options.cancel; NULL: none */
} ztee_tool_call;

#define ZTEE_TOOL_CALL_INIT                                                                  \
  {sizeof(ztee_tool_call), NULL, NULL, NULL, 0, NULL, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL, \
   0, NULL, 0, NULL, 0, NULL, 0, NULL, NULL, NULL, NULL, NULL}

/* Like ztee_runtime_options_init, for ztee_tool_call. */
ZTEE_API ztee_status ztee_tool_call_init(ztee_tool_call *call, size_t size);

/* ---- policy ---- */

/* A parsed, immutable policy. Thread-safe: any number of threads may
 * classify with one policy at once. */
typedef struct ztee_policy ztee_policy;

/* Parses a JSON policy of len bytes (json need not be NUL-terminated):
 *   {"version": 1,
 *    "tiers": {"L0": {"action": "run", "timeout_ms": 30000}, ...,
 *              "L4": {"action": "approve", "approval_timeout_ms": 300000},
 *              "L5": {"action": "deny"}},
 *    "rules": [{"name": "reads", "tool": ["read_*"], "tier": "L0"}, ...]}
 * A tier's action is "run", "audit", "approve" or "deny"; its limits are
 * timeout_ms, output_cap, memory_mib, network (list) and
 * approval_timeout_ms. A rule matches when every condition it sets holds:
 * tool (fnmatch globs), command (an RE2 regex searched in the command, or
 * argv joined with spaces), network (bool), writes_files (bool), labels (any
 * of); the first matching rule decides. See ztee_policy_default_json().
 * *out is released with ztee_policy_free.
 * Errors: ZTEE_E_INVALID_ARGUMENT (json or out NULL; malformed JSON, unknown
 * keys, bad tiers or actions, invalid regexes, rules naming an undefined
 * tier: the message is "policy: line N: reason"). */
ZTEE_API ztee_status ztee_policy_parse(const char *json, size_t len, ztee_policy **out);

/* Reads and parses a policy file (messages: "PATH: line N: reason").
 * Errors: as ztee_policy_parse; ZTEE_E_NOT_FOUND (cannot open path). */
ZTEE_API ztee_status ztee_policy_load(const char *path, ztee_policy **out);

/* The policy that ships with libztee: read-only tools L0 run; internal
 * writes L2 audit; code execution, destructive commands and writes, network
 * and PII labels L4 approve; anything else denied.
 * Errors: ZTEE_E_INVALID_ARGUMENT (out NULL), ZTEE_E_NO_MEMORY. */
ZTEE_API ztee_status ztee_policy_default(ztee_policy **out);

/* The JSON text of the default policy (a starting point for your own).
 * Static storage, NUL-terminated; never NULL. */
ZTEE_API const char *ztee_policy_default_json(void);

/* Drops the caller's reference; gates created with it keep their own.
 * NULL-safe. */
ZTEE_API void ztee_policy_free(ztee_policy *policy);

/* A policy's verdict on one tool call. Allocated by the library; release
 * with ztee_decision_free. */
typedef struct ztee_decision {
  int32_t tier;       /* 0..5 (L0..L5); 5 when no rule matched */
  int32_t action;     /* ZTEE_ACTION_* */
  int32_t rule_index; /* index of the matching rule in "rules"; -1: none
                         (the call is denied: fail closed) */
  char *rule;         /* the matching rule's name; "" when none; never NULL */
  char *reason;       /* one line for logs, e.g. "rule \"reads\" -> L0 run" */
} ztee_decision;

/* Classifies a tool call (nothing runs; secret references are not
 * resolved; output callbacks and cancel are ignored). Thread-safe.
 * Errors: ZTEE_E_INVALID_ARGUMENT (NULL argument, bad struct_size, a NULL
 * array entry, a malformed env entry). */
ZTEE_API ztee_status ztee_policy_classify(const ztee_policy *policy, const ztee_tool_call *call,
                                          ztee_decision **out);

/* Releases a decision and its strings. NULL-safe. */
ZTEE_API void ztee_decision_free(ztee_decision *decision);

/* ---- audit log ---- */

/* An append-only, hash-chained JSON Lines file. Every record is one line
 * {"seq":N,"ts":"<UTC>","trace":"...","event":"...",<fields>,"prev":"<sha256
 * of the previous line>"[,"hmac":"<HMAC-SHA256>"]}. Appends from several
 * threads and processes to one file keep one chain (flock). Thread-safe. */
typedef struct ztee_audit_log ztee_audit_log;

#define ZTEE_DURABILITY_FSYNC 0 /* fdatasync after every record (default) */
#define ZTEE_DURABILITY_BATCH 1 /* fdatasync at most every batch_ms: power
                                   loss loses up to batch_ms of records */
#define ZTEE_DURABILITY_NONE 2  /* left to the kernel: power loss loses what
                                   the page cache held */

typedef struct ztee_audit_options {
  uint32_t struct_size;
  const char *path;        /* the log file, created 0600 if missing (required) */
  int32_t durability;      /* ZTEE_DURABILITY_*; other values are
                              ZTEE_E_INVALID_ARGUMENT */
  uint32_t batch_ms;       /* ZTEE_DURABILITY_BATCH's interval; 0: 100 */
  /* Non-empty: every record also carries an HMAC-SHA256 with this key, so
   * ztee_audit_verify with the key also detects a rewritten chain. Copied. */
  const void *hmac_key;
  size_t hmac_key_len;
  /* > 0: past this many bytes the file is renamed to <path>.<n> (n = 1, 2,
   * ...) and a new one started; the chain continues across files. */
  uint64_t rotate_bytes;
} ztee_audit_options;

#define ZTEE_AUDIT_OPTIONS_INIT {sizeof(ztee_audit_options), NULL, 0, 0, NULL, 0, 0}

/* Like ztee_runtime_options_init, for ztee_audit_options. */
ZTEE_API ztee_status ztee_audit_options_init(ztee_audit_options *opts, size_t size);

/* Opens (creating if missing) the log at opts->path; appends continue the
 * chain already in the file. *out is released with ztee_audit_free.
 * Errors: ZTEE_E_INVALID_ARGUMENT (opts, path or out NULL, bad struct_size
 * or durability, hmac_key NULL with a length), ZTEE_E_IO (cannot open). */
ZTEE_API ztee_status ztee_audit_open(const ztee_audit_options *opts, ztee_audit_log **out);

/* Appends one record of `event` (required, non-empty) for trace_id (NULL:
 * ""). fields_json_inner is the inner part of a JSON object, e.g.
 * "\"user\":\"alice\",\"n\":3" (NULL or "": none): it must be valid JSON
 * once wrapped in braces, on one line (no CR or LF bytes), and must not use
 * the record's own keys (seq, ts, trace, event, prev, hmac). On success
 * *seq_out (if not NULL) is the record's sequence number. With
 * ZTEE_DURABILITY_FSYNC the record is on disk when this returns.
 * Threads: any; blocks for the disk write (and sync).
 * Errors: ZTEE_E_INVALID_ARGUMENT (log or event NULL, event empty, fields
 * not valid JSON, on several lines or using a reserved key), ZTEE_E_IO
 * (write or sync failed; nothing was appended). */
ZTEE_API ztee_status ztee_audit_append(ztee_audit_log *log, const char *event, const char *trace_id,
                                       const char *fields_json_inner, uint64_t *seq_out);

/* fdatasync now (ZTEE_DURABILITY_BATCH / NONE: make everything appended so
 * far durable). Errors: ZTEE_E_INVALID_ARGUMENT (log NULL), ZTEE_E_IO. */
ZTEE_API ztee_status ztee_audit_flush(ztee_audit_log *log);

/* Drops the caller's reference; the file is synced (unless
 * ZTEE_DURABILITY_NONE) and closed once no gate uses it either. NULL-safe. */
ZTEE_API void ztee_audit_free(ztee_audit_log *log);

/* What ztee_audit_verify found. Allocated by the library; release with
 * ztee_audit_report_free. */
typedef struct ztee_audit_report {
  int32_t ok;       /* 1: every record present, in order, unedited */
  uint64_t records; /* records checked */
  char *problem;    /* the first problem, e.g. "record 7 (F line 7): ..."; ""
                       when ok; never NULL */
} ztee_audit_report;

/* Verifies one chain across files[0..n-1] given oldest first (a rotated
 * log: path.1, path.2, ..., path). With a key (key_len > 0) every record's
 * HMAC is checked too, which also detects a rewritten chain. A removed tail
 * cannot be seen from the files alone: compare the last seq with what
 * ztee_audit_append or the gate reported. A log that fails verification is
 * a successful call with ok = 0.
 * Errors: ZTEE_E_INVALID_ARGUMENT (files or out NULL, n 0, a NULL entry,
 * key NULL with key_len > 0). */
ZTEE_API ztee_status ztee_audit_verify(const char *const *files, size_t n, const void *key,
                                       size_t key_len, ztee_audit_report **out);

/* Releases a report. NULL-safe. */
ZTEE_API void ztee_audit_report_free(ztee_audit_report *report);

/* ---- gate ---- */

/* Runs tool calls under a policy: classify -> ask for approval when the tier
 * says so -> resolve secret references -> run in a fresh (or pooled)
 * sandbox that is destroyed afterwards -> scrub secrets from the output,
 * recording every step in the audit log. Thread-safe: calls from many
 * threads run at once. */
typedef struct ztee_gate ztee_gate;

/* Asks whether a call of an approve tier may run. Runs on the thread that
 * called ztee_gate_call, which then waits. Answer with ztee_gate_approve or
 * ztee_gate_deny: at once from inside the callback, or later from any
 * thread, within deadline_ms (the tier's approval_timeout_ms; no answer by
 * then denies the call). token and description_json are valid only during
 * the callback (copy the token to answer later). description_json is an
 * object with tool, text, env_keys, cwd, user, writes, network, labels,
 * tier ("L4"), rule and trace; never secret values. Must not unwind. */
typedef void (*ztee_approver_cb)(void *user_data, ztee_gate *gate, const char *token,
                                 const char *description_json, uint32_t deadline_ms);

/* Where a secret resolver callback puts the value it found. */
typedef struct ztee_secret_value ztee_secret_value;

/* Looks up the secret `name` (from "secret://NAME"). On success it calls
 * ztee_secret_value_set(out, ...) and returns ZTEE_OK; for a name it does
 * not know it returns ZTEE_E_NOT_FOUND (the next resolver is asked); any
 * other status fails the call with that status. Runs on the thread that
 * called ztee_gate_call; may block (e.g. ask a vault); must not unwind. */
typedef ztee_status (*ztee_secret_cb)(void *user_data, const char *name, ztee_secret_value *out);

/* Sets the value a ztee_secret_cb found: len bytes from data (copied; not
 * empty). Call only inside the callback, with its `out`. A second call
 * replaces the value.
 * Errors: ZTEE_E_INVALID_ARGUMENT (out or data NULL, len 0). */
ZTEE_API ztee_status ztee_secret_value_set(ztee_secret_value *out, const void *data, size_t len);

typedef struct ztee_gate_options {
  uint32_t struct_size;
  /* NULL: the default policy (ztee_policy_default). Borrowed: the gate keeps
   * its own reference, so the caller may free it at once. */
  ztee_policy *policy;
  /* NULL: nothing is recorded (not recommended). The gate keeps its own
   * reference. Its append errors do not fail calls. */
  ztee_audit_log *audit;
  /* NULL: every call of an approve tier is denied. */
  ztee_approver_cb approver;
  void *approver_data;
  /* Secret resolvers, asked in this order; the first that knows the name
   * wins, ZTEE_E_NOT_FOUND falls through to the next. None set: a secret
   * reference fails the call with ZTEE_E_NOT_FOUND.
   * SECURITY: a resolved value reaches the sandboxed process (env or file);
   * it is scrubbed (with its hex and base64 forms) from output, errors and
   * the log, but the process may leak it in other forms. */
  ztee_secret_cb resolver;
  void *resolver_data;
  const char *secrets_dir;        /* a file per secret: <dir>/NAME (one
                                     trailing newline dropped); NULL: none */
  const char *secrets_env_prefix; /* the host variable <prefix>NAME, e.g.
                                     "ZTEE_SECRET_"; NULL: none */
  /* Options of the sandboxes of calls the pool does not serve (NULL:
   * defaults); a tier's memory_mib overrides memory_mib. Copied. */
  const ztee_sandbox_options *sandbox;
  /* NULL: every call boots a sandbox. Else calls without network and
   * without a tier memory_mib lease from it (falling back to a boot when
   * the lease fails). The gate keeps the pool open until the gate is freed,
   * even past ztee_pool_free (not past ztee_pool_close). */
  ztee_pool *pool;
  /* ---- appended after the first 0.5 layout (its size: offsetof(ztee_gate_options, dlp)) */
  /* Output DLP: 1 scans every call's stdout and stderr (streamed and
   * collected, after secrets are scrubbed) with libztee's default detectors
   * (cards, IBANs, SSNs, e-mail, phones, private keys, cloud and SaaS
   * tokens, JWTs: each finding replaced by "[REDACTED:<detector>]") and
   * injection rules (chat-template role markers, tool-call JSON, template
   * placeholders, "ignore previous instructions", reported; invisible and
   * bidi Unicode and ANSI escapes, stripped). Findings are recorded in the
   * audit log without their values. 0: off. */
  int32_t dlp;
  /* Detector names (e.g. "card", "private_key") whose findings block the
   * call's output instead: the result then has blocked = 1, empty
   * stdout/stderr and the reason in denial. Implies dlp. An unknown name
   * is ZTEE_E_INVALID_ARGUMENT at ztee_gate_create. */
  const char *const *dlp_block;
  size_t dlp_block_count;
} ztee_gate_options;

#define ZTEE_GATE_OPTIONS_INIT \
  {sizeof(ztee_gate_options), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, 0}

/* Like ztee_runtime_options_init, for ztee_gate_options. */
ZTEE_API ztee_status ztee_gate_options_init(ztee_gate_options *opts, size_t size);

/* Creates a gate on rt (kept alive by the gate), as do opts' policy, audit
 * log and pool. opts may be NULL (default policy, no log, no approver, no
 * secrets). *out is released with ztee_gate_free.
 * Errors: ZTEE_E_INVALID_ARGUMENT (rt or out NULL, bad struct_size of opts
 * or opts->sandbox). */
ZTEE_API ztee_status ztee_gate_create(ztee_runtime *rt, const ztee_gate_options *opts,
                                      ztee_gate **out);

/* What ztee_gate_call did. Allocated by the library; release with
 * ztee_call_result_free. Strings are never NULL ("" when empty). */
typedef struct ztee_call_result {
  int32_t ran;        /* 1: the command ran (see exec); 0: denied */
  int32_t tier;       /* the decision, as in ztee_decision */
  int32_t action;
  int32_t rule_index;
  char *rule;
  char *reason;
  char *denial;       /* why it did not run ("" when it ran) */
  char *approved_by;  /* approve tiers: who said yes */
  char *sandbox_id;   /* the sandbox it ran in ("" when denied) */
  ztee_exec_result *exec; /* NULL when not ran; stdout/stderr scrubbed of
                             secrets (and filtered by DLP); owned by this
                             result */
  int32_t blocked;    /* 1: DLP blocked the output (see ztee_gate_options.dlp_block) */
  uint32_t dlp_findings;       /* DLP findings in stdout and stderr */
  uint32_t injection_anomalies; /* injection rule hits in stdout and stderr */
} ztee_call_result;

/* Runs one tool call through the gate and waits for it (see ztee_gate).
 * A denied call is a success with ran = 0; errors are failures to run an
 * allowed call. The approver and the secret resolver callbacks run on the
 * calling thread during this call.
 * SECURITY: an allowed call runs arbitrary code as root in its guest.
 * Errors: ZTEE_E_INVALID_ARGUMENT (NULL argument, bad struct_size, no tool
 * or nothing to run, both command and argv, a malformed entry),
 * ZTEE_E_NOT_FOUND (a secret no resolver knows; command or cwd missing),
 * and those of ztee_sandbox_create and ztee_sandbox_exec. Nothing runs when
 * a secret cannot be resolved. */
ZTEE_API ztee_status ztee_gate_call(ztee_gate *gate, const ztee_tool_call *call,
                                    ztee_call_result **out);

/* Releases a call result, its strings and its exec result. NULL-safe. */
ZTEE_API void ztee_call_result_free(ztee_call_result *result);

/* Answers a pending approval: approve (who: recorded, NULL: "approver") or
 * deny (reason and who recorded, NULL: "" / "approver"). Any thread,
 * including inside the approver callback. Never blocks for long.
 * Errors: ZTEE_E_INVALID_ARGUMENT (gate or token NULL), ZTEE_E_NOT_FOUND
 * (the token is unknown, already answered or expired; the late answer is
 * ignored and recorded). */
ZTEE_API ztee_status ztee_gate_approve(ztee_gate *gate, const char *token, const char *who);
ZTEE_API ztee_status ztee_gate_deny(ztee_gate *gate, const char *token, const char *reason,
                                    const char *who);

/* Frees the gate, dropping its references to the runtime, policy, audit log
 * and pool. No ztee_gate_call may be running on it. NULL-safe. */
ZTEE_API void ztee_gate_free(ztee_gate *gate);

#ifdef __cplusplus
}
#endif

#endif /* ZTEE_H */
