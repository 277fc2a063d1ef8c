//! The door's network side in station mode: Wi-Fi, the IP stack, NTP over UDP and HTTP to the
//! backend. These tasks carry packets; the shared door writes every request and judges every
//! answer (NTP answers in the controller, the device protocol in the door).

use core::net::SocketAddr;

use chronolock_core::config::MAX_NTP_SERVERS;
use chronolock_core::ntp::PACKET_LEN;
use chronolock_device::door::{Exchange, Failure};
use embassy_futures::select::{select, Either};
use embassy_net::dns::DnsQueryType;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Runner, Stack};
use embassy_time::{with_timeout, Duration, Timer};
use esp_radio::wifi::{Interface, WifiController};
use log::{info, warn};
use sntpc::NtpUdpSocket;
use sntpc_net_embassy::UdpSocketWrapper;

use crate::bus::{self, Input, ANSWER_CHUNK, NET, NTP, WATCH};
use crate::http::{self, Buffers, HttpError, Server};

/// Runs the IP stack.
#[embassy_executor::task]
pub async fn net_task(mut runner: Runner<'static, Interface>) -> ! {
    runner.run().await
}

/// Keeps the station connected and tells the door when the network is usable.
#[embassy_executor::task]
pub async fn wifi_task(mut wifi: WifiController<'static>, stack: Stack<'static>) -> ! {
    loop {
        match wifi.connect_async().await {
            Ok(_) => {
                stack.wait_config_up().await;
                if let Some(c) = stack.config_v4() {
                    info!("Wi-Fi up, address {}", c.address);
                }
                bus::input(Input::Network(true)).await;
                let _ = wifi.wait_for_disconnect_async().await;
                warn!("Wi-Fi lost");
                bus::input(Input::Network(false)).await;
            }
            Err(e) => warn!("Wi-Fi connect failed: {e:?}"),
        }
        Timer::after(Duration::from_secs(5)).await;
    }
}

/// Sends the controller's NTP packets and hands every answer back with its arrival time. One
/// socket for all servers: answers are matched to servers by address, and the core matches them
/// to its requests by their origin timestamp.
#[embassy_executor::task]
pub async fn ntp_task(stack: Stack<'static>) -> ! {
    let mut rx_meta = [PacketMetadata::EMPTY; 8];
    let mut rx_buf = [0u8; 512];
    let mut tx_meta = [PacketMetadata::EMPTY; 8];
    let mut tx_buf = [0u8; 512];
    let mut socket = UdpSocket::new(stack, &mut rx_meta, &mut rx_buf, &mut tx_meta, &mut tx_buf);
    if socket.bind(50_123).is_err() {
        warn!("NTP socket not bound");
    }
    let socket = UdpSocketWrapper::new(socket);
    let mut addrs: [Option<SocketAddr>; MAX_NTP_SERVERS] = [None; MAX_NTP_SERVERS];
    loop {
        let mut rx = [0u8; 128];
        match select(NTP.receive(), socket.recv_from(&mut rx)).await {
            Either::First((server, host, packet)) => {
                if usize::from(server) >= MAX_NTP_SERVERS {
                    continue;
                }
                let (name, port) = host_port(&host);
                match stack.dns_query(name, DnsQueryType::A).await {
                    Ok(found) if !found.is_empty() => {
                        let addr = SocketAddr::new(found[0].into(), port);
                        addrs[usize::from(server)] = Some(addr);
                        if socket.send_to(&packet, addr).await.is_err() {
                            warn!("NTP send to {name} failed");
                        }
                    }
                    _ => warn!("NTP server {name} did not resolve"),
                }
            }
            Either::Second(Ok((len, from))) => {
                let at = bus::now();
                let Some(server) = addrs.iter().position(|a| *a == Some(from)) else {
                    continue;
                };
                let mut packet = [0u8; PACKET_LEN];
                let len = len.min(PACKET_LEN);
                packet[..len].copy_from_slice(&rx[..len]);
                let server = server as u8;
                bus::input(Input::Ntp {
                    server,
                    packet,
                    len,
                    at,
                })
                .await;
            }
            Either::Second(Err(_)) => Timer::after(Duration::from_millis(100)).await,
        }
    }
}

/// `host` or `host:port` (port 123 by default). IPv6 literals are not supported here: the
/// door's stack resolves IPv4 only.
fn host_port(name: &str) -> (&str, u16) {
    match name.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().unwrap_or(123)),
        _ => (name, 123),
    }
}

