//! The web console in headless Chromium (Debian's package, driven by playwright-core from
//! `tests/browser/`), against `winmdm-local` with emulated Windows devices enrolled and
//! managed over SyncML while the browser works: sign-in, search, device page, inventory
//! results appearing live, block/unblock, CSRF refusal, markup in a device name, users,
//! removal acknowledged by the device, narrow screens, sign-out; and Entra ID enrollment's
//! terms-of-use page (Accept and Decline redirects).
//!
//! `infra/test.sh` installs Chromium and playwright-core and sets
//! `WINMDM_BROWSER_TESTS=1`, which makes a missing browser a failure; without it (a bare
//! `cargo test` on a machine without them) the test says so and passes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use winmdm_e2e::TestServer;
use winmdm_e2e::csp::Format;
use winmdm_e2e::fleet::{FleetDevice, Server};
use winmdm_e2e::oidc_provider::StandInProvider;

const ENTRA_TENANT: &str = "7f3c1d2e-0000-4000-8000-00000000a11c";
const ENTRA_APP: &str = "https://enterpriseenrollment.example.com";
const HTML_NAME: &str = "<script>window.__pwned=1</script><b>PC</b><img src=x>";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

fn ready() -> bool {
    let required = std::env::var("WINMDM_BROWSER_TESTS").is_ok_and(|v| v == "1");
    let have = Path::new("/usr/bin/chromium").exists()
        && browser_dir().join("node_modules/playwright-core").exists();
    assert!(
        have || !required,
        "WINMDM_BROWSER_TESTS=1 but /usr/bin/chromium or tests/browser/node_modules is missing"
    );
    if !have {
        eprintln!(
            "skipped: Chromium or playwright-core not installed (infra/test.sh installs them)"
        );
    }
    have
}

fn fleet_device(enrolled: winmdm_e2e::EnrolledDevice) -> FleetDevice {
    let mut d = FleetDevice::from_enrolled(enrolled);
    let tree = &mut d.tree;
    // What a Windows 11 machine answers to the inventory action.
    tree.add_root("./DevDetail/")
        .add_root("./Vendor/MSFT/DeviceStatus/")
        .add_root("./Vendor/MSFT/Policy/Config/Camera/");
    for uri in winmdm_core::commands::INVENTORY_TARGETS {
        let value = match uri.rsplit('/').next().unwrap_or("") {
            "SwV" => "10.0.22631.4460",
            "OEM" => "Contoso",
            "TotalRAM" => "16384",
            "DeviceName" => "DESKTOP-EMU01",
            other => other,
        };
        tree.set(uri, value, Format::Chr);
    }
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    if !ready() {
        return;
    }
    // Entra ID enrollment on, against a stand-in for Entra's key set (the terms-of-use page).
    let idp = StandInProvider::start(ENTRA_APP).await;
    let jwks = format!("{}/jwks", idp.issuer);
    let server = Arc::new(
        TestServer::start_with(|o| {
            o.entra_tenants = vec![ENTRA_TENANT.into()];
            o.entra_audiences = vec![ENTRA_APP.into()];
            o.entra_jwks_url = Some(jwks);
        })
        .await,
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let entra_token = idp.sign(&serde_json::json!({
        "iss": format!("https://sts.windows.net/{ENTRA_TENANT}/"), "tid": ENTRA_TENANT,
        "aud": ENTRA_APP, "scp": "mdm_delegation", "upn": "alice@contoso.com",
        "oid": "00000000-0000-4000-8000-0000000000a1", "iat": now, "exp": now + 3600
    }));
    let mut devices = Vec::new();
    for name in ["DESKTOP-EMU01", "LAPTOP-EMU02", HTML_NAME] {
        let mut d = fleet_device(server.enroll_device_named(name).await);
        d.session(&Server::Local(&server)).await;
        devices.push(d);
    }
    let html_device = devices.pop().expect("three").id().to_owned();
    let managed = devices.remove(0);
    let managed_id = managed.id().to_owned();

    // The managed device keeps checking in while the browser works (a session that fails
    // — while it is blocked, after it is removed — just ends that attempt).
    let managed = Arc::new(tokio::sync::Mutex::new(managed));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sessions = {
        let (server, managed, stop) = (server.clone(), managed.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (server, managed) = (server.clone(), managed.clone());
                // Refused sessions (blocked, removed) end in a panic of that task.
                let _ = tokio::spawn(async move {
                    managed.lock().await.session(&Server::Local(&server)).await;
                })
                .await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };

    let shots = std::env::var("WINMDM_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join("winmdm-console-shots"));
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let run = tokio::process::Command::new("node")
        .arg(browser_dir().join("console.mjs"))
        .env("BASE", server.url(""))
        .env("TOKEN", server.server.admin_token())
        .env("DEVICE", &managed_id)
        .env("HTML_DEVICE", &html_device)
        .env("HTML_NAME", HTML_NAME)
        .env("SHOTS", &shots)
        .env("ENTRA_TOKEN", &entra_token)
        .env(
            "TOU_URL",
            server.url(
                "/EnrollmentServer/TermsOfUse?redirect_uri=ms-appx-web%3A%2F%2FMicrosoft.AAD.BrokerPlugin%2Fwinmdm&client-request-id=c1&api-version=1.0&mode=azureadjoin",
            ),
        )
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser test finishes within 4 minutes")
        .expect("node runs");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = sessions.await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(out.status.success(), "browser checks failed:\n{stderr}");
    let timings: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("timings JSON on stdout");
    eprintln!("browser timings: {timings}");
    eprintln!("screenshots in {}", shots.display());
}
