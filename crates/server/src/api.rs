//! The JSON API for scripts and integrations: the dashboard's data, the access log, the charts'
//! series, and an OpenAPI 3.1 document describing all of it (`GET /api/openapi.json`).
//!
//! Every route needs an API token or an admin session ([`ApiRead`] answers 401 without one). Query
//! parameters are checked strictly: an unknown, repeated or malformed one gives 400 with a
//! message naming it, rather than being ignored. The document is generated from the handlers'
//! `#[utoipa::path]` annotations, so it cannot drift from their parameters and types.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::auth::SESSION_COOKIE;
use crate::error::AppError;
use crate::monitor::{
    self, int_param, query_params, BatteryPoint, ClockPoint, DoorStatus, EventFilter, EventQuery,
    LogEvent, Overview, FILTER_PARAMS, MAX_EVENTS_LIMIT,
};
use crate::tokens::ApiRead;
use crate::{now_unix, AppState};

/// Events `GET /api/events` returns when no `limit` is given.
const DEFAULT_LIMIT: i64 = 100;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/doors", get(doors))
        .route("/api/doors/{id}", get(door))
        .route("/api/doors/{id}/battery", get(battery))
        .route("/api/doors/{id}/clock", get(clock))
        .route("/api/events", get(events))
        .route("/api/openapi.json", get(openapi))
}

/// The OpenAPI document of the JSON API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::api_admin::AdminApiDoc::openapi());
    doc
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "chronolock",
        description = "The admin JSON API of a chronolock server. Every call but `/healthz` needs \
                       an API token (made at `/tokens`; `Authorization: Bearer clk_…`; a read \
                       token may only GET) or an admin session (log in at `/login`, send the \
                       session cookie, and for changes the session's CSRF token from `/api/me` \
                       as `X-CSRF-Token`). Changes answer 422 with `{error, field}` for a \
                       refused value and 409 for a taken name."
    ),
    paths(
        elsewhere::healthz,
        elsewhere::me,
        doors,
        door,
        events,
        battery,
        clock,
        openapi
    ),
    modifiers(&SessionCookie),
    security(("session" = []), ("token" = [])),
    tags(
        (name = "doors", description = "Doors and what their devices last reported"),
        (name = "events", description = "The access log"),
        (name = "server", description = "The server itself")
    )
)]
struct ApiDoc;

/// The session cookie as the document's security scheme.
struct SessionCookie;

impl Modify for SessionCookie {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                SESSION_COOKIE,
                "The admin session, set by logging in at /login.",
            ))),
        );
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                utoipa::openapi::security::HttpBuilder::new()
                    .scheme(utoipa::openapi::security::HttpAuthScheme::Bearer)
                    .description(Some("An API token made at /tokens (clk_…)."))
                    .build(),
            ),
        );
    }
}

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong; for a bad parameter it names the parameter.
    pub error: String,
}

/// Routes served by other modules, described here so the document covers every JSON route.
mod elsewhere {
    #![allow(dead_code)] // these only describe routes; the handlers live in lib.rs and auth.rs

    use serde::Serialize;
    use utoipa::ToSchema;

    use super::ErrorBody;

    /// `GET /healthz`'s answer.
    #[derive(Serialize, ToSchema)]
    pub struct Health {
        /// `ok`.
        pub status: String,
        /// `sqlite` or `postgres`.
        pub database: String,
    }

    /// `GET /api/me`'s answer.
    #[derive(Serialize, ToSchema)]
    pub struct Me {
        /// The admin's login name.
        pub username: String,
        /// The session's CSRF token: send it as `X-CSRF-Token` with state-changing calls.
        pub csrf_token: String,
    }

    /// Liveness and readiness; needs no login.
    #[utoipa::path(
        get,
        path = "/healthz",
        tag = "server",
        security(()),
        responses(
            (status = 200, description = "The server and its database answer", body = Health),
            (status = 500, description = "The database does not answer", body = ErrorBody)
        )
    )]
    pub fn healthz() {}

    /// Who is logged in, and the CSRF token for JSON calls.
    #[utoipa::path(
        get,
        path = "/api/me",
        tag = "server",
        responses(
            (status = 200, description = "The logged-in admin", body = Me),
            (status = 401, description = "Not logged in", body = ErrorBody)
        )
    )]
    pub fn me() {}
}

/// A door id from the path, or 400 naming the parameter.
fn door_id(raw: &str) -> Result<i64, AppError> {
    raw.parse::<i64>()
        .map_err(|_| AppError::BadRequest(format!("path parameter `id`: `{raw}` is not a door id")))
}

/// Every door with what its device last reported, and the dashboard's counts.
#[utoipa::path(
    get,
    path = "/api/doors",
    tag = "doors",
    responses(
        (status = 200, description = "The dashboard's data", body = Overview),
        (status = 401, description = "Not logged in", body = ErrorBody)
    )
)]
async fn doors(State(state): State<AppState>, _c: ApiRead) -> Result<Json<Overview>, AppError> {
    Ok(Json(monitor::overview(&state, now_unix()).await?))
}

