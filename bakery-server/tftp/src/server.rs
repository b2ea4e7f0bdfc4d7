//! The tokio UDP TFTP server: one listener socket, one task and one ephemeral socket (the
//! server's transfer ID) per read request.
//!
//! [`FileSource::File`] sources are read with positioned reads (`pread`) of about 96 KiB
//! (whole blocks, at least one) into a per-transfer buffer, on the transfer's task: boot
//! files are hot in the page cache, so a read costs about a memory copy, and one read serves
//! dozens of `sendto`s. No file is ever held whole; nothing outlives the transfer.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::packet::{self, ErrorCode, Packet, PacketError, Request};
use crate::session::{self, Action, ReadSession};
use crate::{
    FileProvider, FileSource, Outcome, ReadRequest, Refusal, ServerConfig, TransferReport,
};

/// Largest datagram the server reads: a DATA packet of the largest block size.
const MAX_DATAGRAM: usize = packet::MAX_BLKSIZE as usize + 4;

/// Serves read requests arriving on `socket` from `provider` until `shutdown` completes.
///
/// Write requests get TFTP error 2, malformed requests error 4 (error 8 for bad options),
/// stray DATA/ACK/ERROR/OACK packets at the listener are ignored. When
/// [`ServerConfig::max_transfers`] transfers are in flight, further requests get error 0
/// "server busy". After `shutdown`, no request is accepted; transfers in flight run to
/// their end on their own tasks. Returns an error only if the listener socket fails.
///
/// A read request that repeats one whose transfer has not answered yet (the same bytes from
/// the same address and port: a client retransmitting its request because the answer is
/// slow) is dropped: the running transfer answers it; after a refusal, repeats are dropped
/// for [`ServerConfig::timeout`]. A second transfer would
/// keep sending to a port its client no longer reads, and a later client given that port
/// number by its OS would take the stale transfer's packets for the answer to its own request
/// (another file's bytes, or its "file not found").
pub async fn serve<P: FileProvider>(
    socket: UdpSocket,
    provider: Arc<P>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let local_ip = socket.local_addr()?.ip();
    let permits = Arc::new(Semaphore::new(config.max_transfers.max(1)));
    let unanswered = Arc::new(Unanswered::default());
    let config = Arc::new(config);
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut reply = Vec::with_capacity(128);
    tokio::pin!(shutdown);
    loop {
        let received = tokio::select! {
            () = &mut shutdown => return Ok(()),
            received = socket.recv_from(&mut buf) => received,
        };
        let (len, peer) = match received {
            Ok(received) => received,
            Err(error) if is_transient(&error) => continue,
            Err(error) => return Err(error),
        };
        let datagram = &buf[..len];
        reply.clear();
        match packet::parse(datagram) {
            Ok(Packet::Rrq(request)) => match permits.clone().try_acquire_owned() {
                Ok(permit) => match Unanswered::claim(&unanswered, peer, datagram) {
                    Some(claim) => {
                        let provider = Arc::clone(&provider);
                        let config = Arc::clone(&config);
                        let started = Started { permit, claim };
                        tokio::spawn(transfer(provider, config, local_ip, peer, request, started));
                    }
                    None => {
                        debug!(%peer, file = %request.filename, "tftp: repeated request dropped, its transfer is running");
                    }
                },
                Err(_) => {
                    warn!(%peer, file = %request.filename, "tftp: too many transfers, refusing");
                    packet::encode_error(ErrorCode::NotDefined, "server busy", &mut reply);
                }
            },
            Ok(Packet::Wrq(request)) => {
                debug!(%peer, file = %request.filename, "tftp: write request refused");
                packet::encode_error(
                    ErrorCode::AccessViolation,
                    "write requests are not accepted",
                    &mut reply,
                );
            }
            Ok(_) => debug!(%peer, "tftp: stray packet at the listener ignored"),
            Err(error) => {
                if answers(datagram, &error) {
                    debug!(%peer, %error, "tftp: malformed request");
                    packet::encode_error(error.error_code(), &error.to_string(), &mut reply);
                }
            }
        }
        if !reply.is_empty() {
            // A lost error packet is the client's timeout to handle; the listener goes on.
            let _ = socket.try_send_to(&reply, peer);
        }
    }
}

/// Whether a malformed datagram deserves an error reply: requests and unknown opcodes
/// do; anything shaped like DATA/ACK/ERROR/OACK does not (answering errors with errors
/// can loop between two hosts).
fn answers(datagram: &[u8], error: &PacketError) -> bool {
    match error {
        PacketError::UnknownOpcode { .. } => true,
        _ => datagram.len() >= 2 && datagram[0] == 0 && matches!(datagram[1], 1 | 2),
    }
}

fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// The read requests whose transfers have not heard from their client yet, by client
/// address and request bytes.
#[derive(Debug, Default)]
struct Unanswered(Mutex<Requests>);

/// [`Unanswered`]'s table.
#[derive(Debug, Default)]
struct Requests {
    /// The id the next claim gets.
    next: u64,
    by_key: HashMap<RequestKey, Pending>,
}

/// A client's address and its request's bytes.
type RequestKey = (SocketAddr, Vec<u8>);

