//! The JSON API's admin actions: everything the admin UI changes — the site, doors and their
//! pairing codes, people with their cards and keypad codes, groups, schedules, holidays, rules,
//! webhooks and the lockdown — for scripts and member systems.
//!
//! Reads need [`ApiRead`] (a token of either scope, or a session); changes need [`ApiWrite`] (a
//! `write` token, or a session that sends `X-CSRF-Token`). Bodies are JSON and checked strictly:
//! an unknown field is refused, and a value the UI would refuse is refused here with the same
//! message, as `422 {"error", "field"}`. A name that is taken is `409`. Every change that can
//! alter a door's list recompiles the site's doors before the answer, as the UI does, so the
//! doors' watches learn of it within seconds.
//!
//! Ids in paths are numbers; an id that names nothing on the site is `404`.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::ErrorBody;
use crate::directory::{self, RuleFilter, SecretKind, Site};
use crate::error::AppError;
use crate::model::{self, ModelError, Subject};
use crate::tokens::{ApiRead, ApiWrite};
use crate::AppState;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/site", get(site_get).put(site_put))
        .route("/api/doors", post(door_create))
        .route(
            "/api/doors/{id}",
            axum::routing::patch(door_update).delete(door_delete),
        )
        .route("/api/doors/{id}/pairing-code", post(door_pairing_code))
        .route("/api/people", get(people_list).post(person_create))
        .route(
            "/api/people/{id}",
            get(person_get).patch(person_update).delete(person_delete),
        )
        .route("/api/people/{id}/cards", post(card_add))
        .route(
            "/api/people/{id}/cards/{card_id}",
            axum::routing::delete(card_delete),
        )
        .route("/api/people/{id}/keypad", post(keypad_enrol))
        .route(
            "/api/people/{id}/keypad/{code_id}",
            axum::routing::delete(keypad_delete),
        )
        .route("/api/groups", get(groups_list).post(group_create))
        .route(
            "/api/groups/{id}",
            get(group_get).patch(group_update).delete(group_delete),
        )
        .route(
            "/api/groups/{id}/members/{person_id}",
            put(member_add).delete(member_remove),
        )
        .route("/api/schedules", get(schedules_list).post(schedule_create))
        .route(
            "/api/schedules/{id}",
            get(schedule_get)
                .patch(schedule_update)
                .delete(schedule_delete),
        )
        .route("/api/schedules/{id}/slots", post(slot_add))
        .route(
            "/api/schedules/{id}/slots/{slot_id}",
            axum::routing::delete(slot_delete),
        )
        .route("/api/holidays", get(holidays_list).post(holiday_create))
        .route("/api/holidays/{id}", axum::routing::delete(holiday_delete))
        .route("/api/rules", get(rules_list).post(rule_create))
        .route("/api/rules/{id}", get(rule_get).delete(rule_delete))
        .route("/api/webhooks", get(webhooks_list).post(webhook_create))
        .route("/api/webhooks/{id}", axum::routing::delete(webhook_delete))
        .route("/api/lockdown", get(lockdown_get).post(lockdown_set))
        .route("/api/import", post(import))
        .route("/api/export", get(export))
}

/// The document's paths for this module's routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        site_get, site_put,
        door_create, door_update, door_delete, door_pairing_code,
        people_list, person_create, person_get, person_update, person_delete,
        card_add, card_delete, keypad_enrol, keypad_delete,
        groups_list, group_create, group_get, group_update, group_delete, member_add, member_remove,
        schedules_list, schedule_create, schedule_get, schedule_update, schedule_delete,
        slot_add, slot_delete,
        holidays_list, holiday_create, holiday_delete,
        rules_list, rule_create, rule_get, rule_delete,
        webhooks_list, webhook_create, webhook_delete,
        lockdown_get, lockdown_set,
        import, export
    ),
    components(schemas(FieldErrorBody)),
    tags(
        (name = "site", description = "The site: name, time zone, NTP servers"),
        (name = "people", description = "People, their cards and keypad codes"),
        (name = "groups", description = "Groups of people"),
        (name = "schedules", description = "Weekly schedules in the site's local time, and holidays"),
        (name = "rules", description = "Who may open which door, how and when"),
        (name = "webhooks", description = "Where events are POSTed"),
        (name = "lockdown", description = "The site's lockdown"),
        (name = "transfer", description = "Import and export of people")
    )
)]
pub struct AdminApiDoc;

/// The body of a `422`: what is wrong, and with which field.
#[derive(Serialize, ToSchema)]
pub struct FieldErrorBody {
    /// What is wrong, as the UI says it.
    pub error: String,
    /// The request body's field it is about.
    pub field: String,
}

/// Why an admin call failed.
#[derive(Debug)]
pub enum ApiError {
    /// The server's usual errors (400, 401, 403, 404, 500).
    App(AppError),
    /// A field's value is refused: 422.
    Field(String, String),
    /// A name or code is taken, or the change conflicts with what exists: 409.
    Conflict(String),
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        ApiError::App(e)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::App(e.into())
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::NotFound => ApiError::App(AppError::NotFound),
            ModelError::Invalid { field, message }
                if message.contains("taken")
                    || message.contains("exists")
                    || message.contains("belongs to")
                    || message.contains("already") =>
            {
                ApiError::Conflict(format!("{field}: {message}"))
            }
            ModelError::Invalid { field, message } => ApiError::Field(field.into(), message),
            ModelError::Db(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                ApiError::Conflict("a row with this name or code exists".into())
            }
            other => ApiError::App(AppError::Internal(other.to_string())),
        }
    }
}

impl From<(&'static str, String)> for ApiError {
    fn from((field, message): (&'static str, String)) -> Self {
        ApiError::Field(field.into(), message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::App(e) => e.into_response(),
            ApiError::Field(field, message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"error": format!("{field}: {message}"), "field": field})),
            )
                .into_response(),
            ApiError::Conflict(message) => {
                (StatusCode::CONFLICT, Json(json!({"error": message}))).into_response()
            }
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A JSON body, or 400 saying what is wrong with it.
fn body<T>(json: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    json.map(|Json(v)| v)
        .map_err(|e| ApiError::App(AppError::BadRequest(format!("body: {}", e.body_text()))))
}

/// A positive id from the path, or 404.
fn id(raw: &str) -> ApiResult<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or(ApiError::App(AppError::NotFound))
}

/// The site the API works on (as the UI, the first one).
async fn the_site(state: &AppState) -> ApiResult<Site> {
    directory::first_site(state).await?.ok_or_else(|| {
        ApiError::Conflict("there is no site yet: create it with PUT /api/site".into())
    })
}

/// After a change that can alter lists: recompile the site's doors.
async fn recompile(state: &AppState, site: &Site) -> ApiResult<()> {
    model::site_changed(state, site.id).await?;
    Ok(())
}

fn created<T: Serialize>(value: T) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

// --- site --------------------------------------------------------------------------------------

/// The site.
#[derive(Serialize, ToSchema)]
pub struct SiteOut {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// IANA time zone, e.g. `Europe/Berlin`.
    pub timezone: String,
    /// The NTP servers its doors ask (`null`: the doors' built-in ones).
    pub ntp_servers: Option<Vec<String>>,
}

