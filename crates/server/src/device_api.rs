//! The device API: `POST /device/v1/enrol`, `/device/v1/sync`, `/device/v1/check` and
//! `/device/v1/watch` (the long poll, [`crate::watch`]), with
//! binary bodies in the format of [`chronolock_core::protocol`] (described in
//! `docs/protocol.md`). No admin session: enrolment is authorised by the one-time pairing code,
//! everything after it by the device key's HMAC.
//!
//! Errors are plain-text bodies with a status: 400 malformed, 401 unknown device or bad MAC,
//! 403 unknown or expired pairing code, 409 the code was used meanwhile.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chronolock_backend::{DoorList, Pairing};
use chronolock_core::allowlist::AccessType;
use chronolock_core::controller::Credential;
use chronolock_core::protocol::{DeviceStatus, EventBody, ProtocolError, WireEvent};
use rand::RngCore;

use crate::AppState;

/// Largest request body: a sync with a full event queue fits many times over.
const MAX_BODY: usize = 256 * 1024;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/device/v1/enrol", post(enrol))
        .route("/device/v1/sync", post(sync))
        .route("/device/v1/check", post(check))
        .route("/device/v1/watch", post(crate::watch::watch))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// A device API failure: status and a one-line reason.
#[derive(Debug)]
pub struct DeviceError(StatusCode, String);

