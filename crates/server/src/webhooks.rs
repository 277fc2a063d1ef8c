//! Webhooks: events from doors (EMERGENCY notifications first of all) POSTed as JSON to the
//! admin's URLs, signed, and retried with backoff until they are taken.
//!
//! A delivery is queued in the same transaction that stores the event, so none is lost when the
//! server stops; any server process may deliver it (a short lease in the database keeps two
//! from sending the same one at once). The receiver checks
//! `X-Chronolock-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` with the
//! `X-Chronolock-Timestamp` header, and should ignore a `delivery` id it has seen.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use hmac::{Hmac, Mac};
use maud::{html, Markup};
use rand::RngCore;
use serde::Deserialize;
use sha2::Sha256;

use crate::auth::Admin;
use crate::error::AppError;
use crate::pages::{field_error, page};
use crate::AppState;

/// Event kinds a webhook can ask for.
pub const KINDS: &[(&str, &str)] = &[
    ("notify", "EMERGENCY credential used"),
    ("report", "daily battery report"),
    ("decision", "every access decision"),
    ("clock", "device clock changes"),
];

/// Attempts before a delivery is given up.
pub const MAX_ATTEMPTS: i32 = 12;
/// A delivery taken by a process is left alone by the others this long.
const LEASE_S: i64 = 60;

/// Seconds to wait before attempt `attempts + 1`: 5 s doubling, at most an hour.
pub fn backoff_s(attempts: i32) -> i64 {
    (5i64 << attempts.clamp(0, 20)).min(3600)
}

/// The signature header's value for a body sent at `timestamp`.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!(
        "sha256={}",
        data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes())
    )
}

/// Queues deliveries of event `event_id` (of `kind`) to every webhook that asked for the kind.
pub async fn enqueue(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    event_id: i64,
    kind: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    type Row = (
        i64,
        String,
        Option<i64>,
        i64,
        Option<String>,
        Option<String>,
        i64,
        String,
    );
    let event: Option<Row> = sqlx::query_as(
        "SELECT e.id, e.kind, e.device_us, e.received_us, e.credential, e.decision, d.id, d.name \
         FROM events e JOIN doors d ON d.id = e.door_id WHERE e.id = $1",
    )
    .bind(event_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((id, kind_stored, device_us, received_us, credential, decision, door_id, door)) =
        event
    else {
        return Ok(());
    };
    let payload = serde_json::json!({
        "event_id": id,
        "kind": if kind_stored == "notify" { "emergency" } else { kind_stored.as_str() },
        "event": kind_stored,
        "door": {"id": door_id, "name": door},
        "credential": credential,
        "decision": decision,
        "device_time_us": device_us,
        "received_time_us": received_us,
    })
    .to_string();
    sqlx::query(
        "INSERT INTO webhook_deliveries (webhook_id, event_id, payload, next_attempt) \
         SELECT w.id, $1, $2, $3 FROM webhooks w WHERE (',' || w.kinds || ',') LIKE $4 \
         ON CONFLICT (webhook_id, event_id) DO NOTHING",
    )
    .bind(event_id)
    .bind(payload)
    .bind(now)
    .bind(format!("%,{kind},%"))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Sends the deliveries that are due; returns how many were taken by their receivers.
pub async fn deliver_due(
    state: &AppState,
    client: &reqwest::Client,
    now: i64,
) -> Result<usize, sqlx::Error> {
    type Due = (i64, String, i32, i64, String, String);
    let due: Vec<Due> = sqlx::query_as(
        "SELECT d.id, d.payload, d.attempts, d.next_attempt, w.url, w.secret \
         FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
         WHERE d.delivered_at IS NULL AND d.attempts < $1 AND d.next_attempt <= $2 \
         ORDER BY d.next_attempt LIMIT 50",
    )
    .bind(MAX_ATTEMPTS)
    .bind(now)
    .fetch_all(state.db.pool())
    .await?;
    let mut delivered = 0;
    for (id, payload, attempts, next_attempt, url, secret) in due {
        let leased = sqlx::query(
            "UPDATE webhook_deliveries SET next_attempt = $1 \
             WHERE id = $2 AND next_attempt = $3 AND delivered_at IS NULL",
        )
        .bind(now + LEASE_S)
        .bind(id)
        .bind(next_attempt)
        .execute(state.db.pool())
        .await?
        .rows_affected();
        if leased != 1 {
            continue; // another process has it
        }
        let timestamp = crate::now_unix();
        let result = client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-chronolock-timestamp", timestamp.to_string())
            .header("x-chronolock-delivery", id.to_string())
            .header(
                "x-chronolock-signature",
                signature(&secret, timestamp, &payload),
            )
            .body(payload)
            .send()
            .await;
        let error = match result {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("HTTP {}", r.status())),
            Err(e) => Some(e.to_string()),
        };
        match error {
            None => {
                delivered += 1;
                sqlx::query(
                    "UPDATE webhook_deliveries SET delivered_at = $1, attempts = attempts + 1, last_error = NULL WHERE id = $2",
                )
                .bind(crate::now_unix())
                .bind(id)
                .execute(state.db.pool())
                .await?;
            }
            Some(error) => {
                tracing::warn!(delivery = id, %url, %error, "webhook delivery failed");
                sqlx::query(
                    "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt = $1, last_error = $2 WHERE id = $3",
                )
                .bind(crate::now_unix() + backoff_s(attempts))
                .bind(error)
                .bind(id)
                .execute(state.db.pool())
                .await?;
            }
        }
    }
    Ok(delivered)
}

/// Delivers until the server stops: at once when a sync queued something, else every second.
pub async fn run(state: AppState) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks disabled: no HTTP client");
            return;
        }
    };
    loop {
        tokio::select! {
            () = state.webhook_wake.notified() => {},
            () = tokio::time::sleep(Duration::from_secs(1)) => {},
        }
        if let Err(e) = deliver_due(&state, &client, crate::now_unix()).await {
            tracing::warn!(error = %e, "webhook queue");
        }
    }
}

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route("/webhooks/{id}/delete", post(delete))
}

