//! Criterion benchmarks of the management function's hot path: SyncML messages through
//! the management service with the store in memory (handler time without the store).
//! `cargo bench -p winmdm-bench --bench management`.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use time::{Duration, OffsetDateTime};
use winmdm_bench::Managed;
use winmdm_core::clock::SystemClock;
use winmdm_core::commands::{
    CommandSpec, CommandState, ItemSpec, QueuedCommand, SentIn, Verb, VerbSpec,
};
use winmdm_core::management::ManagementConfig;
use winmdm_core::session::{SentCommand, SentKind, SessionState};
use winmdm_e2e::device::Device;
use winmdm_e2e::dm::DmClient;
use winmdm_embedded::LocalCa;
use winmdm_wire::syncml::{Command, Item, Meta, Results, Status};

// The allocator the Lambda functions ship with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SERVER: &str = "https://manage.example.com/ManagementServer/MDM.svc";

fn managed(ca: Arc<LocalCa>, device: &Device, cert: &[u8]) -> Managed {
    Managed::new(
        ManagementConfig::new(SERVER.into()),
        ca,
        Arc::new(SystemClock),
        device,
        cert,
    )
}

fn management(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(LocalCa::open_or_create(dir.path()).unwrap());
    let device = Device::new();
    let cert = rt
        .block_on(winmdm_e2e::ca_conformance::certify(
            ca.as_ref(),
            &device,
            Duration::days(365),
        ))
        .unwrap()
        .der;

    let mut client = DmClient::new(&device.device_id, SERVER);
    client.start_session();
    let package1 = client.message(|c| c.package1("user", &device.hw_dev_id), true);
    let m = managed(ca.clone(), &device, &cert);
    rt.block_on(m.service.handle(package1.as_bytes(), Some(&m.cert)))
        .unwrap();
    let (reads, writes) = m.store.calls();
    println!(
        "store calls for a process's first management message (reads the profile catalog): \
         {reads} read(s), {writes} write(s)"
    );
    rt.block_on(m.service.handle(package1.as_bytes(), Some(&m.cert)))
        .unwrap();
    let (r2, w2) = m.store.calls();
    println!(
        "store calls for a management message (catalog cached): {} read(s), {} write(s)",
        r2 - reads,
        w2 - writes
    );
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
    // As on Lambda (no timestamps, EMF metrics on), counting what would be ingested.
    let log_bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let log_lines = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let (bytes, lines) = (log_bytes.clone(), log_lines.clone());
        winmdm_http::logging::init_as_on_lambda(move || LogCounter {
            bytes: bytes.clone(),
            lines: lines.clone(),
        });
    }
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
    // CloudWatch Logs ingestion per message: the lines of one idle poll's message (a new
    // session, nothing queued), plus 26 bytes of per-event overhead each.
    {
        use std::sync::atomic::Ordering::Relaxed;
        let (b0, l0) = (log_bytes.load(Relaxed), log_lines.load(Relaxed));
        const N: usize = 100;
        for _ in 0..N {
            let req = winmdm_e2e::inprocess::apigw_v2_event(&event, &package1, Some(&cert_pem));
            assert_eq!(
                rt.block_on(winmdm_http::manage::handle(&state, req))
                    .status(),
                200
            );
        }
        let (bytes, lines) = (log_bytes.load(Relaxed) - b0, log_lines.load(Relaxed) - l0);
        println!(
            "log per management message (idle poll, as on Lambda): {} line(s), {} bytes, \
             {} bytes billed with CloudWatch's 26 bytes per event",
            lines / N,
            bytes / N,
            (bytes + 26 * lines) / N
        );
    }
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
                    profiles: Vec::new(),
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

/// A profile of `n` Policy CSP settings for every device, as an operator would write it.
fn bench_profile(index: usize, n: usize) -> winmdm_core::profiles::Profile {
    use winmdm_core::profiles::{Assignment, Profile, ProfileScope, Setting};
    let now = OffsetDateTime::now_utc();
    Profile {
        id: format!("p{index}"),
        name: format!("Profile {index}"),
        description: String::new(),
        scope: ProfileScope::Device,
        revision: 1,
        version: 1,
        settings: (0..n)
            .map(|i| Setting {
                verb: Verb::Replace,
                item: ItemSpec {
                    target: format!("./Device/Vendor/MSFT/Policy/Config/Bench{index}/Setting{i}"),
                    format: Some("int".into()),
                    type_: None,
                    data: Some(i.to_string()),
                },
            })
            .collect(),
        assignment: Assignment {
            include: vec!["all".into()],
            exclude: Vec::new(),
        },
        template: None,
        created_at: now,
        updated_at: now,
    }
}

