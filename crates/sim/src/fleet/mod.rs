//! The fleet simulation: many doors over many days in virtual time, every fault drawn from one
//! seed, and invariants checked after every step (TigerBeetle's VOPR idea, design brief
//! "Simulation testing"). A failing seed replays exactly with [`FleetConfig::seed`].
//!
//! It owns the fault model, the simulated network and hardware, and the checkers. The doors are
//! the door that ships: [`chronolock_device::door::Door`] (one per boot), with the real core
//! controller, the firmware's flash layout over NOR flash in memory (power cuts keep what was
//! written; torn writes leave what NOR flash would), its outbox and event ids. They exchange
//! real device-protocol bytes (pairing with a one-time code, syncs, CONDITIONAL checks, and the
//! watch: a long poll the backend holds until something for the door changes, or 25 s) with the
//! server's own device-protocol logic ([`chronolock_backend`]) over this door's records in
//! memory, in virtual time. The allow-lists come from the real compiler and the server's
//! local-time schedule compiler.
//!
//! # The world
//!
//! Sites in real time zones with DST (Europe/Berlin, America/New_York, Australia/Sydney) and
//! without (Asia/Tokyo); 24 people per site with UNRESTRICTED, EMERGENCY, CONDITIONAL, weekly
//! local schedules (office hours, night shifts across midnight and DST changes, weekends),
//! date-ranged and revoked rules. Six of them also have keypad codes (TOTP and HOTP secrets)
//! under the same rule. Admins change one or two rules every 1–12 hours (at quiet sites every
//! hour to five days); each change compiles and signs a new list (the generation goes up). Runs
//! start a few weeks before a DST change. Five doors share a site. A site goes into lockdown
//! about every two days, for ten minutes to four hours: each order (on, then off) is signed
//! with the site's key and a sequence number, and the backend hands the latest to its doors in
//! every sync answer and wakes the watches it holds.
//!
//! The door itself: most doors (85 %) have a door-position contact, with a held-open time of
//! 10–60 s, set at installation and by the site. After seven in ten unlocks (nine in ten of the
//! exit button's) someone goes through: mostly while the unlock is in force, one time in ten
//! too late (a forced opening), mostly for a few seconds, one time in seven longer than the
//! held-open time. Now and then (every three days on average) the door is forced. The exit
//! button is pressed four times a day at any moment (before the clock is valid, before any
//! list, offline, under lockdown), and now and then as the door boots. The door leaf stays where
//! it is across power cuts; the shell reports the contact at every boot.
//!
//! About one card in four is a secure card (NTAG 424 DNA), personalised with the site's card
//! master key; the backend compiles each door's list sealed to it, with that key. Presented, a
//! secure card is mostly the genuine card on the door's PN532 (the software card answers the
//! door's APDUs), one time in eight a copy of its UID on a card without the key, one in sixteen
//! a copy read by the UID-only reader.
//!
//! Presentations (24 a day per door on average, three in ten within two minutes of a local
//! schedule edge): known cards, unknown cards, and keypad entries: the TOTP code of the true
//! time step, the user's next HOTP code (each door has its own token counter per user: the
//! backend's raising of base counters is not modelled), the last entry again, or a wrong code.
//!
//! Faults: power cuts (5 s–4 h) and reboots (1–3 s) at any moment, including in the middle of a
//! list's download; power failing in the middle of a flash write (a torn write); the RTC's coin cell failing in a power cut, or its registers
//! corrupted by a brown-out without the oscillator-stop flag (a lying RTC); doors without an
//! RTC; network outages per door (one in ten lasting days); backend outages (5 min–36 h) for
//! the whole fleet; lost answers (the backend stored what it received, the door's client gives up
//! after 15 s; a lost pairing answer spends the code, and the installer enters a new one) and slow
//! ones (some past the controller's 10 s deadline); held watches broken by backend outages and
//! their answers lost;
//! outages of the three NTP servers; NTP servers that lie (1 s to 3 h off, either way, for
//! 10 min to a day); NTP answers delayed beyond plausibility; the device oscillator's drift
//! changing with temperature (within ±9.5 ppm; the controller assumes 10); RTCs drifting at a
//! fixed rate within ±1.9 ppm (it assumes 2) and set at the factory up to 1.5 s off. After `days`, faults stop and a quiet period
//! of three hours with everything up lets queued events drain.
//!
//! # What is checked, and what "wrong" means
//!
//! - **Clock within its bound**, after every step: a valid clock's reading differs from true
//!   time by at most its stated error bound. A clock outside its bound is *misled* (counted, not
//!   a failure) only when its error matches, within its bound plus one second, a lie it was
//!   told: an NTP server's answer this boot, or an RTC read at boot that a brown-out corrupted
//!   or that a misled clock wrote. The trust rules let one NTP server set a clock that no
//!   network source has set yet, and let the RTC set it at boot, so a lie that comes first wins
//!   until a network source (for NTP: the backend's sealed time) corrects it. Anything else is
//!   a failure.
//! - **Decision matches the reference** at the door's own reading: with the list the door has
//!   installed (the backend's intent for that generation, not the bytes), a door with a valid
//!   clock must decide exactly what the reference decides at the Unix second its clock shows;
//!   with an invalid clock, exactly ADR-011's fail-safe table. A CONDITIONAL grant must follow
//!   a "granted" answer from the backend.
//! - **No wrong grant**: a grant is *wrong* when, with the list the door has installed, the
//!   reference denies at every second of `[true − bound, true + bound]` (true UTC, the door's
//!   stated error bound; every second at which a decision can change is tried). A door acting on
//!   an older list during an outage is expected and counted (`stale_list_decisions`). Grants
//!   decided while the clock was invalid follow the fail-safe table; those the reference would
//!   deny at true time are counted (`unsynced_grants_denied_at_true_time`). Grants by a misled
//!   clock are counted as `misled_grants`, not as wrong.
//! - **Local schedule intent** (DST): while the door's clock is within its bound and the list's
//!   DST horizon holds, a grant of a weekly schedule must be allowed by the admin's local-time
//!   slots read in the site's zone somewhere in the same interval, and a time-restriction denial
//!   must be denied by them somewhere in it.
//! - **No lost event**: after the quiet period, every event the door wrote to its outbox is stored by
//!   the backend exactly as emitted and once (by its per-door id), or, emitted in the last 15
//!   minutes, still waits in the outbox; the backend holds nothing that was never emitted.
//! - **One battery report per UTC day**: never two reports within one true UTC day (unless a
//!   misled clock explains it); and a door that was on with a good clock from before 03:00 to
//!   04:00 UTC reported that day.
//! - **Keypad codes**: a wrong code never opens; no TOTP step or HOTP counter opens a door
//!   twice, across reboots and power cuts at any moment (the door keeps code usage in flash
//!   before the lock opens); "clock unsynced" is shown only
//!   while the clock cannot check TOTP; a fresh TOTP code is accepted by a clock within its
//!   bound (at most 15 s). The policy part of a keypad decision is checked like a card's.
//! - **Open first**: a card's unlock comes before any flash write of its decision; a keypad
//!   entry's comes after exactly one, its code's use (`code_use_kept_first`: in flash when the
//!   lock opens, so that no power cut lets a code open twice — seed 7, door 17), and before the
//!   rest (`open_first`).
//! - **Door alarms** (`door_alarms`, checked in `position.rs`): an opening is authorised when it starts while
//!   an unlock the shell carried out (a grant's or the exit button's) is in force on the door's
//!   monotonic clock, or when the door is open at boot. Every other opening of a door with a
//!   contact raises `door_forced` at once, and no authorised one does; `door_held_open` comes
//!   exactly when an authorised opening outlasts the held-open time (counted again from an
//!   unlock while the door stands open without an alarm); every alarm is cleared when, and only
//!   when, the door closes; a door without a contact says nothing of its door.
//! - **Lockdown honoured** (`lockdown_honoured`): once a door has announced `lockdown on:true`
//!   (until `on:false`), across reboots, it grants no credential but EMERGENCY entries (which
//!   the reference still judges: they are granted as always), a CONDITIONAL answer included;
//!   it says `DENIED_LOCKDOWN` only then; and it never announces a state it already had (it
//!   would have forgotten its lockdown).
//! - **No clone granted** (`no_clone_granted`): a copy of a secure card's UID, on the PN532 or
//!   on the UID-only reader, is never let in: `DENIED_CARD_AUTH` when the door's list holds the
//!   card as secure, `DENIED_UNKNOWN` when it holds no list with it. Genuine secure cards are
//!   judged like every card, by the reference.
//! - **Egress never refused** (`egress_never_refused`): every press of the exit button on a door
//!   that is on opens the lock, before the clock is valid, without a list, offline and under
//!   lockdown.
//! - **Lockdown learned in time** (`lockdown_learned_in_time`): a door that is on, paired and
//!   online, with the network and the backend up and no fault touching its link from two
//!   minutes before a lockdown order until two seconds after, holds the order two seconds after
//!   the backend set it (the watch's push; the report gives the worst time taken).
//! - The controller never drops an action and the door never drops a request; an installed
//!   list's generation never goes down; the outbox never overflows; event ids never repeat; the
//!   flash always opens and works (but for the writes a power cut tore); the backend refuses no
//!   request but a pairing whose code a lost answer spent; a door uses only list generations the
//!   backend announced to it (an attacker on the path swaps in another list the site signed now
//!   and then: the digest in the signed answer must refuse it).
//!
//! # Replaying
//!
//! [`run`] returns the first violation with the command that replays its door alone
//! (`--seed N --doors D --days K --door d`); doors depend only on the shared world, so one door
//! replays exactly as it ran in the fleet.

