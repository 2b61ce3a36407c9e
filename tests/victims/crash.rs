//! A Rust crash through a null pointer, two calls deep, for demangling.
use std::hint::black_box;

#[inline(never)]
fn write_through(p: *mut u32) {
    // SAFETY: not safe at all; this victim exists to crash.
    unsafe { std::ptr::write_volatile(black_box(p), 5) };
}

#[inline(never)]
fn crash_here(p: *mut u32) {
    write_through(black_box(p));
    black_box(());
}

fn main() {
    crash_here(std::ptr::null_mut());
    black_box(());
}
