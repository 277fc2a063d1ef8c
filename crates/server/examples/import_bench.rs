//! Times importing PEOPLE esp-rfid users (default 10,000) into a fresh database with two doors,
//! against a baseline from the same run: the same people added one at a time through the model
//! functions the People editor calls (create the person, add the card, add to the group; each its
//! own statement), then one recompile. Also times a re-import (nothing changes), the preview,
//! a CSV export, and a backup and its restore.
//!
//! ```text
//! cargo run --release -p chronolock-server --example import_bench -- DIR [PEOPLE] [DATABASE_URL]
//! ```
//!
//! With a PostgreSQL URL, the server named must let it create databases (each run makes three).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: fail loudly

use std::path::PathBuf;
use std::time::Instant;

use chronolock_server::{directory, model, transfer, AppState, Db, ServeConfig};

fn esp_rfid(people: usize) -> String {
    let list: Vec<String> = (0..people)
        .map(|i| {
            format!(
                "{{\"uid\": \"{:08x}\", \"pincode\": \"\", \"username\": \"Member {i}\", \"acctype\": {}, \
                 \"acctype2\": 0, \"acctype3\": 0, \"acctype4\": 0, \"validsince\": 0, \"validuntil\": {}}}",
                0x0400_0000 + i,
                if i % 10 == 0 { 0 } else { 1 },
                if i % 3 == 0 { 1_893_456_000 } else { 0 },
            )
        })
        .collect();
    format!(
        "{{\"type\": \"esp-rfid-userbackup\", \"version\": \"v0.6\", \"list\": [{}]}}",
        list.join(",\n")
    )
}

async fn fresh(dir: &std::path::Path, name: &str, url: Option<&str>) -> AppState {
    let database_url = match url {
        Some(base) => {
            sqlx::any::install_default_drivers();
            let db = format!("import_bench_{name}_{}", std::process::id());
            let admin = sqlx::AnyPool::connect(base).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {db}"))
                .execute(&admin)
                .await
                .unwrap();
            admin.close().await;
            let (prefix, _) = base.rsplit_once('/').unwrap();
            Some(format!("{prefix}/{db}"))
        }
        None => None,
    };
    let data_dir = dir.join(name);
    let _ = std::fs::remove_dir_all(&data_dir);
    let state = AppState::open(&ServeConfig {
        data_dir,
        database_url,
        ..ServeConfig::default()
    })
    .await
    .unwrap();
    let site = model::create_site(&state, "Bench", "Europe/Berlin")
        .await
        .unwrap();
    for d in ["Front", "Back"] {
        model::create_door(&state, site, d).await.unwrap();
    }
    state
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(
        args.get(1)
            .expect("usage: import_bench DIR [PEOPLE] [DATABASE_URL]"),
    );
    let people: usize = args.get(2).map_or(10_000, |s| s.parse().unwrap());
    let url = args.get(3).map(String::as_str);
    let file = esp_rfid(people);
    let backend = if url.is_some() { "postgres" } else { "sqlite" };
    println!("{backend}: {people} esp-rfid users, {} bytes", file.len());

    // Baseline: one person at a time, as the People editor does it.
    let state = fresh(&dir, "baseline", url).await;
    let site = directory::first_site(&state).await.unwrap().unwrap();
    let group = model::create_group(&state, site.id, transfer::ESP_RFID_GROUP)
        .await
        .unwrap();
    let t = Instant::now();
    for i in 0..people {
        let id = model::create_person(&state, site.id, &format!("Member {i}"))
            .await
            .unwrap();
        model::add_card(&state, id, &format!("{:08X}", 0x0400_0000 + i))
            .await
            .unwrap();
        if i % 10 != 0 {
            model::add_member(&state, group, id).await.unwrap();
        }
    }
    model::site_changed(&state, site.id).await.unwrap();
    let baseline = t.elapsed();
    println!(
        "baseline, one person at a time through the model: {:.2} s",
        baseline.as_secs_f64()
    );
    state.db.close().await;

    let state = fresh(&dir, "import", url).await;
    let site = directory::first_site(&state).await.unwrap().unwrap();
    let t = Instant::now();
    let doc = transfer::parse(&file, &site.zone()).unwrap();
    let parsed = t.elapsed();
    let preview = Instant::now();
    let s = transfer::import(&state, &site, &doc, false).await.unwrap();
    let preview = preview.elapsed();
    assert_eq!(s.added, people);
    let t2 = Instant::now();
    let s = transfer::import(&state, &site, &doc, true).await.unwrap();
    let import = parsed + t2.elapsed();
    assert_eq!(s.added, people);
    println!(
        "import (parse {:.3} s, one transaction, recompile included): {:.2} s ({:.1}x the baseline's speed)",
        parsed.as_secs_f64(),
        import.as_secs_f64(),
        baseline.as_secs_f64() / import.as_secs_f64()
    );
    println!(
        "preview (the same work, rolled back): {:.2} s",
        preview.as_secs_f64()
    );
    let t = Instant::now();
    let again = transfer::import(&state, &site, &doc, true).await.unwrap();
    assert_eq!(again.unchanged, people);
    println!(
        "re-import, nothing changes: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let csv = transfer::export_csv(&state, &site).await.unwrap();
    println!(
        "CSV export: {:.2} s, {} bytes",
        t.elapsed().as_secs_f64(),
        csv.len()
    );
    let t = Instant::now();
    let backup = transfer::backup(&state.db).await.unwrap();
    println!(
        "backup: {:.2} s, {} bytes",
        t.elapsed().as_secs_f64(),
        backup.len()
    );
    state.db.close().await;
    let target = match url {
        Some(_) => fresh(&dir, "restore", url).await.db,
        None => {
            let d = dir.join("restore");
            let _ = std::fs::remove_dir_all(&d);
            Db::open(&chronolock_server::db::sqlite_url_in(&d).unwrap())
                .await
                .unwrap()
        }
    };
    let t = Instant::now();
    transfer::restore(&target, &backup, true).await.unwrap();
    println!("restore: {:.2} s", t.elapsed().as_secs_f64());
}
