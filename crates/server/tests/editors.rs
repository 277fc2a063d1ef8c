//! The admin UI's editors through real HTTP requests with a logged-in session, on SQLite and
//! PostgreSQL: building a site, doors following every change, bad input, the show-once keypad
//! secrets, unknown ids and CSRF.
#![allow(clippy::unwrap_used)] // test helpers: a failed request should fail the test loudly

mod common;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use chronolock_core::access::{evaluate, Decision, Verdict};
use chronolock_core::allowlist::{AccessType, AllowList};
use chronolock_core::otp::{self, OtpParams};
use chronolock_core::{UnixTime, WallTime};
use chronolock_server::{model, router, AppState};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// An answer: status, headers, body text.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The id at the end of the redirect's path.
    fn new_id(&self) -> i64 {
        assert_eq!(self.status, StatusCode::SEE_OTHER, "{}", self.body);
        self.location().rsplit('/').next().unwrap().parse().unwrap()
    }
}

/// A browser with an admin session.
struct Browser {
    app: Router,
    cookie: String,
    csrf: String,
}

/// Percent-encodes a form value (application/x-www-form-urlencoded).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._*".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn send(app: &Router, req: Request<Body>) -> Answer {
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body =
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl Browser {
    /// Sets up the first admin and keeps the session.
    async fn new(state: &AppState) -> Browser {
        let app = router(state.clone());
        let r = send(
            &app,
            Request::builder()
                .method("POST")
                .uri("/setup")
                .header(header::HOST, "localhost")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(
                    "username=boss&password=long+enough+1&confirm=long+enough+1",
                ))
                .unwrap(),
        )
        .await;
        let cookie = r
            .headers
            .get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let mut browser = Browser {
            app,
            cookie,
            csrf: String::new(),
        };
        let me: serde_json::Value =
            serde_json::from_str(&browser.get("/api/me").await.body).unwrap();
        browser.csrf = me["csrf_token"].as_str().unwrap().to_string();
        browser
    }

    async fn get(&self, uri: &str) -> Answer {
        send(
            &self.app,
            Request::builder()
                .uri(uri)
                .header(header::HOST, "localhost")
                .header(header::COOKIE, &self.cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    /// Posts a form as the browser would: with the session's CSRF token.
    async fn post(&self, uri: &str, fields: &[(&str, &str)]) -> Answer {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(uri, &form_body(&all), None).await
    }

    async fn post_raw(&self, uri: &str, body: &str, origin: Option<&str>) -> Answer {
        let mut b = Request::builder()
            .method("POST")
            .uri(uri)
            .header(header::HOST, "localhost")
            .header(header::COOKIE, &self.cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(o) = origin {
            b = b.header(header::ORIGIN, o);
        }
        send(&self.app, b.body(Body::from(body.to_string())).unwrap()).await
    }

    /// Creates the site, a door and a person; returns (site, door, person).
    async fn basics(&self, state: &AppState) -> (i64, i64, i64) {
        let r = self
            .post(
                "/site",
                &[("name", "Makerspace"), ("timezone", "Europe/Berlin")],
            )
            .await;
        assert_eq!(
            r.location(),
            "/doors",
            "first run: the door is next; {}",
            r.body
        );
        let (site,): (i64,) = sqlx::query_as("SELECT id FROM sites")
            .fetch_one(state.db.pool())
            .await
            .unwrap();
        let door = self
            .post("/doors", &[("name", "Front door")])
            .await
            .new_id();
        let person = self.post("/people", &[("name", "Alice")]).await.new_id();
        (site, door, person)
    }
}

async fn generation(state: &AppState, door: i64) -> i64 {
    let (g,): (i64,) = sqlx::query_as("SELECT generation FROM doors WHERE id = $1")
        .bind(door)
        .fetch_one(state.db.pool())
        .await
        .unwrap();
    g
}

async fn count(state: &AppState, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql)
        .fetch_one(state.db.pool())
        .await
        .unwrap();
    n
}

/// The door's current list, verified with the site's key.
async fn door_list(state: &AppState, door: i64) -> Vec<u8> {
    let (_, bytes) = model::door_list(state, door).await.unwrap().unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&state.site_public_key).unwrap();
    AllowList::verify(&bytes, &key).unwrap();
    bytes
}

fn card_verdict(bytes: &[u8], uid: &[u8], at: jiff::Timestamp) -> Option<Verdict> {
    let list = AllowList::open(bytes).unwrap();
    let policy = list.policy(list.find_card(uid)?)?;
    Some(evaluate(
        &policy,
        list.slots_of(&policy),
        Some(&WallTime::new(UnixTime::from_secs(at.as_second()), 0)),
    ))
}

/// The text between `start` and the next `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in {text}"))
        + start.len();
    let len = text[from..].find(end).unwrap();
    &text[from..from + len]
}

