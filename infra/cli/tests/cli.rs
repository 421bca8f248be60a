//! The `winmdm` binary against `winmdm-local`: users, device listing after an emulated
//! enrollment, a command sent with `--wait` while the emulated device answers, and the
//! exit codes scripts rely on.

use std::process::{Command, Output, Stdio};

use winmdm_e2e::TestServer;
use winmdm_e2e::dm::Reply;

fn winmdm(s: &TestServer, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_winmdm"));
    c.args(args)
        .env("WINMDM_API_URL", format!("http://{}", s.server.addr))
        .env("WINMDM_DATA_DIR", &s.server.data_dir)
        .env_remove("WINMDM_TOKEN")
        .env_remove("WINMDM_CONFIG")
        .env("XDG_CONFIG_HOME", "/nonexistent-winmdm-test-config")
        .env_remove("WINMDM_PROFILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

async fn run(mut c: Command) -> Output {
    tokio::task::spawn_blocking(move || c.output().expect("winmdm runs"))
        .await
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_workflow_against_winmdm_local() {
    let s = TestServer::start().await;

    let o = run(winmdm(
        &s,
        &[
            "users",
            "add",
            "bob@example.com",
            "--password",
            "a long passphrase",
        ],
    ))
    .await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("added bob@example.com"));
    let o = run(winmdm(
        &s,
        &[
            "users",
            "add",
            "bob@example.com",
            "--password",
            "a long passphrase",
        ],
    ))
    .await;
    assert_eq!(o.status.code(), Some(6), "conflict: {}", text(&o));
    let o = run(winmdm(&s, &["users", "list"])).await;
    assert!(text(&o).contains("UPN") && text(&o).contains("bob@example.com"));

    // A device enrolls; the operator sees it.
    let dev = s.enroll_device().await;
    let o = run(winmdm(&s, &["devices", "list"])).await;
    assert!(o.status.success());
    assert!(text(&o).contains(dev.id()), "{}", text(&o));
    let o = run(winmdm(&s, &["--json", "devices", "list"])).await;
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON output");
    assert_eq!(list[0]["id"], dev.id());
    let o = run(winmdm(&s, &["devices", "show", dev.id()])).await;
    assert!(text(&o).contains("enrolled"));

    // A command sent with --wait returns once the device has answered.
    let mut cli = winmdm(
        &s,
        &[
            "commands",
            "send",
            dev.id(),
            "--get",
            "./DevDetail/SwV",
            "--wait",
            "--timeout",
            "60",
        ],
    )
    .spawn()
    .unwrap();
    let mut c = dev.dm_client();
    let mut delivered = false;
    for _ in 0..100 {
        c.start_session();
        let r = s
            .syncml(&c.message(|c| c.package1("user", "HW"), true))
            .await;
        let reply = Reply::parse(&r.body);
        assert_eq!(reply.header_status().data, "200");
        c.take_next_nonce(&reply);
        if !reply.item_commands().is_empty() {
            let xml = c.message(
                |c| c.answer(&reply, |_| 200, |_| "10.0.26100.2314".into()),
                true,
            );
            s.syncml(&xml).await;
            delivered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(delivered, "the queued command reached the device");
    let o = tokio::task::spawn_blocking(move || {
        let _ = cli.wait();
        let mut out = String::new();
        use std::io::Read;
        cli.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(o.contains("succeeded"), "{o}");
    assert!(
        o.contains("./DevDetail/SwV") && o.contains("10.0.26100.2314"),
        "results shown: {o}"
    );

    let o = run(winmdm(&s, &["commands", "list", dev.id()])).await;
    assert!(text(&o).contains("Get ./DevDetail/SwV"), "{}", text(&o));

    // Exit codes.
    let o = run(winmdm(&s, &["devices", "show", "NO-SUCH-DEVICE"])).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let o = run(winmdm(
        &s,
        &["commands", "send", dev.id(), "--get", "relative/uri"],
    ))
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = run(winmdm(&s, &["--token", "wrong", "devices", "list"])).await;
    assert_eq!(o.status.code(), Some(4));
    assert!(
        text(&o).contains("WINMDM_TOKEN"),
        "says what to do: {}",
        text(&o)
    );
    let o = run(winmdm(
        &s,
        &[
            "commands",
            "send",
            dev.id(),
            "--action",
            "reboot",
            "--wait",
            "--timeout",
            "1",
        ],
    ))
    .await;
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    let mut unreachable = winmdm(&s, &["devices", "list"]);
    unreachable.env("WINMDM_API_URL", "http://127.0.0.1:9");
    let o = run(unreachable).await;
    assert_eq!(o.status.code(), Some(5));
    assert!(text(&o).contains("cannot reach"), "{}", text(&o));
    s.shutdown().await;
}

#[test]
fn help_documents_configuration_and_exit_codes() {
    let o = Command::new(env!("CARGO_BIN_EXE_winmdm"))
        .arg("--help")
        .output()
        .unwrap();
    let h = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "WINMDM_API_URL",
        "WINMDM_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
        "--json",
        "EXIT CODES",
        "profile file",
    ] {
        assert!(h.contains(needle), "--help mentions {needle}");
    }
}

#[test]
fn profile_file_selects_the_api_and_token() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config");
    std::fs::write(
        &cfg,
        "[staging]\napi_url = http://127.0.0.1:9\ntoken = t0ken\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_winmdm"))
        .args(["--profile", "staging", "--config"])
        .arg(&cfg)
        .args(["devices", "list"])
        .env_remove("WINMDM_API_URL")
        .env_remove("WINMDM_TOKEN")
        .output()
        .unwrap();
    // The profile's URL is used (nothing listens there): unreachable, not "no credentials".
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("127.0.0.1:9"));
    let o = Command::new(env!("CARGO_BIN_EXE_winmdm"))
        .args(["--profile", "missing", "--config"])
        .arg(&cfg)
        .args(["devices", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

/// Runs whole sessions of `fleet` (each answering from its CSP tree) until `cli` exits;
/// returns what it printed and its exit code.
async fn sessions_until_exit(
    s: &TestServer,
    fleet: &mut [winmdm_e2e::fleet::FleetDevice],
    mut cli: std::process::Child,
) -> (String, Option<i32>) {
    use winmdm_e2e::fleet::Server;
    for _ in 0..200 {
        for d in fleet.iter_mut() {
            d.session(&Server::Local(s)).await;
        }
        if let Some(status) = cli.try_wait().unwrap() {
            let mut out = String::new();
            use std::io::Read;
            cli.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            cli.stderr.take().unwrap().read_to_string(&mut out).unwrap();
            return (out, status.code());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = cli.kill();
    panic!("the CLI did not finish");
}

const CAMERA: &str = "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_and_groups_from_the_command_line() {
    use winmdm_e2e::fleet::{FleetDevice, Server};
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut fleet = vec![
        FleetDevice::enroll(&Server::Local(&s)).await,
        FleetDevice::enroll(&Server::Local(&s)).await,
    ];
    let (d1, d2) = (fleet[0].id().to_owned(), fleet[1].id().to_owned());

    // A group with one of the two devices.
    let o = run(winmdm(&s, &["groups", "add", "finance"])).await;
    assert!(o.status.success(), "{}", text(&o));
    let o = run(winmdm(&s, &["groups", "add-device", "finance", &d1])).await;
    assert!(o.status.success(), "{}", text(&o));
    let o = run(winmdm(&s, &["groups", "add-device", "finance", "NO-SUCH"])).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let o = run(winmdm(&s, &["--json", "groups", "show", "finance"])).await;
    let g: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(g["devices"], serde_json::json!([d1]));

    // A SyncML profile for the group, followed with --wait while the devices check in.
    let file = dir.path().join("camera.xml");
    std::fs::write(
        &file,
        format!(
            "<Replace><Item><Meta><Format xmlns=\"syncml:metinf\">int</Format></Meta>\
             <Target><LocURI>{CAMERA}</LocURI></Target><Data>0</Data></Item></Replace>"
        ),
    )
    .unwrap();
    let cli = winmdm(
        &s,
        &[
            "profiles",
            "add",
            file.to_str().unwrap(),
            "--name",
            "Camera off",
            "--include",
            "finance",
            "--wait",
            "--timeout",
            "60",
        ],
    )
    .spawn()
    .unwrap();
    let (out, code) = sessions_until_exit(&s, &mut fleet, cli).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1/1 verified"), "{out}");
    assert_eq!(fleet[0].tree.value(CAMERA), Some("0"));
    assert_eq!(fleet[1].tree.value(CAMERA), None, "not in the group");

    let o = run(winmdm(&s, &["--json", "profiles", "list"])).await;
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "Camera off");
    let o = run(winmdm(&s, &["profiles", "show", "Camera off"])).await;
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains(CAMERA) && t.contains(&d1) && t.contains("verified"),
        "{t}"
    );
    assert!(!t.contains(&d2), "{t}");
    let o = run(winmdm(&s, &["devices", "profiles", &d1])).await;
    assert!(
        text(&o).contains("Camera off") && text(&o).contains("verified"),
        "{}",
        text(&o)
    );

    // Re-assigned to every device; the second converges.
    let cli = winmdm(
        &s,
        &[
            "profiles",
            "assign",
            "Camera off",
            "--include",
            "all",
            "--wait",
            "--timeout",
            "60",
        ],
    )
    .spawn()
    .unwrap();
    let (out, code) = sessions_until_exit(&s, &mut fleet, cli).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("2/2 verified"), "{out}");
    assert_eq!(fleet[1].tree.value(CAMERA), Some("0"));

    // Templates, with typed and checked parameters.
    let o = run(winmdm(&s, &["profiles", "templates"])).await;
    assert!(
        text(&o).contains("bitlocker") && text(&o).contains("min_length"),
        "{}",
        text(&o)
    );
    let o = run(winmdm(
        &s,
        &[
            "profiles",
            "from-template",
            "password",
            "--name",
            "Passwords",
            "--param",
            "min_length=14",
        ],
    ))
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let o = run(winmdm(&s, &["--json", "profiles", "show", "Passwords"])).await;
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert!(
        p["settings"].as_array().unwrap().iter().any(|x| x["target"]
            .as_str()
            .unwrap()
            .ends_with("MinDevicePasswordLength")
            && x["data"] == "14"),
        "{p}"
    );
    let o = run(winmdm(
        &s,
        &[
            "profiles",
            "from-template",
            "password",
            "--name",
            "P2",
            "--param",
            "min_length=99",
        ],
    ))
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = run(winmdm(
        &s,
        &[
            "profiles",
            "from-template",
            "password",
            "--name",
            "P3",
            "--param",
            "nope=1",
        ],
    ))
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("min_length"),
        "names what it takes: {}",
        text(&o)
    );

    // Invalid profiles are refused with the element named; names are unique.
    let bad = dir.path().join("exec.xml");
    std::fs::write(
        &bad,
        "<Exec><Item><Target><LocURI>./Device/Vendor/MSFT/Reboot/RebootNow</LocURI></Target></Item></Exec>",
    )
    .unwrap();
    let o = run(winmdm(
        &s,
        &["profiles", "add", bad.to_str().unwrap(), "--name", "X"],
    ))
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("Exec"), "{}", text(&o));
    let o = run(winmdm(
        &s,
        &[
            "profiles",
            "add",
            file.to_str().unwrap(),
            "--name",
            "Camera off",
        ],
    ))
    .await;
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));

    // A profile a device cannot apply: --wait ends with exit code 8 and the reason shows.
    let unsupported = dir.path().join("unsupported.json");
    std::fs::write(
        &unsupported,
        r#"{"settings":[{"target":"./Device/Vendor/MSFT/NoSuchCsp/Setting","format":"int","data":"1"}]}"#,
    )
    .unwrap();
    let cli = winmdm(
        &s,
        &[
            "profiles",
            "add",
            unsupported.to_str().unwrap(),
            "--name",
            "Unsupported",
            "--include",
            "finance",
            "--wait",
            "--timeout",
            "60",
        ],
    )
    .spawn()
    .unwrap();
    let (out, code) = sessions_until_exit(&s, &mut fleet, cli).await;
    assert_eq!(code, Some(8), "{out}");
    assert!(out.contains("1 failed"), "{out}");
    let o = run(winmdm(&s, &["devices", "profiles", &d1])).await;
    assert!(
        text(&o).contains("NoSuchCsp"),
        "the reason names the node: {}",
        text(&o)
    );
    let o = run(winmdm(
        &s,
        &["devices", "resend-profile", &d1, "Unsupported"],
    ))
    .await;
    assert!(o.status.success(), "{}", text(&o));

    // Deleting: the profile goes and the device's node with it.
    let o = run(winmdm(&s, &["profiles", "delete", "Camera off"])).await;
    assert!(o.status.success(), "{}", text(&o));
    for d in fleet.iter_mut() {
        d.session(&Server::Local(&s)).await;
    }
    assert_eq!(fleet[0].tree.value(CAMERA), None, "removed from the device");
    let o = run(winmdm(&s, &["profiles", "show", "Camera off"])).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let o = run(winmdm(&s, &["profiles", "delete", "Unsupported"])).await;
    assert!(o.status.success(), "{}", text(&o));
    let o = run(winmdm(&s, &["groups", "delete", "finance"])).await;
    assert!(o.status.success(), "{}", text(&o));
    let o = run(winmdm(&s, &["groups", "show", "finance"])).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    s.shutdown().await;
}
