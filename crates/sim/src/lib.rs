//! chronolock-sim: the host shells that run the shared door
//! ([`chronolock_device::door::Door`]) in simulated worlds.
//!
//! - [`scenario`]: the scenario contract's JSON Lines format, parsed strictly.
//! - [`runner`]: the deterministic discrete-event simulator that plays a scenario.
//! - [`card`]: a software NTAG 424 DNA (the card side of secure cards).
//! - [`fleet`]: many doors and a backend over months of virtual time, checked by invariants.
//! - [`live`]: virtual doors in real time, talking UDP NTP and HTTP to a real server.

pub mod card;
pub mod fleet;
pub mod live;
pub mod runner;
pub mod scenario;

use std::path::Path;

pub use runner::{Notes, Sim, Stuck};
pub use scenario::{Scenario, ScenarioError};

/// Why a run produced no events.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The scenario is malformed (exit status 2).
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// The simulation could not complete (a bug; exit status 1).
    #[error(transparent)]
    Stuck(#[from] Stuck),
}

/// The events of a scenario file as JSON Lines text, and notes on what was not simulated.
pub fn run_file(path: &Path) -> Result<(String, Notes), RunError> {
    let scenario = Scenario::from_file(path)?;
    let (events, notes) = Sim::run(&scenario)?;
    let mut out = String::new();
    for e in events {
        out.push_str(&e.to_string());
        out.push('\n');
    }
    Ok((out, notes))
}
