//! Configuration profiles end to end: emulated devices with a modelled CSP tree run whole
//! sessions while an operator creates, assigns, edits and removes profiles. Most run in
//! process with a clock the test moves (retries, drift); one runs `winmdm-local` on
//! DynamoDB (moto).

use serde_json::{Value, json};
use winmdm_e2e::csp::Format;
use winmdm_e2e::fleet::{FleetDevice, Server, harness};
use winmdm_e2e::moto::Moto;
use winmdm_e2e::{HttpResponse, TestServer};

const CAMERA: &str = "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera";
const COOKIES: &str = "./Device/Vendor/MSFT/Policy/Config/Browser/AllowCookies";
const WIFI: &str = "./Vendor/MSFT/WiFi/Profile/corp/WlanXml";
const WLAN_XML: &str = r#"<WLANProfile xmlns="http://www.microsoft.com/networking/WLAN/profile/v1"><name>corp</name><SSIDConfig><SSID><name>corp</name></SSID></SSIDConfig><connectionType>ESS</connectionType></WLANProfile>"#;

/// A profile as Fleet and Intune write custom OMA-URI settings.
fn fragment(settings: &[(&str, &str, &str)]) -> String {
    settings
        .iter()
        .map(|(target, format, data)| {
            let data = if *format == "xml" {
                format!("<![CDATA[{data}]]>")
            } else {
                (*data).to_owned()
            };
            format!(
                "<Replace><Item><Meta><Format xmlns=\"syncml:metinf\">{format}</Format></Meta><Target><LocURI>{target}</LocURI></Target><Data>{data}</Data></Item></Replace>"
            )
        })
        .collect()
}

fn ok(r: &HttpResponse, status: u16) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

async fn create_profile(s: &Server<'_>, name: &str, syncml: String, include: &[&str]) -> String {
    let r = s
        .admin(
            "POST",
            "/profiles",
            Some(json!({"name": name, "syncml": syncml, "assignment": {"include": include}})),
        )
        .await;
    ok(&r, 201)["id"].as_str().unwrap().to_owned()
}

async fn group(s: &Server<'_>, name: &str, members: &[&str]) {
    ok(
        &s.admin("POST", "/groups", Some(json!({"name": name})))
            .await,
        201,
    );
    for m in members {
        ok(
            &s.admin("PUT", &format!("/groups/{name}/devices/{m}"), None)
                .await,
            204,
        );
    }
}

async fn device_profile(s: &Server<'_>, device: &str, profile: &str) -> Value {
    let v = ok(
        &s.admin("GET", &format!("/devices/{device}/profiles"), None)
            .await,
        200,
    );
    v["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["profile_id"] == profile)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn status(s: &Server<'_>, profile: &str) -> Value {
    ok(
        &s.admin("GET", &format!("/profiles/{profile}/status"), None)
            .await,
        200,
    )
}

/// A profile assigned to a group reaches its members, and only them, and is verified.
async fn reaches_the_group_and_is_verified(s: &Server<'_>) {
    let mut devices = Vec::new();
    for _ in 0..3 {
        devices.push(FleetDevice::enroll(s).await);
    }
    let (a, b) = (devices[0].id().to_owned(), devices[1].id().to_owned());
    group(s, "finance", &[&a, &b]).await;
    let p = create_profile(
        s,
        "Finance lockdown",
        fragment(&[
            (CAMERA, "int", "0"),
            (COOKIES, "int", "1"),
            (WIFI, "xml", WLAN_XML),
        ]),
        &["finance"],
    )
    .await;
    // Assigning writes nothing per device: the members count as pending until they
    // connect.
    let st = status(s, &p).await;
    assert_eq!(st["targeted"], 2, "{st}");
    assert_eq!(st["counts"], json!({"pending": 2}), "{st}");
    for d in devices.iter_mut() {
        d.session(s).await;
    }
    for d in &devices[..2] {
        assert_eq!(d.tree.value(CAMERA), Some("0"));
        assert_eq!(d.tree.value(COOKIES), Some("1"));
        assert!(
            d.tree
                .value(WIFI)
                .is_some_and(|v| v.contains("<name>corp</name>"))
        );
        let st = device_profile(s, d.id(), &p).await;
        assert_eq!(st["state"], "verified", "{st}");
        assert!(st["last_verified_at"].is_string());
    }
    let other = &devices[2];
    assert_eq!(
        other.tree.value(CAMERA),
        None,
        "not in the group: nothing sent"
    );
    assert_eq!(device_profile(s, other.id(), &p).await, Value::Null);
    let st = status(s, &p).await;
    assert_eq!(st["counts"], json!({"verified": 2}), "{st}");
    assert_eq!(st["targeted"], 2, "{st}");
    assert_eq!(st["devices"].as_array().unwrap().len(), 2);
    // A group in use cannot be deleted; an unused one takes its members with it, so a
    // group made later under the same name starts empty.
    let r = s.admin("DELETE", "/groups/finance", None).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("Finance lockdown"), "{}", r.text());
    group(s, "temp", &[&a]).await;
    ok(&s.admin("DELETE", "/groups/temp", None).await, 204);
    ok(
        &s.admin("POST", "/groups", Some(json!({"name": "temp"})))
            .await,
        201,
    );
    let g = ok(&s.admin("GET", "/groups/temp", None).await, 200);
    assert_eq!(g["devices"], json!([]), "{g}");
    let dev = ok(&s.admin("GET", &format!("/devices/{a}"), None).await, 200);
    assert_eq!(dev["groups"], json!(["finance"]), "{dev}");
    // Nothing more to do: the next sessions carry no profile commands.
    for d in devices.iter_mut() {
        assert_eq!(d.session(s).await, 1);
    }
}

