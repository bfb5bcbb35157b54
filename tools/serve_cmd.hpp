// ztee serve (tools/serve_cmd.cpp): the E2B-compatible sandbox server.
#pragma once

#include <string>
#include <vector>

namespace ztee::cli {

// Runs `ztee serve args...` (the server, or `ztee serve keygen ...`).
// Returns the process exit code.
int serve_main(const std::vector<std::string>& args);

}  // namespace ztee::cli
