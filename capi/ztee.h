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
 *    default. An unknown struct_size fails with ZTEE_E_INVALID_ARGUMENT.
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
 * name). Known features: "qemu", "firecracker", "kvm" (usable /dev/kvm now),
 * "streaming", "files". */
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
  const char *accel;      /* NULL or "auto", "kvm", "tcg" */
} ztee_runtime_options;

#define ZTEE_RUNTIME_OPTIONS_INIT {sizeof(ztee_runtime_options), NULL, NULL, NULL, NULL, NULL}

/* Zero-fills *opts and sets struct_size. size must be sizeof(*opts) as the
 * caller knows it. Errors: ZTEE_E_INVALID_ARGUMENT (opts NULL, size unknown). */
ZTEE_API ztee_status ztee_runtime_options_init(ztee_runtime_options *opts, size_t size);

/* Starts a runtime (one event-loop thread). opts may be NULL for defaults.
 * Errors: ZTEE_E_INVALID_ARGUMENT, ZTEE_E_BACKEND_UNAVAILABLE, ZTEE_E_IO. */
ZTEE_API ztee_status ztee_runtime_create(const ztee_runtime_options *opts, ztee_runtime **out);

/* Drops the caller's reference. The event loop stops once every sandbox of
 * this runtime is freed too. NULL-safe. */
ZTEE_API void ztee_runtime_free(ztee_runtime *rt);

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
} ztee_sandbox_options;

#define ZTEE_SANDBOX_OPTIONS_INIT {sizeof(ztee_sandbox_options), NULL, 0, 0, 0, 0, 0}

/* Like ztee_runtime_options_init, for ztee_sandbox_options. */
ZTEE_API ztee_status ztee_sandbox_options_init(ztee_sandbox_options *opts, size_t size);

/* Boots a microVM and waits until its guest agent is ready. opts may be NULL.
 * SECURITY: the sandbox runs arbitrary code; it has no network.
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
} ztee_exec_options;

#define ZTEE_EXEC_OPTIONS_INIT \
  {sizeof(ztee_exec_options), NULL, 0, NULL, NULL, 0, NULL, NULL, NULL, 0, 0, 0, NULL, NULL, NULL}

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

#ifdef __cplusplus
}
#endif

#endif /* ZTEE_H */
