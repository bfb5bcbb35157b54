/* C ABI tests that need no VM: argument validation, options sizes, errors,
 * version and features. */
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

#include "check.h"

#define SENTINEL ((void *)(uintptr_t)0x5a5a5a5a)

/* Every failure must leave a non-NULL message in the per-thread error. */
static void check_last_error(ztee_status want) {
  const ztee_error *e = ztee_last_error();
  CHECK(e != NULL);
  if (!e) return;
  CHECK(e->code == want);
  CHECK(e->message != NULL);
  CHECK(e->message && e->message[0] != '\0');
}

static void test_version_and_names(void) {
  const char *v = ztee_version();
  int a, b, c;
  CHECK(v != NULL);
  CHECK(v && sscanf(v, "%d.%d.%d", &a, &b, &c) == 3);

  CHECK(strcmp(ztee_status_name(ZTEE_OK), "ZTEE_OK") == 0);
  CHECK(strcmp(ztee_status_name(ZTEE_E_INVALID_ARGUMENT), "ZTEE_E_INVALID_ARGUMENT") == 0);
  CHECK(strcmp(ztee_status_name(ZTEE_E_TIMEOUT), "ZTEE_E_TIMEOUT") == 0);
  CHECK(strcmp(ztee_status_name(ZTEE_E_IMAGE), "ZTEE_E_IMAGE") == 0);
  CHECK(strcmp(ztee_status_name(ZTEE_E_UNSUPPORTED), "ZTEE_E_UNSUPPORTED") == 0);
  CHECK(ztee_status_name(12345) != NULL);
  CHECK(ztee_status_name(-12345) != NULL);
  /* The numbers are ABI: never renumbered. */
  CHECK(ZTEE_E_INVALID_ARGUMENT == -1 && ZTEE_E_CLOSED == -9 && ZTEE_E_UNSUPPORTED == -14);
}

static void test_features(void) {
  CHECK(ztee_has_feature("qemu") == 1);
  CHECK(ztee_has_feature("firecracker") == 0);
  CHECK(ztee_has_feature("streaming") == 1);
  CHECK(ztee_has_feature("files") == 1);
  CHECK(ztee_has_feature("kvm") == (access("/dev/kvm", R_OK | W_OK) == 0 ? 1 : 0));
  CHECK(ztee_has_feature("no-such-feature") == 0);
  CHECK(ztee_has_feature(NULL) == 0);
}

static void test_last_error_initial(void) {
  const ztee_error *e = ztee_last_error();
  CHECK(e != NULL);
  CHECK(e && e->code == ZTEE_OK);
  CHECK(e && e->message != NULL);
}

static void test_free_null(void) {
  ztee_runtime_free(NULL);
  ztee_sandbox_free(NULL);
  ztee_exec_result_free(NULL);
  ztee_file_info_free(NULL);
  ztee_dir_list_free(NULL);
  ztee_free(NULL);
  CHECK(strcmp(ztee_sandbox_id(NULL), "") == 0);
}

static void test_options_init(void) {
  ztee_runtime_options ro;
  ztee_sandbox_options so;
  ztee_exec_options eo;
  size_t bad[] = {0, 3, (size_t)1 << 20, SIZE_MAX};
  size_t i;

  memset(&ro, 0x7f, sizeof ro);
  CHECK_STATUS(ztee_runtime_options_init(&ro, sizeof ro), ZTEE_OK);
  CHECK(ro.struct_size == sizeof ro && ro.image_dir == NULL && ro.accel == NULL);
  memset(&so, 0x7f, sizeof so);
  CHECK_STATUS(ztee_sandbox_options_init(&so, sizeof so), ZTEE_OK);
  CHECK(so.struct_size == sizeof so && so.vcpus == 0 && so.output_cap == 0);
  memset(&eo, 0x7f, sizeof eo);
  CHECK_STATUS(ztee_exec_options_init(&eo, sizeof eo), ZTEE_OK);
  CHECK(eo.struct_size == sizeof eo && eo.argv == NULL && eo.on_stdout == NULL);

  CHECK_STATUS(ztee_runtime_options_init(NULL, sizeof ro), ZTEE_E_INVALID_ARGUMENT);
  check_last_error(ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_sandbox_options_init(NULL, sizeof so), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_exec_options_init(NULL, sizeof eo), ZTEE_E_INVALID_ARGUMENT);
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CHECK_STATUS(ztee_runtime_options_init(&ro, bad[i]), ZTEE_E_INVALID_ARGUMENT);
    check_last_error(ZTEE_E_INVALID_ARGUMENT);
    CHECK_STATUS(ztee_sandbox_options_init(&so, bad[i]), ZTEE_E_INVALID_ARGUMENT);
    check_last_error(ZTEE_E_INVALID_ARGUMENT);
    CHECK_STATUS(ztee_exec_options_init(&eo, bad[i]), ZTEE_E_INVALID_ARGUMENT);
    check_last_error(ZTEE_E_INVALID_ARGUMENT);
  }

  /* The INIT macros compile and carry the size. */
  {
    ztee_runtime_options r2 = ZTEE_RUNTIME_OPTIONS_INIT;
    ztee_sandbox_options s2 = ZTEE_SANDBOX_OPTIONS_INIT;
    ztee_exec_options e2 = ZTEE_EXEC_OPTIONS_INIT;
    CHECK(r2.struct_size == sizeof r2);
    CHECK(s2.struct_size == sizeof s2);
    CHECK(e2.struct_size == sizeof e2);
  }
}

