//! Configuration profiles and groups.

use std::fmt::Write as _;

use http::{Method, StatusCode};
use serde_json::{Map, Value, json};
use winmdm_core::profile_templates;

use super::html::{esc, url_part, when};
use super::{Ctx, Form, api_error, error_box, notice_box, s, see_other};
use crate::respond::Response;

fn names(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// The profile fields of a create or edit form, as the API's JSON: the pasted SyncML, or
/// a template with its parameters (`p.<name>` fields; blank ones left out).
fn profile_request(form: &Form) -> Value {
    let mut r = Map::new();
    if let Some(n) = form.text("name") {
        r.insert("name".into(), json!(n));
    }
    if let Some(d) = form.get("description") {
        r.insert("description".into(), json!(d.trim()));
    }
    if let Some(scope) = form.text("scope") {
        r.insert("scope".into(), json!(scope));
    }
    if let Some(t) = form.text("template") {
        r.insert("template".into(), json!(t));
        let mut params = Map::new();
        if let Some(info) = profile_templates::template(t) {
            for p in info.params {
                let Some(v) = form.text(&format!("p.{}", p.name)) else {
                    continue;
                };
                // The API checks kinds and ranges; typed here only as JSON needs.
                let value = match p.kind {
                    "int" => v.parse::<i64>().map(Value::from).unwrap_or(json!(v)),
                    "bool" => json!(v == "true"),
                    _ => json!(v),
                };
                params.insert(p.name.into(), value);
            }
        }
        r.insert("params".into(), Value::Object(params));
    } else if let Some(x) = form.text("syncml") {
        r.insert("syncml".into(), json!(x));
    }
    Value::Object(r)
}

fn template_forms(ctx: &Ctx<'_>, action: &str, with_name: bool) -> String {
    let mut out = String::new();
    for t in profile_templates::templates() {
        let _ = write!(
            out,
            "<details class=\"template\"><summary>{}</summary><p class=\"hint\">{}</p>\
             <form class=\"stack\" method=\"post\" action=\"{}\">{}\
             <input type=\"hidden\" name=\"template\" value=\"{}\">",
            esc(t.title),
            esc(t.description),
            esc(action),
            ctx.csrf_field(),
            esc(t.name)
        );
        if with_name {
            let _ = write!(
                out,
                "<label for=\"n-{0}\">Name</label><input id=\"n-{0}\" name=\"name\" required \
                 value=\"{1}\">",
                esc(t.name),
                esc(t.title)
            );
        }
        for p in t.params {
            let id = format!("{}-{}", t.name, p.name);
            let _ = write!(out, "<label for=\"{}\">{}</label>", esc(&id), esc(p.name));
            match p.kind {
                "bool" => {
                    let _ = write!(
                        out,
                        "<select id=\"{0}\" name=\"p.{1}\"><option value=\"\">(default{2})\
                         </option><option>true</option><option>false</option></select>",
                        esc(&id),
                        esc(p.name),
                        p.default.map(|d| format!(": {d}")).unwrap_or_default()
                    );
                }
                "enum" => {
                    let _ = write!(
                        out,
                        "<select id=\"{}\" name=\"p.{}\"><option value=\"\">(default)</option>",
                        esc(&id),
                        esc(p.name)
                    );
                    for c in p.choices {
                        let _ = write!(out, "<option>{}</option>", esc(c));
                    }
                    out.push_str("</select>");
                }
                _ => {
                    let _ = write!(
                        out,
                        "<input id=\"{}\" name=\"p.{}\" inputmode=\"numeric\" placeholder=\"{}\">",
                        esc(&id),
                        esc(p.name),
                        esc(p.default.unwrap_or(""))
                    );
                }
            }
            let _ = write!(out, "<p class=\"hint\">{}</p>", esc(p.help));
        }
        out.push_str("<button type=\"submit\">Save</button></form></details>");
    }
    out
}

/// A profile's device counts by state as badges (`3 verified · 1 failed`), or "none yet".
fn state_counts(counts: Option<&Value>) -> String {
    let mut out = String::new();
    for (state, n) in counts
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k, v.as_u64()?)))
        .filter(|(_, n)| *n > 0)
    {
        let class = match state.as_str() {
            "verified" => "ok",
            "failed" => "bad",
            _ => "neutral",
        };
        let _ = write!(
            out,
            "<span class=\"badge {class}\">{n} {}</span> ",
            esc(state)
        );
    }
    if out.is_empty() {
        out.push_str("none yet");
    }
    out
}

