//! Criterion benchmarks of the enrollment functions' hot paths: discovery, XCEP and WSTEP
//! parsing and writing, CSR verification, signing with the local CA, provisioning-doc
//! building and whole enrollments. `cargo bench -p winmdm-bench --bench enrollment`.
//!
//! Each function's benchmarks run in their own process, as each Lambda function does, so
//! one's allocations do not shape another's heap.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use time::{Duration, OffsetDateTime};
use winmdm_bench::MemStore;
use winmdm_core::ca::{CertificateAuthority, IssueRequest};
use winmdm_core::clock::SystemClock;
use winmdm_core::config::{EnrollmentConfig, PreferredAuth};
use winmdm_core::csr::verify_csr;
use winmdm_core::enrollment::EnrollmentService;
use winmdm_core::token::TokenSigner;
use winmdm_e2e::device::{CsrSignature, CsrSubject, Device};
use winmdm_e2e::inprocess::apigw_v2_event;
use winmdm_e2e::messages::{self, Credentials};
use winmdm_embedded::LocalCa;
use winmdm_wire::provisioning::{
    ClientCertStore, DigestCredential, PollSchedule, ProviderId, ProvisioningDoc, StoreCertificate,
};
use winmdm_wire::soap::Envelope;
use winmdm_wire::wstep::{RequestSecurityToken, RequestSecurityTokenResponse};
use winmdm_wire::xcep::{GetPoliciesRequest, GetPoliciesResponse};

// The allocator the Lambda functions ship with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SERVER: &str = "https://manage.example.com/ManagementServer/MDM.svc";

fn provisioning_doc() -> ProvisioningDoc {
    let cert = StoreCertificate {
        thumbprint: "A".repeat(40),
        der_base64: "M".repeat(1100),
    };
    ProvisioningDoc {
        root: cert.clone(),
        intermediate: None,
        client: cert,
        client_store: ClientCertStore::User,
        renewal: None,
        provider_id: ProviderId::new("winmdm").unwrap(),
        name: "winmdm".into(),
        management_url: SERVER.into(),
        server_to_client: DigestCredential {
            name: "winmdm".into(),
            secret: "s".repeat(32),
            nonce_b64: "bm9uY2Vub25jZQ==".into(),
        },
        client_to_server: DigestCredential {
            name: "DEV".into(),
            secret: "s".repeat(32),
            nonce_b64: "bm9uY2Vub25jZQ==".into(),
        },
        upn: "alice@example.com".into(),
        ent_dm_id: "DEV".into(),
        ent_device_name: Some("DESKTOP-1".into()),
        poll: PollSchedule::default(),
    }
}

const UPN: &str = "a@example.com";
const PASSWORD: &str = "password";

/// The enrollment service over `store` and `ca`, signing federated tokens with `key`.
/// An on-premise service takes only UsernameTokens, a federated one only its login page's
/// tokens.
fn enrollment_service(
    store: Arc<MemStore>,
    ca: Arc<dyn CertificateAuthority>,
    key: Vec<u8>,
    policy: PreferredAuth,
) -> EnrollmentService {
    let mut config =
        EnrollmentConfig::new("https://enterpriseenrollment.example.com".parse().unwrap());
    config.auth_policy = policy;
    EnrollmentService::new(
        Arc::new(config),
        store,
        ca,
        Arc::new(SystemClock),
        winmdm_core::token::TokenKey::given(key, Duration::minutes(15)).unwrap(),
    )
}

/// Adds the user every benchmark enrolls as.
fn add_user(rt: &tokio::runtime::Runtime, store: &MemStore) {
    rt.block_on(store.create_user(&winmdm_core::model::User {
        upn: UPN.into(),
        password_hash: winmdm_core::password::hash_password(PASSWORD).unwrap(),
        created_at: OffsetDateTime::now_utc(),
    }))
    .unwrap();
}

fn password_credentials() -> Credentials {
    Credentials::Password {
        username: UPN.into(),
        password: PASSWORD.into(),
    }
}

