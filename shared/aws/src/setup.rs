//! The stack's CA setup, run by CloudFormation as a custom resource (the `ca-setup`
//! function): it makes sure the CA that signs device certificates has its certificate,
//! and writes the management domain's mutual-TLS truststore, so a deployment needs no
//! manual step between `sam deploy` and the first enrollment.
//!
//! - `CaMode: kms`: the CA certificate is a root self-signed through the stack's KMS key.
//!   It is made once: on every later Create/Update the truststore object is read back and
//!   reused as long as its certificate is the key's (a new root would orphan every
//!   enrolled device).
//! - `CaMode: pca`: the truststore is ACM PCA's CA certificate and chain.
//!
//! `Custom::WinmdmMigrate` brings a table written by an earlier version up to date
//! (`DynamoStore::backfill_listing`): its `Schema` property changes when a release needs
//! it, which makes CloudFormation run it again on that deploy.
//!
//! A second resource type, `Custom::WinmdmFirstUser`, creates the first enrollment user
//! from a UPN and a Secrets Manager secret holding the password (never a template
//! parameter), once: an existing user is left as it is.
//!
//! The truststore is written to a versioned bucket; the version id goes back to
//! CloudFormation, which hands it to the API Gateway domain, so the domain picks up a new
//! truststore on every change. Delete leaves bucket and object alone (the bucket is kept
//! on stack deletion: devices still chain to it).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::Duration;
use winmdm_core::ca::CaError;

use crate::kms_ca;
use crate::pem_certificates;

/// A CloudFormation custom resource request (the fields winmdm uses).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomResourceRequest {
    pub request_type: RequestType,
    #[serde(rename = "ResponseURL")]
    pub response_url: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    /// `Custom::WinmdmCaSetup` (the default) or `Custom::WinmdmFirstUser`.
    #[serde(default)]
    pub resource_type: String,
    #[serde(default)]
    pub physical_resource_id: Option<String>,
    #[serde(default)]
    pub resource_properties: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RequestType {
    Create,
    Update,
    Delete,
}

/// What the function PUTs to the request's `ResponseURL`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomResourceResponse {
    pub status: &'static str,
    pub reason: String,
    pub physical_resource_id: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    pub data: Value,
}

/// The resource's properties, as the template sets them.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SetupProperties {
    pub ca_mode: String,
    /// The KMS key (`kms`).
    #[serde(default)]
    pub key_id: Option<String>,
    /// The ACM PCA (`pca`).
    #[serde(default)]
    pub pca_arn: Option<String>,
    #[serde(default = "default_common_name")]
    pub common_name: String,
    /// Root validity in days (`kms`).
    #[serde(default)]
    pub root_validity_days: Option<String>,
    pub bucket: String,
    pub object_key: String,
}

fn default_common_name() -> String {
    "winmdm device root CA".into()
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("invalid resource properties: {0}")]
    Properties(String),
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    #[error(transparent)]
    Store(#[from] winmdm_core::store::StoreError),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("S3: {0}")]
    S3(String),
}

/// What the setup made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupOutput {
    /// The certificate that signs device certificates (PEM), for the functions.
    pub ca_pem: String,
    /// The truststore (PEM bundle), as written.
    pub truststore_pem: String,
    pub truststore_version: String,
}

/// The first user's properties.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FirstUserProperties {
    pub upn: String,
    /// The secret whose `SecretString` is the password.
    pub password_secret_arn: String,
}

/// The AWS clients (and the store, for the first user) the setup uses.
pub struct SetupClients {
    pub kms: aws_sdk_kms::Client,
    pub pca: aws_sdk_acmpca::Client,
    pub s3: aws_sdk_s3::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub store: Option<std::sync::Arc<dyn winmdm_core::store::Store>>,
    /// The same table, for the migrations (`Custom::WinmdmMigrate`).
    pub dynamo: Option<crate::DynamoStore>,
}

