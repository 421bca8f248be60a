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
