//! A stand-in OpenID Connect provider on loopback, with its own RSA keys: discovery
//! document, JWKS, and a token endpoint that checks the PKCE verifier of the codes it
//! handed out and returns ID tokens minted as the test says. Also mints bare tokens (for
//! tokens a real provider would never sign: other algorithms, other keys).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub struct SigningKey {
    pub kid: String,
    pair: KeyPair,
}

impl SigningKey {
    pub fn generate(kid: &str) -> Self {
        Self {
            kid: kid.to_owned(),
            pair: KeyPair::generate(KeySize::Rsa2048).expect("RSA key"),
        }
    }

    pub fn jwk(&self) -> Value {
        let c = PublicKeyComponents::<Vec<u8>>::from(self.pair.public_key());
        json!({"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
               "n": B64URL.encode(&c.n), "e": B64URL.encode(&c.e)})
    }

    /// An RS256 JWT of `claims` under this key.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
        let signed = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let mut sig = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signed.as_bytes(),
                &mut sig,
            )
            .expect("sign");
        format!("{signed}.{}", B64URL.encode(sig))
    }
}

/// A token with any header, signed with HMAC-SHA256 under `secret` (for `alg` confusion).
pub fn hs256_token(header: &Value, claims: &Value, secret: &[u8]) -> String {
    use aws_lc_rs::hmac;
    let signed = format!(
        "{}.{}",
        B64URL.encode(header.to_string()),
        B64URL.encode(claims.to_string())
    );
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, secret),
        signed.as_bytes(),
    );
    format!("{signed}.{}", B64URL.encode(tag.as_ref()))
}

/// What the token endpoint does with the next code it redeems.
pub type Minter = Box<dyn Fn(&Value) -> String + Send + Sync>;

struct Inner {
    keys: Vec<SigningKey>,
    /// code → (PKCE challenge, claims of the ID token)
    codes: HashMap<String, (String, Value)>,
    minter: Option<Minter>,
    jwks_fetches: usize,
    up: bool,
}

#[derive(Clone)]
pub struct StandInProvider {
    pub issuer: String,
    pub client_id: String,
    inner: Arc<Mutex<Inner>>,
}

impl StandInProvider {
    pub async fn start(client_id: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let p = Self {
            issuer: format!("http://{addr}"),
            client_id: client_id.to_owned(),
            inner: Arc::new(Mutex::new(Inner {
                keys: vec![SigningKey::generate("key-1")],
                codes: HashMap::new(),
                minter: None,
                jwks_fetches: 0,
                up: true,
            })),
        };
        let served = p.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let p = served.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let p = p.clone();
                        async move { Ok::<_, std::convert::Infallible>(p.serve(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        p
    }

    /// Adds a key and signs with it from now on (key rotation).
    pub fn rotate(&self, kid: &str) {
        self.inner
            .lock()
            .unwrap()
            .keys
            .insert(0, SigningKey::generate(kid));
    }

    pub fn set_up(&self, up: bool) {
        self.inner.lock().unwrap().up = up;
    }

    pub fn jwks_fetches(&self) -> usize {
        self.inner.lock().unwrap().jwks_fetches
    }

    /// Signs claims with the current key.
    pub fn sign(&self, claims: &Value) -> String {
        self.inner.lock().unwrap().keys[0].sign(claims)
    }

    /// Standard ID token claims for `user`, with `nonce`, valid now.
    pub fn claims(&self, user: &str, nonce: &str) -> Value {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        json!({"iss": self.issuer, "aud": self.client_id, "sub": format!("sub-{user}"),
               "email": user, "email_verified": true, "nonce": nonce,
               "iat": now, "exp": now + 3600})
    }

    /// The next code redeemed returns what `minter` makes of the standard claims (the
    /// nonce already in them).
    pub fn mint_next_with(&self, minter: Minter) {
        self.inner.lock().unwrap().minter = Some(minter);
    }

    /// Issues a code for an authorization request (the user signed in as `user`), as the
    /// provider would before redirecting back.
    pub fn authorize(&self, authorize_url: &str, user: &str) -> (String, String) {
        let url = url::Url::parse(authorize_url).expect("authorize URL");
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], self.client_id);
        assert_eq!(q["code_challenge_method"], "S256");
        let code = format!("code-{}", uuid::Uuid::new_v4());
        let claims = self.claims(user, &q["nonce"]);
        self.inner
            .lock()
            .unwrap()
            .codes
            .insert(code.clone(), (q["code_challenge"].clone(), claims));
        (code, q["state"].clone())
    }

    async fn serve(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let json_response = |status: u16, v: Value| {
            hyper::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(v.to_string())))
                .expect("response")
        };
        if !self.inner.lock().unwrap().up {
            return json_response(503, json!({"error": "down"}));
        }
        match path.as_str() {
            "/.well-known/openid-configuration" => json_response(
                200,
                json!({"issuer": self.issuer,
                       "authorization_endpoint": format!("{}/authorize", self.issuer),
                       "token_endpoint": format!("{}/token", self.issuer),
                       "jwks_uri": format!("{}/jwks", self.issuer)}),
            ),
            "/jwks" => {
                let mut inner = self.inner.lock().unwrap();
                inner.jwks_fetches += 1;
                let keys: Vec<Value> = inner.keys.iter().map(SigningKey::jwk).collect();
                json_response(200, json!({ "keys": keys }))
            }
            "/token" => {
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let form: HashMap<String, String> =
                    url::form_urlencoded::parse(&body).into_owned().collect();
                let mut inner = self.inner.lock().unwrap();
                let Some((challenge, claims)) = inner
                    .codes
                    .remove(form.get("code").map_or("", String::as_str))
                else {
                    return json_response(400, json!({"error": "invalid_grant"}));
                };
                let verifier = form.get("code_verifier").map_or("", String::as_str);
                if B64URL.encode(Sha256::digest(verifier.as_bytes())) != challenge {
                    return json_response(
                        400,
                        json!({"error": "invalid_grant", "error_description": "PKCE"}),
                    );
                }
                let token = match inner.minter.take() {
                    Some(m) => {
                        drop(inner);
                        m(&claims)
                    }
                    None => inner.keys[0].sign(&claims),
                };
                json_response(
                    200,
                    json!({"id_token": token, "token_type": "Bearer", "access_token": "opaque"}),
                )
            }
            _ => json_response(404, json!({"error": "not found"})),
        }
    }
}
