//! Who may speak for an enrollment. Every rule that binds a DeviceID, an HWDevID, a user
//! and a certificate to one device record is here, as pure functions over what the store
//! holds, so each rule is stated once and tested as a table. Enrollment
//! ([`crate::enrollment`]) and renewal ask these functions before they write anything;
//! management sessions check certificates with [`certificate_may_manage`] and digests in
//! [`crate::dm_auth`].
//!
//! A device record is *held* while it is enrolled: only its own user, on its own hardware,
//! can enroll over it. It is *free* once the device unenrolled itself or an operator removed
//! it. A blocked record stays blocked under any DeviceID its hardware or its user presents,
//! until an operator unblocks or removes it.
//!
//! ⚠ DeviceID and HWDevID are claims the client makes; nothing here trusts one without a
//! record that binds it to the same user. Loosening any rule below lets one user's
//! enrollment take over another's device record, its certificate and its queued commands.

use time::OffsetDateTime;

use crate::model::{Device, DeviceStatus};

/// Longest DeviceID accepted.
pub const MAX_DEVICE_ID_LEN: usize = 128;

/// Whether a DeviceID is one enrollment could have accepted: 1 to 128 characters of
/// `A-Z a-z 0-9 - _ . { }`. The id becomes a certificate CN, a SyncML address, a storage
/// key and a log field, so a claim outside this rule is refused before it reaches any of
/// them — at enrollment and in every management message's SyncHdr.
pub fn device_id_is_well_formed(id: &str) -> bool {
    (1..=MAX_DEVICE_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'{' | b'}'))
}

/// What an enrolling client claims.
#[derive(Debug, Clone, Copy)]
pub struct EnrollmentClaim<'a> {
    /// The authenticated user (normalized UPN).
    pub upn: &'a str,
    pub device_id: &'a str,
    pub hw_dev_id: Option<&'a str>,
    /// For an Entra ID enrollment, the user's tenant and object id: a record an Entra user
    /// enrolled is that object's, and a token for another object is refused even when it
    /// carries the same UPN (mutable, reusable). (The UPN must match too: a user whose UPN
    /// was renamed enrolls again once an operator removes the old record.)
    pub entra: Option<(&'a str, &'a str)>,
}

/// What an allowed enrollment does to the records that are there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollmentDecision {
    /// No record stands in the way.
    New,
    /// The same user's device enrolling again (a reset, a repaired enrollment): the record
    /// is replaced and its queued commands stay for it.
    ReEnroll,
    /// The DeviceID's record is free (unenrolled or removed): a fresh enrollment that
    /// inherits nothing; the old record's open commands are cancelled first.
    Fresh,
}

/// Why an enrollment is refused. Nothing is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnrollmentRefusal {
    #[error("this device is blocked; ask your administrator to unblock it")]
    DeviceBlocked,
    #[error("one of your devices is blocked; ask your administrator before enrolling another")]
    UserHasBlockedDevice,
    #[error(
        "this device is enrolled by another user; an administrator must remove it before it can be enrolled again"
    )]
    EnrolledByAnotherUser,
    #[error("this DeviceID is enrolled for other hardware")]
    OtherHardware,
}

fn held(d: &Device) -> bool {
    d.status == DeviceStatus::Enrolled
}

/// Whether the claim is the principal that holds `d`: the same user, and for a record an
/// Entra ID user enrolled, the same tenant and user object (two tenants, or a renamed and
/// reused UPN, can present one UPN). A record a password user enrolled may pass to an
/// Entra user of that UPN (one directory's name for one person), not the reverse.
fn same_principal(d: &Device, claim: &EnrollmentClaim<'_>) -> bool {
    d.upn == claim.upn
        && match (&d.entra, claim.entra) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(b), Some((tenant, object))) => {
                b.tenant_id.eq_ignore_ascii_case(tenant) && b.object_id.eq_ignore_ascii_case(object)
            }
        }
}

