//! The time-sync flows of both seeds, asserted directly on the simulator's events and on the
//! device's clock against the simulated true time.

use chronolock_sim::scenario::{Scenario, Step};
use chronolock_sim::{Notes, Sim};
use proptest::prelude::*;
use serde_json::Value;

fn run(text: &str) -> Vec<Value> {
    let scenario = Scenario::parse(text, None).expect("valid scenario");
    Sim::run(&scenario).expect("runs").0
}

fn clock_events(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["event"] == "clock").collect()
}

const WORLD: &str = r#""start_utc": "2026-11-24T08:59:00Z""#;

#[test]
fn no_rtc_valid_one_round_trip_after_network_up() {
    let ev = run(&format!(
        "{{\"world\": {{{WORLD}, \"rtc\": null, \"network\": false, \"backend\": {{\"reachable\": false}}}}}}\n\
         {{\"t\": 0, \"do\": \"boot\"}}\n{{\"t\": 30, \"do\": \"network\", \"up\": true}}\n{{\"t\": 40, \"do\": \"end\"}}"
    ));
    let clock = clock_events(&ev);
    assert_eq!(clock[0]["valid"], false);
    assert_eq!(clock[0]["t"], 0.0);
    assert_eq!(clock[1]["valid"], true);
    assert_eq!(clock[1]["source"], "ntp");
    assert_eq!(
        clock[1]["t"], 30.02,
        "valid one 20 ms round trip after network-up"
    );
}

#[test]
fn valid_rtc_makes_the_clock_valid_at_boot() {
    let ev = run(&format!(
        "{{\"world\": {{{WORLD}, \"rtc\": {{\"utc\": \"2026-11-24T08:58:58Z\"}}, \"network\": false}}}}\n\
         {{\"t\": 0, \"do\": \"boot\"}}\n{{\"t\": 1, \"do\": \"end\"}}"
    ));
    let clock = clock_events(&ev);
    assert_eq!(
        (clock[0]["t"].as_f64(), clock[0]["source"].as_str()),
        (Some(0.0), Some("rtc"))
    );
    assert_eq!(clock[0]["utc"], "2026-11-24T08:58:58.5Z");
}

