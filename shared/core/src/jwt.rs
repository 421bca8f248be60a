//! Verifying RS256 JSON Web Tokens against a JSON Web Key Set: OpenID Connect ID tokens
//! for the console (and any other issuer-signed token).
//!
//! Strict by construction: the only algorithm is RS256 (RSASSA-PKCS1-v1_5 with SHA-256,
//! keys of 2048 bits or more), taken from our configuration, never from the token. A token
//! saying `none`, `HS256` (the "public key as HMAC secret" confusion) or anything else is
//! refused before any key is looked at. The key is the set's RSA key with the token's
//! `kid`; then issuer, audience, expiry and not-before are checked with a small skew.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;

/// Clock skew tolerated on `exp` and `nbf`.
pub const SKEW_SECONDS: i64 = 120;
/// Longest token accepted (ID tokens are a few KB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("not a JSON Web Token: {0}")]
    Malformed(&'static str),
    #[error("token algorithm {0:?} is not RS256")]
    Algorithm(String),
    /// No key with the token's `kid`: the caller may refetch the key set once.
    #[error("no key {0:?} in the issuer's key set")]
    UnknownKey(String),
    #[error("signature does not verify")]
    Signature,
    #[error("issuer {0:?} is not the expected one")]
    Issuer(String),
    #[error("audience is not this application")]
    Audience,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("claim {0} is missing or invalid")]
    Claim(&'static str),
}

/// One RSA public key of a key set.
#[derive(Clone, PartialEq, Eq)]
pub struct RsaKey {
    pub kid: String,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl std::fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RsaKey({}, {} bits)", self.kid, self.n.len() * 8)
    }
}

/// The RSA signing keys of a JWKS document (others — EC, encryption keys — are ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    pub keys: Vec<RsaKey>,
}

#[derive(Deserialize)]
struct JwkJson {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

impl KeySet {
    pub fn from_json(bytes: &[u8]) -> Result<Self, JwtError> {
        #[derive(Deserialize)]
        struct Doc {
            keys: Vec<JwkJson>,
        }
        let doc: Doc =
            serde_json::from_slice(bytes).map_err(|_| JwtError::Malformed("key set JSON"))?;
        let keys = doc
            .keys
            .into_iter()
            .filter(|k| k.kty == "RSA")
            .filter(|k| k.use_.as_deref().is_none_or(|u| u == "sig"))
            .filter(|k| k.alg.as_deref().is_none_or(|a| a == "RS256"))
            .filter_map(|k| {
                Some(RsaKey {
                    kid: k.kid?,
                    n: B64URL.decode(k.n?.trim_end_matches('=')).ok()?,
                    e: B64URL.decode(k.e?.trim_end_matches('=')).ok()?,
                })
            })
            .collect();
        Ok(Self { keys })
    }

    fn key(&self, kid: &str) -> Option<&RsaKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }
}

/// A token's header and claims, split and decoded but not yet trusted.
#[derive(Debug)]
pub struct Unverified<'a> {
    pub kid: String,
    signed: &'a str,
    signature: Vec<u8>,
    claims: Value,
}

/// Splits a compact JWS and refuses every algorithm but RS256, before any key is used.
pub fn decode(token: &str) -> Result<Unverified<'_>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::Malformed("too long"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("not three parts"));
    };
    let header: Value = B64URL
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwtError::Malformed("header"))?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if alg != "RS256" {
        return Err(JwtError::Algorithm(alg.to_owned()));
    }
    if header.get("crit").is_some() {
        return Err(JwtError::Malformed("critical header extensions"));
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(JwtError::Malformed("no kid"))?
        .to_owned();
    let claims: Value = B64URL
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(Value::is_object)
        .ok_or(JwtError::Malformed("claims"))?;
    let signature = B64URL
        .decode(sig)
        .map_err(|_| JwtError::Malformed("signature encoding"))?;
    Ok(Unverified {
        kid,
        signed: &token[..h.len() + 1 + c.len()],
        signature,
        claims,
    })
}

/// What the verified token must say.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// Accepted issuers (`iss`, compared exactly).
    pub issuers: &'a [String],
    /// Accepted audiences: one of them must be the token's `aud` (or in it, if a list).
    pub audiences: &'a [String],
}

impl Unverified<'_> {
    /// Verifies the signature with the key set and checks the registered claims; the
    /// trusted claims.
    pub fn verify(
        self,
        keys: &KeySet,
        expect: &Expect<'_>,
        now: OffsetDateTime,
    ) -> Result<Value, JwtError> {
        use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
        let key = keys
            .key(&self.kid)
            .ok_or_else(|| JwtError::UnknownKey(self.kid.clone()))?;
        RsaPublicKeyComponents {
            n: &key.n,
            e: &key.e,
        }
        .verify(
            &RSA_PKCS1_2048_8192_SHA256,
            self.signed.as_bytes(),
            &self.signature,
        )
        .map_err(|_| JwtError::Signature)?;
        let c = self.claims;
        let iss = c.get("iss").and_then(Value::as_str).unwrap_or("");
        if !expect.issuers.iter().any(|i| i == iss) {
            return Err(JwtError::Issuer(iss.to_owned()));
        }
        let aud_ok = match c.get("aud") {
            Some(Value::String(a)) => expect.audiences.iter().any(|e| e == a),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| expect.audiences.iter().any(|e| e == a)),
            _ => false,
        };
        if !aud_ok {
            return Err(JwtError::Audience);
        }
        let now = now.unix_timestamp();
        let exp = c
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or(JwtError::Claim("exp"))?;
        if now > exp + SKEW_SECONDS {
            return Err(JwtError::Expired);
        }
        if let Some(nbf) = c.get("nbf") {
            let nbf = nbf.as_i64().ok_or(JwtError::Claim("nbf"))?;
            if now + SKEW_SECONDS < nbf {
                return Err(JwtError::NotYetValid);
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_other_algorithms_before_looking_at_keys() {
        let t = |header: &str| {
            format!(
                "{}.{}.{}",
                B64URL.encode(header),
                B64URL.encode(r#"{"iss":"x"}"#),
                B64URL.encode("sig")
            )
        };
        assert_eq!(
            decode(&t(r#"{"alg":"none","kid":"k"}"#)).unwrap_err(),
            JwtError::Algorithm("none".into())
        );
        assert_eq!(
            decode(&t(r#"{"alg":"HS256","kid":"k"}"#)).unwrap_err(),
            JwtError::Algorithm("HS256".into())
        );
        assert!(decode(&t(r#"{"alg":"RS256","kid":"k"}"#)).is_ok());
        assert!(decode("a.b").is_err());
        assert!(decode(&"a".repeat(MAX_TOKEN_BYTES + 1)).is_err());
    }

    #[test]
    fn key_sets_keep_rsa_signing_keys_only() {
        let ks = KeySet::from_json(
            br#"{"keys":[{"kty":"RSA","kid":"a","n":"AQAB","e":"AQAB"},
                {"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"},
                {"kty":"EC","kid":"b","crv":"P-256"}]}"#,
        )
        .unwrap();
        assert_eq!(ks.keys.len(), 1);
        assert_eq!(ks.keys[0].kid, "a");
    }
}
