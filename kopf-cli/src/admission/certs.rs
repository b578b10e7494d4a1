//! Certificates of the webhook server: a self-signed CA and a server certificate generated
//! at start (with [`rcgen`]), or certificate/key files given by the user and reloaded when
//! they change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// Errors of certificate generation and loading.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters (e.g. an invalid host name).
    #[error("cannot generate the webhook certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM certificate or key.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls cannot use the key.
    #[error("unusable webhook private key: {0}")]
    Key(#[from] rustls::Error),
}

/// A server certificate chain with its key and the CA bundle that verifies it.
#[derive(Debug)]
pub struct ServerCert {
    /// The chain served to clients (leaf first).
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// PEM of the CA certificate(s) that clients must trust (the `caBundle`).
    pub ca_pem: String,
}

impl ServerCert {
    /// The rustls form of the chain and key.
    pub fn certified_key(&self) -> Result<CertifiedKey, CertError> {
        let signing = rustls::crypto::ring::sign::any_supported_type(&self.key)?;
        Ok(CertifiedKey::new(self.chain.clone(), signing))
    }
}

/// The names a generated certificate covers: the configured host names plus `localhost`
/// and `127.0.0.1` (deduplicated, order kept).
pub fn subject_names(hosts: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in hosts.iter().map(String::as_str).chain(["localhost", "127.0.0.1"]) {
        let name = name.trim().trim_start_matches('[').trim_end_matches(']');
        if !name.is_empty() && !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    names
}

/// Generates a self-signed CA and a server certificate signed by it for `hosts` (see
/// [`subject_names`]).
pub fn generate(hosts: &[String]) -> Result<ServerCert, CertError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kopf webhook CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let names = subject_names(hosts);
    let mut params = CertificateParams::new(names.clone())?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_else(|| "localhost".into()),
    );
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let key_der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|reason| CertError::Pem {
        path: PathBuf::from("<generated>"),
        reason: reason.to_owned(),
    })?;
    Ok(ServerCert {
        chain: vec![cert.der().clone(), ca_cert.der().clone()],
        key: key_der,
        ca_pem: ca_cert.pem(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Loads a PEM certificate chain and a PEM private key. The CA bundle is `ca` if given,
/// else the certificate file itself (self-signed certificates verify themselves).
pub fn load(cert: &Path, key: &Path, ca: Option<&Path>) -> Result<ServerCert, CertError> {
    let cert_pem = read(cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            path: cert.to_owned(),
            reason: format!("bad PEM certificate: {e}"),
        })?;
    if chain.is_empty() {
        return Err(CertError::Pem {
            path: cert.to_owned(),
            reason: "no PEM certificate found".into(),
        });
    }
    let key_pem = read(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| CertError::Pem {
        path: key.to_owned(),
        reason: format!("no usable PEM private key: {e}"),
    })?;
    let ca_pem = match ca {
        Some(ca) => read(ca)?,
        None => cert_pem,
    };
    let ca_pem = String::from_utf8(ca_pem).map_err(|_| CertError::Pem {
        path: ca.unwrap_or(cert).to_owned(),
        reason: "not a UTF-8 PEM file".into(),
    })?;
    let loaded = ServerCert {
        chain,
        key: key_der,
        ca_pem,
    };
    // Fail early on keys rustls cannot sign with.
    loaded.certified_key()?;
    Ok(loaded)
}

/// A rustls certificate resolver whose certificate can be replaced while serving.
#[derive(Debug)]
pub struct SwappableCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl SwappableCert {
    /// A resolver serving `key`.
    pub fn new(key: CertifiedKey) -> Self {
        Self {
            current: RwLock::new(Arc::new(key)),
        }
    }

    /// Serves `key` from now on (for new connections).
    pub fn replace(&self, key: CertifiedKey) {
        *self.current.write() = Arc::new(key);
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Watches the certificate and key files and reloads them into `target` when their
/// modification times change, until `stop`. Bad files are logged and the old certificate
/// is kept.
pub async fn watch_files(
    cert: PathBuf,
    key: PathBuf,
    target: Arc<SwappableCert>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut seen = (modified(&cert), modified(&key));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let now = (modified(&cert), modified(&key));
        if now == seen {
            continue;
        }
        seen = now;
        match load(&cert, &key, None).and_then(|c| c.certified_key()) {
            Ok(certified) => {
                target.replace(certified);
                tracing::info!(target: "kopf.admission", "Reloaded the webhook certificate from {}.", cert.display());
            }
            Err(error) => {
                tracing::warn!(target: "kopf.admission", "Cannot reload the webhook certificate: {error}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_covers_the_configured_hosts() {
        let hosts = vec!["webhook.example.test".to_owned(), "10.1.2.3".to_owned()];
        let cert = generate(&hosts).unwrap();
        let leaf = webpki::EndEntityCert::try_from(&cert.chain[0]).unwrap();
        for name in ["webhook.example.test", "10.1.2.3", "localhost", "127.0.0.1"] {
            let server = rustls_pki_types::ServerName::try_from(name).unwrap();
            leaf.verify_is_valid_for_subject_name(&server)
                .unwrap_or_else(|e| panic!("{name} is not covered: {e:?}"));
        }
        let other = rustls_pki_types::ServerName::try_from("other.example.test").unwrap();
        assert!(leaf.verify_is_valid_for_subject_name(&other).is_err());
        assert!(cert.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        cert.certified_key().unwrap();
    }

    #[test]
    fn bad_names_are_errors_not_panics() {
        assert!(generate(&["b\u{e9}d.example".to_owned()]).is_err());
    }

    #[test]
    fn files_are_loaded_and_bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cert = generate(&["a.test".to_owned()]).unwrap();
        let cert_path = dir.path().join("tls.crt");
        let key_path = dir.path().join("tls.key");
        let mut pem = String::new();
        for der in &cert.chain {
            pem.push_str(&der_to_pem(der));
        }
        std::fs::write(&cert_path, &pem).unwrap();
        let key_pem = match &cert.key {
            PrivateKeyDer::Pkcs8(k) => der_to_pem_labelled(k.secret_pkcs8_der(), "PRIVATE KEY"),
            _ => unreachable!(),
        };
        std::fs::write(&key_path, key_pem).unwrap();
        let loaded = load(&cert_path, &key_path, None).unwrap();
        assert_eq!(loaded.chain.len(), 2);
        assert_eq!(loaded.ca_pem, pem);

        std::fs::write(&key_path, "garbage").unwrap();
        let error = load(&cert_path, &key_path, None).unwrap_err().to_string();
        assert!(error.contains("tls.key"), "{error}");
        let error = load(&dir.path().join("absent"), &key_path, None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("cannot read"), "{error}");
    }

    fn der_to_pem(der: &CertificateDer<'_>) -> String {
        der_to_pem_labelled(der.as_ref(), "CERTIFICATE")
    }

    fn der_to_pem_labelled(der: &[u8], label: &str) -> String {
        use base64::Engine as _;
        let text = base64::engine::general_purpose::STANDARD.encode(der);
        let mut out = format!("-----BEGIN {label}-----\n");
        for chunk in text.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).unwrap());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }
}
