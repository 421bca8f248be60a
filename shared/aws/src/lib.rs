//! AWS adapters: [`dynamo::DynamoStore`] (DynamoDB, single-table), [`pca::PcaCa`] (ACM
//! Private CA) and [`kms_ca::KmsCa`] (a CA whose key is in KMS), implementing the core's
//! `Store` and `CertificateAuthority`; [`secrets`], which reads keys from Secrets Manager;
//! and [`setup`], the stack's CloudFormation custom resources.
//!
//! Each adapter is a Cargo feature (`dynamodb`, `pca`, `kms`, `secrets`, `setup`; `full`
//! for all), so a Lambda function links only the SDKs its handler calls.

#[cfg(feature = "dynamodb")]
pub mod checkin_counts;
#[cfg(feature = "dynamodb")]
pub mod dynamo;
#[cfg(feature = "kms")]
pub mod kms_ca;
#[cfg(feature = "pca")]
pub mod pca;
#[cfg(feature = "secrets")]
pub mod secrets;
#[cfg(feature = "setup")]
pub mod setup;

pub use aws_config::SdkConfig;
/// The KMS SDK, for tools and tests that create keys.
#[cfg(feature = "kms")]
pub use aws_sdk_kms;
/// The S3 SDK, for tests that read the truststore.
#[cfg(feature = "kms")]
pub use aws_sdk_s3;
/// The Secrets Manager SDK, for tools and tests that create secrets.
#[cfg(feature = "secrets")]
pub use aws_sdk_secretsmanager;

#[cfg(feature = "dynamodb")]
pub use dynamo::DynamoStore;
#[cfg(feature = "kms")]
pub use kms_ca::KmsCa;
#[cfg(feature = "pca")]
pub use pca::PcaCa;

pub use winmdm_core::ca::pem_certificates;

/// The roots AWS's service endpoints chain to (Amazon Trust Services: Amazon Root CA 1–4
/// and Starfield Services Root G2, as shipped in Debian's ca-certificates). The SDK
/// clients trust only these, not the system's ~150 roots: loading and parsing the system
/// bundle was most of a function's start-up (see BENCHMARKS.md, Cold start), and an AWS
/// API call has no business trusting any other CA.
pub const AWS_ROOTS_PEM: &str = include_str!("../certs/amazon-trust-services.pem");

/// Set to `1` to have the SDK clients also trust the system's root certificates: for a
/// network whose egress goes through a TLS-inspecting proxy. That widens what may
/// impersonate AWS to every CA the proxy's bundle holds; leave it off otherwise.
pub const SYSTEM_ROOTS_VAR: &str = "WINMDM_AWS_SYSTEM_ROOTS";

/// Loads the AWS configuration (region, credentials) from the standard chain, with an
/// optional endpoint override for emulators. The HTTPS client trusts [`AWS_ROOTS_PEM`]
/// (and the system roots only when [`SYSTEM_ROOTS_VAR`] is `1`).
pub async fn sdk_config(region: Option<String>, endpoint: Option<String>) -> aws_config::SdkConfig {
    let system_roots = std::env::var(SYSTEM_ROOTS_VAR).is_ok_and(|v| v.trim() == "1");
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    loader = https_client(loader, system_roots);
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r));
    }
    if let Some(e) = endpoint {
        loader = loader.endpoint_url(e);
    }
    // In a Lambda function the credentials are always the execution role's, in the
    // environment: read them there, without building the default chain (profiles, SSO,
    // web identity, container and instance metadata) that could never answer instead.
    if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some()
        && std::env::var_os("AWS_ACCESS_KEY_ID").is_some()
    {
        loader = loader.credentials_provider(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        );
    }
    loader.load().await
}

