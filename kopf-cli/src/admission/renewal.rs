//! Renewal of the generated webhook CA before it expires (issue 18 #5).
//!
//! A generated CA is valid for [`CA_VALIDITY_DAYS`](super::certs::CA_VALIDITY_DAYS); once
//! less than [`RENEW_WITHIN_DAYS`] of it are left (more than a server certificate's validity
//! plus a re-issue period, so that every certificate it signed ends before it does), a fresh
//! CA replaces it. Until the old CA expires, the `caBundle` trusts both, so certificates
//! signed by either verify while the replicas change over.
//!
//! With the CA shared through a Secret, the replica that notices first writes the new CA
//! (a merge patch carrying the resourceVersion it read: of replicas renewing at once, one
//! wins and the others read its CA) and keeps the old certificate as `previous.crt`, with
//! the time of the change in `ca.created`. Every replica reads the Secret every
//! [`CHECK_EVERY`] and trusts both; it signs with a new CA only once that CA is older than
//! [`SETTLE`] (two checks), when every replica's bundle trusts it: a replica still
//! publishing the old bundle would otherwise overwrite the configurations with one that
//! does not verify the new certificates.

use std::time::Duration;

use base64::Engine as _;
use jiff::{SignedDuration, Timestamp};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::certs::{CaPair, CertError, REISSUE_EVERY, SwappableCert, ca_from_secret, generate_ca, issue};

/// A CA with fewer days than this left is renewed.
pub const RENEW_WITHIN_DAYS: i64 = 60;
/// How often a replica looks at its CA (and the shared Secret).
pub const CHECK_EVERY: Duration = Duration::from_secs(3600);
/// How old a shared CA must be before it signs: two checks, so every replica trusts it.
pub const SETTLE: Duration = Duration::from_secs(2 * 3600);

/// The CAs a replica signs with and trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// Signs new server certificates.
    pub signer: CaPair,
    /// The CA the signer replaced (PEM), trusted until it expires.
    pub previous: Option<String>,
    /// Whether every replica trusts the signer already (always, for a CA of one replica).
    pub settled: bool,
}

impl Authority {
    /// A CA of this replica alone (or one read at start): trusted and used at once.
    pub fn of(signer: CaPair) -> Self {
        Self {
            signer,
            previous: None,
            settled: true,
        }
    }

    /// The `caBundle`: the signer, and the previous CA while it is valid.
    pub fn bundle(&self, now: Timestamp) -> String {
        let mut bundle = self.signer.cert_pem.clone();
        if let Some(previous) = &self.previous
            && not_after(previous).is_some_and(|end| end > now)
        {
            if !bundle.ends_with('\n') {
                bundle.push('\n');
            }
            bundle.push_str(previous);
        }
        bundle
    }

    /// A fresh CA in place of the signer if the signer expires within
    /// [`RENEW_WITHIN_DAYS`]; `None` if it does not.
    pub fn renewed(&self, now: Timestamp) -> Result<Option<Self>, CertError> {
        if !expiring(&self.signer.cert_pem, now) {
            return Ok(None);
        }
        Ok(Some(Self {
            signer: generate_ca()?,
            previous: Some(self.signer.cert_pem.clone()),
            settled: true,
        }))
    }
}

/// Whether the CA certificate `pem` expires within [`RENEW_WITHIN_DAYS`] of `now` (an
/// unreadable one counts as expiring: a fresh CA is the safe side).
pub fn expiring(pem: &str, now: Timestamp) -> bool {
    let window = SignedDuration::from_hours(24 * RENEW_WITHIN_DAYS);
    not_after(pem).is_none_or(|end| end.duration_since(now) < window)
}

/// The end of a certificate's validity (its first certificate, if `pem` holds several).
pub fn not_after(pem: &str) -> Option<Timestamp> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    not_after_der(&der)
}