fn site_out(s: Site) -> SiteOut {
    SiteOut {
        id: s.id,
        name: s.name,
        timezone: s.timezone,
        ntp_servers: s
            .ntp_servers
            .map(|n| n.split_whitespace().map(str::to_string).collect()),
    }
}

/// The site, as created or changed.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteIn {
    /// Name, 1 to 100 characters.
    pub name: String,
    /// IANA time zone.
    pub timezone: String,
    /// Host names or addresses (`host` or `host:port`) for the doors' NTP; empty or absent: the
    /// doors' built-in ones.
    #[serde(default)]
    pub ntp_servers: Vec<String>,
}

/// The site.
#[utoipa::path(get, path = "/api/site", tag = "site",
    responses((status = 200, body = SiteOut), (status = 401, body = ErrorBody), (status = 409, description = "No site yet", body = ErrorBody)))]
async fn site_get(State(state): State<AppState>, _c: ApiRead) -> ApiResult<Json<SiteOut>> {
    Ok(Json(site_out(the_site(&state).await?)))
}

/// Creates the site, or changes it; its doors recompile (a new zone moves every schedule).
#[utoipa::path(put, path = "/api/site", tag = "site", request_body = SiteIn,
    responses((status = 200, body = SiteOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = FieldErrorBody)))]
async fn site_put(
    State(state): State<AppState>,
    _c: ApiWrite,
    json: Result<Json<SiteIn>, JsonRejection>,
) -> ApiResult<Json<SiteOut>> {
    let input = body(json)?;
    let servers = input.ntp_servers.join(" ");
    match directory::first_site(&state).await? {
        None => {
            let id = model::create_site(&state, &input.name, &input.timezone).await?;
            directory::set_site_ntp_servers(&state, id, &servers).await?;
        }
        Some(site) => {
            directory::set_site_ntp_servers(&state, site.id, &servers).await?;
            directory::update_site(&state, site.id, &input.name, &input.timezone).await?;
            recompile(&state, &site).await?;
        }
    }
    Ok(Json(site_out(the_site(&state).await?)))
}

// --- doors -------------------------------------------------------------------------------------

/// A door as made or changed here (its device's reports: `GET /api/doors/{id}`).
#[derive(Serialize, ToSchema)]
pub struct DoorOut {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Whether a door-position contact is fitted.
    pub contact_fitted: bool,
    /// Seconds the door may stand open before it is an alarm.
    pub held_open_s: i64,
}

async fn door_out(state: &AppState, site: &Site, door_id: i64) -> ApiResult<DoorOut> {
    let door = directory::door(state, site.id, door_id).await?;
    let settings = crate::positions::settings(state, door.id).await?;
    Ok(DoorOut {
        id: door.id,
        name: door.name,
        contact_fitted: settings.contact_fitted,
        held_open_s: settings.held_open_s,
    })
}

/// A new door.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DoorIn {
    /// Name, 1 to 100 characters.
    pub name: String,
}

/// Changes to a door; absent fields stay.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DoorPatch {
    /// Name, 1 to 100 characters.
    pub name: Option<String>,
    /// Whether a door-position contact is fitted.
    pub contact_fitted: Option<bool>,
    /// Seconds the door may stand open, 1 to 3600.
    pub held_open_s: Option<i64>,
}

/// Makes a door (pair a device with `POST /api/doors/{id}/pairing-code`).
#[utoipa::path(post, path = "/api/doors", tag = "doors", request_body = DoorIn,
    responses((status = 201, body = DoorOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = FieldErrorBody)))]
async fn door_create(
    State(state): State<AppState>,
    _c: ApiWrite,
    json: Result<Json<DoorIn>, JsonRejection>,
) -> ApiResult<Response> {
    let input = body(json)?;
    let site = the_site(&state).await?;
    let id = model::create_door(&state, site.id, &input.name).await?;
    model::refresh_door(&state, id, crate::now_unix()).await?;
    Ok(created(door_out(&state, &site, id).await?))
}

/// Renames a door, or changes its contact settings (the device takes them at its next sync).
#[utoipa::path(patch, path = "/api/doors/{id}", tag = "doors", request_body = DoorPatch,
    params(("id" = i64, Path, description = "The door's id")),
    responses((status = 200, body = DoorOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = FieldErrorBody)))]
async fn door_update(
    State(state): State<AppState>,
    _c: ApiWrite,
    Path(raw): Path<String>,
    json: Result<Json<DoorPatch>, JsonRejection>,
) -> ApiResult<Json<DoorOut>> {
    let input = body(json)?;
    let site = the_site(&state).await?;
    let door = door_out(&state, &site, id(&raw)?).await?;
    if input.contact_fitted.is_some() || input.held_open_s.is_some() {
        // The settings check the held-open range themselves (422 on `held_open_s`).
        let settings = crate::positions::Settings {
            contact_fitted: input.contact_fitted.unwrap_or(door.contact_fitted),
            held_open_s: input.held_open_s.unwrap_or(door.held_open_s),
        };
        crate::positions::set_settings(&state, site.id, door.id, settings).await?;
    }
    if let Some(name) = &input.name {
        directory::rename_door(&state, site.id, door.id, name).await?;
    }
    Ok(Json(door_out(&state, &site, door.id).await?))
}

