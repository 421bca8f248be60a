//! The store conformance suite on DynamoDB (moto).

use std::sync::Arc;

use winmdm_core::store::Store;
use winmdm_e2e::conformance;
use winmdm_e2e::moto::Moto;

async fn store(moto: &Moto, name: &str) -> Arc<dyn Store> {
    Arc::new(moto.dynamo_store(name).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite_on_dynamodb() {
    let moto = Moto::start().await;
    conformance::users(store(&moto, "t-users").await).await;
    conformance::enrollment_commit_and_hw_replacement(store(&moto, "t-enroll").await).await;
    conformance::tokens_are_single_use(store(&moto, "t-tokens").await).await;
    conformance::command_queue_and_management_state(store(&moto, "t-queue").await).await;
    conformance::concurrent_races_have_one_winner(store(&moto, "t-race").await).await;
    conformance::write_after_concurrent_change_keeps_both(store(&moto, "t-cc").await).await;
    conformance::an_enrollment_in_flight_does_not_undo_a_block(store(&moto, "t-blk").await).await;
    conformance::a_stale_message_does_not_reopen_a_settled_command(store(&moto, "t-stale").await)
        .await;
    conformance::profiles_groups_and_states(store(&moto, "t-profiles").await).await;
    conformance::fleet_counters_follow_device_writes(
        store(&moto, "t-counters").await,
        &conformance::InTheWrites,
    )
    .await;
    conformance::device_listing_pages_searches_and_sorts(store(&moto, "t-listing").await).await;
    conformance::failed_commands_are_noted(store(&moto, "t-failures").await).await;
    conformance::profile_counters_follow_state_writes(store(&moto, "t-pcounts").await).await;
}

/// The deployed configuration: the writes leave check-in counts to the table's stream,
/// and the `checkin-counts` handler's code, fed the stream's batches, keeps them, the
/// same counts as the writes keep on their own.
#[tokio::test]
async fn fleet_counters_from_the_stream_on_dynamodb() {
    let moto = Moto::start().await;
    let table = "t-stream-counters";
    let store = Arc::new(
        moto.dynamo_store(table)
            .await
            .with_checkin_counts_from_stream(true),
    );
    let pump = winmdm_e2e::moto::StreamPump::new(&moto, table).await;
    conformance::fleet_counters_follow_device_writes(store, &pump).await;
    let applied = pump.applied().await;
    assert!(
        applied.devices >= 6,
        "device changes delivered: {applied:?}"
    );
    assert_eq!(applied.skipped, 0, "{applied:?}");
    assert!(applied.items_written > 0, "{applied:?}");
}

/// Capacity units per management message on DynamoDB (moto), computed from item sizes
/// (moto reports constants): an idle mTLS poll, the hourly `last_seen_at` bump, and the
/// snapshot Query for a device with 0, 10 and 100 open commands. Printed for
/// BENCHMARKS.md; `cargo test -p winmdm-e2e --test store_dynamodb capacity -- --nocapture`.
#[tokio::test]
async fn capacity_per_management_message() {
    use time::{Duration, OffsetDateTime};
    use winmdm_core::clock::{Clock, ManualClock};
    use winmdm_core::management::{ManagementConfig, ManagementService};
    use winmdm_core::store::EnrollmentCommit;
    use winmdm_e2e::device::Device;
    use winmdm_e2e::dm::{DmClient, Reply};

    const SERVER: &str = "https://manage.example.com/ManagementServer/MDM.svc";
    let moto = Moto::start().await;
    // As deployed (check-in counts from the table's stream), then with the writes keeping
    // every counter (winmdm-local on DynamoDB), which also delivers queued commands.
    for stream in [true, false] {
        let table = if stream {
            "t-capacity-stream"
        } else {
            "t-capacity"
        };
        let store = Arc::new(
            moto.dynamo_store(table)
                .await
                .with_checkin_counts_from_stream(stream),
        );
        let pump = winmdm_e2e::moto::StreamPump::new(&moto, table).await;
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(winmdm_embedded::LocalCa::open_or_create(dir.path()).unwrap());
        let device = Device::new();
        let start = OffsetDateTime::now_utc();
        let cert = winmdm_e2e::ca_conformance::certify(ca.as_ref(), &device, Duration::days(365))
            .await
            .unwrap()
            .der;
        let mut record = conformance::device(&device.device_id, Some(&device.hw_dev_id));
        record.cert.thumbprint = winmdm_core::ca::thumbprint(&cert);
        store
            .commit_enrollment(&EnrollmentCommit {
                device: record,
                token: None,
            })
            .await
            .unwrap();
        let clock = Arc::new(ManualClock::new(start));
        let service = ManagementService::new(
            ManagementConfig::new(SERVER.into()),
            store.clone(),
            ca,
            clock.clone(),
        );
        let mut client = DmClient::new(&device.device_id, SERVER);
        // One whole session; the capacity it used (read units, write units) and its messages.
        let mut poll = async || {
            let before = store.capacity();
            client.start_session();
            let xml = client.message(|c| c.package1("user", &device.hw_dev_id), true);
            let mut reply = Reply::parse(
                service
                    .handle(xml.as_bytes(), Some(&cert))
                    .await
                    .unwrap()
                    .xml
                    .as_bytes(),
            );
            let first = store.capacity();
            let mut messages = 1;
            while !reply.ends_session() {
                let answer = client.message(|c| c.answer(&reply, |_| 200, |_| "1".into()), true);
                let r = service
                    .handle(answer.as_bytes(), Some(&cert))
                    .await
                    .unwrap();
                reply = Reply::parse(r.xml.as_bytes());
                messages += 1;
            }
            let after = store.capacity();
            (
                first.read_units - before.read_units,
                after.read_units - before.read_units,
                after.write_units - before.write_units,
                messages,
            )
        };

        poll().await; // DevInfo and last_seen_at recorded.
        clock.advance(Duration::minutes(5));
        let (idle_read, _, idle_write, n) = poll().await;
        assert_eq!((idle_write, n), (0.0, 1), "an idle poll writes nothing");
        clock.advance(Duration::hours(1));
        let (_, _, bump_write, _) = poll().await;
        assert!(bump_write > 0.0, "the hourly last_seen_at bump writes");
        if stream {
            assert_eq!(bump_write, 2.0, "the bump: device item and listing entry");
            // The stream's batch: the device's check-in moves, netted, as one transaction.
            pump.pump().await;
            let before = pump.applied().await;
            clock.advance(Duration::hours(1));
            poll().await;
            let batch = pump.pump().await;
            // One day item (two when the hour crossed midnight).
            assert_eq!(batch.devices, 1, "{batch:?} after {before:?}");
            assert!((1..=2).contains(&batch.items_written), "{batch:?}");
            println!(
                "check-in counts from the stream: hourly last_seen_at bump {idle_read} RRU, \
             {bump_write} WRU; its batch: {} counter item(s) in {} transaction(s) (2 WRU \
             per item), shared by every bump in the batching window",
                batch.items_written, batch.transactions
            );
            continue;
        }
        let mut rows = vec![("idle poll (0 open commands)", idle_read, idle_write)];
        rows.push(("hourly last_seen_at bump", idle_read, bump_write));
        let mut snapshot_reads = vec![idle_read];
        for open in [10, 100] {
            for i in 0..open {
                let c = winmdm_core::commands::QueuedCommand::new(
                    &device.device_id,
                    None,
                    winmdm_core::commands::CommandSpec::Single(winmdm_core::commands::VerbSpec {
                        verb: winmdm_core::commands::Verb::Replace,
                        items: vec![winmdm_core::commands::ItemSpec {
                            target: format!("./Vendor/MSFT/Policy/Config/Test/Setting{i}"),
                            format: Some("int".into()),
                            type_: None,
                            data: Some(i.to_string()),
                        }],
                    }),
                    clock.now(),
                );
                store.enqueue_command(&c).await.unwrap();
            }
            clock.advance(Duration::minutes(1));
            let (first_read, read, write, messages) = poll().await;
            snapshot_reads.push(first_read);
            // Every command is delivered and settled, however long the queue: a message never
            // sends more than one DynamoDB transaction (100 items) can record, for its own
            // write and for the answer's (before, 100 queued commands made every message of
            // the device fail with a 500).
            let snap = store
                .load_management(&device.device_id, "x")
                .await
                .unwrap()
                .unwrap();
            assert!(snap.open_commands.is_empty(), "{open}: all delivered");
            if open == 100 {
                assert!(messages > 2, "spread over several messages");
            }
            println!(
                "{open} open commands: snapshot Query {first_read} RRU; the session: {messages} \
             messages, {read} RRU, {write} WRU"
            );
        }
        assert!(
            snapshot_reads[0] <= snapshot_reads[1] && snapshot_reads[1] < snapshot_reads[2],
            "the snapshot grows with the queue: {snapshot_reads:?}"
        );
        for (what, r, w) in rows {
            println!("{what}: {r} RRU, {w} WRU");
        }
        println!("snapshot Query, 0 / 10 / 100 open commands: {snapshot_reads:?} RRU");
    }
}

/// A profile's device states are spread over 16 GSI1 keys; records written before that
/// (under the one `PDEV#<profile>` key) are still listed, once, in device order, across
/// pages.
#[tokio::test]
async fn profile_states_list_across_shards_and_the_older_key() {
    use aws_sdk_dynamodb::types::AttributeValue as Av;
    use winmdm_core::model::PageRequest;
    use winmdm_core::profiles::DeviceProfile;
    use winmdm_core::session::{DevicePatch, ManagementUpdate, SessionWrite};
    let moto = Moto::start().await;
    let store = moto.dynamo_store("t-pdev").await;
    let now = time::OffsetDateTime::now_utc();
    let mut want = Vec::new();
    for i in 0..20 {
        let id = format!("PD-{i:02}");
        store
            .commit_enrollment(&winmdm_core::store::EnrollmentCommit {
                device: winmdm_e2e::conformance::device(&id, Some(&format!("HW-PD{i}"))),
                token: None,
            })
            .await
            .unwrap();
        store
            .save_management(&ManagementUpdate {
                device_id: id.clone(),
                device: DevicePatch::default(),
                session: SessionWrite::Keep,
                commands: vec![],
                profiles: vec![DeviceProfile::new(&id, "P-SHARDED", 1, now)],
            })
            .await
            .unwrap();
        want.push(id);
    }
    // One record as the previous release wrote it.
    let old = DeviceProfile::new("PD-OLD", "P-SHARDED", 1, now);
    aws_sdk_dynamodb::Client::new(&moto.sdk_config().await)
        .put_item()
        .table_name("t-pdev")
        .item("PK", Av::S("DEV#PD-OLD".into()))
        .item("SK", Av::S("P#P-SHARDED".into()))
        .item("data", Av::S(serde_json::to_string(&old).unwrap()))
        .item("GSI1PK", Av::S("PDEV#P-SHARDED".into()))
        .item("GSI1SK", Av::S("PD-OLD".into()))
        .send()
        .await
        .unwrap();
    want.push("PD-OLD".into());
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_profile_devices("P-SHARDED", &PageRequest::new(after, Some(6)))
            .await
            .unwrap();
        assert!(page.items.len() <= 6);
        listed.extend(page.items.into_iter().map(|s| s.device_id));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(listed, want);
    assert!(
        store
            .list_profile_devices(
                "P-SHARDED",
                &PageRequest::new(Some("nonsense".into()), None)
            )
            .await
            .is_err()
    );
}
