//! An emulated Windows device enrolls against `winmdm-local` over HTTP: discovery, the
//! federated login page and on-premise auth, XCEP, WSTEP, and the provisioning document
//! with its certificate chain.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use winmdm_core::config::PreferredAuth;
use winmdm_e2e::device::{CsrSignature, CsrSubject, Device};
use winmdm_e2e::messages::{self, Credentials};
use winmdm_e2e::verify::{self, characteristic, parm};
use winmdm_e2e::{HttpResponse, TestServer};
use winmdm_wire::ns;
use winmdm_wire::xml::{self, Element};

const UPN: &str = "alice@example.com";
const PASSWORD: &str = "correct horse battery";

fn password_creds() -> Credentials {
    Credentials::Password {
        username: UPN.into(),
        password: PASSWORD.into(),
    }
}

fn discover_result(resp: &HttpResponse) -> Element {
    let env = verify::soap_ok(resp);
    env.path(&[
        (ns::SOAP, "Body"),
        (ns::DISCOVERY, "DiscoverResponse"),
        (ns::DISCOVERY, "DiscoverResult"),
    ])
    .expect("DiscoverResult")
    .clone()
}

async fn enroll(
    s: &TestServer,
    device: &Device,
    creds: &Credentials,
    csr: &[u8],
    enrollment_type: &str,
) -> HttpResponse {
    let ctx = messages::context_items(&device.device_id, &device.hw_dev_id, enrollment_type);
    let msg = messages::request_security_token(
        "urn:uuid:0d5a1441-5891-453b-becf-a2e5f6ea3749",
        &s.enroll_url(),
        creds,
        csr,
        &ctx,
    );
    s.http.soap(&s.enroll_url(), &msg).await
}

#[tokio::test]
async fn discovery_answers_get_and_negotiates_every_version() {
    let s = TestServer::start().await;
    for path in [
        "/EnrollmentServer/Discovery.svc",
        "/enrollmentserver/discovery.svc",
    ] {
        let r = s.http.get(&s.url(path)).await;
        assert_eq!(r.status, 200, "GET {path}");
    }
    for (requested, answered) in [
        ("3.0", "3.0"),
        ("4.0", "4.0"),
        ("6.0", "4.0"),
        ("9.0", "4.0"),
    ] {
        for ns_uri in [ns::DISCOVERY, &format!("{}/", ns::DISCOVERY)] {
            let msg = messages::discover(
                "urn:uuid:748132ec-a575-4329-b01b-6171a9cf8478",
                &s.discovery_url(),
                UPN,
                requested,
                &["OnPremise", "Federated"],
                ns_uri,
            );
            let resp = s.http.soap(&s.discovery_url(), &msg).await;
            let env = verify::soap_ok(&resp);
            assert_eq!(
                verify::relates_to(&env).as_deref(),
                Some("urn:uuid:748132ec-a575-4329-b01b-6171a9cf8478")
            );
            let r = discover_result(&resp);
            let text = |n: &str| r.child(ns::DISCOVERY, n).map(|e| e.text());
            assert_eq!(text("AuthPolicy").as_deref(), Some("Federated"));
            assert_eq!(
                text("EnrollmentVersion").as_deref(),
                Some(answered),
                "requested {requested}"
            );
            assert_eq!(text("EnrollmentServiceUrl"), Some(s.enroll_url()));
            assert_eq!(text("EnrollmentPolicyServiceUrl"), Some(s.policy_url()));
            assert_eq!(text("AuthenticationServiceUrl"), Some(s.auth_url()));
        }
    }
    // A device that offers only OnPremise, or only Certificate, gets a fault: a federated
    // server takes no UsernameToken, so it never answers OnPremise.
    for offered in ["OnPremise", "Certificate"] {
        let msg = messages::discover(
            "urn:uuid:2",
            &s.discovery_url(),
            UPN,
            "4.0",
            &[offered],
            ns::DISCOVERY,
        );
        let resp = s.http.soap(&s.discovery_url(), &msg).await;
        assert_eq!(
            verify::fault_subcode(&resp),
            "s:EnrollmentServer",
            "{offered}"
        );
        assert!(resp.text().contains("<ErrorType>NotSupported</ErrorType>"));
        assert!(resp.text().contains("this server accepts Federated"));
    }
    s.shutdown().await;
}

