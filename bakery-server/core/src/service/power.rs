//! Power: switching Pis through the [`crate::ppi::Power`] backend, and the last known power
//! state of each Pi, kept in memory (learnt from switches bakery makes and the PPI's answers to
//! `status`), reconciled at start-up.
//!
//! The power state is an observation, not inventory: it lives beside the database, is lost on
//! a restart and asked for again then.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bakery_client::{PiInfo, PowerState};
use futures_util::StreamExt;

use super::{Bakery, ServiceError};
use crate::domain::names::Serial;
use crate::events::EventKind;
use crate::observe::unix_ms;
use crate::ppi::{PowerAction, STATUS_ACTION};

/// How many `status` calls the start-up reconcile runs at once.
const RECONCILE_CONCURRENCY: usize = 4;

/// The last known power state of each Pi and whom a failing `status` was logged for.
#[derive(Debug, Default)]
pub(crate) struct PowerStates {
    known: Mutex<HashMap<String, (PowerState, i64)>>,
    warned: Mutex<HashSet<String>>,
}

impl PowerStates {
    /// The state of `serial` and when it was learnt (unix ms), if ever.
    pub(crate) fn get(&self, serial: &str) -> Option<(PowerState, i64)> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(serial)
            .copied()
    }

    fn set(&self, serial: &str, state: PowerState) {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(serial.to_owned(), (state, unix_ms()));
    }

    /// Records `unknown` unless a state is known already (a failed `status` teaches nothing).
    fn set_unknown_if_none(&self, serial: &str) -> PowerState {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known
            .entry(serial.to_owned())
            .or_insert((PowerState::Unknown, unix_ms()))
            .0
    }

    /// True the first time `serial`'s `status` fails (since it last succeeded).
    fn first_failure(&self, serial: &str) -> bool {
        self.warned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(serial.to_owned())
    }

    fn answered(&self, serial: &str) {
        self.warned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(serial);
    }
}

/// How many Pis the start-up reconcile found in each state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PowerSummary {
    /// Pis that are on.
    pub on: usize,
    /// Pis that are off.
    pub off: usize,
    /// Pis whose state nobody could tell.
    pub unknown: usize,
}

impl Bakery {
    /// Switches a Pi's power, logging the change and recording the new state.
    pub(crate) async fn power(
        &self,
        serial: &Serial,
        action: PowerAction,
    ) -> Result<(), ServiceError> {
        let result = self.power.power(serial.as_str(), action).await;
        if self.power.is_managed() {
            self.observer.ppi_call(action.as_str(), result.is_ok());
        }
        result?;
        if self.power.is_managed() {
            let (kind, state) = match action {
                PowerAction::PowerOn => (EventKind::PowerOn, PowerState::On),
                PowerAction::PowerOff => (EventKind::PowerOff, PowerState::Off),
            };
            self.power_states.set(serial.as_str(), state);
            self.observer.event(kind.pi(serial)).await;
            tracing::info!(%serial, action = action.as_str(), "power switched");
        }
        Ok(())
    }

    /// Asks the PPI for a Pi's power state and records the answer. A PPI that fails `status`
    /// (an old PPI, a timeout, another answer) is taken as `unknown`, warned about once per
    /// Pi, and leaves a state learnt before in place. Returns the state now recorded.
    pub(crate) async fn query_power(&self, serial: &Serial) -> PowerState {
        let serial = serial.as_str();
        let result = self.power.status(serial).await;
        if self.power.is_managed() {
            self.observer.ppi_call(STATUS_ACTION, result.is_ok());
        }
        match result {
            Ok(state) => {
                self.power_states.answered(serial);
                self.power_states.set(serial, state);
                tracing::debug!(serial, power = %state, "power state asked");
                state
            }
            Err(e) => {
                if self.power_states.first_failure(serial) {
                    tracing::warn!(
                        serial,
                        error = %e,
                        "ppi cannot tell the power state (status action), taken as unknown"
                    );
                } else {
                    tracing::debug!(serial, error = %e, "ppi cannot tell the power state");
                }
                self.power_states.set_unknown_if_none(serial)
            }
        }
    }

    /// Asks the PPI now for a known Pi's power state: `POST /pis/{id}/power/status`.
    pub async fn refresh_power_state(&self, serial: &Serial) -> Result<PiInfo, ServiceError> {
        self.pi(serial).await?;
        self.query_power(serial).await;
        self.pi(serial).await
    }

    /// Asks the power state of every known Pi, a few at a time, and logs one summary line.
    /// Nothing when power is not managed.
    pub(crate) async fn reconcile_power(self: &Arc<Self>) -> Option<PowerSummary> {
        if !self.power.is_managed() {
            tracing::debug!("power not managed: no power states to reconcile");
            return None;
        }
        let serials: Vec<Serial> = match self.db(|s| s.pis()).await {
            Ok(pis) => pis.into_iter().map(|p| p.serial).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list pis to reconcile their power states");
                return None;
            }
        };
        let states: Vec<PowerState> = futures_util::stream::iter(serials)
            .map(|serial| {
                let this = self.clone();
                async move { this.query_power(&serial).await }
            })
            .buffer_unordered(RECONCILE_CONCURRENCY)
            .collect()
            .await;
        let mut summary = PowerSummary::default();
        for state in states {
            match state {
                PowerState::On => summary.on += 1,
                PowerState::Off => summary.off += 1,
                PowerState::Unknown => summary.unknown += 1,
            }
        }
        tracing::info!(
            "power states reconciled: {} on, {} off, {} unknown",
            summary.on,
            summary.off,
            summary.unknown
        );
        self.notify_change();
        Some(summary)
    }
}
