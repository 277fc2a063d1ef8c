//! The signed allow-list: the device's binary format, read in place.
//!
//! The device searches the list where it lies (memory-mapped flash on the ESP32-C3) without
//! copying or allocating: fixed-width records sorted by key, found by binary search. Layout
//! (little-endian), version 1:
//!
//! | part | size | content |
//! |---|---|---|
//! | header | 64 | magic `CLAL`, version, header length, generation, creation time, counts, body length, key id, flags (bit 0: keypad secrets sealed) |
//! | cards | 16 × n | UID (10 bytes, zero-padded), UID length, policy index (u24), flags, reserved |
//! | keypad users | 96 × n | user code (8 ASCII digits, zero-padded), length, flags, OTP digits, secret lengths, period, policy index, HOTP base counter, TOTP and HOTP secrets (32 bytes each) |
//! | policies | 24 × n | access type, slot count and first slot, `valid_from`, `valid_until` |
//! | slots | 24 × n | days (bit 0 Monday … bit 6 Sunday), start and end minute of the UTC day, `from`, `until` |
//! | card keys | 48 or 0 | with header flag bit 1: the site's card master keys for secure cards (count, versions, current and previous key), sealed |
//! | signature | 64 | Ed25519 over everything before it |
//!
//! A card credential costs 16 bytes; policies (access type, date range, schedule) are shared
//! between the credentials that have the same ones. A device installs a list only if its
//! signature verifies against the site's public key and its generation is newer than the one it
//! has, so a list that still holds a revoked card cannot be replayed.
//!
//! A list made for one device has its keypad secrets sealed ([`FLAG_SEALED`]): the 64 secret
//! bytes of each keypad record are XORed with a ChaCha20 keystream under the device's list key
//! (from [`crate::protocol::list_key`]), nonce = the record's 8 code bytes and the generation's
//! low 32 bits. The signature covers the sealed bytes; [`unseal_secrets`] opens them for a check.
//!
//! A card record with flag [`CARD_SECURE`] is a secure card ([`crate::card`]): its UID alone
//! opens nothing, the card must prove the key diversified for it. The keys come from the site's
//! card master key, which a list sealed to one device carries in its card-keys section
//! ([`FLAG_CARD_KEYS`]), sealed like the keypad secrets (nonce `cardkeys` and the generation's
//! low 32 bits): never in clear, and never in a list that is not sealed.

use ed25519_dalek::{Signature, VerifyingKey};

/// The first four bytes of every list.
pub const MAGIC: [u8; 4] = *b"CLAL";
/// The layout version this code reads and writes.
pub const VERSION: u16 = 1;
/// Header length.
pub const HEADER_LEN: usize = 64;
/// Card record length.
pub const CARD_LEN: usize = 16;
/// Sections after the header.
const SECTIONS: usize = 5;
/// Keypad record length.
pub const KEYPAD_LEN: usize = 96;
/// Policy record length.
pub const POLICY_LEN: usize = 24;
/// Slot record length.
pub const SLOT_LEN: usize = 24;
/// Signature length.
pub const SIGNATURE_LEN: usize = 64;
/// Header flag: keypad secrets are sealed to one device.
pub const FLAG_SEALED: u8 = 1;
/// Header flag: the list ends (before its signature) with the sealed card-keys section.
pub const FLAG_CARD_KEYS: u8 = 2;
/// Card-keys section length: count (1 or 2), the current and previous key's versions, 13
/// reserved bytes, the current key, the previous key (zero when there is none).
pub const CARD_KEYS_LEN: usize = 48;
/// Card record flag: a secure card (the UID alone is refused).
pub const CARD_SECURE: u8 = 1;
/// Longest card UID (ISO 14443: 4, 7 or 10 bytes).
pub const MAX_UID_LEN: usize = 10;
/// Longest keypad user code, in digits.
pub const MAX_USER_CODE_LEN: usize = 8;
/// Longest OTP secret stored in a list, in bytes.
pub const MAX_LIST_SECRET_LEN: usize = 32;
/// Most policies a list can index (24-bit index).
pub const MAX_POLICIES: usize = 1 << 24;

/// Why a list is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListError {
    /// Shorter than its header and signature, or than its header says.
    Truncated,
    /// Not an allow-list (wrong magic).
    NotAnAllowList,
    /// A layout version this code does not read.
    UnsupportedVersion(u16),
    /// The header's counts and lengths disagree.
    BadLayout,
    /// Records are not strictly sorted by key (or a key repeats).
    NotSorted,
    /// A record refers to a policy or slot that does not exist, or holds an impossible value.
    BadRecord,
    /// The signature does not verify against the site's key (corrupted, or signed by another site).
    BadSignature,
    /// The storage the list lies in could not be read.
    Unreadable,
    /// The list is not newer than the one installed (rollback refused).
    StaleGeneration {
        /// The installed generation.
        installed: u64,
        /// The offered one.
        offered: u64,
    },
}

impl ListError {
    /// A short, stable name for logs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            ListError::Truncated => "truncated",
            ListError::NotAnAllowList => "not_an_allow_list",
            ListError::UnsupportedVersion(_) => "unsupported_version",
            ListError::BadLayout => "bad_layout",
            ListError::NotSorted => "not_sorted",
            ListError::BadRecord => "bad_record",
            ListError::BadSignature => "bad_signature",
            ListError::Unreadable => "unreadable",
            ListError::StaleGeneration { .. } => "stale_generation",
        }
    }
}

/// How a credential may be used (ADR-011's access types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AccessType {
    /// Always granted; no time check.
    Unrestricted = 0,
    /// Granted, and a notification is sent at once.
    Emergency = 1,
    /// The backend is asked online; unreachable means denied.
    Conditional = 2,
    /// A date range plus weekly UTC time slots.
    Scheduled = 3,
}

impl AccessType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => AccessType::Unrestricted,
            1 => AccessType::Emergency,
            2 => AccessType::Conditional,
            3 => AccessType::Scheduled,
            _ => return None,
        })
    }

    /// From its upper-case name, as in the allow-list source.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "UNRESTRICTED" => AccessType::Unrestricted,
            "EMERGENCY" => AccessType::Emergency,
            "CONDITIONAL" => AccessType::Conditional,
            "SCHEDULED" => AccessType::Scheduled,
            _ => return None,
        })
    }

    /// Upper-case name, as in the allow-list source.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessType::Unrestricted => "UNRESTRICTED",
            AccessType::Emergency => "EMERGENCY",
            AccessType::Conditional => "CONDITIONAL",
            AccessType::Scheduled => "SCHEDULED",
        }
    }
}

/// A weekly time slot in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot {
    /// Days the slot starts on: bit 0 Monday … bit 6 Sunday.
    pub days: u8,
    /// First minute of the UTC day, 0–1439.
    pub start_min: u16,
    /// Minute the slot ends (exclusive), 1–1440; below `start_min` it crosses midnight.
    pub end_min: u16,
    /// Unix seconds from which the slot applies; 0 for always.
    pub from: i64,
    /// Unix seconds until which the slot applies (exclusive); 0 for always.
    pub until: i64,
}

