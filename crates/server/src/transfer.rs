//! Import, export, backup and restore.
//!
//! **Import** reads people from an esp-rfid user backup (`esp-rfid-userbackup`), from a CSV
//! file with a header, or from chronolock's own JSON export ([`EXPORT_FORMAT`]). It runs in one
//! transaction: an error names the row and the field and nothing is stored. A person is found
//! again by member number, else by one of their cards, else by name, so importing the same file
//! twice changes nothing. Import adds and updates, never removes: cards, group memberships and
//! rules not in the file stay. [`import`] with `commit = false` is the preview: the same work,
//! rolled back.
//!
//! **Export** writes the site's people (all fields, cards, groups and their own rules) as CSV,
//! or as JSON with doors, schedules and groups' rules too. Neither holds a secret: keypad codes
//! are listed in the JSON without their secrets, and import skips them.
//!
//! **Backup** is a logical snapshot of every table (site signing key, doors' device keys,
//! admins, settings, events…) as one JSON document ([`BACKUP_FORMAT`]), read in one
//! transaction so it is consistent while the server runs; both databases read and write it, so
//! a SQLite backup restores onto PostgreSQL. **Restore** refuses a database that holds data
//! unless forced, and advances PostgreSQL's sequences past the restored ids. Login sessions are
//! not kept: admins log in again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chronolock_core::allowlist::AccessType;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;

use crate::db::{Backend, Db};
use crate::directory::{PersonDetails, Site};
use crate::model::{self, ModelError};
use crate::AppState;

/// The `format` of chronolock's JSON export.
pub const EXPORT_FORMAT: &str = "chronolock-export";
/// The `format` of a backup.
pub const BACKUP_FORMAT: &str = "chronolock-backup";
/// The group esp-rfid users with access (`acctype` 1 or 99) join: it gets an UNRESTRICTED rule
/// at every door of the site at import time.
pub const ESP_RFID_GROUP: &str = "esp-rfid: always";
/// The CSV columns [`export_csv`] writes, in order. Import needs `name`; the others are
/// optional, and a missing column leaves that field of existing people as it is.
pub const CSV_COLUMNS: [&str; 8] = [
    "name",
    "email",
    "member_number",
    "note",
    "expiry",
    "cards",
    "groups",
    "access",
];

/// Why an import, export, backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A row of the input is wrong; nothing was imported.
    #[error("{at}, {field}: {message}")]
    Row {
        /// Where: `row 3` (CSV rows count the header as row 1; JSON entries count from 1), or
        /// the section of the JSON document.
        at: String,
        /// The column or JSON field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The input is not a file this reads (malformed JSON or CSV, unknown format, a backup of
    /// a newer server…).
    #[error("{0}")]
    Format(String),
    /// The target of a restore holds data.
    #[error("the database is not empty ({0}); restore only into an empty database, or force it")]
    NotEmpty(String),
    /// The model refused something.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn row_error(row: usize, field: &str, message: impl Into<String>) -> TransferError {
    TransferError::Row {
        at: format!("row {row}"),
        field: field.to_string(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// What an import holds

/// A rule in an import or export: the door and schedule by name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RuleRecord {
    /// The door's name.
    pub door: String,
    /// `UNRESTRICTED`, `SCHEDULED`, `EMERGENCY` or `CONDITIONAL`.
    pub access: String,
    /// The schedule's name (SCHEDULED only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Unix seconds, 0 for unbounded.
    #[serde(default)]
    pub valid_from: i64,
    /// Unix seconds (inclusive), 0 for unbounded.
    #[serde(default)]
    pub valid_until: i64,
}

/// A keypad code as exported: the code and which secrets it has, never the secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeypadRecord {
    /// The user code.
    pub code: String,
    /// Whether a TOTP secret is enrolled.
    pub totp: bool,
    /// Whether HOTP backup codes were issued.
    pub hotp: bool,
}

/// A person in an import or export.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonRecord {
    /// Name.
    pub name: String,
    /// E-mail.
    #[serde(default)]
    pub email: Option<String>,
    /// Member number.
    #[serde(default)]
    pub member_number: Option<String>,
    /// Note.
    #[serde(default)]
    pub note: Option<String>,
    /// Last day of access, `YYYY-MM-DD` in the site's zone.
    #[serde(default)]
    pub expiry: Option<String>,
    /// Card UIDs, upper-case hex.
    #[serde(default)]
    pub cards: Vec<String>,
    /// Groups by name (created if missing).
    #[serde(default)]
    pub groups: Vec<String>,
    /// The person's own rules.
    #[serde(default)]
    pub rules: Vec<RuleRecord>,
    /// Keypad codes (export only; import skips them: their secrets are in backups only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keypad_codes: Vec<KeypadRecord>,
}

/// A schedule slot: days bit 0 Monday … bit 6 Sunday, minutes of the local day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    /// Days, bit 0 Monday … bit 6 Sunday.
    pub days: u8,
    /// Start, minutes after local midnight.
    pub start_min: u16,
    /// End, minutes after local midnight (up to 1440; before the start runs into the next day).
    pub end_min: u16,
}

/// A weekly schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// Name.
    pub name: String,
    /// Its slots.
    pub slots: Vec<SlotRecord>,
}

/// A group and its rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Name.
    pub name: String,
    /// The group's rules.
    #[serde(default)]
    pub rules: Vec<RuleRecord>,
}

/// The site in an export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRecord {
    /// Name.
    pub name: String,
    /// IANA time zone.
    pub timezone: String,
}

/// chronolock's JSON export, which import reads back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportDoc {
    /// Always [`EXPORT_FORMAT`].
    pub format: String,
    /// 1.
    pub version: u32,
    /// The site (import does not change an existing site).
    #[serde(default)]
    pub site: Option<SiteRecord>,
    /// Door names (created if missing).
    #[serde(default)]
    pub doors: Vec<String>,
    /// Schedules (created if missing; an existing schedule of the same name is kept as it is).
    #[serde(default)]
    pub schedules: Vec<ScheduleRecord>,
    /// Groups and their rules.
    #[serde(default)]
    pub groups: Vec<GroupRecord>,
    /// People.
    #[serde(default)]
    pub people: Vec<PersonRecord>,
}

/// Which fields of existing people an import sets (a CSV without the column leaves it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Present {
    email: bool,
    member_number: bool,
    note: bool,
    expiry: bool,
}

impl Present {
    const ALL: Present = Present {
        email: true,
        member_number: true,
        note: true,
        expiry: true,
    };
}

/// What a file holds, ready to import.
#[derive(Clone, Debug)]
pub struct ImportDoc {
    /// What the file was: `esp-rfid`, `csv` or `chronolock JSON`.
    pub kind: &'static str,
    doc: ExportDoc,
    /// The row number of each person, for errors.
    rows: Vec<usize>,
    present: Present,
    /// esp-rfid: give [`ESP_RFID_GROUP`] an UNRESTRICTED rule at every door.
    every_door_group: Option<String>,
    /// Things read and not imported, for the summary.
    notes: Vec<String>,
}

/// Reads a file to import: JSON (an esp-rfid user backup or chronolock's export) or CSV with a
/// header. `zone` is the site's (esp-rfid's `validuntil` is a moment; people expire on a local
/// day).
pub fn parse(text: &str, zone: &TimeZone) -> Result<ImportDoc, TransferError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().starts_with('{') {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| TransferError::Format(format!("not valid JSON: {e}")))?;
        if value.get("type").and_then(Value::as_str) == Some("esp-rfid-userbackup") {
            return parse_esp_rfid(&value, zone);
        }
        if value.get("format").and_then(Value::as_str) == Some(EXPORT_FORMAT) {
            return parse_export(value);
        }
        if value.get("format").and_then(Value::as_str) == Some(BACKUP_FORMAT) {
            return Err(TransferError::Format(
                "this is a backup: restore it with `chronolock restore`".into(),
            ));
        }
        return Err(TransferError::Format(
            "unknown JSON: expected an esp-rfid user backup (\"type\": \"esp-rfid-userbackup\") \
             or a chronolock export (\"format\": \"chronolock-export\")"
                .into(),
        ));
    }
    parse_csv(text, zone)
}

