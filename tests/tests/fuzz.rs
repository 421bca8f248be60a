//! Fuzzing of the parsers above the wire crate that see network bytes: the PKCS#10 and
//! PKCS#7 DER readers (`verify_csr`, `verify_signed_data`), the admin API's JSON (the
//! command request parser, and the handler itself with mutated bodies and query strings),
//! and every endpoint through the router with mutated versions of the recorded requests.
//! The XML, SOAP and SyncML parsers are fuzzed in `shared/wire/tests/fuzz.rs`, whose
//! mutation engine this shares.
//!
//! `cargo test -p winmdm-e2e --test fuzz` runs a bounded number of inputs per target;
//! `WINMDM_FUZZ_ITERATIONS=n` (and `WINMDM_FUZZ_SEED`, `WINMDM_FUZZ_ONLY`) as described in
//! the engine.

#[path = "../../shared/wire/tests/support/mutate.rs"]
mod mutate;

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mutate::{Mutator, assert_clear_error, iterations, iterations_costing, run};
use winmdm_core::ca::{CertificateAuthority, IssueRequest};
use winmdm_core::commands::{CommandRequest, CommandSpec, parse_request};
use winmdm_core::csr::verify_csr;
use winmdm_core::pkcs7::verify_signed_data;
use winmdm_e2e::device::{self, CsrSignature, CsrSubject, Device};
use winmdm_e2e::inprocess::{self, Harness};
use winmdm_e2e::messages::{self, Credentials};
use winmdm_e2e::{TEST_PASSWORD, TEST_UPN, verify};
use winmdm_http::router::Endpoint;
use winmdm_http::state::AdminAuth;
use winmdm_wire::soap::Envelope;
use winmdm_wire::wstep::{CertificateRequest, RequestSecurityToken};

const BODY: usize = 1024 * 1024;

/// The body of a recorded API Gateway event.
fn fixture_body(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/apigw-v2/{name}", env!("CARGO_MANIFEST_DIR"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("JSON");
    let body = json["body"].as_str().unwrap_or_default();
    if json["isBase64Encoded"].as_bool() == Some(true) {
        B64.decode(body).expect("base64 body")
    } else {
        body.as_bytes().to_vec()
    }
}

/// The PKCS#7 of the recorded renewal (made by OpenSSL), and the PKCS#10 inside it.
fn recorded_pkcs7() -> Vec<u8> {
    let env = Envelope::parse(&fixture_body("renew-mtls.json")).expect("fixture envelope");
    match RequestSecurityToken::from_envelope(&env)
        .expect("fixture RST")
        .request
    {
        CertificateRequest::Pkcs7(p7) => p7,
        CertificateRequest::Pkcs10(_) => panic!("the renewal fixture carries a PKCS#7"),
    }
}

struct DerSeeds {
    csrs: Vec<Vec<u8>>,
    pkcs7s: Vec<Vec<u8>>,
}

/// Real requests: Windows-shaped CSRs from the emulated device in each signature
/// algorithm, a weak-key and a tampered one, and renewal PKCS#7s from OpenSSL and from
/// the emulated device (signed with a key our CA certified).
fn der_seeds() -> &'static DerSeeds {
    static SEEDS: OnceLock<DerSeeds> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let device = Device::new();
        let sha256 = device.csr(CsrSignature::Sha256, CsrSubject::Windows);
        let recorded = recorded_pkcs7();
        let recorded_csr = verify_signed_data(&recorded)
            .expect("the recorded PKCS#7 verifies")
            .content;
        let mut csrs = vec![
            sha256.clone(),
            device.csr(
                CsrSignature::Sha1,
                CsrSubject::Plain("DESKTOP-EMU01".into()),
            ),
            device.csr(CsrSignature::OiwSha1, CsrSubject::Windows),
            device::weak_key_csr(&device.device_id),
            device::tamper(sha256.clone()),
            recorded_csr,
        ];
        // A certificate for the device's key, from the embedded CA, to sign a renewal.
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = winmdm_embedded::LocalCa::open_or_create(&dir.path().join("ca")).expect("CA");
        let verified = verify_csr(&sha256, 2048).expect("the device's CSR verifies");
        let now = time::OffsetDateTime::now_utc();
        let rt = runtime();
        let cert = rt
            .block_on(ca.issue(&IssueRequest {
                csr: &verified,
                common_name: &device.device_id,
                not_before: now,
                not_after: now + time::Duration::days(1),
                idempotency_token: "fuzz",
            }))
            .expect("issued")
            .der;
        let renewal_csr = device
            .rekeyed()
            .csr(CsrSignature::Sha256, CsrSubject::Windows);
        csrs.push(renewal_csr.clone());
        let ours = device.renewal_pkcs7(&cert, &renewal_csr);
        verify_signed_data(&ours).expect("the emulated renewal verifies");
        DerSeeds {
            csrs,
            pkcs7s: vec![recorded, ours],
        }
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