/// Deletes a door with its rules and events; its device stops getting lists.
#[utoipa::path(delete, path = "/api/doors/{id}", tag = "doors",
    params(("id" = i64, Path, description = "The door's id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn door_delete(
    State(state): State<AppState>,
    c: ApiWrite,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    let site = the_site(&state).await?;
    let door_id = id(&raw)?;
    directory::delete_door(&state, site.id, door_id).await?;
    tracing::info!(by = %c.0.who(), door_id, "door deleted through the API");
    Ok(no_content())
}

/// A pairing code, shown once.
#[derive(Serialize, ToSchema)]
pub struct PairingCode {
    /// Enter it on the device.
    pub code: String,
    /// Valid until (Unix seconds); good for one device.
    pub expires_at: i64,
}

/// Makes a pairing code for the door (24 hours, one device); an older unused one stops working.
#[utoipa::path(post, path = "/api/doors/{id}/pairing-code", tag = "doors",
    params(("id" = i64, Path, description = "The door's id")),
    responses((status = 201, body = PairingCode), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn door_pairing_code(
    State(state): State<AppState>,
    _c: ApiWrite,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    let site = the_site(&state).await?;
    let door = directory::door(&state, site.id, id(&raw)?).await?;
    let code = crate::device::new_pairing_code(&state, door.id).await?;
    let expires_at = crate::now_unix() + crate::device::PAIRING_TTL_S;
    let mut answer = created(PairingCode { code, expires_at });
    answer.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(answer)
}

// --- people ------------------------------------------------------------------------------------

/// A person's e-mail, member number, note and expiry.
#[derive(Serialize, ToSchema)]
pub struct DetailsOut {
    /// E-mail.
    pub email: Option<String>,
    /// Member number (unique on the site).
    pub member_number: Option<String>,
    /// A note for the admins.
    pub note: Option<String>,
    /// The last day their credentials open doors (`YYYY-MM-DD`, site's zone).
    pub expiry: Option<String>,
}

fn details_out(d: directory::PersonDetails) -> DetailsOut {
    DetailsOut {
        email: d.email,
        member_number: d.member_number,
        note: d.note,
        expiry: d.expires_on.map(|e| e.to_string()),
    }
}

/// A person in the list.
#[derive(Serialize, ToSchema)]
pub struct PersonSummaryOut {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// E-mail, member number, note, expiry.
    #[serde(flatten)]
    pub details: DetailsOut,
    /// Number of cards.
    pub cards: i64,
    /// Number of keypad codes.
    pub keypad_codes: i64,
}

/// A card.
#[derive(Serialize, ToSchema)]
pub struct CardOut {
    /// Row id.
    pub id: i64,
    /// UID, upper-case hex.
    pub uid: String,
    /// A secure card (it proves its key); `false`: a UID-only card, which can be cloned.
    pub secure: bool,
}

/// A keypad user code: which secrets it has, never the secrets.
#[derive(Serialize, ToSchema)]
pub struct KeypadOut {
    /// Row id.
    pub id: i64,
    /// The user code.
    pub code: String,
    /// Whether a TOTP secret is enrolled.
    pub totp: bool,
    /// Whether HOTP backup codes were issued.
    pub hotp: bool,
}

/// A group, by id and name.
#[derive(Serialize, ToSchema)]
pub struct GroupRef {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
}

/// A person with their credentials and groups.
#[derive(Serialize, ToSchema)]
pub struct PersonOut {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// E-mail, member number, note, expiry.
    #[serde(flatten)]
    pub details: DetailsOut,
    /// Cards.
    pub cards: Vec<CardOut>,
    /// Keypad codes.
    pub keypad_codes: Vec<KeypadOut>,
    /// Groups.
    pub groups: Vec<GroupRef>,
}

async fn person_out(state: &AppState, site: &Site, person_id: i64) -> ApiResult<PersonOut> {
    let p = directory::person(state, site.id, person_id).await?;
    let cards = directory::cards(state, p.id).await?;
    let codes = directory::keypad_codes(state, p.id).await?;
    let groups = directory::groups_of(state, p.id).await?;
    Ok(PersonOut {
        id: p.id,
        name: p.name,
        details: details_out(p.details),
        cards: cards
            .into_iter()
            .map(|c| CardOut {
                id: c.id,
                uid: c.uid,
                secure: c.secure,
            })
            .collect(),
        keypad_codes: codes
            .into_iter()
            .map(|k| KeypadOut {
                id: k.id,
                code: k.code,
                totp: k.totp,
                hotp: k.hotp,
            })
            .collect(),
        groups: groups
            .into_iter()
            .map(|g| GroupRef {
                id: g.id,
                name: g.name,
            })
            .collect(),
    })
}

/// The `search` and `member_number` parameters of the people list, and no others.
fn people_params(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<(String, Option<String>)> {
    let params = crate::monitor::query_params(query, &["search", "member_number"])
        .map_err(AppError::from)?;
    Ok((
        params.get("search").cloned().unwrap_or_default(),
        params.get("member_number").cloned(),
    ))
}

/// The site's people, by name; `search` keeps those whose name contains it.
#[utoipa::path(get, path = "/api/people", tag = "people",
    params(
        ("search" = Option<String>, Query, description = "Part of the name, e-mail or member number, any case"),
        ("member_number" = Option<String>, Query, description = "Only the person with exactly this member number")
    ),
    responses((status = 200, body = Vec<PersonSummaryOut>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn people_list(
    State(state): State<AppState>,
    _c: ApiRead,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<Vec<PersonSummaryOut>>> {
    let (search, member_number) = people_params(query)?;
    let site = the_site(&state).await?;
    let mut people = directory::people(&state, site.id, &search).await?;
    if let Some(m) = member_number {
        people.retain(|p| p.details.member_number.as_deref() == Some(m.trim()));
    }
    Ok(Json(
        people
            .into_iter()
            .map(|p| PersonSummaryOut {
                id: p.id,
                name: p.name,
                details: details_out(p.details),
                cards: p.cards,
                keypad_codes: p.keypad_codes,
            })
            .collect(),
    ))
}

/// A new person, optionally with cards and groups.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonIn {
    /// Name, 1 to 100 characters.
    pub name: String,
    /// Card UIDs (hex, 4, 7 or 10 bytes).
    #[serde(default)]
    pub cards: Vec<String>,
    /// Ids of groups to join.
    #[serde(default)]
    pub groups: Vec<i64>,
    /// E-mail.
    pub email: Option<String>,
    /// Member number, unique on the site.
    pub member_number: Option<String>,
    /// A note for the admins.
    pub note: Option<String>,
    /// The last day their credentials open doors, `YYYY-MM-DD` in the site's zone.
    pub expiry: Option<String>,
}

/// Changes to a person; absent fields stay, and an empty string clears a detail.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonPatch {
    /// Name, 1 to 100 characters.
    pub name: Option<String>,
    /// E-mail.
    pub email: Option<String>,
    /// Member number, unique on the site.
    pub member_number: Option<String>,
    /// A note for the admins.
    pub note: Option<String>,
    /// The last day their credentials open doors, `YYYY-MM-DD` in the site's zone.
    pub expiry: Option<String>,
}

/// Adds a person, with their cards and groups in one step (all or nothing).
#[utoipa::path(post, path = "/api/people", tag = "people", request_body = PersonIn,
    responses((status = 201, body = PersonOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = FieldErrorBody)))]
async fn person_create(
    State(state): State<AppState>,
    _c: ApiWrite,
    json: Result<Json<PersonIn>, JsonRejection>,
) -> ApiResult<Response> {
    let input = body(json)?;
    let site = the_site(&state).await?;
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let details = directory::PersonDetails::parse(
        &opt(&input.email),
        &opt(&input.member_number),
        &opt(&input.note),
        &opt(&input.expiry),
    )?;
    for g in &input.groups {
        directory::group(&state, site.id, *g)
            .await
            .map_err(|_| ApiError::Field("groups".into(), format!("no group {g} on this site")))?;
    }
    let person = model::create_person(&state, site.id, &input.name).await?;
    let mut done: ApiResult<()> = directory::set_person_details(&state, site.id, person, &details)
        .await
        .map_err(ApiError::from);
    for uid in input.cards.iter().take_while(|_| done.is_ok()) {
        if let Err(e) = model::add_card(&state, person, uid).await {
            done = Err(e.into());
            break;
        }
    }
    if let Err(e) = done {
        // Nothing half-made: the person goes again, with any card already added.
        directory::delete_person(&state, site.id, person).await?;
        return Err(e);
    }
    for g in &input.groups {
        model::add_member(&state, *g, person).await?;
    }
    recompile(&state, &site).await?;
    Ok(created(person_out(&state, &site, person).await?))
}

/// A person with their cards, keypad codes and groups.
#[utoipa::path(get, path = "/api/people/{id}", tag = "people",
    params(("id" = i64, Path, description = "The person's id")),
    responses((status = 200, body = PersonOut), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn person_get(
    State(state): State<AppState>,
    _c: ApiRead,
    Path(raw): Path<String>,
) -> ApiResult<Json<PersonOut>> {
    let site = the_site(&state).await?;
    Ok(Json(person_out(&state, &site, id(&raw)?).await?))
}

/// Renames a person or changes their details (a new expiry reaches the doors at once).
#[utoipa::path(patch, path = "/api/people/{id}", tag = "people", request_body = PersonPatch,
    params(("id" = i64, Path, description = "The person's id")),
    responses((status = 200, body = PersonOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = FieldErrorBody)))]
async fn person_update(
    State(state): State<AppState>,
    _c: ApiWrite,
    Path(raw): Path<String>,
    json: Result<Json<PersonPatch>, JsonRejection>,
) -> ApiResult<Json<PersonOut>> {
    let input = body(json)?;
    let site = the_site(&state).await?;
    let person = directory::person(&state, site.id, id(&raw)?).await?;
    let old = &person.details;
    let keep = |new: &Option<String>, old: &Option<String>| {
        new.clone().or_else(|| old.clone()).unwrap_or_default()
    };
    let details = directory::PersonDetails::parse(
        &keep(&input.email, &old.email),
        &keep(&input.member_number, &old.member_number),
        &keep(&input.note, &old.note),
        &keep(&input.expiry, &old.expires_on.map(|d| d.to_string())),
    )?;
    if let Some(name) = &input.name {
        directory::rename_person(&state, site.id, person.id, name).await?;
    }
    if details != person.details {
        directory::set_person_details(&state, site.id, person.id, &details).await?;
        // The expiry caps the person's entries in every door's list.
        recompile(&state, &site).await?;
    }
    Ok(Json(person_out(&state, &site, person.id).await?))
}

/// Deletes a person with their cards, keypad codes and rules; the doors forget them at once.
#[utoipa::path(delete, path = "/api/people/{id}", tag = "people",
    params(("id" = i64, Path, description = "The person's id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn person_delete(
    State(state): State<AppState>,
    _c: ApiWrite,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    let site = the_site(&state).await?;
    directory::delete_person(&state, site.id, id(&raw)?).await?;
    recompile(&state, &site).await?;
    Ok(no_content())
}

/// A card to add.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardIn {
    /// UID, hex (4, 7 or 10 bytes), any case.
    pub uid: String,
    /// A secure card (7-byte UID) personalised for the site (`chronolock card personalize`).
    #[serde(default)]
    pub secure: bool,
}

/// Gives a person a card.
#[utoipa::path(post, path = "/api/people/{id}/cards", tag = "people", request_body = CardIn,
    params(("id" = i64, Path, description = "The person's id")),
    responses((status = 201, body = CardOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Someone holds the card already", body = ErrorBody),
        (status = 422, body = FieldErrorBody)))]
