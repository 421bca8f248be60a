//! Checks on server answers: SOAP faults, the provisioning document and the certificate
//! chain it carries.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha1::{Digest, Sha1};
use winmdm_wire::ns;
use winmdm_wire::xml::{self, Element};
use x509_parser::prelude::*;

use crate::HttpResponse;

/// The fault subcode (`s:Authentication` …) of a SOAP fault response, after checking the
/// envelope's shape, status and content type.
pub fn fault_subcode(resp: &HttpResponse) -> String {
    assert_eq!(
        resp.header("content-type"),
        Some("application/soap+xml; charset=utf-8")
    );
    assert!(resp.header("content-length").is_some());
    assert_eq!(resp.status, 500, "a fault: {}", resp.text());
    let root = xml::parse(&resp.body).expect("fault is XML");
    let fault = root
        .path(&[(ns::SOAP, "Body"), (ns::SOAP, "Fault")])
        .unwrap_or_else(|| panic!("no s:Fault in {}", resp.text()));
    let code = fault.child(ns::SOAP, "Code").expect("Code");
    assert_eq!(
        code.child(ns::SOAP, "Value").expect("Value").text(),
        "s:Receiver"
    );
    assert!(
        fault
            .path(&[(ns::SOAP, "Reason"), (ns::SOAP, "Text")])
            .is_some_and(|t| !t.text().is_empty())
    );
    code.path(&[(ns::SOAP, "Subcode"), (ns::SOAP, "Value")])
        .expect("Subcode")
        .text()
}

/// The body element of a successful SOAP reply.
pub fn soap_ok(resp: &HttpResponse) -> Element {
    assert_eq!(resp.status, 200, "expected success: {}", resp.text());
    assert_eq!(
        resp.header("content-type"),
        Some("application/soap+xml; charset=utf-8")
    );
    assert_eq!(
        resp.header("content-length")
            .map(|l| l.parse::<usize>().unwrap()),
        Some(resp.body.len())
    );
    assert!(resp.header("transfer-encoding").is_none());
    xml::parse(&resp.body).expect("reply is XML")
}

pub fn relates_to(env: &Element) -> Option<String> {
    env.path(&[(ns::SOAP, "Header"), (ns::ADDRESSING, "RelatesTo")])
        .map(|e| e.text())
}

/// A `characteristic` child by its `type`.
pub fn characteristic<'a>(el: &'a Element, ty: &str) -> Option<&'a Element> {
    el.elements()
        .find(|c| &*c.name == "characteristic" && c.attr("type") == Some(ty))
}

/// A `parm` child's value by name.
pub fn parm<'a>(el: &'a Element, name: &str) -> Option<&'a str> {
    el.elements()
        .find(|c| &*c.name == "parm" && c.attr("name") == Some(name))
        .and_then(|p| p.attr("value"))
}

/// The provisioning document an RSTRC carries, base64 in its BinarySecurityToken.
pub fn token_document(env: &Element) -> Element {
    let bst = env
        .path(&[
            (ns::SOAP, "Body"),
            (ns::WST, "RequestSecurityTokenResponseCollection"),
            (ns::WST, "RequestSecurityTokenResponse"),
            (ns::WST, "RequestedSecurityToken"),
            (ns::WSSE, "BinarySecurityToken"),
        ])
        .expect("RSTRC with a BinarySecurityToken");
    assert_eq!(
        bst.attr("ValueType"),
        Some(ns::token::DEVICE_ENROLLMENT_PROVISION_DOC)
    );
    let xml_bytes = B64.decode(bst.text()).expect("base64 provisioning doc");
    xml::parse(&xml_bytes).expect("provisioning doc XML")
}

/// What a provisioning document installs.
pub struct Provisioned {
    pub doc: Element,
    pub root_der: Vec<u8>,
    pub root_thumbprint: String,
    pub client_der: Vec<u8>,
    pub client_thumbprint: String,
    /// `User` or `System`.
    pub client_store: String,
}

