//! AWS Secrets Manager: secrets (the sign-in token key, the console's key) are read by ARN
//! when first needed, so their values never sit in a function's configuration, where
//! anyone allowed `lambda:GetFunctionConfiguration` could read them.

pub use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::DisplayErrorContext;

/// A Secrets Manager client, with an endpoint override for emulators.
pub fn secretsmanager_client(config: &aws_config::SdkConfig, endpoint: Option<&str>) -> Client {
    let mut b = aws_sdk_secretsmanager::config::Builder::from(config);
    if let Some(e) = endpoint {
        b = b.endpoint_url(e);
    }
    Client::from_conf(b.build())
}

/// A secret's current value: `SecretString` or `SecretBinary`.
pub enum SecretValue {
    String(String),
    Binary(Vec<u8>),
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretValue::String(_) => f.write_str("String(<redacted>)"),
            SecretValue::Binary(_) => f.write_str("Binary(<redacted>)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret could not be read: it does not exist, access was denied, or the service
    /// is unreachable.
    #[error("cannot read secret {id}: {reason}")]
    Unavailable { id: String, reason: String },
    #[error("secret {0} has no value")]
    Empty(String),
}

/// Reads the current version (`AWSCURRENT`) of a secret by ARN or name.
pub async fn get_secret_value(client: &Client, id: &str) -> Result<SecretValue, SecretError> {
    let out = client
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| SecretError::Unavailable {
            id: id.to_owned(),
            reason: DisplayErrorContext(&e).to_string(),
        })?;
    if let Some(s) = out.secret_string {
        return Ok(SecretValue::String(s));
    }
    match out.secret_binary {
        Some(b) => Ok(SecretValue::Binary(b.into_inner())),
        None => Err(SecretError::Empty(id.to_owned())),
    }
}
