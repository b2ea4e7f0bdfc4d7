//! The CPI's log: every line goes to stderr and into the response's `log` field.

use std::fmt::Display;

/// Collects the log of one CPI call.
#[derive(Debug, Default)]
pub struct Log {
    text: String,
    echo: bool,
}

impl Log {
    /// A log that also writes every line to stderr when `echo` is true.
    pub fn new(echo: bool) -> Log {
        Log {
            text: String::new(),
            echo,
        }
    }

    /// Add one line.
    pub fn line(&mut self, message: impl Display) {
        let line = format!("bakery-cpi: {message}\n");
        if self.echo {
            eprint!("{line}");
        }
        self.text.push_str(&line);
    }

    /// Everything logged so far.
    pub fn text(&self) -> &str {
        &self.text
    }
}
