//! The setup page a virtual door serves while in setup mode, as the ESP32 serves it from its
//! access point: the same page and form handling (`chronolock_device::setup`), over HTTP on a
//! loopback port instead of a Wi-Fi network of its own.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chronolock_device::setup;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::door::Command;

/// Serves the page until the task is aborted (the door paired or lost power).
pub async fn serve(listener: TcpListener, door: mpsc::UnboundedSender<Command>) {
    let app = Router::new()
        .route("/", get(page))
        .route("/setup", post(submit))
        .with_state(door);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!("setup page stopped: {e}");
    }
}

async fn page() -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Html(setup::PAGE)).into_response()
}

async fn submit(
    State(door): State<mpsc::UnboundedSender<Command>>,
    body: axum::body::Bytes,
) -> Response {
    let parsed = setup::parse_form(&body);
    let mut page = String::new();
    // Writing to a String cannot fail.
    let _ = setup::write_answer(&mut page, parsed.as_ref());
    match parsed {
        Ok(form) => {
            if door.send(Command::Setup(Box::new(form))).is_err() {
                return (StatusCode::SERVICE_UNAVAILABLE, "the door is off").into_response();
            }
            Html(page).into_response()
        }
        Err(_) => (StatusCode::UNPROCESSABLE_ENTITY, Html(page)).into_response(),
    }
}
