/* C ABI tests against a real microVM. They need the guest image
 * ($ZTEE_IMAGE_DIR or /var/lib/ztee/images/default) and fail without it:
 * CI always builds the image. One sandbox serves every test (a boot takes
 * seconds under TCG). */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define SENTINEL ((void *)(uintptr_t)0x5a5a5a5a)

struct buf {
  char data[4096];
  size_t len;
  int calls;
};

static void append_cb(void *user_data, const char *data, size_t len) {
  struct buf *b = (struct buf *)user_data;
  b->calls++;
  if (len > sizeof b->data - 1 - b->len) len = sizeof b->data - 1 - b->len;
  memcpy(b->data + b->len, data, len);
  b->len += len;
  b->data[b->len] = '\0';
}

struct streams {
  struct buf out, err;
};
static void out_cb(void *ud, const char *d, size_t n) { append_cb(&((struct streams *)ud)->out, d, n); }
static void err_cb(void *ud, const char *d, size_t n) { append_cb(&((struct streams *)ud)->err, d, n); }

/* Runs argv (or shell when argv is NULL); returns the result or NULL. */
static ztee_exec_result *run(ztee_sandbox *sb, const char *const *argv, size_t argc, const char *shell) {
  ztee_exec_options eo = ZTEE_EXEC_OPTIONS_INIT;
  ztee_exec_result *res = NULL;
  eo.argv = argv;
  eo.argc = argc;
  eo.shell = shell;
  CHECK_STATUS(ztee_sandbox_exec(sb, &eo, &res), ZTEE_OK);
  return res;
}

static void test_exec(ztee_sandbox *sb) {
  static const char *const echo[] = {"echo", "hi"};
  ztee_exec_result *r = run(sb, echo, 2, NULL);
  if (r) {
    CHECK(r->exit_code == 0 && r->signal == 0 && !r->timed_out && !r->truncated);
    CHECK(r->stdout_len == 3 && strcmp(r->stdout_data, "hi\n") == 0);
    CHECK(r->stderr_data != NULL && r->stderr_len == 0);
    ztee_exec_result_free(r);
  }
  r = run(sb, NULL, 0, "python3 -c 'print(6*7)'");
  if (r) {
    CHECK(r->exit_code == 0);
    CHECK(strcmp(r->stdout_data, "42\n") == 0);
    ztee_exec_result_free(r);
  }
  r = run(sb, NULL, 0, "echo oops >&2; exit 3");
  if (r) {
    CHECK(r->exit_code == 3);
    CHECK(strcmp(r->stderr_data, "oops\n") == 0);
    ztee_exec_result_free(r);
  }
}

/* Cancel: another thread triggers the token once the command has started;
 * the exec returns with cancelled = 1 and signal 9. The worker only
 * triggers; the checks run on the main thread. */
static ztee_cancel *g_cancel;
static volatile int g_started;

static void on_started(void *user_data, const char *data, size_t len) {
  (void)user_data;
  if (len && memchr(data, 's', len)) g_started = 1;
}

static void *trigger_when_started(void *arg) {
  int i;
  (void)arg;
  for (i = 0; i < 3000 && !g_started; i++) usleep(10000);
  ztee_cancel_trigger(g_cancel);
  return NULL;
}

static void test_cancel(ztee_sandbox *sb) {
  ztee_exec_options eo = ZTEE_EXEC_OPTIONS_INIT;
  ztee_exec_result *r = NULL;
  pthread_t t;
  CHECK_STATUS(ztee_cancel_create(NULL), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_cancel_create(&g_cancel), ZTEE_OK);
  if (!g_cancel) return;
  CHECK(ztee_cancel_triggered(g_cancel) == 0 && ztee_cancel_triggered(NULL) == 0);
  ztee_cancel_trigger(NULL); /* NULL-safe */
  eo.shell = "echo started; sleep 60";
  eo.on_stdout = on_started;
  eo.cancel = g_cancel;
  CHECK(pthread_create(&t, NULL, trigger_when_started, NULL) == 0);
  CHECK_STATUS(ztee_sandbox_exec(sb, &eo, &r), ZTEE_OK);
  pthread_join(t, NULL);
  CHECK(g_started == 1);
  if (r) {
    CHECK(r->cancelled == 1 && r->signal == 9 && r->exit_code == -1);
    ztee_exec_result_free(r);
  }
  CHECK(ztee_cancel_triggered(g_cancel) == 1);
  /* The 0.3 layout (no cancel field) still runs. */
  {
    ztee_exec_options old = ZTEE_EXEC_OPTIONS_INIT;
    old.struct_size = (uint32_t)offsetof(ztee_exec_options, cancel);
    old.shell = "echo old";
    r = NULL;
    CHECK_STATUS(ztee_sandbox_exec(sb, &old, &r), ZTEE_OK);
    if (r) {
      CHECK(strcmp(r->stdout_data, "old\n") == 0 && r->cancelled == 0);
      ztee_exec_result_free(r);
    }
  }
  ztee_cancel_free(g_cancel);
  ztee_cancel_free(NULL);
  g_cancel = NULL;
}

/* Streamed stdin and signals: cat echoes each piece before the next is
 * written; close ends it; a trap sees SIGTERM. The worker thread only
 * writes, closes and signals; the checks run on the main thread. */
static pthread_mutex_t g_out_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_out[256];
static size_t g_out_len;
static ztee_input *g_input;
static volatile int g_worker_ok;

