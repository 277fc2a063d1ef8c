//! The admin UI's editors: server-rendered forms for the site, doors, people (cards, keypad
//! codes, groups), groups, schedules, rules, firmware updates and the site's lockdown.
//!
//! Every form posts, and a successful post redirects to a page to GET (POST-redirect-GET); the
//! exceptions are the pages that show a secret once (a pairing code, a TOTP secret, HOTP backup
//! codes), which answer the POST directly and are never cached. Bad input re-renders the form
//! with the admin's values and the message beside the field, with status 422, and saves
//! nothing. Ids in the URL or a form that are not numbers, or name nothing on this site, give a
//! 404 page. Every change that can alter a door's list ends with [`crate::model::site_changed`],
//! so the doors recompile and their generation rises.
//!
//! The UI works on one site: the first row of `sites`. Until it exists every editor but
//! `/site` shows a link to create it.

mod doors;
mod firmware;
mod groups;
mod holidays;
mod keypad;
mod learn;
pub(crate) mod lockdown;
mod people;
pub(crate) mod rules;
mod schedules;
mod site;
mod transfer;
pub mod virtual_door;

pub(crate) use keypad::{backup_codes, enrol_secret as keypad_enrol, otpauth_uri};

use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Router;
use jiff::tz::TimeZone;
use maud::{html, Markup, PreEscaped};

use crate::auth::Admin;
use crate::directory::{self, Site};
use crate::error::AppError;
use crate::model::ModelError;
use crate::pages::page;
use crate::schedule::LocalSlot;
use crate::AppState;

/// The routes of the editors.
pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(site::routes())
        .merge(doors::routes())
        .merge(firmware::routes())
        .merge(people::routes())
        .merge(keypad::routes())
        .merge(learn::routes())
        .merge(groups::routes())
        .merge(schedules::routes())
        .merge(holidays::routes())
        .merge(lockdown::routes())
        .merge(rules::routes())
        .merge(virtual_door::routes())
        .merge(transfer::routes())
}

/// Why an editor could not answer with its page.
#[derive(Debug)]
pub(crate) enum UiError {
    /// The id names nothing (on this site): a 404 page.
    NotFound,
    /// There is no site yet: a page that links to `/site`.
    NoSite(Box<Admin>),
    /// Anything else, answered as the server's usual error.
    App(AppError),
}

impl From<AppError> for UiError {
    fn from(e: AppError) -> Self {
        UiError::App(e)
    }
}

impl From<sqlx::Error> for UiError {
    fn from(e: sqlx::Error) -> Self {
        UiError::App(e.into())
    }
}

impl From<ModelError> for UiError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::NotFound => UiError::NotFound,
            ModelError::Invalid { field, message } => {
                UiError::App(AppError::BadRequest(format!("{field}: {message}")))
            }
            other => UiError::App(AppError::Internal(other.to_string())),
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        match self {
            UiError::NotFound => (
                StatusCode::NOT_FOUND,
                page(
                    "Not found",
                    None,
                    html! {
                        p { "There is no such page, or what it showed was deleted." }
                        p { a href="/" { "Back to the dashboard" } }
                    },
                ),
            )
                .into_response(),
            UiError::NoSite(admin) => (
                StatusCode::CONFLICT,
                page(
                    "No site yet",
                    Some(&admin),
                    html! {
                        p { "Create the site first: " a href="/site" { "set up the site" } "." }
                    },
                ),
            )
                .into_response(),
            UiError::App(e) => e.into_response(),
        }
    }
}

impl From<UiError> for AppError {
    fn from(e: UiError) -> Self {
        match e {
            UiError::NotFound => AppError::NotFound,
            UiError::NoSite(_) => AppError::BadRequest("there is no site yet".into()),
            UiError::App(e) => e,
        }
    }
}

/// A slot from its parts as the API sends them (days `mon` … `sun`, `HH:MM` start and end),
/// read and checked exactly as the schedule form's; the error names the field.
pub(crate) fn slot_from_parts(
    days: &[String],
    start: &str,
    end: &str,
) -> Result<LocalSlot, (&'static str, String)> {
    let mut pairs: Vec<(String, String)> = days
        .iter()
        .map(|d| ("days".to_string(), d.clone()))
        .collect();
    pairs.push(("start".into(), start.into()));
    pairs.push(("end".into(), end.into()));
    parse_slot(&Fields(pairs))
}

type UiResult = Result<Response, UiError>;

/// A field error as [`crate::pages::field_error`] takes it: (field, message).
type FieldError<'a> = Option<(&'a str, &'a str)>;

