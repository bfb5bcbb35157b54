// The C ABI: thin extern "C" shims over the C++ API (include/ztee/ztee.hpp).
// Every entry point runs inside guard(), so no C++ exception crosses the ABI.
#include "ztee.h"

#include <ztee/policy.hpp>
#include <ztee/ztee.hpp>

#include "vmm/accel.hpp"

#include <simdjson.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <utility>
#include <vector>

struct ztee_runtime {
  ztee::Runtime rt;
  std::string backend;  // backend_description(), fixed at create
};

struct ztee_sandbox {
  ztee::Sandbox sb;
  std::string id;
};

// Closes the pool when the last of its C handle and the gates using it goes.
struct PoolCloser {
  ztee::Pool pool;
  ~PoolCloser() {
    try {
      if (pool) pool.close();
    } catch (...) {
    }
  }
};

struct ztee_pool {
  ztee::Pool pool;
  std::shared_ptr<PoolCloser> closer;
};

struct ztee_cancel {
  ztee::ExecCancel token;
};

struct ztee_input {
  ztee::ExecInput in;
};

struct ztee_policy {
  ztee::Policy policy;
};

struct ztee_audit_log {
  ztee::AuditLog log;
};

struct ztee_secret_value {
  std::string value;
  bool set = false;
};

struct ztee_gate {
  std::shared_ptr<PoolCloser> pool;  // keeps the pool open while the gate lives
  ztee::Gate gate;
};

namespace {

// ---- per-thread last error ------------------------------------------------

struct LastError {
  ztee_error pub{ZTEE_OK, 0, ""};
  std::string msg;
};

thread_local LastError t_last;

ztee_status fail(ztee_status code, std::string msg, int sys_errno = 0) noexcept {
  try {
    t_last.msg = std::move(msg);
    t_last.pub = {code, sys_errno, t_last.msg.c_str()};
  } catch (...) {
    t_last.pub = {code, sys_errno, "(no memory for the error message)"};
  }
  return code;
}

ztee_status fail(const ztee::Error& e) noexcept {
  return fail(static_cast<ztee_status>(e.code), e.message, e.sys_errno);
}

// The one exception guard of the C ABI.
template <typename F>
ztee_status guard(F&& f) noexcept {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    t_last.pub = {ZTEE_E_NO_MEMORY, ENOMEM, "out of memory"};
    return ZTEE_E_NO_MEMORY;
  } catch (const std::exception& e) {
    return fail(ZTEE_E_INTERNAL, std::string("internal error: ") + e.what());
  } catch (...) {
    return fail(ZTEE_E_INTERNAL, "internal error: unknown exception");
  }
}

ztee_status invalid(std::string msg) { return fail(ZTEE_E_INVALID_ARGUMENT, std::move(msg)); }

std::string str_or(const char* s, const char* dflt = "") { return s ? std::string(s) : std::string(dflt); }

// ---- options structs --------------------------------------------------------
//
// Every size each struct has had in a published ztee.h. Fields are only
// appended, so a caller built against an older header passes an older size;
// the fields it does not know are zero (their default). Any other size (e.g.
// one that ends inside a field) is refused.
// 0.2 ended with accel; jail_disabled came after.
constexpr size_t kRuntimeOptionsV1 = offsetof(ztee_runtime_options, jail_disabled);
static_assert(kRuntimeOptionsV1 == offsetof(ztee_runtime_options, accel) + sizeof(const char*),
              "0.2's ztee_runtime_options had no tail padding");
// 0.1 ended with output_cap; template_dir and snapshottable came after.
constexpr size_t kSandboxOptionsV1 = offsetof(ztee_sandbox_options, template_dir);
static_assert(kSandboxOptionsV1 == offsetof(ztee_sandbox_options, output_cap) + sizeof(uint64_t),
              "0.1's ztee_sandbox_options had no tail padding");
// 0.2 ended with snapshottable; the network fields came after.
constexpr size_t kSandboxOptionsV2 = offsetof(ztee_sandbox_options, net_allow);
static_assert(kSandboxOptionsV2 == offsetof(ztee_sandbox_options, snapshottable) + sizeof(int32_t) + 4,
              "0.2's ztee_sandbox_options ended with 4 bytes of tail padding");
// 0.3 ended with net_dns; guest_aslr came after.
constexpr size_t kSandboxOptionsV3 = offsetof(ztee_sandbox_options, guest_aslr);
static_assert(kSandboxOptionsV3 == offsetof(ztee_sandbox_options, net_dns) + sizeof(const char*),
              "0.3's ztee_sandbox_options had no tail padding");
// 0.5 ended with guest_aslr (and 4 bytes of tail padding); the workspace fields came after.
constexpr size_t kSandboxOptionsV4 = offsetof(ztee_sandbox_options, mounts);
static_assert(kSandboxOptionsV4 == offsetof(ztee_sandbox_options, guest_aslr) + sizeof(int32_t) + 4,
              "0.5's ztee_sandbox_options ended with 4 bytes of tail padding");
// 0.3 ended with user_data; cancel came after.
constexpr size_t kExecOptionsV1 = offsetof(ztee_exec_options, cancel);
// 0.6 ended with cancel; input came after.
constexpr size_t kExecOptionsV2 = offsetof(ztee_exec_options, input);
// 0.3 ended with lease_timeout_ms (and 4 bytes of tail padding); warm_up came after.
constexpr size_t kPoolOptionsV1 = offsetof(ztee_pool_options, warm_up);
static_assert(kPoolOptionsV1 == offsetof(ztee_pool_options, lease_timeout_ms) + sizeof(uint32_t) + 4,
              "0.3's ztee_pool_options ended with 4 bytes of tail padding");
constexpr size_t kPoolStatsV1 = sizeof(ztee_pool_stats);

// 0.4 ended with jail_disabled (and its tail padding); the image trust policy came after.
constexpr size_t kRuntimeOptionsV2 = offsetof(ztee_runtime_options, trusted_keys);
static_assert(kRuntimeOptionsV2 == offsetof(ztee_runtime_options, jail_disabled) + sizeof(int32_t) + 4,
              "runtime options v2 layout");
constexpr size_t kRuntimeOptionsSizes[] = {kRuntimeOptionsV1, kRuntimeOptionsV2, sizeof(ztee_runtime_options)};
constexpr size_t kSandboxOptionsSizes[] = {kSandboxOptionsV1, kSandboxOptionsV2, kSandboxOptionsV3,
                                           kSandboxOptionsV4, sizeof(ztee_sandbox_options)};
constexpr size_t kExportOptionsSizes[] = {sizeof(ztee_export_options)};
constexpr size_t kExecOptionsSizes[] = {kExecOptionsV1, kExecOptionsV2, sizeof(ztee_exec_options)};
constexpr size_t kPoolOptionsSizes[] = {kPoolOptionsV1, sizeof(ztee_pool_options)};
constexpr size_t kPoolStatsSizes[] = {kPoolStatsV1};
// 0.5: the control plane's structs (one layout each so far).
constexpr size_t kToolCallSizes[] = {sizeof(ztee_tool_call)};
constexpr size_t kAuditOptionsSizes[] = {sizeof(ztee_audit_options)};
// The gate options before output DLP (dlp, dlp_block) were appended.
constexpr size_t kGateOptionsV1 = offsetof(ztee_gate_options, dlp);
static_assert(kGateOptionsV1 == offsetof(ztee_gate_options, pool) + sizeof(ztee_pool*), "gate options v1 layout");
constexpr size_t kGateOptionsSizes[] = {kGateOptionsV1, sizeof(ztee_gate_options)};

// A struct larger than this libztee's comes from a caller built against a
// newer ztee.h; at most this many bytes of it are looked at.
constexpr size_t kMaxStructSize = 4096;

ztee_status check_size(size_t size, std::span<const size_t> known, const char* type,
                       const char* init) {
  if (size == 0)
    return invalid(std::string(type) + ".struct_size is 0: initialise the struct with " + init +
                   " or " + std::string(type) + "_init()");
  std::string list;
  for (size_t k : known) {
    if (size == k) return ZTEE_OK;
    list += (list.empty() ? "" : ", ") + std::to_string(k);
  }
  // Newer callers: the fields this libztee does not know must be zero
  // (their defaults); read_options checks them.
  if (size > known.back() && size <= kMaxStructSize) return ZTEE_OK;
  return invalid(std::string(type) + ".struct_size " + std::to_string(size) +
                 " is not a size this libztee knows (" + list + ", or larger up to " +
                 std::to_string(kMaxStructSize) + " from a newer ztee.h): initialise the struct with " +
                 init + " or " + std::string(type) + "_init()");
}

