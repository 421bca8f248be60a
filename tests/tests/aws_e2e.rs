//! The whole flow with `winmdm-local` on the AWS adapters (DynamoDB and ACM Private CA)
//! against moto: enrollment, then a management session delivering a queued command.

use serde_json::json;
use winmdm_e2e::device::{CsrSignature, CsrSubject, Device};
use winmdm_e2e::dm::Reply;
use winmdm_e2e::messages::{self, Credentials};
use winmdm_e2e::moto::Moto;
use winmdm_e2e::{EnrolledDevice, TEST_PASSWORD, TEST_UPN, TestServer};
use x509_parser::prelude::{FromDer, X509Certificate};

#[tokio::test]
async fn enroll_and_manage_on_dynamodb_and_acm_pca() {
    winmdm_e2e::moto::aws_test_environment();
    let moto = Moto::start().await;
    let ca_arn = moto.root_ca().await;
    let endpoint = moto.endpoint.clone();
    let s = TestServer::start_with(|o| {
        o.auth_policy = winmdm_core::config::PreferredAuth::OnPremise;
        o.table = Some("winmdm-e2e".into());
        o.dynamodb_endpoint = Some(endpoint.clone());
        o.create_table = true;
        o.pca_arn = Some(ca_arn.clone());
        o.pca_endpoint = Some(endpoint.clone());
        o.region = Some("us-east-1".into());
    })
    .await;
    s.create_user(TEST_UPN, TEST_PASSWORD).await;

    let device = Device::new();
    // moto's PCA parses the CSR with `cryptography`, which refuses Windows' subject.
    let csr = device.csr(
        CsrSignature::Sha256,
        CsrSubject::Plain(device.device_id.clone()),
    );
    let ctx = messages::context_items(&device.device_id, &device.hw_dev_id, "Full");
    let creds = Credentials::Password {
        username: TEST_UPN.into(),
        password: TEST_PASSWORD.into(),
    };
    let msg = messages::request_security_token("urn:uuid:aws", &s.enroll_url(), &creds, &csr, &ctx);
    let resp = s.http.soap(&s.enroll_url(), &msg).await;
    let enrolled = EnrolledDevice::from_response(device, &resp);

    // The certificate chains to the PCA's root that the provisioning doc installs.
    let (_, root) = X509Certificate::from_der(&enrolled.provisioned.root_der).unwrap();
    let (_, cert) = X509Certificate::from_der(&enrolled.provisioned.client_der).unwrap();
    cert.verify_signature(Some(root.public_key()))
        .expect("issued by the PCA");
    assert_eq!(cert.public_key().raw, enrolled.device.spki_der().as_slice());

    // The device is in DynamoDB, and so is its command queue.
    let d = s
        .admin("GET", &format!("/devices/{}", enrolled.id()), None)
        .await
        .json();
    assert_eq!(
        d["cert_thumbprint"],
        enrolled.provisioned.client_thumbprint.as_str()
    );
    assert_eq!(s.device_count().await, 1);
    let r = s
        .admin(
            "POST",
            &format!("/devices/{}/commands", enrolled.id()),
            Some(json!({"verb": "Get", "target": "./DevDetail/SwV"})),
        )
        .await;
    assert_eq!(r.status, 202);
    let id = r.json()["id"].as_str().unwrap().to_owned();

    let mut c = enrolled.dm_client();
    c.start_session();
    let xml = c.message(|c| c.package1("user", &enrolled.device.hw_dev_id), true);
    let r = s.syncml(&xml).await;
    let reply = Reply::parse(&r.body);
    assert_eq!(reply.header_status().data, "200");
    assert_eq!(reply.item_commands().len(), 1);
    let xml = c.message(
        |c| c.answer(&reply, |_| 200, |_| "10.0.26100.1".into()),
        true,
    );
    let reply = Reply::parse(&s.syncml(&xml).await.body);
    assert!(reply.ends_session());
    let cmd = s
        .admin(
            "GET",
            &format!("/devices/{}/commands/{id}", enrolled.id()),
            None,
        )
        .await
        .json();
    assert_eq!(cmd["state"], "succeeded");
    assert_eq!(cmd["results"][0]["data"], "10.0.26100.1");
    let d = s
        .admin("GET", &format!("/devices/{}", enrolled.id()), None)
        .await
        .json();
    assert_eq!(d["dm_info"]["model"], "Surface Laptop 7");

    // DynamoDB goes away: enrollment answers s:EnrollmentServer, not a crash.
    drop(moto);
    let other = Device::new();
    let csr = other.csr(
        CsrSignature::Sha256,
        CsrSubject::Plain(other.device_id.clone()),
    );
    let ctx = messages::context_items(&other.device_id, &other.hw_dev_id, "Full");
    let msg =
        messages::request_security_token("urn:uuid:aws2", &s.enroll_url(), &creds, &csr, &ctx);
    let resp = s.http.soap(&s.enroll_url(), &msg).await;
    assert_eq!(
        winmdm_e2e::verify::fault_subcode(&resp),
        "s:EnrollmentServer"
    );
    s.shutdown().await;
}

