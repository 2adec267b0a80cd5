//! The webhook's serving certificate: loaded from files, swapped on change, read per handshake.
//!
//! The certificate resolver reads an [`ArcSwap`], so a reload is one pointer swap: handshakes
//! after it see the new certificate, and connections already open keep the session they
//! negotiated. A pair is taken only when it is valid now, its key matches, and (with a CA file)
//! it chains to that CA; anything else (a half-written file, a mismatched key, an expired or
//! foreign certificate) keeps the previous pair and is reported. cert-manager and kubelet
//! update the files of a Secret one after the other, so the next change event retries.
//!
//! A pair in use that nears its end while its replacement is refused is what turns into an
//! outage: [`CertStore::readiness_problem`] says so on `/readyz` during the last
//! [`EXPIRY_MARGIN`], and the expiry of the pair in use is a metric to alert on long before.

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How far in the future a certificate's notBefore may lie and the certificate still be taken:
/// issuers set it to their own clock, which may run slightly ahead of this node's.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// How close to its expiry the pair in use must be, with its replacement refused, for
/// `/readyz` to fail with the reason. Short on purpose: an unready webhook refuses admission
/// just as an expired one does, so readiness must not bring the outage forward by much; the
/// expiry metric is what to alert on.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(60 * 60);

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key found")]
    NoKey { path: PathBuf },
    #[error("{what}: invalid PEM: {source}")]
    Pem {
        what: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("certificate and key do not form a usable pair: {0}")]
    Pair(#[source] rustls::Error),
    #[error("{path}: the certificate cannot be parsed: {reason}")]
    Unparsable { path: PathBuf, reason: String },
    #[error("{path}: the certificate expired at {not_after}")]
    Expired { path: PathBuf, not_after: String },
    #[error("{path}: the certificate is not valid before {not_before}")]
    NotYetValid { path: PathBuf, not_before: String },
    #[error("{path}: no PEM certificate found in the CA file {ca}")]
    NoCa { path: PathBuf, ca: PathBuf },
    #[error("{path}: the certificate does not chain to the CA in {ca}: {source}")]
    Untrusted {
        path: PathBuf,
        ca: PathBuf,
        source: rustls::Error,
    },
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// The crypto provider used everywhere in the project (ring: no C toolchain beyond `cc`).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM certificate chain and key into a key pair rustls can serve.
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    origin: &str,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what: format!("{origin} certificate"),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: PathBuf::from(origin),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: PathBuf::from(origin),
        },
        source => TlsError::Pem {
            what: format!("{origin} key"),
            source,
        },
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(TlsError::Pair)
}

/// A serving pair that passed every check, and when it expires.
#[derive(Debug, Clone)]
pub struct CheckedPair {
    /// What rustls serves.
    pub key: CertifiedKey,
    /// The leaf certificate's notAfter, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// Checks a PEM pair as a reload must: it parses, the key matches, the leaf is valid at `now`
/// (notBefore may be up to [`CLOCK_SKEW`] ahead), and with `ca` (its PEM and its path, for
/// messages) the chain leads to one of the CA's certificates.
pub fn check_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    ca: Option<(&[u8], &Path)>,
    origin: &Path,
    now: UnixTime,
) -> Result<CheckedPair, TlsError> {
    let key = certified_key_from_pem(cert_pem, key_pem, &origin.display().to_string())?;
    let leaf = key.end_entity_cert().map_err(TlsError::Pair)?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|err| TlsError::Unparsable {
            path: origin.to_path_buf(),
            reason: err.to_string(),
        })?;
    let validity = parsed.validity();
    let not_before = validity.not_before.timestamp();
    let not_after = validity.not_after.timestamp();
    let now_seconds = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if now_seconds >= not_after {
        return Err(TlsError::Expired {
            path: origin.to_path_buf(),
            not_after: utc(not_after),
        });
    }
    let skew = i64::try_from(CLOCK_SKEW.as_secs()).unwrap_or(i64::MAX);
    if not_before > now_seconds.saturating_add(skew) {
        return Err(TlsError::NotYetValid {
            path: origin.to_path_buf(),
            not_before: utc(not_before),
        });
    }
    if let Some((ca_pem, ca_path)) = ca {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|source| TlsError::Pem {
                what: format!("CA file {}", ca_path.display()),
                source,
            })?;
            // A bundle may carry certificates webpki cannot use as anchors; the others count.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(TlsError::NoCa {
                path: origin.to_path_buf(),
                ca: ca_path.to_path_buf(),
            });
        }
        let untrusted = |source| TlsError::Untrusted {
            path: origin.to_path_buf(),
            ca: ca_path.to_path_buf(),
            source,
        };
        let parsed = rustls::server::ParsedCertificate::try_from(leaf).map_err(untrusted)?;
        // Within the tolerated skew, the chain is checked at the leaf's own start.
        let at = if not_before > now_seconds {
            UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(not_before).unwrap_or(0)))
        } else {
            now
        };
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            key.cert.get(1..).unwrap_or_default(),
            at,
            provider().signature_verification_algorithms.all,
        )
        .map_err(untrusted)?;
    }
    Ok(CheckedPair { key, not_after })
}