fn parse_export(value: Value) -> Result<ImportDoc, TransferError> {
    let version = value.get("version").and_then(Value::as_u64);
    if version != Some(1) {
        return Err(TransferError::Format(format!(
            "chronolock export version {} is not one this server reads (1)",
            version.map_or("?".to_string(), |v| v.to_string())
        )));
    }
    // Each person on its own, so an error names its entry.
    let people = match value.get("people") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list.clone(),
        Some(_) => return Err(TransferError::Format("`people` is not a list".into())),
    };
    let mut shell = value;
    if let Some(o) = shell.as_object_mut() {
        o.remove("people");
    }
    let mut doc: ExportDoc = serde_json::from_value(shell)
        .map_err(|e| TransferError::Format(format!("not a chronolock export: {e}")))?;
    let mut rows = Vec::new();
    for (i, p) in people.into_iter().enumerate() {
        let mut person: PersonRecord =
            serde_json::from_value(p).map_err(|e| row_error(i + 1, "people", e.to_string()))?;
        let mut cards = Vec::new();
        for uid in &person.cards {
            cards.push(card_uid(uid).map_err(|m| row_error(i + 1, "cards", m))?);
        }
        person.cards = cards;
        person.keypad_codes.clear();
        doc.people.push(person);
        rows.push(i + 1);
    }
    Ok(ImportDoc {
        kind: "chronolock JSON",
        doc,
        rows,
        present: Present::ALL,
        every_door_group: None,
        notes: Vec::new(),
    })
}

/// A card UID as stored: upper-case hex of 4, 7 or 10 bytes; readers' spaces, colons and
/// dashes between bytes are dropped.
pub fn card_uid(text: &str) -> Result<String, String> {
    let uid: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':' && *c != '-')
        .collect::<String>()
        .to_uppercase();
    let bytes = data_encoding::HEXUPPER
        .decode(uid.as_bytes())
        .map_err(|_| format!("`{text}` is not a card UID in hex digits, e.g. 04A1B2C3"))?;
    if ![4, 7, 10].contains(&bytes.len()) {
        return Err(format!(
            "`{text}` has {} bytes; card UIDs have 4, 7 or 10",
            bytes.len()
        ));
    }
    Ok(uid)
}

fn parse_esp_rfid(value: &Value, zone: &TimeZone) -> Result<ImportDoc, TransferError> {
    let list = value
        .get("list")
        .and_then(Value::as_array)
        .ok_or_else(|| TransferError::Format("esp-rfid backup without a `list`".into()))?;
    let mut people = Vec::with_capacity(list.len());
    let mut rows = Vec::with_capacity(list.len());
    let mut pins = 0;
    for (i, entry) in list.iter().enumerate() {
        let row = i + 1;
        let text = |field: &str| -> Result<Option<String>, TransferError> {
            match entry.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
                Some(Value::Number(n)) => Ok(Some(n.to_string())),
                Some(_) => Err(row_error(row, field, "not text")),
            }
        };
        let number = |field: &str| -> Result<Option<i64>, TransferError> {
            match entry.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => n
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| row_error(row, field, format!("`{n}` is not a whole number"))),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(Value::String(s)) => s
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| row_error(row, field, format!("`{s}` is not a whole number"))),
                Some(_) => Err(row_error(row, field, "not a number")),
            }
        };
        if !entry.is_object() {
            return Err(row_error(row, "list", "not an object"));
        }
        let uid = text("uid")?.ok_or_else(|| row_error(row, "uid", "missing"))?;
        let uid = card_uid(&uid).map_err(|m| row_error(row, "uid", m))?;
        let name = text("username")?.unwrap_or_else(|| format!("Card {uid}"));
        let acctype = number("acctype")?.unwrap_or(0);
        let (always, note) = match acctype {
            0 => (false, None),
            1 => (true, None),
            99 => (true, Some("esp-rfid admin".to_string())),
            other => {
                return Err(row_error(
                    row,
                    "acctype",
                    format!(
                        "{other} is not an esp-rfid access type (0 disabled, 1 always, 99 admin)"
                    ),
                ))
            }
        };
        if text("pincode")?.is_some() {
            pins += 1;
        }
        let expiry = match number("validuntil")? {
            None | Some(0) => None,
            Some(t) => Some(esp_rfid_day(t, zone).map_err(|m| row_error(row, "validuntil", m))?),
        };
        number("validsince")?;
        people.push(PersonRecord {
            name,
            note,
            expiry: expiry.map(|d| d.to_string()),
            cards: vec![uid],
            groups: if always {
                vec![ESP_RFID_GROUP.to_string()]
            } else {
                Vec::new()
            },
            ..PersonRecord::default()
        });
        rows.push(row);
    }
    let mut notes = Vec::new();
    if pins > 0 {
        notes.push(format!(
            "{pins} esp-rfid PIN code(s) not imported: chronolock keypad codes are one-time \
             codes (TOTP or HOTP); enrol them on each person's page"
        ));
    }
    Ok(ImportDoc {
        kind: "esp-rfid",
        doc: ExportDoc {
            format: EXPORT_FORMAT.into(),
            version: 1,
            site: None,
            doors: Vec::new(),
            schedules: Vec::new(),
            groups: vec![GroupRecord {
                name: ESP_RFID_GROUP.into(),
                rules: Vec::new(),
            }],
            people,
        },
        rows,
        // esp-rfid knows no e-mail or member number; a note is set only for its admins.
        present: Present {
            email: false,
            member_number: false,
            note: false,
            expiry: true,
        },
        every_door_group: Some(ESP_RFID_GROUP.into()),
        notes,
    })
}

/// esp-rfid's `validuntil` (Unix seconds) as the last day of access. Its web page stores a
/// picked date as that day's 00:00 UTC, which reads as that date; any other moment is taken
/// as the local date in the site's zone.
fn esp_rfid_day(t: i64, zone: &TimeZone) -> Result<jiff::civil::Date, String> {
    let ts = jiff::Timestamp::from_second(t)
        .ok()
        .filter(|_| t > 0)
        .ok_or_else(|| format!("{t} is not a Unix time after 1970"))?;
    if t % 86_400 == 0 {
        Ok(ts.to_zoned(TimeZone::UTC).date())
    } else {
        Ok(ts.to_zoned(zone.clone()).date())
    }
}

// ---------------------------------------------------------------------------------------------
// CSV

/// Splits CSV text (RFC 4180: quoted fields may hold commas, quotes as `""` and line breaks;
/// read by the `csv` crate) into records with the row (line) number each starts on. Blank lines
/// are skipped; rows may have fewer or more fields than the header.
fn csv_records(text: &str) -> Result<Vec<(usize, Vec<String>)>, TransferError> {
    // Quotes come in pairs in RFC 4180 (around a field, and doubled inside one): an odd count
    // is a quoted field that never ends, which the reader would take to the end of the file.
    if text.matches('"').count() % 2 == 1 {
        let last = text.rfind('"').unwrap_or(0);
        let row = text[..last].matches('\n').count() + 1;
        return Err(TransferError::Format(format!(
            "CSV: the quoted field around row {row} never ends"
        )));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let at = e
                .position()
                .map_or(String::new(), |p| format!(" on row {}", p.line()));
            TransferError::Format(format!("CSV{at}: {e}"))
        })?;
        // The row a record starts on, from its byte offset past the line ends before it (the
        // reader's own line count misses blank lines and CRLF ends).
        let mut start = record.position().map_or(0, |p| p.byte() as usize);
        while matches!(text.as_bytes().get(start), Some(b'\r' | b'\n')) {
            start += 1;
        }
        let row = text.get(..start).map_or(0, |t| t.matches('\n').count()) + 1;
        records.push((row, record.iter().map(str::to_string).collect()));
    }
    Ok(records)
}

