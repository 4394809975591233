//! Sealing the bootstrap record: a 256-bit key derived from the join token's secret with
//! argon2id and a random salt, AES-256-GCM with a random nonce; a wrong secret fails the
//! authentication tag, which is how a wrong token is told apart.

use aes_gcm::aead::Aead;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::BootstrapError;

/// The record as stored: what was used to seal it and the ciphertext, base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// `argon2id+aes256gcm`; anything else is refused.
    pub scheme: String,
    pub salt: String,
    pub nonce: String,
    pub ciphertext: String,
}

const SCHEME: &str = "argon2id+aes256gcm";
/// argon2id cost: 8 MiB, 3 passes (the token secret is 128 random bits unless a person chose it).
const MEMORY_KIB: u32 = 8 * 1024;
const PASSES: u32 = 3;

fn engine() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn derive(secret: &str, salt: &[u8]) -> Result<[u8; 32], BootstrapError> {
    let params = argon2::Params::new(MEMORY_KIB, PASSES, 1, Some(32))
        .map_err(|e| BootstrapError::Seal(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = [0u8; 32];
    argon
        .hash_password_into(secret.as_bytes(), salt, &mut key)
        .map_err(|e| BootstrapError::Seal(e.to_string()))?;
    Ok(key)
}

fn random<const N: usize>() -> Result<[u8; N], BootstrapError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| BootstrapError::Seal(e.to_string()))?;
    Ok(bytes)
}

/// `plain` sealed under `secret`.
pub fn seal(plain: &[u8], secret: &str) -> Result<Sealed, BootstrapError> {
    let salt = random::<16>()?;
    let nonce = random::<12>()?;
    let key = derive(secret, &salt)?;
    let cipher =
        Aes256Gcm::new_from_slice(&key).map_err(|e| BootstrapError::Seal(e.to_string()))?;
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&nonce), plain)
        .map_err(|e| BootstrapError::Seal(e.to_string()))?;
    Ok(Sealed {
        scheme: SCHEME.into(),
        salt: engine().encode(salt),
        nonce: engine().encode(nonce),
        ciphertext: engine().encode(ciphertext),
    })
}

/// The plaintext of `sealed`; [`BootstrapError::WrongToken`] when `secret` is not the one it
/// was sealed with.
pub fn open(sealed: &Sealed, secret: &str) -> Result<Vec<u8>, BootstrapError> {
    if sealed.scheme != SCHEME {
        return Err(BootstrapError::Corrupt(format!(
            "unknown scheme {:?}",
            sealed.scheme
        )));
    }
    let field = |name: &str, text: &str| {
        engine()
            .decode(text)
            .map_err(|e| BootstrapError::Corrupt(format!("{name}: {e}")))
    };
    let salt = field("salt", &sealed.salt)?;
    let nonce = field("nonce", &sealed.nonce)?;
    let ciphertext = field("ciphertext", &sealed.ciphertext)?;
    if nonce.len() != 12 {
        return Err(BootstrapError::Corrupt("nonce is not 12 bytes".into()));
    }
    let key = derive(secret, &salt)?;
    let cipher =
        Aes256Gcm::new_from_slice(&key).map_err(|e| BootstrapError::Seal(e.to_string()))?;
    cipher
        .decrypt(Nonce::from_slice(&nonce), ciphertext.as_slice())
        .map_err(|_| BootstrapError::WrongToken)
}
