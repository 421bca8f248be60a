//! What the three SOAP endpoints share: body limits, the caller's address for the
//! password-guess limiter, the reply's status code and the log line every request ends
//! with.

use http::StatusCode;
use lambda_http::Request;
use tracing::{Instrument, info, info_span};
use winmdm_core::enrollment::SoapReply;
use winmdm_core::throttle::with_client_addr;

use crate::client_addr::client_ip;
use crate::request_id::request_id;
use crate::respond::{self, Response};

/// Runs `op` on the request body, with the client's address where the core's password
/// check finds it ([`with_client_addr`]), and turns its reply into an HTTP response.
/// Faults go out with HTTP 500, the SOAP 1.2 HTTP binding's status for a Receiver fault
/// (what WCF-based enrollment servers send), throttled and busy ones included (their
/// fault message says when to try again).
pub async fn serve<F, Fut>(endpoint: &'static str, req: Request, op: F) -> Response
where
    F: FnOnce(Vec<u8>, String) -> Fut,
    Fut: std::future::Future<Output = SoapReply>,
{
    let rid = request_id(&req);
    let client = client_ip(&req);
    let span =
        info_span!("request", request_id = %rid, endpoint, device_id = tracing::field::Empty);
    async move {
        let started = std::time::Instant::now();
        let body = match respond::body_bytes(req.body()) {
            Ok(b) => b.to_vec(),
            Err(too_large) => return too_large.response(),
        };
        let reply = with_client_addr(client, op(body, rid)).await;
        if let Some(id) = &reply.device_id {
            tracing::Span::current().record("device_id", id.as_str());
        }
        let status = if reply.fault.is_some() {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
        let elapsed = started.elapsed();
        let mut record = crate::metrics::Record::new(endpoint)
            .count("Requests", 1)
            .millis("Latency", elapsed.as_secs_f64() * 1000.0);
        match &reply.fault {
            Some(f) => {
                record = record
                    .dimension("FaultCode", f.code.name())
                    .count("EnrollmentFaults", 1)
            }
            None if reply.device_id.is_some() => record = record.count("Enrollments", 1),
            None => {}
        }
        record.emit();
        info!(
            status = status.as_u16(),
            fault = reply.fault.as_ref().map(|f| f.code.name()),
            duration_us = elapsed.as_micros() as u64,
            "handled"
        );
        respond::soap(status, reply.xml)
    }
    .instrument(span)
    .await
}
