//! `chronolock card`: secure cards (NTAG 424 DNA, DESFire EV2/EV3).
//!
//! `personalize` gives a blank card (every key the factory key) the site's diversified keys
//! through a PC/SC desk reader, checks it as a door would, and enrols it for a person as a
//! secure card. The card's keys are derived from the site's card master key, which stays in
//! the database: the command runs where the server's database is.
//!
//! Without a reader, a *software card* stands in: a JSON file holding a card's UID and keys
//! (`new-soft-card`), which `personalize --soft-card FILE` talks to directly, and which
//! `serve-soft-card` offers to PC/SC as a card in a virtual reader (vsmartcard's `vpcd`), so
//! that `personalize --reader` drives it through `pcscd` exactly as a real card.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chronolock_core::card::personalize::{self, Personalizer};
use chronolock_core::card::reader::{self, Reader};
use chronolock_core::card::{self as core_card, Key, DOOR_KEY, KEY_COUNT, UID_LEN};
use chronolock_server::{card_keys, directory, model, AppState};
use chronolock_sim::card::SoftCard;
use rand::RngCore;

use crate::transfer::Database;

/// `chronolock card …`.
#[derive(clap::Subcommand, Debug)]
pub enum CardCommand {
    /// Give a blank card this site's keys and enrol it for a person as a secure card.
    Personalize(PersonalizeArgs),
    /// Make a software card file: a blank NTAG 424 DNA (factory keys), to try enrolment
    /// without a reader.
    NewSoftCard {
        /// The file to write.
        file: PathBuf,
        /// Its 7-byte UID in hex (default: random, starting 04 as NXP's do).
        #[arg(long)]
        uid: Option<String>,
    },
    /// Offer a software card to PC/SC in vsmartcard's virtual reader: connect to `vpcd` (the
    /// pcscd driver of Debian's vsmartcard-vpcd) and answer its APDUs until it disconnects.
    ServeSoftCard {
        /// The software card file (its keys are written back as they change).
        file: PathBuf,
        /// Where vpcd listens.
        #[arg(long, default_value = "127.0.0.1:35963")]
        vpcd: String,
    },
    /// Start rotating the site's card master key: doors accept cards of the old key and the
    /// new until `forget-previous-key`; give each card its new keys meanwhile with
    /// `personalize --from-previous`.
    RotateMasterKey {
        /// Where the database is.
        #[command(flatten)]
        db: Database,
    },
    /// End a rotation: cards still holding keys of the previous master key stop opening.
    ForgetPreviousKey {
        /// Where the database is.
        #[command(flatten)]
        db: Database,
    },
}

/// `chronolock card personalize`.
#[derive(clap::Args, Debug)]
pub struct PersonalizeArgs {
    /// The person the card is for (their id, as on their page: /people/ID).
    #[arg(long)]
    pub person: i64,
    /// The PC/SC reader (a part of its name; default: the first reader).
    #[arg(long)]
    pub reader: Option<String>,
    /// A software card file instead of a reader.
    #[arg(long = "soft-card", conflicts_with = "reader")]
    pub soft_card: Option<PathBuf>,
    /// The card holds the previous master key's keys (a rotation is under way), not the
    /// factory keys.
    #[arg(long = "from-previous")]
    pub from_previous: bool,
    /// Where the database is.
    #[command(flatten)]
    pub db: Database,
}

/// Runs a `chronolock card` command; returns what to print.
pub fn run(command: CardCommand) -> Result<String, String> {
    match command {
        CardCommand::Personalize(args) => personalize(args),
        CardCommand::NewSoftCard { file, uid } => new_soft_card(&file, uid.as_deref()),
        CardCommand::ServeSoftCard { file, vpcd } => serve_soft_card(&file, &vpcd),
        CardCommand::RotateMasterKey { db } => with_state(&db, |state| async move {
            let version = card_keys::rotate(&state.db)
                .await
                .map_err(|e| e.to_string())?;
            let doors = recompile_all(&state).await?;
            Ok(format!(
                "card master key {version} made; the previous one is still accepted. {doors} doors get it with their next list. Give each card its new keys with `chronolock card personalize --from-previous --person ID`, then run `chronolock card forget-previous-key`.\n"
            ))
        }),
        CardCommand::ForgetPreviousKey { db } => with_state(&db, |state| async move {
            card_keys::forget_previous(&state.db)
                .await
                .map_err(|e| e.to_string())?;
            let doors = recompile_all(&state).await?;
            Ok(format!(
                "the previous card master key is forgotten; {doors} doors drop it with their next list\n"
            ))
        }),
    }
}

