//! `/holidays`: the site calendar. A holiday is a local day or run of days (optionally every
//! year) on which the schedules it names are closed; it is added with its schedules and deleted
//! whole. Both steps recompile the doors ([`crate::model::create_holiday`]).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Form, Router};
use jiff::civil::Date;
use maud::{html, Markup};

use super::{
    button_form, confirm_first, editor_page, form_error, guard, parse_id, see, the_site,
    unprocessable, FieldError, Fields, UiError, UiResult,
};
use crate::auth::Admin;
use crate::directory::{self, HolidayRow, Site};
use crate::model;
use crate::pages::field_error;
use crate::schedule::Holiday;
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/holidays", get(list).post(create))
        .route("/holidays/{id}/delete", post(delete))
}

/// A holiday's days in words: `2026-12-25`, `2026-12-24 – 2027-01-02`, with "every year".
fn describe(h: &HolidayRow) -> String {
    let (first, last) = &h.days;
    let days = if first == last {
        first.clone()
    } else {
        format!("{first} – {last}")
    };
    match (&h.holiday, h.yearly) {
        (None, _) => format!("{days} (not readable as dates)"),
        (Some(_), true) => format!("{days}, every year"),
        (Some(_), false) => days,
    }
}

async fn list_page(
    state: &AppState,
    admin: &Admin,
    site: &Site,
    f: &Fields,
    err: FieldError<'_>,
) -> Result<Markup, UiError> {
    let holidays = directory::holidays(state, site.id).await?;
    let schedules = directory::schedules(state, site.id).await?;
    let chosen = f.all("schedule");
    Ok(editor_page(
        "Holidays",
        admin,
        html! {
            p #timezone-note {
                "Days are local, " strong { (site.timezone) } ": a holiday closes the schedules it \
                 names from midnight to midnight. A slot that starts on a holiday stays closed \
                 after midnight; one that starts the evening before closes at midnight."
            }
            @if holidays.is_empty() { p { "No holidays yet." } } @else {
                table #holidays {
                    thead { tr { th { "Holiday" } th { "Days" } th { "Closes" } th {} } }
                    tbody {
                        @for h in &holidays {
                            tr {
                                td { (h.name) }
                                td { (describe(h)) }
                                td { (h.schedules.join(", ")) }
                                td { (button_form(admin, &format!("/holidays/{}/delete", h.id), "Delete", &[])) }
                            }
                        }
                    }
                }
            }
            section {
                h3 { "Add a holiday" }
                @if schedules.is_empty() {
                    p { "Holidays close schedules: " a href="/schedules" { "create a schedule" } " first." }
                } @else {
                    form method="post" action="/holidays" {
                        (super::csrf(admin))
                        label for="name" { "Name" }
                        input id="name" name="name" value=(f.get("name")) required maxlength="100";
                        (field_error(err, "name"))
                        label for="first" { "First day" }
                        input type="date" id="first" name="first" value=(f.get("first")) required;
                        (field_error(err, "first"))
                        label for="last" { "Last day (empty: the first day only)" }
                        input type="date" id="last" name="last" value=(f.get("last"));
                        (field_error(err, "last"))
                        label for="yearly" {
                            input type="checkbox" id="yearly" name="yearly" value="yes"
                                checked[f.get("yearly") == "yes"];
                            " Every year"
                        }
                        fieldset {
                            legend { "Closes these schedules" }
                            @for s in &schedules {
                                @let id = s.id.to_string();
                                label for={ "schedule-" (id) } {
                                    input type="checkbox" id={ "schedule-" (id) } name="schedule"
                                        value=(id) checked[chosen.contains(&id.as_str())];
                                    " " (s.name)
                                }
                            }
                        }
                        (field_error(err, "schedules"))
                        button type="submit" id="add-holiday" { "Add holiday" }
                    }
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

/// A local date as the form sends it (`YYYY-MM-DD`).
fn parse_day(text: &str, field: &'static str) -> Result<Date, (&'static str, String)> {
    text.trim().parse::<Date>().map_err(|_| {
        (
            field,
            format!("`{}` is not a date: write it as YYYY-MM-DD", text.trim()),
        )
    })
}

/// The holiday and schedule ids a form asks for, or the field that is wrong and why.
fn parse_form(f: &Fields) -> Result<(Holiday, Vec<i64>), (&'static str, String)> {
    if f.get("name").trim().is_empty() {
        return Err(("name", "1 to 100 characters".into()));
    }
    let first = parse_day(f.get("first"), "first")?;
    let last = if f.get("last").trim().is_empty() {
        first
    } else {
        parse_day(f.get("last"), "last")?
    };
    let schedules = f
        .all("schedule")
        .into_iter()
        .map(|id| {
            id.trim()
                .parse::<i64>()
                .map_err(|_| ("schedules", "choose schedules from the list".to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((
        Holiday {
            first,
            last,
            yearly: f.get("yearly") == "yes",
        },
        schedules,
    ))
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
    let refuse = |field: &'static str, message: String| {
        let (state, admin, site, f) = (&state, &admin, &site, &f);
        async move {
            Ok::<_, UiError>(unprocessable(
                list_page(state, admin, site, f, Some((field, &message))).await?,
            ))
        }
    };
    let (holiday, schedules) = match parse_form(&f) {
        Ok(parsed) => parsed,
        Err((field, message)) => return refuse(field, message).await,
    };
    match model::create_holiday(&state, site.id, f.get("name"), &holiday, &schedules).await {
        Ok(_) => Ok(see("/holidays")),
        Err(e) => {
            let (field, message) = form_error(e, &["name", "first", "last", "schedules"])?;
            refuse(field, message).await
        }
    }
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
    let id = parse_id(&id)?;
    let holiday = directory::holidays(&state, site.id)
        .await?
        .into_iter()
        .find(|h| h.id == id)
        .ok_or(UiError::NotFound)?;
    if let Some(page) = confirm_first(
        &admin,
        &f,
        &format!("Delete the holiday {}?", holiday.name),
        html! { "The schedules it closed open again on its days." },
        &format!("/holidays/{id}/delete"),
        "/holidays",
    ) {
        return Ok(page);
    }
    model::delete_holiday(&state, site.id, id).await?;
    Ok(see("/holidays"))
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
    fn forms_name_the_bad_field() {
        let ok = fields(&[
            ("name", "Christmas"),
            ("first", "2026-12-25"),
            ("yearly", "yes"),
            ("schedule", "3"),
        ]);
        let (h, ids) = parse_form(&ok).unwrap();
        assert_eq!(
            (h.first.to_string(), h.last, h.yearly),
            ("2026-12-25".into(), h.first, true)
        );
        assert_eq!(ids, vec![3]);
        for (bad, field) in [
            (vec![("name", " "), ("first", "2026-12-25")], "name"),
            (vec![("name", "X"), ("first", "25.12.2026")], "first"),
            (vec![("name", "X"), ("first", "2026-02-30")], "first"),
            (
                vec![("name", "X"), ("first", "2026-12-25"), ("last", "soon")],
                "last",
            ),
            (
                vec![("name", "X"), ("first", "2026-12-25"), ("schedule", "x")],
                "schedules",
            ),
        ] {
            assert_eq!(parse_form(&fields(&bad)).unwrap_err().0, field, "{bad:?}");
        }
    }
}
