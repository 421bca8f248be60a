//! MS-MDE2 Discovery: `Discover` request and `DiscoverResponse` (PROTOCOL §1).

use std::fmt;
use std::str::FromStr;

use crate::ns;
use crate::soap::{Envelope, write_envelope};
use crate::xml::Element;

/// The authentication policies a device can offer and the server can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthPolicy {
    OnPremise,
    Federated,
    Certificate,
}

impl AuthPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthPolicy::OnPremise => "OnPremise",
            AuthPolicy::Federated => "Federated",
            AuthPolicy::Certificate => "Certificate",
        }
    }
}

impl FromStr for AuthPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "onpremise" => Ok(AuthPolicy::OnPremise),
            "federated" => Ok(AuthPolicy::Federated),
            "certificate" => Ok(AuthPolicy::Certificate),
            other => Err(format!("unknown auth policy {other:?}")),
        }
    }
}

impl fmt::Display for AuthPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decimal protocol version such as `4.0` or `9.0`, compared numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    pub major: u32,
    pub minor: u32,
}

impl ProtocolVersion {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }
}

impl FromStr for ProtocolVersion {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let s = s.trim();
        let (maj, min) = s.split_once('.').unwrap_or((s, "0"));
        Ok(Self {
            major: maj.parse().map_err(|_| ())?,
            minor: if min.is_empty() {
                0
            } else {
                min.parse().map_err(|_| ())?
            },
        })
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The device's `Discover/request`. Every field is optional on the wire; the parser
/// records what was there and ignores what it does not know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoverRequest {
    pub message_id: Option<String>,
    pub email_address: Option<String>,
    /// `None` if missing or not a decimal: the server then answers its own maximum.
    pub request_version: Option<ProtocolVersion>,
    pub device_type: Option<String>,
    pub application_version: Option<String>,
    pub os_edition: Option<String>,
    pub auth_policies: Vec<AuthPolicy>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiscoverError {
    #[error("body is {0}, not Discover")]
    /// The body element's name, quoted and cut ([`crate::xml::quote_claim`]): it is echoed in faults.
    WrongOperation(String),
    #[error("Discover has no request element")]
    NoRequest,
}

impl DiscoverRequest {
    pub fn from_envelope(env: &Envelope) -> Result<Self, DiscoverError> {
        let body = &env.body;
        if !body.is(ns::DISCOVERY, "Discover") {
            return Err(DiscoverError::WrongOperation(crate::xml::quote_claim(
                &body.name,
            )));
        }
        let req = body
            .child(ns::DISCOVERY, "request")
            .ok_or(DiscoverError::NoRequest)?;
        let text = |n: &str| {
            req.child(ns::DISCOVERY, n)
                .map(Element::text)
                .filter(|s| !s.is_empty())
        };
        let mut auth_policies = Vec::new();
        if let Some(ap) = req.child(ns::DISCOVERY, "AuthPolicies") {
            let mut push = |s: &str| {
                if let Ok(p) = s.parse::<AuthPolicy>()
                    && !auth_policies.contains(&p)
                {
                    auth_policies.push(p);
                }
            };
            for p in ap.children_named(ns::DISCOVERY, "AuthPolicy") {
                push(&p.text());
            }
            // The Learn certificate sample writes the policy as bare text.
            push(&ap.text());
        }
        Ok(DiscoverRequest {
            message_id: env.message_id.clone(),
            email_address: text("EmailAddress"),
            request_version: text("RequestVersion").and_then(|v| v.parse().ok()),
            device_type: text("DeviceType"),
            application_version: text("ApplicationVersion"),
            os_edition: text("OSEdition"),
            auth_policies,
        })
    }
}

/// The `DiscoverResult`. The type ties the authentication service URL to the Federated
/// policy: OnPremise replies must not carry one (PROTOCOL §1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverResponse {
    pub auth: DiscoveredAuth,
    pub enrollment_version: ProtocolVersion,
    pub enrollment_policy_service_url: String,
    pub enrollment_service_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveredAuth {
    OnPremise,
    Federated { authentication_service_url: String },
}

impl DiscoveredAuth {
    pub fn policy(&self) -> AuthPolicy {
        match self {
            DiscoveredAuth::OnPremise => AuthPolicy::OnPremise,
            DiscoveredAuth::Federated { .. } => AuthPolicy::Federated,
        }
    }
}

impl DiscoverResponse {
    pub fn to_xml(&self, relates_to: Option<&str>) -> String {
        write_envelope(
            ns::action::DISCOVER_RESPONSE,
            relates_to,
            |_| {},
            |w| {
                w.start("DiscoverResponse", &[("xmlns", ns::DISCOVERY)]);
                w.start("DiscoverResult", &[]);
                w.leaf("AuthPolicy", &[], self.auth.policy().as_str());
                w.leaf(
                    "EnrollmentVersion",
                    &[],
                    &self.enrollment_version.to_string(),
                );
                w.leaf(
                    "EnrollmentPolicyServiceUrl",
                    &[],
                    &self.enrollment_policy_service_url,
                );
                w.leaf("EnrollmentServiceUrl", &[], &self.enrollment_service_url);
                if let DiscoveredAuth::Federated {
                    authentication_service_url,
                } = &self.auth
                {
                    w.leaf("AuthenticationServiceUrl", &[], authentication_service_url);
                }
                w.end();
                w.end();
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discover(ns_uri: &str, inner: &str) -> Envelope {
        let xml = format!(
            r#"<s:Envelope xmlns:a="http://www.w3.org/2005/08/addressing" xmlns:s="http://www.w3.org/2003/05/soap-envelope">
  <s:Header><a:MessageID>urn:uuid:748132ec</a:MessageID></s:Header>
  <s:Body><d:Discover xmlns:d="{ns_uri}"><d:request xmlns:i="http://www.w3.org/2001/XMLSchema-instance">{inner}</d:request></d:Discover></s:Body></s:Envelope>"#
        );
        Envelope::parse(xml.as_bytes()).unwrap()
    }

    #[test]
    fn parses_leniently_with_trailing_slash_and_unknown_elements() {
        let env = discover(
            "http://schemas.microsoft.com/windows/management/2012/01/enrollment/",
            "<d:EmailAddress>corp\\alice</d:EmailAddress>
             <d:RequestVersion>
                9.0
             </d:RequestVersion>
             <d:Unknown>x</d:Unknown>
             <d:AuthPolicies><d:AuthPolicy>OnPremise</d:AuthPolicy><d:AuthPolicy>Federated</d:AuthPolicy></d:AuthPolicies>",
        );
        let r = DiscoverRequest::from_envelope(&env).unwrap();
        assert_eq!(r.email_address.as_deref(), Some("corp\\alice"));
        assert_eq!(r.request_version, Some(ProtocolVersion::new(9, 0)));
        assert_eq!(
            r.auth_policies,
            vec![AuthPolicy::OnPremise, AuthPolicy::Federated]
        );
        assert_eq!(r.message_id.as_deref(), Some("urn:uuid:748132ec"));
    }

    #[test]
    fn bare_text_auth_policies() {
        let env = discover(
            ns::DISCOVERY,
            "<d:AuthPolicies>Certificate</d:AuthPolicies>",
        );
        let r = DiscoverRequest::from_envelope(&env).unwrap();
        assert_eq!(r.auth_policies, vec![AuthPolicy::Certificate]);
    }

    #[test]
    fn versions_compare_numerically() {
        let v: ProtocolVersion = "10.0".parse().unwrap();
        assert!(v > "9.0".parse().unwrap());
        assert_eq!(
            "4".parse::<ProtocolVersion>(),
            Ok(ProtocolVersion::new(4, 0))
        );
    }

    #[test]
    fn onpremise_response_has_no_auth_url() {
        let r = DiscoverResponse {
            auth: DiscoveredAuth::OnPremise,
            enrollment_version: ProtocolVersion::new(4, 0),
            enrollment_policy_service_url: "https://e/p".into(),
            enrollment_service_url: "https://e/e".into(),
        };
        let xml = r.to_xml(Some("urn:uuid:1"));
        assert!(!xml.contains("AuthenticationServiceUrl"));
        assert!(xml.contains("<EnrollmentVersion>4.0</EnrollmentVersion>"));
    }
}