impl Slot {
    /// At least one day, minutes within the day (`end` up to 1440), and not empty.
    pub fn is_well_formed(&self) -> bool {
        self.days != 0
            && self.days & 0x80 == 0
            && self.start_min < 1440
            && (1..=1440).contains(&self.end_min)
            && self.start_min != self.end_min
    }
}

/// The rules shared by credentials: access type, date range and slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    /// Access type.
    pub access: AccessType,
    /// Unix seconds before which access is not yet valid; 0 for unbounded.
    pub valid_from: i64,
    /// Unix seconds after which access has expired (inclusive bound); 0 for unbounded.
    pub valid_until: i64,
    /// Index of the first slot.
    pub slot_start: u32,
    /// Number of slots; 0 means no time restriction.
    pub slot_count: u16,
}

impl Policy {
    /// A policy without slots (the builder fills in `slot_start` and `slot_count`).
    pub const fn new(access: AccessType, valid_from: i64, valid_until: i64) -> Self {
        Policy {
            access,
            valid_from,
            valid_until,
            slot_start: 0,
            slot_count: 0,
        }
    }
}

/// A keypad user's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeypadUser<'a> {
    /// Index of the record in the list (stable for one list).
    pub index: u32,
    /// The user code's digits.
    pub code: &'a [u8],
    /// TOTP secret, if the user has one.
    pub totp_secret: Option<&'a [u8]>,
    /// HOTP secret, if the user has one.
    pub hotp_secret: Option<&'a [u8]>,
    /// HOTP counter the backend knows to be next.
    pub hotp_counter: u64,
    /// Digits of both codes.
    pub digits: u8,
    /// TOTP period in seconds.
    pub period_s: u16,
    /// The user's policy.
    pub policy: u32,
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    let mut w = [0u8; 2];
    w.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(w)
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}
/// A 24-bit little-endian index (policy references in card and keypad records).
fn le_u24(b: &[u8], at: usize) -> u32 {
    u32::from(b[at]) | u32::from(b[at + 1]) << 8 | u32::from(b[at + 2]) << 16
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}
fn le_i64(b: &[u8], at: usize) -> i64 {
    le_u64(b, at) as i64
}

/// A list's header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListInfo {
    /// Monotonic generation: a device refuses anything not newer than what it has.
    pub generation: u64,
    /// When the backend made the list (Unix seconds).
    pub created_unix: i64,
    /// Card credentials.
    pub cards: u32,
    /// Keypad users.
    pub keypad_users: u32,
    /// Distinct policies.
    pub policies: u32,
    /// Slots.
    pub slots: u32,
    /// First four bytes of the signing public key.
    pub key_id: [u8; 4],
    /// Keypad secrets are sealed to the device ([`unseal_secrets`]).
    pub sealed: bool,
    /// The list carries the site's card master keys ([`AllowList::card_master_keys`]).
    pub card_keys: bool,
}

/// A card's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CardRecord {
    /// Its policy's index.
    pub policy: u32,
    /// A secure card: only a card that proves its key may use this entry.
    pub secure: bool,
}

/// The site's card master keys, as a list sealed to this door carries them: the current one,
/// and during a rotation the previous one (cards not yet personalised again still hold keys
/// diversified from it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CardMasterKeys {
    /// The current key and its version.
    pub current: ([u8; 16], u8),
    /// The previous key and its version, while cards may still hold it.
    pub previous: Option<([u8; 16], u8)>,
}

impl core::fmt::Debug for CardMasterKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CardMasterKeys")
            .field("current_version", &self.current.1)
            .field("previous_version", &self.previous.map(|p| p.1))
            .finish_non_exhaustive()
    }
}

/// The keystream label of the card-keys section: no keypad record's (their codes are digits).
const CARD_KEYS_LABEL: &[u8; 8] = b"cardkeys";

/// XORs the 64 secret bytes of a keypad record with its keystream (sealing and unsealing are
/// the same operation).
fn apply_seal(
    list_key: &[u8; 32],
    code: &[u8; MAX_USER_CODE_LEN],
    generation: u64,
    area: &mut [u8],
) {
    use chacha20::cipher::{KeyIvInit, StreamCipher};
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(code);
    nonce[8..].copy_from_slice(&(generation as u32).to_le_bytes());
    let mut cipher = chacha20::ChaCha20::new(list_key.into(), &nonce.into());
    cipher.apply_keystream(area);
}

/// Opens a keypad user's sealed secrets into `buf` (TOTP in the first half, HOTP in the second)
/// and returns the user with its secrets pointing there. `generation` is the list's.
pub fn unseal_secrets<'a: 'b, 'b>(
    user: &KeypadUser<'a>,
    list_key: &[u8; 32],
    generation: u64,
    buf: &'b mut [u8; 64],
) -> KeypadUser<'b> {
    buf.fill(0);
    let totp_len = user.totp_secret.map_or(0, <[u8]>::len);
    let hotp_len = user.hotp_secret.map_or(0, <[u8]>::len);
    if let Some(s) = user.totp_secret {
        buf[..totp_len].copy_from_slice(s);
    }
    if let Some(s) = user.hotp_secret {
        buf[32..32 + hotp_len].copy_from_slice(s);
    }
    let mut code = [0u8; MAX_USER_CODE_LEN];
    let n = user.code.len().min(MAX_USER_CODE_LEN);
    code[..n].copy_from_slice(&user.code[..n]);
    apply_seal(list_key, &code, generation, &mut buf[..]);
    let (totp, hotp) = buf.split_at(32);
    KeypadUser {
        index: user.index,
        code: user.code,
        totp_secret: user.totp_secret.map(|_| &totp[..totp_len]),
        hotp_secret: user.hotp_secret.map(|_| &hotp[..hotp_len]),
        hotp_counter: user.hotp_counter,
        digits: user.digits,
        period_s: user.period_s,
        policy: user.policy,
    }
}

/// Where a list's bytes lie: a slice in memory (host), or flash read a record at a time (a
/// door, through `ReadNorFlash`). The reader never needs more than one record in RAM.
pub trait ListBytes {
    /// Length of the list in bytes.
    fn len(&self) -> u32;

    /// Whether the list is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` from `offset`. Fails with [`ListError::Truncated`] past the end and
    /// [`ListError::Unreadable`] when the storage fails.
    fn read(&self, offset: u32, buf: &mut [u8]) -> Result<(), ListError>;

    /// The bytes themselves, when they lie in memory: lookups then compare in place instead of
    /// copying each record they probe.
    fn in_memory(&self) -> Option<&[u8]> {
        None
    }
}

impl<T: AsRef<[u8]> + ?Sized> ListBytes for &T {
    fn len(&self) -> u32 {
        u32::try_from(self.as_ref().len()).unwrap_or(u32::MAX)
    }

