//! Load driver: many emulated Windows devices against `winmdm-local` on the embedded
//! defaults, over HTTP on loopback. Phase 1 enrolls every device (real RSA-2048 CSRs),
//! with on-premise credentials, or, in `federated` mode, after signing in on the login
//! page (timed as its own phase) with the token it returns; phase 2 queues one command per
//! device and runs a management session per device (package #1, then the answer with
//! Status and Results). Reports operations per second with p50/p99 latency, then checks
//! that every device and every command is stored exactly once.
//!
//! In `profiles` mode, phase 2 instead creates 5 profiles of 10 settings each, assigned to
//! every device, and runs rounds of whole sessions (each device answering from its own
//! modelled CSP tree) until every device has every profile verified; it reports messages
//! per second and the sessions each device needed, and checks the counts the status API
//! gives.
//!
//! Usage: `cargo run --release -p winmdm-bench --bin loadgen -- [devices] [concurrency]
//! [on-premise|federated|profiles] [rsa-2048|ecdsa-p256]`; the last is the local CA's key
//! (`winmdm-local --ca-key`, default RSA-2048).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use winmdm_e2e::device::{CsrSignature, CsrSubject, Device};
use winmdm_e2e::dm::Reply;
use winmdm_e2e::messages::{self, Credentials};
use winmdm_e2e::{EnrolledDevice, TEST_PASSWORD, TEST_UPN, TestServer};

