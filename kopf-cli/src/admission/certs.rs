//! Certificates of the webhook server: a self-signed CA and a server certificate generated
//! at start (with [`rcgen`]), or certificate/key files given by the user and reloaded when
//! they change.
//!
//! Generated certificates are short-lived and re-issued while serving; the CA may only
//! sign end-entity certificates (path length 0). With managed configurations, the CA is
//! shared by all replicas through a Secret (see [`shared_ca`]): the one `caBundle` in the
//! configurations then verifies whichever replica the API server reaches. Loaded files
//! are checked: the key must belong to the certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde_json::{Value, json};

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
    /// The private key does not belong to the certificate.
    #[error("the webhook private key does not belong to the certificate")]
    KeyMismatch,
    /// The shared CA could not be read from or stored in its Secret.
    #[error("the shared webhook CA in the Secret {namespace}/{name}: {reason}")]
    SharedCa {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// What failed.
        reason: String,
    },
}

/// How long a generated CA is valid.
pub const CA_VALIDITY_DAYS: i64 = 365;
/// How long a generated server certificate is valid.
pub const SERVER_VALIDITY_DAYS: i64 = 30;
/// How often a generated server certificate is re-issued (well within its validity).
pub const REISSUE_EVERY: Duration = Duration::from_secs(7 * 24 * 3600);

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
        let certified = CertifiedKey::new(self.chain.clone(), signing);
        match certified.keys_match() {
            Ok(()) => Ok(certified),
            // The key cannot tell its public half: nothing to compare.
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
            Err(rustls::Error::InconsistentKeys(_)) => Err(CertError::KeyMismatch),
            Err(error) => Err(CertError::Key(error)),
        }
    }
}

/// A CA that signs server certificates: its certificate and key in PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaPair {
    /// The CA certificate (PEM): the `caBundle`.
    pub cert_pem: String,
    /// The CA's private key (PKCS#8 PEM).
    pub key_pem: String,
}

/// The calendar date `days` from today (UTC), as rcgen's validity bounds take it (day
/// precision is enough for validity).
fn days_from_today(days: i64) -> Result<(i32, u8, u8), CertError> {
    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    let date = today
        .checked_add(jiff::Span::new().days(days))
        .map_err(|_| CertError::Generate(rcgen::Error::Time))?;
    let month = u8::try_from(date.month()).map_err(|_| CertError::Generate(rcgen::Error::Time))?;
    let day = u8::try_from(date.day()).map_err(|_| CertError::Generate(rcgen::Error::Time))?;
    Ok((i32::from(date.year()), month, day))
}

/// Sets the validity: from yesterday (clocks of API servers may lag) for `days`.
fn set_validity(params: &mut CertificateParams, days: i64) -> Result<(), CertError> {
    let (y, m, d) = days_from_today(-1)?;
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = days_from_today(days)?;
    params.not_after = rcgen::date_time_ymd(y, m, d);
    Ok(())
}

/// The CA's parameters. Issuing needs only its name and key, so a CA stored as PEM is
/// used again by rebuilding these around its key.
fn ca_params() -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, "kopf webhook CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Generates a self-signed CA that may sign end-entity certificates only (path length 0),
/// valid for [`CA_VALIDITY_DAYS`].
pub fn generate_ca() -> Result<CaPair, CertError> {
    generate_ca_valid_for(CA_VALIDITY_DAYS)
}

/// [`generate_ca`] with another validity (shorter ones for tests of the renewal).
pub(super) fn generate_ca_valid_for(days: i64) -> Result<CaPair, CertError> {
    let mut params = ca_params()?;
    set_validity(&mut params, days)?;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(CaPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues a server certificate for `hosts` (see [`subject_names`]) signed by `ca`, valid
/// for [`SERVER_VALIDITY_DAYS`].
pub fn issue(ca: &CaPair, hosts: &[String]) -> Result<ServerCert, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let ca_der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).map_err(|e| CertError::Pem {
        path: PathBuf::from("<CA>"),
        reason: format!("bad CA certificate: {e}"),
    })?;
    // The CA certificate must hold the key's public half (its SubjectPublicKeyInfo).
    let public = ca_key.public_key_raw();
    if public.is_empty() || !ca_der.windows(public.len()).any(|w| w == public) {
        return Err(CertError::KeyMismatch);
    }
    let issuer = Issuer::new(ca_params()?, ca_key);
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
    set_validity(&mut params, SERVER_VALIDITY_DAYS)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let key_der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|reason| CertError::Pem {
        path: PathBuf::from("<generated>"),
        reason: reason.to_owned(),
    })?;
    Ok(ServerCert {
        chain: vec![cert.der().clone(), ca_der],
        key: key_der,
        ca_pem: ca.cert_pem.clone(),
    })
}

/// The CA shared by the replicas, from the Secret `namespace/name` (data `ca.crt` and
/// `ca.key`); the first replica generates it and creates the Secret. Of replicas racing
/// to create it, the losers read the winner's.
pub async fn shared_ca(client: &kube::Client, namespace: &str, name: &str) -> Result<CaPair, CertError> {
    use crate::clients::patching;
    let fail = |reason: String| CertError::SharedCa {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        reason,
    };
    let url = format!("/api/v1/namespaces/{namespace}/secrets/{name}");
    for _ in 0..2 {
        match patching::get(client, &url).await {
            Ok(secret) => return ca_from_secret(&secret).map_err(fail),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(fail(e.to_string())),
        }
        let ca = generate_ca()?;
        let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque",
            "data": {"ca.crt": b64(&ca.cert_pem), "ca.key": b64(&ca.key_pem)},
        });
        let collection = format!("/api/v1/namespaces/{namespace}/secrets");
        match patching::create(client, &collection, &secret).await {
            Ok(_) => return Ok(ca),
            // Another replica created it meanwhile: use theirs.
            Err(e) if e.code() == Some(409) => continue,
            Err(e) => return Err(fail(e.to_string())),
        }
    }
    Err(fail("created and deleted again meanwhile".into()))
}

