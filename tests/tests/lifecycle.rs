//! Certificate lifecycle through the Lambda handler path (recorded API Gateway v2 events
//! carrying the client certificate) with a clock the test moves: ROBO renewal, the grace
//! period, expiry, forged renewals, blocking, re-enrollment and removal.

use serde_json::json;
use winmdm_e2e::device::{CsrSignature, CsrSubject, Device};
use winmdm_e2e::dm::{DmClient, Reply};
use winmdm_e2e::inprocess::{self, pem};
use winmdm_e2e::messages::{self, Credentials};
use winmdm_e2e::{EnrolledDevice, HttpResponse, TEST_PASSWORD, TEST_UPN, verify};
use winmdm_http::AppState;
use winmdm_http::state::AdminAuth;
use winmdm_wire::ns;
use winmdm_wire::syncml::ItemVerb;

const MANAGE_FIXTURE: &str = include_str!("../fixtures/apigw-v2/manage-mtls.json");
const ADMIN: (&str, &str) = ("authorization", "Bearer admin");

struct World {
    h: inprocess::Harness,
}

impl std::ops::Deref for World {
    type Target = inprocess::Harness;
    fn deref(&self) -> &inprocess::Harness {
        &self.h
    }
}

async fn world() -> World {
    let h = inprocess::Harness::new(AdminAuth::Bearer("admin".into()));
    let r = admin(
        &h.state,
        "POST",
        "/admin/v1/users",
        json!({"upn": TEST_UPN, "password": TEST_PASSWORD}),
    )
    .await;
    assert_eq!(r.status, 201);
    World { h }
}

