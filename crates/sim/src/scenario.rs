//! The scenario file (JSON Lines) of the stable scenario contract: a `world` line, then steps.
//!
//! Parsing is strict: an unknown step, an unknown field, a wrong type or a time that runs
//! backwards is an error naming its line, so a typo never silently changes what is simulated.

use std::path::Path;

use chronolock_core::UnixTime;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// A malformed scenario: which line, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{}line {line}: {message}", file.as_deref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct ScenarioError {
    /// The file, when known.
    pub file: Option<String>,
    /// 1-based line number (0 when the file could not be read at all).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl ScenarioError {
    fn at(line: usize, message: impl Into<String>) -> Self {
        ScenarioError {
            file: None,
            line,
            message: message.into(),
        }
    }
}

/// The fixed card master key of scenarios that name none. A test key: never use it for a real
/// site.
pub const TEST_CARD_MASTER_KEY: [u8; 16] = *b"chronolock cards";

/// An AES-128 key in 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CardMasterKey(pub [u8; 16]);

impl std::fmt::Debug for CardMasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardMasterKey(..)")
    }
}

impl<'de> Deserialize<'de> for CardMasterKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        data_encoding::HEXUPPER_PERMISSIVE
            .decode(text.as_bytes())
            .ok()
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(CardMasterKey)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "card_master_key `{text}` is not 32 hex digits (an AES-128 key)"
                ))
            })
    }
}

impl World {
    /// The site's card master key.
    pub fn card_master_key(&self) -> [u8; 16] {
        self.card_master_key.map_or(TEST_CARD_MASTER_KEY, |k| k.0)
    }
}

/// A time in the scenario: RFC 3339 text or Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Utc(pub UnixTime);

impl<'de> Deserialize<'de> for Utc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => parse_utc(&s).map(Utc).map_err(serde::de::Error::custom),
            Value::Number(n) => n
                .as_f64()
                .filter(|f| f.is_finite() && f.abs() < 1e12)
                .map(|f| Utc(UnixTime::from_micros((f * 1e6).round() as i64)))
                .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a usable Unix time"))),
            other => Err(serde::de::Error::custom(format!(
                "expected an RFC 3339 time or Unix seconds, got {other}"
            ))),
        }
    }
}

/// Parses RFC 3339 text (`2026-11-24T08:59:00Z`) as UTC.
pub fn parse_utc(s: &str) -> Result<UnixTime, String> {
    let ts: jiff::Timestamp = s
        .parse()
        .map_err(|e| format!("`{s}` is not an RFC 3339 time: {e}"))?;
    Ok(UnixTime::from_micros(ts.as_microsecond()))
}

/// Formats UTC as RFC 3339, to the millisecond.
pub fn format_utc(t: UnixTime) -> String {
    let ms = t.as_micros().div_euclid(1000) * 1000;
    match jiff::Timestamp::from_microsecond(ms) {
        Ok(ts) => ts.to_string(),
        Err(_) => format!("unix:{}", t.secs()),
    }
}

fn some<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// The world at `start_utc`: the first line of a scenario.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct World {
    /// True UTC when the simulation starts. Default 2026-01-01T00:00:00Z.
    #[serde(default = "default_start")]
    pub start_utc: Utc,
    /// The RTC: absent or `null` for none fitted.
    #[serde(default)]
    pub rtc: Option<RtcSpec>,
    /// The device oscillator's true frequency error in ppm. Default 10.
    #[serde(default = "default_device_drift")]
    pub device_drift_ppm: f64,
    /// Whether the network is up at the start. Default true.
    #[serde(default = "yes")]
    pub network: bool,
    /// The NTP server, or a list of independent servers.
    #[serde(default)]
    pub ntp: NtpServers,
    /// The backend.
    #[serde(default)]
    pub backend: BackendSpec,
    /// The allow-list: a path relative to the scenario file, or the object itself.
    #[serde(default)]
    pub allowlist: Option<Value>,
    /// Seed of every random choice (the device's RNG). Default 0.
    #[serde(default)]
    pub seed: u64,
    /// The device has synced with a backend before (it is past setup mode). Default false.
    #[serde(default)]
    pub provisioned: bool,
    /// The setup button is held at every boot: setup mode even when provisioned. Default false.
    #[serde(default)]
    pub setup_button: bool,
    /// The device's time floor (its build time). Default 2020-01-01T00:00:00Z.
    #[serde(default)]
    pub time_floor_utc: Option<Utc>,
    /// The battery voltage at the start, in millivolts. Default 3700.
    #[serde(default = "default_battery")]
    pub battery_mv: u32,
    /// The door itself: its position contact and held-open time.
    #[serde(default)]
    pub door: DoorSpec,
    /// The site's card master key for secure cards (32 hex digits). Default
    /// [`TEST_CARD_MASTER_KEY`].
    #[serde(default)]
    pub card_master_key: Option<CardMasterKey>,
    /// Free text, ignored.
    #[serde(default)]
    pub comment: Option<String>,
}

