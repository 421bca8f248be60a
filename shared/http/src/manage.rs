//! `POST /ManagementServer/MDM.svc`: OMA-DM sessions. Routed on the path only (the client
//! appends `?mode=…&Platform=WoA`). The device's TLS client certificate comes from API
//! Gateway's mutual-TLS request context, or from `winmdm-local`'s TLS connection.

use http::{Method, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use tracing::{Instrument, info, info_span, warn};
use winmdm_wire::soap::decode_b64;

use crate::request_id::request_id;
use crate::respond::{self, Response};
use crate::state::AppState;

pub const SYNCML_CONTENT_TYPE: &str = "application/vnd.syncml.dm+xml";

/// The DER client certificate of a request that came over mutual TLS, as the local runner
/// attaches it to the request.
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub Vec<u8>);

/// The client certificate, from the local runner or from API Gateway (HTTP API v2).
pub fn client_certificate(req: &Request) -> Option<Vec<u8>> {
    if let Some(c) = req.extensions().get::<ClientCertificate>() {
        return Some(c.0.clone());
    }
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx
            .authentication
            .as_ref()
            .and_then(|a| a.client_cert.as_ref())
            .and_then(|c| c.client_cert_pem.as_deref())
            .and_then(pem_to_der),
        _ => None,
    }
}

/// The first certificate of a PEM string.
pub fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let begin = "-----BEGIN CERTIFICATE-----";
    let start = pem.find(begin)? + begin.len();
    let end = pem[start..].find("-----END CERTIFICATE-----")? + start;
    decode_b64(&pem[start..end]).ok()
}

pub async fn handle(state: &AppState, req: Request) -> Response {
    let span = info_span!(
        "request",
        request_id = %request_id(&req),
        endpoint = "manage",
        device_id = tracing::field::Empty
    );
    async move {
        if req.method() != Method::POST {
            return respond::method_not_allowed("POST");
        }
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if content_type.contains("wbxml") {
            return respond::text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "WBXML is not supported; send application/vnd.syncml.dm+xml",
            );
        }
        let body = match respond::body_bytes(req.body()) {
            Ok(b) => b,
            Err(too_large) => return too_large.response(),
        };
        let started = std::time::Instant::now();
        let cert = client_certificate(&req);
        // An Entra-joined device's user token, if the client sends one (it says who is
        // signed in; it never authenticates the device).
        let bearer = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= winmdm_core::jwt::MAX_TOKEN_BYTES);
        match state
            .management
            .handle_with_bearer(body, cert.as_deref(), bearer)
            .await
        {
            Ok(reply) => {
                if let Some(id) = &reply.device_id {
                    tracing::Span::current().record("device_id", id.as_str());
                }
                let elapsed = started.elapsed();
                crate::metrics::Record::new("manage")
                    .count("ManagementMessages", 1)
                    .count("ManagementSessions", usize::from(reply.session_started))
                    .count("CommandsDelivered", reply.commands_sent)
                    .count("CommandsSucceeded", reply.commands_succeeded)
                    .count("CommandsFailed", reply.commands_failed)
                    .count(
                        "AuthFailures",
                        usize::from(matches!(reply.header_status, 401 | 407)),
                    )
                    .millis("Latency", elapsed.as_secs_f64() * 1000.0)
                    .emit();
                // A message the service answered normally has its line already ("management
                // message": device, session, message, commands) and its metrics record; a
                // line here too would be noise billed on every message (BENCHMARKS.md, Cost).
                if reply.header_status != 200 {
                    info!(
                        header_status = reply.header_status,
                        commands_sent = reply.commands_sent,
                        mtls = cert.is_some(),
                        duration_us = elapsed.as_micros() as u64,
                        "handled"
                    );
                }
                respond::bytes(StatusCode::OK, SYNCML_CONTENT_TYPE, reply.xml.into_bytes())
            }
            Err(e) => {
                warn!(error = %e, "unreadable management message");
                respond::text(StatusCode::BAD_REQUEST, &e.to_string())
            }
        }
    }
    .instrument(span)
    .await
}
