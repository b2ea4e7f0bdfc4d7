//! The demo's PPI: a [`Power`] whose power-on starts a simulated Pi (`pi-sim`) network-booting
//! against bakery's own TFTP server, and whose power-off stops it.
//!
//! Like a Pi 4 EEPROM, a simulated Pi that gets "file not found" for its first file (bakery
//! powers a Pi on just before it marks it baked) tries again a moment later, until
//! [`BOOT_RETRY_WINDOW`] has passed. Every file it fetches is checked against the boot
//! directory of the bakeform bakery baked it from; the outcome of each boot is recorded and
//! can be awaited with [`SimPower::wait_booted`].

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use pi_sim::{BootOptions, BootReport, Model, SimError};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use bakery_core::ppi::{Power, PowerAction, PowerFuture, StatusFuture};
use bakery_core::service::Bakery;

/// How long after power-on a simulated Pi keeps retrying its first file (by default).
pub const BOOT_RETRY_WINDOW: Duration = Duration::from_secs(60);
/// Pause between two boot attempts of a simulated Pi.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Time from power-on to the first TFTP request (the bootloader starting up).
const FIRMWARE_START: Duration = Duration::from_millis(50);

/// How the last boot of a simulated Pi ended.
#[derive(Debug, Clone)]
pub struct BootRecord {
    /// Boot attempts since power-on (attempts that found the Pi not yet baked included).
    pub attempts: u32,
    /// The verified boot, or why it failed.
    pub outcome: Result<BootReport, String>,
    /// When it ended, since the power-on.
    pub after: Duration,
    /// Which boot of this simulation it was (1, 2, ... across all Pis, in the order they ended).
    pub number: u64,
}

struct Inner {
    tftp: SocketAddr,
    model: Model,
    options: BootOptions,
    retry_window: Duration,
    bakery: OnceLock<Weak<Bakery>>,
    running: Mutex<HashMap<String, AbortHandle>>,
    /// Pis switched on (and not off since), what `status` answers from.
    powered: Mutex<std::collections::HashSet<String>>,
    boots: watch::Sender<BTreeMap<String, BootRecord>>,
    ended: AtomicU64,
}

/// Simulated Pis behind the [`Power`] trait. Cheap to clone.
#[derive(Clone)]
pub struct SimPower {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SimPower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimPower")
            .field("tftp", &self.inner.tftp)
            .field("model", &self.inner.model)
            .finish_non_exhaustive()
    }
}

impl SimPower {
    /// Simulated Pis of `model` booting from the TFTP server at `tftp`.
    pub fn new(tftp: SocketAddr, model: Model) -> SimPower {
        SimPower::with_retry_window(tftp, model, BOOT_RETRY_WINDOW)
    }

    /// The same, retrying the first file for `window` after power-on instead of
    /// [`BOOT_RETRY_WINDOW`].
    pub fn with_retry_window(tftp: SocketAddr, model: Model, window: Duration) -> SimPower {
        let (boots, _) = watch::channel(BTreeMap::new());
        SimPower {
            inner: Arc::new(Inner {
                tftp,
                model,
                options: BootOptions::default(),
                retry_window: window,
                bakery: OnceLock::new(),
                running: Mutex::new(HashMap::new()),
                powered: Mutex::new(std::collections::HashSet::new()),
                boots,
                ended: AtomicU64::new(0),
            }),
        }
    }

    /// Lets simulated Pis look up which bakeform they were baked from (to check their files).
    /// Call once, after the [`bakery_server::App`] using this power is built.
    pub fn attach(&self, bakery: &Arc<Bakery>) {
        let _ = self.inner.bakery.set(Arc::downgrade(bakery));
    }

    /// Waits until every Pi in `serials` has a recorded boot, or `timeout` passes; returns the
    /// records there are.
    pub async fn wait_booted(
        &self,
        serials: &[String],
        timeout: Duration,
        mut on_boot: impl FnMut(&str, &BootRecord),
    ) -> BTreeMap<String, BootRecord> {
        let mut rx = self.inner.boots.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = std::collections::HashSet::new();
        loop {
            let snapshot = rx.borrow_and_update().clone();
            for serial in serials {
                if let Some(record) = snapshot.get(serial) {
                    if seen.insert(serial.clone()) {
                        on_boot(serial, record);
                    }
                }
            }
            if serials.iter().all(|s| snapshot.contains_key(s)) {
                return snapshot;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return snapshot,
            }
        }
    }

    /// Every Pi's last boot, updated as boots end.
    pub fn subscribe(&self) -> watch::Receiver<BTreeMap<String, BootRecord>> {
        self.inner.boots.subscribe()
    }