/// The door's position contact.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoorSpec {
    /// A door-position contact is fitted. Default false: no contact, no door alarms, and
    /// `door` steps change nothing.
    #[serde(default)]
    pub contact: bool,
    /// Seconds the door may stay open after an authorised opening. Default 30.
    #[serde(default = "default_held_open")]
    pub held_open_s: f64,
}

impl Default for DoorSpec {
    fn default() -> Self {
        DoorSpec {
            contact: false,
            held_open_s: default_held_open(),
        }
    }
}

fn default_held_open() -> f64 {
    30.0
}

fn default_battery() -> u32 {
    3700
}

fn default_start() -> Utc {
    Utc(UnixTime::from_secs(1_767_225_600))
}
fn default_device_drift() -> f64 {
    10.0
}
fn default_rtc_drift() -> f64 {
    2.0
}
fn yes() -> bool {
    true
}
fn default_ntp_delay() -> f64 {
    20.0
}
fn default_backend_delay() -> f64 {
    40.0
}
fn default_stratum() -> u8 {
    2
}

/// An RTC fitted to the device.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtcSpec {
    /// What its registers say at the start; `null` for garbage registers. Default: `start_utc`.
    #[serde(default, deserialize_with = "some")]
    pub utc: Option<Option<Utc>>,
    /// Oscillator-stop flag. Default false.
    #[serde(default)]
    pub osf: bool,
    /// Its true frequency error in ppm. Default 2.
    #[serde(default = "default_rtc_drift")]
    pub drift_ppm: f64,
}

/// One NTP server's behaviour.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NtpSpec {
    /// Whether it answers. Default true.
    #[serde(default = "yes")]
    pub reachable: bool,
    /// How far its time is from true time, in seconds. Default 0.
    #[serde(default)]
    pub offset_s: f64,
    /// Round trip, split evenly both ways, in milliseconds. Default 20.
    #[serde(default = "default_ntp_delay")]
    pub delay_ms: f64,
    /// Stratum it reports (0 with `kiss`). Default 2.
    #[serde(default = "default_stratum")]
    pub stratum: u8,
    /// Leap indicator it reports (3: unsynchronised). Default 0.
    #[serde(default)]
    pub leap: u8,
    /// A kiss-o'-death code (`RATE`, `DENY`, `RSTR`) it answers with instead of the time.
    #[serde(default)]
    pub kiss: Option<String>,
}

impl Default for NtpSpec {
    fn default() -> Self {
        NtpSpec {
            reachable: true,
            offset_s: 0.0,
            delay_ms: 20.0,
            stratum: 2,
            leap: 0,
            kiss: None,
        }
    }
}

/// One server, or several independent ones.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum NtpServers {
    /// One server.
    One(NtpSpec),
    /// Several (at most four).
    Many(Vec<NtpSpec>),
}

impl Default for NtpServers {
    fn default() -> Self {
        NtpServers::One(NtpSpec::default())
    }
}

impl NtpServers {
    /// The servers as a list.
    pub fn into_vec(self) -> Vec<NtpSpec> {
        match self {
            NtpServers::One(s) => vec![s],
            NtpServers::Many(v) => v,
        }
    }
}

