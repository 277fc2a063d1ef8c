//! Admin access: the first admin (setup page, or a password from the environment), argon2
//! password hashes, session cookies, CSRF tokens, logout.
//!
//! - A session cookie carries 32 random bytes; the database keeps only their SHA-256, so a
//!   stolen database row is no cookie. Cookies are `HttpOnly` and `SameSite=Strict`.
//! - Every state-changing form carries the session's CSRF token; JSON calls send it in the
//!   `X-CSRF-Token` header. Cross-site POSTs are refused by their `Origin` header as well, which
//!   also protects the setup and login forms that come before any session.
//! - Every page and API but `/healthz`, setup, login and the device API needs a session: the
//!   [`Admin`] extractor redirects pages to the login (or setup) page and answers APIs with 401.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use axum::extract::{FromRequestParts, State};
use axum::http::header::{COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use maud::{html, Markup};
use rand::RngCore;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::AppError;
use crate::pages::{field_error, page};
use crate::{now_unix, AppState};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "chronolock_session";
/// How long a session lasts.
pub const SESSION_SECS: i64 = 12 * 3600;
/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 10;

/// A logged-in administrator, extracted from the session cookie.
#[derive(Clone, Debug)]
pub struct Admin {
    /// Row id.
    pub id: i64,
    /// Login name.
    pub username: String,
    /// The session's CSRF token.
    pub csrf: String,
}

impl Admin {
    /// Checks a submitted CSRF token against the session's, in constant time.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), AppError> {
        let a = self.csrf.as_bytes();
        let b = submitted.as_bytes();
        let same =
            a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
        if same {
            Ok(())
        } else {
            Err(AppError::Forbidden(
                "the form is stale or came from another site; reload the page".into(),
            ))
        }
    }
}

/// Why a request has no admin.
pub enum AuthRejection {
    /// An API call: 401.
    Api,
    /// A page: go log in.
    Login,
    /// A page, and there is no admin yet: go to setup.
    Setup,
    /// The database failed.
    Error(AppError),
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        match self {
            AuthRejection::Api => AppError::Unauthorized.into_response(),
            AuthRejection::Login => Redirect::to("/login").into_response(),
            AuthRejection::Setup => Redirect::to("/setup").into_response(),
            AuthRejection::Error(e) => e.into_response(),
        }
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let api = parts.uri.path().starts_with("/api/");
        if let Some(token) = session_token(&parts.headers) {
            let row: Option<(i64, String, String)> = sqlx::query_as(
                "SELECT a.id, a.username, s.csrf_token FROM sessions s JOIN admins a ON a.id = s.admin_id \
                 WHERE s.token_hash = $1 AND s.expires_at > $2",
            )
            .bind(hash_token(&token))
            .bind(now_unix())
            .fetch_optional(state.db.pool())
            .await
            .map_err(|e| AuthRejection::Error(e.into()))?;
            if let Some((id, username, csrf)) = row {
                return Ok(Admin { id, username, csrf });
            }
        }
        if api {
            return Err(AuthRejection::Api);
        }
        match admin_count(state).await {
            Ok(0) => Err(AuthRejection::Setup),
            Ok(_) => Err(AuthRejection::Login),
            Err(e) => Err(AuthRejection::Error(e)),
        }
    }
}

pub(crate) fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == SESSION_COOKIE)
        .map(|c| c.value().to_string())
}

pub(crate) fn hash_token(token: &str) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(token.as_bytes()))
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    data_encoding::BASE64URL_NOPAD.encode(&bytes)
}

async fn admin_count(state: &AppState) -> Result<i64, AppError> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM admins")
        .fetch_one(state.db.pool())
        .await?;
    Ok(n)
}

/// Hashes a password (argon2id, a random salt, the crate's default cost).
pub fn hash_password(password: &str) -> Result<String, AppError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AppError::Internal(format!("password hashing failed: {e}")))
}

