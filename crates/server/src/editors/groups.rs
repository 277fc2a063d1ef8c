//! `/groups` and `/groups/{id}`: create, rename and delete groups, add and remove members, and
//! the rules that name a group.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};

use super::{
    button_form, editor_page, form_error, guard, parse_id, see, the_site, unique_as, unprocessable,
    FieldError, Fields, UiError, UiResult,
};
use crate::auth::Admin;
use crate::directory::{self, Group, RuleFilter, Site};
use crate::model;
use crate::pages::field_error;
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/groups", get(list).post(create))
        .route("/groups/{id}", get(show).post(rename))
        .route("/groups/{id}/delete", get(confirm_delete).post(delete))
        .route("/groups/{id}/members", post(add_member))
        .route("/groups/{id}/members/{person}/remove", post(remove_member))
}

async fn list_page(
    state: &AppState,
    admin: &Admin,
    site: &Site,
    f: &Fields,
    err: FieldError<'_>,
) -> Result<Markup, UiError> {
    let groups = directory::groups(state, site.id).await?;
    Ok(editor_page(
        "Groups",
        admin,
        html! {
            @if groups.is_empty() { p { "No groups yet." } } @else {
                table #groups {
                    thead { tr { th { "Group" } th { "Members" } } }
                    tbody {
                        @for g in &groups {
                            tr { td { a href={ "/groups/" (g.id) } { (g.name) } } td { (g.members) } }
                        }
                    }
                }
            }
            section {
                h3 { "Create a group" }
                form method="post" action="/groups" {
                    (super::csrf(admin))
                    label for="name" { "Name" }
                    input id="name" name="name" value=(f.get("name")) required maxlength="100";
                    (field_error(err, "name"))
                    button type="submit" id="add-group" { "Create group" }
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
    match model::create_group(&state, site.id, f.get("name")).await {
        Ok(id) => Ok(see(&format!("/groups/{id}"))),
        Err(e) => {
            let e = unique_as(e, "name", "a group of this name exists");
            let (field, message) = form_error(e, &["name"])?;
            Ok(unprocessable(
                list_page(&state, &admin, &site, &f, Some((field, &message))).await?,
            ))
        }
    }
}

async fn group_page(
    state: &AppState,
    admin: &Admin,
    site: &Site,
    group: &Group,
    f: &Fields,
    err: FieldError<'_>,
) -> Result<Markup, UiError> {
    let members = directory::members(state, group.id).await?;
    let people = directory::people(state, site.id, "").await?;
    let rules = directory::rules(state, site.id, RuleFilter::Group(group.id)).await?;
    let base = format!("/groups/{}", group.id);
    let from = format!("group:{}", group.id);
    Ok(editor_page(
        &format!("Group: {}", group.name),
        admin,
        html! {
            p { a href="/groups" { "← All groups" } }
            section {
                h3 { "Members" }
                @if members.is_empty() { p { "No members." } } @else {
                    table #members {
                        tbody {
                            @for p in &members {
                                tr {
                                    td { a href={ "/people/" (p.id) } { (p.name) } }
                                    td { (button_form(admin, &format!("{base}/members/{}/remove", p.id), "Remove", &[])) }
                                }
                            }
                        }
                    }
                }
                @let others: Vec<_> = people.iter().filter(|p| !members.iter().any(|m| m.id == p.id)).collect();
                @if others.is_empty() {
                    @if people.is_empty() { p.hint { "There is nobody to add yet: " a href="/people" { "add people" } "." } }
                    (field_error(err, "person"))
                } @else {
                    form method="post" action={ (base) "/members" } {
                        (super::csrf(admin))
                        label for="person" { "Add a member" }
                        select id="person" name="person" {
                            @for p in others {
                                option value=(p.id) selected[f.get("person") == p.id.to_string()] { (p.name) }
                            }
                        }
                        (field_error(err, "person"))
                        button type="submit" id="add-member" { "Add member" }
                    }
                }
            }
            section {
                h3 { "Rules for this group" }
                (super::rules::rules_table(admin, &site.zone(), &rules, &from, true))
                p { a href={ "/rules/new?group=" (group.id) } id="add-rule" { "Add a rule for this group" } }
            }
            (super::rename_and_delete(admin, &base, &group.name, "group", f, err))
        },
    ))
}

async fn group_of(state: &AppState, site: &Site, id: &str) -> Result<Group, UiError> {
    Ok(directory::group(state, site.id, parse_id(id)?).await?)
}

async fn show(State(state): State<AppState>, admin: Admin, Path(id): Path<String>) -> UiResult {
    let site = the_site(&state, &admin).await?;
    let group = group_of(&state, &site, &id).await?;
    Ok(
        group_page(&state, &admin, &site, &group, &Fields::default(), None)
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
    let group = group_of(&state, &site, &id).await?;
    if let Err(e) = directory::rename_group(&state, site.id, group.id, f.get("name")).await {
        let (field, message) = form_error(e, &["name"])?;
        return Ok(unprocessable(
            group_page(&state, &admin, &site, &group, &f, Some((field, &message))).await?,
        ));
    }
    Ok(see(&format!("/groups/{}", group.id)))
}

async fn add_member(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> UiResult {
    let f = Fields(fields);
    guard(&admin, &headers, &f)?;
    let site = the_site(&state, &admin).await?;
    let group = group_of(&state, &site, &id).await?;
    let person = match parse_id(f.get("person")) {
        Ok(person_id) => directory::person(&state, site.id, person_id).await.ok(),
        Err(_) => None,
    };
    let Some(person) = person else {
        return Ok(unprocessable(
            group_page(
                &state,
                &admin,
                &site,
                &group,
                &f,
                Some(("person", "choose one of the site's people")),
            )
            .await?,
        ));
    };
    model::add_member(&state, group.id, person.id).await?;
    model::site_changed(&state, site.id).await?;
    Ok(see(&format!("/groups/{}", group.id)))
}

async fn remove_member(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path((id, person)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> UiResult {
    let f = Fields(fields);
    guard(&admin, &headers, &f)?;
    let site = the_site(&state, &admin).await?;
    let group = group_of(&state, &site, &id).await?;
    let person = directory::person(&state, site.id, parse_id(&person)?).await?;
    directory::remove_member(&state, group.id, person.id).await?;
    model::site_changed(&state, site.id).await?;
    Ok(see(&format!("/groups/{}", group.id)))
}

async fn confirm_delete(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> UiResult {
    let site = the_site(&state, &admin).await?;
    let group = group_of(&state, &site, &id).await?;
    Ok(editor_page(
        &format!("Delete {}?", group.name),
        &admin,
        html! {
            p { "Deleting the group deletes its rules; its " (group.members) " member(s) stay, \
                 but lose the access the group gave them." }
            (button_form(&admin, &format!("/groups/{}/delete", group.id), "Delete the group", &[("confirm", "yes")]))
            p { a href={ "/groups/" (group.id) } { "Keep it" } }
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
    let group = group_of(&state, &site, &id).await?;
    if f.get("confirm") != "yes" {
        return Ok(see(&format!("/groups/{}/delete", group.id)));
    }
    directory::delete_group(&state, site.id, group.id).await?;
    model::site_changed(&state, site.id).await?;
    Ok(see("/groups"))
}
