//! The store conformance suite on DynamoDB (moto).

use std::sync::Arc;

use winmdm_core::store::Store;
use winmdm_e2e::conformance;
use winmdm_e2e::moto::Moto;

async fn store(moto: &Moto, name: &str) -> Arc<dyn Store> {
    Arc::new(moto.dynamo_store(name).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite_on_dynamodb() {
    let moto = Moto::start().await;
    conformance::users(store(&moto, "t-users").await).await;
    conformance::enrollment_commit_and_hw_replacement(store(&moto, "t-enroll").await).await;
    conformance::tokens_are_single_use(store(&moto, "t-tokens").await).await;
    conformance::command_queue_and_management_state(store(&moto, "t-queue").await).await;
    conformance::concurrent_races_have_one_winner(store(&moto, "t-race").await).await;
    conformance::write_after_concurrent_change_keeps_both(store(&moto, "t-cc").await).await;
    conformance::profiles_groups_and_states(store(&moto, "t-profiles").await).await;
}