/// The same flow with the CA key in KMS (moto): winmdm-local makes the CA certificate
/// through KMS once, the device enrolls with Windows' own CSR subject, its certificate
/// chains to that root (which the provisioning doc installs), and a management session
/// runs on DynamoDB.
#[tokio::test]
async fn enroll_and_manage_on_dynamodb_and_a_kms_ca() {
    winmdm_e2e::moto::aws_test_environment();
    let moto = Moto::start().await;
    let endpoint = moto.endpoint.clone();
    let kms = winmdm_aws::aws_sdk_kms::Client::new(&moto.sdk_config().await);
    let key_id = kms
        .create_key()
        .key_spec(winmdm_aws::aws_sdk_kms::types::KeySpec::Rsa2048)
        .key_usage(winmdm_aws::aws_sdk_kms::types::KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("kms-ca.pem");
    let start = |ca_path: std::path::PathBuf, key_id: String, endpoint: String| {
        TestServer::start_with(move |o| {
            o.auth_policy = winmdm_core::config::PreferredAuth::OnPremise;
            o.table = Some("winmdm-kms".into());
            o.dynamodb_endpoint = Some(endpoint.clone());
            o.create_table = true;
            o.kms_key_id = Some(key_id.clone());
            o.kms_ca_cert = Some(ca_path.clone());
            o.kms_endpoint = Some(endpoint.clone());
            o.region = Some("us-east-1".into());
        })
    };
    let s = start(ca_path.clone(), key_id.clone(), endpoint.clone()).await;
    let made = std::fs::read_to_string(&ca_path).expect("the CA certificate was written");
    s.create_user(TEST_UPN, TEST_PASSWORD).await;

    let device = Device::new();
    let csr = device.csr(CsrSignature::Sha256, CsrSubject::Windows);
    let ctx = messages::context_items(&device.device_id, &device.hw_dev_id, "Full");
    let creds = Credentials::Password {
        username: TEST_UPN.into(),
        password: TEST_PASSWORD.into(),
    };
    let msg = messages::request_security_token("urn:uuid:kms", &s.enroll_url(), &creds, &csr, &ctx);
    let resp = s.http.soap(&s.enroll_url(), &msg).await;
    let enrolled = EnrolledDevice::from_response(device, &resp);
    assert_eq!(
        winmdm_aws::pem_certificates(&made),
        vec![enrolled.provisioned.root_der.clone()],
        "the provisioning doc installs the root made through KMS"
    );
    let (_, root) = X509Certificate::from_der(&enrolled.provisioned.root_der).unwrap();
    let (_, cert) = X509Certificate::from_der(&enrolled.provisioned.client_der).unwrap();
    cert.verify_signature(Some(root.public_key()))
        .expect("signed by the KMS key");
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        enrolled.id()
    );

    let mut c = enrolled.dm_client();
    c.start_session();
    let xml = c.message(|c| c.package1("user", &enrolled.device.hw_dev_id), true);
    let reply = Reply::parse(&s.syncml(&xml).await.body);
    assert_eq!(reply.header_status().data, "200");
    s.shutdown().await;

    // A restart reads the certificate it made; it does not make another.
    let s = start(ca_path.clone(), key_id, endpoint).await;
    assert_eq!(std::fs::read_to_string(&ca_path).unwrap(), made);
    s.shutdown().await;
}
