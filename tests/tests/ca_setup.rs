//! The stack's CA setup (the `CaSetup` custom resource) against moto's KMS, ACM PCA and
//! S3: the KMS root is made once and kept across updates, the truststore is written to a
//! versioned bucket with a new version each time, PCA mode publishes the PCA's chain, bad
//! properties fail with a reason, and the answer reaches CloudFormation's pre-signed URL
//! as it expects it.

use serde_json::{Value, json};
use winmdm_aws::aws_sdk_kms as kms;
use winmdm_aws::aws_sdk_s3 as s3;
use winmdm_aws::setup::{self, CustomResourceRequest, SetupClients};
use winmdm_e2e::moto::Moto;
use x509_parser::prelude::{FromDer, X509Certificate};

const BUCKET: &str = "winmdm-truststore";
const OBJECT: &str = "truststore.pem";

fn request(kind: &str, props: Value) -> CustomResourceRequest {
    serde_json::from_value(json!({
        "RequestType": kind,
        "ResponseURL": "http://127.0.0.1:9/unused",
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/winmdm/1",
        "RequestId": "r1",
        "LogicalResourceId": "CaSetup",
        "PhysicalResourceId": if kind == "Create" { Value::Null } else { json!("winmdm-ca-setup-CaSetup") },
        "ResourceProperties": props,
    }))
    .expect("a CloudFormation request")
}

async fn truststore(s3: &s3::Client) -> String {
    let out = s3
        .get_object()
        .bucket(BUCKET)
        .key(OBJECT)
        .send()
        .await
        .unwrap();
    String::from_utf8(out.body.collect().await.unwrap().into_bytes().to_vec()).unwrap()
}

