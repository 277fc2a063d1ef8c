//! What the admin watches: the dashboard of doors, the access log (with live updates over
//! server-sent events), and per-door charts of battery voltage and clock offset.
//!
//! Everything here only reads the database, so every server process sharing it answers alike.
//! That includes the log's live stream: it polls the database for newer rows instead of
//! listening to signals inside one process, so an event stored by one replica reaches an admin
//! whose browser is connected to another. The queries are public: the JSON API
//! ([`crate::api`]) serves the same data.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chronolock_core::firmware::Version;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use maud::{html, Markup, PreEscaped};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Admin;
use crate::error::AppError;
use crate::firmware::{self, DoorFirmware, FirmwareUpdate};
use crate::pages::page;
use crate::{now_unix, AppState};

/// A door counts as online when its last sync is at most this many sync intervals old…
const ONLINE_INTERVALS: i64 = 2;
/// …plus this many seconds of grace (network delay, a slow sync).
const ONLINE_GRACE_S: i64 = 30;
/// Rows per page of the access log.
const LOG_PAGE: usize = 100;
/// Events a JSON client may ask for at once.
pub const MAX_EVENTS_LIMIT: usize = 1000;
/// How often the live stream looks for new events.
const STREAM_POLL: Duration = Duration::from_secs(1);
/// A live stream ends after this long; the browser's `EventSource` reconnects by itself and
/// carries on from the last event it saw (`Last-Event-ID`).
const STREAM_MAX: Duration = Duration::from_secs(3600);
/// Events one poll of the stream sends at most (the next poll follows at once if there are more).
const STREAM_BATCH: usize = 100;
/// Live streams one server process keeps open at most; each costs one query a second.
const STREAM_LIMIT: usize = 64;
/// Battery chart: how far back.
pub const BATTERY_DAYS: i64 = 90;
/// Clock chart: how far back.
pub const CLOCK_DAYS: i64 = 7;
/// Points a chart (or a series in the API) holds at most: the newest are kept.
pub const MAX_POINTS: usize = 5000;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(dashboard))
        .route("/log", get(log_page))
        .route("/log/stream", get(log_stream))
        .route("/doors/{id}/charts", get(charts_page))
}

// ---------------------------------------------------------------------------------------------
// Data

/// One door as the dashboard shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DoorStatus {
    /// Door id.
    pub id: i64,
    /// The site's id.
    pub site_id: i64,
    /// The site's name.
    pub site: String,
    /// The door's name.
    pub name: String,
    /// Whether a device has paired with this door.
    pub paired: bool,
    /// When it paired (Unix seconds).
    pub paired_at: Option<i64>,
    /// The device's last authenticated sync (server Unix seconds); `null` if it never synced.
    pub last_sync: Option<i64>,
    /// Whether the last sync is recent: within two sync intervals plus 30 s.
    pub online: bool,
    /// How often the device syncs, in seconds.
    pub sync_interval_s: i64,
    /// Generation of the door's list on the server (0: none compiled yet).
    pub generation: i64,
    /// Generation of the list the device reported having.
    pub device_generation: Option<i64>,
    /// Whether the device has yet to fetch the server's list.
    pub list_pending: bool,
    /// Whether the device's clock was valid at its last sync.
    pub clock_valid: Option<bool>,
    /// The source that set the device's clock: `ntp`, `backend`, `rtc` or `phone`.
    pub clock_source: Option<String>,
    /// Device clock minus server clock at the last sync, in microseconds.
    pub clock_offset_us: Option<i64>,
    /// The device's own error bound for its clock, in microseconds.
    pub clock_error_us: Option<i64>,
    /// Last reported battery voltage, in millivolts.
    pub battery_mv: Option<i64>,
    /// The largest list the device can install, in bytes, as it reported (`null`: not yet).
    pub list_capacity: Option<i64>,
    /// Why the door's newest list was not compiled for its device (too large for it); the
    /// door keeps its older list meanwhile.
    pub list_error: Option<String>,
    /// The firmware version the device runs, `major.minor.patch`, as it reported at its last
    /// sync (`null`: not reported yet, or it takes no update over the air).
    pub firmware_version: Option<String>,
    /// The firmware update the admin assigned to the door, and where it stands (`null`: none).
    pub firmware_update: Option<FirmwareUpdate>,
}

/// Counts for the dashboard.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Counts {
    /// People on record.
    pub people: i64,
    /// Doors on record.
    pub doors: i64,
    /// Doors online now.
    pub doors_online: i64,
    /// Granted decisions (any `GRANTED…`) in the last 24 hours.
    pub granted_24h: i64,
    /// Denied decisions (any `DENIED…`) in the last 24 hours.
    pub denied_24h: i64,
}

/// The dashboard's data.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Overview {
    /// The server's time the figures are for (Unix seconds).
    pub now: i64,
    /// Counts.
    pub counts: Counts,
    /// Every door, by site and name.
    pub doors: Vec<DoorStatus>,
    /// Alarms raised and not cleared (a door forced or held open), oldest first.
    pub alarms: Vec<crate::positions::ActiveAlarm>,
    /// Each site's newest lockdown order (sites that never had one are left out); `on` tells
    /// whether the site is in lockdown.
    pub lockdowns: Vec<crate::lockdown::Order>,
}

type DoorRow = (
    i64,
    i64,
    String,
    String,
    Option<i64>,
    Option<i64>,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    i64,
    Option<String>,
);

const DOOR_SELECT: &str = "SELECT d.id, d.site_id, s.name, d.name, d.paired_at, d.last_sync, \
     CAST(d.sync_interval_s AS BIGINT), d.generation, d.device_generation, d.clock_valid, \
     d.clock_source, d.clock_offset_us, d.clock_error_us, CAST(d.battery_mv AS BIGINT), \
     d.list_capacity, d.list_error \
     FROM doors d JOIN sites s ON s.id = d.site_id";

fn door_status(row: DoorRow, now: i64) -> DoorStatus {
    let (id, site_id, site, name, paired_at, last_sync, interval, generation, device_generation) = (
        row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8,
    );
    let paired = paired_at.is_some();
    DoorStatus {
        id,
        site_id,
        site,
        name,
        paired,
        paired_at,
        last_sync,
        online: last_sync
            .is_some_and(|t| now - t <= ONLINE_INTERVALS * interval.max(1) + ONLINE_GRACE_S),
        sync_interval_s: interval,
        generation,
        device_generation,
        list_pending: paired && generation > 0 && device_generation != Some(generation),
        clock_valid: row.9.map(|v| v != 0),
        clock_source: row.10,
        clock_offset_us: row.11,
        clock_error_us: row.12,
        battery_mv: row.13,
        list_capacity: Some(row.14).filter(|&c| c > 0),
        list_error: row.15,
        firmware_version: None,
        firmware_update: None,
    }
}

/// Fills in what `firmware` says of the door.
fn with_firmware(mut door: DoorStatus, firmware: Option<&DoorFirmware>) -> DoorStatus {
    if let Some(f) = firmware {
        door.firmware_version = f.running.filter(|&v| v > 0).map(|v| Version(v).to_string());
        door.firmware_update = f.update();
    }
    door
}

/// Every door with its device's state, by site and name.
pub async fn doors(state: &AppState, now: i64) -> Result<Vec<DoorStatus>, AppError> {
    let rows: Vec<DoorRow> =
        sqlx::query_as(&format!("{DOOR_SELECT} ORDER BY s.name, d.name, d.id"))
            .fetch_all(state.db.pool())
            .await?;
    let firmware = firmware::doors_firmware(state, None).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let id = r.0;
            with_firmware(door_status(r, now), firmware.get(&id))
        })
        .collect())
}

