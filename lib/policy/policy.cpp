// Policy: JSON parsing (simdjson on-demand, so every error can name its line)
// and classification of tool calls into tiers.
#include <ztee/policy.hpp>

#include <fmt/format.h>
#include <fnmatch.h>
#include <re2/re2.h>
#include <simdjson.h>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace ztee {

namespace detail {

class PolicyImpl {
 public:
  PolicySpec spec;
  std::vector<std::unique_ptr<RE2>> regexes;  // one per rule; null when unset
  const Tier* tiers[6] = {};
};

}  // namespace detail

namespace {

constexpr std::string_view kDefaultPolicy = R"json({
  "version": 1,
  "tiers": {
    "L0": {"action": "run", "timeout_ms": 30000},
    "L2": {"action": "audit", "timeout_ms": 60000},
    "L4": {"action": "approve", "timeout_ms": 120000, "approval_timeout_ms": 300000},
    "L5": {"action": "deny"}
  },
  "rules": [
    {"name": "pii", "labels": ["pii", "phi", "pci"], "tier": "L4"},
    {"name": "destructive-command",
     "command": "(^|[;&|(\\s])(rm\\s+-[a-zA-Z]*[rRf]|mkfs|dd\\s+if=|shred\\s|truncate\\s|git\\s+push\\s+.*--force)",
     "tier": "L4"},
    {"name": "network", "network": true, "tier": "L4"},
    {"name": "read-only-tools", "writes_files": false,
     "tool": ["read_file", "list_dir", "list_files", "search", "grep", "stat", "glob", "get_*", "read_*", "list_*", "search_*"],
     "tier": "L0"},
    {"name": "code-execution",
     "tool": ["python", "python3", "node", "bash", "sh", "shell", "exec", "run_code", "execute*", "code_interpreter"],
     "tier": "L4"},
    {"name": "destructive-writes", "tool": ["delete*", "remove*", "rm", "drop*", "truncate*"], "tier": "L4"},
    {"name": "internal-writes",
     "tool": ["write_file", "edit_file", "create_file", "mkdir", "move", "copy", "write_*", "edit_*", "create_*", "update_*"],
     "tier": "L2"}
  ]
}
)json";

Error perr(std::string_view origin, int line, std::string_view what) {
  return make_error(Errc::kInvalidArgument, fmt::format("{}: line {}: {}", origin, line, what));
}

class Parser {
 public:
  Parser(std::string_view origin, const simdjson::padded_string& buf) : origin_(origin), buf_(buf) {}

  int line_of(const char* p) const {
    const char* base = buf_.data();
    if (p < base || p > base + buf_.size()) return 0;
    return 1 + static_cast<int>(std::count(base, p, '\n'));
  }
  int line_of(simdjson::ondemand::value& v) {
    std::string_view tok = v.raw_json_token();
    return line_of(tok.data());
  }
  Error at(int line, std::string_view what) const { return perr(origin_, line, what); }

  static std::optional<int> tier_level(std::string_view s) {
    if (s.size() == 2 && (s[0] == 'L' || s[0] == 'l') && s[1] >= '0' && s[1] <= '5') return s[1] - '0';
    return std::nullopt;
  }

  Result<std::string> str(simdjson::ondemand::value& v, std::string_view key) {
    int line = line_of(v);
    std::string_view s;
    if (v.get_string().get(s)) return at(line, fmt::format("\"{}\" must be a string", key));
    return std::string(s);
  }
  Result<uint64_t> uint(simdjson::ondemand::value& v, std::string_view key, uint64_t max) {
    int line = line_of(v);
    uint64_t n = 0;
    if (v.get_uint64().get(n) || n > max)
      return at(line, fmt::format("\"{}\" must be an integer from 0 to {}", key, max));
    return n;
  }
  Result<bool> boolean(simdjson::ondemand::value& v, std::string_view key) {
    int line = line_of(v);
    bool b = false;
    if (v.get_bool().get(b)) return at(line, fmt::format("\"{}\" must be true or false", key));
    return b;
  }
  // A string or an array of strings.
  Result<std::vector<std::string>> strings(simdjson::ondemand::value& v, std::string_view key) {
    int line = line_of(v);
    std::vector<std::string> out;
    simdjson::ondemand::json_type t;
    if (v.type().get(t)) return at(line, "malformed value");
    if (t == simdjson::ondemand::json_type::string) {
      auto s = str(v, key);
      if (!s) return std::move(s).error();
      out.push_back(std::move(*s));
      return out;
    }
    simdjson::ondemand::array arr;
    if (v.get_array().get(arr)) return at(line, fmt::format("\"{}\" must be a string or an array of strings", key));
    for (auto el : arr) {
      simdjson::ondemand::value item;
      if (el.get(item)) return at(line, "malformed array");
      auto s = str(item, key);
      if (!s) return std::move(s).error();
      out.push_back(std::move(*s));
    }
    return out;
  }

