//! An enrolled emulated device runs OMA-DM sessions against `winmdm-local` over HTTP with
//! its digest credentials, while an operator queues commands through the admin API.

use serde_json::json;
use winmdm_e2e::dm::{DmClient, Reply};
use winmdm_e2e::{EnrolledDevice, TestServer};
use winmdm_wire::syncml::{Alert, Command, Item, ItemVerb, Meta, Results};

async fn send(s: &TestServer, xml: &str) -> Reply {
    let r = s.syncml(xml).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.syncml.dm+xml")
    );
    assert_eq!(
        r.header("content-length")
            .map(|l| l.parse::<usize>().unwrap()),
        Some(r.body.len())
    );
    assert!(r.header("transfer-encoding").is_none());
    Reply::parse(&r.body)
}

/// Opens a session with package #1 and returns the first reply.
async fn open_session(s: &TestServer, c: &mut DmClient, login: &str, hw: &str) -> Reply {
    c.start_session();
    let xml = c.message(|c| c.package1(login, hw), true);
    let reply = send(s, &xml).await;
    c.take_next_nonce(&reply);
    reply
}

async fn queue(s: &TestServer, device: &str, body: serde_json::Value) -> String {
    let r = s
        .admin("POST", &format!("/devices/{device}/commands"), Some(body))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let j = r.json();
    assert_eq!(j["state"], "pending");
    j["id"].as_str().unwrap().to_owned()
}