/// One door with its device's state.
pub async fn door(state: &AppState, id: i64, now: i64) -> Result<DoorStatus, AppError> {
    let row: Option<DoorRow> = sqlx::query_as(&format!("{DOOR_SELECT} WHERE d.id = $1"))
        .bind(id)
        .fetch_optional(state.db.pool())
        .await?;
    let row = row.ok_or(AppError::NotFound)?;
    let firmware = firmware::doors_firmware(state, Some(id)).await?;
    Ok(with_firmware(door_status(row, now), firmware.get(&id)))
}

/// The dashboard's data as of `now`.
pub async fn overview(state: &AppState, now: i64) -> Result<Overview, AppError> {
    let doors = doors(state, now).await?;
    let since_us = (now - 86_400) * 1_000_000;
    let (people, granted_24h, denied_24h): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM people), \
         (SELECT COUNT(*) FROM events WHERE kind = 'decision' AND decision LIKE 'GRANTED%' \
            AND COALESCE(device_us, received_us) >= $1), \
         (SELECT COUNT(*) FROM events WHERE kind = 'decision' AND decision LIKE 'DENIED%' \
            AND COALESCE(device_us, received_us) >= $1)",
    )
    .bind(since_us)
    .fetch_one(state.db.pool())
    .await?;
    let alarms = crate::positions::active_alarms(state, None).await?;
    let lockdowns = crate::lockdown::latest_per_site(state)
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(Overview {
        now,
        counts: Counts {
            people,
            doors: doors.len() as i64,
            doors_online: doors.iter().filter(|d| d.online).count() as i64,
            granted_24h,
            denied_24h,
        },
        doors,
        alarms,
        lockdowns,
    })
}

/// A query parameter that cannot be used; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query parameter `{param}`: {message}")]
pub struct ParamError {
    /// The parameter.
    pub param: String,
    /// What is wrong with it.
    pub message: String,
}

impl ParamError {
    fn new(param: &str, message: impl Into<String>) -> Self {
        ParamError {
            param: param.to_string(),
            message: message.into(),
        }
    }
}

impl From<ParamError> for AppError {
    fn from(e: ParamError) -> Self {
        AppError::BadRequest(e.to_string())
    }
}

/// The query string's parameters by name, limited to `known`; an empty value counts as absent.
/// An unknown or repeated parameter is refused, so a typo is not silently ignored.
pub fn query_params(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    known: &[&'static str],
) -> Result<BTreeMap<&'static str, String>, ParamError> {
    let Query(pairs) = query.map_err(|e| ParamError::new("?", e.body_text()))?;
    let mut out = BTreeMap::new();
    for (name, value) in pairs {
        let Some(&known_name) = known.iter().find(|k| **k == name) else {
            let shown: String = name.chars().take(40).collect();
            return Err(ParamError::new(
                &shown,
                format!("unknown; known are {}", known.join(", ")),
            ));
        };
        if out.contains_key(known_name) {
            return Err(ParamError::new(known_name, "given more than once"));
        }
        let value = value.trim();
        if !value.is_empty() {
            out.insert(known_name, value.to_string());
        }
    }
    Ok(out)
}

/// An integer parameter in `range`.
pub fn int_param(
    params: &BTreeMap<&'static str, String>,
    name: &str,
    range: std::ops::RangeInclusive<i64>,
) -> Result<Option<i64>, ParamError> {
    params
        .get(name)
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    ParamError::new(
                        name,
                        format!(
                            "`{v}` is not an integer from {} to {}",
                            range.start(),
                            range.end()
                        ),
                    )
                })
        })
        .transpose()
}

/// Which decisions the log shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DecisionFilter {
    /// Every event.
    #[default]
    All,
    /// Every `GRANTED…` decision.
    Granted,
    /// Every `DENIED…` decision.
    Denied,
    /// One decision, e.g. `DENIED_TIME_RESTRICTION`.
    Exact(String),
}

/// The access log's filters, as query parameters (the log page, its live stream and
/// `GET /api/events` take the same ones).
#[derive(Clone, Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only events of this door (its id).
    #[param(value_type = Option<i64>)]
    pub door: Option<String>,
    /// Only events of this kind: `decision`, `notify`, `report`, `clock`, `rtc_write`,
    /// `time_rejected`, `door`, `rex`, `alarm`, `alarm_cleared`, `lockdown`, … — or `alarms`:
    /// alarms raised and cleared.
    pub kind: Option<String>,
    /// `granted` (any `GRANTED…` decision), `denied` (any `DENIED…`), `all`, or one exact
    /// decision such as `DENIED_TIME_RESTRICTION`.
    pub decision: Option<String>,
    /// Part of the credential (`card:04A1`, `keypad:12`) or of its holder's name;
    /// case-insensitive.
    pub credential: Option<String>,
    /// From this day on (`YYYY-MM-DD` in the site's time zone) or from this instant (RFC 3339).
    pub from: Option<String>,
    /// Up to the end of this day (`YYYY-MM-DD` in the site's time zone) or up to this instant
    /// (RFC 3339).
    pub until: Option<String>,
}

/// The filter parameters' names.
pub const FILTER_PARAMS: [&str; 6] = ["door", "kind", "decision", "credential", "from", "until"];

/// Event kinds devices send: the device protocol's own list.
pub const KINDS: [&str; 12] = chronolock_core::protocol::EventBody::KINDS;

/// The `kind` filter that stands for both `alarm` and `alarm_cleared`.
pub const ALARMS: &str = "alarms";

/// The `kind` filter for what people do and what needs attention: decisions, alarms (raised or
/// cleared) and lockdown changes. The access log shows it unless asked for another kind.
pub const ACTIVITY: &str = "activity";

/// The `kind` filter value that asks for every kind.
pub const ALL_KINDS: &str = "all";

/// Decisions devices report (see the scenario contract), from the core's one definition.
pub fn decisions() -> impl Iterator<Item = &'static str> {
    chronolock_core::access::Decision::ALL
        .into_iter()
        .map(|d| d.as_str())
}

impl EventQuery {
    /// Takes the filter parameters out of `params`.
    pub fn from_params(params: &BTreeMap<&'static str, String>) -> Self {
        let get = |k: &str| params.get(k).cloned();
        EventQuery {
            door: get("door"),
            kind: get("kind"),
            decision: get("decision"),
            credential: get("credential"),
            from: get("from"),
            until: get("until"),
        }
    }

    /// The parameters that are set, for links that keep the filter.
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("door", &self.door),
            ("kind", &self.kind),
            ("decision", &self.decision),
            ("credential", &self.credential),
            ("from", &self.from),
            ("until", &self.until),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

/// A checked filter of the access log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// The door.
    pub door: Option<i64>,
    /// The event kind.
    pub kind: Option<String>,
    /// The decision.
    pub decision: DecisionFilter,
    /// Lower-case part of the credential or its holder's name.
    pub credential: Option<String>,
    /// From this time on (µs since the epoch, inclusive).
    pub from_us: Option<i64>,
    /// Before this time (µs since the epoch, exclusive).
    pub until_us: Option<i64>,
}