async fn recompile_all(state: &AppState) -> Result<usize, String> {
    let site = directory::first_site(state)
        .await
        .map_err(|e| e.to_string())?;
    match site {
        Some(site) => model::site_changed(state, site.id)
            .await
            .map_err(|e| e.to_string()),
        None => Ok(0),
    }
}

fn with_state<F, Fut>(db: &Database, f: F) -> Result<String, String>
where
    F: FnOnce(AppState) -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let state = AppState::open(&db.config())
            .await
            .map_err(|e| e.to_string())?;
        let pool = state.db.clone();
        let result = f(state).await;
        pool.close().await;
        result
    })
}

/// A card in a reader: its UID (from anticollision) and an APDU exchange.
pub trait Transport {
    /// The UID the card announced.
    fn uid(&mut self) -> Result<Vec<u8>, String>;
    /// Sends a command APDU; returns the response (data and status word).
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, String>;
}

/// A software card kept in a JSON file: `{"uid": "04…", "keys": ["…" × 5]}`.
pub struct SoftCardFile {
    path: PathBuf,
    card: SoftCard,
}

fn hex_bytes(text: &str, what: &str) -> Result<Vec<u8>, String> {
    data_encoding::HEXUPPER_PERMISSIVE
        .decode(text.trim().as_bytes())
        .map_err(|_| format!("{what} `{text}` is not hex"))
}

impl SoftCardFile {
    /// Reads a software card file.
    pub fn open(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read the software card: {e}", path.display()))?;
        let bad = |m: String| format!("{}: not a software card: {m}", path.display());
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let uid: [u8; UID_LEN] = hex_bytes(v["uid"].as_str().unwrap_or(""), "uid")
            .map_err(bad)?
            .try_into()
            .map_err(|_| bad("`uid` must be 7 bytes".into()))?;
        let list = v["keys"]
            .as_array()
            .filter(|k| k.len() == usize::from(KEY_COUNT))
            .ok_or_else(|| bad("`keys` must list 5 keys".into()))?;
        let mut keys = [[0u8; 16]; KEY_COUNT as usize];
        for (k, text) in keys.iter_mut().zip(list) {
            *k = hex_bytes(text.as_str().unwrap_or(""), "key")
                .map_err(bad)?
                .try_into()
                .map_err(|_| bad("a key must be 16 bytes".into()))?;
        }
        Ok(SoftCardFile {
            path: path.to_path_buf(),
            card: SoftCard::with_keys(uid, keys, rand::rngs::OsRng.next_u64()),
        })
    }

    /// Writes the card's keys back.
    pub fn save(&self) -> Result<(), String> {
        write_soft_card(&self.path, &self.card.uid(), self.card.keys())
    }
}

fn write_soft_card(path: &Path, uid: &[u8], keys: &[Key]) -> Result<(), String> {
    let hex = |b: &[u8]| data_encoding::HEXUPPER.encode(b);
    let v = serde_json::json!({
        "uid": hex(uid),
        "keys": keys.iter().map(|k| hex(k)).collect::<Vec<_>>(),
    });
    std::fs::write(path, format!("{v:#}\n"))
        .map_err(|e| format!("{}: cannot write the software card: {e}", path.display()))
}

impl Transport for SoftCardFile {
    fn uid(&mut self) -> Result<Vec<u8>, String> {
        Ok(self.card.uid().to_vec())
    }

    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, String> {
        let response = self.card.transmit(apdu);
        self.save()?;
        Ok(response)
    }
}

fn new_soft_card(path: &Path, uid: Option<&str>) -> Result<String, String> {
    let uid: [u8; UID_LEN] = match uid {
        Some(text) => hex_bytes(text, "uid")?
            .try_into()
            .map_err(|_| format!("uid `{text}`: secure cards have 7-byte UIDs"))?,
        None => {
            let mut u = [0u8; UID_LEN];
            rand::rngs::OsRng.fill_bytes(&mut u);
            u[0] = 0x04;
            u
        }
    };
    if path.exists() {
        return Err(format!("{} exists already", path.display()));
    }
    write_soft_card(path, &uid, &[core_card::FACTORY_KEY; KEY_COUNT as usize])?;
    Ok(format!(
        "blank software card {} in {}\n",
        data_encoding::HEXUPPER.encode(&uid),
        path.display()
    ))
}

/// Most APDU exchanges one personalisation or check may take (it needs 9, then 4).
const MAX_EXCHANGES: usize = 16;

