//! Federated sign-in tokens: what the login page posts to `appru` as `wresult`, and the
//! device sends back (base64) in XCEP and WSTEP. HMAC-SHA256 over a small JSON claim set;
//! single use, enforced by the store when the enrollment commits.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::{Duration, OffsetDateTime};

type HmacSha256 = Hmac<Sha256>;

/// The longest a token may live (the issue caps it at 15 minutes).
pub const MAX_TOKEN_TTL: Duration = Duration::minutes(15);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// Normalised UPN of the user who signed in.
    pub upn: String,
    /// Unique id, spent when the enrollment commits.
    pub jti: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
}

impl TokenClaims {
    pub fn expires_at(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(self.exp).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token expired")]
    Expired,
}

/// Signs and checks tokens with a server-held key.
#[derive(Clone)]
pub struct TokenSigner {
    key: Vec<u8>,
    ttl: Duration,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Reads the token key where it is kept (a Secrets Manager secret on AWS).
#[async_trait]
pub trait KeyFetch: Send + Sync {
    async fn fetch(&self) -> Result<Vec<u8>, String>;
}

/// The sign-in token key, given at start or fetched once on first use: a function's
/// start then calls nothing (the key is needed only when a token is issued or checked),
/// and a fetch that fails is tried again by the next request.
pub struct TokenKey {
    ready: tokio::sync::OnceCell<TokenSigner>,
    fetch: Option<Arc<dyn KeyFetch>>,
    ttl: Duration,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("loaded", &self.ready.initialized())
            .finish_non_exhaustive()
    }
}

impl TokenKey {
    /// A key known at start (checked now: at least 32 bytes).
    pub fn given(key: Vec<u8>, ttl: Duration) -> Result<Self, String> {
        Ok(Self {
            ready: tokio::sync::OnceCell::new_with(Some(TokenSigner::new(key, ttl)?)),
            fetch: None,
            ttl,
        })
    }

    /// A key read by `fetch` when first needed.
    pub fn fetched(fetch: Arc<dyn KeyFetch>, ttl: Duration) -> Self {
        Self {
            ready: tokio::sync::OnceCell::new(),
            fetch: Some(fetch),
            ttl,
        }
    }

    /// The signer, fetching the key first if it has not been yet.
    pub async fn signer(&self) -> Result<&TokenSigner, String> {
        self.ready
            .get_or_try_init(|| async {
                let fetch = self.fetch.as_ref().ok_or("no token key")?;
                TokenSigner::new(fetch.fetch().await?, self.ttl)
            })
            .await
    }
}

impl TokenSigner {
    /// The key itself, for deriving other keys from it (each under its own label).
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// `key` must be at least 32 bytes; `ttl` is capped at [`MAX_TOKEN_TTL`].
    pub fn new(key: Vec<u8>, ttl: Duration) -> Result<Self, String> {
        if key.len() < 32 {
            return Err("token signing key must be at least 32 bytes".into());
        }
        Ok(Self {
            key,
            ttl: ttl.min(MAX_TOKEN_TTL),
        })
    }

    pub fn issue(&self, upn: &str, now: OffsetDateTime) -> String {
        let claims = TokenClaims {
            upn: upn.to_owned(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            exp: (now + self.ttl).unix_timestamp(),
        };
        let payload = B64URL.encode(serde_json::to_vec(&claims).expect("claims serialize"));
        let sig = B64URL.encode(self.mac(payload.as_bytes()).finalize().into_bytes());
        format!("{payload}.{sig}")
    }

    pub fn verify(&self, token: &[u8], now: OffsetDateTime) -> Result<TokenClaims, TokenError> {
        let token = std::str::from_utf8(token)
            .map_err(|_| TokenError::Malformed)?
            .trim();
        let (payload, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let sig = B64URL.decode(sig).map_err(|_| TokenError::Malformed)?;
        self.mac(payload.as_bytes())
            .verify_slice(&sig)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: TokenClaims = B64URL
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if now.unix_timestamp() >= claims.exp {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    fn mac(&self, data: &[u8]) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(data);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails until `ready`, counting its calls.
    struct Flaky {
        calls: std::sync::atomic::AtomicUsize,
        ready: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl KeyFetch for Flaky {
        async fn fetch(&self) -> Result<Vec<u8>, String> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match self.ready.load(std::sync::atomic::Ordering::SeqCst) {
                true => Ok(vec![9; 32]),
                false => Err("unreachable".into()),
            }
        }
    }

    #[tokio::test]
    async fn a_fetched_key_is_read_on_first_use_retried_after_failure_and_kept() {
        use std::sync::atomic::Ordering::SeqCst;
        let fetch = Arc::new(Flaky {
            calls: 0.into(),
            ready: false.into(),
        });
        let key = TokenKey::fetched(fetch.clone(), Duration::minutes(5));
        assert_eq!(
            fetch.calls.load(SeqCst),
            0,
            "nothing fetched at construction"
        );
        assert_eq!(key.signer().await.unwrap_err(), "unreachable");
        assert_eq!(key.signer().await.unwrap_err(), "unreachable");
        assert_eq!(fetch.calls.load(SeqCst), 2, "a failure is not kept");
        fetch.ready.store(true, SeqCst);
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let token = key.signer().await.unwrap().issue("bob@example.com", now);
        assert!(
            key.signer()
                .await
                .unwrap()
                .verify(token.as_bytes(), now)
                .is_ok()
        );
        assert_eq!(fetch.calls.load(SeqCst), 3, "read once, then kept");
        assert!(
            TokenKey::given(vec![1; 8], Duration::minutes(5)).is_err(),
            "a short given key is refused at start"
        );
    }

    #[test]
    fn issue_verify_expire_tamper() {
        let s = TokenSigner::new(vec![7; 32], Duration::hours(1)).unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let t = s.issue("alice@example.com", now);
        let c = s.verify(t.as_bytes(), now).unwrap();
        assert_eq!(c.upn, "alice@example.com");
        // TTL was capped at 15 minutes.
        assert_eq!(
            s.verify(t.as_bytes(), now + Duration::minutes(15)),
            Err(TokenError::Expired)
        );
        let mut bad = t.clone().into_bytes();
        bad[3] ^= 1;
        assert!(s.verify(&bad, now).is_err());
        let other = TokenSigner::new(vec![8; 32], Duration::minutes(5)).unwrap();
        assert_eq!(
            other.verify(t.as_bytes(), now),
            Err(TokenError::BadSignature)
        );
    }
}