fn enrollment(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(LocalCa::open_or_create(dir.path()).unwrap());
    let service = enrollment_service(
        Arc::new(MemStore::default()),
        ca.clone(),
        vec![1; 32],
        PreferredAuth::OnPremise,
    );
    // Store and CA calls of one on-premise enrollment, counted.
    {
        let store = Arc::new(MemStore::default());
        let counting = Arc::new(winmdm_bench::CountingCa {
            inner: LocalCa::open_or_create(dir.path()).unwrap(),
            issued: Default::default(),
        });
        let svc = enrollment_service(
            store.clone(),
            counting.clone(),
            vec![1; 32],
            PreferredAuth::OnPremise,
        );
        add_user(&rt, &store);
        let before = store.calls();
        let d = Device::new();
        let csr = d.csr(CsrSignature::Sha256, CsrSubject::Windows);
        let ctx = messages::context_items(&d.device_id, &d.hw_dev_id, "Full");
        let rst = messages::request_security_token(
            "urn:uuid:c",
            "https://e/e",
            &password_credentials(),
            &csr,
            &ctx,
        );
        let reply = rt.block_on(svc.request_security_token(rst.as_bytes(), "t"));
        assert!(reply.fault.is_none(), "{:?}", reply.fault);
        let after = store.calls();
        println!(
            "store calls for one enrollment: {} read(s), {} write(s); CA: {} issue(s)",
            after.0 - before.0,
            after.1 - before.1,
            counting.issued.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    let discover = messages::discover(
        "urn:uuid:1",
        "https://e/d",
        UPN,
        "6.0",
        &["OnPremise", "Federated"],
        winmdm_wire::ns::DISCOVERY,
    );
    c.bench_function("discovery: parse + respond", |b| {
        b.iter(|| service.discover(discover.as_bytes(), "t"))
    });

    let creds = password_credentials();
    let policy = messages::get_policies("urn:uuid:2", "https://e/p", &creds);
    let response = GetPoliciesResponse {
        common_name: "winmdm".into(),
        validity_period_seconds: 31_536_000,
        renewal_period_seconds: 3_628_800,
        minimal_key_length: 2048,
        next_update_hours: None,
    };
    c.bench_function("xcep: parse request + write response", |b| {
        b.iter(|| {
            let env = Envelope::parse(policy.as_bytes()).unwrap();
            GetPoliciesRequest::from_envelope(&env).unwrap();
            response.to_xml(env.message_id.as_deref())
        })
    });

    let device = Device::new();
    let csr_der = device.csr(CsrSignature::Sha256, CsrSubject::Windows);
    let ctx = messages::context_items(&device.device_id, &device.hw_dev_id, "Full");
    let rst = messages::request_security_token("urn:uuid:3", "https://e/e", &creds, &csr_der, &ctx);
    let doc_xml = provisioning_doc().to_xml();
    c.bench_function("wstep: parse request + write response", |b| {
        b.iter(|| {
            let env = Envelope::parse(rst.as_bytes()).unwrap();
            RequestSecurityToken::from_envelope(&env).unwrap();
            RequestSecurityTokenResponse {
                provisioning_doc_xml: doc_xml.clone(),
                created: "2026-11-24T23:00:00.000Z".into(),
                expires: "2026-11-24T23:05:00.000Z".into(),
            }
            .to_xml(env.message_id.as_deref())
        })
    });
    c.bench_function("provisioning doc: build", |b| {
        let doc = provisioning_doc();
        b.iter(|| doc.to_xml())
    });

    c.bench_function("csr: verify sha256WithRSA (Windows subject)", |b| {
        b.iter(|| verify_csr(&csr_der, 2048).unwrap())
    });
    let sha1 = device.csr(CsrSignature::OiwSha1, CsrSubject::Windows);
    c.bench_function("csr: verify OIW sha1WithRSA", |b| {
        b.iter(|| verify_csr(&sha1, 2048).unwrap())
    });
    let csr = verify_csr(&csr_der, 2048).unwrap();
    let ecdsa_dir = tempfile::tempdir().unwrap();
    let ecdsa = Arc::new(
        LocalCa::open_or_create_with(ecdsa_dir.path(), winmdm_embedded::LocalCaKey::EcdsaP256)
            .unwrap(),
    );
    for (name, ca) in [
        ("local CA: sign a device certificate", ca),
        ("local CA (ECDSA P-256): sign a device certificate", ecdsa),
    ] {
        c.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let now = OffsetDateTime::now_utc();
                let ca = ca.clone();
                let csr = csr.clone();
                let id = device.device_id.clone();
                async move {
                    ca.issue(&IssueRequest {
                        csr: &csr,
                        common_name: &id,
                        not_before: now,
                        not_after: now + Duration::days(365),
                        idempotency_token: "t",
                    })
                    .await
                    .unwrap()
                }
            })
        });
    }
}

