//! The async HTTP client of bakery's API v1: one method per route, on reqwest with rustls.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use tokio_util::io::ReaderStream;

use crate::error::{Error, excerpt};
use crate::sse::EventStream;
use crate::types::{
    AttachDiskRequest, BakeRequest, Bakeform, BakeformMap, BootList, CreateDiskRequest,
    CreateSnapshotRequest, Disk, DiskList, ErrorBody, ErrorKind, EventList, Labels, Metadata,
    PiInfo, PiMap, PiState, PiStatus, RAW_IMAGE_CONTENT_TYPE, ResizeDiskRequest,
    RestoreDiskRequest, Snapshot, SnapshotList,
};

/// Default timeout of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default timeout of establishing a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default timeout of an image upload (images are gigabytes).
pub const DEFAULT_UPLOAD_TIMEOUT: Duration = Duration::from_secs(3600);
/// The longest long-poll the server accepts (`GET /oven/{id}?wait=baked&timeout=`).
const MAX_WAIT_SECONDS: u64 = 600;
/// A wait that comes back sooner than this with the Pi still preparing is repeated only after
/// this pause (so a server without long-poll support, like the first one, is polled gently).
const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How many bytes an upload reads from the image file at a time.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// How far an upload got: reported to the [`ProgressFn`] as the file is streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes handed to the connection so far.
    pub sent: u64,
    /// The size of the file.
    pub total: u64,
}

/// A callback receiving upload [`Progress`]; called once with `sent == 0` and after each chunk.
pub type ProgressFn = Box<dyn FnMut(Progress) + Send>;

/// Configures a [`Client`]: base URL, bearer token, timeouts.
#[derive(Clone)]
pub struct ClientBuilder {
    base_url: String,
    token: Option<String>,
    timeout: Duration,
    connect_timeout: Duration,
    upload_timeout: Duration,
    ca_certs: Vec<Vec<u8>>,
}

impl ClientBuilder {
    /// Starts from a base URL ending in `/api/v1`, e.g. `http://10.0.0.2:8080/api/v1`
    /// (a trailing `/` is tolerated).
    pub fn new(base_url: impl Into<String>) -> Self {
        ClientBuilder {
            base_url: base_url.into(),
            token: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            upload_timeout: DEFAULT_UPLOAD_TIMEOUT,
            ca_certs: Vec::new(),
        }
    }

    /// Also trusts the CA certificate(s) in `pem` for an `https` server (e.g. bakery's
    /// self-signed certificate); the system's roots stay trusted.
    pub fn ca_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_certs.push(pem.into());
        self
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The timeout of one request (default 30 s); long-polls add their wait to it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The timeout of establishing a connection (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The timeout of an image upload (default 1 h).
    pub fn upload_timeout(mut self, timeout: Duration) -> Self {
        self.upload_timeout = timeout;
        self
    }

    /// Builds the client; a base URL that is not http(s) gives [`Error::InvalidUrl`].
    pub fn build(self) -> Result<Client, Error> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: self.base_url.clone(),
            reason,
        };
        let parsed = reqwest::Url::parse(&self.base_url).map_err(|e| invalid(e.to_string()))?;
        if parsed.scheme() != "http" && parsed.scheme() != "https" {
            return Err(invalid(format!(
                "scheme {} is not http or https",
                parsed.scheme()
            )));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(invalid("a base url has no query or fragment".into()));
        }
        let mut http = reqwest::Client::builder();
        for pem in &self.ca_certs {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| Error::InvalidCaCert {
                    reason: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(Error::InvalidCaCert {
                    reason: "no CERTIFICATE block in the pem".into(),
                });
            }
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .connect_timeout(self.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("bakery-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Client {
            http,
            base_url: self.base_url.trim_end_matches('/').to_owned(),
            token: self.token,
            timeout: self.timeout,
            upload_timeout: self.upload_timeout,
        })
    }
}

/// An async client of one bakery server. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    token: Option<String>,
    timeout: Duration,
    upload_timeout: Duration,
}

impl Client {
    /// A client with default settings for `base_url` (see [`ClientBuilder::new`]).
    pub fn new(base_url: &str) -> Result<Client, Error> {
        ClientBuilder::new(base_url).build()
    }

    /// The base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    // ----- Pis -----