/// Seconds since the Unix epoch as an RFC 3339 time, for the years 0000 to 9999 that X.509
/// can hold.
fn utc(seconds: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(t) if (0..=9999).contains(&t.year()) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        _ => format!("{seconds} s after the Unix epoch"),
    }
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// PEM certificate chain (`tls.crt` of a Secret).
    pub cert: PathBuf,
    /// PEM private key (`tls.key`).
    pub key: PathBuf,
    /// PEM CA bundle the certificate must chain to (`ca.crt`); unchecked when `None`.
    pub ca: Option<PathBuf>,
}

impl CertFiles {
    /// Reads the files and checks the pair with [`check_pair`] at the current time.
    pub fn load(&self) -> Result<CheckedPair, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let cert = read(&self.cert)?;
        let key = read(&self.key)?;
        let ca = self.ca.as_deref().map(read).transpose()?;
        check_pair(
            &cert,
            &key,
            ca.as_deref().zip(self.ca.as_deref()),
            &self.cert,
            UnixTime::now(),
        )
    }

    /// Every file whose change calls for a reload.
    pub fn watched(&self) -> Vec<PathBuf> {
        let mut files = vec![self.cert.clone(), self.key.clone()];
        files.extend(self.ca.clone());
        files
    }
}

/// The current serving certificate, shared by the resolver and the reloader.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
    status: Mutex<PairStatus>,
}

#[derive(Debug)]
struct PairStatus {
    not_after: i64,
    refused: Option<String>,
}

impl CertStore {
    /// A store serving `pair` until replaced.
    pub fn new(pair: CheckedPair) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(pair.key),
            status: Mutex::new(PairStatus {
                not_after: pair.not_after,
                refused: None,
            }),
        })
    }

    /// Replaces the certificate for every later handshake.
    pub fn replace(&self, pair: CheckedPair) {
        self.current.store(Arc::new(pair.key));
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.not_after = pair.not_after;
        status.refused = None;
    }

    /// Records why the latest candidate pair was not taken.
    pub fn refuse(&self, reason: String) {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .refused = Some(reason);
    }

    /// notAfter of the pair in use, in seconds since the Unix epoch.
    pub fn not_after(&self) -> i64 {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .not_after
    }

    /// Why the webhook should not count as ready at `now` (seconds since the Unix epoch): the
    /// pair in use has expired, or it expires within [`EXPIRY_MARGIN`] and its replacement
    /// was refused.
    pub fn readiness_problem(&self, now: i64) -> Option<String> {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let at = utc(status.not_after);
        let margin = i64::try_from(EXPIRY_MARGIN.as_secs()).unwrap_or(i64::MAX);
        let refused = status
            .refused
            .as_deref()
            .map(|reason| format!("; the replacement was refused: {reason}"))
            .unwrap_or_default();
        if now >= status.not_after {
            Some(format!("the serving certificate expired at {at}{refused}"))
        } else if status.refused.is_some() && status.not_after - now <= margin {
            Some(format!("the serving certificate expires at {at}{refused}"))
        } else {
            None
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A server configuration offering TLS 1.3 and 1.2 only, with HTTP/2 and HTTP/1.1 by ALPN
/// (the API server speaks HTTP/2 to webhooks when offered).
pub fn server_config(store: Arc<CertStore>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_times_are_written_in_rfc_3339() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_767_261_659), "2026-01-01T10:00:59Z");
        assert_eq!(utc(-62_167_219_200), "0000-01-01T00:00:00Z");
        // RFC 5280's "no well-defined expiration date".
        assert_eq!(utc(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(
            utc(i64::MAX),
            format!("{} s after the Unix epoch", i64::MAX)
        );
    }
}