/// The SDK's hyper + rustls (aws-lc) client, trusting the AWS roots.
fn https_client(loader: aws_config::ConfigLoader, system_roots: bool) -> aws_config::ConfigLoader {
    use aws_smithy_http_client::tls;
    let trust = tls::TrustStore::empty()
        .with_native_roots(system_roots)
        .with_pem_certificate(AWS_ROOTS_PEM.as_bytes());
    let context = tls::TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .expect("the compiled-in AWS roots are valid PEM");
    let client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(context)
        .build_https();
    loader.http_client(ConnectorOnFirstRequest(client))
}

/// The SDK's client, minus the connector it builds and throws away each time an SDK
/// client is made (its `validate_base_client_config` does so, to load the system's
/// certificates early): the connector is made on the first request, once, and shared by
/// every client of the process, as the SDK does anyway.
#[derive(Debug)]
struct ConnectorOnFirstRequest(aws_smithy_runtime_api::client::http::SharedHttpClient);

impl aws_smithy_runtime_api::client::http::HttpClient for ConnectorOnFirstRequest {
    fn http_connector(
        &self,
        settings: &aws_smithy_runtime_api::client::http::HttpConnectorSettings,
        components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
    ) -> aws_smithy_runtime_api::client::http::SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

#[cfg(feature = "dynamodb")]
/// A DynamoDB client, with an endpoint override for emulators.
pub fn dynamodb_client(
    config: &aws_config::SdkConfig,
    endpoint: Option<&str>,
) -> aws_sdk_dynamodb::Client {
    let mut b = aws_sdk_dynamodb::config::Builder::from(config);
    if let Some(e) = endpoint {
        b = b.endpoint_url(e);
    }
    aws_sdk_dynamodb::Client::from_conf(b.build())
}

#[cfg(feature = "kms")]
/// An S3 client (path-style addressing, which emulators need), with an endpoint
/// override for emulators.
pub fn s3_client(config: &aws_config::SdkConfig, endpoint: Option<&str>) -> aws_sdk_s3::Client {
    let mut b = aws_sdk_s3::config::Builder::from(config);
    if let Some(e) = endpoint {
        b = b.endpoint_url(e).force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(b.build())
}

#[cfg(feature = "kms")]
/// A KMS client, with an endpoint override for emulators.
pub fn kms_client(config: &aws_config::SdkConfig, endpoint: Option<&str>) -> aws_sdk_kms::Client {
    let mut b = aws_sdk_kms::config::Builder::from(config);
    if let Some(e) = endpoint {
        b = b.endpoint_url(e);
    }
    aws_sdk_kms::Client::from_conf(b.build())
}

#[cfg(feature = "pca")]
/// An ACM PCA client, with an endpoint override for emulators.
pub fn acmpca_client(
    config: &aws_config::SdkConfig,
    endpoint: Option<&str>,
) -> aws_sdk_acmpca::Client {
    let mut b = aws_sdk_acmpca::config::Builder::from(config);
    if let Some(e) = endpoint {
        b = b.endpoint_url(e);
    }
    aws_sdk_acmpca::Client::from_conf(b.build())
}

#[cfg(test)]
mod tests {
    use x509_parser::prelude::{FromDer, X509Certificate};

    #[test]
    fn the_aws_trust_store_is_amazon_trust_services_roots_only() {
        let ders = super::pem_certificates(super::AWS_ROOTS_PEM);
        let mut names: Vec<String> = ders
            .iter()
            .map(|der| {
                let (_, c) = X509Certificate::from_der(der).expect("a certificate");
                assert_eq!(c.subject(), c.issuer(), "a self-signed root");
                assert!(c.is_ca());
                assert!(
                    c.validity().not_after.timestamp() > 2_000_000_000,
                    "valid past 2033"
                );
                c.subject().to_string()
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "C=US, O=Amazon, CN=Amazon Root CA 1",
                "C=US, O=Amazon, CN=Amazon Root CA 2",
                "C=US, O=Amazon, CN=Amazon Root CA 3",
                "C=US, O=Amazon, CN=Amazon Root CA 4",
                "C=US, ST=Arizona, L=Scottsdale, O=Starfield Technologies, Inc., \
                 CN=Starfield Services Root Certificate Authority - G2",
            ]
        );
    }
}