    /// Bakes a Pi: `POST /fridge`, expects 202 and the chosen Pi (status 3).
    ///
    /// Unknown bakeform → [`Error::Status`] 400; no free Pi → 404.
    pub async fn bake(&self, request: &BakeRequest) -> Result<PiInfo, Error> {
        let call = self.call(Method::POST, "/fridge".into()).json(request);
        self.json(call, StatusCode::ACCEPTED).await
    }

    /// Bakes a Pi from a bakeform with the server's defaults (the Go client's `Bake(name)`).
    pub async fn bake_from(&self, bakeform: &str) -> Result<PiInfo, Error> {
        self.bake(&BakeRequest {
            bakeform_name: bakeform.to_owned(),
            network: None,
            power_on: None,
            root_kind: None,
            model: None,
            labels: Default::default(),
        })
        .await
    }

    /// Unbakes a Pi: `DELETE /oven/{pi}`, expects 200. Not baked → 403; unknown → 404.
    pub async fn unbake(&self, pi: &str) -> Result<(), Error> {
        let call = self.call(Method::DELETE, format!("/oven/{}", seg(pi)?));
        self.empty(call, StatusCode::OK).await
    }

    /// A Pi: `GET /oven/{pi}`. Any known Pi is answered, a fridge Pi with status 1 (as the
    /// first Go server did; bakery servers before 0.1 answered 404 for it); unknown → 404.
    pub async fn pi(&self, pi: &str) -> Result<PiInfo, Error> {
        let call = self.call(Method::GET, format!("/oven/{}", seg(pi)?));
        self.json(call, StatusCode::OK).await
    }

    /// Any known Pi, wherever it is: `GET /pis/{pi}`.
    pub async fn any_pi(&self, pi: &str) -> Result<PiInfo, Error> {
        let call = self.call(Method::GET, format!("/pis/{}", seg(pi)?));
        self.json(call, StatusCode::OK).await
    }

