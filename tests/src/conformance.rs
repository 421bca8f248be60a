//! The store conformance suite: every `Store` implementation must pass it. The embedded
//! store runs it here; the DynamoDB store runs the same functions.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};
use winmdm_core::model::{
    Device, DeviceCertificate, DeviceStatus, DmCredentials, EnrollmentType, OsInfo, PageRequest,
    User,
};
use winmdm_core::store::{ConsumedToken, EnrollmentCommit, Store, StoreError};

pub fn device(id: &str, hw: Option<&str>) -> Device {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    Device {
        id: id.into(),
        hw_dev_id: hw.map(Into::into),
        upn: "alice@example.com".into(),
        enrollment_type: EnrollmentType::Full,
        status: DeviceStatus::Enrolled,
        cert: DeviceCertificate {
            serial: "01ab".into(),
            thumbprint: "AB".repeat(20),
            not_after: now + Duration::days(365),
            spki_sha256: None,
        },
        os: OsInfo::default(),
        dm_credentials: DmCredentials {
            client_name: id.into(),
            client_digest_key: "k1".into(),
            server_name: "winmdm".into(),
            server_digest_key: "k2".into(),
            client_nonce: "bm9uY2U=".into(),
            client_nonce_expires_at: Some(now + Duration::days(1)),
            ..Default::default()
        },
        enrolled_at: now,
        last_seen_at: None,
        dm_info: Default::default(),
        previous_cert: None,
        groups: Vec::new(),
        entra: None,
        compliance: None,
    }
}

fn token(id: &str) -> ConsumedToken {
    ConsumedToken {
        id: id.into(),
        expires_at: OffsetDateTime::now_utc() + Duration::minutes(10),
    }
}

pub async fn users(store: Arc<dyn Store>) {
    let u = User {
        upn: "carol@example.com".into(),
        password_hash: "$argon2id$fake".into(),
        created_at: OffsetDateTime::now_utc().replace_nanosecond(0).unwrap(),
    };
    store.create_user(&u).await.unwrap();
    assert!(matches!(
        store.create_user(&u).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.get_user("carol@example.com").await.unwrap(),
        Some(u.clone())
    );
    assert_eq!(store.get_user("nobody@example.com").await.unwrap(), None);
    let page = store
        .list_users(&PageRequest::new(None, Some(10)))
        .await
        .unwrap();
    assert_eq!(page.items, vec![u]);
    assert!(store.delete_user("carol@example.com").await.unwrap());
    assert!(!store.delete_user("carol@example.com").await.unwrap());
}

pub async fn enrollment_commit_and_hw_replacement(store: Arc<dyn Store>) {
    let a = device("DEV-A", Some("HW-1"));
    let b = device("DEV-B", Some("HW-2"));
    for d in [&a, &b] {
        store
            .commit_enrollment(&EnrollmentCommit {
                device: d.clone(),
                token: None,
            })
            .await
            .unwrap();
    }
    assert_eq!(store.get_device("DEV-A").await.unwrap(), Some(a.clone()));
    assert_eq!(
        store.get_device_by_hw_dev_id("hw-1").await.unwrap(),
        Some(a.clone())
    );

    // Same hardware, new id: the old record goes, the other device stays.
    let a2 = device("DEV-A2", Some("HW-1"));
    store
        .commit_enrollment(&EnrollmentCommit {
            device: a2.clone(),
            token: None,
        })
        .await
        .unwrap();
    assert_eq!(store.get_device("DEV-A").await.unwrap(), None);
    assert_eq!(
        store.get_device_by_hw_dev_id("HW-1").await.unwrap(),
        Some(a2.clone())
    );
    assert_eq!(store.get_device("DEV-B").await.unwrap(), Some(b.clone()));

    // Same id from other hardware: refused, nothing changes.
    let imposter = device("DEV-B", Some("HW-9"));
    assert_eq!(
        store
            .commit_enrollment(&EnrollmentCommit {
                device: imposter,
                token: None
            })
            .await,
        Err(StoreError::EnrollmentRefused(
            winmdm_core::identity::EnrollmentRefusal::OtherHardware
        ))
    );
    assert_eq!(store.get_device("DEV-B").await.unwrap(), Some(b));
    assert_eq!(store.get_device_by_hw_dev_id("HW-9").await.unwrap(), None);

    // The listing follows: the superseded record left it, the others are in it.
    let listed = winmdm_core::device_listing::all(store.as_ref())
        .await
        .unwrap();
    let ids: Vec<&str> = listed.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["DEV-A2", "DEV-B"]);
}

