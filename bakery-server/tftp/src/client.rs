//! An async TFTP client: fetch one file with optional `blksize`, `tsize` and `windowsize`.
//!
//! Used by `pi-sim`, the tests and the demo. Octet mode only; the receiving side of RFC
//! 7440 (an ACK per full window, an early ACK of the last in-order block on a gap).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::packet::{self, DEFAULT_BLKSIZE, ErrorCode, Mode, Packet, Request, RequestOptions};

/// Errors of [`fetch`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A socket operation failed.
    #[error("tftp i/o with {server} for {filename}: {source}")]
    Io {
        /// The server.
        server: SocketAddr,
        /// The file asked for.
        filename: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The server answered with an ERROR packet.
    #[error("tftp server refused {filename}: error {code}: {message}")]
    Remote {
        /// The file asked for.
        filename: String,
        /// The error code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// No answer after all retries.
    #[error("tftp server {server} stopped answering for {filename}")]
    TimedOut {
        /// The server.
        server: SocketAddr,
        /// The file asked for.
        filename: String,
    },
    /// The server broke the protocol.
    #[error("tftp protocol violation fetching {filename}: {what}")]
    Protocol {
        /// The file asked for.
        filename: String,
        /// What went wrong.
        what: String,
    },
}

impl ClientError {
    /// Whether the server answered "file not found" (TFTP error 1).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            ClientError::Remote {
                code: ErrorCode::FileNotFound,
                ..
            }
        )
    }
}

/// What to ask for in [`fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Ask for this block size.
    pub blksize: Option<u16>,
    /// Ask for the transfer size (`tsize=0`) and check the data against it.
    pub tsize: bool,
    /// Ask for this window size.
    pub windowsize: Option<u16>,
    /// Wait this long for a packet before retransmitting.
    pub timeout: Duration,
    /// Retransmissions in a row before giving up.
    pub retries: u32,
    /// Refuse to receive more than this many bytes.
    pub max_bytes: u64,
}

impl Default for FetchOptions {
    /// No options, a 1 s timeout, 5 retries, at most 1 GiB.
    fn default() -> Self {
        FetchOptions {
            blksize: None,
            tsize: false,
            windowsize: None,
            timeout: Duration::from_secs(1),
            retries: 5,
            max_bytes: 1 << 30,
        }
    }
}

/// A fetched file and what was negotiated for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The file's bytes.
    pub data: Vec<u8>,
    /// Whether the server acknowledged options (sent an OACK).
    pub oack: bool,
    /// The block size used.
    pub blksize: u16,
    /// The window size used.
    pub windowsize: u16,
    /// The size the server announced, if it did.
    pub tsize: Option<u64>,
    /// Time from the request to the last ACK.
    pub elapsed: Duration,
}

/// Fetches `filename` from the TFTP server at `server`.
pub async fn fetch(
    server: SocketAddr,
    filename: &str,
    options: &FetchOptions,
) -> Result<Fetched, ClientError> {
    Fetch {
        server,
        filename,
        options,
    }
    .run()
    .await
}

/// Asks for the size of `filename` the way a Pi's firmware does before loading a file: a
/// read request with `tsize` (and `blksize` if set in `options`), then an ERROR packet
/// ("early terminate") as soon as the server answers. `Ok(None)`: the server ignored
/// options and started sending data.
pub async fn query_size(
    server: SocketAddr,
    filename: &str,
    options: &FetchOptions,
) -> Result<Option<u64>, ClientError> {
    let query = Fetch {
        server,
        filename,
        options,
    };
    let socket = query.bind().await?;
    let rrq = Packet::Rrq(Request {
        filename: filename.to_owned(),
        mode: Mode::Octet,
        options: RequestOptions {
            blksize: options.blksize,
            tsize: Some(0),
            ..RequestOptions::default()
        },
    })
    .to_bytes();
    let mut abort = Vec::new();
    packet::encode_error(ErrorCode::NotDefined, "early terminate", &mut abort);
    let mut buf = vec![0u8; usize::from(packet::MAX_BLKSIZE) + 5];
    for _ in 0..=options.retries {
        socket
            .send_to(&rrq, server)
            .await
            .map_err(|e| query.io(e))?;
        let deadline = Instant::now() + options.timeout;
        while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await
        {
            let (n, from) = received.map_err(|e| query.io(e))?;
            if from.ip() != server.ip() || !is_first_answer(&buf[..n], true) {
                continue;
            }
            let size = match packet::parse(&buf[..n]) {
                Ok(Packet::Oack(oack)) => oack.tsize,
                Ok(Packet::Data { .. }) => None,
                Ok(Packet::Error { code, message }) => {
                    return Err(ClientError::Remote {
                        filename: filename.to_owned(),
                        code,
                        message,
                    });
                }
                _ => continue,
            };
            socket
                .send_to(&abort, from)
                .await
                .map_err(|e| query.io(e))?;
            return Ok(size);
        }
    }
    Err(ClientError::TimedOut {
        server,
        filename: filename.to_owned(),
    })
}

