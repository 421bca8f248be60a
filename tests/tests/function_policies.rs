//! Every DynamoDB call a function makes is one its policy in `template.yaml` allows.
//!
//! moto does not enforce IAM, so a policy that refuses a call the code makes used to be
//! found only on AWS: three were, when this test came (the management write's version
//! bump, a re-enrollment's read of the freed record, and renewal's check that the
//! device's user still exists — every ROBO renewal). Here the handlers run in process on DynamoDB (moto) with
//! an SDK interceptor recording each call — its IAM action, table or index, and leading
//! keys (every item of a transaction) — under the name of the function whose handler is
//! running; `infra/check_function_policies.py` then checks each against that function's
//! statements. Covered: sign-in, enrollment, re-enrollment of a freed DeviceID,
//! management sessions (a command, a profile, an idle poll), renewal, and the admin API's
//! users, devices, commands, profiles, groups, block, unblock and removal. Not covered:
//! the check-in counter (stream batches; `store_dynamodb.rs`) and the CA setup custom
//! resource (`ca_setup.rs`), whose writes are few and fixed.

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use serde_json::{Value, json};
use winmdm_e2e::csp::CspTree;
use winmdm_e2e::device::{CsrSignature, CsrSubject, Device};
use winmdm_e2e::dm::{DmClient, Reply};
use winmdm_e2e::inprocess::{self, Harness, pem};
use winmdm_e2e::messages::{self, Credentials};
use winmdm_e2e::moto::Moto;
use winmdm_e2e::{EnrolledDevice, HttpResponse, TEST_PASSWORD, TEST_UPN};
use winmdm_http::state::AdminAuth;

const MANAGE_FIXTURE: &str = include_str!("../fixtures/apigw-v2/manage-mtls.json");
const ADMIN: (&str, &str) = ("authorization", "Bearer admin");

/// Records the IAM view of each DynamoDB request, under the function running it.
#[derive(Debug, Clone, Default)]
struct Recorder {
    function: Arc<Mutex<&'static str>>,
    calls: Arc<Mutex<Vec<Value>>>,
}

impl Recorder {
    fn running(&self, function: &'static str) {
        *self.function.lock().unwrap() = function;
    }
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "function-policy-recorder"
    }

    fn read_before_transmit(
        &self,
        ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let function = *self.function.lock().unwrap();
        if function.is_empty() {
            return Ok(());
        }
        let req = ctx.request();
        let op = req
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("")
            .to_owned();
        let body: Value =
            serde_json::from_slice(req.body().bytes().unwrap_or_default()).unwrap_or(Value::Null);
        let mut calls = self.calls.lock().unwrap();
        for (action, resource, keys) in iam_view(&op, &body) {
            calls.push(json!({
                "function": function, "action": format!("dynamodb:{action}"),
                "resource": resource, "leading_keys": keys,
            }));
        }
        Ok(())
    }
}

/// What IAM authorises for one request: an action per item, with the table (or index)
/// and the partition key values (`dynamodb:LeadingKeys`).
fn iam_view(op: &str, body: &Value) -> Vec<(String, String, Vec<String>)> {
    let pk = |item: &Value| -> Vec<String> {
        item.get("PK")
            .and_then(|v| v["S"].as_str())
            .map(|s| vec![s.to_owned()])
            .unwrap_or_default()
    };
    let table = || "table".to_owned();
    match op {
        "GetItem" | "DeleteItem" | "UpdateItem" => vec![(op.into(), table(), pk(&body["Key"]))],
        "PutItem" => vec![(op.into(), table(), pk(&body["Item"]))],
        "Query" => {
            // `<partition key attribute> = :placeholder [AND …]`
            let expr = body["KeyConditionExpression"].as_str().unwrap_or("");
            let placeholder = expr
                .split_once('=')
                .map(|(_, rest)| rest.split_whitespace().next().unwrap_or(""))
                .unwrap_or("");
            let key = body["ExpressionAttributeValues"][placeholder]["S"]
                .as_str()
                .map(|s| vec![s.to_owned()])
                .unwrap_or_default();
            let resource = body["IndexName"]
                .as_str()
                .map_or_else(table, |i| format!("index/{i}"));
            vec![(op.into(), resource, key)]
        }
        "TransactWriteItems" | "TransactGetItems" => body["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| {
                let (kind, inner) = item.as_object()?.iter().next()?;
                let action = match kind.as_str() {
                    "Put" => "PutItem",
                    "Update" => "UpdateItem",
                    "Delete" => "DeleteItem",
                    "ConditionCheck" => "ConditionCheckItem",
                    "Get" => "GetItem",
                    other => other,
                };
                let keys = if kind == "Put" {
                    pk(&inner["Item"])
                } else {
                    pk(&inner["Key"])
                };
                Some((action.to_owned(), table(), keys))
            })
            .collect(),
        "BatchGetItem" | "BatchWriteItem" => {
            let mut keys = Vec::new();
            for requests in body["RequestItems"].as_object().into_iter().flatten() {
                for r in requests.1.as_array().into_iter().flatten() {
                    for k in [&r["PutRequest"]["Item"], &r["DeleteRequest"]["Key"], r] {
                        keys.extend(pk(k));
                    }
                }
                for k in requests.1["Keys"].as_array().into_iter().flatten() {
                    keys.extend(pk(k));
                }
            }
            vec![(op.into(), table(), keys)]
        }
        other => vec![(other.to_owned(), table(), Vec::new())],
    }
}

