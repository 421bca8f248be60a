//! SOAP 1.2 envelopes with WS-Addressing and WS-Security headers, and enrollment faults
//! (PROTOCOL §0, §3, §7).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::ns;
use crate::xml::{self, Element, XmlWriter};

/// A parsed request envelope: the addressing headers we echo and the security token.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub action: Option<String>,
    /// `a:MessageID`, echoed verbatim in the reply's `a:RelatesTo`.
    pub message_id: Option<String>,
    pub to: Option<String>,
    pub security: Security,
    pub body: Element,
}

/// What the `wsse:Security` header carried.
#[derive(Clone, PartialEq, Eq)]
pub enum Security {
    None,
    /// OnPremise: `wsse:UsernameToken` with a plaintext password.
    UsernameToken {
        username: String,
        password: Secret,
    },
    /// Federated (and certificate) auth: the decoded bytes of a `wsse:BinarySecurityToken`.
    BinaryToken {
        value_type: String,
        data: Secret,
    },
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Security::None => f.write_str("None"),
            Security::UsernameToken { username, .. } => f
                .debug_struct("UsernameToken")
                .field("username", username)
                .finish_non_exhaustive(),
            Security::BinaryToken { value_type, .. } => f
                .debug_struct("BinaryToken")
                .field("value_type", value_type)
                .finish_non_exhaustive(),
        }
    }
}

/// Bytes that must never reach a log line: passwords and tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why an envelope could not be read; each maps to the fault subcode a client expects.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error(transparent)]
    Xml(#[from] xml::XmlError),
    #[error("not a SOAP 1.2 envelope (root is {0})")]
    NotAnEnvelope(String),
    #[error("the envelope has no body content")]
    NoBody,
    #[error("unreadable security header: {0}")]
    InvalidSecurity(String),
}

impl EnvelopeError {
    pub fn fault_code(&self) -> FaultCode {
        match self {
            EnvelopeError::InvalidSecurity(_) => FaultCode::InvalidSecurity,
            _ => FaultCode::MessageFormat,
        }
    }
}

impl Envelope {
    pub fn parse(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let root = xml::parse(bytes)?;
        if !root.is(ns::SOAP, "Envelope") {
            return Err(EnvelopeError::NotAnEnvelope(root.name.to_string()));
        }
        let header = root.child(ns::SOAP, "Header");
        let text_of = |local: &str| {
            header
                .and_then(|h| h.child(ns::ADDRESSING, local))
                .map(Element::text)
        };
        let action = text_of("Action");
        let message_id = text_of("MessageID");
        let to = text_of("To");
        let security = match header.and_then(|h| h.child(ns::WSSE, "Security")) {
            Some(sec) => parse_security(sec)?,
            None => Security::None,
        };
        let body = root
            .child(ns::SOAP, "Body")
            .and_then(|b| b.elements().next())
            .cloned()
            .ok_or(EnvelopeError::NoBody)?;
        Ok(Envelope {
            action,
            message_id,
            to,
            security,
            body,
        })
    }
}

fn parse_security(sec: &Element) -> Result<Security, EnvelopeError> {
    if let Some(ut) = sec.child(ns::WSSE, "UsernameToken") {
        let username = ut
            .child(ns::WSSE, "Username")
            .map(Element::text)
            .ok_or_else(|| {
                EnvelopeError::InvalidSecurity("UsernameToken without Username".into())
            })?;
        let pw = ut.child(ns::WSSE, "Password").ok_or_else(|| {
            EnvelopeError::InvalidSecurity("UsernameToken without Password".into())
        })?;
        if let Some(t) = pw.attr("Type")
            && t.trim() != ns::token::PASSWORD_TEXT
        {
            return Err(EnvelopeError::InvalidSecurity(
                "only PasswordText passwords are supported".into(),
            ));
        }
        // Passwords are taken as typed: no trimming.
        return Ok(Security::UsernameToken {
            username,
            password: Secret::new(pw.raw_text()),
        });
    }
    if let Some(bst) = sec.child(ns::WSSE, "BinarySecurityToken") {
        let value_type = bst.attr("ValueType").unwrap_or_default().trim().to_owned();
        let data = decode_b64(&bst.raw_text()).map_err(|_| {
            EnvelopeError::InvalidSecurity("BinarySecurityToken is not base64".into())
        })?;
        return Ok(Security::BinaryToken {
            value_type,
            data: Secret::new(data),
        });
    }
    Ok(Security::None)
}

