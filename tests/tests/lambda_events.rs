//! Every function's Lambda handler path: a recorded API Gateway HTTP API (v2) event from
//! `tests/fixtures/apigw-v2/` is parsed by lambda_http, exactly as the runtime does, and
//! handed to the handler that function's binary runs.

use time::OffsetDateTime;
use winmdm_core::model::User;
use winmdm_core::password::hash_password;
use winmdm_e2e::HttpResponse;
use winmdm_e2e::dm::Reply;
use winmdm_e2e::inprocess::{self, pem};
use winmdm_e2e::verify;
use winmdm_http::state::AdminAuth;

fn event(name: &str) -> lambda_http::Request {
    let path = format!("{}/fixtures/apigw-v2/{name}", env!("CARGO_MANIFEST_DIR"));
    let json = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    lambda_http::request::from_str(&json).unwrap_or_else(|e| panic!("{name} parses: {e}"))
}

/// A SOAP fixture recorded with on-premise credentials, carrying instead the federated
/// token from the login page (the server is federated, and takes only that).
fn event_with_token(name: &str, wresult: &str) -> lambda_http::Request {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    let path = format!("{}/fixtures/apigw-v2/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let body = String::from_utf8(B64.decode(json["body"].as_str().unwrap()).unwrap()).unwrap();
    let start = body.find("<wsse:UsernameToken").expect("UsernameToken");
    let end = body.find("</wsse:UsernameToken>").unwrap() + "</wsse:UsernameToken>".len();
    let token = format!(
        r#"<wsse:BinarySecurityToken ValueType="{}" EncodingType="{}">{}</wsse:BinarySecurityToken>"#,
        winmdm_wire::ns::token::DEVICE_ENROLLMENT_USER_TOKEN,
        winmdm_wire::ns::token::BASE64_BINARY,
        B64.encode(wresult)
    );
    let body = format!("{}{token}{}", &body[..start], &body[end..]);
    json["body"] = B64.encode(&body).into();
    json["headers"]["content-length"] = body.len().to_string().into();
    lambda_http::request::from_str(&json.to_string()).unwrap()
}

#[tokio::test]
async fn every_fixture_through_its_function_handler() {
    // As deployed: the admin route is IAM-authorised by API Gateway.
    let h = inprocess::Harness::new(AdminAuth::Gateway);
    let state = &h.state;
    let store = state.store.clone();
    store
        .create_user(&User {
            upn: "alice@example.com".into(),
            password_hash: hash_password("correct horse battery").unwrap(),
            created_at: OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
    let call = |r: winmdm_http::respond::Response| -> HttpResponse { inprocess::response(r) };

    let r = call(winmdm_http::discovery::handle(state, event("discovery-get.json")).await);
    assert_eq!(r.status, 200);

    let r = call(winmdm_http::discovery::handle(state, event("discovery-post.json")).await);
    let env = verify::soap_ok(&r);
    assert!(
        r.text()
            .contains("<EnrollmentVersion>4.0</EnrollmentVersion>")
    );
    assert!(r.text().contains("<AuthenticationServiceUrl>https://enterpriseenrollment.example.com/EnrollmentServer/Auth</AuthenticationServiceUrl>"));
    assert!(verify::relates_to(&env).is_some());

    let r = call(winmdm_http::auth::handle(state, event("auth-get.json")).await);
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("value=\"alice@example.com\""),
        "login_hint from the query string"
    );

    let r = call(winmdm_http::auth::handle(state, event("auth-post.json")).await);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text()
            .contains("action=\"ms-app://windows.immersivecontrolpanel\"")
    );
    assert!(r.text().contains("name=\"wresult\""));
    let (_, wresult) = winmdm_e2e::messages::autopost_fields(&r.text());

    // The recorded on-premise requests are refused: this server is federated.
    let r = call(winmdm_http::policy::handle(state, event("policy.json")).await);
    assert_eq!(verify::fault_subcode(&r), "s:Authentication");

    let r =
        call(winmdm_http::policy::handle(state, event_with_token("policy.json", &wresult)).await);
    assert!(
        verify::soap_ok(&r)
            .path(&[
                (winmdm_wire::ns::SOAP, "Body"),
                (winmdm_wire::ns::XCEP, "GetPoliciesResponse")
            ])
            .is_some()
    );

    let r =
        call(winmdm_http::enroll::handle(state, event_with_token("enroll.json", &wresult)).await);
    let provisioned = verify::provisioning_doc(&verify::soap_ok(&r));

    let r = call(winmdm_http::admin::handle(state, event("admin-list-devices.json")).await);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["devices"][0]["id"], "FIXTURE0DEVICE0ID");

    // The management fixture carries package #1; fill in the device's new certificate.
    let path = format!(
        "{}/fixtures/apigw-v2/manage-mtls.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["requestContext"]["authentication"]["clientCert"]["clientCertPem"] =
        pem(&provisioned.client_der).into();
    let req = lambda_http::request::from_str(&json.to_string()).unwrap();
    let r = call(winmdm_http::manage::handle(state, req).await);
    assert_eq!(r.status, 200);
    let reply = Reply::parse(&r.body);
    assert_eq!(reply.header_status().data, "200");
    assert_eq!(reply.statuses().len(), 4, "SyncHdr plus the three commands");

    // Its PKCS#7 was made by OpenSSL (Python's cryptography): it verifies here.
    {
        let req = event("renew-mtls.json");
        let body = match req.body() {
            lambda_http::Body::Binary(b) => b.clone(),
            lambda_http::Body::Text(t) => t.clone().into_bytes(),
            _ => panic!("fixture has a body"),
        };
        let env = winmdm_wire::soap::Envelope::parse(&body).unwrap();
        let rst = winmdm_wire::wstep::RequestSecurityToken::from_envelope(&env).unwrap();
        let winmdm_wire::wstep::CertificateRequest::Pkcs7(p7) = rst.request else {
            panic!()
        };
        let signed =
            winmdm_core::pkcs7::verify_signed_data(&p7).expect("third-party PKCS#7 verifies");
        winmdm_core::csr::verify_csr(&signed.content, 2048).expect("wraps a valid PKCS#10");
    }
    // The renewal fixture is a well-formed ROBO request, signed by a self-signed
    // certificate this server never issued: refused with a fault the device understands.
    let r = call(winmdm_http::renew::handle(state, event("renew-mtls.json")).await);
    assert_eq!(verify::fault_subcode(&r), "s:Authentication");

    // As shipped (no real certificate), the fixture is refused without revealing why.
    let r = call(winmdm_http::manage::handle(state, event("manage-mtls.json")).await);
    assert_eq!(Reply::parse(&r.body).header_status().data, "407");
}

/// With IAM admin auth, the admin function serves its API only to a caller API Gateway
/// authorised through IAM: the same event without the gateway's `authorizer.iam` —
/// arriving as the console's routes do, without IAM — is refused, through both the API's
/// handler and the function's (which also serves the console). It used to be served.
#[tokio::test]
async fn the_admin_api_needs_the_gateways_iam_caller() {
    let h = inprocess::Harness::new(AdminAuth::Gateway);
    let path = format!(
        "{}/fixtures/apigw-v2/admin-list-devices.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let with_iam = lambda_http::request::from_str(&json.to_string()).unwrap();
    assert_eq!(
        inprocess::response(winmdm_http::admin::handle_with_console(&h.state, with_iam).await)
            .status,
        200
    );
    json["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("authorizer");
    for handler in [false, true] {
        let req = lambda_http::request::from_str(&json.to_string()).unwrap();
        let r = inprocess::response(if handler {
            winmdm_http::admin::handle_with_console(&h.state, req).await
        } else {
            winmdm_http::admin::handle(&h.state, req).await
        });
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(r.text().contains("no IAM caller"), "{}", r.text());
    }
}
