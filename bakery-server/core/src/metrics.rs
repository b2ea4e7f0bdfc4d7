//! Prometheus metrics (`GET /metrics`, text exposition format): Pis by state, bakes and
//! failures, bake duration and time to boot, TFTP transfers, PPI calls, HTTP requests, and the
//! data dir's free space with the warm pool.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Labels: a Pi state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// `fridge`, `preparing`, `baked` or `unbaking`.
    pub state: String,
}

/// Labels: how a TFTP transfer ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// The boot outcome name (`sent`, `unconfirmed`, `notFound`, `probe`, ...).
    pub outcome: String,
}

/// Labels: a PPI action.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    /// `poweron`, `poweroff`, ...
    pub action: String,
}

/// Labels: an event kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The event kind.
    pub kind: String,
}

/// Labels: an HTTP request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The method.
    pub method: String,
    /// The matched route template (`/api/v1/oven/{pi_id}`), or `unmatched`.
    pub route: String,
    /// The response status code.
    pub status: String,
}

/// Labels: an HTTP route.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The method.
    pub method: String,
    /// The matched route template, or `unmatched`.
    pub route: String,
}

fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Every metric bakery exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Pis by state (set from the inventory at each scrape).
    pub pis: Family<StateLabel, Gauge>,
    /// Bakes started (including resets).
    pub bakes: Counter,
    /// Bakes that failed.
    pub bake_failures: Counter,
    /// Seconds from a bake's start to the Pi being baked.
    pub bake_duration: Histogram,
    /// Seconds from a boot's first request to its kernel being delivered.
    pub time_to_boot: Histogram,
    /// TFTP transfers by outcome.
    pub tftp_transfers: Family<OutcomeLabel, Counter>,
    /// TFTP payload bytes acknowledged.
    pub tftp_bytes: Counter,
    /// TFTP transfers that failed on the server's side or whose client vanished.
    pub tftp_errors: Counter,
    /// TFTP windows (or OACKs) sent again after a timeout.
    pub tftp_retransmissions: Counter,
    /// HTTP `/files` boot-path requests by outcome.
    pub http_boot_files: Family<OutcomeLabel, Counter>,
    /// PPI calls by action.
    pub ppi_calls: Family<ActionLabel, Counter>,
    /// PPI calls that failed, by action.
    pub ppi_failures: Family<ActionLabel, Counter>,
    /// Events recorded, by kind.
    pub events: Family<KindLabel, Counter>,
    /// HTTP requests by method, route and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// HTTP request durations by method and route.
    pub http_duration: Family<RouteLabels, Histogram>,
    /// Bytes free on the data dir's file system (set whenever bakery checks it).
    pub data_free_bytes: Gauge,
    /// Complete roots in the warm pool, all bakeforms together.
    pub pool_roots: Gauge,
    /// 1 while the warm pool does not fill for lack of free space, else 0.
    pub pool_short_of_space: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered.
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            pis: Family::default(),
            bakes: Counter::default(),
            bake_failures: Counter::default(),
            bake_duration: Histogram::new(exponential_buckets(0.25, 2.0, 12)),
            time_to_boot: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
            tftp_transfers: Family::default(),
            tftp_bytes: Counter::default(),
            tftp_errors: Counter::default(),
            tftp_retransmissions: Counter::default(),
            http_boot_files: Family::default(),
            ppi_calls: Family::default(),
            ppi_failures: Family::default(),
            events: Family::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(duration_buckets),
            data_free_bytes: Gauge::default(),
            pool_roots: Gauge::default(),
            pool_short_of_space: Gauge::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|p| p.into_inner());
            r.register("bakery_pis", "Pis by lifecycle state", m.pis.clone());
            r.register(
                "bakery_bakes",
                "Bakes (and resets) started",
                m.bakes.clone(),
            );
            r.register(
                "bakery_bake_failures",
                "Bakes that failed",
                m.bake_failures.clone(),
            );
            r.register(
                "bakery_bake_duration_seconds",
                "Time from a bake's start to the Pi being baked",
                m.bake_duration.clone(),
            );
            r.register(
                "bakery_time_to_boot_seconds",
                "Time from a boot's first boot-path request to its kernel being delivered",
                m.time_to_boot.clone(),
            );
            r.register(
                "bakery_tftp_transfers",
                "TFTP read requests by outcome (probe: size read then ended by the Pi; unconfirmed: sent, final ack lost)",
                m.tftp_transfers.clone(),
            );
            r.register(
                "bakery_tftp_bytes",
                "TFTP payload bytes acknowledged by clients",
                m.tftp_bytes.clone(),
            );
            r.register(
                "bakery_tftp_errors",
                "TFTP transfers that failed on the server or whose client vanished",
                m.tftp_errors.clone(),
            );
            r.register(
                "bakery_tftp_retransmissions",
                "TFTP windows (or option acknowledgements) sent again after a timeout",
                m.tftp_retransmissions.clone(),
            );
            r.register(
                "bakery_http_boot_files",
                "HTTP /files boot-path requests by outcome",
                m.http_boot_files.clone(),
            );
            r.register(
                "bakery_ppi_calls",
                "PPI calls by action",
                m.ppi_calls.clone(),
            );
            r.register(
                "bakery_ppi_failures",
                "PPI calls that failed, by action",
                m.ppi_failures.clone(),
            );
            r.register(
                "bakery_events",
                "Events recorded, by kind",
                m.events.clone(),
            );
            r.register(
                "bakery_http_requests",
                "HTTP requests by method, matched route and status",
                m.http_requests.clone(),
            );
            r.register(
                "bakery_http_request_duration_seconds",
                "HTTP request durations (to the response head) by method and matched route",
                m.http_duration.clone(),
            );
            r.register(
                "bakery_data_free_bytes",
                "Bytes free on the data dir's file system (as last checked)",
                m.data_free_bytes.clone(),
            );
            r.register(
                "bakery_pool_roots",
                "Complete roots in the warm pool, all bakeforms together",
                m.pool_roots.clone(),
            );
            r.register(
                "bakery_pool_short_of_space",
                "1 while the warm pool does not fill for lack of free space (--min-free-space)",
                m.pool_short_of_space.clone(),
            );
        }
        m
    }

    /// Sets the Pis-by-state gauge from counts (states absent from `counts` are set to 0).
    pub fn set_pis(&self, counts: &[(&str, i64)]) {
        for state in bakery_client::PiState::ALL.map(bakery_client::PiState::as_str) {
            let n = counts
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.pis
                .get_or_create(&StateLabel {
                    state: state.to_owned(),
                })
                .set(n);
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_family() {
        let m = Metrics::new();
        m.set_pis(&[("baked", 2)]);
        m.bakes.inc();
        m.tftp_transfers
            .get_or_create(&OutcomeLabel {
                outcome: "sent".into(),
            })
            .inc();
        let text = m.encode();
        assert!(text.contains("bakery_pis{state=\"baked\"} 2"), "{text}");
        assert!(text.contains("bakery_pis{state=\"fridge\"} 0"), "{text}");
        assert!(text.contains("bakery_bakes_total 1"), "{text}");
        assert!(
            text.contains("bakery_tftp_transfers_total{outcome=\"sent\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE bakery_bake_duration_seconds histogram"),
            "{text}"
        );
        m.data_free_bytes.set(1 << 40);
        let text = m.encode();
        assert!(
            text.contains("bakery_data_free_bytes 1099511627776"),
            "{text}"
        );
        assert!(text.contains("bakery_pool_short_of_space 0"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
