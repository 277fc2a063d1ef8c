//! chronolock-sim: the host shell that runs the core [`Controller`](chronolock_core::Controller)
//! in a simulated world.
//!
//! - [`scenario`]: the scenario contract's JSON Lines format, parsed strictly.
//! - [`runner`]: the deterministic discrete-event simulator that plays a scenario.

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