pub async fn profiles(ctx: &Ctx<'_>, message: Option<(StatusCode, String)>) -> Response {
    let (st, v) = ctx.api(Method::GET, "/profiles", None).await;
    if !st.is_success() {
        return ctx.page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Profiles",
            "profiles",
            error_box(&api_error(&v)),
        );
    }
    let (status, mut body) = message.unwrap_or((StatusCode::OK, String::new()));
    body.push_str(
        "<section class=\"card\"><table><thead><tr><th scope=\"col\">Profile</th>\
         <th scope=\"col\">Scope</th><th scope=\"col\">Revision</th>\
         <th scope=\"col\">Assigned to</th><th scope=\"col\">Devices</th>\
         <th scope=\"col\">Updated</th></tr></thead><tbody>",
    );
    let list = v
        .get("profiles")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        body.push_str("<tr><td colspan=\"6\">No profiles yet.</td></tr>");
    }
    for p in &list {
        let include = names(p.pointer("/assignment/include"));
        let exclude = names(p.pointer("/assignment/exclude"));
        let mut assigned = include.join(", ");
        if !exclude.is_empty() {
            let _ = write!(assigned, " (not {})", exclude.join(", "));
        }
        let _ = write!(
            body,
            "<tr><td><a href=\"/console/profiles/{}\">{}</a><div class=\"sub\">{}</div></td>\
             <td>{}</td><td>{}</td><td>{}</td><td class=\"counts\">{}</td><td>{}</td></tr>",
            esc(&url_part(s(p, "id"))),
            esc(s(p, "name")),
            esc(s(p, "description")),
            esc(s(p, "scope")),
            p.get("revision").and_then(Value::as_u64).unwrap_or(0),
            esc(if assigned.is_empty() {
                "nobody"
            } else {
                &assigned
            }),
            state_counts(p.get("counts")),
            esc(&when(p.get("updated_at").and_then(Value::as_str)))
        );
    }
    let _ = write!(
        body,
        "</tbody></table></section><section class=\"card\"><h2>New profile</h2>\
         <h3>From SyncML</h3><form class=\"stack\" method=\"post\" action=\"/console/profiles\">{}\
         <label for=\"name\">Name</label><input id=\"name\" name=\"name\" required>\
         <label for=\"description\">Description</label><input id=\"description\" name=\"description\">\
         <label for=\"scope\">Scope</label><select id=\"scope\" name=\"scope\">\
         <option value=\"\">from the LocURIs</option><option value=\"device\">device</option>\
         <option value=\"user\">user</option></select>\
         <label for=\"syncml\">SyncML (top-level Replace or Add commands)</label>\
         <textarea id=\"syncml\" name=\"syncml\" rows=\"8\" required></textarea>\
         <button type=\"submit\">Create profile</button></form>\
         <h3>From a template</h3>{}</section>",
        ctx.csrf_field(),
        template_forms(ctx, "/console/profiles", true)
    );
    ctx.page(status, "Profiles", "profiles", body)
}

pub async fn create_profile(ctx: &Ctx<'_>, form: &Form) -> Response {
    let (st, v) = ctx
        .api(Method::POST, "/profiles", Some(profile_request(form)))
        .await;
    if st.is_success() {
        return see_other(&format!(
            "/console/profiles/{}?done=created",
            url_part(s(&v, "id"))
        ));
    }
    profiles(ctx, Some((st, error_box(&api_error(&v))))).await
}

