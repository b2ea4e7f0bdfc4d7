//! Bakeforms: upload and import of SD-card images, listing and deletion.

use std::fmt::Display;
use std::sync::Arc;

use bakery_client::{Bakeform, BakeformState};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::{Bakery, ServiceError, io_err};
use crate::db::{BakeformRow, DeleteBakeform};
use crate::domain::names::BakeformName;
use crate::events::EventKind;
use crate::imaging::{self, Packing};

/// Body chunks buffered between the request and the decoder.
const CHANNEL_CHUNKS: usize = 16;
/// Most bytes read and discarded from a refused upload before its connection is closed: a
/// client that sends its whole body before reading the answer (reqwest's blocking client)
/// sees the refusal for a body up to this size, a reset connection beyond it. 64 MiB covers
/// the demo's and the tests' sample images (about 54 MiB) with room to spare.
const LINGER_BYTES: u64 = 64 << 20;
/// Longest a refused upload's rest is waited for between two chunks.
const LINGER_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

/// What the request's head says about an upload, before its body is read.
#[derive(Debug, Clone, Copy, Default)]
pub struct UploadHead {
    /// The packing the `Content-Type` names, if any (else found by magic bytes).
    pub declared: Option<Packing>,
    /// The body's length as `Content-Length` announces it.
    pub announced: Option<u64>,
    /// Whether the client waits for `100 Continue` before sending the body.
    pub expects_continue: bool,
}

