//! The controller's secure-card check against the software card: a rotation's previous key,
//! a card that stops answering, one taken away, one replaced by another mid-check, and a list
//! that carries no key.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: fail loudly

use std::time::Duration;

use chronolock_core::access::Decision;
use chronolock_core::allowlist::{
    AccessType, AllowList, Builder, CardEntry, CardMasterKeys, Policy,
};
use chronolock_core::controller::{Action, Credential, Event};
use chronolock_core::{Config, Controller, Instant, Persisted};
use chronolock_sim::card::SoftCard;
use ed25519_dalek::SigningKey;

const UID: [u8; 7] = [0x04, 0xDE, 0x5F, 0x1E, 0xAC, 0xC0, 0x40];
const OLD: [u8; 16] = [0x01; 16];
const NEW: [u8; 16] = [0x02; 16];
const LIST_KEY: [u8; 32] = [0x33; 32];

fn list(keys: Option<CardMasterKeys>) -> Vec<u8> {
    let mut b = Builder::new();
    b.seal_secrets(LIST_KEY);
    if let Some(k) = keys {
        b.card_master_keys(k);
    }
    b.secure_card(&CardEntry {
        uid: UID.to_vec(),
        policy: Policy::new(AccessType::Unrestricted, 0, 0),
        slots: vec![],
    })
    .unwrap();
    b.build(1, 1_700_000_000, &SigningKey::from_bytes(&[9; 32]))
        .unwrap()
}

fn rotating() -> Option<CardMasterKeys> {
    Some(CardMasterKeys {
        current: (NEW, 2),
        previous: Some((OLD, 1)),
    })
}

/// The decisions among the controller's pending actions, with their credentials.
fn decided(c: &mut Controller) -> Vec<(String, Decision)> {
    std::iter::from_fn(|| c.poll_action())
        .filter_map(|a| match a {
            Action::Event(Event::Decision {
                credential,
                decision,
            }) => Some((credential.to_string(), decision)),
            _ => None,
        })
        .collect()
}

fn refused() -> Vec<(String, Decision)> {
    vec![(
        "secure_card:04DE5F1EACC040".to_string(),
        Decision::DeniedCardAuth,
    )]
}

fn controller() -> Controller {
    let mut c = Controller::new(
        Config::default(),
        Persisted::default(),
        [5; 32],
        Instant::ZERO,
    );
    c.set_list_key(Some(LIST_KEY));
    while c.poll_action().is_some() {}
    c
}

/// Presents `card` and answers the controller's APDUs with it (at most 20 exchanges; `answer`
/// false: the card never answers). Returns the decisions and the APDUs exchanged.
fn present(
    c: &mut Controller,
    bytes: &[u8],
    card: &mut SoftCard,
    answer: bool,
    at: Instant,
) -> (Vec<Decision>, usize) {
    let list = AllowList::open(bytes).unwrap();
    c.handle_secure_card(&card.uid(), Some(&list), at);
    let (mut decisions, mut exchanges) = (vec![], 0);
    for _ in 0..20 {
        let mut apdus = vec![];
        while let Some(a) = c.poll_action() {
            match a {
                Action::CardApdu(apdu) => apdus.push(apdu),
                Action::Event(Event::Decision {
                    credential,
                    decision,
                }) => {
                    assert_eq!(credential, Credential::secure_card(&card.uid()));
                    decisions.push(decision);
                }
                _ => {}
            }
        }
        if apdus.is_empty() || !answer {
            break;
        }
        for apdu in apdus {
            exchanges += 1;
            let r = card.transmit(&apdu);
            c.handle_card_response(&r, Some(&list), at);
        }
    }
    (decisions, exchanges)
}

#[test]
fn during_a_rotation_cards_of_either_key_open_and_others_do_not() {
    let bytes = list(rotating());
    let mut c = controller();
    let t = Instant::from_secs(10);
    let (d, n) = present(
        &mut c,
        &bytes,
        &mut SoftCard::genuine(UID, &NEW, 1),
        true,
        t,
    );
    assert_eq!(
        (d, n),
        (vec![Decision::Granted], 4),
        "the current key: four exchanges"
    );
    let (d, n) = present(
        &mut c,
        &bytes,
        &mut SoftCard::genuine(UID, &OLD, 2),
        true,
        t,
    );
    assert_eq!(
        (d, n),
        (vec![Decision::Granted], 6),
        "the previous key, tried second"
    );
    let (d, _) = present(&mut c, &bytes, &mut SoftCard::clone_of(UID, 3), true, t);
    assert_eq!(d, vec![Decision::DeniedCardAuth]);
    // After the rotation ends, the old key's cards no longer open.
    let bytes = list(Some(CardMasterKeys {
        current: (NEW, 2),
        previous: None,
    }));
    let (d, _) = present(
        &mut c,
        &bytes,
        &mut SoftCard::genuine(UID, &OLD, 4),
        true,
        t,
    );
    assert_eq!(d, vec![Decision::DeniedCardAuth]);
}

#[test]
fn a_card_that_stops_answering_is_refused_at_the_deadline() {
    let bytes = list(rotating());
    let mut c = controller();
    let t = Instant::from_secs(10);
    let (d, _) = present(
        &mut c,
        &bytes,
        &mut SoftCard::genuine(UID, &NEW, 1),
        false,
        t,
    );
    assert!(d.is_empty());
    assert!(c.card_check_pending());
    let deadline = t + Config::default().card_auth_timeout;
    assert!(c.poll_timeout().is_some_and(|at| at <= deadline));
    c.handle_timeout(t + (Config::default().card_auth_timeout - Duration::from_millis(1)));
    assert!(c.card_check_pending());
    c.handle_timeout(deadline);
    assert!(!c.card_check_pending());
    assert_eq!(decided(&mut c), refused());
}

#[test]
fn a_card_taken_away_or_replaced_mid_check_is_refused() {
    let bytes = list(rotating());
    let list_view = AllowList::open(&bytes).unwrap();
    let mut c = controller();
    let t = Instant::from_secs(10);
    let (d, _) = present(
        &mut c,
        &bytes,
        &mut SoftCard::genuine(UID, &NEW, 1),
        false,
        t,
    );
    assert!(d.is_empty());
    c.handle_card_lost(t);
    assert!(!c.card_check_pending());
    assert_eq!(decided(&mut c), refused());
    // A second card while the first is checked: the first is refused, the second checked.
    c.handle_secure_card(&UID, Some(&list_view), t);
    c.handle_secure_card(&UID, Some(&list_view), t);
    assert_eq!(decided(&mut c), refused());
    assert!(c.card_check_pending());
    // A stray answer with no check pending changes nothing.
    c.handle_card_lost(t);
    c.handle_card_response(&[0x91, 0x00], Some(&list_view), t);
    assert_eq!(decided(&mut c), refused());
}

#[test]
fn a_secure_entry_without_a_key_to_check_it_never_opens() {
    let bytes = list(None);
    let mut c = controller();
    let (d, n) = present(
        &mut c,
        &bytes,
        &mut SoftCard::genuine(UID, &NEW, 1),
        true,
        Instant::from_secs(1),
    );
    assert_eq!((d, n), (vec![Decision::DeniedCardAuth], 0));
    // Nor does its UID on a UID-only reader.
    let list_view = AllowList::open(&bytes).unwrap();
    c.handle_card(&UID, Some(&list_view), Instant::from_secs(2));
    assert_eq!(decided(&mut c), refused());
}
