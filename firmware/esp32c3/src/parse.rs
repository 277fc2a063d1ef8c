//! The firmware's own parsing of untrusted text: the server address from the settings, the
//! backend's HTTP answer head, and the setup page's HTTP requests. No hardware here, so that
//! `firmware/host-tests` runs the same file on the host; nothing in it may panic on any input.

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
    /// Host name or IPv4 address.
    pub host: heapless::String<96>,
    /// TCP port (80 unless given).
    pub port: u16,
    /// Path before `/device/v1/…`, without a trailing slash (usually empty).
    pub prefix: heapless::String<64>,
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

/// Status code and `Content-Length` of a response head.
pub fn parse_head(head: &[u8]) -> Result<(u16, Option<usize>), HttpError> {
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

/// Largest request the setup server reads (head and form).
pub const REQUEST_MAX: usize = 2048;

/// What a request asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /`: the page.
    Page,
    /// `POST /setup` with this form body.
    Submit(&'a [u8]),
    /// Anything else: sent to the page (phones probing for a captive portal land there).
    Elsewhere,
}

/// Why a request was not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// Larger than [`REQUEST_MAX`].
    TooLarge,
    /// Not HTTP.
    Malformed,
    /// The connection failed or closed early.
    Io,
}

/// Splits a complete request into its route. `None` while more bytes are needed.
pub fn route(req: &[u8]) -> Option<Result<Route<'_>, RequestError>> {
    let end = req.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let Ok(head) = core::str::from_utf8(&req[..end]) else {
        return Some(Err(RequestError::Malformed));
    };
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let mut length = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                match value.trim().parse() {
                    Ok(n) => length = n,
                    Err(_) => return Some(Err(RequestError::Malformed)),
                }
            }
        }
    }
    let total = match end.checked_add(length) {
        Some(total) if total <= REQUEST_MAX => total,
        _ => return Some(Err(RequestError::TooLarge)),
    };
    if req.len() < total {
        return None;
    }
    let path = path.split('?').next().unwrap_or("");
    Some(Ok(match (method, path) {
        ("GET", "/") => Route::Page,
        ("POST", "/setup") => Route::Submit(&req[end..total]),
        _ => Route::Elsewhere,
    }))
}
