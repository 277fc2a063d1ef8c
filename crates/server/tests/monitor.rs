//! What the admin watches, on SQLite and PostgreSQL: the dashboard, the access log with its
//! filters, pages and live stream, the charts, and the JSON API with its OpenAPI document.
//! Device data is written with SQL, as the device sync would.
#![allow(clippy::unwrap_used)] // test helpers: a failed request should fail the test loudly

mod common;
mod session;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use axum::Router;
use chronolock_server::{model, now_unix, AppState};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery";

async fn send(app: &Router, req: Request<Body>) -> Response<Body> {
    app.clone().oneshot(req).await.unwrap()
}

fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::builder()
        .uri(uri)
        .header(header::HOST, "localhost");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).unwrap()
}

async fn text(r: Response<Body>) -> String {
    String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

async fn json(app: &Router, uri: &str, cookie: &str) -> (StatusCode, Value) {
    let r = send(app, get(uri, Some(cookie))).await;
    let status = r.status();
    let ct = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("application/json"), "{uri}: {ct}");
    (status, serde_json::from_str(&text(r).await).unwrap())
}

async fn page(app: &Router, uri: &str, cookie: &str) -> (StatusCode, String) {
    let r = send(app, get(uri, Some(cookie))).await;
    (r.status(), text(r).await)
}

/// The app and a logged-in admin's cookie.
async fn login(state: &AppState) -> (Router, String) {
    session::login(state, PASSWORD).await
}

/// One event as a device sync stores it.
#[derive(Clone, Copy, Default)]
struct Ev<'a> {
    kind: &'a str,
    device_us: Option<i64>,
    received_us: i64,
    credential: Option<&'a str>,
    decision: Option<&'a str>,
    mv: Option<i32>,
}

impl<'a> Ev<'a> {
    fn decision(credential: &'a str, decision: &'a str, at_us: i64) -> Self {
        Ev {
            kind: "decision",
            device_us: Some(at_us),
            received_us: at_us + 1_000,
            credential: Some(credential),
            decision: Some(decision),
            mv: None,
        }
    }
}

async fn insert(state: &AppState, door: i64, ev: Ev<'_>) -> i64 {
    static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1);
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO events (door_id, device_event_id, kind, device_us, received_us, credential, decision, mv, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
    )
    .bind(door)
    .bind(NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
    .bind(ev.kind)
    .bind(ev.device_us)
    .bind(ev.received_us)
    .bind(ev.credential)
    .bind(ev.decision)
    .bind(ev.mv)
    .bind(Some("{\"note\":\"test\"}"))
    .fetch_one(state.db.pool())
    .await
    .unwrap();
    id
}

fn now_us() -> i64 {
    now_unix() * 1_000_000
}

fn event_ids(html: &str) -> Vec<i64> {
    html.split("id=\"event-")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().parse().unwrap())
        .collect()
}

/// The `<tr>` of a door on the dashboard.
fn door_row(html: &str, id: i64) -> &str {
    let start = html
        .find(&format!("id=\"door-{id}\""))
        .unwrap_or_else(|| panic!("door {id} is not on the dashboard"));
    let rest = &html[start..];
    &rest[..rest.find("</tr>").unwrap()]
}

