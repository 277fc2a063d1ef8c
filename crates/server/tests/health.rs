//! The server built in-process, each test with a fresh migrated database, on SQLite and on
//! PostgreSQL.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chronolock_server::{router, AppState, ServeConfig};
use http_body_util::BodyExt;
use tower::ServiceExt;

#[tokio::test]
async fn healthz_answers_without_login() {
    for (label, state) in common::states("health").await {
        let response = router(state)
            .oneshot(
                Request::builder()
                    .uri("/healthz")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{label}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], "ok");
        assert_eq!(v["database"], label);
    }
}

#[tokio::test]
async fn the_site_key_is_made_once_and_kept() {
    let mut configs = vec![common::sqlite_config("key")];
    configs.extend(common::postgres_config("key").await);
    for config in configs {
        let first = AppState::open(&config).await.unwrap();
        first.db.close().await;
        let second = AppState::open(&config).await.unwrap();
        assert_eq!(
            first.site_public_key, second.site_public_key,
            "a restart keeps the site key"
        );
        // A second process on the same database signs with the same key.
        let third = AppState::open(&config).await.unwrap();
        assert_eq!(third.site_public_key, second.site_public_key);
    }
}

#[tokio::test]
async fn unsupported_database_urls_are_refused() {
    let config = ServeConfig {
        database_url: Some("mysql://localhost/x".into()),
        ..ServeConfig::default()
    };
    let e = AppState::open(&config).await.unwrap_err().to_string();
    assert!(e.contains("unsupported database URL"), "{e}");
}

/// Every answer, pages and redirects included, carries the security headers.
#[tokio::test]
async fn answers_carry_the_security_headers() {
    for (label, state) in common::states("headers").await {
        for uri in ["/healthz", "/login", "/"] {
            let response = router(state.clone())
                .oneshot(Request::builder().uri(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let h = response.headers();
            let csp = h["content-security-policy"].to_str().unwrap();
            assert!(
                csp.contains("frame-ancestors 'none'"),
                "{label} {uri}: {csp}"
            );
            assert!(csp.contains("object-src 'none'"));
            assert!(
                csp.contains("script-src 'self';")
                    && !csp.contains("script-src 'self' 'unsafe-inline'"),
                "no inline scripts: {csp}"
            );
            assert_eq!(h["x-frame-options"], "DENY");
            assert_eq!(h["referrer-policy"], "same-origin");
            assert_eq!(h["x-content-type-options"], "nosniff");
            assert_eq!(h["cache-control"], "no-store", "{label} {uri}");
        }
    }
}

/// The pages' scripts are files, served without login; other names are not found.
#[tokio::test]
async fn page_scripts_are_served_as_files() {
    for (label, state) in common::states("static").await {
        for name in ["log.js", "virtual-door.js", "print.js"] {
            let response = router(state.clone())
                .oneshot(
                    Request::builder()
                        .uri(format!("/static/{name}"))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{label} {name}");
            assert_eq!(
                response.headers()["content-type"],
                "text/javascript; charset=utf-8"
            );
        }
        let response = router(state)
            .oneshot(
                Request::builder()
                    .uri("/static/../Cargo.toml")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
