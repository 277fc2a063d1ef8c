//! Rules: who (a person or a group) may open which door, how (the access type), between which
//! dates, and for SCHEDULED when (a schedule). `/rules` lists them all, `/rules/new` adds one
//! (the door, person and group pages link to it with their own choice filled in).
//!
//! Dates are local dates in the site's zone: a rule is valid from local midnight at the start of
//! its first day to the last second of its last day (`valid_until` is inclusive).

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Form, Router};
use chronolock_core::allowlist::AccessType;
use jiff::tz::TimeZone;
use maud::{html, Markup};

use super::{
    button_form, confirm_first, describe_range, editor_page, form_error, guard, parse_id, see,
    the_site, unprocessable, FieldError, Fields, UiError, UiResult,
};
use crate::auth::Admin;
use crate::directory::{self, Rule, RuleFilter, Site};
use crate::model::{self, RuleSpec, Subject};
use crate::pages::field_error;
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/rules", get(list))
        .route("/rules/new", get(new).post(create))
        .route("/rules/{id}/delete", post(delete))
}

/// The access types, most permissive first, with what they mean at the door.
const ACCESS: [(AccessType, &str); 4] = [
    (AccessType::Unrestricted, "at any time within the dates"),
    (
        AccessType::Emergency,
        "at any time, and every use sends a notification at once",
    ),
    (AccessType::Scheduled, "during the schedule's weekly slots"),
    (
        AccessType::Conditional,
        "the door asks the server each time; refused while it is offline",
    ),
];

/// Where to go back to after adding or deleting a rule: the page the admin came from.
fn back_path(from: &str) -> String {
    let page = from.split_once(':').and_then(|(kind, id)| {
        let id = parse_id(id).ok()?;
        let base = match kind {
            "door" => "/doors",
            "person" => "/people",
            "group" => "/groups",
            "schedule" => "/schedules",
            _ => return None,
        };
        Some(format!("{base}/{id}"))
    });
    page.unwrap_or_else(|| "/rules".into())
}

/// A table of rules with a delete button each; `from` says which page it is on.
pub(super) fn rules_table(
    admin: &Admin,
    zone: &TimeZone,
    rules: &[Rule],
    from: &str,
    show_door: bool,
) -> Markup {
    html! {
        @if rules.is_empty() { p { "No rules." } } @else {
            table.rules {
                thead {
                    tr {
                        @if show_door { th { "Door" } }
                        th { "Who" } th { "Access" } th { "Dates" } th { "Schedule" } th {}
                    }
                }
                tbody {
                    @for r in rules {
                        tr {
                            @if show_door { td { a href={ "/doors/" (r.door_id) } { (r.door_name) } } }
                            td {
                                @match r.subject {
                                    Subject::Person(id) => a href={ "/people/" (id) } { (r.subject_name) },
                                    Subject::Group(id) => { "group " a href={ "/groups/" (id) } { (r.subject_name) } },
                                }
                            }
                            td { (r.access) }
                            td { (describe_range(zone, r.valid_from, r.valid_until)) }
                            td {
                                @if let Some((id, name)) = &r.schedule {
                                    a href={ "/schedules/" (id) } { (name) }
                                }
                            }
                            td { (button_form(admin, &format!("/rules/{}/delete", r.id), "Delete", &[("from", from)])) }
                        }
                    }
                }
            }
        }
    }
}

async fn list(State(state): State<AppState>, admin: Admin) -> UiResult {
    let site = the_site(&state, &admin).await?;
    let rules = directory::rules(&state, site.id, RuleFilter::All).await?;
    Ok(editor_page(
        "Rules",
        &admin,
        html! {
            p.hint { "Dates are local, " (site.timezone) "." }
            (rules_table(&admin, &site.zone(), &rules, "", true))
            p { a href="/rules/new" id="add-rule" { "Add a rule" } }
        },
    )
    .into_response())
}

