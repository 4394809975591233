//! When leaf certificates are renewed (at two thirds of their life), what a certificate says
//! (subject, issuer, validity) and CA trust bundles (several CAs trusted during a rotation).

use std::time::Duration;

use crate::ca::{first_cert_der, parse_cert};
use crate::tls::pem_certs;
use crate::CertError;

/// The fraction of a leaf's life after which it is renewed: numerator and denominator.
pub const RENEW_FRACTION: (u32, u32) = (2, 3);

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    /// Seconds since the epoch.
    pub not_before: i64,
    /// Seconds since the epoch.
    pub not_after: i64,
    pub is_ca: bool,
}

impl CertInfo {
    /// The first certificate of a PEM text.
    pub fn from_pem(pem: &str, what: &str) -> Result<Self, CertError> {
        let der = first_cert_der(pem, what)?;
        Self::from_der(&der, what)
    }

    /// A DER certificate.
    pub fn from_der(der: &[u8], what: &str) -> Result<Self, CertError> {
        let cert = parse_cert(der, what)?;
        let is_ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        Ok(CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            is_ca,
        })
    }

    /// When it was issued: `not_before` without the back-dating (a tenth of the lifetime, at
    /// most five minutes; see `CertAuthority::issue_client_for`).
    pub fn issued_at(&self) -> i64 {
        let total = (self.not_after - self.not_before).max(0);
        self.not_before + (total / 11).min(300)
    }

    /// When this certificate is due for renewal: [`renew_at`] of its validity.
    pub fn renew_at(&self) -> i64 {
        renew_at(self.not_before, self.not_after)
    }
}

/// The moment (seconds since the epoch) two thirds into `[not_before, not_after]`.
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    let life = (not_after - not_before).max(0);
    not_before + life * i64::from(RENEW_FRACTION.0) / i64::from(RENEW_FRACTION.1)
}

/// How long to wait from `now` until a certificate valid over `[not_before, not_after]` is
/// due; zero when it is due already.
pub fn until_renewal(not_before: i64, not_after: i64, now: i64) -> Duration {
    Duration::from_secs(u64::try_from(renew_at(not_before, not_after) - now).unwrap_or(0))
}

/// Whether the first certificate of `pem` is due for renewal at `now` (an unreadable
/// certificate is due).
pub fn renewal_due(pem: &str, now: i64) -> bool {
    CertInfo::from_pem(pem, "certificate").map_or(true, |c| c.renew_at() <= now)
}

/// The PEM blocks of every certificate of `pem`, each re-encoded on its own.
pub fn split_bundle(pem: &str) -> Result<Vec<String>, CertError> {
    Ok(pem_certs(pem, "ca bundle")?
        .iter()
        .map(|der| crate::ca::pem_encode("CERTIFICATE", der))
        .collect())
}

/// A trust bundle of `cas` (PEM each), in order, each certificate once.
pub fn join_bundle<'a>(cas: impl IntoIterator<Item = &'a str>) -> Result<String, CertError> {
    let mut seen = Vec::new();
    let mut out = String::new();
    for pem in cas {
        for cert in split_bundle(pem)? {
            if !seen.contains(&cert) {
                out.push_str(&cert);
                seen.push(cert);
            }
        }
    }
    Ok(out)
}

/// The DNS names and IPs of the first certificate of a PEM text.
pub fn cert_sans_of_pem(pem: &str) -> Result<crate::SubjectAltNames, CertError> {
    let der = first_cert_der(pem, "certificate")?;
    let cert = parse_cert(&der, "certificate")?;
    Ok(crate::ca::cert_sans(&cert))
}

/// Seconds since the epoch as RFC 3339 in UTC (`2026-01-02T03:04:05Z`).
pub fn format_unix(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// Seconds since the epoch now.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Parses a lifetime such as `90s`, `2m`, `12h`, `365d` (a bare number is seconds).
pub fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected a number and s, m, h or d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {other:?}, use s, m, h or d"
            ))
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertAuthority, SubjectAltNames};

    #[test]
    fn renew_at_two_thirds_of_the_life() {
        assert_eq!(renew_at(1000, 1300), 1200);
        assert_eq!(renew_at(0, 90), 60);
        assert_eq!(renew_at(50, 50), 50);
    }

    #[test]
    fn until_renewal_counts_down_and_stops_at_zero() {
        assert_eq!(until_renewal(0, 300, 100), Duration::from_secs(100));
        assert_eq!(until_renewal(0, 300, 200), Duration::ZERO);
        assert_eq!(until_renewal(0, 300, 250), Duration::ZERO);
    }

    #[test]
    fn short_lived_leaf_renewal_is_due_after_two_thirds_not_before() {
        let ca = CertAuthority::generate("t").unwrap();
        let leaf = ca
            .issue_client_for("u", &[], Duration::from_secs(120))
            .unwrap();
        let info = CertInfo::from_pem(&leaf.cert_pem, "leaf").unwrap();
        let now = now_unix();
        // back-dated by a tenth of the lifetime at most
        assert!(info.not_before >= now - 13 && info.not_before <= now);
        assert!((info.not_after - now - 120).abs() <= 2);
        assert!(!renewal_due(&leaf.cert_pem, now));
        assert!(!renewal_due(&leaf.cert_pem, info.renew_at() - 1));
        assert!(renewal_due(&leaf.cert_pem, info.renew_at()));
        assert!((info.issued_at() - now).abs() <= 2);
        let expected = info.not_before + (info.not_after - info.not_before) * 2 / 3;
        assert_eq!(info.renew_at(), expected);
    }

    #[test]
    fn renewal_due_unreadable_certificate_is_due() {
        assert!(renewal_due("not a pem", 0));
    }

    #[test]
    fn cert_info_names_subject_issuer_and_ca() {
        let ca = CertAuthority::generate("mini-ca@1").unwrap();
        let leaf = ca
            .issue_server("kube-apiserver", &SubjectAltNames::default())
            .unwrap();
        let info = CertInfo::from_pem(&leaf.cert_pem, "leaf").unwrap();
        assert_eq!(info.subject, "CN=kube-apiserver");
        assert_eq!(info.issuer, "CN=mini-ca@1");
        assert!(!info.is_ca);
        assert!(CertInfo::from_pem(ca.cert_pem(), "ca").unwrap().is_ca);
    }

    #[test]
    fn join_bundle_keeps_order_and_drops_duplicates() {
        let a = CertAuthority::generate("a").unwrap();
        let b = CertAuthority::generate("b").unwrap();
        let both = join_bundle([b.cert_pem(), a.cert_pem(), b.cert_pem()]).unwrap();
        let parts = split_bundle(&both).unwrap();
        assert_eq!(parts.len(), 2);
        let subjects: Vec<_> = parts
            .iter()
            .map(|p| CertInfo::from_pem(p, "ca").unwrap().subject)
            .collect();
        assert_eq!(subjects, ["CN=b", "CN=a"]);
    }

    #[test]
    fn parse_lifetime_units_and_errors() {
        assert_eq!(parse_lifetime("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_lifetime("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_lifetime("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_lifetime("3h"), Ok(Duration::from_secs(10_800)));
        assert!(parse_lifetime("2w").is_err());
        assert!(parse_lifetime("m").is_err());
    }

    #[test]
    fn issue_for_lifetime_under_a_minute_is_refused() {
        let ca = CertAuthority::generate("t").unwrap();
        let (csr, _) = crate::generate_csr("n", &SubjectAltNames::default()).unwrap();
        assert!(ca
            .sign_csr_for(&csr, false, Duration::from_secs(30))
            .is_err());
    }
}