async fn command(s: &TestServer, device: &str, id: &str) -> serde_json::Value {
    let r = s
        .admin("GET", &format!("/devices/{device}/commands/{id}"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn check_reply_shape(reply: &Reply, c: &DmClient) {
    let h = &reply.msg.hdr;
    assert_eq!(
        h.session_id,
        format!("{:X}", c.session_id),
        "SessionID copied verbatim"
    );
    assert_eq!(
        h.target.loc_uri, c.device_id,
        "Target is the client's Source"
    );
    assert_eq!(
        h.source.loc_uri, c.server_url,
        "Source is the client's Target"
    );
    let hs = reply.header_status();
    assert_eq!(hs.cmd_ref, "0");
    assert_eq!(hs.msg_ref, c.msg_id.to_string());
    let mut ids: Vec<&str> = reply.msg.commands.iter().map(|c| c.cmd_id()).collect();
    let n = ids.len();
    assert!(ids.iter().all(|i| *i != "0" && !i.is_empty()));
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "CmdIDs are unique in a message");
}

#[tokio::test]
async fn first_package_then_queued_commands_come_back_with_statuses_and_results() {
    let s = TestServer::start().await;
    let dev = s.enroll_device().await;
    let mut c = dev.dm_client();

    // Package #1 with nothing queued: statuses only, and the session ends.
    let reply = open_session(&s, &mut c, "user", &dev.device.hw_dev_id).await;
    check_reply_shape(&reply, &c);
    assert_eq!(reply.msg.hdr.msg_id, "1");
    assert_eq!(reply.header_status().data, "200");
    let statuses = reply.statuses();
    let refs: Vec<(&str, &str)> = statuses[1..]
        .iter()
        .map(|s| (s.cmd_ref.as_str(), s.cmd.as_str()))
        .collect();
    assert_eq!(
        refs,
        [("1", "Alert"), ("2", "Alert"), ("3", "Replace")],
        "one Status per command, in order"
    );
    assert!(statuses.iter().all(|s| s.data == "200"));
    assert!(reply.ends_session());

    let d = s
        .admin("GET", &format!("/devices/{}", dev.id()), None)
        .await
        .json();
    assert!(d["last_seen_at"].is_string());

    // The operator queues commands; the next session delivers them in order.
    let get = queue(
        &s,
        dev.id(),
        json!({"verb": "Get", "target": "./DevDetail/SwV"}),
    )
    .await;
    let replace = queue(
        &s,
        dev.id(),
        json!({"verb": "Replace", "target": "./Device/Vendor/MSFT/Policy/Config/Experience/AllowCortana", "format": "int", "data": "0"}),
    )
    .await;
    let reboot = queue(&s, dev.id(), json!({"action": "reboot"})).await;
    assert_eq!(command(&s, dev.id(), &get).await["state"], "pending");

    let reply = open_session(&s, &mut c, "user", &dev.device.hw_dev_id).await;
    check_reply_shape(&reply, &c);
    assert!(reply.msg.final_);
    let sent = reply.item_commands();
    let shape: Vec<(ItemVerb, &str)> = sent
        .iter()
        .map(|i| (i.verb, i.items[0].target.as_deref().unwrap()))
        .collect();
    assert_eq!(
        shape,
        [
            (ItemVerb::Get, "./DevDetail/SwV"),
            (
                ItemVerb::Replace,
                "./Device/Vendor/MSFT/Policy/Config/Experience/AllowCortana"
            ),
            (ItemVerb::Exec, "./Device/Vendor/MSFT/Reboot/RebootNow"),
        ]
    );
    assert_eq!(
        sent[1].items[0].meta.as_ref().unwrap().format.as_deref(),
        Some("int")
    );
    assert_eq!(command(&s, dev.id(), &get).await["state"], "sent");

    // The device answers: statuses for all, Results for the Get.
    let xml = c.message(
        |c| c.answer(&reply, |_| 200, |_| "10.0.22621.4317".into()),
        true,
    );
    let reply = send(&s, &xml).await;
    check_reply_shape(&reply, &c);
    assert_eq!(
        reply.msg.hdr.msg_id, "2",
        "server MsgID counts up per session"
    );
    assert_eq!(reply.statuses().len(), 1, "no Status for Status or Results");
    assert!(reply.ends_session());

    let g = command(&s, dev.id(), &get).await;
    assert_eq!(g["state"], "succeeded");
    assert_eq!(g["status"], 200);
    assert_eq!(g["results"][0]["target"], "./DevDetail/SwV");
    assert_eq!(g["results"][0]["data"], "10.0.22621.4317");
    assert_eq!(g["results"][0]["format"], "chr");
    for id in [&replace, &reboot] {
        assert_eq!(command(&s, dev.id(), id).await["state"], "succeeded");
    }
    let list = s
        .admin("GET", &format!("/devices/{}/commands", dev.id()), None)
        .await
        .json();
    let ids: Vec<&str> = list["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [get.as_str(), replace.as_str(), reboot.as_str()]);

    // DevInfo from package #1 is on the device record.
    let d = s
        .admin("GET", &format!("/devices/{}", dev.id()), None)
        .await
        .json();
    assert_eq!(d["dm_info"]["manufacturer"], "Contoso Ltd.");
    assert_eq!(d["dm_info"]["model"], "Surface Laptop 7");
    assert_eq!(d["dm_info"]["dm_version"], "1.3");
    assert_eq!(d["dm_info"]["language"], "en-US");
    assert_eq!(d["dm_info"]["dev_id"], dev.id());
    s.shutdown().await;
}

#[tokio::test]
async fn digest_challenge_rotation_and_refusals() {
    let s = TestServer::start().await;
    let dev = s.enroll_device().await;
    let queued = queue(
        &s,
        dev.id(),
        json!({"verb": "Get", "target": "./DevDetail/SwV"}),
    )
    .await;

    // No credentials: 407 with a challenge, nothing sent.
    let mut c = dev.dm_client();
    c.send_cred = false;
    c.start_session();
    let xml = c.message(|c| c.package1("none", "HW"), true);
    let reply = send(&s, &xml).await;
    let hs = reply.header_status();
    assert_eq!(hs.data, "407");
    let chal = hs.chal.as_ref().expect("407 carries a Chal");
    assert_eq!(chal.type_.as_deref(), Some("syncml:auth-md5"));
    assert_eq!(chal.format.as_deref(), Some("b64"));
    let challenged_nonce = chal.next_nonce.clone().expect("NextNonce");
    assert!(
        reply.commands().is_empty(),
        "no commands for an unauthenticated device"
    );

    // A wrong secret: 401.
    let mut bad = dev.dm_client();
    bad.digest.as_mut().unwrap().secret = "wrong".into();
    bad.digest.as_mut().unwrap().nonce_b64 = challenged_nonce.clone();
    bad.start_session();
    let reply = send(&s, &bad.message(|c| c.package1("none", "HW"), true)).await;
    assert_eq!(reply.header_status().data, "401");
    assert!(reply.commands().is_empty());
    assert_eq!(
        command(&s, dev.id(), &queued).await["state"],
        "pending",
        "nothing changed"
    );

    // The right digest over the challenged nonce: accepted, with a fresh NextNonce.
    c.send_cred = true;
    c.digest.as_mut().unwrap().nonce_b64 = challenged_nonce.clone();
    let reply = open_session(&s, &mut c, "none", "HW").await;
    assert_eq!(reply.header_status().data, "200");
    let next = c
        .next_nonce()
        .expect("a NextNonce for the next session")
        .to_owned();
    assert_ne!(next, challenged_nonce, "each session gets a new nonce");
    assert_eq!(reply.item_commands().len(), 1);
    // Later messages of the session still use the session's nonce.
    let xml = c.message(|c| c.answer(&reply, |_| 200, |_| "v".into()), true);
    let reply2 = send(&s, &xml).await;
    assert_eq!(reply2.header_status().data, "200");
    assert_eq!(command(&s, dev.id(), &queued).await["state"], "succeeded");

    // A new session replaying the old nonce is refused; the new nonce works.
    let mut replay = dev.dm_client();
    replay.digest.as_mut().unwrap().nonce_b64 = challenged_nonce;
    replay.session_id = 40;
    let r = open_session(&s, &mut replay, "none", "HW").await;
    assert_eq!(r.header_status().data, "401");
    let r = open_session(&s, &mut c, "none", "HW").await;
    assert_eq!(r.header_status().data, "200");

    // An unknown device gets the same answers as a known one.
    let mut ghost = DmClient::new("GHOST", &dev.management_url);
    ghost.start_session();
    let r = send(&s, &ghost.message(|c| c.package1("none", "HW"), true)).await;
    assert_eq!(r.header_status().data, "407");
    assert!(r.header_status().chal.is_some());
    ghost.digest = Some(dev.digest.clone());
    ghost.send_cred = true;
    let r = send(&s, &ghost.message(|c| c.package1("none", "HW"), true)).await;
    assert_eq!(r.header_status().data, "401");
    assert_eq!(s.admin("GET", "/devices/GHOST", None).await.status, 404);

    // One device can never act as another: B's credentials under A's id are refused.
    let other = s.enroll_device().await;
    let mut imposter = other.dm_client();
    imposter.device_id = dev.id().to_owned();
    let r = open_session(&s, &mut imposter, "none", "HW").await;
    assert_eq!(r.header_status().data, "401");
    s.shutdown().await;
}

#[tokio::test]
async fn commands_spread_over_messages_within_max_msg_size() {
    let s = TestServer::start().await;
    let dev = s.enroll_device().await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let data = format!("{i:02}-{}", "x".repeat(700));
        ids.push(
            queue(&s, dev.id(), json!({"verb": "Replace", "target": format!("./Vendor/MSFT/Test/Node{i}"), "format": "chr", "data": data}))
                .await,
        );
    }
    let mut c = dev.dm_client();
    c.max_msg_size = Some(4096);
    let mut reply = open_session(&s, &mut c, "user", &dev.device.hw_dev_id).await;
    let mut delivered = Vec::new();
    let mut messages = 0;
    loop {
        messages += 1;
        assert!(messages < 20, "terminates");
        let body = String::from_utf8(reply.msg.to_xml().into_bytes()).unwrap();
        assert!(
            body.len() <= 4096,
            "reply of {} bytes exceeds MaxMsgSize",
            body.len()
        );
        for ic in reply.item_commands() {
            delivered.push(ic.items[0].target.clone().unwrap());
        }
        if reply.ends_session() {
            break;
        }
        let more = !reply.msg.final_;
        let xml = c.message(
            |c| {
                let mut out = c.answer(&reply, |_| 200, |_| String::new());
                if more {
                    let id = c.cmd_id();
                    out.push(Command::Alert(Alert {
                        cmd_id: id,
                        data: "1222".into(),
                        items: vec![],
                    }));
                }
                out
            },
            true,
        );
        reply = send(&s, &xml).await;
    }
    assert!(
        messages > 3,
        "12 commands of 700 bytes need several 4 KiB messages"
    );
    let expected: Vec<String> = (0..12)
        .map(|i| format!("./Vendor/MSFT/Test/Node{i}"))
        .collect();
    assert_eq!(delivered, expected, "each command delivered once, in order");
    for id in &ids {
        assert_eq!(command(&s, dev.id(), id).await["state"], "succeeded");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn large_objects_in_both_directions() {
    let s = TestServer::start().await;
    let dev = s.enroll_device().await;
    // Outgoing: a 20 KB policy blob to a device that takes 4 KiB messages.
    let blob: String = (0..20_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let big = queue(&s, dev.id(), json!({"verb": "Replace", "target": "./Vendor/MSFT/Test/Blob", "format": "chr", "data": blob})).await;
    let mut c = dev.dm_client();
    c.max_msg_size = Some(4096);
    let mut reply = open_session(&s, &mut c, "user", &dev.device.hw_dev_id).await;
    let mut assembled = String::new();
    let mut chunks = 0;
    loop {
        let ics = reply.item_commands();
        assert_eq!(ics.len(), 1);
        let item = &ics[0].items[0];
        if chunks == 0 {
            assert_eq!(
                item.meta.as_ref().unwrap().size,
                Some(20_000),
                "first chunk carries Size"
            );
        }
        assembled.push_str(item.data.as_deref().unwrap());
        chunks += 1;
        let last = !item.more_data;
        assert_eq!(
            reply.msg.final_, last,
            "Final only on the last message of the package"
        );
        assert!(reply.msg.to_xml().len() <= 4096);
        let code = if last { 200 } else { 213 };
        let xml = c.message(|c| c.answer(&reply, |_| code, |_| String::new()), true);
        reply = send(&s, &xml).await;
        if last {
            break;
        }
    }
    assert!(chunks >= 5);
    assert_eq!(assembled, blob);
    assert_eq!(command(&s, dev.id(), &big).await["state"], "succeeded");
    assert!(reply.ends_session());

    // Incoming: the device answers a Get with a result in three chunks.
    let get = queue(
        &s,
        dev.id(),
        json!({"verb": "Get", "target": "./Vendor/MSFT/Policy/Result"}),
    )
    .await;
    let reply = open_session(&s, &mut c, "user", &dev.device.hw_dev_id).await;
    let get_cmd = reply.item_commands()[0].cmd_id.clone();
    let get_msg = reply.msg.hdr.msg_id.clone();
    let parts = [
        "<policy>part-one ",
        "&amp; part two ",
        "&lt;end&gt;</policy>",
    ];
    let expected = "<policy>part-one & part two <end></policy>";
    let mut reply = reply;
    for (i, part) in parts.iter().enumerate() {
        let last = i == parts.len() - 1;
        let msg_ref = get_msg.clone();
        let get_ref = get_cmd.clone();
        let first = i == 0;
        let prev = reply;
        let xml = c.message(
            |c| {
                let mut out = Vec::new();
                if first {
                    out.push(c.status_for(&prev, &get_ref, "Get", 200));
                }
                let id = c.cmd_id();
                out.push(Command::Results(Results {
                    cmd_id: id,
                    msg_ref: Some(msg_ref.clone()),
                    cmd_ref: get_ref.clone(),
                    meta: None,
                    items: vec![Item {
                        source: Some("./Vendor/MSFT/Policy/Result".into()),
                        meta: Some(Meta {
                            format: Some("xml".into()),
                            size: first.then_some(expected.len() as u64),
                            ..Meta::default()
                        }),
                        data: Some(xml_unescape(part)),
                        more_data: !last,
                        ..Item::default()
                    }],
                }));
                out
            },
            last,
        );
        reply = send(&s, &xml).await;
        if !last {
            let st = reply.statuses();
            assert!(
                st.iter().any(|s| s.cmd == "Results" && s.data == "213"),
                "each chunk gets 213"
            );
            assert!(
                reply
                    .commands()
                    .iter()
                    .any(|c| matches!(c, Command::Alert(a) if a.data == "1222")),
                "and an Alert 1222 asking for the next message"
            );
            assert!(!reply.msg.final_);
        }
    }
    let g = command(&s, dev.id(), &get).await;
    assert_eq!(g["state"], "succeeded");
    assert_eq!(g["results"][0]["data"], expected);
    assert_eq!(g["results"][0]["format"], "xml");
    s.shutdown().await;
}

fn xml_unescape(s: &str) -> String {
    s.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

#[tokio::test]
async fn a_dropped_session_resends_and_add_418_retries_as_replace() {
    let s = TestServer::start().await;
    let dev = s.enroll_device().await;
    let id = queue(
        &s,
        dev.id(),
        json!({"verb": "Add", "target": "./Vendor/MSFT/Test/Node", "format": "chr", "data": "v"}),
    )
    .await;
    let mut c = dev.dm_client();
    let reply = open_session(&s, &mut c, "user", &dev.device.hw_dev_id).await;
    assert_eq!(reply.item_commands().len(), 1);
    // The device drops off without answering: still sent, not done.
    assert_eq!(command(&s, dev.id(), &id).await["state"], "sent");

    // Next session: sent again; the device says 418 (already exists), so it is retried as
    // Replace in the same session.
    let reply = open_session(&s, &mut c, "user", &dev.device.hw_dev_id).await;
    let ics = reply.item_commands();
    assert_eq!(ics.len(), 1);
    assert_eq!(ics[0].verb, ItemVerb::Add);
    let xml = c.message(|c| c.answer(&reply, |_| 418, |_| String::new()), true);
    let reply = send(&s, &xml).await;
    let ics = reply.item_commands();
    assert_eq!(ics.len(), 1);
    assert_eq!(ics[0].verb, ItemVerb::Replace);
    let xml = c.message(|c| c.answer(&reply, |_| 200, |_| String::new()), true);
    let reply = send(&s, &xml).await;
    assert!(reply.ends_session());
    let cmd = command(&s, dev.id(), &id).await;
    assert_eq!(cmd["state"], "succeeded");
    assert_eq!(cmd["attempts"], 3);

    // A failing command is marked failed with the device's status.
    let bad = queue(
        &s,
        dev.id(),
        json!({"verb": "Delete", "target": "./Vendor/MSFT/Nope"}),
    )
    .await;
    let reply = open_session(&s, &mut c, "user", &dev.device.hw_dev_id).await;
    let xml = c.message(|c| c.answer(&reply, |_| 404, |_| String::new()), true);
    send(&s, &xml).await;
    let b = command(&s, dev.id(), &bad).await;
    assert_eq!(b["state"], "failed");
    assert_eq!(b["status"], 404);
    s.shutdown().await;
}

#[tokio::test]
async fn user_scope_waits_for_a_logged_in_user_and_abort_keeps_commands() {
    let s = TestServer::start().await;
    let dev = s.enroll_device().await;
    let user_cmd = queue(&s, dev.id(), json!({"verb": "Replace", "target": "./User/Vendor/MSFT/Policy/Config/Start/HideSleep", "format": "int", "data": "1"})).await;
    let mut c = dev.dm_client();
    let reply = open_session(&s, &mut c, "others", &dev.device.hw_dev_id).await;
    assert!(
        reply.item_commands().is_empty(),
        "./User commands wait for LoginStatus user"
    );
    assert!(reply.ends_session());

    // Session aborted with 1223 after the command was sent: it stays queued.
    let reply = open_session(&s, &mut c, "user", &dev.device.hw_dev_id).await;
    assert_eq!(reply.item_commands().len(), 1);
    let xml = c.message(
        |c| {
            vec![Command::Alert(Alert {
                cmd_id: c.cmd_id(),
                data: "1223".into(),
                items: vec![],
            })]
        },
        true,
    );
    let reply = send(&s, &xml).await;
    assert!(reply.ends_session());
    assert_eq!(command(&s, dev.id(), &user_cmd).await["state"], "sent");
    let reply = open_session(&s, &mut c, "user", &dev.device.hw_dev_id).await;
    assert_eq!(reply.item_commands().len(), 1, "resent after the abort");
    s.shutdown().await;
}

#[tokio::test]
async fn user_unenrollment_alert_marks_the_device_and_stops_commands() {
    let s = TestServer::start().await;
    let dev: EnrolledDevice = s.enroll_device().await;
    queue(&s, dev.id(), json!({"action": "inventory"})).await;
    let mut c = dev.dm_client();
    c.start_session();
    let xml = c.message(
        |c| {
            let mut cmds = c.package1("user", "HW");
            cmds.push(Command::Alert(Alert {
                cmd_id: c.cmd_id(),
                data: "1226".into(),
                items: vec![Item {
                    meta: Some(Meta {
                        type_: Some("com.microsoft:mdm.unenrollment.userrequest".into()),
                        format: Some("int".into()),
                        ..Meta::default()
                    }),
                    data: Some("1".into()),
                    ..Item::default()
                }],
            }));
            cmds
        },
        true,
    );
    let reply = send(&s, &xml).await;
    assert_eq!(reply.header_status().data, "200");
    assert!(
        reply.item_commands().is_empty(),
        "no commands for an unenrolling device"
    );
    assert!(
        reply
            .statuses()
            .iter()
            .any(|s| s.cmd == "Alert" && s.cmd_ref == "4" && s.data == "200")
    );
    let d = s
        .admin("GET", &format!("/devices/{}", dev.id()), None)
        .await
        .json();
    assert_eq!(d["status"], "unenrolled");
    let reply = open_session(&s, &mut c, "user", "HW").await;
    assert_eq!(
        reply.header_status().data,
        "401",
        "an unenrolled device is not managed"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn admin_command_api_validates_requests() {
    let s = TestServer::start().await;
    let dev = s.enroll_device().await;
    let path = format!("/devices/{}/commands", dev.id());
    for bad in [
        json!({"verb": "Get", "target": "/Vendor/MSFT"}),
        json!({"verb": "Get", "target": "./a//b"}),
        json!({"verb": "Replace", "target": "./a"}),
        json!({"verb": "Replace", "target": "./a", "format": "weird", "data": "x"}),
        json!({"verb": "Replace", "target": "./a", "format": "int", "data": "x"}),
        json!({"verb": "Atomic", "commands": [{"verb": "Get", "target": "./a"}]}),
        json!({"verb": "Atomic", "commands": []}),
        json!({"verb": "Frobnicate", "target": "./a"}),
        json!({"action": "explode"}),
        json!({"unknown": 1}),
    ] {
        let r = s.admin("POST", &path, Some(bad.clone())).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(r.json()["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let r = s
        .admin(
            "POST",
            "/devices/NOPE/commands",
            Some(json!({"action": "reboot"})),
        )
        .await;
    assert_eq!(r.status, 404);
    for action in ["reboot", "wipe", "wipe_protected", "unenroll", "inventory"] {
        queue(&s, dev.id(), json!({"action": action})).await;
    }
    queue(
        &s,
        dev.id(),
        json!({"verb": "Atomic", "commands": [
            {"verb": "Add", "target": "./Vendor/MSFT/Test/A", "format": "chr", "data": "1"},
            {"verb": "Replace", "target": "./Vendor/MSFT/Test/B", "format": "xml", "data": "<a>&</a>"}
        ]}),
    )
    .await;
    // All of them go out in one session, the Atomic as a container with its own CmdIDs.
    let mut c = dev.dm_client();
    let reply = open_session(&s, &mut c, "user", &dev.device.hw_dev_id).await;
    let targets: Vec<String> = reply
        .item_commands()
        .iter()
        .flat_map(|i| i.items.iter().map(|it| it.target.clone().unwrap()))
        .collect();
    assert!(targets.contains(&"./Device/Vendor/MSFT/RemoteWipe/doWipeProtected".to_owned()));
    assert!(targets.contains(&"./Vendor/MSFT/DMClient/Provider/winmdm/Unenroll".to_owned()));
    assert!(targets.contains(&"./DevDetail/Ext/Microsoft/TotalRAM".to_owned()));
    assert!(
        reply
            .commands()
            .iter()
            .any(|c| matches!(c, Command::Container(_)))
    );
    let xml_item = reply
        .item_commands()
        .into_iter()
        .flat_map(|i| i.items.iter())
        .find(|i| i.target.as_deref() == Some("./Vendor/MSFT/Test/B"))
        .unwrap();
    assert_eq!(
        xml_item.data.as_deref(),
        Some("<a>&</a>"),
        "XML payload round-trips"
    );
    s.shutdown().await;
}
