//! `GET|POST /EnrollmentServer/TermsOfUse`: the terms-of-use page Entra ID opens during
//! an Entra join or "Add work or school account", before Windows enrolls (Microsoft
//! Learn, "Azure AD integration with MDM"; `docs/entra.md`).
//!
//! GET carries `redirect_uri`, `client-request-id`, `api-version` (and `mode=azureadjoin`
//! for organisation-owned devices) and `Authorization: Bearer <Entra access token for the
//! MDM application>`. The token is verified like an enrollment token
//! (`winmdm_core::entra`); the page shows the organisation's text with Accept and
//! Decline. The form carries its state (where to return, for whom, until when) signed, so
//! the POST needs no token of its own. Accept redirects to
//! `redirect_uri?IsAccepted=true&OpaqueBlob=…`; Decline to `redirect_uri?error=access_denied&
//! error_description=…`; a bad or missing token to `error=unauthorized_client`.
//!
//! ⚠ `redirect_uri` must be `ms-appx-web://…` (the Windows web view): anything else is a
//! 400 here and never a redirect, or this page would be an open redirector.

use http::{HeaderValue, Method, StatusCode, header};
use lambda_http::Request;
use serde::{Deserialize, Serialize};
use tracing::{Instrument, info, info_span, warn};

use crate::console::html::esc;
use crate::request_id::request_id;
use crate::respond::{self, Response};
use crate::state::AppState;

/// How long the page may stay open between GET and the user's choice.
const FORM_TTL_SECONDS: i64 = 30 * 60;

#[derive(Serialize, Deserialize)]
struct FormState {
    redirect_uri: String,
    client_request_id: String,
    upn: String,
    tenant_id: String,
    exp: i64,
}

/// What Accept hands back to Windows (opaque to it): who accepted, when, signed.
#[derive(Serialize)]
struct Acceptance<'a> {
    upn: &'a str,
    tenant_id: &'a str,
    accepted_at: i64,
}

fn params(raw: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect()
}

fn get<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// Only the Windows web view's scheme, with something after it.
fn allowed_redirect(uri: &str) -> bool {
    uri.len() <= 2048
        && uri
            .get(..14)
            .is_some_and(|p| p.eq_ignore_ascii_case("ms-appx-web://"))
        && uri.len() > 14
        && !uri.chars().any(|c| c.is_control() || c == ' ')
}

fn redirect(uri: &str, pairs: &[(&str, &str)]) -> Response {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.extend_pairs(pairs);
    let sep = if uri.contains('?') { '&' } else { '?' };
    let location = format!("{uri}{sep}{}", q.finish());
    let mut r = respond::bytes(StatusCode::FOUND, "text/plain; charset=utf-8", Vec::new());
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => respond::text(StatusCode::BAD_REQUEST, "redirect_uri is not usable"),
    }
}

fn page(status: StatusCode, body: String) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Terms of use</title><link rel=\"stylesheet\" href=\"/console/assets/console.css\">\
         </head><body><main id=\"main\" class=\"narrow\"><h1>Terms of use</h1>{body}</main>\
         </body></html>"
    );
    let mut r = respond::bytes(status, "text/html; charset=utf-8", html.into_bytes());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            // form-action covers the redirect that follows the POST: the web view's scheme.
            "default-src 'none'; style-src 'self'; form-action 'self' ms-appx-web:; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

pub async fn handle(state: &AppState, req: Request) -> Response {
    let span = info_span!("request", request_id = %request_id(&req), endpoint = "terms");
    async move {
        let resp = route(state, &req).await;
        info!(method = %req.method(), status = resp.status().as_u16(), "handled");
        resp
    }
    .instrument(span)
    .await
}

