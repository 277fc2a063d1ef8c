//! `chronolock serve --demo`: a small example site to look around in, and doors to pair virtual
//! devices with.
//!
//! The site is made through the same model functions the admin UI uses, so its lists are
//! compiled and signed like any other, and it exercises every access type: staff UNRESTRICTED,
//! members SCHEDULED on weekdays (local time, Europe/Berlin), a night shift crossing midnight,
//! a CONDITIONAL visitor, an EMERGENCY fire-brigade card, one rule that has expired and one
//! that has not started yet. Seeding happens only while the database has no site, so restarting
//! with `--demo` changes nothing.

use chronolock_core::allowlist::AccessType;

use crate::model::{self, KeypadSpec, ModelError, RuleSpec, Subject};
use crate::schedule::LocalSlot;
use crate::AppState;

/// The demo site's name.
pub const SITE: &str = "Demo Makerspace";
/// The demo site's time zone.
pub const TIMEZONE: &str = "Europe/Berlin";
/// The demo doors.
pub const DOORS: [&str; 3] = ["Front door", "Workshop", "Server room"];

/// Monday to Friday, as schedule day bits (bit 0 Monday).
const WEEKDAYS: u8 = 0b001_1111;
/// Every day.
const EVERY_DAY: u8 = 0b111_1111;
const DAY_S: i64 = 86_400;

/// A demo person: name, groups, card UIDs, keypad user.
struct Person {
    name: &'static str,
    groups: &'static [&'static str],
    cards: &'static [&'static str],
    keypad: Option<(&'static str, Option<&'static str>, Option<&'static str>)>,
}

/// The people, their credentials and groups. Card UIDs are 4 or 7 bytes, as real cards have.
const PEOPLE: [Person; 9] = [
    Person {
        name: "Ada Lovelace",
        groups: &["Staff"],
        cards: &["04A1B2C3"],
        // TOTP, and HOTP for when the door's clock is not set.
        keypad: Some(("1234", Some("JBSWY3DPEHPK3PXP"), Some("GEZDGNBVGY3TQOJQ"))),
    },
    Person {
        name: "Grace Hopper",
        groups: &["Staff"],
        cards: &["04B2C3D4E5F607"],
        keypad: None,
    },
    Person {
        name: "Alan Turing",
        groups: &["Members"],
        cards: &["1A2B3C4D"],
        keypad: None,
    },
    Person {
        name: "Katherine Johnson",
        groups: &["Members"],
        cards: &["04C3D4E5F60718"],
        keypad: None,
    },
    Person {
        name: "Linus Pauling",
        groups: &["Members"],
        cards: &["5E6F7A8B"],
        keypad: Some(("4711", Some("KRSXG5CTMVRXEZLU"), None)),
    },
    Person {
        name: "Vera Visitor",
        groups: &[],
        cards: &["2C3D4E5F"],
        keypad: None,
    },
    Person {
        name: "Fire brigade",
        groups: &[],
        cards: &["04F1E2D3C4B5A6"],
        keypad: None,
    },
    Person {
        name: "Nick Nightshift",
        groups: &[],
        cards: &["6A7B8C9D"],
        keypad: None,
    },
    Person {
        name: "Margaret Hamilton",
        groups: &[],
        cards: &["7B8C9DAE"],
        keypad: None,
    },
];

/// Demo cards that are secure cards (NTAG 424 DNA): a virtual door's "present genuine card"
/// opens with them, a clone of their UID does not.
const SECURE_CARDS: [&str; 1] = ["04B2C3D4E5F607"];

/// A person who joins in two weeks (a rule that starts in the future).
const NEWCOMER: Person = Person {
    name: "Hedy Lamarr",
    groups: &[],
    cards: &["04D4E5F6071829"],
    keypad: None,
};

/// What was made.
#[derive(Clone, Debug)]
pub struct Demo {
    /// The site's id.
    pub site_id: i64,
    /// Each door: name, id, its one-time pairing code.
    pub doors: Vec<(String, i64, String)>,
}

