//! Cross-checks `chronolock_core::otp` against the reference `oathtool` (OATH Toolkit).
//!
//! Needs the `oathtool` binary (Debian package `oathtool`). When it is missing these tests fail,
//! unless `CHRONOLOCK_SKIP_OATHTOOL=1` is set.

use std::io::ErrorKind;
use std::process::Command;

use chronolock_core::otp::{hotp, totp, totp_step, verify_hotp, verify_totp, Match, OtpParams};

/// Base32 secrets (RFC 4648 §6), of 6, 10, 10, 20, 40 and 64 bytes, padded and unpadded.
const SECRETS: [&str; 6] = [
    "MZXW6YTBOI======", // "foobar"
    "JBSWY3DPEHPK3PXP",
    "GEZDGNBVGY3TQOJQ", // "1234567890"
    "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", // RFC 4226 / RFC 6238 SHA-1 secret
    "4S62BZNFXXSZLCRO4S62BZNFXXSZLCRO4S62BZNFXXSZLCRO4S62BZNFXXSZLCRO",
    "AAAQEAYEAUDAOCAJBIFQYDIOB4IBCEQTCQKRMFYYDENBWHA5DYPSAIJCEMSCKJRHFAUSUKZMFUXC6MBRGIZTINJWG44DSOR3HQ6T4PY",
];

const COUNTERS: [u64; 7] = [0, 1, 9, 255, 1 << 32, 1_795_510_740, u64::MAX];

const TIMES: [i64; 9] = [
    0,
    29,
    59,
    1_111_111_109,
    1_234_567_890,
    1_795_510_740, // 2026-11-24T08:59:00Z
    2_000_000_000,
    4_102_444_800, // 2100-01-01
    20_000_000_000,
];

/// Decodes RFC 4648 §6 base32 (upper or lower case, trailing `=` padding optional).
fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for c in s.bytes() {
        let v = match c.to_ascii_uppercase() {
            c @ b'A'..=b'Z' => c - b'A',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero padding of the last quantum (at most 4 of them).
    (bits < 5 && acc == 0).then_some(out)
}

/// Whether the tests are skipped on purpose.
fn skipped() -> bool {
    let skip = std::env::var("CHRONOLOCK_SKIP_OATHTOOL").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("CHRONOLOCK_SKIP_OATHTOOL=1: not cross-checking against oathtool");
    }
    skip
}

/// Runs `oathtool` with `args` and returns the code it printed.
fn oathtool(args: &[&str]) -> u32 {
    let out = match Command::new("oathtool").args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "the oathtool binary was not found: install Debian package oathtool \
             (apt-get install oathtool), or set CHRONOLOCK_SKIP_OATHTOOL=1 to skip these tests"
        ),
        Err(e) => panic!("could not run oathtool {args:?}: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "oathtool {args:?} failed ({}): {}{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.trim();
    assert!(
        !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()),
        "oathtool {args:?} printed {line:?}"
    );
    line.parse()
        .unwrap_or_else(|e| panic!("oathtool {args:?} printed {line:?}: {e}"))
}

#[test]
fn base32_decoder_rfc4648_vectors() {
    // RFC 4648 §10.
    let vectors: [(&str, &[u8]); 7] = [
        ("", b""),
        ("MY======", b"f"),
        ("MZXQ====", b"fo"),
        ("MZXW6===", b"foo"),
        ("MZXW6YQ=", b"foob"),
        ("MZXW6YTB", b"fooba"),
        ("MZXW6YTBOI======", b"foobar"),
    ];
    for (encoded, decoded) in vectors {
        assert_eq!(
            base32_decode(encoded).as_deref(),
            Some(decoded),
            "{encoded}"
        );
    }
    assert_eq!(
        base32_decode("gezdgnbvgy3tqojq").as_deref(),
        Some(&b"1234567890"[..])
    );
    assert_eq!(base32_decode("MZXW6YT1"), None);
    assert_eq!(base32_decode("MZ XW"), None);
    assert_eq!(base32_decode("MZ"), None); // non-zero leftover bits
}

#[test]
fn hotp_matches_oathtool() {
    if skipped() {
        return;
    }
    for b32 in SECRETS {
        let secret = base32_decode(b32).expect("test secret is valid base32");
        for counter in COUNTERS {
            for digits in [6u8, 8] {
                let (c, d) = (counter.to_string(), digits.to_string());
                let args = ["--hotp", "--base32", "-c", &c, "-d", &d, b32];
                let expected = oathtool(&args);
                assert_eq!(
                    hotp(&secret, counter, digits),
                    Ok(expected),
                    "oathtool {}",
                    args.join(" ")
                );
                assert_eq!(
                    verify_hotp(&secret, expected, counter, 0, 0, digits),
                    Ok(Match::Fresh(counter)),
                    "oathtool {}",
                    args.join(" ")
                );
            }
        }
    }
}

#[test]
fn totp_matches_oathtool() {
    if skipped() {
        return;
    }
    let configs = [(6u8, 30u32), (8, 30), (6, 60), (7, 45)];
    for b32 in SECRETS {
        let secret = base32_decode(b32).expect("test secret is valid base32");
        for time in TIMES {
            for (digits, period_s) in configs {
                let params = OtpParams { digits, period_s };
                let now = format!("@{time}");
                let d = digits.to_string();
                let step_size = format!("{period_s}s");
                let args = [
                    "--totp",
                    "--base32",
                    "-d",
                    &d,
                    "--time-step-size",
                    &step_size,
                    "--now",
                    &now,
                    b32,
                ];
                let expected = oathtool(&args);
                assert_eq!(
                    totp(&secret, time, params),
                    Ok(expected),
                    "oathtool {}",
                    args.join(" ")
                );
                let step = totp_step(time, period_s).expect("times are after the epoch");
                assert_eq!(
                    verify_totp(&secret, expected, time, params, 1, None),
                    Ok(Match::Fresh(step)),
                    "oathtool {}",
                    args.join(" ")
                );
            }
        }
    }
}

#[test]
fn totp_matches_oathtool_with_a_date_string() {
    if skipped() {
        return;
    }
    // The same instant as NOW in the unit tests, written as oathtool's documented date form.
    let b32 = "JBSWY3DPEHPK3PXP";
    let secret = base32_decode(b32).expect("test secret is valid base32");
    let args = [
        "--totp",
        "--base32",
        "-d",
        "6",
        "--now",
        "2026-11-24 08:59:00 UTC",
        b32,
    ];
    let expected = oathtool(&args);
    assert_eq!(
        totp(&secret, 1_795_510_740, OtpParams::default()),
        Ok(expected)
    );
}
