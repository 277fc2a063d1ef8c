//! What the admin UI's editors read, rename and delete in the site model. Creating things (and
//! the checks that go with it) stays in [`crate::model`]; this module owns the lists, the
//! lookups and the edits after creation.
//!
//! Every lookup is scoped to a site (or to a person or schedule of it), so an id from another
//! site reads as "not found" rather than leaking or changing someone else's rows. Functions that
//! change a door's list leave calling [`crate::model::site_changed`] to the caller, which knows
//! when a batch of edits is complete.

use jiff::tz::TimeZone;

use crate::model::{invalid, unique_violation, ModelError};
use crate::schedule::{self, LocalSlot};
use crate::AppState;

/// The same rule as the model's creation functions: trimmed, 1 to 100 characters.
fn name_field(name: &str) -> Result<String, ModelError> {
    crate::model::name_field("name", name)
}

/// Renames a row of a site's table (`doors`, `people`, `groups`, `schedules`); `taken` is the
/// message when the table's names are unique and the name is in use.
async fn rename_row(
    state: &AppState,
    table: &'static str,
    site_id: i64,
    id: i64,
    name: &str,
    taken: &str,
) -> Result<(), ModelError> {
    let name = name_field(name)?;
    let rows = sqlx::query(&format!(
        "UPDATE {table} SET name = $1 WHERE site_id = $2 AND id = $3"
    ))
    .bind(name)
    .bind(site_id)
    .bind(id)
    .execute(state.db.pool())
    .await
    .map_err(|e| unique_violation(e, "name", taken))?
    .rows_affected();
    changed(rows)
}

/// Deletes a row of a site's table; what hangs off it goes with it (foreign keys cascade).
async fn delete_row(
    state: &AppState,
    table: &'static str,
    site_id: i64,
    id: i64,
) -> Result<(), ModelError> {
    let rows = sqlx::query(&format!(
        "DELETE FROM {table} WHERE site_id = $1 AND id = $2"
    ))
    .bind(site_id)
    .bind(id)
    .execute(state.db.pool())
    .await?
    .rows_affected();
    changed(rows)
}

