//! Criterion benchmarks of the hot paths: discovery, XCEP and WSTEP parsing and writing,
//! CSR verification and signing with the local CA, provisioning-doc building, and SyncML
//! messages through the management service (store in memory). `cargo bench -p winmdm-bench`.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use time::{Duration, OffsetDateTime};
use winmdm_bench::MemStore;
use winmdm_core::ca::{CertificateAuthority, IssueRequest, thumbprint};
use winmdm_core::clock::SystemClock;
use winmdm_core::commands::{
    CommandSpec, CommandState, ItemSpec, QueuedCommand, SentIn, Verb, VerbSpec,
};
use winmdm_core::config::EnrollmentConfig;
use winmdm_core::csr::verify_csr;
use winmdm_core::enrollment::EnrollmentService;
use winmdm_core::management::{ManagementConfig, ManagementService};
use winmdm_core::session::{SentCommand, SentKind, SessionState};
use winmdm_core::token::TokenSigner;
use winmdm_e2e::device::{CsrSignature, CsrSubject, Device};
use winmdm_e2e::dm::DmClient;
use winmdm_e2e::messages::{self, Credentials};
use winmdm_embedded::LocalCa;
use winmdm_wire::provisioning::{
    ClientCertStore, DigestCredential, PollSchedule, ProviderId, ProvisioningDoc, StoreCertificate,
};
use winmdm_wire::soap::Envelope;
use winmdm_wire::syncml::{Command, Item, Meta, Results, Status};
use winmdm_wire::wstep::{RequestSecurityToken, RequestSecurityTokenResponse};
use winmdm_wire::xcep::{GetPoliciesRequest, GetPoliciesResponse};

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

