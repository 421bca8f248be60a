//! Everything a handler needs, built once per process (per Lambda cold start).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rand::RngCore;
use winmdm_core::ca::CertificateAuthority;
use winmdm_core::clock::{Clock, SystemClock};
use winmdm_core::config::EnrollmentConfig;
use winmdm_core::enrollment::EnrollmentService;
use winmdm_core::management::{ManagementConfig, ManagementService};
use winmdm_core::store::Store;
use winmdm_core::token::{KeyFetch, TokenKey};
#[cfg(feature = "embedded")]
use winmdm_embedded::{LocalCa, RedbStore};

/// The AWS configuration the SDK clients are made from (nothing without the AWS adapters).
#[cfg(feature = "aws")]
type Sdk = winmdm_aws::SdkConfig;
#[cfg(not(feature = "aws"))]
type Sdk = ();

/// Whether this build has a store / a certificate authority at all (see `unconfigured`).
const HAS_STORE: bool = cfg!(any(feature = "dynamodb", feature = "embedded"));
const HAS_CA: bool = cfg!(any(feature = "pca", feature = "kms", feature = "embedded"));

/// How admin API callers are authenticated.
#[derive(Clone)]
pub enum AdminAuth {
    /// `Authorization: Bearer <token>`, compared in constant time.
    Bearer(String),
    /// API Gateway already authorised the caller (IAM); the handler trusts it.
    Gateway,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminAuth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            AdminAuth::Gateway => f.write_str("Gateway"),
        }
    }
}

pub struct AppState {
    pub enrollment: EnrollmentService,
    pub management: ManagementService,
    pub store: Arc<dyn Store>,
    pub admin_auth: AdminAuth,
    /// The certificate authority (its chain is what devices chain to: the mTLS truststore).
    pub ca: Arc<dyn CertificateAuthority>,
    /// The web console (`/console/`), when it has a way to sign admins in.
    pub console: Option<crate::console::ConsoleConfig>,
    /// The console's session key when not read from a secret: derived from the sign-in
    /// token key (in the data directory locally), under its own label; `None` while that
    /// key is still to be fetched.
    console_key: Option<crate::console::session::SessionKey>,
    /// The terms-of-use page's key: the same derivation, made when first needed.
    page_key: tokio::sync::OnceCell<crate::console::session::SessionKey>,
    /// Entra ID enrollment's terms-of-use text, when Entra enrollment is on.
    pub entra_terms: Option<String>,
    /// `WINMDM_CONSOLE_KEY_SECRET_ARN`: the deployed console's key, read on first use.
    #[cfg(feature = "secrets")]
    console_key_secret: Option<winmdm_aws::secrets::Secret>,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] winmdm_core::store::StoreError),
    #[cfg(feature = "embedded")]
    #[error("certificate authority: {0}")]
    Ca(#[from] winmdm_embedded::ca::LocalCaError),
    #[error("ACM Private CA: {0}")]
    Pca(#[from] winmdm_core::ca::CaError),
}

/// Where the store and CA live when not embedded.
#[derive(Debug, Clone, Default)]
pub struct AwsBackends {
    pub region: Option<String>,
    /// DynamoDB table; `None` keeps the embedded store.
    pub table: Option<String>,
    /// `WINMDM_CHECKIN_COUNTS=stream`: the table's stream keeps the check-in counters
    /// (`winmdm_aws::checkin_counts`), as the template sets it up.
    pub checkin_counts_from_stream: bool,
    pub dynamodb_endpoint: Option<String>,
    /// ACM Private CA ARN; `None` keeps the local CA (or the KMS CA below).
    pub pca_arn: Option<String>,
    pub pca_endpoint: Option<String>,
    /// A CA whose key is in KMS, instead of ACM PCA or the local CA.
    pub kms: Option<KmsCaConfig>,
}

/// The KMS-keyed CA: the key, and the CA certificate made for it once (at deploy time,
/// or by `winmdm-local --kms-ca-cert`), so starting a function calls nothing.
#[derive(Debug, Clone)]
pub struct KmsCaConfig {
    pub key_id: String,
    pub certificate: KmsCaCertificate,
    pub endpoint: Option<String>,
}

/// Where the KMS CA's certificate comes from.
#[derive(Debug, Clone)]
pub enum KmsCaCertificate {
    Given {
        /// The CA certificate (DER) whose public key is the KMS key's.
        ca_der: Vec<u8>,
        /// The root above it, when the CA certificate was issued by another CA (an ACM
        /// PCA root); `None` when it is self-signed.
        root_der: Option<Vec<u8>>,
    },
    /// The one PEM certificate (a self-signed root) in an S3 object, read on first use:
    /// the stack's truststore, which its `CaSetup` writes.
    S3 {
        bucket: String,
        key: String,
        endpoint: Option<String>,
    },
}

impl AwsBackends {
    /// Whether this build will make an AWS client for these settings: a function built
    /// without a store or a CA ignores the table or CA it is told about (discovery is
    /// deployed with the same settings as the rest and calls neither).
    fn needs_sdk(&self) -> bool {
        (HAS_STORE && self.table.is_some())
            || (HAS_CA && (self.pca_arn.is_some() || self.kms.is_some()))
    }
}

/// The error for a setting this function's build cannot act on.
#[cfg(not(all(
    feature = "dynamodb",
    feature = "pca",
    feature = "kms",
    feature = "secrets"
)))]
fn unbuilt(setting: &str, feature: &str) -> InitError {
    InitError::Config(format!(
        "{setting} is set, but this function was built without its adapter (the \
         `{feature}` feature of winmdm-http)"
    ))
}

