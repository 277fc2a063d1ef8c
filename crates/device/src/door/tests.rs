//! The door against a backend built from the same protocol code the server uses, over NOR flash
//! in memory that can lose power at any byte.

extern crate std;

use std::cell::{Cell, RefCell};
use std::vec;
use std::vec::Vec;

use chronolock_backend::memory::MemoryDevices;
use chronolock_core::access::Decision;
use chronolock_core::allowlist::{AccessType, Builder, CardEntry, Policy};
use ed25519_dalek::SigningKey;

use super::*;
use crate::flash::{block_on, MemFlash};
use crate::ota::{AppSlots, FirmwareBoot, OtaError};
use chronolock_core::firmware::{self, FirmwareError, Version};

const LAYOUT: Layout = Layout::packed(192 * 1024, 16 * 1024);
const CODE: &str = "ABCD-EFGH-JKLM";
const T0_US: i64 = 1_795_510_800_000_000;

/// The door's id at the backend.
const DOOR: i64 = 7;

/// A backend: the server's own device-protocol logic ([`chronolock_backend`]) over one site's
/// doors in memory: their pairing codes and keys, the events they stored, the list it serves.
struct Backend {
    site: SigningKey,
    devices: MemoryDevices,
    /// Planted: announce one list and send another.
    swap_list: Option<Vec<u8>>,
    /// The connection breaks after this many bytes of the next sync answer.
    break_sync_at: Cell<Option<usize>>,
    /// Length of each sync answer sent.
    sync_answers: RefCell<Vec<usize>>,
}

impl Backend {
    fn new(seed: u8) -> Self {
        let devices = MemoryDevices::new(300);
        devices.add_pairing(DOOR, CODE);
        Backend {
            site: SigningKey::from_bytes(&[seed; 32]),
            devices,
            swap_list: None,
            break_sync_at: Cell::new(None),
            sync_answers: RefCell::new(Vec::new()),
        }
    }

    fn publish(&mut self, generation: u64, cards: &[&[u8]]) {
        let mut b = Builder::new();
        for uid in cards {
            b.card(&CardEntry {
                uid: uid.to_vec(),
                policy: Policy::new(AccessType::Unrestricted, 0, 0),
                slots: vec![],
            })
            .expect("card");
        }
        let bytes = b
            .build(generation, T0_US / 1_000_000 - 3600, &self.site)
            .expect("list");
        self.devices.publish(DOOR, generation, bytes);
    }

    fn list(&self) -> Option<Vec<u8>> {
        self.devices.list(DOOR).map(|(_, bytes)| bytes)
    }

    fn stored_decisions(&self) -> usize {
        self.devices
            .events(DOOR)
            .iter()
            .filter(|e| matches!(e.body, EventBody::Decision { .. }))
            .count()
    }

    fn answer(&mut self, exchange: Exchange, body: &[u8], now: Instant) -> Option<Vec<u8>> {
        let t = T0_US + now.as_micros() as i64;
        let public = self.site.verifying_key().to_bytes();
        let devices = &self.devices;
        let answer = block_on(async {
            match exchange {
                Exchange::Enrol { .. } => {
                    chronolock_backend::enrol(devices, &public, body, t / 1_000_000, [9; 32])
                        .await
                        .map(|(a, _)| a)
                }
                Exchange::Sync { .. } => {
                    chronolock_backend::sync(devices, &self.site, body, t, || t + 100).await
                }
                Exchange::Check { .. } => {
                    chronolock_backend::check(devices, body, t / 1_000_000).await
                }
                Exchange::Watch { .. } => Err(chronolock_backend::DeviceError::internal("held")),
            }
        })
        .ok()?
        .ok()?;
        match (&self.swap_list, exchange) {
            (Some(other), Exchange::Sync { .. }) if answer.len() > SYNC_RESPONSE_LEN => {
                let mut swapped = answer[..SYNC_RESPONSE_LEN].to_vec();
                swapped.extend_from_slice(other);
                Some(swapped)
            }
            _ => Some(answer),
        }
    }
}

/// A door on the bench: its flash, what it said.
struct Bench {
    layout: Layout,
    /// The firmware the door runs, if it can update itself.
    firmware: Option<FirmwareBoot>,
    /// App slots the door asked to boot.
    slot_requests: Vec<u8>,
    flash: Option<MemFlash>,
    notices: Vec<Notice>,
    decisions: Vec<Decision>,
    now: Instant,
    boots: u8,
}

impl Bench {
    fn new() -> Self {
        Self::with_layout(LAYOUT, LAYOUT.end())
    }

    /// A door whose flash of `size` bytes is laid out as `layout`.
    fn with_layout(layout: Layout, size: u32) -> Self {
        let mut store = Store::new(MemFlash::new(size as usize), layout.clone()).expect("layout");
        let mut settings = Settings::default();
        settings.server_url.push_str("http://backend").unwrap();
        settings.pairing_code.push_str(CODE).unwrap();
        store.set_settings(&settings).expect("settings");
        Bench {
            layout,
            firmware: None,
            slot_requests: Vec::new(),
            flash: Some(store.into_flash()),
            notices: Vec::new(),
            decisions: Vec::new(),
            now: Instant::ZERO,
            boots: 0,
        }
    }

    /// Boots, runs `f` on the running door, then cuts the power.
    fn boot<R>(&mut self, f: impl FnOnce(&mut Running<'_>) -> R) -> R {
        self.boots += 1;
        let flash = self.flash.take().expect("flash");
        let store = Store::new(flash, self.layout.clone()).expect("layout");
        let config = BootConfig {
            core: Config::default(),
            sync_interval_s: None,
            setup_button: false,
            firmware: self.firmware.clone(),
        };
        let door = Door::boot(store, config, [self.boots; 32], Instant::ZERO);
        let mut running = Running {
            door,
            slot_requests: &mut self.slot_requests,
            notices: &mut self.notices,
            decisions: &mut self.decisions,
            now: Instant::ZERO,
        };
        running.settle();
        let r = f(&mut running);
        self.now = running.now;
        let mut flash = running.door.into_store().into_flash();
        flash.cut_after(None);
        self.flash = Some(flash);
        r
    }
}

struct Running<'a> {
    door: Door<MemFlash>,
    slot_requests: &'a mut Vec<u8>,
    notices: &'a mut Vec<Notice>,
    decisions: &'a mut Vec<Decision>,
    now: Instant,
}

