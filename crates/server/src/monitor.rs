//! What the admin watches: the dashboard of doors, the access log, charts per door.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};

use crate::auth::Admin;
use crate::error::AppError;
use crate::pages::page;
use crate::AppState;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(dashboard))
}

async fn dashboard(State(state): State<AppState>, admin: Admin) -> Result<Markup, AppError> {
    let key = data_encoding::HEXLOWER.encode(&state.site_public_key);
    Ok(page(
        "Dashboard",
        Some(&admin),
        html! {
            p { "Database: " (state.db.backend().as_str()) }
            p { "Site public key (doors verify allow-lists with it): " code { (key) } }
        },
    ))
}