/// An API Gateway v2 event for the management host, as the mTLS domain forwards it.
fn mtls_event(path: &str, body: &str, cert: &[u8]) -> lambda_http::Request {
    use base64::Engine as _;
    let mut e: Value = serde_json::from_str(MANAGE_FIXTURE).unwrap();
    e["rawPath"] = path.into();
    e["routeKey"] = format!("POST {path}").into();
    e["requestContext"]["routeKey"] = format!("POST {path}").into();
    e["requestContext"]["http"]["path"] = path.into();
    e["headers"]["content-type"] = if path.ends_with("Renew.svc") {
        "application/soap+xml; charset=utf-8"
    } else {
        "application/vnd.syncml.dm+xml"
    }
    .into();
    e["body"] = base64::engine::general_purpose::STANDARD
        .encode(body)
        .into();
    e["requestContext"]["authentication"]["clientCert"]["clientCertPem"] = pem(cert).into();
    lambda_http::request::from_str(&e.to_string()).unwrap()
}

struct World {
    h: Harness,
    rec: Recorder,
}

impl World {
    async fn admin(&self, method: &str, path: &str, body: Value) -> HttpResponse {
        self.rec.running("AdminFunction");
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        inprocess::call(
            &self.h.state,
            method,
            &format!("/admin/v1{path}"),
            &[ADMIN, ("content-type", "application/json")],
            body,
        )
        .await
    }

