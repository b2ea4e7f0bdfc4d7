//! Thin handlers: extract, call the service, shape the reply.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bakery_client::{
    AttachDiskRequest, BakeRequest, BakeformMap, CreateDiskRequest, CreateSnapshotRequest,
    DiskList, Metadata, PiInfo, PiMap, PiState, ResizeDiskRequest, RestoreDiskRequest, Snapshot,
    SnapshotList,
};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use super::extract::{JsonBody, OptionalJsonBody, PathArgs, QueryArgs, checked};
use bakery_core::boot::{BootFile, BootFiles};
use bakery_core::domain::names::{BakeformName, DiskId, Serial, SnapshotId};
use bakery_core::imaging;
use bakery_core::service::{Bakery, DEFAULT_WAIT, ServiceError, UploadHead, to_completion};

use super::error::ApiError;

/// The state every handler gets.
pub type AppState = State<Arc<Bakery>>;

type Reply<T> = Result<T, ApiError>;

fn to_map(pis: Vec<PiInfo>) -> PiMap {
    pis.into_iter().map(|p| (p.id.clone(), p)).collect()
}

fn boot_reply(file: BootFile) -> Response {
    let (body, len) = match file {
        BootFile::Bytes(bytes) => {
            let len = bytes.len() as u64;
            (Body::from(bytes), len)
        }
        BootFile::File { file, len } => {
            let file = tokio::fs::File::from_std(file);
            (
                Body::from_stream(tokio_util::io::ReaderStream::new(file.take(len))),
                len,
            )
        }
    };
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    )
        .into_response()
}

/// `GET /files/{piId}/{*path}`: a boot file for a Pi.
pub async fn pi_file(
    State(bakery): AppState,
    ConnectInfo(conn): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    PathArgs((serial, path)): PathArgs<(String, String)>,
) -> Reply<Response> {
    let peer = super::forwarded::boot_peer(conn, &headers);
    let file = to_completion(async move {
        let full = format!("{serial}/{path}");
        Ok(BootFiles::new(bakery).open_path(&full, peer).await?)
    })
    .await?;
    Ok(boot_reply(file))
}

/// `GET /files/{name}`: a root-level boot file (`bootcode.bin`).
pub async fn root_file(
    State(bakery): AppState,
    PathArgs(name): PathArgs<String>,
) -> Reply<Response> {
    let file = BootFiles::new(bakery).open(None, &name, None).await?;
    Ok(boot_reply(file))
}

/// `GET /fridge`.
pub async fn fridge(State(bakery): AppState) -> Reply<Json<PiMap>> {
    Ok(Json(to_map(
        bakery.pis_where(|s| s == PiState::Fridge).await?,
    )))
}

/// `POST /fridge`: bake a Pi (202).
pub async fn bake(
    State(bakery): AppState,
    JsonBody(request): JsonBody<BakeRequest>,
) -> Reply<(StatusCode, Json<PiInfo>)> {
    let pi = to_completion(async move { bakery.bake(request).await }).await?;
    Ok((StatusCode::ACCEPTED, Json(pi)))
}

/// `GET /oven`.
pub async fn oven(State(bakery): AppState) -> Reply<Json<PiMap>> {
    Ok(Json(to_map(
        bakery.pis_where(|s| s != PiState::Fridge).await?,
    )))
}

/// Query of `GET /oven/{piId}`.
#[derive(Debug, Deserialize)]
pub struct WaitArgs {
    /// `baked` (or `ready`): long-poll until the Pi is baked.
    wait: Option<String>,
    /// Seconds (`60` or `60s`), default 60, at most 600.
    timeout: Option<String>,
}

fn parse_timeout(value: Option<&str>) -> Reply<Duration> {
    let Some(v) = value else {
        return Ok(DEFAULT_WAIT);
    };
    let secs: f64 =
        v.strip_suffix('s').unwrap_or(v).parse().map_err(|_| {
            ApiError::BadRequest(format!("invalid timeout {v:?}: expected seconds"))
        })?;
    Duration::try_from_secs_f64(secs)
        .map(|d| d.min(bakery_core::service::MAX_WAIT))
        .map_err(|_| ApiError::BadRequest(format!("invalid timeout {v:?}: expected seconds")))
}

/// Whether a `wait` condition is the one there is: the state `baked`, or `ready`, its alias.
fn waits_for_baked(wait: &str) -> bool {
    wait == PiState::Baked.as_str() || wait == "ready"
}