    fn read(&self, offset: u32, buf: &mut [u8]) -> Result<(), ListError> {
        let from = offset as usize;
        let src = from
            .checked_add(buf.len())
            .and_then(|end| self.as_ref().get(from..end))
            .ok_or(ListError::Truncated)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn in_memory(&self) -> Option<&[u8]> {
        Some(self.as_ref())
    }
}

/// A list in memory.
pub type SliceList<'a> = AllowList<&'a [u8]>;

/// A structurally checked list, searched where it lies: a lookup reads the header's counts
/// from RAM and at most one record per binary-search step (17 reads for 100,000 cards).
#[derive(Clone, Copy, Debug)]
pub struct AllowList<S> {
    bytes: S,
    info: ListInfo,
}

impl<'a> AllowList<&'a [u8]> {
    /// [`AllowList::open_in`] over a slice.
    pub fn open(bytes: &'a [u8]) -> Result<Self, ListError> {
        Self::open_in(bytes)
    }

    /// [`AllowList::verify_in`] over a slice, in one go.
    pub fn verify(bytes: &'a [u8], site_key: &VerifyingKey) -> Result<Self, ListError> {
        Self::verify_in(bytes, site_key)
    }

    /// The bytes, signature included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// Reads a list's header: its fields, and whether its sections fit its length.
fn read_header<S: ListBytes>(bytes: &S) -> Result<ListInfo, ListError> {
    let mut h = [0u8; HEADER_LEN];
    if bytes.len() < 4 {
        return Err(ListError::Truncated);
    }
    bytes.read(0, &mut h[..4])?;
    if h[..4] != MAGIC {
        return Err(ListError::NotAnAllowList);
    }
    if (bytes.len() as usize) < HEADER_LEN + SIGNATURE_LEN {
        return Err(ListError::Truncated);
    }
    bytes.read(0, &mut h)?;
    let version = le_u16(&h, 4);
    if version != VERSION {
        return Err(ListError::UnsupportedVersion(version));
    }
    if usize::from(le_u16(&h, 6)) != HEADER_LEN {
        return Err(ListError::BadLayout);
    }
    let mut key_id = [0u8; 4];
    key_id.copy_from_slice(&h[44..48]);
    let info = ListInfo {
        generation: le_u64(&h, 8),
        created_unix: le_i64(&h, 16),
        cards: le_u32(&h, 24),
        keypad_users: le_u32(&h, 28),
        policies: le_u32(&h, 32),
        slots: le_u32(&h, 36),
        key_id,
        sealed: h[48] & FLAG_SEALED != 0,
        card_keys: h[48] & FLAG_CARD_KEYS != 0,
    };
    // Card keys travel only in a list sealed to one door.
    if h[48] & !(FLAG_SEALED | FLAG_CARD_KEYS) != 0 || (info.card_keys && !info.sealed) {
        return Err(ListError::BadLayout);
    }
    let body_len = le_u32(&h, 40) as u64;
    if info.body_len() != body_len || info.policies as usize > MAX_POLICIES {
        return Err(ListError::BadLayout);
    }
    let total = HEADER_LEN as u64 + body_len + SIGNATURE_LEN as u64;
    if u64::from(bytes.len()) < total {
        return Err(ListError::Truncated);
    }
    if u64::from(bytes.len()) != total {
        return Err(ListError::BadLayout);
    }
    Ok(info)
}

impl ListInfo {
    /// Bytes of records the counts call for.
    fn body_len(&self) -> u64 {
        self.cards as u64 * CARD_LEN as u64
            + self.keypad_users as u64 * KEYPAD_LEN as u64
            + self.policies as u64 * POLICY_LEN as u64
            + self.slots as u64 * SLOT_LEN as u64
            + if self.card_keys {
                CARD_KEYS_LEN as u64
            } else {
                0
            }
    }

    /// Length of the whole list, signature included.
    pub fn list_len(&self) -> u64 {
        HEADER_LEN as u64 + self.body_len() + SIGNATURE_LEN as u64
    }

    /// Where section `index` (cards, keypad users, policies, slots, card keys) starts, its
    /// record count and record length. A list whose header [`read_header`] accepted fits in
    /// `u32`.
    fn section(&self, index: usize) -> (u32, u32, usize) {
        let counts = [
            (self.cards, CARD_LEN),
            (self.keypad_users, KEYPAD_LEN),
            (self.policies, POLICY_LEN),
            (self.slots, SLOT_LEN),
            (u32::from(self.card_keys), CARD_KEYS_LEN),
        ];
        let last = SECTIONS - 1;
        let mut at = HEADER_LEN as u64;
        for (n, len) in &counts[..index.min(last)] {
            at += u64::from(*n) * *len as u64;
        }
        let (n, len) = counts[index.min(last)];
        (at as u32, n, len)
    }
}

impl<S: ListBytes> AllowList<S> {
    /// Checks the header and that the sections fit (one read); does not check the signature
    /// or the records. Use this to open a list that was fully checked when it was installed.
    pub fn open_in(bytes: S) -> Result<Self, ListError> {
        let info = read_header(&bytes)?;
        Ok(AllowList { bytes, info })
    }

    /// A list whose header was read when it was checked in full (by [`ListCheck`] or
    /// [`verify_in`](Self::verify_in)): no read at all to open it. Reads stay bounded by the
    /// source's length whatever `info` says.
    pub fn trusted(bytes: S, info: ListInfo) -> Self {
        AllowList { bytes, info }
    }

    /// Full check before installing, in one go: header, signature against the site key, and
    /// every record (sorted, unique, references in range, values possible). O(n), reading the
    /// list once in small pieces ([`ListCheck`] does the same a step at a time).
    pub fn verify_in(bytes: S, site_key: &VerifyingKey) -> Result<Self, ListError> {
        let mut check = ListCheck::start(&bytes, site_key)?;
        loop {
            if let Some(info) = check.step(&bytes, u32::MAX, |_| {})? {
                return Ok(AllowList { bytes, info });
            }
        }
    }

    /// The header fields.
    pub fn info(&self) -> ListInfo {
        self.info
    }

    /// Where the bytes lie.
    pub fn source(&self) -> &S {
        &self.bytes
    }

    /// Record `index` of section `section`, read into an array of its length.
    fn record<const N: usize>(&self, section: usize, index: u32) -> Option<[u8; N]> {
        let (start, count, len) = self.info.section(section);
        if index >= count || len != N {
            return None;
        }
        let mut rec = [0u8; N];
        let at = start.checked_add(index.checked_mul(N as u32)?)?;
        self.bytes.read(at, &mut rec).ok()?;
        Some(rec)
    }

    /// Binary search of a sorted section by key: one record read per step (compared in place
    /// when the list lies in memory).
    fn search<const N: usize>(&self, section: usize, key: &[u8]) -> Option<(u32, [u8; N])> {
        let (start, count, _) = self.info.section(section);
        let (mut lo, mut hi) = (0u32, count);
        if let Some(bytes) = self.bytes.in_memory() {
            let len = (count as usize).checked_mul(N)?;
            let records = bytes.get(start as usize..(start as usize).checked_add(len)?)?;
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let rec = &records[mid as usize * N..(mid as usize + 1) * N];
                match rec[..key.len()].cmp(key) {
                    core::cmp::Ordering::Less => lo = mid + 1,
                    core::cmp::Ordering::Greater => hi = mid,
                    core::cmp::Ordering::Equal => return Some((mid, rec.try_into().ok()?)),
                }
            }
            return None;
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let rec = self.record::<N>(section, mid)?;
            match rec[..key.len()].cmp(key) {
                core::cmp::Ordering::Less => lo = mid + 1,
                core::cmp::Ordering::Greater => hi = mid,
                core::cmp::Ordering::Equal => return Some((mid, rec)),
            }
        }
        None
    }