static void test_runtime_bad_sizes(void) {
  uint32_t sizes[] = {0, 3, 1u << 20, UINT32_MAX};
  size_t i;
  for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    ztee_runtime_options ro = ZTEE_RUNTIME_OPTIONS_INIT;
    ztee_runtime *rt = (ztee_runtime *)SENTINEL;
    ro.struct_size = sizes[i];
    CHECK_STATUS(ztee_runtime_create(&ro, &rt), ZTEE_E_INVALID_ARGUMENT);
    check_last_error(ZTEE_E_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "ZTEE_RUNTIME_OPTIONS_INIT");
    CHECK(rt == (ztee_runtime *)SENTINEL); /* *out untouched on failure */
  }
  CHECK_STATUS(ztee_runtime_create(NULL, NULL), ZTEE_E_INVALID_ARGUMENT);
  check_last_error(ZTEE_E_INVALID_ARGUMENT);
}

static void test_null_handles(void) {
  ztee_sandbox *sb = (ztee_sandbox *)SENTINEL;
  ztee_exec_result *res = (ztee_exec_result *)SENTINEL;
  ztee_file_info *fi = (ztee_file_info *)SENTINEL;
  ztee_dir_list *dl = (ztee_dir_list *)SENTINEL;
  void *data = SENTINEL;
  size_t len = 77;
  ztee_exec_options eo = ZTEE_EXEC_OPTIONS_INIT;
  const char *argv[] = {"true"};
  eo.argv = argv;
  eo.argc = 1;

  CHECK_STATUS(ztee_sandbox_create(NULL, NULL, &sb), ZTEE_E_INVALID_ARGUMENT);
  check_last_error(ZTEE_E_INVALID_ARGUMENT);
  CHECK(sb == (ztee_sandbox *)SENTINEL);
  CHECK_STATUS(ztee_sandbox_destroy(NULL), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_sandbox_ping(NULL), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_sandbox_exec(NULL, &eo, &res), ZTEE_E_INVALID_ARGUMENT);
  CHECK(res == (ztee_exec_result *)SENTINEL);
  CHECK_STATUS(ztee_sandbox_write_file(NULL, "/tmp/x", "x", 1, 0), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_sandbox_read_file(NULL, "/tmp/x", 0, &data, &len), ZTEE_E_INVALID_ARGUMENT);
  CHECK(data == SENTINEL && len == 77);
  CHECK_STATUS(ztee_sandbox_stat(NULL, "/tmp", &fi), ZTEE_E_INVALID_ARGUMENT);
  CHECK(fi == (ztee_file_info *)SENTINEL);
  CHECK_STATUS(ztee_sandbox_list_dir(NULL, "/tmp", &dl), ZTEE_E_INVALID_ARGUMENT);
  CHECK(dl == (ztee_dir_list *)SENTINEL);
  CHECK_STATUS(ztee_sandbox_remove(NULL, "/tmp/x", 0), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_sandbox_mkdir(NULL, "/tmp/x", 0, 0), ZTEE_E_INVALID_ARGUMENT);
  check_last_error(ZTEE_E_INVALID_ARGUMENT);
}

/* A runtime is created without booting anything; bad sandbox options are
 * rejected before any boot. */
