//! The overview, devices, users and enrollment pages.

use std::fmt::Write as _;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::html::{esc, url_part, when};
use super::{Ctx, Form, api_error, error_box, notice_box, s, see_other};
use crate::respond::Response;

fn opt<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn status_badge(status: &str) -> String {
    let class = match status {
        "enrolled" | "verified" | "done" | "succeeded" | "compliant" => "ok",
        "blocked" | "failed" | "removed" | "expired" => "bad",
        _ => "neutral",
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(status))
}

fn unavailable(ctx: &Ctx<'_>, section: &str, v: &Value) -> Response {
    ctx.page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        section,
        error_box(&api_error(v)),
    )
}

// ---- Overview ------------------------------------------------------------------------

pub async fn overview(ctx: &Ctx<'_>) -> Response {
    let (status, o) = ctx.api(Method::GET, "/overview", None).await;
    if !status.is_success() {
        return unavailable(ctx, "overview", &o);
    }
    let n = |path: &[&str]| {
        path.iter()
            .try_fold(&o, |v, k| v.get(*k))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let mut body = String::new();
    body.push_str("<section class=\"tiles\" aria-label=\"Devices by status\">");
    for (k, label) in [
        ("enrolled", "Enrolled"),
        ("blocked", "Blocked"),
        ("unenrolled", "Unenrolled"),
        ("removed", "Removed"),
    ] {
        let _ = write!(
            body,
            "<a class=\"tile\" href=\"/console/devices\"><span class=\"num\">{}</span>\
             <span class=\"label\">{label}</span></a>",
            n(&["by_status", k])
        );
    }
    let _ = write!(
        body,
        "<div class=\"tile\"><span class=\"num\">{}</span>\
         <span class=\"label\">Certificates expiring in 30 days</span></div></section>",
        n(&["expiring_certificates"])
    );
    body.push_str(
        "<section class=\"card\"><h2>Last check-in</h2><p class=\"hint\">Enrolled and \
         blocked devices, by their last management session (to the hour, UTC).</p>\
         <table><thead><tr><th scope=\"col\">Within the hour</th><th scope=\"col\">Within \
         24 hours</th><th scope=\"col\">Within 7 days</th><th scope=\"col\">Earlier</th>\
         <th scope=\"col\">Never</th></tr></thead><tbody><tr>",
    );
    for k in ["hour", "day", "week", "older", "never"] {
        let _ = write!(body, "<td>{}</td>", n(&["last_seen", k]));
    }
    body.push_str("</tr></tbody></table></section>");

    // Profile compliance: shown once a device has profiles.
    let compliance = ["compliant", "pending", "failed"].map(|k| (k, n(&["compliance", k])));
    if compliance.iter().any(|(_, v)| *v > 0) {
        body.push_str(
            "<section class=\"card\"><h2>Profile compliance</h2><p class=\"hint\">Enrolled \
             devices with profiles, as their latest session left them.</p><p class=\"tiles\">",
        );
        for (k, v) in compliance {
            let _ = write!(
                body,
                "<a class=\"tile\" href=\"/console/devices?compliance={k}\"><span \
                 class=\"num\">{v}</span><span class=\"label\">{}</span></a>",
                match k {
                    "compliant" => "Compliant",
                    "pending" => "Pending",
                    _ => "Failed",
                }
            );
        }
        body.push_str("</p></section>");
    }

    // Recent failed commands: the newest notes the stores keep.
    let failures = o
        .get("recent_failed_commands")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    body.push_str("<section class=\"card\"><h2>Recent failed commands</h2>");
    if failures.is_empty() {
        body.push_str("<p class=\"hint\">None.</p>");
    } else {
        body.push_str(
            "<table class=\"failures\"><thead><tr><th scope=\"col\">When</th>\
             <th scope=\"col\">Device</th><th scope=\"col\">Command</th>\
             <th scope=\"col\">Status</th><th scope=\"col\">Reason</th></tr></thead><tbody>",
        );
        for f in &failures {
            let device = s(f, "device_id");
            let _ = write!(
                body,
                "<tr><td>{}</td><td><a href=\"/console/devices/{}\">{}</a></td><td>{}</td>\
                 <td>{}</td><td>{}</td></tr>",
                esc(&when(opt(f, "failed_at"))),
                esc(&url_part(device)),
                esc(device),
                esc(s(f, "what")),
                f.get("status")
                    .and_then(Value::as_u64)
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
                esc(opt(f, "reason").unwrap_or("")),
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</section>");

    // Enrollments per day: an SVG bar chart (no script, no inline style: CSP-clean).
    let days: Vec<(String, i64)> = o
        .get("enrollments_per_day")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|d| Some((d.get(0)?.as_str()?.to_owned(), d.get(1)?.as_i64()?)))
                .collect()
        })
        .unwrap_or_default();
    let max = days.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
    let total: i64 = days.iter().map(|(_, v)| *v).sum();
    let _ = write!(
        body,
        "<section class=\"card\"><h2>Enrollments, last 30 days</h2>\
         <p class=\"hint\">{total} in all.</p>\
         <svg class=\"chart\" viewBox=\"0 0 300 72\" role=\"img\" \
         aria-label=\"Enrollments per day for the last 30 days, {total} in all\">"
    );
    for (i, (day, v)) in days.iter().enumerate() {
        let h = (*v as f64 / max as f64 * 56.0).round() as i64;
        let _ = write!(
            body,
            "<rect x=\"{}\" y=\"{}\" width=\"8\" height=\"{}\"><title>{}: {v}</title></rect>",
            i * 10,
            60 - h,
            h.max(if *v > 0 { 1 } else { 0 }),
            esc(day)
        );
    }
    if let (Some((first, _)), Some((last, _))) = (days.first(), days.last()) {
        let _ = write!(
            body,
            "<text x=\"0\" y=\"70\">{}</text><text x=\"300\" y=\"70\" \
             text-anchor=\"end\">{}</text>",
            esc(first),
            esc(last)
        );
    }
    body.push_str("</svg></section>");
    ctx.page(StatusCode::OK, "Overview", "overview", body)
}

// ---- Devices ---------------------------------------------------------------------------

/// The listing parameters the device page passes to the API, in this order.
const LISTING_PARAMS: [&str; 8] = [
    "q",
    "status",
    "os",
    "seen",
    "group",
    "compliance",
    "sort",
    "order",
];

/// `/console/devices?…` for the current filters, with some replaced (`None` drops one).
fn devices_href(q: &Form, changes: &[(&str, Option<&str>)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for k in LISTING_PARAMS.iter().chain(&["cursor"]) {
        let v = match changes.iter().find(|(c, _)| c == k) {
            Some((_, v)) => *v,
            None if *k == "cursor" => None,
            None => q.text(k),
        };
        if let Some(v) = v {
            out.append_pair(k, v);
        }
    }
    let qs = out.finish();
    if qs.is_empty() {
        "/console/devices".into()
    } else {
        format!("/console/devices?{qs}")
    }
}

/// A column header that sorts by `key`, toggling the order when it already does.
fn sort_header(q: &Form, key: &str, label: &str) -> String {
    let current = q.text("sort").unwrap_or("id");
    let descending = q.text("order") == Some("desc");
    let (order, mark, aria) = match (current == key, descending) {
        (true, false) => ("desc", " ▲", " aria-sort=\"ascending\""),
        (true, true) => ("asc", " ▼", " aria-sort=\"descending\""),
        (false, _) => ("asc", "", ""),
    };
    let href = devices_href(q, &[("sort", Some(key)), ("order", Some(order))]);
    format!(
        "<th scope=\"col\"{aria}><a href=\"{}\">{}{mark}</a></th>",
        esc(&href),
        esc(label)
    )
}

/// A table of listing rows (JSON from the API).
fn device_table(q: &Form, devices: &[Value]) -> String {
    let mut t = String::from("<table class=\"devices\"><thead><tr>");
    for (key, label) in [
        ("name", "Device"),
        ("upn", "User"),
        ("status", "Status"),
        ("os", "OS"),
        ("last_seen", "Last check-in"),
        ("enrolled", "Enrolled"),
    ] {
        t.push_str(&sort_header(q, key, label));
    }
    t.push_str("</tr></thead><tbody>");
    if devices.is_empty() {
        t.push_str("<tr><td colspan=\"6\">No devices.</td></tr>");
    }
    for d in devices {
        let id = s(d, "id");
        let name = opt(d, "name").unwrap_or(id);
        let serial = opt(d, "serial")
            .map(|sn| format!(" · SN {}", esc(sn)))
            .unwrap_or_default();
        let _ = write!(
            t,
            "<tr><td><a href=\"/console/devices/{}\">{}</a><div class=\"sub\">{}{serial}</div></td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&url_part(id)),
            esc(name),
            esc(id),
            esc(s(d, "upn")),
            status_badge(s(d, "status"))
                + &opt(d, "compliance")
                    .map(|c| format!(" {}", status_badge(c)))
                    .unwrap_or_default(),
            esc(opt(d, "os_version").unwrap_or("")),
            esc(&when(opt(d, "last_seen_at"))),
            esc(&when(opt(d, "enrolled_at"))),
        );
    }
    t.push_str("</tbody></table>");
    t
}

/// `<option>`s for a select, `current` selected.
fn options(items: &[(&str, &str)], current: Option<&str>) -> String {
    let mut o = String::new();
    for (value, label) in items {
        let _ = write!(
            o,
            "<option value=\"{}\"{}>{}</option>",
            esc(value),
            if current.unwrap_or("") == *value {
                " selected"
            } else {
                ""
            },
            esc(label)
        );
    }
    o
}

/// The device list: search, filters and sorting are the API's listing
/// (`winmdm_core::device_listing`), so the console and the CLI see the same rows.
pub async fn devices(ctx: &Ctx<'_>, q: &Form) -> Response {
    let path = {
        let mut api = url::form_urlencoded::Serializer::new(String::new());
        api.append_pair("limit", "50");
        for k in LISTING_PARAMS.iter().chain(&["cursor"]) {
            if let Some(v) = q.text(k) {
                api.append_pair(k, v);
            }
        }
        format!("/devices?{}", api.finish())
    };
    let (st, v) = ctx.api(Method::GET, &path, None).await;
    let (list, next, notes) = if st == StatusCode::BAD_REQUEST {
        (Vec::new(), None, error_box(&api_error(&v)))
    } else if !st.is_success() {
        return unavailable(ctx, "devices", &v);
    } else {
        let list = v
            .get("devices")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let next = opt(&v, "next").map(str::to_owned);
        let notes = if v.get("budget_spent").and_then(Value::as_bool) == Some(true) {
            notice_box(&format!(
                "Searched {} devices so far; use “More results” to search on.",
                v.get("examined").and_then(Value::as_u64).unwrap_or(0)
            ))
        } else {
            String::new()
        };
        (list, next, notes)
    };

    let (_, groups) = ctx.api(Method::GET, "/groups", None).await;
    let group_names: Vec<String> = groups
        .get("groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|g| s(g, "name").to_owned())
        .collect();
    let mut group_items = vec![("", "Any group")];
    group_items.extend(group_names.iter().map(|g| (g.as_str(), g.as_str())));
    let mut body = format!(
        "<form class=\"filters\" method=\"get\" action=\"/console/devices\" role=\"search\">\
         <label for=\"q\">Search</label><input id=\"q\" name=\"q\" type=\"search\" maxlength=\"128\" \
         value=\"{}\" placeholder=\"DeviceID, user, name or serial\">\
         <label for=\"status\">Status</label><select id=\"status\" name=\"status\">{}</select>\
         <label for=\"os\">OS version</label><input id=\"os\" name=\"os\" maxlength=\"128\" \
         value=\"{}\" placeholder=\"e.g. 10.0.22631\">\
         <label for=\"seen\">Last check-in</label><select id=\"seen\" name=\"seen\">{}</select>\
         <label for=\"group\">Group</label><select id=\"group\" name=\"group\">{}</select>\
         <label for=\"compliance\">Profiles</label><select id=\"compliance\" name=\"compliance\">{}</select>\
         <input type=\"hidden\" name=\"sort\" value=\"{}\"><input type=\"hidden\" name=\"order\" value=\"{}\">\
         <button type=\"submit\">Show</button> <a href=\"/console/devices\">Clear</a></form>{notes}",
        esc(q.text("q").unwrap_or("")),
        options(
            &[
                ("", "Any status"),
                ("enrolled", "Enrolled"),
                ("blocked", "Blocked"),
                ("unenrolled", "Unenrolled"),
                ("removed", "Removed"),
            ],
            q.text("status")
        ),
        esc(q.text("os").unwrap_or("")),
        options(
            &[
                ("", "Any time"),
                ("1h", "In the last hour"),
                ("24h", "In the last 24 hours"),
                ("7d", "In the last 7 days"),
                ("older", "More than 7 days ago"),
                ("never", "Never"),
            ],
            q.text("seen")
        ),
        options(&group_items, q.text("group")),
        options(
            &[
                ("", "Any compliance"),
                ("compliant", "Compliant"),
                ("pending", "Pending"),
                ("failed", "Failed"),
                ("none", "No profiles"),
            ],
            q.text("compliance")
        ),
        esc(q.text("sort").unwrap_or("")),
        esc(q.text("order").unwrap_or("")),
    );
    body.push_str(&device_table(q, &list));
    let mut pager = String::new();
    if q.text("cursor").is_some() {
        let _ = write!(
            pager,
            "<a href=\"{}\">← First page</a> ",
            esc(&devices_href(q, &[]))
        );
    }
    if let Some(next) = next {
        let _ = write!(
            pager,
            "<a href=\"{}\">More results →</a>",
            esc(&devices_href(q, &[("cursor", Some(&next))]))
        );
    }
    if !pager.is_empty() {
        let _ = write!(body, "<p class=\"pager\">{pager}</p>");
    }
    ctx.page(StatusCode::OK, "Devices", "devices", body)
}

/// The actions on the device page: `(value, label, destructive)`.
const ACTIONS: &[(&str, &str, bool)] = &[
    ("inventory", "Refresh inventory", false),
    ("reboot", "Reboot", true),
    ("wipe", "Wipe", true),
    ("wipe_protected", "Protected wipe", true),
    ("block", "Block", true),
    ("unblock", "Unblock", false),
    ("remove", "Remove", true),
];

fn row(label: &str, value: &str) -> String {
    format!(
        "<tr><th scope=\"row\">{}</th><td>{}</td></tr>",
        esc(label),
        esc(value)
    )
}

pub async fn device(ctx: &Ctx<'_>, id: &str, q: &Form, message: Option<String>) -> Response {
    let path_id = url_part(id);
    let (st, d) = ctx
        .api(Method::GET, &format!("/devices/{path_id}"), None)
        .await;
    if st == StatusCode::NOT_FOUND {
        return ctx.page(
            st,
            "Device",
            "devices",
            error_box("There is no such device."),
        );
    }
    if !st.is_success() {
        return unavailable(ctx, "devices", &d);
    }
    let name = d
        .pointer("/os/device_name")
        .and_then(Value::as_str)
        .unwrap_or(id)
        .to_owned();
    let mut body = String::new();
    if let Some(m) = message {
        body.push_str(&m);
    } else if let Some(done) = q.get("done") {
        // Fixed messages only: nothing from the URL is echoed.
        let m = match done {
            "queued" => "Command queued: the device runs it at its next session.",
            "blocked" => "The device is blocked.",
            "unblocked" => "The device is unblocked.",
            "removing" => "Removal requested: the device is removed when it acknowledges.",
            "removed" => "The device is removed.",
            _ => "",
        };
        if !m.is_empty() {
            body.push_str(&notice_box(m));
        }
    }
    let _ = write!(
        body,
        "<p class=\"lead\">{} {}</p><div class=\"grid\"><section class=\"card\">\
         <h2>Identity</h2><table class=\"kv\">",
        esc(&name),
        status_badge(s(&d, "status"))
    );
    body.push_str(&row("DeviceID", id));
    body.push_str(&row("HWDevID", opt(&d, "hw_dev_id").unwrap_or("—")));
    body.push_str(&row("User", s(&d, "upn")));
    body.push_str(&row(
        "Enrollment type",
        d.get("enrollment_type")
            .and_then(Value::as_str)
            .unwrap_or(""),
    ));
    body.push_str(&row("Enrolled", &when(opt(&d, "enrolled_at"))));
    body.push_str(&row("Last check-in", &when(opt(&d, "last_seen_at"))));
    let groups: Vec<&str> = d
        .get("groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    body.push_str(&row("Groups", &groups.join(", ")));
    body.push_str(
        "</table></section><section class=\"card\"><h2>Hardware and OS</h2><table class=\"kv\">",
    );
    for (obj, k, label) in [
        ("os", "device_name", "Device name"),
        ("os", "os_edition", "OS edition"),
        ("os", "os_version", "OS version"),
        ("os", "device_type", "Device type"),
        ("os", "application_version", "DM client version"),
        ("dm_info", "manufacturer", "Manufacturer"),
        ("dm_info", "model", "Model"),
        ("dm_info", "language", "Language"),
        ("dm_info", "dm_version", "OMA-DM version"),
    ] {
        if let Some(v) = d.get(obj).and_then(|o| o.get(k)).and_then(Value::as_str) {
            body.push_str(&row(label, v));
        }
    }
    let cmds = device_commands(ctx, id).await;
    // The newest inventory the device answered.
    if let Some(inv) = cmds.as_ref().ok().and_then(|cmds| {
        cmds.iter()
            .find(|c| opt(c, "action") == Some("inventory") && s(c, "state") == "succeeded")
    }) {
        let _ = write!(
            body,
            "<tr><th scope=\"row\" colspan=\"2\" class=\"sub\">Inventory of {}</th></tr>",
            esc(&when(opt(inv, "updated_at")))
        );
        for r in inv
            .get("results")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = s(r, "target").rsplit('/').next().unwrap_or("");
            body.push_str(&row(name, s(r, "data")));
        }
    }
    body.push_str(
        "</table></section><section class=\"card\"><h2>Certificate</h2><table class=\"kv\">",
    );
    body.push_str(&row("Serial", s(&d, "cert_serial")));
    body.push_str(&row("Thumbprint", s(&d, "cert_thumbprint")));
    body.push_str(&row("Expires", &when(opt(&d, "cert_not_after"))));
    body.push_str("</table></section></div>");

    // Actions: each a form; the destructive ones go to a confirmation first.
    let _ = write!(
        body,
        "<section class=\"card\"><h2>Actions</h2><div class=\"actions\">"
    );
    for (value, label, destructive) in ACTIONS {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/console/devices/{}/action\">{}\
             <input type=\"hidden\" name=\"action\" value=\"{value}\">\
             <button type=\"submit\"{}>{label}</button></form>",
            esc(&path_id),
            ctx.csrf_field(),
            if *destructive {
                " class=\"danger\""
            } else {
                ""
            }
        );
    }
    body.push_str("</div></section>");

    // Profiles on this device.
    let (_, profiles) = ctx
        .api(Method::GET, &format!("/devices/{path_id}/profiles"), None)
        .await;
    let states = profiles
        .get("profiles")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    body.push_str("<section class=\"card\"><h2>Profiles</h2>");
    if states.is_empty() {
        body.push_str("<p>No profile has reached this device yet.</p>");
    } else {
        body.push_str(
            "<table><thead><tr><th scope=\"col\">Profile</th><th scope=\"col\">Revision</th>\
             <th scope=\"col\">State</th><th scope=\"col\">Reason</th></tr></thead><tbody>",
        );
        for p in &states {
            let pid = s(p, "profile_id");
            let _ = write!(
                body,
                "<tr><td><a href=\"/console/profiles/{}\">{}</a></td><td>{}</td><td>{}</td>\
                 <td>{}</td></tr>",
                esc(&url_part(pid)),
                esc(pid),
                p.get("revision").and_then(Value::as_u64).unwrap_or(0),
                status_badge(s(p, "state")),
                esc(opt(p, "reason").unwrap_or(""))
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</section>");

    // Command history, refreshed by console.js while any command is open.
    let _ = write!(
        body,
        "<section class=\"card\"><h2>Commands</h2><div id=\"commands\" \
         data-src=\"/console/devices/{}/commands\">{}</div></section>",
        esc(&path_id),
        match &cmds {
            Ok(c) => commands_table(c),
            Err(e) => error_box(e),
        }
    );

    // A raw command, checked by the API's own validation.
    let _ = write!(
        body,
        "<section class=\"card\"><h2>Send a command</h2>\
         <form class=\"stack\" method=\"post\" action=\"/console/devices/{}/command\">{}\
         <label for=\"verb\">Verb</label><select id=\"verb\" name=\"verb\">\
         <option>Get</option><option>Replace</option><option>Add</option>\
         <option>Delete</option><option>Exec</option></select>\
         <label for=\"target\">LocURI</label><input id=\"target\" name=\"target\" required \
         placeholder=\"./DevDetail/SwV\" value=\"{}\">\
         <label for=\"format\">Format</label><select id=\"format\" name=\"format\">\
         <option value=\"\">(none)</option><option>chr</option><option>int</option>\
         <option>bool</option><option>b64</option><option>xml</option><option>node</option>\
         <option>null</option></select>\
         <label for=\"data\">Data</label><textarea id=\"data\" name=\"data\" rows=\"3\">{}\
         </textarea><button type=\"submit\">Queue command</button></form></section>",
        esc(&path_id),
        ctx.csrf_field(),
        esc(q.get("target").unwrap_or("")),
        esc(q.get("data").unwrap_or(""))
    );
    ctx.page(StatusCode::OK, &name, "devices", body)
}

/// The commands table alone (what console.js refreshes).
pub async fn command_rows(ctx: &Ctx<'_>, id: &str) -> Response {
    let mut r = super::html_response(StatusCode::OK, commands_fragment(ctx, id).await);
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

/// A device's commands, newest first (one page of 100 from the API).
async fn device_commands(ctx: &Ctx<'_>, id: &str) -> Result<Vec<Value>, String> {
    let (st, v) = ctx
        .api(
            Method::GET,
            &format!("/devices/{}/commands?limit=100", url_part(id)),
            None,
        )
        .await;
    if !st.is_success() {
        return Err(api_error(&v));
    }
    let mut cmds = v
        .get("commands")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    cmds.sort_by(|a, b| s(b, "created_at").cmp(s(a, "created_at")));
    Ok(cmds)
}

async fn commands_fragment(ctx: &Ctx<'_>, id: &str) -> String {
    match device_commands(ctx, id).await {
        Ok(cmds) => commands_table(&cmds),
        Err(e) => error_box(&e),
    }
}

fn commands_table(cmds: &[Value]) -> String {
    if cmds.is_empty() {
        return "<p>No commands yet.</p>".into();
    }
    let open = cmds
        .iter()
        .any(|c| matches!(s(c, "state"), "pending" | "sent"));
    let mut t = format!(
        "<table data-open=\"{open}\"><thead><tr><th scope=\"col\">Queued</th>\
         <th scope=\"col\">Command</th><th scope=\"col\">State</th><th scope=\"col\">Status</th>\
         <th scope=\"col\">Results</th></tr></thead><tbody>"
    );
    for c in cmds {
        let what = match opt(c, "action") {
            Some(a) => a.to_owned(),
            None => summarize_request(c.get("request")),
        };
        let status = match c.get("status") {
            Some(Value::Null) | None => String::new(),
            Some(v) => v.to_string(),
        };
        let _ = write!(
            t,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&when(opt(c, "created_at"))),
            esc(&what),
            status_badge(s(c, "state")),
            esc(&status),
            results(c.get("results"), opt(c, "reason"))
        );
    }
    t.push_str("</tbody></table>");
    t
}

/// A queued command's request in one line: the verb and its first target.
fn summarize_request(r: Option<&Value>) -> String {
    let Some(r) = r else { return String::new() };
    let verb = r
        .pointer("/verb")
        .or_else(|| r.pointer("/Single/verb"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let target = r
        .pointer("/items/0/target")
        .or_else(|| r.pointer("/Single/items/0/target"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if verb.is_empty() && target.is_empty() {
        // Atomic or another shape: its JSON, short.
        return r.to_string().chars().take(120).collect();
    }
    format!("{verb} {target}")
}

/// Results as a definition list: each LocURI and its value (XML values shown as text,
/// indented, never as markup).
fn results(v: Option<&Value>, reason: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(r) = reason {
        let _ = write!(out, "<div class=\"reason\">{}</div>", esc(r));
    }
    let Some(list) = v.and_then(Value::as_array) else {
        return out;
    };
    if list.is_empty() {
        return out;
    }
    out.push_str("<dl class=\"results\">");
    for item in list {
        let uri = s(item, "target");
        let data = item.get("data").and_then(Value::as_str).unwrap_or_default();
        let _ = write!(
            out,
            "<dt>{}</dt><dd><pre>{}</pre></dd>",
            esc(if uri.is_empty() { "(value)" } else { uri }),
            esc(&pretty_xml(data))
        );
    }
    out.push_str("</dl>");
    out
}

/// XML with one element per line, indented, for reading; other text unchanged. Never
/// interpreted as markup, and bounded: the value is device-supplied, and deep nesting of
/// short elements (`<a><a><a>…`) would otherwise grow quadratically with its indentation.
/// Indentation stops at [`MAX_INDENT`] levels, and a value whose layout would take more
/// than four times its own size is shown as it came.
fn pretty_xml(data: &str) -> String {
    const MAX_INDENT: usize = 12;
    let t = data.trim();
    if !(t.starts_with('<') && t.ends_with('>')) || t.len() > 64 * 1024 {
        return data.to_owned();
    }
    let budget = t.len() * 4;
    let mut out = String::with_capacity(t.len() * 2);
    let mut depth: usize = 0;
    for piece in t.split_inclusive('>') {
        if out.len() > budget {
            return data.to_owned();
        }
        let indent = "  ".repeat(depth.min(MAX_INDENT));
        let (text, tag) = match piece.find('<') {
            Some(i) => (&piece[..i], &piece[i..]),
            None => (piece, ""),
        };
        if !text.trim().is_empty() {
            out.push_str(text.trim());
        }
        if tag.starts_with("</") {
            depth = depth.saturating_sub(1);
            if out.ends_with('\n') {
                out.push_str(&"  ".repeat(depth.min(MAX_INDENT)));
            }
            out.push_str(tag);
            out.push('\n');
        } else if !tag.is_empty() {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&indent);
            out.push_str(tag);
            if !tag.ends_with("/>") && !tag.starts_with("<?") && !tag.starts_with("<!") {
                depth += 1;
            } else {
                out.push('\n');
            }
        }
    }
    out.trim_end().to_owned()
}

pub async fn device_action(ctx: &Ctx<'_>, id: &str, form: &Form) -> Response {
    let path_id = url_part(id);
    let action = form.get("action").unwrap_or("");
    let Some((_, label, destructive)) = ACTIONS.iter().find(|(v, _, _)| *v == action) else {
        return device(ctx, id, form, Some(error_box("Unknown action."))).await;
    };
    if *destructive && form.get("confirm") != Some(id) {
        // Name the device, and make the admin confirm this one.
        let (st, d) = ctx
            .api(Method::GET, &format!("/devices/{path_id}"), None)
            .await;
        if !st.is_success() {
            return device(ctx, id, form, Some(error_box(&api_error(&d)))).await;
        }
        let name = d
            .pointer("/os/device_name")
            .and_then(Value::as_str)
            .unwrap_or(id);
        let body = format!(
            "<section class=\"card narrow confirm\"><p><strong>{label}</strong> the device \
             <strong>{}</strong> (DeviceID <code>{}</code>, user {})?</p>{}\
             <form method=\"post\" action=\"/console/devices/{}/action\">{}\
             <input type=\"hidden\" name=\"action\" value=\"{action}\">\
             <input type=\"hidden\" name=\"confirm\" value=\"{}\">\
             <button type=\"submit\" class=\"danger\">{label} {}</button> \
             <a class=\"button\" href=\"/console/devices/{}\">Cancel</a></form></section>",
            esc(name),
            esc(id),
            esc(s(&d, "upn")),
            match action {
                "wipe" | "wipe_protected" => {
                    "<p class=\"warn\">This erases the device: its user loses every file on it.</p>"
                }
                "remove" => {
                    "<p class=\"warn\">The device is asked to unenroll; it is no longer managed.</p>"
                }
                _ => "",
            },
            esc(&path_id),
            ctx.csrf_field(),
            esc(id),
            esc(name),
            esc(&path_id),
        );
        return ctx.page(StatusCode::OK, &format!("{label}?"), "devices", body);
    }
    let (st, v, done) = match action {
        "block" => {
            let (st, v) = ctx
                .api(Method::POST, &format!("/devices/{path_id}/block"), None)
                .await;
            (st, v, "blocked")
        }
        "unblock" => {
            let (st, v) = ctx
                .api(Method::POST, &format!("/devices/{path_id}/unblock"), None)
                .await;
            (st, v, "unblocked")
        }
        "remove" => {
            let (st, v) = ctx
                .api(Method::DELETE, &format!("/devices/{path_id}"), None)
                .await;
            let done = if st == StatusCode::ACCEPTED {
                "removing"
            } else {
                "removed"
            };
            (st, v, done)
        }
        _ => {
            let (st, v) = ctx
                .api(
                    Method::POST,
                    &format!("/devices/{path_id}/commands"),
                    Some(json!({ "action": action })),
                )
                .await;
            (st, v, "queued")
        }
    };
    if st.is_success() {
        tracing::info!(device_id = id, action, "console action");
        see_other(&format!("/console/devices/{path_id}?done={done}"))
    } else {
        device(ctx, id, form, Some(error_box(&api_error(&v)))).await
    }
}

pub async fn raw_command(ctx: &Ctx<'_>, id: &str, form: &Form) -> Response {
    let mut item = serde_json::Map::new();
    item.insert("verb".into(), json!(form.text("verb").unwrap_or("")));
    item.insert("target".into(), json!(form.text("target").unwrap_or("")));
    if let Some(f) = form.text("format") {
        item.insert("format".into(), json!(f));
    }
    if let Some(d) = form.get("data").filter(|d| !d.is_empty()) {
        item.insert("data".into(), json!(d));
    }
    let path_id = url_part(id);
    let (st, v) = ctx
        .api(
            Method::POST,
            &format!("/devices/{path_id}/commands"),
            Some(Value::Object(item)),
        )
        .await;
    if st.is_success() {
        see_other(&format!("/console/devices/{path_id}?done=queued"))
    } else {
        let mut r = device(ctx, id, form, Some(error_box(&api_error(&v)))).await;
        if r.status() == StatusCode::OK {
            *r.status_mut() = st;
        }
        r
    }
}

// ---- Users -----------------------------------------------------------------------------

pub async fn users(ctx: &Ctx<'_>, message: Option<(StatusCode, String)>) -> Response {
    let (st, v) = ctx.api(Method::GET, "/users?limit=200", None).await;
    if !st.is_success() {
        return unavailable(ctx, "users", &v);
    }
    let (status, mut body) = message.unwrap_or((StatusCode::OK, String::new()));
    body.push_str(
        "<section class=\"card\"><h2>Enrollment users</h2><p class=\"hint\">People who sign \
         in on a device to enroll it.</p><table><thead><tr><th scope=\"col\">User</th>\
         <th scope=\"col\">Added</th><th scope=\"col\"><span class=\"visually-hidden\">Actions\
         </span></th></tr></thead><tbody>",
    );
    let list = v
        .get("users")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        body.push_str("<tr><td colspan=\"3\">No users yet.</td></tr>");
    }
    for u in &list {
        let upn = s(u, "upn");
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td><form method=\"post\" \
             action=\"/console/users/delete\">{}<input type=\"hidden\" name=\"upn\" value=\"{}\">\
             <button type=\"submit\" class=\"danger\" aria-label=\"Delete {}\">Delete</button>\
             </form></td></tr>",
            esc(upn),
            esc(&when(opt(u, "created_at"))),
            ctx.csrf_field(),
            esc(upn),
            esc(upn)
        );
    }
    if v.get("next").is_some_and(|n| !n.is_null()) {
        body.push_str("<tr><td colspan=\"3\">More users exist: see the admin API.</td></tr>");
    }
    let _ = write!(
        body,
        "</tbody></table></section><section class=\"card\"><h2>Add a user</h2>\
         <form class=\"stack\" method=\"post\" action=\"/console/users\">{}\
         <label for=\"upn\">User name (UPN, as name@domain)</label>\
         <input id=\"upn\" name=\"upn\" type=\"email\" required autocomplete=\"off\">\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" required minlength=\"12\" \
         autocomplete=\"new-password\" aria-describedby=\"strength\">\
         <p id=\"strength\" class=\"hint\" aria-live=\"polite\">At least 12 characters; a \
         passphrase of several words is strongest.</p>\
         <label for=\"password2\">Password again</label>\
         <input id=\"password2\" name=\"password2\" type=\"password\" required \
         autocomplete=\"new-password\">\
         <button type=\"submit\">Add user</button></form></section>",
        ctx.csrf_field()
    );
    ctx.page(status, "Users", "users", body)
}

pub async fn add_user(ctx: &Ctx<'_>, form: &Form) -> Response {
    let upn = form.text("upn").unwrap_or("");
    let password = form.get("password").unwrap_or("");
    if password != form.get("password2").unwrap_or("") {
        return users(
            ctx,
            Some((
                StatusCode::BAD_REQUEST,
                error_box("The two passwords are not the same."),
            )),
        )
        .await;
    }
    let (st, v) = ctx
        .api(
            Method::POST,
            "/users",
            Some(json!({ "upn": upn, "password": password })),
        )
        .await;
    let message = if st.is_success() {
        (
            StatusCode::OK,
            notice_box(&format!("Added {}.", s(&v, "upn"))),
        )
    } else {
        (st, error_box(&api_error(&v)))
    };
    users(ctx, Some(message)).await
}

pub async fn delete_user(ctx: &Ctx<'_>, form: &Form) -> Response {
    let upn = form.text("upn").unwrap_or("");
    if form.get("confirm") != Some(upn) {
        let body = format!(
            "<section class=\"card narrow confirm\"><p>Delete the user <strong>{}</strong>? \
             Devices they enrolled stay enrolled; they can no longer enroll new ones.</p>\
             <form method=\"post\" action=\"/console/users/delete\">{}\
             <input type=\"hidden\" name=\"upn\" value=\"{}\">\
             <input type=\"hidden\" name=\"confirm\" value=\"{}\">\
             <button type=\"submit\" class=\"danger\">Delete {}</button> \
             <a class=\"button\" href=\"/console/users\">Cancel</a></form></section>",
            esc(upn),
            ctx.csrf_field(),
            esc(upn),
            esc(upn),
            esc(upn)
        );
        return ctx.page(StatusCode::OK, "Delete user?", "users", body);
    }
    let (st, v) = ctx
        .api(Method::DELETE, &format!("/users/{}", url_part(upn)), None)
        .await;
    let message = if st.is_success() {
        (StatusCode::OK, notice_box(&format!("Deleted {upn}.")))
    } else {
        (st, error_box(&api_error(&v)))
    };
    users(ctx, Some(message)).await
}

// ---- Enroll ----------------------------------------------------------------------------

pub async fn enroll(ctx: &Ctx<'_>) -> Response {
    let config = ctx.state.enrollment.config();
    let discovery = config.discovery_url();
    let policy = match config.auth_policy {
        winmdm_core::config::PreferredAuth::Federated => "federated",
        winmdm_core::config::PreferredAuth::OnPremise => "onpremise",
    };
    let (_, v) = ctx.api(Method::GET, "/users?limit=1", None).await;
    let example_upn = v
        .pointer("/users/0/upn")
        .and_then(Value::as_str)
        .unwrap_or("someone@example.com");
    let host = url::Url::parse(&discovery)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let link = format!(
        "ms-device-enrollment:?mode=mdm&username={}&servername={}",
        url_part(example_upn),
        url_part(&discovery)
    );
    let body = format!(
        "<section class=\"card\"><h2>This server</h2><table class=\"kv\">{}{}</table></section>\
         <section class=\"card\"><h2>On Windows 10 or 11</h2><ol class=\"steps\">\
         <li>Open <strong>Settings → Accounts → Access work or school</strong>.</li>\
         <li>Under “Related settings”, choose <strong>Enroll only in device management</strong> \
         (not “Connect”, which joins a directory).</li>\
         <li>Enter the user's address, e.g. <code>{}</code>. Windows looks for \
         <code>enterpriseenrollment.&lt;their domain&gt;</code>; if that name does not point \
         here, enter <code>{}</code> as the server when asked.</li>\
         <li>Sign in {}.</li>\
         <li>The device appears under <a href=\"/console/devices\">Devices</a> after its \
         first session, usually within a minute.</li></ol>\
         <p>Or open this link on the device: <a href=\"{}\">{}</a></p></section>",
        row("Discovery URL", &discovery),
        row("Sign-in policy", policy),
        esc(example_upn),
        esc(&host),
        if policy == "federated" {
            "on this server's sign-in page with the user's password"
        } else {
            "with the user's name and password (on-premise authentication)"
        },
        esc(&link),
        esc(&link),
    );
    ctx.page(StatusCode::OK, "Enroll a device", "enroll", body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_xml_indents_elements_and_keeps_text() {
        assert_eq!(
            pretty_xml("<a><b>1</b><c/></a>"),
            "<a>\n  <b>1</b>\n  <c/>\n</a>"
        );
        assert_eq!(pretty_xml("10.0.22631"), "10.0.22631");
    }

    /// A device's answer of deeply nested short elements: under the old layout, 4,000
    /// levels took ≈ 16 MB (and 64 KB of them ≈ 477 MB), in the admin function's memory.
    #[test]
    fn pretty_xml_of_deep_nesting_stays_near_the_size_of_its_input() {
        for deep in ["<a>".repeat(4_000), "<a>".repeat(21_845)] {
            let out = pretty_xml(&deep);
            assert!(out.len() <= 4 * deep.len() + 64, "{}", out.len());
        }
        let nested = format!("{}x{}", "<a>".repeat(20), "</a>".repeat(20));
        let out = pretty_xml(&nested);
        assert!(out.lines().all(|l| l.len() - l.trim_start().len() <= 24));
        assert_eq!(out.matches("<a>").count(), 20, "nothing lost");
    }

    /// An Atomic's summary is cut by characters, not bytes: a cut inside a multi-byte
    /// character used to panic, for every view of the device's page.
    #[test]
    fn an_atomic_summary_cuts_between_characters() {
        let r = serde_json::json!({"kind": "atomic", "commands": [{"items": [{"data": format!("x{}", "é".repeat(100))}]}]});
        let summary = summarize_request(Some(&r));
        assert_eq!(summary.chars().count(), 120);
    }
}