/// One request in [`Unanswered`].
#[derive(Debug)]
struct Pending {
    /// The claim holding it.
    id: u64,
    /// Whether its transfer has sent its first packet (OACK or DATA).
    answered: bool,
}

impl Unanswered {
    fn lock(&self) -> std::sync::MutexGuard<'_, Requests> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the request `datagram` from `peer` for a new transfer; `None` when it repeats
    /// one whose transfer has sent nothing yet (or is holding after a refusal). A request
    /// repeating one already answered is a new one: a client that ended a size probe with an
    /// ERROR may ask again with the same bytes from the same port at once, before the probe's
    /// transfer has read that ERROR.
    fn claim(set: &Arc<Unanswered>, peer: SocketAddr, datagram: &[u8]) -> Option<Claim> {
        let key = (peer, datagram.to_vec());
        let mut requests = set.lock();
        if requests.by_key.get(&key).is_some_and(|p| !p.answered) {
            return None;
        }
        let id = requests.next;
        requests.next += 1;
        requests.by_key.insert(
            key.clone(),
            Pending {
                id,
                answered: false,
            },
        );
        Some(Claim {
            set: Arc::clone(set),
            key,
            id,
        })
    }
}

/// A transfer's record in [`Unanswered`], dropped on the first packet from its client or at
/// its end, whichever comes first.
#[derive(Debug)]
struct Claim {
    set: Arc<Unanswered>,
    key: RequestKey,
    id: u64,
}

impl Claim {
    /// Notes that the transfer sent its first packet.
    fn answered(&self) {
        if let Some(pending) = self.set.lock().by_key.get_mut(&self.key)
            && pending.id == self.id
        {
            pending.answered = true;
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut requests = self.set.lock();
        if requests
            .by_key
            .get(&self.key)
            .is_some_and(|p| p.id == self.id)
        {
            requests.by_key.remove(&self.key);
        }
    }
}

/// What a transfer holds while it runs: its slot under `max_transfers` and its claim.
struct Started {
    permit: OwnedSemaphorePermit,
    claim: Claim,
}

async fn transfer<P: FileProvider>(
    provider: Arc<P>,
    config: Arc<ServerConfig>,
    local_ip: IpAddr,
    peer: SocketAddr,
    request: Request,
    started_with: Started,
) {
    let Started {
        permit: _permit,
        claim,
    } = started_with;
    let started = Instant::now();
    let read_request = ReadRequest {
        filename: request.filename,
        peer,
        mode: request.mode,
        options: request.options,
    };
    let opened = provider.open(&read_request).await;
    let mut retransmissions = 0;
    let ran = run(
        &config,
        local_ip,
        &read_request,
        opened,
        claim,
        &mut retransmissions,
    )
    .await;
    let (outcome, bytes) = match ran {
        Ok(done) => done,
        Err(error) => {
            warn!(%peer, file = %read_request.filename, %error, "tftp: transfer failed");
            (Outcome::Failed, 0)
        }
    };
    let report = TransferReport {
        filename: read_request.filename,
        peer,
        bytes,
        outcome,
        elapsed: started.elapsed(),
        retransmissions,
    };
    match outcome {
        Outcome::Sent => debug!(
            %peer, file = %report.filename, bytes, elapsed_ms = report.elapsed.as_millis() as u64,
            "tftp: sent"
        ),
        _ => debug!(%peer, file = %report.filename, ?outcome, "tftp: transfer ended"),
    }
    provider.finished(&report);
}

/// Runs one transfer on a new socket; returns how it ended and the bytes acknowledged, and
/// counts the windows (or OACKs) it sent again after a timeout in `retransmissions`.
async fn run(
    config: &ServerConfig,
    local_ip: IpAddr,
    request: &ReadRequest,
    opened: Result<FileSource, Refusal>,
    claim: Claim,
    retransmissions: &mut u64,
) -> io::Result<(Outcome, u64)> {
    let mut claim = Some(claim);
    let socket = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
    socket.connect(request.peer).await?;
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    let source = match opened {
        Ok(source) => source,
        Err(refusal) => {
            let (code, message, outcome) = match &refusal {
                Refusal::NotFound => (ErrorCode::FileNotFound, "file not found", Outcome::NotFound),
                Refusal::AccessViolation(message) => (
                    ErrorCode::AccessViolation,
                    message.as_str(),
                    Outcome::Refused,
                ),
                Refusal::Failed(message) => {
                    (ErrorCode::NotDefined, message.as_str(), Outcome::Failed)
                }
            };
            packet::encode_error(code, message, &mut out);
            let _ = socket.send(&out).await;
            // A refusal ends the transfer at once, but the client may have repeated its
            // request already: those repeats are dropped for one timeout, so no stale second
            // refusal goes to a port its client may have given up.
            if let Some(claim) = claim.take() {
                let hold = config.timeout;
                tokio::spawn(async move {
                    tokio::time::sleep(hold).await;
                    drop(claim);
                });
            }
            return Ok((outcome, 0));
        }
    };
    let len = source.len();
    let (settings, oack) = session::negotiate(
        &request.options,
        len,
        config.max_blksize,
        config.max_windowsize,
    );
    let timeout = settings.timeout.unwrap_or(config.timeout);
    let mut session = ReadSession::new(len, settings, oack, config.retries);
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut reader = BlockReader::new(&source, settings.blksize);
    let mut action = session.start();
    let mut deadline = Instant::now() + timeout;
    loop {
        if matches!(action, Action::SendOack(_) | Action::SendData { .. })
            && let Some(claim) = &claim
        {
            claim.answered();
        }
        match action {
            Action::SendOack(options) => {
                out.clear();
                Packet::Oack(options).encode(&mut out);
                if let Err(error) = socket.send(&out).await {
                    return Ok((send_failure(&error, &mut session), 0));
                }
                deadline = Instant::now() + timeout;
            }
            Action::SendData { first, last } => {
                for abs in first..=last {
                    let block = session.block(abs);
                    out.clear();
                    packet::encode_data_header(block.wire, &mut out);
                    if let Err(error) = reader.append(block.offset, block.len, &mut out) {
                        out.clear();
                        packet::encode_error(ErrorCode::NotDefined, "read error", &mut out);
                        let _ = socket.send(&out).await;
                        return Err(error);
                    }
                    if let Err(error) = socket.send(&out).await {
                        let outcome = send_failure(&error, &mut session);
                        return Ok((outcome, session.acked_bytes()));
                    }
                }
                deadline = Instant::now() + timeout;
            }
            Action::Wait => {}
            Action::Done => return Ok((Outcome::Sent, session.acked_bytes())),
            Action::GiveUp => return Ok((Outcome::GaveUp, session.acked_bytes())),
            Action::Unconfirmed => return Ok((Outcome::Unconfirmed, session.acked_bytes())),
            Action::Aborted => return Ok((Outcome::Aborted, session.acked_bytes())),
        }
        action = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            Err(_elapsed) => {
                let next = session.on_timeout();
                if matches!(next, Action::SendOack(_) | Action::SendData { .. }) {
                    *retransmissions += 1;
                }
                next
            }
            Ok(Err(error)) if error.kind() == io::ErrorKind::ConnectionRefused => {
                session.on_unreachable()
            }
            Ok(Err(error)) if is_transient(&error) => Action::Wait,
            Ok(Err(error)) => return Err(error),
            Ok(Ok(n)) => {
                // The client knows this transfer now: a request it repeats is a new one.
                drop(claim.take());
                match packet::parse(&buf[..n]) {
                    Ok(Packet::Ack { block }) => session.on_ack(block),
                    Ok(Packet::Error { .. }) => session.on_error(),
                    _ => Action::Wait,
                }
            }
        };
    }
}