pub(super) fn ca_from_secret(secret: &Value) -> Result<CaPair, String> {
    let field = |key: &str| -> Result<String, String> {
        let text = secret
            .pointer(&format!("/data/{}", key.replace('/', "~1")))
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no data {key:?}"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("data {key:?} is not base64: {e}"))?;
        String::from_utf8(bytes).map_err(|_| format!("data {key:?} is not PEM text"))
    };
    let pair = CaPair {
        cert_pem: field("ca.crt")?,
        key_pem: field("ca.key")?,
    };
    // Unusable contents are an error here, not at the first certificate issued.
    issue(&pair, &[]).map_err(|e| format!("unusable CA: {e}"))?;
    Ok(pair)
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
#[cfg(test)]
pub fn generate(hosts: &[String]) -> Result<ServerCert, CertError> {
    issue(&generate_ca()?, hosts)
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

    /// What is served now.
    #[cfg(test)]
    pub(super) fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().clone()
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

/// The files of a user-given certificate.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
    /// The CA bundle (PEM), if not the certificate file itself.
    pub ca: Option<PathBuf>,
}

/// Watches the certificate, key and CA files and reloads them into `target` when their
/// modification times change, until `stop`; each reload's CA bundle goes to `bundle` (the
/// managed configurations follow it). Bad files are logged and the old certificate is
/// kept.
pub async fn watch_files(
    files: CertFiles,
    target: Arc<SwappableCert>,
    bundle: tokio::sync::watch::Sender<String>,
    interval: Duration,
    stop: CancellationToken,
) {
    let stamps = |f: &CertFiles| {
        (
            modified(&f.cert),
            modified(&f.key),
            f.ca.as_deref().and_then(modified),
        )
    };
    let mut seen = stamps(&files);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let now = stamps(&files);
        if now == seen {
            continue;
        }
        seen = now;
        let loaded = load(&files.cert, &files.key, files.ca.as_deref())
            .and_then(|c| c.certified_key().map(|k| (k, c.ca_pem)));
        match loaded {
            Ok((certified, ca_pem)) => {
                target.replace(certified);
                bundle.send_if_modified(|current| {
                    let changed = *current != ca_pem;
                    *current = ca_pem;
                    changed
                });
                tracing::info!(target: "kopf.admission", "Reloaded the webhook certificate from {}.", files.cert.display());
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
    fn generated_certificates_are_short_lived_and_the_ca_signs_leaves_only() {
        use x509_check::*;
        let ca = generate_ca().unwrap();
        let cert = issue(&ca, &["a.test".to_owned()]).unwrap();
        let days = |der: &[u8]| validity_days(der);
        assert!(
            days(&cert.chain[0]) <= SERVER_VALIDITY_DAYS + 2,
            "{}",
            days(&cert.chain[0])
        );
        assert!(
            days(&cert.chain[1]) <= CA_VALIDITY_DAYS + 2,
            "{}",
            days(&cert.chain[1])
        );
        // BasicConstraints: cA TRUE, pathLenConstraint 0 (DER: 30 06 01 01 ff 02 01 00).
        assert!(
            contains(&cert.chain[1], &[0x30, 0x06, 0x01, 0x01, 0xff, 0x02, 0x01, 0x00]),
            "the CA's path length is not 0"
        );
        // Another CA's key cannot issue under this CA's certificate.
        let other = generate_ca().unwrap();
        let mixed = CaPair {
            cert_pem: ca.cert_pem.clone(),
            key_pem: other.key_pem,
        };
        assert!(matches!(issue(&mixed, &[]), Err(CertError::KeyMismatch)));
    }

    /// Just enough DER reading for the checks above.
    mod x509_check {
        pub fn contains(der: &[u8], needle: &[u8]) -> bool {
            der.windows(needle.len()).any(|w| w == needle)
        }

        /// Days between notBefore and notAfter (both UTCTime, `YYMMDDhhmmssZ`).
        pub fn validity_days(der: &[u8]) -> i64 {
            let mut times = Vec::new();
            let mut i = 0;
            while i + 15 <= der.len() && times.len() < 2 {
                if der[i] == 0x17 && der[i + 1] == 13 && der[i + 14] == b'Z' {
                    let text = std::str::from_utf8(&der[i + 2..i + 8]).unwrap();
                    let date = jiff::civil::Date::strptime("%y%m%d", text).unwrap();
                    times.push(date);
                    i += 15;
                } else {
                    i += 1;
                }
            }
            assert_eq!(times.len(), 2, "no validity found");
            (times[1] - times[0]).get_days().into()
        }
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let one = generate(&["a.test".to_owned()]).unwrap();
        let two = generate(&["a.test".to_owned()]).unwrap();
        let cert_path = dir.path().join("tls.crt");
        let key_path = dir.path().join("tls.key");
        std::fs::write(&cert_path, der_to_pem(&one.chain[0])).unwrap();
        let key_pem = match &two.key {
            PrivateKeyDer::Pkcs8(k) => der_to_pem_labelled(k.secret_pkcs8_der(), "PRIVATE KEY"),
            _ => unreachable!(),
        };
        std::fs::write(&key_path, key_pem).unwrap();
        let error = load(&cert_path, &key_path, None).unwrap_err();
        assert!(matches!(error, CertError::KeyMismatch), "{error}");
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
