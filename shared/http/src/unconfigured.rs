//! What a Lambda function built without a store or a CA gets in their place.
//!
//! Each function is built with only the adapters its handler calls (the Cargo features
//! of this crate; see `functions/*/Cargo.toml`): discovery keeps no data and issues
//! nothing; auth, policy and admin never touch the CA. They still share one
//! [`crate::AppState`], so the missing adapter is one of these: every call fails with an
//! error that names the function's build, which a handler turns into a 500 and a log
//! line. None of them is reachable from the handlers those functions serve: a call here is
//! a build mistake (a handler given to the wrong function), never a fallback.

use async_trait::async_trait;
use winmdm_core::ca::{CaChain, CaError, CertificateAuthority, IssueRequest, IssuedCertificate};
use winmdm_core::commands::{FailedCommandNote, QueuedCommand};
use winmdm_core::device_listing::{ShardRead, SummaryBatch};
use winmdm_core::fleet_stats::KeyRange;
use winmdm_core::model::{Device, Page, PageRequest, User};
use winmdm_core::profiles::{DeviceProfile, Group, Profile};
use winmdm_core::session::{ManagementSnapshot, ManagementUpdate};
use winmdm_core::store::{EnrollmentCommit, Store, StoreError};

const NO_STORE: &str = "this function was built without a store";
const NO_CA: &str = "this function was built without a certificate authority";

/// The store of a function that keeps no data (discovery).
#[derive(Debug, Default)]
pub struct NoStore;

fn no_store<T>() -> Result<T, StoreError> {
    Err(StoreError::Unavailable(NO_STORE.to_owned()))
}

#[async_trait]
impl Store for NoStore {
    async fn create_user(&self, _: &User) -> Result<(), StoreError> {
        no_store()
    }
    async fn get_user(&self, _: &str) -> Result<Option<User>, StoreError> {
        no_store()
    }
    async fn list_users(&self, _: &PageRequest) -> Result<Page<User>, StoreError> {
        no_store()
    }
    async fn delete_user(&self, _: &str) -> Result<bool, StoreError> {
        no_store()
    }
    async fn get_device(&self, _: &str) -> Result<Option<Device>, StoreError> {
        no_store()
    }
    async fn get_device_by_hw_dev_id(&self, _: &str) -> Result<Option<Device>, StoreError> {
        no_store()
    }
    async fn user_has_blocked_device(&self, _: &str) -> Result<bool, StoreError> {
        no_store()
    }
    async fn read_device_summaries(
        &self,
        _: &[ShardRead],
    ) -> Result<Vec<SummaryBatch>, StoreError> {
        no_store()
    }
    async fn read_counters(&self, _: &[KeyRange]) -> Result<Vec<(String, i64)>, StoreError> {
        no_store()
    }
    async fn is_token_consumed(&self, _: &str) -> Result<bool, StoreError> {
        no_store()
    }
    async fn commit_enrollment(&self, _: &EnrollmentCommit) -> Result<(), StoreError> {
        no_store()
    }
    async fn load_management(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Option<ManagementSnapshot>, StoreError> {
        no_store()
    }
    async fn save_management(&self, _: &ManagementUpdate) -> Result<(), StoreError> {
        no_store()
    }
    async fn create_profile(&self, _: &Profile) -> Result<(), StoreError> {
        no_store()
    }
    async fn update_profile(&self, _: &Profile, _: u64) -> Result<(), StoreError> {
        no_store()
    }
    async fn get_profile(&self, _: &str) -> Result<Option<Profile>, StoreError> {
        no_store()
    }
    async fn list_profiles(&self) -> Result<Vec<Profile>, StoreError> {
        no_store()
    }
    async fn delete_profile(&self, _: &str) -> Result<bool, StoreError> {
        no_store()
    }
    async fn create_group(&self, _: &Group) -> Result<(), StoreError> {
        no_store()
    }
    async fn get_group(&self, _: &str) -> Result<Option<Group>, StoreError> {
        no_store()
    }
    async fn list_groups(&self) -> Result<Vec<Group>, StoreError> {
        no_store()
    }
    async fn delete_group(&self, _: &str) -> Result<bool, StoreError> {
        no_store()
    }
    async fn list_group_devices(
        &self,
        _: &str,
        _: &PageRequest,
    ) -> Result<Page<String>, StoreError> {
        no_store()
    }
    async fn list_profile_devices(
        &self,
        _: &str,
        _: &PageRequest,
    ) -> Result<Page<DeviceProfile>, StoreError> {
        no_store()
    }
    async fn enqueue_command(&self, _: &QueuedCommand) -> Result<(), StoreError> {
        no_store()
    }
    async fn recent_failed_commands(&self, _: usize) -> Result<Vec<FailedCommandNote>, StoreError> {
        no_store()
    }
    async fn get_command(&self, _: &str, _: &str) -> Result<Option<QueuedCommand>, StoreError> {
        no_store()
    }
    async fn list_commands(
        &self,
        _: &str,
        _: &PageRequest,
    ) -> Result<Page<QueuedCommand>, StoreError> {
        no_store()
    }
}

/// The CA of a function that neither issues nor checks certificates (discovery, auth,
/// policy, admin).
#[derive(Debug, Default)]
pub struct NoCa;

#[async_trait]
impl CertificateAuthority for NoCa {
    async fn chain(&self) -> Result<std::sync::Arc<CaChain>, CaError> {
        Err(CaError::Internal(NO_CA.to_owned()))
    }
    async fn issue(&self, _: &IssueRequest<'_>) -> Result<IssuedCertificate, CaError> {
        Err(CaError::Internal(NO_CA.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_call_says_what_the_build_lacks() {
        let e = NoStore.get_device("d").await.unwrap_err();
        assert!(e.to_string().contains("built without a store"), "{e}");
        let e = NoCa.chain().await.unwrap_err();
        assert!(
            e.to_string()
                .contains("built without a certificate authority"),
            "{e}"
        );
    }
}
