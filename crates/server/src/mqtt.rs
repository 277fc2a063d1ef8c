//! Home Assistant over MQTT: `serve --mqtt mqtt://HOST:PORT` (or `mqtts://` for TLS).
//!
//! The server publishes, and only publishes:
//!
//! - `<prefix>/status`: `online` while connected, `offline` when it stops (and as its last will,
//!   so the broker says it when the server goes away without a word). Retained.
//! - `<prefix>/door/<id>/state`: one door as the dashboard sees it (JSON: name, online, contact,
//!   alarm, lockdown, battery, clock source and offset, last sync, list generations, last
//!   access). Retained; published when it changes and at least every minute.
//! - `<prefix>/door/<id>/availability`: `online` or `offline`, the dashboard's notion (a sync
//!   within two sync intervals and 30 s). Retained.
//! - `<prefix>/door/<id>/event`: every event the door reports, as the access log stores it
//!   (decisions, alarms, lockdown changes, battery reports, …). Not retained. Events that arrive
//!   while the broker is away are not replayed later: the access log has them all.
//! - `<prefix>/lockdown`: whether a site is in lockdown, and each site's newest order. Retained.
//! - Home Assistant discovery configs under `<discovery prefix>/<component>/<node>/<object>/config`
//!   (retained), one device per door and one for the server, so the entities appear by
//!   themselves. A door that is deleted has its configs and state cleared (empty retained
//!   payloads), also when it was deleted while the server was stopped.
//!
//! It is read-only by design: the server subscribes to nothing but its own retained topics (to
//! clear those of doors that no longer exist) and acts on no message. Nobody who can publish to
//! the broker can unlock a door or lift a lockdown through it. Credentials are never published
//! (a keypad credential is the user's code): an access names the person and the kind of
//! credential only. Passwords are never logged.
//!
//! Everything published is read from the database, by polling it as the access log's live
//! stream does, so an event stored by any server process sharing the database is published.
//! Give `--mqtt` to one process only, or each publishes every event.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, Incoming, LastWill, MqttOptions,
    Outgoing, QoS, TlsConfiguration, Transport,
};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::monitor::{self, Cursor, DoorStatus, EventFilter, LogEvent};
use crate::AppState;

/// The broker and topics, as given on the command line.
#[derive(Clone)]
pub struct MqttConfig {
    /// `mqtt://HOST[:PORT]` (1883 by default) or `mqtts://HOST[:PORT]` (8883), optionally with
    /// `USER:PASSWORD@` (percent-encoded).
    pub url: String,
    /// User name (instead of the URL's).
    pub user: Option<String>,
    /// Password (instead of the URL's); from `CHRONOLOCK_MQTT_PASSWORD`.
    pub password: Option<String>,
    /// With `mqtts://`: trust this PEM CA certificate (bundle) instead of the public roots.
    pub ca: Option<PathBuf>,
    /// Topic prefix of the states and events. Default `chronolock`.
    pub prefix: String,
    /// Home Assistant's discovery prefix. Default `homeassistant`.
    pub discovery_prefix: String,
}

impl MqttConfig {
    /// A broker URL with the default prefixes and nothing else.
    pub fn new(url: impl Into<String>) -> Self {
        MqttConfig {
            url: url.into(),
            user: None,
            password: None,
            ca: None,
            prefix: DEFAULT_PREFIX.into(),
            discovery_prefix: DEFAULT_DISCOVERY_PREFIX.into(),
        }
    }
}

/// Never shows a password, neither the option's nor one in the URL.
impl std::fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConfig")
            .field("url", &redacted(&self.url))
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ca", &self.ca)
            .field("prefix", &self.prefix)
            .field("discovery_prefix", &self.discovery_prefix)
            .finish()
    }
}

