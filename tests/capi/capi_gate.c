/* The control plane through the C ABI: policies (parse errors with their
 * line, classify), the audit log (append, field validation, verify, a
 * tampered copy), the control plane's struct sizes, and a gate against real
 * microVMs served by one pool: a call that runs, denials, an approval
 * answered from another thread, a denial from inside the approver, a secret
 * from the resolver callback scrubbed from the output and the log, and an
 * unknown secret. Needs the guest image and fails without it. */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

#define SENTINEL ((void *)(uintptr_t)0x5a5a5a5a)

static const char kPolicy[] =
    "{\n"
    "  \"version\": 1,\n"
    "  \"tiers\": {\n"
    "    \"L0\": {\"action\": \"run\", \"timeout_ms\": 30000},\n"
    "    \"L2\": {\"action\": \"audit\", \"timeout_ms\": 30000},\n"
    "    \"L4\": {\"action\": \"approve\", \"approval_timeout_ms\": 20000},\n"
    "    \"L5\": {\"action\": \"deny\"}\n"
    "  },\n"
    "  \"rules\": [\n"
    "    {\"name\": \"forbidden\", \"tool\": \"format_disk\", \"tier\": \"L5\"},\n"
    "    {\"name\": \"pii\", \"labels\": [\"pii\"], \"tier\": \"L4\"},\n"
    "    {\"name\": \"reads\", \"tool\": [\"read_file\", \"cat\"], \"tier\": \"L0\"},\n"
    "    {\"name\": \"writes\", \"tool\": \"write_file\", \"tier\": \"L2\"},\n"
    "    {\"name\": \"code\", \"tool\": [\"python\", \"shell\"], \"tier\": \"L4\"}\n"
    "  ]\n"
    "}\n";

static const char kSecret[] = "zt-c4p1-LIVE-90210";
static const char kKey[] = "audit-key";

static char g_dir[64];

static char *read_all(const char *path) {
  FILE *f = fopen(path, "rb");
  char *buf;
  long n;
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  buf = (char *)malloc((size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) n = 0;
  if (buf) buf[n] = '\0';
  fclose(f);
  return buf;
}

static int write_all(const char *path, const char *data) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  fputs(data, f);
  return fclose(f);
}

static ztee_decision *classify(const ztee_policy *p, const char *tool, const char *cmd, const char *label) {
  ztee_tool_call c = ZTEE_TOOL_CALL_INIT;
  ztee_decision *d = NULL;
  c.tool = tool;
  c.command = cmd;
  if (label) {
    c.labels = &label;
    c.labels_count = 1;
  }
  CHECK_STATUS(ztee_policy_classify(p, &c, &d), ZTEE_OK);
  return d;
}

