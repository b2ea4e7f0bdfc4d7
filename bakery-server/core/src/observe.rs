//! The [`Observer`]: the one handle through which the service, the boot path and the HTTP
//! layer report what happens — events, boot timelines and metrics.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bakery_client::{BootOutcome, BootRequest, Event};
use bakery_tftp::{Outcome, TransferReport};
use tokio::sync::mpsc;

use crate::db::{BootRecordChange, EventSink, NewEvent, Store};
use crate::domain::names::is_serial;
use crate::events::{EventKind, EventLog};
use crate::metrics::{ActionLabel, KindLabel, Metrics, OutcomeLabel};
use crate::timeline::Timelines;

/// Boot-record changes written in one transaction at most.
const PERSIST_BATCH: usize = 4096;

/// Reports events, boot-path requests and metrics. Shared as `Arc<Observer>`.
pub struct Observer {
    events: EventLog,
    timelines: Timelines,
    metrics: Metrics,
    bakes_running: Mutex<HashMap<String, Instant>>,
    persist: Option<mpsc::UnboundedSender<Vec<BootRecordChange>>>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer").finish_non_exhaustive()
    }
}

/// Now as Unix milliseconds.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The boot outcome of a TFTP transfer (a `tsize` read ended by the client before any data
/// is a probe).
pub fn tftp_outcome(report: &TransferReport) -> BootOutcome {
    match report.outcome {
        Outcome::Sent => BootOutcome::Sent,
        Outcome::NotFound => BootOutcome::NotFound,
        Outcome::Refused => BootOutcome::Refused,
        Outcome::Aborted if report.bytes == 0 => BootOutcome::Probe,
        Outcome::Aborted => BootOutcome::Aborted,
        Outcome::GaveUp => BootOutcome::GaveUp,
        Outcome::Unconfirmed => BootOutcome::Unconfirmed,
        Outcome::Failed => BootOutcome::Failed,
    }
}

/// The Pi a boot path belongs to: its first component when that is a serial.
pub fn serial_of(path: &str) -> Option<&str> {
    let path = path.trim_start_matches('/');
    path.split_once('/')
        .map(|(first, _)| first)
        .filter(|first| is_serial(first))
}