pub(crate) fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Checks a new admin's name and password; the error names the field.
pub(crate) fn validate_new_admin(
    username: &str,
    password: &str,
    confirm: &str,
) -> Result<(), (&'static str, String)> {
    if username.is_empty()
        || username.len() > 64
        || !username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
    {
        return Err((
            "username",
            "1 to 64 letters, digits, '.', '_', '-' or '@'".into(),
        ));
    }
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err((
            "password",
            format!("at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    if password != confirm {
        return Err(("confirm", "the two passwords differ".into()));
    }
    Ok(())
}

/// Creates the first admin, unless one exists (checked atomically, also across processes).
/// Returns the new admin's id, or `None` if setup was already done.
pub async fn create_first_admin(
    state: &AppState,
    username: &str,
    password: &str,
) -> Result<Option<i64>, AppError> {
    let hash = hash_password(password)?;
    let mut tx = state.db.pool().begin().await?;
    let claimed = sqlx::query(
        "INSERT INTO settings (key, value) VALUES ('setup_done', $1) ON CONFLICT (key) DO NOTHING",
    )
    .bind(now_unix().to_string())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if claimed != 1 {
        return Ok(None);
    }
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO admins (username, password_hash, created_at) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(username)
    .bind(hash)
    .bind(now_unix())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(id))
}

/// Creates the first admin from the environment (`CHRONOLOCK_ADMIN_PASSWORD`, and
/// `CHRONOLOCK_ADMIN_USER`, default `admin`) if there is none yet.
pub async fn admin_from_env(state: &AppState) -> Result<(), AppError> {
    let Ok(password) = std::env::var("CHRONOLOCK_ADMIN_PASSWORD") else {
        return Ok(());
    };
    let username = std::env::var("CHRONOLOCK_ADMIN_USER").unwrap_or_else(|_| "admin".into());
    validate_new_admin(&username, &password, &password).map_err(|(field, m)| {
        AppError::BadRequest(format!("CHRONOLOCK_ADMIN_{}: {m}", field.to_uppercase()))
    })?;
    if create_first_admin(state, &username, &password)
        .await?
        .is_some()
    {
        tracing::info!(%username, "first admin created from the environment");
    }
    Ok(())
}

/// Sets a new password for admin `username` (`chronolock admin reset-password`, for the admin
/// who forgot it) and ends their sessions; false when there is no such admin.
pub async fn reset_password(
    state: &AppState,
    username: &str,
    password: &str,
) -> Result<bool, AppError> {
    validate_new_admin(username, password, password)
        .map_err(|(field, m)| AppError::BadRequest(format!("{field}: {m}")))?;
    let owned = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || hash_password(&owned))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))??;
    let row: Option<(i64,)> =
        sqlx::query_as("UPDATE admins SET password_hash = $1 WHERE username = $2 RETURNING id")
            .bind(hash)
            .bind(username)
            .fetch_optional(state.db.pool())
            .await?;
    let Some((id,)) = row else {
        return Ok(false);
    };
    sqlx::query("DELETE FROM sessions WHERE admin_id = $1")
        .bind(id)
        .execute(state.db.pool())
        .await?;
    Ok(true)
}

async fn start_session(state: &AppState, admin_id: i64) -> Result<HeaderValue, AppError> {
    let token = random_token();
    let now = now_unix();
    sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(state.db.pool())
        .await?;
    sqlx::query("INSERT INTO sessions (token_hash, admin_id, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(hash_token(&token))
        .bind(admin_id)
        .bind(random_token())
        .bind(now)
        .bind(now + SESSION_SECS)
        .execute(state.db.pool())
        .await?;
    let secure = if state.https { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_SECS}{secure}"
    );
    HeaderValue::from_str(&cookie).map_err(|e| AppError::Internal(e.to_string()))
}

/// Refuses a POST whose `Origin` names another site than the one it was sent to.
pub fn check_origin(headers: &HeaderMap) -> Result<(), AppError> {
    let (Some(origin), Some(host)) = (headers.get(ORIGIN), headers.get(HOST)) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let host = host.to_str().unwrap_or("");
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    if origin_host == host {
        Ok(())
    } else {
        Err(AppError::Forbidden(format!(
            "cross-site request from {origin} refused"
        )))
    }
}

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/setup", get(setup_page).post(setup_submit))
        .route("/login", get(login_page).post(login_submit))
        .route("/logout", post(logout))
        .route("/api/me", get(me))
}

#[derive(Deserialize, Default)]
struct SetupForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

fn setup_form(username: &str, error: Option<(&str, &str)>) -> Markup {
    page(
        "Set up chronolock",
        None,
        html! {
            p { "Create the first administrator. You can add more later." }
            form method="post" action="/setup" {
                label for="username" { "Username" }
                input id="username" name="username" value=(username) autocomplete="username" required;
                (field_error(error, "username"))
                label for="password" { "Password (at least " (MIN_PASSWORD_LEN) " characters)" }
                input id="password" name="password" type="password" autocomplete="new-password" required;
                (field_error(error, "password"))
                label for="confirm" { "Password again" }
                input id="confirm" name="confirm" type="password" autocomplete="new-password" required;
                (field_error(error, "confirm"))
                button type="submit" { "Create administrator" }
            }
        },
    )
}

async fn setup_page(State(state): State<AppState>) -> Result<Response, AppError> {
    if admin_count(&state).await? > 0 {
        return Ok(Redirect::to("/login").into_response());
    }
    Ok(setup_form("admin", None).into_response())
}

