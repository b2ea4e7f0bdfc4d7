//! The `bakery-server` executable.

fn main() {}
