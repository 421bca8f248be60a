//! Criterion benchmarks of the web console's server time on the embedded store with a
//! fleet of 10,000 devices (`WINMDM_BENCH_DEVICES` to change it): the overview (fleet
//! counters: a bounded read), the first page of the device list and a device page, each a
//! whole request through the console handler with a signed-in session.
//! `cargo bench -p winmdm-bench --bench console`.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use time::{Duration, OffsetDateTime};
use winmdm_core::config::EnrollmentConfig;
use winmdm_core::store::EnrollmentCommit;
use winmdm_http::AppState;
use winmdm_http::state::AdminAuth;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn request(method: &str, path: &str, cookie: &str, body: &str) -> lambda_http::Request {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(lambda_http::Body::from(body.to_owned()))
        .expect("request")
}

fn console(c: &mut Criterion) {
    let n: usize = std::env::var("WINMDM_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(
        AppState::embedded(
            dir.path(),
            EnrollmentConfig::new("https://enterpriseenrollment.example.com".parse().unwrap()),
            Some(AdminAuth::Bearer("bench-token".into())),
        )
        .unwrap(),
    );
    let now = OffsetDateTime::now_utc();
    rt.block_on(async {
        for i in 0..n {
            let mut d =
                winmdm_e2e::conformance::device(&format!("DEV{i:06}"), Some(&format!("HW{i:06}")));
            d.last_seen_at = Some(now - Duration::minutes((i % 20_000) as i64));
            d.enrolled_at = now - Duration::hours((i % 700) as i64);
            state
                .store
                .commit_enrollment(&EnrollmentCommit {
                    device: d,
                    token: None,
                })
                .await
                .unwrap();
        }
    });
    let login = rt.block_on(winmdm_http::router::dispatch(
        &state,
        request("POST", "/console/login", "", "token=bench-token"),
    ));
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_owned();
    let mut g = c.benchmark_group(format!("console, {n} devices"));
    for (name, path) in [
        ("overview", "/console/overview".to_owned()),
        ("device list, first page", "/console/devices".to_owned()),
        // A search no device matches examines every summary (within the budget).
        (
            "device list, search with no match",
            "/console/devices?q=no-such-device".to_owned(),
        ),
        (
            "device list, sorted by last check-in",
            "/console/devices?sort=last_seen&order=desc".to_owned(),
        ),
        ("device page", "/console/devices/DEV000042".to_owned()),
    ] {
        let probe = rt.block_on(winmdm_http::router::dispatch(
            &state,
            request("GET", &path, &cookie, ""),
        ));
        assert_eq!(probe.status(), 200, "{path}");
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                winmdm_http::router::dispatch(&state, request("GET", &path, &cookie, "")).await
            })
        });
    }
    g.finish();
}

criterion_group!(benches, console);
criterion_main!(benches);
