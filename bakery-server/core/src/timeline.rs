//! Boot timelines: every boot-path request of a Pi (TFTP or HTTP `/files`), grouped into
//! boots, the last [`BOOTS_KEPT`] boots per Pi kept in memory and written behind to the
//! database.
//!
//! Grouping: a request for a first file of a boot (`start*.elf`, `bootcode.bin`, and
//! `<serial>/config.txt`, a Pi 5's first file) more than [`BOOT_GAP_MS`] after the Pi's
//! previous request starts a new boot, and so does a first-stage file (`start*.elf`,
//! `bootcode.bin`) the current boot already asked for (the Pi started over), any request more
//! than [`AFTER_KERNEL_GAP_MS`] after the previous one once the boot delivered its kernel (the
//! boot is over: a later request is an operator's curl or a new boot, and must not stretch the
//! finished one), and any request after [`IDLE_GAP_MS`] of silence. A gap is silence: from the
//! previous request's end to the start of this one's transfer. Root-level requests (a Pi 3 asks for `bootcode.bin`
//! before it names its serial) are held per address and join the boot of the next serial
//! request from that address. A size probe (the firmware reads `tsize` and ends the
//! transfer) followed by the real fetch of the same file is folded into that fetch.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

use bakery_client::{Boot, BootList, BootOutcome, BootRequest, BootSummary};

use crate::db::{BootRecordChange, BootRecordRow};

/// Boots kept per Pi.
pub const BOOTS_KEPT: usize = 10;
/// Requests kept per boot (a looping Pi cannot grow a boot without bound).
pub const REQUESTS_KEPT: usize = 256;
/// Silence before a first-stage file starts a new boot.
pub const BOOT_GAP_MS: i64 = 30_000;
/// Silence after which any request starts a new boot once the current boot delivered its
/// kernel (a Pi asks for its files back to back; nothing of that boot comes this late).
pub const AFTER_KERNEL_GAP_MS: i64 = 2_000;
/// Silence after which any request starts a new boot.
pub const IDLE_GAP_MS: i64 = 300_000;
/// How long a root-level request waits for a serial request from the same address.
pub const PENDING_MS: i64 = 60_000;
/// Addresses with root-level requests held at once.
const PENDING_ADDRESSES: usize = 4096;
/// Root-level requests held per address.
const PENDING_PER_ADDRESS: usize = 16;
/// Pis with a timeline: requests naming further serials are not recorded (anything on the
/// boot network can ask for any serial's directory).
pub const PIS_KEPT: usize = 4096;

/// Whether `file` (a path as the Pi asked for it) is a first-stage boot file.
pub fn is_first_stage(file: &str) -> bool {
    let base = file.rsplit('/').next().unwrap_or(file);
    base == "bootcode.bin" || (base.starts_with("start") && base.ends_with(".elf"))
}

/// Whether `file` can be the first request of a boot: a first-stage file, or the Pi 5's
/// first file, `config.txt` directly under its serial (the Pi 5 EEPROM has no `start4.elf`
/// to fetch). Pi 3s and 4s ask for `config.txt` several times within a boot, so it starts a
/// boot only after a gap, never as "asked for again".
pub fn starts_boot(file: &str) -> bool {
    is_first_stage(file)
        || file
            .split_once('/')
            .is_some_and(|(_, rest)| rest == "config.txt")
}

/// Whether `file` is a kernel image (its delivery marks "booted" for the time-to-boot metric).
pub fn is_kernel(file: &str) -> bool {
    let base = file.rsplit('/').next().unwrap_or(file);
    base.starts_with("kernel") && base.ends_with(".img")
}

/// Whether a request most likely delivered its file: sent, or sent with its final
/// acknowledgement lost (the Pi has the file; TFTP cannot confirm it).
pub fn delivered(outcome: BootOutcome) -> bool {
    matches!(outcome, BootOutcome::Sent | BootOutcome::Unconfirmed)
}