pub async fn profile(
    ctx: &Ctx<'_>,
    id: &str,
    q: &Form,
    message: Option<(StatusCode, String)>,
) -> Response {
    let pid = url_part(id);
    let (st, p) = ctx
        .api(Method::GET, &format!("/profiles/{pid}"), None)
        .await;
    if !st.is_success() {
        return ctx.page(st, "Profile", "profiles", error_box(&api_error(&p)));
    }
    // Maintained counts and a page of states: bounded, whatever the fleet's size.
    let mut path = format!("/profiles/{pid}/devices?limit=50");
    if let Some(c) = q.text("cursor") {
        let _ = write!(path, "&cursor={}", url_part(c));
    }
    let (_, status) = ctx.api(Method::GET, &path, None).await;
    let (code, mut body) = message.unwrap_or((StatusCode::OK, String::new()));
    match q.get("done") {
        Some("created") => body.push_str(&notice_box("Profile created.")),
        Some("saved") => body.push_str(&notice_box(
            "Saved: devices converge at their next session.",
        )),
        _ => {}
    }
    let _ = write!(
        body,
        "<p class=\"lead\">{} · revision {} · {} scope</p>",
        esc(s(&p, "description")),
        p.get("revision").and_then(Value::as_u64).unwrap_or(0),
        esc(s(&p, "scope"))
    );
    // Counts by state (devices that have not checked in since the assignment have no
    // state yet) and per-device states.
    body.push_str("<section class=\"tiles\" aria-label=\"Devices by state\">");
    if let Some(counts) = status.get("counts").and_then(Value::as_object) {
        for (k, n) in counts {
            let _ = write!(
                body,
                "<div class=\"tile\"><span class=\"num\">{}</span><span class=\"label\">{}</span></div>",
                n.as_u64().unwrap_or(0),
                esc(k)
            );
        }
    }
    body.push_str(
        "</section><section class=\"card\"><h2>Devices</h2><table><thead><tr>\
        <th scope=\"col\">Device</th><th scope=\"col\">Revision</th><th scope=\"col\">State</th>\
        <th scope=\"col\">Reason</th><th scope=\"col\">Updated</th></tr></thead><tbody>",
    );
    let devices = status
        .get("devices")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if devices.is_empty() {
        body.push_str(
            "<tr><td colspan=\"5\">No device has reported on this profile yet.</td></tr>",
        );
    }
    for d in &devices {
        let did = s(d, "device_id");
        let _ = write!(
            body,
            "<tr><td><a href=\"/console/devices/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td></tr>",
            esc(&url_part(did)),
            esc(did),
            d.get("revision").and_then(Value::as_u64).unwrap_or(0),
            esc(s(d, "state")),
            esc(s(d, "reason")),
            esc(&when(d.get("updated_at").and_then(Value::as_str)))
        );
    }
    body.push_str("</tbody></table>");
    if let Some(next) = status.get("next").and_then(Value::as_str) {
        let _ = write!(
            body,
            "<p class=\"pager\"><a href=\"/console/profiles/{}?cursor={}\">Next page →</a></p>",
            esc(&pid),
            esc(&url_part(next))
        );
    }
    body.push_str("</section>");

    // Settings.
    body.push_str(
        "<section class=\"card\"><h2>Settings</h2><table><thead><tr>\
        <th scope=\"col\">Verb</th><th scope=\"col\">LocURI</th><th scope=\"col\">Format</th>\
        <th scope=\"col\">Value</th></tr></thead><tbody>",
    );
    for set in p
        .get("settings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let _ = write!(
            body,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td><pre>{}</pre></td></tr>",
            esc(s(set, "verb")),
            esc(s(set, "target")),
            esc(s(set, "format")),
            esc(s(set, "data"))
        );
    }
    body.push_str("</tbody></table></section>");

    // Assignment.
    let (_, groups) = ctx.api(Method::GET, "/groups", None).await;
    let include = names(p.pointer("/assignment/include"));
    let exclude = names(p.pointer("/assignment/exclude"));
    let mut all_groups = vec!["all".to_owned()];
    all_groups.extend(
        groups
            .get("groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|g| s(g, "name").to_owned())
            .filter(|g| g != "all"),
    );
    let _ = write!(
        body,
        "<section class=\"card\"><h2>Assignment</h2><form method=\"post\" \
         action=\"/console/profiles/{}/assign\">{}<table><thead><tr><th scope=\"col\">Group</th>\
         <th scope=\"col\">Include</th><th scope=\"col\">Exclude</th></tr></thead><tbody>",
        esc(&pid),
        ctx.csrf_field()
    );
    for (i, g) in all_groups.iter().enumerate() {
        let _ = write!(
            body,
            "<tr><td>{0}</td><td><input type=\"checkbox\" id=\"inc{3}\" name=\"include\" \
             value=\"{0}\"{1} aria-label=\"Include {0}\"></td><td><input type=\"checkbox\" \
             id=\"exc{3}\" name=\"exclude\" value=\"{0}\"{2} aria-label=\"Exclude {0}\"></td></tr>",
            esc(g),
            if include.contains(g) { " checked" } else { "" },
            if exclude.contains(g) { " checked" } else { "" },
            i
        );
    }
    body.push_str(
        "</tbody></table><button type=\"submit\">Save assignment</button></form></section>",
    );

    // Edit: a new revision from SyncML or the template.
    let _ = write!(
        body,
        "<section class=\"card\"><h2>New revision</h2>\
         <form class=\"stack\" method=\"post\" action=\"/console/profiles/{0}/edit\">{1}\
         <label for=\"syncml\">SyncML replacing the settings</label>\
         <textarea id=\"syncml\" name=\"syncml\" rows=\"6\" required></textarea>\
         <button type=\"submit\">Save new revision</button></form>{2}</section>\
         <section class=\"card\"><h2>Delete</h2><form method=\"post\" \
         action=\"/console/profiles/{0}/delete\">{1}<button type=\"submit\" class=\"danger\">\
         Delete this profile</button></form></section>",
        esc(&pid),
        ctx.csrf_field(),
        match p.get("template").and_then(Value::as_str) {
            Some(t) => {
                let all = template_forms(ctx, &format!("/console/profiles/{pid}/edit"), false);
                // Only this profile's template.
                all.split("<details")
                    .filter(|f| f.contains(&format!("name=\"template\" value=\"{}\"", esc(t))))
                    .map(|f| format!("<details{f}"))
                    .collect::<String>()
            }
            None => String::new(),
        }
    );
    ctx.page(code, s(&p, "name"), "profiles", body)
}

