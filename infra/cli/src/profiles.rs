//! `winmdm profiles …`, `winmdm groups …` and the device-side profile commands: the
//! operator's view of configuration profiles (desired state per device) over the admin API.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Subcommand;
use serde_json::{Map, Value, json};

use crate::api::Api;
use crate::error::CliError;
use crate::output;

#[derive(Debug, Subcommand)]
pub enum ProfilesCmd {
    /// Add a profile from a SyncML fragment (top-level Replace/Add, as Fleet and Intune
    /// custom OMA-URI profiles are written) or a JSON `{"settings":[…]}` file; `-` reads
    /// standard input.
    Add {
        file: PathBuf,
        /// Unique name.
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// device or user (default: user if every target is ./User/…, else device).
        #[arg(long, value_parser = ["device", "user"])]
        scope: Option<String>,
        #[command(flatten)]
        assign: AssignArgs,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Add a profile from a built-in template (`winmdm profiles templates` lists them).
    FromTemplate {
        template: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// A template parameter, NAME=VALUE (repeatable).
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        #[command(flatten)]
        assign: AssignArgs,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// The built-in templates and their parameters.
    Templates,
    /// List profiles.
    List,
    /// Show a profile (by id or name): its settings, assignment and per-device status.
    Show { profile: String },
    /// Change a profile: new settings (a new revision devices converge to), name or
    /// description.
    Edit {
        profile: String,
        /// New settings, as for `profiles add`.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Set the groups a profile is assigned to (replaces the assignment).
    Assign {
        profile: String,
        #[command(flatten)]
        assign: AssignArgs,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Delete a profile; its devices delete the nodes it set at their next session.
    Delete { profile: String },
}

#[derive(Debug, clap::Args)]
pub struct AssignArgs {
    /// A group the profile is assigned to (repeatable; `all` is every device).
    #[arg(long = "include", value_name = "GROUP")]
    include: Vec<String>,
    /// A group whose devices do not get the profile (repeatable).
    #[arg(long = "exclude", value_name = "GROUP")]
    exclude: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// Follow until every targeted device has the profile verified or failed.
    #[arg(long)]
    wait: bool,
    /// Seconds to wait with --wait.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum GroupsCmd {
    /// Create a static group of devices.
    Add {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// List groups.
    List,
    /// Show a group and its devices.
    Show { name: String },
    /// Delete a group (its members leave it; profiles assigned to it stop applying).
    Delete { name: String },
    /// Put a device in a group.
    AddDevice { group: String, device: String },
    /// Take a device out of a group.
    RemoveDevice { group: String, device: String },
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A profile file's contents as request fields: `{"settings":[…]}` JSON, or a SyncML
/// fragment.
fn read_settings(path: &Path) -> Result<Map<String, Value>, CliError> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::Usage(format!("reading the profile from stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?
    };
    let mut out = Map::new();
    if text.trim_start().starts_with('{') {
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
        let settings = v.get("settings").cloned().ok_or_else(|| {
            CliError::Usage(format!(
                "{}: a JSON profile is {{\"settings\":[{{\"target\",\"format\",\"data\"}}]}}",
                path.display()
            ))
        })?;
        out.insert("settings".into(), settings);
    } else {
        out.insert("syncml".into(), Value::String(text));
    }
    Ok(out)
}

fn assignment(a: &AssignArgs) -> Option<Value> {
    if a.include.is_empty() && a.exclude.is_empty() {
        None
    } else {
        Some(json!({"include": a.include, "exclude": a.exclude}))
    }
}

/// The profile an operator names, by id or else by exact name.
async fn resolve(api: &Api, profile: &str) -> Result<Value, CliError> {
    match api
        .call("GET", &format!("profiles/{}", enc(profile)), None)
        .await
    {
        Err(CliError::NotFound(_)) => {}
        other => return other,
    }
    let all = api.call("GET", "profiles", None).await?;
    all["profiles"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == profile).cloned())
        .ok_or_else(|| CliError::NotFound(format!("no profile with id or name {profile:?}")))
}

/// Template parameters typed as the template declares them (`int`, `bool`, `enum`).
async fn template_params(api: &Api, template: &str, given: &[String]) -> Result<Value, CliError> {
    let list = api.call("GET", "profile-templates", None).await?;
    let tpl = list["templates"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == template))
        .ok_or_else(|| {
            let known: Vec<String> = list["templates"]
                .as_array()
                .map(|ts| ts.iter().map(|t| output::cell(&t["name"])).collect())
                .unwrap_or_default();
            CliError::Usage(format!(
                "unknown template {template:?}: the templates are {}",
                known.join(", ")
            ))
        })?;
    let mut params = Map::new();
    for p in given {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--param {p:?}: expected NAME=VALUE")))?;
        let info = tpl["params"]
            .as_array()
            .and_then(|ps| ps.iter().find(|x| x["name"] == k))
            .ok_or_else(|| {
                let names: Vec<String> = tpl["params"]
                    .as_array()
                    .map(|ps| ps.iter().map(|x| output::cell(&x["name"])).collect())
                    .unwrap_or_default();
                CliError::Usage(format!(
                    "template {template} has no parameter {k:?}; it takes {}",
                    names.join(", ")
                ))
            })?;
        let value = match info["kind"].as_str() {
            Some("int") => Value::from(v.parse::<i64>().map_err(|_| {
                CliError::Usage(format!("--param {k}: {v:?} is not a whole number"))
            })?),
            Some("bool") => Value::from(match v {
                "true" | "yes" | "on" | "1" => true,
                "false" | "no" | "off" | "0" => false,
                _ => {
                    return Err(CliError::Usage(format!(
                        "--param {k}: {v:?} is not true or false"
                    )));
                }
            }),
            _ => Value::from(v),
        };
        params.insert(k.to_owned(), value);
    }
    Ok(Value::Object(params))
}

pub async fn run(api: &Api, cmd: ProfilesCmd, json_out: bool) -> Result<(), CliError> {
    match cmd {
        ProfilesCmd::Add {
            file,
            name,
            description,
            scope,
            assign,
            wait,
        } => {
            let mut body = read_settings(&file)?;
            body.insert("name".into(), name.into());
            if let Some(d) = description {
                body.insert("description".into(), d.into());
            }
            if let Some(s) = scope {
                body.insert("scope".into(), s.into());
            }
            if let Some(a) = assignment(&assign) {
                body.insert("assignment".into(), a);
            }
            let p = api
                .call("POST", "profiles", Some(&Value::Object(body)))
                .await?;
            created(api, &p, "added", &wait, json_out).await
        }
        ProfilesCmd::FromTemplate {
            template,
            name,
            description,
            params,
            assign,
            wait,
        } => {
            let params = template_params(api, &template, &params).await?;
            let mut body = json!({"name": name, "template": template, "params": params});
            if let Some(d) = description {
                body["description"] = d.into();
            }
            if let Some(a) = assignment(&assign) {
                body["assignment"] = a;
            }
            let p = api.call("POST", "profiles", Some(&body)).await?;
            created(api, &p, "added", &wait, json_out).await
        }
        ProfilesCmd::Templates => {
            let list = api.call("GET", "profile-templates", None).await?;
            if json_out {
                output::json(&list["templates"]);
                return Ok(());
            }
            for t in list["templates"].as_array().into_iter().flatten() {
                println!(
                    "{}  {}\n  {}",
                    output::cell(&t["name"]),
                    output::cell(&t["title"]),
                    output::cell(&t["description"])
                );
                let rows: Vec<Vec<String>> = t["params"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        let range = match (p["min"].as_i64(), p["max"].as_i64()) {
                            (Some(a), Some(b)) => format!("{a}..{b}"),
                            _ => p["choices"]
                                .as_array()
                                .map(|c| c.iter().map(output::cell).collect::<Vec<_>>().join("|"))
                                .unwrap_or_default(),
                        };
                        vec![
                            format!("  --param {}=", output::cell(&p["name"])),
                            output::cell(&p["kind"]),
                            range,
                            output::cell(&p["default"]),
                            output::cell(&p["help"]),
                        ]
                    })
                    .collect();
                if !rows.is_empty() {
                    output::table(&["  PARAMETER", "KIND", "VALUES", "DEFAULT", "HELP"], &rows);
                }
                println!();
            }
            Ok(())
        }
        ProfilesCmd::List => {
            let list = api.call("GET", "profiles", None).await?;
            if json_out {
                output::json(&list["profiles"]);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list["profiles"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    vec![
                        output::cell(&p["id"]),
                        output::cell(&p["name"]),
                        output::cell(&p["scope"]),
                        output::cell(&p["revision"]),
                        p["settings"].as_array().map_or(0, Vec::len).to_string(),
                        groups(&p["assignment"]),
                    ]
                })
                .collect();
            output::table(
                &["ID", "NAME", "SCOPE", "REV", "SETTINGS", "ASSIGNED TO"],
                &rows,
            );
            Ok(())
        }
        ProfilesCmd::Show { profile } => {
            let p = resolve(api, &profile).await?;
            let id = output::cell(&p["id"]);
            let (status, devices) = status(api, &id).await?;
            if json_out {
                let mut v = p.clone();
                v["status"] = json!({"targeted": status["targeted"], "counts": status["counts"], "devices": devices});
                output::json(&v);
                return Ok(());
            }
            output::fields(
                &p,
                &[
                    "id",
                    "name",
                    "description",
                    "scope",
                    "revision",
                    "updated_at",
                ],
            );
            println!("{:<11}  {}", "assigned to", groups(&p["assignment"]));
            println!();
            let rows: Vec<Vec<String>> = p["settings"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    vec![
                        output::cell(&s["verb"]),
                        output::cell(&s["target"]),
                        output::cell(&s["format"]),
                        short(&output::cell(&s["data"]), 60),
                    ]
                })
                .collect();
            output::table(&["VERB", "TARGET", "FORMAT", "DATA"], &rows);
            println!();
            println!("{}", progress_line(&status));
            if !devices.is_empty() {
                println!();
                let rows: Vec<Vec<String>> = devices
                    .iter()
                    .map(|d| {
                        vec![
                            output::cell(&d["device_id"]),
                            output::cell(&d["state"]),
                            output::cell(&d["revision"]),
                            output::cell(&d["last_verified_at"]),
                            output::cell(&d["reason"]),
                        ]
                    })
                    .collect();
                output::table(
                    &["DEVICE", "STATE", "REV", "LAST VERIFIED", "REASON"],
                    &rows,
                );
            }
            Ok(())
        }
        ProfilesCmd::Edit {
            profile,
            file,
            name,
            description,
            wait,
        } => {
            let p = resolve(api, &profile).await?;
            let mut body = match &file {
                Some(f) => read_settings(f)?,
                None => Map::new(),
            };
            if let Some(n) = name {
                body.insert("name".into(), n.into());
            }
            if let Some(d) = description {
                body.insert("description".into(), d.into());
            }
            if body.is_empty() {
                return Err(CliError::Usage(
                    "nothing to change: give --file, --name or --description".into(),
                ));
            }
            let id = output::cell(&p["id"]);
            let new = api
                .call(
                    "PUT",
                    &format!("profiles/{}", enc(&id)),
                    Some(&Value::Object(body)),
                )
                .await?;
            created(api, &new, "updated", &wait, json_out).await
        }
        ProfilesCmd::Assign {
            profile,
            assign,
            wait,
        } => {
            let p = resolve(api, &profile).await?;
            let id = output::cell(&p["id"]);
            let body = json!({"include": assign.include, "exclude": assign.exclude});
            let new = api
                .call(
                    "POST",
                    &format!("profiles/{}/assignments", enc(&id)),
                    Some(&body),
                )
                .await?;
            created(api, &new, "assigned", &wait, json_out).await
        }
        ProfilesCmd::Delete { profile } => {
            let p = resolve(api, &profile).await?;
            let id = output::cell(&p["id"]);
            api.call("DELETE", &format!("profiles/{}", enc(&id)), None)
                .await?;
            if json_out {
                output::json(&json!({"deleted": id}));
            } else {
                println!("deleted {id}; its devices delete the nodes it set at their next session");
            }
            Ok(())
        }
    }
}

/// After a write: print the profile, and with `--wait` follow it to the end.
async fn created(
    api: &Api,
    p: &Value,
    what: &str,
    wait: &WaitArgs,
    json_out: bool,
) -> Result<(), CliError> {
    let id = output::cell(&p["id"]);
    if !wait.wait {
        if json_out {
            output::json(p);
        } else {
            println!(
                "{what} {id} (revision {}, assigned to {})",
                output::cell(&p["revision"]),
                groups(&p["assignment"])
            );
        }
        return Ok(());
    }
    if !json_out {
        println!("{what} {id} (revision {})", output::cell(&p["revision"]));
    }
    let status = wait_for_profile(api, &id, Duration::from_secs(wait.timeout)).await?;
    let failed = count(&status, "failed");
    if json_out {
        output::json(&status);
    } else {
        println!("{}", progress_line(&status));
    }
    if failed > 0 {
        return Err(CliError::ProfileFailed(format!(
            "{failed} device(s) report the profile failed: see `winmdm profiles show {id}`"
        )));
    }
    Ok(())
}

/// The profile's status and every page of its device states.
async fn status(api: &Api, id: &str) -> Result<(Value, Vec<Value>), CliError> {
    let path = format!("profiles/{}/status", enc(id));
    let first = api.call("GET", &format!("{path}?limit=1"), None).await?;
    let devices = api.list_all(&path, "devices").await?;
    Ok((first, devices))
}

fn count(status: &Value, state: &str) -> u64 {
    status["counts"][state].as_u64().unwrap_or(0)
}

/// `12/40 verified, 1 failed, 27 pending (targeted: 40)`.
fn progress_line(status: &Value) -> String {
    let targeted = status["targeted"].as_u64().unwrap_or(0);
    let mut parts = vec![format!("{}/{targeted} verified", count(status, "verified"))];
    for s in [
        "failed",
        "verifying",
        "sent",
        "pending",
        "removing",
        "removed",
    ] {
        let n = count(status, s);
        if n > 0 {
            parts.push(format!("{n} {s}"));
        }
    }
    parts.join(", ")
}

/// Polls the status until every targeted device is verified or failed.
async fn wait_for_profile(api: &Api, id: &str, timeout: Duration) -> Result<Value, CliError> {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let path = format!("profiles/{}/status?limit=1", enc(id));
    let mut last = String::new();
    loop {
        let st = api.call("GET", &path, None).await?;
        let targeted = st["targeted"].as_u64().unwrap_or(0);
        let settled = count(&st, "verified") + count(&st, "failed");
        let line = progress_line(&st);
        if settled >= targeted {
            if tty {
                eprint!("\r\x1b[2K");
            }
            return Ok(st);
        }
        if started.elapsed() >= timeout {
            if tty {
                eprintln!();
            }
            return Err(CliError::Timeout(timeout.as_secs(), line));
        }
        if tty {
            eprint!("\r\x1b[2K{line} ({}s)", started.elapsed().as_secs());
        } else if line != last {
            // Not a terminal: one line per change, for logs.
            eprintln!("{line}");
        }
        last = line;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn groups(a: &Value) -> String {
    let list = |k: &str| {
        a[k].as_array()
            .map(|g| g.iter().map(output::cell).collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    };
    let (inc, exc) = (list("include"), list("exclude"));
    match (inc.is_empty(), exc.is_empty()) {
        (true, _) => "-".into(),
        (false, true) => inc,
        (false, false) => format!("{inc} except {exc}"),
    }
}

fn short(s: &str, n: usize) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        format!("{}…", one_line.chars().take(n - 1).collect::<String>())
    }
}

pub async fn run_groups(api: &Api, cmd: GroupsCmd, json_out: bool) -> Result<(), CliError> {
    match cmd {
        GroupsCmd::Add { name, description } => {
            let mut body = json!({"name": name});
            if let Some(d) = description {
                body["description"] = d.into();
            }
            let g = api.call("POST", "groups", Some(&body)).await?;
            if json_out {
                output::json(&g);
            } else {
                println!("added group {}", output::cell(&g["name"]));
            }
        }
        GroupsCmd::List => {
            let list = api.call("GET", "groups", None).await?;
            if json_out {
                output::json(&list["groups"]);
            } else {
                let rows: Vec<Vec<String>> = list["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|g| {
                        vec![
                            output::cell(&g["name"]),
                            output::cell(&g["description"]),
                            output::cell(&g["created_at"]),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "DESCRIPTION", "CREATED"], &rows);
            }
        }
        GroupsCmd::Show { name } => {
            let path = format!("groups/{}", enc(&name));
            let mut g = api.call("GET", &format!("{path}?limit=1"), None).await?;
            let devices = api.list_all(&path, "devices").await?;
            g["devices"] = Value::Array(devices.clone());
            g["next"] = Value::Null;
            if json_out {
                output::json(&g);
            } else {
                output::fields(&g, &["name", "description", "created_at"]);
                println!("{:<11}  {}", "devices", devices.len());
                for d in &devices {
                    println!("  {}", output::cell(d));
                }
            }
        }
        GroupsCmd::Delete { name } => {
            api.call("DELETE", &format!("groups/{}", enc(&name)), None)
                .await?;
            if json_out {
                output::json(&json!({"deleted": name}));
            } else {
                println!("deleted group {name}");
            }
        }
        GroupsCmd::AddDevice { group, device } => {
            membership(api, &group, &device, true, json_out).await?
        }
        GroupsCmd::RemoveDevice { group, device } => {
            membership(api, &group, &device, false, json_out).await?
        }
    }
    Ok(())
}

async fn membership(
    api: &Api,
    group: &str,
    device: &str,
    member: bool,
    json_out: bool,
) -> Result<(), CliError> {
    let path = format!("groups/{}/devices/{}", enc(group), enc(device));
    api.call(if member { "PUT" } else { "DELETE" }, &path, None)
        .await?;
    if json_out {
        output::json(&json!({"group": group, "device": device, "member": member}));
    } else if member {
        println!("{device} is in {group}; its profiles change at its next session");
    } else {
        println!("{device} left {group}; its profiles change at its next session");
    }
    Ok(())
}

/// `winmdm devices profiles DEVICE`: each profile assigned to (or still on) the device.
pub async fn device_profiles(api: &Api, device: &str, json_out: bool) -> Result<(), CliError> {
    let v = api
        .call("GET", &format!("devices/{}/profiles", enc(device)), None)
        .await?;
    if json_out {
        output::json(&v["profiles"]);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v["profiles"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                output::cell(&p["profile_id"]),
                output::cell(&p["name"]),
                output::cell(&p["state"]),
                format!(
                    "{}/{}",
                    output::cell(&p["revision"]),
                    output::cell(&p["desired_revision"])
                ),
                output::cell(&p["last_verified_at"]),
                output::cell(&p["drift_count"]),
                output::cell(&p["reason"]),
            ]
        })
        .collect();
    output::table(
        &[
            "PROFILE",
            "NAME",
            "STATE",
            "REV/WANTED",
            "LAST VERIFIED",
            "DRIFTS",
            "REASON",
        ],
        &rows,
    );
    Ok(())
}

/// `winmdm devices resend-profile DEVICE PROFILE`.
pub async fn resend(
    api: &Api,
    device: &str,
    profile: &str,
    json_out: bool,
) -> Result<(), CliError> {
    let p = resolve(api, profile).await?;
    let id = output::cell(&p["id"]);
    let v = api
        .call(
            "POST",
            &format!("devices/{}/profiles/{}/resend", enc(device), enc(&id)),
            None,
        )
        .await?;
    if json_out {
        output::json(&v);
    } else {
        println!("{device}: {id} goes out again at the device's next session");
    }
    Ok(())
}
