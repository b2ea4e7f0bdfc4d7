//! What the demo shows: progress while it works (indicatif on a terminal, plain lines
//! otherwise), then the table or JSON summary of the simulated Pis.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// How the result is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DemoOutput {
    /// Progress and an aligned table on stdout.
    #[default]
    Table,
    /// Progress on stderr, one JSON summary on stdout.
    Json,
}

/// Where progress goes and how it looks.
#[derive(Debug, Clone, Copy)]
pub struct Show {
    to_stderr: bool,
    fancy: bool,
}

/// One step in progress (clones share the same bar).
#[derive(Debug, Clone)]
pub struct Step {
    show: Show,
    bar: Option<ProgressBar>,
}

impl Show {
    /// Progress on stdout for tables, on stderr for JSON; animated only on a terminal.
    pub fn new(output: DemoOutput) -> Show {
        let to_stderr = output == DemoOutput::Json;
        let fancy = match to_stderr {
            true => std::io::stderr().is_terminal(),
            false => std::io::stdout().is_terminal(),
        };
        Show { to_stderr, fancy }
    }

    /// A line of text (above any bar).
    pub fn line(&self, text: &str) {
        if self.to_stderr {
            eprintln!("{text}");
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }

    fn target(&self) -> ProgressDrawTarget {
        match self.to_stderr {
            true => ProgressDrawTarget::stderr(),
            false => ProgressDrawTarget::stdout(),
        }
    }

    /// Starts a step without a known length (a spinner).
    pub fn step(&self, text: &str) -> Step {
        if !self.fancy {
            self.line(&format!("==> {text}"));
            return Step {
                show: *self,
                bar: None,
            };
        }
        let bar = ProgressBar::with_draw_target(None, self.target());
        bar.set_style(
            ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(text.to_owned());
        bar.enable_steady_tick(Duration::from_millis(100));
        Step {
            show: *self,
            bar: Some(bar),
        }
    }

    /// Starts a step counting `len` things (Pis, bytes).
    pub fn counted(&self, text: &str, len: u64, bytes: bool) -> Step {
        if !self.fancy {
            self.line(&format!("==> {text}"));
            return Step {
                show: *self,
                bar: None,
            };
        }
        let bar = ProgressBar::with_draw_target(Some(len), self.target());
        let template = match bytes {
            true => {
                "{msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} {elapsed:.dim}"
            }
            false => "{msg} [{bar:30.cyan/blue}] {pos}/{len} {elapsed:.dim}",
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(text.to_owned());
        Step {
            show: *self,
            bar: Some(bar),
        }
    }
}

impl Step {
    /// Moves a counted step to `pos`.
    pub fn set(&self, pos: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(pos);
        }
    }

    /// One more thing done; `detail` is shown as its own line when not animated.
    pub fn tick(&self, detail: &str) {
        match &self.bar {
            Some(bar) => {
                bar.inc(1);
                bar.println(format!("    {detail}"));
            }
            None => self.show.line(&format!("    {detail}")),
        }
    }

    /// Ends the step with a final line.
    pub fn done(self, text: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        self.show.line(&format!("✔ {text}"));
    }

    /// Ends the step as failed.
    pub fn fail(self, text: &str) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
        self.show.line(&format!("✘ {text}"));
    }
}

/// One simulated Pi in the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PiRow {
    /// Its serial.
    pub serial: String,
    /// Its lifecycle state as the API reports it (`baked`, `fridge`, ...).
    pub state: String,
    /// The bakeform it was baked from.
    pub bakeform: Option<String>,
    /// The address bakery saw it at on the boot path.
    pub address: Option<String>,
    /// Whether it was baked.
    pub baked: bool,
    /// Whether its boot completed with every file verified.
    pub booted: bool,
    /// Boot time from the first TFTP request to the last byte, in milliseconds.
    pub boot_ms: Option<u64>,
    /// Files served to it (probes answered "not found" not counted).
    pub files: u64,
    /// Requests it sent (probes included).
    pub requests: u64,
    /// Bytes it received.
    pub bytes: u64,
    /// The `cmdline.txt` bakery rendered for it.
    pub cmdline: Option<String>,
    /// Why it failed to bake or boot.
    pub error: Option<String>,
}

/// The demo's JSON summary (`--output json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Base URL of the API (ending in `/api/v1`).
    pub api_url: String,
    /// Address of the built-in TFTP server.
    pub tftp: String,
    /// The data directory.
    pub data_dir: String,
    /// The simulated model.
    pub model: String,
    /// Every simulated Pi.
    pub pis: Vec<PiRow>,
    /// Whether every Pi was baked and booted.
    pub ok: bool,
}

/// The summary's Pis as an aligned text table.
pub fn table(rows: &[PiRow]) -> String {
    let header = [
        "SERIAL", "STATE", "BAKEFORM", "ADDRESS", "BOOT", "TIME", "FILES", "BYTES",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.serial.clone(),
                r.state.clone(),
                r.bakeform.clone().unwrap_or_else(|| "-".into()),
                r.address.clone().unwrap_or_else(|| "-".into()),
                match (r.baked, r.booted) {
                    (_, true) => "booted".into(),
                    (true, false) => "failed".into(),
                    (false, false) => "not baked".into(),
                },
                r.boot_ms
                    .map(|ms| format!("{ms} ms"))
                    .unwrap_or_else(|| "-".into()),
                format!("{}/{}", r.files, r.requests),
                HumanBytes(r.bytes).to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut push = |row: &[&str]| {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    };
    push(&header);
    for row in &cells {
        push(&row.each_ref().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(serial: &str, booted: bool) -> PiRow {
        PiRow {
            serial: serial.into(),
            state: "baked".into(),
            bakeform: Some("sample".into()),
            address: Some("127.0.0.1".into()),
            baked: true,
            booted,
            boot_ms: booted.then_some(42),
            files: 9,
            requests: 12,
            bytes: 1_300_000,
            cmdline: None,
            error: None,
        }
    }

    #[test]
    fn table_is_aligned_and_says_what_failed() {
        let text = table(&[row("dec00001", true), row("dec00002", false)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("SERIAL    STATE  BAKEFORM"), "{text}");
        assert!(
            lines[1].contains("booted") && lines[1].contains("42 ms"),
            "{text}"
        );
        assert!(
            lines[1].contains("9/12") && lines[1].contains("MiB"),
            "{text}"
        );
        assert!(lines[2].contains("failed"), "{text}");
        let col = lines[0].find("ADDRESS").unwrap();
        assert_eq!(&lines[1][col..col + 9], "127.0.0.1");
    }
}
