/* C ABI tests that need no VM: argument validation, options sizes, errors,
 * version and features. */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
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
  CHECK(ztee_has_feature("pool") == 1);
  CHECK(ztee_has_feature("snapshot") == 1);
  CHECK(ztee_has_feature("guest_aslr") == 1);
  /* "kvm" answers what a default runtime picks (checked against one in
   * test_accel); never KVM where there is no /dev/kvm or when told tcg. */
  CHECK(ztee_has_feature("kvm") == 0 || ztee_has_feature("kvm") == 1);
  if (access("/dev/kvm", F_OK) != 0) CHECK(ztee_has_feature("kvm") == 0);
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
  ztee_pool_close(NULL);
  ztee_pool_free(NULL);
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

/* Sizes of the options and stats structs added for pools and snapshots. */
static void test_new_struct_sizes(void) {
  ztee_pool_options po;
  ztee_sandbox_options so;
  /* (Larger sizes come from newer callers: test_newer_callers.) */
  size_t bad[] = {0, 3, (size_t)1 << 20, SIZE_MAX, sizeof(ztee_pool_options) - 4};
  size_t i;
  const size_t old_size = offsetof(ztee_sandbox_options, template_dir);

  memset(&po, 0x7f, sizeof po);
  CHECK_STATUS(ztee_pool_options_init(&po, sizeof po), ZTEE_OK);
  CHECK(po.struct_size == sizeof po && po.sandbox == NULL && po.template_dir == NULL);
  CHECK(po.cold_boot == 0 && po.min_ready == 0 && po.max_total == 0 && po.lease_timeout_ms == 0);
  CHECK(po.warm_up == NULL);
  /* The 0.3 layout (ending before warm_up) is still accepted. */
  memset(&po, 0x7f, sizeof po);
  CHECK_STATUS(ztee_pool_options_init(&po, offsetof(ztee_pool_options, warm_up)), ZTEE_OK);
  CHECK(po.struct_size == offsetof(ztee_pool_options, warm_up) && po.lease_timeout_ms == 0);
  CHECK(*(const unsigned char *)&po.warm_up == 0x7f); /* beyond its size: untouched */
  CHECK_STATUS(ztee_pool_options_init(NULL, sizeof po), ZTEE_E_INVALID_ARGUMENT);
  check_last_error(ZTEE_E_INVALID_ARGUMENT);
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CHECK_STATUS(ztee_pool_options_init(&po, bad[i]), ZTEE_E_INVALID_ARGUMENT);
    check_last_error(ZTEE_E_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "ZTEE_POOL_OPTIONS_INIT");
  }
  {
    ztee_pool_options p2 = ZTEE_POOL_OPTIONS_INIT;
    ztee_pool_stats st = ZTEE_POOL_STATS_INIT;
    ztee_sandbox_options s2 = ZTEE_SANDBOX_OPTIONS_INIT;
    CHECK(p2.struct_size == sizeof p2 && p2.sandbox == NULL);
    CHECK(st.struct_size == sizeof st && st.leases == 0 && st.lease_wait_hist[7] == 0);
    CHECK(s2.template_dir == NULL && s2.snapshottable == 0 && s2.guest_aslr == ZTEE_GUEST_ASLR_AUTO);
  }

  /* ztee_sandbox_options: the 0.1 layout (ending before template_dir) is
   * still accepted; a size that ends inside or between the new fields is not. */
  memset(&so, 0x7f, sizeof so);
  CHECK_STATUS(ztee_sandbox_options_init(&so, old_size), ZTEE_OK);
  CHECK(so.struct_size == old_size && so.vcpus == 0 && so.output_cap == 0);
  CHECK(*(const unsigned char *)&so.template_dir == 0x7f); /* beyond its size: untouched */
  /* The 0.3 layout (ending before guest_aslr) too. */
  memset(&so, 0x7f, sizeof so);
  CHECK_STATUS(ztee_sandbox_options_init(&so, offsetof(ztee_sandbox_options, guest_aslr)), ZTEE_OK);
  CHECK(so.net_dns == NULL && so.net_allow_count == 0);
  CHECK(*(const unsigned char *)&so.guest_aslr == 0x7f); /* beyond its size: untouched */
  {
    size_t between[] = {old_size + 4, offsetof(ztee_sandbox_options, snapshottable),
                        offsetof(ztee_sandbox_options, snapshottable) + 2,
                        offsetof(ztee_sandbox_options, guest_aslr) + 2};
    for (i = 0; i < sizeof between / sizeof between[0]; i++) {
      CHECK_STATUS(ztee_sandbox_options_init(&so, between[i]), ZTEE_E_INVALID_ARGUMENT);
      check_last_error(ZTEE_E_INVALID_ARGUMENT);
      CHECK_STR_CONTAINS(ztee_last_error()->message, "ZTEE_SANDBOX_OPTIONS_INIT");
    }
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
  CHECK_STATUS(ztee_sandbox_pause(NULL), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_sandbox_resume(NULL), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_sandbox_snapshot(NULL, "/tmp/ztee-tpl"), ZTEE_E_INVALID_ARGUMENT);
  check_last_error(ZTEE_E_INVALID_ARGUMENT);

  {
    ztee_pool *pool = (ztee_pool *)SENTINEL;
    ztee_pool_stats st = ZTEE_POOL_STATS_INIT;
    char *msg = (char *)SENTINEL;
    CHECK_STATUS(ztee_pool_create(NULL, NULL, &pool), ZTEE_E_INVALID_ARGUMENT);
    check_last_error(ZTEE_E_INVALID_ARGUMENT);
    CHECK(pool == (ztee_pool *)SENTINEL);
    sb = (ztee_sandbox *)SENTINEL;
    CHECK_STATUS(ztee_pool_lease(NULL, 10, &sb), ZTEE_E_INVALID_ARGUMENT);
    CHECK(sb == (ztee_sandbox *)SENTINEL);
    CHECK_STATUS(ztee_pool_stats_get(NULL, &st), ZTEE_E_INVALID_ARGUMENT);
    CHECK_STATUS(ztee_pool_last_error(NULL, &msg), ZTEE_E_INVALID_ARGUMENT);
    CHECK(msg == (char *)SENTINEL);
    check_last_error(ZTEE_E_INVALID_ARGUMENT);
  }
}

