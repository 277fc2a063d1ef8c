//! `/doors` and `/doors/{id}`: list, add, rename and delete doors, see their list's generation
//! and size, pair a device (the pairing code is shown once), see its firmware and update, set
//! its door-position contact and held-open time and see what the contact reports (open, closed,
//! an alarm), and the rules that name a door.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Form, Router};
use chronolock_core::allowlist::AllowList;
use maud::{html, Markup};

use super::{
    button_form, editor_page, form_error, guard, local_time, parse_id, see, show_once, the_site,
    unprocessable, FieldError, Fields, UiResult,
};
use crate::auth::Admin;
use crate::directory::{self, Door, RuleFilter, Site};
use crate::pages::field_error;
use crate::{device, model, positions, AppState};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/doors", get(list).post(create))
        .route("/doors/{id}", get(show).post(rename))
        .route("/doors/{id}/pair", axum::routing::post(pair))
        .route("/doors/{id}/position", axum::routing::post(set_position))
        .route("/doors/{id}/delete", get(confirm_delete).post(delete))
}

/// The device column: paired, waiting for a device with a code, or neither.
fn device_status(site: &Site, door: &Door, now: i64) -> Markup {
    html! {
        @if door.paired {
            "paired"
            @if let Some(at) = door.paired_at { span.muted { " since " (local_time(&site.zone(), at)) } }
        } @else {
            "not paired"
        }
        @if let Some(until) = door.pairing_expires.filter(|t| *t > now) {
            span.muted { " (a pairing code is valid until " (local_time(&site.zone(), until)) ")" }
        }
    }
}

fn last_sync(site: &Site, door: &Door) -> String {
    door.last_sync
        .map_or_else(|| "never".into(), |t| local_time(&site.zone(), t))
}

async fn list_page(
    state: &AppState,
    admin: &Admin,
    site: &Site,
    f: &Fields,
    err: FieldError<'_>,
) -> Result<Markup, super::UiError> {
    let doors = directory::doors(state, site.id).await?;
    let now = crate::now_unix();
    Ok(editor_page(
        "Doors",
        admin,
        html! {
            @if doors.is_empty() {
                p { "No doors yet." }
            } @else {
                table {
                    thead { tr { th { "Door" } th { "Generation" } th { "Device" } th { "Last sync (" (site.timezone) ")" } } }
                    tbody {
                        @for door in &doors {
                            tr {
                                td { a href={ "/doors/" (door.id) } { (door.name) } }
                                td { (door.generation) }
                                td { (device_status(site, door, now)) }
                                td { (last_sync(site, door)) }
                            }
                        }
                    }
                }
            }
            section {
                h3 { "Add a door" }
                form method="post" action="/doors" {
                    (super::csrf(admin))
                    label for="name" { "Name" }
                    input id="name" name="name" value=(f.get("name")) required maxlength="100";
                    (field_error(err, "name"))
                    button type="submit" id="add-door" { "Add door" }
                }
            }
        },
    ))
}

async fn list(State(state): State<AppState>, admin: Admin) -> UiResult {
    let site = the_site(&state, &admin).await?;
    Ok(list_page(&state, &admin, &site, &Fields::default(), None)
        .await?
        .into_response())
}

