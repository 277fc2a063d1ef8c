//! Every scenario under `scenarios/` against its `.expected.jsonl`, byte for byte.
//!
//! The expected files are reviewed by hand; `UPDATE_EXPECTED=1 cargo test -p chronolock-sim
//! --test scenarios` rewrites them after a deliberate change, for review in the diff. Under CI
//! that is refused: there the files are the evidence, not the program's latest output. What
//! they must say is also asserted by hand, line by line, in `tests/flows.rs` and
//! `tests/adr011.rs`.

use std::path::PathBuf;

fn scenario_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
}

#[test]
fn scenarios_match_their_expected_events() {
    let update = std::env::var_os("UPDATE_EXPECTED").is_some();
    assert!(
        !(update && std::env::var_os("CI").is_some()),
        "UPDATE_EXPECTED is refused under CI: the expected files are reviewed by hand"
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(scenario_dir())
        .expect("scenarios/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| {
            p.to_string_lossy().ends_with(".jsonl")
                && !p.to_string_lossy().ends_with(".expected.jsonl")
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "expected the scenario suite, found {files:?}"
    );
    let mut failures = Vec::new();
    for file in &files {
        let (got, _notes) =
            chronolock_sim::run_file(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let expected_path = file.with_extension("expected.jsonl");
        if update {
            std::fs::write(&expected_path, &got).expect("write expected");
            continue;
        }
        let want = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with UPDATE_EXPECTED=1 to create it)",
                expected_path.display()
            )
        });
        if got != want {
            failures.push(format!(
                "{}\n--- expected\n{want}--- got\n{got}",
                file.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn same_file_same_bytes() {
    for name in [
        "seed000_boot_rtc_offline.jsonl",
        "two_servers_correct_a_bad_first_answer.jsonl",
    ] {
        let path = scenario_dir().join(name);
        let a = chronolock_sim::run_file(&path).unwrap().0;
        let b = chronolock_sim::run_file(&path).unwrap().0;
        assert_eq!(a, b);
    }
}