async fn setup_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SetupForm>,
) -> Result<Response, AppError> {
    check_origin(&headers)?;
    if let Err((field, message)) = validate_new_admin(&form.username, &form.password, &form.confirm)
    {
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            setup_form(&form.username, Some((field, &message))),
        )
            .into_response());
    }
    match create_first_admin(&state, &form.username, &form.password).await? {
        Some(id) => {
            let cookie = start_session(&state, id).await?;
            Ok(([(SET_COOKIE, cookie)], Redirect::to("/")).into_response())
        }
        None => Ok(Redirect::to("/login").into_response()),
    }
}

#[derive(Deserialize, Default)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

fn login_form(username: &str, error: Option<(&str, &str)>) -> Markup {
    page(
        "Log in",
        None,
        html! {
            form method="post" action="/login" {
                label for="username" { "Username" }
                input id="username" name="username" value=(username) autocomplete="username" required;
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                (field_error(error, "password"))
                button type="submit" { "Log in" }
            }
        },
    )
}

async fn login_page(State(state): State<AppState>) -> Result<Response, AppError> {
    if admin_count(&state).await? == 0 {
        return Ok(Redirect::to("/setup").into_response());
    }
    Ok(login_form("", None).into_response())
}

/// The client's address, when the server knows it (not in requests made in-process).
///
/// Behind a reverse proxy on this host (`--public-url`, the connection from loopback), the
/// client is the last address the proxy appended to `X-Forwarded-For`; anything before it came
/// from the client and is not trusted. Otherwise the header is ignored.
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl axum::extract::FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let forwarded = || {
            parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next_back()
                .and_then(|ip| ip.trim().parse().ok())
        };
        Ok(ClientIp(match peer {
            Some(ip) if state.behind_proxy && ip.is_loopback() => forwarded().or(Some(ip)),
            other => other,
        }))
    }
}

async fn login_submit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, AppError> {
    check_origin(&headers)?;
    let now = crate::now_micros() / 1000;
    let mut keys = vec![crate::throttle::Key::User(form.username.clone())];
    keys.extend(ip.map(crate::throttle::Key::Ip));
    // Throttled before any hash is computed: a flood costs the server next to nothing. The
    // attempt counts as a failure until the password proves right.
    if let Err(wait) = state.logins.attempt(&keys, now) {
        let message = format!("too many failed logins: try again in {wait} s");
        let form = login_form(&form.username, Some(("password", message.as_str())));
        let retry = HeaderValue::from(wait);
        return Ok((
            StatusCode::TOO_MANY_REQUESTS,
            [(axum::http::header::RETRY_AFTER, retry)],
            form,
        )
            .into_response());
    }
    let row: Option<(i64, String)> =
        sqlx::query_as("SELECT id, password_hash FROM admins WHERE username = $1")
            .bind(&form.username)
            .fetch_optional(state.db.pool())
            .await?;
    // Verify against a real hash even for unknown users, so timing does not reveal names; on
    // the blocking pool, a few at a time, so that logins never stall other requests.
    let hash = row
        .as_ref()
        .map_or_else(|| dummy_hash().to_owned(), |(_, h)| h.clone());
    let password = form.password.clone();
    let ok = state
        .logins
        .check(move || verify_password(&password, &hash))
        .await
        && row.is_some();
    match row {
        Some((id, _)) if ok => {
            state.logins.succeeded(&keys);
            let cookie = start_session(&state, id).await?;
            Ok(([(SET_COOKIE, cookie)], Redirect::to("/")).into_response())
        }
        _ => {
            // Already counted as a failure by `attempt`.
            Ok((
                StatusCode::UNAUTHORIZED,
                login_form(
                    &form.username,
                    Some(("password", "wrong username or password")),
                ),
            )
                .into_response())
        }
    }
}

/// A real argon2 hash of a random password, made once, verified against for unknown usernames.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&random_token()).unwrap_or_default())
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    check_origin(&headers)?;
    admin.check_csrf(&form.csrf)?;
    if let Some(token) = session_token(&headers) {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(hash_token(&token))
            .execute(state.db.pool())
            .await?;
    }
    let secure = if state.https { "; Secure" } else { "" };
    let clear = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}");
    let clear = HeaderValue::from_str(&clear).map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(([(SET_COOKIE, clear)], Redirect::to("/login")).into_response())
}

/// Who is logged in, and the CSRF token for JSON calls.
async fn me(admin: Admin) -> Json<serde_json::Value> {
    Json(json!({"username": admin.username, "csrf_token": admin.csrf}))
}