/// The text inside the element with `id`.
fn element_text<'a>(html: &'a str, id: &str) -> &'a str {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    between(&html[at..], ">", "<")
}

/// The backup codes on a sheet.
fn hotp_codes(html: &str) -> Vec<String> {
    html.split("class=\"hotp-code secret\">")
        .skip(1)
        .map(|s| s[..s.find('<').unwrap()].to_string())
        .collect()
}

/// Next Wednesday (local) at `hour`:00 in Berlin, within the compiled schedule's horizon.
fn next_wednesday_berlin(hour: i8) -> jiff::Timestamp {
    let zone = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
    let today = jiff::Timestamp::now().to_zoned(zone.clone()).date();
    let mut day = today.tomorrow().unwrap();
    while day.weekday() != jiff::civil::Weekday::Wednesday {
        day = day.tomorrow().unwrap();
    }
    day.at(hour, 0, 0, 0).to_zoned(zone).unwrap().timestamp()
}

#[tokio::test]
async fn editors_build_a_site_and_the_doors_follow() {
    for (label, state) in common::states("editors_site").await {
        let b = Browser::new(&state).await;

        // Without a site, the editors point to /site.
        let r = b.get("/doors").await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{label}");
        assert!(r.body.contains("href=\"/site\""), "{}", r.body);
        assert!(b.get("/site").await.body.contains("Set up the site"));

        // A bad time zone is refused beside its field, and no site is made.
        let r = b
            .post(
                "/site",
                &[("name", "Makerspace"), ("timezone", "Mars/Olympus")],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.body.contains("id=\"timezone-error\""), "{}", r.body);
        assert!(r.body.contains("value=\"Makerspace\""), "keeps the input");
        assert_eq!(count(&state, "SELECT COUNT(*) FROM sites").await, 0);

        let (_, door, alice) = b.basics(&state).await;
        assert_eq!(
            generation(&state, door).await,
            1,
            "a new door gets its list"
        );
        let page = b.get("/site").await.body;
        assert!(page.contains("value=\"Europe/Berlin\""), "{page}");

        // A bad card UID: 422 with the message beside the field, nothing stored.
        for bad in ["zz", "04B0"] {
            let r = b
                .post(&format!("/people/{alice}/cards"), &[("uid", bad)])
                .await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
            assert!(r.body.contains("id=\"uid-error\""), "{}", r.body);
            assert!(r.body.contains(&format!("value=\"{bad}\"")));
        }
        assert_eq!(count(&state, "SELECT COUNT(*) FROM cards").await, 0);
        let r = b
            .post(&format!("/people/{alice}/cards"), &[("uid", "04 a1 b2 c3")])
            .await;
        assert_eq!(r.location(), format!("/people/{alice}"));
        assert!(b.get(r.location()).await.body.contains("04A1B2C3"));

        // A schedule in local time: weekdays 09:00–18:00 Berlin.
        let r = b
            .post(
                "/schedules",
                &[
                    ("name", "Office hours"),
                    ("days", "mon"),
                    ("days", "tue"),
                    ("days", "wed"),
                    ("days", "thu"),
                    ("days", "fri"),
                    ("start", "9:00"),
                    ("end", "18:00"),
                ],
            )
            .await;
        let hours = r.new_id();
        let page = b.get(&format!("/schedules/{hours}")).await.body;
        assert!(
            page.contains("Times are local, <strong>Europe/Berlin</strong>"),
            "{page}"
        );
        assert!(page.contains("Mon–Fri 09:00–18:00"), "{page}");
        let r = b
            .post(
                "/schedules",
                &[
                    ("name", "Never"),
                    ("days", "mon"),
                    ("start", "09:00"),
                    ("end", "09:00"),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.body.contains("id=\"end-error\""));
        assert_eq!(count(&state, "SELECT COUNT(*) FROM schedules").await, 1);

        // A SCHEDULED rule needs its schedule; with it, the door's generation rises.
        let before = generation(&state, door).await;
        let person = format!("person:{alice}");
        let door_id = door.to_string();
        let mut rule = vec![
            ("from", "door:0"),
            ("subject", person.as_str()),
            ("door", door_id.as_str()),
            ("access", "SCHEDULED"),
            ("valid_from", ""),
            ("valid_until", ""),
            ("schedule", ""),
        ];
        let r = b.post("/rules/new", &rule).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.body.contains("id=\"schedule-error\""), "{}", r.body);
        assert_eq!(count(&state, "SELECT COUNT(*) FROM rules").await, 0);
        let hours_id = hours.to_string();
        let from = format!("door:{door}");
        rule[0].1 = &from;
        rule[6].1 = &hours_id;
        let r = b.post("/rules/new", &rule).await;
        assert_eq!(r.location(), format!("/doors/{door}"), "{}", r.body);
        assert!(generation(&state, door).await > before, "{label}");
        let page = b.get(&format!("/doors/{door}")).await.body;
        assert!(page.contains("Office hours") && page.contains("SCHEDULED"));

        // The list opens at local office hours: 12:00 and 17:59 Berlin, not 18:00.
        let list = door_list(&state, door).await;
        let uid = [0x04, 0xA1, 0xB2, 0xC3];
        let noon = next_wednesday_berlin(12);
        assert_eq!(
            card_verdict(&list, &uid, noon),
            Some(Verdict::Decided(Decision::Granted))
        );
        assert_eq!(
            card_verdict(&list, &uid, next_wednesday_berlin(18)),
            Some(Verdict::Decided(Decision::DeniedTimeRestriction))
        );

        // Another slot raises the generation again; removing it too.
        let before = generation(&state, door).await;
        let r = b
            .post(
                &format!("/schedules/{hours}/slots"),
                &[("days", "sat"), ("start", "22:00"), ("end", "02:00")],
            )
            .await;
        assert_eq!(r.location(), format!("/schedules/{hours}"));
        let after_slot = generation(&state, door).await;
        assert!(after_slot > before);
        let page = b.get(&format!("/schedules/{hours}")).await.body;
        assert!(
            page.contains("Sat 22:00–02:00 (ends the next day)"),
            "{page}"
        );
        let (slot,): (i64,) =
            sqlx::query_as("SELECT MAX(id) FROM schedule_slots WHERE schedule_id = $1")
                .bind(hours)
                .fetch_one(state.db.pool())
                .await
                .unwrap();
        b.post(
            &format!("/schedules/{hours}/slots/{slot}/delete"),
            &[("confirm", "yes")],
        )
        .await;
        assert!(generation(&state, door).await > after_slot);
        // The last slot stays.
        let (slot,): (i64,) =
            sqlx::query_as("SELECT MAX(id) FROM schedule_slots WHERE schedule_id = $1")
                .bind(hours)
                .fetch_one(state.db.pool())
                .await
                .unwrap();
        let r = b
            .post(
                &format!("/schedules/{hours}/slots/{slot}/delete"),
                &[("confirm", "yes")],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.body.contains("id=\"slots-error\""));
        // A schedule in use is not deleted.
        let r = b
            .post(&format!("/schedules/{hours}/delete"), &[("confirm", "yes")])
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(count(&state, "SELECT COUNT(*) FROM schedules").await, 1);

        // Changing the time zone recompiles: 12:00 in Berlin is 06:00 in New York.
        let before = generation(&state, door).await;
        let r = b
            .post(
                "/site",
                &[("name", "Makerspace"), ("timezone", "America/New_York")],
            )
            .await;
        assert_eq!(r.location(), "/site");
        assert!(generation(&state, door).await > before);
        let list = door_list(&state, door).await;
        assert_eq!(
            card_verdict(&list, &uid, noon),
            Some(Verdict::Decided(Decision::DeniedTimeRestriction)),
            "06:00 in New York"
        );
        b.post(
            "/site",
            &[("name", "Makerspace"), ("timezone", "Europe/Berlin")],
        )
        .await;

        // Pairing: the code is shown once, and only its hash is kept.
        let r = b.post(&format!("/doors/{door}/pair"), &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
        let code = element_text(&r.body, "pairing-code").to_string();
        let (hash,): (String,) = sqlx::query_as("SELECT pairing_hash FROM doors WHERE id = $1")
            .bind(door)
            .fetch_one(state.db.pool())
            .await
            .unwrap();
        assert_eq!(hash, chronolock_server::device::code_hash(&code));
        assert!(!b.get(&format!("/doors/{door}")).await.body.contains(&code));

        // Deleting the person (after confirming) takes their card off the door's list.
        let r = b.post(&format!("/people/{alice}/delete"), &[]).await;
        assert_eq!(
            r.location(),
            format!("/people/{alice}/delete"),
            "asks first"
        );
        assert!(b
            .get(&format!("/people/{alice}/delete"))
            .await
            .body
            .contains("Delete the person"));
        let before = generation(&state, door).await;
        let r = b
            .post(&format!("/people/{alice}/delete"), &[("confirm", "yes")])
            .await;
        assert_eq!(r.location(), "/people");
        assert!(generation(&state, door).await > before, "{label}");
        let list = door_list(&state, door).await;
        assert_eq!(AllowList::open(&list).unwrap().info().cards, 0);
        assert_eq!(count(&state, "SELECT COUNT(*) FROM cards").await, 0);
        assert_eq!(
            b.get(&format!("/people/{alice}")).await.status,
            StatusCode::NOT_FOUND
        );

        // Doors: rename (unique), delete after confirming.
        let other = b.post("/doors", &[("name", "Back door")]).await.new_id();
        let r = b
            .post(&format!("/doors/{other}"), &[("name", "Front door")])
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.body.contains("a door of this name exists"), "{}", r.body);
        let r = b
            .post(&format!("/doors/{other}/delete"), &[("confirm", "yes")])
            .await;
        assert_eq!(r.location(), "/doors");
        assert_eq!(count(&state, "SELECT COUNT(*) FROM doors").await, 1);
    }
}