// Copies the caller's options into a zeroed struct of the current layout.
// NULL means every default. A caller's larger struct (a newer ztee.h) is
// accepted only if every byte past this libztee's layout is zero: a field
// it does not know cannot be honoured, so it is refused rather than ignored.
template <typename T>
ztee_status read_options(const T* in, std::span<const size_t> known, const char* type,
                         const char* init, T* out) {
  std::memset(out, 0, sizeof(T));
  out->struct_size = sizeof(T);
  if (!in) return ZTEE_OK;
  if (ztee_status st = check_size(in->struct_size, known, type, init); st != ZTEE_OK) return st;
  size_t size = in->struct_size;
  if (size > sizeof(T)) {
    const auto* bytes = reinterpret_cast<const unsigned char*>(in);
    for (size_t i = sizeof(T); i < size; ++i)
      if (bytes[i] != 0)
        return invalid(std::string(type) + " sets a field this libztee does not know (non-zero byte at offset " +
                       std::to_string(i) + "; this libztee's struct has " + std::to_string(sizeof(T)) +
                       " bytes): the program was built against a newer ztee.h; upgrade libztee or leave that "
                       "field zero");
    size = sizeof(T);
  }
  std::memcpy(out, in, size);
  out->struct_size = sizeof(T);
  return ZTEE_OK;
}

template <typename T>
ztee_status init_options(T* opts, size_t size, std::span<const size_t> known,
                         const char* type, const char* init) {
  if (!opts) return invalid(std::string(type) + "_init: opts is NULL");
  if (ztee_status st = check_size(size, known, type, init); st != ZTEE_OK) return st;
  std::memset(opts, 0, size);
  opts->struct_size = static_cast<uint32_t>(size);
  return ZTEE_OK;
}

// The C++ options for C ones already read into the current layout.
ztee::SandboxOptions to_sandbox_options(const ztee_sandbox_options& o) {
  ztee::SandboxOptions so;
  so.image_dir = str_or(o.image_dir);
  if (o.vcpus) so.vcpus = o.vcpus;
  if (o.memory_mib) so.memory_mib = o.memory_mib;
  if (o.boot_timeout_ms) so.boot_timeout_ms = o.boot_timeout_ms;
  so.exec_timeout_ms = o.exec_timeout_ms;
  if (o.output_cap) so.output_cap = o.output_cap;
  so.template_dir = str_or(o.template_dir);
  so.snapshottable = o.snapshottable != 0;
  // A NULL array or entry becomes an empty entry, which the policy check
  // refuses with a message that names it.
  for (size_t i = 0; i < o.net_allow_count; ++i)
    so.network.allow.push_back(o.net_allow && o.net_allow[i] ? o.net_allow[i] : "");
  so.network.dns = str_or(o.net_dns);
  // Other values pass through as they are: the runtime refuses them with a
  // message naming the field.
  so.guest_aslr = static_cast<ztee::GuestAslr>(o.guest_aslr);
  // NULL strings become empty ones, which the runtime refuses by name.
  for (size_t i = 0; i < o.mount_count; ++i)
    so.mounts.push_back(o.mounts ? ztee::Mount{str_or(o.mounts[i].host_dir), str_or(o.mounts[i].guest_path)}
                                 : ztee::Mount{});
  so.diff_log = str_or(o.diff_log);
  return so;
}

// Wraps a C++ sandbox in a new handle (its id cached for ztee_sandbox_id).
ztee_sandbox* new_sandbox_handle(ztee::Sandbox&& sb) {
  auto* h = new ztee_sandbox{std::move(sb), {}};
  try {
    h->id = h->sb.id();
  } catch (...) {
    delete h;
    throw;
  }
  return h;
}

// Copies bytes into a malloc'ed, NUL-terminated buffer (released with free()).
char* dup_bytes(const std::string& s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (!p) throw std::bad_alloc();
  std::memcpy(p, s.data(), s.size());
  p[s.size()] = '\0';
  return p;
}

// A malloc'ed ztee_exec_result (released with ztee_exec_result_free).
ztee_exec_result* new_exec_result(const ztee::ExecResult& er) {
  auto* res = static_cast<ztee_exec_result*>(std::calloc(1, sizeof(ztee_exec_result)));
  if (!res) throw std::bad_alloc();
  try {
    res->stdout_data = dup_bytes(er.stdout_data);
    res->stdout_len = er.stdout_data.size();
    res->stderr_data = dup_bytes(er.stderr_data);
    res->stderr_len = er.stderr_data.size();
  } catch (...) {
    ztee_exec_result_free(res);
    throw;
  }
  res->exit_code = er.exit_code;
  res->signal = er.signal;
  res->timed_out = er.timed_out ? 1 : 0;
  res->truncated = er.truncated ? 1 : 0;
  res->cancelled = er.cancelled ? 1 : 0;
  res->duration_us = er.duration_us;
  res->dlp_findings = static_cast<uint32_t>(er.dlp_findings.size());
  res->injection_anomalies = static_cast<uint32_t>(er.injection_anomalies.size());
  return res;
}

int32_t file_type(ztee::FileType t) {
  switch (t) {
    case ztee::FileType::kFile: return ZTEE_FILE_TYPE_FILE;
    case ztee::FileType::kDir: return ZTEE_FILE_TYPE_DIR;
    case ztee::FileType::kSymlink: return ZTEE_FILE_TYPE_SYMLINK;
    default: return ZTEE_FILE_TYPE_OTHER;
  }
}

void fill_info(ztee_file_info* dst, const ztee::FileInfo& src, char* name_storage) {
  std::memcpy(name_storage, src.name.c_str(), src.name.size() + 1);
  dst->name = name_storage;
  dst->type = file_type(src.type);
  dst->mode = src.mode;
  dst->size = src.size;
  dst->mtime_ns = src.mtime_ns;
}

// The scanner of a `dlp` / `dlp_block` pair of option fields (none when both
// are unset): default detectors, the named ones in block mode.
ztee_status make_dlp(int32_t dlp, const char* const* block, size_t count, const char* fn, ztee::DlpScanner* out) {
  if (!dlp && !count) return ZTEE_OK;
  if (count && !block) return invalid(std::string(fn) + ": dlp_block is NULL with a count");
  ztee::DlpOptions dopts;
  for (size_t i = 0; i < count; ++i) {
    if (!block[i]) return invalid(std::string(fn) + ": dlp_block has a NULL entry");
    std::string name = block[i];
    auto it = std::find_if(dopts.detectors.begin(), dopts.detectors.end(),
                           [&](const ztee::DlpDetector& d) { return d.name == name; });
    if (it != dopts.detectors.end())
      it->mode = ztee::DlpMode::kBlock;
    else
      dopts.detectors.push_back({name, ztee::DlpMode::kBlock});
  }
  auto scanner = ztee::DlpScanner::create(std::move(dopts));
  if (!scanner) return fail(scanner.error());
  *out = std::move(scanner.value());
  return ZTEE_OK;
}

// ---- workspace helpers ---------------------------------------------------------

int32_t change_kind(ztee::Change::Kind k) {
  switch (k) {
    case ztee::Change::Kind::kCreated: return ZTEE_CHANGE_CREATED;
    case ztee::Change::Kind::kModified: return ZTEE_CHANGE_MODIFIED;
    case ztee::Change::Kind::kDeleted: return ZTEE_CHANGE_DELETED;
  }
  return ZTEE_CHANGE_MODIFIED;
}

// Bytes a list of these changes needs after its head: the entries, then
// every string, rounded up so that a following block stays aligned.
size_t change_list_bytes(const std::vector<ztee::Change>& v) {
  size_t n = v.size() * sizeof(ztee_change);
  for (const auto& c : v) n += c.path.size() + c.mount.size() + c.sha256.size() + c.link_target.size() + 4;
  return (n + alignof(ztee_change) - 1) / alignof(ztee_change) * alignof(ztee_change);
}

void fill_change_list(ztee_change_list* head, char* storage, const std::vector<ztee::Change>& v) {
  head->count = v.size();
  head->entries = v.empty() ? nullptr : reinterpret_cast<ztee_change*>(storage);
  char* str = storage + v.size() * sizeof(ztee_change);
  auto put = [&str](const std::string& x) {
    // Paths may hold any byte but NUL: a guest name with a NUL was refused when parsed.
    std::memcpy(str, x.c_str(), x.size() + 1);
    const char* p = str;
    str += x.size() + 1;
    return p;
  };
  for (size_t i = 0; i < v.size(); ++i) {
    ztee_change& e = head->entries[i];
    e.kind = change_kind(v[i].kind);
    e.type = file_type(v[i].type);
    e.path = put(v[i].path);
    e.mount = put(v[i].mount);
    e.size = v[i].size;
    e.mode = v[i].mode;
    e.sha256 = put(v[i].sha256);
    e.link_target = put(v[i].link_target);
  }
}