static void on_collect(void *user_data, const char *data, size_t len) {
  (void)user_data;
  pthread_mutex_lock(&g_out_mu);
  if (len > sizeof g_out - 1 - g_out_len) len = sizeof g_out - 1 - g_out_len;
  memcpy(g_out + g_out_len, data, len);
  g_out_len += len;
  g_out[g_out_len] = 0;
  pthread_mutex_unlock(&g_out_mu);
}

static int wait_out(const char *want) {
  int i, ok = 0;
  for (i = 0; i < 3000 && !ok; i++) {
    pthread_mutex_lock(&g_out_mu);
    ok = strcmp(g_out, want) == 0;
    pthread_mutex_unlock(&g_out_mu);
    if (!ok) usleep(10000);
  }
  return ok;
}

static void *feed_cat(void *arg) {
  (void)arg;
  g_worker_ok = wait_out("one\n") && ztee_input_write(g_input, "two\n", 4) == ZTEE_OK && wait_out("one\ntwo\n");
  ztee_input_close(g_input);
  return NULL;
}

static void *term_when_ready(void *arg) {
  ztee_cancel *c = (ztee_cancel *)arg;
  g_worker_ok = wait_out("ready\n") && ztee_cancel_signal(c, 15) == ZTEE_OK;
  return NULL;
}

static void test_input_and_signals(ztee_sandbox *sb) {
  ztee_exec_options eo = ZTEE_EXEC_OPTIONS_INIT;
  ztee_exec_result *r = NULL;
  ztee_cancel *c = NULL;
  ztee_input *gone = NULL;
  pthread_t t;
  char *big;
  CHECK(ztee_has_feature("exec_input") == 1);
  CHECK_STATUS(ztee_input_create(NULL), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_input_create(&g_input), ZTEE_OK);
  if (!g_input) return;
  CHECK_STATUS(ztee_input_write(g_input, "one\n", 4), ZTEE_OK); /* kept until the exec starts */
  CHECK(ztee_input_buffered(g_input) == 4 && ztee_input_buffered(NULL) == 0);
  CHECK_STATUS(ztee_input_write(g_input, NULL, 1), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_input_write(NULL, "x", 1), ZTEE_E_INVALID_ARGUMENT);
  /* One write over the bound never fits: EAGAIN, nothing queued. */
  big = calloc(ZTEE_INPUT_MAX_BUFFERED, 1);
  CHECK(big != NULL);
  if (big) {
    CHECK_STATUS(ztee_input_write(g_input, big, ZTEE_INPUT_MAX_BUFFERED), ZTEE_E_IO);
    CHECK(ztee_last_error()->sys_errno == EAGAIN);
    CHECK(ztee_input_buffered(g_input) == 4);
    free(big);
  }
  g_out_len = 0;
  g_out[0] = 0;
  eo.argv = (const char *const[]){"cat"};
  eo.argc = 1;
  eo.input = g_input;
  eo.on_stdout = on_collect;
  g_worker_ok = 0;
  CHECK(pthread_create(&t, NULL, feed_cat, NULL) == 0);
  CHECK_STATUS(ztee_sandbox_exec(sb, &eo, &r), ZTEE_OK);
  pthread_join(t, NULL);
  CHECK(g_worker_ok == 1);
  if (r) {
    CHECK(r->exit_code == 0);
    ztee_exec_result_free(r);
    r = NULL;
  }
  CHECK(strcmp(g_out, "one\ntwo\n") == 0);
  CHECK_STATUS(ztee_input_write(g_input, "x", 1), ZTEE_E_INVALID_ARGUMENT); /* after close */
  CHECK_STR_CONTAINS(ztee_last_error()->message, "after close()");
  ztee_input_close(g_input);
  ztee_input_close(NULL);
  /* The same input again, or with stdin_data: refused. */
  CHECK_STATUS(ztee_sandbox_exec(sb, &eo, &r), ZTEE_E_INVALID_ARGUMENT);
  ztee_input_free(g_input);
  g_input = NULL;
  CHECK_STATUS(ztee_input_create(&gone), ZTEE_OK);
  if (gone) {
    ztee_exec_options both = ZTEE_EXEC_OPTIONS_INIT;
    ztee_exec_options quick = ZTEE_EXEC_OPTIONS_INIT;
    both.shell = "cat";
    both.stdin_data = "x";
    both.stdin_len = 1;
    both.input = gone;
    CHECK_STATUS(ztee_sandbox_exec(sb, &both, &r), ZTEE_E_INVALID_ARGUMENT);
    /* The exec ended without reading: later writes say so. */
    quick.shell = "true";
    quick.input = gone;
    CHECK_STATUS(ztee_sandbox_exec(sb, &quick, &r), ZTEE_OK);
    ztee_exec_result_free(r);
    r = NULL;
    CHECK_STATUS(ztee_input_write(gone, "late", 4), ZTEE_E_CLOSED);
    ztee_input_free(gone);
  }
  ztee_input_free(NULL);

  /* Signals: SIGTERM reaches the trap; afterwards a no-op; bad numbers refused. */
  CHECK_STATUS(ztee_cancel_create(&c), ZTEE_OK);
  if (!c) return;
  {
    ztee_exec_options so = ZTEE_EXEC_OPTIONS_INIT;
    so.shell = "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.05; done";
    so.cancel = c;
    so.on_stdout = on_collect;
    g_out_len = 0;
    g_out[0] = 0;
    g_worker_ok = 0;
    CHECK(pthread_create(&t, NULL, term_when_ready, c) == 0);
    CHECK_STATUS(ztee_sandbox_exec(sb, &so, &r), ZTEE_OK);
    pthread_join(t, NULL);
    CHECK(g_worker_ok == 1);
    if (r) {
      CHECK(r->exit_code == 3 && r->signal == 0 && r->cancelled == 0);
      ztee_exec_result_free(r);
      r = NULL;
    }
    CHECK(strcmp(g_out, "ready\ngot TERM\n") == 0);
  }
  CHECK_STATUS(ztee_cancel_signal(c, 15), ZTEE_OK); /* nothing runs: a no-op */
  CHECK(ztee_cancel_triggered(c) == 0);
  CHECK_STATUS(ztee_cancel_signal(c, 0), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_cancel_signal(c, 65), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_cancel_signal(NULL, 15), ZTEE_E_INVALID_ARGUMENT);
  ztee_cancel_free(c);
  /* The 0.6 layout (no input field) still runs. */
  {
    ztee_exec_options old = ZTEE_EXEC_OPTIONS_INIT;
    old.struct_size = (uint32_t)offsetof(ztee_exec_options, input);
    old.shell = "echo six";
    CHECK_STATUS(ztee_sandbox_exec(sb, &old, &r), ZTEE_OK);
    if (r) {
      CHECK(strcmp(r->stdout_data, "six\n") == 0);
      ztee_exec_result_free(r);
    }
  }
}