/* Pool options are checked before anything boots. */
static void test_pool_options(ztee_runtime *rt, const char *missing) {
  uint32_t sizes[] = {0, 3, 1u << 20, UINT32_MAX};
  size_t i;
  ztee_pool *pool = (ztee_pool *)SENTINEL;
  for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    ztee_pool_options po = ZTEE_POOL_OPTIONS_INIT;
    ztee_sandbox_options so = ZTEE_SANDBOX_OPTIONS_INIT;
    po.struct_size = sizes[i];
    CHECK_STATUS(ztee_pool_create(rt, &po, &pool), ZTEE_E_INVALID_ARGUMENT);
    check_last_error(ZTEE_E_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "ZTEE_POOL_OPTIONS_INIT");
    /* The nested sandbox options are checked too. */
    po.struct_size = sizeof po;
    so.struct_size = sizes[i];
    po.sandbox = &so;
    CHECK_STATUS(ztee_pool_create(rt, &po, &pool), ZTEE_E_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "ZTEE_SANDBOX_OPTIONS_INIT");
  }
  {
    ztee_pool_options po = ZTEE_POOL_OPTIONS_INIT;
    ztee_sandbox_options so = ZTEE_SANDBOX_OPTIONS_INIT;
    CHECK_STATUS(ztee_pool_create(rt, NULL, NULL), ZTEE_E_INVALID_ARGUMENT);
    po.cold_boot = 1;
    po.template_dir = "/nonexistent/tpl";
    CHECK_STATUS(ztee_pool_create(rt, &po, &pool), ZTEE_E_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "cold_boot");
    po.cold_boot = 0;
    po.template_dir = NULL;
    po.min_ready = 4;
    po.max_total = 2;
    CHECK_STATUS(ztee_pool_create(rt, &po, &pool), ZTEE_E_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "max_total");
    po.min_ready = 0;
    po.max_total = 0;
    so.template_dir = "/nonexistent/tpl";
    po.sandbox = &so;
    CHECK_STATUS(ztee_pool_create(rt, &po, &pool), ZTEE_E_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "template_dir");
  }
  {
    /* A template that does not exist. */
    ztee_pool_options po = ZTEE_POOL_OPTIONS_INIT;
    ztee_sandbox *sb = (ztee_sandbox *)SENTINEL;
    po.template_dir = "/nonexistent/ztee-no-template";
    CHECK(ztee_pool_create(rt, &po, &pool) != ZTEE_OK);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "/nonexistent/ztee-no-template");
    CHECK(pool == (ztee_pool *)SENTINEL);
    /* Same for one sandbox. */
    {
      ztee_sandbox_options so = ZTEE_SANDBOX_OPTIONS_INIT;
      so.template_dir = "/nonexistent/ztee-no-template";
      CHECK(ztee_sandbox_create(rt, &so, &sb) != ZTEE_OK);
      CHECK_STR_CONTAINS(ztee_last_error()->message, "/nonexistent/ztee-no-template");
      CHECK(sb == (ztee_sandbox *)SENTINEL);
    }
  }
  {
    /* A cold-boot pool over a missing image: either refused up front, or its
     * starts fail and show in the stats and last error, and leases time out. */
    ztee_pool_options po = ZTEE_POOL_OPTIONS_INIT;
    ztee_status st;
    po.cold_boot = 1;
    po.min_ready = 1;
    po.max_total = 1;
    st = ztee_pool_create(rt, &po, &pool);
    if (st != ZTEE_OK) {
      CHECK(st == ZTEE_E_IMAGE);
      CHECK_STR_CONTAINS(ztee_last_error()->message, missing);
      CHECK(pool == (ztee_pool *)SENTINEL);
    } else {
      ztee_sandbox *sb = (ztee_sandbox *)SENTINEL;
      ztee_pool_stats stats = ZTEE_POOL_STATS_INIT;
      char *msg = NULL;
      CHECK_STATUS(ztee_pool_lease(pool, 300, &sb), ZTEE_E_TIMEOUT);
      CHECK(sb == (ztee_sandbox *)SENTINEL);
      CHECK_STATUS(ztee_pool_stats_get(pool, &stats), ZTEE_OK);
      CHECK(stats.failed >= 1 && stats.created == 0 && stats.lease_timeouts == 1);
      CHECK(stats.leased == 0 && stats.leases == 0);
      CHECK_STATUS(ztee_pool_last_error(pool, &msg), ZTEE_OK);
      CHECK_STR_CONTAINS(msg, missing);
      ztee_free(msg);
      /* Bad stats sizes. */
      {
        /* (A larger struct is a newer caller's: capi_vm's check_stats.) */
        uint32_t bad[] = {0, 3, sizeof(ztee_pool_stats) - 8, 1u << 20};
        for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
          stats.struct_size = bad[i];
          CHECK_STATUS(ztee_pool_stats_get(pool, &stats), ZTEE_E_INVALID_ARGUMENT);
          CHECK_STR_CONTAINS(ztee_last_error()->message, "ZTEE_POOL_STATS_INIT");
        }
        CHECK_STATUS(ztee_pool_stats_get(pool, NULL), ZTEE_E_INVALID_ARGUMENT);
        CHECK_STATUS(ztee_pool_last_error(pool, NULL), ZTEE_E_INVALID_ARGUMENT);
        CHECK_STATUS(ztee_pool_lease(pool, 10, NULL), ZTEE_E_INVALID_ARGUMENT);
      }
      ztee_pool_close(pool);
      ztee_pool_close(pool); /* a no-op */
      CHECK_STATUS(ztee_pool_lease(pool, 10, &sb), ZTEE_E_CLOSED);
      CHECK(sb == (ztee_sandbox *)SENTINEL);
      ztee_pool_free(pool);
    }
  }
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
  {
    /* The 0.1 size of ztee_sandbox_options reaches the image check (so it
     * was accepted); a size between fields is refused before it. */
    ztee_sandbox_options so = ZTEE_SANDBOX_OPTIONS_INIT;
    ztee_sandbox *sb = (ztee_sandbox *)SENTINEL;
    so.struct_size = (uint32_t)offsetof(ztee_sandbox_options, template_dir);
    so.template_dir = "/nonexistent/must-be-ignored"; /* beyond the caller's size */
    CHECK_STATUS(ztee_sandbox_create(rt, &so, &sb), ZTEE_E_IMAGE);
    CHECK_STR_CONTAINS(ztee_last_error()->message, missing);
    CHECK(sb == (ztee_sandbox *)SENTINEL);
    so.struct_size = (uint32_t)offsetof(ztee_sandbox_options, template_dir) + 4;
    CHECK_STATUS(ztee_sandbox_create(rt, &so, &sb), ZTEE_E_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "ZTEE_SANDBOX_OPTIONS_INIT");
    CHECK(sb == (ztee_sandbox *)SENTINEL);
  }
  test_pool_options(rt, missing);
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

