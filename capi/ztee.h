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
 * "guest_aslr" (ztee_sandbox_options.guest_aslr). */
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
} ztee_runtime_options;

#define ZTEE_RUNTIME_OPTIONS_INIT {sizeof(ztee_runtime_options), NULL, NULL, NULL, NULL, NULL, 0}

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
} ztee_sandbox_options;

#define ZTEE_GUEST_ASLR_AUTO 0
#define ZTEE_GUEST_ASLR_ON 1
#define ZTEE_GUEST_ASLR_OFF 2

#define ZTEE_SANDBOX_OPTIONS_INIT {sizeof(ztee_sandbox_options), NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0}

/* Like ztee_runtime_options_init, for ztee_sandbox_options. Besides
 * sizeof(ztee_sandbox_options), the size of every earlier published layout
 * is accepted (offsetof(ztee_sandbox_options, template_dir) for 0.1 callers,
 * offsetof(ztee_sandbox_options, net_allow) for 0.2 callers,
 * offsetof(ztee_sandbox_options, guest_aslr) for 0.3 callers);
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
} ztee_exec_options;

#define ZTEE_EXEC_OPTIONS_INIT \
  {sizeof(ztee_exec_options), NULL, 0, NULL, NULL, 0, NULL, NULL, NULL, 0, 0, 0, NULL, NULL, NULL, NULL}

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

/* Closes the pool (see ztee_pool_close) and frees the handle. Leased
 * sandboxes keep working and are freed on their own. NULL-safe. Like every
 * *_free, it must not run while another thread still uses the handle (e.g.
 * blocks in ztee_pool_lease): call ztee_pool_close first, which makes such
 * calls return ZTEE_E_CLOSED, and free the pool once they have returned. */
ZTEE_API void ztee_pool_free(ztee_pool *pool);

#ifdef __cplusplus
}
#endif

#endif /* ZTEE_H */