ztee_change_list* new_change_list(const std::vector<ztee::Change>& v) {
  auto* list = static_cast<ztee_change_list*>(std::malloc(sizeof(ztee_change_list) + change_list_bytes(v)));
  if (!list) throw std::bad_alloc();
  fill_change_list(list, reinterpret_cast<char*>(list + 1), v);
  return list;
}

// ---- control plane helpers ----------------------------------------------------

// Strings of a C array (count entries; the array may be NULL only when count
// is 0; a NULL entry is refused naming the field).
ztee_status read_strings(const char* const* arr, size_t count, const char* fn, const char* field,
                         std::vector<std::string>* out) {
  if (count && !arr)
    return invalid(std::string(fn) + ": " + field + "_count is " + std::to_string(count) + " but " + field +
                   " is NULL");
  for (size_t i = 0; i < count; ++i) {
    if (!arr[i]) return invalid(std::string(fn) + ": " + field + "[" + std::to_string(i) + "] is NULL");
    out->emplace_back(arr[i]);
  }
  return ZTEE_OK;
}

// The C++ tool call for a C one. need_command: a gate call must say what to run.
ztee_status read_tool_call(const ztee_tool_call* in, const char* fn, bool need_command, ztee::ToolCall* c) {
  if (!in) return invalid(std::string(fn) + ": call is NULL");
  ztee_tool_call o;
  if (ztee_status st = read_options(in, kToolCallSizes, "ztee_tool_call", "ZTEE_TOOL_CALL_INIT", &o); st != ZTEE_OK)
    return st;
  const std::string f(fn);
  if (!o.tool || !*o.tool) return invalid(f + ": call->tool is not set: name the tool (e.g. \"python\")");
  c->tool = o.tool;
  if (o.command && o.argv) return invalid(f + ": set either call->command or call->argv, not both");
  if (o.command) {
    if (o.argc) return invalid(f + ": call->argc is set but call->argv is NULL");
    c->command = o.command;
  } else if (o.argv) {
    if (!o.argc) return invalid(f + ": call->argv is set but call->argc is 0");
    if (ztee_status st = read_strings(o.argv, o.argc, fn, "call->argv", &c->argv); st != ZTEE_OK) return st;
  } else if (o.argc) {
    return invalid(f + ": call->argc is set but call->argv is NULL");
  }
  if (need_command && c->command.empty() && c->argv.empty())
    return invalid(f + ": nothing to run: set call->command or call->argv/argc");
  if (o.env_count && !o.env) return invalid(f + ": call->env_count is set but call->env is NULL");
  for (size_t i = 0; i < o.env_count; ++i) {
    const char* kv = o.env[i];
    const char* eq = kv ? std::strchr(kv, '=') : nullptr;
    if (!eq || eq == kv)
      return invalid(f + ": call->env[" + std::to_string(i) + "] is not a \"KEY=VALUE\" string");
    if (!c->env.emplace(std::string(kv, eq), std::string(eq + 1)).second)
      return invalid(f + ": call->env sets \"" + std::string(kv, eq) + "\" twice");
  }
  if (o.file_count && (!o.file_paths || !o.file_contents))
    return invalid(f + ": call->file_count is set but call->file_paths or call->file_contents is NULL");
  for (size_t i = 0; i < o.file_count; ++i) {
    const std::string idx = "[" + std::to_string(i) + "]";
    if (!o.file_paths[i] || !*o.file_paths[i]) return invalid(f + ": call->file_paths" + idx + " is NULL or empty");
    const char* data = o.file_contents[i];
    size_t len = o.file_lengths ? o.file_lengths[i] : (data ? std::strlen(data) : 0);
    if (!data && len) return invalid(f + ": call->file_contents" + idx + " is NULL but its length is not 0");
    if (!c->files.emplace(o.file_paths[i], data ? std::string(data, len) : std::string()).second)
      return invalid(f + ": call->file_paths names \"" + std::string(o.file_paths[i]) + "\" twice");
  }
  c->cwd = str_or(o.cwd);
  c->user = str_or(o.user);
  if (o.stdin_data)
    c->stdin_data = std::string(static_cast<const char*>(o.stdin_data), o.stdin_len);
  else if (o.stdin_len)
    return invalid(f + ": call->stdin_len is set but call->stdin_data is NULL");
  if (ztee_status st = read_strings(o.writes, o.writes_count, fn, "call->writes", &c->writes); st != ZTEE_OK) return st;
  if (ztee_status st = read_strings(o.network, o.network_count, fn, "call->network", &c->network); st != ZTEE_OK)
    return st;
  if (ztee_status st = read_strings(o.labels, o.labels_count, fn, "call->labels", &c->labels); st != ZTEE_OK)
    return st;
  c->trace_id = str_or(o.trace_id);
  if (o.on_stdout) {
    ztee_output_cb cb = o.on_stdout;
    void* ud = o.user_data;
    c->on_stdout = [cb, ud](std::string_view d) { cb(ud, d.data(), d.size()); };
  }
  if (o.on_stderr) {
    ztee_output_cb cb = o.on_stderr;
    void* ud = o.user_data;
    c->on_stderr = [cb, ud](std::string_view d) { cb(ud, d.data(), d.size()); };
  }
  if (o.cancel) c->cancel = o.cancel->token;
  return ZTEE_OK;
}

int32_t action_code(ztee::TierAction a) {
  switch (a) {
    case ztee::TierAction::kRun: return ZTEE_ACTION_RUN;
    case ztee::TierAction::kAudit: return ZTEE_ACTION_AUDIT;
    case ztee::TierAction::kApprove: return ZTEE_ACTION_APPROVE;
    default: return ZTEE_ACTION_DENY;
  }
}

// Frees what a partly built result owns (strings are NULL or malloc'ed).
void free_strings(std::initializer_list<char*> ptrs) {
  for (char* p : ptrs) std::free(p);
}

ztee_decision* new_decision(const ztee::Decision& d) {
  auto* out = static_cast<ztee_decision*>(std::calloc(1, sizeof(ztee_decision)));
  if (!out) throw std::bad_alloc();
  try {
    out->rule = dup_bytes(d.rule);
    out->reason = dup_bytes(d.reason);
  } catch (...) {
    ztee_decision_free(out);
    throw;
  }
  out->tier = d.tier;
  out->action = action_code(d.action);
  out->rule_index = d.rule_index;
  return out;
}

// The keys every audit record has already: fields must not repeat them.
constexpr std::string_view kAuditReserved[] = {"seq", "ts", "trace", "event", "prev", "hmac"};

ztee_status check_audit_fields(std::string_view fields) {
  if (fields.find_first_of("\r\n") != std::string_view::npos)
    return invalid("ztee_audit_append: fields_json_inner spans several lines: a record is one line "
                   "(escape newlines inside strings as \\n)");
  simdjson::padded_string buf(std::string("{") + std::string(fields) + "}");
  simdjson::dom::parser parser;
  simdjson::dom::object obj;
  if (auto err = parser.parse(buf).get(obj))
    return invalid(std::string("ztee_audit_append: fields_json_inner is not the inner part of a JSON object (") +
                   simdjson::error_message(err) + "): pass e.g. \"\\\"user\\\":\\\"alice\\\",\\\"n\\\":3\"");
  for (auto field : obj) {
    for (std::string_view r : kAuditReserved)
      if (field.key == r)
        return invalid("ztee_audit_append: fields_json_inner uses the key \"" + std::string(r) +
                       "\", which every record has already (seq, ts, trace, event, prev, hmac): rename it");
  }
  return ZTEE_OK;
}

ztee_status known_status(ztee_status st) {
  return st < 0 && st >= ZTEE_E_CONFLICT ? st : ZTEE_E_INTERNAL;
}

#define ZTEE_CHECK_HANDLE(h, fn) \
  if (!(h)) return invalid(fn ": " #h " is NULL")
#define ZTEE_CHECK_PATH(p, fn) \
  if (!(p)) return invalid(fn ": path is NULL")

}  // namespace

