//! Server configuration for enrollment, with the URL layout every endpoint shares.

use time::Duration;
use url::Url;
use winmdm_wire::discovery::{AuthPolicy, ProtocolVersion};
use winmdm_wire::provisioning::{PollSchedule, ProviderId};

/// Paths of every endpoint. Discovery's path is fixed by Windows; the rest are ours, and
/// the policy and enrollment services share the discovery host as MS-MDE2 requires.
pub mod paths {
    pub const DISCOVERY: &str = "/EnrollmentServer/Discovery.svc";
    pub const POLICY: &str = "/EnrollmentServer/Policy.svc";
    pub const ENROLL: &str = "/EnrollmentServer/Enrollment.svc";
    pub const AUTH: &str = "/EnrollmentServer/Auth";
    /// Entra ID enrollment's terms-of-use page (registered in the tenant as the MDM
    /// application's terms of use URL).
    pub const TERMS: &str = "/EnrollmentServer/TermsOfUse";
    pub const MANAGE: &str = "/ManagementServer/MDM.svc";
    /// Certificate renewal (ROBO), on the mutual-TLS management host.
    pub const RENEW: &str = "/ManagementServer/Renew.svc";
    pub const ADMIN_PREFIX: &str = "/admin/v1";
}

/// The highest enrollment protocol version served. 5.0 and later add attestation policy
/// nodes this server does not implement, so higher requests are answered with 4.0.
pub const MAX_ENROLLMENT_VERSION: ProtocolVersion = ProtocolVersion::new(4, 0);

/// The auth policies a server may prefer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreferredAuth {
    Federated,
    OnPremise,
}

impl PreferredAuth {
    pub fn policy(self) -> AuthPolicy {
        match self {
            PreferredAuth::Federated => AuthPolicy::Federated,
            PreferredAuth::OnPremise => AuthPolicy::OnPremise,
        }
    }
    pub fn other(self) -> Self {
        match self {
            PreferredAuth::Federated => PreferredAuth::OnPremise,
            PreferredAuth::OnPremise => PreferredAuth::Federated,
        }
    }
}

impl std::str::FromStr for PreferredAuth {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "federated" => Ok(Self::Federated),
            "onpremise" | "on-premise" => Ok(Self::OnPremise),
            other => Err(format!(
                "auth policy must be federated or onpremise, not {other:?}"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EnrollmentConfig {
    /// Base URL devices reach the enrollment endpoints at, e.g.
    /// `https://enterpriseenrollment.example.com`.
    pub public_url: Url,
    /// Base URL of the management endpoint (the mTLS host in AWS); defaults to public_url.
    pub management_base_url: Url,
    /// The one auth policy this server offers and whose credentials it accepts.
    pub auth_policy: PreferredAuth,
    /// Certificate lifetime, and how long before expiry renewal starts.
    pub cert_validity: Duration,
    pub renewal_period: Duration,
    /// Days between a device's renewal retries.
    pub renewal_retry_days: u32,
    /// How long a renewed-away certificate is still accepted.
    pub renewal_grace: Duration,
    pub min_key_bits: usize,
    pub provider_id: ProviderId,
    /// Shown to the user as the management server's name.
    pub provider_name: String,
    /// https `appru` values the login page may post back to (besides `ms-app://`).
    pub appru_allow_list: Vec<String>,
    pub token_ttl: Duration,
    pub poll: PollSchedule,
}

impl EnrollmentConfig {
    /// Defaults for a server reachable at `public_url`.
    pub fn new(public_url: Url) -> Self {
        Self {
            management_base_url: public_url.clone(),
            public_url,
            auth_policy: PreferredAuth::Federated,
            cert_validity: Duration::days(365),
            renewal_period: Duration::days(42),
            renewal_retry_days: 7,
            renewal_grace: Duration::hours(24),
            min_key_bits: 2048,
            provider_id: ProviderId::new("winmdm").expect("valid provider id"),
            provider_name: "winmdm".into(),
            appru_allow_list: Vec::new(),
            token_ttl: Duration::minutes(10),
            poll: PollSchedule::default(),
        }
    }

    fn join(base: &Url, path: &str) -> String {
        let mut s = base.as_str().trim_end_matches('/').to_owned();
        s.push_str(path);
        s
    }

    pub fn discovery_url(&self) -> String {
        Self::join(&self.public_url, paths::DISCOVERY)
    }
    pub fn policy_url(&self) -> String {
        Self::join(&self.public_url, paths::POLICY)
    }
    pub fn enrollment_url(&self) -> String {
        Self::join(&self.public_url, paths::ENROLL)
    }
    pub fn auth_url(&self) -> String {
        Self::join(&self.public_url, paths::AUTH)
    }
    pub fn management_url(&self) -> String {
        Self::join(&self.management_base_url, paths::MANAGE)
    }
    pub fn renewal_url(&self) -> String {
        Self::join(&self.management_base_url, paths::RENEW)
    }
}
