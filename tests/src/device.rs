//! An emulated Windows device: its own RSA key, PKCS#10 requests shaped like the ones
//! Windows sends, and the identifiers it reports.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA256};

use crate::der;

/// How the CSR is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrSignature {
    Sha256,
    /// sha1WithRSAEncryption, 1.2.840.113549.1.1.5.
    Sha1,
    /// The OIW sha1WithRSASignature, 1.3.14.3.2.29, as in real captures.
    OiwSha1,
}

/// What goes in the CSR subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsrSubject {
    /// `CN=<text>` as a UTF8String.
    Plain(String),
    /// The Windows shape: a PrintableString `<GUID fragment>!<DeviceID>\0`, invalid because
    /// of the `!` and the NUL.
    Windows,
}

pub struct Device {
    pub device_id: String,
    pub hw_dev_id: String,
    key: RsaKeyPair,
    pkcs8: Vec<u8>,
}

impl Device {
    /// A new device with a fresh RSA-2048 key and random ids.
    pub fn new() -> Self {
        let key = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA keygen");
        let pkcs8 = aws_lc_rs::encoding::AsDer::as_der(&key)
            .expect("pkcs8")
            .as_ref()
            .to_vec();
        let id = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
        let hw = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        )
        .to_uppercase();
        Self {
            device_id: id,
            hw_dev_id: hw,
            key,
            pkcs8,
        }
    }

    pub fn with_ids(mut self, device_id: &str, hw_dev_id: &str) -> Self {
        self.device_id = device_id.into();
        self.hw_dev_id = hw_dev_id.into();
        self
    }

    /// The device's private key (PKCS#8 DER), for TLS client authentication.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The device's SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        self.key
            .public_key()
            .as_der()
            .expect("spki")
            .as_ref()
            .to_vec()
    }

    /// A DER PKCS#10 for this device's key.
    pub fn csr(&self, sig: CsrSignature, subject: CsrSubject) -> Vec<u8> {
        build_csr(
            &self.spki_der(),
            &subject,
            &self.device_id,
            sig,
            |tbs| match sig {
                CsrSignature::Sha256 => {
                    let mut out = vec![0u8; self.key.public_modulus_len()];
                    self.key
                        .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), tbs, &mut out)
                        .expect("sign");
                    out
                }
                CsrSignature::Sha1 | CsrSignature::OiwSha1 => sign_sha1(&self.pkcs8, tbs),
            },
        )
    }
}

impl Device {
    /// The same machine with a fresh key: what Windows generates for a renewal.
    pub fn rekeyed(&self) -> Self {
        Self::new().with_ids(&self.device_id, &self.hw_dev_id)
    }

    /// A renewal request: CMS SignedData around `csr_der`, signed with this device's key
    /// (the key of `cert_der`, the certificate being renewed), carrying that certificate,
    /// with contentType and messageDigest signed attributes.
    pub fn renewal_pkcs7(&self, cert_der: &[u8], csr_der: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, cert) = X509Certificate::from_der(cert_der).expect("certificate parses");
        let issuer = cert.tbs_certificate.issuer.as_raw().to_vec();
        let serial = der::tlv(0x02, cert.raw_serial());
        let sha256 = der::seq(&[&der::oid("2.16.840.1.101.3.4.2.1"), &der::null()]);
        let data_oid = der::oid("1.2.840.113549.1.7.1");
        let attrs = [
            der::seq(&[&der::oid("1.2.840.113549.1.9.3"), &der::set(&[&data_oid])]),
            der::seq(&[
                &der::oid("1.2.840.113549.1.9.4"),
                &der::set(&[&der::tlv(0x04, &sha2::Sha256::digest(csr_der))]),
            ]),
        ]
        .concat();
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                &der::tlv(0x31, &attrs),
                &mut signature,
            )
            .expect("sign");
        let signer_info = der::seq(&[
            &der::tlv(0x02, &[1]),
            &der::seq(&[&issuer, &serial]),
            &sha256,
            &der::tlv(0xa0, &attrs),
            &der::seq(&[&der::oid("1.2.840.113549.1.1.1"), &der::null()]),
            &der::tlv(0x04, &signature),
        ]);
        let signed_data = der::seq(&[
            &der::tlv(0x02, &[1]),
            &der::set(&[&sha256]),
            &der::seq(&[
                &data_oid,
                &der::context_constructed(0, &der::tlv(0x04, csr_der)),
            ]),
            &der::tlv(0xa0, cert_der),
            &der::set(&[&signer_info]),
        ]);
        der::seq(&[
            &der::oid("1.2.840.113549.1.7.2"),
            &der::context_constructed(0, &signed_data),
        ])
    }
}

