//! Any bytes posted to the door's setup page: a form or a field-named error, never a panic.
#![no_main]

use chronolock_device::setup::parse_form;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_form(data);
});
