//! Namespace URIs and action URIs of the enrollment protocols (PROTOCOL §0).

pub const SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
pub const ADDRESSING: &str = "http://www.w3.org/2005/08/addressing";
pub const WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
pub const WSU: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
pub const WST: &str = "http://docs.oasis-open.org/ws-sx/ws-trust/200512";
pub const AC: &str = "http://schemas.xmlsoap.org/ws/2006/12/authorization";
pub const DISCOVERY: &str = "http://schemas.microsoft.com/windows/management/2012/01/enrollment";
pub const XCEP: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy";
pub const ENROLL: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment";
pub const XSI: &str = crate::xml::XSI_NS;
pub const XSD: &str = "http://www.w3.org/2001/XMLSchema";

pub mod action {
    pub const DISCOVER: &str = "http://schemas.microsoft.com/windows/management/2012/01/enrollment/IDiscoveryService/Discover";
    pub const DISCOVER_RESPONSE: &str = "http://schemas.microsoft.com/windows/management/2012/01/enrollment/IDiscoveryService/DiscoverResponse";
    pub const GET_POLICIES: &str =
        "http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy/IPolicy/GetPolicies";
    pub const GET_POLICIES_RESPONSE: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy/IPolicy/GetPoliciesResponse";
    pub const RST: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RST/wstep";
    pub const RSTRC: &str =
        "http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RSTRC/wstep";
}

/// Token and value types used in WS-Security headers and WSTEP bodies.
pub mod token {
    pub const PASSWORD_TEXT: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText";
    pub const BASE64_BINARY: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#base64binary";
    pub const DEVICE_ENROLLMENT_USER_TOKEN: &str = "http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentUserToken";
    pub const DEVICE_ENROLLMENT_TOKEN: &str = "http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentToken";
    pub const DEVICE_ENROLLMENT_PROVISION_DOC: &str = "http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentProvisionDoc";
    pub const PKCS10: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment#PKCS10";
    /// Renewal: MS-MDE2 and Learn spell it in the secext namespace…
    pub const PKCS7_SECEXT: &str =
        "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#PKCS7";
    /// …and some servers expect it in the enrollment namespace; accept both.
    pub const PKCS7_ENROLL: &str =
        "http://schemas.microsoft.com/windows/pki/2009/01/enrollment#PKCS7";
    pub const REQUEST_ISSUE: &str = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/Issue";
    pub const REQUEST_RENEW: &str = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/Renew";
    pub const REQUEST_RECOVERY: &str = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/Recovery";
}
