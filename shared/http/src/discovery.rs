//! `GET|POST /EnrollmentServer/Discovery.svc`: Windows first GETs (expects 200, any body),
//! then POSTs the Discover request.

use http::{Method, StatusCode};
use lambda_http::Request;

use crate::respond::{self, Response};
use crate::soap_endpoint;
use crate::state::AppState;

pub async fn handle(state: &AppState, req: Request) -> Response {
    match *req.method() {
        Method::GET | Method::HEAD => respond::bytes(StatusCode::OK, "", Vec::new()),
        Method::POST => {
            soap_endpoint::serve("discovery", req, |body, rid| async move {
                state.enrollment.discover(&body, &rid)
            })
            .await
        }
        _ => respond::method_not_allowed("GET, HEAD, POST"),
    }
}
