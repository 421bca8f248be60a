//! Emulated Windows devices with a CSP tree each, enrolled and running whole management
//! sessions — against `winmdm-local` over HTTP or against the handlers in process (with a
//! clock the test moves) — while an operator works the admin API.

use serde_json::Value;

use crate::csp::CspTree;
use crate::device::{CsrSignature, CsrSubject, Device};
use crate::dm::{DmClient, Reply};
use crate::inprocess::{self, Harness};
use crate::messages::{self, Credentials};
use crate::{EnrolledDevice, HttpResponse, TEST_PASSWORD, TEST_UPN, TestServer};

/// Where requests go.
pub enum Server<'a> {
    Local(&'a TestServer),
    InProcess(&'a Harness),
}

const ADMIN_TOKEN: &str = "admin";

impl Server<'_> {
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> HttpResponse {
        match self {
            Server::Local(s) => s.admin(method, path, body).await,
            Server::InProcess(h) => {
                let auth = format!("Bearer {ADMIN_TOKEN}");
                inprocess::call(
                    &h.state,
                    method,
                    &format!("/admin/v1{path}"),
                    &[
                        ("authorization", &auth),
                        ("content-type", "application/json"),
                    ],
                    body.map(|b| b.to_string()).unwrap_or_default(),
                )
                .await
            }
        }
    }

    pub async fn syncml(&self, xml: &str) -> HttpResponse {
        self.syncml_with_bearer(xml, None).await
    }

    /// A SyncML message with `Authorization: Bearer <token>` (in process only).
    pub async fn syncml_with_bearer(&self, xml: &str, bearer: Option<&str>) -> HttpResponse {
        let auth = bearer.map(|b| format!("Bearer {b}"));
        match self {
            Server::Local(_) if auth.is_some() => unimplemented!("bearer tokens in process only"),
            Server::Local(s) => s.syncml(xml).await,
            Server::InProcess(h) => {
                let mut headers = vec![("content-type", "application/vnd.syncml.dm+xml")];
                if let Some(a) = &auth {
                    headers.push(("authorization", a.as_str()));
                }
                inprocess::call(
                    &h.state,
                    "POST",
                    "/ManagementServer/MDM.svc",
                    &headers,
                    xml.to_owned(),
                )
                .await
            }
        }
    }

    /// Enrolls a new emulated device for the test user (created if needed).
    pub async fn enroll(&self) -> EnrolledDevice {
        match self {
            Server::Local(s) => s.enroll_device().await,
            Server::InProcess(h) => {
                let _ = self
                    .admin(
                        "POST",
                        "/users",
                        Some(serde_json::json!({"upn": TEST_UPN, "password": TEST_PASSWORD})),
                    )
                    .await;
                let device = Device::new();
                let csr = device.csr(CsrSignature::Sha256, CsrSubject::Windows);
                let ctx = messages::context_items(&device.device_id, &device.hw_dev_id, "Full");
                let token = h
                    .state
                    .enrollment
                    .sign_in(TEST_UPN, TEST_PASSWORD, None)
                    .await
                    .expect("sign-in");
                let msg = messages::request_security_token(
                    "urn:uuid:fleet",
                    "https://e/x",
                    &Credentials::Federated { token },
                    &csr,
                    &ctx,
                );
                let r = inprocess::call(
                    &h.state,
                    "POST",
                    "/EnrollmentServer/Enrollment.svc",
                    &[("content-type", "application/soap+xml; charset=utf-8")],
                    msg,
                )
                .await;
                EnrolledDevice::from_response(device, &r)
            }
        }
    }
}

/// An enrolled emulated device with its CSP tree.
pub struct FleetDevice {
    pub enrolled: EnrolledDevice,
    pub client: DmClient,
    pub tree: CspTree,
    /// What package #1 reports in Alert 1224: `user` (someone signed in), `others`, …
    pub login_status: &'static str,
    /// An Entra user token package #1 sends in Alert 1224 `com.microsoft/MDM/AADUserToken`.
    pub aad_user_token: Option<String>,
    /// An Entra user token sent as `Authorization: Bearer` with every message.
    pub bearer: Option<String>,
}

impl FleetDevice {
    pub async fn enroll(server: &Server<'_>) -> Self {
        Self::from_enrolled(server.enroll().await)
    }

    /// A device enrolled some other way, with a fresh CSP tree.
    pub fn from_enrolled(enrolled: EnrolledDevice) -> Self {
        let client = enrolled.dm_client();
        let tree = CspTree::for_device(enrolled.id(), &enrolled.device.hw_dev_id);
        Self {
            enrolled,
            client,
            tree,
            login_status: "user",
            aad_user_token: None,
            bearer: None,
        }
    }

    pub fn id(&self) -> &str {
        self.enrolled.id()
    }

    /// Runs one whole session: package #1, then answers every command from the tree until
    /// the server ends the session. Returns the number of messages the device sent.
    pub async fn session(&mut self, server: &Server<'_>) -> usize {
        self.client.start_session();
        let hw = self.enrolled.device.hw_dev_id.clone();
        let login = self.login_status;
        let aad = self.aad_user_token.clone();
        let xml = self.client.message(
            |c| {
                let mut cmds = c.package1(login, &hw);
                if let Some(token) = aad {
                    cmds.push(c.aad_user_token_alert(&token));
                }
                cmds
            },
            true,
        );
        let mut reply = self.send(server, &xml).await;
        let mut messages = 1;
        while !reply.ends_session() {
            assert!(messages < 50, "the session does not end");
            let tree = &mut self.tree;
            let answer = self.client.answer_from(&reply, tree);
            let xml = self.client.message(|_| answer, true);
            reply = self.send(server, &xml).await;
            messages += 1;
        }
        messages
    }

    async fn send(&mut self, server: &Server<'_>, xml: &str) -> Reply {
        let r = server.syncml_with_bearer(xml, self.bearer.as_deref()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let reply = Reply::parse(&r.body);
        assert_eq!(
            reply.header_status().data,
            "200",
            "authenticated: {}",
            String::from_utf8_lossy(&r.body)
        );
        self.client.take_next_nonce(&reply);
        reply
    }
}

/// A harness whose admin API takes the bearer token the fleet uses.
pub fn harness() -> Harness {
    Harness::new(winmdm_http::state::AdminAuth::Bearer(ADMIN_TOKEN.into()))
}
