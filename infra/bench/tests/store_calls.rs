//! Store calls per management message, counted by the in-memory store: one read always;
//! a write only when the message changed something. An idle mTLS poll (nothing queued,
//! DevInfo as stored, `last_seen_at` recent) writes nothing.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};
use winmdm_bench::Managed;
use winmdm_core::clock::ManualClock;
use winmdm_core::commands::{CommandSpec, ItemSpec, QueuedCommand, Verb, VerbSpec};
use winmdm_core::management::ManagementConfig;
use winmdm_e2e::device::Device;
use winmdm_e2e::dm::{DmClient, Reply};
use winmdm_embedded::LocalCa;

const SERVER: &str = "https://manage.example.com/ManagementServer/MDM.svc";

#[tokio::test]
async fn an_idle_mtls_poll_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(LocalCa::open_or_create(dir.path()).unwrap());
    let device = Device::new();
    let start = OffsetDateTime::now_utc();
    let cert = winmdm_e2e::ca_conformance::certify(ca.as_ref(), &device, Duration::days(365))
        .await
        .unwrap()
        .der;
    let clock = Arc::new(ManualClock::new(start));
    let m = Managed::new(
        ManagementConfig::new(SERVER.into()),
        ca,
        clock.clone(),
        &device,
        &cert,
    );
    let mut client = DmClient::new(&device.device_id, SERVER);
    // One whole session; returns the store calls it made (reads, writes) and messages.
    let session = |client: &mut DmClient| {
        client.start_session();
        client.message(|c| c.package1("user", &device.hw_dev_id), true)
    };
    let poll = async |client: &mut DmClient| {
        let before = m.store.calls();
        let xml = session(client);
        let reply = m
            .service
            .handle(xml.as_bytes(), Some(&m.cert))
            .await
            .unwrap();
        let reply = Reply::parse(reply.xml.as_bytes());
        assert_eq!(reply.header_status().data, "200");
        let mut messages = 1;
        let mut reply = reply;
        while !reply.ends_session() {
            let answer = client.message(|c| c.answer(&reply, |_| 200, |_| "1".into()), true);
            let r = m
                .service
                .handle(answer.as_bytes(), Some(&m.cert))
                .await
                .unwrap();
            reply = Reply::parse(r.xml.as_bytes());
            messages += 1;
        }
        let after = m.store.calls();
        (after.0 - before.0, after.1 - before.1, messages)
    };

    // The first message ever: DevInfo and last_seen_at are new (and the process reads
    // the profile catalog, once per 30 s).
    assert_eq!(poll(&mut client).await, (2, 1, 1));
    // Polls within the interval with nothing to do: one read, no write.
    for _ in 0..10 {
        clock.advance(Duration::minutes(5));
        assert_eq!(
            poll(&mut client).await,
            (1, 0, 1),
            "an idle poll writes nothing"
        );
    }
    // Past the interval: the poll writes last_seen_at, and only that.
    clock.advance(Duration::hours(1));
    assert_eq!(poll(&mut client).await, (1, 1, 1));
    let seen = m
        .store
        .get_device(&device.device_id)
        .await
        .unwrap()
        .unwrap()
        .last_seen_at;
    assert_eq!(seen, Some(clock.now()));

    // Something to deliver: the session writes (sent, then settled), as before.
    m.store.add_command(QueuedCommand::new(
        &device.device_id,
        None,
        CommandSpec::Single(VerbSpec {
            verb: Verb::Get,
            items: vec![ItemSpec {
                target: "./DevDetail/SwV".into(),
                format: None,
                type_: None,
                data: None,
            }],
        }),
        clock.now(),
    ));
    clock.advance(Duration::minutes(1));
    let (reads, writes, messages) = poll(&mut client).await;
    assert_eq!(
        (reads, writes, messages),
        (2, 2, 2),
        "one read and one write per message"
    );
    // And back to idle.
    clock.advance(Duration::minutes(1));
    assert_eq!(poll(&mut client).await, (1, 0, 1));
}

use winmdm_core::clock::Clock as _;
use winmdm_core::store::Store as _;