    /// The policy index of a card, by UID (4, 7 or 10 bytes). `None` also when the storage
    /// cannot be read (the door then denies).
    pub fn find_card(&self, uid: &[u8]) -> Option<u32> {
        self.card(uid).map(|r| r.policy)
    }

    /// A card's record, by UID: its policy and whether it is a secure card.
    pub fn card(&self, uid: &[u8]) -> Option<CardRecord> {
        let key = card_key(uid)?;
        let (_, rec) = self.search::<CARD_LEN>(0, &key)?;
        Some(CardRecord {
            policy: le_u24(&rec, 11),
            secure: rec[14] & CARD_SECURE != 0,
        })
    }

    /// The site's card master keys, unsealed with this door's list key. `None` when the list
    /// carries none (or they cannot be read).
    pub fn card_master_keys(&self, list_key: &[u8; 32]) -> Option<CardMasterKeys> {
        if !self.info.card_keys {
            return None;
        }
        let (at, _, _) = self.info.section(4);
        let mut rec = [0u8; CARD_KEYS_LEN];
        self.bytes.read(at, &mut rec).ok()?;
        apply_seal(
            list_key,
            CARD_KEYS_LABEL,
            self.info.generation,
            &mut rec[16..48],
        );
        let key = |at: usize| {
            let mut k = [0u8; 16];
            k.copy_from_slice(&rec[at..at + 16]);
            k
        };
        Some(CardMasterKeys {
            current: (key(16), rec[1]),
            previous: (rec[0] == 2).then(|| (key(32), rec[2])),
        })
    }

    /// A keypad user, by user code (ASCII digits); its record is read into `rec`, which the
    /// user borrows.
    pub fn find_keypad_user<'r>(
        &self,
        code: &[u8],
        rec: &'r mut [u8; KEYPAD_LEN],
    ) -> Option<KeypadUser<'r>> {
        let key = keypad_key(code)?;
        let (index, found) = self.search::<KEYPAD_LEN>(1, &key)?;
        *rec = found;
        let rec: &'r [u8; KEYPAD_LEN] = rec;
        let code_len = usize::from(rec[8]).min(MAX_USER_CODE_LEN);
        let flags = rec[9];
        let totp_len = usize::from(rec[11]).min(MAX_LIST_SECRET_LEN);
        let hotp_len = usize::from(rec[12]).min(MAX_LIST_SECRET_LEN);
        Some(KeypadUser {
            index,
            code: &rec[..code_len],
            totp_secret: (flags & 1 != 0).then(|| &rec[32..32 + totp_len]),
            hotp_secret: (flags & 2 != 0).then(|| &rec[64..64 + hotp_len]),
            hotp_counter: le_u64(rec, 24),
            digits: rec[10],
            period_s: le_u16(rec, 14),
            policy: le_u24(rec, 16),
        })
    }

    /// A policy by index.
    pub fn policy(&self, index: u32) -> Option<Policy> {
        decode_policy(&self.record::<POLICY_LEN>(2, index)?)
    }

    /// A slot by index.
    pub fn slot(&self, index: u32) -> Option<Slot> {
        Some(decode_slot(&self.record::<SLOT_LEN>(3, index)?))
    }

    /// The slots of a policy, skipping any that cannot be read (a checked list has none such).
    pub fn slots_of<'l>(&'l self, policy: &Policy) -> impl Iterator<Item = Slot> + 'l {
        let start = policy.slot_start;
        (0..u32::from(policy.slot_count)).filter_map(move |i| self.slot(start.checked_add(i)?))
    }
}

fn decode_policy(rec: &[u8]) -> Option<Policy> {
    Some(Policy {
        access: AccessType::from_u8(rec[0])?,
        slot_count: le_u16(rec, 2),
        slot_start: le_u32(rec, 4),
        valid_from: le_i64(rec, 8),
        valid_until: le_i64(rec, 16),
    })
}

fn decode_slot(rec: &[u8]) -> Slot {
    Slot {
        days: rec[0],
        start_min: le_u16(rec, 2),
        end_min: le_u16(rec, 4),
        from: le_i64(rec, 8),
        until: le_i64(rec, 16),
    }
}

/// Bytes read at a time by [`ListCheck::step`] (a multiple of every record length's divisor
/// 8, so that reads stay aligned for flash).
pub const CHECK_CHUNK: usize = 512;

/// The full check of a list, a step at a time, reading it once from where it lies: the
/// Ed25519 signature (strict: no small-order key or `R`, canonical `S`) hashed as the bytes go
/// by, and every record checked as it passes (sorted, unique, references in range, values
/// possible). A door runs it in steps between other work, so that cards are still read while
/// a 100,000-card list is checked.
pub struct ListCheck {
    info: ListInfo,
    verifier: Option<ed25519_dalek::StreamVerifier>,
    /// Bytes of the list handed on so far (the signature's included, at the end).
    at: u32,
    signed_end: u32,
    /// The record being assembled across reads, and how much of it is in.
    rec: [u8; KEYPAD_LEN],
    rec_len: usize,
    /// Which section and record the next complete record is.
    section: usize,
    index: u32,
    /// The previous record's key, for order.
    prev: [u8; MAX_UID_LEN + 1],
}

impl core::fmt::Debug for ListCheck {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ListCheck")
            .field("info", &self.info)
            .field("at", &self.at)
            .finish()
    }
}

impl ListCheck {
    /// Reads the header and the signature and prepares the check.
    pub fn start<S: ListBytes>(bytes: &S, site_key: &VerifyingKey) -> Result<Self, ListError> {
        let info = read_header(bytes)?;
        let signed_end = bytes.len() - SIGNATURE_LEN as u32;
        let mut sig = [0u8; SIGNATURE_LEN];
        bytes.read(signed_end, &mut sig)?;
        let signature = Signature::from_bytes(&sig);
        // verify_strict's refusals, which the streaming verifier leaves to its caller.
        let mut r = [0u8; 32];
        r.copy_from_slice(&sig[..32]);
        let small_r = curve25519_dalek::edwards::CompressedEdwardsY(r)
            .decompress()
            .is_none_or(|p| p.is_small_order());
        if small_r || site_key.is_weak() {
            return Err(ListError::BadSignature);
        }
        let verifier = site_key
            .verify_stream(&signature)
            .map_err(|_| ListError::BadSignature)?;
        Ok(ListCheck {
            info,
            verifier: Some(verifier),
            at: 0,
            signed_end,
            rec: [0; KEYPAD_LEN],
            rec_len: 0,
            section: 0,
            index: 0,
            prev: [0; MAX_UID_LEN + 1],
        })
    }

    /// The header of the list being checked.
    pub fn info(&self) -> ListInfo {
        self.info
    }

    /// Bytes of the list read so far.
    pub fn checked(&self) -> u32 {
        self.at
    }