/// `Ok(())` if a statement changed a row, else [`ModelError::NotFound`].
fn changed(rows: u64) -> Result<(), ModelError> {
    if rows == 0 {
        Err(ModelError::NotFound)
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Site

/// A site: its name and IANA time zone.
#[derive(Clone, Debug)]
pub struct Site {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// IANA time zone name, e.g. `Europe/Berlin`.
    pub timezone: String,
    /// The NTP servers its doors ask, separated by spaces (`None`: the doors' built-in
    /// `pool.ntp.org` and `time.cloudflare.com`).
    pub ntp_servers: Option<String>,
}

impl Site {
    /// The site's zone (UTC if the stored name is unknown to this build's time zone database).
    pub fn zone(&self) -> TimeZone {
        TimeZone::get(&self.timezone).unwrap_or(TimeZone::UTC)
    }
}

/// The site the admin UI works on: the first one created.
pub async fn first_site(state: &AppState) -> Result<Option<Site>, ModelError> {
    let row: Option<(i64, String, String, Option<String>)> =
        sqlx::query_as("SELECT id, name, timezone, ntp_servers FROM sites ORDER BY id LIMIT 1")
            .fetch_optional(state.db.pool())
            .await?;
    Ok(row.map(|(id, name, timezone, ntp_servers)| Site {
        id,
        name,
        timezone,
        ntp_servers,
    }))
}

/// Sets the NTP servers a site's doors ask: 1 to 4 host names or addresses (`host` or
/// `host:port`), or nothing for the doors' built-in ones. Doors take them at their next sync.
pub async fn set_site_ntp_servers(
    state: &AppState,
    site_id: i64,
    servers: &str,
) -> Result<(), ModelError> {
    let stored = if servers.trim().is_empty() {
        None
    } else {
        let parsed = chronolock_core::config::parse_ntp_servers(servers)
            .map_err(|e| invalid("ntp_servers", e.as_str()))?;
        let joined = parsed
            .iter()
            .map(|h| h.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let most = chronolock_core::protocol::NTP_FIELD_LEN;
        if joined.len() > most {
            return Err(invalid(
                "ntp_servers",
                format!("at most {most} characters in all"),
            ));
        }
        Some(joined)
    };
    let rows = sqlx::query("UPDATE sites SET ntp_servers = $1 WHERE id = $2")
        .bind(stored)
        .bind(site_id)
        .execute(state.db.pool())
        .await?
        .rows_affected();
    state.door_cache.reload_site(&state.db, site_id).await?;
    changed(rows)
}

/// Renames a site and sets its time zone (checked against the IANA database).
pub async fn update_site(
    state: &AppState,
    site_id: i64,
    name: &str,
    timezone: &str,
) -> Result<(), ModelError> {
    let name = name_field(name)?;
    let timezone = timezone.trim();
    TimeZone::get(timezone)
        .map_err(|_| invalid("timezone", format!("`{timezone}` is not an IANA time zone")))?;
    let rows = sqlx::query("UPDATE sites SET name = $1, timezone = $2 WHERE id = $3")
        .bind(name)
        .bind(timezone.to_string())
        .bind(site_id)
        .execute(state.db.pool())
        .await?
        .rows_affected();
    changed(rows)
}

// ---------------------------------------------------------------------------------------------
// Doors

/// A door as the editors show it.
#[derive(Clone, Debug)]
pub struct Door {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Generation of its current list (0: never compiled).
    pub generation: i64,
    /// When a device enrolled with a pairing code, if one has.
    pub paired_at: Option<i64>,
    /// Whether a device key is set.
    pub paired: bool,
    /// Last authenticated sync (server Unix seconds).
    pub last_sync: Option<i64>,
    /// Until when an unused pairing code is valid.
    pub pairing_expires: Option<i64>,
    /// Size of its signed list in bytes.
    pub list_len: Option<i64>,
    /// Why the newest list was not compiled for the door's device (it is too large).
    pub list_error: Option<String>,
}

type DoorRow = (
    i64,
    String,
    i64,
    Option<i64>,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

const DOOR_COLUMNS: &str = "SELECT id, name, generation, paired_at, \
    CASE WHEN device_key IS NULL THEN 0 ELSE 1 END, last_sync, \
    CASE WHEN pairing_hash IS NULL THEN NULL ELSE pairing_expires END, \
    (SELECT CAST(LENGTH(l.bytes) AS BIGINT) FROM door_lists l WHERE l.door_id = doors.id), \
    list_error FROM doors";

fn door_of(r: DoorRow) -> Door {
    Door {
        id: r.0,
        name: r.1,
        generation: r.2,
        paired_at: r.3,
        paired: r.4 != 0,
        last_sync: r.5,
        pairing_expires: r.6,
        list_len: r.7,
        list_error: r.8,
    }
}

/// The site's doors, by name.
pub async fn doors(state: &AppState, site_id: i64) -> Result<Vec<Door>, ModelError> {
    let rows: Vec<DoorRow> = sqlx::query_as(&format!(
        "{DOOR_COLUMNS} WHERE site_id = $1 ORDER BY name, id"
    ))
    .bind(site_id)
    .fetch_all(state.db.pool())
    .await?;
    Ok(rows.into_iter().map(door_of).collect())
}

/// One door of the site.
pub async fn door(state: &AppState, site_id: i64, door_id: i64) -> Result<Door, ModelError> {
    let row: Option<DoorRow> =
        sqlx::query_as(&format!("{DOOR_COLUMNS} WHERE site_id = $1 AND id = $2"))
            .bind(site_id)
            .bind(door_id)
            .fetch_optional(state.db.pool())
            .await?;
    row.map(door_of).ok_or(ModelError::NotFound)
}

/// Renames a door (names are unique within the site).
pub async fn rename_door(
    state: &AppState,
    site_id: i64,
    door_id: i64,
    name: &str,
) -> Result<(), ModelError> {
    rename_row(
        state,
        "doors",
        site_id,
        door_id,
        name,
        "a door of this name exists",
    )
    .await
}

/// Deletes a door with its rules and events.
pub async fn delete_door(state: &AppState, site_id: i64, door_id: i64) -> Result<(), ModelError> {
    delete_row(state, "doors", site_id, door_id).await?;
    // Its device is refused from now on.
    state.door_cache.reload_door(&state.db, door_id).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// People, cards, keypad codes

/// A person.
#[derive(Clone, Debug)]
pub struct Person {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// E-mail, member number, note and expiry.
    pub details: PersonDetails,
}

/// What the admin keeps about a person besides the name; every field optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersonDetails {
    /// E-mail address.
    pub email: Option<String>,
    /// Member number, unique within the site.
    pub member_number: Option<String>,
    /// A free note.
    pub note: Option<String>,
    /// The last day the person may enter, a local date in the site's zone: after its end
    /// (local midnight) their cards and codes open no door.
    pub expires_on: Option<jiff::civil::Date>,
}

impl PersonDetails {
    /// Reads and checks the fields as the forms and imports give them (text; empty means
    /// none). The error names the field: `email`, `member_number`, `note` or `expiry`.
    pub fn parse(
        email: &str,
        member_number: &str,
        note: &str,
        expiry: &str,
    ) -> Result<PersonDetails, ModelError> {
        let opt = |s: &str| {
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_string())
        };
        let email = opt(email);
        if let Some(e) = &email {
            let ok = e.chars().count() <= 254
                && !e.chars().any(char::is_whitespace)
                && e.split_once('@')
                    .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'));
            if !ok {
                return Err(invalid("email", "an address like name@example.org"));
            }
        }
        let member_number = opt(member_number);
        if member_number
            .as_ref()
            .is_some_and(|m| m.chars().count() > 50)
        {
            return Err(invalid("member_number", "at most 50 characters"));
        }
        let note = opt(note);
        if note.as_ref().is_some_and(|n| n.chars().count() > 1000) {
            return Err(invalid("note", "at most 1000 characters"));
        }
        let expires_on = match opt(expiry) {
            None => None,
            Some(text) => Some(
                text.parse::<jiff::civil::Date>()
                    .ok()
                    .filter(|d| d.year() >= 1970)
                    .ok_or_else(|| {
                        invalid("expiry", format!("a date like 2026-12-31, not `{text}`"))
                    })?,
            ),
        };
        Ok(PersonDetails {
            email,
            member_number,
            note,
            expires_on,
        })
    }

    /// Whether the person's last day has ended at `now` (Unix seconds), in `zone`.
    pub fn expired(&self, zone: &TimeZone, now: i64) -> bool {
        self.expires_on
            .and_then(|d| crate::model::end_of_local_day(zone, d))
            .is_some_and(|end| end < now)
    }
}

/// The columns that make a [`PersonDetails`], in order.
pub(crate) const DETAIL_COLUMNS: &str = "email, member_number, note, expires_on";

type DetailRow = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn details_of((email, member_number, note, expires_on): DetailRow) -> PersonDetails {
    PersonDetails {
        email,
        member_number,
        note,
        expires_on: expires_on.and_then(|d| d.parse().ok()),
    }
}

/// A person in the list, with how many credentials they have.
#[derive(Clone, Debug)]
pub struct PersonSummary {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Number of cards.
    pub cards: i64,
    /// Number of keypad codes.
    pub keypad_codes: i64,
    /// E-mail, member number, note and expiry.
    pub details: PersonDetails,
}

/// The site's people whose name (or e-mail, or member number) contains `search`
/// (case-insensitive; empty: everyone), by name.
///
/// Matching is done here rather than in SQL so that it folds case the same way for every
/// alphabet on both databases.
pub async fn people(
    state: &AppState,
    site_id: i64,
    search: &str,
) -> Result<Vec<PersonSummary>, ModelError> {
    type Row = (
        i64,
        String,
        i64,
        i64,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT p.id, p.name, \
         (SELECT COUNT(*) FROM cards c WHERE c.person_id = p.id), \
         (SELECT COUNT(*) FROM keypad_users k WHERE k.person_id = p.id), \
         p.email, p.member_number, p.note, p.expires_on \
         FROM people p WHERE p.site_id = $1 ORDER BY p.name, p.id",
    )
    .bind(site_id)
    .fetch_all(state.db.pool())
    .await?;
    let needle = search.trim().to_lowercase();
    let matches = |text: &Option<String>| {
        text.as_deref()
            .is_some_and(|t| t.to_lowercase().contains(&needle))
    };
    Ok(rows
        .into_iter()
        .filter(|r| {
            needle.is_empty()
                || r.1.to_lowercase().contains(&needle)
                || matches(&r.4)
                || matches(&r.5)
        })
        .map(|r| PersonSummary {
            id: r.0,
            name: r.1,
            cards: r.2,
            keypad_codes: r.3,
            details: details_of((r.4, r.5, r.6, r.7)),
        })
        .collect())
}

/// One person of the site.
pub async fn person(state: &AppState, site_id: i64, person_id: i64) -> Result<Person, ModelError> {
    type Row = (
        i64,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT id, name, {DETAIL_COLUMNS} FROM people WHERE site_id = $1 AND id = $2"
    ))
    .bind(site_id)
    .bind(person_id)
    .fetch_optional(state.db.pool())
    .await?;
    row.map(|r| Person {
        id: r.0,
        name: r.1,
        details: details_of((r.2, r.3, r.4, r.5)),
    })
    .ok_or(ModelError::NotFound)
}

/// Sets a person's e-mail, member number, note and expiry (member numbers are unique within
/// the site). Changing the expiry changes the doors' lists: the caller recompiles.
pub async fn set_person_details(
    state: &AppState,
    site_id: i64,
    person_id: i64,
    details: &PersonDetails,
) -> Result<(), ModelError> {
    let rows = sqlx::query(
        "UPDATE people SET email = $1, member_number = $2, note = $3, expires_on = $4 \
         WHERE site_id = $5 AND id = $6",
    )
    .bind(details.email.clone())
    .bind(details.member_number.clone())
    .bind(details.note.clone())
    .bind(details.expires_on.map(|d| d.to_string()))
    .bind(site_id)
    .bind(person_id)
    .execute(state.db.pool())
    .await
    .map_err(|e| {
        unique_violation(
            e,
            "member_number",
            "another person of this site has this member number",
        )
    })?
    .rows_affected();
    changed(rows)
}

/// Renames a person.
pub async fn rename_person(
    state: &AppState,
    site_id: i64,
    person_id: i64,
    name: &str,
) -> Result<(), ModelError> {
    rename_row(
        state,
        "people",
        site_id,
        person_id,
        name,
        "this name is taken",
    )
    .await
}

/// Deletes a person with their cards, keypad codes, memberships and rules.
pub async fn delete_person(
    state: &AppState,
    site_id: i64,
    person_id: i64,
) -> Result<(), ModelError> {
    delete_row(state, "people", site_id, person_id).await
}

/// A card.
#[derive(Clone, Debug)]
pub struct Card {
    /// Row id.
    pub id: i64,
    /// UID, upper-case hex.
    pub uid: String,
    /// A secure card: it proves a key only it and the site hold. Otherwise its UID alone
    /// opens, and anyone who reads it can copy it.
    pub secure: bool,
}

/// A person's cards.
pub async fn cards(state: &AppState, person_id: i64) -> Result<Vec<Card>, ModelError> {
    let rows: Vec<(i64, String, i64)> =
        sqlx::query_as("SELECT id, uid, secure FROM cards WHERE person_id = $1 ORDER BY uid")
            .bind(person_id)
            .fetch_all(state.db.pool())
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, uid, secure)| Card {
            id,
            uid,
            secure: secure != 0,
        })
        .collect())
}