/// How a transfer ends when a send fails: a closed client port ends it as the session says
/// (unconfirmed once the last block went out), anything else is the server's failure.
fn send_failure(error: &io::Error, session: &mut ReadSession) -> Outcome {
    if error.kind() != io::ErrorKind::ConnectionRefused {
        return Outcome::Failed;
    }
    match session.on_unreachable() {
        Action::Unconfirmed => Outcome::Unconfirmed,
        _ => Outcome::GaveUp,
    }
}

/// Bytes read from a source per `pread`, rounded down to whole blocks (at least one).
const READ_AHEAD: usize = 96 * 1024;

/// Reads blocks of a source, a read-ahead buffer at a time.
struct BlockReader<'a> {
    source: &'a FileSource,
    chunk: usize,
    cache: Vec<u8>,
    cache_start: u64,
}

impl<'a> BlockReader<'a> {
    fn new(source: &'a FileSource, blksize: u16) -> BlockReader<'a> {
        let blksize = usize::from(blksize.max(1));
        BlockReader {
            source,
            chunk: (READ_AHEAD / blksize).max(1) * blksize,
            cache: Vec::new(),
            cache_start: 0,
        }
    }

    /// Appends `len` bytes at `offset` to `out`.
    fn append(&mut self, offset: u64, len: usize, out: &mut Vec<u8>) -> io::Result<()> {
        let beyond = || {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "block beyond the end of the source",
            )
        };
        match self.source {
            FileSource::Bytes(bytes) => {
                let start = usize::try_from(offset).map_err(io::Error::other)?;
                let chunk = start
                    .checked_add(len)
                    .and_then(|end| bytes.get(start..end))
                    .ok_or_else(beyond)?;
                out.extend_from_slice(chunk);
            }
            FileSource::File { file, len: total } => {
                let end = offset.checked_add(len as u64).ok_or_else(beyond)?;
                if end > *total {
                    return Err(beyond());
                }
                let cached_end = self.cache_start + self.cache.len() as u64;
                if offset < self.cache_start || end > cached_end {
                    let want = (self.chunk as u64).max(len as u64).min(total - offset);
                    self.cache.resize(want as usize, 0);
                    file.read_exact_at(&mut self.cache, offset)?;
                    self.cache_start = offset;
                }
                let at = (offset - self.cache_start) as usize;
                out.extend_from_slice(&self.cache[at..at + len]);
            }
        }
        Ok(())
    }
}
