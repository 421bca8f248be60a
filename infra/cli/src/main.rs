//! `winmdm`: the operator command line for winmdm's admin API.

mod api;
mod config;
mod error;
mod output;
mod profiles;
mod sigv4;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use api::{Api, Auth};
use error::CliError;

const AFTER_HELP: &str = "\
CONFIGURATION (flags win over the environment, which wins over the profile file):
  --api-url, WINMDM_API_URL     admin API, e.g. http://127.0.0.1:8080 (winmdm-local, the default)
                                or https://<id>.execute-api.<region>.amazonaws.com (AWS)
  --token, WINMDM_TOKEN         bearer token; locally it defaults to <data-dir>/admin-token
  --data-dir, WINMDM_DATA_DIR   winmdm-local's data directory (default .winmdm)
  --sigv4                       sign with AWS SigV4 (automatic for execute-api URLs); credentials
                                from the standard AWS chain, AWS_PROFILE / --aws-profile, and
                                AWS_REGION / --region (or the region in the URL)
  --profile, WINMDM_PROFILE     profile in the profile file (default: default)
  --config, WINMDM_CONFIG       profile file (default ~/.config/winmdm/config), INI sections:
                                  [prod]
                                  api_url = https://abc.execute-api.eu-west-1.amazonaws.com
                                  auth = sigv4
                                  region = eu-west-1
                                  aws_profile = operations
                                keys: api_url, token, data_dir, auth (bearer|sigv4), region, aws_profile

OUTPUT: tables by default, --json for scripts.

EXIT CODES:
  0 success                      5 the admin API is unreachable
  1 other error                  6 conflict (e.g. the user exists)
  2 invalid usage or request     7 --wait timed out
  3 not found                    8 a device answered with a failure: the command's status,
  4 credentials refused            or (profiles --wait) the profile failed on a device";

#[derive(Debug, Parser)]
#[command(
    name = "winmdm",
    version,
    about = "Operate a winmdm server: users, devices, the commands sent to them, configuration profiles and groups",
    after_help = AFTER_HELP
)]
struct Cli {
    /// Admin API base URL.
    #[arg(long, global = true, env = "WINMDM_API_URL")]
    api_url: Option<String>,
    /// Bearer token for the admin API.
    #[arg(long, global = true, env = "WINMDM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// winmdm-local's data directory, to read the admin token from.
    #[arg(long, global = true, env = "WINMDM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Sign requests with AWS SigV4 instead of a bearer token.
    #[arg(long, global = true)]
    sigv4: bool,
    /// AWS region for SigV4.
    #[arg(long, global = true, env = "AWS_REGION")]
    region: Option<String>,
    /// AWS profile for SigV4 credentials.
    #[arg(long, global = true, env = "AWS_PROFILE")]
    aws_profile: Option<String>,
    /// Profile to use from the profile file.
    #[arg(long, global = true, env = "WINMDM_PROFILE")]
    profile: Option<String>,
    /// Profile file.
    #[arg(long, global = true, env = "WINMDM_CONFIG")]
    config: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// People who may enroll devices.
    #[command(subcommand)]
    Users(UsersCmd),
    /// Enrolled devices.
    #[command(subcommand)]
    Devices(DevicesCmd),
    /// Commands queued for devices, and their results.
    #[command(subcommand)]
    Commands(CommandsCmd),
    /// Configuration profiles: settings every targeted device is kept at.
    #[command(subcommand)]
    Profiles(profiles::ProfilesCmd),
    /// Static groups of devices, which profiles are assigned to.
    #[command(subcommand)]
    Groups(profiles::GroupsCmd),
}

