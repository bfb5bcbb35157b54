// The same check as header_test.c, compiled as C++ (17 and 20).
#include "header_test.c"
