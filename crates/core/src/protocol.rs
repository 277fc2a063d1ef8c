//! The device protocol, version 4: how a door pairs with the backend, syncs, and asks about a
//! CONDITIONAL credential. Both ends use this module (the firmware and the virtual doors to
//! write requests and check answers, the server to read requests and write answers), so the
//! wire format has one definition. `docs/protocol.md` describes it for other implementations.
//!
//! Messages are binary, little-endian, carried in HTTP POST bodies. Each starts with a 32-byte
//! header in clear: magic `CLDP`, version, kind, two reserved bytes, the door id, and a 16-byte
//! nonce chosen by the device for this exchange (the answer echoes it). Everything after the
//! header is encrypted and authenticated with XChaCha20-Poly1305, the header being associated
//! data; each direction has its own key, derived from the device key with HKDF-SHA256.
//!
//! - **Enrolment**: the device sends an X25519 public key, sealed under a key derived from the
//!   one-time pairing code's SHA-256 (which proves it knows the code); the server answers with
//!   its own X25519 public key, then, sealed under the new device key, the site's Ed25519 public
//!   key. Both derive the device key with HKDF-SHA256 from the Diffie-Hellman secret, salted with
//!   the code's hash, so a forged answer fails and an eavesdropper learns no key.
//! - **Sync** (every 5 minutes by default): the device sends a counter, its status and queued
//!   events, each with an id so a resent event is stored once; the server answers with its
//!   receive and transmit times bound to the door id and nonce (the device's authenticated
//!   time source: sealed under the door's own link key, or, for a door that does not ask for
//!   that, also signed by the site key), how many events it stored, the current list
//!   generation and, only when the device's generation is older, the new list after the fixed
//!   part (encrypted with the XChaCha20 keystream, checked by its SHA-256 in the fixed part).
//! - **Check**: a counter and a CONDITIONAL credential, answered granted or not.
//!
//! **Replays.** Every sync and check request carries a counter that strictly increases per door;
//! the server keeps the highest it accepted and refuses any request that is not newer before it
//! changes anything. A door sends one request at a time, so its counters arrive in order.
//! Keypad secrets inside a door's list are also sealed with a key derived from the device key
//! ([`list_key`], [`crate::allowlist::unseal_secrets`]).

use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use chacha20::XChaCha20;
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use crate::access::Decision;
use crate::allowlist::{MAX_UID_LEN, MAX_USER_CODE_LEN};
use crate::clock::Source;
use crate::controller::{AlarmKind, BackendTime, Credential, Event, NONCE_LEN};
use crate::lockdown::ORDER_LEN;
use crate::report::Basis;
use crate::time::UnixTime;

/// The first four bytes of every message.
pub const MAGIC: [u8; 4] = *b"CLDP";
/// The protocol version this code speaks.
pub const VERSION: u8 = 4;
/// Header length.
pub const HEADER_LEN: usize = 32;
/// Poly1305 tag length: every message ends with one.
pub const TAG_LEN: usize = 16;
/// Enrolment request length.
pub const ENROL_REQUEST_LEN: usize = HEADER_LEN + 32 + TAG_LEN;
/// Enrolment answer length.
pub const ENROL_RESPONSE_LEN: usize = HEADER_LEN + 32 + 32 + 8 + TAG_LEN;
/// Fixed part of a sync request, before the events.
pub const SYNC_REQUEST_FIXED: usize = HEADER_LEN + 72;
/// Fixed part of an event, before its payload.
pub const EVENT_HEAD_LEN: usize = 20;
/// Longest event payload.
pub const MAX_EVENT_PAYLOAD: usize = 48;
/// Fixed part of a sync answer; a new list (or the rest of one) follows it, then a piece of a
/// firmware update.
pub const SYNC_RESPONSE_LEN: usize = HEADER_LEN
    + 16
    + 64
    + 16
    + 4
    + 32
    + 4
    + NTP_FIELD_LEN
    + FIRMWARE_FIELD_LEN
    + ORDER_LEN
    + POSITION_FIELD_LEN
    + TAG_LEN;
/// Bytes of a sync answer's door settings: held-open seconds (u16), flags (bit 0: the site
/// sets them, bit 1: a door contact is fitted), one reserved byte.
pub const POSITION_FIELD_LEN: usize = 4;
/// Watch request length.
pub const WATCH_REQUEST_LEN: usize = HEADER_LEN + 16 + TAG_LEN;
/// Watch answer length.
pub const WATCH_RESPONSE_LEN: usize = HEADER_LEN + 8 + TAG_LEN;
/// Bytes of a sync answer's firmware offer: version, length, offset and length of the piece
/// that follows, SHA-256 of the signed image.
pub const FIRMWARE_FIELD_LEN: usize = 48;
/// Most bytes of a firmware update one sync answer carries; the door asks for the rest at once.
pub const FIRMWARE_CHUNK_MAX: u32 = 128 * 1024;
/// Bytes of a sync answer's NTP server field: the site's servers, separated by spaces, then
/// zeros (all zeros: the site names none, and the door keeps its own).
pub const NTP_FIELD_LEN: usize = 128;
/// Check request length.
pub const CHECK_REQUEST_LEN: usize = HEADER_LEN + 16 + 2 + MAX_UID_LEN + TAG_LEN;
/// Check answer length.
pub const CHECK_RESPONSE_LEN: usize = HEADER_LEN + 4 + TAG_LEN;
/// Largest counter a request may carry (the server keeps it as a signed 64-bit number).
pub const MAX_COUNTER: u64 = i64::MAX as u64;
/// Sync request flags (byte 74) and answer flags (byte 114), bit 0: the answer's times are
/// authenticated by the link key alone, without the site's signature (see [`SyncAnswer::write`]).
pub const LINK_TIME: u8 = 1;

const TIME_CONTEXT: &[u8] = b"chronolock/time/v1";
const DEVICE_KEY_INFO: &[u8] = b"chronolock/device-key/v1";
const LIST_KEY_INFO: &[u8] = b"chronolock/list-key/v1";
const UP_KEY_INFO: &[u8] = b"chronolock/link/device-to-server/v2";
const DOWN_KEY_INFO: &[u8] = b"chronolock/link/server-to-device/v2";
const ENROL_KEY_INFO: &[u8] = b"chronolock/enrol/v2";

/// What a nonce is used for (its byte after the header's 16 nonce bytes), so that the body's
/// AEAD and the list's keystream never share one.
const PURPOSE_BODY: u8 = 0;
const PURPOSE_LIST: u8 = 1;
const PURPOSE_FIRMWARE: u8 = 2;

/// What kind of message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Device → server: pair with a one-time code.
    EnrolRequest = 1,
    /// Device → server: status and events.
    SyncRequest = 2,
    /// Device → server: may this CONDITIONAL credential enter?
    CheckRequest = 3,
    /// Device → server: answer when something for me changes.
    WatchRequest = 4,
    /// Server → device.
    EnrolResponse = 0x81,
    /// Server → device.
    SyncResponse = 0x82,
    /// Server → device.
    CheckResponse = 0x83,
    /// Server → device.
    WatchResponse = 0x84,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::EnrolRequest,
            2 => Kind::SyncRequest,
            3 => Kind::CheckRequest,
            4 => Kind::WatchRequest,
            0x84 => Kind::WatchResponse,
            0x81 => Kind::EnrolResponse,
            0x82 => Kind::SyncResponse,
            0x83 => Kind::CheckResponse,
            _ => return None,
        })
    }
}

/// Why a message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// Shorter than its layout.
    Truncated,
    /// Not a chronolock device protocol message.
    NotProtocol,
    /// A version this code does not speak.
    UnsupportedVersion(u8),
    /// Not the kind of message expected here.
    UnexpectedKind(u8),
    /// The AEAD tag does not verify: wrong key, or tampered with.
    BadMac,
    /// A counter that is not above the last one accepted from this door (a replayed or
    /// reordered request).
    Replayed,
    /// The server's time signature does not verify against the site key.
    BadSignature,
    /// The answer is for another exchange (nonce or door differs).
    Mismatch,
    /// A field holds an impossible value; names the field.
    Malformed(&'static str),
    /// The output buffer is too small.
    BufferTooSmall,
}

impl core::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProtocolError::Truncated => f.write_str("message is truncated"),
            ProtocolError::NotProtocol => f.write_str("not a chronolock device message"),
            ProtocolError::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            ProtocolError::UnexpectedKind(k) => write!(f, "unexpected message kind {k:#04x}"),
            ProtocolError::BadMac => f.write_str("authentication failed"),
            ProtocolError::Replayed => f.write_str("replayed or reordered request"),
            ProtocolError::BadSignature => f.write_str("time signature does not verify"),
            ProtocolError::Mismatch => f.write_str("answer does not belong to this request"),
            ProtocolError::Malformed(field) => write!(f, "malformed field `{field}`"),
            ProtocolError::BufferTooSmall => f.write_str("buffer too small"),
        }
    }
}

/// The common header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The message kind.
    pub kind: Kind,
    /// The door (0 in an enrolment request).
    pub door_id: u64,
    /// The device's nonce for this exchange.
    pub nonce: [u8; NONCE_LEN],
}

impl Header {
    /// Reads and checks the header of `bytes`.
    pub fn read(bytes: &[u8]) -> Result<Header, ProtocolError> {
        if bytes.len() < 4 {
            return Err(ProtocolError::Truncated);
        }
        if bytes[..4] != MAGIC {
            return Err(ProtocolError::NotProtocol);
        }
        if bytes.len() < HEADER_LEN {
            return Err(ProtocolError::Truncated);
        }
        if bytes[4] != VERSION {
            return Err(ProtocolError::UnsupportedVersion(bytes[4]));
        }
        let kind = Kind::from_u8(bytes[5]).ok_or(ProtocolError::UnexpectedKind(bytes[5]))?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[16..32]);
        Ok(Header {
            kind,
            door_id: u64_at(bytes, 8),
            nonce,
        })
    }

    fn expect(bytes: &[u8], kind: Kind, len: usize) -> Result<Header, ProtocolError> {
        let header = Header::read(bytes)?;
        if header.kind != kind {
            return Err(ProtocolError::UnexpectedKind(header.kind as u8));
        }
        if bytes.len() < len {
            return Err(ProtocolError::Truncated);
        }
        Ok(header)
    }

    fn write(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&MAGIC);
        out[4] = VERSION;
        out[5] = self.kind as u8;
        out[6..8].fill(0);
        out[8..16].copy_from_slice(&self.door_id.to_le_bytes());
        out[16..32].copy_from_slice(&self.nonce);
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    u64_at(b, at) as i64
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Which way a message travels; each direction has its own key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Device to server (requests).
    Up,
    /// Server to device (answers).
    Down,
}