/// The summary of a boot's requests; the boot started at `opened` at the latest (a probe
/// folded into a later fetch leaves no request of its own at the start).
pub fn summarize(opened: i64, requests: &[BootRequest]) -> BootSummary {
    let started = requests
        .iter()
        .map(|r| r.time - i64::try_from(r.elapsed_ms).unwrap_or(0))
        .min()
        .map_or(opened, |first| first.min(opened));
    let finished = requests.iter().map(|r| r.time).max().unwrap_or(started);
    let sent: Vec<&BootRequest> = requests.iter().filter(|r| delivered(r.outcome)).collect();
    let last_sent = sent.iter().map(|r| r.time).max();
    BootSummary {
        started,
        finished,
        files: u32::try_from(sent.len()).unwrap_or(u32::MAX),
        bytes: sent.iter().map(|r| r.bytes).sum(),
        failed: u32::try_from(
            requests
                .iter()
                .filter(|r| {
                    matches!(
                        r.outcome,
                        BootOutcome::Refused
                            | BootOutcome::Aborted
                            | BootOutcome::GaveUp
                            | BootOutcome::Failed
                    )
                })
                .count(),
        )
        .unwrap_or(u32::MAX),
        time_to_last_file_ms: last_sent.map_or(0, |t| t - started),
    }
}

/// One boot being kept: its key (start time when opened) and its requests.
#[derive(Debug, Clone)]
struct OpenBoot {
    key: i64,
    requests: Vec<BootRequest>,
}

#[derive(Debug, Default)]
struct Inner {
    pis: HashMap<String, VecDeque<OpenBoot>>,
    pending: HashMap<IpAddr, Vec<BootRequest>>,
}

/// What recording one request did, for metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recorded {
    /// The request started a new boot.
    pub new_boot: bool,
    /// Milliseconds from the boot's start, when this request delivered a kernel.
    pub kernel_after_ms: Option<i64>,
}

/// The boot timelines of every Pi.
#[derive(Debug, Default)]
pub struct Timelines {
    inner: Mutex<Inner>,
}

impl Timelines {
    /// Empty timelines.
    pub fn new() -> Timelines {
        Timelines::default()
    }

