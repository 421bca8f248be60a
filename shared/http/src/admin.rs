//! `/admin/v1/...`: the operator API (JSON).
//!
//! - `POST /users` `{"upn","password"}` → 201; 409 if the user exists
//! - `GET /overview` → devices by status, by last check-in, enrollments per day, expiring
//!   certificates (maintained counters; no scan)
//! - `GET /users` → `{"users":[…],"next":cursor|null}`; `DELETE /users/{upn}` → 204
//! - `GET /devices[?cursor=&limit=]` → `{"devices":[…],"next":cursor|null}`
//! - `GET /devices/{id}` → the device, or 404
//! - `POST /devices/{id}/commands` (a raw verb, an Atomic, or `{"action": …}`) → 202
//!   `{"id","state":"pending"}`; 400 with the reason if invalid; 404 for unknown devices
//! - `GET /devices/{id}/commands[?cursor=&limit=]` → `{"commands":[…],"next"}`
//! - `GET /devices/{id}/commands/{cid}` → `{"id","state","status","results",…}`
//! - `POST /devices/{id}/block` / `unblock` → the device; a blocked device's certificates
//!   are refused and its hardware cannot enroll again until unblocked
//! - `DELETE /devices/{id}[?force=true]` → 202 with the queued DMClient Unenroll (the
//!   device is marked removed when it acknowledges), or 200 removed at once with `force`
//!   or when the device is no longer enrolled
//!
//! Callers authenticate with `Authorization: Bearer <token>`, or are authorised by API
//! Gateway (IAM) when deployed that way.

use http::{Method, StatusCode, header};
use lambda_http::Request;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use time::format_description::well_known::Rfc3339;
use tracing::{Instrument, info, info_span, warn};
use winmdm_core::commands::{CommandRequest, QueuedCommand, parse_request};
use winmdm_core::config::paths;
use winmdm_core::device_listing::{self, DeviceQuery, DeviceSummary, ListingError};
use winmdm_core::fleet_stats;
use winmdm_core::model::{Device, DeviceStatus, PageRequest, User, check_new_user, normalize_upn};
use winmdm_core::session::{DevicePatch, ManagementUpdate, SessionWrite};
use winmdm_core::store::StoreError;

use crate::request_id::request_id;
use crate::respond::{self, Response, json_error};
use crate::state::{AdminAuth, AppState};

pub async fn handle(state: &AppState, req: Request) -> Response {
    let span = info_span!("request", request_id = %request_id(&req), endpoint = "admin");
    async move {
        let resp = route(state, &req).await;
        info!(method = %req.method(), path = req.uri().path(), status = resp.status().as_u16(), "handled");
        resp
    }
    .instrument(span)
    .await
}

/// The admin function on AWS: this API under `/admin/v1/`, and the web console under
/// `/console/` (its own sign-in; API Gateway routes it without IAM).
pub async fn handle_with_console(state: &AppState, req: Request) -> Response {
    match crate::router::Endpoint::for_path(req.uri().path()) {
        Some(crate::router::Endpoint::Console) => crate::console::handle(state, req).await,
        _ => handle(state, req).await,
    }
}

fn authorized(auth: &AdminAuth, req: &Request) -> bool {
    match auth {
        // API Gateway checked the caller's SigV4 signature against IAM and says whom it
        // found. Its word is required, not assumed: the same function also serves the
        // console's routes, which the gateway forwards without IAM, and an event that
        // reaches the API without an IAM caller (a route or stage misconfigured, a path
        // that slipped past the prefix check) must not run as an operator.
        AdminAuth::Gateway => gateway_iam_caller(req).is_some(),
        AdminAuth::Bearer(expected) => req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|got| bool::from(got.trim().as_bytes().ct_eq(expected.as_bytes()))),
    }
}

/// The IAM caller API Gateway authorised (HTTP API, `AWS_IAM` route authorization).
fn gateway_iam_caller(req: &Request) -> Option<String> {
    use lambda_http::RequestExt as _;
    use lambda_http::request::RequestContext;
    match req.request_context_ref()? {
        RequestContext::ApiGatewayV2(ctx) => {
            let iam = ctx.authorizer.as_ref()?.iam.as_ref()?;
            iam.user_arn.clone().or_else(|| iam.caller_id.clone())
        }
        _ => None,
    }
}

