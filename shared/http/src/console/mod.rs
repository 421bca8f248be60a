//! `/console/…`: the admin web console, server-rendered HTML.
//!
//! Served by the admin function on AWS and by `winmdm-local`, through this one handler.
//! Every read and every change goes through the admin API's own code
//! ([`crate::admin::serve`]) as an in-process request, so the console has the API's rules,
//! validation and messages and none of its own. Pages work without JavaScript; the little
//! script there is (`assets/console.js`) refreshes a command's state until it settles and
//! hints at password strength.
//!
//! Sign-in: with the admin token locally ([`SignIn::AdminToken`]), or through an OpenID
//! Connect provider on AWS ([`SignIn::Oidc`], see [`oidc`]), for a signed session cookie
//! ([`session`]). Every POST must carry the session's CSRF token.
//!
//! | path | page |
//! |---|---|
//! | `overview` | counts, check-ins, enrollments per day ([`pages::overview`]) |
//! | `devices`, `devices/{id}` | list, detail with commands and actions ([`pages`]) |
//! | `profiles`, `profiles/{id}`, `groups`, `groups/{g}` | [`profile_pages`] |
//! | `users`, `enroll` | [`pages`] |

mod assets;
pub mod html;
pub mod oidc;
mod pages;
mod profile_pages;
pub mod session;

use http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request};
use serde_json::Value;
use subtle::ConstantTimeEq;
use tracing::{Instrument, info, info_span, warn};

use crate::request_id::request_id;
use crate::respond::{self, Response};
use crate::state::AppState;
use html::{Page, esc};
use session::{COOKIE, Session, SessionKey};

/// How the console signs admins in.
pub enum SignIn {
    /// With the admin API's bearer token (`winmdm-local`: `.winmdm/admin-token`).
    AdminToken(String),
    /// Through an OpenID Connect provider (authorization code + PKCE).
    Oidc(Box<oidc::OidcClient>),
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignIn::AdminToken(_) => f.write_str("AdminToken(<redacted>)"),
            SignIn::Oidc(c) => write!(f, "Oidc({})", c.issuer()),
        }
    }
}

#[derive(Debug)]
pub struct ConsoleConfig {
    pub key: ConsoleKey,
    pub sign_in: SignIn,
    /// Mark cookies `Secure`: the console is reached over TLS.
    pub secure_cookies: bool,
}

/// The session key: given, or derived from a Secrets Manager secret read on the first
/// console request (so the admin function's cold start, and every API call, pays nothing
/// for it).
pub struct ConsoleKey {
    ready: tokio::sync::OnceCell<SessionKey>,
    #[cfg(feature = "secrets")]
    secret: Option<winmdm_aws::secrets::Secret>,
}

impl std::fmt::Debug for ConsoleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsoleKey(<redacted>)")
    }
}

impl ConsoleKey {
    pub fn given(key: SessionKey) -> Self {
        Self {
            ready: tokio::sync::OnceCell::new_with(Some(key)),
            #[cfg(feature = "secrets")]
            secret: None,
        }
    }

    #[cfg(feature = "secrets")]
    pub fn from_secret(secret: winmdm_aws::secrets::Secret) -> Self {
        Self {
            ready: tokio::sync::OnceCell::new(),
            secret: Some(secret),
        }
    }

    #[cfg(not(feature = "secrets"))]
    async fn get(&self) -> Result<&SessionKey, String> {
        self.ready.get().ok_or_else(|| "no console key".to_owned())
    }

    #[cfg(feature = "secrets")]
    async fn get(&self) -> Result<&SessionKey, String> {
        self.ready
            .get_or_try_init(|| async {
                let Some(secret) = &self.secret else {
                    return Err("no console key".to_owned());
                };
                let v = secret.read().await.map_err(|e| e.to_string())?;
                Ok(SessionKey::derive(&match v {
                    winmdm_aws::secrets::SecretValue::String(s) => s.into_bytes(),
                    winmdm_aws::secrets::SecretValue::Binary(b) => b,
                }))
            })
            .await
    }
}