extern "C" {

// ---- errors, version, features ----------------------------------------------

const ztee_error* ztee_last_error(void) { return &t_last.pub; }

const char* ztee_status_name(ztee_status status) {
  switch (status) {
    case ZTEE_OK: return "ZTEE_OK";
    case ZTEE_E_INVALID_ARGUMENT: return "ZTEE_E_INVALID_ARGUMENT";
    case ZTEE_E_NO_MEMORY: return "ZTEE_E_NO_MEMORY";
    case ZTEE_E_INTERNAL: return "ZTEE_E_INTERNAL";
    case ZTEE_E_NOT_FOUND: return "ZTEE_E_NOT_FOUND";
    case ZTEE_E_IMAGE: return "ZTEE_E_IMAGE";
    case ZTEE_E_BACKEND_UNAVAILABLE: return "ZTEE_E_BACKEND_UNAVAILABLE";
    case ZTEE_E_TIMEOUT: return "ZTEE_E_TIMEOUT";
    case ZTEE_E_SANDBOX_FAILED: return "ZTEE_E_SANDBOX_FAILED";
    case ZTEE_E_CLOSED: return "ZTEE_E_CLOSED";
    case ZTEE_E_IO: return "ZTEE_E_IO";
    case ZTEE_E_PROTOCOL: return "ZTEE_E_PROTOCOL";
    case ZTEE_E_GUEST: return "ZTEE_E_GUEST";
    case ZTEE_E_PERMISSION: return "ZTEE_E_PERMISSION";
    case ZTEE_E_UNSUPPORTED: return "ZTEE_E_UNSUPPORTED";
    case ZTEE_E_CONFLICT: return "ZTEE_E_CONFLICT";
    default: return "ZTEE_E_UNKNOWN";
  }
}

const char* ztee_version(void) {
  try {
    return ztee::version();
  } catch (...) {
    return "0.0.0";
  }
}

int ztee_has_feature(const char* feature) {
  if (!feature) return 0;
  if (std::strcmp(feature, "qemu") == 0) return 1;
  if (std::strcmp(feature, "firecracker") == 0) return 0;
  if (std::strcmp(feature, "kvm") == 0) {
    // The question a default runtime answers: would it run guests under KVM?
    auto choice = ztee::detail::choose_accel("", ztee::detail::probe_kvm_host(), geteuid() == 0);
    return choice && choice->kvm ? 1 : 0;
  }
  if (std::strcmp(feature, "streaming") == 0) return 1;
  if (std::strcmp(feature, "exec_input") == 0) return 1;  // ztee_exec_options.input, ztee_input_*, ztee_cancel_signal
  if (std::strcmp(feature, "files") == 0) return 1;
  if (std::strcmp(feature, "workspaces") == 0) return 1;  // mounts, diff, export_changes, patch
  if (std::strcmp(feature, "pool") == 0) return 1;
  if (std::strcmp(feature, "snapshot") == 0) return 1;
  if (std::strcmp(feature, "network") == 0) return 1;  // ztee_sandbox_options.net_allow / net_dns
  if (std::strcmp(feature, "jail") == 0) return 1;
  if (std::strcmp(feature, "guest_aslr") == 0) return 1;  // ztee_sandbox_options.guest_aslr
  if (std::strcmp(feature, "gate") == 0) return 1;        // ztee_policy_*, ztee_audit_*, ztee_gate_*
  if (std::strcmp(feature, "image_trust") == 0) return 1; // ztee_runtime_options.trusted_keys, require_vuln_gate
  return 0;
}

void ztee_free(void* ptr) { std::free(ptr); }

// ---- runtime ------------------------------------------------------------------

ztee_status ztee_runtime_options_init(ztee_runtime_options* opts, size_t size) {
  return guard([&] {
    return init_options(opts, size, kRuntimeOptionsSizes, "ztee_runtime_options",
                        "ZTEE_RUNTIME_OPTIONS_INIT");
  });
}

ztee_status ztee_runtime_create(const ztee_runtime_options* opts, ztee_runtime** out) {
  return guard([&]() -> ztee_status {
    if (!out) return invalid("ztee_runtime_create: out is NULL");
    ztee_runtime_options o;
    if (ztee_status st = read_options(opts, kRuntimeOptionsSizes, "ztee_runtime_options",
                                      "ZTEE_RUNTIME_OPTIONS_INIT", &o);
        st != ZTEE_OK)
      return st;
    ztee::RuntimeOptions ro;
    ro.state_dir = str_or(o.state_dir);
    ro.image_dir = str_or(o.image_dir);
    ro.backend = str_or(o.backend, "auto");
    ro.qemu_binary = str_or(o.qemu_binary);
    ro.accel = str_or(o.accel, "");
    ro.jail.enabled = o.jail_disabled == 0;
    if (o.trusted_key_count && !o.trusted_keys) return invalid("ztee_runtime_create: trusted_keys is NULL with a count");
    for (size_t i = 0; i < o.trusted_key_count; ++i) {
      if (!o.trusted_keys[i])
        return invalid("ztee_runtime_create: trusted_keys[" + std::to_string(i) + "] is NULL");
      ro.trusted_keys.emplace_back(o.trusted_keys[i]);
    }
    ro.require_vuln_gate = o.require_vuln_gate != 0;
    auto r = ztee::Runtime::create(std::move(ro));
    if (!r) return fail(r.error());
    std::string backend = r->backend_description();
    *out = new ztee_runtime{std::move(r.value()), std::move(backend)};
    return ZTEE_OK;
  });
}

const char* ztee_runtime_backend(const ztee_runtime* rt) { return rt ? rt->backend.c_str() : ""; }

void ztee_runtime_free(ztee_runtime* rt) {
  (void)guard([&] {
    delete rt;
    return ZTEE_OK;
  });
}

// ---- sandbox ------------------------------------------------------------------

ztee_status ztee_sandbox_options_init(ztee_sandbox_options* opts, size_t size) {
  return guard([&] {
    return init_options(opts, size, kSandboxOptionsSizes, "ztee_sandbox_options",
                        "ZTEE_SANDBOX_OPTIONS_INIT");
  });
}

ztee_status ztee_sandbox_create(ztee_runtime* rt, const ztee_sandbox_options* opts,
                                ztee_sandbox** out) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(rt, "ztee_sandbox_create");
    if (!out) return invalid("ztee_sandbox_create: out is NULL");
    ztee_sandbox_options o;
    if (ztee_status st = read_options(opts, kSandboxOptionsSizes, "ztee_sandbox_options",
                                      "ZTEE_SANDBOX_OPTIONS_INIT", &o);
        st != ZTEE_OK)
      return st;
    ztee::SandboxOptions so = to_sandbox_options(o);
    if (ztee_status st = make_dlp(o.dlp, o.dlp_block, o.dlp_block_count, "ztee_sandbox_create", &so.dlp); st != ZTEE_OK)
      return st;
    auto r = rt->rt.create_sandbox(so);
    if (!r) return fail(r.error());
    *out = new_sandbox_handle(std::move(r.value()));
    return ZTEE_OK;
  });
}

ztee_status ztee_sandbox_destroy(ztee_sandbox* sb) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(sb, "ztee_sandbox_destroy");
    auto r = sb->sb.destroy();
    if (!r) return fail(r.error());
    return ZTEE_OK;
  });
}

void ztee_sandbox_free(ztee_sandbox* sb) {
  (void)guard([&] {
    if (!sb) return ZTEE_OK;
    if (sb->sb && sb->sb.state() != ztee::SandboxState::kDestroyed) (void)sb->sb.destroy();
    delete sb;
    return ZTEE_OK;
  });
}

const char* ztee_sandbox_id(const ztee_sandbox* sb) { return sb ? sb->id.c_str() : ""; }

ztee_status ztee_sandbox_ping(ztee_sandbox* sb) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(sb, "ztee_sandbox_ping");
    auto r = sb->sb.ping();
    if (!r) return fail(r.error());
    return ZTEE_OK;
  });
}

ztee_status ztee_sandbox_pause(ztee_sandbox* sb) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(sb, "ztee_sandbox_pause");
    auto r = sb->sb.pause();
    if (!r) return fail(r.error());
    return ZTEE_OK;
  });
}

ztee_status ztee_sandbox_resume(ztee_sandbox* sb) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(sb, "ztee_sandbox_resume");
    auto r = sb->sb.resume();
    if (!r) return fail(r.error());
    return ZTEE_OK;
  });
}

