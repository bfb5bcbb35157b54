/* One side of ztee-bench-bindings: the per-call cost of run("true") and of a
 * 1 MiB file read through the C ABI itself (the baseline the bindings are
 * compared with). Prints one JSON line:
 *   {"lang": "c", "run_true_p50_us": ..., "read_1mib_p50_us": ..., "ping_p50_us": ..., "calls": N}
 * (ping: 10 * CALLS agent round trips after 50 warm-up ones).
 * Usage: ztee-bench-capi [CALLS] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ztee.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double p50(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int die(const char *what) {
  fprintf(stderr, "ztee-bench-capi: %s: %s\n", what, ztee_last_error()->message);
  return 1;
}

int main(int argc, char **argv) {
  int calls = 30, i;
  if (argc > 1) {
    char *end = NULL;
    long n = strtol(argv[1], &end, 10);
    int help = strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0;
    if (help || argc > 2 || *argv[1] == '\0' || *end != '\0' || n < 1 || n > 1000000) {
      fprintf(help ? stdout : stderr, "%susage: ztee-bench-capi [CALLS (1..1000000, default 30)]\n",
              help ? "" : "error: bad arguments\n");
      return help ? 0 : 2;
    }
    calls = (int)n;
  }
  static const char *const tru[] = {"true"};
  ztee_runtime *rt = NULL;
  ztee_sandbox *sb = NULL;
  double *run_us, *read_us;
  char *mib;
  if (calls < 1) calls = 1;
  run_us = calloc((size_t)calls, sizeof *run_us);
  read_us = calloc((size_t)calls, sizeof *read_us);
  mib = malloc(1 << 20);
  if (!run_us || !read_us || !mib) return 1;
  memset(mib, 'x', 1 << 20);
  if (ztee_runtime_create(NULL, &rt) != ZTEE_OK) return die("runtime");
  if (ztee_sandbox_create(rt, NULL, &sb) != ZTEE_OK) return die("sandbox");
  if (ztee_sandbox_write_file(sb, "/tmp/mib", mib, 1 << 20, 0644) != ZTEE_OK) return die("write");
  for (i = -20; i < calls; i++) { /* 20 warm-up calls */
    ztee_exec_options eo = ZTEE_EXEC_OPTIONS_INIT;
    ztee_exec_result *r = NULL;
    void *data = NULL;
    size_t len = 0;
    double t0;
    eo.argv = tru;
    eo.argc = 1;
    t0 = now_us();
    if (ztee_sandbox_exec(sb, &eo, &r) != ZTEE_OK) return die("exec");
    if (i >= 0) run_us[i] = now_us() - t0;
    ztee_exec_result_free(r);
    t0 = now_us();
    if (ztee_sandbox_read_file(sb, "/tmp/mib", 0, &data, &len) != ZTEE_OK || len != 1 << 20) return die("read");
    if (i >= 0) read_us[i] = now_us() - t0;
    ztee_free(data);
  }
  {
    int pings = 10 * calls;
    double *ping_us = calloc((size_t)pings, sizeof *ping_us);
    if (!ping_us) return 1;
    for (i = -50; i < pings; i++) {
      double t0 = now_us();
      if (ztee_sandbox_ping(sb) != ZTEE_OK) return die("ping");
      if (i >= 0) ping_us[i] = now_us() - t0;
    }
    printf("{\"lang\": \"c\", \"run_true_p50_us\": %.1f, \"read_1mib_p50_us\": %.1f, \"ping_p50_us\": %.1f, "
           "\"calls\": %d}\n",
           p50(run_us, calls), p50(read_us, calls), p50(ping_us, pings), calls);
    free(ping_us);
  }
  ztee_sandbox_free(sb);
  ztee_runtime_free(rt);
  free(run_us);
  free(read_us);
  free(mib);
  return 0;
}