const DER_DICTIONARY: &[&[u8]] = &[
    // Headers with odd lengths: indefinite, long forms, lengths past the end.
    b"\x30\x80",
    b"\x30\x00",
    b"\x30\x81\xff",
    b"\x30\x82\xff\xff",
    b"\x30\x84\xff\xff\xff\xff",
    b"\x30\x85\x01\x00\x00\x00\x00",
    b"\x30\x88\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\x31\x00",
    b"\xa0\x00",
    b"\xa0\x80",
    b"\x81\x00",
    b"\x1f\xff\xff\xff\xff\x7f\x00",
    // Primitives, empty and malformed.
    b"\x02\x00",
    b"\x02\x01\x00",
    b"\x02\x09\x00\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\x03\x00",
    b"\x03\x01\x08",
    b"\x04\x00",
    b"\x05\x00",
    b"\x05\x01\x00",
    b"\x06\x00",
    b"\x06\x01\x80",
    b"\x06\x0b\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f",
    b"\x0c\x02\xc3\x28",
    b"\x13\x01\x00",
    b"\x17\x0d991231235959Z",
    b"\x18\x0f99991231235959Z",
    // OIDs that matter here.
    b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01",
    b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0b",
    b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02",
    b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x09\x04",
    b"\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01",
    b"\x06\x05\x2b\x0e\x03\x02\x1d",
    b"\x06\x07\x2a\x86\x48\xce\x3d\x02\x01",
    // Deep nesting.
    b"\x30\x80\x30\x80\x30\x80\x30\x80",
    b"\xa0\x80\x30\x80",
];

fn der_mutator(seeds: &[Vec<u8>]) -> Mutator<'_> {
    Mutator {
        seeds,
        dictionary: DER_DICTIONARY,
        max_len: 64 * 1024,
    }
}

#[test]
fn fuzz_csr() {
    let seeds = &der_seeds().csrs;
    let stats = run(
        "csr",
        iterations(5_000),
        &der_mutator(seeds),
        |input| match verify_csr(input, 2048) {
            Ok(csr) => {
                assert_eq!(csr.der(), input, "a verified CSR is the input");
                assert!(csr.key_bits() >= 2048);
                assert!(!csr.spki_der().is_empty());
                true
            }
            Err(e) => {
                assert_clear_error("csr", &e);
                false
            }
        },
    );
    assert!(stats.inputs < 100 || stats.accepted > 0, "the seeds verify");
}

#[test]
fn fuzz_pkcs7() {
    let seeds = &der_seeds().pkcs7s;
    let stats = run("pkcs7", iterations(5_000), &der_mutator(seeds), |input| {
        match verify_signed_data(input) {
            Ok(p7) => {
                assert!(!p7.signer_der.is_empty());
                // What a verified renewal carries is itself a request to verify.
                if let Err(e) = verify_csr(&p7.content, 2048) {
                    assert_clear_error("pkcs7 content", &e);
                }
                true
            }
            Err(e) => {
                assert_clear_error("pkcs7", &e);
                false
            }
        }
    });
    assert!(stats.inputs < 100 || stats.accepted > 0, "the seeds verify");
}

// ---------------------------------------------------------------------------------------
// Admin API JSON.