/// The AWS configuration, when `needed` (and built in).
#[cfg(feature = "aws")]
async fn load_sdk(needed: bool, region: Option<String>) -> Option<Sdk> {
    match needed {
        true => Some(winmdm_aws::sdk_config(region, None).await),
        false => None,
    }
}

#[cfg(not(feature = "aws"))]
async fn load_sdk(_needed: bool, _region: Option<String>) -> Option<Sdk> {
    None
}

/// The store this build and these settings call for: DynamoDB when a table is named,
/// else the embedded store; [`crate::unconfigured::NoStore`] for a build with neither.
fn open_store(
    data_dir: &Path,
    aws: &AwsBackends,
    sdk: Option<&Sdk>,
) -> Result<Arc<dyn Store>, InitError> {
    let _ = (data_dir, sdk);
    if !HAS_STORE {
        return Ok(Arc::new(crate::unconfigured::NoStore));
    }
    match &aws.table {
        #[cfg(feature = "dynamodb")]
        Some(table) => {
            let sdk = sdk.expect("the AWS configuration is loaded when a table is named");
            let client = winmdm_aws::dynamodb_client(sdk, aws.dynamodb_endpoint.as_deref());
            Ok(Arc::new(
                winmdm_aws::DynamoStore::new(client, table.clone())
                    .with_checkin_counts_from_stream(aws.checkin_counts_from_stream),
            ))
        }
        #[cfg(not(feature = "dynamodb"))]
        Some(_) => Err(unbuilt("WINMDM_TABLE", "dynamodb")),
        #[cfg(feature = "embedded")]
        None => Ok(Arc::new(open_redb(data_dir)?)),
        #[cfg(not(feature = "embedded"))]
        None => Err(InitError::Config(
            "WINMDM_TABLE is not set, and this function was built without the embedded store"
                .into(),
        )),
    }
}

/// The certificate authority this build and these settings call for: ACM PCA, the
/// KMS-keyed CA, else the embedded local CA; [`crate::unconfigured::NoCa`] for a build
/// with none.
fn open_ca(
    data_dir: &Path,
    aws: &AwsBackends,
    sdk: Option<&Sdk>,
) -> Result<Arc<dyn CertificateAuthority>, InitError> {
    let _ = (data_dir, sdk);
    if !HAS_CA {
        return Ok(Arc::new(crate::unconfigured::NoCa));
    }
    match (&aws.pca_arn, &aws.kms) {
        (Some(_), Some(_)) => Err(InitError::Config(
            "choose one CA: an ACM PCA ARN or a KMS key, not both".into(),
        )),
        #[cfg(feature = "pca")]
        (Some(arn), None) => {
            let sdk = sdk.expect("the AWS configuration is loaded when a CA is named");
            let client = winmdm_aws::acmpca_client(sdk, aws.pca_endpoint.as_deref());
            Ok(Arc::new(winmdm_aws::PcaCa::new(client, arn.clone())))
        }
        #[cfg(not(feature = "pca"))]
        (Some(_), None) => Err(unbuilt("WINMDM_PCA_ARN", "pca")),
        #[cfg(feature = "kms")]
        (None, Some(k)) => {
            let sdk = sdk.expect("the AWS configuration is loaded when a CA is named");
            let client = winmdm_aws::kms_client(sdk, k.endpoint.as_deref());
            Ok(Arc::new(match &k.certificate {
                KmsCaCertificate::Given { ca_der, root_der } => winmdm_aws::KmsCa::new(
                    client,
                    k.key_id.clone(),
                    ca_der.clone(),
                    root_der.clone(),
                )
                .map_err(|e| InitError::Config(format!("the KMS CA: {e}")))?,
                KmsCaCertificate::S3 {
                    bucket,
                    key,
                    endpoint,
                } => winmdm_aws::KmsCa::with_s3_certificate(
                    client,
                    k.key_id.clone(),
                    winmdm_aws::s3_client(sdk, endpoint.as_deref()),
                    bucket.clone(),
                    key.clone(),
                ),
            }))
        }
        #[cfg(not(feature = "kms"))]
        (None, Some(_)) => Err(unbuilt("WINMDM_KMS_KEY_ID", "kms")),
        #[cfg(feature = "embedded")]
        (None, None) => Ok(Arc::new(open_local_ca(data_dir)?)),
        #[cfg(not(feature = "embedded"))]
        (None, None) => Err(InitError::Config(
            "no certificate authority is configured: set WINMDM_PCA_ARN or WINMDM_KMS_KEY_ID"
                .into(),
        )),
    }
}

/// How the sign-in token key is had: given (or generated) at start, or fetched on first
/// use.
enum TokenKeyInit {
    Given(Vec<u8>),
    Fetched(Arc<dyn KeyFetch>),
}

/// The token key in a Secrets Manager secret: its `SecretString` base64, or its
/// `SecretBinary`.
#[cfg(feature = "secrets")]
struct SecretKey(winmdm_aws::secrets::Secret);

