//! The event log agrees with the inventory after crashes: SIGKILL the real server at random
//! moments during bakes, resets and unbakes, restart it, and replay every Pi's lifecycle
//! events through the state machine: each event must be a legal step from the state the
//! previous ones left, and the last must leave the Pi in the state it has now (a baked Pi's
//! last lifecycle event is a `bakeFinished`, and so on).
//!
//! `BAKERY_EVENTLOG_TRIALS` (default 20) sets the number of kills, `BAKERY_EVENTLOG_SEED`
//! replays a run (the seed is printed).

use std::collections::BTreeMap;
use std::time::Duration;

use bakery_client::{Event, EventList, PiMap, PiState};
use serde_json::json;

use crate::common::{
    Env, OS, Rng, Server, kill_and_restart, ready_server, time_bake_and_unbake, trials_and_seed,
};

/// The whole event log, page by page.
fn all_events(server: &Server) -> Vec<Event> {
    let mut events = Vec::new();
    let mut since = 0;
    loop {
        let page: EventList = server
            .get(&format!("/events?since={since}&limit=1000"))
            .json()
            .unwrap();
        let Some(last) = page.events.last() else {
            return events;
        };
        since = last.id;
        events.extend(page.events);
    }
}

/// The state a lifecycle event moves a Pi to from `from`; `None` for a kind that is no
/// lifecycle step (power, disks), `Some(Err)` for a step that is not legal from `from`.
fn replay(from: Option<PiState>, kind: &str) -> Option<Result<PiState, String>> {
    use PiState::{Baked, Fridge, Preparing, Unbaking};
    let (legal_from, to): (&[Option<PiState>], PiState) = match kind {
        "registered" => (&[None], Fridge),
        "bakeStarted" => (&[Some(Fridge)], Preparing),
        "resetStarted" => (&[Some(Baked)], Preparing),
        "bakeFinished" => (&[Some(Preparing)], Baked),
        "bakeFailed" => (&[Some(Preparing)], Fridge),
        "unbakeStarted" => (&[Some(Baked)], Unbaking),
        "unbaked" => (&[Some(Unbaking)], Fridge),
        _ => return None,
    };
    Some(if legal_from.contains(&from) {
        Ok(to)
    } else {
        Err(format!("{kind} from {from:?}"))
    })
}

/// Every Pi's events replayed agree with its state; ids increase. `Err` names what broke.
fn log_agrees_with_state(server: &Server) -> Result<(), String> {
    let events = all_events(server);
    if let Some(w) = events.windows(2).find(|w| w[0].id >= w[1].id) {
        return Err(format!("ids not increasing: {} then {}", w[0].id, w[1].id));
    }
    let mut replayed: BTreeMap<String, Option<PiState>> = BTreeMap::new();
    for event in &events {
        let Some(pi) = &event.pi else { continue };
        let state = replayed.entry(pi.clone()).or_insert(None);
        match replay(*state, &event.kind) {
            None => {}
            Some(Ok(to)) => *state = Some(to),
            Some(Err(e)) => return Err(format!("pi {pi}: event {} is {e}", event.id)),
        }
    }
    let pis: PiMap = server.get("/pis").json().unwrap();
    for pi in pis.values() {
        let logged = replayed.get(&pi.id).copied().flatten();
        if logged != pi.state {
            return Err(format!(
                "pi {} is {:?} but its events leave it {logged:?}",
                pi.id, pi.state
            ));
        }
    }
    if let Some(extra) = replayed.keys().find(|serial| !pis.contains_key(*serial)) {
        return Err(format!(
            "events about pi {extra} the inventory does not know"
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Bake,
    Reset,
    Unbake,
}

/// Starts `op` on the server in the background (its outcome does not matter: it is killed).
fn start_op(server: &Server, op: Op, baked: Option<String>) -> std::thread::JoinHandle<()> {
    let base = server.base.clone();
    std::thread::spawn(move || {
        let c = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let _ = match (op, baked) {
            (Op::Bake, _) => c
                .post(format!("{base}/fridge"))
                .json(&json!({"bakeformName": OS}))
                .send(),
            (Op::Reset, Some(pi)) => c.post(format!("{base}/oven/{pi}/reset")).send(),
            (Op::Unbake, Some(pi)) => c.delete(format!("{base}/oven/{pi}")).send(),
            (_, None) => return,
        };
    })
}

#[test]
fn sigkill_during_bakes_and_unbakes_leaves_events_agreeing_with_states() {
    let (trials, seed) = trials_and_seed("BAKERY_EVENTLOG", "event log crash test", 20);
    let mut rng = Rng(seed);

    let env = Env::new();
    let (mut server, _) = ready_server(&env, 3);
    // Time one bake and one unbake, so kills land inside them.
    let (bake_ms, unbake_ms) = time_bake_and_unbake(&server);
    log_agrees_with_state(&server).unwrap();

    let mut counts = BTreeMap::new();
    for trial in 0..trials {
        let pis: PiMap = server.get("/pis").json().unwrap();
        let baked = pis
            .values()
            .find(|p| p.state == Some(PiState::Baked))
            .map(|p| p.id.clone());
        let fridge = pis.values().any(|p| p.state == Some(PiState::Fridge));
        let op = match (rng.below(3), &baked) {
            (0, Some(_)) => Op::Unbake,
            (1, Some(_)) => Op::Reset,
            _ if fridge => Op::Bake,
            _ => Op::Unbake,
        };
        let window = if op == Op::Unbake { unbake_ms } else { bake_ms };
        let delay = rng.moment_within(window);
        *counts.entry(format!("{op:?}")).or_insert(0) += 1;
        let job = start_op(&server, op, baked);
        kill_and_restart(&mut server, &env, job, delay);
        if let Err(broken) = log_agrees_with_state(&server) {
            panic!(
                "trial {trial} ({op:?} killed after {delay:?}), BAKERY_EVENTLOG_SEED={seed}: {broken}\nevents: {:#?}",
                all_events(&server)
            );
        }
    }
    println!("event log crash test: ops killed {counts:?}");
    // Still consistent after work that is not interrupted.
    let pis: PiMap = server.get("/pis").json().unwrap();
    if pis.values().any(|p| p.state == Some(PiState::Fridge)) {
        server.bake_ready(false);
    }
    log_agrees_with_state(&server).unwrap();
}

#[test]
fn replay_refuses_steps_the_state_machine_does_not_allow() {
    assert_eq!(replay(None, "registered"), Some(Ok(PiState::Fridge)));
    assert_eq!(replay(None, "powerOn"), None);
    assert!(matches!(
        replay(Some(PiState::Fridge), "bakeFinished"),
        Some(Err(_))
    ));
    assert!(matches!(
        replay(Some(PiState::Baked), "bakeStarted"),
        Some(Err(_))
    ));
    assert_eq!(
        replay(Some(PiState::Baked), "resetStarted"),
        Some(Ok(PiState::Preparing))
    );
}