    /// The login page's sign-in, then the enrollment it authorises.
    async fn enroll(&self, device: &Device, upn: &str) -> EnrolledDevice {
        self.rec.running("AuthFunction");
        let page = inprocess::call(
            &self.h.state,
            "POST",
            "/EnrollmentServer/Auth",
            &[("content-type", "application/x-www-form-urlencoded")],
            messages::sign_in_form("ms-app://windows.immersivecontrolpanel", upn, TEST_PASSWORD),
        )
        .await;
        assert_eq!(page.status, 200, "{}", page.text());
        let (_, token) = messages::autopost_fields(&page.text());
        let creds = Credentials::Federated { token };
        self.rec.running("PolicyFunction");
        let r = inprocess::call(
            &self.h.state,
            "POST",
            "/EnrollmentServer/Policy.svc",
            &[("content-type", "application/soap+xml; charset=utf-8")],
            messages::get_policies("urn:uuid:p1", "https://e/p", &creds),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        self.rec.running("EnrollFunction");
        let csr = device.csr(CsrSignature::Sha256, CsrSubject::Windows);
        let ctx = messages::context_items(&device.device_id, &device.hw_dev_id, "Full");
        let msg =
            messages::request_security_token("urn:uuid:e1", "https://e/x", &creds, &csr, &ctx);
        let r = inprocess::call(
            &self.h.state,
            "POST",
            "/EnrollmentServer/Enrollment.svc",
            &[("content-type", "application/soap+xml; charset=utf-8")],
            msg,
        )
        .await;
        EnrolledDevice::from_response(device.rekeyed(), &r)
    }

    async fn manage(&self, cert: &[u8], body: &str) -> Reply {
        self.rec.running("ManageFunction");
        let r = winmdm_http::manage::handle(
            &self.h.state,
            mtls_event("/ManagementServer/MDM.svc", body, cert),
        )
        .await;
        let r = inprocess::response(r);
        assert_eq!(r.status, 200, "{}", r.text());
        Reply::parse(&r.body)
    }

    /// A whole session: package #1, then every command answered from the device's
    /// modelled CSP tree until it ends.
    async fn session(&self, device: &Device, cert: &[u8]) -> usize {
        let mut tree = CspTree::for_device(&device.device_id, &device.hw_dev_id);
        let mut c = DmClient::new(
            &device.device_id,
            "https://manage.example.com/ManagementServer/MDM.svc",
        );
        c.start_session();
        let mut reply = self
            .manage(cert, &c.message(|c| c.package1("user", "HW"), true))
            .await;
        let mut commands = 0;
        for _ in 0..10 {
            if reply.ends_session() {
                return commands;
            }
            commands += reply.item_commands().len();
            let body = c.message(|c| c.answer_from(&reply, &mut tree), true);
            reply = self.manage(cert, &body).await;
        }
        panic!("the session did not end");
    }
}

#[tokio::test]
async fn every_dynamodb_call_is_allowed_by_its_functions_policy() {
    winmdm_e2e::moto::aws_test_environment();
    let moto = Moto::start().await;
    let rec = Recorder::default();
    let client = {
        let conf = aws_sdk_dynamodb::config::Builder::from(&moto.sdk_config().await)
            .interceptor(rec.clone())
            .build();
        aws_sdk_dynamodb::Client::from_conf(conf)
    };
    let store = winmdm_aws::DynamoStore::new(client, "winmdm-policies");
    store.create_table_if_missing().await.expect("table");
    let store = Arc::new(store);
    let w = World {
        h: Harness::with_store(AdminAuth::Bearer("admin".into()), move |_| store),
        rec,
    };

    for upn in [TEST_UPN, "bob@example.com"] {
        let r = w
            .admin(
                "POST",
                "/users",
                json!({"upn": upn, "password": TEST_PASSWORD}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    assert_eq!(w.admin("GET", "/users", Value::Null).await.status, 200);

    let device = Device::new();
    let enrolled = w.enroll(&device, TEST_UPN).await;
    let id = device.device_id.clone();
    let cert = enrolled.provisioned.client_der.clone();

    // A profile for every device, a group, a command: delivered and settled in a session.
    let r = w
        .admin(
            "POST",
            "/profiles",
            json!({"name": "Camera off", "settings": [{"verb": "Replace",
                "target": "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera",
                "format": "int", "data": "0"}], "assignment": {"include": ["all"]}}),
        )
        .await;
    assert!(r.status < 300, "{} {}", r.status, r.text());
    let r = w.admin("POST", "/groups", json!({"name": "laptops"})).await;
    assert!(r.status < 300, "{} {}", r.status, r.text());
    let r = w
        .admin(
            "POST",
            &format!("/devices/{id}/commands"),
            // Not a value the device listing keeps: answering it changes no device field,
            // so the message that applies the profile writes its state and nothing else
            // of the device (the version bump, an UpdateItem).
            json!({"verb": "Get", "target": "./Vendor/MSFT/DeviceStatus/OS/Mode"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(
        w.session(&device, &cert).await >= 2,
        "the profile and the Get"
    );
    // A day later the profile is checked for drift: the message that finds it as it was
    // moves its state and nothing of the device (the device's version bump, UpdateItem).
    w.h.clock.advance(time::Duration::hours(25));
    assert!(w.session(&device, &cert).await >= 1, "the drift check");
    // An idle poll, then the device's views in the admin API.
    assert_eq!(w.session(&device, &cert).await, 0);
    for path in [
        "/overview".to_owned(),
        "/devices".into(),
        format!("/devices/{id}"),
        format!("/devices/{id}/commands"),
        "/profiles".into(),
        "/groups".into(),
    ] {
        let r = w.admin("GET", &path, Value::Null).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }

    // Renewal.
    w.rec.running("RenewFunction");
    let new_key = device.rekeyed();
    let csr = new_key.csr(CsrSignature::Sha256, CsrSubject::Windows);
    let p7 = device.renewal_pkcs7(&cert, &csr);
    let msg = messages::renew_request(
        "urn:uuid:r1",
        "https://manage.example.com/ManagementServer/Renew.svc",
        &p7,
        winmdm_wire::ns::token::PKCS7_SECEXT,
    );
    let r = inprocess::response(
        winmdm_http::renew::handle(
            &w.h.state,
            mtls_event("/ManagementServer/Renew.svc", &msg, &cert),
        )
        .await,
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // Block, unblock, remove; then Bob enrolls the freed DeviceID.
    for (method, path) in [
        ("POST", format!("/devices/{id}/block")),
        ("POST", format!("/devices/{id}/unblock")),
        ("DELETE", format!("/devices/{id}?force=true")),
    ] {
        let r = w.admin(method, &path, Value::Null).await;
        assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.text());
    }
    let bobs = Device::new().with_ids(&id, "BOBS-HW");
    let bob = w.enroll(&bobs, "bob@example.com").await;
    w.session(&bobs, &bob.provisioned.client_der).await;
    let r = w
        .admin("DELETE", "/users/bob@example.com", Value::Null)
        .await;
    assert!(r.status < 300, "{}", r.text());

    // The check, by the script that reads the template.
    let calls = std::mem::take(&mut *w.rec.calls.lock().unwrap());
    let functions: std::collections::BTreeSet<&str> = calls
        .iter()
        .filter_map(|c| c["function"].as_str())
        .collect();
    assert_eq!(
        functions.into_iter().collect::<Vec<_>>(),
        [
            "AdminFunction",
            "AuthFunction",
            "EnrollFunction",
            "ManageFunction",
            "PolicyFunction",
            "RenewFunction"
        ],
        "every function that reads or writes the table was driven"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calls.json");
    std::fs::write(&path, serde_json::to_vec(&calls).unwrap()).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(winmdm_e2e::moto::venv_python())
        .arg(root.join("infra/check_function_policies.py"))
        .arg(root.join("template.yaml"))
        .arg(&path)
        .output()
        .expect("the policy checker runs");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
}