/// The key for one direction of a paired door's link.
pub fn link_key(device_key: &[u8; 32], direction: Direction) -> [u8; 32] {
    let info = match direction {
        Direction::Up => UP_KEY_INFO,
        Direction::Down => DOWN_KEY_INFO,
    };
    let mut key = [0u8; 32];
    // 32 bytes is always a valid HKDF-SHA256 output length.
    let _ = Hkdf::<Sha256>::new(None, device_key).expand(info, &mut key);
    key
}

/// The key an enrolment request is sealed with: only who knows the code can make or open it.
fn enrol_key(code_hash: &[u8; 32]) -> [u8; 32] {
    let mut key = [0u8; 32];
    let _ = Hkdf::<Sha256>::new(None, code_hash).expand(ENROL_KEY_INFO, &mut key);
    key
}

/// The 24-byte XChaCha nonce: the message's 16 nonce bytes, then what it is for.
fn xnonce(message: &[u8], purpose: u8) -> [u8; 24] {
    let mut n = [0u8; 24];
    n[..NONCE_LEN].copy_from_slice(&message[16..32]);
    n[NONCE_LEN] = purpose;
    n
}

/// Encrypts `message[aad..len]` in place (the bytes before `aad` are associated data) and puts
/// the tag after it; returns the sealed length.
fn seal(message: &mut [u8], aad: usize, len: usize, key: &[u8; 32]) -> usize {
    let nonce = xnonce(message, PURPOSE_BODY);
    let (head, rest) = message.split_at_mut(aad);
    let (body, tail) = rest.split_at_mut(len - aad);
    let cipher = XChaCha20Poly1305::new(key.into());
    match cipher.encrypt_in_place_detached(&nonce.into(), head, body) {
        Ok(tag) => tail[..TAG_LEN].copy_from_slice(&tag),
        // Only for bodies beyond 256 GiB.
        Err(_) => tail[..TAG_LEN].fill(0),
    }
    len + TAG_LEN
}

/// Checks the tag at the end of `message` and decrypts the bytes between `aad` and it in place;
/// returns the length without the tag.
fn open(message: &mut [u8], aad: usize, key: &[u8; 32]) -> Result<usize, ProtocolError> {
    if message.len() < aad + TAG_LEN || aad < HEADER_LEN {
        return Err(ProtocolError::Truncated);
    }
    let len = message.len() - TAG_LEN;
    let nonce = xnonce(message, PURPOSE_BODY);
    let (head, rest) = message.split_at_mut(aad);
    let (body, tag) = rest.split_at_mut(len - aad);
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt_in_place_detached(&nonce.into(), head, body, (&*tag).into())
        .map_err(|_| ProtocolError::BadMac)?;
    Ok(len)
}

/// Checks and decrypts a paired door's request in place (the server's side); returns the length
/// of the header and plaintext body, which the request's `parse` then reads.
pub fn open_request(message: &mut [u8], device_key: &[u8; 32]) -> Result<usize, ProtocolError> {
    open(message, HEADER_LEN, &link_key(device_key, Direction::Up))
}

/// The XChaCha20 keystream a sync answer's list travels under, from byte `offset` of the list
/// on: [`apply`](ListStream::apply) it to the bytes as they go (server) or come (device).
pub struct ListStream(XChaCha20);

impl ListStream {
    /// The keystream of the answer to the request with `nonce`, positioned at `offset`.
    pub fn new(device_key: &[u8; 32], nonce: &[u8; NONCE_LEN], offset: u32) -> Self {
        Self::with_purpose(device_key, nonce, offset, PURPOSE_LIST)
    }

    /// The keystream a firmware piece travels under (another nonce than the list's), at byte
    /// `offset` of the signed image.
    pub fn firmware(device_key: &[u8; 32], nonce: &[u8; NONCE_LEN], offset: u32) -> Self {
        Self::with_purpose(device_key, nonce, offset, PURPOSE_FIRMWARE)
    }

    fn with_purpose(
        device_key: &[u8; 32],
        nonce: &[u8; NONCE_LEN],
        offset: u32,
        purpose: u8,
    ) -> Self {
        let key = link_key(device_key, Direction::Down);
        let mut n = [0u8; 24];
        n[..NONCE_LEN].copy_from_slice(nonce);
        n[NONCE_LEN] = purpose;
        let mut cipher = XChaCha20::new((&key).into(), (&n).into());
        cipher.seek(u64::from(offset));
        ListStream(cipher)
    }

    /// Encrypts or decrypts the next bytes in place.
    pub fn apply(&mut self, bytes: &mut [u8]) {
        self.0.apply_keystream(bytes);
    }
}

fn counter_at(b: &[u8], at: usize) -> Result<u64, ProtocolError> {
    match u64_at(b, at) {
        0 => Err(ProtocolError::Malformed("counter")),
        c if c > MAX_COUNTER => Err(ProtocolError::Malformed("counter")),
        c => Ok(c),
    }
}

/// SHA-256 of a pairing code as typed: letters and digits only, upper case (so `abcd-efgh` and
/// `ABCDEFGH` are the same code).
pub fn pairing_code_hash(code: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for c in code.chars().filter(char::is_ascii_alphanumeric) {
        h.update([c.to_ascii_uppercase() as u8]);
    }
    h.finalize().into()
}

/// The device key both ends derive at enrolment.
pub fn device_key(shared_secret: &[u8; 32], code_hash: &[u8; 32], door_id: u64) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(Some(code_hash), shared_secret);
    let mut key = [0u8; 32];
    // 32 bytes is always a valid HKDF-SHA256 output length.
    let _ = hk.expand_multi_info(&[DEVICE_KEY_INFO, &door_id.to_le_bytes()], &mut key);
    key
}

/// The key that seals keypad secrets in this device's lists.
pub fn list_key(device_key: &[u8; 32]) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(None, device_key);
    let mut key = [0u8; 32];
    let _ = hk.expand(LIST_KEY_INFO, &mut key);
    key
}

// ---------------------------------------------------------------------------------------------
// Enrolment

/// The device's side of enrolment.
pub struct Enrolment {
    secret: x25519_dalek::StaticSecret,
    code_hash: [u8; 32],
    nonce: [u8; NONCE_LEN],
}

/// What a device gets from enrolment; it keeps all of it in flash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enrolled {
    /// Its door id.
    pub door_id: u64,
    /// Its own key, shared with the server only.
    pub device_key: [u8; 32],
    /// The site's public key: allow-lists and time answers are signed with it.
    pub site_key: [u8; 32],
    /// How often to sync, in seconds.
    pub sync_interval_s: u32,
}

impl Enrolment {
    /// Starts enrolment with 32 random bytes and a nonce from the shell's RNG, and the pairing
    /// code the admin gave.
    pub fn new(random: [u8; 32], nonce: [u8; NONCE_LEN], pairing_code: &str) -> Self {
        Enrolment {
            secret: x25519_dalek::StaticSecret::from(random),
            code_hash: pairing_code_hash(pairing_code),
            nonce,
        }
    }

    /// The request to POST.
    pub fn request(&self) -> [u8; ENROL_REQUEST_LEN] {
        let mut out = [0u8; ENROL_REQUEST_LEN];
        Header {
            kind: Kind::EnrolRequest,
            door_id: 0,
            nonce: self.nonce,
        }
        .write(&mut out);
        let public = x25519_dalek::PublicKey::from(&self.secret);
        out[32..64].copy_from_slice(public.as_bytes());
        seal(&mut out, HEADER_LEN, 64, &enrol_key(&self.code_hash));
        out
    }

    /// Checks the server's answer and derives the device key.
    pub fn finish(&self, answer: &[u8]) -> Result<Enrolled, ProtocolError> {
        let header = Header::expect(answer, Kind::EnrolResponse, ENROL_RESPONSE_LEN)?;
        if header.nonce != self.nonce {
            return Err(ProtocolError::Mismatch);
        }
        let mut sealed = [0u8; ENROL_RESPONSE_LEN];
        sealed.copy_from_slice(&answer[..ENROL_RESPONSE_LEN]);
        let mut server_public = [0u8; 32];
        server_public.copy_from_slice(&sealed[32..64]);
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(server_public));
        if !shared.was_contributory() {
            return Err(ProtocolError::Malformed("server_public_key"));
        }
        let key = device_key(shared.as_bytes(), &self.code_hash, header.door_id);
        // The server's public key is associated data; the rest opens only under the new key.
        open(&mut sealed, 64, &link_key(&key, Direction::Down))?;
        let answer = &sealed[..];
        let mut site_key = [0u8; 32];
        site_key.copy_from_slice(&answer[64..96]);
        VerifyingKey::from_bytes(&site_key).map_err(|_| ProtocolError::Malformed("site_key"))?;
        Ok(Enrolled {
            door_id: header.door_id,
            device_key: key,
            site_key,
            sync_interval_s: u32_at(answer, 96),
        })
    }
}

/// An enrolment request as the server reads it.
#[derive(Clone, Copy, Debug)]
pub struct EnrolRequest {
    /// The header.
    pub header: Header,
    sealed: [u8; ENROL_REQUEST_LEN],
}