impl EventFilter {
    /// Checks the query; dates are read in the time zone of the door's site (or of the first
    /// site when no door is chosen).
    pub async fn parse(state: &AppState, q: &EventQuery) -> Result<Self, AppError> {
        let door = match &q.door {
            Some(v) => Some(
                v.parse::<i64>()
                    .map_err(|_| ParamError::new("door", format!("`{v}` is not a door id")))?,
            ),
            None => None,
        };
        let kind = match &q.kind {
            Some(k) if k == ALL_KINDS => None,
            Some(k) if k.len() <= 32 && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') => {
                Some(k.clone())
            }
            Some(k) => {
                return Err(ParamError::new(
                    "kind",
                    format!("`{k}` is not an event kind, e.g. {}", KINDS.join(", ")),
                )
                .into())
            }
            None => None,
        };
        // Lower-case words name groups; anything else is one decision, in any case.
        let decision = match q.decision.as_deref() {
            None | Some("all") => DecisionFilter::All,
            Some("granted") => DecisionFilter::Granted,
            Some("denied") => DecisionFilter::Denied,
            Some(d) if d.len() <= 40 && d.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_') => {
                DecisionFilter::Exact(d.to_ascii_uppercase())
            }
            Some(_) => {
                return Err(ParamError::new(
                    "decision",
                    "granted, denied, all, or a decision such as DENIED_TIME_RESTRICTION",
                )
                .into())
            }
        };
        let credential = match &q.credential {
            Some(c) if c.chars().count() > 64 => {
                return Err(ParamError::new("credential", "at most 64 characters").into())
            }
            c => c.as_ref().map(|c| c.to_lowercase()),
        };
        let zone = if q.from.is_some() || q.until.is_some() {
            filter_zone(state, door).await?
        } else {
            TimeZone::UTC
        };
        let from_us = q
            .from
            .as_deref()
            .map(|v| time_param("from", v, &zone, false))
            .transpose()?;
        let until_us = q
            .until
            .as_deref()
            .map(|v| time_param("until", v, &zone, true))
            .transpose()?;
        if let (Some(f), Some(u)) = (from_us, until_us) {
            if u <= f {
                return Err(ParamError::new("until", "must be after `from`").into());
            }
        }
        Ok(EventFilter {
            door,
            kind,
            decision,
            credential,
            from_us,
            until_us,
        })
    }
}

/// The zone dates in filters are read in: the door's site's, else the first site's, else UTC.
async fn filter_zone(state: &AppState, door: Option<i64>) -> Result<TimeZone, AppError> {
    let row: Option<(String,)> =
        match door {
            Some(id) => sqlx::query_as(
                "SELECT s.timezone FROM doors d JOIN sites s ON s.id = d.site_id WHERE d.id = $1",
            )
            .bind(id)
            .fetch_optional(state.db.pool())
            .await?,
            None => {
                sqlx::query_as("SELECT timezone FROM sites ORDER BY id LIMIT 1")
                    .fetch_optional(state.db.pool())
                    .await?
            }
        };
    Ok(row.map_or(TimeZone::UTC, |(tz,)| zone(&tz)))
}

fn zone(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap_or(TimeZone::UTC)
}

/// A day (`YYYY-MM-DD`, local) or an instant (RFC 3339) as µs; a day as `until` means its end.
fn time_param(param: &str, value: &str, zone: &TimeZone, end: bool) -> Result<i64, ParamError> {
    let bad = || {
        ParamError::new(
            param,
            format!("`{value}` is neither a date (YYYY-MM-DD) nor an RFC 3339 time"),
        )
    };
    let ts = if value.contains('T') || value.contains('t') {
        value.parse::<Timestamp>().map_err(|_| bad())?
    } else {
        let mut date = value.parse::<jiff::civil::Date>().map_err(|_| bad())?;
        if end {
            date = date.tomorrow().map_err(|_| bad())?;
        }
        date.to_zoned(zone.clone()).map_err(|_| bad())?.timestamp()
    };
    Ok(ts.as_microsecond())
}

/// One event of the access log.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct LogEvent {
    /// Event id; newer events have larger ids.
    pub id: i64,
    /// The door's id.
    pub door_id: i64,
    /// The door's name.
    pub door: String,
    /// `decision`, `notify`, `report`, `clock`, `rtc_write`, `time_rejected`, …
    pub kind: String,
    /// When it happened, µs since the epoch: the device's time if its clock was valid, else
    /// when the server received it.
    pub at_us: i64,
    /// The device's UTC time of the event (µs), if its clock was valid.
    pub device_us: Option<i64>,
    /// When the server received it (µs).
    pub received_us: i64,
    /// `card:<uid hex>` or `keypad:<user code>`.
    pub credential: Option<String>,
    /// The name of the person whose card or keypad code this is.
    pub person: Option<String>,
    /// That person's id.
    pub person_id: Option<i64>,
    /// `GRANTED`, `DENIED_TIME_RESTRICTION`, …
    pub decision: Option<String>,
    /// Battery voltage of a report, in millivolts.
    pub mv: Option<i64>,
    /// Further detail the device sent.
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
    /// The site's time zone (for display).
    #[serde(skip)]
    pub timezone: String,
}

/// Which end of the log to read from.
#[derive(Clone, Copy, Debug)]
pub enum Cursor {
    /// Newest first, older than this id (all if `None`).
    Before(Option<i64>),
    /// Oldest first, newer than this id.
    After(i64),
}