fn report(name: &str, latencies: &mut [Duration], wall: Duration) {
    latencies.sort();
    let p = |q: f64| {
        latencies[((latencies.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0
    };
    println!(
        "| {name} | {} | {:.0}/s | {:.2} ms | {:.2} ms |",
        latencies.len(),
        latencies.len() as f64 / wall.as_secs_f64(),
        p(0.5),
        p(0.99)
    );
}

// The allocator the Lambda functions ship with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let devices: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let concurrency: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(16);
    let federated = match args.get(3).map(String::as_str) {
        None | Some("on-premise") => false,
        Some("federated") => true,
        Some("profiles") => return profiles(devices, concurrency).await,
        Some(other) => panic!("unknown mode {other}: on-premise, federated or profiles"),
    };
    let ca_key: Option<winmdm_embedded::LocalCaKey> = args
        .get(4)
        .map(|k| k.parse().unwrap_or_else(|e| panic!("{e}")));
    let s = Arc::new(
        TestServer::start_with(|o| {
            if !federated {
                o.auth_policy = winmdm_core::config::PreferredAuth::OnPremise;
            }
            o.ca_key = ca_key;
        })
        .await,
    );
    s.create_user(TEST_UPN, TEST_PASSWORD).await;
    println!("| operation | count | rate | p50 | p99 |");
    println!("|---|---|---|---|---|");
    let gate = Arc::new(Semaphore::new(concurrency));

    // Federated: each device's user signs in on the login page first (argon2id there).
    let mut credentials = Vec::new();
    if federated {
        // Password checks are bounded by the server (it answers 503 "busy" beyond its
        // queue, by design): sign-ins go at most 16 at a time, whatever the concurrency.
        let gate = Arc::new(Semaphore::new(concurrency.min(16)));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..devices {
            let s = s.clone();
            let gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire().await.unwrap();
                let appru = "ms-app://windows.immersivecontrolpanel";
                let t = Instant::now();
                let page = s.submit_sign_in(appru, TEST_UPN, TEST_PASSWORD).await;
                let took = t.elapsed();
                assert_eq!(page.status, 200, "{}", page.text());
                let (_, token) = messages::autopost_fields(&page.text());
                (Credentials::Federated { token }, took)
            }));
        }
        let mut latencies = Vec::new();
        for t in tasks {
            let (c, took) = t.await.unwrap();
            credentials.push(c);
            latencies.push(took);
        }
        report(
            "federated sign-in (login page, argon2id)",
            &mut latencies,
            started.elapsed(),
        );
    } else {
        credentials.resize(
            devices,
            Credentials::Password {
                username: TEST_UPN.into(),
                password: TEST_PASSWORD.into(),
            },
        );
    }

    // Keys and CSRs are the devices' work, made before the clock starts: on every core
    // (an RSA-2048 key is ≈ 0.1 s; one core took minutes for a few thousand devices).
    let enroll_url = s.enroll_url();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let prepared: Vec<(Device, String)> = std::thread::scope(|scope| {
        let workers: Vec<_> = credentials
            .chunks(devices.div_ceil(cores).max(1))
            .map(|chunk| {
                let enroll_url = &enroll_url;
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|creds| {
                            let d = Device::new();
                            let csr = d.csr(CsrSignature::Sha256, CsrSubject::Windows);
                            let ctx = messages::context_items(&d.device_id, &d.hw_dev_id, "Full");
                            let msg = messages::request_security_token(
                                "urn:uuid:load",
                                enroll_url,
                                creds,
                                &csr,
                                &ctx,
                            );
                            (d, msg)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("key generation"))
            .collect()
    });

    let started = Instant::now();
    let mut tasks = Vec::new();
    for (device, msg) in prepared {
        let s = s.clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let t = Instant::now();
            let resp = s.http.soap(&s.enroll_url(), &msg).await;
            let took = t.elapsed();
            (EnrolledDevice::from_response(device, &resp), took)
        }));
    }
    let mut enrolled = Vec::new();
    let mut latencies = Vec::new();
    for t in tasks {
        let (e, took) = t.await.unwrap();
        enrolled.push(e);
        latencies.push(took);
    }
    report(
        if federated {
            "enrollment (WSTEP, token + CSR + local CA)"
        } else {
            "enrollment (WSTEP, argon2id + CSR + local CA)"
        },
        &mut latencies,
        started.elapsed(),
    );

    for e in &enrolled {
        let r = s
            .admin(
                "POST",
                &format!("/devices/{}/commands", e.id()),
                Some(serde_json::json!({"verb": "Get", "target": "./DevDetail/SwV"})),
            )
            .await;
        assert_eq!(r.status, 202);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for e in enrolled {
        let s = s.clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let mut c = e.dm_client();
            c.start_session();
            let t = Instant::now();
            let reply = Reply::parse(
                &s.syncml(&c.message(|c| c.package1("user", "HW"), true))
                    .await
                    .body,
            );
            let first = t.elapsed();
            assert_eq!(reply.item_commands().len(), 1);
            let xml = c.message(
                |c| c.answer(&reply, |_| 200, |_| "10.0.26100.1".into()),
                true,
            );
            let t = Instant::now();
            let end = Reply::parse(&s.syncml(&xml).await.body);
            assert!(end.ends_session());
            (e.id().to_owned(), [first, t.elapsed()])
        }));
    }
    let mut latencies = Vec::new();
    let mut ids = Vec::new();
    for t in tasks {
        let (id, l) = t.await.unwrap();
        latencies.extend(l);
        ids.push(id);
    }
    report(
        "management message (digest auth, store write)",
        &mut latencies,
        started.elapsed(),
    );

    // Every device and command stored exactly once.
    let listed = s.admin("GET", "/devices?limit=500", None).await.json();
    let mut stored: Vec<String> = listed["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    let mut next = listed["next"].as_str().map(str::to_owned);
    while let Some(c) = next {
        let page = s
            .admin("GET", &format!("/devices?limit=500&cursor={c}"), None)
            .await
            .json();
        stored.extend(
            page["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_owned()),
        );
        next = page["next"].as_str().map(str::to_owned);
    }
    stored.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(stored, expected, "every device stored exactly once");
    for id in &ids {
        let cmds = s
            .admin("GET", &format!("/devices/{id}/commands"), None)
            .await
            .json();
        let cmds = cmds["commands"].as_array().unwrap();
        assert_eq!(cmds.len(), 1, "one command per device");
        assert_eq!(cmds[0]["state"], "succeeded");
        assert_eq!(cmds[0]["results"].as_array().unwrap().len(), 1);
    }
    println!(
        "\nchecked: {} devices and {} commands, each stored exactly once",
        ids.len(),
        ids.len()
    );
}

/// Profiles per device and settings per profile in `profiles` mode.
const PROFILES: usize = 5;
const SETTINGS: usize = 10;

async fn profiles(devices: usize, concurrency: usize) {
    use winmdm_e2e::fleet::{FleetDevice, Server};
    let s = Arc::new(TestServer::start().await);
    let gate = Arc::new(Semaphore::new(concurrency));

    let mut tasks = Vec::new();
    for _ in 0..devices {
        let s = s.clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let mut d = FleetDevice::enroll(&Server::Local(&s)).await;
            for p in 0..PROFILES {
                d.tree
                    .add_root(&format!("./Vendor/MSFT/Policy/Config/Load{p}/"));
            }
            d
        }));
    }
    let mut fleet = Vec::new();
    for t in tasks {
        fleet.push(t.await.unwrap());
    }

    let mut ids = Vec::new();
    for p in 0..PROFILES {
        let syncml: String = (0..SETTINGS)
            .map(|i| {
                format!(
                    "<Replace><Item><Meta><Format xmlns=\"syncml:metinf\">int</Format></Meta>\
                     <Target><LocURI>./Device/Vendor/MSFT/Policy/Config/Load{p}/Setting{i}\
                     </LocURI></Target><Data>{i}</Data></Item></Replace>"
                )
            })
            .collect();
        let r = s
            .admin(
                "POST",
                "/profiles",
                Some(serde_json::json!({
                    "name": format!("Load {p}"),
                    "syncml": syncml,
                    "assignment": {"include": ["all"]},
                })),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }

    println!("| operation | count | rate | p50 | p99 |");
    println!("|---|---|---|---|---|");
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut messages = 0;
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds <= 5, "not converged after 5 sessions per device");
        let mut tasks = Vec::new();
        for mut d in fleet {
            let s = s.clone();
            let gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire().await.unwrap();
                let t = Instant::now();
                let n = d.session(&Server::Local(&s)).await;
                (d, n, t.elapsed())
            }));
        }
        fleet = Vec::new();
        for t in tasks {
            let (d, n, took) = t.await.unwrap();
            fleet.push(d);
            messages += n;
            latencies.push(took);
        }
        let mut verified = 0;
        for id in &ids {
            let st = s
                .admin("GET", &format!("/profiles/{id}/status"), None)
                .await
                .json();
            assert_eq!(st["targeted"], devices, "{st}");
            assert_eq!(st["counts"]["failed"].as_u64().unwrap_or(0), 0, "{st}");
            verified += st["counts"]["verified"].as_u64().unwrap_or(0) as usize;
        }
        if verified == devices * PROFILES {
            break;
        }
    }
    let wall = started.elapsed();
    report(
        &format!("management session ({PROFILES} profiles x {SETTINGS} settings to converge)"),
        &mut latencies,
        wall,
    );
    println!(
        "\n{messages} messages in {:.2} s: {:.0} messages/s; every device verified all \
         {PROFILES} profiles after {rounds} session(s) each",
        wall.as_secs_f64(),
        messages as f64 / wall.as_secs_f64()
    );
    for d in &fleet {
        for p in 0..PROFILES {
            for i in 0..SETTINGS {
                let node = format!("./Device/Vendor/MSFT/Policy/Config/Load{p}/Setting{i}");
                assert_eq!(d.tree.value(&node), Some(i.to_string().as_str()), "{node}");
            }
        }
    }
    println!(
        "checked: {} devices x {} nodes hold the profiles' values; status API counts {} verified",
        devices,
        PROFILES * SETTINGS,
        devices * PROFILES
    );
}
