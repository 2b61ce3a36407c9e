/* Processes that exit while they are dumped: forks children named "ct-ephemeral" that
 * live about 2 ms each, one after another, until stdin closes. */
#include <poll.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        struct pollfd p = {.fd = 0, .events = POLLIN};
        if (poll(&p, 1, 0) > 0)
            return 0;
        pid_t c = fork();
        if (c == 0) {
            prctl(PR_SET_NAME, "ct-ephemeral");
            struct timespec ts = {0, 2 * 1000 * 1000};
            nanosleep(&ts, NULL);
            _exit(0);
        }
        if (c > 0)
            waitpid(c, NULL, 0);
    }
}
