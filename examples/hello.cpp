// Runs python3 in a microVM through the C++ API.
#include <ztee/ztee.hpp>

#include <cstdio>

int main() {
  auto rt = ztee::Runtime::create();
  if (!rt) return std::fprintf(stderr, "ztee: %s\n", rt.error().message.c_str()), 1;
  auto sb = rt->create_sandbox();
  if (!sb) return std::fprintf(stderr, "ztee: %s\n", sb.error().message.c_str()), 1;
  auto r = sb->run("python3 -c 'print(6*7)'");
  if (!r) return std::fprintf(stderr, "ztee: %s\n", r.error().message.c_str()), 1;
  std::fputs(r->stdout_data.c_str(), stdout);  // 42
  return sb->destroy() ? 0 : 1;
}
