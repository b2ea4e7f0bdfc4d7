//! Bearer-token authentication of the API: the token file, its reload on SIGHUP, and the
//! middleware that checks `Authorization: Bearer <token>` on every protected request.
//!
//! The token file holds one token per line; blank lines and lines starting with `#` are
//! ignored; a line `ro:<token>` is a read-only token (GET and HEAD only). Tokens are kept as
//! SHA-256 digests and a presented token is compared with every known one in constant time
//! (`subtle`), so neither which token matched nor how many leading bytes were right shows in
//! the answer time. Comparing digests also hides the tokens' lengths.
//!
//! What is protected: every path under `/api/` and `/metrics`. The boot path
//! (`/api/v1/files/...`, what HookTFTP forwards for Pis, which cannot send tokens) is open
//! unless [`FilesPolicy::RequireToken`]. Other paths are open: the status page's static files
//! hold no data (the page asks for a token and sends it with its API calls), and
//! `/cloud-init/...` answers only the baked Pi at the requester's address, which cannot send
//! a token either.
//!
//! This module is the one place authentication failures become HTTP statuses: 401 with
//! `WWW-Authenticate: Bearer` for a missing or unknown token, 403 for a read-only token on a
//! write.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bakery_client::ErrorKind;
use subtle::{Choice, ConstantTimeEq};
use thiserror::Error;

/// Tokens shorter than this are refused: they could be guessed.
pub const MIN_TOKEN_LEN: usize = 16;
/// The prefix of a read-only token's line.
pub const READ_ONLY_PREFIX: &str = "ro:";
/// The boot path, governed by [`FilesPolicy`].
pub const FILES_PREFIX: &str = "/api/v1/files/";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// GET and HEAD only.
    ReadOnly,
    /// Everything.
    Admin,
}

/// Whether the boot path (`/api/v1/files/...`) needs a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FilesPolicy {
    /// Open: Pis (through HookTFTP) cannot send tokens.
    #[default]
    Open,
    /// A token (read-only is enough) is required there too.
    RequireToken,
}

/// A token file that cannot be used.
#[derive(Debug, Error)]
pub enum TokenFileError {
    /// The file could not be read.
    #[error("cannot read token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A line is not a usable token (the token itself is never shown).
    #[error("token file {path} line {line}: {reason}")]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The file holds no token at all (which would lock everyone out).
    #[error("token file {0} holds no token")]
    Empty(PathBuf),
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    Missing,
    /// A token that is not in the token file.
    #[error("invalid token")]
    Invalid,
    /// A read-only token on a method that writes.
    #[error("read-only token may not {method} {path}")]
    ReadOnly {
        /// The method.
        method: String,
        /// The path.
        path: String,
    },
}

/// Marks a response as a refusal by authentication (in its extensions), so the request
/// metrics count it while the boot timelines, which only record what a Pi was answered,
/// leave it out: a client without a token writes no boot records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusedByAuth;

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let (kind, challenge) = match &self {
            AuthError::Missing => (ErrorKind::Unauthorized, "Bearer realm=\"bakery\""),
            AuthError::Invalid => (
                ErrorKind::Unauthorized,
                "Bearer realm=\"bakery\", error=\"invalid_token\"",
            ),
            AuthError::ReadOnly { .. } => (
                ErrorKind::InsufficientScope,
                "Bearer realm=\"bakery\", error=\"insufficient_scope\"",
            ),
        };
        let (status, body) = super::error::error_reply(kind, self.to_string());
        tracing::info!(status = status.as_u16(), reason = %self, "request refused by authentication");
        (
            status,
            [(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            )],
            axum::Extension(RefusedByAuth),
            body,
        )
            .into_response()
    }
}

/// One known token: its digest and what it may do.
#[derive(Clone)]
struct Known {
    digest: [u8; 32],
    access: Access,
}

/// The tokens of one reading of the token file.
#[derive(Clone, Default)]
pub struct TokenSet {
    tokens: Vec<Known>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("admin", &self.count(Access::Admin))
            .field("read_only", &self.count(Access::ReadOnly))
            .finish()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl TokenSet {
    /// Parses the token file's text (`path` is only used in errors).
    pub fn parse(path: &Path, text: &str) -> Result<TokenSet, TokenFileError> {
        let mut tokens = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason| TokenFileError::Line {
                path: path.to_owned(),
                line: i + 1,
                reason,
            };
            let (access, token) = match line.strip_prefix(READ_ONLY_PREFIX) {
                Some(rest) => (Access::ReadOnly, rest.trim()),
                None => (Access::Admin, line),
            };
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad(
                    "a token may only hold visible ASCII characters, no spaces",
                ));
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err(bad("token is shorter than 16 characters"));
            }
            tokens.push(Known {
                digest: digest(token.as_bytes()),
                access,
            });
        }
        if tokens.is_empty() {
            return Err(TokenFileError::Empty(path.to_owned()));
        }
        Ok(TokenSet { tokens })
    }

    /// Reads and parses the token file.
    pub fn load(path: &Path) -> Result<TokenSet, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        TokenSet::parse(path, &text)
    }

    /// How many tokens have `access`.
    pub fn count(&self, access: Access) -> usize {
        self.tokens.iter().filter(|t| t.access == access).count()
    }

    /// What `presented` may do, if it is a known token. Every known token is compared, in
    /// constant time, whatever matches.
    pub fn check(&self, presented: &[u8]) -> Option<Access> {
        let d = digest(presented);
        let mut admin = Choice::from(0);
        let mut read_only = Choice::from(0);
        for known in &self.tokens {
            let hit = known.digest.ct_eq(&d);
            match known.access {
                Access::Admin => admin |= hit,
                Access::ReadOnly => read_only |= hit,
            }
        }
        if bool::from(admin) {
            Some(Access::Admin)
        } else if bool::from(read_only) {
            Some(Access::ReadOnly)
        } else {
            None
        }
    }
}

