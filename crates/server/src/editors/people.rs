//! `/people` and `/people/{id}`: search, add, rename and delete people; their cards, groups and
//! rules. Keypad codes are listed here and enrolled in [`super::keypad`].

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};

use super::{
    button_form, confirm_first, editor_page, form_error, guard, parse_id, see, the_site,
    unprocessable, FieldError, Fields, UiError, UiResult,
};
use crate::auth::Admin;
use crate::directory::{self, Person, RuleFilter, Site};
use crate::model::{self, Subject};
use crate::pages::field_error;
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/people", get(list).post(create))
        .route("/people/{id}", get(show).post(rename))
        .route("/people/{id}/delete", get(confirm_delete).post(delete))
        .route("/people/{id}/details", post(set_details))
        .route("/people/{id}/cards", post(add_card))
        .route("/people/{id}/cards/{card}/delete", post(remove_card))
        .route("/people/{id}/groups", post(join_group))
        .route("/people/{id}/groups/{group}/leave", post(leave_group))
}

/// How many people the list shows at most; the search narrows it.
const LIST_LIMIT: usize = 500;

async fn list_page(
    state: &AppState,
    admin: &Admin,
    site: &Site,
    search: &str,
    f: &Fields,
    err: FieldError<'_>,
) -> Result<Markup, UiError> {
    let people = directory::people(state, site.id, search).await?;
    let refused = super::learn::recent_section(state, site).await?;
    let zone = site.zone();
    let now = crate::now_unix();
    Ok(editor_page(
        "People",
        admin,
        html! {
            form method="get" action="/people" role="search" {
                label for="q" { "Search by name, e-mail or member number" }
                input id="q" name="q" type="search" value=(search);
                button type="submit" id="search" { "Search" }
            }
            @if people.is_empty() {
                p { @if search.trim().is_empty() { "No people yet." } @else { "Nobody matches." } }
            } @else {
                table #people {
                    thead { tr {
                        th { "Name" } th { "E-mail" } th { "Member number" } th { "Expires" }
                        th { "Cards" } th { "Keypad codes" }
                    } }
                    tbody {
                        @for p in people.iter().take(LIST_LIMIT) {
                            tr {
                                td { a href={ "/people/" (p.id) } { (p.name) } }
                                td data-label="E-mail" { (p.details.email.as_deref().unwrap_or("")) }
                                td data-label="Member number" { (p.details.member_number.as_deref().unwrap_or("")) }
                                td data-label="Expires" {
                                    @if let Some(day) = p.details.expires_on {
                                        (day.to_string())
                                        @if p.details.expired(&zone, now) { " (expired)" }
                                    }
                                }
                                td data-label="Cards" { (p.cards) }
                                td data-label="Keypad codes" { (p.keypad_codes) }
                            }
                        }
                    }
                }
                @if people.len() > LIST_LIMIT {
                    p.hint { "Showing " (LIST_LIMIT) " of " (people.len()) "; search to narrow the list." }
                }
            }
            (refused)
            section {
                h3 { "Import, export, backup" }
                p {
                    a href="/import" id="import" { "Import people" } " (esp-rfid backup or CSV) · "
                    a href="/export.csv" id="export-csv" { "Export CSV" } " · "
                    a href="/export.json" id="export-json" { "Export JSON" } " · "
                    a href="/backup" id="backup" { "Download a backup" }
                }
                p.hint { "A backup holds the site's signing key and the doors' keys: keep it as \
                          safe as the server itself." }
            }
            section {
                h3 { "Add a person" }
                form method="post" action="/people" {
                    (super::csrf(admin))
                    label for="name" { "Name" }
                    input id="name" name="name" value=(f.get("name")) required maxlength="100";
                    (field_error(err, "name"))
                    button type="submit" id="add-person" { "Add person" }
                }
            }
        },
    ))
}

async fn list(
    State(state): State<AppState>,
    admin: Admin,
    Query(query): Query<Vec<(String, String)>>,
) -> UiResult {
    let site = the_site(&state, &admin).await?;
    let q = Fields(query);
    Ok(
        list_page(&state, &admin, &site, q.get("q"), &Fields::default(), None)
            .await?
            .into_response(),
    )
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
    match model::create_person(&state, site.id, f.get("name")).await {
        Ok(id) => Ok(see(&format!("/people/{id}"))),
        Err(e) => {
            let (field, message) = form_error(e, &["name"])?;
            Ok(unprocessable(
                list_page(&state, &admin, &site, "", &f, Some((field, &message))).await?,
            ))
        }
    }
}