/// The backend's behaviour.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// Whether it answers. Default true.
    #[serde(default = "yes")]
    pub reachable: bool,
    /// Credentials the backend grants when a CONDITIONAL entry asks.
    #[serde(default)]
    pub conditional_grant: Vec<String>,
    /// Round trip in milliseconds. Default 40.
    #[serde(default = "default_backend_delay")]
    pub delay_ms: f64,
    /// How far its clock is from true time, in seconds. Default 0.
    #[serde(default)]
    pub offset_s: f64,
    /// The site is in lockdown from the start. Default false.
    #[serde(default)]
    pub lockdown: bool,
}

impl Default for BackendSpec {
    fn default() -> Self {
        BackendSpec {
            reachable: true,
            conditional_grant: Vec::new(),
            delay_ms: 40.0,
            offset_s: 0.0,
            lockdown: false,
        }
    }
}

/// Changes to an NTP server.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NtpChange {
    /// Which server (index into the world's list). Default 0.
    #[serde(default)]
    pub server: usize,
    /// New reachability.
    pub reachable: Option<bool>,
    /// New offset.
    pub offset_s: Option<f64>,
    /// New round trip.
    pub delay_ms: Option<f64>,
    /// New stratum.
    pub stratum: Option<u8>,
    /// New leap indicator.
    pub leap: Option<u8>,
    /// New kiss code; `""` to stop kissing.
    pub kiss: Option<String>,
}