impl Running<'_> {
    /// Carries out what the door asks, with no network.
    fn settle(&mut self) {
        while let Some(r) = self.door.poll_request() {
            self.take(r, None);
        }
    }

    fn take(&mut self, r: Request, backend: Option<&mut Backend>) {
        let now = self.now;
        match r {
            Request::ReadRtc { .. } => self.door.handle_rtc_read(RtcReading::Absent, now),
            // The backend holds a watch until something changes: nothing changes on this bench
            // unless a test says so.
            Request::Post(Exchange::Watch { .. }) => {}
            Request::Post(exchange) => {
                let mut body = vec![0u8; BODY_MAX];
                let Some(n) = self.door.write_body(exchange, &mut body, now) else {
                    return;
                };
                let sync = matches!(exchange, Exchange::Sync { .. });
                let (answer, break_at) = match backend {
                    Some(b) => {
                        let answer = b.answer(exchange, &body[..n], now);
                        let break_at = b.break_sync_at.take().filter(|_| sync);
                        if let (Some(a), true) = (&answer, sync) {
                            b.sync_answers.borrow_mut().push(a.len());
                        }
                        (answer, break_at)
                    }
                    None => (None, None),
                };
                let at = now + Duration::from_millis(40);
                // The round trip takes time: what the door does next happens after it.
                self.now = at;
                match answer {
                    Some(bytes) => {
                        let sent = &bytes[..break_at.unwrap_or(bytes.len()).min(bytes.len())];
                        for chunk in sent.chunks(1000) {
                            self.door.handle_answer(exchange, chunk, at);
                            if self.door.store().flash().is_cut() {
                                return;
                            }
                        }
                        if break_at.is_some() {
                            let failure = Failure::Unreachable;
                            return self.door.handle_exchange_failed(exchange, failure, at);
                        }
                        self.door.handle_answer_end(exchange, at);
                    }
                    None => self
                        .door
                        .handle_exchange_failed(exchange, Failure::Unreachable, at),
                }
            }
            Request::Notice(Notice::Event {
                event: Event::Decision { decision, .. },
                ..
            }) => self.decisions.push(decision),
            Request::Notice(n) => self.notices.push(n),
            Request::Store => self.door.store_pending(),
            Request::BootFirmware { slot } => self.slot_requests.push(slot),
            _ => {}
        }
    }

    /// Brings the network up and runs every exchange against `backend`.
    fn online(&mut self, backend: &mut Backend) {
        self.door.handle_network(true, self.now);
        self.exchange(backend);
    }

    /// Carries out the door's requests against `backend`, and lets it finish checking a
    /// downloaded list (a step per timeout, as a shell does between inputs).
    fn exchange(&mut self, backend: &mut Backend) {
        for _ in 0..10_000 {
            if self.door.store().flash().is_cut() {
                return;
            }
            match self.door.poll_request() {
                Some(r) => self.take(r, Some(backend)),
                None if self.door.installing() => {
                    assert!(self.door.poll_timeout().is_some_and(|t| t <= self.now));
                    self.door.handle_timeout(self.now);
                }
                None => return,
            }
        }
    }

    /// Lets time pass to the next sync and runs it.
    fn next_sync(&mut self, backend: &mut Backend) {
        self.now = self.now + Duration::from_secs(301);
        self.door.handle_timeout(self.now);
        self.exchange(backend);
    }

    fn card(&mut self, uid: &[u8]) -> Decision {
        self.door.handle_card(uid, self.now);
        self.settle();
        *self.decisions.last().expect("a decision")
    }
}

fn installed(notices: &[Notice]) -> Vec<u64> {
    notices
        .iter()
        .filter_map(|n| match n {
            Notice::ListInstalled { generation, .. } => Some(*generation),
            _ => None,
        })
        .collect()
}

#[test]
fn pairs_syncs_installs_a_list_and_decides_from_it() {
    let mut backend = Backend::new(1);
    backend.publish(1, &[&[4, 0xA1, 0xB2, 0xC3]]);
    let mut bench = Bench::new();
    bench.boot(|door| {
        assert!(door.door.setup_mode());
        assert_eq!(door.card(&[4, 0xA1, 0xB2, 0xC3]), Decision::DeniedUnknown);
        door.online(&mut backend);
        assert!(!door.door.setup_mode());
        assert_eq!(door.door.identity().map(|i| i.door_id), Some(7));
        assert_eq!(door.card(&[4, 0xA1, 0xB2, 0xC3]), Decision::Granted);
        assert_eq!(door.card(&[9, 9, 9, 9]), Decision::DeniedUnknown);
        // The pairing code is spent and forgotten.
        assert!(door.door.settings().pairing_code.is_empty());
    });
    assert!(bench.notices.iter().any(|n| matches!(
        n,
        Notice::Paired {
            door_id: 7,
            new_site: true
        }
    )));
    assert_eq!(installed(&bench.notices), [1]);
    // After a power cut the door comes back paired, with its list, and syncs its events.
    bench.boot(|door| {
        assert!(!door.door.setup_mode());
        assert_eq!(door.door.list_info().map(|i| i.generation), Some(1));
        assert_eq!(door.card(&[4, 0xA1, 0xB2, 0xC3]), Decision::Granted);
        door.online(&mut backend);
        // The clock event of this sync's answer goes with the next one.
        door.next_sync(&mut backend);
        assert_eq!(door.door.outbox_len(), 0);
    });
    assert_eq!(
        backend.stored_decisions(),
        4,
        "every decision reached the backend once"
    );
}

#[test]
fn event_ids_never_repeat_across_reboots_and_acknowledgements() {
    let mut backend = Backend::new(1);
    let mut bench = Bench::new();
    let mut ids = Vec::new();
    for round in 0..6 {
        bench.boot(|door| {
            door.card(&[round, 1, 2, 3]);
            if round % 2 == 1 {
                door.online(&mut backend);
            }
        });
        ids.extend(bench.notices.drain(..).filter_map(|n| match n {
            Notice::Event { id, .. } => Some(id),
            _ => None,
        }));
    }
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "ids repeat: {ids:?}");
    assert_eq!(backend.devices.resent(), 0);
}

