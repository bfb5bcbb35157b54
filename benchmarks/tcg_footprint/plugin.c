// A QEMU TCG plugin for tcg_footprint.py: counts how often each translated
// block runs (one inline add per block, no callback) and, whenever the file
// DIR/dump.<qemu pid> appears, writes every block run since QEMU started as
// "vaddr instructions runs" lines to DIR/<qemu pid>.<n>, then removes the
// request. Load with: -plugin <this .so>,dir=DIR
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plugin_api.h"

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

struct block {
  uint64_t vaddr, insns, runs;
};

// Blocks are never moved once handed to QEMU (it adds into `runs`): chunks of
// fixed size, appended under a lock, read by the dump thread up to `count`.
enum { kChunk = 1 << 16, kChunks = 4096 };
static struct block* chunks[kChunks];
static size_t count;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char dir[512];

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb* tb) {
  (void)id;
  pthread_mutex_lock(&lock);
  size_t i = count;
  struct block* b = NULL;
  if (i / kChunk < kChunks) {
    if (!chunks[i / kChunk]) chunks[i / kChunk] = calloc(kChunk, sizeof(struct block));
    if (chunks[i / kChunk]) {
      b = &chunks[i / kChunk][i % kChunk];
      b->vaddr = qemu_plugin_tb_vaddr(tb);
      b->insns = qemu_plugin_tb_n_insns(tb);
      __atomic_store_n(&count, i + 1, __ATOMIC_RELEASE);
    }
  }
  pthread_mutex_unlock(&lock);
  if (b) qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->runs, 1);
}

static void dump(const char* tmp, const char* final) {
  FILE* f = fopen(tmp, "w");
  if (!f) return;
  size_t n = __atomic_load_n(&count, __ATOMIC_ACQUIRE);
  for (size_t i = 0; i < n; i++) {
    const struct block* b = &chunks[i / kChunk][i % kChunk];
    uint64_t runs = __atomic_load_n(&b->runs, __ATOMIC_RELAXED);
    if (runs) fprintf(f, "%llx %llu %llu\n", (unsigned long long)b->vaddr, (unsigned long long)b->insns,
                      (unsigned long long)runs);
  }
  if (fclose(f) == 0) rename(tmp, final);
}

static void* dumper(void* arg) {
  (void)arg;
  char req[600], tmp[600], final[600];
  int pid = (int)getpid();
  snprintf(req, sizeof req, "%s/dump.%d", dir, pid);
  for (unsigned seq = 0;;) {
    usleep(50 * 1000);
    if (access(req, F_OK) != 0) continue;
    snprintf(tmp, sizeof tmp, "%s/.%d.%u", dir, pid, seq);
    snprintf(final, sizeof final, "%s/%d.%u", dir, pid, seq);
    dump(tmp, final);
    seq++;
    unlink(req);
  }
  return NULL;
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t* info,
                                                                int argc, char** argv) {
  (void)info;
  for (int i = 0; i < argc; i++)
    if (strncmp(argv[i], "dir=", 4) == 0) snprintf(dir, sizeof dir, "%s", argv[i] + 4);
  if (!dir[0]) {
    fprintf(stderr, "tcg_footprint plugin: needs dir=DIR\n");
    return 1;
  }
  pthread_t t;
  if (pthread_create(&t, NULL, dumper, NULL) != 0) return 1;
  pthread_detach(t);
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  return 0;
}