#[cfg(feature = "secrets")]
#[async_trait::async_trait]
impl KeyFetch for SecretKey {
    async fn fetch(&self) -> Result<Vec<u8>, String> {
        let value = self.0.read().await.map_err(|e| e.to_string())?;
        Ok(match value {
            winmdm_aws::secrets::SecretValue::String(s) => {
                decode_key(&s, "the secret WINMDM_TOKEN_KEY_SECRET_ARN names")
                    .map_err(|e| e.to_string())?
            }
            winmdm_aws::secrets::SecretValue::Binary(b) => b,
        })
    }
}

#[cfg(feature = "secrets")]
fn secret_key_fetch(
    sdk: Option<&Sdk>,
    arn: String,
    endpoint: Option<&str>,
) -> Result<Arc<dyn KeyFetch>, InitError> {
    let sdk = sdk.expect("the AWS configuration is loaded for a secret");
    Ok(Arc::new(SecretKey(winmdm_aws::secrets::Secret::new(
        sdk, endpoint, arn,
    ))))
}

#[cfg(not(feature = "secrets"))]
fn secret_key_fetch(
    _sdk: Option<&Sdk>,
    _arn: String,
    _endpoint: Option<&str>,
) -> Result<Arc<dyn KeyFetch>, InitError> {
    Err(unbuilt("WINMDM_TOKEN_KEY_SECRET_ARN", "secrets"))
}

/// The KMS CA's certificate from `WINMDM_KMS_CA_CERT` (PEM, with `WINMDM_KMS_CA_ROOT`
/// when it is not self-signed) or `WINMDM_KMS_CA_CERT_S3` (`s3://bucket/key`).
fn kms_ca_certificate(
    env: &impl Fn(&str) -> Option<String>,
) -> Result<KmsCaCertificate, InitError> {
    match (env("WINMDM_KMS_CA_CERT"), env("WINMDM_KMS_CA_CERT_S3")) {
        (Some(pem), None) => Ok(KmsCaCertificate::Given {
            ca_der: one_pem_certificate("WINMDM_KMS_CA_CERT", &pem)?,
            root_der: env("WINMDM_KMS_CA_ROOT")
                .map(|p| one_pem_certificate("WINMDM_KMS_CA_ROOT", &p))
                .transpose()?,
        }),
        (None, Some(uri)) => {
            let (bucket, key) = uri
                .strip_prefix("s3://")
                .and_then(|rest| rest.split_once('/'))
                .filter(|(b, k)| !b.is_empty() && !k.is_empty())
                .ok_or_else(|| {
                    InitError::Config(format!(
                        "WINMDM_KMS_CA_CERT_S3 must be s3://bucket/key, not {uri:?}"
                    ))
                })?;
            Ok(KmsCaCertificate::S3 {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                endpoint: env("WINMDM_S3_ENDPOINT"),
            })
        }
        (Some(_), Some(_)) => Err(InitError::Config(
            "give WINMDM_KMS_CA_CERT or WINMDM_KMS_CA_CERT_S3, not both".into(),
        )),
        (None, None) => Err(InitError::Config(
            "WINMDM_KMS_KEY_ID needs WINMDM_KMS_CA_CERT (the CA certificate made for the \
             key, PEM) or WINMDM_KMS_CA_CERT_S3 (s3://bucket/key of it)"
                .into(),
        )),
    }
}