/// Runs one request; the response to send to CloudFormation, whatever happened (a
/// custom resource that never answers hangs the stack for an hour).
pub async fn handle(clients: &SetupClients, req: &CustomResourceRequest) -> CustomResourceResponse {
    let physical = req
        .physical_resource_id
        .clone()
        .unwrap_or_else(|| format!("winmdm-ca-setup-{}", req.logical_resource_id));
    let respond = |status, reason: String, data| CustomResourceResponse {
        status,
        reason,
        physical_resource_id: physical.clone(),
        stack_id: req.stack_id.clone(),
        request_id: req.request_id.clone(),
        logical_resource_id: req.logical_resource_id.clone(),
        data,
    };
    if req.resource_type == "Custom::WinmdmMigrate" {
        if req.request_type == RequestType::Delete {
            return respond("SUCCESS", "nothing to undo".into(), Value::Null);
        }
        let Some(dynamo) = &clients.dynamo else {
            return respond(
                "FAILED",
                "no table to migrate (WINMDM_TABLE)".into(),
                Value::Null,
            );
        };
        // Well inside the function's 15 minutes, so CloudFormation always gets an answer.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
        return match dynamo.backfill_listing(deadline).await {
            Ok(b) => respond(
                "SUCCESS",
                if b.complete {
                    format!("{} devices added to the listing of {}", b.added, b.devices)
                } else {
                    format!(
                        "{} devices added to the listing before the time limit; the rest \
                         are added at their next check-in",
                        b.added
                    )
                },
                serde_json::json!({ "Added": b.added, "Complete": b.complete }),
            ),
            Err(e) => respond("FAILED", e.to_string(), Value::Null),
        };
    }
    if req.resource_type == "Custom::WinmdmFirstUser" {
        if req.request_type == RequestType::Delete {
            return respond(
                "SUCCESS",
                "kept: the user may have devices".into(),
                Value::Null,
            );
        }
        let props: FirstUserProperties =
            match serde_json::from_value(req.resource_properties.clone()) {
                Ok(p) => p,
                Err(e) => {
                    return respond(
                        "FAILED",
                        format!("invalid resource properties: {e}"),
                        Value::Null,
                    );
                }
            };
        return match ensure_first_user(clients, &props).await {
            Ok(what) => respond(
                "SUCCESS",
                what.into(),
                serde_json::json!({ "Upn": props.upn }),
            ),
            Err(e) => respond("FAILED", e.to_string(), Value::Null),
        };
    }
    if req.request_type == RequestType::Delete {
        return respond(
            "SUCCESS",
            "kept: devices chain to this CA".into(),
            Value::Null,
        );
    }
    let props: SetupProperties = match serde_json::from_value(req.resource_properties.clone()) {
        Ok(p) => p,
        Err(e) => {
            return respond(
                "FAILED",
                format!("invalid resource properties: {e}"),
                Value::Null,
            );
        }
    };
    match ensure(clients, &props).await {
        Ok(out) => respond(
            "SUCCESS",
            "truststore written".into(),
            serde_json::json!({
                "CertificatePem": out.ca_pem,
                "TruststoreUri": format!("s3://{}/{}", props.bucket, props.object_key),
                "TruststoreVersion": out.truststore_version,
            }),
        ),
        Err(e) => respond("FAILED", e.to_string(), Value::Null),
    }
}

