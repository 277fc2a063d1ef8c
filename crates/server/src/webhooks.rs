//! Webhooks: events from doors (EMERGENCY notifications first of all) POSTed as JSON to the
//! admin's URLs, signed, and retried with backoff until they are taken.
//!
//! A delivery is queued in the same transaction that stores the event, so none is lost when the
//! server stops; any server process may deliver it (a short lease in the database keeps two
//! from sending the same one at once). The receiver checks
//! `X-Chronolock-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` with the
//! `X-Chronolock-Timestamp` header, and should ignore a `delivery` id it has seen.
//!
//! Deliveries follow no redirects, and go only to public addresses: a URL whose host is, or
//! resolves to, a loopback, private, link-local or other non-public address is refused (the
//! check is made by the resolver the connection uses, so a name cannot resolve to one address
//! for the check and another for the connection), unless the admin allows local targets.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use hmac::{Hmac, Mac};
use maud::{html, Markup};
use rand::RngCore;
use serde::{Deserialize, Serialize};
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
    ("alarm", "door alarm raised (forced or held open)"),
    ("alarm_cleared", "door alarm cleared"),
    ("lockdown", "a door went into or out of lockdown"),
];

/// The setting that lets webhooks reach loopback and private addresses (`1`: allowed).
pub const ALLOW_LOCAL_SETTING: &str = "webhooks_allow_local";

