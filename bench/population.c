/* A crowded host: P processes of T threads each (the main thread and T-1 sleepers), all
 * idle. Prints "ready" once every thread exists, then holds them until stdin closes;
 * then every process ends. Usage: population P T */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

static void *sleeper(void *a) {
    for (;;)
        pause();
    return a;
}

int main(int argc, char **argv) {
    long procs = argc > 1 ? atol(argv[1]) : 1000;
    long threads = argc > 2 ? atol(argv[2]) : 10;
    int ready[2];
    if (pipe(ready) != 0)
        return 1;
    for (long p = 0; p < procs; p++) {
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "fork %ld: failed\n", p);
            return 1;
        }
        if (pid == 0) {
            /* Ends with the parent, whatever ends it. */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() == 1)
                _exit(0);
            close(ready[0]);
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setstacksize(&attr, 64 * 1024);
            for (long t = 1; t < threads; t++) {
                pthread_t th;
                if (pthread_create(&th, &attr, sleeper, NULL) != 0)
                    _exit(2);
            }
            char c = 1;
            if (write(ready[1], &c, 1) != 1)
                _exit(3);
            close(ready[1]);
            for (;;)
                pause();
        }
    }
    close(ready[1]);
    long n = 0;
    char buf[4096];
    ssize_t r;
    while (n < procs && (r = read(ready[0], buf, sizeof buf)) > 0)
        n += r;
    if (n < procs) {
        fprintf(stderr, "only %ld of %ld processes started\n", n, procs);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    while (read(0, buf, sizeof buf) > 0)
        ;
    /* The children get SIGKILL through PR_SET_PDEATHSIG. */
    return 0;
}
