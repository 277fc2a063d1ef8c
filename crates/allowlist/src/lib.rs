//! The allow-list compiler: the JSON source (design brief, "Allow-list source") to the signed
//! binary the device reads in place, plus key files and a readable summary.
//!
//! Source errors name the entry (0-based index) and the field, so an admin can fix them.

pub mod schedule;

use std::fmt::Write as _;
use std::path::Path;

use chronolock_core::allowlist::{
    AccessType, AllowList, BuildError, Builder, CardEntry, CardMasterKeys, KeypadEntry, Policy,
    Slot, CARD_LEN, MAX_LIST_SECRET_LEN,
};
use ed25519_dalek::SigningKey;
use serde::Deserialize;
use serde_json::Value;

/// Why a source does not compile, or a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The source is not JSON of the expected shape.
    #[error("the allow-list source is not valid: {0}")]
    Json(String),
    /// One entry is wrong.
    #[error("entry {index}: {message}")]
    Entry {
        /// 0-based index in `entries`.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// The list as a whole is wrong (duplicates, size).
    #[error("{0}")]
    List(String),
    /// A key file.
    #[error("key file {path}: {message}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceFile {
    entries: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntrySource {
    card: Option<String>,
    /// A secure card (NTAG 424 DNA, DESFire EV2/EV3): 7-byte UID.
    secure_card: Option<String>,
    keypad: Option<String>,
    access: String,
    #[serde(default)]
    valid_from: Option<Value>,
    #[serde(default)]
    valid_until: Option<Value>,
    #[serde(default)]
    slots: Vec<SlotSource>,
    totp: Option<String>,
    hotp: Option<String>,
    #[serde(default)]
    hotp_counter: u64,
    digits: Option<u8>,
    period: Option<u16>,
    /// Free text (a person's name), ignored by the device.
    #[serde(default)]
    #[allow(dead_code)]
    comment: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotSource {
    days: Vec<String>,
    start: String,
    end: String,
    #[serde(default)]
    from: Option<Value>,
    #[serde(default)]
    until: Option<Value>,
}

/// One parsed source entry, ready for the builder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A card.
    Card(CardEntry),
    /// A secure card: only a card proving its diversified key may use the entry.
    SecureCard(CardEntry),
    /// A keypad user.
    Keypad(KeypadEntry),
}

/// Parses the JSON source into entries, checking every field.
pub fn parse_source(text: &str) -> Result<Vec<Entry>, CompileError> {
    let file: SourceFile =
        serde_json::from_str(text).map_err(|e| CompileError::Json(e.to_string()))?;
    file.entries
        .into_iter()
        .enumerate()
        .map(|(index, v)| parse_entry(v).map_err(|message| CompileError::Entry { index, message }))
        .collect()
}

/// Parses a JSON value holding a source (the scenario's inline `allowlist`).
pub fn parse_source_value(value: &Value) -> Result<Vec<Entry>, CompileError> {
    parse_source(&value.to_string())
}

fn parse_entry(v: Value) -> Result<Entry, String> {
    let e: EntrySource = serde_json::from_value(v).map_err(|e| e.to_string())?;
    let access = AccessType::from_name(&e.access).ok_or_else(|| {
        format!(
            "access `{}` is not UNRESTRICTED, EMERGENCY, CONDITIONAL or SCHEDULED",
            e.access
        )
    })?;
    let valid_from = time_field(e.valid_from.as_ref(), "valid_from")?;
    let valid_until = time_field(e.valid_until.as_ref(), "valid_until")?;
    if valid_from != 0 && valid_until != 0 && valid_until < valid_from {
        return Err("valid_until is before valid_from".into());
    }
    if access != AccessType::Scheduled && !e.slots.is_empty() {
        return Err(format!(
            "slots apply to SCHEDULED entries only, not {}",
            access.as_str()
        ));
    }
    let slots = e
        .slots
        .iter()
        .enumerate()
        .map(|(i, s)| parse_slot(s).map_err(|m| format!("slots[{i}]: {m}")))
        .collect::<Result<Vec<_>, _>>()?;
    let policy = Policy::new(access, valid_from, valid_until);
    let (card, secure) = match (e.card, e.secure_card) {
        (Some(_), Some(_)) => {
            return Err("an entry is either a card or a secure_card, not both".into())
        }
        (Some(c), None) => (Some(c), false),
        (None, Some(c)) => (Some(c), true),
        (None, None) => (None, false),
    };
    let kind = if secure { "secure_card" } else { "card" };
    match (card, e.keypad) {
        (Some(card), None) => {
            if e.totp.is_some() || e.hotp.is_some() || e.digits.is_some() || e.period.is_some() {
                return Err("totp, hotp, digits and period belong to keypad entries".into());
            }
            let uid = data_encoding::HEXUPPER_PERMISSIVE
                .decode(card.as_bytes())
                .map_err(|_| format!("{kind} `{card}` is not hex"))?;
            if secure && uid.len() != chronolock_core::card::UID_LEN {
                return Err(format!(
                    "secure_card `{card}` has {} bytes; secure cards (NTAG 424 DNA, DESFire) have 7-byte UIDs",
                    uid.len()
                ));
            }
            if ![4, 7, 10].contains(&uid.len()) {
                return Err(format!(
                    "card `{card}` has {} bytes; card UIDs have 4, 7 or 10",
                    uid.len()
                ));
            }
            let entry = CardEntry { uid, policy, slots };
            Ok(if secure {
                Entry::SecureCard(entry)
            } else {
                Entry::Card(entry)
            })
        }
        (None, Some(code)) => {
            if code.is_empty() || code.len() > 8 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("keypad user code `{code}` is not 1 to 8 digits"));
            }
            let totp = e
                .totp
                .as_deref()
                .map(|s| decode_secret(s, "totp"))
                .transpose()?;
            let hotp = e
                .hotp
                .as_deref()
                .map(|s| decode_secret(s, "hotp"))
                .transpose()?;
            if totp.is_none() && hotp.is_none() {
                return Err("a keypad entry needs a totp or hotp secret".into());
            }
            let digits = e.digits.unwrap_or(6);
            if !(6..=8).contains(&digits) {
                return Err(format!("digits {digits} is not 6, 7 or 8"));
            }
            let period_s = e.period.unwrap_or(30);
            if period_s == 0 {
                return Err("period must be at least 1 second".into());
            }
            Ok(Entry::Keypad(KeypadEntry {
                code: code.into_bytes(),
                totp_secret: totp,
                hotp_secret: hotp,
                hotp_counter: e.hotp_counter,
                digits,
                period_s,
                policy,
                slots,
            }))
        }
        (Some(_), Some(_)) => Err("an entry is either a card or a keypad user, not both".into()),
        (None, None) => Err(
            "an entry needs `card` (hex UID), `secure_card` (7-byte hex UID) or `keypad` (user code)"
                .into(),
        ),
    }
}

