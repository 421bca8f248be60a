//! The CA suite on the local CA and on ACM Private CA (moto).

use winmdm_e2e::ca_conformance::{certify, issues_certificates_that_chain};
use winmdm_e2e::moto::Moto;

/// The OID of the signature algorithm a certificate was signed with.
fn signed_with(der: &[u8]) -> String {
    use x509_parser::prelude::FromDer as _;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).unwrap();
    cert.signature_algorithm.algorithm.to_id_string()
}

const SHA256_WITH_RSA: &str = "1.2.840.113549.1.1.11";
const ECDSA_WITH_SHA256: &str = "1.2.840.10045.4.3.2";

#[tokio::test]
async fn local_ca() {
    use winmdm_core::ca::CertificateAuthority as _;
    let dir = tempfile::tempdir().unwrap();
    let ca = winmdm_embedded::LocalCa::open_or_create(dir.path()).unwrap();
    assert_eq!(
        ca.key(),
        winmdm_embedded::LocalCaKey::Rsa2048,
        "the default"
    );
    assert_eq!(
        signed_with(&ca.chain().await.unwrap().root_der),
        SHA256_WITH_RSA
    );
    issues_certificates_that_chain(&ca, true).await;
}

/// A local CA made with an ECDSA P-256 key passes the same suite. The directory keeps the
/// key type: opening it again without a choice gives the same CA, and asking for the
/// other key type is refused rather than making a new CA over it.
#[tokio::test]
async fn local_ca_with_an_ecdsa_key() {
    use winmdm_core::ca::CertificateAuthority as _;
    use winmdm_embedded::{LocalCa, LocalCaKey, ca::LocalCaError};
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::open_or_create_with(dir.path(), LocalCaKey::EcdsaP256).unwrap();
    assert_eq!(ca.key(), LocalCaKey::EcdsaP256);
    let root = ca.chain().await.unwrap().root_der.clone();
    assert_eq!(signed_with(&root), ECDSA_WITH_SHA256);
    issues_certificates_that_chain(&ca, true).await;

    let again = LocalCa::open_or_create(dir.path()).unwrap();
    assert_eq!(again.key(), LocalCaKey::EcdsaP256);
    assert_eq!(again.chain().await.unwrap().root_der, root, "the same CA");
    let same = LocalCa::open_or_create_with(dir.path(), LocalCaKey::EcdsaP256).unwrap();
    assert_eq!(same.chain().await.unwrap().root_der, root);

    let err = LocalCa::open_or_create_with(dir.path(), LocalCaKey::Rsa2048).unwrap_err();
    assert!(
        matches!(
            err,
            LocalCaError::OtherKey {
                found: LocalCaKey::EcdsaP256,
                wanted: LocalCaKey::Rsa2048,
                ..
            }
        ),
        "{err}"
    );
    let kept = LocalCa::open_or_create(dir.path()).unwrap();
    assert_eq!(
        kept.chain().await.unwrap().root_der,
        root,
        "nothing replaced"
    );
}

#[tokio::test]
async fn acm_private_ca_on_moto() {
    let moto = Moto::start().await;
    let arn = moto.root_ca().await;
    let client = aws_sdk_acmpca::Client::new(&moto.sdk_config().await);
    let ca = winmdm_aws::PcaCa::connect(client, arn)
        .await
        .expect("CA certificate fetched");
    issues_certificates_that_chain(&ca, false).await;
}

/// Records the KMS operations a client calls (its `X-Amz-Target` headers).
#[derive(Debug, Default, Clone)]
struct KmsCalls(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl kms::config::Intercept for KmsCalls {
    fn name(&self) -> &'static str {
        "KmsCalls"
    }

    fn read_before_transmit(
        &self,
        ctx: &kms::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &kms::config::RuntimeComponents,
        _: &mut kms::config::ConfigBag,
    ) -> Result<(), kms::error::BoxError> {
        if let Some(t) = ctx.request().headers().get("x-amz-target") {
            self.0
                .lock()
                .unwrap()
                .push(t.trim_start_matches("TrentService.").to_owned());
        }
        Ok(())
    }
}

use winmdm_aws::aws_sdk_kms as kms;

async fn kms_key(
    client: &kms::Client,
    spec: kms::types::KeySpec,
    usage: kms::types::KeyUsageType,
) -> String {
    client
        .create_key()
        .key_spec(spec)
        .key_usage(usage)
        .send()
        .await
        .expect("create key")
        .key_metadata
        .unwrap()
        .key_id
}