#[test]
fn a_list_that_is_not_the_announced_one_is_refused_and_the_old_list_stays() {
    let mut backend = Backend::new(1);
    backend.publish(1, &[&[1, 1, 1, 1]]);
    let mut bench = Bench::new();
    bench.boot(|door| door.online(&mut backend));
    // A list properly signed by the site, but not the one the authenticated answer announced
    // (e.g. swapped on the way): the digest check refuses it.
    backend.publish(2, &[&[2, 2, 2, 2]]);
    let mut other = Backend::new(1);
    other.publish(3, &[&[3, 3, 3, 3]]);
    backend.swap_list = other.list();
    bench.boot(|door| {
        door.online(&mut backend);
        assert_eq!(
            door.card(&[1, 1, 1, 1]),
            Decision::Granted,
            "old list in use"
        );
        assert_eq!(door.card(&[3, 3, 3, 3]), Decision::DeniedUnknown);
    });
    assert!(bench
        .notices
        .iter()
        .any(|n| matches!(n, Notice::ListRejected(ListRejection::Digest))));
    assert_eq!(installed(&bench.notices), [1]);
}

#[test]
fn a_power_cut_anywhere_in_a_download_keeps_the_old_list_and_the_next_sync_installs() {
    let cards: Vec<[u8; 4]> = (0..300u32).map(|i| i.to_be_bytes()).collect();
    let refs: Vec<&[u8]> = cards.iter().map(|c| &c[..]).collect();
    // The budget counts erased and written bytes: the spare slot's first sector, the list's
    // bytes (5 KB: into the slot's second sector, erased when reached), the download notes
    // and the slot header; the cut falls in each of them.
    for step in (0..17_000).step_by(173) {
        let mut backend = Backend::new(1);
        backend.publish(1, &[&[1, 1, 1, 1]]);
        let mut bench = Bench::new();
        bench.boot(|door| door.online(&mut backend));
        backend.publish(2, &refs);
        bench.boot(|door| {
            door.door.store().flash().cut_after(Some(step));
            door.online(&mut backend);
        });
        bench.boot(|door| {
            let list = door.door.list_info().map(|i| i.generation);
            assert!(
                matches!(list, Some(1 | 2)),
                "cut after {step} bytes: a whole list, old or new: {list:?}"
            );
            door.online(&mut backend);
            assert_eq!(door.door.list_info().map(|i| i.generation), Some(2));
            assert_eq!(door.card(&cards[299]), Decision::Granted);
        });
    }
}

#[test]
fn a_door_paired_to_another_server_takes_that_servers_lists() {
    let mut first = Backend::new(1);
    first.publish(40, &[&[1, 1, 1, 1]]);
    let mut bench = Bench::new();
    bench.boot(|door| door.online(&mut first));
    assert_eq!(installed(&bench.notices), [40]);
    // The installer holds the setup button and pairs it with the new server's code.
    let mut second = Backend::new(2);
    second.publish(1, &[&[2, 2, 2, 2]]);
    bench.boot(|door| {
        let mut form = SetupForm::default();
        form.server_url.push_str("http://other").unwrap();
        form.pairing_code.push_str(CODE).unwrap();
        form.phone_time_ms = (T0_US / 1000) as u64;
        door.door.handle_setup(&form, door.now);
        door.online(&mut second);
        assert_eq!(door.card(&[2, 2, 2, 2]), Decision::Granted);
        assert_eq!(
            door.card(&[1, 1, 1, 1]),
            Decision::DeniedUnknown,
            "old site's card"
        );
    });
    assert_eq!(installed(&bench.notices), [40, 1]);
    assert!(bench
        .notices
        .iter()
        .any(|n| matches!(n, Notice::Paired { new_site: true, .. })));
    // The new site's list is the one the door boots with.
    bench.boot(|door| assert_eq!(door.card(&[2, 2, 2, 2]), Decision::Granted));
}

#[test]
fn a_full_outbox_drops_its_oldest_events_and_says_so() {
    let mut bench = Bench::new();
    bench.boot(|door| {
        for i in 0..2_000u32 {
            door.door.handle_card(&i.to_be_bytes(), door.now);
            door.settle();
        }
        assert!(door.door.outbox_len() < 2 * 2_000);
    });
    assert!(bench
        .notices
        .iter()
        .any(|n| matches!(n, Notice::OutboxFull { .. })));
}

/// A list of `n` cards, and the cards.
fn many_cards(n: u32, salt: u8) -> Vec<[u8; 4]> {
    (0..n)
        .map(|i| {
            let [_, b, c, d] = i.to_be_bytes();
            [salt, b, c, d]
        })
        .collect()
}

fn refs(cards: &[[u8; 4]]) -> Vec<&[u8]> {
    cards.iter().map(|c| &c[..]).collect()
}

fn resumed_at(notices: &[Notice]) -> Vec<u32> {
    notices
        .iter()
        .filter_map(|n| match n {
            Notice::Synced {
                list_offset,
                list_len,
                ..
            } if *list_len > 0 => Some(*list_offset),
            _ => None,
        })
        .collect()
}

#[test]
fn a_download_cut_off_goes_on_where_it_stopped_at_the_next_sync() {
    let mut backend = Backend::new(1);
    backend.publish(1, &[&[1, 1, 1, 1]]);
    let mut bench = Bench::new();
    let cards = many_cards(8_000, 9);
    bench.boot(|door| {
        door.online(&mut backend);
        backend.publish(2, &refs(&cards));
        let len = backend.list().map_or(0, |l| l.len());
        assert!(len > 64 * 1024, "{len}");
        // The connection breaks 50,000 bytes into the list.
        backend.break_sync_at.set(Some(SYNC_RESPONSE_LEN + 50_000));
        door.next_sync(&mut backend);
        assert_eq!(door.door.list_info().map(|i| i.generation), Some(1));
        let kept = door.door.store().partial_download().expect("store");
        assert!(
            matches!(
                kept,
                Some(PartialDownload {
                    generation: 2,
                    flushed: 50_000,
                    exact: true,
                    ..
                })
            ),
            "{kept:?}"
        );
        // The next sync asks for the rest, and only the rest comes.
        door.next_sync(&mut backend);
        assert_eq!(door.door.list_info().map(|i| i.generation), Some(2));
        assert_eq!(door.card(&cards[7_999]), Decision::Granted);
        let answers = backend.sync_answers.borrow();
        assert_eq!(answers.last(), Some(&(SYNC_RESPONSE_LEN + len - 50_000)));
        assert_eq!(door.door.store().partial_download().expect("store"), None);
    });
    assert_eq!(resumed_at(&bench.notices), [0, 0, 50_000]);
}