/// Whole enrollments (WSTEP RequestSecurityToken through the enrollment service: envelope,
/// credential check, CSR check, store reads, provisioning doc, commit), with the CA
/// replaced by one that answers instantly, so the figure is handler time without the CA.
fn enrollment_end_to_end(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Certificates are made in the untimed setup, by a fast (ECDSA) local CA.
    let ca = Arc::new(winmdm_bench::PresignedCa::new(Arc::new(
        LocalCa::open_or_create_with(dir.path(), winmdm_embedded::LocalCaKey::EcdsaP256).unwrap(),
    )));
    let device = Device::new();
    let csr_der = device.csr(CsrSignature::Sha256, CsrSubject::Windows);
    let csr = verify_csr(&csr_der, 2048).unwrap();
    let key = vec![7; 32];
    let store = Arc::new(MemStore::default());
    add_user(&rt, &store);
    let federated = enrollment_service(
        store.clone(),
        ca.clone(),
        key.clone(),
        PreferredAuth::Federated,
    );
    let on_premise = enrollment_service(
        store.clone(),
        ca.clone(),
        key.clone(),
        PreferredAuth::OnPremise,
    );
    let signer = TokenSigner::new(key, Duration::minutes(15)).unwrap();
    // Each enrollment is a new device (ids from a counter) with a fresh single-use token.
    let counter = std::sync::atomic::AtomicU64::new(0);
    let request = |creds: &Credentials| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let device_id = format!("DEV{n:012}");
        let now = OffsetDateTime::now_utc();
        rt.block_on(ca.prepare(&IssueRequest {
            csr: &csr,
            common_name: &device_id,
            not_before: now,
            not_after: now + Duration::days(365),
            idempotency_token: "t",
        }));
        let ctx = messages::context_items(&device_id, &format!("HW{n:030}"), "Full");
        messages::request_security_token("urn:uuid:e", "https://e/e", creds, &csr_der, &ctx)
    };
    let enroll = |service: &EnrollmentService, rst: String| {
        let reply = rt.block_on(service.request_security_token(rst.as_bytes(), "t"));
        assert!(reply.fault.is_none(), "{:?}", reply.fault);
        reply
    };
    {
        let before = store.calls();
        enroll(
            &federated,
            request(&Credentials::Federated {
                token: signer.issue(UPN, OffsetDateTime::now_utc()),
            }),
        );
        let after = store.calls();
        println!(
            "store calls for one federated enrollment: {} read(s), {} write(s)",
            after.0 - before.0,
            after.1 - before.1
        );
    }
    c.bench_function("enrollment: federated, end to end without the CA", |b| {
        b.iter_batched(
            || {
                request(&Credentials::Federated {
                    token: signer.issue(UPN, OffsetDateTime::now_utc()),
                })
            },
            |rst| enroll(&federated, rst),
            BatchSize::SmallInput,
        )
    });
    let mut slow = c.benchmark_group("enrollment: on-premise");
    slow.sample_size(10);
    slow.bench_function("end to end without the CA (argon2id)", |b| {
        b.iter_batched(
            || request(&password_credentials()),
            |rst| enroll(&on_premise, rst),
            BatchSize::SmallInput,
        )
    });
    slow.finish();
}

/// Discovery and policy requests as the functions receive them: an API Gateway v2 event
/// through the function's handler (routing, body limit, SOAP, JSON log lines written to a
/// sink), so the figure is the function's handler time.
fn handlers(c: &mut Criterion) {
    winmdm_http::logging::init_with_writer(std::io::sink);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemStore::default());
    let key = vec![9; 32];
    // On-premise: the policy fixture carries a UsernameToken.
    let mut config =
        EnrollmentConfig::new("https://enterpriseenrollment.example.com".parse().unwrap());
    config.auth_policy = winmdm_core::config::PreferredAuth::OnPremise;
    let state = winmdm_http::AppState::new(
        config,
        store.clone(),
        Arc::new(LocalCa::open_or_create(dir.path()).unwrap()),
        Arc::new(SystemClock),
        key.clone(),
        winmdm_http::state::AdminAuth::Gateway,
    )
    .unwrap();
    add_user(&rt, &store);
    let fixture = |name: &str| {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/fixtures/apigw-v2")
                .join(name),
        )
        .unwrap()
    };
    let ok = |resp: winmdm_http::respond::Response| {
        assert_eq!(resp.status(), 200);
        resp
    };

    let event = fixture("discovery-post.json");
    let discover = messages::discover(
        "urn:uuid:1",
        "https://enterpriseenrollment.example.com/EnrollmentServer/Discovery.svc",
        UPN,
        "6.0",
        &["OnPremise", "Federated"],
        winmdm_wire::ns::DISCOVERY,
    );
    c.bench_function("discovery function: API Gateway event to response", |b| {
        b.iter_batched(
            || apigw_v2_event(&event, &discover, None),
            |req| ok(rt.block_on(winmdm_http::discovery::handle(&state, req))),
            BatchSize::SmallInput,
        )
    });

    // A federated token is checked, not spent, by the policy request.
    let signer = TokenSigner::new(key, Duration::minutes(15)).unwrap();
    let creds = Credentials::Federated {
        token: signer.issue(UPN, OffsetDateTime::now_utc()),
    };
    let event = fixture("policy.json");
    let policy = messages::get_policies(
        "urn:uuid:2",
        "https://enterpriseenrollment.example.com/EnrollmentServer/Policy.svc",
        &creds,
    );
    c.bench_function(
        "policy function: API Gateway event to response (federated token)",
        |b| {
            b.iter_batched(
                || apigw_v2_event(&event, &policy, None),
                |req| ok(rt.block_on(winmdm_http::policy::handle(&state, req))),
                BatchSize::SmallInput,
            )
        },
    );
}

use winmdm_core::store::Store as _;

criterion_group!(benches, enrollment, enrollment_end_to_end, handlers);
criterion_main!(benches);
