//! The shared world of a fleet run, drawn from the seed before any door runs: the sites (time
//! zone, signing key, people and their rules), every allow-list the backend compiles as the rules
//! change, every lockdown order the site's admins give, and the timelines of the backend's and
//! the NTP servers' outages and lies.
//!
//! Doors only read the world, so each door can be simulated on its own against it; nothing a
//! door does changes another door's run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chronolock_allowlist::Entry;
use chronolock_core::allowlist::{AccessType, CardEntry, KeypadEntry, Policy};
use chronolock_core::lockdown::{LockdownOrder, ORDER_LEN};
use ed25519_dalek::SigningKey;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use rand_chacha::ChaCha8Rng;

use super::rng::Rng;
use super::schedule::{self, LocalSlot};
use super::{FleetConfig, FleetError};

/// Microseconds per second, minute, hour, day.
pub(crate) const SEC: i64 = 1_000_000;
pub(crate) const MIN: i64 = 60 * SEC;
pub(crate) const HOUR: i64 = 60 * MIN;
pub(crate) const DAY: i64 = 24 * HOUR;

/// The zones sites are placed in: two with DST on different dates, one southern-hemisphere
/// zone whose DST runs the other way, and one without DST.
pub const ZONES: [&str; 4] = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Asia/Tokyo",
];

/// Local edges (minutes after local midnight) that the schedules below use; presentations are
/// drawn near them so that slot edges and DST shifts are exercised, not just the middle of a slot.
pub(crate) const LOCAL_EDGES_MIN: [u16; 6] = [8 * 60, 18 * 60, 22 * 60, 6 * 60, 10 * 60, 16 * 60];

/// Sorted, disjoint half-open intervals of true time (µs since the start).
#[derive(Clone, Debug, Default)]
pub(crate) struct Intervals(Vec<(i64, i64)>);

impl Intervals {
    /// Random intervals: on average one per `mean_gap`, each `min_len..max_len` long, none
    /// reaching past `end`.
    pub(crate) fn draw(rng: &mut Rng, end: i64, mean_gap: i64, min_len: i64, max_len: i64) -> Self {
        let mut out = Vec::new();
        let mut t = rng.range(0, 2 * mean_gap);
        while t < end {
            let len = rng.range(min_len, max_len);
            let stop = (t + len).min(end);
            out.push((t, stop));
            t = stop + rng.range(MIN, 2 * mean_gap);
        }
        Intervals(out)
    }

    /// The interval containing `t`, if any.
    pub(crate) fn find(&self, t: i64) -> Option<usize> {
        let i = self.0.partition_point(|&(_, stop)| stop <= t);
        self.0.get(i).filter(|&&(start, _)| start <= t).map(|_| i)
    }

    pub(crate) fn contains(&self, t: i64) -> bool {
        self.find(t).is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.0.iter().copied()
    }
}

/// One NTP server: when it does not answer, and when it answers with a wrong time.
#[derive(Clone, Debug)]
pub(crate) struct NtpServer {
    pub outages: Intervals,
    /// Intervals in which the server lies; `lie_offsets[i]` is its error in the i-th.
    pub lies: Intervals,
    pub lie_offsets: Vec<i64>,
}

impl NtpServer {
    /// The server's error at `t` and whether it is a lie (outside its own stated accuracy).
    pub(crate) fn offset_at(&self, t: i64) -> Option<i64> {
        self.lies.find(t).map(|i| self.lie_offsets[i])
    }
}

/// A person's rule, as an admin enters it (schedules in the site's local time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Rule {
    Always,
    Emergency,
    Conditional,
    /// Weekly local slots, within an optional date range (Unix seconds, 0 unbounded).
    Weekly {
        slots: Vec<LocalSlot>,
        from: i64,
        until: i64,
    },
    /// Any time within a date range (a contractor, a guest).
    Dated {
        from: i64,
        until: i64,
    },
    /// No access: not in the list at all.
    Revoked,
}

/// One entry of a list as the backend meant it: what the reference model reads.
#[derive(Clone, Debug)]
pub(crate) struct RefEntry {
    pub access: AccessType,
    pub valid_from: i64,
    pub valid_until: i64,
    /// The weekly local slots the admin entered (empty unless weekly).
    pub local: Vec<LocalSlot>,
    /// The site's zone, whose local time the slots are in.
    pub zone: TimeZone,
    /// The span (Unix seconds, `[first, last)`) over which the list's UTC slots follow the
    /// zone's offset changes: from a day before the list was compiled to its DST horizon.
    pub follows: (i64, i64),
}

