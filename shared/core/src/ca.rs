//! The certificate authority trait: the local CA and ACM Private CA implement it.

use async_trait::async_trait;
use sha1::{Digest, Sha1};
use time::OffsetDateTime;

use crate::csr::VerifiedCsr;

/// The CA's certificates as the device must install them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaChain {
    pub root_der: Vec<u8>,
    /// The issuing CA, when it is not the root.
    pub intermediate_der: Option<Vec<u8>>,
}

impl CaChain {
    /// The certificate that signs device certificates.
    pub fn issuer_der(&self) -> &[u8] {
        self.intermediate_der.as_deref().unwrap_or(&self.root_der)
    }
}

/// What to put in a device certificate. The subject is always `CN=<common_name>` and the
/// key usages are fixed (digitalSignature, keyEncipherment; EKU clientAuth; not a CA),
/// whatever the CSR asked for.
#[derive(Debug, Clone, Copy)]
pub struct IssueRequest<'a> {
    pub csr: &'a VerifiedCsr,
    pub common_name: &'a str,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Same token, same certificate: lets a CA deduplicate a retried request.
    pub idempotency_token: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    pub der: Vec<u8>,
    pub serial_hex: String,
    pub not_after: OffsetDateTime,
}

impl IssuedCertificate {
    pub fn thumbprint(&self) -> String {
        thumbprint(&self.der)
    }
}

/// Uppercase hex SHA-1 of a DER certificate: the CertificateStore CSP's node name.
pub fn thumbprint(der: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let digest = Sha1::digest(der);
    let mut s = String::with_capacity(40);
    for b in digest {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}

/// What a device's client certificate turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCertificate {
    /// Issued by our CA and within its validity; `cn` is the device id it names.
    Valid { cn: String, thumbprint: String },
    /// Issued by our CA but outside its validity.
    Expired { cn: String },
    /// Not a certificate, or not issued by our CA.
    Untrusted,
}

/// Whether `der` is a certificate whose subject CN is `common_name` and whose key is the
/// one in `spki_der` (a SubjectPublicKeyInfo): the same algorithm and key bits, however
/// the CA encoded the algorithm's parameters.
pub fn certifies(der: &[u8], common_name: &str, spki_der: &[u8]) -> bool {
    use x509_parser::prelude::{FromDer, SubjectPublicKeyInfo, X509Certificate};
    let (Ok((_, cert)), Ok((_, wanted))) = (
        X509Certificate::from_der(der),
        SubjectPublicKeyInfo::from_der(spki_der),
    ) else {
        return false;
    };
    let mut names = cert.subject().iter_common_name();
    let cn_ok =
        names.next().and_then(|c| c.as_str().ok()) == Some(common_name) && names.next().is_none();
    let key = cert.public_key();
    cn_ok
        && key.algorithm.algorithm == wanted.algorithm.algorithm
        && key.subject_public_key.data == wanted.subject_public_key.data
}

/// Checks a client certificate against the CA that issues device certificates.
pub fn check_client_certificate(
    der: &[u8],
    issuer_der: &[u8],
    now: OffsetDateTime,
) -> ClientCertificate {
    use x509_parser::prelude::{ASN1Time, FromDer, X509Certificate};
    let (Ok((_, cert)), Ok((_, issuer))) = (
        X509Certificate::from_der(der),
        X509Certificate::from_der(issuer_der),
    ) else {
        return ClientCertificate::Untrusted;
    };
    if cert.issuer() != issuer.subject()
        || cert.verify_signature(Some(issuer.public_key())).is_err()
    {
        return ClientCertificate::Untrusted;
    }
    let Some(cn) = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .map(str::to_owned)
    else {
        return ClientCertificate::Untrusted;
    };
    let valid = ASN1Time::from_timestamp(now.unix_timestamp())
        .is_ok_and(|at| cert.validity().is_valid_at(at));
    if valid {
        ClientCertificate::Valid {
            cn,
            thumbprint: thumbprint(der),
        }
    } else {
        ClientCertificate::Expired { cn }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CaError {
    /// Rate-limited or temporarily down: the device should retry later.
    #[error("the certificate authority is busy: {0}")]
    Unavailable(String),
    #[error("the certificate authority refused the request: {0}")]
    Rejected(String),
    #[error("certificate authority failure: {0}")]
    Internal(String),
}

#[async_trait]
pub trait CertificateAuthority: Send + Sync {
    /// The CA's certificates. Adapters that fetch them remotely do so once, on first use,
    /// so functions that never issue or verify certificates never call the CA.
    async fn chain(&self) -> Result<std::sync::Arc<CaChain>, CaError>;
    async fn issue(&self, request: &IssueRequest<'_>) -> Result<IssuedCertificate, CaError>;
}

/// All certificates in a PEM bundle, as DER (anything between the markers that is not
/// base64 is skipped).
pub fn pem_certificates(pem: &str) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let begin = "-----BEGIN CERTIFICATE-----";
    let end = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(b) = rest.find(begin) {
        let after = &rest[b + begin.len()..];
        let Some(e) = after.find(end) else { break };
        let body: String = after[..e].chars().filter(|c| !c.is_whitespace()).collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body) {
            out.push(der);
        }
        rest = &after[e + end.len()..];
    }
    out
}