mod door;
mod position;
mod reference;
mod rng;
mod world;

// The backend's compiler of local-time schedules into UTC slots: the fleet exercises the code
// the server runs.
use chronolock_allowlist::schedule;

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

pub use world::ZONES;

/// A bug deliberately planted in the simulator, so tests can show that the checkers catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Plant {
    /// The backend acknowledges every 50th event without storing it.
    BackendLosesEvent,
    /// The reference model judges grants an hour ahead of true time.
    ReferenceHourAhead,
    /// Every battery report is counted twice.
    DuplicateReport,
    /// The shell does not keep keypad code usage in flash, so a reboot forgets used codes.
    ForgetKeypadUse,
    /// The backend compiles local schedules as if the site were in UTC.
    BackendIgnoresZone,
    /// Oscillators drift three times more than the controller's configured bound.
    OscillatorOutOfSpec,
    /// The shell never measures the battery when asked, so no report is made.
    IgnoreBatteryRead,
    /// A shell that installs a downloaded list itself, skipping the check that it is the list
    /// the signed sync answer announced.
    SkipDigestCheck,
    /// The reference reads `valid_until` as exclusive (the door, rightly, as inclusive).
    ReferenceExclusiveUntil,
    /// The reference's weekly slots end a minute late.
    ReferenceSlotMinuteLate,
    /// The reference's ADR-011 table grants SCHEDULED entries with slots before the clock is
    /// valid.
    ReferenceWrongAdr011Row,
    /// The backend resumes an interrupted list download one byte too late.
    BackendResumesOffByOne,
    /// The backend accepts requests whose counter is not newer (replays).
    BackendIgnoresCounter,
    /// The shell forgets, at every boot, that the RTC was written from network time.
    ForgetRtcProvenance,
    /// The shell stores a decision's event before it opens the lock.
    StoreBeforeUnlock,
    /// The shell's lock driver holds the lock open three times as long as the door asked:
    /// people go through after the door's unlock ended, and the door calls those openings
    /// forced (the unlock window the door judges by is not the one the lock honours).
    LockHeldLonger,
    /// The shell keeps the lockdown in RAM only: a door that reboots forgets it.
    ForgetLockdown,
    /// The shell keeps the lock shut for the exit button while the door is in lockdown.
    RefuseExitInLockdown,
    /// The backend answers held watches only when their 25 s wait ends, not when something
    /// changes (no push).
    BackendNoPush,
    /// The backend compiles secure cards as UID cards: a copy of the UID opens.
    BackendDropsSecureFlag,
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// The seed every random choice comes from.
    pub seed: u64,
    /// Number of doors (five per site).
    pub doors: u32,
    /// Days of faults; a quiet period of three hours follows.
    pub days: u32,
    /// Mean credential presentations per door per day.
    pub presentations_per_day: u32,
    /// Simulate only this door (the others are skipped); a door's run does not depend on the
    /// others, so this replays one door of a failing seed quickly.
    pub only_door: Option<u32>,
    /// A planted bug, for testing the checkers; `None` in real runs.
    pub plant: Option<Plant>,
    /// Threads to simulate doors on (0: one per CPU). Doors are independent and their results
    /// are merged in door order, so the report does not depend on it.
    pub threads: u32,
    /// Stop after the first door that broke an invariant (on one thread; the doors after it
    /// are not simulated): enough to show that a planted bug is caught.
    pub stop_at_first_failing_door: bool,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            seed: 0,
            doors: 20,
            days: 30,
            presentations_per_day: 24,
            only_door: None,
            plant: None,
            threads: 1,
            stop_at_first_failing_door: false,
        }
    }
}

