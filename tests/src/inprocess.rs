//! Driving the handlers in process, the way the Lambda runtime does: no HTTP server,
//! requests built directly or parsed from API Gateway events.

use crate::HttpResponse;
use winmdm_http::AppState;

/// Turns a handler's response into the tests' response type.
pub fn response(resp: winmdm_http::respond::Response) -> HttpResponse {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = match resp.into_body() {
        lambda_http::Body::Text(t) => t.into_bytes(),
        lambda_http::Body::Binary(b) => b,
        _ => Vec::new(),
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// Sends a request through the router.
pub async fn call(
    state: &AppState,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> HttpResponse {
    let mut b = http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(lambda_http::Body::from(body)).expect("request");
    response(winmdm_http::router::dispatch(state, req).await)
}

/// An API Gateway HTTP API (v2) event fixture with the body and client certificate
/// filled in, parsed by lambda_http exactly as the Lambda runtime would.
pub fn apigw_v2_event(
    fixture: &str,
    body: &str,
    client_cert_pem: Option<&str>,
) -> lambda_http::Request {
    use base64::Engine as _;
    let mut event: serde_json::Value = serde_json::from_str(fixture).expect("fixture JSON");
    event["body"] = base64::engine::general_purpose::STANDARD
        .encode(body)
        .into();
    event["headers"]["content-length"] = body.len().to_string().into();
    match client_cert_pem {
        Some(pem) => {
            event["requestContext"]["authentication"]["clientCert"]["clientCertPem"] = pem.into()
        }
        None => {
            event["requestContext"]
                .as_object_mut()
                .expect("requestContext")
                .remove("authentication");
        }
    }
    lambda_http::request::from_str(&event.to_string()).expect("lambda_http parses the event")
}

/// PEM of a DER certificate, wrapped at 64 columns as API Gateway forwards it.
pub fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("ascii"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The handlers on the embedded adapters in a temporary directory, configured as deployed
/// (`enterpriseenrollment.example.com`, `manage.example.com`), with a clock the test moves.
pub struct Harness {
    pub state: AppState,
    pub clock: std::sync::Arc<winmdm_core::clock::ManualClock>,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub fn new(admin: winmdm_http::state::AdminAuth) -> Self {
        Self::with_store(admin, |dir| {
            std::sync::Arc::new(
                winmdm_embedded::RedbStore::open(&dir.join("s.redb")).expect("store"),
            )
        })
    }

    /// The same, on the store `store` makes (given the harness's temporary directory).
    pub fn with_store(
        admin: winmdm_http::state::AdminAuth,
        store: impl FnOnce(&std::path::Path) -> std::sync::Arc<dyn winmdm_core::store::Store>,
    ) -> Self {
        use std::sync::Arc;
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(winmdm_core::clock::ManualClock::new(
            time::OffsetDateTime::now_utc(),
        ));
        let mut config = winmdm_core::config::EnrollmentConfig::new(
            "https://enterpriseenrollment.example.com"
                .parse()
                .expect("URL"),
        );
        config.management_base_url = "https://manage.example.com".parse().expect("URL");
        let state = AppState::new(
            config,
            store(dir.path()),
            Arc::new(winmdm_embedded::LocalCa::open_or_create(&dir.path().join("ca")).expect("CA")),
            clock.clone(),
            vec![7; 32],
            admin,
        )
        .expect("state");
        Self {
            state,
            clock,
            _dir: dir,
        }
    }
}