/// Whether an address is one a webhook may reach without the admin allowing local targets.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                // Shared address space (carrier-grade NAT) and the benchmarking range.
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // Unique local fc00::/7 and link-local fe80::/10.
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Resolves names to their public addresses only; a name with none is an error.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                let refused = format!(
                    "{host} resolves to no public address (allow local targets on the webhooks page to reach it)"
                );
                return Err(refused.into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// The HTTP clients webhooks are delivered with: neither follows redirects; `public` reaches
/// public addresses only, `any` also local ones (when the admin allows it).
#[derive(Clone, Debug)]
pub struct Outbound {
    public: reqwest::Client,
    any: reqwest::Client,
}

impl Outbound {
    /// Both clients, with a 10 s timeout.
    pub fn new() -> Result<Self, reqwest::Error> {
        let builder = || {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
        };
        Ok(Outbound {
            public: builder().dns_resolver(Arc::new(PublicOnly)).build()?,
            any: builder().build()?,
        })
    }

    /// The address a URL names directly, if its host is one.
    fn literal_ip(url: &str) -> Option<IpAddr> {
        let parsed = reqwest::Url::parse(url).ok()?;
        let host = parsed.host_str()?;
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok()
    }

    /// The client for a delivery to `url`, or why it may not be sent.
    fn for_url(&self, url: &str, allow_local: bool) -> Result<&reqwest::Client, String> {
        if allow_local {
            return Ok(&self.any);
        }
        // An address written in the URL is not resolved: check it here.
        match Self::literal_ip(url) {
            Some(ip) if !is_public(ip) => Err(format!(
                "{ip} is not a public address (allow local targets on the webhooks page to reach it)"
            )),
            _ => Ok(&self.public),
        }
    }
}

/// Whether the admin lets webhooks reach loopback and private addresses.
pub async fn local_targets_allowed(state: &AppState) -> bool {
    matches!(
        state
            .db
            .setting(ALLOW_LOCAL_SETTING)
            .await
            .ok()
            .flatten()
            .as_deref(),
        Some("1")
    )
}

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

/// Queues the deliveries of events just stored, `(id, kind, received at in Unix seconds)`, in
/// the transaction that stores them, so none is lost in a crash. Returns whether any webhook
/// exists (the sender is then to be woken once the transaction commits).
pub async fn enqueue_all(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    stored: &[(i64, &str, i64)],
) -> Result<bool, sqlx::Error> {
    if stored.is_empty() {
        return Ok(false);
    }
    let (hooks,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM webhooks")
        .fetch_one(&mut **tx)
        .await?;
    if hooks == 0 {
        return Ok(false);
    }
    for (id, kind, now) in stored {
        enqueue(tx, *id, kind, *now).await?;
    }
    Ok(true)
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
        Option<String>,
    );
    let event: Option<Row> = sqlx::query_as(
        "SELECT e.id, e.kind, e.device_us, e.received_us, e.credential, e.decision, d.id, d.name, \
         e.detail \
         FROM events e JOIN doors d ON d.id = e.door_id WHERE e.id = $1",
    )
    .bind(event_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((
        id,
        kind_stored,
        device_us,
        received_us,
        credential,
        decision,
        door_id,
        door,
        detail,
    )) = event
    else {
        return Ok(());
    };
    // What the event says beyond its kind: an alarm's kind, a lockdown's state, … (JSON).
    let detail: Option<serde_json::Value> = detail.and_then(|d| serde_json::from_str(&d).ok());
    let payload = serde_json::json!({
        "event_id": id,
        "kind": if kind_stored == "notify" { "emergency" } else { kind_stored.as_str() },
        "event": kind_stored,
        "door": {"id": door_id, "name": door},
        "credential": credential,
        "decision": decision,
        "detail": detail,
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
    clients: &Outbound,
    now: i64,
) -> Result<usize, sqlx::Error> {
    let allow_local = local_targets_allowed(state).await;
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
        let client = match clients.for_url(&url, allow_local) {
            Ok(c) => c,
            Err(refused) => {
                record_failure(state, id, attempts, &url, &refused).await?;
                continue;
            }
        };
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
            Ok(r) if r.status().is_redirection() => {
                Some(format!("HTTP {} (redirects are not followed)", r.status()))
            }
            Ok(r) => Some(format!("HTTP {}", r.status())),
            // The resolver's refusal is the source of the connection error: say it.
            Err(e) => Some(error_chain(&e)),
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
            Some(error) => record_failure(state, id, attempts, &url, &error).await?,
        }
    }
    Ok(delivered)
}

async fn record_failure(
    state: &AppState,
    id: i64,
    attempts: i32,
    url: &str,
    error: &str,
) -> Result<(), sqlx::Error> {
    tracing::warn!(delivery = id, %url, %error, "webhook delivery failed");
    sqlx::query(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt = $1, last_error = $2 WHERE id = $3",
    )
    .bind(crate::now_unix() + backoff_s(attempts))
    .bind(error)
    .bind(id)
    .execute(state.db.pool())
    .await?;
    Ok(())
}

/// An error and its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Delivers until the server stops: at once when a sync queued something, else every second.
pub async fn run(state: AppState) {
    let client = match Outbound::new() {
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
        .route("/webhooks/settings", post(settings))
}

#[derive(Deserialize)]
struct CreateForm {
    csrf: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    kinds: Vec<String>,
}

/// A delete's form: it is carried out only with `confirm=yes` (the confirmation page's).
#[derive(Deserialize)]
struct DeleteForm {
    csrf: String,
    #[serde(default)]
    confirm: String,
}

#[derive(Deserialize)]
struct SettingsForm {
    csrf: String,
    #[serde(default)]
    allow_local: Option<String>,
}

/// `POST /webhooks/settings`: whether webhooks may reach loopback and private addresses.
async fn settings(
    State(state): State<AppState>,
    admin: Admin,
    headers: axum::http::HeaderMap,
    Form(form): Form<SettingsForm>,
) -> Result<Response, AppError> {
    crate::auth::check_origin(&headers)?;
    admin.check_csrf(&form.csrf)?;
    let value = if form.allow_local.is_some() { "1" } else { "0" };
    sqlx::query(
        "INSERT INTO settings (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(ALLOW_LOCAL_SETTING)
    .bind(value)
    .execute(state.db.pool())
    .await?;
    Ok(Redirect::to("/webhooks").into_response())
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
    let allow_local = local_targets_allowed(state).await;
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
            h3 { "Where webhooks may go" }
            form method="post" action="/webhooks/settings" {
                input type="hidden" name="csrf" value=(admin.csrf);
                label {
                    input type="checkbox" name="allow_local" value="1" checked[allow_local];
                    " Allow local targets: loopback, private and link-local addresses (only for receivers on your own network; redirects are never followed)"
                }
                button type="submit" { "Save" }
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
    if let Err((field, message)) = add(&state, &form.url, &form.kinds).await? {
        let error = Some((field, message.as_str()));
        let body = render(&state, &admin, form.url.trim(), &form.kinds, error).await?;
        return Ok((axum::http::StatusCode::UNPROCESSABLE_ENTITY, body).into_response());
    }
    Ok(Redirect::to("/webhooks").into_response())
}

/// Adds a webhook for `kinds` of events to `url` and returns its id and signing secret; or the
/// field (`url` or `kinds`) and what is wrong with it, with nothing stored.
pub async fn add(
    state: &AppState,
    url: &str,
    kinds: &[String],
) -> Result<Result<(i64, String), (&'static str, String)>, AppError> {
    let url = url.trim().to_string();
    let parsed = reqwest::Url::parse(&url).ok();
    let error = if parsed
        .as_ref()
        .is_none_or(|u| !matches!(u.scheme(), "http" | "https") || u.host_str().is_none())
    {
        Some(("url", "an http:// or https:// URL"))
    } else if !local_targets_allowed(state).await
        && Outbound::literal_ip(&url).is_some_and(|ip| !is_public(ip))
    {
        Some((
            "url",
            "a loopback or private address: allow local targets above first",
        ))
    } else if kinds.is_empty() {
        Some(("kinds", "choose at least one kind of event"))
    } else if kinds
        .iter()
        .any(|k| !KINDS.iter().any(|(name, _)| name == k))
    {
        Some(("kinds", "unknown event kind"))
    } else {
        None
    };
    if let Some((field, message)) = error {
        return Ok(Err((field, message.to_string())));
    }
    let mut secret = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let secret = data_encoding::HEXLOWER.encode(&secret);
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO webhooks (url, secret, kinds, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(url)
    .bind(secret.clone())
    .bind(kinds.join(","))
    .bind(crate::now_unix())
    .fetch_one(state.db.pool())
    .await?;
    Ok(Ok((id, secret)))
}

/// Deletes a webhook and its pending deliveries; false if there was none with this id.
pub async fn remove(state: &AppState, id: i64) -> Result<bool, AppError> {
    let n = sqlx::query("DELETE FROM webhooks WHERE id = $1")
        .bind(id)
        .execute(state.db.pool())
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// A webhook as the API lists it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Hook {
    /// Row id.
    pub id: i64,
    /// Where events go.
    pub url: String,
    /// The kinds of events it gets.
    pub kinds: Vec<String>,
    /// The HMAC-SHA256 key its deliveries are signed with.
    pub secret: String,
}

/// Every webhook.
pub async fn hooks(state: &AppState) -> Result<Vec<Hook>, AppError> {
    let rows: Vec<(i64, String, String, String)> =
        sqlx::query_as("SELECT id, url, kinds, secret FROM webhooks ORDER BY id")
            .fetch_all(state.db.pool())
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, url, kinds, secret)| Hook {
            id,
            url,
            kinds: kinds.split(',').map(str::to_string).collect(),
            secret,
        })
        .collect())
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
    headers: axum::http::HeaderMap,
    Form(form): Form<DeleteForm>,
) -> Result<Response, AppError> {
    crate::auth::check_origin(&headers)?;
    admin.check_csrf(&form.csrf)?;
    if form.confirm != "yes" {
        let url: Option<(String,)> = sqlx::query_as("SELECT url FROM webhooks WHERE id = $1")
            .bind(id)
            .fetch_optional(state.db.pool())
            .await?;
        let Some((url,)) = url else {
            return Err(AppError::NotFound);
        };
        return Ok(crate::pages::confirm_page(
            &admin,
            "Delete the webhook?",
            maud::html! { "Events stop going to " code { (url) } "." },
            &format!("/webhooks/{id}/delete"),
            "/webhooks",
            &[("confirm", "yes")],
        )
        .into_response());
    }
    if !remove(&state, id).await? {
        return Err(AppError::NotFound);
    }
    Ok(Redirect::to("/webhooks").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_count_as_public() {
        for local in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(local.parse().unwrap()), "{local}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        let clients = Outbound::new().unwrap();
        assert!(clients.for_url("http://127.0.0.1:9/x", false).is_err());
        assert!(clients.for_url("http://[::1]:9/x", false).is_err());
        assert!(clients.for_url("http://127.0.0.1:9/x", true).is_ok());
        assert!(clients
            .for_url("https://hooks.example.org/x", false)
            .is_ok());
    }
}
