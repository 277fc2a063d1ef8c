//! Fresh, migrated databases for the server tests: SQLite always, and PostgreSQL when
//! `CHRONOLOCK_TEST_POSTGRES_URL` names a server (the test command starts one). Under CI the
//! PostgreSQL run is required, so the suite cannot pass on SQLite alone by accident.

#![allow(dead_code)]

use chronolock_server::{AppState, ServeConfig};

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn unique(name: &str) -> String {
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("{name}_{}_{n}", std::process::id())
}

/// A configuration with a fresh SQLite data directory.
pub fn sqlite_config(name: &str) -> ServeConfig {
    let dir = std::env::temp_dir().join(format!("chronolock-server-{}", unique(name)));
    let _ = std::fs::remove_dir_all(&dir);
    ServeConfig {
        data_dir: dir,
        ..ServeConfig::default()
    }
}

/// A configuration with a fresh PostgreSQL database, if a server is available.
pub async fn postgres_config(name: &str) -> Option<ServeConfig> {
    let Ok(base) = std::env::var("CHRONOLOCK_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must test PostgreSQL too: run the suite through scripts/test.sh"
        );
        eprintln!("note: CHRONOLOCK_TEST_POSTGRES_URL is not set; PostgreSQL is not tested");
        return None;
    };
    sqlx::any::install_default_drivers();
    let db = unique(name).to_lowercase();
    let admin = sqlx::AnyPool::connect(&base)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    let (prefix, _) = base.rsplit_once('/').expect("URL with a database name");
    Some(ServeConfig {
        database_url: Some(format!("{prefix}/{db}")),
        ..sqlite_config(name)
    })
}

/// Fresh states on every available database, labelled.
pub async fn states(name: &str) -> Vec<(&'static str, AppState)> {
    let mut out = vec![(
        "sqlite",
        AppState::open(&sqlite_config(name)).await.expect("sqlite"),
    )];
    if let Some(cfg) = postgres_config(name).await {
        out.push(("postgres", AppState::open(&cfg).await.expect("postgres")));
    }
    out
}
