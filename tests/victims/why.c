/* Deaths whose cause is in the process's memory, not its stack.
 * Usage: why assert       - a failed assert()
 *        why double-free  - glibc's malloc check aborts ("free(): double free ...")
 *        why watchdog     - a thread named like PyTorch's NCCL watchdog aborts while
 *                           the main thread and an autograd-named thread wait */
#define _GNU_SOURCE
#include <assert.h>
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
    if (strcmp(mode, "double-free") == 0) {
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