/// Writes CSV records (RFC 4180, CRLF line ends, fields quoted when they need it).
fn csv_text(records: &[Vec<String>]) -> Result<String, TransferError> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    for record in records {
        writer
            .write_record(record)
            .map_err(|e| TransferError::Format(format!("CSV: {e}")))?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| TransferError::Format(format!("CSV: {e}")))?;
    String::from_utf8(bytes).map_err(|e| TransferError::Format(format!("CSV: {e}")))
}

fn parse_csv(text: &str, zone: &TimeZone) -> Result<ImportDoc, TransferError> {
    let records = csv_records(text)?;
    let Some(((_, header), rest)) = records.split_first() else {
        return Err(TransferError::Format("the file is empty".into()));
    };
    let header: Vec<String> = header.iter().map(|h| h.trim().to_lowercase()).collect();
    let mut columns = HashMap::new();
    for (i, h) in header.iter().enumerate() {
        if !CSV_COLUMNS.contains(&h.as_str()) {
            return Err(TransferError::Format(format!(
                "CSV row 1: unknown column `{h}` (columns: {})",
                CSV_COLUMNS.join(",")
            )));
        }
        if columns.insert(h.clone(), i).is_some() {
            return Err(TransferError::Format(format!(
                "CSV row 1: column `{h}` appears twice"
            )));
        }
    }
    if !columns.contains_key("name") {
        return Err(TransferError::Format(format!(
            "CSV row 1 must be a header with at least a `name` column (columns: {})",
            CSV_COLUMNS.join(",")
        )));
    }
    let present = Present {
        email: columns.contains_key("email"),
        member_number: columns.contains_key("member_number"),
        note: columns.contains_key("note"),
        expiry: columns.contains_key("expiry"),
    };
    let mut people = Vec::new();
    let mut rows = Vec::new();
    for (row, record) in rest {
        let row = *row;
        if record.len() > header.len() {
            return Err(row_error(
                row,
                "columns",
                format!("{} fields; the header has {}", record.len(), header.len()),
            ));
        }
        let get = |name: &str| -> &str {
            columns
                .get(name)
                .and_then(|&i| record.get(i))
                .map_or("", |s| s.as_str())
        };
        let opt = |name: &str| Some(get(name).trim().to_string()).filter(|s| !s.is_empty());
        let mut cards = Vec::new();
        for uid in get("cards")
            .split([' ', ';'])
            .filter(|s| !s.trim().is_empty())
        {
            cards.push(card_uid(uid).map_err(|m| row_error(row, "cards", m))?);
        }
        let groups = get("groups")
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let mut rules = Vec::new();
        for token in get("access")
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            rules.push(parse_access(token, zone).map_err(|m| row_error(row, "access", m))?);
        }
        people.push(PersonRecord {
            name: get("name").trim().to_string(),
            email: opt("email"),
            member_number: opt("member_number"),
            note: opt("note"),
            expiry: opt("expiry"),
            cards,
            groups,
            rules,
            keypad_codes: Vec::new(),
        });
        rows.push(row);
    }
    Ok(ImportDoc {
        kind: "CSV",
        doc: ExportDoc {
            format: EXPORT_FORMAT.into(),
            version: 1,
            site: None,
            doors: Vec::new(),
            schedules: Vec::new(),
            groups: Vec::new(),
            people,
        },
        rows,
        present,
        every_door_group: None,
        notes: Vec::new(),
    })
}

/// One rule of the CSV `access` column: `DOOR=ACCESS`, `DOOR=SCHEDULED/SCHEDULE`, either
/// followed by a space and a local date range `FIRST..LAST` (either side may be empty).
fn parse_access(token: &str, zone: &TimeZone) -> Result<RuleRecord, String> {
    let (door, rest) = token
        .split_once('=')
        .ok_or_else(|| format!("`{token}` is not DOOR=ACCESS"))?;
    let rest = rest.trim();
    let (spec, range) = match rest.rsplit_once(' ') {
        Some((spec, range)) if range.contains("..") => (spec.trim(), Some(range)),
        _ => (rest, None),
    };
    let (access, schedule) = match spec.split_once('/') {
        Some((a, s)) => (a.trim(), Some(s.trim().to_string())),
        None => (spec, None),
    };
    let access = access.to_uppercase();
    if AccessType::from_name(&access).is_none() {
        return Err(format!(
            "`{access}` is not UNRESTRICTED, SCHEDULED, EMERGENCY or CONDITIONAL"
        ));
    }
    let (mut valid_from, mut valid_until) = (0, 0);
    if let Some(range) = range {
        let (first, last) = range.split_once("..").unwrap_or((range, ""));
        let day = |text: &str| -> Result<Option<jiff::civil::Date>, String> {
            let text = text.trim();
            if text.is_empty() {
                return Ok(None);
            }
            text.parse()
                .map(Some)
                .map_err(|_| format!("`{text}` is not a date like 2026-01-31"))
        };
        if let Some(d) = day(first)? {
            valid_from = d
                .to_zoned(zone.clone())
                .and_then(|z| z.start_of_day())
                .map_err(|e| e.to_string())?
                .timestamp()
                .as_second();
        }
        if let Some(d) = day(last)? {
            valid_until = model::end_of_local_day(zone, d).unwrap_or(0);
        }
    }
    Ok(RuleRecord {
        door: door.trim().to_string(),
        access,
        schedule,
        valid_from,
        valid_until,
    })
}

