/* Thread create/exit churn: N threads, each created and joined. Usage: threads N */
#include <pthread.h>
#include <stdlib.h>

static void *work(void *a) { return a; }

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10000;
    for (long i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, work, NULL) != 0)
            return 1;
        pthread_join(t, NULL);
    }
    return 0;
}