ztee_status ztee_sandbox_snapshot(ztee_sandbox* sb, const char* dir) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(sb, "ztee_sandbox_snapshot");
    if (!dir) return invalid("ztee_sandbox_snapshot: dir is NULL");
    auto r = sb->sb.snapshot(dir);
    if (r) return ZTEE_OK;
    ztee::Error e = std::move(r).error();
    // The ABI promises the sandbox is consumed unless the arguments were refused.
    ztee::SandboxState state = sb->sb.state();
    if (state != ztee::SandboxState::kDestroyed &&
        (e.code != ztee::Errc::kInvalidArgument || state == ztee::SandboxState::kFailed))
      (void)sb->sb.destroy();
    return fail(e);
  });
}

// ---- exec ---------------------------------------------------------------------

ztee_status ztee_exec_options_init(ztee_exec_options* opts, size_t size) {
  return guard([&] {
    return init_options(opts, size, kExecOptionsSizes, "ztee_exec_options",
                        "ZTEE_EXEC_OPTIONS_INIT");
  });
}

ztee_status ztee_sandbox_exec(ztee_sandbox* sb, const ztee_exec_options* opts,
                              ztee_exec_result** out) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(sb, "ztee_sandbox_exec");
    if (!opts) return invalid("ztee_sandbox_exec: opts is NULL: set argv or shell");
    if (!out) return invalid("ztee_sandbox_exec: out is NULL");
    ztee_exec_options o;
    if (ztee_status st =
            read_options(opts, kExecOptionsSizes, "ztee_exec_options", "ZTEE_EXEC_OPTIONS_INIT", &o);
        st != ZTEE_OK)
      return st;

    ztee::ExecOptions eo;
    if (o.argv) {
      if (o.shell) return invalid("ztee_sandbox_exec: set either argv or shell, not both");
      if (o.argc == 0) return invalid("ztee_sandbox_exec: argv is set but argc is 0");
      eo.argv.reserve(o.argc);
      for (size_t i = 0; i < o.argc; ++i) {
        if (!o.argv[i])
          return invalid("ztee_sandbox_exec: argv[" + std::to_string(i) + "] is NULL");
        eo.argv.emplace_back(o.argv[i]);
      }
    } else if (o.shell) {
      if (o.argc != 0) return invalid("ztee_sandbox_exec: argc is set but argv is NULL");
      eo.shell = o.shell;
    } else {
      return invalid("ztee_sandbox_exec: nothing to run: set argv/argc or shell");
    }
    if (o.env_count && !o.env) return invalid("ztee_sandbox_exec: env_count is set but env is NULL");
    for (size_t i = 0; i < o.env_count; ++i) {
      const char* kv = o.env[i];
      const char* eq = kv ? std::strchr(kv, '=') : nullptr;
      if (!eq || eq == kv)
        return invalid("ztee_sandbox_exec: env[" + std::to_string(i) +
                       "] is not a \"KEY=VALUE\" string");
      eo.env[std::string(kv, eq)] = std::string(eq + 1);
    }
    eo.cwd = str_or(o.cwd);
    eo.user = str_or(o.user);
    if (o.stdin_data)
      eo.stdin_data = std::string(static_cast<const char*>(o.stdin_data), o.stdin_len);
    else if (o.stdin_len)
      return invalid("ztee_sandbox_exec: stdin_len is set but stdin_data is NULL");
    eo.timeout_ms = o.timeout_ms;
    eo.output_cap = o.output_cap;
    if (o.on_stdout) {
      ztee_output_cb cb = o.on_stdout;
      void* ud = o.user_data;
      eo.on_stdout = [cb, ud](std::string_view d) { cb(ud, d.data(), d.size()); };
    }
    if (o.on_stderr) {
      ztee_output_cb cb = o.on_stderr;
      void* ud = o.user_data;
      eo.on_stderr = [cb, ud](std::string_view d) { cb(ud, d.data(), d.size()); };
    }
    if (o.cancel) eo.cancel = o.cancel->token;
    if (o.input) {
      if (o.stdin_data) return invalid("ztee_sandbox_exec: set stdin_data or input, not both");
      eo.input = o.input->in;
    }

    auto r = sb->sb.exec(eo);
    if (!r) return fail(r.error());
    *out = new_exec_result(r.value());
    return ZTEE_OK;
  });
}

void ztee_exec_result_free(ztee_exec_result* result) {
  if (!result) return;
  std::free(result->stdout_data);
  std::free(result->stderr_data);
  std::free(result);
}

ztee_status ztee_cancel_create(ztee_cancel** out) {
  return guard([&]() -> ztee_status {
    if (!out) return invalid("ztee_cancel_create: out is NULL");
    *out = new ztee_cancel{ztee::ExecCancel::create()};
    return ZTEE_OK;
  });
}

void ztee_cancel_trigger(ztee_cancel* cancel) {
  (void)guard([&] {
    if (cancel) cancel->token.trigger();
    return ZTEE_OK;
  });
}

int ztee_cancel_triggered(const ztee_cancel* cancel) { return cancel && cancel->token.triggered() ? 1 : 0; }

void ztee_cancel_free(ztee_cancel* cancel) {
  (void)guard([&] {
    delete cancel;
    return ZTEE_OK;
  });
}

ztee_status ztee_cancel_signal(ztee_cancel* cancel, int sig) {
  return guard([&]() -> ztee_status {
    if (!cancel) return invalid("ztee_cancel_signal: cancel is NULL: make one with ztee_cancel_create");
    auto r = cancel->token.signal(sig);
    if (!r) return fail(r.error());
    return ZTEE_OK;
  });
}

ztee_status ztee_input_create(ztee_input** out) {
  return guard([&]() -> ztee_status {
    if (!out) return invalid("ztee_input_create: out is NULL");
    *out = new ztee_input{ztee::ExecInput::create()};
    return ZTEE_OK;
  });
}

ztee_status ztee_input_write(ztee_input* input, const void* data, size_t len) {
  return guard([&]() -> ztee_status {
    if (!input) return invalid("ztee_input_write: input is NULL: make one with ztee_input_create");
    if (!data && len) return invalid("ztee_input_write: len is set but data is NULL");
    auto r = input->in.write(std::string_view(static_cast<const char*>(data), data ? len : 0));
    if (!r) return fail(r.error());
    return ZTEE_OK;
  });
}

void ztee_input_close(ztee_input* input) {
  (void)guard([&] {
    if (input) input->in.close();
    return ZTEE_OK;
  });
}

size_t ztee_input_buffered(const ztee_input* input) { return input ? input->in.buffered() : 0; }

void ztee_input_free(ztee_input* input) {
  (void)guard([&] {
    delete input;
    return ZTEE_OK;
  });
}

// ---- files --------------------------------------------------------------------

ztee_status ztee_sandbox_write_file(ztee_sandbox* sb, const char* path, const void* data,
                                    size_t len, uint32_t mode) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(sb, "ztee_sandbox_write_file");
    ZTEE_CHECK_PATH(path, "ztee_sandbox_write_file");
    if (!data && len) return invalid("ztee_sandbox_write_file: data is NULL but len is not 0");
    std::string_view bytes = data ? std::string_view(static_cast<const char*>(data), len)
                                  : std::string_view();
    auto r = sb->sb.write_file(path, bytes, mode ? mode : 0644);
    if (!r) return fail(r.error());
    return ZTEE_OK;
  });
}

ztee_status ztee_sandbox_read_file(ztee_sandbox* sb, const char* path, uint64_t max_bytes,
                                   void** data, size_t* len) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(sb, "ztee_sandbox_read_file");
    ZTEE_CHECK_PATH(path, "ztee_sandbox_read_file");
    if (!data || !len) return invalid("ztee_sandbox_read_file: data and len must not be NULL");
    auto r = sb->sb.read_file(path, max_bytes ? max_bytes : (uint64_t{64} << 20));
    if (!r) return fail(r.error());
    char* p = dup_bytes(r.value());
    *data = p;
    *len = r.value().size();
    return ZTEE_OK;
  });
}

ztee_status ztee_sandbox_stat(ztee_sandbox* sb, const char* path, ztee_file_info** out) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(sb, "ztee_sandbox_stat");
    ZTEE_CHECK_PATH(path, "ztee_sandbox_stat");
    if (!out) return invalid("ztee_sandbox_stat: out is NULL");
    auto r = sb->sb.stat(path);
    if (!r) return fail(r.error());
    const ztee::FileInfo& fi = r.value();
    // One allocation: the struct followed by its name.
    auto* info = static_cast<ztee_file_info*>(std::malloc(sizeof(ztee_file_info) + fi.name.size() + 1));
    if (!info) throw std::bad_alloc();
    fill_info(info, fi, reinterpret_cast<char*>(info + 1));
    *out = info;
    return ZTEE_OK;
  });
}

