//! Signed firmware updates through the server, on SQLite and PostgreSQL: the admin uploads a
//! signed image on the firmware page and assigns it to doors; a door that runs an older version
//! is offered it at its syncs, a piece at a time, and its progress shows on its page, the
//! dashboard and the JSON API. Files that are not whole signed images are refused beside the
//! field, and nothing is kept.
#![allow(clippy::unwrap_used)] // test helpers: a failed request should fail the test loudly

mod common;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use chronolock_core::firmware::{Version, HEADER_LEN};
use chronolock_core::protocol::{
    DeviceStatus, Enrolled, Enrolment, ListStream, PartialFirmware, SyncRequestWriter,
    SyncResponse, FIRMWARE_CHUNK_MAX, SYNC_RESPONSE_LEN,
};
use chronolock_server::{device, model, router, AppState};
use ed25519_dalek::{SigningKey, VerifyingKey};
use http_body_util::BodyExt;
use sha2::Digest;
use tower::ServiceExt;

/// What the firmware key signs with in these tests (the server never sees it).
const FIRMWARE_KEY: [u8; 32] = [0x5a; 32];
const V1_0_0: Version = Version::new(1, 0, 0);
const V1_2_0: Version = Version::new(1, 2, 0);

/// A signed image of `len` bytes, as `chronolock firmware sign` makes it.
fn signed(len: usize, version: Version, flash_mb: u8) -> Vec<u8> {
    let image: Vec<u8> = (0..len).map(|i| (i * 31 + i / 251) as u8).collect();
    chronolock_core::firmware::sign(
        &image,
        version,
        flash_mb,
        &SigningKey::from_bytes(&FIRMWARE_KEY),
    )
    .unwrap()
}

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

    /// The text of the element with `id` (up to the next tag).
    fn text_of(&self, id: &str) -> &str {
        let marker = format!("id=\"{id}\"");
        let at = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no #{id} in {}", self.body));
        let from = at + self.body[at..].find('>').unwrap() + 1;
        let len = self.body[from..].find('<').unwrap();
        &self.body[from..from + len]
    }
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

/// A browser with an admin session.
struct Admin {
    app: Router,
    cookie: String,
    csrf: String,
}

