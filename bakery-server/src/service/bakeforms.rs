//! Bakeforms: upload and import of SD-card images, listing and deletion.

use std::fmt::Display;
use std::sync::Arc;

use bakery_client::{Bakeform, BakeformState};
use bytes::Bytes;
use futures_util::Stream;

use super::files::{StreamError, drain, stream_to_file};
use super::{Bakery, ServiceError, io_err};
use crate::db::DeleteBakeform;
use crate::domain::names::validate_bakeform_name;
use crate::events::EventKind;
use crate::imaging;

impl Bakery {
    /// Every bakeform.
    pub async fn bakeforms(&self) -> Result<Vec<Bakeform>, ServiceError> {
        let rows = self.db(|s| s.bakeforms()).await?;
        Ok(rows.iter().map(Self::bakeform_view).collect())
    }

    /// One bakeform.
    pub async fn bakeform(&self, name: &str) -> Result<Bakeform, ServiceError> {
        validate_bakeform_name(name)?;
        let key = name.to_owned();
        self.db(move |s| s.bakeform(&key))
            .await?
            .map(|row| Self::bakeform_view(&row))
            .ok_or_else(|| ServiceError::BakeformNotFound(name.to_owned()))
    }

    /// Uploads and imports a bakeform: the body is streamed to `<data>/tmp`, imported into
    /// `<data>/tmp/import-<uuid>`, then renamed to `<data>/bakeforms/<name>`. A failed
    /// bakeform of that name is replaced. On failure no file is left behind and the bakeform
    /// stays listed as `failed` with the reason, until deleted or uploaded again.
    pub async fn import_bakeform<S, E>(
        self: &Arc<Self>,
        name: &str,
        body: S,
    ) -> Result<Bakeform, ServiceError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: Display,
    {
        let limit = self.config.max_image_size;
        if let Err(e) = validate_bakeform_name(name) {
            drain(body, limit).await;
            return Err(e.into());
        }
        let location = self.layout.bakeform(name);
        let (key, loc) = (name.to_owned(), location.display().to_string());
        if !self.db(move |s| s.insert_bakeform(&key, &loc)).await? {
            // The old CPI deletes and re-uploads on this 403: make sure it can read it.
            drain(body, limit).await;
            return Err(ServiceError::BakeformExists(name.to_owned()));
        }
        tracing::info!(
            bakeform = name,
            state = "importing",
            "bakeform upload started"
        );
        self.observer
            .event(EventKind::BakeformImporting.bakeform(name))
            .await;
        let id = uuid::Uuid::new_v4();
        let image = self.layout.tmp.join(format!("upload-{id}.img"));
        let staging = self.layout.tmp.join(format!("import-{id}"));
        let result = self.import_steps(name, body, &image, &staging).await;
        let _ = tokio::fs::remove_file(&image).await;
        if let Err(e) = &result {
            self.observer
                .event(EventKind::BakeformFailed.bakeform(name).with_message(e))
                .await;
            self.trash(&staging);
            let why = match e {
                ServiceError::BadImage { reason, .. } => reason.clone(),
                other => other.to_string(),
            };
            tracing::warn!(bakeform = name, state = "failed", error = %e, "bakeform import failed");
            let key = name.to_owned();
            if let Err(e) = self.db(move |s| s.set_bakeform_failed(&key, &why)).await {
                tracing::error!(bakeform = name, error = %e, "cannot mark bakeform failed");
            }
        }
        let bakeform = result?;
        tracing::info!(bakeform = name, state = "ready", "bakeform imported");
        self.observer
            .event(EventKind::BakeformImported.bakeform(name))
            .await;
        Ok(bakeform)
    }

    async fn import_steps<S, E>(
        &self,
        name: &str,
        body: S,
        image: &std::path::Path,
        staging: &std::path::Path,
    ) -> Result<Bakeform, ServiceError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: Display,
    {
        let limit = self.config.max_image_size;
        let size = match stream_to_file(body, image, limit).await {
            Ok(size) => size,
            Err(StreamError::TooLarge) => {
                return Err(ServiceError::ImageTooLarge {
                    name: name.to_owned(),
                    limit,
                });
            }
            Err(StreamError::Body(reason)) => {
                return Err(ServiceError::Upload {
                    what: format!("image for bakeform {name}"),
                    reason,
                });
            }
            Err(StreamError::Io(e)) => {
                return Err(io_err(format!("cannot store image for bakeform {name}"))(e));
            }
        };
        tracing::info!(bakeform = name, bytes = size, "image received, importing");
        let (img, dest, key) = (image.to_owned(), staging.to_owned(), name.to_owned());
        self.blocking(move || {
            imaging::import(&img, &dest).map_err(|e| match e {
                imaging::ImagingError::Image(reason) => {
                    ServiceError::BadImage { name: key, reason }
                }
                other => ServiceError::Imaging(other),
            })
        })
        .await?;
        let location = self.layout.bakeform(name);
        self.trash(&location);
        std::fs::rename(staging, &location).map_err(io_err(format!(
            "cannot move imported bakeform to {}",
            location.display()
        )))?;
        let key = name.to_owned();
        self.db(move |s| s.set_bakeform_ready(&key))
            .await?
            .map(|row| Self::bakeform_view(&row))
            .ok_or_else(|| ServiceError::BakeformNotFound(name.to_owned()))
    }

    /// The refusal of a bake from a bakeform in `state`, naming why a failed import failed.
    pub(crate) async fn bakeform_not_ready(&self, name: String, state: BakeformState) -> ServiceError {
        let state = match state {
            BakeformState::Importing => "importing".to_owned(),
            BakeformState::Ready => "ready".to_owned(),
            BakeformState::Failed => {
                let key = name.clone();
                match self.db(move |s| s.bakeform(&key)).await {
                    Ok(Some(row)) => match row.error {
                        Some(why) => format!("failed: {why}"),
                        None => "failed".to_owned(),
                    },
                    _ => "failed".to_owned(),
                }
            }
        };
        ServiceError::BakeformNotReady { name, state }
    }

    /// Deletes a ready or failed bakeform no Pi in the oven uses.
    pub async fn delete_bakeform(&self, name: &str) -> Result<(), ServiceError> {
        validate_bakeform_name(name)?;
        let key = name.to_owned();
        match self.db(move |s| s.delete_bakeform(&key)).await? {
            DeleteBakeform::Deleted(row) => {
                self.trash(std::path::Path::new(&row.location));
                tracing::info!(bakeform = name, "bakeform deleted");
                self.observer
                    .event(EventKind::BakeformDeleted.bakeform(name))
                    .await;
                Ok(())
            }
            DeleteBakeform::NotFound => Err(ServiceError::BakeformNotFound(name.to_owned())),
            DeleteBakeform::InUse(serial) => Err(ServiceError::BakeformInUse {
                name: name.to_owned(),
                serial,
            }),
            DeleteBakeform::Importing => Err(ServiceError::BakeformImporting(name.to_owned())),
        }
    }
}
