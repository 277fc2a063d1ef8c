//! `chronolock firmware`: what flashing a door needs from this machine.
//!
//! A door's setup access point is WPA2 with a password of its own, made here when the door is
//! first flashed (`scripts/flash.sh` runs [`FirmwareCommand::SetupSecret`]) and written to the
//! door's `setup` partition. The file is the partition's image: the record of
//! [`chronolock_device::setup::encode_setup_secret`], padded with erased flash (`0xFF`) to the
//! partition's 4 KiB. The network's name comes from the password
//! ([`chronolock_device::setup::setup_ssid`]), so the QR code printed here is the one the door
//! will open, whichever board the file ends up on.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chronolock_device::setup::{self, SetupSecretError, SETUP_PARTITION_SIZE};
use qrcode::render::unicode::Dense1x2;
use qrcode::QrCode;

/// `chronolock firmware …`.
#[derive(clap::Subcommand)]
pub enum FirmwareCommand {
    /// Make a door's setup secret: a new password for its setup access point, written as the
    /// image of its `setup` partition (4096 bytes) to FILE; prints the network, the password
    /// and a QR code to join it.
    SetupSecret {
        /// Where to write the partition image (mode 600).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace FILE if it exists: the door flashed with the old secret keeps the old
        /// password until it is flashed with the new one.
        #[arg(long)]
        force: bool,
    },
    /// Check a setup partition image and print its network, password and QR code.
    ShowSecret {
        /// The partition image (from `setup-secret`).
        file: PathBuf,
    },
    /// Make a firmware signing key, separate from any site key: the private key to PATH (mode
    /// 600; keep it offline), the public key to PATH.pub, and its hex for
    /// `CHRONOLOCK_FIRMWARE_KEY` when building the firmware.
    Keygen {
        /// Where to write the private key (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign an application image (`firmware/esp32c3/target/chronolock-esp32c3-4mb.bin`) for
    /// upload on the server's Firmware page.
    Sign {
        /// The application image, as `scripts/firmware.sh` writes it.
        image: PathBuf,
        /// The firmware signing key (`chronolock firmware keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The image's version, `major.minor.patch`: doors take only a newer one.
        #[arg(long)]
        version: String,
        /// The flash size its partition table is for: 4 or 8 (MB).
        #[arg(long, default_value_t = 4)]
        flash_mb: u8,
        /// Where to write the signed image (default: IMAGE with `.signed` added).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Show a signed image's header and check its signature and hash.
    Inspect {
        /// The signed image.
        file: PathBuf,
        /// The firmware public key to check it against.
        #[arg(long = "pub")]
        public: Option<PathBuf>,
    },
}

/// Runs a `firmware` command: what to print, or what went wrong.
pub fn run(command: FirmwareCommand) -> Result<String, String> {
    match command {
        FirmwareCommand::SetupSecret { out, force } => setup_secret(&out, force),
        FirmwareCommand::ShowSecret { file } => show_secret(&file),
        FirmwareCommand::Keygen { out } => keygen(&out),
        FirmwareCommand::Sign {
            image,
            key,
            version,
            flash_mb,
            out,
        } => sign(&image, &key, &version, flash_mb, out),
        FirmwareCommand::Inspect { file, public } => inspect(&file, public.as_deref()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn keygen(out: &Path) -> Result<String, String> {
    let public = chronolock_allowlist::write_new_keypair(out).map_err(|e| e.to_string())?;
    let pub_path = chronolock_allowlist::public_key_path(out);
    Ok(format!(
        "firmware private key: {} (keep it offline, never on the server)\n\
         firmware public key:  {}\n\
         build doors that trust it with:\n  \
         CHRONOLOCK_FIRMWARE_KEY={} scripts/firmware.sh\n",
        out.display(),
        pub_path.display(),
        hex(public.as_bytes())
    ))
}

fn sign(
    image: &Path,
    key: &Path,
    version: &str,
    flash_mb: u8,
    out: Option<PathBuf>,
) -> Result<String, String> {
    use chronolock_core::firmware::{self, Version};
    let parsed = Version::parse(version)
        .filter(|v| v.0 != 0)
        .ok_or_else(|| format!("version {version:?}: expected major.minor.patch, e.g. 1.4.0"))?;
    if ![4, 8].contains(&flash_mb) {
        return Err(format!(
            "flash size {flash_mb} MB: the firmware is built for 4 or 8"
        ));
    }
    let bytes = std::fs::read(image).map_err(|e| format!("{}: {e}", image.display()))?;
    // An ESP application image starts with 0xE9; anything else would never boot.
    if bytes.first() != Some(&0xE9) {
        return Err(format!(
            "{}: not an ESP application image (it should start with 0xE9; use the .bin that \
             scripts/firmware.sh writes, not the ELF)",
            image.display()
        ));
    }
    let key = chronolock_allowlist::read_signing_key(key).map_err(|e| e.to_string())?;
    let signed = firmware::sign(&bytes, parsed, flash_mb, &key).map_err(|e| format!("{e}"))?;
    let out = out.unwrap_or_else(|| {
        let mut name = image.as_os_str().to_owned();
        name.push(".signed");
        PathBuf::from(name)
    });
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, &signed).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(format!(
        "wrote {} ({} bytes): firmware {parsed} for {flash_mb} MB flash, key {}\n",
        out.display(),
        signed.len(),
        hex(&key.verifying_key().as_bytes()[..4])
    ))
}

fn inspect(file: &Path, public: Option<&Path>) -> Result<String, String> {
    use chronolock_core::firmware::{Header, ImageCheck, Version, HEADER_LEN};
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let header = Header::peek(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut out = format!(
        "firmware {} for {} MB flash, image {} bytes, key {}, SHA-256 {}\n",
        header.version,
        header.flash_mb,
        header.len,
        hex(&header.key_id),
        hex(&header.digest)
    );
    let Some(public) = public else {
        return Ok(out);
    };
    let key = chronolock_allowlist::read_verifying_key(public).map_err(|e| e.to_string())?;
    // Checked as a door would that runs nothing yet and has room for it.
    let checked = Header::check(&bytes, Some(&key), Version(0), header.flash_mb, u32::MAX)
        .and_then(|h| {
            let mut check = ImageCheck::new(h);
            check.update(&bytes[HEADER_LEN.min(bytes.len())..])?;
            check.finish()
        });
    match checked {
        Ok(_) => {
            out.push_str("signature and hash hold\n");
            Ok(out)
        }
        Err(e) => Err(format!("{out}{}: {e}", file.display())),
    }
}

/// The `setup` partition's image for `password`: its record, then erased flash to the
/// partition's size.
pub fn partition_image(password: &str) -> Result<Vec<u8>, SetupSecretError> {
    let record = setup::encode_setup_secret(password)?;
    let mut image = vec![0xFF; SETUP_PARTITION_SIZE];
    image[..record.len()].copy_from_slice(&record);
    Ok(image)
}

/// The password in a `setup` partition image, checked as the door checks it, and that the
/// image is exactly one partition (a longer file would run into the next partition).
pub fn read_partition_image(bytes: &[u8]) -> Result<String, String> {
    if bytes.len() != SETUP_PARTITION_SIZE {
        return Err(format!(
            "{} bytes, but a setup partition image is {SETUP_PARTITION_SIZE}",
            bytes.len()
        ));
    }
    setup::decode_setup_secret(bytes)
        .map(|p| p.as_str().to_owned())
        .map_err(|e| e.to_string())
}

fn setup_secret(out: &Path, force: bool) -> Result<String, String> {
    let password = setup::generate_password(&mut rand::rngs::OsRng);
    let image = partition_image(&password).map_err(|e| format!("generated password: {e}"))?;
    if force {
        // Beside the target and renamed over it, so a failed write never leaves a door's
        // secret half replaced.
        let mut tmp = out.as_os_str().to_owned();
        tmp.push(format!(".tmp-{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        write_new(&tmp, &image)?;
        std::fs::rename(&tmp, out).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("{}: {e}", out.display())
        })?;
    } else {
        write_new(out, &image).map_err(|e| {
            if out.exists() {
                format!(
                    "{} exists: a door's setup secret is never replaced silently (--force to \
                     make a new one; the door keeps the old password until flashed with it)",
                    out.display()
                )
            } else {
                e
            }
        })?;
    }
    let mut text = format!(
        "wrote {} (the door's setup partition, {SETUP_PARTITION_SIZE} bytes)\n",
        out.display()
    );
    text.push_str(&describe(&password)?);
    Ok(text)
}

fn show_secret(file: &Path) -> Result<String, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let password = read_partition_image(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    describe(&password)
}

/// Creates `path` (never over an existing file), readable only by its owner.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| format!("{}: cannot create it: {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| {
            // Not left behind half written: it would block the next attempt.
            let _ = std::fs::remove_file(path);
            format!("{}: {e}", path.display())
        })
}

/// The network, the password and a QR code that joins it.
fn describe(password: &str) -> Result<String, String> {
    let ssid = setup::setup_ssid(password);
    let mut payload = String::new();
    setup::write_wifi_qr(&mut payload, &ssid, password)
        .map_err(|_| "cannot write the QR code's text".to_string())?;
    let code = QrCode::new(payload.as_bytes()).map_err(|e| format!("QR code: {e}"))?;
    // Dark modules as blank cells and light ones as blocks: drawn in a terminal's light text on
    // its dark background, the code reads as dark on light, with its quiet zone.
    let qr = code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build();
    let mut text = String::new();
    let _ = writeln!(text, "setup network:  {ssid}");
    let _ = writeln!(text, "setup password: {password}");
    let _ = writeln!(
        text,
        "scan to join (WPA2; the network is up for 10 minutes after power-up in setup mode):"
    );
    let _ = writeln!(text, "{qr}");
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_one_partition_and_reads_back() {
        let image = partition_image("abcdefghijkmnpqrstuvw").expect("valid");
        assert_eq!(image.len(), SETUP_PARTITION_SIZE);
        assert!(image[setup::SECRET_LEN..].iter().all(|&b| b == 0xFF));
        assert_eq!(
            read_partition_image(&image).as_deref(),
            Ok("abcdefghijkmnpqrstuvw")
        );
        let err = read_partition_image(&image[..100]).expect_err("short");
        assert!(err.contains("100 bytes"), "{err}");
        let err = read_partition_image(&[0xFF; SETUP_PARTITION_SIZE]).expect_err("erased");
        assert!(err.contains("erased"), "{err}");
    }

    #[test]
    fn the_description_names_the_network_and_the_password() {
        let text = describe("abcdefghijkmnpqrstuvw").expect("describes");
        assert!(text.contains(setup::setup_ssid("abcdefghijkmnpqrstuvw").as_str()));
        assert!(text.contains("setup password: abcdefghijkmnpqrstuvw"));
        assert!(text.contains('█') || text.contains('▀'), "{text}");
    }

    /// Reads the QR code back from the printed blocks as a phone sees them on a dark terminal
    /// (a drawn half cell is light), and decodes it.
    #[test]
    fn the_printed_code_scans_as_the_network() {
        let password = r#"ab;c,d:e\f"ghijkmnpqrs"#;
        let text = describe(password).expect("describes");
        let rows: Vec<Vec<char>> = text
            .lines()
            .filter(|l| !l.is_empty() && l.chars().all(|c| " █▀▄".contains(c)))
            .map(|l| l.chars().collect())
            .collect();
        let width = rows.iter().map(Vec::len).max().expect("a code");
        // Each character is two modules high: top and bottom halves.
        let light = |x: usize, y: usize| {
            let c = rows[y / 2].get(x).copied().unwrap_or(' ');
            matches!((c, y % 2), ('█', _) | ('▀', 0) | ('▄', 1))
        };
        const SCALE: usize = 4;
        let mut image = rqrr::PreparedImage::prepare_from_greyscale(
            width * SCALE,
            rows.len() * 2 * SCALE,
            |x, y| if light(x / SCALE, y / SCALE) { 255 } else { 0 },
        );
        let grids = image.detect_grids();
        assert_eq!(grids.len(), 1, "one code in:\n{text}");
        let (_, content) = grids[0].decode().expect("decodes");
        let mut expected = String::new();
        setup::write_wifi_qr(&mut expected, &setup::setup_ssid(password), password)
            .expect("writes");
        assert_eq!(content, expected);
        assert!(content.starts_with("WIFI:T:WPA;S:chronolock-"), "{content}");
    }
}