async fn signing_key(kms: &kms::Client) -> String {
    kms.create_key()
        .key_spec(kms::types::KeySpec::Rsa2048)
        .key_usage(kms::types::KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id
}

#[tokio::test]
async fn ca_setup_makes_the_kms_root_once_and_publishes_the_truststore() {
    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let clients = setup_clients(&sdk, &moto.endpoint);
    clients
        .s3
        .create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    clients
        .s3
        .put_bucket_versioning()
        .bucket(BUCKET)
        .versioning_configuration(
            s3::types::VersioningConfiguration::builder()
                .status(s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let key = signing_key(&clients.kms).await;
    let props = |key: &str| {
        json!({"CaMode": "kms", "KeyId": key, "Bucket": BUCKET, "ObjectKey": OBJECT,
               "CommonName": "Contoso device CA", "RootValidityDays": "3650"})
    };

    let created = setup::handle(&clients, &request("Create", props(&key))).await;
    assert_eq!(created.status, "SUCCESS", "{}", created.reason);
    let pem = created.data["CertificatePem"].as_str().unwrap().to_owned();
    assert_eq!(
        truststore(&clients.s3).await,
        pem,
        "the truststore is the root"
    );
    let der = winmdm_core::ca::pem_certificates(&pem).pop().unwrap();
    let (_, root) = X509Certificate::from_der(&der).unwrap();
    root.verify_signature(None)
        .expect("self-signed through KMS");
    assert!(root.is_ca());
    assert!(root.subject().to_string().contains("Contoso device CA"));
    let public = clients
        .kms
        .get_public_key()
        .key_id(&key)
        .send()
        .await
        .unwrap()
        .public_key
        .unwrap();
    assert_eq!(
        root.public_key().raw,
        public.as_ref(),
        "the KMS key's certificate"
    );
    assert_eq!(
        created.data["TruststoreUri"],
        format!("s3://{BUCKET}/{OBJECT}")
    );
    let v1 = created.data["TruststoreVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!v1.is_empty());

    // The functions read that certificate from the truststore on first use and issue
    // under it.
    let ca = winmdm_aws::KmsCa::with_s3_certificate(
        clients.kms.clone(),
        key.clone(),
        clients.s3.clone(),
        BUCKET,
        OBJECT,
    );
    winmdm_e2e::ca_conformance::issues_certificates_that_chain(&ca, true).await;
    let chain = winmdm_core::ca::CertificateAuthority::chain(&ca)
        .await
        .unwrap();
    assert_eq!(chain.root_der, der);
    let issued_before = winmdm_e2e::ca_conformance::certify(
        &ca,
        &winmdm_e2e::device::Device::new(),
        time::Duration::days(1),
    )
    .await
    .unwrap()
    .der;

    // A certificate planted in the truststore object is not trusted: the functions use
    // it only if it is the KMS key's own self-signed root.
    let planted_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let planted = winmdm_core::cert_profile::device_root(
        "Contoso device CA",
        time::OffsetDateTime::now_utc(),
        time::Duration::days(1),
    )
    .self_signed(&planted_key)
    .unwrap();
    clients
        .s3
        .put_object()
        .bucket(BUCKET)
        .key(OBJECT)
        .body(winmdm_aws::kms_ca::pem(planted.der()).into_bytes().into())
        .send()
        .await
        .unwrap();
    let fooled = winmdm_aws::KmsCa::with_s3_certificate(
        clients.kms.clone(),
        key.clone(),
        clients.s3.clone(),
        BUCKET,
        OBJECT,
    );
    let err = winmdm_core::ca::CertificateAuthority::chain(&fooled)
        .await
        .expect_err("a planted root");
    assert!(err.to_string().contains("refusing to trust"), "{err}");
    // CaSetup puts the key's root back (and the functions trust it again).
    let repaired = setup::handle(&clients, &request("Update", props(&key))).await;
    assert_eq!(repaired.status, "SUCCESS", "{}", repaired.reason);
    let repaired_pem = repaired.data["CertificatePem"].as_str().unwrap().to_owned();
    let repaired_der = winmdm_core::ca::pem_certificates(&repaired_pem)
        .pop()
        .unwrap();
    let (_, repaired_root) = X509Certificate::from_der(&repaired_der).unwrap();
    // A new root for the same key and name: certificates already issued still chain.
    assert_eq!(repaired_root.public_key().raw, public.as_ref());
    assert_eq!(repaired_root.subject(), root.subject());
    let (_, issued) = X509Certificate::from_der(&issued_before).unwrap();
    issued
        .verify_signature(Some(repaired_root.public_key()))
        .expect("a device certificate issued before still verifies");
    let pem = repaired_pem;

    // An update (any stack change) keeps the root: enrolled devices still chain to it.
    let updated = setup::handle(&clients, &request("Update", props(&key))).await;
    assert_eq!(updated.status, "SUCCESS", "{}", updated.reason);
    assert_eq!(updated.data["CertificatePem"], pem.as_str());
    assert_eq!(updated.physical_resource_id, created.physical_resource_id);
    assert_ne!(
        updated.data["TruststoreVersion"],
        v1.as_str(),
        "a new version"
    );

    // A different key gets its own root.
    let other = signing_key(&clients.kms).await;
    let rekeyed = setup::handle(&clients, &request("Update", props(&other))).await;
    assert_eq!(rekeyed.status, "SUCCESS", "{}", rekeyed.reason);
    assert_ne!(rekeyed.data["CertificatePem"], pem.as_str());

    // PCA mode: the truststore is the PCA's certificate.
    let arn = moto.root_ca().await;
    let pca = setup::handle(
        &clients,
        &request(
            "Update",
            json!({"CaMode": "pca", "PcaArn": arn, "Bucket": BUCKET, "ObjectKey": OBJECT}),
        ),
    )
    .await;
    assert_eq!(pca.status, "SUCCESS", "{}", pca.reason);
    let pca_cert = clients
        .pca
        .get_certificate_authority_certificate()
        .certificate_authority_arn(&arn)
        .send()
        .await
        .unwrap()
        .certificate
        .unwrap();
    assert_eq!(
        winmdm_core::ca::pem_certificates(&truststore(&clients.s3).await),
        winmdm_core::ca::pem_certificates(&pca_cert)
    );

    // Bad properties fail with the reason (CloudFormation shows it); Delete keeps all.
    let bad = setup::handle(
        &clients,
        &request(
            "Create",
            json!({"CaMode": "kms", "Bucket": BUCKET, "ObjectKey": OBJECT}),
        ),
    )
    .await;
    assert_eq!(bad.status, "FAILED");
    assert!(bad.reason.contains("KeyId"), "{}", bad.reason);
    let wrong_mode = setup::handle(
        &clients,
        &request(
            "Create",
            json!({"CaMode": "hsm", "Bucket": BUCKET, "ObjectKey": OBJECT}),
        ),
    )
    .await;
    assert_eq!(wrong_mode.status, "FAILED");
    let deleted = setup::handle(&clients, &request("Delete", Value::Null)).await;
    assert_eq!(deleted.status, "SUCCESS");
    assert!(!truststore(&clients.s3).await.is_empty(), "kept");
}

/// The answer goes to the pre-signed URL as a PUT with an empty Content-Type and the
/// documented JSON fields.
#[tokio::test]
async fn the_answer_reaches_the_presigned_url() {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let tx = std::sync::Mutex::new(Some(tx));
        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let tx = tx.lock().unwrap().take();
            async move {
                let method = req.method().clone();
                let ct = req
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned());
                let path = req.uri().to_string();
                let body = req.into_body().collect().await.unwrap().to_bytes();
                if let Some(tx) = tx {
                    let _ = tx.send((method, ct, path, body));
                }
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::new())))
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
            .await;
    });
    let mut req = request("Delete", Value::Null);
    req.response_url = format!("http://{addr}/cfn-response?X-Amz-Signature=abc");
    let clients_unused = {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .load()
            .await;
        SetupClients {
            kms: kms::Client::new(&sdk),
            pca: winmdm_aws::acmpca_client(&sdk, None),
            s3: winmdm_aws::s3_client(&sdk, None),
            secrets: winmdm_aws::secrets::secretsmanager_client(&sdk, None),
            store: None,
            dynamo: None,
        }
    };
    let resp = setup::handle(&clients_unused, &req).await;
    setup::put_response(&req.response_url, &resp).await.unwrap();
    let (method, ct, path, body) = rx.await.unwrap();
    assert_eq!(method, hyper::Method::PUT);
    assert_eq!(ct.as_deref(), Some(""));
    assert_eq!(path, "/cfn-response?X-Amz-Signature=abc");
    let v: Value = serde_json::from_slice(&body).unwrap();
    for k in [
        "Status",
        "Reason",
        "PhysicalResourceId",
        "StackId",
        "RequestId",
        "LogicalResourceId",
    ] {
        assert!(v.get(k).is_some(), "{k} in {v}");
    }
    assert_eq!(v["Status"], "SUCCESS");
    assert_eq!(v["PhysicalResourceId"], "winmdm-ca-setup-CaSetup");
}

