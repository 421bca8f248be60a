//! `POST /EnrollmentServer/Policy.svc`: MS-XCEP GetPolicies.

use http::Method;
use lambda_http::Request;

use crate::respond::{self, Response};
use crate::soap_endpoint;
use crate::state::AppState;

pub async fn handle(state: &AppState, req: Request) -> Response {
    if req.method() != Method::POST {
        return respond::method_not_allowed("POST");
    }
    soap_endpoint::serve("policy", req, |body, rid| async move {
        state.enrollment.get_policies(&body, &rid).await
    })
    .await
}
