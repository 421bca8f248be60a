//! PKCS#10 verification. x509-parser is used because it parses Windows requests, whose
//! subject is a PrintableString holding `!` and a NUL (PROTOCOL §5); the subject is never
//! read, let alone copied into a certificate.

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

/// Signature algorithms Windows clients use on their requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrSignature {
    Sha256WithRsa,
    /// `1.2.840.113549.1.1.5`.
    Sha1WithRsa,
    /// The OIW `1.3.14.3.2.29` sha1WithRSASignature seen in real captures.
    OiwSha1WithRsa,
}

impl CsrSignature {
    fn from_oid(oid: &str) -> Option<Self> {
        match oid {
            "1.2.840.113549.1.1.11" => Some(Self::Sha256WithRsa),
            "1.2.840.113549.1.1.5" => Some(Self::Sha1WithRsa),
            "1.3.14.3.2.29" => Some(Self::OiwSha1WithRsa),
            _ => None,
        }
    }

    fn algorithm(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Self::Sha256WithRsa => &signature::RSA_PKCS1_2048_8192_SHA256,
            Self::Sha1WithRsa | Self::OiwSha1WithRsa => {
                &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY
            }
        }
    }
}

/// A certificate request whose signature checked out and whose key is strong enough.
/// Only [`verify_csr`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCsr {
    der: Vec<u8>,
    spki_der: Vec<u8>,
    key_bits: usize,
    signature: CsrSignature,
}

impl VerifiedCsr {
    /// The whole request, for CAs that want the CSR itself.
    pub fn der(&self) -> &[u8] {
        &self.der
    }
    /// The requester's SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }
    pub fn key_bits(&self) -> usize {
        self.key_bits
    }
    pub fn signature(&self) -> CsrSignature {
        self.signature
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CsrError {
    #[error("the certificate request is not a valid PKCS#10: {0}")]
    Malformed(String),
    #[error("only RSA keys are accepted")]
    NotRsa,
    #[error("RSA key of {bits} bits is below the minimum of {min}")]
    WeakKey { bits: usize, min: usize },
    #[error("unsupported signature algorithm {0}")]
    UnsupportedSignature(String),
    #[error("the certificate request's signature does not verify")]
    BadSignature,
}

/// Parses and verifies a DER PKCS#10.
pub fn verify_csr(der: &[u8], min_key_bits: usize) -> Result<VerifiedCsr, CsrError> {
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed(
            "trailing data after the request".into(),
        ));
    }
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;
    let rsa = match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => rsa,
        Ok(_) => return Err(CsrError::NotRsa),
        Err(e) => return Err(CsrError::Malformed(e.to_string())),
    };
    let bits = rsa_modulus_bits(rsa.modulus);
    if bits < min_key_bits {
        return Err(CsrError::WeakKey {
            bits,
            min: min_key_bits,
        });
    }
    let oid = csr.signature_algorithm.algorithm.to_id_string();
    let sig_alg = CsrSignature::from_oid(&oid).ok_or(CsrError::UnsupportedSignature(oid))?;
    UnparsedPublicKey::new(sig_alg.algorithm(), &spki.subject_public_key.data)
        .verify(info.raw, &csr.signature_value.data)
        .map_err(|_| CsrError::BadSignature)?;
    Ok(VerifiedCsr {
        der: der.to_vec(),
        spki_der: spki.raw.to_vec(),
        key_bits: bits,
        signature: sig_alg,
    })
}

/// Bit length of a big-endian modulus, ignoring DER's leading zero bytes.
fn rsa_modulus_bits(modulus: &[u8]) -> usize {
    let trimmed = match modulus.iter().position(|&b| b != 0) {
        Some(i) => &modulus[i..],
        None => return 0,
    };
    trimmed.len() * 8 - trimmed[0].leading_zeros() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_bits() {
        assert_eq!(rsa_modulus_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(rsa_modulus_bits(&[0x01, 0x00]), 9);
        assert_eq!(rsa_modulus_bits(&[0x00]), 0);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            verify_csr(b"\x30\x03\x02\x01\x00", 2048),
            Err(CsrError::Malformed(_))
        ));
    }
}