/// A credential's identity in a list: a card's UID or a keypad user's code.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum CredKey {
    Card(Vec<u8>),
    Keypad(Vec<u8>),
}

/// A keypad user: one of the site's people with a user code and two OTP secrets.
#[derive(Clone, Debug)]
pub(crate) struct KeypadUser {
    /// The person (index into `Site::people`) whose rule applies.
    pub person: usize,
    pub code: Vec<u8>,
    pub totp: [u8; 20],
    pub hotp: [u8; 20],
}

/// One compiled allow-list.
#[derive(Debug)]
pub(crate) struct ListVersion {
    pub generation: u64,
    /// True time it was compiled (µs since the start).
    pub at: i64,
    pub bytes: Arc<Vec<u8>>,
    /// What it was compiled from, and when (Unix seconds): the backend compiles each door's
    /// copy from it, sealed to the door with the site's card master key.
    pub source: Arc<Vec<Entry>>,
    pub created_secs: i64,
    /// Until when (Unix seconds) its UTC slots follow the local schedules across DST.
    pub horizon_end: i64,
    /// Its credentials as the backend meant them.
    pub entries: BTreeMap<CredKey, RefEntry>,
}

/// A lockdown order a site's admin gave (the site goes into lockdown, or out of it).
#[derive(Debug)]
pub(crate) struct LockdownChange {
    /// True time it was given (µs since the start).
    pub at: i64,
    /// Its sequence number (the first order is 1).
    pub seq: u64,
    /// As the backend hands it to the doors, signed with the site's key.
    pub order: [u8; ORDER_LEN],
}

/// A site: one zone, one key, one set of people; all its doors get the same list.
#[derive(Debug)]
pub(crate) struct Site {
    pub zone_name: &'static str,
    pub zone: TimeZone,
    pub key: [u8; 32],
    /// Cards of the site's people (some revoked at times).
    pub people: Vec<Vec<u8>>,
    /// The people who also have keypad codes.
    pub keypad: Vec<KeypadUser>,
    /// The cards (UIDs) that are secure cards, personalised with the site's card master key.
    pub secure: BTreeSet<Vec<u8>>,
    /// The site's card master key.
    pub card_master: [u8; 16],
    /// Every list, oldest first; generation = index + 1.
    pub versions: Vec<ListVersion>,
    /// Every lockdown order, oldest first; seq = index + 1 (on, off, on, …).
    pub lockdowns: Vec<LockdownChange>,
}

impl Site {
    /// The newest list compiled at or before `t`.
    pub(crate) fn version_at(&self, t: i64) -> Option<&ListVersion> {
        let i = self.versions.partition_point(|v| v.at <= t);
        i.checked_sub(1).and_then(|i| self.versions.get(i))
    }

    /// The newest lockdown order given at or before `t`.
    pub(crate) fn lockdown_at(&self, t: i64) -> Option<&LockdownChange> {
        let i = self.lockdowns.partition_point(|c| c.at <= t);
        i.checked_sub(1).and_then(|i| self.lockdowns.get(i))
    }

    pub(crate) fn version(&self, generation: u64) -> Option<&ListVersion> {
        usize::try_from(generation)
            .ok()
            .and_then(|g| g.checked_sub(1))
            .and_then(|i| self.versions.get(i))
    }
}

/// Everything shared by the doors of a run.
#[derive(Debug)]
pub(crate) struct World {
    /// True UTC at the start, µs.
    pub start_utc_us: i64,
    /// Faults stop here; the quiet period follows.
    pub fault_end: i64,
    /// The run ends here.
    pub end: i64,
    pub sites: Vec<Site>,
    pub ntp: Vec<NtpServer>,
    pub backend_outages: Intervals,
    /// Faults injected by the world, by kind.
    pub faults: BTreeMap<&'static str, u64>,
}

/// How long the backend looks ahead when it compiles schedules (the server's default).
pub(crate) const HORIZON_DAYS: i64 = schedule::DEFAULT_HORIZON_DAYS;

/// The quiet period after the faults: everything up, so every queued event can be delivered.
pub(crate) const QUIET: i64 = 3 * HOUR;

