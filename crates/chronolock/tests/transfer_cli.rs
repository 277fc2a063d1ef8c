//! `chronolock import`, `export`, `backup` and `restore` as an admin runs them: on a fresh data
//! directory, twice, with a bad file, and a backup restored into another directory (and onto
//! PostgreSQL when the test command provides one).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: fail loudly

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ESP_RFID: &str = r#"{"type": "esp-rfid-userbackup", "version": "v0.6", "list": [
  {"uid": "04a1b2c3", "pincode": "", "username": "Ada Lovelace", "acctype": 1, "validsince": 0, "validuntil": 1893456000},
  {"uid": "0badcafe", "pincode": "", "username": "Bob", "acctype": 0, "validsince": 0, "validuntil": 0}
]}"#;

fn chronolock(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chronolock"))
        .args(args)
        .env_remove("CHRONOLOCK_DATABASE_URL")
        .output()
        .expect("runs")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "chronolock-transfer-cli-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn import_export_backup_restore_on_fresh_directories() {
    let dir = temp_dir("main");
    let file = dir.join("users.json");
    std::fs::write(&file, ESP_RFID).unwrap();
    let data = dir.join("data");
    assert!(!data.exists());

    // A file that fails on a fresh data directory leaves no site behind (nor does a dry run):
    // the real import below still makes it in the zone it is given.
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "name,cards\nAda,XYZ\n").unwrap();
    let o = chronolock(&["import", "--data", path(&data), path(&bad)]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("row 2") && text(&o).contains("cards"),
        "{}",
        text(&o)
    );
    let o = chronolock(&["import", "--data", path(&data), "--dry-run", path(&file)]);
    assert!(o.status.success(), "{}", text(&o));

    // A fresh data directory: database and site are made.
    let o = chronolock(&[
        "import",
        "--data",
        path(&data),
        "--timezone",
        "Europe/Berlin",
        path(&file),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("people added 2, updated 0, unchanged 0"),
        "{out}"
    );
    assert!(out.contains("no doors yet"), "{out}");
    assert!(data.join("chronolock.db").exists());

    // Again: nothing changes.
    let o = chronolock(&["import", "--data", path(&data), path(&file)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("people added 0, updated 0, unchanged 2"),
        "{}",
        text(&o)
    );

    let export = |data: &Path| {
        let o = chronolock(&[
            "export",
            "--data",
            path(data),
            "--format",
            "json",
            "-o",
            "-",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let json = export(&data);
    assert!(
        json.contains("\"04A1B2C3\"") && json.contains("\"2030-01-01\""),
        "{json}"
    );
    assert!(json.contains("Europe/Berlin"), "{json}");
    let csv_file = dir.join("people.csv");
    let o = chronolock(&[
        "export",
        "--data",
        path(&data),
        "--format",
        "csv",
        "-o",
        path(&csv_file),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let csv = std::fs::read_to_string(&csv_file).unwrap();
    assert!(
        csv.starts_with("name,email,member_number,note,expiry,cards,groups,access"),
        "{csv}"
    );

    // A bad file: exit 2, the row and field named, nothing imported.
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "name,cards\nCyd,11223344\nDan,xyz\n").unwrap();
    let o = chronolock(&["import", "--data", path(&data), path(&bad)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("row 3, cards"),
        "{}",
        text(&o)
    );
    std::fs::write(&bad, "{\"type\": \"esp-rfid-userbackup\", \"list\": [}").unwrap();
    let o = chronolock(&["import", "--data", path(&data), path(&bad)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not valid JSON"),
        "{}",
        text(&o)
    );
    assert_eq!(export(&data), json, "nothing imported");

    // Backup: mode 0600; restored into a fresh directory it exports the same.
    let backup = dir.join("backup.json");
    let o = chronolock(&["backup", "--data", path(&data), "-o", path(&backup)]);
    assert!(o.status.success(), "{}", text(&o));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let other = dir.join("restored");
    let o = chronolock(&["restore", "--data", path(&other), path(&backup)]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(export(&other), json);
    // Not again over data, unless forced.
    let o = chronolock(&["restore", "--data", path(&other), path(&backup)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not empty"),
        "{}",
        text(&o)
    );
    let o = chronolock(&["restore", "--force", "--data", path(&other), path(&backup)]);
    assert!(o.status.success(), "{}", text(&o));

    // Onto PostgreSQL, when the test command started one: SQLite → PostgreSQL.
    if let Ok(base) = std::env::var("CHRONOLOCK_TEST_POSTGRES_URL") {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let db = format!("transfer_cli_{}", std::process::id());
        runtime.block_on(async {
            sqlx::any::install_default_drivers();
            let admin = sqlx::AnyPool::connect(&base).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {db}"))
                .execute(&admin)
                .await
                .unwrap();
            admin.close().await;
        });
        let (prefix, _) = base.rsplit_once('/').unwrap();
        let url = format!("{prefix}/{db}");
        let o = chronolock(&["restore", "--database-url", &url, path(&backup)]);
        assert!(o.status.success(), "{}", text(&o));
        let o = chronolock(&[
            "export",
            "--database-url",
            &url,
            "--format",
            "json",
            "-o",
            "-",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(String::from_utf8(o.stdout).unwrap(), json);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