/// Where an import's time went, for its `bakeform imported` log line: receiving the body
/// into the image file (decoding included), importing the image into trees, and moving the
/// trees into place and marking the bakeform ready.
#[derive(Debug, Default)]
struct ImportPhases {
    receive: std::time::Duration,
    import: std::time::Duration,
    finish: std::time::Duration,
}

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
    pub async fn bakeform(&self, name: &BakeformName) -> Result<Bakeform, ServiceError> {
        let key = name.clone();
        self.db(move |s| s.bakeform(&key))
            .await?
            .map(|row| Self::bakeform_view(&row))
            .ok_or_else(|| ServiceError::BakeformNotFound(name.to_string()))
    }

    /// Uploads and imports a bakeform: the body is streamed to `<data>/tmp`, imported into
    /// `<data>/tmp/import-<uuid>`, then renamed to `<data>/bakeforms/<name>`. A failed
    /// bakeform of that name is replaced.
    ///
    /// What the request's head decides (a taken name, an announced length above
    /// `--max-image-size` or beyond the free space, `--max-concurrent-uploads` reached) is
    /// refused before any of the body is read. On failure no file is left behind and the
    /// bakeform stays listed as `failed` with the reason (and no location), until deleted or
    /// uploaded again; the reason names the bakeform and the upload, never a server path.
    pub async fn import_bakeform<S, E>(
        self: &Arc<Self>,
        name: &BakeformName,
        body: S,
        head: UploadHead,
    ) -> Result<Bakeform, ServiceError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
        E: Display,
    {
        let permit = match self.admit_upload(name, &head).await {
            Ok(permit) => permit,
            Err(e) => {
                let e = self.without_paths(name.as_str(), e, None);
                return Err(self.refuse_upload(body, &head, e));
            }
        };
        let location = self.layout.bakeform(name);
        let (key, loc) = (name.clone(), location.display().to_string());
        let event = EventKind::BakeformImporting.bakeform(name);
        if !self
            .db(move |s| s.insert_bakeform(&key, &loc, event))
            .await?
        {
            // Lost a race with another upload of this name.
            self.linger(body);
            return Err(ServiceError::BakeformExists(name.to_string()));
        }
        tracing::info!(
            bakeform = %name,
            state = BakeformState::Importing.as_str(),
            "bakeform upload started"
        );
        let id = uuid::Uuid::new_v4();
        let image = self.layout.tmp.join(format!("upload-{id}.img"));
        let staging = self.layout.tmp.join(format!("import-{id}"));
        let started = std::time::Instant::now();
        let mut phases = ImportPhases::default();
        let result = self
            .import_steps(name, body, head.declared, &image, &staging, &mut phases)
            .await
            .map_err(|e| self.no_space(format!("importing bakeform {name}"), e));
        drop(permit);
        let _ = tokio::fs::remove_file(&image).await;
        if let Err(e) = result {
            self.trash(&staging);
            tracing::warn!(bakeform = %name, state = BakeformState::Failed.as_str(), error = %e, "bakeform import failed");
            let e = self.without_paths(name.as_str(), e, Some((&image, &staging)));
            let why = match &e {
                ServiceError::BadImage { reason, .. } => reason.clone(),
                other => other.to_string(),
            };
            let key = name.clone();
            let event = EventKind::BakeformFailed.bakeform(name).with_message(&e);
            if let Err(e) = self
                .db(move |s| s.set_bakeform_failed(&key, &why, event))
                .await
            {
                tracing::error!(bakeform = %name, error = %e, "cannot mark bakeform failed");
            }
            return Err(e);
        }
        let bakeform = result?;
        tracing::info!(
            bakeform = %name,
            state = BakeformState::Ready.as_str(),
            receive_ms = phases.receive.as_millis() as u64,
            import_ms = phases.import.as_millis() as u64,
            finish_ms = phases.finish.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "bakeform imported"
        );
        // Measure the golden root now, so the first bake's space check does not walk it.
        let (this, key) = (self.clone(), name.clone());
        tokio::spawn(async move {
            if let Err(e) = this.golden_bytes(&key).await {
                tracing::warn!(bakeform = %key, error = %e, "cannot measure the golden root");
            }
        });
        self.wake_pool();
        Ok(bakeform)
    }

    /// The refusal of an upload before its body is read (a bad name, or what
    /// [`Bakery::import_bakeform`] refuses from the head): unless the client waits for
    /// `100 Continue`, the rest of the body is read and dropped in the background, so the
    /// client sees `error` instead of a reset connection.
    pub fn refuse_upload<S, E>(
        &self,
        body: S,
        head: &UploadHead,
        error: ServiceError,
    ) -> ServiceError
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
        E: Display,
    {
        if !head.expects_continue {
            self.linger(body);
        }
        error
    }

    /// The refusals the request's head decides, in order (a bad name was refused where it
    /// came in): a name taken by a bakeform that did not fail (403), an announced length above `--max-image-size`
    /// (413), `--max-concurrent-uploads` reached (503), an announced length that would take
    /// the data dir below `--min-free-space` (507). Admitted: the upload's permit.
    async fn admit_upload(
        &self,
        name: &BakeformName,
        head: &UploadHead,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, ServiceError> {
        let key = name.clone();
        let taken = self
            .db(move |s| s.bakeform(&key))
            .await?
            .is_some_and(|b| b.state != BakeformState::Failed);
        if taken {
            return Err(ServiceError::BakeformExists(name.to_string()));
        }
        let limit = self.config.max_image_size;
        let announced = head.announced.unwrap_or(0);
        if announced > limit {
            return Err(ServiceError::ImageTooLarge {
                name: name.to_string(),
                limit,
            });
        }
        let permit =
            self.uploads
                .clone()
                .try_acquire_owned()
                .map_err(|_| ServiceError::TooManyUploads {
                    limit: self.config.max_concurrent_uploads,
                })?;
        // The body's announced length is what the image file needs at least.
        self.ensure_free_space(format!("the image of bakeform {name}"), announced)
            .await?;
        Ok(permit)
    }

    /// Reads and discards what a refused client still sends, in the background and bounded
    /// ([`LINGER_BYTES`], [`LINGER_IDLE`]), so one that sends its body before reading the
    /// answer sees the refusal instead of a reset connection; then the connection closes.
    fn linger<S, E>(&self, body: S)
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
        E: Display,
    {
        tokio::spawn(async move {
            let mut body = body;
            let mut seen: u64 = 0;
            while let Ok(Some(Ok(chunk))) = tokio::time::timeout(LINGER_IDLE, body.next()).await {
                seen += chunk.len() as u64;
                if seen > LINGER_BYTES {
                    break;
                }
            }
        });
    }

    /// `error` told without the server's paths: the upload file and staging tree by what
    /// they are, other paths in the data dir relative to it. Unchanged when it names none.
    fn without_paths(
        &self,
        name: &str,
        error: ServiceError,
        temp: Option<(&std::path::Path, &std::path::Path)>,
    ) -> ServiceError {
        let text = error.to_string();
        let data = self.layout.data.display().to_string();
        if !text.contains(&data) {
            return error;
        }
        let mut reason = text;
        if let Some((image, staging)) = temp {
            reason = reason
                .replace(&image.display().to_string(), "the uploaded file")
                .replace(&staging.display().to_string(), "the imported tree");
        }
        let tmp = self.layout.tmp.display().to_string();
        reason = reason
            .split(' ')
            .map(|word| {
                if word.contains(&tmp) {
                    "the upload's temporary files".to_owned()
                } else {
                    word.replace(&format!("{data}/"), "").replace(&data, "")
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
            .replace("the data dir  ", "the data dir ")
            .replace("the data dir :", "the data dir:");
        match error {
            ServiceError::BadImage { name, .. } => {
                let prefix = format!("invalid image for bakeform {name}: ");
                let reason = reason.strip_prefix(&prefix).unwrap_or(&reason).to_owned();
                ServiceError::BadImage { name, reason }
            }
            cause => ServiceError::UploadFailed {
                name: name.to_owned(),
                reason,
                cause: Box::new(cause),
            },
        }
    }

    async fn import_steps<S, E>(
        &self,
        name: &BakeformName,
        body: S,
        declared: Option<Packing>,
        image: &std::path::Path,
        staging: &std::path::Path,
        phases: &mut ImportPhases,
    ) -> Result<Bakeform, ServiceError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
        E: Display,
    {
        let limit = self.config.max_image_size;
        let mut clock = std::time::Instant::now();
        let received = self
            .receive(name.as_str(), body, declared, image, limit)
            .await?;
        phases.receive = clock.elapsed();
        clock = std::time::Instant::now();
        tracing::info!(
            bakeform = %name,
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
        let (img, dest, key) = (image.to_owned(), staging.to_owned(), name.to_string());
        self.blocking(move || {
            imaging::import(&img, &dest).map_err(|e| match e {
                imaging::ImagingError::Image(reason) => {
                    ServiceError::BadImage { name: key, reason }
                }
                other => ServiceError::Imaging(other),
            })
        })
        .await?;
        phases.import = clock.elapsed();
        clock = std::time::Instant::now();
        let location = self.layout.bakeform(name);
        self.trash(&location);
        std::fs::rename(staging, &location).map_err(io_err(format!(
            "cannot move imported bakeform to {}",
            location.display()
        )))?;
        let (key, event) = (name.clone(), EventKind::BakeformImported.bakeform(name));
        let ready = self
            .db(move |s| s.set_bakeform_ready(&key, event))
            .await?
            .map(|row| Self::bakeform_view(&row))
            .ok_or_else(|| ServiceError::BakeformNotFound(name.to_string()));
        phases.finish = clock.elapsed();
        ready
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
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
        E: Display,
    {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(CHANNEL_CHUNKS);
        let idle = self.config.upload_idle_timeout;
        let forward = async move {
            loop {
                let chunk = match tokio::time::timeout(idle, body.next()).await {
                    Err(_) => {
                        let _ = tx.send(Err("stalled".to_owned())).await;
                        // Dropped: the connection closes (a 408 goes out if it still can).
                        return (None, true);
                    }
                    Ok(None) => return (None, false),
                    Ok(Some(chunk)) => chunk.map_err(|e| e.to_string()),
                };
                let broken = chunk.is_err();
                if broken {
                    let _ = tx.send(chunk).await;
                    return (None, false);
                }
                if tx.send(chunk).await.is_err() {
                    // The decoder stopped early (corrupt, too large): the rest is cut off.
                    return (Some(body), false);
                }
            }
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
        let ((rest, stalled), received) = tokio::join!(forward, decode);
        if let Some(rest) = rest {
            self.linger(rest);
        }
        if stalled {
            return Err(ServiceError::UploadStalled {
                name: name.to_owned(),
                after: idle,
            });
        }
        received
    }

    /// The refusal of a bake from a bakeform in `state`, naming why a failed import failed.
    pub(crate) async fn bakeform_not_ready(
        &self,
        name: BakeformName,
        state: BakeformState,
    ) -> ServiceError {
        let state = match state {
            BakeformState::Importing | BakeformState::Ready => state.as_str().to_owned(),
            BakeformState::Failed => {
                let key = name.clone();
                match self.db(move |s| s.bakeform(&key)).await {
                    Ok(Some(BakeformRow {
                        error: Some(why), ..
                    })) => format!("{state}: {why}"),
                    _ => state.as_str().to_owned(),
                }
            }
        };
        ServiceError::BakeformNotReady {
            name: name.to_string(),
            state,
        }
    }

    /// Deletes a ready or failed bakeform no Pi in the oven uses.
    pub async fn delete_bakeform(&self, name: &BakeformName) -> Result<(), ServiceError> {
        let (key, event) = (name.clone(), EventKind::BakeformDeleted.bakeform(name));
        match self.db(move |s| s.delete_bakeform(&key, event)).await? {
            DeleteBakeform::Deleted(row) => {
                if !row.location.is_empty() {
                    self.trash(std::path::Path::new(&row.location));
                }
                self.drop_pool(name).await;
                tracing::info!(bakeform = %name, "bakeform deleted");
                Ok(())
            }
            DeleteBakeform::NotFound => Err(ServiceError::BakeformNotFound(name.to_string())),
            DeleteBakeform::InUse(serial) => Err(ServiceError::BakeformInUse {
                name: name.to_string(),
                serial: serial.to_string(),
            }),
            DeleteBakeform::Importing => Err(ServiceError::BakeformImporting(name.to_string())),
        }
    }
}
