//! Entra ID enrollment against a stand-in for Entra on loopback (its own RSA keys and
//! JWKS, tokens shaped like Entra's v1 and v2 access tokens): XCEP and WSTEP with the
//! token, Entra join (`Device`, certificate in My/System) and work account (`Full`,
//! My/User), the user recorded on first enrollment, the device bound to its tenant; every
//! kind of bad token refused with an Authentication fault and nothing written; key
//! rotation without restart; the key set unreachable → a retryable fault; the terms-of-use
//! page's Accept, Decline and refusals.

use std::time::Duration;

use serde_json::{Value, json};
use winmdm_e2e::device::{CsrSignature, CsrSubject, Device};
use winmdm_e2e::inprocess::{Harness, call};
use winmdm_e2e::messages::{self, Credentials};
use winmdm_e2e::oidc_provider::{SigningKey, StandInProvider, hs256_token};
use winmdm_e2e::{HttpResponse, verify};
use winmdm_http::state::{AdminAuth, EntraSettings};

const TENANT: &str = "7f3c1d2e-0000-4000-8000-00000000a11c";
const OTHER_TENANT: &str = "0b0b0b0b-0000-4000-8000-0000000000bb";
const APP_ID_URI: &str = "https://enterpriseenrollment.example.com";
const CLIENT_ID: &str = "5d6f7a8b-1111-4222-8333-944455556666";

async fn setup() -> (Harness, StandInProvider) {
    let idp = StandInProvider::start(CLIENT_ID).await;
    let mut h = Harness::new(AdminAuth::Bearer("admin".into()));
    let mut s = EntraSettings::new(
        vec![TENANT.into()],
        vec![APP_ID_URI.into(), CLIENT_ID.into()],
    );
    s.jwks_url = format!("{}/jwks", idp.issuer);
    s.jwks_refetch_interval = Duration::from_secs(2);
    s.terms_text = Some("Contoso manages this device.\n\n<b>Really.</b>".into());
    h.state.enable_entra(s);
    (h, idp)
}

/// An Entra v1 access token for the MDM app (`aud` = the application ID URI).
fn v1_claims(upn: &str) -> Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    json!({
        "aud": APP_ID_URI, "iss": format!("https://sts.windows.net/{TENANT}/"),
        "iat": now, "nbf": now, "exp": now + 3600, "ver": "1.0",
        "tid": TENANT, "oid": "a1b2c3d4-0000-4000-8000-000000000001",
        "upn": upn, "scp": "mdm_delegation", "deviceid": "d0d0d0d0-0000-4000-8000-000000000042",
        "appid": "29d9ed98-a469-4536-ade2-f981bc1d605e"
    })
}

/// A v2 token (`aud` = the client id, user in `preferred_username`).
fn v2_claims(user: &str) -> Value {
    let mut c = v1_claims(user);
    c["iss"] = json!(format!("https://login.microsoftonline.com/{TENANT}/v2.0"));
    c["aud"] = json!(CLIENT_ID);
    c["ver"] = json!("2.0");
    c.as_object_mut().unwrap().remove("upn");
    c["preferred_username"] = json!(user);
    c
}

async fn enroll(h: &Harness, token: &str, enrollment_type: &str) -> (Device, HttpResponse) {
    let device = Device::new();
    let r = enroll_device(h, &device, token, enrollment_type).await;
    (device, r)
}

/// XCEP then WSTEP for `device`, with an Entra token.
async fn enroll_device(
    h: &Harness,
    device: &Device,
    token: &str,
    enrollment_type: &str,
) -> HttpResponse {
    let csr = device.csr(CsrSignature::Sha256, CsrSubject::Windows);
    let ctx = messages::context_items(&device.device_id, &device.hw_dev_id, enrollment_type);
    let creds = Credentials::EntraJwt {
        token: token.to_owned(),
    };
    let policy = messages::get_policies("urn:uuid:p1", "https://e/Policy.svc", &creds);
    let p = call(
        &h.state,
        "POST",
        "/EnrollmentServer/Policy.svc",
        &[("content-type", "application/soap+xml; charset=utf-8")],
        policy,
    )
    .await;
    if p.status != 200 {
        return p;
    }
    let msg = messages::request_security_token("urn:uuid:e1", "https://e/x", &creds, &csr, &ctx);
    call(
        &h.state,
        "POST",
        "/EnrollmentServer/Enrollment.svc",
        &[("content-type", "application/soap+xml; charset=utf-8")],
        msg,
    )
    .await
}

