//! Cold-start harness: a minimal Lambda Runtime API on loopback, and each function's
//! release `bootstrap` started against it, repeatedly. For every start it measures
//! process start → the first `GET /runtime/invocation/next` (initialisation done) → the
//! first response posted, and reports p50/p95 with each binary's size.
//!
//! Usage: `coldstart <dir with <function>/bootstrap> [runs]`; `infra/bench/coldstart.sh`
//! builds the functions and the hello-world reference and runs it.
//!
//! The functions start as deployed (the template's settings: a DynamoDB table, an ACM
//! PCA ARN, sign-in token keys in Secrets Manager, credentials in the environment) with
//! every AWS endpoint pointed at a closed loopback port: initialisation must not call AWS,
//! and a first request that needs AWS gets its error answer at once (one attempt, the
//! connection refused), so "first answer" is the handler's own time. `hello`, when its
//! `bootstrap` is there, is aws-lambda-rust-runtime's hello-world function built with the
//! same profile: the floor the others are compared with.

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

/// A function's environment as the template deploys it, AWS endpoints at `closed`.
fn deployed_env(
    function: &str,
    runtime_api: &str,
    closed: &str,
    data: &Path,
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        // What Lambda sets.
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", format!("winmdm-{function}")),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/winmdm".into()),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "local".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE".into()),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        ),
        ("AWS_SESSION_TOKEN", "coldstart".into()),
        ("TZ", ":UTC".into()),
        // One attempt: an unreachable endpoint answers at once, not after backoff.
        ("AWS_MAX_ATTEMPTS", "1".into()),
        // template.yaml's Globals.
        (
            "WINMDM_PUBLIC_URL",
            "https://enterpriseenrollment.example.com".into(),
        ),
        ("WINMDM_MANAGEMENT_URL", "https://manage.example.com".into()),
        ("WINMDM_TABLE", "winmdm-Table".into()),
        (
            "WINMDM_PCA_ARN",
            "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/\
             11111111-2222-3333-4444-555555555555"
                .into(),
        ),
        ("WINMDM_AUTH_POLICY", "Federated".into()),
        ("WINMDM_CERT_VALIDITY_DAYS", "365".into()),
        ("WINMDM_RENEWAL_PERIOD_DAYS", "42".into()),
        ("WINMDM_ADMIN_AUTH", "iam".into()),
        ("RUST_LOG", "info".into()),
        ("WINMDM_DATA_DIR", data.display().to_string()),
        // Only the tests' endpoint overrides: here, the closed port.
        ("WINMDM_DYNAMODB_ENDPOINT", closed.to_owned()),
        ("WINMDM_PCA_ENDPOINT", closed.to_owned()),
        ("WINMDM_SECRETSMANAGER_ENDPOINT", closed.to_owned()),
    ];
    let tokens = matches!(function, "auth" | "policy" | "enroll");
    env.push((
        "WINMDM_SIGN_IN_TOKENS",
        if tokens { "on" } else { "off" }.into(),
    ));
    if tokens {
        env.push((
            "WINMDM_TOKEN_KEY_SECRET_ARN",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:TokenKey-AbCdEf".into(),
        ));
    }
    env
}

const FUNCTIONS: &[(&str, &str)] = &[
    ("hello", "discovery-get.json"),
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

    // A port nothing listens on: every AWS endpoint.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    // Rounds: every function is started once per round, in turn, so whatever else the
    // machine does slows them alike and the ratios to `hello` hold within a run.
    struct Row {
        function: &'static str,
        fixture: String,
        bin: PathBuf,
        size: u64,
        data: tempfile::TempDir,
        inits: Vec<f64>,
        firsts: Vec<f64>,
        peak_kib: u64,
        failed: bool,
    }
    let mut rows: Vec<Row> = Vec::new();
    for (function, fixture) in FUNCTIONS {
        let bin = dir.join(function).join("bootstrap");
        let Ok(meta) = std::fs::metadata(&bin) else {
            eprintln!("skipping {function}: no {}", bin.display());
            continue;
        };
        rows.push(Row {
            function,
            fixture: std::fs::read_to_string(fixtures.join(fixture)).unwrap(),
            bin,
            size: meta.len(),
            data: tempfile::tempdir().unwrap(),
            inits: Vec::new(),
            firsts: Vec::new(),
            peak_kib: 0,
            failed: false,
        });
    }
    // Round 0 is untimed: it brings each binary into the page cache.
    for round in 0..=runs {
        for row in rows.iter_mut().filter(|r| !r.failed) {
            *emu.event.lock().unwrap() = row.fixture.clone();
            *emu.seen.lock().unwrap() = Seen::default();
            *emu.served.lock().unwrap() = false;
            let started = Instant::now();
            let mut cmd = tokio::process::Command::new(&row.bin);
            cmd.env_clear();
            for (k, v) in deployed_env(row.function, &addr.to_string(), &closed, row.data.path()) {
                cmd.env(k, v);
            }
            let mut child = cmd
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
                row.peak_kib = row.peak_kib.max(kib);
            }
            let _ = child.kill().await;
            let seen = std::mem::take(&mut *emu.seen.lock().unwrap());
            if let Some(e) = seen.error {
                eprintln!("{}: the function reported an error: {e}", row.function);
                row.failed = true;
                continue;
            }
            let (Some(next), Some((resp, _)), true) = (seen.first_next, seen.response, finished)
            else {
                eprintln!("{}: no response within 30 s", row.function);
                row.failed = true;
                continue;
            };
            if round > 0 {
                row.inits.push((next - started).as_secs_f64() * 1000.0);
                row.firsts.push((resp - started).as_secs_f64() * 1000.0);
            }
        }
    }

    println!(
        "| function | binary | init p50 | init p90 | init max | p50 / hello | p90 / hello | first answer p50 | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut floor: Option<(f64, f64)> = None;
    for row in &mut rows {
        row.inits.sort_by(f64::total_cmp);
        row.firsts.sort_by(f64::total_cmp);
        let (p50, p90) = (percentile(&row.inits, 0.5), percentile(&row.inits, 0.9));
        if row.function == "hello" {
            floor = Some((p50, p90));
        }
        let ratio =
            |v: f64, f: Option<f64>| f.map_or("–".to_owned(), |f| format!("{:.2}×", v / f));
        println!(
            "| {} | {:.1} MB | {:.1} ms | {:.1} ms | {:.1} ms | {} | {} | {:.1} ms | {:.1} MiB |",
            row.function,
            row.size as f64 / 1_000_000.0,
            p50,
            p90,
            percentile(&row.inits, 1.0),
            ratio(p50, floor.map(|f| f.0)),
            ratio(p90, floor.map(|f| f.1)),
            percentile(&row.firsts, 0.5),
            row.peak_kib as f64 / 1024.0,
        );
    }
}