/// Creates the demo site unless the database has a site already (then returns `None`), and
/// prints each door's pairing code as `demo door "<name>" pairing code <CODE>`.
pub async fn seed(state: &AppState) -> Result<Option<Demo>, ModelError> {
    let (sites,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sites")
        .fetch_one(state.db.pool())
        .await?;
    if sites > 0 {
        tracing::info!("demo: the database has a site already; nothing seeded");
        return Ok(None);
    }
    let now = crate::now_unix();
    let site_id = model::create_site(state, SITE, TIMEZONE).await?;
    let mut doors = Vec::new();
    for name in DOORS {
        doors.push((name, model::create_door(state, site_id, name).await?));
    }
    let door = |name: &str| {
        doors
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, id)| *id)
            .ok_or(ModelError::NotFound)
    };
    let staff = model::create_group(state, site_id, "Staff").await?;
    let members = model::create_group(state, site_id, "Members").await?;
    let weekdays = model::create_schedule(
        state,
        site_id,
        "Weekdays 08:00–20:00",
        &[LocalSlot {
            days: WEEKDAYS,
            start_min: 8 * 60,
            end_min: 20 * 60,
        }],
    )
    .await?;
    let night = model::create_schedule(
        state,
        site_id,
        "Night shift",
        &[LocalSlot {
            days: EVERY_DAY,
            start_min: 22 * 60,
            end_min: 6 * 60,
        }],
    )
    .await?;

    let mut people = Vec::new();
    for p in PEOPLE.iter().chain([&NEWCOMER]) {
        let id = model::create_person(state, site_id, p.name).await?;
        for uid in p.cards {
            let secure = SECURE_CARDS.contains(uid);
            model::add_card_kind(state, id, uid, secure).await?;
        }
        if let Some((code, totp, hotp)) = p.keypad {
            let spec = KeypadSpec {
                code: code.to_string(),
                totp_secret: totp.map(str::to_string),
                hotp_secret: hotp.map(str::to_string),
                hotp_counter: 0,
                digits: 6,
                period_s: 30,
            };
            model::add_keypad_user(state, id, &spec).await?;
        }
        for g in p.groups {
            model::add_member(state, if *g == "Staff" { staff } else { members }, id).await?;
        }
        people.push((p.name, id));
    }
    let person = |name: &str| {
        people
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, id)| Subject::Person(*id))
            .ok_or(ModelError::NotFound)
    };

    let rule = |door_id, subject, access, schedule_id| RuleSpec {
        door_id,
        subject,
        access,
        valid_from: 0,
        valid_until: 0,
        schedule_id,
    };
    let mut rules = Vec::new();
    for name in DOORS {
        rules.push(rule(
            door(name)?,
            Subject::Group(staff),
            AccessType::Unrestricted,
            None,
        ));
    }
    for name in ["Front door", "Workshop"] {
        rules.push(rule(
            door(name)?,
            Subject::Group(members),
            AccessType::Scheduled,
            Some(weekdays),
        ));
    }
    for name in ["Front door", "Server room"] {
        rules.push(rule(
            door(name)?,
            person("Nick Nightshift")?,
            AccessType::Scheduled,
            Some(night),
        ));
    }
    // The backend is asked each time the visitor comes.
    rules.push(rule(
        door("Front door")?,
        person("Vera Visitor")?,
        AccessType::Conditional,
        None,
    ));
    rules.push(rule(
        door("Front door")?,
        person("Fire brigade")?,
        AccessType::Emergency,
        None,
    ));
    // A former member: her weekday access ended a month ago.
    rules.push(RuleSpec {
        valid_from: now - 180 * DAY_S,
        valid_until: now - 30 * DAY_S,
        ..rule(
            door("Workshop")?,
            person("Margaret Hamilton")?,
            AccessType::Scheduled,
            Some(weekdays),
        )
    });
    // A new member: her weekday access starts in two weeks.
    rules.push(RuleSpec {
        valid_from: now + 14 * DAY_S,
        ..rule(
            door("Front door")?,
            person(NEWCOMER.name)?,
            AccessType::Scheduled,
            Some(weekdays),
        )
    });
    for r in &rules {
        model::add_rule(state, r).await?;
    }
    model::site_changed(state, site_id).await?;

    let mut out = Vec::new();
    for (name, id) in doors {
        let code = crate::device::new_pairing_code(state, id).await?;
        tracing::info!(door = name, code = %code, "demo door pairing code");
        println!("demo door \"{name}\" pairing code {code}");
        out.push((name.to_string(), id, code));
    }
    tracing::info!(site = SITE, people = people.len(), "demo site seeded");
    Ok(Some(Demo {
        site_id,
        doors: out,
    }))
}

