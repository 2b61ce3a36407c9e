/* Deletes its own executable and the library it loads, then crashes in the library at
 * once: nothing of either file is left at a path, and the process lives well under a
 * millisecond after the mapping of the library. Usage: self_delete PATH_TO_LIBRARY */
#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h)
        return 2;
    void (*entry)(void) = (void (*)(void))dlsym(h, "dl_entry");
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (!entry || n <= 0)
        return 2;
    exe[n] = 0;
    if (unlink(argv[1]) != 0 || unlink(exe) != 0)
        return 3;
    entry();
    __asm__ volatile("" ::: "memory");
    return 0;
}