impl EnrolRequest {
    /// Reads an enrolment request (its body opens with [`EnrolRequest::open`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let header = Header::expect(bytes, Kind::EnrolRequest, ENROL_REQUEST_LEN)?;
        if bytes.len() != ENROL_REQUEST_LEN {
            return Err(ProtocolError::Malformed("length"));
        }
        let mut sealed = [0u8; ENROL_REQUEST_LEN];
        sealed.copy_from_slice(bytes);
        Ok(EnrolRequest { header, sealed })
    }

    /// The device's X25519 public key, if the request was sealed with the pairing code with
    /// this hash (which proves the device knows the code).
    pub fn open(&self, code_hash: &[u8; 32]) -> Option<[u8; 32]> {
        let mut m = self.sealed;
        open(&mut m, HEADER_LEN, &enrol_key(code_hash)).ok()?;
        let mut public = [0u8; 32];
        public.copy_from_slice(&m[32..64]);
        Some(public)
    }

    /// The server's answer to the device with public key `device_public` (from
    /// [`open`](Self::open)), made with 32 random bytes from the server's RNG; returns it with
    /// the device key to store for the door.
    pub fn answer(
        &self,
        device_public: [u8; 32],
        random: [u8; 32],
        code_hash: &[u8; 32],
        door_id: u64,
        site_key: &[u8; 32],
        sync_interval_s: u32,
    ) -> Result<([u8; ENROL_RESPONSE_LEN], [u8; 32]), ProtocolError> {
        let secret = x25519_dalek::StaticSecret::from(random);
        let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(device_public));
        if !shared.was_contributory() {
            return Err(ProtocolError::Malformed("device_public_key"));
        }
        let key = device_key(shared.as_bytes(), code_hash, door_id);
        let mut out = [0u8; ENROL_RESPONSE_LEN];
        Header {
            kind: Kind::EnrolResponse,
            door_id,
            nonce: self.header.nonce,
        }
        .write(&mut out);
        out[32..64].copy_from_slice(x25519_dalek::PublicKey::from(&secret).as_bytes());
        out[64..96].copy_from_slice(site_key);
        out[96..100].copy_from_slice(&sync_interval_s.to_le_bytes());
        seal(
            &mut out,
            64,
            ENROL_RESPONSE_LEN - TAG_LEN,
            &link_key(&key, Direction::Down),
        );
        Ok((out, key))
    }
}

// ---------------------------------------------------------------------------------------------
// Events

/// An event as it travels: the device's id for it, the device's UTC when it happened (none while
/// the clock was invalid), and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireEvent {
    /// Unique per device: a resend carries the same id and is stored once.
    pub id: u64,
    /// Device UTC in microseconds, if its clock was valid.
    pub device_us: Option<i64>,
    /// What happened.
    pub body: EventBody,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventBody {
    /// An access decision.
    Decision {
        /// Who.
        credential: Credential,
        /// What was decided.
        decision: Decision,
    },
    /// An EMERGENCY credential was used.
    Notify {
        /// Who.
        credential: Credential,
    },
    /// The door-position contact changed.
    Door {
        /// Open now.
        open: bool,
    },
    /// The request-to-exit button was pressed.
    Rex,
    /// An alarm started.
    Alarm {
        /// Which.
        kind: AlarmKind,
    },
    /// An alarm ended.
    AlarmCleared {
        /// Which.
        kind: AlarmKind,
    },
    /// The door's lockdown state changed.
    Lockdown {
        /// In lockdown now.
        on: bool,
    },
    /// The daily battery report.
    Report {
        /// Millivolts.
        mv: u16,
        /// By the wall clock or by uptime.
        basis: Basis,
    },
    /// The clock's validity or source changed, or it was stepped.
    Clock {
        /// Valid now?
        valid: bool,
        /// Its source.
        source: Option<Source>,
        /// UTC in microseconds, when valid.
        utc_us: Option<i64>,
        /// Error bound in microseconds.
        error_us: u64,
    },
    /// The device wrote its RTC.
    RtcWrite {
        /// The UTC written, in microseconds.
        utc_us: i64,
    },
    /// A time was not used.
    TimeRejected {
        /// Its source.
        source: Source,
        /// Which server of that kind.
        server: u8,
        /// Why, as a short name.
        reason: heapless::String<32>,
    },
    /// The controller could not queue this many actions for its shell.
    ActionsDropped {
        /// How many.
        count: u32,
    },
}

impl EventBody {
    /// The wire form of a controller event.
    pub fn from_event(event: &Event) -> EventBody {
        match *event {
            Event::Clock {
                valid,
                source,
                utc,
                error_us,
            } => EventBody::Clock {
                valid,
                source,
                utc_us: utc.map(UnixTime::as_micros),
                error_us,
            },
            Event::Decision {
                credential,
                decision,
            } => EventBody::Decision {
                credential,
                decision,
            },
            Event::Notify { credential } => EventBody::Notify { credential },
            Event::Report { mv, basis } => EventBody::Report { mv, basis },
            Event::ActionsDropped { count } => EventBody::ActionsDropped { count },
            Event::Door { open } => EventBody::Door { open },
            Event::Rex => EventBody::Rex,
            Event::Alarm { kind } => EventBody::Alarm { kind },
            Event::AlarmCleared { kind } => EventBody::AlarmCleared { kind },
            Event::Lockdown { on } => EventBody::Lockdown { on },
            Event::TimeRejected {
                source,
                server,
                reason,
            } => {
                let mut name = heapless::String::new();
                for c in reason.as_str().chars() {
                    if name.push(c).is_err() {
                        break;
                    }
                }
                EventBody::TimeRejected {
                    source,
                    server,
                    reason: name,
                }
            }
        }
    }

    /// Every kind name, in wire-code order (code 1 first).
    pub const KINDS: [&'static str; 12] = [
        "decision",
        "notify",
        "report",
        "clock",
        "rtc_write",
        "time_rejected",
        "actions_dropped",
        "door",
        "rex",
        "alarm",
        "alarm_cleared",
        "lockdown",
    ];

    /// The short kind name the server stores: one of [`KINDS`](Self::KINDS).
    pub fn kind_name(&self) -> &'static str {
        match self {
            EventBody::Decision { .. } => "decision",
            EventBody::Notify { .. } => "notify",
            EventBody::Report { .. } => "report",
            EventBody::Clock { .. } => "clock",
            EventBody::RtcWrite { .. } => "rtc_write",
            EventBody::TimeRejected { .. } => "time_rejected",
            EventBody::ActionsDropped { .. } => "actions_dropped",
            EventBody::Door { .. } => "door",
            EventBody::Rex => "rex",
            EventBody::Alarm { .. } => "alarm",
            EventBody::AlarmCleared { .. } => "alarm_cleared",
            EventBody::Lockdown { .. } => "lockdown",
        }
    }

    /// The kind's wire code.
    pub fn code(&self) -> u8 {
        match self {
            EventBody::Decision { .. } => 1,
            EventBody::Notify { .. } => 2,
            EventBody::Report { .. } => 3,
            EventBody::Clock { .. } => 4,
            EventBody::RtcWrite { .. } => 5,
            EventBody::TimeRejected { .. } => 6,
            EventBody::ActionsDropped { .. } => 7,
            EventBody::Door { .. } => 8,
            EventBody::Rex => 9,
            EventBody::Alarm { .. } => 10,
            EventBody::AlarmCleared { .. } => 11,
            EventBody::Lockdown { .. } => 12,
        }
    }
}

fn source_code(s: Option<Source>) -> u8 {
    match s {
        None => 0,
        Some(Source::Rtc) => 1,
        Some(Source::Phone) => 2,
        Some(Source::Ntp) => 3,
        Some(Source::Backend) => 4,
    }
}

fn source_from(b: u8) -> Result<Option<Source>, ProtocolError> {
    Ok(match b {
        0 => None,
        1 => Some(Source::Rtc),
        2 => Some(Source::Phone),
        3 => Some(Source::Ntp),
        4 => Some(Source::Backend),
        _ => return Err(ProtocolError::Malformed("source")),
    })
}

/// Credential: kind (1 card, 2 keypad, 3 secure card), length, bytes.
fn put_credential(c: &Credential, out: &mut [u8]) -> usize {
    let (kind, bytes): (u8, &[u8]) = match c {
        Credential::Card { uid, len } => (1, &uid[..usize::from(*len)]),
        Credential::Keypad { code, len } => (2, &code[..usize::from(*len)]),
        Credential::SecureCard { uid, len } => (3, &uid[..usize::from(*len)]),
    };
    out[0] = kind;
    out[1] = bytes.len() as u8;
    out[2..2 + bytes.len()].copy_from_slice(bytes);
    2 + bytes.len()
}

fn get_credential(b: &[u8]) -> Result<(Credential, usize), ProtocolError> {
    if b.len() < 2 {
        return Err(ProtocolError::Truncated);
    }
    let len = usize::from(b[1]);
    if b.len() < 2 + len {
        return Err(ProtocolError::Truncated);
    }
    let bytes = &b[2..2 + len];
    let credential = match b[0] {
        1 if matches!(len, 4 | 7 | 10) => Credential::card(bytes),
        3 if matches!(len, 4 | 7 | 10) => Credential::secure_card(bytes),
        2 if (1..=MAX_USER_CODE_LEN).contains(&len) && bytes.iter().all(u8::is_ascii_digit) => {
            Credential::keypad(bytes)
        }
        _ => return Err(ProtocolError::Malformed("credential")),
    };
    Ok((credential, 2 + len))
}