async fn card_add(
    State(state): State<AppState>,
    _c: ApiWrite,
    Path(raw): Path<String>,
    json: Result<Json<CardIn>, JsonRejection>,
) -> ApiResult<Response> {
    let input = body(json)?;
    let site = the_site(&state).await?;
    let person = directory::person(&state, site.id, id(&raw)?).await?;
    let card = model::add_card_kind(&state, person.id, &input.uid, input.secure).await?;
    recompile(&state, &site).await?;
    let uid = directory::cards(&state, person.id)
        .await?
        .into_iter()
        .find(|c| c.id == card)
        .map(|c| c.uid)
        .unwrap_or_default();
    Ok(created(CardOut {
        id: card,
        uid,
        secure: input.secure,
    }))
}

/// Takes a card from a person; the doors refuse it within seconds.
#[utoipa::path(delete, path = "/api/people/{id}/cards/{card_id}", tag = "people",
    params(("id" = i64, Path, description = "The person's id"), ("card_id" = i64, Path, description = "The card's id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn card_delete(
    State(state): State<AppState>,
    _c: ApiWrite,
    Path((raw, card)): Path<(String, String)>,
) -> ApiResult<Response> {
    let site = the_site(&state).await?;
    let person = directory::person(&state, site.id, id(&raw)?).await?;
    directory::delete_card(&state, person.id, id(&card)?).await?;
    recompile(&state, &site).await?;
    Ok(no_content())
}

/// A keypad secret to enrol.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeypadIn {
    /// The user code, 1 to 8 digits (typed before `*` at the door).
    pub code: String,
    /// `totp` (an authenticator app) or `hotp` (printed backup codes).
    pub kind: String,
    /// Replace the code's existing secret of this kind (the old app entry or sheet stops
    /// working).
    #[serde(default)]
    pub replace: bool,
}

/// A secret just enrolled: shown once.
#[derive(Serialize, ToSchema)]
pub struct KeypadSecret {
    /// The user code.
    pub code: String,
    /// `totp` or `hotp`.
    pub kind: String,
    /// The secret, base32.
    pub secret: String,
    /// For TOTP: the `otpauth://` URI authenticator apps read (as a QR code).
    pub otpauth_uri: Option<String>,
    /// For HOTP: the backup codes, in order.
    pub backup_codes: Option<Vec<String>>,
}

/// Enrols a TOTP secret or issues HOTP backup codes under a user code of the person.
#[utoipa::path(post, path = "/api/people/{id}/keypad", tag = "people", request_body = KeypadIn,
    params(("id" = i64, Path, description = "The person's id")),
    responses((status = 201, body = KeypadSecret), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = FieldErrorBody)))]
async fn keypad_enrol(
    State(state): State<AppState>,
    _c: ApiWrite,
    Path(raw): Path<String>,
    json: Result<Json<KeypadIn>, JsonRejection>,
) -> ApiResult<Response> {
    let input = body(json)?;
    let site = the_site(&state).await?;
    let person = directory::person(&state, site.id, id(&raw)?).await?;
    let kind = match input.kind.as_str() {
        "totp" => SecretKind::Totp,
        "hotp" => SecretKind::Hotp,
        other => {
            return Err(ApiError::Field(
                "kind".into(),
                format!("totp or hotp, not `{other}`"),
            ))
        }
    };
    let code = input.code.trim();
    let (secret, base) =
        crate::editors::keypad_enrol(&state, site.id, &person, code, kind, input.replace).await?;
    let (otpauth_uri, backup_codes) = match kind {
        SecretKind::Totp => (
            Some(crate::editors::otpauth_uri(&person.name, code, &secret)),
            None,
        ),
        SecretKind::Hotp => (
            None,
            Some(crate::editors::backup_codes(&secret, base).map_err(AppError::from)?),
        ),
    };
    let mut answer = created(KeypadSecret {
        code: code.to_string(),
        kind: input.kind,
        secret,
        otpauth_uri,
        backup_codes,
    });
    answer.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(answer)
}

/// Removes a keypad code with its secrets.
#[utoipa::path(delete, path = "/api/people/{id}/keypad/{code_id}", tag = "people",
    params(("id" = i64, Path, description = "The person's id"), ("code_id" = i64, Path, description = "The keypad code's id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn keypad_delete(
    State(state): State<AppState>,
    _c: ApiWrite,
    Path((raw, code)): Path<(String, String)>,
) -> ApiResult<Response> {
    let site = the_site(&state).await?;
    let person = directory::person(&state, site.id, id(&raw)?).await?;
    directory::delete_keypad_code(&state, person.id, id(&code)?).await?;
    recompile(&state, &site).await?;
    Ok(no_content())
}

// --- groups ------------------------------------------------------------------------------------

/// A group with its members.
#[derive(Serialize, ToSchema)]
pub struct GroupOut {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Members, by name.
    pub members: Vec<PersonRef>,
}

/// A person, by id and name.
#[derive(Serialize, ToSchema)]
pub struct PersonRef {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
}

/// A group in the list.
#[derive(Serialize, ToSchema)]
pub struct GroupSummary {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Number of members.
    pub members: i64,
}

async fn group_out(state: &AppState, site: &Site, group_id: i64) -> ApiResult<GroupOut> {
    let g = directory::group(state, site.id, group_id).await?;
    let members = directory::members(state, g.id).await?;
    Ok(GroupOut {
        id: g.id,
        name: g.name,
        members: members
            .into_iter()
            .map(|p| PersonRef {
                id: p.id,
                name: p.name,
            })
            .collect(),
    })
}

/// A group's name.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NameIn {
    /// Name, 1 to 100 characters, unique on the site.
    pub name: String,
}