    /// Whether a Pi is baked: `GET /oven/{pi}` answers 200 with status 2 (404 → false).
    pub async fn is_baked(&self, pi: &str) -> Result<bool, Error> {
        match self.pi(pi).await {
            Ok(info) => Ok(info.status == PiStatus::InUse),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until a Pi is baked, by long-polling `GET /oven/{pi}?wait=baked&timeout=s`.
    ///
    /// Returns the baked Pi; [`Error::Timeout`] when `timeout` passes first; a failed bake is
    /// the server's 409 as [`Error::Status`] (its message says why); a Pi that is neither
    /// baked nor being baked (in the fridge, or unbaking) is [`Error::NotBaking`]. Against a
    /// server without long-poll support (the first one) this polls once a second.
    pub async fn wait_baked(&self, pi: &str, timeout: Duration) -> Result<PiInfo, Error> {
        let deadline = Instant::now() + timeout;
        let path = format!("/oven/{}", seg(pi)?);
        loop {
            let now = Instant::now();
            let remaining = deadline.saturating_duration_since(now);
            if remaining.is_zero() {
                return Err(Error::Timeout {
                    url: self.url(&path),
                });
            }
            let wait = remaining
                .as_secs_f64()
                .ceil()
                .clamp(1.0, MAX_WAIT_SECONDS as f64) as u64;
            let call = self
                .call(Method::GET, path.clone())
                .query(&[("wait", "baked"), ("timeout", &wait.to_string())])
                .timeout(Duration::from_secs(wait) + self.timeout);
            let info: PiInfo = self.json(call, StatusCode::OK).await?;
            match info.status {
                PiStatus::InUse => return Ok(info),
                PiStatus::Preparing if info.state == Some(PiState::Unbaking) => {
                    return Err(Error::NotBaking {
                        pi: pi.to_owned(),
                        state: PiState::Unbaking.as_str().into(),
                    });
                }
                PiStatus::Preparing => {
                    let elapsed = now.elapsed();
                    if elapsed < MIN_POLL_INTERVAL {
                        let pause = (MIN_POLL_INTERVAL - elapsed)
                            .min(deadline.saturating_duration_since(Instant::now()));
                        tokio::time::sleep(pause).await;
                    }
                }
                PiStatus::NotInUse => {
                    return Err(Error::NotBaking {
                        pi: pi.to_owned(),
                        state: PiState::Fridge.as_str().into(),
                    });
                }
            }
        }
    }

    /// Power-cycles a Pi: `POST /oven/{pi}/powercycle`, expects 200.
    pub async fn power_cycle(&self, pi: &str) -> Result<(), Error> {
        let call = self.call(Method::POST, format!("/oven/{}/powercycle", seg(pi)?));
        self.empty(call, StatusCode::OK).await
    }

    /// Re-clones a Pi's root from its bakeform: `POST /oven/{pi}/reset`, expects 202.
    pub async fn reset(&self, pi: &str) -> Result<PiInfo, Error> {
        let call = self.call(Method::POST, format!("/oven/{}/reset", seg(pi)?));
        self.json(call, StatusCode::ACCEPTED).await
    }

    /// The Pis in the fridge: `GET /fridge`.
    pub async fn fridge(&self) -> Result<PiMap, Error> {
        let call = self.call(Method::GET, "/fridge".into());
        self.json(call, StatusCode::OK).await
    }

    /// The Pis in the oven (preparing and baked): `GET /oven`.
    pub async fn oven(&self) -> Result<PiMap, Error> {
        let call = self.call(Method::GET, "/oven".into());
        self.json(call, StatusCode::OK).await
    }

    /// Every known Pi: `GET /pis`.
    pub async fn pis(&self) -> Result<PiMap, Error> {
        let call = self.call(Method::GET, "/pis".into());
        self.json(call, StatusCode::OK).await
    }

    /// Replaces a Pi's labels: `PUT /pis/{pi}/labels`, expects 200 and the Pi. A bad key
    /// or value → 400; unknown Pi → 404.
    pub async fn set_pi_labels(&self, pi: &str, labels: &Labels) -> Result<PiInfo, Error> {
        let call = self
            .call(Method::PUT, format!("/pis/{}/labels", seg(pi)?))
            .json(labels);
        self.json(call, StatusCode::OK).await
    }

    /// Asks the server to ask the Pi's PPI for its power state now:
    /// `POST /pis/{pi}/power/status`, expects 200 and the Pi with `powerState` and
    /// `powerStateAt`. Unknown Pi → 404.
    pub async fn refresh_power_state(&self, pi: &str) -> Result<PiInfo, Error> {
        let call = self.call(Method::POST, format!("/pis/{}/power/status", seg(pi)?));
        self.json(call, StatusCode::OK).await
    }

    /// Replaces a Pi's metadata: `PUT /oven/{pi}/metadata`, expects 200 and the Pi.
    pub async fn set_pi_metadata(&self, pi: &str, metadata: &Metadata) -> Result<PiInfo, Error> {
        let call = self
            .call(Method::PUT, format!("/oven/{}/metadata", seg(pi)?))
            .json(metadata);
        self.json(call, StatusCode::OK).await
    }

    // ----- per-Pi files -----

    /// Stores `bytes` as `piConfig/{filename}` on a Pi's root disk:
    /// `POST /oven/{pi}/upload/{filename}`, expects 200.
    pub async fn upload_pi_file(
        &self,
        pi: &str,
        filename: &str,
        bytes: Vec<u8>,
    ) -> Result<(), Error> {
        let call = self
            .call(
                Method::POST,
                format!("/oven/{}/upload/{}", seg(pi)?, seg(filename)?),
            )
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            )
            .body(bytes);
        self.empty(call, StatusCode::OK).await
    }

    /// Reads `piConfig/{filename}` of a Pi back: `GET /oven/{pi}/download/{filename}`.
    pub async fn download_pi_file(&self, pi: &str, filename: &str) -> Result<Vec<u8>, Error> {
        let call = self.call(
            Method::GET,
            format!("/oven/{}/download/{}", seg(pi)?, seg(filename)?),
        );
        Ok(self.send(call, StatusCode::OK).await?.body.to_vec())
    }

    /// Sets cloud-init file `file` (`meta-data`, `user-data`, `vendor-data` or
    /// `network-config`) of a Pi in the oven: `PUT /oven/{pi}/cloud-init/{file}` (an addition).
    pub async fn set_cloud_init(&self, pi: &str, file: &str, data: Vec<u8>) -> Result<(), Error> {
        let call = self
            .call(
                Method::PUT,
                format!("/oven/{}/cloud-init/{}", seg(pi)?, seg(file)?),
            )
            .header(CONTENT_TYPE, HeaderValue::from_static("text/plain"))
            .body(data);
        self.empty(call, StatusCode::OK).await
    }

    /// What a Pi in the oven is served for cloud-init file `file` (its own or the default):
    /// `GET /oven/{pi}/cloud-init/{file}` (an addition).
    pub async fn cloud_init(&self, pi: &str, file: &str) -> Result<Vec<u8>, Error> {
        let call = self.call(
            Method::GET,
            format!("/oven/{}/cloud-init/{}", seg(pi)?, seg(file)?),
        );
        Ok(self.send(call, StatusCode::OK).await?.body.to_vec())
    }

    /// Removes cloud-init file `file` of a Pi in the oven (the default is served again):
    /// `DELETE /oven/{pi}/cloud-init/{file}` (an addition).
    pub async fn delete_cloud_init(&self, pi: &str, file: &str) -> Result<(), Error> {
        let call = self.call(
            Method::DELETE,
            format!("/oven/{}/cloud-init/{}", seg(pi)?, seg(file)?),
        );
        self.empty(call, StatusCode::OK).await
    }

    // ----- disks -----

    /// Creates a disk: `POST /disks`, expects 201 and the disk. Size ≤ 0 → 400.
    pub async fn create_disk(&self, request: &CreateDiskRequest) -> Result<Disk, Error> {
        let call = self.call(Method::POST, "/disks".into()).json(request);
        self.json(call, StatusCode::CREATED).await
    }

    /// A disk: `GET /disks/{id}`; unknown → 404.
    pub async fn disk(&self, id: &str) -> Result<Disk, Error> {
        let call = self.call(Method::GET, format!("/disks/{}", seg(id)?));
        self.json(call, StatusCode::OK).await
    }

    /// Whether a disk exists: `GET /disks/{id}` answers 200. 404 → false, and so is 400 (an
    /// id that is no disk id names no disk; the old Go client's `DiskExists` was "status ==
    /// 200"); other failures are errors.
    pub async fn disk_exists(&self, id: &str) -> Result<bool, Error> {
        match self.disk(id).await {
            Ok(_) => Ok(true),
            Err(e)
                if e.is_not_found()
                    || matches!(
                        e.kind(),
                        Some(ErrorKind::InvalidName | ErrorKind::InvalidRequest)
                    ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Every disk: `GET /disks`.
    pub async fn disks(&self) -> Result<DiskList, Error> {
        let call = self.call(Method::GET, "/disks".into());
        self.json(call, StatusCode::OK).await
    }

    /// Deletes a disk: `DELETE /disks/{id}`, expects 200 (also for an unknown disk);
    /// attached → 409.
    pub async fn delete_disk(&self, id: &str) -> Result<(), Error> {
        let call = self.call(Method::DELETE, format!("/disks/{}", seg(id)?));
        self.empty(call, StatusCode::OK).await
    }

    /// Attaches a disk to a Pi: `POST /oven/{pi}/disks` `{"diskId"}`, expects 200.
    pub async fn attach_disk(&self, pi: &str, disk: &str) -> Result<(), Error> {
        let call = self
            .call(Method::POST, format!("/oven/{}/disks", seg(pi)?))
            .json(&AttachDiskRequest {
                disk_id: disk.to_owned(),
            });
        self.empty(call, StatusCode::OK).await
    }

    /// Detaches a disk from a Pi: `DELETE /oven/{pi}/disks/{disk}`, expects 200;
    /// the root disk → 403.
    pub async fn detach_disk(&self, pi: &str, disk: &str) -> Result<(), Error> {
        let call = self.call(
            Method::DELETE,
            format!("/oven/{}/disks/{}", seg(pi)?, seg(disk)?),
        );
        self.empty(call, StatusCode::OK).await
    }

    /// Grows a detached disk: `POST /disks/{id}/resize` `{"size"}`, expects 200 and the disk.
    pub async fn resize_disk(&self, id: &str, size_mib: i64) -> Result<Disk, Error> {
        let call = self
            .call(Method::POST, format!("/disks/{}/resize", seg(id)?))
            .json(&ResizeDiskRequest { size: size_mib });
        self.json(call, StatusCode::OK).await
    }

    /// Takes a snapshot of a data disk: `POST /disks/{id}/snapshots` `{"metadata"}`, expects
    /// 201 and the snapshot.
    pub async fn snapshot_disk(&self, id: &str, metadata: &Metadata) -> Result<Snapshot, Error> {
        let call = self
            .call(Method::POST, format!("/disks/{}/snapshots", seg(id)?))
            .json(&CreateSnapshotRequest {
                metadata: metadata.clone(),
            });
        self.json(call, StatusCode::CREATED).await
    }

    /// A disk's snapshots, oldest first: `GET /disks/{id}/snapshots`.
    pub async fn disk_snapshots(&self, id: &str) -> Result<SnapshotList, Error> {
        let call = self.call(Method::GET, format!("/disks/{}/snapshots", seg(id)?));
        self.json(call, StatusCode::OK).await
    }

    /// One snapshot: `GET /snapshots/{id}` (404 unknown).
    pub async fn snapshot(&self, id: &str) -> Result<Snapshot, Error> {
        let call = self.call(Method::GET, format!("/snapshots/{}", seg(id)?));
        self.json(call, StatusCode::OK).await
    }

    /// Deletes a snapshot: `DELETE /snapshots/{id}`, expects 200 (404 unknown).
    pub async fn delete_snapshot(&self, id: &str) -> Result<(), Error> {
        let call = self.call(Method::DELETE, format!("/snapshots/{}", seg(id)?));
        self.empty(call, StatusCode::OK).await
    }

    /// Replaces a detached disk's image with a copy of one of its snapshots:
    /// `POST /disks/{id}/restore` `{"snapshot"}`, expects 200 and the disk.
    pub async fn restore_disk(&self, id: &str, snapshot: &str) -> Result<Disk, Error> {
        let call = self
            .call(Method::POST, format!("/disks/{}/restore", seg(id)?))
            .json(&RestoreDiskRequest {
                snapshot: snapshot.to_owned(),
            });
        self.json(call, StatusCode::OK).await
    }

    /// Replaces a disk's metadata: `PUT /disks/{id}/metadata`, expects 200 and the disk.
    pub async fn set_disk_metadata(&self, id: &str, metadata: &Metadata) -> Result<Disk, Error> {
        let call = self
            .call(Method::PUT, format!("/disks/{}/metadata", seg(id)?))
            .json(metadata);
        self.json(call, StatusCode::OK).await
    }

    // ----- bakeforms -----

    /// Uploads an SD-card image as a bakeform: `POST /bakeforms/{name}`, expects 201.
    ///
    /// The file is streamed (never read whole into memory) with
    /// `Content-Type: application/x-raw-disk-image` and its `Content-Length`; `progress`
    /// hears about every chunk. A name that exists → [`Error::Status`] 403.
    ///
    /// Before streaming, `GET /bakeforms/{name}` checks whether the name is taken: if it is,
    /// the upload is not sent and the result is that same 403 (message `bakeform <name>
    /// already exists`), so gigabytes are not sent only to be refused — and a server that
    /// refuses early and closes the connection cannot turn the 403 into a broken pipe.
    /// Any other answer to the check (404, or 405 from a server without that route) goes on
    /// with the upload.
    pub async fn upload_bakeform(
        &self,
        name: &str,
        image: &Path,
        progress: Option<ProgressFn>,
    ) -> Result<Bakeform, Error> {
        let io_error = |source| Error::Io {
            path: image.to_path_buf(),
            source,
        };
        let route = format!("/bakeforms/{}", seg(name)?);
        let file = tokio::fs::File::open(image).await.map_err(io_error)?;
        if self.bakeform(name).await.is_ok() {
            return Err(Error::Status {
                method: Method::POST.to_string(),
                url: self.url(&route),
                status: StatusCode::FORBIDDEN.as_u16(),
                message: format!("bakeform {name} already exists"),
                code: Some(ErrorKind::BakeformExists),
            });
        }
        let total = file.metadata().await.map_err(io_error)?.len();
        let mut progress = progress;
        if let Some(report) = progress.as_mut() {
            report(Progress { sent: 0, total });
        }
        let mut sent = 0u64;
        let shown = image.display().to_string();
        let stream = ReaderStream::with_capacity(file, UPLOAD_CHUNK).map(move |chunk| {
            match &chunk {
                Ok(bytes) => {
                    sent += bytes.len() as u64;
                    if let Some(report) = progress.as_mut() {
                        report(Progress { sent, total });
                    }
                }
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("reading {shown}: {e}"),
                    ));
                }
            }
            chunk
        });
        let call = self
            .call(Method::POST, route)
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static(RAW_IMAGE_CONTENT_TYPE),
            )
            .header(CONTENT_LENGTH, HeaderValue::from(total))
            .body(reqwest::Body::wrap_stream(stream))
            .timeout(self.upload_timeout);
        self.json(call, StatusCode::CREATED).await
    }

