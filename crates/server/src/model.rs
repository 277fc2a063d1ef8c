//! The site model and each door's allow-list.
//!
//! Sites carry an IANA time zone; schedules are stored as entered, in local time. A door's list
//! is compiled from the rules that name it (directly for a person, or through a group): every
//! card and keypad code of those people becomes an entry, schedules become DST-bounded UTC slots
//! ([`crate::schedule`]). Where one credential falls under several rules, a rule for the person
//! beats a group's, then the more permissive access type wins (EMERGENCY, UNRESTRICTED,
//! SCHEDULED, CONDITIONAL), then the older rule. Holidays on the site calendar close the
//! schedules linked to them on their local days; they are compiled into the same slots' bounds.
//!
//! The generation rises only when the compiled content changes: the content is digested without
//! generation, creation time or signature, and the update is conditional on the generation it
//! read, so concurrent server processes cannot hand out two different lists under one number.

use std::collections::HashMap;

use chronolock_allowlist::Entry;
use chronolock_core::allowlist::{AccessType, CardEntry, KeypadEntry, Policy};
use sha2::{Digest, Sha256};

use crate::schedule::{self, Holiday, LocalSlot};
use crate::AppState;

/// Why a model change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A field's value is not acceptable; the message is for the admin, beside the field.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No such row.
    #[error("not found")]
    NotFound,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The database failed.
    #[error(transparent)]
    DbOpen(#[from] crate::DbError),
}

/// A field error for the admin.
pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> ModelError {
    ModelError::Invalid {
        field,
        message: message.into(),
    }
}

/// A name as stored: trimmed, 1 to 100 characters.
pub(crate) fn name_field(field: &'static str, name: &str) -> Result<String, ModelError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(invalid(field, "1 to 100 characters"));
    }
    Ok(name.to_string())
}

/// Who a rule is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    /// One person.
    Person(i64),
    /// Every member of a group.
    Group(i64),
}

/// Creates a site in an IANA time zone.
pub async fn create_site(state: &AppState, name: &str, timezone: &str) -> Result<i64, ModelError> {
    let name = name_field("name", name)?;
    jiff::tz::TimeZone::get(timezone)
        .map_err(|_| invalid("timezone", format!("`{timezone}` is not an IANA time zone")))?;
    insert_id(
        state,
        "INSERT INTO sites (name, timezone, created_at) VALUES ($1, $2, $3) RETURNING id",
        |q| {
            q.bind(name)
                .bind(timezone.to_string())
                .bind(crate::now_unix())
        },
    )
    .await
}

/// Creates a door.
pub async fn create_door(state: &AppState, site_id: i64, name: &str) -> Result<i64, ModelError> {
    let name = name_field("name", name)?;
    insert_id(
        state,
        "INSERT INTO doors (site_id, name, created_at) VALUES ($1, $2, $3) RETURNING id",
        |q| q.bind(site_id).bind(name).bind(crate::now_unix()),
    )
    .await
}

/// Creates a person.
pub async fn create_person(state: &AppState, site_id: i64, name: &str) -> Result<i64, ModelError> {
    let name = name_field("name", name)?;
    insert_id(
        state,
        "INSERT INTO people (site_id, name, created_at) VALUES ($1, $2, $3) RETURNING id",
        |q| q.bind(site_id).bind(name).bind(crate::now_unix()),
    )
    .await
}

/// Gives a person a card (hex UID, 4, 7 or 10 bytes; stored upper-case). A UID-only card:
/// anyone who reads it can copy it.
pub async fn add_card(state: &AppState, person_id: i64, uid: &str) -> Result<i64, ModelError> {
    add_card_kind(state, person_id, uid, false).await
}

/// Gives a person a card; `secure`: a secure card (7-byte UID) personalised with the site's
/// card master key, which only a card proving its key opens with.
pub async fn add_card_kind(
    state: &AppState,
    person_id: i64,
    uid: &str,
    secure: bool,
) -> Result<i64, ModelError> {
    let uid = uid.trim().to_uppercase();
    let bytes = data_encoding::HEXUPPER
        .decode(uid.as_bytes())
        .map_err(|_| invalid("uid", "hex digits, e.g. 04A1B2C3"))?;
    if ![4, 7, 10].contains(&bytes.len()) {
        return Err(invalid(
            "uid",
            format!("{} bytes; card UIDs have 4, 7 or 10", bytes.len()),
        ));
    }
    if secure && bytes.len() != chronolock_core::card::UID_LEN {
        return Err(invalid(
            "uid",
            format!("{} bytes; secure cards have 7-byte UIDs", bytes.len()),
        ));
    }
    insert_id(
        state,
        "INSERT INTO cards (person_id, uid, secure) VALUES ($1, $2, $3) RETURNING id",
        |q| q.bind(person_id).bind(uid.clone()).bind(i64::from(secure)),
    )
    .await
    .map_err(|e| unique_violation(e, "uid", "this card belongs to someone already"))
}

/// A keypad user's secrets and settings.
#[derive(Clone, Debug, Default)]
pub struct KeypadSpec {
    /// User code, 1–8 digits.
    pub code: String,
    /// TOTP secret (base32).
    pub totp_secret: Option<String>,
    /// HOTP secret (base32).
    pub hotp_secret: Option<String>,
    /// Next HOTP counter.
    pub hotp_counter: i64,
    /// Digits, 6–8.
    pub digits: i32,
    /// TOTP period in seconds.
    pub period_s: i32,
}

/// Gives a person a keypad code.
pub async fn add_keypad_user(
    state: &AppState,
    person_id: i64,
    spec: &KeypadSpec,
) -> Result<i64, ModelError> {
    if spec.code.is_empty() || spec.code.len() > 8 || !spec.code.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(invalid("code", "1 to 8 digits"));
    }
    if !(6..=8).contains(&spec.digits) {
        return Err(invalid("digits", "6, 7 or 8"));
    }
    if !(1..=3600).contains(&spec.period_s) {
        return Err(invalid("period_s", "1 to 3600 seconds"));
    }
    if spec.totp_secret.is_none() && spec.hotp_secret.is_none() {
        return Err(invalid("totp_secret", "a TOTP or HOTP secret is needed"));
    }
    // Check the secrets the way the list compiler reads them.
    let probe = serde_json::json!({"entries": [{"keypad": spec.code, "totp": spec.totp_secret, "hotp": spec.hotp_secret, "access": "UNRESTRICTED"}]});
    chronolock_allowlist::parse_source_value(&probe)
        .map_err(|e| invalid("totp_secret", e.to_string()))?;
    insert_id(
        state,
        "INSERT INTO keypad_users (person_id, code, totp_secret, hotp_secret, hotp_counter, digits, period_s) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        |q| {
            q.bind(person_id)
                .bind(spec.code.clone())
                .bind(spec.totp_secret.clone())
                .bind(spec.hotp_secret.clone())
                .bind(spec.hotp_counter)
                .bind(spec.digits)
                .bind(spec.period_s)
        },
    )
    .await
    .map_err(|e| unique_violation(e, "code", "this user code is taken"))
}

