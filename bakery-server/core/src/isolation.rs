//! Pinning Pis to their addresses on the boot path (`--pin-pi-addresses`): with it, one
//! address is one Pi. A request for a Pi's files from an address that belongs to another Pi
//! gets nothing (and registers nobody), and a Pi in the oven keeps the address it was first
//! seen at, so no other host can pull its exports to itself by asking for its files.
//!
//! Off by default: bakery then follows a Pi that changes address (and says so in the log).
//! Turn it on where Pis have DHCP reservations; to move a pinned Pi, unbake it.

use std::net::IpAddr;

use bakery_client::PiState;

use crate::db::PiRow;
use crate::domain::names::Serial;
use crate::service::{Bakery, ServiceError};

/// Why a boot request is refused under pinning, or `None` to serve it.
pub(crate) async fn pinned_refusal(
    bakery: &Bakery,
    serial: &Serial,
    peer: IpAddr,
    known: Option<&PiRow>,
) -> Result<Option<String>, ServiceError> {
    if !bakery.config().pin_pi_addresses {
        return Ok(None);
    }
    if let Some(pi) = known
        && matches!(pi.state, PiState::Baked | PiState::Preparing)
        && let Some(own) = pi.address
        && own != peer
    {
        return Ok(Some(format!(
            "pi {serial} is pinned to {own}, request came from {peer}"
        )));
    }
    let key = serial.clone();
    let other = bakery
        .store()
        .call(move |store| store.pi_serial_at(peer, &key))
        .await?;
    Ok(other.map(|other| format!("{peer} is the address of pi {other}, not of pi {serial}")))
}