/* Exec options from a newer caller: zero extra bytes run, a non-zero one is refused. */
static void test_newer_exec_options(ztee_sandbox *sb) {
  struct {
    ztee_exec_options o;
    unsigned char extra[24];
  } eo;
  static const char *const tru[] = {"echo", "newer"};
  ztee_exec_result *r = (ztee_exec_result *)SENTINEL;
  CHECK_STATUS(ztee_exec_options_init(&eo.o, sizeof eo), ZTEE_OK);
  eo.o.argv = tru;
  eo.o.argc = 2;
  CHECK_STATUS(ztee_sandbox_exec(sb, &eo.o, &r), ZTEE_OK);
  if (r != (ztee_exec_result *)SENTINEL && r) {
    CHECK(strcmp(r->stdout_data, "newer\n") == 0);
    ztee_exec_result_free(r);
  }
  r = (ztee_exec_result *)SENTINEL;
  eo.extra[7] = 9;
  CHECK_STATUS(ztee_sandbox_exec(sb, &eo.o, &r), ZTEE_E_INVALID_ARGUMENT);
  CHECK(strstr(ztee_last_error()->message, "newer ztee.h") != NULL);
  CHECK(r == (ztee_exec_result *)SENTINEL);
}

static void test_exec_options(ztee_sandbox *sb) {
  ztee_exec_options eo = ZTEE_EXEC_OPTIONS_INIT;
  ztee_exec_result *r = (ztee_exec_result *)SENTINEL;
  static const char *const env[] = {"ZTEE_TEST=hello world"};
  static const char *const cat[] = {"cat"};
  static const char *const tru[] = {"true"};
  static const char *const missing[] = {"ztee-no-such-command"};
  static const unsigned char in[] = {'a', 0, 'b', '\n'};

  eo.shell = "echo \"$ZTEE_TEST\"; pwd";
  eo.env = env;
  eo.env_count = 1;
  eo.cwd = "/tmp";
  CHECK_STATUS(ztee_sandbox_exec(sb, &eo, &r), ZTEE_OK);
  if (r != (ztee_exec_result *)SENTINEL) {
    CHECK(strcmp(r->stdout_data, "hello world\n/tmp\n") == 0);
    ztee_exec_result_free(r);
  }

  memset(&eo, 0, sizeof eo);
  eo.struct_size = sizeof eo;
  eo.argv = cat;
  eo.argc = 1;
  eo.stdin_data = in;
  eo.stdin_len = sizeof in;
  r = (ztee_exec_result *)SENTINEL;
  CHECK_STATUS(ztee_sandbox_exec(sb, &eo, &r), ZTEE_OK);
  if (r != (ztee_exec_result *)SENTINEL) {
    CHECK(r->stdout_len == sizeof in && memcmp(r->stdout_data, in, sizeof in) == 0);
    ztee_exec_result_free(r);
  }

  /* Timeout: the guest kills the process group. */
  {
    ztee_exec_options to = ZTEE_EXEC_OPTIONS_INIT;
    to.shell = "sleep 10";
    to.timeout_ms = 500;
    r = (ztee_exec_result *)SENTINEL;
    CHECK_STATUS(ztee_sandbox_exec(sb, &to, &r), ZTEE_OK);
    if (r != (ztee_exec_result *)SENTINEL) {
      CHECK(r->timed_out == 1);
      CHECK(r->duration_us < 8000000);
      ztee_exec_result_free(r);
    }
  }

  /* A command that does not exist. */
  {
    ztee_exec_options nf = ZTEE_EXEC_OPTIONS_INIT;
    nf.argv = missing;
    nf.argc = 1;
    r = (ztee_exec_result *)SENTINEL;
    CHECK_STATUS(ztee_sandbox_exec(sb, &nf, &r), ZTEE_E_NOT_FOUND);
    CHECK(r == (ztee_exec_result *)SENTINEL);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "ztee-no-such-command");
  }

  /* Bad exec options never reach the guest. */
  {
    uint32_t sizes[] = {0, 3, 1u << 20};
    size_t i;
    for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
      ztee_exec_options bad = ZTEE_EXEC_OPTIONS_INIT;
      bad.argv = tru;
      bad.argc = 1;
      bad.struct_size = sizes[i];
      r = (ztee_exec_result *)SENTINEL;
      CHECK_STATUS(ztee_sandbox_exec(sb, &bad, &r), ZTEE_E_INVALID_ARGUMENT);
      CHECK_STR_CONTAINS(ztee_last_error()->message, "ZTEE_EXEC_OPTIONS_INIT");
      CHECK(r == (ztee_exec_result *)SENTINEL);
    }
  }
  {
    ztee_exec_options bad = ZTEE_EXEC_OPTIONS_INIT; /* neither argv nor shell */
    CHECK_STATUS(ztee_sandbox_exec(sb, &bad, &r), ZTEE_E_INVALID_ARGUMENT);
    bad.argv = tru;
    bad.argc = 1;
    bad.shell = "true"; /* both */
    CHECK_STATUS(ztee_sandbox_exec(sb, &bad, &r), ZTEE_E_INVALID_ARGUMENT);
    bad.shell = NULL;
    bad.argc = 0; /* argv without argc */
    CHECK_STATUS(ztee_sandbox_exec(sb, &bad, &r), ZTEE_E_INVALID_ARGUMENT);
    bad.argc = 1;
    {
      static const char *const bad_env[] = {"NOEQUALS"};
      bad.env = bad_env;
      bad.env_count = 1;
      CHECK_STATUS(ztee_sandbox_exec(sb, &bad, &r), ZTEE_E_INVALID_ARGUMENT);
    }
    CHECK_STATUS(ztee_sandbox_exec(sb, NULL, &r), ZTEE_E_INVALID_ARGUMENT);
    CHECK(r == (ztee_exec_result *)SENTINEL);
  }
}