/// The API's authentication: the live token set (swapped on reload) and the boot-path policy.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Auth {
    path: PathBuf,
    tokens: Arc<RwLock<Arc<TokenSet>>>,
    files: FilesPolicy,
}

impl Auth {
    /// Loads the token file; an unreadable or empty file is an error (the server must not
    /// start open by mistake).
    pub fn load(path: &Path, files: FilesPolicy) -> Result<Auth, TokenFileError> {
        let set = TokenSet::load(path)?;
        tracing::info!(
            file = %path.display(),
            admin = set.count(Access::Admin),
            read_only = set.count(Access::ReadOnly),
            files = ?files,
            "api bearer tokens loaded"
        );
        Ok(Auth {
            path: path.to_owned(),
            tokens: Arc::new(RwLock::new(Arc::new(set))),
            files,
        })
    }

    /// The authentication a token file asks for: `None` (and a warning) without one;
    /// `boot_files_require_token` puts the boot path behind a token too.
    pub fn from_file(
        token_file: Option<&Path>,
        boot_files_require_token: bool,
    ) -> Result<Option<Auth>, TokenFileError> {
        let Some(path) = token_file else {
            tracing::warn!("no --token-file: the API is open to anyone who reaches it");
            return Ok(None);
        };
        let files = if boot_files_require_token {
            FilesPolicy::RequireToken
        } else {
            FilesPolicy::Open
        };
        Auth::load(path, files).map(Some)
    }

    /// Re-reads the token file; on failure the old tokens stay in force. Returns the new
    /// number of tokens.
    pub fn reload(&self) -> Result<usize, TokenFileError> {
        match TokenSet::load(&self.path) {
            Ok(set) => {
                let n = set.tokens.len();
                tracing::info!(
                    file = %self.path.display(),
                    admin = set.count(Access::Admin),
                    read_only = set.count(Access::ReadOnly),
                    "api bearer tokens reloaded"
                );
                *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
                Ok(n)
            }
            Err(e) => {
                tracing::error!(error = %e, "token file not reloaded: the previous tokens stay in force");
                Err(e)
            }
        }
    }

    /// How many tokens are in force.
    pub fn token_count(&self) -> usize {
        self.current().tokens.len()
    }

