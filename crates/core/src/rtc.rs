//! The external RTC's semantics (Maxim DS3231): what a reading means and what may be written.
//!
//! The DS3231 keeps a two-digit year with a century bit, so its registers hold 2000–2099, and
//! its oscillator-stop flag (OSF, status register bit 7) says the time kept since the flag was
//! last cleared cannot be trusted (the oscillator stopped: first power-up, flat coin cell). The
//! shell decodes the BCD registers (the `ds323x` driver does) and hands the fields in.

use crate::time::{CivilDateTime, UnixTime};

/// First and last year the DS3231's registers can hold.
pub const YEARS: core::ops::RangeInclusive<i32> = 2000..=2099;

/// What reading the RTC gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtcReading {
    /// No RTC answered on the bus: ADR-011's no-RTC behaviour applies.
    Absent,
    /// An RTC is fitted but its time is not to be trusted (OSF set, or registers out of range).
    Invalid,
    /// The RTC's time, whole seconds (the registers' resolution).
    Valid {
        /// Unix seconds read from the registers.
        unix_secs: i64,
        /// The read was taken just as the seconds register ticked to `unix_secs` (the shell
        /// polled it, or waited for the 1 Hz square-wave edge), so the time is exact to the
        /// read's latency rather than anywhere within the second.
        at_tick: bool,
    },
}

impl RtcReading {
    /// Judges decoded register fields and the oscillator-stop flag.
    pub fn from_registers(fields: CivilDateTime, oscillator_stopped: bool) -> Self {
        if oscillator_stopped || !YEARS.contains(&fields.year) {
            return RtcReading::Invalid;
        }
        match fields.to_unix_secs() {
            Ok(unix_secs) => RtcReading::Valid {
                unix_secs,
                at_tick: false,
            },
            Err(_) => RtcReading::Invalid,
        }
    }

    /// The same reading, taken at the tick of the seconds register.
    pub fn at_tick(self) -> Self {
        match self {
            RtcReading::Valid { unix_secs, .. } => RtcReading::Valid {
                unix_secs,
                at_tick: true,
            },
            other => other,
        }
    }
}

/// Why a time cannot be written to the RTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtcWriteError {
    /// The year is outside 2000–2099.
    OutOfRange,
}

/// The register fields to write for `utc` (whole seconds), if the DS3231 can hold it.
pub fn registers_for(utc: UnixTime) -> Result<CivilDateTime, RtcWriteError> {
    let fields = utc.civil();
    if YEARS.contains(&fields.year) {
        Ok(fields)
    } else {
        Err(RtcWriteError::OutOfRange)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(year: i32) -> CivilDateTime {
        CivilDateTime {
            year,
            month: 11,
            day: 24,
            hour: 8,
            minute: 58,
            second: 58,
        }
    }

    #[test]
    fn oscillator_stop_means_invalid() {
        assert_eq!(
            RtcReading::from_registers(fields(2026), true),
            RtcReading::Invalid
        );
        assert_eq!(
            RtcReading::from_registers(fields(2026), false),
            RtcReading::Valid {
                unix_secs: 1_795_510_738,
                at_tick: false
            }
        );
    }

    #[test]
    fn registers_hold_2000_to_2099() {
        assert_eq!(
            RtcReading::from_registers(fields(1999), false),
            RtcReading::Invalid
        );
        assert_eq!(
            RtcReading::from_registers(fields(2100), false),
            RtcReading::Invalid
        );
        let garbage = CivilDateTime {
            month: 14,
            ..fields(2026)
        };
        assert_eq!(
            RtcReading::from_registers(garbage, false),
            RtcReading::Invalid
        );
        assert_eq!(
            registers_for(UnixTime::from_secs(4_102_444_800)),
            Err(RtcWriteError::OutOfRange)
        );
        assert_eq!(
            registers_for(UnixTime::from_secs(1_795_510_738)),
            Ok(fields(2026))
        );
    }
}