static void test_sandbox_options_and_image(void) {
  ztee_runtime *rt = NULL;
  ztee_runtime_options ro = ZTEE_RUNTIME_OPTIONS_INIT;
  const char *missing = "/nonexistent/ztee-test-no-image";
  ztee_status st;
  ro.image_dir = missing;
  st = ztee_runtime_create(&ro, &rt);
  if (st != ZTEE_OK) {
    /* The runtime may check the image up front. */
    CHECK(st == ZTEE_E_IMAGE);
    check_last_error(ZTEE_E_IMAGE);
    CHECK_STR_CONTAINS(ztee_last_error()->message, missing);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "ztee image build");
    return;
  }
  {
    uint32_t sizes[] = {0, 3, 1u << 20, UINT32_MAX};
    size_t i;
    for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
      ztee_sandbox_options so = ZTEE_SANDBOX_OPTIONS_INIT;
      ztee_sandbox *sb = (ztee_sandbox *)SENTINEL;
      so.struct_size = sizes[i];
      CHECK_STATUS(ztee_sandbox_create(rt, &so, &sb), ZTEE_E_INVALID_ARGUMENT);
      check_last_error(ZTEE_E_INVALID_ARGUMENT);
      CHECK_STR_CONTAINS(ztee_last_error()->message, "ZTEE_SANDBOX_OPTIONS_INIT");
      CHECK(sb == (ztee_sandbox *)SENTINEL);
    }
  }
  {
    ztee_sandbox *sb = (ztee_sandbox *)SENTINEL;
    CHECK_STATUS(ztee_sandbox_create(rt, NULL, NULL), ZTEE_E_INVALID_ARGUMENT);
    /* The runtime's image does not exist. */
    CHECK_STATUS(ztee_sandbox_create(rt, NULL, &sb), ZTEE_E_IMAGE);
    check_last_error(ZTEE_E_IMAGE);
    CHECK_STR_CONTAINS(ztee_last_error()->message, missing);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "ztee image build");
    CHECK(sb == (ztee_sandbox *)SENTINEL);
  }
  {
    /* Same through the per-sandbox image_dir. */
    ztee_sandbox_options so = ZTEE_SANDBOX_OPTIONS_INIT;
    ztee_sandbox *sb = (ztee_sandbox *)SENTINEL;
    so.image_dir = "/nonexistent/ztee-other-image";
    CHECK_STATUS(ztee_sandbox_create(rt, &so, &sb), ZTEE_E_IMAGE);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "/nonexistent/ztee-other-image");
    CHECK_STR_CONTAINS(ztee_last_error()->message, "ztee image build");
    CHECK(sb == (ztee_sandbox *)SENTINEL);
  }
  ztee_runtime_free(rt);
}

static void test_missing_qemu(void) {
  ztee_runtime *rt = NULL;
  ztee_runtime_options ro = ZTEE_RUNTIME_OPTIONS_INIT;
  ztee_status st;
  ro.qemu_binary = "/nonexistent/qemu-system-x86_64";
  ro.backend = "qemu";
  ro.image_dir = test_image_dir();
  st = ztee_runtime_create(&ro, &rt);
  if (st == ZTEE_OK) {
    ztee_sandbox *sb = (ztee_sandbox *)SENTINEL;
    st = ztee_sandbox_create(rt, NULL, &sb);
    CHECK(sb == (ztee_sandbox *)SENTINEL);
    if (st == ZTEE_OK) ztee_sandbox_free(sb);
    ztee_runtime_free(rt);
  }
  CHECK_STATUS(st, ZTEE_E_BACKEND_UNAVAILABLE);
  if (st != ZTEE_OK) {
    check_last_error(st);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "/nonexistent/qemu-system-x86_64");
  }
}

/* The last error is per thread. */
static void *fail_in_thread(void *arg) {
  (void)arg;
  (void)ztee_sandbox_ping(NULL);
  return (void *)(intptr_t)ztee_last_error()->code;
}

static void test_thread_local_error(void) {
  pthread_t t;
  void *ret = NULL;
  ztee_runtime_options ro = ZTEE_RUNTIME_OPTIONS_INIT;
  ztee_runtime *rt = NULL;
  ro.struct_size = 3;
  CHECK_STATUS(ztee_runtime_create(&ro, &rt), ZTEE_E_INVALID_ARGUMENT);
  {
    const char *before = ztee_last_error()->message;
    char copy[512];
    snprintf(copy, sizeof copy, "%s", before);
    CHECK(pthread_create(&t, NULL, fail_in_thread, NULL) == 0);
    CHECK(pthread_join(t, &ret) == 0);
    CHECK((intptr_t)ret == ZTEE_E_INVALID_ARGUMENT);
    CHECK(strcmp(ztee_last_error()->message, copy) == 0);
  }
}

int main(void) {
  test_last_error_initial();
  test_version_and_names();
  test_features();
  test_free_null();
  test_options_init();
  test_runtime_bad_sizes();
  test_null_handles();
  test_thread_local_error();
  test_sandbox_options_and_image();
  test_missing_qemu();
  return finish("capi_basic");
}