impl FleetConfig {
    /// The command line that replays this run.
    pub fn replay_command(&self) -> String {
        let mut s = format!(
            "chronolock sim fleet --seed {} --doors {} --days {}",
            self.seed, self.doors, self.days
        );
        if let Some(d) = self.only_door {
            s.push_str(&format!(" --door {d}"));
        }
        s
    }
}

/// Why a run could not be set up (not an invariant: a broken environment).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// A time zone is missing from the database, or a schedule could not be compiled in it.
    #[error("time zone {zone}: {message}")]
    Zone {
        /// The zone.
        zone: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The allow-list compiler refused a generated list.
    #[error("allow-list: {0}")]
    Compile(String),
}

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The door.
    pub door: u32,
    /// Virtual time since the start, µs.
    pub t_us: i64,
    /// True UTC then.
    pub utc: String,
    /// The invariant's name (see the module documentation).
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "door {} at {} (t={:.3} s): {}: {}",
            self.door,
            self.utc,
            self.t_us as f64 / 1e6,
            self.invariant,
            self.detail
        )
    }
}

/// The figures of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FleetReport {
    /// The seed.
    pub seed: u64,
    /// Doors simulated.
    pub doors: u32,
    /// Days of faults per door.
    pub days: u32,
    /// Doors × days.
    pub door_days: u64,
    /// First true UTC of the run.
    pub start_utc: String,
    /// Site time zones used.
    pub zones: Vec<&'static str>,
    /// Access decisions made.
    pub decisions: u64,
    /// Of which grants.
    pub grants: u64,
    /// Keypad entries decided.
    pub keypad_decisions: u64,
    /// Of which grants.
    pub keypad_grants: u64,
    /// Unlock actions.
    pub unlocks: u64,
    /// Events the controllers emitted.
    pub events_emitted: u64,
    /// Events the backend stored.
    pub events_delivered: u64,
    /// Resends the backend recognised by id and stored once.
    pub resent_events: u64,
    /// Battery reports.
    pub reports: u64,
    /// Of which on the uptime basis.
    pub uptime_reports: u64,
    /// Boots (including the first).
    pub boots: u64,
    /// Sync exchanges started.
    pub syncs: u64,
    /// Lists installed.
    pub list_installs: u64,
    /// Interrupted list downloads that a later sync went on with.
    pub list_resumes: u64,
    /// Largest outbox seen.
    pub max_outbox: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Grants the reference model denies at true time ± the door's bound (goal: zero).
    pub wrong_grants: u64,
    /// Events never delivered (goal: zero).
    pub lost_events: u64,
    /// Second reports in one UTC day (goal: zero).
    pub duplicate_reports: u64,
    /// Days a door with a good clock did not report (goal: zero).
    pub missed_reports: u64,
    /// Decisions different from the reference at the door's own time (goal: zero).
    pub decision_mismatches: u64,
    /// Schedule decisions against the admin's local-time intent (goal: zero).
    pub intent_mismatches: u64,
    /// Schedule decisions checked against the local-time intent.
    pub intent_checks: u64,
    /// Of which with a list compiled before a DST change that has happened since.
    pub intent_checks_across_dst: u64,
    /// Steps with a clock outside its bound not explained by a lie (goal: zero).
    pub clock_bound_violations: u64,
    /// Steps with a clock outside its bound because a lying NTP server set it.
    pub misled_clock_steps: u64,
    /// Grants by a misled clock that the reference denies at true time.
    pub misled_grants: u64,
    /// Decisions made with an older list than the site's newest (outages).
    pub stale_list_decisions: u64,
    /// Grants by the fail-safe table that true time would deny.
    pub unsynced_grants_denied_at_true_time: u64,
    /// Decisions with an error bound too wide to judge.
    pub unjudged_decisions: u64,
    /// Unlocks of a card that came before any flash write of the decision.
    pub unlocks_opened_first: u64,
    /// Unlocks of a keypad entry that came after its code's use was in flash (and before any
    /// other write of the decision).
    pub keypad_uses_kept_first: u64,
    /// Exit-button presses (each must unlock a door that is on).
    pub rex_presses: u64,
    /// Openings of a door with a contact, reported to it.
    pub door_openings: u64,
    /// Of which unauthorised (no unlock in force): each must raise `door_forced`.
    pub forced_openings: u64,
    /// Alarms the doors raised.
    pub forced_alarms: u64,
    /// Held-open alarms the doors raised.
    pub held_open_alarms: u64,
    /// Alarms cleared when the door closed.
    pub alarms_cleared: u64,
    /// Watches the backend held until a change or the end of their wait.
    pub watches_held: u64,
    /// Held watches the backend answered "sync now" because something changed.
    pub watches_woken: u64,
    /// Lockdown orders the doors came to hold.
    pub lockdowns_learned: u64,
    /// Orders given while a door was online and undisturbed (each learned within 2 s).
    pub lockdown_learn_checks: u64,
    /// The longest such door took to hold an order, ms.
    pub lockdown_learn_worst_ms: u64,
    /// Decisions refused for lockdown.
    pub lockdown_denials: u64,
    /// EMERGENCY grants while the door was in lockdown.
    pub emergency_grants_in_lockdown: u64,
    /// Genuine secure cards decided (after a check of their key).
    pub secure_presentations: u64,
    /// Those let in.
    pub secure_grants: u64,
    /// Copies of secure cards' UIDs presented (none is ever let in: `no_clone_granted`).
    pub clones_presented: u64,
    /// Those refused `DENIED_CARD_AUTH` (the others, before the door held a list,
    /// `DENIED_UNKNOWN`).
    pub clones_refused: u64,
    /// Invariants broken (at most 16 per door kept).
    pub violations: Vec<Violation>,
    /// The first misled grants (at most 4 per door), for reading: not failures.
    pub misled_examples: Vec<Violation>,
}

