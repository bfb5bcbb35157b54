/* A guest program for ztee-bench-kernels: an empty main, linked statically, so
 * its exec has libc's start-up but no dynamic loading. */
int main(void) { return 0; }