impl IntoResponse for DeviceError {
    fn into_response(self) -> Response {
        if self.0 == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(detail = %self.1, "device API internal error");
            return (self.0, "internal error\n").into_response();
        }
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

impl From<ProtocolError> for DeviceError {
    fn from(e: ProtocolError) -> Self {
        let status = match e {
            ProtocolError::BadMac => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        };
        DeviceError(status, e.to_string())
    }
}

impl From<sqlx::Error> for DeviceError {
    fn from(e: sqlx::Error) -> Self {
        DeviceError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<crate::model::ModelError> for DeviceError {
    fn from(e: crate::model::ModelError) -> Self {
        DeviceError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

pub(crate) fn binary(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
}

/// The doors in the database, as the device protocol's logic ([`chronolock_backend`]) sees
/// them.
pub struct SqlDevices<'a>(pub &'a AppState);

impl From<chronolock_backend::DeviceError> for DeviceError {
    fn from(e: chronolock_backend::DeviceError) -> Self {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        DeviceError(status, e.reason)
    }
}

fn internal(e: impl std::fmt::Display) -> chronolock_backend::DeviceError {
    chronolock_backend::DeviceError::internal(e)
}

impl SqlDevices<'_> {
    /// The door from memory, or from the database if memory does not hold it (paired through
    /// another server process a moment ago, or not a door at all).
    async fn door(
        &self,
        door_id: i64,
    ) -> Result<
        Option<std::sync::Arc<crate::door_cache::CachedDoor>>,
        chronolock_backend::DeviceError,
    > {
        if let Some(door) = self.0.door_cache.door(door_id) {
            return Ok(Some(door));
        }
        self.0
            .door_cache
            .reload_door(&self.0.db, door_id)
            .await
            .map_err(internal)
    }
}

impl chronolock_backend::Devices for SqlDevices<'_> {
    type List = Vec<u8>;

    async fn pending_pairings(
        &self,
        now_unix: i64,
    ) -> Result<Vec<Pairing>, chronolock_backend::DeviceError> {
        let pending: Vec<(i64, String, i32)> = sqlx::query_as(
            "SELECT id, pairing_hash, sync_interval_s FROM doors \
             WHERE pairing_hash IS NOT NULL AND pairing_expires > $1",
        )
        .bind(now_unix)
        .fetch_all(self.0.db.pool())
        .await
        .map_err(internal)?;
        Ok(pending
            .into_iter()
            .filter_map(|(door_id, hash, interval)| {
                let code_hash = data_encoding::HEXLOWER
                    .decode(hash.as_bytes())
                    .ok()?
                    .try_into()
                    .ok()?;
                Some(Pairing {
                    door_id,
                    code_hash,
                    sync_interval_s: interval.max(1) as u32,
                })
            })
            .collect())
    }

    async fn claim_pairing(
        &self,
        pairing: &Pairing,
        device_key: [u8; 32],
        now_unix: i64,
    ) -> Result<bool, chronolock_backend::DeviceError> {
        // One use only, even with several server processes: the update names the code it
        // consumes.
        let claimed = sqlx::query(
            "UPDATE doors SET device_key = $1, paired_at = $2, pairing_hash = NULL, \
             pairing_expires = NULL, list_dirty = 1, device_generation = NULL, link_counter = 0 \
             WHERE id = $3 AND pairing_hash = $4",
        )
        .bind(device_key.to_vec())
        .bind(now_unix)
        .bind(pairing.door_id)
        .bind(data_encoding::HEXLOWER.encode(&pairing.code_hash))
        .execute(self.0.db.pool())
        .await
        .map_err(internal)?
        .rows_affected();
        if claimed != 1 {
            return Ok(false);
        }
        self.0
            .door_cache
            .reload_door(&self.0.db, pairing.door_id)
            .await
            .map_err(internal)?;
        // The list is sealed to the new device: compile it now so the first sync gets it.
        crate::model::refresh_door(self.0, pairing.door_id, now_unix)
            .await
            .map_err(internal)?;
        tracing::info!(door_id = pairing.door_id, "device paired");
        Ok(true)
    }

    async fn advance_counter(
        &self,
        door_id: i64,
        counter: u64,
    ) -> Result<bool, chronolock_backend::DeviceError> {
        self.accept(door_id, counter, Vec::new(), crate::now_micros())
            .await
    }

    async fn accept(
        &self,
        door_id: i64,
        counter: u64,
        events: Vec<WireEvent>,
        received_us: i64,
    ) -> Result<bool, chronolock_backend::DeviceError> {
        // Atomic across server processes, committed with other requests' ([`crate::link_writer`]).
        self.0
            .link_writer
            .accept(
                &self.0.db,
                &self.0.webhook_wake,
                door_id,
                counter,
                events,
                received_us,
            )
            .await
            .map_err(internal)
    }

    async fn device_key(
        &self,
        door_id: i64,
    ) -> Result<Option<[u8; 32]>, chronolock_backend::DeviceError> {
        Ok(self.door(door_id).await?.and_then(|d| d.device_key))
    }

    async fn reload_key(
        &self,
        door_id: i64,
        stale: &[u8; 32],
    ) -> Result<Option<[u8; 32]>, chronolock_backend::DeviceError> {
        // At most one database read per door and second, however many forged requests come.
        let cache = &self.0.door_cache;
        if !cache.may_recheck(door_id) {
            return Ok(None);
        }
        let door = cache
            .reload_door(&self.0.db, door_id)
            .await
            .map_err(internal)?;
        Ok(door.and_then(|d| d.device_key).filter(|key| key != stale))
    }

    async fn store_events(
        &self,
        door_id: i64,
        events: &[WireEvent],
        received_us: i64,
    ) -> Result<(), chronolock_backend::DeviceError> {
        // Only [`accept`](chronolock_backend::Devices::accept) stores events here, with the
        // counter; this is the same without one.
        let mut tx = self.0.db.pool().begin().await.map_err(internal)?;
        let stored = insert_events(&mut tx, door_id, events, received_us)
            .await
            .map_err(internal)?;
        let now = received_us.div_euclid(1_000_000);
        let stored: Vec<(i64, &str, i64)> =
            stored.into_iter().map(|(id, k)| (id, k, now)).collect();
        let hooks = crate::webhooks::enqueue_all(&mut tx, &stored)
            .await
            .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        if hooks {
            self.0.webhook_wake.notify_one();
        }
        Ok(())
    }

    fn record_status(&self, door_id: i64, status: &DeviceStatus, received_us: i64) {
        // Written behind, a second later, batched with every other door's.
        self.0.door_status.record(
            door_id,
            DoorStatus {
                at: received_us.div_euclid(1_000_000),
                // The protocol refuses generations above i64::MAX.
                generation: i64::try_from(status.generation).unwrap_or(i64::MAX),
                clock_valid: status.wall_us.is_some(),
                source: status.source.map(|s| s.as_str()),
                // A device may report any time at all: an offset that does not fit is none.
                offset_us: status.wall_us.and_then(|w| w.checked_sub(received_us)),
                error_us: i64::try_from(status.error_us).unwrap_or(i64::MAX),
                battery_mv: i32::from(status.battery_mv),
                list_capacity: i64::from(status.list_capacity),
                firmware_version: i64::from(status.firmware_version),
                firmware_partial: status
                    .partial_firmware
                    .map(|p| (i64::from(p.version), i64::from(p.offset))),
            },
        );
    }

    async fn door_list(
        &self,
        door_id: i64,
        device_generation: u64,
    ) -> Result<DoorList<Vec<u8>>, chronolock_backend::DeviceError> {
        let door = self
            .door(door_id)
            .await?
            .ok_or_else(|| chronolock_backend::DeviceError::internal("the door is gone"))?;
        let site = self.0.door_cache.site(door.site_id).unwrap_or_default();
        // The blob is read only when the door's list is older.
        let list = if device_generation < door.generation {
            crate::model::door_list(self.0, door_id)
                .await
                .map_err(internal)?
                .filter(|(g, _)| *g == door.generation)
                .map(|(_, bytes)| bytes)
        } else {
            None
        };
        Ok(DoorList {
            generation: door.generation,
            sync_interval_s: door.sync_interval_s,
            list,
            ntp_servers: site.ntp_servers.clone(),
            lockdown: site.lockdown,
            position: Some(door.position),
        })
    }

    async fn door_firmware(
        &self,
        door_id: i64,
    ) -> Result<Option<Vec<u8>>, chronolock_backend::DeviceError> {
        // What this sync reported (recorded just before, and not written yet unless a flush
        // took it meanwhile): a door that runs the assigned image or a newer one, or holds all
        // of it, is offered nothing, so the file is not read for it.
        let reported = self
            .0
            .door_status
            .firmware_reported(door_id)
            .unwrap_or_default();
        let Some((_, version, size)) = self.door(door_id).await?.and_then(|d| d.firmware) else {
            return Ok(None);
        };
        let (held_version, held_bytes) = reported.held.unwrap_or((0, 0));
        if version <= reported.running || (version == held_version && size <= held_bytes) {
            return Ok(None);
        }
        crate::firmware::assigned_file(self.0, door_id, reported)
            .await
            .map_err(internal)
    }

    async fn conditional_granted(
        &self,
        door_id: i64,
        credential: &Credential,
        now_unix: i64,
    ) -> Result<bool, chronolock_backend::DeviceError> {
        conditional_granted(self.0, door_id, credential, now_unix)
            .await
            .map_err(|e| internal(e.1))
    }
}

async fn enrol(State(state): State<AppState>, body: Bytes) -> Result<Response, DeviceError> {
    let mut random = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let (answer, _) = chronolock_backend::enrol(
        &SqlDevices(&state),
        &state.site_public_key,
        &body,
        crate::now_unix(),
        random,
    )
    .await?;
    Ok(binary(answer))
}

/// One event's columns: kind, credential, decision, mv, detail (JSON).
fn event_columns(
    body: &EventBody,
) -> (
    &'static str,
    Option<String>,
    Option<String>,
    Option<i32>,
    Option<String>,
) {
    let kind = body.kind_name();
    match body {
        EventBody::Decision {
            credential,
            decision,
        } => (
            kind,
            Some(credential.to_string()),
            Some(decision.as_str().to_string()),
            None,
            None,
        ),
        EventBody::Notify { credential } => (
            kind,
            Some(credential.to_string()),
            None,
            None,
            Some(serde_json::json!({"kind": "emergency"}).to_string()),
        ),
        EventBody::Report { mv, basis } => (
            kind,
            None,
            None,
            Some(i32::from(*mv)),
            Some(serde_json::json!({"basis": basis.as_str()}).to_string()),
        ),
        EventBody::Clock {
            valid,
            source,
            utc_us,
            error_us,
        } => (
            kind,
            None,
            None,
            None,
            Some(
                serde_json::json!({"valid": valid, "source": source.map(|s| s.as_str()),
                    "utc_us": utc_us, "error_us": error_us})
                .to_string(),
            ),
        ),
        EventBody::RtcWrite { utc_us } => (
            kind,
            None,
            None,
            None,
            Some(serde_json::json!({"utc_us": utc_us}).to_string()),
        ),
        EventBody::ActionsDropped { count } => (
            kind,
            None,
            None,
            None,
            Some(serde_json::json!({"count": count}).to_string()),
        ),
        EventBody::TimeRejected {
            source,
            server,
            reason,
        } => (
            kind,
            None,
            None,
            None,
            Some(
                serde_json::json!({"source": source.as_str(), "server": server,
                    "reason": reason.as_str()})
                .to_string(),
            ),
        ),
        EventBody::Door { open } => (
            kind,
            None,
            None,
            None,
            Some(serde_json::json!({"open": open}).to_string()),
        ),
        EventBody::Rex => (kind, None, None, None, None),
        EventBody::Alarm { kind: alarm } | EventBody::AlarmCleared { kind: alarm } => (
            kind,
            None,
            None,
            None,
            Some(serde_json::json!({"kind": alarm.as_str()}).to_string()),
        ),
        EventBody::Lockdown { on } => (
            kind,
            None,
            None,
            None,
            Some(serde_json::json!({"on": on}).to_string()),
        ),
    }
}

/// Inserts a sync's events once per (door, device event id) in `tx`; returns the ids and kinds
/// of those stored now (not before).
pub(crate) async fn insert_events(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    door_id: i64,
    events: &[WireEvent],
    receive_us: i64,
) -> Result<Vec<(i64, &'static str)>, sqlx::Error> {
    let mut stored = Vec::new();
    for event in events {
        let (kind, credential, decision, mv, detail) = event_columns(&event.body);
        let inserted: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO events (door_id, device_event_id, kind, device_us, received_us, credential, decision, mv, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (door_id, device_event_id) DO NOTHING RETURNING id",
        )
        .bind(door_id)
        // Stored as the same 64 bits; ids above i64::MAX read back negative, and stay unique.
        .bind(event.id as i64)
        .bind(kind)
        .bind(event.device_us)
        .bind(receive_us)
        .bind(credential)
        .bind(decision)
        .bind(mv)
        .bind(detail)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some((id,)) = inserted {
            stored.push((id, kind));
        }
    }
    Ok(stored)
}

async fn sync(State(state): State<AppState>, body: Bytes) -> Result<Response, DeviceError> {
    let receive_us = crate::now_micros();
    let answer = chronolock_backend::sync(
        &SqlDevices(&state),
        &state.signing_key,
        &body,
        receive_us,
        crate::now_micros,
    )
    .await?;
    Ok(binary(answer))
}

async fn check(State(state): State<AppState>, body: Bytes) -> Result<Response, DeviceError> {
    let answer = chronolock_backend::check(&SqlDevices(&state), &body, crate::now_unix()).await?;
    Ok(binary(answer))
}

/// The online check of a CONDITIONAL credential: granted when the credential's winning rule for
/// this door is CONDITIONAL, today lies in its date range (and, with a schedule, now lies in
/// it, in the site's local time), and the person's expiry day has not ended. Revoking or narrowing the rule takes effect at once.
pub async fn conditional_granted(
    state: &AppState,
    door_id: i64,
    credential: &Credential,
    now: i64,
) -> Result<bool, DeviceError> {
    let person: Option<(i64,)> = match credential {
        Credential::Card { uid, len } | Credential::SecureCard { uid, len } => {
            sqlx::query_as("SELECT person_id FROM cards WHERE uid = $1")
                .bind(data_encoding::HEXUPPER.encode(&uid[..usize::from(*len)]))
                .fetch_optional(state.db.pool())
                .await?
        }
        Credential::Keypad { code, len } => {
            sqlx::query_as("SELECT person_id FROM keypad_users WHERE code = $1")
                .bind(String::from_utf8_lossy(&code[..usize::from(*len)]).into_owned())
                .fetch_optional(state.db.pool())
                .await?
        }
    };
    let Some((person,)) = person else {
        return Ok(false);
    };
    let Some(rule) = crate::model::winning_rule(state, door_id, person).await? else {
        return Ok(false);
    };
    if rule.access != AccessType::Conditional {
        return Ok(false);
    }
    // A list compiled before the person's expiry still holds them; the online check does not.
    if crate::model::person_expired(state, person, now).await? {
        return Ok(false);
    }
    Ok(crate::model::rule_allows_at(state, door_id, &rule, now).await?)
}

/// What a sync says about its door, for the dashboard.
#[derive(Clone, Debug, PartialEq)]
pub struct DoorStatus {
    /// Server time of the sync (Unix seconds).
    pub at: i64,
    /// The device's list generation.
    pub generation: i64,
    /// Whether its clock is valid.
    pub clock_valid: bool,
    /// Its clock's source.
    pub source: Option<&'static str>,
    /// Device clock minus server time, µs.
    pub offset_us: Option<i64>,
    /// The device's own error bound, µs.
    pub error_us: i64,
    /// Battery, mV (0: not reported).
    pub battery_mv: i32,
    /// The largest list the device can install, bytes (0: not reported).
    pub list_capacity: i64,
    /// The firmware version it runs (0: it takes no update over the air).
    pub firmware_version: i64,
    /// The firmware update it holds the start of: its version, and bytes of the signed file.
    pub firmware_partial: Option<(i64, i64)>,
}

/// Door statuses waiting to be written: the latest per door, flushed every second in one
/// transaction. Under load this turns thousands of small writes into one; a crash loses at
/// most a second of "last seen" (events are never buffered).
#[derive(Debug, Default)]
pub struct StatusBuffer {
    pending: std::sync::Mutex<std::collections::HashMap<i64, DoorStatus>>,
}

impl StatusBuffer {
    /// Keeps the latest status of a door.
    pub fn record(&self, door_id: i64, status: DoorStatus) {
        if let Ok(mut p) = self.pending.lock() {
            p.insert(door_id, status);
        }
    }

