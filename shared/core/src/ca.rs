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
    let digest = Sha1::digest(der);
    let mut s = String::with_capacity(40);
    for b in digest {
        s.push_str(&format!("{b:02X}"));
    }
    s
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
