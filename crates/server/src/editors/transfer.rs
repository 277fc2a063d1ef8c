//! `/import` (a preview first, then the import), `/export.csv`, `/export.json` and `/backup`:
//! [`crate::transfer`] in the admin UI.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};
use maud::{html, Markup};

use super::{editor_page, guard, see, the_site, unprocessable, Fields, UiError, UiResult};
use crate::auth::Admin;
use crate::error::AppError;
use crate::transfer::{self, ImportSummary, TransferError};
use crate::AppState;

/// The largest file the import page takes (10,000 esp-rfid users are about 1.5 MB).
const IMPORT_LIMIT: usize = 32 * 1024 * 1024;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/import",
            get(form)
                .post(post)
                .layer(DefaultBodyLimit::max(IMPORT_LIMIT)),
        )
        .route("/export.csv", get(export_csv))
        .route("/export.json", get(export_json))
        .route("/backup", get(backup))
}

fn import_form(admin: &Admin, data: &str) -> Markup {
    html! {
        form method="post" action="/import" {
            (super::csrf(admin))
            label for="file" { "File (esp-rfid user backup, chronolock JSON export, or CSV)" }
            input id="file" type="file" accept=".json,.csv,.txt,application/json,text/csv";
            label for="data" { "…or paste its text" }
            textarea id="data" name="data" rows="12" spellcheck="false" required { (data) }
            button type="submit" id="preview" { "Preview" }
        }
        script src="/static/import.js" {}
    }
}

fn help() -> Markup {
    html! {
        p.hint { "Nothing is stored until you confirm the preview. People are found again by \
                  member number, else by card, else by name: importing the same file twice \
                  changes nothing. Import adds and updates; it never removes cards, groups or \
                  rules. esp-rfid users with access join the group "
                  code { (transfer::ESP_RFID_GROUP) } ", which gets an UNRESTRICTED rule at \
                  every door." }
        p.hint { "CSV columns: " code { (transfer::CSV_COLUMNS.join(",")) } " (the header is \
                  row 1; only name is required). Cards separated by spaces, groups and rules by \
                  semicolons; rules as " code { "Door=UNRESTRICTED" } ", "
                  code { "Door=SCHEDULED/Schedule" } ", optionally followed by "
                  code { " 2026-01-01..2026-12-31" } "." }
    }
}

async fn form(State(state): State<AppState>, admin: Admin) -> UiResult {
    the_site(&state, &admin).await?;
    Ok(editor_page(
        "Import people",
        &admin,
        html! {
            p { a href="/people" { "← All people" } }
            (help())
            (import_form(&admin, ""))
        },
    )
    .into_response())
}

fn summary_markup(s: &ImportSummary, done: bool) -> Markup {
    html! {
        ul #summary {
            li { "People to add: " strong #added { (s.added) } }
            li { "People to update: " strong #updated { (s.updated) } }
            li { "People unchanged: " strong #unchanged { (s.unchanged) } }
            li { "Cards to add: " (s.cards) }
            li { "Rules to add: " (s.rules) }
            li { "Groups to create: " (s.groups) ", memberships to add: " (s.memberships) }
            li { "Doors to create: " (s.doors) ", schedules to create: " (s.schedules) }
        }
        @for note in &s.notes { p.hint { (note) } }
        @if !done && !s.changes.is_empty() {
            details open[s.changes.len() <= 20] {
                summary { "What changes" }
                ul #changes { @for c in &s.changes { li { (c) } } }
            }
        }
    }
}

async fn post(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> UiResult {
    let f = Fields(fields);
    guard(&admin, &headers, &f)?;
    let site = the_site(&state, &admin).await?;
    let data = f.get("data");
    let commit = f.get("confirm") == "yes";
    let result = match transfer::parse(data, &site.zone()) {
        Ok(doc) => transfer::import(&state, &site, &doc, commit).await,
        Err(e) => Err(e),
    };
    let summary = match result {
        Ok(s) => s,
        Err(e @ (TransferError::Row { .. } | TransferError::Format(_))) => {
            return Ok(unprocessable(editor_page(
                "Import people",
                &admin,
                html! {
                    p { a href="/people" { "← All people" } }
                    p.error #import-error role="alert" { "Nothing was imported: " (e.to_string()) }
                    (help())
                    (import_form(&admin, data))
                },
            )));
        }
        Err(e) => return Err(UiError::App(AppError::Internal(e.to_string()))),
    };
    if commit {
        tracing::info!(admin = %admin.username, %summary, "import");
        return Ok(see("/people"));
    }
    Ok(editor_page(
        "Import preview",
        &admin,
        html! {
            p { a href="/import" { "← Choose another file" } }
            p { "A " (summary.kind) " file. Importing it would change this:" }
            (summary_markup(&summary, false))
            form method="post" action="/import" {
                (super::csrf(&admin))
                input type="hidden" name="data" value=(data);
                input type="hidden" name="confirm" value="yes";
                button type="submit" id="confirm-import" { "Import" }
            }
        },
    )
    .into_response())
}

fn download(content_type: &'static str, name: &str, body: Vec<u8>) -> Response {
    (
        [
            (CONTENT_TYPE, content_type.to_string()),
            (
                CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

fn failed(e: TransferError) -> UiError {
    UiError::App(AppError::Internal(e.to_string()))
}

async fn export_csv(State(state): State<AppState>, admin: Admin) -> UiResult {
    let site = the_site(&state, &admin).await?;
    let csv = transfer::export_csv(&state, &site).await.map_err(failed)?;
    Ok(download(
        "text/csv; charset=utf-8",
        "chronolock-people.csv",
        csv.into_bytes(),
    ))
}

async fn export_json(State(state): State<AppState>, admin: Admin) -> UiResult {
    let site = the_site(&state, &admin).await?;
    let json = transfer::export_json(&state, &site).await.map_err(failed)?;
    Ok(download(
        "application/json",
        "chronolock-export.json",
        json.into_bytes(),
    ))
}

/// The whole database: it holds the site's signing key and the doors' keys.
async fn backup(State(state): State<AppState>, admin: Admin) -> UiResult {
    let bytes = transfer::backup(&state.db).await.map_err(failed)?;
    tracing::info!(admin = %admin.username, "backup downloaded");
    let name = format!("chronolock-backup-{}.json", crate::now_unix());
    Ok(download("application/json", &name, bytes))
}