    /// Reads and checks up to `budget` more bytes (at least one chunk), handing each piece
    /// read to `seen` (e.g. to hash the whole list). `Some(info)` once the whole list read
    /// checks out; an error as soon as something does not.
    pub fn step<S: ListBytes>(
        &mut self,
        bytes: &S,
        budget: u32,
        mut seen: impl FnMut(&[u8]),
    ) -> Result<Option<ListInfo>, ListError> {
        let mut buf = [0u8; CHECK_CHUNK];
        let mut spent = 0u32;
        let total = bytes.len();
        while self.at < total && (spent == 0 || spent < budget) {
            let n = (total - self.at).min(CHECK_CHUNK as u32) as usize;
            bytes.read(self.at, &mut buf[..n])?;
            seen(&buf[..n]);
            // The signed part: everything before the signature.
            let signed = (self.signed_end.saturating_sub(self.at) as usize).min(n);
            if let Some(v) = &mut self.verifier {
                v.update(&buf[..signed]);
            }
            let body_from = (HEADER_LEN as u32).saturating_sub(self.at) as usize;
            if body_from < signed {
                self.records(&buf[body_from..signed])?;
            }
            self.at += n as u32;
            spent = spent.saturating_add(n as u32);
        }
        if self.at < total {
            return Ok(None);
        }
        let verifier = self.verifier.take().ok_or(ListError::BadSignature)?;
        verifier
            .finalize_and_verify()
            .map_err(|_| ListError::BadSignature)?;
        self.skip_empty_sections();
        if self.section < SECTIONS || self.rec_len != 0 {
            return Err(ListError::BadLayout);
        }
        Ok(Some(self.info))
    }

    /// Feeds body bytes, checking each record once it is whole.
    fn records(&mut self, mut body: &[u8]) -> Result<(), ListError> {
        while !body.is_empty() {
            self.skip_empty_sections();
            if self.section >= SECTIONS {
                return Err(ListError::BadLayout);
            }
            let (_, count, len) = self.info.section(self.section);
            if self.rec_len == 0 {
                // Whole records are checked where they lie in the chunk.
                let whole = (body.len() / len).min((count - self.index) as usize);
                for rec in body[..whole * len].chunks_exact(len) {
                    self.check_record(rec)?;
                    self.index += 1;
                }
                body = &body[whole * len..];
                if whole > 0 {
                    continue;
                }
            }
            // A record split between chunks is put together first.
            let take = (len - self.rec_len).min(body.len());
            self.rec[self.rec_len..self.rec_len + take].copy_from_slice(&body[..take]);
            self.rec_len += take;
            body = &body[take..];
            if self.rec_len == len {
                self.rec_len = 0;
                let rec = self.rec;
                self.check_record(&rec[..len])?;
                self.index += 1;
            }
        }
        self.skip_empty_sections();
        Ok(())
    }

    fn skip_empty_sections(&mut self) {
        while self.section < SECTIONS && self.index >= self.info.section(self.section).1 {
            self.section += 1;
            self.index = 0;
        }
    }

    fn check_record(&mut self, rec: &[u8]) -> Result<(), ListError> {
        match self.section {
            0 => self.in_order(&rec[..MAX_UID_LEN + 1])?,
            1 => self.in_order(&rec[..MAX_USER_CODE_LEN + 1])?,
            _ => {}
        }
        let policies = self.info.policies;
        let ok = match self.section {
            4 => [1, 2].contains(&rec[0]) && rec[3..16].iter().all(|&b| b == 0),
            0 => {
                let len = usize::from(rec[10]);
                [4, 7, 10].contains(&len)
                    && rec[len..MAX_UID_LEN].iter().all(|&b| b == 0)
                    && le_u24(rec, 11) < policies
                    && rec[14] & !CARD_SECURE == 0
                    && (rec[14] & CARD_SECURE == 0 || len == crate::card::UID_LEN)
                    && rec[15] == 0
            }
            1 => {
                let code_len = usize::from(rec[8]);
                let flags = rec[9];
                (1..=MAX_USER_CODE_LEN).contains(&code_len)
                    && rec[..code_len].iter().all(u8::is_ascii_digit)
                    && rec[code_len..MAX_USER_CODE_LEN].iter().all(|&b| b == 0)
                    && flags & 3 != 0
                    && (6..=8).contains(&rec[10])
                    && usize::from(rec[11]) <= MAX_LIST_SECRET_LEN
                    && usize::from(rec[12]) <= MAX_LIST_SECRET_LEN
                    && (flags & 1 == 0 || (rec[11] > 0 && le_u16(rec, 14) > 0))
                    && (flags & 2 == 0 || rec[12] > 0)
                    && le_u24(rec, 16) < policies
            }
            2 => decode_policy(rec).is_some_and(|p| {
                u64::from(p.slot_start) + u64::from(p.slot_count) <= u64::from(self.info.slots)
            }),
            _ => decode_slot(rec).is_well_formed(),
        };
        if ok {
            Ok(())
        } else {
            Err(ListError::BadRecord)
        }
    }

    /// Whether a record's key follows the previous one's.
    fn in_order(&mut self, key: &[u8]) -> Result<(), ListError> {
        let prev = &mut self.prev[..key.len()];
        if self.index > 0 && *prev >= *key {
            return Err(ListError::NotSorted);
        }
        prev.copy_from_slice(key);
        Ok(())
    }
}

/// The sort key of a card: UID zero-padded to 10 bytes, then its length.
pub fn card_key(uid: &[u8]) -> Option<[u8; MAX_UID_LEN + 1]> {
    if ![4, 7, 10].contains(&uid.len()) {
        return None;
    }
    let mut key = [0u8; MAX_UID_LEN + 1];
    key[..uid.len()].copy_from_slice(uid);
    key[MAX_UID_LEN] = uid.len() as u8;
    Some(key)
}

/// The sort key of a keypad user: code digits zero-padded to 8 bytes, then its length.
pub fn keypad_key(code: &[u8]) -> Option<[u8; MAX_USER_CODE_LEN + 1]> {
    if code.is_empty() || code.len() > MAX_USER_CODE_LEN || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut key = [0u8; MAX_USER_CODE_LEN + 1];
    key[..code.len()].copy_from_slice(code);
    key[MAX_USER_CODE_LEN] = code.len() as u8;
    Some(key)
}

#[cfg(any(feature = "alloc", test))]
pub use builder::{BuildError, Builder, CardEntry, KeypadEntry};