/// The person page, with `f` and `err` filling the form that was posted.
pub(super) async fn person_page(
    state: &AppState,
    admin: &Admin,
    site: &Site,
    person: &Person,
    f: &Fields,
    err: FieldError<'_>,
) -> Result<Markup, UiError> {
    let cards = directory::cards(state, person.id).await?;
    let codes = directory::keypad_codes(state, person.id).await?;
    let groups = directory::groups_of(state, person.id).await?;
    let all_groups = directory::groups(state, site.id).await?;
    let rules = directory::rules(state, site.id, RuleFilter::Person(person.id)).await?;
    let base = format!("/people/{}", person.id);
    let from = format!("person:{}", person.id);
    Ok(editor_page(
        &format!("Person: {}", person.name),
        admin,
        html! {
            p { a href="/people" { "← All people" } }
            section {
                h3 { "Details" }
                @if person.details.expired(&site.zone(), crate::now_unix()) {
                    p.error #expired { "Expired: since the end of "
                        (person.details.expires_on.map(|d| d.to_string()).unwrap_or_default())
                        " no card or code of this person opens a door." }
                }
                form method="post" action={ (base) "/details" } {
                    (super::csrf(admin))
                    label for="email" { "E-mail" }
                    input id="email" name="email" type="email" maxlength="254"
                        value=(f.or("email", person.details.email.as_deref().unwrap_or("")));
                    (field_error(err, "email"))
                    label for="member_number" { "Member number (unique on this site)" }
                    input id="member_number" name="member_number" maxlength="50"
                        value=(f.or("member_number", person.details.member_number.as_deref().unwrap_or("")));
                    (field_error(err, "member_number"))
                    label for="expiry" { "Last day of access, including that day (empty: no end)" }
                    input id="expiry" name="expiry" type="date"
                        value=(f.or("expiry", &person.details.expires_on.map(|d| d.to_string()).unwrap_or_default()));
                    (field_error(err, "expiry"))
                    label for="note" { "Note" }
                    textarea id="note" name="note" maxlength="1000" rows="3" {
                        (f.or("note", person.details.note.as_deref().unwrap_or("")))
                    }
                    (field_error(err, "note"))
                    button type="submit" id="save-details" { "Save details" }
                }
            }
            section {
                h3 { "Cards" }
                @if cards.is_empty() { p { "No cards." } } @else {
                    table #cards {
                        tbody {
                            @for card in &cards {
                                tr {
                                    td { code { (card.uid) } }
                                    td {
                                        @if card.secure {
                                            span.badge.secure title="Proves a key only the card and this site hold: a copy of its UID is refused." { "secure card" }
                                        } @else {
                                            span.badge.cloneable title="The door trusts its UID alone: anyone who reads the card can copy it onto a blank card in seconds. Replace it with a secure card (NTAG 424 DNA, enrolled with chronolock card personalize)." { "UID only: can be cloned" }
                                        }
                                    }
                                    td { (button_form(admin, &format!("{base}/cards/{}/delete", card.id), "Remove", &[])) }
                                }
                            }
                        }
                    }
                }
                form method="post" action={ (base) "/cards" } {
                    (super::csrf(admin))
                    label for="uid" { "Card UID (hex, 4, 7 or 10 bytes, e.g. 04A1B2C3)" }
                    input id="uid" name="uid" value=(f.get("uid")) required autocomplete="off"
                        pattern="[0-9A-Fa-f :]+" spellcheck="false";
                    (field_error(err, "uid"))
                    label.check {
                        input type="checkbox" id="secure" name="secure" value="on"
                            checked[f.get("secure") == "on"];
                        " Secure card (NTAG 424 DNA or DESFire, 7-byte UID), personalised for this site with "
                        code { "chronolock card personalize" }
                    }
                    button type="submit" id="add-card" { "Add card" }
                }
            }
            section {
                h3 { "Keypad codes" }
                (super::keypad::codes_table(admin, person, &codes))
                form method="post" action={ (base) "/keypad" } {
                    (super::csrf(admin))
                    label for="code" { "User code (1 to 8 digits, typed before the *)" }
                    input id="code" name="code" value=(f.get("code")) required inputmode="numeric"
                        pattern="[0-9]{1,8}" maxlength="8" autocomplete="off";
                    (field_error(err, "code"))
                    p.hint { "TOTP: the person scans a QR code into an authenticator app. \
                              Backup codes: 10 printed one-time codes that work even while the \
                              door's clock is not set. A code can have both." }
                    button type="submit" name="kind" value="totp" id="enrol-totp" { "Enrol a TOTP code" }
                    button type="submit" name="kind" value="hotp" id="issue-hotp" { "Issue HOTP backup codes" }
                }
            }
            section {
                h3 { "Groups" }
                @if groups.is_empty() { p { "In no group." } } @else {
                    table #groups {
                        tbody {
                            @for g in &groups {
                                tr {
                                    td { a href={ "/groups/" (g.id) } { (g.name) } }
                                    td { (button_form(admin, &format!("{base}/groups/{}/leave", g.id), "Leave", &[])) }
                                }
                            }
                        }
                    }
                }
                @let joinable: Vec<_> = all_groups.iter().filter(|g| !groups.iter().any(|m| m.id == g.id)).collect();
                @if joinable.is_empty() {
                    @if all_groups.is_empty() { p.hint { "There are no groups yet: " a href="/groups" { "create one" } "." } }
                    (field_error(err, "group"))
                } @else {
                    form method="post" action={ (base) "/groups" } {
                        (super::csrf(admin))
                        label for="group" { "Add to group" }
                        select id="group" name="group" {
                            @for g in joinable {
                                option value=(g.id) selected[f.get("group") == g.id.to_string()] { (g.name) }
                            }
                        }
                        (field_error(err, "group"))
                        button type="submit" id="join-group" { "Add to group" }
                    }
                }
            }
            section {
                h3 { "Rules" }
                p.hint { "Rules for this person, and for the groups they are in. A rule for the \
                          person beats a group's rule for the same door." }
                (super::rules::rules_table(admin, &site.zone(), &rules, &from, true))
                p { a href={ "/rules/new?person=" (person.id) } id="add-rule" { "Add a rule for this person" } }
            }
            (super::rename_and_delete(admin, &base, &person.name, "person", f, err))
        },
    ))
}