async fn admin(
    state: &AppState,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> HttpResponse {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    inprocess::call(
        state,
        method,
        path,
        &[ADMIN, ("content-type", "application/json")],
        body,
    )
    .await
}

async fn enroll(w: &World, device: &Device) -> HttpResponse {
    enroll_as(w, device, TEST_UPN).await
}

const BOB: &str = "bob@example.com";

async fn add_user(w: &World, upn: &str) {
    let r = admin(
        &w.state,
        "POST",
        "/admin/v1/users",
        json!({"upn": upn, "password": TEST_PASSWORD}),
    )
    .await;
    assert_eq!(r.status, 201);
}

async fn enroll_as(w: &World, device: &Device, upn: &str) -> HttpResponse {
    let csr = device.csr(CsrSignature::Sha256, CsrSubject::Windows);
    let ctx = messages::context_items(&device.device_id, &device.hw_dev_id, "Full");
    // The harness is federated: sign in as the login page would.
    let token = w
        .state
        .enrollment
        .sign_in(upn, TEST_PASSWORD, None)
        .await
        .unwrap();
    let creds = Credentials::Federated { token };
    let msg = messages::request_security_token("urn:uuid:l1", "https://e/x", &creds, &csr, &ctx);
    inprocess::call(
        &w.state,
        "POST",
        "/EnrollmentServer/Enrollment.svc",
        &[("content-type", "application/soap+xml; charset=utf-8")],
        msg,
    )
    .await
}

/// An API Gateway v2 event for the management host, as the mTLS domain forwards it.
fn mtls_event(path: &str, content_type: &str, body: &str, cert: &[u8]) -> lambda_http::Request {
    use base64::Engine as _;
    let mut e: serde_json::Value = serde_json::from_str(MANAGE_FIXTURE).unwrap();
    e["rawPath"] = path.into();
    e["routeKey"] = format!("POST {path}").into();
    e["requestContext"]["routeKey"] = format!("POST {path}").into();
    e["requestContext"]["http"]["path"] = path.into();
    e["headers"]["content-type"] = content_type.into();
    e["body"] = base64::engine::general_purpose::STANDARD
        .encode(body)
        .into();
    e["requestContext"]["authentication"]["clientCert"]["clientCertPem"] = pem(cert).into();
    lambda_http::request::from_str(&e.to_string()).unwrap()
}

/// Package #1 from `device_id` presenting `cert`; returns the SyncHdr status.
async fn manage_with(w: &World, device_id: &str, cert: &[u8]) -> String {
    let mut c = DmClient::new(
        device_id,
        "https://manage.example.com/ManagementServer/MDM.svc",
    );
    c.start_session();
    let body = c.message(|c| c.package1("user", "HW"), true);
    let req = mtls_event(
        "/ManagementServer/MDM.svc",
        "application/vnd.syncml.dm+xml",
        &body,
        cert,
    );
    let r = inprocess::response(winmdm_http::manage::handle(&w.state, req).await);
    Reply::parse(&r.body).header_status().data.clone()
}

/// A renewal signed with `signer`'s key over `signer_cert`, presented over TLS with `tls`.
async fn renew(
    w: &World,
    new_key: &Device,
    signer: &Device,
    signer_cert: &[u8],
    tls: &[u8],
    value_type: &str,
) -> HttpResponse {
    let csr = new_key.csr(CsrSignature::Sha256, CsrSubject::Windows);
    let p7 = signer.renewal_pkcs7(signer_cert, &csr);
    let msg = messages::renew_request(
        "urn:uuid:r1",
        "https://manage.example.com/ManagementServer/Renew.svc",
        &p7,
        value_type,
    );
    let req = mtls_event(
        "/ManagementServer/Renew.svc",
        "application/soap+xml; charset=utf-8",
        &msg,
        tls,
    );
    inprocess::response(winmdm_http::renew::handle(&w.state, req).await)
}

#[tokio::test]
async fn robo_renewal_grace_period_and_expiry() {
    let w = world().await;
    // `device` keeps the key the enrollment certified; the wrapper only reads the reply.
    let device = Device::new();
    let a = EnrolledDevice::from_response(device.rekeyed(), &enroll(&w, &device).await);
    let old_cert = a.provisioned.client_der.clone();
    assert_eq!(
        verify::renewal_server_url(&a.provisioned),
        "https://manage.example.com/ManagementServer/Renew.svc"
    );

    // The device renews with a new key, signing with the key of its current certificate.
    let new_key = device.rekeyed();
    let r = renew(
        &w,
        &new_key,
        &device,
        &old_cert,
        &old_cert,
        ns::token::PKCS7_SECEXT,
    )
    .await;
    let (new_cert, store, url) = verify::renewal_doc(&verify::soap_ok(&r));
    assert_eq!(store, "User");
    assert_eq!(url, "https://manage.example.com/ManagementServer/Renew.svc");
    verify::check_device_certificate(
        &a.provisioned.root_der,
        &new_cert,
        &device.device_id,
        &new_key.spki_der(),
    );
    let d = admin(
        &w.state,
        "GET",
        &format!("/admin/v1/devices/{}", device.device_id),
        serde_json::Value::Null,
    )
    .await
    .json();
    assert_eq!(
        d["cert_thumbprint"],
        verify::thumbprint(&new_cert).as_str(),
        "switched to the new certificate"
    );

    // The new certificate manages the device; the old one still works during the grace
    // period, then is refused.
    assert_eq!(manage_with(&w, &device.device_id, &new_cert).await, "200");
    assert_eq!(manage_with(&w, &device.device_id, &old_cert).await, "200");
    w.clock.advance(time::Duration::hours(25));
    assert_eq!(manage_with(&w, &device.device_id, &old_cert).await, "401");
    assert_eq!(manage_with(&w, &device.device_id, &new_cert).await, "200");
    // Renewing with the old certificate after the grace period: refused.
    let r = renew(
        &w,
        &new_key.rekeyed(),
        &device,
        &old_cert,
        &old_cert,
        ns::token::PKCS7_SECEXT,
    )
    .await;
    assert_eq!(verify::fault_subcode(&r), "s:Authentication");

    // A second renewal, with the enrollment-namespace ValueType some servers use.
    let newest_key = new_key.rekeyed();
    let r = renew(
        &w,
        &newest_key,
        &new_key,
        &new_cert,
        &new_cert,
        ns::token::PKCS7_ENROLL,
    )
    .await;
    let (newest, _, _) = verify::renewal_doc(&verify::soap_ok(&r));
    assert_eq!(manage_with(&w, &device.device_id, &newest).await, "200");

    // A year later the certificate has expired: management refused, renewal NotEligibleToRenew.
    w.clock.advance(time::Duration::days(400));
    assert_eq!(manage_with(&w, &device.device_id, &newest).await, "401");
    let r = renew(
        &w,
        &newest_key.rekeyed(),
        &newest_key,
        &newest,
        &newest,
        ns::token::PKCS7_SECEXT,
    )
    .await;
    assert_eq!(verify::fault_subcode(&r), "s:Authorization");
    assert!(
        r.text()
            .contains("<ErrorType>NotEligibleToRenew</ErrorType>")
    );
}

#[tokio::test]
async fn forged_renewals_are_refused() {
    let w = world().await;
    let a_dev = Device::new();
    let a = EnrolledDevice::from_response(a_dev.rekeyed(), &enroll(&w, &a_dev).await);
    let b_dev = Device::new();
    let b = EnrolledDevice::from_response(b_dev.rekeyed(), &enroll(&w, &b_dev).await);
    let a_cert = &a.provisioned.client_der;
    let b_cert = &b.provisioned.client_der;

    // B's properly signed PKCS#7, sent over A's TLS session: signer is not the presenter.
    let r = renew(
        &w,
        &b_dev.rekeyed(),
        &b_dev,
        b_cert,
        a_cert,
        ns::token::PKCS7_SECEXT,
    )
    .await;
    assert_eq!(verify::fault_subcode(&r), "s:Authentication");
    // A's certificate in the PKCS#7 but signed with B's key.
    let r = renew(
        &w,
        &a_dev.rekeyed(),
        &b_dev,
        a_cert,
        a_cert,
        ns::token::PKCS7_SECEXT,
    )
    .await;
    assert_eq!(verify::fault_subcode(&r), "s:Authentication");
    // No client certificate at all.
    let csr = a_dev
        .rekeyed()
        .csr(CsrSignature::Sha256, CsrSubject::Windows);
    let msg = messages::renew_request(
        "urn:uuid:x",
        "https://m/r",
        &a_dev.renewal_pkcs7(a_cert, &csr),
        ns::token::PKCS7_SECEXT,
    );
    let r = inprocess::call(
        &w.state,
        "POST",
        "/ManagementServer/Renew.svc",
        &[("content-type", "application/soap+xml; charset=utf-8")],
        msg,
    )
    .await;
    assert_eq!(verify::fault_subcode(&r), "s:Authentication");
    // Nothing changed for either device.
    for (id, cert) in [(&a_dev.device_id, a_cert), (&b_dev.device_id, b_cert)] {
        let d = admin(
            &w.state,
            "GET",
            &format!("/admin/v1/devices/{id}"),
            serde_json::Value::Null,
        )
        .await
        .json();
        assert_eq!(d["cert_thumbprint"], verify::thumbprint(cert).as_str());
    }
}

#[tokio::test]
async fn blocking_reenrollment_and_removal() {
    let w = world().await;
    let dev = Device::new();
    let e = EnrolledDevice::from_response(dev.rekeyed(), &enroll(&w, &dev).await);
    let cert = e.provisioned.client_der.clone();
    let path = format!("/admin/v1/devices/{}", dev.device_id);

    // Blocked: certificates refused, renewal refused, the hardware cannot enroll again.
    let r = admin(
        &w.state,
        "POST",
        &format!("{path}/block"),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "blocked");
    assert_eq!(manage_with(&w, &dev.device_id, &cert).await, "401");
    let r = renew(
        &w,
        &dev.rekeyed(),
        &dev,
        &cert,
        &cert,
        ns::token::PKCS7_SECEXT,
    )
    .await;
    assert_eq!(verify::fault_subcode(&r), "s:Authorization");
    let again = Device::new().with_ids("OTHER-ID-SAME-HW", &dev.hw_dev_id);
    assert_eq!(
        verify::fault_subcode(&enroll(&w, &again).await),
        "s:Authorization"
    );
    let r = admin(
        &w.state,
        "POST",
        &format!("{path}/unblock"),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(r.json()["status"], "enrolled");
    assert_eq!(manage_with(&w, &dev.device_id, &cert).await, "200");

    // Re-enrollment replaces the certificate: the old one is refused from then on.
    let re_key = dev.rekeyed();
    let re = EnrolledDevice::from_response(re_key.rekeyed(), &enroll(&w, &re_key).await);
    assert_ne!(
        re.provisioned.client_thumbprint,
        e.provisioned.client_thumbprint
    );
    assert_eq!(manage_with(&w, &dev.device_id, &cert).await, "401");
    assert_eq!(
        manage_with(&w, &dev.device_id, &re.provisioned.client_der).await,
        "200"
    );

    // Removal: the DMClient Unenroll goes out; the device is removed when it acknowledges.
    let r = admin(&w.state, "DELETE", &path, serde_json::Value::Null).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["status"], "removing");
    let mut c = DmClient::new(
        &dev.device_id,
        "https://manage.example.com/ManagementServer/MDM.svc",
    );
    c.start_session();
    let body = c.message(|c| c.package1("user", "HW"), true);
    let req = mtls_event(
        "/ManagementServer/MDM.svc",
        "application/vnd.syncml.dm+xml",
        &body,
        &re.provisioned.client_der,
    );
    let reply =
        Reply::parse(&inprocess::response(winmdm_http::manage::handle(&w.state, req).await).body);
    let cmds = reply.item_commands();
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].verb, ItemVerb::Exec);
    assert!(
        cmds[0].items[0]
            .target
            .as_deref()
            .unwrap()
            .ends_with("/Unenroll")
    );
    assert_eq!(
        admin(&w.state, "GET", &path, serde_json::Value::Null)
            .await
            .json()["status"],
        "enrolled"
    );
    let body = c.message(|c| c.answer(&reply, |_| 200, |_| String::new()), true);
    let req = mtls_event(
        "/ManagementServer/MDM.svc",
        "application/vnd.syncml.dm+xml",
        &body,
        &re.provisioned.client_der,
    );
    winmdm_http::manage::handle(&w.state, req).await;
    assert_eq!(
        admin(&w.state, "GET", &path, serde_json::Value::Null)
            .await
            .json()["status"],
        "removed"
    );
    assert_eq!(
        manage_with(&w, &dev.device_id, &re.provisioned.client_der).await,
        "401"
    );

    // With force, at once.
    let other = Device::new();
    verify::soap_ok(&enroll(&w, &other).await);
    let r = admin(
        &w.state,
        "DELETE",
        &format!("/admin/v1/devices/{}?force=true", other.device_id),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "removed");
}

