/* Handled, non-fatal signals: N raise(SIGUSR1) into a handler. Usage: signals N */
#include <signal.h>
#include <stdlib.h>

static volatile long seen;
static void on_usr1(int sig) { (void)sig; seen++; }

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000;
    signal(SIGUSR1, on_usr1);
    for (long i = 0; i < n; i++)
        raise(SIGUSR1);
    return seen == n ? 0 : 1;
}
