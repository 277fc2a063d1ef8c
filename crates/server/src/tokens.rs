//! API tokens: how scripts and member systems call the JSON API without a browser session.
//!
//! An admin makes a token at `/tokens`, naming it and choosing its scope: `read` (every `GET`
//! of the API) or `write` (every call). The token is shown once; the server keeps only its
//! SHA-256 (the token is 256 random bits, so the digest can be neither reversed nor guessed)
//! and its first characters, to tell tokens apart. A caller sends it as `Authorization: Bearer
//! clk_…`. A token acts for the admin who made it and ends with them; any admin can revoke any
//! token. Tokens cannot make tokens: that stays in the UI, behind a password.
//!
//! The API's extractors are here: [`ApiRead`] lets a token of either scope or an admin session
//! in; [`ApiWrite`] needs a `write` token, or a session that also sends its CSRF token as
//! `X-CSRF-Token` (a session is a cookie, which a browser attaches to other sites' requests
//! too). A request that carries a bearer token is judged by the token alone: a bad one is 401,
//! never a fall back to the cookie.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::html;
use rand::RngCore;

use crate::auth::{hash_token, Admin, AuthRejection};
use crate::error::AppError;
use crate::pages::{confirm_page, field_error, page};
use crate::{now_unix, AppState};

/// What every token starts with, so that a leaked one is easy to recognise (and to scan for).
pub const TOKEN_PREFIX: &str = "clk_";

/// How often a token's "last used" time is written at most (seconds): a busy script must not
/// turn every read into a write.
const LAST_USED_EVERY_S: i64 = 60;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every `GET` of the API.
    Read,
    /// Every call of the API.
    Write,
}

impl Scope {
    /// As stored and shown: `read` or `write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }

    /// From its stored name.
    pub fn from_name(name: &str) -> Option<Scope> {
        match name {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            _ => None,
        }
    }
}

/// Who calls the API.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The admin (for a token, the admin who made it).
    pub admin_id: i64,
    /// The admin's name.
    pub admin: String,
    /// The token's name, when the call came with a token.
    pub token: Option<String>,
    /// What the call may do.
    pub scope: Scope,
}

impl Caller {
    /// Who did it, for logs and lockdown orders: `ana` or `ana (token "member sync")`.
    pub fn who(&self) -> String {
        match &self.token {
            Some(t) => format!("{} (token \"{t}\")", self.admin),
            None => self.admin.clone(),
        }
    }
}

/// A caller allowed to read.
#[derive(Clone, Debug)]
pub struct ApiRead(pub Caller);

/// A caller allowed to change things.
#[derive(Clone, Debug)]
pub struct ApiWrite(pub Caller);

/// The bearer token of a request: `None` without an `Authorization` header, `Some(Err)` when
/// the header is there but is not a bearer token of ours.
fn bearer(headers: &HeaderMap) -> Option<Result<&str, ()>> {
    let value = headers.get(AUTHORIZATION)?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| t.starts_with(TOKEN_PREFIX));
    Some(token.ok_or(()))
}

/// The caller of a request, by token or by session.
async fn caller(parts: &mut Parts, state: &AppState) -> Result<(Caller, bool), AppError> {
    if let Some(token) = bearer(&parts.headers) {
        let token = token.map_err(|()| AppError::Unauthorized)?;
        type Row = (i64, i64, String, String, String, Option<i64>);
        let row: Option<Row> = sqlx::query_as(
            "SELECT t.id, a.id, a.username, t.name, t.scope, t.last_used_at \
             FROM api_tokens t JOIN admins a ON a.id = t.admin_id WHERE t.token_hash = $1",
        )
        .bind(hash_token(token))
        .fetch_optional(state.db.pool())
        .await?;
        let (id, admin_id, admin, name, scope, last_used) = row.ok_or(AppError::Unauthorized)?;
        let now = now_unix();
        if last_used.is_none_or(|t| now - t >= LAST_USED_EVERY_S) {
            sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(state.db.pool())
                .await?;
        }
        let scope = Scope::from_name(&scope).unwrap_or(Scope::Read);
        let caller = Caller {
            admin_id,
            admin,
            token: Some(name),
            scope,
        };
        return Ok((caller, true));
    }
    let admin = Admin::from_request_parts(parts, state)
        .await
        .map_err(|e| match e {
            AuthRejection::Error(e) => e,
            _ => AppError::Unauthorized,
        })?;
    let csrf_ok = parts
        .headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| admin.check_csrf(t).is_ok());
    let caller = Caller {
        admin_id: admin.id,
        admin: admin.username,
        token: None,
        scope: Scope::Write,
    };
    Ok((caller, csrf_ok))
}