/// The one certificate in a PEM text, as DER.
fn one_pem_certificate(name: &str, pem: &str) -> Result<Vec<u8>, InitError> {
    let mut certs = winmdm_core::ca::pem_certificates(pem);
    match (certs.pop(), certs.is_empty()) {
        (Some(der), true) => Ok(der),
        _ => Err(InitError::Config(format!(
            "{name} must hold exactly one PEM certificate"
        ))),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> InitError + '_ {
    move |source| InitError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl AppState {
    pub fn new(
        config: EnrollmentConfig,
        store: Arc<dyn Store>,
        ca: Arc<dyn CertificateAuthority>,
        clock: Arc<dyn Clock>,
        token_key: Vec<u8>,
        admin_auth: AdminAuth,
    ) -> Result<Self, InitError> {
        Self::assemble(
            config,
            store,
            ca,
            clock,
            TokenKeyInit::Given(token_key),
            admin_auth,
        )
    }

    fn assemble(
        config: EnrollmentConfig,
        store: Arc<dyn Store>,
        ca: Arc<dyn CertificateAuthority>,
        clock: Arc<dyn Clock>,
        token_key: TokenKeyInit,
        admin_auth: AdminAuth,
    ) -> Result<Self, InitError> {
        let (tokens, console_key) = match token_key {
            TokenKeyInit::Given(key) => {
                let console_key = crate::console::session::SessionKey::derive(&key);
                let tokens = TokenKey::given(key, config.token_ttl).map_err(InitError::Config)?;
                (tokens, Some(console_key))
            }
            TokenKeyInit::Fetched(fetch) => (TokenKey::fetched(fetch, config.token_ttl), None),
        };
        let page_key = tokio::sync::OnceCell::new_with(console_key.clone());
        let secure_cookies = config.public_url.scheme() == "https";
        let console = match (&admin_auth, &console_key) {
            (AdminAuth::Bearer(t), Some(key)) => Some(crate::console::ConsoleConfig {
                key: crate::console::ConsoleKey::given(key.clone()),
                sign_in: crate::console::SignIn::AdminToken(t.clone()),
                secure_cookies,
            }),
            _ => None,
        };
        let management = ManagementService::new(
            ManagementConfig::new(config.management_url()),
            store.clone(),
            ca.clone(),
            clock.clone(),
        );
        Ok(Self {
            ca: ca.clone(),
            enrollment: EnrollmentService::new(Arc::new(config), store.clone(), ca, clock, tokens),
            management,
            store,
            admin_auth,
            console,
            console_key,
            page_key,
            #[cfg(feature = "secrets")]
            console_key_secret: None,
            entra_terms: None,
        })
    }

    /// Accepts Entra ID enrollments (tokens of the listed tenants for the listed audiences)
    /// and serves the terms-of-use page.
    pub fn enable_entra(&mut self, settings: EntraSettings) {
        let keys = std::sync::Arc::new(crate::jwks::JwksCache::new(
            settings.jwks_url,
            settings.jwks_refetch_interval,
        ));
        let verifier = std::sync::Arc::new(winmdm_core::entra::EntraVerifier::new(
            winmdm_core::entra::EntraConfig {
                tenants: settings.tenants,
                audiences: settings.audiences,
            },
            keys,
        ));
        self.enrollment.enable_entra(verifier.clone());
        self.management.enable_entra(verifier);
        self.entra_terms = Some(settings.terms_text.unwrap_or_else(|| {
            "By continuing, you allow your organization to manage this device: apply its \
             settings, see its hardware and operating system, and remove its work data."
                .to_owned()
        }));
    }

    /// The key the terms-of-use page signs its form state with (derived from the sign-in
    /// token key, under its own label).
    pub(crate) async fn page_key(&self) -> Result<&crate::console::session::SessionKey, String> {
        self.page_key
            .get_or_try_init(|| async {
                let signer = self.enrollment.token_key().signer().await?;
                Ok(crate::console::session::SessionKey::derive(signer.key()))
            })
            .await
    }

    /// Signs console admins in through an OpenID Connect provider (the deployed console).
    ///
    /// Its session key is the `WINMDM_CONSOLE_KEY_SECRET_ARN` secret, or derived from the
    /// sign-in token key, which must then be known at start.
    pub fn enable_oidc_console(
        &mut self,
        settings: crate::console::oidc::OidcSettings,
    ) -> Result<(), InitError> {
        let secure_cookies = settings.redirect_uri.starts_with("https://");
        let given = || {
            self.console_key
                .clone()
                .map(crate::console::ConsoleKey::given)
                .ok_or_else(|| {
                    InitError::Config(
                        "the console's OpenID Connect sign-in needs its own key \
                         (WINMDM_CONSOLE_KEY_SECRET_ARN) when the sign-in token key is a secret"
                            .into(),
                    )
                })
        };
        #[cfg(feature = "secrets")]
        let key = match self.console_key_secret.take() {
            Some(secret) => crate::console::ConsoleKey::from_secret(secret),
            None => given()?,
        };
        #[cfg(not(feature = "secrets"))]
        let key = given()?;
        self.console = Some(crate::console::ConsoleConfig {
            key,
            sign_in: crate::console::SignIn::Oidc(Box::new(crate::console::oidc::OidcClient::new(
                settings,
            ))),
            secure_cookies,
        });
        Ok(())
    }

    /// State on the embedded adapters, all kept in `data_dir`: `winmdm.redb`, `ca/`, and
    /// the generated `token-key` and `admin-token`. The directory is made 0700 and every
    /// file in it 0600 (see [`secure_data_dir`]).
    #[cfg(feature = "embedded")]
    pub fn embedded(
        data_dir: &Path,
        config: EnrollmentConfig,
        admin_auth: Option<AdminAuth>,
    ) -> Result<Self, InitError> {
        secure_data_dir(data_dir)?;
        let store = Arc::new(open_redb(data_dir)?);
        let ca = Arc::new(open_local_ca(data_dir)?);
        let state = Self::with_adapters(data_dir, config, store, ca, admin_auth, None)?;
        secure_data_files(data_dir)?;
        Ok(state)
    }

    /// State on the AWS adapters named in `aws` (each falling back to the embedded one),
    /// with the generated secrets in `data_dir` unless `token_key` is given.
    #[cfg(feature = "aws")]
    pub async fn with_aws(
        data_dir: &Path,
        config: EnrollmentConfig,
        aws: &AwsBackends,
        admin_auth: Option<AdminAuth>,
        token_key: Option<Vec<u8>>,
    ) -> Result<Self, InitError> {
        let sdk = load_sdk(aws.needs_sdk(), aws.region.clone()).await;
        let token_key = token_key.map(TokenKeyInit::Given);
        Self::with_sdk(data_dir, config, aws, sdk.as_ref(), admin_auth, token_key)
    }

    fn with_sdk(
        data_dir: &Path,
        config: EnrollmentConfig,
        aws: &AwsBackends,
        sdk: Option<&Sdk>,
        admin_auth: Option<AdminAuth>,
        token_key: Option<TokenKeyInit>,
    ) -> Result<Self, InitError> {
        secure_data_dir(data_dir)?;
        let store = open_store(data_dir, aws, sdk)?;
        let ca = open_ca(data_dir, aws, sdk)?;
        let state = Self::with_adapters(data_dir, config, store, ca, admin_auth, token_key)?;
        secure_data_files(data_dir)?;
        Ok(state)
    }

    fn with_adapters(
        data_dir: &Path,
        config: EnrollmentConfig,
        store: Arc<dyn Store>,
        ca: Arc<dyn CertificateAuthority>,
        admin_auth: Option<AdminAuth>,
        token_key: Option<TokenKeyInit>,
    ) -> Result<Self, InitError> {
        let token_key = match token_key {
            Some(k) => k,
            None => TokenKeyInit::Given(read_or_create_secret(&data_dir.join(TOKEN_KEY_FILE), 32)?),
        };
        let admin_auth = match admin_auth {
            Some(a) => a,
            None => AdminAuth::Bearer(
                String::from_utf8(read_or_create_secret(&admin_token_path(data_dir), 32)?)
                    .map_err(|_| InitError::Config("admin-token is not UTF-8".into()))?
                    .trim()
                    .to_owned(),
            ),
        };
        Self::assemble(
            config,
            store,
            ca,
            Arc::new(SystemClock),
            token_key,
            admin_auth,
        )
    }

    /// State for a Lambda function, configured from the environment:
    ///
    /// - `WINMDM_PUBLIC_URL` (required): base URL of the enrollment host.
    /// - `WINMDM_MANAGEMENT_URL`: base URL of the management host (default: public URL).
    /// - `WINMDM_AUTH_POLICY`: `federated` (default) or `onpremise`.
    /// - `WINMDM_APPRU_ALLOW`: comma-separated https appru values the login page accepts.
    /// - `WINMDM_CERT_VALIDITY_DAYS`, `WINMDM_RENEWAL_PERIOD_DAYS`.
    /// - `WINMDM_ADMIN_AUTH`: `iam` (trust API Gateway) or `bearer` with `WINMDM_ADMIN_TOKEN`.
    /// - `WINMDM_TABLE` (DynamoDB) and `WINMDM_PCA_ARN` (ACM Private CA), with
    ///   `AWS_REGION`; `WINMDM_DYNAMODB_ENDPOINT` / `WINMDM_PCA_ENDPOINT` only for tests.
    /// - Or, instead of ACM PCA, a CA whose key is in KMS: `WINMDM_KMS_KEY_ID` with
    ///   `WINMDM_KMS_CA_CERT` (the CA certificate made for that key, PEM) and, when that
    ///   certificate is not self-signed, `WINMDM_KMS_CA_ROOT` (PEM); or instead of the
    ///   certificate, `WINMDM_KMS_CA_CERT_S3` (`s3://bucket/key` of it, read on first
    ///   use); `WINMDM_KMS_ENDPOINT` and `WINMDM_S3_ENDPOINT` only for tests.
    ///   Without them the embedded store and local CA in `WINMDM_DATA_DIR` (default
    ///   `/tmp/winmdm`) are used.
    /// - The key (≥ 32 bytes) signing federated sign-in tokens, which the functions that
    ///   issue (auth) or accept (policy, enroll) them must share, from one of:
    ///   `WINMDM_TOKEN_KEY_SECRET_ARN`, a Secrets Manager secret read on first use (its
    ///   `SecretString` base64, or its `SecretBinary`; `WINMDM_SECRETSMANAGER_ENDPOINT`
    ///   only for tests); or `WINMDM_TOKEN_KEY`, the base64 key itself (local and
    ///   development use: it shows in the function's configuration). Required on
    ///   DynamoDB unless `WINMDM_SIGN_IN_TOKENS=off`, which is for the functions that
    ///   never see a token: they get a random key of their own, so any token they are
    ///   shown fails to verify. Without any of these, a key is generated into the data dir.
    pub async fn from_env() -> Result<Self, InitError> {
        Self::from_vars(|k| std::env::var(k).ok()).await
    }

    /// [`AppState::from_env`] with the variables looked up by `var` (for tests); the AWS
    /// SDK still reads its credentials from the process environment.
    pub async fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, InitError> {
        let env = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let public = env("WINMDM_PUBLIC_URL")
            .ok_or_else(|| InitError::Config("WINMDM_PUBLIC_URL is not set".into()))?;
        let mut config = EnrollmentConfig::new(parse_url(&public)?);
        if let Some(m) = env("WINMDM_MANAGEMENT_URL") {
            config.management_base_url = parse_url(&m)?;
        }
        if let Some(p) = env("WINMDM_AUTH_POLICY") {
            config.auth_policy = p.parse().map_err(InitError::Config)?;
        }
        if let Some(list) = env("WINMDM_APPRU_ALLOW") {
            config.appru_allow_list = list
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
        }
        if let Some(d) = env("WINMDM_CERT_VALIDITY_DAYS") {
            config.cert_validity = time::Duration::days(parse_days(&d)?);
        }
        if let Some(s) = env("WINMDM_RENEWAL_GRACE_SECONDS") {
            let secs = s
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|s| *s >= 0)
                .ok_or_else(|| InitError::Config(format!("{s:?} is not a number of seconds")))?;
            config.renewal_grace = time::Duration::seconds(secs);
        }
        if let Some(d) = env("WINMDM_RENEWAL_PERIOD_DAYS") {
            config.renewal_period = time::Duration::days(parse_days(&d)?);
        }
        let admin = match env("WINMDM_ADMIN_AUTH").as_deref() {
            Some("iam") => Some(AdminAuth::Gateway),
            Some("bearer") | None => env("WINMDM_ADMIN_TOKEN").map(AdminAuth::Bearer),
            Some(other) => {
                return Err(InitError::Config(format!(
                    "WINMDM_ADMIN_AUTH must be iam or bearer, not {other:?}"
                )));
            }
        };
        let data_dir =
            PathBuf::from(env("WINMDM_DATA_DIR").unwrap_or_else(|| "/tmp/winmdm".into()));
        let aws = AwsBackends {
            region: env("AWS_REGION"),
            table: env("WINMDM_TABLE"),
            checkin_counts_from_stream: match env("WINMDM_CHECKIN_COUNTS").as_deref() {
                None | Some("writes") => false,
                Some("stream") => true,
                Some(other) => {
                    return Err(InitError::Config(format!(
                        "WINMDM_CHECKIN_COUNTS is `stream` or `writes`, not `{other}`"
                    )));
                }
            },
            dynamodb_endpoint: env("WINMDM_DYNAMODB_ENDPOINT"),
            pca_arn: env("WINMDM_PCA_ARN"),
            pca_endpoint: env("WINMDM_PCA_ENDPOINT"),
            kms: match env("WINMDM_KMS_KEY_ID") {
                None => None,
                Some(key_id) => Some(KmsCaConfig {
                    key_id,
                    certificate: kms_ca_certificate(&env)?,
                    endpoint: env("WINMDM_KMS_ENDPOINT"),
                }),
            },
        };
        let source = token_key_source(
            env("WINMDM_SIGN_IN_TOKENS").as_deref(),
            env("WINMDM_TOKEN_KEY"),
            env("WINMDM_TOKEN_KEY_SECRET_ARN"),
            aws.table.is_some(),
        )?;
        let console_key_arn = env("WINMDM_CONSOLE_KEY_SECRET_ARN");
        // Load the AWS configuration only when something on AWS is asked for (and this
        // function was built with it).
        let sdk = load_sdk(
            aws.needs_sdk()
                || matches!(source, TokenKeySource::Secret(_))
                || console_key_arn.is_some(),
            aws.region.clone(),
        )
        .await;
        let token_key = match source {
            TokenKeySource::Value(k) => Some(TokenKeyInit::Given(k)),
            // Read when a token is first issued or checked: starting calls nothing.
            TokenKeySource::Secret(arn) => Some(TokenKeyInit::Fetched(secret_key_fetch(
                sdk.as_ref(),
                arn,
                env("WINMDM_SECRETSMANAGER_ENDPOINT").as_deref(),
            )?)),
            TokenKeySource::Ephemeral => Some(TokenKeyInit::Given(random_bytes(32))),
            TokenKeySource::DataDir => None,
        };
        #[allow(unused_mut)] // set below only when built with Secrets Manager
        let mut state = Self::with_sdk(&data_dir, config, &aws, sdk.as_ref(), admin, token_key)?;
        // The console's own session key (a Secrets Manager secret on AWS), read on first use.
        if let Some(arn) = console_key_arn {
            #[cfg(feature = "secrets")]
            {
                let sdk = sdk.as_ref().expect("loaded for the console key");
                let endpoint = env("WINMDM_SECRETSMANAGER_ENDPOINT");
                state.console_key_secret = Some(winmdm_aws::secrets::Secret::new(
                    sdk,
                    endpoint.as_deref(),
                    arn,
                ));
            }
            #[cfg(not(feature = "secrets"))]
            {
                let _ = arn;
                return Err(unbuilt("WINMDM_CONSOLE_KEY_SECRET_ARN", "secrets"));
            }
        }
        if let Some(settings) = oidc_settings(&env)? {
            state.enable_oidc_console(settings)?;
        }
        if let Some(settings) = entra_settings(&env)? {
            state.enable_entra(settings);
        }
        Ok(state)
    }
}

/// Entra ID enrollment settings: `WINMDM_ENTRA_TENANTS` (comma-separated tenant ids),
/// `WINMDM_ENTRA_AUDIENCES` (application ID URI and/or client id), `WINMDM_ENTRA_JWKS_URL`
/// (default Microsoft's), `WINMDM_ENTRA_TERMS_TEXT`; `winmdm-local --entra-*`.
#[derive(Debug, Clone)]
pub struct EntraSettings {
    pub tenants: Vec<String>,
    pub audiences: Vec<String>,
    pub jwks_url: String,
    pub terms_text: Option<String>,
    /// Least time between key-set refetches prompted by unknown `kid`s.
    pub jwks_refetch_interval: std::time::Duration,
}

impl EntraSettings {
    pub fn new(tenants: Vec<String>, audiences: Vec<String>) -> Self {
        Self {
            tenants: tenants
                .into_iter()
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty())
                .collect(),
            audiences: audiences
                .into_iter()
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty())
                .collect(),
            jwks_url: winmdm_core::entra::DEFAULT_JWKS_URL.to_owned(),
            terms_text: None,
            jwks_refetch_interval: std::time::Duration::from_secs(60),
        }
    }
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn entra_settings(
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<EntraSettings>, InitError> {
    let Some(tenants) = env("WINMDM_ENTRA_TENANTS") else {
        return Ok(None);
    };
    let audiences = env("WINMDM_ENTRA_AUDIENCES").ok_or_else(|| {
        InitError::Config(
            "WINMDM_ENTRA_TENANTS is set, so WINMDM_ENTRA_AUDIENCES must be too".into(),
        )
    })?;
    let mut s = EntraSettings::new(split_list(&tenants), split_list(&audiences));
    if s.tenants.is_empty() || s.audiences.is_empty() {
        return Err(InitError::Config(
            "WINMDM_ENTRA_TENANTS and WINMDM_ENTRA_AUDIENCES must each name at least one".into(),
        ));
    }
    if let Some(u) = env("WINMDM_ENTRA_JWKS_URL") {
        s.jwks_url = u;
    }
    s.terms_text = env("WINMDM_ENTRA_TERMS_TEXT");
    Ok(Some(s))
}

/// The console's OpenID Connect settings: `WINMDM_CONSOLE_OIDC_ISSUER`, `…_CLIENT_ID`,
/// `…_CLIENT_SECRET` (optional), `WINMDM_CONSOLE_URL` (the console's public base, for the
/// callback) and `WINMDM_CONSOLE_ADMINS` (comma-separated emails; optional).
fn oidc_settings(
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<crate::console::oidc::OidcSettings>, InitError> {
    let Some(issuer) = env("WINMDM_CONSOLE_OIDC_ISSUER") else {
        return Ok(None);
    };
    let need = |k: &str| {
        env(k).ok_or_else(|| {
            InitError::Config(format!(
                "WINMDM_CONSOLE_OIDC_ISSUER is set, so {k} must be too"
            ))
        })
    };
    let base = parse_url(&need("WINMDM_CONSOLE_URL")?)?;
    let redirect_uri = base
        .join("/console/oidc/callback")
        .map_err(|e| InitError::Config(format!("WINMDM_CONSOLE_URL: {e}")))?
        .to_string();
    Ok(Some(crate::console::oidc::OidcSettings {
        issuer: issuer.trim_end_matches('/').to_owned(),
        client_id: need("WINMDM_CONSOLE_OIDC_CLIENT_ID")?,
        client_secret: env("WINMDM_CONSOLE_OIDC_CLIENT_SECRET"),
        redirect_uri,
        admins: env("WINMDM_CONSOLE_ADMINS")
            .map(|l| {
                l.split(',')
                    .map(|a| a.trim().to_owned())
                    .filter(|a| !a.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        jwks_refetch_interval: crate::console::oidc::REFETCH_INTERVAL,
    }))
}

/// Where the sign-in token key comes from.
enum TokenKeySource {
    /// `WINMDM_TOKEN_KEY`, decoded.
    Value(Vec<u8>),
    /// A Secrets Manager secret, by ARN.
    Secret(String),
    /// `WINMDM_SIGN_IN_TOKENS=off`: a random key nobody else has.
    Ephemeral,
    /// Generated into (and kept in) the data directory.
    DataDir,
}

fn token_key_source(
    sign_in_tokens: Option<&str>,
    value: Option<String>,
    secret_arn: Option<String>,
    on_dynamodb: bool,
) -> Result<TokenKeySource, InitError> {
    let enabled = match sign_in_tokens.map(str::trim) {
        None | Some("on") => true,
        Some("off") => false,
        Some(other) => {
            return Err(InitError::Config(format!(
                "WINMDM_SIGN_IN_TOKENS must be on or off, not {other:?}"
            )));
        }
    };
    match (enabled, value, secret_arn) {
        (_, Some(_), Some(_)) => Err(InitError::Config(
            "set WINMDM_TOKEN_KEY_SECRET_ARN or WINMDM_TOKEN_KEY, not both".into(),
        )),
        (false, None, None) => Ok(TokenKeySource::Ephemeral),
        (false, _, _) => Err(InitError::Config(
            "WINMDM_SIGN_IN_TOKENS=off takes no token key: unset WINMDM_TOKEN_KEY(_SECRET_ARN)"
                .into(),
        )),
        (true, None, Some(arn)) => Ok(TokenKeySource::Secret(arn.trim().to_owned())),
        (true, Some(k), None) => Ok(TokenKeySource::Value(decode_key(&k, "WINMDM_TOKEN_KEY")?)),
        (true, None, None) if on_dynamodb => Err(InitError::Config(
            "the sign-in token key must be configured when running on DynamoDB (the \
             functions that issue and accept tokens share it): set \
             WINMDM_TOKEN_KEY_SECRET_ARN (or WINMDM_TOKEN_KEY), or WINMDM_SIGN_IN_TOKENS=off \
             for a function that neither issues nor accepts them"
                .into(),
        )),
        (true, None, None) => Ok(TokenKeySource::DataDir),
    }
}

fn decode_key(text: &str, what: &str) -> Result<Vec<u8>, InitError> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| InitError::Config(format!("{what} is not base64")))
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// The embedded store, its file created 0600 before redb opens it (redb initialises an
/// empty file), so the store is never readable by others, not even briefly.
#[cfg(feature = "embedded")]
fn open_redb(data_dir: &Path) -> Result<RedbStore, InitError> {
    let path = data_dir.join(STORE_FILE);
    create_private_file(&path)?;
    Ok(RedbStore::open(&path)?)
}

/// Makes the local CA in `data_dir` with a `key` key if there is none yet, or checks that
/// the one there has such a key. Run before the state is built (winmdm-local's
/// `--ca-key`); the state then opens whatever CA the directory holds.
#[cfg(feature = "embedded")]
pub fn prepare_local_ca(
    data_dir: &Path,
    key: winmdm_embedded::LocalCaKey,
) -> Result<(), InitError> {
    secure_data_dir(data_dir)?;
    let dir = data_dir.join(CA_DIR);
    create_private_dir(&dir, Follow::No)?;
    LocalCa::open_or_create_with(&dir, key)?;
    Ok(())
}

#[cfg(feature = "embedded")]
fn open_local_ca(data_dir: &Path) -> Result<LocalCa, InitError> {
    let dir = data_dir.join(CA_DIR);
    create_private_dir(&dir, Follow::No)?;
    Ok(LocalCa::open_or_create(&dir)?)
}

const STORE_FILE: &str = "winmdm.redb";
const CA_DIR: &str = "ca";
const TOKEN_KEY_FILE: &str = "token-key";

/// Creates the data directory 0700, or tightens an existing one (earlier versions made it
/// 0755): it holds the store (digest keys, password hashes, command payloads), the CA key
/// and the generated secrets. Called before anything is created in it, so nothing in it
/// is ever reachable by other users.
pub fn secure_data_dir(data_dir: &Path) -> Result<(), InitError> {
    create_private_dir(data_dir, Follow::Yes)
}

/// Makes every file winmdm keeps in the data directory 0600 and `ca/` 0700, tightening
/// what earlier versions created 0644 or 0755. Only winmdm's own names are touched, and
/// symbolic links are left alone.
pub fn secure_data_files(data_dir: &Path) -> Result<(), InitError> {
    for name in [STORE_FILE, TOKEN_KEY_FILE, "admin-token"] {
        restrict(&data_dir.join(name), 0o600, Follow::No)?;
    }
    let ca = data_dir.join(CA_DIR);
    if restrict(&ca, 0o700, Follow::No)? {
        for entry in std::fs::read_dir(&ca).map_err(io_err(&ca))? {
            let entry = entry.map_err(io_err(&ca))?;
            restrict(&entry.path(), 0o600, Follow::No)?;
        }
    }
    Ok(())
}

/// Whether [`restrict`] follows a symbolic link: yes for the data directory the operator
/// named, no for what is inside it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Follow {
    Yes,
    No,
}

fn create_private_dir(dir: &Path, follow: Follow) -> Result<(), InitError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(io_err(dir))?;
    // DirBuilder leaves an existing directory as it was.
    restrict(dir, 0o700, follow)?;
    Ok(())
}

#[cfg(feature = "embedded")]
fn create_private_file(path: &Path) -> Result<(), InitError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path).map_err(io_err(path))?;
    // An existing file keeps its mode on open.
    restrict(path, 0o600, Follow::No)?;
    Ok(())
}

