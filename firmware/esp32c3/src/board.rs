//! The door's wiring: the lock relay, the LEDs and buzzer, the door contact, the exit button,
//! the battery. Pin numbers are chosen in `main` (see the README's pin map); this module only
//! drives them and reports their (debounced) levels.

use chronolock_core::controller::Feedback;
use embassy_futures::select::{select, select3, Either, Either3};
use embassy_time::{Duration, Instant, Timer};
use esp_hal::analog::adc::{Adc, AdcCalCurve, AdcPin};
use esp_hal::gpio::{Input, Output};
use esp_hal::peripherals::{ADC1, GPIO3};
use esp_hal::Blocking;
use log::info;

use crate::bus::{self, Alert, Input as BusInput, ALERT, FEEDBACK, LOCK};

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

/// The alarm's buzzer: on this long, then off this long, while the alarm sounds.
const ALARM_PULSE_MS: u64 = 500;
/// The lockdown's blink: red this long, once every [`LOCKDOWN_EVERY_MS`], while nothing else
/// shows.
const LOCKDOWN_BLINK_MS: u64 = 150;
const LOCKDOWN_EVERY_MS: u64 = 2_000;

/// What the standing state shows at `now_ms` (milliseconds since boot), and until when (`None`:
/// until it changes). On the clock's own phase, so that it needs no start time.
fn standing(alert: Alert, now_ms: u64) -> (Step, Option<u64>) {
    let (period, on_ms) = if alert.alarm {
        (2 * ALARM_PULSE_MS, ALARM_PULSE_MS)
    } else if alert.lockdown {
        (LOCKDOWN_EVERY_MS, LOCKDOWN_BLINK_MS)
    } else {
        return (step(false, false, false, 0), None);
    };
    let phase = now_ms % period;
    let on = phase < on_ms;
    let until = now_ms - phase + if on { on_ms } else { period };
    // The alarm keeps the red LED on and pulses the buzzer; the lockdown blinks red, silently.
    let shown = if alert.alarm {
        step(true, false, on, 0)
    } else {
        step(on, false, false, 0)
    };
    (shown, Some(until))
}

/// A feedback pattern's step over the standing state: the alarm goes on under it (red, and
/// its buzzer pulses with the pattern's sounds); the lockdown blink waits until it ends.
fn mix(pattern: Option<Step>, standing: Step, alert: Alert) -> Step {
    match pattern {
        None => standing,
        Some(p) if alert.alarm => step(true, p.green, p.buzz || standing.buzz, 0),
        Some(p) => p,
    }
}

/// Plays feedback patterns (a new one interrupts the one playing) over the standing state the
/// door task signals ([`ALERT`]: the alarm, the lockdown). It never waits on the door: the
/// alarm pulses on its own timer until told to stop.
#[embassy_executor::task]
pub async fn feedback_task(mut ind: Indicators) -> ! {
    let mut alert = Alert::default();
    // The pattern playing, from the step showing, and when that step ends.
    let mut playing: Option<(&'static [Step], Instant)> = None;
    loop {
        let now = Instant::now();
        while let Some((steps, end)) = playing {
            if now < end {
                break;
            }
            playing = match steps.get(1..) {
                Some(rest @ [next, ..]) => Some((rest, end + Duration::from_millis(next.ms))),
                _ => None,
            };
        }
        let (under, until) = standing(alert, now.as_millis());
        ind.show(mix(
            playing.and_then(|(steps, _)| steps.first().copied()),
            under,
            alert,
        ));
        let wake = [playing.map(|(_, end)| end), until.map(Instant::from_millis)]
            .into_iter()
            .flatten()
            .min()
            // Nothing due: look again in a minute (no alarm set at the end of time).
            .unwrap_or(now + Duration::from_secs(60));
        match select3(Timer::at(wake), FEEDBACK.wait(), ALERT.wait()).await {
            Either3::First(()) => {}
            Either3::Second(f) => {
                let steps = pattern(f);
                playing = steps
                    .first()
                    .map(|s| (steps, Instant::now() + Duration::from_millis(s.ms)));
            }
            Either3::Third(a) => alert = a,
        }
    }
}

/// How long a contact or button must hold a level before it counts: reed switches and
/// buttons chatter for a few milliseconds.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// How often an input is read even without an edge, so that a change between a read and the
/// next wait for an edge is not missed for long.
const RESAMPLE: Duration = Duration::from_secs(1);

/// Waits until `pin` has held one level for [`DEBOUNCE`], and returns it (`true`: high).
async fn settled(pin: &mut Input<'static>) -> bool {
    loop {
        if let Either::First(()) = select(Timer::after(DEBOUNCE), pin.wait_for_any_edge()).await {
            return pin.is_high();
        }
    }
}

/// Waits for the next edge on `pin`, or [`RESAMPLE`], then for its level to settle.
async fn next_level(pin: &mut Input<'static>) -> bool {
    let _ = select(pin.wait_for_any_edge(), Timer::after(RESAMPLE)).await;
    settled(pin).await
}

/// Hands a one-word input to the door task. Tries again every few milliseconds while its queue
/// is full, rather than waiting in the queue: a waiting send would keep a whole [`BusInput`]
/// (a few hundred bytes) in this task's static state for a bool.
async fn report(input: impl Fn() -> BusInput) {
    while bus::INPUTS.try_send(input()).is_err() {
        Timer::after(Duration::from_millis(5)).await;
    }
}

/// Reports the door contact (a reed switch to ground, closed while the door is: the usual "NC"
/// door contact; with the pin's pull-up, low = closed and high = open, so a cut wire reads
/// open): its level once at start (the door is booted by then), then every change that holds
/// for [`DEBOUNCE`].
#[embassy_executor::task]
pub async fn contact_task(mut contact: Input<'static>) -> ! {
    let mut open = settled(&mut contact).await;
    info!("door contact: {}", if open { "open" } else { "closed" });
    report(|| BusInput::DoorContact(open)).await;
    loop {
        let now_open = next_level(&mut contact).await;
        if now_open != open {
            open = now_open;
            report(|| BusInput::DoorContact(open)).await;
        }
    }
}

/// Reports presses of the request-to-exit button (normally open, to ground, with the pin's
/// pull-up: low = pressed). A press is a level that went low and held for [`DEBOUNCE`]; a
/// button held down counts once, and one held (or shorted) at start counts only after it was
/// released.
#[embassy_executor::task]
pub async fn rex_task(mut button: Input<'static>) -> ! {
    let mut pressed = !settled(&mut button).await;
    if pressed {
        info!("exit button held at start: ignored until released");
    }
    loop {
        let now_pressed = !next_level(&mut button).await;
        if now_pressed && !pressed {
            report(|| BusInput::Rex).await;
        }
        pressed = now_pressed;
    }
}
