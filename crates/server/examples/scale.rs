//! Seeds a large site and measures the list compiler; writes sync requests for the load test.
//!
//! ```text
//! cargo run --release -p chronolock-server --example scale -- DIR [PEOPLE] [DOORS] [DATABASE_URL]
//! ```
//!
//! Makes PEOPLE people (default 100,000) with one card each in a group with a weekday schedule,
//! and DOORS doors (default 1,000): the first 10 (`SCALE_WHOLE_DOORS`, at least 1) admit the
//! whole group, every other door a group of 100. Prints the time to compile and store the 100,000-person list (three runs, each
//! after a change so the generation rises), and the time to compile every door. Then pairs door
//! 1 and writes `DIR/sync-unchanged.bin` (a sync with the current generation) and
//! `DIR/sync-stale.bin` (generation 0: the whole list comes back) for `scripts/bench-sync.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: fail loudly

use std::path::PathBuf;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use chronolock_core::protocol::{DeviceStatus, Enrolment, SyncRequestWriter};
use chronolock_server::model::{self, RuleSpec, Subject};
use chronolock_server::schedule::LocalSlot;
use chronolock_server::{device, AppState, ServeConfig};
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn bulk(state: &AppState, table_cols: &str, rows: impl Iterator<Item = String>) {
    let rows: Vec<String> = rows.collect();
    let mut tx = state.db.pool().begin().await.unwrap();
    for chunk in rows.chunks(500) {
        sqlx::query(&format!(
            "INSERT INTO {table_cols} VALUES {}",
            chunk.join(",")
        ))
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(
        args.get(1)
            .expect("usage: scale DIR [PEOPLE] [DOORS] [DB_URL]"),
    );
    let people: i64 = args.get(2).map_or(100_000, |s| s.parse().unwrap());
    let doors: i64 = args.get(3).map_or(1_000, |s| s.parse().unwrap());
    let whole: i64 = std::env::var("SCALE_WHOLE_DOORS")
        .ok()
        .map_or(10, |s| s.parse::<i64>().unwrap().max(1));
    std::fs::create_dir_all(&dir).unwrap();
    let state = AppState::open(&ServeConfig {
        data_dir: dir.clone(),
        database_url: args.get(4).cloned(),
        ..ServeConfig::default()
    })
    .await
    .unwrap();
    let now = chronolock_server::now_unix();

    let t = Instant::now();
    let site = model::create_site(&state, "Scale", "Europe/Berlin")
        .await
        .unwrap();
    let weekdays = model::create_schedule(
        &state,
        site,
        "Weekdays",
        &[LocalSlot {
            days: 0b001_1111,
            start_min: 7 * 60,
            end_min: 22 * 60,
        }],
    )
    .await
    .unwrap();
    let base = 1_000_000;
    bulk(
        &state,
        "people (id, site_id, name, created_at)",
        (0..people).map(|i| format!("({}, {site}, 'Person {i}', {now})", base + i)),
    )
    .await;
    bulk(
        &state,
        "cards (person_id, uid)",
        (0..people).map(|i| format!("({}, '{:08X}')", base + i, 0x0400_0000 + i)),
    )
    .await;
    let members = model::create_group(&state, site, "Members").await.unwrap();
    bulk(
        &state,
        "group_members (group_id, person_id)",
        (0..people).map(|i| format!("({members}, {})", base + i)),
    )
    .await;
    let mut door_ids = Vec::new();
    for d in 0..doors {
        let door = model::create_door(&state, site, &format!("Door {d}"))
            .await
            .unwrap();
        door_ids.push(door);
        let subject = if d < whole {
            Subject::Group(members)
        } else {
            let g = model::create_group(&state, site, &format!("Team {d}"))
                .await
                .unwrap();
            bulk(
                &state,
                "group_members (group_id, person_id)",
                (0..100.min(people)).map(|i| format!("({g}, {})", base + (d * 100 + i) % people)),
            )
            .await;
            Subject::Group(g)
        };
        model::add_rule(
            &state,
            &RuleSpec {
                door_id: door,
                subject,
                access: chronolock_core::allowlist::AccessType::Scheduled,
                valid_from: 0,
                valid_until: 0,
                schedule_id: Some(weekdays),
            },
        )
        .await
        .unwrap();
    }
    println!(
        "seeded {people} people, {doors} doors in {:.1} s ({})",
        t.elapsed().as_secs_f64(),
        state.db.backend().as_str()
    );

    let first = door_ids[0];
    for run in 0..3 {
        // A change, so the list really is rebuilt, signed and stored.
        sqlx::query(&format!(
            "INSERT INTO cards (person_id, uid) VALUES ({base}, '{:08X}')",
            0x0900_0000 + run
        ))
        .execute(state.db.pool())
        .await
        .unwrap();
        let t = Instant::now();
        let generation = model::refresh_door(&state, first, now).await.unwrap();
        println!(
            "compile+sign+store the {people}-person list: {:.0} ms (generation {generation})",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    let t = Instant::now();
    let entries = model::door_entries(&state, first, now).await.unwrap();
    let read = t.elapsed();
    let t = Instant::now();
    let bytes = chronolock_allowlist::compile(&entries, 1, now, &state.signing_key).unwrap();
    println!(
        "  of which: reading {} entries {:.0} ms, building and signing {} bytes {:.0} ms",
        entries.len(),
        read.as_secs_f64() * 1e3,
        bytes.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    let n = model::refresh_due(&state, now).await.unwrap();
    println!(
        "compile every other door ({n}): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let n = model::site_changed(&state, site).await.unwrap();
    println!(
        "recompile the whole site after a change that alters no list ({n} doors): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let (len,): (i64,) = sqlx::query_as("SELECT LENGTH(bytes) FROM door_lists WHERE door_id = $1")
        .bind(first)
        .fetch_one(state.db.pool())
        .await
        .unwrap();
    println!("list size: {len} bytes");

    // Pair door 1 and write the sync requests the load test replays.
    let code = device::new_pairing_code(&state, first).await.unwrap();
    let enrolment = Enrolment::new([7; 32], [8; 16], &code);
    let r = chronolock_server::router(state.clone())
        .oneshot(
            Request::post("/device/v1/enrol")
                .body(Body::from(enrolment.request().to_vec()))
                .unwrap(),
        )
        .await
        .unwrap();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    let enrolled = enrolment.finish(&body).expect("paired");
    let (generation,): (i64,) = sqlx::query_as("SELECT generation FROM doors WHERE id = $1")
        .bind(first)
        .fetch_one(state.db.pool())
        .await
        .unwrap();
    for (counter, (name, generation)) in [
        ("sync-unchanged.bin", generation as u64),
        ("sync-stale.bin", 0),
    ]
    .into_iter()
    .enumerate()
    {
        let mut buf = vec![0u8; 256];
        let status = DeviceStatus {
            wall_us: Some(chronolock_server::now_micros()),
            uptime_us: 1,
            generation,
            source: Some(chronolock_core::Source::Ntp),
            error_us: 10_000,
            battery_mv: 3700,
            partial_list: None,
            list_capacity: 0,
            firmware_version: 0,
            partial_firmware: None,
        };
        // Each request is fresh once: replayed, the server refuses it (409) before any work
        // but opening it and checking its counter.
        let counter = counter as u64 + 1;
        let w =
            SyncRequestWriter::new(&mut buf, enrolled.door_id, [9; 16], counter, &status).unwrap();
        let n = w.finish(&enrolled.device_key);
        std::fs::write(dir.join(name), &buf[..n]).unwrap();
    }
    state.db.close().await;
    println!(
        "wrote {0}/sync-unchanged.bin and {0}/sync-stale.bin",
        dir.display()
    );
}