#[derive(Deserialize)]
struct CreateForm {
    csrf: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    kinds: Vec<String>,
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn list(State(state): State<AppState>, admin: Admin) -> Result<Markup, AppError> {
    render(&state, &admin, "", &[], None).await
}

async fn render(
    state: &AppState,
    admin: &Admin,
    url: &str,
    kinds: &[String],
    error: Option<(&str, &str)>,
) -> Result<Markup, AppError> {
    type Hook = (i64, String, String, String, i64, i64, i64);
    let hooks: Vec<Hook> = sqlx::query_as(
        "SELECT w.id, w.url, w.secret, w.kinds, \
         (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id AND d.delivered_at IS NOT NULL), \
         (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id AND d.delivered_at IS NULL AND d.attempts < $1), \
         (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id AND d.delivered_at IS NULL AND d.attempts >= $1) \
         FROM webhooks w ORDER BY w.id",
    )
    .bind(MAX_ATTEMPTS)
    .fetch_all(state.db.pool())
    .await?;
    let checked = |k: &str| kinds.is_empty() && k == "notify" || kinds.iter().any(|x| x == k);
    Ok(page(
        "Webhooks",
        Some(admin),
        html! {
            p { "Events are POSTed as JSON, signed with " code { "X-Chronolock-Signature: sha256=HMAC-SHA256(secret, timestamp + \".\" + body)" }
                " (timestamp in " code { "X-Chronolock-Timestamp" } "), and retried with backoff for about a day until your endpoint answers 2xx." }
            @if hooks.is_empty() { p class="muted" { "No webhooks yet." } }
            @else {
                table {
                    thead { tr { th { "URL" } th { "Events" } th { "Secret" } th { "Delivered" } th { "Waiting" } th { "Failed" } th {} } }
                    tbody {
                        @for (id, url, secret, kinds, ok, waiting, failed) in &hooks {
                            tr {
                                td { code { (url) } }
                                td { (kinds) }
                                td { code { (secret) } }
                                td { (ok) } td { (waiting) } td { (failed) }
                                td {
                                    form method="post" action={ "/webhooks/" (id) "/delete" } {
                                        input type="hidden" name="csrf" value=(admin.csrf);
                                        button type="submit" { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h3 { "Add a webhook" }
            form method="post" action="/webhooks" {
                input type="hidden" name="csrf" value=(admin.csrf);
                label for="url" { "URL" }
                input id="url" name="url" type="url" required placeholder="https://example.org/hooks/door" value=(url);
                (field_error(error, "url"))
                fieldset {
                    legend { "Events" }
                    @for (kind, label) in KINDS {
                        label { input type="checkbox" name="kinds" value=(kind) checked[checked(kind)]; " " (label) }
                    }
                }
                (field_error(error, "kinds"))
                button type="submit" { "Add webhook" }
            }
        },
    ))
}

async fn create(
    State(state): State<AppState>,
    admin: Admin,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    // Repeated `kinds` fields: parse the body ourselves (axum's Form keeps one value).
    let form: CreateForm = parse_create_form(&body)?;
    admin.check_csrf(&form.csrf)?;
    let url = form.url.trim().to_string();
    let parsed = reqwest::Url::parse(&url).ok();
    let error = if parsed
        .as_ref()
        .is_none_or(|u| !matches!(u.scheme(), "http" | "https") || u.host_str().is_none())
    {
        Some(("url", "an http:// or https:// URL"))
    } else if form.kinds.is_empty() {
        Some(("kinds", "choose at least one kind of event"))
    } else if form
        .kinds
        .iter()
        .any(|k| !KINDS.iter().any(|(name, _)| name == k))
    {
        Some(("kinds", "unknown event kind"))
    } else {
        None
    };
    if let Some(error) = error {
        let body = render(&state, &admin, &url, &form.kinds, Some(error)).await?;
        return Ok((axum::http::StatusCode::UNPROCESSABLE_ENTITY, body).into_response());
    }
    let mut secret = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    sqlx::query("INSERT INTO webhooks (url, secret, kinds, created_at) VALUES ($1, $2, $3, $4)")
        .bind(url)
        .bind(data_encoding::HEXLOWER.encode(&secret))
        .bind(form.kinds.join(","))
        .bind(crate::now_unix())
        .execute(state.db.pool())
        .await?;
    Ok(Redirect::to("/webhooks").into_response())
}

fn parse_create_form(body: &[u8]) -> Result<CreateForm, AppError> {
    let mut form = CreateForm {
        csrf: String::new(),
        url: String::new(),
        kinds: Vec::new(),
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|e| AppError::BadRequest(format!("form: {e}")))?;
    for (k, v) in pairs {
        match k.as_str() {
            "csrf" => form.csrf = v,
            "url" => form.url = v,
            "kinds" => form.kinds.push(v),
            _ => {}
        }
    }
    Ok(form)
}

async fn delete(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, AppError> {
    admin.check_csrf(&form.csrf)?;
    let n = sqlx::query("DELETE FROM webhooks WHERE id = $1")
        .bind(id)
        .execute(state.db.pool())
        .await?
        .rows_affected();
    if n == 0 {
        return Err(AppError::NotFound);
    }
    Ok(Redirect::to("/webhooks"))
}