pub async fn handle(state: &AppState, req: Request) -> Response {
    let span = info_span!("request", request_id = %request_id(&req), endpoint = "console");
    async move {
        let resp = route(state, &req).await;
        info!(method = %req.method(), path = req.uri().path(), status = resp.status().as_u16(), "handled");
        resp
    }
    .instrument(span)
    .await
}

/// The request's path below `/console/`, split and percent-decoded.
fn segments(path: &str) -> Vec<String> {
    crate::router::path_segments(path.strip_prefix("/console").unwrap_or(""))
}

/// A request's form fields (`application/x-www-form-urlencoded`) or query parameters.
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    fn body(req: &Request) -> Self {
        let b = respond::body_bytes(req.body()).unwrap_or(&[]);
        Self(
            url::form_urlencoded::parse(b)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
    fn query(req: &Request) -> Self {
        Self(
            url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
    /// A field, trimmed; `None` when missing or blank.
    pub(crate) fn text(&self, k: &str) -> Option<&str> {
        self.get(k).map(str::trim).filter(|v| !v.is_empty())
    }
    pub(crate) fn all(&self, k: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// What a page handler has: the state, the session, its CSRF token.
pub(crate) struct Ctx<'a> {
    pub state: &'a AppState,
    pub session: Session,
    pub csrf: String,
}

impl Ctx<'_> {
    /// Calls the admin API in process (the same code as `/admin/v1/…`, authenticated by
    /// this console session): the status and the JSON body.
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let uri = format!("{}{path}", winmdm_core::config::paths::ADMIN_PREFIX);
        let body = match body {
            Some(v) => Body::Binary(serde_json::to_vec(&v).expect("JSON values serialize")),
            None => Body::Empty,
        };
        let req = match http::Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
        {
            Ok(r) => r,
            Err(_) => {
                return (
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "invalid path"}),
                );
            }
        };
        let resp = crate::admin::serve(self.state, &Request::from(req)).await;
        let status = resp.status();
        let value = match resp.body() {
            Body::Binary(b) => serde_json::from_slice(b).unwrap_or(Value::Null),
            Body::Text(t) => serde_json::from_str(t).unwrap_or(Value::Null),
            _ => Value::Null,
        };
        (status, value)
    }

    /// A page with the layout, the navigation and the sign-out form.
    pub fn page(&self, status: StatusCode, title: &str, section: &str, body: String) -> Response {
        html_response(
            status,
            Page {
                title,
                section: Some(section),
                signed_in: Some((&self.session.user, &self.csrf)),
                body,
            }
            .render(),
        )
    }

    /// The hidden CSRF field every form carries.
    pub fn csrf_field(&self) -> String {
        format!(
            "<input type=\"hidden\" name=\"_csrf\" value=\"{}\">",
            esc(&self.csrf)
        )
    }
}

/// A string field of an API JSON object ("" if absent).
pub(crate) fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn error_box(msg: &str) -> String {
    format!("<p class=\"error\" role=\"alert\">{}</p>", esc(msg))
}

pub(crate) fn notice_box(msg: &str) -> String {
    format!("<p class=\"notice\" role=\"status\">{}</p>", esc(msg))
}

/// The API's error message from its JSON body.
pub(crate) fn api_error(v: &Value) -> String {
    v.get("error")
        .and_then(Value::as_str)
        .unwrap_or("the request failed")
        .to_owned()
}

