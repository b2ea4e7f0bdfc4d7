//! The TFTP server against real clients (curl, tftp-hpa), this crate's client and raw
//! packets: content, options, errors, robustness and reports.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bakery_tftp::packet::{self, ErrorCode, Mode, Packet, Request, RequestOptions};
use bakery_tftp::{
    FetchOptions, FileProvider, FileSource, Outcome, ReadRequest, Refusal, ServerConfig,
    TransferReport, fetch, serve,
};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Serves files of a directory; names starting with `secret` are refused, names starting
/// with `broken` fail as a provider's database or I/O error would, names starting with `slow`
/// take 300 ms to open.
struct DirProvider {
    root: PathBuf,
    reports: Mutex<mpsc::UnboundedSender<TransferReport>>,
}

impl FileProvider for DirProvider {
    async fn open(&self, request: &ReadRequest) -> Result<FileSource, Refusal> {
        if request.filename.starts_with("secret") {
            return Err(Refusal::AccessViolation("no secrets here".into()));
        }
        if request.filename.starts_with("broken") {
            return Err(Refusal::Failed("server error, try again".into()));
        }
        if request.filename.starts_with("slow") {
            // A provider slow to answer (a busy database): clients repeat their requests.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let relative = Path::new(&request.filename);
        if !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(Refusal::NotFound);
        }
        let file = std::fs::File::open(self.root.join(relative)).map_err(|_| Refusal::NotFound)?;
        let len = file.metadata().map_err(|_| Refusal::NotFound)?.len();
        Ok(FileSource::File { file, len })
    }

    fn finished(&self, report: &TransferReport) {
        if let Ok(reports) = self.reports.lock() {
            let _ = reports.send(report.clone());
        }
    }
}

struct Server {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    reports: mpsc::UnboundedReceiver<TransferReport>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(config: ServerConfig) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let (tx, reports) = mpsc::unbounded_channel();
        let provider = Arc::new(DirProvider {
            root: dir.path().to_owned(),
            reports: Mutex::new(tx),
        });
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(socket, provider, config, async move {
            let _ = stopped.await;
        }));
        Server {
            addr,
            dir,
            reports,
            stop: Some(stop),
            task,
        }
    }

    fn put(&self, name: &str, data: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, data).expect("write test file");
        path
    }

    async fn report(&mut self) -> TransferReport {
        tokio::time::timeout(Duration::from_secs(10), self.reports.recv())
            .await
            .expect("a report in time")
            .expect("report channel open")
    }
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A server slow to retransmit, so a test sees only the packets its own requests cause.
fn patient() -> ServerConfig {
    ServerConfig {
        timeout: Duration::from_secs(3),
        ..ServerConfig::default()
    }
}

fn quick() -> ServerConfig {
    ServerConfig {
        timeout: Duration::from_millis(100),
        retries: 3,
        ..ServerConfig::default()
    }
}

async fn run(cmd: &mut tokio::process::Command) -> std::process::Output {
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("client finished in time")
        .expect("client ran")
}

#[tokio::test]
async fn curl_fetches_byte_identical_with_and_without_blksize() {
    let mut server = Server::start(ServerConfig::default()).await;
    let data = noise(3 * 1024 * 1024 + 77, 1);
    server.put("kernel8.img", &data);
    for blksize in [None, Some("1468"), Some("65464")] {
        let out = server.dir.path().join("curl.out");
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args(["-sS", "-o"]).arg(&out);
        if let Some(blksize) = blksize {
            cmd.args(["--tftp-blksize", blksize]);
        }
        cmd.arg(format!("tftp://{}/kernel8.img", server.addr));
        let output = run(&mut cmd).await;
        assert!(output.status.success(), "curl {blksize:?}: {output:?}");
        assert!(
            std::fs::read(&out).expect("curl output") == data,
            "curl {blksize:?} bytes differ"
        );
        let report = server.report().await;
        assert_eq!(report.outcome, Outcome::Sent);
        assert_eq!(report.bytes, data.len() as u64);
        assert_eq!(report.filename, "kernel8.img");
        assert_eq!(report.retransmissions, 0, "nothing lost on loopback");
    }
}

