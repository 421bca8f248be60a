//! ACM Private CA as the [`CertificateAuthority`].
//!
//! IssueCertificate uses the `EndEntityClientAuthCertificate_APIPassthrough` template with an
//! API passthrough that sets the subject to `CN=<DeviceID>` and the key usages, whatever
//! the CSR says; the certificate is then fetched with GetCertificate, backing off while it
//! is still being issued. The CA certificate and chain are fetched once, on first use;
//! the issuing CA's key type (RSA or EC) picks the signing algorithm, since PCA refuses a
//! request whose algorithm does not fit its key.
//!
//! The per-account IssueCertificate rate is low: throttling is retried with jittered
//! backoff within the request's time budget, then reported as `CaError::Unavailable` (the
//! device gets `s:EnrollmentServer` with `InMaintenance`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_acmpca::Client;
use aws_sdk_acmpca::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_acmpca::primitives::Blob;
use aws_sdk_acmpca::types::{
    ApiPassthrough, Asn1Subject, ExtendedKeyUsage, ExtendedKeyUsageType, Extensions, KeyUsage,
    SigningAlgorithm, Validity, ValidityPeriodType,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use winmdm_core::ca::{CaChain, CaError, CertificateAuthority, IssueRequest, IssuedCertificate};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The template that lets the API passthrough set subject and extensions.
pub const PASSTHROUGH_TEMPLATE: &str =
    "arn:aws:acm-pca:::template/EndEntityClientAuthCertificate_APIPassthrough/V1";

pub struct PcaCa {
    client: Client,
    ca_arn: String,
    /// Fetched on first use and kept for the life of the process.
    chain: tokio::sync::OnceCell<Arc<CaChain>>,
    /// How long one issuance may take, retries included.
    budget: Duration,
}

impl std::fmt::Debug for PcaCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcaCa")
            .field("ca_arn", &self.ca_arn)
            .finish_non_exhaustive()
    }
}

use crate::pem_certificates;

fn csr_pem(der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE REQUEST-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE REQUEST-----\n");
    out
}

/// The algorithm a CA with this certificate signs with: SHA-256 with its key's type.
fn signing_algorithm(issuer_der: &[u8]) -> Result<SigningAlgorithm, CaError> {
    const RSA: &str = "1.2.840.113549.1.1.1";
    const EC: &str = "1.2.840.10045.2.1";
    let (_, cert) = X509Certificate::from_der(issuer_der)
        .map_err(|e| CaError::Internal(format!("the CA certificate does not parse: {e}")))?;
    match cert
        .public_key()
        .algorithm
        .algorithm
        .to_id_string()
        .as_str()
    {
        RSA => Ok(SigningAlgorithm::Sha256Withrsa),
        EC => Ok(SigningAlgorithm::Sha256Withecdsa),
        other => Err(CaError::Internal(format!(
            "the CA's key type ({other}) is neither RSA nor EC"
        ))),
    }
}

fn is_throttle(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ThrottlingException"
                | "TooManyRequestsException"
                | "LimitExceededException"
                | "RequestLimitExceeded"
        )
    )
}

fn describe<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    e: &SdkError<E, R>,
) -> String {
    DisplayErrorContext(e).to_string()
}

impl PcaCa {
    /// A CA client; the CA certificate is fetched on first use, once.
    pub fn new(client: Client, ca_arn: impl Into<String>) -> Self {
        Self {
            client,
            ca_arn: ca_arn.into(),
            chain: tokio::sync::OnceCell::new(),
            budget: Duration::from_secs(20),
        }
    }

    /// A CA client with its certificate already fetched (fails early if it cannot be).
    pub async fn connect(client: Client, ca_arn: impl Into<String>) -> Result<Self, CaError> {
        let ca = Self::new(client, ca_arn);
        ca.chain().await?;
        Ok(ca)
    }

    async fn fetch_chain(&self) -> Result<Arc<CaChain>, CaError> {
        let out = self
            .client
            .get_certificate_authority_certificate()
            .certificate_authority_arn(&self.ca_arn)
            .send()
            .await
            .map_err(|e| CaError::Unavailable(describe(&e)))?;
        let ca_cert = out
            .certificate()
            .and_then(|p| pem_certificates(p).into_iter().next())
            .ok_or_else(|| CaError::Internal("the CA has no certificate".into()))?;
        let chain = out
            .certificate_chain()
            .map(pem_certificates)
            .unwrap_or_default();
        // A subordinate CA: its chain ends at the root. A root CA has no chain.
        let chain = match chain.last() {
            Some(root) => CaChain {
                root_der: root.clone(),
                intermediate_der: Some(ca_cert),
            },
            None => CaChain {
                root_der: ca_cert,
                intermediate_der: None,
            },
        };
        Ok(Arc::new(chain))
    }

    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    async fn sleep_backoff(attempt: u32, deadline: Instant) -> bool {
        use rand::Rng;
        let base = 100u64 << attempt.min(5);
        let wait = Duration::from_millis(base + rand::thread_rng().gen_range(0..=base));
        if Instant::now() + wait >= deadline {
            return false;
        }
        tokio::time::sleep(wait).await;
        true
    }
}