#[tokio::test]
async fn dashboard_shows_each_doors_state() {
    for (label, state) in common::states("monitor_dash").await {
        let (app, cookie) = login(&state).await;
        let (_, empty) = page(&app, "/", &cookie).await;
        assert!(
            empty.contains("id=\"getting-started\""),
            "{label}: the first run's path: {empty}"
        );

        let site = model::create_site(&state, "Makerspace", "Europe/Berlin")
            .await
            .unwrap();
        let online = model::create_door(&state, site, "Online").await.unwrap();
        let offline = model::create_door(&state, site, "Offline").await.unwrap();
        let never = model::create_door(&state, site, "Never").await.unwrap();
        let unpaired = model::create_door(&state, site, "Unpaired").await.unwrap();
        let alice = model::create_person(&state, site, "Alice").await.unwrap();
        model::create_person(&state, site, "Bob").await.unwrap();
        model::add_card(&state, alice, "04A1B2C3").await.unwrap();
        let now = now_unix();
        // Online: synced 600 s ago with a 300 s interval (limit 2 × 300 + 30 = 630 s).
        // Offline: 700 s ago. Its device still has generation 2 of 4.
        let doors: [(i64, Option<i64>, i64, Option<i64>); 3] = [
            (online, Some(now - 600), 3, Some(3)),
            (offline, Some(now - 700), 4, Some(2)),
            (never, None, 1, None),
        ];
        for (door, last_sync, generation, device_generation) in doors {
            sqlx::query(
                "UPDATE doors SET paired_at = $1, last_sync = $2, sync_interval_s = $3, generation = $4, \
                 device_generation = $5 WHERE id = $6",
            )
            .bind(now - 86_400)
            .bind(last_sync)
            .bind(300i32)
            .bind(generation)
            .bind(device_generation)
            .bind(door)
            .execute(state.db.pool())
            .await
            .unwrap();
        }
        sqlx::query(
            "UPDATE doors SET clock_valid = 1, clock_source = 'ntp', clock_offset_us = 1500, \
             clock_error_us = 3000, battery_mv = $1 WHERE id = $2",
        )
        .bind(3700i32)
        .bind(online)
        .execute(state.db.pool())
        .await
        .unwrap();
        let t = now_us() - 3_600_000_000;
        insert(&state, online, Ev::decision("card:04A1B2C3", "GRANTED", t)).await;
        insert(
            &state,
            online,
            Ev::decision("card:04A1B2C3", "GRANTED_EMERGENCY", t),
        )
        .await;
        insert(
            &state,
            online,
            Ev::decision("card:0BADBAD0", "DENIED_UNKNOWN", t),
        )
        .await;
        // Older than a day: not counted.
        insert(
            &state,
            online,
            Ev::decision("card:04A1B2C3", "GRANTED", t - 2 * 86_400_000_000),
        )
        .await;

        let (status, html) = page(&app, "/", &cookie).await;
        assert_eq!(status, StatusCode::OK, "{label}");
        let row = door_row(&html, online);
        assert!(row.contains("data-status=\"online\""), "{label}: {row}");
        assert!(row.contains("10 min ago"), "{row}");
        assert!(row.contains("title=\"20"), "the UTC time in a title: {row}");
        assert!(
            row.contains("+1.5 ms ± 3.0 ms") && row.contains("ntp"),
            "{row}"
        );
        assert!(row.contains("3.70 V"), "{row}");
        assert!(!row.contains("pending"), "{row}");
        assert!(
            row.contains(&format!("href=\"/doors/{online}/charts\"")),
            "{row}"
        );
        assert!(row.contains(&format!("href=\"/doors/{online}\"")), "{row}");
        let row = door_row(&html, offline);
        assert!(row.contains("data-status=\"offline\""), "{row}");
        assert!(row.contains("pending"), "{row}");
        let row = door_row(&html, never);
        assert!(row.contains("data-status=\"never synced\""), "{row}");
        assert!(row.contains("never"), "{row}");
        let row = door_row(&html, unpaired);
        assert!(row.contains("data-status=\"not paired\""), "{row}");
        assert!(html.contains("id=\"count-doors\">4<"), "{html}");
        assert!(html.contains("id=\"count-people\">2<"), "{html}");
        assert!(html.contains("id=\"count-granted\">2<"), "{html}");
        assert!(html.contains("id=\"count-denied\">1<"), "{html}");

        // The same through the API.
        let (status, v) = json(&app, "/api/doors", &cookie).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["counts"]["granted_24h"], 2, "{v}");
        assert_eq!(v["counts"]["denied_24h"], 1);
        assert_eq!(v["counts"]["doors_online"], 1);
        let door = |id: i64| {
            v["doors"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["id"] == id)
                .unwrap()
                .clone()
        };
        assert_eq!(door(online)["online"], true);
        assert_eq!(door(online)["battery_mv"], 3700);
        assert_eq!(door(online)["clock_valid"], true);
        assert_eq!(door(offline)["online"], false);
        assert_eq!(door(offline)["list_pending"], true);
        assert_eq!(door(never)["last_sync"], Value::Null);
        assert_eq!(door(unpaired)["paired"], false);
        let (status, one) = json(&app, &format!("/api/doors/{offline}"), &cookie).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(one["name"], "Offline");
        assert_eq!(one["device_generation"], 2);
        let (status, _) = json(&app, "/api/doors/999999", &cookie).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, e) = json(&app, "/api/doors/front", &cookie).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(e["error"].as_str().unwrap().contains("`id`"), "{e}");
    }
}

