//! Any bytes offered as an allow-list: checking and searching never panic.
#![no_main]

use chronolock_core::allowlist::AllowList;
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[0x5E; 32]).verifying_key();
    let _ = AllowList::verify(data, &key);
    if let Ok(list) = AllowList::open(data) {
        let uid = data.get(..4).unwrap_or(&[1, 2, 3, 4]);
        if let Some(policy) = list.find_card(uid).and_then(|i| list.policy(i)) {
            let _ = list.slots_of(&policy).count();
        }
        let _ = list.find_keypad_user(b"1234");
        for i in 0..8 {
            let _ = list.policy(i);
            let _ = list.slot(i);
        }
    }
});
