//! Bakeforms: upload and import of SD-card images, listing and deletion.

use std::fmt::Display;
use std::sync::Arc;

use bakery_client::{Bakeform, BakeformState};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::files::drain;
use super::{Bakery, ServiceError, io_err};
use crate::db::DeleteBakeform;
use crate::domain::names::validate_bakeform_name;
use crate::events::EventKind;
use crate::imaging::{self, Packing};

/// Body chunks buffered between the request and the decoder.
const CHANNEL_CHUNKS: usize = 16;

/// A blocking reader over the body chunks the async side sends.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(reason)) => return Err(std::io::Error::other(reason)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

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
        declared: Option<Packing>,
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
        // The body's announced length (Content-Length) is what the image file needs at least.
        let announced = u64::try_from(body.size_hint().0).unwrap_or(u64::MAX);
        let what = format!("the image of bakeform {name}");
        if let Err(short) = self.ensure_free_space(what, announced).await {
            drain(body, limit).await;
            let key = name.to_owned();
            let taken = self
                .db(move |s| s.bakeform(&key))
                .await?
                .is_some_and(|b| b.state != BakeformState::Failed);
            return Err(if taken {
                ServiceError::BakeformExists(name.to_owned())
            } else {
                short
            });
        }
        let location = self.layout.bakeform(name);
        let (key, loc) = (name.to_owned(), location.display().to_string());
        let event = EventKind::BakeformImporting.bakeform(name);
        if !self
            .db(move |s| s.insert_bakeform(&key, &loc, event))
            .await?
        {
            // The old CPI deletes and re-uploads on this 403: make sure it can read it.
            drain(body, limit).await;
            return Err(ServiceError::BakeformExists(name.to_owned()));
        }
        tracing::info!(
            bakeform = name,
            state = "importing",
            "bakeform upload started"
        );
        let id = uuid::Uuid::new_v4();
        let image = self.layout.tmp.join(format!("upload-{id}.img"));
        let staging = self.layout.tmp.join(format!("import-{id}"));
        let result = self
            .import_steps(name, body, declared, &image, &staging)
            .await
            .map_err(|e| self.no_space(format!("importing bakeform {name}"), e));
        let _ = tokio::fs::remove_file(&image).await;
        if let Err(e) = &result {
            self.trash(&staging);
            let why = match e {
                ServiceError::BadImage { reason, .. } => reason.clone(),
                other => other.to_string(),
            };
            tracing::warn!(bakeform = name, state = "failed", error = %e, "bakeform import failed");
            let key = name.to_owned();
            let event = EventKind::BakeformFailed.bakeform(name).with_message(e);
            if let Err(e) = self
                .db(move |s| s.set_bakeform_failed(&key, &why, event))
                .await
            {
                tracing::error!(bakeform = name, error = %e, "cannot mark bakeform failed");
            }
        }
        let bakeform = result?;
        tracing::info!(bakeform = name, state = "ready", "bakeform imported");
        // Measure the golden root now, so the first bake's space check does not walk it.
        let (this, key) = (self.clone(), name.to_owned());
        tokio::spawn(async move {
            if let Err(e) = this.golden_bytes(&key).await {
                tracing::warn!(bakeform = key, error = %e, "cannot measure the golden root");
            }
        });
        self.wake_pool();
        Ok(bakeform)
    }

    async fn import_steps<S, E>(
        &self,
        name: &str,
        body: S,
        declared: Option<Packing>,
        image: &std::path::Path,
        staging: &std::path::Path,
    ) -> Result<Bakeform, ServiceError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: Display,
    {
        let limit = self.config.max_image_size;
        let received = self.receive(name, body, declared, image, limit).await?;
        tracing::info!(
            bakeform = name,
            bytes = received.image_bytes,
            packing = received.packing.as_str(),
            body_bytes = received.body_bytes,
            entry = received.entry.as_deref(),
            "image received, importing"
        );
        // The extracted trees take at most the image's size: refuse before writing them.
        self.ensure_free_space(
            format!("the extracted trees of bakeform {name}"),
            received.image_bytes,
        )
        .await?;
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
        let (key, event) = (name.to_owned(), EventKind::BakeformImported.bakeform(name));
        self.db(move |s| s.set_bakeform_ready(&key, event))
            .await?
            .map(|row| Self::bakeform_view(&row))
            .ok_or_else(|| ServiceError::BakeformNotFound(name.to_owned()))
    }

    /// Streams `body` into `image` through a blocking decoder (gzip, xz, zip or raw), the
    /// async side handing chunks over a small channel so the body is never held whole.
    async fn receive<S, E>(
        &self,
        name: &str,
        mut body: S,
        declared: Option<Packing>,
        image: &std::path::Path,
        limit: u64,
    ) -> Result<imaging::Received, ServiceError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: Display,
    {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(CHANNEL_CHUNKS);
        let forward = async move {
            let mut seen: u64 = 0;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| e.to_string());
                seen += chunk.as_ref().map_or(0, |c| c.len() as u64);
                let broken = chunk.is_err();
                if tx.send(chunk).await.is_err() || broken {
                    break;
                }
            }
            drop(tx);
            // The decoder stopped early (corrupt, too large): read the rest, so a client that
            // sends the whole body before reading the reply still sees the refusal.
            drain(body, limit.saturating_sub(seen)).await;
        };
        let (img, key) = (image.to_owned(), name.to_owned());
        let decode = self.blocking(move || {
            let mut reader = ChannelReader {
                rx,
                current: Bytes::new(),
            };
            imaging::receive(&mut reader, &img, limit, declared).map_err(|e| match e {
                imaging::ImagingError::TooLarge { limit } => {
                    ServiceError::ImageTooLarge { name: key, limit }
                }
                imaging::ImagingError::Upload(reason) => ServiceError::Upload {
                    what: format!("image for bakeform {key}"),
                    reason,
                },
                imaging::ImagingError::Image(reason) => {
                    ServiceError::BadImage { name: key, reason }
                }
                other => ServiceError::Imaging(other),
            })
        });
        let ((), received) = tokio::join!(forward, decode);
        received
    }

    /// The refusal of a bake from a bakeform in `state`, naming why a failed import failed.
    pub(crate) async fn bakeform_not_ready(
        &self,
        name: String,
        state: BakeformState,
    ) -> ServiceError {
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
        let (key, event) = (name.to_owned(), EventKind::BakeformDeleted.bakeform(name));
        match self.db(move |s| s.delete_bakeform(&key, event)).await? {
            DeleteBakeform::Deleted(row) => {
                self.trash(std::path::Path::new(&row.location));
                self.drop_pool(name).await;
                tracing::info!(bakeform = name, "bakeform deleted");
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
