//! Several administrators: the list, adding one, removing one, changing one's own password.
//!
//! - Every admin has the same rights; each has their own name, password and sessions, so that a
//!   person who leaves is removed without anyone else changing a password.
//! - Nobody removes themselves, and the last admin cannot be removed: the building is never left
//!   without someone who can change it (`chronolock admin reset-password` is for the one who
//!   forgot their password).
//! - Removing an admin ends their sessions at once. Changing one's password needs the current
//!   one (a session left open on a shared screen is not enough) and ends one's other sessions.
//! - Password hashing runs on the blocking pool behind the login semaphore; wrong current
//!   passwords count towards the same throttle as wrong logins.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};
use serde::Deserialize;

use crate::auth::{check_origin, hash_password, validate_new_admin, verify_password, Admin};
use crate::error::AppError;
use crate::pages::{field_error, page};
use crate::throttle::Key;
use crate::{now_unix, AppState};

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admins", get(list).post(add))
        .route("/admins/{id}/delete", post(remove))
        .route("/admins/password", post(change_password))
}

#[derive(Deserialize)]
struct AddForm {
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

#[derive(Deserialize)]
struct PasswordForm {
    csrf: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

/// A removal's form: carried out only with `confirm=yes` (the confirmation page's).
#[derive(Deserialize)]
struct RemoveForm {
    csrf: String,
    #[serde(default)]
    confirm: String,
}

/// Which form a message belongs to, and what it says.
enum Feedback<'a> {
    None,
    /// A field of the add form is wrong.
    Add(&'a str, &'a str),
    /// A field of the password form is wrong.
    Password(&'a str, &'a str),
    /// Something worked.
    Done(&'a str),
}

async fn list(State(state): State<AppState>, admin: Admin) -> Result<Markup, AppError> {
    render(&state, &admin, "", Feedback::None).await
}

async fn render(
    state: &AppState,
    admin: &Admin,
    username: &str,
    feedback: Feedback<'_>,
) -> Result<Markup, AppError> {
    let admins: Vec<(i64, String, i64, i64)> = sqlx::query_as(
        "SELECT a.id, a.username, a.created_at, \
         (SELECT COUNT(*) FROM sessions s WHERE s.admin_id = a.id AND s.expires_at > $1) \
         FROM admins a ORDER BY a.username",
    )
    .bind(now_unix())
    .fetch_all(state.db.pool())
    .await?;
    let add_error = match feedback {
        Feedback::Add(f, m) => Some((f, m)),
        _ => None,
    };
    let password_error = match feedback {
        Feedback::Password(f, m) => Some((f, m)),
        _ => None,
    };
    let single = admins.len() <= 1;
    Ok(page(
        "Administrators",
        Some(admin),
        html! {
            @if let Feedback::Done(message) = feedback { p role="status" { (message) } }
            p { "Every administrator can change everything here. Give each person their own name, and remove them when they leave." }
            table {
                thead { tr { th { "Name" } th { "Added" } th { "Open sessions" } th {} } }
                tbody {
                    @for (id, name, created, sessions) in &admins {
                        tr {
                            td { (name) @if *id == admin.id { " " span class="muted" { "(you)" } } }
                            td { (created_date(*created)) }
                            td { (sessions) }
                            td {
                                @if *id != admin.id && !single {
                                    form method="post" action={ "/admins/" (id) "/delete" } {
                                        input type="hidden" name="csrf" value=(admin.csrf);
                                        button type="submit" aria-label={ "Remove " (name) } { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h3 { "Add an administrator" }
            form method="post" action="/admins" {
                input type="hidden" name="csrf" value=(admin.csrf);
                label for="username" { "Username" }
                input id="username" name="username" value=(username) autocomplete="off" required;
                (field_error(add_error, "username"))
                label for="password" { "Password (at least " (crate::auth::MIN_PASSWORD_LEN) " characters)" }
                input id="password" name="password" type="password" autocomplete="new-password" required;
                (field_error(add_error, "password"))
                label for="confirm" { "Password again" }
                input id="confirm" name="confirm" type="password" autocomplete="new-password" required;
                (field_error(add_error, "confirm"))
                button type="submit" { "Add administrator" }
            }
            h3 { "Change your password" }
            form method="post" action="/admins/password" {
                input type="hidden" name="csrf" value=(admin.csrf);
                label for="current" { "Current password" }
                input id="current" name="current" type="password" autocomplete="current-password" required;
                (field_error(password_error, "current"))
                label for="new-password" { "New password" }
                input id="new-password" name="password" type="password" autocomplete="new-password" required;
                (field_error(password_error, "password"))
                label for="new-confirm" { "New password again" }
                input id="new-confirm" name="confirm" type="password" autocomplete="new-password" required;
                (field_error(password_error, "confirm"))
                button type="submit" { "Change password" }
            }
        },
    ))
}

const TAKEN: &str = "there is already an administrator of that name";

/// The page again, with the message beside the field that is wrong: 422.
async fn refused(
    state: &AppState,
    admin: &Admin,
    username: &str,
    feedback: Feedback<'_>,
) -> Result<Response, AppError> {
    let page = render(state, admin, username, feedback).await?;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
}

fn created_date(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Hashes `password` on the blocking pool, behind the login semaphore.
async fn hash_off_thread(state: &AppState, password: &str) -> Result<String, AppError> {
    let owned = password.to_owned();
    state
        .logins
        .blocking(move || hash_password(&owned))
        .await
        .ok_or_else(|| AppError::Internal("password hashing did not run".into()))?
}

async fn add(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Form(form): Form<AddForm>,
) -> Result<Response, AppError> {
    check_origin(&headers)?;
    admin.check_csrf(&form.csrf)?;
    let username = form.username.trim();
    if let Err((field, message)) = validate_new_admin(username, &form.password, &form.confirm) {
        return refused(&state, &admin, username, Feedback::Add(field, &message)).await;
    }
    let taken: Option<(i64,)> = sqlx::query_as("SELECT id FROM admins WHERE username = $1")
        .bind(username)
        .fetch_optional(state.db.pool())
        .await?;
    if taken.is_some() {
        return refused(&state, &admin, username, Feedback::Add("username", TAKEN)).await;
    }
    let hash = hash_off_thread(&state, &form.password).await?;
    let inserted = sqlx::query(
        "INSERT INTO admins (username, password_hash, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (username) DO NOTHING",
    )
    .bind(username)
    .bind(hash)
    .bind(now_unix())
    .execute(state.db.pool())
    .await?
    .rows_affected();
    if inserted != 1 {
        return refused(&state, &admin, username, Feedback::Add("username", TAKEN)).await;
    }
    tracing::info!(by = %admin.username, added = %username, "administrator added");
    let message = format!("{username} can now log in.");
    Ok(render(&state, &admin, "", Feedback::Done(&message))
        .await?
        .into_response())
}

async fn remove(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(form): Form<RemoveForm>,
) -> Result<Response, AppError> {
    check_origin(&headers)?;
    admin.check_csrf(&form.csrf)?;
    if id == admin.id {
        return Err(AppError::Forbidden(
            "you cannot remove yourself; another administrator can".into(),
        ));
    }
    if form.confirm != "yes" {
        let name: Option<(String,)> = sqlx::query_as("SELECT username FROM admins WHERE id = $1")
            .bind(id)
            .fetch_optional(state.db.pool())
            .await?;
        let Some((name,)) = name else {
            return Err(AppError::NotFound);
        };
        return Ok(crate::pages::confirm_page(
            &admin,
            &format!("Remove {name}?"),
            maud::html! { (name) " can no longer log in and is logged out everywhere." },
            &format!("/admins/{id}/delete"),
            "/admins",
            &[("confirm", "yes")],
        )
        .into_response());
    }
    let mut tx = state.db.pool().begin().await?;
    if state.db.backend() == crate::db::Backend::Postgres {
        // Two admins removing each other at once: the second waits and then sees one left.
        // (SQLite lets one writer at a time anyway.)
        sqlx::query("LOCK TABLE admins IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
    }
    let name: Option<(String,)> = sqlx::query_as("SELECT username FROM admins WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some((name,)) = name else {
        return Err(AppError::NotFound);
    };
    // Sessions go first and explicitly: the removed admin is logged out everywhere, whether or
    // not the database enforces the foreign key's cascade.
    sqlx::query("DELETE FROM sessions WHERE admin_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    // Never the last one.
    let removed =
        sqlx::query("DELETE FROM admins WHERE id = $1 AND (SELECT COUNT(*) FROM admins) > 1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if removed != 1 {
        return Err(AppError::Forbidden(
            "the last administrator cannot be removed".into(),
        ));
    }
    tx.commit().await?;
    tracing::info!(by = %admin.username, removed = %name, "administrator removed");
    let message = format!("{name} is removed and logged out everywhere.");
    Ok(render(&state, &admin, "", Feedback::Done(&message))
        .await?
        .into_response())
}

async fn change_password(
    State(state): State<AppState>,
    admin: Admin,
    crate::auth::ClientIp(ip): crate::auth::ClientIp,
    headers: HeaderMap,
    Form(form): Form<PasswordForm>,
) -> Result<Response, AppError> {
    check_origin(&headers)?;
    admin.check_csrf(&form.csrf)?;
    if let Err((field, message)) =
        validate_new_admin(&admin.username, &form.password, &form.confirm)
    {
        return refused(&state, &admin, "", Feedback::Password(field, &message)).await;
    }
    let now = crate::now_micros() / 1000;
    let mut keys = vec![Key::User(admin.username.clone())];
    keys.extend(ip.map(Key::Ip));
    if let Err(wait) = state.logins.attempt(&keys, now) {
        let message = format!("too many wrong passwords: try again in {wait} s");
        let mut response =
            refused(&state, &admin, "", Feedback::Password("current", &message)).await?;
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(wait),
        );
        return Ok(response);
    }
    let (hash,): (String,) = sqlx::query_as("SELECT password_hash FROM admins WHERE id = $1")
        .bind(admin.id)
        .fetch_one(state.db.pool())
        .await?;
    let current = form.current.clone();
    if !state
        .logins
        .check(move || verify_password(&current, &hash))
        .await
    {
        let feedback = Feedback::Password("current", "that is not your current password");
        return refused(&state, &admin, "", feedback).await;
    }
    state.logins.succeeded(&keys);
    let hash = hash_off_thread(&state, &form.password).await?;
    let mut tx = state.db.pool().begin().await?;
    sqlx::query("UPDATE admins SET password_hash = $1 WHERE id = $2")
        .bind(hash)
        .bind(admin.id)
        .execute(&mut *tx)
        .await?;
    // Every other session of this admin ends; this one goes on.
    let token = crate::auth::session_token(&headers).unwrap_or_default();
    sqlx::query("DELETE FROM sessions WHERE admin_id = $1 AND token_hash <> $2")
        .bind(admin.id)
        .bind(crate::auth::hash_token(&token))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(admin = %admin.username, "password changed");
    Ok(render(
        &state,
        &admin,
        "",
        Feedback::Done("Your password is changed; your other sessions have ended."),
    )
    .await?
    .into_response())
}
