//! `chronolock card` as an admin runs it: a blank card personalised and enrolled for a person
//! (a software card file, and the same card offered to PC/SC through a virtual reader and a
//! real `pcscd`), refused when it is not blank, and the master key rotated with the cards
//! following it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: fail loudly

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chronolock_core::card::{card_keys, KEY_COUNT};

fn chronolock(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chronolock"))
        .args(args)
        .env_remove("CHRONOLOCK_DATABASE_URL")
        .output()
        .expect("runs")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(args: &[&str]) -> String {
    let o = chronolock(args);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn refused(args: &[&str], says: &str) {
    let o = chronolock(args);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
    assert!(
        text(&o).contains(says),
        "{args:?} should say {says:?}: {}",
        text(&o)
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("chronolock-card-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The card file's keys.
fn keys_of(file: &Path) -> Vec<[u8; 16]> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            data_encoding::HEXUPPER
                .decode(k.as_str().unwrap().as_bytes())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect()
}

/// The site's card master keys as the server keeps them: (current, previous).
fn master_keys(data: &Path) -> ([u8; 16], Option<[u8; 16]>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let state = chronolock_server::AppState::open(&chronolock_server::ServeConfig {
                data_dir: data.to_path_buf(),
                ..chronolock_server::ServeConfig::default()
            })
            .await
            .unwrap();
            let k = chronolock_server::card_keys::keys(&state.db).await.unwrap();
            let secure: Vec<(String, i64)> =
                sqlx::query_as("SELECT uid, secure FROM cards ORDER BY uid")
                    .fetch_all(state.db.pool())
                    .await
                    .unwrap();
            assert!(
                secure.iter().any(|(u, s)| u == "04DE5F1EACC040" && *s == 1),
                "{secure:?}"
            );
            state.db.close().await;
            (k.current.0, k.previous.map(|p| p.0))
        })
}

const UID: [u8; 7] = [0x04, 0xDE, 0x5F, 0x1E, 0xAC, 0xC0, 0x40];

/// A data directory holding the people of `csv`, and a blank software card `card` with
/// [`UID`] beside it: (the test's directory, the data directory, the card file).
fn site_and_blank_card(test: &str, csv: &str, card: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = temp_dir(test);
    let data = dir.join("data");
    let people = dir.join("people.csv");
    std::fs::write(&people, csv).unwrap();
    ok(&["import", "--data", path(&data), path(&people)]);
    let card = dir.join(card);
    ok(&[
        "card",
        "new-soft-card",
        path(&card),
        "--uid",
        "04DE5F1EACC040",
    ]);
    (dir, data, card)
}

#[test]
fn a_blank_software_card_is_personalised_enrolled_and_rotated() {
    let (dir, data, card) = site_and_blank_card(
        "soft",
        "name,cards\nAda Lovelace,04A1B2C3\nBob,\n",
        "ada.json",
    );
    refused(&["card", "new-soft-card", path(&card)], "exists already");
    assert_eq!(keys_of(&card), vec![[0u8; 16]; 5], "factory keys");

    let out = ok(&[
        "card",
        "personalize",
        "--person",
        "1",
        "--soft-card",
        path(&card),
        "--data",
        path(&data),
    ]);
    assert!(
        out.contains("enrolled for Ada Lovelace as a secure card"),
        "{out}"
    );
    let (master, previous) = master_keys(&data);
    assert_eq!(previous, None);
    assert_eq!(
        keys_of(&card),
        card_keys(Some(&master), &UID).to_vec(),
        "diversified keys"
    );

    // Not blank any more; and a card is nobody else's.
    refused(
        &[
            "card",
            "personalize",
            "--person",
            "1",
            "--soft-card",
            path(&card),
            "--data",
            path(&data),
        ],
        "not blank",
    );
    let other = dir.join("other.json");
    ok(&[
        "card",
        "new-soft-card",
        path(&other),
        "--uid",
        "04DE5F1EACC040",
    ]);
    refused(
        &[
            "card",
            "personalize",
            "--person",
            "2",
            "--soft-card",
            path(&other),
            "--data",
            path(&data),
        ],
        "belongs to someone else",
    );
    refused(
        &[
            "card",
            "personalize",
            "--person",
            "9",
            "--soft-card",
            path(&other),
            "--data",
            path(&data),
        ],
        "no person 9",
    );
    std::fs::write(&other, "{\"uid\": \"04\"}").unwrap();
    refused(
        &[
            "card",
            "personalize",
            "--person",
            "1",
            "--soft-card",
            path(&other),
            "--data",
            path(&data),
        ],
        "not a software card",
    );

    // Rotation: the card moves to the new key; only one rotation at a time.
    refused(
        &[
            "card",
            "personalize",
            "--person",
            "1",
            "--soft-card",
            path(&card),
            "--from-previous",
            "--data",
            path(&data),
        ],
        "no rotation is under way",
    );
    ok(&["card", "rotate-master-key", "--data", path(&data)]);
    refused(
        &["card", "rotate-master-key", "--data", path(&data)],
        "a rotation is under way",
    );
    ok(&[
        "card",
        "personalize",
        "--person",
        "1",
        "--soft-card",
        path(&card),
        "--from-previous",
        "--data",
        path(&data),
    ]);
    let (new_master, previous) = master_keys(&data);
    assert_eq!(previous, Some(master));
    assert_ne!(new_master, master);
    assert_eq!(keys_of(&card), card_keys(Some(&new_master), &UID).to_vec());
    ok(&["card", "forget-previous-key", "--data", path(&data)]);
    refused(
        &["card", "forget-previous-key", "--data", path(&data)],
        "no previous",
    );
    assert_eq!(keys_of(&card).len(), usize::from(KEY_COUNT));
}

/// The PC/SC path end to end: `pcscd` with vsmartcard's virtual reader (the test command
/// installs `pcscd` and `vsmartcard-vpcd`), the software card answering in it, and
/// `personalize --reader` talking to it through pcsc-lite as to a desk reader.
#[cfg(feature = "pcsc")]
#[test]
fn a_card_in_a_pcsc_reader_is_personalised_through_pcscd() {
    use std::time::{Duration, Instant};
    let driver = Path::new("/usr/lib/pcsc/drivers/serial/libifdvpcd.so");
    let pcscd = Path::new("/usr/sbin/pcscd");
    if !driver.exists() || !pcscd.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the test command installs pcscd and vsmartcard-vpcd"
        );
        eprintln!("skipped: pcscd or vsmartcard-vpcd is not installed");
        return;
    }
    let (_dir, data, card) =
        site_and_blank_card("pcsc", "name,cards\nAda Lovelace,\n", "card.json");

    // Our own pcscd, unless one runs already (it reads the same reader configuration).
    let running = std::fs::read_to_string("/run/pcscd/pcscd.pid")
        .is_ok_and(|pid| Path::new(&format!("/proc/{}", pid.trim())).exists());
    let mut daemon = (!running).then(|| {
        Command::new(pcscd)
            .args(["--foreground"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("pcscd starts")
    });
    struct Kill(Vec<std::process::Child>);
    impl Drop for Kill {
        fn drop(&mut self) {
            for c in &mut self.0 {
                // SIGTERM: pcscd removes its socket and pid file as it stops.
                let _ = Command::new("kill").arg(c.id().to_string()).status();
                let _ = c.wait();
            }
        }
    }
    let mut children = Kill(daemon.take().into_iter().collect());
    // The card connects to vpcd (pcscd's driver listens once it has loaded): retried for 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    let served = loop {
        let mut c = Command::new(env!("CARGO_BIN_EXE_chronolock"))
            .args(["card", "serve-soft-card", path(&card)])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        if c.try_wait().unwrap().is_none() {
            break c;
        }
        assert!(Instant::now() < deadline, "vpcd never listened");
    };
    children.0.push(served);
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let o = chronolock(&[
            "card",
            "personalize",
            "--person",
            "1",
            "--reader",
            "Virtual PCD",
            "--data",
            path(&data),
        ]);
        if o.status.success() {
            break String::from_utf8_lossy(&o.stdout).into_owned();
        }
        assert!(Instant::now() < deadline, "{}", text(&o));
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        out.contains("enrolled for Ada Lovelace as a secure card"),
        "{out}"
    );
    let (master, _) = master_keys(&data);
    assert_eq!(keys_of(&card), card_keys(Some(&master), &UID).to_vec());
}
