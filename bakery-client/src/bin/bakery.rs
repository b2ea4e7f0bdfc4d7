//! The `bakery` operator command line (placeholder until the CLI lands).

fn main() {}