/* A program built against a newer ztee.h passes a larger struct: zero bytes
 * past this libztee's layout are that program's defaults and accepted; a
 * non-zero one is a field this libztee cannot honour and is refused. Every
 * options struct (exec options and pool stats need a sandbox: capi_vm). */
struct newer_runtime_options { ztee_runtime_options o; unsigned char extra[24]; };
struct newer_sandbox_options { ztee_sandbox_options o; unsigned char extra[24]; };
struct newer_pool_options { ztee_pool_options o; unsigned char extra[24]; };
struct newer_exec_options { ztee_exec_options o; unsigned char extra[24]; };

static void test_newer_callers(void) {
  const char *missing = "/nonexistent/ztee-newer-caller";
  ztee_runtime *rt = NULL, *r2 = (ztee_runtime *)SENTINEL;
  struct newer_runtime_options ro;
  struct newer_sandbox_options so;
  struct newer_pool_options po;
  struct newer_exec_options eo;
  ztee_sandbox *sb = (ztee_sandbox *)SENTINEL;
  ztee_pool *pool = (ztee_pool *)SENTINEL;
  memset(&ro, 0x7f, sizeof ro);
  CHECK_STATUS(ztee_runtime_options_init(&ro.o, sizeof ro), ZTEE_OK);
  CHECK(ro.o.struct_size == sizeof ro && ro.extra[0] == 0 && ro.extra[23] == 0);
  CHECK_STATUS(ztee_runtime_options_init(&ro.o, 4097), ZTEE_E_INVALID_ARGUMENT);
  memset(&eo, 0x7f, sizeof eo);
  CHECK_STATUS(ztee_exec_options_init(&eo.o, sizeof eo), ZTEE_OK);
  CHECK(eo.o.struct_size == sizeof eo && eo.extra[23] == 0);
  ro.o.image_dir = test_image_dir();
  CHECK_STATUS(ztee_runtime_create(&ro.o, &rt), ZTEE_OK);
  ro.extra[5] = 1;
  CHECK_STATUS(ztee_runtime_create(&ro.o, &r2), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STR_CONTAINS(ztee_last_error()->message, "newer ztee.h");
  CHECK(r2 == (ztee_runtime *)SENTINEL);
  if (!rt) return;

  CHECK_STATUS(ztee_sandbox_options_init(&so.o, sizeof so), ZTEE_OK);
  so.o.image_dir = missing; /* accepted, then fails on the image: nothing boots */
  CHECK(ztee_sandbox_create(rt, &so.o, &sb) != ZTEE_OK);
  CHECK(ztee_last_error()->code != ZTEE_E_INVALID_ARGUMENT);
  CHECK_STR_CONTAINS(ztee_last_error()->message, missing);
  so.extra[23] = 2;
  CHECK_STATUS(ztee_sandbox_create(rt, &so.o, &sb), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STR_CONTAINS(ztee_last_error()->message, "ztee_sandbox_options sets a field this libztee does not know");
  CHECK(sb == (ztee_sandbox *)SENTINEL);

  CHECK_STATUS(ztee_pool_options_init(&po.o, sizeof po), ZTEE_OK);
  po.o.template_dir = "/nonexistent/ztee-newer-template";
  CHECK(ztee_pool_create(rt, &po.o, &pool) != ZTEE_OK);
  CHECK(ztee_last_error()->code != ZTEE_E_INVALID_ARGUMENT);
  CHECK_STR_CONTAINS(ztee_last_error()->message, "/nonexistent/ztee-newer-template");
  po.extra[0] = 1;
  CHECK_STATUS(ztee_pool_create(rt, &po.o, &pool), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STR_CONTAINS(ztee_last_error()->message, "ztee_pool_options sets a field this libztee does not know");
  CHECK(pool == (ztee_pool *)SENTINEL);
  ztee_runtime_free(rt);
}

/* accel: the runtime's choice matches ztee_has_feature("kvm") and says why;
 * an explicit "kvm" where KVM cannot run the image fails before any VMM
 * starts; ZTEE_ACCEL is the default. No sandbox boots here. */
static void test_accel(void) {
  ztee_runtime_options ro = ZTEE_RUNTIME_OPTIONS_INIT;
  ztee_runtime *rt = NULL;
  const char *be;
  struct stat node;
  int kvm = ztee_has_feature("kvm");
  ro.image_dir = test_image_dir();
  CHECK_STATUS(ztee_runtime_create(&ro, &rt), ZTEE_OK);
  if (rt) {
    be = ztee_runtime_backend(rt);
    CHECK(strncmp(be, kvm ? "qemu/kvm (" : "qemu/tcg (", 10) == 0);
    if (!kvm && stat("/dev/kvm", &node) == 0 && S_ISCHR(node.st_mode) && access("/sys/module/kvm_pvm", F_OK) == 0)
      CHECK_STR_CONTAINS(be, "kvm_pvm, which runs only PVM guest kernels");
    ztee_runtime_free(rt);
    rt = NULL;
  }
  CHECK(strcmp(ztee_runtime_backend(NULL), "") == 0);
  ro.accel = "tcg";
  CHECK_STATUS(ztee_runtime_create(&ro, &rt), ZTEE_OK);
  if (rt) CHECK(strncmp(ztee_runtime_backend(rt), "qemu/tcg (accel tcg requested", 29) == 0);
  ztee_runtime_free(rt);
  rt = (ztee_runtime *)SENTINEL;
  ro.accel = "warp";
  CHECK_STATUS(ztee_runtime_create(&ro, &rt), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STR_CONTAINS(ztee_last_error()->message, "use auto, kvm or tcg");
  CHECK(rt == (ztee_runtime *)SENTINEL);
  if (!kvm) {
    ro.accel = "kvm";
    CHECK_STATUS(ztee_runtime_create(&ro, &rt), ZTEE_E_BACKEND_UNAVAILABLE);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "accel kvm cannot run this image");
    CHECK(rt == (ztee_runtime *)SENTINEL);
  }
  /* ZTEE_ACCEL is the default when accel is NULL. */
  ro.accel = NULL;
  setenv("ZTEE_ACCEL", "tcg", 1);
  CHECK(ztee_has_feature("kvm") == 0);
  rt = NULL;
  CHECK_STATUS(ztee_runtime_create(&ro, &rt), ZTEE_OK);
  if (rt) CHECK(strncmp(ztee_runtime_backend(rt), "qemu/tcg (ZTEE_ACCEL=tcg", 24) == 0);
  ztee_runtime_free(rt);
  rt = (ztee_runtime *)SENTINEL;
  setenv("ZTEE_ACCEL", "bogus", 1);
  CHECK_STATUS(ztee_runtime_create(&ro, &rt), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STR_CONTAINS(ztee_last_error()->message, "$ZTEE_ACCEL");
  unsetenv("ZTEE_ACCEL");
}

/* jail_disabled: older callers' size still works; without the jail a
 * network policy is refused before anything boots. */
static void test_jail_option(void) {
  ztee_runtime_options ro;
  ztee_runtime *rt = NULL;
  ztee_sandbox *sb = (ztee_sandbox *)SENTINEL;
  ztee_sandbox_options so = ZTEE_SANDBOX_OPTIONS_INIT;
  static const char *const allow[] = {"198.18.0.10:80/tcp"};
  char state[] = "/tmp/ztee-capi-jail.XXXXXX";
  char cmd[128];
  CHECK(ztee_has_feature("jail") == 1);
  CHECK_STATUS(ztee_runtime_options_init(&ro, offsetof(ztee_runtime_options, jail_disabled)), ZTEE_OK);
  CHECK_STATUS(ztee_runtime_options_init(&ro, offsetof(ztee_runtime_options, trusted_keys)), ZTEE_OK); /* 0.4 */
  CHECK_STATUS(ztee_runtime_options_init(&ro, sizeof ro), ZTEE_OK);
  CHECK(ro.jail_disabled == 0 && ro.trusted_keys == NULL && ro.trusted_key_count == 0 && ro.require_vuln_gate == 0);
  CHECK(ztee_has_feature("image_trust") == 1);
  /* A trusted key that does not exist: refused at create, nothing started. */
  {
    static const char *const keys[] = {"/nonexistent/ztee-test.pub"};
    ztee_runtime *bad = (ztee_runtime *)SENTINEL;
    ro.trusted_keys = keys;
    ro.trusted_key_count = 1;
    CHECK_STATUS(ztee_runtime_create(&ro, &bad), ZTEE_E_INVALID_ARGUMENT);
    CHECK(bad == (ztee_runtime *)SENTINEL);
    ro.trusted_keys = NULL;
    CHECK_STATUS(ztee_runtime_create(&ro, &bad), ZTEE_E_INVALID_ARGUMENT); /* NULL array with a count */
    ro.trusted_key_count = 0;
  }
  CHECK(mkdtemp(state) != NULL);
  ro.state_dir = state;
  ro.image_dir = test_image_dir();
  ro.jail_disabled = 1;
  CHECK_STATUS(ztee_runtime_create(&ro, &rt), ZTEE_OK);
  if (rt) {
    /* A guest_aslr outside the ZTEE_GUEST_ASLR_* values: refused up front. */
    so.guest_aslr = 7;
    CHECK_STATUS(ztee_sandbox_create(rt, &so, &sb), ZTEE_E_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "guest_aslr 7");
    CHECK(sb == (ztee_sandbox *)SENTINEL);
    so.guest_aslr = ZTEE_GUEST_ASLR_AUTO;
    so.net_allow = allow;
    so.net_allow_count = 1;
    CHECK_STATUS(ztee_sandbox_create(rt, &so, &sb), ZTEE_E_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "jail");
    CHECK(sb == (ztee_sandbox *)SENTINEL);
    ztee_runtime_free(rt);
  }
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", state);
  CHECK(system(cmd) == 0);
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
  test_new_struct_sizes();
  test_runtime_bad_sizes();
  test_null_handles();
  test_thread_local_error();
  test_sandbox_options_and_image();
  test_missing_qemu();
  test_accel();
  test_newer_callers();
  test_jail_option();
  return finish("capi_basic");
}