void ztee_file_info_free(ztee_file_info* info) { std::free(info); }

ztee_status ztee_sandbox_list_dir(ztee_sandbox* sb, const char* path, ztee_dir_list** out) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(sb, "ztee_sandbox_list_dir");
    ZTEE_CHECK_PATH(path, "ztee_sandbox_list_dir");
    if (!out) return invalid("ztee_sandbox_list_dir: out is NULL");
    auto r = sb->sb.list_dir(path);
    if (!r) return fail(r.error());
    const auto& v = r.value();
    // One allocation: the list, its entries, then every name.
    size_t total = sizeof(ztee_dir_list) + v.size() * sizeof(ztee_file_info);
    for (const auto& fi : v) total += fi.name.size() + 1;
    auto* list = static_cast<ztee_dir_list*>(std::malloc(total));
    if (!list) throw std::bad_alloc();
    list->entries = v.empty() ? nullptr : reinterpret_cast<ztee_file_info*>(list + 1);
    list->count = v.size();
    char* names = reinterpret_cast<char*>(reinterpret_cast<ztee_file_info*>(list + 1) + v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      fill_info(&list->entries[i], v[i], names);
      names += v[i].name.size() + 1;
    }
    *out = list;
    return ZTEE_OK;
  });
}

void ztee_dir_list_free(ztee_dir_list* list) { std::free(list); }

ztee_status ztee_sandbox_diff(ztee_sandbox* sb, const char* mount, ztee_change_list** out) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(sb, "ztee_sandbox_diff");
    if (!out) return invalid("ztee_sandbox_diff: out is NULL");
    auto r = sb->sb.diff(str_or(mount));
    if (!r) return fail(r.error());
    *out = new_change_list(r.value());
    return ZTEE_OK;
  });
}

void ztee_change_list_free(ztee_change_list* list) { std::free(list); }

ztee_status ztee_export_options_init(ztee_export_options* opts, size_t size) {
  return guard([&] {
    return init_options(opts, size, kExportOptionsSizes, "ztee_export_options", "ZTEE_EXPORT_OPTIONS_INIT");
  });
}

ztee_status ztee_sandbox_export_changes(ztee_sandbox* sb, const ztee_export_options* opts, ztee_export_result** out) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(sb, "ztee_sandbox_export_changes");
    if (!out) return invalid("ztee_sandbox_export_changes: out is NULL");
    ztee_export_options o;
    if (ztee_status st = read_options(opts, kExportOptionsSizes, "ztee_export_options", "ZTEE_EXPORT_OPTIONS_INIT", &o);
        st != ZTEE_OK)
      return st;
    ztee::ExportOptions eo;
    eo.mount = str_or(o.mount);
    if (ztee_status st = read_strings(o.paths, o.path_count, "ztee_sandbox_export_changes", "paths", &eo.paths);
        st != ZTEE_OK)
      return st;
    eo.dest_dir = str_or(o.dest_dir);
    if (o.approve) {
      auto approve = o.approve;
      void* ud = o.user_data;
      eo.approve = [approve, ud](const ztee::Change& c) {
        ztee_change_list* one = new_change_list({c});
        int yes = approve(one->entries, ud);
        ztee_change_list_free(one);
        return yes != 0;
      };
    }
    auto r = sb->sb.export_changes(eo);
    if (!r) return fail(r.error());
    // One allocation: the result, then each list's entries and strings.
    size_t a = change_list_bytes(r->applied), d = change_list_bytes(r->declined),
           k = change_list_bytes(r->skipped_deletions);
    auto* res = static_cast<ztee_export_result*>(std::malloc(sizeof(ztee_export_result) + a + d + k));
    if (!res) throw std::bad_alloc();
    char* storage = reinterpret_cast<char*>(res + 1);
    fill_change_list(&res->applied, storage, r->applied);
    fill_change_list(&res->declined, storage + a, r->declined);
    fill_change_list(&res->skipped_deletions, storage + a + d, r->skipped_deletions);
    *out = res;
    return ZTEE_OK;
  });
}

void ztee_export_result_free(ztee_export_result* result) { std::free(result); }

ztee_status ztee_sandbox_patch(ztee_sandbox* sb, const char* mount, const char* const* paths, size_t path_count,
                               char** out) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(sb, "ztee_sandbox_patch");
    if (!out) return invalid("ztee_sandbox_patch: out is NULL");
    std::vector<std::string> ps;
    if (ztee_status st = read_strings(paths, path_count, "ztee_sandbox_patch", "paths", &ps); st != ZTEE_OK) return st;
    auto r = sb->sb.patch(str_or(mount), ps);
    if (!r) return fail(r.error());
    *out = dup_bytes(r.value());
    return ZTEE_OK;
  });
}

ztee_status ztee_sandbox_remove(ztee_sandbox* sb, const char* path, int recursive) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(sb, "ztee_sandbox_remove");
    ZTEE_CHECK_PATH(path, "ztee_sandbox_remove");
    auto r = sb->sb.remove(path, recursive != 0);
    if (!r) return fail(r.error());
    return ZTEE_OK;
  });
}

ztee_status ztee_sandbox_mkdir(ztee_sandbox* sb, const char* path, int parents, uint32_t mode) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(sb, "ztee_sandbox_mkdir");
    ZTEE_CHECK_PATH(path, "ztee_sandbox_mkdir");
    auto r = sb->sb.mkdir(path, parents != 0, mode ? mode : 0755);
    if (!r) return fail(r.error());
    return ZTEE_OK;
  });
}

// ---- pool ---------------------------------------------------------------------

ztee_status ztee_pool_options_init(ztee_pool_options* opts, size_t size) {
  return guard([&] {
    return init_options(opts, size, kPoolOptionsSizes, "ztee_pool_options",
                        "ZTEE_POOL_OPTIONS_INIT");
  });
}

ztee_status ztee_pool_create(ztee_runtime* rt, const ztee_pool_options* opts, ztee_pool** out) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(rt, "ztee_pool_create");
    if (!out) return invalid("ztee_pool_create: out is NULL");
    ztee_pool_options o;
    if (ztee_status st = read_options(opts, kPoolOptionsSizes, "ztee_pool_options",
                                      "ZTEE_POOL_OPTIONS_INIT", &o);
        st != ZTEE_OK)
      return st;
    ztee_sandbox_options so;
    if (ztee_status st = read_options(o.sandbox, kSandboxOptionsSizes, "ztee_sandbox_options",
                                      "ZTEE_SANDBOX_OPTIONS_INIT", &so);
        st != ZTEE_OK)
      return st;
    if (so.template_dir)
      return invalid("ztee_pool_create: sandbox->template_dir is set: set "
                     "ztee_pool_options.template_dir instead");
    if (o.cold_boot && o.template_dir)
      return invalid("ztee_pool_create: cold_boot and template_dir exclude each other");
    ztee::PoolOptions po;
    po.sandbox = to_sandbox_options(so);
    if (ztee_status st = make_dlp(so.dlp, so.dlp_block, so.dlp_block_count, "ztee_pool_create", &po.sandbox.dlp);
        st != ZTEE_OK)
      return st;
    po.template_dir = str_or(o.template_dir);
    po.from_snapshot = o.cold_boot == 0;
    if (o.min_ready) po.min_ready = o.min_ready;
    if (o.max_total) po.max_total = o.max_total;
    if (o.refill_concurrency) po.refill_concurrency = o.refill_concurrency;
    if (o.lease_timeout_ms) po.lease_timeout_ms = o.lease_timeout_ms;
    po.warm_up = str_or(o.warm_up);
    if (po.max_total < po.min_ready)
      return invalid("ztee_pool_create: max_total " + std::to_string(po.max_total) +
                     " is less than min_ready " + std::to_string(po.min_ready));
    auto r = rt->rt.create_pool(po);
    if (!r) return fail(r.error());
    auto closer = std::make_shared<PoolCloser>();
    closer->pool = r.value();
    *out = new ztee_pool{std::move(r.value()), std::move(closer)};
    return ZTEE_OK;
  });
}

ztee_status ztee_pool_lease(ztee_pool* pool, uint32_t deadline_ms, ztee_sandbox** out) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(pool, "ztee_pool_lease");
    if (!out) return invalid("ztee_pool_lease: out is NULL");
    auto r = pool->pool.lease(deadline_ms);
    if (!r) return fail(r.error());
    *out = new_sandbox_handle(std::move(r.value()));
    return ZTEE_OK;
  });
}

