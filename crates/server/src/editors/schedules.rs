//! `/schedules` and `/schedules/{id}`: weekly schedules in the site's local time. A schedule is
//! created with its first slot (it always has at least one); slots are added and removed on its
//! page; a schedule that rules use cannot be deleted.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};

use super::{
    button_form, confirm_first, describe_slot, editor_page, form_error, guard, parse_id,
    parse_slot, see, slot_inputs, the_site, unique_as, unprocessable, FieldError, Fields, UiError,
    UiResult,
};
use crate::auth::Admin;
use crate::directory::{self, RuleFilter, Schedule, Site};
use crate::model::{self, ModelError};
use crate::pages::field_error;
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/schedules", get(list).post(create))
        .route("/schedules/{id}", get(show).post(rename))
        .route("/schedules/{id}/delete", get(confirm_delete).post(delete))
        .route("/schedules/{id}/slots", post(add_slot))
        .route("/schedules/{id}/slots/{slot}/delete", post(remove_slot))
}

fn local_note(site: &Site) -> Markup {
    html! { p #timezone-note { "Times are local, " strong { (site.timezone) } "." } }
}

async fn list_page(
    state: &AppState,
    admin: &Admin,
    site: &Site,
    f: &Fields,
    err: FieldError<'_>,
) -> Result<Markup, UiError> {
    let schedules = directory::schedules(state, site.id).await?;
    let mut rows = Vec::new();
    for s in schedules {
        let slots = directory::slots(state, s.id).await?;
        rows.push((s, slots));
    }
    Ok(editor_page(
        "Schedules",
        admin,
        html! {
            (local_note(site))
            @if rows.is_empty() { p { "No schedules yet." } } @else {
                table #schedules {
                    thead { tr { th { "Schedule" } th { "Slots" } th { "Rules" } } }
                    tbody {
                        @for (s, slots) in &rows {
                            tr {
                                td { a href={ "/schedules/" (s.id) } { (s.name) } }
                                td { @for (_, slot) in slots { (describe_slot(slot)) br; } }
                                td { (s.rules) }
                            }
                        }
                    }
                }
            }
            section {
                h3 { "Create a schedule" }
                form method="post" action="/schedules" {
                    (super::csrf(admin))
                    label for="name" { "Name" }
                    input id="name" name="name" value=(f.get("name")) required maxlength="100";
                    (field_error(err, "name"))
                    p.hint { "Its first weekly slot, in " (site.timezone) " time (add more later):" }
                    (slot_inputs(f, err))
                    button type="submit" id="add-schedule" { "Create schedule" }
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
    let refuse = |field: &'static str, message: String| {
        let (state, admin, site, f) = (&state, &admin, &site, &f);
        async move {
            Ok::<_, UiError>(unprocessable(
                list_page(state, admin, site, f, Some((field, &message))).await?,
            ))
        }
    };
    if f.get("name").trim().is_empty() {
        return refuse("name", "1 to 100 characters".into()).await;
    }
    let slot = match parse_slot(&f) {
        Ok(slot) => slot,
        Err((field, message)) => return refuse(field, message).await,
    };
    match model::create_schedule(&state, site.id, f.get("name"), &[slot]).await {
        Ok(id) => Ok(see(&format!("/schedules/{id}"))),
        Err(e) => {
            let e = unique_as(e, "name", "a schedule of this name exists");
            let (field, message) = form_error(e, &["name", "end"])?;
            let field = if field == "slots" { "end" } else { field };
            refuse(field, message).await
        }
    }
}

async fn schedule_page(
    state: &AppState,
    admin: &Admin,
    site: &Site,
    schedule: &Schedule,
    f: &Fields,
    err: FieldError<'_>,
) -> Result<Markup, UiError> {
    let slots = directory::slots(state, schedule.id).await?;
    let rules = directory::rules(state, site.id, RuleFilter::Schedule(schedule.id)).await?;
    let base = format!("/schedules/{}", schedule.id);
    let from = format!("schedule:{}", schedule.id);
    Ok(editor_page(
        &format!("Schedule: {}", schedule.name),
        admin,
        html! {
            p { a href="/schedules" { "← All schedules" } }
            (local_note(site))
            section {
                h3 { "Weekly slots" }
                table #slots {
                    tbody {
                        @for (id, slot) in &slots {
                            tr {
                                td { (describe_slot(slot)) }
                                td {
                                    @if slots.len() > 1 {
                                        (button_form(admin, &format!("{base}/slots/{id}/delete"), "Remove", &[]))
                                    }
                                }
                            }
                        }
                    }
                }
                (field_error(err, "slots"))
                form method="post" action={ (base) "/slots" } {
                    (super::csrf(admin))
                    (slot_inputs(f, err))
                    button type="submit" id="add-slot" { "Add slot" }
                }
            }
            section {
                h3 { "Rules using this schedule" }
                (super::rules::rules_table(admin, &site.zone(), &rules, &from, true))
            }
            (super::rename_and_delete(admin, &base, &schedule.name, "schedule", f, err))
        },
    ))
}

async fn schedule_of(state: &AppState, site: &Site, id: &str) -> Result<Schedule, UiError> {
    Ok(directory::schedule(state, site.id, parse_id(id)?).await?)
}

async fn show(State(state): State<AppState>, admin: Admin, Path(id): Path<String>) -> UiResult {
    let site = the_site(&state, &admin).await?;
    let schedule = schedule_of(&state, &site, &id).await?;
    Ok(
        schedule_page(&state, &admin, &site, &schedule, &Fields::default(), None)
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
    let schedule = schedule_of(&state, &site, &id).await?;
    if let Err(e) = directory::rename_schedule(&state, site.id, schedule.id, f.get("name")).await {
        let (field, message) = form_error(e, &["name"])?;
        return Ok(unprocessable(
            schedule_page(
                &state,
                &admin,
                &site,
                &schedule,
                &f,
                Some((field, &message)),
            )
            .await?,
        ));
    }
    Ok(see(&format!("/schedules/{}", schedule.id)))
}

async fn add_slot(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> UiResult {
    let f = Fields(fields);
    guard(&admin, &headers, &f)?;
    let site = the_site(&state, &admin).await?;
    let schedule = schedule_of(&state, &site, &id).await?;
    let slot = match parse_slot(&f) {
        Ok(slot) => slot,
        Err((field, message)) => {
            return Ok(unprocessable(
                schedule_page(
                    &state,
                    &admin,
                    &site,
                    &schedule,
                    &f,
                    Some((field, &message)),
                )
                .await?,
            ))
        }
    };
    directory::add_slot(&state, schedule.id, &slot).await?;
    model::site_changed(&state, site.id).await?;
    Ok(see(&format!("/schedules/{}", schedule.id)))
}

async fn remove_slot(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path((id, slot)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> UiResult {
    let f = Fields(fields);
    guard(&admin, &headers, &f)?;
    let site = the_site(&state, &admin).await?;
    let schedule = schedule_of(&state, &site, &id).await?;
    let slot = parse_id(&slot)?;
    if !directory::slots(&state, schedule.id)
        .await?
        .iter()
        .any(|(id, _)| *id == slot)
    {
        return Err(UiError::NotFound);
    }
    if let Some(page) = confirm_first(
        &admin,
        &f,
        "Delete the time slot?",
        html! { "Access by " (schedule.name) " ends in this slot's hours at the doors' next sync." },
        &format!("/schedules/{}/slots/{slot}/delete", schedule.id),
        &format!("/schedules/{}", schedule.id),
    ) {
        return Ok(page);
    }
    match directory::delete_slot(&state, schedule.id, slot).await {
        Ok(()) => {}
        Err(ModelError::Invalid { message, .. }) => {
            return Ok(unprocessable(
                schedule_page(
                    &state,
                    &admin,
                    &site,
                    &schedule,
                    &Fields::default(),
                    Some(("slots", &message)),
                )
                .await?,
            ))
        }
        Err(e) => return Err(e.into()),
    }
    model::site_changed(&state, site.id).await?;
    Ok(see(&format!("/schedules/{}", schedule.id)))
}

async fn confirm_delete(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> UiResult {
    let site = the_site(&state, &admin).await?;
    let schedule = schedule_of(&state, &site, &id).await?;
    Ok(delete_page(&admin, &schedule, None).into_response())
}

fn delete_page(admin: &Admin, schedule: &Schedule, err: FieldError<'_>) -> Markup {
    editor_page(
        &format!("Delete {}?", schedule.name),
        admin,
        html! {
            @if schedule.rules > 0 {
                p { (schedule.rules) " rule(s) use this schedule. Delete them, or change them to \
                    another schedule, first: " a href={ "/schedules/" (schedule.id) } { "see them" } "." }
            } @else {
                p { "No rule uses this schedule." }
                (button_form(admin, &format!("/schedules/{}/delete", schedule.id), "Delete the schedule", &[("confirm", "yes")]))
            }
            (field_error(err, "schedule"))
            p { a href={ "/schedules/" (schedule.id) } { "Keep it" } }
        },
    )
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
    let schedule = schedule_of(&state, &site, &id).await?;
    if f.get("confirm") != "yes" {
        return Ok(see(&format!("/schedules/{}/delete", schedule.id)));
    }
    match directory::delete_schedule(&state, site.id, schedule.id).await {
        Ok(()) => Ok(see("/schedules")),
        Err(ModelError::Invalid { message, .. }) => {
            let schedule = schedule_of(&state, &site, &id).await?;
            Ok(unprocessable(delete_page(
                &admin,
                &schedule,
                Some(("schedule", &message)),
            )))
        }
        Err(e) => Err(e.into()),
    }
}