async fn route(state: &AppState, req: &Request) -> Response {
    if !authorized(&state.admin_auth, req) {
        if matches!(state.admin_auth, AdminAuth::Gateway) {
            return json_error(
                StatusCode::FORBIDDEN,
                "no IAM caller: the admin API is served only on its IAM-authorised routes",
            );
        }
        let mut r = json_error(StatusCode::UNAUTHORIZED, "missing or invalid admin token");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    serve(state, req).await
}

/// Serves an admin API request whose caller is already authenticated: by [`route`], or by
/// the console (`crate::console`), which signs its users in its own way and then goes
/// through exactly this code, so its rules and messages are the API's.
pub(crate) async fn serve(state: &AppState, req: &Request) -> Response {
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix(paths::ADMIN_PREFIX) else {
        return json_error(StatusCode::NOT_FOUND, "no such admin resource");
    };
    let segments = crate::router::path_segments(rest);
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().clone();
    if let Some(out) = crate::admin_profiles::route(state, req, &segs, &method).await {
        return finish(out);
    }
    let result = match (segs.as_slice(), &method) {
        (["overview"], &Method::GET) => overview(state).await,
        (["overview"], _) => return respond::method_not_allowed("GET"),
        (["users"], &Method::POST) => create_user(state, req).await,
        (["users"], &Method::GET) => list_users(state, req).await,
        (["users"], _) => return respond::method_not_allowed("GET, POST"),
        (["users", upn], &Method::DELETE) => delete_user(state, upn).await,
        (["users", _], _) => return respond::method_not_allowed("DELETE"),
        (["devices"], &Method::GET) => list_devices(state, req).await,
        (["devices"], _) => return respond::method_not_allowed("GET"),
        (["devices", id], &Method::GET) => get_device(state, id).await,
        (["devices", id], &Method::DELETE) => remove_device(state, req, id).await,
        (["devices", _], _) => return respond::method_not_allowed("GET, DELETE"),
        (["devices", id, "block"], &Method::POST) => set_blocked(state, id, true).await,
        (["devices", id, "unblock"], &Method::POST) => set_blocked(state, id, false).await,
        (["devices", _, "block" | "unblock"], _) => return respond::method_not_allowed("POST"),
        (["devices", id, "commands"], &Method::POST) => enqueue_command(state, req, id).await,
        (["devices", id, "commands"], &Method::GET) => list_commands(state, req, id).await,
        (["devices", _, "commands"], _) => return respond::method_not_allowed("GET, POST"),
        (["devices", id, "commands", cid], &Method::GET) => get_command(state, id, cid).await,
        (["devices", _, "commands", _], _) => return respond::method_not_allowed("GET"),
        _ => return json_error(StatusCode::NOT_FOUND, "no such admin resource"),
    };
    finish(result)
}

/// The response for an outcome: storage errors become their HTTP answers.
fn finish(result: Outcome) -> Response {
    result.unwrap_or_else(|e| match e {
        StoreError::Conflict(what) => {
            json_error(StatusCode::CONFLICT, format!("{what} already exists"))
        }
        StoreError::NotFound(what) => json_error(StatusCode::NOT_FOUND, format!("no such {what}")),
        StoreError::Corrupt(m) if m.contains("cursor") => {
            json_error(StatusCode::BAD_REQUEST, "invalid cursor")
        }
        other => {
            warn!(error = %other, "admin request failed");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage is unavailable; try again",
            )
        }
    })
}

pub(crate) type Outcome = Result<Response, StoreError>;

pub(crate) fn query_page(req: &Request) -> Result<PageRequest, &'static str> {
    let mut after = None;
    let mut limit = None;
    for (k, v) in url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "cursor" if !v.is_empty() => after = Some(v.into_owned()),
            "limit" => {
                limit = Some(
                    v.parse::<usize>()
                        .map_err(|_| "limit must be a positive integer")?,
                )
            }
            _ => {}
        }
    }
    Ok(PageRequest::new(after, limit))
}

pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn user_json(u: &User) -> Value {
    json!({ "upn": u.upn, "created_at": rfc3339(u.created_at) })
}

/// The operator's view of a device: no credentials.
pub fn device_json(d: &Device) -> Value {
    json!({
        "id": d.id,
        "hw_dev_id": d.hw_dev_id,
        "upn": d.upn,
        "enrollment_type": d.enrollment_type,
        "status": d.status,
        "cert_serial": d.cert.serial,
        "cert_thumbprint": d.cert.thumbprint,
        "cert_not_after": rfc3339(d.cert.not_after),
        "enrolled_at": rfc3339(d.enrolled_at),
        "last_seen_at": d.last_seen_at.map(rfc3339),
        "os": d.os,
        "dm_info": d.dm_info,
        "groups": d.groups,
        "compliance": d.compliance,
    })
}

/// Failed commands the overview lists.
const RECENT_FAILURES: usize = 10;

