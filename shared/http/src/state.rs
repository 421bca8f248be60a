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
use winmdm_core::token::TokenSigner;
use winmdm_embedded::{LocalCa, RedbStore};

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
    pub dynamodb_endpoint: Option<String>,
    /// ACM Private CA ARN; `None` keeps the local CA.
    pub pca_arn: Option<String>,
    pub pca_endpoint: Option<String>,
}

impl AwsBackends {
    pub fn is_empty(&self) -> bool {
        self.table.is_none() && self.pca_arn.is_none()
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
        let tokens = TokenSigner::new(token_key, config.token_ttl).map_err(InitError::Config)?;
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
        })
    }

    /// State on the embedded adapters, all kept in `data_dir`: `winmdm.redb`, `ca/`, and
    /// the generated `token-key` and `admin-token` (both 0600).
    pub fn embedded(
        data_dir: &Path,
        config: EnrollmentConfig,
        admin_auth: Option<AdminAuth>,
    ) -> Result<Self, InitError> {
        std::fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
        let store = Arc::new(RedbStore::open(&data_dir.join("winmdm.redb"))?);
        let ca = Arc::new(LocalCa::open_or_create(&data_dir.join("ca"))?);
        Self::with_adapters(data_dir, config, store, ca, admin_auth, None)
    }

    /// State on the AWS adapters named in `aws` (each falling back to the embedded one),
    /// with the generated secrets in `data_dir` unless `token_key` is given.
    pub async fn with_aws(
        data_dir: &Path,
        config: EnrollmentConfig,
        aws: &AwsBackends,
        admin_auth: Option<AdminAuth>,
        token_key: Option<Vec<u8>>,
    ) -> Result<Self, InitError> {
        std::fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
        // Only load the AWS configuration when an AWS adapter is asked for.
        let sdk = if aws.is_empty() {
            None
        } else {
            Some(winmdm_aws::sdk_config(aws.region.clone(), None).await)
        };
        let store: Arc<dyn Store> = match (&aws.table, &sdk) {
            (Some(table), Some(sdk)) => {
                let client = winmdm_aws::dynamodb_client(sdk, aws.dynamodb_endpoint.as_deref());
                Arc::new(winmdm_aws::DynamoStore::new(client, table.clone()))
            }
            _ => Arc::new(RedbStore::open(&data_dir.join("winmdm.redb"))?),
        };
        let ca: Arc<dyn CertificateAuthority> = match (&aws.pca_arn, &sdk) {
            (Some(arn), Some(sdk)) => {
                let client = winmdm_aws::acmpca_client(sdk, aws.pca_endpoint.as_deref());
                Arc::new(winmdm_aws::PcaCa::new(client, arn.clone()))
            }
            _ => Arc::new(LocalCa::open_or_create(&data_dir.join("ca"))?),
        };
        Self::with_adapters(data_dir, config, store, ca, admin_auth, token_key)
    }

    fn with_adapters(
        data_dir: &Path,
        config: EnrollmentConfig,
        store: Arc<dyn Store>,
        ca: Arc<dyn CertificateAuthority>,
        admin_auth: Option<AdminAuth>,
        token_key: Option<Vec<u8>>,
    ) -> Result<Self, InitError> {
        let token_key = match token_key {
            Some(k) => k,
            None => read_or_create_secret(&data_dir.join("token-key"), 32)?,
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
        Self::new(
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
    ///   Without them the embedded store and local CA in `WINMDM_DATA_DIR` (default
    ///   `/tmp/winmdm`) are used.
    /// - `WINMDM_TOKEN_KEY`: base64 key (≥ 32 bytes) signing federated sign-in tokens; all
    ///   functions must share it. Required on AWS; generated into the data dir otherwise.
    pub async fn from_env() -> Result<Self, InitError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
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
            dynamodb_endpoint: env("WINMDM_DYNAMODB_ENDPOINT"),
            pca_arn: env("WINMDM_PCA_ARN"),
            pca_endpoint: env("WINMDM_PCA_ENDPOINT"),
        };
        let token_key = match env("WINMDM_TOKEN_KEY") {
            Some(k) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(k.trim())
                    .map_err(|_| InitError::Config("WINMDM_TOKEN_KEY is not base64".into()))?,
            ),
            None if aws.table.is_some() => {
                return Err(InitError::Config(
                    "WINMDM_TOKEN_KEY must be set when running on DynamoDB (all functions share it)"
                        .into(),
                ));
            }
            None => None,
        };
        Self::with_aws(&data_dir, config, &aws, admin, token_key).await
    }
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
        let mut b = vec![0u8; n];
        rand::rngs::OsRng.fill_bytes(&mut b);
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&b);
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
