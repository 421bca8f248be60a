//! Outbound HTTPS requests (an OpenID provider's discovery document, key set and token
//! endpoint): bounded in time and size, HTTPS only except to loopback (a test's stand-in
//! provider), system root certificates.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;

/// Longest response body read.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// Time for a whole request.
pub const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("{0} is not an https URL (plain http is allowed only to loopback)")]
    Insecure(String),
    #[error("{url}: {reason}")]
    Failed { url: String, reason: String },
}

/// Whether `url` may be fetched: https, or http to a loopback address.
pub fn allowed(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        },
        _ => false,
    }
}

/// A response: its status and body.
pub struct Fetched {
    pub status: http::StatusCode,
    pub body: Bytes,
}

/// GET, or POST a form, and read the (bounded) response.
pub async fn fetch(
    url: &str,
    form: Option<&[(&str, &str)]>,
    basic_auth: Option<(&str, &str)>,
) -> Result<Fetched, FetchError> {
    let failed = |reason: String| FetchError::Failed {
        url: url.to_owned(),
        reason,
    };
    let parsed = url::Url::parse(url).map_err(|e| failed(e.to_string()))?;
    if !allowed(&parsed) {
        return Err(FetchError::Insecure(url.to_owned()));
    }
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| failed(format!("loading the system's root certificates: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Full<Bytes>>(https);
    let mut req = hyper::Request::builder()
        .uri(url)
        .header("accept", "application/json");
    let body = match form {
        Some(fields) => {
            req = req
                .method("POST")
                .header("content-type", "application/x-www-form-urlencoded");
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(fields)
                .finish()
        }
        None => String::new(),
    };
    if let Some((user, password)) = basic_auth {
        use base64::Engine as _;
        // RFC 6749 §2.3.1: form-encode, then Basic.
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let cred = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            enc(user),
            enc(password)
        ));
        req = req.header("authorization", format!("Basic {cred}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| failed(e.to_string()))?;
    let work = async {
        let res = client
            .request(req)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = res.status();
        let body = Limited::new(res.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| failed(format!("reading the response: {e}")))?
            .to_bytes();
        Ok(Fetched { status, body })
    };
    tokio::time::timeout(TIMEOUT, work)
        .await
        .map_err(|_| failed(format!("no answer within {TIMEOUT:?}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        let ok = |u: &str| allowed(&url::Url::parse(u).unwrap());
        assert!(ok("https://login.example.com/x"));
        assert!(ok("http://127.0.0.1:9000/jwks"));
        assert!(ok("http://[::1]/x"));
        assert!(!ok("http://login.example.com/x"));
        assert!(!ok("http://10.0.0.1/x"));
        assert!(!ok("file:///etc/passwd"));
    }
}
