/* A fault two inlined calls deep: gdb shows inner, middle, outer, main. */
static volatile int *volatile target;
static volatile int sink;

static inline __attribute__((always_inline)) void inner(int v) {
    sink = v;
    *target = v + sink;
}

static inline __attribute__((always_inline)) void middle(int v) {
    sink = v;
    inner(v + 1);
}

__attribute__((noinline)) void outer(int v) {
    middle(v * 2);
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv) {
    (void)argv;
    outer(argc);
    return 0;
}
