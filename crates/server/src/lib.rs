//! chronolock-server: the backend.
//!
//! - [`db`]: SQLite by default, PostgreSQL for sites that outgrow one machine; migrations at start.
//! - [`site`]: the site's signing key, made on first start; its private half never leaves here.
//! - [`router`]: the HTTP routes, one group per concern, sharing one [`AppState`].
//!
//! The server keeps no state outside the database, so several processes can share one
//! PostgreSQL database behind a load balancer.

pub mod admins;
pub mod api;
pub mod auth;
pub mod db;
pub mod demo;
pub mod device;
pub mod device_api;
pub mod directory;
pub mod editors;
pub mod error;
pub mod model;
pub mod monitor;
pub mod pages;
pub use chronolock_allowlist::schedule;
pub mod site;
pub mod throttle;
pub mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

pub use db::{Backend, Db, DbError};
pub use error::AppError;

/// How to run the server.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Data directory (the SQLite file lives here). Default `./chronolock-data`.
    pub data_dir: PathBuf,
    /// Database URL; default: SQLite inside the data directory.
    pub database_url: Option<String>,
    /// Seed the demo site ([`demo::seed`]) if the database has no site yet.
    pub demo: bool,
    /// With `demo`: run the demo doors as virtual doors in this process ([`demo::start_virtual_doors`]).
    pub virtual_doors: bool,
    /// What runs the virtual doors (the `chronolock` binary gives one; without it, none run).
    pub door_host: Option<demo::DoorHost>,
    /// NTP servers (`host:port`) for the virtual doors.
    pub ntp: Vec<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("chronolock-data"),
            database_url: None,
            demo: false,
            virtual_doors: true,
            door_host: None,
            ntp: vec!["pool.ntp.org:123".into()],
        }
    }
}

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// The site's public key.
    pub site_public_key: [u8; 32],
    /// The site's signing key (kept in the database; read once at start).
    pub signing_key: std::sync::Arc<ed25519_dalek::SigningKey>,
    /// Wakes the webhook sender when a sync queued a delivery.
    pub webhook_wake: std::sync::Arc<tokio::sync::Notify>,
    /// Door statuses from syncs, written behind in batches.
    pub door_status: std::sync::Arc<device_api::StatusBuffer>,
    /// Virtual doors this process runs (`serve --demo`), for their panels in the admin UI.
    pub virtual_doors: std::sync::Arc<std::sync::RwLock<Vec<demo::RunningDoor>>>,
    /// Login attempts: password checks off the async workers, failures throttled.
    pub logins: std::sync::Arc<throttle::Logins>,
}

impl AppState {
    /// Opens the database named by `config`, applies migrations, and makes sure the site has
    /// its signing key.
    pub async fn open(config: &ServeConfig) -> Result<Self, DbError> {
        let url = match &config.database_url {
            Some(url) => url.clone(),
            None => db::sqlite_url_in(&config.data_dir)?,
        };
        let db = Db::open(&url).await?;
        let signing_key = site::signing_key(&db).await?;
        Ok(AppState {
            db,
            site_public_key: signing_key.verifying_key().to_bytes(),
            signing_key: std::sync::Arc::new(signing_key),
            webhook_wake: std::sync::Arc::new(tokio::sync::Notify::new()),
            door_status: std::sync::Arc::default(),
            virtual_doors: std::sync::Arc::default(),
            logins: std::sync::Arc::new(throttle::Logins::new(2)),
        })
    }
}

/// Every route of the server.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health_routes())
        .merge(auth::routes())
        .merge(admins::routes())
        .merge(monitor::routes())
        .merge(device_api::routes())
        .merge(webhooks::routes())
        .merge(editors::routes())
        .merge(api::routes())
        .with_state(state)
        .layer(axum::middleware::from_fn(security_headers))
}

/// The policy every page is served under: only this server's own resources, no framing, no
/// plugins, forms posted only here. Pages keep small inline scripts and styles, hence
/// `'unsafe-inline'` for them (all text in pages is escaped by the templates).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Headers on every answer: the content security policy, no framing, no referrer to other sites, no MIME
/// sniffing, and nothing kept in caches (admin pages show people and codes).
async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::header::{self, HeaderValue};
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let mut set = |name: header::HeaderName, value: &'static str| {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    };
    set(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "same-origin");
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::CACHE_CONTROL, "no-store");
    response
}

fn health_routes() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz))
}

/// Liveness and readiness: answers without login, and checks that the database answers.
async fn healthz(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    sqlx::query("SELECT 1").execute(state.db.pool()).await?;
    Ok(Json(
        json!({"status": "ok", "database": state.db.backend().as_str()}),
    ))
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Runs the server until Ctrl-C or SIGTERM, then drains connections and closes the database.
pub async fn serve(config: ServeConfig) -> Result<(), ServeError> {
    let state = AppState::open(&config).await?;
    auth::admin_from_env(&state)
        .await
        .map_err(|e| ServeError::Setup(e.to_string()))?;
    let seeded = if config.demo {
        demo::seed(&state)
            .await
            .map_err(|e| ServeError::Setup(format!("demo: {e}")))?
    } else {
        None
    };
    let db = state.db.clone();
    let background = [
        tokio::spawn(webhooks::run(state.clone())),
        tokio::spawn(recompile_lists(state.clone())),
        tokio::spawn(device_api::StatusBuffer::run(state.clone())),
    ];
    let status = state.door_status.clone();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    tracing::info!(%addr, database = db.backend().as_str(), "chronolock server listening");
    if config.demo && config.virtual_doors {
        demo::start_virtual_doors(&state, addr, &config, seeded.as_ref())
            .await
            .map_err(|e| ServeError::Setup(format!("virtual doors: {e}")))?;
    }
    let mut app = router(state.clone());
    if config.demo {
        app = app.merge(demo::routes().with_state(state.clone()));
    }
    // Client addresses reach the handlers (the login throttle counts failures per address).
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(ServeError::Io)?;
    for task in background {
        task.abort();
    }
    if let Err(e) = status.flush(&db).await {
        tracing::warn!(error = %e, "writing door statuses at shutdown");
    }
    db.close().await;
    Ok(())
}

/// Keeps every door's list current: doors marked by a change, and each Monday's new week of
/// schedules. Safe with several processes (the compiler's updates are conditional).
async fn recompile_lists(state: AppState) {
    loop {
        if let Err(e) = model::refresh_due(&state, now_unix()).await {
            tracing::warn!(error = %e, "recompiling door lists");
        }
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("server error: {0}")]
    Io(#[source] std::io::Error),
    /// The first admin from the environment could not be made.
    #[error("{0}")]
    Setup(String),
}

/// Unix seconds now, by the server's clock.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
