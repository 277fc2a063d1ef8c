//! Prints the clock's headline figures in virtual time (deterministic):
//! time from network-up to a valid clock, and the error bound after 24 h offline, each with and
//! without an RTC, at the default drift bounds (device ±10 ppm, DS3231 ±2 ppm).
//!
//! `cargo run --release -p chronolock-sim --example clock_figures`

use chronolock_sim::scenario::Scenario;
use chronolock_sim::{Notes, Sim};

/// Plays every step of `text`, then calls `probe` every millisecond of virtual time until
/// `until_s`.
fn play(text: &str, until_s: f64, mut probe: impl FnMut(&Sim, i64)) -> Sim {
    let scenario = Scenario::parse(text, None).expect("valid scenario");
    let mut sim = Sim::new(&scenario);
    let mut notes = Notes::default();
    let mut steps = scenario.steps.iter().peekable();
    let end = (until_s * 1e6) as i64;
    let mut t = 0;
    while t <= end {
        while let Some(step) = steps.next_if(|s| s.t_us <= t) {
            sim.advance_to(step.t_us).expect("not stuck");
            sim.apply(step, &mut notes);
        }
        sim.advance_to(t).expect("not stuck");
        probe(&sim, t);
        t += if t < 200_000_000 { 1000 } else { 60_000_000 };
    }
    sim
}

fn main() {
    println!("figure\trtc\tvalue");
    for (label, rtc) in [
        ("no RTC", "null"),
        ("DS3231", "{\"utc\": \"2026-11-24T08:59:00Z\"}"),
    ] {
        // Network-up to valid: the device boots offline, the network comes up at t = 100 s.
        let text = format!(
            "{{\"world\": {{\"start_utc\": \"2026-11-24T08:59:00Z\", \"rtc\": {rtc}, \"network\": false, \"ntp\": {{\"delay_ms\": 20}}}}}}\n\
             {{\"t\": 0, \"do\": \"boot\"}}\n{{\"t\": 100, \"do\": \"network\", \"up\": true}}"
        );
        let mut first_valid = None;
        let sim = play(&text, 102.0, |sim, t| {
            if first_valid.is_none() && sim.device_wall_time().is_some() {
                first_valid = Some(t);
            }
        });
        let network_time = sim
            .events()
            .iter()
            .find(|e| e["event"] == "clock" && e["valid"] == true && e["source"] != "rtc")
            .and_then(|e| e["t"].as_f64());
        let valid_after = first_valid.map(|t| (t as f64 / 1e6 - 100.0).max(0.0));
        println!(
            "network-up to valid clock (s)\t{label}\t{}",
            fmt(valid_after)
        );
        println!(
            "network-up to network time (s)\t{label}\t{}",
            fmt(network_time.map(|t| t - 100.0))
        );

        // 24 h offline: synced by NTP (20 ms round trip) at boot, network down at t = 60 s.
        let text = format!(
            "{{\"world\": {{\"start_utc\": \"2026-11-24T08:59:00Z\", \"rtc\": {rtc}, \"network\": true, \"backend\": {{\"reachable\": false}}}}}}\n\
             {{\"t\": 0, \"do\": \"boot\"}}\n{{\"t\": 60, \"do\": \"network\", \"up\": false}}"
        );
        let sim = play(&text, 60.0 + 86_400.0, |_, _| {});
        let w = sim.device_wall_time().expect("valid");
        let off_ms = w.utc.micros_since(sim.true_utc()) as f64 / 1000.0;
        println!(
            "error bound after 24 h offline (ms)\t{label}\t{}",
            w.error_bound_ms
        );
        println!("actual error after 24 h offline (ms)\t{label}\t{off_ms:.1}");
    }
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "never".into(), |v| format!("{v:.3}"))
}
