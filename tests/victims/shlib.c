/* A shared library built -O2 -fomit-frame-pointer; the crash happens inside it. */
#define KEEP __attribute__((noinline, noclone))
#define BARRIER() __asm__ volatile("" ::: "memory")

KEEP void lib_crash(volatile int *p) { *p = 7; BARRIER(); }
KEEP void lib_inner(volatile int *p) { lib_crash(p); BARRIER(); }
KEEP void lib_entry(void) { lib_inner((volatile int *)0); BARRIER(); }

/* Entry point for the dlopen victim. */
KEEP void dl_crash(volatile int *p) { *p = 9; BARRIER(); }
KEEP void dl_entry(void) { dl_crash((volatile int *)16); BARRIER(); }