/// `GET /oven/{piId}[?wait=baked&timeout=<s>]`: any Pi bakery knows, a fridge Pi too (with
/// `status: 1`, as the first, Go, server answered); only an unknown serial is 404.
pub async fn oven_pi(
    State(bakery): AppState,
    PathArgs(serial): PathArgs<String>,
    QueryArgs(args): QueryArgs<WaitArgs>,
) -> Reply<Json<PiInfo>> {
    match args.wait.as_deref() {
        None => Ok(Json(bakery.pi(&checked(&serial)?).await?)),
        Some(wait) if waits_for_baked(wait) => {
            let timeout = parse_timeout(args.timeout.as_deref())?;
            Ok(Json(bakery.wait_baked(&checked(&serial)?, timeout).await?))
        }
        Some(other) => Err(ApiError::BadRequest(format!(
            "unknown wait condition {other:?}: expected \"baked\""
        ))),
    }
}

/// `DELETE /oven/{piId}`: unbake.
pub async fn unbake(
    State(bakery): AppState,
    PathArgs(serial): PathArgs<String>,
) -> Reply<StatusCode> {
    let serial: Serial = checked(&serial)?;
    to_completion(async move { bakery.unbake(&serial).await }).await?;
    Ok(StatusCode::OK)
}

/// `POST /oven/{piId}/powercycle`.
pub async fn power_cycle(
    State(bakery): AppState,
    PathArgs(serial): PathArgs<String>,
) -> Reply<StatusCode> {
    let serial: Serial = checked(&serial)?;
    to_completion(async move { bakery.power_cycle(&serial).await }).await?;
    Ok(StatusCode::OK)
}

/// `POST /oven/{piId}/reset` (202).
pub async fn reset(
    State(bakery): AppState,
    PathArgs(serial): PathArgs<String>,
) -> Reply<(StatusCode, Json<PiInfo>)> {
    let serial: Serial = checked(&serial)?;
    let pi = to_completion(async move { bakery.reset(&serial).await }).await?;
    Ok((StatusCode::ACCEPTED, Json(pi)))
}

/// `PUT /pis/{piId}/labels`.
pub async fn pi_labels(
    State(bakery): AppState,
    PathArgs(serial): PathArgs<String>,
    JsonBody(labels): JsonBody<bakery_client::Labels>,
) -> Reply<Json<PiInfo>> {
    Ok(Json(
        bakery.set_pi_labels(&checked(&serial)?, labels).await?,
    ))
}

/// `POST /pis/{piId}/power/status`: asks the PPI now.
pub async fn pi_power_status(
    State(bakery): AppState,
    PathArgs(serial): PathArgs<String>,
) -> Reply<Json<PiInfo>> {
    Ok(Json(bakery.refresh_power_state(&checked(&serial)?).await?))
}

/// `PUT /oven/{piId}/metadata`.
pub async fn pi_metadata(
    State(bakery): AppState,
    PathArgs(serial): PathArgs<String>,
    JsonBody(metadata): JsonBody<Metadata>,
) -> Reply<Json<PiInfo>> {
    Ok(Json(
        bakery.set_pi_metadata(&checked(&serial)?, metadata).await?,
    ))
}

/// `GET /oven/{piId}/cloud-init/{file}`: what the Pi is served for that file.
pub async fn cloud_init(
    State(bakery): AppState,
    PathArgs((serial, file)): PathArgs<(String, String)>,
) -> Reply<Response> {
    let data = bakery.cloud_init(&checked(&serial)?, &file).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], data).into_response())
}

/// `PUT /oven/{piId}/cloud-init/{file}`: sets the file (raw body).
pub async fn set_cloud_init(
    State(bakery): AppState,
    PathArgs((serial, file)): PathArgs<(String, String)>,
    body: Body,
) -> Reply<StatusCode> {
    let limit = bakery_core::domain::cloudinit::MAX_FILE_BYTES;
    let data = axum::body::to_bytes(body, limit + 1)
        .await
        .map_err(|_| ApiError::BodyTooLarge {
            limit: limit as u64,
        })?;
    bakery
        .set_cloud_init(&checked(&serial)?, &file, Some(data.to_vec()))
        .await?;
    Ok(StatusCode::OK)
}

/// `DELETE /oven/{piId}/cloud-init/{file}`: back to the default.
pub async fn delete_cloud_init(
    State(bakery): AppState,
    PathArgs((serial, file)): PathArgs<(String, String)>,
) -> Reply<StatusCode> {
    bakery
        .set_cloud_init(&checked(&serial)?, &file, None)
        .await?;
    Ok(StatusCode::OK)
}