/// The fields of a submitted form (or query), in order. Repeated names (checkboxes) keep every
/// value; a missing field reads as empty, so a form never fails to parse.
#[derive(Clone, Debug, Default)]
struct Fields(Vec<(String, String)>);

impl Fields {
    /// The first value of `name`, or "".
    fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The submitted value of `name` if the form had that field, else `default` (for forms that
    /// show current values).
    fn or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or(default, |(_, v)| v.as_str())
    }

    /// Every value of `name`.
    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A positive id from a path segment or a form; anything else names nothing.
fn parse_id(text: &str) -> Result<i64, UiError> {
    text.trim()
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or(UiError::NotFound)
}

/// The site the UI works on; without one, a page that says to create it.
async fn the_site(state: &AppState, admin: &Admin) -> Result<Site, UiError> {
    directory::first_site(state)
        .await?
        .ok_or_else(|| UiError::NoSite(Box::new(admin.clone())))
}

/// The checks every editor POST passes first: same-site origin and the session's CSRF token.
fn guard(admin: &Admin, headers: &HeaderMap, fields: &Fields) -> Result<(), UiError> {
    crate::auth::check_origin(headers)?;
    admin.check_csrf(fields.get("csrf"))?;
    Ok(())
}

/// The hidden CSRF field every form carries.
fn csrf(admin: &Admin) -> Markup {
    html! { input type="hidden" name="csrf" value=(admin.csrf); }
}

/// A one-button form that posts to `action` (remove, leave, …).
fn button_form(admin: &Admin, action: &str, label: &str, hidden: &[(&str, &str)]) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf(admin))
            @for (name, value) in hidden { input type="hidden" name=(name) value=(value); }
            button type="submit" { (label) }
        }
    }
}

/// The confirmation step of a delete: unless the form carries `confirm=yes`, the answer is a
/// page that says what `what` removes and posts the same form to `action` again with
/// `confirm=yes` (or goes `back`). Every delete in the editors passes through it.
fn confirm_first(
    admin: &Admin,
    f: &Fields,
    title: &str,
    what: Markup,
    action: &str,
    back: &str,
) -> Option<Response> {
    if f.get("confirm") == "yes" {
        return None;
    }
    let kept: Vec<(&str, &str)> =
        f.0.iter()
            .filter(|(k, _)| k != "csrf" && k != "confirm")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([("confirm", "yes")])
            .collect();
    Some(crate::pages::confirm_page(admin, title, what, action, back, &kept).into_response())
}

/// The last sections of an entity's page: rename it (the form keeps the admin's input and shows
/// the name's error), and the link to delete it. `base` is the entity's page, `noun` what it is.
fn rename_and_delete(
    admin: &Admin,
    base: &str,
    name: &str,
    noun: &str,
    f: &Fields,
    err: FieldError<'_>,
) -> Markup {
    html! {
        section {
            h3 { "Rename" }
            form method="post" action=(base) {
                (csrf(admin))
                label for="name" { "Name" }
                input id="name" name="name" value=(f.or("name", name)) required maxlength="100";
                (crate::pages::field_error(err, "name"))
                button type="submit" id="rename" { "Rename" }
            }
        }
        section {
            a href={ (base) "/delete" } id="delete" { "Delete this " (noun) "…" }
        }
    }
}

/// The page again with the admin's input and the error: 422.
fn unprocessable(markup: Markup) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, markup).into_response()
}

/// After a successful post: GET this page (303).
fn see(path: &str) -> Response {
    Redirect::to(path).into_response()
}

/// A page that shows a secret once: never stored by the browser or a proxy.
fn show_once(markup: Markup) -> Response {
    ([(CACHE_CONTROL, "no-store")], markup).into_response()
}

