//! OMA-DM digest sessions as two kinds of client run them — Windows and a strict OMA-DM 1.2
//! client — on the embedded store and on DynamoDB (moto): complete sessions, nonce
//! rotation, and every way a device used to get locked out, each followed by a session
//! that completes and settles a queued command.

use serde_json::json;
use winmdm_e2e::dm::{ClientMode, DmClient, Reply};
use winmdm_e2e::moto::Moto;
use winmdm_e2e::{EnrolledDevice, TestServer};
use winmdm_wire::syncml::{Command, Item, ItemCommand, ItemVerb, Meta, Results};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Embedded,
    Dynamo,
}

/// A server on the chosen store (the local CA in both cases), and moto if it needs one.
async fn server(backend: Backend) -> (TestServer, Option<Moto>) {
    match backend {
        Backend::Embedded => (TestServer::start().await, None),
        Backend::Dynamo => {
            winmdm_e2e::moto::aws_test_environment();
            let moto = Moto::start().await;
            let endpoint = moto.endpoint.clone();
            let s = TestServer::start_with(|o| {
                o.table = Some(format!("winmdm-dm-{}", uuid::Uuid::new_v4().simple()));
                o.dynamodb_endpoint = Some(endpoint);
                o.create_table = true;
                o.region = Some("us-east-1".into());
            })
            .await;
            (s, Some(moto))
        }
    }
}

/// Sends one message and lets the client take what the reply's header offers.
async fn exchange(s: &TestServer, c: &mut DmClient, xml: &str) -> Reply {
    let r = s.syncml(xml).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let reply = Reply::parse(&r.body);
    assert_eq!(reply.header_status().msg_ref, c.msg_id.to_string());
    assert_eq!(
        reply.msg.hdr.msg_id,
        c.msg_id.to_string(),
        "the server's MsgID counts up with the client's"
    );
    c.take_next_nonce(&reply);
    reply
}

/// Runs a whole session: package #1, then answers every command (Gets with "v") until the
/// server ends the session. Returns the header status of each reply.
async fn run_session(s: &TestServer, c: &mut DmClient, hw: &str) -> Vec<String> {
    c.start_session();
    let xml = c.message(|c| c.package1("user", hw), true);
    let mut reply = exchange(s, c, &xml).await;
    let mut codes = vec![reply.header_status().data.clone()];
    for _ in 0..20 {
        if reply.ends_session() || !codes.last().unwrap().starts_with('2') {
            return codes;
        }
        let xml = c.message(|c| c.answer(&reply, |_| 200, |_| "v".into()), true);
        reply = exchange(s, c, &xml).await;
        codes.push(reply.header_status().data.clone());
    }
    panic!("the session did not end: {codes:?}");
}

