//! Lambda function behind the table's stream: keeps the overview's check-in counters
//! (see `winmdm_http::checkin_counts`).

// One batch at a time per instance: one thread (see `winmdm_http::run_lambda`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    winmdm_http::checkin_counts::run().await
}
