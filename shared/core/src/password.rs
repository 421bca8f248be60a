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

/// A hash with the same parameters as real ones, for unknown users. Precomputed so the
/// first sign-in after a cold start does not pay for hashing it (see `print_dummy_phc`).
const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$Le6F3IXEVgk9Isxq4Wftiw$2Uj+RVHbYzd2YE3KwXKDbZA+iGqaGYFQf92QIe9OnGI";

/// Constant-effort check: an unknown user is checked against a dummy hash so response
/// time does not reveal which UPNs exist.
pub fn verify_password(password: &[u8], phc: Option<&str>) -> bool {
    let (phc, known) = match phc {
        Some(p) => (p, true),
        None => (DUMMY_PHC, false),
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
        // The dummy hash is a valid hash with the current parameters.
        assert!(verify_password(b"winmdm-dummy-password", Some(DUMMY_PHC)));
        assert_eq!(
            PasswordHash::new(DUMMY_PHC).unwrap().params.to_string(),
            PasswordHash::new(&h).unwrap().params.to_string()
        );
    }
}

#[cfg(test)]
mod dummy {
    #[test]
    #[ignore = "prints a fresh dummy hash for DUMMY_PHC"]
    fn print_dummy_phc() {
        println!("{}", super::hash_password("winmdm-dummy-password").unwrap());
    }
}
