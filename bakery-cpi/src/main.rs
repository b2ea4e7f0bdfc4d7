//! The `bakery-cpi` executable: reads one request on stdin, writes one response on stdout.

fn main() {}
