//! The sign-in token key read from Secrets Manager (moto), as the functions that issue and
//! accept sign-in tokens do on AWS: `WINMDM_TOKEN_KEY_SECRET_ARN` names the secret, so the
//! key itself is never in a function's configuration. It is read when a token is first
//! issued or checked, not at start (a function starts without calling AWS).

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use time::OffsetDateTime;
use winmdm_aws::aws_sdk_secretsmanager as sm;
use winmdm_core::enrollment::EnrollError;
use winmdm_core::model::User;
use winmdm_core::password::hash_password;
use winmdm_core::token::TokenSigner;
use winmdm_e2e::moto::Moto;
use winmdm_http::AppState;
use winmdm_http::state::InitError;

const UPN: &str = "alice@example.com";
const PASSWORD: &str = "a long passphrase";

/// `AppState::from_vars` on these variables (and a public URL).
async fn state(vars: &[(&str, &str)]) -> Result<AppState, InitError> {
    let mut map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    map.entry("WINMDM_PUBLIC_URL".into())
        .or_insert_with(|| "https://enterpriseenrollment.example.com".into());
    map.entry("AWS_REGION".into())
        .or_insert_with(|| "us-east-1".into());
    AppState::from_vars(move |k| map.get(k).cloned()).await
}

/// Signs `UPN` in through the state and returns the token its key signed.
async fn sign_in(state: &AppState) -> String {
    try_sign_in(state).await.unwrap()
}