impl WireEvent {
    /// Writes the event into `out`; returns its length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, ProtocolError> {
        let mut payload = [0u8; MAX_EVENT_PAYLOAD];
        let len = match &self.body {
            EventBody::Decision {
                credential,
                decision,
            } => {
                let n = put_credential(credential, &mut payload);
                payload[n] = decision.code();
                n + 1
            }
            EventBody::Notify { credential } => put_credential(credential, &mut payload),
            EventBody::Report { mv, basis } => {
                payload[..2].copy_from_slice(&mv.to_le_bytes());
                payload[2] = u8::from(*basis == Basis::Uptime);
                3
            }
            EventBody::Clock {
                valid,
                source,
                utc_us,
                error_us,
            } => {
                payload[0] = u8::from(*valid) | u8::from(utc_us.is_some()) << 1;
                payload[1] = source_code(*source);
                payload[2..10].copy_from_slice(&utc_us.unwrap_or(0).to_le_bytes());
                payload[10..18].copy_from_slice(&error_us.to_le_bytes());
                18
            }
            EventBody::RtcWrite { utc_us } => {
                payload[..8].copy_from_slice(&utc_us.to_le_bytes());
                8
            }
            EventBody::TimeRejected {
                source,
                server,
                reason,
            } => {
                payload[0] = source_code(Some(*source));
                payload[1] = *server;
                payload[2] = reason.len() as u8;
                payload[3..3 + reason.len()].copy_from_slice(reason.as_bytes());
                3 + reason.len()
            }
            EventBody::ActionsDropped { count } => {
                payload[..4].copy_from_slice(&count.to_le_bytes());
                4
            }
            EventBody::Door { open: on } | EventBody::Lockdown { on } => {
                payload[0] = u8::from(*on);
                1
            }
            EventBody::Rex => 0,
            EventBody::Alarm { kind } | EventBody::AlarmCleared { kind } => {
                payload[0] = kind.code();
                1
            }
        };
        let total = EVENT_HEAD_LEN + len;
        if out.len() < total {
            return Err(ProtocolError::BufferTooSmall);
        }
        out[..8].copy_from_slice(&self.id.to_le_bytes());
        out[8] = self.body.code();
        out[9] = u8::from(self.device_us.is_some());
        out[10..12].copy_from_slice(&(len as u16).to_le_bytes());
        out[12..20].copy_from_slice(&self.device_us.unwrap_or(0).to_le_bytes());
        out[20..total].copy_from_slice(&payload[..len]);
        Ok(total)
    }

    /// Reads one event from the front of `b`; returns it and its length.
    pub fn read(b: &[u8]) -> Result<(WireEvent, usize), ProtocolError> {
        if b.len() < EVENT_HEAD_LEN {
            return Err(ProtocolError::Truncated);
        }
        let len = usize::from(u16_at(b, 10));
        if len > MAX_EVENT_PAYLOAD {
            return Err(ProtocolError::Malformed("event_length"));
        }
        if b.len() < EVENT_HEAD_LEN + len {
            return Err(ProtocolError::Truncated);
        }
        // Ids are kept as signed 64-bit numbers on the server.
        if u64_at(b, 0) > MAX_COUNTER {
            return Err(ProtocolError::Malformed("event_id"));
        }
        let p = &b[EVENT_HEAD_LEN..EVENT_HEAD_LEN + len];
        let need = |n: usize| {
            if p.len() == n {
                Ok(())
            } else {
                Err(ProtocolError::Malformed("event_length"))
            }
        };
        let body = match b[8] {
            1 => {
                let (credential, n) = get_credential(p)?;
                need(n + 1)?;
                let decision =
                    Decision::from_code(p[n]).ok_or(ProtocolError::Malformed("decision"))?;
                EventBody::Decision {
                    credential,
                    decision,
                }
            }
            2 => {
                let (credential, n) = get_credential(p)?;
                need(n)?;
                EventBody::Notify { credential }
            }
            3 => {
                need(3)?;
                let basis = match p[2] {
                    0 => Basis::Wall,
                    1 => Basis::Uptime,
                    _ => return Err(ProtocolError::Malformed("basis")),
                };
                EventBody::Report {
                    mv: u16_at(p, 0),
                    basis,
                }
            }
            4 => {
                need(18)?;
                EventBody::Clock {
                    valid: p[0] & 1 != 0,
                    source: source_from(p[1])?,
                    utc_us: (p[0] & 2 != 0).then(|| i64_at(p, 2)),
                    error_us: u64_at(p, 10),
                }
            }
            5 => {
                need(8)?;
                EventBody::RtcWrite {
                    utc_us: i64_at(p, 0),
                }
            }
            6 => {
                if p.len() < 3 {
                    return Err(ProtocolError::Truncated);
                }
                let n = usize::from(p[2]);
                need(3 + n)?;
                let text = core::str::from_utf8(&p[3..3 + n])
                    .map_err(|_| ProtocolError::Malformed("reason"))?;
                let mut reason = heapless::String::new();
                reason
                    .push_str(text)
                    .map_err(|_| ProtocolError::Malformed("reason"))?;
                EventBody::TimeRejected {
                    source: source_from(p[0])?.ok_or(ProtocolError::Malformed("source"))?,
                    server: p[1],
                    reason,
                }
            }
            7 => {
                need(4)?;
                EventBody::ActionsDropped {
                    count: u32_at(p, 0),
                }
            }
            8 | 12 => {
                need(1)?;
                let on = match p[0] {
                    0 => false,
                    1 => true,
                    _ => return Err(ProtocolError::Malformed("state")),
                };
                if b[8] == 8 {
                    EventBody::Door { open: on }
                } else {
                    EventBody::Lockdown { on }
                }
            }
            9 => {
                need(0)?;
                EventBody::Rex
            }
            10 | 11 => {
                need(1)?;
                let kind = AlarmKind::from_code(p[0]).ok_or(ProtocolError::Malformed("alarm"))?;
                if b[8] == 10 {
                    EventBody::Alarm { kind }
                } else {
                    EventBody::AlarmCleared { kind }
                }
            }
            _ => return Err(ProtocolError::Malformed("event_kind")),
        };
        let device_us = (b[9] & 1 != 0).then(|| i64_at(b, 12));
        Ok((
            WireEvent {
                id: u64_at(b, 0),
                device_us,
                body,
            },
            EVENT_HEAD_LEN + len,
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Sync

/// What a device reports about itself in every sync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStatus {
    /// Its UTC when it sent the request, in microseconds, if its clock is valid.
    pub wall_us: Option<i64>,
    /// Microseconds since boot.
    pub uptime_us: u64,
    /// Generation of its installed allow-list (0: none).
    pub generation: u64,
    /// Its clock's source, if valid.
    pub source: Option<Source>,
    /// Its clock's error bound in microseconds.
    pub error_us: u64,
    /// Last battery reading in millivolts (0: unknown).
    pub battery_mv: u16,
    /// A list download that was interrupted: the answer may carry only the rest of it.
    pub partial_list: Option<PartialList>,
    /// The largest list, in bytes, the door can install (0: not said). The server sends no
    /// larger one, and tells the admin.
    pub list_capacity: u32,
    /// The firmware version it runs (0: it takes no update over the air).
    pub firmware_version: u32,
    /// A firmware download it holds the start of: the answer goes on from there.
    pub partial_firmware: Option<PartialFirmware>,
}

/// The part of a firmware update a door already holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartialFirmware {
    /// The update's version.
    pub version: u32,
    /// Bytes of the signed image it holds, from the start.
    pub offset: u32,
}

/// The part of a list a door already holds from an interrupted download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartialList {
    /// The list's generation.
    pub generation: u64,
    /// Bytes of it the door holds, from the start; the answer resumes here.
    pub offset: u32,
}

/// Writes a sync request into a buffer: the status, then as many events as fit.
pub struct SyncRequestWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    count: u16,
}

impl<'a> SyncRequestWriter<'a> {
    /// Starts a request with the door's next `counter` (1 ..= [`MAX_COUNTER`], above every
    /// counter it sent before).
    pub fn new(
        buf: &'a mut [u8],
        door_id: u64,
        nonce: [u8; NONCE_LEN],
        counter: u64,
        status: &DeviceStatus,
    ) -> Result<Self, ProtocolError> {
        if buf.len() < SYNC_REQUEST_FIXED + TAG_LEN {
            return Err(ProtocolError::BufferTooSmall);
        }
        if counter == 0 || counter > MAX_COUNTER {
            return Err(ProtocolError::Malformed("counter"));
        }
        Header {
            kind: Kind::SyncRequest,
            door_id,
            nonce,
        }
        .write(buf);
        buf[32..40].copy_from_slice(&counter.to_le_bytes());
        buf[40..48].copy_from_slice(&status.wall_us.unwrap_or(0).to_le_bytes());
        buf[48..56].copy_from_slice(&status.uptime_us.to_le_bytes());
        buf[56..64].copy_from_slice(&status.generation.to_le_bytes());
        buf[64] = u8::from(status.wall_us.is_some());
        buf[65] = source_code(status.source);
        buf[66..68].copy_from_slice(&status.battery_mv.to_le_bytes());
        let error = u32::try_from(status.error_us).unwrap_or(u32::MAX);
        buf[68..72].copy_from_slice(&error.to_le_bytes());
        buf[72..76].fill(0);
        buf[74] = LINK_TIME;
        let partial = status.partial_list.unwrap_or(PartialList {
            generation: 0,
            offset: 0,
        });
        buf[76..84].copy_from_slice(&partial.generation.to_le_bytes());
        buf[84..88].copy_from_slice(&partial.offset.to_le_bytes());
        buf[88..92].copy_from_slice(&status.list_capacity.to_le_bytes());
        buf[92..96].copy_from_slice(&status.firmware_version.to_le_bytes());
        let fw = status.partial_firmware.unwrap_or(PartialFirmware {
            version: 0,
            offset: 0,
        });
        buf[96..100].copy_from_slice(&fw.version.to_le_bytes());
        buf[100..104].copy_from_slice(&fw.offset.to_le_bytes());
        Ok(SyncRequestWriter {
            buf,
            len: SYNC_REQUEST_FIXED,
            count: 0,
        })
    }

    /// Adds an event; `Err(BufferTooSmall)` when it does not fit (send the rest next time).
    pub fn push(&mut self, event: &WireEvent) -> Result<(), ProtocolError> {
        if self.count == u16::MAX {
            return Err(ProtocolError::BufferTooSmall);
        }
        let room = self.buf.len() - TAG_LEN;
        let n = event.write(&mut self.buf[self.len..room])?;
        self.len += n;
        self.count += 1;
        Ok(())
    }

    /// How many events are in.
    pub fn events(&self) -> u16 {
        self.count
    }

    /// Seals the request with the device key; returns its length.
    pub fn finish(self, device_key: &[u8; 32]) -> usize {
        self.buf[72..74].copy_from_slice(&self.count.to_le_bytes());
        let key = link_key(device_key, Direction::Up);
        seal(self.buf, HEADER_LEN, self.len, &key)
    }
}

/// A sync request as the server reads it, after [`open_request`] with the door's key.
#[derive(Clone, Copy, Debug)]
pub struct SyncRequest<'a> {
    /// The header.
    pub header: Header,
    /// The door's counter: above every counter it sent before.
    pub counter: u64,
    /// The device's status.
    pub status: DeviceStatus,
    /// Number of events.
    pub event_count: u16,
    /// The door takes an answer whose times only the link key authenticates ([`LINK_TIME`]).
    pub link_time: bool,
    events: &'a [u8],
}

