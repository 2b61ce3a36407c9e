/* Processes that handle SIGSEGV themselves.
 * Usage: handlers reraise   - the handler resets SIGSEGV to SIG_DFL and raises it again
 *                             (what PyTorch workers, faulthandler and crash reporters do)
 *        handlers recover   - the handler siglongjmps out, three times, then exit(0)
 *                             (what JVMs and other runtimes with implicit null checks do)
 *        handlers storm N   - the same, N times: a flood of handled faults
 *        handlers exit2     - the handler exits with status 2 (what Go's runtime does after
 *                             a nil dereference, and crash reporters with _exit)
 *        handlers abort     - the handler calls abort() (stack-overflow handlers do) */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KEEP __attribute__((noinline, noclone))
#define BARRIER() __asm__ volatile("" ::: "memory")

static sigjmp_buf env;

KEEP void crash_segv(volatile int *p) { *p = 42; BARRIER(); }
KEEP void level2(volatile int *p) { crash_segv(p); BARRIER(); }
KEEP void level1(volatile int *p) { level2(p); BARRIER(); }

static void reraise(int sig) {
    signal(sig, SIG_DFL);
    raise(sig);
}

static void recover(int sig) {
    (void)sig;
    siglongjmp(env, 1);
}

static void exit2(int sig) {
    (void)sig;
    static const char msg[] = "panic: runtime error: invalid memory address\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(2);
}

static void call_abort(int sig) {
    (void)sig;
    abort();
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "reraise";
    if (strcmp(mode, "recover") == 0 || strcmp(mode, "storm") == 0) {
        long n = strcmp(mode, "storm") == 0 && argc > 2 ? atol(argv[2]) : 3;
        signal(SIGSEGV, recover);
        for (volatile long i = 0; i < n; i++)
            if (sigsetjmp(env, 1) == 0)
                level1(NULL);
        return 0;
    }
    signal(SIGSEGV, strcmp(mode, "exit2") == 0   ? exit2
                    : strcmp(mode, "abort") == 0 ? call_abort
                                                 : reraise);
    level1(NULL);
    return 0;
}