/// The first user from a UPN and a Secrets Manager secret: created once with an argon2id
/// hash of the secret, never overwritten, refused with a reason when the password is too
/// short.
#[tokio::test]
async fn first_user_from_a_secret() {
    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let store = std::sync::Arc::new(moto.dynamo_store("winmdm-first-user").await);
    let clients = SetupClients {
        store: Some(store.clone()),
        ..setup_clients(&sdk, &moto.endpoint)
    };
    let secret = |value: &str| {
        let c = clients.secrets.clone();
        let value = value.to_owned();
        async move {
            c.create_secret()
                .name(format!("pw-{}", uuid_like()))
                .secret_string(value)
                .send()
                .await
                .unwrap()
                .arn
                .unwrap()
        }
    };
    let first_user = |upn: &str, arn: &str| {
        let mut r = request("Create", json!({"Upn": upn, "PasswordSecretArn": arn}));
        r.resource_type = "Custom::WinmdmFirstUser".into();
        r
    };
    let arn = secret("a long generated passphrase").await;
    let created = setup::handle(&clients, &first_user(" Alice@Example.com ", &arn)).await;
    assert_eq!(created.status, "SUCCESS", "{}", created.reason);
    assert_eq!(created.reason, "user created");
    use winmdm_core::store::Store as _;
    let user = store
        .get_user("alice@example.com")
        .await
        .unwrap()
        .expect("stored");
    assert!(winmdm_core::password::verify_password(
        b"a long generated passphrase",
        Some(&user.password_hash)
    ));

    // Again (a stack update), even with another secret: the user is left alone.
    let other = secret("another passphrase entirely").await;
    let again = setup::handle(&clients, &first_user("alice@example.com", &other)).await;
    assert_eq!(again.status, "SUCCESS", "{}", again.reason);
    let still = store.get_user("alice@example.com").await.unwrap().unwrap();
    assert_eq!(still.password_hash, user.password_hash);

    let short = secret("short").await;
    let refused = setup::handle(&clients, &first_user("bob@example.com", &short)).await;
    assert_eq!(refused.status, "FAILED");
    assert!(refused.reason.contains("at least"), "{}", refused.reason);
    assert!(store.get_user("bob@example.com").await.unwrap().is_none());
    let missing = setup::handle(
        &clients,
        &first_user(
            "bob@example.com",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:nope",
        ),
    )
    .await;
    assert_eq!(missing.status, "FAILED");
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A table written before the device listing index: the migration gives every device its
/// listing entry and, the table having no fleet counters, counts its devices once; run
/// again (the next deploy) it changes nothing.
#[tokio::test]
async fn migration_backfills_the_listing_and_counters() {
    use aws_sdk_dynamodb::types::AttributeValue as Av;
    use winmdm_core::store::Store as _;
    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let store = moto.dynamo_store("winmdm-migrate").await;
    let raw = aws_sdk_dynamodb::Client::new(&sdk);
    // Two devices as the previous version stored them: data, GSI1 `DEVICES`, no `LPK`.
    for id in ["OLD-DEVICE-1", "OLD-DEVICE-2"] {
        let d = winmdm_e2e::conformance::device(id, Some(&format!("HW-{id}")));
        raw.put_item()
            .table_name("winmdm-migrate")
            .item("PK", Av::S(format!("DEV#{id}")))
            .item("SK", Av::S("D".into()))
            .item("data", Av::S(serde_json::to_string(&d).unwrap()))
            .item("GSI1PK", Av::S("DEVICES".into()))
            .item("GSI1SK", Av::S(id.into()))
            .item("version", Av::N("3".into()))
            .send()
            .await
            .unwrap();
    }
    assert!(
        winmdm_core::device_listing::all(&store)
            .await
            .unwrap()
            .is_empty(),
        "not listed before the migration"
    );
    let clients = SetupClients {
        dynamo: Some(store.clone()),
        ..setup_clients(&sdk, &moto.endpoint)
    };
    let mut migrate = request("Create", json!({"Schema": "2"}));
    migrate.resource_type = "Custom::WinmdmMigrate".into();
    let done = setup::handle(&clients, &migrate).await;
    assert_eq!(done.status, "SUCCESS", "{}", done.reason);
    assert_eq!(done.data["Added"], 2);
    let listed: Vec<String> = winmdm_core::device_listing::all(&store)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(listed, ["OLD-DEVICE-1", "OLD-DEVICE-2"]);
    let o = overview(&store).await;
    assert_eq!(o.by_status["enrolled"], 2);
    assert_eq!(o.last_seen.never, 2);
    // A device write after the migration (conditional on the version it kept) succeeds
    // and moves the device in the listing and the counters.
    let seen = time::OffsetDateTime::now_utc();
    store
        .save_management(&winmdm_core::session::ManagementUpdate {
            device_id: "OLD-DEVICE-1".into(),
            device: winmdm_core::session::DevicePatch {
                last_seen_at: Some(seen),
                ..Default::default()
            },
            session: winmdm_core::session::SessionWrite::Keep,
            commands: vec![],
            profiles: vec![],
        })
        .await
        .unwrap();
    let first = &winmdm_core::device_listing::all(&store).await.unwrap()[0];
    assert_eq!(
        first.last_seen_at.map(|t| t.unix_timestamp()),
        Some(seen.unix_timestamp())
    );
    assert_eq!(overview(&store).await.last_seen.never, 1);

    migrate.request_type = serde_json::from_value(json!("Update")).unwrap();
    let again = setup::handle(&clients, &migrate).await;
    assert_eq!(again.status, "SUCCESS", "{}", again.reason);
    assert_eq!(again.data["Added"], 0);
    assert_eq!(again.data["Complete"], true);
    let o = overview(&store).await;
    assert_eq!(o.by_status["enrolled"], 2, "counted once");
}

async fn overview(store: &winmdm_aws::DynamoStore) -> winmdm_core::fleet_stats::Overview {
    use winmdm_core::store::Store as _;
    let now = time::OffsetDateTime::now_utc();
    let counters = store
        .read_counters(&winmdm_core::fleet_stats::overview_ranges(now))
        .await
        .unwrap();
    winmdm_core::fleet_stats::Overview::from_counters(now, &counters)
}

/// The custom resources' clients on moto (S3 path-style at its endpoint), no store.
fn setup_clients(sdk: &winmdm_aws::SdkConfig, endpoint: &str) -> SetupClients {
    SetupClients {
        kms: kms::Client::new(sdk),
        pca: winmdm_aws::acmpca_client(sdk, None),
        s3: winmdm_aws::s3_client(sdk, Some(endpoint)),
        secrets: winmdm_aws::secrets::secretsmanager_client(sdk, None),
        store: None,
        dynamo: None,
    }
}
