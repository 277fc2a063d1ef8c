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
//! The access point itself is WPA2 with a password of its own per door, made when the door is
//! first flashed (`chronolock firmware setup-secret`, run by `scripts/flash.sh`) and kept in the
//! door's `setup` partition. [`encode_setup_secret`] and [`decode_setup_secret`] are that
//! partition's format, [`setup_ssid`] the network's name derived from the password (so the
//! flashing machine can print the network before it knows the board), and [`write_wifi_qr`] the
//! QR code text a phone scans to join it. The firmware and the command share them, so they
//! always agree.
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

// ----- the setup access point's password ------------------------------------------------------

/// Bytes of a setup secret record at the start of the `setup` partition:
///
/// ```text
/// 0..4    "CLSU"
/// 4       format version (1)
/// 5       password length L, 16 to 63
/// 6..69   the password (L printable ASCII bytes), zero-padded to 63 bytes
/// 69..73  CRC-32 (ISO-HDLC) of bytes 0..69, little endian
/// ```
pub const SECRET_LEN: usize = 73;

/// Size of the `setup` partition (one flash sector); its image is the record padded with `0xFF`,
/// the erased state, so that writing the image leaves the rest of the sector as erased flash.
pub const SETUP_PARTITION_SIZE: usize = 0x1000;

/// Shortest setup password accepted. Longer than WPA2's 8: the password guards a network that
/// configures a door, and it is only ever typed from a QR code or copied from a file.
pub const PASSWORD_MIN: usize = 16;

/// Longest setup password (WPA2's limit for a passphrase).
pub const PASSWORD_MAX: usize = 63;

/// Characters of generated passwords: lowercase letters and digits without `0`, `o`, `1` and
/// `l`, which read alike when the password is copied by hand. 32 of them: 5 bits each.
pub const PASSWORD_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// Characters in a generated password: 100 bits.
pub const GENERATED_LEN: usize = 20;

/// Longest QR text [`write_wifi_qr`] writes for a 32-byte SSID and a 63-character password,
/// every character escaped.
pub const WIFI_QR_MAX: usize = 13 + 2 * 32 + 3 + 2 * PASSWORD_MAX + 2;

const SECRET_MAGIC: [u8; 4] = *b"CLSU";
const SECRET_VERSION: u8 = 1;
/// Where the CRC starts: everything before it is covered.
const SECRET_CRC_AT: usize = SECRET_LEN - 4;

static SECRET_CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Why a `setup` partition holds no usable password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetupSecretError {
    /// Fewer bytes than a record ([`SECRET_LEN`]).
    Truncated,
    /// Erased flash (all `0xFF`): the door was flashed without its secret.
    Erased,
    /// Something other than a setup secret is written there (no `CLSU`).
    BadMagic,
    /// A record of a format version this code does not know.
    UnsupportedVersion(u8),
    /// The CRC does not match: the record is damaged.
    BadCrc,
    /// The password is not 16 to 63 printable ASCII characters.
    NotAPassphrase,
}

impl core::fmt::Display for SetupSecretError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SetupSecretError::Truncated => f.write_str("shorter than a setup secret record"),
            SetupSecretError::Erased => {
                f.write_str("erased: no setup secret was written when the door was flashed")
            }
            SetupSecretError::BadMagic => f.write_str("not a setup secret (no CLSU header)"),
            SetupSecretError::UnsupportedVersion(v) => {
                write!(f, "setup secret format version {v} is not known")
            }
            SetupSecretError::BadCrc => f.write_str("setup secret damaged (CRC mismatch)"),
            SetupSecretError::NotAPassphrase => {
                f.write_str("setup password is not 16 to 63 printable ASCII characters")
            }
        }
    }
}

/// Whether `p` can be a setup password: a WPA2 passphrase ([`is_passphrase`]) of
/// [`PASSWORD_MIN`] to [`PASSWORD_MAX`] characters.
pub fn is_setup_password(p: &str) -> bool {
    (PASSWORD_MIN..=PASSWORD_MAX).contains(&p.len()) && is_passphrase(p)
}

