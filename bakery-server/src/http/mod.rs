//! The HTTP API (`/api/v1`): the only module that knows axum.

pub mod auth;
mod error;
mod extract;
mod forwarded;
mod handlers;
mod observe;
pub mod openapi;
mod status;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};

pub use error::kind_of;
pub use extract::JSON_LIMIT;

use bakery_core::service::Bakery;

/// The API router with every route of API v1 and bakery's additions, guarded by `auth`
/// when given.
///
/// Authentication runs inside the request metrics, so refused requests (401, 403) are
/// counted by matched route and status like any other answer.
pub fn router(bakery: Arc<Bakery>, auth: Option<auth::Auth>) -> Router {
    use handlers as h;
    let api = Router::new()
        .route("/files/{name}", get(h::root_file))
        .route("/files/{pi_id}/{*path}", get(h::pi_file))
        .route("/fridge", get(h::fridge).post(h::bake))
        .route("/oven", get(h::oven))
        .route("/oven/{pi_id}", get(h::oven_pi).delete(h::unbake))
        .route("/oven/{pi_id}/powercycle", post(h::power_cycle))
        .route("/oven/{pi_id}/reset", post(h::reset))
        .route("/oven/{pi_id}/metadata", put(h::pi_metadata))
        .route(
            "/oven/{pi_id}/cloud-init/{file}",
            get(h::cloud_init)
                .put(h::set_cloud_init)
                .delete(h::delete_cloud_init),
        )
        .route("/oven/{pi_id}/disks", post(h::attach_disk))
        .route(
            "/oven/{pi_id}/disks/{disk_id}",
            axum::routing::delete(h::detach_disk),
        )
        .route("/oven/{pi_id}/upload/{filename}", post(h::upload_pi_file))
        .route(
            "/oven/{pi_id}/download/{filename}",
            get(h::download_pi_file),
        )
        .route("/pis", get(h::pis))
        .route("/pis/{pi_id}", get(h::pi))
        .route("/pis/{pi_id}/labels", put(h::pi_labels))
        .route("/pis/{pi_id}/power/status", post(h::pi_power_status))
        .route("/bakeforms", get(h::bakeforms))
        .route(
            "/bakeforms/{name}",
            get(h::bakeform)
                .post(h::upload_bakeform)
                .delete(h::delete_bakeform),
        )
        .route("/disks", get(h::disks).post(h::create_disk))
        .route("/disks/{disk_id}", get(h::disk).delete(h::delete_disk))
        .route("/disks/{disk_id}/resize", post(h::resize_disk))
        .route("/disks/{disk_id}/metadata", put(h::disk_metadata))
        .route(
            "/disks/{disk_id}/snapshots",
            get(h::disk_snapshots).post(h::snapshot_disk),
        )
        .route("/disks/{disk_id}/restore", post(h::restore_disk))
        .route(
            "/snapshots/{snapshot_id}",
            get(h::snapshot).delete(h::delete_snapshot),
        )
        .route("/oven/{pi_id}/boots", get(observe::oven_boots))
        .route("/pis/{pi_id}/boots", get(observe::pi_boots))
        .route("/events", get(observe::events))
        .route("/events/stream", get(observe::event_stream))
        .route("/openapi.json", get(openapi::serve))
        .method_not_allowed_fallback(h::method_not_allowed);
    let routes = Router::new()
        .nest("/api/v1", api)
        .route("/", get(status::index))
        .route("/assets/{file}", get(status::asset))
        .route("/metrics", get(observe::metrics))
        .route("/cloud-init/{file}", get(h::nocloud_file))
        .fallback(h::not_found)
        .layer(DefaultBodyLimit::max(JSON_LIMIT));
    auth::protect(routes, auth)
        .layer(axum::middleware::from_fn_with_state(
            bakery.clone(),
            observe::track,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(bakery)
}

/// Serves the API on `listener` (over TLS with `tls`) until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    bakery: Arc<Bakery>,
    auth: Option<auth::Auth>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service =
        router(bakery, auth).into_make_service_with_connect_info::<std::net::SocketAddr>();
    match tls {
        Some(tls) => {
            use axum::serve::ListenerExt;
            // `tap_io` only so axum's connect-info works for this listener type.
            let listener = tls::TlsListener::new(listener, tls)?.tap_io(|_| {});
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}
