//! cloud-init NoCloud files per Pi: set by its operator through the API while it is in the
//! oven (deleted when it is unbaked), served to the Pi itself, found by the address it
//! network-booted from.

use std::net::IpAddr;

use bakery_client::PiState;

use super::{Bakery, ServiceError};
use crate::domain::cloudinit::{self, CloudInitFile, MAX_FILE_BYTES};
use crate::domain::names::{DiskId, Serial};

impl Bakery {
    /// Sets (`Some`) or removes (`None`) cloud-init file `name` of a Pi in the oven.
    pub async fn set_cloud_init(
        &self,
        serial: &Serial,
        name: &str,
        data: Option<Vec<u8>>,
    ) -> Result<(), ServiceError> {
        let file = cloudinit::parse_file(name)?;
        if let Some(data) = &data
            && data.len() > MAX_FILE_BYTES
        {
            return Err(ServiceError::BodyTooLarge {
                limit: MAX_FILE_BYTES as u64,
            });
        }
        let key = serial.clone();
        match self
            .db(move |s| s.set_cloud_init(&key, file.as_str(), data.as_deref()))
            .await?
        {
            None => Err(ServiceError::PiNotFound(serial.to_string())),
            Some(Err(state)) => Err(ServiceError::NotBaked {
                serial: serial.to_string(),
                state: state.as_str(),
            }),
            Some(Ok(())) => {
                tracing::info!(pi = %serial, file = %file, "cloud-init file set");
                Ok(())
            }
        }
    }

    /// What a Pi in the oven is served for cloud-init file `name`: what its operator set,
    /// else the default ([`cloudinit::default_for`]).
    pub async fn cloud_init(&self, serial: &Serial, name: &str) -> Result<Vec<u8>, ServiceError> {
        let file = cloudinit::parse_file(name)?;
        self.oven_pi(serial).await?;
        let key = serial.clone();
        let root = self.db(move |s| s.disks_of(&key)).await?;
        self.cloud_init_of(serial, root.first().map(|d| &d.id), file)
            .await
    }

    /// Cloud-init file `name` for the baked Pi bakery last saw at `peer` on the boot path;
    /// any other caller gets `CloudInitNotFound` (no data is served by serial).
    pub async fn cloud_init_for(&self, peer: IpAddr, name: &str) -> Result<Vec<u8>, ServiceError> {
        let file = cloudinit::parse_file(name)?;
        let not_found = || ServiceError::CloudInitNotFound {
            file: file.as_str(),
            peer,
        };
        // Exactly one baked Pi at that address: two (an address that moved while both stay
        // baked) is nobody's for certain.
        let mut baked: Vec<_> = self
            .db(move |s| s.pis_at_address(peer))
            .await?
            .into_iter()
            .filter(|pi| pi.state == PiState::Baked)
            .collect();
        if baked.len() != 1 {
            return Err(not_found());
        }
        let pi = baked.remove(0);
        let root = self
            .db({
                let serial = pi.serial.clone();
                move |s| s.disks_of(&serial)
            })
            .await?;
        self.cloud_init_of(&pi.serial, root.first().map(|d| &d.id), file)
            .await
            .map_err(|_| not_found())
    }

    async fn cloud_init_of(
        &self,
        serial: &Serial,
        root: Option<&DiskId>,
        file: CloudInitFile,
    ) -> Result<Vec<u8>, ServiceError> {
        let key = serial.clone();
        if let Some(data) = self.db(move |s| s.cloud_init(&key, file.as_str())).await? {
            return Ok(data);
        }
        cloudinit::default_for(file, serial.as_str(), root.map_or("none", DiskId::as_str))
            .map(String::into_bytes)
            .ok_or_else(|| ServiceError::CloudInitNotSet {
                serial: serial.to_string(),
                file: file.as_str(),
            })
    }
}
