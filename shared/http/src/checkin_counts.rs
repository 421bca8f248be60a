//! The `checkin-counts` function: reads the table's DynamoDB stream (device items only,
//! by the template's filter) and keeps the overview's check-in counters
//! (`winmdm_aws::checkin_counts`). Not an HTTP endpoint: Lambda's event source mapping
//! invokes it with a batch of stream records and retries the batch if it fails.

use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use tracing::{info, warn};
use winmdm_aws::checkin_counts::{CheckinCounts, StreamEvent};

use crate::logging;

pub async fn run() -> Result<(), lambda_http::Error> {
    logging::init();
    let table = std::env::var("WINMDM_TABLE")
        .map_err(|_| lambda_http::Error::from("WINMDM_TABLE is not set"))?;
    let sdk = winmdm_aws::sdk_config(None, None).await;
    let endpoint = std::env::var("WINMDM_DYNAMODB_ENDPOINT").ok();
    let counts: &'static CheckinCounts = Box::leak(Box::new(CheckinCounts::new(
        winmdm_aws::dynamodb_client(&sdk, endpoint.as_deref()),
        table,
    )));
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<StreamEvent>| async move {
            let request_id = event.context.request_id;
            match counts.apply(&event.payload.records).await {
                Ok(a) => {
                    info!(
                        request_id = %request_id,
                        records = a.records,
                        devices = a.devices,
                        skipped = a.skipped,
                        items_written = a.items_written,
                        transactions = a.transactions,
                        "check-in counts"
                    );
                    Ok(())
                }
                Err(e) => {
                    // Lambda retries the whole batch; its committed part is idempotent.
                    warn!(request_id = %request_id, error = %e, "check-in counts failed");
                    Err(lambda_http::Error::from(e))
                }
            }
        },
    ))
    .await
}
