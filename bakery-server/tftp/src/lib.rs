//! TFTP: a protocol core on byte buffers with no I/O, and a tokio UDP server around it.
//!
//! Read requests only (RFC 1350), with option negotiation (RFC 2347) for `blksize`
//! (RFC 2348), `tsize` and `timeout` (RFC 2349) and `windowsize` (RFC 7440). Write requests
//! are refused with TFTP error 2.
//!
//! Layout, in the style of hickory-dns and mini-redis (protocol without I/O, I/O at the edge):
//! - [`packet`]: parse and encode every TFTP packet on byte buffers; total and strict.
//! - [`session`]: the read-transfer state machine, fed events, returning actions; no
//!   sockets, no clocks.
//! - [`server`]: the tokio UDP server: [`serve`] with a [`FileProvider`].
//! - [`client`]: an async TFTP client used by `pi-sim`, the tests and the demo.
//!
//! # Why not an existing crate
//! - `async-tftp` (0.4): serves read requests with blksize/tsize/timeout, but has no
//!   `windowsize` (RFC 7440), its `Handler` takes `&mut self` (every open is serialised
//!   behind one handler) and has no hook reporting how a transfer ended, which bakery needs
//!   for boot events and for noticing vanished Pis; it is built on `futures-lite`/`async-io`
//!   rather than tokio, and wants an `AsyncRead` per transfer instead of positioned reads.
//! - `tftpd` (rs-tftpd) and `r-tftpd`: complete servers with windowsize, but shaped as
//!   daemons serving a directory (a thread per client, or a binary), not as a library with
//!   a per-request provider, a concurrency bound and a shutdown future.
//!
//! The protocol is small; owning it lets the server read blocks with `pread` straight from
//! the provider's file, bound concurrency, and report every transfer's outcome.

pub mod client;
pub mod packet;
pub mod server;
pub mod session;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

pub use client::{ClientError, FetchOptions, Fetched, fetch, query_size};
pub use packet::{Mode, RequestOptions};
pub use server::serve;

/// Where a [`FileProvider`] finds the bytes for a read request.
///
/// Implementations decide which names exist; the server only sends what the provider gives.
pub trait FileProvider: Send + Sync + 'static {
    /// Opens the file named in `request`, or refuses it.
    ///
    /// [`Refusal::NotFound`] becomes TFTP error 1, [`Refusal::AccessViolation`] error 2,
    /// [`Refusal::Failed`] error 0.
    fn open(
        &self,
        request: &ReadRequest,
    ) -> impl Future<Output = Result<FileSource, Refusal>> + Send;

    /// Called once for every read request that reached [`FileProvider::open`], whatever
    /// its outcome, after the transfer ended.
    fn finished(&self, report: &TransferReport) {
        let _ = report;
    }
}

/// A read request (RRQ) as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    /// The file name exactly as the client sent it (not normalised, not checked).
    pub filename: String,
    /// The client's address and port (its transfer ID).
    pub peer: SocketAddr,
    /// The transfer mode the client asked for; both are served as raw bytes.
    pub mode: Mode,
    /// The options the client asked for, before negotiation.
    pub options: RequestOptions,
}

/// The bytes to send for a read request.
#[derive(Debug)]
pub enum FileSource {
    /// Bytes in memory, for rendered files such as a Pi's `cmdline.txt`.
    Bytes(bytes::Bytes),
    /// An open file of `len` bytes; the server reads it block by block with positioned
    /// reads and never holds it whole in memory.
    File {
        /// The open file; read from offset 0 to `len`.
        file: std::fs::File,
        /// How many bytes to send (announced as `tsize`).
        len: u64,
    },
}

impl FileSource {
    /// How many bytes this source will send.
    pub fn len(&self) -> u64 {
        match self {
            FileSource::Bytes(bytes) => bytes.len() as u64,
            FileSource::File { len, .. } => *len,
        }
    }

    /// Whether this source sends no bytes at all (a single empty DATA packet).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a provider will not serve a read request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No such file: TFTP error 1 "file not found".
    NotFound,
    /// The client may not read this: TFTP error 2 with this message.
    AccessViolation(String),
    /// The provider failed to find out (a database or I/O error): TFTP error 0 with this
    /// message, so the client does not take a server fault for a missing file (a Pi's
    /// firmware falls back to other paths on "file not found").
    Failed(String),
}

/// How one read request ended, given to [`FileProvider::finished`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferReport {
    /// The file name as the client sent it.
    pub filename: String,
    /// The client's address and port.
    pub peer: SocketAddr,
    /// Payload bytes the client acknowledged.
    pub bytes: u64,
    /// How the transfer ended.
    pub outcome: Outcome,
    /// Time from receiving the request to the end of the transfer.
    pub elapsed: Duration,
    /// Times a window of DATA (or the OACK) was sent again because no acknowledgement came
    /// in time.
    pub retransmissions: u64,
}

/// How a read request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every block was sent and acknowledged.
    Sent,
    /// The provider answered [`Refusal::NotFound`].
    NotFound,
    /// The provider answered [`Refusal::AccessViolation`].
    Refused,
    /// The client ended the transfer with an ERROR packet (a Pi does this after reading
    /// `tsize`, or on rejecting the negotiated options).
    Aborted,
    /// The client vanished before the last block was sent: retries exhausted without an
    /// acknowledgement, or its port closed.
    GaveUp,
    /// Sent, final ACK lost: the last block went out (and was resent until the retries ran
    /// out, or the client's port closed) without its acknowledgement. The client most likely
    /// has the whole file (RFC 1350 §6: the final ACK may be lost); `bytes` counts only what
    /// was acknowledged.
    Unconfirmed,
    /// The provider answered [`Refusal::Failed`], or the server could not read the source
    /// (the file shrank, an I/O error) or send.
    Failed,
}

/// Limits and timings of a TFTP server; see [`ServerConfig::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Time to wait for an acknowledgement before retransmitting, unless the client
    /// negotiates `timeout`.
    pub timeout: Duration,
    /// Retransmissions of one window before giving up on the client.
    pub retries: u32,
    /// Largest block size granted (RFC 2348 allows up to 65464).
    pub max_blksize: u16,
    /// Largest window size granted (RFC 7440); windows are also kept to at most
    /// [`session::MAX_WINDOW_BYTES`] of payload.
    pub max_windowsize: u16,
    /// Transfers in flight at once; further requests get TFTP error 0 "server busy".
    pub max_transfers: usize,
}

impl Default for ServerConfig {
    /// Timeout 1 s, 5 retries, blksize up to 65464, windowsize up to 64, 512 transfers.
    fn default() -> Self {
        ServerConfig {
            timeout: Duration::from_secs(1),
            retries: 5,
            max_blksize: packet::MAX_BLKSIZE,
            max_windowsize: 64,
            max_transfers: 512,
        }
    }
}