#[cfg(any(feature = "alloc", test))]
mod builder {
    //! Writing lists (host side): the compiler, simulator and server build lists with this, so
    //! that the writer and the reader share one definition of the layout.
    extern crate alloc;
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;

    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    /// A card to put in a list.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct CardEntry {
        /// UID bytes (4, 7 or 10).
        pub uid: Vec<u8>,
        /// Its policy.
        pub policy: Policy,
        /// Its slots (the policy's `slot_start`/`slot_count` are filled in by the builder).
        pub slots: Vec<Slot>,
    }

    /// A keypad user to put in a list.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct KeypadEntry {
        /// User code digits.
        pub code: Vec<u8>,
        /// TOTP secret.
        pub totp_secret: Option<Vec<u8>>,
        /// HOTP secret.
        pub hotp_secret: Option<Vec<u8>>,
        /// First HOTP counter.
        pub hotp_counter: u64,
        /// Digits (6–8).
        pub digits: u8,
        /// TOTP period in seconds.
        pub period_s: u16,
        /// Its policy.
        pub policy: Policy,
        /// Its slots.
        pub slots: Vec<Slot>,
    }

    /// Why a list cannot be built.
    #[derive(Clone, Debug, PartialEq, Eq)]
    #[non_exhaustive]
    pub enum BuildError {
        /// Two cards with the same UID.
        DuplicateCard(Vec<u8>),
        /// Two keypad users with the same code.
        DuplicateUserCode(Vec<u8>),
        /// A UID that is not 4, 7 or 10 bytes (7 for a secure card).
        BadUid(Vec<u8>),
        /// Card master keys in a list that is not sealed to a device.
        CardKeysUnsealed,
        /// A user code that is not 1–8 digits.
        BadUserCode(Vec<u8>),
        /// A keypad user with neither TOTP nor HOTP, a secret over 32 bytes, digits outside 6–8
        /// or a zero period.
        BadKeypadEntry(Vec<u8>),
        /// A slot with no days, minutes out of range, or start equal to end.
        BadSlot,
        /// More than 2^24 distinct policies or 2^32 records.
        TooLarge,
    }

    /// Collects credentials, then writes and signs a list.
    #[derive(Debug, Default)]
    pub struct Builder {
        cards: Vec<([u8; MAX_UID_LEN + 1], u32, u8)>,
        keypad: Vec<([u8; MAX_USER_CODE_LEN + 1], KeypadEntry, u32)>,
        policies: Vec<Policy>,
        policy_index: BTreeMap<(u8, i64, i64, Vec<Slot>), u32>,
        slots: Vec<Slot>,
        seal: Option<[u8; 32]>,
        card_keys: Option<CardMasterKeys>,
    }

    impl Builder {
        /// An empty list.
        pub fn new() -> Self {
            Self::default()
        }

        fn intern(&mut self, policy: Policy, slots: &[Slot]) -> Result<u32, BuildError> {
            if !slots.iter().all(Slot::is_well_formed) {
                return Err(BuildError::BadSlot);
            }
            let key = (
                policy.access as u8,
                policy.valid_from,
                policy.valid_until,
                slots.to_vec(),
            );
            if let Some(&i) = self.policy_index.get(&key) {
                return Ok(i);
            }
            if self.policies.len() >= MAX_POLICIES || slots.len() > usize::from(u16::MAX) {
                return Err(BuildError::TooLarge);
            }
            let i = self.policies.len() as u32;
            let slot_start = u32::try_from(self.slots.len()).map_err(|_| BuildError::TooLarge)?;
            self.slots.extend_from_slice(slots);
            self.policies.push(Policy {
                slot_start,
                slot_count: slots.len() as u16,
                ..policy
            });
            self.policy_index.insert(key, i);
            Ok(i)
        }

        /// Seals the keypad secrets with a device's list key.
        pub fn seal_secrets(&mut self, list_key: [u8; 32]) -> &mut Self {
            self.seal = Some(list_key);
            self
        }

        /// Adds a card.
        pub fn card(&mut self, entry: &CardEntry) -> Result<&mut Self, BuildError> {
            let key = card_key(&entry.uid).ok_or_else(|| BuildError::BadUid(entry.uid.clone()))?;
            let policy = self.intern(entry.policy, &entry.slots)?;
            self.cards.push((key, policy, 0));
            Ok(self)
        }

        /// Adds a secure card: only a card that proves the key diversified for its UID (7
        /// bytes) may use the entry.
        pub fn secure_card(&mut self, entry: &CardEntry) -> Result<&mut Self, BuildError> {
            if entry.uid.len() != crate::card::UID_LEN {
                return Err(BuildError::BadUid(entry.uid.clone()));
            }
            self.card(entry)?;
            if let Some(last) = self.cards.last_mut() {
                last.2 = CARD_SECURE;
            }
            Ok(self)
        }

        /// Carries the site's card master keys (the list must be sealed to a device).
        pub fn card_master_keys(&mut self, keys: CardMasterKeys) -> &mut Self {
            self.card_keys = Some(keys);
            self
        }

        /// Adds a keypad user.
        pub fn keypad_user(&mut self, entry: &KeypadEntry) -> Result<&mut Self, BuildError> {
            let key = keypad_key(&entry.code)
                .ok_or_else(|| BuildError::BadUserCode(entry.code.clone()))?;
            let secret_ok = |s: &Option<Vec<u8>>| {
                s.as_ref()
                    .is_none_or(|s| !s.is_empty() && s.len() <= MAX_LIST_SECRET_LEN)
            };
            if (entry.totp_secret.is_none() && entry.hotp_secret.is_none())
                || !secret_ok(&entry.totp_secret)
                || !secret_ok(&entry.hotp_secret)
                || !(6..=8).contains(&entry.digits)
                || (entry.totp_secret.is_some() && entry.period_s == 0)
            {
                return Err(BuildError::BadKeypadEntry(entry.code.clone()));
            }
            let policy = self.intern(entry.policy, &entry.slots)?;
            self.keypad.push((key, entry.clone(), policy));
            Ok(self)
        }

        /// Sorts, lays out and signs the list.
        pub fn build(
            mut self,
            generation: u64,
            created_unix: i64,
            key: &SigningKey,
        ) -> Result<Vec<u8>, BuildError> {
            if self.card_keys.is_some() && self.seal.is_none() {
                return Err(BuildError::CardKeysUnsealed);
            }
            self.cards.sort_unstable_by_key(|a| a.0);
            if let Some(w) = self.cards.windows(2).find(|w| w[0].0 == w[1].0) {
                let len = usize::from(w[0].0[MAX_UID_LEN]);
                return Err(BuildError::DuplicateCard(w[0].0[..len].to_vec()));
            }
            self.keypad.sort_unstable_by_key(|a| a.0);
            if let Some(w) = self.keypad.windows(2).find(|w| w[0].0 == w[1].0) {
                return Err(BuildError::DuplicateUserCode(w[0].1.code.clone()));
            }
            let count = |n: usize| u32::try_from(n).map_err(|_| BuildError::TooLarge);
            let (cards, users, policies, slots) = (
                count(self.cards.len())?,
                count(self.keypad.len())?,
                count(self.policies.len())?,
                count(self.slots.len())?,
            );
            let body_len = self.cards.len() * CARD_LEN
                + self.keypad.len() * KEYPAD_LEN
                + self.policies.len() * POLICY_LEN
                + self.slots.len() * SLOT_LEN
                + if self.card_keys.is_some() {
                    CARD_KEYS_LEN
                } else {
                    0
                };
            let body_len_u32 = u32::try_from(body_len).map_err(|_| BuildError::TooLarge)?;
            let mut out = Vec::with_capacity(HEADER_LEN + body_len + SIGNATURE_LEN);
            out.extend_from_slice(&MAGIC);
            out.extend_from_slice(&VERSION.to_le_bytes());
            out.extend_from_slice(&(HEADER_LEN as u16).to_le_bytes());
            out.extend_from_slice(&generation.to_le_bytes());
            out.extend_from_slice(&created_unix.to_le_bytes());
            for n in [cards, users, policies, slots, body_len_u32] {
                out.extend_from_slice(&n.to_le_bytes());
            }
            out.extend_from_slice(&key.verifying_key().as_bytes()[..4]);
            out.push(
                if self.seal.is_some() { FLAG_SEALED } else { 0 }
                    | if self.card_keys.is_some() {
                        FLAG_CARD_KEYS
                    } else {
                        0
                    },
            );
            out.resize(HEADER_LEN, 0);
            for (key, policy, flags) in &self.cards {
                out.extend_from_slice(key);
                out.extend_from_slice(&policy.to_le_bytes()[..3]);
                out.extend_from_slice(&[*flags, 0]);
            }
            for (key, e, policy) in &self.keypad {
                let mut rec = [0u8; KEYPAD_LEN];
                rec[..9].copy_from_slice(key);
                rec[9] = u8::from(e.totp_secret.is_some()) | u8::from(e.hotp_secret.is_some()) << 1;
                rec[10] = e.digits;
                rec[11] = e.totp_secret.as_ref().map_or(0, |s| s.len() as u8);
                rec[12] = e.hotp_secret.as_ref().map_or(0, |s| s.len() as u8);
                rec[14..16].copy_from_slice(&e.period_s.to_le_bytes());
                rec[16..19].copy_from_slice(&policy.to_le_bytes()[..3]);
                rec[24..32].copy_from_slice(&e.hotp_counter.to_le_bytes());
                if let Some(s) = &e.totp_secret {
                    rec[32..32 + s.len()].copy_from_slice(s);
                }
                if let Some(s) = &e.hotp_secret {
                    rec[64..64 + s.len()].copy_from_slice(s);
                }
                if let Some(list_key) = &self.seal {
                    let mut code = [0u8; MAX_USER_CODE_LEN];
                    code.copy_from_slice(&rec[..MAX_USER_CODE_LEN]);
                    apply_seal(list_key, &code, generation, &mut rec[32..96]);
                }
                out.extend_from_slice(&rec);
            }
            for p in &self.policies {
                let mut rec = [0u8; POLICY_LEN];
                rec[0] = p.access as u8;
                rec[2..4].copy_from_slice(&p.slot_count.to_le_bytes());
                rec[4..8].copy_from_slice(&p.slot_start.to_le_bytes());
                rec[8..16].copy_from_slice(&p.valid_from.to_le_bytes());
                rec[16..24].copy_from_slice(&p.valid_until.to_le_bytes());
                out.extend_from_slice(&rec);
            }
            for s in &self.slots {
                let mut rec = [0u8; SLOT_LEN];
                rec[0] = s.days;
                rec[2..4].copy_from_slice(&s.start_min.to_le_bytes());
                rec[4..6].copy_from_slice(&s.end_min.to_le_bytes());
                rec[8..16].copy_from_slice(&s.from.to_le_bytes());
                rec[16..24].copy_from_slice(&s.until.to_le_bytes());
                out.extend_from_slice(&rec);
            }
            if let (Some(keys), Some(list_key)) = (&self.card_keys, &self.seal) {
                let mut rec = [0u8; CARD_KEYS_LEN];
                rec[0] = if keys.previous.is_some() { 2 } else { 1 };
                rec[1] = keys.current.1;
                rec[16..32].copy_from_slice(&keys.current.0);
                if let Some((k, v)) = keys.previous {
                    rec[2] = v;
                    rec[32..48].copy_from_slice(&k);
                }
                apply_seal(list_key, CARD_KEYS_LABEL, generation, &mut rec[16..48]);
                out.extend_from_slice(&rec);
            }
            let signature = key.sign(&out);
            out.extend_from_slice(&signature.to_bytes());
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[42; 32])
    }

    fn policy(access: AccessType) -> Policy {
        Policy::new(access, 0, 0)
    }

    fn sample_list() -> Vec<u8> {
        let mut b = Builder::new();
        let tue = Slot {
            days: 0b10,
            start_min: 9 * 60,
            end_min: 18 * 60,
            from: 0,
            until: 0,
        };
        b.card(&CardEntry {
            uid: vec![0x04, 0xA1, 0xB2, 0xC3],
            policy: policy(AccessType::Unrestricted),
            slots: vec![],
        })
        .unwrap();
        b.card(&CardEntry {
            uid: vec![0x04, 0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6],
            policy: Policy {
                valid_from: 1_767_225_600,
                valid_until: 1_798_761_599,
                ..policy(AccessType::Scheduled)
            },
            slots: vec![tue],
        })
        .unwrap();
        b.card(&CardEntry {
            uid: vec![1; 10],
            policy: policy(AccessType::Unrestricted),
            slots: vec![],
        })
        .unwrap();
        b.keypad_user(&KeypadEntry {
            code: b"1234".to_vec(),
            totp_secret: Some(b"Hello!\xde\xad\xbe\xef".to_vec()),
            hotp_secret: Some(b"1234567890".to_vec()),
            hotp_counter: 5,
            digits: 6,
            period_s: 30,
            policy: policy(AccessType::Unrestricted),
            slots: vec![],
        })
        .unwrap();
        b.build(7, 1_795_510_740, &key()).unwrap()
    }

    #[test]
    fn build_verify_and_find() {
        let bytes = sample_list();
        let list = AllowList::verify(&bytes, &key().verifying_key()).unwrap();
        let info = list.info();
        assert_eq!(
            (
                info.generation,
                info.cards,
                info.keypad_users,
                info.policies,
                info.slots
            ),
            (7, 3, 1, 2, 1)
        );
        let p = list
            .policy(list.find_card(&[0x04, 0xA1, 0xB2, 0xC3]).unwrap())
            .unwrap();
        assert_eq!(p.access, AccessType::Unrestricted);
        let p = list
            .policy(
                list.find_card(&[0x04, 0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6])
                    .unwrap(),
            )
            .unwrap();
        assert_eq!((p.access, p.slot_count), (AccessType::Scheduled, 1));
        assert_eq!(list.slots_of(&p).next().unwrap().start_min, 540);
        assert!(list.find_card(&[0x04, 0xA1, 0xB2, 0xC4]).is_none());
        assert!(
            list.find_card(&[0x04, 0xA1, 0xB2]).is_none(),
            "3-byte UIDs do not exist"
        );
        assert!(list.find_card(&[1; 10]).is_some());
        let mut rec = [0u8; KEYPAD_LEN];
        let u = list.find_keypad_user(b"1234", &mut rec).unwrap();
        assert_eq!(
            (u.hotp_counter, u.digits, u.period_s, u.code),
            (5, 6, 30, &b"1234"[..])
        );
        assert_eq!(u.hotp_secret, Some(&b"1234567890"[..]));
        assert!(list.find_keypad_user(b"0123", &mut rec).is_none());
        assert!(list.find_keypad_user(b"12345", &mut rec).is_none());
        // 16 bytes per card record.
        assert_eq!(CARD_LEN, 16);
    }

    /// A door checks a list in steps between other work: every step size gives the one-go
    /// result, hands on every byte once, and keeps verify_strict's refusals.
    #[test]
    fn checked_in_steps_as_in_one_go() {
        let bytes = sample_list();
        let vk = key().verifying_key();
        let src: &[u8] = &bytes;
        for budget in [1, 64, 100, 4096] {
            let mut check = ListCheck::start(&src, &vk).unwrap();
            let mut seen = Vec::new();
            let info = loop {
                if let Some(info) = check
                    .step(&src, budget, |b| seen.extend_from_slice(b))
                    .unwrap()
                {
                    break info;
                }
            };
            assert_eq!(seen, bytes);
            assert_eq!(info, AllowList::verify(&bytes, &vk).unwrap().info());
        }
        // A small-order public key (the identity) verifies nothing.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = VerifyingKey::from_bytes(&identity).unwrap();
        assert_eq!(
            ListCheck::start(&src, &weak).unwrap_err(),
            ListError::BadSignature
        );
        // Two cards swapped: found out of order as they pass, before the signature's end.
        let mut swapped = bytes.clone();
        let (a, b) = (HEADER_LEN, HEADER_LEN + CARD_LEN);
        let first: Vec<u8> = swapped[a..b].to_vec();
        swapped.copy_within(b..b + CARD_LEN, a);
        swapped[b..b + CARD_LEN].copy_from_slice(&first);
        let src: &[u8] = &swapped;
        let mut check = ListCheck::start(&src, &vk).unwrap();
        assert_eq!(
            check.step(&src, 1, |_| {}).unwrap_err(),
            ListError::NotSorted
        );
    }

    /// A lookup reads one record per binary-search step: at most ⌈log2(n + 1)⌉ reads.
    #[test]
    fn a_lookup_reads_one_record_per_step() {
        struct Counted<'a>(&'a [u8], core::cell::Cell<u32>);
        impl ListBytes for Counted<'_> {
            fn len(&self) -> u32 {
                self.0.len() as u32
            }
            fn read(&self, offset: u32, buf: &mut [u8]) -> Result<(), ListError> {
                self.1.set(self.1.get() + 1);
                (&self.0).read(offset, buf)
            }
        }
        let mut b = Builder::new();
        for i in 0..10_000u32 {
            b.card(&CardEntry {
                uid: i.to_be_bytes().to_vec(),
                policy: policy(AccessType::Unrestricted),
                slots: vec![],
            })
            .unwrap();
        }
        let bytes = b.build(1, 0, &key()).unwrap();
        let list = AllowList::open_in(Counted(&bytes, core::cell::Cell::new(0))).unwrap();
        for i in [0u32, 1, 4_999, 9_999, 10_000] {
            list.source().1.set(0);
            let found = list.find_card(&i.to_be_bytes());
            assert_eq!(found.is_some(), i < 10_000);
            assert!(
                list.source().1.get() <= 14,
                "{} reads",
                list.source().1.get()
            );
        }
    }

    #[test]
    fn refusals() {
        let bytes = sample_list();
        let vk = key().verifying_key();
        let other = SigningKey::from_bytes(&[7; 32]).verifying_key();
        assert_eq!(
            AllowList::verify(&bytes, &other).unwrap_err(),
            ListError::BadSignature
        );
        let mut flipped = bytes.clone();
        flipped[HEADER_LEN + 3] ^= 1;
        assert_eq!(
            AllowList::verify(&flipped, &vk).unwrap_err(),
            ListError::BadSignature
        );
        assert_eq!(
            AllowList::verify(&bytes[..bytes.len() - 1], &vk).unwrap_err(),
            ListError::Truncated
        );
        assert_eq!(
            AllowList::verify(&bytes[..10], &vk).unwrap_err(),
            ListError::Truncated
        );
        assert_eq!(
            AllowList::verify(b"{\"entries\": []}", &vk).unwrap_err(),
            ListError::NotAnAllowList
        );
        let mut v2 = bytes.clone();
        v2[4] = 2;
        assert_eq!(
            AllowList::open(&v2).unwrap_err(),
            ListError::UnsupportedVersion(2)
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(AllowList::open(&longer).unwrap_err(), ListError::BadLayout);
    }

    #[test]
    fn builder_refuses_duplicates_and_bad_entries() {
        let mut b = Builder::new();
        let e = CardEntry {
            uid: vec![1, 2, 3, 4],
            policy: policy(AccessType::Unrestricted),
            slots: vec![],
        };
        b.card(&e).unwrap();
        b.card(&e).unwrap();
        assert_eq!(
            b.build(1, 0, &key()).unwrap_err(),
            BuildError::DuplicateCard(vec![1, 2, 3, 4])
        );
        let mut b = Builder::new();
        assert_eq!(
            b.card(&CardEntry {
                uid: vec![1, 2, 3],
                ..e.clone()
            })
            .unwrap_err(),
            BuildError::BadUid(vec![1, 2, 3])
        );
        let bad_slot = Slot {
            days: 1,
            start_min: 60,
            end_min: 60,
            from: 0,
            until: 0,
        };
        assert_eq!(
            b.card(&CardEntry {
                slots: vec![bad_slot],
                ..e.clone()
            })
            .unwrap_err(),
            BuildError::BadSlot
        );
    }

    #[test]
    fn policies_are_shared() {
        let mut b = Builder::new();
        for i in 0..1000u32 {
            b.card(&CardEntry {
                uid: i.to_be_bytes().to_vec(),
                policy: policy(AccessType::Unrestricted),
                slots: vec![],
            })
            .unwrap();
        }
        let bytes = b.build(1, 0, &key()).unwrap();
        assert_eq!(
            bytes.len(),
            HEADER_LEN + 1000 * CARD_LEN + POLICY_LEN + SIGNATURE_LEN
        );
    }

    proptest! {
        /// Random bytes, and mutations of a good list, never panic the reader.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let vk = key().verifying_key();
            let _ = AllowList::verify(&bytes, &vk);
            if let Ok(list) = AllowList::open(&bytes) {
                let _ = list.find_card(&[1, 2, 3, 4]);
                let _ = list.find_keypad_user(b"1234", &mut [0; KEYPAD_LEN]);
                for i in 0..4 { let _ = list.policy(i); let _ = list.slot(i); }
            }
        }

        #[test]
        fn mutated_lists_never_panic(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>()) {
            let mut bytes = sample_list();
            for (at, v) in edits {
                let i = at.index(bytes.len());
                bytes[i] = v;
            }
            let cut = cut.index(bytes.len() + 1);
            for candidate in [&bytes[..], &bytes[..cut]] {
                let _ = AllowList::verify(candidate, &key().verifying_key());
                if let Ok(list) = AllowList::open(candidate) {
                    let _ = AllowList::verify_in(candidate, &SigningKey::from_bytes(&[9; 32]).verifying_key());
                    for uid in [&[0x04, 0xA1, 0xB2, 0xC3][..], &[1; 10][..]] {
                        if let Some(p) = list.find_card(uid).and_then(|i| list.policy(i)) {
                            let _ = list.slots_of(&p).count();
                        }
                    }
                    let _ = list.find_keypad_user(b"1234", &mut [0; KEYPAD_LEN]);
                }
            }
        }
    }
}