#[async_trait]
impl CertificateAuthority for PcaCa {
    async fn chain(&self) -> Result<Arc<CaChain>, CaError> {
        self.chain
            .get_or_try_init(|| self.fetch_chain())
            .await
            .cloned()
    }

    async fn issue(&self, req: &IssueRequest<'_>) -> Result<IssuedCertificate, CaError> {
        let deadline = Instant::now() + self.budget;
        let signing = signing_algorithm(self.chain().await?.issuer_der())?;
        let passthrough = ApiPassthrough::builder()
            .subject(Asn1Subject::builder().common_name(req.common_name).build())
            .extensions(
                Extensions::builder()
                    .key_usage(
                        KeyUsage::builder()
                            .digital_signature(true)
                            .key_encipherment(true)
                            .build(),
                    )
                    .extended_key_usage(
                        ExtendedKeyUsage::builder()
                            .extended_key_usage_type(ExtendedKeyUsageType::ClientAuth)
                            .build(),
                    )
                    .build(),
            )
            .build();
        let validity = |t: time::OffsetDateTime| {
            Validity::builder()
                .r#type(ValidityPeriodType::Absolute)
                .value(t.unix_timestamp())
                .build()
        };
        let mut attempt = 0;
        let cert_arn = loop {
            let r = self
                .client
                .issue_certificate()
                .certificate_authority_arn(&self.ca_arn)
                .csr(Blob::new(csr_pem(req.csr.der())))
                .signing_algorithm(signing.clone())
                .template_arn(PASSTHROUGH_TEMPLATE)
                .api_passthrough(passthrough.clone())
                .validity(validity(req.not_after).map_err(|e| CaError::Internal(e.to_string()))?)
                .validity_not_before(
                    validity(req.not_before).map_err(|e| CaError::Internal(e.to_string()))?,
                )
                .idempotency_token(req.idempotency_token)
                .send()
                .await;
            match r {
                Ok(out) => {
                    break out
                        .certificate_arn
                        .ok_or_else(|| CaError::Internal("no certificate ARN".into()))?;
                }
                Err(e) if is_throttle(e.code()) => {
                    if !Self::sleep_backoff(attempt, deadline).await {
                        return Err(CaError::Unavailable(describe(&e)));
                    }
                    attempt += 1;
                }
                Err(e)
                    if matches!(
                        e.code(),
                        Some(
                            "MalformedCSRException"
                                | "InvalidArgsException"
                                | "InvalidRequestException"
                        )
                    ) =>
                {
                    return Err(CaError::Rejected(describe(&e)));
                }
                Err(e) => return Err(CaError::Unavailable(describe(&e))),
            }
        };

        let mut attempt = 0;
        let pem = loop {
            let r = self
                .client
                .get_certificate()
                .certificate_authority_arn(&self.ca_arn)
                .certificate_arn(&cert_arn)
                .send()
                .await;
            match r {
                Ok(out) => {
                    break out
                        .certificate
                        .ok_or_else(|| CaError::Internal("empty certificate".into()))?;
                }
                Err(e)
                    if e.code() == Some("RequestInProgressException") || is_throttle(e.code()) =>
                {
                    if !Self::sleep_backoff(attempt, deadline).await {
                        return Err(CaError::Unavailable(describe(&e)));
                    }
                    attempt += 1;
                }
                Err(e) => return Err(CaError::Unavailable(describe(&e))),
            }
        };
        let der = pem_certificates(&pem)
            .into_iter()
            .next()
            .ok_or_else(|| CaError::Internal("issued certificate is not PEM".into()))?;
        let (_, cert) =
            X509Certificate::from_der(&der).map_err(|e| CaError::Internal(e.to_string()))?;
        let serial_hex = cert
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let not_after =
            time::OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())
                .map_err(|e| CaError::Internal(e.to_string()))?;
        Ok(IssuedCertificate {
            der,
            serial_hex,
            not_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_certificate(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_signing_algorithm_follows_the_ca_key() {
        assert_eq!(
            signing_algorithm(&ca_certificate(&rcgen::PKCS_RSA_SHA256)).unwrap(),
            SigningAlgorithm::Sha256Withrsa
        );
        assert_eq!(
            signing_algorithm(&ca_certificate(&rcgen::PKCS_ECDSA_P256_SHA256)).unwrap(),
            SigningAlgorithm::Sha256Withecdsa
        );
        assert!(matches!(
            signing_algorithm(&ca_certificate(&rcgen::PKCS_ED25519)),
            Err(CaError::Internal(_))
        ));
        assert!(matches!(
            signing_algorithm(b"not a certificate"),
            Err(CaError::Internal(_))
        ));
    }
}
