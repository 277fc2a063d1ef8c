//! Device configuration: every interval, bound and server list the core uses, each with a
//! documented default. Shells build a [`Config`] from their own settings (the firmware from flash,
//! the simulator from a scenario) and hand it to the [`Controller`](crate::Controller).

use core::time::Duration;

use crate::time::UnixTime;

/// How many NTP servers a device can be configured with.
pub const MAX_NTP_SERVERS: usize = 4;

/// Longest NTP server host name kept in the configuration.
pub const MAX_HOST_LEN: usize = 63;

/// An NTP server host name (or address literal), resolved by the shell.
pub type HostName = heapless::String<MAX_HOST_LEN>;

/// The controller's configuration. `Config::default()` gives the documented defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// NTP servers, queried together in each round; the core names them by index. Default:
    /// `pool.ntp.org` and `time.cloudflare.com` (ADR-011). Air-gapped sites name their own.
    pub ntp_servers: heapless::Vec<HostName, MAX_NTP_SERVERS>,
    /// Time between NTP rounds once the clock has been synchronised. Default 1 h.
    pub ntp_poll_interval: Duration,
    /// How long a round waits for its answers. Default 2 s.
    pub ntp_response_timeout: Duration,
    /// First retry delay after a round without a usable answer; it doubles up to
    /// `ntp_retry_max`. Default 1 s.
    pub ntp_retry_initial: Duration,
    /// Longest retry delay. Default 64 s.
    pub ntp_retry_max: Duration,
    /// Round-trip delays above this are implausible and rejected. Default 1 s.
    pub ntp_max_delay: Duration,
    /// Answers whose root distance (root delay / 2 + root dispersion) exceeds this are rejected.
    /// Default 1.5 s.
    pub ntp_max_root_distance: Duration,
    /// Time between syncs with the backend while the network is up. Default 5 min (ADR-011).
    pub backend_sync_interval: Duration,
    /// How long a backend sync may take before it counts as failed. Default 10 s.
    pub backend_response_timeout: Duration,
    /// First retry delay after a failed backend sync; it doubles up to
    /// `backend_sync_interval`. Default 5 s.
    pub backend_retry_initial: Duration,
    /// While the backend's authenticated time is at most this old, NTP answers only check the
    /// clock and do not replace the backend as its source. Default 15 min.
    pub backend_fresh_for: Duration,
    /// While no network source keeps the clock synchronised, re-read the RTC this often.
    /// Default 1 h.
    pub rtc_resync_interval: Duration,
    /// After a network sync, write the time back to the RTC if it was last written at least this
    /// long ago (seed 000's online loop: NTP → ESP → RTC). It is also written after the first
    /// network sync of each boot, after a step, and whenever its flag says invalid. Default 1 h,
    /// the NTP poll interval: an I2C write costs nothing and wears nothing.
    pub rtc_writeback_interval: Duration,
    /// Bound on the device oscillator's frequency error, in ppm. Default 10 (ESP32-C3 crystal).
    pub drift_ppm_max: u32,
    /// Bound on the RTC's frequency error, in ppm. Default 2 (DS3231, 0–40 °C).
    pub rtc_drift_ppm_max: u32,
    /// Error of a read taken at the tick of the RTC's seconds register (I2C latency and polling
    /// granularity). Default 2 ms.
    pub rtc_tick_error: Duration,
    /// Error assumed for an RTC this device never wrote itself (set at the factory or by another
    /// device). Default 2 s.
    pub rtc_unknown_error: Duration,
    /// Error assumed for a phone's time at setup (browser clock plus the page's latency).
    /// Default 2 s.
    pub phone_error: Duration,
    /// Corrections at least this large count as steps and are reported; smaller ones are applied
    /// silently. Default 128 ms, NTP's step threshold (RFC 5905 §11.3).
    pub step_threshold: Duration,
    /// No time before this can be true: NTP answers below it are rejected, and it anchors the
    /// NTP era (RFC 5905 §6). The firmware sets its build time. Default 2020-01-01T00:00:00Z.
    pub time_floor: UnixTime,
    /// The site's Ed25519 public key: allow-lists must be signed by it. Default none (no list
    /// is accepted until the device is paired).
    pub site_key: Option<[u8; 32]>,
    /// How long the lock stays open after a grant. Default 3 s.
    pub unlock: Duration,
    /// A door-position contact is fitted: the door reports open and closed, and raises the
    /// forced and held-open alarms. Without one, door reports change nothing. Default false.
    pub door_contact: bool,
    /// How long the door may stay open after an authorised opening before the held-open alarm.
    /// Default 30 s.
    pub held_open: Duration,
    /// How long a CONDITIONAL check may wait for the backend before `DENIED_OFFLINE`. Default 3 s.
    pub conditional_timeout: Duration,
    /// How long a secure card's check (four APDU exchanges, about 30 ms with a PN532) may
    /// take before `DENIED_CARD_AUTH`. Default 1 s.
    pub card_auth_timeout: Duration,
    /// A keypad entry not finished with `#` within this is discarded. Default 10 s.
    pub keypad_entry_timeout: Duration,
    /// Consecutive keypad failures that lock the keypad. Default 5.
    pub lockout_after_failures: u8,
    /// First lockout; each further lockout doubles it, up to `lockout_max`. Default 30 s.
    pub lockout_initial: Duration,
    /// Longest lockout. Default 15 min.
    pub lockout_max: Duration,
    /// TOTP steps accepted either side of the current one (RFC 6238 §5.2). Default 1.
    pub totp_window_steps: u8,
    /// TOTP is tried only while the clock's error bound is at most this. Default 15 s (half a
    /// step, so ±1 step still covers the true time).
    pub totp_max_error: Duration,
    /// HOTP counters looked ahead of the next expected one (RFC 4226 §7.2). Default 10.
    pub hotp_look_ahead: u32,
    /// HOTP counters below the next expected one recognised as replays. Default 10.
    pub hotp_replay_window: u32,
    /// UTC hour of the daily battery report (ADR-011). Default 3.
    pub report_hour_utc: u8,
    /// While the clock is not valid, a report after this much uptime instead. Default 24 h.
    pub report_uptime_period: Duration,
}