type EventRow = (
    i64,
    i64,
    String,
    String,
    String,
    Option<i64>,
    i64,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

enum Bind {
    Int(i64),
    Text(String),
}

/// Events matching `filter` from `cursor` on, at most `limit`.
pub async fn events(
    state: &AppState,
    filter: &EventFilter,
    cursor: Cursor,
    limit: usize,
) -> Result<Vec<LogEvent>, AppError> {
    let mut binds: Vec<Bind> = Vec::new();
    let mut bind = |b: Bind| {
        binds.push(b);
        format!("${}", binds.len())
    };
    let mut sql = String::from(
        "SELECT e.id, e.door_id, d.name, s.timezone, e.kind, e.device_us, e.received_us, \
         e.credential, e.decision, CAST(e.mv AS BIGINT), e.detail, p.name, p.id \
         FROM events e JOIN doors d ON d.id = e.door_id JOIN sites s ON s.id = d.site_id \
         LEFT JOIN cards c ON e.credential LIKE 'card:%' AND c.uid = SUBSTR(e.credential, 6) \
         LEFT JOIN keypad_users k ON e.credential LIKE 'keypad:%' AND k.code = SUBSTR(e.credential, 8) \
         LEFT JOIN people p ON p.id = COALESCE(c.person_id, k.person_id) WHERE 1 = 1",
    );
    if let Some(door) = filter.door {
        sql += &format!(" AND e.door_id = {}", bind(Bind::Int(door)));
    }
    match filter.kind.as_deref() {
        None => {}
        Some(ALARMS) => sql += " AND e.kind IN ('alarm', 'alarm_cleared')",
        Some(ACTIVITY) => {
            sql += " AND e.kind IN ('decision', 'alarm', 'alarm_cleared', 'lockdown')";
        }
        Some(kind) => sql += &format!(" AND e.kind = {}", bind(Bind::Text(kind.to_string()))),
    }
    match &filter.decision {
        DecisionFilter::All => {}
        DecisionFilter::Granted => sql += " AND e.decision LIKE 'GRANTED%'",
        DecisionFilter::Denied => sql += " AND e.decision LIKE 'DENIED%'",
        DecisionFilter::Exact(d) => {
            sql += &format!(" AND e.decision = {}", bind(Bind::Text(d.clone())));
        }
    }
    if let Some(c) = &filter.credential {
        let escaped = c
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let p = bind(Bind::Text(format!("%{escaped}%")));
        sql += &format!(
            " AND (LOWER(e.credential) LIKE {p} ESCAPE '\\' OR LOWER(p.name) LIKE {p} ESCAPE '\\')"
        );
    }
    if let Some(from) = filter.from_us {
        sql += &format!(
            " AND COALESCE(e.device_us, e.received_us) >= {}",
            bind(Bind::Int(from))
        );
    }
    if let Some(until) = filter.until_us {
        sql += &format!(
            " AND COALESCE(e.device_us, e.received_us) < {}",
            bind(Bind::Int(until))
        );
    }
    match cursor {
        Cursor::Before(Some(id)) => sql += &format!(" AND e.id < {}", bind(Bind::Int(id))),
        Cursor::Before(None) => {}
        Cursor::After(id) => sql += &format!(" AND e.id > {}", bind(Bind::Int(id))),
    }
    sql += match cursor {
        Cursor::Before(_) => " ORDER BY e.id DESC",
        Cursor::After(_) => " ORDER BY e.id ASC",
    };
    sql += &format!(" LIMIT {}", limit.min(MAX_EVENTS_LIMIT + 1));
    let mut query = sqlx::query_as::<_, EventRow>(&sql);
    for b in binds {
        query = match b {
            Bind::Int(v) => query.bind(v),
            Bind::Text(v) => query.bind(v),
        };
    }
    let rows = query.fetch_all(state.db.pool()).await?;
    Ok(rows
        .into_iter()
        .map(|r| LogEvent {
            id: r.0,
            door_id: r.1,
            door: r.2,
            timezone: r.3,
            kind: r.4,
            at_us: r.5.unwrap_or(r.6),
            device_us: r.5,
            received_us: r.6,
            credential: r.7,
            decision: r.8,
            mv: r.9,
            detail: r
                .10
                .map(|d| serde_json::from_str(&d).unwrap_or(serde_json::Value::String(d.clone()))),
            person: r.11,
            person_id: r.12,
        })
        .collect())
}

/// A page of the log, newest first: the events, and the `before` id of the next (older) page.
pub async fn events_page(
    state: &AppState,
    filter: &EventFilter,
    before: Option<i64>,
    limit: usize,
) -> Result<(Vec<LogEvent>, Option<i64>), AppError> {
    let mut events = events(state, filter, Cursor::Before(before), limit + 1).await?;
    let next = if events.len() > limit {
        events.truncate(limit);
        events.last().map(|e| e.id)
    } else {
        None
    };
    Ok((events, next))
}

/// A door's name and its site's time zone.
async fn door_zone(state: &AppState, id: i64) -> Result<(String, TimeZone, String), AppError> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT d.name, s.timezone FROM doors d JOIN sites s ON s.id = d.site_id WHERE d.id = $1",
    )
    .bind(id)
    .fetch_optional(state.db.pool())
    .await?;
    let (name, tz) = row.ok_or(AppError::NotFound)?;
    Ok((name, zone(&tz), tz))
}

/// One battery report.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
pub struct BatteryPoint {
    /// When (Unix seconds; the device's time if valid, else when received).
    pub at: i64,
    /// Battery voltage in millivolts.
    pub mv: i64,
}

/// One clock sample, taken at a sync with a valid device clock.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ClockPoint {
    /// When (server Unix seconds).
    pub at: i64,
    /// Device clock minus server clock, in microseconds.
    pub offset_us: i64,
    /// The device's error bound, in microseconds.
    pub error_us: i64,
    /// The source that set the device's clock.
    pub source: String,
}

/// A door's battery reports since `since` (Unix seconds), oldest first.
pub async fn battery_series(
    state: &AppState,
    door_id: i64,
    since: i64,
) -> Result<Vec<BatteryPoint>, AppError> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT COALESCE(device_us, received_us), CAST(mv AS BIGINT) FROM events \
         WHERE door_id = $1 AND kind = 'report' AND mv IS NOT NULL \
         AND COALESCE(device_us, received_us) >= $2 ORDER BY id DESC LIMIT $3",
    )
    .bind(door_id)
    .bind(since.saturating_mul(1_000_000))
    .bind(MAX_POINTS as i64)
    .fetch_all(state.db.pool())
    .await?;
    let mut points: Vec<BatteryPoint> = rows
        .into_iter()
        .map(|(us, mv)| BatteryPoint {
            at: us.div_euclid(1_000_000),
            mv,
        })
        .collect();
    points.sort_by_key(|p| p.at);
    Ok(points)
}

