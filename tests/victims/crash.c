/* Crashes three calls deep from main. Built with and without frame pointers.
 * Usage: crash [segv|abort|fpe|ill|bus|overflow|vdso|jit|handler|work-segv|wait-segv]
 *   wait-*: print "ready", then crash when a byte arrives on stdin.
 *   work-*: first touch 64 MiB and burn about 0.3 s of CPU (for resource figures). */
#include <fcntl.h>
#include <sys/mman.h>
#include <time.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Keeps each call a real call (no inlining, no tail call). */
#define KEEP __attribute__((noinline, noclone))
#define BARRIER() __asm__ volatile("" ::: "memory")

volatile int zero = 0;

KEEP void crash_segv(int *p) { *p = 42; BARRIER(); }
KEEP void crash_abort(int *p) { (void)p; abort(); BARRIER(); }
/* Not 1/x: gcc turns that into a compare. */
KEEP void crash_fpe(int *p) { int r = 1000 / zero; *(volatile int *)&zero = r; (void)p; BARRIER(); }

/* ud2: SIGILL, ILL_ILLOPN. */
KEEP void crash_ill(int *p) { (void)p; __builtin_trap(); }

/* Touching a page of a mapped file beyond its end: SIGBUS, BUS_ADRERR. */
KEEP void crash_bus(int *p) {
    (void)p;
    char path[] = "/tmp/crashtrace-bus-XXXXXX";
    int fd = mkstemp(path);
    unlink(path);
    if (fd < 0 || ftruncate(fd, 4096) != 0)
        exit(4);
    volatile char *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    m[4096] = 1;
    BARRIER();
}

/* Unbounded recursion: the stack runs into its guard page. */
KEEP int recurse(volatile char *prev, int depth) {
    volatile char frame[256];
    frame[0] = prev ? prev[0] + 1 : 0;
    return recurse(frame, depth + 1) + frame[1];
}
KEEP void crash_overflow(int *p) { (void)p; recurse(NULL, 0); BARRIER(); }

/* The vDSO writes the time through a bad pointer: the fault is inside the vDSO. */
KEEP void crash_vdso(int *p) {
    (void)p;
    clock_gettime(CLOCK_MONOTONIC, (struct timespec *)16);
    BARRIER();
}

/* Generated code in anonymous executable memory, as a JIT makes: movl $1,0x0; ret. */
KEEP void crash_jit(int *p) {
    (void)p;
    static const unsigned char code[] = {0xc7, 0x04, 0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0xc3};
    void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        exit(4);
    memcpy(m, code, sizeof code);
    ((void (*)(void))m)();
    BARRIER();
}

/* A crash inside a signal handler, which interrupted crash_handler's raise(). */
KEEP void crash_in_handler(volatile int *p) { *p = 3; BARRIER(); }
static void on_usr1(int sig) { (void)sig; crash_in_handler(NULL); }
KEEP void crash_handler(int *p) {
    (void)p;
    signal(SIGUSR1, on_usr1);
    raise(SIGUSR1);
    BARRIER();
}

typedef void (*crash_fn)(int *);

KEEP void level3(crash_fn f) { f(NULL); BARRIER(); }
KEEP void level2(crash_fn f) { level3(f); BARRIER(); }
KEEP void level1(crash_fn f) { level2(f); BARRIER(); }

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "segv";
    if (strncmp(mode, "wait-", 5) == 0) {
        char c;
        mode += 5;
        printf("ready\n");
        fflush(stdout);
        if (read(0, &c, 1) != 1)
            return 3;
    }
    if (strncmp(mode, "work-", 5) == 0) {
        mode += 5;
        size_t n = 64 << 20;
        volatile char *mem = malloc(n);
        for (size_t i = 0; i < n; i += 4096)
            mem[i] = 1;
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        do
            clock_gettime(CLOCK_MONOTONIC, &t);
        while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < 300000000L);
    }
    crash_fn f = strcmp(mode, "abort") == 0      ? crash_abort
               : strcmp(mode, "fpe") == 0        ? crash_fpe
               : strcmp(mode, "ill") == 0        ? crash_ill
               : strcmp(mode, "bus") == 0        ? crash_bus
               : strcmp(mode, "overflow") == 0   ? crash_overflow
               : strcmp(mode, "vdso") == 0       ? crash_vdso
               : strcmp(mode, "jit") == 0        ? crash_jit
               : strcmp(mode, "handler") == 0    ? crash_handler
                                                 : crash_segv;
    level1(f);
    return 0;
}