pub fn thumbprint(der: &[u8]) -> String {
    Sha1::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// Extracts the provisioning doc from an RSTRC and finds its certificates.
pub fn provisioning_doc(env: &Element) -> Provisioned {
    let doc = token_document(env);
    assert_eq!(&*doc.name, "wap-provisioningdoc");
    assert_eq!(doc.attr("version"), Some("1.1"));

    let stores: Vec<&Element> = doc
        .elements()
        .filter(|c| c.attr("type") == Some("CertificateStore"))
        .collect();
    let root_sys = stores
        .iter()
        .find_map(|s| characteristic(s, "Root"))
        .and_then(|r| characteristic(r, "System"))
        .expect("Root/System");
    let (root_thumbprint, root_der) = single_cert(root_sys);
    let my = stores
        .iter()
        .find_map(|s| characteristic(s, "My"))
        .expect("My store");
    let (client_store, holder) = ["User", "System"]
        .iter()
        .find_map(|s| characteristic(my, s).map(|c| (s.to_string(), c)))
        .expect("My/User or My/System");
    assert!(
        characteristic(holder, "PrivateKeyContainer").is_some(),
        "PrivateKeyContainer sibling is required"
    );
    let (client_thumbprint, client_der) = single_cert(holder);
    Provisioned {
        doc,
        root_der,
        root_thumbprint,
        client_der,
        client_thumbprint,
        client_store,
    }
}

fn single_cert(holder: &Element) -> (String, Vec<u8>) {
    let c = holder
        .elements()
        .find(|c| c.attr("type").is_some_and(|t| t.len() == 40))
        .expect("a thumbprint characteristic");
    let thumb = c.attr("type").unwrap().to_owned();
    assert!(
        thumb
            .chars()
            .all(|ch| ch.is_ascii_digit() || ch.is_ascii_uppercase()),
        "thumbprint must be uppercase hex: {thumb}"
    );
    let b64 = parm(c, "EncodedCertificate").expect("EncodedCertificate");
    assert!(!b64.contains('\n') && !b64.contains('\r'), "no line breaks");
    let der = B64.decode(b64).expect("certificate base64");
    assert_eq!(thumbprint(&der), thumb, "thumbprint is SHA-1 of the DER");
    (thumb, der)
}

/// Checks a device certificate against the provisioned root: signature chain, subject,
/// key usages, and that it certifies the device's own key.
pub fn check_device_certificate(root_der: &[u8], client_der: &[u8], device_id: &str, spki: &[u8]) {
    let (_, root) = X509Certificate::from_der(root_der).expect("root parses");
    let (_, cert) = X509Certificate::from_der(client_der).expect("client cert parses");
    root.verify_signature(None).expect("root is self-signed");
    assert!(root.is_ca(), "root is a CA");
    cert.verify_signature(Some(root.public_key()))
        .expect("device certificate is signed by the provisioned root");
    assert_eq!(cert.issuer(), root.subject());
    let cns: Vec<&str> = cert
        .subject()
        .iter_common_name()
        .map(|cn| cn.as_str().expect("CN is a string"))
        .collect();
    assert_eq!(cns, vec![device_id], "subject is exactly CN=<DeviceID>");
    assert_eq!(cert.subject().iter().count(), 1);
    assert_eq!(cert.public_key().raw, spki, "certifies the CSR's key");
    let eku = cert
        .extended_key_usage()
        .expect("eku")
        .expect("EKU present");
    assert!(eku.value.client_auth);
    let ku = cert.key_usage().expect("ku").expect("KU present");
    assert!(ku.value.digital_signature() && ku.value.key_encipherment());
    assert!(!ku.value.key_cert_sign());
    assert!(!cert.is_ca());
    let bc = cert.basic_constraints().expect("bc");
    assert!(bc.is_none_or(|b| !b.value.ca));
    assert!(cert.validity().is_valid());
    assert_eq!(
        cert.signature_algorithm.algorithm.to_id_string(),
        "1.2.840.113549.1.1.11",
        "sha256WithRSAEncryption"
    );
    // The serial is random, positive and not tiny.
    assert!(cert.raw_serial().len() >= 8);
}

/// The client certificate (DER) and its store (`User`/`System`) from a renewal RSTRC,
/// and the renewal schedule's ServerURL.
pub fn renewal_doc(env: &Element) -> (Vec<u8>, String, String) {
    let doc = token_document(env);
    let my = doc
        .elements()
        .find_map(|cs| characteristic(cs, "My"))
        .expect("My store");
    let (store, holder) = ["User", "System"]
        .iter()
        .find_map(|s| characteristic(my, s).map(|c| (s.to_string(), c)))
        .expect("My/User or My/System");
    assert!(characteristic(holder, "PrivateKeyContainer").is_some());
    let (_, der) = single_cert(holder);
    let url = characteristic(my, "WSTEP")
        .and_then(|w| characteristic(w, "Renew"))
        .and_then(|r| parm(r, "ServerURL"))
        .expect("renewal ServerURL")
        .to_owned();
    (der, store, url)
}

/// The renewal ServerURL from an enrollment's provisioning document, after checking the
/// schedule's parms are typed.
pub fn renewal_server_url(p: &Provisioned) -> String {
    let my = p
        .doc
        .elements()
        .find_map(|cs| characteristic(cs, "My"))
        .expect("My store");
    let renew = characteristic(my, "WSTEP")
        .and_then(|w| characteristic(w, "Renew"))
        .expect("My/WSTEP/Renew");
    for (name, datatype) in [
        ("ROBOSupport", "boolean"),
        ("RenewPeriod", "integer"),
        ("RetryInterval", "integer"),
    ] {
        let p = renew
            .elements()
            .find(|e| e.attr("name") == Some(name))
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(p.attr("datatype"), Some(datatype), "{name} is typed");
    }
    parm(renew, "ServerURL").expect("ServerURL").to_owned()
}