#[test]
fn after_a_power_cut_mid_download_the_door_goes_on_from_its_last_checkpoint() {
    let mut backend = Backend::new(1);
    backend.publish(1, &[&[1, 1, 1, 1]]);
    let mut bench = Bench::new();
    let cards = many_cards(8_000, 7);
    bench.boot(|door| door.online(&mut backend));
    backend.publish(2, &refs(&cards));
    let len = backend.list().map_or(0, |l| l.len());
    // The power fails some 100 KB into the list (past three checkpoints). The budget counts
    // erased bytes too: each 4 KiB sector is erased as the download reaches it.
    bench.boot(|door| {
        door.door.store().flash().cut_after(Some(2 * 100_000));
        door.online(&mut backend);
    });
    bench.boot(|door| {
        assert_eq!(door.door.list_info().map(|i| i.generation), Some(1));
        let kept = door.door.store().partial_download().expect("store");
        let Some(p) = kept else {
            panic!("no checkpoint kept");
        };
        assert!(!p.exact && p.flushed >= 64 * 1024, "{p:?}");
        door.online(&mut backend);
        assert_eq!(door.door.list_info().map(|i| i.generation), Some(2));
        assert_eq!(door.card(&cards[1_234]), Decision::Granted);
    });
    let resumed = resumed_at(&bench.notices);
    let from = *resumed.last().expect("a sync with a list");
    // At most one erase sector before the checkpoint is fetched again.
    assert!(from >= 64 * 1024 - 4096, "{resumed:?}");
    let answers = backend.sync_answers.borrow();
    assert_eq!(
        answers.last(),
        Some(&(SYNC_RESPONSE_LEN + len - from as usize))
    );
}

#[test]
fn an_answer_that_resumes_a_download_the_door_does_not_hold_is_refused_then_fetched_whole() {
    let mut backend = Backend::new(1);
    backend.publish(1, &[&[1, 1, 1, 1]]);
    let mut bench = Bench::new();
    let cards = many_cards(2_000, 5);
    bench.boot(|door| {
        door.online(&mut backend);
        backend.publish(2, &refs(&cards));
        backend.break_sync_at.set(Some(SYNC_RESPONSE_LEN + 20_000));
        door.next_sync(&mut backend);
        // The door's note of the download no longer matches the list the server resumes.
        let store = door.door.store();
        let mut p = store.partial_download().expect("store").expect("kept");
        p.digest[0] ^= 1;
        store.set_partial_download(&p).expect("store");
    });
    bench.boot(|door| {
        door.online(&mut backend);
        assert_eq!(door.door.list_info().map(|i| i.generation), Some(1));
        door.next_sync(&mut backend);
        assert_eq!(door.door.list_info().map(|i| i.generation), Some(2));
    });
    assert!(bench
        .notices
        .iter()
        .any(|n| matches!(n, Notice::ListRejected(ListRejection::Resume))));
    assert_eq!(resumed_at(&bench.notices), [0, 0, 20_000, 0]);
}

/// Network-up with the clock invalid: the first NTP request is asked for, and its answer
/// taken, before anything is written; what waits meanwhile (here a card's decision) is written
/// once the answer is in, or when the NTP round's deadline passes without one.
#[test]
fn the_first_ntp_exchange_comes_before_any_flash_write() {
    let mut bench = Bench::new();
    bench.boot(|door| {
        let before = door.door.store().flash().changes();
        door.door.handle_network(true, door.now);
        door.door.handle_card(&[9, 9, 9, 9], door.now);
        let mut ntp = None;
        while let Some(r) = door.door.poll_request() {
            assert_ne!(r, Request::Store, "nothing written before the NTP answer");
            if let Request::SendNtp { server, packet } = r {
                ntp.get_or_insert((server, packet));
            }
        }
        assert_eq!(door.door.store().flash().changes(), before);
        assert!(door.door.store_due(), "the decision waits in RAM");
        let (server, request) = ntp.expect("an NTP request at network-up");
        let t = chronolock_core::time::UnixTime::from_micros(T0_US);
        let answer = chronolock_core::ntp::ServerReply::synced(t, t).encode(&request);
        door.now = door.now + Duration::from_millis(5);
        door.door.handle_ntp_response(server, &answer, door.now);
        assert_eq!(door.door.store().flash().changes(), before);
        let mut stored = false;
        while let Some(r) = door.door.poll_request() {
            if r == Request::Store {
                door.door.store_pending();
                stored = true;
            }
        }
        assert!(stored, "the answer ends the hold");
        assert!(door.door.store().flash().changes() > before);
    });
    // No answer: the hold ends with the round's deadline.
    bench.boot(|door| {
        let before = door.door.store().flash().changes();
        door.door.handle_network(true, door.now);
        door.door.handle_card(&[9, 9, 9, 9], door.now);
        while door.door.poll_request().is_some() {}
        assert!(door.door.store_due());
        let deadline = door.door.poll_timeout().expect("a deadline");
        assert!(
            deadline <= door.now + Duration::from_secs(2),
            "{deadline:?}"
        );
        door.now = door.now + Duration::from_secs(2);
        door.door.handle_timeout(door.now);
        assert!(door.door.store().flash().changes() > before);
    });
}

