//! SNTP client packets (RFC 4330, RFC 5905): building a request and judging an answer.
//!
//! The request's transmit timestamp is a random cookie, not our time (our clock may be invalid,
//! and a cookie an off-path attacker cannot guess binds the answer to the request, as chrony
//! does). The cookie is shaped like a timestamp of whole microseconds (random seconds, random
//! microsecond), so an SNTP library that writes its transmit time from seconds and microseconds
//! (`sntpc` on the door and the virtual doors) can put it on the wire unchanged
//! ([`NtpRequest::cookie_parts`]); 51 of its bits are unpredictable. The answer's offset is measured against the device's monotonic clock, so it is usable
//! before the wall clock has ever been set.

use core::time::Duration;

use crate::time::{Instant, UnixTime};

/// Size of an NTP packet without extensions.
pub const PACKET_LEN: usize = 48;

/// Seconds from 1900-01-01 (the NTP prime epoch) to 1970-01-01.
const NTP_UNIX_OFFSET_SECS: i64 = 2_208_988_800;
/// Length of one NTP era in seconds (RFC 5905 §6).
const ERA_SECS: i64 = 1 << 32;

/// Why an NTP answer was not used. Each is a reason a careful client discards a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NtpReject {
    /// Shorter than 48 bytes.
    TooShort,
    /// Not a server-mode (4) packet, or an unknown version.
    NotAServerReply,
    /// Origin timestamp zero: the server did not echo our request.
    ZeroOrigin,
    /// Origin timestamp differs from what we sent: stale, duplicate or forged.
    OriginMismatch,
    /// Nothing was asked of this server (or its answer came already).
    Unsolicited,
    /// Stratum 0, a kiss-o'-death (RFC 4330 §8); the code is the reference id.
    KissOfDeath([u8; 4]),
    /// Leap indicator 3 or stratum 16 and above: the server is not synchronised.
    Unsynchronized,
    /// Receive or transmit timestamp zero.
    ZeroTimestamp,
    /// Negative or too long round trip, or the server claims to have held the request longer
    /// than we waited.
    ImplausibleDelay,
    /// Root delay / 2 + root dispersion beyond the configured bound.
    RootDistanceTooLarge,
    /// The time lies below the validity threshold or the configured floor.
    BelowFloor,
}

impl NtpReject {
    /// A short, stable name for logs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            NtpReject::TooShort => "too_short",
            NtpReject::NotAServerReply => "not_a_server_reply",
            NtpReject::ZeroOrigin => "zero_origin",
            NtpReject::OriginMismatch => "origin_mismatch",
            NtpReject::Unsolicited => "unsolicited",
            NtpReject::KissOfDeath(_) => "kiss_o_death",
            NtpReject::Unsynchronized => "unsynchronized",
            NtpReject::ZeroTimestamp => "zero_timestamp",
            NtpReject::ImplausibleDelay => "implausible_delay",
            NtpReject::RootDistanceTooLarge => "root_distance_too_large",
            NtpReject::BelowFloor => "below_floor",
        }
    }

    /// Whether the server asked us to stop querying it (kiss codes DENY and RSTR, RFC 4330 §8).
    pub fn stop_querying(self) -> bool {
        matches!(self, NtpReject::KissOfDeath(code) if &code == b"DENY" || &code == b"RSTR")
    }
}

/// A request as sent: the packet bytes, and what is needed to judge its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NtpRequest {
    /// Random cookie placed in the transmit timestamp, echoed back as the origin timestamp.
    pub cookie: u64,
    /// When the request left, on the monotonic clock.
    pub sent_at: Instant,
}

impl NtpRequest {
    /// A cookie from 64 random bits: odd random NTP seconds and a random whole microsecond
    /// (never zero: a zero origin means "not an answer to a request").
    pub fn cookie_from_random(random: u64) -> u64 {
        let secs = (random >> 32) | 1;
        let micros = (random as u32) % 1_000_000;
        (secs << 32) | micros_to_fraction(micros)
    }