/// One DER element: (tag, contents, the rest after it).
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// `Certificate.tbsCertificate.validity.notAfter` (RFC 5280, 4.1).
fn not_after_der(der: &[u8]) -> Option<Timestamp> {
    let (_, certificate, _) = element(der)?;
    let (_, tbs, _) = element(certificate)?;
    // The version is optional ([0] explicit), then serial, signature, issuer, validity.
    let (tag, _, after_version) = element(tbs)?;
    let fields = if tag == 0xa0 { after_version } else { tbs };
    let (_, _, rest) = element(fields)?;
    let (_, _, rest) = element(rest)?;
    let (_, _, rest) = element(rest)?;
    let (_, validity, _) = element(rest)?;
    let (_, _, rest) = element(validity)?;
    let (tag, time, _) = element(rest)?;
    let text = std::str::from_utf8(time).ok()?.strip_suffix('Z')?;
    let text = match tag {
        // UTCTime: years 1950-2049 in two digits.
        0x17 => format!("{}{text}", if text.get(..2)? < "50" { "20" } else { "19" }),
        // GeneralizedTime.
        0x18 => text.to_owned(),
        _ => return None,
    };
    let civil = jiff::civil::DateTime::strptime("%Y%m%d%H%M%S", &text).ok()?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// The shared CA's Secret as an authority, and its resourceVersion.
fn from_secret(secret: &Value, now: Timestamp) -> Result<(Authority, String), String> {
    let signer = ca_from_secret(secret)?;
    let text = |key: &str| {
        secret
            .pointer(&format!("/data/{key}"))
            .and_then(Value::as_str)
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .and_then(|bytes| String::from_utf8(bytes).ok())
    };
    let settle = SignedDuration::try_from(SETTLE).unwrap_or(SignedDuration::ZERO);
    // A Secret without `ca.created` holds the first CA: nothing to change over from.
    let settled = text("ca.created")
        .and_then(|t| t.parse::<Timestamp>().ok())
        .is_none_or(|created| now.duration_since(created) >= settle);
    let version = secret
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let authority = Authority {
        signer,
        previous: text("previous.crt"),
        settled,
    };
    Ok((authority, version))
}

/// Reads the shared CA from the Secret `namespace/name`, renewing it there first if it
/// expires soon (see the module's description).
pub async fn shared(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    now: Timestamp,
) -> Result<Authority, CertError> {
    use crate::clients::patching::{self, PatchType};
    let fail = |reason: String| CertError::SharedCa {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        reason,
    };
    let url = format!("/api/v1/namespaces/{namespace}/secrets/{name}");
    let read = || async {
        let secret = patching::get(client, &url)
            .await
            .map_err(|e| fail(e.to_string()))?;
        from_secret(&secret, now).map_err(fail)
    };
    let (current, version) = read().await?;
    let Some(renewed) = current.renewed(now)? else {
        return Ok(current);
    };
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let patch = json!({
        // The precondition: of replicas renewing at once, only the first succeeds.
        "metadata": {"resourceVersion": version},
        "data": {
            "ca.crt": b64(&renewed.signer.cert_pem),
            "ca.key": b64(&renewed.signer.key_pem),
            "previous.crt": b64(&current.signer.cert_pem),
            "ca.created": b64(&now.to_string()),
        },
    });
    match patching::patch(client, &url, PatchType::Merge, &patch).await {
        Ok(stored) => {
            tracing::info!(target: "kopf.admission", "Renewed the shared webhook CA in the Secret {namespace}/{name} before it expires.");
            from_secret(&stored, now).map(|(a, _)| a).map_err(fail)
        }
        // Another replica renewed it meanwhile: use theirs.
        Err(e) if e.code() == Some(409) => Ok(read().await?.0),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// Keeps a generated server certificate fresh until `stop`: every
/// [`CHECK_EVERY`] (and at once) renews the CA near its expiry (a shared one in its
/// Secret, where any replica may have renewed it), publishes the bundle through `bundle`
/// (the configurations are re-applied with it), and re-issues the certificate every
/// [`REISSUE_EVERY`] or once its CA was replaced (and is trusted by every replica).
pub async fn reissue_periodically(
    ca: CaPair,
    shared: Option<(kube::Client, String, String)>,
    hosts: Vec<String>,
    target: Arc<SwappableCert>,
    bundle: tokio::sync::watch::Sender<String>,
    stop: CancellationToken,
) {
    let mut authority = Authority::of(ca);
    let mut signed_by = authority.signer.cert_pem.clone();
    let mut issued_at = tokio::time::Instant::now();
    loop {
        let now = jiff::Timestamp::now();
        match checked(&authority, shared.as_ref(), now).await {
            Ok(checked) => authority = checked,
            Err(error) => {
                tracing::warn!(target: "kopf.admission", "{error}; the known CA signs meanwhile.")
            }
        }
        bundle.send_if_modified(|current| {
            let fresh = authority.bundle(now);
            let changed = *current != fresh;
            *current = fresh;
            changed
        });
        let due = issued_at.elapsed() >= REISSUE_EVERY || signed_by != authority.signer.cert_pem;
        if due && authority.settled {
            match issue(&authority.signer, &hosts).and_then(|c| c.certified_key()) {
                Ok(certified) => {
                    target.replace(certified);
                    signed_by.clone_from(&authority.signer.cert_pem);
                    issued_at = tokio::time::Instant::now();
                    tracing::info!(target: "kopf.admission", "Re-issued the webhook certificate.");
                }
                Err(error) => {
                    tracing::warn!(target: "kopf.admission", "Cannot re-issue the webhook certificate: {error}")
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
    }
}

/// The CAs to use from now: the shared Secret's (renewed there if due), or this replica's
/// own, renewed if due.
async fn checked(
    authority: &Authority,
    shared: Option<&(kube::Client, String, String)>,
    now: jiff::Timestamp,
) -> Result<Authority, CertError> {
    if let Some((client, namespace, name)) = shared {
        return self::shared(client, namespace, name, now).await;
    }
    Ok(match authority.renewed(now)? {
        Some(renewed) => {
            tracing::info!(target: "kopf.admission", "Renewed the webhook CA before it expires.");
            renewed
        }
        None => authority.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::certs::generate_ca_valid_for;

    fn days_left(pem: &str) -> i64 {
        let end = not_after(pem).expect("a validity");
        end.duration_since(Timestamp::now()).as_hours() / 24
    }

    #[test]
    fn the_end_of_a_generated_certificate_is_read() {
        let ca = generate_ca().unwrap();
        assert!(
            (363..=365).contains(&days_left(&ca.cert_pem)),
            "{}",
            days_left(&ca.cert_pem)
        );
        let short = generate_ca_valid_for(10).unwrap();
        assert!((8..=10).contains(&days_left(&short.cert_pem)));
        assert_eq!(not_after("not a certificate"), None);
        assert!(expiring("not a certificate", Timestamp::now()));
    }

    #[test]
    fn a_ca_near_its_expiry_is_renewed_and_the_bundle_trusts_both() {
        let now = Timestamp::now();
        let fresh = Authority::of(generate_ca().unwrap());
        assert_eq!(fresh.renewed(now).unwrap(), None, "a year left: kept");
        assert_eq!(fresh.bundle(now), fresh.signer.cert_pem);

        let old = Authority::of(generate_ca_valid_for(10).unwrap());
        let renewed = old.renewed(now).unwrap().expect("10 days left: renewed");
        assert_ne!(renewed.signer, old.signer);
        assert!(!expiring(&renewed.signer.cert_pem, now));
        let bundle = renewed.bundle(now);
        assert!(bundle.starts_with(&renewed.signer.cert_pem), "{bundle}");
        assert!(bundle.ends_with(&old.signer.cert_pem), "{bundle}");
        // Once the old CA has expired, it leaves the bundle.
        let later = now + SignedDuration::from_hours(24 * 12);
        assert_eq!(renewed.bundle(later), renewed.signer.cert_pem);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shared_ca_near_its_expiry_is_renewed_once_for_all_replicas() {
        let (emu, client) = crate::clients::connection::emulated().await;
        let old = generate_ca_valid_for(10).unwrap();
        let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "hooks-ca", "namespace": "default"},
            "data": {"ca.crt": b64(&old.cert_pem), "ca.key": b64(&old.key_pem)},
        });
        crate::clients::patching::create(&client, "/api/v1/namespaces/default/secrets", &secret)
            .await
            .unwrap();
        let now = Timestamp::now();
        // Two replicas notice at once: one renews, the other reads its CA.
        let (a, b) = tokio::join!(
            shared(&client, "default", "hooks-ca", now),
            shared(&client, "default", "hooks-ca", now),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a, b, "both replicas use the same CA");
        assert_ne!(a.signer, old);
        assert_eq!(a.previous.as_deref(), Some(old.cert_pem.as_str()));
        assert!(
            !a.settled,
            "a new shared CA signs only once every replica trusts it"
        );
        // Two checks later it signs; and it is not renewed again.
        let later = now + SignedDuration::try_from(SETTLE).unwrap();
        let settled = shared(&client, "default", "hooks-ca", later).await.unwrap();
        assert_eq!(settled.signer, a.signer);
        assert!(settled.settled);
        emu.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_renews_an_expiring_ca_publishes_both_and_signs_with_the_new_one() {
        use crate::admission::certs::{SwappableCert, issue};
        use std::sync::Arc;
        let old = generate_ca_valid_for(10).unwrap();
        let first = issue(&old, &[]).unwrap().certified_key().unwrap();
        let target = Arc::new(SwappableCert::new(first));
        let (tx, mut rx) = tokio::sync::watch::channel(old.cert_pem.clone());
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(reissue_periodically(
            old.clone(),
            None,
            vec![],
            target.clone(),
            tx,
            stop.clone(),
        ));
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("the bundle changed")
            .unwrap();
        let bundle = rx.borrow_and_update().clone();
        assert!(
            bundle.ends_with(&old.cert_pem) && !bundle.starts_with(&old.cert_pem),
            "{bundle}"
        );
        let new_ca = CertificateDer::from_pem_slice(bundle.as_bytes()).unwrap();
        let served = target.current();
        assert_eq!(
            served.cert[1], new_ca,
            "the served certificate is signed by the new CA"
        );
        // The new CA has a year: the next checks keep it and the certificate. Time is
        // paused (virtual), so this sleep runs exactly three checks, not a wait for one.
        tokio::time::sleep(CHECK_EVERY * 3).await;
        assert!(!rx.has_changed().unwrap());
        assert!(Arc::ptr_eq(&served, &target.current()));
        stop.cancel();
        task.await.unwrap();
    }
}
