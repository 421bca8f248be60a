//! Device authentication by client certificate: through a recorded API Gateway HTTP API
//! (v2) event, as the Lambda function receives it, and through `winmdm-local` serving TLS.

use serde_json::json;
use winmdm_core::config::PreferredAuth;
use winmdm_e2e::device::{CsrSignature, CsrSubject, Device};
use winmdm_e2e::dm::{DmClient, Reply};
use winmdm_e2e::inprocess::{self, apigw_v2_event, pem};
use winmdm_e2e::messages::{self, Credentials};
use winmdm_e2e::tls::TlsClient;
use winmdm_e2e::{EnrolledDevice, TEST_PASSWORD, TEST_UPN, TestServer};
use winmdm_http::AppState;
use winmdm_http::state::AdminAuth;
use winmdm_wire::syncml::ItemVerb;

const FIXTURE: &str = include_str!("../fixtures/apigw-v2/manage-mtls.json");
const ADMIN: (&str, &str) = ("authorization", "Bearer test-admin");

fn enroll_message(device: &Device, to: &str, creds: &Credentials) -> String {
    let csr = device.csr(CsrSignature::Sha256, CsrSubject::Windows);
    let ctx = messages::context_items(&device.device_id, &device.hw_dev_id, "Full");
    messages::request_security_token("urn:uuid:m1", to, creds, &csr, &ctx)
}

async fn lambda_manage(state: &AppState, body: &str, cert: Option<&[u8]>) -> Reply {
    let pem = cert.map(pem);
    let req = apigw_v2_event(FIXTURE, body, pem.as_deref());
    let resp = inprocess::response(winmdm_http::manage::handle(state, req).await);
    assert_eq!(resp.status, 200, "{}", resp.text());
    Reply::parse(&resp.body)
}

#[tokio::test]
async fn recorded_apigw_v2_event_with_client_certificate() {
    let h = inprocess::Harness::new(AdminAuth::Bearer("test-admin".into()));
    let (state, clock) = (&h.state, h.clock.clone());
    let json_ct = ("content-type", "application/json");
    let r = inprocess::call(
        state,
        "POST",
        "/admin/v1/users",
        &[ADMIN, json_ct],
        json!({"upn": TEST_UPN, "password": TEST_PASSWORD}).to_string(),
    )
    .await;
    assert_eq!(r.status, 201);
    let mut enrolled = Vec::new();
    for _ in 0..2 {
        let device = Device::new();
        // The harness is federated: sign in as the login page would.
        let token = state
            .enrollment
            .sign_in(TEST_UPN, TEST_PASSWORD, None)
            .await
            .unwrap();
        let msg = enroll_message(
            &device,
            "https://enterpriseenrollment.example.com/EnrollmentServer/Enrollment.svc",
            &Credentials::Federated { token },
        );
        let resp = inprocess::call(
            state,
            "POST",
            "/EnrollmentServer/Enrollment.svc",
            &[("content-type", "application/soap+xml; charset=utf-8")],
            msg,
        )
        .await;
        enrolled.push(EnrolledDevice::from_response(device, &resp));
    }
    let (a, b) = (&enrolled[0], &enrolled[1]);
    assert_eq!(
        a.management_url,
        "https://manage.example.com/ManagementServer/MDM.svc"
    );
    let r = inprocess::call(
        state,
        "POST",
        &format!("/admin/v1/devices/{}/commands", a.id()),
        &[ADMIN, json_ct],
        json!({"action": "reboot"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 202);

    // A's own certificate, no DM credentials: trusted, and the reboot goes out.
    let mut c = DmClient::new(a.id(), &a.management_url);
    c.start_session();
    let body = c.message(|c| c.package1("user", &a.device.hw_dev_id), true);
    let reply = lambda_manage(state, &body, Some(&a.provisioned.client_der)).await;
    assert_eq!(reply.header_status().data, "200");
    let cmds = reply.item_commands();
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].verb, ItemVerb::Exec);

    // B's certificate for A's session: refused, nothing sent.
    c.start_session();
    let body = c.message(|c| c.package1("user", &a.device.hw_dev_id), true);
    let reply = lambda_manage(state, &body, Some(&b.provisioned.client_der)).await;
    assert_eq!(reply.header_status().data, "401");
    assert!(reply.commands().is_empty(), "nothing sent");

    // No certificate and no credentials: challenged.
    let reply = lambda_manage(state, &body, None).await;
    assert_eq!(reply.header_status().data, "407");

    // A certificate from another CA with A's name: refused.
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, a.id());
    let key = rcgen::KeyPair::generate().unwrap();
    let forged = params.self_signed(&key).unwrap();
    let reply = lambda_manage(state, &body, Some(forged.der())).await;
    assert_eq!(reply.header_status().data, "401");

    // A year and a day later A's certificate has expired: refused.
    clock.advance(time::Duration::days(366));
    c.start_session();
    let body = c.message(|c| c.package1("user", &a.device.hw_dev_id), true);
    let reply = lambda_manage(state, &body, Some(&a.provisioned.client_der)).await;
    assert_eq!(reply.header_status().data, "401");
}