/// The device listing: paged in DeviceID order across every run with nothing lost or
/// repeated, searched, filtered and sorted, and kept in step with device writes.
pub async fn device_listing_pages_searches_and_sorts(store: Arc<dyn Store>) {
    use winmdm_core::device_listing::{self, DeviceQuery, ListingError, SeenFilter, SortKey};
    use winmdm_core::session::{DevicePatch, ManagementUpdate, SessionWrite};
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let mut all_ids = Vec::new();
    for i in 0..45 {
        let id = format!("LST-{i:03}");
        let mut d = device(&id, Some(&format!("HW-L{i}")));
        d.upn = format!("user{}@example.com", i % 5);
        d.os.device_name = Some(format!("Desk {}", 100 - i));
        d.os.os_version = Some(
            if i % 3 == 0 {
                "10.0.19045.5011"
            } else {
                "10.0.22631.4460"
            }
            .into(),
        );
        d.dm_info.serial = Some(format!("SN{i:04}"));
        d.last_seen_at = (i % 4 != 0).then(|| now - Duration::hours(i));
        if i == 7 {
            d.status = DeviceStatus::Blocked;
        }
        store
            .commit_enrollment(&EnrollmentCommit {
                device: d,
                token: None,
            })
            .await
            .unwrap();
        all_ids.push(id);
    }
    let list = |q: DeviceQuery| {
        let store = store.clone();
        async move { device_listing::list(store.as_ref(), &q, now).await }
    };

    // Every page in DeviceID order, across every run of the store.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = list(DeviceQuery {
            cursor: cursor.clone(),
            limit: 7,
            ..DeviceQuery::default()
        })
        .await
        .unwrap();
        assert!(page.items.len() <= 7);
        // A plain page examines a page, not the fleet.
        assert!(page.examined <= 7, "examined {}", page.examined);
        seen.extend(page.items.into_iter().map(|d| d.id));
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, all_ids);

    // Search: DeviceID, UPN, name and serial, case-insensitively.
    let search = |text: &str| DeviceQuery {
        text: Some(text.to_lowercase()),
        ..DeviceQuery::default()
    };
    let ids =
        |l: &device_listing::Listing| l.items.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&list(search("sn0012")).await.unwrap()), ["LST-012"]);
    assert_eq!(ids(&list(search("desk 90")).await.unwrap()), ["LST-010"]);
    assert_eq!(ids(&list(search("LST-04")).await.unwrap()).len(), 5);
    assert_eq!(ids(&list(search("user3@")).await.unwrap()).len(), 9);
    assert!(
        list(search("nothing-like-this"))
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Filters combine.
    let blocked = list(DeviceQuery {
        status: Some(DeviceStatus::Blocked),
        ..DeviceQuery::default()
    })
    .await
    .unwrap();
    assert_eq!(ids(&blocked), ["LST-007"]);
    let old_os = DeviceQuery {
        os: Some("10.0.19045".into()),
        ..DeviceQuery::default()
    };
    assert_eq!(list(old_os).await.unwrap().items.len(), 15);
    let never = DeviceQuery {
        seen: Some(SeenFilter::Never),
        ..DeviceQuery::default()
    };
    assert_eq!(list(never).await.unwrap().items.len(), 12);
    let day = DeviceQuery {
        seen: Some(SeenFilter::WithinDay),
        text: Some("user1@".into()),
        ..DeviceQuery::default()
    };
    // i % 5 == 1, i % 4 != 0, i < 24: 1, 6, 11, 21.
    assert_eq!(
        ids(&list(day).await.unwrap()),
        ["LST-001", "LST-006", "LST-011", "LST-021"]
    );

    // A filtered search pages too, with nothing lost.
    let mut found = Vec::new();
    let mut cursor = None;
    loop {
        let q = DeviceQuery {
            os: Some("22631".into()),
            cursor: cursor.clone(),
            limit: 4,
            ..DeviceQuery::default()
        };
        let page = list(q).await.unwrap();
        found.extend(ids(&page));
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(found.len(), 30);

    // Sorted by another column, then paged by offset.
    let by_name = DeviceQuery {
        sort: SortKey::Name,
        limit: 3,
        ..DeviceQuery::default()
    };
    let first = list(by_name.clone()).await.unwrap();
    // "Desk 100", "Desk 56"…: names sort as text, so "Desk 100" comes first.
    assert_eq!(ids(&first), ["LST-000", "LST-044", "LST-043"]);
    let second = list(DeviceQuery {
        cursor: first.next.clone(),
        ..by_name
    })
    .await
    .unwrap();
    assert_eq!(ids(&second), ["LST-042", "LST-041", "LST-040"]);
    let recent = DeviceQuery {
        sort: SortKey::LastSeen,
        descending: true,
        limit: 2,
        ..DeviceQuery::default()
    };
    assert_eq!(ids(&list(recent).await.unwrap()), ["LST-001", "LST-002"]);
    // Devices never seen come last in either direction.
    let oldest = DeviceQuery {
        sort: SortKey::LastSeen,
        limit: 45,
        ..DeviceQuery::default()
    };
    let l = list(oldest).await.unwrap();
    assert_eq!(l.items[0].id, "LST-043");
    assert!(l.items[33..].iter().all(|d| d.last_seen_at.is_none()));

    // Cursors are checked.
    for bad in ["i.zz", "o.x", "nonsense"] {
        let q = DeviceQuery {
            cursor: Some(bad.into()),
            ..DeviceQuery::default()
        };
        assert_eq!(list(q).await.unwrap_err(), ListingError::BadCursor);
    }

    // A device write that changes a listed field shows at once; the rest of the row stays.
    store
        .save_management(&ManagementUpdate {
            device_id: "LST-012".into(),
            device: DevicePatch {
                dm_info: Some(winmdm_core::model::DmDeviceInfo {
                    device_name: Some("Renamed <b>laptop</b>".into()),
                    serial: Some("SN0012".into()),
                    ..Default::default()
                }),
                ..DevicePatch::default()
            },
            session: SessionWrite::Keep,
            commands: vec![],
            profiles: Vec::new(),
        })
        .await
        .unwrap();
    let row = list(search("renamed")).await.unwrap();
    assert_eq!(ids(&row), ["LST-012"]);
    assert_eq!(row.items[0].name.as_deref(), Some("Renamed <b>laptop</b>"));
    assert_eq!(row.items[0].os_version.as_deref(), Some("10.0.19045.5011"));
}

pub async fn tokens_are_single_use(store: Arc<dyn Store>) {
    let t = token("tok-1");
    assert!(!store.is_token_consumed("tok-1").await.unwrap());
    store
        .commit_enrollment(&EnrollmentCommit {
            device: device("DEV-T1", None),
            token: Some(t.clone()),
        })
        .await
        .unwrap();
    assert!(store.is_token_consumed("tok-1").await.unwrap());
    let replay = store
        .commit_enrollment(&EnrollmentCommit {
            device: device("DEV-T2", None),
            token: Some(t),
        })
        .await;
    assert_eq!(replay, Err(StoreError::TokenReplayed));
    assert_eq!(
        store.get_device("DEV-T2").await.unwrap(),
        None,
        "nothing written on replay"
    );
}

/// Many tasks race to spend one token and to enroll one piece of hardware: exactly one
/// wins each race and the data stays consistent.
pub async fn concurrent_races_have_one_winner(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .commit_enrollment(&EnrollmentCommit {
                    device: device(&format!("RACE-{i}"), None),
                    token: Some(token("race-token")),
                })
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::TokenReplayed) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 1, "exactly one enrollment spends the token");
    let mut stored = 0;
    for i in 0..16 {
        if store
            .get_device(&format!("RACE-{i}"))
            .await
            .unwrap()
            .is_some()
        {
            stored += 1;
        }
    }
    assert_eq!(stored, 1);

    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .commit_enrollment(&EnrollmentCommit {
                    device: device(&format!("HWRACE-{i}"), Some("HW-RACE")),
                    token: None,
                })
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let winner = store
        .get_device_by_hw_dev_id("HW-RACE")
        .await
        .unwrap()
        .expect("one device");
    let mut holders = 0;
    for i in 0..16 {
        if let Some(d) = store.get_device(&format!("HWRACE-{i}")).await.unwrap() {
            holders += 1;
            assert_eq!(d.id, winner.id);
        }
    }
    assert_eq!(holders, 1, "one record per hardware id");
}

