/* Hostile churn for `cargo xtask bench --soak`, run as an unprivileged user.
 * Usage: churn maps | files DIR N | forks | handled | crashes N
 *   maps     map and unmap executable anonymous memory, forever
 *   files    create N distinct files in DIR, then map each executable and unmap it, forever
 *   forks    fork children that exit at once (and some that exec /bin/true), forever
 *   handled  fault and siglongjmp out of the handler, forever
 *   crashes  N children that each die of SIGSEGV at once, then exit */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static sigjmp_buf env;
static void recover(int sig) { (void)sig; siglongjmp(env, 1); }

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "maps") == 0) {
        for (;;) {
            void *p = mmap(NULL, 4096 * (1 + rand() % 16), PROT_READ | PROT_EXEC,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p != MAP_FAILED) munmap(p, 4096);
        }
    }
    if (strcmp(mode, "files") == 0 && argc > 3) {
        int n = atoi(argv[3]);
        char path[4096];
        for (int i = 0; i < n; i++) {
            snprintf(path, sizeof path, "%s/f%05d", argv[2], i);
            int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
            char page[4096];
            memset(page, i & 0xff, sizeof page);
            if (fd >= 0) { (void)!write(fd, page, sizeof page); close(fd); }
        }
        for (;;) {
            for (int i = 0; i < n; i++) {
                snprintf(path, sizeof path, "%s/f%05d", argv[2], i);
                int fd = open(path, O_RDONLY);
                if (fd < 0) continue;
                void *p = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
                if (p != MAP_FAILED) munmap(p, 4096);
                close(fd);
                if (i % 100 == 0) usleep(1000);
            }
        }
    }
    if (strcmp(mode, "forks") == 0) {
        for (unsigned long i = 0;; i++) {
            pid_t c = fork();
            if (c == 0) {
                if (i % 8 == 0) execl("/bin/true", "true", (char *)NULL);
                _exit(0);
            }
            if (c > 0) waitpid(c, NULL, 0);
        }
    }
    if (strcmp(mode, "handled") == 0) {
        signal(SIGSEGV, recover);
        for (;;)
            if (sigsetjmp(env, 1) == 0) *(volatile int *)0 = 1;
    }
    if (strcmp(mode, "crashes") == 0 && argc > 2) {
        int n = atoi(argv[2]);
        for (int i = 0; i < n; i++)
            if (fork() == 0) *(volatile int *)0 = 1;
        while (wait(NULL) > 0) {}
        return 0;
    }
    fprintf(stderr, "usage: churn maps | files DIR N | forks | handled | crashes N\n");
    return 2;
}