/// The person named by a path segment, on the site.
async fn person_of(state: &AppState, site: &Site, id: &str) -> Result<Person, UiError> {
    Ok(directory::person(state, site.id, parse_id(id)?).await?)
}

async fn show(State(state): State<AppState>, admin: Admin, Path(id): Path<String>) -> UiResult {
    let site = the_site(&state, &admin).await?;
    let person = person_of(&state, &site, &id).await?;
    Ok(
        person_page(&state, &admin, &site, &person, &Fields::default(), None)
            .await?
            .into_response(),
    )
}

/// Re-renders the person page with the error beside `field`: 422.
pub(super) async fn refuse(
    state: &AppState,
    admin: &Admin,
    site: &Site,
    person: &Person,
    f: &Fields,
    (field, message): (&str, String),
) -> UiResult {
    Ok(unprocessable(
        person_page(state, admin, site, person, f, Some((field, &message))).await?,
    ))
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
    let person = person_of(&state, &site, &id).await?;
    if let Err(e) = directory::rename_person(&state, site.id, person.id, f.get("name")).await {
        let e = form_error(e, &["name"])?;
        return refuse(&state, &admin, &site, &person, &f, e).await;
    }
    Ok(see(&format!("/people/{}", person.id)))
}

async fn set_details(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> UiResult {
    let f = Fields(fields);
    guard(&admin, &headers, &f)?;
    let site = the_site(&state, &admin).await?;
    let person = person_of(&state, &site, &id).await?;
    let fields = ["email", "member_number", "note", "expiry"];
    let saved = match directory::PersonDetails::parse(
        f.get("email"),
        f.get("member_number"),
        f.get("note"),
        f.get("expiry"),
    ) {
        Ok(details) => directory::set_person_details(&state, site.id, person.id, &details).await,
        Err(e) => Err(e),
    };
    if let Err(e) = saved {
        let e = form_error(e, &fields)?;
        return refuse(&state, &admin, &site, &person, &f, e).await;
    }
    // The expiry caps the person's entries in every door's list.
    model::site_changed(&state, site.id).await?;
    Ok(see(&format!("/people/{}", person.id)))
}

async fn add_card(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> UiResult {
    let f = Fields(fields);
    guard(&admin, &headers, &f)?;
    let site = the_site(&state, &admin).await?;
    let person = person_of(&state, &site, &id).await?;
    // Readers print UIDs with spaces or colons between bytes; the model wants plain hex.
    let uid: String = f
        .get("uid")
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    let secure = f.get("secure") == "on";
    if let Err(e) = model::add_card_kind(&state, person.id, &uid, secure).await {
        let e = form_error(e, &["uid"])?;
        return refuse(&state, &admin, &site, &person, &f, e).await;
    }
    model::site_changed(&state, site.id).await?;
    Ok(see(&format!("/people/{}", person.id)))
}

async fn remove_card(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path((id, card)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> UiResult {
    let f = Fields(fields);
    guard(&admin, &headers, &f)?;
    let site = the_site(&state, &admin).await?;
    let person = person_of(&state, &site, &id).await?;
    let card = parse_id(&card)?;
    let uid = directory::cards(&state, person.id)
        .await?
        .into_iter()
        .find(|c| c.id == card)
        .ok_or(UiError::NotFound)?
        .uid;
    if let Some(page) = confirm_first(
        &admin,
        &f,
        &format!("Delete card {uid}?"),
        html! { "The doors refuse this card of " (person.name) " at their next sync." },
        &format!("/people/{}/cards/{card}/delete", person.id),
        &format!("/people/{}", person.id),
    ) {
        return Ok(page);
    }
    directory::delete_card(&state, person.id, card).await?;
    model::site_changed(&state, site.id).await?;
    Ok(see(&format!("/people/{}", person.id)))
}

async fn join_group(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> UiResult {
    let f = Fields(fields);
    guard(&admin, &headers, &f)?;
    let site = the_site(&state, &admin).await?;
    let person = person_of(&state, &site, &id).await?;
    let group = match parse_id(f.get("group")) {
        Ok(group_id) => directory::group(&state, site.id, group_id).await.ok(),
        Err(_) => None,
    };
    let Some(group) = group else {
        let e = ("group", "choose one of the site's groups".to_string());
        return refuse(&state, &admin, &site, &person, &f, e).await;
    };
    model::add_member(&state, group.id, person.id).await?;
    model::site_changed(&state, site.id).await?;
    Ok(see(&format!("/people/{}", person.id)))
}

async fn leave_group(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path((id, group)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> UiResult {
    let f = Fields(fields);
    guard(&admin, &headers, &f)?;
    let site = the_site(&state, &admin).await?;
    let person = person_of(&state, &site, &id).await?;
    let group = directory::group(&state, site.id, parse_id(&group)?).await?;
    directory::remove_member(&state, group.id, person.id).await?;
    model::site_changed(&state, site.id).await?;
    Ok(see(&format!("/people/{}", person.id)))
}

async fn confirm_delete(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> UiResult {
    let site = the_site(&state, &admin).await?;
    let person = person_of(&state, &site, &id).await?;
    let rules = directory::rules(&state, site.id, RuleFilter::Person(person.id)).await?;
    let own = rules
        .iter()
        .filter(|r| r.subject == Subject::Person(person.id))
        .count();
    Ok(editor_page(
        &format!("Delete {}?", person.name),
        &admin,
        html! {
            p { "Deleting " (person.name) " removes their cards and keypad codes from every door, \
                 their group memberships, and the " (own) " rule(s) made for them." }
            (button_form(&admin, &format!("/people/{}/delete", person.id), "Delete the person", &[("confirm", "yes")]))
            p { a href={ "/people/" (person.id) } { "Keep them" } }
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
    let person = person_of(&state, &site, &id).await?;
    if f.get("confirm") != "yes" {
        return Ok(see(&format!("/people/{}/delete", person.id)));
    }
    directory::delete_person(&state, site.id, person.id).await?;
    model::site_changed(&state, site.id).await?;
    Ok(see("/people"))
}