    /// The cookie as NTP-era seconds and microseconds, the way an SNTP library that counts in
    /// microseconds builds its transmit timestamp (`fraction = micros * 2^32 / 10^6`, rounded
    /// down). Exact for cookies from [`cookie_from_random`](Self::cookie_from_random).
    pub fn cookie_parts(&self) -> (u32, u32) {
        let fraction = u64::from(self.cookie as u32);
        let micros = (fraction * 1_000_000).div_ceil(1 << 32);
        ((self.cookie >> 32) as u32, micros as u32)
    }

    /// The 48 bytes of a version 4 client request carrying `cookie`.
    pub fn packet(&self) -> [u8; PACKET_LEN] {
        let mut p = [0u8; PACKET_LEN];
        p[0] = (4 << 3) | 3; // LI 0, VN 4, mode 3 (client)
        p[40..48].copy_from_slice(&self.cookie.to_be_bytes());
        p
    }
}

/// The NTP fraction of a second for whole microseconds, rounded down as SNTP clients do.
fn micros_to_fraction(micros: u32) -> u64 {
    (u64::from(micros) << 32) / 1_000_000
}

/// Limits an answer must respect; from [`Config`](crate::Config).
#[derive(Clone, Copy, Debug)]
pub struct NtpLimits {
    /// Longest plausible round trip.
    pub max_delay: Duration,
    /// Largest acceptable root distance.
    pub max_root_distance: Duration,
    /// Earliest possible time; also anchors the era.
    pub floor: UnixTime,
    /// Time used to choose the era: the latest time known to have passed (at least `floor`).
    pub era_anchor: UnixTime,
}

/// A usable measurement: at `at` (monotonic), true time was `utc` give or take `error_us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NtpSample {
    /// When the answer arrived, on the monotonic clock.
    pub at: Instant,
    /// The server's estimate of UTC at `at`.
    pub utc: UnixTime,
    /// Round-trip delay, excluding the server's processing time.
    pub delay_us: u64,
    /// Error bound: half the round trip plus the server's root distance and precision.
    pub error_us: u64,
    /// The server's stratum.
    pub stratum: u8,
}

/// Judges an answer to `request` that arrived at `received_at`, per RFC 4330 §5 and RFC 5905 §8.
pub fn parse_response(
    packet: &[u8],
    request: &NtpRequest,
    received_at: Instant,
    limits: &NtpLimits,
) -> Result<NtpSample, NtpReject> {
    let p: &[u8; PACKET_LEN] = packet
        .get(..PACKET_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(NtpReject::TooShort)?;
    let leap = p[0] >> 6;
    let version = (p[0] >> 3) & 7;
    let mode = p[0] & 7;
    if mode != 4 || !(1..=4).contains(&version) {
        return Err(NtpReject::NotAServerReply);
    }
    // The origin check comes first so that nobody off-path can make us obey a forged kiss.
    let origin = be_u64(p, 24);
    if origin == 0 {
        return Err(NtpReject::ZeroOrigin);
    }
    if origin != request.cookie {
        return Err(NtpReject::OriginMismatch);
    }
    let stratum = p[1];
    if stratum == 0 {
        let mut code = [0u8; 4];
        code.copy_from_slice(&p[12..16]);
        return Err(NtpReject::KissOfDeath(code));
    }
    if leap == 3 || stratum >= 16 {
        return Err(NtpReject::Unsynchronized);
    }
    let receive = be_u64(p, 32);
    let transmit = be_u64(p, 40);
    if receive == 0 || transmit == 0 {
        return Err(NtpReject::ZeroTimestamp);
    }
    let precision_us = precision_micros(p[3] as i8);
    let root_delay_us = short_format_micros(be_u32(p, 4));
    let root_dispersion_us = short_format_micros(be_u32(p, 8));
    if root_delay_us / 2 + root_dispersion_us > limits.max_root_distance.as_micros() as u64 {
        return Err(NtpReject::RootDistanceTooLarge);
    }

    let t2 = ntp_to_unix(receive, limits.era_anchor);
    let t3 = ntp_to_unix(transmit, limits.era_anchor);
    let held_us = t3.micros_since(t2);
    let waited_us = received_at.micros_since(request.sent_at);
    let delay_us = waited_us - held_us;
    if held_us < 0 || delay_us < 0 || delay_us > limits.max_delay.as_micros() as i64 {
        return Err(NtpReject::ImplausibleDelay);
    }
    // The answer left the server at t3 and travelled about half the round trip.
    let utc = t3.offset_micros(delay_us / 2);
    if !utc.is_plausible() || utc < limits.floor {
        return Err(NtpReject::BelowFloor);
    }
    let delay_us = delay_us as u64;
    Ok(NtpSample {
        at: received_at,
        utc,
        delay_us,
        error_us: delay_us / 2 + root_delay_us / 2 + root_dispersion_us + precision_us,
        stratum,
    })
}

fn be_u64(p: &[u8; PACKET_LEN], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[at..at + 8]);
    u64::from_be_bytes(b)
}