/// Candidate start dates: each a few weeks before a DST change somewhere in [`ZONES`]
/// (US spring 2026-03-08, EU and Sydney in late March / early April, EU autumn 2026-10-25,
/// US autumn 2026-11-01).
const STARTS_UTC_SECS: [i64; 2] = [
    1_772_323_200, // 2026-03-01T00:00:00Z
    1_792_022_400, // 2026-10-15T00:00:00Z
];

impl World {
    pub(crate) fn draw(cfg: &FleetConfig, rng: &mut Rng) -> Result<World, FleetError> {
        let start_secs = STARTS_UTC_SECS[rng.below(STARTS_UTC_SECS.len() as u64) as usize]
            + rng.range(0, 7) * 86_400
            + rng.range(0, 86_400);
        let start_utc_us = start_secs * SEC;
        let fault_end = i64::from(cfg.days) * DAY;
        let end = fault_end + QUIET;
        let mut faults = BTreeMap::new();

        let backend_outages = Intervals::draw(rng, fault_end, 5 * DAY, 5 * MIN, 36 * HOUR);
        faults.insert("backend_outage", backend_outages.len() as u64);

        let mut ntp = Vec::new();
        for _ in 0..3 {
            let outages = Intervals::draw(rng, fault_end, 4 * DAY, MIN, 12 * HOUR);
            let lies = Intervals::draw(rng, fault_end, 10 * DAY, 10 * MIN, DAY);
            let lie_offsets = (0..lies.len())
                .map(|_| {
                    // From a leap-second-sized error to hours, either way; never within a
                    // server's stated accuracy (that would be honest).
                    let magnitude = match rng.below(3) {
                        0 => rng.range(SEC, 3 * SEC),
                        1 => rng.range(30 * SEC, 20 * MIN),
                        _ => rng.range(HOUR, 3 * HOUR),
                    };
                    if rng.below(2) == 0 {
                        magnitude
                    } else {
                        -magnitude
                    }
                })
                .collect();
            *faults.entry("ntp_outage").or_default() += outages.len() as u64;
            *faults.entry("ntp_liar").or_default() += lies.len() as u64;
            ntp.push(NtpServer {
                outages,
                lies,
                lie_offsets,
            });
        }

        let site_count = cfg.doors.div_ceil(DOORS_PER_SITE).max(1);
        let mut sites = Vec::new();
        for s in 0..site_count {
            let zone_name = ZONES[s as usize % ZONES.len()];
            let zone = TimeZone::get(zone_name).map_err(|e| FleetError::Zone {
                zone: zone_name,
                message: e.to_string(),
            })?;
            let mut key = [0u8; 32];
            rng.fill(&mut key);
            let mut site = Site {
                zone_name,
                zone,
                key,
                people: Vec::new(),
                keypad: Vec::new(),
                secure: BTreeSet::new(),
                // Derived from the site's key, so that the world's draws stay as they were.
                card_master: card_master_of(&key),
                versions: Vec::new(),
                lockdowns: Vec::new(),
            };
            let bends = Bends {
                ignore_zone: cfg.plant == Some(super::Plant::BackendIgnoresZone),
                drop_secure: cfg.plant == Some(super::Plant::BackendDropsSecureFlag),
            };
            draw_rules_and_lists(&mut site, rng, start_secs, fault_end, bends, &mut faults)?;
            draw_lockdowns(&mut site, rng, start_secs, fault_end, &mut faults);
            sites.push(site);
        }
        Ok(World {
            start_utc_us,
            fault_end,
            end,
            sites,
            ntp,
            backend_outages,
            faults,
        })
    }

    /// True UTC in Unix seconds (floor) at true time `t`.
    pub(crate) fn unix_secs(&self, t: i64) -> i64 {
        (self.start_utc_us + t).div_euclid(SEC)
    }

    pub(crate) fn backend_up(&self, t: i64) -> bool {
        t >= self.fault_end || !self.backend_outages.contains(t)
    }
}

const PEOPLE_PER_SITE: usize = 24;

/// The first people of a site also have keypad codes (TOTP and HOTP).
const KEYPAD_USERS_PER_SITE: usize = 6;

/// Doors per site: a fleet of 20 doors spans all four zones.
pub(crate) const DOORS_PER_SITE: u32 = 5;

fn office() -> Vec<LocalSlot> {
    vec![LocalSlot {
        days: 0b001_1111,
        start_min: 8 * 60,
        end_min: 18 * 60,
    }]
}