#[derive(Debug, Subcommand)]
enum UsersCmd {
    /// Add a user (UPN and password).
    Add {
        upn: String,
        /// The password (or set WINMDM_USER_PASSWORD; or --password-stdin).
        #[arg(long, env = "WINMDM_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Read the password from standard input.
        #[arg(long, conflicts_with = "password")]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Remove a user.
    Remove { upn: String },
}

#[derive(Debug, Subcommand)]
enum DevicesCmd {
    /// List devices.
    List,
    /// Show one device.
    Show { id: String },
    /// Refuse the device's certificates and keep its hardware from enrolling again.
    Block { id: String },
    /// Undo a block.
    Unblock { id: String },
    /// Unenroll and remove the device (at once with --force).
    Remove {
        id: String,
        #[arg(long)]
        force: bool,
    },
    /// The device's profiles: state, revision, last verification, drift, reason.
    Profiles { id: String },
    /// Send a profile to the device again at its next session (after a failure).
    ResendProfile { id: String, profile: String },
}

#[derive(Debug, Subcommand)]
enum CommandsCmd {
    /// Queue a command for a device.
    Send(Box<SendArgs>),
    /// Show a command, its status and results.
    Show { device: String, id: String },
    /// List a device's commands, oldest first.
    List { device: String },
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["get", "replace", "add", "delete", "exec", "action", "file"])))]
struct SendArgs {
    device: String,
    /// Read a node: --get ./DevDetail/SwV
    #[arg(long, value_name = "URI")]
    get: Option<String>,
    /// Set a node (with --format and --data).
    #[arg(long, value_name = "URI")]
    replace: Option<String>,
    /// Add a node (with --format and --data).
    #[arg(long, value_name = "URI")]
    add: Option<String>,
    /// Delete a node.
    #[arg(long, value_name = "URI")]
    delete: Option<String>,
    /// Execute a node (with optional --data).
    #[arg(long, value_name = "URI")]
    exec: Option<String>,
    /// A typed action.
    #[arg(long, value_parser = ["reboot", "wipe", "wipe_protected", "unenroll", "inventory"])]
    action: Option<String>,
    /// A JSON file with one command object or an array of them, as the admin API takes.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// chr, int, bool, b64, xml, node, null
    #[arg(long)]
    format: Option<String>,
    /// MIME type of the data.
    #[arg(long = "type")]
    type_: Option<String>,
    #[arg(long)]
    data: Option<String>,
    /// Wait until the device answers (or --timeout passes).
    #[arg(long)]
    wait: bool,
    /// Seconds to wait with --wait.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("winmdm: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn connect(cli: &Cli) -> Result<Api, CliError> {
    let profile_name = cli.profile.clone().unwrap_or_else(|| "default".into());
    let profile = config::load_profile(cli.config.as_deref(), &profile_name)?;
    let get = |k: &str| profile.get(k).cloned();
    let url = cli
        .api_url
        .clone()
        .or_else(|| get("api_url"))
        .unwrap_or_else(|| config::DEFAULT_API_URL.into());
    let base = config::api_base(&url)?;
    let sigv4 = cli.sigv4
        || get("auth").as_deref() == Some("sigv4")
        || base
            .host_str()
            .is_some_and(|h| h.ends_with(".amazonaws.com"));
    let token = cli.token.clone().or_else(|| get("token"));
    let auth = match (token, sigv4) {
        (Some(t), _) => Auth::Bearer(t),
        (None, true) => {
            let region = cli
                .region
                .clone()
                .or_else(|| get("region"))
                .or_else(|| config::region_from_url(&base))
                .ok_or_else(|| {
                    CliError::Usage("SigV4 needs a region: --region or AWS_REGION".into())
                })?;
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(region.clone()));
            if let Some(p) = cli.aws_profile.clone().or_else(|| get("aws_profile")) {
                loader = loader.profile_name(p);
            }
            let sdk = loader.load().await;
            let provider = sdk
                .credentials_provider()
                .ok_or_else(|| CliError::Unauthorized("no AWS credentials configured".into()))?;
            use aws_credential_types::provider::ProvideCredentials;
            let credentials = provider
                .provide_credentials()
                .await
                .map_err(|e| CliError::Unauthorized(format!("no AWS credentials: {e}")))?;
            Auth::SigV4 {
                credentials,
                region,
            }
        }
        (None, false) => {
            let dir = cli
                .data_dir
                .clone()
                .or_else(|| get("data_dir").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(".winmdm"));
            let path = dir.join("admin-token");
            match std::fs::read_to_string(&path) {
                Ok(t) => Auth::Bearer(t.trim().to_owned()),
                Err(_) => {
                    return Err(CliError::Usage(format!(
                        "no admin credentials: pass --token or set WINMDM_TOKEN, point --data-dir at \
                         winmdm-local's data directory (no token at {}), or use --sigv4 for AWS",
                        path.display()
                    )));
                }
            }
        }
    };
    Api::new(base, auth)
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let api = connect(&cli).await?;
    let json_out = cli.json;
    match cli.command {
        Command::Users(UsersCmd::Add {
            upn,
            password,
            password_stdin,
        }) => {
            let password = match (password, password_stdin) {
                (Some(p), _) => p,
                (None, true) => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .map_err(|e| CliError::Usage(format!("reading the password: {e}")))?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
                (None, false) => {
                    return Err(CliError::Usage(
                        "a password is needed: --password, WINMDM_USER_PASSWORD or --password-stdin".into(),
                    ));
                }
            };
            let u = api
                .call(
                    "POST",
                    "users",
                    Some(&json!({"upn": upn, "password": password})),
                )
                .await?;
            if json_out {
                output::json(&u);
            } else {
                println!("added {}", output::cell(&u["upn"]));
            }
        }
        Command::Users(UsersCmd::List) => {
            let users = api.list_all("users", "users").await?;
            if json_out {
                output::json(&Value::Array(users));
            } else {
                let rows = users
                    .iter()
                    .map(|u| vec![output::cell(&u["upn"]), output::cell(&u["created_at"])])
                    .collect::<Vec<_>>();
                output::table(&["UPN", "CREATED"], &rows);
            }
        }
        Command::Users(UsersCmd::Remove { upn }) => {
            api.call("DELETE", &format!("users/{}", enc(&upn)), None)
                .await?;
            if !json_out {
                println!("removed {upn}");
            }
        }
        Command::Devices(DevicesCmd::List) => {
            let devices = api.list_all("devices", "devices").await?;
            if json_out {
                output::json(&Value::Array(devices));
            } else {
                let rows = devices
                    .iter()
                    .map(|d| {
                        [
                            "id",
                            "upn",
                            "status",
                            "enrollment_type",
                            "last_seen_at",
                            "cert_not_after",
                        ]
                        .iter()
                        .map(|k| output::cell(&d[*k]))
                        .collect()
                    })
                    .collect::<Vec<_>>();
                output::table(
                    &["ID", "UPN", "STATUS", "TYPE", "LAST SEEN", "CERT EXPIRES"],
                    &rows,
                );
            }
        }
        Command::Devices(DevicesCmd::Show { id }) => {
            let d = api
                .call("GET", &format!("devices/{}", enc(&id)), None)
                .await?;
            show_device(&d, json_out);
        }
        Command::Devices(DevicesCmd::Block { id }) => {
            let d = api
                .call("POST", &format!("devices/{}/block", enc(&id)), None)
                .await?;
            show_device(&d, json_out);
        }
        Command::Devices(DevicesCmd::Unblock { id }) => {
            let d = api
                .call("POST", &format!("devices/{}/unblock", enc(&id)), None)
                .await?;
            show_device(&d, json_out);
        }
        Command::Devices(DevicesCmd::Remove { id, force }) => {
            let path = format!(
                "devices/{}{}",
                enc(&id),
                if force { "?force=true" } else { "" }
            );
            let r = api.call("DELETE", &path, None).await?;
            if json_out {
                output::json(&r);
            } else if r["status"] == "removing" {
                println!(
                    "{id}: unenroll queued as command {}; removed when the device acknowledges",
                    output::cell(&r["command_id"])
                );
            } else {
                println!("{id}: removed");
            }
        }
        Command::Devices(DevicesCmd::Profiles { id }) => {
            profiles::device_profiles(&api, &id, json_out).await?
        }
        Command::Devices(DevicesCmd::ResendProfile { id, profile }) => {
            profiles::resend(&api, &id, &profile, json_out).await?
        }
        Command::Profiles(cmd) => profiles::run(&api, cmd, json_out).await?,
        Command::Groups(cmd) => profiles::run_groups(&api, cmd, json_out).await?,
        Command::Commands(CommandsCmd::Send(args)) => send(&api, *args, json_out).await?,
        Command::Commands(CommandsCmd::Show { device, id }) => {
            let c = api
                .call(
                    "GET",
                    &format!("devices/{}/commands/{}", enc(&device), enc(&id)),
                    None,
                )
                .await?;
            show_command(&c, json_out);
        }
        Command::Commands(CommandsCmd::List { device }) => {
            let cmds = api
                .list_all(&format!("devices/{}/commands", enc(&device)), "commands")
                .await?;
            if json_out {
                output::json(&Value::Array(cmds));
            } else {
                let rows = cmds
                    .iter()
                    .map(|c| {
                        vec![
                            output::cell(&c["id"]),
                            output::cell(&c["state"]),
                            output::cell(&c["status"]),
                            describe(c),
                            output::cell(&c["updated_at"]),
                        ]
                    })
                    .collect::<Vec<_>>();
                output::table(&["ID", "STATE", "STATUS", "REQUEST", "UPDATED"], &rows);
            }
        }
    }
    Ok(())
}