#[tokio::test]
async fn groups_give_their_members_access() {
    for (label, state) in common::states("editors_groups").await {
        let b = Browser::new(&state).await;
        let (_, door, alice) = b.basics(&state).await;
        b.post(&format!("/people/{alice}/cards"), &[("uid", "04B0B0B0")])
            .await;
        let staff = b.post("/groups", &[("name", "Staff")]).await.new_id();
        let r = b.post("/groups", &[("name", "Staff")]).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{label}");
        assert!(r.body.contains("a group of this name exists"));

        let subject = format!("group:{staff}");
        let door_id = door.to_string();
        let r = b
            .post(
                "/rules/new",
                &[
                    ("from", &subject),
                    ("subject", &subject),
                    ("door", &door_id),
                    ("access", "UNRESTRICTED"),
                    ("valid_from", "2026-01-01"),
                    ("valid_until", "2025-12-31"),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.body.contains("id=\"valid_until-error\""), "{}", r.body);
        let r = b
            .post(
                "/rules/new",
                &[
                    ("from", &subject),
                    ("subject", &subject),
                    ("door", &door_id),
                    ("access", "UNRESTRICTED"),
                    ("valid_from", "2026-01-01"),
                    ("valid_until", "2036-12-31"),
                ],
            )
            .await;
        assert_eq!(r.location(), format!("/groups/{staff}"), "{}", r.body);
        let list = door_list(&state, door).await;
        assert_eq!(
            AllowList::open(&list).unwrap().info().cards,
            0,
            "no members yet"
        );

        // Joining the group puts the card on the list, with the rule's local dates.
        let before = generation(&state, door).await;
        let r = b
            .post(
                &format!("/groups/{staff}/members"),
                &[("person", &alice.to_string())],
            )
            .await;
        assert_eq!(r.location(), format!("/groups/{staff}"));
        assert!(generation(&state, door).await > before);
        let list = door_list(&state, door).await;
        let open = AllowList::open(&list).unwrap();
        let policy = open
            .policy(open.find_card(&[0x04, 0xB0, 0xB0, 0xB0]).unwrap())
            .unwrap();
        assert_eq!(policy.access, AccessType::Unrestricted);
        // 2026-01-01 00:00 CET = 2025-12-31 23:00 UTC; 2036-12-31 23:59:59 CET.
        assert_eq!(
            (policy.valid_from, policy.valid_until),
            (1_767_222_000, 2_114_377_199)
        );
        let page = b.get(&format!("/people/{alice}")).await.body;
        assert!(page.contains("2026-01-01 to 2036-12-31"), "{page}");
        assert!(page.contains(&format!("href=\"/groups/{staff}\"")));

        // A person of another site, or nobody, cannot be added.
        let r = b
            .post(&format!("/groups/{staff}/members"), &[("person", "999")])
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.body.contains("id=\"person-error\""));

        // Leaving the group takes the card off again.
        let before = generation(&state, door).await;
        b.post(&format!("/people/{alice}/groups/{staff}/leave"), &[])
            .await;
        assert!(generation(&state, door).await > before);
        assert_eq!(
            AllowList::open(&door_list(&state, door).await)
                .unwrap()
                .info()
                .cards,
            0
        );
        // Joining from the person's page, then deleting the group.
        b.post(
            &format!("/people/{alice}/groups"),
            &[("group", &staff.to_string())],
        )
        .await;
        assert_eq!(
            AllowList::open(&door_list(&state, door).await)
                .unwrap()
                .info()
                .cards,
            1
        );
        let r = b
            .post(&format!("/groups/{staff}/delete"), &[("confirm", "yes")])
            .await;
        assert_eq!(r.location(), "/groups");
        assert_eq!(count(&state, "SELECT COUNT(*) FROM rules").await, 0);
        assert_eq!(
            AllowList::open(&door_list(&state, door).await)
                .unwrap()
                .info()
                .cards,
            0
        );
    }
}

