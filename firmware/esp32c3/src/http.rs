//! A small HTTP/1.1 client over an embassy-net TCP socket: one POST per connection
//! (`Connection: close`), a `Content-Length` body read in pieces. Enough for the device
//! protocol, whose messages authenticate themselves (docs/protocol.md), so plain HTTP is used;
//! a server behind TLS is reached through an `http://` address of its local network side.

use core::fmt::Write as _;
use core::net::{IpAddr, Ipv4Addr};

use embassy_net::dns::DnsQueryType;
use embassy_net::tcp::TcpSocket;
use embassy_net::Stack;
use embassy_time::Duration;
use embedded_io_async::Write;

/// Why an exchange failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpError {
    /// The server address is not `http://host[:port][/path]`.
    BadUrl,
    /// `https://` addresses need TLS, which the door does not carry.
    TlsUnsupported,
    /// The host name did not resolve.
    Dns,
    /// Connecting, sending or receiving failed or timed out.
    Io,
    /// The answer's head is malformed or too long.
    BadResponse,
    /// The server answered with this status.
    Status(u16),
    /// The answer has no `Content-Length` (chunked answers are not read).
    NoLength,
    /// The body ended early.
    Truncated,
}

/// A parsed `http://host[:port][/prefix]`.
#[derive(Clone, Debug)]
pub struct Server {
    host: heapless::String<96>,
    port: u16,
    prefix: heapless::String<64>,
}

impl Server {
    /// Parses the server address from the settings.
    pub fn parse(url: &str) -> Result<Server, HttpError> {
        if url.starts_with("https://") {
            return Err(HttpError::TlsUnsupported);
        }
        let rest = url.strip_prefix("http://").ok_or(HttpError::BadUrl)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| HttpError::BadUrl)?),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err(HttpError::BadUrl);
        }
        Ok(Server {
            host: heapless::String::try_from(host).map_err(|_| HttpError::BadUrl)?,
            port,
            prefix: heapless::String::try_from(path).map_err(|_| HttpError::BadUrl)?,
        })
    }
}

/// One open exchange: the answer's body is read from it.
pub struct Exchange<'s, 'b> {
    socket: TcpSocket<'s>,
    /// Body bytes that arrived with the head.
    early: &'b [u8],
    remaining: usize,
}

/// Socket buffers for one exchange.
pub struct Buffers {
    rx: [u8; 2048],
    tx: [u8; 1024],
    head: [u8; 1024],
}

impl Buffers {
    /// Zeroed buffers.
    pub const fn new() -> Self {
        Buffers {
            rx: [0; 2048],
            tx: [0; 1024],
            head: [0; 1024],
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
/// [`Exchange::read`].
pub async fn post<'s>(
    stack: Stack<'s>,
    bufs: &'s mut Buffers,
    server: &Server,
    path: &str,
    body: &[u8],
) -> Result<(Exchange<'s, 's>, usize), HttpError> {
    let Buffers { rx, tx, head: buf } = bufs;
    let ip = resolve(stack, &server.host).await?;
    let mut socket = TcpSocket::new(stack, rx, tx);
    socket.set_timeout(Some(Duration::from_secs(10)));
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

/// Status code and `Content-Length` of a response head.
fn parse_head(head: &[u8]) -> Result<(u16, Option<usize>), HttpError> {
    let text = core::str::from_utf8(head).map_err(|_| HttpError::BadResponse)?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().ok_or(HttpError::BadResponse)?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(HttpError::BadResponse)?;
    let mut length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse().map_err(|_| HttpError::BadResponse)?);
            }
        }
    }
    Ok((status, length))
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