/// A new setup password: [`GENERATED_LEN`] characters of [`PASSWORD_ALPHABET`], each from 5
/// bits of `rng` (32 characters: no modulo bias).
pub fn generate_password<R: rand_core::RngCore + rand_core::CryptoRng>(
    rng: &mut R,
) -> String<PASSWORD_MAX> {
    let mut bytes = [0u8; GENERATED_LEN];
    rng.fill_bytes(&mut bytes);
    let mut password = String::new();
    for b in bytes {
        let c = PASSWORD_ALPHABET[usize::from(b & 31)];
        // Cannot fail: GENERATED_LEN is below the capacity.
        let _ = password.push(char::from(c));
    }
    password
}

/// The record for `password`, to write at the start of the `setup` partition.
pub fn encode_setup_secret(password: &str) -> Result<[u8; SECRET_LEN], SetupSecretError> {
    if !is_setup_password(password) {
        return Err(SetupSecretError::NotAPassphrase);
    }
    let mut record = [0u8; SECRET_LEN];
    record[..4].copy_from_slice(&SECRET_MAGIC);
    record[4] = SECRET_VERSION;
    // At most 63: checked above.
    record[5] = password.len() as u8;
    record[6..6 + password.len()].copy_from_slice(password.as_bytes());
    let crc = SECRET_CRC.checksum(&record[..SECRET_CRC_AT]);
    record[SECRET_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    Ok(record)
}

/// The password in a `setup` partition's first bytes (more than [`SECRET_LEN`] are ignored),
/// or what is wrong with them.
pub fn decode_setup_secret(bytes: &[u8]) -> Result<String<PASSWORD_MAX>, SetupSecretError> {
    let record = bytes.get(..SECRET_LEN).ok_or(SetupSecretError::Truncated)?;
    if record.iter().all(|&b| b == 0xFF) {
        return Err(SetupSecretError::Erased);
    }
    if record[..4] != SECRET_MAGIC {
        return Err(SetupSecretError::BadMagic);
    }
    if record[4] != SECRET_VERSION {
        return Err(SetupSecretError::UnsupportedVersion(record[4]));
    }
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&record[SECRET_CRC_AT..]);
    if SECRET_CRC.checksum(&record[..SECRET_CRC_AT]) != u32::from_le_bytes(stored) {
        return Err(SetupSecretError::BadCrc);
    }
    let len = usize::from(record[5]);
    let text = record
        .get(6..6 + len)
        .filter(|_| len <= PASSWORD_MAX)
        .and_then(|b| core::str::from_utf8(b).ok())
        .filter(|p| is_setup_password(p))
        .ok_or(SetupSecretError::NotAPassphrase)?;
    String::try_from(text).map_err(|_| SetupSecretError::NotAPassphrase)
}

/// The setup access point's name: `chronolock-` and 4 hex digits from a CRC of the password.
///
/// From the password rather than the MAC address, so that the machine that flashes the door
/// prints the network's QR code without having to learn the board's MAC, and the name always
/// matches the password it was printed with. The 16 bits it shows of a 100-bit password leave
/// 84 unknown; two doors share a name once in 65 536 pairs, which only means two networks of
/// that name with different passwords.
pub fn setup_ssid(password: &str) -> String<32> {
    let mut digest = SECRET_CRC.digest();
    // A prefix of its own, so that the name is not the tail of any other CRC of the password.
    digest.update(b"chronolock setup ssid\0");
    digest.update(password.as_bytes());
    let tag = (digest.finalize() >> 16) as u16;
    let mut ssid = String::new();
    // Cannot fail: 15 characters.
    let _ = core::fmt::write(&mut ssid, format_args!("chronolock-{tag:04X}"));
    ssid
}

/// Writes the text of a Wi-Fi QR code (`WIFI:T:WPA;S:<ssid>;P:<password>;;`) that phones scan
/// to join a WPA2 network, with `\`, `;`, `,`, `:` and `"` escaped by a backslash as the format
/// requires. At most [`WIFI_QR_MAX`] bytes for an SSID of 32 bytes and a password of 63.
pub fn write_wifi_qr<W: core::fmt::Write>(
    out: &mut W,
    ssid: &str,
    password: &str,
) -> core::fmt::Result {
    out.write_str("WIFI:T:WPA;S:")?;
    write_qr_escaped(out, ssid)?;
    out.write_str(";P:")?;
    write_qr_escaped(out, password)?;
    out.write_str(";;")
}