async fn create(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> UiResult {
    let f = Fields(fields);
    guard(&admin, &headers, &f)?;
    let site = the_site(&state, &admin).await?;
    match model::create_door(&state, site.id, f.get("name")).await {
        Ok(id) => {
            // Give the new door its (possibly empty) list at once.
            model::refresh_door(&state, id, crate::now_unix()).await?;
            Ok(see(&format!("/doors/{id}")))
        }
        Err(e) => {
            let e = super::unique_as(e, "name", "a door of this name exists");
            let (field, message) = form_error(e, &["name"])?;
            Ok(unprocessable(
                list_page(&state, &admin, &site, &f, Some((field, &message))).await?,
            ))
        }
    }
}

async fn door_page(
    state: &AppState,
    admin: &Admin,
    site: &Site,
    door: &Door,
    f: &Fields,
    err: FieldError<'_>,
) -> Result<Markup, super::UiError> {
    let rules = directory::rules(state, site.id, RuleFilter::Door(door.id)).await?;
    let list = model::door_list(state, door.id).await?;
    let info = list
        .as_ref()
        .and_then(|(_, bytes)| AllowList::open(bytes).ok().map(|l| l.info()));
    let firmware = crate::firmware::doors_firmware(state, Some(door.id))
        .await?
        .remove(&door.id)
        .unwrap_or_default();
    let now = crate::now_unix();
    let from = format!("door:{}", door.id);
    let settings = positions::settings(state, door.id).await?;
    let contact = positions::contacts(state, Some(door.id))
        .await?
        .remove(&door.id);
    let alarm = positions::active_alarms(state, Some(door.id)).await?.pop();
    let zone = site.zone();
    Ok(editor_page(
        &format!("Door: {}", door.name),
        admin,
        html! {
            p { a href="/doors" { "← All doors" } }
            section {
                h3 { "Allow-list" }
                p {
                    "Generation " strong #generation { (door.generation) }
                    @if let (Some((_, bytes)), Some(info)) = (&list, &info) {
                        ", " (bytes.len()) " bytes: " (info.cards) " card(s), "
                        (info.keypad_users) " keypad code(s)."
                    } @else {
                        ", not compiled yet."
                    }
                }
                @if let Some(error) = &door.list_error {
                    p.error #list-error role="alert" { "Not updated: " (error) }
                }
            }
            section {
                h3 { "Device" }
                p { (device_status(site, door, now)) "; last sync: " (last_sync(site, door)) }
                @if super::virtual_door::has_virtual(state, door.id) {
                    p { "This door is a virtual door run by the demo: "
                        a #virtual-panel href={ "/doors/" (door.id) "/virtual" } { "open its panel" }
                        " to tap cards, type codes and cut its power or network." }
                }
                form method="post" action={ "/doors/" (door.id) "/pair" } {
                    (super::csrf(admin))
                    p.hint { "A pairing code lets one device enrol as this door within 24 hours. \
                              Asking for a new code leaves the current device working until \
                              the new one enrols." }
                    button type="submit" id="pair" { "Pair a device" }
                }
            }
            section #position {
                h3 { "Door contact" }
                @if let Some(a) = &alarm {
                    p.error #door-alarm role="alert" {
                        "Alarm: " (positions::describe_alarm(&a.kind)) " since "
                        (local_time(&zone, a.since_us.div_euclid(1_000_000)))
                        " — it clears when the door reports it closed. "
                        a href={ "/log?door=" (door.id) "&kind=alarms" } { "Alarms in the log" }
                    }
                }
                p { "The door is "
                    strong #contact-state {
                        @match contact {
                            Some(c) if c.open => "open",
                            Some(_) => "closed",
                            None => "unknown",
                        }
                    }
                    @match contact {
                        Some(c) => span.muted { " (reported " (local_time(&zone, c.at_us.div_euclid(1_000_000))) ")" },
                        None if !settings.contact_fitted => span.muted { " (no contact fitted)" },
                        None => span.muted { " (the door has not reported its contact yet)" },
                    }
                }
                form method="post" action={ "/doors/" (door.id) "/position" } {
                    (super::csrf(admin))
                    label {
                        input #contact-fitted type="checkbox" name="contact_fitted" value="1"
                            checked[if f.get("position") == "1" { f.get("contact_fitted") == "1" } else { settings.contact_fitted }];
                        " A door-position contact is fitted (it reports the door open or closed, \
                          and raises an alarm when the door is forced or held open)"
                    }
                    label for="held-open" { "Held-open time (seconds, 1 to 3600)" }
                    input #held-open name="held_open_s" type="number" min="1" max="3600" required
                        value=(f.or("held_open_s", &settings.held_open_s.to_string()));
                    (field_error(err, "held_open_s"))
                    input type="hidden" name="position" value="1";
                    p.hint { "How long the door may stay open after someone was let in or \
                              pressed the exit button. The door takes these at its next sync." }
                    button type="submit" #save-position { "Save" }
                }
            }
            section #firmware {
                h3 { "Firmware" }
                p { "Runs " strong #firmware-running { (firmware.running_text()) }
                    @if firmware.running == Some(0) {
                        span.muted { " (the device takes no updates over the air)" }
                    } @else if firmware.running.is_none() {
                        span.muted { " (not reported yet)" }
                    }
                }
                @match (&firmware.assigned, firmware.state_text()) {
                    (Some(a), Some(text)) => p #firmware-update {
                        "Update to " strong { (a.version) } " (" (a.flash_mb) " MB flash): "
                        span #firmware-state { (text) }
                    },
                    _ => p.muted #firmware-update { "No update assigned." },
                }
                p { a href="/firmware" #firmware-link { "Assign an update on the firmware page" } }
            }
            section {
                h3 { "Rules for this door" }
                (super::rules::rules_table(admin, &site.zone(), &rules, &from, false))
                p { a href={ "/rules/new?door=" (door.id) } id="add-rule" { "Add a rule for this door" } }
            }
            (super::rename_and_delete(admin, &format!("/doors/{}", door.id), &door.name, "door", f, err))
        },
    ))
}