/// A base32 secret (RFC 4648; case, spaces and padding forgiven), as authenticator apps use;
/// the error names `field`.
pub fn decode_secret(text: &str, field: &str) -> Result<Vec<u8>, String> {
    let mut clean: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .collect::<String>()
        .to_uppercase();
    while clean.len() % 8 != 0 {
        clean.push('=');
    }
    let bytes = data_encoding::BASE32
        .decode(clean.as_bytes())
        .map_err(|_| format!("{field} is not a base32 secret"))?;
    if bytes.is_empty() || bytes.len() > MAX_LIST_SECRET_LEN {
        return Err(format!(
            "{field} secret is {} bytes; 1 to {MAX_LIST_SECRET_LEN} are allowed",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// RFC 3339 text or Unix seconds; absent, null or 0 mean unbounded (0).
fn time_field(v: Option<&Value>, field: &str) -> Result<i64, String> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n.as_i64().filter(|s| *s >= 0).ok_or_else(|| {
            format!("{field} {n} is not a non-negative whole number of Unix seconds")
        }),
        Some(Value::String(s)) => s
            .parse::<jiff::Timestamp>()
            .map(|t| t.as_second())
            .map_err(|e| format!("{field} `{s}` is not an RFC 3339 time: {e}")),
        Some(other) => Err(format!(
            "{field} must be RFC 3339 text or Unix seconds, got {other}"
        )),
    }
}

fn minute_of_day(text: &str, field: &str, allow_24: bool) -> Result<u16, String> {
    let bad = || format!("{field} `{text}` is not HH:MM");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if (h, m) == (24, 0) && allow_24 {
        return Ok(1440);
    }
    if h > 23 || m > 59 {
        return Err(format!(
            "{field} `{text}` is not a time of day (00:00–23:59{})",
            if allow_24 { ", or 24:00" } else { "" }
        ));
    }
    Ok(h * 60 + m)
}

fn parse_slot(s: &SlotSource) -> Result<Slot, String> {
    let mut days = 0u8;
    for d in &s.days {
        let bit = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .iter()
            .position(|n| n.eq_ignore_ascii_case(d))
            .ok_or_else(|| format!("day `{d}` is not one of mon, tue, wed, thu, fri, sat, sun"))?;
        days |= 1 << bit;
    }
    if days == 0 {
        return Err("a slot needs at least one day".into());
    }
    let start_min = minute_of_day(&s.start, "start", false)?;
    let end_min = minute_of_day(&s.end, "end", true)?;
    if start_min == end_min {
        return Err("start and end are equal: the slot would be empty".into());
    }
    let from = time_field(s.from.as_ref(), "from")?;
    let until = time_field(s.until.as_ref(), "until")?;
    if from != 0 && until != 0 && until <= from {
        return Err("until is not after from".into());
    }
    Ok(Slot {
        days,
        start_min,
        end_min,
        from,
        until,
    })
}

/// Compiles entries into a signed list.
pub fn compile(
    entries: &[Entry],
    generation: u64,
    created_unix: i64,
    key: &SigningKey,
) -> Result<Vec<u8>, CompileError> {
    compile_sealed(entries, generation, created_unix, key, None)
}

/// Like [`compile`], with the keypad secrets sealed to one device when `list_key` is given
/// (`chronolock_core::protocol::list_key` of its device key).
pub fn compile_sealed(
    entries: &[Entry],
    generation: u64,
    created_unix: i64,
    key: &SigningKey,
    list_key: Option<[u8; 32]>,
) -> Result<Vec<u8>, CompileError> {
    compile_for_door(entries, generation, created_unix, key, list_key, None)
}

/// Like [`compile_sealed`], carrying the site's card master keys too (sealed with the
/// door's list key, which is then required).
pub fn compile_for_door(
    entries: &[Entry],
    generation: u64,
    created_unix: i64,
    key: &SigningKey,
    list_key: Option<[u8; 32]>,
    card_keys: Option<CardMasterKeys>,
) -> Result<Vec<u8>, CompileError> {
    let mut b = Builder::new();
    if let Some(list_key) = list_key {
        b.seal_secrets(list_key);
    }
    if let Some(keys) = card_keys {
        b.card_master_keys(keys);
    }
    for (index, e) in entries.iter().enumerate() {
        let r = match e {
            Entry::Card(c) => b.card(c).map(|_| ()),
            Entry::SecureCard(c) => b.secure_card(c).map(|_| ()),
            Entry::Keypad(k) => b.keypad_user(k).map(|_| ()),
        };
        r.map_err(|e| CompileError::Entry {
            index,
            message: build_error(&e),
        })?;
    }
    b.build(generation, created_unix, key)
        .map_err(|e| CompileError::List(build_error(&e)))
}

fn build_error(e: &BuildError) -> String {
    match e {
        BuildError::DuplicateCard(uid) => {
            format!("card {} appears twice", data_encoding::HEXUPPER.encode(uid))
        }
        BuildError::DuplicateUserCode(code) => format!(
            "keypad user code {} appears twice",
            String::from_utf8_lossy(code)
        ),
        other => format!("{other:?}"),
    }
}

/// Writes a new Ed25519 key pair: the private key (hex) to `path`, the public key (hex) to
/// `path.pub`. Refuses to overwrite an existing private key.
pub fn write_new_keypair(path: &Path) -> Result<VerifyingKey, CompileError> {
    let err = |message: String| CompileError::Key {
        path: path.display().to_string(),
        message,
    };
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| err(format!("cannot create it: {e}")))?;
    std::io::Write::write_all(
        &mut file,
        format!("{}\n", data_encoding::HEXLOWER.encode(&key.to_bytes())).as_bytes(),
    )
    .map_err(|e| err(e.to_string()))?;
    let public = key.verifying_key();
    let pub_path = public_key_path(path);
    std::fs::write(
        &pub_path,
        format!("{}\n", data_encoding::HEXLOWER.encode(public.as_bytes())),
    )
    .map_err(|e| CompileError::Key {
        path: pub_path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(public)
}

/// `PATH.pub` for a private key at `PATH`.
pub fn public_key_path(path: &Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    p.into()
}

fn read_hex32(path: &Path) -> Result<[u8; 32], CompileError> {
    let err = |message: String| CompileError::Key {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.trim().as_bytes())
        .map_err(|_| err("is not a hex key written by `chronolock keygen`".into()))?;
    bytes
        .try_into()
        .map_err(|_| err("does not hold a 32-byte key".into()))
}

/// Reads a private key written by [`write_new_keypair`].
pub fn read_signing_key(path: &Path) -> Result<SigningKey, CompileError> {
    Ok(SigningKey::from_bytes(&read_hex32(path)?))
}

/// Reads a public key written by [`write_new_keypair`].
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey, CompileError> {
    VerifyingKey::from_bytes(&read_hex32(path)?).map_err(|_| CompileError::Key {
        path: path.display().to_string(),
        message: "is not a valid Ed25519 public key".into(),
    })
}

pub use ed25519_dalek::VerifyingKey;

/// Whether a compiled list's signature and records hold against `key`.
pub fn verify(bytes: &[u8], key: &VerifyingKey) -> bool {
    AllowList::verify(bytes, key).is_ok()
}

/// A readable summary of a compiled list, and whether its signature holds against `key`.
pub fn inspect(
    bytes: &[u8],
    key: Option<&VerifyingKey>,
) -> Result<String, chronolock_core::allowlist::ListError> {
    let list = AllowList::open(bytes)?;
    let info = list.info();
    let mut out = String::new();
    let created = jiff::Timestamp::from_second(info.created_unix)
        .map_or_else(|_| info.created_unix.to_string(), |t| t.to_string());
    let _ = writeln!(
        out,
        "allow-list v{}, generation {}, created {created}",
        chronolock_core::allowlist::VERSION,
        info.generation
    );
    let _ = writeln!(
        out,
        "{} bytes: {} cards, {} keypad users, {} policies, {} slots",
        bytes.len(),
        info.cards,
        info.keypad_users,
        info.policies,
        info.slots
    );
    if info.cards > 0 {
        let _ = writeln!(
            out,
            "{CARD_LEN} bytes per card record; {:.1} bytes per card credential over the whole file",
            bytes.len() as f64 / f64::from(info.cards)
        );
    }
    let _ = writeln!(
        out,
        "signed by key {}…",
        data_encoding::HEXLOWER.encode(&info.key_id)
    );
    match key {
        Some(k) => match AllowList::verify(bytes, k) {
            Ok(_) => {
                let _ = writeln!(out, "signature: valid");
            }
            Err(e) => {
                let _ = writeln!(out, "signature: INVALID ({})", e.as_str());
            }
        },
        None => {
            let _ = writeln!(out, "signature: not checked (give --pub KEY.pub)");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"entries": [
      {"card": "04A1B2C3", "access": "UNRESTRICTED"},
      {"card": "04A1B2C3D4E5F6", "access": "SCHEDULED",
       "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2026-12-31T23:59:59Z",
       "slots": [{"days": ["tue"], "start": "09:00", "end": "18:00"}]},
      {"keypad": "1234", "totp": "JBSWY3DPEHPK3PXP", "hotp": "GEZDGNBVGY3TQOJQ", "hotp_counter": 0,
       "access": "UNRESTRICTED"}
    ]}"#;

    #[test]
    fn the_design_example_compiles_and_verifies() {
        let entries = parse_source(EXAMPLE).unwrap();
        let key = SigningKey::from_bytes(&[9; 32]);
        let bytes = compile(&entries, 3, 1_795_510_740, &key).unwrap();
        let list = AllowList::verify(&bytes, &key.verifying_key()).unwrap();
        assert_eq!(list.info().cards, 2);
        let mut rec = [0; chronolock_core::allowlist::KEYPAD_LEN];
        let user = list.find_keypad_user(b"1234", &mut rec).unwrap();
        assert_eq!(user.totp_secret, Some(&b"Hello!\xde\xad\xbe\xef"[..]));
        let summary = inspect(&bytes, Some(&key.verifying_key())).unwrap();
        assert!(
            summary.contains("generation 3") && summary.contains("signature: valid"),
            "{summary}"
        );
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert!(inspect(&bytes, Some(&other)).unwrap().contains("INVALID"));
    }

    #[test]
    fn errors_name_entry_and_field() {
        let cases = [
            (
                r#"{"entries": [{"card": "04A1B2C3", "access": "SOMETIMES"}]}"#,
                "entry 0",
                "SOMETIMES",
            ),
            (
                r#"{"entries": [{"card": "04A1", "access": "UNRESTRICTED"}]}"#,
                "entry 0",
                "4, 7 or 10",
            ),
            (
                r#"{"entries": [{"access": "UNRESTRICTED"}, {"card": "XYZ", "access": "UNRESTRICTED"}]}"#,
                "entry 0",
                "needs `card`",
            ),
            (
                r#"{"entries": [{"card": "04A1B2C3", "access": "SCHEDULED", "slots": [{"days": ["tue"], "start": "25:00", "end": "18:00"}]}]}"#,
                "slots[0]",
                "start",
            ),
            (
                r#"{"entries": [{"card": "04A1B2C3", "access": "SCHEDULED", "slots": [{"days": ["funday"], "start": "09:00", "end": "18:00"}]}]}"#,
                "slots[0]",
                "funday",
            ),
            (
                r#"{"entries": [{"card": "04A1B2C3", "access": "SCHEDULED", "valid_from": "tomorrow"}]}"#,
                "entry 0",
                "valid_from",
            ),
            (
                r#"{"entries": [{"keypad": "12a4", "totp": "JBSWY3DPEHPK3PXP", "access": "UNRESTRICTED"}]}"#,
                "entry 0",
                "1 to 8 digits",
            ),
            (
                r#"{"entries": [{"keypad": "1234", "totp": "not base32!", "access": "UNRESTRICTED"}]}"#,
                "entry 0",
                "base32",
            ),
            (
                r#"{"entries": [{"keypad": "1234", "access": "UNRESTRICTED"}]}"#,
                "entry 0",
                "totp or hotp",
            ),
            (
                r#"{"entries": [{"card": "04A1B2C3", "access": "UNRESTRICTED", "colour": "red"}]}"#,
                "entry 0",
                "colour",
            ),
            (
                r#"{"entries": [{"card": "04A1B2C3", "access": "UNRESTRICTED", "slots": [{"days": ["mon"], "start": "09:00", "end": "10:00"}]}]}"#,
                "entry 0",
                "SCHEDULED entries only",
            ),
            (r#"{"people": []}"#, "not valid", "people"),
        ];
        for (src, where_, what) in cases {
            let e = parse_source(src).unwrap_err().to_string();
            assert!(e.contains(where_) && e.contains(what), "{src}: {e}");
        }
        let dup = parse_source(r#"{"entries": [{"card": "04A1B2C3", "access": "UNRESTRICTED"}, {"card": "04a1b2c3", "access": "EMERGENCY"}]}"#).unwrap();
        let e = compile(&dup, 1, 0, &SigningKey::from_bytes(&[1; 32]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("04A1B2C3 appears twice"), "{e}");
    }

    #[test]
    fn key_files_round_trip() {
        let dir = std::env::temp_dir().join(format!("chronolock-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("site.key");
        let _ = std::fs::remove_file(&path);
        let public = write_new_keypair(&path).unwrap();
        assert!(
            write_new_keypair(&path).is_err(),
            "never overwrites a private key"
        );
        let private = read_signing_key(&path).unwrap();
        assert_eq!(private.verifying_key(), public);
        assert_eq!(read_verifying_key(&public_key_path(&path)).unwrap(), public);
        std::fs::write(dir.join("bad.key"), "hello").unwrap();
        assert!(read_signing_key(&dir.join("bad.key")).is_err());
    }
}
