//! `chronolock sim bench-boot`: how long a virtual door without RTC takes from network-up (the
//! shell telling the door, just booted, that its network is up) to a valid clock from a real NTP
//! server, and how far that clock is from the server's, over many boots.

use std::io::Write;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use super::door::{self, Command, DoorOptions};
use super::store::Store;
use super::Output;

/// What the boots measured.
#[derive(Clone, Debug)]
pub struct BootFigures {
    /// Boots measured.
    pub boots: usize,
    /// Network-up to valid clock, microseconds, sorted.
    pub to_valid_us: Vec<u64>,
    /// |door UTC − host UTC| right after the clock became valid, microseconds, sorted. The NTP
    /// server must serve this machine's clock (chronyd with `local`), so this is the offset
    /// error against it.
    pub offset_us: Vec<u64>,
    /// The door's own error bound then, microseconds, sorted.
    pub bound_us: Vec<u64>,
    /// Boots whose offset from the server exceeded the door's own stated bound.
    pub outside_bound: usize,
    /// The baseline, from the same run: a raw SNTP round trip to the same server with the same
    /// client code, microseconds, sorted.
    pub raw_rtt_us: Vec<u64>,
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl BootFigures {
    /// A short report.
    pub fn report(&self) -> Value {
        let f = |v: &[u64]| json!({"median_us": pct(v, 0.5), "p99_us": pct(v, 0.99), "max_us": v.last().copied().unwrap_or(0)});
        let ratio = pct(&self.to_valid_us, 0.5) as f64 / pct(&self.raw_rtt_us, 0.5).max(1) as f64;
        json!({
            "boots": self.boots,
            "network_up_to_valid_clock": f(&self.to_valid_us),
            "raw_sntp_round_trip": f(&self.raw_rtt_us),
            "median_ratio_to_raw_round_trip": (ratio * 10.0).round() / 10.0,
            "offset_from_ntp_server": f(&self.offset_us),
            "door_error_bound": f(&self.bound_us),
            "offsets_outside_bound": self.outside_bound,
        })
    }
}

struct Lines(mpsc::Sender<Value>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for line in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Ok(v) = serde_json::from_slice(line) {
                let _ = self.0.send(v);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Boots one door `boots` times against `ntp` (no RTC, no backend) in `data`.
pub async fn boot_to_valid(
    ntp: &str,
    boots: usize,
    data: &std::path::Path,
) -> Result<BootFigures, String> {
    let (tx, rx) = mpsc::channel();
    let out = Output::to(Box::new(Lines(tx)));
    let store = Store::open(data).map_err(|e| e.to_string())?;
    // The baseline is measured right before each boot, never beside one: both see the same
    // machine and the same server, one after the other.
    let mut raw_rtt_us = raw_round_trips(ntp, 1).await?;
    let door = door::spawn(
        DoorOptions {
            name: "bench".into(),
            server: None,
            pairing_code: None,
            ntp: vec![ntp.to_string()],
            rtc: false,
            sync_interval_s: None,
            setup_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        },
        store,
        out,
    )
    .map_err(|e| e.to_string())?;
    let mut figures = BootFigures {
        boots: 0,
        to_valid_us: Vec::new(),
        offset_us: Vec::new(),
        bound_us: Vec::new(),
        outside_bound: 0,
        raw_rtt_us: Vec::new(),
    };
    let next = |what: &str, pred: &dyn Fn(&Value) -> bool| -> Result<Value, String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(v) if pred(&v) => return Ok(v),
                Ok(_) => {}
                Err(_) => {
                    return Err(format!(
                        "no {what} within 30 s: is the NTP server at {ntp} answering?"
                    ))
                }
            }
        }
    };
    for i in 0..boots {
        if i > 0 {
            raw_rtt_us.extend(raw_round_trips(ntp, 1).await?);
            door.send(Command::PowerCycle);
        }
        let valid = tokio::task::block_in_place(|| {
            next("valid clock", &|v| {
                v["event"] == "clock" && v["valid"] == true
            })
        })?;
        door.send(Command::Status);
        let status = tokio::task::block_in_place(|| next("status", &|v| v["event"] == "status"))?;
        let to_valid = valid["uptime_us"]
            .as_u64()
            .ok_or("clock event without uptime")?
            .saturating_sub(valid["network_up_us"].as_u64().unwrap_or(0));
        let utc = status["utc_us"].as_i64().ok_or("status without utc")?;
        let host = status["host_utc_us"]
            .as_i64()
            .ok_or("status without host utc")?;
        let offset = (utc - host).unsigned_abs();
        let bound = status["error_us"].as_u64().unwrap_or(0);
        figures.to_valid_us.push(to_valid);
        figures.offset_us.push(offset);
        figures.bound_us.push(bound);
        if offset > bound {
            figures.outside_bound += 1;
        }
        figures.boots += 1;
    }
    door.send(Command::Power(false));
    raw_rtt_us.sort_unstable();
    figures.raw_rtt_us = raw_rtt_us;
    figures.to_valid_us.sort_unstable();
    figures.offset_us.sort_unstable();
    figures.bound_us.sort_unstable();
    Ok(figures)
}

/// The baseline: `n` bare SNTP exchanges with the server, through the same client code the door
/// uses, without a door around them.
async fn raw_round_trips(ntp: &str, n: usize) -> Result<Vec<u64>, String> {
    let addr = tokio::net::lookup_host(ntp)
        .await
        .map_err(|e| format!("{ntp}: {e}"))?
        .next()
        .ok_or_else(|| format!("{ntp}: no address"))?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let request = chronolock_core::ntp::NtpRequest {
            cookie: chronolock_core::ntp::NtpRequest::cookie_from_random(rand::random()),
            sent_at: chronolock_core::Instant::ZERO,
        };
        let started = tokio::time::Instant::now();
        let (_, at) = super::net::ntp_exchange(addr, request.packet(), Duration::from_secs(5))
            .await
            .map_err(|e| format!("raw SNTP exchange with {ntp}: {e}"))?;
        out.push(at.saturating_duration_since(started).as_micros() as u64);
    }
    out.sort_unstable();
    Ok(out)
}