static void test_streaming(ztee_sandbox *sb) {
  ztee_exec_options eo = ZTEE_EXEC_OPTIONS_INIT;
  ztee_exec_result *r = NULL;
  struct streams s;
  memset(&s, 0, sizeof s);
  eo.shell = "echo one; echo err1 >&2; sleep 0.2; echo two; echo err2 >&2";
  eo.on_stdout = out_cb;
  eo.on_stderr = err_cb;
  eo.user_data = &s;
  CHECK_STATUS(ztee_sandbox_exec(sb, &eo, &r), ZTEE_OK);
  if (r) {
    CHECK(r->exit_code == 0);
    CHECK(r->stdout_len == 0 && r->stderr_len == 0); /* streamed, not collected */
    ztee_exec_result_free(r);
  }
  CHECK(strcmp(s.out.data, "one\ntwo\n") == 0);
  CHECK(strcmp(s.err.data, "err1\nerr2\n") == 0);
  CHECK(s.out.calls >= 1 && s.err.calls >= 1);
}

static void test_files(ztee_sandbox *sb) {
  unsigned char bin[256];
  void *data = SENTINEL;
  size_t len = 0, i;
  ztee_file_info *fi = (ztee_file_info *)SENTINEL;
  ztee_dir_list *dl = NULL;
  for (i = 0; i < sizeof bin; i++) bin[i] = (unsigned char)i;

  CHECK_STATUS(ztee_sandbox_mkdir(sb, "/tmp/capi/a/b", 1, 0), ZTEE_OK);
  CHECK_STATUS(ztee_sandbox_mkdir(sb, "/tmp/capi/a/b", 1, 0), ZTEE_OK); /* parents: exists ok */
  CHECK_STATUS(ztee_sandbox_mkdir(sb, "/tmp/capi/x/y", 0, 0), ZTEE_E_NOT_FOUND);
  CHECK_STATUS(ztee_sandbox_write_file(sb, "/tmp/capi/bin.dat", bin, sizeof bin, 0600), ZTEE_OK);
  CHECK_STATUS(ztee_sandbox_write_file(sb, "/tmp/capi/empty", NULL, 0, 0), ZTEE_OK);
  CHECK_STATUS(ztee_sandbox_write_file(sb, "/tmp/capi", "x", 1, 0), ZTEE_E_GUEST); /* a dir */

  CHECK_STATUS(ztee_sandbox_read_file(sb, "/tmp/capi/bin.dat", 0, &data, &len), ZTEE_OK);
  if (data != SENTINEL) {
    CHECK(len == sizeof bin && memcmp(data, bin, sizeof bin) == 0);
    CHECK(((char *)data)[len] == '\0');
    ztee_free(data);
  }
  data = SENTINEL;
  len = 77;
  CHECK_STATUS(ztee_sandbox_read_file(sb, "/tmp/capi/bin.dat", 10, &data, &len), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_sandbox_read_file(sb, "/tmp/capi/missing", 0, &data, &len), ZTEE_E_NOT_FOUND);
  CHECK(data == SENTINEL && len == 77);

  CHECK_STATUS(ztee_sandbox_stat(sb, "/tmp/capi/bin.dat", &fi), ZTEE_OK);
  if (fi != (ztee_file_info *)SENTINEL) {
    CHECK(fi->type == ZTEE_FILE_TYPE_FILE);
    CHECK(fi->size == sizeof bin);
    CHECK((fi->mode & 0777) == 0600);
    CHECK(fi->name != NULL);
    CHECK(fi->mtime_ns > 0);
    ztee_file_info_free(fi);
  }
  fi = (ztee_file_info *)SENTINEL;
  CHECK_STATUS(ztee_sandbox_stat(sb, "/tmp/capi/a", &fi), ZTEE_OK);
  if (fi != (ztee_file_info *)SENTINEL) {
    CHECK(fi->type == ZTEE_FILE_TYPE_DIR);
    ztee_file_info_free(fi);
  }

  CHECK_STATUS(ztee_sandbox_list_dir(sb, "/tmp/capi", &dl), ZTEE_OK);
  if (dl) {
    int seen_bin = 0, seen_a = 0, seen_empty = 0;
    CHECK(dl->count == 3);
    for (i = 0; i < dl->count; i++) {
      const ztee_file_info *e = &dl->entries[i];
      if (strcmp(e->name, "bin.dat") == 0) seen_bin = e->type == ZTEE_FILE_TYPE_FILE && e->size == 256;
      if (strcmp(e->name, "a") == 0) seen_a = e->type == ZTEE_FILE_TYPE_DIR;
      if (strcmp(e->name, "empty") == 0) seen_empty = e->size == 0;
    }
    CHECK(seen_bin && seen_a && seen_empty);
    ztee_dir_list_free(dl);
  }

  CHECK_STATUS(ztee_sandbox_remove(sb, "/tmp/capi/bin.dat", 0), ZTEE_OK);
  fi = (ztee_file_info *)SENTINEL;
  CHECK_STATUS(ztee_sandbox_stat(sb, "/tmp/capi/bin.dat", &fi), ZTEE_E_NOT_FOUND);
  CHECK(fi == (ztee_file_info *)SENTINEL);
  CHECK_STATUS(ztee_sandbox_remove(sb, "/tmp/capi", 0), ZTEE_E_GUEST); /* not empty */
  CHECK_STATUS(ztee_sandbox_remove(sb, "/tmp/capi", 1), ZTEE_OK);
  CHECK_STATUS(ztee_sandbox_stat(sb, "/tmp/capi", &fi), ZTEE_E_NOT_FOUND);
  CHECK_STATUS(ztee_sandbox_remove(sb, "/tmp/capi", 1), ZTEE_E_NOT_FOUND);

  CHECK_STATUS(ztee_sandbox_write_file(sb, NULL, "x", 1, 0), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_sandbox_read_file(sb, "/etc/hostname", 0, NULL, &len), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_sandbox_stat(sb, NULL, &fi), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_sandbox_list_dir(sb, NULL, &dl), ZTEE_E_INVALID_ARGUMENT);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs `shell` and checks its stdout. */
static void expect_stdout(ztee_sandbox *sb, const char *shell, const char *want) {
  ztee_exec_result *r = run(sb, NULL, 0, shell);
  if (r) {
    CHECK(r->exit_code == 0);
    CHECK_STR_CONTAINS(r->stdout_data, want);
    if (strcmp(r->stdout_data, want) != 0)
      fprintf(stderr, "  `%s` printed \"%s\", want \"%s\"\n", shell, r->stdout_data, want);
    ztee_exec_result_free(r);
  }
}

struct resume_later {
  ztee_sandbox *sb;
  ztee_status st;
};

static void *resume_after_500ms(void *arg) {
  struct resume_later *d = (struct resume_later *)arg;
  usleep(500 * 1000);
  d->st = ztee_sandbox_resume(d->sb);
  return NULL;
}

/* An exec sent to a paused sandbox waits for the resume. */
static void test_pause_resume(ztee_sandbox *sb) {
  struct resume_later d = {sb, -100};
  pthread_t t;
  double t0, t1;
  CHECK_STATUS(ztee_sandbox_pause(sb), ZTEE_OK);
  CHECK_STATUS(ztee_sandbox_resume(sb), ZTEE_OK);
  expect_stdout(sb, "echo after-resume", "after-resume\n");

  CHECK_STATUS(ztee_sandbox_pause(sb), ZTEE_OK);
  CHECK(pthread_create(&t, NULL, resume_after_500ms, &d) == 0);
  t0 = now_s();
  expect_stdout(sb, "echo while-paused", "while-paused\n");
  t1 = now_s();
  CHECK(pthread_join(t, NULL) == 0);
  CHECK_STATUS(d.st, ZTEE_OK);
  CHECK(t1 - t0 >= 0.4); /* it waited for the resume */
  /* Not snapshottable: refused, and the sandbox is left as it was. */
  CHECK_STATUS(ztee_sandbox_snapshot(sb, "/tmp/ztee-capi-never-made"), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_sandbox_ping(sb), ZTEE_OK);
  CHECK(access("/tmp/ztee-capi-never-made", F_OK) != 0);
}

static void check_stats(ztee_pool *pool, ztee_pool_stats *st) {
  /* A newer caller's larger struct gets the known fields, then zeros. */
  struct {
    ztee_pool_stats s;
    unsigned char extra[16];
  } newer;
  memset(st, 0x55, sizeof *st);
  st->struct_size = sizeof *st;
  CHECK_STATUS(ztee_pool_stats_get(pool, st), ZTEE_OK);
  CHECK(st->struct_size == sizeof *st);
  memset(&newer, 0x55, sizeof newer);
  newer.s.struct_size = sizeof newer;
  CHECK_STATUS(ztee_pool_stats_get(pool, &newer.s), ZTEE_OK);
  CHECK(newer.s.struct_size == sizeof newer && newer.extra[0] == 0 && newer.extra[15] == 0);
  CHECK(newer.s.created >= st->created && newer.s.leases >= st->leases);
}

/* A snapshot of a snapshottable sandbox, a clone of it, and a pool of clones
 * (two boots in all: the main sandbox's and this one's). */
static void test_snapshot_and_pool(ztee_runtime *rt) {
  char base[] = "/tmp/ztee-capi-XXXXXX";
  char tpl[512], path[600], cmd[600];
  ztee_sandbox_options so = ZTEE_SANDBOX_OPTIONS_INIT;
  ztee_sandbox *src = NULL, *clone = NULL, *a = NULL, *b = NULL, *c = (ztee_sandbox *)SENTINEL;
  ztee_pool_options po = ZTEE_POOL_OPTIONS_INIT;
  ztee_pool *pool = NULL;
  ztee_pool_stats st;
  struct stat sst;
  char *msg = NULL;
  uint64_t waits = 0;
  int i;

  if (!mkdtemp(base)) {
    CHECK(!"mkdtemp");
    return;
  }
  snprintf(tpl, sizeof tpl, "%s/tpl", base);

  so.snapshottable = 1;
  CHECK_STATUS(ztee_sandbox_create(rt, &so, &src), ZTEE_OK);
  if (!src) goto out;
  /* /tmp is in guest RAM: the clone must see it. */
  CHECK_STATUS(ztee_sandbox_write_file(src, "/tmp/from-template", "tpl\n", 4, 0), ZTEE_OK);
  CHECK_STATUS(ztee_sandbox_snapshot(src, "relative/tpl"), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_sandbox_ping(src), ZTEE_OK); /* refused arguments: not consumed */
  CHECK_STATUS(ztee_sandbox_snapshot(src, tpl), ZTEE_OK);
  /* Consumed. */
  CHECK_STATUS(ztee_sandbox_ping(src), ZTEE_E_CLOSED);
  {
    static const char *const tru[] = {"true"};
    ztee_exec_options eo = ZTEE_EXEC_OPTIONS_INIT;
    ztee_exec_result *r = (ztee_exec_result *)SENTINEL;
    eo.argv = tru;
    eo.argc = 1;
    CHECK_STATUS(ztee_sandbox_exec(src, &eo, &r), ZTEE_E_CLOSED);
    CHECK(r == (ztee_exec_result *)SENTINEL);
  }
  CHECK_STATUS(ztee_sandbox_snapshot(src, tpl), ZTEE_E_INVALID_ARGUMENT); /* dir exists */
  CHECK(strncmp(ztee_sandbox_id(src), "sb-", 3) == 0);
  ztee_sandbox_free(src);
  snprintf(path, sizeof path, "%s/template.json", tpl);
  CHECK(stat(path, &sst) == 0);

  /* A sandbox from the template. */
  so.snapshottable = 0;
  so.template_dir = tpl;
  so.guest_aslr = ZTEE_GUEST_ASLR_ON; /* the template has the default */
  CHECK_STATUS(ztee_sandbox_create(rt, &so, &clone), ZTEE_OK);
  so.guest_aslr = ZTEE_GUEST_ASLR_AUTO;
  if (clone) {
    expect_stdout(clone, "cat /proc/sys/kernel/randomize_va_space", "2\n");
    static const char *const echo[] = {"echo", "hi"};
    ztee_exec_result *r = run(clone, echo, 2, NULL);
    if (r) {
      CHECK(strcmp(r->stdout_data, "hi\n") == 0);
      ztee_exec_result_free(r);
    }
    expect_stdout(clone, "cat /tmp/from-template", "tpl\n");
    ztee_sandbox_free(clone);
  }

  /* A pool of clones of that template. */
  po.template_dir = tpl;
  po.min_ready = 1;
  po.max_total = 2;
  po.warm_up = "echo warmed >> /tmp/warm-count"; /* runs once in each clone */
  CHECK_STATUS(ztee_pool_create(rt, &po, &pool), ZTEE_OK);
  if (!pool) goto out;
  CHECK_STATUS(ztee_pool_lease(pool, 60000, &a), ZTEE_OK);
  if (a) expect_stdout(a, "echo leased", "leased\n");
  if (a) expect_stdout(a, "cat /tmp/warm-count", "warmed\n");
  /* The default: ASLR off under software emulation, on with KVM. */
  if (a) expect_stdout(a, "cat /proc/sys/kernel/randomize_va_space", ztee_has_feature("kvm") ? "2\n" : "0\n");
  check_stats(pool, &st);
  CHECK(st.leased == 1 && st.leases == 1 && st.lease_timeouts == 0);
  CHECK(st.created >= 1 && st.failed == 0 && st.consecutive_failures == 0 && st.backing_off == 0);
  CHECK(st.ready + st.starting + st.leased <= 2);
  CHECK_STATUS(ztee_pool_lease(pool, 60000, &b), ZTEE_OK);
  if (a && b) CHECK(strcmp(ztee_sandbox_id(a), ztee_sandbox_id(b)) != 0);
  /* max_total reached: a lease times out. */
  CHECK_STATUS(ztee_pool_lease(pool, 300, &c), ZTEE_E_TIMEOUT);
  CHECK(c == (ztee_sandbox *)SENTINEL);
  check_stats(pool, &st);
  CHECK(st.leased == 2 && st.leases == 2 && st.lease_timeouts == 1 && st.ready == 0);
  for (i = 0; i < 8; i++) waits += st.lease_wait_hist[i];
  CHECK(waits == 2);
  CHECK_STATUS(ztee_pool_last_error(pool, &msg), ZTEE_OK);
  CHECK(msg && msg[0] == '\0');
  ztee_free(msg);

  /* Freeing the pool leaves the leased sandboxes with their holder. */
  ztee_pool_free(pool);
  if (a) expect_stdout(a, "echo a still here", "a still here\n");
  if (b) expect_stdout(b, "hostname >/dev/null && echo b still here", "b still here\n");
  ztee_sandbox_free(a);
  ztee_sandbox_free(b);

out:
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
  CHECK(system(cmd) == 0);
}

/* Network options: refused bad entries, and a sandbox with an allowlist has
 * eth0 (no packet is sent: the network tests live in integration_net). */
static void test_network(ztee_runtime *rt) {
  ztee_sandbox_options so = ZTEE_SANDBOX_OPTIONS_INIT;
  ztee_sandbox *sb = NULL;
  static const char *const bad[] = {"198.18.0.10:0"};
  static const char *const good[] = {"198.18.0.10:47080/tcp"};
  ztee_sandbox_options v2;

  CHECK(ztee_has_feature("network") == 1);
  CHECK_STATUS(ztee_sandbox_options_init(&v2, offsetof(ztee_sandbox_options, net_allow)), ZTEE_OK);
  so.net_allow = bad;
  so.net_allow_count = 1;
  CHECK_STATUS(ztee_sandbox_create(rt, &so, &sb), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STR_CONTAINS(ztee_last_error()->message, "\"198.18.0.10:0\"");
  CHECK(sb == NULL);
  so.net_allow = NULL; /* a count without an array */
  CHECK_STATUS(ztee_sandbox_create(rt, &so, &sb), ZTEE_E_INVALID_ARGUMENT);
  so.net_allow = good;
  CHECK_STATUS(ztee_sandbox_create(rt, &so, &sb), ZTEE_OK);
  if (!sb) return;
  expect_stdout(sb, "ls /sys/class/net", "eth0\nlo\n");
  CHECK_STATUS(ztee_sandbox_destroy(sb), ZTEE_OK);
  ztee_sandbox_free(sb);
}

static int approve_main_only(const ztee_change *c, void *user_data) {
  int *asked = (int *)user_data;
  (*asked)++;
  return strcmp(c->path, "main.txt") == 0;
}

static void write_host(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  if (!f) return;
  fputs(text, f);
  fclose(f);
}

static void test_workspaces(ztee_runtime *rt) {
  char dir[] = "/tmp/ztee-capi-ws.XXXXXX", path[256], text[64] = {0};
  ztee_sandbox_options so = ZTEE_SANDBOX_OPTIONS_INIT;
  ztee_sandbox_options v5;
  ztee_mount m;
  ztee_sandbox *sb = NULL;
  ztee_change_list *list = NULL;
  ztee_export_options eo = ZTEE_EXPORT_OPTIONS_INIT;
  ztee_export_result *res = NULL;
  char *patch = NULL;
  int asked = 0;
  size_t i;
  FILE *f;

  CHECK(ztee_has_feature("workspaces") == 1);
  /* 0.5's layout (up to guest_aslr) is still accepted. */
  CHECK_STATUS(ztee_sandbox_options_init(&v5, offsetof(ztee_sandbox_options, mounts)), ZTEE_OK);
  if (!mkdtemp(dir)) {
    CHECK(!"mkdtemp");
    return;
  }
  snprintf(path, sizeof path, "%s/main.txt", dir);
  write_host(path, "one\n");
  snprintf(path, sizeof path, "%s/other.txt", dir);
  write_host(path, "two\n");
  m.host_dir = dir;
  m.guest_path = "/proc/nope";
  so.mounts = &m;
  so.mount_count = 1;
  CHECK_STATUS(ztee_sandbox_create(rt, &so, &sb), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STR_CONTAINS(ztee_last_error()->message, "/proc/nope");
  m.guest_path = "/work";
  CHECK_STATUS(ztee_sandbox_create(rt, &so, &sb), ZTEE_OK);
  if (!sb) return;
  expect_stdout(sb, "cat /work/main.txt && echo changed >> /work/main.txt && echo x >> /work/other.txt && "
                    "echo n > /work/new.txt", "one\n");
  CHECK_STATUS(ztee_sandbox_diff(sb, "/work", &list), ZTEE_OK);
  if (list) {
    CHECK(list->count == 3);
    for (i = 0; i < list->count; ++i) {
      CHECK(strcmp(list->entries[i].mount, "/work") == 0);
      CHECK(strlen(list->entries[i].sha256) == 64);
      if (strcmp(list->entries[i].path, "new.txt") == 0) CHECK(list->entries[i].kind == ZTEE_CHANGE_CREATED);
      if (strcmp(list->entries[i].path, "main.txt") == 0) CHECK(list->entries[i].kind == ZTEE_CHANGE_MODIFIED);
    }
    ztee_change_list_free(list);
  }
  CHECK_STATUS(ztee_sandbox_diff(sb, "/elsewhere", &list), ZTEE_E_NOT_FOUND);
  CHECK_STATUS(ztee_sandbox_patch(sb, NULL, NULL, 0, &patch), ZTEE_OK);
  CHECK_STR_CONTAINS(patch, "+changed");
  ztee_free(patch);
  eo.approve = approve_main_only;
  eo.user_data = &asked;
  CHECK_STATUS(ztee_sandbox_export_changes(sb, &eo, &res), ZTEE_OK);
  CHECK(asked == 3);
  if (res) {
    CHECK(res->applied.count == 1);
    CHECK(res->declined.count == 2);
    if (res->applied.count == 1) CHECK(strcmp(res->applied.entries[0].path, "main.txt") == 0);
    ztee_export_result_free(res);
  }
  snprintf(path, sizeof path, "%s/main.txt", dir);
  f = fopen(path, "r");
  if (f) {
    CHECK(fread(text, 1, sizeof text - 1, f) == 12);
    fclose(f);
  }
  CHECK(strcmp(text, "one\nchanged\n") == 0);
  /* A host edit since the start is a conflict: nothing is applied. */
  snprintf(path, sizeof path, "%s/other.txt", dir);
  write_host(path, "edited on the host\n");
  eo.approve = NULL;
  CHECK_STATUS(ztee_sandbox_export_changes(sb, &eo, &res), ZTEE_E_CONFLICT);
  CHECK_STR_CONTAINS(ztee_last_error()->message, "other.txt");
  snprintf(path, sizeof path, "%s/new.txt", dir);
  CHECK(access(path, F_OK) != 0);
  CHECK_STATUS(ztee_sandbox_destroy(sb), ZTEE_OK);
  ztee_sandbox_free(sb);
  snprintf(path, sizeof path, "rm -rf '%s'", dir);
  CHECK(system(path) == 0);
}

static void test_sandbox_dlp(ztee_runtime *rt) {
  ztee_sandbox_options so = ZTEE_SANDBOX_OPTIONS_INIT;
  static const char *const block[] = {"ssn"};
  static const char *const unknown[] = {"no_such_detector"};
  ztee_sandbox *sb = NULL;
  ztee_exec_result *r;

  so.dlp_block = unknown;
  so.dlp_block_count = 1;
  CHECK_STATUS(ztee_sandbox_create(rt, &so, &sb), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STR_CONTAINS(ztee_last_error()->message, "no_such_detector");
  so.dlp = 1;
  so.dlp_block = block;
  CHECK_STATUS(ztee_sandbox_create(rt, &so, &sb), ZTEE_OK);
  if (!sb) return;
  r = run(sb, NULL, 0, "printf 'card 4111 1111 1111 1111\\n'");
  if (r) {
    CHECK(strcmp(r->stdout_data, "card [REDACTED:card]\n") == 0);
    CHECK(r->dlp_findings == 1);
    ztee_exec_result_free(r);
  }
  {
    ztee_exec_options eo = ZTEE_EXEC_OPTIONS_INIT;
    ztee_exec_result *res = NULL;
    eo.shell = "echo 219-09-9999";
    CHECK_STATUS(ztee_sandbox_exec(sb, &eo, &res), ZTEE_E_PERMISSION);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "withheld by DLP");
    CHECK(res == NULL);
  }
  CHECK_STATUS(ztee_sandbox_destroy(sb), ZTEE_OK);
  ztee_sandbox_free(sb);
}

int main(void) {
  const char *image = test_image_dir();
  char manifest[4096];
  struct stat st;
  ztee_runtime_options ro = ZTEE_RUNTIME_OPTIONS_INIT;
  ztee_runtime *rt = NULL;
  ztee_sandbox *sb = NULL;
  static const char *const echo[] = {"echo", "still", "alive"};
  ztee_exec_result *r;

  snprintf(manifest, sizeof manifest, "%s/manifest.json", image);
  if (stat(manifest, &st) != 0) {
    fprintf(stderr,
            "capi_vm: FAIL: no guest image at %s (missing %s). Build it with "
            "`ztee image build --out %s` or set ZTEE_IMAGE_DIR.\n",
            image, manifest, image);
    return 1;
  }
  ro.image_dir = image;
  CHECK_STATUS(ztee_runtime_create(&ro, &rt), ZTEE_OK);
  if (!rt) return finish("capi_vm");
  /* ztee_has_feature("kvm") answers what this runtime picked. */
  CHECK(ztee_has_feature("kvm") == (strncmp(ztee_runtime_backend(rt), "qemu/kvm", 8) == 0));
  CHECK_STATUS(ztee_sandbox_create(rt, NULL, &sb), ZTEE_OK);
  if (!sb) {
    ztee_runtime_free(rt);
    return finish("capi_vm");
  }
  CHECK(strncmp(ztee_sandbox_id(sb), "sb-", 3) == 0);
  CHECK_STATUS(ztee_sandbox_ping(sb), ZTEE_OK);

  test_exec(sb);
  test_exec_options(sb);
  test_newer_exec_options(sb);
  test_cancel(sb);
  test_input_and_signals(sb);
  test_streaming(sb);
  test_files(sb);
  test_pause_resume(sb);
  test_snapshot_and_pool(rt);
  test_network(rt);
  test_workspaces(rt);
  test_sandbox_dlp(rt);

  /* Free the runtime first: the sandbox keeps it alive. */
  ztee_runtime_free(rt);
  r = run(sb, echo, 3, NULL);
  if (r) {
    CHECK(strcmp(r->stdout_data, "still alive\n") == 0);
    ztee_exec_result_free(r);
  }
  CHECK_STATUS(ztee_sandbox_destroy(sb), ZTEE_OK);
  CHECK_STATUS(ztee_sandbox_destroy(sb), ZTEE_E_CLOSED);
  CHECK_STATUS(ztee_sandbox_ping(sb), ZTEE_E_CLOSED);
  {
    ztee_exec_options eo = ZTEE_EXEC_OPTIONS_INIT;
    ztee_exec_result *res = (ztee_exec_result *)SENTINEL;
    eo.argv = echo;
    eo.argc = 3;
    CHECK_STATUS(ztee_sandbox_exec(sb, &eo, &res), ZTEE_E_CLOSED);
    CHECK(res == (ztee_exec_result *)SENTINEL);
  }
  ztee_sandbox_free(sb);
  return finish("capi_vm");
}
