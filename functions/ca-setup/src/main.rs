//! Lambda function behind the template's `CaSetup` custom resource: makes the KMS CA's
//! certificate once and writes the mutual-TLS truststore (see `winmdm_http::ca_setup`).

// One request at a time per instance: one thread (see `winmdm_http::run_lambda`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    winmdm_http::ca_setup::run().await
}