/// Changes the card's keys from `old` to `new`.
pub fn personalize_card(
    t: &mut dyn Transport,
    uid: [u8; UID_LEN],
    old: [Key; KEY_COUNT as usize],
    new: [Key; KEY_COUNT as usize],
    version: u8,
) -> Result<(), String> {
    let mut rnd_a = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut rnd_a);
    let (mut p, mut apdu) = Personalizer::start(uid, old, new, version, rnd_a);
    for _ in 0..MAX_EXCHANGES {
        match p.handle(&t.transmit(&apdu)?) {
            personalize::Progress::Send(next) => apdu = next,
            personalize::Progress::Done => return Ok(()),
            personalize::Progress::Failed(personalize::Failure::WrongKey) => {
                return Err("the card refused its key 0: it is not blank (for a card of the previous master key, add --from-previous)".into())
            }
            personalize::Progress::Failed(f) => {
                return Err(format!("personalisation stopped: {f:?}"))
            }
        }
    }
    Err("the card did not finish within 16 exchanges".into())
}

/// Checks the card as a door does, with `door_key`; gives its real UID.
pub fn check_card(
    t: &mut dyn Transport,
    uid: [u8; UID_LEN],
    door_key: Key,
) -> Result<[u8; UID_LEN], String> {
    let mut rnd_a = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut rnd_a);
    let (mut r, mut apdu) = Reader::start(uid, DOOR_KEY, door_key, rnd_a);
    for _ in 0..MAX_EXCHANGES {
        match r.handle(&t.transmit(&apdu)?) {
            reader::Progress::Send(next) => apdu = next,
            reader::Progress::Genuine(uid) => return Ok(uid),
            reader::Progress::Refused(f) => {
                return Err(format!(
                    "the card does not pass a door's check: {}",
                    f.as_str()
                ))
            }
        }
    }
    Err("the check did not finish within 16 exchanges".into())
}

fn open_transport(args: &PersonalizeArgs) -> Result<Box<dyn Transport>, String> {
    match &args.soft_card {
        Some(path) => Ok(Box::new(SoftCardFile::open(path)?)),
        None => pcsc_reader(args.reader.as_deref()),
    }
}

#[cfg(feature = "pcsc")]
fn pcsc_reader(name: Option<&str>) -> Result<Box<dyn Transport>, String> {
    pcsc_transport::PcscCard::connect(name).map(|c| Box::new(c) as Box<dyn Transport>)
}

#[cfg(not(feature = "pcsc"))]
fn pcsc_reader(_name: Option<&str>) -> Result<Box<dyn Transport>, String> {
    Err("this chronolock was built without PC/SC: build it with `--features pcsc` (Debian: apt-get install libpcsclite-dev pcscd), or use --soft-card FILE".into())
}

fn personalize(args: PersonalizeArgs) -> Result<String, String> {
    let mut transport = open_transport(&args)?;
    let announced = transport.uid()?;
    let uid: [u8; UID_LEN] = announced.as_slice().try_into().map_err(|_| {
        format!(
            "the card's UID {} is not 7 bytes: not an NTAG 424 DNA or DESFire card (or it sends a random UID)",
            data_encoding::HEXUPPER.encode(&announced)
        )
    })?;
    let hex_uid = data_encoding::HEXUPPER.encode(&uid);
    let person_id = args.person;
    let from_previous = args.from_previous;
    with_state(&args.db, |state| async move {
        let site = directory::first_site(&state)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the database has no site yet")?;
        let person = directory::person(&state, site.id, person_id)
            .await
            .map_err(|_| format!("no person {person_id} at this site"))?;
        // Before any key changes: the card must be this person's or nobody's.
        let owner: Option<(i64,)> = sqlx::query_as("SELECT person_id FROM cards WHERE uid = $1")
            .bind(&hex_uid)
            .fetch_optional(state.db.pool())
            .await
            .map_err(|e| e.to_string())?;
        if owner.is_some_and(|(p,)| p != person.id) {
            return Err(format!("card {hex_uid} belongs to someone else"));
        }
        let keys = card_keys::keys(&state.db)
            .await
            .map_err(|e| e.to_string())?;
        let old = if from_previous {
            let (previous, _) = keys
                .previous
                .ok_or("no rotation is under way: there is no previous master key")?;
            core_card::card_keys(Some(&previous), &uid)
        } else {
            core_card::card_keys(None, &uid)
        };
        let (master, version) = keys.current;
        let new = core_card::card_keys(Some(&master), &uid);
        personalize_card(transport.as_mut(), uid, old, new, version)?;
        let real = check_card(transport.as_mut(), uid, new[usize::from(DOOR_KEY)])?;
        if owner.is_some() {
            sqlx::query("UPDATE cards SET secure = 1 WHERE uid = $1")
                .bind(&hex_uid)
                .execute(state.db.pool())
                .await
                .map_err(|e| e.to_string())?;
        } else {
            model::add_card_kind(&state, person.id, &hex_uid, true)
                .await
                .map_err(|e| e.to_string())?;
        }
        let doors = model::site_changed(&state, site.id)
            .await
            .map_err(|e| e.to_string())?;
        Ok(format!(
            "card {} personalised (master key {version}), checked as a door checks it, and enrolled for {} as a secure card; {doors} doors get it with their next list\n",
            data_encoding::HEXUPPER.encode(&real),
            person.name
        ))
    })
}

