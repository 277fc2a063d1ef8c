//! Any bytes offered as an allow-list: checking (in one go and in small steps) and searching
//! (in place, and a record at a time as a door reads flash) never panic.
#![no_main]

use chronolock_core::allowlist::{AllowList, ListBytes, ListCheck, ListError, KEYPAD_LEN};
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;

/// The bytes read a record at a time, as a door reads its flash.
struct ByRecord<'a>(&'a [u8]);

impl ListBytes for ByRecord<'_> {
    fn len(&self) -> u32 {
        u32::try_from(self.0.len()).unwrap_or(u32::MAX)
    }

    fn read(&self, offset: u32, buf: &mut [u8]) -> Result<(), ListError> {
        let from = offset as usize;
        let src = from
            .checked_add(buf.len())
            .and_then(|end| self.0.get(from..end))
            .ok_or(ListError::Truncated)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

fn search<S: ListBytes>(list: &AllowList<S>, uid: &[u8]) {
    if let Some(policy) = list.find_card(uid).and_then(|i| list.policy(i)) {
        let _ = list.slots_of(&policy).count();
    }
    let _ = list.find_keypad_user(b"1234", &mut [0; KEYPAD_LEN]);
    for i in 0..8 {
        let _ = list.policy(i);
        let _ = list.slot(i);
    }
}

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[0x5E; 32]).verifying_key();
    let _ = AllowList::verify(data, &key);
    let uid = data.get(..4).unwrap_or(&[1, 2, 3, 4]);
    if let Ok(list) = AllowList::open(data) {
        search(&list, uid);
    }
    let source = ByRecord(data);
    if let Ok(list) = AllowList::open_in(ByRecord(data)) {
        search(&list, uid);
    }
    if let Ok(mut check) = ListCheck::start(&source, &key) {
        for _ in 0..data.len() / 7 + 2 {
            match check.step(&source, 7, |_| {}) {
                Ok(None) => {}
                _ => break,
            }
        }
    }
});
