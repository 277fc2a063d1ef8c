//! Any bytes read from the PN532 over I2C (the bus and the chip are outside the door's trust):
//! an answer or a named error, never a panic, and never data beyond what the frame holds.
#![no_main]

use chronolock_device::pn532;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for cmd in [
        pn532::command::IN_LIST_PASSIVE_TARGET,
        pn532::command::IN_DATA_EXCHANGE,
        pn532::command::SAM_CONFIGURATION,
    ] {
        if let Ok(answer) = pn532::answer(cmd, data) {
            assert!(answer.len() < data.len());
            if let Ok(Some(card)) = pn532::listed_card(answer) {
                assert!(matches!(card.uid.len(), 4 | 7 | 10));
            }
            let _ = pn532::exchanged(answer);
        }
    }
    let _ = pn532::is_ack(data);
});
