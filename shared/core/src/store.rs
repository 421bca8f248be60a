//! The storage trait. Implemented by the embedded redb store and by DynamoDB; every method
//! is one atomic operation, so a failure never leaves half a change behind.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::commands::QueuedCommand;
use crate::device_listing::{ShardRead, SummaryBatch};
use crate::model::{Device, Page, PageRequest, User};
use crate::profiles::{DeviceProfile, Group, Profile};
use crate::session::{ManagementSnapshot, ManagementUpdate};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error("the sign-in token was already used")]
    TokenReplayed,
    #[error("{0} not found")]
    NotFound(String),
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// An enrollment the records as they are at commit no longer allow (see
    /// [`crate::identity::recheck_at_commit`]). Nothing is written.
    #[error("{0}")]
    EnrollmentRefused(crate::identity::EnrollmentRefusal),
}

/// A single-use token being spent, kept until it would have expired anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedToken {
    pub id: String,
    pub expires_at: OffsetDateTime,
}

/// Everything a successful enrollment writes, committed as one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentCommit {
    pub device: Device,
    /// The federated sign-in token this enrollment spends, if any.
    pub token: Option<ConsumedToken>,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// The largest record (a session state, a command with its results) the store can
    /// hold, if it has a limit: the management service keeps what it buffers below it.
    fn max_record_bytes(&self) -> Option<usize> {
        None
    }

    /// The most records one write (one management message's `save_management`) may hold,
    /// if the store has a limit (DynamoDB: 100 items per transaction): the management
    /// service sends no more per message than that allows.
    fn max_items_per_write(&self) -> Option<usize> {
        None
    }

    /// Adds a user; `Conflict` if the UPN exists.
    async fn create_user(&self, user: &User) -> Result<(), StoreError>;
    async fn get_user(&self, upn: &str) -> Result<Option<User>, StoreError>;
    async fn list_users(&self, page: &PageRequest) -> Result<Page<User>, StoreError>;
    /// Removes a user; `false` if there was none.
    async fn delete_user(&self, upn: &str) -> Result<bool, StoreError>;

    async fn get_device(&self, id: &str) -> Result<Option<Device>, StoreError>;
    async fn get_device_by_hw_dev_id(&self, hw_dev_id: &str) -> Result<Option<Device>, StoreError>;
    /// Whether any device of this user is blocked. The store keeps an index of blocked
    /// devices by user, maintained by every write that changes a device's status.
    async fn user_has_blocked_device(&self, upn: &str) -> Result<bool, StoreError>;
    /// How many runs the device listing is split into (`crate::device_listing`): a store
    /// with partitions spreads summaries so that no partition takes every device's writes.
    fn listing_shards(&self) -> u32 {
        1
    }
    /// Device summaries for each read, in the same order: per listing run, the summaries
    /// with DeviceIDs after `after`, in DeviceID order, at most `limit`.
    async fn read_device_summaries(
        &self,
        reads: &[ShardRead],
    ) -> Result<Vec<SummaryBatch>, StoreError>;

    /// The fleet counters (`crate::fleet_stats`) in `ranges`, in key order per range. Every
    /// write that changes a device changes them in the same transaction.
    async fn read_counters(
        &self,
        ranges: &[crate::fleet_stats::KeyRange],
    ) -> Result<Vec<(String, i64)>, StoreError>;

    /// Whether a single-use token was already spent.
    async fn is_token_consumed(&self, token_id: &str) -> Result<bool, StoreError>;

    /// Records an enrollment atomically:
    /// - spends `token` (fails with `TokenReplayed`, writing nothing, if it was spent);
    /// - if another device record holds the same HWDevID, that record is replaced: it is
    ///   removed along with its HWDevID index entry;
    /// - writes the device (replacing a record with the same id) and its HWDevID index.
    ///
    /// A record with the same id but a different, known HWDevID that still holds its
    /// hardware (enrolled or blocked) is another machine: `Conflict`, and nothing is
    /// written. Who may enroll over whom is decided before, in `crate::identity`.
    async fn commit_enrollment(&self, commit: &EnrollmentCommit) -> Result<(), StoreError>;

    /// Reads what a management message needs: the device, the session state stored in
    /// `slot` (see [`SessionState::slot`](crate::session::SessionState)) unless expired, and
    /// the device's open commands (oldest first). `None` if the device is unknown.
    async fn load_management(
        &self,
        device_id: &str,
        slot: &str,
    ) -> Result<Option<ManagementSnapshot>, StoreError>;

    /// Writes a management message's changes atomically: the device patch, the session
    /// state, and the changed commands. `NotFound` if the device is gone.
    async fn save_management(&self, update: &ManagementUpdate) -> Result<(), StoreError>;

    // ---- Configuration profiles ---------------------------------------------------------

    /// Adds a profile; `Conflict` if its id, or its name (case-insensitively), is taken.
    async fn create_profile(&self, profile: &Profile) -> Result<(), StoreError>;
    /// Replaces a profile if its stored `version` is `expect_version` (else `Conflict`);
    /// `Conflict` too if the new name is another profile's; `NotFound` if there is none.
    async fn update_profile(
        &self,
        profile: &Profile,
        expect_version: u64,
    ) -> Result<(), StoreError>;
    async fn get_profile(&self, id: &str) -> Result<Option<Profile>, StoreError>;
    /// Every profile, by id. The catalog is small (at most `MAX_PROFILES`): the management
    /// service caches it per process.
    async fn list_profiles(&self) -> Result<Vec<Profile>, StoreError>;
    /// Removes a profile; `false` if there was none. Devices remove its nodes at their next
    /// session (their state records stay until then).
    async fn delete_profile(&self, id: &str) -> Result<bool, StoreError>;

    /// Adds a group; `Conflict` if the name is taken.
    async fn create_group(&self, group: &Group) -> Result<(), StoreError>;
    async fn get_group(&self, name: &str) -> Result<Option<Group>, StoreError>;
    /// Every group, by name (bounded like the profile catalog).
    async fn list_groups(&self) -> Result<Vec<Group>, StoreError>;
    /// Removes a group; `false` if there was none. Devices keep the name in their `groups`
    /// until edited, but nothing can target it any more.
    async fn delete_group(&self, name: &str) -> Result<bool, StoreError>;
    /// The ids of the devices in a group, by id. Membership is on the device record
    /// (`Device::groups`, changed through `DevicePatch::groups`), indexed by the store.
    async fn list_group_devices(
        &self,
        group: &str,
        page: &PageRequest,
    ) -> Result<Page<String>, StoreError>;

    /// One profile's state on every device that has one, by device id (indexed; no scan).
    async fn list_profile_devices(
        &self,
        profile_id: &str,
        page: &PageRequest,
    ) -> Result<Page<DeviceProfile>, StoreError>;

    /// Queues a command for its device; `NotFound` if the device is unknown.
    async fn enqueue_command(&self, command: &QueuedCommand) -> Result<(), StoreError>;
    /// The newest notes of failed commands, newest first (each command at most once).
    /// A store writes a note in the same write that records a command as failed.
    async fn recent_failed_commands(
        &self,
        limit: usize,
    ) -> Result<Vec<crate::commands::FailedCommandNote>, StoreError>;
    async fn get_command(
        &self,
        device_id: &str,
        command_id: &str,
    ) -> Result<Option<QueuedCommand>, StoreError>;
    /// A device's commands, oldest first.
    async fn list_commands(
        &self,
        device_id: &str,
        page: &PageRequest,
    ) -> Result<Page<QueuedCommand>, StoreError>;
}