fn be_u32(p: &[u8; PACKET_LEN], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&p[at..at + 4]);
    u32::from_be_bytes(b)
}

/// NTP short format (16.16 seconds) to microseconds.
fn short_format_micros(v: u32) -> u64 {
    (u64::from(v) * 1_000_000) >> 16
}

/// log2-seconds precision to microseconds, at least 1.
fn precision_micros(log2: i8) -> u64 {
    let log2 = i32::from(log2).clamp(-30, 10);
    if log2 >= 0 {
        1_000_000u64 << log2
    } else {
        (1_000_000u64 >> (-log2)).max(1)
    }
}

/// An NTP timestamp (32.32 seconds since the start of some era) as Unix time, choosing the era
/// that puts it closest to `anchor` (RFC 5905 §6: the era comes from other knowledge of the date,
/// here the build time or the latest time known to have passed, never from uptime).
pub fn ntp_to_unix(ts: u64, anchor: UnixTime) -> UnixTime {
    let secs_in_era = (ts >> 32) as i64;
    let frac_us = (((ts & 0xffff_ffff) * 1_000_000) >> 32) as i64;
    let base = secs_in_era - NTP_UNIX_OFFSET_SECS;
    // Choose era so that base + era * 2^32 lies within half an era of the anchor.
    let era = (anchor.secs() - base + ERA_SECS / 2).div_euclid(ERA_SECS);
    UnixTime::from_micros((base + era * ERA_SECS) * 1_000_000 + frac_us)
}

/// Unix time as an NTP timestamp (the era is implicit, as on the wire).
pub fn unix_to_ntp(t: UnixTime) -> u64 {
    let micros = t.as_micros();
    let secs = micros.div_euclid(1_000_000) + NTP_UNIX_OFFSET_SECS;
    let frac = ((micros.rem_euclid(1_000_000) as u64) << 32) / 1_000_000;
    ((secs.rem_euclid(ERA_SECS) as u64) << 32) | frac
}

/// Builds a server's answer; used by the simulator's NTP server and by tests. `receive` and
/// `transmit` are the server's clock at arrival and departure.
#[derive(Clone, Copy, Debug)]
pub struct ServerReply {
    /// Leap indicator (3: unsynchronised).
    pub leap: u8,
    /// Stratum (0: kiss-o'-death).
    pub stratum: u8,
    /// Reference id, or the kiss code when stratum is 0.
    pub reference_id: [u8; 4],
    /// Root delay in microseconds.
    pub root_delay_us: u64,
    /// Root dispersion in microseconds.
    pub root_dispersion_us: u64,
    /// Server time when the request arrived.
    pub receive: UnixTime,
    /// Server time when the answer left.
    pub transmit: UnixTime,
}

impl ServerReply {
    /// An honest stratum-2 answer.
    pub fn synced(receive: UnixTime, transmit: UnixTime) -> Self {
        ServerReply {
            leap: 0,
            stratum: 2,
            reference_id: [127, 0, 0, 1],
            root_delay_us: 1_000,
            root_dispersion_us: 1_000,
            receive,
            transmit,
        }
    }

    /// The answer's bytes, echoing the request's transmit timestamp as origin.
    pub fn encode(&self, request: &[u8; PACKET_LEN]) -> [u8; PACKET_LEN] {
        let mut p = [0u8; PACKET_LEN];
        p[0] = (self.leap & 3) << 6 | (4 << 3) | 4;
        p[1] = self.stratum;
        p[2] = 6;
        p[3] = (-20i8) as u8; // about 1 µs
        p[4..8].copy_from_slice(&micros_to_short(self.root_delay_us).to_be_bytes());
        p[8..12].copy_from_slice(&micros_to_short(self.root_dispersion_us).to_be_bytes());
        p[12..16].copy_from_slice(&self.reference_id);
        p[16..24].copy_from_slice(&unix_to_ntp(self.receive).to_be_bytes());
        p[24..32].copy_from_slice(&request[40..48]);
        p[32..40].copy_from_slice(&unix_to_ntp(self.receive).to_be_bytes());
        p[40..48].copy_from_slice(&unix_to_ntp(self.transmit).to_be_bytes());
        p
    }
}