/// Creates a group.
pub async fn create_group(state: &AppState, site_id: i64, name: &str) -> Result<i64, ModelError> {
    let name = name_field("name", name)?;
    insert_id(
        state,
        "INSERT INTO groups (site_id, name) VALUES ($1, $2) RETURNING id",
        |q| q.bind(site_id).bind(name),
    )
    .await
    .map_err(|e| unique_violation(e, "name", "a group of this name exists"))
}

/// Adds a person to a group.
pub async fn add_member(state: &AppState, group_id: i64, person_id: i64) -> Result<(), ModelError> {
    sqlx::query(
        "INSERT INTO group_members (group_id, person_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(group_id)
    .bind(person_id)
    .execute(state.db.pool())
    .await?;
    Ok(())
}

/// Creates a weekly schedule in the site's local time.
pub async fn create_schedule(
    state: &AppState,
    site_id: i64,
    name: &str,
    slots: &[LocalSlot],
) -> Result<i64, ModelError> {
    let name = name_field("name", name)?;
    if slots.is_empty() {
        return Err(invalid("slots", "at least one slot"));
    }
    let zone = jiff::tz::TimeZone::UTC;
    schedule::compile(&zone, slots, jiff::Timestamp::UNIX_EPOCH, 1)
        .map_err(|e| invalid("slots", e.to_string()))?;
    let mut tx = state.db.pool().begin().await?;
    let (id,): (i64,) =
        sqlx::query_as("INSERT INTO schedules (site_id, name) VALUES ($1, $2) RETURNING id")
            .bind(site_id)
            .bind(name)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| unique_violation(e, "name", "a schedule of this name exists"))?;
    for s in slots {
        sqlx::query("INSERT INTO schedule_slots (schedule_id, days, start_min, end_min) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(i32::from(s.days))
            .bind(i32::from(s.start_min))
            .bind(i32::from(s.end_min))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(id)
}

/// A rule: who, which door, how.
#[derive(Clone, Copy, Debug)]
pub struct RuleSpec {
    /// The door.
    pub door_id: i64,
    /// Who.
    pub subject: Subject,
    /// Access type.
    pub access: AccessType,
    /// Unix seconds, 0 for unbounded.
    pub valid_from: i64,
    /// Unix seconds (inclusive), 0 for unbounded.
    pub valid_until: i64,
    /// The schedule (SCHEDULED only).
    pub schedule_id: Option<i64>,
}

/// Adds a rule.
pub async fn add_rule(state: &AppState, rule: &RuleSpec) -> Result<i64, ModelError> {
    if rule.valid_from < 0
        || rule.valid_until < 0
        || (rule.valid_until != 0 && rule.valid_until < rule.valid_from)
    {
        return Err(invalid("valid_until", "must not be before valid_from"));
    }
    if rule.schedule_id.is_some() && rule.access != AccessType::Scheduled {
        return Err(invalid("schedule", "only SCHEDULED rules have a schedule"));
    }
    let (person, group) = match rule.subject {
        Subject::Person(p) => (Some(p), None),
        Subject::Group(g) => (None, Some(g)),
    };
    insert_id(
        state,
        "INSERT INTO rules (door_id, person_id, group_id, access, valid_from, valid_until, schedule_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        |q| {
            q.bind(rule.door_id)
                .bind(person)
                .bind(group)
                .bind(rule.access.as_str())
                .bind(rule.valid_from)
                .bind(rule.valid_until)
                .bind(rule.schedule_id)
        },
    )
    .await
}

type AnyQuery<'q> = sqlx::query::QueryAs<'q, sqlx::Any, (i64,), sqlx::any::AnyArguments<'q>>;

async fn insert_id(
    state: &AppState,
    sql: &'static str,
    bind: impl for<'q> FnOnce(AnyQuery<'q>) -> AnyQuery<'q>,
) -> Result<i64, ModelError> {
    let (id,) = bind(sqlx::query_as(sql)).fetch_one(state.db.pool()).await?;
    Ok(id)
}

/// A unique-constraint failure as a field error; other errors pass through.
pub(crate) fn unique_violation(
    e: impl Into<ModelError>,
    field: &'static str,
    message: &str,
) -> ModelError {
    let e = e.into();
    match &e {
        ModelError::Db(sqlx::Error::Database(d)) if d.is_unique_violation() => {
            invalid(field, message)
        }
        _ => e,
    }
}

fn precedence(access: AccessType) -> u8 {
    match access {
        AccessType::Emergency => 4,
        AccessType::Unrestricted => 3,
        AccessType::Scheduled => 2,
        AccessType::Conditional => 1,
    }
}

