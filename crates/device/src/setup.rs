//! The setup page a door serves from its own access point while in setup mode, and the form it
//! posts back.
//!
//! Seed 000's initial setup without network: the installer's phone joins the door's access
//! point, opens this page and presses one button. The page's script puts the phone's current
//! time (milliseconds since the Unix epoch, read at the moment of sending) into the form, together
//! with the Wi-Fi network, the server's address and the door's pairing code from the admin UI.
//! The shell hands the time to [`Controller::handle_phone_time`] and keeps the rest as settings.
//!
//! The form is `application/x-www-form-urlencoded`; [`parse_form`] decodes it without a heap and
//! names the field at fault when something is wrong.
//!
//! [`Controller::handle_phone_time`]: chronolock_core::Controller::handle_phone_time

use heapless::String;

/// The page (served as `text/html; charset=utf-8` at `/`). The form posts to `/setup`.
pub const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>chronolock door setup</title>
<style>
body{font-family:system-ui,sans-serif;max-width:28rem;margin:1rem auto;padding:0 1rem;color:#222}
label{display:block;margin-top:.8rem;font-weight:600}
input{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}
button{margin-top:1.2rem;width:100%;padding:.7rem;font-size:1.1rem}
.hint{color:#555;font-size:.9rem}
</style></head>
<body>
<h1>Door setup</h1>
<p class="hint">This phone's clock sets the door's clock when you save. Make sure it shows the right time.</p>
<p>Phone time: <strong id="now">(enable JavaScript)</strong></p>
<form id="setup" method="post" action="/setup">
<input type="hidden" name="time_ms" id="time_ms" value="">
<label for="ssid">Wi-Fi network</label>
<input id="ssid" name="ssid" maxlength="32" required autocomplete="off">
<label for="password">Wi-Fi password</label>
<input id="password" name="password" type="password" minlength="8" maxlength="64" placeholder="empty for an open network">
<label for="server">Server address</label>
<input id="server" name="server" type="url" maxlength="128" placeholder="https://access.example.org" required>
<label for="code">Pairing code</label>
<input id="code" name="code" maxlength="16" placeholder="XXXX-XXXX-XXXX" required autocomplete="off">
<label for="ntp">NTP servers (optional)</label>
<input id="ntp" name="ntp" maxlength="128" placeholder="pool.ntp.org time.cloudflare.com" autocomplete="off">
<p class="hint">Only for a site without internet: up to 4 names or addresses, separated by spaces. The server's site settings replace them at the first sync if it names others.</p>
<button type="submit" id="save">Save and set the time</button>
</form>
<script>
function show(){document.getElementById('now').textContent=new Date().toString();}
show();setInterval(show,1000);
document.getElementById('setup').addEventListener('submit',function(){
  document.getElementById('time_ms').value=String(Date.now());
});
</script>
</body></html>
"#;

/// What the installer entered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetupForm {
    /// The phone's time when the form was sent, milliseconds since the Unix epoch.
    pub phone_time_ms: u64,
    /// Wi-Fi network name.
    pub ssid: String<32>,
    /// Wi-Fi password (may be empty: an open network).
    pub password: String<64>,
    /// The backend's base URL, `http://` or `https://`.
    pub server_url: String<128>,
    /// The pairing code as shown in the admin UI (letters and digits, dashes optional).
    pub pairing_code: String<16>,
    /// NTP servers to ask, separated by spaces (empty: the door's own or the site's).
    pub ntp_servers: String<128>,
}

/// A form field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Field {
    /// `time_ms`.
    Time,
    /// `ssid`.
    Ssid,
    /// `password`.
    Password,
    /// `server`.
    Server,
    /// `code`.
    Code,
    /// `ntp`.
    Ntp,
}

impl Field {
    /// The field's name in the form.
    pub fn name(self) -> &'static str {
        match self {
            Field::Time => "time_ms",
            Field::Ssid => "ssid",
            Field::Password => "password",
            Field::Server => "server",
            Field::Code => "code",
            Field::Ntp => "ntp",
        }
    }
}

/// What is wrong with a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// Absent or empty.
    Missing,
    /// Longer than the door can store.
    TooLong,
    /// Not a number of milliseconds between 2020 and 2100 (the phone's script did not run, or
    /// its clock is far off).
    NotATime,
    /// Not an `http://` or `https://` address.
    NotAnAddress,
    /// Not 12 letters and digits.
    NotACode,
    /// A bad `%` escape or invalid UTF-8.
    BadEncoding,
    /// Not a WPA2 passphrase: 8 to 63 printable ASCII characters, or 64 hex digits (or empty
    /// for an open network).
    NotAPassphrase,
    /// Not 1 to 4 host names or addresses separated by spaces.
    NotNtpServers,
}

