//! The ServiceAccount token signing key: an ECDSA P-256 key kept beside the PKI.

use std::path::Path;

use rcgen::KeyPair;

use crate::fsutil::{read_optional, write_atomic};
use crate::CertError;

/// A PKCS#8 private key and its SubjectPublicKeyInfo, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub private_pem: String,
    pub public_pem: String,
}

/// A new ES256 signing key.
pub fn generate_signing_key() -> Result<SigningKey, CertError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| CertError::Generate(format!("generating signing key: {e}")))?;
    Ok(SigningKey {
        private_pem: key.serialize_pem(),
        public_pem: key.public_key_pem(),
    })
}

/// Loads the signing key at `path`, creating it (0600) when missing.
pub fn ensure_signing_key(path: &Path) -> Result<SigningKey, CertError> {
    if let Some(pem) = read_optional(path)? {
        let key = KeyPair::from_pem(&pem).map_err(|e| CertError::Parse {
            what: path.display().to_string(),
            reason: e.to_string(),
        })?;
        return Ok(SigningKey {
            private_pem: pem,
            public_pem: key.public_key_pem(),
        });
    }
    let key = generate_signing_key()?;
    write_atomic(path, key.private_pem.as_bytes(), 0o600)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_signing_key_twice_returns_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sa.key");
        let a = ensure_signing_key(&path).unwrap();
        let b = ensure_signing_key(&path).unwrap();
        assert_eq!(a, b);
        assert!(a.public_pem.contains("PUBLIC KEY"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