async fn device_json(w: &World, id: &str) -> serde_json::Value {
    admin(
        &w.state,
        "GET",
        &format!("/admin/v1/devices/{id}"),
        serde_json::Value::Null,
    )
    .await
    .json()
}

/// Queues a Get for a device and returns the command's id.
async fn queue_get(w: &World, id: &str) -> String {
    let r = admin(
        &w.state,
        "POST",
        &format!("/admin/v1/devices/{id}/commands"),
        json!({"verb": "Get", "target": "./Vendor/MSFT/WiFi/Profile"}),
    )
    .await;
    assert_eq!(r.status, 202);
    r.json()["id"].as_str().unwrap().to_owned()
}

/// A queued command as the admin API shows it.
async fn command_json(w: &World, device_id: &str, id: &str) -> serde_json::Value {
    admin(
        &w.state,
        "GET",
        &format!("/admin/v1/devices/{device_id}/commands/{id}"),
        serde_json::Value::Null,
    )
    .await
    .json()
}

/// Package #1 over mTLS; returns the reply.
async fn session_with(w: &World, device_id: &str, cert: &[u8]) -> Reply {
    let mut c = DmClient::new(
        device_id,
        "https://manage.example.com/ManagementServer/MDM.svc",
    );
    c.start_session();
    let body = c.message(|c| c.package1("user", "HW"), true);
    let req = mtls_event(
        "/ManagementServer/MDM.svc",
        "application/vnd.syncml.dm+xml",
        &body,
        cert,
    );
    Reply::parse(&inprocess::response(winmdm_http::manage::handle(&w.state, req).await).body)
}