/// Removes one of a person's cards.
pub async fn delete_card(state: &AppState, person_id: i64, card_id: i64) -> Result<(), ModelError> {
    let rows = sqlx::query("DELETE FROM cards WHERE person_id = $1 AND id = $2")
        .bind(person_id)
        .bind(card_id)
        .execute(state.db.pool())
        .await?
        .rows_affected();
    changed(rows)
}

/// A keypad user code; which secrets it has, never the secrets themselves.
#[derive(Clone, Debug)]
pub struct KeypadCode {
    /// Row id.
    pub id: i64,
    /// Whose.
    pub person_id: i64,
    /// User code, 1–8 digits.
    pub code: String,
    /// Whether a TOTP secret is enrolled.
    pub totp: bool,
    /// Whether HOTP backup codes were issued.
    pub hotp: bool,
}

type KeypadRow = (i64, i64, String, i64, i64);
const KEYPAD_COLUMNS: &str = "SELECT id, person_id, code, \
    CASE WHEN totp_secret IS NULL THEN 0 ELSE 1 END, \
    CASE WHEN hotp_secret IS NULL THEN 0 ELSE 1 END FROM keypad_users";

fn keypad_of(r: KeypadRow) -> KeypadCode {
    KeypadCode {
        id: r.0,
        person_id: r.1,
        code: r.2,
        totp: r.3 != 0,
        hotp: r.4 != 0,
    }
}

