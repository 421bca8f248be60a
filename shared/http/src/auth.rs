//! `GET|POST /EnrollmentServer/Auth`: the federated sign-in page. GET shows the form; POST
//! checks the credentials and answers the page that posts `wresult` to `appru`.
//!
//! Password attempts are limited per UPN and per client address (see
//! `winmdm_core::throttle`): a throttled attempt gets 429 with `Retry-After` and the form
//! again, without the password being checked; a saturated argon2 pool gets 503 with
//! `Retry-After`. A server configured on-premise has no login page (404).

use http::{HeaderValue, Method, StatusCode, header};
use lambda_http::Request;
use tracing::{Instrument, info, info_span, warn};
use winmdm_core::config::{PreferredAuth, paths};
use winmdm_core::enrollment::EnrollError;
use winmdm_core::federated::{autopost_page, check_appru, login_page};

use crate::client_addr::client_ip;
use crate::request_id::request_id;
use crate::respond::{self, Response};
use crate::state::AppState;

fn form_fields(raw: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw).into_owned().collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The auth function on AWS: the sign-in page, and Entra ID's terms-of-use page (both
/// pages a user sees while enrolling).
pub async fn handle_with_terms(state: &AppState, req: Request) -> Response {
    match crate::router::Endpoint::for_path(req.uri().path()) {
        Some(crate::router::Endpoint::Terms) => crate::terms::handle(state, req).await,
        _ => handle(state, req).await,
    }
}

pub async fn handle(state: &AppState, req: Request) -> Response {
    let span = info_span!("request", request_id = %request_id(&req), endpoint = "auth");
    async move {
        let config = state.enrollment.config();
        if config.auth_policy != PreferredAuth::Federated {
            return respond::text(
                StatusCode::NOT_FOUND,
                "this server does not use federated sign-in",
            );
        }
        match *req.method() {
            Method::GET => {
                let q = form_fields(req.uri().query().unwrap_or("").as_bytes());
                let appru = field(&q, "appru");
                if let Err(e) = check_appru(appru, &config.appru_allow_list) {
                    warn!(error = %e, "login page refused");
                    return respond::text(StatusCode::BAD_REQUEST, &e.to_string());
                }
                respond::html(
                    StatusCode::OK,
                    login_page(
                        paths::AUTH,
                        &config.provider_name,
                        appru.unwrap_or_default(),
                        field(&q, "login_hint"),
                        None,
                    ),
                )
            }
            Method::POST => {
                let body = match respond::body_bytes(req.body()) {
                    Ok(b) => b,
                    Err(too_large) => return too_large.response(),
                };
                let f = form_fields(body);
                let appru = field(&f, "appru");
                if let Err(e) = check_appru(appru, &config.appru_allow_list) {
                    warn!(error = %e, "sign-in refused");
                    return respond::text(StatusCode::BAD_REQUEST, &e.to_string());
                }
                let appru = appru.unwrap_or_default();
                let upn = field(&f, "upn").unwrap_or_default();
                let password = field(&f, "password").unwrap_or_default();
                let client = client_ip(&req);
                match state.enrollment.sign_in(upn, password, client).await {
                    Ok(token) => {
                        info!("sign-in succeeded");
                        respond::html(StatusCode::OK, autopost_page(appru, &token))
                    }
                    Err(e) => {
                        warn!(error = %e, client = ?client, "sign-in failed");
                        let (status, msg, retry_after) = match &e {
                            EnrollError::Authentication(_) => (
                                StatusCode::UNAUTHORIZED,
                                "The user name or password is incorrect.".to_owned(),
                                None,
                            ),
                            EnrollError::Throttled(t) => (
                                StatusCode::TOO_MANY_REQUESTS,
                                format!(
                                    "Too many failed sign-in attempts. Try again in {} seconds.",
                                    t.retry_after_secs()
                                ),
                                Some(t.retry_after_secs()),
                            ),
                            EnrollError::Busy(_) => (
                                StatusCode::SERVICE_UNAVAILABLE,
                                "Sign-in is busy right now. Try again in a moment.".to_owned(),
                                Some(1),
                            ),
                            _ => (
                                StatusCode::SERVICE_UNAVAILABLE,
                                "Sign-in is unavailable right now. Try again later.".to_owned(),
                                None,
                            ),
                        };
                        let mut resp = respond::html(
                            status,
                            login_page(
                                paths::AUTH,
                                &config.provider_name,
                                appru,
                                Some(upn),
                                Some(&msg),
                            ),
                        );
                        if let Some(secs) = retry_after {
                            resp.headers_mut()
                                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                        }
                        resp
                    }
                }
            }
            _ => respond::method_not_allowed("GET, POST"),
        }
    }
    .instrument(span)
    .await
}
