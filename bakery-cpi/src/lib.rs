//! BOSH CPI for bakery: `run(input, output, config)` answers one CPI request.
//!
//! The director starts `bakery-cpi` for every call, writes one JSON request on stdin and reads
//! one JSON response `{"result", "error", "log"}` from stdout (`../shared/specs/bosh-cpi.md`).
//! [`run`] always writes exactly one response, whatever the input.

pub mod agent;
pub mod backend;
pub mod config;
pub mod error;
pub mod log;
pub mod methods;
pub mod request;

use std::io::{self, Read, Write};
use std::path::Path;

use serde_json::{Value, json};

pub use config::Config;
pub use error::CpiError;
use log::Log;
use request::Request;

/// The largest request the CPI reads (16 MiB); larger input gets an error response.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// Answer the one request on `input` with one response on `output`.
///
/// `config` is the parsed config file, if any; the request's context is put over it.
/// Only a failure to write the response is an error.
pub fn run(input: &mut dyn Read, output: &mut dyn Write, config: Option<Config>) -> io::Result<()> {
    let mut log = Log::new(true);
    let outcome = read_request(input).and_then(|request| answer(&request, config, &mut log));
    respond(output, outcome, &log)
}

/// [`run`] with the config read from `path`; an unreadable config file is an error response.
pub fn run_with_config_file(
    input: &mut dyn Read,
    output: &mut dyn Write,
    path: &Path,
) -> io::Result<()> {
    match Config::from_file(path) {
        Ok(config) => run(input, output, Some(config)),
        Err(e) => fail(output, e.into()),
    }
}

/// Answer with an error response without reading a request (e.g. a bad command line).
pub fn fail(output: &mut dyn Write, error: CpiError) -> io::Result<()> {
    let log = Log::new(true);
    respond(output, Err(error), &log)
}

fn read_request(input: &mut dyn Read) -> Result<Request, CpiError> {
    let mut bytes = Vec::new();
    input
        .take(MAX_REQUEST_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(CpiError::ReadRequest)?;
    if bytes.len() > MAX_REQUEST_BYTES {
        return Err(CpiError::RequestTooLarge {
            limit: MAX_REQUEST_BYTES,
        });
    }
    Request::parse(&bytes)
}

fn answer(request: &Request, config: Option<Config>, log: &mut Log) -> Result<Value, CpiError> {
    log.line(format_args!(
        "{} (api_version {}, request_id {})",
        request.method,
        request.api_version,
        request
            .context
            .get("request_id")
            .and_then(Value::as_str)
            .unwrap_or("-")
    ));
    if !methods::needs_bakery(&request.method) {
        return methods::call_local(request);
    }
    let config = config.unwrap_or_default().with_context(&request.context)?;
    let client = config.client()?;
    methods::Cpi::new(&client, &config, request.api_version, log).call(request)
}

fn respond(output: &mut dyn Write, outcome: Result<Value, CpiError>, log: &Log) -> io::Result<()> {
    let response = match outcome {
        Ok(result) => json!({ "result": result, "error": null, "log": log.text() }),
        Err(error) => {
            let message = error.to_string();
            let mut text = log.text().to_string();
            text.push_str(&format!("bakery-cpi: error: {message}\n"));
            eprintln!("bakery-cpi: error: {message}");
            json!({
                "result": null,
                "error": {
                    "type": error.bosh_type(),
                    "message": message,
                    "ok_to_retry": error.ok_to_retry(),
                },
                "log": text,
            })
        }
    };
    let mut bytes = serde_json::to_vec(&response).map_err(io::Error::other)?;
    bytes.push(b'\n');
    output.write_all(&bytes)?;
    output.flush()
}