#[tokio::test]
async fn log_filters_and_pages() {
    for (label, state) in common::states("monitor_log").await {
        let (app, cookie) = login(&state).await;
        let site = model::create_site(&state, "Makerspace", "Europe/Berlin")
            .await
            .unwrap();
        let front = model::create_door(&state, site, "Front door")
            .await
            .unwrap();
        let back = model::create_door(&state, site, "Back door").await.unwrap();
        let alice = model::create_person(&state, site, "Alice Archer")
            .await
            .unwrap();
        model::add_card(&state, alice, "04A1B2C3").await.unwrap();
        let keypad = model::KeypadSpec {
            code: "1234".into(),
            totp_secret: Some("JBSWY3DPEHPK3PXP".into()),
            digits: 6,
            period_s: 30,
            ..model::KeypadSpec::default()
        };
        model::add_keypad_user(&state, alice, &keypad)
            .await
            .unwrap();

        // 120 decisions at the front door, alternating granted / denied; 5 at the back.
        let base = now_us() - 3_600_000_000;
        let mut front_ids = Vec::new();
        for i in 0..120 {
            let (cred, decision) = if i % 2 == 0 {
                ("card:04A1B2C3", "GRANTED")
            } else {
                ("card:0BADBAD0", "DENIED_UNKNOWN")
            };
            front_ids.push(insert(&state, front, Ev::decision(cred, decision, base + i)).await);
        }
        let mut back_ids = Vec::new();
        for i in 0..5 {
            back_ids.push(
                insert(
                    &state,
                    back,
                    Ev::decision("keypad:1234", "DENIED_TIME_RESTRICTION", base + 1000 + i),
                )
                .await,
            );
        }
        // A report from a door whose clock was not set: shown at its received time.
        let report = insert(
            &state,
            back,
            Ev {
                kind: "report",
                received_us: base + 2000,
                mv: Some(3650),
                ..Ev::default()
            },
        )
        .await;
        // One decision on a known day: 2026-01-10 12:00 UTC (13:00 in Berlin).
        let dated = insert(
            &state,
            front,
            Ev::decision("card:04A1B2C3", "GRANTED", 1_768_046_400_000_000),
        )
        .await;
        let total = front_ids.len() + back_ids.len() + 2;

        // By default the log shows decisions, alarms and lockdown changes, not reports.
        let (status, html) = page(&app, "/log", &cookie).await;
        assert_eq!(status, StatusCode::OK, "{label}");
        assert!(
            !event_ids(&html).contains(&report),
            "{label}: no report by default"
        );
        assert!(!html.contains("3.65 V"), "{label}");

        // Newest first, 100 a page, keyset pages.
        let (status, html) = page(&app, "/log?kind=all", &cookie).await;
        assert_eq!(status, StatusCode::OK, "{label}");
        let first = event_ids(&html);
        assert_eq!(first.len(), 100);
        assert_eq!(first[0], dated, "newest id first");
        assert!(first.windows(2).all(|w| w[0] > w[1]));
        assert!(
            html.contains("data-stream=\"/log/stream?kind=all&amp;after="),
            "live when on the newest page"
        );
        assert!(html.contains("Alice Archer"), "the card's holder is named");
        assert!(html.contains("3.65 V"), "the report's voltage");
        assert!(html.contains("Europe/Berlin)"), "local time of the site");
        let older = format!("href=\"/log?kind=all&amp;before={}\"", first[99]);
        assert!(html.contains(&older), "{label}: no link to older events");
        let (_, html) = page(
            &app,
            &format!("/log?kind=all&before={}", first[99]),
            &cookie,
        )
        .await;
        let second = event_ids(&html);
        assert_eq!(second.len(), total - 100);
        assert!(second[0] < first[99]);
        assert!(!html.contains("id=\"older\""), "the last page");
        assert!(
            !html.contains("data-stream"),
            "older pages do not update live"
        );

        // Filters.
        let (_, html) = page(&app, &format!("/log?door={back}&kind=all"), &cookie).await;
        let mut ids = event_ids(&html);
        ids.sort_unstable();
        let mut expected = back_ids.clone();
        expected.push(report);
        assert_eq!(ids, expected, "door filter");
        let (_, html) = page(&app, "/log?decision=denied&kind=decision", &cookie).await;
        assert_eq!(event_ids(&html).len(), 65);
        assert!(!html.contains("<td class=\"granted\">"), "only denials");
        let (_, html) = page(&app, "/log?decision=DENIED_TIME_RESTRICTION", &cookie).await;
        assert_eq!(event_ids(&html).len(), 5);
        let (_, html) = page(&app, "/log?decision=granted", &cookie).await;
        assert_eq!(event_ids(&html).len(), 61);
        let (_, html) = page(&app, "/log?credential=a1b2", &cookie).await;
        assert_eq!(event_ids(&html).len(), 61, "credential substring, any case");
        let (_, html) = page(&app, "/log?credential=keypad%3A12", &cookie).await;
        assert_eq!(event_ids(&html).len(), 5);
        assert!(html.contains("Alice Archer"), "the keypad user is named");
        let (_, html) = page(&app, "/log?credential=archer", &cookie).await;
        assert_eq!(event_ids(&html).len(), 66, "by the holder's name");
        let (_, html) = page(&app, "/log?credential=100%25", &cookie).await;
        assert_eq!(event_ids(&html).len(), 0, "% is not a wildcard");
        assert!(html.contains("No events match"));
        let (_, html) = page(
            &app,
            "/log?kind=all&from=2026-01-10&until=2026-01-10",
            &cookie,
        )
        .await;
        assert_eq!(event_ids(&html), vec![dated], "one local day");
        assert!(html.contains(">2026-01-10 13:00:00<"), "{html}");
        let (_, html) = page(&app, "/log?from=2026-01-11&until=2026-01-12", &cookie).await;
        assert!(event_ids(&html).is_empty());

        // Bad filters: the page says what is wrong; the API answers 400 naming the parameter.
        let (status, html) = page(&app, "/log?door=front", &cookie).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            html.contains("id=\"filter-error\"") && html.contains("`door`"),
            "{html}"
        );
        let (status, html) = page(&app, "/log?from=yesterday", &cookie).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(html.contains("`from`"), "{html}");
        for (uri, param) in [
            ("/api/events?door=x", "`door`"),
            ("/api/events?limit=1001", "`limit`"),
            ("/api/events?limit=0", "`limit`"),
            ("/api/events?before=-3", "`before`"),
            ("/api/events?decision=no%20such", "`decision`"),
            ("/api/events?kind=Report!", "`kind`"),
            ("/api/events?until=2026-13-01", "`until`"),
            ("/api/events?from=2026-01-02&until=2026-01-01", "`until`"),
            ("/api/events?doors=1", "`doors`"),
            ("/api/events?door=1&door=2", "`door`"),
            ("/api/doors/1/battery?days=0", "`days`"),
            ("/api/doors/1/clock?days=x", "`days`"),
        ] {
            let (status, v) = json(&app, uri, &cookie).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{label}: {uri}");
            assert!(v["error"].as_str().unwrap().contains(param), "{uri}: {v}");
        }

        // The API pages with `before` until `next_before` is null, and sees every event once.
        let mut seen = Vec::new();
        let mut uri = "/api/events?limit=40".to_string();
        loop {
            let (status, v) = json(&app, &uri, &cookie).await;
            assert_eq!(status, StatusCode::OK, "{label}: {v}");
            seen.extend(
                v["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["id"].as_i64().unwrap()),
            );
            match v["next_before"].as_i64() {
                Some(b) => uri = format!("/api/events?limit=40&before={b}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), total);
        assert!(seen.windows(2).all(|w| w[0] > w[1]));
        let (_, v) = json(
            &app,
            &format!("/api/events?door={back}&kind=report"),
            &cookie,
        )
        .await;
        let e = &v["events"][0];
        assert_eq!(e["id"], report, "{v}");
        assert_eq!(e["mv"], 3650);
        assert_eq!(e["device_us"], Value::Null);
        assert_eq!(e["at_us"], base + 2000);
        assert_eq!(e["detail"]["note"], "test");
        let (_, v) = json(&app, "/api/events?credential=keypad:1234&limit=1", &cookie).await;
        assert_eq!(v["events"][0]["person"], "Alice Archer", "{v}");
        assert_eq!(v["events"][0]["door"], "Back door");
    }
}

/// Reads the stream until `needle` appears, for at most `limit`; returns what was read.
async fn read_until(body: &mut Body, needle: &str, limit: Duration) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !seen.contains(needle) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("no `{needle}` in time; got: {seen}"))
            .expect("the stream ended")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    seen
}

#[tokio::test]
async fn live_stream_sends_new_matching_events() {
    for (label, state) in common::states("monitor_sse").await {
        let (app, cookie) = login(&state).await;
        let site = model::create_site(&state, "Makerspace", "Europe/Berlin")
            .await
            .unwrap();
        let front = model::create_door(&state, site, "Front door")
            .await
            .unwrap();
        let back = model::create_door(&state, site, "Back door").await.unwrap();
        let old = insert(
            &state,
            front,
            Ev::decision("card:00000001", "GRANTED", now_us()),
        )
        .await;

        let r = send(
            &app,
            get(
                &format!("/log/stream?after={old}&door={front}"),
                Some(&cookie),
            ),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK, "{label}");
        assert!(r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let mut body = r.into_body();
        // Stored after the stream started: one at another door (filtered out), then one here.
        insert(
            &state,
            back,
            Ev::decision("card:0BADBAD0", "DENIED_UNKNOWN", now_us()),
        )
        .await;
        let new = insert(
            &state,
            front,
            Ev::decision("card:0000C0DE", "GRANTED", now_us()),
        )
        .await;
        let seen = read_until(&mut body, "card:0000C0DE", Duration::from_secs(15)).await;
        assert!(
            !seen.contains("0BADBAD0"),
            "{label}: the door filter holds: {seen}"
        );
        assert!(
            !seen.contains("card:00000001"),
            "nothing from before `after`"
        );
        assert!(seen.contains(&format!("id: {new}")), "{seen}");
        let data = seen
            .lines()
            .find(|l| l.starts_with("data:") && l.contains("0000C0DE"))
            .unwrap();
        let v: Value = serde_json::from_str(data.trim_start_matches("data:").trim()).unwrap();
        assert_eq!(v["id"], new);
        assert!(v["html"]
            .as_str()
            .unwrap()
            .contains(&format!("id=\"event-{new}\"")));
        drop(body);

        // A reconnecting browser resumes after the last event it saw.
        let later = insert(
            &state,
            front,
            Ev::decision("card:0000BEEF", "GRANTED", now_us()),
        )
        .await;
        let mut req = get(&format!("/log/stream?door={front}"), Some(&cookie));
        req.headers_mut()
            .insert("last-event-id", new.to_string().parse().unwrap());
        let mut body = send(&app, req).await.into_body();
        let seen = read_until(&mut body, "card:0000BEEF", Duration::from_secs(15)).await;
        assert!(seen.contains(&format!("id: {later}")));
        assert!(!seen.contains("0000C0DE"), "{seen}");

        // Without a session: 401 is for APIs; the stream is a page, so it leads to the login.
        let r = send(&app, get("/log/stream", None)).await;
        assert_eq!(r.headers()[header::LOCATION], "/login");
        let (status, v) = json(&app, "/log/stream?door=x", &cookie).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(v["error"].as_str().unwrap().contains("`door`"));
    }
}

#[tokio::test]
async fn charts_plot_battery_and_clock() {
    for (label, state) in common::states("monitor_charts").await {
        let (app, cookie) = login(&state).await;
        let site = model::create_site(&state, "Makerspace", "Europe/Berlin")
            .await
            .unwrap();
        let door = model::create_door(&state, site, "Front door")
            .await
            .unwrap();

        let (status, html) = page(&app, &format!("/doors/{door}/charts"), &cookie).await;
        assert_eq!(status, StatusCode::OK, "{label}");
        assert!(!html.contains("<svg"), "{label}: nothing to plot");
        assert!(html.contains("No battery reports") && html.contains("No clock samples"));

        let now = now_unix();
        for (days_ago, mv) in [(100, 3900), (30, 3800), (20, 3750), (1, 3700)] {
            insert(
                &state,
                door,
                Ev {
                    kind: "report",
                    device_us: Some((now - days_ago * 86_400) * 1_000_000),
                    received_us: (now - days_ago * 86_400) * 1_000_000,
                    mv: Some(mv),
                    ..Ev::default()
                },
            )
            .await;
        }
        for (hours_ago, offset_us, error_us) in [
            (200, 900, 100),
            (100, -2_500, 4_000),
            (50, 1_200, 800),
            (10, 300, 200),
            (1, -150, 150),
        ] {
            sqlx::query(
                "INSERT INTO clock_samples (door_id, at, offset_us, error_us, source) VALUES ($1, $2, $3, $4, 'ntp')",
            )
            .bind(door)
            .bind(now - hours_ago * 3600)
            .bind(offset_us as i64)
            .bind(error_us as i64)
            .execute(state.db.pool())
            .await
            .unwrap();
        }
        let (status, html) = page(&app, &format!("/doors/{door}/charts"), &cookie).await;
        assert_eq!(status, StatusCode::OK);
        let battery = &html[html.find("id=\"battery-chart\"").expect("a battery chart")..];
        let battery = &battery[..battery.find("</svg>").unwrap()];
        assert_eq!(battery.matches("<circle").count(), 3, "the last 90 days");
        assert!(battery.contains("battery (V)"), "the axis says its unit");
        assert!(battery.contains("3.70 V"), "a point's tooltip");
        let clock = &html[html.find("id=\"clock-chart\"").expect("a clock chart")..];
        let clock = &clock[..clock.find("</svg>").unwrap()];
        assert_eq!(clock.matches("<circle").count(), 4, "the last 7 days");
        assert!(clock.contains("<polygon"), "the error band");
        assert!(clock.contains("offset (ms)"));
        assert!(clock.contains("-2.5 ms ± 4.0 ms"), "{clock}");

        let (status, v) = json(&app, &format!("/api/doors/{door}/battery"), &cookie).await;
        assert_eq!(status, StatusCode::OK);
        let mvs: Vec<i64> = v["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["mv"].as_i64().unwrap())
            .collect();
        assert_eq!(mvs, vec![3800, 3750, 3700], "oldest first");
        let (_, v) = json(
            &app,
            &format!("/api/doors/{door}/battery?days=366"),
            &cookie,
        )
        .await;
        assert_eq!(v["points"].as_array().unwrap().len(), 4);
        let (_, v) = json(&app, &format!("/api/doors/{door}/clock"), &cookie).await;
        assert_eq!(v["points"].as_array().unwrap().len(), 4);
        assert_eq!(v["points"][0]["offset_us"], -2_500);
        assert_eq!(v["points"][0]["source"], "ntp");
        let (_, v) = json(&app, &format!("/api/doors/{door}/clock?days=30"), &cookie).await;
        assert_eq!(v["points"].as_array().unwrap().len(), 5);
        let (status, _) = json(&app, "/api/doors/424242/clock", &cookie).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = page(&app, "/doors/424242/charts", &cookie).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = page(&app, "/doors/x/charts", &cookie).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

/// The JSON routes this crate serves (besides /healthz).
const API_PATHS: [&str; 7] = [
    "/api/me",
    "/api/doors",
    "/api/doors/{id}",
    "/api/doors/{id}/battery",
    "/api/doors/{id}/clock",
    "/api/events",
    "/api/openapi.json",
];

/// Every `$ref` in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn api_needs_a_session_and_documents_itself() {
    for (label, state) in common::states("monitor_api").await {
        let (app, cookie) = login(&state).await;
        let site = model::create_site(&state, "Makerspace", "Europe/Berlin")
            .await
            .unwrap();
        let door = model::create_door(&state, site, "Front door")
            .await
            .unwrap();
        for path in API_PATHS {
            let uri = path.replace("{id}", &door.to_string());
            let r = send(&app, get(&uri, None)).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{label}: {uri}");
            let v: Value = serde_json::from_str(&text(r).await).unwrap();
            assert_eq!(v["error"], "unauthorized");
            let (status, _) = json(&app, &uri, &cookie).await;
            assert_eq!(status, StatusCode::OK, "{label}: {uri}");
        }
        for uri in ["/", "/log", &format!("/doors/{door}/charts")] {
            let r = send(&app, get(uri, None)).await;
            assert_eq!(r.status(), StatusCode::SEE_OTHER, "{uri}");
        }

        let (_, doc) = json(&app, "/api/openapi.json", &cookie).await;
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
        assert_eq!(doc["info"]["title"], "chronolock");
        let paths = doc["paths"].as_object().unwrap();
        for path in API_PATHS.iter().chain(&["/healthz"]) {
            assert!(paths[*path]["get"].is_object(), "{path} is not documented");
        }
        // That every documented route is served, and every served one documented: tests/api_admin.rs.
        let events = &paths["/api/events"]["get"]["parameters"];
        for name in [
            "door",
            "kind",
            "decision",
            "credential",
            "from",
            "until",
            "before",
            "limit",
        ] {
            assert!(
                events.as_array().unwrap().iter().any(|p| p["name"] == name),
                "/api/events parameter {name}"
            );
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["session"]["in"], "cookie",
            "{doc}"
        );
        assert_eq!(
            paths["/healthz"]["get"]["security"],
            serde_json::json!([{}])
        );
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{r} is not defined"
            );
        }
        // It round-trips through the OpenAPI model.
        let parsed: utoipa::openapi::OpenApi = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(serde_json::to_value(parsed).unwrap(), doc);
    }
}