/// A schedule's slots compiled to UTC for `zone` from `anchor`, closed on the holidays linked to
/// it and on `extra` (a holiday about to be linked, to check it before it is stored).
async fn compile_schedule(
    state: &AppState,
    zone: &jiff::tz::TimeZone,
    schedule_id: i64,
    extra: Option<&Holiday>,
    anchor: jiff::Timestamp,
) -> Result<Vec<chronolock_core::allowlist::Slot>, ModelError> {
    let pool = state.db.pool();
    let local: Vec<(i32, i32, i32)> = sqlx::query_as(
        "SELECT days, start_min, end_min FROM schedule_slots WHERE schedule_id = $1 ORDER BY id",
    )
    .bind(schedule_id)
    .fetch_all(pool)
    .await?;
    let local: Vec<LocalSlot> = local
        .into_iter()
        .map(|(d, s, e)| LocalSlot {
            days: d as u8,
            start_min: s as u16,
            end_min: e as u16,
        })
        .collect();
    let stored: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT h.first_day, h.last_day, h.yearly FROM holidays h \
         JOIN holiday_schedules l ON l.holiday_id = h.id WHERE l.schedule_id = $1 ORDER BY h.id",
    )
    .bind(schedule_id)
    .fetch_all(pool)
    .await?;
    let mut holidays = stored
        .into_iter()
        .map(|(first, last, yearly)| {
            let day = |text: &str| {
                text.parse::<jiff::civil::Date>()
                    .map_err(|_| invalid("holiday", format!("stored day `{text}` is not a date")))
            };
            Ok(Holiday {
                first: day(&first)?,
                last: day(&last)?,
                yearly: yearly != 0,
            })
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    holidays.extend(extra.copied());
    schedule::compile_with_holidays(
        zone,
        &local,
        &holidays,
        anchor,
        schedule::DEFAULT_HORIZON_DAYS,
    )
    .map_err(|e| invalid("schedule", e.to_string()))
}

/// Creates a holiday on the site calendar that closes the schedules `schedule_ids` (at least
/// one, all of this site), and recompiles the site's doors: the holiday and its effect on the
/// lists are one step, so no caller can store it without the doors following.
///
/// Refused, with nothing stored: a bad name, a holiday that ends before it starts or a yearly
/// one of a year or more, no schedule or another site's, and a holiday that would give one of
/// the schedules more slots than the device's list holds for a policy.
pub async fn create_holiday(
    state: &AppState,
    site_id: i64,
    name: &str,
    holiday: &Holiday,
    schedule_ids: &[i64],
) -> Result<i64, ModelError> {
    let name = name_field("name", name)?;
    holiday
        .check()
        .map_err(|e| invalid("last", e.to_string()))?;
    if schedule_ids.is_empty() {
        return Err(invalid(
            "schedules",
            "choose at least one schedule the holiday closes",
        ));
    }
    let (tz,): (String,) = sqlx::query_as("SELECT timezone FROM sites WHERE id = $1")
        .bind(site_id)
        .fetch_optional(state.db.pool())
        .await?
        .ok_or(ModelError::NotFound)?;
    let zone = jiff::tz::TimeZone::get(&tz)
        .map_err(|_| invalid("timezone", format!("`{tz}` is not an IANA time zone")))?;
    let anchor = week_anchor(crate::now_unix());
    for &schedule_id in schedule_ids {
        let named: Option<(String,)> =
            sqlx::query_as("SELECT name FROM schedules WHERE site_id = $1 AND id = $2")
                .bind(site_id)
                .bind(schedule_id)
                .fetch_optional(state.db.pool())
                .await?;
        let Some((schedule_name,)) = named else {
            return Err(invalid("schedules", "no such schedule on this site"));
        };
        compile_schedule(state, &zone, schedule_id, Some(holiday), anchor)
            .await
            .map_err(|e| match e {
                ModelError::Invalid { message, .. } => {
                    invalid("schedules", format!("{schedule_name}: {message}"))
                }
                other => other,
            })?;
    }
    let mut tx = state.db.pool().begin().await?;
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO holidays (site_id, name, first_day, last_day, yearly) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(site_id)
    .bind(name)
    .bind(holiday.first.to_string())
    .bind(holiday.last.to_string())
    .bind(i32::from(holiday.yearly))
    .fetch_one(&mut *tx)
    .await?;
    let mut linked = std::collections::BTreeSet::new();
    for &schedule_id in schedule_ids {
        if linked.insert(schedule_id) {
            sqlx::query("INSERT INTO holiday_schedules (holiday_id, schedule_id) VALUES ($1, $2)")
                .bind(id)
                .bind(schedule_id)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    site_changed(state, site_id).await?;
    Ok(id)
}

/// Deletes a holiday of the site and recompiles the site's doors (the schedules it closed open
/// on its days again).
pub async fn delete_holiday(
    state: &AppState,
    site_id: i64,
    holiday_id: i64,
) -> Result<(), ModelError> {
    let rows = sqlx::query("DELETE FROM holidays WHERE site_id = $1 AND id = $2")
        .bind(site_id)
        .bind(holiday_id)
        .execute(state.db.pool())
        .await?
        .rows_affected();
    if rows == 0 {
        return Err(ModelError::NotFound);
    }
    site_changed(state, site_id).await?;
    Ok(())
}

/// The last second (Unix seconds) of the local day `date` in `zone`: one second before the
/// next day's local midnight (so a day of a DST change is 23 or 25 hours long).
pub fn end_of_local_day(zone: &jiff::tz::TimeZone, date: jiff::civil::Date) -> Option<i64> {
    let next = date.tomorrow().ok()?;
    let start = next.to_zoned(zone.clone()).ok()?.start_of_day().ok()?;
    Some(start.timestamp().as_second() - 1)
}

/// Whether a person's last day (their expiry, a local date in the site's zone) ended before
/// `now`. A stored day that does not read as a date counts as ended: it grants nothing.
pub async fn person_expired(
    state: &AppState,
    person_id: i64,
    now: i64,
) -> Result<bool, ModelError> {
    let row: Option<(Option<String>, String)> = sqlx::query_as(
        "SELECT p.expires_on, s.timezone FROM people p JOIN sites s ON s.id = p.site_id WHERE p.id = $1",
    )
    .bind(person_id)
    .fetch_optional(state.db.pool())
    .await?;
    let Some((Some(day), tz)) = row else {
        return Ok(false);
    };
    let zone = jiff::tz::TimeZone::get(&tz)
        .map_err(|_| invalid("timezone", format!("`{tz}` is not an IANA time zone")))?;
    let end = day
        .parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| end_of_local_day(&zone, d));
    Ok(end.is_none_or(|end| end < now))
}

/// Monday 00:00 UTC of the week of `now`: schedules compile from there, so a door's list stays
/// the same all week unless the model changes.
fn week_anchor(now: i64) -> jiff::Timestamp {
    let days = now.div_euclid(86_400);
    let monday = days - (days + 3).rem_euclid(7);
    jiff::Timestamp::from_second(monday * 86_400).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// Everyone some rule of door `$1` names, directly or through a group.
const DOOR_PEOPLE: &str = "SELECT r.person_id FROM rules r WHERE r.door_id = $1 AND r.person_id IS NOT NULL \
     UNION SELECT m.person_id FROM rules r JOIN group_members m ON m.group_id = r.group_id WHERE r.door_id = $1";

/// A keypad code as stored: person id, code, TOTP secret, HOTP secret, HOTP counter, digits,
/// period.
type KeypadRow = (i64, String, Option<String>, Option<String>, i64, i32, i32);

/// A rule as stored: door, rule id, person, group, access, valid from, valid until, schedule.
type RuleRow = (
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    String,
    i64,
    i64,
    Option<i64>,
);

/// Reads [`RuleRow`]s of `rules r` (add the joins and a `WHERE`).
const RULES: &str = "SELECT r.door_id, r.id, r.person_id, r.group_id, r.access, r.valid_from, \
     r.valid_until, r.schedule_id FROM rules r";

/// A rule as compiling reads it.
struct Rule {
    id: i64,
    person: Option<i64>,
    group: Option<i64>,
    access: AccessType,
    valid_from: i64,
    valid_until: i64,
    /// Its schedule, when its access is SCHEDULED.
    schedule: Option<i64>,
}

/// What compiling doors reads: their site's zone, their rules, the members of the groups those
/// name, the compiled schedules, and the credentials and last days of the people they reach.
/// Read once for a whole site ([`SiteData::load_site`]) or for one door
/// ([`SiteData::load_door`]); each door's entries then come from memory
/// ([`SiteData::entries`]).
struct SiteData {
    zone: jiff::tz::TimeZone,
    rules: HashMap<i64, Vec<Rule>>,
    members: HashMap<i64, Vec<i64>>,
    schedules: HashMap<i64, Vec<chronolock_core::allowlist::Slot>>,
    cards: HashMap<i64, Vec<(String, bool)>>,
    keypads: HashMap<i64, Vec<KeypadRow>>,
    /// The site's card master keys, for doors with secure cards.
    card_keys: chronolock_core::allowlist::CardMasterKeys,
    expiries: HashMap<i64, String>,
}

/// A site's cards, keypad codes and last days.
const SITE_CARDS: &str =
    "SELECT c.person_id, c.uid, c.secure FROM cards c JOIN people p ON p.id = c.person_id WHERE p.site_id = $1";
const SITE_KEYPADS: &str = "SELECT k.person_id, k.code, k.totp_secret, k.hotp_secret, \
     k.hotp_counter, k.digits, k.period_s FROM keypad_users k \
     JOIN people p ON p.id = k.person_id WHERE p.site_id = $1";
const SITE_EXPIRIES: &str =
    "SELECT id, expires_on FROM people WHERE site_id = $1 AND expires_on IS NOT NULL";

/// People a door's rules reach beyond which its compilation reads the site's cards whole.
const DOOR_CARDS_SITE_WIDE: usize = 5_000;

/// The parts of [`SiteData`] as read, before they are arranged.
struct SiteRows {
    rules: Vec<RuleRow>,
    members: Vec<(i64, i64)>,
    cards: Vec<(i64, String, i64)>,
}

impl SiteData {
    /// Everything the doors of `site_id` need.
    async fn load_site(state: &AppState, site_id: i64, now: i64) -> Result<SiteData, ModelError> {
        let pool = state.db.pool();
        let rows = SiteRows {
            rules: sqlx::query_as(&format!(
                "{RULES} JOIN doors d ON d.id = r.door_id WHERE d.site_id = $1"
            ))
            .bind(site_id)
            .fetch_all(pool)
            .await?,
            members: sqlx::query_as(
                "SELECT m.group_id, m.person_id FROM group_members m \
                 JOIN groups g ON g.id = m.group_id WHERE g.site_id = $1",
            )
            .bind(site_id)
            .fetch_all(pool)
            .await?,
            cards: sqlx::query_as(SITE_CARDS)
                .bind(site_id)
                .fetch_all(pool)
                .await?,
        };
        SiteData::arrange(state, site_id, rows, now).await
    }

    /// What one door needs: its rules and the members of their groups; the credentials of
    /// the people they reach (of the whole site when that is most of it: one plain pass over
    /// the site's cards costs less than picking them out); the site's keypad codes and last
    /// days, which are few.
    async fn load_door(state: &AppState, door_id: i64, now: i64) -> Result<SiteData, ModelError> {
        let pool = state.db.pool();
        let (site_id,): (i64,) = sqlx::query_as("SELECT site_id FROM doors WHERE id = $1")
            .bind(door_id)
            .fetch_optional(pool)
            .await?
            .ok_or(ModelError::NotFound)?;
        let rules: Vec<RuleRow> = sqlx::query_as(&format!("{RULES} WHERE r.door_id = $1"))
            .bind(door_id)
            .fetch_all(pool)
            .await?;
        let members: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT m.group_id, m.person_id FROM group_members m \
             WHERE m.group_id IN (SELECT r.group_id FROM rules r WHERE r.door_id = $1)",
        )
        .bind(door_id)
        .fetch_all(pool)
        .await?;
        let cards: Vec<(i64, String, i64)> = if members.len() + rules.len() > DOOR_CARDS_SITE_WIDE {
            sqlx::query_as(SITE_CARDS)
                .bind(site_id)
                .fetch_all(pool)
                .await?
        } else {
            sqlx::query_as(
                &"SELECT c.person_id, c.uid, c.secure FROM cards c WHERE c.person_id IN (SUBJECTS)"
                    .replace("SUBJECTS", DOOR_PEOPLE),
            )
            .bind(door_id)
            .fetch_all(pool)
            .await?
        };
        let rows = SiteRows {
            rules,
            members,
            cards,
        };
        SiteData::arrange(state, site_id, rows, now).await
    }

    async fn arrange(
        state: &AppState,
        site_id: i64,
        rows: SiteRows,
        now: i64,
    ) -> Result<SiteData, ModelError> {
        let zone = site_zone(state, site_id).await?;
        let mut rules: HashMap<i64, Vec<Rule>> = HashMap::new();
        for (door, id, person, group, access, valid_from, valid_until, schedule) in rows.rules {
            // A rule whose access does not read (none is stored) grants nothing.
            let Some(access) = AccessType::from_name(&access) else {
                continue;
            };
            rules.entry(door).or_default().push(Rule {
                id,
                person,
                group,
                access,
                valid_from,
                valid_until,
                schedule: schedule.filter(|_| access == AccessType::Scheduled),
            });
        }
        let anchor = week_anchor(now);
        let mut schedules = HashMap::new();
        for schedule_id in rules.values().flatten().filter_map(|r| r.schedule) {
            if let std::collections::hash_map::Entry::Vacant(v) = schedules.entry(schedule_id) {
                v.insert(compile_schedule(state, &zone, schedule_id, None, anchor).await?);
            }
        }
        let mut members: HashMap<i64, Vec<i64>> = HashMap::new();
        for (group, person) in rows.members {
            members.entry(group).or_default().push(person);
        }
        let mut cards: HashMap<i64, Vec<(String, bool)>> = HashMap::new();
        for (person, uid, secure) in rows.cards {
            cards.entry(person).or_default().push((uid, secure != 0));
        }
        let card_keys = crate::card_keys::keys(&state.db).await?;
        // Keypad codes and last days are few: the site's, for one door as for all.
        let pool = state.db.pool();
        let site_keypads: Vec<KeypadRow> = sqlx::query_as(SITE_KEYPADS)
            .bind(site_id)
            .fetch_all(pool)
            .await?;
        let expiries: Vec<(i64, String)> = sqlx::query_as(SITE_EXPIRIES)
            .bind(site_id)
            .fetch_all(pool)
            .await?;
        let mut keypads: HashMap<i64, Vec<KeypadRow>> = HashMap::new();
        for row in site_keypads {
            keypads.entry(row.0).or_default().push(row);
        }
        Ok(SiteData {
            zone,
            rules,
            members,
            schedules,
            cards,
            keypads,
            expiries: expiries.into_iter().collect(),
            card_keys,
        })
    }

    /// The entries of `door_id`'s list as of `now` (sans IO).
    fn entries(&self, door_id: i64, now: i64) -> Result<Vec<Entry>, ModelError> {
        // The winning rule per person: a person's own rule before a group's, then the
        // stronger access, then the older rule.
        fn offer<'r>(
            best: &mut HashMap<i64, ((u8, u8, i64), &'r Rule)>,
            person: i64,
            via_group: bool,
            rule: &'r Rule,
        ) {
            let rank = (u8::from(!via_group), precedence(rule.access), -rule.id);
            match best.entry(person) {
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    if rank > o.get().0 {
                        o.insert((rank, rule));
                    }
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert((rank, rule));
                }
            }
        }
        let mut best = HashMap::new();
        for rule in self.rules.get(&door_id).into_iter().flatten() {
            match (rule.person, rule.group) {
                (Some(person), _) => offer(&mut best, person, false, rule),
                (None, Some(group)) => {
                    for &person in self.members.get(&group).into_iter().flatten() {
                        offer(&mut best, person, true, rule);
                    }
                }
                (None, None) => {}
            }
        }
        // In person order: the list's policy table follows the order entries come in, and the
        // same model must give the same bytes (a hash map's order changes from run to run).
        let mut winners: Vec<(i64, &Rule)> = best.into_iter().map(|(p, (_, r))| (p, r)).collect();
        winners.sort_unstable_by_key(|(person, _)| *person);
        let mut entries = Vec::new();
        for (person, rule) in winners {
            let slots =
                match rule.schedule {
                    Some(id) => self.schedules.get(&id).map(Vec::as_slice).ok_or_else(|| {
                        invalid("schedule", "a rule names a schedule that is gone")
                    })?,
                    None => &[],
                };
            let mut policy = Policy::new(rule.access, rule.valid_from, rule.valid_until);
            // A person's expiry day caps every grant: after the end of that local day (the
            // next day's local midnight, DST-correct, as for the rules' date ranges) none of
            // their credentials opens a door. A person whose day has passed is left out.
            if let Some(day) = self.expiries.get(&person) {
                // A stored day that does not read as a date grants nothing rather than
                // everything.
                let end = day
                    .parse::<jiff::civil::Date>()
                    .ok()
                    .and_then(|d| end_of_local_day(&self.zone, d));
                let capped = end.and_then(|end| {
                    let until = if policy.valid_until == 0 {
                        end
                    } else {
                        policy.valid_until.min(end)
                    };
                    let open = end >= now && (policy.valid_from == 0 || until >= policy.valid_from);
                    open.then(|| Policy::new(policy.access, policy.valid_from, until))
                });
                match capped {
                    Some(p) => policy = p,
                    None => continue,
                }
            }
            for (uid, secure) in self.cards.get(&person).into_iter().flatten() {
                let uid = data_encoding::HEXUPPER
                    .decode(uid.as_bytes())
                    .map_err(|_| invalid("uid", "stored UID is not hex"))?;
                let card = CardEntry {
                    uid,
                    policy,
                    slots: slots.to_vec(),
                };
                entries.push(if *secure {
                    Entry::SecureCard(card)
                } else {
                    Entry::Card(card)
                });
            }
            for (_, code, totp, hotp, counter, digits, period) in
                self.keypads.get(&person).into_iter().flatten()
            {
                let secret = |s: &Option<String>| -> Result<Option<Vec<u8>>, ModelError> {
                    s.as_deref()
                        .map(|s| {
                            chronolock_allowlist::decode_secret(s, "stored secret")
                                .map_err(|m| invalid("totp_secret", m))
                        })
                        .transpose()
                };
                entries.push(Entry::Keypad(KeypadEntry {
                    code: code.clone().into_bytes(),
                    totp_secret: secret(totp)?,
                    hotp_secret: secret(hotp)?,
                    hotp_counter: (*counter).max(0) as u64,
                    digits: *digits as u8,
                    period_s: *period as u16,
                    policy,
                    slots: slots.to_vec(),
                }));
            }
        }
        Ok(entries)
    }
}

/// A site's time zone.
async fn site_zone(state: &AppState, site_id: i64) -> Result<jiff::tz::TimeZone, ModelError> {
    let (tz,): (String,) = sqlx::query_as("SELECT timezone FROM sites WHERE id = $1")
        .bind(site_id)
        .fetch_optional(state.db.pool())
        .await?
        .ok_or(ModelError::NotFound)?;
    jiff::tz::TimeZone::get(&tz)
        .map_err(|_| invalid("timezone", format!("`{tz}` is not an IANA time zone")))
}

/// The entries of a door's list, as of `now`.
pub async fn door_entries(
    state: &AppState,
    door_id: i64,
    now: i64,
) -> Result<Vec<Entry>, ModelError> {
    SiteData::load_door(state, door_id, now)
        .await?
        .entries(door_id, now)
}

/// What compiling a door needs of its row.
struct DoorMeta {
    generation: i64,
    digest: Option<String>,
    device_key: Option<Vec<u8>>,
    capacity: i64,
    stored_len: Option<i64>,
}

/// Reads doors' rows as compiling needs them (add a `WHERE`).
const DOOR_META: &str = "SELECT d.id, d.generation, d.list_digest, d.device_key, d.list_capacity, \
     (SELECT CAST(LENGTH(l.bytes) AS BIGINT) FROM door_lists l WHERE l.door_id = d.id) FROM doors d";

type DoorMetaRow = (i64, i64, Option<String>, Option<Vec<u8>>, i64, Option<i64>);

fn door_meta(row: DoorMetaRow) -> (i64, DoorMeta) {
    let (id, generation, digest, device_key, capacity, stored_len) = row;
    (
        id,
        DoorMeta {
            generation,
            digest,
            device_key,
            capacity,
            stored_len,
        },
    )
}

/// What a door's compilation came to.
enum Compiled {
    /// The content is the one stored; the door's list error is to be this.
    Unchanged(Option<String>),
    /// The list does not fit the door's device: not stored, the door keeps its own.
    TooLarge(String),
    /// A new list, to store as generation `next` if the door is still where it was read.
    New {
        next: i64,
        digest: String,
        bytes: Vec<u8>,
    },
}

/// Builds a door's list from its entries and compares it with the stored one (CPU only).
fn compile_door(
    door_id: i64,
    meta: &DoorMeta,
    entries: &[Entry],
    key: &ed25519_dalek::SigningKey,
    card_keys: &chronolock_core::allowlist::CardMasterKeys,
    now: i64,
) -> Result<Compiled, ModelError> {
    // A list larger than the door's device can install is not stored (the door keeps the
    // one it has, and is not sent this one); the door's page and the dashboard say why.
    let too_large = |len: i64| meta.capacity > 0 && len > meta.capacity;
    // A paired door's keypad secrets are sealed to its device; a new device key (a new
    // pairing) is a change of content too.
    let list_key = meta
        .device_key
        .as_deref()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .map(|k| chronolock_core::protocol::list_key(&k));
    let canonical = chronolock_allowlist::compile(entries, 0, 0, key)
        .map_err(|e| invalid("list", e.to_string()))?;
    // A door with secure cards gets the site's card master keys, sealed to it (only a paired
    // door: a list sealed to no device never carries them). Doors without secure cards get
    // none, so that a stolen door of theirs gives none away.
    let with_card_keys =
        list_key.is_some() && entries.iter().any(|e| matches!(e, Entry::SecureCard(_)));
    let mut hasher = Sha256::new();
    hasher.update(&canonical[..canonical.len() - 64]);
    if let Some(k) = &list_key {
        hasher.update(Sha256::digest(k));
    }
    if with_card_keys {
        // A rotated master key is a change of content.
        let mut keys = Sha256::new();
        keys.update(card_keys.current.0);
        keys.update([card_keys.current.1]);
        if let Some((k, v)) = card_keys.previous {
            keys.update(k);
            keys.update([v]);
        }
        hasher.update(keys.finalize());
    }
    let new_digest = data_encoding::HEXLOWER.encode(&hasher.finalize());
    if meta.digest.as_deref() == Some(new_digest.as_str()) {
        let error = meta
            .stored_len
            .filter(|&len| too_large(len))
            .map(|len| list_too_large(len, meta.capacity, entries.len()));
        return Ok(Compiled::Unchanged(error));
    }
    let next = meta.generation + 1;
    let bytes = chronolock_allowlist::compile_for_door(
        entries,
        next as u64,
        now,
        key,
        list_key,
        with_card_keys.then_some(*card_keys),
    )
    .map_err(|e| invalid("list", e.to_string()))?;
    if too_large(bytes.len() as i64) {
        let error = list_too_large(bytes.len() as i64, meta.capacity, entries.len());
        tracing::warn!(door_id, %error, "list not compiled for the door");
        return Ok(Compiled::TooLarge(error));
    }
    Ok(Compiled::New {
        next,
        digest: new_digest,
        bytes,
    })
}

/// Stores a door's compiled list in `tx` if the door is still at `generation`; returns whether
/// it was stored (not: another process stored one meanwhile).
async fn store_list(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    door_id: i64,
    generation: i64,
    next: i64,
    digest: &str,
    bytes: &[u8],
) -> Result<bool, ModelError> {
    // The generation and its bytes change together: no sync sees one without the other.
    let updated = sqlx::query(
        "UPDATE doors SET generation = $1, list_digest = $2, list_error = NULL \
         WHERE id = $3 AND generation = $4",
    )
    .bind(next)
    .bind(digest)
    .bind(door_id)
    .bind(generation)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if updated == 1 {
        sqlx::query(
            "INSERT INTO door_lists (door_id, generation, bytes) VALUES ($1, $2, $3) \
             ON CONFLICT (door_id) DO UPDATE SET generation = excluded.generation, \
             bytes = excluded.bytes",
        )
        .bind(door_id)
        .bind(next)
        .bind(bytes)
        .execute(&mut **tx)
        .await?;
    }
    Ok(updated == 1)
}

/// Recompiles a door's list as of `now`; if its content changed, stores it under the next
/// generation and wakes the door's watch ([`crate::watch`]). Returns the door's generation.
pub async fn refresh_door(state: &AppState, door_id: i64, now: i64) -> Result<u64, ModelError> {
    let anchor = week_anchor(now).as_second();
    // Cleared before reading the model, so a change made while this compiles marks it again.
    sqlx::query("UPDATE doors SET list_dirty = 0, list_anchor = $1 WHERE id = $2")
        .bind(anchor)
        .bind(door_id)
        .execute(state.db.pool())
        .await?;
    for _attempt in 0..5 {
        let row: DoorMetaRow = sqlx::query_as(&format!("{DOOR_META} WHERE d.id = $1"))
            .bind(door_id)
            .fetch_optional(state.db.pool())
            .await?
            .ok_or(ModelError::NotFound)?;
        let (_, meta) = door_meta(row);
        // The site's data as read once: the door's entries and the card master keys.
        let data = SiteData::load_door(state, door_id, now).await?;
        let entries = data.entries(door_id, now)?;
        let (next, digest, bytes) = match compile_door(
            door_id,
            &meta,
            &entries,
            &state.signing_key,
            &data.card_keys,
            now,
        )? {
            Compiled::Unchanged(error) => {
                set_list_error(state, door_id, error.as_deref()).await?;
                return Ok(meta.generation as u64);
            }
            Compiled::TooLarge(error) => {
                set_list_error(state, door_id, Some(&error)).await?;
                return Ok(meta.generation as u64);
            }
            Compiled::New {
                next,
                digest,
                bytes,
            } => (next, digest, bytes),
        };
        let mut tx = state.db.pool().begin().await?;
        let stored = store_list(&mut tx, door_id, meta.generation, next, &digest, &bytes).await?;
        tx.commit().await?;
        if stored {
            // Syncs answered from memory see the new generation before the watch wakes.
            state.door_cache.reload_door(&state.db, door_id).await?;
            // The door's watch (if it holds one here) answers "sync now"; other server
            // processes notice through their database poll.
            state.watches.door_changed(door_id);
            return Ok(next as u64);
        }
        // Another process refreshed it meanwhile: read again.
    }
    Err(invalid(
        "list",
        "the door's list kept changing under concurrent updates; try again",
    ))
}

/// Due doors of one site from which the site's data is read once for all of them rather than
/// door by door.
const SITE_BATCH: usize = 8;

/// Recompiles the due doors of a site at once: the site's rules, members, schedules and
/// credentials read once, the lists built on every core, the changed ones stored in one
/// transaction. Returns how many doors were recompiled.
async fn refresh_site(state: &AppState, site_id: i64, now: i64) -> Result<usize, ModelError> {
    let anchor = week_anchor(now).as_second();
    // Cleared before reading the model, so a change made while this compiles marks it again.
    let due: Vec<(i64,)> = sqlx::query_as(
        "UPDATE doors SET list_dirty = 0, list_anchor = $1 WHERE site_id = $2 \
         AND (list_dirty <> 0 OR list_anchor IS NULL OR list_anchor < $1) RETURNING id",
    )
    .bind(anchor)
    .bind(site_id)
    .fetch_all(state.db.pool())
    .await?;
    let due: std::collections::HashSet<i64> = due.into_iter().map(|(id,)| id).collect();
    // In door order: the transaction below locks them in that order, as every transaction
    // that writes several doors does.
    let metas: Vec<DoorMetaRow> =
        sqlx::query_as(&format!("{DOOR_META} WHERE d.site_id = $1 ORDER BY d.id"))
            .bind(site_id)
            .fetch_all(state.db.pool())
            .await?;
    let metas: Vec<(i64, DoorMeta)> = metas
        .into_iter()
        .map(door_meta)
        .filter(|(id, _)| due.contains(id))
        .collect();
    let count = metas.len();
    let data = SiteData::load_site(state, site_id, now).await?;
    let key = std::sync::Arc::clone(&state.signing_key);
    // Building and signing is CPU work: off the async workers, on every core.
    let compiled = tokio::task::spawn_blocking(move || compile_doors(&data, &metas, &key, now))
        .await
        .map_err(|e| invalid("list", format!("compiling the site's lists: {e}")))??;
    let mut tx = state.db.pool().begin().await?;
    let mut changed = Vec::new();
    for (door_id, generation, compiled) in compiled {
        match compiled {
            Compiled::Unchanged(error) => {
                set_list_error_in(&mut tx, door_id, error.as_deref()).await?;
            }
            Compiled::TooLarge(error) => {
                set_list_error_in(&mut tx, door_id, Some(&error)).await?;
            }
            Compiled::New {
                next,
                digest,
                bytes,
            } => {
                if store_list(&mut tx, door_id, generation, next, &digest, &bytes).await? {
                    changed.push(door_id);
                } else {
                    // Another process stored a list meanwhile: this door is compiled again.
                    sqlx::query("UPDATE doors SET list_dirty = 1 WHERE id = $1")
                        .bind(door_id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
    }
    tx.commit().await?;
    if !changed.is_empty() {
        // Syncs answered from memory see the new generations before the watches wake.
        state.door_cache.reload_all(&state.db).await?;
        for door_id in changed {
            state.watches.door_changed(door_id);
        }
    }
    Ok(count)
}

/// Compiles `doors` of one site, split over the machine's cores.
fn compile_doors(
    data: &SiteData,
    doors: &[(i64, DoorMeta)],
    key: &ed25519_dalek::SigningKey,
    now: i64,
) -> Result<Vec<(i64, i64, Compiled)>, ModelError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let chunk = doors.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = doors
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(id, meta)| {
                            let entries = data.entries(*id, now)?;
                            let compiled =
                                compile_door(*id, meta, &entries, key, &data.card_keys, now)?;
                            Ok((*id, meta.generation, compiled))
                        })
                        .collect::<Result<Vec<_>, ModelError>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(doors.len());
        for handle in handles {
            let part = handle
                .join()
                .map_err(|_| invalid("list", "compiling a door's list failed"))??;
            all.extend(part);
        }
        Ok(all)
    })
}

/// What the admin reads when a door's list does not fit its device.
fn list_too_large(len: i64, capacity: i64, entries: usize) -> String {
    format!(
        "the list for this door ({entries} credentials, {len} bytes) is larger than its device \
         holds ({capacity} bytes): the door keeps its older list, and changes since (revocations \
         too) do not reach it. Give fewer people access here, or use a device with more flash."
    )
}

async fn set_list_error(
    state: &AppState,
    door_id: i64,
    error: Option<&str>,
) -> Result<(), ModelError> {
    let mut tx = state.db.pool().begin().await?;
    set_list_error_in(&mut tx, door_id, error).await?;
    tx.commit().await?;
    Ok(())
}

/// Sets a door's list error in `tx`; written only when it changes, so an unchanged door's
/// recompilation writes nothing.
async fn set_list_error_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    door_id: i64,
    error: Option<&str>,
) -> Result<(), ModelError> {
    sqlx::query(
        "UPDATE doors SET list_error = $1 WHERE id = $2 \
         AND COALESCE(list_error, '') <> COALESCE($1, '')",
    )
    .bind(error)
    .bind(door_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The rule that decides for one person at one door, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WinningRule {
    /// Its access type.
    pub access: AccessType,
    /// First valid moment (Unix seconds; 0 unbounded).
    pub valid_from: i64,
    /// Last valid moment (Unix seconds; 0 unbounded).
    pub valid_until: i64,
    /// Its schedule, for SCHEDULED.
    pub schedule_id: Option<i64>,
}

/// The winning rule for `person` at `door_id`, by the same precedence as the list compiler.
pub async fn winning_rule(
    state: &AppState,
    door_id: i64,
    person: i64,
) -> Result<Option<WinningRule>, ModelError> {
    type Row = (i64, i64, String, i64, i64, Option<i64>);
    let rules: Vec<Row> = sqlx::query_as(
        "SELECT r.id, 0, r.access, r.valid_from, r.valid_until, r.schedule_id FROM rules r \
         WHERE r.door_id = $1 AND r.person_id = $2 \
         UNION ALL \
         SELECT r.id, 1, r.access, r.valid_from, r.valid_until, r.schedule_id FROM rules r \
         JOIN group_members m ON m.group_id = r.group_id WHERE r.door_id = $1 AND m.person_id = $2",
    )
    .bind(door_id)
    .bind(person)
    .fetch_all(state.db.pool())
    .await?;
    Ok(rules
        .into_iter()
        .filter_map(|r| AccessType::from_name(&r.2).map(|a| (r, a)))
        .max_by_key(|(r, a)| (u8::from(r.1 == 0), precedence(*a), -r.0))
        .map(|(r, access)| WinningRule {
            access,
            valid_from: r.3,
            valid_until: r.4,
            schedule_id: r.5,
        }))
}

/// Whether a rule admits at `now`: inside its date range and, with a schedule, inside one of
/// its slots in the site's local time.
pub async fn rule_allows_at(
    state: &AppState,
    door_id: i64,
    rule: &WinningRule,
    now: i64,
) -> Result<bool, ModelError> {
    if (rule.valid_from != 0 && now < rule.valid_from)
        || (rule.valid_until != 0 && now > rule.valid_until)
    {
        return Ok(false);
    }
    let Some(schedule_id) = rule.schedule_id else {
        return Ok(true);
    };
    let (tz,): (String,) = sqlx::query_as(
        "SELECT s.timezone FROM doors d JOIN sites s ON s.id = d.site_id WHERE d.id = $1",
    )
    .bind(door_id)
    .fetch_one(state.db.pool())
    .await?;
    let zone = jiff::tz::TimeZone::get(&tz)
        .map_err(|_| invalid("timezone", format!("`{tz}` is not an IANA time zone")))?;
    let local = jiff::Timestamp::from_second(now)
        .map_err(|_| invalid("now", "out of range"))?
        .to_zoned(zone)
        .datetime();
    let weekday = local.weekday().to_monday_zero_offset() as u8;
    let minute = local.hour() as i32 * 60 + local.minute() as i32;
    let slots: Vec<(i32, i32, i32)> = sqlx::query_as(
        "SELECT days, start_min, end_min FROM schedule_slots WHERE schedule_id = $1",
    )
    .bind(schedule_id)
    .fetch_all(state.db.pool())
    .await?;
    Ok(slots.into_iter().any(|(days, start, end)| {
        let on = |d: u8| days & (1 << d) != 0;
        if start < end {
            on(weekday) && (start..end).contains(&minute)
        } else {
            // Across midnight: the evening part on a slot day, the morning part the day after.
            (on(weekday) && minute >= start) || (on((weekday + 6) % 7) && minute < end)
        }
    }))
}

/// Marks every door of a site for recompilation (after a change to people, groups, credentials,
/// schedules or rules) and recompiles them now. Returns how many doors were recompiled.
pub async fn site_changed(state: &AppState, site_id: i64) -> Result<usize, ModelError> {
    sqlx::query("UPDATE doors SET list_dirty = 1 WHERE site_id = $1")
        .bind(site_id)
        .execute(state.db.pool())
        .await?;
    refresh_due(state, crate::now_unix()).await
}

/// Recompiles the doors that are marked dirty or whose list was compiled for an earlier week
/// (schedules are compiled from the week's Monday). The server runs this periodically; it is safe
/// to run from several processes at once. Returns how many doors were recompiled.
pub async fn refresh_due(state: &AppState, now: i64) -> Result<usize, ModelError> {
    // One compiler per process; several processes still work (each door's update is
    // conditional on its generation).
    let _compiling = state.compiling.lock().await;
    let anchor = week_anchor(now).as_second();
    let due: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT id, site_id FROM doors \
         WHERE list_dirty <> 0 OR list_anchor IS NULL OR list_anchor < $1 ORDER BY id",
    )
    .bind(anchor)
    .fetch_all(state.db.pool())
    .await?;
    let mut by_site: std::collections::BTreeMap<i64, Vec<i64>> = std::collections::BTreeMap::new();
    for (door_id, site_id) in due {
        by_site.entry(site_id).or_default().push(door_id);
    }
    let mut count = 0;
    for (site_id, doors) in by_site {
        if doors.len() >= SITE_BATCH {
            count += refresh_site(state, site_id, now).await?;
        } else {
            for door_id in doors {
                refresh_door(state, door_id, now).await?;
                count += 1;
            }
        }
    }
    Ok(count)
}

/// A door's current signed list and generation, if it has been compiled.
pub async fn door_list(
    state: &AppState,
    door_id: i64,
) -> Result<Option<(u64, Vec<u8>)>, ModelError> {
    let row: Option<(i64, Option<i64>, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT d.id, l.generation, l.bytes FROM doors d \
         LEFT JOIN door_lists l ON l.door_id = d.id WHERE d.id = $1",
    )
    .bind(door_id)
    .fetch_optional(state.db.pool())
    .await?;
    let (_, generation, bytes) = row.ok_or(ModelError::NotFound)?;
    Ok(generation.zip(bytes).map(|(g, b)| (g as u64, b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn week_anchor_is_monday_midnight_utc() {
        // 2026-11-26 (Thursday) 12:00 UTC → Monday 2026-11-23 00:00 UTC.
        assert_eq!(week_anchor(1_795_694_400).as_second(), 1_795_392_000);
        assert_eq!(week_anchor(1_795_392_000).as_second(), 1_795_392_000);
    }
}