/// Changes to the backend.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendChange {
    /// New reachability.
    pub reachable: Option<bool>,
    /// New round trip.
    pub delay_ms: Option<f64>,
    /// New clock offset.
    pub offset_s: Option<f64>,
    /// The site goes into (`true`) or out of lockdown.
    pub lockdown: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkArgs {
    up: bool,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhoneArgs {
    utc: Utc,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CardArgs {
    uid: String,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecureCardArgs {
    uid: String,
    #[serde(default)]
    clone: bool,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysArgs {
    keys: String,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatteryArgs {
    mv: u32,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DoorArgs {
    open: bool,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// What a step does.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Power on (or reset, if running).
    Boot,
    /// Cut the power: RAM is lost, flash and the RTC are kept.
    PowerOff,
    /// The network goes up or down.
    Network(bool),
    /// An NTP server changes.
    Ntp(NtpChange),
    /// The backend changes.
    Backend(BackendChange),
    /// A phone at setup sends this time.
    PhoneTime(UnixTime),
    /// A card is presented to a UID-only reader (UID bytes).
    Card(Vec<u8>),
    /// A secure card is presented: one personalised for this site, or (`clone`) a card that
    /// gives the UID but does not hold the key.
    SecureCard {
        /// Its 7-byte UID.
        uid: Vec<u8>,
        /// A copy of the UID without the key.
        clone: bool,
    },
    /// Keys typed on the keypad.
    Keys(String),
    /// The battery voltage now.
    Battery(u32),
    /// The door-position contact reports the door open (`true`) or closed.
    Door(bool),
    /// The request-to-exit button is pressed.
    Rex,
    /// Simulate until the step's time, then stop.
    End,
}

/// One step: at `t_us` microseconds after the start, `action`.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The line it came from.
    pub line: usize,
    /// Microseconds since the start.
    pub t_us: i64,
    /// What happens.
    pub action: Action,
}

/// A parsed scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The world.
    pub world: World,
    /// The world's allow-list, resolved: the object itself, read from its file if given a path.
    pub allowlist: Option<Value>,
    /// The allow-list compiled and signed with [`test_site_key`] (generation 1, created 30 days
    /// before `start_utc`), as the device holds it in flash.
    pub list: Option<Vec<u8>>,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// Longest scenario the runner accepts: about 31 years of virtual time.
const MAX_T_S: f64 = 1e9;

impl Scenario {
    /// Reads and parses a scenario file; a relative allow-list path is resolved beside it.
    pub fn from_file(path: &Path) -> Result<Self, ScenarioError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: Some(name.clone()),
            line: 0,
            message: format!("cannot read the scenario: {e}"),
        })?;
        Self::parse(&text, path.parent()).map_err(|mut e| {
            e.file = Some(name);
            e
        })
    }

    /// Parses scenario text; `base` is where relative allow-list paths are looked up.
    pub fn parse(text: &str, base: Option<&Path>) -> Result<Self, ScenarioError> {
        let mut world: Option<(usize, World)> = None;
        let mut steps: Vec<Step> = Vec::new();
        let mut ended = false;
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(raw)
                .map_err(|e| ScenarioError::at(line, format!("not valid JSON: {e}")))?;
            let Value::Object(mut obj) = value else {
                return Err(ScenarioError::at(line, "expected a JSON object"));
            };
            if world.is_none() {
                let Some(w) = obj.remove("world") else {
                    return Err(ScenarioError::at(
                        line,
                        "the first line must be {\"world\": {...}}",
                    ));
                };
                if let Some(k) = obj.keys().next() {
                    return Err(ScenarioError::at(
                        line,
                        format!("unexpected field `{k}` beside `world`"),
                    ));
                }
                let w: World =
                    from_value(w).map_err(|e| ScenarioError::at(line, format!("world: {e}")))?;
                check_world(&w).map_err(|e| ScenarioError::at(line, format!("world: {e}")))?;
                world = Some((line, w));
                continue;
            }
            if ended {
                return Err(ScenarioError::at(line, "no step may follow `end`"));
            }
            let step = parse_step(line, &mut obj)?;
            if let Some(prev) = steps.last() {
                if step.t_us < prev.t_us {
                    return Err(ScenarioError::at(
                        line,
                        format!(
                            "`t` goes backwards ({} after {})",
                            seconds(step.t_us),
                            seconds(prev.t_us)
                        ),
                    ));
                }
            }
            ended = step.action == Action::End;
            steps.push(step);
        }
        let Some((world_line, world)) = world else {
            return Err(ScenarioError::at(
                1,
                "empty scenario: the first line must be {\"world\": {...}}",
            ));
        };
        let allowlist = match &world.allowlist {
            Some(Value::String(rel)) => {
                let path = base.map_or_else(|| Path::new(rel).to_path_buf(), |b| b.join(rel));
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    ScenarioError::at(
                        world_line,
                        format!("world: allowlist `{}`: {e}", path.display()),
                    )
                })?;
                Some(serde_json::from_str(&text).map_err(|e| {
                    ScenarioError::at(
                        world_line,
                        format!("world: allowlist `{}` is not JSON: {e}", path.display()),
                    )
                })?)
            }
            Some(Value::Object(o)) => Some(Value::Object(o.clone())),
            Some(other) => {
                return Err(ScenarioError::at(
                    world_line,
                    format!("world: allowlist must be a path or an object, got {other}"),
                ))
            }
            None => None,
        };
        let created = world.start_utc.0.secs() - 30 * 86_400;
        let list = allowlist
            .as_ref()
            .map(|v| {
                let entries = chronolock_allowlist::parse_source_value(v)?;
                // Sealed to the scenario's door, with the site's card master key.
                let keys = chronolock_core::allowlist::CardMasterKeys {
                    current: (world.card_master_key(), 1),
                    previous: None,
                };
                chronolock_allowlist::compile_for_door(
                    &entries,
                    1,
                    created,
                    &test_site_key(),
                    Some(chronolock_core::protocol::list_key(
                        &crate::runner::DEVICE_KEY,
                    )),
                    Some(keys),
                )
            })
            .transpose()
            .map_err(|e| ScenarioError::at(world_line, format!("world: allowlist: {e}")))?;
        Ok(Scenario {
            world,
            allowlist,
            list,
            steps,
        })
    }
}

/// The fixed key the simulator signs scenario allow-lists with (its public half is the
/// simulated device's site key). A test key: never use it for a real site.
pub fn test_site_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[0x5E; 32])
}

fn from_value<T: DeserializeOwned>(v: Value) -> Result<T, serde_json::Error> {
    serde_json::from_value(v)
}

fn seconds(us: i64) -> String {
    format!("{}", us as f64 / 1e6)
}