static void test_policy(void) {
  ztee_policy *p = (ztee_policy *)SENTINEL;
  ztee_decision *d;
  char path[128];
  /* Parse errors name their line. */
  static const char bad_action[] = "{\"version\": 1,\n \"tiers\": {\"L0\": {\"action\": \"run\"}},\n"
                                   " \"rules\": [\n  {\"name\": \"x\", \"tier\": \"L0\", \"colour\": \"red\"}\n ]\n}";
  static const char bad_tier[] = "{\"version\": 1,\n \"tiers\": {\n  \"L0\": {\"action\": \"launch\"}}}";
  CHECK_STATUS(ztee_policy_parse(bad_action, sizeof bad_action - 1, &p), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STR_CONTAINS(ztee_last_error()->message, "line 4");
  CHECK_STR_CONTAINS(ztee_last_error()->message, "colour");
  CHECK(p == (ztee_policy *)SENTINEL);
  CHECK_STATUS(ztee_policy_parse(bad_tier, sizeof bad_tier - 1, &p), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STR_CONTAINS(ztee_last_error()->message, "line 3");
  CHECK_STATUS(ztee_policy_parse("{", 1, &p), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_policy_parse(NULL, 0, &p), ZTEE_E_INVALID_ARGUMENT);
  CHECK(p == (ztee_policy *)SENTINEL);
  snprintf(path, sizeof path, "%s/no-such-policy.json", g_dir);
  CHECK_STATUS(ztee_policy_load(path, &p), ZTEE_E_NOT_FOUND);
  CHECK_STR_CONTAINS(ztee_last_error()->message, "no-such-policy.json");

  /* The default policy and its JSON. */
  CHECK_STR_CONTAINS(ztee_policy_default_json(), "\"read-only-tools\"");
  p = NULL;
  CHECK_STATUS(ztee_policy_default(&p), ZTEE_OK);
  if (p) {
    d = classify(p, "read_file", "cat /etc/hostname", NULL);
    if (d) {
      CHECK(d->tier == 0 && d->action == ZTEE_ACTION_RUN && strcmp(d->rule, "read-only-tools") == 0);
      ztee_decision_free(d);
    }
    d = classify(p, "python", "python3 x.py", NULL);
    if (d) {
      CHECK(d->tier == 4 && d->action == ZTEE_ACTION_APPROVE);
      ztee_decision_free(d);
    }
    ztee_policy_free(p);
  }

  /* Our policy, from a file: each tier's action, the first rule wins, no match fails closed. */
  snprintf(path, sizeof path, "%s/policy.json", g_dir);
  CHECK(write_all(path, kPolicy) == 0);
  p = NULL;
  CHECK_STATUS(ztee_policy_load(path, &p), ZTEE_OK);
  if (!p) return;
  d = classify(p, "cat", "cat /etc/hostname", NULL);
  if (d) {
    CHECK(d->tier == 0 && d->action == ZTEE_ACTION_RUN && d->rule_index == 2 && strcmp(d->rule, "reads") == 0);
    CHECK_STR_CONTAINS(d->reason, "L0 run");
    ztee_decision_free(d);
  }
  d = classify(p, "write_file", "echo x > /tmp/x", NULL);
  if (d) {
    CHECK(d->tier == 2 && d->action == ZTEE_ACTION_AUDIT && d->rule_index == 3);
    ztee_decision_free(d);
  }
  d = classify(p, "read_file", "cat /data/patients.csv", "pii");
  if (d) {
    CHECK(d->tier == 4 && d->action == ZTEE_ACTION_APPROVE && strcmp(d->rule, "pii") == 0);
    ztee_decision_free(d);
  }
  d = classify(p, "format_disk", NULL, NULL); /* classify needs no command */
  if (d) {
    CHECK(d->tier == 5 && d->action == ZTEE_ACTION_DENY && d->rule_index == 0);
    ztee_decision_free(d);
  }
  d = classify(p, "launch_rocket", "go", NULL);
  if (d) {
    CHECK(d->action == ZTEE_ACTION_DENY && d->rule_index == -1 && d->rule[0] == '\0');
    CHECK_STR_CONTAINS(d->reason, "fail closed");
    ztee_decision_free(d);
  }
  /* Bad tool calls. */
  {
    ztee_tool_call c = ZTEE_TOOL_CALL_INIT;
    static const char *const argv[] = {"echo", NULL};
    static const char *const env[] = {"A=1", "A=2"};
    d = (ztee_decision *)SENTINEL;
    CHECK_STATUS(ztee_policy_classify(p, &c, &d), ZTEE_E_INVALID_ARGUMENT); /* no tool */
    CHECK_STR_CONTAINS(ztee_last_error()->message, "call->tool");
    c.tool = "cat";
    c.argv = argv;
    c.argc = 2;
    CHECK_STATUS(ztee_policy_classify(p, &c, &d), ZTEE_E_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "call->argv[1] is NULL");
    c.argc = 1;
    c.command = "echo";
    CHECK_STATUS(ztee_policy_classify(p, &c, &d), ZTEE_E_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "not both");
    c.command = NULL;
    c.env = env;
    c.env_count = 2;
    CHECK_STATUS(ztee_policy_classify(p, &c, &d), ZTEE_E_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "\"A\" twice");
    c.env_count = 0;
    c.labels_count = 1;
    CHECK_STATUS(ztee_policy_classify(p, &c, &d), ZTEE_E_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "call->labels");
    CHECK(d == (ztee_decision *)SENTINEL);
    CHECK_STATUS(ztee_policy_classify(NULL, &c, &d), ZTEE_E_INVALID_ARGUMENT);
  }
  ztee_policy_free(p);
  ztee_policy_free(NULL);
  ztee_decision_free(NULL);
}

/* struct_size rules of the three new options structs: 0 and a size inside
 * a field are refused; a newer caller's larger struct is accepted when its
 * extra bytes are zero and refused otherwise. */
struct newer_tool_call { ztee_tool_call c; unsigned char extra[16]; };
struct newer_audit_options { ztee_audit_options o; unsigned char extra[16]; };
struct newer_gate_options { ztee_gate_options o; unsigned char extra[16]; };

static void test_struct_sizes(ztee_runtime *rt) {
  ztee_policy *p = NULL;
  ztee_decision *d = NULL;
  char path[128];
  struct newer_tool_call nc;
  struct newer_audit_options na;
  struct newer_gate_options ng;
  ztee_tool_call c;
  ztee_audit_log *log = NULL;
  ztee_gate *g = NULL;

  CHECK_STATUS(ztee_policy_default(&p), ZTEE_OK);
  if (!p) return;
  /* ztee_tool_call */
  CHECK_STATUS(ztee_tool_call_init(&c, sizeof c), ZTEE_OK);
  CHECK(c.struct_size == sizeof c && c.tool == NULL && c.cancel == NULL);
  CHECK_STATUS(ztee_tool_call_init(&c, 0), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_tool_call_init(&c, offsetof(ztee_tool_call, argc) + 2), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_tool_call_init(NULL, sizeof c), ZTEE_E_INVALID_ARGUMENT);
  c.tool = "cat";
  c.struct_size = 0;
  CHECK_STATUS(ztee_policy_classify(p, &c, &d), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STR_CONTAINS(ztee_last_error()->message, "ZTEE_TOOL_CALL_INIT");
  c.struct_size = (uint32_t)offsetof(ztee_tool_call, cancel); /* no earlier layout */
  CHECK_STATUS(ztee_policy_classify(p, &c, &d), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_tool_call_init(&nc.c, sizeof nc), ZTEE_OK);
  CHECK(nc.c.struct_size == sizeof nc && nc.extra[15] == 0);
  nc.c.tool = "cat";
  CHECK_STATUS(ztee_policy_classify(p, &nc.c, &d), ZTEE_OK);
  ztee_decision_free(d);
  d = NULL;
  nc.extra[3] = 1;
  CHECK_STATUS(ztee_policy_classify(p, &nc.c, &d), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STR_CONTAINS(ztee_last_error()->message, "newer ztee.h");
  CHECK(d == NULL);

  /* ztee_audit_options */
  snprintf(path, sizeof path, "%s/sizes.jsonl", g_dir);
  CHECK_STATUS(ztee_audit_options_init(&na.o, sizeof na), ZTEE_OK);
  CHECK(na.o.struct_size == sizeof na && na.o.path == NULL && na.o.rotate_bytes == 0);
  CHECK_STATUS(ztee_audit_options_init(&na.o, 3), ZTEE_E_INVALID_ARGUMENT);
  na.o.path = path;
  CHECK_STATUS(ztee_audit_open(&na.o, &log), ZTEE_OK);
  ztee_audit_free(log);
  log = NULL;
  na.extra[15] = 1;
  CHECK_STATUS(ztee_audit_open(&na.o, &log), ZTEE_E_INVALID_ARGUMENT);
  CHECK(log == NULL);
  na.extra[15] = 0;
  na.o.struct_size = 0;
  CHECK_STATUS(ztee_audit_open(&na.o, &log), ZTEE_E_INVALID_ARGUMENT);
  na.o.struct_size = sizeof na.o;
  na.o.durability = 7;
  CHECK_STATUS(ztee_audit_open(&na.o, &log), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STR_CONTAINS(ztee_last_error()->message, "durability 7");
  na.o.durability = ZTEE_DURABILITY_NONE;
  na.o.hmac_key_len = 4;
  CHECK_STATUS(ztee_audit_open(&na.o, &log), ZTEE_E_INVALID_ARGUMENT);
  na.o.hmac_key_len = 0;
  na.o.path = NULL;
  CHECK_STATUS(ztee_audit_open(&na.o, &log), ZTEE_E_INVALID_ARGUMENT);
  CHECK(log == NULL);

  /* ztee_gate_options (no VM is booted by a gate until a call runs) */
  CHECK_STATUS(ztee_gate_options_init(&ng.o, sizeof ng), ZTEE_OK);
  CHECK(ng.o.struct_size == sizeof ng && ng.o.policy == NULL && ng.o.pool == NULL);
  CHECK_STATUS(ztee_gate_options_init(&ng.o, offsetof(ztee_gate_options, approver) + 1), ZTEE_E_INVALID_ARGUMENT);
  ng.o.policy = p;
  CHECK_STATUS(ztee_gate_create(rt, &ng.o, &g), ZTEE_OK);
  ztee_gate_free(g);
  g = NULL;
  ng.extra[0] = 0xff;
  CHECK_STATUS(ztee_gate_create(rt, &ng.o, &g), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STR_CONTAINS(ztee_last_error()->message, "ztee_gate_options");
  ng.extra[0] = 0;
  ng.o.struct_size = 0;
  CHECK_STATUS(ztee_gate_create(rt, &ng.o, &g), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_gate_create(NULL, NULL, &g), ZTEE_E_INVALID_ARGUMENT);
  CHECK(g == NULL);
  CHECK_STATUS(ztee_gate_create(rt, NULL, &g), ZTEE_OK); /* all defaults */
  ztee_gate_free(g);
  ztee_gate_free(NULL);
  ztee_policy_free(p);
}

static void test_audit(void) {
  char path[128], copy[128];
  ztee_audit_options ao = ZTEE_AUDIT_OPTIONS_INIT;
  ztee_audit_log *log = NULL;
  ztee_audit_report *rep = NULL;
  uint64_t seq = 0;
  const char *files[1];
  char *text, *hit;

  snprintf(path, sizeof path, "%s/own.jsonl", g_dir);
  ao.path = path;
  ao.hmac_key = kKey;
  ao.hmac_key_len = strlen(kKey);
  CHECK_STATUS(ztee_audit_open(&ao, &log), ZTEE_OK);
  if (!log) return;
  CHECK_STATUS(ztee_audit_append(log, "login", "t-1", "\"user\":\"alice\",\"n\":3", &seq), ZTEE_OK);
  CHECK(seq == 1);
  CHECK_STATUS(ztee_audit_append(log, "logout", NULL, NULL, &seq), ZTEE_OK);
  CHECK(seq == 2);
  CHECK_STATUS(ztee_audit_append(log, "nested", "t-2", "\"a\":{\"b\":[1,2,null]}", NULL), ZTEE_OK);
  /* Fields that are not the inside of a JSON object, span lines or reuse a record key. */
  seq = 99;
  CHECK_STATUS(ztee_audit_append(log, "x", "", "\"user\":", &seq), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STR_CONTAINS(ztee_last_error()->message, "not the inner part of a JSON object");
  CHECK_STATUS(ztee_audit_append(log, "x", "", "\"a\":1},{\"b\":2", &seq), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_audit_append(log, "x", "", "\"a\":1,", &seq), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_audit_append(log, "x", "", "\"a\":\n1", &seq), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STR_CONTAINS(ztee_last_error()->message, "one line");
  CHECK_STATUS(ztee_audit_append(log, "x", "", "\"prev\":\"0000\"", &seq), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STR_CONTAINS(ztee_last_error()->message, "\"prev\"");
  CHECK_STATUS(ztee_audit_append(log, "", "", NULL, &seq), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_audit_append(NULL, "x", "", NULL, &seq), ZTEE_E_INVALID_ARGUMENT);
  CHECK(seq == 99);
  CHECK_STATUS(ztee_audit_flush(log), ZTEE_OK);
  ztee_audit_free(log);
  ztee_audit_free(NULL);

  /* A reopened log continues the chain. */
  log = NULL;
  ao.durability = ZTEE_DURABILITY_BATCH;
  CHECK_STATUS(ztee_audit_open(&ao, &log), ZTEE_OK);
  if (log) {
    CHECK_STATUS(ztee_audit_append(log, "again", "t-3", "", &seq), ZTEE_OK);
    CHECK(seq == 4);
    CHECK_STATUS(ztee_audit_flush(log), ZTEE_OK);
    ztee_audit_free(log);
  }

  files[0] = path;
  CHECK_STATUS(ztee_audit_verify(files, 1, kKey, strlen(kKey), &rep), ZTEE_OK);
  if (rep) {
    CHECK(rep->ok == 1 && rep->records == 4 && rep->problem[0] == '\0');
    ztee_audit_report_free(rep);
  }
  rep = NULL;
  CHECK_STATUS(ztee_audit_verify(files, 1, "wrong", 5, &rep), ZTEE_OK);
  if (rep) {
    CHECK(rep->ok == 0);
    CHECK_STR_CONTAINS(rep->problem, "HMAC");
    ztee_audit_report_free(rep);
  }
  /* A one-byte edit in a copy is found, with and without the key. */
  text = read_all(path);
  CHECK(text != NULL);
  if (text) {
    hit = strstr(text, "\"n\":3");
    CHECK(hit != NULL);
    if (hit) hit[4] = '4';
    snprintf(copy, sizeof copy, "%s/own-edited.jsonl", g_dir);
    CHECK(write_all(copy, text) == 0);
    files[0] = copy;
    rep = NULL;
    CHECK_STATUS(ztee_audit_verify(files, 1, NULL, 0, &rep), ZTEE_OK);
    if (rep) {
      CHECK(rep->ok == 0);
      CHECK_STR_CONTAINS(rep->problem, "record 2");
      ztee_audit_report_free(rep);
    }
    free(text);
  }
  rep = (ztee_audit_report *)SENTINEL;
  CHECK_STATUS(ztee_audit_verify(NULL, 0, NULL, 0, &rep), ZTEE_E_INVALID_ARGUMENT);
  CHECK_STATUS(ztee_audit_verify(files, 1, NULL, 3, &rep), ZTEE_E_INVALID_ARGUMENT);
  CHECK(rep == (ztee_audit_report *)SENTINEL);
  ztee_audit_report_free(NULL);
}

/* ---- the gate against real sandboxes ---- */

enum approve_mode { APPROVE_LATER_FROM_THREAD, DENY_NOW, APPROVE_NOW };

struct approver_state {
  enum approve_mode mode;
  int calls;
  char token[128];
  char description[4096];
  uint32_t deadline_ms;
  ztee_gate *gate;
  pthread_t thread;
  int thread_started;
  ztee_status thread_status;
};

static void *approve_later(void *arg) {
  struct approver_state *s = (struct approver_state *)arg;
  usleep(300 * 1000);
  s->thread_status = ztee_gate_approve(s->gate, s->token, "bob via webhook");
  return NULL;
}

static void approver(void *user_data, ztee_gate *gate, const char *token, const char *description_json,
                     uint32_t deadline_ms) {
  struct approver_state *s = (struct approver_state *)user_data;
  s->calls++;
  s->gate = gate;
  s->deadline_ms = deadline_ms;
  snprintf(s->token, sizeof s->token, "%s", token);
  snprintf(s->description, sizeof s->description, "%s", description_json);
  switch (s->mode) {
    case APPROVE_LATER_FROM_THREAD:
      s->thread_started = pthread_create(&s->thread, NULL, approve_later, s) == 0;
      break;
    case DENY_NOW:
      CHECK_STATUS(ztee_gate_deny(gate, token, "not today", "carol"), ZTEE_OK);
      break;
    case APPROVE_NOW:
      CHECK_STATUS(ztee_gate_approve(gate, token, "alice"), ZTEE_OK);
      break;
  }
}

struct resolver_state {
  int calls;
  char last[64];
};

static ztee_status resolver(void *user_data, const char *name, ztee_secret_value *out) {
  struct resolver_state *s = (struct resolver_state *)user_data;
  s->calls++;
  snprintf(s->last, sizeof s->last, "%s", name);
  if (strcmp(name, "API_KEY") != 0) return ZTEE_E_NOT_FOUND;
  return ztee_secret_value_set(out, kSecret, strlen(kSecret));
}

struct collected {
  char data[4096];
  size_t len;
};

static void collect(void *user_data, const char *data, size_t len) {
  struct collected *c = (struct collected *)user_data;
  if (len > sizeof c->data - 1 - c->len) len = sizeof c->data - 1 - c->len;
  memcpy(c->data + c->len, data, len);
  c->len += len;
  c->data[c->len] = '\0';
}

static ztee_call_result *gate_run(ztee_gate *g, const char *tool, const char *cmd, const char *trace) {
  ztee_tool_call c = ZTEE_TOOL_CALL_INIT;
  ztee_call_result *r = NULL;
  c.tool = tool;
  c.command = cmd;
  c.trace_id = trace;
  CHECK_STATUS(ztee_gate_call(g, &c, &r), ZTEE_OK);
  return r;
}

static uint64_t leases(ztee_pool *pool) {
  ztee_pool_stats st = ZTEE_POOL_STATS_INIT;
  CHECK_STATUS(ztee_pool_stats_get(pool, &st), ZTEE_OK);
  return st.leases;
}

/* Output DLP through the gate: a card number redacted and counted; with
 * "card" in dlp_block the output is withheld; an unknown detector refused. */
static void test_dlp(ztee_runtime *rt) {
  ztee_gate_options go = ZTEE_GATE_OPTIONS_INIT;
  ztee_gate *g = NULL;
  ztee_call_result *r;
  const char *block[] = {"card"};
  const char *bogus[] = {"no_such_detector"};

  go.dlp_block = bogus;
  go.dlp_block_count = 1;
  CHECK_STATUS(ztee_gate_create(rt, &go, &g), ZTEE_E_INVALID_ARGUMENT);
  go.dlp_block = NULL;
  go.dlp_block_count = 0;
  CHECK(g == NULL);
  CHECK(strstr(ztee_last_error()->message, "no_such_detector") != NULL);

  /* The layout before the DLP fields is still accepted. */
  go.struct_size = (uint32_t)offsetof(ztee_gate_options, dlp);
  CHECK_STATUS(ztee_gate_create(rt, &go, &g), ZTEE_OK);
  ztee_gate_free(g);
  g = NULL;
  go.struct_size = sizeof go;
  go.dlp = 1; /* default policy: read_file runs at L0 */
  go.dlp_block = NULL;
  go.dlp_block_count = 0;
  CHECK_STATUS(ztee_gate_create(rt, &go, &g), ZTEE_OK);
  if (g) {
    r = gate_run(g, "read_file", "echo pay 4111 1111 1111 1111 now", "c-dlp");
    if (r) {
      CHECK(r->ran == 1 && r->blocked == 0 && r->dlp_findings == 1);
      if (r->exec) CHECK(strcmp(r->exec->stdout_data, "pay [REDACTED:card] now\n") == 0);
    }
    ztee_call_result_free(r);
    ztee_gate_free(g);
    g = NULL;
  }
  go.dlp = 0;
  go.dlp_block = block;
  go.dlp_block_count = 1;
  CHECK_STATUS(ztee_gate_create(rt, &go, &g), ZTEE_OK);
  if (g) {
    r = gate_run(g, "read_file", "echo 4111111111111111", "c-dlp-block");
    if (r) {
      CHECK(r->ran == 1 && r->blocked == 1 && r->dlp_findings == 1);
      CHECK(strstr(r->denial, "output blocked") != NULL && strstr(r->denial, "4111") == NULL);
      if (r->exec) CHECK(r->exec->stdout_len == 0);
    }
    ztee_call_result_free(r);
    ztee_gate_free(g);
  }
}

/* Takes over rt (freed before the gate's last call). */
static void test_gate(ztee_runtime *rt) {
  ztee_pool_options po = ZTEE_POOL_OPTIONS_INIT;
  ztee_gate_options go = ZTEE_GATE_OPTIONS_INIT;
  ztee_audit_options ao = ZTEE_AUDIT_OPTIONS_INIT;
  ztee_pool *pool = NULL;
  ztee_policy *policy = NULL;
  ztee_audit_log *log = NULL;
  ztee_gate *g = NULL;
  ztee_call_result *r;
  struct approver_state ap;
  struct resolver_state rs;
  char log_path[128], *text;
  uint64_t before;
  const char *files[1];
  ztee_audit_report *rep = NULL;

  memset(&ap, 0, sizeof ap);
  memset(&rs, 0, sizeof rs);
  po.min_ready = 1;
  po.max_total = 2;
  po.lease_timeout_ms = 60000;
  CHECK_STATUS(ztee_pool_create(rt, &po, &pool), ZTEE_OK);
  CHECK_STATUS(ztee_policy_parse(kPolicy, strlen(kPolicy), &policy), ZTEE_OK);
  snprintf(log_path, sizeof log_path, "%s/gate.jsonl", g_dir);
  ao.path = log_path;
  ao.hmac_key = kKey;
  ao.hmac_key_len = strlen(kKey);
  CHECK_STATUS(ztee_audit_open(&ao, &log), ZTEE_OK);
  if (!pool || !policy || !log) goto out;
  go.policy = policy;
  go.audit = log;
  go.pool = pool;
  go.approver = approver;
  go.approver_data = &ap;
  go.resolver = resolver;
  go.resolver_data = &rs;
  CHECK_STATUS(ztee_gate_create(rt, &go, &g), ZTEE_OK);
  /* The gate keeps its own references: the caller's may go at once. */
  ztee_policy_free(policy);
  policy = NULL;
  ztee_audit_free(log);
  log = NULL;
  if (!g) goto out;

  /* L0 run, from the pool. */
  before = leases(pool);
  r = gate_run(g, "cat", "cat /etc/hostname >/dev/null && echo read-ok", "c-run");
  if (r) {
    CHECK(r->ran == 1 && r->tier == 0 && r->action == ZTEE_ACTION_RUN && strcmp(r->rule, "reads") == 0);
    CHECK(r->exec != NULL && r->exec->exit_code == 0);
    if (r->exec) CHECK(strcmp(r->exec->stdout_data, "read-ok\n") == 0);
    CHECK(strncmp(r->sandbox_id, "sb-", 3) == 0 && r->denial[0] == '\0' && r->approved_by[0] == '\0');
    ztee_call_result_free(r);
  }
  CHECK(leases(pool) == before + 1);

  /* Denials: an L5 rule and no rule at all; nothing is leased. */
  before = leases(pool);
  r = gate_run(g, "format_disk", "mkfs /dev/vda", "c-deny");
  if (r) {
    CHECK(r->ran == 0 && r->exec == NULL && r->action == ZTEE_ACTION_DENY && strcmp(r->rule, "forbidden") == 0);
    CHECK(r->denial[0] != '\0' && r->sandbox_id[0] == '\0');
    ztee_call_result_free(r);
  }
  r = gate_run(g, "launch_rocket", "true", "c-nomatch");
  if (r) {
    CHECK(r->ran == 0 && r->rule_index == -1);
    CHECK_STR_CONTAINS(r->denial, "fail closed");
    ztee_call_result_free(r);
  }
  CHECK(leases(pool) == before);

  /* L4: approved later from another thread. */
  ap.mode = APPROVE_LATER_FROM_THREAD;
  r = gate_run(g, "python", "python3 -c 'print(6*7)'", "c-approve");
  if (ap.thread_started) pthread_join(ap.thread, NULL);
  CHECK(ap.calls == 1 && ap.thread_status == ZTEE_OK);
  CHECK(ap.deadline_ms > 15000 && ap.deadline_ms <= 20000);
  CHECK_STR_CONTAINS(ap.description, "\"tool\":\"python\"");
  CHECK_STR_CONTAINS(ap.description, "\"tier\":\"L4\"");
  CHECK_STR_CONTAINS(ap.description, "\"trace\":\"c-approve\"");
  if (r) {
    CHECK(r->ran == 1 && r->action == ZTEE_ACTION_APPROVE && strcmp(r->approved_by, "bob via webhook") == 0);
    if (r->exec) CHECK(strcmp(r->exec->stdout_data, "42\n") == 0);
    ztee_call_result_free(r);
  }
  /* The answered token is gone. */
  CHECK_STATUS(ztee_gate_approve(g, ap.token, "again"), ZTEE_E_NOT_FOUND);
  CHECK_STATUS(ztee_gate_deny(g, "no-such-token", "x", NULL), ZTEE_E_NOT_FOUND);
  CHECK_STATUS(ztee_gate_approve(g, NULL, NULL), ZTEE_E_INVALID_ARGUMENT);

  /* L4: denied from inside the approver. */
  ap.mode = DENY_NOW;
  before = leases(pool);
  r = gate_run(g, "shell", "echo no", "c-denied");
  if (r) {
    CHECK(r->ran == 0 && r->exec == NULL);
    CHECK(strcmp(r->denial, "denied by carol: not today") == 0);
    ztee_call_result_free(r);
  }
  CHECK(leases(pool) == before);

  /* A secret from the resolver callback: in env and in a file; scrubbed from
   * the streamed stderr and the collected stdout (also in hex). L2 audit. */
  {
    ztee_tool_call c = ZTEE_TOOL_CALL_INIT;
    static const char *const env[] = {"API_KEY=secret://API_KEY", "PLAIN=visible"};
    static const char *const paths[] = {"/tmp/cred", "/tmp/plain"};
    static const char *const contents[] = {"secret://API_KEY", "ab\0cd"};
    static const size_t lengths[] = {16, 5};
    static const char *const writes[] = {"/tmp/out"};
    struct collected err;
    memset(&err, 0, sizeof err);
    c.tool = "write_file";
    c.command = "echo \"$API_KEY\"; cat /tmp/cred; echo; printf %s \"$API_KEY\" | od -An -tx1 | tr -d ' \\n'; echo;"
                " od -An -c /tmp/plain | tr -s ' '; echo \"err $API_KEY\" >&2";
    c.env = env;
    c.env_count = 2;
    c.file_paths = paths;
    c.file_contents = contents;
    c.file_lengths = lengths;
    c.file_count = 2;
    c.writes = writes;
    c.writes_count = 1;
    c.trace_id = "c-secret";
    c.on_stderr = collect;
    c.user_data = &err;
    r = NULL;
    CHECK_STATUS(ztee_gate_call(g, &c, &r), ZTEE_OK);
    CHECK(rs.calls >= 1 && strcmp(rs.last, "API_KEY") == 0);
    if (r) {
      CHECK(r->ran == 1 && r->action == ZTEE_ACTION_AUDIT);
      if (r->exec) {
        CHECK(strstr(r->exec->stdout_data, kSecret) == NULL);
        CHECK(strcmp(r->exec->stdout_data,
                     "[secret:API_KEY]\n[secret:API_KEY]\n[secret:API_KEY]\n a b \\0 c d\n") == 0);
        if (strcmp(r->exec->stdout_data, "[secret:API_KEY]\n[secret:API_KEY]\n[secret:API_KEY]\n a b \\0 c d\n") != 0)
          fprintf(stderr, "stdout was: %s\n", r->exec->stdout_data);
        CHECK(r->exec->stderr_len == 0);
      }
      ztee_call_result_free(r);
    }
    CHECK(strcmp(err.data, "err [secret:API_KEY]\n") == 0);
  }

  /* An unknown secret: ZTEE_E_NOT_FOUND, and nothing runs. */
  {
    ztee_tool_call c = ZTEE_TOOL_CALL_INIT;
    static const char *const env[] = {"X=secret://NOPE"};
    c.tool = "cat";
    c.command = "true";
    c.env = env;
    c.env_count = 1;
    c.trace_id = "c-nope";
    r = (ztee_call_result *)SENTINEL;
    before = leases(pool);
    CHECK_STATUS(ztee_gate_call(g, &c, &r), ZTEE_E_NOT_FOUND);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "secret://NOPE");
    CHECK(strcmp(rs.last, "NOPE") == 0);
    CHECK(r == (ztee_call_result *)SENTINEL);
    CHECK(leases(pool) == before);
    /* Nothing to run is refused before anything is recorded. */
    c.command = NULL;
    c.env_count = 0;
    CHECK_STATUS(ztee_gate_call(g, &c, &r), ZTEE_E_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(ztee_last_error()->message, "nothing to run");
  }

  /* Handles may be freed in any order: the gate keeps the pool open and the
   * runtime alive; a later call is still served by the pool. */
  ztee_pool_free(pool);
  pool = NULL;
  ztee_runtime_free(rt);
  rt = NULL;
  r = gate_run(g, "cat", "echo after", "c-after");
  if (r) {
    CHECK(r->ran == 1);
    if (r->exec) CHECK(strcmp(r->exec->stdout_data, "after\n") == 0);
    ztee_call_result_free(r);
  }
  ztee_gate_free(g);
  g = NULL;

  /* The log: complete, verifiable, and free of the secret and env values. */
  text = read_all(log_path);
  CHECK(text != NULL);
  if (text) {
    CHECK(strstr(text, kSecret) == NULL);
    CHECK(strstr(text, "visible") == NULL);
    CHECK_STR_CONTAINS(text, "\"trace\":\"c-approve\",\"event\":\"approval_granted\"");
    CHECK_STR_CONTAINS(text, "\"trace\":\"c-denied\",\"event\":\"approval_denied\"");
    CHECK_STR_CONTAINS(text, "\"event\":\"approval_ignored\"");
    CHECK_STR_CONTAINS(text, "\"trace\":\"c-secret\",\"event\":\"secrets\",\"names\":[\"API_KEY\"]");
    CHECK_STR_CONTAINS(text, "\"trace\":\"c-nope\",\"event\":\"secret_unresolved\"");
    CHECK_STR_CONTAINS(text, "\"trace\":\"c-after\",\"event\":\"sandbox\"");
    {
      const char *after = strstr(text, "\"trace\":\"c-after\",\"event\":\"sandbox\"");
      if (after) CHECK(strncmp(strstr(after, "\"pooled\":"), "\"pooled\":true", 13) == 0);
    }
    free(text);
  }
  files[0] = log_path;
  CHECK_STATUS(ztee_audit_verify(files, 1, kKey, strlen(kKey), &rep), ZTEE_OK);
  if (rep) {
    CHECK(rep->ok == 1 && rep->records > 20);
    if (!rep->ok) fprintf(stderr, "verify: %s\n", rep->problem);
    ztee_audit_report_free(rep);
  }

out:
  ztee_gate_free(g);
  ztee_audit_free(log);
  ztee_policy_free(policy);
  ztee_pool_free(pool);
  ztee_runtime_free(rt);
}

static void cleanup_dir(void) {
  static const char *const names[] = {"policy.json", "sizes.jsonl", "own.jsonl", "own-edited.jsonl", "gate.jsonl"};
  char path[128];
  size_t i;
  for (i = 0; i < sizeof names / sizeof names[0]; i++) {
    snprintf(path, sizeof path, "%s/%s", g_dir, names[i]);
    unlink(path);
  }
  rmdir(g_dir);
}

int main(void) {
  const char *image = test_image_dir();
  char manifest[4096];
  struct stat st;
  ztee_runtime_options ro = ZTEE_RUNTIME_OPTIONS_INIT;
  ztee_runtime *rt = NULL;

  snprintf(g_dir, sizeof g_dir, "/tmp/ztee-capi-gate-XXXXXX");
  if (!mkdtemp(g_dir)) {
    perror("mkdtemp");
    return 1;
  }
  CHECK(ztee_has_feature("gate") == 1);
  test_policy();
  test_audit();

  snprintf(manifest, sizeof manifest, "%s/manifest.json", image);
  if (stat(manifest, &st) != 0) {
    fprintf(stderr,
            "capi_gate: FAIL: no guest image at %s (missing %s). Build it with "
            "`ztee image build --out %s` or set ZTEE_IMAGE_DIR.\n",
            image, manifest, image);
    cleanup_dir();
    return 1;
  }
  ro.image_dir = image;
  CHECK_STATUS(ztee_runtime_create(&ro, &rt), ZTEE_OK);
  if (rt) {
    test_struct_sizes(rt);
    test_dlp(rt);
    test_gate(rt); /* frees rt */
  }
  cleanup_dir();
  return finish("capi_gate");
}
