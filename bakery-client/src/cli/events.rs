//! `bakery events [--since <id>] [--last <n>] [--follow]`: the server's event log, then (with
//! `--follow`) live events as they happen. Table output is one line per event; `-o json`
//! prints one JSON object per line.

use std::io::Write;

use super::args::{EventsArgs, Output};
use super::{CliError, api};
use crate::blocking::Client;
use crate::types::Event;

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
}