impl FleetReport {
    /// The report as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Whether every invariant held.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    fn add(&mut self, t: &door::Tally) {
        self.decisions += t.decisions;
        self.grants += t.grants;
        self.keypad_decisions += t.keypad_decisions;
        self.keypad_grants += t.keypad_grants;
        self.unlocks += t.unlocks;
        self.unlocks_opened_first += t.unlocks_opened_first;
        self.keypad_uses_kept_first += t.keypad_uses_kept_first;
        self.rex_presses += t.rex_presses;
        self.door_openings += t.position.door_openings;
        self.forced_openings += t.position.forced_openings;
        self.forced_alarms += t.position.forced_alarms;
        self.held_open_alarms += t.position.held_open_alarms;
        self.alarms_cleared += t.position.alarms_cleared;
        self.watches_held += t.watches_held;
        self.watches_woken += t.watches_woken;
        self.lockdowns_learned += t.position.lockdowns_learned;
        self.lockdown_learn_checks += t.position.lockdown_learn_checks;
        self.lockdown_learn_worst_ms = self
            .lockdown_learn_worst_ms
            .max((t.position.lockdown_learn_worst_us / 1_000) as u64);
        self.lockdown_denials += t.lockdown_denials;
        self.emergency_grants_in_lockdown += t.emergency_grants_in_lockdown;
        self.secure_presentations += t.secure_presentations;
        self.secure_grants += t.secure_grants;
        self.clones_presented += t.clones_presented;
        self.clones_refused += t.clones_refused;
        self.events_emitted += t.events_emitted;
        self.events_delivered += t.events_delivered;
        self.resent_events += t.resent_events;
        self.reports += t.reports;
        self.uptime_reports += t.uptime_reports;
        self.boots += t.boots;
        self.syncs += t.syncs;
        self.list_installs += t.list_installs;
        self.list_resumes += t.list_resumes;
        self.max_outbox = self.max_outbox.max(t.max_outbox);
        self.wrong_grants += t.wrong_grants;
        self.lost_events += t.lost_events;
        self.duplicate_reports += t.duplicate_reports;
        self.missed_reports += t.missed_reports;
        self.decision_mismatches += t.decision_mismatches;
        self.intent_mismatches += t.intent_mismatches;
        self.intent_checks += t.intent_checks;
        self.intent_checks_across_dst += t.intent_checks_across_dst;
        self.clock_bound_violations += t.clock_bound_violations;
        self.misled_clock_steps += t.misled_clock_steps;
        self.misled_grants += t.misled_grants;
        self.stale_list_decisions += t.stale_list_decisions;
        self.unsynced_grants_denied_at_true_time += t.unsynced_grants_denied_at_true_time;
        self.unjudged_decisions += t.unjudged_decisions;
        self.misled_examples.extend(
            t.misled_examples
                .iter()
                .take(16 - self.misled_examples.len().min(16))
                .cloned(),
        );
        for (k, v) in &t.faults {
            *self.faults.entry(k).or_default() += v;
        }
    }
}