/// One door with what its device last reported.
#[utoipa::path(
    get,
    path = "/api/doors/{id}",
    tag = "doors",
    params(("id" = i64, Path, description = "The door's id")),
    responses(
        (status = 200, description = "The door", body = DoorStatus),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 404, description = "No such door", body = ErrorBody)
    )
)]
async fn door(
    State(state): State<AppState>,
    _c: ApiRead,
    Path(id): Path<String>,
) -> Result<Json<DoorStatus>, AppError> {
    Ok(Json(
        monitor::door(&state, door_id(&id)?, now_unix()).await?,
    ))
}

/// A page of the access log.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    /// The events, newest first.
    pub events: Vec<LogEvent>,
    /// Pass this as `before` for the next, older page; `null` when there is none.
    pub next_before: Option<i64>,
}

/// The access log, newest first, filtered; page with `before`.
#[utoipa::path(
    get,
    path = "/api/events",
    tag = "events",
    params(
        EventQuery,
        ("before" = Option<i64>, Query, description = "Only events older than this id: the `next_before` of the previous page"),
        ("limit" = Option<i64>, Query, description = "At most this many events, 1 to 1000; default 100", minimum = 1, maximum = 1000)
    ),
    responses(
        (status = 200, description = "The events", body = EventPage),
        (status = 400, description = "A query parameter is unknown or malformed; the message names it", body = ErrorBody),
        (status = 401, description = "Not logged in", body = ErrorBody)
    )
)]
async fn events(
    State(state): State<AppState>,
    _c: ApiRead,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<EventPage>, AppError> {
    let mut known = FILTER_PARAMS.to_vec();
    known.extend(["before", "limit"]);
    let params = query_params(query, &known)?;
    let before = int_param(&params, "before", 1..=i64::MAX)?;
    let limit = int_param(&params, "limit", 1..=MAX_EVENTS_LIMIT as i64)?.unwrap_or(DEFAULT_LIMIT);
    let filter = EventFilter::parse(&state, &EventQuery::from_params(&params)).await?;
    let (events, next_before) =
        monitor::events_page(&state, &filter, before, limit as usize).await?;
    Ok(Json(EventPage {
        events,
        next_before,
    }))
}

/// A door's battery reports.
#[derive(Serialize, ToSchema)]
pub struct BatterySeries {
    /// The door's id.
    pub door_id: i64,
    /// The series starts here (Unix seconds).
    pub since: i64,
    /// The reports, oldest first (at most 5000, the newest).
    pub points: Vec<BatteryPoint>,
}

/// A door's clock samples.
#[derive(Serialize, ToSchema)]
pub struct ClockSeries {
    /// The door's id.
    pub door_id: i64,
    /// The series starts here (Unix seconds).
    pub since: i64,
    /// The samples, oldest first (at most 5000, the newest).
    pub points: Vec<ClockPoint>,
}

/// The door's id and the start of its series, from `days` (default `default_days`).
async fn series_window(
    state: &AppState,
    id: &str,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    default_days: i64,
    max_days: i64,
) -> Result<(i64, i64), AppError> {
    let id = door_id(id)?;
    let params = query_params(query, &["days"])?;
    let days = int_param(&params, "days", 1..=max_days)?.unwrap_or(default_days);
    // 404 for a door that does not exist, rather than an empty series.
    monitor::door(state, id, 0).await?;
    Ok((id, now_unix() - days * 86_400))
}

/// A door's battery reports (kind `report` events), oldest first.
#[utoipa::path(
    get,
    path = "/api/doors/{id}/battery",
    tag = "doors",
    params(
        ("id" = i64, Path, description = "The door's id"),
        ("days" = Option<i64>, Query, description = "How many days back, 1 to 366; default 90", minimum = 1, maximum = 366)
    ),
    responses(
        (status = 200, description = "The series", body = BatterySeries),
        (status = 400, description = "A parameter is unknown or malformed; the message names it", body = ErrorBody),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 404, description = "No such door", body = ErrorBody)
    )
)]
async fn battery(
    State(state): State<AppState>,
    _c: ApiRead,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<BatterySeries>, AppError> {
    let (door_id, since) = series_window(&state, &id, query, monitor::BATTERY_DAYS, 366).await?;
    let points = monitor::battery_series(&state, door_id, since).await?;
    Ok(Json(BatterySeries {
        door_id,
        since,
        points,
    }))
}

/// A door's clock samples (one per sync with a valid device clock), oldest first.
#[utoipa::path(
    get,
    path = "/api/doors/{id}/clock",
    tag = "doors",
    params(
        ("id" = i64, Path, description = "The door's id"),
        ("days" = Option<i64>, Query, description = "How many days back, 1 to 90; default 7", minimum = 1, maximum = 90)
    ),
    responses(
        (status = 200, description = "The series", body = ClockSeries),
        (status = 400, description = "A parameter is unknown or malformed; the message names it", body = ErrorBody),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 404, description = "No such door", body = ErrorBody)
    )
)]
async fn clock(
    State(state): State<AppState>,
    _c: ApiRead,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<ClockSeries>, AppError> {
    let (door_id, since) = series_window(&state, &id, query, monitor::CLOCK_DAYS, 90).await?;
    let points = monitor::clock_series(&state, door_id, since).await?;
    Ok(Json(ClockSeries {
        door_id,
        since,
        points,
    }))
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "server",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object),
        (status = 401, description = "Not logged in", body = ErrorBody)
    )
)]
async fn openapi(_c: ApiRead) -> Json<utoipa::openapi::OpenApi> {
    Json(openapi_document())
}
