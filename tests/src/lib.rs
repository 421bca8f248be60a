//! Test support: an emulated Windows device and operator driving `winmdm-local` over real
//! HTTP, with real RSA keys, real CSRs and real XML.

pub mod ca_conformance;
pub mod client;
pub mod conformance;
pub mod csp;
pub mod der;
pub mod device;
pub mod dm;
pub mod fleet;
pub mod inprocess;
pub mod messages;
pub mod moto;
pub mod oidc_provider;
pub mod tls;
pub mod verify;

use std::path::PathBuf;

pub use client::{HttpClient, HttpResponse};
use winmdm_local::{LocalServer, Options};

/// `winmdm-local` on an ephemeral loopback port with its own data directory.
pub struct TestServer {
    pub server: LocalServer,
    pub http: HttpClient,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with options adjusted by `tweak` (a fresh temporary data dir by default).
    pub async fn start_with(tweak: impl FnOnce(&mut Options)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut opts = Options::ephemeral(dir.path().to_path_buf());
        tweak(&mut opts);
        let keep = if opts.data_dir == dir.path() {
            Some(dir)
        } else {
            None
        };
        let server = winmdm_local::start(opts).await.expect("server starts");
        Self {
            server,
            http: HttpClient::new(),
            _dir: keep,
        }
    }

    /// Starts on an existing data directory (to test restarts).
    pub async fn start_in(data_dir: PathBuf) -> Self {
        let server = winmdm_local::start(Options::ephemeral(data_dir))
            .await
            .expect("server starts");
        Self {
            server,
            http: HttpClient::new(),
            _dir: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.server.addr, path)
    }

    pub fn discovery_url(&self) -> String {
        self.url("/EnrollmentServer/Discovery.svc")
    }
    pub fn policy_url(&self) -> String {
        self.url("/EnrollmentServer/Policy.svc")
    }
    pub fn enroll_url(&self) -> String {
        self.url("/EnrollmentServer/Enrollment.svc")
    }
    pub fn auth_url(&self) -> String {
        self.url("/EnrollmentServer/Auth")
    }

    /// Submits the federated login form, as the Windows enrollment web view does.
    pub async fn submit_sign_in(&self, appru: &str, upn: &str, password: &str) -> HttpResponse {
        self.http
            .send(
                "POST",
                &self.auth_url(),
                &[("content-type", "application/x-www-form-urlencoded")],
                messages::sign_in_form(appru, upn, password).into_bytes(),
            )
            .await
    }

    /// Calls the admin API with the generated bearer token.
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> HttpResponse {
        let token = format!("Bearer {}", self.server.admin_token());
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.http
            .send(
                method,
                &self.url(&format!("/admin/v1{path}")),
                &[
                    ("authorization", &token),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await
    }

    pub async fn create_user(&self, upn: &str, password: &str) {
        let r = self
            .admin(
                "POST",
                "/users",
                Some(serde_json::json!({"upn": upn, "password": password})),
            )
            .await;
        assert_eq!(r.status, 201, "create user: {}", r.text());
    }

    pub async fn device_count(&self) -> usize {
        let r = self.admin("GET", "/devices?limit=500", None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["devices"].as_array().expect("devices array").len()
    }

    pub fn manage_url(&self) -> String {
        self.url("/ManagementServer/MDM.svc")
    }

    /// Enrolls a fresh emulated device on a federated server (the default: it signs in on
    /// the login page and presents the token; the user is created if needed) and returns
    /// what it was provisioned with.
    pub async fn enroll_device(&self) -> EnrolledDevice {
        self.enroll_device_named("DESKTOP-EMU01").await
    }

    /// [`enroll_device`](Self::enroll_device) with the `DeviceName` the device reports.
    pub async fn enroll_device_named(&self, name: &str) -> EnrolledDevice {
        let _ = self
            .admin(
                "POST",
                "/users",
                Some(serde_json::json!({"upn": TEST_UPN, "password": TEST_PASSWORD})),
            )
            .await;
        let device = device::Device::new();
        let csr = device.csr(device::CsrSignature::Sha256, device::CsrSubject::Windows);
        let mut ctx = messages::context_items(&device.device_id, &device.hw_dev_id, "Full");
        for (k, v) in ctx.iter_mut() {
            if k == "DeviceName" {
                *v = name.to_owned();
            }
        }
        let page = self
            .submit_sign_in(
                "ms-app://windows.immersivecontrolpanel",
                TEST_UPN,
                TEST_PASSWORD,
            )
            .await;
        assert_eq!(page.status, 200, "sign-in: {}", page.text());
        let (_, token) = messages::autopost_fields(&page.text());
        let creds = messages::Credentials::Federated { token };
        let msg =
            messages::request_security_token("urn:uuid:e1", &self.enroll_url(), &creds, &csr, &ctx);
        let resp = self.http.soap(&self.enroll_url(), &msg).await;
        EnrolledDevice::from_response(device, &resp)
    }

    /// Posts a SyncML message the way the Windows DM client does (path plus query).
    pub async fn syncml(&self, xml: &str) -> HttpResponse {
        self.http
            .send(
                "POST",
                &format!("{}?mode=Maintenance&Platform=WoA", self.manage_url()),
                &[
                    ("content-type", "application/vnd.syncml.dm+xml"),
                    ("user-agent", "MSFT OMA DM Client/1.2.0.1"),
                ],
                xml.as_bytes().to_vec(),
            )
            .await
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

pub const TEST_UPN: &str = "alice@example.com";
pub const TEST_PASSWORD: &str = "correct horse battery";

/// A device after enrollment: its key, certificate and DM credentials.
pub struct EnrolledDevice {
    pub device: device::Device,
    pub provisioned: verify::Provisioned,
    pub digest: dm::DigestCredentials,
    pub management_url: String,
}

impl EnrolledDevice {
    pub fn from_response(device: device::Device, resp: &HttpResponse) -> Self {
        let env = verify::soap_ok(resp);
        let provisioned = verify::provisioning_doc(&env);
        let app = verify::characteristic(&provisioned.doc, "APPLICATION").expect("APPLICATION");
        let appsrv = app
            .elements()
            .find(|a| {
                a.attr("type") == Some("APPAUTH") && verify::parm(a, "AAUTHLEVEL") == Some("APPSRV")
            })
            .expect("APPSRV");
        let digest = dm::DigestCredentials {
            name: verify::parm(appsrv, "AAUTHNAME").unwrap().into(),
            secret: verify::parm(appsrv, "AAUTHSECRET").unwrap().into(),
            nonce_b64: verify::parm(appsrv, "AAUTHDATA").unwrap().into(),
        };
        let management_url = verify::parm(app, "ADDR").unwrap().to_owned();
        Self {
            device,
            provisioned,
            digest,
            management_url,
        }
    }

    pub fn id(&self) -> &str {
        &self.device.device_id
    }

    /// A DM client that authenticates with the digest credentials.
    pub fn dm_client(&self) -> dm::DmClient {
        let mut c = dm::DmClient::new(&self.device.device_id, &self.management_url);
        c.digest = Some(self.digest.clone());
        c.send_cred = true;
        c
    }
}