#[tokio::test]
async fn tftp_hpa_fetches_byte_identical() {
    let mut server = Server::start(ServerConfig::default()).await;
    let data = noise(700_001, 2);
    server.put("start4.elf", &data);
    for verbose in [false, true] {
        let out = server.dir.path().join("hpa.out");
        let mut cmd = tokio::process::Command::new("tftp");
        cmd.arg("127.0.0.1")
            .arg(server.addr.port().to_string())
            .args(["-m", "binary"]);
        if verbose {
            cmd.arg("-v");
        }
        cmd.args(["-c", "get", "start4.elf"]).arg(&out);
        let output = run(&mut cmd).await;
        assert!(output.status.success(), "tftp: {output:?}");
        assert!(
            std::fs::read(&out).expect("tftp output") == data,
            "tftp bytes differ"
        );
        assert_eq!(server.report().await.outcome, Outcome::Sent);
    }
}

#[tokio::test]
async fn file_over_32_mib_rolls_block_numbers_over() {
    let mut server = Server::start(ServerConfig::default()).await;
    let data = noise(33 * 1024 * 1024 + 123, 3);
    server.put("big.img", &data);

    // curl: lock-step with blksize 512, 67 585 blocks.
    let out = server.dir.path().join("big.out");
    let output = run(tokio::process::Command::new("curl")
        .args(["-sS", "--tftp-blksize", "512", "-o"])
        .arg(&out)
        .arg(format!("tftp://{}/big.img", server.addr)))
    .await;
    assert!(output.status.success(), "curl: {output:?}");
    assert!(
        std::fs::read(&out).expect("curl output") == data,
        "curl bytes differ"
    );
    assert_eq!(server.report().await.bytes, data.len() as u64);

    // tftp-hpa: it sends no options, so blksize 512 too.
    let out = server.dir.path().join("big.hpa");
    let output = run(tokio::process::Command::new("tftp")
        .arg("127.0.0.1")
        .arg(server.addr.port().to_string())
        .args(["-m", "binary", "-c", "get", "big.img"])
        .arg(&out))
    .await;
    assert!(output.status.success(), "tftp: {output:?}");
    assert!(
        std::fs::read(&out).expect("tftp output") == data,
        "tftp-hpa bytes differ"
    );
    assert_eq!(server.report().await.bytes, data.len() as u64);

    // This crate's client: windows of 64 blocks of 512 across the rollover.
    let fetched = fetch(
        server.addr,
        "big.img",
        &FetchOptions {
            blksize: Some(512),
            windowsize: Some(64),
            tsize: true,
            ..FetchOptions::default()
        },
    )
    .await
    .expect("fetch big.img");
    assert_eq!(fetched.tsize, Some(data.len() as u64));
    assert!(fetched.data == data, "windowed bytes differ");
    assert_eq!(server.report().await.outcome, Outcome::Sent);
}

#[tokio::test]
async fn client_negotiates_windowsize_blksize_and_tsize() {
    let mut server = Server::start(ServerConfig::default()).await;
    let data = noise(1_000_003, 4);
    server.put("start.elf", &data);
    let fetched = fetch(
        server.addr,
        "start.elf",
        &FetchOptions {
            blksize: Some(1468),
            windowsize: Some(16),
            tsize: true,
            ..FetchOptions::default()
        },
    )
    .await
    .expect("fetch");
    assert!(fetched.oack);
    assert_eq!((fetched.blksize, fetched.windowsize), (1468, 16));
    assert_eq!(fetched.tsize, Some(data.len() as u64));
    assert!(fetched.data == data);
    assert_eq!(server.report().await.outcome, Outcome::Sent);

    // Asking for more than the limits gets the limits.
    let fetched = fetch(
        server.addr,
        "start.elf",
        &FetchOptions {
            windowsize: Some(1000),
            ..FetchOptions::default()
        },
    )
    .await
    .expect("fetch");
    assert_eq!((fetched.blksize, fetched.windowsize), (512, 64));
    assert!(fetched.data == data);

    // No options: no OACK, plain RFC 1350.
    let fetched = fetch(server.addr, "start.elf", &FetchOptions::default())
        .await
        .expect("fetch");
    assert!(!fetched.oack);
    assert!(fetched.data == data);
}

