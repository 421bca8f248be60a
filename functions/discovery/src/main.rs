//! Lambda function for `GET|POST /EnrollmentServer/Discovery.svc`.
//! Configuration comes from the environment (see `winmdm_http::state::AppState::from_env`);
//! state is built once per cold start and the handler is `winmdm_http::discovery::handle`.

// One request at a time per instance: one thread (see `winmdm_http::run_lambda`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    winmdm_http::run_lambda(winmdm_http::discovery::handle).await
}
