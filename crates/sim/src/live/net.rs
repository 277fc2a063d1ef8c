//! A virtual door's network exchanges: SNTP over real UDP with `sntpc`, and the device protocol
//! over real HTTP. Each runs as its own task and reports back to the door; none decides
//! anything: the answers go to the core as they arrived.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chronolock_core::controller::Credential;
use chronolock_core::controller::NONCE_LEN;
use chronolock_core::ntp::{NtpRequest, PACKET_LEN};
use chronolock_core::protocol::{
    self, DeviceStatus, Enrolled, Enrolment, SyncRequestWriter, SyncResponse, WireEvent,
    EVENT_HEAD_LEN, MAX_EVENT_PAYLOAD, SYNC_REQUEST_FIXED, SYNC_RESPONSE_LEN,
};
use chronolock_core::Instant;
use chronolock_device::slots::{Download, Slots};
use ed25519_dalek::VerifyingKey;
use sntpc::{NtpContext, NtpTimestampGenerator, NtpUdpSocket};
use tokio::net::UdpSocket;

use super::store::FileFlash;

/// Events sent in one sync at most; the rest wait for the next.
pub const EVENTS_PER_SYNC: usize = 64;

/// NTP seconds between 1900 and 1970.
const NTP_UNIX_DELTA: u64 = 2_208_988_800;

/// The core's cookie as sntpc's transmit time: sntpc writes exactly these seconds and
/// microseconds on the wire, so the answer echoes the core's cookie.
#[derive(Clone, Copy)]
struct CookieTime {
    unix_secs: u64,
    micros: u32,
}

impl NtpTimestampGenerator for CookieTime {
    fn init(&mut self) {}

    fn timestamp_sec(&self) -> u64 {
        self.unix_secs
    }

    fn timestamp_subsec_micros(&self) -> u32 {
        self.micros
    }
}

/// A UDP socket that keeps the raw answer and the moment it arrived for the core.
struct Capturing {
    socket: UdpSocket,
    server: SocketAddr,
    answer: Mutex<Option<([u8; PACKET_LEN], tokio::time::Instant)>>,
}

