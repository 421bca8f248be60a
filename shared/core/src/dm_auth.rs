//! OMA-DM `syncml:auth-md5` digest authentication of management sessions: which nonces a
//! device may use, when they change, and how a device that lost one gets back in.
//!
//! The rules (README "Digest sessions"; OMA-TS-DM_Security-V1_2 §5.3–5.5, OMA-TS-DM_RepPro
//! status 212/401/407, Microsoft "OMA DM protocol support"):
//!
//! 1. A device holds a *current* nonce (first the provisioning doc's `AAUTHDATA`). Each
//!    digest session we authenticate offers a *next* nonce (`Chal/Meta/NextNonce` in the
//!    SyncHdr status of every reply of that session). The device may start a session with
//!    either; the current one stays valid until the device has authenticated with the next
//!    one, so a reply lost on the way never strands it.
//! 2. Inside a session the device may keep using the nonce it started with (Windows) or
//!    switch to the offered one on its very next message (a strict OMA-DM client). Using the
//!    offered one rotates: it becomes current and a new one is offered.
//! 3. A message without `Cred` or with a digest over no nonce we accept is answered 407 or
//!    401 with a challenge nonce. Challenge nonces are not stored: they are
//!    `HMAC(device digest key, device id, period)` for five-minute periods, so answering a
//!    challenge writes nothing and an unauthenticated request cannot replace the nonce a
//!    device holds. An unknown device gets one under a per-process key: the same shape and
//!    the same work. A challenge nonce starts at most one session.
//! 4. A digest session's later messages must carry `Cred` too: we answer 200, never 212
//!    ("authenticated for the rest of the session"). Without transport-level binding (the
//!    mTLS certificate, which takes the certificate path instead) nothing but the digest
//!    ties a message to the device: a SessionID is four bytes, often a counter, and the
//!    body is not covered by the digest. A client that stops sending `Cred` anyway gets a
//!    407 with a per-command 407 and resends. Within a session, MsgIDs must increase, so a
//!    recorded message cannot be replayed into it; a digest over the session's nonce is
//!    still a bearer credential until the session ends (30 minutes at most), which is as
//!    far as the Windows client (same nonce for a whole session) allows.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::digest::digest_response;
use crate::model::Device;
use crate::session::{DigestSession, NonceUpdate};

/// Length of a challenge period; a challenge nonce is accepted in its period and the next.
pub const CHALLENGE_PERIOD_SECONDS: i64 = 300;

/// Where an accepted nonce came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceKind {
    /// The device's current nonce.
    Current,
    /// The next nonce offered in the device's latest session.
    Next,
    /// A challenge nonce of the given period.
    Challenge(i64),
    /// The nonce this session was authenticated with.
    SessionAuth,
    /// The nonce this session offered.
    SessionOffered,
}

/// The challenge period a time falls in.
pub fn challenge_period(now: OffsetDateTime) -> i64 {
    now.unix_timestamp().div_euclid(CHALLENGE_PERIOD_SECONDS)
}

/// The challenge nonce (base64, 16 bytes) of a device for a period, keyed by the device's
/// digest key (or, for unknown devices, a per-process key).
pub fn challenge_nonce(key: &[u8], device_id: &str, period: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"winmdm-dm-challenge\0");
    mac.update(device_id.as_bytes());
    mac.update(b"\0");
    mac.update(&period.to_be_bytes());
    B64.encode(&mac.finalize().into_bytes()[..16])
}

/// The nonce a 401/407 challenge offers a known device now.
pub fn device_challenge(device: &Device, now: OffsetDateTime) -> String {
    challenge_nonce(
        device.dm_credentials.client_digest_key.as_bytes(),
        &device.id,
        challenge_period(now),
    )
}

/// Every nonce a digest from this device may be computed over right now.
pub fn accepted_nonces(
    device: &Device,
    session: Option<&DigestSession>,
    now: OffsetDateTime,
) -> Vec<(NonceKind, String)> {
    let c = &device.dm_credentials;
    let mut out = Vec::with_capacity(6);
    if let Some(s) = session {
        out.push((NonceKind::SessionAuth, s.auth_nonce.clone()));
        out.push((NonceKind::SessionOffered, s.offered_nonce.clone()));
    }
    let live = |exp: Option<OffsetDateTime>| exp.is_some_and(|e| now < e);
    if !c.client_nonce.is_empty() && live(c.client_nonce_expires_at) {
        out.push((NonceKind::Current, c.client_nonce.clone()));
    }
    if let Some(n) = &c.client_next_nonce
        && live(c.client_next_nonce_expires_at)
    {
        out.push((NonceKind::Next, n.clone()));
    }
    let period = challenge_period(now);
    for p in [period, period - 1] {
        if c.challenge_spent_period.is_none_or(|spent| p > spent) {
            out.push((
                NonceKind::Challenge(p),
                challenge_nonce(c.client_digest_key.as_bytes(), &device.id, p),
            ));
        }
    }
    out
}