fn same_hw(a: Option<&str>, b: Option<&str>) -> Option<bool> {
    a.zip(b).map(|(a, b)| a.eq_ignore_ascii_case(b))
}

/// Decides an enrollment from the record with the claimed DeviceID, the record that holds
/// the claimed HWDevID (if another), and whether the user has a blocked device.
pub fn decide_enrollment(
    claim: EnrollmentClaim<'_>,
    by_id: Option<&Device>,
    by_hw: Option<&Device>,
    user_has_blocked_device: bool,
) -> Result<EnrollmentDecision, EnrollmentRefusal> {
    use EnrollmentRefusal::*;
    // Blocked hardware or DeviceID stays out, whoever asks.
    if by_id
        .into_iter()
        .chain(by_hw)
        .any(|d| d.status == DeviceStatus::Blocked)
    {
        return Err(DeviceBlocked);
    }
    // A user whose device is blocked cannot get round the block with a new DeviceID and
    // no (or another) HWDevID.
    if user_has_blocked_device {
        return Err(UserHasBlockedDevice);
    }
    // Another DeviceID on the same hardware: only its own user may replace it.
    if let Some(other) = by_hw.filter(|d| d.id != claim.device_id)
        && held(other)
        && !same_principal(other, &claim)
    {
        return Err(EnrolledByAnotherUser);
    }
    match by_id {
        None => Ok(EnrollmentDecision::New),
        Some(d) if held(d) => {
            if !same_principal(d, &claim) {
                return Err(EnrolledByAnotherUser);
            }
            if same_hw(d.hw_dev_id.as_deref(), claim.hw_dev_id) == Some(false) {
                return Err(OtherHardware);
            }
            Ok(EnrollmentDecision::ReEnroll)
        }
        Some(_) => Ok(EnrollmentDecision::Fresh),
    }
}

/// [`decide_enrollment`] again, by the store as it commits, from the records as they are
/// then: the first decision was made from reads taken before the certificate was issued
/// (seconds, on a managed CA), and meanwhile an operator may have blocked the record (or
/// the one on the same hardware) or another user taken a freed DeviceID.
///
/// ⚠ A store that commits without this lets an enrollment in flight undo a block: the
/// blocked record is overwritten as enrolled, with a fresh certificate, and its user's
/// blocked-device entry is left behind. The user's other devices are not read again here
/// (a device of the user blocked during this enrollment blocks their next one).
pub fn recheck_at_commit(
    device: &Device,
    by_id: Option<&Device>,
    by_hw: Option<&Device>,
) -> Result<(), EnrollmentRefusal> {
    let claim = EnrollmentClaim {
        upn: &device.upn,
        device_id: &device.id,
        hw_dev_id: device.hw_dev_id.as_deref(),
        entra: device
            .entra
            .as_ref()
            .map(|e| (e.tenant_id.as_str(), e.object_id.as_str())),
    };
    decide_enrollment(claim, by_id, by_hw.filter(|d| d.id != device.id), false).map(|_| ())
}

/// Why a renewal is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RenewalRefusal {
    #[error("the device is not enrolled")]
    NotEnrolled,
    #[error("the device's user no longer exists")]
    UserDeleted,
    #[error("not the device's current certificate")]
    NotCurrent,
}

/// Which certificate a renewal may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewalDecision {
    /// From the current certificate: a new certificate, the current one kept for the
    /// grace period.
    FromCurrent,
    /// From the previous certificate, within its grace period, for the key of the current
    /// one: the device renewed but never received the answer, and asks again with the same
    /// new key. It gets a certificate for that key; the grace period is not extended.
    RetryOfLostReply,
}