/// Open first: a granted card's and keypad entry's unlock is asked for before any flash write
/// (the event, the core's record); the writes wait for `Request::Store`, which comes after the
/// unlock, and a power cut before it loses only those events, never the lock's opening.
#[test]
fn the_lock_opens_before_anything_is_written() {
    let mut backend = Backend::new(1);
    backend.publish(1, &[&[4, 0xA1, 0xB2, 0xC3]]);
    let mut bench = Bench::new();
    bench.boot(|door| {
        door.online(&mut backend);
        door.settle();
        let outbox = door.door.outbox_len();
        for uid in [&[4, 0xA1, 0xB2, 0xC3][..], &[9, 9, 9, 9]] {
            let before = door.door.store().flash().changes();
            door.door.handle_card(uid, door.now);
            let mut order = Vec::new();
            while let Some(r) = door.door.poll_request() {
                let changes = door.door.store().flash().changes();
                match r {
                    Request::Unlock { .. } => {
                        assert_eq!(changes, before, "nothing written before the unlock");
                        order.push("unlock");
                    }
                    Request::Store => {
                        assert_eq!(changes, before);
                        assert!(door.door.store_due());
                        door.door.store_pending();
                        assert!(door.door.store().flash().changes() > before);
                        order.push("store");
                    }
                    Request::Feedback(_) => order.push("feedback"),
                    other => door.take(other, None),
                }
            }
            assert_eq!(order.last(), Some(&"store"), "{order:?}");
            if uid[0] == 4 {
                assert_eq!(order.first(), Some(&"unlock"), "{order:?}");
            }
        }
        assert_eq!(door.door.outbox_len(), outbox + 2);
        // Until the shell stores them, the decision's writes wait in RAM.
        door.door.handle_card(&[4, 0xA1, 0xB2, 0xC3], door.now);
        assert!(door.door.store_due());
        assert_eq!(door.door.outbox_len(), outbox + 2);
    });
    // A power cut before `Request::Store` was carried out: that one event is lost, the rest kept.
    bench.boot(|door| {
        let mut events = 0;
        door.door
            .store()
            .peek_events(|_| {
                events += 1;
                true
            })
            .unwrap();
        assert!(events >= 2, "{events}");
    });
}

/// A keypad code's use reaches flash before its unlock (the rest of the decision's writes still
/// wait for `Request::Store`), so a power cut between the opening and the store cannot let the
/// same HOTP code open the door again after the reboot (fleet seed 7, door 17).
#[test]
fn a_keypad_code_opens_once_even_if_the_power_fails_after_the_unlock() {
    use chronolock_core::allowlist::KeypadEntry;
    const SECRET: &[u8] = b"12345678901234567890";
    let mut backend = Backend::new(1);
    let mut b = Builder::new();
    b.keypad_user(&KeypadEntry {
        code: b"1234".to_vec(),
        totp_secret: None,
        hotp_secret: Some(SECRET.to_vec()),
        hotp_counter: 0,
        digits: 6,
        period_s: 30,
        policy: Policy::new(AccessType::Unrestricted, 0, 0),
        slots: vec![],
    })
    .expect("keypad user");
    let bytes = b
        .build(1, T0_US / 1_000_000 - 3600, &backend.site)
        .expect("list");
    backend.devices.publish(DOOR, 1, bytes);
    let code = chronolock_core::otp::hotp(SECRET, 0, 6).expect("hotp");
    let keys = std::format!("1234*{code:06}#");
    let mut bench = Bench::new();
    bench.boot(|door| {
        door.online(&mut backend);
        door.settle();
        let outbox = door.door.outbox_len();
        let before = door.door.store().flash().changes();
        door.door.handle_keys(keys.as_bytes(), door.now);
        let mut unlocked = false;
        while let Some(r) = door.door.poll_request() {
            match r {
                Request::Unlock { .. } => {
                    assert!(
                        door.door.store().flash().changes() > before,
                        "use kept first"
                    );
                    let mut kept = Vec::new();
                    door.door
                        .store()
                        .keypad_uses(|u| kept.push(u.hotp_next))
                        .unwrap();
                    assert_eq!(kept, [1], "the code's use is in flash at the unlock");
                    unlocked = true;
                }
                // The power fails before the shell stores the rest: the event is lost.
                Request::Store => break,
                other => door.take(other, None),
            }
        }
        assert!(unlocked);
        assert!(door.door.store_due(), "the decision's event still waits");
        assert_eq!(door.door.outbox_len(), outbox);
    });
    bench.decisions.clear();
    bench.boot(|door| {
        door.door.handle_keys(keys.as_bytes(), door.now);
        door.settle();
    });
    assert_eq!(bench.decisions, [Decision::DeniedReplay]);
}

/// The setup access point opens only for a door with no settings yet or with the setup button
/// held at power-up, and never when the settings cannot be read.
#[test]
fn the_setup_access_point_opens_only_when_it_should() {
    let boot = |flash: MemFlash, button: bool| {
        let store = Store::new(flash, LAYOUT).expect("layout");
        let config = BootConfig {
            core: Config::default(),
            sync_interval_s: None,
            setup_button: button,
            firmware: None,
        };
        let door = Door::boot(store, config, [1; 32], Instant::ZERO);
        let open = door.setup_access_point();
        (open, door.into_store().into_flash())
    };
    let fresh = MemFlash::new(LAYOUT.end() as usize);
    let (open, _) = boot(fresh.clone(), false);
    assert!(open, "an unprovisioned door");
    let mut store = Store::new(fresh, LAYOUT).expect("layout");
    let mut settings = Settings::default();
    settings.ssid.push_str("Makerspace").unwrap();
    settings.server_url.push_str("http://backend").unwrap();
    store.set_settings(&settings).expect("settings");
    let provisioned = store.into_flash();
    assert!(!boot(provisioned.clone(), false).0, "a provisioned door");
    assert!(boot(provisioned.clone(), true).0, "the button held");
    // The settings' flash is overwritten: no access point, button or not.
    let mut broken = provisioned;
    for at in (LAYOUT.map.start..LAYOUT.map.end).step_by(4) {
        embedded_storage::nor_flash::NorFlash::write(&mut broken, at, &[0; 4]).unwrap();
    }
    let mut store = Store::new(broken.clone(), LAYOUT).expect("layout");
    assert!(store.settings().is_err(), "the map reads as corrupt");
    assert!(!boot(broken.clone(), true).0, "unreadable settings");
    assert!(!boot(broken, false).0);
}

