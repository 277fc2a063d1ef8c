//! The door's wiring: the lock relay, the LEDs and buzzer, the door contact, the battery. Pin
//! numbers are chosen in `main` (see the README's pin map); this module only drives them.

use chronolock_core::controller::Feedback;
use embassy_futures::select::{select, Either};
use embassy_time::{Duration, Timer};
use esp_hal::analog::adc::{Adc, AdcCalCurve, AdcPin};
use esp_hal::gpio::{Input, Output};
use esp_hal::peripherals::{ADC1, GPIO3};
use esp_hal::Blocking;
use log::info;

use crate::bus::{self, Input as BusInput, FEEDBACK, LOCK};

/// The battery divider: the ADC sees `1 / BATTERY_DIVIDER` of the battery voltage
/// (100 kΩ over 100 kΩ).
const BATTERY_DIVIDER: u32 = 2;

/// The battery's voltage through a divider on an ADC1 pin.
pub struct Battery {
    adc: Adc<'static, ADC1<'static>, Blocking>,
    pin: AdcPin<GPIO3<'static>, ADC1<'static>, AdcCalCurve<ADC1<'static>>>,
}

impl Battery {
    /// The ADC and its (calibrated) pin.
    pub fn new(
        adc: Adc<'static, ADC1<'static>, Blocking>,
        pin: AdcPin<GPIO3<'static>, ADC1<'static>, AdcCalCurve<ADC1<'static>>>,
    ) -> Self {
        Battery { adc, pin }
    }

    /// Millivolts at the battery (0 if the ADC does not answer).
    pub fn read_mv(&mut self) -> u16 {
        // A conversion takes microseconds; bound the wait anyway.
        for _ in 0..10_000 {
            match self.adc.read_oneshot(&mut self.pin) {
                Ok(mv) => return (u32::from(mv) * BATTERY_DIVIDER).min(u32::from(u16::MAX)) as u16,
                Err(nb::Error::WouldBlock) => continue,
                Err(nb::Error::Other(())) => break,
            }
        }
        0
    }
}

/// Drives the lock relay: energised for the requested time; a new grant while open extends it.
#[embassy_executor::task]
pub async fn lock_task(mut relay: Output<'static>) -> ! {
    loop {
        let mut ms = LOCK.wait().await;
        relay.set_high();
        loop {
            match select(
                Timer::after(Duration::from_millis(u64::from(ms))),
                LOCK.wait(),
            )
            .await
            {
                Either::First(()) => break,
                Either::Second(again) => ms = again,
            }
        }
        relay.set_low();
    }
}

/// One step of a pattern: which LED, whether the buzzer sounds, for how long.
#[derive(Clone, Copy)]
struct Step {
    red: bool,
    green: bool,
    buzz: bool,
    ms: u64,
}

const fn step(red: bool, green: bool, buzz: bool, ms: u64) -> Step {
    Step {
        red,
        green,
        buzz,
        ms,
    }
}

const OFF_100: Step = step(false, false, false, 100);

/// Green for a second, one short beep.
const GRANTED: &[Step] = &[step(false, true, true, 120), step(false, true, false, 880)];
/// Red for a second, one long beep.
const DENIED: &[Step] = &[step(true, false, true, 500), step(true, false, false, 500)];
/// ADR-011: three rapid red blinks, each with a click.
const CLOCK_UNSYNCED: &[Step] = &[
    step(true, false, true, 100),
    OFF_100,
    step(true, false, true, 100),
    OFF_100,
    step(true, false, true, 100),
];
/// Red and green alternating, two long beeps: wait before trying again.
const LOCKED_OUT: &[Step] = &[
    step(true, false, true, 400),
    step(false, true, false, 200),
    step(true, false, true, 400),
    step(false, true, false, 200),
];

/// Each feedback's pattern; distinct by colour, rhythm and sound, so that a user tells them apart
/// without looking closely.
fn pattern(f: Feedback) -> &'static [Step] {
    match f {
        Feedback::Granted => GRANTED,
        Feedback::Denied => DENIED,
        Feedback::ClockUnsynced => CLOCK_UNSYNCED,
        Feedback::LockedOut => LOCKED_OUT,
    }
}

/// The LEDs and the buzzer.
pub struct Indicators {
    /// Red LED.
    pub red: Output<'static>,
    /// Green LED.
    pub green: Output<'static>,
    /// Buzzer (active buzzer, on while high).
    pub buzzer: Output<'static>,
}

impl Indicators {
    fn show(&mut self, s: Step) {
        self.red.set_level(s.red.into());
        self.green.set_level(s.green.into());
        self.buzzer.set_level(s.buzz.into());
    }
}

/// Plays feedback patterns; a new one interrupts the one playing.
#[embassy_executor::task]
pub async fn feedback_task(mut ind: Indicators) -> ! {
    let mut next = None;
    loop {
        let f = match next.take() {
            Some(f) => f,
            None => FEEDBACK.wait().await,
        };
        for &s in pattern(f) {
            ind.show(s);
            if let Either::Second(f) =
                select(Timer::after(Duration::from_millis(s.ms)), FEEDBACK.wait()).await
            {
                next = Some(f);
                break;
            }
        }
        ind.show(step(false, false, false, 0));
    }
}

/// Reports the door contact (a reed switch to ground: low = closed).
#[embassy_executor::task]
pub async fn contact_task(mut contact: Input<'static>) -> ! {
    let mut open = contact.is_high();
    info!("door contact: {}", if open { "open" } else { "closed" });
    loop {
        contact.wait_for_any_edge().await;
        // Debounce: a reed switch chatters for a few milliseconds.
        Timer::after(Duration::from_millis(30)).await;
        let now_open = contact.is_high();
        if now_open != open {
            open = now_open;
            bus::input(BusInput::DoorContact(open)).await;
        }
    }
}