    /// What a door reported of its firmware in a status not written yet.
    pub fn firmware_reported(&self, door_id: i64) -> Option<crate::firmware::Reported> {
        let pending = self.pending.lock().ok()?;
        let status = pending.get(&door_id)?;
        let u32_of = |v: i64| u32::try_from(v).ok();
        Some(crate::firmware::Reported {
            running: u32_of(status.firmware_version)?,
            held: status
                .firmware_partial
                .and_then(|(version, bytes)| u32_of(version).zip(u32_of(bytes))),
        })
    }

    /// Writes what is waiting; returns how many doors.
    pub async fn flush(&self, db: &crate::Db) -> Result<usize, sqlx::Error> {
        let pending = match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return Ok(0),
        };
        if pending.is_empty() {
            return Ok(0);
        }
        // In door order, as every transaction that writes several doors locks them
        // ([`crate::link_writer`], the list compiler): two of them cannot wait on each other.
        let mut pending: Vec<(i64, DoorStatus)> = pending.into_iter().collect();
        pending.sort_unstable_by_key(|(door_id, _)| *door_id);
        let mut tx = db.pool().begin().await?;
        for (door_id, s) in &pending {
            sqlx::query(
                // A reported capacity that changed marks the list for a recompile, so that a list
                // too large for the device is reported to the admin (and not sent). The CASEs
                // read the row's values from before this update.
                "UPDATE doors SET last_sync = $1, device_generation = $2, clock_valid = $3, clock_source = $4, \
                 clock_offset_us = $5, clock_error_us = $6, battery_mv = CASE WHEN $7 > 0 THEN $7 ELSE battery_mv END, \
                 list_dirty = CASE WHEN $8 > 0 AND list_capacity <> $8 THEN 1 ELSE list_dirty END, \
                 list_capacity = CASE WHEN $8 > 0 THEN $8 ELSE list_capacity END, \
                 firmware_version = $9, firmware_partial_version = $10, firmware_partial_offset = $11 \
                 WHERE id = $12",
            )
            .bind(s.at)
            .bind(s.generation)
            .bind(i64::from(s.clock_valid))
            .bind(s.source)
            .bind(s.offset_us)
            .bind(s.error_us)
            .bind(s.battery_mv)
            .bind(s.list_capacity)
            .bind(s.firmware_version)
            .bind(s.firmware_partial.map(|p| p.0))
            .bind(s.firmware_partial.map(|p| p.1))
            .bind(door_id)
            .execute(&mut *tx)
            .await?;
            if let (Some(offset), Some(source)) = (s.offset_us, s.source) {
                // One sample a minute at most: the chart's resolution, whatever the sync rate.
                sqlx::query(
                    "INSERT INTO clock_samples (door_id, at, offset_us, error_us, source) \
                     SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS \
                     (SELECT 1 FROM clock_samples WHERE door_id = $1 AND at > $6)",
                )
                .bind(door_id)
                .bind(s.at)
                .bind(offset)
                .bind(s.error_us)
                .bind(source)
                .bind(s.at - 60)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(pending.len())
    }

    /// Flushes every second until the server stops.
    pub async fn run(state: AppState) {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            if let Err(e) = state.door_status.flush(&state.db).await {
                tracing::warn!(error = %e, "writing door statuses");
            }
        }
    }
}
