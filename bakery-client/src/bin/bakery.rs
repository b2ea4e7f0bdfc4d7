//! The `bakery` operator command line: parses the arguments and hands over to [`bakery_client::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    bakery_client::cli::main()
}