fn check_world(w: &World) -> Result<(), String> {
    let ppm_ok = |p: f64| p.is_finite() && p.abs() <= 1000.0;
    if !ppm_ok(w.device_drift_ppm) {
        return Err(format!(
            "device_drift_ppm {} is not within ±1000",
            w.device_drift_ppm
        ));
    }
    if let Some(rtc) = &w.rtc {
        if !ppm_ok(rtc.drift_ppm) {
            return Err(format!(
                "rtc.drift_ppm {} is not within ±1000",
                rtc.drift_ppm
            ));
        }
    }
    let held = w.door.held_open_s;
    if !(held.is_finite() && (1.0..=65_535.0).contains(&held)) {
        return Err(format!(
            "door.held_open_s {held} is not between 1 and 65535 seconds"
        ));
    }
    let servers = w.ntp.clone().into_vec();
    if servers.is_empty() || servers.len() > chronolock_core::config::MAX_NTP_SERVERS {
        return Err(format!(
            "ntp: between 1 and {} servers",
            chronolock_core::config::MAX_NTP_SERVERS
        ));
    }
    for (i, s) in servers.iter().enumerate() {
        check_ntp(s.offset_s, s.delay_ms, s.leap, s.kiss.as_deref())
            .map_err(|e| format!("ntp[{i}]: {e}"))?;
    }
    check_delay(w.backend.delay_ms).map_err(|e| format!("backend: {e}"))?;
    check_offset(w.backend.offset_s).map_err(|e| format!("backend: {e}"))?;
    Ok(())
}

fn check_ntp(offset_s: f64, delay_ms: f64, leap: u8, kiss: Option<&str>) -> Result<(), String> {
    check_offset(offset_s)?;
    check_delay(delay_ms)?;
    if leap > 3 {
        return Err(format!("leap {leap} is not 0–3"));
    }
    if let Some(k) = kiss {
        if k.len() > 4 || !k.is_ascii() {
            return Err(format!("kiss `{k}` is not a code of up to 4 ASCII letters"));
        }
    }
    Ok(())
}

fn check_offset(offset_s: f64) -> Result<(), String> {
    if offset_s.is_finite() && offset_s.abs() <= 4e9 {
        Ok(())
    } else {
        Err(format!(
            "offset_s {offset_s} is not a usable number of seconds"
        ))
    }
}

fn check_delay(delay_ms: f64) -> Result<(), String> {
    if delay_ms.is_finite() && (0.0..=3_600_000.0).contains(&delay_ms) {
        Ok(())
    } else {
        Err(format!("delay_ms {delay_ms} is not between 0 and 3600000"))
    }
}