fn night() -> Vec<LocalSlot> {
    vec![LocalSlot {
        days: 0b111_1111,
        start_min: 22 * 60,
        end_min: 6 * 60,
    }]
}

fn weekend() -> Vec<LocalSlot> {
    vec![LocalSlot {
        days: 0b110_0000,
        start_min: 10 * 60,
        end_min: 16 * 60,
    }]
}

/// A random rule, with date ranges around `now_secs`.
fn draw_rule(rng: &mut Rng, now_secs: i64) -> Rule {
    let range = |rng: &mut Rng| {
        let from = now_secs + rng.range(-10 * 86_400, 10 * 86_400);
        (from, from + rng.range(3600, 20 * 86_400))
    };
    match rng.below(10) {
        0 | 1 => Rule::Always,
        2 => Rule::Emergency,
        3 => Rule::Conditional,
        4 => Rule::Weekly {
            slots: office(),
            from: 0,
            until: 0,
        },
        5 => Rule::Weekly {
            slots: night(),
            from: 0,
            until: 0,
        },
        6 => Rule::Weekly {
            slots: weekend(),
            from: 0,
            until: 0,
        },
        7 => {
            let (from, until) = range(rng);
            Rule::Weekly {
                slots: office(),
                from,
                until,
            }
        }
        8 => {
            let (from, until) = range(rng);
            Rule::Dated { from, until }
        }
        _ => Rule::Revoked,
    }
}

/// The site's people, and the list the backend compiles each time an admin changes a rule
/// (one to four changes a day, at random times).
fn draw_rules_and_lists(
    site: &mut Site,
    rng: &mut Rng,
    start_secs: i64,
    fault_end: i64,
    bends: Bends,
    faults: &mut BTreeMap<&'static str, u64>,
) -> Result<(), FleetError> {
    let mut uids = BTreeSet::new();
    while uids.len() < PEOPLE_PER_SITE {
        let len = if rng.below(2) == 0 { 4 } else { 7 };
        let mut uid = vec![0u8; len];
        rng.fill(&mut uid);
        uids.insert(uid);
    }
    site.people = uids.into_iter().collect();
    // About one card in four is a secure card (no draw: the world stays as it was).
    site.secure = site
        .people
        .iter()
        .filter(|u| u.len() == chronolock_core::card::UID_LEN && u[0] & 1 == 0)
        .cloned()
        .collect();
    site.keypad = (0..KEYPAD_USERS_PER_SITE)
        .map(|person| {
            let mut totp = [0u8; 20];
            let mut hotp = [0u8; 20];
            rng.fill(&mut totp);
            rng.fill(&mut hotp);
            KeypadUser {
                person,
                code: format!("{}", 1000 + person * 37).into_bytes(),
                totp,
                hotp,
            }
        })
        .collect();
    let mut rules: Vec<Rule> = site
        .people
        .iter()
        .map(|_| draw_rule(rng, start_secs))
        .collect();
    let signing = SigningKey::from_bytes(&site.key);
    // Busy sites change rules every few hours; quiet ones every few days, so that their doors
    // cross DST changes on a list compiled before them.
    let max_gap = if rng.below(2) == 0 {
        12 * HOUR
    } else {
        5 * DAY
    };
    let mut t = 0;
    loop {
        let at_secs = start_secs + t / SEC;
        let generation = site.versions.len() as u64 + 1;
        site.versions.push(compile(
            site, &rules, generation, t, at_secs, &signing, bends,
        )?);
        t += rng.range(HOUR, max_gap);
        if t >= fault_end {
            break;
        }
        let changes = 1 + rng.below(2);
        for _ in 0..changes {
            let who = rng.below(rules.len() as u64) as usize;
            rules[who] = draw_rule(rng, start_secs + t / SEC);
        }
        *faults.entry("list_update").or_default() += 1;
    }
    Ok(())
}

/// The site goes into lockdown now and then (on average every two days, for ten minutes to
/// four hours) and out of it again; each order is signed with the site's key, as the server
/// signs it, with the next sequence number.
fn draw_lockdowns(
    site: &mut Site,
    rng: &mut Rng,
    start_secs: i64,
    fault_end: i64,
    faults: &mut BTreeMap<&'static str, u64>,
) {
    let signing = SigningKey::from_bytes(&site.key);
    let spans = Intervals::draw(rng, fault_end, 2 * DAY, 10 * MIN, 4 * HOUR);
    for (start, stop) in spans.iter() {
        for (at, on) in [(start, true), (stop, false)] {
            let seq = site.lockdowns.len() as u64 + 1;
            let order = LockdownOrder {
                seq,
                on,
                issued_unix: start_secs + at / SEC,
            }
            .sign(&signing);
            site.lockdowns.push(LockdownChange { at, seq, order });
        }
        *faults.entry("lockdown").or_default() += 1;
    }
}

