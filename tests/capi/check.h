/* Minimal test harness for the C ABI tests: CHECK records a failure and goes on. */
#ifndef ZTEE_TEST_CHECK_H
#define ZTEE_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ztee.h"

static int g_failures = 0;

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      g_failures++;                                                        \
    }                                                                      \
  } while (0)

/* Checks a status and, on mismatch, prints the library's last error. */
#define CHECK_STATUS(expr, want)                                                     \
  do {                                                                               \
    ztee_status st_ = (expr);                                                        \
    if (st_ != (want)) {                                                             \
      const ztee_error *e_ = ztee_last_error();                                      \
      fprintf(stderr, "%s:%d: %s returned %s, want %s (last error: %s: %s)\n",      \
              __FILE__, __LINE__, #expr, ztee_status_name(st_), ztee_status_name(want), \
              ztee_status_name(e_->code), e_->message ? e_->message : "(NULL!)");   \
      g_failures++;                                                                  \
    }                                                                                \
  } while (0)

#define CHECK_STR_CONTAINS(hay, needle)                                                  \
  do {                                                                                   \
    const char *h_ = (hay);                                                              \
    if (!h_ || !strstr(h_, (needle))) {                                                  \
      fprintf(stderr, "%s:%d: \"%s\" does not contain \"%s\"\n", __FILE__, __LINE__,   \
              h_ ? h_ : "(NULL)", (needle));                                             \
      g_failures++;                                                                      \
    }                                                                                    \
  } while (0)

static int finish(const char *name) {
  if (g_failures) {
    fprintf(stderr, "%s: %d check(s) failed\n", name, g_failures);
    return 1;
  }
  printf("%s: all checks passed\n", name);
  return 0;
}

/* The guest image the VM tests use: $ZTEE_IMAGE_DIR or the default. */
static const char *test_image_dir(void) {
  const char *d = getenv("ZTEE_IMAGE_DIR");
  return (d && *d) ? d : "/var/lib/ztee/images/default";
}

#endif
