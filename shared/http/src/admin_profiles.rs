//! `/admin/v1/…` for configuration profiles and groups (JSON; the same authentication as
//! the rest of the admin API):
//!
//! - `POST /profiles` `{"name","description"?,"scope"?,"syncml"|"settings"|"template"+"params","assignment"?}`
//!   → 201 the profile; 400 naming what is invalid; 409 for a taken name or a conflicting
//!   setting. A raw SyncML fragment body (`Content-Type: application/xml`) with `?name=`
//!   works too.
//! - `GET /profiles` → `{"profiles":[…]}`; `GET|PUT|DELETE /profiles/{id}` (PUT with new
//!   settings makes a new revision devices converge to)
//! - `POST /profiles/{id}/assignments` `{"include":[…],"exclude":[…]}` → the profile
//! - `GET /profiles/{id}/status[?cursor=&limit=]` → `{"counts":{state:n},"devices":[…],"next"}`
//! - `POST|GET /groups`, `GET|DELETE /groups/{g}` (with a page of member ids),
//!   `PUT|DELETE /groups/{g}/devices/{id}` → 204
//! - `GET /devices/{id}/profiles`, `POST /devices/{id}/profiles/{pid}/resend` → 202
//! - `GET /profile-templates`

use std::collections::{BTreeMap, HashSet};

use http::{Method, StatusCode, header};
use lambda_http::Request;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;
use winmdm_core::commands::{ItemSpec, Verb};
use winmdm_core::fleet_stats;
use winmdm_core::model::{DeviceStatus, PageRequest};
use winmdm_core::profile_engine::resend;
use winmdm_core::profile_templates;
use winmdm_core::profiles::{
    ALL_GROUP, Assignment, DeliveryState, DeviceProfile, Group, Profile, ProfileError,
    ProfileScope, Setting, check_conflicts, parse_syncml_fragment, validate_group_name,
    validate_name, validate_settings,
};
use winmdm_core::session::{DevicePatch, ManagementUpdate, SessionWrite};
use winmdm_core::store::StoreError;

use crate::admin::{Outcome, query_page, rfc3339};
use crate::respond::{self, json_error};
use crate::state::AppState;

/// Most profiles and groups a deployment holds (the catalog every management message
/// consults, cached per process).
pub const MAX_PROFILES: usize = 500;
pub const MAX_GROUPS: usize = 1000;

/// Serves a profile or group route; `None` if the path is not one.
pub async fn route(
    state: &AppState,
    req: &Request,
    segs: &[&str],
    method: &Method,
) -> Option<Outcome> {
    let out = match (segs, method) {
        (["profiles"], &Method::POST) => create_profile(state, req).await,
        (["profiles"], &Method::GET) => list_profiles(state).await,
        (["profiles"], _) => return Some(Ok(respond::method_not_allowed("GET, POST"))),
        (["profiles", id], &Method::GET) => get_profile(state, id).await,
        (["profiles", id], &Method::PUT) => update_profile(state, req, id).await,
        (["profiles", id], &Method::DELETE) => delete_profile(state, id).await,
        (["profiles", _], _) => return Some(Ok(respond::method_not_allowed("GET, PUT, DELETE"))),
        (["profiles", id, "assignments"], &Method::POST) => assign(state, req, id).await,
        (["profiles", id, "status"], &Method::GET) => profile_status(state, req, id).await,
        (["profiles", id, "devices"], &Method::GET) => profile_devices(state, req, id).await,
        (["profile-templates"], &Method::GET) => Ok(respond::json(
            StatusCode::OK,
            &json!({ "templates": profile_templates::templates() }),
        )),
        (["groups"], &Method::POST) => create_group(state, req).await,
        (["groups"], &Method::GET) => list_groups(state).await,
        (["groups"], _) => return Some(Ok(respond::method_not_allowed("GET, POST"))),
        (["groups", g], &Method::GET) => get_group(state, req, g).await,
        (["groups", g], &Method::DELETE) => delete_group(state, g).await,
        (["groups", g, "devices", id], &Method::PUT) => membership(state, g, id, true).await,
        (["groups", g, "devices", id], &Method::DELETE) => membership(state, g, id, false).await,
        (["devices", id, "profiles"], &Method::GET) => device_profiles(state, id).await,
        (["devices", id, "profiles", pid, "resend"], &Method::POST) => {
            resend_profile(state, id, pid).await
        }
        _ => return None,
    };
    Some(out)
}