/// A device with 5 assigned profiles of 10 settings each: the first package (work out the
/// desired state, build 5 Atomics and 50 Gets), and the device's answer (5 + 50 Statuses
/// for the writes, 50 for the Gets and 50 Results to verify).
fn profiles(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(LocalCa::open_or_create(dir.path()).unwrap());
    let device = Device::new();
    let cert = rt
        .block_on(winmdm_e2e::ca_conformance::certify(
            ca.as_ref(),
            &device,
            Duration::days(365),
        ))
        .unwrap()
        .der;
    let m = managed(ca.clone(), &device, &cert);
    for i in 0..5 {
        m.store.add_profile(bench_profile(i, 10));
    }
    let mut client = DmClient::new(&device.device_id, SERVER);
    client.start_session();
    let package1 = client.message(|c| c.package1("user", &device.hw_dev_id), true);

    // Once through, checked: what the first package carries, what the answer settles,
    // and the store calls of each message (the catalog is read once per process).
    let first = rt
        .block_on(m.service.handle(package1.as_bytes(), Some(&m.cert)))
        .unwrap();
    let reply = winmdm_e2e::dm::Reply::parse(first.xml.as_bytes());
    let atomics = reply
        .commands()
        .iter()
        .filter(|c| matches!(c, Command::Container(k) if k.kind == winmdm_wire::syncml::ContainerKind::Atomic))
        .count();
    let gets = reply
        .item_commands()
        .iter()
        .filter(|c| c.verb == winmdm_wire::syncml::ItemVerb::Get)
        .count();
    assert_eq!((atomics, gets), (5, 50), "{}", first.xml);
    let mut tree = winmdm_e2e::csp::CspTree::for_device(&device.device_id, &device.hw_dev_id);
    let answer_cmds = client.answer_from(&reply, &mut tree);
    let answer = client.message(|_| answer_cmds, true);
    let calls = m.store.calls();
    rt.block_on(m.service.handle(answer.as_bytes(), Some(&m.cert)))
        .unwrap();
    let states = m.store.device_profiles(&device.device_id);
    assert!(
        states.len() == 5
            && states
                .iter()
                .all(|s| s.state == winmdm_core::profiles::DeliveryState::Verified),
        "{states:?}"
    );
    let after = m.store.calls();
    println!(
        "store calls for the verifying message: {} read(s), {} write(s)",
        after.0 - calls.0,
        after.1 - calls.1
    );
    m.store.forget_sessions_and_profiles(&device.device_id);
    let before = m.store.calls();
    rt.block_on(m.service.handle(package1.as_bytes(), Some(&m.cert)))
        .unwrap();
    let after = m.store.calls();
    println!(
        "store calls for a first package with 5 profiles to send (catalog cached): {} read(s), {} write(s)",
        after.0 - before.0,
        after.1 - before.1
    );

    c.bench_function("profiles: first package, 5 profiles x 10 settings", |b| {
        b.iter_batched(
            || m.store.forget_sessions_and_profiles(&device.device_id),
            |()| {
                rt.block_on(m.service.handle(package1.as_bytes(), Some(&m.cert)))
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    c.bench_function("profiles: verifying message, 50 Gets answered", |b| {
        b.iter_batched(
            || {
                m.store.forget_sessions_and_profiles(&device.device_id);
                rt.block_on(m.service.handle(package1.as_bytes(), Some(&m.cert)))
                    .unwrap()
            },
            |_| {
                rt.block_on(m.service.handle(answer.as_bytes(), Some(&m.cert)))
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
}

/// The profile engine alone (no parsing, no store): working out 5 profiles x 10 settings
/// and building their Atomics and Gets, and verifying the device's answer to them
/// (55 write Statuses, 50 Get Statuses and 50 Results).
fn profile_engine(c: &mut Criterion) {
    use winmdm_core::profile_engine::{MESSAGE_OVERHEAD, Outbox, ProfileConfig, ProfileRun};
    let now = OffsetDateTime::now_utc();
    let catalog: Vec<_> = (0..5).map(|i| bench_profile(i, 10)).collect();
    let config = ProfileConfig::default();
    let groups = vec!["all".to_owned()];
    let send = || {
        let mut out = Vec::new();
        let mut next = 2u32;
        let mut sent = Vec::new();
        let mut run = ProfileRun::new(&config, &catalog, "dev", &groups, Vec::new(), now);
        let mut ob = Outbox {
            out: &mut out,
            next_cmd_id: &mut next,
            sent: &mut sent,
            msg_id: 1,
            session_key: "s1",
            budget: 65_536 - MESSAGE_OVERHEAD,
            capacity: 65_536 - MESSAGE_OVERHEAD,
            user_logged_in: true,
            max_sent: 1_000,
            max_state_writes: usize::MAX,
        };
        let (n, more) = run.send(&mut ob);
        assert_eq!((n, more), (5, false));
        (out, sent, run.into_changed())
    };
    let (_, sent, states) = send();
    let verify = |states: Vec<_>| {
        let mut run = ProfileRun::new(&config, &catalog, "dev", &groups, states, now);
        for entry in &sent {
            run.on_status(entry, 200);
            if let SentKind::ProfileGet { index } = entry.kind {
                run.on_results(entry, Some(index.to_string()));
            }
        }
        run.settle();
        run.into_changed()
    };
    let verified = verify(states.clone());
    assert!(
        verified.len() == 5
            && verified
                .iter()
                .all(|s| s.state == winmdm_core::profiles::DeliveryState::Verified),
        "{verified:?}"
    );
    c.bench_function("profile engine: desired state + 5 Atomics + 50 Gets", |b| {
        b.iter(send)
    });
    c.bench_function("profile engine: verify 50 Results", |b| {
        b.iter_batched(|| states.clone(), verify, BatchSize::SmallInput)
    });
}

use winmdm_core::store::Store as _;

criterion_group!(benches, management, profiles, profile_engine);
criterion_main!(benches);

/// Counts the bytes and lines logged (what CloudWatch Logs would ingest).
struct LogCounter {
    bytes: Arc<std::sync::atomic::AtomicUsize>,
    lines: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::io::Write for LogCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::sync::atomic::Ordering::Relaxed;
        self.bytes.fetch_add(buf.len(), Relaxed);
        self.lines
            .fetch_add(buf.iter().filter(|b| **b == b'\n').count(), Relaxed);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