/// NTP servers per site: the door takes those the site names in the authenticated sync answer,
/// keeps them in flash across reboots, and asks them (by index) from then on; a site that
/// names none leaves the door's own.
#[test]
fn the_site_names_the_ntp_servers_and_the_door_keeps_them() {
    let mut backend = Backend::new(1);
    backend.publish(1, &[&[4, 0xA1, 0xB2, 0xC3]]);
    let mut bench = Bench::new();
    let names = |door: &Running<'_>| -> Vec<std::string::String> {
        door.door
            .ntp_servers()
            .iter()
            .map(|h| h.as_str().into())
            .collect()
    };
    bench.boot(|door| {
        door.online(&mut backend);
        assert_eq!(names(door), ["pool.ntp.org", "time.cloudflare.com"]);
        backend.devices.set_ntp_servers("ntp.internal 10.0.0.5:123");
        door.next_sync(&mut backend);
        assert_eq!(names(door), ["ntp.internal", "10.0.0.5:123"]);
    });
    assert!(bench
        .notices
        .iter()
        .any(|n| matches!(n, Notice::NtpServers { count: 2 })));
    bench.boot(|door| {
        assert_eq!(
            names(door),
            ["ntp.internal", "10.0.0.5:123"],
            "kept in flash"
        );
        // The first NTP round asks them: server 1 is 10.0.0.5:123.
        door.door.handle_network(true, door.now);
        let mut asked = Vec::new();
        while let Some(r) = door.door.poll_request() {
            if let Request::SendNtp { server, .. } = r {
                let host: std::string::String =
                    door.door.ntp_servers()[usize::from(server)].as_str().into();
                asked.push(host);
            }
        }
        assert!(asked.iter().any(|h| h == "10.0.0.5:123"), "{asked:?}");
        // A site that names none (again) leaves them as they are.
        backend.devices.set_ntp_servers("");
        door.online(&mut backend);
        assert_eq!(names(door), ["ntp.internal", "10.0.0.5:123"]);
    });
}

/// The firmware's 8 MB partition table: the settings map, the outbox, and two list slots of
/// 0x258000 bytes from 0x350000 to the end of the flash.
const LAYOUT_8MB: Layout = Layout {
    lists: 0x35_0000,
    slot_size: 0x25_8000,
    map: 0x32_0000..0x33_0000,
    outbox: 0x33_0000..0x35_0000,
};

/// 100,000 cards on an 8 MB NOR flash: downloaded a sector at a time (no erase longer than
/// one 4 KiB sector), checked where they lie in steps of [`INSTALL_STEP`] bytes while the
/// door stays responsive, searched in place in at most 17 reads of one 16-byte record plus
/// the policy's, and checked again in full at the next boot.
#[test]
fn a_hundred_thousand_cards_are_installed_and_searched_in_place_on_8_mb() {
    let mut backend = Backend::new(1);
    let cards = many_cards(100_000, 5);
    backend.publish(1, &refs(&cards));
    let len = backend.list().map_or(0, |l| l.len());
    assert_eq!(len, 64 + 100_000 * 16 + 24 + 64);
    let mut bench = Bench::with_layout(LAYOUT_8MB, 8 * 1024 * 1024);
    let mut reads = Vec::new();
    bench.boot(|door| {
        assert!(door.door.list_capacity() as usize >= len);
        door.door.handle_network(true, door.now);
        // Pair and download; the check then runs a step per timeout, and a card presented
        // meanwhile is decided (no list yet: unknown) without waiting for it.
        let mut steps = 0;
        let mut decided_while_checking = false;
        for _ in 0..10_000 {
            match door.door.poll_request() {
                Some(r) => door.take(r, Some(&mut backend)),
                None if door.door.installing() => {
                    steps += 1;
                    if steps == 100 {
                        assert_eq!(door.card(&cards[0]), Decision::DeniedUnknown);
                        decided_while_checking = true;
                    }
                    door.door.handle_timeout(door.now);
                }
                None => break,
            }
        }
        assert!(decided_while_checking);
        assert!(
            steps as usize >= len / INSTALL_STEP as usize,
            "{steps} steps"
        );
        assert_eq!(door.door.list_info().map(|i| i.cards), Some(100_000));
        assert_eq!(door.door.store().flash().largest_erase(), 4096);
        for i in [0, 1, 31_337, 50_000, 99_998, 99_999] {
            assert_eq!(door.card(&cards[i]), Decision::Granted, "card {i}");
            reads.push(door.door.list_reads());
        }
        assert_eq!(door.card(&[5, 0xFF, 0xFF, 0xFF]), Decision::DeniedUnknown);
        reads.push(door.door.list_reads());
    });
    // ⌈log2(100,001)⌉ = 17 probes at most, then one policy read (no slots).
    std::eprintln!("flash reads per decision over 100,000 cards: {reads:?}");
    assert!(reads.iter().all(|&r| (1..=18).contains(&r)), "{reads:?}");
    // At the next boot the list is checked in full again, then used.
    bench.boot(|door| {
        assert_eq!(door.door.list_info().map(|i| i.generation), Some(1));
        assert_eq!(door.card(&cards[77_777]), Decision::Granted);
    });
}

// ----- over-the-air updates ---------------------------------------------------------------

const V1: Version = Version::new(1, 0, 0);
const V2: Version = Version::new(1, 1, 0);
/// Two 64 KiB app slots after the door's data.
const APP_SLOT: u32 = 64 * 1024;

fn firmware_key() -> SigningKey {
    SigningKey::from_bytes(&[77; 32])
}

/// A door running `version` from slot 0, with the firmware key built in.
fn ota_bench(version: Version) -> Bench {
    ota_bench_sized(version, APP_SLOT)
}

/// The same with app slots of `slot` bytes.
fn ota_bench_sized(version: Version, slot: u32) -> Bench {
    let end = LAYOUT.end();
    let mut bench = Bench::with_layout(LAYOUT, end + 2 * slot);
    bench.firmware = Some(FirmwareBoot {
        slots: AppSlots {
            offsets: [end, end + slot],
            size: slot,
        },
        running_slot: 0,
        version,
        key: Some(firmware_key().verifying_key().to_bytes()),
        flash_mb: 4,
    });
    bench
}