const COMMAND_SEEDS: &[&str] = &[
    r#"{"verb":"Replace","target":"./Vendor/MSFT/Policy/Config/X/Y","format":"int","data":"1"}"#,
    r#"{"verb":"Replace","target":"./Vendor/MSFT/Policy/Config/Browser/AllowCookies","format":"bool","data":"true","type":"text/plain"}"#,
    r#"{"verb":"Get","target":"./DevDetail/SwV"}"#,
    r#"{"verb":"Delete","target":"./Vendor/MSFT/Policy/Config/X/Y"}"#,
    r#"{"verb":"Add","target":"./a","format":"node"}"#,
    r#"{"verb":"Exec","target":"./Device/Vendor/MSFT/Reboot/RebootNow","format":"null","data":""}"#,
    r#"{"verb":"Atomic","commands":[{"verb":"Add","target":"./a","format":"chr","data":"x"},{"verb":"Replace","target":"./User/b","format":"chr","data":"y"}]}"#,
    r#"{"action":"unenroll"}"#,
    r#"{"action":"reboot"}"#,
    r#"{"action":"inventory"}"#,
    r#"{"action":"wipe_protected"}"#,
];

const USER_SEEDS: &[&str] = &[
    r#"{"upn":"alice@example.com","password":"correct horse battery"}"#,
    r#"{"upn":"Bob@Example.com","password":"p\u00e4ssw\u00f6rd"}"#,
];

const JSON_DICTIONARY: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"\\",
    b"null",
    b"true",
    b"false",
    b"0",
    b"-0",
    b"1e999",
    b"-1",
    b"18446744073709551616",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"\"\\udfff\\ud800\"",
    b"\"\\uZZZZ\"",
    b"\"verb\":",
    b"\"Atomic\"",
    b"\"Get\"",
    b"\"commands\":[",
    b"{\"verb\":\"Atomic\",\"commands\":[",
    b"\"action\":",
    b"\"target\":\"./a\"",
    b"\"target\":\"./User/x\"",
    b"\"target\":\"../x\"",
    b"\"target\":\"./a//b\"",
    b"\"data\":",
    b"\"format\":\"int\"",
    b"\"format\":\"bool\"",
    b"\"format\":\"node\"",
    b"\"type\":",
    b"\"upn\":",
    b"\"password\":",
    b"\"unknown\":1",
    b"\xff",
    b"\xef\xbb\xbf",
    b"\xc3\x28",
    b"\x00",
];

fn json_mutator(seeds: &[Vec<u8>]) -> Mutator<'_> {
    Mutator {
        seeds,
        dictionary: JSON_DICTIONARY,
        max_len: BODY,
    }
}

fn seeds(strs: &[&str]) -> Vec<Vec<u8>> {
    strs.iter().map(|s| s.as_bytes().to_vec()).collect()
}

/// The command request parser: JSON in, a queued command spec out, or a clear refusal. An
/// accepted spec survives the JSON round trip it makes through the store.
fn check_command_json(input: &[u8]) -> bool {
    let request: CommandRequest = match serde_json::from_slice(input) {
        Ok(r) => r,
        Err(e) => {
            assert_clear_error("command JSON", &e);
            return false;
        }
    };
    match parse_request(&request, "winmdm") {
        Ok((_action, spec)) => {
            let stored = serde_json::to_vec(&spec).expect("a spec serialises");
            let back: CommandSpec = serde_json::from_slice(&stored).expect("and parses back");
            assert_eq!(back, spec);
            true
        }
        Err(e) => {
            assert_clear_error("command", &e);
            false
        }
    }
}

#[test]
fn fuzz_admin_command_json() {
    let seeds = seeds(COMMAND_SEEDS);
    let stats = run(
        "admin-command-json",
        iterations(10_000),
        &json_mutator(&seeds),
        check_command_json,
    );
    assert!(
        stats.inputs < 100 || stats.accepted > 0,
        "the seeds are valid commands"
    );
}

#[test]
fn deeply_nested_command_json_is_refused_without_overflowing_the_stack() {
    for depth in [100, 1_000, 100_000] {
        let doc = format!(
            "{}{}",
            r#"{"verb":"Atomic","commands":["#.repeat(depth),
            "]}".repeat(depth)
        );
        assert!(!check_command_json(doc.as_bytes()), "depth {depth}");
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(!check_command_json(arrays.as_bytes()));
    }
}

