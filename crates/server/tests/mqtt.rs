//! Home Assistant over MQTT, against a real Mosquitto broker each test starts on a free loopback
//! port (and kills when it ends): discovery configs per door, retained states, events after a
//! door's sync, lockdown, a deleted door's entities removed, a broker restart (reconnect and
//! publish again), the server running while the broker is down, passwords, and TLS
//! (`mqtts://` with `--mqtt-ca`; an untrusted broker gets nothing).
//!
//! Without `/usr/sbin/mosquitto` (Debian's `mosquitto`, which `scripts/test.sh` installs) the
//! tests are skipped with a note, except under CI, where they fail.
#![allow(clippy::unwrap_used)] // test helpers: a failed step should fail the test loudly

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chronolock_core::access::Decision;
use chronolock_core::controller::{AlarmKind, Credential};
use chronolock_core::protocol::{
    DeviceStatus, Enrolled, Enrolment, EventBody, SyncRequestWriter, WireEvent,
};
use chronolock_server::mqtt::{self, MqttConfig, Options};
use chronolock_server::{device, model, router, AppState};
use http_body_util::BodyExt;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::Value;
use tokio::sync::mpsc;
use tower::ServiceExt;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// The longest any one expected message may take.
const WAIT: Duration = Duration::from_secs(15);

/// A Mosquitto broker on a loopback port, killed on drop.
struct Broker {
    port: u16,
    dir: PathBuf,
    extra: String,
    child: Option<Child>,
}

impl Broker {
    /// A broker, or `None` (with a note) where Mosquitto is not installed and this is not CI.
    fn start(name: &str, extra: &str) -> Option<Broker> {
        if !Path::new(MOSQUITTO).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the MQTT tests: {MOSQUITTO} is missing (Debian's mosquitto; \
                 scripts/test.sh installs it)"
            );
            eprintln!("note: {MOSQUITTO} is not installed; the MQTT test {name} is skipped");
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("chronolock-mqtt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let mut broker = Broker {
            port,
            dir,
            extra: extra.to_string(),
            child: None,
        };
        broker.run();
        Some(broker)
    }

    fn run(&mut self) {
        let config = self.dir.join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {} 127.0.0.1\npersistence false\nlog_dest none\n{}\n",
                self.port, self.extra
            ),
        )
        .unwrap();
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One message as a subscriber saw it.
#[derive(Clone, Debug)]
struct Message {
    topic: String,
    payload: String,
}

/// A subscriber to `homeassistant/#` and `chronolock/#` that reconnects by itself.
struct Watcher {
    rx: mpsc::UnboundedReceiver<Message>,
    task: tokio::task::JoinHandle<()>,
    /// The newest payload per topic seen so far.
    latest: BTreeMap<String, String>,
}

impl Watcher {
    fn new(port: u16, login: Option<(&str, &str)>) -> Watcher {
        let mut options = MqttOptions::new(format!("watcher-{}", free_port()), "127.0.0.1", port);
        options.set_max_packet_size(1 << 20, 1 << 20);
        if let Some((user, password)) = login {
            options.set_credentials(user, password);
        }
        let (client, mut events) = AsyncClient::new(options, 100);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        for topic in ["homeassistant/#", "chronolock/#"] {
                            client.try_subscribe(topic, QoS::AtLeastOnce).unwrap();
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let message = Message {
                            topic: p.topic.clone(),
                            payload: String::from_utf8_lossy(&p.payload).into_owned(),
                        };
                        if tx.send(message).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Watcher {
            rx,
            task,
            latest: BTreeMap::new(),
        }
    }

    /// Reads messages until `done` holds for the newest payloads, or panics after [`WAIT`].
    async fn until(&mut self, what: &str, mut done: impl FnMut(&BTreeMap<String, String>) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(&self.latest) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => {
                    self.latest.insert(m.topic, m.payload);
                }
                _ => panic!(
                    "no {what} within {WAIT:?}; seen: {:#?}",
                    self.latest.keys().collect::<Vec<_>>()
                ),
            }
        }
    }

    /// The messages on `topic` that arrive until `done` holds for one, or panics after [`WAIT`].
    async fn message(&mut self, topic: &str, mut done: impl FnMut(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => {
                    self.latest.insert(m.topic.clone(), m.payload.clone());
                    if m.topic == topic {
                        if let Ok(v) = serde_json::from_str::<Value>(&m.payload) {
                            if done(&v) {
                                return v;
                            }
                        }
                    }
                }
                _ => panic!(
                    "no matching message on {topic} within {WAIT:?}; the last: {:?}",
                    self.latest.get(topic)
                ),
            }
        }
    }

    /// Whether nothing arrives on `topic` for `quiet`.
    async fn silent(&mut self, topic: &str, quiet: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + quiet;
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            if m.topic == topic {
                return false;
            }
        }
        true
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn fast(mut options: Options) -> Options {
    options.poll = Duration::from_millis(200);
    options.refresh = Duration::from_millis(500);
    options.backoff = Duration::from_millis(200);
    options
}

