//! chronolock-server: the backend.
//!
//! - [`db`]: SQLite by default, PostgreSQL for sites that outgrow one machine; migrations at start.
//! - [`site`]: the site's signing key, made on first start; its private half never leaves here.
//! - [`router`]: the HTTP routes, one group per concern, sharing one [`AppState`].
//! - [`firmware`]: signed firmware images the admin assigns to doors, offered at their syncs.
//! - [`lockdown`]: the site's signed lockdown orders; [`watch`]: doors' long polls, answered as
//!   soon as a lockdown or a new list is there for them.
//!
//! The server keeps no state outside the database, so several processes can share one
//! PostgreSQL database behind a load balancer. (Held watches live in one process, but what
//! wakes them is read from the database too: [`watch::poll_database`].)

pub mod admins;
pub mod api;
pub mod api_admin;
pub mod auth;
pub mod card_keys;
pub mod db;
pub mod demo;
pub mod device;
pub mod device_api;
pub mod directory;
pub mod door_cache;
pub mod editors;
pub mod error;
pub mod firmware;
pub mod link_writer;
pub mod lockdown;
pub mod model;
pub mod monitor;
pub mod mqtt;
pub mod pages;
pub mod positions;
pub use chronolock_allowlist::schedule;
pub mod site;
pub mod throttle;
pub mod tls;
pub mod tokens;
pub mod transfer;
pub mod watch;
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
    /// Serve HTTPS with this certificate and key ([`tls`]); cookies are then `Secure`.
    pub tls: Option<tls::TlsFiles>,
    /// The address browsers use when a reverse proxy terminates TLS, e.g.
    /// `https://doors.example.org`: cookies are then `Secure`, and a proxy on this host may
    /// name the client in `X-Forwarded-For`.
    pub public_url: Option<String>,
    /// A second, plain-HTTP listener that serves only the device API (and `/healthz`), for
    /// doors that do not speak TLS; the device protocol protects its bodies itself.
    pub device_listen: Option<SocketAddr>,
    /// Publish door states and events to an MQTT broker for Home Assistant ([`mqtt`]).
    pub mqtt: Option<mqtt::MqttConfig>,
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
            tls: None,
            public_url: None,
            device_listen: None,
            mqtt: None,
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
    /// What device syncs need of doors and sites, in memory ([`door_cache`]).
    pub door_cache: std::sync::Arc<door_cache::DoorCache>,
    /// Replay counters and events, committed in groups ([`link_writer`]).
    pub link_writer: std::sync::Arc<link_writer::LinkWriter>,
    /// Held while doors' lists are recompiled ([`model::refresh_due`]): an editor's change and
    /// the periodic recompilation would otherwise compile the same doors side by side.
    pub compiling: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Doors' watches (long polls) held by this process, and what wakes them.
    pub watches: std::sync::Arc<watch::Watches>,
    /// Virtual doors this process runs (`serve --demo`), for their panels in the admin UI.
    pub virtual_doors: std::sync::Arc<std::sync::RwLock<Vec<demo::RunningDoor>>>,
    /// Login attempts: password checks off the async workers, failures throttled.
    pub logins: std::sync::Arc<throttle::Logins>,
    /// Browsers reach this server over HTTPS (built-in TLS, or a `https://` public URL): session
    /// cookies are `Secure` and answers carry `Strict-Transport-Security`.
    pub https: bool,
    /// A reverse proxy on this host stands in front (`--public-url`): its `X-Forwarded-For`
    /// names the client for the login throttle.
    pub behind_proxy: bool,
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
            door_cache: std::sync::Arc::default(),
            link_writer: std::sync::Arc::default(),
            compiling: std::sync::Arc::default(),
            watches: std::sync::Arc::new(watch::Watches::new(watch::WatchConfig::from_env())),
            virtual_doors: std::sync::Arc::default(),
            logins: std::sync::Arc::new(throttle::Logins::new(2)),
            https: config.tls.is_some()
                || config
                    .public_url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("https://")),
            behind_proxy: config.tls.is_none() && config.public_url.is_some(),
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
        .merge(api_admin::routes())
        .merge(tokens::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security_headers,
        ))
        .with_state(state)
}

/// The routes a door uses, alone: for the plain-HTTP `--device-listen` listener.
pub fn device_router(state: AppState) -> Router {
    Router::new()
        .merge(health_routes())
        .merge(device_api::routes())
        .with_state(state)
}

/// The policy every page is served under: only this server's own resources, no framing, no
/// plugins, forms posted only here. Scripts only from this server's files (`/static/…`), never
/// inline, so markup that slipped past the templates' escaping could not run; styles may be
/// inline (pages carry small style blocks).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Headers on every answer: the content security policy, no framing, no referrer to other sites, no MIME
/// sniffing, and nothing kept in caches (admin pages show people and codes).
/// Over HTTPS, also `Strict-Transport-Security`: browsers that have been here once never try
/// plain HTTP again (for a year).
async fn security_headers(
    State(state): State<AppState>,
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
    if state.https {
        set(header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
    }
    response
}

fn health_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/static/{name}", get(static_script))
}