fn enrollment(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(LocalCa::open_or_create(dir.path()).unwrap());
    let service = EnrollmentService::new(
        Arc::new(EnrollmentConfig::new(
            "https://enterpriseenrollment.example.com".parse().unwrap(),
        )),
        Arc::new(MemStore::default()),
        ca.clone(),
        Arc::new(SystemClock),
        TokenSigner::new(vec![1; 32], Duration::minutes(10)).unwrap(),
    );
    // Store and CA calls of one on-premise enrollment, counted.
    {
        let store = Arc::new(MemStore::default());
        let counting = Arc::new(winmdm_bench::CountingCa {
            inner: LocalCa::open_or_create(dir.path()).unwrap(),
            issued: Default::default(),
        });
        let svc = EnrollmentService::new(
            Arc::new(EnrollmentConfig::new(
                "https://enterpriseenrollment.example.com".parse().unwrap(),
            )),
            store.clone(),
            counting.clone(),
            Arc::new(SystemClock),
            TokenSigner::new(vec![1; 32], Duration::minutes(10)).unwrap(),
        );
        rt.block_on(store.create_user(&winmdm_core::model::User {
            upn: "a@example.com".into(),
            password_hash: winmdm_core::password::hash_password("password").unwrap(),
            created_at: OffsetDateTime::now_utc(),
        }))
        .unwrap();
        let before = store.calls();
        let d = Device::new();
        let csr = d.csr(CsrSignature::Sha256, CsrSubject::Windows);
        let ctx = messages::context_items(&d.device_id, &d.hw_dev_id, "Full");
        let creds = Credentials::Password {
            username: "a@example.com".into(),
            password: "password".into(),
        };
        let rst = messages::request_security_token("urn:uuid:c", "https://e/e", &creds, &csr, &ctx);
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
        "a@example.com",
        "6.0",
        &["OnPremise", "Federated"],
        winmdm_wire::ns::DISCOVERY,
    );
    c.bench_function("discovery: parse + respond", |b| {
        b.iter(|| service.discover(discover.as_bytes(), "t"))
    });

    let creds = Credentials::Password {
        username: "a@example.com".into(),
        password: "password".into(),
    };
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
    c.bench_function("local CA: sign a device certificate", |b| {
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

/// An enrolled device (certificate from the local CA) in a fresh in-memory store.
struct Managed {
    store: Arc<MemStore>,
    service: ManagementService,
    cert: Vec<u8>,
    device_id: String,
}

fn managed(
    rt: &tokio::runtime::Runtime,
    ca: Arc<LocalCa>,
    device: &Device,
    cert: &[u8],
) -> Managed {
    let _ = rt;
    let store = Arc::new(MemStore::default());
    let mut record = winmdm_e2e::conformance::device(&device.device_id, Some(&device.hw_dev_id));
    record.cert.thumbprint = thumbprint(cert);
    store.add_device(record);
    let service = ManagementService::new(
        ManagementConfig::new(SERVER.into()),
        store.clone(),
        ca,
        Arc::new(SystemClock),
    );
    Managed {
        store,
        service,
        cert: cert.to_vec(),
        device_id: device.device_id.clone(),
    }
}

fn management(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(LocalCa::open_or_create(dir.path()).unwrap());
    let device = Device::new();
    let csr = verify_csr(&device.csr(CsrSignature::Sha256, CsrSubject::Windows), 2048).unwrap();
    let now = OffsetDateTime::now_utc();
    let cert = rt
        .block_on(ca.issue(&IssueRequest {
            csr: &csr,
            common_name: &device.device_id,
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(365),
            idempotency_token: "t",
        }))
        .unwrap()
        .der;

    let mut client = DmClient::new(&device.device_id, SERVER);
    client.start_session();
    let package1 = client.message(|c| c.package1("user", &device.hw_dev_id), true);
    let m = managed(&rt, ca.clone(), &device, &cert);
    rt.block_on(m.service.handle(package1.as_bytes(), Some(&m.cert)))
        .unwrap();
    let (reads, writes) = m.store.calls();
    println!("store calls for one management message: {reads} read(s), {writes} write(s)");
    c.bench_function("syncml: first package (mTLS, nothing queued)", |b| {
        b.to_async(&rt).iter(|| async {
            m.service
                .handle(package1.as_bytes(), Some(&m.cert))
                .await
                .unwrap()
        })
    });

    // A message answering 20 Gets: 20 Statuses and 20 Results, in a session that sent them.
    let mut client = DmClient::new(&device.device_id, SERVER);
    client.session_id = 7;
    client.msg_id = 1;
    let twenty = client.message(
        |c| {
            let mut out = Vec::new();
            for i in 0..20 {
                out.push(Command::Status(Status {
                    cmd_id: c.cmd_id(),
                    msg_ref: "1".into(),
                    cmd_ref: (i + 1).to_string(),
                    cmd: "Get".into(),
                    target_ref: None,
                    source_ref: None,
                    chal: None,
                    data: "200".into(),
                    items: vec![],
                }));
                out.push(Command::Results(Results {
                    cmd_id: c.cmd_id(),
                    msg_ref: Some("1".into()),
                    cmd_ref: (i + 1).to_string(),
                    meta: None,
                    items: vec![Item {
                        source: Some(format!("./DevDetail/Ext/Microsoft/Node{i}")),
                        meta: Some(Meta {
                            format: Some("chr".into()),
                            ..Meta::default()
                        }),
                        data: Some("10.0.26100.2314".into()),
                        ..Item::default()
                    }],
                }));
            }
            out
        },
        true,
    );
    c.bench_function("syncml: parse a message with 20 Results", |b| {
        b.iter(|| winmdm_wire::syncml::SyncMl::parse(twenty.as_bytes()).unwrap())
    });
    let setup = || {
        let m = managed(&rt, ca.clone(), &device, &cert);
        let mut session = SessionState::new(
            &m.device_id,
            "7",
            OffsetDateTime::now_utc() + Duration::minutes(30),
        );
        session.server_msg_id = 1;
        for i in 0..20 {
            let mut cmd = QueuedCommand::new(
                &m.device_id,
                None,
                CommandSpec::Single(VerbSpec {
                    verb: Verb::Get,
                    items: vec![ItemSpec {
                        target: format!("./DevDetail/Ext/Microsoft/Node{i}"),
                        format: None,
                        type_: None,
                        data: None,
                    }],
                }),
                OffsetDateTime::now_utc(),
            );
            cmd.id = format!("{i:04}");
            cmd.state = CommandState::Sent;
            cmd.sent_in = Some(SentIn {
                session_id: session.key(),
                msg_id: 1,
            });
            session.sent.push(SentCommand {
                msg_id: 1,
                cmd_id: (i + 1).to_string(),
                command_id: cmd.id.clone(),
                kind: SentKind::Whole,
            });
            m.store.add_command(cmd);
        }
        rt.block_on(
            m.store
                .save_management(&winmdm_core::session::ManagementUpdate {
                    device_id: m.device_id.clone(),
                    device: Default::default(),
                    session: winmdm_core::session::SessionWrite::Put(Box::new(session)),
                    commands: vec![],
                }),
        )
        .unwrap();
        m
    };
    c.bench_function("syncml: message with 20 Results (mTLS)", |b| {
        b.iter_batched(
            setup,
            // The fixture is returned, so tearing it down is not timed.
            |m| {
                let reply = rt
                    .block_on(m.service.handle(twenty.as_bytes(), Some(&m.cert)))
                    .unwrap();
                (m, reply)
            },
            BatchSize::SmallInput,
        )
    });
}

use winmdm_core::store::Store as _;

criterion_group!(benches, enrollment, management);
criterion_main!(benches);