/// The MQTT task, as the server runs it; `stop` ends it.
struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(state: &AppState, config: MqttConfig) -> Running {
        let options = fast(Options::from_config(&config).unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(mqtt::run(state.clone(), options, async move {
            let _ = stopped.await;
        }));
        Running {
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the MQTT task stops within 10 s")
            .unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pair(state: &AppState, door: i64) -> Enrolled {
    let code = device::new_pairing_code(state, door).await.unwrap();
    let device = Enrolment::new([0x11; 32], [0x22; 16], &code);
    let r = router(state.clone())
        .oneshot(
            Request::post("/device/v1/enrol")
                .body(Body::from(device.request().to_vec()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.into_body().collect().await.unwrap().to_bytes();
    device.finish(&body).unwrap()
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A sync carrying `events`, with a status (battery 3650 mV, a valid clock).
async fn sync(state: &AppState, device: &Enrolled, events: &[WireEvent]) {
    let status = DeviceStatus {
        wall_us: Some(chronolock_server::now_micros()),
        uptime_us: 1,
        generation: 0,
        source: None,
        error_us: 20_000,
        battery_mv: 3650,
        partial_list: None,
        list_capacity: 0,
        firmware_version: 0,
        partial_firmware: None,
    };
    let counter = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut buf = vec![0u8; 4096];
    let mut w =
        SyncRequestWriter::new(&mut buf, device.door_id, [9; 16], counter, &status).unwrap();
    for e in events {
        w.push(e).unwrap();
    }
    let n = w.finish(&device.device_key);
    buf.truncate(n);
    let r = router(state.clone())
        .oneshot(
            Request::post("/device/v1/sync")
                .body(Body::from(buf))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The status is written behind, within a second: write it now.
    state.door_status.flush(&state.db).await.unwrap();
}

fn event(id: u64, body: EventBody) -> WireEvent {
    WireEvent {
        id,
        device_us: Some(chronolock_server::now_micros()),
        body,
    }
}

/// A site with a paired door (synced once) and an unpaired one.
async fn site(state: &AppState) -> (i64, i64, i64, Enrolled) {
    let site = model::create_site(state, "Makerspace", "Europe/Berlin")
        .await
        .unwrap();
    let front = model::create_door(state, site, "Front door").await.unwrap();
    let back = model::create_door(state, site, "Back door").await.unwrap();
    let device = pair(state, front).await;
    sync(state, &device, &[]).await;
    (site, front, back, device)
}

const DOOR_OBJECTS: [(&str, &str); 9] = [
    ("binary_sensor", "contact"),
    ("binary_sensor", "alarm"),
    ("binary_sensor", "online"),
    ("sensor", "battery"),
    ("sensor", "clock_offset"),
    ("sensor", "clock_source"),
    ("sensor", "last_sync"),
    ("sensor", "last_access"),
    ("event", "event"),
];

fn config_topics(door: i64) -> Vec<String> {
    DOOR_OBJECTS
        .iter()
        .map(|(component, object)| {
            format!("homeassistant/{component}/chronolock/door_{door}_{object}/config")
        })
        .collect()
}

fn has_configs(latest: &BTreeMap<String, String>, door: i64) -> bool {
    config_topics(door)
        .iter()
        .all(|t| latest.get(t).is_some_and(|p| !p.is_empty()))
}

fn json(latest: &BTreeMap<String, String>, topic: &str) -> Value {
    serde_json::from_str(&latest[topic]).unwrap_or_else(|e| panic!("{topic}: {e}"))
}

#[tokio::test]
async fn doors_reach_home_assistant_and_come_back_after_a_broker_restart() {
    let Some(mut broker) = Broker::start("ha", "allow_anonymous true") else {
        return;
    };
    let state = AppState::open(&common::sqlite_config("mqtt_ha"))
        .await
        .unwrap();
    let (site, front, back, device) = site(&state).await;
    let mut watcher = Watcher::new(broker.port, None);
    let running = Running::start(&state, MqttConfig::new(broker.url()));

    // Discovery: every entity of both doors and the lockdown, as valid configs.
    watcher
        .until("discovery configs", |l| {
            has_configs(l, front)
                && has_configs(l, back)
                && l.contains_key("homeassistant/binary_sensor/chronolock/lockdown/config")
                && l.get("chronolock/status").is_some_and(|s| s == "online")
        })
        .await;
    let mut unique_ids = HashSet::new();
    for door in [front, back] {
        for (topic, (component, object)) in config_topics(door).iter().zip(DOOR_OBJECTS) {
            let config = json(&watcher.latest, topic);
            let unique_id = config["unique_id"].as_str().unwrap().to_string();
            assert_eq!(unique_id, format!("chronolock_door_{door}_{object}"));
            assert!(
                unique_ids.insert(unique_id),
                "{topic}: unique_id used twice"
            );
            let device = &config["device"];
            assert_eq!(
                device["identifiers"][0],
                format!("chronolock_door_{door}"),
                "{topic}"
            );
            assert_eq!(device["manufacturer"], "chronolock");
            assert_eq!(device["model"], "Door controller");
            assert_eq!(
                device["name"],
                if door == front {
                    "Front door"
                } else {
                    "Back door"
                }
            );
            let state_topic = config["state_topic"].as_str().unwrap();
            if component == "event" {
                assert_eq!(state_topic, format!("chronolock/door/{door}/event"));
                assert!(config["event_types"]
                    .as_array()
                    .unwrap()
                    .contains(&Value::from("decision")));
            } else {
                assert_eq!(state_topic, format!("chronolock/door/{door}/state"));
                assert!(config["value_template"].as_str().is_some(), "{topic}");
            }
            let availability = config["availability"].as_array().unwrap();
            assert_eq!(availability[0]["topic"], "chronolock/status");
            assert_eq!(availability[0]["payload_available"], "online");
            assert_eq!(availability[0]["payload_not_available"], "offline");
        }
        let contact = json(&watcher.latest, &config_topics(door)[0]);
        assert_eq!(contact["device_class"], "door");
        assert_eq!(
            contact["availability"][1]["topic"],
            format!("chronolock/door/{door}/availability")
        );
        assert_eq!(contact["availability_mode"], "all");
    }
    let battery = json(&watcher.latest, &config_topics(front)[3]);
    assert_eq!(battery["device_class"], "voltage");
    assert_eq!(battery["unit_of_measurement"], "mV");
    let last_sync = json(&watcher.latest, &config_topics(front)[6]);
    assert_eq!(last_sync["device_class"], "timestamp");

    // Retained states: the paired door online with its battery, the other offline.
    let front_state = format!("chronolock/door/{front}/state");
    let front_events = format!("chronolock/door/{front}/event");
    watcher
        .until("door states", |l| {
            l.contains_key(&front_state)
                && l.contains_key(&format!("chronolock/door/{back}/state"))
                && l.contains_key("chronolock/lockdown")
        })
        .await;
    let s = json(&watcher.latest, &front_state);
    assert_eq!(s["name"], "Front door");
    assert_eq!(s["online"], true);
    assert_eq!(s["battery_mv"], 3650);
    assert!(s["last_sync"].as_str().unwrap().ends_with('Z'), "{s}");
    assert_eq!(s["contact"], Value::Null);
    assert_eq!(s["alarm"], Value::Null);
    assert_eq!(
        watcher.latest[&format!("chronolock/door/{front}/availability")],
        "online"
    );
    assert_eq!(
        watcher.latest[&format!("chronolock/door/{back}/availability")],
        "offline"
    );
    assert_eq!(json(&watcher.latest, "chronolock/lockdown")["on"], false);

    // A door's decision and alarm: events as they are stored, then the state.
    let person = model::create_person(&state, site, "Ada").await.unwrap();
    model::add_card(&state, person, "04A1B2C3").await.unwrap();
    sync(
        &state,
        &device,
        &[
            event(
                1,
                EventBody::Decision {
                    credential: Credential::card(&[0x04, 0xA1, 0xB2, 0xC3]),
                    decision: Decision::Granted,
                },
            ),
            event(2, EventBody::Door { open: true }),
            event(
                3,
                EventBody::Alarm {
                    kind: AlarmKind::DoorForced,
                },
            ),
        ],
    )
    .await;
    let synced = std::time::Instant::now();
    let decision = watcher
        .message(&front_events, |v| v["event_type"] == "decision")
        .await;
    eprintln!(
        "a decision reached the broker {:?} after its sync (events looked for every 200 ms)",
        synced.elapsed()
    );
    assert_eq!(decision["decision"], "GRANTED");
    assert_eq!(decision["person"], "Ada");
    assert_eq!(decision["credential_type"], "card");
    assert!(
        !decision.to_string().contains("04A1B2C3"),
        "no card UID: {decision}"
    );
    assert_eq!(decision["door"]["name"], "Front door");
    let alarm = watcher
        .message(&front_events, |v| v["event_type"] == "alarm")
        .await;
    assert_eq!(alarm["detail"]["kind"], "door_forced");
    let s = watcher
        .message(&front_state, |v| v["alarm"] == "door_forced")
        .await;
    assert_eq!(s["contact"], "open");
    assert_eq!(s["last_access"]["decision"], "GRANTED");
    assert_eq!(s["last_access"]["person"], "Ada");

    // Lockdown, site-wide.
    chronolock_server::lockdown::give(&state, site, true, None)
        .await
        .unwrap();
    let lockdown = watcher
        .message("chronolock/lockdown", |v| v["on"] == true)
        .await;
    assert_eq!(lockdown["sites"][0]["site"], "Makerspace");
    // (The state may have come before the lockdown topic.)
    watcher
        .until("the door's state under lockdown", |l| {
            serde_json::from_str::<Value>(&l[&front_state]).unwrap()["lockdown"] == true
        })
        .await;

    // A deleted door: its configs and state are cleared.
    chronolock_server::directory::delete_door(&state, site, back)
        .await
        .unwrap();
    watcher
        .until("the deleted door's configs cleared", |l| {
            config_topics(back)
                .iter()
                .all(|t| l.get(t).is_some_and(String::is_empty))
                && l.get(&format!("chronolock/door/{back}/state"))
                    .is_some_and(String::is_empty)
        })
        .await;

    // The broker restarts (and forgets every retained message): discovery and states again.
    broker.stop();
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // What the old broker sent is all in; only the new one's counts.
    while watcher.rx.try_recv().is_ok() {}
    watcher.latest.clear();
    broker.run();
    watcher
        .until("discovery and states after the broker restarted", |l| {
            has_configs(l, front)
                && l.contains_key(&front_state)
                && l.get("chronolock/status").is_some_and(|s| s == "online")
        })
        .await;
    eprintln!(
        "republished {:?} after the broker went away",
        started.elapsed()
    );
    assert!(
        !has_configs(&watcher.latest, back),
        "a deleted door stays deleted"
    );

    // A clean stop says offline.
    running.stop().await;
    watcher
        .until("offline", |l| {
            l.get("chronolock/status").is_some_and(|s| s == "offline")
        })
        .await;
}

#[tokio::test]
async fn a_deleted_door_is_cleared_after_a_restart_of_the_server() {
    let Some(broker) = Broker::start("stale", "allow_anonymous true") else {
        return;
    };
    let state = AppState::open(&common::sqlite_config("mqtt_stale"))
        .await
        .unwrap();
    let (site, front, back, _device) = site(&state).await;
    let mut watcher = Watcher::new(broker.port, None);
    let running = Running::start(&state, MqttConfig::new(broker.url()));
    watcher
        .until("discovery", |l| {
            has_configs(l, front) && has_configs(l, back)
        })
        .await;
    running.stop().await;
    // Deleted while the server is stopped: the broker still holds its retained configs.
    chronolock_server::directory::delete_door(&state, site, back)
        .await
        .unwrap();
    let running = Running::start(&state, MqttConfig::new(broker.url()));
    watcher
        .until("the deleted door's configs cleared", |l| {
            config_topics(back)
                .iter()
                .all(|t| l.get(t).is_some_and(String::is_empty))
        })
        .await;
    assert!(has_configs(&watcher.latest, front));
    running.stop().await;
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_the_right_one_works() {
    let dir = std::env::temp_dir().join(format!("chronolock-mqtt-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let passwords = dir.join("passwords");
    if Path::new(MOSQUITTO).exists() {
        let made = Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(&passwords)
            .args(["door", "s3cret pass"])
            .status()
            .expect("mosquitto_passwd (Debian's mosquitto)");
        assert!(made.success());
    }
    let extra = format!(
        "allow_anonymous false\npassword_file {}",
        passwords.display()
    );
    let Some(broker) = Broker::start("password", &extra) else {
        return;
    };
    let state = AppState::open(&common::sqlite_config("mqtt_pw"))
        .await
        .unwrap();
    let (_, front, _, _) = site(&state).await;
    let mut watcher = Watcher::new(broker.port, Some(("door", "s3cret pass")));

    // The broker itself refuses a wrong password…
    let mut options = MqttOptions::new("probe", "127.0.0.1", broker.port);
    options.set_credentials("door", "wrong");
    let (_client, mut events) = AsyncClient::new(options, 10);
    let refused = tokio::time::timeout(WAIT, events.poll()).await.unwrap();
    assert!(
        matches!(refused, Err(rumqttc::ConnectionError::ConnectionRefused(_))),
        "{refused:?}"
    );

    // …so the server publishes nothing with one, and keeps trying.
    let mut config = MqttConfig::new(broker.url());
    config.user = Some("door".into());
    config.password = Some("wrong".into());
    let running = Running::start(&state, config);
    assert!(
        watcher
            .silent("chronolock/status", Duration::from_secs(2))
            .await,
        "nothing published with a wrong password"
    );
    running.stop().await;

    // The right one, in the URL's user information (percent-encoded).
    let url = format!("mqtt://door:s3cret%20pass@127.0.0.1:{}", broker.port);
    let running = Running::start(&state, MqttConfig::new(url));
    watcher
        .until("discovery with the right password", |l| {
            has_configs(l, front) && l.get("chronolock/status").is_some_and(|s| s == "online")
        })
        .await;
    running.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_server_runs_while_the_broker_is_down_and_publishes_once_it_is_up() {
    let Some(mut broker) = Broker::start("serve", "allow_anonymous true") else {
        return;
    };
    broker.stop();
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = chronolock_server::ServeConfig {
        listen,
        mqtt: Some(MqttConfig::new(broker.url())),
        ..common::sqlite_config("mqtt_serve")
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(chronolock_server::serve_until(config, async move {
        let _ = stopped.await;
    }));
    // The server answers although the broker is down.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(listen).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The broker comes up: the server finds it (its backoff is a second at first).
    broker.run();
    let mut watcher = Watcher::new(broker.port, None);
    watcher
        .until("online", |l| {
            l.get("chronolock/status").is_some_and(|s| s == "online")
                && l.contains_key("homeassistant/binary_sensor/chronolock/lockdown/config")
        })
        .await;
    let _ = stop.send(());
    tokio::time::timeout(WAIT, server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
    watcher
        .until("offline", |l| {
            l.get("chronolock/status").is_some_and(|s| s == "offline")
        })
        .await;
}

#[tokio::test]
async fn mqtts_checks_the_broker_against_the_given_ca() {
    let dir = std::env::temp_dir().join(format!("chronolock-mqtt-certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    // TLS on the broker's port; a plain listener beside it for the watcher.
    let plain = free_port();
    let extra = format!(
        "allow_anonymous true\ncertfile {}\nkeyfile {}\nlistener {plain} 127.0.0.1",
        cert.display(),
        key.display()
    );
    let Some(broker) = Broker::start("tls", &extra) else {
        return;
    };
    let state = AppState::open(&common::sqlite_config("mqtt_tls"))
        .await
        .unwrap();
    let (_, front, _, _) = site(&state).await;
    let mut watcher = Watcher::new(plain, None);
    let url = format!("mqtts://127.0.0.1:{}", broker.port);

    // Against the public roots the self-signed broker is not trusted: nothing is published.
    let running = Running::start(&state, MqttConfig::new(url.clone()));
    assert!(
        watcher
            .silent("chronolock/status", Duration::from_secs(2))
            .await,
        "an untrusted broker gets nothing"
    );
    running.stop().await;

    // With its certificate as --mqtt-ca, over TLS.
    let mut config = MqttConfig::new(url);
    config.ca = Some(cert);
    let running = Running::start(&state, config);
    watcher
        .until("discovery over TLS", |l| {
            has_configs(l, front) && l.get("chronolock/status").is_some_and(|s| s == "online")
        })
        .await;
    running.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
