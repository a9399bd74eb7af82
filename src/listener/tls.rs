//! TLS: certificate loading with errors that name the file, a certificate store that a reload
//! swaps without touching open connections, and the rustls server config (TLS 1.2/1.3, ALPN
//! `h2` then `http/1.1`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::InconsistentKeys;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject, SectionKind};
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
    #[error("{}: server.tls.cert: not a PEM certificate chain: {source}", path.display())]
    BadCertPem {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("{}: server.tls.cert: no PEM certificate found{hint}", path.display())]
    NoCert { path: PathBuf, hint: &'static str },
    #[error("{}: server.tls.key: cannot read private key: {source}", path.display())]
    ReadKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: server.tls.key: not a PEM private key: {source}", path.display())]
    BadKeyPem {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("{}: server.tls.key: no PEM private key found{hint}", path.display())]
    NoKey { path: PathBuf, hint: &'static str },
    /// rustls has no password-based decryption, and a proxy that starts unattended has no one
    /// to ask for a passphrase.
    #[error(
        "{}: server.tls.key: is an encrypted private key; linkpush needs an unencrypted PKCS#8, \
         PKCS#1 or SEC1 key (decrypt it with `openssl pkey -in KEY -out KEY.plain`)",
        path.display()
    )]
    EncryptedKey { path: PathBuf },
    #[error(
        "{}: server.tls.key: unsupported private key ({}); linkpush supports RSA \
         (2048 bits or more), ECDSA P-256/P-384 and Ed25519 keys",
        path.display(),
        reason(source)
    )]
    BadKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// The handshake would fail for every client (`decrypt error`), so this is refused at start
    /// and on reload instead.
    #[error(
        "server.tls: the private key {} does not match the certificate {} (the certificate's \
         public key is not the key's)",
        key.display(),
        cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: server.tls.cert: unusable certificate: {source}", path.display())]
    BadCert {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// rustls's own words, without the "unexpected error: " its `General` variant adds.
fn reason(e: &rustls::Error) -> String {
    match e {
        rustls::Error::General(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The one crypto provider. rustls panics at start when two providers are linked and none is
/// chosen, so every config is built with `builder_with_provider` and this.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain and private key, and checks that they belong together.
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

/// The PEM labels of a private key that rustls cannot use because it is encrypted: PKCS#8
/// `ENCRYPTED PRIVATE KEY` (RFC 5958 §3) and OpenSSL's legacy encrypted PKCS#1/SEC1, which
/// keeps its usual label and says `Proc-Type: 4,ENCRYPTED` in a header (RFC 1421 §4.6.1.1).
fn is_encrypted_key(pem: &[u8]) -> bool {
    let contains = |needle: &[u8]| pem.windows(needle.len()).any(|w| w == needle);
    contains(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || contains(b"Proc-Type: 4,ENCRYPTED")
}

/// What a PEM file holds instead of the expected item, to say so in the error.
fn pem_hint(pem: &[u8], wanted_key: bool) -> &'static str {
    let kinds: Vec<SectionKind> = <(SectionKind, Vec<u8>)>::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .map(|(kind, _)| kind)
        .collect();
    let has_key = kinds.iter().any(|k| {
        matches!(
            k,
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey
        )
    });
    if wanted_key && kinds.contains(&SectionKind::Certificate) {
        " (the file holds a certificate: are server.tls.cert and server.tls.key swapped?)"
    } else if !wanted_key && has_key {
        " (the file holds a private key: are server.tls.cert and server.tls.key swapped?)"
    } else {
        ""
    }
}

pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert: &Path,
    key: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::BadCertPem {
            path: cert.into(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCert {
            path: cert.into(),
            hint: pem_hint(cert_pem, false),
        });
    }
    if is_encrypted_key(key_pem) {
        return Err(TlsError::EncryptedKey { path: key.into() });
    }
    // The first PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`)
    // section; other sections (parameters, certificates) are skipped.
    let der = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(der) => der,
        Err(pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                path: key.into(),
                hint: pem_hint(key_pem, true),
            });
        }
        Err(source) => {
            return Err(TlsError::BadKeyPem {
                path: key.into(),
                source,
            });
        }
    };
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|source| TlsError::BadKey {
            path: key.into(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    // Compares the key's SubjectPublicKeyInfo with the end-entity certificate's. `Unknown`
    // (a key that cannot state its public key) is accepted, as `CertifiedKey::from_der` does;
    // ring's RSA, ECDSA and Ed25519 keys all state theirs.
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: cert.into(),
            key: key.into(),
        }),
        Err(source) => Err(TlsError::BadCert {
            path: cert.into(),
            source,
        }),
    }
}

