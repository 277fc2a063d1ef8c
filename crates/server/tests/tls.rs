//! Built-in HTTPS (`serve --tls-cert/--tls-key`) on loopback, with a real TLS client: the admin
//! surface answers only over TLS, its cookies are `Secure` and it asks for HSTS; doors that do
//! not speak TLS reach the device API, and only that, on the plain `--device-listen` listener;
//! a renewed certificate is served without a restart; bad files are refused at start by name.
#![allow(clippy::unwrap_used)] // test code: a failed step should fail the test loudly

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chronolock_server::tls::{self, TlsFiles};
use chronolock_server::ServeConfig;

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM into `dir`.
fn certificate(dir: &Path) -> (TlsFiles, String) {
    std::fs::create_dir_all(dir).unwrap();
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let made = rcgen::generate_simple_self_signed(names).unwrap();
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let pem = made.cert.pem();
    std::fs::write(&files.cert, &pem).unwrap();
    std::fs::write(&files.key, made.key_pair.serialize_pem()).unwrap();
    (files, pem)
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn trusting(pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn wait_until_up(addr: SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not start on {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_surface_is_https_and_doors_keep_plain_http_for_the_device_api() {
    let config = common::sqlite_config("tls");
    let (files, pem) = certificate(&config.data_dir.join("tls"));
    let (listen, device_listen) = (free_port(), free_port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(chronolock_server::serve_until(
        ServeConfig {
            listen,
            tls: Some(files),
            device_listen: Some(device_listen),
            ..config
        },
        async {
            let _ = stopped.await;
        },
    ));
    wait_until_up(listen).await;
    wait_until_up(device_listen).await;
    let base = format!("https://localhost:{}", listen.port());
    let client = trusting(&pem);

    let r = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    assert_eq!(r.version(), reqwest::Version::HTTP_11);

    // Setup over HTTPS: the session cookie is Secure (and still HttpOnly, SameSite=Strict).
    let r = client
        .post(format!("{base}/setup"))
        .header("origin", &base)
        .form(&[
            ("username", "boss"),
            ("password", "long enough 1"),
            ("confirm", "long enough 1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("; Secure")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    // Plain HTTP on the TLS port gets no page; an untrusted certificate is refused by clients.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let r = plain
        .get(format!("http://127.0.0.1:{}/login", listen.port()))
        .send()
        .await;
    assert!(
        r.is_err() || r.unwrap().status() != 200,
        "plain HTTP served a page"
    );
    let e = plain
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_connect(), "{e:?}");

    // The device listener: the device API and the health check, nothing of the admin surface.
    let device = format!("http://127.0.0.1:{}", device_listen.port());
    let r = plain.get(format!("{device}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for page in ["/login", "/setup", "/", "/api/me", "/admins"] {
        let r = plain.get(format!("{device}{page}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{page} on the device listener");
    }
    let r = plain
        .post(format!("{device}/device/v1/sync"))
        .body(vec![0u8; 12])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        400,
        "a truncated request is refused by the device API"
    );
    let why = r.text().await.unwrap();
    assert!(why.contains("not a chronolock device message"), "{why}");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = common::sqlite_config("tls-renew").data_dir;
    let (files, _) = certificate(&dir);
    let served = axum_server::tls_rustls::RustlsConfig::from_config(tls::load(&files).unwrap());
    let before = served.get_inner();
    let reloader = tokio::spawn(tls::reload_when_renewed(
        files.clone(),
        served.clone(),
        Duration::from_millis(100),
    ));
    // A half-written renewal is not taken: the old pair is served meanwhile.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nAAAA").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(std::sync::Arc::ptr_eq(&before, &served.get_inner()));
    // The whole new pair is.
    certificate(&dir);
    let mut renewed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !std::sync::Arc::ptr_eq(&before, &served.get_inner()) {
            renewed = true;
            break;
        }
    }
    reloader.abort();
    assert!(renewed, "the renewed certificate was not loaded");
}

#[tokio::test]
async fn bad_certificate_files_stop_the_start_with_their_name() {
    let config = common::sqlite_config("tls-bad");
    let dir = config.data_dir.join("tls");
    let (mut files, _) = certificate(&dir);
    // A key that belongs to another certificate.
    let other = certificate(&dir.join("other")).0;
    files.key = other.key;
    let e = chronolock_server::serve_until(
        ServeConfig {
            listen: free_port(),
            tls: Some(files),
            ..config
        },
        async {},
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("--tls-cert") && e.contains("--tls-key"), "{e}");
    let e = chronolock_server::serve_until(
        ServeConfig {
            listen: free_port(),
            public_url: Some("doors.example.org".into()),
            ..common::sqlite_config("tls-bad-url")
        },
        async {},
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("--public-url doors.example.org"), "{e}");
}

/// Behind a reverse proxy on this host (`--public-url https://…`): cookies are Secure, and the
/// login throttle counts the client the proxy names, not the proxy, so one guesser does not
/// lock everyone out; a client cannot pick its own address by sending the header itself.
#[tokio::test]
async fn behind_a_proxy_cookies_are_secure_and_the_throttle_counts_the_real_client() {
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::{header, Request, StatusCode};
    use tower::ServiceExt;

    let config = ServeConfig {
        public_url: Some("https://doors.example.org".into()),
        ..common::sqlite_config("proxy")
    };
    let state = chronolock_server::AppState::open(&config).await.unwrap();
    assert!(state.https && state.behind_proxy);
    let app = chronolock_server::router(state);
    let proxy = SocketAddr::from(([127, 0, 0, 1], 40000));
    let login = |user: &str, password: &str, forwarded: &str| {
        Request::builder()
            .method("POST")
            .uri("/login")
            .header(header::HOST, "doors.example.org")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("x-forwarded-for", forwarded)
            .extension(ConnectInfo(proxy))
            .body(Body::from(format!("username={user}&password={password}")))
            .unwrap()
    };
    let setup = Request::builder()
        .method("POST")
        .uri("/setup")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(
            "username=boss&password=long+enough+1&confirm=long+enough+1",
        ))
        .unwrap();
    let r = app.clone().oneshot(setup).await.unwrap();
    let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");

    // A guesser at 203.0.113.5, trying a new name each time (so only their address counts),
    // and putting a fake address of their own in front.
    let guesser = "198.51.100.99, 203.0.113.5";
    for n in 0..chronolock_server::throttle::FREE_FAILURES {
        let r = app
            .clone()
            .oneshot(login(&format!("guess{n}"), "wrong+password", guesser))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = app
        .clone()
        .oneshot(login("guess-next", "wrong+password", guesser))
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the guesser waits"
    );
    let r = app
        .clone()
        .oneshot(login("other", "wrong+password", "203.0.113.5"))
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "whatever name they use"
    );
    // The admin, through the same proxy from elsewhere, logs in.
    let r = app
        .clone()
        .oneshot(login("boss", "long+enough+1", "192.0.2.10"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}