#[test]
fn oscillator_stop_flag_means_no_time_until_written_back() {
    let ev = run(&format!(
        "{{\"world\": {{{WORLD}, \"rtc\": {{\"osf\": true}}, \"network\": false, \"backend\": {{\"reachable\": false}}}}}}\n\
         {{\"t\": 0, \"do\": \"boot\"}}\n{{\"t\": 5, \"do\": \"network\", \"up\": true}}\n\
         {{\"t\": 10, \"do\": \"power_off\"}}\n{{\"t\": 11, \"do\": \"network\", \"up\": false}}\n\
         {{\"t\": 20, \"do\": \"boot\"}}\n{{\"t\": 21, \"do\": \"end\"}}"
    ));
    let kinds: Vec<(f64, &str)> = ev
        .iter()
        .map(|e| (e["t"].as_f64().unwrap(), e["event"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            (0.0, "clock"),
            (5.02, "clock"),
            (5.02, "rtc_write"),
            (20.0, "clock")
        ]
    );
    assert_eq!(ev[0]["valid"], false);
    assert_eq!(ev[3]["source"], "rtc", "OSF was cleared by the write-back");
}

#[test]
fn phone_sets_clock_and_rtc_only_in_setup_mode() {
    let text = |provisioned: bool| {
        format!(
            "{{\"world\": {{{WORLD}, \"rtc\": {{\"utc\": null}}, \"network\": false, \"provisioned\": {provisioned}}}}}\n\
             {{\"t\": 0, \"do\": \"boot\"}}\n{{\"t\": 3, \"do\": \"phone_time\", \"utc\": \"2026-11-24T08:59:03Z\"}}\n{{\"t\": 4, \"do\": \"end\"}}"
        )
    };
    let ev = run(&text(false));
    assert_eq!(ev[1]["source"], "phone");
    assert_eq!(ev[2]["event"], "rtc_write");
    let ev = run(&text(true));
    assert_eq!(ev[1]["event"], "time_rejected");
    assert_eq!(ev[1]["reason"], "not_in_setup_mode");
    assert_eq!(ev.len(), 2);
}

/// Steps through a scenario, checking after each small interval that whenever the device's clock
/// is valid, true time lies within its error bound.
fn check_bound_holds(text: &str, probe_every_s: i64) -> Result<u32, TestCaseError> {
    let scenario = Scenario::parse(text, None).expect("valid scenario");
    let mut sim = Sim::new(&scenario);
    let mut notes = Notes::default();
    let mut probes = 0;
    let end = scenario.steps.last().map_or(0, |s| s.t_us);
    let mut steps = scenario.steps.iter().peekable();
    let mut t = 0;
    while t <= end {
        while let Some(step) = steps.next_if(|s: &&Step| s.t_us <= t) {
            sim.advance_to(step.t_us).expect("not stuck");
            sim.apply(step, &mut notes);
        }
        sim.advance_to(t).expect("not stuck");
        if let Some(w) = sim.device_wall_time() {
            let off_us = w.utc.micros_since(sim.true_utc()).unsigned_abs();
            prop_assert!(
                off_us <= w.error_bound_ms * 1000 + 1,
                "t={}s: off by {} µs, bound {} ms",
                t / 1_000_000,
                off_us,
                w.error_bound_ms
            );
            probes += 1;
        }
        t += probe_every_s * 1_000_000;
    }
    Ok(probes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// In an honest world (drifts within the configured bounds, truthful servers), the device's
    /// error bound always contains true time: through boots, outages and RTC re-reads.
    #[test]
    fn error_bound_always_contains_true_time(
        device_ppm in -10.0f64..10.0,
        rtc in prop::option::of((-2.0f64..2.0, -1.5f64..1.5)),
        delay_ms in 1.0f64..400.0,
        backend in any::<bool>(),
        outages in prop::collection::vec((0u32..200_000, 1u32..100_000, any::<bool>()), 0..4),
    ) {
        let rtc = match rtc {
            None => "null".to_string(),
            Some((ppm, off)) => format!("{{\"utc\": {}, \"drift_ppm\": {ppm}}}", 1_795_510_740.0 + off),
        };
        let mut text = format!(
            "{{\"world\": {{{WORLD}, \"rtc\": {rtc}, \"device_drift_ppm\": {device_ppm}, \"network\": true, \
             \"ntp\": {{\"delay_ms\": {delay_ms}}}, \"backend\": {{\"reachable\": {backend}}}}}}}\n{{\"t\": 0, \"do\": \"boot\"}}\n"
        );
        let mut events: Vec<(u32, String)> = Vec::new();
        for (start, len, power) in outages {
            if power {
                events.push((start, "{\"do\": \"power_off\"}".into()));
                events.push((start + len, "{\"do\": \"boot\"}".into()));
            } else {
                events.push((start, "{\"do\": \"network\", \"up\": false}".into()));
                events.push((start + len, "{\"do\": \"network\", \"up\": true}".into()));
            }
        }
        events.sort_by_key(|(t, _)| *t);
        for (t, step) in events {
            text.push_str(&step.replacen('{', &format!("{{\"t\": {t}, "), 1));
            text.push('\n');
        }
        text.push_str("{\"t\": 400000, \"do\": \"end\"}\n");
        let probes = check_bound_holds(&text, 997)?;
        prop_assert!(probes > 0);
    }
}

#[test]
fn spoofing_server_never_moves_a_synced_clock() {
    let text = format!(
        "{{\"world\": {{{WORLD}, \"rtc\": null, \"network\": true, \"backend\": {{\"reachable\": false}}}}}}\n\
         {{\"t\": 0, \"do\": \"boot\"}}\n{{\"t\": 60, \"do\": \"ntp\", \"offset_s\": -86400}}\n{{\"t\": 100000, \"do\": \"end\"}}"
    );
    check_bound_holds(&text, 600).unwrap();
    let ev = run(&text);
    assert_eq!(
        clock_events(&ev).len(),
        2,
        "only invalid → valid at boot: {ev:?}"
    );
}

/// ADR-011's trust rule across a reboot: a clock set at boot from an RTC this door wrote after
/// an NTP sync counts as network-set, so one NTP server answering an hour off (the backend out
/// of reach) cannot step it; an RTC the phone set gives no such standing.
#[test]
fn an_rtc_written_from_network_time_holds_against_one_lying_server_after_reboot() {
    let scenario = |first_source: &str| {
        let (world_rtc, first) = match first_source {
            "ntp" => ("{\"utc\": null, \"drift_ppm\": 2.0}", ""),
            _ => (
                "{\"utc\": null, \"drift_ppm\": 2.0}",
                "{\"t\": 1, \"do\": \"phone_time\", \"utc\": \"2026-11-24T08:00:01Z\"}\n",
            ),
        };
        let network = first_source == "ntp";
        format!(
            "{{\"world\": {{\"start_utc\": \"2026-11-24T08:00:00Z\", \"rtc\": {world_rtc}, \"network\": {network}, \"ntp\": [{{\"reachable\": true, \"offset_s\": 0, \"delay_ms\": 20}}, {{\"reachable\": true, \"offset_s\": 0, \"delay_ms\": 30}}], \"backend\": {{\"reachable\": false}}}}}}\n\
             {{\"t\": 0, \"do\": \"boot\"}}\n{first}\
             {{\"t\": 120, \"do\": \"power_off\"}}\n\
             {{\"t\": 125, \"do\": \"ntp\", \"server\": 0, \"offset_s\": 3600}}\n\
             {{\"t\": 125, \"do\": \"ntp\", \"server\": 1, \"reachable\": false}}\n\
             {{\"t\": 130, \"do\": \"boot\"}}\n{{\"t\": 131, \"do\": \"network\", \"up\": true}}\n\
             {{\"t\": 1000, \"do\": \"end\"}}"
        )
    };
    let stepped_to_the_lie = |events: &[serde_json::Value]| {
        events.iter().any(|e| {
            e["event"] == "clock"
                && e["source"] == "ntp"
                && e["utc"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("2026-11-24T09:"))
        })
    };
    let after_ntp = run(&scenario("ntp"));
    assert!(!stepped_to_the_lie(&after_ntp), "{after_ntp:#?}");
    assert!(after_ntp
        .iter()
        .any(|e| e["event"] == "time_rejected" && e["reason"] == "awaiting_second_source"));
    let after_phone = run(&scenario("phone"));
    assert!(stepped_to_the_lie(&after_phone), "{after_phone:#?}");
}
