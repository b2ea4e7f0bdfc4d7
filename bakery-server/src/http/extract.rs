//! Extractors whose rejections are service errors (so they get the JSON error body): JSON
//! bodies parsed regardless of content type (also ones that may be left out), and query
//! strings; and [`checked`], the one parse of a name from a request into its checked type.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use bakery_core::domain::NameError;
use bakery_core::service::ServiceError;

use super::error::ApiError;

/// The limit of JSON bodies.
pub const JSON_LIMIT: usize = 64 * 1024;

/// A JSON body (any content type), at most [`JSON_LIMIT`] bytes.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = limited_bytes(req, state).await?;
        parse(&bytes).map(JsonBody)
    }
}

/// The body, at most [`JSON_LIMIT`] bytes (the router's body limit).
async fn limited_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge {
                limit: JSON_LIMIT as u64,
            }
        } else {
            ApiError::BadRequest(rejection.body_text())
        }
    })
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid json body: {e}")))
}

/// A JSON body that may be left out: an empty (or all-whitespace) body is `T::default()`.
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJsonBody<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = limited_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        parse(&bytes).map(OptionalJsonBody)
    }
}

/// A query string.
#[derive(Debug)]
pub struct QueryArgs<T>(pub T);

impl<T, S> FromRequestParts<S> for QueryArgs<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| QueryArgs(q.0))
            .map_err(|e| ApiError::BadRequest(format!("invalid query: {}", e.body_text())))
    }
}

/// Path parameters (percent-decoded; names are checked by the handler with [`checked`]).
#[derive(Debug)]
pub struct PathArgs<T>(pub T);

impl<T, S> FromRequestParts<S> for PathArgs<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| PathArgs(p.0))
            .map_err(|e| ApiError::BadRequest(format!("invalid path: {}", e.body_text())))
    }
}

/// Parses a name from a request (a path parameter or a body field) into its checked type
/// (`Serial`, `BakeformName`, `DiskId`, `SnapshotId`): a bad one is answered 400 with the
/// [`NameError`] naming it.
pub fn checked<T>(raw: &str) -> Result<T, ApiError>
where
    T: std::str::FromStr<Err = NameError>,
{
    raw.parse()
        .map_err(|e| ApiError::Service(ServiceError::InvalidName(e)))
}
