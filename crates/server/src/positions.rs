//! Door position: each door's contact settings (is a door-position contact fitted, how long may
//! the door stay open), which its doors take at their next sync, and what the doors report of
//! their contacts — the door open or closed, and alarms (`door_forced`, `door_held_open`) raised
//! and not yet cleared.
//!
//! The state is read from the stored events, so every server process shows the same. An alarm
//! is active from its `alarm` event until the door reports `alarm_cleared` or the door closed
//! (`door` with `open: false`); events are ordered as the server stored them, which for one door
//! is the order the door sent them in.

use std::collections::HashMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::model::{invalid, ModelError};
use crate::AppState;

/// Held-open times the admin may set, in seconds.
pub const HELD_OPEN_S: std::ops::RangeInclusive<i64> = 1..=3600;

/// A door's contact settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// A door-position contact is fitted (without one the door raises no alarms).
    pub contact_fitted: bool,
    /// Seconds the door may stay open after an authorised opening.
    pub held_open_s: i64,
}

/// A door's settings.
pub async fn settings(state: &AppState, door_id: i64) -> Result<Settings, ModelError> {
    let row: Option<(i32, i32)> =
        sqlx::query_as("SELECT contact_fitted, held_open_s FROM doors WHERE id = $1")
            .bind(door_id)
            .fetch_optional(state.db.pool())
            .await?;
    let (fitted, held) = row.ok_or(ModelError::NotFound)?;
    Ok(Settings {
        contact_fitted: fitted != 0,
        held_open_s: i64::from(held),
    })
}

/// Reads a held-open time as the admin typed it: a whole number of seconds, 1 to 3600.
pub fn parse_held_open(text: &str) -> Result<i64, ModelError> {
    text.trim()
        .parse::<i64>()
        .ok()
        .filter(|s| HELD_OPEN_S.contains(s))
        .ok_or_else(|| {
            invalid(
                "held_open_s",
                "a whole number of seconds from 1 to 3600 (one hour)",
            )
        })
}

/// Sets a door's contact settings (the door takes them at its next sync).
pub async fn set_settings(
    state: &AppState,
    site_id: i64,
    door_id: i64,
    settings: Settings,
) -> Result<(), ModelError> {
    if !HELD_OPEN_S.contains(&settings.held_open_s) {
        return Err(invalid(
            "held_open_s",
            "a whole number of seconds from 1 to 3600 (one hour)",
        ));
    }
    let rows = sqlx::query(
        "UPDATE doors SET contact_fitted = $1, held_open_s = $2 WHERE site_id = $3 AND id = $4",
    )
    .bind(i32::from(settings.contact_fitted))
    .bind(settings.held_open_s as i32)
    .bind(site_id)
    .bind(door_id)
    .execute(state.db.pool())
    .await?
    .rows_affected();
    if rows == 0 {
        return Err(ModelError::NotFound);
    }
    // The door's next sync carries the settings.
    state.door_cache.reload_door(&state.db, door_id).await?;
    Ok(())
}

/// An alarm a door raised and has not cleared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct ActiveAlarm {
    /// The door's id.
    pub door_id: i64,
    /// The door's name.
    pub door: String,
    /// `door_forced` or `door_held_open`.
    pub kind: String,
    /// When it was raised, µs since the epoch (the door's clock if valid, else when received).
    pub since_us: i64,
    /// The alarm's event id (in the access log).
    pub event_id: i64,
}

/// The `door` event detail that ends an alarm, as [`crate::device_api`] stores it.
const DOOR_CLOSED: &str = r#"{"open":false}"#;

/// Alarms raised and not cleared, of every door or of one, oldest first.
pub async fn active_alarms(
    state: &AppState,
    door: Option<i64>,
) -> Result<Vec<ActiveAlarm>, sqlx::Error> {
    let rows: Vec<(i64, String, Option<String>, i64, i64)> = sqlx::query_as(
        "SELECT a.door_id, d.name, a.detail, COALESCE(a.device_us, a.received_us), a.id \
         FROM events a JOIN doors d ON d.id = a.door_id \
         WHERE a.id IN (SELECT MAX(x.id) FROM events x WHERE x.kind = 'alarm' GROUP BY x.door_id) \
         AND ($1 = 0 OR a.door_id = $1) \
         AND NOT EXISTS (SELECT 1 FROM events c WHERE c.door_id = a.door_id AND c.id > a.id \
             AND (c.kind = 'alarm_cleared' OR (c.kind = 'door' AND c.detail = $2))) \
         ORDER BY a.id",
    )
    .bind(door.unwrap_or(0))
    .bind(DOOR_CLOSED)
    .fetch_all(state.db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(door_id, door, detail, since_us, event_id)| ActiveAlarm {
            door_id,
            door,
            kind: detail_field(detail.as_deref(), "kind")
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "unknown".into()),
            since_us,
            event_id,
        })
        .collect())
}

/// What a door's contact last reported: open (`true`) or closed, and when (µs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contact {
    /// The door is open.
    pub open: bool,
    /// When it was reported, µs since the epoch.
    pub at_us: i64,
}

/// The last contact report per door (doors that never sent one are left out).
pub async fn contacts(
    state: &AppState,
    door: Option<i64>,
) -> Result<HashMap<i64, Contact>, sqlx::Error> {
    let rows: Vec<(i64, Option<String>, i64)> = sqlx::query_as(
        "SELECT e.door_id, e.detail, COALESCE(e.device_us, e.received_us) FROM events e \
         WHERE e.id IN (SELECT MAX(x.id) FROM events x WHERE x.kind = 'door' GROUP BY x.door_id) \
         AND ($1 = 0 OR e.door_id = $1)",
    )
    .bind(door.unwrap_or(0))
    .fetch_all(state.db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(door_id, detail, at_us)| {
            let open = detail_field(detail.as_deref(), "open")?.as_bool()?;
            Some((door_id, Contact { open, at_us }))
        })
        .collect())
}

fn detail_field(detail: Option<&str>, field: &str) -> Option<serde_json::Value> {
    let mut value: serde_json::Value = serde_json::from_str(detail?).ok()?;
    Some(value.get_mut(field)?.take())
}

/// Words for an alarm kind.
pub fn describe_alarm(kind: &str) -> &'static str {
    match kind {
        "door_forced" => "door forced open",
        "door_held_open" => "door held open",
        _ => "alarm",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_open_times_are_whole_seconds_up_to_an_hour() {
        assert_eq!(parse_held_open(" 30 ").ok(), Some(30));
        assert_eq!(parse_held_open("1").ok(), Some(1));
        assert_eq!(parse_held_open("3600").ok(), Some(3600));
        for bad in [
            "",
            "0",
            "-5",
            "3601",
            "2.5",
            "thirty",
            "99999999999999999999",
        ] {
            assert!(
                matches!(
                    parse_held_open(bad),
                    Err(ModelError::Invalid {
                        field: "held_open_s",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_closed_door_detail_is_what_the_device_api_stores() {
        assert_eq!(
            serde_json::json!({"open": false}).to_string(),
            DOOR_CLOSED,
            "active_alarms matches the stored text"
        );
    }
}