impl NtpUdpSocket for Capturing {
    async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> sntpc::Result<usize> {
        self.socket
            .send_to(buf, addr)
            .await
            .map_err(|_| sntpc::Error::Network)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> sntpc::Result<(usize, SocketAddr)> {
        let (n, src) = self
            .socket
            .recv_from(buf)
            .await
            .map_err(|_| sntpc::Error::Network)?;
        let at = tokio::time::Instant::now();
        if src == self.server && n >= PACKET_LEN {
            let mut packet = [0u8; PACKET_LEN];
            packet.copy_from_slice(&buf[..PACKET_LEN]);
            if let Ok(mut slot) = self.answer.lock() {
                *slot = Some((packet, at));
            }
        }
        Ok((n, src))
    }
}

/// Sends the core's request to `server` with sntpc and waits up to `timeout` for the answer.
/// Returns the raw answer and when it arrived; sntpc's own verdict on it is only advice (the
/// core judges every answer itself, kiss-o'-death included).
pub async fn ntp_exchange(
    server: SocketAddr,
    request: [u8; PACKET_LEN],
    timeout: Duration,
) -> Result<([u8; PACKET_LEN], tokio::time::Instant), String> {
    let mut cookie = [0u8; 8];
    cookie.copy_from_slice(&request[40..48]);
    let (ntp_secs, micros) = NtpRequest {
        cookie: u64::from_be_bytes(cookie),
        sent_at: Instant::ZERO,
    }
    .cookie_parts();
    let stamp = CookieTime {
        unix_secs: u64::from(ntp_secs).wrapping_sub(NTP_UNIX_DELTA),
        micros,
    };
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(|_| "bad bind address".to_string())?;
    let socket = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    let capturing = Capturing {
        socket,
        server,
        answer: Mutex::new(None),
    };
    let context = NtpContext::new(stamp);
    let exchange = async {
        let sent = sntpc::sntp_send_request(server, &capturing, context)
            .await
            .map_err(|e| format!("send: {e:?}"))?;
        // A stray datagram from elsewhere is not an answer: keep listening until the deadline.
        loop {
            let verdict = sntpc::sntp_process_response(server, &capturing, context, sent).await;
            if capturing
                .answer
                .lock()
                .map(|a| a.is_some())
                .unwrap_or(false)
            {
                if let Err(e) = verdict {
                    tracing::debug!("sntpc finds fault with the answer: {e:?}");
                }
                return Ok(());
            }
            if matches!(verdict, Err(sntpc::Error::Network)) {
                return Err("receive failed".to_string());
            }
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Err("no answer".into()),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => capturing
            .answer
            .lock()
            .ok()
            .and_then(|a| *a)
            .ok_or_else(|| "no answer".into()),
    }
}

/// An HTTP client for the device protocol.
#[derive(Clone)]
pub struct Backend {
    http: reqwest::Client,
    base: String,
}

impl Backend {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> Result<Backend, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Backend {
            http,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// Whether this client talks to the server at `base`.
    pub fn serves(&self, base: &str) -> bool {
        self.base == base.trim_end_matches('/')
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> Result<reqwest::Response, String> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{path}: {}", without_url(&e)))?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            return Err(format!("{path}: {status}: {}", text.trim()));
        }
        Ok(response)
    }

    /// Pairs with a one-time code.
    pub async fn enrol(&self, code: &str) -> Result<Enrolled, String> {
        let enrolment = Enrolment::new(rand::random(), rand::random(), code);
        let body = self
            .post("/device/v1/enrol", enrolment.request().to_vec())
            .await?
            .bytes()
            .await
            .map_err(|e| e.to_string())?;
        enrolment
            .finish(&body)
            .map_err(|e| format!("enrolment answer refused: {e:?}"))
    }

    /// One sync exchange. A list that follows the answer is streamed into the spare flash slot
    /// as it arrives; `cut_after_first_chunk` simulates the power failing during that download.
    pub async fn sync(&self, req: SyncJob) -> SyncOutcome {
        match self.sync_inner(req).await {
            Ok(o) => o,
            Err(e) => SyncOutcome::Failed(e),
        }
    }

    async fn sync_inner(&self, req: SyncJob) -> Result<SyncOutcome, String> {
        let SyncJob {
            credential,
            nonce,
            status,
            events,
            slots,
            cut_after_first_chunk,
        } = req;
        let device_key = credential.device_key;
        let mut buf =
            vec![0u8; SYNC_REQUEST_FIXED + EVENTS_PER_SYNC * (EVENT_HEAD_LEN + MAX_EVENT_PAYLOAD)];
        let mut w = SyncRequestWriter::new(&mut buf, credential.door_id, nonce, &status)
            .map_err(|e| format!("{e:?}"))?;
        for e in events.iter().take(EVENTS_PER_SYNC) {
            if w.push(e).is_err() {
                break;
            }
        }
        let sent = w.events();
        let n = w.finish(&device_key);
        buf.truncate(n);
        let mut response = self.post("/device/v1/sync", buf).await?;
        let mut fixed = Vec::with_capacity(SYNC_RESPONSE_LEN);
        let mut rest = Vec::new();
        while fixed.len() < SYNC_RESPONSE_LEN {
            let chunk = response
                .chunk()
                .await
                .map_err(|e| without_url(&e))?
                .ok_or("answer ends early")?;
            let take = (SYNC_RESPONSE_LEN - fixed.len()).min(chunk.len());
            fixed.extend_from_slice(&chunk[..take]);
            rest.extend_from_slice(&chunk[take..]);
        }
        let site = VerifyingKey::from_bytes(&credential.site_key)
            .map_err(|_| "stored site key is not a key")?;
        let answer = SyncResponse::parse(&fixed, &device_key, &site, credential.door_id, &nonce)
            .map_err(|e| format!("answer refused: {e:?}"))?;
        if answer.list_len == 0 {
            return Ok(SyncOutcome::Done {
                answer,
                sent,
                download: None,
            });
        }
        // Stream the list into the spare slot while it arrives.
        let mut download = {
            let mut s = slots.lock().map_err(|_| "flash lock poisoned")?;
            s.begin(answer.list_len).map_err(|e| e.to_string())?
        };
        let mut first = true;
        let mut pending = rest;
        loop {
            if !pending.is_empty() {
                let mut s = slots.lock().map_err(|_| "flash lock poisoned")?;
                s.write(&mut download, &pending)
                    .map_err(|e| format!("list: {e}"))?;
                if first && cut_after_first_chunk.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    return Ok(SyncOutcome::PowerCut {
                        written: download.written(),
                        len: download.len(),
                    });
                }
                first = false;
            }
            match response.chunk().await.map_err(|e| without_url(&e))? {
                Some(chunk) => pending = chunk.to_vec(),
                None => break,
            }
        }
        if download.written() != download.len() {
            return Err(format!(
                "list ends after {} of {} bytes",
                download.written(),
                download.len()
            ));
        }
        Ok(SyncOutcome::Done {
            answer,
            sent,
            download: Some(download),
        })
    }

    /// Asks about a CONDITIONAL credential.
    pub async fn check(
        &self,
        credential: &StoredCredential,
        wall_us: Option<i64>,
        who: Credential,
    ) -> Result<bool, String> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let body = protocol::check_request(
            credential.door_id,
            nonce,
            wall_us,
            &who,
            &credential.device_key,
        );
        let answer = self
            .post("/device/v1/check", body.to_vec())
            .await?
            .bytes()
            .await
            .map_err(|e| without_url(&e))?;
        protocol::check_response(&answer, &credential.device_key, credential.door_id, &nonce)
            .map_err(|e| format!("check answer refused: {e:?}"))
    }
}

fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(src) = std::error::Error::source(e) {
        s = format!("{s}: {src}");
    }
    s
}

/// The door's identity, decoded.
#[derive(Clone, Copy, Debug)]
pub struct StoredCredential {
    /// Door id at the backend.
    pub door_id: u64,
    /// Shared key.
    pub device_key: [u8; 32],
    /// Site public key.
    pub site_key: [u8; 32],
}

/// What one sync sends.
pub struct SyncJob {
    /// Who the door is.
    pub credential: StoredCredential,
    /// The core's nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The door's status.
    pub status: DeviceStatus,
    /// Events waiting, oldest first.
    pub events: Vec<WireEvent>,
    /// The flash slots the list goes to.
    pub slots: Arc<Mutex<Slots<FileFlash>>>,
    /// Fault injection: when set, the power fails after the first chunk of a list (and the
    /// flag is cleared).
    pub cut_after_first_chunk: Arc<std::sync::atomic::AtomicBool>,
}

/// How a sync ended.
pub enum SyncOutcome {
    /// The answer checked out; a new list, if any, is staged (not yet checked by the core).
    Done {
        /// The answer's fixed part.
        answer: SyncResponse,
        /// Events sent.
        sent: u16,
        /// The staged list.
        download: Option<Download>,
    },
    /// The injected power failure struck mid-download.
    PowerCut {
        /// Bytes written before it.
        written: u32,
        /// Bytes announced.
        len: u32,
    },
    /// No usable answer.
    Failed(String),
}