fn queued(device_id: &str, target: &str) -> winmdm_core::commands::QueuedCommand {
    use winmdm_core::commands::{CommandSpec, ItemSpec, QueuedCommand, Verb, VerbSpec};
    QueuedCommand::new(
        device_id,
        None,
        CommandSpec::Single(VerbSpec {
            verb: Verb::Get,
            items: vec![ItemSpec {
                target: target.into(),
                format: None,
                type_: None,
                data: None,
            }],
        }),
        OffsetDateTime::now_utc(),
    )
}

/// The command queue and the one-read/one-write management operations.
pub async fn command_queue_and_management_state(store: Arc<dyn Store>) {
    use winmdm_core::commands::CommandState;
    use winmdm_core::session::{DevicePatch, ManagementUpdate, SessionState, SessionWrite};

    store
        .commit_enrollment(&EnrollmentCommit {
            device: device("Q-DEV", Some("Q-HW")),
            token: None,
        })
        .await
        .unwrap();
    store
        .commit_enrollment(&EnrollmentCommit {
            device: device("Q-OTHER", None),
            token: None,
        })
        .await
        .unwrap();
    assert!(matches!(
        store
            .enqueue_command(&queued("NO-SUCH-DEVICE", "./a"))
            .await,
        Err(StoreError::NotFound(_))
    ));
    let mut cmds = Vec::new();
    for i in 0..3 {
        let c = queued("Q-DEV", &format!("./Vendor/MSFT/N{i}"));
        store.enqueue_command(&c).await.unwrap();
        cmds.push(c);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    store
        .enqueue_command(&queued("Q-OTHER", "./x"))
        .await
        .unwrap();

    let snap = store
        .load_management("Q-DEV", "1")
        .await
        .unwrap()
        .expect("device");
    assert_eq!(snap.device.id, "Q-DEV");
    assert!(snap.session.is_none());
    assert_eq!(
        snap.open_commands, cmds,
        "open commands, oldest first, this device only"
    );
    assert!(store.load_management("NOPE", "1").await.unwrap().is_none());

    let mut session = SessionState::new(
        "Q-DEV",
        "1",
        OffsetDateTime::now_utc() + Duration::minutes(30),
    );
    session.server_msg_id = 1;
    let mut done = cmds[0].clone();
    done.state = CommandState::Succeeded;
    done.status = Some(200);
    let seen = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    store
        .save_management(&ManagementUpdate {
            device_id: "Q-DEV".into(),
            device: DevicePatch {
                last_seen_at: Some(seen),
                ..DevicePatch::default()
            },
            session: SessionWrite::Put(Box::new(session.clone())),
            commands: vec![done.clone()],
            profiles: Vec::new(),
        })
        .await
        .unwrap();
    let snap = store.load_management("Q-DEV", "1").await.unwrap().unwrap();
    assert_eq!(snap.session.as_ref(), Some(&session));
    assert_eq!(snap.device.last_seen_at, Some(seen));
    assert_eq!(
        snap.open_commands,
        cmds[1..].to_vec(),
        "settled commands leave the open set"
    );
    assert_eq!(
        store.get_command("Q-DEV", &cmds[0].id).await.unwrap(),
        Some(done)
    );
    assert_eq!(
        store.get_command("Q-OTHER", &cmds[0].id).await.unwrap(),
        None
    );

    let page = store
        .list_commands("Q-DEV", &PageRequest::new(None, Some(2)))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    let rest = store
        .list_commands("Q-DEV", &PageRequest::new(page.next.clone(), Some(2)))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert!(rest.next.is_none());
    assert_eq!(
        store
            .list_commands("Q-OTHER", &PageRequest::new(None, None))
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    store
        .save_management(&ManagementUpdate {
            device_id: "Q-DEV".into(),
            device: DevicePatch::default(),
            session: SessionWrite::Delete { slot: "1".into() },
            commands: vec![],
            profiles: Vec::new(),
        })
        .await
        .unwrap();
    assert!(
        store
            .load_management("Q-DEV", "1")
            .await
            .unwrap()
            .unwrap()
            .session
            .is_none()
    );
    assert!(matches!(
        store
            .save_management(&ManagementUpdate {
                device_id: "NOPE".into(),
                device: DevicePatch::default(),
                session: SessionWrite::Keep,
                commands: vec![],
                profiles: Vec::new(),
            })
            .await,
        Err(StoreError::NotFound(_))
    ));
}

/// A change made between a management message's read and its write is not lost.
pub async fn write_after_concurrent_change_keeps_both(store: Arc<dyn Store>) {
    use winmdm_core::model::DeviceStatus;
    use winmdm_core::session::{DevicePatch, ManagementUpdate, SessionWrite};
    store
        .commit_enrollment(&EnrollmentCommit {
            device: device("CC-DEV", Some("CC-HW")),
            token: None,
        })
        .await
        .unwrap();
    // The message reads…
    store
        .load_management("CC-DEV", "1")
        .await
        .unwrap()
        .expect("device");
    // …an operator blocks the device meanwhile…
    store
        .save_management(&ManagementUpdate {
            device_id: "CC-DEV".into(),
            device: DevicePatch {
                status: Some(DeviceStatus::Blocked),
                ..DevicePatch::default()
            },
            session: SessionWrite::Keep,
            commands: vec![],
            profiles: Vec::new(),
        })
        .await
        .unwrap();
    // …and the message writes what it learned.
    let seen = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    store
        .save_management(&ManagementUpdate {
            device_id: "CC-DEV".into(),
            device: DevicePatch {
                last_seen_at: Some(seen),
                ..DevicePatch::default()
            },
            session: SessionWrite::Keep,
            commands: vec![],
            profiles: Vec::new(),
        })
        .await
        .unwrap();
    let d = store.get_device("CC-DEV").await.unwrap().unwrap();
    assert_eq!(
        d.status,
        DeviceStatus::Blocked,
        "the operator's change survives"
    );
    assert_eq!(d.last_seen_at, Some(seen), "and so does the message's");
}

/// An enrollment decided before an operator's block (its certificate being issued
/// meanwhile) and committed after it is refused by the commit, which decides again from
/// the records as they are: the blocked record, and a blocked record on the same hardware,
/// stay as they are; and a freed DeviceID another user took meanwhile stays theirs. The
/// commit used to overwrite the block with an enrolled record and a fresh certificate.
pub async fn an_enrollment_in_flight_does_not_undo_a_block(store: Arc<dyn Store>) {
    use winmdm_core::identity::EnrollmentRefusal;
    use winmdm_core::session::{DevicePatch, ManagementUpdate, SessionWrite};
    let commit = |d: Device| {
        let store = store.clone();
        async move {
            store
                .commit_enrollment(&EnrollmentCommit {
                    device: d,
                    token: None,
                })
                .await
        }
    };
    let set_status = |id: &'static str, status: DeviceStatus| {
        let store = store.clone();
        async move {
            store
                .save_management(&ManagementUpdate {
                    device_id: id.into(),
                    device: DevicePatch {
                        status: Some(status),
                        ..DevicePatch::default()
                    },
                    session: SessionWrite::Keep,
                    commands: vec![],
                    profiles: Vec::new(),
                })
                .await
                .unwrap()
        }
    };
    let refused = |r: Result<(), StoreError>, why: EnrollmentRefusal| {
        assert_eq!(r, Err(StoreError::EnrollmentRefused(why)));
    };

    // The same device enrolling again, blocked meanwhile.
    commit(device("BLK-1", Some("BLK-HW1"))).await.unwrap();
    set_status("BLK-1", DeviceStatus::Blocked).await;
    refused(
        commit(device("BLK-1", Some("BLK-HW1"))).await,
        EnrollmentRefusal::DeviceBlocked,
    );
    let d = store.get_device("BLK-1").await.unwrap().unwrap();
    assert_eq!(d.status, DeviceStatus::Blocked);
    assert!(store.user_has_blocked_device(&d.upn).await.unwrap());

    // The same hardware under a new DeviceID, its old record blocked meanwhile: the
    // blocked record is not superseded.
    commit(device("BLK-2", Some("BLK-HW2"))).await.unwrap();
    set_status("BLK-2", DeviceStatus::Blocked).await;
    refused(
        commit(device("BLK-2B", Some("BLK-HW2"))).await,
        EnrollmentRefusal::DeviceBlocked,
    );
    assert_eq!(
        store.get_device("BLK-2").await.unwrap().map(|d| d.status),
        Some(DeviceStatus::Blocked)
    );
    assert_eq!(store.get_device("BLK-2B").await.unwrap(), None);

    // A freed DeviceID: Bob's enrollment commits first; Carol's, decided while it was
    // free, does not take it from him.
    commit(device("BLK-3", Some("BLK-HW3"))).await.unwrap();
    set_status("BLK-3", DeviceStatus::Removed).await;
    let mut bobs = device("BLK-3", Some("BLK-HW3B"));
    bobs.upn = "bob@example.com".into();
    commit(bobs.clone()).await.unwrap();
    let mut carols = device("BLK-3", Some("BLK-HW3C"));
    carols.upn = "carol@example.com".into();
    refused(
        commit(carols).await,
        EnrollmentRefusal::EnrolledByAnotherUser,
    );
    assert_eq!(store.get_device("BLK-3").await.unwrap(), Some(bobs));
}

/// A message computed from a read taken before another message settled a command (a
/// device's retry overlapping its first attempt) cannot bring the command back as open —
/// to be delivered again, a second wipe — and writes nothing; settling a settled command
/// again (a late Results added to it) still writes.
pub async fn a_stale_message_does_not_reopen_a_settled_command(store: Arc<dyn Store>) {
    use winmdm_core::commands::{CommandState, SentIn};
    use winmdm_core::session::{DevicePatch, ManagementUpdate, SessionWrite};
    store
        .commit_enrollment(&EnrollmentCommit {
            device: device("STALE-DEV", None),
            token: None,
        })
        .await
        .unwrap();
    let c = queued("STALE-DEV", "./Vendor/MSFT/RemoteWipe/doWipe");
    store.enqueue_command(&c).await.unwrap();
    let write = |c: winmdm_core::commands::QueuedCommand| {
        let store = store.clone();
        async move {
            store
                .save_management(&ManagementUpdate {
                    device_id: "STALE-DEV".into(),
                    device: DevicePatch::default(),
                    session: SessionWrite::Keep,
                    commands: vec![c],
                    profiles: Vec::new(),
                })
                .await
        }
    };
    // The first attempt sends it, and the device's answer settles it…
    let mut sent = c.clone();
    sent.state = CommandState::Sent;
    sent.sent_in = Some(SentIn {
        session_id: "1/a".into(),
        msg_id: 1,
    });
    write(sent.clone()).await.unwrap();
    let mut done = sent.clone();
    done.state = CommandState::Succeeded;
    done.status = Some(200);
    write(done.clone()).await.unwrap();
    // …then the overlapping retry, computed from the first read, sends it again.
    let mut again = sent.clone();
    again.sent_in = Some(SentIn {
        session_id: "1/b".into(),
        msg_id: 1,
    });
    assert!(matches!(
        write(again).await,
        Err(StoreError::Unavailable(_))
    ));
    let snapshot = store
        .load_management("STALE-DEV", "x")
        .await
        .unwrap()
        .unwrap();
    assert!(
        snapshot.open_commands.iter().all(|o| o.id != c.id),
        "not open again"
    );
    let stored = store
        .get_command("STALE-DEV", &c.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, done);
    // A late Results on the settled command is written.
    let mut late = done.clone();
    late.results.push(winmdm_core::commands::CommandResult {
        target: "./Vendor/MSFT/RemoteWipe/doWipe".into(),
        format: None,
        type_: None,
        data: Some("ok".into()),
    });
    write(late.clone()).await.unwrap();
    assert_eq!(
        store.get_command("STALE-DEV", &c.id).await.unwrap(),
        Some(late)
    );
}

fn profile(id: &str, name: &str, include: &[&str]) -> winmdm_core::profiles::Profile {
    use winmdm_core::commands::{ItemSpec, Verb};
    use winmdm_core::profiles::{Assignment, Profile, ProfileScope, Setting};
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    Profile {
        id: id.into(),
        name: name.into(),
        description: String::new(),
        scope: ProfileScope::Device,
        revision: 1,
        version: 1,
        settings: vec![Setting {
            verb: Verb::Replace,
            item: ItemSpec {
                target: "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera".into(),
                format: Some("int".into()),
                type_: None,
                data: Some("0".into()),
            },
        }],
        assignment: Assignment {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: Vec::new(),
        },
        template: None,
        created_at: now,
        updated_at: now,
    }
}

/// Profiles (unique names, conditional updates), groups, membership kept on the device
/// and indexed, and per-device profile states loaded with the management snapshot.
pub async fn profiles_groups_and_states(store: Arc<dyn Store>) {
    use winmdm_core::profiles::{DeliveryState, DeviceProfile, Group};
    use winmdm_core::session::{DevicePatch, ManagementUpdate, SessionWrite};

    // Profiles: ids and names (case-insensitively) are unique.
    let p1 = profile("p-camera", "Camera off", &["finance"]);
    store.create_profile(&p1).await.unwrap();
    assert!(matches!(
        store.create_profile(&p1).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .create_profile(&profile("p-other", "CAMERA OFF", &["all"]))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let p2 = profile("p-bitlocker", "BitLocker", &["all"]);
    store.create_profile(&p2).await.unwrap();
    assert_eq!(
        store.get_profile("p-camera").await.unwrap(),
        Some(p1.clone())
    );
    assert_eq!(store.get_profile("p-nope").await.unwrap(), None);
    let all = store.list_profiles().await.unwrap();
    assert_eq!(
        all.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["p-bitlocker", "p-camera"],
        "by id"
    );

    // Updates are conditional on the version read.
    let mut edited = p1.clone();
    edited.revision = 2;
    edited.version = 2;
    edited.name = "Camera disabled".into();
    assert!(matches!(
        store.update_profile(&edited, 7).await,
        Err(StoreError::Conflict(_))
    ));
    store.update_profile(&edited, 1).await.unwrap();
    assert_eq!(
        store.get_profile("p-camera").await.unwrap(),
        Some(edited.clone())
    );
    assert!(
        matches!(
            store.update_profile(&edited, 1).await,
            Err(StoreError::Conflict(_))
        ),
        "a second writer that read version 1 loses"
    );
    let mut clash = edited.clone();
    clash.name = "bitlocker".into();
    clash.version = 3;
    assert!(matches!(
        store.update_profile(&clash, 2).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.get_profile("p-camera").await.unwrap(),
        Some(edited.clone())
    );
    assert!(matches!(
        store
            .update_profile(&profile("p-nope", "Nope", &[]), 1)
            .await,
        Err(StoreError::NotFound(_))
    ));
    // The old name was freed by the rename.
    store
        .create_profile(&profile("p-camera-2", "camera off", &[]))
        .await
        .unwrap();
    assert!(store.delete_profile("p-camera-2").await.unwrap());
    assert!(!store.delete_profile("p-camera-2").await.unwrap());
    // ... and so is a deleted profile's.
    store
        .create_profile(&profile("p-camera-3", "Camera off", &[]))
        .await
        .unwrap();
    assert!(store.delete_profile("p-camera-3").await.unwrap());

    // Groups.
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let group = |name: &str| Group {
        name: name.into(),
        description: format!("the {name} team"),
        created_at: now,
    };
    store.create_group(&group("finance")).await.unwrap();
    store.create_group(&group("eng")).await.unwrap();
    assert!(matches!(
        store.create_group(&group("finance")).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.get_group("finance").await.unwrap(),
        Some(group("finance"))
    );
    assert_eq!(
        store
            .list_groups()
            .await
            .unwrap()
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>(),
        ["eng", "finance"]
    );

    // Membership lives on the device and is indexed per group, page by page.
    for i in 0..5 {
        store
            .commit_enrollment(&EnrollmentCommit {
                device: device(&format!("G-DEV-{i}"), None),
                token: None,
            })
            .await
            .unwrap();
    }
    let join = |id: String, changes: Vec<(String, bool)>| {
        let store = store.clone();
        async move {
            store
                .save_management(&ManagementUpdate {
                    device_id: id,
                    device: DevicePatch {
                        groups: changes,
                        ..DevicePatch::default()
                    },
                    session: SessionWrite::Keep,
                    commands: vec![],
                    profiles: vec![],
                })
                .await
                .unwrap()
        }
    };
    for i in 0..5 {
        join(
            format!("G-DEV-{i}"),
            vec![("finance".into(), true), ("eng".into(), i % 2 == 0)],
        )
        .await;
    }
    let d0 = store.get_device("G-DEV-0").await.unwrap().unwrap();
    assert_eq!(d0.groups, ["eng", "finance"], "sorted");
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_group_devices("finance", &PageRequest::new(after, Some(2)))
            .await
            .unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items);
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(
        seen,
        (0..5).map(|i| format!("G-DEV-{i}")).collect::<Vec<_>>()
    );
    let eng = store
        .list_group_devices("eng", &PageRequest::new(None, Some(50)))
        .await
        .unwrap();
    assert_eq!(eng.items, ["G-DEV-0", "G-DEV-2", "G-DEV-4"]);
    join("G-DEV-2".into(), vec![("eng".into(), false)]).await;
    let eng = store
        .list_group_devices("eng", &PageRequest::new(None, Some(50)))
        .await
        .unwrap();
    assert_eq!(
        eng.items,
        ["G-DEV-0", "G-DEV-4"],
        "leaving updates the index"
    );
    assert_eq!(
        store.get_device("G-DEV-2").await.unwrap().unwrap().groups,
        ["finance"]
    );
    assert!(store.delete_group("eng").await.unwrap());
    assert!(!store.delete_group("eng").await.unwrap());
    assert_eq!(store.get_group("eng").await.unwrap(), None);

    // Profile states: upserted by management writes, loaded with the snapshot in profile
    // id order, and listed per profile across devices page by page.
    let state = |dev: &str, p: &str, s: DeliveryState| {
        let mut st = DeviceProfile::new(dev, p, 1, now);
        st.state = s;
        st
    };
    store
        .save_management(&ManagementUpdate {
            device_id: "G-DEV-0".into(),
            device: DevicePatch::default(),
            session: SessionWrite::Keep,
            commands: vec![],
            profiles: vec![
                state("G-DEV-0", "p-camera", DeliveryState::Sent),
                state("G-DEV-0", "p-bitlocker", DeliveryState::Sent),
            ],
        })
        .await
        .unwrap();
    for i in 1..4 {
        let id = format!("G-DEV-{i}");
        store
            .save_management(&ManagementUpdate {
                device_id: id.clone(),
                device: DevicePatch::default(),
                session: SessionWrite::Keep,
                commands: vec![],
                profiles: vec![state(&id, "p-camera", DeliveryState::Verified)],
            })
            .await
            .unwrap();
    }
    let snap = store
        .load_management("G-DEV-0", "1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        snap.profiles,
        [
            state("G-DEV-0", "p-bitlocker", DeliveryState::Sent),
            state("G-DEV-0", "p-camera", DeliveryState::Sent)
        ]
    );
    // An upsert replaces the whole record.
    let mut verified = state("G-DEV-0", "p-camera", DeliveryState::Verified);
    verified.last_verified_at = Some(now);
    verified.applied = vec!["./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera".into()];
    store
        .save_management(&ManagementUpdate {
            device_id: "G-DEV-0".into(),
            device: DevicePatch::default(),
            session: SessionWrite::Keep,
            commands: vec![],
            profiles: vec![verified.clone()],
        })
        .await
        .unwrap();
    let snap = store
        .load_management("G-DEV-0", "1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snap.profiles[1], verified);
    assert!(
        store
            .load_management("G-DEV-4", "1")
            .await
            .unwrap()
            .unwrap()
            .profiles
            .is_empty()
    );
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_profile_devices("p-camera", &PageRequest::new(after, Some(3)))
            .await
            .unwrap();
        listed.extend(page.items);
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(
        listed
            .iter()
            .map(|s| s.device_id.as_str())
            .collect::<Vec<_>>(),
        ["G-DEV-0", "G-DEV-1", "G-DEV-2", "G-DEV-3"]
    );
    assert_eq!(listed[0], verified);
    let bl = store
        .list_profile_devices("p-bitlocker", &PageRequest::new(None, Some(10)))
        .await
        .unwrap();
    assert_eq!(bl.items.len(), 1);
    assert!(bl.next.is_none());
}

/// What to wait for before reading counters that a store keeps after its writes rather
/// than in them (DynamoDB's check-in counts, kept from the table's stream).
#[async_trait::async_trait]
pub trait Settle: Send + Sync {
    async fn settle(&self);
}

/// A store whose writes keep every counter: nothing to wait for.
pub struct InTheWrites;

#[async_trait::async_trait]
impl Settle for InTheWrites {
    async fn settle(&self) {}
}

/// The fleet counters follow enrollments, re-enrollments of the same hardware, check-ins
/// across hours and status changes, in the same writes (or, for what `settle` waits for,
/// after them); and a failed write changes none.
pub async fn fleet_counters_follow_device_writes(store: Arc<dyn Store>, settle: &dyn Settle) {
    use winmdm_core::fleet_stats::{Overview, overview_ranges};
    use winmdm_core::session::{DevicePatch, ManagementUpdate, SessionWrite};
    let now = OffsetDateTime::now_utc();
    let overview = |store: Arc<dyn Store>| async move {
        settle.settle().await;
        let c = store.read_counters(&overview_ranges(now)).await.unwrap();
        Overview::from_counters(now, &c)
    };
    // Enrolled "now", the same now the overview is read for: a fresh reading of the clock
    // could fall on the next day (the test would then run across midnight).
    let enrolled_now = |id: &str, hw: &str| Device {
        enrolled_at: now.replace_nanosecond(0).unwrap(),
        ..device(id, Some(hw))
    };
    for (id, hw) in [("CNT-A", "HW-CA"), ("CNT-B", "HW-CB"), ("CNT-C", "HW-CC")] {
        store
            .commit_enrollment(&EnrollmentCommit {
                device: enrolled_now(id, hw),
                token: None,
            })
            .await
            .unwrap();
    }
    let o = overview(store.clone()).await;
    assert_eq!(o.by_status["enrolled"], 3);
    assert_eq!(o.last_seen.never, 3);
    assert_eq!(o.enrollments_per_day.last().unwrap().1, 3);
    assert_eq!(o.expiring_certificates, 0);

    // Same hardware under a new id: the old record leaves every count but the events.
    let mut again = enrolled_now("CNT-A2", "HW-CA");
    again.cert.not_after = now + Duration::days(10);
    store
        .commit_enrollment(&EnrollmentCommit {
            device: again,
            token: None,
        })
        .await
        .unwrap();
    let o = overview(store.clone()).await;
    assert_eq!(o.by_status["enrolled"], 3);
    assert_eq!(o.last_seen.never, 3);
    assert_eq!(o.enrollments_per_day.last().unwrap().1, 4);
    assert_eq!(o.expiring_certificates, 1);

    let patch = |id: &str, device: DevicePatch| ManagementUpdate {
        device_id: id.into(),
        device,
        session: SessionWrite::Keep,
        commands: Vec::new(),
        profiles: Vec::new(),
    };
    store
        .save_management(&patch(
            "CNT-B",
            DevicePatch {
                last_seen_at: Some(now),
                ..DevicePatch::default()
            },
        ))
        .await
        .unwrap();
    store
        .save_management(&patch(
            "CNT-C",
            DevicePatch {
                status: Some(DeviceStatus::Blocked),
                last_seen_at: Some(now - Duration::days(2)),
                ..DevicePatch::default()
            },
        ))
        .await
        .unwrap();
    // A write to an unknown device fails and counts nothing.
    assert!(
        store
            .save_management(&patch(
                "CNT-NONE",
                DevicePatch {
                    last_seen_at: Some(now),
                    ..DevicePatch::default()
                },
            ))
            .await
            .is_err()
    );
    let o = overview(store.clone()).await;
    assert_eq!(o.by_status["enrolled"], 2);
    assert_eq!(o.by_status["blocked"], 1);
    assert_eq!(o.last_seen.never, 1);
    assert_eq!(o.last_seen.hour, 1);
    assert_eq!(o.last_seen.day, 1);
    assert_eq!(o.last_seen.week, 2);

    store
        .save_management(&patch(
            "CNT-C",
            DevicePatch {
                status: Some(DeviceStatus::Removed),
                ..DevicePatch::default()
            },
        ))
        .await
        .unwrap();
    let o = overview(store.clone()).await;
    assert_eq!(o.by_status["blocked"], 0);
    assert_eq!(o.by_status["removed"], 1);
    assert_eq!(o.last_seen.week, 1);
}

/// A command recorded as failed leaves a note the overview lists, newest first, once per
/// command; succeeded commands leave none.
pub async fn failed_commands_are_noted(store: Arc<dyn Store>) {
    use winmdm_core::commands::CommandState;
    use winmdm_core::session::{DevicePatch, ManagementUpdate, SessionWrite};
    store
        .commit_enrollment(&EnrollmentCommit {
            device: device("FAIL-DEV", Some("HW-F")),
            token: None,
        })
        .await
        .unwrap();
    assert!(store.recent_failed_commands(10).await.unwrap().is_empty());
    let mut settled = Vec::new();
    for (i, (target, state)) in [
        ("./Vendor/MSFT/One", CommandState::Failed),
        ("./Vendor/MSFT/Two", CommandState::Succeeded),
        ("./Vendor/MSFT/Three", CommandState::Failed),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = queued("FAIL-DEV", target);
        store.enqueue_command(&c).await.unwrap();
        c.state = state;
        c.status = Some(if state == CommandState::Failed {
            404
        } else {
            200
        });
        c.updated_at = OffsetDateTime::now_utc() + Duration::seconds(i as i64);
        store
            .save_management(&ManagementUpdate {
                device_id: "FAIL-DEV".into(),
                device: DevicePatch::default(),
                session: SessionWrite::Keep,
                commands: vec![c.clone()],
                profiles: Vec::new(),
            })
            .await
            .unwrap();
        settled.push(c);
    }
    let notes = store.recent_failed_commands(10).await.unwrap();
    let what: Vec<&str> = notes.iter().map(|n| n.what.as_str()).collect();
    assert_eq!(what, ["Get ./Vendor/MSFT/Three", "Get ./Vendor/MSFT/One"]);
    assert_eq!(notes[0].device_id, "FAIL-DEV");
    assert_eq!(notes[0].command_id, settled[2].id);
    assert_eq!(notes[0].status, Some(404));
    assert_eq!(store.recent_failed_commands(1).await.unwrap().len(), 1);
}

/// Each profile's counts by delivery state follow the state records the writes replace:
/// a state moves its device from one count to the next, a removed one leaves them all,
/// and rewriting the same state moves nothing.
pub async fn profile_counters_follow_state_writes(store: Arc<dyn Store>) {
    use winmdm_core::fleet_stats::{profile_counts, profile_ranges};
    use winmdm_core::profiles::{DeliveryState, DeviceProfile};
    use winmdm_core::session::{DevicePatch, ManagementUpdate, SessionWrite};
    let now = OffsetDateTime::now_utc();
    for (id, hw) in [("PC-A", "HW-PA"), ("PC-B", "HW-PB")] {
        store
            .commit_enrollment(&EnrollmentCommit {
                device: device(id, Some(hw)),
                token: None,
            })
            .await
            .unwrap();
    }
    let write = |device: &'static str, states: Vec<(&'static str, DeliveryState)>| {
        let store = store.clone();
        async move {
            let profiles = states
                .into_iter()
                .map(|(p, st)| {
                    let mut s = DeviceProfile::new(device, p, 1, now);
                    s.state = st;
                    s
                })
                .collect();
            store
                .save_management(&ManagementUpdate {
                    device_id: device.into(),
                    device: DevicePatch::default(),
                    session: SessionWrite::Keep,
                    commands: vec![],
                    profiles,
                })
                .await
                .unwrap();
        }
    };
    let counts = |p: &'static str| {
        let store = store.clone();
        async move {
            let c = store.read_counters(&profile_ranges(Some(p))).await.unwrap();
            profile_counts(&c).remove(p).unwrap_or_default()
        }
    };
    let map = |pairs: &[(&str, i64)]| -> std::collections::BTreeMap<String, i64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    };
    write(
        "PC-A",
        vec![("P1", DeliveryState::Sent), ("P2", DeliveryState::Sent)],
    )
    .await;
    write("PC-B", vec![("P1", DeliveryState::Sent)]).await;
    assert_eq!(counts("P1").await, map(&[("sent", 2)]));
    write("PC-A", vec![("P1", DeliveryState::Verified)]).await;
    write("PC-B", vec![("P1", DeliveryState::Failed)]).await;
    write("PC-B", vec![("P1", DeliveryState::Failed)]).await;
    assert_eq!(counts("P1").await, map(&[("failed", 1), ("verified", 1)]));
    assert_eq!(counts("P2").await, map(&[("sent", 1)]));
    write("PC-A", vec![("P2", DeliveryState::Removed)]).await;
    assert_eq!(counts("P2").await, map(&[]));
    // The whole catalog's counts in one read.
    let all = profile_counts(&store.read_counters(&profile_ranges(None)).await.unwrap());
    assert_eq!(all.len(), 1);
    assert_eq!(all["P1"], map(&[("failed", 1), ("verified", 1)]));
}
