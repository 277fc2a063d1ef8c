//! HTTPS for the admin UI and the API: `serve --tls-cert FILE --tls-key FILE`.
//!
//! - rustls with the ring provider; TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by ALPN.
//! - The files are PEM: the certificate chain (leaf first) and its private key (PKCS#8, PKCS#1
//!   or SEC1). A bad file is refused at start with its name and what is wrong with it.
//! - Renewed certificates are picked up without a restart: the files are looked at every
//!   [`RELOAD_EVERY`], and a pair that changed and loads is served to new connections. A pair
//!   that does not load (half-written, mismatched) is logged and the old one kept.
//! - Doors do not need TLS: the device protocol encrypts and authenticates every body itself
//!   (see `docs/protocol.md`), and the ESP32 door speaks plain HTTP. `--device-listen` gives
//!   them a plain listener that serves only the device API.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// How often the certificate files are checked for a renewal.
pub const RELOAD_EVERY: Duration = Duration::from_secs(60);

/// Where the server's certificate and key are.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf certificate.
    pub key: PathBuf,
}

/// Loads the certificate and key into a rustls server configuration; the error names the file
/// and what is wrong with it.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let cert_name = files.cert.display();
    let key_name = files.key.display();
    let cert_pem =
        std::fs::read(&files.cert).map_err(|e| format!("--tls-cert {cert_name}: {e}"))?;
    let key_pem = std::fs::read(&files.key).map_err(|e| format!("--tls-key {key_name}: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--tls-cert {cert_name}: not a PEM certificate chain ({e})"))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {cert_name}: no certificate in the file (expected -----BEGIN CERTIFICATE-----)"
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("--tls-key {key_name}: no usable private key ({e})"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("--tls-cert {cert_name} with --tls-key {key_name}: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Serves renewed certificates: checks the files `every` so often ([`RELOAD_EVERY`] in the
/// server) and swaps in a pair that changed and loads. Runs until the server stops.
pub async fn reload_when_renewed(
    files: TlsFiles,
    served: axum_server::tls_rustls::RustlsConfig,
    every: Duration,
) {
    let stamp = |files: &TlsFiles| (modified(&files.cert), modified(&files.key));
    let mut seen = stamp(&files);
    loop {
        tokio::time::sleep(every).await;
        let now = stamp(&files);
        if now == seen {
            continue;
        }
        match load(&files) {
            Ok(config) => {
                served.reload_from_config(config);
                seen = now;
                tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
            }
            // Perhaps written half-way: try again next time, serving the old pair meanwhile.
            Err(e) => {
                tracing::warn!(error = %e, "renewed TLS certificate not loaded; keeping the old one")
            }
        }
    }
}

/// Checks a `--public-url` and returns its origin (`scheme://host[:port]`), which browsers
/// send in `Origin`.
pub fn public_origin(url: &str) -> Result<String, String> {
    let bad = |why: &str| format!("--public-url {url}: {why}");
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("must start with https:// (or http://)"))?;
    if scheme != "https" && scheme != "http" {
        return Err(bad("must start with https:// (or http://)"));
    }
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad(
            "must be the address the browser uses, with no path, e.g. https://doors.example.org",
        ));
    }
    Ok(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_are_checked() {
        assert_eq!(
            public_origin("https://Doors.Example.org/").as_deref(),
            Ok("https://doors.example.org")
        );
        assert_eq!(
            public_origin("https://doors.example.org:8443").as_deref(),
            Ok("https://doors.example.org:8443")
        );
        for bad in [
            "doors.example.org",
            "ftp://doors.example.org",
            "https://",
            "https://doors.example.org/admin",
        ] {
            let e = public_origin(bad).unwrap_err();
            assert!(e.starts_with(&format!("--public-url {bad}")), "{e}");
        }
    }

    #[test]
    fn bad_files_are_named() {
        let dir = std::env::temp_dir().join(format!("chronolock-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        };
        let e = load(&files).unwrap_err();
        assert!(
            e.contains("--tls-cert") && e.contains("no certificate"),
            "{e}"
        );
        let missing = TlsFiles {
            cert: dir.join("missing.pem"),
            key,
        };
        let e = load(&missing).unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
