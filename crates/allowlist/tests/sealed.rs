//! Keypad secrets sealed to one device: absent from the list's bytes, usable by that device's
//! controller only.

use chronolock_allowlist::{compile_sealed, Entry};
use chronolock_core::allowlist::{AccessType, AllowList, KeypadEntry, Policy};
use chronolock_core::controller::Event;
use chronolock_core::{protocol, Action, Config, Controller, Instant, Persisted};
use ed25519_dalek::SigningKey;

const HOTP: &[u8] = b"12345678901234567890";

fn list(list_key: Option<[u8; 32]>) -> Vec<u8> {
    let entry = Entry::Keypad(KeypadEntry {
        code: b"4711".to_vec(),
        totp_secret: Some(b"totp-secret-bytes-20".to_vec()),
        hotp_secret: Some(HOTP.to_vec()),
        hotp_counter: 0,
        digits: 6,
        period_s: 30,
        policy: Policy::new(AccessType::Unrestricted, 0, 0),
        slots: vec![],
    });
    compile_sealed(
        &[entry],
        3,
        1_795_510_740,
        &SigningKey::from_bytes(&[1; 32]),
        list_key,
    )
    .expect("compiles")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn decide(bytes: &[u8], list_key: Option<[u8; 32]>) -> String {
    let list = AllowList::verify(bytes, &SigningKey::from_bytes(&[1; 32]).verifying_key())
        .expect("signed list");
    let mut c = Controller::new(
        Config::default(),
        Persisted::default(),
        [0; 32],
        Instant::ZERO,
    );
    c.set_list_key(list_key);
    // RFC 4226 Appendix D, counter 0.
    for &k in b"4711*755224#" {
        c.handle_key(k, Some(&list), Instant::from_secs(1));
    }
    let mut decision = String::new();
    while let Some(a) = c.poll_action() {
        if let Action::Event(Event::Decision { decision: d, .. }) = a {
            decision = d.as_str().to_string();
        }
    }
    decision
}

#[test]
fn sealed_secrets_are_not_in_the_list_and_open_with_the_device_key() {
    let key = protocol::list_key(&[9; 32]);
    let clear = list(None);
    let sealed = list(Some(key));
    assert!(contains(&clear, HOTP) && contains(&clear, b"totp-secret-bytes-20"));
    assert!(!contains(&sealed, HOTP) && !contains(&sealed, b"totp-secret-bytes-20"));
    assert!(AllowList::open(&sealed).unwrap().info().sealed);
    assert!(!AllowList::open(&clear).unwrap().info().sealed);

    assert_eq!(decide(&clear, None), "GRANTED");
    assert_eq!(decide(&sealed, Some(key)), "GRANTED");
    // Another device's key, or none, opens nothing.
    assert_eq!(decide(&sealed, None), "DENIED_UNKNOWN");
    // (The user also has TOTP and the clock is not synced yet: the ADR-011 answer for a failed code.)
    assert_eq!(
        decide(&sealed, Some(protocol::list_key(&[8; 32]))),
        "DENIED_CLOCK_UNSYNCED"
    );
}