/// Creates `UPN` and signs in as it.
async fn try_sign_in(state: &AppState) -> Result<String, EnrollError> {
    state
        .store
        .create_user(&User {
            upn: UPN.into(),
            password_hash: hash_password(PASSWORD).unwrap(),
            created_at: OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
    state.enrollment.sign_in(UPN, PASSWORD, None).await
}

fn verifies(key: &[u8], token: &str) -> bool {
    TokenSigner::new(key.to_vec(), time::Duration::minutes(15))
        .unwrap()
        .verify(token.as_bytes(), OffsetDateTime::now_utc())
        .is_ok()
}

fn dir_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn token_key_from_secrets_manager() {
    winmdm_e2e::moto::aws_test_environment();
    let moto = Moto::start().await;
    let sm = sm::Client::new(&moto.sdk_config().await);
    let create = |name: &'static str| sm.create_secret().name(name);

    // What the template's secret looks like: 64 letters and digits, read as base64.
    let text = "TQ8c0yVx7ZkR2mB9pL4wN6sD1fH3jG5aE7uY0iO2qW4eR6tY8uI0oP2aS4dF6gH8";
    let key = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap();
    let arn = create("winmdm-token-key")
        .secret_string(text)
        .send()
        .await
        .unwrap()
        .arn
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = state(&[
        ("WINMDM_DATA_DIR", dir_str(dir.path())),
        ("WINMDM_TOKEN_KEY_SECRET_ARN", &arn),
        ("WINMDM_SECRETSMANAGER_ENDPOINT", &moto.endpoint),
    ])
    .await
    .expect("starts with the key from the secret");
    let token = sign_in(&s).await;
    assert!(verifies(&key, &token), "signed with the secret's key");
    assert!(!verifies(&[7u8; 48], &token));
    assert!(
        !dir.path().join("token-key").exists(),
        "no key generated into the data dir"
    );
    drop(s);

    // A binary secret is the key itself.
    let raw = [0x5au8; 32];
    let arn_bin = create("winmdm-token-key-binary")
        .secret_binary(sm::primitives::Blob::new(raw.to_vec()))
        .send()
        .await
        .unwrap()
        .arn
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = state(&[
        ("WINMDM_DATA_DIR", dir_str(dir.path())),
        ("WINMDM_TOKEN_KEY_SECRET_ARN", &arn_bin),
        ("WINMDM_SECRETSMANAGER_ENDPOINT", &moto.endpoint),
    ])
    .await
    .unwrap();
    assert!(verifies(&raw, &sign_in(&s).await));
    drop(s);

    // Missing, unreadable, too short: the function starts (it calls nothing at start),
    // and every sign-in is refused with the reason until the secret is readable.
    let short = create("winmdm-token-key-short")
        .secret_string(base64::engine::general_purpose::STANDARD.encode([1u8; 16]))
        .send()
        .await
        .unwrap()
        .arn
        .unwrap();
    let garbage = create("winmdm-token-key-garbage")
        .secret_string("not base64 at all!")
        .send()
        .await
        .unwrap()
        .arn
        .unwrap();
    // A secret name works as well as its ARN; this one does not exist yet.
    let missing = "winmdm-token-key-later".to_owned();
    for (bad, expect) in [
        (missing.as_str(), "cannot read secret"),
        (short.as_str(), "at least 32 bytes"),
        (garbage.as_str(), "not base64"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let s = state(&[
            ("WINMDM_DATA_DIR", dir_str(dir.path())),
            ("WINMDM_TOKEN_KEY_SECRET_ARN", bad),
            ("WINMDM_SECRETSMANAGER_ENDPOINT", &moto.endpoint),
        ])
        .await
        .unwrap_or_else(|e| panic!("{bad}: did not start: {e}"));
        let err = try_sign_in(&s).await.expect_err("no key, no token");
        assert!(
            matches!(err, EnrollError::KeyUnavailable(_)),
            "{bad}: {err:?}"
        );
        assert!(err.to_string().contains(expect), "{bad}: {err}");
        if bad == missing {
            // A failed read is not kept: once the secret exists, the next sign-in reads it.
            create("winmdm-token-key-later")
                .secret_string(text)
                .send()
                .await
                .unwrap();
            let token = s.enrollment.sign_in(UPN, PASSWORD, None).await.unwrap();
            assert!(verifies(&key, &token));
        }
    }

    // Secrets Manager unreachable: the function still starts; the sign-in says why.
    let dir = tempfile::tempdir().unwrap();
    let s = state(&[
        ("WINMDM_DATA_DIR", dir_str(dir.path())),
        ("WINMDM_TOKEN_KEY_SECRET_ARN", &arn),
        ("WINMDM_SECRETSMANAGER_ENDPOINT", "http://127.0.0.1:1"),
    ])
    .await
    .expect("starts without calling Secrets Manager");
    let err = try_sign_in(&s).await.unwrap_err();
    assert!(err.to_string().contains("cannot read secret"), "{err}");
    drop(s);

    // WINMDM_TOKEN_KEY still works (local and development use).
    let dir = tempfile::tempdir().unwrap();
    let s = state(&[
        ("WINMDM_DATA_DIR", dir_str(dir.path())),
        ("WINMDM_TOKEN_KEY", text),
    ])
    .await
    .unwrap();
    assert!(verifies(&key, &sign_in(&s).await));
    drop(s);

    // On DynamoDB a function must say where the key is, or that it takes no tokens.
    let dir = tempfile::tempdir().unwrap();
    let on_dynamo = [
        ("WINMDM_DATA_DIR", dir_str(dir.path())),
        ("WINMDM_TABLE", "winmdm"),
        ("WINMDM_DYNAMODB_ENDPOINT", moto.endpoint.as_str()),
    ];
    let err = state(&on_dynamo)
        .await
        .err()
        .expect("refused without a key");
    assert!(
        err.to_string().contains("WINMDM_TOKEN_KEY_SECRET_ARN"),
        "{err}"
    );
    let mut off = on_dynamo.to_vec();
    off.push(("WINMDM_SIGN_IN_TOKENS", "off"));
    state(&off)
        .await
        .expect("a function that takes no tokens starts without the key");
    off.push(("WINMDM_TOKEN_KEY_SECRET_ARN", &arn));
    assert!(state(&off).await.is_err(), "off and a key contradict");
    let both = [
        ("WINMDM_DATA_DIR", dir_str(dir.path())),
        ("WINMDM_TOKEN_KEY", text),
        ("WINMDM_TOKEN_KEY_SECRET_ARN", &arn),
    ];
    assert!(state(&both).await.is_err(), "two keys are ambiguous");

    // With tokens off, the function's key is its own: its tokens verify nowhere else.
    let dir = tempfile::tempdir().unwrap();
    let s = state(&[
        ("WINMDM_DATA_DIR", dir_str(dir.path())),
        ("WINMDM_SIGN_IN_TOKENS", "off"),
    ])
    .await
    .unwrap();
    assert!(!verifies(&key, &sign_in(&s).await));
    assert!(!dir.path().join("token-key").exists());
}
