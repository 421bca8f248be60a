//! The admin API client: bearer token (winmdm-local) or SigV4 (a deployment, whose admin
//! API uses IAM), JSON in and out, following pagination cursors.

use std::time::SystemTime;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::error::CliError;

pub enum Auth {
    Bearer(String),
    SigV4 {
        credentials: aws_credential_types::Credentials,
        region: String,
    },
}

pub struct Api {
    /// Ends with `/admin/v1/`.
    base: url::Url,
    auth: Auth,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Api {
    pub fn new(base: url::Url, auth: Auth) -> Result<Self, CliError> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| CliError::Other(format!("loading the system's root certificates: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            base,
            auth,
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    /// One request; `path` is relative to `/admin/v1/`. Non-2xx answers become errors
    /// that say what to do.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let url = self
            .base
            .join(path.trim_start_matches('/'))
            .map_err(|e| CliError::Usage(format!("bad path {path:?}: {e}")))?;
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), host),
            ("content-type".into(), "application/json".into()),
            ("accept".into(), "application/json".into()),
        ];
        match &self.auth {
            Auth::Bearer(t) => headers.push(("authorization".into(), format!("Bearer {t}"))),
            Auth::SigV4 {
                credentials,
                region,
            } => {
                let plain: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let signer = crate::sigv4::Signer {
                    credentials,
                    region,
                    service: "execute-api",
                    time: SystemTime::now(),
                };
                let signed =
                    crate::sigv4::sign_headers(&signer, method, url.as_str(), &plain, &body)
                        .map_err(|e| CliError::Other(format!("signing the request: {e}")))?;
                headers.extend(signed);
            }
        }
        let mut req = http::Request::builder().method(method).uri(url.as_str());
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CliError::Other(e.to_string()))?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| CliError::Unreachable(self.base.to_string(), error_chain(&e)))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| CliError::Unreachable(self.base.to_string(), e.to_string()))?
            .to_bytes();
        let json: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        let message = || {
            json.get("error")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| {
                    json.get("message")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| format!("HTTP {status}"))
        };
        match status {
            200..=299 => Ok(json),
            400 => Err(CliError::Invalid(message())),
            401 | 403 => Err(CliError::Unauthorized(message())),
            404 => Err(CliError::NotFound(message())),
            409 => Err(CliError::Conflict(message())),
            _ => Err(CliError::Server(status, message())),
        }
    }

    /// Every item of a paginated listing, following `next` cursors.
    pub async fn list_all(&self, path: &str, key: &str) -> Result<Vec<Value>, CliError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let page_path = match &cursor {
                Some(c) => format!(
                    "{path}{sep}limit=200&cursor={}",
                    url::form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>()
                ),
                None => format!("{path}{sep}limit=200"),
            };
            let page = self.call("GET", &page_path, None).await?;
            if let Some(arr) = page.get(key).and_then(Value::as_array) {
                items.extend(arr.iter().cloned());
            }
            match page.get("next").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
                _ => break,
            }
        }
        Ok(items)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
