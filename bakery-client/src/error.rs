//! The one error type of the HTTP client: what failed talking to a bakery server, and why.

use std::path::PathBuf;

use crate::types::ErrorKind;

/// How many bytes of an unexpected reply body an error keeps.
pub(crate) const EXCERPT_LEN: usize = 240;

/// Everything that can go wrong talking to a bakery server.
///
/// The variants tell apart the cases a caller reacts to differently: the server could not be
/// reached ([`Error::Connect`], [`Error::Timeout`]), the server said no ([`Error::Status`],
/// with its status code and message), and the reply broke the contract ([`Error::Contract`]).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The base URL (or a URL built from it) is not a usable http(s) URL.
    #[error("invalid bakery url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA certificate given to [`crate::ClientBuilder::ca_cert`] is not PEM.
    #[error("invalid ca certificate: {reason}")]
    InvalidCaCert {
        /// What is wrong with it.
        reason: String,
    },
    /// A name (Pi id, disk id, bakeform, file name) that cannot be put in a URL path:
    /// empty, `.` or `..`.
    #[error("invalid name {name:?}: it cannot be sent as a path segment")]
    InvalidName {
        /// The name as given.
        name: String,
    },
    /// The server could not be reached (refused, unresolvable, connect timeout).
    #[error("cannot connect to bakery at {url}: {source}")]
    Connect {
        /// The URL of the request.
        url: String,
        /// The underlying transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The request did not complete in time (also: `wait_baked` reached its deadline).
    #[error("request to {url} timed out")]
    Timeout {
        /// The URL of the request.
        url: String,
    },
    /// The connection broke while the request or reply was under way.
    #[error("{method} {url} failed: {source}")]
    Transport {
        /// The HTTP method of the request.
        method: String,
        /// The URL of the request.
        url: String,
        /// The underlying transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status (4xx/5xx).
    #[error("{method} {url}: server answered {status}: {message}")]
    Status {
        /// The HTTP method of the request.
        method: String,
        /// The URL of the request.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The server's `{"error"}` message, or an excerpt of its body.
        message: String,
        /// The server's `{"code"}`, absent from the original server's replies.
        code: Option<ErrorKind>,
    },
    /// The server's reply is not what the contract says (unexpected success code, bad JSON).
    #[error("{method} {url}: reply {status} breaks the contract: {detail}; body: {body_excerpt:?}")]
    Contract {
        /// The HTTP method of the request.
        method: String,
        /// The URL of the request.
        url: String,
        /// The HTTP status code of the reply.
        status: u16,
        /// What is wrong with the reply.
        detail: String,
        /// The first bytes of the reply body (lossy UTF-8).
        body_excerpt: String,
    },
    /// `wait_baked` found the Pi neither baked nor being baked.
    #[error("pi {pi} is not being baked (it is {state})")]
    NotBaking {
        /// The Pi waited for.
        pi: String,
        /// Its state: `fridge` or `unbaking`.
        state: String,
    },
    /// A local file (an image to upload) could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The blocking facade could not start its private runtime.
    #[error("cannot start the blocking client's runtime: {source}")]
    Runtime {
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The HTTP status of the reply, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } | Error::Contract { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// What kind of failure the server reported: its `code` when it sent one, else the generic
    /// kind of the status ([`ErrorKind::of_status`]); `None` when the server did not answer with
    /// an error status (unreachable, broken reply, local failure).
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Error::Status { code, status, .. } => Some(match code {
                Some(code) if *code != ErrorKind::Unknown => *code,
                _ => ErrorKind::of_status(*status),
            }),
            _ => None,
        }
    }

    /// Whether the server answered 404 Not Found.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Status { status: 404, .. })
    }

    /// Whether the server could not be reached or did not answer in time.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::Timeout { .. })
    }

    /// The server's own message, when it answered with an error status.
    pub fn server_message(&self) -> Option<&str> {
        match self {
            Error::Status { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// The first [`EXCERPT_LEN`] bytes of `body`, as lossy UTF-8.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let end = body.len().min(EXCERPT_LEN);
    let mut text = String::from_utf8_lossy(&body[..end]).into_owned();
    if body.len() > EXCERPT_LEN {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_is_cut_and_marked() {
        let long = vec![b'a'; EXCERPT_LEN + 10];
        let text = excerpt(&long);
        assert_eq!(text.chars().count(), EXCERPT_LEN + 1);
        assert!(text.ends_with('…'));
        assert_eq!(excerpt(b"short"), "short");
    }

    #[test]
    fn not_found_is_only_404() {
        let status = |status| Error::Status {
            method: "GET".into(),
            url: "u".into(),
            status,
            message: String::new(),
            code: None,
        };
        assert!(status(404).is_not_found());
        assert!(!status(403).is_not_found());
        assert_eq!(status(409).status(), Some(409));
        assert_eq!(Error::Timeout { url: "u".into() }.status(), None);
    }

    #[test]
    fn kind_is_the_code_else_the_status_class() {
        let reply = |status, code| Error::Status {
            method: "POST".into(),
            url: "u".into(),
            status,
            message: String::new(),
            code,
        };
        assert_eq!(
            reply(404, Some(ErrorKind::NoFreePi)).kind(),
            Some(ErrorKind::NoFreePi)
        );
        assert_eq!(reply(404, None).kind(), Some(ErrorKind::NotFound));
        assert_eq!(
            reply(409, Some(ErrorKind::Unknown)).kind(),
            Some(ErrorKind::Conflict)
        );
        assert_eq!(Error::Timeout { url: "u".into() }.kind(), None);
    }
}
