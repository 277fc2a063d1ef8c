//! `chronolock import`, `export`, `backup` and `restore`: the server's [`chronolock_server::transfer`]
//! on a data directory or a database URL, while the server runs or not.

use std::path::{Path, PathBuf};

use chronolock_server::transfer;
use chronolock_server::{AppState, Db, ServeConfig};

/// Where the server's database is.
#[derive(clap::Args, Debug)]
pub struct Database {
    /// Data directory of the server (its SQLite database, created if missing).
    #[arg(long = "data", default_value = "chronolock-data")]
    pub data: PathBuf,
    /// Database URL instead of the SQLite file in the data directory, e.g. postgres://….
    #[arg(long = "database-url", env = "CHRONOLOCK_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl Database {
    /// The server configuration that opens this database.
    pub fn config(&self) -> ServeConfig {
        ServeConfig {
            data_dir: self.data.clone(),
            database_url: self.database_url.clone(),
            ..ServeConfig::default()
        }
    }

    fn url(&self) -> Result<String, String> {
        match &self.database_url {
            Some(url) => Ok(url.clone()),
            None => chronolock_server::db::sqlite_url_in(&self.data).map_err(|e| e.to_string()),
        }
    }
}

/// `chronolock import`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The file: an esp-rfid user backup (JSON), a chronolock JSON export, or CSV with a
    /// header; `-` reads standard input.
    pub file: PathBuf,
    /// Where the database is.
    #[command(flatten)]
    pub db: Database,
    /// The site's time zone, if the database has no site yet (it is made, named "Site").
    #[arg(long, default_value = "UTC")]
    pub timezone: String,
    /// Check the file and print what would change; store nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
}

/// Export formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    /// People, one per row, with their cards, groups and own rules.
    Csv,
    /// People, doors, schedules, groups and rules (chronolock-export, version 1).
    Json,
}

/// `chronolock export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Where the database is.
    #[command(flatten)]
    pub db: Database,
    /// The format.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: Format,
    /// Where to write it (`-`: standard output).
    #[arg(short = 'o', long = "out")]
    pub out: PathBuf,
}

/// `chronolock backup`.
#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// Where the database is.
    #[command(flatten)]
    pub db: Database,
    /// Where to write it (mode 0600: it holds the site's signing key and the doors' keys).
    #[arg(short = 'o', long = "out")]
    pub out: PathBuf,
}

/// `chronolock restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The backup file.
    pub file: PathBuf,
    /// Where the database is.
    #[command(flatten)]
    pub db: Database,
    /// Replace what the database holds (otherwise only an empty database is restored into).
    #[arg(long)]
    pub force: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn read_input(file: &Path) -> Result<Vec<u8>, String> {
    if file == Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .map_err(|e| format!("standard input: {e}"))?;
        Ok(buf)
    } else {
        std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))
    }
}

fn write_output(out: &Path, bytes: &[u8]) -> Result<(), String> {
    if out == Path::new("-") {
        std::io::Write::write_all(&mut std::io::stdout(), bytes).map_err(|e| e.to_string())
    } else {
        transfer::write_private(out, bytes).map_err(|e| format!("{}: {e}", out.display()))
    }
}

/// Imports a file; prints the summary.
pub fn import(args: ImportArgs) -> Result<String, String> {
    let bytes = read_input(&args.file)?;
    let text =
        String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", args.file.display()))?;
    runtime()?.block_on(async {
        let state = AppState::open(&args.db.config())
            .await
            .map_err(|e| e.to_string())?;
        let result = transfer::import_text(&state, &text, &args.timezone, !args.dry_run).await;
        state.db.close().await;
        let summary = result.map_err(|e| format!("{}: {e}", args.file.display()))?;
        let head = if args.dry_run {
            "dry run, nothing stored: "
        } else {
            ""
        };
        Ok(format!("{head}{summary}"))
    })
}

/// Exports the site's people.
pub fn export(args: ExportArgs) -> Result<String, String> {
    runtime()?.block_on(async {
        let state = AppState::open(&args.db.config())
            .await
            .map_err(|e| e.to_string())?;
        let result = async {
            let site = chronolock_server::directory::first_site(&state)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("the database has no site yet")?;
            match args.format {
                Format::Csv => transfer::export_csv(&state, &site).await,
                Format::Json => transfer::export_json(&state, &site).await,
            }
            .map_err(|e| e.to_string())
        }
        .await;
        state.db.close().await;
        write_output(&args.out, result?.as_bytes())?;
        Ok(if args.out == Path::new("-") {
            String::new()
        } else {
            format!("wrote {}\n", args.out.display())
        })
    })
}

/// Writes a backup.
pub fn backup(args: BackupArgs) -> Result<String, String> {
    runtime()?.block_on(async {
        let db = Db::open(&args.db.url()?)
            .await
            .map_err(|e| e.to_string())?;
        let result = transfer::backup(&db).await.map_err(|e| e.to_string());
        db.close().await;
        let bytes = result?;
        write_output(&args.out, &bytes)?;
        Ok(format!(
            "wrote {} ({} bytes); it holds the site's signing key and the doors' keys: keep it safe\n",
            args.out.display(),
            bytes.len()
        ))
    })
}

/// Restores a backup.
pub fn restore(args: RestoreArgs) -> Result<String, String> {
    let bytes = read_input(&args.file)?;
    runtime()?.block_on(async {
        let db = Db::open(&args.db.url()?).await.map_err(|e| e.to_string())?;
        let result = transfer::restore(&db, &bytes, args.force).await;
        db.close().await;
        result
            .map(|s| s.to_string())
            .map_err(|e| format!("{}: {e}", args.file.display()))
    })
}
