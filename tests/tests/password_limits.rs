//! Cheap denial of service through passwords: guessing is throttled per UPN and per
//! client address (without running argon2 for a refused guess), argon2 runs off the async
//! executor and at most as many at once as the pool allows, and a federated server takes
//! no UsernameToken at all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use time::OffsetDateTime;
use winmdm_core::clock::ManualClock;
use winmdm_core::config::{EnrollmentConfig, PreferredAuth};
use winmdm_core::model::User;
use winmdm_core::password::hash_password;
use winmdm_e2e::device::{CsrSignature, CsrSubject, Device};
use winmdm_e2e::messages::{self, Credentials};
use winmdm_e2e::{HttpResponse, TEST_PASSWORD, TEST_UPN, TestServer, inprocess, verify};
use winmdm_embedded::{LocalCa, RedbStore};
use winmdm_http::AppState;
use winmdm_http::client_addr::ClientAddr;
use winmdm_http::state::AdminAuth;
use winmdm_wire::ns;

const APPRU: &str = "ms-app://windows.immersivecontrolpanel";

/// The handlers on the embedded adapters with a clock the test moves, configured with
/// `auth_policy`, and `alice` as a user.
struct World {
    state: AppState,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

async fn world(auth_policy: PreferredAuth) -> World {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let mut config =
        EnrollmentConfig::new("https://enterpriseenrollment.example.com".parse().unwrap());
    config.auth_policy = auth_policy;
    let state = AppState::new(
        config,
        Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap()),
        Arc::new(LocalCa::open_or_create(&dir.path().join("ca")).unwrap()),
        clock.clone(),
        vec![3; 32],
        AdminAuth::Bearer("t".into()),
    )
    .unwrap();
    state
        .store
        .create_user(&User {
            upn: TEST_UPN.into(),
            password_hash: hash_password(TEST_PASSWORD).unwrap(),
            created_at: OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
    World {
        state,
        clock,
        _dir: dir,
    }
}

impl World {
    /// argon2 runs finished so far.
    fn argon2_runs(&self) -> u64 {
        self.state.enrollment.password_pool().stats().completed
    }
}

/// A request from `from`, as `winmdm-local` hands it to the router.
async fn call(
    state: &AppState,
    from: &str,
    path: &str,
    content_type: &str,
    body: String,
) -> HttpResponse {
    let peer: SocketAddr = format!("{from}:40000").parse().unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", content_type)
        .extension(ClientAddr(peer))
        .body(lambda_http::Body::from(body))
        .unwrap();
    inprocess::response(winmdm_http::router::dispatch(state, req).await)
}

async fn sign_in(w: &World, from: &str, upn: &str, password: &str) -> HttpResponse {
    call(
        &w.state,
        from,
        "/EnrollmentServer/Auth",
        "application/x-www-form-urlencoded",
        messages::sign_in_form(APPRU, upn, password),
    )
    .await
}

async fn get_policies(w: &World, from: &str, creds: &Credentials) -> HttpResponse {
    call(
        &w.state,
        from,
        "/EnrollmentServer/Policy.svc",
        "application/soap+xml; charset=utf-8",
        messages::get_policies("urn:uuid:p", "https://e/p", creds),
    )
    .await
}

async fn enroll(w: &World, from: &str, creds: &Credentials) -> HttpResponse {
    let d = Device::new();
    let csr = d.csr(CsrSignature::Sha256, CsrSubject::Windows);
    let ctx = messages::context_items(&d.device_id, &d.hw_dev_id, "Full");
    call(
        &w.state,
        from,
        "/EnrollmentServer/Enrollment.svc",
        "application/soap+xml; charset=utf-8",
        messages::request_security_token("urn:uuid:e", "https://e/e", creds, &csr, &ctx),
    )
    .await
}

fn password(upn: &str, password: &str) -> Credentials {
    Credentials::Password {
        username: upn.into(),
        password: password.into(),
    }
}

#[tokio::test]
async fn login_page_throttles_one_upn_and_refuses_even_the_right_password_meanwhile() {
    let w = world(PreferredAuth::Federated).await;
    for i in 0..5 {
        // Different addresses: the UPN's own count is what trips.
        let r = sign_in(&w, &format!("192.0.2.{i}"), TEST_UPN, "guess").await;
        assert_eq!(r.status, 401, "guess {i}");
    }
    let runs = w.argon2_runs();
    let r = sign_in(&w, "192.0.2.100", TEST_UPN, "guess").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.text().contains("Too many failed sign-in attempts"));
    assert!(!r.text().contains("wresult"));
    let r = sign_in(&w, "192.0.2.100", TEST_UPN, TEST_PASSWORD).await;
    assert_eq!(r.status, 429, "the right password waits too");
    // Refused without argon2, and refusals do not lengthen the wait.
    assert_eq!(w.argon2_runs(), runs);
    // Case and spaces do not make another UPN.
    let r = sign_in(&w, "192.0.2.100", " Alice@EXAMPLE.com", TEST_PASSWORD).await;
    assert_eq!(r.status, 429);

    w.clock.advance(time::Duration::seconds(1));
    let r = sign_in(&w, "192.0.2.100", TEST_UPN, TEST_PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("wresult"));
    // The success cleared the UPN: five free failures again.
    for _ in 0..5 {
        assert_eq!(sign_in(&w, "192.0.2.100", TEST_UPN, "x").await.status, 401);
    }
    assert_eq!(sign_in(&w, "192.0.2.100", TEST_UPN, "x").await.status, 429);
    // Other users are unaffected.
    assert_eq!(
        sign_in(&w, "192.0.2.100", "bob@example.com", "x")
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn login_page_backoff_doubles_after_each_further_failure() {
    let w = world(PreferredAuth::Federated).await;
    for _ in 0..5 {
        assert_eq!(sign_in(&w, "192.0.2.1", TEST_UPN, "x").await.status, 401);
    }
    for expected in [2, 4, 8, 16] {
        let wait = sign_in(&w, "192.0.2.1", TEST_UPN, "x").await;
        assert_eq!(wait.status, 429);
        let secs: i64 = wait.header("retry-after").unwrap().parse().unwrap();
        w.clock.advance(time::Duration::seconds(secs));
        assert_eq!(sign_in(&w, "192.0.2.1", TEST_UPN, "x").await.status, 401);
        let r = sign_in(&w, "192.0.2.1", TEST_UPN, "x").await;
        assert_eq!(r.header("retry-after"), Some(expected.to_string().as_str()));
    }
}

#[tokio::test]
async fn many_upns_from_one_address_are_throttled_by_address() {
    let w = world(PreferredAuth::Federated).await;
    for i in 0..20 {
        let r = sign_in(&w, "198.51.100.7", &format!("user{i}@example.com"), "x").await;
        assert_eq!(r.status, 401, "attempt {i}");
    }
    let runs = w.argon2_runs();
    // A fresh UPN, and even the right password for a real one: refused at the address.
    let r = sign_in(&w, "198.51.100.7", "fresh@example.com", "x").await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    let r = sign_in(&w, "198.51.100.7", TEST_UPN, TEST_PASSWORD).await;
    assert_eq!(r.status, 429);
    assert_eq!(w.argon2_runs(), runs);
    // Another address is not affected.
    let r = sign_in(&w, "198.51.100.8", TEST_UPN, TEST_PASSWORD).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn onpremise_username_token_is_throttled_in_xcep_and_wstep() {
    let w = world(PreferredAuth::OnPremise).await;
    let wrong = password(TEST_UPN, "guess");
    // Guesses spread over both endpoints count together.
    for i in 0..5 {
        let r = if i % 2 == 0 {
            get_policies(&w, "203.0.113.5", &wrong).await
        } else {
            enroll(&w, "203.0.113.5", &wrong).await
        };
        assert_eq!(verify::fault_subcode(&r), "s:Authentication");
        assert!(r.text().contains("not valid"), "{}", r.text());
    }
    let runs = w.argon2_runs();
    let right = password(TEST_UPN, TEST_PASSWORD);
    for r in [
        get_policies(&w, "203.0.113.6", &right).await,
        enroll(&w, "203.0.113.6", &right).await,
    ] {
        assert_eq!(r.status, 500);
        assert_eq!(verify::fault_subcode(&r), "s:Authentication");
        assert!(
            r.text()
                .contains("Too many failed sign-in attempts. Try again in 1 seconds."),
            "{}",
            r.text()
        );
    }
    assert_eq!(w.argon2_runs(), runs);
    w.clock.advance(time::Duration::seconds(1));
    verify::soap_ok(&get_policies(&w, "203.0.113.6", &right).await);
    verify::soap_ok(&enroll(&w, "203.0.113.6", &right).await);
}

#[tokio::test]
async fn a_federated_server_takes_no_username_token_and_an_onpremise_one_no_login_page() {
    let w = world(PreferredAuth::Federated).await;
    let runs = w.argon2_runs();
    // The right password, as a UsernameToken: refused in XCEP and WSTEP, without argon2.
    let right = password(TEST_UPN, TEST_PASSWORD);
    for r in [
        get_policies(&w, "192.0.2.1", &right).await,
        enroll(&w, "192.0.2.1", &right).await,
    ] {
        assert_eq!(verify::fault_subcode(&r), "s:Authentication");
    }
    assert_eq!(w.argon2_runs(), runs);
    // Discovery does not offer OnPremise to a device that asks only for it.
    let d = messages::discover(
        "urn:uuid:d",
        "https://e/d",
        TEST_UPN,
        "4.0",
        &["OnPremise"],
        ns::DISCOVERY,
    );
    let r = call(
        &w.state,
        "192.0.2.1",
        "/EnrollmentServer/Discovery.svc",
        "application/soap+xml; charset=utf-8",
        d,
    )
    .await;
    assert_eq!(verify::fault_subcode(&r), "s:EnrollmentServer");
    assert!(r.text().contains("NotSupported"));
    // The login page's token is what it takes.
    let page = sign_in(&w, "192.0.2.1", TEST_UPN, TEST_PASSWORD).await;
    assert_eq!(page.status, 200);
    let (_, token) = messages::autopost_fields(&page.text());
    verify::soap_ok(&get_policies(&w, "192.0.2.1", &Credentials::Federated { token }).await);

    let w = world(PreferredAuth::OnPremise).await;
    let r = sign_in(&w, "192.0.2.1", TEST_UPN, TEST_PASSWORD).await;
    assert_eq!(r.status, 404);
    assert_eq!(w.argon2_runs(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_wrong_passwords_never_run_more_argon2_than_the_pool_allows() {
    let w = Arc::new(world(PreferredAuth::Federated).await);
    let pool = w.state.enrollment.password_pool().clone();
    let bound = pool.concurrency();
    let tasks: Vec<_> = (0..48)
        .map(|i| {
            let w = w.clone();
            // Distinct UPNs and addresses: no throttling, only the pool limits them.
            tokio::spawn(async move {
                let from = format!("10.{}.0.1", i);
                sign_in(&w, &from, &format!("u{i}@example.com"), "guess").await
            })
        })
        .collect();
    let mut busy = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            401 => {}
            503 => {
                assert_eq!(r.header("retry-after"), Some("1"));
                assert!(r.text().contains("busy"));
                busy += 1;
            }
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    let s = pool.stats();
    assert!(
        s.peak_running >= 1 && s.peak_running <= bound,
        "{s:?}, bound {bound}"
    );
    assert_eq!(s.completed + s.refused, 48, "{s:?}");
    assert_eq!(s.refused, busy);
    assert_eq!((s.running, s.waiting), (0, 0));
}

#[tokio::test]
async fn password_checks_do_not_hold_up_the_executor() {
    // One executor thread, as a Lambda environment has: while wrong-password sign-ins are
    // in progress, a discovery request is answered. With argon2 on the executor the
    // sign-ins would run to the end, one after another, before discovery got a turn.
    let w = Arc::new(world(PreferredAuth::Federated).await);
    let finished = Arc::new(AtomicUsize::new(0));
    let n = 8;
    let sign_ins: Vec<_> = (0..n)
        .map(|i| {
            let (w, finished) = (w.clone(), finished.clone());
            tokio::spawn(async move {
                let r = sign_in(&w, &format!("10.0.0.{i}"), &format!("u{i}@x.com"), "x").await;
                finished.fetch_add(1, Ordering::SeqCst);
                r.status
            })
        })
        .collect();
    // Let the sign-ins reach their password checks.
    let pool = w.state.enrollment.password_pool().clone();
    let since = std::time::Instant::now();
    while pool.stats().running == 0 && since.elapsed() < std::time::Duration::from_millis(500) {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let d = messages::discover(
        "urn:uuid:d",
        "https://e/d",
        TEST_UPN,
        "4.0",
        &["OnPremise", "Federated"],
        ns::DISCOVERY,
    );
    let r = call(
        &w.state,
        "10.1.0.1",
        "/EnrollmentServer/Discovery.svc",
        "application/soap+xml; charset=utf-8",
        d,
    )
    .await;
    verify::soap_ok(&r);
    let finished_before_discovery = finished.load(Ordering::SeqCst);
    assert!(
        finished_before_discovery < n,
        "discovery waited for all {n} password checks"
    );
    for s in sign_ins {
        assert!([401, 503].contains(&s.await.unwrap()));
    }
}

#[tokio::test]
async fn winmdm_local_limits_by_the_tcp_peer_address() {
    let s = TestServer::start().await;
    s.create_user(TEST_UPN, TEST_PASSWORD).await;
    // Every request comes from 127.0.0.1: twenty unknown users, then the address waits,
    // whatever X-Forwarded-For says.
    for i in 0..20 {
        let r = s
            .submit_sign_in(APPRU, &format!("nobody{i}@example.com"), "x")
            .await;
        assert_eq!(r.status, 401, "attempt {i}");
    }
    let r = s
        .http
        .send(
            "POST",
            &s.auth_url(),
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-forwarded-for", "203.0.113.99"),
            ],
            messages::sign_in_form(APPRU, TEST_UPN, TEST_PASSWORD).into_bytes(),
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    s.shutdown().await;
}
