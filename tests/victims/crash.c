/* Crashes three calls deep from main. Built with and without frame pointers.
 * Usage: crash [segv|abort|fpe|wait-segv]
 *   wait-*: print "ready", then crash when a byte arrives on stdin. */
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
    crash_fn f = strcmp(mode, "abort") == 0 ? crash_abort
               : strcmp(mode, "fpe") == 0   ? crash_fpe
                                            : crash_segv;
    level1(f);
    return 0;
}