/// Decides a renewal presented with the certificate `presented` (thumbprint), asking for
/// a certificate for the key whose SHA-256 SPKI hash is `requested_spki`.
pub fn decide_renewal(
    device: &Device,
    user_exists: bool,
    presented: &str,
    requested_spki: &str,
    now: OffsetDateTime,
) -> Result<RenewalDecision, RenewalRefusal> {
    if device.status != DeviceStatus::Enrolled {
        return Err(RenewalRefusal::NotEnrolled);
    }
    // Deleting a user ends their devices' renewals: they stay managed (so an operator can
    // still wipe or unenroll them) until their certificates expire.
    if !user_exists {
        return Err(RenewalRefusal::UserDeleted);
    }
    if device.cert.thumbprint.eq_ignore_ascii_case(presented) {
        return Ok(RenewalDecision::FromCurrent);
    }
    let previous_in_grace = device.previous_cert.as_ref().is_some_and(|p| {
        p.cert.thumbprint.eq_ignore_ascii_case(presented) && now < p.accepted_until
    });
    let same_key = device
        .cert
        .spki_sha256
        .as_deref()
        .is_some_and(|k| k.eq_ignore_ascii_case(requested_spki));
    if previous_in_grace && same_key {
        // Whoever holds the previous key also holds the current one: nothing to steal.
        return Ok(RenewalDecision::RetryOfLostReply);
    }
    Err(RenewalRefusal::NotCurrent)
}

