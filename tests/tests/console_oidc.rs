//! The console's OpenID Connect sign-in end to end, against a stand-in provider on
//! loopback with its own keys: authorization code + PKCE, the ID token checked against the
//! provider's key set (signature, issuer, audience, expiry, nonce), key rotation, and
//! every kind of bad token refused with nothing signed in.

use std::time::Duration;

use serde_json::{Value, json};
use winmdm_e2e::HttpResponse;
use winmdm_e2e::inprocess::{Harness, call};
use winmdm_e2e::oidc_provider::{SigningKey, StandInProvider, hs256_token};
use winmdm_http::console::oidc::OidcSettings;
use winmdm_http::state::AdminAuth;

const CLIENT_ID: &str = "winmdm-console";

async fn setup(admins: &[&str]) -> (Harness, StandInProvider) {
    let idp = StandInProvider::start(CLIENT_ID).await;
    let mut h = Harness::new(AdminAuth::Gateway);
    h.state
        .enable_oidc_console(OidcSettings {
            issuer: idp.issuer.clone(),
            client_id: CLIENT_ID.into(),
            client_secret: None,
            redirect_uri: "https://admin.example.com/console/oidc/callback".into(),
            admins: admins.iter().map(|a| a.to_string()).collect(),
            jwks_refetch_interval: Duration::from_secs(2),
        })
        .unwrap();
    (h, idp)
}

fn cookie_of(r: &HttpResponse, name: &str) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(|c| c.split(';').next().unwrap_or("").to_owned())
        .filter(|c| c.len() > name.len() + 1)
}

/// Starts a sign-in, has the provider authorize `user`, and returns the callback's answer.
async fn sign_in(h: &Harness, idp: &StandInProvider, user: &str) -> HttpResponse {
    let start = call(&h.state, "GET", "/console/login", &[], String::new()).await;
    assert_eq!(start.status, 303, "{}", start.text());
    let location = start.header("location").expect("redirect").to_owned();
    assert!(location.starts_with(&format!("{}/authorize?", idp.issuer)));
    let flow = cookie_of(&start, "winmdm_oidc").expect("flow cookie");
    let (code, state) = idp.authorize(&location, user);
    let path = format!(
        "/console/oidc/callback?code={}&state={}",
        url::form_urlencoded::byte_serialize(code.as_bytes()).collect::<String>(),
        url::form_urlencoded::byte_serialize(state.as_bytes()).collect::<String>()
    );
    call(&h.state, "GET", &path, &[("cookie", &flow)], String::new()).await
}

async fn overview_with(h: &Harness, session: &str) -> HttpResponse {
    call(
        &h.state,
        "GET",
        "/console/overview",
        &[("cookie", session)],
        String::new(),
    )
    .await
}

#[tokio::test]
async fn sign_in_through_the_provider_opens_a_session() {
    let (h, idp) = setup(&[]).await;
    let r = sign_in(&h, &idp, "admin@example.com").await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some("/console/overview"));
    let session = cookie_of(&r, "winmdm_console").expect("session cookie");
    let set = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("winmdm_console="))
        .unwrap();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Secure"));
    let page = overview_with(&h, &session).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("admin@example.com"));
    // Without the cookie: back to sign-in.
    let anon = call(&h.state, "GET", "/console/overview", &[], String::new()).await;
    assert_eq!(anon.status, 303);
}

/// A token the provider mints for the next code, changed by `f`.
async fn refused_when(
    h: &Harness,
    idp: &StandInProvider,
    f: impl Fn(&Value, &StandInProvider) -> String + Send + Sync + 'static,
) -> HttpResponse {
    let p = idp.clone();
    idp.mint_next_with(Box::new(move |claims| f(claims, &p)));
    let r = sign_in(h, idp, "admin@example.com").await;
    assert!(
        cookie_of(&r, "winmdm_console").is_none(),
        "no session for a bad token: {}",
        r.text()
    );
    r
}

#[tokio::test]
async fn bad_id_tokens_are_refused() {
    let (h, idp) = setup(&[]).await;
    let with = |k: &'static str, v: Value| {
        move |c: &Value, p: &StandInProvider| {
            let mut c = c.clone();
            c[k] = v.clone();
            p.sign(&c)
        }
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (what, r) in [
        (
            "wrong audience",
            refused_when(&h, &idp, with("aud", json!("another-app"))).await,
        ),
        (
            "audience list without us",
            refused_when(&h, &idp, with("aud", json!(["a", "b"]))).await,
        ),
        (
            "wrong issuer",
            refused_when(&h, &idp, with("iss", json!("https://evil.example.com"))).await,
        ),
        (
            "expired",
            refused_when(&h, &idp, with("exp", json!(now - 3600))).await,
        ),
        (
            "not yet valid",
            refused_when(&h, &idp, with("nbf", json!(now + 3600))).await,
        ),
        (
            "another nonce",
            refused_when(&h, &idp, with("nonce", json!("replayed"))).await,
        ),
    ] {
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        eprintln!(
            "{what}: {}",
            r.text()
                .split("role=\"alert\">")
                .nth(1)
                .unwrap_or("")
                .split("</p>")
                .next()
                .unwrap_or("")
        );
        assert!(r.text().contains("Sign-in failed"), "{what}");
    }
    // alg none, and HS256 keyed with the provider's public key (algorithm confusion).
    let none = refused_when(&h, &idp, |c, _| {
        use base64::Engine as _;
        let b = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", b(&json!({"alg": "none", "kid": "key-1"})), b(c))
    })
    .await;
    assert_eq!(none.status, 401);
    assert!(none.text().contains("not RS256"), "{}", none.text());
    let jwks = reqwest_jwks(&idp).await;
    let confused = refused_when(&h, &idp, move |c, _| {
        hs256_token(&json!({"alg": "HS256", "kid": "key-1"}), c, jwks.as_bytes())
    })
    .await;
    assert_eq!(confused.status, 401);
    // A payload changed after signing.
    let tampered = refused_when(&h, &idp, |c, p| {
        let good = p.sign(c);
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let mut evil = c.clone();
        evil["email"] = json!("mallory@example.com");
        use base64::Engine as _;
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(evil.to_string());
        parts.join(".")
    })
    .await;
    assert_eq!(tampered.status, 401);
    assert!(tampered.text().contains("signature"), "{}", tampered.text());
    // A key the provider never published.
    let stranger = SigningKey::generate("key-1");
    let unknown = refused_when(&h, &idp, move |c, _| stranger.sign(c)).await;
    assert_eq!(unknown.status, 401);
}

