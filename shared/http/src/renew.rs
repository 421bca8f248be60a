//! `POST /ManagementServer/Renew.svc`: certificate renewal (WSTEP Renew, ROBO) on the
//! mutual-TLS management host. The TLS client certificate comes from API Gateway's
//! request context or from `winmdm-local`'s TLS connection, as for management.

use http::Method;
use lambda_http::Request;

use crate::manage::client_certificate;
use crate::respond::{self, Response};
use crate::soap_endpoint;
use crate::state::AppState;

pub async fn handle(state: &AppState, req: Request) -> Response {
    if req.method() != Method::POST {
        return respond::method_not_allowed("POST");
    }
    let cert = client_certificate(&req);
    soap_endpoint::serve("renew", req, |body, rid| async move {
        state.enrollment.renew(&body, cert.as_deref(), &rid).await
    })
    .await
}