/// A person's keypad codes.
pub async fn keypad_codes(state: &AppState, person_id: i64) -> Result<Vec<KeypadCode>, ModelError> {
    let rows: Vec<KeypadRow> = sqlx::query_as(&format!(
        "{KEYPAD_COLUMNS} WHERE person_id = $1 ORDER BY code"
    ))
    .bind(person_id)
    .fetch_all(state.db.pool())
    .await?;
    Ok(rows.into_iter().map(keypad_of).collect())
}

/// The keypad code `code`, whoever it belongs to (user codes are unique across the server).
pub async fn keypad_code_by_code(
    state: &AppState,
    code: &str,
) -> Result<Option<KeypadCode>, ModelError> {
    let row: Option<KeypadRow> = sqlx::query_as(&format!("{KEYPAD_COLUMNS} WHERE code = $1"))
        .bind(code)
        .fetch_optional(state.db.pool())
        .await?;
    Ok(row.map(keypad_of))
}

/// Which secret of a keypad code to set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    /// The TOTP secret (authenticator app).
    Totp,
    /// The HOTP secret (printed backup codes).
    Hotp,
}

/// Sets (or replaces) one secret of a person's keypad code, and returns the HOTP counter the
/// doors start from. The secret is base32 as the list compiler reads it
/// ([`chronolock_allowlist::decode_secret`]).
///
/// A door remembers, per user code, the next HOTP counter it accepts and never goes back. So a
/// replacement HOTP secret does not restart at 0: its counter starts `hotp_advance` (the length
/// of a sheet) past the old one, beyond every code of the old sheet; otherwise the new sheet's
/// first codes would read as replays at a door that saw old ones used.
pub async fn set_keypad_secret(
    state: &AppState,
    person_id: i64,
    keypad_id: i64,
    kind: SecretKind,
    secret_base32: &str,
    hotp_advance: i64,
) -> Result<i64, ModelError> {
    let field = match kind {
        SecretKind::Totp => "totp_secret",
        SecretKind::Hotp => "hotp_secret",
    };
    chronolock_allowlist::decode_secret(secret_base32, field).map_err(|m| invalid(field, m))?;
    let query = match kind {
        SecretKind::Totp => sqlx::query_as(
            "UPDATE keypad_users SET totp_secret = $1 WHERE person_id = $2 AND id = $3 \
             RETURNING hotp_counter",
        ),
        SecretKind::Hotp => sqlx::query_as(
            "UPDATE keypad_users SET hotp_secret = $1, hotp_counter = \
             CASE WHEN hotp_secret IS NULL THEN hotp_counter ELSE hotp_counter + $4 END \
             WHERE person_id = $2 AND id = $3 RETURNING hotp_counter",
        ),
    };
    let mut query = query
        .bind(secret_base32.to_string())
        .bind(person_id)
        .bind(keypad_id);
    if kind == SecretKind::Hotp {
        query = query.bind(hotp_advance);
    }
    let row: Option<(i64,)> = query.fetch_optional(state.db.pool()).await?;
    row.map(|(counter,)| counter).ok_or(ModelError::NotFound)
}

