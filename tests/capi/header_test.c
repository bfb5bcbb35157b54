/* capi/ztee.h on its own, compiled strictly as C99 and C11 (and, through
 * header_test.cpp, as C++17 and C++20): it must need nothing but standard
 * headers, and its macros must expand cleanly. Built, not run. */
#include "ztee.h"

int ztee_header_test(void);
int ztee_header_test(void) {
  ztee_runtime_options ro = ZTEE_RUNTIME_OPTIONS_INIT;
  ztee_sandbox_options so = ZTEE_SANDBOX_OPTIONS_INIT;
  ztee_exec_options eo = ZTEE_EXEC_OPTIONS_INIT;
  ztee_pool_options po = ZTEE_POOL_OPTIONS_INIT;
  ztee_pool_stats ps = ZTEE_POOL_STATS_INIT;
  ztee_tool_call tc = ZTEE_TOOL_CALL_INIT;
  ztee_audit_options ao = ZTEE_AUDIT_OPTIONS_INIT;
  ztee_gate_options go = ZTEE_GATE_OPTIONS_INIT;
  return (int)(ro.struct_size + so.struct_size + eo.struct_size + po.struct_size + ps.struct_size +
               tc.struct_size + ao.struct_size + go.struct_size) +
         ZTEE_OK + ZTEE_ACTION_DENY + ZTEE_DURABILITY_NONE + ztee_has_feature("qemu");
}