/// What a command asks for, in one line.
fn describe(c: &Value) -> String {
    if let Some(a) = c["action"].as_str() {
        return a.to_owned();
    }
    let req = &c["request"];
    match req["kind"].as_str() {
        Some("atomic") => format!(
            "Atomic ({} commands)",
            req["commands"].as_array().map_or(0, Vec::len)
        ),
        _ => format!(
            "{} {}",
            output::cell(&req["verb"]),
            req["items"]
                .as_array()
                .map(|i| i
                    .iter()
                    .map(|it| output::cell(&it["target"]))
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        ),
    }
}

fn show_device(d: &Value, json_out: bool) {
    if json_out {
        output::json(d);
    } else {
        output::fields(
            d,
            &[
                "id",
                "upn",
                "status",
                "enrollment_type",
                "hw_dev_id",
                "cert_thumbprint",
                "cert_not_after",
                "enrolled_at",
                "last_seen_at",
            ],
        );
        if let Some(m) = d["dm_info"]["model"].as_str() {
            println!(
                "{:<15}  {} {}",
                "hardware",
                output::cell(&d["dm_info"]["manufacturer"]),
                m
            );
        }
    }
}

fn show_command(c: &Value, json_out: bool) {
    if json_out {
        output::json(c);
        return;
    }
    output::fields(
        c,
        &[
            "id",
            "device_id",
            "state",
            "status",
            "attempts",
            "created_at",
            "updated_at",
        ],
    );
    println!("{:<10}  {}", "request", describe(c));
    if let Some(results) = c["results"].as_array().filter(|r| !r.is_empty()) {
        println!();
        let rows = results
            .iter()
            .map(|r| {
                vec![
                    output::cell(&r["target"]),
                    output::cell(&r["format"]),
                    output::cell(&r["data"]),
                ]
            })
            .collect::<Vec<_>>();
        output::table(&["TARGET", "FORMAT", "DATA"], &rows);
    }
}

async fn send(api: &Api, a: SendArgs, json_out: bool) -> Result<(), CliError> {
    let bodies: Vec<Value> = if let Some(path) = &a.file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
        match serde_json::from_str::<Value>(&text)
            .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?
        {
            Value::Array(items) => items,
            one => vec![one],
        }
    } else if let Some(action) = &a.action {
        vec![json!({"action": action})]
    } else {
        let (verb, target) = [
            ("Get", &a.get),
            ("Replace", &a.replace),
            ("Add", &a.add),
            ("Delete", &a.delete),
            ("Exec", &a.exec),
        ]
        .into_iter()
        .find_map(|(v, t)| t.as_ref().map(|t| (v, t.clone())))
        .ok_or_else(|| CliError::Usage("say what to send".into()))?;
        let mut b = json!({"verb": verb, "target": target});
        if let Some(f) = &a.format {
            b["format"] = f.clone().into();
        }
        if let Some(t) = &a.type_ {
            b["type"] = t.clone().into();
        }
        if let Some(d) = &a.data {
            b["data"] = d.clone().into();
        }
        vec![b]
    };
    let path = format!("devices/{}/commands", enc(&a.device));
    let mut ids = Vec::new();
    for b in &bodies {
        let r = api.call("POST", &path, Some(b)).await?;
        ids.push(output::cell(&r["id"]));
    }
    if !a.wait {
        if json_out {
            output::json(&json!({"ids": ids}));
        } else {
            for id in &ids {
                println!("queued {id}");
            }
        }
        return Ok(());
    }
    let mut finals = Vec::new();
    for id in &ids {
        finals.push(wait_for(api, &a.device, id, Duration::from_secs(a.timeout)).await?);
    }
    for c in &finals {
        show_command(c, json_out);
    }
    match finals.iter().find(|c| c["state"] == "failed") {
        Some(c) => Err(CliError::CommandFailed(output::cell(&c["status"]))),
        None => Ok(()),
    }
}

/// Polls a command until the device answered, showing progress on a terminal.
async fn wait_for(api: &Api, device: &str, id: &str, timeout: Duration) -> Result<Value, CliError> {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let spinner = ['|', '/', '-', '\\'];
    let mut tick = 0usize;
    let path = format!("devices/{}/commands/{}", enc(device), enc(id));
    loop {
        let c = api.call("GET", &path, None).await?;
        let state = c["state"].as_str().unwrap_or("").to_owned();
        if state == "succeeded" || state == "failed" {
            if tty {
                eprint!("\r\x1b[2K");
            }
            return Ok(c);
        }
        if started.elapsed() >= timeout {
            if tty {
                eprintln!();
            }
            return Err(CliError::Timeout(timeout.as_secs(), state));
        }
        if tty {
            eprint!(
                "\r{} waiting for {device} to answer {id} ({state}, {}s)",
                spinner[tick % spinner.len()],
                started.elapsed().as_secs()
            );
            tick += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