/// Checks a `Cred` digest against every accepted nonce, in constant time per candidate and
/// without stopping at the first match. Returns the nonce it was computed over.
pub fn check_digest(
    digest_key: &str,
    cred: &str,
    accepted: &[(NonceKind, String)],
) -> Option<(NonceKind, String)> {
    let cred = cred.trim().as_bytes();
    let mut found = None;
    for (kind, nonce) in accepted {
        let Ok(raw) = B64.decode(nonce) else {
            continue;
        };
        let expected = digest_response(digest_key, &raw);
        if bool::from(expected.as_bytes().ct_eq(cred)) && found.is_none() {
            found = Some((*kind, nonce.clone()));
        }
    }
    found
}

/// What authenticating with `nonce` changes: the session's nonces and the device's. The
/// caller supplies a fresh random nonce to offer when one is needed.
pub fn after_digest_auth(
    kind: NonceKind,
    nonce: &str,
    session: &mut Option<DigestSession>,
    fresh: impl FnOnce() -> String,
    nonce_expires_at: OffsetDateTime,
) -> Option<NonceUpdate> {
    match (kind, session.as_mut()) {
        // Windows: the same nonce for the whole session; nothing changes.
        (NonceKind::SessionAuth, Some(_)) => None,
        // A strict client took the offered nonce: it becomes current, a new one is offered.
        (NonceKind::SessionOffered, Some(s)) => {
            let next = fresh();
            s.auth_nonce = std::mem::replace(&mut s.offered_nonce, next.clone());
            Some(NonceUpdate {
                current: Some(s.auth_nonce.clone()),
                next: Some(next),
                expires_at: nonce_expires_at,
                challenge_spent_period: None,
            })
        }
        // A session starts (or restarts its authentication) with a device-level nonce.
        _ => {
            let next = fresh();
            *session = Some(DigestSession {
                auth_nonce: nonce.to_owned(),
                offered_nonce: next.clone(),
            });
            Some(NonceUpdate {
                // The device used the offered nonce: the old current one is retired.
                current: (kind == NonceKind::Next).then(|| nonce.to_owned()),
                next: Some(next),
                expires_at: nonce_expires_at,
                challenge_spent_period: match kind {
                    NonceKind::Challenge(p) => Some(p),
                    _ => None,
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::digest_key;
    use crate::model::{DeviceCertificate, DeviceStatus, DmCredentials, EnrollmentType, OsInfo};
    use time::macros::datetime;

    fn device(now: OffsetDateTime) -> Device {
        Device {
            id: "dev-1".into(),
            hw_dev_id: None,
            upn: "a@example.com".into(),
            enrollment_type: EnrollmentType::Full,
            status: DeviceStatus::Enrolled,
            cert: DeviceCertificate {
                serial: "01".into(),
                thumbprint: "AA".into(),
                not_after: now + time::Duration::days(1),
                spki_sha256: None,
            },
            os: OsInfo::default(),
            dm_credentials: DmCredentials {
                client_name: "dev-1".into(),
                client_digest_key: digest_key("dev-1", "secret"),
                client_nonce: B64.encode(b"current"),
                client_nonce_expires_at: Some(now + time::Duration::days(1)),
                ..DmCredentials::default()
            },
            enrolled_at: now,
            last_seen_at: None,
            dm_info: Default::default(),
            previous_cert: None,
            groups: Vec::new(),
            entra: None,
            compliance: None,
        }
    }

    fn digest_over(d: &Device, nonce_b64: &str) -> String {
        digest_response(
            &d.dm_credentials.client_digest_key,
            &B64.decode(nonce_b64).unwrap(),
        )
    }

    #[test]
    fn current_next_and_challenge_nonces_are_accepted() {
        let now = datetime!(2026-12-01 10:00 UTC);
        let mut d = device(now);
        d.dm_credentials.client_next_nonce = Some(B64.encode(b"next"));
        d.dm_credentials.client_next_nonce_expires_at = Some(now + time::Duration::days(1));
        let accepted = accepted_nonces(&d, None, now);
        let key = d.dm_credentials.client_digest_key.clone();
        let chal = device_challenge(&d, now);
        for (nonce, kind) in [
            (B64.encode(b"current"), NonceKind::Current),
            (B64.encode(b"next"), NonceKind::Next),
            (chal, NonceKind::Challenge(challenge_period(now))),
        ] {
            let got = check_digest(&key, &digest_over(&d, &nonce), &accepted);
            assert_eq!(got, Some((kind, nonce)));
        }
        assert_eq!(check_digest(&key, "bm90IGl0", &accepted), None);
        // Last period's challenge still works; older ones do not.
        let earlier = now - time::Duration::seconds(CHALLENGE_PERIOD_SECONDS);
        let old = device_challenge(&d, earlier);
        assert!(check_digest(&key, &digest_over(&d, &old), &accepted).is_some());
        let older = device_challenge(
            &d,
            earlier - time::Duration::seconds(CHALLENGE_PERIOD_SECONDS),
        );
        assert!(check_digest(&key, &digest_over(&d, &older), &accepted).is_none());
    }

    #[test]
    fn a_spent_challenge_and_expired_nonces_are_refused() {
        let now = datetime!(2026-12-01 10:00 UTC);
        let mut d = device(now);
        let chal = device_challenge(&d, now);
        d.dm_credentials.challenge_spent_period = Some(challenge_period(now));
        d.dm_credentials.client_nonce_expires_at = Some(now);
        let accepted = accepted_nonces(&d, None, now);
        let key = d.dm_credentials.client_digest_key.clone();
        assert!(check_digest(&key, &digest_over(&d, &chal), &accepted).is_none());
        let current = B64.encode(b"current");
        assert!(check_digest(&key, &digest_over(&d, &current), &accepted).is_none());
    }

    #[test]
    fn challenges_differ_per_device_and_period_and_key() {
        let a = challenge_nonce(b"k1", "dev-1", 7);
        assert_eq!(a, challenge_nonce(b"k1", "dev-1", 7));
        assert_ne!(a, challenge_nonce(b"k1", "dev-2", 7));
        assert_ne!(a, challenge_nonce(b"k1", "dev-1", 8));
        assert_ne!(a, challenge_nonce(b"k2", "dev-1", 7));
        assert_eq!(B64.decode(&a).unwrap().len(), 16);
    }

    #[test]
    fn nonce_transitions() {
        let exp = datetime!(2026-12-08 10:00 UTC);
        let mut n = 0;
        let mut fresh = || {
            n += 1;
            format!("fresh{n}")
        };
        // Session starts with the current nonce: offer a next one, keep current.
        let mut s = None;
        let u = after_digest_auth(NonceKind::Current, "cur", &mut s, &mut fresh, exp).unwrap();
        assert_eq!(u.current, None);
        assert_eq!(u.next.as_deref(), Some("fresh1"));
        let ds = s.clone().unwrap();
        assert_eq!(
            (ds.auth_nonce.as_str(), ds.offered_nonce.as_str()),
            ("cur", "fresh1")
        );
        // Windows keeps the session's nonce: nothing changes.
        assert!(
            after_digest_auth(NonceKind::SessionAuth, "cur", &mut s, &mut fresh, exp).is_none()
        );
        // A strict client takes the offered nonce: it becomes current, a new one is offered.
        let u = after_digest_auth(NonceKind::SessionOffered, "fresh1", &mut s, &mut fresh, exp)
            .unwrap();
        assert_eq!(u.current.as_deref(), Some("fresh1"));
        assert_eq!(u.next.as_deref(), Some("fresh2"));
        assert_eq!(s.as_ref().unwrap().offered_nonce, "fresh2");
        // Starting with the next nonce retires the old current one.
        let mut s = None;
        let u = after_digest_auth(NonceKind::Next, "nx", &mut s, &mut fresh, exp).unwrap();
        assert_eq!(u.current.as_deref(), Some("nx"));
        // A challenge nonce is spent.
        let mut s = None;
        let u = after_digest_auth(NonceKind::Challenge(9), "ch", &mut s, &mut fresh, exp).unwrap();
        assert_eq!(u.challenge_spent_period, Some(9));
        assert_eq!(u.current, None);
    }
}
