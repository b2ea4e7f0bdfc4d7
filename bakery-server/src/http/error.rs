//! The one place service errors become HTTP statuses and `{"error": ...}` bodies.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bakery_client::ErrorBody;

use crate::service::ServiceError;

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
        E::NotBaked { .. } | E::BakeformExists(_) | E::RootDisk { .. } => StatusCode::FORBIDDEN,
        E::PiNotFound(_)
        | E::PiNotInOven(_)
        | E::NoFreePi
        | E::BakeformNotFound(_)
        | E::DiskNotFound(_)
        | E::DiskNotAttached { .. }
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
        E::InsufficientSpace { .. } | E::BelowMinFreeSpace { .. } | E::NoSpaceLeft { .. } => {
            StatusCode::INSUFFICIENT_STORAGE
        }
        E::Power(_) => StatusCode::BAD_GATEWAY,
        E::Db(_) | E::Io { .. } | E::Imaging(_) | E::Export(_) | E::Task(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status = status_of(&self);
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, status = status.as_u16(), "request refused");
        }
        (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}
