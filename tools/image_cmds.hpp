// ztee image keygen|sign|verify|gate|push|pull (tools/image_cmds.cpp): the
// guest image's supply chain from the command line.
#pragma once

#include <string>
#include <vector>

namespace ztee::cli {

// Runs `ztee image <sub> args...` for sub in keygen, sign, verify, gate,
// push, pull; -1 for any other sub.
int image_dispatch(const std::string& sub, const std::vector<std::string>& args);

// `ztee image --help`: every image subcommand.
const char* image_usage();

}  // namespace ztee::cli
