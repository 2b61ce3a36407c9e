//! A Rust release build (panic = "abort", no frame pointers) that panics three calls
//! below main.
use std::hint::black_box;

#[inline(never)]
fn parse_config(input: &str) -> u32 {
    let n: u32 = black_box(input).len() as u32;
    if n > 3 {
        panic!("config value too long: {n}");
    }
    n
}

#[inline(never)]
fn load_settings(input: &str) -> u32 {
    black_box(parse_config(input)) + 1
}

#[inline(never)]
fn start_service(input: &str) -> u32 {
    black_box(load_settings(input)) * 2
}

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "too long".into());
    println!("{}", start_service(&arg));
}