/// Why a TLS handshake failed, as `linkpush_tls_handshake_errors_total{reason}` and the debug
/// log say it. A closed list, so that a scanner cannot grow the label set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// No handshake within the connection's handshake deadline.
    Timeout,
    /// The client closed the connection before the handshake finished (TCP probes, scanners).
    Eof,
    /// The client sent something that is not TLS, or TLS we do not speak (versions, ALPN,
    /// cipher suites, malformed messages).
    Protocol,
    /// The client refused our certificate with a certificate alert (untrusted, expired, wrong
    /// name), or failed to verify our signature (`decrypt_error`: a key that does not match).
    Certificate,
    /// The client sent another fatal alert.
    Alert,
    /// The socket failed (reset, broken pipe).
    Io,
    Other,
}

impl HandshakeError {
    pub const ALL: [HandshakeError; 7] = [
        HandshakeError::Timeout,
        HandshakeError::Eof,
        HandshakeError::Protocol,
        HandshakeError::Certificate,
        HandshakeError::Alert,
        HandshakeError::Io,
        HandshakeError::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeError::Timeout => "timeout",
            HandshakeError::Eof => "eof",
            HandshakeError::Protocol => "protocol",
            HandshakeError::Certificate => "certificate",
            HandshakeError::Alert => "alert",
            HandshakeError::Io => "io",
            HandshakeError::Other => "other",
        }
    }

    /// Classifies the error `tokio_rustls::TlsAcceptor::accept` returned: rustls errors arrive
    /// wrapped in an `io::Error` of kind `InvalidData`.
    pub fn classify(err: &std::io::Error) -> HandshakeError {
        use rustls::AlertDescription as A;
        use std::io::ErrorKind;
        if let Some(tls) = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            return match tls {
                rustls::Error::AlertReceived(
                    A::BadCertificate
                    | A::UnsupportedCertificate
                    | A::CertificateRevoked
                    | A::CertificateExpired
                    | A::CertificateUnknown
                    | A::UnknownCA
                    | A::DecryptError,
                ) => HandshakeError::Certificate,
                rustls::Error::AlertReceived(_) => HandshakeError::Alert,
                rustls::Error::InappropriateMessage { .. }
                | rustls::Error::InappropriateHandshakeMessage { .. }
                | rustls::Error::InvalidMessage(_)
                | rustls::Error::InvalidEncryptedClientHello(_)
                | rustls::Error::PeerIncompatible(_)
                | rustls::Error::PeerMisbehaved(_)
                | rustls::Error::PeerSentOversizedRecord
                | rustls::Error::NoApplicationProtocol
                | rustls::Error::DecryptError => HandshakeError::Protocol,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                    HandshakeError::Certificate
                }
                _ => HandshakeError::Other,
            };
        }
        match err.kind() {
            ErrorKind::UnexpectedEof => HandshakeError::Eof,
            ErrorKind::TimedOut => HandshakeError::Timeout,
            ErrorKind::InvalidData => HandshakeError::Protocol,
            ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::NotConnected => HandshakeError::Io,
            _ => HandshakeError::Other,
        }
    }
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

#[cfg(test)]
mod tests;