/// A site's card master key, derived from its signing key.
fn card_master_of(key: &[u8; 32]) -> [u8; 16] {
    let mut k = [0u8; 16];
    k.copy_from_slice(&key[..16]);
    chronolock_core::card::crypto::cmac(&k, &[b"card master key"])
}

/// Planted bugs in the backend's compiler.
#[derive(Clone, Copy, Debug)]
struct Bends {
    /// Local schedules compiled as if the site were in UTC.
    ignore_zone: bool,
    /// Secure cards compiled as UID cards.
    drop_secure: bool,
}

fn compile(
    site: &Site,
    rules: &[Rule],
    generation: u64,
    t: i64,
    at_secs: i64,
    signing: &SigningKey,
    bends: Bends,
) -> Result<ListVersion, FleetError> {
    let ignore_zone = bends.ignore_zone;
    let from = Timestamp::from_second(at_secs).map_err(|e| FleetError::Zone {
        zone: site.zone_name,
        message: e.to_string(),
    })?;
    let mut entries = BTreeMap::new();
    let mut source = Vec::new();
    for (person, (uid, rule)) in site.people.iter().zip(rules).enumerate() {
        let (access, valid_from, valid_until, local) = match rule {
            Rule::Always => (AccessType::Unrestricted, 0, 0, vec![]),
            Rule::Emergency => (AccessType::Emergency, 0, 0, vec![]),
            Rule::Conditional => (AccessType::Conditional, 0, 0, vec![]),
            Rule::Weekly { slots, from, until } => {
                (AccessType::Scheduled, *from, *until, slots.clone())
            }
            Rule::Dated { from, until } => (AccessType::Scheduled, *from, *until, vec![]),
            Rule::Revoked => continue,
        };
        let slots = if local.is_empty() {
            vec![]
        } else {
            let zone = if ignore_zone {
                TimeZone::UTC
            } else {
                site.zone.clone()
            };
            schedule::compile(&zone, &local, from, HORIZON_DAYS).map_err(|e| FleetError::Zone {
                zone: site.zone_name,
                message: e.to_string(),
            })?
        };
        let policy = Policy::new(access, valid_from, valid_until);
        let card = CardEntry {
            uid: uid.clone(),
            policy,
            slots: slots.clone(),
        };
        // Planted: a backend that compiles secure cards as UID cards.
        source.push(if site.secure.contains(uid) && !bends.drop_secure {
            Entry::SecureCard(card)
        } else {
            Entry::Card(card)
        });
        let entry = RefEntry {
            access,
            valid_from,
            valid_until,
            local,
            zone: site.zone.clone(),
            follows: (at_secs - 86_400, at_secs + HORIZON_DAYS * 86_400),
        };
        for k in site.keypad.iter().filter(|k| k.person == person) {
            source.push(Entry::Keypad(KeypadEntry {
                code: k.code.clone(),
                totp_secret: Some(k.totp.to_vec()),
                hotp_secret: Some(k.hotp.to_vec()),
                hotp_counter: 0,
                digits: 6,
                period_s: 30,
                policy,
                slots: slots.clone(),
            }));
            entries.insert(CredKey::Keypad(k.code.clone()), entry.clone());
        }
        entries.insert(CredKey::Card(uid.clone()), entry);
    }
    let bytes = chronolock_allowlist::compile(&source, generation, at_secs, signing)
        .map_err(|e| FleetError::Compile(e.to_string()))?;
    Ok(ListVersion {
        generation,
        at: t,
        bytes: Arc::new(bytes),
        source: Arc::new(source),
        created_secs: at_secs,
        horizon_end: at_secs + HORIZON_DAYS * 86_400,
        entries,
    })
}

/// The seeded generator for the world (stream 0) or for door `d` (stream d + 1).
pub(crate) fn stream(seed: u64, stream: u64) -> Rng {
    use rand_core::SeedableRng;
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    Rng(r)
}