async fn show(State(state): State<AppState>, admin: Admin, Path(id): Path<String>) -> UiResult {
    let site = the_site(&state, &admin).await?;
    let door = directory::door(&state, site.id, parse_id(&id)?).await?;
    Ok(
        door_page(&state, &admin, &site, &door, &Fields::default(), None)
            .await?
            .into_response(),
    )
}

async fn rename(
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
    if let Err(e) = directory::rename_door(&state, site.id, door.id, f.get("name")).await {
        let (field, message) = form_error(e, &["name"])?;
        return Ok(unprocessable(
            door_page(&state, &admin, &site, &door, &f, Some((field, &message))).await?,
        ));
    }
    Ok(see(&format!("/doors/{}", door.id)))
}

async fn pair(
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
    let code = device::new_pairing_code(&state, door.id).await?;
    let expires = crate::now_unix() + device::PAIRING_TTL_S;
    Ok(show_once(editor_page(
        &format!("Pairing code for {}", door.name),
        &admin,
        html! {
            div.once {
                p { "Enter this code on the device (it is shown only now):" }
                p.secret { code #pairing-code { (code) } }
                p { "Valid until " (local_time(&site.zone(), expires)) " (" (site.timezone) "), 24 hours, for one device." }
            }
            p { a href={ "/doors/" (door.id) } { "Back to " (door.name) } }
        },
    )))
}

async fn set_position(
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
    let saved = match positions::parse_held_open(f.get("held_open_s")) {
        Ok(held_open_s) => {
            let settings = positions::Settings {
                contact_fitted: f.get("contact_fitted") == "1",
                held_open_s,
            };
            positions::set_settings(&state, site.id, door.id, settings).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = saved {
        let (field, message) = form_error(e, &["held_open_s"])?;
        return Ok(unprocessable(
            door_page(&state, &admin, &site, &door, &f, Some((field, &message))).await?,
        ));
    }
    Ok(see(&format!("/doors/{}", door.id)))
}

async fn confirm_delete(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> UiResult {
    let site = the_site(&state, &admin).await?;
    let door = directory::door(&state, site.id, parse_id(&id)?).await?;
    Ok(editor_page(
        &format!("Delete {}?", door.name),
        &admin,
        html! {
            p { "Deleting the door deletes its rules and its events. Its device stops getting lists." }
            (button_form(&admin, &format!("/doors/{}/delete", door.id), "Delete the door", &[("confirm", "yes")]))
            p { a href={ "/doors/" (door.id) } { "Keep it" } }
        },
    )
    .into_response())
}

async fn delete(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> UiResult {
    let f = Fields(fields);
    guard(&admin, &headers, &f)?;
    let site = the_site(&state, &admin).await?;
    let door_id = parse_id(&id)?;
    if f.get("confirm") != "yes" {
        return Ok(see(&format!("/doors/{door_id}/delete")));
    }
    directory::delete_door(&state, site.id, door_id).await?;
    Ok(see("/doors"))
}