/// Removes every permission bit outside `mode` from `path` (a symbolic link is followed
/// only with [`Follow::Yes`], else left alone). `Ok(false)` if there is nothing there.
fn restrict(path: &Path, mode: u32, follow: Follow) -> Result<bool, InitError> {
    let meta = match follow {
        Follow::Yes => std::fs::metadata(path),
        Follow::No => std::fs::symlink_metadata(path),
    };
    let meta = match meta {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(path)(e)),
    };
    if meta.file_type().is_symlink() {
        tracing::warn!(
            path = %path.display(),
            "a symbolic link in the data directory: its target's permissions are left as they are"
        );
        return Ok(false);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let current = meta.permissions().mode() & 0o7777;
        if current & !mode != 0 {
            let tightened = current & mode;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(tightened))
                .map_err(io_err(path))?;
            tracing::info!(
                path = %path.display(),
                from = format!("{current:o}"),
                to = format!("{tightened:o}"),
                "tightened permissions"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = mode;
    Ok(true)
}

pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin-token")
}

fn parse_url(s: &str) -> Result<url::Url, InitError> {
    url::Url::parse(s).map_err(|e| InitError::Config(format!("{s:?} is not a URL: {e}")))
}

fn parse_days(s: &str) -> Result<i64, InitError> {
    s.trim()
        .parse::<i64>()
        .ok()
        .filter(|d| *d > 0)
        .ok_or_else(|| InitError::Config(format!("{s:?} is not a positive number of days")))
}

/// Reads a secret file, creating it (mode 0600, URL-safe base64 of random bytes) if absent.
fn read_or_create_secret(path: &Path, n: usize) -> Result<Vec<u8>, InitError> {
    if !path.exists() {
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(n));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        use std::io::Write;
        match opts.open(path) {
            Ok(mut f) => f.write_all(text.as_bytes()).map_err(io_err(path))?,
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(path)(e)),
        }
    }
    std::fs::read(path).map_err(io_err(path))
}
