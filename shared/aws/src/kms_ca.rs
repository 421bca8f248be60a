//! A certificate authority whose signing key lives in AWS KMS, as the
//! [`CertificateAuthority`].
//!
//! The issuing key is an asymmetric KMS key (`RSA_2048` or `ECC_NIST_P256`, key usage
//! `SIGN_VERIFY`); its private half never leaves KMS. winmdm builds each device
//! certificate itself, with the same profile as the local CA
//! ([`winmdm_core::cert_profile`]), and has KMS sign the to-be-signed part: **one KMS
//! `Sign` call per certificate**, nothing else (the CA certificate is given at start, so
//! start-up calls nothing). Every signature is checked against the CA certificate's key
//! before the certificate is returned, so a key that does not match the CA certificate
//! (a wrong key id, an alias moved to another key) fails loudly instead of handing out
//! certificates nothing trusts.
//!
//! The CA certificate is made once ([`create_root`]): self-signed through KMS.
//!
//! Security: whoever may call `kms:Sign` on the key can mint device certificates, as
//! whoever may call `acm-pca:IssueCertificate` can with ACM PCA. Grant `kms:Sign` to the
//! enroll and renew functions only.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_kms::Client;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyUsageType, MessageType, SigningAlgorithmSpec};
use rcgen::{Issuer, PublicKeyData, SignatureAlgorithm, SigningKey, SubjectPublicKeyInfo};
use time::{Duration, OffsetDateTime};
use winmdm_core::ca::{CaChain, CaError, CertificateAuthority, IssueRequest, IssuedCertificate};
use winmdm_core::cert_profile;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The most KMS signs as a `RAW` message; larger messages would have to be sent as a
/// digest. A device certificate's to-be-signed part is about 1 KB.
const MAX_RAW_MESSAGE: usize = 4096;

/// How a KMS key signs certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsSigning {
    /// `RSA_2048` with `RSASSA_PKCS1_V1_5_SHA_256`: sha256WithRSAEncryption.
    RsaSha256,
    /// `ECC_NIST_P256` with `ECDSA_SHA_256`: ecdsa-with-SHA256.
    EcdsaP256Sha256,
}

impl KmsSigning {
    fn kms(self) -> SigningAlgorithmSpec {
        match self {
            Self::RsaSha256 => SigningAlgorithmSpec::RsassaPkcs1V15Sha256,
            Self::EcdsaP256Sha256 => SigningAlgorithmSpec::EcdsaSha256,
        }
    }

    fn rcgen(self) -> &'static SignatureAlgorithm {
        match self {
            Self::RsaSha256 => &rcgen::PKCS_RSA_SHA256,
            Self::EcdsaP256Sha256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        }
    }

    /// The DER AlgorithmIdentifier of the signature (RFC 4055 with NULL parameters; RFC
    /// 5758 without parameters).
    fn algorithm_identifier(self) -> &'static [u8] {
        match self {
            Self::RsaSha256 => &[
                0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05,
                0x00,
            ],
            Self::EcdsaP256Sha256 => &[
                0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
            ],
        }
    }

    /// From a public key: RSA (any size KMS offers) signs with PKCS #1 v1.5 and SHA-256;
    /// EC only on P-256 (ECDSA_SHA_256 is P-256's algorithm in KMS).
    fn for_public_key(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<Self, CaError> {
        const RSA: &str = "1.2.840.113549.1.1.1";
        const EC: &str = "1.2.840.10045.2.1";
        const P256: &str = "1.2.840.10045.3.1.7";
        let alg = spki.algorithm.algorithm.to_id_string();
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string());
        match (alg.as_str(), curve.as_deref()) {
            (RSA, _) => Ok(Self::RsaSha256),
            (EC, Some(P256)) => Ok(Self::EcdsaP256Sha256),
            _ => Err(CaError::Internal(format!(
                "key algorithm {alg} (curve {curve:?}) is not supported: use an RSA_2048 or \
                 ECC_NIST_P256 KMS key"
            ))),
        }
    }
}

/// A stand-in for the KMS key while rcgen writes a certificate: it has the key's public
/// half and keeps the bytes rcgen asks it to sign (the TBSCertificate), which then go to
/// KMS. The certificate rcgen returns is thrown away; the real one is put together from
/// the TBSCertificate and KMS's signature.
struct TbsCapture {
    public_key: Vec<u8>,
    algorithm: &'static SignatureAlgorithm,
    tbs: Mutex<Option<Vec<u8>>>,
}