/// Why a form was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormError {
    /// The field at fault.
    pub field: Field,
    /// What is wrong with it.
    pub problem: Problem,
}

impl core::fmt::Display for FormError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let what = match self.problem {
            Problem::Missing => "is missing",
            Problem::TooLong => "is too long",
            Problem::NotATime => "is not the phone's current time (is JavaScript on?)",
            Problem::NotAnAddress => "must start with http:// or https://",
            Problem::NotACode => "must be 12 letters and digits, as shown in the admin UI",
            Problem::BadEncoding => "is not properly encoded",
            Problem::NotNtpServers => {
                "must be up to 4 host names or addresses (host or host:port), separated by spaces"
            }
            Problem::NotAPassphrase => {
                "must be 8 to 63 characters or 64 hex digits (empty for an open network)"
            }
        };
        write!(f, "{} {}", self.field.name(), what)
    }
}

/// 2020-01-01 and 2100-01-01 in Unix milliseconds: a phone outside is not telling the time.
const PLAUSIBLE_MS: core::ops::Range<u64> = 1_577_836_800_000..4_102_444_800_000;

/// Decodes and checks a posted setup form. Unknown fields are ignored; a repeated field keeps
/// its last value.
pub fn parse_form(body: &[u8]) -> Result<SetupForm, FormError> {
    let mut form = SetupForm::default();
    let mut time: String<20> = String::new();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        let field = match key {
            b"time_ms" => Field::Time,
            b"ssid" => Field::Ssid,
            b"password" => Field::Password,
            b"server" => Field::Server,
            b"code" => Field::Code,
            b"ntp" => Field::Ntp,
            _ => continue,
        };
        let err = |problem| FormError { field, problem };
        match field {
            Field::Time => decode_into(value, &mut time).map_err(err)?,
            Field::Ssid => decode_into(value, &mut form.ssid).map_err(err)?,
            Field::Password => decode_into(value, &mut form.password).map_err(err)?,
            Field::Server => decode_into(value, &mut form.server_url).map_err(err)?,
            Field::Code => decode_into(value, &mut form.pairing_code).map_err(err)?,
            Field::Ntp => decode_into(value, &mut form.ntp_servers).map_err(err)?,
        }
    }
    let err = |field, problem| Err(FormError { field, problem });
    let time = time.trim();
    if time.is_empty() {
        return err(Field::Time, Problem::Missing);
    }
    form.phone_time_ms = match time.parse::<u64>() {
        Ok(ms) if PLAUSIBLE_MS.contains(&ms) => ms,
        _ => return err(Field::Time, Problem::NotATime),
    };
    trim_in_place(&mut form.ssid);
    if form.ssid.is_empty() {
        return err(Field::Ssid, Problem::Missing);
    }
    if !is_passphrase(&form.password) {
        return err(Field::Password, Problem::NotAPassphrase);
    }
    trim_in_place(&mut form.ntp_servers);
    if !form.ntp_servers.is_empty()
        && chronolock_core::config::parse_ntp_servers(&form.ntp_servers).is_err()
    {
        return err(Field::Ntp, Problem::NotNtpServers);
    }
    trim_in_place(&mut form.server_url);
    let url = form.server_url.as_str();
    if url.is_empty() {
        return err(Field::Server, Problem::Missing);
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    if !rest.is_some_and(|host| !host.is_empty() && !host.contains(char::is_whitespace)) {
        return err(Field::Server, Problem::NotAnAddress);
    }
    trim_in_place(&mut form.pairing_code);
    let code = form.pairing_code.as_str();
    if code.is_empty() {
        return err(Field::Code, Problem::Missing);
    }
    let alnum = code.chars().filter(char::is_ascii_alphanumeric).count();
    if alnum != 12
        || code
            .chars()
            .any(|c| !c.is_ascii_alphanumeric() && c != '-' && c != ' ')
    {
        return err(Field::Code, Problem::NotACode);
    }
    Ok(form)
}