struct Fetch<'a> {
    server: SocketAddr,
    filename: &'a str,
    options: &'a FetchOptions,
}

impl Fetch<'_> {
    fn io(&self, source: std::io::Error) -> ClientError {
        ClientError::Io {
            server: self.server,
            filename: self.filename.to_owned(),
            source,
        }
    }

    fn protocol(&self, what: impl Into<String>) -> ClientError {
        ClientError::Protocol {
            filename: self.filename.to_owned(),
            what: what.into(),
        }
    }

    async fn bind(&self) -> Result<UdpSocket, ClientError> {
        let bind: SocketAddr = if self.server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        UdpSocket::bind(bind).await.map_err(|e| self.io(e))
    }

    async fn run(self) -> Result<Fetched, ClientError> {
        let started = Instant::now();
        let socket = self.bind().await?;
        let requested = RequestOptions {
            blksize: self.options.blksize,
            tsize: self.options.tsize.then_some(0),
            timeout: None,
            windowsize: self.options.windowsize,
        };
        let rrq = Packet::Rrq(Request {
            filename: self.filename.to_owned(),
            mode: Mode::Octet,
            options: requested,
        })
        .to_bytes();
        socket
            .send_to(&rrq, self.server)
            .await
            .map_err(|e| self.io(e))?;

        let mut peer: Option<SocketAddr> = None;
        let mut fetched = Fetched {
            data: Vec::new(),
            oack: false,
            blksize: DEFAULT_BLKSIZE,
            windowsize: 1,
            tsize: None,
            elapsed: Duration::ZERO,
        };
        let mut started_data = false;
        let mut expected: u16 = 1;
        let mut in_window: u16 = 0;
        let mut gap_acked = false;
        let mut retries = 0;
        let mut ack = Vec::with_capacity(4);
        let mut buf = vec![0u8; usize::from(packet::MAX_BLKSIZE) + 5];
        let mut deadline = Instant::now() + self.options.timeout;
        loop {
            let received = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await;
            let (n, from) = match received {
                Err(_elapsed) => {
                    retries += 1;
                    if retries > self.options.retries {
                        return Err(ClientError::TimedOut {
                            server: self.server,
                            filename: self.filename.to_owned(),
                        });
                    }
                    match peer {
                        None => socket.send_to(&rrq, self.server).await,
                        Some(peer) => {
                            in_window = 0;
                            ack.clear();
                            packet::encode_ack(expected.wrapping_sub(1), &mut ack);
                            socket.send_to(&ack, peer).await
                        }
                    }
                    .map_err(|e| self.io(e))?;
                    deadline = Instant::now() + self.options.timeout;
                    continue;
                }
                Ok(Err(error)) => return Err(self.io(error)),
                Ok(Ok(received)) => received,
            };
            match peer {
                None if from.ip() != self.server.ip() => continue,
                // Only what can answer a read request opens the transfer: a packet of some
                // other transfer (sent to this port's previous owner) must not be followed.
                None if !is_first_answer(&buf[..n], !requested.is_empty()) => continue,
                None => peer = Some(from),
                Some(peer) if peer != from => {
                    ack.clear();
                    packet::encode_error(
                        ErrorCode::UnknownTransferId,
                        "unknown transfer id",
                        &mut ack,
                    );
                    let _ = socket.try_send_to(&ack, from);
                    continue;
                }
                Some(_) => {}
            }
            let Some(peer) = peer else { continue };
            match packet::parse(&buf[..n]) {
                Ok(Packet::Error { code, message }) => {
                    return Err(ClientError::Remote {
                        filename: self.filename.to_owned(),
                        code,
                        message,
                    });
                }
                Ok(Packet::Oack(oack)) if !started_data => {
                    self.accept_oack(&requested, &oack, &mut fetched)?;
                    ack.clear();
                    packet::encode_ack(0, &mut ack);
                    socket.send_to(&ack, peer).await.map_err(|e| self.io(e))?;
                    retries = 0;
                    deadline = Instant::now() + self.options.timeout;
                }
                Ok(Packet::Data { block, data }) => {
                    started_data = true;
                    if block != expected {
                        if fetched.windowsize == 1 || !gap_acked {
                            gap_acked = true;
                            in_window = 0;
                            ack.clear();
                            packet::encode_ack(expected.wrapping_sub(1), &mut ack);
                            socket.send_to(&ack, peer).await.map_err(|e| self.io(e))?;
                        }
                        continue;
                    }
                    if data.len() > usize::from(fetched.blksize) {
                        return Err(self.protocol(format!(
                            "block {block} has {} bytes, more than the block size {}",
                            data.len(),
                            fetched.blksize
                        )));
                    }
                    if fetched.data.len() as u64 + data.len() as u64 > self.options.max_bytes {
                        return Err(
                            self.protocol(format!("file exceeds {} bytes", self.options.max_bytes))
                        );
                    }
                    fetched.data.extend_from_slice(data);
                    let last = data.len() < usize::from(fetched.blksize);
                    expected = expected.wrapping_add(1);
                    in_window += 1;
                    gap_acked = false;
                    retries = 0;
                    deadline = Instant::now() + self.options.timeout;
                    if last || in_window >= fetched.windowsize {
                        in_window = 0;
                        ack.clear();
                        packet::encode_ack(block, &mut ack);
                        socket.send_to(&ack, peer).await.map_err(|e| self.io(e))?;
                    }
                    if last {
                        if let Some(tsize) = fetched.tsize {
                            if tsize != fetched.data.len() as u64 {
                                return Err(self.protocol(format!(
                                    "announced tsize {tsize} but sent {} bytes",
                                    fetched.data.len()
                                )));
                            }
                        }
                        fetched.elapsed = started.elapsed();
                        return Ok(fetched);
                    }
                }
                _ => {}
            }
        }
    }

    fn accept_oack(
        &self,
        requested: &RequestOptions,
        oack: &RequestOptions,
        fetched: &mut Fetched,
    ) -> Result<(), ClientError> {
        let not_asked =
            |name: &str| self.protocol(format!("server acknowledged {name}, not asked for"));
        if let Some(blksize) = oack.blksize {
            match requested.blksize {
                Some(asked) if blksize <= asked => fetched.blksize = blksize,
                Some(asked) => {
                    return Err(
                        self.protocol(format!("server raised blksize from {asked} to {blksize}"))
                    );
                }
                None => return Err(not_asked("blksize")),
            }
        }
        if let Some(windowsize) = oack.windowsize {
            match requested.windowsize {
                Some(asked) if windowsize <= asked => fetched.windowsize = windowsize,
                Some(asked) => {
                    return Err(self.protocol(format!(
                        "server raised windowsize from {asked} to {windowsize}"
                    )));
                }
                None => return Err(not_asked("windowsize")),
            }
        }
        if oack.tsize.is_some() && requested.tsize.is_none() {
            return Err(not_asked("tsize"));
        }
        fetched.tsize = oack.tsize;
        fetched.oack = true;
        Ok(())
    }
}

/// Whether `datagram` can be a server's first answer to a read request: an ERROR, DATA
/// block 1, or an OACK when options were asked for.
fn is_first_answer(datagram: &[u8], asked_options: bool) -> bool {
    match packet::parse(datagram) {
        Ok(Packet::Error { .. } | Packet::Data { block: 1, .. }) => true,
        Ok(Packet::Oack(_)) => asked_options,
        _ => false,
    }
}