pub async fn edit_profile(ctx: &Ctx<'_>, id: &str, form: &Form) -> Response {
    let pid = url_part(id);
    let (st, v) = ctx
        .api(
            Method::PUT,
            &format!("/profiles/{pid}"),
            Some(profile_request(form)),
        )
        .await;
    if st.is_success() {
        return see_other(&format!("/console/profiles/{pid}?done=saved"));
    }
    profile(
        ctx,
        id,
        &Form(Vec::new()),
        Some((st, error_box(&api_error(&v)))),
    )
    .await
}

pub async fn assign_profile(ctx: &Ctx<'_>, id: &str, form: &Form) -> Response {
    let pid = url_part(id);
    let include: Vec<&str> = form.all("include").collect();
    let exclude: Vec<&str> = form.all("exclude").collect();
    let (st, v) = ctx
        .api(
            Method::POST,
            &format!("/profiles/{pid}/assignments"),
            Some(json!({ "include": include, "exclude": exclude })),
        )
        .await;
    if st.is_success() {
        return see_other(&format!("/console/profiles/{pid}?done=saved"));
    }
    profile(
        ctx,
        id,
        &Form(Vec::new()),
        Some((st, error_box(&api_error(&v)))),
    )
    .await
}

pub async fn delete_profile(ctx: &Ctx<'_>, id: &str, form: &Form) -> Response {
    let pid = url_part(id);
    if form.get("confirm") != Some(id) {
        let body = format!(
            "<section class=\"card narrow confirm\"><p>Delete the profile <strong>{0}</strong>? \
             Devices remove its settings at their next session.</p><form method=\"post\" \
             action=\"/console/profiles/{1}/delete\">{2}<input type=\"hidden\" name=\"confirm\" \
             value=\"{0}\"><button type=\"submit\" class=\"danger\">Delete {0}</button> \
             <a class=\"button\" href=\"/console/profiles/{1}\">Cancel</a></form></section>",
            esc(id),
            esc(&pid),
            ctx.csrf_field()
        );
        return ctx.page(StatusCode::OK, "Delete profile?", "profiles", body);
    }
    let (st, v) = ctx
        .api(Method::DELETE, &format!("/profiles/{pid}"), None)
        .await;
    let msg = if st.is_success() {
        (
            StatusCode::OK,
            notice_box(&format!("Deleted profile {id}.")),
        )
    } else {
        (st, error_box(&api_error(&v)))
    };
    profiles(ctx, Some(msg)).await
}

