//! The upload progress bar of `bakery bakeform upload`: shown only when stderr is a terminal.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{Progress, ProgressFn};

/// A progress bar with throughput on stderr.
pub struct UploadBar {
    bar: ProgressBar,
    started: Instant,
}

impl UploadBar {
    /// A bar for uploading bakeform `name`, or `None` when stderr is not a terminal.
    pub fn for_stderr(name: &str) -> Option<UploadBar> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{msg} [{bar:32}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .map(|style| style.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(format!("uploading {name}"));
        Some(UploadBar {
            bar,
            started: Instant::now(),
        })
    }

    /// The callback the client reports progress to.
    pub fn callback(&self) -> ProgressFn {
        let bar = self.bar.clone();
        Box::new(move |progress: Progress| {
            bar.set_length(progress.total);
            bar.set_position(progress.sent);
        })
    }

    /// Clears the bar and, on success, prints the size and throughput.
    pub fn finish(self, ok: bool) {
        let sent = self.bar.position();
        self.bar.finish_and_clear();
        if ok {
            let seconds = self.started.elapsed().as_secs_f64().max(0.001);
            eprintln!(
                "uploaded {} in {:.1} s ({}/s)",
                HumanBytes(sent),
                seconds,
                HumanBytes((sent as f64 / seconds) as u64)
            );
        }
    }
}