/// `openssl verify` as the independent verifier: the chain, the signature and the
/// purpose (TLS client).
fn openssl_verifies(root_der: &[u8], cert_der: &[u8]) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let (root, cert) = (dir.path().join("root.der"), dir.path().join("cert.der"));
    std::fs::write(&root, root_der).unwrap();
    std::fs::write(&cert, cert_der).unwrap();
    let pem = |der: &std::path::Path| {
        let out = dir
            .path()
            .join(der.file_name().unwrap())
            .with_extension("pem");
        let ok = std::process::Command::new("openssl")
            .args(["x509", "-inform", "DER", "-in"])
            .arg(der)
            .arg("-out")
            .arg(&out)
            .status()
            .expect("openssl runs")
            .success();
        assert!(ok, "openssl reads {}", der.display());
        out
    };
    let (root, cert) = (pem(&root), pem(&cert));
    let o = std::process::Command::new("openssl")
        .args(["verify", "-x509_strict", "-purpose", "sslclient", "-CAfile"])
        .arg(&root)
        .arg(&cert)
        .output()
        .expect("openssl runs");
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

/// The KMS-keyed CA on moto's KMS (real RSA and ECDSA signatures): the CA suite, an
/// independent verifier, and one KMS call per certificate.
#[tokio::test]
async fn kms_ca_on_moto() {
    use kms::types::{KeySpec, KeyUsageType};
    let moto = Moto::start().await;
    let calls = KmsCalls::default();
    let client = kms::Client::from_conf(
        kms::config::Builder::from(&moto.sdk_config().await)
            .interceptor(calls.clone())
            .build(),
    );
    for spec in [KeySpec::Rsa2048, KeySpec::EccNistP256] {
        let key = kms_key(&client, spec.clone(), KeyUsageType::SignVerify).await;
        let root = winmdm_aws::kms_ca::create_root(
            &client,
            &key,
            "winmdm device CA",
            time::Duration::days(3650),
        )
        .await
        .expect("root made through KMS");
        openssl_verifies(&root, &root).expect("the root verifies as its own anchor");
        let ca =
            winmdm_aws::KmsCa::new(client.clone(), key.clone(), root.clone(), None).expect("CA");
        issues_certificates_that_chain(&ca, true).await;

        calls.0.lock().unwrap().clear();
        let issued = certify(
            &ca,
            &winmdm_e2e::device::Device::new(),
            time::Duration::days(365),
        )
        .await
        .expect("issued");
        assert_eq!(
            *calls.0.lock().unwrap(),
            ["Sign"],
            "one KMS call per certificate ({spec:?})"
        );
        openssl_verifies(&root, &issued.der)
            .unwrap_or_else(|e| panic!("openssl verifies the {spec:?} device certificate: {e}"));
    }

    // A CA certificate that is not the key's: the first issue fails loudly, nothing is
    // handed out.
    let key_a = kms_key(&client, KeySpec::Rsa2048, KeyUsageType::SignVerify).await;
    let key_b = kms_key(&client, KeySpec::Rsa2048, KeyUsageType::SignVerify).await;
    let root_a = winmdm_aws::kms_ca::create_root(&client, &key_a, "a", time::Duration::days(1))
        .await
        .unwrap();
    let wrong = winmdm_aws::KmsCa::new(client.clone(), key_b, root_a, None).unwrap();
    let err = certify(
        &wrong,
        &winmdm_e2e::device::Device::new(),
        time::Duration::days(1),
    )
    .await
    .expect_err("a key that does not match the CA certificate");
    assert!(err.to_string().contains("does not match"), "{err}");

    // Only signing keys make a CA.
    let enc = kms_key(&client, KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt).await;
    let err = winmdm_aws::kms_ca::create_root(&client, &enc, "x", time::Duration::days(1))
        .await
        .expect_err("an encryption key");
    assert!(err.to_string().contains("SIGN_VERIFY"), "{err}");
}

const THROTTLED: &str = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;

/// What the fake endpoint answers to one operation.
fn fake_pca_answer(
    target: &str,
    ca_pem: &str,
    throttled: &std::sync::atomic::AtomicUsize,
) -> (u16, String) {
    if target.ends_with("GetCertificateAuthorityCertificate") {
        (
            200,
            serde_json::json!({ "Certificate": ca_pem }).to_string(),
        )
    } else {
        throttled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (400, THROTTLED.to_owned())
    }
}

/// A fake ACM PCA endpoint: serves the CA certificate, throttles every IssueCertificate.
async fn throttling_pca(
    ca_pem: String,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use std::sync::atomic::AtomicUsize;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let issued = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = issued.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let ca_pem = ca_pem.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let target = req
                            .headers()
                            .get("x-amz-target")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let ca_pem = ca_pem.clone();
                        let counter = counter.clone();
                        async move {
                            let (status, body) = fake_pca_answer(&target, &ca_pem, &counter);
                            let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
                            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            r.headers_mut().insert(
                                "content-type",
                                "application/x-amz-json-1.1".parse().unwrap(),
                            );
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, issued)
}

