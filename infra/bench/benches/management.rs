//! Criterion benchmarks of the management function's hot path: SyncML messages through
//! the management service with the store in memory (handler time without the store).
//! `cargo bench -p winmdm-bench --bench management`.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use time::{Duration, OffsetDateTime};
use winmdm_bench::MemStore;
use winmdm_core::ca::{CertificateAuthority, IssueRequest, thumbprint};
use winmdm_core::clock::SystemClock;
use winmdm_core::commands::{
    CommandSpec, CommandState, ItemSpec, QueuedCommand, SentIn, Verb, VerbSpec,
};
use winmdm_core::csr::verify_csr;
use winmdm_core::management::{ManagementConfig, ManagementService};
use winmdm_core::session::{SentCommand, SentKind, SessionState};
use winmdm_e2e::device::{CsrSignature, CsrSubject, Device};
use winmdm_e2e::dm::DmClient;
use winmdm_embedded::LocalCa;
use winmdm_wire::syncml::{Command, Item, Meta, Results, Status};

// The allocator the Lambda functions ship with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SERVER: &str = "https://manage.example.com/ManagementServer/MDM.svc";

struct Managed {
    store: Arc<MemStore>,
    service: ManagementService,
    cert: Vec<u8>,
    device_id: String,
}

fn managed(ca: Arc<LocalCa>, device: &Device, cert: &[u8]) -> Managed {
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
    let m = managed(ca.clone(), &device, &cert);
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

    // The same message as the manage function receives it: an API Gateway v2 event with
    // the client certificate from the mTLS handshake, through the function's handler
    // (routing, body limit, JSON log lines written to a sink).
    winmdm_http::logging::init_with_writer(std::io::sink);
    let state = winmdm_http::AppState::new(
        winmdm_core::config::EnrollmentConfig::new(
            "https://enterpriseenrollment.example.com".parse().unwrap(),
        ),
        m.store.clone(),
        ca.clone(),
        Arc::new(SystemClock),
        vec![9; 32],
        winmdm_http::state::AdminAuth::Gateway,
    )
    .unwrap();
    let event = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/apigw-v2/manage-mtls.json"),
    )
    .unwrap();
    let cert_pem = winmdm_e2e::inprocess::pem(&cert);
    c.bench_function(
        "manage function: API Gateway event to response (first package, mTLS)",
        |b| {
            b.iter_batched(
                || winmdm_e2e::inprocess::apigw_v2_event(&event, &package1, Some(&cert_pem)),
                |req| {
                    let resp = rt.block_on(winmdm_http::manage::handle(&state, req));
                    assert_eq!(resp.status(), 200);
                    resp
                },
                BatchSize::SmallInput,
            )
        },
    );

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
        let m = managed(ca.clone(), &device, &cert);
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

criterion_group!(benches, management);
criterion_main!(benches);