/// `winmdm-local` serving HTTPS with a self-signed server certificate the test trusts,
/// and the enrollment user created.
struct TlsWorld {
    s: TestServer,
    root: Vec<u8>,
    anonymous: TlsClient,
    token: String,
    _dir: tempfile::TempDir,
}

impl TlsWorld {
    async fn start(renewal_grace_seconds: Option<i64>) -> Self {
        Self::start_with(renewal_grace_seconds, None).await
    }

    async fn start_with(
        renewal_grace_seconds: Option<i64>,
        ca_key: Option<winmdm_embedded::LocalCaKey>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server_cert =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .unwrap();
        let cert_path = dir.path().join("server.pem");
        let key_path = dir.path().join("server-key.pem");
        std::fs::write(&cert_path, server_cert.cert.pem()).unwrap();
        std::fs::write(&key_path, server_cert.signing_key.serialize_pem()).unwrap();
        let s = TestServer::start_with(|o| {
            o.auth_policy = PreferredAuth::OnPremise;
            o.tls_cert = Some(cert_path.clone());
            o.tls_key = Some(key_path.clone());
            if let Some(g) = renewal_grace_seconds {
                o.renewal_grace_seconds = g;
            }
            o.ca_key = ca_key;
        })
        .await;
        assert_eq!(s.server.base_url.scheme(), "https");
        let root = server_cert.cert.der().to_vec();
        let anonymous = TlsClient::new(s.server.addr, &root, None);
        let token = format!("Bearer {}", s.server.admin_token());
        let w = Self {
            s,
            root,
            anonymous,
            token,
            _dir: dir,
        };
        // The admin API and enrollment work without a client certificate on this host.
        let r = w
            .admin(
                "POST",
                "/admin/v1/users",
                json!({"upn": TEST_UPN, "password": TEST_PASSWORD}),
            )
            .await;
        assert_eq!(r.status, 201);
        w
    }

