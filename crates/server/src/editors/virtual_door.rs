//! `/doors/{id}/virtual`: the panel of a virtual door run by `serve --demo` — tap a card, type
//! keypad keys, see the LEDs, the lock and the decision, power-cycle it, cut its network or its
//! NTP. The door is the same core `Controller` the firmware runs, in this process, talking to
//! this server over real HTTP.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Form, Json, Router};
use maud::{html, Markup, PreEscaped};

use super::{editor_page, guard, parse_id, see, the_site, Fields, UiError, UiResult};
use crate::auth::Admin;
use crate::demo::{PanelCommand, PanelView as DoorView, VirtualDoor};
use crate::{directory, AppState};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/doors/{id}/virtual", get(panel).post(control))
        .route("/doors/{id}/virtual/state", get(state_json))
}

/// The virtual door for a door id, if this process runs one.
fn handle(state: &AppState, door_id: i64) -> Option<std::sync::Arc<dyn VirtualDoor>> {
    state
        .virtual_doors
        .read()
        .ok()?
        .iter()
        .find(|v| v.door_id == door_id)
        .map(|v| v.handle.clone())
}

/// Whether a door has a virtual door here (for links).
pub fn has_virtual(state: &AppState, door_id: i64) -> bool {
    handle(state, door_id).is_some()
}

fn leds(v: &DoorView) -> Markup {
    let green = v.feedback.as_deref() == Some("granted");
    let red = !green && v.feedback.is_some();
    let blink = v.feedback.as_deref() == Some("clock_unsynced");
    html! {
        span #led-green .led .green[green] title="green LED" {}
        span #led-red .led .red[red] .blink[blink] title="red LED" {}
    }
}

