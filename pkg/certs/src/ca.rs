//! The cluster certificate authority: generating, loading, issuing and signing certificates.

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

use crate::{der, CertError};

/// CA certificates are valid for ten years.
pub const CA_VALIDITY_DAYS: u32 = 3650;
/// Leaf certificates issued by [`CertAuthority::issue_server`] and
/// [`CertAuthority::issue_client`] are valid for one year.
pub const LEAF_VALIDITY_DAYS: u32 = 365;
/// Leaf certificates are back-dated by this much (at most a tenth of their lifetime) to
/// tolerate clock skew between nodes.
const BACKDATE: Duration = Duration::minutes(5);

/// One day, the unit of the `*_days` issuing functions.
const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

fn days(n: u32) -> std::time::Duration {
    DAY * n
}

/// How far a certificate with this lifetime is back-dated.
fn backdate_for(lifetime: Duration) -> Duration {
    BACKDATE.min(lifetime / 10)
}

/// A PEM certificate with its PEM private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The names a serving certificate must cover.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectAltNames {
    pub dns: Vec<String>,
    pub ips: Vec<std::net::IpAddr>,
}

/// A certificate authority that can issue and sign.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: Vec<u8>,
    /// The exact DER of the CA's subject, used as the issuer of everything it signs.
    subject_der: Vec<u8>,
    key_pem: String,
}

impl fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAuthority")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

fn generate_err(context: &str) -> impl Fn(rcgen::Error) -> CertError + '_ {
    move |e| CertError::Generate(format!("{context}: {e}"))
}

fn parse_err(what: &str, reason: impl fmt::Display) -> CertError {
    CertError::Parse {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

/// A random positive 16-byte serial number.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// The DER of the first `CERTIFICATE` block in `pem`.
pub(crate) fn first_cert_der(pem: &str, what: &str) -> Result<Vec<u8>, CertError> {
    let mut reader = pem.as_bytes();
    let cert = rustls_pemfile::certs(&mut reader)
        .next()
        .ok_or_else(|| parse_err(what, "no certificate found in pem"))?
        .map_err(|e| parse_err(what, e))?;
    Ok(cert.to_vec())
}

/// Parses a DER certificate, rejecting trailing data.
pub(crate) fn parse_cert<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, CertError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| parse_err(what, e))?;
    if !rest.is_empty() {
        return Err(parse_err(what, "trailing data after certificate"));
    }
    Ok(cert)
}

/// Loads a PEM private key.
pub(crate) fn parse_key(key_pem: &str, what: &str) -> Result<KeyPair, CertError> {
    KeyPair::from_pem(key_pem).map_err(|e| parse_err(what, e))
}

/// Checks that `key` is the private key for `cert`.
pub(crate) fn key_matches_cert(key: &KeyPair, cert: &X509Certificate<'_>) -> bool {
    key.der_bytes() == cert.public_key().subject_public_key.data.as_ref()
}