impl FromRequestParts<AppState> for ApiRead {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        Ok(ApiRead(caller(parts, state).await?.0))
    }
}

impl FromRequestParts<AppState> for ApiWrite {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let (caller, trusted) = caller(parts, state).await?;
        if caller.scope != Scope::Write {
            return Err(AppError::Forbidden(
                "this token may only read; make a write token at /tokens".into(),
            ));
        }
        if !trusted {
            return Err(AppError::Forbidden(
                "a session must send its CSRF token (GET /api/me) as X-CSRF-Token".into(),
            ));
        }
        crate::auth::check_origin(&parts.headers)?;
        Ok(ApiWrite(caller))
    }
}

/// A new token: `clk_` and 256 random bits.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{TOKEN_PREFIX}{}",
        data_encoding::BASE64URL_NOPAD.encode(&bytes)
    )
}

/// Makes a token for `admin_id` and returns it: the only time it exists in clear.
pub async fn create(
    state: &AppState,
    admin_id: i64,
    name: &str,
    scope: Scope,
) -> Result<String, AppError> {
    let name =
        crate::model::name_field("name", name).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let token = new_token();
    let prefix: String = token.chars().take(TOKEN_PREFIX.len() + 6).collect();
    sqlx::query(
        "INSERT INTO api_tokens (admin_id, name, token_hash, prefix, scope, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(admin_id)
    .bind(&name)
    .bind(hash_token(&token))
    .bind(prefix)
    .bind(scope.as_str())
    .bind(now_unix())
    .execute(state.db.pool())
    .await?;
    tracing::info!(admin_id, name, scope = scope.as_str(), "API token made");
    Ok(token)
}

/// Revokes a token; false if there was none with this id.
pub async fn revoke(state: &AppState, id: i64) -> Result<bool, AppError> {
    let done = sqlx::query("DELETE FROM api_tokens WHERE id = $1")
        .bind(id)
        .execute(state.db.pool())
        .await?;
    Ok(done.rows_affected() > 0)
}

/// A token as listed: never the token itself.
#[derive(Clone, Debug)]
pub struct TokenRow {
    /// Row id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its first characters.
    pub prefix: String,
    /// Its scope.
    pub scope: String,
    /// The admin it acts for.
    pub admin: String,
    /// When it was made (Unix seconds).
    pub created_at: i64,
    /// When it was last used, to the minute.
    pub last_used_at: Option<i64>,
}

/// Every token, newest first.
pub async fn list(state: &AppState) -> Result<Vec<TokenRow>, AppError> {
    type Row = (i64, String, String, String, String, i64, Option<i64>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT t.id, t.name, t.prefix, t.scope, a.username, t.created_at, t.last_used_at \
         FROM api_tokens t JOIN admins a ON a.id = t.admin_id ORDER BY t.id DESC",
    )
    .fetch_all(state.db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, name, prefix, scope, admin, created_at, last_used_at)| TokenRow {
                id,
                name,
                prefix,
                scope,
                admin,
                created_at,
                last_used_at,
            },
        )
        .collect())
}

/// The routes of the tokens page.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tokens", get(tokens_page).post(make))
        .route("/tokens/{id}/revoke", post(revoke_submit))
}

