//! `serve --demo`'s virtual doors: the simulator's live doors (the shared door in a task, real
//! HTTP to this server, real NTP) behind the server's [`VirtualDoorHost`] trait.

use std::path::Path;
use std::sync::Arc;

use chronolock_server::demo::{
    DoorHost, DoorSpec, PanelCommand, PanelView, VirtualDoor, VirtualDoorHost,
};
use chronolock_sim::live::door::{self, Command, DoorHandle};
use chronolock_sim::live::store::Store;
use chronolock_sim::live::{DoorOptions, Output, RotatingFile};

/// The host the binary gives the server.
pub fn host() -> DoorHost {
    DoorHost(Arc::new(LiveDoors))
}

/// Runs virtual doors as live doors in this process.
pub struct LiveDoors;

/// 10 MB of events, then one previous file: about two days of three doors syncing every 10 s.
const LOG_BYTES: u64 = 10_000_000;

impl VirtualDoorHost for LiveDoors {
    fn paired_door_id(&self, dir: &Path) -> Option<u64> {
        Store::open(dir).ok()?.paired_door_id()
    }

    fn start(
        &self,
        doors: Vec<DoorSpec>,
        log_dir: &Path,
    ) -> Result<Vec<Arc<dyn VirtualDoor>>, String> {
        let log = RotatingFile::open(&log_dir.join("events.jsonl"), LOG_BYTES)
            .map_err(|e| format!("{}: {e}", log_dir.display()))?;
        let out = Output::to(Box::new(log));
        let mut started: Vec<Arc<dyn VirtualDoor>> = Vec::new();
        for spec in doors {
            let store =
                Store::open(&spec.dir).map_err(|e| format!("door {}: {e}", spec.door_id))?;
            let handle = door::spawn(
                DoorOptions {
                    name: spec.name,
                    server: Some(spec.server),
                    pairing_code: spec.pairing_code,
                    ntp: spec.ntp,
                    rtc: true,
                    sync_interval_s: Some(10),
                    setup_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                },
                store,
                out.clone(),
            )
            .map_err(|e| format!("door {}: {e}", spec.door_id))?;
            started.push(Arc::new(Panel(handle)));
        }
        Ok(started)
    }
}

/// A live door as the admin UI's panel sees it.
struct Panel(DoorHandle);

impl VirtualDoor for Panel {
    fn view(&self) -> PanelView {
        let v = self.0.view();
        PanelView {
            name: v.name,
            powered: v.powered,
            network: v.network,
            ntp: v.ntp,
            ntp_last: v.ntp_last,
            door_id: v.door_id,
            setup_mode: v.setup_mode,
            setup_url: v.setup_url,
            clock_valid: v.clock_valid,
            clock_source: v.clock_source,
            clock_utc: v.clock_utc,
            clock_error_ms: v.clock_error_ms,
            unlocked: v.unlocked,
            feedback: v.feedback,
            last_decision: v.last_decision,
            generation: v.generation,
            outbox: v.outbox,
            battery_mv: v.battery_mv,
            last_sync: v.last_sync,
            door_open: v.door_open,
            contact: v.contact,
            alarm: v.alarm,
            lockdown: v.lockdown,
        }
    }

    fn send(&self, command: PanelCommand) -> bool {
        self.0.send(match command {
            PanelCommand::Card(uid) => Command::Card(uid),
            PanelCommand::SecureCard { uid, clone } => Command::SecureCard { uid, clone },
            PanelCommand::Keys(keys) => Command::Keys(keys),
            PanelCommand::Power(on) => Command::Power(on),
            PanelCommand::PowerCycle => Command::PowerCycle,
            PanelCommand::Network(up) => Command::Network(up),
            PanelCommand::Ntp(up) => Command::Ntp(up),
            PanelCommand::Door(open) => Command::Door(open),
            PanelCommand::Rex => Command::Rex,
        })
    }
}