ztee_status ztee_pool_stats_get(const ztee_pool* pool, ztee_pool_stats* out) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(pool, "ztee_pool_stats_get");
    if (!out) return invalid("ztee_pool_stats_get: out is NULL");
    uint32_t size = out->struct_size;
    if (ztee_status st = check_size(size, kPoolStatsSizes, "ztee_pool_stats",
                                    "ZTEE_POOL_STATS_INIT");
        st != ZTEE_OK)
      return st;
    ztee::PoolStats s = pool->pool.stats();
    ztee_pool_stats full;
    std::memset(&full, 0, sizeof full);
    full.struct_size = size;
    full.ready = s.ready;
    full.starting = s.starting;
    full.leased = s.leased;
    full.consecutive_failures = s.consecutive_failures;
    full.backing_off = s.backing_off ? 1 : 0;
    full.created = s.created;
    full.failed = s.failed;
    full.leases = s.leases;
    full.lease_timeouts = s.lease_timeouts;
    static_assert(sizeof full.lease_wait_hist == sizeof s.lease_wait_hist);
    std::memcpy(full.lease_wait_hist, s.lease_wait_hist, sizeof full.lease_wait_hist);
    // Only the fields the caller's layout has; a newer caller's unknown
    // fields read as zero.
    size_t n = std::min<size_t>(size, sizeof full);
    std::memcpy(out, &full, n);
    if (size > n) std::memset(reinterpret_cast<unsigned char*>(out) + n, 0, size - n);
    return ZTEE_OK;
  });
}

ztee_status ztee_pool_last_error(const ztee_pool* pool, char** out) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(pool, "ztee_pool_last_error");
    if (!out) return invalid("ztee_pool_last_error: out is NULL");
    *out = dup_bytes(pool->pool.stats().last_error);
    return ZTEE_OK;
  });
}

void ztee_pool_close(ztee_pool* pool) {
  (void)guard([&] {
    if (pool && pool->pool) pool->pool.close();
    return ZTEE_OK;
  });
}

void ztee_pool_free(ztee_pool* pool) {
  (void)guard([&] {
    if (!pool) return ZTEE_OK;
    delete pool;  // the closer closes the pool unless a gate still holds it
    return ZTEE_OK;
  });
}

// ---- control plane: tool calls and policies ------------------------------------

ztee_status ztee_tool_call_init(ztee_tool_call* call, size_t size) {
  return guard([&] { return init_options(call, size, kToolCallSizes, "ztee_tool_call", "ZTEE_TOOL_CALL_INIT"); });
}

ztee_status ztee_policy_parse(const char* json, size_t len, ztee_policy** out) {
  return guard([&]() -> ztee_status {
    if (!json) return invalid("ztee_policy_parse: json is NULL");
    if (!out) return invalid("ztee_policy_parse: out is NULL");
    auto r = ztee::Policy::parse(std::string_view(json, len));
    if (!r) return fail(r.error());
    *out = new ztee_policy{std::move(r.value())};
    return ZTEE_OK;
  });
}

ztee_status ztee_policy_load(const char* path, ztee_policy** out) {
  return guard([&]() -> ztee_status {
    if (!path) return invalid("ztee_policy_load: path is NULL");
    if (!out) return invalid("ztee_policy_load: out is NULL");
    auto r = ztee::Policy::load(path);
    if (!r) return fail(r.error());
    *out = new ztee_policy{std::move(r.value())};
    return ZTEE_OK;
  });
}

ztee_status ztee_policy_default(ztee_policy** out) {
  return guard([&]() -> ztee_status {
    if (!out) return invalid("ztee_policy_default: out is NULL");
    *out = new ztee_policy{ztee::Policy::default_policy()};
    return ZTEE_OK;
  });
}

const char* ztee_policy_default_json(void) {
  // The view is over a NUL-terminated literal.
  return ztee::Policy::default_policy_json().data();
}

void ztee_policy_free(ztee_policy* policy) {
  (void)guard([&] {
    delete policy;
    return ZTEE_OK;
  });
}

ztee_status ztee_policy_classify(const ztee_policy* policy, const ztee_tool_call* call, ztee_decision** out) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(policy, "ztee_policy_classify");
    if (!out) return invalid("ztee_policy_classify: out is NULL");
    ztee::ToolCall c;
    if (ztee_status st = read_tool_call(call, "ztee_policy_classify", false, &c); st != ZTEE_OK) return st;
    *out = new_decision(policy->policy.classify(c));
    return ZTEE_OK;
  });
}

void ztee_decision_free(ztee_decision* decision) {
  if (!decision) return;
  free_strings({decision->rule, decision->reason});
  std::free(decision);
}

// ---- control plane: audit log ----------------------------------------------------

ztee_status ztee_audit_options_init(ztee_audit_options* opts, size_t size) {
  return guard([&] {
    return init_options(opts, size, kAuditOptionsSizes, "ztee_audit_options", "ZTEE_AUDIT_OPTIONS_INIT");
  });
}

ztee_status ztee_audit_open(const ztee_audit_options* opts, ztee_audit_log** out) {
  return guard([&]() -> ztee_status {
    if (!opts) return invalid("ztee_audit_open: opts is NULL: set at least opts->path");
    if (!out) return invalid("ztee_audit_open: out is NULL");
    ztee_audit_options o;
    if (ztee_status st = read_options(opts, kAuditOptionsSizes, "ztee_audit_options", "ZTEE_AUDIT_OPTIONS_INIT", &o);
        st != ZTEE_OK)
      return st;
    if (!o.path || !*o.path) return invalid("ztee_audit_open: opts->path is not set: name the log file");
    ztee::AuditOptions ao;
    ao.path = o.path;
    switch (o.durability) {
      case ZTEE_DURABILITY_FSYNC: ao.durability = ztee::Durability::kFsync; break;
      case ZTEE_DURABILITY_BATCH: ao.durability = ztee::Durability::kBatch; break;
      case ZTEE_DURABILITY_NONE: ao.durability = ztee::Durability::kNone; break;
      default:
        return invalid("ztee_audit_open: opts->durability " + std::to_string(o.durability) +
                       " is not ZTEE_DURABILITY_FSYNC, _BATCH or _NONE");
    }
    ao.batch_ms = o.batch_ms ? o.batch_ms : 100;
    if (!o.hmac_key && o.hmac_key_len) return invalid("ztee_audit_open: opts->hmac_key_len is set but hmac_key is NULL");
    if (o.hmac_key) ao.hmac_key.assign(static_cast<const char*>(o.hmac_key), o.hmac_key_len);
    ao.rotate_bytes = o.rotate_bytes;
    auto r = ztee::AuditLog::open(std::move(ao));
    if (!r) return fail(r.error());
    *out = new ztee_audit_log{std::move(r.value())};
    return ZTEE_OK;
  });
}

ztee_status ztee_audit_append(ztee_audit_log* log, const char* event, const char* trace_id,
                              const char* fields_json_inner, uint64_t* seq_out) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(log, "ztee_audit_append");
    if (!event || !*event) return invalid("ztee_audit_append: event is NULL or empty: name the event");
    std::string_view fields = fields_json_inner ? fields_json_inner : "";
    if (!fields.empty())
      if (ztee_status st = check_audit_fields(fields); st != ZTEE_OK) return st;
    auto r = log->log.append(event, trace_id ? trace_id : "", fields);
    if (!r) return fail(r.error());
    if (seq_out) *seq_out = r.value();
    return ZTEE_OK;
  });
}

ztee_status ztee_audit_flush(ztee_audit_log* log) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(log, "ztee_audit_flush");
    auto r = log->log.flush();
    if (!r) return fail(r.error());
    return ZTEE_OK;
  });
}

void ztee_audit_free(ztee_audit_log* log) {
  (void)guard([&] {
    delete log;
    return ZTEE_OK;
  });
}

ztee_status ztee_audit_verify(const char* const* files, size_t n, const void* key, size_t key_len,
                              ztee_audit_report** out) {
  return guard([&]() -> ztee_status {
    if (!out) return invalid("ztee_audit_verify: out is NULL");
    if (!files || n == 0) return invalid("ztee_audit_verify: no files: pass the log's files, oldest first");
    if (!key && key_len) return invalid("ztee_audit_verify: key_len is set but key is NULL");
    std::vector<std::string> paths;
    if (ztee_status st = read_strings(files, n, "ztee_audit_verify", "files", &paths); st != ZTEE_OK) return st;
    auto rep = ztee::verify_audit_log(paths, key ? std::string_view(static_cast<const char*>(key), key_len)
                                                 : std::string_view());
    auto* r = static_cast<ztee_audit_report*>(std::calloc(1, sizeof(ztee_audit_report)));
    if (!r) throw std::bad_alloc();
    try {
      r->problem = dup_bytes(rep.problem);
    } catch (...) {
      std::free(r);
      throw;
    }
    r->ok = rep.ok ? 1 : 0;
    r->records = rep.records;
    *out = r;
    return ZTEE_OK;
  });
}

