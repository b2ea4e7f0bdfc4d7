//! The one place failures become HTTP statuses and `{"error", "code"}` bodies: a service error
//! is given its [`ErrorKind`] here, and the kind's status ([`ErrorKind::status`]) is the answer.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bakery_client::{ErrorBody, ErrorKind};
use thiserror::Error;

use bakery_core::service::ServiceError;

/// Seconds a client refused with 503 (too many uploads) is told to wait.
const RETRY_AFTER_SECS: &str = "5";

/// The kind of a service error: its `code` on the wire, and through it its status.
pub fn kind_of(error: &ServiceError) -> ErrorKind {
    use ErrorKind as K;
    use ServiceError as E;
    match error {
        E::InvalidName(_) => K::InvalidName,
        E::BadRequest(_) | E::Upload { .. } | E::DiskRule(_) => K::InvalidRequest,
        E::UnknownBakeform(_) => K::UnknownBakeform,
        E::BakeformNotReady { .. } => K::BakeformNotReady,
        E::BadImage { .. } => K::BadImage,
        E::NotBaked { .. } => K::NotBaked,
        E::BakeformExists(_) => K::BakeformExists,
        E::RootDisk { .. } | E::RootDiskSnapshot { .. } => K::RootDisk,
        E::PiNotFound(_) => K::PiNotFound,
        E::PiNotInOven(_) => K::PiNotInOven,
        E::CloudInitNotFound { .. }
        | E::CloudInitNotSet { .. }
        | E::PiFileNotFound { .. }
        | E::BootFileNotFound(_) => K::FileNotFound,
        E::NoFreePi | E::NoMatchingPi(_) => K::NoFreePi,
        E::BakeformNotFound(_) => K::BakeformNotFound,
        E::DiskNotFound(_) => K::DiskNotFound,
        E::DiskNotAttached { .. } => K::DiskNotAttached,
        E::SnapshotNotFound(_) | E::SnapshotOfOtherDisk { .. } => K::SnapshotNotFound,
        E::BakeFailed { .. } => K::BakeFailed,
        E::BakeformInUse { .. } => K::BakeformInUse,
        E::BakeformImporting(_) => K::BakeformImporting,
        E::DiskAttached { .. } => K::DiskAttached,
        E::PiConfigNotDir(_) => K::Conflict,
        E::BodyTooLarge { .. } | E::ImageTooLarge { .. } => K::TooLarge,
        E::DiskOvercommit { .. } | E::BelowMinFreeSpace { .. } | E::NoSpaceLeft { .. } => {
            K::InsufficientStorage
        }
        E::UploadStalled { .. } => K::RequestTimeout,
        E::TooManyUploads { .. } => K::Unavailable,
        E::UploadFailed { cause, .. } => kind_of(cause),
        E::Power(_) => K::PowerFailed,
        E::Db(_)
        | E::Events(_)
        | E::Io { .. }
        | E::Imaging(_)
        | E::Export(_)
        | E::Nbd(_)
        | E::Task(_) => K::Internal,
    }
}

/// What a handler fails with: a service error, or a request the HTTP layer itself refuses.
#[derive(Debug, Error)]
pub enum ApiError {
    /// The service refused or failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The path, query or body cannot be read as the route's input.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request body is larger than the route takes.
    #[error("request body larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// No such route.
    #[error("no route for {0}")]
    RouteNotFound(String),
    /// The route exists, the method does not.
    #[error("method {method} not allowed on {path}")]
    MethodNotAllowed {
        /// The method.
        method: String,
        /// The path.
        path: String,
    },
}

impl ApiError {
    /// The kind of the failure, as the reply's `code` says it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ApiError::Service(error) => kind_of(error),
            ApiError::BadRequest(_) => ErrorKind::InvalidRequest,
            ApiError::BodyTooLarge { .. } => ErrorKind::TooLarge,
            ApiError::RouteNotFound(_) => ErrorKind::NotFound,
            ApiError::MethodNotAllowed { .. } => ErrorKind::MethodNotAllowed,
        }
    }
}

impl From<bakery_core::events::EventsError> for ApiError {
    fn from(error: bakery_core::events::EventsError) -> ApiError {
        ApiError::Service(error.into())
    }
}

impl From<bakery_core::BootError> for ApiError {
    fn from(error: bakery_core::BootError) -> ApiError {
        ApiError::Service(error.into())
    }
}

/// The reply for a failure of `kind`: its status and the `{"error", "code"}` body.
pub fn error_reply(kind: ErrorKind, message: String) -> (StatusCode, Json<ErrorBody>) {
    let status = StatusCode::from_u16(kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(ErrorBody {
            error: message,
            code: Some(kind),
        }),
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = self.kind();
        let (status, body) = error_reply(kind, self.to_string());
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, status = status.as_u16(), code = %kind, "request refused");
        }
        let mut response = (status, body).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}
