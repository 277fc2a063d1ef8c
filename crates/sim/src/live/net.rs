//! A virtual door's network exchanges: SNTP over real UDP with `sntpc`, and the device protocol
//! over real HTTP. Each runs as its own task and reports back to the door; none decides
//! anything: the answers go to the shared door as they arrived.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use chronolock_core::ntp::{NtpRequest, PACKET_LEN};
use chronolock_core::Instant;
use chronolock_device::door::Failure;
use sntpc::{NtpContext, NtpTimestampGenerator, NtpUdpSocket};
use tokio::net::UdpSocket;

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

/// An HTTP client for the device protocol: it only carries bytes; the shared door writes every
/// request and judges every answer.
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

    /// POSTs `body` to `path`; the answer streams from the response. An error status is a
    /// refusal, with the server's text.
    pub async fn post(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, (Failure, String)> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/octet-stream")
            .body(body);
        if path.ends_with("/watch") {
            // The server holds a watch for up to 25 s before it answers "nothing new".
            request = request.timeout(Duration::from_secs(45));
        }
        let response = request
            .send()
            .await
            .map_err(|e| (Failure::Unreachable, format!("{path}: {}", without_url(&e))))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err((
                Failure::Refused {
                    status: status.as_u16(),
                },
                format!("{path}: {status}: {}", text.trim()),
            ));
        }
        Ok(response)
    }
}

/// An error without the URL reqwest puts in front (the path is named instead).
pub fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(src) = std::error::Error::source(e) {
        s = format!("{s}: {src}");
    }
    s
}