impl Observer {
    /// An observer storing events and boot records in `store`, and its event sink (it hears
    /// of every committed event); the boot timelines are loaded from it. Boot records are
    /// written behind by a task on the current runtime.
    pub fn new(store: Arc<Store>) -> Arc<Observer> {
        let timelines = match store.boot_records() {
            Ok(rows) => Timelines::from_records(rows),
            Err(e) => {
                tracing::error!(error = %e, "cannot load boot timelines, starting empty");
                Timelines::new()
            }
        };
        let persist = match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let (tx, rx) = mpsc::unbounded_channel();
                handle.spawn(persist_boot_records(store.clone(), rx));
                Some(tx)
            }
            Err(_) => {
                tracing::warn!("no runtime: boot timelines are kept in memory only");
                None
            }
        };
        let observer = Arc::new(Observer {
            events: EventLog::new(store.clone()),
            timelines,
            metrics: Metrics::new(),
            bakes_running: Mutex::new(HashMap::new()),
            persist,
        });
        let sink: std::sync::Weak<Observer> = Arc::downgrade(&observer);
        store.set_event_sink(sink);
        observer
    }

    /// The event log.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// The boot timelines.
    pub fn timelines(&self) -> &Timelines {
        &self.timelines
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// `shutdown`, then ends the live event streams (so a graceful shutdown is not held up
    /// by followers such as an open status page).
    pub fn close_on<F>(&self, shutdown: F) -> impl std::future::Future<Output = ()> + Send + use<F>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let events = self.events.clone();
        async move {
            shutdown.await;
            events.close();
        }
    }

    /// Records an event that goes with no state change (a PPI call: power on/off); failures
    /// to store are logged, never returned. State changes write their events in their own
    /// transaction (the `Store` methods take them); [`Observer::committed`] follows either.
    pub async fn event(&self, event: NewEvent) {
        self.events.record(event).await;
    }

    /// The in-memory side of a committed event: counts it, times bakes, and tells live
    /// followers. The store calls it (as the [`EventSink`]) right after the commit, in id
    /// order.
    pub fn committed(&self, event: &Event) {
        let m = &self.metrics;
        m.events
            .get_or_create(&KindLabel {
                kind: event.kind.clone(),
            })
            .inc();
        let kind = event.kind.as_str();
        if let Some(pi) = event.pi.as_deref() {
            let mut running = self.bakes_running.lock().unwrap_or_else(|p| p.into_inner());
            if kind == EventKind::BakeStarted.as_str() || kind == EventKind::ResetStarted.as_str() {
                m.bakes.inc();
                running.insert(pi.to_owned(), Instant::now());
            } else if kind == EventKind::BakeFinished.as_str() {
                if let Some(started) = running.remove(pi) {
                    m.bake_duration.observe(started.elapsed().as_secs_f64());
                }
            } else if kind == EventKind::BakeFailed.as_str() {
                m.bake_failures.inc();
                running.remove(pi);
            }
        }
        self.events.publish(event);
    }

    /// Counts a PPI call.
    pub fn ppi_call(&self, action: &str, ok: bool) {
        let label = ActionLabel {
            action: action.to_owned(),
        };
        self.metrics.ppi_calls.get_or_create(&label).inc();
        if !ok {
            self.metrics.ppi_failures.get_or_create(&label).inc();
        }
    }

    /// A TFTP transfer ended (bakery-tftp's `FileProvider::finished`).
    pub fn tftp_finished(&self, report: &TransferReport) {
        let outcome = tftp_outcome(report);
        let m = &self.metrics;
        m.tftp_transfers
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str().to_owned(),
            })
            .inc();
        m.tftp_bytes.inc_by(report.bytes);
        m.tftp_retransmissions.inc_by(report.retransmissions);
        if matches!(report.outcome, Outcome::GaveUp | Outcome::Failed) {
            m.tftp_errors.inc();
        }
        self.boot_request(
            Some(report.peer.ip()),
            BootRequest {
                time: unix_ms(),
                file: report.filename.trim_start_matches('/').to_owned(),
                bytes: report.bytes,
                outcome,
                via: "tftp".to_owned(),
                elapsed_ms: duration_ms(report.elapsed),
                size_probed: false,
            },
        );
    }

    /// An HTTP `/files/...` boot-path request was answered.
    pub fn http_boot_file(
        &self,
        path: &str,
        peer: Option<IpAddr>,
        outcome: BootOutcome,
        bytes: u64,
        elapsed: Duration,
    ) {
        self.metrics
            .http_boot_files
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str().to_owned(),
            })
            .inc();
        self.boot_request(
            peer,
            BootRequest {
                time: unix_ms(),
                file: path.trim_start_matches('/').to_owned(),
                bytes,
                outcome,
                via: "http".to_owned(),
                elapsed_ms: duration_ms(elapsed),
                size_probed: false,
            },
        );
    }

    fn boot_request(&self, peer: Option<IpAddr>, request: BootRequest) {
        let Some(serial) = serial_of(&request.file).map(str::to_owned) else {
            if let Some(peer) = peer {
                self.timelines.record_unclaimed(peer, request);
            }
            return;
        };
        let mut changes = Vec::new();
        let recorded = self.timelines.record(&serial, peer, request, &mut changes);
        if let Some(ms) = recorded.kernel_after_ms {
            self.metrics.time_to_boot.observe(ms.max(0) as f64 / 1000.0);
        }
        if let Some(tx) = &self.persist {
            if !changes.is_empty() && tx.send(changes).is_err() {
                tracing::warn!(
                    serial,
                    "boot record writer stopped: timeline kept in memory only"
                );
            }
        }
    }
}

impl EventSink for Observer {
    fn committed(&self, event: &Event) {
        Observer::committed(self, event);
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Writes boot-record changes behind the timelines, batching what queued up meanwhile.
async fn persist_boot_records(
    store: Arc<Store>,
    mut rx: mpsc::UnboundedReceiver<Vec<BootRecordChange>>,
) {
    while let Some(mut batch) = rx.recv().await {
        while batch.len() < PERSIST_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        if let Err(e) = store.call(move |s| s.apply_boot_records(&batch)).await {
            tracing::error!(error = %e, "cannot store boot records");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_comes_from_the_first_component() {
        assert_eq!(serial_of("1a2b3c4d/start4.elf"), Some("1a2b3c4d"));
        assert_eq!(serial_of("/1a2b3c4d/overlays/x.dtbo"), Some("1a2b3c4d"));
        assert_eq!(serial_of("bootcode.bin"), None);
        assert_eq!(serial_of("overlays/x.dtbo"), None);
    }
}