/// The default topic prefix.
pub const DEFAULT_PREFIX: &str = "chronolock";
/// Home Assistant's default discovery prefix.
pub const DEFAULT_DISCOVERY_PREFIX: &str = "homeassistant";
/// A door's state is published at least this often, changed or not.
pub const REPUBLISH_EVERY: Duration = Duration::from_secs(60);
/// The longest wait between two attempts to reach the broker.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A URL as it may be logged: the user information (with any password) left out.
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// Everything the MQTT task needs, checked.
#[derive(Clone)]
pub struct Options {
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    user: Option<String>,
    password: Option<String>,
    prefix: String,
    discovery_prefix: String,
    /// The discovery node id and the start of every unique id: the prefix, as an id.
    node: String,
    /// How often new events are looked for.
    pub poll: Duration,
    /// How often the doors' states are read again (at once after a door's event).
    pub refresh: Duration,
    /// How often every state is published again, changed or not.
    pub republish: Duration,
    /// The first wait after the broker could not be reached (doubling up to [`MAX_BACKOFF`]).
    pub backoff: Duration,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("broker", &self.broker())
            .field("user", &self.user)
            .field("prefix", &self.prefix)
            .field("discovery_prefix", &self.discovery_prefix)
            .finish_non_exhaustive()
    }
}

fn percent_decoded(text: &str, what: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("--mqtt: the {what} in the URL has a bad %-escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("--mqtt: the {what} in the URL is not UTF-8"))
}

fn check_prefix(option: &str, value: &str) -> Result<(), String> {
    if value.is_empty()
        || value.starts_with('/')
        || value.ends_with('/')
        || value.contains(['+', '#', '\0'])
        || value.split('/').any(str::is_empty)
    {
        return Err(format!(
            "{option} {value:?}: a topic prefix such as `chronolock` or `site/doors` \
             (no wildcards, no empty levels, no leading or trailing /)"
        ));
    }
    Ok(())
}

impl Options {
    /// Checks the configuration: the URL, the prefixes, and the CA file (read now). The error
    /// names the option and what is wrong, and never shows a password.
    pub fn from_config(config: &MqttConfig) -> Result<Options, String> {
        let shown = redacted(&config.url);
        if !config.url.contains("://") {
            return Err(format!(
                "--mqtt {shown}: not a URL; expected mqtt://HOST:PORT or mqtts://HOST:PORT"
            ));
        }
        let url = reqwest::Url::parse(config.url.trim()).map_err(|e| {
            format!(
                "--mqtt {shown}: not a URL ({e}); expected mqtt://HOST:PORT or mqtts://HOST:PORT"
            )
        })?;
        let tls = match url.scheme() {
            "mqtt" => false,
            "mqtts" => true,
            other => {
                return Err(format!(
                    "--mqtt {shown}: the scheme is `{other}`; expected mqtt:// (plain) or mqtts:// (TLS)"
                ))
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("--mqtt {shown}: no broker host (mqtt://HOST:PORT)"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "--mqtt {shown}: a broker URL has no path or query (topics are set with \
                 --mqtt-prefix and --mqtt-discovery-prefix)"
            ));
        }
        let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
        if port == 0 {
            return Err(format!("--mqtt {shown}: port 0 is no broker's port"));
        }
        let url_user = Some(url.username())
            .filter(|u| !u.is_empty())
            .map(|u| percent_decoded(u, "user"))
            .transpose()?;
        let url_password = url
            .password()
            .map(|p| percent_decoded(p, "password"))
            .transpose()?;
        let user = config.user.clone().or(url_user);
        let password = config.password.clone().or(url_password);
        if password.is_some() && user.is_none() {
            return Err(
                "--mqtt: a password needs a user name (--mqtt-user, or USER@ in the URL)".into(),
            );
        }
        check_prefix("--mqtt-prefix", &config.prefix)?;
        check_prefix("--mqtt-discovery-prefix", &config.discovery_prefix)?;
        if config.prefix == config.discovery_prefix {
            return Err(
                "--mqtt-prefix and --mqtt-discovery-prefix must differ (discovery configs would \
                 mix with the states)"
                    .into(),
            );
        }
        let tls = match (tls, &config.ca) {
            (false, Some(_)) => {
                return Err("--mqtt-ca is for TLS: give the broker as mqtts://HOST:PORT".to_string())
            }
            (false, None) => None,
            (true, ca) => Some(client_tls(ca.as_deref())?),
        };
        let node: String = config
            .prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Ok(Options {
            host,
            port,
            tls,
            user,
            password,
            prefix: config.prefix.clone(),
            discovery_prefix: config.discovery_prefix.clone(),
            node,
            poll: Duration::from_secs(1),
            refresh: Duration::from_secs(5),
            republish: REPUBLISH_EVERY,
            backoff: Duration::from_secs(1),
        })
    }

    /// `mqtt://host:port` or `mqtts://host:port`, for logs.
    pub fn broker(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }

    /// The site availability topic (`<prefix>/status`).
    pub fn status_topic(&self) -> String {
        format!("{}/status", self.prefix)
    }

    fn mqtt_options(&self) -> MqttOptions {
        let mut random = [0u8; 4];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
        // Unique per process: two servers with one client id would push each other off.
        let short: String = self.node.chars().take(12).collect();
        let client_id = format!("{short}-{}", data_encoding::HEXLOWER.encode(&random));
        let mut options = MqttOptions::new(client_id, self.host.clone(), self.port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(true);
        options.set_last_will(LastWill::new(
            self.status_topic(),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        if let Some(user) = &self.user {
            options.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        if let Some(tls) = &self.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.clone(),
            )));
        }
        // Discovery configs of a door with a long name fit many times over.
        options.set_max_packet_size(256 * 1024, 256 * 1024);
        options
    }
}

/// The TLS client configuration: rustls with ring, trusting `ca` or else the public roots.
fn client_tls(ca: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let name = path.display();
            let pem = std::fs::read(path).map_err(|e| format!("--mqtt-ca {name}: {e}"))?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("--mqtt-ca {name}: not a PEM certificate file ({e})"))?;
            if certs.is_empty() {
                return Err(format!(
                    "--mqtt-ca {name}: no certificate in the file (expected -----BEGIN CERTIFICATE-----)"
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("--mqtt-ca {name}: not a usable CA certificate ({e})"))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The connection as the publisher sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Link {
    connected: bool,
    /// Counts connections: a new one means everything is published again.
    session: u64,
}

/// Words for a connection failure, without anything secret in them.
fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
        ) => "the broker refused the user name or password (--mqtt-user, CHRONOLOCK_MQTT_PASSWORD)"
            .into(),
        ConnectionError::ConnectionRefused(code) => format!("the broker refused: {code:?}"),
        other => other.to_string(),
    }
}