/// Serves a software card to vpcd: frames are a 2-byte big-endian length and the bytes; a
/// 1-byte frame is a control (0 power off, 1 power on, 2 reset, 4 ATR), anything longer a
/// command APDU. The contactless reader's GET DATA (`FF CA 00 00 00`) gives the UID.
fn serve_soft_card(path: &Path, vpcd: &str) -> Result<String, String> {
    let mut file = SoftCardFile::open(path)?;
    let mut stream = std::net::TcpStream::connect(vpcd)
        .map_err(|e| format!("cannot reach vpcd at {vpcd}: {e}"))?;
    let mut served = 0u64;
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).is_err() {
            break;
        }
        let mut frame = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream
            .read_exact(&mut frame)
            .map_err(|e| format!("vpcd: {e}"))?;
        let answer: Vec<u8> = match frame.as_slice() {
            [0] | [1] | [2] => {
                file.card.reset();
                continue;
            }
            // The ATR of an ISO 14443-4 card behind a PC/SC contactless reader (PC/SC part 3).
            [4] => vec![0x3B, 0x81, 0x80, 0x01, 0x80, 0x80],
            [0xFF, 0xCA, 0x00, 0x00, ..] => {
                let mut r = file.card.uid().to_vec();
                r.extend_from_slice(&[0x90, 0x00]);
                r
            }
            apdu => {
                served += 1;
                file.transmit(apdu)?
            }
        };
        let mut out = (answer.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&answer);
        stream.write_all(&out).map_err(|e| format!("vpcd: {e}"))?;
    }
    Ok(format!("vpcd closed the connection after {served} APDUs\n"))
}

#[cfg(feature = "pcsc")]
mod pcsc_transport {
    //! A card in a PC/SC reader (pcsc-lite's `pcscd` on Linux).

    use super::Transport;

    /// A connected card.
    pub struct PcscCard {
        card: pcsc::Card,
    }

    impl PcscCard {
        /// Connects to the card in the reader whose name contains `name` (or the first).
        pub fn connect(name: Option<&str>) -> Result<Self, String> {
            let ctx = pcsc::Context::establish(pcsc::Scope::User)
                .map_err(|e| format!("PC/SC: {e} (is pcscd running?)"))?;
            let mut buf = vec![0u8; 4096];
            let readers: Vec<std::ffi::CString> = ctx
                .list_readers(&mut buf)
                .map_err(|e| format!("PC/SC: no reader: {e}"))?
                .map(std::ffi::CStr::to_owned)
                .collect();
            let reader = readers
                .iter()
                .find(|r| name.is_none_or(|n| r.to_string_lossy().contains(n)))
                .ok_or_else(|| {
                    let names: Vec<_> = readers.iter().map(|r| r.to_string_lossy()).collect();
                    format!("no PC/SC reader matches {name:?} (readers: {names:?})")
                })?;
            let card = ctx
                .connect(reader, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
                .map_err(|e| format!("{}: {e} (is a card on it?)", reader.to_string_lossy()))?;
            Ok(PcscCard { card })
        }
    }

    impl Transport for PcscCard {
        fn uid(&mut self) -> Result<Vec<u8>, String> {
            // PC/SC part 3 GET DATA: the contactless card's UID, from the reader.
            let r = self.transmit(&[0xFF, 0xCA, 0x00, 0x00, 0x00])?;
            match r.split_last_chunk::<2>() {
                Some((uid, [0x90, 0x00])) => Ok(uid.to_vec()),
                _ => Err(format!("the reader gave no UID ({r:02X?})")),
            }
        }

        fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, String> {
            let mut buf = [0u8; pcsc::MAX_BUFFER_SIZE];
            self.card
                .transmit(apdu, &mut buf)
                .map(<[u8]>::to_vec)
                .map_err(|e| format!("PC/SC: {e}"))
        }
    }
}
