//! Certificate and key loading: a pair that belongs together loads, and every way it can be wrong
//! gets a message that names the file(s) and says what is wrong.

use std::io;
use std::path::Path;

use super::*;

const CERT: &str = "/etc/linkpush/cert.pem";
const KEY: &str = "/etc/linkpush/key.pem";

/// A fresh self-signed certificate and its PKCS#8 key, both PEM.
fn pair() -> (String, String) {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("generate");
    (generated.cert.pem(), generated.signing_key.serialize_pem())
}

fn load(cert_pem: &str, key_pem: &str) -> Result<CertifiedKey, TlsError> {
    certified_key_from_pem(
        cert_pem.as_bytes(),
        key_pem.as_bytes(),
        Path::new(CERT),
        Path::new(KEY),
    )
}

fn message(cert_pem: &str, key_pem: &str) -> String {
    match load(cert_pem, key_pem) {
        Ok(_) => panic!("should be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_matching_pair_loads() {
    let (cert, key) = pair();
    let loaded = load(&cert, &key).expect("a matching pair loads");
    assert_eq!(loaded.cert.len(), 1);
    assert!(loaded.keys_match().is_ok());
}

#[test]
fn a_key_from_another_certificate_is_refused_naming_both_files() {
    let (cert, _) = pair();
    let (_, other_key) = pair();
    let err = load(&cert, &other_key).expect_err("mismatch");
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "server.tls: the private key /etc/linkpush/key.pem does not match the certificate \
         /etc/linkpush/cert.pem (the certificate's public key is not the key's)"
    );
}

#[test]
fn an_encrypted_key_says_it_is_encrypted() {
    let (cert, _) = pair();
    // Only the label matters: nothing tries to decrypt it.
    let pkcs8 = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n";
    let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0123456789ABCDEF0123456789ABCDEF\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
    for key in [pkcs8, legacy] {
        assert_eq!(
            message(&cert, key),
            "/etc/linkpush/key.pem: server.tls.key: is an encrypted private key; linkpush needs \
             an unencrypted PKCS#8, PKCS#1 or SEC1 key (decrypt it with \
             `openssl pkey -in KEY -out KEY.plain`)"
        );
    }
}

#[test]
fn an_unsupported_key_says_which_keys_are_supported() {
    let (cert, _) = pair();
    // A well-formed PEM section whose DER is no key ring can load (as a DSA or P-521 key is).
    let key = "-----BEGIN PRIVATE KEY-----\nMAMCAQA=\n-----END PRIVATE KEY-----\n";
    let text = message(&cert, key);
    assert!(
        text.starts_with(
            "/etc/linkpush/key.pem: server.tls.key: unsupported private key (failed to parse \
             private key as RSA, ECDSA, or EdDSA)"
        ),
        "{text}"
    );
    assert!(
        text.ends_with(
            "linkpush supports RSA (2048 bits or more), ECDSA P-256/P-384 and Ed25519 keys"
        ),
        "{text}"
    );
}

#[test]
fn swapped_files_are_pointed_out() {
    let (cert, key) = pair();
    assert_eq!(
        message(&key, &cert),
        "/etc/linkpush/cert.pem: server.tls.cert: no PEM certificate found (the file holds a \
         private key: are server.tls.cert and server.tls.key swapped?)"
    );
    assert_eq!(
        message(&cert, &cert),
        "/etc/linkpush/key.pem: server.tls.key: no PEM private key found (the file holds a \
         certificate: are server.tls.cert and server.tls.key swapped?)"
    );
}

#[test]
fn empty_and_broken_files_name_the_file() {
    let (cert, key) = pair();
    assert_eq!(
        message("", &key),
        "/etc/linkpush/cert.pem: server.tls.cert: no PEM certificate found"
    );
    assert_eq!(
        message(&cert, "not pem at all\n"),
        "/etc/linkpush/key.pem: server.tls.key: no PEM private key found"
    );
    let truncated = &key[..key.len() / 2];
    let text = message(&cert, truncated);
    assert!(
        text.starts_with("/etc/linkpush/key.pem: server.tls.key: not a PEM private key: "),
        "{text}"
    );
}

#[test]
fn handshake_errors_are_classified_into_the_closed_vocabulary() {
    let tls = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
    for (err, expected) in [
        (
            tls(rustls::Error::AlertReceived(
                rustls::AlertDescription::DecryptError,
            )),
            HandshakeError::Certificate,
        ),
        (
            tls(rustls::Error::AlertReceived(
                rustls::AlertDescription::UnknownCA,
            )),
            HandshakeError::Certificate,
        ),
        (
            tls(rustls::Error::AlertReceived(
                rustls::AlertDescription::HandshakeFailure,
            )),
            HandshakeError::Alert,
        ),
        (
            tls(rustls::Error::NoApplicationProtocol),
            HandshakeError::Protocol,
        ),
        (
            tls(rustls::Error::General("x".into())),
            HandshakeError::Other,
        ),
        (
            io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof"),
            HandshakeError::Eof,
        ),
        (
            io::Error::from(io::ErrorKind::ConnectionReset),
            HandshakeError::Io,
        ),
    ] {
        assert_eq!(HandshakeError::classify(&err), expected, "{err:?}");
    }
    let labels: std::collections::BTreeSet<&str> =
        HandshakeError::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(labels.len(), HandshakeError::ALL.len());
}