    async fn admin(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> winmdm_e2e::HttpResponse {
        let headers = [
            ("authorization", self.token.as_str()),
            ("content-type", "application/json"),
        ];
        self.anonymous
            .send(method, path, &headers, body.to_string().into_bytes())
            .await
            .unwrap()
    }

    async fn enroll(&self, device: &Device) -> winmdm_e2e::HttpResponse {
        let creds = Credentials::Password {
            username: TEST_UPN.into(),
            password: TEST_PASSWORD.into(),
        };
        let msg = enroll_message(
            device,
            "https://localhost/EnrollmentServer/Enrollment.svc",
            &creds,
        );
        self.anonymous
            .send(
                "POST",
                "/EnrollmentServer/Enrollment.svc",
                &[("content-type", "application/soap+xml; charset=utf-8")],
                msg.into_bytes(),
            )
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn winmdm_local_over_tls_with_client_certificates() {
    let w = TlsWorld::start(None).await;
    client_certificates_over_tls(w, "1.2.840.113549.1.1.11").await; // sha256WithRSAEncryption
}

/// The same with `--ca-key ecdsa-p256`: the device's RSA key certified by an ECDSA P-256
/// root, which the device verifies (`EnrolledDevice::from_response`), TLS accepts in the
/// handshake and the session trusts; a forged certificate still fails.
#[tokio::test]
async fn winmdm_local_with_an_ecdsa_ca_over_tls() {
    let w = TlsWorld::start_with(None, Some(winmdm_embedded::LocalCaKey::EcdsaP256)).await;
    client_certificates_over_tls(w, "1.2.840.10045.4.3.2").await; // ecdsa-with-SHA256
}

/// Two devices enroll over TLS; each manages itself with its certificate, not the other,
/// and a self-signed forgery fails the handshake. `signed_with`: the OID the CA signs with.
async fn client_certificates_over_tls(w: TlsWorld, signed_with: &str) {
    let root = &w.root;
    let addr = w.s.server.addr;
    let mut enrolled = Vec::new();
    for _ in 0..2 {
        let device = Device::new();
        let resp = w.enroll(&device).await;
        enrolled.push(EnrolledDevice::from_response(device, &resp));
    }
    let (a, b) = (&enrolled[0], &enrolled[1]);
    assert!(a.management_url.starts_with("https://"));
    {
        use x509_parser::prelude::FromDer as _;
        let (_, cert) =
            x509_parser::certificate::X509Certificate::from_der(&a.provisioned.client_der).unwrap();
        assert_eq!(
            cert.signature_algorithm.algorithm.to_id_string(),
            signed_with
        );
    }
    let r = w
        .admin(
            "POST",
            &format!("/admin/v1/devices/{}/commands", a.id()),
            json!({"verb": "Get", "target": "./DevDetail/SwV"}),
        )
        .await;
    assert_eq!(r.status, 202);

    let syncml = [("content-type", "application/vnd.syncml.dm+xml")];
    let path = "/ManagementServer/MDM.svc?mode=Machine&Platform=WoA";
    let as_a = TlsClient::new(
        addr,
        root,
        Some((&a.provisioned.client_der, a.device.pkcs8_der())),
    );
    let mut c = DmClient::new(a.id(), &a.management_url);
    c.start_session();
    let body = c.message(|c| c.package1("user", &a.device.hw_dev_id), true);
    let r = as_a
        .send("POST", path, &syncml, body.clone().into_bytes())
        .await
        .unwrap();
    let reply = Reply::parse(&r.body);
    assert_eq!(
        reply.header_status().data,
        "200",
        "trusted by its certificate alone"
    );
    assert_eq!(reply.item_commands().len(), 1);

    // B, holding its own key and certificate, claiming to be A: refused.
    let as_b = TlsClient::new(
        addr,
        root,
        Some((&b.provisioned.client_der, b.device.pkcs8_der())),
    );
    c.start_session();
    let body = c.message(|c| c.package1("user", &a.device.hw_dev_id), true);
    let r = as_b
        .send("POST", path, &syncml, body.clone().into_bytes())
        .await
        .unwrap();
    assert_eq!(Reply::parse(&r.body).header_status().data, "401");

    // A certificate from a CA we do not trust fails the handshake.
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, a.id());
    let key = rcgen::KeyPair::generate().unwrap();
    let forged = params.self_signed(&key).unwrap();
    let as_forger = TlsClient::new(addr, root, Some((forged.der(), &key.serialize_der())));
    assert!(
        as_forger
            .send("POST", path, &syncml, body.into_bytes())
            .await
            .is_err()
    );
    w.s.shutdown().await;
}

#[tokio::test]
async fn renewal_over_winmdm_local_tls_with_a_short_grace_period() {
    // 5 s: the renewal, a session with the new certificate and two handshakes must fit
    // in it on a loaded machine (debug build, synced writes).
    let w = TlsWorld::start(Some(5)).await;
    let root = &w.root;
    let addr = w.s.server.addr;
    let device = Device::new();
    let resp = w.enroll(&device).await;
    let enrolled = EnrolledDevice::from_response(device.rekeyed(), &resp);
    let old_cert = enrolled.provisioned.client_der.clone();
    let renew_url = winmdm_e2e::verify::renewal_server_url(&enrolled.provisioned);
    let renew_path = url::Url::parse(&renew_url).unwrap().path().to_owned();

    // Renew over mutual TLS with the current certificate.
    let new_key = device.rekeyed();
    let csr = new_key.csr(CsrSignature::Sha256, CsrSubject::Windows);
    let p7 = device.renewal_pkcs7(&old_cert, &csr);
    let msg = messages::renew_request(
        "urn:uuid:t1",
        &renew_url,
        &p7,
        winmdm_wire::ns::token::PKCS7_SECEXT,
    );
    let as_old = TlsClient::new(addr, root, Some((&old_cert, device.pkcs8_der())));
    let r = as_old
        .send(
            "POST",
            &renew_path,
            &[("content-type", "application/soap+xml; charset=utf-8")],
            msg.into_bytes(),
        )
        .await
        .unwrap();
    let (new_cert, _, _) = winmdm_e2e::verify::renewal_doc(&winmdm_e2e::verify::soap_ok(&r));

    let syncml = [("content-type", "application/vnd.syncml.dm+xml")];
    let path = "/ManagementServer/MDM.svc?mode=Machine&Platform=WoA";
    let session = |id: &str| {
        let mut c = DmClient::new(id, &enrolled.management_url);
        c.start_session();
        c.message(|c| c.package1("user", "HW"), true).into_bytes()
    };
    let as_new = TlsClient::new(addr, root, Some((&new_cert, new_key.pkcs8_der())));
    let r = as_new
        .send("POST", path, &syncml, session(&device.device_id))
        .await
        .unwrap();
    assert_eq!(
        Reply::parse(&r.body).header_status().data,
        "200",
        "the new certificate works"
    );
    let r = as_old
        .send("POST", path, &syncml, session(&device.device_id))
        .await
        .unwrap();
    assert_eq!(
        Reply::parse(&r.body).header_status().data,
        "200",
        "the old one, during the grace period"
    );
    tokio::time::sleep(std::time::Duration::from_millis(5500)).await;
    let r = as_old
        .send("POST", path, &syncml, session(&device.device_id))
        .await
        .unwrap();
    assert_eq!(
        Reply::parse(&r.body).header_status().data,
        "401",
        "and not after it"
    );
    w.s.shutdown().await;
}