/// Decodes base64 that may be wrapped over several lines.
pub fn decode_b64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    B64.decode(compact)
}

/// Writes a reply envelope: `a:Action` (mustUnderstand), `a:RelatesTo`, any extra header
/// content, then the body.
pub fn write_envelope(
    action: &str,
    relates_to: Option<&str>,
    extra_header: impl FnOnce(&mut XmlWriter),
    body: impl FnOnce(&mut XmlWriter),
) -> String {
    let mut w = XmlWriter::with_capacity(4096);
    w.start(
        "s:Envelope",
        &[
            ("xmlns:s", ns::SOAP),
            ("xmlns:a", ns::ADDRESSING),
            ("xmlns:u", ns::WSU),
        ],
    );
    w.start("s:Header", &[]);
    w.leaf("a:Action", &[("s:mustUnderstand", "1")], action);
    if let Some(id) = relates_to {
        w.leaf("a:RelatesTo", &[], id);
    }
    extra_header(&mut w);
    w.end();
    w.start("s:Body", &[("xmlns:xsi", ns::XSI), ("xmlns:xsd", ns::XSD)]);
    body(&mut w);
    w.end();
    w.end();
    w.finish()
}

/// The fault subcodes of MS-MDE2 2.2.10, with their qualified names and HRESULTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultCode {
    MessageFormat,
    Authentication,
    Authorization,
    CertificateRequest,
    EnrollmentServer,
    InternalServiceFault,
    InvalidSecurity,
}

impl FaultCode {
    /// The subcode as the client expects it, prefix included (`s:` is the envelope
    /// namespace, `a:` the addressing namespace).
    pub fn qname(self) -> &'static str {
        match self {
            FaultCode::MessageFormat => "s:MessageFormat",
            FaultCode::Authentication => "s:Authentication",
            FaultCode::Authorization => "s:Authorization",
            FaultCode::CertificateRequest => "s:CertificateRequest",
            FaultCode::EnrollmentServer => "s:EnrollmentServer",
            FaultCode::InternalServiceFault => "a:InternalServiceFault",
            FaultCode::InvalidSecurity => "a:InvalidSecurity",
        }
    }

    pub fn hresult(self) -> u32 {
        match self {
            FaultCode::MessageFormat => 0x8018_0001,
            FaultCode::Authentication => 0x8018_0002,
            FaultCode::Authorization => 0x8018_0003,
            FaultCode::CertificateRequest => 0x8018_0004,
            FaultCode::EnrollmentServer => 0x8018_0005,
            FaultCode::InternalServiceFault => 0x8018_0006,
            FaultCode::InvalidSecurity => 0x8018_0007,
        }
    }

    /// Short name for logs and metrics.
    pub fn name(self) -> &'static str {
        self.qname().split_once(':').map_or("", |(_, n)| n)
    }
}

/// `errortype` values of the optional fault detail (MS-MDE2 2.2.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    DeviceCapReached,
    DeviceNotSupported,
    NotSupported,
    NotEligibleToRenew,
    InMaintenance,
    UserLicense,
    InvalidEnrollmentData,
    /// Windows 10 20H2+ shows the message text to the user.
    CustomServerError,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::DeviceCapReached => "DeviceCapReached",
            ErrorType::DeviceNotSupported => "DeviceNotSupported",
            ErrorType::NotSupported => "NotSupported",
            ErrorType::NotEligibleToRenew => "NotEligibleToRenew",
            ErrorType::InMaintenance => "InMaintenance",
            ErrorType::UserLicense => "UserLicense",
            ErrorType::InvalidEnrollmentData => "InvalidEnrollmentData",
            ErrorType::CustomServerError => "CustomServerError",
        }
    }
}

