// ztee call / policy / audit (tools/policy_cmds.cpp).
#pragma once

#include <string>
#include <vector>

namespace ztee::cli {

// Runs `ztee <cmd> args...` for cmd in call, policy, audit; -1 for any other cmd.
int dispatch(const std::string& cmd, const std::vector<std::string>& args);

}  // namespace ztee::cli