// ---- Groups ----------------------------------------------------------------------------

pub async fn groups(ctx: &Ctx<'_>, message: Option<(StatusCode, String)>) -> Response {
    let (st, v) = ctx.api(Method::GET, "/groups", None).await;
    if !st.is_success() {
        return ctx.page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Groups",
            "groups",
            error_box(&api_error(&v)),
        );
    }
    let (code, mut body) = message.unwrap_or((StatusCode::OK, String::new()));
    body.push_str(
        "<section class=\"card\"><p class=\"hint\">Every device is in <strong>all</strong>; \
        static groups hold the devices you add.</p><table><thead><tr><th scope=\"col\">Group</th>\
        <th scope=\"col\">Description</th><th scope=\"col\">Created</th></tr></thead><tbody>",
    );
    for g in v
        .get("groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = s(g, "name");
        let _ = write!(
            body,
            "<tr><td><a href=\"/console/groups/{}\">{}</a></td><td>{}</td><td>{}</td></tr>",
            esc(&url_part(name)),
            esc(name),
            esc(s(g, "description")),
            esc(&when(g.get("created_at").and_then(Value::as_str)))
        );
    }
    let _ = write!(
        body,
        "</tbody></table></section><section class=\"card\"><h2>New group</h2>\
         <form class=\"stack\" method=\"post\" action=\"/console/groups\">{}\
         <label for=\"gname\">Name</label><input id=\"gname\" name=\"name\" required>\
         <label for=\"gdesc\">Description</label><input id=\"gdesc\" name=\"description\">\
         <button type=\"submit\">Create group</button></form></section>",
        ctx.csrf_field()
    );
    ctx.page(code, "Groups", "groups", body)
}

pub async fn create_group(ctx: &Ctx<'_>, form: &Form) -> Response {
    let mut r = json!({ "name": form.text("name").unwrap_or("") });
    if let Some(d) = form.text("description") {
        r["description"] = json!(d);
    }
    let (st, v) = ctx.api(Method::POST, "/groups", Some(r)).await;
    if st.is_success() {
        return see_other(&format!("/console/groups/{}", url_part(s(&v, "name"))));
    }
    groups(ctx, Some((st, error_box(&api_error(&v))))).await
}

