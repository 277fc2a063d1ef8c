//! Runs the fleet simulation and prints its report and speed in door-days per second:
//! `cargo run --release -p chronolock-sim --example fleet -- --seed 7 --doors 200 --days 365`
//! (add `--door N` to replay one door, `--threads N` to use N threads instead of one per CPU,
//! `--json` for the report as JSON).

use std::process::ExitCode;
use std::time::Instant;

use chronolock_sim::fleet::{self, FleetConfig, RunFailure};

fn main() -> ExitCode {
    let mut cfg = FleetConfig {
        threads: 0,
        ..FleetConfig::default()
    };
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Option<u64> {
            let v = args.next().and_then(|v| v.parse().ok());
            if v.is_none() {
                eprintln!("{name} needs a number");
            }
            v
        };
        let ok = match arg.as_str() {
            "--seed" => value("--seed").map(|v| cfg.seed = v).is_some(),
            "--doors" => value("--doors").map(|v| cfg.doors = v as u32).is_some(),
            "--days" => value("--days").map(|v| cfg.days = v as u32).is_some(),
            "--door" => value("--door")
                .map(|v| cfg.only_door = Some(v as u32))
                .is_some(),
            "--threads" => value("--threads").map(|v| cfg.threads = v as u32).is_some(),
            "--json" => {
                json = true;
                true
            }
            other => {
                eprintln!("unknown argument {other}");
                false
            }
        };
        if !ok {
            return ExitCode::from(2);
        }
    }
    let started = Instant::now();
    let result = fleet::run(&cfg);
    let secs = started.elapsed().as_secs_f64();
    let (report, code) = match result {
        Ok(report) => (report, ExitCode::SUCCESS),
        Err(RunFailure::Invariant(failure)) => {
            eprintln!("{}", failure.first);
            eprintln!("replay: {}", failure.replay);
            (failure.report, ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if json {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.text_with_examples());
    }
    eprintln!(
        "{} door-days in {secs:.2} s: {:.0} door-days/s",
        report.door_days,
        report.door_days as f64 / secs
    );
    code
}