/// Turns a model error into the (field, message) to show beside a form field: one of `fields`
/// (the form's fields; an error about another field is shown at the first). Errors that are not
/// about the input pass through.
fn form_error(e: ModelError, fields: &[&'static str]) -> Result<(&'static str, String), UiError> {
    match e {
        ModelError::Invalid { field, message } => {
            let shown = fields
                .iter()
                .copied()
                .find(|f| *f == field)
                .or_else(|| fields.first().copied())
                .unwrap_or(field);
            Ok((shown, message))
        }
        ModelError::Db(sqlx::Error::Database(d)) if d.is_unique_violation() => Ok((
            fields.first().copied().unwrap_or("name"),
            "this name is taken".to_string(),
        )),
        other => Err(other.into()),
    }
}

/// A unique-constraint violation as a field error with `message`; other errors unchanged.
fn unique_as(e: ModelError, field: &'static str, message: &str) -> ModelError {
    match e {
        ModelError::Db(sqlx::Error::Database(d)) if d.is_unique_violation() => {
            ModelError::Invalid {
                field,
                message: message.to_string(),
            }
        }
        other => other,
    }
}

/// Styles the editors add to the layout's.
fn styles() -> Markup {
    html! {
        style { (PreEscaped("
form.inline { display: inline-block; margin: 0 .3rem 0 0; }
form.inline button { padding: .15rem .5rem; font-size: .9rem; }
section { margin: 1.5rem 0; }
section h3 { margin-bottom: .4rem; }
fieldset { border: 1px solid #ddd; display: flex; gap: .6rem; flex-wrap: wrap; }
fieldset label { font-weight: normal; margin: 0; }
.secret { font-size: 1.2rem; letter-spacing: .08em; word-break: break-all; }
.once { background: #fff8e1; border: 1px solid #f0c36d; padding: .6rem .8rem; }
.hint { color: #666; font-size: .9rem; margin: 0; }
.badge { border-radius: .6rem; padding: .05rem .5rem; font-size: .85rem; white-space: nowrap; }
.badge.secure { background: #e3f4e1; color: #1d5c1a; }
.badge.cloneable { background: #fff1e0; color: #8a4b00; }
label.check { font-weight: normal; display: block; margin: .4rem 0; }
")) }
    }
}

/// The editor layout: the site's page with the editors' styles.
fn editor_page(title: &str, admin: &Admin, body: Markup) -> Markup {
    page(
        title,
        Some(admin),
        html! {
            (styles())
            (body)
        },
    )
}

/// Unix seconds as local date and time in `zone`, e.g. `2026-11-24 09:58`.
fn local_time(zone: &TimeZone, unix: i64) -> String {
    jiff::Timestamp::from_second(unix).map_or_else(
        |_| unix.to_string(),
        |t| {
            t.to_zoned(zone.clone())
                .strftime("%Y-%m-%d %H:%M")
                .to_string()
        },
    )
}

/// Unix seconds as the local date in `zone`, e.g. `2026-11-24`.
fn local_date(zone: &TimeZone, unix: i64) -> String {
    jiff::Timestamp::from_second(unix).map_or_else(
        |_| unix.to_string(),
        |t| t.to_zoned(zone.clone()).date().to_string(),
    )
}

/// Day names, bit 0 (Monday) first, as the forms send them.
pub(crate) const DAYS: [(&str, &str); 7] = [
    ("mon", "Mon"),
    ("tue", "Tue"),
    ("wed", "Wed"),
    ("thu", "Thu"),
    ("fri", "Fri"),
    ("sat", "Sat"),
    ("sun", "Sun"),
];

/// Minutes after midnight as `HH:MM` (1440 is `24:00`).
pub(crate) fn hhmm(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// A slot in words: `Mon, Tue 09:00–18:00`, noting when it runs into the next day.
fn describe_slot(slot: &LocalSlot) -> String {
    let days = match slot.days & 0x7f {
        0x7f => "Every day".to_string(),
        0x1f => "Mon–Fri".to_string(),
        0x60 => "Sat, Sun".to_string(),
        d => DAYS
            .iter()
            .enumerate()
            .filter(|(i, _)| d & (1 << i) != 0)
            .map(|(_, (_, label))| *label)
            .collect::<Vec<_>>()
            .join(", "),
    };
    let next_day = if slot.end_min <= slot.start_min {
        " (ends the next day)"
    } else {
        ""
    };
    format!(
        "{days} {}–{}{next_day}",
        hhmm(slot.start_min),
        hhmm(slot.end_min)
    )
}

/// Reads a slot from the form fields `days` (mon…sun), `start` and `end` (`HH:MM`; the end may
/// be `24:00`, and `00:00` as an end means midnight too). The error names the field.
fn parse_slot(f: &Fields) -> Result<LocalSlot, (&'static str, String)> {
    let mut days = 0u8;
    for d in f.all("days") {
        let bit = DAYS
            .iter()
            .position(|(value, _)| *value == d)
            .ok_or(("days", format!("`{d}` is not a day (mon … sun)")))?;
        days |= 1 << bit;
    }
    if days == 0 {
        return Err(("days", "choose at least one day".into()));
    }
    let start = parse_hhmm(f.get("start"))
        .filter(|m| *m < 1440)
        .ok_or(("start", "a time from 00:00 to 23:59, like 09:00".into()))?;
    let end = parse_hhmm(f.get("end")).ok_or((
        "end",
        "a time from 00:01 to 24:00, like 18:00 (24:00 is midnight)".into(),
    ))?;
    let end = if end == 0 { 1440 } else { end };
    if end == start {
        return Err(("end", "the end must differ from the start".into()));
    }
    let slot = LocalSlot {
        days,
        start_min: start,
        end_min: end,
    };
    directory::check_slot(&slot).map_err(|e| match e {
        ModelError::Invalid { message, .. } => ("end", message),
        other => ("end", other.to_string()),
    })?;
    Ok(slot)
}

/// `HH:MM` or `H:MM` as minutes after midnight, up to 24:00.
fn parse_hhmm(text: &str) -> Option<u16> {
    let (h, m) = text.trim().split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    (m < 60 && h * 60 + m <= 1440).then_some(h * 60 + m)
}

/// The day checkboxes and start/end inputs of a slot form, filled from `f`.
fn slot_inputs(f: &Fields, err: FieldError<'_>) -> Markup {
    let chosen = f.all("days");
    html! {
        fieldset {
            legend { "Days" }
            @for (value, label) in DAYS {
                label for={ "day-" (value) } {
                    input type="checkbox" id={ "day-" (value) } name="days" value=(value)
                        checked[chosen.contains(&value)];
                    " " (label)
                }
            }
        }
        (crate::pages::field_error(err, "days"))
        label for="start" { "Start (HH:MM)" }
        input id="start" name="start" value=(f.get("start")) placeholder="09:00"
            pattern="[0-9]{1,2}:[0-9]{2}" inputmode="numeric" required;
        (crate::pages::field_error(err, "start"))
        label for="end" { "End (HH:MM; 24:00 is midnight; before the start runs into the next day)" }
        input id="end" name="end" value=(f.get("end")) placeholder="18:00"
            pattern="[0-9]{1,2}:[0-9]{2}" inputmode="numeric" required;
        (crate::pages::field_error(err, "end"))
    }
}

/// A date range in words, in the site's zone.
fn describe_range(zone: &TimeZone, from: i64, until: i64) -> String {
    match (from, until) {
        (0, 0) => "always".into(),
        (f, 0) => format!("from {}", local_date(zone, f)),
        (0, u) => format!("until {}", local_date(zone, u)),
        (f, u) => format!("{} to {}", local_date(zone, f), local_date(zone, u)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        Fields(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn slots_parse_from_the_form() {
        let f = fields(&[
            ("days", "mon"),
            ("days", "fri"),
            ("start", "22:00"),
            ("end", "02:30"),
        ]);
        assert_eq!(
            parse_slot(&f),
            Ok(LocalSlot {
                days: 0b1_0001,
                start_min: 1320,
                end_min: 150
            })
        );
        let f = fields(&[("days", "sun"), ("start", "9:00"), ("end", "24:00")]);
        assert_eq!(
            parse_slot(&f).map(|s| (s.start_min, s.end_min)),
            Ok((540, 1440))
        );
        let f = fields(&[("days", "sun"), ("start", "18:00"), ("end", "00:00")]);
        assert_eq!(
            parse_slot(&f).map(|s| s.end_min),
            Ok(1440),
            "00:00 ends at midnight"
        );
        for (pairs, field) in [
            (vec![("start", "09:00"), ("end", "10:00")], "days"),
            (
                vec![("days", "xyz"), ("start", "09:00"), ("end", "10:00")],
                "days",
            ),
            (
                vec![("days", "mon"), ("start", "24:00"), ("end", "10:00")],
                "start",
            ),
            (
                vec![("days", "mon"), ("start", "9"), ("end", "10:00")],
                "start",
            ),
            (
                vec![("days", "mon"), ("start", "09:00"), ("end", "09:00")],
                "end",
            ),
            (
                vec![("days", "mon"), ("start", "09:00"), ("end", "24:01")],
                "end",
            ),
            (
                vec![("days", "mon"), ("start", "09:00"), ("end", "10:60")],
                "end",
            ),
        ] {
            assert_eq!(
                parse_slot(&fields(&pairs)).map_err(|e| e.0),
                Err(field),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn slots_read_as_words() {
        let slot = LocalSlot {
            days: 0x1f,
            start_min: 540,
            end_min: 1080,
        };
        assert_eq!(describe_slot(&slot), "Mon–Fri 09:00–18:00");
        let night = LocalSlot {
            days: 0b100_0001,
            start_min: 1320,
            end_min: 120,
        };
        assert_eq!(
            describe_slot(&night),
            "Mon, Sun 22:00–02:00 (ends the next day)"
        );
    }

    #[test]
    fn ids_are_positive_numbers() {
        assert_eq!(parse_id("42").ok(), Some(42));
        for bad in ["", "0", "-1", "x", "1.5", "99999999999999999999"] {
            assert!(matches!(parse_id(bad), Err(UiError::NotFound)), "{bad}");
        }
    }
}
