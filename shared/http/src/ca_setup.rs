//! The `ca-setup` function: CloudFormation's custom resource that makes the CA
//! certificate (KMS) and writes the mutual-TLS truststore, and creates the first user
//! (`winmdm_aws::setup`). Not an
//! HTTP endpoint: CloudFormation invokes it with the request and waits for the answer at
//! the request's pre-signed `ResponseURL`.

use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use tracing::{error, info};
use winmdm_aws::setup::{self, CustomResourceRequest, SetupClients};

use crate::logging;

pub async fn run() -> Result<(), lambda_http::Error> {
    logging::init();
    let sdk = winmdm_aws::sdk_config(None, None).await;
    let dynamo = std::env::var("WINMDM_TABLE")
        .ok()
        .map(|table| winmdm_aws::DynamoStore::new(winmdm_aws::dynamodb_client(&sdk, None), table));
    let store = dynamo
        .clone()
        .map(|d| std::sync::Arc::new(d) as std::sync::Arc<dyn winmdm_core::store::Store>);
    let clients: &'static SetupClients = Box::leak(Box::new(SetupClients {
        kms: winmdm_aws::kms_client(&sdk, None),
        pca: winmdm_aws::acmpca_client(&sdk, None),
        s3: winmdm_aws::s3_client(&sdk, None),
        secrets: winmdm_aws::secrets::secretsmanager_client(&sdk, None),
        store,
        dynamo,
    }));
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<CustomResourceRequest>| async move {
            let req = event.payload;
            let resp = setup::handle(clients, &req).await;
            // The ResponseURL is a pre-signed credential: never logged.
            info!(
                request_type = ?req.request_type,
                logical_resource_id = %req.logical_resource_id,
                status = resp.status,
                reason = %resp.reason,
                "ca setup"
            );
            if let Err(e) = setup::put_response(&req.response_url, &resp).await {
                error!(error = %e, "could not answer CloudFormation");
                return Err(lambda_http::Error::from(e));
            }
            Ok::<_, lambda_http::Error>(())
        },
    ))
    .await
}