    /// Deletes a bakeform: `DELETE /bakeforms/{name}`, expects 200. Unknown → 404;
    /// used by a baked Pi → 409.
    pub async fn delete_bakeform(&self, name: &str) -> Result<(), Error> {
        let call = self.call(Method::DELETE, format!("/bakeforms/{}", seg(name)?));
        self.empty(call, StatusCode::OK).await
    }

    /// Every bakeform: `GET /bakeforms`.
    pub async fn bakeforms(&self) -> Result<BakeformMap, Error> {
        let call = self.call(Method::GET, "/bakeforms".into());
        self.json(call, StatusCode::OK).await
    }

    /// One bakeform with its import state: `GET /bakeforms/{name}`; unknown → 404.
    pub async fn bakeform(&self, name: &str) -> Result<Bakeform, Error> {
        let call = self.call(Method::GET, format!("/bakeforms/{}", seg(name)?));
        self.json(call, StatusCode::OK).await
    }

    /// Events after `since`, oldest first: `GET /events?since=<id>&limit=<n>`.
    pub async fn events(&self, since: i64, limit: Option<u32>) -> Result<EventList, Error> {
        let mut path = format!("/events?since={since}");
        if let Some(limit) = limit {
            path.push_str(&format!("&limit={limit}"));
        }
        let call = self.call(Method::GET, path);
        self.json(call, StatusCode::OK).await
    }

