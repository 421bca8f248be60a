//! The PKCS#7 (CMS SignedData, RFC 5652) a Windows device sends to renew its certificate:
//! a PKCS#10 signed with the key of the certificate being renewed. Verification checks the
//! signer's signature (over the signed attributes, whose messageDigest must match the
//! content, or over the content itself) and returns the inner request with the signer.

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};
use x509_parser::prelude::{FromDer, X509Certificate};

const OID_SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
const OID_MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Pkcs7Error {
    #[error("not a PKCS#7 SignedData: {0}")]
    Malformed(&'static str),
    #[error("the PKCS#7 has no signer")]
    NoSigner,
    #[error("the signer's certificate is not in the PKCS#7")]
    SignerCertificateMissing,
    #[error("unsupported digest or signature algorithm {0}")]
    Unsupported(String),
    #[error("the content does not match the signed message digest")]
    DigestMismatch,
    #[error("the PKCS#7 signature does not verify")]
    BadSignature,
}

/// A verified SignedData: the signed content and the certificate whose key signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPkcs7 {
    pub content: Vec<u8>,
    pub signer_der: Vec<u8>,
}

/// One DER element.
#[derive(Debug, Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    raw: &'a [u8],
}

fn read(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), Pkcs7Error> {
    let bad = Pkcs7Error::Malformed("truncated DER");
    let (&tag, rest) = input.split_first().ok_or(bad.clone())?;
    let (&first, rest) = rest.split_first().ok_or(bad.clone())?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err(Pkcs7Error::Malformed("unsupported length encoding"));
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(bad);
    }
    let header = input.len() - rest.len();
    Ok((
        Tlv {
            tag,
            content: &rest[..len],
            raw: &input[..header + len],
        },
        &rest[len..],
    ))
}

fn children(content: &[u8]) -> Result<Vec<Tlv<'_>>, Pkcs7Error> {
    let mut out = Vec::new();
    let mut rest = content;
    while !rest.is_empty() {
        let (t, r) = read(rest)?;
        out.push(t);
        rest = r;
    }
    Ok(out)
}