impl Default for Device {
    fn default() -> Self {
        Self::new()
    }
}

fn sign_sha1(pkcs8: &[u8], msg: &[u8]) -> Vec<u8> {
    use rsa::pkcs8::DecodePrivateKey;
    use sha1::Digest;
    let key = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8).expect("pkcs8 key");
    let digest = sha1::Sha1::digest(msg);
    key.sign(rsa::Pkcs1v15Sign::new::<sha1::Sha1>(), &digest)
        .expect("sha1 sign")
}

/// A CSR from a 1024-bit key: too weak, must be refused.
pub fn weak_key_csr(device_id: &str) -> Vec<u8> {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
    use rsa::traits::PublicKeyParts;
    let mut rng = rand_core_os();
    let key = rsa::RsaPrivateKey::new(&mut rng, 1024).expect("keygen");
    let spki = key
        .to_public_key()
        .to_public_key_der()
        .expect("spki")
        .as_bytes()
        .to_vec();
    assert_eq!(key.size(), 128);
    let pkcs8 = key.to_pkcs8_der().expect("pkcs8").as_bytes().to_vec();
    build_csr(
        &spki,
        &CsrSubject::Plain(device_id.into()),
        device_id,
        CsrSignature::Sha1,
        |tbs| sign_sha1(&pkcs8, tbs),
    )
}

fn rand_core_os() -> rsa::rand_core::OsRng {
    rsa::rand_core::OsRng
}

fn build_csr(
    spki: &[u8],
    subject: &CsrSubject,
    device_id: &str,
    sig: CsrSignature,
    sign: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Vec<u8> {
    let cn_value = match subject {
        CsrSubject::Plain(s) => der::tlv(0x0c, s.as_bytes()),
        CsrSubject::Windows => {
            let mut raw = b"B1C43CD0-1624-5FBB-8E54-34CF17DFD3A1!".to_vec();
            raw.extend_from_slice(device_id.as_bytes());
            raw.push(0);
            der::printable_raw(&raw)
        }
    };
    let name = der::seq(&[&der::set(&[&der::seq(&[&der::oid("2.5.4.3"), &cn_value])])]);
    // Windows adds its OS version as an attribute.
    let os_attr = der::seq(&[
        &der::oid("1.3.6.1.4.1.311.13.2.3"),
        &der::set(&[&der::ia5("10.0.22621.2")]),
    ]);
    let info = der::seq(&[
        &der::int0(),
        &name,
        spki,
        &der::context_constructed(0, &os_attr),
    ]);
    let alg_oid = match sig {
        CsrSignature::Sha256 => "1.2.840.113549.1.1.11",
        CsrSignature::Sha1 => "1.2.840.113549.1.1.5",
        CsrSignature::OiwSha1 => "1.3.14.3.2.29",
    };
    let signature = sign(&info);
    der::seq(&[
        &info,
        &der::seq(&[&der::oid(alg_oid), &der::null()]),
        &der::bit_string(&signature),
    ])
}

/// Flips one bit of the signature so verification must fail.
pub fn tamper(mut csr: Vec<u8>) -> Vec<u8> {
    let last = csr.len() - 1;
    csr[last] ^= 0x01;
    csr
}