impl<'a> SyncRequest<'a> {
    /// Reads a sync request: its header and plaintext body, as [`open_request`] left them.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ProtocolError> {
        let header = Header::expect(bytes, Kind::SyncRequest, SYNC_REQUEST_FIXED)?;
        let valid = match bytes[64] {
            0 => false,
            1 => true,
            _ => return Err(ProtocolError::Malformed("clock_valid")),
        };
        // A generation is kept as a signed 64-bit number on the server.
        let generation = |g: u64| {
            i64::try_from(g)
                .map(|_| g)
                .map_err(|_| ProtocolError::Malformed("generation"))
        };
        let status = DeviceStatus {
            wall_us: valid.then(|| i64_at(bytes, 40)),
            uptime_us: u64_at(bytes, 48),
            generation: generation(u64_at(bytes, 56))?,
            source: source_from(bytes[65])?,
            battery_mv: u16_at(bytes, 66),
            error_us: u64::from(u32_at(bytes, 68)),
            partial_list: match (u64_at(bytes, 76), u32_at(bytes, 84)) {
                (0, 0) => None,
                (0, _) | (_, 0) => return Err(ProtocolError::Malformed("partial_list")),
                (g, offset) => Some(PartialList {
                    generation: generation(g)?,
                    offset,
                }),
            },
            list_capacity: u32_at(bytes, 88),
            firmware_version: u32_at(bytes, 92),
            partial_firmware: match (u32_at(bytes, 96), u32_at(bytes, 100)) {
                (0, 0) => None,
                (0, _) | (_, 0) => return Err(ProtocolError::Malformed("partial_firmware")),
                (version, offset) => Some(PartialFirmware { version, offset }),
            },
        };
        let request = SyncRequest {
            header,
            counter: counter_at(bytes, 32)?,
            status,
            event_count: u16_at(bytes, 72),
            // Other bits are reserved for later doors: ignored.
            link_time: bytes[74] & LINK_TIME != 0,
            events: &bytes[SYNC_REQUEST_FIXED..],
        };
        // Every event must read, and nothing may trail them.
        let mut seen = 0u16;
        let mut rest = request.events;
        while !rest.is_empty() {
            let (_, n) = WireEvent::read(rest)?;
            rest = &rest[n..];
            seen += 1;
        }
        if seen != request.event_count {
            return Err(ProtocolError::Malformed("event_count"));
        }
        Ok(request)
    }

    /// The events, in the order sent.
    pub fn events(&self) -> impl Iterator<Item = WireEvent> + 'a {
        let mut rest = self.events;
        core::iter::from_fn(move || {
            let (event, n) = WireEvent::read(rest).ok()?;
            rest = &rest[n..];
            Some(event)
        })
    }
}

/// What the server answers to a sync.
#[derive(Clone, Copy, Debug)]
pub struct SyncAnswer<'a> {
    /// The door.
    pub door_id: u64,
    /// The request's nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Server UTC (µs) when the request arrived.
    pub receive_us: i64,
    /// Server UTC (µs) when the answer leaves.
    pub transmit_us: i64,
    /// How many of the request's events are stored (all of them, or none).
    pub acked: u16,
    /// Seconds until the next sync.
    pub sync_interval_s: u32,
    /// The door's current list generation.
    pub generation: u64,
    /// The list, when the device's generation is older; it follows the fixed part from
    /// `list_offset` on.
    pub list: Option<&'a [u8]>,
    /// Where the bytes that follow start in the list (0 unless the door holds its start from
    /// an interrupted download).
    pub list_offset: u32,
    /// The site's NTP servers, separated by spaces (as [`crate::config::parse_ntp_servers`]
    /// reads them; at most [`NTP_FIELD_LEN`] bytes), or `""`: the door keeps its own.
    pub ntp_servers: &'a str,
    /// A piece of a firmware update for the door, following the list.
    pub firmware: Option<FirmwareOffer<'a>>,
    /// The site's latest lockdown order, signed by the site ([`crate::lockdown`]), if it ever
    /// gave one.
    pub lockdown: Option<&'a [u8; ORDER_LEN]>,
    /// The door's contact and held-open time, as the site sets them (`None`: the door keeps
    /// its own).
    pub position: Option<DoorPosition>,
    /// Leave the times unsigned: the request said the door takes times the link key alone
    /// authenticates ([`SyncRequest::link_time`]).
    pub link_time: bool,
}

/// A door's position settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DoorPosition {
    /// A door-position contact is fitted.
    pub contact: bool,
    /// Seconds the door may stay open after an authorised opening.
    pub held_open_s: u16,
}

/// A piece of a signed firmware image a sync answer carries.
#[derive(Clone, Copy, Debug)]
pub struct FirmwareOffer<'a> {
    /// The whole signed image (`chronolock firmware sign`).
    pub image: &'a [u8],
    /// Where the piece starts.
    pub offset: u32,
    /// Its length (at most [`FIRMWARE_CHUNK_MAX`]).
    pub len: u32,
}

impl FirmwareOffer<'_> {
    /// The signed image's version (its header's bytes 8..12).
    pub fn version(&self) -> u32 {
        self.image.get(8..12).map_or(0, |b| u32_at(b, 0))
    }

    /// The piece's bytes.
    pub fn piece(&self) -> &[u8] {
        let from = (self.offset as usize).min(self.image.len());
        let to = from.saturating_add(self.len as usize).min(self.image.len());
        &self.image[from..to]
    }
}

/// What the site key signs in a sync answer: context, door, nonce, receive and transmit time.
fn time_signed(door_id: u64, nonce: &[u8; NONCE_LEN], t2: i64, t3: i64) -> [u8; 58] {
    let mut m = [0u8; 58];
    m[..18].copy_from_slice(TIME_CONTEXT);
    m[18..26].copy_from_slice(&door_id.to_le_bytes());
    m[26..42].copy_from_slice(nonce);
    m[42..50].copy_from_slice(&t2.to_le_bytes());
    m[50..58].copy_from_slice(&t3.to_le_bytes());
    m
}

impl SyncAnswer<'_> {
    /// The fixed part of the answer, sealed with the device key. Send it followed by the list,
    /// if any.
    ///
    /// The times are authenticated by the seal: only this server and this door hold the
    /// server → device key, and the seal covers the door id and the request's nonce, so a
    /// replayed or forged answer fails. Unless [`SyncAnswer::link_time`] is set they are also
    /// signed with the site key (64 bytes, the answer's most expensive part to make), which
    /// doors that do not ask for link-only times verify.
    pub fn write(&self, site: &SigningKey, device_key: &[u8; 32]) -> [u8; SYNC_RESPONSE_LEN] {
        let mut out = [0u8; SYNC_RESPONSE_LEN];
        Header {
            kind: Kind::SyncResponse,
            door_id: self.door_id,
            nonce: self.nonce,
        }
        .write(&mut out);
        out[32..40].copy_from_slice(&self.receive_us.to_le_bytes());
        out[40..48].copy_from_slice(&self.transmit_us.to_le_bytes());
        if self.link_time {
            out[114] = LINK_TIME;
        } else {
            let signature = site.sign(&time_signed(
                self.door_id,
                &self.nonce,
                self.receive_us,
                self.transmit_us,
            ));
            out[48..112].copy_from_slice(&signature.to_bytes());
        }
        out[112..114].copy_from_slice(&self.acked.to_le_bytes());
        out[116..120].copy_from_slice(&self.sync_interval_s.to_le_bytes());
        out[120..128].copy_from_slice(&self.generation.to_le_bytes());
        if let Some(list) = self.list {
            out[128..132].copy_from_slice(&(list.len() as u32).to_le_bytes());
            out[132..164].copy_from_slice(&Sha256::digest(list));
            out[164..168].copy_from_slice(&self.list_offset.to_le_bytes());
        }
        let ntp = self.ntp_servers.as_bytes();
        let n = ntp.len().min(NTP_FIELD_LEN);
        out[168..168 + n].copy_from_slice(&ntp[..n]);
        if let Some(fw) = &self.firmware {
            let at = 168 + NTP_FIELD_LEN;
            out[at..at + 4].copy_from_slice(&fw.version().to_le_bytes());
            out[at + 4..at + 8].copy_from_slice(&(fw.image.len() as u32).to_le_bytes());
            out[at + 8..at + 12].copy_from_slice(&fw.offset.to_le_bytes());
            out[at + 12..at + 16].copy_from_slice(&(fw.piece().len() as u32).to_le_bytes());
            out[at + 16..at + 48].copy_from_slice(&Sha256::digest(fw.image));
        }
        let at = 168 + NTP_FIELD_LEN + FIRMWARE_FIELD_LEN;
        if let Some(order) = self.lockdown {
            out[at..at + ORDER_LEN].copy_from_slice(order);
        }
        if let Some(p) = self.position {
            let at = at + ORDER_LEN;
            out[at..at + 2].copy_from_slice(&p.held_open_s.to_le_bytes());
            out[at + 2] = 1 | u8::from(p.contact) << 1;
        }
        let key = link_key(device_key, Direction::Down);
        seal(&mut out, HEADER_LEN, SYNC_RESPONSE_LEN - TAG_LEN, &key);
        out
    }
}

/// A sync answer as the device reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncResponse {
    /// The server's times, authenticated and bound to the nonce: give them to
    /// [`crate::Controller::handle_backend_time`].
    pub time: BackendTime,
    /// How many events the server stored (drop that many from the front of the queue).
    pub acked: u16,
    /// Seconds until the next sync.
    pub sync_interval_s: u32,
    /// The door's current list generation.
    pub generation: u64,
    /// Length of the list that follows (0: none).
    pub list_len: u32,
    /// Its SHA-256.
    pub list_digest: [u8; 32],
    /// Where the bytes that follow start in the list (0: the whole list follows).
    pub list_offset: u32,
    /// The site's NTP servers as sent (checked): see [`SyncResponse::ntp_servers`].
    ntp: [u8; NTP_FIELD_LEN],
    /// A firmware update's version (0: none offered).
    pub firmware_version: u32,
    /// Its signed image's length.
    pub firmware_len: u32,
    /// Where the piece that follows the list starts in it.
    pub firmware_offset: u32,
    /// The piece's length.
    pub firmware_piece: u32,
    /// SHA-256 of the whole signed image.
    pub firmware_digest: [u8; 32],
    /// The site's latest lockdown order, unchecked: the controller checks its signature
    /// ([`crate::Controller::handle_lockdown_order`]).
    pub lockdown: Option<[u8; ORDER_LEN]>,
    /// The door's position settings, if the site sets them.
    pub position: Option<DoorPosition>,
}

