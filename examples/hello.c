/* Runs python3 in a microVM through the C ABI. Build: cc hello.c -lztee */
#include <stdio.h>
#include <ztee.h>

int main(void) {
  ztee_runtime *rt = NULL;
  ztee_sandbox *sb = NULL;
  ztee_exec_result *res = NULL;
  ztee_exec_options opts = ZTEE_EXEC_OPTIONS_INIT;
  opts.shell = "python3 -c 'print(6*7)'";

  if (ztee_runtime_create(NULL, &rt) != ZTEE_OK || ztee_sandbox_create(rt, NULL, &sb) != ZTEE_OK ||
      ztee_sandbox_exec(sb, &opts, &res) != ZTEE_OK) {
    fprintf(stderr, "ztee: %s\n", ztee_last_error()->message);
    ztee_sandbox_free(sb);
    ztee_runtime_free(rt);
    return 1;
  }
  printf("%s", res->stdout_data); /* 42 */
  ztee_exec_result_free(res);
  ztee_sandbox_free(sb); /* destroys the VM */
  ztee_runtime_free(rt);
  return 0;
}