#[tokio::test]
async fn onpremise_configuration_answers_only_onpremise_and_has_no_login_page() {
    let s = TestServer::start_with(|o| o.auth_policy = PreferredAuth::OnPremise).await;
    let both = messages::discover(
        "urn:uuid:1",
        &s.discovery_url(),
        UPN,
        "6.0",
        &["OnPremise", "Federated"],
        ns::DISCOVERY,
    );
    let r = discover_result(&s.http.soap(&s.discovery_url(), &both).await);
    assert_eq!(
        r.child(ns::DISCOVERY, "AuthPolicy").unwrap().text(),
        "OnPremise"
    );
    assert!(r.child(ns::DISCOVERY, "AuthenticationServiceUrl").is_none());
    let fed = messages::discover(
        "urn:uuid:1",
        &s.discovery_url(),
        UPN,
        "6.0",
        &["Federated"],
        ns::DISCOVERY,
    );
    let resp = s.http.soap(&s.discovery_url(), &fed).await;
    assert_eq!(verify::fault_subcode(&resp), "s:EnrollmentServer");
    assert!(resp.text().contains("<ErrorType>NotSupported</ErrorType>"));
    // Passwords are taken only in the SOAP requests: no login page to guess on.
    s.create_user(UPN, PASSWORD).await;
    let r = s
        .submit_sign_in("ms-app://windows.immersivecontrolpanel", UPN, PASSWORD)
        .await;
    assert_eq!(r.status, 404);
    assert!(!r.text().contains("wresult"));
    s.shutdown().await;
}

