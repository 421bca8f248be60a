//! AWS adapters: [`dynamo::DynamoStore`] (DynamoDB, single-table) and [`pca::PcaCa`]
//! (ACM Private CA), implementing the core's `Store` and `CertificateAuthority`; and
//! [`secrets`], which reads the sign-in token key from Secrets Manager at start.

pub mod dynamo;
pub mod kms_ca;
pub mod pca;
pub mod secrets;
pub mod setup;

pub use aws_config::SdkConfig;
/// The KMS SDK, for tools and tests that create keys.
pub use aws_sdk_kms;
/// The S3 SDK, for tests that read the truststore.
pub use aws_sdk_s3;
/// The Secrets Manager SDK, for tools and tests that create secrets.
pub use aws_sdk_secretsmanager;

pub use dynamo::DynamoStore;
pub use kms_ca::KmsCa;
pub use pca::PcaCa;

/// Loads the AWS configuration (region, credentials) from the standard chain, with an
/// optional endpoint override for emulators.
pub async fn sdk_config(region: Option<String>, endpoint: Option<String>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r));
    }
    if let Some(e) = endpoint {
        loader = loader.endpoint_url(e);
    }
    loader.load().await
}

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

/// An S3 client (path-style addressing, which emulators need), with an endpoint
/// override for emulators.
pub fn s3_client(config: &aws_config::SdkConfig, endpoint: Option<&str>) -> aws_sdk_s3::Client {
    let mut b = aws_sdk_s3::config::Builder::from(config);
    if let Some(e) = endpoint {
        b = b.endpoint_url(e).force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(b.build())
}

/// A KMS client, with an endpoint override for emulators.
pub fn kms_client(config: &aws_config::SdkConfig, endpoint: Option<&str>) -> aws_sdk_kms::Client {
    let mut b = aws_sdk_kms::config::Builder::from(config);
    if let Some(e) = endpoint {
        b = b.endpoint_url(e);
    }
    aws_sdk_kms::Client::from_conf(b.build())
}

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
