//! Lambda function for `/admin/v1/...` (operator API) and `/console/...` (web console).
//! Configuration comes from the environment (see `winmdm_http::state::AppState::from_env`);
//! state is built once per cold start and the handler is `winmdm_http::admin::handle_with_console`.

// One request at a time per instance: one thread (see `winmdm_http::run_lambda`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    winmdm_http::run_lambda(winmdm_http::admin::handle_with_console).await
}