#[tokio::test]
async fn a_profile_reaches_its_group_and_is_verified() {
    let h = harness();
    reaches_the_group_and_is_verified(&Server::InProcess(&h)).await;
}

#[tokio::test]
async fn a_profile_reaches_its_group_on_dynamodb() {
    winmdm_e2e::moto::aws_test_environment();
    let moto = Moto::start().await;
    let endpoint = moto.endpoint.clone();
    let t = TestServer::start_with(|o| {
        o.table = Some("winmdm-profiles".into());
        o.dynamodb_endpoint = Some(endpoint);
        o.create_table = true;
        o.region = Some("us-east-1".into());
    })
    .await;
    reaches_the_group_and_is_verified(&Server::Local(&t)).await;
    t.shutdown().await;
}

/// One unsupported node: the Atomic rolls back, the profile fails naming the node, and it
/// is retried with backoff up to the limit, then stays failed until resent.
#[tokio::test]
async fn an_unsupported_node_fails_the_profile_and_nothing_stays_applied() {
    let h = harness();
    let s = Server::InProcess(&h);
    let mut d = FleetDevice::enroll(&s).await;
    d.tree.set_unsupported(COOKIES);
    let p = create_profile(
        &s,
        "Browser",
        fragment(&[(CAMERA, "int", "0"), (COOKIES, "int", "1")]),
        &["all"],
    )
    .await;
    d.session(&s).await;
    let st = device_profile(&s, d.id(), &p).await;
    assert_eq!(st["state"], "failed", "{st}");
    // The device counts as failed: on its record, in the listing and in the overview.
    assert_eq!(device_compliance(&s, d.id()).await, json!("failed"));
    let failed = ok(
        &s.admin("GET", "/devices?compliance=failed", None).await,
        200,
    );
    assert_eq!(failed["devices"][0]["id"], d.id());
    let o = ok(&s.admin("GET", "/overview", None).await, 200);
    assert_eq!(
        o["compliance"],
        json!({"compliant": 0, "pending": 0, "failed": 1}),
        "{o}"
    );
    let page = ok(
        &s.admin("GET", &format!("/profiles/{p}/devices"), None)
            .await,
        200,
    );
    assert_eq!(page["counts"], json!({"failed": 1}), "{page}");
    assert_eq!(page["devices"][0]["device_id"], d.id());
    let reason = st["reason"].as_str().unwrap();
    assert!(
        reason.contains(COOKIES) && reason.contains("405"),
        "{reason}"
    );
    assert_eq!(d.tree.value(CAMERA), None, "the Atomic rolled back");

    // Not retried before its backoff, then retried; after 3 failures it stays failed.
    assert_eq!(d.session(&s).await, 1, "waiting for the retry time");
    for n in 2..=3 {
        h.clock.advance(time::Duration::hours(2));
        d.session(&s).await;
        let st = device_profile(&s, d.id(), &p).await;
        assert_eq!(st["failures"], n, "{st}");
    }
    h.clock.advance(time::Duration::days(2));
    assert_eq!(d.session(&s).await, 1, "no more retries");

    // The operator fixes the device and resends: verified.
    d.tree.set_supported(COOKIES);
    ok(
        &s.admin(
            "POST",
            &format!("/devices/{}/profiles/{p}/resend", d.id()),
            None,
        )
        .await,
        202,
    );
    d.session(&s).await;
    assert_eq!(device_profile(&s, d.id(), &p).await["state"], "verified");
    assert_eq!(d.tree.value(COOKIES), Some("1"));
    assert_eq!(device_compliance(&s, d.id()).await, json!("compliant"));
    let o = ok(&s.admin("GET", "/overview", None).await, 200);
    assert_eq!(
        o["compliance"],
        json!({"compliant": 1, "pending": 0, "failed": 0}),
        "{o}"
    );
    let page = ok(
        &s.admin("GET", &format!("/profiles/{p}/devices"), None)
            .await,
        200,
    );
    assert_eq!(page["counts"], json!({"verified": 1}), "{page}");
    assert!(
        ok(
            &s.admin("GET", "/devices?compliance=failed", None).await,
            200
        )["devices"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

async fn device_compliance(s: &Server<'_>, device: &str) -> Value {
    ok(
        &s.admin("GET", &format!("/devices/{device}"), None).await,
        200,
    )["compliance"]
        .clone()
}

/// An edit is a new revision the device converges to; settings it drops are deleted; an
/// unassigned profile's nodes are deleted; an undeletable node is reported, not retried.
#[tokio::test]
async fn revisions_and_removal() {
    let h = harness();
    let s = Server::InProcess(&h);
    let mut d = FleetDevice::enroll(&s).await;
    let p = create_profile(
        &s,
        "Baseline",
        fragment(&[(CAMERA, "int", "0"), (COOKIES, "int", "1")]),
        &["all"],
    )
    .await;
    d.session(&s).await;
    assert_eq!(device_profile(&s, d.id(), &p).await["state"], "verified");

    let r = s
        .admin(
            "PUT",
            &format!("/profiles/{p}"),
            Some(json!({"syncml": fragment(&[(CAMERA, "int", "1"), (WIFI, "xml", WLAN_XML)])})),
        )
        .await;
    assert_eq!(ok(&r, 200)["revision"], 2);
    d.session(&s).await;
    let st = device_profile(&s, d.id(), &p).await;
    assert_eq!(st["state"], "verified", "{st}");
    assert_eq!(st["revision"], 2);
    assert_eq!(d.tree.value(CAMERA), Some("1"));
    assert_eq!(
        d.tree.value(COOKIES),
        None,
        "dropped by revision 2: deleted"
    );
    assert!(d.tree.value(WIFI).is_some());

    // Unassigned: every node it set is deleted; the Wi-Fi node cannot be.
    d.tree.set_undeletable(WIFI);
    let r = s
        .admin(
            "POST",
            &format!("/profiles/{p}/assignments"),
            Some(json!({"include": []})),
        )
        .await;
    ok(&r, 200);
    d.session(&s).await;
    let st = device_profile(&s, d.id(), &p).await;
    assert_eq!(st["state"], "removed", "{st}");
    assert!(st["reason"].as_str().unwrap().contains(WIFI), "{st}");
    assert_eq!(d.tree.value(CAMERA), None);
    assert_eq!(d.session(&s).await, 1, "a removal is not retried");

    // Deleting a profile removes it from devices too.
    let q = create_profile(&s, "Camera", fragment(&[(CAMERA, "int", "0")]), &["all"]).await;
    d.session(&s).await;
    assert_eq!(d.tree.value(CAMERA), Some("0"));
    ok(
        &s.admin("DELETE", &format!("/profiles/{q}"), None).await,
        204,
    );
    d.session(&s).await;
    assert_eq!(d.tree.value(CAMERA), None);
    assert_eq!(device_profile(&s, d.id(), &q).await["state"], "removed");
}

/// A verified profile is read back on a schedule; a node changed behind the server's back
/// is recorded as drift and applied again.
#[tokio::test]
async fn drift_is_detected_and_repaired() {
    let h = harness();
    let s = Server::InProcess(&h);
    let mut d = FleetDevice::enroll(&s).await;
    let p = create_profile(
        &s,
        "Camera off",
        fragment(&[(CAMERA, "int", "0")]),
        &["all"],
    )
    .await;
    d.session(&s).await;
    d.tree.set(CAMERA, "1", Format::Int);
    // Within the interval nothing is checked.
    assert_eq!(d.session(&s).await, 1);
    h.clock.advance(time::Duration::hours(25));
    d.session(&s).await;
    let st = device_profile(&s, d.id(), &p).await;
    assert_eq!(st["drift_count"], 1, "{st}");
    assert_eq!(st["drift"][0]["target"], CAMERA);
    assert_eq!(st["drift"][0]["found"], "1");
    // Repaired in the same or the next session.
    if st["state"] != "verified" {
        d.session(&s).await;
    }
    assert_eq!(device_profile(&s, d.id(), &p).await["state"], "verified");
    assert_eq!(d.tree.value(CAMERA), Some("0"));
}

/// A Replace of a missing node (404) is retried once as Add, an Add of an existing node
/// (418) once as Replace; a session that drops after the profile went out sends it again.
#[tokio::test]
async fn retries_as_add_or_replace_and_after_a_dropped_session() {
    let h = harness();
    let s = Server::InProcess(&h);
    let mut d = FleetDevice::enroll(&s).await;
    let strict = "./Vendor/MSFT/Test/Strict/";
    d.tree.strict_root(strict);
    let missing = "./Vendor/MSFT/Test/Strict/Node";
    let existing = "./Vendor/MSFT/Test/Strict/Existing";
    d.tree.set(existing, "old", Format::Chr);
    let add_existing = format!(
        "<Add><Item><Meta><Format xmlns=\"syncml:metinf\">chr</Format></Meta><Target><LocURI>{existing}</LocURI></Target><Data>new</Data></Item></Add>"
    );
    let p = create_profile(
        &s,
        "Retries",
        fragment(&[(missing, "chr", "x")]) + &add_existing,
        &["all"],
    )
    .await;
    d.session(&s).await;
    let st = device_profile(&s, d.id(), &p).await;
    assert_eq!(st["state"], "verified", "{st}");
    assert_eq!(d.tree.value(missing), Some("x"));
    assert_eq!(d.tree.value(existing), Some("new"));

    // Dropped session: the device receives the profile and never answers.
    let q = create_profile(&s, "Camera", fragment(&[(CAMERA, "int", "0")]), &["all"]).await;
    d.client.start_session();
    let hw = d.enrolled.device.hw_dev_id.clone();
    let xml = d.client.message(|c| c.package1("user", &hw), true);
    let r = s.syncml(&xml).await;
    assert!(String::from_utf8_lossy(&r.body).contains(CAMERA));
    assert_eq!(device_profile(&s, d.id(), &q).await["state"], "sent");
    d.session(&s).await;
    assert_eq!(device_profile(&s, d.id(), &q).await["state"], "verified");
}

/// What the API refuses, with the reason.
#[tokio::test]
async fn profile_validation_and_conflicts() {
    let h = harness();
    let s = Server::InProcess(&h);
    let exec = format!("<Exec><Item><Target><LocURI>{CAMERA}</LocURI></Target></Item></Exec>");
    for (body, needle) in [
        (json!({"name": "x", "syncml": exec}), "Exec"),
        (
            json!({"name": "x", "syncml": "<Replace><Item>"}),
            "well-formed",
        ),
        (
            json!({"name": "x", "syncml": fragment(&[("/abs", "int", "0")])}),
            "relative",
        ),
        (
            json!({"name": "x", "syncml": fragment(&[(CAMERA, "int", "zero")])}),
            "integer",
        ),
        (
            json!({"name": "x", "settings": [{"target": CAMERA, "format": "int", "data": "0"}], "syncml": "<Replace/>"}),
            "one of",
        ),
        (
            json!({"name": "", "syncml": fragment(&[(CAMERA, "int", "0")])}),
            "name",
        ),
        (
            json!({"name": "x", "syncml": fragment(&[(CAMERA, "int", "0")]), "assignment": {"include": ["nope"]}}),
            "no group",
        ),
        (json!({"name": "x", "template": "nope"}), "nope"),
    ] {
        let r = s.admin("POST", "/profiles", Some(body.clone())).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(needle), "{body}: {}", r.text());
    }
    let a = create_profile(
        &s,
        "Camera off",
        fragment(&[(CAMERA, "int", "0")]),
        &["all"],
    )
    .await;
    // The same name, any case.
    let r = s
        .admin(
            "POST",
            "/profiles",
            Some(json!({"name": "CAMERA OFF", "syncml": fragment(&[(COOKIES, "int", "1")])})),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    // Another profile for the same devices setting the same node differently.
    group(&s, "lab", &[]).await;
    let r = s
        .admin(
            "POST",
            "/profiles",
            Some(json!({"name": "Camera on", "syncml": fragment(&[(CAMERA, "int", "1")]), "assignment": {"include": ["lab"]}})),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.text().contains("Camera off") && r.text().contains(CAMERA),
        "{}",
        r.text()
    );
    // Excluding the other profile's devices removes the conflict.
    let r = s
        .admin(
            "POST",
            "/profiles",
            Some(json!({"name": "Camera on", "syncml": fragment(&[(CAMERA, "int", "1")]), "assignment": {"include": ["lab"]}})),
        )
        .await;
    assert_eq!(r.status, 409);
    ok(
        &s.admin(
            "POST",
            &format!("/profiles/{a}/assignments"),
            Some(json!({"include": ["all"], "exclude": ["lab"]})),
        )
        .await,
        200,
    );
    let r = s
        .admin(
            "POST",
            "/profiles",
            Some(json!({"name": "Camera on", "syncml": fragment(&[(CAMERA, "int", "1")]), "assignment": {"include": ["lab"]}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // Templates are listed and instantiate.
    let t = ok(&s.admin("GET", "/profile-templates", None).await, 200);
    assert!(t["templates"].as_array().unwrap().len() >= 6);
    let r = s
        .admin(
            "POST",
            "/profiles",
            Some(json!({"name": "Firewall", "template": "firewall"})),
        )
        .await;
    let v = ok(&r, 201);
    assert!(v["settings"].as_array().unwrap().len() >= 3);
}

/// A fleet with several profiles converges to verified; the number of sessions it takes
/// is printed.
#[tokio::test]
async fn a_fleet_converges() {
    let h = harness();
    let s = Server::InProcess(&h);
    let n = 200;
    let mut fleet = Vec::new();
    for _ in 0..n {
        fleet.push(FleetDevice::enroll(&s).await);
    }
    let half: Vec<String> = fleet[..n / 2].iter().map(|d| d.id().to_owned()).collect();
    let half_refs: Vec<&str> = half.iter().map(String::as_str).collect();
    group(&s, "half", &half_refs).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let node = format!("./Device/Vendor/MSFT/Policy/Config/Test/Setting{i}");
        let include = if i % 2 == 0 { "all" } else { "half" };
        ids.push(
            create_profile(
                &s,
                &format!("P{i}"),
                fragment(&[(&node, "int", "1")]),
                &[include],
            )
            .await,
        );
    }
    let mut sessions = 0;
    for d in fleet.iter_mut() {
        d.tree.add_root("./Vendor/MSFT/Policy/Config/Test/");
        d.session(&s).await;
        sessions += 1;
    }
    for (i, p) in ids.iter().enumerate() {
        let st = status(&s, p).await;
        let want = if i % 2 == 0 { n } else { n / 2 };
        assert_eq!(st["counts"]["verified"], want, "P{i}: {st}");
    }
    let o = ok(&s.admin("GET", "/overview", None).await, 200);
    assert_eq!(o["compliance"]["compliant"], n, "{o}");
    // The list's maintained counts agree with the computed status, in one counter read.
    let list = ok(&s.admin("GET", "/profiles", None).await, 200);
    for (i, p) in ids.iter().enumerate() {
        let want = if i % 2 == 0 { n } else { n / 2 };
        let listed = list["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["id"] == p.as_str())
            .unwrap();
        assert_eq!(listed["counts"], json!({ "verified": want }), "P{i}");
    }
    println!(
        "{n} devices × 5 profiles: verified after {sessions} sessions ({} per device)",
        sessions / n
    );
}

/// `./User/…` profiles go out only while a user is signed in; device profiles do not wait.
#[tokio::test]
async fn user_profiles_wait_for_a_signed_in_user() {
    let h = harness();
    let s = Server::InProcess(&h);
    let mut d = FleetDevice::enroll(&s).await;
    d.login_status = "others";
    const USER_COOKIES: &str = "./User/Vendor/MSFT/Policy/Config/Browser/AllowCookies";
    let r = s
        .admin(
            "POST",
            "/profiles",
            Some(json!({
                "name": "User cookies",
                "scope": "user",
                "syncml": fragment(&[(USER_COOKIES, "int", "0")]),
                "assignment": {"include": ["all"]},
            })),
        )
        .await;
    let up = ok(&r, 201)["id"].as_str().unwrap().to_owned();
    let dp = create_profile(&s, "Camera", fragment(&[(CAMERA, "int", "0")]), &["all"]).await;

    d.session(&s).await;
    assert_eq!(d.tree.value(CAMERA), Some("0"));
    assert_eq!(device_profile(&s, d.id(), &dp).await["state"], "verified");
    assert_eq!(d.tree.value(USER_COOKIES), None, "nobody signed in");
    assert_eq!(device_profile(&s, d.id(), &up).await["state"], "pending");

    d.login_status = "user";
    d.session(&s).await;
    assert_eq!(d.tree.value(USER_COOKIES), Some("0"));
    assert_eq!(device_profile(&s, d.id(), &up).await["state"], "verified");
}

/// A profile bigger than the device's MaxMsgSize cannot go out in one Atomic: it fails
/// for good with the numbers, and does not hold up the profiles that fit.
#[tokio::test]
async fn a_profile_larger_than_max_msg_size_fails_without_stalling_others() {
    let h = harness();
    let s = Server::InProcess(&h);
    let mut d = FleetDevice::enroll(&s).await;
    d.client.max_msg_size = Some(8192);
    let ssids: String = (0..300)
        .map(|i| format!("<SSID><name>corp-{i}</name></SSID>"))
        .collect();
    let big_xml = format!(
        r#"<WLANProfile xmlns="http://www.microsoft.com/networking/WLAN/profile/v1"><name>corp</name><SSIDConfig>{ssids}</SSIDConfig></WLANProfile>"#
    );
    assert!(big_xml.len() > 8192);
    let big = create_profile(
        &s,
        "Big Wi-Fi",
        fragment(&[(WIFI, "xml", &big_xml)]),
        &["all"],
    )
    .await;
    let small = create_profile(&s, "Camera", fragment(&[(CAMERA, "int", "0")]), &["all"]).await;

    d.session(&s).await;
    assert_eq!(d.tree.value(CAMERA), Some("0"));
    assert_eq!(
        device_profile(&s, d.id(), &small).await["state"],
        "verified"
    );
    let st = device_profile(&s, d.id(), &big).await;
    assert_eq!(st["state"], "failed", "{st}");
    let reason = st["reason"].as_str().unwrap();
    assert!(
        reason.contains("MaxMsgSize") && reason.contains("8192"),
        "{reason}"
    );
    assert_eq!(d.tree.value(WIFI), None);
    // Not retried in later sessions.
    assert_eq!(d.session(&s).await, 1);
}
