//! `bakery-ppi-simpleweb`: a power interface (PPI) for HTTP relay boards, speaking bakery's PPI
//! protocol as the first bakery's simpleweb PPI did.
//!
//! Run as `bakery-ppi-simpleweb -c <config>`; the config is JSON `{"url": "http://<board>",
//! "pis": {"<serial>": <port>, ...}}`; stdin is `{"piId": "<serial>", "action": "poweron" |
//! "poweroff" | "status"}`. The PPI sends `GET <url>/<action>/<port>` (HTTP/1.1, plain http,
//! 10 s timeout) and prints exactly `ok` when the board answers 2xx; anything else is a message
//! on stderr naming what failed, and exit status 1.
//!
//! `status` sends `GET <url>/status/<port>`: a 2xx answer whose body is `on` or `1` prints
//! `on`, `off` or `0` prints `off` (case and surrounding white space ignored); a 404 (a board
//! without the status page) prints `unknown`; any other answer is a failure as above.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use serde::Deserialize;

/// The board's answer must come within this.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The PPI config: the relay board and which port switches which Pi.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Base URL of the board, `http://host[:port][/prefix]`.
    url: String,
    /// Serial → relay port.
    pis: BTreeMap<String, u32>,
}

/// One PPI request from bakery.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    pi_id: String,
    action: String,
}

fn main() -> ExitCode {
    match run() {
        Ok(answer) => {
            print!("{answer}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("bakery-ppi-simpleweb: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Handles one request; the answer to print on success.
fn run() -> Result<&'static str, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = match args.as_slice() {
        [flag, path] if flag == "-c" => path,
        _ => return Err("usage: bakery-ppi-simpleweb -c <config.json>".into()),
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read config {path}: {e}"))?;
    let config: Config =
        serde_json::from_str(&text).map_err(|e| format!("config {path} is not valid: {e}"))?;
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("cannot read the request on stdin: {e}"))?;
    let request: Request =
        serde_json::from_str(&input).map_err(|e| format!("request {input:?} is not valid: {e}"))?;
    if !matches!(request.action.as_str(), "poweron" | "poweroff" | "status") {
        return Err(format!(
            "unknown action {:?} (expected poweron, poweroff or status)",
            request.action
        ));
    }
    let port = config
        .pis
        .get(&request.pi_id)
        .ok_or_else(|| format!("pi {} has no port in config {path}", request.pi_id))?;
    let answer = get(&config.url, &format!("{}/{port}", request.action))?;
    let status = request.action == "status";
    if status && answer.status == 404 {
        return Ok("unknown");
    }
    if !answer.is_success() {
        return Err(format!(
            "the board at {} answered {}",
            answer.url, answer.status_line
        ));
    }
    if !status {
        return Ok("ok");
    }
    match answer.body.trim().to_ascii_lowercase().as_str() {
        "on" | "1" => Ok("on"),
        "off" | "0" => Ok("off"),
        _ => Err(format!(
            "the board at {} answered {:?}, expected on, off, 1 or 0",
            answer.url, answer.body
        )),
    }
}

/// What the board answered.
struct Answer {
    /// The URL asked.
    url: String,
    /// The status code.
    status: u16,
    /// The whole status line.
    status_line: String,
    /// The body (chunked transfer decoded).
    body: String,
}

impl Answer {
    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Decodes a chunked body as far as it is well formed.
fn dechunk(mut raw: &str) -> String {
    let mut body = String::new();
    while let Some((size, rest)) = raw.split_once("\r\n") {
        let size = size.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            body.push_str(rest.get(..size.min(rest.len())).unwrap_or_default());
            break;
        }
        body.push_str(&rest[..size]);
        raw = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    body
}

/// `GET <base>/<path>`: the board's answer, whatever its status.
fn get(base: &str, path: &str) -> Result<Answer, String> {
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("board url {base:?} must start with http://"))?;
    let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        return Err(format!("board url {base:?} names no host"));
    }
    let target = format!(
        "/{}{path}",
        if prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", prefix.trim_end_matches('/'))
        }
    );
    let with_port = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve board {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("board {authority} has no address"))?;
    let url = format!("http://{authority}{target}");
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|e| format!("cannot reach the board at {url}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("cannot send to the board at {url}: {e}"))?;
    let mut answer = Vec::new();
    // A board that resets the connection after its answer still answered.
    if let Err(e) = stream.read_to_end(&mut answer)
        && answer.is_empty()
    {
        return Err(format!("no answer from the board at {url}: {e}"));
    }
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or_default().to_owned();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("the board at {url} sent no HTTP answer: {status_line:?}"))?;
    let chunked = head.lines().skip(1).any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
        })
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(Answer {
        url,
        status,
        status_line,
        body,
    })
}
