//! The CA suite on the local CA and on ACM Private CA (moto).

use winmdm_e2e::ca_conformance::issues_certificates_that_chain;
use winmdm_e2e::moto::Moto;

#[tokio::test]
async fn local_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = winmdm_embedded::LocalCa::open_or_create(dir.path()).unwrap();
    issues_certificates_that_chain(&ca, true).await;
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
