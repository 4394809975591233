//! Password hashing: argon2id PHC strings (the `argon2` crate's defaults), the minimum length
//! rule, and a dummy verification so unknown names cost as much time as wrong passwords.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::AccountsError;

/// The shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;
/// The longest password accepted (hashing cost stays bounded).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Refuses a password shorter than [`MIN_PASSWORD_LEN`] characters or longer than
/// [`MAX_PASSWORD_LEN`] bytes.
pub fn check_rules(password: &str) -> Result<(), AccountsError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(AccountsError::Invalid(format!(
            "the password is too short: use at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(AccountsError::Invalid(format!(
            "the password is too long: use at most {MAX_PASSWORD_LEN} bytes"
        )));
    }
    Ok(())
}

/// The argon2id PHC string of `password` with a fresh random salt.
pub fn hash(password: &str) -> Result<String, AccountsError> {
    let salt: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| AccountsError::Internal(format!("encoding a password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountsError::Internal(format!("hashing a password: {e}")))
}

/// Whether `password` matches the PHC string `phc` (false for a malformed string).
pub fn verify(phc: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Spends the time of one verification without an account: a login with an unknown name
/// takes as long as one with a wrong password.
pub fn verify_dummy(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let phc = DUMMY.get_or_init(|| hash("mini-dummy-password").unwrap_or_default());
    let _ = verify(phc, password);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_argon2id_phc_and_verifies() {
        let phc = hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify(&phc, "correct horse"));
        assert!(!verify(&phc, "wrong horse"));
    }

    #[test]
    fn hash_same_password_twice_uses_different_salts() {
        assert_ne!(hash("password1").unwrap(), hash("password1").unwrap());
    }

    #[test]
    fn verify_malformed_hash_is_false() {
        assert!(!verify("plaintext", "plaintext"));
    }

    #[test]
    fn check_rules_short_password_is_refused() {
        assert!(check_rules("short").is_err());
        assert!(check_rules("long enough").is_ok());
    }
}