async fn queue(s: &TestServer, device: &str, body: serde_json::Value) -> String {
    let r = s
        .admin("POST", &format!("/devices/{device}/commands"), Some(body))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

async fn command(s: &TestServer, device: &str, id: &str) -> serde_json::Value {
    let r = s
        .admin("GET", &format!("/devices/{device}/commands/{id}"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn client(dev: &EnrolledDevice, mode: ClientMode) -> DmClient {
    dev.dm_client().with_mode(mode)
}

/// A session that completes and settles a freshly queued Get.
async fn settles_a_command(s: &TestServer, dev: &EnrolledDevice, c: &mut DmClient) {
    let id = queue(
        s,
        dev.id(),
        json!({"verb": "Get", "target": "./DevDetail/SwV"}),
    )
    .await;
    let codes = run_session(s, c, &dev.device.hw_dev_id).await;
    assert!(codes.iter().all(|c| c == "200"), "{codes:?}");
    let cmd = command(s, dev.id(), &id).await;
    assert_eq!(cmd["state"], "succeeded", "{cmd}");
    assert_eq!(cmd["results"][0]["data"], "v");
}

async fn full_sessions(backend: Backend, mode: ClientMode) {
    let (s, _moto) = server(backend).await;
    let dev = s.enroll_device().await;
    let mut c = client(&dev, mode);
    let get = queue(
        &s,
        dev.id(),
        json!({"verb": "Get", "target": "./DevDetail/SwV"}),
    )
    .await;
    let replace = queue(
        &s,
        dev.id(),
        json!({"verb": "Replace", "target": "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera", "format": "int", "data": "0"}),
    )
    .await;
    let atomic = queue(
        &s,
        dev.id(),
        json!({"verb": "Atomic", "commands": [
            {"verb": "Replace", "target": "./Device/Vendor/MSFT/Policy/Config/Browser/AllowCookies", "format": "int", "data": "1"},
            {"verb": "Replace", "target": "./Device/Vendor/MSFT/Policy/Config/Browser/AllowDoNotTrack", "format": "int", "data": "1"}
        ]}),
    )
    .await;
    let codes = run_session(&s, &mut c, &dev.device.hw_dev_id).await;
    assert!(codes.iter().all(|c| c == "200"), "{codes:?}");
    assert_eq!(command(&s, dev.id(), &get).await["state"], "succeeded");
    assert_eq!(command(&s, dev.id(), &replace).await["state"], "succeeded");
    match mode {
        ClientMode::Windows => {
            assert_eq!(command(&s, dev.id(), &atomic).await["state"], "succeeded")
        }
        ClientMode::Strict => {
            // No Status for the Atomic: it is sent again, but only up to the attempt limit.
            assert_eq!(command(&s, dev.id(), &atomic).await["state"], "sent");
            for _ in 0..3 {
                let codes = run_session(&s, &mut c, &dev.device.hw_dev_id).await;
                assert!(codes.iter().all(|c| c == "200"), "{codes:?}");
            }
            let a = command(&s, dev.id(), &atomic).await;
            assert_eq!(a["state"], "failed", "{a}");
            assert_eq!(a["reason"], "no status from device");
            assert_eq!(a["attempts"], 3);
        }
    }
    // The nonce rotates from session to session, and every session still authenticates.
    for _ in 0..2 {
        settles_a_command(&s, &dev, &mut c).await;
    }
    s.shutdown().await;
}

#[tokio::test]
async fn windows_client_embedded() {
    full_sessions(Backend::Embedded, ClientMode::Windows).await;
}

#[tokio::test]
async fn strict_client_embedded() {
    full_sessions(Backend::Embedded, ClientMode::Strict).await;
}

#[tokio::test]
async fn windows_client_dynamodb() {
    full_sessions(Backend::Dynamo, ClientMode::Windows).await;
    lockouts(Backend::Dynamo, ClientMode::Windows).await;
}

#[tokio::test]
async fn strict_client_dynamodb() {
    full_sessions(Backend::Dynamo, ClientMode::Strict).await;
    lockouts(Backend::Dynamo, ClientMode::Strict).await;
}

#[tokio::test]
async fn lockouts_windows_embedded() {
    lockouts(Backend::Embedded, ClientMode::Windows).await;
}

#[tokio::test]
async fn lockouts_strict_embedded() {
    lockouts(Backend::Embedded, ClientMode::Strict).await;
}

/// Each way a device used to be locked out, followed by a session that settles a command.
async fn lockouts(backend: Backend, mode: ClientMode) {
    let (s, _moto) = server(backend).await;
    let dev = s.enroll_device().await;
    let mut c = client(&dev, mode);
    settles_a_command(&s, &dev, &mut c).await;

    // 1. The reply that carried the NextNonce was lost: the device starts its next
    //    session with the nonce it had.
    c.start_session();
    let held = c.digest.as_ref().unwrap().nonce_b64.clone();
    let xml = c.message(|c| c.package1("user", "HW"), true);
    let r = s.syncml(&xml).await;
    assert_eq!(Reply::parse(&r.body).header_status().data, "200");
    // ...and the reply never arrives.
    c.lose_next_nonce();
    c.digest.as_mut().unwrap().nonce_b64 = held;
    settles_a_command(&s, &dev, &mut c).await;

    // 2. No usable nonce at all: 401 with a challenge, then a session that completes.
    c.digest.as_mut().unwrap().nonce_b64 = "AAAAAAAAAAAAAAAAAAAAAA==".into();
    c.lose_next_nonce();
    let codes = run_session(&s, &mut c, "HW").await;
    assert_eq!(codes, ["401"]);
    settles_a_command(&s, &dev, &mut c).await;

    // 3. An attacker's Cred-less request naming the device, between two sessions: a
    //    challenge that changes nothing stored.
    let before = s
        .admin("GET", &format!("/devices/{}", dev.id()), None)
        .await
        .json();
    let mut attacker = DmClient::new(dev.id(), &dev.management_url);
    attacker.start_session();
    let r = s
        .syncml(&attacker.message(|c| c.package1("none", "HW"), true))
        .await;
    let reply = Reply::parse(&r.body);
    assert_eq!(reply.header_status().data, "407");
    assert!(reply.header_status().chal.is_some());
    let after = s
        .admin("GET", &format!("/devices/{}", dev.id()), None)
        .await
        .json();
    assert_eq!(before, after, "an unauthenticated request writes nothing");
    settles_a_command(&s, &dev, &mut c).await;

    // 4. A reused SessionID (Windows' counter restarting after a reset; the strict client
    //    always uses 1) starts a new session.
    c.session_id = 0;
    settles_a_command(&s, &dev, &mut c).await;
    c.session_id = 0;
    settles_a_command(&s, &dev, &mut c).await;

    // 5. A client that stops sending Cred after the first message gets a 407 and a 407
    //    for each command it sent, resends them with Cred, and its Results settle.
    let id = queue(
        &s,
        dev.id(),
        json!({"verb": "Get", "target": "./DevDetail/SwV"}),
    )
    .await;
    c.start_session();
    let xml = c.message(|c| c.package1("user", "HW"), true);
    let reply = exchange(&s, &mut c, &xml).await;
    assert_eq!(reply.header_status().data, "200");
    assert_eq!(reply.item_commands().len(), 1);
    c.send_cred = false;
    let answer = c.answer(&reply, |_| 200, |_| "late".into());
    let xml = c.message(|_| answer.clone(), true);
    let refused = exchange(&s, &mut c, &xml).await;
    assert_eq!(refused.header_status().data, "407");
    let not_executed: Vec<_> = refused.statuses().into_iter().skip(1).collect();
    assert!(
        not_executed
            .iter()
            .any(|st| st.cmd == "Results" && st.data == "407"),
        "a 407 tells the client the Results were not taken"
    );
    assert!(refused.commands().is_empty());
    assert_eq!(command(&s, dev.id(), &id).await["state"], "sent");
    c.send_cred = true;
    let xml = c.message(|_| answer, true);
    let reply = exchange(&s, &mut c, &xml).await;
    assert_eq!(reply.header_status().data, "200");
    let cmd = command(&s, dev.id(), &id).await;
    assert_eq!(cmd["state"], "succeeded");
    assert_eq!(cmd["results"][0]["data"], "late");
    settles_a_command(&s, &dev, &mut c).await;
    s.shutdown().await;
}

/// A recorded message of a digest session cannot be played into it again, and the
/// per-session nonce offered in every reply is the same one.
#[tokio::test]
async fn a_recorded_message_is_not_accepted_again_in_its_session() {
    let s = TestServer::start().await;
    let dev = s.enroll_device().await;
    let mut c = client(&dev, ClientMode::Windows);
    let id = queue(
        &s,
        dev.id(),
        json!({"verb": "Get", "target": "./DevDetail/SwV"}),
    )
    .await;
    c.start_session();
    let xml = c.message(|c| c.package1("user", "HW"), true);
    let first = exchange(&s, &mut c, &xml).await;
    let offered = first.header_status().chal.clone().unwrap().next_nonce;
    assert!(offered.is_some());
    assert_eq!(first.item_commands().len(), 1);
    // The attacker replays package #1 of the live session (same MsgID 1, same Cred) —
    // without its Alert 1201 it cannot pass as a new session.
    let replay: String = xml.replace("<Alert><CmdID>1</CmdID><Data>1201</Data></Alert>", "");
    assert_ne!(replay, xml, "the replay drops the session-opening alert");
    let r = Reply::parse(&s.syncml(&replay).await.body);
    assert_eq!(r.header_status().data, "401");
    let xml = c.message(|c| c.answer(&first, |_| 200, |_| "v".into()), true);
    let second = exchange(&s, &mut c, &xml).await;
    assert_eq!(second.header_status().data, "200");
    assert_eq!(
        second.header_status().chal.clone().unwrap().next_nonce,
        offered,
        "one NextNonce per session"
    );
    assert_eq!(command(&s, dev.id(), &id).await["state"], "succeeded");
    assert!(second.ends_session());
    s.shutdown().await;
}

/// A chunked Results item answering `get` (CmdID `get_ref` in server message `msg_ref`).
fn results_chunk(
    c: &mut DmClient,
    msg_ref: &str,
    get_ref: &str,
    data: String,
    more: bool,
) -> Command {
    Command::Results(Results {
        cmd_id: c.cmd_id(),
        msg_ref: Some(msg_ref.into()),
        cmd_ref: get_ref.into(),
        meta: None,
        items: vec![Item {
            source: Some("./Vendor/MSFT/Big".into()),
            meta: Some(Meta {
                format: Some("chr".into()),
                ..Meta::default()
            }),
            data: Some(data),
            more_data: more,
            ..Item::default()
        }],
    })
}

/// What a device may make the server buffer is bounded: objects open at once, and the
/// size of an object — on DynamoDB below its 400 KB item limit, so a large object gets a
/// 413 instead of breaking every later session of the device.
async fn reassembly_is_bounded(backend: Backend) {
    let (s, _moto) = server(backend).await;
    let dev = s.enroll_device().await;
    let mut c = client(&dev, ClientMode::Windows);

    // Six objects opened at once: four are buffered (213), the rest refused (413).
    c.start_session();
    let xml = c.message(|c| c.package1("user", "HW"), true);
    exchange(&s, &mut c, &xml).await;
    let xml = c.message(
        |c| {
            (0..6)
                .map(|i| {
                    Command::Item(ItemCommand {
                        verb: ItemVerb::Replace,
                        cmd_id: c.cmd_id(),
                        meta: None,
                        items: vec![Item {
                            source: Some(format!("./Vendor/MSFT/Obj{i}")),
                            data: Some("x".repeat(100)),
                            more_data: true,
                            ..Item::default()
                        }],
                    })
                })
                .collect()
        },
        false,
    );
    let reply = exchange(&s, &mut c, &xml).await;
    let codes: Vec<&str> = reply
        .statuses()
        .iter()
        .filter(|st| st.cmd == "Replace")
        .map(|st| st.data.as_str())
        .collect();
    assert_eq!(codes, ["213", "213", "213", "213", "413", "413"]);

    // A 600 KB result in three chunks.
    let id = queue(
        &s,
        dev.id(),
        json!({"verb": "Get", "target": "./Vendor/MSFT/Big"}),
    )
    .await;
    c.start_session();
    let xml = c.message(|c| c.package1("user", "HW"), true);
    let reply = exchange(&s, &mut c, &xml).await;
    let get_ref = reply.item_commands()[0].cmd_id.clone();
    let msg_ref = reply.msg.hdr.msg_id.clone();
    let chunk = "y".repeat(200 * 1024);
    let mut codes = Vec::new();
    for i in 0..3 {
        let last = i == 2;
        let first = i == 0;
        let prev_get = get_ref.clone();
        let xml = c.message(
            |c| {
                let mut out = Vec::new();
                if first {
                    out.push(c.status_for(&reply, &prev_get, "Get", 200));
                }
                out.push(results_chunk(c, &msg_ref, &prev_get, chunk.clone(), !last));
                out
            },
            last,
        );
        let r = exchange(&s, &mut c, &xml).await;
        assert_eq!(r.header_status().data, "200");
        codes.push(
            r.statuses()
                .iter()
                .find(|st| st.cmd == "Results")
                .map(|st| st.data.clone()),
        );
    }
    let cmd = command(&s, dev.id(), &id).await;
    assert_eq!(cmd["state"], "succeeded", "its Status settled it");
    // Past what a command can store (and on DynamoDB what an item can hold): 413 for
    // the rest of the object, and a result that says so.
    assert_eq!(
        codes,
        [Some("213".into()), Some("413".into()), Some("413".into())]
    );
    let data = cmd["results"][0]["data"].as_str().unwrap_or_default();
    assert!(data.contains("larger than"), "{data}");
    assert_eq!(cmd["results"].as_array().unwrap().len(), 1);
    // The device's sessions go on.
    settles_a_command(&s, &dev, &mut c).await;
    s.shutdown().await;
}

#[tokio::test]
async fn reassembly_is_bounded_embedded() {
    reassembly_is_bounded(Backend::Embedded).await;
}

#[tokio::test]
async fn reassembly_is_bounded_dynamodb() {
    reassembly_is_bounded(Backend::Dynamo).await;
}

/// What a device sends besides values counts against the limits too: addresses of
/// Results items (stored with the command), sent again and again within a session, and
/// the addresses of large objects it opens (buffered in the session record). On DynamoDB
/// an uncounted address used to overfill the 400 KB item and fail the write (500).
async fn device_supplied_addresses_are_bounded(backend: Backend) {
    let (s, _moto) = server(backend).await;
    let dev = s.enroll_device().await;
    let mut c = client(&dev, ClientMode::Windows);
    let long = |i: usize| format!("./Vendor/MSFT/{i}/{}", "a".repeat(300 * 1024));

    let id = queue(
        &s,
        dev.id(),
        json!({"verb": "Get", "target": "./DevDetail/SwV"}),
    )
    .await;
    c.start_session();
    let xml = c.message(|c| c.package1("user", "HW"), true);
    let reply = exchange(&s, &mut c, &xml).await;
    let get_ref = reply.item_commands()[0].cmd_id.clone();
    let msg_ref = reply.msg.hdr.msg_id.clone();
    // Three items of 300 KB addresses and no values, answered twice in one session.
    for round in 0..2 {
        let xml = c.message(
            |c| {
                let mut out = Vec::new();
                if round == 0 {
                    out.push(c.status_for(&reply, &get_ref, "Get", 200));
                }
                out.push(Command::Results(Results {
                    cmd_id: c.cmd_id(),
                    msg_ref: Some(msg_ref.clone()),
                    cmd_ref: get_ref.clone(),
                    meta: None,
                    items: (0..3)
                        .map(|i| Item {
                            source: Some(long(i)),
                            ..Item::default()
                        })
                        .collect(),
                }));
                out
            },
            false,
        );
        let r = exchange(&s, &mut c, &xml).await;
        assert_eq!(r.header_status().data, "200", "round {round}");
        let code = r
            .statuses()
            .iter()
            .find(|st| st.cmd == "Results")
            .map(|st| st.data.clone());
        assert_eq!(code.as_deref(), Some("413"), "round {round}");
    }
    let xml = c.message(|_| Vec::new(), true);
    assert!(exchange(&s, &mut c, &xml).await.ends_session());
    let cmd = command(&s, dev.id(), &id).await;
    assert_eq!(cmd["state"], "succeeded");
    let stored = serde_json::to_string(&cmd["results"]).unwrap().len();
    assert!(
        stored <= winmdm_core::commands::MAX_RESULTS_BYTES + 1024,
        "{stored} bytes of results kept"
    );
    assert!(
        cmd["results"]
            .as_array()
            .unwrap()
            .iter()
            .skip(1)
            .all(|r| r["target"].as_str().unwrap().len() <= 256),
        "refused items keep a short address"
    );

    // Large objects opened under 300 KB addresses: refused once they would overfill the
    // session record, and the session goes on.
    c.start_session();
    let xml = c.message(|c| c.package1("user", "HW"), true);
    exchange(&s, &mut c, &xml).await;
    for round in 0..2 {
        let xml = c.message(
            |c| {
                (0..3)
                    .map(|i| {
                        Command::Item(ItemCommand {
                            verb: ItemVerb::Replace,
                            cmd_id: c.cmd_id(),
                            meta: None,
                            items: vec![Item {
                                source: Some(long(i + 3 * round)),
                                data: Some("x".repeat(10)),
                                more_data: true,
                                ..Item::default()
                            }],
                        })
                    })
                    .collect()
            },
            false,
        );
        let r = exchange(&s, &mut c, &xml).await;
        assert_eq!(r.header_status().data, "200", "round {round}");
        assert!(
            r.statuses()
                .iter()
                .filter(|st| st.cmd == "Replace")
                .all(|st| st.data == "213" || st.data == "413"),
        );
    }
    let xml = c.message(|_| Vec::new(), true);
    assert!(exchange(&s, &mut c, &xml).await.ends_session());
    settles_a_command(&s, &dev, &mut c).await;
    s.shutdown().await;
}

#[tokio::test]
async fn device_supplied_addresses_are_bounded_embedded() {
    device_supplied_addresses_are_bounded(Backend::Embedded).await;
}

#[tokio::test]
async fn device_supplied_addresses_are_bounded_dynamodb() {
    device_supplied_addresses_are_bounded(Backend::Dynamo).await;
}

/// A status repeated for a command that is already settled changes nothing: not its
/// outcome (a Get answered 200, then 500), and an Add answered 200 and then 418 is not
/// queued again as a Replace.
#[tokio::test]
async fn a_status_for_a_settled_command_changes_nothing() {
    let s = TestServer::start().await;
    let dev = s.enroll_device().await;
    let mut c = client(&dev, ClientMode::Windows);
    let get = queue(
        &s,
        dev.id(),
        json!({"verb": "Get", "target": "./DevDetail/SwV"}),
    )
    .await;
    let add = queue(
        &s,
        dev.id(),
        json!({"verb": "Add", "target": "./Vendor/MSFT/Policy/Config/X", "format": "int", "data": "1"}),
    )
    .await;
    c.start_session();
    let xml = c.message(|c| c.package1("user", "HW"), true);
    let reply = exchange(&s, &mut c, &xml).await;
    assert_eq!(reply.item_commands().len(), 2);
    let xml = c.message(|c| c.answer(&reply, |_| 200, |_| "v".into()), false);
    exchange(&s, &mut c, &xml).await;
    // The same statuses again, now 500 for the Get and 418 for the Add.
    let refs: Vec<(String, String)> = reply
        .item_commands()
        .iter()
        .map(|ic| (ic.cmd_id.clone(), format!("{:?}", ic.verb)))
        .collect();
    let xml = c.message(
        |c| {
            refs.iter()
                .map(|(r, verb)| {
                    let code = if verb == "Get" { 500 } else { 418 };
                    c.status_for(&reply, r, verb, code)
                })
                .collect()
        },
        true,
    );
    let last = exchange(&s, &mut c, &xml).await;
    assert!(last.item_commands().is_empty(), "nothing is sent again");
    assert!(last.ends_session());
    for (id, verb) in [(&get, "Get"), (&add, "Add")] {
        let cmd = command(&s, dev.id(), id).await;
        assert_eq!(cmd["state"], "succeeded", "{verb}: {cmd}");
        assert_eq!(cmd["status"], 200, "{verb}: {cmd}");
    }
    s.shutdown().await;
}
