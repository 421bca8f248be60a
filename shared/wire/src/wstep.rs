//! MS-WSTEP `RequestSecurityToken` and its `RequestSecurityTokenResponseCollection`
//! (PROTOCOL §5).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::ns;
use crate::soap::{Envelope, decode_b64, write_envelope};

/// What the client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestType {
    Issue,
    Renew,
    Recovery,
}

/// The binary token in the RST body: a PKCS#10 for enrollment, a PKCS#7-wrapped PKCS#10
/// for renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateRequest {
    Pkcs10(Vec<u8>),
    Pkcs7(Vec<u8>),
}

/// The `ac:AdditionalContext` items, looked up by name without regard to case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextItems(Vec<(String, String)>);

impl ContextItems {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSecurityToken {
    pub message_id: Option<String>,
    pub token_type: String,
    pub request_type: RequestType,
    pub request: CertificateRequest,
    pub context: ContextItems,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RstError {
    #[error("body is {0}, not RequestSecurityToken")]
    /// The body element's name, quoted and cut ([`crate::xml::quote_claim`]): it is echoed in faults.
    WrongOperation(String),
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("unsupported RequestType {0}")]
    UnsupportedRequestType(String),
    #[error("unsupported BinarySecurityToken ValueType {0}")]
    UnsupportedValueType(String),
    #[error("BinarySecurityToken is not base64")]
    NotBase64,
    #[error("AdditionalContext has more than {MAX_CONTEXT_ITEMS} ContextItems")]
    TooManyContextItems,
}

/// Most `ac:ContextItem`s accepted: Windows sends about fifteen (one `MAC` per network
/// adapter among them).
pub const MAX_CONTEXT_ITEMS: usize = 256;

impl RequestSecurityToken {
    pub fn from_envelope(env: &Envelope) -> Result<Self, RstError> {
        let body = &env.body;
        if !body.is(ns::WST, "RequestSecurityToken") {
            return Err(RstError::WrongOperation(crate::xml::quote_claim(
                &body.name,
            )));
        }
        let token_type = body
            .child(ns::WST, "TokenType")
            .map(|e| e.text())
            .ok_or(RstError::Missing("TokenType"))?;
        let rt = body
            .child(ns::WST, "RequestType")
            .map(|e| e.text())
            .ok_or(RstError::Missing("RequestType"))?;
        let request_type = match rt.as_str() {
            ns::token::REQUEST_ISSUE => RequestType::Issue,
            ns::token::REQUEST_RENEW => RequestType::Renew,
            ns::token::REQUEST_RECOVERY => RequestType::Recovery,
            _ => {
                return Err(RstError::UnsupportedRequestType(crate::xml::quote_claim(
                    &rt,
                )));
            }
        };
        let bst = body
            .child(ns::WSSE, "BinarySecurityToken")
            .ok_or(RstError::Missing("BinarySecurityToken"))?;
        let value_type = bst.attr("ValueType").unwrap_or_default().trim();
        let der = decode_b64(&bst.raw_text()).map_err(|_| RstError::NotBase64)?;
        let request = match value_type {
            ns::token::PKCS10 => CertificateRequest::Pkcs10(der),
            ns::token::PKCS7_SECEXT | ns::token::PKCS7_ENROLL => CertificateRequest::Pkcs7(der),
            other => {
                return Err(RstError::UnsupportedValueType(crate::xml::quote_claim(
                    other,
                )));
            }
        };
        let mut items = Vec::new();
        if let Some(ac) = body.child(ns::AC, "AdditionalContext") {
            for (i, item) in ac.children_named(ns::AC, "ContextItem").enumerate() {
                if i == MAX_CONTEXT_ITEMS {
                    return Err(RstError::TooManyContextItems);
                }
                let name = item.attr("Name").unwrap_or_default().trim().to_owned();
                let value = item
                    .child(ns::AC, "Value")
                    .map(|v| v.text())
                    .unwrap_or_default();
                if !name.is_empty() {
                    items.push((name, value));
                }
            }
        }
        Ok(Self {
            message_id: env.message_id.clone(),
            token_type,
            request_type,
            request,
            context: ContextItems(items),
        })
    }
}

/// The successful reply: the provisioning document, base64-encoded into the
/// `RequestedSecurityToken`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSecurityTokenResponse {
    pub provisioning_doc_xml: String,
    /// `u:Timestamp` Created / Expires, RFC 3339 in UTC.
    pub created: String,
    pub expires: String,
}