/// The demo site's doors: name and id.
pub async fn doors(state: &AppState) -> Result<Vec<(String, i64)>, ModelError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT d.name, d.id FROM doors d JOIN sites s ON s.id = d.site_id WHERE s.name = $1 ORDER BY d.id",
    )
    .bind(SITE)
    .fetch_all(state.db.pool())
    .await?;
    Ok(rows)
}

/// Routes that exist only under `serve --demo`.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route(
        "/demo/pairing-codes",
        axum::routing::post(fresh_pairing_codes),
    )
}

/// `POST /demo/pairing-codes`: a fresh one-time code for every demo door, for
/// `chronolock sim live --demo`. Pairing with one replaces the door's previous device, so it
/// takes an admin session and its CSRF token (`X-CSRF-Token`), like every state-changing call.
async fn fresh_pairing_codes(
    axum::extract::State(state): axum::extract::State<AppState>,
    admin: crate::auth::Admin,
    headers: axum::http::HeaderMap,
) -> Result<axum::Json<serde_json::Value>, crate::error::AppError> {
    crate::auth::check_origin(&headers)?;
    let token = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    admin.check_csrf(token)?;
    let mut out = Vec::new();
    let internal = |e: ModelError| crate::error::AppError::Internal(e.to_string());
    for (name, id) in doors(&state).await.map_err(internal)? {
        let code = crate::device::new_pairing_code(&state, id)
            .await
            .map_err(internal)?;
        out.push(serde_json::json!({"door": name, "id": id, "code": code}));
    }
    Ok(axum::Json(serde_json::Value::Array(out)))
}

/// What the admin UI's panel shows of a virtual door.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PanelView {
    /// Door name.
    pub name: String,
    /// Powered on.
    pub powered: bool,
    /// Network connected.
    pub network: bool,
    /// NTP let through (`false`: blocked on the panel).
    pub ntp: bool,
    /// What the latest NTP request came to (`answered by HOST`, `no answer from HOST …`), or
    /// `None` before the first.
    pub ntp_last: Option<String>,
    /// Door id at the backend, once paired.
    pub door_id: Option<u64>,
    /// In setup mode (not paired yet).
    pub setup_mode: bool,
    /// The setup page's address while in setup mode.
    pub setup_url: Option<String>,
    /// Whether the clock is valid.
    pub clock_valid: bool,
    /// Its source.
    pub clock_source: Option<String>,
    /// The door's UTC, RFC 3339.
    pub clock_utc: Option<String>,
    /// Its error bound, milliseconds.
    pub clock_error_ms: Option<u64>,
    /// The lock is open.
    pub unlocked: bool,
    /// What the LEDs and buzzer last showed.
    pub feedback: Option<String>,
    /// The last decision: credential and outcome.
    pub last_decision: Option<(String, String)>,
    /// Installed list generation.
    pub generation: u64,
    /// Events waiting for the backend.
    pub outbox: usize,
    /// Battery millivolts.
    pub battery_mv: u16,
    /// Last sync outcome.
    pub last_sync: Option<String>,
    /// The door stands open.
    pub door_open: bool,
    /// The controller reads the door's contact (the door's settings say one is fitted).
    pub contact: bool,
    /// The alarm sounding, if any.
    pub alarm: Option<String>,
    /// The door holds a lockdown.
    pub lockdown: bool,
}

/// What the panel's buttons do to a virtual door.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PanelCommand {
    /// Present a card (UID bytes).
    Card(Vec<u8>),
    /// Present a secure card to the door's PN532: one personalised for the site, or (`clone`)
    /// a card that gives its UID without its key.
    SecureCard {
        /// Its 7-byte UID.
        uid: [u8; 7],
        /// A copy of the UID only.
        clone: bool,
    },
    /// Press keypad keys.
    Keys(String),
    /// Switch the power on or off.
    Power(bool),
    /// Cut the power, then switch it back on.
    PowerCycle,
    /// Connect or cut the network.
    Network(bool),
    /// Let NTP through or block it.
    Ntp(bool),
    /// Open (`true`) or close the door.
    Door(bool),
    /// Press the exit button.
    Rex,
}