impl Default for Config {
    fn default() -> Self {
        let mut ntp_servers = heapless::Vec::new();
        for host in ["pool.ntp.org", "time.cloudflare.com"] {
            // Both fit: MAX_NTP_SERVERS >= 2 and the names are shorter than MAX_HOST_LEN.
            let _ = ntp_servers.push(HostName::try_from(host).unwrap_or_default());
        }
        Config {
            ntp_servers,
            ntp_poll_interval: Duration::from_secs(3600),
            ntp_response_timeout: Duration::from_secs(2),
            ntp_retry_initial: Duration::from_secs(1),
            ntp_retry_max: Duration::from_secs(64),
            ntp_max_delay: Duration::from_secs(1),
            ntp_max_root_distance: Duration::from_millis(1500),
            backend_sync_interval: Duration::from_secs(300),
            backend_response_timeout: Duration::from_secs(10),
            backend_retry_initial: Duration::from_secs(5),
            backend_fresh_for: Duration::from_secs(900),
            rtc_resync_interval: Duration::from_secs(3600),
            rtc_writeback_interval: Duration::from_secs(3600),
            drift_ppm_max: 10,
            rtc_drift_ppm_max: 2,
            rtc_tick_error: Duration::from_millis(2),
            rtc_unknown_error: Duration::from_secs(2),
            phone_error: Duration::from_secs(2),
            step_threshold: Duration::from_millis(128),
            time_floor: UnixTime::VALIDITY_THRESHOLD,
            site_key: None,
            unlock: Duration::from_secs(3),
            door_contact: false,
            held_open: Duration::from_secs(30),
            conditional_timeout: Duration::from_secs(3),
            card_auth_timeout: Duration::from_secs(1),
            keypad_entry_timeout: Duration::from_secs(10),
            lockout_after_failures: 5,
            lockout_initial: Duration::from_secs(30),
            lockout_max: Duration::from_secs(900),
            totp_window_steps: 1,
            totp_max_error: Duration::from_secs(15),
            hotp_look_ahead: 10,
            hotp_replay_window: 10,
            report_hour_utc: 3,
            report_uptime_period: Duration::from_secs(86_400),
        }
    }
}

