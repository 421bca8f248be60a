//! Console sessions: a signed, expiring cookie, and the CSRF token bound to it.
//!
//! The cookie is `<payload>.<mac>`: the payload (base64url JSON: who signed in, how, when
//! it expires, a random session id) and an HMAC-SHA256 over it with the console key. Nothing
//! secret is in it, and a changed byte fails the MAC. The CSRF token is
//! HMAC(key, "csrf" ‖ session id): every state-changing request carries it in a form field,
//! and a page from another origin can neither read it nor compute it.
//!
//! ⚠ The cookie is the admin's credential while it lasts. It is `HttpOnly` (no script
//! reads it), `SameSite=Strict` (no other site's request carries it), `Secure` whenever
//! the console is served over TLS, and expires after [`SESSION_TTL`]. Signing out clears
//! it in the browser; a copy taken before stays valid until it expires, since no session
//! table is kept — rotate the console key (see README) to end every session at once.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use time::{Duration, OffsetDateTime};

pub const COOKIE: &str = "winmdm_console";
/// How long a sign-in lasts.
pub const SESSION_TTL: Duration = Duration::hours(8);

/// The key sessions are signed with.
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

impl SessionKey {
    /// A key derived from a longer-lived secret, for this one purpose (HMAC with a label,
    /// so the derived key says nothing about the secret or its other uses).
    pub fn derive(secret: &[u8]) -> Self {
        let mut mac = <Hmac<Sha256>>::new_from_slice(secret).expect("HMAC takes any key");
        mac.update(b"winmdm console session key v1");
        Self(mac.finalize().into_bytes().into())
    }

    /// A value signed under a label: `<base64url JSON>.<base64url MAC>`.
    pub fn seal<T: Serialize>(&self, label: &str, value: &T) -> String {
        let payload = B64URL.encode(serde_json::to_vec(value).expect("a value serializes"));
        let mac = self.mac(&[label.as_bytes(), payload.as_bytes()]);
        format!("{payload}.{}", B64URL.encode(mac))
    }

    /// The value [`seal`](Self::seal) made under `label`, if unchanged.
    pub fn open<T: serde::de::DeserializeOwned>(&self, label: &str, sealed: &str) -> Option<T> {
        let (payload, mac) = sealed.split_once('.')?;
        let mac = B64URL.decode(mac).ok()?;
        let expected = self.mac(&[label.as_bytes(), payload.as_bytes()]);
        if !bool::from(expected.as_slice().ct_eq(&mac)) {
            return None;
        }
        serde_json::from_slice(&B64URL.decode(payload).ok()?).ok()
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.0).expect("HMAC takes any key");
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }
}

/// Who is signed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The admin: `admin-token` locally, the OIDC subject's email or `sub` on AWS.
    pub user: String,
    /// Random session id, the CSRF token's seed.
    pub sid: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

impl Session {
    pub fn new(user: String, now: OffsetDateTime) -> Self {
        let mut sid = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut sid);
        Self {
            user,
            sid: B64URL.encode(sid),
            exp: (now + SESSION_TTL).unix_timestamp(),
        }
    }

    pub fn seal(&self, key: &SessionKey) -> String {
        key.seal("session", self)
    }

    /// The session in a cookie value, if its MAC is right and it has not expired.
    pub fn open(value: &str, key: &SessionKey, now: OffsetDateTime) -> Option<Self> {
        let s: Session = key.open("session", value)?;
        (now.unix_timestamp() < s.exp).then_some(s)
    }

    pub fn csrf_token(&self, key: &SessionKey) -> String {
        B64URL.encode(key.mac(&[b"csrf", self.sid.as_bytes()]))
    }

    pub fn csrf_ok(&self, key: &SessionKey, got: Option<&str>) -> bool {
        let expected = self.csrf_token(key);
        got.is_some_and(|g| bool::from(g.as_bytes().ct_eq(expected.as_bytes())))
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value scoped to the console.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age.whole_seconds().max(0),
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_sessions_open_only_unchanged_with_the_key_and_before_expiry() {
        let key = SessionKey::derive(b"secret");
        let now = OffsetDateTime::now_utc();
        let s = Session::new("admin".into(), now);
        let sealed = s.seal(&key);
        assert_eq!(Session::open(&sealed, &key, now), Some(s.clone()));
        assert_eq!(
            Session::open(&sealed, &SessionKey::derive(b"other"), now),
            None
        );
        assert_eq!(Session::open(&sealed, &key, now + SESSION_TTL), None);
        // A payload claiming another user, with the old MAC.
        let mut forged = s.clone();
        forged.user = "root".into();
        let (_, mac) = sealed.split_once('.').unwrap();
        let (payload, _) = forged
            .seal(&key)
            .split_once('.')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .unwrap();
        assert_eq!(Session::open(&format!("{payload}.{mac}"), &key, now), None);
    }

    #[test]
    fn csrf_tokens_are_per_session() {
        let key = SessionKey::derive(b"secret");
        let now = OffsetDateTime::now_utc();
        let (a, b) = (
            Session::new("admin".into(), now),
            Session::new("admin".into(), now),
        );
        assert!(a.csrf_ok(&key, Some(&a.csrf_token(&key))));
        assert!(!a.csrf_ok(&key, Some(&b.csrf_token(&key))));
        assert!(!a.csrf_ok(&key, None));
        assert!(!a.csrf_ok(&key, Some("")));
    }
}