/// The pages' scripts, as files (the content security policy allows no inline script). Built
/// into the binary; no login needed, they hold nothing of the site's.
async fn static_script(
    axum::extract::Path(name): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = match name.as_str() {
        "log.js" => include_str!("../static/log.js"),
        "virtual-door.js" => include_str!("../static/virtual-door.js"),
        "print.js" => include_str!("../static/print.js"),
        "site-zone.js" => include_str!("../static/site-zone.js"),
        "import.js" => include_str!("../static/import.js"),
        _ => return AppError::NotFound.into_response(),
    };
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/javascript; charset=utf-8",
            ),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
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
    serve_until(config, shutdown_signal()).await
}

/// Runs the server until `stop` completes, then drains connections and closes the database.
pub async fn serve_until(
    mut config: ServeConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    if let Some(url) = &config.public_url {
        tls::public_origin(url).map_err(ServeError::Setup)?;
    }
    let tls_config = match &config.tls {
        Some(files) => Some(tls::load(files).map_err(ServeError::Setup)?),
        None => None,
    };
    let mqtt_options = config
        .mqtt
        .as_ref()
        .map(mqtt::Options::from_config)
        .transpose()
        .map_err(ServeError::Setup)?;
    // The demo's in-process doors speak plain HTTP, as the ESP32 door does: behind TLS they
    // get a loopback device listener of their own.
    if tls_config.is_some() && config.demo && config.virtual_doors && config.device_listen.is_none()
    {
        config.device_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    }
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
    let mut background = vec![
        tokio::spawn(webhooks::run(state.clone())),
        tokio::spawn(recompile_lists(state.clone())),
        tokio::spawn(device_api::StatusBuffer::run(state.clone())),
        tokio::spawn(watch::poll_database(state.clone())),
    ];
    let status = state.door_status.clone();
    let bind = |addr: SocketAddr| async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok::<_, ServeError>((listener, local))
    };
    let (listener, addr) = bind(config.listen).await?;
    let scheme = if tls_config.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(%addr, scheme, database = db.backend().as_str(), "chronolock server listening");
    // Everyone who serves stops when `stop` completes.
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let stop_signal = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let watches = state.watches.clone();
    tokio::spawn(async move {
        stop.await;
        // Held watches end now rather than hold the graceful shutdown for 25 s.
        watches.close();
        let _ = stopping.send(true);
    });
    // A broker that is down does not hold the server up: the task retries with backoff, and
    // says `offline` on the way out.
    let mqtt_task =
        mqtt_options.map(|options| tokio::spawn(mqtt::run(state.clone(), options, stop_signal())));
    let mut device_server = None;
    let mut door_addr = addr;
    if let Some(device_listen) = config.device_listen {
        let (device_listener, device_addr) = bind(device_listen).await?;
        tracing::info!(addr = %device_addr, "device API listening (plain HTTP, protocol-encrypted bodies)");
        door_addr = device_addr;
        let app = device_router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let stopped = stop_signal();
        device_server = Some(tokio::spawn(async move {
            axum::serve(device_listener, app)
                .with_graceful_shutdown(stopped)
                .await
        }));
    }
    if config.demo && config.virtual_doors {
        let admin_url = match &config.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("{scheme}://{}", demo::loopback_if_unspecified(addr)),
        };
        demo::start_virtual_doors(&state, door_addr, &admin_url, &config, seeded.as_ref())
            .await
            .map_err(|e| ServeError::Setup(format!("virtual doors: {e}")))?;
    }
    let mut app = router(state.clone());
    if config.demo {
        app = app.merge(demo::routes().with_state(state.clone()));
    }
    // Client addresses reach the handlers (the login throttle counts failures per address).
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let served = match (tls_config, &config.tls) {
        (Some(tls_config), Some(files)) => {
            let served = axum_server::tls_rustls::RustlsConfig::from_config(tls_config);
            background.push(tokio::spawn(tls::reload_when_renewed(
                files.clone(),
                served.clone(),
                tls::RELOAD_EVERY,
            )));
            let handle = axum_server::Handle::new();
            let draining = handle.clone();
            let stopped = stop_signal();
            tokio::spawn(async move {
                stopped.await;
                draining.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
            });
            let listener = listener.into_std().map_err(ServeError::Io)?;
            axum_server::from_tcp_rustls(listener, served)
                .handle(handle)
                .serve(app)
                .await
        }
        _ => {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop_signal())
                .await
        }
    };
    if let Some(device_server) = device_server {
        let _ = device_server.await;
    }
    if let Some(mut mqtt_task) = mqtt_task {
        // It says `offline` to the broker on the way out: a few seconds at most.
        let wait = std::time::Duration::from_secs(5);
        if tokio::time::timeout(wait, &mut mqtt_task).await.is_err() {
            mqtt_task.abort();
        }
    }
    for task in background {
        task.abort();
    }
    if let Err(e) = status.flush(&db).await {
        tracing::warn!(error = %e, "writing door statuses at shutdown");
    }
    db.close().await;
    served.map_err(ServeError::Io)
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
