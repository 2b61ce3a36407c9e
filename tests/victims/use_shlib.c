/* Calls into libvictim.so, linked at build time. */
void lib_entry(void);
int main(void) { lib_entry(); __asm__ volatile("" ::: "memory"); return 0; }