async fn form_page(
    state: &AppState,
    admin: &Admin,
    site: &Site,
    f: &Fields,
    err: FieldError<'_>,
) -> Result<Markup, UiError> {
    let doors = directory::doors(state, site.id).await?;
    let people = directory::people(state, site.id, "").await?;
    let groups = directory::groups(state, site.id).await?;
    let schedules = directory::schedules(state, site.id).await?;
    let from = f.get("from");
    Ok(editor_page(
        "Add a rule",
        admin,
        html! {
            @if doors.is_empty() || (people.is_empty() && groups.is_empty()) {
                p { "A rule needs a door and a person or group: "
                    a href="/doors" { "add doors" } ", " a href="/people" { "people" } ", "
                    a href="/groups" { "groups" } "." }
            }
            form method="post" action="/rules/new" {
                (super::csrf(admin))
                input type="hidden" name="from" value=(from);
                label for="subject" { "Who" }
                select id="subject" name="subject" required {
                    option value="" { "— choose —" }
                    @if !people.is_empty() {
                        optgroup label="People" {
                            @for p in &people {
                                @let value = format!("person:{}", p.id);
                                option value=(value) selected[f.get("subject") == value] { (p.name) }
                            }
                        }
                    }
                    @if !groups.is_empty() {
                        optgroup label="Groups" {
                            @for g in &groups {
                                @let value = format!("group:{}", g.id);
                                option value=(value) selected[f.get("subject") == value] { "group " (g.name) }
                            }
                        }
                    }
                }
                (field_error(err, "subject"))
                label for="door" { "Door" }
                select id="door" name="door" required {
                    option value="" { "— choose —" }
                    @for d in &doors {
                        option value=(d.id) selected[f.get("door") == d.id.to_string()] { (d.name) }
                    }
                }
                (field_error(err, "door"))
                label for="access" { "Access" }
                select id="access" name="access" required {
                    @for (access, meaning) in ACCESS {
                        option value=(access.as_str()) selected[f.get("access") == access.as_str()] {
                            (access.as_str()) ": " (meaning)
                        }
                    }
                }
                (field_error(err, "access"))
                label for="valid_from" { "Valid from (local date, empty: no start)" }
                input id="valid_from" name="valid_from" type="date" value=(f.get("valid_from"));
                (field_error(err, "valid_from"))
                label for="valid_until" { "Valid until, including that day (empty: no end)" }
                input id="valid_until" name="valid_until" type="date" value=(f.get("valid_until"));
                (field_error(err, "valid_until"))
                label for="schedule" { "Schedule (SCHEDULED only; times are local, " (site.timezone) ")" }
                select id="schedule" name="schedule" {
                    option value="" { "— none —" }
                    @for s in &schedules {
                        option value=(s.id) selected[f.get("schedule") == s.id.to_string()] { (s.name) }
                    }
                }
                (field_error(err, "schedule"))
                @if schedules.is_empty() {
                    p.hint { "No schedules yet: " a href="/schedules" { "create one" } " for SCHEDULED rules." }
                }
                button type="submit" id="add-rule" { "Add rule" }
            }
            p { a href=(back_path(from)) { "Cancel" } }
        },
    ))
}

async fn new(
    State(state): State<AppState>,
    admin: Admin,
    Query(query): Query<Vec<(String, String)>>,
) -> UiResult {
    let site = the_site(&state, &admin).await?;
    let q = Fields(query);
    // Prefill from the page that links here: ?door=3, ?person=5 or ?group=2.
    let mut prefill = Vec::new();
    let mut from = String::new();
    if let Ok(id) = parse_id(q.get("door")) {
        prefill.push(("door".to_string(), id.to_string()));
        from = format!("door:{id}");
    }
    for kind in ["person", "group"] {
        if let Ok(id) = parse_id(q.get(kind)) {
            prefill.push(("subject".to_string(), format!("{kind}:{id}")));
            from = format!("{kind}:{id}");
        }
    }
    prefill.push(("from".to_string(), from));
    Ok(form_page(&state, &admin, &site, &Fields(prefill), None)
        .await?
        .into_response())
}

/// A local date (`YYYY-MM-DD`) as Unix seconds: its first second, or with `end_of_day` its last.
/// Empty means unbounded (0).
fn local_day(zone: &TimeZone, text: &str, end_of_day: bool) -> Result<i64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    let bad = || format!("a date like 2026-01-31, not `{text}`");
    let date: jiff::civil::Date = text.parse().map_err(|_| bad())?;
    let day = if end_of_day {
        date.tomorrow().map_err(|_| bad())?
    } else {
        date
    };
    let start = day
        .to_zoned(zone.clone())
        .and_then(|z| z.start_of_day())
        .map_err(|_| bad())?
        .timestamp()
        .as_second();
    let secs = if end_of_day { start - 1 } else { start };
    if secs <= 0 {
        return Err("a date after 1970-01-01".into());
    }
    Ok(secs)
}

/// A rule from the API's fields (`subject` as `person:ID` or `group:ID`, `door`, `access`,
/// `valid_from`, `valid_until` as local dates, `schedule`), read and checked exactly as the
/// rule form's; the error names the field.
pub(crate) async fn rule_from_fields(
    state: &AppState,
    site: &Site,
    pairs: Vec<(String, String)>,
) -> Result<Result<RuleSpec, (&'static str, String)>, crate::AppError> {
    Ok(read_rule(state, site, &Fields(pairs)).await?)
}

