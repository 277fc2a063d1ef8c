//! Any bytes offered to the device protocol's readers (server and device side), sealed or in
//! clear: a reason, never a panic.
#![no_main]

use chronolock_core::protocol::{
    check_response, open_request, CheckRequest, EnrolRequest, Header, SyncRequest, SyncResponse,
    WireEvent,
};
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Header::read(data);
    // The plaintext readers, as the server runs them after opening a request.
    let _ = SyncRequest::parse(data).map(|r| r.events().count());
    let _ = CheckRequest::parse(data);
    let _ = EnrolRequest::parse(data).map(|r| r.open(&[0; 32]));
    let _ = WireEvent::read(data);
    let _ = open_request(&mut data.to_vec(), &[0; 32]);
    let _ = check_response(data, &[0; 32], 0, &[0; 16]);
    let site = SigningKey::from_bytes(&[7; 32]).verifying_key();
    let _ = SyncResponse::parse(&mut data.to_vec(), &[0; 32], &site, 0, &[0; 16]);
});