/// Makes sure the CA certificate exists and the truststore holds it.
pub async fn ensure(
    clients: &SetupClients,
    p: &SetupProperties,
) -> Result<SetupOutput, SetupError> {
    let (ca_pem, truststore_pem) = match p.ca_mode.as_str() {
        "kms" => {
            let key_id = p
                .key_id
                .as_deref()
                .ok_or_else(|| SetupError::Properties("CaMode kms needs KeyId".into()))?;
            let existing = read_object(&clients.s3, &p.bucket, &p.object_key).await?;
            let root = match existing
                .as_deref()
                .and_then(|pem| pem_certificates(pem).pop())
            {
                Some(der)
                    if kms_ca::is_self_signed_root_of(
                        &der,
                        &kms_ca::public_key(&clients.kms, key_id).await?,
                    ) =>
                {
                    der
                }
                _ => {
                    let days =
                        match p.root_validity_days.as_deref() {
                            None => 20 * 365,
                            Some(d) => d.trim().parse::<i64>().ok().filter(|d| *d > 0).ok_or_else(
                                || SetupError::Properties(format!("RootValidityDays {d:?}")),
                            )?,
                        };
                    kms_ca::create_root(&clients.kms, key_id, &p.common_name, Duration::days(days))
                        .await?
                }
            };
            let pem = kms_ca::pem(&root);
            (pem.clone(), pem)
        }
        "pca" => {
            let arn = p
                .pca_arn
                .as_deref()
                .ok_or_else(|| SetupError::Properties("CaMode pca needs PcaArn".into()))?;
            let out = clients
                .pca
                .get_certificate_authority_certificate()
                .certificate_authority_arn(arn)
                .send()
                .await
                .map_err(|e| {
                    CaError::Internal(aws_sdk_acmpca::error::DisplayErrorContext(&e).to_string())
                })?;
            let cert = out
                .certificate
                .ok_or_else(|| CaError::Internal("the CA has no certificate yet".into()))?;
            let mut bundle = cert.trim().to_owned();
            bundle.push('\n');
            if let Some(chain) = out.certificate_chain {
                bundle.push_str(chain.trim());
                bundle.push('\n');
            }
            (cert, bundle)
        }
        other => {
            return Err(SetupError::Properties(format!(
                "CaMode must be pca or kms, not {other:?}"
            )));
        }
    };
    let version = clients
        .s3
        .put_object()
        .bucket(&p.bucket)
        .key(&p.object_key)
        .content_type("application/x-pem-file")
        .body(truststore_pem.clone().into_bytes().into())
        .send()
        .await
        .map_err(|e| SetupError::S3(aws_sdk_s3::error::DisplayErrorContext(&e).to_string()))?
        .version_id
        .ok_or_else(|| {
            SetupError::S3(format!(
                "bucket {} returned no version id: enable versioning",
                p.bucket
            ))
        })?;
    Ok(SetupOutput {
        ca_pem,
        truststore_pem,
        truststore_version: version,
    })
}

/// The object's text, or `None` if there is none.
async fn read_object(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Option<String>, SetupError> {
    match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => {
            let bytes = out
                .body
                .collect()
                .await
                .map_err(|e| SetupError::S3(e.to_string()))?
                .into_bytes();
            Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
        Err(e) => Err(SetupError::S3(
            aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
        )),
    }
}

/// PUTs the response to CloudFormation's pre-signed S3 URL (HTTPS, system roots; an
/// empty Content-Type, which the pre-signed URL's signature expects).
pub async fn put_response(url: &str, resp: &CustomResourceResponse) -> Result<(), String> {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let body = serde_json::to_vec(resp).map_err(|e| e.to_string())?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("loading the system's root certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Full<Bytes>>(https);
    let req = hyper::Request::put(url)
        .header("content-type", "")
        .header("content-length", body.len())
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let res = client.request(req).await.map_err(|e| e.to_string())?;
    let status = res.status();
    if status.is_success() {
        Ok(())
    } else {
        let text = res
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        Err(format!("HTTP {status}: {text}"))
    }
}

/// Creates the first user unless a user with that UPN exists (its password is then left
/// alone: the secret is the initial password, not a way to reset one).
pub async fn ensure_first_user(
    clients: &SetupClients,
    p: &FirstUserProperties,
) -> Result<&'static str, SetupError> {
    let store = clients
        .store
        .as_ref()
        .ok_or_else(|| SetupError::Properties("no table configured (WINMDM_TABLE)".into()))?;
    let password =
        match crate::secrets::get_secret_value(&clients.secrets, &p.password_secret_arn).await? {
            crate::secrets::SecretValue::String(s) => s,
            crate::secrets::SecretValue::Binary(_) => {
                return Err(SetupError::Properties(
                    "the password secret must be a SecretString".into(),
                ));
            }
        };
    let upn =
        winmdm_core::model::check_new_user(&p.upn, &password).map_err(SetupError::Properties)?;
    if store.get_user(&upn).await?.is_some() {
        return Ok("the user exists; left as it is");
    }
    // argon2id (≈ 19 MiB, tens of ms): off the executor.
    let hash = tokio::task::spawn_blocking(move || winmdm_core::password::hash_password(&password))
        .await
        .map_err(|e| SetupError::Properties(e.to_string()))?
        .map_err(SetupError::Properties)?;
    let user = winmdm_core::model::User {
        upn,
        password_hash: hash,
        created_at: time::OffsetDateTime::now_utc(),
    };
    match store.create_user(&user).await {
        Ok(()) => Ok("user created"),
        // Created in between (a retried request): the same outcome.
        Err(winmdm_core::store::StoreError::Conflict(_)) => Ok("the user exists; left as it is"),
        Err(e) => Err(e.into()),
    }
}