void ztee_audit_report_free(ztee_audit_report* report) {
  if (!report) return;
  std::free(report->problem);
  std::free(report);
}

// ---- control plane: gate ----------------------------------------------------------

ztee_status ztee_secret_value_set(ztee_secret_value* out, const void* data, size_t len) {
  return guard([&]() -> ztee_status {
    if (!out) return invalid("ztee_secret_value_set: out is NULL");
    if (!data || !len) return invalid("ztee_secret_value_set: the value is empty: return ZTEE_E_NOT_FOUND instead");
    if (!out->value.empty()) explicit_bzero(out->value.data(), out->value.size());
    out->value.assign(static_cast<const char*>(data), len);
    out->set = true;
    return ZTEE_OK;
  });
}

ztee_status ztee_gate_options_init(ztee_gate_options* opts, size_t size) {
  return guard([&] {
    return init_options(opts, size, kGateOptionsSizes, "ztee_gate_options", "ZTEE_GATE_OPTIONS_INIT");
  });
}

ztee_status ztee_gate_create(ztee_runtime* rt, const ztee_gate_options* opts, ztee_gate** out) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(rt, "ztee_gate_create");
    if (!out) return invalid("ztee_gate_create: out is NULL");
    ztee_gate_options o;
    if (ztee_status st = read_options(opts, kGateOptionsSizes, "ztee_gate_options", "ZTEE_GATE_OPTIONS_INIT", &o);
        st != ZTEE_OK)
      return st;
    ztee_sandbox_options so;
    if (ztee_status st = read_options(o.sandbox, kSandboxOptionsSizes, "ztee_sandbox_options",
                                      "ZTEE_SANDBOX_OPTIONS_INIT", &so);
        st != ZTEE_OK)
      return st;
    auto h = std::make_unique<ztee_gate>();
    ztee::GateOptions go;
    go.policy = o.policy ? o.policy->policy : ztee::Policy::default_policy();
    if (o.audit) go.audit = o.audit->log;
    if (o.pool) {
      go.pool = o.pool->pool;
      h->pool = o.pool->closer;
    }
    go.sandbox = to_sandbox_options(so);
    if (ztee_status st = make_dlp(so.dlp, so.dlp_block, so.dlp_block_count, "ztee_gate_create", &go.sandbox.dlp);
        st != ZTEE_OK)
      return st;
    if (o.approver) {
      ztee_approver_cb cb = o.approver;
      void* ud = o.approver_data;
      ztee_gate* gate = h.get();
      go.approver = [cb, ud, gate](const ztee::ApprovalRequest& req) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(req.deadline -
                                                                          std::chrono::steady_clock::now())
                        .count();
        cb(ud, gate, req.token.c_str(), req.description.c_str(),
           static_cast<uint32_t>(std::clamp<int64_t>(left, 0, UINT32_MAX)));
      };
    }
    std::vector<std::pair<std::string, ztee::SecretResolver>> chain;
    if (o.resolver) {
      ztee_secret_cb cb = o.resolver;
      void* ud = o.resolver_data;
      chain.emplace_back("the resolver callback", [cb, ud](std::string_view name) -> ztee::Result<std::string> {
        ztee_secret_value v;
        std::string n(name);
        ztee_status st = cb(ud, n.c_str(), &v);
        if (st == ZTEE_OK && v.set) {
          std::string value = v.value;
          explicit_bzero(v.value.data(), v.value.size());
          return value;
        }
        if (!v.value.empty()) explicit_bzero(v.value.data(), v.value.size());
        if (st == ZTEE_OK)
          return ztee::make_error(ztee::Errc::kInvalidArgument,
                                  "the resolver callback returned ZTEE_OK without calling ztee_secret_value_set");
        if (st == ZTEE_E_NOT_FOUND)
          return ztee::make_error(ztee::Errc::kNotFound, "secret \"" + n + "\" is not known to the resolver callback");
        return ztee::make_error(static_cast<ztee::Errc>(known_status(st)),
                                std::string("the resolver callback failed with ") + ztee_status_name(st));
      });
    }
    if (o.secrets_dir) chain.emplace_back("dir", ztee::secrets_from_dir(o.secrets_dir));
    if (o.secrets_env_prefix) chain.emplace_back("env", ztee::secrets_from_env(o.secrets_env_prefix));
    if (!chain.empty()) {
      go.secrets = [chain = std::move(chain)](std::string_view name) -> ztee::Result<std::string> {
        std::string misses;
        for (const auto& [what, resolve] : chain) {
          auto v = resolve(name);
          if (v || v.error().code != ztee::Errc::kNotFound) return v;
          misses += (misses.empty() ? "" : "; ") + v.error().message;
        }
        return ztee::make_error(ztee::Errc::kNotFound, misses);
      };
    }
    if (ztee_status st = make_dlp(o.dlp, o.dlp_block, o.dlp_block_count, "ztee_gate_create", &go.dlp); st != ZTEE_OK)
      return st;
    auto g = ztee::Gate::create(rt->rt, std::move(go));
    if (!g) return fail(g.error());
    h->gate = std::move(g.value());
    *out = h.release();
    return ZTEE_OK;
  });
}

ztee_status ztee_gate_call(ztee_gate* gate, const ztee_tool_call* call, ztee_call_result** out) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(gate, "ztee_gate_call");
    if (!out) return invalid("ztee_gate_call: out is NULL");
    ztee::ToolCall c;
    if (ztee_status st = read_tool_call(call, "ztee_gate_call", true, &c); st != ZTEE_OK) return st;
    auto r = gate->gate.call(std::move(c));
    if (!r) return fail(r.error());
    const ztee::CallResult& cr = r.value();
    auto* res = static_cast<ztee_call_result*>(std::calloc(1, sizeof(ztee_call_result)));
    if (!res) throw std::bad_alloc();
    try {
      res->rule = dup_bytes(cr.decision.rule);
      res->reason = dup_bytes(cr.decision.reason);
      res->denial = dup_bytes(cr.denial);
      res->approved_by = dup_bytes(cr.approved_by);
      res->sandbox_id = dup_bytes(cr.sandbox_id);
      if (cr.ran) res->exec = new_exec_result(cr.exec);
    } catch (...) {
      ztee_call_result_free(res);
      throw;
    }
    res->ran = cr.ran ? 1 : 0;
    res->tier = cr.decision.tier;
    res->action = action_code(cr.decision.action);
    res->rule_index = cr.decision.rule_index;
    res->blocked = cr.blocked ? 1 : 0;
    res->dlp_findings = static_cast<uint32_t>(cr.findings.size());
    res->injection_anomalies = static_cast<uint32_t>(cr.anomalies.size());
    *out = res;
    return ZTEE_OK;
  });
}

void ztee_call_result_free(ztee_call_result* result) {
  if (!result) return;
  free_strings({result->rule, result->reason, result->denial, result->approved_by, result->sandbox_id});
  ztee_exec_result_free(result->exec);
  std::free(result);
}

ztee_status ztee_gate_approve(ztee_gate* gate, const char* token, const char* who) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(gate, "ztee_gate_approve");
    if (!token) return invalid("ztee_gate_approve: token is NULL");
    if (!gate->gate.approve(token, who ? who : "approver"))
      return fail(ZTEE_E_NOT_FOUND, "ztee_gate_approve: no pending approval has this token (unknown, already "
                                    "answered or expired); the answer was recorded and ignored");
    return ZTEE_OK;
  });
}

ztee_status ztee_gate_deny(ztee_gate* gate, const char* token, const char* reason, const char* who) {
  return guard([&]() -> ztee_status {
    ZTEE_CHECK_HANDLE(gate, "ztee_gate_deny");
    if (!token) return invalid("ztee_gate_deny: token is NULL");
    if (!gate->gate.deny(token, reason ? reason : "", who ? who : "approver"))
      return fail(ZTEE_E_NOT_FOUND, "ztee_gate_deny: no pending approval has this token (unknown, already "
                                    "answered or expired); the answer was recorded and ignored");
    return ZTEE_OK;
  });
}

void ztee_gate_free(ztee_gate* gate) {
  (void)guard([&] {
    delete gate;
    return ZTEE_OK;
  });
}

}  // extern "C"