/// A fault to send back to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub code: FaultCode,
    /// Shown in `s:Reason`; never contains secrets.
    pub reason: String,
    pub detail: Option<ErrorType>,
}

impl Fault {
    pub fn new(code: FaultCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: ErrorType) -> Self {
        self.detail = Some(detail);
        self
    }

    /// The fault envelope. `action` is the output action of the operation that failed
    /// (PROTOCOL §7 notes clients accept either that or the RSTRC action).
    pub fn to_xml(&self, action: &str, relates_to: Option<&str>, trace_id: &str) -> String {
        write_envelope(
            action,
            relates_to,
            |_| {},
            |w| {
                w.start("s:Fault", &[]);
                w.start("s:Code", &[]);
                w.leaf("s:Value", &[], "s:Receiver");
                w.start("s:Subcode", &[]);
                w.leaf("s:Value", &[], self.code.qname());
                w.end();
                w.end();
                w.start("s:Reason", &[]);
                w.leaf("s:Text", &[("xml:lang", "en-us")], &self.reason);
                w.end();
                if let Some(detail) = self.detail {
                    w.start("s:Detail", &[]);
                    w.start("DeviceEnrollmentServiceError", &[("xmlns", ns::ENROLL)]);
                    w.leaf("ErrorType", &[], detail.as_str());
                    w.leaf("Message", &[], &self.reason);
                    w.leaf("TraceId", &[], trace_id);
                    w.end();
                    w.end();
                }
                w.end();
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_username_token_and_redacts_it() {
        let env = format!(
            r#"<s:Envelope xmlns:s="{}" xmlns:a="{}" xmlns:wsse="{}">
              <s:Header>
                <a:Action s:mustUnderstand="1">act</a:Action>
                <a:MessageID>urn:uuid:1</a:MessageID>
                <wsse:Security s:mustUnderstand="1"><wsse:UsernameToken>
                  <wsse:Username>u@x</wsse:Username>
                  <wsse:Password wsse:Type="{}">p w</wsse:Password>
                </wsse:UsernameToken></wsse:Security>
              </s:Header><s:Body><x/></s:Body></s:Envelope>"#,
            ns::SOAP,
            ns::ADDRESSING,
            ns::WSSE,
            ns::token::PASSWORD_TEXT
        );
        let e = Envelope::parse(env.as_bytes()).unwrap();
        assert_eq!(e.action.as_deref(), Some("act"));
        assert_eq!(e.message_id.as_deref(), Some("urn:uuid:1"));
        match &e.security {
            Security::UsernameToken { username, password } => {
                assert_eq!(username, "u@x");
                assert_eq!(password.expose(), b"p w");
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{e:?}").contains("p w"));
    }

    #[test]
    fn fault_has_correct_case_and_subcode() {
        let xml = Fault::new(FaultCode::Authentication, "bad <creds>")
            .with_detail(ErrorType::CustomServerError)
            .to_xml(ns::action::RSTRC, Some("urn:uuid:9"), "t1");
        let root = xml::parse(xml.as_bytes()).unwrap();
        let fault = root
            .path(&[(ns::SOAP, "Body"), (ns::SOAP, "Fault")])
            .unwrap();
        let code = fault.child(ns::SOAP, "Code").unwrap();
        assert_eq!(code.child(ns::SOAP, "Value").unwrap().text(), "s:Receiver");
        assert_eq!(
            code.path(&[(ns::SOAP, "Subcode"), (ns::SOAP, "Value")])
                .unwrap()
                .text(),
            "s:Authentication"
        );
        assert!(xml.contains("bad &lt;creds&gt;"));
        assert!(xml.contains("<ErrorType>CustomServerError</ErrorType>"));
    }
}