async fn route(state: &AppState, req: &Request) -> Response {
    let (Some(terms), Some(verifier)) = (&state.entra_terms, state.enrollment.entra()) else {
        return respond::text(
            StatusCode::NOT_FOUND,
            "Entra ID enrollment is not enabled here",
        );
    };
    // The form's state is sealed with a key derived from the sign-in token key, which is
    // read on first use.
    let key = match state.page_key().await {
        Ok(k) => k,
        Err(e) => {
            warn!(error = %e, "terms of use: the sign-in token key is unavailable");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "<p class=\"error\" role=\"alert\">The sign-in service is starting. Try again in a moment.</p>".into(),
            );
        }
    };
    match *req.method() {
        Method::GET => {
            let q = params(req.uri().query().unwrap_or(""));
            let Some(redirect_uri) = get(&q, "redirect_uri").filter(|u| allowed_redirect(u)) else {
                warn!("terms of use asked to redirect somewhere other than the web view");
                return respond::text(
                    StatusCode::BAD_REQUEST,
                    "redirect_uri must be an ms-appx-web:// address",
                );
            };
            let client_request_id = get(&q, "client-request-id")
                .unwrap_or("")
                .chars()
                .take(64)
                .collect::<String>();
            let token = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            let Some(token) = token else {
                return redirect(
                    redirect_uri,
                    &[
                        ("error", "unauthorized_client"),
                        ("error_description", "no access token was presented"),
                        ("client-request-id", &client_request_id),
                    ],
                );
            };
            let id = match verifier.verify(token, state.enrollment.now()).await {
                Ok(id) => id,
                Err(winmdm_core::entra::EntraError::KeysUnavailable(e)) => {
                    warn!(error = %e, "terms of use: Entra keys unavailable");
                    return redirect(
                        redirect_uri,
                        &[
                            ("error", "server_error"),
                            (
                                "error_description",
                                "the sign-in could not be checked; try again",
                            ),
                            ("client-request-id", &client_request_id),
                        ],
                    );
                }
                Err(e) => {
                    warn!(error = %e, "terms of use: token refused");
                    return redirect(
                        redirect_uri,
                        &[
                            ("error", "unauthorized_client"),
                            (
                                "error_description",
                                "the access token is not valid for this server",
                            ),
                            ("client-request-id", &client_request_id),
                        ],
                    );
                }
            };
            let form = FormState {
                redirect_uri: redirect_uri.to_owned(),
                client_request_id,
                upn: id.upn.clone(),
                tenant_id: id.tenant_id.clone(),
                exp: state.enrollment.now().unix_timestamp() + FORM_TTL_SECONDS,
            };
            let sealed = key.seal("terms-of-use", &form);
            page(
                StatusCode::OK,
                format!(
                    "<section class=\"card\"><p>Signed in as <strong>{}</strong>.</p>\
                     <div class=\"terms\">{}</div>\
                     <form method=\"post\" class=\"actions\">\
                     <input type=\"hidden\" name=\"state\" value=\"{}\">\
                     <button type=\"submit\" name=\"decision\" value=\"accept\">Accept</button>\
                     <button type=\"submit\" name=\"decision\" value=\"decline\" class=\"danger\">Decline</button>\
                     </form></section>",
                    esc(&id.upn),
                    terms
                        .split("\n\n")
                        .map(|p| format!("<p>{}</p>", esc(p.trim())))
                        .collect::<String>(),
                    esc(&sealed)
                ),
            )
        }
        Method::POST => {
            let body = respond::body_bytes(req.body()).unwrap_or(&[]);
            let f: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
            let form: Option<FormState> = get(&f, "state")
                .and_then(|s| key.open("terms-of-use", s))
                .filter(|st: &FormState| st.exp > state.enrollment.now().unix_timestamp())
                .filter(|st: &FormState| allowed_redirect(&st.redirect_uri));
            let Some(form) = form else {
                return page(
                    StatusCode::BAD_REQUEST,
                    "<p class=\"error\" role=\"alert\">This page has expired. Start the sign-in again.</p>".into(),
                );
            };
            match get(&f, "decision") {
                Some("accept") => {
                    let blob = key.seal(
                        "terms-accepted",
                        &Acceptance {
                            upn: &form.upn,
                            tenant_id: &form.tenant_id,
                            accepted_at: state.enrollment.now().unix_timestamp(),
                        },
                    );
                    info!(upn = %form.upn, tenant = %form.tenant_id, "terms of use accepted");
                    redirect(
                        &form.redirect_uri,
                        &[("IsAccepted", "true"), ("OpaqueBlob", &blob)],
                    )
                }
                _ => {
                    info!(upn = %form.upn, tenant = %form.tenant_id, "terms of use declined");
                    redirect(
                        &form.redirect_uri,
                        &[
                            ("error", "access_denied"),
                            ("error_description", "the user declined the terms of use"),
                            ("client-request-id", &form.client_request_id),
                        ],
                    )
                }
            }
        }
        _ => respond::method_not_allowed("GET, POST"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_web_view_scheme_is_a_redirect_target() {
        assert!(allowed_redirect(
            "ms-appx-web://Microsoft.AAD.BrokerPlugin/abc"
        ));
        assert!(allowed_redirect("MS-APPX-WEB://x"));
        assert!(!allowed_redirect("https://evil.example.com/"));
        assert!(!allowed_redirect("ms-appx-web://"));
        assert!(!allowed_redirect("javascript:alert(1)"));
        assert!(!allowed_redirect("ms-appx-web://a\r\nSet-Cookie: x"));
    }
}