fn refused_by_identity_rules(r: &HttpResponse) {
    assert_eq!(verify::fault_subcode(r), "s:Authorization", "{}", r.text());
    assert!(
        r.text()
            .contains("<ErrorType>CustomServerError</ErrorType>"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn enrollment_cannot_take_over_another_users_device() {
    let w = world().await;
    add_user(&w, BOB).await;
    let alice_dev = Device::new();
    let alice = EnrolledDevice::from_response(alice_dev.rekeyed(), &enroll(&w, &alice_dev).await);
    let queued = queue_get(&w, &alice_dev.device_id).await;
    let before = device_json(&w, &alice_dev.device_id).await;

    // Bob claims Alice's DeviceID without an HWDevID, then with her HWDevID.
    for hw in ["", alice_dev.hw_dev_id.as_str()] {
        let forged = Device::new().with_ids(&alice_dev.device_id, hw);
        refused_by_identity_rules(&enroll_as(&w, &forged, BOB).await);
    }
    // Bob enrolls a new DeviceID with Alice's HWDevID, in another case.
    let forged = Device::new().with_ids("BOBS-NEW-ID", &alice_dev.hw_dev_id.to_lowercase());
    refused_by_identity_rules(&enroll_as(&w, &forged, BOB).await);
    assert_eq!(
        admin(
            &w.state,
            "GET",
            "/admin/v1/devices/BOBS-NEW-ID",
            serde_json::Value::Null
        )
        .await
        .status,
        404
    );

    // Alice's record, certificate and queue are untouched, and her device still gets the
    // command queued for it.
    assert_eq!(device_json(&w, &alice_dev.device_id).await, before);
    let reply = session_with(&w, &alice_dev.device_id, &alice.provisioned.client_der).await;
    assert_eq!(reply.header_status().data, "200");
    assert_eq!(reply.item_commands().len(), 1);
    let cmd = admin(
        &w.state,
        "GET",
        &format!(
            "/admin/v1/devices/{}/commands/{queued}",
            alice_dev.device_id
        ),
        serde_json::Value::Null,
    )
    .await
    .json();
    assert_eq!(cmd["state"], "sent");

    // Alice herself, on the same hardware, can enroll again (a reset).
    verify::soap_ok(&enroll(&w, &alice_dev.rekeyed()).await);
}

#[tokio::test]
async fn a_blocked_devices_user_cannot_enroll_around_the_block() {
    let w = world().await;
    let dev = Device::new();
    verify::soap_ok(&enroll(&w, &dev).await);
    let r = admin(
        &w.state,
        "POST",
        &format!("/admin/v1/devices/{}/block", dev.device_id),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(r.status, 200);
    // A new DeviceID with no HWDevID, then with another HWDevID.
    let no_hw = Device::new().with_ids("NEW-ID-1", "");
    refused_by_identity_rules(&enroll(&w, &no_hw).await);
    let other_hw = Device::new().with_ids("NEW-ID-2", "OTHER-HW");
    refused_by_identity_rules(&enroll(&w, &other_hw).await);
    assert_eq!(
        admin(
            &w.state,
            "GET",
            "/admin/v1/devices",
            serde_json::Value::Null
        )
        .await
        .json()["devices"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "nothing was written"
    );
    // Unblocked, the user may enroll other devices again.
    admin(
        &w.state,
        "POST",
        &format!("/admin/v1/devices/{}/unblock", dev.device_id),
        serde_json::Value::Null,
    )
    .await;
    verify::soap_ok(&enroll(&w, &other_hw).await);
}

/// The operator removes `device_id` (forced), and Bob enrolls that DeviceID on his own
/// hardware.
async fn remove_and_enroll_as_bob(w: &World, device_id: &str) -> EnrolledDevice {
    let r = admin(
        &w.state,
        "DELETE",
        &format!("/admin/v1/devices/{device_id}?force=true"),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(r.json()["status"], "removed");
    let bobs = Device::new().with_ids(device_id, "BOBS-HW");
    EnrolledDevice::from_response(bobs.rekeyed(), &enroll_as(w, &bobs, BOB).await)
}

#[tokio::test]
async fn a_freed_device_id_inherits_nothing() {
    let w = world().await;
    add_user(&w, BOB).await;
    let dev = Device::new();
    verify::soap_ok(&enroll(&w, &dev).await);
    let queued = queue_get(&w, &dev.device_id).await;
    // The operator removed it: anyone may enroll that DeviceID now, as a fresh device.
    let e = remove_and_enroll_as_bob(&w, &dev.device_id).await;
    let d = device_json(&w, &dev.device_id).await;
    assert_eq!(d["upn"], BOB);
    assert_eq!(d["status"], "enrolled");
    let cmd = command_json(&w, &dev.device_id, &queued).await;
    assert_eq!(cmd["state"], "failed", "{cmd}");
    assert!(cmd["reason"].as_str().unwrap().contains("enrolled again"));
    let reply = session_with(&w, &dev.device_id, &e.provisioned.client_der).await;
    assert_eq!(reply.header_status().data, "200");
    assert!(
        reply.item_commands().is_empty(),
        "Alice's queued command is not delivered to Bob"
    );
}

/// When a device's hardware enrolls again under a new DeviceID, the record under the old
/// id is superseded and its queue is cancelled with it: whoever later claims the old
/// DeviceID (a fresh record, as far as enrollment can tell) is not handed it. It used to
/// be: the old record's open commands stayed under the id.
#[tokio::test]
async fn a_superseded_device_ids_queue_is_not_handed_on() {
    let w = world().await;
    add_user(&w, BOB).await;
    let first = Device::new();
    verify::soap_ok(&enroll(&w, &first).await);
    let queued = queue_get(&w, &first.device_id).await;
    let renamed = Device::new().with_ids(&Device::new().device_id, &first.hw_dev_id);
    verify::soap_ok(&enroll(&w, &renamed).await);
    assert_eq!(
        admin(
            &w.state,
            "GET",
            &format!("/admin/v1/devices/{}", first.device_id),
            serde_json::Value::Null,
        )
        .await
        .status,
        404,
        "superseded"
    );

    let bobs = Device::new().with_ids(&first.device_id, "BOBS-HW");
    let bob = EnrolledDevice::from_response(bobs.rekeyed(), &enroll_as(&w, &bobs, BOB).await);
    let reply = session_with(&w, &first.device_id, &bob.provisioned.client_der).await;
    assert_eq!(reply.header_status().data, "200");
    assert!(
        reply.item_commands().is_empty(),
        "the old queue is not Bob's"
    );
    let cmd = command_json(&w, &first.device_id, &queued).await;
    assert_eq!(cmd["state"], "failed", "{cmd}");
}

/// One message over mTLS presenting `cert`.
async fn manage_message(w: &World, body: &str, cert: &[u8]) -> Reply {
    let req = mtls_event(
        "/ManagementServer/MDM.svc",
        "application/vnd.syncml.dm+xml",
        body,
        cert,
    );
    Reply::parse(&inprocess::response(winmdm_http::manage::handle(&w.state, req).await).body)
}

/// Whoever enrolls a freed DeviceID does not continue its last owner's live session: a
/// message in Alice's SessionID, answering the Get her device was sent, settles nothing.
#[tokio::test]
async fn a_freed_device_id_does_not_continue_the_last_owners_session() {
    let w = world().await;
    add_user(&w, BOB).await;
    let dev = Device::new();
    let alice = EnrolledDevice::from_response(dev.rekeyed(), &enroll(&w, &dev).await);
    let queued = queue_get(&w, &dev.device_id).await;
    let mut c = DmClient::new(
        &dev.device_id,
        "https://manage.example.com/ManagementServer/MDM.svc",
    );
    c.start_session();
    let body = c.message(|c| c.package1("user", "HW"), true);
    let sent = manage_message(&w, &body, &alice.provisioned.client_der).await;
    assert_eq!(sent.item_commands().len(), 1, "Alice's device has the Get");

    let bob = remove_and_enroll_as_bob(&w, &dev.device_id).await;

    // Bob's device goes on in Alice's session: same SessionID, the next MsgID, no Alert
    // 1201, answering her Get.
    let body = c.message(|c| c.answer(&sent, |_| 200, |_| "from bob".into()), true);
    let reply = manage_message(&w, &body, &bob.provisioned.client_der).await;
    assert_eq!(
        reply.header_status().data,
        "200",
        "Bob's certificate is good"
    );
    let cmd = command_json(&w, &dev.device_id, &queued).await;
    assert_eq!(cmd["state"], "failed", "{cmd}");
    assert!(cmd["reason"].as_str().unwrap().contains("enrolled again"));
    assert_eq!(cmd["results"], json!([]), "{cmd}");
}

#[tokio::test]
async fn only_the_current_certificate_renews() {
    let w = world().await;
    let device = Device::new();
    let a = EnrolledDevice::from_response(device.rekeyed(), &enroll(&w, &device).await);
    let cert_a = a.provisioned.client_der.clone();
    let key_b = device.rekeyed();
    let r = renew(
        &w,
        &key_b,
        &device,
        &cert_a,
        &cert_a,
        ns::token::PKCS7_SECEXT,
    )
    .await;
    let (cert_b, _, _) = verify::renewal_doc(&verify::soap_ok(&r));

    // The holder of the old key, within the grace period, asks for a certificate for a
    // key of its own: refused, and the device's current certificate keeps working.
    let stolen = device.rekeyed();
    let r = renew(
        &w,
        &stolen,
        &device,
        &cert_a,
        &cert_a,
        ns::token::PKCS7_SECEXT,
    )
    .await;
    assert_eq!(verify::fault_subcode(&r), "s:Authentication");
    assert_eq!(
        device_json(&w, &device.device_id).await["cert_thumbprint"],
        verify::thumbprint(&cert_b).as_str()
    );
    assert_eq!(manage_with(&w, &device.device_id, &cert_b).await, "200");

    // The device itself never got the answer and asks again from the old certificate for
    // the same new key: it gets a certificate for that key, and the grace period of the
    // old certificate does not restart.
    w.clock.advance(time::Duration::hours(20));
    let r = renew(
        &w,
        &key_b,
        &device,
        &cert_a,
        &cert_a,
        ns::token::PKCS7_SECEXT,
    )
    .await;
    let (cert_b2, _, _) = verify::renewal_doc(&verify::soap_ok(&r));
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(&cert_b2).unwrap();
    assert_eq!(parsed.public_key().raw, key_b.spki_der().as_slice());
    assert_eq!(manage_with(&w, &device.device_id, &cert_b2).await, "200");
    w.clock.advance(time::Duration::hours(5));
    assert_eq!(
        manage_with(&w, &device.device_id, &cert_a).await,
        "401",
        "the old certificate's grace period ended 24 h after the first renewal"
    );
}

#[tokio::test]
async fn deleting_a_user_ends_renewal_but_not_management() {
    let w = world().await;
    let device = Device::new();
    let a = EnrolledDevice::from_response(device.rekeyed(), &enroll(&w, &device).await);
    let cert = a.provisioned.client_der.clone();
    let r = admin(
        &w.state,
        "DELETE",
        &format!("/admin/v1/users/{TEST_UPN}"),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(r.status, 204);
    let r = renew(
        &w,
        &device.rekeyed(),
        &device,
        &cert,
        &cert,
        ns::token::PKCS7_SECEXT,
    )
    .await;
    assert_eq!(verify::fault_subcode(&r), "s:Authorization");
    assert!(
        r.text()
            .contains("<ErrorType>NotEligibleToRenew</ErrorType>")
    );
    // Still managed, so an operator can wipe or unenroll it.
    assert_eq!(manage_with(&w, &device.device_id, &cert).await, "200");
}

async fn upns(w: &World) -> Vec<String> {
    admin(&w.state, "GET", "/admin/v1/users", serde_json::Value::Null)
        .await
        .json()["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["upn"].as_str().unwrap().to_owned())
        .collect()
}

/// A path segment is decoded as a path: `+` is a plus sign. An offboarding script that
/// deletes `a+b@example.com` without escaping the `+` used to delete `a b@…` (or nothing),
/// and the plus-addressed user kept the right to enroll.
#[tokio::test]
async fn deleting_a_plus_addressed_user_deletes_that_user() {
    let w = world().await;
    let plus = "a+b@example.com";
    add_user(&w, plus).await;
    assert!(upns(&w).await.contains(&plus.to_owned()));
    let r = admin(
        &w.state,
        "DELETE",
        &format!("/admin/v1/users/{plus}"),
        serde_json::Value::Null,
    )
    .await;
    assert!(r.status < 300, "{} {}", r.status, r.text());
    assert!(!upns(&w).await.contains(&plus.to_owned()));
}