/// `GET /cloud-init/{file}` (outside `/api/v1`, no token: a Pi has none): the file of the
/// baked Pi that network-booted from the caller's address.
pub async fn nocloud_file(
    State(bakery): AppState,
    ConnectInfo(conn): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    PathArgs(file): PathArgs<String>,
) -> Reply<Response> {
    let peer = super::forwarded::boot_peer(conn, &headers)
        .unwrap_or(conn.ip())
        .to_canonical();
    let data = bakery.cloud_init_for(peer, &file).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], data).into_response())
}

/// `POST /oven/{piId}/disks`: attach.
pub async fn attach_disk(
    State(bakery): AppState,
    PathArgs(serial): PathArgs<String>,
    JsonBody(request): JsonBody<AttachDiskRequest>,
) -> Reply<StatusCode> {
    let serial: Serial = checked(&serial)?;
    // A disk id that is not one names no disk: 404, as for an unknown disk.
    let disk = DiskId::parse(&request.disk_id)
        .map_err(|_| ServiceError::DiskNotFound(request.disk_id.clone()))?;
    to_completion(async move { bakery.attach_disk(&serial, &disk).await }).await?;
    Ok(StatusCode::OK)
}

/// `DELETE /oven/{piId}/disks/{diskId}`: detach.
pub async fn detach_disk(
    State(bakery): AppState,
    PathArgs((serial, disk)): PathArgs<(String, String)>,
) -> Reply<StatusCode> {
    let (serial, disk): (Serial, DiskId) = (checked(&serial)?, checked(&disk)?);
    to_completion(async move { bakery.detach_disk(&serial, &disk).await }).await?;
    Ok(StatusCode::OK)
}

/// `POST /oven/{piId}/upload/{filename}`: raw bytes into `piConfig/`.
pub async fn upload_pi_file(
    State(bakery): AppState,
    PathArgs((serial, name)): PathArgs<(String, String)>,
    body: Body,
) -> Reply<StatusCode> {
    let serial: Serial = checked(&serial)?;
    let stream = body.into_data_stream();
    to_completion(async move { bakery.upload_pi_file(&serial, &name, stream).await }).await?;
    Ok(StatusCode::OK)
}