#[tokio::test]
async fn missing_file_is_error_1_quickly_refusal_error_2_failure_error_0() {
    let mut server = Server::start(ServerConfig::default()).await;
    let started = Instant::now();
    let error = fetch(server.addr, "bootsig.bin", &FetchOptions::default())
        .await
        .expect_err("missing file");
    assert!(error.is_not_found(), "{error}");
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "took {:?}",
        started.elapsed()
    );
    let report = server.report().await;
    assert_eq!((report.outcome, report.bytes), (Outcome::NotFound, 0));

    let error = fetch(server.addr, "secret.txt", &FetchOptions::default())
        .await
        .expect_err("refused file");
    match error {
        bakery_tftp::ClientError::Remote { code, message, .. } => {
            assert_eq!(code, ErrorCode::AccessViolation);
            assert_eq!(message, "no secrets here");
        }
        other => panic!("not a refusal: {other}"),
    }
    assert_eq!(server.report().await.outcome, Outcome::Refused);

    // A provider's failure is not "file not found": error 0 with its message.
    let error = fetch(server.addr, "broken.txt", &FetchOptions::default())
        .await
        .expect_err("failed lookup");
    assert!(!error.is_not_found(), "{error}");
    match error {
        bakery_tftp::ClientError::Remote { code, message, .. } => {
            assert_eq!(code, ErrorCode::NotDefined);
            assert_eq!(message, "server error, try again");
        }
        other => panic!("not a remote error: {other}"),
    }
    assert_eq!(server.report().await.outcome, Outcome::Failed);

    // curl reports TFTP "file not found" as its exit code 68.
    let output = run(tokio::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null"])
        .arg(format!("tftp://{}/nothing/here", server.addr)))
    .await;
    assert_eq!(output.status.code(), Some(68), "{output:?}");
}

async fn raw_socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("bind")
}

async fn recv(socket: &UdpSocket, within: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 70_000];
    match tokio::time::timeout(within, socket.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => Some((buf[..n].to_vec(), from)),
        _ => None,
    }
}

/// A read request asking only for the file's size (`tsize`), as a firmware's probe does.
fn size_query(filename: &str) -> Vec<u8> {
    rrq(
        filename,
        RequestOptions {
            tsize: Some(0),
            ..RequestOptions::default()
        },
    )
}

fn rrq(filename: &str, options: RequestOptions) -> Vec<u8> {
    Packet::Rrq(Request {
        filename: filename.into(),
        mode: Mode::Octet,
        options,
    })
    .to_bytes()
}

#[tokio::test]
async fn write_requests_are_refused() {
    let server = Server::start(ServerConfig::default()).await;
    let socket = raw_socket().await;
    let wrq = Packet::Wrq(Request {
        filename: "upload.bin".into(),
        mode: Mode::Octet,
        options: RequestOptions::default(),
    })
    .to_bytes();
    socket.send_to(&wrq, server.addr).await.expect("send");
    let (reply, _) = recv(&socket, Duration::from_secs(2))
        .await
        .expect("a reply");
    assert_eq!(
        packet::parse(&reply),
        Ok(Packet::Error {
            code: ErrorCode::AccessViolation,
            message: "write requests are not accepted".into()
        })
    );
    assert!(!server.dir.path().join("upload.bin").exists());
}

