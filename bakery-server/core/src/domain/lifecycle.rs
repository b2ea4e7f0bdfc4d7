//! The Pi lifecycle as an explicit state machine: fridge → preparing → baked → unbaking →
//! fridge, plus reset (baked → preparing → baked) and start-up repair.

use bakery_client::PiState;
use thiserror::Error;

/// Something that happens to a Pi.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A bake was accepted: its root is being cloned.
    StartBake,
    /// A reset was accepted: its root is being re-cloned.
    StartReset,
    /// The root is cloned and exported.
    Prepared,
    /// Preparing failed, or was interrupted by a crash: back to the fridge.
    PrepareFailed,
    /// An unbake was accepted.
    StartUnbake,
    /// The Pi's disks are torn down.
    Unbaked,
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("a pi that is {} cannot {}", .from.as_str(), event_name(*.event))]
pub struct TransitionError {
    /// The state the Pi is in.
    pub from: PiState,
    /// What was attempted.
    pub event: Event,
}

fn event_name(event: Event) -> &'static str {
    match event {
        Event::StartBake => "be baked",
        Event::StartReset => "be reset",
        Event::Prepared => "finish preparing",
        Event::PrepareFailed => "fail preparing",
        Event::StartUnbake => "be unbaked",
        Event::Unbaked => "finish unbaking",
    }
}

/// The state a Pi in `from` moves to on `event`, or why it can't.
pub fn transition(from: PiState, event: Event) -> Result<PiState, TransitionError> {
    use PiState::*;
    let to = match (from, event) {
        (Fridge, Event::StartBake) => Preparing,
        (Baked, Event::StartReset) => Preparing,
        (Preparing, Event::Prepared) => Baked,
        (Preparing, Event::PrepareFailed) => Fridge,
        (Baked, Event::StartUnbake) => Unbaking,
        (Unbaking, Event::Unbaked) => Fridge,
        _ => return Err(TransitionError { from, event }),
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use PiState::*;

    #[test]
    fn the_happy_cycle() {
        let mut s = Fridge;
        for e in [
            Event::StartBake,
            Event::Prepared,
            Event::StartUnbake,
            Event::Unbaked,
        ] {
            s = transition(s, e).unwrap();
        }
        assert_eq!(s, Fridge);
        assert_eq!(transition(Baked, Event::StartReset), Ok(Preparing));
        assert_eq!(transition(Preparing, Event::PrepareFailed), Ok(Fridge));
    }

    #[test]
    fn refused_transitions() {
        assert!(transition(Preparing, Event::StartBake).is_err());
        assert!(transition(Fridge, Event::StartUnbake).is_err());
        assert!(transition(Preparing, Event::StartUnbake).is_err());
        assert!(transition(Fridge, Event::StartReset).is_err());
        let err = transition(Fridge, Event::StartUnbake).unwrap_err();
        assert_eq!(err.to_string(), "a pi that is fridge cannot be unbaked");
    }
}
