//! The `chronolock` command.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chronolock_sim::RunError;
use clap::{Parser, Subcommand};

/// chronolock: self-hosted door access control built on trustworthy wall-clock time.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the backend: device API and admin UI, SQLite in the data directory by default.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Data directory (created if missing); the SQLite database lives here.
        #[arg(long = "data", default_value = "chronolock-data")]
        data: PathBuf,
        /// Database URL instead of the embedded SQLite file, e.g. postgres://user@host/db;
        /// several servers may share one PostgreSQL database.
        #[arg(long = "database-url", env = "CHRONOLOCK_DATABASE_URL")]
        database_url: Option<String>,
        /// Seed a demo site (doors, people, schedules, rules) if the database has none, and
        /// print a pairing code per door for virtual doors.
        #[arg(long)]
        demo: bool,
        /// With --demo: do not run the demo doors as virtual doors in this process (to pair
        /// doors of your own, e.g. `chronolock sim live --demo`, with the printed codes).
        #[arg(long = "no-virtual-doors")]
        no_virtual_doors: bool,
        /// NTP server HOST:PORT for the demo's virtual doors (repeat for several).
        #[arg(long = "ntp", default_value = "pool.ntp.org:123")]
        ntp: Vec<String>,
        /// Serve HTTPS with this PEM certificate chain (with --tls-key); renewed files are
        /// picked up within a minute.
        #[arg(long = "tls-cert", requires = "tls_key", value_name = "FILE")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long = "tls-key", requires = "tls_cert", value_name = "FILE")]
        tls_key: Option<PathBuf>,
        /// The address browsers use when a reverse proxy on this host terminates TLS, e.g.
        /// https://doors.example.org: cookies become Secure and the proxy's X-Forwarded-For
        /// names the client.
        #[arg(long = "public-url", value_name = "URL", conflicts_with = "tls_cert")]
        public_url: Option<String>,
        /// Also serve the device API alone, over plain HTTP, on this address: for doors that do
        /// not speak TLS (the device protocol encrypts and authenticates its bodies itself).
        #[arg(long = "device-listen", value_name = "ADDR")]
        device_listen: Option<std::net::SocketAddr>,
        #[command(flatten)]
        mqtt: Box<MqttArgs>,
    },
    /// Measure the server.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Simulate door controllers.
    Sim {
        #[command(subcommand)]
        command: SimCommand,
    },
    /// Make a site signing key: the private key to PATH (mode 600), the public key to PATH.pub.
    Keygen {
        /// Where to write the private key (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Compile and inspect signed allow-lists.
    Allowlist {
        #[command(subcommand)]
        command: AllowlistCommand,
    },
    /// Look after the admins of a server's database.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// What flashing a door needs: its setup access point's secret.
    Firmware {
        #[command(subcommand)]
        command: chronolock::firmware::FirmwareCommand,
    },
    /// Secure cards: personalise and enrol a card, rotate the site's card master key.
    Card {
        #[command(subcommand)]
        command: chronolock::card::CardCommand,
    },
    /// Import people: an esp-rfid user backup, a chronolock JSON export or CSV (one transaction).
    Import(chronolock::transfer::ImportArgs),
    /// Export the site's people (CSV) or people, doors, schedules, groups and rules (JSON).
    Export(chronolock::transfer::ExportArgs),
    /// Write a consistent backup of the whole database (holds keys: keep it safe).
    Backup(chronolock::transfer::BackupArgs),
    /// Restore a backup into an empty database (SQLite or PostgreSQL).
    Restore(chronolock::transfer::RestoreArgs),
}

/// `serve`'s Home Assistant options.
#[derive(clap::Args)]
struct MqttArgs {
    /// Publish door states and events to Home Assistant over MQTT: mqtt://HOST:PORT, or
    /// mqtts://HOST:PORT for TLS (plain mqtt:// sends door events in clear: loopback only).
    /// The password comes from CHRONOLOCK_MQTT_PASSWORD or USER:PASSWORD@ in the URL.
    #[arg(long, value_name = "URL")]
    mqtt: Option<String>,
    /// The broker's user name (instead of USER@ in the URL).
    #[arg(long = "mqtt-user", value_name = "USER", requires = "mqtt")]
    mqtt_user: Option<String>,
    /// With mqtts://: trust this PEM CA certificate instead of the public roots.
    #[arg(long = "mqtt-ca", value_name = "FILE", requires = "mqtt")]
    mqtt_ca: Option<PathBuf>,
    /// Topic prefix of the door states and events.
    #[arg(long = "mqtt-prefix", default_value = chronolock_server::mqtt::DEFAULT_PREFIX)]
    mqtt_prefix: String,
    /// Home Assistant's MQTT discovery prefix.
    #[arg(long = "mqtt-discovery-prefix", default_value = chronolock_server::mqtt::DEFAULT_DISCOVERY_PREFIX)]
    mqtt_discovery_prefix: String,
}

