//! The webhook client's certificate as Python's `ssl.SSLSocket.getpeercert()` describes it
//! (Kopf's `sslpeer` kwarg): `subject` and `issuer` as lists of RDNs of `[name, value]`
//! pairs with OpenSSL's long attribute names, `version`, `serialNumber` (upper-case hex),
//! `notBefore`/`notAfter` (`"Jan  5 09:00:00 2026 GMT"`) and `subjectAltName`.

use serde_json::{Value, json};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::X509Name;

/// The description of a (verified) DER certificate; `{}` if it cannot be parsed (the TLS
/// layer verified it, so that does not happen in practice).
pub fn describe(der: &[u8]) -> Value {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return json!({});
    };
    let mut out = serde_json::Map::new();
    out.insert("subject".into(), name(cert.subject()));
    out.insert("issuer".into(), name(cert.issuer()));
    out.insert("version".into(), json!(cert.version().0 + 1));
    out.insert("serialNumber".into(), json!(serial(cert.raw_serial())));
    out.insert(
        "notBefore".into(),
        json!(time(cert.validity().not_before.timestamp())),
    );
    out.insert(
        "notAfter".into(),
        json!(time(cert.validity().not_after.timestamp())),
    );
    let alt: Vec<Value> = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext.value.general_names.iter().filter_map(alt_name).collect(),
        _ => Vec::new(),
    };
    if !alt.is_empty() {
        out.insert("subjectAltName".into(), Value::Array(alt));
    }
    Value::Object(out)
}

/// `((("commonName", "x"),), ...)`: one list per RDN.
fn name(name: &X509Name<'_>) -> Value {
    name.iter()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let key = long_name(&attr.attr_type().to_id_string());
                    json!([key, attr.as_str().unwrap_or_default()])
                })
                .collect::<Vec<Value>>()
        })
        .map(Value::Array)
        .collect::<Vec<Value>>()
        .into()
}

/// OpenSSL's long names of the usual attributes; others by their dotted OID, as OpenSSL.
fn long_name(oid: &str) -> String {
    let known = match oid {
        "2.5.4.3" => "commonName",
        "2.5.4.4" => "surname",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "countryName",
        "2.5.4.7" => "localityName",
        "2.5.4.8" => "stateOrProvinceName",
        "2.5.4.9" => "streetAddress",
        "2.5.4.10" => "organizationName",
        "2.5.4.11" => "organizationalUnitName",
        "2.5.4.12" => "title",
        "2.5.4.42" => "givenName",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "0.9.2342.19200300.100.1.25" => "domainComponent",
        "0.9.2342.19200300.100.1.1" => "userId",
        _ => return oid.to_owned(),
    };
    known.to_owned()
}

/// The serial's magnitude in upper-case hex, two digits per byte (OpenSSL's form).
fn serial(raw: &[u8]) -> String {
    let start = raw
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    raw[start..].iter().map(|b| format!("{b:02X}")).collect()
}

/// `"Mon DD HH:MM:SS YYYY GMT"`, the day space-padded (OpenSSL's `ASN1_TIME_print`).
fn time(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.strftime("%b %e %H:%M:%S %Y GMT").to_string())
        .unwrap_or_default()
}

/// `("DNS", "x")`, `("IP Address", "1.2.3.4")`, `("email", ...)`, `("URI", ...)`.
fn alt_name(general: &GeneralName<'_>) -> Option<Value> {
    let (kind, value) = match general {
        GeneralName::DNSName(dns) => ("DNS", (*dns).to_owned()),
        GeneralName::RFC822Name(email) => ("email", (*email).to_owned()),
        GeneralName::URI(uri) => ("URI", (*uri).to_owned()),
        GeneralName::IPAddress(bytes) => ("IP Address", ip_address(bytes)?),
        _ => return None,
    };
    Some(json!([kind, value]))
}

/// IPv4 dotted; IPv6 as eight upper-case groups without compression (as Python shows it).
fn ip_address(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(bytes.iter().map(u8::to_string).collect::<Vec<_>>().join(".")),
        16 => Some(
            bytes
                .chunks(2)
                .map(|pair| format!("{:X}", u16::from_be_bytes([pair[0], pair[1]])))
                .collect::<Vec<_>>()
                .join(":"),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_reads_as_getpeercert_shows_it() {
        let mut params = rcgen::CertificateParams::new(vec!["client.example.test".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "client");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "kopf");
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0x0A, 0xBC]));
        params.not_before = rcgen::date_time_ymd(2026, 1, 5);
        params.not_after = rcgen::date_time_ymd(2027, 12, 25);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let peer = describe(cert.der());
        assert_eq!(
            peer["subject"],
            json!([[["commonName", "client"]], [["organizationName", "kopf"]]])
        );
        assert_eq!(peer["issuer"], peer["subject"]);
        assert_eq!(peer["version"], 3);
        assert_eq!(peer["serialNumber"], "0ABC");
        assert_eq!(peer["notBefore"], "Jan  5 00:00:00 2026 GMT");
        assert_eq!(peer["notAfter"], "Dec 25 00:00:00 2027 GMT");
        assert_eq!(
            peer["subjectAltName"],
            json!([["DNS", "client.example.test"], ["IP Address", "127.0.0.1"]])
        );
        assert_eq!(describe(b"not a certificate"), json!({}));
    }
}
