//! `chronolock sim run` as a user runs it: exit statuses, stderr, determinism.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn chronolock(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chronolock"))
        .args(args)
        .output()
        .expect("runs")
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chronolock-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn scenario(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scenarios")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn runs_a_scenario_and_is_deterministic() {
    let file = scenario("seed000_boot_rtc_online.jsonl");
    let a = chronolock(&["sim", "run", &file]);
    let b = chronolock(&["sim", "run", &file]);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(a.stdout, b.stdout);
    let text = String::from_utf8(a.stdout).unwrap();
    for line in text.lines() {
        let v: serde_json_check::Value = serde_json_check::parse(line);
        assert!(v.has_t_and_event, "{line}");
    }
}

#[test]
fn malformed_scenario_exits_2_naming_the_line() {
    let file = temp_file(
        "bad.jsonl",
        "{\"world\": {}}\n{\"t\": 0, \"do\": \"boot\"}\n{\"t\": 1, \"do\": \"teleport\"}\n",
    );
    let out = chronolock(&["sim", "run", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3") && err.contains("teleport"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn missing_file_exits_2() {
    let out = chronolock(&["sim", "run", "/nonexistent/scenario.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn cards_without_an_allowlist_are_unknown_and_said_so() {
    let file = temp_file(
        "cards.jsonl",
        "{\"world\": {\"network\": false}}\n{\"t\": 0, \"do\": \"boot\"}\n{\"t\": 1, \"do\": \"card\", \"uid\": \"04A1B2C3\"}\n",
    );
    let out = chronolock(&["sim", "run", file.to_str().unwrap()]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no `allowlist`"), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"decision\":\"DENIED_UNKNOWN\""), "{text}");
}

#[test]
fn bad_allowlist_in_the_world_exits_2() {
    let file = temp_file(
        "badlist.jsonl",
        "{\"world\": {\"allowlist\": {\"entries\": [{\"card\": \"04A1\", \"access\": \"UNRESTRICTED\"}]}}}\n",
    );
    let out = chronolock(&["sim", "run", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 1") && err.contains("entry 0") && err.contains("4, 7 or 10"),
        "{err}"
    );
}

/// A minimal check of the output shape without another dependency.
mod serde_json_check {
    pub struct Value {
        pub has_t_and_event: bool,
    }
    pub fn parse(line: &str) -> Value {
        Value {
            has_t_and_event: line.starts_with("{\"t\":")
                && line.contains(",\"event\":\"")
                && line.ends_with('}'),
        }
    }
}