/// One connection to the backend at a time: the IP stack, the server and the socket buffers
/// `B`. The firmware has two: the backend task's for the door's exchanges (one after another),
/// and the watch task's for the long poll, which runs beside them.
pub struct Lane<B: 'static> {
    /// The IP stack.
    pub stack: Stack<'static>,
    /// The server's address (`None`: the setting is unusable, logged at boot).
    pub server: Option<&'static Server>,
    /// Socket buffers.
    pub bufs: &'static mut B,
}

/// The backend task's buffers: a sync's answer streams a list or a firmware piece through them.
pub type BackendBuffers = Buffers<2048, 1024, 1024>;

/// The watch task's buffers: a watch is 64 bytes up and 56 down, so small ones do (the head
/// buffer holds the answer's head, which the server keeps short).
pub type WatchBuffers = Buffers<512, 512, 512>;

/// The backend task's lane.
pub type Backend = Lane<BackendBuffers>;

/// The watch task's lane.
pub type Watcher = Lane<WatchBuffers>;

/// Longest an exchange may take before it counts as failed.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// An exchange's connection is dropped after this long without a byte from the server.
const EXCHANGE_SILENCE: Duration = Duration::from_secs(10);
/// Longest a watch may take: above the server's longest hold (25 s) and what it takes to
/// connect, below the 60 s after which the door gives up on a watch and asks for another.
const WATCH_TIMEOUT: Duration = Duration::from_secs(50);
/// A watch's connection is silent while the server holds it: it is dropped only after this.
const WATCH_SILENCE: Duration = Duration::from_secs(45);

/// POSTs the door's exchanges and streams each answer back to the door task, which checks it
/// (this task only moves bytes).
#[embassy_executor::task]
pub async fn backend_task(mut b: Backend) -> ! {
    loop {
        crate::watchdog::network_beat();
        // Idle, it still beats; an exchange beats again when it ends (its timeout is shorter
        // than the silence the watchdog allows).
        let (exchange, body) =
            match select(NET.receive(), Timer::after(Duration::from_secs(2))).await {
                Either::First(job) => job,
                Either::Second(()) => continue,
            };
        b.carry(exchange, &body, EXCHANGE_TIMEOUT, EXCHANGE_SILENCE)
            .await;
    }
}

/// POSTs the door's watch (long poll) on a connection of its own, so that a sync or a check
/// need not wait while the server holds it, and hands the answer to the door task. Not watched
/// by the watchdog: [`WATCH_TIMEOUT`] bounds every watch, and the door asks again on its own
/// schedule.
#[embassy_executor::task]
pub async fn watch_task(mut w: Watcher) -> ! {
    loop {
        let (exchange, body) = WATCH.receive().await;
        w.carry(exchange, &body, WATCH_TIMEOUT, WATCH_SILENCE).await;
    }
}

impl<const RX: usize, const TX: usize, const HEAD: usize> Lane<Buffers<RX, TX, HEAD>> {
    /// Carries out one exchange within `limit` (its connection dropped after `silence` without
    /// a byte from the server); the answer, or the failure, goes to the door task.
    async fn carry(&mut self, exchange: Exchange, body: &[u8], limit: Duration, silence: Duration) {
        let outcome = with_timeout(limit, self.exchange(exchange, body, silence)).await;
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => {
                warn!("{}: {e:?}", exchange.path());
                Some(match e {
                    HttpError::Status(status) => Failure::Refused { status },
                    _ => Failure::Unreachable,
                })
            }
            Err(_) => {
                warn!("{}: timed out", exchange.path());
                Some(Failure::Unreachable)
            }
        };
        if let Some(f) = failure {
            bus::input(Input::Failed(exchange, f)).await;
        }
    }

    async fn exchange(
        &mut self,
        exchange: Exchange,
        body: &[u8],
        silence: Duration,
    ) -> Result<(), HttpError> {
        let server = self.server.ok_or(HttpError::Dns)?;
        let (mut ex, len) = http::post(
            self.stack,
            self.bufs,
            server,
            exchange.path(),
            body,
            silence,
        )
        .await?;
        let mut left = len;
        while left > 0 {
            let mut chunk: heapless::Vec<u8, ANSWER_CHUNK> = heapless::Vec::new();
            let n = left.min(ANSWER_CHUNK);
            let _ = chunk.resize(n, 0);
            ex.read_exact(&mut chunk).await?;
            left -= n;
            bus::input(Input::Answer(exchange, chunk)).await;
        }
        ex.close().await;
        bus::input(Input::AnswerEnd(exchange)).await;
        Ok(())
    }
}