/// The fleet overview from the maintained counters (`winmdm_core::fleet_stats`): a
/// bounded read, whatever the fleet's size.
async fn overview(state: &AppState) -> Outcome {
    let now = state.enrollment.now();
    let counters = state
        .store
        .read_counters(&fleet_stats::overview_ranges(now))
        .await?;
    let o = fleet_stats::Overview::from_counters(now, &counters);
    let failures = state.store.recent_failed_commands(RECENT_FAILURES).await?;
    let mut v = json!(o);
    v["recent_failed_commands"] = json!(
        failures
            .iter()
            .map(|f| json!({
                "device_id": f.device_id,
                "command_id": f.command_id,
                "what": f.what,
                "status": f.status,
                "reason": f.reason,
                "failed_at": rfc3339(f.failed_at),
            }))
            .collect::<Vec<_>>()
    );
    Ok(respond::json(StatusCode::OK, &v))
}

#[derive(Deserialize)]
struct NewUser {
    upn: String,
    password: String,
}

async fn create_user(state: &AppState, req: &Request) -> Outcome {
    let body = match respond::body_bytes(req.body()) {
        Ok(b) => b,
        Err(too_large) => return Ok(too_large.response()),
    };
    let new: NewUser = match serde_json::from_slice(body) {
        Ok(n) => n,
        Err(e) => {
            return Ok(json_error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"upn\": string, \"password\": string}}: {e}"),
            ));
        }
    };
    let upn = match check_new_user(&new.upn, &new.password) {
        Ok(upn) => upn,
        Err(msg) => return Ok(json_error(StatusCode::BAD_REQUEST, msg)),
    };
    // argon2id off the executor, behind the same bound as sign-ins.
    let password_hash = match state
        .enrollment
        .password_pool()
        .hash(new.password.clone())
        .await
    {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return Err(StoreError::Unavailable(format!("hashing failed: {e}"))),
        Err(_busy) => {
            return Ok(json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many password operations at once; try again",
            ));
        }
    };
    let user = User {
        upn,
        password_hash,
        created_at: state.enrollment.now(),
    };
    state.store.create_user(&user).await?;
    info!(upn = %user.upn, "user created");
    Ok(respond::json(StatusCode::CREATED, &user_json(&user)))
}

async fn list_users(state: &AppState, req: &Request) -> Outcome {
    let page = match query_page(req) {
        Ok(p) => p,
        Err(msg) => return Ok(json_error(StatusCode::BAD_REQUEST, msg)),
    };
    let p = state.store.list_users(&page).await?;
    Ok(respond::json(
        StatusCode::OK,
        &json!({ "users": p.items.iter().map(user_json).collect::<Vec<_>>(), "next": p.next }),
    ))
}

async fn delete_user(state: &AppState, upn: &str) -> Outcome {
    if state.store.delete_user(&normalize_upn(upn)).await? {
        Ok(respond::bytes(StatusCode::NO_CONTENT, "", Vec::new()))
    } else {
        Ok(json_error(StatusCode::NOT_FOUND, "no such user"))
    }
}

/// The device listing (`winmdm_core::device_listing`): search (`q`), filters (`status`,
/// `os`, `seen`, `group`), order (`sort`, `order`) and cursor paging.
async fn list_devices(state: &AppState, req: &Request) -> Outcome {
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let query = match DeviceQuery::from_params(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    {
        Ok(q) => q,
        Err(e) => return Ok(json_error(StatusCode::BAD_REQUEST, &e.0)),
    };
    let listing =
        match device_listing::list(state.store.as_ref(), &query, state.enrollment.now()).await {
            Ok(l) => l,
            Err(ListingError::Store(e)) => return Err(e),
            Err(e) => return Ok(json_error(StatusCode::BAD_REQUEST, e.to_string())),
        };
    Ok(respond::json(
        StatusCode::OK,
        &json!({
            "devices": listing.items.iter().map(summary_json).collect::<Vec<_>>(),
            "next": listing.next,
            "examined": listing.examined,
            "budget_spent": listing.budget_spent,
        }),
    ))
}

/// A listing row: what the device list shows and searches (no credentials).
pub fn summary_json(d: &DeviceSummary) -> Value {
    json!({
        "id": d.id,
        "upn": d.upn,
        "status": d.status,
        "enrollment_type": d.enrollment_type,
        "name": d.name,
        "serial": d.serial,
        "os_version": d.os_version,
        "enrolled_at": rfc3339(d.enrolled_at),
        "last_seen_at": d.last_seen_at.map(rfc3339),
        "cert_not_after": rfc3339(d.cert_not_after),
        "groups": d.groups,
        "compliance": d.compliance,
    })
}

async fn get_device(state: &AppState, id: &str) -> Outcome {
    Ok(match state.store.get_device(id).await? {
        Some(d) => respond::json(StatusCode::OK, &device_json(&d)),
        None => json_error(StatusCode::NOT_FOUND, "no such device"),
    })
}

/// The operator's view of a queued command.
pub fn command_json(c: &QueuedCommand) -> Value {
    json!({
        "id": c.id,
        "device_id": c.device_id,
        "action": c.action,
        "request": c.spec,
        "state": c.state,
        "status": c.status,
        "results": c.results,
        "attempts": c.attempts,
        "reason": c.reason,
        "created_at": rfc3339(c.created_at),
        "updated_at": rfc3339(c.updated_at),
    })
}

async fn enqueue_command(state: &AppState, req: &Request, device_id: &str) -> Outcome {
    let body = match respond::body_bytes(req.body()) {
        Ok(b) => b,
        Err(too_large) => return Ok(too_large.response()),
    };
    let request: CommandRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return Ok(json_error(
                StatusCode::BAD_REQUEST,
                format!("invalid command JSON: {e}"),
            ));
        }
    };
    let provider = state.enrollment.config().provider_id.to_string();
    let (action, spec) = match parse_request(&request, &provider) {
        Ok(p) => p,
        Err(e) => return Ok(json_error(StatusCode::BAD_REQUEST, e.to_string())),
    };
    let command = QueuedCommand::new(device_id, action.as_deref(), spec, state.enrollment.now());
    state.store.enqueue_command(&command).await?;
    info!(device_id, command_id = %command.id, action = ?command.action, "command queued");
    Ok(respond::json(
        StatusCode::ACCEPTED,
        &json!({ "id": command.id, "state": command.state }),
    ))
}