async fn admin(h: &Harness, path: &str) -> Value {
    call(
        &h.state,
        "GET",
        &format!("/admin/v1{path}"),
        &[("authorization", "Bearer admin")],
        String::new(),
    )
    .await
    .json()
}

#[tokio::test]
async fn entra_join_and_work_account_enroll() {
    let (h, idp) = setup().await;
    // Entra join: EnrollmentType Device, v1 token.
    let (device, r) = enroll(&h, &idp.sign(&v1_claims("Alice@Contoso.com")), "Device").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let env = verify::soap_ok(&r);
    let doc = verify::provisioning_doc(&env);
    assert_eq!(
        doc.client_store, "System",
        "Entra join puts the certificate in My/System"
    );
    let d = admin(&h, &format!("/devices/{}", device.device_id)).await;
    assert_eq!(d["upn"], "alice@contoso.com");
    let users = admin(&h, "/users").await;
    assert_eq!(
        users["users"][0]["upn"], "alice@contoso.com",
        "the Entra user is recorded"
    );
    // The recorded user has no password: the login page refuses any.
    assert!(
        h.state
            .enrollment
            .sign_in("alice@contoso.com", "anything at all", None)
            .await
            .is_err()
    );
    let stored = h
        .state
        .store
        .get_device(&device.device_id)
        .await
        .unwrap()
        .unwrap();
    let binding = stored.entra.expect("Entra binding");
    assert_eq!(binding.tenant_id, TENANT);
    assert_eq!(binding.object_id, "a1b2c3d4-0000-4000-8000-000000000001");
    assert_eq!(
        binding.device_id.as_deref(),
        Some("d0d0d0d0-0000-4000-8000-000000000042")
    );

    // Work account: EnrollmentType Full, v2 token.
    let (_, r) = enroll(&h, &idp.sign(&v2_claims("bob@contoso.com")), "Full").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = verify::provisioning_doc(&verify::soap_ok(&r));
    assert_eq!(
        doc.client_store, "User",
        "a work account puts it in My/User"
    );
    assert_eq!(
        admin(&h, "/users").await["users"].as_array().unwrap().len(),
        2
    );
}