/// An application image of 40,000 bytes, signed.
fn signed_image(version: Version, key: &SigningKey) -> (Vec<u8>, Vec<u8>) {
    let image: Vec<u8> = (0..40_000u32).map(|i| (i * 31 + 7) as u8).collect();
    let signed = firmware::sign(&image, version, 4, key).expect("sign");
    (image, signed)
}

fn download(door: &mut Running<'_>, signed: &[u8]) {
    door.door
        .begin_firmware(&signed[..firmware::HEADER_LEN], door.now);
    for chunk in signed[firmware::HEADER_LEN..].chunks(1_000) {
        door.door.firmware_bytes(chunk, door.now);
    }
    door.door.end_firmware(door.now);
    door.settle();
}

/// The shell did as asked: the bootloader now starts `slot`, which runs `version`.
fn runs(bench: &mut Bench, slot: u8, version: Version) {
    let fw = bench.firmware.as_mut().expect("firmware");
    fw.running_slot = slot;
    fw.version = version;
}

fn refused(notices: &[Notice]) -> Vec<OtaError> {
    notices
        .iter()
        .filter_map(|n| match n {
            Notice::FirmwareRefused(e) => Some(*e),
            _ => None,
        })
        .collect()
}

/// A signed, newer image is written into the spare slot (a sector erased at a time), checked
/// where it lies, kept on trial and booted; its first signed sync with a loaded list confirms
/// it.
#[test]
fn a_signed_update_boots_on_trial_and_a_signed_sync_with_a_list_confirms_it() {
    let mut backend = Backend::new(1);
    backend.publish(1, &[&[1, 1, 1, 1]]);
    let mut bench = ota_bench(V1);
    let (image, signed) = signed_image(V2, &firmware_key());
    bench.boot(|door| {
        door.online(&mut backend);
        download(door, &signed);
        let flash = door.door.store().flash();
        let at = (LAYOUT.end() + APP_SLOT) as usize;
        assert_eq!(&flash.bytes()[at..at + image.len()], &image[..]);
        assert_eq!(flash.largest_erase(), 4096);
    });
    assert_eq!(bench.slot_requests, [1]);
    assert!(bench.notices.iter().any(|n| matches!(
        n,
        Notice::FirmwareReady {
            version: V2,
            slot: 1
        }
    )));
    runs(&mut bench, 1, V2);
    bench.boot(|door| {
        assert_eq!(door.door.firmware_trial().map(|t| t.boots), Some(1));
        assert_eq!(door.card(&[1, 1, 1, 1]), Decision::Granted);
        door.online(&mut backend);
        assert_eq!(door.door.firmware_trial(), None);
    });
    assert!(bench
        .notices
        .iter()
        .any(|n| matches!(n, Notice::FirmwareConfirmed { version: V2 })));
    bench.boot(|door| assert_eq!(door.door.firmware_trial(), None));
    assert_eq!(bench.slot_requests, [1], "confirmed: no rollback");
}

/// An image that never completes a signed sync with a list is given up after its trial boots;
/// one the bootloader did not start is given up at once.
#[test]
fn an_update_that_does_not_prove_itself_falls_back_to_the_previous_slot() {
    let mut backend = Backend::new(1);
    backend.publish(1, &[&[1, 1, 1, 1]]);
    let mut bench = ota_bench(V1);
    let (_, signed) = signed_image(V2, &firmware_key());
    bench.boot(|door| {
        door.online(&mut backend);
        download(door, &signed);
    });
    runs(&mut bench, 1, V2);
    // It boots, but never reaches the backend.
    for boot in 1..=firmware::MAX_TRIAL_BOOTS {
        bench.boot(|door| assert_eq!(door.door.firmware_trial().map(|t| t.boots), Some(boot)));
    }
    assert_eq!(bench.slot_requests, [1]);
    bench.boot(|door| assert_eq!(door.door.firmware_trial(), None));
    assert_eq!(bench.slot_requests, [1, 0], "back to the previous slot");
    assert!(bench.notices.iter().any(|n| matches!(
        n,
        Notice::FirmwareRolledBack {
            version: V2,
            boots: 3
        }
    )));
    // The same image again, and this time the bootloader refuses it and starts the old slot.
    runs(&mut bench, 0, V1);
    bench.boot(|door| download(door, &signed));
    assert_eq!(bench.slot_requests, [1, 0, 1]);
    bench.boot(|door| assert_eq!(door.door.firmware_trial(), None));
    let rolled = bench
        .notices
        .iter()
        .filter(|n| matches!(n, Notice::FirmwareRolledBack { .. }))
        .count();
    assert_eq!(rolled, 2);
}

/// Downgrades, images signed with another key and images whose bytes differ from the signed
/// ones are refused, and nothing is booted.
#[test]
fn downgrades_foreign_and_altered_images_are_refused() {
    let mut bench = ota_bench(V2);
    bench.boot(|door| {
        let (_, older) = signed_image(V1, &firmware_key());
        download(door, &older);
        let (_, same) = signed_image(V2, &firmware_key());
        download(door, &same);
        let (_, foreign) = signed_image(Version::new(2, 0, 0), &SigningKey::from_bytes(&[5; 32]));
        download(door, &foreign);
        let (_, mut altered) = signed_image(Version::new(2, 0, 0), &firmware_key());
        altered[firmware::HEADER_LEN + 12_345] ^= 0x40;
        download(door, &altered);
    });
    assert_eq!(
        refused(&bench.notices),
        [
            OtaError::Image(FirmwareError::Downgrade {
                running: V2.0,
                offered: V1.0
            }),
            OtaError::Image(FirmwareError::Downgrade {
                running: V2.0,
                offered: V2.0
            }),
            OtaError::Image(FirmwareError::BadSignature),
            OtaError::Image(FirmwareError::Digest),
        ]
    );
    assert!(bench.slot_requests.is_empty());
}