/// Keeps the connection: polls the client's event loop, reconnects with backoff, subscribes
/// to the server's own retained topics after each connect and reports those it finds.
async fn drive(
    mut events: rumqttc::EventLoop,
    client: AsyncClient,
    options: Options,
    link: watch::Sender<Link>,
    found: mpsc::UnboundedSender<String>,
) {
    let broker = options.broker();
    let mut backoff = options.backoff;
    let mut failures = 0u32;
    let mut session = 0;
    let own = [
        format!("{}/+/{}/+/config", options.discovery_prefix, options.node),
        format!("{}/door/+/state", options.prefix),
        format!("{}/door/+/availability", options.prefix),
    ];
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                session += 1;
                backoff = options.backoff;
                failures = 0;
                tracing::info!(%broker, "MQTT: connected to the broker");
                for topic in &own {
                    if let Err(e) = client.try_subscribe(topic.clone(), QoS::AtLeastOnce) {
                        tracing::warn!(error = %e, "MQTT: cannot look for stale retained topics");
                    }
                }
                link.send_replace(Link {
                    connected: true,
                    session,
                });
            }
            // Retained messages come with the flag only as the answer to a subscription: these
            // are what the broker holds of ours (own publishes come back without it).
            Ok(Event::Incoming(Incoming::Publish(p))) if p.retain && !p.payload.is_empty() => {
                let _ = found.send(p.topic);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                link.send_if_modified(|l| std::mem::replace(&mut l.connected, false));
                failures += 1;
                let error = describe(&e);
                // The first failures in full, then every tenth, so an absent broker does not
                // fill the log.
                if failures <= 3 || failures % 10 == 0 {
                    tracing::warn!(%broker, %error, retry_in_s = backoff.as_secs_f64(), "MQTT: broker not reachable; door states wait for it");
                } else {
                    tracing::debug!(%broker, %error, "MQTT: broker still not reachable");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Publishes to the broker until `stop` completes, then says `offline` and disconnects. The
/// server runs this when started with `--mqtt`; a broker that is down (at start or later) is
/// retried with backoff, and the server carries on meanwhile.
pub async fn run(
    state: AppState,
    options: Options,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    let (client, events) = AsyncClient::new(options.mqtt_options(), 1024);
    let (link_tx, link) = watch::channel(Link::default());
    let (found_tx, found) = mpsc::unbounded_channel();
    tracing::info!(broker = %options.broker(), prefix = %options.prefix, "MQTT: publishing door states and events");
    let connection = tokio::spawn(drive(
        events,
        client.clone(),
        options.clone(),
        link_tx,
        found_tx,
    ));
    let mut publisher = Publisher::new(state, options.clone(), client.clone());
    tokio::select! {
        () = publisher.run(link.clone(), found) => {},
        () = stop => {},
    }
    // A clean goodbye: the will is only for an end without one.
    if link.borrow().connected {
        let _ = client.try_publish(options.status_topic(), QoS::AtLeastOnce, true, "offline");
        let _ = client.try_disconnect();
        let mut connection = connection;
        if tokio::time::timeout(Duration::from_secs(3), &mut connection)
            .await
            .is_err()
        {
            connection.abort();
        }
    } else {
        connection.abort();
    }
    tracing::info!("MQTT: stopped");
}

/// What the doors look like now, read from the database.
struct Snapshot {
    doors: Vec<DoorStatus>,
    contacts: HashMap<i64, crate::positions::Contact>,
    alarms: Vec<crate::positions::ActiveAlarm>,
    lockdowns: Vec<crate::lockdown::Order>,
}

async fn snapshot(state: &AppState) -> Result<Snapshot, String> {
    let doors = monitor::doors(state, crate::now_unix())
        .await
        .map_err(|e| e.to_string())?;
    let contacts = crate::positions::contacts(state, None)
        .await
        .map_err(|e| e.to_string())?;
    let alarms = crate::positions::active_alarms(state, None)
        .await
        .map_err(|e| e.to_string())?;
    let lockdowns = crate::lockdown::latest_per_site(state)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Snapshot {
        doors,
        contacts,
        alarms,
        lockdowns,
    })
}

fn rfc3339_us(us: i64) -> Value {
    jiff::Timestamp::from_microsecond(us).map_or(Value::Null, |t| json!(t.to_string()))
}

fn rfc3339_s(s: i64) -> Value {
    jiff::Timestamp::from_second(s).map_or(Value::Null, |t| json!(t.to_string()))
}

/// The kind of a credential (`card`, `keypad`), never its value.
fn credential_type(credential: Option<&str>) -> Value {
    credential
        .and_then(|c| c.split_once(':'))
        .map_or(Value::Null, |(kind, _)| json!(kind))
}

/// A decision as the `last_access` of a door's state.
fn access(e: &LogEvent) -> Value {
    json!({
        "decision": e.decision,
        "granted": e.decision.as_deref().is_some_and(|d| d.starts_with("GRANTED")),
        "person": e.person,
        "credential_type": credential_type(e.credential.as_deref()),
        "at": rfc3339_us(e.at_us),
        "event_id": e.id,
    })
}

/// An event as published on `<prefix>/door/<id>/event`.
pub fn event_payload(e: &LogEvent) -> Value {
    json!({
        "event_type": e.kind,
        "event_id": e.id,
        "door": {"id": e.door_id, "name": e.door},
        "at": rfc3339_us(e.at_us),
        "device_time_us": e.device_us,
        "received_time_us": e.received_us,
        "person": e.person,
        "credential_type": credential_type(e.credential.as_deref()),
        "decision": e.decision,
        "battery_mv": e.mv,
        "detail": e.detail,
    })
}

/// Topics and their retained payloads.
type Retained = BTreeMap<String, String>;

impl Options {
    fn door_topic(&self, door: i64, what: &str) -> String {
        format!("{}/door/{door}/{what}", self.prefix)
    }

    fn config_topic(&self, component: &str, object: &str) -> String {
        format!(
            "{}/{component}/{}/{object}/config",
            self.discovery_prefix, self.node
        )
    }

    fn hub(&self) -> Value {
        json!({
            "identifiers": [self.node],
            "name": "chronolock",
            "manufacturer": "chronolock",
            "model": "Access control server",
            "sw_version": env!("CARGO_PKG_VERSION"),
        })
    }

    /// Everything retained that the snapshot calls for: discovery configs, states,
    /// availabilities and the lockdown.
    fn retained(&self, snap: &Snapshot, last_access: &HashMap<i64, Value>) -> Retained {
        let mut out = Retained::new();
        let origin = json!({"name": "chronolock", "sw_version": env!("CARGO_PKG_VERSION")});
        let status = json!({"topic": self.status_topic(),
            "payload_available": "online", "payload_not_available": "offline"});
        let lockdown_topic = format!("{}/lockdown", self.prefix);
        let in_lockdown = |site: i64| snap.lockdowns.iter().any(|o| o.site_id == site && o.on);
        let sites: Vec<Value> = snap
            .lockdowns
            .iter()
            .map(|o| {
                let name = snap
                    .doors
                    .iter()
                    .find(|d| d.site_id == o.site_id)
                    .map(|d| d.site.clone());
                json!({"site_id": o.site_id, "site": name, "on": o.on, "seq": o.seq,
                    "since": rfc3339_s(o.issued_at), "admin": o.admin})
            })
            .collect();
        out.insert(
            lockdown_topic.clone(),
            json!({"on": snap.lockdowns.iter().any(|o| o.on), "sites": sites}).to_string(),
        );
        out.insert(
            self.config_topic("binary_sensor", "lockdown"),
            json!({
                "name": "Lockdown",
                "unique_id": format!("{}_lockdown", self.node),
                "icon": "mdi:shield-lock",
                "state_topic": lockdown_topic,
                "value_template": "{{ 'ON' if value_json.on else 'OFF' }}",
                "json_attributes_topic": lockdown_topic,
                "availability": [status],
                "device": self.hub(),
                "origin": origin,
            })
            .to_string(),
        );
        for d in &snap.doors {
            let state_topic = self.door_topic(d.id, "state");
            let availability_topic = self.door_topic(d.id, "availability");
            let contact = snap.contacts.get(&d.id);
            let alarm = snap.alarms.iter().rev().find(|a| a.door_id == d.id);
            let state = json!({
                "id": d.id,
                "name": d.name,
                "site": d.site,
                "site_id": d.site_id,
                "online": d.online,
                "paired": d.paired,
                "contact": contact.map(|c| if c.open { "open" } else { "closed" }),
                "contact_since": contact.map_or(Value::Null, |c| rfc3339_us(c.at_us)),
                "alarm": alarm.map(|a| a.kind.clone()),
                "alarm_since": alarm.map_or(Value::Null, |a| rfc3339_us(a.since_us)),
                "lockdown": in_lockdown(d.site_id),
                "battery_mv": d.battery_mv.filter(|&mv| mv > 0),
                "clock_valid": d.clock_valid,
                "clock_source": d.clock_source,
                "clock_offset_ms": d.clock_offset_us.map(|us| us as f64 / 1000.0),
                "clock_error_ms": d.clock_error_us.map(|us| us as f64 / 1000.0),
                "last_sync": d.last_sync.map_or(Value::Null, rfc3339_s),
                "generation": d.generation,
                "device_generation": d.device_generation,
                "list_pending": d.list_pending,
                "firmware_version": d.firmware_version,
                "last_access": last_access.get(&d.id).cloned().unwrap_or(Value::Null),
            });
            out.insert(state_topic.clone(), state.to_string());
            out.insert(
                availability_topic.clone(),
                if d.online { "online" } else { "offline" }.into(),
            );
            let mut device = json!({
                "identifiers": [format!("{}_door_{}", self.node, d.id)],
                "name": d.name,
                "manufacturer": "chronolock",
                "model": "Door controller",
                "suggested_area": d.site,
                "via_device": self.node,
            });
            if let Some(version) = &d.firmware_version {
                device["sw_version"] = json!(version);
            }
            let door_available = json!([status, {"topic": availability_topic,
                "payload_available": "online", "payload_not_available": "offline"}]);
            let site_available = json!([status]);
            let entity = |component: &str, object: &str, name: &str, fields: Value| {
                let mut config = json!({
                    "name": name,
                    "unique_id": format!("{}_door_{}_{object}", self.node, d.id),
                    "state_topic": state_topic,
                    "availability": door_available,
                    "availability_mode": "all",
                    "device": device,
                    "origin": origin,
                });
                if let (Value::Object(config), Value::Object(fields)) = (&mut config, fields) {
                    config.extend(fields);
                }
                (
                    self.config_topic(component, &format!("door_{}_{object}", d.id)),
                    config.to_string(),
                )
            };
            let entities = [
                entity(
                    "binary_sensor",
                    "contact",
                    "Door",
                    json!({
                        "device_class": "door",
                        "value_template": "{% if value_json.contact == 'open' %}ON{% elif value_json.contact == 'closed' %}OFF{% else %}None{% endif %}",
                    }),
                ),
                entity(
                    "binary_sensor",
                    "alarm",
                    "Alarm",
                    json!({
                        "device_class": "problem",
                        "value_template": "{{ 'ON' if value_json.alarm else 'OFF' }}",
                        "json_attributes_topic": state_topic,
                        "json_attributes_template": "{{ {'alarm': value_json.alarm, 'since': value_json.alarm_since} | tojson }}",
                    }),
                ),
                entity(
                    "binary_sensor",
                    "online",
                    "Online",
                    json!({
                        "device_class": "connectivity",
                        "entity_category": "diagnostic",
                        "value_template": "{{ 'ON' if value_json.online else 'OFF' }}",
                        "availability": site_available,
                    }),
                ),
                entity(
                    "sensor",
                    "battery",
                    "Battery",
                    json!({
                        "device_class": "voltage",
                        "unit_of_measurement": "mV",
                        "state_class": "measurement",
                        "entity_category": "diagnostic",
                        "value_template": "{{ value_json.battery_mv }}",
                    }),
                ),
                entity(
                    "sensor",
                    "clock_offset",
                    "Clock offset",
                    json!({
                        "unit_of_measurement": "ms",
                        "state_class": "measurement",
                        "icon": "mdi:clock-fast",
                        "entity_category": "diagnostic",
                        "value_template": "{{ value_json.clock_offset_ms }}",
                        "json_attributes_topic": state_topic,
                        "json_attributes_template": "{{ {'valid': value_json.clock_valid, 'error_ms': value_json.clock_error_ms} | tojson }}",
                    }),
                ),
                entity(
                    "sensor",
                    "clock_source",
                    "Clock source",
                    json!({
                        "icon": "mdi:clock-check",
                        "entity_category": "diagnostic",
                        "value_template": "{{ value_json.clock_source }}",
                    }),
                ),
                entity(
                    "sensor",
                    "last_sync",
                    "Last sync",
                    json!({
                        "device_class": "timestamp",
                        "entity_category": "diagnostic",
                        "value_template": "{{ value_json.last_sync }}",
                        "availability": site_available,
                    }),
                ),
                entity(
                    "sensor",
                    "last_access",
                    "Last access",
                    json!({
                        "icon": "mdi:card-account-details",
                        "value_template": "{{ value_json.last_access.decision if value_json.last_access else None }}",
                        "json_attributes_topic": state_topic,
                        "json_attributes_template": "{{ (value_json.last_access or {}) | tojson }}",
                    }),
                ),
                entity(
                    "event",
                    "event",
                    "Event",
                    json!({
                        "state_topic": self.door_topic(d.id, "event"),
                        "event_types": monitor::KINDS,
                        "availability": site_available,
                    }),
                ),
            ];
            out.extend(entities);
        }
        out
    }

    /// Whether a retained topic is one of this server's discovery configs.
    fn is_config(&self, topic: &str) -> bool {
        topic.starts_with(&format!("{}/", self.discovery_prefix)) && topic.ends_with("/config")
    }
}

/// Reads the database and publishes what changed.
struct Publisher {
    state: AppState,
    options: Options,
    client: AsyncClient,
    /// Retained topics published in this session, with their payloads.
    published: Retained,
    /// What the last good read of the database called for (none yet: nothing is cleared).
    desired: Option<Retained>,
    /// Retained topics found on the broker before the first good read, to check after it.
    unchecked: Vec<String>,
    last_access: HashMap<i64, Value>,
    /// The newest event seen.
    cursor: i64,
    session: u64,
}

impl Publisher {
    fn new(state: AppState, options: Options, client: AsyncClient) -> Self {
        Publisher {
            state,
            options,
            client,
            published: Retained::new(),
            desired: None,
            unchecked: Vec::new(),
            last_access: HashMap::new(),
            cursor: 0,
            session: 0,
        }
    }

    async fn publish(&self, topic: &str, retain: bool, payload: String) {
        if let Err(e) = self
            .client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
        {
            tracing::warn!(%topic, error = %e, "MQTT: cannot publish");
        }
    }

    /// A new connection: the newest event is where events start, last accesses are read
    /// again, and everything is published anew.
    async fn start_session(&mut self) -> Result<(), String> {
        let (max,): (Option<i64>,) = sqlx::query_as("SELECT MAX(id) FROM events")
            .fetch_one(self.state.db.pool())
            .await
            .map_err(|e| e.to_string())?;
        self.cursor = max.unwrap_or(0);
        let doors = monitor::doors(&self.state, crate::now_unix())
            .await
            .map_err(|e| e.to_string())?;
        self.last_access.clear();
        for d in doors {
            let filter = EventFilter {
                door: Some(d.id),
                kind: Some("decision".into()),
                ..EventFilter::default()
            };
            let newest = monitor::events(&self.state, &filter, Cursor::Before(None), 1)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(e) = newest.first() {
                self.last_access.insert(d.id, access(e));
            }
        }
        self.published.clear();
        self.publish(&self.options.status_topic(), true, "online".into())
            .await;
        Ok(())
    }

    /// Publishes the events stored since the last look; whether there were any.
    async fn events(&mut self) -> Result<bool, String> {
        let mut any = false;
        loop {
            let batch = monitor::events(
                &self.state,
                &EventFilter::default(),
                Cursor::After(self.cursor),
                100,
            )
            .await
            .map_err(|e| e.to_string())?;
            for e in &batch {
                self.cursor = e.id;
                any = true;
                if e.kind == "decision" {
                    self.last_access.insert(e.door_id, access(e));
                }
                let topic = self.options.door_topic(e.door_id, "event");
                self.publish(&topic, false, event_payload(e).to_string())
                    .await;
            }
            if batch.len() < 100 {
                return Ok(any);
            }
        }
    }

    /// Reads the doors and publishes what changed, and clears what is no longer there.
    async fn refresh(&mut self) -> Result<(), String> {
        let snap = snapshot(&self.state).await?;
        let desired = self.options.retained(&snap, &self.last_access);
        for (topic, payload) in &desired {
            if self.published.get(topic) != Some(payload) {
                self.publish(topic, true, payload.clone()).await;
                self.published.insert(topic.clone(), payload.clone());
            }
        }
        let gone: Vec<String> = self
            .published
            .keys()
            .filter(|t| !desired.contains_key(*t))
            .cloned()
            .collect();
        for topic in gone {
            // An empty retained payload deletes it (and, for a config, the entity).
            self.publish(&topic, true, String::new()).await;
            self.published.remove(&topic);
        }
        self.desired = Some(desired);
        for topic in std::mem::take(&mut self.unchecked) {
            self.found(topic).await;
        }
        Ok(())
    }

    /// A retained topic of ours the broker holds: cleared if no door calls for it.
    async fn found(&mut self, topic: String) {
        let Some(desired) = &self.desired else {
            self.unchecked.push(topic);
            return;
        };
        if !desired.contains_key(&topic) {
            tracing::info!(%topic, "MQTT: clearing the retained topic of a door that is gone");
            self.publish(&topic, true, String::new()).await;
        }
    }

    async fn run(
        &mut self,
        mut link: watch::Receiver<Link>,
        mut found: mpsc::UnboundedReceiver<String>,
    ) {
        let mut tick = tokio::time::interval(self.options.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_refresh = tokio::time::Instant::now();
        let mut last_republish = tokio::time::Instant::now();
        let mut fresh = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {},
                changed = link.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                Some(topic) = found.recv() => {
                    self.found(topic).await;
                    continue;
                }
            }
            let now = *link.borrow_and_update();
            if !now.connected {
                continue;
            }
            if now.session != self.session {
                if let Err(e) = self.start_session().await {
                    tracing::warn!(error = %e, "MQTT: cannot read the doors");
                    continue;
                }
                self.session = now.session;
                fresh = true;
            }
            let had_events = match self.events().await {
                Ok(any) => any,
                Err(e) => {
                    tracing::warn!(error = %e, "MQTT: cannot read new events");
                    false
                }
            };
            if last_republish.elapsed() >= self.options.republish {
                // States again, changed or not (discovery configs stay as they are).
                let options = &self.options;
                self.published.retain(|topic, _| options.is_config(topic));
                last_republish = tokio::time::Instant::now();
                fresh = true;
            }
            if fresh || had_events || last_refresh.elapsed() >= self.options.refresh {
                match self.refresh().await {
                    Ok(()) => {
                        fresh = false;
                        last_refresh = tokio::time::Instant::now();
                    }
                    Err(e) => tracing::warn!(error = %e, "MQTT: cannot read the doors"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(url: &str) -> Result<Options, String> {
        Options::from_config(&MqttConfig::new(url))
    }

    #[test]
    fn broker_urls_are_read_with_their_defaults() {
        let o = options("mqtt://broker.lan").unwrap();
        assert_eq!(o.broker(), "mqtt://broker.lan:1883");
        assert!(o.user.is_none());
        let o = options("mqtts://broker.example.org").unwrap();
        assert_eq!(o.broker(), "mqtts://broker.example.org:8883");
        let o = options("mqtt://door%40hq:p%3Ass@127.0.0.1:1884/").unwrap();
        assert_eq!(o.broker(), "mqtt://127.0.0.1:1884");
        assert_eq!(o.user.as_deref(), Some("door@hq"));
        assert_eq!(o.password.as_deref(), Some("p:ss"));
        let o = options("mqtt://[::1]:1883").unwrap();
        assert_eq!(o.broker(), "mqtt://[::1]:1883");
        // The options win over the URL.
        let mut config = MqttConfig::new("mqtt://a:b@host");
        config.user = Some("other".into());
        config.password = Some("secret".into());
        let o = Options::from_config(&config).unwrap();
        assert_eq!(o.user.as_deref(), Some("other"));
        assert_eq!(o.password.as_deref(), Some("secret"));
    }

    #[test]
    fn bad_broker_urls_say_what_is_wrong_and_show_no_password() {
        for (url, says) in [
            ("broker.lan:1883", "not a URL"),
            ("http://broker.lan", "the scheme is `http`"),
            ("mqtt://", "no broker host"),
            ("mqtt://broker.lan/topic", "no path"),
            ("mqtt://broker.lan?x=1", "no path"),
            ("mqtt://broker.lan:99999", "not a URL"),
            ("mqtt://broker.lan:0", "port 0"),
            ("mqtt://:hunter2@broker.lan", "needs a user name"),
            ("mqtts://u:hunter2@", "host"),
        ] {
            let e = options(url).expect_err(url);
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{url}: {e}");
        }
        let mut config = MqttConfig::new("mqtt://broker.lan");
        config.ca = Some("/nonexistent".into());
        let e = Options::from_config(&config).unwrap_err();
        assert!(e.contains("mqtts://"), "{e}");
        config.url = "mqtts://broker.lan".into();
        let e = Options::from_config(&config).unwrap_err();
        assert!(e.starts_with("--mqtt-ca /nonexistent"), "{e}");
        for prefix in ["", "a/#", "/a", "a/", "a//b", "x+"] {
            let mut config = MqttConfig::new("mqtt://broker.lan");
            config.prefix = prefix.into();
            let e = Options::from_config(&config).unwrap_err();
            assert!(e.starts_with("--mqtt-prefix"), "{prefix}: {e}");
        }
        let mut config = MqttConfig::new("mqtt://broker.lan");
        config.discovery_prefix = "chronolock".into();
        assert!(Options::from_config(&config).is_err());
    }

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("mqtts://door:hunter2@broker:8883"),
            "mqtts://***@broker:8883"
        );
        assert_eq!(redacted("mqtt://broker:1883"), "mqtt://broker:1883");
        let mut config = MqttConfig::new("mqtt://door:hunter2@broker");
        config.password = Some("hunter3".into());
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("hunter3"),
            "{shown}"
        );
        let shown = format!("{:?}", Options::from_config(&config).unwrap());
        assert!(!shown.contains("hunter"), "{shown}");
    }

    #[test]
    fn the_node_id_is_the_prefix_made_safe() {
        let mut config = MqttConfig::new("mqtt://broker.lan");
        config.prefix = "site/doors".into();
        let o = Options::from_config(&config).unwrap();
        assert_eq!(o.node, "site_doors");
        assert_eq!(
            o.config_topic("sensor", "door_1_battery"),
            "homeassistant/sensor/site_doors/door_1_battery/config"
        );
        assert_eq!(o.door_topic(1, "state"), "site/doors/door/1/state");
    }

    #[test]
    fn credentials_are_never_published() {
        assert_eq!(credential_type(Some("keypad:4711")), json!("keypad"));
        assert_eq!(credential_type(Some("card:04A1B2")), json!("card"));
        assert_eq!(credential_type(None), Value::Null);
    }
}
