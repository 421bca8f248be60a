//! Response builders. Every response carries an explicit Content-Length and is never
//! chunked (Windows' enrollment and DM clients require it).

use http::{HeaderValue, StatusCode, header};
use lambda_http::Body;

pub type Response = http::Response<Body>;

pub const SOAP_CONTENT_TYPE: &str = "application/soap+xml; charset=utf-8";
/// Largest request body accepted by any endpoint.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub fn bytes(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response {
    let len = body.len();
    let mut resp = http::Response::new(if body.is_empty() {
        Body::Empty
    } else {
        Body::Binary(body)
    });
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if !content_type.is_empty() {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).expect("static content type"),
        );
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

pub fn soap(status: StatusCode, xml: String) -> Response {
    bytes(status, SOAP_CONTENT_TYPE, xml.into_bytes())
}

pub fn html(status: StatusCode, page: String) -> Response {
    let mut r = bytes(status, "text/html; charset=utf-8", page.into_bytes());
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    r
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    bytes(
        status,
        "application/json",
        serde_json::to_vec(value).expect("JSON values serialize"),
    )
}

/// A JSON error body: `{"error": message}`.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    json(status, &serde_json::json!({ "error": message.into() }))
}

pub fn text(status: StatusCode, message: &str) -> Response {
    bytes(
        status,
        "text/plain; charset=utf-8",
        format!("{message}\n").into_bytes(),
    )
}

pub fn method_not_allowed(allow: &'static str) -> Response {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// A request body over [`MAX_BODY_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTooLarge;

impl BodyTooLarge {
    pub fn response(self) -> Response {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body is larger than 1 MiB",
        )
    }
}

/// The request body, unless it is over the limit.
pub fn body_bytes(body: &Body) -> Result<&[u8], BodyTooLarge> {
    let b: &[u8] = match body {
        Body::Empty => &[],
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    };
    if b.len() > MAX_BODY_BYTES {
        return Err(BodyTooLarge);
    }
    Ok(b)
}
