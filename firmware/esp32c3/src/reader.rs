//! The Wiegand reader: D0 and D1 interrupts timestamp each pulse, the reader task assembles
//! frames with [`chronolock_device::wiegand::Accumulator`] and hands cards and keys to the door.
//!
//! The pulses are ~50 µs wide and ~2 ms apart, and the order of D0 and D1 pulses *is* the data,
//! so they are taken in the GPIO interrupt (not by two async waits, whose wake-up order is not
//! the pulse order) and queued with their time.
//!
//! Flash erases and writes run with interrupts off. The door task starts none while a frame is
//! arriving ([`frame_arriving`]), and reports any door step long enough to have hidden pulses
//! ([`report_stall`]): a frame that overlaps one is dropped whole, never decoded as what is
//! left of it (a card's remains can read as keypad keys, which count toward a lockout).

use core::cell::{Cell, RefCell};
use core::sync::atomic::{AtomicBool, Ordering};

use chronolock_device::wiegand::{Accumulator, Frame};
use critical_section::Mutex;
use embassy_futures::select::{select, Either};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::Channel;
use embassy_time::Timer;
use esp_hal::gpio::{Event, Input};
use esp_hal::handler;
use log::warn;

use crate::bus::{self, Input as BusInput};

/// D0 and D1, once the interrupt handler may use them.
static LINES: Mutex<RefCell<Option<(Input<'static>, Input<'static>)>>> =
    Mutex::new(RefCell::new(None));

/// Pulses from the interrupt: the bit and its time in microseconds since boot. 128 pulses hold
/// more than three frames, far more than the task ever lags.
static PULSES: Channel<CriticalSectionRawMutex, (bool, u64), 128> = Channel::new();

/// Whether a frame is arriving now (bits seen, the gap after them not yet over).
static ARRIVING: AtomicBool = AtomicBool::new(false);

/// Stalls the door task reported and the reader has not yet taken: (from, until) in
/// microseconds since boot, merged.
static STALLS: Mutex<Cell<Option<(u64, u64)>>> = Mutex::new(Cell::new(None));

/// Whether a frame is arriving: the door task waits before touching the flash.
pub fn frame_arriving() -> bool {
    ARRIVING.load(Ordering::Acquire)
}

/// The CPU may not have seen the reader's pulses from `from_us` to `until_us`.
pub fn report_stall(from_us: u64, until_us: u64) {
    critical_section::with(|cs| {
        let stalls = STALLS.borrow(cs);
        let merged = match stalls.get() {
            Some((a, b)) => (a.min(from_us), b.max(until_us)),
            None => (from_us, until_us),
        };
        stalls.set(Some(merged));
    });
}

fn take_stall() -> Option<(u64, u64)> {
    critical_section::with(|cs| STALLS.borrow(cs).take())
}

/// Arms the falling-edge interrupts on D0 and D1 (install [`gpio_interrupt`] first).
pub fn start(mut d0: Input<'static>, mut d1: Input<'static>) {
    critical_section::with(|cs| {
        d0.listen(Event::FallingEdge);
        d1.listen(Event::FallingEdge);
        LINES.borrow_ref_mut(cs).replace((d0, d1));
    });
}

/// The GPIO interrupt: queues one bit per pulse. Runs with interrupts of its level masked, so
/// D0 and D1 are seen in order.
#[handler]
pub fn gpio_interrupt() {
    let at = esp_hal::time::Instant::now()
        .duration_since_epoch()
        .as_micros();
    critical_section::with(|cs| {
        let mut lines = LINES.borrow_ref_mut(cs);
        let Some((d0, d1)) = lines.as_mut() else {
            return;
        };
        for (line, bit) in [(d0, false), (d1, true)] {
            if line.is_interrupt_set() {
                line.clear_interrupt();
                // A full queue means the reader task is stuck; the frame will fail its parity
                // check and the user presents the card again.
                let _ = PULSES.try_send((bit, at));
            }
        }
    });
}

fn micros_now() -> u64 {
    esp_hal::time::Instant::now()
        .duration_since_epoch()
        .as_micros()
}

/// Assembles pulses into frames and passes them on.
#[embassy_executor::task]
pub async fn reader_task() -> ! {
    let mut acc = Accumulator::new();
    loop {
        let woke = match acc.deadline_us() {
            Some(deadline) => {
                let wait = deadline.saturating_sub(micros_now());
                match select(
                    PULSES.receive(),
                    Timer::after(embassy_time::Duration::from_micros(wait)),
                )
                .await
                {
                    Either::First(pulse) => Some(pulse),
                    Either::Second(()) => None,
                }
            }
            None => Some(PULSES.receive().await),
        };
        // A stall reported meanwhile comes first: it may have hidden pulses before this one.
        if let Some((from, until)) = take_stall() {
            pass_on(acc.blind(from, until)).await;
        }
        let done = match woke {
            Some((bit, at)) => acc.push(bit, at),
            None => acc.poll(micros_now()),
        };
        ARRIVING.store(acc.busy(), Ordering::Release);
        pass_on(done).await;
    }
}

async fn pass_on(done: Option<Result<Frame, chronolock_device::wiegand::WiegandError>>) {
    match done {
        Some(Ok(Frame::Card(card))) => bus::input(BusInput::Card(card)).await,
        Some(Ok(Frame::Key(key))) => bus::input(BusInput::Key(key)).await,
        Some(Err(e)) => warn!("reader frame ignored: {e}"),
        None => {}
    }
}
