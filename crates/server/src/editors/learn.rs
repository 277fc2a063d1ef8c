//! `/cards/learn`: give a card that a door refused to a person, without copying its UID by hand.
//!
//! A door reports every card it refuses with the card's UID. The access log links each refused
//! card that nobody holds here, and the People page lists the recent ones; both lead to this
//! page, which shows the card's refusals and a person picker (search, or a new person). Adding
//! it is the same change as adding the card on the person's page: the doors take it at their
//! next sync.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Form, Router};
use maud::{html, Markup};

use super::{
    editor_page, form_error, guard, local_time, parse_id, see, the_site, unprocessable, FieldError,
    Fields, UiError, UiResult,
};
use crate::auth::Admin;
use crate::directory::{self, Site};
use crate::model;
use crate::pages::field_error;
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/cards/learn", get(picker).post(learn))
}

/// How far back "recently refused" looks.
const RECENT_S: i64 = 14 * 86_400;
/// How many recently refused cards the People page lists.
const RECENT_LIMIT: i64 = 10;
/// How many people the picker lists at most; the search narrows it.
const PICK_LIMIT: usize = 50;

/// A card some door refused that no person of the site holds.
#[derive(Clone, Debug)]
pub(crate) struct RefusedCard {
    /// The UID, upper-case hex, as the door reported it.
    pub uid: String,
    /// How often it was refused in the window.
    pub times: i64,
    /// The latest refusal: Unix seconds (the door's time, else when the server heard of it).
    pub last_at: i64,
    /// At which door.
    pub last_door: String,
}

/// Cards refused in the last two weeks that nobody holds, latest first (at most `limit`);
/// `uid` narrows it to one card.
async fn refused_cards(
    state: &AppState,
    site_id: i64,
    uid: Option<&str>,
    limit: i64,
) -> Result<Vec<RefusedCard>, UiError> {
    let since_us = (crate::now_unix() - RECENT_S) * 1_000_000;
    let credential = uid.map(|u| format!("card:{u}"));
    let rows: Vec<(String, i64, i64, String)> = sqlx::query_as(
        "SELECT SUBSTR(r.credential, 6), r.times, COALESCE(e.device_us, e.received_us), d.name \
         FROM (SELECT e.credential, COUNT(*) AS times, MAX(e.id) AS last_id \
               FROM events e JOIN doors d ON d.id = e.door_id \
               WHERE d.site_id = $1 AND e.kind = 'decision' AND e.credential LIKE 'card:%' \
                 AND e.decision LIKE 'DENIED%' AND e.received_us >= $2 \
                 AND ($3 IS NULL OR e.credential = $3) \
                 AND NOT EXISTS (SELECT 1 FROM cards c WHERE c.uid = SUBSTR(e.credential, 6)) \
               GROUP BY e.credential) r \
         JOIN events e ON e.id = r.last_id JOIN doors d ON d.id = e.door_id \
         ORDER BY r.last_id DESC LIMIT $4",
    )
    .bind(site_id)
    .bind(since_us)
    .bind(credential)
    .bind(limit)
    .fetch_all(state.db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(uid, times, last_us, last_door)| RefusedCard {
            uid,
            times,
            last_at: last_us.div_euclid(1_000_000),
            last_door,
        })
        .collect())
}

/// The People page's "Recently refused cards" section (nothing when there are none).
pub(super) async fn recent_section(state: &AppState, site: &Site) -> Result<Markup, UiError> {
    let cards = refused_cards(state, site.id, None, RECENT_LIMIT).await?;
    let zone = site.zone();
    Ok(html! {
        @if !cards.is_empty() {
            section #refused-cards {
                h3 { "Recently refused cards" }
                p.hint { "Cards the doors refused in the last two weeks that nobody here holds." }
                table {
                    thead { tr { th { "Card" } th { "Refused" } th { "Last" } th {} } }
                    tbody {
                        @for c in &cards {
                            tr {
                                td { code { (c.uid) } }
                                td { (c.times) "×" }
                                td { (local_time(&zone, c.last_at)) " at " (c.last_door) }
                                td { a.learn href={ "/cards/learn?uid=" (c.uid) } { "add to…" } }
                            }
                        }
                    }
                }
            }
        }
    })
}

/// Reader-style UIDs (`04:a1 b2…`) as the model wants them.
fn plain_uid(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect::<String>()
        .to_uppercase()
}