    /// Timelines from stored records (as [`crate::db::Store::boot_records`] lists them).
    pub fn from_records(rows: Vec<BootRecordRow>) -> Timelines {
        let mut inner = Inner::default();
        for row in rows {
            let boots = inner.pis.entry(row.pi).or_default();
            match boots.back_mut() {
                Some(b) if b.key == row.boot => b.requests.push(row.request),
                _ => boots.push_back(OpenBoot {
                    key: row.boot,
                    requests: vec![row.request],
                }),
            }
            while boots.len() > BOOTS_KEPT {
                boots.pop_front();
            }
        }
        Timelines {
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a root-level request (no serial in the path) from `peer`: held until a serial
    /// request from that address claims it.
    pub fn record_unclaimed(&self, peer: IpAddr, request: BootRequest) {
        let mut inner = self.lock();
        let now = request.time;
        if inner.pending.len() >= PENDING_ADDRESSES && !inner.pending.contains_key(&peer) {
            inner
                .pending
                .retain(|_, held| held.last().is_some_and(|r| now - r.time < PENDING_MS));
            if inner.pending.len() >= PENDING_ADDRESSES {
                return;
            }
        }
        let held = inner.pending.entry(peer).or_default();
        held.retain(|r| now - r.time < PENDING_MS);
        if held.len() < PENDING_PER_ADDRESS {
            held.push(request);
        }
    }

    /// Records a request of Pi `serial`; the changes to write behind go to `changes`.
    pub fn record(
        &self,
        serial: &str,
        peer: Option<IpAddr>,
        mut request: BootRequest,
        changes: &mut Vec<BootRecordChange>,
    ) -> Recorded {
        let mut inner = self.lock();
        let now = request.time;
        let claimed: Vec<BootRequest> = peer
            .and_then(|p| inner.pending.remove(&p))
            .unwrap_or_default()
            .into_iter()
            .filter(|r| now - r.time < PENDING_MS)
            .collect();
        if inner.pis.len() >= PIS_KEPT && !inner.pis.contains_key(serial) {
            return Recorded::default();
        }
        let boots = inner.pis.entry(serial.to_owned()).or_default();
        let last_time = boots.back().and_then(|b| b.requests.last()).map(|r| r.time);
        // Silence: from the previous request's end to this one's start (a large file right
        // after the kernel, an initramfs, ends long after the kernel did).
        let began = now - i64::try_from(request.elapsed_ms).unwrap_or(0);
        let gap = last_time.map(|t| (began - t).max(0));
        // A first-stage file asked for again (not the fetch after its size probe) means the
        // Pi started over, however soon.
        let again = is_first_stage(&request.file)
            && boots.back().is_some_and(|b| {
                b.requests
                    .iter()
                    .any(|r| r.file == request.file && r.outcome != BootOutcome::Probe)
            });
        let kernel_delivered = boots.back().is_some_and(|b| {
            b.requests
                .iter()
                .any(|r| is_kernel(&r.file) && delivered(r.outcome))
        });
        let new_boot = match gap {
            None => true,
            Some(gap) => {
                gap > IDLE_GAP_MS
                    || (kernel_delivered && gap > AFTER_KERNEL_GAP_MS)
                    || (gap > BOOT_GAP_MS && starts_boot(&request.file))
                    || again
                    || !claimed.is_empty()
            }
        };
        let mut recorded = Recorded {
            new_boot,
            kernel_after_ms: None,
        };
        if new_boot {
            let key = claimed
                .first()
                .map_or(now, |r| r.time)
                .max(last_time.map_or(i64::MIN, |t| t + 1));
            boots.push_back(OpenBoot {
                key,
                requests: Vec::new(),
            });
            while boots.len() > BOOTS_KEPT {
                boots.pop_front();
            }
            if let Some(oldest) = boots.front() {
                changes.push(BootRecordChange::PruneBefore {
                    pi: serial.to_owned(),
                    boot: oldest.key,
                });
            }
        }
        let Some(boot) = boots.back_mut() else {
            return recorded;
        };
        let put = |boot: &mut OpenBoot, seq: usize, changes: &mut Vec<BootRecordChange>| {
            changes.push(BootRecordChange::Put(BootRecordRow {
                pi: serial.to_owned(),
                boot: boot.key,
                seq: i64::try_from(seq).unwrap_or(i64::MAX),
                request: boot.requests[seq].clone(),
            }));
        };
        for held in claimed {
            if boot.requests.len() < REQUESTS_KEPT {
                boot.requests.push(held);
                put(boot, boot.requests.len() - 1, changes);
            }
        }
        let folds = request.outcome != BootOutcome::Probe
            && boot
                .requests
                .last()
                .is_some_and(|r| r.outcome == BootOutcome::Probe && r.file == request.file);
        if folds {
            request.size_probed = true;
            let seq = boot.requests.len() - 1;
            boot.requests[seq] = request;
            put(boot, seq, changes);
        } else if boot.requests.len() < REQUESTS_KEPT {
            boot.requests.push(request);
            put(boot, boot.requests.len() - 1, changes);
        } else {
            return recorded;
        }
        if let Some(last) = boot.requests.last() {
            if delivered(last.outcome) && is_kernel(&last.file) {
                recorded.kernel_after_ms =
                    Some(last.time - summarize(boot.key, &boot.requests).started);
            }
        }
        recorded
    }

    /// The Pi's boots, newest first.
    pub fn boots(&self, serial: &str) -> BootList {
        let inner = self.lock();
        let boots = inner
            .pis
            .get(serial)
            .map(|boots| {
                boots
                    .iter()
                    .rev()
                    .map(|b| Boot {
                        summary: summarize(b.key, &b.requests),
                        requests: b.requests.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        BootList { boots }
    }

    /// The summary of the Pi's latest boot, if it booted.
    pub fn summary(&self, serial: &str) -> Option<BootSummary> {
        let inner = self.lock();
        inner
            .pis
            .get(serial)
            .and_then(|boots| boots.back())
            .filter(|b| !b.requests.is_empty())
            .map(|b| summarize(b.key, &b.requests))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(time: i64, file: &str, outcome: BootOutcome, bytes: u64) -> BootRequest {
        BootRequest {
            time,
            file: file.into(),
            bytes,
            outcome,
            via: "tftp".into(),
            elapsed_ms: 0,
            size_probed: false,
        }
    }

    const PI: &str = "1a2b3c4d";

    fn record(t: &Timelines, r: BootRequest) -> Recorded {
        t.record(PI, None, r, &mut Vec::new())
    }

    #[test]
    fn probes_fold_into_the_fetch_that_follows() {
        let t = Timelines::new();
        record(&t, req(1000, "1a2b3c4d/start4.elf", BootOutcome::Probe, 0));
        record(
            &t,
            req(1100, "1a2b3c4d/start4.elf", BootOutcome::Sent, 4096),
        );
        record(&t, req(1200, "1a2b3c4d/dt-blob.bin", BootOutcome::Probe, 0));
        record(&t, req(1300, "1a2b3c4d/config.txt", BootOutcome::Sent, 10));
        let boots = t.boots(PI).boots;
        assert_eq!(boots.len(), 1);
        let r = &boots[0].requests;
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(r[0].size_probed);
        assert_eq!(r[0].outcome, BootOutcome::Sent);
        assert_eq!(
            r[1].outcome,
            BootOutcome::Probe,
            "a probe without a fetch stays"
        );
        let s = &boots[0].summary;
        assert_eq!((s.files, s.bytes, s.failed), (2, 4106, 0));
        assert_eq!(
            (s.started, s.finished, s.time_to_last_file_ms),
            (1000, 1300, 300)
        );
    }

    #[test]
    fn a_first_stage_file_after_a_gap_starts_a_new_boot_and_only_ten_are_kept() {
        let t = Timelines::new();
        let mut time = 0;
        for boot in 0..12 {
            assert!(record(&t, req(time, "1a2b3c4d/start4.elf", BootOutcome::Sent, 1)).new_boot);
            let later = record(
                &t,
                req(time + 10, "1a2b3c4d/kernel8.img", BootOutcome::Sent, 1),
            );
            assert!(!later.new_boot, "boot {boot}");
            assert_eq!(later.kernel_after_ms, Some(10));
            // Within the gap another first-stage file does not start another boot.
            assert!(
                !record(
                    &t,
                    req(time + 20, "1a2b3c4d/start.elf", BootOutcome::Sent, 1)
                )
                .new_boot
            );
            time += BOOT_GAP_MS + 1000;
        }
        let boots = t.boots(PI).boots;
        assert_eq!(boots.len(), BOOTS_KEPT);
        assert!(
            boots[0].summary.started > boots[1].summary.started,
            "newest first"
        );
        // The same first-stage file asked for again starts a boot at once (a power cycle).
        assert!(record(&t, req(time, "1a2b3c4d/start4.elf", BootOutcome::Probe, 0)).new_boot);
        assert!(
            !record(
                &t,
                req(time + 1, "1a2b3c4d/start4.elf", BootOutcome::Sent, 1)
            )
            .new_boot
        );
        assert!(
            record(
                &t,
                req(time + 2, "1a2b3c4d/start4.elf", BootOutcome::NotFound, 0)
            )
            .new_boot
        );
        // Any request after a long silence starts a boot too.
        assert!(
            record(
                &t,
                req(
                    time + 3 + IDLE_GAP_MS,
                    "1a2b3c4d/config.txt",
                    BootOutcome::Sent,
                    1
                )
            )
            .new_boot
        );
    }

    #[test]
    fn a_request_long_after_a_finished_boot_does_not_stretch_it() {
        let t = Timelines::new();
        let at =
            |time, file: &str| record(&t, req(time, &format!("{PI}/{file}"), BootOutcome::Sent, 1));
        assert!(at(0, "start4.elf").new_boot);
        assert!(!at(5, "config.txt").new_boot);
        // Before the kernel, a pause does not end the boot.
        assert!(!at(5 + AFTER_KERNEL_GAP_MS + 500, "cmdline.txt").new_boot);
        assert!(!at(2_600, "kernel8.img").new_boot);
        // Right after the kernel (an initramfs) it is the same boot.
        assert!(!at(2_620, "initramfs8").new_boot);
        // An operator's poke 5 s later is a boot of its own; the boot before stays 2.62 s.
        assert!(at(7_620, "cmdline.txt").new_boot);
        let boots = t.boots(PI).boots;
        assert_eq!(boots.len(), 2);
        assert_eq!(boots[1].summary.finished - boots[1].summary.started, 2_620);
        assert_eq!(boots[0].requests.len(), 1);
    }

    #[test]
    fn a_large_file_right_after_the_kernel_is_the_same_boot() {
        let t = Timelines::new();
        let at = |time, elapsed_ms, file: &str| {
            let mut r = req(time, &format!("{PI}/{file}"), BootOutcome::Sent, 1);
            r.elapsed_ms = elapsed_ms;
            record(&t, r)
        };
        assert!(at(0, 0, "start4.elf").new_boot);
        assert!(!at(4_000, 3_900, "kernel8.img").new_boot);
        // The initramfs's transfer starts at once and ends 3 s after the kernel's.
        assert!(!at(7_000, 2_990, "initramfs8").new_boot);
        // Silence after it ends the boot as before.
        let late = AFTER_KERNEL_GAP_MS + 7_100;
        assert!(at(late, 10, "cmdline.txt").new_boot);
        let boots = t.boots(PI).boots;
        assert_eq!(boots.len(), 2);
        assert_eq!(boots[1].requests.len(), 3);
    }

    #[test]
    fn a_pi5_boot_starts_at_its_config_txt() {
        let t = Timelines::new();
        let pi5 =
            |time, file: &str| record(&t, req(time, &format!("{PI}/{file}"), BootOutcome::Sent, 1));
        assert!(pi5(0, "config.txt").new_boot);
        assert!(!pi5(10, "bcm2712-rpi-5-b.dtb").new_boot);
        assert_eq!(pi5(20, "kernel_2712.img").kernel_after_ms, Some(20));
        // config.txt again within the boot (as Pi 3s and 4s do) is the same boot.
        assert!(!pi5(30, "config.txt").new_boot);
        // After a power cycle (more than BOOT_GAP_MS of silence) config.txt starts a boot,
        // where before only start*.elf and bootcode.bin did.
        assert!(pi5(30 + BOOT_GAP_MS + 1, "config.txt").new_boot);
        assert!(!pi5(30 + BOOT_GAP_MS + 2 + BOOT_GAP_MS, "cmdline.txt").new_boot);
        assert_eq!(t.boots(PI).boots.len(), 2);
        assert!(starts_boot("1a2b3c4d/config.txt"));
        assert!(!starts_boot("1a2b3c4d/overlays/config.txt"));
        assert!(!starts_boot("config.txt"));
    }

    #[test]
    fn root_level_requests_join_the_next_boot_from_their_address() {
        let t = Timelines::new();
        let peer: IpAddr = "10.0.0.21".parse().unwrap();
        let other: IpAddr = "10.0.0.22".parse().unwrap();
        t.record_unclaimed(peer, req(100, "bootcode.bin", BootOutcome::Sent, 52000));
        t.record_unclaimed(peer, req(110, "bootsig.bin", BootOutcome::NotFound, 0));
        t.record_unclaimed(other, req(120, "bootcode.bin", BootOutcome::Sent, 52000));
        let mut changes = Vec::new();
        t.record(
            PI,
            Some(peer),
            req(200, "1a2b3c4d/start.elf", BootOutcome::Sent, 9),
            &mut changes,
        );
        let boots = t.boots(PI).boots;
        let files: Vec<&str> = boots[0].requests.iter().map(|r| r.file.as_str()).collect();
        assert_eq!(files, ["bootcode.bin", "bootsig.bin", "1a2b3c4d/start.elf"]);
        assert_eq!(boots[0].summary.started, 100);
        let puts = changes
            .iter()
            .filter(|c| matches!(c, BootRecordChange::Put(_)))
            .count();
        assert_eq!(puts, 3);
        // Held too long: not claimed.
        t.record_unclaimed(other, req(300, "bootcode.bin", BootOutcome::Sent, 1));
        t.record(
            "99999999",
            Some(other),
            req(
                300 + PENDING_MS + 1,
                "99999999/start.elf",
                BootOutcome::Sent,
                1,
            ),
            &mut Vec::new(),
        );
        assert_eq!(t.boots("99999999").boots[0].requests.len(), 1);
    }

    #[test]
    fn failures_are_counted_and_records_reload() {
        let t = Timelines::new();
        let mut changes = Vec::new();
        t.record(
            PI,
            None,
            req(1, "1a2b3c4d/start4.elf", BootOutcome::Sent, 5),
            &mut changes,
        );
        t.record(
            PI,
            None,
            req(2, "1a2b3c4d/../x", BootOutcome::Refused, 0),
            &mut changes,
        );
        t.record(
            PI,
            None,
            req(3, "1a2b3c4d/kernel8.img", BootOutcome::GaveUp, 7),
            &mut changes,
        );
        assert_eq!(t.summary(PI).unwrap().failed, 2);
        // A kernel sent whose final ack was lost is delivered, not failed.
        let unconfirmed = t.record(
            PI,
            None,
            req(4, "1a2b3c4d/kernel8.img", BootOutcome::Unconfirmed, 9),
            &mut changes,
        );
        assert!(unconfirmed.kernel_after_ms.is_some());
        let summary = t.summary(PI).unwrap();
        assert_eq!((summary.failed, summary.files, summary.bytes), (2, 2, 14));
        let rows: Vec<BootRecordRow> = changes
            .into_iter()
            .filter_map(|c| match c {
                BootRecordChange::Put(r) => Some(r),
                BootRecordChange::PruneBefore { .. } => None,
            })
            .collect();
        let again = Timelines::from_records(rows);
        assert_eq!(again.boots(PI), t.boots(PI));
        assert_eq!(t.summary("00000000"), None);
    }
}
