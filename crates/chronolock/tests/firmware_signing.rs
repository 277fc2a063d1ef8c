//! `chronolock firmware keygen`, `sign` and `inspect`: a release is signed with a key of its own
//! and the signed file is what a door checks.

use std::path::PathBuf;
use std::process::{Command, Output};

use chronolock_core::firmware::{Header, Version, HEADER_LEN};

fn chronolock(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chronolock"))
        .args(args)
        .output()
        .expect("runs")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("chronolock-signing-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_release_is_signed_inspected_and_an_altered_one_refused() {
    let dir = temp_dir("sign");
    let key = dir.join("firmware.key");
    let k = key.to_str().expect("utf-8");
    let out = chronolock(&["firmware", "keygen", "--out", k]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("CHRONOLOCK_FIRMWARE_KEY="),
        "{}",
        text(&out)
    );
    // An application image as esptool writes it starts with 0xE9.
    let image = dir.join("app.bin");
    let mut bytes = vec![0xE9u8];
    bytes.extend((0..50_000u32).map(|i| (i % 253) as u8));
    std::fs::write(&image, &bytes).expect("image");
    let img = image.to_str().expect("utf-8");
    let out = chronolock(&["firmware", "sign", img, "--key", k, "--version", "1.2.3"]);
    assert!(out.status.success(), "{}", text(&out));
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
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("firmware 1.2.3 for 4 MB flash"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("signature and hash hold"),
        "{}",
        text(&out)
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
    assert!(text(&out).contains("not the signed ones"), "{}", text(&out));
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
        text(&out).contains("signature does not verify"),
        "{}",
        text(&out)
    );
}

#[test]
fn bad_input_is_refused_with_the_reason() {
    let dir = temp_dir("bad");
    let key = dir.join("firmware.key");
    let k = key.to_str().expect("utf-8");
    assert!(chronolock(&["firmware", "keygen", "--out", k])
        .status
        .success());
    // The key is never overwritten.
    let again = chronolock(&["firmware", "keygen", "--out", k]);
    assert!(!again.status.success(), "{}", text(&again));
    let elf = dir.join("app.elf");
    std::fs::write(&elf, b"\x7fELF\x01\x01\x01").expect("elf");
    let e = elf.to_str().expect("utf-8");
    let out = chronolock(&["firmware", "sign", e, "--key", k, "--version", "1.0.0"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not an ESP application image"),
        "{}",
        text(&out)
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
        assert!(text(&out).contains(expect), "{}", text(&out));
    }
    let out = chronolock(&["firmware", "inspect", i]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not a signed chronolock firmware image"),
        "{}",
        text(&out)
    );
}
