//! `/site`: create the site (name and IANA time zone), then show and edit it. Changing the time
//! zone recompiles every door, since schedules and date ranges are local times.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Form, Router};
use maud::{html, Markup};

use super::{editor_page, form_error, guard, see, unprocessable, FieldError, Fields, UiResult};
use crate::auth::Admin;
use crate::directory::{self, Site};
use crate::pages::field_error;
use crate::{model, AppState};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/site", get(show).post(submit))
}

/// Every zone name this build knows, sorted, grouped by region (`Europe`, `America`, …; names
/// without a region, such as `UTC`, under "Other"), for the time zone picker.
fn zone_groups() -> Vec<(String, Vec<String>)> {
    let mut groups: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for name in jiff::tz::db().available() {
        let name = name.as_str().to_string();
        if name.starts_with("posix") || name.starts_with("right/") {
            continue;
        }
        let region = name.split_once('/').map_or("Other", |(r, _)| r).to_string();
        groups.entry(region).or_default().push(name);
    }
    let mut groups: Vec<(String, Vec<String>)> = groups.into_iter().collect();
    for (_, names) in &mut groups {
        names.sort();
    }
    groups.sort_by_key(|(region, _)| region == "Other");
    groups
}

fn form(admin: &Admin, site: Option<&Site>, f: &Fields, err: FieldError<'_>) -> Markup {
    let (title, button) = match site {
        None => ("Set up the site", "Create the site"),
        Some(_) => ("Site", "Save"),
    };
    let name = f.or("name", site.map_or("", |s| s.name.as_str()));
    let timezone = f.or("timezone", site.map_or("", |s| s.timezone.as_str()));
    let ntp_servers = f.or(
        "ntp_servers",
        site.and_then(|s| s.ntp_servers.as_deref()).unwrap_or(""),
    );
    editor_page(
        title,
        admin,
        html! {
            @if site.is_none() {
                p { "Name the site and choose its time zone. Schedules and dates are entered in \
                     this zone's local time; the doors get them converted to UTC." }
            }
            form method="post" action="/site" {
                (super::csrf(admin))
                label for="name" { "Name" }
                input id="name" name="name" value=(name) required maxlength="100";
                (field_error(err, "name"))
                label for="timezone" { "Time zone" }
                select id="timezone" name="timezone" required {
                    @if timezone.is_empty() { option value="" { "Choose the site's time zone" } }
                    @for (region, zones) in zone_groups() {
                        optgroup label=(region) {
                            @for zone in zones { option value=(zone) selected[zone == timezone] { (zone) } }
                        }
                    }
                }
                (field_error(err, "timezone"))
                @if site.is_some() {
                    p.hint { "Changing the time zone recompiles every door's list." }
                    label for="ntp_servers" { "NTP servers (up to 4, separated by spaces)" }
                    input id="ntp_servers" name="ntp_servers" value=(ntp_servers)
                        placeholder="pool.ntp.org time.cloudflare.com" autocomplete="off" maxlength="128";
                    (field_error(err, "ntp_servers"))
                    p.hint { "Empty: the doors' built-in pool.ntp.org and time.cloudflare.com. \
                              An air-gapped site names its own (host or host:port); doors take \
                              them at their next sync and keep them." }
                }
                button type="submit" id="save-site" { (button) }
            }
            @if site.is_none() { script src="/static/site-zone.js" {} }
            @if let Some(site) = site {
                section {
                    h3 { "Local time" }
                    p { "Now in " (site.timezone) ": " (super::local_time(&site.zone(), crate::now_unix())) }
                }
            }
        },
    )
}

async fn show(State(state): State<AppState>, admin: Admin) -> UiResult {
    let site = directory::first_site(&state).await?;
    Ok(form(&admin, site.as_ref(), &Fields::default(), None).into_response())
}

async fn submit(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> UiResult {
    let f = Fields(fields);
    guard(&admin, &headers, &f)?;
    let site = directory::first_site(&state).await?;
    let (name, timezone) = (f.get("name"), f.get("timezone").trim());
    let result = match &site {
        None => model::create_site(&state, name, timezone).await.map(|_| ()),
        // The servers first: a list that is refused leaves everything as it was.
        Some(s) => {
            match directory::set_site_ntp_servers(&state, s.id, f.get("ntp_servers")).await {
                Ok(()) => directory::update_site(&state, s.id, name, timezone).await,
                Err(e) => Err(e),
            }
        }
    };
    if let Err(e) = result {
        let (field, message) = form_error(e, &["name", "timezone", "ntp_servers"])?;
        return Ok(unprocessable(form(
            &admin,
            site.as_ref(),
            &f,
            Some((field, &message)),
        )));
    }
    if let Some(s) = &site {
        if s.timezone != timezone {
            model::site_changed(&state, s.id).await?;
        }
    }
    // On the first run the next step is the first door.
    Ok(see(if site.is_none() { "/doors" } else { "/site" }))
}