#[tokio::test]
async fn malformed_requests_get_error_4_or_8() {
    let server = Server::start(ServerConfig::default()).await;
    let socket = raw_socket().await;
    for (datagram, code) in [
        (&b"\0\x01no-mode"[..], ErrorCode::IllegalOperation),
        (&b"\0\x01f\0mail\0"[..], ErrorCode::IllegalOperation),
        (&b"\0\x2a"[..], ErrorCode::IllegalOperation),
        (
            &b"\0\x01f\0octet\0blksize\x004\0"[..],
            ErrorCode::OptionNegotiation,
        ),
    ] {
        socket.send_to(datagram, server.addr).await.expect("send");
        let (reply, _) = recv(&socket, Duration::from_secs(2))
            .await
            .expect("a reply");
        match packet::parse(&reply) {
            Ok(Packet::Error { code: got, .. }) => assert_eq!(got, code, "for {datagram:?}"),
            other => panic!("not an error for {datagram:?}: {other:?}"),
        }
    }
    // Stray ACK/DATA/ERROR at the listener: silence.
    for datagram in [&b"\0\x04\0\x01"[..], b"\0\x03\0\x01abc", b"\0\x05\0\x01x\0"] {
        socket.send_to(datagram, server.addr).await.expect("send");
    }
    assert!(recv(&socket, Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn ten_thousand_malformed_packets_leave_it_serving() {
    let mut server = Server::start(quick()).await;
    let data = noise(20_000, 5);
    server.put("config.txt", &data);
    let socket = raw_socket().await;
    let valid = rrq(
        "config.txt",
        RequestOptions {
            blksize: Some(1024),
            tsize: Some(0),
            ..RequestOptions::default()
        },
    );
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..10_000 {
        let datagram = match i % 4 {
            // Random bytes of random length.
            0 => {
                let len = (next() % 1500) as usize;
                (0..len).map(|_| next() as u8).collect::<Vec<u8>>()
            }
            // A valid request with bytes flipped.
            1 => {
                let mut d = valid.clone();
                for _ in 0..(1 + next() % 4) {
                    let at = (next() as usize) % d.len();
                    d[at] = next() as u8;
                }
                d
            }
            // A valid request cut short.
            2 => valid[..(next() as usize) % valid.len()].to_vec(),
            // A known opcode with a random body.
            _ => {
                let mut d = vec![0, (next() % 7) as u8];
                d.extend((0..next() % 40).map(|_| [0u8, b'a', b'1', 0xff][(next() % 4) as usize]));
                d
            }
        };
        socket.send_to(&datagram, server.addr).await.expect("send");
        if i % 500 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert!(
        !server.task.is_finished(),
        "server stopped: {:?}",
        server.task
    );
    let fetched = fetch(server.addr, "config.txt", &FetchOptions::default())
        .await
        .expect("fetch after the storm");
    assert!(fetched.data == data);
    // Drain reports until our own fetch's shows up as sent.
    loop {
        let report = server.report().await;
        if report.outcome == Outcome::Sent && report.bytes == data.len() as u64 {
            break;
        }
    }
}

#[tokio::test]
async fn client_that_stops_acking_is_given_up_after_retries() {
    let mut server = Server::start(quick()).await;
    server.put("kernel7.img", &noise(10_000, 6));
    let socket = raw_socket().await;
    socket
        .send_to(&rrq("kernel7.img", RequestOptions::default()), server.addr)
        .await
        .expect("send");
    let mut data_packets = 0;
    while let Some((reply, from)) = recv(&socket, Duration::from_millis(500)).await {
        assert_ne!(from, server.addr, "data must come from a new transfer id");
        match packet::parse(&reply) {
            Ok(Packet::Data { block: 1, data }) => {
                assert_eq!(data.len(), 512);
                data_packets += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The first send and 3 retransmissions.
    assert_eq!(data_packets, 4);
    let report = server.report().await;
    assert_eq!((report.outcome, report.bytes), (Outcome::GaveUp, 0));
}

/// Fetches `name` with a raw socket, acknowledging every block but the last; returns the
/// socket, the transfer's address and the file's bytes as received.
async fn fetch_all_but_the_final_ack(
    server: &Server,
    name: &str,
) -> (UdpSocket, SocketAddr, Vec<u8>) {
    let socket = raw_socket().await;
    socket
        .send_to(&rrq(name, RequestOptions::default()), server.addr)
        .await
        .expect("send");
    let mut received = Vec::new();
    loop {
        let (reply, tid) = recv(&socket, Duration::from_secs(2))
            .await
            .expect("next DATA");
        let Ok(Packet::Data { block, data }) = packet::parse(&reply) else {
            panic!("not DATA: {reply:?}");
        };
        received.extend_from_slice(data);
        if data.len() < 512 {
            return (socket, tid, received);
        }
        let ack = Packet::Ack { block }.to_bytes();
        socket.send_to(&ack, tid).await.expect("send ack");
    }
}

#[tokio::test]
async fn a_lost_final_ack_is_reported_unconfirmed_not_given_up() {
    let mut server = Server::start(quick()).await;
    let data = noise(1300, 12);
    server.put("fixup4.dat", &data);
    // The client has the whole file; its final ACK never reaches the server.
    let (socket, tid, received) = fetch_all_but_the_final_ack(&server, "fixup4.dat").await;
    assert!(received == data);
    let mut resent = 0;
    while let Some((reply, from)) = recv(&socket, Duration::from_millis(500)).await {
        assert_eq!(from, tid);
        match packet::parse(&reply) {
            Ok(Packet::Data { block: 3, data }) => {
                assert_eq!(data.len(), 1300 - 1024);
                resent += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The last block was resent until the retries (3) ran out.
    assert_eq!(resent, 3);
    let report = server.report().await;
    assert_eq!(
        (report.outcome, report.bytes, report.retransmissions),
        (Outcome::Unconfirmed, 1024, 3)
    );

    // A client that closes its socket after the last block (as tftp-hpa and the Pi do)
    // makes the server's resend bounce: unconfirmed at once, without waiting out retries.
    let started = Instant::now();
    let (socket, _, received) = fetch_all_but_the_final_ack(&server, "fixup4.dat").await;
    assert!(received == data);
    drop(socket);
    let report = server.report().await;
    assert_eq!((report.outcome, report.bytes), (Outcome::Unconfirmed, 1024));
    assert!(started.elapsed() < Duration::from_millis(350), "{report:?}");
}

#[tokio::test]
async fn duplicate_acks_do_not_duplicate_data() {
    let mut server = Server::start(patient()).await;
    let data = noise(1500, 7);
    server.put("fixup.dat", &data);
    let socket = raw_socket().await;
    socket
        .send_to(&rrq("fixup.dat", RequestOptions::default()), server.addr)
        .await
        .expect("send");
    let mut received = Vec::new();
    let (first, tid) = recv(&socket, Duration::from_secs(2)).await.expect("DATA 1");
    let Ok(Packet::Data { block: 1, data: d }) = packet::parse(&first) else {
        panic!("not DATA 1: {first:?}");
    };
    received.extend_from_slice(d);
    for block in 1u16..=3 {
        let ack = Packet::Ack { block }.to_bytes();
        let repeats = if block < 3 { 3 } else { 1 };
        for _ in 0..repeats {
            socket.send_to(&ack, tid).await.expect("send ack");
        }
        if block == 3 {
            break;
        }
        let (reply, _) = recv(&socket, Duration::from_secs(2))
            .await
            .expect("next DATA");
        match packet::parse(&reply) {
            Ok(Packet::Data { block: b, data: d }) if b == block + 1 => {
                received.extend_from_slice(d)
            }
            other => panic!("expected DATA {}: {other:?}", block + 1),
        }
        assert!(
            recv(&socket, Duration::from_millis(300)).await.is_none(),
            "a duplicate ACK {block} caused a second DATA"
        );
    }
    assert!(received == data);
    let report = server.report().await;
    assert_eq!((report.outcome, report.bytes), (Outcome::Sent, 1500));
}

#[tokio::test]
async fn client_error_aborts_the_transfer() {
    let mut server = Server::start(ServerConfig::default()).await;
    server.put("start.elf", &noise(4000, 8));
    let socket = raw_socket().await;
    let request = size_query("start.elf");
    socket.send_to(&request, server.addr).await.expect("send");
    let (reply, tid) = recv(&socket, Duration::from_secs(2)).await.expect("OACK");
    assert_eq!(
        packet::parse(&reply),
        Ok(Packet::Oack(RequestOptions {
            tsize: Some(4000),
            ..RequestOptions::default()
        }))
    );
    // As a Pi does after reading tsize.
    let mut abort = Vec::new();
    packet::encode_error(ErrorCode::NotDefined, "early terminate", &mut abort);
    socket.send_to(&abort, tid).await.expect("send error");
    assert_eq!(server.report().await.outcome, Outcome::Aborted);

    // The client's size query does the same.
    let options = FetchOptions {
        blksize: Some(1468),
        ..FetchOptions::default()
    };
    let size = bakery_tftp::query_size(server.addr, "start.elf", &options)
        .await
        .expect("size");
    assert_eq!(size, Some(4000));
    let report = server.report().await;
    assert_eq!((report.outcome, report.bytes), (Outcome::Aborted, 0));
    let missing = bakery_tftp::query_size(server.addr, "nope", &options)
        .await
        .expect_err("missing");
    assert!(missing.is_not_found(), "{missing}");
}

#[tokio::test]
async fn busy_server_refuses_beyond_max_transfers() {
    let mut server = Server::start(ServerConfig {
        max_transfers: 1,
        ..quick()
    })
    .await;
    server.put("a", &noise(5000, 9));
    let hog = raw_socket().await;
    hog.send_to(&rrq("a", RequestOptions::default()), server.addr)
        .await
        .expect("send");
    recv(&hog, Duration::from_secs(2))
        .await
        .expect("DATA 1 for the hog");
    let error = fetch(server.addr, "a", &FetchOptions::default())
        .await
        .expect_err("busy");
    assert!(
        matches!(&error, bakery_tftp::ClientError::Remote { code: ErrorCode::NotDefined, message, .. } if message == "server busy"),
        "{error}"
    );
    assert_eq!(server.report().await.outcome, Outcome::GaveUp);
    fetch(server.addr, "a", &FetchOptions::default())
        .await
        .expect("served again once the hog is given up");
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let mut server = Server::start(ServerConfig::default()).await;
    server.put("x", b"x");
    fetch(server.addr, "x", &FetchOptions::default())
        .await
        .expect("before shutdown");
    if let Some(stop) = server.stop.take() {
        let _ = stop.send(());
    }
    let result = tokio::time::timeout(Duration::from_secs(2), &mut server.task)
        .await
        .expect("serve returned")
        .expect("serve task");
    assert!(result.is_ok());
    let error = fetch(
        server.addr,
        "x",
        &FetchOptions {
            timeout: Duration::from_millis(100),
            retries: 1,
            ..FetchOptions::default()
        },
    )
    .await
    .expect_err("no server after shutdown");
    assert!(
        matches!(error, bakery_tftp::ClientError::TimedOut { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn many_transfers_run_in_parallel() {
    let mut server = Server::start(ServerConfig::default()).await;
    let files: Vec<Vec<u8>> = (0..40)
        .map(|i| noise(100_000 + i * 1000, 100 + i as u64))
        .collect();
    for (i, data) in files.iter().enumerate() {
        server.put(&format!("f{i}"), data);
    }
    let fetches: Vec<_> = (0..files.len())
        .map(|i| {
            let addr = server.addr;
            tokio::spawn(async move {
                let options = FetchOptions {
                    blksize: Some(1468),
                    tsize: true,
                    windowsize: (i % 2 == 0).then_some(8),
                    ..FetchOptions::default()
                };
                fetch(addr, &format!("f{i}"), &options).await
            })
        })
        .collect();
    for (i, task) in fetches.into_iter().enumerate() {
        let fetched = task.await.expect("task").expect("fetch");
        assert!(fetched.data == files[i], "f{i} differs");
    }
    for _ in 0..files.len() {
        assert_eq!(server.report().await.outcome, Outcome::Sent);
    }
}

#[tokio::test]
async fn serves_over_ipv6_loopback() {
    let Ok(socket) = UdpSocket::bind("[::1]:0").await else {
        eprintln!("no ipv6 loopback here; skipped");
        return;
    };
    let addr = socket.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("v6.txt"), b"over ipv6\n").expect("write");
    let (tx, _reports) = mpsc::unbounded_channel();
    let provider = Arc::new(DirProvider {
        root: dir.path().to_owned(),
        reports: Mutex::new(tx),
    });
    tokio::spawn(serve(
        socket,
        provider,
        ServerConfig::default(),
        std::future::pending(),
    ));
    let fetched = fetch(
        addr,
        "v6.txt",
        &FetchOptions {
            tsize: true,
            ..FetchOptions::default()
        },
    )
    .await
    .expect("fetch over ipv6");
    assert_eq!(fetched.data, b"over ipv6\n");
}

/// Relays one client's transfer to the server, dropping every `drop_up`th packet from the
/// client and every `drop_down`th packet from the server.
async fn lossy_proxy(server: SocketAddr, drop_up: u64, drop_down: u64) -> SocketAddr {
    let front = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let back = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = front.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut client: Option<SocketAddr> = None;
        let mut tid: Option<SocketAddr> = None;
        let (mut up, mut down) = (0u64, 0u64);
        let mut a = vec![0u8; 70_000];
        let mut b = vec![0u8; 70_000];
        loop {
            tokio::select! {
                Ok((n, from)) = front.recv_from(&mut a) => {
                    client = Some(from);
                    up += 1;
                    if up % drop_up != 0 {
                        let _ = back.send_to(&a[..n], tid.unwrap_or(server)).await;
                    }
                }
                Ok((n, from)) = back.recv_from(&mut b) => {
                    tid = Some(from);
                    down += 1;
                    if let (Some(client), true) = (client, down % drop_down != 0) {
                        let _ = front.send_to(&b[..n], client).await;
                    }
                }
            }
        }
    });
    addr
}

#[tokio::test]
async fn transfers_survive_packet_loss() {
    let mut server = Server::start(ServerConfig {
        timeout: Duration::from_millis(40),
        retries: 10,
        ..ServerConfig::default()
    })
    .await;
    let data = noise(150_000, 11);
    server.put("lossy.bin", &data);
    for windowsize in [None, Some(8)] {
        let proxy = lossy_proxy(server.addr, 5, 7).await;
        let fetched = fetch(
            proxy,
            "lossy.bin",
            &FetchOptions {
                blksize: Some(1468),
                windowsize,
                tsize: true,
                timeout: Duration::from_millis(40),
                retries: 10,
                ..FetchOptions::default()
            },
        )
        .await
        .expect("fetch through loss");
        assert!(
            fetched.data == data,
            "windowsize {windowsize:?}: bytes differ"
        );
        // The final ACK may be lost; then the transfer is sent but unconfirmed.
        let report = server.report().await;
        assert!(
            matches!(report.outcome, Outcome::Sent | Outcome::Unconfirmed),
            "{report:?}"
        );
        // Lost ACKs made the server send windows again, and the report counts them.
        assert!(report.retransmissions > 0, "{report:?}");
    }
}

#[tokio::test]
async fn a_repeated_request_is_answered_by_the_one_transfer() {
    let mut server = Server::start(patient()).await;
    let data = noise(300, 11);
    server.put("slow-start4.elf", &data);
    let socket = raw_socket().await;
    // A client that finds the server slow sends its request three times before any answer.
    let request = rrq("slow-start4.elf", RequestOptions::default());
    for _ in 0..3 {
        socket.send_to(&request, server.addr).await.expect("send");
    }
    let (first, tid) = recv(&socket, Duration::from_secs(2)).await.expect("DATA 1");
    assert!(matches!(
        packet::parse(&first),
        Ok(Packet::Data { block: 1, .. })
    ));
    assert!(
        recv(&socket, Duration::from_millis(500)).await.is_none(),
        "a repeated request started a second transfer"
    );
    socket
        .send_to(&Packet::Ack { block: 1 }.to_bytes(), tid)
        .await
        .expect("send ack");
    assert_eq!(server.report().await.outcome, Outcome::Sent);
    assert!(server.reports.try_recv().is_err(), "more than one transfer");

    // A size probe ended with an ERROR and the same request sent again at once from the
    // same port (as a firmware may): answered, by a new transfer.
    let probe = size_query("slow-start4.elf");
    socket.send_to(&probe, server.addr).await.expect("send");
    let (oack, probe_tid) = recv(&socket, Duration::from_secs(2)).await.expect("OACK");
    assert!(
        matches!(packet::parse(&oack), Ok(Packet::Oack(_))),
        "{oack:?}"
    );
    let mut abort = Vec::new();
    packet::encode_error(ErrorCode::NotDefined, "early terminate", &mut abort);
    socket.send_to(&abort, probe_tid).await.expect("send");
    socket.send_to(&probe, server.addr).await.expect("send");
    let (again, fetch_tid) = recv(&socket, Duration::from_secs(2))
        .await
        .expect("the repeated probe answered");
    assert!(
        matches!(packet::parse(&again), Ok(Packet::Oack(_))),
        "{again:?}"
    );
    assert_ne!(fetch_tid, probe_tid);
    socket.send_to(&abort, fetch_tid).await.expect("send");
    assert_eq!(server.report().await.outcome, Outcome::Aborted);
    assert_eq!(server.report().await.outcome, Outcome::Aborted);

    // A refusal is sent once too: repeats right after it get no second "file not found".
    let missing = rrq("fixup4.dat", RequestOptions::default());
    for _ in 0..3 {
        socket.send_to(&missing, server.addr).await.expect("send");
    }
    let (refusal, _) = recv(&socket, Duration::from_secs(2))
        .await
        .expect("an error");
    assert!(matches!(
        packet::parse(&refusal),
        Ok(Packet::Error {
            code: ErrorCode::FileNotFound,
            ..
        })
    ));
    assert!(
        recv(&socket, Duration::from_millis(500)).await.is_none(),
        "a repeated request was refused twice"
    );
    assert_eq!(server.report().await.outcome, Outcome::NotFound);
    assert!(server.reports.try_recv().is_err(), "more than one refusal");
}

#[tokio::test]
async fn the_client_follows_only_a_packet_that_answers_its_request() {
    // A stand-in server: its listener takes the request, then a stale transfer (another
    // file's, sent to this port's previous owner) speaks first, then the real one answers.
    let listener = raw_socket().await;
    let server = listener.local_addr().expect("local addr");
    let fetching =
        tokio::spawn(async move { fetch(server, "start4.elf", &FetchOptions::default()).await });
    let mut buf = vec![0u8; 1024];
    let (_, client) = tokio::time::timeout(Duration::from_secs(5), listener.recv_from(&mut buf))
        .await
        .expect("the request in time")
        .expect("recv");
    let stale = raw_socket().await;
    let mut packet = Vec::new();
    packet::encode_data_header(7, &mut packet);
    packet.extend_from_slice(b"another file's middle");
    stale.send_to(&packet, client).await.expect("send");
    let oack = Packet::Oack(RequestOptions {
        tsize: Some(9),
        ..RequestOptions::default()
    })
    .to_bytes();
    stale.send_to(&oack, client).await.expect("send");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let real = raw_socket().await;
    packet.clear();
    packet::encode_data_header(1, &mut packet);
    packet.extend_from_slice(b"firmware");
    real.send_to(&packet, client).await.expect("send");
    let (ack, _) = recv(&real, Duration::from_secs(2)).await.expect("ACK 1");
    assert_eq!(packet::parse(&ack), Ok(Packet::Ack { block: 1 }));
    let fetched = fetching.await.expect("joined").expect("fetched");
    assert_eq!(fetched.data, b"firmware");
}
