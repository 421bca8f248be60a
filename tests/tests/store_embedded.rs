//! The store conformance suite on the embedded redb store.

use std::sync::Arc;

use winmdm_core::store::Store;
use winmdm_e2e::conformance;
use winmdm_embedded::RedbStore;

fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStore::open(&dir.path().join("t.redb")).unwrap();
    (dir, Arc::new(s))
}

#[tokio::test]
async fn users() {
    let (_d, s) = store();
    conformance::users(s).await;
}

#[tokio::test]
async fn enrollment_commit_and_hw_replacement() {
    let (_d, s) = store();
    conformance::enrollment_commit_and_hw_replacement(s).await;
}

#[tokio::test]
async fn tokens_are_single_use() {
    let (_d, s) = store();
    conformance::tokens_are_single_use(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_races_have_one_winner() {
    let (_d, s) = store();
    conformance::concurrent_races_have_one_winner(s).await;
}

#[tokio::test]
async fn command_queue_and_management_state() {
    let (_d, s) = store();
    conformance::command_queue_and_management_state(s).await;
}

#[tokio::test]
async fn an_enrollment_in_flight_does_not_undo_a_block() {
    let (_d, s) = store();
    conformance::an_enrollment_in_flight_does_not_undo_a_block(s).await;
}

#[tokio::test]
async fn a_stale_message_does_not_reopen_a_settled_command() {
    let (_d, s) = store();
    conformance::a_stale_message_does_not_reopen_a_settled_command(s).await;
}

#[tokio::test]
async fn write_after_concurrent_change_keeps_both() {
    let (_d, s) = store();
    conformance::write_after_concurrent_change_keeps_both(s).await;
}

#[tokio::test]
async fn profiles_groups_and_states() {
    let (_d, s) = store();
    conformance::profiles_groups_and_states(s).await;
}

#[tokio::test]
async fn fleet_counters_follow_device_writes() {
    let (_d, s) = store();
    conformance::fleet_counters_follow_device_writes(s, &conformance::InTheWrites).await;
}

#[tokio::test]
async fn device_listing_pages_searches_and_sorts() {
    let (_d, s) = store();
    conformance::device_listing_pages_searches_and_sorts(s).await;
}

#[tokio::test]
async fn failed_commands_are_noted() {
    let (_d, s) = store();
    conformance::failed_commands_are_noted(s).await;
}

#[tokio::test]
async fn profile_counters_follow_state_writes() {
    let (_d, s) = store();
    conformance::profile_counters_follow_state_writes(s).await;
}