fn bad(m: impl Into<String>) -> Outcome {
    Ok(json_error(StatusCode::BAD_REQUEST, m))
}

fn profile_error(e: ProfileError) -> Outcome {
    match e {
        ProfileError::Invalid(m) => bad(m),
        c @ ProfileError::Conflict { .. } => Ok(json_error(StatusCode::CONFLICT, c.to_string())),
    }
}

pub fn profile_json(p: &Profile) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "scope": p.scope,
        "revision": p.revision,
        "settings": p.settings,
        "assignment": p.assignment,
        "template": p.template,
        "created_at": rfc3339(p.created_at),
        "updated_at": rfc3339(p.updated_at),
    })
}

fn state_json(s: &DeviceProfile) -> Value {
    json!({
        "device_id": s.device_id,
        "profile_id": s.profile_id,
        "revision": s.revision,
        "state": s.state,
        "reason": s.reason,
        "failures": s.failures,
        "retry_at": s.retry_at.map(rfc3339),
        "last_verified_at": s.last_verified_at.map(rfc3339),
        "drift_count": s.drift_count,
        "drift": s.drift,
        "updated_at": rfc3339(s.updated_at),
    })
}

/// A profile as the operator writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileRequest {
    name: Option<String>,
    description: Option<String>,
    scope: Option<ProfileScope>,
    /// A SyncML fragment of top-level Replace/Add.
    syncml: Option<String>,
    settings: Option<Vec<SettingRequest>>,
    template: Option<String>,
    #[serde(default)]
    params: Value,
    assignment: Option<Assignment>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingRequest {
    verb: Option<String>,
    target: String,
    format: Option<String>,
    #[serde(rename = "type")]
    type_: Option<String>,
    data: Option<String>,
}

/// The body of a profile write: JSON, or a raw fragment (`?name=&description=&scope=`).
fn read_request(req: &Request) -> Result<ProfileRequest, String> {
    let body =
        respond::body_bytes(req.body()).map_err(|_| "the request body is too large".to_owned())?;
    let xml = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("xml"));
    if xml {
        let mut r = ProfileRequest {
            name: None,
            description: None,
            scope: None,
            syncml: Some(String::from_utf8(body.to_vec()).map_err(|_| "the profile is not UTF-8")?),
            settings: None,
            template: None,
            params: Value::Null,
            assignment: None,
        };
        for (k, v) in url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "name" => r.name = Some(v.into_owned()),
                "description" => r.description = Some(v.into_owned()),
                "scope" => {
                    r.scope = Some(match v.as_ref() {
                        "device" => ProfileScope::Device,
                        "user" => ProfileScope::User,
                        _ => return Err("scope must be device or user".into()),
                    })
                }
                _ => {}
            }
        }
        return Ok(r);
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid profile JSON: {e}"))
}

/// What a request's settings come to: the scope, the settings, and the template and
/// parameters they were made from (if any).
type DescribedSettings = (ProfileScope, Vec<Setting>, Option<Value>);