fn view_rows(v: &DoorView) -> Markup {
    html! {
        table #virtual-state {
            tr { th { "Power" } td #power { (if v.powered { "on" } else { "off" }) } }
            tr { th { "Network" } td #network { (if v.network { "connected" } else { "cut" }) } }
            tr { th { "NTP" } td #ntp {
                @if !v.ntp { "blocked" }
                @else if let Some(last) = &v.ntp_last { (last) }
                @else { "not asked yet" }
            } }
            tr { th { "Clock" } td #clock {
                @if v.clock_valid {
                    (v.clock_utc.as_deref().unwrap_or("")) " ± " (v.clock_error_ms.unwrap_or(0)) " ms, from "
                    (v.clock_source.as_deref().unwrap_or("?"))
                } @else { "not set" }
            } }
            tr { th { "Lock" } td #lock { (if v.unlocked { "open" } else { "locked" }) } }
            tr { th { "Door" } td #door-position {
                (if v.door_open { "open" } else { "closed" })
                @if !v.contact { " (no contact fitted: the controller does not see it)" }
            } }
            tr { th { "Alarm" } td #alarm { (v.alarm.as_deref().unwrap_or("—")) } }
            tr { th { "Lockdown" } td #lockdown { (if v.lockdown { "LOCKDOWN" } else { "no" }) } }
            tr { th { "LEDs / buzzer" } td { (leds(v)) " " span #feedback { (v.feedback.as_deref().unwrap_or("—")) } } }
            tr { th { "Last decision" } td #decision {
                @if let Some((who, what)) = &v.last_decision { code { (who) } " → " strong { (what) } } @else { "—" }
            } }
            tr { th { "List generation" } td #generation { (v.generation) } }
            tr { th { "Events waiting" } td #outbox { (v.outbox) } }
            tr { th { "Last sync" } td #last-sync { (v.last_sync.as_deref().unwrap_or("—")) } }
            tr { th { "Battery" } td #battery { (v.battery_mv) " mV" } }
        }
    }
}

async fn panel(State(state): State<AppState>, admin: Admin, Path(id): Path<String>) -> UiResult {
    let site = the_site(&state, &admin).await?;
    let door = directory::door(&state, site.id, parse_id(&id)?).await?;
    let Some(h) = handle(&state, door.id) else {
        return Err(UiError::NotFound);
    };
    let v = h.view();
    let action = format!("/doors/{}/virtual", door.id);
    let button = |what: &str, label: &str| {
        html! {
            form.inline method="post" action=(action) {
                (super::csrf(&admin))
                input type="hidden" name="do" value=(what);
                button type="submit" name="button" value=(what) { (label) }
            }
        }
    };
    Ok(editor_page(
        &format!("Virtual door: {}", door.name),
        &admin,
        html! {
            style { (PreEscaped(".led{display:inline-block;width:1.1em;height:1.1em;border-radius:50%;background:#ccc;margin-right:.3em;vertical-align:middle}.led.green{background:#2a2}.led.red{background:#d22}.blink{animation:b .15s step-start 6}@keyframes b{50%{opacity:.1}}")) }
            p { "A simulated door controller running the same door code as the firmware (over a flash file), talking to this server over HTTP. "
                a href={ "/doors/" (door.id) } { "Door settings" } }
            (view_rows(&v))
            h2 { "Card and keypad" }
            form method="post" action=(action) {
                (super::csrf(&admin))
                input type="hidden" name="do" value="card";
                label for="uid" { "Card UID (hex)" }
                input #uid name="uid" placeholder="04A1B2C3" required;
                button type="submit" #tap { "Tap card" }
            }
            form method="post" action=(action) {
                (super::csrf(&admin))
                label for="secure-uid" { "Secure card UID (7 bytes hex; the door's PN532 checks its key)" }
                input #secure-uid name="uid" placeholder="04DE5F1EACC040" required;
                button type="submit" name="do" value="secure_card" #present-secure { "Present genuine card" }
                button type="submit" name="do" value="secure_card_clone" #present-clone { "Present a clone (UID only)" }
            }
            form method="post" action=(action) {
                (super::csrf(&admin))
                input type="hidden" name="do" value="keys";
                label for="keys" { "Keys (digits, * and #)" }
                input #keys name="keys" placeholder="1234*123456#" required;
                button type="submit" #type-keys { "Type" }
            }
            h2 { "The door" }
            p {
                @if v.door_open { (button("door_close", "Close the door")) } @else { (button("door_open", "Open the door")) }
                (button("rex", "Press exit button"))
            }
            h2 { "Power and network" }
            p {
                @if v.powered { (button("power_cycle", "Power cycle")) (button("power_off", "Power off")) }
                @else { (button("power_on", "Power on")) }
                @if v.network { (button("network_down", "Cut network")) } @else { (button("network_up", "Restore network")) }
                @if v.ntp { (button("ntp_down", "Block NTP")) } @else { (button("ntp_up", "Unblock NTP")) }
            }
            script src="/static/virtual-door.js" data-state={ "/doors/" (door.id) "/virtual/state" } {}
        },
    )
    .into_response())
}

async fn state_json(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<DoorView>, UiError> {
    let site = the_site(&state, &admin).await?;
    let door = directory::door(&state, site.id, parse_id(&id)?).await?;
    let h = handle(&state, door.id).ok_or(UiError::NotFound)?;
    Ok(Json(h.view()))
}

async fn control(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> UiResult {
    let f = Fields(fields);
    guard(&admin, &headers, &f)?;
    let site = the_site(&state, &admin).await?;
    let door = directory::door(&state, site.id, parse_id(&id)?).await?;
    let h = handle(&state, door.id).ok_or(UiError::NotFound)?;
    let command = match f.get("do") {
        "card" => {
            let uid = f.get("uid").trim();
            let bytes = data_encoding::HEXUPPER_PERMISSIVE
                .decode(uid.as_bytes())
                .ok()
                .filter(|b| matches!(b.len(), 4 | 7 | 10))
                .ok_or_else(|| {
                    UiError::App(crate::error::AppError::BadRequest(format!(
                        "uid: {uid:?} is not a card UID (4, 7 or 10 bytes in hex)"
                    )))
                })?;
            PanelCommand::Card(bytes)
        }
        what @ ("secure_card" | "secure_card_clone") => {
            let uid = f.get("uid").trim();
            let bytes: [u8; 7] = data_encoding::HEXUPPER_PERMISSIVE
                .decode(uid.as_bytes())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    UiError::App(crate::error::AppError::BadRequest(format!(
                        "uid: {uid:?} is not a secure card's UID (7 bytes in hex)"
                    )))
                })?;
            PanelCommand::SecureCard {
                uid: bytes,
                clone: what == "secure_card_clone",
            }
        }
        "keys" => {
            let keys = f.get("keys").trim();
            if keys.is_empty()
                || keys.len() > 32
                || !keys
                    .bytes()
                    .all(|k| k.is_ascii_digit() || k == b'*' || k == b'#')
            {
                return Err(UiError::App(crate::error::AppError::BadRequest(format!(
                    "keys: {keys:?} is not keypad input (digits, * and #)"
                ))));
            }
            PanelCommand::Keys(keys.to_string())
        }
        "door_open" => PanelCommand::Door(true),
        "door_close" => PanelCommand::Door(false),
        "rex" => PanelCommand::Rex,
        "power_on" => PanelCommand::Power(true),
        "power_off" => PanelCommand::Power(false),
        "power_cycle" => PanelCommand::PowerCycle,
        "network_up" => PanelCommand::Network(true),
        "network_down" => PanelCommand::Network(false),
        "ntp_up" => PanelCommand::Ntp(true),
        "ntp_down" => PanelCommand::Ntp(false),
        other => {
            return Err(UiError::App(crate::error::AppError::BadRequest(format!(
                "unknown control {other:?}"
            ))))
        }
    };
    if !h.send(command) {
        return Err(UiError::App(crate::error::AppError::Internal(
            "the virtual door has stopped".into(),
        )));
    }
    // Give the door a moment so the page shows the outcome.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    Ok(see(&format!("/doors/{}/virtual", door.id)))
}
