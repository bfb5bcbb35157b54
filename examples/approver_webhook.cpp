// A policy gate whose approvals come from a webhook: before a high-risk tool
// call runs, the call's JSON is POSTed to $ZTEE_APPROVAL_URL (a chat bot, an
// n8n flow, ...) and the gate waits for the reply
//   {"approve": true, "by": "alice"}   or   {"approve": false, "reason": "..."}
// No reply before the tier's deadline, an HTTP error or a malformed reply
// denies the call. Uses the C ABI (ztee.h), libcurl and simdjson.
//
//   ZTEE_APPROVAL_URL=http://127.0.0.1:8080/approve approver_webhook
// prints 42 when approved; exits 126 with the reason when denied.
// $ZTEE_AUDIT_LOG (optional) receives the audit records.
#include <curl/curl.h>
#include <simdjson.h>
#include <ztee.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Approvals {
  std::string url;
  std::mutex mu;
  std::vector<std::thread> pending;  // one per asked approval, joined at the end
};

size_t collect(char* data, size_t size, size_t n, void* out) {
  auto* s = static_cast<std::string*>(out);
  if (s->size() + size * n > 64 * 1024) return 0;  // a reply this big is not an answer
  s->append(data, size * n);
  return size * n;
}

// POSTs the description and answers the gate from the reply. Runs on its own
// thread: the gate accepts answers from any thread until the deadline.
void ask_webhook(ztee_gate* gate, std::string url, std::string token, std::string description, uint32_t deadline_ms) {
  std::string reply;
  long http = 0;
  CURL* curl = curl_easy_init();
  CURLcode rc = CURLE_FAILED_INIT;
  if (curl) {
    curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, description.c_str());
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &reply);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(deadline_ms));
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    rc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &http);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
  }
  if (rc != CURLE_OK || http != 200) {
    std::string why = rc != CURLE_OK ? curl_easy_strerror(rc) : "HTTP " + std::to_string(http);
    ztee_gate_deny(gate, token.c_str(), ("webhook: " + why).c_str(), "webhook");
    return;
  }
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  bool approve = false;
  std::string_view by = "webhook", reason = "the webhook said no";
  if (parser.parse(reply).get(doc) || doc["approve"].get_bool().get(approve)) {
    ztee_gate_deny(gate, token.c_str(), "webhook: malformed reply", "webhook");
    return;
  }
  if (doc["by"].get_string().get(by)) by = "webhook";  // both optional
  if (doc["reason"].get_string().get(reason)) reason = "the webhook said no";
  std::string who(by), why(reason);
  if (approve)
    ztee_gate_approve(gate, token.c_str(), who.c_str());
  else
    ztee_gate_deny(gate, token.c_str(), why.c_str(), who.c_str());
}

void approver(void* data, ztee_gate* gate, const char* token, const char* description, uint32_t deadline_ms) {
  auto* a = static_cast<Approvals*>(data);
  std::lock_guard lk(a->mu);
  a->pending.emplace_back(ask_webhook, gate, a->url, std::string(token), std::string(description), deadline_ms);
}

int fail(const char* what) {
  std::fprintf(stderr, "approver_webhook: %s: %s\n", what, ztee_last_error()->message);
  return 1;
}

}  // namespace

int main() {
  const char* url = std::getenv("ZTEE_APPROVAL_URL");
  if (!url || !*url) {
    std::fprintf(stderr, "approver_webhook: set ZTEE_APPROVAL_URL to the webhook that answers approvals\n");
    return 2;
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);
  Approvals approvals;
  approvals.url = url;

  ztee_runtime* rt = nullptr;
  if (ztee_runtime_create(nullptr, &rt) != ZTEE_OK) return fail("runtime");
  ztee_audit_log* log = nullptr;
  if (const char* path = std::getenv("ZTEE_AUDIT_LOG")) {
    ztee_audit_options ao = ZTEE_AUDIT_OPTIONS_INIT;
    ao.path = path;
    if (ztee_audit_open(&ao, &log) != ZTEE_OK) return fail("audit log");
  }
  ztee_gate_options go = ZTEE_GATE_OPTIONS_INIT;  // the default policy: code execution needs approval
  go.audit = log;
  go.approver = approver;
  go.approver_data = &approvals;
  ztee_gate* gate = nullptr;
  if (ztee_gate_create(rt, &go, &gate) != ZTEE_OK) return fail("gate");

  const char* argv[] = {"python3", "-c", "print(6 * 7)"};
  ztee_tool_call call = ZTEE_TOOL_CALL_INIT;
  call.tool = "python";
  call.argv = argv;
  call.argc = 3;
  call.trace_id = "webhook-example";
  ztee_call_result* res = nullptr;
  ztee_status st = ztee_gate_call(gate, &call, &res);
  for (auto& t : approvals.pending) t.join();
  int code = 0;
  if (st != ZTEE_OK) {
    code = fail("call");
  } else if (!res->ran) {
    std::fprintf(stderr, "approver_webhook: denied: %s\n", res->denial);
    code = 126;
  } else {
    std::fwrite(res->exec->stdout_data, 1, res->exec->stdout_len, stdout);
    std::fprintf(stderr, "approved by %s\n", res->approved_by);
  }
  ztee_call_result_free(res);
  ztee_gate_free(gate);
  ztee_audit_free(log);
  ztee_runtime_free(rt);
  curl_global_cleanup();
  return code;
}
