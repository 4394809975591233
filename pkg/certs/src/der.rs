//! Minimal DER helpers: encoding X.509 names and rewriting a certificate's issuer/subject.
//!
//! rcgen keeps one value per attribute type in a distinguished name, but Kubernetes client
//! certificates carry one `O` per group, and a signed CSR must keep its subject byte for byte.
//! So certificates are first produced by rcgen and then have their issuer and subject replaced
//! with exact DER before being re-signed with the CA key.

use rcgen::SigningKey;

use crate::CertError;

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
const TAG_UTF8_STRING: u8 = 0x0c;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_VERSION: u8 = 0xa0;

/// DER encoding of the `commonName` attribute type (2.5.4.3).
const OID_COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];
/// DER encoding of the `organizationName` attribute type (2.5.4.10).
const OID_ORGANIZATION: [u8; 3] = [0x55, 0x04, 0x0a];

fn malformed(reason: &str) -> CertError {
    CertError::Generate(format!("malformed der: {reason}"))
}

/// Encodes a DER length.
fn encode_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let significant = &bytes[skip..];
    out.push(0x80 | significant.len() as u8);
    out.extend_from_slice(significant);
}

/// Wraps `content` in a tag-length-value element.
pub(crate) fn wrap(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    encode_len(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

/// Reads the element at the start of `input`: returns (header length, content length).
fn read_header(input: &[u8]) -> Result<(usize, usize), CertError> {
    let tag = *input
        .first()
        .ok_or_else(|| malformed("unexpected end of input"))?;
    if tag & 0x1f == 0x1f {
        return Err(malformed("multi-byte tags are not supported"));
    }
    let first = *input.get(1).ok_or_else(|| malformed("missing length"))?;
    let (header, len) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err(malformed("unsupported length encoding"));
        }
        let bytes = input
            .get(2..2 + n)
            .ok_or_else(|| malformed("truncated length"))?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (2 + n, len)
    };
    if input.len() < header + len {
        return Err(malformed("truncated element"));
    }
    Ok((header, len))
}

/// Splits `input` into its consecutive complete elements.
fn split_elements(mut input: &[u8]) -> Result<Vec<&[u8]>, CertError> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let (header, len) = read_header(input)?;
        let (element, rest) = input.split_at(header + len);
        out.push(element);
        input = rest;
    }
    Ok(out)
}

/// The content of the element at the start of `input`, which must have tag `tag`.
fn content_of(input: &[u8], tag: u8) -> Result<&[u8], CertError> {
    if input.first() != Some(&tag) {
        return Err(malformed("unexpected tag"));
    }
    let (header, len) = read_header(input)?;
    Ok(&input[header..header + len])
}

fn attribute(oid: &[u8], value: &str) -> Vec<u8> {
    let mut atv = wrap(TAG_OID, oid);
    atv.extend_from_slice(&wrap(TAG_UTF8_STRING, value.as_bytes()));
    wrap(TAG_SET, &wrap(TAG_SEQUENCE, &atv))
}

/// A DER X.509 `Name` with one `O` RDN per organization followed by the `CN` RDN (the order
/// Go's `pkix.Name` uses), all values as UTF8String.
pub(crate) fn encode_name(common_name: &str, organizations: &[String]) -> Vec<u8> {
    let mut rdns = Vec::new();
    for org in organizations {
        rdns.extend_from_slice(&attribute(&OID_ORGANIZATION, org));
    }
    rdns.extend_from_slice(&attribute(&OID_COMMON_NAME, common_name));
    wrap(TAG_SEQUENCE, &rdns)
}

/// Replaces the issuer and subject of the DER certificate `cert_der` with the given DER names
/// and re-signs it with `key` (which must use the signature algorithm named in the
/// certificate).
pub(crate) fn replace_names_and_resign(
    cert_der: &[u8],
    issuer: &[u8],
    subject: &[u8],
    key: &impl SigningKey,
) -> Result<Vec<u8>, CertError> {
    let cert = split_elements(content_of(cert_der, TAG_SEQUENCE)?)?;
    let [tbs, algorithm, _signature] = cert.as_slice() else {
        return Err(malformed("certificate must have three elements"));
    };
    let mut fields = split_elements(content_of(tbs, TAG_SEQUENCE)?)?;
    // TBSCertificate: [0] version (optional), serial, signature, issuer, validity, subject, ...
    let first = usize::from(fields.first().and_then(|f| f.first()) == Some(&TAG_VERSION));
    let issuer_index = first + 2;
    let subject_index = first + 4;
    if fields.len() <= subject_index {
        return Err(malformed("tbs certificate is too short"));
    }
    fields[issuer_index] = issuer;
    fields[subject_index] = subject;
    let new_tbs = wrap(TAG_SEQUENCE, &fields.concat());
    let signature = key
        .sign(&new_tbs)
        .map_err(|e| CertError::Generate(format!("signing certificate: {e}")))?;
    let mut bits = Vec::with_capacity(signature.len() + 1);
    bits.push(0);
    bits.extend_from_slice(&signature);
    let mut body = new_tbs;
    body.extend_from_slice(algorithm);
    body.extend_from_slice(&wrap(TAG_BIT_STRING, &bits));
    Ok(wrap(TAG_SEQUENCE, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_use_short_and_long_forms() {
        let short = wrap(0x04, &[1; 5]);
        assert_eq!(&short[..2], &[0x04, 5]);
        let long = wrap(0x04, &[1; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let (header, len) = read_header(&long).unwrap();
        assert_eq!((header, len), (4, 300));
    }

    #[test]
    fn truncated_input_is_rejected() {
        let long = wrap(0x04, &[1; 300]);
        assert!(read_header(&long[..100]).is_err());
        assert!(split_elements(&[0x30]).is_err());
    }

    #[test]
    fn name_with_groups_parses_with_every_organization() {
        let name = encode_name("alice", &["dev".to_string(), "ops".to_string()]);
        let (rest, parsed) =
            <x509_parser::x509::X509Name as x509_parser::prelude::FromDer<_>>::from_der(&name)
                .unwrap();
        assert!(rest.is_empty());
        let cn: Vec<_> = parsed
            .iter_common_name()
            .map(|a| a.as_str().unwrap())
            .collect();
        let orgs: Vec<_> = parsed
            .iter_organization()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(cn, ["alice"]);
        assert_eq!(orgs, ["dev", "ops"]);
    }
}
