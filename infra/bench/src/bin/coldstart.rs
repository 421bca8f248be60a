//! Cold-start harness: a minimal Lambda Runtime API on loopback, and each function's
//! release `bootstrap` started against it, repeatedly. For every start it measures
//! process start → the first `GET /runtime/invocation/next` (initialisation done) → the
//! first response posted, and reports p50/p95 with each binary's size.
//!
//! Usage: `coldstart <dir with <function>/bootstrap> [runs]`, e.g. after
//! `infra/build-lambdas.sh --x86-64`: `cargo run --release -p winmdm-bench --bin coldstart -- target/lambda 20`.
//! The functions run on the embedded adapters in a temporary directory (no AWS calls).

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tokio::sync::Notify;

/// What the emulator saw of one run.
#[derive(Default)]
struct Seen {
    first_next: Option<Instant>,
    response: Option<(Instant, String)>,
    error: Option<String>,
}

struct Emulator {
    event: Mutex<String>,
    seen: Mutex<Seen>,
    done: Notify,
    served: Mutex<bool>,
}

async fn runtime_api(
    emu: Arc<Emulator>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let ok = |status: u16, body: String| {
        let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        r
    };
    if method == hyper::Method::GET && path == "/2018-06-01/runtime/invocation/next" {
        {
            let mut seen = emu.seen.lock().unwrap();
            seen.first_next.get_or_insert_with(Instant::now);
        }
        let first = {
            let mut served = emu.served.lock().unwrap();
            !std::mem::replace(&mut *served, true)
        };
        if !first {
            // One invocation per process: park the runtime until the harness kills it.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        let mut r = ok(200, emu.event.lock().unwrap().clone());
        let h = r.headers_mut();
        h.insert(
            "lambda-runtime-aws-request-id",
            "8476a536-e9f4-11e8-9739-2dfe598c3fcd".parse().unwrap(),
        );
        let deadline = (std::time::SystemTime::now() + Duration::from_secs(30))
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        h.insert(
            "lambda-runtime-deadline-ms",
            deadline.to_string().parse().unwrap(),
        );
        h.insert(
            "lambda-runtime-invoked-function-arn",
            "arn:aws:lambda:us-east-1:123456789012:function:winmdm"
                .parse()
                .unwrap(),
        );
        h.insert(
            "lambda-runtime-trace-id",
            "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700".parse().unwrap(),
        );
        h.insert("content-type", "application/json".parse().unwrap());
        return Ok(r);
    }
    if method == hyper::Method::POST && path.ends_with("/response") {
        emu.seen.lock().unwrap().response =
            Some((Instant::now(), String::from_utf8_lossy(&body).into_owned()));
        emu.done.notify_one();
        return Ok(ok(202, "{}".into()));
    }
    if method == hyper::Method::POST && path.ends_with("/error") {
        emu.seen.lock().unwrap().error = Some(String::from_utf8_lossy(&body).into_owned());
        emu.done.notify_one();
        return Ok(ok(202, "{}".into()));
    }
    Ok(ok(404, String::new()))
}

/// VmHWM (peak resident set) of a running process, from /proc.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

const FUNCTIONS: &[(&str, &str)] = &[
    ("discovery", "discovery-post.json"),
    ("policy", "policy.json"),
    ("enroll", "enroll.json"),
    ("auth", "auth-get.json"),
    ("manage", "manage-mtls.json"),
    ("renew", "renew-mtls.json"),
    ("admin", "admin-list-devices.json"),
];

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(args.get(1).map(String::as_str).unwrap_or("target/lambda"));
    let runs: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(20);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/apigw-v2");

    let emu = Arc::new(Emulator {
        event: Mutex::new(String::new()),
        seen: Mutex::new(Seen::default()),
        done: Notify::new(),
        served: Mutex::new(false),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_emu = emu.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let emu = server_emu.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| runtime_api(emu.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    println!(
        "| function | binary | init p50 | init p95 | init max | first response p50 | first response p95 | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (function, fixture) in FUNCTIONS {
        let bin = dir.join(function).join("bootstrap");
        let Ok(meta) = std::fs::metadata(&bin) else {
            eprintln!("skipping {function}: no {}", bin.display());
            continue;
        };
        *emu.event.lock().unwrap() = std::fs::read_to_string(fixtures.join(fixture)).unwrap();
        let data = tempfile::tempdir().unwrap();
        let mut inits = Vec::new();
        let mut firsts = Vec::new();
        let mut peak_kib = 0u64;
        // Run 0 is untimed: it creates the embedded store and local CA (an RSA key), which
        // a deployment on DynamoDB and ACM PCA never does.
        for run in 0..=runs {
            *emu.seen.lock().unwrap() = Seen::default();
            *emu.served.lock().unwrap() = false;
            let started = Instant::now();
            let mut child = tokio::process::Command::new(&bin)
                .env_clear()
                .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
                .env("AWS_LAMBDA_FUNCTION_NAME", format!("winmdm-{function}"))
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
                .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
                .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/winmdm")
                .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
                .env(
                    "WINMDM_PUBLIC_URL",
                    "https://enterpriseenrollment.example.com",
                )
                .env("WINMDM_MANAGEMENT_URL", "https://manage.example.com")
                .env("WINMDM_ADMIN_AUTH", "iam")
                .env("WINMDM_DATA_DIR", data.path())
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("bootstrap starts");
            let finished = tokio::time::timeout(Duration::from_secs(30), emu.done.notified())
                .await
                .is_ok();
            // Peak memory of a process that has initialised and served one request.
            if let Some(kib) = child.id().and_then(peak_rss_kib) {
                peak_kib = peak_kib.max(kib);
            }
            let _ = child.kill().await;
            let seen = std::mem::take(&mut *emu.seen.lock().unwrap());
            if let Some(e) = seen.error {
                eprintln!("{function}: the function reported an error: {e}");
                break;
            }
            let (Some(next), Some((resp, _)), true) = (seen.first_next, seen.response, finished)
            else {
                eprintln!("{function}: no response within 30 s");
                break;
            };
            if run > 0 {
                inits.push((next - started).as_secs_f64() * 1000.0);
                firsts.push((resp - started).as_secs_f64() * 1000.0);
            }
        }
        inits.sort_by(f64::total_cmp);
        firsts.sort_by(f64::total_cmp);
        println!(
            "| {function} | {:.1} MB | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} MiB |",
            meta.len() as f64 / 1_000_000.0,
            percentile(&inits, 0.5),
            percentile(&inits, 0.95),
            percentile(&inits, 1.0),
            percentile(&firsts, 0.5),
            percentile(&firsts, 0.95),
            peak_kib as f64 / 1024.0,
        );
    }
}
