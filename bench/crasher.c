/* Crash victims for latency and storms.
 * Usage: crasher small          - segfault at once, three calls deep
 *        crasher large MIB N    - touch MIB MiB, start N sleeping threads, print
 *                                 "ready <CLOCK_MONOTONIC ns>" just before crashing */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KEEP __attribute__((noinline, noclone))
KEEP void crash(volatile int *p) { *p = 1; __asm__ volatile("" ::: "memory"); }
KEEP void level2(void) { crash(NULL); __asm__ volatile("" ::: "memory"); }
KEEP void level1(void) { level2(); __asm__ volatile("" ::: "memory"); }

static void *sleeper(void *a) { (void)a; pause(); return NULL; }

int main(int argc, char **argv) {
    if (argc > 3 && strcmp(argv[1], "large") == 0) {
        size_t mib = strtoul(argv[2], NULL, 10);
        int threads = atoi(argv[3]);
        volatile char *m = malloc(mib << 20);
        for (size_t i = 0; i < mib << 20; i += 4096)
            m[i] = 1;
        for (int i = 0; i < threads; i++) {
            pthread_t t;
            pthread_create(&t, NULL, sleeper, NULL);
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        printf("ready %lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
        fflush(stdout);
    }
    level1();
    return 0;
}