  Result<Tier> tier(simdjson::ondemand::object obj, int level, int line) {
    Tier t;
    t.level = level;
    bool have_action = false;
    for (auto field : obj) {
      std::string_view key;
      if (field.unescaped_key().get(key)) return at(line, "malformed tier");
      simdjson::ondemand::value v;
      if (field.value().get(v)) return at(line, "malformed tier");
      int kl = line_of(v);
      if (key == "action") {
        auto s = str(v, key);
        if (!s) return std::move(s).error();
        if (*s == "run") t.action = TierAction::kRun;
        else if (*s == "audit") t.action = TierAction::kAudit;
        else if (*s == "approve") t.action = TierAction::kApprove;
        else if (*s == "deny") t.action = TierAction::kDeny;
        else return at(kl, fmt::format("unknown action \"{}\" (run, audit, approve or deny)", *s));
        have_action = true;
      } else if (key == "timeout_ms" || key == "approval_timeout_ms" || key == "memory_mib") {
        auto n = uint(v, key, 86400000);
        if (!n) return std::move(n).error();
        if (key == "timeout_ms") t.limits.timeout_ms = static_cast<uint32_t>(*n);
        else if (key == "approval_timeout_ms") t.limits.approval_timeout_ms = static_cast<uint32_t>(*n);
        else {
          if (*n != 0 && (*n < 64 || *n > 65536)) return at(kl, "\"memory_mib\" must be 64..65536");
          t.limits.memory_mib = static_cast<uint32_t>(*n);
        }
      } else if (key == "output_cap") {
        auto n = uint(v, key, uint64_t{1} << 40);
        if (!n) return std::move(n).error();
        t.limits.output_cap = *n;
      } else if (key == "network") {
        auto l = strings(v, key);
        if (!l) return std::move(l).error();
        t.limits.network = std::move(*l);
      } else {
        return at(kl, fmt::format("unknown tier key \"{}\" (action, timeout_ms, output_cap, memory_mib, "
                                  "network, approval_timeout_ms)", key));
      }
    }
    if (!have_action) return at(line, fmt::format("tier L{} has no \"action\"", level));
    return t;
  }

  Result<PolicyRule> rule(simdjson::ondemand::object obj, int line) {
    PolicyRule r;
    r.line = line;
    bool have_tier = false;
    for (auto field : obj) {
      std::string_view key;
      if (field.unescaped_key().get(key)) return at(line, "malformed rule");
      simdjson::ondemand::value v;
      if (field.value().get(v)) return at(line, "malformed rule");
      int kl = line_of(v);
      if (key == "name") {
        auto s = str(v, key);
        if (!s) return std::move(s).error();
        r.name = std::move(*s);
      } else if (key == "tool" || key == "labels") {
        auto l = strings(v, key);
        if (!l) return std::move(l).error();
        (key == "tool" ? r.tool : r.labels) = std::move(*l);
      } else if (key == "command") {
        auto s = str(v, key);
        if (!s) return std::move(s).error();
        RE2 re(*s, RE2::Quiet);
        if (!re.ok()) return at(kl, fmt::format("\"command\" is not a valid RE2 regex: {}", re.error()));
        r.command = std::move(*s);
      } else if (key == "network" || key == "writes_files") {
        auto b = boolean(v, key);
        if (!b) return std::move(b).error();
        (key == "network" ? r.network : r.writes_files) = *b;
      } else if (key == "tier") {
        auto s = str(v, key);
        if (!s) return std::move(s).error();
        auto lv = tier_level(*s);
        if (!lv) return at(kl, fmt::format("unknown tier \"{}\" (L0..L5)", *s));
        r.tier = *lv;
        have_tier = true;
      } else {
        return at(kl, fmt::format("unknown rule key \"{}\" (name, tool, command, network, writes_files, "
                                  "labels, tier)", key));
      }
    }
    if (!have_tier) return at(line, "rule has no \"tier\"");
    return r;
  }