async fn list_commands(state: &AppState, req: &Request, device_id: &str) -> Outcome {
    let page = match query_page(req) {
        Ok(p) => p,
        Err(msg) => return Ok(json_error(StatusCode::BAD_REQUEST, msg)),
    };
    if state.store.get_device(device_id).await?.is_none() {
        return Ok(json_error(StatusCode::NOT_FOUND, "no such device"));
    }
    let p = state.store.list_commands(device_id, &page).await?;
    Ok(respond::json(
        StatusCode::OK,
        &json!({ "commands": p.items.iter().map(command_json).collect::<Vec<_>>(), "next": p.next }),
    ))
}

async fn get_command(state: &AppState, device_id: &str, command_id: &str) -> Outcome {
    Ok(
        match state.store.get_command(device_id, command_id).await? {
            Some(c) => respond::json(StatusCode::OK, &command_json(&c)),
            None => json_error(StatusCode::NOT_FOUND, "no such command"),
        },
    )
}

async fn set_status(state: &AppState, id: &str, status: DeviceStatus) -> Result<(), StoreError> {
    state
        .store
        .save_management(&ManagementUpdate {
            device_id: id.to_owned(),
            device: DevicePatch {
                status: Some(status),
                ..DevicePatch::default()
            },
            session: SessionWrite::Keep,
            commands: Vec::new(),
            profiles: Vec::new(),
        })
        .await
}

async fn set_blocked(state: &AppState, id: &str, block: bool) -> Outcome {
    let Some(device) = state.store.get_device(id).await? else {
        return Ok(json_error(StatusCode::NOT_FOUND, "no such device"));
    };
    let status = match (block, device.status) {
        (_, DeviceStatus::Removed) => {
            return Ok(json_error(StatusCode::CONFLICT, "the device was removed"));
        }
        (true, _) => DeviceStatus::Blocked,
        (false, DeviceStatus::Blocked) => DeviceStatus::Enrolled,
        (false, other) => other,
    };
    set_status(state, id, status).await?;
    info!(device_id = id, blocked = block, "device block changed");
    get_device(state, id).await
}

async fn remove_device(state: &AppState, req: &Request, id: &str) -> Outcome {
    let force = url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .any(|(k, v)| k == "force" && (v == "true" || v == "1"));
    let Some(device) = state.store.get_device(id).await? else {
        return Ok(json_error(StatusCode::NOT_FOUND, "no such device"));
    };
    if device.status == DeviceStatus::Enrolled && !force {
        // Ask the device to unenroll; it is marked removed when it acknowledges.
        let provider = state.enrollment.config().provider_id.to_string();
        let request: CommandRequest =
            serde_json::from_value(json!({"action": "unenroll"})).expect("a valid command");
        let (_, spec) =
            parse_request(&request, &provider).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let command = QueuedCommand::new(id, Some("remove"), spec, state.enrollment.now());
        state.store.enqueue_command(&command).await?;
        info!(device_id = id, command_id = %command.id, "device removal requested");
        return Ok(respond::json(
            StatusCode::ACCEPTED,
            &json!({ "id": id, "status": "removing", "command_id": command.id }),
        ));
    }
    set_status(state, id, DeviceStatus::Removed).await?;
    info!(device_id = id, force, "device removed");
    get_device(state, id).await
}
