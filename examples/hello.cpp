// Runs Python code in a microVM that writes a file, reads the file back and
// prints it, through the C++ API (ztee.hpp, over the C ABI).
#include <ztee.hpp>

#include <cstdio>

int main() {
  auto rt = ztee::Runtime::create();
  if (!rt) return std::fprintf(stderr, "ztee: %s\n", rt.error().message.c_str()), 1;
  auto sb = rt->create_sandbox();  // boots a microVM; destroyed with sb
  if (!sb) return std::fprintf(stderr, "ztee: %s\n", sb.error().message.c_str()), 1;
  ztee::ExecOptions run;
  run.argv = {"python3", "-c", "open('/tmp/answer.txt', 'w').write(str(6 * 7))"};
  auto r = sb->exec(run);
  if (!r || r->exit_code != 0) return std::fprintf(stderr, "ztee: the Python code failed\n"), 1;
  auto data = sb->read_file("/tmp/answer.txt");
  if (!data) return std::fprintf(stderr, "ztee: %s\n", data.error().message.c_str()), 1;
  std::printf("%s\n", data->c_str());  // 42
  return sb->destroy() ? 0 : 1;        // removes the VM and everything it left
}