/// Removes one of a person's keypad codes.
pub async fn delete_keypad_code(
    state: &AppState,
    person_id: i64,
    keypad_id: i64,
) -> Result<(), ModelError> {
    let rows = sqlx::query("DELETE FROM keypad_users WHERE person_id = $1 AND id = $2")
        .bind(person_id)
        .bind(keypad_id)
        .execute(state.db.pool())
        .await?
        .rows_affected();
    changed(rows)
}

// ---------------------------------------------------------------------------------------------
// Groups

/// A group.
#[derive(Clone, Debug)]
pub struct Group {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Number of members.
    pub members: i64,
}

const GROUP_COLUMNS: &str = "SELECT g.id, g.name, \
    (SELECT COUNT(*) FROM group_members m WHERE m.group_id = g.id) FROM groups g";

/// The site's groups, by name.
pub async fn groups(state: &AppState, site_id: i64) -> Result<Vec<Group>, ModelError> {
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(&format!(
        "{GROUP_COLUMNS} WHERE g.site_id = $1 ORDER BY g.name"
    ))
    .bind(site_id)
    .fetch_all(state.db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, members)| Group { id, name, members })
        .collect())
}

/// One group of the site.
pub async fn group(state: &AppState, site_id: i64, group_id: i64) -> Result<Group, ModelError> {
    let row: Option<(i64, String, i64)> = sqlx::query_as(&format!(
        "{GROUP_COLUMNS} WHERE g.site_id = $1 AND g.id = $2"
    ))
    .bind(site_id)
    .bind(group_id)
    .fetch_optional(state.db.pool())
    .await?;
    row.map(|(id, name, members)| Group { id, name, members })
        .ok_or(ModelError::NotFound)
}

/// The groups a person belongs to, by name.
pub async fn groups_of(state: &AppState, person_id: i64) -> Result<Vec<Group>, ModelError> {
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(&format!(
        "{GROUP_COLUMNS} JOIN group_members pm ON pm.group_id = g.id WHERE pm.person_id = $1 ORDER BY g.name"
    ))
    .bind(person_id)
    .fetch_all(state.db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, members)| Group { id, name, members })
        .collect())
}

