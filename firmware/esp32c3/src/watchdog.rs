//! The watchdog: TIMG1's, which resets the chip when it is not fed for [`TIMEOUT`]. Its task
//! feeds it every second, but only while the door task and (in station mode) the network task
//! have beaten recently ([`crate::liveness`]); a task that hangs, or an executor that stops
//! running tasks, resets the door, which boots from its flash and goes on.

use core::cell::Cell;

use critical_section::Mutex;
use embassy_time::{Duration, Timer};
use esp_hal::peripherals::TIMG1;
use esp_hal::timer::timg::{MwdtStage, Wdt};
use log::warn;

use crate::liveness::{alive, Beats};

/// Unfed this long, the chip resets. Above the longest blocking flash step (a list slot's
/// erase, a few seconds with interrupts off, when no task runs).
pub const TIMEOUT: Duration = Duration::from_secs(15);

static BEATS: Mutex<Cell<Beats>> = Mutex::new(Cell::new(Beats {
    door_ms: 0,
    network_ms: None,
}));

fn now_ms() -> u64 {
    embassy_time::Instant::now().as_millis()
}

/// The door task is alive.
pub fn door_beat() {
    let now = now_ms();
    critical_section::with(|cs| {
        let beats = BEATS.borrow(cs);
        beats.set(Beats {
            door_ms: now,
            ..beats.get()
        });
    });
}

/// The network task is alive (its first beat makes it one the watchdog waits for).
pub fn network_beat() {
    let now = now_ms();
    critical_section::with(|cs| {
        let beats = BEATS.borrow(cs);
        beats.set(Beats {
            network_ms: Some(now),
            ..beats.get()
        });
    });
}

/// Feeds the watchdog while the tasks live.
#[embassy_executor::task]
pub async fn watchdog_task(mut wdt: Wdt<TIMG1<'static>>) -> ! {
    wdt.set_timeout(
        MwdtStage::Stage0,
        esp_hal::time::Duration::from_millis(TIMEOUT.as_millis()),
    );
    wdt.enable();
    let mut warned = false;
    loop {
        let beats = critical_section::with(|cs| BEATS.borrow(cs).get());
        if alive(beats, now_ms()) {
            wdt.feed();
            warned = false;
        } else if !warned {
            warn!("a task stopped ({beats:?}): the watchdog resets the door");
            warned = true;
        }
        Timer::after(Duration::from_secs(1)).await;
    }
}