/// Whether `p` is a Wi-Fi password the door can use: empty (an open network), a WPA2
/// passphrase (8 to 63 printable ASCII characters) or a raw key (64 hex digits). Anything else
/// is refused at setup, so that a password never fails later and turns into an open network.
pub fn is_passphrase(p: &str) -> bool {
    let printable = p.bytes().all(|b| (0x20..=0x7e).contains(&b));
    p.is_empty()
        || (printable && (8..=63).contains(&p.len()))
        || (p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Writes the answer page: a confirmation, or the error and a way back to the form.
pub fn write_answer<W: core::fmt::Write>(
    out: &mut W,
    outcome: Result<&SetupForm, &FormError>,
) -> core::fmt::Result {
    out.write_str(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>chronolock door setup</title></head><body style=\"font-family:system-ui,sans-serif\">",
    )?;
    match outcome {
        Ok(form) => {
            out.write_str(
                "<h1 id=\"result\">Saved</h1><p>The door's clock is set. It will join <strong>",
            )?;
            write_escaped(out, &form.ssid)?;
            out.write_str("</strong> and pair with <strong>")?;
            write_escaped(out, &form.server_url)?;
            out.write_str("</strong>. You can close this page.</p>")?;
        }
        Err(e) => {
            out.write_str("<h1 id=\"result\">Not saved</h1><p id=\"error\">")?;
            write!(out, "{e}")?;
            out.write_str(".</p><p><a href=\"/\">Back to the form</a></p>")?;
        }
    }
    out.write_str("</body></html>")
}

fn write_escaped<W: core::fmt::Write>(out: &mut W, s: &str) -> core::fmt::Result {
    for c in s.chars() {
        match c {
            '<' => out.write_str("&lt;")?,
            '>' => out.write_str("&gt;")?,
            '&' => out.write_str("&amp;")?,
            '"' => out.write_str("&quot;")?,
            '\'' => out.write_str("&#39;")?,
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

fn trim_in_place<const N: usize>(s: &mut String<N>) {
    let trimmed = s.trim();
    if trimmed.len() != s.len() {
        let mut t: String<N> = String::new();
        // Cannot fail: a trimmed string is no longer than the original.
        let _ = t.push_str(trimmed);
        *s = t;
    }
}

/// Percent-decodes `value` (with `+` as space) into `out`, replacing what was there.
fn decode_into<const N: usize>(value: &[u8], out: &mut String<N>) -> Result<(), Problem> {
    let mut bytes: heapless::Vec<u8, N> = heapless::Vec::new();
    let mut i = 0;
    while i < value.len() {
        let b = match value[i] {
            b'+' => b' ',
            b'%' => {
                let hex = value.get(i + 1..i + 3).ok_or(Problem::BadEncoding)?;
                let hi = hex_digit(hex[0]).ok_or(Problem::BadEncoding)?;
                let lo = hex_digit(hex[1]).ok_or(Problem::BadEncoding)?;
                i += 2;
                hi << 4 | lo
            }
            b => b,
        };
        bytes.push(b).map_err(|_| Problem::TooLong)?;
        i += 1;
    }
    let text = core::str::from_utf8(&bytes).map_err(|_| Problem::BadEncoding)?;
    out.clear();
    out.push_str(text).map_err(|_| Problem::TooLong)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::String as StdString;

    use proptest::prelude::*;

    use super::*;

    const GOOD: &[u8] = b"time_ms=1767225600123&ssid=Maker+Space%20%C3%A9&password=p%26ss%3D1234\
        &server=https%3A%2F%2Faccess.example.org&code=abcd-efgh-jkmn";

    #[test]
    fn decodes_a_phone_submission() {
        let form = parse_form(GOOD).expect("valid");
        assert_eq!(form.phone_time_ms, 1_767_225_600_123);
        assert_eq!(form.ssid.as_str(), "Maker Space é");
        assert_eq!(form.password.as_str(), "p&ss=1234");
        assert_eq!(form.server_url.as_str(), "https://access.example.org");
        assert_eq!(form.pairing_code.as_str(), "abcd-efgh-jkmn");
    }

    fn problem(body: &str) -> (Field, Problem) {
        let e = parse_form(body.as_bytes()).expect_err("refused");
        (e.field, e.problem)
    }

    #[test]
    fn names_the_field_at_fault() {
        let base = "time_ms=1767225600123&ssid=net&server=http://10.0.0.2:8080&code=ABCDEFGHJKMN";
        assert!(parse_form(base.as_bytes()).is_ok());
        let cases = [
            (
                "ssid=net&server=http://x&code=ABCDEFGHJKMN",
                Field::Time,
                Problem::Missing,
            ),
            (
                "time_ms=&ssid=net&server=http://x&code=ABCDEFGHJKMN",
                Field::Time,
                Problem::Missing,
            ),
            (
                "time_ms=12&ssid=net&server=http://x&code=ABCDEFGHJKMN",
                Field::Time,
                Problem::NotATime,
            ),
            (
                "time_ms=soon&ssid=net&server=http://x&code=ABCDEFGHJKMN",
                Field::Time,
                Problem::NotATime,
            ),
            (
                "time_ms=1767225600123&server=http://x&code=ABCDEFGHJKMN",
                Field::Ssid,
                Problem::Missing,
            ),
            (
                "time_ms=1767225600123&ssid=+++&server=http://x&code=ABCDEFGHJKMN",
                Field::Ssid,
                Problem::Missing,
            ),
            (
                "time_ms=1767225600123&ssid=net&server=ftp://x&code=ABCDEFGHJKMN",
                Field::Server,
                Problem::NotAnAddress,
            ),
            (
                "time_ms=1767225600123&ssid=net&server=http://&code=ABCDEFGHJKMN",
                Field::Server,
                Problem::NotAnAddress,
            ),
            (
                "time_ms=1767225600123&ssid=net&code=ABCDEFGHJKMN",
                Field::Server,
                Problem::Missing,
            ),
            (
                "time_ms=1767225600123&ssid=net&server=http://x&code=ABC",
                Field::Code,
                Problem::NotACode,
            ),
            (
                "time_ms=1767225600123&ssid=net&server=http://x&code=ABCD%3CEFGHJKMN",
                Field::Code,
                Problem::NotACode,
            ),
            (
                "time_ms=1767225600123&ssid=net&server=http://x",
                Field::Code,
                Problem::Missing,
            ),
            (
                "time_ms=1767225600123&ssid=net&server=http://x&code=ABCDEFGHJKMN&ntp=a+b+c+d+e",
                Field::Ntp,
                Problem::NotNtpServers,
            ),
            (
                "time_ms=1767225600123&ssid=net&password=short&server=http://x&code=ABCDEFGHJKMN",
                Field::Password,
                Problem::NotAPassphrase,
            ),
            (
                "time_ms=1767225600123&ssid=net&password=caf%C3%A9+au+lait&server=http://x&code=ABCDEFGHJKMN",
                Field::Password,
                Problem::NotAPassphrase,
            ),
            (
                "time_ms=1767225600123&ssid=n%zzt&server=http://x&code=ABCDEFGHJKMN",
                Field::Ssid,
                Problem::BadEncoding,
            ),
            (
                "time_ms=1767225600123&ssid=n%e9t&server=http://x&code=ABCDEFGHJKMN",
                Field::Ssid,
                Problem::BadEncoding,
            ),
            (
                "time_ms=1767225600123&ssid=net%&server=http://x&code=ABCDEFGHJKMN",
                Field::Ssid,
                Problem::BadEncoding,
            ),
        ];
        for (body, field, p) in cases {
            assert_eq!(problem(body), (field, p), "{body}");
        }
        let long = "x".repeat(33);
        let body =
            std::format!("time_ms=1767225600123&ssid={long}&server=http://x&code=ABCDEFGHJKMN");
        assert_eq!(problem(&body), (Field::Ssid, Problem::TooLong));
    }

    #[test]
    fn answers_in_plain_words_and_escapes_what_was_typed() {
        let mut form = parse_form(GOOD).expect("valid");
        form.ssid = String::try_from("<b>net</b>").expect("fits");
        let mut page = StdString::new();
        write_answer(&mut page, Ok(&form)).expect("write");
        assert!(page.contains("&lt;b&gt;net&lt;/b&gt;"));
        assert!(!page.contains("<b>net"));
        let e = parse_form(b"ssid=x").expect_err("refused");
        let mut page = StdString::new();
        write_answer(&mut page, Err(&e)).expect("write");
        assert!(page.contains("time_ms is missing"), "{page}");
    }

    #[test]
    fn the_page_posts_every_field_the_parser_reads() {
        for name in ["time_ms", "ssid", "password", "server", "code"] {
            assert!(PAGE.contains(&std::format!("name=\"{name}\"")), "{name}");
        }
        assert!(PAGE.contains("action=\"/setup\""));
    }

    proptest! {
        #[test]
        fn any_body_is_an_answer_never_a_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_form(&body);
        }
    }

    #[test]
    fn wifi_passwords_are_passphrases_or_nothing() {
        assert!(is_passphrase(""), "an open network");
        assert!(is_passphrase("12345678"));
        assert!(is_passphrase(&"x".repeat(63)));
        assert!(
            is_passphrase(&"aB09".repeat(16)),
            "64 hex digits: a raw key"
        );
        assert!(!is_passphrase("1234567"), "too short for WPA2");
        assert!(
            !is_passphrase(&"x".repeat(64)),
            "64 characters that are not hex"
        );
        assert!(!is_passphrase("caf\u{e9} au lait"), "not ASCII");
        assert!(!is_passphrase("tab\there1"), "not printable");
    }
}