/// The headers every console response carries. The Content-Security-Policy allows only
/// this origin's own stylesheet, script and images: no inline script or style, no
/// framing, forms posting only here.
fn secure_headers(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

pub(crate) fn html_response(status: StatusCode, body: String) -> Response {
    let mut r = respond::bytes(status, "text/html; charset=utf-8", body.into_bytes());
    secure_headers(&mut r);
    r
}

/// 303 to a console path (after a POST, so a reload does not repeat it).
pub(crate) fn see_other(location: &str) -> Response {
    let mut r = respond::bytes(
        StatusCode::SEE_OTHER,
        "text/plain; charset=utf-8",
        Vec::new(),
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    secure_headers(&mut r);
    r
}

/// A page for a signed-out visitor (sign-in, errors before sign-in).
fn public_page(status: StatusCode, title: &str, body: String) -> Response {
    html_response(
        status,
        Page {
            title,
            section: None,
            signed_in: None,
            body,
        }
        .render(),
    )
}

async fn route(state: &AppState, req: &Request) -> Response {
    let Some(console) = state.console.as_ref() else {
        return respond::text(StatusCode::NOT_FOUND, "the console is not enabled here");
    };
    let key = match console.key.get().await {
        Ok(k) => k,
        Err(e) => {
            warn!(error = %e, "console session key unavailable");
            return respond::text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the console cannot read its session key; try again",
            );
        }
    };
    let segs = segments(req.uri().path());
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let method = req.method().clone();
    match (segs.as_slice(), &method) {
        (["assets", name], &Method::GET) => return assets::serve(name),
        (["login"], &Method::GET) => return login_page(console, key, req, None).await,
        (["login"], &Method::POST) => return login(state, console, key, req).await,
        (["oidc", "callback"], &Method::GET) => {
            return match &console.sign_in {
                SignIn::Oidc(client) => oidc::callback(state, console, key, client, req).await,
                SignIn::AdminToken(_) => respond::text(StatusCode::NOT_FOUND, "not found"),
            };
        }
        _ => {}
    }
    let now = state.enrollment.now();
    let session = session::cookie(req.headers(), COOKIE).and_then(|v| Session::open(v, key, now));
    let Some(session) = session else {
        return if method == Method::GET {
            see_other("/console/login")
        } else {
            public_page(
                StatusCode::UNAUTHORIZED,
                "Signed out",
                "<p>Your session has ended. <a href=\"/console/login\">Sign in again</a>.</p>"
                    .into(),
            )
        };
    };
    let csrf = session.csrf_token(key);
    let ctx = Ctx {
        state,
        session,
        csrf,
    };
    let form = if method == Method::POST {
        let form = Form::body(req);
        if !ctx.session.csrf_ok(key, form.get("_csrf")) {
            warn!(
                path = req.uri().path(),
                "console POST without a valid CSRF token"
            );
            return ctx.page(
                StatusCode::FORBIDDEN,
                "Refused",
                "overview",
                "<p class=\"error\" role=\"alert\">This form did not come from this console \
                 session (its security token is missing or out of date). Reload the page and \
                 try again.</p>"
                    .into(),
            );
        }
        form
    } else {
        Form::query(req)
    };
    match (segs.as_slice(), &method) {
        ([], &Method::GET) => see_other("/console/overview"),
        (["logout"], &Method::POST) => logout(console),
        (["overview"], &Method::GET) => pages::overview(&ctx).await,
        (["devices"], &Method::GET) => pages::devices(&ctx, &form).await,
        (["devices", id], &Method::GET) => pages::device(&ctx, id, &form, None).await,
        (["devices", id, "commands"], &Method::GET) => pages::command_rows(&ctx, id).await,
        (["devices", id, "action"], &Method::POST) => pages::device_action(&ctx, id, &form).await,
        (["devices", id, "command"], &Method::POST) => pages::raw_command(&ctx, id, &form).await,
        (["users"], &Method::GET) => pages::users(&ctx, None).await,
        (["users"], &Method::POST) => pages::add_user(&ctx, &form).await,
        (["users", "delete"], &Method::POST) => pages::delete_user(&ctx, &form).await,
        (["enroll"], &Method::GET) => pages::enroll(&ctx).await,
        (["profiles"], &Method::GET) => profile_pages::profiles(&ctx, None).await,
        (["profiles"], &Method::POST) => profile_pages::create_profile(&ctx, &form).await,
        (["profiles", id], &Method::GET) => profile_pages::profile(&ctx, id, &form, None).await,
        (["profiles", id, "edit"], &Method::POST) => {
            profile_pages::edit_profile(&ctx, id, &form).await
        }
        (["profiles", id, "assign"], &Method::POST) => {
            profile_pages::assign_profile(&ctx, id, &form).await
        }
        (["profiles", id, "delete"], &Method::POST) => {
            profile_pages::delete_profile(&ctx, id, &form).await
        }
        (["groups"], &Method::GET) => profile_pages::groups(&ctx, None).await,
        (["groups"], &Method::POST) => profile_pages::create_group(&ctx, &form).await,
        (["groups", g], &Method::GET) => profile_pages::group(&ctx, g, &form, None).await,
        (["groups", g, "members"], &Method::POST) => {
            profile_pages::group_members(&ctx, g, &form).await
        }
        (["groups", g, "delete"], &Method::POST) => {
            profile_pages::delete_group(&ctx, g, &form).await
        }
        _ => ctx.page(
            StatusCode::NOT_FOUND,
            "Not found",
            "overview",
            "<p>There is no such console page.</p>".into(),
        ),
    }
}

async fn login_page(
    console: &ConsoleConfig,
    key: &SessionKey,
    req: &Request,
    error: Option<&str>,
) -> Response {
    match &console.sign_in {
        SignIn::Oidc(client) => oidc::start(console, key, client, req).await,
        SignIn::AdminToken(_) => {
            let error = error.map_or(String::new(), |e| {
                format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e))
            });
            public_page(
                if error.is_empty() {
                    StatusCode::OK
                } else {
                    StatusCode::UNAUTHORIZED
                },
                "Sign in",
                format!(
                    "{error}<form class=\"card narrow\" method=\"post\" action=\"/console/login\">\
                     <p>Sign in with the admin token: the <code>admin-token</code> file in \
                     winmdm-local's data directory.</p>\
                     <label for=\"token\">Admin token</label>\
                     <input id=\"token\" name=\"token\" type=\"password\" required \
                     autocomplete=\"current-password\" autofocus>\
                     <button type=\"submit\">Sign in</button></form>"
                ),
            )
        }
    }
}