impl CertAuthority {
    /// A new self-signed CA (ECDSA P-256, ten years, `CA:TRUE`).
    pub fn generate(common_name: &str) -> Result<Self, CertError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(generate_err("generating ca key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + Duration::days(i64::from(CA_VALIDITY_DAYS));
        let cert = params
            .self_signed(&key)
            .map_err(generate_err("self-signing ca certificate"))?;
        Self::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// Loads a CA from its PEM certificate and PEM (PKCS#8) private key; checks that the key
    /// belongs to the certificate and that the certificate is a CA.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        Self::from_pem_named(cert_pem, key_pem, "ca certificate", "ca key")
    }

    /// [`CertAuthority::from_pem`] with the names (e.g. file paths) used in errors.
    pub(crate) fn from_pem_named(
        cert_pem: &str,
        key_pem: &str,
        cert_what: &str,
        key_what: &str,
    ) -> Result<Self, CertError> {
        let cert_der = first_cert_der(cert_pem, cert_what)?;
        let cert = parse_cert(&cert_der, cert_what)?;
        let is_ca = cert
            .basic_constraints()
            .map_err(|e| parse_err(cert_what, e))?
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(parse_err(
                cert_what,
                "certificate is not a ca (basic constraints ca:true missing)",
            ));
        }
        let key = parse_key(key_pem, key_what)?;
        if !key_matches_cert(&key, &cert) {
            return Err(parse_err(
                key_what,
                "private key does not match the ca certificate",
            ));
        }
        let subject_der = cert.subject().as_raw().to_vec();
        let key_pem = key.serialize_pem();
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key)
            .map_err(|e| parse_err(cert_what, e))?;
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_string(),
            cert_der,
            subject_der,
            key_pem,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.key_pem.clone()
    }

    /// The DER of the CA certificate.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Whether `cert_der` carries a valid signature by this CA and names it as issuer.
    pub fn signed(&self, cert_der: &[u8]) -> bool {
        let Ok(ca) = parse_cert(&self.cert_der, "ca certificate") else {
            return false;
        };
        let Ok((_, cert)) = X509Certificate::from_der(cert_der) else {
            return false;
        };
        cert.issuer().as_raw() == self.subject_der.as_slice()
            && cert.verify_signature(Some(ca.public_key())).is_ok()
    }

    /// A serving certificate (server auth) for the given names.
    pub fn issue_server(
        &self,
        common_name: &str,
        sans: &SubjectAltNames,
    ) -> Result<IssuedCert, CertError> {
        self.issue_server_for(common_name, sans, days(LEAF_VALIDITY_DAYS))
    }

    /// [`CertAuthority::issue_server`] valid for `lifetime`.
    pub fn issue_server_for(
        &self,
        common_name: &str,
        sans: &SubjectAltNames,
        lifetime: std::time::Duration,
    ) -> Result<IssuedCert, CertError> {
        let key = new_leaf_key()?;
        let subject = der::encode_name(common_name, &[]);
        let cert_pem = self.sign(&key, &subject, san_types(sans)?, true, lifetime)?;
        Ok(IssuedCert {
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate: CN = user, O = groups.
    pub fn issue_client(&self, user: &str, groups: &[String]) -> Result<IssuedCert, CertError> {
        self.issue_client_for(user, groups, days(LEAF_VALIDITY_DAYS))
    }

    /// [`CertAuthority::issue_client`] valid for `lifetime`.
    pub fn issue_client_for(
        &self,
        user: &str,
        groups: &[String],
        lifetime: std::time::Duration,
    ) -> Result<IssuedCert, CertError> {
        let key = new_leaf_key()?;
        let subject = der::encode_name(user, groups);
        let cert_pem = self.sign(&key, &subject, Vec::new(), false, lifetime)?;
        Ok(IssuedCert {
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a PEM CSR keeping its subject; `server` adds server-auth usage, else client-auth.
    ///
    /// The CSR's signature is verified. For server certificates the DNS and IP subject
    /// alternative names requested in the CSR are kept; every other requested extension is
    /// ignored (usages are decided here).
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        server: bool,
        validity_days: u32,
    ) -> Result<String, CertError> {
        check_validity(validity_days)?;
        self.sign_csr_for(csr_pem, server, days(validity_days))
    }

    /// [`CertAuthority::sign_csr`] valid for `lifetime`.
    pub fn sign_csr_for(
        &self,
        csr_pem: &str,
        server: bool,
        lifetime: std::time::Duration,
    ) -> Result<String, CertError> {
        check_lifetime(lifetime)?;
        let csr = ParsedCsr::parse(csr_pem, server)?;
        self.sign(&csr.public_key, &csr.subject, csr.sans, server, lifetime)
    }

    /// Signs a PEM CSR as a serving certificate with CN `common_name` (whatever subject the
    /// CSR asks for) and the DNS and IP names the CSR requests, valid for `lifetime`.
    pub fn sign_server_csr_as(
        &self,
        csr_pem: &str,
        common_name: &str,
        lifetime: std::time::Duration,
    ) -> Result<String, CertError> {
        check_lifetime(lifetime)?;
        let csr = ParsedCsr::parse(csr_pem, true)?;
        let subject = der::encode_name(common_name, &[]);
        self.sign(&csr.public_key, &subject, csr.sans, true, lifetime)
    }

    /// The DNS names and IPs a PEM CSR asks for (its signature verified).
    pub fn csr_sans(csr_pem: &str) -> Result<SubjectAltNames, CertError> {
        let csr = ParsedCsr::parse(csr_pem, true)?;
        let mut out = SubjectAltNames::default();
        for san in csr.sans {
            match san {
                SanType::DnsName(d) => out.dns.push(d.as_str().to_string()),
                SanType::IpAddress(ip) => out.ips.push(ip),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Signs a PEM CSR as a client certificate for `user` in `groups` (CN and O), whatever
    /// subject and extensions the CSR asks for; only its key and signature are used.
    pub fn sign_csr_as_client(
        &self,
        csr_pem: &str,
        user: &str,
        groups: &[String],
        validity_days: u32,
    ) -> Result<String, CertError> {
        check_validity(validity_days)?;
        self.sign_csr_as_client_for(csr_pem, user, groups, days(validity_days))
    }

    /// [`CertAuthority::sign_csr_as_client`] valid for `lifetime`.
    pub fn sign_csr_as_client_for(
        &self,
        csr_pem: &str,
        user: &str,
        groups: &[String],
        lifetime: std::time::Duration,
    ) -> Result<String, CertError> {
        check_lifetime(lifetime)?;
        let csr = ParsedCsr::parse(csr_pem, false)?;
        let subject = der::encode_name(user, groups);
        self.sign(&csr.public_key, &subject, Vec::new(), false, lifetime)
    }

    /// `other`'s CA certificate re-issued by this CA (same subject and key, `CA:TRUE`, valid
    /// as long as `other`): sent after a leaf of `other` as an intermediate, it lets clients
    /// that trust only this CA verify that leaf (the overlap of a CA rotation).
    pub fn cross_sign(&self, other: &CertAuthority) -> Result<String, CertError> {
        let other_cert = parse_cert(&other.cert_der, "ca certificate")?;
        let not_after = other_cert.validity().not_after.to_datetime();
        let mut params = CertificateParams::default();
        let mut placeholder = DistinguishedName::new();
        placeholder.push(DnType::CommonName, "placeholder");
        params.distinguished_name = placeholder;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        params.not_before = OffsetDateTime::now_utc() - BACKDATE;
        params.not_after = not_after;
        let draft = params
            .signed_by(other.issuer.key(), &self.issuer)
            .map_err(generate_err("cross-signing ca certificate"))?;
        let der = der::replace_names_and_resign(
            draft.der(),
            &self.subject_der,
            &other.subject_der,
            self.issuer.key(),
        )?;
        Ok(pem_encode("CERTIFICATE", &der))
    }

    /// Issues a leaf certificate for `public_key` with the exact DER `subject`.
    fn sign(
        &self,
        public_key: &impl PublicKeyData,
        subject: &[u8],
        sans: Vec<SanType>,
        server: bool,
        lifetime: std::time::Duration,
    ) -> Result<String, CertError> {
        let lifetime = Duration::try_from(lifetime)
            .map_err(|e| CertError::Generate(format!("certificate lifetime: {e}")))?;
        let mut params = CertificateParams::default();
        // rcgen writes a placeholder name; the real issuer and subject are spliced in below.
        let mut placeholder = DistinguishedName::new();
        placeholder.push(DnType::CommonName, "placeholder");
        params.distinguished_name = placeholder;
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        params.not_before = now - backdate_for(lifetime);
        params.not_after = now + lifetime;
        let draft = params
            .signed_by(public_key, &self.issuer)
            .map_err(generate_err("signing certificate"))?;
        let der = der::replace_names_and_resign(
            draft.der(),
            &self.subject_der,
            subject,
            self.issuer.key(),
        )?;
        Ok(pem_encode("CERTIFICATE", &der))
    }
}

fn check_validity(validity_days: u32) -> Result<(), CertError> {
    if validity_days == 0 {
        return Err(CertError::Generate(
            "validity must be at least one day".to_string(),
        ));
    }
    Ok(())
}

fn check_lifetime(lifetime: std::time::Duration) -> Result<(), CertError> {
    if lifetime < std::time::Duration::from_secs(60) {
        return Err(CertError::Generate(
            "certificate lifetime must be at least one minute".to_string(),
        ));
    }
    Ok(())
}

/// The parts of a verified CSR a certificate is built from.
struct ParsedCsr {
    public_key: SubjectPublicKeyInfo,
    subject: Vec<u8>,
    sans: Vec<SanType>,
}

impl ParsedCsr {
    /// Parses the first CSR in `csr_pem` and verifies its signature; keeps the requested DNS
    /// and IP names when `with_sans`.
    fn parse(csr_pem: &str, with_sans: bool) -> Result<Self, CertError> {
        use x509_parser::certification_request::X509CertificationRequest;

        let mut reader = csr_pem.as_bytes();
        let csr_der = loop {
            match rustls_pemfile::read_one(&mut reader).map_err(|e| parse_err("csr", e))? {
                Some(rustls_pemfile::Item::Csr(der)) => break der,
                Some(_) => continue,
                None => return Err(parse_err("csr", "no certificate request found in pem")),
            }
        };
        let (rest, csr) =
            X509CertificationRequest::from_der(&csr_der).map_err(|e| parse_err("csr", e))?;
        if !rest.is_empty() {
            return Err(parse_err("csr", "trailing data after certificate request"));
        }
        csr.verify_signature()
            .map_err(|e| parse_err("csr", format!("invalid signature: {e}")))?;
        let info = &csr.certification_request_info;
        let public_key = SubjectPublicKeyInfo::from_der(info.subject_pki.raw)
            .map_err(|e| parse_err("csr", format!("unsupported public key: {e}")))?;
        let mut sans = Vec::new();
        if with_sans {
            for ext in csr.requested_extensions().into_iter().flatten() {
                if let ParsedExtension::SubjectAlternativeName(san) = ext {
                    for name in &san.general_names {
                        sans.push(san_from_general(name)?);
                    }
                }
            }
        }
        Ok(ParsedCsr {
            public_key,
            subject: info.subject.as_raw().to_vec(),
            sans,
        })
    }
}

/// A new ECDSA P-256 key and a PEM CSR for it with subject CN `common_name` and the given
/// subject alternative names: what a node agent sends to be signed. Returns `(csr, key)`.
pub fn generate_csr(
    common_name: &str,
    sans: &SubjectAltNames,
) -> Result<(String, String), CertError> {
    let key = new_leaf_key()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.subject_alt_names = san_types(sans)?;
    let csr = params
        .serialize_request(&key)
        .map_err(generate_err("building certificate request"))?;
    let pem = csr
        .pem()
        .map_err(generate_err("encoding certificate request"))?;
    Ok((pem, key.serialize_pem()))
}

fn new_leaf_key() -> Result<KeyPair, CertError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate_err("generating key"))
}

fn san_types(sans: &SubjectAltNames) -> Result<Vec<SanType>, CertError> {
    let mut out = Vec::with_capacity(sans.dns.len() + sans.ips.len());
    for name in &sans.dns {
        let ia5 = rcgen::string::Ia5String::try_from(name.as_str())
            .map_err(|e| CertError::Generate(format!("invalid dns name {name:?}: {e}")))?;
        out.push(SanType::DnsName(ia5));
    }
    out.extend(sans.ips.iter().copied().map(SanType::IpAddress));
    Ok(out)
}

fn san_from_general(name: &GeneralName<'_>) -> Result<SanType, CertError> {
    match name {
        GeneralName::DNSName(dns) => rcgen::string::Ia5String::try_from(*dns)
            .map(SanType::DnsName)
            .map_err(|e| parse_err("csr", format!("invalid dns name {dns:?}: {e}"))),
        GeneralName::IPAddress(bytes) => ip_from_bytes(bytes)
            .map(SanType::IpAddress)
            .ok_or_else(|| parse_err("csr", format!("invalid ip address length {}", bytes.len()))),
        other => Err(parse_err(
            "csr",
            format!("unsupported subject alternative name {other}"),
        )),
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    if let Ok(octets) = <[u8; 4]>::try_from(bytes) {
        Some(octets.into())
    } else if let Ok(octets) = <[u8; 16]>::try_from(bytes) {
        Some(octets.into())
    } else {
        None
    }
}

/// PEM-encodes `der` with the given label (64-column base64 lines).
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DNS names and IPs in the subject alternative names of a parsed certificate.
pub(crate) fn cert_sans(cert: &X509Certificate<'_>) -> SubjectAltNames {
    let mut out = SubjectAltNames::default();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => out.dns.push((*dns).to_string()),
                GeneralName::IPAddress(bytes) => out.ips.extend(ip_from_bytes(bytes)),
                _ => {}
            }
        }
    }
    out
}
