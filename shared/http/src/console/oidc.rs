//! Console sign-in through an OpenID Connect provider: authorization code flow with PKCE
//! (RFC 7636, S256) and a nonce, for the deployed console (Cognito by default; Entra ID,
//! Okta, Google through parameters).
//!
//! 1. `/console/login` redirects to the provider's authorization endpoint with a random
//!    `state`, `nonce` and PKCE challenge; the three are kept in a short-lived signed
//!    cookie (nothing stored server-side).
//! 2. `/console/oidc/callback` checks `state` against that cookie, redeems the code at the
//!    token endpoint with the PKCE verifier, and verifies the ID token
//!    (`winmdm_core::jwt`: RS256 against the provider's JWKS by `kid`, issuer, audience =
//!    our client id, expiry) and its `nonce`.
//! 3. The user must be on the admin list when one is configured (email, or `sub`).
//!
//! Nothing is fetched at start-up: the discovery document and the key set are read on the
//! first sign-in and cached; the key set is read again (at most once a minute) when a
//! token names a key it does not have, which is how providers rotate.
//!
//! ⚠ Without an admin list, anyone the provider signs in is an admin: right for a
//! dedicated Cognito user pool (admins are invited there), wrong for a shared directory.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use http::{HeaderValue, StatusCode, header};
use lambda_http::Request;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Mutex;
use tracing::{info, warn};
use winmdm_core::jwt::{self, Expect, JwtError, KeySet};

use super::session::{self, Session, SessionKey};
use super::{ConsoleConfig, public_page};
use crate::jwks::JwksCache;
use crate::outbound;
use crate::respond::Response;
use crate::state::AppState;

const FLOW_COOKIE: &str = "winmdm_oidc";
const FLOW_TTL: time::Duration = time::Duration::minutes(10);
/// Least time between two key-set fetches prompted by unknown `kid`s, by default.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(60);

/// Configuration of the provider and of this client.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// `iss` of its tokens; `<issuer>/.well-known/openid-configuration` is read.
    pub issuer: String,
    pub client_id: String,
    /// For confidential clients (Cognito's app client with a secret); PKCE either way.
    pub client_secret: Option<String>,
    /// This console's callback, `https://<admin host>/console/oidc/callback`.
    pub redirect_uri: String,
    /// Emails (or subjects) allowed in; empty: everyone the provider signs in.
    pub admins: Vec<String>,
    /// Least time between two key-set fetches prompted by unknown `kid`s
    /// ([`REFETCH_INTERVAL`] unless a test shortens it).
    pub jwks_refetch_interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

struct Cache {
    discovery: Option<Discovery>,
    keys: Option<std::sync::Arc<JwksCache>>,
}

pub struct OidcClient {
    settings: OidcSettings,
    cache: Mutex<Cache>,
}

/// What the flow cookie holds between the redirect and the callback.
#[derive(Serialize, Deserialize)]
struct Flow {
    state: String,
    nonce: String,
    verifier: String,
    exp: i64,
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    B64URL.encode(b)
}

#[derive(Debug, thiserror::Error)]
enum SignInError {
    #[error("the sign-in provider is unreachable or answered badly: {0}")]
    Provider(String),
    #[error("the sign-in was refused: {0}")]
    Refused(String),
}

