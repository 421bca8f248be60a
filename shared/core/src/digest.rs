//! OMA-DM `syncml:auth-md5` digests (PROTOCOL §8):
//! `b64(md5(b64(md5(name:secret)):nonce))`, with the nonce as raw bytes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest, Md5};

/// `b64(md5(name:secret))`: the part of the digest that does not change per nonce, and the
/// only thing the server stores.
pub fn digest_key(name: &str, secret: &str) -> String {
    let mut h = Md5::new();
    h.update(name.as_bytes());
    h.update(b":");
    h.update(secret.as_bytes());
    B64.encode(h.finalize())
}

/// The digest a client sends for a given stored key and nonce.
pub fn digest_response(digest_key: &str, nonce: &[u8]) -> String {
    let mut h = Md5::new();
    h.update(digest_key.as_bytes());
    h.update(b":");
    h.update(nonce);
    B64.encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_formula() {
        let key = digest_key("dev", "secret");
        assert_eq!(key.len(), 24);
        let d1 = digest_response(&key, b"\x01\x02");
        assert_ne!(d1, digest_response(&key, b"\x01\x03"));
    }
}