/// Whether a valid client certificate (CN and thumbprint already checked to chain to our
/// CA and be in validity) may manage the device the SyncHdr names: it names that device,
/// and it is the device's current certificate or its previous one within the grace period.
pub fn certificate_may_manage(
    device: &Device,
    cert_cn: &str,
    cert_thumbprint: &str,
    claimed_source: &str,
    now: OffsetDateTime,
) -> bool {
    device.status == DeviceStatus::Enrolled
        && cert_cn == device.id
        && claimed_source == device.id
        && device.accepts_certificate(cert_thumbprint, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        DeviceCertificate, DmCredentials, EnrollmentType, OsInfo, PreviousCertificate,
    };
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-01 10:00 UTC);

    #[test]
    fn device_ids_outside_the_enrollment_rule_are_not_well_formed() {
        for ok in [
            "{2A3D9F1C-0000-4B5E-9C1A-7D2E}",
            "PC-01_a.b",
            &"a".repeat(128),
        ] {
            assert!(device_id_is_well_formed(ok), "{ok}");
        }
        for bad in [
            "",
            &"a".repeat(129),
            "a/b",
            "a b",
            "é",
            "a\0",
            "<x>",
            "a%2Fb",
        ] {
            assert!(!device_id_is_well_formed(bad), "{bad:?}");
        }
    }

    fn dev(id: &str, upn: &str, hw: Option<&str>, status: DeviceStatus) -> Device {
        Device {
            id: id.into(),
            hw_dev_id: hw.map(Into::into),
            upn: upn.into(),
            enrollment_type: EnrollmentType::Full,
            status,
            cert: DeviceCertificate {
                serial: "01".into(),
                thumbprint: "CUR".into(),
                not_after: NOW + time::Duration::days(300),
                spki_sha256: Some("key-cur".into()),
            },
            os: OsInfo::default(),
            dm_credentials: DmCredentials::default(),
            enrolled_at: NOW,
            last_seen_at: None,
            dm_info: Default::default(),
            previous_cert: Some(PreviousCertificate {
                cert: DeviceCertificate {
                    serial: "00".into(),
                    thumbprint: "PREV".into(),
                    not_after: NOW + time::Duration::days(10),
                    spki_sha256: Some("key-prev".into()),
                },
                accepted_until: NOW + time::Duration::hours(1),
            }),
            groups: Vec::new(),
            entra: None,
            compliance: None,
        }
    }

    #[test]
    fn enrollment_rules() {
        use DeviceStatus::*;
        use EnrollmentDecision::*;
        use EnrollmentRefusal::*;
        let alice = "alice@example.com";
        let bob = "bob@example.com";
        // (case, claimed upn, claimed hw, record with the DeviceID, other record with the
        //  HWDevID, user has a blocked device, expected)
        type Case<'a> = (
            &'a str,
            &'a str,
            Option<&'a str>,
            Option<Device>,
            Option<Device>,
            bool,
            Result<EnrollmentDecision, EnrollmentRefusal>,
        );
        let cases: Vec<Case> = vec![
            (
                "first enrollment",
                alice,
                Some("HW1"),
                None,
                None,
                false,
                Ok(New),
            ),
            ("no HWDevID at all", alice, None, None, None, false, Ok(New)),
            (
                "same user, same id, same hardware (any case)",
                alice,
                Some("hw1"),
                Some(dev("D1", alice, Some("HW1"), Enrolled)),
                None,
                false,
                Ok(ReEnroll),
            ),
            (
                "same user, same id, no HWDevID claimed",
                alice,
                None,
                Some(dev("D1", alice, Some("HW1"), Enrolled)),
                None,
                false,
                Ok(ReEnroll),
            ),
            (
                "same user, same id, other hardware",
                alice,
                Some("HW2"),
                Some(dev("D1", alice, Some("HW1"), Enrolled)),
                None,
                false,
                Err(OtherHardware),
            ),
            (
                "another user's enrolled DeviceID, no HWDevID",
                bob,
                None,
                Some(dev("D1", alice, Some("HW1"), Enrolled)),
                None,
                false,
                Err(EnrolledByAnotherUser),
            ),
            (
                "another user's enrolled DeviceID, same HWDevID",
                bob,
                Some("HW1"),
                Some(dev("D1", alice, Some("HW1"), Enrolled)),
                None,
                false,
                Err(EnrolledByAnotherUser),
            ),
            (
                "a new DeviceID with another user's HWDevID",
                bob,
                Some("HW1"),
                None,
                Some(dev("D1", alice, Some("HW1"), Enrolled)),
                false,
                Err(EnrolledByAnotherUser),
            ),
            (
                "a new DeviceID on the user's own hardware (reset)",
                alice,
                Some("HW1"),
                None,
                Some(dev("D1", alice, Some("HW1"), Enrolled)),
                false,
                Ok(New),
            ),
            (
                "another user's removed DeviceID",
                bob,
                Some("HW9"),
                Some(dev("D1", alice, Some("HW1"), Removed)),
                None,
                false,
                Ok(Fresh),
            ),
            (
                "another user's unenrolled hardware",
                bob,
                Some("HW1"),
                None,
                Some(dev("D1", alice, Some("HW1"), Unenrolled)),
                false,
                Ok(New),
            ),
            (
                "the user's own unenrolled DeviceID",
                alice,
                Some("HW1"),
                Some(dev("D1", alice, Some("HW1"), Unenrolled)),
                None,
                false,
                Ok(Fresh),
            ),
            (
                "a blocked DeviceID, its own user",
                alice,
                Some("HW1"),
                Some(dev("D1", alice, Some("HW1"), Blocked)),
                None,
                true,
                Err(DeviceBlocked),
            ),
            (
                "blocked hardware under a new DeviceID",
                alice,
                Some("HW1"),
                None,
                Some(dev("D1", alice, Some("HW1"), Blocked)),
                true,
                Err(DeviceBlocked),
            ),
            (
                "a blocked device's user, new DeviceID, no HWDevID",
                alice,
                None,
                None,
                None,
                true,
                Err(UserHasBlockedDevice),
            ),
            (
                "a blocked device's user, new DeviceID, other HWDevID",
                alice,
                Some("HW7"),
                None,
                None,
                true,
                Err(UserHasBlockedDevice),
            ),
        ];
        for (name, upn, hw, by_id, by_hw, blocked, want) in cases {
            let claim = EnrollmentClaim {
                upn,
                device_id: by_id.as_ref().map_or("NEW", |d| d.id.as_str()),
                hw_dev_id: hw,
                entra: None,
            };
            let got = decide_enrollment(claim, by_id.as_ref(), by_hw.as_ref(), blocked);
            assert_eq!(got, want, "{name}");
        }
    }

    /// A record an Entra user enrolled is that user object's: another object (another
    /// tenant, or a reused UPN) with the same UPN, or a password user, is refused.
    #[test]
    fn an_entra_record_is_its_user_objects() {
        let mut d = dev("D1", "a@x", Some("HW1"), DeviceStatus::Enrolled);
        d.entra = Some(crate::model::EntraBinding {
            tenant_id: "T1".into(),
            object_id: "O1".into(),
            device_id: None,
        });
        let claim = |entra| EnrollmentClaim {
            upn: "a@x",
            device_id: "D1",
            hw_dev_id: Some("HW1"),
            entra,
        };
        for (entra, want) in [
            (Some(("t1", "o1")), Ok(EnrollmentDecision::ReEnroll)),
            (
                Some(("T1", "O2")),
                Err(EnrollmentRefusal::EnrolledByAnotherUser),
            ),
            (
                Some(("T2", "O1")),
                Err(EnrollmentRefusal::EnrolledByAnotherUser),
            ),
            (None, Err(EnrollmentRefusal::EnrolledByAnotherUser)),
        ] {
            assert_eq!(
                decide_enrollment(claim(entra), Some(&d), None, false),
                want,
                "{entra:?}"
            );
            let mut other = d.clone();
            other.id = "D0".into();
            let by_hw = decide_enrollment(claim(entra), None, Some(&other), false);
            assert_eq!(by_hw.is_ok(), want.is_ok(), "by hardware, {entra:?}");
        }
        // A password user's record may pass to the Entra user of its UPN.
        d.entra = None;
        assert!(decide_enrollment(claim(Some(("T1", "O1"))), Some(&d), None, false).is_ok());
    }

    #[test]
    fn renewal_rules() {
        use RenewalDecision::*;
        use RenewalRefusal::*;
        let d = dev("D1", "a@x", None, DeviceStatus::Enrolled);
        let cases = [
            (
                "current certificate",
                &d,
                true,
                "cur",
                "key-new",
                NOW,
                Ok(FromCurrent),
            ),
            (
                "previous certificate asking for a new key",
                &d,
                true,
                "PREV",
                "key-new",
                NOW,
                Err(NotCurrent),
            ),
            (
                "previous certificate retrying for the current key",
                &d,
                true,
                "PREV",
                "KEY-CUR",
                NOW,
                Ok(RetryOfLostReply),
            ),
            (
                "previous certificate after the grace period",
                &d,
                true,
                "PREV",
                "key-cur",
                NOW + time::Duration::hours(2),
                Err(NotCurrent),
            ),
            (
                "unknown certificate",
                &d,
                true,
                "OTHER",
                "key-cur",
                NOW,
                Err(NotCurrent),
            ),
            (
                "deleted user",
                &d,
                false,
                "CUR",
                "key-new",
                NOW,
                Err(UserDeleted),
            ),
        ];
        for (name, device, user, presented, spki, now, want) in cases {
            assert_eq!(
                decide_renewal(device, user, presented, spki, now),
                want,
                "{name}"
            );
        }
        let blocked = dev("D1", "a@x", None, DeviceStatus::Blocked);
        assert_eq!(
            decide_renewal(&blocked, true, "CUR", "k", NOW),
            Err(NotEnrolled)
        );
    }

    #[test]
    fn certificate_rules() {
        let d = dev("D1", "a@x", None, DeviceStatus::Enrolled);
        assert!(certificate_may_manage(&d, "D1", "cur", "D1", NOW));
        assert!(certificate_may_manage(&d, "D1", "PREV", "D1", NOW));
        assert!(!certificate_may_manage(
            &d,
            "D1",
            "PREV",
            "D1",
            NOW + time::Duration::hours(2)
        ));
        assert!(!certificate_may_manage(&d, "D2", "CUR", "D1", NOW), "CN");
        assert!(
            !certificate_may_manage(&d, "D1", "CUR", "D2", NOW),
            "Source"
        );
        let mut blocked = d.clone();
        blocked.status = DeviceStatus::Blocked;
        assert!(!certificate_may_manage(&blocked, "D1", "CUR", "D1", NOW));
    }
}
