/* Deaths whose cause is in the process's memory, not its stack.
 * Usage: why assert       - a failed assert()
 *        why double-free  - glibc's malloc check aborts ("free(): double free ...")
 *        why watchdog     - a thread named like PyTorch's NCCL watchdog aborts while
 *                           the main thread and an autograd-named thread wait
 *        why shm DIR      - fills a shared mapping of a sparse file in DIR (a small
 *                           tmpfs) until the tmpfs has no page left: SIGBUS */
#define _GNU_SOURCE
#include <assert.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KEEP __attribute__((noinline, noclone))
#define BARRIER() __asm__ volatile("" ::: "memory")

volatile int shape = 2;
static pthread_barrier_t ready;

KEEP void check_shape(void) { assert(shape == 3 && "tensor shape mismatch"); BARRIER(); }

KEEP void free_twice(void) {
    char *volatile p = malloc(64);
    free(p);
    free(p);
    BARRIER();
}

KEEP void watchdog_timeout(void) { abort(); }

/* What a DataLoader worker does with a tensor in /dev/shm. */
KEEP void fill_shared_tensor(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/torch_tensor", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    size_t n = 64 << 20;
    if (fd < 0 || ftruncate(fd, n) != 0)
        exit(4);
    volatile char *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
        exit(5);
    for (size_t i = 0; i < n; i += 4096)
        m[i] = 1;
    BARRIER();
}

static void *watchdog(void *a) {
    (void)a;
    pthread_setname_np(pthread_self(), "pt_nccl_watchdg");
    pthread_barrier_wait(&ready);
    usleep(100000);
    watchdog_timeout();
    return NULL;
}

static void *autograd(void *a) {
    (void)a;
    pthread_setname_np(pthread_self(), "pt_autograd_0");
    pthread_barrier_wait(&ready);
    for (;;)
        pause();
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "assert";
    if (strcmp(mode, "shm") == 0 && argc > 2) {
        fill_shared_tensor(argv[2]);
    } else if (strcmp(mode, "double-free") == 0) {
        free_twice();
    } else if (strcmp(mode, "watchdog") == 0) {
        pthread_t w, g;
        pthread_barrier_init(&ready, NULL, 3);
        pthread_create(&g, NULL, autograd, NULL);
        pthread_create(&w, NULL, watchdog, NULL);
        pthread_barrier_wait(&ready);
        for (;;)
            pause();
    } else {
        check_shape();
    }
    return 0;
}