async fn login(
    state: &AppState,
    console: &ConsoleConfig,
    key: &SessionKey,
    req: &Request,
) -> Response {
    let SignIn::AdminToken(expected) = &console.sign_in else {
        return respond::method_not_allowed("GET");
    };
    let form = Form::body(req);
    let got = form.get("token").unwrap_or("").trim();
    if got.is_empty() || !bool::from(got.as_bytes().ct_eq(expected.as_bytes())) {
        warn!("console sign-in refused: wrong admin token");
        return login_page(console, key, req, Some("That is not the admin token.")).await;
    }
    info!("console sign-in with the admin token");
    signed_in(
        console,
        key,
        Session::new("admin".into(), state.enrollment.now()),
    )
}

/// Sets the session cookie and goes to the overview.
pub(crate) fn signed_in(console: &ConsoleConfig, key: &SessionKey, session: Session) -> Response {
    let mut r = see_other("/console/overview");
    let cookie = session::set_cookie(
        COOKIE,
        &session.seal(key),
        session::SESSION_TTL,
        console.secure_cookies,
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

fn logout(console: &ConsoleConfig) -> Response {
    info!("console sign-out");
    let mut r = public_page(
        StatusCode::OK,
        "Signed out",
        "<p>You are signed out. <a href=\"/console/login\">Sign in again</a>.</p>".into(),
    );
    let cookie = session::set_cookie(COOKIE, "", time::Duration::ZERO, console.secure_cookies);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_decoded_one_by_one() {
        assert_eq!(segments("/console/devices/a%2Fb/"), vec!["devices", "a/b"]);
        assert_eq!(segments("/console/devices/a+b"), vec!["devices", "a+b"]);
        assert!(segments("/console").is_empty());
    }
}