    /// A Pi's boot timeline, newest boot first: `GET /pis/{pi}/boots`.
    pub async fn boots(&self, pi: &str) -> Result<BootList, Error> {
        let call = self.call(Method::GET, format!("/pis/{}/boots", seg(pi)?));
        self.json(call, StatusCode::OK).await
    }

    /// Follows live events (`GET /events/stream`, Server-Sent Events): those after `since`
    /// when given, else those from now on. The stream has no timeout.
    pub async fn follow_events(&self, since: Option<i64>) -> Result<EventStream, Error> {
        let mut path = "/events/stream".to_owned();
        if let Some(since) = since {
            path.push_str(&format!("?since={since}"));
        }
        let url = self.url(&path);
        let mut request = self.http.get(&url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|source| transport_error(&Method::GET, &url, source))?;
        let status = response.status();
        if status != StatusCode::OK {
            let body = response.bytes().await.unwrap_or_default();
            let (message, code) = match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(error) => (error.error, error.code),
                Err(_) => (excerpt(&body), None),
            };
            return Err(Error::Status {
                method: "GET".into(),
                url,
                status: status.as_u16(),
                message,
                code,
            });
        }
        Ok(EventStream::new(url, response))
    }

    // ----- plumbing -----

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    fn call(&self, method: Method, path: String) -> Call {
        let url = self.url(&path);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .timeout(self.timeout);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        Call {
            method,
            url,
            request,
        }
    }

    async fn send(&self, call: Call, expected: StatusCode) -> Result<Reply, Error> {
        let Call {
            method,
            url,
            request,
        } = call;
        let transport = |source: reqwest::Error| transport_error(&method, &url, source);
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?;
        if status == expected {
            return Ok(Reply {
                method,
                url,
                status,
                body,
            });
        }
        if status.is_success() || status.is_informational() || status.is_redirection() {
            return Err(Error::Contract {
                method: method.to_string(),
                url,
                status: status.as_u16(),
                detail: format!("expected status {}", expected.as_u16()),
                body_excerpt: excerpt(&body),
            });
        }
        let (message, code) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(error) => (error.error, error.code),
            Err(_) if body.is_empty() => (
                status
                    .canonical_reason()
                    .unwrap_or("no message")
                    .to_lowercase(),
                None,
            ),
            Err(_) => (excerpt(&body), None),
        };
        Err(Error::Status {
            method: method.to_string(),
            url,
            status: status.as_u16(),
            message,
            code,
        })
    }

    async fn json<T: DeserializeOwned>(
        &self,
        call: Call,
        expected: StatusCode,
    ) -> Result<T, Error> {
        let reply = self.send(call, expected).await?;
        serde_json::from_slice(&reply.body).map_err(|e| Error::Contract {
            method: reply.method.to_string(),
            url: reply.url,
            status: reply.status.as_u16(),
            detail: format!("invalid json: {e}"),
            body_excerpt: excerpt(&reply.body),
        })
    }

    async fn empty(&self, call: Call, expected: StatusCode) -> Result<(), Error> {
        self.send(call, expected).await.map(|_| ())
    }
}

