//! Errors, each with the exit code scripts can rely on and a message that says what to do.

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("the admin API refused the request: {0}")]
    Invalid(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error(
        "the admin API refused the credentials ({0}). Locally, pass --token or set WINMDM_TOKEN \
         (winmdm-local writes it to <data-dir>/admin-token); on AWS, check your AWS credentials \
         and that they may call execute-api:Invoke on the admin API"
    )]
    Unauthorized(String),
    #[error(
        "cannot reach the admin API at {0}: {1}. Is the server running? Set --api-url or WINMDM_API_URL"
    )]
    Unreachable(String, String),
    #[error("{0}")]
    Conflict(String),
    #[error(
        "gave up waiting after {0} s; the command is still {1}: check later with `winmdm commands show`"
    )]
    Timeout(u64, String),
    #[error("the device answered the command with status {0}")]
    CommandFailed(String),
    #[error("{0}")]
    ProfileFailed(String),
    #[error("the admin API failed (HTTP {0}): {1}; try again")]
    Server(u16, String),
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// Exit codes, as documented in `winmdm --help`.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Other(_) | CliError::Server(..) => 1,
            CliError::Usage(_) | CliError::Invalid(_) => 2,
            CliError::NotFound(_) => 3,
            CliError::Unauthorized(_) => 4,
            CliError::Unreachable(..) => 5,
            CliError::Conflict(_) => 6,
            CliError::Timeout(..) => 7,
            CliError::CommandFailed(_) | CliError::ProfileFailed(_) => 8,
        }
    }
}