impl Admin {
    /// Sets up the first admin and keeps the session.
    async fn new(state: &AppState) -> Admin {
        let app = router(state.clone());
        let r = send(
            &app,
            Request::post("/setup")
                .header(header::HOST, "localhost")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(
                    "username=boss&password=long+enough+1&confirm=long+enough+1",
                ))
                .unwrap(),
        )
        .await;
        let cookie = r.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let mut admin = Admin {
            app,
            cookie,
            csrf: String::new(),
        };
        let me: serde_json::Value = serde_json::from_str(&admin.get("/api/me").await.body).unwrap();
        admin.csrf = me["csrf_token"].as_str().unwrap().to_string();
        admin
    }

    async fn get(&self, uri: &str) -> Answer {
        send(
            &self.app,
            Request::get(uri)
                .header(header::HOST, "localhost")
                .header(header::COOKIE, &self.cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    async fn json(&self, uri: &str) -> serde_json::Value {
        let r = self.get(uri).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.body);
        serde_json::from_str(&r.body).unwrap()
    }

    /// Posts a form with the session's CSRF token.
    async fn post(&self, uri: &str, fields: &[(&str, &str)]) -> Answer {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        let body = serde_urlencoded::to_string(&all).unwrap();
        send(
            &self.app,
            Request::post(uri)
                .header(header::HOST, "localhost")
                .header(header::COOKIE, &self.cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }

    /// Uploads `file` as the firmware page's form sends it (`multipart/form-data`).
    async fn upload(&self, file: &[u8]) -> Answer {
        self.upload_with(file, &self.csrf, None).await
    }

    async fn upload_with(&self, file: &[u8], csrf: &str, origin: Option<&str>) -> Answer {
        let boundary = "----chronolock-test-boundary-7d3f";
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n\
                 --{boundary}\r\nContent-Disposition: form-data; name=\"image\"; \
                 filename=\"door.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let mut req = Request::post("/firmware")
            .header(header::HOST, "localhost")
            .header(header::COOKIE, &self.cookie)
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            );
        if let Some(origin) = origin {
            req = req.header(header::ORIGIN, origin);
        }
        send(&self.app, req.body(Body::from(body)).unwrap()).await
    }
}

async fn count(state: &AppState, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql)
        .fetch_one(state.db.pool())
        .await
        .unwrap();
    n
}

async fn image_ids(state: &AppState) -> Vec<i64> {
    let rows: Vec<(i64,)> = sqlx::query_as("SELECT id FROM firmware_images ORDER BY id")
        .fetch_all(state.db.pool())
        .await
        .unwrap();
    rows.into_iter().map(|(id,)| id).collect()
}

async fn post_device(state: &AppState, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let r = router(state.clone())
        .oneshot(
            Request::post(path)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = r.status();
    (
        status,
        r.into_body().collect().await.unwrap().to_bytes().to_vec(),
    )
}

async fn pair(state: &AppState, door: i64, random: u8) -> Enrolled {
    let code = device::new_pairing_code(state, door).await.unwrap();
    let device = Enrolment::new([random; 32], [random; 16], &code);
    let (status, body) = post_device(state, "/device/v1/enrol", device.request().to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    device.finish(&body).unwrap()
}

/// Request counters: they only ever grow.
static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A sync's answer: its fixed part, checked, and the firmware piece in clear.
struct Synced {
    response: SyncResponse,
    piece: Vec<u8>,
}

/// A sync from a door that runs `running` and holds `partial` of an update.
async fn sync(
    state: &AppState,
    device: &Enrolled,
    running: u32,
    partial: Option<PartialFirmware>,
    nonce: u8,
) -> Synced {
    let status = DeviceStatus {
        firmware_version: running,
        partial_firmware: partial,
        ..DeviceStatus::default()
    };
    let mut buf = vec![0u8; 1024];
    let counter = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let w =
        SyncRequestWriter::new(&mut buf, device.door_id, [nonce; 16], counter, &status).unwrap();
    let n = w.finish(&device.device_key);
    buf.truncate(n);
    let (code, body) = post_device(state, "/device/v1/sync", buf).await;
    assert_eq!(code, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let site = VerifyingKey::from_bytes(&device.site_key).unwrap();
    let mut fixed = body[..SYNC_RESPONSE_LEN].to_vec();
    let response = SyncResponse::parse(
        &mut fixed,
        &device.device_key,
        &site,
        device.door_id,
        &[nonce; 16],
    )
    .unwrap();
    // The list (when one comes) follows the fixed part, then the firmware piece.
    let list = (response.list_len - response.list_offset) as usize;
    assert_eq!(
        body.len(),
        SYNC_RESPONSE_LEN + list + response.firmware_piece as usize
    );
    let mut piece = body[SYNC_RESPONSE_LEN + list..].to_vec();
    ListStream::firmware(&device.device_key, &[nonce; 16], response.firmware_offset)
        .apply(&mut piece);
    Synced { response, piece }
}

/// The admin uploads a signed image and assigns it to one of two paired doors. That door,
/// running 1.0.0, is offered the image's version, length and SHA-256 with its first 128 KiB,
/// then the rest from where it stopped; its progress shows on its page, the dashboard and the
/// API. Once it reports the new version it is offered nothing, and "installed" shows. The other
/// door, and a door that takes no update over the air, are offered nothing. An assigned image
/// cannot be deleted; once no door has it, it can.
#[tokio::test]
async fn an_uploaded_image_reaches_the_doors_it_is_assigned_to() {
    for (label, state) in common::states("firmware_sync").await {
        let admin = Admin::new(&state).await;
        let site = model::create_site(&state, "Makerspace", "Europe/Berlin")
            .await
            .unwrap();
        let front = model::create_door(&state, site, "Front door")
            .await
            .unwrap();
        let back = model::create_door(&state, site, "Back door").await.unwrap();
        model::site_changed(&state, site).await.unwrap();
        let front_device = pair(&state, front, 0x11).await;
        let back_device = pair(&state, back, 0x22).await;

        // Larger than one piece, so it comes in two.
        let file = signed(200_000, V1_2_0, 4);
        let r = admin.upload(&file).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{label}: {}", r.body);
        assert_eq!(r.location(), "/firmware");
        let ids = image_ids(&state).await;
        assert_eq!(ids.len(), 1, "{label}");
        let image = ids[0];
        let page = admin.get("/firmware").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(
            page.body.contains(&format!("id=\"image-{image}\"")),
            "{label}"
        );
        assert!(page.body.contains("1.2.0"), "{label}");
        assert!(page.body.contains("4 MB"));
        assert!(page.body.contains("200,128 bytes"), "{}", page.body);
        let key_id = data_encoding::HEXLOWER.encode(
            &SigningKey::from_bytes(&FIRMWARE_KEY)
                .verifying_key()
                .as_bytes()[..4],
        );
        assert!(page.body.contains(&key_id), "{label}: key id {key_id}");
        let digest = data_encoding::HEXLOWER.encode(&file[16..48]);
        assert!(page.body.contains(&digest[..16]), "{label}: SHA-256 prefix");
        assert!(page.body.contains("by boss"));
        assert!(page.body.contains("href=\"/firmware\""), "in the menu");

        // Assigned to the front door only.
        let image_field = image.to_string();
        let front_field = front.to_string();
        let r = admin
            .post(
                "/firmware/assign",
                &[("door", &front_field), ("firmware", &image_field)],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{label}: {}", r.body);
        let page = admin.get(&format!("/doors/{front}")).await;
        assert_eq!(page.text_of("firmware-running"), "—", "{label}");
        assert_eq!(
            page.text_of("firmware-state"),
            "waiting for the door's next sync"
        );

        // The first piece, from the start.
        let len = file.len() as u32;
        let first = sync(&state, &front_device, V1_0_0.0, None, 1).await;
        let fw = &first.response;
        assert_eq!(fw.firmware_version, V1_2_0.0, "{label}");
        assert_eq!(fw.firmware_len, len);
        assert_eq!(fw.firmware_offset, 0);
        assert_eq!(fw.firmware_piece, len.min(FIRMWARE_CHUNK_MAX));
        assert_eq!(
            fw.firmware_digest,
            <[u8; 32]>::from(sha2::Sha256::digest(&file))
        );
        assert_eq!(first.piece, file[..FIRMWARE_CHUNK_MAX as usize], "{label}");

        // The rest, from where the door stopped.
        let held = Some(PartialFirmware {
            version: V1_2_0.0,
            offset: FIRMWARE_CHUNK_MAX,
        });
        let rest = sync(&state, &front_device, V1_0_0.0, held, 2).await;
        assert_eq!(rest.response.firmware_offset, FIRMWARE_CHUNK_MAX, "{label}");
        assert_eq!(rest.response.firmware_piece, len - FIRMWARE_CHUNK_MAX);
        assert_eq!(rest.piece, file[FIRMWARE_CHUNK_MAX as usize..], "{label}");

        // What the door reported shows once written.
        state.door_status.flush(&state.db).await.unwrap();
        let percent = u64::from(FIRMWARE_CHUNK_MAX) * 100 / u64::from(len);
        let downloading = format!("downloading {percent}%");
        let page = admin.get(&format!("/doors/{front}")).await;
        assert_eq!(page.text_of("firmware-running"), "1.0.0", "{label}");
        assert_eq!(page.text_of("firmware-state"), downloading, "{label}");
        let dashboard = admin.get("/").await;
        assert!(dashboard.body.contains(&downloading), "{label}: dashboard");
        let api = admin.json(&format!("/api/doors/{front}")).await;
        assert_eq!(api["firmware_version"], "1.0.0", "{label}: {api}");
        assert_eq!(api["firmware_update"]["version"], "1.2.0");
        assert_eq!(api["firmware_update"]["state"], "downloading");
        assert_eq!(api["firmware_update"]["downloaded"], FIRMWARE_CHUNK_MAX);
        assert_eq!(api["firmware_update"]["size"], len);

        // A door that holds all of it (installing it, or refused it) is not sent it again.
        let all = Some(PartialFirmware {
            version: V1_2_0.0,
            offset: len,
        });
        let held = sync(&state, &front_device, V1_0_0.0, all, 9).await;
        assert_eq!(held.response.firmware_version, 0, "{label}");
        assert!(held.piece.is_empty());
        state.door_status.flush(&state.db).await.unwrap();
        let api = admin.json(&format!("/api/doors/{front}")).await;
        assert_eq!(api["firmware_update"]["state"], "downloaded", "{label}");
        let page = admin.get(&format!("/doors/{front}")).await;
        assert!(page
            .text_of("firmware-state")
            .starts_with("downloaded but not running"));

        // The other door has no update; a door that takes none over the air is offered none.
        let other = sync(&state, &back_device, V1_0_0.0, None, 3).await;
        assert_eq!(other.response.firmware_version, 0, "{label}");
        assert!(other.piece.is_empty());
        let no_ota = sync(&state, &front_device, 0, None, 4).await;
        assert_eq!(no_ota.response.firmware_version, 0, "{label}");
        state.door_status.flush(&state.db).await.unwrap();
        let api = admin.json("/api/doors").await;
        let back_status = api["doors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == back)
            .unwrap()
            .clone();
        assert_eq!(back_status["firmware_version"], "1.0.0", "{label}");
        assert!(back_status["firmware_update"].is_null());
        let api = admin.json(&format!("/api/doors/{front}")).await;
        assert!(api["firmware_version"].is_null(), "{label}: {api}");
        assert_eq!(api["firmware_update"]["state"], "not_supported");

        // Installed: the door runs the image's version and is offered nothing.
        let installed = sync(&state, &front_device, V1_2_0.0, None, 5).await;
        assert_eq!(installed.response.firmware_version, 0, "{label}");
        assert_eq!(installed.response.firmware_piece, 0);
        let newer = sync(&state, &front_device, Version::new(1, 3, 0).0, None, 6).await;
        assert_eq!(newer.response.firmware_version, 0, "{label}");
        let installed = sync(&state, &front_device, V1_2_0.0, None, 7).await;
        assert_eq!(installed.response.firmware_version, 0, "{label}");
        state.door_status.flush(&state.db).await.unwrap();
        let page = admin.get(&format!("/doors/{front}")).await;
        assert_eq!(page.text_of("firmware-running"), "1.2.0", "{label}");
        assert_eq!(page.text_of("firmware-state"), "installed");
        assert!(admin.get("/").await.body.contains("installed"));

        // An image a door is assigned cannot be deleted.
        let r = admin
            .post(&format!("/firmware/{image}/delete"), &[("confirm", "yes")])
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{label}");
        assert!(
            r.text_of("images-error").contains("assigned to Front door"),
            "{label}: {}",
            r.text_of("images-error")
        );
        assert_eq!(image_ids(&state).await, [image], "{label}: kept");

        // No update for both doors at once, then the image goes.
        let back_field = back.to_string();
        let r = admin
            .post(
                "/firmware/assign",
                &[
                    ("door", &front_field),
                    ("door", &back_field),
                    ("firmware", "none"),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{label}: {}", r.body);
        let page = admin.get(&format!("/doors/{front}")).await;
        assert_eq!(page.text_of("firmware-update"), "No update assigned.");
        let r = admin
            .post(&format!("/firmware/{image}/delete"), &[("confirm", "yes")])
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{label}: {}", r.body);
        assert!(image_ids(&state).await.is_empty(), "{label}");
        let r = admin
            .post(&format!("/firmware/{image}/delete"), &[("confirm", "yes")])
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{label}");
        let after = sync(&state, &front_device, V1_0_0.0, None, 8).await;
        assert_eq!(after.response.firmware_version, 0, "{label}");
    }
}

/// Files that are not whole signed images are refused with the reason beside the file field,
/// and nothing is kept: not an image, cut short, too long, changed after signing, empty, too
/// large, and a version already uploaded for the same flash size. So are uploads without the
/// session's CSRF token or from another site, and assignments to nothing.
#[tokio::test]
async fn bad_uploads_are_refused_beside_the_field() {
    for (label, state) in common::states("firmware_refused").await {
        let admin = Admin::new(&state).await;
        let site = model::create_site(&state, "Makerspace", "Europe/Berlin")
            .await
            .unwrap();
        let door = model::create_door(&state, site, "Front door")
            .await
            .unwrap();
        let file = signed(10_000, V1_2_0, 4);
        let mut changed = file.clone();
        changed[HEADER_LEN + 100] ^= 0x40;
        let mut longer = file.clone();
        longer.extend_from_slice(b"tail");
        let cases: [(&str, Vec<u8>, &str); 6] = [
            (
                "not an image",
                b"\x7fELF\x02\x01\x01 an executable, not a signed image".repeat(4),
                "not a signed chronolock firmware image",
            ),
            (
                "cut short",
                file[..file.len() - 10].to_vec(),
                "image ends early: the header announces 10128 bytes, the file has 10118",
            ),
            ("header only, cut", file[..100].to_vec(), "image ends early"),
            ("too long", longer, "4 more than its header announces"),
            ("changed", changed, "image bytes are not the signed ones"),
            ("empty", Vec::new(), "choose a signed image file"),
        ];
        for (what, bytes, message) in cases {
            let r = admin.upload(&bytes).await;
            assert_eq!(
                r.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{label}: {what}: {}",
                r.body
            );
            assert!(
                r.text_of("image-error").contains(message),
                "{label}: {what}: {:?}",
                r.text_of("image-error")
            );
            assert!(image_ids(&state).await.is_empty(), "{label}: {what}: kept");
        }

        // Larger than the page takes: refused before it is read to its end, whether the
        // request is within the route's body limit or beyond it.
        for size in [
            chronolock_server::firmware::MAX_FILE + 1,
            chronolock_server::firmware::MAX_FILE + 1024 * 1024,
        ] {
            let r = admin.upload(&vec![0u8; size]).await;
            assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{label}: {size}");
            assert!(r.text_of("image-error").contains("larger than 4 MiB"));
            assert!(image_ids(&state).await.is_empty(), "{label}");
        }

        // Without the session's token, or from another site: refused, nothing kept.
        let r = admin.upload_with(&file, "not-the-token", None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{label}");
        let r = admin
            .upload_with(&file, &admin.csrf, Some("https://evil.example"))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{label}");
        assert!(image_ids(&state).await.is_empty(), "{label}");

        // A good one is kept once per version and flash size.
        let r = admin.upload(&file).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{label}: {}", r.body);
        let r = admin.upload(&signed(20_000, V1_2_0, 4)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{label}");
        assert_eq!(
            r.text_of("image-error"),
            "version 1.2.0 for 4 MB flash is uploaded already"
        );
        assert_eq!(image_ids(&state).await.len(), 1, "{label}");
        let r = admin.upload(&signed(20_000, V1_2_0, 8)).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{label}: {}", r.body);
        let ids = image_ids(&state).await;
        assert_eq!(ids.len(), 2, "{label}");
        let (stored,): (Vec<u8>,) =
            sqlx::query_as("SELECT signed_file FROM firmware_images WHERE id = $1")
                .bind(ids[0])
                .fetch_one(state.db.pool())
                .await
                .unwrap();
        assert_eq!(stored, file, "{label}: kept as uploaded");

        // Assigning: to no door, or an image or door that does not exist.
        let image = ids[0].to_string();
        let door_field = door.to_string();
        let r = admin
            .post("/firmware/assign", &[("firmware", &image)])
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{label}");
        assert_eq!(r.text_of("door-error"), "choose at least one door");
        let r = admin
            .post(
                "/firmware/assign",
                &[("door", &door_field), ("firmware", "999999")],
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{label}");
        let r = admin
            .post(
                "/firmware/assign",
                &[
                    ("door", &door_field),
                    ("door", "999999"),
                    ("firmware", &image),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{label}");
        let assigned = count(
            &state,
            "SELECT COUNT(*) FROM doors WHERE firmware_id IS NOT NULL",
        )
        .await;
        assert_eq!(assigned, 0, "{label}: all or nothing");
    }
}
