//! MS-XCEP `GetPolicies` request and response (PROTOCOL §4).

use crate::ns;
use crate::soap::{Envelope, write_envelope};
use crate::xml::XmlWriter;

/// SHA-256, the hash the issued certificates are requested with.
pub const SHA256_OID: &str = "2.16.840.1.101.3.4.2.1";

/// A parsed `GetPolicies` request. Windows sends `client/{lastUpdate, preferredLanguage}`
/// and `requestFilter` as nil; only the presence of `client` is required by XCEP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetPoliciesRequest {
    pub message_id: Option<String>,
    pub preferred_language: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GetPoliciesError {
    #[error("body is {0}, not GetPolicies")]
    /// The body element's name, quoted and cut ([`crate::xml::quote_claim`]): it is echoed in faults.
    WrongOperation(String),
    #[error("GetPolicies has no client element")]
    NoClient,
}

impl GetPoliciesRequest {
    pub fn from_envelope(env: &Envelope) -> Result<Self, GetPoliciesError> {
        if !env.body.is(ns::XCEP, "GetPolicies") {
            return Err(GetPoliciesError::WrongOperation(crate::xml::quote_claim(
                &env.body.name,
            )));
        }
        let client = env
            .body
            .child(ns::XCEP, "client")
            .ok_or(GetPoliciesError::NoClient)?;
        let preferred_language = client
            .child(ns::XCEP, "preferredLanguage")
            .filter(|e| !e.is_nil())
            .map(|e| e.text())
            .filter(|s| !s.is_empty());
        Ok(Self {
            message_id: env.message_id.clone(),
            preferred_language,
        })
    }
}

/// The one certificate policy this server offers to devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetPoliciesResponse {
    /// `commonName` of the policy (the template name).
    pub common_name: String,
    pub validity_period_seconds: u64,
    pub renewal_period_seconds: u64,
    pub minimal_key_length: u32,
    /// Hours until the client should ask again.
    pub next_update_hours: Option<u32>,
}

impl GetPoliciesResponse {
    /// The response in the strict XCEP sequence order; `policyOIDReference` and
    /// `hashAlgorithmOIDReference` both name the one `oID` entry, as in Microsoft's
    /// examples, so every reference resolves.
    pub fn to_xml(&self, relates_to: Option<&str>) -> String {
        write_envelope(
            ns::action::GET_POLICIES_RESPONSE,
            relates_to,
            |_| {},
            |w| {
                w.start("GetPoliciesResponse", &[("xmlns", ns::XCEP)]);
                w.start("response", &[]);
                w.empty("policyID", &[]);
                w.nil("policyFriendlyName");
                match self.next_update_hours {
                    Some(h) => w.leaf("nextUpdateHours", &[], &h.max(1).to_string()),
                    None => w.nil("nextUpdateHours"),
                };
                w.nil("policiesNotChanged");
                w.start("policies", &[]);
                w.start("policy", &[]);
                w.leaf("policyOIDReference", &[], "0");
                w.nil("cAs");
                self.write_attributes(w);
                w.end(); // policy
                w.end(); // policies
                w.end(); // response
                w.nil("cAs");
                w.start("oIDs", &[]);
                w.start("oID", &[]);
                w.leaf("value", &[], SHA256_OID);
                // XCEP group 1 is "hash algorithm" (PROTOCOL §4 notes the disagreement).
                w.leaf("group", &[], "1");
                w.leaf("oIDReferenceID", &[], "0");
                w.leaf("defaultName", &[], "szOID_NIST_sha256");
                w.end();
                w.end(); // oIDs
                w.end(); // GetPoliciesResponse
            },
        )
    }

    fn write_attributes(&self, w: &mut XmlWriter) {
        w.start("attributes", &[]);
        w.leaf("commonName", &[], &self.common_name);
        w.leaf("policySchema", &[], "3");
        w.start("certificateValidity", &[]);
        w.leaf(
            "validityPeriodSeconds",
            &[],
            &self.validity_period_seconds.max(1).to_string(),
        );
        w.leaf(
            "renewalPeriodSeconds",
            &[],
            &self.renewal_period_seconds.max(1).to_string(),
        );
        w.end();
        w.start("permission", &[]);
        w.leaf("enroll", &[], "true");
        w.leaf("autoEnroll", &[], "false");
        w.end();
        w.start("privateKeyAttributes", &[]);
        w.leaf(
            "minimalKeyLength",
            &[],
            &self.minimal_key_length.to_string(),
        );
        w.nil("keySpec");
        w.nil("keyUsageProperty");
        w.nil("permissions");
        w.nil("algorithmOIDReference");
        w.nil("cryptoProviders");
        w.end();
        w.start("revision", &[]);
        w.leaf("majorRevision", &[], "101");
        w.leaf("minorRevision", &[], "0");
        w.end();
        w.nil("supersededPolicies");
        w.nil("privateKeyFlags");
        w.nil("subjectNameFlags");
        w.nil("enrollmentFlags");
        w.nil("generalFlags");
        w.leaf("hashAlgorithmOIDReference", &[], "0");
        w.nil("rARequirements");
        w.nil("keyArchivalAttributes");
        w.nil("extensions");
        w.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml;

    #[test]
    fn response_is_in_schema_order_and_references_resolve() {
        let r = GetPoliciesResponse {
            common_name: "winmdm".into(),
            validity_period_seconds: 365 * 86400,
            renewal_period_seconds: 42 * 86400,
            minimal_key_length: 2048,
            next_update_hours: None,
        };
        let doc = xml::parse(r.to_xml(Some("urn:uuid:1")).as_bytes()).unwrap();
        let resp = doc
            .path(&[(ns::SOAP, "Body"), (ns::XCEP, "GetPoliciesResponse")])
            .unwrap();
        let order: Vec<_> = resp.elements().map(|e| &*e.name).collect();
        assert_eq!(order, ["response", "cAs", "oIDs"]);
        let attrs = resp
            .path(&[
                (ns::XCEP, "response"),
                (ns::XCEP, "policies"),
                (ns::XCEP, "policy"),
                (ns::XCEP, "attributes"),
            ])
            .unwrap();
        let names: Vec<_> = attrs.elements().map(|e| &*e.name).collect();
        assert_eq!(
            names,
            [
                "commonName",
                "policySchema",
                "certificateValidity",
                "permission",
                "privateKeyAttributes",
                "revision",
                "supersededPolicies",
                "privateKeyFlags",
                "subjectNameFlags",
                "enrollmentFlags",
                "generalFlags",
                "hashAlgorithmOIDReference",
                "rARequirements",
                "keyArchivalAttributes",
                "extensions"
            ]
        );
        assert_eq!(attrs.child(ns::XCEP, "policySchema").unwrap().text(), "3");
        let ids: Vec<String> = resp
            .path(&[(ns::XCEP, "oIDs")])
            .unwrap()
            .elements()
            .map(|o| o.child(ns::XCEP, "oIDReferenceID").unwrap().text())
            .collect();
        let hash_ref = attrs
            .child(ns::XCEP, "hashAlgorithmOIDReference")
            .unwrap()
            .text();
        assert!(ids.contains(&hash_ref));
    }
}