#[tokio::test]
async fn bad_tokens_are_refused_and_write_nothing() {
    let (h, idp) = setup().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let with = |k: &str, v: Value| {
        let mut c = v1_claims("mallory@contoso.com");
        c[k] = v;
        c
    };
    let stranger = SigningKey::generate("key-1");
    let jwks = String::from_utf8(
        winmdm_http::outbound::fetch(&format!("{}/jwks", idp.issuer), None, None)
            .await
            .unwrap()
            .body
            .to_vec(),
    )
    .unwrap();
    let good = idp.sign(&v1_claims("mallory@contoso.com"));
    let tampered = {
        use base64::Engine as _;
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let mut c = v1_claims("mallory@contoso.com");
        c["upn"] = json!("ceo@contoso.com");
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c.to_string());
        parts.join(".")
    };
    let none = {
        use base64::Engine as _;
        let b = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            b(&json!({"alg": "none", "kid": "key-1"})),
            b(&v1_claims("m@contoso.com"))
        )
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "another tenant",
            idp.sign(&{
                let mut c = with("tid", json!(OTHER_TENANT));
                c["iss"] = json!(format!("https://sts.windows.net/{OTHER_TENANT}/"));
                c
            }),
        ),
        (
            "tid not the issuer's tenant",
            idp.sign(&with("tid", json!(OTHER_TENANT))),
        ),
        (
            "another audience",
            idp.sign(&with("aud", json!("https://other-mdm.example.com"))),
        ),
        (
            "another issuer",
            idp.sign(&with("iss", json!("https://evil.example.com/"))),
        ),
        ("expired", idp.sign(&with("exp", json!(now - 3600)))),
        ("not yet valid", idp.sign(&with("nbf", json!(now + 3600)))),
        (
            "no mdm_delegation scope",
            idp.sign(&with("scp", json!("user_impersonation"))),
        ),
        (
            "signed by an unknown key",
            stranger.sign(&v1_claims("mallory@contoso.com")),
        ),
        ("alg none", none),
        (
            "HS256 keyed with the public key set",
            hs256_token(
                &json!({"alg": "HS256", "kid": "key-1"}),
                &v1_claims("m@contoso.com"),
                jwks.as_bytes(),
            ),
        ),
        ("tampered payload", tampered),
        ("not a JWT", "hello".into()),
    ];
    for (what, token) in cases {
        for enrollment_type in ["Device", "Full"] {
            let (_, r) = enroll(&h, &token, enrollment_type).await;
            assert_eq!(
                verify::fault_subcode(&r),
                "s:Authentication",
                "{what}: {}",
                r.text()
            );
        }
    }
    assert!(
        admin(&h, "/devices").await["devices"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        admin(&h, "/users").await["users"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn rotated_keys_are_fetched_and_an_unreachable_key_set_is_a_retryable_fault() {
    let (h, idp) = setup().await;
    let (_, r) = enroll(&h, &idp.sign(&v1_claims("a@contoso.com")), "Full").await;
    assert_eq!(r.status, 200, "{}", r.text());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    idp.rotate("key-2");
    let (_, r) = enroll(&h, &idp.sign(&v1_claims("b@contoso.com")), "Full").await;
    assert_eq!(
        r.status,
        200,
        "a new kid is fetched without restart: {}",
        r.text()
    );

    // A fresh server whose key set is unreachable: EnrollmentServer, InMaintenance.
    let (h2, down) = setup().await;
    down.set_up(false);
    let (_, r) = enroll(&h2, &down.sign(&v1_claims("c@contoso.com")), "Full").await;
    assert_eq!(
        verify::fault_subcode(&r),
        "s:EnrollmentServer",
        "{}",
        r.text()
    );
    assert!(r.text().contains("InMaintenance"), "{}", r.text());
    assert!(
        admin(&h2, "/users").await["users"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

async fn terms(h: &Harness, query: &str, token: Option<&str>) -> HttpResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    call(
        &h.state,
        "GET",
        &format!("/EnrollmentServer/TermsOfUse?{query}"),
        &headers,
        String::new(),
    )
    .await
}

#[tokio::test]
async fn terms_of_use_accept_decline_and_refusals() {
    let (h, idp) = setup().await;
    let redirect = "ms-appx-web%3A%2F%2FMicrosoft.AAD.BrokerPlugin%2Fabc";
    let q =
        format!("redirect_uri={redirect}&client-request-id=req-1&api-version=1.0&mode=azureadjoin");
    let token = idp.sign(&v1_claims("alice@contoso.com"));
    let page = terms(&h, &q, Some(&token)).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let html = page.text();
    assert!(html.contains("Contoso manages this device."));
    assert!(
        html.contains("&lt;b&gt;Really.&lt;/b&gt;"),
        "the text is escaped"
    );
    let state = html
        .split("name=\"state\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("state field")
        .to_owned();
    let post = |decision: &str, state: &str| {
        let body = format!(
            "decision={decision}&state={}",
            url::form_urlencoded::byte_serialize(state.as_bytes()).collect::<String>()
        );
        call(
            &h.state,
            "POST",
            "/EnrollmentServer/TermsOfUse",
            &[("content-type", "application/x-www-form-urlencoded")],
            body,
        )
    };
    let accept = post("accept", &state).await;
    assert_eq!(accept.status, 302);
    let loc = accept.header("location").unwrap();
    assert!(
        loc.starts_with("ms-appx-web://Microsoft.AAD.BrokerPlugin/abc?IsAccepted=true&OpaqueBlob="),
        "{loc}"
    );
    let decline = post("decline", &state).await;
    let loc = decline.header("location").unwrap();
    assert!(
        loc.contains("error=access_denied") && loc.contains("error_description="),
        "{loc}"
    );
    // A forged state.
    assert_eq!(post("accept", "forged.state").await.status, 400);

    // No token, a token of another tenant: back to Windows with unauthorized_client.
    let r = terms(&h, &q, None).await;
    assert!(
        r.header("location")
            .unwrap()
            .contains("error=unauthorized_client")
    );
    let mut other = v1_claims("eve@fabrikam.com");
    other["tid"] = json!(OTHER_TENANT);
    other["iss"] = json!(format!("https://sts.windows.net/{OTHER_TENANT}/"));
    let r = terms(&h, &q, Some(&idp.sign(&other))).await;
    assert!(
        r.header("location")
            .unwrap()
            .contains("error=unauthorized_client")
    );
    // Never a redirect anywhere but the web view.
    let evil = terms(
        &h,
        "redirect_uri=https%3A%2F%2Fevil.example.com%2F",
        Some(&token),
    )
    .await;
    assert_eq!(evil.status, 400);
    assert!(evil.header("location").is_none());
}

/// In sessions, Alert 1224 `AADUserToken` tells which Entra user is signed in: a verified
/// token lets `./User/…` profiles go out even when LoginStatus says `others`; a token of
/// another tenant, or an expired one, does not count.
#[tokio::test]
async fn a_verified_aad_user_token_counts_as_a_signed_in_user() {
    use winmdm_e2e::fleet::{FleetDevice, Server};
    let (h, idp) = setup().await;
    let s = Server::InProcess(&h);
    let mut d = FleetDevice::enroll(&s).await;
    d.login_status = "others";
    const USER_COOKIES: &str = "./User/Vendor/MSFT/Policy/Config/Browser/AllowCookies";
    let r = s
        .admin(
            "POST",
            "/profiles",
            Some(json!({
                "name": "User cookies",
                "scope": "user",
                "syncml": format!("<Replace><Item><Meta><Format xmlns=\"syncml:metinf\">int</Format></Meta><Target><LocURI>{USER_COOKIES}</LocURI></Target><Data>0</Data></Item></Replace>"),
                "assignment": {"include": ["all"]},
            })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut other = v1_claims("eve@fabrikam.com");
    other["tid"] = json!(OTHER_TENANT);
    other["iss"] = json!(format!("https://sts.windows.net/{OTHER_TENANT}/"));
    let mut expired = v1_claims("alice@contoso.com");
    expired["exp"] = json!(now - 3600);
    for bad in [
        idp.sign(&other),
        idp.sign(&expired),
        "not a token".to_owned(),
    ] {
        d.aad_user_token = Some(bad);
        d.session(&s).await;
        assert_eq!(
            d.tree.value(USER_COOKIES),
            None,
            "a refused user token is nobody"
        );
    }
    d.aad_user_token = Some(idp.sign(&v1_claims("alice@contoso.com")));
    d.session(&s).await;
    assert_eq!(
        d.tree.value(USER_COOKIES),
        Some("0"),
        "the Entra user is signed in"
    );
}

/// The same through `Authorization: Bearer` on the management request.
#[tokio::test]
async fn a_verified_bearer_header_counts_as_a_signed_in_user() {
    use winmdm_e2e::fleet::{FleetDevice, Server};
    let (h, idp) = setup().await;
    let s = Server::InProcess(&h);
    let mut d = FleetDevice::enroll(&s).await;
    d.login_status = "others";
    const USER_COOKIES: &str = "./User/Vendor/MSFT/Policy/Config/Browser/AllowCookies";
    let r = s
        .admin(
            "POST",
            "/profiles",
            Some(json!({
                "name": "User cookies",
                "scope": "user",
                "syncml": format!("<Replace><Item><Meta><Format xmlns=\"syncml:metinf\">int</Format></Meta><Target><LocURI>{USER_COOKIES}</LocURI></Target><Data>0</Data></Item></Replace>"),
                "assignment": {"include": ["all"]},
            })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let mut wrong_aud = v1_claims("alice@contoso.com");
    wrong_aud["aud"] = json!("https://other.example.com");
    d.bearer = Some(idp.sign(&wrong_aud));
    d.session(&s).await;
    assert_eq!(
        d.tree.value(USER_COOKIES),
        None,
        "a refused bearer token is nobody"
    );
    d.bearer = Some(idp.sign(&v1_claims("alice@contoso.com")));
    d.session(&s).await;
    assert_eq!(d.tree.value(USER_COOKIES), Some("0"));
}

/// A device an Entra user enrolled is that user object's, not its UPN's: a token for
/// another object with the same UPN (a renamed and reused UPN, or a second allowed
/// tenant's user) cannot enroll over it; the same object can. It used to: the record,
/// its groups and its queue passed to the new principal.
#[tokio::test]
async fn an_entra_device_is_its_user_objects_not_its_upns() {
    let (h, idp) = setup().await;
    let (device, r) = enroll(&h, &idp.sign(&v1_claims("alice@contoso.com")), "Full").await;
    verify::soap_ok(&r);
    let mut reused = v1_claims("alice@contoso.com");
    reused["oid"] = json!("a1b2c3d4-0000-4000-8000-000000000002");
    let r = enroll_device(&h, &device, &idp.sign(&reused), "Full").await;
    assert_eq!(verify::fault_subcode(&r), "s:Authorization", "{}", r.text());
    let r = enroll_device(
        &h,
        &device,
        &idp.sign(&v1_claims("alice@contoso.com")),
        "Full",
    )
    .await;
    verify::soap_ok(&r);
    let d = admin(&h, &format!("/devices/{}", device.device_id)).await;
    assert_eq!(d["status"], "enrolled");
}
