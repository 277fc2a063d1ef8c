//! `/lockdown`: the site's lockdown state and the record of orders; putting the site into
//! lockdown and lifting it, each behind a confirmation page (`/lockdown/confirm?state=on|off`)
//! whose form posts the order. The order itself is [`crate::lockdown::give`].

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Form, Router};
use maud::{html, Markup};

use super::{editor_page, guard, local_time, see, the_site, Fields, UiResult};
use crate::auth::Admin;
use crate::directory::Site;
use crate::lockdown::{self, GivenBy, Order};
use crate::AppState;

/// Orders the page lists.
const HISTORY: i64 = 50;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/lockdown", get(show).post(give))
        .route("/lockdown/confirm", get(confirm))
}

/// The site's state in words, for the page and the dashboard.
fn describe(site: &Site, order: Option<&Order>) -> Markup {
    html! {
        @match order {
            Some(o) if o.on => {
                strong { "Lockdown in force" }
                " since " (local_time(&site.zone(), o.issued_at)) " (" (site.timezone) ")"
                @if let Some(a) = &o.admin { ", ordered by " (a) }
                "."
            }
            Some(o) => {
                "Not in lockdown; the last one was lifted "
                (local_time(&site.zone(), o.issued_at))
                @if let Some(a) = &o.admin { " by " (a) }
                "."
            }
            None => "Not in lockdown.",
        }
    }
}

/// The button that leads to the confirmation of the opposite of the current state.
pub(crate) fn button(on_now: bool) -> Markup {
    html! {
        form.lockdown-button method="get" action="/lockdown/confirm" {
            @if on_now {
                input type="hidden" name="state" value="off";
                button #lockdown-lift type="submit" { "Lift the lockdown…" }
            } @else {
                input type="hidden" name="state" value="on";
                button #lockdown-start type="submit" { "Lockdown…" }
            }
        }
    }
}

async fn show(State(state): State<AppState>, admin: Admin) -> UiResult {
    let site = the_site(&state, &admin).await?;
    let history = lockdown::history(&state, site.id, HISTORY).await?;
    let current = history.first();
    let on = current.is_some_and(|o| o.on);
    let zone = site.zone();
    Ok(editor_page(
        "Lockdown",
        &admin,
        html! {
            p #lockdown-state .lockdown-on[on] { (describe(&site, current)) }
            p.hint { "Under lockdown every door of the site refuses every card and code except \
                      EMERGENCY ones, which open as always; exit buttons still open the doors. \
                      Online doors learn an order within seconds; a door that is offline learns \
                      it when it next reaches the server, and keeps it across restarts." }
            (button(on))
            section {
                h3 { "Orders" }
                @if history.is_empty() {
                    p.muted { "No lockdown was ever ordered." }
                } @else {
                    table #lockdown-history {
                        thead { tr { th { "#" } th { "Order" } th { "When (" (site.timezone) ")" } th { "By" } } }
                        tbody {
                            @for o in &history {
                                tr {
                                    td { (o.seq) }
                                    td { @if o.on { "lockdown" } @else { "lifted" } }
                                    td { (local_time(&zone, o.issued_at)) }
                                    td { (o.admin.as_deref().unwrap_or("—")) }
                                }
                            }
                        }
                    }
                }
                p { a href="/log?kind=lockdown" { "What the doors reported" } }
            }
        },
    )
    .into_response())
}

/// `state=on` or `state=off`; anything else is neither.
fn wanted(text: &str) -> Option<bool> {
    match text {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

async fn confirm(
    State(state): State<AppState>,
    admin: Admin,
    Query(query): Query<Vec<(String, String)>>,
) -> UiResult {
    let f = Fields(query);
    let site = the_site(&state, &admin).await?;
    let Some(on) = wanted(f.get("state")) else {
        return Ok(see("/lockdown"));
    };
    let current = lockdown::latest(&state, site.id).await?;
    let (title, what, label) = if on {
        (
            "Put the site into lockdown?",
            "Every door of the site will refuse every card and code except EMERGENCY ones until \
             the lockdown is lifted. Exit buttons keep working.",
            "Yes, lock down every door",
        )
    } else {
        (
            "Lift the lockdown?",
            "The doors will admit people by their rules again.",
            "Yes, lift the lockdown",
        )
    };
    Ok(editor_page(
        title,
        &admin,
        html! {
            p #lockdown-state { (describe(&site, current.as_ref())) }
            p { (what) }
            form method="post" action="/lockdown" {
                (super::csrf(&admin))
                input type="hidden" name="state" value=(if on { "on" } else { "off" });
                input type="hidden" name="confirm" value="yes";
                button #lockdown-confirm type="submit" { (label) }
            }
            p { a #lockdown-cancel href="/" { "Cancel" } }
        },
    )
    .into_response())
}

async fn give(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> UiResult {
    let f = Fields(fields);
    guard(&admin, &headers, &f)?;
    let site = the_site(&state, &admin).await?;
    let Some(on) = wanted(f.get("state")) else {
        return Ok(see("/lockdown"));
    };
    // Only the confirmation page's form gives an order.
    if f.get("confirm") != "yes" {
        return Ok(see(&format!(
            "/lockdown/confirm?state={}",
            if on { "on" } else { "off" }
        )));
    }
    let by = GivenBy {
        admin_id: admin.id,
        admin: &admin.username,
    };
    lockdown::give(&state, site.id, on, Some(by)).await?;
    Ok(see("/"))
}