impl SyncResponse {
    /// The NTP servers the site names for its doors, if it names any.
    pub fn ntp_servers(
        &self,
    ) -> Option<heapless::Vec<crate::config::HostName, { crate::config::MAX_NTP_SERVERS }>> {
        let end = self
            .ntp
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(NTP_FIELD_LEN);
        let text = core::str::from_utf8(&self.ntp[..end]).ok()?;
        crate::config::parse_ntp_servers(text).ok()
    }

    /// Checks and decrypts (in place) the fixed part of an answer, exactly
    /// [`SYNC_RESPONSE_LEN`] bytes: the AEAD under the device key (which covers the times, door
    /// and nonce) and, unless the answer says its times are link-only ([`LINK_TIME`]), the
    /// site's signature over them. The list that follows is decrypted with a [`ListStream`].
    pub fn parse(
        fixed: &mut [u8],
        device_key: &[u8; 32],
        site_key: &VerifyingKey,
        door_id: u64,
        nonce: &[u8; NONCE_LEN],
    ) -> Result<SyncResponse, ProtocolError> {
        let header = Header::expect(fixed, Kind::SyncResponse, SYNC_RESPONSE_LEN)?;
        if fixed.len() != SYNC_RESPONSE_LEN {
            return Err(ProtocolError::Malformed("length"));
        }
        if header.door_id != door_id || header.nonce != *nonce {
            return Err(ProtocolError::Mismatch);
        }
        open(fixed, HEADER_LEN, &link_key(device_key, Direction::Down))?;
        let fixed = &*fixed;
        let t2 = i64_at(fixed, 32);
        let t3 = i64_at(fixed, 40);
        let time_flags = fixed[114];
        if time_flags & !LINK_TIME != 0 || fixed[115] != 0 {
            return Err(ProtocolError::Malformed("time_flags"));
        }
        if time_flags & LINK_TIME == 0 {
            let mut sig = [0u8; 64];
            sig.copy_from_slice(&fixed[48..112]);
            site_key
                .verify(
                    &time_signed(door_id, nonce, t2, t3),
                    &Signature::from_bytes(&sig),
                )
                .map_err(|_| ProtocolError::BadSignature)?;
        }
        if t3 < t2 {
            return Err(ProtocolError::Malformed("transmit_time"));
        }
        let mut list_digest = [0u8; 32];
        list_digest.copy_from_slice(&fixed[132..164]);
        let list_len = u32_at(fixed, 128);
        let list_offset = u32_at(fixed, 164);
        if list_offset != 0 && list_offset >= list_len {
            return Err(ProtocolError::Malformed("list_offset"));
        }
        let mut ntp = [0u8; NTP_FIELD_LEN];
        ntp.copy_from_slice(&fixed[168..168 + NTP_FIELD_LEN]);
        let end = ntp.iter().position(|&b| b == 0).unwrap_or(NTP_FIELD_LEN);
        let named = core::str::from_utf8(&ntp[..end])
            .ok()
            .map(crate::config::parse_ntp_servers);
        // Zeros after the names, and names that read; or nothing at all.
        if ntp[end..].iter().any(|&b| b != 0) || (end > 0 && !matches!(named, Some(Ok(_)))) {
            return Err(ProtocolError::Malformed("ntp_servers"));
        }
        let at = 168 + NTP_FIELD_LEN;
        let (fw_version, fw_len, fw_offset, fw_piece) = (
            u32_at(fixed, at),
            u32_at(fixed, at + 4),
            u32_at(fixed, at + 8),
            u32_at(fixed, at + 12),
        );
        let mut firmware_digest = [0u8; 32];
        firmware_digest.copy_from_slice(&fixed[at + 16..at + 48]);
        let offered = fw_version != 0 && fw_len != 0;
        let fits = u64::from(fw_offset) + u64::from(fw_piece) <= u64::from(fw_len)
            && fw_piece <= FIRMWARE_CHUNK_MAX;
        if (offered && !fits) || (!offered && (fw_version | fw_len | fw_offset | fw_piece) != 0) {
            return Err(ProtocolError::Malformed("firmware"));
        }
        let at = 168 + NTP_FIELD_LEN + FIRMWARE_FIELD_LEN;
        let mut order = [0u8; ORDER_LEN];
        order.copy_from_slice(&fixed[at..at + ORDER_LEN]);
        let lockdown = order.iter().any(|&b| b != 0).then_some(order);
        let at = at + ORDER_LEN;
        let flags = fixed[at + 2];
        if flags & !3 != 0 || fixed[at + 3] != 0 || (flags == 0 && u16_at(fixed, at) != 0) {
            return Err(ProtocolError::Malformed("door_position"));
        }
        let position = (flags & 1 != 0).then(|| DoorPosition {
            contact: flags & 2 != 0,
            held_open_s: u16_at(fixed, at),
        });
        Ok(SyncResponse {
            lockdown,
            position,
            time: BackendTime {
                nonce: *nonce,
                receive: UnixTime::from_micros(t2),
                transmit: UnixTime::from_micros(t3),
            },
            acked: u16_at(fixed, 112),
            sync_interval_s: u32_at(fixed, 116),
            generation: u64_at(fixed, 120),
            list_len,
            list_digest,
            list_offset,
            ntp,
            firmware_version: fw_version,
            firmware_len: fw_len,
            firmware_offset: fw_offset,
            firmware_piece: fw_piece,
            firmware_digest,
        })
    }

    /// Whether `list` is the one this answer announced.
    pub fn list_matches(&self, list: &[u8]) -> bool {
        self.list_len as usize == list.len() && Sha256::digest(list)[..] == self.list_digest
    }
}

// ---------------------------------------------------------------------------------------------
// CONDITIONAL check

/// Writes a check request for a CONDITIONAL credential with the door's next `counter`.
pub fn check_request(
    door_id: u64,
    nonce: [u8; NONCE_LEN],
    counter: u64,
    wall_us: Option<i64>,
    credential: &Credential,
    device_key: &[u8; 32],
) -> [u8; CHECK_REQUEST_LEN] {
    let mut out = [0u8; CHECK_REQUEST_LEN];
    Header {
        kind: Kind::CheckRequest,
        door_id,
        nonce,
    }
    .write(&mut out);
    out[32..40].copy_from_slice(&counter.to_le_bytes());
    out[40..48].copy_from_slice(&wall_us.unwrap_or(0).to_le_bytes());
    put_credential(credential, &mut out[48..]);
    let key = link_key(device_key, Direction::Up);
    seal(&mut out, HEADER_LEN, CHECK_REQUEST_LEN - TAG_LEN, &key);
    out
}

/// A check request as the server reads it, after [`open_request`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckRequest {
    /// The header.
    pub header: Header,
    /// The door's counter: above every counter it sent before.
    pub counter: u64,
    /// Who is at the door.
    pub credential: Credential,
}

impl CheckRequest {
    /// Reads a check request: its header and plaintext body, as [`open_request`] left them.
    pub fn parse(bytes: &[u8]) -> Result<CheckRequest, ProtocolError> {
        let plain = CHECK_REQUEST_LEN - TAG_LEN;
        let header = Header::expect(bytes, Kind::CheckRequest, plain)?;
        if bytes.len() != plain {
            return Err(ProtocolError::Malformed("length"));
        }
        let (credential, _) = get_credential(&bytes[48..48 + 2 + MAX_UID_LEN])?;
        Ok(CheckRequest {
            header,
            counter: counter_at(bytes, 32)?,
            credential,
        })
    }

    /// The server's answer.
    pub fn answer(&self, granted: bool, device_key: &[u8; 32]) -> [u8; CHECK_RESPONSE_LEN] {
        let mut out = [0u8; CHECK_RESPONSE_LEN];
        Header {
            kind: Kind::CheckResponse,
            door_id: self.header.door_id,
            nonce: self.header.nonce,
        }
        .write(&mut out);
        out[32] = u8::from(granted);
        let key = link_key(device_key, Direction::Down);
        seal(&mut out, HEADER_LEN, CHECK_RESPONSE_LEN - TAG_LEN, &key);
        out
    }
}

/// Reads the server's answer to a check request: granted or not.
pub fn check_response(
    bytes: &[u8],
    device_key: &[u8; 32],
    door_id: u64,
    nonce: &[u8; NONCE_LEN],
) -> Result<bool, ProtocolError> {
    let header = Header::expect(bytes, Kind::CheckResponse, CHECK_RESPONSE_LEN)?;
    if bytes.len() != CHECK_RESPONSE_LEN {
        return Err(ProtocolError::Malformed("length"));
    }
    if header.door_id != door_id || header.nonce != *nonce {
        return Err(ProtocolError::Mismatch);
    }
    let mut fixed = [0u8; CHECK_RESPONSE_LEN];
    fixed.copy_from_slice(bytes);
    open(
        &mut fixed,
        HEADER_LEN,
        &link_key(device_key, Direction::Down),
    )?;
    match fixed[32] {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(ProtocolError::Malformed("granted")),
    }
}

// ---------------------------------------------------------------------------------------------
// Watch (push)

/// Writes a watch request: the door's list generation and lockdown sequence. The server holds
/// it until something for the door is newer than these (a list, a lockdown order) or its wait
/// ends, and answers whether the door should sync now. It carries no counter: it changes
/// nothing on the server, and its answer, bound to its nonce, says nothing but "sync now".
pub fn watch_request(
    door_id: u64,
    nonce: [u8; NONCE_LEN],
    generation: u64,
    lockdown_seq: u64,
    device_key: &[u8; 32],
) -> [u8; WATCH_REQUEST_LEN] {
    let mut out = [0u8; WATCH_REQUEST_LEN];
    Header {
        kind: Kind::WatchRequest,
        door_id,
        nonce,
    }
    .write(&mut out);
    out[32..40].copy_from_slice(&generation.to_le_bytes());
    out[40..48].copy_from_slice(&lockdown_seq.to_le_bytes());
    let key = link_key(device_key, Direction::Up);
    seal(&mut out, HEADER_LEN, WATCH_REQUEST_LEN - TAG_LEN, &key);
    out
}

/// A watch request as the server reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchRequest {
    /// The header.
    pub header: Header,
    /// The door's installed list generation.
    pub generation: u64,
    /// The sequence of the lockdown order it holds (0: none).
    pub lockdown_seq: u64,
}

