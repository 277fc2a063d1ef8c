//! A small HTTP/1.1 client over an embassy-net TCP socket: one POST per connection
//! (`Connection: close`), a `Content-Length` body read in pieces. Enough for the device
//! protocol, whose messages authenticate themselves (docs/protocol.md), so plain HTTP is used;
//! a server behind TLS is reached through an `http://` address of its local network side.
//! Each caller brings its own [`Buffers`], sized for what it carries (the exchanges, the watch).

use core::fmt::Write as _;
use core::net::{IpAddr, Ipv4Addr};

use embassy_net::dns::DnsQueryType;
use embassy_net::tcp::TcpSocket;
use embassy_net::Stack;
use embassy_time::Duration;
use embedded_io_async::Write;

pub use crate::parse::{parse_head, HttpError, Server};

/// One open exchange: the answer's body is read from it.
pub struct Exchange<'s, 'b> {
    socket: TcpSocket<'s>,
    /// Body bytes that arrived with the head.
    early: &'b [u8],
    remaining: usize,
}

/// Buffers for one connection: the socket's receive and transmit buffers, and room for the
/// answer's head (with any body bytes that arrive with it).
pub struct Buffers<const RX: usize, const TX: usize, const HEAD: usize> {
    rx: [u8; RX],
    tx: [u8; TX],
    head: [u8; HEAD],
}

impl<const RX: usize, const TX: usize, const HEAD: usize> Buffers<RX, TX, HEAD> {
    /// Zeroed buffers.
    pub const fn new() -> Self {
        Buffers {
            rx: [0; RX],
            tx: [0; TX],
            head: [0; HEAD],
        }
    }
}

async fn resolve(stack: Stack<'_>, host: &str) -> Result<IpAddr, HttpError> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(IpAddr::V4(ip));
    }
    let addrs = stack
        .dns_query(host, DnsQueryType::A)
        .await
        .map_err(|_| HttpError::Dns)?;
    addrs.first().map(|a| (*a).into()).ok_or(HttpError::Dns)
}

/// POSTs `body` to `server` + `path` and reads the answer's head; the body follows through
/// [`Exchange::read_exact`]. The connection is dropped when nothing arrives from the server for
/// `silence` (while connecting, and while waiting for the answer: a long poll needs more than
/// the server's longest wait).
pub async fn post<'s, const RX: usize, const TX: usize, const HEAD: usize>(
    stack: Stack<'s>,
    bufs: &'s mut Buffers<RX, TX, HEAD>,
    server: &Server,
    path: &str,
    body: &[u8],
    silence: Duration,
) -> Result<(Exchange<'s, 's>, usize), HttpError> {
    let Buffers { rx, tx, head: buf } = bufs;
    let ip = resolve(stack, &server.host).await?;
    let mut socket = TcpSocket::new(stack, rx, tx);
    socket.set_timeout(Some(silence));
    socket
        .connect((ip, server.port))
        .await
        .map_err(|_| HttpError::Io)?;
    let mut head: heapless::String<256> = heapless::String::new();
    write!(
        head,
        "POST {}{} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        server.prefix,
        path,
        server.host,
        body.len()
    )
    .map_err(|_| HttpError::BadUrl)?;
    socket
        .write_all(head.as_bytes())
        .await
        .map_err(|_| HttpError::Io)?;
    socket.write_all(body).await.map_err(|_| HttpError::Io)?;
    socket.flush().await.map_err(|_| HttpError::Io)?;

    // Read until the end of the head.
    let mut n = 0;
    let end = loop {
        if n == buf.len() {
            return Err(HttpError::BadResponse);
        }
        let got = socket
            .read(&mut buf[n..])
            .await
            .map_err(|_| HttpError::Io)?;
        if got == 0 {
            return Err(HttpError::BadResponse);
        }
        n += got;
        if let Some(i) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let (status, length) = parse_head(&buf[..end])?;
    if status != 200 {
        return Err(HttpError::Status(status));
    }
    let length = length.ok_or(HttpError::NoLength)?;
    let early_len = (n - end).min(length);
    let head_buf: &'s [u8] = &buf[end..end + early_len];
    Ok((
        Exchange {
            socket,
            early: head_buf,
            remaining: length - early_len,
        },
        length,
    ))
}

impl Exchange<'_, '_> {
    /// Fills `out` with the next body bytes; fails if the body ends first.
    pub async fn read_exact(&mut self, mut out: &mut [u8]) -> Result<(), HttpError> {
        if !self.early.is_empty() {
            let n = self.early.len().min(out.len());
            out[..n].copy_from_slice(&self.early[..n]);
            self.early = &self.early[n..];
            out = &mut out[n..];
        }
        if out.len() > self.remaining {
            return Err(HttpError::Truncated);
        }
        while !out.is_empty() {
            let got = self.socket.read(out).await.map_err(|_| HttpError::Io)?;
            if got == 0 {
                return Err(HttpError::Truncated);
            }
            self.remaining -= got;
            out = &mut out[got..];
        }
        Ok(())
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        self.socket.close();
        let _ = self.socket.flush().await;
        self.socket.abort();
    }
}