impl PublicKeyData for TbsCapture {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}

impl SigningKey for TbsCapture {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        *self.tbs.lock().expect("tbs lock") = Some(msg.to_vec());
        Ok(vec![0])
    }
}

impl TbsCapture {
    fn new(spki_der: &[u8], signing: KmsSigning) -> Result<Self, CaError> {
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
            .map_err(|e| CaError::Internal(format!("unusable CA public key: {e}")))?;
        Ok(Self {
            public_key: spki.subject_public_key.data.to_vec(),
            algorithm: signing.rcgen(),
            tbs: Mutex::new(None),
        })
    }

    fn take(&self) -> Result<Vec<u8>, CaError> {
        self.tbs
            .lock()
            .expect("tbs lock")
            .take()
            .ok_or_else(|| CaError::Internal("nothing to sign".into()))
    }
}

fn der_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }`
/// (RFC 5280 4.1).
fn assemble(tbs: &[u8], algorithm_identifier: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut bit_string = vec![0x03];
    der_length(signature.len() + 1, &mut bit_string);
    bit_string.push(0); // no unused bits
    bit_string.extend_from_slice(signature);
    let body_len = tbs.len() + algorithm_identifier.len() + bit_string.len();
    let mut out = Vec::with_capacity(body_len + 4);
    out.push(0x30);
    der_length(body_len, &mut out);
    out.extend_from_slice(tbs);
    out.extend_from_slice(algorithm_identifier);
    out.extend_from_slice(&bit_string);
    out
}

fn describe<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    e: &SdkError<E, R>,
) -> CaError {
    let message = DisplayErrorContext(e).to_string();
    match e.code() {
        Some("ThrottlingException" | "KMSInternalException" | "DependencyTimeoutException") => {
            CaError::Unavailable(message)
        }
        _ if matches!(e, SdkError::TimeoutError(_) | SdkError::DispatchFailure(_)) => {
            CaError::Unavailable(message)
        }
        _ => CaError::Internal(message),
    }
}

/// Has KMS sign `tbs` and returns the whole certificate, checked against `spki_der`.
async fn sign_certificate(
    client: &Client,
    key_id: &str,
    signing: KmsSigning,
    tbs: Vec<u8>,
    issuer_spki: &[u8],
) -> Result<Vec<u8>, CaError> {
    if tbs.len() > MAX_RAW_MESSAGE {
        return Err(CaError::Internal(format!(
            "the certificate to sign is {} bytes, over KMS's {MAX_RAW_MESSAGE}",
            tbs.len()
        )));
    }
    let out = client
        .sign()
        .key_id(key_id)
        .message(Blob::new(tbs.clone()))
        .message_type(MessageType::Raw)
        .signing_algorithm(signing.kms())
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let signature = out
        .signature
        .ok_or_else(|| CaError::Internal("KMS returned no signature".into()))?
        .into_inner();
    let der = assemble(&tbs, signing.algorithm_identifier(), &signature);
    let (_, cert) = X509Certificate::from_der(&der)
        .map_err(|e| CaError::Internal(format!("the signed certificate does not parse: {e}")))?;
    let (_, issuer_key) = x509_parser::x509::SubjectPublicKeyInfo::from_der(issuer_spki)
        .map_err(|e| CaError::Internal(format!("unusable CA public key: {e}")))?;
    cert.verify_signature(Some(&issuer_key)).map_err(|_| {
        CaError::Internal(format!(
            "KMS key {key_id} does not match the CA certificate: its signature does not verify"
        ))
    })?;
    Ok(der)
}

/// Makes the CA certificate: a self-signed root for `key_id`, signed through KMS. Reads
/// the key's public half (GetPublicKey) and checks it is a signing key of a supported
/// spec.
pub async fn create_root(
    client: &Client,
    key_id: &str,
    common_name: &str,
    validity: Duration,
) -> Result<Vec<u8>, CaError> {
    let key = client
        .get_public_key()
        .key_id(key_id)
        .send()
        .await
        .map_err(|e| describe(&e))?;
    if key.key_usage != Some(KeyUsageType::SignVerify) {
        return Err(CaError::Internal(format!(
            "KMS key {key_id} has key usage {:?}; a CA key needs SIGN_VERIFY",
            key.key_usage
        )));
    }
    let spki = key
        .public_key
        .ok_or_else(|| CaError::Internal("KMS returned no public key".into()))?
        .into_inner();
    let (_, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki)
        .map_err(|e| CaError::Internal(format!("KMS returned an unusable public key: {e}")))?;
    let signing = KmsSigning::for_public_key(&parsed)?;
    let capture = TbsCapture::new(&spki, signing)?;
    let params = cert_profile::device_root(common_name, OffsetDateTime::now_utc(), validity);
    params
        .self_signed(&capture)
        .map_err(|e| CaError::Internal(e.to_string()))?;
    sign_certificate(client, key_id, signing, capture.take()?, &spki).await
}

/// The KMS key's public half (SubjectPublicKeyInfo, DER).
pub async fn public_key(client: &Client, key_id: &str) -> Result<Vec<u8>, CaError> {
    Ok(client
        .get_public_key()
        .key_id(key_id)
        .send()
        .await
        .map_err(|e| describe(&e))?
        .public_key
        .ok_or_else(|| CaError::Internal("KMS returned no public key".into()))?
        .into_inner())
}

/// Whether `der` is a CA certificate for `public_key` (SubjectPublicKeyInfo) with a valid
/// self-signature: the only root a KMS CA trusts from storage it does not control.
pub fn is_self_signed_root_of(der: &[u8], public_key: &[u8]) -> bool {
    X509Certificate::from_der(der).is_ok_and(|(_, cert)| {
        cert.is_ca() && cert.public_key().raw == public_key && cert.verify_signature(None).is_ok()
    })
}

/// A certificate as PEM (`CERTIFICATE`, 64-character lines).
pub fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// A CA certificate kept as a PEM object in S3 (the stack's truststore: the self-signed
/// root the stack's `CaSetup` made), read on first use so that starting a function calls
/// nothing.
struct S3Certificate {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
}

/// The CA certificate, checked and ready to sign under.
struct Loaded {
    chain: Arc<CaChain>,
    signing: KmsSigning,
    /// The CA certificate's SubjectPublicKeyInfo.
    spki: Vec<u8>,
}

impl Loaded {
    fn new(ca_der: Vec<u8>, root_der: Option<Vec<u8>>) -> Result<Self, CaError> {
        let (_, cert) = X509Certificate::from_der(&ca_der)
            .map_err(|e| CaError::Internal(format!("the CA certificate does not parse: {e}")))?;
        if !cert.is_ca() {
            return Err(CaError::Internal(
                "the CA certificate is not a CA (basicConstraints cA)".into(),
            ));
        }
        let signing = KmsSigning::for_public_key(cert.public_key())?;
        let spki = cert.public_key().raw.to_vec();
        let chain = match root_der {
            Some(root) => CaChain {
                root_der: root,
                intermediate_der: Some(ca_der),
            },
            None => CaChain {
                root_der: ca_der,
                intermediate_der: None,
            },
        };
        Ok(Self {
            chain: Arc::new(chain),
            signing,
            spki,
        })
    }
}

pub struct KmsCa {
    client: Client,
    key_id: String,
    /// Where the CA certificate is read from on first use; `None` when it was given.
    source: Option<S3Certificate>,
    loaded: tokio::sync::OnceCell<Loaded>,
}

impl std::fmt::Debug for KmsCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsCa")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl KmsCa {
    /// A CA signing with `key_id` under the CA certificate `ca_der` (made by
    /// [`create_root`], or issued for the KMS key by another CA, given with its
    /// `root_der`). Calls nothing: the key is first used at the first issue.
    pub fn new(
        client: Client,
        key_id: impl Into<String>,
        ca_der: Vec<u8>,
        root_der: Option<Vec<u8>>,
    ) -> Result<Self, CaError> {
        let loaded = Loaded::new(ca_der, root_der)?;
        Ok(Self {
            client,
            key_id: key_id.into(),
            source: None,
            loaded: tokio::sync::OnceCell::new_with(Some(loaded)),
        })
    }

    /// A CA whose certificate is the one PEM certificate in an S3 object (a self-signed
    /// root), read on first use and kept for the life of the process.
    pub fn with_s3_certificate(
        client: Client,
        key_id: impl Into<String>,
        s3: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        Self {
            client,
            key_id: key_id.into(),
            source: Some(S3Certificate {
                client: s3,
                bucket: bucket.into(),
                key: key.into(),
            }),
            loaded: tokio::sync::OnceCell::new(),
        }
    }

    async fn loaded(&self) -> Result<&Loaded, CaError> {
        self.loaded
            .get_or_try_init(|| async {
                let Some(S3Certificate {
                    client,
                    bucket,
                    key,
                }) = &self.source
                else {
                    return Err(CaError::Internal("no CA certificate".into()));
                };
                let out = client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| {
                        CaError::Unavailable(format!(
                            "reading the CA certificate s3://{bucket}/{key}: {}",
                            aws_sdk_s3::error::DisplayErrorContext(&e)
                        ))
                    })?;
                let bytes = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| CaError::Unavailable(e.to_string()))?
                    .into_bytes();
                let mut certs = crate::pem_certificates(&String::from_utf8_lossy(&bytes));
                let der = match (certs.pop(), certs.is_empty()) {
                    (Some(der), true) => der,
                    _ => {
                        return Err(CaError::Internal(format!(
                            "s3://{bucket}/{key} must hold exactly one PEM certificate, \
                             the KMS key's root"
                        )));
                    }
                };
                // The object is a trust anchor for client certificates: whoever could
                // write it could otherwise make manage trust certificates of their own.
                // It is used only if it is the KMS key's own, validly self-signed root.
                if !is_self_signed_root_of(&der, &public_key(&self.client, &self.key_id).await?) {
                    return Err(CaError::Internal(format!(
                        "s3://{bucket}/{key} is not the self-signed root of KMS key {}: \
                         refusing to trust it",
                        self.key_id
                    )));
                }
                Loaded::new(der, None)
            })
            .await
    }
}

#[async_trait]
impl CertificateAuthority for KmsCa {
    async fn chain(&self) -> Result<Arc<CaChain>, CaError> {
        Ok(self.loaded().await?.chain.clone())
    }

    async fn issue(&self, req: &IssueRequest<'_>) -> Result<IssuedCertificate, CaError> {
        let loaded = self.loaded().await?;
        let device_key = SubjectPublicKeyInfo::from_der(req.csr.spki_der())
            .map_err(|e| CaError::Rejected(format!("unusable public key: {e}")))?;
        let params = cert_profile::device_certificate(req);
        let serial_hex = params
            .serial_number
            .as_ref()
            .map(cert_profile::serial_hex)
            .unwrap_or_default();
        let capture = TbsCapture::new(&loaded.spki, loaded.signing)?;
        {
            let issuer = Issuer::from_ca_cert_der(&loaded.chain.issuer_der().into(), &capture)
                .map_err(|e| CaError::Internal(format!("the CA certificate: {e}")))?;
            params
                .signed_by(&device_key, &issuer)
                .map_err(|e| CaError::Internal(e.to_string()))?;
        }
        let der = sign_certificate(
            &self.client,
            &self.key_id,
            loaded.signing,
            capture.take()?,
            &loaded.spki,
        )
        .await?;
        Ok(IssuedCertificate {
            der,
            serial_hex,
            not_after: req.not_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        let mut v = Vec::new();
        der_length(0x7f, &mut v);
        der_length(0x80, &mut v);
        der_length(0x1234, &mut v);
        assert_eq!(v, [0x7f, 0x81, 0x80, 0x82, 0x12, 0x34]);
    }

    #[test]
    fn a_locally_signed_certificate_reassembles_byte_for_byte() {
        // rcgen signs with a real key; splitting its certificate into TBS and signature
        // and assembling them again must give the same bytes.
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = cert_profile::device_root("t", OffsetDateTime::now_utc(), Duration::days(1))
            .self_signed(&key)
            .unwrap();
        let (_, parsed) = X509Certificate::from_der(cert.der()).unwrap();
        let again = assemble(
            parsed.tbs_certificate.as_ref(),
            KmsSigning::EcdsaP256Sha256.algorithm_identifier(),
            &parsed.signature_value.data,
        );
        assert_eq!(again, cert.der().to_vec());
    }
}
