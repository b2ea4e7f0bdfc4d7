//! `bakery events [--since <id>] [--last <n>] [--follow]`: the server's event log, then (with
//! `--follow`) live events as they happen. Table output is one line per event; `-o json`
//! prints one JSON object per line.

use std::io::Write;

use super::args::{EventsArgs, Output};
use super::{CliError, api};
use crate::blocking::Client;
use crate::types::{BootList, BootOutcome, Event};

/// `YYYY-MM-DD HH:MM:SS` (UTC) of Unix milliseconds.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One event as a line of text.
pub fn line(event: &Event) -> String {
    let mut out = format!("{:>6}  {}  {:<18}", event.id, utc(event.time), event.kind);
    for (key, value) in [
        ("pi", &event.pi),
        ("bakeform", &event.bakeform),
        ("disk", &event.disk),
    ] {
        if let Some(v) = value {
            out.push_str(&format!("  {key}={v}"));
        }
    }
    if let Some(message) = &event.message {
        out.push_str(&format!("  {message}"));
    }
    out.trim_end().to_owned()
}

fn print(format: Output, event: &Event) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    match format {
        Output::Json => {
            serde_json::to_writer(&mut stdout, event).map_err(std::io::Error::from)?;
            writeln!(stdout)?;
        }
        Output::Table => writeln!(stdout, "{}", line(event))?,
    }
    stdout.flush()?;
    Ok(())
}

/// Runs `bakery events`.
pub fn run(client: &Client, format: Output, args: &EventsArgs) -> Result<(), CliError> {
    let mut after = match args.since {
        Some(since) => since,
        None => {
            let head = api("events", client.events(0, Some(1)))?;
            (head.last_id - i64::from(args.last)).max(0)
        }
    };
    loop {
        let page = api("events", client.events(after, None))?;
        for event in &page.events {
            print(format, event)?;
            after = event.id;
        }
        if page.events.is_empty() || after >= page.last_id {
            break;
        }
    }
    if !args.follow {
        return Ok(());
    }
    let stream = api("event stream", client.follow_events(Some(after)))?;
    for event in stream {
        print(format, &api("event stream", event)?)?;
    }
    Ok(())
}

/// The table view of boot timelines (newest boot first): a summary line, then each request
/// with its time since the boot started.
pub fn boots_table(list: &BootList) -> String {
    if list.boots.is_empty() {
        return "no boots recorded\n".to_owned();
    }
    let mut out = String::new();
    for (i, boot) in list.boots.iter().enumerate() {
        let s = &boot.summary;
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "boot started {}: {} files, {} bytes, last file after {} ms, {} failed\n",
            utc(s.started),
            s.files,
            s.bytes,
            s.time_to_last_file_ms,
            s.failed
        ));
        let rows: Vec<Vec<String>> = boot
            .requests
            .iter()
            .map(|r| {
                let outcome = serde_json::to_value(r.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                vec![
                    format!("+{:.3}s", (r.time - s.started) as f64 / 1000.0),
                    r.via.clone(),
                    r.file.clone(),
                    if r.size_probed {
                        format!("{outcome} (size probed)")
                    } else {
                        outcome
                    },
                    if matches!(r.outcome, BootOutcome::Sent | BootOutcome::Unconfirmed) {
                        r.bytes.to_string()
                    } else {
                        "-".to_owned()
                    },
                ]
            })
            .collect();
        out.push_str(&super::table::render(
            &["AT", "VIA", "FILE", "OUTCOME", "BYTES"],
            &rows,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_764_133_199_999), "2025-11-26 04:59:59");
    }

    #[test]
    fn a_line_names_what_the_event_is_about() {
        let event = Event {
            id: 7,
            time: 0,
            kind: "bakeFailed".into(),
            pi: Some("1a2b3c4d".into()),
            bakeform: None,
            disk: None,
            message: Some("ppi failed".into()),
        };
        assert_eq!(
            line(&event),
            "     7  1970-01-01 00:00:00  bakeFailed          pi=1a2b3c4d  ppi failed"
        );
    }

    #[test]
    fn a_boot_table_lists_each_request_after_its_summary() {
        use crate::types::{Boot, BootRequest, BootSummary};
        let request = |time, file: &str, outcome, bytes| BootRequest {
            time,
            file: file.into(),
            bytes,
            outcome,
            via: "tftp".into(),
            elapsed_ms: 0,
            size_probed: file.ends_with(".elf"),
        };
        let list = BootList {
            boots: vec![Boot {
                summary: BootSummary {
                    started: 1000,
                    finished: 1250,
                    files: 1,
                    bytes: 4096,
                    failed: 0,
                    time_to_last_file_ms: 250,
                },
                requests: vec![
                    request(1100, "1a2b3c4d/start4.elf", BootOutcome::Sent, 4096),
                    request(1250, "1a2b3c4d/dt-blob.bin", BootOutcome::NotFound, 0),
                    request(1300, "1a2b3c4d/cmdline.txt", BootOutcome::Unconfirmed, 512),
                ],
            }],
        };
        let text = boots_table(&list);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "boot started 1970-01-01 00:00:01: 1 files, 4096 bytes, last file after 250 ms, 0 failed"
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["AT", "VIA", "FILE", "OUTCOME", "BYTES"]
        );
        assert!(
            lines[2].contains("+0.100s")
                && lines[2].contains("sent (size probed)")
                && lines[2].ends_with("4096"),
            "{text}"
        );
        assert!(
            lines[3].contains("notFound") && lines[3].ends_with('-'),
            "{text}"
        );
        assert!(
            lines[4].contains("unconfirmed") && lines[4].ends_with("512"),
            "{text}"
        );
        assert_eq!(boots_table(&BootList::default()), "no boots recorded\n");
    }
}