fn parse_step(line: usize, obj: &mut Map<String, Value>) -> Result<Step, ScenarioError> {
    let err = |m: String| ScenarioError::at(line, m);
    let t = obj
        .remove("t")
        .ok_or_else(|| err("missing `t` (seconds since start)".into()))?;
    let t_s = t
        .as_f64()
        .filter(|t| t.is_finite() && *t >= 0.0 && *t <= MAX_T_S)
        .ok_or_else(|| {
            err(format!(
                "`t` must be a number of seconds from 0 to {MAX_T_S}, got {t}"
            ))
        })?;
    let what = obj
        .remove("do")
        .ok_or_else(|| err("missing `do` (what the step does)".into()))?;
    let Value::String(what) = what else {
        return Err(err(format!("`do` must be a string, got {what}")));
    };
    let rest = Value::Object(std::mem::take(obj));
    let args = |e: serde_json::Error| err(format!("`{what}`: {e}"));
    let action = match what.as_str() {
        "boot" => from_value::<NoArgs>(rest).map(|_| Action::Boot).map_err(args)?,
        "power_off" => from_value::<NoArgs>(rest).map(|_| Action::PowerOff).map_err(args)?,
        "end" => from_value::<NoArgs>(rest).map(|_| Action::End).map_err(args)?,
        "network" => Action::Network(from_value::<NetworkArgs>(rest).map_err(args)?.up),
        "ntp" => {
            let c: NtpChange = from_value(rest).map_err(args)?;
            check_ntp(c.offset_s.unwrap_or(0.0), c.delay_ms.unwrap_or(0.0), c.leap.unwrap_or(0), c.kiss.as_deref())
                .map_err(|e| err(format!("`ntp`: {e}")))?;
            Action::Ntp(c)
        }
        "backend" => {
            let c: BackendChange = from_value(rest).map_err(args)?;
            check_offset(c.offset_s.unwrap_or(0.0)).map_err(|e| err(format!("`backend`: {e}")))?;
            check_delay(c.delay_ms.unwrap_or(0.0)).map_err(|e| err(format!("`backend`: {e}")))?;
            Action::Backend(c)
        }
        "phone_time" => Action::PhoneTime(from_value::<PhoneArgs>(rest).map_err(args)?.utc.0),
        "card" => {
            let uid = from_value::<CardArgs>(rest).map_err(args)?.uid;
            Action::Card(parse_uid(&uid).map_err(|e| err(format!("`card`: {e}")))?)
        }
        "secure_card" => {
            let a = from_value::<SecureCardArgs>(rest).map_err(args)?;
            let uid = parse_uid(&a.uid).map_err(|e| err(format!("`secure_card`: {e}")))?;
            if uid.len() != chronolock_core::card::UID_LEN {
                return Err(err(format!(
                    "`secure_card`: uid `{}` has {} bytes; secure cards have 7",
                    a.uid,
                    uid.len()
                )));
            }
            Action::SecureCard {
                uid,
                clone: a.clone,
            }
        }
        "keys" => {
            let keys = from_value::<KeysArgs>(rest).map_err(args)?.keys;
            if let Some(bad) = keys.chars().find(|c| !(c.is_ascii_digit() || *c == '*' || *c == '#')) {
                return Err(err(format!("`keys`: `{bad}` is not a keypad key (0–9, *, #)")));
            }
            Action::Keys(keys)
        }
        "battery" => Action::Battery(from_value::<BatteryArgs>(rest).map_err(args)?.mv),
        "door" => Action::Door(from_value::<DoorArgs>(rest).map_err(args)?.open),
        "rex" => from_value::<NoArgs>(rest).map(|_| Action::Rex).map_err(args)?,
        other => {
            return Err(err(format!(
                "unknown step `{other}` (expected boot, power_off, network, ntp, backend, phone_time, card, secure_card, keys, battery, door, rex or end)"
            )))
        }
    };
    Ok(Step {
        line,
        t_us: (t_s * 1e6).round() as i64,
        action,
    })
}

