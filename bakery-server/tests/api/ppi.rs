//! The PPI protocol with a real executable: arguments, stdin, `ok`, failures, hangs.

use std::time::Duration;

use bakery_client::{ErrorBody, PiInfo, PiState};
use reqwest::StatusCode;

use crate::common::*;

#[test]
fn ppi_gets_config_flag_and_json_on_stdin() {
    let env = Env::new();
    let (server, _) = ready_server(&env, 1);
    env.clear_ppi_calls();
    server.bake_ready(true);
    let config = env.path("ppi.json").display().to_string();
    assert_eq!(
        env.ppi_calls(),
        vec![
            format!(r#"-c {config} {{"piId":"00000001","action":"poweroff"}}"#),
            format!(r#"-c {config} {{"piId":"00000001","action":"poweron"}}"#),
        ]
    );
}

fn failed_bake(mode: &str) -> String {
    let env = Env::new();
    let (server, _) = ready_server(&env, 1);
    env.set_ppi_mode(mode);
    let pi = server.bake(true);
    let resp = server.wait_baked(&pi.id);
    assert_eq!(resp.status(), StatusCode::CONFLICT, "mode {mode}");
    let pi: PiInfo = server.get(&format!("/pis/{}", pi.id)).json().unwrap();
    assert_eq!(pi.state, Some(PiState::Fridge));
    assert!(entries(&env.data().join("disks")).is_empty());
    resp.json::<ErrorBody>().unwrap().error
}

#[test]
fn ppi_failure_text_is_quoted() {
    let err = failed_bake("fail");
    assert!(err.contains("relay board 10.9.9.9 unreachable"), "{err}");
    assert!(err.contains("exit status: 3"), "{err}");
}

#[test]
fn ppi_answer_other_than_ok_is_a_failure() {
    let err = failed_bake("garbage");
    assert!(err.contains("maybe later"), "{err}");
    let err = failed_bake("stderr");
    assert!(err.contains("port 7 flaky"), "{err}");
}

#[test]
fn ppi_ok_with_newline_is_accepted_and_a_hang_is_killed() {
    let env = Env::new();
    let (server, _) = ready_server(&env, 2);
    env.set_ppi_mode("okline");
    let pi = server.bake_ready(true);

    env.set_ppi_mode("hang");
    let started = std::time::Instant::now();
    let resp = server
        .client
        .post(server.url(&format!("/oven/{}/powercycle", pi.id)))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = resp.json::<ErrorBody>().unwrap().error;
    assert!(err.contains("timed out after 2s"), "{err}");
    assert!(err.contains("poweroff of pi 00000001"), "{err}");
    // The hung child was killed: no `sleep 30` left running from this ppi.
    env.set_ppi_mode("fail");
    let resp = server
        .client
        .post(server.url(&format!("/oven/{}/powercycle", pi.id)))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    // Power cycle of a Pi that is not baked.
    let resp = server
        .client
        .post(server.url("/oven/00000002/powercycle"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

#[test]
fn without_ppi_power_is_not_managed() {
    let env = Env::new();
    let server = Server::start_without(&env, &["--ppi", "--ppi-config"]);
    assert!(
        server.log_contains("power is not managed"),
        "{:?}",
        server.log.lock().unwrap()
    );
    server.add_pis(1);
    assert!(env.ppi_calls().is_empty());
}