    fn power_on(&self, serial: &str) {
        self.stop(serial);
        self.inner.boots.send_modify(|boots| {
            boots.remove(serial);
        });
        let inner = Arc::clone(&self.inner);
        let key = serial.to_owned();
        let task = tokio::spawn(async move {
            let mut record = boot_until_served(&inner, &key).await;
            record.number = inner.ended.fetch_add(1, Ordering::Relaxed) + 1;
            if let Err(reason) = &record.outcome {
                tracing::warn!(serial = key, reason, "simulated pi failed to boot");
            }
            inner.boots.send_modify(|boots| {
                boots.insert(key.clone(), record);
            });
            // Forget this boot's handle, unless a later power-on already replaced it.
            let me = tokio::task::id();
            if let Ok(mut running) = inner.running.lock() {
                if running.get(&key).map(AbortHandle::id) == Some(me) {
                    running.remove(&key);
                }
            }
        });
        if let Ok(mut running) = self.inner.running.lock() {
            running.insert(serial.to_owned(), task.abort_handle());
        }
    }

    fn stop(&self, serial: &str) {
        let handle = self
            .inner
            .running
            .lock()
            .ok()
            .and_then(|mut running| running.remove(serial));
        if let Some(handle) = handle {
            handle.abort();
        }
    }
}

impl Power for SimPower {
    fn power<'a>(&'a self, serial: &'a str, action: PowerAction) -> PowerFuture<'a> {
        Box::pin(async move {
            tracing::debug!(serial, action = action.as_str(), "simulated power");
            if let Ok(mut powered) = self.inner.powered.lock() {
                match action {
                    PowerAction::PowerOn => powered.insert(serial.to_owned()),
                    PowerAction::PowerOff => powered.remove(serial),
                };
            }
            match action {
                PowerAction::PowerOn => self.power_on(serial),
                PowerAction::PowerOff => self.stop(serial),
            }
            Ok(())
        })
    }

    fn status<'a>(&'a self, serial: &'a str) -> StatusFuture<'a> {
        Box::pin(async move {
            let on = self
                .inner
                .powered
                .lock()
                .is_ok_and(|powered| powered.contains(serial));
            Ok(if on {
                bakery_client::PowerState::On
            } else {
                bakery_client::PowerState::Off
            })
        })
    }

    fn is_managed(&self) -> bool {
        true
    }
}

/// The boot directory of the bakeform `serial` is baked from, if it is being baked or baked.
async fn expected_boot_dir(inner: &Inner, serial: &str) -> Option<PathBuf> {
    let bakery = inner.bakery.get()?.upgrade()?;
    let serial = bakery_core::domain::names::Serial::parse(serial).ok()?;
    let pi = bakery.pi_info(&serial).await.ok()??;
    let bakeform =
        bakery_core::domain::names::BakeformName::parse(&pi.source_bakeform?.name).ok()?;
    Some(bakery.layout().bakeform(&bakeform).join("boot"))
}

/// Boots `serial` like a Pi that was just switched on, retrying while bakery answers "file not
/// found" for the first file.
async fn boot_until_served(inner: &Inner, serial: &str) -> BootRecord {
    let started = Instant::now();
    let first = format!("{serial}/{}", inner.model.first_file());
    tokio::time::sleep(FIRMWARE_START).await;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let outcome = match expected_boot_dir(inner, serial).await {
            Some(dir) => pi_sim::boot(inner.tftp, serial, inner.model, &dir, &inner.options).await,
            None => Err(SimError::Missing {
                serial: serial.to_owned(),
                path: first.clone(),
            }),
        };
        match outcome {
            Err(SimError::Missing { path, .. })
                if path == first && started.elapsed() < inner.retry_window =>
            {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            outcome => {
                return BootRecord {
                    attempts,
                    outcome: outcome.map_err(|e| e.to_string()),
                    after: started.elapsed(),
                    number: 0,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serials(s: &str) -> Vec<String> {
        vec![s.to_owned()]
    }

    #[tokio::test]
    async fn a_pi_never_baked_retries_its_first_file_then_gives_up() {
        // No bakery attached: the Pi is never baked, every attempt is "not found".
        let addr = "127.0.0.1:9".parse().unwrap();
        let power = SimPower::with_retry_window(addr, Model::Pi4, Duration::from_millis(500));
        power.power("dec00001", PowerAction::PowerOn).await.unwrap();
        let boots = power
            .wait_booted(&serials("dec00001"), Duration::from_secs(10), |_, _| {})
            .await;
        let record = &boots["dec00001"];
        assert!(record.attempts >= 2, "{record:?}");
        assert!(record.after >= Duration::from_millis(500), "{record:?}");
        assert_eq!(record.number, 1);
        let err = record.outcome.as_ref().unwrap_err();
        assert!(err.contains("dec00001/start4.elf"), "{err}");
    }

    #[tokio::test]
    async fn power_off_stops_a_booting_pi() {
        let addr = "127.0.0.1:9".parse().unwrap();
        let power = SimPower::with_retry_window(addr, Model::Pi3, Duration::from_millis(400));
        power.power("dec00002", PowerAction::PowerOn).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        power
            .power("dec00002", PowerAction::PowerOff)
            .await
            .unwrap();
        let boots = power
            .wait_booted(&serials("dec00002"), Duration::from_millis(800), |_, _| {})
            .await;
        assert!(
            boots.is_empty(),
            "a switched-off pi finished a boot: {boots:?}"
        );
        assert_eq!(Model::Pi3.first_file(), "start.elf");
    }
}