impl RequestSecurityTokenResponse {
    pub fn to_xml(&self, relates_to: Option<&str>) -> String {
        let encoded = B64.encode(self.provisioning_doc_xml.as_bytes());
        write_envelope(
            ns::action::RSTRC,
            relates_to,
            |w| {
                w.start(
                    "o:Security",
                    &[("s:mustUnderstand", "1"), ("xmlns:o", ns::WSSE)],
                );
                w.start("u:Timestamp", &[("u:Id", "_0")]);
                w.leaf("u:Created", &[], &self.created);
                w.leaf("u:Expires", &[], &self.expires);
                w.end();
                w.end();
            },
            |w| {
                w.start(
                    "RequestSecurityTokenResponseCollection",
                    &[("xmlns", ns::WST)],
                );
                w.start("RequestSecurityTokenResponse", &[]);
                w.leaf("TokenType", &[], ns::token::DEVICE_ENROLLMENT_TOKEN);
                w.empty("DispositionMessage", &[("xmlns", ns::ENROLL)]);
                w.start("RequestedSecurityToken", &[]);
                w.leaf(
                    "BinarySecurityToken",
                    &[
                        ("ValueType", ns::token::DEVICE_ENROLLMENT_PROVISION_DOC),
                        ("EncodingType", ns::token::BASE64_BINARY),
                        ("xmlns", ns::WSSE),
                    ],
                    &encoded,
                );
                w.end();
                w.leaf("RequestID", &[("xmlns", ns::ENROLL)], "0");
                w.end();
                w.end();
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml;

    fn rst(value_type: &str, context: &str) -> Envelope {
        let xml = format!(
            r#"<s:Envelope xmlns:s="{soap}" xmlns:a="{a}" xmlns:wsse="{wsse}" xmlns:wst="{wst}" xmlns:ac="{ac}">
<s:Header><a:MessageID>urn:uuid:42</a:MessageID></s:Header>
<s:Body><wst:RequestSecurityToken>
<wst:TokenType>{tt}</wst:TokenType>
<wst:RequestType>{issue}</wst:RequestType>
<wsse:BinarySecurityToken ValueType="{value_type}" EncodingType="{b64t}">AAEC
AwQ=</wsse:BinarySecurityToken>
<ac:AdditionalContext xmlns="{ac}">{context}</ac:AdditionalContext>
</wst:RequestSecurityToken></s:Body></s:Envelope>"#,
            soap = ns::SOAP,
            a = ns::ADDRESSING,
            wsse = ns::WSSE,
            wst = ns::WST,
            ac = ns::AC,
            tt = ns::token::DEVICE_ENROLLMENT_TOKEN,
            issue = ns::token::REQUEST_ISSUE,
            b64t = ns::token::BASE64_BINARY,
        );
        Envelope::parse(xml.as_bytes()).unwrap()
    }

    #[test]
    fn parses_context_items_case_insensitively() {
        let env = rst(
            ns::token::PKCS10,
            r#"<ac:ContextItem Name="deviceid"><ac:Value>
              ABC </ac:Value></ac:ContextItem><ContextItem Name=" EnrollmentType "><Value>Full</Value></ContextItem>"#,
        );
        let r = RequestSecurityToken::from_envelope(&env).unwrap();
        assert_eq!(r.request_type, RequestType::Issue);
        assert_eq!(r.request, CertificateRequest::Pkcs10(vec![0, 1, 2, 3, 4]));
        assert_eq!(r.context.get("DeviceID"), Some("ABC"));
        assert_eq!(r.context.get("enrollmenttype"), Some("Full"));
        assert_eq!(r.message_id.as_deref(), Some("urn:uuid:42"));
    }

    #[test]
    fn accepts_both_pkcs7_value_types() {
        for vt in [ns::token::PKCS7_SECEXT, ns::token::PKCS7_ENROLL] {
            let r = RequestSecurityToken::from_envelope(&rst(vt, "")).unwrap();
            assert!(matches!(r.request, CertificateRequest::Pkcs7(_)));
        }
        assert!(matches!(
            RequestSecurityToken::from_envelope(&rst("urn:other", "")),
            Err(RstError::UnsupportedValueType(_))
        ));
    }

    /// A body element of the longest name the parser takes, sent to each SOAP operation:
    /// the error (which becomes a fault reason and a log field) quotes at most 64 bytes.
    #[test]
    fn another_operation_is_quoted_in_at_most_64_bytes() {
        let name = "é".repeat(crate::xml::Limit::NameBytes.max() / 2);
        let env = Envelope::parse(
            format!(
                r#"<s:Envelope xmlns:s="{soap}"><s:Body><{name}/></s:Body></s:Envelope>"#,
                soap = ns::SOAP
            )
            .as_bytes(),
        )
        .unwrap();
        let quoted = format!("{:?}", format!("{}…", "é".repeat(32)));
        for err in [
            RequestSecurityToken::from_envelope(&env)
                .unwrap_err()
                .to_string(),
            crate::xcep::GetPoliciesRequest::from_envelope(&env)
                .unwrap_err()
                .to_string(),
            crate::discovery::DiscoverRequest::from_envelope(&env)
                .unwrap_err()
                .to_string(),
        ] {
            assert!(err.contains(&quoted), "{err}");
            assert!(err.len() < 120, "{err}");
        }
    }

    #[test]
    fn response_carries_the_doc_base64() {
        let r = RequestSecurityTokenResponse {
            provisioning_doc_xml: "<wap-provisioningdoc/>".into(),
            created: "2026-01-01T00:00:00Z".into(),
            expires: "2026-01-01T00:05:00Z".into(),
        };
        let doc = xml::parse(r.to_xml(Some("urn:uuid:42")).as_bytes()).unwrap();
        let bst = doc
            .path(&[
                (ns::SOAP, "Body"),
                (ns::WST, "RequestSecurityTokenResponseCollection"),
                (ns::WST, "RequestSecurityTokenResponse"),
                (ns::WST, "RequestedSecurityToken"),
                (ns::WSSE, "BinarySecurityToken"),
            ])
            .unwrap();
        assert_eq!(
            bst.attr("ValueType"),
            Some(ns::token::DEVICE_ENROLLMENT_PROVISION_DOC)
        );
        assert_eq!(
            decode_b64(&bst.text()).unwrap(),
            b"<wap-provisioningdoc/>".to_vec()
        );
    }
}
