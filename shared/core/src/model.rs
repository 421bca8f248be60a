//! The records winmdm keeps: users who may enroll, and enrolled devices.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The password-hash field of a user recorded from Entra ID (followed by the tenant id):
/// not a PHC string, so no password ever matches it.
pub const ENTRA_USER_MARK: &str = "!entra:";

/// A person allowed to enroll devices. The password is kept only as an argon2id PHC string.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Lower-cased UPN: the key users are looked up by.
    pub upn: String,
    pub password_hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("upn", &self.upn)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// Normalises a UPN as typed by a user or operator into its lookup key.
pub fn normalize_upn(upn: &str) -> String {
    upn.trim().to_lowercase()
}

/// Shortest password a user may be given.
pub const MIN_PASSWORD_LEN: usize = 8;

/// Checks a new user's UPN and password as an operator gives them; the normalised UPN,
/// or what is wrong (for a 400 or a failed deployment).
pub fn check_new_user(upn: &str, password: &str) -> Result<String, String> {
    let upn = normalize_upn(upn);
    if upn.is_empty() || upn.len() > 256 || upn.chars().any(|c| c.is_control() || c == '/') {
        return Err("upn must be 1-256 characters without control characters or '/'".into());
    }
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(format!(
            "password must be at least {MIN_PASSWORD_LEN} characters"
        ));
    }
    Ok(upn)
}

/// `EnrollmentType` from the WSTEP context: `Full` enrolls a user, `Device` the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnrollmentType {
    Full,
    Device,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    Enrolled,
    Unenrolled,
    Blocked,
    Removed,
}

/// The device's current client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCertificate {
    /// Hex serial number.
    pub serial: String,
    /// Uppercase hex SHA-1 of the DER, as Windows shows it.
    pub thumbprint: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Lowercase hex SHA-256 of the certificate's SubjectPublicKeyInfo: tells a renewal
    /// retried with the same new key from one asking for another key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spki_sha256: Option<String>,
}

/// The certificate a device renewed away from: still accepted until `accepted_until`, so a
/// renewal whose answer never reached the device does not strand it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousCertificate {
    pub cert: DeviceCertificate,
    #[serde(with = "time::serde::rfc3339")]
    pub accepted_until: OffsetDateTime,
}

/// What the device told us about itself at enrollment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_edition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
}

/// What the device reports about itself in each management session (`./DevInfo/*` and
/// `./Vendor/MSFT/DMClient/HWDevID`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmDeviceInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dm_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// `./DevDetail/Ext/Microsoft/SMBIOSSerialNumber`, from the latest Results that carried
    /// it (the `inventory` action reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// `./DevDetail/Ext/Microsoft/DeviceName`, likewise: the name the device has now,
    /// which may differ from the one it enrolled with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// `./DevDetail/SwV`, likewise: the OS build it runs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
}

/// The OMA-DM digest credentials of one device, kept only as `b64(md5(name:secret))`.
///
/// ⚠ The digest key is a credential: it is all anyone needs to compute valid
/// `syncml:auth-md5` digests for this device (the secret itself is never needed), so it is
/// protected like a password hash (file modes 0600 locally, the table's IAM on AWS) and
/// never logged.
///
/// Nonces follow `crate::dm_auth`: the device may start a session with its current nonce
/// or with the next one we offered; the current one stays valid until the device has
/// authenticated with the next one, so a lost reply never locks it out.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmCredentials {
    /// `AAUTHLEVEL=APPSRV`: the device authenticating to us.
    pub client_name: String,
    pub client_digest_key: String,
    /// `AAUTHLEVEL=CLIENT`: us authenticating to the device.
    pub server_name: String,
    pub server_digest_key: String,
    /// The nonce (base64) the device is known to hold: first the provisioning doc's
    /// `AAUTHDATA`, then each `NextNonce` the device has used.
    #[serde(default)]
    pub client_nonce: String,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub client_nonce_expires_at: Option<OffsetDateTime>,
    /// The `NextNonce` offered in the device's latest session, not yet used by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_next_nonce: Option<String>,
    #[serde(
        with = "time::serde::rfc3339::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub client_next_nonce_expires_at: Option<OffsetDateTime>,
    /// The latest challenge period whose nonce started a session: each challenge nonce
    /// starts at most one session, so a captured digest over it cannot start another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge_spent_period: Option<i64>,
}

impl std::fmt::Debug for DmCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmCredentials")
            .field("client_name", &self.client_name)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// How a device stands with the profiles assigned to it, as its latest session left
/// them: `failed` if any profile failed, else `pending` while any is on its way (or
/// waits for a user to sign in), else `compliant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compliance {
    Compliant,
    Pending,
    Failed,
}

impl Compliance {
    pub fn name(self) -> &'static str {
        match self {
            Self::Compliant => "compliant",
            Self::Pending => "pending",
            Self::Failed => "failed",
        }
    }
}

/// An enrolled (or formerly enrolled) device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The `DeviceID` context item: the client certificate's CN and the SyncML Source.
    pub id: String,
    pub hw_dev_id: Option<String>,
    pub upn: String,
    pub enrollment_type: EnrollmentType,
    pub status: DeviceStatus,
    pub cert: DeviceCertificate,
    pub os: OsInfo,
    pub dm_credentials: DmCredentials,
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub last_seen_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub dm_info: DmDeviceInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_cert: Option<PreviousCertificate>,
    /// Static groups the device is in, sorted (every device is also in `all`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// The Entra ID tenant, user object and device object, for an Entra enrollment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entra: Option<EntraBinding>,
    /// Profile compliance after the latest session; `None` while no profile is assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliance: Option<Compliance>,
}

/// What Entra ID said about an enrollment's user and device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntraBinding {
    pub tenant_id: String,
    pub object_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

impl Device {
    /// Whether the record still binds its DeviceID to its hardware: enrolled or blocked.
    /// An unenrolled or removed record is free to be enrolled over (`crate::identity`).
    pub fn holds_its_hardware(&self) -> bool {
        matches!(self.status, DeviceStatus::Enrolled | DeviceStatus::Blocked)
    }

    /// Whether a certificate with this thumbprint is the device's current one, or its
    /// previous one within the grace period.
    pub fn accepts_certificate(&self, thumbprint: &str, now: OffsetDateTime) -> bool {
        self.cert.thumbprint.eq_ignore_ascii_case(thumbprint)
            || self.previous_cert.as_ref().is_some_and(|p| {
                p.cert.thumbprint.eq_ignore_ascii_case(thumbprint) && now < p.accepted_until
            })
    }
}

/// A page of a listing, with the cursor for the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Opaque cursor: pass it back to get the next page; `None` on the last page.
    pub next: Option<String>,
}

/// Where a listing starts and how much it returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    pub after: Option<String>,
    pub limit: usize,
}

impl PageRequest {
    pub const MAX_LIMIT: usize = 500;

    pub fn new(after: Option<String>, limit: Option<usize>) -> Self {
        Self {
            after,
            limit: limit.unwrap_or(100).clamp(1, Self::MAX_LIMIT),
        }
    }
}
