//! Any bytes offered as the persisted record: decoded or refused, never a panic.
#![no_main]

use chronolock_core::Persisted;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Persisted::decode(data) {
        assert_eq!(Persisted::decode(&p.encode()), Ok(p));
    }
});
