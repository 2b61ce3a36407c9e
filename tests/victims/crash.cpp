// A C++ crash in a namespaced class method and a template, for demangling.
#include <cstdio>
#include <vector>

#define KEEP __attribute__((noinline, noclone))

namespace victim {
struct Widget {
    int *target = nullptr;
    KEEP void poke(int v);
};

void Widget::poke(int v) {
    *target = v;
    __asm__ volatile("" ::: "memory");
}

template <typename T> KEEP void visit_all(std::vector<T> &items) {
    for (auto &w : items)
        w.poke(1);
    __asm__ volatile("" ::: "memory");
}
} // namespace victim

int main() {
    std::vector<victim::Widget> items(1);
    victim::visit_all(items);
    return 0;
}