/// The site's groups, by name.
#[utoipa::path(get, path = "/api/groups", tag = "groups",
    responses((status = 200, body = Vec<GroupSummary>), (status = 401, body = ErrorBody)))]
async fn groups_list(
    State(state): State<AppState>,
    _c: ApiRead,
) -> ApiResult<Json<Vec<GroupSummary>>> {
    let site = the_site(&state).await?;
    let groups = directory::groups(&state, site.id).await?;
    Ok(Json(
        groups
            .into_iter()
            .map(|g| GroupSummary {
                id: g.id,
                name: g.name,
                members: g.members,
            })
            .collect(),
    ))
}

/// Makes a group.
#[utoipa::path(post, path = "/api/groups", tag = "groups", request_body = NameIn,
    responses((status = 201, body = GroupOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = FieldErrorBody)))]
async fn group_create(
    State(state): State<AppState>,
    _c: ApiWrite,
    json: Result<Json<NameIn>, JsonRejection>,
) -> ApiResult<Response> {
    let input = body(json)?;
    let site = the_site(&state).await?;
    let group = model::create_group(&state, site.id, &input.name).await?;
    Ok(created(group_out(&state, &site, group).await?))
}

/// A group with its members.
#[utoipa::path(get, path = "/api/groups/{id}", tag = "groups",
    params(("id" = i64, Path, description = "The group's id")),
    responses((status = 200, body = GroupOut), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn group_get(
    State(state): State<AppState>,
    _c: ApiRead,
    Path(raw): Path<String>,
) -> ApiResult<Json<GroupOut>> {
    let site = the_site(&state).await?;
    Ok(Json(group_out(&state, &site, id(&raw)?).await?))
}

/// Renames a group.
#[utoipa::path(patch, path = "/api/groups/{id}", tag = "groups", request_body = NameIn,
    params(("id" = i64, Path, description = "The group's id")),
    responses((status = 200, body = GroupOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = FieldErrorBody)))]
async fn group_update(
    State(state): State<AppState>,
    _c: ApiWrite,
    Path(raw): Path<String>,
    json: Result<Json<NameIn>, JsonRejection>,
) -> ApiResult<Json<GroupOut>> {
    let input = body(json)?;
    let site = the_site(&state).await?;
    let group = directory::group(&state, site.id, id(&raw)?).await?;
    directory::rename_group(&state, site.id, group.id, &input.name).await?;
    Ok(Json(group_out(&state, &site, group.id).await?))
}

/// Deletes a group and its rules; its members keep their own rules.
#[utoipa::path(delete, path = "/api/groups/{id}", tag = "groups",
    params(("id" = i64, Path, description = "The group's id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn group_delete(
    State(state): State<AppState>,
    _c: ApiWrite,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    let site = the_site(&state).await?;
    directory::delete_group(&state, site.id, id(&raw)?).await?;
    recompile(&state, &site).await?;
    Ok(no_content())
}

/// The group and the person of a membership path, both of the site.
async fn membership(
    state: &AppState,
    site: &Site,
    raw: &str,
    person: &str,
) -> ApiResult<(i64, i64)> {
    let group = directory::group(state, site.id, id(raw)?).await?;
    let person = directory::person(state, site.id, id(person)?).await?;
    Ok((group.id, person.id))
}

/// Adds a person to a group (nothing changes if they are a member).
#[utoipa::path(put, path = "/api/groups/{id}/members/{person_id}", tag = "groups",
    params(("id" = i64, Path, description = "The group's id"), ("person_id" = i64, Path, description = "The person's id")),
    responses((status = 204, description = "A member"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn member_add(
    State(state): State<AppState>,
    _c: ApiWrite,
    Path((raw, person)): Path<(String, String)>,
) -> ApiResult<Response> {
    let site = the_site(&state).await?;
    let (group, person) = membership(&state, &site, &raw, &person).await?;
    model::add_member(&state, group, person).await?;
    recompile(&state, &site).await?;
    Ok(no_content())
}

/// Takes a person out of a group.
#[utoipa::path(delete, path = "/api/groups/{id}/members/{person_id}", tag = "groups",
    params(("id" = i64, Path, description = "The group's id"), ("person_id" = i64, Path, description = "The person's id")),
    responses((status = 204, description = "Not a member"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn member_remove(
    State(state): State<AppState>,
    _c: ApiWrite,
    Path((raw, person)): Path<(String, String)>,
) -> ApiResult<Response> {
    let site = the_site(&state).await?;
    let (group, person) = membership(&state, &site, &raw, &person).await?;
    directory::remove_member(&state, group, person).await?;
    recompile(&state, &site).await?;
    Ok(no_content())
}

// --- schedules ---------------------------------------------------------------------------------

/// A weekly slot in the site's local time.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotIn {
    /// Days it starts on: `mon` … `sun`.
    pub days: Vec<String>,
    /// Start, `HH:MM`.
    pub start: String,
    /// End, `HH:MM` (`24:00` is midnight; before the start runs into the next day).
    pub end: String,
}

/// A slot as stored.
#[derive(Serialize, ToSchema)]
pub struct SlotOut {
    /// Row id.
    pub id: i64,
    /// Days it starts on: `mon` … `sun`.
    pub days: Vec<String>,
    /// Start, `HH:MM`.
    pub start: String,
    /// End, `HH:MM`.
    pub end: String,
}

/// A schedule with its slots.
#[derive(Serialize, ToSchema)]
pub struct ScheduleOut {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Slots.
    pub slots: Vec<SlotOut>,
    /// Number of rules that use it.
    pub rules: i64,
}

/// A new schedule.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleIn {
    /// Name, 1 to 100 characters, unique on the site.
    pub name: String,
    /// At least one slot.
    pub slots: Vec<SlotIn>,
}

fn slot_of(input: &SlotIn, index: usize) -> ApiResult<crate::schedule::LocalSlot> {
    crate::editors::slot_from_parts(&input.days, &input.start, &input.end)
        .map_err(|(field, message)| ApiError::Field(format!("slots[{index}].{field}"), message))
}

async fn schedule_out(state: &AppState, site: &Site, schedule_id: i64) -> ApiResult<ScheduleOut> {
    use crate::editors::{hhmm, DAYS};
    let s = directory::schedule(state, site.id, schedule_id).await?;
    let slots = directory::slots(state, s.id)
        .await?
        .into_iter()
        .map(|(id, slot)| SlotOut {
            id,
            days: DAYS
                .iter()
                .enumerate()
                .filter(|(i, _)| slot.days & (1 << i) != 0)
                .map(|(_, (d, _))| (*d).to_string())
                .collect(),
            start: hhmm(slot.start_min),
            end: hhmm(slot.end_min),
        })
        .collect();
    Ok(ScheduleOut {
        id: s.id,
        name: s.name,
        slots,
        rules: s.rules,
    })
}

/// The site's schedules with their slots.
#[utoipa::path(get, path = "/api/schedules", tag = "schedules",
    responses((status = 200, body = Vec<ScheduleOut>), (status = 401, body = ErrorBody)))]
async fn schedules_list(
    State(state): State<AppState>,
    _c: ApiRead,
) -> ApiResult<Json<Vec<ScheduleOut>>> {
    let site = the_site(&state).await?;
    let mut out = Vec::new();
    for s in directory::schedules(&state, site.id).await? {
        out.push(schedule_out(&state, &site, s.id).await?);
    }
    Ok(Json(out))
}

/// Makes a schedule.
#[utoipa::path(post, path = "/api/schedules", tag = "schedules", request_body = ScheduleIn,
    responses((status = 201, body = ScheduleOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = FieldErrorBody)))]