/// A group's members, by name.
pub async fn members(state: &AppState, group_id: i64) -> Result<Vec<Person>, ModelError> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT p.id, p.name FROM people p JOIN group_members m ON m.person_id = p.id \
         WHERE m.group_id = $1 ORDER BY p.name, p.id",
    )
    .bind(group_id)
    .fetch_all(state.db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name)| Person {
            id,
            name,
            details: PersonDetails::default(),
        })
        .collect())
}

/// Renames a group (names are unique within the site).
pub async fn rename_group(
    state: &AppState,
    site_id: i64,
    group_id: i64,
    name: &str,
) -> Result<(), ModelError> {
    rename_row(
        state,
        "groups",
        site_id,
        group_id,
        name,
        "a group of this name exists",
    )
    .await
}

/// Deletes a group with its memberships and rules (the people stay).
pub async fn delete_group(state: &AppState, site_id: i64, group_id: i64) -> Result<(), ModelError> {
    delete_row(state, "groups", site_id, group_id).await
}

/// Takes a person out of a group.
pub async fn remove_member(
    state: &AppState,
    group_id: i64,
    person_id: i64,
) -> Result<(), ModelError> {
    let rows = sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND person_id = $2")
        .bind(group_id)
        .bind(person_id)
        .execute(state.db.pool())
        .await?
        .rows_affected();
    changed(rows)
}

// ---------------------------------------------------------------------------------------------
// Schedules

/// A weekly schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Number of slots.
    pub slots: i64,
    /// Number of rules that use it.
    pub rules: i64,
}

const SCHEDULE_COLUMNS: &str = "SELECT s.id, s.name, \
    (SELECT COUNT(*) FROM schedule_slots x WHERE x.schedule_id = s.id), \
    (SELECT COUNT(*) FROM rules r WHERE r.schedule_id = s.id) FROM schedules s";

fn schedule_of((id, name, slots, rules): (i64, String, i64, i64)) -> Schedule {
    Schedule {
        id,
        name,
        slots,
        rules,
    }
}

/// The site's schedules, by name.
pub async fn schedules(state: &AppState, site_id: i64) -> Result<Vec<Schedule>, ModelError> {
    let rows: Vec<(i64, String, i64, i64)> = sqlx::query_as(&format!(
        "{SCHEDULE_COLUMNS} WHERE s.site_id = $1 ORDER BY s.name"
    ))
    .bind(site_id)
    .fetch_all(state.db.pool())
    .await?;
    Ok(rows.into_iter().map(schedule_of).collect())
}

/// One schedule of the site.
pub async fn schedule(
    state: &AppState,
    site_id: i64,
    schedule_id: i64,
) -> Result<Schedule, ModelError> {
    let row: Option<(i64, String, i64, i64)> = sqlx::query_as(&format!(
        "{SCHEDULE_COLUMNS} WHERE s.site_id = $1 AND s.id = $2"
    ))
    .bind(site_id)
    .bind(schedule_id)
    .fetch_optional(state.db.pool())
    .await?;
    row.map(schedule_of).ok_or(ModelError::NotFound)
}

/// A schedule's slots (row id and slot), in the order they were added.
pub async fn slots(
    state: &AppState,
    schedule_id: i64,
) -> Result<Vec<(i64, LocalSlot)>, ModelError> {
    let rows: Vec<(i64, i32, i32, i32)> = sqlx::query_as(
        "SELECT id, days, start_min, end_min FROM schedule_slots WHERE schedule_id = $1 ORDER BY id",
    )
    .bind(schedule_id)
    .fetch_all(state.db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, days, start, end)| {
            (
                id,
                LocalSlot {
                    days: u8::try_from(days).unwrap_or(0),
                    start_min: u16::try_from(start).unwrap_or(0),
                    end_min: u16::try_from(end).unwrap_or(0),
                },
            )
        })
        .collect())
}

/// Checks a slot the way the compiler will read it.
pub fn check_slot(slot: &LocalSlot) -> Result<(), ModelError> {
    schedule::compile(&TimeZone::UTC, &[*slot], jiff::Timestamp::UNIX_EPOCH, 1)
        .map(|_| ())
        .map_err(|e| invalid("slots", e.to_string()))
}

