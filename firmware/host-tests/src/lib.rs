//! Host tests for the firmware's parsing of untrusted text. The file under test is the
//! firmware's own `src/parse.rs`, compiled here for the host unchanged.

#![no_std]

#[path = "../../esp32c3/src/parse.rs"]
pub mod parse;

#[path = "../../esp32c3/src/liveness.rs"]
pub mod liveness;

#[cfg(test)]
mod tests {
    extern crate std;

    use std::format;
    use std::vec::Vec;

    use super::parse::*;

    #[test]
    fn server_addresses() {
        let ok = |url: &str| Server::parse(url).expect(url);
        let s = ok("http://door.example.org");
        assert_eq!(
            (s.host.as_str(), s.port, s.prefix.as_str()),
            ("door.example.org", 80, "")
        );
        let s = ok("http://10.0.0.2:8080/");
        assert_eq!(
            (s.host.as_str(), s.port, s.prefix.as_str()),
            ("10.0.0.2", 8080, "")
        );
        let s = ok("http://access.local:3000/chronolock/");
        assert_eq!(
            (s.host.as_str(), s.port, s.prefix.as_str()),
            ("access.local", 3000, "/chronolock")
        );
        let table: &[(&str, HttpError)] = &[
            ("https://door.example.org", HttpError::TlsUnsupported),
            ("ftp://door.example.org", HttpError::BadUrl),
            ("door.example.org", HttpError::BadUrl),
            ("http://", HttpError::BadUrl),
            ("http://:8080", HttpError::BadUrl),
            ("http://host:port", HttpError::BadUrl),
            ("http://host:70000", HttpError::BadUrl),
        ];
        for (url, want) in table {
            assert_eq!(Server::parse(url).unwrap_err(), *want, "{url}");
        }
        let long = format!("http://{}", "a".repeat(200));
        assert_eq!(Server::parse(&long).unwrap_err(), HttpError::BadUrl);
    }

    #[test]
    fn answer_heads() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\
                     Content-Length: 196\r\n\r\n";
        assert_eq!(parse_head(head), Ok((200, Some(196))));
        assert_eq!(
            parse_head(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 22\r\n\r\n"),
            Ok((401, Some(22)))
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok((200, None))
        );
        assert_eq!(parse_head(b"garbage\r\n\r\n"), Err(HttpError::BadResponse));
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n"),
            Err(HttpError::BadResponse)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 \xff\r\n\r\n"),
            Err(HttpError::BadResponse)
        );
    }

    #[test]
    fn setup_requests() {
        assert_eq!(
            route(b"GET / HTTP/1.1\r\nHost: 192.168.4.1\r\n\r\n"),
            Some(Ok(Route::Page))
        );
        assert_eq!(route(b"GET /?x=1 HTTP/1.1\r\n\r\n"), Some(Ok(Route::Page)));
        // Phones probing for a captive portal are sent to the page.
        assert_eq!(
            route(b"GET /generate_204 HTTP/1.1\r\n\r\n"),
            Some(Ok(Route::Elsewhere))
        );
        let post = b"POST /setup HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                     Content-Length: 11\r\n\r\nssid=abc&x=";
        assert_eq!(route(post), Some(Ok(Route::Submit(b"ssid=abc&x="))));
        // Incomplete: the head, or the body, has not all arrived.
        assert_eq!(
            route(b"POST /setup HTTP/1.1\r\nContent-Length: 11\r\n"),
            None
        );
        assert_eq!(route(&post[..post.len() - 3]), None);
        // Larger than the server reads, however the length is written.
        let big = format!(
            "POST /setup HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            REQUEST_MAX
        );
        assert_eq!(route(big.as_bytes()), Some(Err(RequestError::TooLarge)));
        let huge = format!(
            "POST /setup HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            usize::MAX
        );
        assert_eq!(route(huge.as_bytes()), Some(Err(RequestError::TooLarge)));
        assert_eq!(
            route(b"POST /setup HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Some(Err(RequestError::Malformed))
        );
        assert_eq!(
            route(b"\xff\xfe\r\n\r\n"),
            Some(Err(RequestError::Malformed))
        );
    }

    /// A small deterministic generator: the same bytes on every run.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn no_input_panics() {
        let pieces: &[&[u8]] = &[
            b"GET ",
            b"POST ",
            b"/setup",
            b"/",
            b" HTTP/1.1",
            b"\r\n",
            b"\r\n\r\n",
            b"Content-Length:",
            b"99999999999999999999999",
            b"12",
            b":",
            b"\xff",
            b"http://",
            b"https://",
            b"host",
            b":80",
            b"/x/",
        ];
        let mut s = 7;
        for _ in 0..20_000 {
            let mut input = Vec::new();
            for _ in 0..(xorshift(&mut s) % 12) {
                let r = xorshift(&mut s);
                if r.is_multiple_of(4) {
                    input.push(r as u8);
                } else {
                    input.extend_from_slice(pieces[(r as usize >> 8) % pieces.len()]);
                }
            }
            let _ = route(&input);
            let _ = parse_head(&input);
            if let Ok(text) = core::str::from_utf8(&input) {
                let _ = Server::parse(text);
            }
        }
    }

    #[test]
    fn the_watchdog_is_fed_only_while_both_tasks_live() {
        use super::liveness::*;
        let both = Beats {
            door_ms: 100_000,
            network_ms: Some(100_000),
        };
        assert!(alive(both, 100_000 + DOOR_SILENCE_MS));
        assert!(!alive(both, 100_001 + DOOR_SILENCE_MS), "the door task hangs");
        let door_beating = Beats {
            door_ms: 170_000,
            ..both
        };
        assert!(alive(door_beating, 100_000 + NETWORK_SILENCE_MS));
        assert!(
            !alive(door_beating, 100_001 + NETWORK_SILENCE_MS),
            "the network task hangs"
        );
        let setup = Beats {
            door_ms: 500_000,
            network_ms: None,
        };
        assert!(alive(setup, 505_000), "no network task in setup mode");
        // A beat recorded a little after `now` was read does not count as silence.
        assert!(alive(both, 99_000));
    }
}
