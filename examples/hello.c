/* Runs Python code in a microVM that writes a file, reads the file back and
 * prints it, through the C ABI. Build: cc hello.c -lztee (see README.md). */
#include <stdio.h>
#include <ztee.h>

int main(void) {
  static const char *const argv[] = {"python3", "-c", "open('/tmp/answer.txt', 'w').write(str(6 * 7))"};
  ztee_runtime *rt = NULL;
  ztee_sandbox *sb = NULL;
  ztee_exec_result *res = NULL;
  void *data = NULL;
  size_t len = 0;
  ztee_exec_options opts = ZTEE_EXEC_OPTIONS_INIT;
  opts.argv = argv;
  opts.argc = 3;

  if (ztee_runtime_create(NULL, &rt) != ZTEE_OK || ztee_sandbox_create(rt, NULL, &sb) != ZTEE_OK ||
      ztee_sandbox_exec(sb, &opts, &res) != ZTEE_OK ||
      ztee_sandbox_read_file(sb, "/tmp/answer.txt", 0, &data, &len) != ZTEE_OK) {
    fprintf(stderr, "ztee: %s\n", ztee_last_error()->message);
    ztee_exec_result_free(res);
    ztee_sandbox_free(sb);
    ztee_runtime_free(rt);
    return 1;
  }
  printf("%.*s\n", (int)len, (const char *)data); /* 42 */
  ztee_free(data);
  ztee_exec_result_free(res);
  ztee_sandbox_free(sb); /* destroys the VM */
  ztee_runtime_free(rt);
  return 0;
}