/// A virtual door this process runs, as the admin UI sees it. The server only shows and
/// commands it; the door itself lives in another crate (the `chronolock` binary wires it in).
pub trait VirtualDoor: Send + Sync {
    /// What it shows now.
    fn view(&self) -> PanelView;
    /// Sends a command; false when the door has stopped.
    fn send(&self, command: PanelCommand) -> bool;
}

/// One demo door to run as a virtual door.
#[derive(Clone, Debug)]
pub struct DoorSpec {
    /// The door's id here.
    pub door_id: i64,
    /// Its name.
    pub name: String,
    /// This server's base URL.
    pub server: String,
    /// A pairing code, for a virtual door not paired yet.
    pub pairing_code: Option<String>,
    /// Its data directory (flash and RTC).
    pub dir: std::path::PathBuf,
    /// NTP servers, `host:port`.
    pub ntp: Vec<String>,
}

/// Runs virtual doors for `serve --demo`.
pub trait VirtualDoorHost: Send + Sync {
    /// The door id the virtual door in `dir` is paired with, if any.
    fn paired_door_id(&self, dir: &std::path::Path) -> Option<u64>;
    /// Starts the doors; their events go to `log_dir`.
    fn start(
        &self,
        doors: Vec<DoorSpec>,
        log_dir: &std::path::Path,
    ) -> Result<Vec<std::sync::Arc<dyn VirtualDoor>>, String>;
}

/// A [`VirtualDoorHost`] in a [`ServeConfig`](crate::ServeConfig).
#[derive(Clone)]
pub struct DoorHost(pub std::sync::Arc<dyn VirtualDoorHost>);

impl std::fmt::Debug for DoorHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DoorHost")
    }
}

/// A demo door run as a virtual door by this process.
#[derive(Clone)]
pub struct RunningDoor {
    /// The door's id.
    pub door_id: i64,
    /// Its name.
    pub name: String,
    /// The running virtual door.
    pub handle: std::sync::Arc<dyn VirtualDoor>,
}

impl std::fmt::Debug for RunningDoor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningDoor")
            .field("door_id", &self.door_id)
            .field("name", &self.name)
            .finish()
    }
}

/// `addr`, or this host's loopback at its port when `addr` is 0.0.0.0 or [::].
pub fn loopback_if_unspecified(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// Starts a virtual door for each demo door through the configured host, paired with this
/// server's device API at `addr` (a fresh pairing code for any door whose virtual device is not
/// paired yet), and prints where each door's panel is in the admin UI at `admin_url`.
/// Their flash and RTC live in `<data>/virtual-doors/door-<id>`, their events in
/// `<data>/virtual-doors`. Without a host, nothing is started.
pub async fn start_virtual_doors(
    state: &AppState,
    addr: std::net::SocketAddr,
    admin_url: &str,
    config: &crate::ServeConfig,
    seeded: Option<&Demo>,
) -> Result<(), String> {
    let Some(DoorHost(host)) = &config.door_host else {
        return Ok(());
    };
    let server = format!("http://{}", loopback_if_unspecified(addr));
    let base = config.data_dir.join("virtual-doors");
    std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    let mut specs = Vec::new();
    for (name, door_id) in doors(state).await.map_err(|e| e.to_string())? {
        let dir = base.join(format!("door-{door_id}"));
        let paired = host.paired_door_id(&dir) == Some(door_id as u64);
        let seeded_code = seeded
            .and_then(|d| d.doors.iter().find(|(_, id, _)| *id == door_id))
            .map(|(_, _, code)| code.clone());
        let pairing_code = if paired {
            None
        } else if seeded_code.is_some() {
            seeded_code
        } else {
            Some(
                crate::device::new_pairing_code(state, door_id)
                    .await
                    .map_err(|e| e.to_string())?,
            )
        };
        specs.push(DoorSpec {
            door_id,
            name,
            server: server.clone(),
            pairing_code,
            dir,
            ntp: config.ntp.clone(),
        });
    }
    let handles = host.start(specs.clone(), &base)?;
    let mut started = Vec::new();
    for (spec, handle) in specs.into_iter().zip(handles) {
        println!(
            "virtual door \"{}\": {admin_url}/doors/{}/virtual",
            spec.name, spec.door_id
        );
        started.push(RunningDoor {
            door_id: spec.door_id,
            name: spec.name,
            handle,
        });
    }
    if let Ok(mut doors) = state.virtual_doors.write() {
        *doors = started;
    }
    Ok(())
}
