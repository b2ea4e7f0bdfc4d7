//! The cloud-init files operators set per Pi in the oven (deleted when it goes back to the
//! fridge).

use bakery_client::PiState;
use rusqlite::{OptionalExtension, params};

use super::pis::get_pi;
use super::{DbError, Store};
use crate::domain::names::Serial;

impl Store {
    /// Sets (`Some`) or removes (`None`) a cloud-init file of a Pi in the oven. `None` if no
    /// such Pi; `Some(Err(state))` with its state if it is in the fridge.
    pub fn set_cloud_init(
        &self,
        serial: &Serial,
        file: &str,
        data: Option<&[u8]>,
    ) -> Result<Option<Result<(), PiState>>, DbError> {
        self.change(|tx, _| {
            let Some(pi) = get_pi(tx, serial)? else {
                return Ok(None);
            };
            if pi.state == PiState::Fridge {
                return Ok(Some(Err(pi.state)));
            }
            match data {
                Some(data) => tx.execute(
                    "INSERT INTO cloud_init (pi, file, data) VALUES (?1, ?2, ?3)
                     ON CONFLICT (pi, file) DO UPDATE SET data = excluded.data",
                    params![serial, file, data],
                )?,
                None => tx.execute(
                    "DELETE FROM cloud_init WHERE pi = ?1 AND file = ?2",
                    params![serial, file],
                )?,
            };
            Ok(Some(Ok(())))
        })
    }

    /// A cloud-init file a Pi's operator set, if any.
    pub fn cloud_init(&self, serial: &Serial, file: &str) -> Result<Option<Vec<u8>>, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT data FROM cloud_init WHERE pi = ?1 AND file = ?2",
                params![serial, file],
                |row| row.get(0),
            )
            .optional()?)
    }
}