impl OidcClient {
    pub fn new(settings: OidcSettings) -> Self {
        Self {
            settings,
            cache: Mutex::new(Cache {
                discovery: None,
                keys: None,
            }),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    async fn discovery(&self) -> Result<Discovery, SignInError> {
        let mut cache = self.cache.lock().await;
        if let Some(d) = &cache.discovery {
            return Ok(d.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let got = outbound::fetch(&url, None, None)
            .await
            .map_err(|e| SignInError::Provider(e.to_string()))?;
        if !got.status.is_success() {
            return Err(SignInError::Provider(format!("{url}: HTTP {}", got.status)));
        }
        let d: Discovery = serde_json::from_slice(&got.body)
            .map_err(|e| SignInError::Provider(format!("{url}: {e}")))?;
        if d.issuer != self.settings.issuer {
            // OpenID Connect Discovery §4.3: the document must name the issuer we asked.
            return Err(SignInError::Provider(format!(
                "the discovery document names issuer {:?}",
                d.issuer
            )));
        }
        for u in [&d.authorization_endpoint, &d.token_endpoint, &d.jwks_uri] {
            let ok = url::Url::parse(u).is_ok_and(|u| outbound::allowed(&u));
            if !ok {
                return Err(SignInError::Provider(format!(
                    "endpoint {u:?} is not https"
                )));
            }
        }
        cache.discovery = Some(d.clone());
        Ok(d)
    }

    /// The key set ([`JwksCache`]: fetched on first use, and again at most once per
    /// `jwks_refetch_interval` when `refresh` asks for it, for an unknown `kid`).
    async fn keys(&self, jwks_uri: &str, refresh: bool) -> Result<KeySet, SignInError> {
        use winmdm_core::entra::KeySource as _;
        let cache = {
            let mut c = self.cache.lock().await;
            c.keys
                .get_or_insert_with(|| {
                    std::sync::Arc::new(JwksCache::new(
                        jwks_uri.to_owned(),
                        self.settings.jwks_refetch_interval,
                    ))
                })
                .clone()
        };
        cache.keys(refresh).await.map_err(SignInError::Provider)
    }

    /// Verifies an ID token: signature (refetching the key set once for an unknown key),
    /// issuer, audience, expiry, then the nonce; the trusted claims.
    async fn verify_id_token(
        &self,
        d: &Discovery,
        token: &str,
        nonce: &str,
        now: time::OffsetDateTime,
    ) -> Result<serde_json::Value, SignInError> {
        let refused = |e: JwtError| SignInError::Refused(format!("ID token: {e}"));
        let expect = Expect {
            issuers: std::slice::from_ref(&self.settings.issuer),
            audiences: std::slice::from_ref(&self.settings.client_id),
        };
        let keys = self.keys(&d.jwks_uri, false).await?;
        let claims = match jwt::decode(token)
            .map_err(refused)?
            .verify(&keys, &expect, now)
        {
            Err(JwtError::UnknownKey(_)) => {
                let keys = self.keys(&d.jwks_uri, true).await?;
                jwt::decode(token)
                    .map_err(refused)?
                    .verify(&keys, &expect, now)
                    .map_err(refused)?
            }
            other => other.map_err(refused)?,
        };
        let got = claims.get("nonce").and_then(|v| v.as_str()).unwrap_or("");
        if !bool::from(got.as_bytes().ct_eq(nonce.as_bytes())) {
            return Err(SignInError::Refused("ID token nonce does not match".into()));
        }
        Ok(claims)
    }
}

/// Step 1: to the provider.
pub async fn start(
    console: &ConsoleConfig,
    key: &SessionKey,
    client: &OidcClient,
    _req: &Request,
) -> Response {
    let d = match client.discovery().await {
        Ok(d) => d,
        Err(e) => return failure(StatusCode::BAD_GATEWAY, &e),
    };
    let flow = Flow {
        state: random_token(),
        nonce: random_token(),
        verifier: random_token(),
        exp: (time::OffsetDateTime::now_utc() + FLOW_TTL).unix_timestamp(),
    };
    let challenge = B64URL.encode(Sha256::digest(flow.verifier.as_bytes()));
    let mut url = match url::Url::parse(&d.authorization_endpoint) {
        Ok(u) => u,
        Err(e) => {
            return failure(
                StatusCode::BAD_GATEWAY,
                &SignInError::Provider(e.to_string()),
            );
        }
    };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client.settings.client_id)
        .append_pair("redirect_uri", &client.settings.redirect_uri)
        .append_pair("scope", "openid email profile")
        .append_pair("state", &flow.state)
        .append_pair("nonce", &flow.nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let mut r = super::see_other(url.as_str());
    // SameSite=Lax: the provider's redirect back is a top-level cross-site GET, which a
    // Strict cookie would not come with. It holds no credential, only the flow's secrets.
    let cookie = format!(
        "{FLOW_COOKIE}={}; Path=/console/oidc; HttpOnly; SameSite=Lax; Max-Age={}{}",
        key.seal("oidc-flow", &flow),
        FLOW_TTL.whole_seconds(),
        if console.secure_cookies {
            "; Secure"
        } else {
            ""
        }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// Step 2: back from the provider.
pub async fn callback(
    state: &AppState,
    console: &ConsoleConfig,
    key: &SessionKey,
    client: &OidcClient,
    req: &Request,
) -> Response {
    let q: Vec<(String, String)> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let now = state.enrollment.now();
    let flow: Option<Flow> = session::cookie(req.headers(), FLOW_COOKIE)
        .and_then(|v| key.open("oidc-flow", v))
        .filter(|f: &Flow| f.exp > now.unix_timestamp());
    let Some(flow) = flow else {
        return failure(
            StatusCode::BAD_REQUEST,
            &SignInError::Refused("the sign-in took too long or did not start here".into()),
        );
    };
    if !get("state").is_some_and(|s| bool::from(s.as_bytes().ct_eq(flow.state.as_bytes()))) {
        return failure(
            StatusCode::BAD_REQUEST,
            &SignInError::Refused("state does not match".into()),
        );
    }
    if let Some(e) = get("error") {
        return failure(
            StatusCode::UNAUTHORIZED,
            &SignInError::Refused(format!("the provider said {e:?}")),
        );
    }
    let Some(code) = get("code") else {
        return failure(
            StatusCode::BAD_REQUEST,
            &SignInError::Refused("no authorization code".into()),
        );
    };
    let result = async {
        let d = client.discovery().await?;
        let s = &client.settings;
        let mut fields = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", s.redirect_uri.as_str()),
            ("code_verifier", flow.verifier.as_str()),
        ];
        if s.client_secret.is_none() {
            fields.push(("client_id", s.client_id.as_str()));
        }
        let basic = s
            .client_secret
            .as_deref()
            .map(|secret| (s.client_id.as_str(), secret));
        let got = outbound::fetch(&d.token_endpoint, Some(&fields), basic)
            .await
            .map_err(|e| SignInError::Provider(e.to_string()))?;
        if !got.status.is_success() {
            return Err(SignInError::Refused(format!(
                "the token endpoint answered HTTP {}",
                got.status
            )));
        }
        #[derive(Deserialize)]
        struct Tokens {
            id_token: String,
        }
        let tokens: Tokens = serde_json::from_slice(&got.body)
            .map_err(|_| SignInError::Provider("the token response has no id_token".into()))?;
        client
            .verify_id_token(&d, &tokens.id_token, &flow.nonce, now)
            .await
    }
    .await;
    let claims = match result {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "console OIDC sign-in failed");
            let status = match e {
                SignInError::Provider(_) => StatusCode::BAD_GATEWAY,
                SignInError::Refused(_) => StatusCode::UNAUTHORIZED,
            };
            return failure(status, &e);
        }
    };
    let sub = claims.get("sub").and_then(|v| v.as_str()).unwrap_or("");
    let user = verified_email(&claims).unwrap_or(sub).to_owned();
    let admins = &client.settings.admins;
    if user.is_empty()
        || (!admins.is_empty()
            && !admins
                .iter()
                .any(|a| a.eq_ignore_ascii_case(&user) || a == sub))
    {
        warn!(user, "console OIDC sign-in of a user who is not an admin");
        return failure(
            StatusCode::FORBIDDEN,
            &SignInError::Refused(format!("{user} is not a winmdm admin")),
        );
    }
    info!(user, "console sign-in through OIDC");
    let mut r = super::signed_in(console, key, Session::new(user, now));
    let clear = format!(
        "{FLOW_COOKIE}=; Path=/console/oidc; HttpOnly; SameSite=Lax; Max-Age=0{}",
        if console.secure_cookies {
            "; Secure"
        } else {
            ""
        }
    );
    if let Ok(v) = HeaderValue::from_str(&clear) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// The token's `email`, if the provider says it verified it: `email_verified` true, or
/// Entra ID's `xms_edov` (the email's domain is verified by the tenant that owns it; Entra
/// ID tokens carry no `email_verified`). Otherwise `None`, and the admin list is matched
/// against `sub` alone.
///
/// ⚠ An email the provider did not verify is whatever its user typed (or, in Entra ID, a
/// tenant admin anywhere set): accepting it would let anyone whose directory lets them
/// claim an admin's address into the console ("nOAuth").
fn verified_email(claims: &serde_json::Value) -> Option<&str> {
    // `true`, or the string some providers send.
    let is_true = |k: &str| {
        claims.get(k).and_then(|v| v.as_bool()) == Some(true)
            || claims.get(k).and_then(|v| v.as_str()) == Some("true")
    };
    claims
        .get("email")
        .and_then(|v| v.as_str())
        .filter(|_| is_true("email_verified") || is_true("xms_edov"))
}

fn failure(status: StatusCode, e: &SignInError) -> Response {
    public_page(
        status,
        "Sign-in failed",
        format!(
            "<p class=\"error\" role=\"alert\">{}</p><p><a href=\"/console/login\">Try again</a></p>",
            super::html::esc(&e.to_string())
        ),
    )
}