#[tokio::test]
async fn pca_throttling_is_retried_within_the_budget_then_reported_unavailable() {
    use winmdm_core::ca::{CaError, CertificateAuthority, IssueRequest};
    let dir = tempfile::tempdir().unwrap();
    let local = winmdm_embedded::LocalCa::open_or_create(dir.path()).unwrap();
    let ca_pem = winmdm_e2e::inprocess::pem(&local.chain().await.unwrap().root_der);
    let (addr, attempts) = throttling_pca(ca_pem).await;
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_acmpca::config::Credentials::new(
            "k", "s", None, None, "test",
        ))
        .endpoint_url(format!("http://{addr}"))
        .load()
        .await;
    let ca = winmdm_aws::PcaCa::connect(
        aws_sdk_acmpca::Client::new(&config),
        "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/x",
    )
    .await
    .expect("connects")
    .with_budget(std::time::Duration::from_secs(3));
    assert_eq!(
        ca.chain().await.unwrap().root_der,
        local.chain().await.unwrap().root_der,
        "CA certificate fetched once at start"
    );
    let device = winmdm_e2e::device::Device::new();
    let der = device.csr(
        winmdm_e2e::device::CsrSignature::Sha256,
        winmdm_e2e::device::CsrSubject::Windows,
    );
    let csr = winmdm_core::csr::verify_csr(&der, 2048).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let started = std::time::Instant::now();
    let r = ca
        .issue(&IssueRequest {
            csr: &csr,
            common_name: &device.device_id,
            not_before: now,
            not_after: now + time::Duration::days(1),
            idempotency_token: "tok",
        })
        .await;
    assert!(matches!(r, Err(CaError::Unavailable(_))), "{r:?}");
    assert!(
        attempts.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "retried"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "within the budget"
    );
}

/// The functions' configuration of the KMS CA: the key needs its certificate, one CA at
/// a time, and the state serves the configured certificate as the chain (no AWS call at
/// start).
#[tokio::test]
async fn kms_ca_from_the_function_environment() {
    use std::collections::HashMap;
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let root = winmdm_core::cert_profile::device_root(
        "winmdm device root CA",
        time::OffsetDateTime::now_utc(),
        time::Duration::days(1),
    )
    .self_signed(&key)
    .unwrap();
    let pem = winmdm_aws::kms_ca::pem(root.der());
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let state = |vars: &[(&str, &str)]| {
        let mut map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        map.insert("WINMDM_PUBLIC_URL".into(), "https://e.example.com".into());
        map.insert("AWS_REGION".into(), "us-east-1".into());
        map.insert("WINMDM_DATA_DIR".into(), data_dir.clone());
        async move { winmdm_http::AppState::from_vars(move |k| map.get(k).cloned()).await }
    };
    let err = state(&[("WINMDM_KMS_KEY_ID", "k")]).await.err().unwrap();
    assert!(err.to_string().contains("WINMDM_KMS_CA_CERT"), "{err}");
    let err = state(&[
        ("WINMDM_KMS_KEY_ID", "k"),
        ("WINMDM_KMS_CA_CERT", "not PEM"),
    ])
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("exactly one PEM"), "{err}");
    let err = state(&[
        ("WINMDM_KMS_KEY_ID", "k"),
        ("WINMDM_KMS_CA_CERT", &pem),
        (
            "WINMDM_PCA_ARN",
            "arn:aws:acm-pca:us-east-1:1:certificate-authority/x",
        ),
    ])
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("choose one CA"), "{err}");
    let err = state(&[
        ("WINMDM_KMS_KEY_ID", "k"),
        ("WINMDM_KMS_CA_CERT_S3", "s3://bucket"),
    ])
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("s3://bucket/key"), "{err}");
    let err = state(&[
        ("WINMDM_KMS_KEY_ID", "k"),
        ("WINMDM_KMS_CA_CERT", &pem),
        ("WINMDM_KMS_CA_CERT_S3", "s3://b/k"),
    ])
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("not both"), "{err}");
    // From S3: nothing is read at start.
    state(&[
        ("WINMDM_KMS_KEY_ID", "k"),
        ("WINMDM_KMS_CA_CERT_S3", "s3://b/truststore.pem"),
    ])
    .await
    .expect("configured without a call");
    let s = state(&[("WINMDM_KMS_KEY_ID", "k"), ("WINMDM_KMS_CA_CERT", &pem)])
        .await
        .expect("configured");
    let chain = s.ca.chain().await.unwrap();
    assert_eq!(chain.root_der, root.der().to_vec());
    assert_eq!(chain.intermediate_der, None);
}
