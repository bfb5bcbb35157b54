/* A guest program for ztee-bench-kernels: static, without a C library, it only
 * exits. Its exec is the kernel's part of an exec alone (execve of an ELF, a
 * new address space, exit), without the dynamic loader or libc's start-up. */
#if !defined(__x86_64__)
#error "ztee-bench-guest-exit is written for x86-64 guests"
#endif
void _start(void) { __asm__ volatile("mov $60, %eax\n\txor %edi, %edi\n\tsyscall"); }