fn oid_string(content: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc = 0u64;
    for b in content {
        acc = (acc << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = if acc >= 80 { 2 } else { acc / 40 };
                arcs.push(first);
                arcs.push(acc - first * 40);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

fn expect(t: &Tlv<'_>, tag: u8, what: &'static str) -> Result<(), Pkcs7Error> {
    if t.tag == tag {
        Ok(())
    } else {
        Err(Pkcs7Error::Malformed(what))
    }
}

fn first_oid(alg: &Tlv<'_>) -> Result<String, Pkcs7Error> {
    let parts = children(alg.content)?;
    let oid = parts
        .first()
        .ok_or(Pkcs7Error::Malformed("empty algorithm"))?;
    expect(oid, 0x06, "algorithm OID")?;
    Ok(oid_string(oid.content))
}

#[derive(Clone, Copy)]
enum Hash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn from_oid(oid: &str) -> Option<Self> {
        Some(match oid {
            "1.3.14.3.2.26" => Hash::Sha1,
            "2.16.840.1.101.3.4.2.1" => Hash::Sha256,
            "2.16.840.1.101.3.4.2.2" => Hash::Sha384,
            "2.16.840.1.101.3.4.2.3" => Hash::Sha512,
            _ => return None,
        })
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => Sha1::digest(data).to_vec(),
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha384 => Sha384::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn rsa(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Hash::Sha1 => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            Hash::Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Hash::Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Hash::Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        }
    }
}

/// The RSA verification for a SignerInfo's signature algorithm and digest algorithm.
fn rsa_algorithm(
    sig_oid: &str,
    digest: Hash,
) -> Result<&'static dyn VerificationAlgorithm, Pkcs7Error> {
    let hash = match sig_oid {
        // rsaEncryption: the digest algorithm decides.
        "1.2.840.113549.1.1.1" => digest,
        "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" => Hash::Sha1,
        "1.2.840.113549.1.1.11" => Hash::Sha256,
        "1.2.840.113549.1.1.12" => Hash::Sha384,
        "1.2.840.113549.1.1.13" => Hash::Sha512,
        other => return Err(Pkcs7Error::Unsupported(other.to_owned())),
    };
    Ok(hash.rsa())
}

/// Parses and verifies a DER SignedData.
pub fn verify_signed_data(der: &[u8]) -> Result<VerifiedPkcs7, Pkcs7Error> {
    let (ci, _) = read(der)?;
    expect(&ci, 0x30, "ContentInfo")?;
    let ci = children(ci.content)?;
    let [ct, content, ..] = ci.as_slice() else {
        return Err(Pkcs7Error::Malformed("ContentInfo fields"));
    };
    expect(ct, 0x06, "contentType")?;
    if oid_string(ct.content) != OID_SIGNED_DATA {
        return Err(Pkcs7Error::Malformed("contentType is not signedData"));
    }
    expect(content, 0xa0, "[0] content")?;
    let (sd, _) = read(content.content)?;
    expect(&sd, 0x30, "SignedData")?;
    let fields = children(sd.content)?;
    // version, digestAlgorithms, encapContentInfo, [0] certificates?, [1] crls?, signerInfos
    let encap = fields
        .get(2)
        .ok_or(Pkcs7Error::Malformed("encapContentInfo"))?;
    expect(encap, 0x30, "encapContentInfo")?;
    let encap = children(encap.content)?;
    let econtent = encap
        .get(1)
        .ok_or(Pkcs7Error::Malformed("detached content"))?;
    expect(econtent, 0xa0, "[0] eContent")?;
    let (octets, _) = read(econtent.content)?;
    let content = match octets.tag {
        0x04 => octets.content.to_vec(),
        // Some encoders put the content's own structure here.
        _ => econtent.content.to_vec(),
    };
    let certificates: Vec<&[u8]> = match fields.iter().find(|f| f.tag == 0xa0) {
        Some(set) => children(set.content)?.iter().map(|c| c.raw).collect(),
        None => Vec::new(),
    };
    let signer_infos = fields.last().ok_or(Pkcs7Error::NoSigner)?;
    expect(signer_infos, 0x31, "signerInfos")?;
    let signer = *children(signer_infos.content)?
        .first()
        .ok_or(Pkcs7Error::NoSigner)?;
    let si = children(signer.content)?;
    // version, sid, digestAlgorithm, [0] signedAttrs?, signatureAlgorithm, signature, ...
    let sid = si.get(1).ok_or(Pkcs7Error::Malformed("sid"))?;
    let digest_alg = si.get(2).ok_or(Pkcs7Error::Malformed("digestAlgorithm"))?;
    let (signed_attrs, rest) = match si.get(3) {
        Some(t) if t.tag == 0xa0 => (Some(*t), &si[4..]),
        _ => (None, &si[3..]),
    };
    let [sig_alg, sig, ..] = rest else {
        return Err(Pkcs7Error::Malformed("signature fields"));
    };
    expect(sig, 0x04, "signature")?;

    let digest_oid = first_oid(digest_alg)?;
    let hash = Hash::from_oid(&digest_oid).ok_or(Pkcs7Error::Unsupported(digest_oid))?;
    let algorithm = rsa_algorithm(&first_oid(sig_alg)?, hash)?;

    // Find the signer's certificate: issuerAndSerialNumber, or a subjectKeyIdentifier.
    let signer_der = certificates
        .iter()
        .copied()
        .find(|c| signer_matches(c, sid))
        .ok_or(Pkcs7Error::SignerCertificateMissing)?;
    let (_, cert) = X509Certificate::from_der(signer_der)
        .map_err(|_| Pkcs7Error::Malformed("signer certificate"))?;
    let key = &cert.public_key().subject_public_key.data;

    let signed = match signed_attrs {
        Some(attrs) => {
            let digest = hash.digest(&content);
            let mut md = None;
            for attr in children(attrs.content)? {
                let parts = children(attr.content)?;
                if let (Some(oid), Some(values)) = (parts.first(), parts.get(1))
                    && oid.tag == 0x06
                    && oid_string(oid.content) == OID_MESSAGE_DIGEST
                {
                    let (v, _) = read(values.content)?;
                    md = Some(v.content.to_vec());
                }
            }
            if md.as_deref() != Some(digest.as_slice()) {
                return Err(Pkcs7Error::DigestMismatch);
            }
            // The signature covers the attributes DER-encoded as a SET, not as [0].
            let mut set = attrs.raw.to_vec();
            set[0] = 0x31;
            set
        }
        None => content.clone(),
    };
    UnparsedPublicKey::new(algorithm, key)
        .verify(&signed, sig.content)
        .map_err(|_| Pkcs7Error::BadSignature)?;
    Ok(VerifiedPkcs7 {
        content,
        signer_der: signer_der.to_vec(),
    })
}

fn signer_matches(cert_der: &[u8], sid: &Tlv<'_>) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(cert_der) else {
        return false;
    };
    match sid.tag {
        0x30 => {
            // IssuerAndSerialNumber
            let Ok(parts) = children(sid.content) else {
                return false;
            };
            let (Some(issuer), Some(serial)) = (parts.first(), parts.get(1)) else {
                return false;
            };
            issuer.raw == cert.tbs_certificate.issuer.as_raw()
                && serial.content == cert.raw_serial()
        }
        0x80 => cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0),
                _ => None,
            })
            .is_some_and(|k| k == sid.content),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_decode() {
        assert_eq!(
            oid_string(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02]),
            OID_SIGNED_DATA
        );
        assert_eq!(oid_string(&[0x2b, 0x0e, 0x03, 0x02, 0x1a]), "1.3.14.3.2.26");
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            verify_signed_data(b"\x30\x03\x02\x01\x00"),
            Err(Pkcs7Error::Malformed(_))
        ));
        assert!(verify_signed_data(b"").is_err());
    }
}
