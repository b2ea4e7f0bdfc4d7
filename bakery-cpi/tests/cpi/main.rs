//! Tests of the real `bakery-cpi` binary: JSON on stdin, one JSON response on stdout.

mod malformed;
mod mock;
mod server;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

/// What one run of the CPI produced.
pub struct Run {
    /// The parsed response.
    pub response: Value,
    /// Its stderr.
    pub stderr: String,
    /// Whether it exited 0.
    pub success: bool,
}

impl Run {
    /// The error type, if the response is an error.
    pub fn error_type(&self) -> Option<&str> {
        self.response["error"]["type"].as_str()
    }

    /// The error message ("" when none).
    pub fn message(&self) -> &str {
        self.response["error"]["message"].as_str().unwrap_or("")
    }
}

/// Run `bakery-cpi [args]` with `stdin`, check the response has the RPC shape, return it.
pub fn run_cpi(args: &[&str], stdin: Vec<u8>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bakery-cpi"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_clear()
        .spawn()
        .expect("bakery-cpi starts");
    let mut input = child.stdin.take().expect("stdin is piped");
    let writer = std::thread::spawn(move || {
        // The CPI may stop reading early (huge input): a broken pipe is expected then.
        let _ = input.write_all(&stdin);
    });
    let output = child.wait_with_output().expect("bakery-cpi runs");
    writer.join().expect("writer thread");
    let stdout = String::from_utf8(output.stdout).expect("stdout is utf-8");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        stdout.trim_end().lines().count(),
        1,
        "exactly one response line; stdout: {stdout:?}, stderr: {stderr}"
    );
    let response: Value = serde_json::from_str(&stdout).expect("stdout is json");
    let object = response.as_object().expect("response is an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["error", "log", "result"], "{response}");
    assert!(response["log"].is_string(), "{response}");
    if response["error"].is_null() {
        assert!(!response["result"].is_null() || stdout.contains("\"result\":null"));
    } else {
        assert!(response["result"].is_null(), "result and error: {response}");
        let error = response["error"].as_object().expect("error is an object");
        assert!(
            error["type"].is_string() && error["message"].is_string(),
            "{response}"
        );
        assert!(error["ok_to_retry"].is_boolean(), "{response}");
    }
    Run {
        response,
        stderr,
        success: output.status.success(),
    }
}

/// Run the CPI with a request built from parts.
pub fn call(config: Option<&Path>, request: &Value) -> Run {
    let path;
    let args: Vec<&str> = match config {
        Some(config) => {
            path = config.to_str().expect("utf-8 path").to_string();
            vec!["--config", &path]
        }
        None => vec![],
    };
    run_cpi(&args, request.to_string().into_bytes())
}