impl FleetReport {
    /// The summary, then the first violations and the examples of grants misled by a lying
    /// source: what `chronolock sim fleet` prints.
    pub fn text_with_examples(&self) -> String {
        let mut out = self.to_string();
        for v in self.violations.iter().take(20) {
            out.push_str(&format!("\n  ! {v}"));
        }
        for v in &self.misled_examples {
            out.push_str(&format!("\n  ~ {v}"));
        }
        out
    }
}

impl fmt::Display for FleetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {}: {} doors × {} days = {} door-days from {} ({})",
            self.seed,
            self.doors,
            self.days,
            self.door_days,
            self.start_utc,
            self.zones.join(", ")
        )?;
        writeln!(
            f,
            "  {} decisions ({} grants; keypad {} and {}), {} events emitted, {} delivered ({} resends stored once), {} reports, {} boots, {} lists installed ({} downloads resumed)",
            self.decisions,
            self.grants,
            self.keypad_decisions,
            self.keypad_grants,
            self.events_emitted,
            self.events_delivered,
            self.resent_events,
            self.reports,
            self.boots,
            self.list_installs,
            self.list_resumes
        )?;
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(f, "  faults: {}", faults.join(", "))?;
        writeln!(
            f,
            "  wrong grants {}, lost events {}, duplicate reports {}, missed reports {}, decision mismatches {}, intent mismatches {}, clock bound violations {}",
            self.wrong_grants,
            self.lost_events,
            self.duplicate_reports,
            self.missed_reports,
            self.decision_mismatches,
            self.intent_mismatches,
            self.clock_bound_violations
        )?;
        writeln!(
            f,
            "  local-schedule checks {} ({} across a DST change); misled by a lying source: {} clock steps, {} grants; stale-list decisions {}; fail-safe grants true time denies {}",
            self.intent_checks,
            self.intent_checks_across_dst,
            self.misled_clock_steps,
            self.misled_grants,
            self.stale_list_decisions,
            self.unsynced_grants_denied_at_true_time
        )?;
        write!(
            f,
            "  door: {} openings ({} forced), alarms {} forced and {} held open ({} cleared), {} exit-button presses; lockdown: {} orders learned, {} judged online (worst {} ms), {} denials, {} emergency grants; watches {} held, {} woken",
            self.door_openings,
            self.forced_openings,
            self.forced_alarms,
            self.held_open_alarms,
            self.alarms_cleared,
            self.rex_presses,
            self.lockdowns_learned,
            self.lockdown_learn_checks,
            self.lockdown_learn_worst_ms,
            self.lockdown_denials,
            self.emergency_grants_in_lockdown,
            self.watches_held,
            self.watches_woken
        )?;
        write!(
            f,
            "\n  secure cards: {} genuine decided ({} granted); {} copies of their UIDs presented, {} refused DENIED_CARD_AUTH, none let in",
            self.secure_presentations,
            self.secure_grants,
            self.clones_presented,
            self.clones_refused
        )
    }
}

