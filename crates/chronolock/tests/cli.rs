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
        let v: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        assert!(v["t"].is_number() && v["event"].is_string(), "{line}");
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

#[test]
fn keygen_compile_inspect() {
    let dir = std::env::temp_dir().join(format!("chronolock-cli-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("site.key");
    let src = dir.join("people.json");
    let out = dir.join("list.bin");
    std::fs::write(
        &src,
        r#"{"entries": [{"card": "04A1B2C3", "access": "UNRESTRICTED"},
            {"keypad": "1234", "totp": "JBSWY3DPEHPK3PXP", "access": "UNRESTRICTED"}]}"#,
    )
    .unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    assert!(chronolock(&["keygen", "--out", &s(&key)]).status.success());
    let again = chronolock(&["keygen", "--out", &s(&key)]);
    assert_eq!(again.status.code(), Some(2), "never overwrites a key");
    let c = chronolock(&[
        "allowlist",
        "compile",
        &s(&src),
        "--key",
        &s(&key),
        "-o",
        &s(&out),
        "--generation",
        "7",
    ]);
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let i = chronolock(&[
        "allowlist",
        "inspect",
        &s(&out),
        "--pub",
        &format!("{}.pub", s(&key)),
    ]);
    let text = String::from_utf8_lossy(&i.stdout);
    assert!(
        i.status.success() && text.contains("generation 7") && text.contains("signature: valid"),
        "{text}"
    );

    let other = dir.join("other.key");
    assert!(chronolock(&["keygen", "--out", &s(&other)])
        .status
        .success());
    let i = chronolock(&[
        "allowlist",
        "inspect",
        &s(&out),
        "--pub",
        &format!("{}.pub", s(&other)),
    ]);
    assert_eq!(i.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&i.stdout).contains("INVALID"));

    let bytes = std::fs::read(&out).unwrap();
    std::fs::write(dir.join("cut.bin"), &bytes[..bytes.len() / 2]).unwrap();
    let i = chronolock(&["allowlist", "inspect", &s(&dir.join("cut.bin"))]);
    assert_eq!(i.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&i.stderr).contains("truncated"));

    std::fs::write(
        &src,
        r#"{"entries": [{"card": "04A1B2C3", "access": "SOMETIMES"}]}"#,
    )
    .unwrap();
    let c = chronolock(&[
        "allowlist",
        "compile",
        &s(&src),
        "--key",
        &s(&key),
        "-o",
        &s(&out),
    ]);
    assert_eq!(c.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&c.stderr).contains("entry 0"));
    assert_eq!(
        std::fs::read(&out).unwrap(),
        bytes,
        "a failed compile leaves the old list alone"
    );
}

#[test]
fn fleet_runs_a_seed_and_replays_it_identically() {
    let args = [
        "sim", "fleet", "--seed", "11", "--doors", "4", "--days", "4", "--json",
    ];
    let a = chronolock(&args);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let report: serde_json::Value = serde_json::from_slice(&a.stdout).expect("JSON report");
    assert_eq!(report["door_days"], 16);
    for invariant in ["wrong_grants", "lost_events", "duplicate_reports"] {
        assert_eq!(report[invariant], 0, "{invariant}");
    }
    assert!(report["decisions"].as_u64() > Some(0));
    let b = chronolock(&args);
    assert_eq!(a.stdout, b.stdout, "one seed, one run");
}

#[test]
fn live_commands_are_checked_with_a_clear_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chronolock"))
        .args(["sim", "live", "--duration", "0"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--duration"));
}

/// `chronolock admin reset-password`: the admin who forgot their password gets a new one (from
/// the environment here), their sessions end, and an unknown name or a short password is an
/// error that changes nothing.
#[test]
fn an_admin_who_forgot_the_password_gets_a_new_one() {
    let data = std::env::temp_dir().join(format!("chronolock-cli-admin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let config = chronolock_server::ServeConfig {
        data_dir: data.clone(),
        ..chronolock_server::ServeConfig::default()
    };
    let hash = || {
        runtime.block_on(async {
            let state = chronolock_server::AppState::open(&config)
                .await
                .expect("db");
            let row: Option<(String,)> =
                sqlx::query_as("SELECT password_hash FROM admins WHERE username = 'boss'")
                    .fetch_optional(state.db.pool())
                    .await
                    .expect("query");
            state.db.close().await;
            row.map(|r| r.0)
        })
    };
    runtime.block_on(async {
        let state = chronolock_server::AppState::open(&config)
            .await
            .expect("db");
        chronolock_server::auth::create_first_admin(&state, "boss", "the old password")
            .await
            .expect("admin");
        state.db.close().await;
    });
    let before = hash().expect("boss exists");
    let reset = |user: &str, password: &str| {
        Command::new(env!("CARGO_BIN_EXE_chronolock"))
            .args(["admin", "reset-password", "--user", user, "--data"])
            .arg(&data)
            .env("CHRONOLOCK_NEW_PASSWORD", password)
            .env_remove("CHRONOLOCK_DATABASE_URL")
            .output()
            .expect("runs")
    };
    let out = reset("nobody", "a new password 1");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no admin named \"nobody\""));
    let out = reset("boss", "short");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least"));
    assert_eq!(hash().as_deref(), Some(before.as_str()), "nothing changed");
    let out = reset("boss", "a new password 1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = hash().expect("boss exists");
    assert_ne!(after, before);
    assert!(after.starts_with("$argon2id$"));
    let _ = std::fs::remove_dir_all(&data);
}

/// `serve --mqtt` with a broker URL that cannot be used stops the start with an error that names
/// the option and what is wrong, and shows no password.
#[test]
fn a_malformed_mqtt_url_is_refused_with_a_clear_error() {
    let data = std::env::temp_dir().join(format!("chronolock-cli-mqtt-{}", std::process::id()));
    let data = data.to_str().unwrap();
    for (url, says) in [
        ("broker.lan:1883", "not a URL"),
        ("https://broker.lan", "the scheme is `https`"),
        ("mqtt://door:hunter2@broker.lan/doors", "no path"),
    ] {
        let out = chronolock(&[
            "serve",
            "--data",
            data,
            "--listen",
            "127.0.0.1:0",
            "--mqtt",
            url,
        ]);
        assert_eq!(out.status.code(), Some(1), "{url}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--mqtt") && err.contains(says), "{url}: {err}");
        assert!(
            !err.contains("hunter2") && !err.contains("panicked"),
            "{url}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(data);
}

#[test]
fn bench_sync_drives_real_polls_and_ends_with_json() {
    let o = chronolock(&[
        "bench",
        "sync",
        "--people",
        "50",
        "--doors",
        "3",
        "--seconds",
        "1",
        "--connections",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("3 lists downloaded"), "{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    let figures: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
    for key in [
        "syncs_per_s",
        "p50_ms",
        "p99_ms",
        "errors",
        "server_rss_kib",
        "list_downloads_per_s",
    ] {
        assert!(figures[key].is_number(), "{key} in {last}");
    }
    assert_eq!(figures["errors"], 0, "{stdout}");
    assert!(figures["syncs"].as_u64().unwrap_or(0) > 10, "{last}");
    assert!(
        figures["server_rss_kib"].as_u64().unwrap_or(0) > 1000,
        "{last}"
    );
    assert_eq!(
        figures["list_downloads_per_s"], 0.0,
        "every measured poll is unchanged"
    );

    let o = chronolock(&["bench", "sync", "--doors", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--doors"));
}
