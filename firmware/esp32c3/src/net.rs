//! The door's network side in station mode: Wi-Fi, the IP stack, NTP over UDP and the device
//! protocol client over HTTP. These tasks carry packets; the core judges them (NTP answers are
//! validated by the controller, sync answers by `chronolock_core::protocol`).

use core::net::SocketAddr;

use chronolock_core::config::{HostName, MAX_NTP_SERVERS};
use chronolock_core::controller::NONCE_LEN;
use chronolock_core::ntp::PACKET_LEN;
use chronolock_core::protocol::{
    self, DeviceStatus, Enrolled, Enrolment, SyncRequestWriter, SyncResponse, WireEvent,
    CHECK_RESPONSE_LEN, ENROL_RESPONSE_LEN, SYNC_RESPONSE_LEN,
};
use ed25519_dalek::VerifyingKey;
use embassy_futures::select::{select, Either};
use embassy_net::dns::DnsQueryType;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Runner, Stack};
use embassy_time::{with_timeout, Duration, Timer};
use esp_hal::rng::Rng;
use esp_radio::wifi::{Interface, WifiController};
use log::{info, warn};
use sntpc::NtpUdpSocket;
use sntpc_net_embassy::UdpSocketWrapper;

use crate::bus::{self, Input, NetRequest, NET, NTP};
use crate::door::LIST_RAM;
use crate::http::{self, Buffers, HttpError, Server};
use crate::store::{SharedStore, StoreError, EVENT_MAX};

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
pub async fn ntp_task(
    stack: Stack<'static>,
    servers: heapless::Vec<HostName, MAX_NTP_SERVERS>,
) -> ! {
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
            Either::First((server, packet)) => {
                let Some(name) = servers.get(usize::from(server)) else {
                    continue;
                };
                match stack.dns_query(name, DnsQueryType::A).await {
                    Ok(found) if !found.is_empty() => {
                        let addr = SocketAddr::new(found[0].into(), 123);
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

/// Why a backend exchange failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetError {
    /// HTTP or the connection.
    Http(HttpError),
    /// The answer did not verify or parse.
    Protocol(protocol::ProtocolError),
    /// Flash (events or the list slot).
    Store(StoreError),
    /// The exchange took too long.
    Timeout,
    /// The door is not paired, or its pairing code was refused.
    NotPaired,
}

impl From<HttpError> for NetError {
    fn from(e: HttpError) -> Self {
        NetError::Http(e)
    }
}

impl From<protocol::ProtocolError> for NetError {
    fn from(e: protocol::ProtocolError) -> Self {
        NetError::Protocol(e)
    }
}

impl From<StoreError> for NetError {
    fn from(e: StoreError) -> Self {
        NetError::Store(e)
    }
}

/// What the backend task needs to talk to the server.
pub struct Backend {
    /// The IP stack.
    pub stack: Stack<'static>,
    /// Flash: the event outbox and the list slots.
    pub store: &'static SharedStore,
    /// The server's address (`None`: the setting is unusable, logged at boot).
    pub server: Option<Server>,
    /// The pairing code from setup, used once.
    pub pairing_code: heapless::String<16>,
    /// Door id and keys, once paired.
    pub identity: Option<Enrolled>,
    /// Socket buffers.
    pub bufs: &'static mut Buffers,
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    Rng::new().read(&mut out);
    out
}

/// Carries out the controller's sync and check requests, pairing first if needed.
#[embassy_executor::task]
pub async fn backend_task(mut b: Backend) -> ! {
    loop {
        let request = NET.receive().await;
        if b.identity.is_none() {
            match with_timeout(Duration::from_secs(20), b.enrol()).await {
                Ok(Ok(id)) => {
                    info!("paired as door {}", id.door_id);
                    if let Err(e) = b.store.lock().await.set_identity(&id).await {
                        warn!("identity not stored: {e:?}");
                    }
                    b.identity = Some(id);
                    bus::input(Input::Enrolled(id)).await;
                }
                Ok(Err(e)) => warn!("pairing failed: {e:?}"),
                Err(_) => warn!("pairing timed out"),
            }
        }
        match request {
            NetRequest::Sync { nonce, status } => {
                let r = with_timeout(Duration::from_secs(60), b.sync(nonce, &status)).await;
                let r = r.unwrap_or(Err(NetError::Timeout));
                if let Err(e) = r {
                    warn!("sync failed: {e:?}");
                    bus::input(Input::BackendFailed).await;
                }
            }
            NetRequest::Check {
                request,
                credential,
                wall_us,
            } => {
                let r = with_timeout(Duration::from_secs(5), b.check(&credential, wall_us)).await;
                let granted = match r.unwrap_or(Err(NetError::Timeout)) {
                    Ok(g) => Some(g),
                    Err(e) => {
                        warn!("check failed: {e:?}");
                        None
                    }
                };
                bus::input(Input::Conditional { request, granted }).await;
            }
        }
    }
}

impl Backend {
    async fn enrol(&mut self) -> Result<Enrolled, NetError> {
        let server = self.server.as_ref().ok_or(NetError::NotPaired)?;
        if self.pairing_code.is_empty() {
            return Err(NetError::NotPaired);
        }
        let enrolment = Enrolment::new(random(), random(), &self.pairing_code);
        let (mut ex, len) = http::post(
            self.stack,
            self.bufs,
            server,
            "/device/v1/enrol",
            &enrolment.request(),
        )
        .await?;
        if len < ENROL_RESPONSE_LEN {
            return Err(NetError::Http(HttpError::Truncated));
        }
        let mut answer = [0u8; ENROL_RESPONSE_LEN];
        ex.read_exact(&mut answer).await?;
        ex.close().await;
        Ok(enrolment.finish(&answer)?)
    }

    async fn sync(
        &mut self,
        nonce: [u8; NONCE_LEN],
        status: &DeviceStatus,
    ) -> Result<(), NetError> {
        let id = self.identity.ok_or(NetError::NotPaired)?;
        let server = self.server.as_ref().ok_or(NetError::NotPaired)?;
        let site = VerifyingKey::from_bytes(&id.site_key)
            .map_err(|_| NetError::Protocol(protocol::ProtocolError::BadSignature))?;

        // The request: status, then the oldest queued events that fit.
        let mut body = [0u8; 2048];
        let mut writer = SyncRequestWriter::new(&mut body, id.door_id, nonce, status)?;
        {
            let mut store = self.store.lock().await;
            // An entry that does not decode (a torn write) would block the queue: drop it.
            let mut corrupt_front = false;
            store
                .peek_events(|bytes| {
                    corrupt_front = WireEvent::read(bytes).is_err();
                    false
                })
                .await?;
            if corrupt_front {
                store.pop_events(1).await?;
            }
            store
                .peek_events(|bytes| match WireEvent::read(bytes) {
                    Ok((event, _)) => writer.push(&event).is_ok(),
                    Err(_) => false,
                })
                .await?;
        }
        let sent = writer.events();
        let n = writer.finish(&id.device_key);

        let (mut ex, len) =
            http::post(self.stack, self.bufs, server, "/device/v1/sync", &body[..n]).await?;
        if len < SYNC_RESPONSE_LEN {
            return Err(NetError::Http(HttpError::Truncated));
        }
        let mut fixed = [0u8; SYNC_RESPONSE_LEN];
        ex.read_exact(&mut fixed).await?;
        let at = bus::now();
        let answer = SyncResponse::parse(&fixed, &id.device_key, &site, id.door_id, &nonce)?;
        bus::input(Input::BackendTime(answer.time, at)).await;
        self.store
            .lock()
            .await
            .pop_events(answer.acked.min(sent))
            .await?;

        let list_len = answer.list_len as usize;
        if list_len > 0 && len.saturating_sub(SYNC_RESPONSE_LEN) >= list_len {
            if answer.list_len as usize > LIST_RAM {
                warn!(
                    "list of {} bytes is larger than the door holds",
                    answer.list_len
                );
            } else {
                let mut download = self.store.lock().await.begin_list(answer.list_len)?;
                let mut left = answer.list_len as usize;
                let mut chunk = [0u8; 512];
                while left > 0 {
                    let n = left.min(chunk.len());
                    ex.read_exact(&mut chunk[..n]).await?;
                    self.store
                        .lock()
                        .await
                        .write_list(&mut download, &chunk[..n])?;
                    left -= n;
                }
                bus::input(Input::ListStaged(download, answer)).await;
            }
        }
        ex.close().await;
        Ok(())
    }

    async fn check(
        &mut self,
        credential: &chronolock_core::controller::Credential,
        wall_us: Option<i64>,
    ) -> Result<bool, NetError> {
        let id = self.identity.ok_or(NetError::NotPaired)?;
        let server = self.server.as_ref().ok_or(NetError::NotPaired)?;
        let nonce = random();
        let request =
            protocol::check_request(id.door_id, nonce, wall_us, credential, &id.device_key);
        let (mut ex, len) =
            http::post(self.stack, self.bufs, server, "/device/v1/check", &request).await?;
        if len < CHECK_RESPONSE_LEN {
            return Err(NetError::Http(HttpError::Truncated));
        }
        let mut answer = [0u8; CHECK_RESPONSE_LEN];
        ex.read_exact(&mut answer).await?;
        ex.close().await;
        Ok(protocol::check_response(
            &answer,
            &id.device_key,
            id.door_id,
            &nonce,
        )?)
    }
}

/// Keeps an event no larger than the outbox takes (checked at compile time).
const _: () = assert!(protocol::EVENT_HEAD_LEN + protocol::MAX_EVENT_PAYLOAD <= EVENT_MAX);