fn when(unix: i64) -> String {
    jiff::Timestamp::from_second(unix).map_or_else(
        |_| unix.to_string(),
        |t| t.strftime("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

async fn render(
    state: &AppState,
    admin: &Admin,
    name: &str,
    error: Option<(&str, &str)>,
) -> Result<maud::Markup, AppError> {
    let tokens = list(state).await?;
    Ok(page(
        "API tokens",
        Some(admin),
        html! {
            p { "Scripts and member systems call the JSON API (described by "
                a href="/api/openapi.json" { code { "/api/openapi.json" } }
                ") with a token: " code { "Authorization: Bearer clk_…" } ". A read token may only read; a write token may do whatever an admin can in the API. A token acts for the admin who made it and is revoked with them." }
            @if tokens.is_empty() { p.muted #no-tokens { "No tokens yet." } }
            @else {
                table #tokens {
                    thead { tr { th { "Name" } th { "Token" } th { "Scope" } th { "Made by" } th { "Made" } th { "Last used" } th {} } }
                    tbody {
                        @for t in &tokens {
                            tr {
                                td data-label="Name" { (t.name) }
                                td data-label="Token" { code { (t.prefix) "…" } }
                                td data-label="Scope" { (t.scope) }
                                td data-label="Made by" { (t.admin) }
                                td data-label="Made" { (when(t.created_at)) }
                                td data-label="Last used" { @match t.last_used_at { Some(u) => (when(u)), None => "never" } }
                                td {
                                    form method="post" action={ "/tokens/" (t.id) "/revoke" } {
                                        input type="hidden" name="csrf" value=(admin.csrf);
                                        button type="submit" { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h3 { "Make a token" }
            form method="post" action="/tokens" {
                input type="hidden" name="csrf" value=(admin.csrf);
                label for="name" { "Name (what uses it)" }
                input id="name" name="name" required maxlength="100" placeholder="member system sync" value=(name);
                (field_error(error, "name"))
                fieldset {
                    legend { "Scope" }
                    label { input type="radio" name="scope" value="read" checked; " read" }
                    label { input type="radio" name="scope" value="write"; " write" }
                }
                button type="submit" #make-token { "Make token" }
            }
        },
    ))
}

async fn tokens_page(State(state): State<AppState>, admin: Admin) -> Result<Response, AppError> {
    Ok(render(&state, &admin, "", None).await?.into_response())
}

#[derive(serde::Deserialize)]
struct MakeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    scope: String,
}

async fn make(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Form(form): Form<MakeForm>,
) -> Result<Response, AppError> {
    crate::auth::check_origin(&headers)?;
    admin.check_csrf(&form.csrf)?;
    let Some(scope) = Scope::from_name(&form.scope) else {
        return Err(AppError::BadRequest("scope: read or write".into()));
    };
    let Ok(name) = crate::model::name_field("name", &form.name) else {
        let error = Some(("name", "1 to 100 characters"));
        let markup = render(&state, &admin, &form.name, error).await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, markup).into_response());
    };
    let token = create(&state, admin.id, &name, scope).await?;
    let body = page(
        "Your new API token",
        Some(&admin),
        html! {
            div.once {
                p { "Copy the token now: it is shown only once (the server keeps only a digest of it)." }
                p.secret { code #new-token { (token) } }
                p { "Name: " (name) ", scope: " (scope.as_str()) "." }
            }
            p { a href="/tokens" { "Back to the tokens" } }
        },
    );
    Ok(([(axum::http::header::CACHE_CONTROL, "no-store")], body).into_response())
}

#[derive(serde::Deserialize)]
struct RevokeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

async fn revoke_submit(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<RevokeForm>,
) -> Result<Response, AppError> {
    crate::auth::check_origin(&headers)?;
    admin.check_csrf(&form.csrf)?;
    let id: i64 = id.parse().map_err(|_| AppError::NotFound)?;
    let found = list(&state)
        .await?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or(AppError::NotFound)?;
    if form.confirm != "yes" {
        let what = html! { "Revoke the token " strong { (found.name) } " (" code { (found.prefix) "…" } ", " (found.scope) ")? What uses it is refused from then on." };
        let action = format!("/tokens/{id}/revoke");
        return Ok(confirm_page(
            &admin,
            &format!("Revoke {}?", found.name),
            what,
            &action,
            "/tokens",
            &[("confirm", "yes")],
        )
        .into_response());
    }
    revoke(&state, id).await?;
    tracing::info!(admin = %admin.username, token = %found.name, "API token revoked");
    Ok(axum::response::Redirect::to("/tokens").into_response())
}
