// The shipped detectors and injection rules (see patterns.hpp).
#include "dlp/patterns.hpp"

namespace ztee::detail::dlp {

namespace {

PatternDef token(std::string lead, std::string core, std::string trail, Check check, std::string front,
                 std::string back) {
  PatternDef p;
  p.regex = "(?:^|" + lead + ")" + core + "(?:" + trail + "|$)";
  // Hyperscan runs without the lead (a class of nearly every byte, which
  // keeps its automata from skipping ahead); RE2 checks it.
  p.prefilter = core + "(?:" + trail + "|$)";
  p.check = check;
  p.front = std::move(front);
  p.back = std::move(back);
  return p;
}

PatternDef plain(std::string regex) {
  PatternDef p;
  p.regex = std::move(regex);
  return p;
}

const std::string kDigits = "0-9";
const std::string kWordish = "A-Za-z0-9_";

std::vector<BuiltinDef> make_detectors() {
  std::vector<BuiltinDef> d;

  // Cards: 13-19 digits bare, or 4-4-4-x(-x) / 4-6-5 / 4-6-4 with one kind of
  // separator; first digit 2-6 (every issuer range handled starts so).
  {
    std::string core =
        "[2-6](?:[0-9]{12,18}|[0-9]{3}(?: [0-9]{4}){2}(?: [0-9]{1,4}){1,2}|[0-9]{3}(?:-[0-9]{4}){2}(?:-[0-9]{1,4}){1,2}"
        "|[0-9]{3} [0-9]{6} [0-9]{4,5}|[0-9]{3}-[0-9]{6}-[0-9]{4,5})";
    PatternDef p;
    p.regex = "(?:^|[^0-9A-Za-z_ \\-]|(?:^|[^0-9])[ \\-])" + core + "(?:[^0-9A-Za-z_ \\-]|[ \\-](?:[^0-9]|$)|$)";
    p.check = Check::kCard;
    p.shape = Shape::kCard;
    p.front = kDigits;
    p.back = kDigits;
    d.push_back({"card", false, {}, false, {p}});
  }
  PatternDef iban = token("[^A-Za-z0-9]", "[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)",
                          "[^A-Za-z0-9]", Check::kIban, "A-Z", "A-Z0-9");
  iban.shape = Shape::kIban;
  d.push_back({"iban", false, {}, false, {iban}});
  PatternDef ssn = token("[^0-9A-Za-z_\\-]", "[0-9]{3}-[0-9]{2}-[0-9]{4}", "[^0-9A-Za-z_\\-]", Check::kSsn, kDigits,
                         kDigits);
  ssn.shape = Shape::kSsn;
  d.push_back({"ssn", false, {}, false, {ssn}});
  {
    PatternDef p;
    p.regex =
        "(?:^|[^A-Za-z0-9._%+\\-])[A-Za-z0-9._%+\\-]{1,64}@[A-Za-z0-9\\-]{1,63}(?:\\.[A-Za-z0-9\\-]{1,40}){0,3}"
        "\\.[A-Za-z]{2,24}(?:[^A-Za-z0-9.\\-]|\\.(?:[^A-Za-z0-9\\-]|$)|$)";
    p.prefilter =
        "@[A-Za-z0-9\\-]{1,63}(?:\\.[A-Za-z0-9\\-]{1,40}){0,3}\\.[A-Za-z]{2,24}(?:[^A-Za-z0-9.\\-]|\\.(?:[^A-Za-z0-9\\-]|$)|$)";
    p.check = Check::kEmail;
    p.front = "A-Za-z0-9._%+\\-";
    p.back = "A-Za-z";
    d.push_back({"email", false, {}, false, {p}});
  }
  PatternDef nanp = token("[^A-Za-z0-9_+\\-.]", "(?:1[ .\\-]?)?(?:\\([0-9]{3}\\) ?|[0-9]{3}[.\\-])[0-9]{3}[.\\-][0-9]{4}",
                          "[^0-9A-Za-z_\\-.]|\\.(?:[^0-9]|$)", Check::kPhone, "(0-9", kDigits);
  nanp.shape = Shape::kNanp;
  PatternDef e164 = token("[^A-Za-z0-9_+]", "\\+[1-9][0-9]{7,14}", "[^0-9A-Za-z_]", Check::kPhone, "+", kDigits);
  e164.shape = Shape::kE164;
  PatternDef intl = token("[^A-Za-z0-9_+]", "\\+[1-9][0-9]{0,2}(?:[ .\\-](?:\\([0-9]{1,4}\\)|[0-9]{1,4})){2,6}",
                          "[^0-9A-Za-z_]", Check::kPhone, "+", kDigits);
  intl.shape = Shape::kIntl;
  d.push_back({"phone", false, {}, false, {e164, intl, nanp}});
  {
    PatternDef p;
    const std::string label = "(?:[A-Z0-9]{1,20} ){0,2}PRIVATE KEY-----";
    p.regex = "-----BEGIN " + label +
              "(?:[\\r\\n]{1,2}Proc-Type: [A-Z0-9,]{1,32}[\\r\\n]{1,2}DEK-Info: [A-Za-z0-9,\\-]{1,128})?"
              "[A-Za-z0-9+/=\\r\\n\\t ]{1,8192}-----END " + label;
    p.opener = "-----BEGIN " + label;
    p.truncate_on_expiry = true;
    d.push_back({"private_key", false, {}, false, {p}});
  }
  d.push_back({"aws_access_key", false, {}, false,
               {token("[^A-Za-z0-9]", "(?:AKIA|ASIA)[A-Z2-7]{16}", "[^A-Za-z0-9]", Check::kNone, "A-Z", "A-Z2-7")}});
  {
    PatternDef p;
    p.regex =
        "(?i:aws)[A-Za-z0-9_ .\\-]{0,32}(?i:secret|key)[A-Za-z0-9_ .\\-]{0,32}[\"']?[ \\t]{0,4}(?::=|=>|:|=)[ \\t]{0,4}"
        "[\"']?[A-Za-z0-9/+]{40}(?:[^A-Za-z0-9/+=]|$)";
    p.check = Check::kAwsContext;
    p.back = "A-Za-z0-9/+";
    d.push_back({"aws_secret_key", false, {}, false, {p}});
  }
  d.push_back({"github_token", false, {}, false,
               {token("[^A-Za-z0-9_]", "(?:gh[pousr]_[A-Za-z0-9]{36,80}|github_pat_[A-Za-z0-9_]{22,160})",
                      "[^A-Za-z0-9_]", Check::kNone, "g", kWordish)}});
  d.push_back({"gitlab_token", false, {}, false,
               {token("[^A-Za-z0-9_\\-]", "glpat-[A-Za-z0-9_\\-]{20,64}", "[^A-Za-z0-9_\\-]", Check::kNone, "g",
                      "A-Za-z0-9_\\-")}});
  d.push_back({"slack_token", false, {}, false,
               {token("[^A-Za-z0-9_\\-]", "xox[abprs]-[A-Za-z0-9\\-]{10,160}", "[^A-Za-z0-9_\\-]", Check::kNone, "x",
                      "A-Za-z0-9\\-")}});
  d.push_back({"stripe_key", false, {}, false,
               {token("[^A-Za-z0-9_]", "(?:sk|rk|pk)_live_[A-Za-z0-9]{16,128}", "[^A-Za-z0-9_]", Check::kNone, "prs",
                      "A-Za-z0-9")}});
  {
    PatternDef p;
    p.regex =
        "(?:^|[^A-Za-z0-9_.\\-])eyJ[A-Za-z0-9_\\-]{5,}\\.[A-Za-z0-9_\\-]{2,}\\.[A-Za-z0-9_\\-]{1,}"
        "(?:[^A-Za-z0-9_.\\-]|\\.(?:[^A-Za-z0-9_\\-]|$)|$)";
    p.check = Check::kJwt;
    p.front = "e";
    p.back = "A-Za-z0-9_\\-";
    p.opener = "(?:^|[^A-Za-z0-9_.\\-])eyJ";
    p.opener_fixed = 3;
    p.cap = kJwtCap;
    d.push_back({"jwt", false, {}, false, {p}});
  }
  d.push_back({"generic_secret", false, {}, false,
               {token("[^A-Za-z0-9+/=_\\-]", "[A-Za-z0-9+/=_\\-]{16,128}", "[^A-Za-z0-9+/=_\\-]", Check::kGeneric,
                      "A-Za-z0-9+/=_\\-", "A-Za-z0-9+/=_\\-")}});
  return d;
}

std::vector<BuiltinDef> make_rules() {
  std::vector<BuiltinDef> r;
  const std::string ws = "[ \\t\\r\\n]";
  r.push_back({"role_marker", true, InjectionAction::kReport, false,
               {plain("<\\|(?:im_start|im_end|im_sep|system|user|assistant|endoftext|eot_id|start_header_id|"
                      "end_header_id|begin_of_text)\\|>"),
                plain("\\[/?INST\\]"), plain("<</?SYS>>"),
                plain("(?m)^#{2,4} ?(?:System|Instructions?|Assistant|User|Human|Response) ?:"),
                plain("(?m)^(?:Human|Assistant):")}});
  r.push_back({"tool_call_json", true, InjectionAction::kReport, false,
               {plain("\"(?:tool_calls|function_call)\"" + ws + "{0,8}:"),
                plain("\\{" + ws + "{0,8}\"name\"" + ws + "{0,8}:" + ws + "{0,8}\"[^\"\\\\\\r\\n]{1,64}\"" + ws +
                      "{0,8}," + ws + "{0,8}\"(?:arguments|parameters)\"" + ws + "{0,8}:")}});
  r.push_back({"template_placeholder", true, InjectionAction::kReport, false,
               {plain("(?i)\\{\\{[ \\t]{0,4}(?:system|system_prompt|user|user_input|input|prompt|instructions?|"
                      "context|query|question|history|chat_history|messages?|tools?|assistant)[ \\t]{0,4}\\}\\}")}});
  {
    const std::string s = ws + "{1,4}";
    r.push_back(
        {"ignore_instructions", true, InjectionAction::kReport, false,
         {plain("(?i)\\b(?:ignore|disregard|forget|override|bypass)" + s + "(?:(?:all|any|the|your|of|everything)" + s +
                "){0,3}(?:previous|prior|above|earlier|preceding|former|system)" + s +
                "(?:instructions?|prompts?|directions?|rules|messages|guidelines|context)"),
          plain("(?i)\\byou" + s + "are" + s + "now" + s + "(?:in" + s + ")?(?:developer|dan|jailbreak|unrestricted|god)" +
                s + "mode"),
          plain("(?i)\\b(?:new|updated)" + s + "system" + s + "(?:prompt|instructions?)" + ws + "{0,4}:"),
          plain("(?i)\\b(?:reveal|print|repeat|show|output)" + s + "(?:me" + s + ")?(?:your|the)" + s +
                "(?:system" + s + "prompt|hidden" + s + "instructions|initial" + s + "instructions)")}});
  }
  r.push_back({"invisible_unicode", true, InjectionAction::kStrip, true,
               {plain("\\xE2\\x80[\\x8B-\\x8F\\xAA-\\xAE]|\\xE2\\x81[\\xA6-\\xA9]|\\xEF\\xBB\\xBF|\\xF3\\xA0[\\x80\\x81][\\x80-\\xBF]")}});
  r.push_back({"ansi_escape", true, InjectionAction::kStrip, true,
               {plain("\\x1B\\[[0-9;?<=>]{0,32}[ -/]{0,4}[@-~]"), plain("\\x1B\\][^\\x07\\x1B]{0,256}(?:\\x07|\\x1B\\\\)"),
                plain("\\x1B[0-9=>@-Z\\\\^_a-z]")}});
  {
    PatternDef p;
    p.regex = "(?:^|[^A-Za-z0-9+/])[A-Za-z0-9+/]{4097,}(?:[^A-Za-z0-9+/]|$)";
    p.front = "A-Za-z0-9+/";
    p.back = "A-Za-z0-9+/";
    p.opener = "(?:^|[^A-Za-z0-9+/])[A-Za-z0-9+/]{4097}";
    p.opener_fixed = 4097;
    p.cap = kBlobCap;
    p.truncate_on_expiry = true;
    r.push_back({"base64_blob", true, InjectionAction::kReport, false, {p}});
  }
  return r;
}

}  // namespace

const std::vector<BuiltinDef>& builtin_detectors() {
  static const std::vector<BuiltinDef> d = make_detectors();
  return d;
}

const std::vector<BuiltinDef>& builtin_rules() {
  static const std::vector<BuiltinDef> r = make_rules();
  return r;
}

}  // namespace ztee::detail::dlp