/// Shows a token as `Some("<redacted>")`, so it never ends up in a log.
fn redacted(token: &Option<String>) -> Option<&'static str> {
    token.as_ref().map(|_| "<redacted>")
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("token", &redacted(&self.token))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("upload_timeout", &self.upload_timeout)
            .field("ca_certs", &self.ca_certs.len())
            .finish()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url)
            .field("token", &redacted(&self.token))
            .field("timeout", &self.timeout)
            .field("upload_timeout", &self.upload_timeout)
            .finish()
    }
}

/// A request about to be sent, with what errors need to name.
struct Call {
    method: Method,
    url: String,
    request: RequestBuilder,
}

impl Call {
    fn json<T: serde::Serialize + ?Sized>(mut self, body: &T) -> Self {
        self.request = self.request.json(body);
        self
    }

    fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.request = self.request.header(name, value);
        self
    }

    fn body(mut self, body: impl Into<reqwest::Body>) -> Self {
        self.request = self.request.body(body);
        self
    }

    fn query<T: serde::Serialize + ?Sized>(mut self, query: &T) -> Self {
        self.request = self.request.query(query);
        self
    }

    fn timeout(mut self, timeout: Duration) -> Self {
        self.request = self.request.timeout(timeout);
        self
    }
}

/// A reply with the expected status.
struct Reply {
    method: Method,
    url: String,
    status: StatusCode,
    body: Bytes,
}