fn format_access(rule: &RuleRecord, zone: &TimeZone) -> String {
    let mut out = format!("{}={}", rule.door, rule.access);
    if let Some(s) = &rule.schedule {
        out.push('/');
        out.push_str(s);
    }
    if rule.valid_from != 0 || rule.valid_until != 0 {
        let day = |t: i64| {
            jiff::Timestamp::from_second(t)
                .map(|t| t.to_zoned(zone.clone()).date().to_string())
                .unwrap_or_default()
        };
        out.push(' ');
        if rule.valid_from != 0 {
            out.push_str(&day(rule.valid_from));
        }
        out.push_str("..");
        if rule.valid_until != 0 {
            out.push_str(&day(rule.valid_until));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Import

/// What an import did (or, previewed, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    /// What the file was.
    pub kind: String,
    /// People added.
    pub added: usize,
    /// People whose name or details changed, or who got cards, groups or rules.
    pub updated: usize,
    /// People the import did not change.
    pub unchanged: usize,
    /// Cards added.
    pub cards: usize,
    /// Rules added.
    pub rules: usize,
    /// Groups created.
    pub groups: usize,
    /// Group memberships added.
    pub memberships: usize,
    /// Doors created (named by rules but missing).
    pub doors: usize,
    /// Schedules created.
    pub schedules: usize,
    /// Names of the people added or changed, with what happens (for the preview; at most 200).
    pub changes: Vec<String>,
    /// Things read and not imported.
    pub notes: Vec<String>,
}

impl std::fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: people added {}, updated {}, unchanged {}; cards added {}; rules added {}; \
             groups created {}; memberships added {}; doors created {}; schedules created {}",
            self.kind,
            self.added,
            self.updated,
            self.unchanged,
            self.cards,
            self.rules,
            self.groups,
            self.memberships,
            self.doors,
            self.schedules
        )?;
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Any>;

/// The existing person an import row names.
#[derive(Clone, Debug)]
struct Existing {
    id: i64,
    name: String,
    details: PersonDetails,
}

/// A rule as stored, for comparing: (door, person, group, access, from, until, schedule).
type RuleKey = (i64, Option<i64>, Option<i64>, String, i64, i64, Option<i64>);

/// Imports `doc` into the site (`commit = false`: checks and counts, stores nothing). One
/// transaction: an error stores nothing. On commit the site's doors are recompiled.
pub async fn import(
    state: &AppState,
    site: &Site,
    doc: &ImportDoc,
    commit: bool,
) -> Result<ImportSummary, TransferError> {
    let mut tx = state.db.pool().begin().await?;
    let summary = import_in(&mut tx, site, doc).await?;
    if commit {
        tx.commit().await?;
        model::site_changed(state, site.id).await?;
    } else {
        tx.rollback().await?;
    }
    Ok(summary)
}

async fn import_in(
    tx: &mut Tx<'_>,
    site: &Site,
    doc: &ImportDoc,
) -> Result<ImportSummary, TransferError> {
    let mut summary = ImportSummary {
        kind: doc.kind.to_string(),
        notes: doc.notes.clone(),
        ..ImportSummary::default()
    };
    let now = crate::now_unix();
    // What the site holds.
    let mut doors: HashMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("SELECT name, id FROM doors WHERE site_id = $1")
            .bind(site.id)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
    let mut schedules: HashMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("SELECT name, id FROM schedules WHERE site_id = $1")
            .bind(site.id)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
    let mut groups: HashMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("SELECT name, id FROM groups WHERE site_id = $1")
            .bind(site.id)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
    type PersonRow = (
        i64,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let people: Vec<PersonRow> = sqlx::query_as(
        "SELECT id, name, email, member_number, note, expires_on FROM people WHERE site_id = $1 ORDER BY id",
    )
    .bind(site.id)
    .fetch_all(&mut **tx)
    .await?;
    let mut by_id: HashMap<i64, Existing> = HashMap::with_capacity(people.len());
    let mut by_number: HashMap<String, i64> = HashMap::new();
    // People of the same name are told apart by the order they were added.
    let mut by_name: HashMap<String, Vec<i64>> = HashMap::new();
    for (id, name, email, member_number, note, expires_on) in people {
        if let Some(n) = &member_number {
            by_number.insert(n.clone(), id);
        }
        by_name.entry(name.clone()).or_default().push(id);
        by_id.insert(
            id,
            Existing {
                id,
                name,
                details: PersonDetails {
                    email,
                    member_number,
                    note,
                    expires_on: expires_on.and_then(|d| d.parse().ok()),
                },
            },
        );
    }
    // Card UIDs are unique across the server.
    let mut card_owner: HashMap<String, (i64, String)> =
        sqlx::query_as::<_, (String, i64, String)>(
            "SELECT c.uid, p.id, p.name FROM cards c JOIN people p ON p.id = c.person_id",
        )
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|(uid, id, name)| (uid, (id, name)))
        .collect();
    let mut memberships: HashSet<(i64, i64)> = sqlx::query_as::<_, (i64, i64)>(
        "SELECT m.group_id, m.person_id FROM group_members m JOIN groups g ON g.id = m.group_id \
         WHERE g.site_id = $1",
    )
    .bind(site.id)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect();
    let mut rules: HashSet<RuleKey> = sqlx::query_as::<_, RuleKey>(
        "SELECT r.door_id, r.person_id, r.group_id, r.access, r.valid_from, r.valid_until, r.schedule_id \
         FROM rules r JOIN doors d ON d.id = r.door_id WHERE d.site_id = $1",
    )
    .bind(site.id)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect();

    // Doors: listed, and named by rules.
    let mut door_names: Vec<(String, String)> = doc
        .doc
        .doors
        .iter()
        .enumerate()
        .map(|(i, d)| (d.clone(), format!("doors entry {}", i + 1)))
        .collect();
    for g in &doc.doc.groups {
        for r in &g.rules {
            door_names.push((r.door.clone(), format!("group {}", g.name)));
        }
    }
    for (p, row) in doc.doc.people.iter().zip(&doc.rows) {
        for r in &p.rules {
            door_names.push((r.door.clone(), format!("row {row}")));
        }
    }
    for (name, at) in door_names {
        let name = model::name_field("door", &name).map_err(|e| TransferError::Row {
            at: at.clone(),
            field: "door".into(),
            message: model_message(e),
        })?;
        if let std::collections::hash_map::Entry::Vacant(slot) = doors.entry(name) {
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO doors (site_id, name, created_at) VALUES ($1, $2, $3) RETURNING id",
            )
            .bind(site.id)
            .bind(slot.key().clone())
            .bind(now)
            .fetch_one(&mut **tx)
            .await?;
            slot.insert(id);
            summary.doors += 1;
        }
    }
    // Schedules: created when missing; an existing one is kept as it is.
    for (i, s) in doc.doc.schedules.iter().enumerate() {
        let at = format!("schedules entry {}", i + 1);
        let err = |field: &str, message: String| TransferError::Row {
            at: at.clone(),
            field: field.into(),
            message,
        };
        let name = model::name_field("name", &s.name).map_err(|e| err("name", model_message(e)))?;
        if schedules.contains_key(&name) {
            continue;
        }
        if s.slots.is_empty() {
            return Err(err("slots", "at least one slot".into()));
        }
        let (id,): (i64,) =
            sqlx::query_as("INSERT INTO schedules (site_id, name) VALUES ($1, $2) RETURNING id")
                .bind(site.id)
                .bind(name.clone())
                .fetch_one(&mut **tx)
                .await?;
        for slot in &s.slots {
            let local = crate::schedule::LocalSlot {
                days: slot.days,
                start_min: slot.start_min,
                end_min: slot.end_min,
            };
            crate::directory::check_slot(&local).map_err(|e| err("slots", model_message(e)))?;
            sqlx::query(
                "INSERT INTO schedule_slots (schedule_id, days, start_min, end_min) VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(i32::from(slot.days))
            .bind(i32::from(slot.start_min))
            .bind(i32::from(slot.end_min))
            .execute(&mut **tx)
            .await?;
        }
        schedules.insert(name, id);
        summary.schedules += 1;
    }
    // Groups: listed, and named by people.
    let mut group_names: Vec<(String, String)> = doc
        .doc
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.name.clone(), format!("groups entry {}", i + 1)))
        .collect();
    for (p, row) in doc.doc.people.iter().zip(&doc.rows) {
        for g in &p.groups {
            group_names.push((g.clone(), format!("row {row}")));
        }
    }
    for (name, at) in group_names {
        let name = model::name_field("groups", &name).map_err(|e| TransferError::Row {
            at,
            field: "groups".into(),
            message: model_message(e),
        })?;
        if let std::collections::hash_map::Entry::Vacant(slot) = groups.entry(name) {
            let (id,): (i64,) =
                sqlx::query_as("INSERT INTO groups (site_id, name) VALUES ($1, $2) RETURNING id")
                    .bind(site.id)
                    .bind(slot.key().clone())
                    .fetch_one(&mut **tx)
                    .await?;
            slot.insert(id);
            summary.groups += 1;
        }
    }
    let resolve = |r: &RuleRecord,
                   subject: (Option<i64>, Option<i64>)|
     -> Result<RuleKey, (&'static str, String)> {
        let door = doors
            .get(r.door.trim())
            .copied()
            .ok_or(("door", format!("no door named `{}`", r.door)))?;
        let access = AccessType::from_name(&r.access.to_uppercase()).ok_or((
            "access",
            format!(
                "`{}` is not UNRESTRICTED, SCHEDULED, EMERGENCY or CONDITIONAL",
                r.access
            ),
        ))?;
        let schedule = match &r.schedule {
            None => None,
            Some(name) => Some(
                schedules
                    .get(name.trim())
                    .copied()
                    .ok_or(("access", format!("no schedule named `{name}`")))?,
            ),
        };
        if schedule.is_some() != (access == AccessType::Scheduled) {
            return Err((
                "access",
                "SCHEDULED rules, and only they, name a schedule (DOOR=SCHEDULED/SCHEDULE)".into(),
            ));
        }
        if r.valid_from < 0
            || r.valid_until < 0
            || (r.valid_until != 0 && r.valid_until < r.valid_from)
        {
            return Err(("access", "the rule ends before it starts".into()));
        }
        Ok((
            door,
            subject.0,
            subject.1,
            access.as_str().to_string(),
            r.valid_from,
            r.valid_until,
            schedule,
        ))
    };
    let mut new_rules: Vec<RuleKey> = Vec::new();
    for g in &doc.doc.groups {
        let Some(&gid) = groups.get(g.name.trim()) else {
            continue;
        };
        for r in &g.rules {
            let key =
                resolve(r, (None, Some(gid))).map_err(|(field, message)| TransferError::Row {
                    at: format!("group {}", g.name),
                    field: field.into(),
                    message,
                })?;
            if rules.insert(key.clone()) {
                new_rules.push(key);
            }
        }
    }
    if let Some(name) = &doc.every_door_group {
        if let Some(&gid) = groups.get(name) {
            let mut ids: Vec<i64> = doors.values().copied().collect();
            ids.sort_unstable();
            for door in ids {
                let key = (
                    door,
                    None,
                    Some(gid),
                    AccessType::Unrestricted.as_str().to_string(),
                    0,
                    0,
                    None,
                );
                if rules.insert(key.clone()) {
                    new_rules.push(key);
                }
            }
            if doors.is_empty() {
                summary.notes.push(format!(
                    "the site has no doors yet: give the group `{name}` an UNRESTRICTED rule at \
                     each door you add"
                ));
            }
        }
    }

    // People.
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for (p, &row) in doc.doc.people.iter().zip(&doc.rows) {
        let name = model::name_field("name", &p.name)
            .map_err(|e| row_error(row, "name", model_message(e)))?;
        let parsed = PersonDetails::parse(
            p.email.as_deref().unwrap_or(""),
            p.member_number.as_deref().unwrap_or(""),
            p.note.as_deref().unwrap_or(""),
            p.expiry.as_deref().unwrap_or(""),
        )
        .map_err(|e| match e {
            ModelError::Invalid { field, message } => row_error(row, field, message),
            other => other.into(),
        })?;
        // Who this is: member number, else a card, else the name.
        let found = match &parsed.member_number {
            Some(n) => by_number.get(n).copied(),
            None => None,
        }
        .or_else(|| {
            p.cards
                .iter()
                .find_map(|uid| card_owner.get(uid).map(|(id, _)| *id))
                .filter(|id| {
                    by_id.get(id).is_some_and(|e| {
                        parsed.member_number.is_none()
                            || e.details.member_number.is_none()
                            || e.details.member_number == parsed.member_number
                    })
                })
        })
        .or_else(|| {
            by_name.get(&name).and_then(|ids| {
                ids.iter().copied().find(|id| {
                    !seen.contains_key(id)
                        && by_id.get(id).is_some_and(|e| {
                            parsed.member_number.is_none() || e.details.member_number.is_none()
                        })
                })
            })
        });
        let mut details = parsed.clone();
        let person_id;
        let mut changes: Vec<String> = Vec::new();
        match found.and_then(|id| by_id.get(&id).cloned()) {
            Some(existing) => {
                if let Some(first) = seen.insert(existing.id, row) {
                    return Err(row_error(
                        row,
                        "name",
                        format!("the same person as row {first} ({})", existing.name),
                    ));
                }
                let old = &existing.details;
                if !doc.present.email {
                    details.email = old.email.clone();
                }
                if !doc.present.member_number {
                    details.member_number = old.member_number.clone();
                }
                if !doc.present.note {
                    // esp-rfid's "admin" note only fills an empty note.
                    details.note = old.note.clone().or(details.note.take());
                }
                if !doc.present.expiry {
                    details.expires_on = old.expires_on;
                }
                if let Some(n) = &details.member_number {
                    if by_number.get(n).is_some_and(|&other| other != existing.id) {
                        return Err(row_error(
                            row,
                            "member_number",
                            format!("member number {n} belongs to someone else"),
                        ));
                    }
                }
                if existing.name != name || *old != details {
                    changes.push("details".into());
                    sqlx::query(
                        "UPDATE people SET name = $1, email = $2, member_number = $3, note = $4, \
                         expires_on = $5 WHERE id = $6",
                    )
                    .bind(name.clone())
                    .bind(details.email.clone())
                    .bind(details.member_number.clone())
                    .bind(details.note.clone())
                    .bind(details.expires_on.map(|d| d.to_string()))
                    .bind(existing.id)
                    .execute(&mut **tx)
                    .await?;
                    if let Some(n) = &old.member_number {
                        by_number.remove(n);
                    }
                }
                person_id = existing.id;
            }
            None => {
                if let Some(n) = &details.member_number {
                    if by_number.contains_key(n) {
                        return Err(row_error(
                            row,
                            "member_number",
                            format!("member number {n} appears twice"),
                        ));
                    }
                }
                let (id,): (i64,) = sqlx::query_as(
                    "INSERT INTO people (site_id, name, created_at, email, member_number, note, expires_on) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                )
                .bind(site.id)
                .bind(name.clone())
                .bind(now)
                .bind(details.email.clone())
                .bind(details.member_number.clone())
                .bind(details.note.clone())
                .bind(details.expires_on.map(|d| d.to_string()))
                .fetch_one(&mut **tx)
                .await?;
                seen.insert(id, row);
                person_id = id;
                summary.added += 1;
                changes.push("new".into());
            }
        }
        if let Some(n) = &details.member_number {
            by_number.insert(n.clone(), person_id);
        }
        by_id.insert(
            person_id,
            Existing {
                id: person_id,
                name: name.clone(),
                details: details.clone(),
            },
        );
        let mut cards_added = 0;
        for uid in &p.cards {
            match card_owner.get(uid) {
                Some((owner, _)) if *owner == person_id => {}
                Some((_, owner_name)) => {
                    return Err(row_error(
                        row,
                        "cards",
                        format!("card {uid} belongs to {owner_name}"),
                    ))
                }
                None => {
                    sqlx::query("INSERT INTO cards (person_id, uid) VALUES ($1, $2)")
                        .bind(person_id)
                        .bind(uid.clone())
                        .execute(&mut **tx)
                        .await?;
                    card_owner.insert(uid.clone(), (person_id, name.clone()));
                    cards_added += 1;
                }
            }
        }
        if cards_added > 0 {
            summary.cards += cards_added;
            changes.push(format!("{cards_added} card(s)"));
        }
        let mut joined = 0;
        for g in &p.groups {
            let Some(&gid) = groups.get(g.trim()) else {
                continue;
            };
            if memberships.insert((gid, person_id)) {
                sqlx::query("INSERT INTO group_members (group_id, person_id) VALUES ($1, $2)")
                    .bind(gid)
                    .bind(person_id)
                    .execute(&mut **tx)
                    .await?;
                joined += 1;
            }
        }
        if joined > 0 {
            summary.memberships += joined;
            changes.push(format!("{joined} group(s)"));
        }
        let mut own_rules = 0;
        for r in &p.rules {
            let key = resolve(r, (Some(person_id), None))
                .map_err(|(field, message)| row_error(row, field, message))?;
            if rules.insert(key.clone()) {
                new_rules.push(key);
                own_rules += 1;
            }
        }
        if own_rules > 0 {
            changes.push(format!("{own_rules} rule(s)"));
        }
        if changes.is_empty() {
            summary.unchanged += 1;
        } else {
            if changes.first().map(String::as_str) != Some("new") {
                summary.updated += 1;
            }
            if summary.changes.len() < 200 {
                summary
                    .changes
                    .push(format!("row {row}: {name}: {}", changes.join(", ")));
            }
        }
    }
    for (door, person, group, access, from, until, schedule) in &new_rules {
        sqlx::query(
            "INSERT INTO rules (door_id, person_id, group_id, access, valid_from, valid_until, schedule_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(door)
        .bind(person)
        .bind(group)
        .bind(access.clone())
        .bind(from)
        .bind(until)
        .bind(schedule)
        .execute(&mut **tx)
        .await?;
    }
    summary.rules = new_rules.len();
    Ok(summary)
}

fn model_message(e: ModelError) -> String {
    match e {
        ModelError::Invalid { message, .. } => message,
        other => other.to_string(),
    }
}

/// The site to import into, made in `timezone` (named "Site") if there is none yet.
pub async fn site_or_create(state: &AppState, timezone: &str) -> Result<Site, TransferError> {
    if let Some(site) = crate::directory::first_site(state).await? {
        return Ok(site);
    }
    model::create_site(state, "Site", timezone).await?;
    crate::directory::first_site(state)
        .await?
        .ok_or_else(|| TransferError::Format("the site could not be created".into()))
}

/// Reads `text` and imports it into the site (`commit = false`: checks and counts only). On a
/// database without a site, the file is read in `timezone` and a site ("Site", in `timezone`)
/// is made for it, and removed again if the import fails or only checks: an import that stores
/// nothing leaves nothing behind.
pub async fn import_text(
    state: &AppState,
    text: &str,
    timezone: &str,
    commit: bool,
) -> Result<ImportSummary, TransferError> {
    let existing = crate::directory::first_site(state).await?;
    let zone = match &existing {
        Some(site) => site.zone(),
        None => TimeZone::get(timezone).map_err(|_| {
            TransferError::Model(crate::model::invalid(
                "timezone",
                format!("`{timezone}` is not an IANA time zone"),
            ))
        })?,
    };
    let doc = parse(text, &zone)?;
    let site = site_or_create(state, timezone).await?;
    let result = import(state, &site, &doc, commit).await;
    if existing.is_none() && (result.is_err() || !commit) {
        sqlx::query("DELETE FROM sites WHERE id = $1")
            .bind(site.id)
            .execute(state.db.pool())
            .await?;
    }
    result
}

// ---------------------------------------------------------------------------------------------
// Export

/// The site's people, doors, schedules and groups with their rules, as [`ExportDoc`].
pub async fn export(state: &AppState, site: &Site) -> Result<ExportDoc, TransferError> {
    let mut tx = state.db.pool().begin().await?;
    let pool = &mut *tx;
    let doors: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, name FROM doors WHERE site_id = $1 ORDER BY name, id")
            .bind(site.id)
            .fetch_all(&mut *pool)
            .await?;
    let door_name: HashMap<i64, String> = doors.iter().cloned().collect();
    let schedule_rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, name FROM schedules WHERE site_id = $1 ORDER BY name, id")
            .bind(site.id)
            .fetch_all(&mut *pool)
            .await?;
    let schedule_name: HashMap<i64, String> = schedule_rows.iter().cloned().collect();
    let slots: Vec<(i64, i32, i32, i32)> = sqlx::query_as(
        "SELECT x.schedule_id, x.days, x.start_min, x.end_min FROM schedule_slots x \
         JOIN schedules s ON s.id = x.schedule_id WHERE s.site_id = $1 ORDER BY x.id",
    )
    .bind(site.id)
    .fetch_all(&mut *pool)
    .await?;
    let mut schedules: Vec<ScheduleRecord> = Vec::new();
    for (id, name) in &schedule_rows {
        schedules.push(ScheduleRecord {
            name: name.clone(),
            slots: slots
                .iter()
                .filter(|s| s.0 == *id)
                .map(|s| SlotRecord {
                    days: u8::try_from(s.1).unwrap_or(0),
                    start_min: u16::try_from(s.2).unwrap_or(0),
                    end_min: u16::try_from(s.3).unwrap_or(0),
                })
                .collect(),
        });
    }
    type RuleRow = (Option<i64>, Option<i64>, i64, String, i64, i64, Option<i64>);
    let rules: Vec<RuleRow> = sqlx::query_as(
        "SELECT r.person_id, r.group_id, r.door_id, r.access, r.valid_from, r.valid_until, r.schedule_id \
         FROM rules r JOIN doors d ON d.id = r.door_id WHERE d.site_id = $1",
    )
    .bind(site.id)
    .fetch_all(&mut *pool)
    .await?;
    let mut person_rules: HashMap<i64, Vec<RuleRecord>> = HashMap::new();
    let mut group_rules: HashMap<i64, Vec<RuleRecord>> = HashMap::new();
    for (person, group, door, access, from, until, schedule) in rules {
        let record = RuleRecord {
            door: door_name.get(&door).cloned().unwrap_or_default(),
            access,
            schedule: schedule.and_then(|s| schedule_name.get(&s).cloned()),
            valid_from: from,
            valid_until: until,
        };
        match (person, group) {
            (Some(p), _) => person_rules.entry(p).or_default().push(record),
            (None, Some(g)) => group_rules.entry(g).or_default().push(record),
            (None, None) => {}
        }
    }
    let group_rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, name FROM groups WHERE site_id = $1 ORDER BY name, id")
            .bind(site.id)
            .fetch_all(&mut *pool)
            .await?;
    let group_name: HashMap<i64, String> = group_rows.iter().cloned().collect();
    let groups = group_rows
        .iter()
        .map(|(id, name)| {
            let mut rules = group_rules.remove(id).unwrap_or_default();
            rules.sort();
            GroupRecord {
                name: name.clone(),
                rules,
            }
        })
        .collect();
    type PersonRow = (
        i64,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let people: Vec<PersonRow> = sqlx::query_as(
        "SELECT id, name, email, member_number, note, expires_on FROM people WHERE site_id = $1 \
         ORDER BY name, id",
    )
    .bind(site.id)
    .fetch_all(&mut *pool)
    .await?;
    let mut cards: HashMap<i64, Vec<String>> = HashMap::new();
    for (person, uid) in sqlx::query_as::<_, (i64, String)>(
        "SELECT c.person_id, c.uid FROM cards c JOIN people p ON p.id = c.person_id \
         WHERE p.site_id = $1 ORDER BY c.uid",
    )
    .bind(site.id)
    .fetch_all(&mut *pool)
    .await?
    {
        cards.entry(person).or_default().push(uid);
    }
    let mut member_of: HashMap<i64, BTreeSet<String>> = HashMap::new();
    for (group, person) in sqlx::query_as::<_, (i64, i64)>(
        "SELECT m.group_id, m.person_id FROM group_members m JOIN groups g ON g.id = m.group_id \
         WHERE g.site_id = $1",
    )
    .bind(site.id)
    .fetch_all(&mut *pool)
    .await?
    {
        if let Some(name) = group_name.get(&group) {
            member_of.entry(person).or_default().insert(name.clone());
        }
    }
    let mut keypads: HashMap<i64, Vec<KeypadRecord>> = HashMap::new();
    for (person, code, totp, hotp) in sqlx::query_as::<_, (i64, String, i64, i64)>(
        "SELECT k.person_id, k.code, CASE WHEN k.totp_secret IS NULL THEN 0 ELSE 1 END, \
         CASE WHEN k.hotp_secret IS NULL THEN 0 ELSE 1 END FROM keypad_users k \
         JOIN people p ON p.id = k.person_id WHERE p.site_id = $1 ORDER BY k.code",
    )
    .bind(site.id)
    .fetch_all(&mut *pool)
    .await?
    {
        keypads.entry(person).or_default().push(KeypadRecord {
            code,
            totp: totp != 0,
            hotp: hotp != 0,
        });
    }
    tx.commit().await?;
    let people = people
        .into_iter()
        .map(|(id, name, email, member_number, note, expires_on)| {
            let mut rules = person_rules.remove(&id).unwrap_or_default();
            rules.sort();
            PersonRecord {
                name,
                email,
                member_number,
                note,
                expiry: expires_on,
                cards: cards.remove(&id).unwrap_or_default(),
                groups: member_of
                    .remove(&id)
                    .map(|s| s.into_iter().collect())
                    .unwrap_or_default(),
                rules,
                keypad_codes: keypads.remove(&id).unwrap_or_default(),
            }
        })
        .collect();
    Ok(ExportDoc {
        format: EXPORT_FORMAT.into(),
        version: 1,
        site: Some(SiteRecord {
            name: site.name.clone(),
            timezone: site.timezone.clone(),
        }),
        doors: doors.into_iter().map(|(_, n)| n).collect(),
        schedules,
        groups,
        people,
    })
}

/// The export as pretty JSON.
pub async fn export_json(state: &AppState, site: &Site) -> Result<String, TransferError> {
    let doc = export(state, site).await?;
    serde_json::to_string_pretty(&doc)
        .map(|s| s + "\n")
        .map_err(|e| TransferError::Format(e.to_string()))
}

/// The site's people as CSV with the header [`CSV_COLUMNS`]: cards separated by spaces, groups
/// and rules by `;`, rules as `DOOR=ACCESS[/SCHEDULE][ FIRST..LAST]` with local dates.
pub async fn export_csv(state: &AppState, site: &Site) -> Result<String, TransferError> {
    let doc = export(state, site).await?;
    let zone = site.zone();
    let mut records = vec![CSV_COLUMNS
        .iter()
        .map(|c| (*c).to_string())
        .collect::<Vec<_>>()];
    for p in &doc.people {
        let access: Vec<String> = p.rules.iter().map(|r| format_access(r, &zone)).collect();
        records.push(vec![
            p.name.clone(),
            p.email.clone().unwrap_or_default(),
            p.member_number.clone().unwrap_or_default(),
            p.note.clone().unwrap_or_default(),
            p.expiry.clone().unwrap_or_default(),
            p.cards.join(" "),
            p.groups.join(";"),
            access.join(";"),
        ]);
    }
    csv_text(&records)
}

// ---------------------------------------------------------------------------------------------
// Backup and restore

/// Tables in an order that satisfies their foreign keys; any other table follows. Login
/// sessions are not backed up.
const TABLE_ORDER: &[&str] = &[
    "settings",
    "admins",
    "sites",
    "schedules",
    "schedule_slots",
    "firmware_images",
    "doors",
    "people",
    "groups",
    "group_members",
    "cards",
    "keypad_users",
    "rules",
    "events",
    "clock_samples",
    "webhooks",
    "webhook_deliveries",
    "holidays",
    "holiday_schedules",
    "lockdown_orders",
];
const NOT_BACKED_UP: &[&str] = &["sessions", "_sqlx_migrations"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    Bytes,
}

fn kind_of(declared: &str) -> Kind {
    let t = declared.to_lowercase();
    if t.contains("int") || t.contains("serial") {
        Kind::Int
    } else if t.contains("blob") || t.contains("bytea") {
        Kind::Bytes
    } else {
        Kind::Text
    }
}

/// The database's tables (those a backup holds), in restore order.
async fn tables(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
) -> Result<Vec<String>, sqlx::Error> {
    let names: Vec<(String,)> =
        match backend {
            Backend::Sqlite => sqlx::query_as(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .fetch_all(&mut *conn)
            .await?,
            Backend::Postgres => {
                sqlx::query_as(
                    "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
                )
                .fetch_all(&mut *conn)
                .await?
            }
        };
    let mut names: Vec<String> = names
        .into_iter()
        .map(|(n,)| n)
        .filter(|n| !NOT_BACKED_UP.contains(&n.as_str()))
        .collect();
    names.sort_by_key(|n| {
        (
            TABLE_ORDER
                .iter()
                .position(|t| t == n)
                .unwrap_or(TABLE_ORDER.len()),
            n.clone(),
        )
    });
    Ok(names)
}

/// A table's columns and their kinds, in order.
async fn columns(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    table: &str,
) -> Result<Vec<(String, Kind)>, sqlx::Error> {
    let rows: Vec<(String, String)> = match backend {
        Backend::Sqlite => {
            sqlx::query_as("SELECT name, type FROM pragma_table_info($1) ORDER BY cid")
                .bind(table.to_string())
                .fetch_all(&mut *conn)
                .await?
        }
        Backend::Postgres => {
            sqlx::query_as(
                "SELECT CAST(column_name AS TEXT), CAST(data_type AS TEXT) FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            )
            .bind(table.to_string())
            .fetch_all(&mut *conn)
            .await?
        }
    };
    Ok(rows.into_iter().map(|(n, t)| (n, kind_of(&t))).collect())
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// A backup's table: its columns and rows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupTable {
    /// The table.
    pub name: String,
    /// Column names.
    pub columns: Vec<String>,
    /// Rows: integers, text, `null`, and binary columns as base64 text.
    pub rows: Vec<Vec<Value>>,
}

/// A backup: every table's rows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Backup {
    /// Always [`BACKUP_FORMAT`].
    pub format: String,
    /// 1.
    pub version: u32,
    /// The newest migration applied to the database it was taken from.
    pub schema: i64,
    /// Which database it was taken from.
    pub source: String,
    /// When (Unix seconds).
    pub created_at: i64,
    /// The tables, in restore order.
    pub tables: Vec<BackupTable>,
}

/// A consistent snapshot of every table, as a JSON document: the tables are read in one
/// transaction (REPEATABLE READ on PostgreSQL; one read transaction on SQLite, whose WAL lets
/// the server write meanwhile).
pub async fn backup(db: &Db) -> Result<Vec<u8>, TransferError> {
    let backend = db.backend();
    let mut tx = db.pool().begin().await?;
    if backend == Backend::Postgres {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
    }
    let schema: (i64,) = sqlx::query_as("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations")
        .fetch_one(&mut *tx)
        .await?;
    let mut out = Vec::new();
    for table in tables(&mut tx, backend).await? {
        let cols = columns(&mut tx, backend, &table).await?;
        let select: Vec<String> = cols
            .iter()
            .map(|(c, k)| match k {
                Kind::Int => format!("CAST({} AS BIGINT)", quote(c)),
                _ => quote(c),
            })
            .collect();
        let order = if cols.iter().any(|(c, _)| c == "id") {
            " ORDER BY \"id\""
        } else {
            ""
        };
        let sql = format!("SELECT {} FROM {}{order}", select.join(", "), quote(&table));
        let rows = sqlx::query(&sql).fetch_all(&mut *tx).await?;
        let mut values = Vec::with_capacity(rows.len());
        for row in rows {
            let mut v = Vec::with_capacity(cols.len());
            for (i, (_, kind)) in cols.iter().enumerate() {
                v.push(match kind {
                    Kind::Int => row
                        .try_get::<Option<i64>, _>(i)?
                        .map_or(Value::Null, Value::from),
                    Kind::Text => row
                        .try_get::<Option<String>, _>(i)?
                        .map_or(Value::Null, Value::from),
                    Kind::Bytes => row
                        .try_get::<Option<Vec<u8>>, _>(i)?
                        .map_or(Value::Null, |b| {
                            Value::from(data_encoding::BASE64.encode(&b))
                        }),
                });
            }
            values.push(v);
        }
        out.push(BackupTable {
            name: table,
            columns: cols.into_iter().map(|(c, _)| c).collect(),
            rows: values,
        });
    }
    tx.commit().await?;
    let doc = Backup {
        format: BACKUP_FORMAT.into(),
        version: 1,
        schema: schema.0,
        source: backend.as_str().into(),
        created_at: crate::now_unix(),
        tables: out,
    };
    serde_json::to_vec(&doc).map_err(|e| TransferError::Format(e.to_string()))
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Rows restored per table, in restore order.
    pub tables: Vec<(String, usize)>,
}

impl std::fmt::Display for RestoreSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total: usize = self.tables.iter().map(|(_, n)| n).sum();
        write!(f, "restored {total} rows:")?;
        for (t, n) in self.tables.iter().filter(|(_, n)| *n > 0) {
            write!(f, " {t} {n};")?;
        }
        writeln!(f)
    }
}

/// Restores a backup into `db` (migrated, as [`Db::open`] leaves it) in one transaction. A
/// database with people, doors, sites or admins is refused unless `force`; with `force` its
/// rows are replaced. PostgreSQL's id sequences are moved past the restored ids.
pub async fn restore(db: &Db, bytes: &[u8], force: bool) -> Result<RestoreSummary, TransferError> {
    let doc: Backup = serde_json::from_slice(bytes)
        .map_err(|e| TransferError::Format(format!("not a chronolock backup: {e}")))?;
    if doc.format != BACKUP_FORMAT {
        return Err(TransferError::Format(format!(
            "not a chronolock backup (format `{}`)",
            doc.format
        )));
    }
    if doc.version != 1 {
        return Err(TransferError::Format(format!(
            "backup version {} is newer than this server reads (1)",
            doc.version
        )));
    }
    let backend = db.backend();
    let mut tx = db.pool().begin().await?;
    let target = tables(&mut tx, backend).await?;
    let mut target_columns: BTreeMap<String, Vec<(String, Kind)>> = BTreeMap::new();
    for t in &target {
        target_columns.insert(t.clone(), columns(&mut tx, backend, t).await?);
    }
    // Everything in the backup must have a place here (a newer server's backup may not).
    for t in &doc.tables {
        let Some(cols) = target_columns.get(&t.name) else {
            return Err(TransferError::Format(format!(
                "the backup has a table `{}` this server does not know: restore it with the \
                 version that made it (schema {})",
                t.name, doc.schema
            )));
        };
        for c in &t.columns {
            if !cols.iter().any(|(n, _)| n == c) {
                return Err(TransferError::Format(format!(
                    "the backup's table `{}` has a column `{c}` this server does not know \
                     (backup schema {})",
                    t.name, doc.schema
                )));
            }
        }
        if t.rows.iter().any(|r| r.len() != t.columns.len()) {
            return Err(TransferError::Format(format!(
                "the backup's table `{}` has a row of the wrong length",
                t.name
            )));
        }
    }
    // Empty: nothing but settings (a server that started once made its key there).
    let mut held = Vec::new();
    for t in ["sites", "doors", "people", "admins"] {
        if !target_columns.contains_key(t) {
            continue;
        }
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {}", quote(t)))
            .fetch_one(&mut *tx)
            .await?;
        if n > 0 {
            held.push(format!("{n} {t}"));
        }
    }
    if !held.is_empty() && !force {
        return Err(TransferError::NotEmpty(held.join(", ")));
    }
    for t in target.iter().rev() {
        sqlx::query(&format!("DELETE FROM {}", quote(t)))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DELETE FROM sessions")
        .execute(&mut *tx)
        .await?;
    let mut summary = RestoreSummary::default();
    let mut by_name: HashMap<&str, &BackupTable> = HashMap::new();
    for t in &doc.tables {
        by_name.insert(t.name.as_str(), t);
    }
    for table in &target {
        let Some(t) = by_name.get(table.as_str()) else {
            continue;
        };
        let cols = &target_columns[table];
        let kinds: Vec<Kind> = t
            .columns
            .iter()
            .map(|c| {
                cols.iter()
                    .find(|(n, _)| n == c)
                    .map_or(Kind::Text, |(_, k)| *k)
            })
            .collect();
        let names: Vec<String> = t.columns.iter().map(|c| quote(c)).collect();
        let params: Vec<String> = (1..=t.columns.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            quote(table),
            names.join(", "),
            params.join(", ")
        );
        for (n, row) in t.rows.iter().enumerate() {
            let mut q = sqlx::query(&sql);
            for ((value, kind), column) in row.iter().zip(&kinds).zip(&t.columns) {
                let bad = || {
                    TransferError::Format(format!(
                        "the backup's table `{table}`, row {}, column `{column}`: unexpected value {value}",
                        n + 1
                    ))
                };
                q = match (kind, value) {
                    (Kind::Int, Value::Null) => q.bind(None::<i64>),
                    (Kind::Int, Value::Number(v)) => q.bind(v.as_i64().ok_or_else(bad)?),
                    (Kind::Text, Value::Null) => q.bind(None::<String>),
                    (Kind::Text, Value::String(s)) => q.bind(s.clone()),
                    (Kind::Bytes, Value::Null) => q.bind(None::<Vec<u8>>),
                    (Kind::Bytes, Value::String(s)) => q.bind(
                        data_encoding::BASE64
                            .decode(s.as_bytes())
                            .map_err(|_| bad())?,
                    ),
                    _ => return Err(bad()),
                };
            }
            q.execute(&mut *tx).await?;
        }
        if backend == Backend::Postgres && cols.iter().any(|(c, _)| c == "id") {
            sqlx::query(&format!(
                "SELECT CAST(setval(pg_get_serial_sequence('{table}', 'id'), \
                 COALESCE((SELECT MAX(id) FROM {}), 0) + 1, false) AS BIGINT)",
                quote(table)
            ))
            .execute(&mut *tx)
            .await?;
        }
        summary.tables.push((table.clone(), t.rows.len()));
    }
    tx.commit().await?;
    Ok(summary)
}

/// Writes `bytes` to `path` readable by its owner only (mode 0600 on Unix): through a file
/// beside it, renamed into place, so a failed write leaves no half file.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("partial");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_reads_quotes_and_line_breaks() {
        let recs =
            csv_records("a,b\r\n\"x, \"\"y\"\"\",\"two\nlines\"\n\nz,\n").unwrap_or_default();
        assert_eq!(recs.len(), 3);
        assert_eq!(
            recs[1],
            (2, vec!["x, \"y\"".to_string(), "two\nlines".into()])
        );
        assert_eq!(recs[2], (5, vec!["z".to_string(), String::new()]));
        assert!(csv_records("a\n\"open").is_err());
        let text = csv_text(&[vec!["a,b".into(), "plain".into(), "say \"hi\"".into()]]);
        assert_eq!(
            text.ok().as_deref(),
            Some("\"a,b\",plain,\"say \"\"hi\"\"\"\r\n")
        );
    }

    #[test]
    fn access_tokens_round_trip() {
        let zone = TimeZone::get("Europe/Berlin").unwrap_or(TimeZone::UTC);
        for token in [
            "Front=UNRESTRICTED",
            "Lab=SCHEDULED/Office hours",
            "Lab=UNRESTRICTED 2026-01-01..2026-06-30",
            "Lab=EMERGENCY ..2026-06-30",
            "Lab=SCHEDULED/Nights 2026-03-29..",
        ] {
            let rule = parse_access(token, &zone).unwrap_or_else(|e| panic!("{token}: {e}"));
            assert_eq!(format_access(&rule, &zone), token);
        }
        assert!(parse_access("Front", &zone).is_err());
        assert!(parse_access("Front=SOMETIMES", &zone).is_err());
        assert!(parse_access("Front=UNRESTRICTED 2026-13-01..", &zone).is_err());
    }

    #[test]
    fn esp_rfid_days() {
        let ny = TimeZone::get("America/New_York").unwrap_or(TimeZone::UTC);
        // 2030-01-01 00:00 UTC: the date esp-rfid's page picked.
        assert_eq!(
            esp_rfid_day(1_893_456_000, &ny).map(|d| d.to_string()),
            Ok("2030-01-01".into())
        );
        // 2030-01-01 03:00 UTC is still 31 December in New York.
        assert_eq!(
            esp_rfid_day(1_893_456_000 + 3 * 3600, &ny).map(|d| d.to_string()),
            Ok("2029-12-31".into())
        );
        assert!(esp_rfid_day(-5, &ny).is_err());
        assert!(esp_rfid_day(i64::MAX, &ny).is_err());
    }

    #[test]
    fn card_uids_normalise() {
        assert_eq!(card_uid("04a1b2c3"), Ok("04A1B2C3".into()));
        assert_eq!(
            card_uid("04:a1:b2:c3:d4:e5:f6"),
            Ok("04A1B2C3D4E5F6".into())
        );
        assert!(card_uid("04a1b2").is_err());
        assert!(card_uid("zz112233").is_err());
    }

    proptest::proptest! {
        /// Whatever a file holds, reading it answers with an import or an error, never a panic:
        /// arbitrary text, and CSV- and JSON-shaped text near the real formats.
        #[test]
        fn any_file_reads_or_is_refused(
            text in "\\PC{0,200}",
            csv in "(name|cards|email|expiry|access|groups)(,(name|cards|email|expiry|access|groups|x)){0,4}\n([a-zA-Z0-9 ;=./\"-]{0,20}(,[a-zA-Z0-9 ;=./\"-]{0,20}){0,5}\n){0,4}",
            json in "\\{\"type\": ?\"esp-rfid-userbackup\", ?\"list\": ?\\[(\\{\"uid\": ?\"[0-9a-f]{0,16}\", ?\"username\": ?\"[a-z]{0,8}\", ?\"acctype\": ?[0-9]{1,3}, ?\"validuntil\": ?-?[0-9]{1,12}\\},?){0,3}\\]\\}",
        ) {
            let zone = TimeZone::get("Europe/Berlin").unwrap_or(TimeZone::UTC);
            for input in [&text, &csv, &json] {
                let _ = parse(input, &zone);
            }
        }
    }
}
