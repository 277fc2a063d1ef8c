//! The DS3231 on I2C, through `ds323x`: detected at boot, read and written on the controller's
//! request. An absent chip reads as [`RtcReading::Absent`] (ADR-011's no-RTC behaviour); the
//! oscillator-stop flag makes a reading [`RtcReading::Invalid`] and is cleared after a write.

use chronolock_core::rtc;
use chronolock_core::time::CivilDateTime;
use chronolock_core::{Instant, RtcReading};
use ds323x::{DateTimeAccess, Datelike, Ds323x, NaiveDate, Timelike};
use embassy_time::{Duration, Timer};
use log::{info, warn};

use crate::bus::{self, Input, RtcRequest, RTC};
use crate::nfc::SharedI2c;

type Chip = Ds323x<ds323x::interface::I2cInterface<SharedI2c>, ds323x::ic::DS3231>;

/// Why the RTC could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtcError {
    /// Nothing answered on the bus.
    Bus,
    /// The time is outside what the registers hold.
    OutOfRange,
}

fn read(chip: &mut Chip) -> Result<RtcReading, RtcError> {
    let stopped = chip.has_been_stopped().map_err(|_| RtcError::Bus)?;
    let t = chip.datetime().map_err(|_| RtcError::Bus)?;
    let fields = CivilDateTime {
        year: t.year(),
        month: t.month() as u8,
        day: t.day() as u8,
        hour: t.hour() as u8,
        minute: t.minute() as u8,
        second: t.second() as u8,
    };
    Ok(RtcReading::from_registers(fields, stopped))
}

/// Reads at the next tick of the seconds register: polls it every 2 ms for at most 1.1 s.
async fn read_at_tick(chip: &mut Chip) -> Result<(RtcReading, Instant), RtcError> {
    let first = chip.datetime().map_err(|_| RtcError::Bus)?.second();
    for _ in 0..550 {
        Timer::after(Duration::from_millis(2)).await;
        let at = bus::now();
        if chip.datetime().map_err(|_| RtcError::Bus)?.second() != first {
            return Ok((read(chip)?.at_tick(), at));
        }
    }
    // The oscillator does not run: a plain reading says so through the flag.
    Ok((read(chip)?, bus::now()))
}

fn write(chip: &mut Chip, unix_secs: i64) -> Result<(), RtcError> {
    let c = rtc::registers_for(chronolock_core::UnixTime::from_secs(unix_secs))
        .map_err(|_| RtcError::OutOfRange)?;
    let t = NaiveDate::from_ymd_opt(c.year, u32::from(c.month), u32::from(c.day))
        .and_then(|d| d.and_hms_opt(u32::from(c.hour), u32::from(c.minute), u32::from(c.second)))
        .ok_or(RtcError::OutOfRange)?;
    chip.set_datetime(&t).map_err(|_| RtcError::Bus)?;
    chip.clear_has_been_stopped_flag()
        .map_err(|_| RtcError::Bus)
}

/// Serves the controller's RTC requests. `chip` is `None` when no DS3231 answered at boot.
#[embassy_executor::task]
pub async fn rtc_task(i2c: SharedI2c) -> ! {
    let mut chip = Ds323x::new_ds3231(i2c);
    // Detection: the status register answers.
    let present = chip.has_been_stopped().is_ok();
    info!("DS3231 {}", if present { "found" } else { "absent" });
    loop {
        match RTC.receive().await {
            RtcRequest::Read { at_tick } => {
                let reading = if !present {
                    Ok((RtcReading::Absent, bus::now()))
                } else if at_tick {
                    read_at_tick(&mut chip).await
                } else {
                    read(&mut chip).map(|r| (r, bus::now()))
                };
                let (reading, at) = reading.unwrap_or_else(|e| {
                    warn!("RTC read failed: {e:?}");
                    (RtcReading::Invalid, bus::now())
                });
                bus::input(Input::Rtc(reading, at)).await;
            }
            RtcRequest::Write { utc, at } if present => {
                // The registers hold whole seconds: write the next second at its boundary.
                let elapsed = bus::now().saturating_since(at);
                let now_us = utc.as_micros() + elapsed.as_micros() as i64;
                let next = now_us.div_euclid(1_000_000) + 1;
                let wait = (next * 1_000_000 - now_us) as u64;
                Timer::after(Duration::from_micros(wait)).await;
                match write(&mut chip, next) {
                    Ok(()) => info!("RTC set to {next}"),
                    Err(e) => warn!("RTC write failed: {e:?}"),
                }
            }
            RtcRequest::Write { .. } => {}
        }
    }
}
