//! The address of the client that sent a request, for the password-guess limiter.
//!
//! Taken only from what the platform vouches for: the TCP peer (`winmdm-local` puts it in
//! the request as [`ClientAddr`]), or API Gateway's request context (`sourceIp`, the
//! address that connected to API Gateway). Never from `X-Forwarded-For` or any other
//! header, which the client writes itself and so could rotate to dodge the limiter or
//! aim it at someone else.
//!
//! Behind a reverse proxy in front of `winmdm-local`, every request comes from the proxy:
//! the per-address limit then applies to all clients together (the per-UPN one is
//! unaffected).

use std::net::{IpAddr, SocketAddr};

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt as _};

/// The TCP peer of the connection a request came on; a request extension set by
/// `winmdm-local`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// The client's address: the [`ClientAddr`] extension, else API Gateway's `sourceIp`
/// (HTTP API v2, or REST API v1), else `None`.
pub fn client_ip(req: &Request) -> Option<IpAddr> {
    if let Some(ClientAddr(peer)) = req.extensions().get::<ClientAddr>() {
        return Some(peer.ip());
    }
    let source_ip = match req.request_context_ref()? {
        RequestContext::ApiGatewayV2(ctx) => ctx.http.source_ip.as_deref(),
        RequestContext::ApiGatewayV1(ctx) => ctx.identity.source_ip.as_deref(),
        // Other event sources, should a feature of lambda_http turn them on.
        #[allow(unreachable_patterns)]
        _ => None,
    };
    source_ip?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::Body;

    #[test]
    fn the_extension_wins_and_forwarded_headers_are_ignored() {
        let mut req = http::Request::builder()
            .uri("/EnrollmentServer/Auth")
            .header("x-forwarded-for", "198.51.100.1")
            .body(Body::Empty)
            .unwrap();
        assert_eq!(client_ip(&req), None);
        req.extensions_mut()
            .insert(ClientAddr("192.0.2.7:50000".parse().unwrap()));
        assert_eq!(client_ip(&req), Some("192.0.2.7".parse().unwrap()));
    }

    #[test]
    fn api_gateway_source_ip() {
        let event = serde_json::json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": "/EnrollmentServer/Auth",
            "rawQueryString": "",
            "headers": {"x-forwarded-for": "198.51.100.1"},
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "api",
                "domainName": "enterpriseenrollment.example.com",
                "domainPrefix": "enterpriseenrollment",
                "http": {
                    "method": "POST",
                    "path": "/EnrollmentServer/Auth",
                    "protocol": "HTTP/1.1",
                    "sourceIp": "203.0.113.10",
                    "userAgent": "test"
                },
                "requestId": "id",
                "routeKey": "$default",
                "stage": "$default",
                "time": "12/Mar/2020:19:03:58 +0000",
                "timeEpoch": 1583348638390u64
            },
            "isBase64Encoded": false
        });
        let req = lambda_http::request::from_str(&event.to_string()).unwrap();
        assert_eq!(client_ip(&req), Some("203.0.113.10".parse().unwrap()));
    }
}