/// A door's clock samples since `since` (Unix seconds), oldest first.
pub async fn clock_series(
    state: &AppState,
    door_id: i64,
    since: i64,
) -> Result<Vec<ClockPoint>, AppError> {
    let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(
        "SELECT at, offset_us, error_us, source FROM clock_samples \
         WHERE door_id = $1 AND at >= $2 ORDER BY at DESC, id DESC LIMIT $3",
    )
    .bind(door_id)
    .bind(since)
    .bind(MAX_POINTS as i64)
    .fetch_all(state.db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .rev()
        .map(|(at, offset_us, error_us, source)| ClockPoint {
            at,
            offset_us,
            error_us,
            source,
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Formatting

fn utc_text(unix_s: i64) -> String {
    Timestamp::from_second(unix_s).map_or_else(
        |_| unix_s.to_string(),
        |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

fn local_text(us: i64, zone: &TimeZone) -> String {
    Timestamp::from_microsecond(us).map_or_else(
        |_| us.to_string(),
        |t| {
            t.to_zoned(zone.clone())
                .strftime("%Y-%m-%d %H:%M:%S %Z")
                .to_string()
        },
    )
}

/// An event's time in the log: local date and time to the second, e.g. `2026-11-24 09:58:03`
/// (the zone is in the cell's tooltip).
fn log_time(us: i64, zone: &TimeZone) -> String {
    Timestamp::from_microsecond(us).map_or_else(
        |_| us.to_string(),
        |t| {
            t.to_zoned(zone.clone())
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string()
        },
    )
}

/// "12 s ago", "5 min ago", "3 h ago", "2 d ago".
fn ago(now: i64, then: i64) -> String {
    let s = now - then;
    match s {
        ..=-1 => "just now (ahead of the server)".to_string(),
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

fn ms(us: i64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

fn volts(mv: i64) -> String {
    format!("{:.2} V", mv as f64 / 1000.0)
}

fn query_string(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Dashboard

const DASHBOARD_STYLE: &str = "
.status { font-weight: 600; }
.status-online { color: #16794c; }
.status-offline { color: #b00020; }
.pending { color: #a15c00; font-weight: 600; }
.counts { display: flex; gap: 1.5rem; flex-wrap: wrap; padding: 0; list-style: none; }
.counts li strong { font-size: 1.4rem; display: block; }
td.num { font-variant-numeric: tabular-nums; }
.lockdown-banner { background: #b00020; color: #fff; padding: .8rem 1rem; font-size: 1.2rem; margin: 0 0 1rem; }
.lockdown-banner form { display: inline; margin-left: 1rem; }
.lockdown-bar { display: flex; gap: 1rem; align-items: center; margin: 0 0 1rem; }
#alarms { border: 2px solid #b00020; padding: .4rem .8rem; margin: 0 0 1rem; }
#alarms h3 { color: #b00020; margin: .2rem 0; }
tr.alarm td { background: #fde7ea; }
#getting-started { border: 1px solid #ddd; padding: .4rem 1rem; margin: 0 0 1rem; }
#getting-started li { margin: .3rem 0; }
#getting-started li.done { color: #16794c; }
";

/// The first run's path, shown on the dashboard until a door has paired: the site (name and
/// time zone), a door, and its pairing code; each step links to its page and is ticked when done.
fn getting_started(site: bool, door: bool, first_door: Option<i64>) -> Markup {
    let pair = first_door.map_or_else(|| "/doors".to_string(), |id| format!("/doors/{id}"));
    let step = |done: bool, id: &str, href: &str, text: &str, hint: &str| {
        html! {
            li id=(id) class=(if done { "done" } else { "todo" }) {
                @if done { "✓ " (text) } @else { a href=(href) { (text) } }
                " " span.muted { (hint) }
            }
        }
    };
    html! {
        section #getting-started {
            h3 { "Getting started" }
            ol {
                (step(site, "step-site", "/site", "Create the site", "its name and time zone"))
                (step(door, "step-door", "/doors", "Add a door", "one per controller"))
                (step(false, "step-pair", &pair, "Pair the door's device", "make a pairing code and enter it on the device's setup page"))
            }
        }
    }
}

async fn dashboard(State(state): State<AppState>, admin: Admin) -> Result<Markup, AppError> {
    let now = now_unix();
    let o = overview(&state, now).await?;
    let first_site = o.doors.first().map(|d| d.site_id);
    let several_sites = o.doors.iter().any(|d| Some(d.site_id) != first_site);
    let key = data_encoding::HEXLOWER.encode(&state.site_public_key);
    let site_names: HashMap<i64, &str> = o
        .doors
        .iter()
        .map(|d| (d.site_id, d.site.as_str()))
        .collect();
    let zones: HashMap<i64, String> =
        sqlx::query_as::<_, (i64, String)>("SELECT id, timezone FROM sites")
            .fetch_all(state.db.pool())
            .await?
            .into_iter()
            .collect();
    let zone_of = |site: i64| zone(zones.get(&site).map_or("UTC", String::as_str));
    let in_lockdown: Vec<&crate::lockdown::Order> = o.lockdowns.iter().filter(|l| l.on).collect();
    // The admin UI works on the first site: its button is on the dashboard.
    let first_site_on = zones
        .keys()
        .min()
        .is_some_and(|first| in_lockdown.iter().any(|l| l.site_id == *first));
    let alarm_doors: std::collections::HashSet<i64> = o.alarms.iter().map(|a| a.door_id).collect();
    let door_zones: HashMap<i64, TimeZone> =
        o.doors.iter().map(|d| (d.id, zone_of(d.site_id))).collect();
    Ok(page(
        "Dashboard",
        Some(&admin),
        html! {
            style { (PreEscaped(DASHBOARD_STYLE)) }
            @for l in &in_lockdown {
                p.lockdown-banner #lockdown-banner role="alert" {
                    strong { "LOCKDOWN" }
                    @if several_sites { " · " (site_names.get(&l.site_id).copied().unwrap_or("site")) }
                    " — every door refuses all but EMERGENCY credentials, since "
                    (local_text(l.issued_at.saturating_mul(1_000_000), &zone_of(l.site_id)))
                    @if let Some(a) = &l.admin { " (ordered by " (a) ")" }
                }
            }
            @if !zones.is_empty() {
                div.lockdown-bar {
                    (crate::editors::lockdown::button(first_site_on))
                    a href="/lockdown" { "Lockdown orders" }
                }
            }
            @if !o.alarms.is_empty() {
                section #alarms role="alert" {
                    h3 { (o.alarms.len()) " active alarm" @if o.alarms.len() != 1 { "s" } }
                    ul {
                        @for a in &o.alarms {
                            li id={ "alarm-" (a.door_id) } {
                                a href={ "/doors/" (a.door_id) } { (a.door) } ": "
                                strong { (crate::positions::describe_alarm(&a.kind)) }
                                " since "
                                (door_zones.get(&a.door_id).map_or_else(|| a.since_us.to_string(), |z| local_text(a.since_us, z)))
                            }
                        }
                    }
                    p { a href="/log?kind=alarms" { "Alarms in the log" } }
                }
            }
            ul.counts {
                li { strong #count-doors { (o.counts.doors) } "doors, " (o.counts.doors_online) " online" }
                li { strong #count-people { (o.counts.people) } "people" }
                li {
                    strong #count-granted { (o.counts.granted_24h) }
                    a href="/log?decision=granted" { "granted" } " in the last 24 h"
                }
                li {
                    strong #count-denied { (o.counts.denied_24h) }
                    a href="/log?decision=denied" { "denied" } " in the last 24 h"
                }
            }
            @if !o.doors.iter().any(|d| d.paired) {
                (getting_started(!zones.is_empty(), !o.doors.is_empty(), o.doors.first().map(|d| d.id)))
            }
            @if !o.doors.is_empty() {
                table #doors {
                    thead { tr {
                        @if several_sites { th { "Site" } }
                        th { "Door" } th { "Status" } th { "Last sync" }
                        th title="list generation on the server / on the device" { "List (server / device)" }
                        th { "Clock" } th { "Battery" }
                        th title="the version the device runs, and the update assigned to it" { "Firmware" }
                        th { "Charts" }
                    } }
                    tbody {
                        @for d in &o.doors {
                            (door_row(d, now, several_sites, alarm_doors.contains(&d.id)))
                        }
                    }
                }
            }
            p.muted {
                "Database: " (state.db.backend().as_str())
                ". Site public key (doors verify allow-lists with it): " code { (key) }
            }
        },
    ))
}

fn door_row(d: &DoorStatus, now: i64, several_sites: bool, alarm: bool) -> Markup {
    let status = if !d.paired {
        "not paired"
    } else if d.last_sync.is_none() {
        "never synced"
    } else if d.online {
        "online"
    } else {
        "offline"
    };
    let class = format!("status status-{}", status.replace(' ', "-"));
    html! {
        tr id={ "door-" (d.id) } data-status=(status) .alarm[alarm] {
            @if several_sites { td { (d.site) } }
            td { a href={ "/doors/" (d.id) } { (d.name) } }
            td { span class=(class) { (status) } }
            td data-label="Last sync" {
                @match d.last_sync {
                    Some(t) => span title=(utc_text(t)) { (ago(now, t)) },
                    None => span.muted { "never" },
                }
            }
            td.num data-label="List" {
                @if d.generation > 0 { (d.generation) } @else { span.muted title="no list compiled yet" { "none" } }
                " / "
                @match d.device_generation {
                    Some(g) => (g),
                    None => span.muted { "—" },
                }
                @if let Some(error) = &d.list_error {
                    " " span.status-offline.list-too-large title=(error) { "too large for the device" }
                } @else if d.list_pending {
                    " " span.pending title="the device has not fetched the newest list yet" { "pending" }
                }
            }
            td data-label="Clock" {
                @match d.clock_valid {
                    None => span.muted { "—" },
                    Some(false) => {
                        span.status-offline { "invalid" }
                        @if let Some(s) = &d.clock_source { " · " (s) }
                    }
                    Some(true) => {
                        "valid"
                        @if let Some(s) = &d.clock_source { " · " (s) }
                        @if let Some(off) = d.clock_offset_us {
                            " · " span title="device clock minus server clock at the last sync, ± the device's error bound" {
                                @if off >= 0 { "+" } (ms(off)) " ms"
                                @if let Some(err) = d.clock_error_us { " ± " (ms(err)) " ms" }
                            }
                        }
                    }
                }
            }
            td.num data-label="Battery" {
                @match d.battery_mv {
                    Some(mv) => (volts(mv)),
                    None => span.muted { "—" },
                }
            }
            td.firmware data-label="Firmware" {
                @match &d.firmware_version {
                    Some(v) => (v),
                    None => span.muted { "—" },
                }
                @if let Some(u) = &d.firmware_update {
                    " " span.firmware-update
                        .pending[matches!(u.state.as_str(), "waiting" | "downloading" | "downloaded")]
                        .status-offline[u.state == "not_supported"]
                        title="the update assigned to the door" {
                        "→ " (u.version) " · " (u.describe())
                    }
                }
            }
            td { a href={ "/doors/" (d.id) "/charts" } { "charts" } }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Access log

const LOG_STYLE: &str = "
form.filters { display: flex; flex-wrap: wrap; gap: .6rem; max-width: none; align-items: end; margin-bottom: 1rem; }
form.filters label { display: flex; flex-direction: column; font-weight: 600; margin: 0; font-size: .9rem; }
.granted { color: #16794c; }
.denied { color: #b00020; }
.pager { display: flex; gap: 1rem; margin-top: .8rem; }
td.time { white-space: nowrap; }
#live { font-size: .9rem; }
";

fn event_row(e: &LogEvent, zones: &mut HashMap<String, TimeZone>) -> Markup {
    let tz = zones
        .entry(e.timezone.clone())
        .or_insert_with(|| zone(&e.timezone));
    let utc = Timestamp::from_microsecond(e.at_us)
        .map_or_else(|_| e.at_us.to_string(), |t| t.to_string());
    let basis = if e.device_us.is_some() {
        "device clock"
    } else {
        "received by the server: the device's clock was not set"
    };
    let decision_class = match e.decision.as_deref() {
        Some(d) if d.starts_with("GRANTED") => "granted",
        Some(d) if d.starts_with("DENIED") => "denied",
        _ => "",
    };
    let detail = e.detail.as_ref().map(|d| {
        let text = d.to_string();
        if text.chars().count() > 80 {
            format!("{}…", text.chars().take(80).collect::<String>())
        } else {
            text
        }
    });
    // A refused card nobody holds: the admin may want to give it to someone.
    let unknown_card = match (&e.credential, &e.person, &e.decision) {
        (Some(c), None, Some(d)) if d.starts_with("DENIED") => c.strip_prefix("card:"),
        _ => None,
    };
    html! {
        tr id={ "event-" (e.id) } {
            td.time title={ (utc) " (" (basis) "; " (e.timezone) ")" } { (log_time(e.at_us, tz)) }
            td { a href={ "/log?door=" (e.door_id) } { (e.door) } }
            td { (e.kind) }
            td {
                @if let Some(c) = &e.credential { code { (c) } }
                @if let (Some(p), Some(id)) = (&e.person, e.person_id) {
                    " " a.person href={ "/people/" (id) } { (p) }
                }
                @if let Some(uid) = unknown_card {
                    " " a.learn href={ "/cards/learn?uid=" (uid) } { "add to…" }
                }
            }
            td class=(decision_class) {
                @if let Some(d) = &e.decision { (d) }
                @else if let Some(mv) = e.mv { (volts(mv)) }
                @else if let Some(d) = &detail { span.muted { (d) } }
            }
        }
    }
}

async fn log_page(
    State(state): State<AppState>,
    admin: Admin,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, AppError> {
    let mut known = FILTER_PARAMS.to_vec();
    known.push("before");
    let parsed = match query_params(query, &known) {
        Ok(params) => {
            let mut q = EventQuery::from_params(&params);
            // The page shows what people did and what needs attention unless asked otherwise.
            if q.kind.is_none() {
                q.kind = Some(ACTIVITY.to_string());
            }
            let before = int_param(&params, "before", 1..=i64::MAX);
            match (EventFilter::parse(&state, &q).await, before) {
                (Ok(filter), Ok(before)) => Ok((q, filter, before)),
                (Err(AppError::BadRequest(m)), _) => Err((q, m)),
                (Err(e), _) => return Err(e),
                (_, Err(e)) => Err((q, e.to_string())),
            }
        }
        Err(e) => Err((EventQuery::default(), e.to_string())),
    };
    let doors: Vec<(i64, String)> = sqlx::query_as("SELECT id, name FROM doors ORDER BY name, id")
        .fetch_all(state.db.pool())
        .await?;
    let (q, body, status) = match parsed {
        Err((q, message)) => {
            let body = html! { p.error #filter-error { (message) } };
            (q, body, StatusCode::BAD_REQUEST)
        }
        Ok((q, filter, before)) => {
            // The live stream starts after the newest event stored before the page was read:
            // nothing stored meanwhile is missed (the script skips a row it already shows), and
            // its polls stay a short range scan even when nothing matches the filter.
            let (max_id,): (Option<i64>,) = sqlx::query_as("SELECT MAX(id) FROM events")
                .fetch_one(state.db.pool())
                .await?;
            let (events, next) = events_page(&state, &filter, before, LOG_PAGE).await?;
            let mut stream_pairs = q.pairs();
            let newest = events.first().map_or(0, |e| e.id);
            let after = max_id.unwrap_or(0).max(newest).to_string();
            stream_pairs.push(("after", &after));
            let stream = format!("/log/stream?{}", query_string(&stream_pairs));
            let older = next.map(|next| {
                let next = next.to_string();
                let mut pairs = q.pairs();
                pairs.push(("before", &next));
                format!("/log?{}", query_string(&pairs))
            });
            let mut zones = HashMap::new();
            let body = html! {
                @if before.is_none() {
                    p.muted #live { "live updates…" }
                }
                table #log data-stream=[before.is_none().then_some(&stream)] {
                    thead { tr { th { "Time" } th { "Door" } th { "Kind" } th { "Credential" } th { "Decision / detail" } } }
                    tbody #log-rows {
                        @for e in &events { (event_row(e, &mut zones)) }
                        @if events.is_empty() {
                            tr #log-empty { td.muted colspan="5" { "No events match." } }
                        }
                    }
                }
                nav.pager {
                    @if before.is_some() {
                        a #newest href={ "/log?" (query_string(&q.pairs())) } { "← Newest" }
                    }
                    @if let Some(older) = &older {
                        a #older href=(older) { "Older →" }
                    }
                }
                @if before.is_none() {
                    script src="/static/log.js" {}
                }
            };
            (q, body, StatusCode::OK)
        }
    };
    let selected = |v: &Option<String>, x: &str| v.as_deref() == Some(x);
    let markup = page(
        "Access log",
        Some(&admin),
        html! {
            style { (PreEscaped(LOG_STYLE)) }
            form.filters method="get" action="/log" {
                label { "Door"
                    select name="door" {
                        option value="" { "all" }
                        @for (id, name) in &doors {
                            @let v = id.to_string();
                            option value=(v) selected[selected(&q.door, &v)] { (name) }
                        }
                    }
                }
                label { "Kind"
                    select name="kind" {
                        option value=(ACTIVITY) selected[selected(&q.kind, ACTIVITY)] { "decisions, alarms, lockdown" }
                        option value=(ALL_KINDS) selected[selected(&q.kind, ALL_KINDS)] { "all kinds" }
                        option value=(ALARMS) selected[selected(&q.kind, ALARMS)] { "alarms (raised or cleared)" }
                        @for k in KINDS { option value=(k) selected[selected(&q.kind, k)] { (k) } }
                    }
                }
                label { "Decision"
                    select name="decision" {
                        option value="" { "all" }
                        option value="granted" selected[selected(&q.decision, "granted")] { "granted (any)" }
                        option value="denied" selected[selected(&q.decision, "denied")] { "denied (any)" }
                        @for d in decisions() { option value=(d) selected[selected(&q.decision, d)] { (d) } }
                    }
                }
                label { "Credential or name"
                    input name="credential" value=[q.credential.as_deref()] placeholder="card:04A1…";
                }
                label { "From" input type="date" name="from" value=[q.from.as_deref()]; }
                label { "Until" input type="date" name="until" value=[q.until.as_deref()]; }
                button type="submit" { "Filter" }
                a href="/log" { "Clear" }
            }
            p.quick-filters {
                "Show: "
                a #filter-alarms href="/log?kind=alarms" { "alarms" } " · "
                a #filter-lockdown href="/log?kind=lockdown" { "lockdown" } " · "
                a #filter-denied href="/log?decision=DENIED_LOCKDOWN" { "refused under lockdown" }
            }
            (body)
        },
    );
    Ok((status, markup).into_response())
}

static OPEN_STREAMS: AtomicUsize = AtomicUsize::new(0);

/// Counts one open stream while it lives.
struct StreamSlot;

impl StreamSlot {
    fn take() -> Option<Self> {
        OPEN_STREAMS
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < STREAM_LIMIT).then_some(n + 1)
            })
            .ok()
            .map(|_| StreamSlot)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Tail {
    state: AppState,
    filter: EventFilter,
    after: i64,
    deadline: tokio::time::Instant,
    queued: std::collections::VecDeque<Event>,
    wait: bool,
    zones: HashMap<String, TimeZone>,
    _slot: StreamSlot,
}

#[derive(Serialize)]
struct StreamItem<'a> {
    #[serde(flatten)]
    event: &'a LogEvent,
    /// The log table's row for it.
    html: String,
}

impl Tail {
    /// The next event to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.queued.pop_front() {
                return Some(e);
            }
            if self.wait {
                tokio::time::sleep_until(
                    (tokio::time::Instant::now() + STREAM_POLL).min(self.deadline),
                )
                .await;
            }
            if tokio::time::Instant::now() >= self.deadline {
                return None;
            }
            let batch = match events(
                &self.state,
                &self.filter,
                Cursor::After(self.after),
                STREAM_BATCH,
            )
            .await
            {
                Ok(batch) => batch,
                Err(e) => {
                    // End the stream; the browser reconnects from the last event it saw.
                    tracing::warn!(error = %e, "log stream: cannot read events");
                    return None;
                }
            };
            self.wait = batch.len() < STREAM_BATCH;
            for e in &batch {
                self.after = e.id;
                let item = StreamItem {
                    event: e,
                    html: event_row(e, &mut self.zones).into_string(),
                };
                match Event::default().id(e.id.to_string()).json_data(&item) {
                    Ok(ev) => self.queued.push_back(ev),
                    Err(err) => tracing::warn!(error = %err, "log stream: cannot encode an event"),
                }
            }
        }
    }
}

async fn log_stream(
    State(state): State<AppState>,
    _admin: Admin,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, AppError> {
    let mut known = FILTER_PARAMS.to_vec();
    known.push("after");
    let params = query_params(query, &known)?;
    let filter = EventFilter::parse(&state, &EventQuery::from_params(&params)).await?;
    // A reconnecting EventSource says where it stopped.
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let after = match (int_param(&params, "after", 0..=i64::MAX)?, resumed) {
        (_, Some(id)) | (Some(id), None) => id,
        (None, None) => {
            let (max,): (Option<i64>,) = sqlx::query_as("SELECT MAX(id) FROM events")
                .fetch_one(state.db.pool())
                .await?;
            max.unwrap_or(0)
        }
    };
    let Some(slot) = StreamSlot::take() else {
        return Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"error": "too many live streams open; try again later"})),
        )
            .into_response());
    };
    let tail = Tail {
        state,
        filter,
        after,
        deadline: tokio::time::Instant::now() + STREAM_MAX,
        queued: std::collections::VecDeque::new(),
        wait: false,
        zones: HashMap::new(),
        _slot: slot,
    };
    let stream = futures_util::stream::unfold(tail, |mut tail| async move {
        let event = tail.next().await?;
        Some((Ok::<_, Infallible>(event), tail))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

// ---------------------------------------------------------------------------------------------
// Charts

const CHART_W: f64 = 720.0;
const CHART_H: f64 = 260.0;
const PAD_LEFT: f64 = 64.0;
const PAD_RIGHT: f64 = 16.0;
const PAD_TOP: f64 = 14.0;
const PAD_BOTTOM: f64 = 44.0;
/// Above this many points, markers are left out and only the line is drawn.
const MAX_MARKERS: usize = 600;

const CHART_STYLE: &str = "
svg.chart { width: 100%; height: auto; max-width: 720px; background: #fff; border: 1px solid #eee; }
svg.chart text { font: 11px system-ui, sans-serif; fill: #444; }
svg.chart .grid { stroke: #eee; }
svg.chart .axis { stroke: #999; }
svg.chart .line { fill: none; stroke: #1f5fbf; stroke-width: 1.5; }
svg.chart .band { fill: #1f5fbf; fill-opacity: .15; stroke: none; }
svg.chart .pt { fill: #1f5fbf; }
svg.chart .zero { stroke: #999; stroke-dasharray: 4 3; }
";

/// A point to plot: time (Unix seconds), value, error (± around the value), its tooltip.
struct Plot {
    at: i64,
    y: f64,
    err: f64,
    tip: String,
}

/// 1, 2 or 5 times a power of ten, near `raw`.
fn nice_step(raw: f64) -> f64 {
    if !raw.is_finite() || raw <= 0.0 {
        return 1.0;
    }
    let pow = 10f64.powf(raw.log10().floor());
    let f = raw / pow;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * pow
}

fn fmt_tick(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{v:.decimals$}")
}

/// How to draw a chart.
struct ChartSpec<'a> {
    /// The SVG element's id.
    id: &'a str,
    /// The y axis's label, with its unit.
    label: &'a str,
    /// The time axis: Unix seconds.
    from: i64,
    to: i64,
    /// The zone whose midnights mark the time axis.
    zone: &'a TimeZone,
    zone_name: &'a str,
    /// Draw each point's ± error as a band.
    band: bool,
    /// Keep 0 on the y axis (an offset's reference).
    include_zero: bool,
}

/// An SVG line chart of `points`.
fn chart(spec: &ChartSpec<'_>, points: &[Plot]) -> Markup {
    let ChartSpec {
        id,
        label,
        from,
        to,
        zone,
        zone_name,
        band,
        include_zero,
    } = *spec;
    let (mut lo, mut hi) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.y - p.err), hi.max(p.y + p.err))
    });
    if include_zero {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    if hi - lo < 1e-9 {
        let pad = if hi.abs() > 1.0 { hi.abs() * 0.05 } else { 1.0 };
        lo -= pad;
        hi += pad;
    }
    let step = nice_step((hi - lo) / 5.0);
    let lo = (lo / step).floor() * step;
    let hi = (hi / step).ceil() * step;
    let pw = CHART_W - PAD_LEFT - PAD_RIGHT;
    let ph = CHART_H - PAD_TOP - PAD_BOTTOM;
    let span = (to - from).max(1) as f64;
    let x = |t: i64| PAD_LEFT + (t - from) as f64 / span * pw;
    let y = |v: f64| PAD_TOP + (hi - v) / (hi - lo) * ph;
    let mut y_ticks = Vec::new();
    let mut v = lo;
    while v <= hi + step * 1e-6 && y_ticks.len() < 50 {
        y_ticks.push(v);
        v += step;
    }
    // X ticks at local midnights, about six of them.
    let days = ((to - from) / 86_400).max(1);
    let every = match days {
        0..=10 => 1,
        11..=30 => 5,
        31..=120 => 15,
        _ => 30,
    };
    let mut x_ticks = Vec::new();
    if let Ok(start) = Timestamp::from_second(from) {
        let mut day = start.to_zoned(zone.clone()).date();
        for i in 0..=days + 1 {
            if let Ok(z) = day.to_zoned(zone.clone()) {
                let t = z.timestamp().as_second();
                if t >= from && t <= to && i % every == 0 {
                    x_ticks.push((t, z.strftime("%b %d").to_string()));
                }
            }
            match day.tomorrow() {
                Ok(d) => day = d,
                Err(_) => break,
            }
        }
    }
    let line: String = points
        .iter()
        .map(|p| format!("{:.1},{:.1}", x(p.at), y(p.y)))
        .collect::<Vec<_>>()
        .join(" ");
    let band_points: String = if band {
        points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.at), y(p.y + p.err)))
            .chain(
                points
                    .iter()
                    .rev()
                    .map(|p| format!("{:.1},{:.1}", x(p.at), y(p.y - p.err))),
            )
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        String::new()
    };
    let bottom = PAD_TOP + ph;
    let right = PAD_LEFT + pw;
    html! {
        svg.chart id=(id) xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (CHART_W) " " (CHART_H) }
            role="img" aria-label=(label) {
            @for t in &y_ticks {
                line.grid x1=(PAD_LEFT) x2=(right) y1=(format!("{:.1}", y(*t))) y2=(format!("{:.1}", y(*t))) {}
                text x=(PAD_LEFT - 6.0) y=(format!("{:.1}", y(*t) + 4.0)) text-anchor="end" { (fmt_tick(*t, step)) }
            }
            @for (t, text) in &x_ticks {
                line.grid x1=(format!("{:.1}", x(*t))) x2=(format!("{:.1}", x(*t))) y1=(PAD_TOP) y2=(bottom) {}
                text x=(format!("{:.1}", x(*t))) y=(bottom + 16.0) text-anchor="middle" { (text) }
            }
            @if include_zero && lo < 0.0 && hi > 0.0 {
                line.zero x1=(PAD_LEFT) x2=(right) y1=(format!("{:.1}", y(0.0))) y2=(format!("{:.1}", y(0.0))) {}
            }
            line.axis x1=(PAD_LEFT) x2=(PAD_LEFT) y1=(PAD_TOP) y2=(bottom) {}
            line.axis x1=(PAD_LEFT) x2=(right) y1=(bottom) y2=(bottom) {}
            text x="14" y=(PAD_TOP + ph / 2.0) text-anchor="middle"
                transform=(format!("rotate(-90 14 {:.1})", PAD_TOP + ph / 2.0)) { (label) }
            text x=(PAD_LEFT + pw / 2.0) y=(CHART_H - 6.0) text-anchor="middle" { "date (" (zone_name) ")" }
            @if band && !band_points.is_empty() {
                polygon.band points=(band_points) {}
            }
            polyline.line points=(line) {}
            @if points.len() <= MAX_MARKERS {
                @for p in points {
                    circle.pt cx=(format!("{:.1}", x(p.at))) cy=(format!("{:.1}", y(p.y))) r="2.5" {
                        title { (p.tip) }
                    }
                }
            }
        }
    }
}

async fn charts_page(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let Ok(id) = id.parse::<i64>() else {
        return Ok((
            StatusCode::NOT_FOUND,
            page(
                "No such door",
                Some(&admin),
                html! { p.error { "`" (id) "` is not a door id." } },
            ),
        )
            .into_response());
    };
    let (name, zone, zone_name) = match door_zone(&state, id).await {
        Ok(found) => found,
        Err(AppError::NotFound) => {
            return Ok((
                StatusCode::NOT_FOUND,
                page(
                    "No such door",
                    Some(&admin),
                    html! { p.error { "There is no door " (id) ". " a href="/" { "Back to the dashboard" } } },
                ),
            )
                .into_response())
        }
        Err(e) => return Err(e),
    };
    let now = now_unix();
    let battery_from = now - BATTERY_DAYS * 86_400;
    let clock_from = now - CLOCK_DAYS * 86_400;
    let battery: Vec<Plot> = battery_series(&state, id, battery_from)
        .await?
        .into_iter()
        .map(|p| Plot {
            at: p.at,
            y: p.mv as f64 / 1000.0,
            err: 0.0,
            tip: format!("{}: {}", local_text(p.at * 1_000_000, &zone), volts(p.mv)),
        })
        .collect();
    let clock: Vec<Plot> = clock_series(&state, id, clock_from)
        .await?
        .into_iter()
        .map(|p| Plot {
            at: p.at,
            y: p.offset_us as f64 / 1000.0,
            err: p.error_us.max(0) as f64 / 1000.0,
            tip: format!(
                "{}: {} ms ± {} ms ({})",
                local_text(p.at * 1_000_000, &zone),
                ms(p.offset_us),
                ms(p.error_us),
                p.source
            ),
        })
        .collect();
    let title = format!("{name}: charts");
    Ok(page(
        &title,
        Some(&admin),
        html! {
            style { (PreEscaped(CHART_STYLE)) }
            p { a href={ "/doors/" (id) } { "Door settings" } " · " a href={ "/log?door=" (id) } { "Access log" } }
            section #battery {
                h3 { "Battery, last " (BATTERY_DAYS) " days" }
                @if battery.is_empty() {
                    p.muted.empty { "No battery reports in the last " (BATTERY_DAYS) " days. A door reports its battery once a day, at 03:00 UTC." }
                } @else {
                    (chart(&ChartSpec {
                        id: "battery-chart",
                        label: "battery (V)",
                        from: battery_from,
                        to: now,
                        zone: &zone,
                        zone_name: &zone_name,
                        band: false,
                        include_zero: false,
                    }, &battery))
                    p.muted { (battery.len()) " reports." }
                }
            }
            section #clock {
                h3 { "Clock offset, last " (CLOCK_DAYS) " days" }
                @if clock.is_empty() {
                    p.muted.empty { "No clock samples in the last " (CLOCK_DAYS) " days. A sample is taken at every sync while the door's clock is valid." }
                } @else {
                    (chart(&ChartSpec {
                        id: "clock-chart",
                        label: "offset (ms)",
                        from: clock_from,
                        to: now,
                        zone: &zone,
                        zone_name: &zone_name,
                        band: true,
                        include_zero: true,
                    }, &clock))
                    p.muted { (clock.len()) " samples: device clock minus server clock, the band is the device's error bound." }
                }
            }
        },
    )
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(ago(100, 88), "12 s ago");
        assert_eq!(ago(1000, 400), "10 min ago");
        assert_eq!(ago(10_000, 0), "2 h ago");
        assert_eq!(ago(200_000, 0), "2 d ago");
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(nice_step(0.23), 0.5);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(120.0), 200.0);
        assert_eq!(fmt_tick(3.5, 0.5), "3.5");
        assert_eq!(fmt_tick(200.0, 100.0), "200");
    }

    #[test]
    fn dates_are_local_days() {
        let berlin = zone("Europe/Berlin");
        // 2026-11-24 00:00 CET is 2026-11-23 23:00 UTC.
        assert_eq!(
            time_param("from", "2026-11-24", &berlin, false),
            Ok(1_795_474_800_000_000)
        );
        assert_eq!(
            time_param("until", "2026-11-24", &berlin, true),
            Ok(1_795_561_200_000_000)
        );
        assert_eq!(
            time_param("from", "2026-11-24T08:00:00Z", &berlin, false),
            Ok(1_795_507_200_000_000)
        );
        assert_eq!(
            time_param("from", "yesterday", &berlin, false)
                .unwrap_err()
                .param,
            "from"
        );
    }
}
