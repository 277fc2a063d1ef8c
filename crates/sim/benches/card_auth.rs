//! One secure card's check as the door runs it (criterion):
//!
//! - `card_auth/door_side`: the door's whole computation for one card: the card's key derived
//!   from the master key (AN10922), AuthenticateEV2First (RndB decrypted, RndA || RndB'
//!   encrypted, the card's answer decrypted and checked), the session keys, GetCardUID's MAC
//!   and the answer's MAC checked and UID decrypted. The card's answers are recorded once
//!   (fixed random numbers), so only the door's work is timed;
//! - `card_auth/with_soft_card`: the same exchange with the software card answering (both
//!   sides' work);
//! - `card_auth/aes_block` and `card_auth/key_schedule`: one AES-128 block and one key
//!   expansion, the units the door's work is made of (for scaling to the ESP32-C3).
//!
//! ```text
//! cargo bench -p chronolock-sim --bench card_auth
//! ```

use std::hint::black_box;

use chronolock_core::card::reader::{Progress, Reader};
use chronolock_core::card::{card_key, DOOR_KEY};
use chronolock_sim::card::SoftCard;
use criterion::{criterion_group, criterion_main, Criterion};

const UID: [u8; 7] = [0x04, 0xDE, 0x5F, 0x1E, 0xAC, 0xC0, 0x40];
const MASTER: [u8; 16] = [0x42; 16];
const RND_A: [u8; 16] = [0x13; 16];

/// The card's four answers to a check with `RND_A`.
fn recorded() -> Vec<Vec<u8>> {
    let mut card = SoftCard::genuine(UID, &MASTER, 1);
    card.fix_next_authentication([0xB9; 16], [0x9D, 0x00, 0xC4, 0xDF]);
    let key = card_key(&MASTER, &UID, DOOR_KEY);
    let (mut r, mut apdu) = Reader::start(UID, DOOR_KEY, key, RND_A);
    let mut answers = vec![];
    loop {
        let answer = card.transmit(&apdu);
        answers.push(answer.clone());
        match r.handle(&answer) {
            Progress::Send(next) => apdu = next,
            Progress::Genuine(_) => return answers,
            Progress::Refused(f) => panic!("the recorded check failed: {f:?}"),
        }
    }
}

fn door_side(answers: &[Vec<u8>]) -> bool {
    let key = card_key(&MASTER, &UID, DOOR_KEY);
    let (mut r, _) = Reader::start(UID, DOOR_KEY, key, RND_A);
    for a in answers {
        match r.handle(a) {
            Progress::Send(apdu) => {
                black_box(apdu);
            }
            Progress::Genuine(uid) => return uid == UID,
            Progress::Refused(_) => return false,
        }
    }
    false
}

fn benches(c: &mut Criterion) {
    let answers = recorded();
    assert!(door_side(&answers));
    let mut g = c.benchmark_group("card_auth");
    g.bench_function("door_side", |b| b.iter(|| door_side(black_box(&answers))));
    g.bench_function("with_soft_card", |b| {
        b.iter(|| {
            let mut card = SoftCard::genuine(UID, &MASTER, 2);
            let key = card_key(&MASTER, &UID, DOOR_KEY);
            let (mut r, mut apdu) = Reader::start(UID, DOOR_KEY, key, RND_A);
            loop {
                match r.handle(&card.transmit(&apdu)) {
                    Progress::Send(next) => apdu = next,
                    done => break black_box(done),
                }
            }
        })
    });
    let key = [7u8; 16];
    g.bench_function("aes_block", |b| {
        use aes::cipher::{BlockEncrypt, KeyInit};
        let cipher = aes::Aes128::new((&key).into());
        let mut block = [1u8; 16];
        b.iter(|| {
            cipher.encrypt_block(black_box(&mut block).into());
            block[0]
        })
    });
    g.bench_function("key_schedule", |b| {
        use aes::cipher::KeyInit;
        b.iter(|| black_box(aes::Aes128::new(black_box(&key).into())))
    });
    g.finish();
}

mod groups {
    // `criterion_group!` defines an undocumented `pub fn`; it is private to this module.
    use super::*;
    criterion_group!(card, benches);
}
criterion_main!(groups::card);