#[tokio::test]
async fn keypad_secrets_are_shown_once() {
    for (label, state) in common::states("editors_keypad").await {
        let b = Browser::new(&state).await;
        let (_, door, alice) = b.basics(&state).await;
        let subject = format!("person:{alice}");
        let door_id = door.to_string();
        b.post(
            "/rules/new",
            &[
                ("subject", &subject),
                ("door", &door_id),
                ("access", "UNRESTRICTED"),
            ],
        )
        .await;
        let keypad = format!("/people/{alice}/keypad");

        // A bad user code is refused, nothing stored.
        let r = b.post(&keypad, &[("code", "12a"), ("kind", "totp")]).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{label}");
        assert!(r.body.contains("id=\"code-error\""));
        assert_eq!(count(&state, "SELECT COUNT(*) FROM keypad_users").await, 0);

        // TOTP: a QR code of the otpauth URI and the secret, once.
        let before = generation(&state, door).await;
        let r = b.post(&keypad, &[("code", "1234"), ("kind", "totp")]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
        assert!(generation(&state, door).await > before);
        let uri = between(&r.body, "id=\"totp-uri\" href=\"", "\"").replace("&amp;", "&");
        assert!(
            uri.starts_with("otpauth://totp/chronolock:Alice%20(1234)?secret="),
            "{uri}"
        );
        assert!(uri.ends_with("&issuer=chronolock&algorithm=SHA1&digits=6&period=30"));
        let secret_text = between(&uri, "secret=", "&").to_string();
        assert_eq!(element_text(&r.body, "totp-secret"), secret_text);
        let qr = between(&r.body, "id=\"totp-qr\"", "</div>");
        let expected = qrcode::QrCode::new(uri.as_bytes())
            .unwrap()
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(240, 240)
            .build();
        let expected = &expected[expected.find("<svg").unwrap()..];
        assert!(qr.contains(expected), "the QR code encodes the URI");
        // The secret verifies a code computed now against what the server stored.
        let secret = chronolock_allowlist::decode_secret(&secret_text, "totp").unwrap();
        assert_eq!(secret.len(), 20);
        let now = chronolock_server::now_unix();
        let code = otp::totp(&secret, now, OtpParams::default()).unwrap();
        let (stored,): (String,) =
            sqlx::query_as("SELECT totp_secret FROM keypad_users WHERE code = '1234'")
                .fetch_one(state.db.pool())
                .await
                .unwrap();
        let stored = chronolock_allowlist::decode_secret(&stored, "totp").unwrap();
        assert!(matches!(
            otp::verify_totp(&stored, code, now, OtpParams::default(), 1, None),
            Ok(otp::Match::Fresh(_))
        ));
        assert!(AllowList::open(&door_list(&state, door).await)
            .unwrap()
            .find_keypad_user(b"1234", &mut [0; chronolock_core::allowlist::KEYPAD_LEN])
            .is_some());

        // The person page never shows it again.
        let page = b.get(&format!("/people/{alice}")).await.body;
        assert!(page.contains("TOTP enrolled"), "{page}");
        assert!(!page.contains(&secret_text));
        // Enrolling again needs the explicit replace.
        let r = b.post(&keypad, &[("code", "1234"), ("kind", "totp")]).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.body.contains("already has"));

        // HOTP backup codes for the same user code: ten codes = hotp(secret, 0..10).
        let r = b.post(&keypad, &[("code", "1234"), ("kind", "hotp")]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert!(r.body.contains("id=\"print\"") && r.body.contains("/static/print.js"));
        let shown = hotp_codes(&r.body);
        let (hotp_secret, counter): (String, i64) = sqlx::query_as(
            "SELECT hotp_secret, hotp_counter FROM keypad_users WHERE code = '1234'",
        )
        .fetch_one(state.db.pool())
        .await
        .unwrap();
        assert_eq!(counter, 0);
        let hotp_secret = chronolock_allowlist::decode_secret(&hotp_secret, "hotp").unwrap();
        let expected: Vec<String> = (0..10)
            .map(|c| format!("{:06}", otp::hotp(&hotp_secret, c, 6).unwrap()))
            .collect();
        assert_eq!(shown, expected);
        assert_eq!(count(&state, "SELECT COUNT(*) FROM keypad_users").await, 1);
        let page = b.get(&format!("/people/{alice}")).await.body;
        assert!(page.contains("HOTP backup codes: issued"));
        assert!(!expected.iter().any(|c| page.contains(c.as_str())));
        // A new sheet on request replaces the secret; its counters continue past the old
        // sheet's, which a door may have used (doors never accept a lower counter again).
        let r = b
            .post(
                &keypad,
                &[("code", "1234"), ("kind", "hotp"), ("replace", "1")],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let (hotp_secret, counter): (String, i64) = sqlx::query_as(
            "SELECT hotp_secret, hotp_counter FROM keypad_users WHERE code = '1234'",
        )
        .fetch_one(state.db.pool())
        .await
        .unwrap();
        assert_eq!(counter, 10);
        let hotp_secret = chronolock_allowlist::decode_secret(&hotp_secret, "hotp").unwrap();
        let expected: Vec<String> = (10..20)
            .map(|c| format!("{:06}", otp::hotp(&hotp_secret, c, 6).unwrap()))
            .collect();
        assert_eq!(hotp_codes(&r.body), expected);

        // Backup codes alone under a new code; a code of someone else is taken.
        let r = b.post(&keypad, &[("code", "777"), ("kind", "hotp")]).await;
        assert_eq!(r.status, StatusCode::OK);
        let bob = b.post("/people", &[("name", "Bob")]).await.new_id();
        let r = b
            .post(
                &format!("/people/{bob}/keypad"),
                &[("code", "1234"), ("kind", "totp")],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.body.contains("this user code is taken"));

        // Removing a code takes it off the door.
        let (id,): (i64,) = sqlx::query_as("SELECT id FROM keypad_users WHERE code = '1234'")
            .fetch_one(state.db.pool())
            .await
            .unwrap();
        let before = generation(&state, door).await;
        // Deleting asks first and deletes nothing until confirmed.
        let r = b.post(&format!("{keypad}/{id}/delete"), &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.body.contains("id=\"confirm-delete\""), "{}", r.body);
        assert_eq!(generation(&state, door).await, before);
        let r = b
            .post(&format!("{keypad}/{id}/delete"), &[("confirm", "yes")])
            .await;
        assert_eq!(r.location(), format!("/people/{alice}"));
        assert!(generation(&state, door).await > before);
        let list = door_list(&state, door).await;
        let open = AllowList::open(&list).unwrap();
        assert!(open
            .find_keypad_user(b"1234", &mut [0; chronolock_core::allowlist::KEYPAD_LEN])
            .is_none());
        assert!(open
            .find_keypad_user(b"777", &mut [0; chronolock_core::allowlist::KEYPAD_LEN])
            .is_some());
    }
}

#[tokio::test]
async fn unknown_ids_and_forged_posts_are_refused() {
    for (label, state) in common::states("editors_refuse").await {
        let b = Browser::new(&state).await;
        let (_, door, alice) = b.basics(&state).await;

        for uri in [
            "/doors/999999".to_string(),
            "/doors/abc".to_string(),
            "/people/0".to_string(),
            "/people/-3".to_string(),
            "/groups/99999999999999999999999".to_string(),
            "/schedules/42".to_string(),
            format!("/doors/{door}/delete/extra"),
        ] {
            let r = b.get(&uri).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{label} {uri}");
        }
        let r = b.get("/people/12345").await;
        assert!(r.body.contains("<html"), "a 404 page");
        for uri in [
            format!("/people/{alice}/cards/999/delete"),
            format!("/people/{alice}/keypad/999/delete"),
            format!("/people/{alice}/groups/999/leave"),
            "/people/999/cards".to_string(),
            "/rules/999/delete".to_string(),
            "/doors/999/pair".to_string(),
        ] {
            let r = b.post(&uri, &[("uid", "04A1B2C3")]).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{label} {uri}");
        }

        // Without the CSRF token, with a wrong one, or from another site: refused, nothing saved.
        let r = b.post_raw("/doors", "name=Sneaky", None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = b.post_raw("/doors", "name=Sneaky&csrf=guess", None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let body = format!("name=Sneaky&csrf={}", encode(&b.csrf));
        let r = b
            .post_raw("/doors", &body, Some("http://evil.example"))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = b
            .post_raw(&format!("/people/{alice}/delete"), "confirm=yes", None)
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(count(&state, "SELECT COUNT(*) FROM doors").await, 1);
        assert_eq!(count(&state, "SELECT COUNT(*) FROM people").await, 1);

        // Without a session: pages send to the login.
        let r = send(
            &b.app,
            Request::builder()
                .uri("/people")
                .header(header::HOST, "localhost")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(r.location(), "/login");

        // Every form on the pages carries the token.
        for uri in [
            "/site".to_string(),
            "/doors".to_string(),
            format!("/doors/{door}"),
            "/people".to_string(),
            format!("/people/{alice}"),
            "/groups".to_string(),
            "/schedules".to_string(),
            "/rules/new".to_string(),
        ] {
            let page = b.get(&uri).await.body;
            let posts = page.matches("method=\"post\"").count();
            let tokens = page.matches("name=\"csrf\"").count();
            assert!(posts > 0, "{uri}");
            assert_eq!(posts, tokens, "{uri}");
        }
    }
}

#[tokio::test]
async fn holidays_close_their_schedules() {
    for (label, state) in common::states("editors_holidays").await {
        let b = Browser::new(&state).await;
        let (_, door, alice) = b.basics(&state).await;
        let r = b
            .post(&format!("/people/{alice}/cards"), &[("uid", "04A1B2C3")])
            .await;
        assert_eq!(r.location(), format!("/people/{alice}"));
        let mut always = vec![("name", "Always")];
        for day in ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] {
            always.push(("days", day));
        }
        always.extend([("start", "00:00"), ("end", "24:00")]);
        let schedule = b.post("/schedules", &always).await.new_id();
        let (person, door_id, schedule_id) = (
            format!("person:{alice}"),
            door.to_string(),
            schedule.to_string(),
        );
        let r = b
            .post(
                "/rules/new",
                &[
                    ("from", &format!("door:{door}")),
                    ("subject", &person),
                    ("door", &door_id),
                    ("access", "SCHEDULED"),
                    ("valid_from", ""),
                    ("valid_until", ""),
                    ("schedule", &schedule_id),
                ],
            )
            .await;
        assert_eq!(r.location(), format!("/doors/{door}"), "{}", r.body);

        // The page is in the menu, next to Schedules, and its form carries the CSRF token.
        let page = b.get("/holidays").await.body;
        assert!(page.contains("No holidays yet."), "{page}");
        assert!(page.contains("href=\"/holidays\""), "{page}");
        assert_eq!(
            page.matches("method=\"post\"").count(),
            page.matches("name=\"csrf\"").count()
        );

        // Next Wednesday (Berlin) is a holiday of the schedule.
        let uid = [0x04, 0xA1, 0xB2, 0xC3];
        let noon = next_wednesday_berlin(12);
        let zone = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        let day = noon.to_zoned(zone.clone()).date();
        let thursday_noon = day
            .tomorrow()
            .unwrap()
            .at(12, 0, 0, 0)
            .to_zoned(zone)
            .unwrap()
            .timestamp();
        let granted = Some(Verdict::Decided(Decision::Granted));
        let denied = Some(Verdict::Decided(Decision::DeniedTimeRestriction));
        assert_eq!(
            card_verdict(&door_list(&state, door).await, &uid, noon),
            granted
        );

        // Bad input: the message beside its field, the input kept, nothing stored.
        let day_text = day.to_string();
        let before_text = day.yesterday().unwrap().to_string();
        for (fields, field) in [
            (
                vec![
                    ("name", "Typo"),
                    ("first", "2026-13-01"),
                    ("schedule", &schedule_id),
                ],
                "first",
            ),
            (
                vec![
                    ("name", "Backwards"),
                    ("first", &day_text),
                    ("last", &before_text),
                    ("schedule", &schedule_id),
                ],
                "last",
            ),
            (
                vec![("name", "Nothing closed"), ("first", &day_text)],
                "schedules",
            ),
            (
                vec![
                    ("name", "Elsewhere"),
                    ("first", &day_text),
                    ("schedule", "999"),
                ],
                "schedules",
            ),
            (
                vec![
                    ("name", "Forever"),
                    ("first", "2026-01-01"),
                    ("last", "2027-01-01"),
                    ("yearly", "yes"),
                    ("schedule", &schedule_id),
                ],
                "last",
            ),
        ] {
            let r = b.post("/holidays", &fields).await;
            assert_eq!(
                r.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{label} {fields:?}"
            );
            assert!(
                r.body.contains(&format!("id=\"{field}-error\"")),
                "{fields:?}: {}",
                r.body
            );
            assert!(r.body.contains(&format!("value=\"{}\"", fields[0].1)));
        }
        let r = b
            .post(
                "/holidays",
                &[
                    ("name", "Backwards"),
                    ("first", &day_text),
                    ("last", &before_text),
                    ("schedule", &schedule_id),
                ],
            )
            .await;
        assert!(r.body.contains("is before its first"), "{}", r.body);
        assert_eq!(count(&state, "SELECT COUNT(*) FROM holidays").await, 0);
        assert_eq!(
            count(&state, "SELECT COUNT(*) FROM holiday_schedules").await,
            0
        );

        // A good one: the door's list is recompiled, closed on the day, open the day after.
        let before = generation(&state, door).await;
        let r = b
            .post(
                "/holidays",
                &[
                    ("name", "Founders' day"),
                    ("first", &day_text),
                    ("last", ""),
                    ("schedule", &schedule_id),
                ],
            )
            .await;
        assert_eq!(r.location(), "/holidays", "{}", r.body);
        assert!(generation(&state, door).await > before, "{label}");
        let list = door_list(&state, door).await;
        assert_eq!(card_verdict(&list, &uid, noon), denied, "{label}");
        assert_eq!(card_verdict(&list, &uid, thursday_noon), granted, "{label}");
        let page = b.get("/holidays").await.body;
        assert!(
            page.contains("Founders&#39; day") || page.contains("Founders' day"),
            "{page}"
        );
        assert!(
            page.contains(&day_text) && page.contains("Always"),
            "{page}"
        );

        // Deleted, the day opens again and the generation rises.
        let (holiday,): (i64,) = sqlx::query_as("SELECT id FROM holidays")
            .fetch_one(state.db.pool())
            .await
            .unwrap();
        let before = generation(&state, door).await;
        let r = b.post(&format!("/holidays/{holiday}/delete"), &[]).await;
        assert!(r.body.contains("id=\"confirm-delete\""), "asks first");
        assert_eq!(generation(&state, door).await, before);
        let r = b
            .post(
                &format!("/holidays/{holiday}/delete"),
                &[("confirm", "yes")],
            )
            .await;
        assert_eq!(r.location(), "/holidays");
        assert!(generation(&state, door).await > before);
        assert_eq!(
            card_verdict(&door_list(&state, door).await, &uid, noon),
            granted
        );
        assert_eq!(
            count(&state, "SELECT COUNT(*) FROM holiday_schedules").await,
            0
        );
        let r = b.post(&format!("/holidays/{holiday}/delete"), &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }
}