/// A run in which an invariant broke: the first violation, how to replay it, and the figures.
#[derive(Clone, Debug)]
pub struct FleetFailure {
    /// The seed.
    pub seed: u64,
    /// The first violation (lowest door, earliest time within it).
    pub first: Violation,
    /// The command that replays the failing door.
    pub replay: String,
    /// The whole run's figures, violations included.
    pub report: FleetReport,
}

impl fmt::Display for FleetFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {}: {}", self.seed, self.first)?;
        writeln!(f, "replay: {}", self.replay)?;
        write!(f, "{}", self.report)
    }
}

impl std::error::Error for FleetFailure {}

/// Why [`run`] did not return a clean report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunFailure {
    /// An invariant broke.
    #[error("{0}")]
    Invariant(Box<FleetFailure>),
    /// The world could not be set up.
    #[error(transparent)]
    Setup(#[from] FleetError),
}

/// Runs the fleet: the report if every invariant held, else the first violation.
pub fn run(cfg: &FleetConfig) -> Result<FleetReport, RunFailure> {
    let report = run_report(cfg)?;
    match report.violations.first() {
        None => Ok(report),
        Some(first) => {
            let replay = FleetConfig {
                only_door: Some(first.door),
                ..cfg.clone()
            }
            .replay_command();
            Err(RunFailure::Invariant(Box::new(FleetFailure {
                seed: cfg.seed,
                first: first.clone(),
                replay,
                report,
            })))
        }
    }
}