fn transport_error(method: &Method, url: &str, source: reqwest::Error) -> Error {
    if source.is_connect() {
        Error::Connect {
            url: url.to_owned(),
            source,
        }
    } else if source.is_timeout() {
        Error::Timeout {
            url: url.to_owned(),
        }
    } else {
        Error::Transport {
            method: method.to_string(),
            url: url.to_owned(),
            source,
        }
    }
}

/// Percent-encodes one path segment: everything outside `[A-Za-z0-9._-]`, so a name can never
/// change the route. Empty, `.` and `..` cannot be sent at all (URL parsers resolve even their
/// encoded forms as dot segments): [`Error::InvalidName`].
pub(crate) fn seg(name: &str) -> Result<String, Error> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(Error::InvalidName {
            name: name.to_owned(),
        });
    }
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_escaped() {
        let ok = |name| seg(name).expect("valid name");
        assert_eq!(ok("raspbian-11_lite.v2"), "raspbian-11_lite.v2");
        assert_eq!(ok("a/b c"), "a%2Fb%20c");
        assert_eq!(ok("..."), "...");
        assert_eq!(ok("é"), "%C3%A9");
        assert_eq!(ok("?x#y"), "%3Fx%23y");
        for bad in ["", ".", ".."] {
            assert!(
                matches!(seg(bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let builder = ClientBuilder::new("http://127.0.0.1:8080/api/v1").token("s3cret-value");
        let shown = format!("{builder:?}");
        assert!(
            !shown.contains("s3cret-value") && shown.contains("<redacted>"),
            "{shown}"
        );
        let client = builder.build().expect("valid url");
        let shown = format!("{client:?}");
        assert!(
            !shown.contains("s3cret-value") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn base_url_is_checked() {
        assert!(matches!(
            Client::new("ftp://host/api/v1"),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            Client::new("not a url"),
            Err(Error::InvalidUrl { .. })
        ));
        let client = Client::new("http://127.0.0.1:8080/api/v1/").expect("valid url");
        assert_eq!(client.base_url(), "http://127.0.0.1:8080/api/v1");
    }
}
