/* A multi-threaded process with named threads, each waiting in a function of its own.
 * Usage: threads crash  - the "crasher" thread segfaults once all threads are ready
 *        threads wait   - print "ready" and wait to be killed from outside */
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

static void *crasher_thread(void *a) {
    pthread_setname_np(pthread_self(), "crasher");
    pthread_barrier_wait(&ready);
    if (a) {
        while (__atomic_load_n(&waiting, __ATOMIC_SEQ_CST) < 3)
            sched_yield();
        crash_in_worker(NULL);
    }
    pause();
    return NULL;
}

int main(int argc, char **argv) {
    int crash = argc > 1 && strcmp(argv[1], "crash") == 0;
    pthread_t t[3];
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