/// A card UID in hex: 4, 7 or 10 bytes.
pub fn parse_uid(hex: &str) -> Result<Vec<u8>, String> {
    if hex.len() % 2 != 0 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("uid `{hex}` is not an even number of hex digits"));
    }
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0))
        .collect();
    if ![4, 7, 10].contains(&bytes.len()) {
        return Err(format!(
            "uid `{hex}` has {} bytes; card UIDs have 4, 7 or 10",
            bytes.len()
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ScenarioError {
        Scenario::parse(text, None).unwrap_err()
    }

    #[test]
    fn parses_the_contract_example() {
        let s = Scenario::parse(
            r#"{"world": {"start_utc": "2026-11-24T08:59:00Z", "rtc": {"utc": "2026-11-24T08:58:58Z", "osf": false, "drift_ppm": 2.0}, "device_drift_ppm": 10.0, "network": false, "ntp": {"reachable": true, "offset_s": 0.0, "delay_ms": 20}, "backend": {"reachable": true, "conditional_grant": ["card:04A1B2C3"]}, "allowlist": {"entries": []}}}
{"t": 0, "do": "boot"}

{"t": 5, "do": "network", "up": true}
{"t": 6, "do": "card", "uid": "04A1B2C3"}
{"t": 7, "do": "keys", "keys": "1234*123456#"}
{"t": 8.5, "do": "ntp", "offset_s": 30}
{"t": 9, "do": "phone_time", "utc": "2026-11-24T09:00:00Z"}
{"t": 10, "do": "battery", "mv": 3700}
{"t": 60, "do": "end"}"#,
            None,
        )
        .unwrap();
        assert_eq!(s.world.start_utc.0, UnixTime::from_secs(1_795_510_740));
        assert_eq!(s.steps.len(), 8);
        assert_eq!(s.steps[1].action, Action::Network(true));
        assert_eq!(s.steps[1].line, 4);
        assert_eq!(
            s.steps[2].action,
            Action::Card(vec![0x04, 0xA1, 0xB2, 0xC3])
        );
        assert_eq!(s.steps[4].t_us, 8_500_000);
        assert!(s.allowlist.is_some());
    }

    #[test]
    fn rtc_null_and_utc_null_differ() {
        let s = Scenario::parse(r#"{"world": {"rtc": null}}"#, None).unwrap();
        assert!(s.world.rtc.is_none());
        let s = Scenario::parse(r#"{"world": {"rtc": {"utc": null}}}"#, None).unwrap();
        assert_eq!(s.world.rtc.unwrap().utc, Some(None));
        let s = Scenario::parse(r#"{"world": {"rtc": {}}}"#, None).unwrap();
        assert_eq!(s.world.rtc.unwrap().utc, None);
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("", 1, "empty scenario"),
            ("{\"t\":0,\"do\":\"boot\"}", 1, "first line must be"),
            (
                "{\"world\":{}}\n{\"t\":0,\"do\":\"fly\"}",
                2,
                "unknown step `fly`",
            ),
            (
                "{\"world\":{}}\n\n{\"t\":5,\"do\":\"boot\"}\n{\"t\":4,\"do\":\"boot\"}",
                4,
                "goes backwards",
            ),
            (
                "{\"world\":{}}\n{\"t\":-1,\"do\":\"boot\"}",
                2,
                "`t` must be",
            ),
            ("{\"world\":{}}\n{\"do\":\"boot\"}", 2, "missing `t`"),
            ("{\"world\":{}}\n{\"t\":1}", 2, "missing `do`"),
            (
                "{\"world\":{}}\n{\"t\":1,\"do\":\"door\"}",
                2,
                "`door`: missing field `open`",
            ),
            (
                "{\"world\":{}}\n{\"t\":1,\"do\":\"rex\",\"open\":true}",
                2,
                "unknown field `open`",
            ),
            (
                "{\"world\":{}}\n{\"t\":1,\"do\":\"backend\",\"lockdown\":\"yes\"}",
                2,
                "`backend`",
            ),
            (
                "{\"world\":{\"door\":{\"contact\":true,\"held_open_s\":0}}}",
                1,
                "held_open_s",
            ),
            (
                "{\"world\":{}}\n{\"t\":1,\"do\":\"network\"}",
                2,
                "missing field `up`",
            ),
            (
                "{\"world\":{}}\n{\"t\":1,\"do\":\"boot\",\"extra\":1}",
                2,
                "unknown field `extra`",
            ),
            (
                "{\"world\":{}}\n{\"t\":1,\"do\":\"card\",\"uid\":\"0102\"}",
                2,
                "4, 7 or 10",
            ),
            (
                "{\"world\":{}}\n{\"t\":1,\"do\":\"card\",\"uid\":\"zz\"}",
                2,
                "hex",
            ),
            (
                "{\"world\":{}}\n{\"t\":1,\"do\":\"keys\",\"keys\":\"12a#\"}",
                2,
                "keypad key",
            ),
            (
                "{\"world\":{}}\n{\"t\":1,\"do\":\"end\"}\n{\"t\":2,\"do\":\"boot\"}",
                3,
                "follow `end`",
            ),
            ("{\"world\":{}}\nnot json", 2, "not valid JSON"),
            ("{\"world\":{\"start_utc\":\"yesterday\"}}", 1, "RFC 3339"),
            ("{\"world\":{\"ntp\":{\"delay_ms\":-5}}}", 1, "delay_ms"),
            (
                "{\"world\":{\"colour\":\"red\"}}",
                1,
                "unknown field `colour`",
            ),
            (
                "{\"world\":{\"allowlist\":\"missing.json\"}}",
                1,
                "allowlist",
            ),
            (
                "{\"world\":{}}\n{\"t\":1,\"do\":\"ntp\",\"leap\":7}",
                2,
                "leap",
            ),
            ("[1,2]", 1, "JSON object"),
        ];
        for (text, line, needle) in cases {
            let e = err(text);
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn utc_round_trips_through_text() {
        let t = parse_utc("2026-11-24T08:59:00.021Z").unwrap();
        assert_eq!(format_utc(t), "2026-11-24T08:59:00.021Z");
        assert_eq!(
            format_utc(UnixTime::from_secs(1_795_510_740)),
            "2026-11-24T08:59:00Z"
        );
    }
}
