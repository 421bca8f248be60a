//! The device certificate profile, the same whichever CA signs it (the local CA, or a
//! key in AWS KMS; ACM PCA sets the same through its API passthrough): `CN=<DeviceID>`,
//! digitalSignature and keyEncipherment, EKU clientAuth, not a CA, the requested
//! validity and a 127-bit serial from the operating system's CSPRNG. Nothing the CSR asks
//! for (subject, extensions) is copied.

use rand::RngCore;
use rand::rngs::OsRng;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::ca::IssueRequest;

/// A positive, non-zero serial of 16 random bytes (RFC 5280 4.1.2.2).
pub fn random_serial() -> SerialNumber {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    b[0] = (b[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&b)
}

/// Lowercase hex of a serial, as `IssuedCertificate::serial_hex` carries it.
pub fn serial_hex(serial: &SerialNumber) -> String {
    serial.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The parameters of a device certificate for `req` (the public key comes from the CSR).
pub fn device_certificate(req: &IssueRequest<'_>) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, req.common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = req.not_before;
    params.not_after = req.not_after;
    params.serial_number = Some(random_serial());
    params
}

/// The parameters of a self-signed root that signs device certificates only
/// (path length 0).
pub fn device_root(
    common_name: &str,
    now: OffsetDateTime,
    validity: Duration,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "winmdm");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + validity;
    params.serial_number = Some(random_serial());
    params
}