impl Config {
    /// A configuration with the given NTP servers and every other field at its default.
    /// Names longer than [`MAX_HOST_LEN`] or beyond [`MAX_NTP_SERVERS`] are an error.
    pub fn with_ntp_servers<'a>(
        servers: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, ConfigError> {
        let mut cfg = Config::default();
        cfg.ntp_servers.clear();
        for host in servers {
            let name = HostName::try_from(host).map_err(|_| ConfigError::HostNameTooLong)?;
            cfg.ntp_servers
                .push(name)
                .map_err(|_| ConfigError::TooManyNtpServers)?;
        }
        Ok(cfg)
    }
}

/// Why a configuration cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// More than [`MAX_NTP_SERVERS`] NTP servers.
    TooManyNtpServers,
    /// A host name longer than [`MAX_HOST_LEN`].
    HostNameTooLong,
    /// A host name with a character no host name or address has.
    BadHostName,
    /// No server at all.
    NoNtpServer,
}

impl ConfigError {
    /// What is wrong, for people.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConfigError::TooManyNtpServers => "at most 4 NTP servers",
            ConfigError::HostNameTooLong => "a server name longer than 63 characters",
            ConfigError::BadHostName => {
                "a server name may hold letters, digits, '.', '-', ':' and '[ ]' (IPv6) only"
            }
            ConfigError::NoNtpServer => "at least one NTP server",
        }
    }
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// NTP servers as a site names them: 1 to [`MAX_NTP_SERVERS`] host names or addresses
/// (`host` or `host:port`), separated by spaces, commas or new lines.
pub fn parse_ntp_servers(
    text: &str,
) -> Result<heapless::Vec<HostName, MAX_NTP_SERVERS>, ConfigError> {
    let mut out = heapless::Vec::new();
    for name in text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|n| !n.is_empty())
    {
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        {
            return Err(ConfigError::BadHostName);
        }
        let name = HostName::try_from(name).map_err(|_| ConfigError::HostNameTooLong)?;
        out.push(name).map_err(|_| ConfigError::TooManyNtpServers)?;
    }
    if out.is_empty() {
        return Err(ConfigError::NoNtpServer);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_ntp_servers_are_checked() {
        let servers = parse_ntp_servers("ntp1.example.org, 10.0.0.5:123\n[2001:db8::1]").unwrap();
        assert_eq!(servers.len(), 3);
        assert_eq!(servers[1].as_str(), "10.0.0.5:123");
        assert_eq!(parse_ntp_servers(" , "), Err(ConfigError::NoNtpServer));
        assert_eq!(
            parse_ntp_servers("a b c d e"),
            Err(ConfigError::TooManyNtpServers)
        );
        assert_eq!(parse_ntp_servers("ntp/evil"), Err(ConfigError::BadHostName));
        assert_eq!(
            parse_ntp_servers(&"x".repeat(64)),
            Err(ConfigError::HostNameTooLong)
        );
    }

    #[test]
    fn defaults_name_the_adr_servers() {
        let cfg = Config::default();
        assert_eq!(cfg.ntp_servers.len(), 2);
        assert_eq!(cfg.ntp_servers[0].as_str(), "pool.ntp.org");
        assert_eq!(cfg.backend_sync_interval, Duration::from_secs(300));
    }

    #[test]
    fn air_gapped_sites_name_their_own_server() {
        let cfg = Config::with_ntp_servers(["ntp.internal"]).unwrap();
        assert_eq!(cfg.ntp_servers.len(), 1);
        assert_eq!(
            Config::with_ntp_servers(["a", "b", "c", "d", "e"]),
            Err(ConfigError::TooManyNtpServers)
        );
        let long = "x".repeat(64);
        assert_eq!(
            Config::with_ntp_servers([long.as_str()]),
            Err(ConfigError::HostNameTooLong)
        );
    }
}
