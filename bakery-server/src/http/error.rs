//! The one place service errors become HTTP statuses and `{"error": ...}` bodies.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bakery_client::ErrorBody;

use bakery_core::service::ServiceError;

/// Seconds a client refused with 503 (too many uploads) is told to wait.
const RETRY_AFTER_SECS: &str = "5";

/// The HTTP status of a service error.
pub fn status_of(error: &ServiceError) -> StatusCode {
    use ServiceError as E;
    match error {
        E::InvalidName(_)
        | E::BadRequest(_)
        | E::UnknownBakeform(_)
        | E::BakeformNotReady { .. }
        | E::BadImage { .. }
        | E::Upload { .. }
        | E::DiskRule(_) => StatusCode::BAD_REQUEST,
        E::NotBaked { .. }
        | E::BakeformExists(_)
        | E::RootDisk { .. }
        | E::RootDiskSnapshot { .. } => StatusCode::FORBIDDEN,
        E::PiNotFound(_)
        | E::PiNotInOven(_)
        | E::CloudInitNotFound { .. }
        | E::CloudInitNotSet { .. }
        | E::NoFreePi
        | E::NoMatchingPi(_)
        | E::BakeformNotFound(_)
        | E::DiskNotFound(_)
        | E::DiskNotAttached { .. }
        | E::SnapshotNotFound(_)
        | E::SnapshotOfOtherDisk { .. }
        | E::PiFileNotFound { .. }
        | E::BootFileNotFound(_)
        | E::RouteNotFound(_) => StatusCode::NOT_FOUND,
        E::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        E::BakeFailed { .. }
        | E::BakeformInUse { .. }
        | E::BakeformImporting(_)
        | E::DiskAttached { .. }
        | E::PiConfigNotDir(_) => StatusCode::CONFLICT,
        E::BodyTooLarge { .. } | E::ImageTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        E::DiskOvercommit { .. } | E::BelowMinFreeSpace { .. } | E::NoSpaceLeft { .. } => {
            StatusCode::INSUFFICIENT_STORAGE
        }
        E::UploadStalled { .. } => StatusCode::REQUEST_TIMEOUT,
        E::TooManyUploads { .. } => StatusCode::SERVICE_UNAVAILABLE,
        E::UploadFailed { cause, .. } => status_of(cause),
        E::Power(_) => StatusCode::BAD_GATEWAY,
        E::Db(_)
        | E::Events(_)
        | E::Io { .. }
        | E::Imaging(_)
        | E::Export(_)
        | E::Nbd(_)
        | E::Task(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What a handler fails with: a service error, answered by [`status_of`].
#[derive(Debug)]
pub struct ApiError(pub ServiceError);

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> ApiError {
        ApiError(error)
    }
}

impl From<bakery_core::events::EventsError> for ApiError {
    fn from(error: bakery_core::events::EventsError) -> ApiError {
        ApiError(error.into())
    }
}

impl From<bakery_core::BootError> for ApiError {
    fn from(error: bakery_core::BootError) -> ApiError {
        ApiError(error.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let ApiError(error) = self;
        let status = status_of(&error);
        if status.is_server_error() {
            tracing::error!(error = %error, "request failed");
        } else {
            tracing::debug!(error = %error, status = status.as_u16(), "request refused");
        }
        let mut response = (
            status,
            Json(ErrorBody {
                error: error.to_string(),
            }),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}