pub async fn group(
    ctx: &Ctx<'_>,
    name: &str,
    q: &Form,
    message: Option<(StatusCode, String)>,
) -> Response {
    let gid = url_part(name);
    let mut path = format!("/groups/{gid}?limit=100");
    if let Some(c) = q.text("cursor") {
        let _ = write!(path, "&cursor={}", url_part(c));
    }
    let (st, v) = ctx.api(Method::GET, &path, None).await;
    if !st.is_success() {
        return ctx.page(st, "Group", "groups", error_box(&api_error(&v)));
    }
    let (code, mut body) = message.unwrap_or((StatusCode::OK, String::new()));
    let _ = write!(
        body,
        "<p class=\"lead\">{}</p><section class=\"card\"><h2>Members</h2><table><thead><tr>\
         <th scope=\"col\">Device</th><th scope=\"col\"><span class=\"visually-hidden\">Actions\
         </span></th></tr></thead><tbody>",
        esc(s(&v, "description"))
    );
    let members = names(v.get("devices"));
    if members.is_empty() {
        body.push_str("<tr><td colspan=\"2\">No devices.</td></tr>");
    }
    for d in &members {
        let _ = write!(
            body,
            "<tr><td><a href=\"/console/devices/{0}\">{1}</a></td><td><form method=\"post\" \
             action=\"/console/groups/{2}/members\">{3}<input type=\"hidden\" name=\"device\" \
             value=\"{1}\"><input type=\"hidden\" name=\"op\" value=\"remove\">\
             <button type=\"submit\" aria-label=\"Remove {1} from the group\">Remove</button>\
             </form></td></tr>",
            esc(&url_part(d)),
            esc(d),
            esc(&gid),
            ctx.csrf_field()
        );
    }
    body.push_str("</tbody></table>");
    if let Some(next) = v.get("next").and_then(Value::as_str) {
        let _ = write!(
            body,
            "<p class=\"pager\"><a href=\"/console/groups/{}?cursor={}\">Next page →</a></p>",
            esc(&gid),
            esc(&url_part(next))
        );
    }
    let _ = write!(
        body,
        "</section><section class=\"card\"><h2>Add a device</h2><form class=\"stack\" \
         method=\"post\" action=\"/console/groups/{0}/members\">{1}\
         <input type=\"hidden\" name=\"op\" value=\"add\"><label for=\"device\">DeviceID</label>\
         <input id=\"device\" name=\"device\" required><button type=\"submit\">Add</button>\
         </form></section><section class=\"card\"><h2>Delete</h2><form method=\"post\" \
         action=\"/console/groups/{0}/delete\">{1}<button type=\"submit\" class=\"danger\">\
         Delete this group</button></form></section>",
        esc(&gid),
        ctx.csrf_field()
    );
    ctx.page(code, name, "groups", body)
}

pub async fn group_members(ctx: &Ctx<'_>, name: &str, form: &Form) -> Response {
    let gid = url_part(name);
    let device = form.text("device").unwrap_or("");
    let method = if form.get("op") == Some("remove") {
        Method::DELETE
    } else {
        Method::PUT
    };
    let (st, v) = ctx
        .api(
            method,
            &format!("/groups/{gid}/devices/{}", url_part(device)),
            None,
        )
        .await;
    let msg = if st.is_success() {
        (StatusCode::OK, notice_box("Membership saved."))
    } else {
        (st, error_box(&api_error(&v)))
    };
    group(ctx, name, &Form(Vec::new()), Some(msg)).await
}

pub async fn delete_group(ctx: &Ctx<'_>, name: &str, form: &Form) -> Response {
    let gid = url_part(name);
    if form.get("confirm") != Some(name) {
        let body = format!(
            "<section class=\"card narrow confirm\"><p>Delete the group <strong>{0}</strong>? \
             Profiles assigned to it stop targeting its devices.</p><form method=\"post\" \
             action=\"/console/groups/{1}/delete\">{2}<input type=\"hidden\" name=\"confirm\" \
             value=\"{0}\"><button type=\"submit\" class=\"danger\">Delete {0}</button> \
             <a class=\"button\" href=\"/console/groups/{1}\">Cancel</a></form></section>",
            esc(name),
            esc(&gid),
            ctx.csrf_field()
        );
        return ctx.page(StatusCode::OK, "Delete group?", "groups", body);
    }
    let (st, v) = ctx
        .api(Method::DELETE, &format!("/groups/{gid}"), None)
        .await;
    let msg = if st.is_success() {
        (
            StatusCode::OK,
            notice_box(&format!("Deleted group {name}.")),
        )
    } else {
        (st, error_box(&api_error(&v)))
    };
    groups(ctx, Some(msg)).await
}