/// The settings (and scope) a request describes, validated.
fn settings_of(r: &ProfileRequest) -> Result<Option<DescribedSettings>, String> {
    let given = [
        r.syncml.is_some(),
        r.settings.is_some(),
        r.template.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if given > 1 {
        return Err("give one of syncml, settings or template".into());
    }
    let (settings, template) = if let Some(f) = &r.syncml {
        (parse_syncml_fragment(f).map_err(|e| e.to_string())?, None)
    } else if let Some(list) = &r.settings {
        let mut out = Vec::with_capacity(list.len());
        for s in list {
            let verb = match s.verb.as_deref().unwrap_or("Replace") {
                "Replace" => Verb::Replace,
                "Add" => Verb::Add,
                other => {
                    return Err(format!(
                        "{}: verb must be Replace or Add, not {other:?}",
                        s.target
                    ));
                }
            };
            out.push(Setting {
                verb,
                item: ItemSpec {
                    target: s.target.clone(),
                    format: s.format.clone(),
                    type_: s.type_.clone(),
                    data: s.data.clone(),
                },
            });
        }
        (out, None)
    } else if let Some(t) = &r.template {
        let (scope, settings) =
            profile_templates::instantiate(t, &r.params).map_err(|e| e.to_string())?;
        validate_settings(scope, &settings).map_err(|e| e.to_string())?;
        return Ok(Some((
            scope,
            settings,
            Some(json!({ "name": t, "params": r.params })),
        )));
    } else {
        return Ok(None);
    };
    let scope = r.scope.unwrap_or_else(|| {
        if !settings.is_empty()
            && settings
                .iter()
                .all(|s| s.item.target.starts_with("./User/"))
        {
            ProfileScope::User
        } else {
            ProfileScope::Device
        }
    });
    validate_settings(scope, &settings).map_err(|e| e.to_string())?;
    Ok(Some((scope, settings, template)))
}

async fn check_assignment(state: &AppState, a: &Assignment) -> Result<(), String> {
    for g in a.include.iter().chain(&a.exclude) {
        if g == ALL_GROUP {
            continue;
        }
        validate_group_name(g).map_err(|e| e.to_string())?;
        if state
            .store
            .get_group(g)
            .await
            .map_err(|e| e.to_string())?
            .is_none()
        {
            return Err(format!("no group named {g:?}"));
        }
    }
    Ok(())
}

fn new_profile_id(name: &str) -> String {
    let slug: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let slug: String = slug.chars().take(40).collect();
    let rand = uuid::Uuid::new_v4().simple().to_string();
    if slug.is_empty() {
        format!("p-{}", &rand[..8])
    } else {
        format!("{slug}-{}", &rand[..6])
    }
}

async fn create_profile(state: &AppState, req: &Request) -> Outcome {
    let r = match read_request(req) {
        Ok(r) => r,
        Err(m) => return bad(m),
    };
    let Some(name) = r.name.as_deref().map(str::trim) else {
        return bad("name is required");
    };
    if let Err(e) = validate_name(name) {
        return profile_error(e);
    }
    let (scope, settings, template) = match settings_of(&r) {
        Ok(Some(s)) => s,
        Ok(None) => return bad("give the settings as syncml, settings or template"),
        Err(m) => return bad(m),
    };
    let assignment = r.assignment.clone().unwrap_or_default();
    if let Err(m) = check_assignment(state, &assignment).await {
        return bad(m);
    }
    let others = state.store.list_profiles().await?;
    if others.len() >= MAX_PROFILES {
        return Ok(json_error(
            StatusCode::CONFLICT,
            format!("a deployment holds at most {MAX_PROFILES} profiles"),
        ));
    }
    let now = state.enrollment.now();
    let profile = Profile {
        id: new_profile_id(name),
        name: name.to_owned(),
        description: r
            .description
            .as_deref()
            .map(bounded_description)
            .unwrap_or_default(),
        scope,
        revision: 1,
        version: 1,
        settings,
        assignment,
        template,
        created_at: now,
        updated_at: now,
    };
    if let Err(e) = check_conflicts(&profile, &others) {
        return profile_error(e);
    }
    match state.store.create_profile(&profile).await {
        Err(StoreError::Conflict(_)) => {
            return Ok(json_error(
                StatusCode::CONFLICT,
                format!("a profile named {name:?} already exists"),
            ));
        }
        other => other?,
    }
    state.management.invalidate_profiles();
    info!(profile_id = %profile.id, settings = profile.settings.len(), "profile created");
    Ok(respond::json(StatusCode::CREATED, &profile_json(&profile)))
}

/// Every profile, each with its maintained counts by delivery state
/// (`winmdm_core::fleet_stats::profile_counts`): one counter read for the whole list.
async fn list_profiles(state: &AppState) -> Outcome {
    let ps = state.store.list_profiles().await?;
    let counters = state
        .store
        .read_counters(&fleet_stats::profile_ranges(None))
        .await?;
    let counts = fleet_stats::profile_counts(&counters);
    let list: Vec<Value> = ps
        .iter()
        .map(|p| {
            let mut v = profile_json(p);
            v["counts"] = json!(counts.get(&p.id).cloned().unwrap_or_default());
            v
        })
        .collect();
    Ok(respond::json(StatusCode::OK, &json!({ "profiles": list })))
}

/// One profile's maintained counts by delivery state and a page of its devices' states:
/// a bounded read whatever the number of devices (the console's profile page). Devices
/// that have not had a session since the assignment have no state yet and are not in
/// it; `status` counts them, at the cost of reading every targeted device.
async fn profile_devices(state: &AppState, req: &Request, id: &str) -> Outcome {
    let page = match query_page(req) {
        Ok(p) => p,
        Err(msg) => return bad(msg),
    };
    if state.store.get_profile(id).await?.is_none() {
        return Ok(json_error(StatusCode::NOT_FOUND, "no such profile"));
    }
    let counters = state
        .store
        .read_counters(&fleet_stats::profile_ranges(Some(id)))
        .await?;
    let counts = fleet_stats::profile_counts(&counters)
        .remove(id)
        .unwrap_or_default();
    let p = state.store.list_profile_devices(id, &page).await?;
    Ok(respond::json(
        StatusCode::OK,
        &json!({
            "profile_id": id,
            "counts": counts,
            "devices": p.items.iter().map(state_json).collect::<Vec<_>>(),
            "next": p.next,
        }),
    ))
}

async fn get_profile(state: &AppState, id: &str) -> Outcome {
    Ok(match state.store.get_profile(id).await? {
        Some(p) => respond::json(StatusCode::OK, &profile_json(&p)),
        None => json_error(StatusCode::NOT_FOUND, "no such profile"),
    })
}

/// Writes a changed profile if nobody changed it meanwhile.
async fn save(state: &AppState, old: &Profile, mut new: Profile) -> Outcome {
    let others = state.store.list_profiles().await?;
    if let Err(e) = check_conflicts(&new, &others) {
        return profile_error(e);
    }
    new.version = old.version + 1;
    new.updated_at = state.enrollment.now();
    match state.store.update_profile(&new, old.version).await {
        Err(StoreError::Conflict(_)) => {
            return Ok(json_error(
                StatusCode::CONFLICT,
                "the profile changed meanwhile, or its new name is taken; reload and try again",
            ));
        }
        other => other?,
    }
    state.management.invalidate_profiles();
    Ok(respond::json(StatusCode::OK, &profile_json(&new)))
}

async fn update_profile(state: &AppState, req: &Request, id: &str) -> Outcome {
    let Some(old) = state.store.get_profile(id).await? else {
        return Ok(json_error(StatusCode::NOT_FOUND, "no such profile"));
    };
    let r = match read_request(req) {
        Ok(r) => r,
        Err(m) => return bad(m),
    };
    let mut new = old.clone();
    if let Some(n) = r.name.as_deref().map(str::trim) {
        if let Err(e) = validate_name(n) {
            return profile_error(e);
        }
        new.name = n.to_owned();
    }
    if let Some(d) = &r.description {
        new.description = bounded_description(d);
    }
    match settings_of(&r) {
        Ok(Some((scope, settings, template))) => {
            if settings != old.settings || scope != old.scope {
                new.revision = old.revision + 1;
            }
            new.scope = scope;
            new.settings = settings;
            new.template = template.or(old.template.clone());
        }
        Ok(None) => {}
        Err(m) => return bad(m),
    }
    if let Some(a) = r.assignment.clone() {
        if let Err(m) = check_assignment(state, &a).await {
            return bad(m);
        }
        new.assignment = a;
    }
    info!(profile_id = id, revision = new.revision, "profile updated");
    save(state, &old, new).await
}

async fn delete_profile(state: &AppState, id: &str) -> Outcome {
    if state.store.delete_profile(id).await? {
        state.management.invalidate_profiles();
        info!(
            profile_id = id,
            "profile deleted; devices remove its settings"
        );
        Ok(respond::bytes(StatusCode::NO_CONTENT, "", Vec::new()))
    } else {
        Ok(json_error(StatusCode::NOT_FOUND, "no such profile"))
    }
}

async fn assign(state: &AppState, req: &Request, id: &str) -> Outcome {
    let Some(old) = state.store.get_profile(id).await? else {
        return Ok(json_error(StatusCode::NOT_FOUND, "no such profile"));
    };
    let body = match respond::body_bytes(req.body()) {
        Ok(b) => b,
        Err(too_large) => return Ok(too_large.response()),
    };
    let a: Assignment = match serde_json::from_slice(body) {
        Ok(a) => a,
        Err(e) => return bad(format!("expected {{\"include\":[…],\"exclude\":[…]}}: {e}")),
    };
    if let Err(m) = check_assignment(state, &a).await {
        return bad(m);
    }
    let mut new = old.clone();
    new.assignment = a;
    info!(profile_id = id, include = ?new.assignment.include, exclude = ?new.assignment.exclude, "profile assigned");
    save(state, &old, new).await
}

/// The profile's status: how many enrolled devices it targets now, counts per state, and
/// one page of the per-device states.
///
/// Nothing is written per device when a profile is assigned (devices converge at their
/// next session), so a targeted device that has not had a session since has no state
/// record: it counts as `pending`. Computing this without a Scan:
/// - the states: the profile's state index, page by page (one Query per 500 devices on
///   DynamoDB, `GSI1 PDEV#<profile>`);
/// - the targets: for `all`, the device list (Query `GSI1 DEVICES`); otherwise each
///   included group's member index (Query `GMEM#<group>`), minus the excluded groups'
///   members, and one GetItem per member that has no state yet (to leave out blocked,
///   unenrolled and removed devices, which get nothing).
///
/// Cost is proportional to the targeted devices, not per call constant: BENCHMARKS.md has
/// the figures at 100,000 devices.
async fn profile_status(state: &AppState, req: &Request, id: &str) -> Outcome {
    let page = match query_page(req) {
        Ok(p) => p,
        Err(msg) => return bad(msg),
    };
    let Some(profile) = state.store.get_profile(id).await? else {
        return Ok(json_error(StatusCode::NOT_FOUND, "no such profile"));
    };
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    // Devices with a state record, and whether that state is about the current revision.
    let mut reported: HashSet<String> = HashSet::new();
    let mut cursor = None;
    loop {
        let p = state
            .store
            .list_profile_devices(id, &PageRequest::new(cursor, Some(PageRequest::MAX_LIMIT)))
            .await?;
        for s in &p.items {
            reported.insert(s.device_id.clone());
            let key = if s.revision == profile.revision
                || matches!(s.state, DeliveryState::Removed | DeliveryState::Removing)
            {
                state_name(s.state)
            } else {
                // A device still on an older revision has the current one pending.
                "pending"
            };
            *counts.entry(key.to_owned()).or_default() += 1;
        }
        match p.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    let targets = targeted_devices(state, &profile.assignment).await?;
    let mut targeted = 0usize;
    for (device_id, known_enrolled) in targets {
        let enrolled = match known_enrolled {
            Some(e) => e,
            None if reported.contains(&device_id) => true,
            None => state
                .store
                .get_device(&device_id)
                .await?
                .is_some_and(|d| d.status == DeviceStatus::Enrolled),
        };
        if !enrolled {
            continue;
        }
        targeted += 1;
        if !reported.contains(&device_id) {
            *counts.entry("pending".to_owned()).or_default() += 1;
        }
    }
    let p = state.store.list_profile_devices(id, &page).await?;
    Ok(respond::json(
        StatusCode::OK,
        &json!({
            "profile_id": id,
            "revision": profile.revision,
            "targeted": targeted,
            "counts": counts,
            "devices": p.items.iter().map(state_json).collect::<Vec<_>>(),
            "next": p.next,
        }),
    ))
}

fn state_name(s: DeliveryState) -> &'static str {
    match s {
        DeliveryState::Pending => "pending",
        DeliveryState::Sent => "sent",
        DeliveryState::Verifying => "verifying",
        DeliveryState::Verified => "verified",
        DeliveryState::Failed => "failed",
        DeliveryState::Removing => "removing",
        DeliveryState::Removed => "removed",
    }
}

/// The devices an assignment targets, each with whether it is enrolled when that is known
/// from what was read (the device list knows; a group's member index does not).
async fn targeted_devices(
    state: &AppState,
    a: &Assignment,
) -> Result<BTreeMap<String, Option<bool>>, StoreError> {
    let mut out = BTreeMap::new();
    if a.include.is_empty() || a.exclude.iter().any(|g| g == ALL_GROUP) {
        return Ok(out);
    }
    if a.include.iter().any(|g| g == ALL_GROUP) {
        for d in winmdm_core::device_listing::all(state.store.as_ref()).await? {
            if a.targets(&d.groups) {
                out.insert(d.id, Some(d.status == DeviceStatus::Enrolled));
            }
        }
        return Ok(out);
    }
    for g in &a.include {
        for id in group_members(state, g).await? {
            out.insert(id, None);
        }
    }
    for g in &a.exclude {
        for id in group_members(state, g).await? {
            out.remove(&id);
        }
    }
    Ok(out)
}

async fn group_members(state: &AppState, group: &str) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let p = state
            .store
            .list_group_devices(
                group,
                &PageRequest::new(cursor, Some(PageRequest::MAX_LIMIT)),
            )
            .await?;
        out.extend(p.items);
        match p.next {
            Some(n) => cursor = Some(n),
            None => return Ok(out),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupRequest {
    name: String,
    #[serde(default)]
    description: String,
}

fn group_json(g: &Group) -> Value {
    json!({ "name": g.name, "description": g.description, "created_at": rfc3339(g.created_at) })
}

async fn create_group(state: &AppState, req: &Request) -> Outcome {
    let body = match respond::body_bytes(req.body()) {
        Ok(b) => b,
        Err(too_large) => return Ok(too_large.response()),
    };
    let r: GroupRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return bad(format!(
                "expected {{\"name\": string, \"description\"?: string}}: {e}"
            ));
        }
    };
    if let Err(e) = validate_group_name(&r.name) {
        return profile_error(e);
    }
    if r.name == ALL_GROUP {
        return Ok(json_error(StatusCode::CONFLICT, "\"all\" is built in"));
    }
    if state.store.list_groups().await?.len() >= MAX_GROUPS {
        return Ok(json_error(
            StatusCode::CONFLICT,
            format!("a deployment holds at most {MAX_GROUPS} groups"),
        ));
    }
    let g = Group {
        name: r.name,
        description: bounded_description(&r.description),
        created_at: state.enrollment.now(),
    };
    match state.store.create_group(&g).await {
        Err(StoreError::Conflict(_)) => {
            return Ok(json_error(
                StatusCode::CONFLICT,
                format!("a group named {:?} already exists", g.name),
            ));
        }
        other => other?,
    }
    info!(group = %g.name, "group created");
    Ok(respond::json(StatusCode::CREATED, &group_json(&g)))
}

