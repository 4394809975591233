//! Client identities (user and groups) taken from verified client certificates.

use crate::ca::parse_cert;
use crate::CertError;

/// User and groups from a verified client certificate (CN and O).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub user: String,
    pub groups: Vec<String>,
}

/// The identity in a DER certificate: the first CN is the user, every O is a group.
pub fn identity_from_der(cert_der: &[u8]) -> Result<ClientIdentity, CertError> {
    let what = "client certificate";
    let cert = parse_cert(cert_der, what)?;
    let subject = cert.subject();
    let invalid = |e: x509_parser::error::X509Error| CertError::Parse {
        what: what.to_string(),
        reason: format!("subject attribute is not a string: {e}"),
    };
    let user = subject
        .iter_common_name()
        .next()
        .ok_or_else(|| CertError::Parse {
            what: what.to_string(),
            reason: "subject has no common name".to_string(),
        })?
        .as_str()
        .map_err(invalid)?
        .to_string();
    let groups = subject
        .iter_organization()
        .map(|o| o.as_str().map(str::to_string).map_err(invalid))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ClientIdentity { user, groups })
}