async fn schedule_create(
    State(state): State<AppState>,
    _c: ApiWrite,
    json: Result<Json<ScheduleIn>, JsonRejection>,
) -> ApiResult<Response> {
    let input = body(json)?;
    let site = the_site(&state).await?;
    let slots = input
        .slots
        .iter()
        .enumerate()
        .map(|(i, s)| slot_of(s, i))
        .collect::<ApiResult<Vec<_>>>()?;
    let id = model::create_schedule(&state, site.id, &input.name, &slots).await?;
    Ok(created(schedule_out(&state, &site, id).await?))
}

/// A schedule with its slots.
#[utoipa::path(get, path = "/api/schedules/{id}", tag = "schedules",
    params(("id" = i64, Path, description = "The schedule's id")),
    responses((status = 200, body = ScheduleOut), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn schedule_get(
    State(state): State<AppState>,
    _c: ApiRead,
    Path(raw): Path<String>,
) -> ApiResult<Json<ScheduleOut>> {
    let site = the_site(&state).await?;
    Ok(Json(schedule_out(&state, &site, id(&raw)?).await?))
}

/// Renames a schedule.
#[utoipa::path(patch, path = "/api/schedules/{id}", tag = "schedules", request_body = NameIn,
    params(("id" = i64, Path, description = "The schedule's id")),
    responses((status = 200, body = ScheduleOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = FieldErrorBody)))]
async fn schedule_update(
    State(state): State<AppState>,
    _c: ApiWrite,
    Path(raw): Path<String>,
    json: Result<Json<NameIn>, JsonRejection>,
) -> ApiResult<Json<ScheduleOut>> {
    let input = body(json)?;
    let site = the_site(&state).await?;
    let schedule = directory::schedule(&state, site.id, id(&raw)?).await?;
    directory::rename_schedule(&state, site.id, schedule.id, &input.name).await?;
    Ok(Json(schedule_out(&state, &site, schedule.id).await?))
}

/// Deletes a schedule no rule uses (`409` while rules use it).
#[utoipa::path(delete, path = "/api/schedules/{id}", tag = "schedules",
    params(("id" = i64, Path, description = "The schedule's id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Rules use it", body = ErrorBody)))]
async fn schedule_delete(
    State(state): State<AppState>,
    _c: ApiWrite,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    let site = the_site(&state).await?;
    let schedule = directory::schedule(&state, site.id, id(&raw)?).await?;
    if schedule.rules > 0 {
        return Err(ApiError::Conflict(format!(
            "{} rules use this schedule: delete or change them first",
            schedule.rules
        )));
    }
    directory::delete_schedule(&state, site.id, schedule.id).await?;
    recompile(&state, &site).await?;
    Ok(no_content())
}

/// Adds a slot to a schedule.
#[utoipa::path(post, path = "/api/schedules/{id}/slots", tag = "schedules", request_body = SlotIn,
    params(("id" = i64, Path, description = "The schedule's id")),
    responses((status = 201, body = ScheduleOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = FieldErrorBody)))]
async fn slot_add(
    State(state): State<AppState>,
    _c: ApiWrite,
    Path(raw): Path<String>,
    json: Result<Json<SlotIn>, JsonRejection>,
) -> ApiResult<Response> {
    let input = body(json)?;
    let site = the_site(&state).await?;
    let schedule = directory::schedule(&state, site.id, id(&raw)?).await?;
    let slot = crate::editors::slot_from_parts(&input.days, &input.start, &input.end)?;
    directory::add_slot(&state, schedule.id, &slot).await?;
    recompile(&state, &site).await?;
    Ok(created(schedule_out(&state, &site, schedule.id).await?))
}

/// Removes a slot (a schedule keeps at least one: `422`).
#[utoipa::path(delete, path = "/api/schedules/{id}/slots/{slot_id}", tag = "schedules",
    params(("id" = i64, Path, description = "The schedule's id"), ("slot_id" = i64, Path, description = "The slot's id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = FieldErrorBody)))]
async fn slot_delete(
    State(state): State<AppState>,
    _c: ApiWrite,
    Path((raw, slot)): Path<(String, String)>,
) -> ApiResult<Response> {
    let site = the_site(&state).await?;
    let schedule = directory::schedule(&state, site.id, id(&raw)?).await?;
    directory::delete_slot(&state, schedule.id, id(&slot)?).await?;
    recompile(&state, &site).await?;
    Ok(no_content())
}

// --- holidays ----------------------------------------------------------------------------------

/// A holiday on the site calendar.
#[derive(Serialize, ToSchema)]
pub struct HolidayOut {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// First closed day (local date).
    pub first: String,
    /// Last closed day (inclusive).
    pub last: String,
    /// Whether it repeats every year.
    pub yearly: bool,
    /// The schedules it closes, by name.
    pub schedules: Vec<String>,
}

/// A new holiday.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HolidayIn {
    /// Name, 1 to 100 characters.
    pub name: String,
    /// First closed day, `YYYY-MM-DD` in the site's zone.
    pub first: String,
    /// Last closed day (inclusive); absent: the first.
    pub last: Option<String>,
    /// Whether it repeats every year.
    #[serde(default)]
    pub yearly: bool,
    /// Ids of the schedules it closes (at least one).
    pub schedules: Vec<i64>,
}

async fn holidays_out(state: &AppState, site: &Site) -> ApiResult<Vec<HolidayOut>> {
    Ok(directory::holidays(state, site.id)
        .await?
        .into_iter()
        .map(|h| HolidayOut {
            id: h.id,
            name: h.name,
            first: h.days.0,
            last: h.days.1,
            yearly: h.yearly,
            schedules: h.schedules,
        })
        .collect())
}

/// The site calendar, by first day.
#[utoipa::path(get, path = "/api/holidays", tag = "schedules",
    responses((status = 200, body = Vec<HolidayOut>), (status = 401, body = ErrorBody)))]
async fn holidays_list(
    State(state): State<AppState>,
    _c: ApiRead,
) -> ApiResult<Json<Vec<HolidayOut>>> {
    let site = the_site(&state).await?;
    Ok(Json(holidays_out(&state, &site).await?))
}

/// Adds a holiday that closes the given schedules; the doors recompile.
#[utoipa::path(post, path = "/api/holidays", tag = "schedules", request_body = HolidayIn,
    responses((status = 201, body = HolidayOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = FieldErrorBody)))]
