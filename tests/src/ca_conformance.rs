//! The CA suite, run against the local CA and ACM Private CA (moto). moto's PCA ignores
//! the API passthrough (subject, key usages), the validity and the key algorithm, so those
//! are asserted only when `strict` (the local CA); chaining, the certified key and the
//! serial are asserted everywhere.

use time::{Duration, OffsetDateTime};
use winmdm_core::ca::CertificateAuthority;
use winmdm_core::csr::verify_csr;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::device::{CsrSignature, CsrSubject, Device};

/// Has `ca` certify `device`'s key (its CSR as Windows writes it), valid from five
/// minutes ago for `validity`.
pub async fn certify(
    ca: &dyn CertificateAuthority,
    device: &Device,
    validity: Duration,
) -> Result<winmdm_core::ca::IssuedCertificate, winmdm_core::ca::CaError> {
    let csr = verify_csr(&device.csr(CsrSignature::Sha256, CsrSubject::Windows), 2048)
        .expect("the device's CSR verifies");
    let now = OffsetDateTime::now_utc();
    ca.issue(&winmdm_core::ca::IssueRequest {
        csr: &csr,
        common_name: &device.device_id,
        not_before: now - Duration::minutes(5),
        not_after: now + validity,
        idempotency_token: &device.device_id[..16],
    })
    .await
}

pub async fn issues_certificates_that_chain(ca: &dyn CertificateAuthority, strict: bool) {
    let chain = ca.chain().await.expect("CA certificate available");
    let (_, root) = X509Certificate::from_der(&chain.root_der).expect("root parses");
    root.verify_signature(None).expect("root is self-signed");
    let (_, issuer) = X509Certificate::from_der(chain.issuer_der()).expect("issuer parses");
    if chain.intermediate_der.is_some() {
        issuer
            .verify_signature(Some(root.public_key()))
            .expect("intermediate chains to root");
    }

    let mut serials = Vec::new();
    for _ in 0..2 {
        let device = Device::new();
        // A plain subject: moto parses the CSR with `cryptography`, which refuses Windows'
        // invalid PrintableString (the local CA never reads the subject at all).
        let der = device.csr(
            CsrSignature::Sha256,
            CsrSubject::Plain(device.device_id.clone()),
        );
        let csr = verify_csr(&der, 2048).expect("valid CSR");
        let now = OffsetDateTime::now_utc();
        let not_after = now + Duration::days(30);
        let issued = ca
            .issue(&winmdm_core::ca::IssueRequest {
                csr: &csr,
                common_name: &device.device_id,
                not_before: now - Duration::minutes(5),
                not_after,
                idempotency_token: &device.device_id[..16],
            })
            .await
            .expect("certificate issued");
        let (_, cert) = X509Certificate::from_der(&issued.der).expect("certificate parses");
        cert.verify_signature(Some(issuer.public_key()))
            .expect("signed by the issuing CA");
        assert_eq!(cert.issuer(), issuer.subject());
        assert_eq!(
            cert.public_key().raw,
            device.spki_der().as_slice(),
            "certifies the CSR's key"
        );
        let serial: String = cert
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(issued.serial_hex, serial);
        assert_eq!(
            issued.not_after.unix_timestamp(),
            cert.validity().not_after.timestamp()
        );
        serials.push(serial);
        let cn: Vec<&str> = cert
            .subject()
            .iter_common_name()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(cn, vec![device.device_id.as_str()]);
        if strict {
            assert_eq!(
                cert.subject().iter().count(),
                1,
                "subject is exactly CN=<DeviceID>"
            );
            let ku = cert.key_usage().unwrap().expect("key usage");
            assert!(
                ku.value.digital_signature()
                    && ku.value.key_encipherment()
                    && !ku.value.key_cert_sign()
            );
            assert!(
                cert.extended_key_usage()
                    .unwrap()
                    .expect("EKU")
                    .value
                    .client_auth
            );
            assert!(!cert.is_ca());
            assert!(
                (cert.validity().not_after.timestamp() - not_after.unix_timestamp()).abs() <= 1
            );
        }
    }
    assert_ne!(serials[0], serials[1], "serials are unique");
}
