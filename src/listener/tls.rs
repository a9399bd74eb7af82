//! TLS: certificate loading with errors that name the file, a certificate store that a reload
//! swaps without touching open connections, and the rustls server config (TLS 1.2/1.3, ALPN
//! `h2` then `http/1.1`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: server.tls.cert: cannot read certificate: {source}", path.display())]
    ReadCert {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: server.tls.cert: no PEM certificate found", path.display())]
    NoCert { path: PathBuf },
    #[error("{}: server.tls.key: cannot read private key: {source}", path.display())]
    ReadKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: server.tls.key: no PEM private key found", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: server.tls.key: unusable private key: {source}", path.display())]
    BadKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// The one crypto provider. rustls panics at start when two providers are linked and none is
/// chosen, so every config is built with `builder_with_provider` and this.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain and private key.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_pem = std::fs::read(cert).map_err(|source| TlsError::ReadCert {
        path: cert.into(),
        source,
    })?;
    let key_pem = std::fs::read(key).map_err(|source| TlsError::ReadKey {
        path: key.into(),
        source,
    })?;
    certified_key_from_pem(&cert_pem, &key_pem, cert, key)
}

pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert: &Path,
    key: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::ReadCert {
            path: cert.into(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCert { path: cert.into() });
    }
    let der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|source| TlsError::ReadKey {
            path: key.into(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey { path: key.into() })?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|source| TlsError::BadKey {
            path: key.into(),
            source,
        })?;
    Ok(CertifiedKey::new(chain, signing))
}

/// The current certificate; `replace` swaps it for new handshakes only.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    pub fn new(key: CertifiedKey) -> Self {
        CertStore {
            current: RwLock::new(Arc::new(key)),
        }
    }

    pub fn replace(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

pub fn server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A self-signed certificate for `localhost` and 127.0.0.1, made at start (`linkpush demo`,
/// tests). Returns the key and the certificate PEM, for clients that want to trust it.
pub fn self_signed() -> Result<(CertifiedKey, String), TlsError> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let generated = rcgen::generate_simple_self_signed(names).map_err(|_| {
        TlsError::Config(rustls::Error::General(
            "certificate generation failed".into(),
        ))
    })?;
    let cert_pem = generated.cert.pem();
    let key_pem = generated.signing_key.serialize_pem();
    let key = certified_key_from_pem(
        cert_pem.as_bytes(),
        key_pem.as_bytes(),
        Path::new("<generated>"),
        Path::new("<generated>"),
    )?;
    Ok((key, cert_pem))
}