async fn holiday_create(
    State(state): State<AppState>,
    _c: ApiWrite,
    json: Result<Json<HolidayIn>, JsonRejection>,
) -> ApiResult<Response> {
    let input = body(json)?;
    let site = the_site(&state).await?;
    let date = |field: &'static str, text: &str| {
        text.trim().parse::<jiff::civil::Date>().map_err(|_| {
            ApiError::Field(
                field.into(),
                format!("a date like 2026-12-24, not `{text}`"),
            )
        })
    };
    let first = date("first", &input.first)?;
    let last = match &input.last {
        Some(l) => date("last", l)?,
        None => first,
    };
    let holiday = crate::schedule::Holiday {
        first,
        last,
        yearly: input.yearly,
    };
    let id =
        model::create_holiday(&state, site.id, &input.name, &holiday, &input.schedules).await?;
    let out = holidays_out(&state, &site)
        .await?
        .into_iter()
        .find(|h| h.id == id)
        .ok_or(ApiError::App(AppError::NotFound))?;
    Ok(created(out))
}

/// Removes a holiday; the doors recompile.
#[utoipa::path(delete, path = "/api/holidays/{id}", tag = "schedules",
    params(("id" = i64, Path, description = "The holiday's id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn holiday_delete(
    State(state): State<AppState>,
    _c: ApiWrite,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    let site = the_site(&state).await?;
    model::delete_holiday(&state, site.id, id(&raw)?).await?;
    Ok(no_content())
}

// --- rules -------------------------------------------------------------------------------------

/// A rule.
#[derive(Serialize, ToSchema)]
pub struct RuleOut {
    /// Row id.
    pub id: i64,
    /// The door.
    pub door_id: i64,
    /// The person (or `null` for a group's rule).
    pub person_id: Option<i64>,
    /// The group (or `null` for a person's rule).
    pub group_id: Option<i64>,
    /// Who, by name.
    pub subject_name: String,
    /// `UNRESTRICTED`, `SCHEDULED`, `CONDITIONAL` or `EMERGENCY`.
    pub access: String,
    /// First valid moment (Unix seconds; 0: unbounded).
    pub valid_from: i64,
    /// Last valid moment (Unix seconds, inclusive; 0: unbounded).
    pub valid_until: i64,
    /// The schedule (SCHEDULED only).
    pub schedule_id: Option<i64>,
}

fn rule_out(r: directory::Rule) -> RuleOut {
    let (person_id, group_id) = match r.subject {
        Subject::Person(p) => (Some(p), None),
        Subject::Group(g) => (None, Some(g)),
    };
    RuleOut {
        id: r.id,
        door_id: r.door_id,
        person_id,
        group_id,
        subject_name: r.subject_name,
        access: r.access,
        valid_from: r.valid_from,
        valid_until: r.valid_until,
        schedule_id: r.schedule.map(|(id, _)| id),
    }
}

/// A new rule: a person or a group, a door, an access type, and optionally dates and a
/// schedule.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleIn {
    /// The door.
    pub door_id: i64,
    /// The person (give this or `group_id`).
    pub person_id: Option<i64>,
    /// The group (give this or `person_id`).
    pub group_id: Option<i64>,
    /// `UNRESTRICTED`, `SCHEDULED`, `CONDITIONAL` or `EMERGENCY`.
    pub access: String,
    /// First day, `YYYY-MM-DD` in the site's zone (from its local midnight).
    pub valid_from: Option<String>,
    /// Last day, inclusive (to the local midnight after it).
    pub valid_until: Option<String>,
    /// The schedule; SCHEDULED rules need one, others have none.
    pub schedule_id: Option<i64>,
}

/// The site's rules.
#[utoipa::path(get, path = "/api/rules", tag = "rules",
    responses((status = 200, body = Vec<RuleOut>), (status = 401, body = ErrorBody)))]
async fn rules_list(State(state): State<AppState>, _c: ApiRead) -> ApiResult<Json<Vec<RuleOut>>> {
    let site = the_site(&state).await?;
    let rules = directory::rules(&state, site.id, RuleFilter::All).await?;
    Ok(Json(rules.into_iter().map(rule_out).collect()))
}

/// Adds a rule; the doors recompile.
#[utoipa::path(post, path = "/api/rules", tag = "rules", request_body = RuleIn,
    responses((status = 201, body = RuleOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = FieldErrorBody)))]
async fn rule_create(
    State(state): State<AppState>,
    _c: ApiWrite,
    json: Result<Json<RuleIn>, JsonRejection>,
) -> ApiResult<Response> {
    let input = body(json)?;
    let site = the_site(&state).await?;
    let subject = match (input.person_id, input.group_id) {
        (Some(p), None) => format!("person:{p}"),
        (None, Some(g)) => format!("group:{g}"),
        _ => {
            return Err(ApiError::Field(
                "person_id".into(),
                "give a person_id or a group_id, not both".into(),
            ))
        }
    };
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    let pairs = vec![
        ("subject".to_string(), subject),
        ("door".to_string(), input.door_id.to_string()),
        ("access".to_string(), input.access),
        (
            "valid_from".to_string(),
            input.valid_from.unwrap_or_default(),
        ),
        (
            "valid_until".to_string(),
            input.valid_until.unwrap_or_default(),
        ),
        ("schedule".to_string(), opt(input.schedule_id)),
    ];
    let spec = crate::editors::rules::rule_from_fields(&state, &site, pairs)
        .await?
        .map_err(|(field, message)| {
            let field = match field {
                "subject" => "person_id",
                "door" => "door_id",
                "schedule" => "schedule_id",
                other => other,
            };
            ApiError::Field(field.into(), message)
        })?;
    let id = model::add_rule(&state, &spec).await?;
    recompile(&state, &site).await?;
    Ok(created(rule_out(
        directory::rule(&state, site.id, id).await?,
    )))
}

/// A rule.
#[utoipa::path(get, path = "/api/rules/{id}", tag = "rules",
    params(("id" = i64, Path, description = "The rule's id")),
    responses((status = 200, body = RuleOut), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn rule_get(
    State(state): State<AppState>,
    _c: ApiRead,
    Path(raw): Path<String>,
) -> ApiResult<Json<RuleOut>> {
    let site = the_site(&state).await?;
    Ok(Json(rule_out(
        directory::rule(&state, site.id, id(&raw)?).await?,
    )))
}

/// Deletes a rule; the doors recompile.
#[utoipa::path(delete, path = "/api/rules/{id}", tag = "rules",
    params(("id" = i64, Path, description = "The rule's id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn rule_delete(
    State(state): State<AppState>,
    _c: ApiWrite,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    let site = the_site(&state).await?;
    directory::delete_rule(&state, site.id, id(&raw)?).await?;
    recompile(&state, &site).await?;
    Ok(no_content())
}

// --- webhooks ----------------------------------------------------------------------------------

/// A new webhook.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookIn {
    /// An `http://` or `https://` URL.
    pub url: String,
    /// The kinds of events: `notify`, `report`, `decision`, `clock`, `alarm`, `alarm_cleared`,
    /// `lockdown`.
    pub kinds: Vec<String>,
}

/// Every webhook, with its signing secret (so listing needs a write token).
#[utoipa::path(get, path = "/api/webhooks", tag = "webhooks",
    responses((status = 200, body = Vec<crate::webhooks::Hook>), (status = 401, body = ErrorBody)))]
async fn webhooks_list(
    State(state): State<AppState>,
    _c: ApiWrite,
) -> ApiResult<Json<Vec<crate::webhooks::Hook>>> {
    // Listing shows the signing secrets: that needs a write token.
    Ok(Json(crate::webhooks::hooks(&state).await?))
}