impl WatchRequest {
    /// Reads a watch request: its header and plaintext body, as [`open_request`] left them.
    pub fn parse(bytes: &[u8]) -> Result<WatchRequest, ProtocolError> {
        let plain = WATCH_REQUEST_LEN - TAG_LEN;
        let header = Header::expect(bytes, Kind::WatchRequest, plain)?;
        if bytes.len() != plain {
            return Err(ProtocolError::Malformed("length"));
        }
        Ok(WatchRequest {
            header,
            generation: u64_at(bytes, 32),
            lockdown_seq: u64_at(bytes, 40),
        })
    }

    /// The server's answer: `changed` when the door should sync now.
    pub fn answer(&self, changed: bool, device_key: &[u8; 32]) -> [u8; WATCH_RESPONSE_LEN] {
        let mut out = [0u8; WATCH_RESPONSE_LEN];
        Header {
            kind: Kind::WatchResponse,
            door_id: self.header.door_id,
            nonce: self.header.nonce,
        }
        .write(&mut out);
        out[32] = u8::from(changed);
        let key = link_key(device_key, Direction::Down);
        seal(&mut out, HEADER_LEN, WATCH_RESPONSE_LEN - TAG_LEN, &key);
        out
    }
}

/// Reads the server's answer to a watch request: whether to sync now.
pub fn watch_response(
    bytes: &[u8],
    device_key: &[u8; 32],
    door_id: u64,
    nonce: &[u8; NONCE_LEN],
) -> Result<bool, ProtocolError> {
    let header = Header::expect(bytes, Kind::WatchResponse, WATCH_RESPONSE_LEN)?;
    if bytes.len() != WATCH_RESPONSE_LEN {
        return Err(ProtocolError::Malformed("length"));
    }
    if header.door_id != door_id || header.nonce != *nonce {
        return Err(ProtocolError::Mismatch);
    }
    let mut fixed = [0u8; WATCH_RESPONSE_LEN];
    fixed.copy_from_slice(bytes);
    open(
        &mut fixed,
        HEADER_LEN,
        &link_key(device_key, Direction::Down),
    )?;
    if fixed[33..40].iter().any(|&b| b != 0) {
        return Err(ProtocolError::Malformed("changed"));
    }
    match fixed[32] {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(ProtocolError::Malformed("changed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODE: &str = "ABCD-EFGH-JKMN";

    fn site() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    fn enrolled() -> (Enrolled, [u8; 32]) {
        let device = Enrolment::new([1; 32], [2; 16], "abcd efgh jkmn");
        let request = device.request();
        let parsed = EnrolRequest::parse(&request).unwrap();
        let public = parsed.open(&pairing_code_hash(CODE)).unwrap();
        let (answer, server_key) = parsed
            .answer(
                public,
                [3; 32],
                &pairing_code_hash(CODE),
                42,
                site().verifying_key().as_bytes(),
                300,
            )
            .unwrap();
        (device.finish(&answer).unwrap(), server_key)
    }

    #[test]
    fn enrolment_gives_both_ends_the_same_key() {
        let (enrolled, server_key) = enrolled();
        assert_eq!(enrolled.device_key, server_key);
        assert_eq!(enrolled.door_id, 42);
        assert_eq!(enrolled.site_key, *site().verifying_key().as_bytes());
        assert_eq!(enrolled.sync_interval_s, 300);
    }

    #[test]
    fn enrolment_needs_the_code_and_a_genuine_answer() {
        let device = Enrolment::new([1; 32], [2; 16], CODE);
        let request = device.request();
        let parsed = EnrolRequest::parse(&request).unwrap();
        assert_eq!(parsed.open(&pairing_code_hash("ABCD-EFGH-JKMP")), None);
        // The device's public key does not travel in clear.
        let public = parsed.open(&pairing_code_hash(CODE)).unwrap();
        assert!(!request.windows(8).any(|w| w == &public[..8]));
        // A server that does not know the code cannot answer in a way the device accepts.
        let (answer, _) = parsed
            .answer(
                public,
                [3; 32],
                &pairing_code_hash("WRONG"),
                42,
                &[9; 32],
                300,
            )
            .unwrap();
        assert_eq!(device.finish(&answer), Err(ProtocolError::BadMac));
        let mut other = Enrolment::new([1; 32], [5; 16], CODE).request();
        other[40] ^= 1;
        assert!(EnrolRequest::parse(&other)
            .unwrap()
            .open(&pairing_code_hash(CODE))
            .is_none());
    }

    fn events() -> [WireEvent; 4] {
        let mut reason = heapless::String::new();
        reason.push_str("kiss_of_death").unwrap();
        [
            WireEvent {
                id: 1,
                device_us: Some(1_800_000_000_000_000),
                body: EventBody::Decision {
                    credential: Credential::card(&[4, 0xA1, 0xB2, 0xC3]),
                    decision: Decision::DeniedTimeRestriction,
                },
            },
            WireEvent {
                id: 2,
                device_us: None,
                body: EventBody::Report {
                    mv: 3700,
                    basis: Basis::Uptime,
                },
            },
            WireEvent {
                id: 3,
                device_us: Some(5),
                body: EventBody::Clock {
                    valid: true,
                    source: Some(Source::Ntp),
                    utc_us: Some(1_800_000_000_000_000),
                    error_us: 20_000,
                },
            },
            WireEvent {
                id: 4,
                device_us: Some(6),
                body: EventBody::TimeRejected {
                    source: Source::Ntp,
                    server: 1,
                    reason,
                },
            },
        ]
    }

    #[test]
    fn sync_request_round_trips_and_is_authenticated() {
        let key = [9u8; 32];
        let status = DeviceStatus {
            wall_us: Some(1_800_000_000_000_000),
            uptime_us: 77,
            generation: 5,
            source: Some(Source::Backend),
            error_us: 1234,
            battery_mv: 3650,
            partial_list: Some(PartialList {
                generation: 6,
                offset: 4096,
            }),
            list_capacity: 258_048,
            firmware_version: 0x01_02_03,
            partial_firmware: Some(PartialFirmware {
                version: 0x01_03_00,
                offset: 65_536,
            }),
        };
        let mut buf = [0u8; 512];
        let mut w = SyncRequestWriter::new(&mut buf, 42, [4; 16], 77, &status).unwrap();
        for e in &events() {
            w.push(e).unwrap();
        }
        let n = w.finish(&key);
        let sealed = buf;
        // The card UID does not travel in clear.
        assert!(!sealed[..n].windows(4).any(|w| w == [4, 0xA1, 0xB2, 0xC3]));
        let plain = open_request(&mut buf[..n], &key).unwrap();
        let r = SyncRequest::parse(&buf[..plain]).unwrap();
        assert_eq!((r.header.door_id, r.counter), (42, 77));
        assert_eq!(r.status, status);
        assert_eq!(r.events().collect::<heapless::Vec<_, 8>>(), events());
        // Any flipped bit (header included) fails authentication; so does a cut-off request.
        for i in 0..n {
            let mut t = sealed;
            t[i] ^= 0x10;
            assert_eq!(open_request(&mut t[..n], &key), Err(ProtocolError::BadMac));
        }
        let mut t = sealed;
        assert_eq!(
            open_request(&mut t[..n - 1], &key),
            Err(ProtocolError::BadMac)
        );
        let mut t = sealed;
        assert_eq!(
            open_request(&mut t[..n], &[8; 32]),
            Err(ProtocolError::BadMac)
        );
        // Counters start at 1 and stay within what the server keeps.
        let status = DeviceStatus::default();
        for bad in [0, MAX_COUNTER + 1] {
            assert!(SyncRequestWriter::new(&mut buf, 42, [4; 16], bad, &status).is_err());
        }
    }

    #[test]
    fn full_request_buffer_keeps_events_for_next_time() {
        let mut buf = [0u8; SYNC_REQUEST_FIXED + TAG_LEN + 40];
        let status = DeviceStatus::default();
        let mut w = SyncRequestWriter::new(&mut buf, 1, [0; 16], 1, &status).unwrap();
        let [a, b, ..] = events();
        w.push(&a).unwrap();
        assert_eq!(w.push(&b), Err(ProtocolError::BufferTooSmall));
        assert_eq!(w.events(), 1);
    }

    #[test]
    fn door_events_round_trip_and_bad_states_are_refused() {
        let bodies = [
            EventBody::Door { open: true },
            EventBody::Door { open: false },
            EventBody::Rex,
            EventBody::Alarm {
                kind: AlarmKind::DoorForced,
            },
            EventBody::AlarmCleared {
                kind: AlarmKind::DoorHeldOpen,
            },
            EventBody::Lockdown { on: true },
        ];
        for (i, body) in bodies.into_iter().enumerate() {
            let event = WireEvent {
                id: i as u64 + 1,
                device_us: Some(7),
                body,
            };
            let mut buf = [0u8; 64];
            let n = event.write(&mut buf).unwrap();
            assert_eq!(WireEvent::read(&buf[..n]).unwrap(), (event.clone(), n));
            assert!(EventBody::KINDS.contains(&event.body.kind_name()));
            assert_eq!(
                EventBody::KINDS[usize::from(event.body.code()) - 1],
                event.body.kind_name()
            );
            if n > EVENT_HEAD_LEN {
                buf[EVENT_HEAD_LEN] = 9;
                assert!(matches!(
                    WireEvent::read(&buf[..n]),
                    Err(ProtocolError::Malformed(_))
                ));
            }
        }
    }

    #[test]
    fn watch_answers_are_bound_to_the_door_and_nonce() {
        let key = [9u8; 32];
        let mut request = watch_request(42, [4; 16], 6, 3, &key);
        let n = open_request(&mut request, &key).unwrap();
        let parsed = WatchRequest::parse(&request[..n]).unwrap();
        assert_eq!((parsed.generation, parsed.lockdown_seq), (6, 3));
        let answer = parsed.answer(true, &key);
        assert_eq!(watch_response(&answer, &key, 42, &[4; 16]), Ok(true));
        let quiet = parsed.answer(false, &key);
        assert_eq!(watch_response(&quiet, &key, 42, &[4; 16]), Ok(false));
        assert_eq!(
            watch_response(&answer, &key, 42, &[5; 16]),
            Err(ProtocolError::Mismatch)
        );
        assert_eq!(
            watch_response(&answer, &[1; 32], 42, &[4; 16]),
            Err(ProtocolError::BadMac)
        );
        let mut forged = watch_request(42, [4; 16], 6, 3, &[1; 32]);
        assert_eq!(open_request(&mut forged, &key), Err(ProtocolError::BadMac));
    }

    #[test]
    fn sync_answer_carries_signed_time_bound_to_the_nonce() {
        let key = [9u8; 32];
        let list = [0xAAu8; 100];
        let mut image = [0x55u8; 5_000];
        image[8..12].copy_from_slice(&0x01_03_00u32.to_le_bytes());
        let order = crate::lockdown::LockdownOrder {
            seq: 2,
            on: true,
            issued_unix: 1_800_000_000,
        }
        .sign(&site());
        let answer = SyncAnswer {
            door_id: 42,
            nonce: [4; 16],
            receive_us: 1_800_000_000_000_000,
            transmit_us: 1_800_000_000_000_150,
            acked: 3,
            sync_interval_s: 300,
            generation: 6,
            list: Some(&list),
            list_offset: 40,
            ntp_servers: "ntp.example.org 10.0.0.5:123",
            firmware: Some(FirmwareOffer {
                image: &image,
                offset: 128,
                len: 1_000,
            }),
            lockdown: Some(&order),
            position: Some(DoorPosition {
                contact: true,
                held_open_s: 45,
            }),
            link_time: false,
        }
        .write(&site(), &key);
        let vk = site().verifying_key();
        let r = SyncResponse::parse(&mut answer.clone(), &key, &vk, 42, &[4; 16]).unwrap();
        let servers = r.ntp_servers().unwrap();
        assert_eq!(servers[0].as_str(), "ntp.example.org");
        assert_eq!(servers[1].as_str(), "10.0.0.5:123");
        assert_eq!(r.time.receive.as_micros(), 1_800_000_000_000_000);
        assert_eq!(r.time.transmit.as_micros(), 1_800_000_000_000_150);
        assert_eq!((r.acked, r.generation, r.list_len), (3, 6, 100));
        assert_eq!(r.list_offset, 40);
        assert_eq!(
            (
                r.firmware_version,
                r.firmware_len,
                r.firmware_offset,
                r.firmware_piece
            ),
            (0x01_03_00, 5_000, 128, 1_000)
        );
        assert_eq!(r.firmware_digest[..], Sha256::digest(image)[..]);
        assert_eq!(r.lockdown, Some(order));
        assert_eq!(
            r.position,
            Some(DoorPosition {
                contact: true,
                held_open_s: 45
            })
        );
        assert!(r.list_matches(&list));
        assert!(!r.list_matches(&list[1..]));
        assert_eq!(
            SyncResponse::parse(&mut answer.clone(), &key, &vk, 42, &[5; 16]),
            Err(ProtocolError::Mismatch)
        );
        assert_eq!(
            SyncResponse::parse(&mut answer.clone(), &key, &vk, 43, &[4; 16]),
            Err(ProtocolError::Mismatch)
        );
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert_eq!(
            SyncResponse::parse(&mut answer.clone(), &key, &other, 42, &[4; 16]),
            Err(ProtocolError::BadSignature)
        );
        assert_eq!(
            SyncResponse::parse(&mut answer.clone(), &[1; 32], &vk, 42, &[4; 16]),
            Err(ProtocolError::BadMac)
        );
    }

    #[test]
    fn link_only_time_needs_no_signature_but_stays_bound_to_door_and_nonce() {
        let key = [9u8; 32];
        let mut buf = [0u8; 200];
        let status = DeviceStatus {
            wall_us: None,
            uptime_us: 1,
            generation: 0,
            source: None,
            battery_mv: 0,
            error_us: 0,
            partial_list: None,
            list_capacity: 0,
            firmware_version: 0,
            partial_firmware: None,
        };
        let n = SyncRequestWriter::new(&mut buf, 42, [4; 16], 1, &status)
            .unwrap()
            .finish(&key);
        let n = open_request(&mut buf[..n], &key).unwrap();
        assert!(SyncRequest::parse(&buf[..n]).unwrap().link_time);
        let plain = SyncAnswer {
            door_id: 42,
            nonce: [4; 16],
            receive_us: 1_800_000_000_000_000,
            transmit_us: 1_800_000_000_000_150,
            acked: 0,
            sync_interval_s: 300,
            generation: 6,
            list: None,
            list_offset: 0,
            ntp_servers: "",
            firmware: None,
            lockdown: None,
            position: None,
            link_time: true,
        };
        let answer = plain.write(&site(), &key);
        // No site key is needed to read it: any will do.
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        let r = SyncResponse::parse(&mut answer.clone(), &key, &other, 42, &[4; 16]).unwrap();
        assert_eq!(r.time.transmit.as_micros(), 1_800_000_000_000_150);
        assert_eq!(
            SyncResponse::parse(&mut answer.clone(), &key, &other, 42, &[5; 16]),
            Err(ProtocolError::Mismatch)
        );
        assert_eq!(
            SyncResponse::parse(&mut answer.clone(), &[1; 32], &other, 42, &[4; 16]),
            Err(ProtocolError::BadMac)
        );
        // The flag is under the seal: turning it on in a signed answer breaks the tag.
        let mut signed = SyncAnswer {
            link_time: false,
            ..plain
        }
        .write(&site(), &key);
        signed[114] ^= LINK_TIME;
        assert_eq!(
            SyncResponse::parse(&mut signed, &key, &other, 42, &[4; 16]),
            Err(ProtocolError::BadMac)
        );
    }

    #[test]
    fn a_site_that_names_no_ntp_servers_leaves_the_doors_own() {
        let key = [9u8; 32];
        let answer = |ntp_servers| {
            SyncAnswer {
                door_id: 42,
                nonce: [4; 16],
                receive_us: 1_800_000_000_000_000,
                transmit_us: 1_800_000_000_000_150,
                acked: 0,
                sync_interval_s: 300,
                generation: 6,
                list: None,
                list_offset: 0,
                ntp_servers,
                firmware: None,
                lockdown: None,
                position: None,
                link_time: false,
            }
            .write(&site(), &key)
        };
        let vk = site().verifying_key();
        let mut none = answer("");
        let r = SyncResponse::parse(&mut none, &key, &vk, 42, &[4; 16]).unwrap();
        assert_eq!(r.ntp_servers(), None);
        assert_eq!((r.lockdown, r.position), (None, None));
        // A server that names something no host is called is not listened to.
        let mut bad = answer("ntp/evil");
        assert_eq!(
            SyncResponse::parse(&mut bad, &key, &vk, 42, &[4; 16]),
            Err(ProtocolError::Malformed("ntp_servers"))
        );
    }

    #[test]
    fn the_list_travels_encrypted_and_decrypts_from_any_offset() {
        let key = [9u8; 32];
        let list: [u8; 300] = core::array::from_fn(|i| i as u8);
        let mut sent = list;
        ListStream::new(&key, &[4; 16], 0).apply(&mut sent);
        assert_ne!(sent[..16], list[..16]);
        // Resumed at 100 (the server sends the rest, the device decrypts it from there).
        let mut rest = list;
        ListStream::new(&key, &[4; 16], 100).apply(&mut rest[100..]);
        assert_eq!(rest[100..], sent[100..]);
        let mut back = sent;
        let mut stream = ListStream::new(&key, &[4; 16], 0);
        for chunk in back.chunks_mut(7) {
            stream.apply(chunk);
        }
        assert_eq!(back, list);
        // Another exchange (nonce) has another keystream.
        let mut other = list;
        ListStream::new(&key, &[5; 16], 0).apply(&mut other);
        assert_ne!(other, sent);
    }

    #[test]
    fn check_round_trips() {
        let key = [9u8; 32];
        let credential = Credential::keypad(b"1234");
        let mut request = check_request(42, [6; 16], 9, None, &credential, &key);
        assert!(!request.windows(4).any(|w| w == b"1234"));
        let n = open_request(&mut request, &key).unwrap();
        let parsed = CheckRequest::parse(&request[..n]).unwrap();
        assert_eq!((parsed.credential, parsed.counter), (credential, 9));
        let answer = parsed.answer(true, &key);
        assert_eq!(check_response(&answer, &key, 42, &[6; 16]), Ok(true));
        assert_eq!(
            check_response(&answer, &key, 42, &[7; 16]),
            Err(ProtocolError::Mismatch)
        );
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert_eq!(Header::read(b"HTTP/1.1"), Err(ProtocolError::NotProtocol));
        assert_eq!(Header::read(b"CLDP"), Err(ProtocolError::Truncated));
        let mut m = Enrolment::new([1; 32], [2; 16], CODE).request();
        m[4] = 1;
        assert_eq!(Header::read(&m), Err(ProtocolError::UnsupportedVersion(1)));
        m[4] = VERSION;
        m[5] = 0x55;
        assert_eq!(Header::read(&m), Err(ProtocolError::UnexpectedKind(0x55)));
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = Header::read(&bytes);
            let _ = SyncRequest::parse(&bytes).map(|r| r.events().count());
            let _ = CheckRequest::parse(&bytes);
            let _ = EnrolRequest::parse(&bytes);
            let _ = WireEvent::read(&bytes);
            let _ = check_response(&bytes, &[0; 32], 0, &[0; 16]);
            let _ = open_request(&mut bytes.clone(), &[0; 32]);
            let _ = SyncResponse::parse(&mut bytes.clone(), &[0; 32], &site().verifying_key(), 0, &[0; 16]);
        }

        #[test]
        fn mutated_requests_never_panic(i in 0usize..200, x in 1u8..=255) {
            let mut buf = [0u8; 512];
            let status = DeviceStatus::default();
            let mut w = SyncRequestWriter::new(&mut buf, 1, [0; 16], 1, &status).unwrap();
            for e in &events() { w.push(e).unwrap(); }
            let n = w.finish(&[0; 32]);
            // The plaintext as the server reads it after opening, mutated.
            let plain = open_request(&mut buf[..n], &[0; 32]).unwrap();
            buf[i % plain] ^= x;
            let _ = SyncRequest::parse(&buf[..plain]).map(|r| r.events().count());
        }
    }
}