async fn picker_page(
    state: &AppState,
    admin: &Admin,
    site: &Site,
    uid: &str,
    search: &str,
    f: &Fields,
    err: FieldError<'_>,
) -> Result<Markup, UiError> {
    let refusals = refused_cards(state, site.id, Some(uid), 1).await?;
    let people = directory::people(state, site.id, search).await?;
    let zone = site.zone();
    Ok(editor_page(
        &format!("Add card {uid}"),
        admin,
        html! {
            p { a href="/people" { "← People" } }
            @if let Some(r) = refusals.first() {
                p #card-refusals {
                    "Refused " (r.times) " time(s) in the last two weeks, last at "
                    (r.last_door) " on " (local_time(&zone, r.last_at)) "."
                }
            }
            (field_error(err, "uid"))
            section {
                h3 { "Give it to someone" }
                form method="get" action="/cards/learn" role="search" {
                    input type="hidden" name="uid" value=(uid);
                    label for="q" { "Search by name" }
                    input id="q" name="q" type="search" value=(search);
                    button type="submit" id="search" { "Search" }
                }
                @if people.is_empty() {
                    p { @if search.trim().is_empty() { "No people yet." } @else { "Nobody matches." } }
                } @else {
                    table #pick {
                        thead { tr { th { "Name" } th { "Cards" } th {} } }
                        tbody {
                            @for p in people.iter().take(PICK_LIMIT) {
                                tr {
                                    td { a href={ "/people/" (p.id) } { (p.name) } }
                                    td { (p.cards) }
                                    td {
                                        form.inline method="post" action="/cards/learn" {
                                            (super::csrf(admin))
                                            input type="hidden" name="uid" value=(uid);
                                            input type="hidden" name="person" value=(p.id);
                                            button type="submit" aria-label={ "Add to " (p.name) } { "Add to " (p.name) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if people.len() > PICK_LIMIT {
                        p.hint { "Showing " (PICK_LIMIT) " of " (people.len()) "; search to narrow the list." }
                    }
                }
            }
            section {
                h3 { "Or a new person" }
                form method="post" action="/cards/learn" {
                    (super::csrf(admin))
                    input type="hidden" name="uid" value=(uid);
                    label for="name" { "Name" }
                    input id="name" name="name" value=(f.get("name")) required maxlength="100";
                    (field_error(err, "name"))
                    button type="submit" id="add-new-person" { "Add the person with this card" }
                }
            }
        },
    ))
}

async fn picker(
    State(state): State<AppState>,
    admin: Admin,
    Query(query): Query<Vec<(String, String)>>,
) -> UiResult {
    let site = the_site(&state, &admin).await?;
    let q = Fields(query);
    let uid = plain_uid(q.get("uid"));
    if uid.is_empty() {
        // Nothing to learn: the list of refused cards is on the People page.
        return Ok(see("/people#refused-cards"));
    }
    Ok(picker_page(
        &state,
        &admin,
        &site,
        &uid,
        q.get("q"),
        &Fields::default(),
        None,
    )
    .await?
    .into_response())
}

async fn learn(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> UiResult {
    let f = Fields(fields);
    guard(&admin, &headers, &f)?;
    let site = the_site(&state, &admin).await?;
    let uid = plain_uid(f.get("uid"));
    let refuse = |field: &'static str, message: String| {
        let (state, admin, site, uid, f) = (&state, &admin, &site, &uid, &f);
        async move {
            Ok::<_, UiError>(unprocessable(
                picker_page(state, admin, site, uid, "", f, Some((field, &message))).await?,
            ))
        }
    };
    let person_id = if f.get("person").is_empty() {
        // A new person: made only if the card can be theirs.
        let id = match model::create_person(&state, site.id, f.get("name")).await {
            Ok(id) => id,
            Err(e) => {
                let (field, message) = form_error(e, &["name"])?;
                return refuse(field, message).await;
            }
        };
        if let Err(e) = model::add_card(&state, id, &uid).await {
            directory::delete_person(&state, site.id, id).await?;
            let (field, message) = form_error(e, &["uid"])?;
            return refuse(field, message).await;
        }
        id
    } else {
        let person = directory::person(&state, site.id, parse_id(f.get("person"))?).await?;
        if let Err(e) = model::add_card(&state, person.id, &uid).await {
            let (field, message) = form_error(e, &["uid"])?;
            return refuse(field, message).await;
        }
        person.id
    };
    model::site_changed(&state, site.id).await?;
    tracing::info!(by = %admin.username, card = %uid, person = person_id, "refused card added");
    Ok(see(&format!("/people/{person_id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_style_uids_become_plain_hex() {
        assert_eq!(plain_uid("04:a1:b2:c3"), "04A1B2C3");
        assert_eq!(plain_uid(" 04 A1 B2 C3 "), "04A1B2C3");
    }
}
