/* Loads a library with dlopen right before crashing in it: its mapping exists only
 * for the last moments of the process. Usage: use_dlopen PATH_TO_LIBRARY [wait]
 *   wait: after dlopen, print "ready" and crash when a byte arrives on stdin. */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 2;
    }
    void (*entry)(void) = (void (*)(void))dlsym(h, "dl_entry");
    if (!entry)
        return 2;
    if (argc > 2 && strcmp(argv[2], "wait") == 0) {
        char c;
        printf("ready\n");
        fflush(stdout);
        if (read(0, &c, 1) != 1)
            return 3;
    }
    entry();
    __asm__ volatile("" ::: "memory");
    return 0;
}
