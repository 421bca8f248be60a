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

/// A secret named by ARN, read through a client made on its first read.
///
/// The functions read their secrets when first needed (the token key on the first token,
/// the console key on the first console request), a Secrets Manager round trip then; making
/// the client then too keeps it out of every cold start (≈ 0.1 ms each, measured with
/// `infra/bench/coldstart.sh`) and adds nothing a first read does not already wait for.
pub struct Secret {
    config: aws_config::SdkConfig,
    endpoint: Option<String>,
    id: String,
    client: std::sync::OnceLock<Client>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Secret {
    /// The secret `id` (an ARN or name), through Secrets Manager at `endpoint` when given.
    pub fn new(config: &aws_config::SdkConfig, endpoint: Option<&str>, id: String) -> Self {
        Self {
            config: config.clone(),
            endpoint: endpoint.map(str::to_owned),
            id,
            client: std::sync::OnceLock::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the client has been made (it is, on the first read).
    pub fn has_client(&self) -> bool {
        self.client.get().is_some()
    }

    /// Reads the secret's current value.
    pub async fn read(&self) -> Result<SecretValue, SecretError> {
        let client = self
            .client
            .get_or_init(|| secretsmanager_client(&self.config, self.endpoint.as_deref()));
        get_secret_value(client, &self.id).await
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Making a `Secret` makes no client (the cold start pays nothing); reading does.
    #[tokio::test]
    async fn the_client_is_made_on_the_first_read() {
        let config = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build();
        // A closed port: the read fails, but only after the client is made.
        let secret = Secret::new(&config, Some("http://127.0.0.1:9"), "arn:test".into());
        assert!(!secret.has_client());
        let err = secret.read().await.expect_err("nothing listens there");
        assert!(matches!(err, SecretError::Unavailable { ref id, .. } if id == "arn:test"));
        assert!(secret.has_client());
    }
}