/// Adds a slot to a schedule.
pub async fn add_slot(
    state: &AppState,
    schedule_id: i64,
    slot: &LocalSlot,
) -> Result<i64, ModelError> {
    check_slot(slot)?;
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO schedule_slots (schedule_id, days, start_min, end_min) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(schedule_id)
    .bind(i32::from(slot.days))
    .bind(i32::from(slot.start_min))
    .bind(i32::from(slot.end_min))
    .fetch_one(state.db.pool())
    .await?;
    Ok(id)
}

/// Removes a slot, unless it is the schedule's last (a schedule has at least one slot, as when
/// it was created; delete the schedule instead). Checked and deleted in one transaction.
pub async fn delete_slot(
    state: &AppState,
    schedule_id: i64,
    slot_id: i64,
) -> Result<(), ModelError> {
    let mut tx = state.db.pool().begin().await?;
    // Lock the schedule first, so two removals at once cannot both see a second slot left.
    sqlx::query("UPDATE schedules SET name = name WHERE id = $1")
        .bind(schedule_id)
        .execute(&mut *tx)
        .await?;
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM schedule_slots WHERE schedule_id = $1")
        .bind(schedule_id)
        .fetch_one(&mut *tx)
        .await?;
    let rows = sqlx::query("DELETE FROM schedule_slots WHERE schedule_id = $1 AND id = $2")
        .bind(schedule_id)
        .bind(slot_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    changed(rows)?;
    if n <= 1 {
        // Dropping the transaction rolls the delete back.
        return Err(invalid(
            "slots",
            "a schedule keeps at least one slot; delete the schedule instead",
        ));
    }
    tx.commit().await?;
    Ok(())
}

/// Renames a schedule (names are unique within the site).
pub async fn rename_schedule(
    state: &AppState,
    site_id: i64,
    schedule_id: i64,
    name: &str,
) -> Result<(), ModelError> {
    rename_row(
        state,
        "schedules",
        site_id,
        schedule_id,
        name,
        "a schedule of this name exists",
    )
    .await
}

/// Deletes a schedule that no rule uses (a SCHEDULED rule without its schedule would open at
/// any hour of its date range, so the rules must go or change first).
pub async fn delete_schedule(
    state: &AppState,
    site_id: i64,
    schedule_id: i64,
) -> Result<(), ModelError> {
    let rows = sqlx::query(
        "DELETE FROM schedules WHERE site_id = $1 AND id = $2 \
         AND NOT EXISTS (SELECT 1 FROM rules r WHERE r.schedule_id = $2)",
    )
    .bind(site_id)
    .bind(schedule_id)
    .execute(state.db.pool())
    .await?
    .rows_affected();
    if rows == 0 {
        // Either it does not exist, or rules use it: say which.
        let s = schedule(state, site_id, schedule_id).await?;
        return Err(invalid(
            "schedule",
            format!(
                "{} rule(s) use this schedule; delete them first",
                s.rules.max(1)
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Holidays

/// A holiday on the site calendar with the names of the schedules it closes.
#[derive(Clone, Debug)]
pub struct HolidayRow {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Its days; `None` if the stored days do not read as dates (shown as such, never compiled
    /// silently).
    pub holiday: Option<schedule::Holiday>,
    /// The stored first and last day, as text.
    pub days: (String, String),
    /// Whether it repeats every year.
    pub yearly: bool,
    /// The schedules it closes, by name.
    pub schedules: Vec<String>,
}

/// The site's holidays, by first day.
pub async fn holidays(state: &AppState, site_id: i64) -> Result<Vec<HolidayRow>, ModelError> {
    let rows: Vec<(i64, String, String, String, i32)> = sqlx::query_as(
        "SELECT id, name, first_day, last_day, yearly FROM holidays WHERE site_id = $1 \
         ORDER BY first_day, id",
    )
    .bind(site_id)
    .fetch_all(state.db.pool())
    .await?;
    let links: Vec<(i64, String)> = sqlx::query_as(
        "SELECT l.holiday_id, s.name FROM holiday_schedules l \
         JOIN schedules s ON s.id = l.schedule_id WHERE s.site_id = $1 ORDER BY s.name",
    )
    .bind(site_id)
    .fetch_all(state.db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, first, last, yearly)| {
            let holiday = match (first.parse(), last.parse()) {
                (Ok(first), Ok(last)) => Some(schedule::Holiday {
                    first,
                    last,
                    yearly: yearly != 0,
                }),
                _ => None,
            };
            HolidayRow {
                id,
                name,
                holiday,
                days: (first, last),
                yearly: yearly != 0,
                schedules: links
                    .iter()
                    .filter(|(h, _)| *h == id)
                    .map(|(_, s)| s.clone())
                    .collect(),
            }
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Rules

/// A rule with the names of what it refers to.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Row id.
    pub id: i64,
    /// The door.
    pub door_id: i64,
    /// The door's name.
    pub door_name: String,
    /// Who.
    pub subject: crate::model::Subject,
    /// The person's or group's name.
    pub subject_name: String,
    /// Access type name (`UNRESTRICTED`, …).
    pub access: String,
    /// Unix seconds, 0 for unbounded.
    pub valid_from: i64,
    /// Unix seconds (inclusive), 0 for unbounded.
    pub valid_until: i64,
    /// The schedule, if any.
    pub schedule: Option<(i64, String)>,
}

/// Which rules to list.
#[derive(Clone, Copy, Debug)]
pub enum RuleFilter {
    /// Every rule of the site.
    All,
    /// The rules naming a door.
    Door(i64),
    /// The rules for a person, directly or through their groups.
    Person(i64),
    /// The rules for a group.
    Group(i64),
    /// The rules using a schedule.
    Schedule(i64),
}

type RuleRow = (
    i64,
    i64,
    String,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<String>,
    String,
    i64,
    i64,
    Option<i64>,
    Option<String>,
);

fn rule_of(r: RuleRow) -> Rule {
    let (subject, subject_name) = match (r.3, r.4, r.5, r.6) {
        (Some(p), name, _, _) => (crate::model::Subject::Person(p), name.unwrap_or_default()),
        (None, _, Some(g), name) => (crate::model::Subject::Group(g), name.unwrap_or_default()),
        // The table's CHECK makes this impossible; show it rather than fail the page.
        (None, _, None, _) => (crate::model::Subject::Person(0), String::new()),
    };
    Rule {
        id: r.0,
        door_id: r.1,
        door_name: r.2,
        subject,
        subject_name,
        access: r.7,
        valid_from: r.8,
        valid_until: r.9,
        schedule: r.10.zip(r.11),
    }
}

const RULE_COLUMNS: &str =
    "SELECT r.id, r.door_id, d.name, r.person_id, p.name, r.group_id, g.name, \
    r.access, r.valid_from, r.valid_until, r.schedule_id, s.name \
    FROM rules r JOIN doors d ON d.id = r.door_id \
    LEFT JOIN people p ON p.id = r.person_id \
    LEFT JOIN groups g ON g.id = r.group_id \
    LEFT JOIN schedules s ON s.id = r.schedule_id \
    WHERE d.site_id = $1";

/// The site's rules that match `filter`, by door name.
pub async fn rules(
    state: &AppState,
    site_id: i64,
    filter: RuleFilter,
) -> Result<Vec<Rule>, ModelError> {
    let (condition, id) = match filter {
        RuleFilter::All => ("", 0),
        RuleFilter::Door(id) => (" AND r.door_id = $2", id),
        RuleFilter::Group(id) => (" AND r.group_id = $2", id),
        RuleFilter::Schedule(id) => (" AND r.schedule_id = $2", id),
        RuleFilter::Person(id) => (
            " AND (r.person_id = $2 OR r.group_id IN (SELECT group_id FROM group_members WHERE person_id = $2))",
            id,
        ),
    };
    let sql = format!("{RULE_COLUMNS}{condition} ORDER BY d.name, r.id");
    let mut query = sqlx::query_as::<_, RuleRow>(&sql).bind(site_id);
    if !condition.is_empty() {
        query = query.bind(id);
    }
    let rows = query.fetch_all(state.db.pool()).await?;
    Ok(rows.into_iter().map(rule_of).collect())
}

/// One rule of the site.
pub async fn rule(state: &AppState, site_id: i64, rule_id: i64) -> Result<Rule, ModelError> {
    let row: Option<RuleRow> = sqlx::query_as(&format!("{RULE_COLUMNS} AND r.id = $2"))
        .bind(site_id)
        .bind(rule_id)
        .fetch_optional(state.db.pool())
        .await?;
    row.map(rule_of).ok_or(ModelError::NotFound)
}

/// Deletes a rule of the site.
pub async fn delete_rule(state: &AppState, site_id: i64, rule_id: i64) -> Result<(), ModelError> {
    let rows = sqlx::query(
        "DELETE FROM rules WHERE id = $1 AND door_id IN (SELECT id FROM doors WHERE site_id = $2)",
    )
    .bind(rule_id)
    .bind(site_id)
    .execute(state.db.pool())
    .await?
    .rows_affected();
    changed(rows)
}