impl MqttArgs {
    fn config(self) -> Option<chronolock_server::mqtt::MqttConfig> {
        Some(chronolock_server::mqtt::MqttConfig {
            url: self.mqtt?,
            user: self.mqtt_user,
            password: std::env::var("CHRONOLOCK_MQTT_PASSWORD").ok(),
            ca: self.mqtt_ca,
            prefix: self.mqtt_prefix,
            discovery_prefix: self.mqtt_discovery_prefix,
        })
    }
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Unchanged device syncs per second: seeds a site, starts the server on loopback, pairs
    /// the doors over HTTP and drives their polls with real protocol requests. The last line on
    /// stdout is one JSON object with the figures.
    Sync {
        /// People (one card each), admitted at every door.
        #[arg(long, default_value_t = 1000)]
        people: usize,
        /// Doors, each paired and polling.
        #[arg(long, default_value_t = 100)]
        doors: usize,
        /// How long the measured polls run.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Concurrent connections.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// An empty PostgreSQL database to use (default: SQLite in a temporary directory).
        #[arg(long = "database-url", value_name = "URL")]
        database_url: Option<String>,
        /// A reference HTTP server (e.g. nginx answering 304, scripts/bench-sync-nginx.sh):
        /// after the syncs, the same client posts sync-sized bodies to it for as long, over as
        /// many connections, and the figures add its rate and the ratio to it.
        #[arg(long = "baseline-url", value_name = "URL")]
        baseline_url: Option<String>,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Set a new password for an admin who forgot theirs (read from CHRONOLOCK_NEW_PASSWORD, or
    /// one line on standard input) and end their sessions.
    ResetPassword {
        /// The admin's user name.
        #[arg(long)]
        user: String,
        /// Data directory of the server (its SQLite database).
        #[arg(long = "data", default_value = "chronolock-data")]
        data: PathBuf,
        /// Database URL instead of the SQLite file in the data directory.
        #[arg(long = "database-url", env = "CHRONOLOCK_DATABASE_URL")]
        database_url: Option<String>,
    },
}

#[derive(Subcommand)]
enum AllowlistCommand {
    /// Compile a JSON allow-list source into the signed binary a door reads in place.
    Compile {
        /// The JSON source.
        src: PathBuf,
        /// The site's private key (from `chronolock keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the binary.
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// Generation; doors refuse a list that is not newer than theirs. Default: the creation
        /// time in Unix seconds, which rises with every compile.
        #[arg(long)]
        generation: Option<u64>,
    },
    /// Print a summary of a compiled list, and whether its signature holds.
    Inspect {
        /// The binary list.
        file: PathBuf,
        /// The site's public key, to check the signature.
        #[arg(long = "pub")]
        public: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SimCommand {
    /// Play a scenario (JSON Lines) in virtual time and print its events as JSON Lines.
    Run {
        /// The scenario file.
        file: PathBuf,
    },
    /// Run virtual doors in real time against a server (HTTP) and an NTP server (UDP). Commands
    /// as JSON Lines on stdin, events as JSON Lines on stdout.
    Live {
        /// The server's address, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        server: Option<String>,
        /// NTP server HOST:PORT (repeat for several).
        #[arg(long = "ntp")]
        ntp: Vec<String>,
        /// How many doors.
        #[arg(long, default_value_t = 1)]
        doors: u32,
        /// Data directory: each door's flash and RTC, kept across runs like a power cycle.
        #[arg(long, default_value = "chronolock-doors")]
        data: PathBuf,
        /// Pairing code for the next unpaired door (repeat for several, in door order).
        #[arg(long = "code")]
        codes: Vec<String>,
        /// Take pairing codes from a server started with `serve --demo`, one door each.
        #[arg(long)]
        demo: bool,
        /// Doors without a DS3231 RTC.
        #[arg(long = "no-rtc")]
        no_rtc: bool,
        /// Seconds between syncs (default: what the server asks for).
        #[arg(long = "sync-interval")]
        sync_interval: Option<u32>,
        /// Port of door 0's setup page while unpaired (door i: PORT + i; default: any free port,
        /// printed as a `setup_page` event).
        #[arg(long = "setup-port", default_value_t = 0)]
        setup_port: u16,
        /// Stop after this many seconds (default: run until Ctrl-C or SIGTERM).
        #[arg(long)]
        duration: Option<f64>,
    },
    /// Simulate a fleet of doors over many days in virtual time, deterministic from one seed, with
    /// random faults; checks after every step that no grant is wrong, no event is lost and no
    /// door reports twice in a UTC day. Exit 1 and a replay command if one breaks.
    Fleet {
        /// The seed every random choice comes from.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Number of doors.
        #[arg(long, default_value_t = 20)]
        doors: u32,
        /// Days of faults.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Replay only this door of the fleet.
        #[arg(long)]
        door: Option<u32>,
        /// Threads (0: one per CPU); the report does not depend on it.
        #[arg(long, default_value_t = 0)]
        threads: u32,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Benchmark: boot a virtual door without RTC many times against an NTP server that serves
    /// this machine's clock (scripts/bench-boot.sh starts chronyd for it); prints the time from
    /// network-up to a valid clock and the clock's offset from the server, median and p99.
    BenchBoot {
        /// NTP server HOST:PORT.
        #[arg(long)]
        ntp: String,
        /// How many boots.
        #[arg(long, default_value_t = 100)]
        boots: usize,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Sim {
            command: SimCommand::Run { file },
        } => sim_run(&file),
        Command::Sim {
            command:
                SimCommand::Live {
                    server,
                    ntp,
                    doors,
                    data,
                    codes,
                    demo,
                    no_rtc,
                    sync_interval,
                    setup_port,
                    duration,
                },
        } => {
            let opts = chronolock_sim::live::LiveOptions {
                server,
                ntp,
                doors: if demo && doors == 1 { 0 } else { doors },
                data,
                codes,
                rtc: !no_rtc,
                sync_interval_s: sync_interval,
                setup_port,
            };
            sim_live(opts, demo, duration)
        }
        Command::Sim {
            command: SimCommand::BenchBoot { ntp, boots },
        } => bench_boot(&ntp, boots),
        Command::Sim {
            command:
                SimCommand::Fleet {
                    seed,
                    doors,
                    days,
                    door,
                    threads,
                    json,
                },
        } => fleet(
            chronolock_sim::fleet::FleetConfig {
                seed,
                doors,
                days,
                only_door: door,
                threads,
                ..chronolock_sim::fleet::FleetConfig::default()
            },
            json,
        ),
        Command::Serve {
            listen,
            data,
            database_url,
            demo,
            no_virtual_doors,
            ntp,
            tls_cert,
            tls_key,
            public_url,
            device_listen,
            mqtt,
        } => serve(chronolock_server::ServeConfig {
            listen,
            data_dir: data,
            database_url,
            demo,
            virtual_doors: !no_virtual_doors,
            door_host: Some(chronolock::virtual_doors::host()),
            ntp,
            tls: tls_cert
                .zip(tls_key)
                .map(|(cert, key)| chronolock_server::tls::TlsFiles { cert, key }),
            public_url,
            device_listen,
            mqtt: mqtt.config(),
        }),
        Command::Keygen { out } => report(keygen(&out)),
        Command::Bench {
            command:
                BenchCommand::Sync {
                    people,
                    doors,
                    seconds,
                    connections,
                    database_url,
                    baseline_url,
                },
        } => report(chronolock::bench::sync(&chronolock::bench::SyncBench {
            people,
            doors,
            seconds,
            connections,
            database_url,
            baseline_url,
        })),
        Command::Firmware { command } => report(chronolock::firmware::run(command)),
        Command::Import(args) => report(chronolock::transfer::import(args)),
        Command::Export(args) => report(chronolock::transfer::export(args)),
        Command::Backup(args) => report(chronolock::transfer::backup(args)),
        Command::Restore(args) => report(chronolock::transfer::restore(args)),
        Command::Admin {
            command:
                AdminCommand::ResetPassword {
                    user,
                    data,
                    database_url,
                },
        } => report(reset_password(&user, data, database_url)),
        Command::Card { command } => report(chronolock::card::run(command)),
        Command::Allowlist {
            command:
                AllowlistCommand::Compile {
                    src,
                    key,
                    out,
                    generation,
                },
        } => report(compile(&src, &key, &out, generation)),
        Command::Allowlist {
            command: AllowlistCommand::Inspect { file, public },
        } => match inspect(&file, public.as_deref()) {
            // The summary is printed either way; a signature that does not hold exits 1.
            Ok((summary, false)) => {
                print!("{summary}");
                ExitCode::from(1)
            }
            Ok((summary, true)) => report(Ok(summary)),
            Err(e) => report(Err(e)),
        },
    }
}

fn fleet(cfg: chronolock_sim::fleet::FleetConfig, json: bool) -> ExitCode {
    use chronolock_sim::fleet::{self, RunFailure};
    let (report, code) = match fleet::run(&cfg) {
        Ok(report) => (report, ExitCode::SUCCESS),
        Err(RunFailure::Invariant(failure)) => {
            eprintln!("invariant broken: {}", failure.first);
            eprintln!("replay: {}", failure.replay);
            (failure.report, ExitCode::from(1))
        }
        Err(e) => return report(Err(e.to_string())),
    };
    if json {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.text_with_examples());
    }
    code
}

fn bench_boot(ntp: &str, boots: usize) -> ExitCode {
    let data = std::env::temp_dir().join(format!("chronolock-bench-boot-{}", std::process::id()));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return report(Err(format!("cannot start: {e}"))),
    };
    let result = runtime.block_on(chronolock_sim::live::bench::boot_to_valid(
        ntp, boots, &data,
    ));
    let _ = std::fs::remove_dir_all(&data);
    match result {
        // The page says the door's bound always contains the true offset: a boot where it did
        // not fails the benchmark.
        Ok(figures) if figures.outside_bound > 0 => {
            println!("{:#}", figures.report());
            report(Err(format!(
                "{} of {} boots: the door's clock was further from the server than its own bound",
                figures.outside_bound, figures.boots
            )))
        }
        Ok(figures) => report(Ok(format!("{:#}\n", figures.report()))),
        Err(e) => report(Err(e)),
    }
}

fn sim_live(
    opts: chronolock_sim::live::LiveOptions,
    demo: bool,
    duration: Option<f64>,
) -> ExitCode {
    let duration = match duration {
        Some(s) if !(s.is_finite() && s > 0.0) => {
            eprintln!("error: --duration must be a positive number of seconds");
            return ExitCode::from(2);
        }
        d => d.map(std::time::Duration::from_secs_f64),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return report(Err(format!("cannot start: {e}"))),
    };
    match runtime.block_on(chronolock_sim::live::run(opts, demo, duration)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(Err(e)),
    }
}

fn serve(config: chronolock_server::ServeConfig) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(chronolock_server::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Prints the result and exits 0, or prints the error and exits 2.
fn reset_password(
    user: &str,
    data: PathBuf,
    database_url: Option<String>,
) -> Result<String, String> {
    let password = match std::env::var("CHRONOLOCK_NEW_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the new password: {e}"))?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let config = chronolock_server::ServeConfig {
        data_dir: data,
        database_url,
        ..chronolock_server::ServeConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let state = chronolock_server::AppState::open(&config)
            .await
            .map_err(|e| e.to_string())?;
        let done = chronolock_server::auth::reset_password(&state, user, &password).await;
        state.db.close().await;
        match done.map_err(|e| e.to_string())? {
            true => Ok(format!(
                "new password set for {user}; their sessions are ended\n"
            )),
            false => Err(format!("no admin named {user:?}")),
        }
    })
}

fn report(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn keygen(out: &Path) -> Result<String, String> {
    let public = chronolock_allowlist::write_new_keypair(out).map_err(|e| e.to_string())?;
    let pub_path = chronolock_allowlist::public_key_path(out);
    let hex: String = public
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!(
        "private key: {}\npublic key:  {} ({hex})\n",
        out.display(),
        pub_path.display()
    ))
}

fn compile(src: &Path, key: &Path, out: &Path, generation: Option<u64>) -> Result<String, String> {
    let text = std::fs::read_to_string(src).map_err(|e| format!("{}: {e}", src.display()))?;
    let entries =
        chronolock_allowlist::parse_source(&text).map_err(|e| format!("{}: {e}", src.display()))?;
    let key = chronolock_allowlist::read_signing_key(key).map_err(|e| e.to_string())?;
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| "the system clock is before 1970".to_string())?
        .as_secs();
    let bytes = chronolock_allowlist::compile(
        &entries,
        generation.unwrap_or(created),
        created as i64,
        &key,
    )
    .map_err(|e| format!("{}: {e}", src.display()))?;
    // Write beside the target and rename, so a failed write never leaves half a list.
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, &bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, out).map_err(|e| format!("{}: {e}", out.display()))?;
    chronolock_allowlist::inspect(&bytes, Some(&key.verifying_key()))
        .map(|summary| format!("wrote {}\n{summary}", out.display()))
        .map_err(|e| e.as_str().to_string())
}

/// The summary, and whether the signature holds (true when no key was given to check).
fn inspect(file: &Path, public: Option<&Path>) -> Result<(String, bool), String> {
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let key = public
        .map(chronolock_allowlist::read_verifying_key)
        .transpose()
        .map_err(|e| e.to_string())?;
    let summary = chronolock_allowlist::inspect(&bytes, key.as_ref()).map_err(|e| {
        format!(
            "{}: not a usable allow-list ({})",
            file.display(),
            e.as_str()
        )
    })?;
    let holds = key.is_none_or(|k| chronolock_allowlist::verify(&bytes, &k));
    Ok((summary, holds))
}

fn sim_run(file: &Path) -> ExitCode {
    match chronolock_sim::run_file(file) {
        Ok((events, notes)) => {
            for note in notes.0 {
                eprintln!("note: {note}");
            }
            let mut stdout = std::io::stdout().lock();
            if stdout
                .write_all(events.as_bytes())
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(RunError::Scenario(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e @ RunError::Stuck(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