fn check_policy_response(resp: &HttpResponse) {
    let env = verify::soap_ok(resp);
    let gp = env
        .path(&[(ns::SOAP, "Body"), (ns::XCEP, "GetPoliciesResponse")])
        .expect("GetPoliciesResponse");
    let attrs = gp
        .path(&[
            (ns::XCEP, "response"),
            (ns::XCEP, "policies"),
            (ns::XCEP, "policy"),
            (ns::XCEP, "attributes"),
        ])
        .expect("attributes");
    assert_eq!(attrs.child(ns::XCEP, "policySchema").unwrap().text(), "3");
    assert_eq!(
        attrs
            .path(&[
                (ns::XCEP, "privateKeyAttributes"),
                (ns::XCEP, "minimalKeyLength")
            ])
            .unwrap()
            .text(),
        "2048"
    );
    let validity = attrs.child(ns::XCEP, "certificateValidity").unwrap();
    let secs = |n: &str| {
        validity
            .child(ns::XCEP, n)
            .unwrap()
            .text()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(secs("validityPeriodSeconds"), 365 * 86400);
    assert_eq!(secs("renewalPeriodSeconds"), 42 * 86400);
    let oids = gp.child(ns::XCEP, "oIDs").unwrap();
    let hash_ref = attrs
        .child(ns::XCEP, "hashAlgorithmOIDReference")
        .unwrap()
        .text();
    let hash = oids
        .elements()
        .find(|o| o.child(ns::XCEP, "oIDReferenceID").unwrap().text() == hash_ref)
        .expect("hash OID reference resolves");
    assert_eq!(
        hash.child(ns::XCEP, "value").unwrap().text(),
        "2.16.840.1.101.3.4.2.1"
    );
    let policy_ref = gp
        .path(&[
            (ns::XCEP, "response"),
            (ns::XCEP, "policies"),
            (ns::XCEP, "policy"),
            (ns::XCEP, "policyOIDReference"),
        ])
        .unwrap()
        .text();
    assert!(
        oids.elements()
            .any(|o| o.child(ns::XCEP, "oIDReferenceID").unwrap().text() == policy_ref)
    );
}

fn check_provisioning(
    resp: &HttpResponse,
    device: &Device,
    store: &str,
    management_url: &str,
) -> verify::Provisioned {
    let env = verify::soap_ok(resp);
    assert_eq!(
        verify::relates_to(&env).as_deref(),
        Some("urn:uuid:0d5a1441-5891-453b-becf-a2e5f6ea3749")
    );
    let p = verify::provisioning_doc(&env);
    assert_eq!(p.client_store, store);
    verify::check_device_certificate(
        &p.root_der,
        &p.client_der,
        &device.device_id,
        &device.spki_der(),
    );

    let app = characteristic(&p.doc, "APPLICATION").expect("w7 APPLICATION");
    assert_eq!(parm(app, "APPID"), Some("w7"));
    assert_eq!(parm(app, "ADDR"), Some(management_url));
    assert_eq!(
        parm(app, "DEFAULTENCODING"),
        Some("application/vnd.syncml.dm+xml")
    );
    let provider = parm(app, "PROVIDER-ID").expect("PROVIDER-ID");
    let auths: Vec<&Element> = app
        .elements()
        .filter(|c| c.attr("type") == Some("APPAUTH"))
        .collect();
    assert_eq!(auths.len(), 2);
    let client = auths
        .iter()
        .find(|a| parm(a, "AAUTHLEVEL") == Some("CLIENT"))
        .expect("CLIENT");
    assert_eq!(parm(client, "AAUTHTYPE"), Some("DIGEST"));
    assert!(parm(client, "AAUTHSECRET").is_some_and(|s| s.len() >= 16));
    assert!(parm(client, "AAUTHDATA").is_some_and(|d| B64.decode(d).is_ok()));
    let appsrv = auths
        .iter()
        .find(|a| parm(a, "AAUTHLEVEL") == Some("APPSRV"))
        .expect("APPSRV");
    assert_eq!(parm(appsrv, "AAUTHTYPE"), Some("DIGEST"));
    assert!(parm(appsrv, "AAUTHNAME").is_some());
    assert!(parm(appsrv, "AAUTHSECRET").is_some_and(|s| s.len() >= 16));

    let dm = characteristic(&p.doc, "DMClient")
        .and_then(|d| characteristic(d, "Provider"))
        .and_then(|p| characteristic(p, provider))
        .expect("DMClient/Provider/<PROVIDER-ID>");
    assert_eq!(parm(dm, "UPN"), Some(UPN));
    assert_eq!(parm(dm, "EntDMID"), Some(device.device_id.as_str()));
    let poll = characteristic(dm, "Poll").expect("Poll");
    let int = |n: &str| parm(poll, n).unwrap().parse::<u32>().unwrap();
    assert!(int("NumberOfFirstRetries") > 0);
    assert!(int("IntervalForRemainingScheduledRetries") >= 1440);
    p
}

#[tokio::test]
async fn onpremise_device_enrolls_and_is_recorded() {
    let s = TestServer::start_with(|o| o.auth_policy = PreferredAuth::OnPremise).await;
    s.create_user(UPN, PASSWORD).await;
    let device = Device::new();

    let policy = messages::get_policies("urn:uuid:p1", &s.policy_url(), &password_creds());
    let resp = s.http.soap(&s.policy_url(), &policy).await;
    check_policy_response(&resp);

    let csr = device.csr(CsrSignature::Sha256, CsrSubject::Plain("ignored".into()));
    let resp = enroll(&s, &device, &password_creds(), &csr, "Device").await;
    let mgmt = s.url("/ManagementServer/MDM.svc");
    let p = check_provisioning(&resp, &device, "System", &mgmt);

    let r = s
        .admin("GET", &format!("/devices/{}", device.device_id), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let d = r.json();
    assert_eq!(d["id"], device.device_id.as_str());
    assert_eq!(d["hw_dev_id"], device.hw_dev_id.as_str());
    assert_eq!(d["upn"], UPN);
    assert_eq!(d["enrollment_type"], "device");
    assert_eq!(d["status"], "enrolled");
    assert_eq!(d["cert_thumbprint"], p.client_thumbprint.as_str());
    assert!(
        d["cert_not_after"]
            .as_str()
            .unwrap()
            .starts_with(&(time::OffsetDateTime::now_utc().year() + 1).to_string())
    );
    assert!(d["enrolled_at"].is_string());
    assert_eq!(d["os"]["os_version"], "10.0.22621.2");
    assert_eq!(d["os"]["device_name"], "DESKTOP-EMU01");
    assert!(
        d.get("dm_credentials").is_none(),
        "credentials never leave the server"
    );

    let list = s.admin("GET", "/devices", None).await.json();
    assert_eq!(list["devices"].as_array().unwrap().len(), 1);
    assert!(list["next"].is_null());
    assert_eq!(s.admin("GET", "/devices/UNKNOWN", None).await.status, 404);
    s.shutdown().await;
}

async fn federated_sign_in(s: &TestServer, appru: &str) -> String {
    let page = s
        .http
        .get(&format!(
            "{}?appru={}&login_hint={}",
            s.auth_url(),
            url::form_urlencoded::byte_serialize(appru.as_bytes()).collect::<String>(),
            url::form_urlencoded::byte_serialize(UPN.as_bytes()).collect::<String>()
        ))
        .await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text();
    assert!(html.contains("<form method=\"post\""));
    assert!(
        html.contains(&format!("value=\"{UPN}\"")),
        "login_hint prefilled"
    );
    let done = s.submit_sign_in(appru, UPN, PASSWORD).await;
    assert_eq!(done.status, 200, "{}", done.text());
    let (action, token) = messages::autopost_fields(&done.text());
    assert_eq!(action, appru, "posts back to appru exactly");
    assert!(!token.is_empty());
    token
}

#[tokio::test]
async fn federated_device_enrolls_with_a_windows_sha1_csr_and_token_is_single_use() {
    let s = TestServer::start().await;
    s.create_user(UPN, PASSWORD).await;
    let token = federated_sign_in(&s, "ms-app://windows.immersivecontrolpanel").await;
    let creds = Credentials::Federated { token };

    let policy = messages::get_policies("urn:uuid:p1", &s.policy_url(), &creds);
    check_policy_response(&s.http.soap(&s.policy_url(), &policy).await);

    // The real-capture shape: OIW SHA-1 signature and the `!`/NUL PrintableString subject.
    let device = Device::new();
    let csr = device.csr(CsrSignature::OiwSha1, CsrSubject::Windows);
    let resp = enroll(&s, &device, &creds, &csr, "Full").await;
    check_provisioning(&resp, &device, "User", &s.url("/ManagementServer/MDM.svc"));
    assert_eq!(s.device_count().await, 1);

    // The same token again, for another device: refused, nothing stored.
    let other = Device::new();
    let csr = other.csr(CsrSignature::Sha256, CsrSubject::Windows);
    let resp = enroll(&s, &other, &creds, &csr, "Full").await;
    assert_eq!(verify::fault_subcode(&resp), "s:Authentication");
    assert_eq!(s.device_count().await, 1);
    assert_eq!(
        s.admin("GET", &format!("/devices/{}", other.device_id), None)
            .await
            .status,
        404
    );

    // A fresh sign-in works, with the pkcs-1 SHA-1 OID too.
    let token = federated_sign_in(&s, "ms-app://windows.immersivecontrolpanel").await;
    let csr = other.csr(CsrSignature::Sha1, CsrSubject::Windows);
    let resp = enroll(&s, &other, &Credentials::Federated { token }, &csr, "Full").await;
    check_provisioning(&resp, &other, "User", &s.url("/ManagementServer/MDM.svc"));
    assert_eq!(s.device_count().await, 2);
    s.shutdown().await;
}

#[tokio::test]
async fn login_page_refuses_foreign_appru_escapes_input_and_rejects_bad_passwords() {
    let s =
        TestServer::start_with(|o| o.appru_allow = vec!["https://portal.example.com/done".into()])
            .await;
    s.create_user(UPN, PASSWORD).await;
    for bad in ["https://evil.example.com/steal", "javascript:alert(1)", ""] {
        let r = s
            .http
            .get(&format!(
                "{}?appru={}",
                s.auth_url(),
                url::form_urlencoded::byte_serialize(bad.as_bytes()).collect::<String>()
            ))
            .await;
        assert_eq!(r.status, 400, "appru {bad:?}");
    }
    // An allow-listed https appru works end to end.
    let token = federated_sign_in(&s, "https://portal.example.com/done").await;
    assert!(!token.is_empty());

    let hint = "\"><script>alert(1)</script>";
    let r = s
        .http
        .get(&format!(
            "{}?appru=ms-app%3A%2F%2Fx&login_hint={}",
            s.auth_url(),
            url::form_urlencoded::byte_serialize(hint.as_bytes()).collect::<String>()
        ))
        .await;
    assert_eq!(r.status, 200);
    assert!(!r.text().contains("<script>alert"));
    assert!(r.text().contains("&lt;script&gt;"));

    let r = s
        .submit_sign_in("ms-app://x", "alice@example.com", "wrong")
        .await;
    assert_eq!(r.status, 401);
    assert!(!r.text().contains("wresult"));
    assert!(r.text().contains("incorrect"));
    s.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_the_right_faults_and_store_nothing() {
    let s = TestServer::start_with(|o| o.auth_policy = PreferredAuth::OnPremise).await;
    s.create_user(UPN, PASSWORD).await;
    let device = Device::new();
    let good_csr = device.csr(CsrSignature::Sha256, CsrSubject::Windows);

    // Wrong password and unknown user: s:Authentication, in XCEP and WSTEP.
    for creds in [
        Credentials::Password {
            username: UPN.into(),
            password: "nope-nope".into(),
        },
        Credentials::Password {
            username: "mallory@example.com".into(),
            password: PASSWORD.into(),
        },
        Credentials::None,
        Credentials::Federated {
            token: "forged.token".into(),
        },
    ] {
        let p = messages::get_policies("urn:uuid:p", &s.policy_url(), &creds);
        assert_eq!(
            verify::fault_subcode(&s.http.soap(&s.policy_url(), &p).await),
            "s:Authentication"
        );
        let r = enroll(&s, &device, &creds, &good_csr, "Full").await;
        assert_eq!(verify::fault_subcode(&r), "s:Authentication", "{creds:?}");
    }

    // Malformed XML, an entity bomb, and a non-SOAP body: s:MessageFormat.
    for body in [
        "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"><s:Body>".to_owned(),
        format!(
            "<?xml version=\"1.0\"?><!DOCTYPE s [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;\">]><s:Envelope xmlns:s=\"{}\"><s:Body>&b;</s:Body></s:Envelope>",
            ns::SOAP
        ),
        "<html>hello</html>".to_owned(),
    ] {
        for url in [s.discovery_url(), s.policy_url(), s.enroll_url()] {
            let r = s.http.soap(&url, &body).await;
            assert_eq!(verify::fault_subcode(&r), "s:MessageFormat", "{url}");
        }
    }

    // Weak key, bad signature, garbage: s:CertificateRequest.
    for csr in [
        winmdm_e2e::device::weak_key_csr(&device.device_id),
        winmdm_e2e::device::tamper(good_csr.clone()),
        b"not a certificate request".to_vec(),
    ] {
        let r = enroll(&s, &device, &password_creds(), &csr, "Full").await;
        assert_eq!(verify::fault_subcode(&r), "s:CertificateRequest");
    }

    // Missing DeviceID or a bad EnrollmentType: s:MessageFormat with InvalidEnrollmentData.
    for (drop, enrollment_type) in [("DeviceID", "Full"), ("", "Sideways")] {
        let ctx: Vec<_> =
            messages::context_items(&device.device_id, &device.hw_dev_id, enrollment_type)
                .into_iter()
                .filter(|(k, _)| k != drop)
                .collect();
        let msg = messages::request_security_token(
            "urn:uuid:x",
            &s.enroll_url(),
            &password_creds(),
            &good_csr,
            &ctx,
        );
        let r = s.http.soap(&s.enroll_url(), &msg).await;
        assert_eq!(verify::fault_subcode(&r), "s:MessageFormat");
        assert!(r.text().contains("InvalidEnrollmentData"));
    }

    // Over 1 MiB: refused before parsing.
    let huge = format!("<s:Envelope>{}</s:Envelope>", "x".repeat(1024 * 1024 + 1));
    let r = s.http.soap(&s.enroll_url(), &huge).await;
    assert_eq!(r.status, 413);

    assert_eq!(s.device_count().await, 0, "no failure stored anything");
    // And the good request still works afterwards.
    let r = enroll(&s, &device, &password_creds(), &good_csr, "Full").await;
    verify::soap_ok(&r);
    assert_eq!(s.device_count().await, 1);
    s.shutdown().await;
}

/// A value the server cannot use is named in its fault (and log line) in at most 64
/// bytes, control characters escaped: a 900 KiB TokenType or RequestType starting with
/// `&#1;` used to come back whole, as a fault that was not well-formed XML. (An attribute
/// that long, the ValueType, is refused by the parser's limit.)
#[tokio::test]
async fn faults_quote_what_they_refuse_briefly_and_well_formed() {
    let s = TestServer::start_with(|o| o.auth_policy = PreferredAuth::OnPremise).await;
    s.create_user(UPN, PASSWORD).await;
    let device = Device::new();
    let csr = device.csr(CsrSignature::Sha256, CsrSubject::Windows);
    let ctx = messages::context_items(&device.device_id, &device.hw_dev_id, "Full");
    let msg = messages::request_security_token(
        "urn:uuid:f1",
        &s.enroll_url(),
        &password_creds(),
        &csr,
        &ctx,
    );
    let hostile = format!("&#1;{}", "x".repeat(900 * 1024));
    for (what, genuine) in [
        ("TokenType", winmdm_wire::ns::token::DEVICE_ENROLLMENT_TOKEN),
        ("RequestType", winmdm_wire::ns::token::REQUEST_ISSUE),
        ("ValueType", winmdm_wire::ns::token::PKCS10),
    ] {
        assert!(msg.contains(genuine), "{what}");
        let r = s
            .http
            .soap(&s.enroll_url(), &msg.replace(genuine, &hostile))
            .await;
        assert_eq!(r.status, 500, "{what}: a SOAP fault");
        assert!(r.body.len() < 4096, "{what}: {} bytes", r.body.len());
        winmdm_wire::xml::parse(&r.body).unwrap_or_else(|e| panic!("{what}: {e}"));
        let named = r.text().contains("\\u{1}xxxx") || r.text().contains("limit of 65536 bytes");
        assert!(named, "{what}: {}", r.text());
    }
}

#[tokio::test]
async fn re_enrollment_of_the_same_hardware_replaces_only_that_device() {
    let s = TestServer::start_with(|o| o.auth_policy = PreferredAuth::OnPremise).await;
    s.create_user(UPN, PASSWORD).await;
    let bystander = Device::new();
    let first = Device::new();
    for d in [&bystander, &first] {
        let csr = d.csr(CsrSignature::Sha256, CsrSubject::Windows);
        verify::soap_ok(&enroll(&s, d, &password_creds(), &csr, "Full").await);
    }
    let before = s
        .admin("GET", &format!("/devices/{}", bystander.device_id), None)
        .await
        .json();

    // Same hardware, new key and new DeviceID (a reset PC).
    let again = Device::new().with_ids("REENROLLED0001", &first.hw_dev_id);
    let csr = again.csr(CsrSignature::Sha256, CsrSubject::Windows);
    let resp = enroll(&s, &again, &password_creds(), &csr, "Full").await;
    let p = verify::provisioning_doc(&verify::soap_ok(&resp));

    assert_eq!(s.device_count().await, 2);
    assert_eq!(
        s.admin("GET", &format!("/devices/{}", first.device_id), None)
            .await
            .status,
        404
    );
    let now = s.admin("GET", "/devices/REENROLLED0001", None).await.json();
    assert_eq!(now["hw_dev_id"], first.hw_dev_id.as_str());
    assert_eq!(now["cert_thumbprint"], p.client_thumbprint.as_str());
    let after = s
        .admin("GET", &format!("/devices/{}", bystander.device_id), None)
        .await
        .json();
    assert_eq!(before, after, "the other device is untouched");

    // Same DeviceID claimed from other hardware: refused, nothing changes.
    let imposter = Device::new().with_ids("REENROLLED0001", "FFFF");
    let csr = imposter.csr(CsrSignature::Sha256, CsrSubject::Windows);
    let r = enroll(&s, &imposter, &password_creds(), &csr, "Full").await;
    assert_eq!(verify::fault_subcode(&r), "s:Authorization");
    assert_eq!(
        s.admin("GET", "/devices/REENROLLED0001", None).await.json(),
        now
    );
    s.shutdown().await;
}

#[tokio::test]
async fn data_and_ca_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_in(dir.path().to_path_buf()).await;
    s.create_user(UPN, PASSWORD).await;
    let d = Device::new();
    let csr = d.csr(CsrSignature::Sha256, CsrSubject::Windows);
    let token = federated_sign_in(&s, "ms-app://windows.immersivecontrolpanel").await;
    let creds = Credentials::Federated { token };
    let first = verify::provisioning_doc(&verify::soap_ok(
        &enroll(&s, &d, &creds, &csr, "Full").await,
    ));
    let token = s.server.admin_token();
    s.shutdown().await;

    // The CA's key type is fixed: asking for another refuses to start, and replaces nothing.
    let mut opts = winmdm_local::Options::ephemeral(dir.path().to_path_buf());
    opts.ca_key = Some(winmdm_embedded::LocalCaKey::EcdsaP256);
    let err = winmdm_local::start(opts).await.err().expect("refused");
    assert!(
        err.to_string()
            .contains("has an rsa-2048 key, not ecdsa-p256"),
        "{err}"
    );

    let s = TestServer::start_in(dir.path().to_path_buf()).await;
    assert_eq!(s.server.admin_token(), token);
    assert_eq!(s.device_count().await, 1);
    let r = s
        .admin(
            "POST",
            "/users",
            Some(serde_json::json!({"upn": UPN, "password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, 409, "user kept");
    let d2 = Device::new();
    let csr = d2.csr(CsrSignature::Sha256, CsrSubject::Windows);
    let token = federated_sign_in(&s, "ms-app://windows.immersivecontrolpanel").await;
    let creds = Credentials::Federated { token };
    let second = verify::provisioning_doc(&verify::soap_ok(
        &enroll(&s, &d2, &creds, &csr, "Full").await,
    ));
    assert_eq!(
        first.root_thumbprint, second.root_thumbprint,
        "same CA after restart"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn admin_api_requires_the_token_and_validates_input() {
    let s = TestServer::start().await;
    let r = s.http.get(&s.url("/admin/v1/devices")).await;
    assert_eq!(r.status, 401);
    let r = s
        .http
        .send(
            "GET",
            &s.url("/admin/v1/devices"),
            &[("authorization", "Bearer wrong")],
            vec![],
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        s.admin("POST", "/users", Some(serde_json::json!({"upn": "a@b"})))
            .await
            .status,
        400
    );
    assert_eq!(
        s.admin(
            "POST",
            "/users",
            Some(serde_json::json!({"upn": "a@b", "password": "short"}))
        )
        .await
        .status,
        400
    );
    s.create_user("Bob@Example.com", "long enough password")
        .await;
    let r = s
        .admin(
            "POST",
            "/users",
            Some(serde_json::json!({"upn": "bob@example.com", "password": "another password"})),
        )
        .await;
    assert_eq!(r.status, 409, "UPNs are case-insensitive");
    let users = s.admin("GET", "/users", None).await.json();
    assert_eq!(users["users"][0]["upn"], "bob@example.com");
    assert!(
        !users.to_string().contains("argon2"),
        "hashes never leave the server"
    );
    assert_eq!(s.admin("GET", "/nothing", None).await.status, 404);
    assert_eq!(s.admin("GET", "/devices?limit=abc", None).await.status, 400);
    s.shutdown().await;
}

/// The listing's search covers what inventory reports: before the `inventory` action the
/// serial number is unknown; after it, a search by serial (any case) finds the device.
/// Name and UPN search, filters, sorting and refusals go through the same admin route.
#[tokio::test]
async fn inventory_feeds_the_device_listing_search() {
    use winmdm_e2e::csp::CspTree;
    use winmdm_e2e::fleet::{FleetDevice, Server};
    let s = TestServer::start().await;
    let server = Server::Local(&s);
    let mut a = FleetDevice::from_enrolled(s.enroll_device_named("FINANCE-LAPTOP-7").await);
    // Renamed since it enrolled: the listing shows the name inventory reports.
    a.tree.set(
        "./DevDetail/Ext/Microsoft/DeviceName",
        "FINANCE-LAPTOP-8",
        winmdm_e2e::csp::Format::Chr,
    );
    let mut b = FleetDevice::enroll(&server).await;
    a.session(&server).await;
    b.session(&server).await;
    let serial = CspTree::serial_number(&a.enrolled.device.hw_dev_id);
    let list = |query: String| {
        let s = &s;
        async move {
            let r = s.admin("GET", &format!("/devices?{query}"), None).await;
            (r.status, r.json())
        }
    };
    let ids = |v: &serde_json::Value| {
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let q = serial.to_lowercase();
    assert!(
        ids(&list(format!("q={q}")).await.1).is_empty(),
        "no serial known yet"
    );

    let r = s
        .admin(
            "POST",
            &format!("/devices/{}/commands", a.id()),
            Some(serde_json::json!({"action": "inventory"})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    a.session(&server).await;
    let (st, found) = list(format!("q={q}")).await;
    assert_eq!(st, 200);
    assert_eq!(ids(&found), [a.id()]);
    assert_eq!(found["devices"][0]["serial"], serial.as_str());
    assert_eq!(found["devices"][0]["os_version"], "10.0.26100.2605");
    assert_eq!(found["devices"][0]["name"], "FINANCE-LAPTOP-8");
    assert_eq!(ids(&list("q=finance-LAPTOP".into()).await.1), [a.id()]);
    assert_eq!(ids(&list("q=%3Cscript%3E".into()).await.1).len(), 0);
    let both = ids(&list(format!("q={}", UPN.split('@').next().unwrap()))
        .await
        .1);
    assert_eq!(both.len(), 2, "both devices are the test user's");
    assert!(ids(&list("status=blocked".into()).await.1).is_empty());
    assert_eq!(
        ids(&list("seen=1h&status=enrolled".into()).await.1).len(),
        2
    );
    let by_name = list("sort=name&order=desc".into()).await.1;
    assert_eq!(by_name["devices"].as_array().unwrap().len(), 2);
    for bad in [
        "sort=hwid",
        "status=lost",
        "seen=yesterday",
        "cursor=i.zz",
        "colour=red",
    ] {
        let (st, v) = list(bad.into()).await;
        assert_eq!(st, 400, "{bad}");
        assert!(
            v["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{bad}: {v}"
        );
    }
    s.shutdown().await;
}

#[tokio::test]
async fn device_listing_pages_with_a_cursor() {
    let s = TestServer::start_with(|o| o.auth_policy = PreferredAuth::OnPremise).await;
    s.create_user(UPN, PASSWORD).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let d = Device::new();
        let csr = d.csr(CsrSignature::Sha256, CsrSubject::Windows);
        verify::soap_ok(&enroll(&s, &d, &password_creds(), &csr, "Full").await);
        ids.push(d.device_id.clone());
    }
    ids.sort();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/devices?limit=2&cursor={c}"),
            None => "/devices?limit=2".to_owned(),
        };
        let page = s.admin("GET", &path, None).await.json();
        for d in page["devices"].as_array().unwrap() {
            seen.push(d["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    s.shutdown().await;
}

#[test]
fn wire_parser_is_what_the_tests_read_with() {
    // Guards the helper: the test parser resolves namespaces, so checks above are real.
    let e = xml::parse(b"<a:x xmlns:a=\"urn:a\"/>").unwrap();
    assert!(e.is("urn:a", "x"));
}