  Result<PolicySpec> document(simdjson::ondemand::document& doc) {
    PolicySpec spec;
    simdjson::ondemand::object root;
    if (auto e = doc.get_object().get(root); e) {
      if (e == simdjson::TRAILING_CONTENT) return at(1, "unexpected content after the policy object");
      if (e == simdjson::INCORRECT_TYPE) return at(1, "a policy is a JSON object");
      return syntax(doc);
    }
    bool have_version = false, have_rules = false;
    for (auto field : root) {
      std::string_view key;
      if (field.unescaped_key().get(key)) return syntax(doc);
      simdjson::ondemand::value v;
      if (field.value().get(v)) return syntax(doc);
      int kl = line_of(v);
      if (key == "version") {
        auto n = uint(v, key, 1000);
        if (!n) return std::move(n).error();
        if (*n != 1) return at(kl, fmt::format("policy version {} is not supported (1)", *n));
        have_version = true;
      } else if (key == "tiers") {
        simdjson::ondemand::object tiers;
        if (v.get_object().get(tiers)) return at(kl, "\"tiers\" must be an object {\"L0\": {...}, ...}");
        for (auto tf : tiers) {
          std::string_view name;
          if (tf.unescaped_key().get(name)) return syntax(doc);
          simdjson::ondemand::value tv;
          if (tf.value().get(tv)) return syntax(doc);
          int tl = line_of(tv);
          auto lv = tier_level(name);
          if (!lv) return at(tl, fmt::format("unknown tier \"{}\" (L0..L5)", name));
          for (const auto& t : spec.tiers)
            if (t.level == *lv) return at(tl, fmt::format("tier L{} defined twice", *lv));
          simdjson::ondemand::object to;
          if (tv.get_object().get(to)) return at(tl, fmt::format("tier {} must be an object", name));
          auto t = tier(to, *lv, tl);
          if (!t) return std::move(t).error();
          spec.tiers.push_back(std::move(*t));
        }
      } else if (key == "rules") {
        simdjson::ondemand::array rules;
        if (v.get_array().get(rules)) return at(kl, "\"rules\" must be an array");
        for (auto el : rules) {
          simdjson::ondemand::value rv;
          if (el.get(rv)) return syntax(doc);
          int rl = line_of(rv);
          simdjson::ondemand::object ro;
          if (rv.get_object().get(ro)) return at(rl, "a rule must be an object");
          auto r = rule(ro, rl);
          if (!r) return std::move(r).error();
          if (r->name.empty()) r->name = fmt::format("rule {}", spec.rules.size() + 1);
          spec.rules.push_back(std::move(*r));
        }
        have_rules = true;
      } else {
        return at(kl, fmt::format("unknown key \"{}\" (version, tiers, rules)", key));
      }
    }
    const char* trailing = nullptr;
    if (!doc.current_location().get(trailing)) return at(line_of(trailing), "unexpected content after the policy object");
    if (!have_version) return at(1, "\"version\": 1 is missing");
    if (!have_rules) return at(1, "\"rules\" is missing");
    for (const auto& r : spec.rules) {
      bool defined = std::any_of(spec.tiers.begin(), spec.tiers.end(), [&](const Tier& t) { return t.level == r.tier; });
      if (!defined) return at(r.line, fmt::format("rule \"{}\" names tier L{}, which \"tiers\" does not define", r.name, r.tier));
    }
    return spec;
  }

  Error syntax(simdjson::ondemand::document& doc) {
    const char* p = nullptr;
    int line = doc.current_location().get(p) ? static_cast<int>(1 + std::count(buf_.data(), buf_.data() + buf_.size(), '\n')) : line_of(p);
    return at(line, "malformed JSON");
  }

 private:
  std::string_view origin_;
  const simdjson::padded_string& buf_;
};

bool glob_any(const std::vector<std::string>& globs, const std::string& s) {
  for (const auto& g : globs)
    if (fnmatch(g.c_str(), s.c_str(), 0) == 0) return true;
  return false;
}

}  // namespace

const char* tier_action_name(TierAction a) {
  switch (a) {
    case TierAction::kRun: return "run";
    case TierAction::kAudit: return "audit";
    case TierAction::kApprove: return "approve";
    case TierAction::kDeny: return "deny";
  }
  return "deny";
}

std::string ToolCall::text() const {
  if (!command.empty()) return command;
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    out += a;
  }
  return out;
}