/// `GET /oven/{piId}/download/{filename}`.
pub async fn download_pi_file(
    State(bakery): AppState,
    PathArgs((serial, name)): PathArgs<(String, String)>,
) -> Reply<Response> {
    let bytes = bakery.download_pi_file(&checked(&serial)?, &name).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// `GET /pis`: every known Pi.
pub async fn pis(State(bakery): AppState) -> Reply<Json<PiMap>> {
    Ok(Json(to_map(bakery.pis_where(|_| true).await?)))
}

/// `GET /pis/{piId}`.
pub async fn pi(
    State(bakery): AppState,
    PathArgs(serial): PathArgs<String>,
) -> Reply<Json<PiInfo>> {
    Ok(Json(bakery.pi(&checked(&serial)?).await?))
}

/// `GET /bakeforms`.
pub async fn bakeforms(State(bakery): AppState) -> Reply<Json<BakeformMap>> {
    let list = bakery.bakeforms().await?;
    Ok(Json(
        list.into_iter().map(|b| (b.name.clone(), b)).collect(),
    ))
}

/// `GET /bakeforms/{name}`.
pub async fn bakeform(
    State(bakery): AppState,
    PathArgs(name): PathArgs<String>,
) -> Reply<Json<bakery_client::Bakeform>> {
    Ok(Json(bakery.bakeform(&checked(&name)?).await?))
}

/// `POST /bakeforms/{name}`: upload an image, raw or packed as `.img.gz`, `.img.xz` or `.zip`
/// (by `Content-Type` or magic bytes) (201). A refusal answers at once, before the body is
/// read (and instead of `100 Continue`), and closes the connection.
pub async fn upload_bakeform(
    State(bakery): AppState,
    PathArgs(name): PathArgs<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let head = UploadHead {
        declared: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(imaging::packing_of_content_type),
        announced: headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
        expects_continue: headers
            .get(header::EXPECT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue")),
    };
    let stream = body.into_data_stream();
    let name = match BakeformName::parse(&name) {
        Ok(name) => name,
        Err(e) => return refused_upload(bakery.refuse_upload(stream, &head, e.into())),
    };
    match to_completion(async move { bakery.import_bakeform(&name, stream, head).await }).await {
        Ok(bakeform) => (StatusCode::CREATED, Json(bakeform)).into_response(),
        Err(e) => refused_upload(e),
    }
}

/// The answer to a refused or failed upload, closing the connection.
fn refused_upload(error: ServiceError) -> Response {
    let mut response = ApiError::Service(error).into_response();
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// `DELETE /bakeforms/{name}`.
pub async fn delete_bakeform(
    State(bakery): AppState,
    PathArgs(name): PathArgs<String>,
) -> Reply<StatusCode> {
    let name: BakeformName = checked(&name)?;
    to_completion(async move { bakery.delete_bakeform(&name).await }).await?;
    Ok(StatusCode::OK)
}

/// `GET /disks`.
pub async fn disks(State(bakery): AppState) -> Reply<Json<DiskList>> {
    Ok(Json(bakery.disks().await?))
}

/// `POST /disks` (201).
pub async fn create_disk(
    State(bakery): AppState,
    JsonBody(request): JsonBody<CreateDiskRequest>,
) -> Reply<(StatusCode, Json<bakery_client::Disk>)> {
    let disk =
        to_completion(async move { bakery.create_disk(request.size, request.ephemeral).await })
            .await?;
    Ok((StatusCode::CREATED, Json(disk)))
}

/// `GET /disks/{diskId}`.
pub async fn disk(
    State(bakery): AppState,
    PathArgs(id): PathArgs<String>,
) -> Reply<Json<bakery_client::Disk>> {
    Ok(Json(bakery.disk(&checked(&id)?).await?))
}

/// `DELETE /disks/{diskId}`.
pub async fn delete_disk(
    State(bakery): AppState,
    PathArgs(id): PathArgs<String>,
) -> Reply<StatusCode> {
    let id: DiskId = checked(&id)?;
    to_completion(async move { bakery.delete_disk(&id).await }).await?;
    Ok(StatusCode::OK)
}

/// `POST /disks/{diskId}/resize`.
pub async fn resize_disk(
    State(bakery): AppState,
    PathArgs(id): PathArgs<String>,
    JsonBody(request): JsonBody<ResizeDiskRequest>,
) -> Reply<Json<bakery_client::Disk>> {
    let id: DiskId = checked(&id)?;
    let disk = to_completion(async move { bakery.resize_disk(&id, request.size).await }).await?;
    Ok(Json(disk))
}

/// `PUT /disks/{diskId}/metadata`.
pub async fn disk_metadata(
    State(bakery): AppState,
    PathArgs(id): PathArgs<String>,
    JsonBody(metadata): JsonBody<Metadata>,
) -> Reply<Json<bakery_client::Disk>> {
    Ok(Json(
        bakery.set_disk_metadata(&checked(&id)?, metadata).await?,
    ))
}

/// `POST /disks/{diskId}/snapshots` (201; the body may be left out).
pub async fn snapshot_disk(
    State(bakery): AppState,
    PathArgs(id): PathArgs<String>,
    OptionalJsonBody(request): OptionalJsonBody<CreateSnapshotRequest>,
) -> Reply<(StatusCode, Json<Snapshot>)> {
    let id: DiskId = checked(&id)?;
    let snapshot =
        to_completion(async move { bakery.snapshot_disk(&id, request.metadata).await }).await?;
    Ok((StatusCode::CREATED, Json(snapshot)))
}

/// `GET /disks/{diskId}/snapshots`.
pub async fn disk_snapshots(
    State(bakery): AppState,
    PathArgs(id): PathArgs<String>,
) -> Reply<Json<SnapshotList>> {
    Ok(Json(bakery.disk_snapshots(&checked(&id)?).await?))
}

/// `POST /disks/{diskId}/restore`.
pub async fn restore_disk(
    State(bakery): AppState,
    PathArgs(id): PathArgs<String>,
    JsonBody(request): JsonBody<RestoreDiskRequest>,
) -> Reply<Json<bakery_client::Disk>> {
    let (id, snapshot): (DiskId, SnapshotId) = (checked(&id)?, checked(&request.snapshot)?);
    let disk = to_completion(async move { bakery.restore_disk(&id, &snapshot).await }).await?;
    Ok(Json(disk))
}

/// `GET /snapshots/{snapshotId}`.
pub async fn snapshot(
    State(bakery): AppState,
    PathArgs(id): PathArgs<String>,
) -> Reply<Json<Snapshot>> {
    Ok(Json(bakery.snapshot(&checked(&id)?).await?))
}

/// `DELETE /snapshots/{snapshotId}`.
pub async fn delete_snapshot(
    State(bakery): AppState,
    PathArgs(id): PathArgs<String>,
) -> Reply<StatusCode> {
    let id: SnapshotId = checked(&id)?;
    to_completion(async move { bakery.delete_snapshot(&id).await }).await?;
    Ok(StatusCode::OK)
}

/// Any other path.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

/// A known path with the wrong method.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}