async fn reqwest_jwks(idp: &StandInProvider) -> String {
    let got = winmdm_http::outbound::fetch(&format!("{}/jwks", idp.issuer), None, None)
        .await
        .expect("jwks");
    String::from_utf8(got.body.to_vec()).unwrap()
}

#[tokio::test]
async fn key_rotation_is_picked_up_without_restart_and_refetches_are_rate_limited() {
    let (h, idp) = setup(&[]).await;
    // The keys first: making RSA keys takes long enough on a loaded machine to outlast
    // the refetch interval the loop below must stay within.
    let ghosts: Vec<SigningKey> = ["ghost-1", "ghost-2", "ghost-3"]
        .into_iter()
        .map(SigningKey::generate)
        .collect();
    assert_eq!(sign_in(&h, &idp, "admin@example.com").await.status, 303);
    assert_eq!(idp.jwks_fetches(), 1);
    // Tokens naming unknown keys within the interval: one refetch at most.
    for k in ghosts {
        let r = refused_when(&h, &idp, move |c, _| k.sign(c)).await;
        assert_eq!(r.status, 401);
    }
    assert!(idp.jwks_fetches() <= 2, "{} fetches", idp.jwks_fetches());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    idp.rotate("key-2");
    let r = sign_in(&h, &idp, "admin@example.com").await;
    assert_eq!(
        r.status,
        303,
        "a rotated key is fetched and trusted: {}",
        r.text()
    );
}

#[tokio::test]
async fn only_listed_admins_get_in() {
    let (h, idp) = setup(&["Admin@Example.com"]).await;
    assert_eq!(sign_in(&h, &idp, "admin@example.com").await.status, 303);
    let r = sign_in(&h, &idp, "intern@example.com").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(cookie_of(&r, "winmdm_console").is_none());
}

#[tokio::test]
async fn a_forged_or_missing_flow_is_refused_and_a_down_provider_says_so() {
    let (h, idp) = setup(&[]).await;
    // A callback with no flow cookie (started elsewhere: login CSRF).
    let r = call(
        &h.state,
        "GET",
        "/console/oidc/callback?code=x&state=y",
        &[],
        String::new(),
    )
    .await;
    assert_eq!(r.status, 400);
    // The right cookie, another state.
    let start = call(&h.state, "GET", "/console/login", &[], String::new()).await;
    let flow = cookie_of(&start, "winmdm_oidc").unwrap();
    let (code, _) = idp.authorize(start.header("location").unwrap(), "admin@example.com");
    let r = call(
        &h.state,
        "GET",
        &format!("/console/oidc/callback?code={code}&state=forged"),
        &[("cookie", &flow)],
        String::new(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(cookie_of(&r, "winmdm_console").is_none());
    // The provider down before its discovery document was ever read: a clear 502.
    let (fresh, down) = setup(&[]).await;
    down.set_up(false);
    let r = call(&fresh.state, "GET", "/console/login", &[], String::new()).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("unreachable or answered badly"));
}

/// The admin list matches an email only when the provider says it verified it
/// (`email_verified`, or Entra ID's `xms_edov`); otherwise only `sub`. A token naming an
/// admin's address without saying so used to open an admin session ("nOAuth": in Entra
/// ID any tenant can set any address on its users).
#[tokio::test]
async fn an_email_counts_only_when_the_provider_verified_it() {
    let (h, idp) = setup(&["admin@example.com"]).await;
    let minted = |change: fn(&mut Value)| {
        move |c: &Value, p: &StandInProvider| {
            let mut c = c.clone();
            change(&mut c);
            p.sign(&c)
        }
    };
    for (what, change) in [
        (
            "no email_verified",
            (|c: &mut Value| {
                c.as_object_mut().unwrap().remove("email_verified");
            }) as fn(&mut Value),
        ),
        ("email_verified false", |c: &mut Value| {
            c["email_verified"] = json!(false)
        }),
        ("xms_edov false", |c: &mut Value| {
            c.as_object_mut().unwrap().remove("email_verified");
            c["xms_edov"] = json!(false);
        }),
    ] {
        let r = refused_when(&h, &idp, minted(change)).await;
        assert_eq!(r.status, 403, "{what}: {}", r.text());
    }
    for (what, change) in [
        (
            "xms_edov true",
            (|c: &mut Value| {
                c.as_object_mut().unwrap().remove("email_verified");
                c["xms_edov"] = json!(true);
            }) as fn(&mut Value),
        ),
        ("email_verified \"true\"", |c: &mut Value| {
            c["email_verified"] = json!("true")
        }),
    ] {
        idp.mint_next_with(Box::new({
            let p = idp.clone();
            let f = minted(change);
            move |claims| f(claims, &p)
        }));
        let r = sign_in(&h, &idp, "admin@example.com").await;
        assert_eq!(r.status, 303, "{what}: {}", r.text());
    }
}