/// An admin response: never a server error, and a refusal says why in `{"error": …}`.
fn check_admin_response(what: &str, r: &winmdm_e2e::HttpResponse) -> bool {
    assert!(
        r.status < 500,
        "{what}: status {} ({})",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    if r.status >= 400 && r.status != 405 {
        let json: serde_json::Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("{what}: {} is not JSON ({e})", r.status));
        let msg = json["error"].as_str().unwrap_or_default();
        assert!(
            !msg.trim().is_empty(),
            "{what}: {} without a reason",
            r.status
        );
    }
    r.status < 300
}

fn request(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Option<lambda_http::Request> {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    // A mutated path or query that is not a URI never reaches a handler.
    b.body(lambda_http::Body::Binary(body)).ok()
}

const ADMIN: (&str, &str) = ("authorization", "Bearer fuzz");
const SOAP: (&str, &str) = ("content-type", "application/soap+xml; charset=utf-8");

/// A harness with one user and one enrolled device (federated, as the harness is
/// configured), so admin requests about that device get past the device lookup.
fn enrolled_harness(rt: &tokio::runtime::Runtime) -> (Harness, String) {
    let h = Harness::new(AdminAuth::Bearer("fuzz".into()));
    let device = Device::new();
    rt.block_on(async {
        let r = inprocess::call(
            &h.state,
            "POST",
            "/admin/v1/users",
            &[ADMIN, ("content-type", "application/json")],
            serde_json::json!({"upn": TEST_UPN, "password": TEST_PASSWORD}).to_string(),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text());
        let token = h
            .state
            .enrollment
            .sign_in(TEST_UPN, TEST_PASSWORD, None)
            .await
            .expect("sign-in");
        let csr = device.csr(CsrSignature::Sha256, CsrSubject::Windows);
        let ctx = messages::context_items(&device.device_id, &device.hw_dev_id, "Full");
        let msg = messages::request_security_token(
            "urn:uuid:f1",
            "https://e/x",
            &Credentials::Federated { token },
            &csr,
            &ctx,
        );
        let r = inprocess::call(
            &h.state,
            "POST",
            "/EnrollmentServer/Enrollment.svc",
            &[SOAP],
            msg,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    });
    (h, device.device_id.clone())
}

#[test]
fn fuzz_admin_api_bodies() {
    let rt = runtime();
    let (h, device_id) = enrolled_harness(&rt);
    let path = format!("/admin/v1/devices/{device_id}/commands");
    let commands = seeds(COMMAND_SEEDS);
    let stats = run(
        "admin-api-commands",
        iterations_costing(1_500, 10),
        &json_mutator(&commands),
        |body| {
            let Some(req) = request(
                "POST",
                &path,
                &[ADMIN, ("content-type", "application/json")],
                body.to_vec(),
            ) else {
                return false;
            };
            let r = inprocess::response(rt.block_on(winmdm_http::router::dispatch(&h.state, req)));
            check_admin_response("POST commands", &r)
        },
    );
    assert!(stats.inputs < 100 || stats.accepted > 0);
    // Creating a user hashes its password (argon2id): few iterations.
    let users = seeds(USER_SEEDS);
    run(
        "admin-api-users",
        iterations_costing(100, 100),
        &json_mutator(&users),
        |body| {
            let Some(req) = request(
                "POST",
                "/admin/v1/users",
                &[ADMIN, ("content-type", "application/json")],
                body.to_vec(),
            ) else {
                return false;
            };
            let r = inprocess::response(rt.block_on(winmdm_http::router::dispatch(&h.state, req)));
            check_admin_response("POST users", &r)
        },
    );
}

#[test]
fn fuzz_admin_api_paths_and_queries() {
    let rt = runtime();
    let (h, device_id) = enrolled_harness(&rt);
    let paths: Vec<Vec<u8>> = seeds(&[
        "/admin/v1/devices?limit=5&cursor=AAAA",
        "/admin/v1/devices?limit=500",
        "/admin/v1/users?cursor=YWxpY2VAZXhhbXBsZS5jb20",
        "/admin/v1/users/alice%40example.com",
        "/admin/v1/devices/DEV1",
        "/admin/v1/devices/DEV1/commands?limit=1&cursor=x",
        "/admin/v1/devices/DEV1/commands/0000000000000000000000000000",
        "/admin/v1/devices/DEV1?force=true",
        "/admin/v1/devices/DEV1/block",
    ])
    .into_iter()
    .map(|p| {
        String::from_utf8(p)
            .expect("ASCII")
            .replace("DEV1", &device_id)
            .into_bytes()
    })
    .collect();
    let dictionary: &[&[u8]] = &[
        b"%",
        b"%00",
        b"%2F",
        b"%ff",
        b"/",
        b"//",
        b"..",
        b"?",
        b"&",
        b"=",
        b"#",
        b"limit=",
        b"cursor=",
        b"force=true",
        b"-1",
        b"18446744073709551616",
        b"\xff",
        b"+",
    ];
    let mutator = Mutator {
        seeds: &paths,
        dictionary,
        max_len: 8 * 1024,
    };
    run(
        "admin-api-paths",
        iterations_costing(2_000, 10),
        &mutator,
        |path| {
            let Ok(path) = std::str::from_utf8(path) else {
                return false;
            };
            let mut accepted = false;
            for method in ["GET", "DELETE", "POST"] {
                let Some(req) = request(method, path, &[ADMIN], Vec::new()) else {
                    return false;
                };
                let admin = Endpoint::for_path(req.uri().path()) == Some(Endpoint::Admin);
                let r =
                    inprocess::response(rt.block_on(winmdm_http::router::dispatch(&h.state, req)));
                if !admin {
                    assert!(r.status < 500, "{method} {path}: {}", r.status);
                    continue;
                }
                accepted |= check_admin_response(&format!("{method} {path}"), &r);
            }
            accepted
        },
    );
}

// ---------------------------------------------------------------------------------------
// Every endpoint through the router, with mutated recorded requests.

const XML_DICTIONARY: &[&[u8]] = &[
    b"<!DOCTYPE a [<!ENTITY x \"y\">]>",
    b"&lol;",
    b"&amp;",
    b"&#x0;",
    b"&#x110000;",
    b"<![CDATA[x]]>",
    b"<!---->",
    b"<?pi x?>",
    b"<a/>",
    b"</a>",
    b" x=\"1\"",
    b" xmlns=\"urn:x\"",
    b" xmlns:a=\"\"",
    b"<CmdID>1</CmdID>",
    b"<Atomic><CmdID>1</CmdID>",
    b"<Status><CmdID>1</CmdID><Cmd>SyncHdr</Cmd></Status>",
    b"<Item><Data>x</Data></Item>",
    b"<ac:ContextItem Name=\"DeviceID\"><ac:Value>x</ac:Value></ac:ContextItem>",
    b"<AuthPolicy>Federated</AuthPolicy>",
    b"\xff",
    b"\x00",
];

/// Posts mutated versions of a recorded request to an endpoint: whatever the body, the
/// server answers (no panic) without a server error.
fn fuzz_endpoint(
    name: &str,
    fixture: &str,
    path: &str,
    content_type: &str,
    default: usize,
    cost: usize,
    more_seeds: impl FnOnce(&Harness, &tokio::runtime::Runtime) -> Vec<Vec<u8>>,
) {
    let rt = runtime();
    let (h, _) = enrolled_harness(&rt);
    let mut seeds = vec![fixture_body(fixture)];
    seeds.extend(more_seeds(&h, &rt));
    let dictionary: &[&[u8]] = if content_type.contains("form") {
        FORM_DICTIONARY
    } else {
        XML_DICTIONARY
    };
    let mutator = Mutator {
        seeds: &seeds,
        dictionary,
        max_len: BODY,
    };
    run(name, iterations_costing(default, cost), &mutator, |body| {
        let Some(req) = request(
            "POST",
            path,
            &[("content-type", content_type)],
            body.to_vec(),
        ) else {
            return false;
        };
        let r = inprocess::response(rt.block_on(winmdm_http::router::dispatch(&h.state, req)));
        check_endpoint_response(name, &r)
    });
}

/// A SOAP or SyncML answer: success, a client error, or a well-formed SOAP fault (HTTP
/// 500, as SOAP 1.2 has it) that does not report a server-side failure.
fn check_endpoint_response(name: &str, r: &winmdm_e2e::HttpResponse) -> bool {
    if r.status < 500 {
        return r.status < 300;
    }
    let subcode = verify::fault_subcode(r);
    let root = winmdm_wire::xml::parse(&r.body).expect("a fault is XML");
    let in_maintenance = root
        .path(&[
            (winmdm_wire::ns::SOAP, "Body"),
            (winmdm_wire::ns::SOAP, "Fault"),
            (winmdm_wire::ns::SOAP, "Detail"),
        ])
        .and_then(|d| d.child_local("DeviceEnrollmentServiceError"))
        .and_then(|e| e.child_local("ErrorType"))
        .is_some_and(|t| t.text() == "InMaintenance");
    assert!(
        !in_maintenance && subcode != "a:InternalServiceFault",
        "{name}: a request made the server fail ({subcode}): {}",
        r.text()
    );
    false
}

const FORM_DICTIONARY: &[&[u8]] = &[
    b"&",
    b"=",
    b"%",
    b"%00",
    b"%ff",
    b"%zz",
    b"+",
    b"appru=",
    b"upn=",
    b"password=",
    b"ms-app%3A%2F%2Fwindows.immersivecontrolpanel",
    b"javascript%3Aalert(1)",
    b"%3Cscript%3E",
    b"\xff",
];

/// A federated token for the harness's user, as the login page hands it out.
fn federated(h: &Harness, rt: &tokio::runtime::Runtime) -> Credentials {
    let token = rt
        .block_on(h.state.enrollment.sign_in(TEST_UPN, TEST_PASSWORD, None))
        .expect("sign-in");
    Credentials::Federated { token }
}

fn no_more_seeds(_: &Harness, _: &tokio::runtime::Runtime) -> Vec<Vec<u8>> {
    Vec::new()
}

#[test]
fn fuzz_discovery_endpoint() {
    fuzz_endpoint(
        "discovery",
        "discovery-post.json",
        "/EnrollmentServer/Discovery.svc",
        "application/soap+xml; charset=utf-8",
        2_000,
        10,
        no_more_seeds,
    );
}

#[test]
fn fuzz_manage_endpoint() {
    fuzz_endpoint(
        "manage",
        "manage-mtls.json",
        "/ManagementServer/MDM.svc",
        "application/vnd.syncml.dm+xml",
        2_000,
        10,
        no_more_seeds,
    );
}

/// Policy and enrollment with the recorded (on-premise) requests, which this federated
/// harness refuses, and with federated tokens, which it takes.
#[test]
fn fuzz_policy_and_enrollment_endpoints() {
    fuzz_endpoint(
        "policy",
        "policy.json",
        "/EnrollmentServer/Policy.svc",
        "application/soap+xml; charset=utf-8",
        800,
        10,
        |h, rt| {
            let msg = messages::get_policies("urn:uuid:p1", "https://e/p", &federated(h, rt));
            vec![msg.into_bytes()]
        },
    );
    fuzz_endpoint(
        "enroll",
        "enroll.json",
        "/EnrollmentServer/Enrollment.svc",
        "application/soap+xml; charset=utf-8",
        800,
        10,
        |h, rt| {
            let device = Device::new();
            let csr = device.csr(CsrSignature::Sha256, CsrSubject::Windows);
            let ctx = messages::context_items(&device.device_id, &device.hw_dev_id, "Full");
            let msg = messages::request_security_token(
                "urn:uuid:e1",
                "https://e/x",
                &federated(h, rt),
                &csr,
                &ctx,
            );
            vec![msg.into_bytes()]
        },
    );
}

/// The login form: a password check (argon2id) per readable form, so fewer iterations.
#[test]
fn fuzz_sign_in_form() {
    fuzz_endpoint(
        "auth",
        "auth-post.json",
        "/EnrollmentServer/Auth",
        "application/x-www-form-urlencoded",
        150,
        100,
        no_more_seeds,
    );
}
