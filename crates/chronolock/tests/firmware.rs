//! `chronolock firmware setup-secret` and `show-secret` as `scripts/flash.sh` runs them, and
//! `keygen`, `sign` and `inspect`, with which a release is signed with a key of its own.

use std::path::PathBuf;
use std::process::{Command, Output};

use chronolock_core::firmware::{Header, Version, HEADER_LEN};
use chronolock_device::setup::{decode_setup_secret, setup_ssid, SETUP_PARTITION_SIZE};

fn chronolock(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chronolock"))
        .args(args)
        .output()
        .expect("runs")
}

/// A fresh directory of this test's own.
fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("chronolock-firmware-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn writes_a_secret_the_door_reads_and_prints_how_to_join() {
    let dir = temp_dir("new");
    let file = dir.join("door.bin");
    let out = chronolock(&[
        "firmware",
        "setup-secret",
        "--out",
        file.to_str().expect("utf-8 path"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let image = std::fs::read(&file).expect("written");
    assert_eq!(image.len(), SETUP_PARTITION_SIZE);
    let password = decode_setup_secret(&image).expect("a record the door accepts");
    assert_eq!(password.len(), 20);
    let text = stdout(&out);
    let ssid = setup_ssid(&password);
    assert!(text.contains(&format!("setup network:  {ssid}")), "{text}");
    assert!(
        text.contains(&format!("setup password: {password}")),
        "{text}"
    );
    assert!(text.contains('█'), "a QR code: {text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("stat").permissions().mode();
        assert_eq!(mode & 0o077, 0, "readable by its owner only: {mode:o}");
    }

    // Read back as flash.sh does before reusing it: the same network and password.
    let shown = chronolock(&["firmware", "show-secret", file.to_str().expect("utf-8")]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    assert!(stdout(&shown).contains(&format!("setup password: {password}")));
    assert!(stdout(&shown).contains(ssid.as_str()));

    // Every door its own password.
    let other = dir.join("other.bin");
    let out = chronolock(&[
        "firmware",
        "setup-secret",
        "--out",
        other.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let second = decode_setup_secret(&std::fs::read(&other).expect("written")).expect("valid");
    assert_ne!(password, second);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn never_replaces_a_secret_without_force() {
    let dir = temp_dir("force");
    let file = dir.join("door.bin");
    let path = file.to_str().expect("utf-8 path");
    let first = chronolock(&["firmware", "setup-secret", "--out", path]);
    assert!(first.status.success(), "{}", stderr(&first));
    let before = std::fs::read(&file).expect("written");

    let again = chronolock(&["firmware", "setup-secret", "--out", path]);
    assert_eq!(again.status.code(), Some(2));
    let err = stderr(&again);
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert!(
        stdout(&again).is_empty(),
        "no password printed that is not the door's"
    );
    assert_eq!(std::fs::read(&file).expect("kept"), before, "untouched");

    let forced = chronolock(&["firmware", "setup-secret", "--out", path, "--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    let after = std::fs::read(&file).expect("replaced");
    assert_ne!(after, before);
    let password = decode_setup_secret(&after).expect("valid");
    assert!(stdout(&forced).contains(password.as_str()));
    let left: Vec<_> = std::fs::read_dir(&dir).expect("list").collect();
    assert_eq!(left.len(), 1, "no temporary file left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn show_secret_names_what_is_wrong_with_a_file() {
    let dir = temp_dir("show");
    let erased = dir.join("erased.bin");
    std::fs::write(&erased, vec![0xFF; SETUP_PARTITION_SIZE]).expect("write");
    let out = chronolock(&["firmware", "show-secret", erased.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("erased"), "{}", stderr(&out));

    let long = dir.join("long.bin");
    std::fs::write(&long, vec![0xFF; SETUP_PARTITION_SIZE + 1]).expect("write");
    let out = chronolock(&["firmware", "show-secret", long.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("4097 bytes"), "{}", stderr(&out));

    let out = chronolock(&["firmware", "show-secret", "/nonexistent/door.bin"]);
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

// ----- keygen, sign, inspect: a release is signed with a key of its own ------------------------

fn both(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

#[test]
fn a_release_is_signed_inspected_and_an_altered_one_refused() {
    let dir = temp_dir("sign");
    let key = dir.join("firmware.key");
    let k = key.to_str().expect("utf-8");
    let out = chronolock(&["firmware", "keygen", "--out", k]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(
        both(&out).contains("CHRONOLOCK_FIRMWARE_KEY="),
        "{}",
        both(&out)
    );
    // An application image as esptool writes it starts with 0xE9.
    let image = dir.join("app.bin");
    let mut bytes = vec![0xE9u8];
    bytes.extend((0..50_000u32).map(|i| (i % 253) as u8));
    std::fs::write(&image, &bytes).expect("image");
    let img = image.to_str().expect("utf-8");
    let out = chronolock(&["firmware", "sign", img, "--key", k, "--version", "1.2.3"]);
    assert!(out.status.success(), "{}", both(&out));
    let signed_path = dir.join("app.bin.signed");
    let signed = std::fs::read(&signed_path).expect("signed file");
    let header = Header::peek(&signed).expect("header");
    assert_eq!(
        (header.version, header.len, header.flash_mb),
        (Version::new(1, 2, 3), 50_001, 4)
    );
    assert_eq!(&signed[HEADER_LEN..], &bytes[..]);
    let public = format!("{k}.pub");
    let s = signed_path.to_str().expect("utf-8");
    let out = chronolock(&["firmware", "inspect", s, "--pub", &public]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(
        both(&out).contains("firmware 1.2.3 for 4 MB flash"),
        "{}",
        both(&out)
    );
    assert!(
        both(&out).contains("signature and hash hold"),
        "{}",
        both(&out)
    );
    // One byte of the image changed after signing.
    let mut altered = signed.clone();
    altered[HEADER_LEN + 777] ^= 1;
    let altered_path = dir.join("altered.signed");
    std::fs::write(&altered_path, &altered).expect("altered");
    let out = chronolock(&[
        "firmware",
        "inspect",
        altered_path.to_str().expect("utf-8"),
        "--pub",
        &public,
    ]);
    assert!(!out.status.success());
    assert!(both(&out).contains("not the signed ones"), "{}", both(&out));
    // Another key's public half.
    let other = dir.join("other.key");
    assert!(chronolock(&[
        "firmware",
        "keygen",
        "--out",
        other.to_str().expect("utf-8")
    ])
    .status
    .success());
    let out = chronolock(&[
        "firmware",
        "inspect",
        s,
        "--pub",
        &format!("{}.pub", other.display()),
    ]);
    assert!(!out.status.success());
    assert!(
        both(&out).contains("signature does not verify"),
        "{}",
        both(&out)
    );
}

#[test]
fn bad_input_is_refused_with_the_reason() {
    let dir = temp_dir("sign-bad");
    let key = dir.join("firmware.key");
    let k = key.to_str().expect("utf-8");
    assert!(chronolock(&["firmware", "keygen", "--out", k])
        .status
        .success());
    // The key is never overwritten.
    let again = chronolock(&["firmware", "keygen", "--out", k]);
    assert!(!again.status.success(), "{}", both(&again));
    let elf = dir.join("app.elf");
    std::fs::write(&elf, b"\x7fELF\x01\x01\x01").expect("elf");
    let e = elf.to_str().expect("utf-8");
    let out = chronolock(&["firmware", "sign", e, "--key", k, "--version", "1.0.0"]);
    assert!(!out.status.success());
    assert!(
        both(&out).contains("not an ESP application image"),
        "{}",
        both(&out)
    );
    let image = dir.join("app.bin");
    std::fs::write(&image, [0xE9, 1, 2, 3]).expect("image");
    let i = image.to_str().expect("utf-8");
    for (version, flash, expect) in [
        ("1.0", "4", "expected major.minor.patch"),
        ("0.0.0", "4", "expected major.minor.patch"),
        ("1.0.0", "16", "built for 4 or 8"),
    ] {
        let out = chronolock(&[
            "firmware",
            "sign",
            i,
            "--key",
            k,
            "--version",
            version,
            "--flash-mb",
            flash,
        ]);
        assert!(!out.status.success(), "{version} {flash}");
        assert!(both(&out).contains(expect), "{}", both(&out));
    }
    let out = chronolock(&["firmware", "inspect", i]);
    assert!(!out.status.success());
    assert!(
        both(&out).contains("not a signed chronolock firmware image"),
        "{}",
        both(&out)
    );
}