Result<Policy> Policy::from_spec(PolicySpec spec) {
  auto impl = std::make_shared<detail::PolicyImpl>();
  impl->spec = std::move(spec);
  for (const auto& t : impl->spec.tiers) {
    if (t.level < 0 || t.level > 5) return make_error(Errc::kInvalidArgument, fmt::format("tier level {} is not 0..5", t.level));
    if (impl->tiers[t.level]) return make_error(Errc::kInvalidArgument, fmt::format("tier L{} defined twice", t.level));
    impl->tiers[t.level] = &t;
  }
  for (const auto& r : impl->spec.rules) {
    if (r.tier < 0 || r.tier > 5 || !impl->tiers[r.tier])
      return make_error(Errc::kInvalidArgument,
                        fmt::format("rule \"{}\" names tier L{}, which the policy does not define", r.name, r.tier));
    if (r.command.empty()) {
      impl->regexes.push_back(nullptr);
      continue;
    }
    auto re = std::make_unique<RE2>(r.command, RE2::Quiet);
    if (!re->ok())
      return make_error(Errc::kInvalidArgument, fmt::format("rule \"{}\": \"command\" is not a valid RE2 regex: {}", r.name, re->error()));
    impl->regexes.push_back(std::move(re));
  }
  return Policy(std::move(impl));
}

Result<Policy> Policy::parse(std::string_view json, std::string_view origin) {
  simdjson::padded_string buf(json);
  // The DOM parser validates the whole text first; the on-demand pass below
  // then reads it with positions, so every error can name its line.
  simdjson::dom::parser dom;
  simdjson::dom::element root;
  auto valid = dom.parse(buf).get(root);
  simdjson::ondemand::parser parser;
  simdjson::ondemand::document doc;
  if (parser.iterate(buf).get(doc)) return perr(origin, 1, "malformed JSON");
  Parser p(origin, buf);
  if (valid == simdjson::TRAILING_CONTENT) {
    size_t end = json.find_last_not_of(" \t\r\n");
    return perr(origin, p.line_of(buf.data() + (end == std::string_view::npos ? 0 : end)),
                "unexpected content after the policy object");
  }
  auto spec = p.document(doc);
  if (!spec) return std::move(spec).error();
  if (valid) return perr(origin, 1, fmt::format("malformed JSON ({})", simdjson::error_message(valid)));
  return from_spec(std::move(*spec));
}

Result<Policy> Policy::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(Errc::kNotFound, fmt::format("policy {}: cannot open it", path), errno);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse(ss.str(), path);
}

std::string_view Policy::default_policy_json() { return kDefaultPolicy; }

Policy Policy::default_policy() {
  auto p = parse(kDefaultPolicy, "default policy");
  return std::move(p).value();
}

const PolicySpec& Policy::spec() const {
  static const PolicySpec empty;
  return impl_ ? impl_->spec : empty;
}

Decision Policy::classify(const ToolCall& call) const {
  Decision d;
  if (!impl_) {
    d.reason = "no policy: denied";
    return d;
  }
  const auto& rules = impl_->spec.rules;
  std::string text;
  bool have_text = false;
  for (size_t i = 0; i < rules.size(); ++i) {
    const auto& r = rules[i];
    if (!r.tool.empty() && !glob_any(r.tool, call.tool)) continue;
    if (r.network && *r.network != !call.network.empty()) continue;
    if (r.writes_files && *r.writes_files != (!call.writes.empty() || !call.files.empty())) continue;
    if (!r.labels.empty() &&
        std::none_of(r.labels.begin(), r.labels.end(), [&](const std::string& l) {
          return std::find(call.labels.begin(), call.labels.end(), l) != call.labels.end();
        }))
      continue;
    if (const auto& re = impl_->regexes[i]) {
      if (!have_text) text = call.text(), have_text = true;
      if (!RE2::PartialMatch(text, *re)) continue;
    }
    const Tier& t = *impl_->tiers[r.tier];
    d.tier = r.tier;
    d.action = t.action;
    d.rule = r.name;
    d.rule_index = static_cast<int>(i);
    d.limits = t.limits;
    d.reason = fmt::format("rule \"{}\" -> L{} {}", r.name, r.tier, tier_action_name(t.action));
    return d;
  }
  d.reason = "no rule matched: denied (fail closed)";
  return d;
}

}  // namespace ztee