fn write_qr_escaped<W: core::fmt::Write>(out: &mut W, s: &str) -> core::fmt::Result {
    for c in s.chars() {
        if matches!(c, '\\' | ';' | ',' | ':' | '"') {
            out.write_char('\\')?;
        }
        out.write_char(c)?;
    }
    Ok(())
}

#[cfg(test)]
mod secret_tests {
    extern crate std;

    use std::string::String as StdString;

    use proptest::prelude::*;
    use rand_chacha::rand_core::SeedableRng;

    use super::*;

    const PASSWORD: &str = "abcdefghijkmnpqrstuvw";

    fn record_with(mut f: impl FnMut(&mut [u8; SECRET_LEN])) -> [u8; SECRET_LEN] {
        let mut r = encode_setup_secret(PASSWORD).expect("valid");
        f(&mut r);
        r
    }

    fn recrc(r: &mut [u8; SECRET_LEN]) {
        let crc = SECRET_CRC.checksum(&r[..SECRET_CRC_AT]);
        r[SECRET_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn a_record_round_trips_and_ignores_what_follows() {
        for p in [
            PASSWORD,
            &"x".repeat(16),
            &"~!@#$%^&*()_+ {}".repeat(3),
            &"z".repeat(63),
        ] {
            let record = encode_setup_secret(p).expect("valid");
            assert_eq!(decode_setup_secret(&record).expect("decodes").as_str(), p);
            let mut partition = std::vec![0xFFu8; SETUP_PARTITION_SIZE];
            partition[..SECRET_LEN].copy_from_slice(&record);
            assert_eq!(
                decode_setup_secret(&partition).expect("decodes").as_str(),
                p
            );
        }
    }

    #[test]
    fn only_setup_passwords_are_encoded() {
        for bad in [
            "",
            "short",
            &"x".repeat(15),
            &"x".repeat(64),
            &"aB09".repeat(16),
            "caf\u{e9} au lait, s'il vous",
        ] {
            assert_eq!(
                encode_setup_secret(bad),
                Err(SetupSecretError::NotAPassphrase),
                "{bad}"
            );
        }
        assert!(encode_setup_secret("tab\there and more text").is_err());
    }

    #[test]
    fn every_fault_is_named() {
        let good = encode_setup_secret(PASSWORD).expect("valid");
        assert_eq!(
            decode_setup_secret(&good[..SECRET_LEN - 1]),
            Err(SetupSecretError::Truncated)
        );
        assert_eq!(decode_setup_secret(&[]), Err(SetupSecretError::Truncated));
        assert_eq!(
            decode_setup_secret(&[0xFF; SETUP_PARTITION_SIZE]),
            Err(SetupSecretError::Erased)
        );
        assert_eq!(
            decode_setup_secret(&[0; SECRET_LEN]),
            Err(SetupSecretError::BadMagic)
        );
        let r = record_with(|r| r[0] = b'X');
        assert_eq!(decode_setup_secret(&r), Err(SetupSecretError::BadMagic));
        let r = record_with(|r| {
            r[4] = 2;
            recrc(r);
        });
        assert_eq!(
            decode_setup_secret(&r),
            Err(SetupSecretError::UnsupportedVersion(2))
        );
        for at in [5, 6, 30, 68, SECRET_CRC_AT, SECRET_LEN - 1] {
            let r = record_with(|r| r[at] ^= 0x10);
            assert_eq!(
                decode_setup_secret(&r),
                Err(SetupSecretError::BadCrc),
                "byte {at}"
            );
        }
        // Records with a good CRC around a password that is not one.
        for len in [0u8, 8, 15, 64, 255] {
            let r = record_with(|r| {
                r[5] = len;
                recrc(r);
            });
            assert_eq!(
                decode_setup_secret(&r),
                Err(SetupSecretError::NotAPassphrase),
                "length {len}"
            );
        }
        let r = record_with(|r| {
            r[10] = b'\n';
            recrc(r);
        });
        assert_eq!(
            decode_setup_secret(&r),
            Err(SetupSecretError::NotAPassphrase)
        );
        let r = record_with(|r| {
            r[10] = 0xC3;
            recrc(r);
        });
        assert_eq!(
            decode_setup_secret(&r),
            Err(SetupSecretError::NotAPassphrase)
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let text = std::format!("{}", SetupSecretError::Erased);
        assert!(text.contains("erased"), "{text}");
        let text = std::format!("{}", SetupSecretError::UnsupportedVersion(7));
        assert!(text.contains('7'), "{text}");
    }

    #[test]
    fn generated_passwords_use_the_alphabet_and_differ() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let a = generate_password(&mut rng);
        let b = generate_password(&mut rng);
        assert_ne!(a, b);
        for p in [&a, &b] {
            assert_eq!(p.len(), GENERATED_LEN);
            assert!(p.bytes().all(|c| PASSWORD_ALPHABET.contains(&c)), "{p}");
            assert!(!p.contains(['0', 'o', '1', 'l']), "{p}");
            assert!(is_setup_password(p));
            assert!(encode_setup_secret(p).is_ok());
        }
        let distinct: std::collections::BTreeSet<u8> = PASSWORD_ALPHABET.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            32,
            "no character twice: every one equally likely"
        );
    }

    #[test]
    fn the_ssid_comes_from_the_password() {
        let ssid = setup_ssid(PASSWORD);
        assert_eq!(ssid.len(), 15);
        assert!(ssid.starts_with("chronolock-"));
        assert!(ssid[11..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase()));
        assert_eq!(
            setup_ssid(PASSWORD),
            ssid,
            "the same for the firmware and the command"
        );
        assert_ne!(setup_ssid("abcdefghijkmnpqrstuvx"), ssid);
    }

    fn qr(ssid: &str, password: &str) -> StdString {
        let mut out = StdString::new();
        write_wifi_qr(&mut out, ssid, password).expect("write");
        out
    }

    #[test]
    fn qr_text_escapes_what_the_format_reserves() {
        assert_eq!(
            qr("chronolock-1A2B", "abcdefghijkmnpqrstuvw"),
            "WIFI:T:WPA;S:chronolock-1A2B;P:abcdefghijkmnpqrstuvw;;"
        );
        assert_eq!(
            qr("a;b,c", r#"p\q;r,s:t"u v"#),
            r#"WIFI:T:WPA;S:a\;b\,c;P:p\\q\;r\,s\:t\"u v;;"#
        );
        let worst = qr(&";".repeat(32), &"\\".repeat(PASSWORD_MAX));
        assert_eq!(worst.len(), WIFI_QR_MAX);
        let mut small: String<16> = String::new();
        assert!(
            write_wifi_qr(&mut small, "chronolock-1A2B", PASSWORD).is_err(),
            "too long: an error"
        );
    }

    proptest! {
        #[test]
        fn any_bytes_decode_to_an_answer_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = decode_setup_secret(&bytes) {
                prop_assert!(is_setup_password(&p));
            }
        }

        #[test]
        fn any_record_with_a_good_crc_is_an_answer_never_a_panic(
            len in any::<u8>(),
            body in proptest::collection::vec(any::<u8>(), SECRET_LEN - 6),
        ) {
            let mut r = [0u8; SECRET_LEN];
            r[..4].copy_from_slice(&SECRET_MAGIC);
            r[4] = SECRET_VERSION;
            r[5] = len;
            r[6..].copy_from_slice(&body);
            recrc(&mut r);
            match decode_setup_secret(&r) {
                Ok(p) => prop_assert!(is_setup_password(&p) && p.len() == usize::from(len)),
                Err(e) => prop_assert_eq!(e, SetupSecretError::NotAPassphrase),
            }
        }

        #[test]
        fn any_damaged_record_is_refused(at in 0..SECRET_LEN, flip in 1u8..=255) {
            let mut r = encode_setup_secret(PASSWORD).expect("valid");
            r[at] ^= flip;
            prop_assert!(decode_setup_secret(&r).is_err());
        }

        #[test]
        fn any_setup_password_round_trips(p in "[ -~]{16,63}") {
            let r = encode_setup_secret(&p).expect("valid");
            let decoded = decode_setup_secret(&r).expect("decodes");
            prop_assert_eq!(decoded.as_str(), p.as_str());
            let text = qr(&setup_ssid(&p), &p);
            prop_assert!(text.len() <= WIFI_QR_MAX);
        }
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