/// Reads and checks the rule form; the error names the field.
async fn read_rule(
    state: &AppState,
    site: &Site,
    f: &Fields,
) -> Result<Result<RuleSpec, (&'static str, String)>, UiError> {
    let subject = match f.get("subject").split_once(':') {
        Some(("person", id)) => match parse_id(id) {
            Ok(id) => directory::person(state, site.id, id)
                .await
                .ok()
                .map(|p| Subject::Person(p.id)),
            Err(_) => None,
        },
        Some(("group", id)) => match parse_id(id) {
            Ok(id) => directory::group(state, site.id, id)
                .await
                .ok()
                .map(|g| Subject::Group(g.id)),
            Err(_) => None,
        },
        _ => None,
    };
    let Some(subject) = subject else {
        return Ok(Err(("subject", "choose a person or a group".into())));
    };
    let door = match parse_id(f.get("door")) {
        Ok(id) => directory::door(state, site.id, id).await.ok(),
        Err(_) => None,
    };
    let Some(door) = door else {
        return Ok(Err(("door", "choose a door".into())));
    };
    let Some(access) = AccessType::from_name(f.get("access")) else {
        return Ok(Err(("access", "choose an access type".into())));
    };
    let zone = site.zone();
    let valid_from = match local_day(&zone, f.get("valid_from"), false) {
        Ok(s) => s,
        Err(m) => return Ok(Err(("valid_from", m))),
    };
    let valid_until = match local_day(&zone, f.get("valid_until"), true) {
        Ok(s) => s,
        Err(m) => return Ok(Err(("valid_until", m))),
    };
    if valid_until != 0 && valid_until < valid_from {
        return Ok(Err((
            "valid_until",
            "the last day is before the first".into(),
        )));
    }
    let schedule_text = f.get("schedule").trim();
    let schedule_id = if schedule_text.is_empty() {
        None
    } else {
        let found = match parse_id(schedule_text) {
            Ok(id) => directory::schedule(state, site.id, id).await.ok(),
            Err(_) => None,
        };
        let Some(schedule) = found else {
            return Ok(Err((
                "schedule",
                "choose one of the site's schedules".into(),
            )));
        };
        Some(schedule.id)
    };
    match (access, schedule_id) {
        (AccessType::Scheduled, None) => {
            return Ok(Err((
                "schedule",
                "a SCHEDULED rule needs a schedule".into(),
            )));
        }
        (a, Some(_)) if a != AccessType::Scheduled => {
            return Ok(Err((
                "schedule",
                "only SCHEDULED rules have a schedule; choose none".into(),
            )));
        }
        _ => {}
    }
    Ok(Ok(RuleSpec {
        door_id: door.id,
        subject,
        access,
        valid_from,
        valid_until,
        schedule_id,
    }))
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
    let error = match read_rule(&state, &site, &f).await? {
        Ok(rule) => match model::add_rule(&state, &rule).await {
            Ok(_) => {
                model::site_changed(&state, site.id).await?;
                return Ok(see(&back_path(f.get("from"))));
            }
            Err(e) => form_error(
                e,
                &[
                    "subject",
                    "door",
                    "access",
                    "valid_from",
                    "valid_until",
                    "schedule",
                ],
            )?,
        },
        Err(e) => e,
    };
    Ok(unprocessable(
        form_page(&state, &admin, &site, &f, Some((error.0, &error.1))).await?,
    ))
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
    let rule = directory::rule(&state, site.id, parse_id(&id)?).await?;
    let back = back_path(f.get("from"));
    if let Some(page) = confirm_first(
        &admin,
        &f,
        "Delete the rule?",
        html! { "The doors stop granting what this rule grants at their next sync." },
        &format!("/rules/{}/delete", rule.id),
        &back,
    ) {
        return Ok(page);
    }
    directory::delete_rule(&state, site.id, rule.id).await?;
    model::site_changed(&state, site.id).await?;
    Ok(see(&back_path(f.get("from"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_days_start_and_end_at_local_midnight() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap_or(TimeZone::UTC);
        // 2026-11-24 00:00 CET = 2026-11-23 23:00 UTC.
        assert_eq!(local_day(&berlin, "2026-11-24", false), Ok(1_795_474_800));
        // Its last second: 2026-11-24 23:59:59 CET.
        assert_eq!(
            local_day(&berlin, "2026-11-24", true),
            Ok(1_795_474_800 + 86_400 - 1)
        );
        // The day DST starts has 23 hours.
        let start = local_day(&berlin, "2027-03-28", false).unwrap_or_default();
        let end = local_day(&berlin, "2027-03-28", true).unwrap_or_default();
        assert_eq!(end - start + 1, 23 * 3600);
        assert_eq!(local_day(&berlin, "", true), Ok(0));
        assert!(local_day(&berlin, "2026-02-30", false).is_err());
        assert!(local_day(&berlin, "24.11.2026", false).is_err());
        assert!(local_day(&berlin, "1969-12-31", false).is_err());
    }

    #[test]
    fn back_paths_stay_on_this_site() {
        assert_eq!(back_path("door:3"), "/doors/3");
        assert_eq!(back_path("person:5"), "/people/5");
        assert_eq!(back_path("group:x"), "/rules");
        assert_eq!(back_path("//evil.example"), "/rules");
        assert_eq!(back_path(""), "/rules");
    }
}