/// A power cut at any point of the download, the check or the trial's write leaves a door that
/// runs its old firmware with no trial pending once it has booted, and takes the update again.
#[test]
fn a_power_cut_anywhere_in_an_update_keeps_the_running_firmware() {
    let (_, signed) = signed_image(V2, &firmware_key());
    // About 40 KB erased and 40 KB written, then the trial record.
    for step in (0..90_000).step_by(2_003) {
        let mut bench = ota_bench(V1);
        bench.boot(|door| {
            door.door.store().flash().cut_after(Some(step));
            download(door, &signed);
        });
        // The shell switches slots only when asked, and only after the trial is in flash.
        if let Some(&slot) = bench.slot_requests.last() {
            runs(&mut bench, slot, V2);
        }
        bench.boot(|door| {
            let fw = door.door.firmware_version();
            match door.door.firmware_trial() {
                Some(t) => assert_eq!((fw, t.boots), (Some(V2), 1), "cut after {step}"),
                None => assert_eq!(fw, Some(V1), "cut after {step}"),
            }
            if fw == Some(V1) {
                download(door, &signed);
            }
        });
        assert_eq!(bench.slot_requests.last(), Some(&1), "cut after {step}");
    }
}

/// The backend delivers an assigned update in sync answers of at most 128 KiB, the door asks
/// for each next piece at once, and boots the image when it is whole and checked; once it
/// runs it, nothing more is offered.
#[test]
fn the_backend_delivers_an_update_in_pieces_and_the_door_boots_it() {
    let mut backend = Backend::new(1);
    backend.publish(1, &[&[1, 1, 1, 1]]);
    let image: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let signed = firmware::sign(&image, V2, 4, &firmware_key()).expect("sign");
    backend.devices.assign_firmware(DOOR, Some(signed.clone()));
    let mut bench = ota_bench_sized(V1, 512 * 1024);
    bench.boot(|door| {
        door.online(&mut backend);
        for _ in 0..10 {
            if !door.slot_requests.is_empty() {
                break;
            }
            door.door.handle_timeout(door.now);
            door.exchange(&mut backend);
        }
        let at = (LAYOUT.end() + 512 * 1024) as usize;
        assert_eq!(
            &door.door.store().flash().bytes()[at..at + image.len()],
            &image[..]
        );
    });
    assert_eq!(bench.slot_requests, [1]);
    // Three pieces: 128 KiB, 128 KiB and the rest, each after the list (or nothing).
    let pieces: Vec<usize> = backend
        .sync_answers
        .borrow()
        .iter()
        .map(|n| n - SYNC_RESPONSE_LEN)
        .filter(|&n| n > 1_000)
        .collect();
    assert_eq!(pieces.len(), 3, "{pieces:?}");
    let list = backend.list().map_or(0, |l| l.len());
    assert_eq!(pieces[1], 128 * 1024);
    assert_eq!(
        pieces.iter().sum::<usize>(),
        list + signed.len(),
        "{pieces:?}"
    );
    runs(&mut bench, 1, V2);
    bench.boot(|door| {
        door.online(&mut backend);
        assert_eq!(door.door.firmware_trial(), None, "confirmed");
    });
    let status = backend.devices.status(DOOR).expect("status");
    assert_eq!(
        (status.firmware_version, status.partial_firmware),
        (V2.0, None)
    );
    assert_eq!(
        backend.sync_answers.borrow().last(),
        Some(&SYNC_RESPONSE_LEN),
        "nothing offered to a door that runs it"
    );
}

/// An assigned image the door refuses (another signing key) is refused once: the door says it
/// holds all of it, and the backend stops sending it.
#[test]
fn an_update_the_door_refuses_is_not_sent_again() {
    let mut backend = Backend::new(1);
    backend.publish(1, &[&[1, 1, 1, 1]]);
    let (_, foreign) = signed_image(V2, &SigningKey::from_bytes(&[5; 32]));
    backend.devices.assign_firmware(DOOR, Some(foreign));
    let mut bench = ota_bench(V1);
    bench.boot(|door| {
        door.online(&mut backend);
        door.next_sync(&mut backend);
    });
    assert_eq!(
        refused(&bench.notices),
        [OtaError::Image(FirmwareError::BadSignature)]
    );
    assert_eq!(
        backend.sync_answers.borrow().last(),
        Some(&SYNC_RESPONSE_LEN)
    );
    assert!(bench.slot_requests.is_empty());
}

/// A power cut anywhere in a download of several pieces: the next boot goes on from the note
/// of the last whole piece (from the start of its erase sector), not from the first byte, and
/// the image that boots is the signed one.
#[test]
fn a_firmware_download_cut_by_power_goes_on_from_its_note() {
    let image: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let signed = firmware::sign(&image, V2, 4, &firmware_key()).expect("sign");
    // The budget counts erased and written bytes: about 2 × 300 KB for the image, after the
    // pairing's and the list's few kilobytes.
    for step in [100_000, 270_000, 400_000, 530_000, 590_000] {
        let mut backend = Backend::new(1);
        backend.publish(1, &[&[1, 1, 1, 1]]);
        backend.devices.assign_firmware(DOOR, Some(signed.clone()));
        let mut bench = ota_bench_sized(V1, 512 * 1024);
        bench.boot(|door| {
            door.door.store().flash().cut_after(Some(step));
            door.online(&mut backend);
        });
        let resumed_from = bench.boot(|door| {
            let from = door
                .door
                .store()
                .ota_note()
                .expect("note")
                .map(|n| n.flushed);
            door.online(&mut backend);
            let at = (LAYOUT.end() + 512 * 1024) as usize;
            assert_eq!(
                &door.door.store().flash().bytes()[at..at + image.len()],
                &image[..],
                "cut after {step}"
            );
            from
        });
        assert_eq!(bench.slot_requests, [1], "cut after {step}");
        // Past the first piece's note (2 × 128 KiB of erases and writes), the download goes on
        // from it.
        if step >= 270_000 {
            assert!(
                resumed_from.is_some_and(|f| f >= 128 * 1024 - firmware::HEADER_LEN as u32),
                "cut after {step}: went on from {resumed_from:?}"
            );
        }
    }
}