fn micros_to_short(us: u64) -> u32 {
    ((us << 16) / 1_000_000).min(u64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_510_740; // 2026-11-24T08:59:00Z

    fn limits() -> NtpLimits {
        NtpLimits {
            max_delay: Duration::from_secs(1),
            max_root_distance: Duration::from_millis(1500),
            floor: UnixTime::from_secs(1_767_225_600), // 2026-01-01
            era_anchor: UnixTime::from_secs(1_767_225_600),
        }
    }

    fn request() -> NtpRequest {
        NtpRequest {
            cookie: 0x0123_4567_89ab_cdef,
            sent_at: Instant::from_secs(10),
        }
    }

    /// An answer that arrives 20 ms after the request, from a server at `NOW`.
    fn answer(
        edit: impl FnOnce(&mut ServerReply),
        bytes: impl FnOnce(&mut [u8; 48]),
    ) -> (Result<NtpSample, NtpReject>, UnixTime) {
        let t = UnixTime::from_secs(NOW);
        let mut reply = ServerReply::synced(t, t.offset_micros(100));
        edit(&mut reply);
        let mut p = reply.encode(&request().packet());
        bytes(&mut p);
        let at = Instant::from_micros(10_020_100);
        (parse_response(&p, &request(), at, &limits()), t)
    }

    #[test]
    fn cookies_are_whole_microseconds_an_sntp_library_can_carry() {
        for random in [0u64, 1, 999_999, 1_000_000, u64::MAX, 0x0123_4567_89ab_cdef] {
            let cookie = NtpRequest::cookie_from_random(random);
            assert_ne!(cookie, 0);
            let request = NtpRequest {
                cookie,
                sent_at: Instant::ZERO,
            };
            let (secs, micros) = request.cookie_parts();
            assert!(micros < 1_000_000);
            // Rebuilt the way sntpc writes a transmit timestamp.
            let rebuilt = (u64::from(secs) << 32) | ((u64::from(micros) << 32) / 1_000_000);
            assert_eq!(rebuilt, cookie, "{random:#x}");
        }
    }

    #[test]
    fn request_is_client_mode_v4_with_cookie() {
        let p = request().packet();
        assert_eq!(p[0], 0x23);
        assert_eq!(&p[40..48], &0x0123_4567_89ab_cdefu64.to_be_bytes());
        assert!(p[1..40].iter().all(|&b| b == 0));
    }

    #[test]
    fn good_answer_gives_time_and_delay() {
        let (r, t) = answer(|_| {}, |_| {});
        let s = r.unwrap();
        assert!(s.delay_us.abs_diff(20_000) <= 1, "{}", s.delay_us);
        // transmit (t + 100 µs) plus half the delay; the timestamp codec may lose a microsecond.
        assert!(
            (s.utc.micros_since(t) - 10_100).abs() <= 1,
            "{:?}",
            s.utc.micros_since(t)
        );
        assert!(
            s.error_us >= 10_000 && s.error_us < 15_000,
            "{}",
            s.error_us
        );
        assert_eq!(s.stratum, 2);
    }

    #[test]
    fn each_rejection() {
        type Case = (
            &'static str,
            fn(&mut ServerReply),
            fn(&mut [u8; 48]),
            NtpReject,
        );
        let cases: &[Case] = &[
            (
                "kiss RATE",
                |r| {
                    r.stratum = 0;
                    r.reference_id = *b"RATE";
                },
                |_| {},
                NtpReject::KissOfDeath(*b"RATE"),
            ),
            (
                "kiss DENY",
                |r| {
                    r.stratum = 0;
                    r.reference_id = *b"DENY";
                },
                |_| {},
                NtpReject::KissOfDeath(*b"DENY"),
            ),
            ("leap 3", |r| r.leap = 3, |_| {}, NtpReject::Unsynchronized),
            (
                "stratum 16",
                |r| r.stratum = 16,
                |_| {},
                NtpReject::Unsynchronized,
            ),
            (
                "zero origin",
                |_| {},
                |p| p[24..32].fill(0),
                NtpReject::ZeroOrigin,
            ),
            (
                "other origin",
                |_| {},
                |p| p[31] ^= 1,
                NtpReject::OriginMismatch,
            ),
            (
                "client mode",
                |_| {},
                |p| p[0] = (p[0] & !7) | 3,
                NtpReject::NotAServerReply,
            ),
            (
                "version 0",
                |_| {},
                |p| p[0] &= !(7 << 3),
                NtpReject::NotAServerReply,
            ),
            (
                "zero transmit",
                |_| {},
                |p| p[40..48].fill(0),
                NtpReject::ZeroTimestamp,
            ),
            (
                "zero receive",
                |_| {},
                |p| p[32..40].fill(0),
                NtpReject::ZeroTimestamp,
            ),
            (
                "held longer than we waited",
                |r| r.transmit = r.receive.offset_micros(30_000),
                |_| {},
                NtpReject::ImplausibleDelay,
            ),
            (
                "transmit before receive",
                |r| r.transmit = r.receive.offset_micros(-5),
                |_| {},
                NtpReject::ImplausibleDelay,
            ),
            (
                "root distance",
                |r| r.root_dispersion_us = 2_000_000,
                |_| {},
                NtpReject::RootDistanceTooLarge,
            ),
            (
                "1970",
                |r| {
                    r.receive = UnixTime::from_secs(5);
                    r.transmit = UnixTime::from_secs(5);
                },
                |_| {},
                NtpReject::BelowFloor,
            ),
            (
                "below the floor",
                |r| {
                    r.receive = UnixTime::from_secs(1_600_000_000);
                    r.transmit = r.receive;
                },
                |_| {},
                NtpReject::BelowFloor,
            ),
        ];
        for (name, edit, bytes, want) in cases {
            let (got, _) = answer(*edit, *bytes);
            assert_eq!(got, Err(*want), "{name}");
        }
        let (got, _) = answer(|_| {}, |_| {});
        assert!(got.is_ok());
    }

    #[test]
    fn implausible_round_trip() {
        let t = UnixTime::from_secs(NOW);
        let p = ServerReply::synced(t, t).encode(&request().packet());
        let late = Instant::from_micros(10_000_000 + 1_500_000);
        assert_eq!(
            parse_response(&p, &request(), late, &limits()),
            Err(NtpReject::ImplausibleDelay)
        );
        let early = Instant::from_secs(9); // "answered before it was asked"
        assert_eq!(
            parse_response(&p, &request(), early, &limits()),
            Err(NtpReject::ImplausibleDelay)
        );
    }

    #[test]
    fn short_packets_are_rejected() {
        let p = [0u8; 47];
        assert_eq!(
            parse_response(&p, &request(), Instant::from_secs(11), &limits()),
            Err(NtpReject::TooShort)
        );
    }

    #[test]
    fn only_deny_and_rstr_stop_queries() {
        assert!(NtpReject::KissOfDeath(*b"DENY").stop_querying());
        assert!(NtpReject::KissOfDeath(*b"RSTR").stop_querying());
        assert!(!NtpReject::KissOfDeath(*b"RATE").stop_querying());
        assert!(!NtpReject::Unsynchronized.stop_querying());
    }

    #[test]
    fn era_follows_the_anchor_not_uptime() {
        // Just after the 2036 rollover the wire seconds are small; with a 2030 anchor they belong
        // to era 1, not to 1900.
        let after_rollover = UnixTime::from_secs(2_085_978_496 + 100);
        let wire = unix_to_ntp(after_rollover);
        assert!(wire >> 32 < 1000);
        assert_eq!(
            ntp_to_unix(wire, UnixTime::from_secs(1_900_000_000)),
            after_rollover
        );
        // Round trip in era 0, with microseconds.
        let t = UnixTime::from_micros(1_795_510_740_123_456);
        let back = ntp_to_unix(unix_to_ntp(t), UnixTime::from_secs(1_767_225_600));
        assert!((back.micros_since(t)).abs() <= 1);
    }
}