/// Adds a webhook; the answer holds its signing secret.
#[utoipa::path(post, path = "/api/webhooks", tag = "webhooks", request_body = WebhookIn,
    responses((status = 201, body = crate::webhooks::Hook), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = FieldErrorBody)))]
async fn webhook_create(
    State(state): State<AppState>,
    _c: ApiWrite,
    json: Result<Json<WebhookIn>, JsonRejection>,
) -> ApiResult<Response> {
    let input = body(json)?;
    let (id, secret) = crate::webhooks::add(&state, &input.url, &input.kinds).await??;
    Ok(created(crate::webhooks::Hook {
        id,
        url: input.url.trim().to_string(),
        kinds: input.kinds,
        secret,
    }))
}

/// Deletes a webhook.
#[utoipa::path(delete, path = "/api/webhooks/{id}", tag = "webhooks",
    params(("id" = i64, Path, description = "The webhook's id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn webhook_delete(
    State(state): State<AppState>,
    _c: ApiWrite,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    if !crate::webhooks::remove(&state, id(&raw)?).await? {
        return Err(ApiError::App(AppError::NotFound));
    }
    Ok(no_content())
}

// --- lockdown ----------------------------------------------------------------------------------

/// The site's lockdown state.
#[derive(Serialize, ToSchema)]
pub struct LockdownOut {
    /// Whether the site is in lockdown.
    pub on: bool,
    /// The latest order (`null`: never given).
    pub order: Option<crate::lockdown::Order>,
}

/// A lockdown order.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LockdownIn {
    /// `true` to lock the site down, `false` to lift it.
    pub on: bool,
}

/// Whether the site is in lockdown, and the latest order.
#[utoipa::path(get, path = "/api/lockdown", tag = "lockdown",
    responses((status = 200, body = LockdownOut), (status = 401, body = ErrorBody)))]
async fn lockdown_get(State(state): State<AppState>, _c: ApiRead) -> ApiResult<Json<LockdownOut>> {
    let site = the_site(&state).await?;
    let order = crate::lockdown::latest(&state, site.id).await?;
    Ok(Json(LockdownOut {
        on: order.as_ref().is_some_and(|o| o.on),
        order,
    }))
}

/// Locks the site down or lifts it: signed, logged with who gave it (the token's name too), and
/// pushed to the online doors within seconds.
#[utoipa::path(post, path = "/api/lockdown", tag = "lockdown", request_body = LockdownIn,
    responses((status = 200, body = LockdownOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn lockdown_set(
    State(state): State<AppState>,
    c: ApiWrite,
    json: Result<Json<LockdownIn>, JsonRejection>,
) -> ApiResult<Json<LockdownOut>> {
    let input = body(json)?;
    let site = the_site(&state).await?;
    let who = c.0.who();
    let by = crate::lockdown::GivenBy {
        admin_id: c.0.admin_id,
        admin: &who,
    };
    let order = crate::lockdown::give(&state, site.id, input.on, Some(by)).await?;
    Ok(Json(LockdownOut {
        on: order.on,
        order: Some(order),
    }))
}

// --- import and export -------------------------------------------------------------------------

/// What an import did, or (with `dry_run`) would do.
#[derive(Serialize, ToSchema)]
pub struct ImportOut {
    /// Whether it was stored (`false` with `dry_run`).
    pub imported: bool,
    /// What the file was: `esp-rfid`, `csv` or `chronolock JSON`.
    pub kind: String,
    /// People added.
    pub added: usize,
    /// People changed.
    pub updated: usize,
    /// People the import did not change.
    pub unchanged: usize,
    /// Cards added.
    pub cards: usize,
    /// Rules added.
    pub rules: usize,
    /// Groups created.
    pub groups: usize,
    /// Who is added or changed, and how (at most 200 lines).
    pub changes: Vec<String>,
    /// What was read and not imported.
    pub notes: Vec<String>,
}

/// Imports people: the body is an esp-rfid user backup, a CSV file with a header, or a
/// chronolock JSON export (as `GET /api/export` writes it). One step: a bad row (`422`, its
/// row and field in the message) imports nothing. Importing the same file again changes
/// nothing. `dry_run=true` answers what it would do and stores nothing.
#[utoipa::path(post, path = "/api/import", tag = "transfer",
    params(("dry_run" = Option<bool>, Query, description = "Check and count only")),
    request_body(content = String, description = "The file", content_type = "text/plain"),
    responses((status = 200, body = ImportOut), (status = 400, description = "Not a file this reads", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = FieldErrorBody)))]
async fn import(
    State(state): State<AppState>,
    _c: ApiWrite,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    text: Result<String, axum::extract::rejection::StringRejection>,
) -> ApiResult<Json<ImportOut>> {
    let params = crate::monitor::query_params(query, &["dry_run"]).map_err(AppError::from)?;
    let dry_run = match params.get("dry_run").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::App(AppError::BadRequest(format!(
                "query parameter `dry_run`: true or false, not `{other}`"
            ))))
        }
    };
    let text = text.map_err(|e| AppError::BadRequest(format!("body: {}", e.body_text())))?;
    let site = the_site(&state).await?;
    let doc = crate::transfer::parse(&text, &site.zone()).map_err(transfer_error)?;
    let s = crate::transfer::import(&state, &site, &doc, !dry_run)
        .await
        .map_err(transfer_error)?;
    Ok(Json(ImportOut {
        imported: !dry_run,
        kind: s.kind,
        added: s.added,
        updated: s.updated,
        unchanged: s.unchanged,
        cards: s.cards,
        rules: s.rules,
        groups: s.groups,
        changes: s.changes,
        notes: s.notes,
    }))
}

fn transfer_error(e: crate::transfer::TransferError) -> ApiError {
    use crate::transfer::TransferError;
    match e {
        e @ TransferError::Row { .. } => {
            let field = match &e {
                TransferError::Row { field, .. } => field.clone(),
                _ => String::new(),
            };
            ApiError::Field(field, e.to_string())
        }
        TransferError::Format(m) => ApiError::App(AppError::BadRequest(m)),
        TransferError::Model(m) => m.into(),
        other => ApiError::App(AppError::Internal(other.to_string())),
    }
}

/// The site's people, cards, groups and access: `format=json` (default; what import reads
/// back) or `csv`.
#[utoipa::path(get, path = "/api/export", tag = "transfer",
    params(("format" = Option<String>, Query, description = "`json` (default) or `csv`")),
    responses((status = 200, description = "The export", content_type = "application/json", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn export(
    State(state): State<AppState>,
    _c: ApiRead,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Response> {
    let params = crate::monitor::query_params(query, &["format"]).map_err(AppError::from)?;
    let site = the_site(&state).await?;
    let (text, content_type) = match params.get("format").map_or("json", String::as_str) {
        "json" => (
            crate::transfer::export_json(&state, &site).await,
            "application/json",
        ),
        "csv" => (
            crate::transfer::export_csv(&state, &site).await,
            "text/csv; charset=utf-8",
        ),
        other => {
            return Err(ApiError::App(AppError::BadRequest(format!(
                "query parameter `format`: json or csv, not `{other}`"
            ))))
        }
    };
    let text = text.map_err(transfer_error)?;
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], text).into_response())
}