async fn list_groups(state: &AppState) -> Outcome {
    let gs = state.store.list_groups().await?;
    Ok(respond::json(
        StatusCode::OK,
        &json!({ "groups": gs.iter().map(group_json).collect::<Vec<_>>() }),
    ))
}

async fn get_group(state: &AppState, req: &Request, name: &str) -> Outcome {
    let page = match query_page(req) {
        Ok(p) => p,
        Err(msg) => return bad(msg),
    };
    let Some(g) = state.store.get_group(name).await? else {
        return Ok(json_error(StatusCode::NOT_FOUND, "no such group"));
    };
    let members = state.store.list_group_devices(name, &page).await?;
    let mut out = group_json(&g);
    out["devices"] = json!(members.items);
    out["next"] = json!(members.next);
    Ok(respond::json(StatusCode::OK, &out))
}

/// Most members a group may have when it is deleted (each leaves with its own write).
const MAX_MEMBERS_ON_DELETE: usize = 200;

async fn delete_group(state: &AppState, name: &str) -> Outcome {
    let used_by: Vec<String> = state
        .store
        .list_profiles()
        .await?
        .into_iter()
        .filter(|p| {
            p.assignment
                .include
                .iter()
                .chain(&p.assignment.exclude)
                .any(|g| g == name)
        })
        .map(|p| p.name)
        .collect();
    if !used_by.is_empty() {
        return Ok(json_error(
            StatusCode::CONFLICT,
            format!("the group is assigned to profiles: {}", used_by.join(", ")),
        ));
    }
    if state.store.get_group(name).await?.is_none() {
        return Ok(json_error(StatusCode::NOT_FOUND, "no such group"));
    }
    // Members leave first, so a group created later under the same name starts empty.
    // One write per member: bounded per request, so a big group is emptied beforehand.
    let members = state
        .store
        .list_group_devices(
            name,
            &PageRequest::new(None, Some(MAX_MEMBERS_ON_DELETE + 1)),
        )
        .await?;
    if members.items.len() > MAX_MEMBERS_ON_DELETE {
        return Ok(json_error(
            StatusCode::CONFLICT,
            format!(
                "the group has more than {MAX_MEMBERS_ON_DELETE} devices: remove devices \
                 from it first (DELETE /groups/{name}/devices/{{id}})"
            ),
        ));
    }
    for device_id in &members.items {
        let leave = ManagementUpdate {
            device_id: device_id.clone(),
            device: DevicePatch {
                groups: vec![(name.to_owned(), false)],
                ..DevicePatch::default()
            },
            session: SessionWrite::Keep,
            commands: Vec::new(),
            profiles: Vec::new(),
        };
        match state.store.save_management(&leave).await {
            // A member whose record is gone has nothing to leave.
            Ok(()) | Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    if state.store.delete_group(name).await? {
        info!(group = name, members = members.items.len(), "group deleted");
        Ok(respond::bytes(StatusCode::NO_CONTENT, "", Vec::new()))
    } else {
        Ok(json_error(StatusCode::NOT_FOUND, "no such group"))
    }
}

async fn membership(state: &AppState, group: &str, device_id: &str, member: bool) -> Outcome {
    if group == ALL_GROUP {
        return bad("every device is in \"all\"");
    }
    if state.store.get_group(group).await?.is_none() {
        return Ok(json_error(StatusCode::NOT_FOUND, "no such group"));
    }
    if state.store.get_device(device_id).await?.is_none() {
        return Ok(json_error(StatusCode::NOT_FOUND, "no such device"));
    }
    state
        .store
        .save_management(&ManagementUpdate {
            device_id: device_id.to_owned(),
            device: DevicePatch {
                groups: vec![(group.to_owned(), member)],
                ..DevicePatch::default()
            },
            session: SessionWrite::Keep,
            commands: Vec::new(),
            profiles: Vec::new(),
        })
        .await?;
    info!(group, device_id, member, "group membership changed");
    Ok(respond::bytes(StatusCode::NO_CONTENT, "", Vec::new()))
}

/// Every profile assigned to the device, and any it is still removing, with its state.
async fn device_profiles(state: &AppState, id: &str) -> Outcome {
    let Some(snap) = state.store.load_management(id, "").await? else {
        return Ok(json_error(StatusCode::NOT_FOUND, "no such device"));
    };
    let catalog = state.store.list_profiles().await?;
    let mut out = Vec::new();
    for p in &catalog {
        let st = snap.profiles.iter().find(|s| s.profile_id == p.id);
        if !p.targets_device(&snap.device.groups) && st.is_none() {
            continue;
        }
        let mut v = match st {
            Some(s) => state_json(s),
            None => {
                json!({ "device_id": id, "profile_id": p.id, "state": "pending", "revision": p.revision })
            }
        };
        v["name"] = json!(p.name);
        v["desired_revision"] = json!(p.revision);
        v["assigned"] = json!(p.targets_device(&snap.device.groups));
        out.push(v);
    }
    for s in &snap.profiles {
        if !catalog.iter().any(|p| p.id == s.profile_id) {
            let mut v = state_json(s);
            v["name"] = Value::Null;
            v["assigned"] = json!(false);
            out.push(v);
        }
    }
    Ok(respond::json(StatusCode::OK, &json!({ "profiles": out })))
}

async fn resend_profile(state: &AppState, device_id: &str, profile_id: &str) -> Outcome {
    let Some(snap) = state.store.load_management(device_id, "").await? else {
        return Ok(json_error(StatusCode::NOT_FOUND, "no such device"));
    };
    let Some(profile) = state.store.get_profile(profile_id).await? else {
        return Ok(json_error(StatusCode::NOT_FOUND, "no such profile"));
    };
    if !profile.targets_device(&snap.device.groups) {
        return Ok(json_error(
            StatusCode::CONFLICT,
            "the profile is not assigned to this device",
        ));
    }
    let now = state.enrollment.now();
    let mut s = snap
        .profiles
        .into_iter()
        .find(|s| s.profile_id == profile_id)
        .unwrap_or_else(|| DeviceProfile::new(device_id, profile_id, profile.revision, now));
    resend(&mut s, now);
    state
        .store
        .save_management(&ManagementUpdate {
            device_id: device_id.to_owned(),
            device: DevicePatch::default(),
            session: SessionWrite::Keep,
            commands: Vec::new(),
            profiles: vec![s],
        })
        .await?;
    info!(device_id, profile_id, "profile resend requested");
    Ok(respond::json(
        StatusCode::ACCEPTED,
        &json!({ "device_id": device_id, "profile_id": profile_id, "state": "pending" }),
    ))
}

/// A profile's or group's description, as stored: its first 1,024 characters (it is
/// shown, never parsed, and every listing carries it).
fn bounded_description(d: &str) -> String {
    d.chars().take(1024).collect()
}
