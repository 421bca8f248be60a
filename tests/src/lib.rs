//! Test support: an emulated Windows device and operator driving `winmdm-local` over real
//! HTTP, with real RSA keys, real CSRs and real XML.

pub mod client;
pub mod conformance;
pub mod der;
pub mod device;
pub mod messages;
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

    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}
