// `ztee serve`'s policy gate and audit log (see guard.hpp).
#include "serve/guard.hpp"

#include <curl/curl.h>
#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <thread>

#include "serve/util.hpp"

namespace ztee::serve {

namespace {

constexpr size_t kMaxAsking = 64;        // approvals waiting at once; beyond: denied
constexpr size_t kMaxReply = 64 * 1024;  // an approver reply bigger than this is no answer

std::string qlist(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + json_str(v[i]);
  return out + "]";
}

std::vector<std::string> labels_of(const CallContext& ctx) {
  std::vector<std::string> l;
  if (!ctx.key_name.empty()) l.push_back("key:" + ctx.key_name);
  for (const auto& [k, v] : ctx.metadata) l.push_back("meta:" + k + "=" + v);
  return l;
}

size_t collect(char* data, size_t size, size_t n, void* out) {
  auto* s = static_cast<std::string*>(out);
  if (s->size() + size * n > kMaxReply) return 0;
  s->append(data, size * n);
  return size * n;
}

int abort_when_stopping(void* flag, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<std::atomic<bool>*>(flag)->load() ? 1 : 0;
}

}  // namespace

ToolCall command_tool_call(const std::vector<std::string>& argv, const CallContext& ctx, bool with_stdin) {
  ToolCall c;
  c.tool = std::string(kToolCommand);
  bool shell = argv.size() == 4 && (argv[0] == "/bin/bash" || argv[0] == "bash" || argv[0] == "/bin/sh") &&
               argv[1] == "-l" && argv[2] == "-c";
  if (argv.size() == 3 && (argv[0] == "/bin/bash" || argv[0] == "/bin/sh") && argv[1] == "-c") {
    c.command = argv[2];
  } else if (shell) {
    c.command = argv[3];
  } else {
    c.argv = argv;
  }
  c.labels = labels_of(ctx);
  if (with_stdin) c.labels.emplace_back("stdin");
  return c;
}

ToolCall files_tool_call(std::string_view op, const std::vector<std::string>& paths, const CallContext& ctx) {
  ToolCall c;
  c.tool = std::string(kToolFilesWrite);
  c.argv.emplace_back(op);
  c.argv.insert(c.argv.end(), paths.begin(), paths.end());
  c.writes = paths;
  c.labels = labels_of(ctx);
  return c;
}

std::string denial_message(const Decision& d, std::string_view why) {
  std::string rule = d.rule.empty() ? "no rule of the server's policy matched" : fmt::format("rule \"{}\"", d.rule);
  return fmt::format("refused by the server's policy (tier L{} {}, {}): {}", d.tier, tier_action_name(d.action), rule, why);
}

ApprovalReply parse_approval_reply(long http_status, std::string_view body) {
  ApprovalReply r;
  r.by = "approver-url";
  if (http_status != 200) {
    r.reason = fmt::format("the approver answered HTTP {}", http_status);
    return r;
  }
  simdjson::dom::parser p;
  simdjson::dom::object o;
  auto doc = p.parse(body.data(), body.size());
  if (doc.error() != simdjson::SUCCESS || doc.value_unsafe().get(o) != simdjson::SUCCESS) {
    r.reason = "the approver's reply is not a JSON object";
    return r;
  }
  bool yes = false;
  if (o["approve"].get(yes) != simdjson::SUCCESS) {
    r.reason = "the approver's reply has no boolean \"approve\"";
    return r;
  }
  std::string_view s;
  if (o["by"].get(s) == simdjson::SUCCESS && !s.empty()) r.by = std::string(s);
  if (!yes) {
    r.reason = o["reason"].get(s) == simdjson::SUCCESS && !s.empty() ? std::string(s) : "no reason given";
    return r;
  }
  r.approve = true;
  return r;
}

void apply_tier_limits(const TierLimits& l, uint32_t* timeout_ms, uint64_t* output_cap) {
  if (l.timeout_ms && (*timeout_ms == 0 || l.timeout_ms < *timeout_ms)) *timeout_ms = l.timeout_ms;
  if (l.output_cap && (*output_cap == 0 || l.output_cap < *output_cap)) *output_cap = l.output_cap;
}

CallGuard::CallGuard(GuardOptions o) : o_(std::move(o)) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

void CallGuard::record(std::string_view event, std::string_view trace, const CallContext& ctx, std::string_view fields) {
  if (!o_.audit) return;
  std::string f = fmt::format("\"sandbox\":{},\"key\":{}", json_str(ctx.sandbox), json_str(ctx.key_name));
  if (!fields.empty()) f += fmt::format(",{}", fields);
  auto r = o_.audit.append_deferred(event, trace, f);
  if (!r && o_.log) o_.log(fmt::format("audit log: cannot append {}: {}", event, r.error().message));
}

void CallGuard::sandbox_event(std::string_view event, const CallContext& ctx, std::string_view detail) {
  record(event, ctx.sandbox, ctx, fmt::format("\"detail\":{}", json_str(detail)));
  if (o_.audit) (void)o_.audit.commit();
}

void CallGuard::exit(const Verdict& v, const CallContext& ctx, const Result<ExecResult>& r) {
  if (!r)
    record("exit", v.trace, ctx, fmt::format("\"error\":{}", json_str(r.error().message)));
  else
    record("exit", v.trace, ctx,
           fmt::format("\"exit_code\":{},\"signal\":{},\"timed_out\":{},\"truncated\":{},\"duration_ms\":{}", r->exit_code,
                       r->signal, r->timed_out, r->truncated, r->duration_us / 1000));
  if (o_.audit) (void)o_.audit.commit();
}

void CallGuard::check(ToolCall call, const CallContext& ctx, std::function<void(Verdict)> then) {
  Verdict v;
  v.trace = "call-" + random_hex(8);
  std::string text = call.text();
  record("call", v.trace, ctx,
         fmt::format("\"tool\":{},\"text_sha256\":\"{}\",\"text_len\":{},\"writes\":{},\"labels\":{}", json_str(call.tool),
                     sha256_hex_of(text), text.size(), qlist(call.writes), qlist(call.labels)));
  v.decision = o_.policy.classify(call);
  const Decision& d = v.decision;
  record("decision", v.trace, ctx,
         fmt::format("\"tier\":\"L{}\",\"action\":\"{}\",\"rule\":{},\"reason\":{}", d.tier, tier_action_name(d.action),
                     json_str(d.rule), json_str(d.reason)));
  auto refuse = [this, &ctx](Verdict& v, std::string why) {
    v.allowed = false;
    v.message = denial_message(v.decision, why);
    record("denied", v.trace, ctx, fmt::format("\"reason\":{}", json_str(why)));
    if (o_.audit) (void)o_.audit.commit();
  };
  if (d.action == TierAction::kDeny) {
    refuse(v, d.rule_index < 0 ? "nothing allows this call (fail closed)" : "the tier denies it");
    return then(std::move(v));
  }
  if (d.action != TierAction::kApprove) {
    v.allowed = true;
    if (o_.audit) (void)o_.audit.commit();  // what is about to run is on disk first
    return then(std::move(v));
  }
  if (o_.approver_url.empty()) {
    refuse(v, "approval needed but the server has no approver (--approver-url): denied");
    return then(std::move(v));
  }
  {
    std::lock_guard lk(mu_);
    if (stopping_ || asking_ >= kMaxAsking) {
      bool stopping = stopping_;
      refuse(v, stopping ? "the server is stopping" : fmt::format("{} approvals are pending already: denied", kMaxAsking));
      return then(std::move(v));
    }
    ++asking_;
  }
  uint32_t wait_ms = d.limits.approval_timeout_ms ? d.limits.approval_timeout_ms : 300000;
  std::string desc = fmt::format(
      "{{\"tool\":{},\"text\":{},\"writes\":{},\"labels\":{},\"tier\":\"L{}\",\"rule\":{},\"trace\":{},\"sandbox\":{},"
      "\"key\":{},\"deadline_ms\":{}}}",
      json_str(call.tool), json_str(text), qlist(call.writes), qlist(call.labels), d.tier, json_str(d.rule),
      json_str(v.trace), json_str(ctx.sandbox), json_str(ctx.key_name), wait_ms);
  record("approval_asked", v.trace, ctx, fmt::format("\"url\":{},\"deadline_ms\":{}", json_str(o_.approver_url), wait_ms));
  if (o_.audit) (void)o_.audit.commit();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  std::thread([this, v = std::move(v), ctx, desc = std::move(desc), then = std::move(then), deadline, wait_ms]() mutable {
    std::string reply;
    long http = 0;
    CURLcode rc = CURLE_FAILED_INIT;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (CURL* curl = left > 0 ? curl_easy_init() : nullptr) {
      curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
      curl_easy_setopt(curl, CURLOPT_URL, o_.approver_url.c_str());
      curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
      curl_easy_setopt(curl, CURLOPT_POSTFIELDS, desc.c_str());
      curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
      curl_easy_setopt(curl, CURLOPT_WRITEDATA, &reply);
      curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(left));
      curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
      curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
      curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
      curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, abort_when_stopping);
      curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &stopping_);
      rc = curl_easy_perform(curl);
      curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &http);
      curl_slist_free_all(headers);
      curl_easy_cleanup(curl);
    }
    ApprovalReply a;
    std::string event;
    if (rc == CURLE_OPERATION_TIMEDOUT || left <= 0) {
      event = "approval_expired";
      a.reason = fmt::format("no approval within {} ms: denied", wait_ms);
    } else if (rc != CURLE_OK) {
      event = "approval_denied";
      a.by = "server";
      a.reason = stopping_ ? "the server is stopping" : fmt::format("the approver could not be asked: {}", curl_easy_strerror(rc));
    } else {
      a = parse_approval_reply(http, reply);
      event = a.approve ? "approval_granted" : "approval_denied";
    }
    o_.post([this, v = std::move(v), ctx = std::move(ctx), then = std::move(then), a = std::move(a),
             event = std::move(event), wait_ms]() mutable {
      if (a.approve) {
        record(event, v.trace, ctx, fmt::format("\"by\":{}", json_str(a.by)));
        v.allowed = true;
        if (o_.audit) (void)o_.audit.commit();
      } else {
        if (event == "approval_expired")
          record(event, v.trace, ctx, fmt::format("\"after_ms\":{}", wait_ms));
        else
          record(event, v.trace, ctx, fmt::format("\"by\":{},\"reason\":{}", json_str(a.by), json_str(a.reason)));
        v.allowed = false;
        v.message = denial_message(v.decision, event == "approval_expired" ? a.reason : fmt::format("denied by {}: {}", a.by, a.reason));
        record("denied", v.trace, ctx, fmt::format("\"reason\":{}", json_str(v.message)));
        if (o_.audit) (void)o_.audit.commit();
      }
      then(std::move(v));
    });
    std::lock_guard lk(mu_);
    --asking_;
    cv_.notify_all();
  }).detach();
}

void CallGuard::stop() {
  std::unique_lock lk(mu_);
  stopping_ = true;
  cv_.wait(lk, [&] { return asking_ == 0; });
}

}  // namespace ztee::serve