    fn current(&self) -> Arc<TokenSet> {
        self.tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether requests to `path` need a token.
    pub fn protects(&self, path: &str) -> bool {
        if path.starts_with(FILES_PREFIX) {
            return self.files == FilesPolicy::RequireToken;
        }
        path.starts_with("/api/") || path == "/api" || path.starts_with("/metrics")
    }

    /// Decides a request: `Ok` to let it through.
    pub fn authorize(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<(), AuthError> {
        if !self.protects(path) {
            return Ok(());
        }
        let presented = bearer(headers).ok_or(AuthError::Missing)?;
        match self.current().check(presented) {
            None => Err(AuthError::Invalid),
            Some(Access::Admin) => Ok(()),
            Some(Access::ReadOnly) if is_read(method) => Ok(()),
            Some(Access::ReadOnly) => Err(AuthError::ReadOnly {
                method: method.to_string(),
                path: path.to_owned(),
            }),
        }
    }
}

fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let start = rest.iter().position(|b| *b != b' ')?;
    let token = &rest[start..];
    let end = token.iter().rposition(|b| *b != b' ').map_or(0, |i| i + 1);
    Some(&token[..end])
}

/// The middleware: checks the token of each request against [`Auth`].
pub async fn require_token(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    match auth.authorize(request.method(), request.uri().path(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// Wraps `router` so every protected request needs a token (no-op without `auth`).
///
/// Layer this inside the request metrics ([`crate::http::router`] does), so refusals are
/// counted too.
pub fn protect<S>(router: axum::Router<S>, auth: Option<Auth>) -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    match auth {
        Some(auth) => router.layer(axum::middleware::from_fn_with_state(auth, require_token)),
        None => router,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "admin-token-0123456789";
    const RO: &str = "reader-token-0123456789";

    fn auth(files: FilesPolicy) -> Auth {
        let set = TokenSet::parse(
            Path::new("tokens"),
            &format!("# operators\n\n  {ADMIN}  \nro:{RO}\n"),
        )
        .unwrap();
        Auth {
            path: PathBuf::from("tokens"),
            tokens: Arc::new(RwLock::new(Arc::new(set))),
            files,
        }
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn parse_counts_comments_and_read_only() {
        let set = TokenSet::parse(Path::new("t"), &format!("{ADMIN}\nro:{RO}\n# x\n")).unwrap();
        assert_eq!(set.count(Access::Admin), 1);
        assert_eq!(set.count(Access::ReadOnly), 1);
        assert_eq!(set.check(ADMIN.as_bytes()), Some(Access::Admin));
        assert_eq!(set.check(RO.as_bytes()), Some(Access::ReadOnly));
        assert_eq!(set.check(b"admin-token-012345678"), None);
        assert_eq!(set.check(b""), None);
        // The same token listed read-only and admin is admin.
        let both = TokenSet::parse(Path::new("t"), &format!("ro:{ADMIN}\n{ADMIN}\n")).unwrap();
        assert_eq!(both.check(ADMIN.as_bytes()), Some(Access::Admin));
    }

    #[test]
    fn parse_refuses_short_odd_and_empty_files_without_showing_tokens() {
        let e = TokenSet::parse(Path::new("t"), "# c\nshort\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "token file t line 2: token is shorter than 16 characters"
        );
        let e = TokenSet::parse(Path::new("t"), "abc def ghi jkl mno pqr\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        assert!(!e.to_string().contains("abc"), "{e}");
        let e = TokenSet::parse(Path::new("t"), "ro:\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = TokenSet::parse(Path::new("t"), "# nothing\n\n").unwrap_err();
        assert!(matches!(e, TokenFileError::Empty(_)), "{e}");
        let e = TokenSet::parse(Path::new("t"), "tökentökentökentöken\n").unwrap_err();
        assert!(e.to_string().contains("visible ASCII"), "{e}");
    }

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer(&headers("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers("bearer   abc  ")), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers("BEARER abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers("Basic YWJj")), None);
        assert_eq!(bearer(&headers("Bearer")), None);
        assert_eq!(bearer(&headers("Bearer    ")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn decisions() {
        let a = auth(FilesPolicy::Open);
        let none = HeaderMap::new();
        let admin = headers(&format!("Bearer {ADMIN}"));
        let ro = headers(&format!("Bearer {RO}"));
        let wrong = headers("Bearer nope-nope-nope-nope-nope");
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(
            a.authorize(&get, "/api/v1/oven", &none),
            Err(AuthError::Missing)
        );
        assert_eq!(
            a.authorize(&get, "/api/v1/oven", &wrong),
            Err(AuthError::Invalid)
        );
        assert_eq!(a.authorize(&get, "/api/v1/oven", &ro), Ok(()));
        assert_eq!(a.authorize(&post, "/api/v1/fridge", &admin), Ok(()));
        assert!(matches!(
            a.authorize(&post, "/api/v1/fridge", &ro),
            Err(AuthError::ReadOnly { .. })
        ));
        assert!(matches!(
            a.authorize(&Method::DELETE, "/api/v1/disks/x", &ro),
            Err(AuthError::ReadOnly { .. })
        ));
        assert_eq!(
            a.authorize(&get, "/metrics", &none),
            Err(AuthError::Missing)
        );
        assert_eq!(
            a.authorize(&get, "/api/v1/files/0000abcd/start4.elf", &none),
            Ok(())
        );
        assert_eq!(a.authorize(&get, "/", &none), Ok(()));
        // Not the boot path: a doubled slash or a prefix look-alike is protected.
        assert_eq!(
            a.authorize(&get, "/api/v1//files/x", &none),
            Err(AuthError::Missing)
        );
        assert_eq!(
            a.authorize(&get, "/api/v1/filesx/y", &none),
            Err(AuthError::Missing)
        );
        let strict = auth(FilesPolicy::RequireToken);
        assert_eq!(
            strict.authorize(&get, "/api/v1/files/0000abcd/start4.elf", &none),
            Err(AuthError::Missing)
        );
        assert_eq!(
            strict.authorize(&get, "/api/v1/files/bootcode.bin", &ro),
            Ok(())
        );
    }

    #[test]
    fn reload_keeps_old_tokens_when_the_file_is_bad() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, format!("{ADMIN}\n")).unwrap();
        let a = Auth::load(&file, FilesPolicy::Open).unwrap();
        let admin = headers(&format!("Bearer {ADMIN}"));
        let ro = headers(&format!("Bearer {RO}"));
        std::fs::write(&file, format!("ro:{RO}\n")).unwrap();
        assert_eq!(a.reload().unwrap(), 1);
        assert_eq!(
            a.authorize(&Method::GET, "/api/v1/pis", &admin),
            Err(AuthError::Invalid)
        );
        assert_eq!(a.authorize(&Method::GET, "/api/v1/pis", &ro), Ok(()));
        std::fs::remove_file(&file).unwrap();
        assert!(a.reload().is_err());
        assert_eq!(a.authorize(&Method::GET, "/api/v1/pis", &ro), Ok(()));
    }
}
