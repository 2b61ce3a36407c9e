/* A multi-threaded process with named threads, each waiting in a function of its own.
 * Usage: threads crash     - the "crasher" thread segfaults once all threads are ready
 *        threads wait      - print "ready" and wait to be killed from outside
 *        threads many N    - N more sleeping threads, then the crash */
#include <stdlib.h>
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define KEEP __attribute__((noinline, noclone))
#define BARRIER() __asm__ volatile("" ::: "memory")

static pthread_barrier_t ready;
/* Threads already inside their waiting function: the crash waits for all of them, so
 * every stack shows where its thread waits. */
static int waiting;

KEEP void wait_for_io(void) { __atomic_add_fetch(&waiting, 1, __ATOMIC_SEQ_CST); pause(); BARRIER(); }
KEEP void wait_for_gpu(void) { __atomic_add_fetch(&waiting, 1, __ATOMIC_SEQ_CST); pause(); BARRIER(); }
KEEP void wait_in_main(void) { __atomic_add_fetch(&waiting, 1, __ATOMIC_SEQ_CST); for (;;) pause(); }
KEEP void crash_in_worker(volatile int *p) { *p = 1; BARRIER(); }

static void *io_thread(void *a) {
    (void)a;
    pthread_setname_np(pthread_self(), "io-worker");
    pthread_barrier_wait(&ready);
    wait_for_io();
    return NULL;
}

static void *gpu_thread(void *a) {
    (void)a;
    pthread_setname_np(pthread_self(), "gpu-feeder");
    pthread_barrier_wait(&ready);
    wait_for_gpu();
    return NULL;
}

KEEP void sleep_in_pool(void) { __atomic_add_fetch(&waiting, 1, __ATOMIC_SEQ_CST); pause(); BARRIER(); }

static void *pool_thread(void *a) {
    char name[16];
    snprintf(name, sizeof name, "pool-%ld", (long)a);
    pthread_setname_np(pthread_self(), name);
    sleep_in_pool();
    return NULL;
}

static int extra;

static void *crasher_thread(void *a) {
    pthread_setname_np(pthread_self(), "crasher");
    pthread_barrier_wait(&ready);
    if (a) {
        while (__atomic_load_n(&waiting, __ATOMIC_SEQ_CST) < 3 + extra)
            sched_yield();
        crash_in_worker(NULL);
    }
    pause();
    return NULL;
}

int main(int argc, char **argv) {
    int many = argc > 2 && strcmp(argv[1], "many") == 0;
    int crash = many || (argc > 1 && strcmp(argv[1], "crash") == 0);
    pthread_t t[3];
    if (many) {
        extra = atoi(argv[2]);
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 64 << 10);
        for (long i = 0; i < extra; i++) {
            pthread_t p;
            if (pthread_create(&p, &attr, pool_thread, (void *)i) != 0)
                return 5;
        }
    }
    pthread_barrier_init(&ready, NULL, 4);
    pthread_create(&t[0], NULL, io_thread, NULL);
    pthread_create(&t[1], NULL, gpu_thread, NULL);
    pthread_create(&t[2], NULL, crasher_thread, crash ? (void *)1 : NULL);
    pthread_barrier_wait(&ready);
    if (!crash) {
        printf("ready\n");
        fflush(stdout);
    }
    wait_in_main();
}
