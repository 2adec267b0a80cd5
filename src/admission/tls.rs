//! The webhook's serving certificate: loaded from files, swapped on change, read per handshake.
//!
//! The certificate resolver reads an [`ArcSwap`], so a reload is one pointer swap: handshakes
//! after it see the new certificate, and connections already open keep the session they
//! negotiated. A reload that fails (a half-written file, a key that does not match the
//! certificate) keeps the previous certificate and is reported; cert-manager and kubelet
//! update the two files of a Secret one after the other, so the next change event retries.

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// PEM certificate chain (`tls.crt` of a Secret).
    pub cert: PathBuf,
    /// PEM private key (`tls.key`).
    pub key: PathBuf,
}

impl CertFiles {
    /// Reads and checks both files.
    pub fn load(&self) -> Result<CertifiedKey, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let cert = read(&self.cert)?;
        let key = read(&self.key)?;
        certified_key_from_pem(&cert, &key, &self.cert.display().to_string())
    }
}

/// The current serving certificate, shared by the resolver and the reloader.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    /// A store serving `key` until replaced.
    pub fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(key),
        })
    }

    /// Replaces the certificate for every later handshake.
    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
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
    fn loads_a_generated_pair_and_rejects_a_mismatch() {
        let a = crate::certs::generate(&["localhost".into()], "a").unwrap();
        let b = crate::certs::generate(&["localhost".into()], "b").unwrap();
        certified_key_from_pem(a.cert_pem.as_bytes(), a.key_pem.as_bytes(), "a").unwrap();
        let err =
            certified_key_from_pem(a.cert_pem.as_bytes(), b.key_pem.as_bytes(), "a").unwrap_err();
        assert!(matches!(err, TlsError::Pair(_)), "{err}");
        let err = certified_key_from_pem(b"", a.key_pem.as_bytes(), "empty").unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        let err = certified_key_from_pem(a.cert_pem.as_bytes(), b"", "nokey").unwrap_err();
        assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
    }
}