/// Runs the fleet and returns its figures whatever happened (violations listed in the report).
pub fn run_report(cfg: &FleetConfig) -> Result<FleetReport, FleetError> {
    let mut rng = world::stream(cfg.seed, 0);
    let w = world::World::draw(cfg, &mut rng)?;
    let mut report = FleetReport {
        seed: cfg.seed,
        doors: cfg.doors,
        days: cfg.days,
        start_utc: door::format_utc(w.start_utc_us),
        zones: world::ZONES
            .into_iter()
            .filter(|z| w.sites.iter().any(|s| s.zone_name == *z))
            .collect(),
        faults: w.faults.clone(),
        ..FleetReport::default()
    };
    let doors: Vec<u32> = (0..cfg.doors)
        .filter(|d| cfg.only_door.is_none_or(|only| only == *d))
        .collect();
    let threads = match cfg.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n as usize,
    }
    .clamp(1, doors.len().max(1));
    let run_door = |d: u32| {
        let mut door = door::DoorRun::new(&w, cfg, d, world::stream(cfg.seed, u64::from(d) + 1));
        door.run();
        (d, door.tally, door.violations)
    };
    let mut results: Vec<(u32, door::Tally, Vec<Violation>)> = if threads == 1 {
        let mut done = Vec::new();
        for &d in &doors {
            let (d, tally, violations) = run_door(d);
            let failed = !violations.is_empty();
            done.push((d, tally, violations));
            if failed && cfg.stop_at_first_failing_door {
                break;
            }
        }
        done
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|i| {
                    let mine: Vec<u32> = doors.iter().copied().skip(i).step_by(threads).collect();
                    scope.spawn(move || mine.into_iter().map(run_door).collect::<Vec<_>>())
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| match h.join() {
                    Ok(done) => done,
                    // A door that panicked is a bug: let it surface as it would unthreaded.
                    Err(panic) => std::panic::resume_unwind(panic),
                })
                .collect()
        })
    };
    results.sort_by_key(|(d, _, _)| *d);
    for (_, tally, violations) in results {
        report.door_days += u64::from(cfg.days);
        report.add(&tally);
        report.violations.extend(violations);
    }
    Ok(report)
}
