//! Every row of ADR-011's fail-safe table (seed 004, "Fail-safe guardrails when clock is
//! unknown"), and the same credentials once the clock is valid, asserted by hand through
//! `chronolock sim run`'s scenario runner. These are written from the seed, not from the
//! program's output: the golden files under `scenarios/` must agree with them.

use chronolock_sim::scenario::Scenario;
use chronolock_sim::Sim;
use serde_json::Value;

/// Tuesday 2026-11-24, 10:00 UTC: inside the Tuesday 09:00–18:00 slot below.
const START: &str = "2026-11-24T10:00:00Z";

const LIST: &str = r#"{"entries": [
  {"card": "01010101", "access": "UNRESTRICTED"},
  {"card": "02020202", "access": "EMERGENCY"},
  {"card": "03030303", "access": "CONDITIONAL"},
  {"card": "04040404", "access": "SCHEDULED"},
  {"card": "05050505", "access": "SCHEDULED", "valid_from": "2026-01-01T00:00:00Z"},
  {"card": "06060606", "access": "SCHEDULED",
   "slots": [{"days": ["tue"], "start": "09:00", "end": "18:00"}]},
  {"card": "07070707", "access": "SCHEDULED",
   "slots": [{"days": ["mon"], "start": "09:00", "end": "18:00"}]},
  {"card": "08080808", "access": "UNRESTRICTED", "valid_until": "2026-06-30T23:59:59Z"},
  {"card": "09090909", "access": "SCHEDULED", "valid_from": "2027-01-01T00:00:00Z"}
]}"#;

/// The decisions and notifications for the nine cards, presented one a second from t = 1.
fn decide(clock_valid: bool, online: bool) -> Vec<(String, String)> {
    let rtc = if clock_valid {
        format!(r#"{{"utc": "{START}"}}"#)
    } else {
        "null".to_string()
    };
    let mut text = format!(
        r#"{{"world": {{"start_utc": "{START}", "rtc": {rtc}, "network": {online},
            "ntp": {{"reachable": false}},
            "backend": {{"reachable": {online}, "conditional_grant": ["card:03030303"]}},
            "allowlist": {LIST}}}}}"#
    )
    .replace('\n', " ");
    text.push_str("\n{\"t\": 0, \"do\": \"boot\"}\n");
    for (i, card) in [
        "01010101", "02020202", "03030303", "04040404", "05050505", "06060606", "07070707",
        "08080808", "09090909",
    ]
    .iter()
    .enumerate()
    {
        text.push_str(&format!(
            "{{\"t\": {}, \"do\": \"card\", \"uid\": \"{card}\"}}\n",
            i + 1
        ));
    }
    text.push_str("{\"t\": 20, \"do\": \"end\"}\n");
    let scenario = Scenario::parse(&text, None).expect("valid scenario");
    let (events, _) = Sim::run(&scenario).expect("runs");
    let valid = events
        .iter()
        .filter(|e| e["event"] == "clock")
        .all(|e| e["valid"] == Value::Bool(clock_valid));
    assert!(online || valid, "the clock is as the row needs: {events:?}");
    events
        .iter()
        .filter(|e| e["event"] == "decision" || e["event"] == "notify")
        .map(|e| {
            let what = if e["event"] == "notify" {
                "notify".to_string()
            } else {
                e["decision"].as_str().unwrap_or("").to_string()
            };
            (e["credential"].as_str().unwrap_or("").to_string(), what)
        })
        .collect()
}

fn row(card: &str, what: &str) -> (String, String) {
    (format!("card:{card}"), what.to_string())
}

#[test]
fn before_the_clock_is_valid_offline() {
    assert_eq!(
        decide(false, false),
        [
            // UNRESTRICTED: granted (no time check).
            row("01010101", "GRANTED"),
            // EMERGENCY: granted with notification (no time check).
            row("02020202", "GRANTED_EMERGENCY"),
            row("02020202", "notify"),
            // CONDITIONAL: depends on the network, not time: offline, denied.
            row("03030303", "DENIED_OFFLINE"),
            // SCHEDULED, no time slots: granted.
            row("04040404", "GRANTED"),
            // ... unless it has a valid_from: the date range cannot be checked.
            row("05050505", "DENIED_NOT_YET_VALID"),
            // SCHEDULED with time slots: DENIED_TIME_RESTRICTION, whatever the slot.
            row("06060606", "DENIED_TIME_RESTRICTION"),
            row("07070707", "DENIED_TIME_RESTRICTION"),
            // UNRESTRICTED: granted, its valid_until cannot be checked either.
            row("08080808", "GRANTED"),
            row("09090909", "DENIED_NOT_YET_VALID"),
        ]
    );
}

#[test]
fn online_conditional_follows_the_backend() {
    // Online, the backend's sealed time also sets the clock at the first sync; CONDITIONAL
    // depends on the backend's answer either way (scenarios/adr011_table_before_sync.jsonl
    // asks it before the clock is valid).
    let got = decide(false, true);
    assert!(got.contains(&row("03030303", "GRANTED")), "{got:?}");
}

#[test]
fn with_a_valid_clock() {
    assert_eq!(
        decide(true, false),
        [
            row("01010101", "GRANTED"),
            row("02020202", "GRANTED_EMERGENCY"),
            row("02020202", "notify"),
            // The backend cannot be asked offline, clock or not.
            row("03030303", "DENIED_OFFLINE"),
            row("04040404", "GRANTED"),
            // valid_from lies in the past now.
            row("05050505", "GRANTED"),
            // Tuesday 10:00 UTC: inside the Tuesday slot, outside the Monday one.
            row("06060606", "GRANTED"),
            row("07070707", "DENIED_TIME_RESTRICTION"),
            // The date range applies once the clock is valid.
            row("08080808", "DENIED_EXPIRED"),
            row("09090909", "DENIED_NOT_YET_VALID"),
        ]
    );
}
