//! Logging in for the server tests that call the admin UI or API through the router (kept out
//! of `common`, which other crates' tests include and which has no router dependencies there).

use chronolock_server::AppState;

/// The app and a logged-in admin's session cookie (`name=value`): the first admin, `admin`,
/// made with `password`.
pub async fn login(state: &AppState, password: &str) -> (axum::Router, String) {
    use axum::body::Body;
    use axum::http::{header, Request};
    use tower::ServiceExt;

    chronolock_server::auth::create_first_admin(state, "admin", password)
        .await
        .expect("database")
        .expect("no admin yet");
    let app = chronolock_server::router(state.clone());
    let r = app
        .clone()
        .oneshot(
            Request::builder()
                .method("POST")
                .uri("/login")
                .header(header::HOST, "localhost")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!(
                    "username=admin&password={}",
                    password.replace(' ', "+")
                )))
                .expect("request"),
        )
        .await
        .expect("login answers");
    let cookie = r
        .headers()
        .get(header::SET_COOKIE)
        .expect("a session cookie")
        .to_str()
        .expect("ASCII cookie")
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    (app, cookie)
}
