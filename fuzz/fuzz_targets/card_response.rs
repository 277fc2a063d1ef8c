//! Any bytes a card in the field answers (a card is the attacker's to program): the door's
//! check and the enrolment's personalisation judge every answer, never a panic, and never let
//! a card without the key pass.
#![no_main]

use chronolock_core::card::personalize::{self, Personalizer};
use chronolock_core::card::reader::{Progress, Reader};
use chronolock_core::card::{card_keys, DOOR_KEY};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let uid = [0x04, 0xDE, 0x5F, 0x1E, 0xAC, 0xC0, 0x40];
    let master = [0x42; 16];
    let keys = card_keys(Some(&master), &uid);
    // Answers are split at 0xFF bytes: one per exchange.
    let mut answers = data.split(|&b| b == 0xFF);
    let (mut reader, _) = Reader::start(uid, DOOR_KEY, keys[usize::from(DOOR_KEY)], [7; 16]);
    for answer in answers.by_ref().take(8) {
        match reader.handle(answer) {
            Progress::Send(_) => {}
            // Without the key, RndA cannot come back rotated: random bytes never pass.
            Progress::Genuine(_) => panic!("a card without the key passed"),
            Progress::Refused(_) => break,
        }
    }
    let (mut p, _) = Personalizer::start(uid, card_keys(None, &uid), keys, 1, [9; 16]);
    for answer in answers.take(12) {
        match p.handle(answer) {
            personalize::Progress::Send(_) => {}
            _ => break,
        }
    }
});
