//! Any bytes offered as an NTP answer: judged, never a panic.
#![no_main]

use core::time::Duration;

use chronolock_core::ntp::{parse_response, NtpLimits, NtpRequest};
use chronolock_core::{Instant, UnixTime};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cookie = data.get(40..48).map_or(1, |b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])));
    let request = NtpRequest { cookie, sent_at: Instant::from_secs(10) };
    let limits = NtpLimits {
        max_delay: Duration::from_secs(1),
        max_root_distance: Duration::from_millis(1500),
        floor: UnixTime::VALIDITY_THRESHOLD,
        era_anchor: UnixTime::from_secs(1_795_510_740),
    };
    let _ = parse_response(data, &request, Instant::from_millis(10_020), &limits);
});
