//! Password hashing with argon2id (RFC 9106 second recommended parameters, the argon2
//! crate's defaults), stored as PHC strings.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::rngs::OsRng;

pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Constant-effort check: an unknown user is checked against a dummy hash so response
/// time does not reveal which UPNs exist.
pub fn verify_password(password: &[u8], phc: Option<&str>) -> bool {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash_password("winmdm-dummy-password").unwrap_or_default());
    let (phc, known) = match phc {
        Some(p) => (p, true),
        None => (dummy.as_str(), false),
    };
    let ok = PasswordHash::new(phc)
        .map(|h| Argon2::default().verify_password(password, &h).is_ok())
        .unwrap_or(false);
    ok && known
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(b"correct horse", Some(&h)));
        assert!(!verify_password(b"wrong", Some(&h)));
        assert!(!verify_password(b"winmdm-dummy-password", None));
    }
}
