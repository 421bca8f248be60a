//! The embedded store: one redb file.
//!
//! Why redb rather than SQLite: it is pure Rust (no C toolchain, quick to build and to
//! cross-compile), ACID with serialisable write transactions across tables, and crash-safe
//! with copy-on-write B-trees — all a single-process server needs. Records are JSON, the
//! same shape the admin API returns, which keeps the file inspectable and migrations easy.
//!
//! Tables (all `&str` keys):
//! - `users`: normalised UPN → `User`
//! - `devices`: device id → `Device`
//! - `devices_by_hw`: lower-cased HWDevID → device id
//! - `consumed_tokens`: token id → expiry (unix seconds)
//! - `token_expiry`: `"<expiry:020>/<token id>"` → (), to purge spent tokens in expiry order
//! - `sessions`: `"<device id>/<session id>"` → `SessionState`
//! - `commands`: `"<device id>/<command id>"` → `QueuedCommand` (ids sort by creation time)
//! - `open_commands`: the same keys, for pending and sent commands only
//! - `blocked_by_user`: `"<upn>\0<device id>"` → (), the blocked devices of a user
//! - `profiles`: profile id → `Profile`
//! - `profile_names`: lower-cased profile name → profile id (names are unique, any case)
//! - `groups`: group name → `Group`
//! - `group_devices`: `"<group>\0<device id>"` → (), the index of `Device::groups`,
//!   maintained by every write of a device record
//! - `device_profiles`: `"<device id>/<profile id>"` → `DeviceProfile`
//! - `profile_devices`: `"<profile id>\0<device id>"` → (), the same states by profile
//!
//! Device ids never contain `/` (enrollment validates them), so `"<device id>/"` prefixes
//! select exactly one device's rows.

use std::path::Path;
use std::sync::Arc;

use crate::group_commit::Db;
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use winmdm_core::commands::{CommandState, FailedCommandNote, QueuedCommand};
use winmdm_core::device_listing::{DeviceSummary, ShardRead, SummaryBatch};
use winmdm_core::fleet_stats::{self, CounterDelta, KeyRange};
use winmdm_core::model::{Device, DeviceStatus, Page, PageRequest, User};
use winmdm_core::profiles::{DeviceProfile, Group, Profile};
use winmdm_core::session::{ManagementSnapshot, ManagementUpdate, SessionState, SessionWrite};
use winmdm_core::store::{EnrollmentCommit, Store, StoreError};

const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
const DEVICES_BY_HW: TableDefinition<&str, &str> = TableDefinition::new("devices_by_hw");
const CONSUMED_TOKENS: TableDefinition<&str, i64> = TableDefinition::new("consumed_tokens");
const TOKEN_EXPIRY: TableDefinition<&str, ()> = TableDefinition::new("token_expiry");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const COMMANDS: TableDefinition<&str, &[u8]> = TableDefinition::new("commands");
const OPEN_COMMANDS: TableDefinition<&str, ()> = TableDefinition::new("open_commands");
/// Blocked devices by user: `<upn>\0<device id>`.
const BLOCKED_BY_USER: TableDefinition<&str, ()> = TableDefinition::new("blocked_by_user");

const PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("profiles");
/// Lower-cased profile name → profile id.
const PROFILE_NAMES: TableDefinition<&str, &str> = TableDefinition::new("profile_names");
const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");
/// Group members: `<group>\0<device id>`.
const GROUP_DEVICES: TableDefinition<&str, ()> = TableDefinition::new("group_devices");
/// Profile states: `<device id>/<profile id>` → `DeviceProfile`.
const DEVICE_PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("device_profiles");
/// Profile states by profile: `<profile id>\0<device id>`.
const PROFILE_DEVICES: TableDefinition<&str, ()> = TableDefinition::new("profile_devices");
/// Fleet counters (`winmdm_core::fleet_stats`), changed in the transaction of the write
/// that changes a device.
const COUNTERS: TableDefinition<&str, i64> = TableDefinition::new("counters");
/// DeviceID → its listing summary (`winmdm_core::device_listing`), kept by every write of a
/// device record, so listing and searching never decode whole device records.
const DEVICE_LIST: TableDefinition<&str, &[u8]> = TableDefinition::new("device_list");
/// `<failed at, epoch ns, 20 digits>/<device>/<command>` → the failure's note, the newest
/// [`FailedCommandNote::KEPT`] kept.
const FAILED_COMMANDS: TableDefinition<&str, &[u8]> = TableDefinition::new("failed_commands");

fn blocked_key(upn: &str, device_id: &str) -> String {
    format!("{upn}\0{device_id}")
}

fn member_key(group: &str, device_id: &str) -> String {
    format!("{group}\0{device_id}")
}

fn profile_device_key(profile_id: &str, device_id: &str) -> String {
    format!("{profile_id}\0{device_id}")
}

fn profile_name_key(name: &str) -> String {
    name.to_lowercase()
}

/// Brings the group index in line with a device record's change from `old` to `new`
/// groups (either side empty for a record written or removed).
fn index_groups(
    idx: &mut redb::Table<&str, ()>,
    device_id: &str,
    old: &[String],
    new: &[String],
) -> Result<(), StoreError> {
    for g in old.iter().filter(|g| !new.contains(g)) {
        idx.remove(member_key(g, device_id).as_str())
            .map_err(unavailable)?;
    }
    for g in new.iter().filter(|g| !old.contains(g)) {
        idx.insert(member_key(g, device_id).as_str(), ())
            .map_err(unavailable)?;
    }
    Ok(())
}

/// How many expired tokens one enrollment purges, so cleanup cost stays bounded.
const PURGE_BATCH: usize = 64;

#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Db>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

/// Adds a write's counter changes, in its transaction.
fn apply_counters(tx: &redb::WriteTransaction, deltas: &[CounterDelta]) -> Result<(), StoreError> {
    if deltas.is_empty() {
        return Ok(());
    }
    let mut counters = tx.open_table(COUNTERS).map_err(unavailable)?;
    for (k, d) in deltas {
        let v = counters
            .get(k.as_str())
            .map_err(unavailable)?
            .map_or(0, |v| v.value());
        counters.insert(k.as_str(), v + d).map_err(unavailable)?;
    }
    Ok(())
}

/// Keeps the listing in step with a device record: `before` is the stored record (if
/// any), `after` what replaces it (`None`: the record is gone). Writes only when the
/// summary changed.
fn index_listing(
    tx: &redb::WriteTransaction,
    id: &str,
    before: Option<&Device>,
    after: Option<&Device>,
) -> Result<(), StoreError> {
    let old = before.map(DeviceSummary::of);
    let new = after.map(DeviceSummary::of);
    if old == new && before.is_some() {
        return Ok(());
    }
    let mut list = tx.open_table(DEVICE_LIST).map_err(unavailable)?;
    match new {
        Some(s) => list
            .insert(id, encode(&s)?.as_slice())
            .map_err(unavailable)
            .map(drop),
        None => list.remove(id).map_err(unavailable).map(drop),
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn hw_key(hw: &str) -> String {
    hw.to_ascii_lowercase()
}

impl RedbStore {
    /// Opens (or creates) the store file and its tables.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(unavailable)?;
        let tx = db.begin_write().map_err(unavailable)?;
        {
            tx.open_table(USERS).map_err(unavailable)?;
            tx.open_table(DEVICES).map_err(unavailable)?;
            tx.open_table(DEVICES_BY_HW).map_err(unavailable)?;
            tx.open_table(CONSUMED_TOKENS).map_err(unavailable)?;
            tx.open_table(TOKEN_EXPIRY).map_err(unavailable)?;
            tx.open_table(SESSIONS).map_err(unavailable)?;
            tx.open_table(COMMANDS).map_err(unavailable)?;
            tx.open_table(OPEN_COMMANDS).map_err(unavailable)?;
            tx.open_table(BLOCKED_BY_USER).map_err(unavailable)?;
            tx.open_table(PROFILES).map_err(unavailable)?;
            tx.open_table(PROFILE_NAMES).map_err(unavailable)?;
            tx.open_table(GROUPS).map_err(unavailable)?;
            tx.open_table(GROUP_DEVICES).map_err(unavailable)?;
            tx.open_table(DEVICE_PROFILES).map_err(unavailable)?;
            tx.open_table(PROFILE_DEVICES).map_err(unavailable)?;
            tx.open_table(FAILED_COMMANDS).map_err(unavailable)?;
            // A store written before the listing existed: summarise its devices once.
            let mut list = tx.open_table(DEVICE_LIST).map_err(unavailable)?;
            if list.len().map_err(unavailable)? == 0 {
                let devices = tx.open_table(DEVICES).map_err(unavailable)?;
                for row in devices.iter().map_err(unavailable)? {
                    let (k, v) = row.map_err(unavailable)?;
                    let d = decode::<Device>(v.value())?;
                    list.insert(k.value(), encode(&DeviceSummary::of(&d))?.as_slice())
                        .map_err(unavailable)?;
                }
            }
            drop(list);
            // A store written before counters existed: count its devices once.
            let mut counters = tx.open_table(COUNTERS).map_err(unavailable)?;
            if counters.len().map_err(unavailable)? == 0 {
                let devices = tx.open_table(DEVICES).map_err(unavailable)?;
                let mut all = Vec::new();
                for row in devices.iter().map_err(unavailable)? {
                    let (_, v) = row.map_err(unavailable)?;
                    all.push(decode::<Device>(v.value())?);
                }
                for (k, v) in fleet_stats::rebuild(&all) {
                    counters.insert(k.as_str(), v).map_err(unavailable)?;
                }
            }
        }
        tx.commit().map_err(unavailable)?;
        Ok(Self {
            db: Arc::new(Db::new(db)),
        })
    }

    /// Durable commits (fsyncs) made since the store was opened: with group commit, fewer
    /// than the writes under concurrency (`crate::group_commit`).
    pub fn durable_commits(&self) -> u64 {
        self.db.flushes()
    }

    /// Runs a write on the store's writer thread, in a transaction shared with the writes
    /// queued with it (`crate::group_commit`); returns once it is durable. `write` may
    /// run twice (when another write of its batch fails): it must depend only on what it
    /// captured and what it reads.
    async fn write<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&redb::WriteTransaction) -> Result<T, StoreError> + Send + Sync + 'static,
    {
        self.db.write(write).await
    }

    /// Runs blocking redb work off the async executor.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }

    fn get_json<T: DeserializeOwned>(
        db: &Db,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let tx = db.begin_read().map_err(unavailable)?;
        let t = tx.open_table(table).map_err(unavailable)?;
        match t.get(key).map_err(unavailable)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    fn page_json<T: DeserializeOwned>(
        db: &Db,
        table: TableDefinition<&str, &[u8]>,
        page: &PageRequest,
    ) -> Result<Page<T>, StoreError> {
        Self::page_prefixed(db, table, "", page)
    }

    /// A page of the rows whose keys start with `prefix`, in key order.
    fn page_prefixed<T: DeserializeOwned>(
        db: &Db,
        table: TableDefinition<&str, &[u8]>,
        prefix: &str,
        page: &PageRequest,
    ) -> Result<Page<T>, StoreError> {
        let after = decode_page_cursor(page)?;
        let tx = db.begin_read().map_err(unavailable)?;
        let t = tx.open_table(table).map_err(unavailable)?;
        let start = page_start(&after, prefix)?;
        let range = t
            .range::<&str>((start, std::ops::Bound::Unbounded))
            .map_err(unavailable)?;
        let mut items = Vec::with_capacity(page.limit);
        let mut last_key = None;
        let mut more = false;
        for entry in range {
            let (k, v) = entry.map_err(unavailable)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            if items.len() == page.limit {
                more = true;
                break;
            }
            items.push(decode(v.value())?);
            last_key = Some(k.value().to_owned());
        }
        Ok(Page {
            items,
            next: if more {
                last_key.map(|k| B64URL.encode(k))
            } else {
                None
            },
        })
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let user = user.clone();
        self.write(move |tx| {
            {
                let mut t = tx.open_table(USERS).map_err(unavailable)?;
                if t.get(user.upn.as_str()).map_err(unavailable)?.is_some() {
                    return Err(StoreError::Conflict(format!("user {}", user.upn)));
                }
                t.insert(user.upn.as_str(), encode(&user)?.as_slice())
                    .map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }

    async fn get_user(&self, upn: &str) -> Result<Option<User>, StoreError> {
        let upn = upn.to_owned();
        self.blocking(move |db| Self::get_json(db, USERS, &upn))
            .await
    }

    async fn list_users(&self, page: &PageRequest) -> Result<Page<User>, StoreError> {
        let page = page.clone();
        self.blocking(move |db| Self::page_json(db, USERS, &page))
            .await
    }

    async fn delete_user(&self, upn: &str) -> Result<bool, StoreError> {
        let upn = upn.to_owned();
        self.write(move |tx| {
            let existed = {
                let mut t = tx.open_table(USERS).map_err(unavailable)?;
                t.remove(upn.as_str()).map_err(unavailable)?.is_some()
            };
            Ok(existed)
        })
        .await
    }

    async fn get_device(&self, id: &str) -> Result<Option<Device>, StoreError> {
        let id = id.to_owned();
        self.blocking(move |db| Self::get_json(db, DEVICES, &id))
            .await
    }

    async fn user_has_blocked_device(&self, upn: &str) -> Result<bool, StoreError> {
        let prefix = blocked_key(upn, "");
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let idx = tx.open_table(BLOCKED_BY_USER).map_err(unavailable)?;
            Ok(!keys_with_prefix(&idx, &prefix)?.is_empty())
        })
        .await
    }

    async fn get_device_by_hw_dev_id(&self, hw_dev_id: &str) -> Result<Option<Device>, StoreError> {
        let hw = hw_key(hw_dev_id);
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let idx = tx.open_table(DEVICES_BY_HW).map_err(unavailable)?;
            let Some(id) = idx.get(hw.as_str()).map_err(unavailable)? else {
                return Ok(None);
            };
            let devices = tx.open_table(DEVICES).map_err(unavailable)?;
            match devices.get(id.value()).map_err(unavailable)? {
                Some(v) => Ok(Some(decode(v.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn read_device_summaries(
        &self,
        reads: &[ShardRead],
    ) -> Result<Vec<SummaryBatch>, StoreError> {
        let reads = reads.to_vec();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let list = tx.open_table(DEVICE_LIST).map_err(unavailable)?;
            let mut out = Vec::with_capacity(reads.len());
            for r in &reads {
                // One run: the shard number is always 0 here.
                let start = match &r.after {
                    Some(a) => std::ops::Bound::Excluded(a.as_str()),
                    None => std::ops::Bound::Unbounded,
                };
                let mut batch = SummaryBatch::default();
                for row in list
                    .range::<&str>((start, std::ops::Bound::Unbounded))
                    .map_err(unavailable)?
                {
                    if batch.items.len() == r.limit {
                        batch.more = true;
                        break;
                    }
                    let (_, v) = row.map_err(unavailable)?;
                    batch.items.push(decode(v.value())?);
                }
                out.push(batch);
            }
            Ok(out)
        })
        .await
    }

    async fn read_counters(&self, ranges: &[KeyRange]) -> Result<Vec<(String, i64)>, StoreError> {
        let ranges = ranges.to_vec();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let counters = tx.open_table(COUNTERS).map_err(unavailable)?;
            let mut out = Vec::new();
            for r in &ranges {
                for row in counters
                    .range(r.from.as_str()..r.to.as_str())
                    .map_err(unavailable)?
                {
                    let (k, v) = row.map_err(unavailable)?;
                    out.push((k.value().to_owned(), v.value()));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn is_token_consumed(&self, token_id: &str) -> Result<bool, StoreError> {
        let id = token_id.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let t = tx.open_table(CONSUMED_TOKENS).map_err(unavailable)?;
            Ok(t.get(id.as_str()).map_err(unavailable)?.is_some())
        })
        .await
    }

    async fn commit_enrollment(&self, commit: &EnrollmentCommit) -> Result<(), StoreError> {
        let commit = commit.clone();
        self.write(move |tx| {
            let now = OffsetDateTime::now_utc().unix_timestamp();
            {
                let mut tokens = tx.open_table(CONSUMED_TOKENS).map_err(unavailable)?;
                let mut expiry = tx.open_table(TOKEN_EXPIRY).map_err(unavailable)?;
                purge_expired_tokens(&mut tokens, &mut expiry, now)?;
                if let Some(token) = &commit.token {
                    if tokens
                        .get(token.id.as_str())
                        .map_err(unavailable)?
                        .is_some()
                    {
                        // Dropping the transaction without commit writes nothing.
                        return Err(StoreError::TokenReplayed);
                    }
                    let exp = token.expires_at.unix_timestamp();
                    tokens.insert(token.id.as_str(), exp).map_err(unavailable)?;
                    expiry
                        .insert(format!("{:020}/{}", exp.max(0), token.id).as_str(), ())
                        .map_err(unavailable)?;
                }

                let device = &commit.device;
                let mut devices = tx.open_table(DEVICES).map_err(unavailable)?;
                let mut by_hw = tx.open_table(DEVICES_BY_HW).map_err(unavailable)?;
                let mut members = tx.open_table(GROUP_DEVICES).map_err(unavailable)?;
                // The groups of the record this one replaces, if any.
                let mut old_groups = Vec::new();
                // The records this enrollment replaces, for the fleet counters.
                let mut replaced: Vec<Device> = Vec::new();

                // The decision again, from the records as they are in this transaction: a
                // block, or another user's enrollment, since the first one stands.
                {
                    let read = |id: &str| -> Result<Option<Device>, StoreError> {
                        devices
                            .get(id)
                            .map_err(unavailable)?
                            .map(|v| decode::<Device>(v.value()))
                            .transpose()
                    };
                    let by_id = read(&device.id)?;
                    let hw_holder = match &device.hw_dev_id {
                        Some(hw) => match by_hw.get(hw_key(hw).as_str()).map_err(unavailable)? {
                            Some(id) if id.value() != device.id => read(id.value())?,
                            _ => None,
                        },
                        None => None,
                    };
                    winmdm_core::identity::recheck_at_commit(
                        device,
                        by_id.as_ref(),
                        hw_holder.as_ref(),
                    )
                    .map_err(StoreError::EnrollmentRefused)?;
                }

                if let Some(existing) = devices.get(device.id.as_str()).map_err(unavailable)? {
                    let existing: Device = decode(existing.value())?;
                    if let (Some(old), Some(new)) = (&existing.hw_dev_id, &device.hw_dev_id)
                        && existing.holds_its_hardware()
                        && !old.eq_ignore_ascii_case(new)
                    {
                        return Err(StoreError::Conflict(format!(
                            "device {} on other hardware",
                            device.id
                        )));
                    }
                    if let Some(old) = &existing.hw_dev_id {
                        by_hw.remove(hw_key(old).as_str()).map_err(unavailable)?;
                    }
                    old_groups = existing.groups.clone();
                    replaced.push(existing);
                }
                if let Some(hw) = &device.hw_dev_id {
                    let key = hw_key(hw);
                    let previous = by_hw
                        .get(key.as_str())
                        .map_err(unavailable)?
                        .map(|v| v.value().to_owned());
                    if let Some(prev_id) = previous
                        && prev_id != device.id
                    {
                        // Re-enrollment of the same hardware under a new id: the old
                        // record is superseded, and leaves its groups.
                        let prev = devices
                            .remove(prev_id.as_str())
                            .map_err(unavailable)?
                            .map(|v| decode::<Device>(v.value()))
                            .transpose()?;
                        if let Some(prev) = prev {
                            index_groups(&mut members, &prev.id, &prev.groups, &[])?;
                            index_listing(tx, &prev.id, Some(&prev), None)?;
                            replaced.push(prev);
                        }
                    }
                    by_hw
                        .insert(key.as_str(), device.id.as_str())
                        .map_err(unavailable)?;
                }
                index_groups(&mut members, &device.id, &old_groups, &device.groups)?;
                devices
                    .insert(device.id.as_str(), encode(device)?.as_slice())
                    .map_err(unavailable)?;
                let same_id = replaced.iter().find(|d| d.id == device.id);
                index_listing(tx, &device.id, same_id, Some(device))?;
                let before: Vec<&Device> = replaced.iter().collect();
                apply_counters(tx, &fleet_stats::deltas(&before, Some(device), true))?;
            }
            Ok(())
        })
        .await
    }

    async fn load_management(
        &self,
        device_id: &str,
        session_id: &str,
    ) -> Result<Option<ManagementSnapshot>, StoreError> {
        let device_id = device_id.to_owned();
        let session_id = session_id.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let devices = tx.open_table(DEVICES).map_err(unavailable)?;
            let Some(device) = devices.get(device_id.as_str()).map_err(unavailable)? else {
                return Ok(None);
            };
            let device: Device = decode(device.value())?;
            let sessions = tx.open_table(SESSIONS).map_err(unavailable)?;
            let session = match sessions
                .get(row_key(&device_id, &session_id).as_str())
                .map_err(unavailable)?
            {
                Some(v) => Some(decode::<SessionState>(v.value())?),
                None => None,
            }
            .filter(|s| s.expires_at > OffsetDateTime::now_utc());
            let open = tx.open_table(OPEN_COMMANDS).map_err(unavailable)?;
            let commands = tx.open_table(COMMANDS).map_err(unavailable)?;
            let mut keys = keys_with_prefix(&open, &format!("{device_id}/"))?;
            if let Some(s) = &session {
                for sent in &s.sent {
                    let key = row_key(&device_id, &sent.command_id);
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
                keys.sort();
            }
            let mut open_commands = Vec::new();
            for key in keys {
                if let Some(v) = commands.get(key.as_str()).map_err(unavailable)? {
                    open_commands.push(decode(v.value())?);
                }
            }
            let states = tx.open_table(DEVICE_PROFILES).map_err(unavailable)?;
            let mut profiles = Vec::new();
            let prefix = format!("{device_id}/");
            for entry in states
                .range::<&str>(prefix.as_str()..)
                .map_err(unavailable)?
            {
                let (k, v) = entry.map_err(unavailable)?;
                if !k.value().starts_with(&prefix) {
                    break;
                }
                profiles.push(decode(v.value())?);
            }
            Ok(Some(ManagementSnapshot {
                device,
                session,
                open_commands,
                profiles,
            }))
        })
        .await
    }

    async fn save_management(&self, update: &ManagementUpdate) -> Result<(), StoreError> {
        if let Some(p) = update
            .profiles
            .iter()
            .find(|p| p.device_id != update.device_id)
        {
            return Err(StoreError::Corrupt(format!(
                "profile state of device {} in a write for device {}",
                p.device_id, update.device_id
            )));
        }
        let update = update.clone();
        self.write(move |tx| {
            let now = OffsetDateTime::now_utc();
            {
                let mut devices = tx.open_table(DEVICES).map_err(unavailable)?;
                let mut device: Device = match devices
                    .get(update.device_id.as_str())
                    .map_err(unavailable)?
                {
                    Some(v) => decode(v.value())?,
                    None => {
                        return Err(StoreError::NotFound(format!("device {}", update.device_id)));
                    }
                };
                if !update.device.is_empty() {
                    let before = device.clone();
                    let had_hw = device.hw_dev_id.is_some();
                    let was_blocked = device.status == DeviceStatus::Blocked;
                    let old_groups = device.groups.clone();
                    update
                        .device
                        .apply(&mut device)
                        .map_err(|e| StoreError::Conflict(e.to_string()))?;
                    if old_groups != device.groups {
                        let mut members = tx.open_table(GROUP_DEVICES).map_err(unavailable)?;
                        index_groups(&mut members, &device.id, &old_groups, &device.groups)?;
                    }
                    let blocked = device.status == DeviceStatus::Blocked;
                    if was_blocked != blocked {
                        let mut idx = tx.open_table(BLOCKED_BY_USER).map_err(unavailable)?;
                        let key = blocked_key(&device.upn, &device.id);
                        if blocked {
                            idx.insert(key.as_str(), ()).map_err(unavailable)?;
                        } else {
                            idx.remove(key.as_str()).map_err(unavailable)?;
                        }
                    }
                    if let (false, Some(hw)) = (had_hw, &device.hw_dev_id) {
                        let mut by_hw = tx.open_table(DEVICES_BY_HW).map_err(unavailable)?;
                        let key = hw_key(hw);
                        if by_hw.get(key.as_str()).map_err(unavailable)?.is_some() {
                            // Another record owns this hardware id; do not steal it.
                            device.hw_dev_id = None;
                        } else {
                            by_hw
                                .insert(key.as_str(), device.id.as_str())
                                .map_err(unavailable)?;
                        }
                    }
                    devices
                        .insert(device.id.as_str(), encode(&device)?.as_slice())
                        .map_err(unavailable)?;
                    index_listing(tx, &device.id, Some(&before), Some(&device))?;
                    apply_counters(tx, &fleet_stats::deltas(&[&before], Some(&device), false))?;
                }

                let mut sessions = tx.open_table(SESSIONS).map_err(unavailable)?;
                // Forget this device's expired sessions.
                for key in keys_with_prefix(&sessions, &format!("{}/", update.device_id))? {
                    let expired = match sessions.get(key.as_str()).map_err(unavailable)? {
                        Some(v) => {
                            decode::<SessionState>(v.value()).map_or(true, |s| s.expires_at <= now)
                        }
                        None => false,
                    };
                    if expired {
                        sessions.remove(key.as_str()).map_err(unavailable)?;
                    }
                }
                match &update.session {
                    SessionWrite::Keep => {}
                    SessionWrite::Put(state) => {
                        sessions
                            .insert(
                                row_key(&update.device_id, &state.slot).as_str(),
                                encode(state)?.as_slice(),
                            )
                            .map_err(unavailable)?;
                    }
                    SessionWrite::Delete { slot } => {
                        sessions
                            .remove(row_key(&update.device_id, slot).as_str())
                            .map_err(unavailable)?;
                    }
                }

                let mut commands = tx.open_table(COMMANDS).map_err(unavailable)?;
                let mut open = tx.open_table(OPEN_COMMANDS).map_err(unavailable)?;
                let mut failed = tx.open_table(FAILED_COMMANDS).map_err(unavailable)?;
                for c in &update.commands {
                    let key = row_key(&c.device_id, &c.id);
                    // Only over the open record: a message that read the command before
                    // another settled it must not bring it back as open, to be delivered
                    // again. Dropping the transaction writes nothing; the device resends.
                    if c.state.is_open() && open.get(key.as_str()).map_err(unavailable)?.is_none() {
                        return Err(StoreError::Unavailable(
                            "a command of this message was settled by another; try again".into(),
                        ));
                    }
                    let was_failed = commands
                        .insert(key.as_str(), encode(c)?.as_slice())
                        .map_err(unavailable)?
                        .map(|old| decode::<QueuedCommand>(old.value()))
                        .transpose()?
                        .is_some_and(|old| old.state == CommandState::Failed);
                    if c.state == CommandState::Failed && !was_failed {
                        let note = FailedCommandNote::of(c);
                        let at = note.failed_at.unix_timestamp_nanos().max(0);
                        failed
                            .insert(
                                format!("{at:020}/{key}").as_str(),
                                encode(&note)?.as_slice(),
                            )
                            .map_err(unavailable)?;
                        while failed.len().map_err(unavailable)? > FailedCommandNote::KEPT as u64 {
                            failed.pop_first().map_err(unavailable)?;
                        }
                    }
                    if c.state.is_open() {
                        open.insert(key.as_str(), ()).map_err(unavailable)?;
                    } else {
                        open.remove(key.as_str()).map_err(unavailable)?;
                    }
                }

                if !update.profiles.is_empty() {
                    let mut states = tx.open_table(DEVICE_PROFILES).map_err(unavailable)?;
                    let mut by_profile = tx.open_table(PROFILE_DEVICES).map_err(unavailable)?;
                    let mut deltas = Vec::new();
                    for p in &update.profiles {
                        let before = states
                            .insert(
                                row_key(&p.device_id, &p.profile_id).as_str(),
                                encode(p)?.as_slice(),
                            )
                            .map_err(unavailable)?
                            .map(|old| decode::<DeviceProfile>(old.value()))
                            .transpose()?;
                        deltas.extend(fleet_stats::profile_deltas(before.as_ref(), p));
                        by_profile
                            .insert(profile_device_key(&p.profile_id, &p.device_id).as_str(), ())
                            .map_err(unavailable)?;
                    }
                    apply_counters(tx, &deltas)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn create_profile(&self, profile: &Profile) -> Result<(), StoreError> {
        let profile = profile.clone();
        self.write(move |tx| {
            {
                let mut t = tx.open_table(PROFILES).map_err(unavailable)?;
                let mut names = tx.open_table(PROFILE_NAMES).map_err(unavailable)?;
                if t.get(profile.id.as_str()).map_err(unavailable)?.is_some() {
                    return Err(StoreError::Conflict(format!("profile {}", profile.id)));
                }
                let name = profile_name_key(&profile.name);
                if names.get(name.as_str()).map_err(unavailable)?.is_some() {
                    return Err(StoreError::Conflict(format!(
                        "a profile named {:?}",
                        profile.name
                    )));
                }
                t.insert(profile.id.as_str(), encode(&profile)?.as_slice())
                    .map_err(unavailable)?;
                names
                    .insert(name.as_str(), profile.id.as_str())
                    .map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }

    async fn update_profile(
        &self,
        profile: &Profile,
        expect_version: u64,
    ) -> Result<(), StoreError> {
        let profile = profile.clone();
        self.write(move |tx| {
            {
                let mut t = tx.open_table(PROFILES).map_err(unavailable)?;
                let mut names = tx.open_table(PROFILE_NAMES).map_err(unavailable)?;
                let stored: Profile = match t.get(profile.id.as_str()).map_err(unavailable)? {
                    Some(v) => decode(v.value())?,
                    None => return Err(StoreError::NotFound(format!("profile {}", profile.id))),
                };
                if stored.version != expect_version {
                    return Err(StoreError::Conflict(format!(
                        "profile {} at version {} (not {expect_version})",
                        profile.id, stored.version
                    )));
                }
                let (old, new) = (
                    profile_name_key(&stored.name),
                    profile_name_key(&profile.name),
                );
                if old != new {
                    if names.get(new.as_str()).map_err(unavailable)?.is_some() {
                        return Err(StoreError::Conflict(format!(
                            "a profile named {:?}",
                            profile.name
                        )));
                    }
                    names.remove(old.as_str()).map_err(unavailable)?;
                    names
                        .insert(new.as_str(), profile.id.as_str())
                        .map_err(unavailable)?;
                }
                t.insert(profile.id.as_str(), encode(&profile)?.as_slice())
                    .map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }

    async fn get_profile(&self, id: &str) -> Result<Option<Profile>, StoreError> {
        let id = id.to_owned();
        self.blocking(move |db| Self::get_json(db, PROFILES, &id))
            .await
    }

    async fn list_profiles(&self) -> Result<Vec<Profile>, StoreError> {
        self.blocking(|db| all_rows(db, PROFILES)).await
    }

    async fn delete_profile(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |tx| {
            let existed = {
                let mut t = tx.open_table(PROFILES).map_err(unavailable)?;
                let removed = t
                    .remove(id.as_str())
                    .map_err(unavailable)?
                    .map(|v| decode::<Profile>(v.value()))
                    .transpose()?;
                match removed {
                    Some(p) => {
                        let mut names = tx.open_table(PROFILE_NAMES).map_err(unavailable)?;
                        names
                            .remove(profile_name_key(&p.name).as_str())
                            .map_err(unavailable)?;
                        true
                    }
                    None => false,
                }
            };
            Ok(existed)
        })
        .await
    }

    async fn create_group(&self, group: &Group) -> Result<(), StoreError> {
        let group = group.clone();
        self.write(move |tx| {
            {
                let mut t = tx.open_table(GROUPS).map_err(unavailable)?;
                if t.get(group.name.as_str()).map_err(unavailable)?.is_some() {
                    return Err(StoreError::Conflict(format!("group {}", group.name)));
                }
                t.insert(group.name.as_str(), encode(&group)?.as_slice())
                    .map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }

    async fn get_group(&self, name: &str) -> Result<Option<Group>, StoreError> {
        let name = name.to_owned();
        self.blocking(move |db| Self::get_json(db, GROUPS, &name))
            .await
    }

    async fn list_groups(&self) -> Result<Vec<Group>, StoreError> {
        self.blocking(|db| all_rows(db, GROUPS)).await
    }

    async fn delete_group(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.write(move |tx| {
            let existed = {
                let mut t = tx.open_table(GROUPS).map_err(unavailable)?;
                t.remove(name.as_str()).map_err(unavailable)?.is_some()
            };
            Ok(existed)
        })
        .await
    }

    async fn list_group_devices(
        &self,
        group: &str,
        page: &PageRequest,
    ) -> Result<Page<String>, StoreError> {
        let prefix = member_key(group, "");
        let page = page.clone();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let idx = tx.open_table(GROUP_DEVICES).map_err(unavailable)?;
            page_index_keys(&idx, &prefix, &page)
        })
        .await
    }

    async fn list_profile_devices(
        &self,
        profile_id: &str,
        page: &PageRequest,
    ) -> Result<Page<DeviceProfile>, StoreError> {
        let profile_id = profile_id.to_owned();
        let page = page.clone();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let idx = tx.open_table(PROFILE_DEVICES).map_err(unavailable)?;
            let states = tx.open_table(DEVICE_PROFILES).map_err(unavailable)?;
            let ids = page_index_keys(&idx, &profile_device_key(&profile_id, ""), &page)?;
            let mut items = Vec::with_capacity(ids.items.len());
            for device_id in &ids.items {
                match states
                    .get(row_key(device_id, &profile_id).as_str())
                    .map_err(unavailable)?
                {
                    Some(v) => items.push(decode(v.value())?),
                    None => {
                        return Err(StoreError::Corrupt(format!(
                            "profile index names a missing state of {device_id}"
                        )));
                    }
                }
            }
            Ok(Page {
                items,
                next: ids.next,
            })
        })
        .await
    }

    async fn enqueue_command(&self, command: &QueuedCommand) -> Result<(), StoreError> {
        let command = command.clone();
        self.write(move |tx| {
            {
                let devices = tx.open_table(DEVICES).map_err(unavailable)?;
                if devices
                    .get(command.device_id.as_str())
                    .map_err(unavailable)?
                    .is_none()
                {
                    return Err(StoreError::NotFound(format!(
                        "device {}",
                        command.device_id
                    )));
                }
                let key = row_key(&command.device_id, &command.id);
                let mut commands = tx.open_table(COMMANDS).map_err(unavailable)?;
                if commands.get(key.as_str()).map_err(unavailable)?.is_some() {
                    return Err(StoreError::Conflict(format!("command {}", command.id)));
                }
                commands
                    .insert(key.as_str(), encode(&command)?.as_slice())
                    .map_err(unavailable)?;
                let mut open = tx.open_table(OPEN_COMMANDS).map_err(unavailable)?;
                open.insert(key.as_str(), ()).map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }

    async fn recent_failed_commands(
        &self,
        limit: usize,
    ) -> Result<Vec<FailedCommandNote>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let t = tx.open_table(FAILED_COMMANDS).map_err(unavailable)?;
            let mut out = Vec::new();
            for row in t.iter().map_err(unavailable)?.rev().take(limit) {
                let (_, v) = row.map_err(unavailable)?;
                out.push(decode(v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn get_command(
        &self,
        device_id: &str,
        command_id: &str,
    ) -> Result<Option<QueuedCommand>, StoreError> {
        let key = row_key(device_id, command_id);
        self.blocking(move |db| Self::get_json(db, COMMANDS, &key))
            .await
    }

    async fn list_commands(
        &self,
        device_id: &str,
        page: &PageRequest,
    ) -> Result<Page<QueuedCommand>, StoreError> {
        let prefix = format!("{device_id}/");
        let page = page.clone();
        self.blocking(move |db| Self::page_prefixed(db, COMMANDS, &prefix, &page))
            .await
    }
}

fn row_key(device_id: &str, id: &str) -> String {
    format!("{device_id}/{id}")
}

fn decode_page_cursor(page: &PageRequest) -> Result<Option<String>, StoreError> {
    match &page.after {
        Some(c) => B64URL
            .decode(c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt("invalid page cursor".into())),
        None => Ok(None),
    }
}

/// Where a page starts: after the cursor (which must lie inside `prefix`) or at `prefix`.
fn page_start<'a>(
    after: &'a Option<String>,
    prefix: &'a str,
) -> Result<std::ops::Bound<&'a str>, StoreError> {
    match after {
        Some(a) if a.starts_with(prefix) => Ok(std::ops::Bound::Excluded(a.as_str())),
        Some(_) => Err(StoreError::Corrupt("invalid page cursor".into())),
        None => Ok(std::ops::Bound::Included(prefix)),
    }
}

/// A page of the keys of an index table that start with `prefix`, returned without the
/// prefix, in key order; the cursor is the last key returned.
fn page_index_keys(
    idx: &impl ReadableTable<&'static str, ()>,
    prefix: &str,
    page: &PageRequest,
) -> Result<Page<String>, StoreError> {
    let after = decode_page_cursor(page)?;
    let start = page_start(&after, prefix)?;
    let mut items = Vec::with_capacity(page.limit);
    let mut last_key = None;
    let mut more = false;
    for entry in idx
        .range::<&str>((start, std::ops::Bound::Unbounded))
        .map_err(unavailable)?
    {
        let (k, _) = entry.map_err(unavailable)?;
        let k = k.value();
        let Some(rest) = k.strip_prefix(prefix) else {
            break;
        };
        if items.len() == page.limit {
            more = true;
            break;
        }
        items.push(rest.to_owned());
        last_key = Some(k.to_owned());
    }
    Ok(Page {
        items,
        next: if more {
            last_key.map(|k| B64URL.encode(k))
        } else {
            None
        },
    })
}

/// Every row of a small table, in key order.
fn all_rows<T: DeserializeOwned>(
    db: &Db,
    table: TableDefinition<&str, &[u8]>,
) -> Result<Vec<T>, StoreError> {
    let tx = db.begin_read().map_err(unavailable)?;
    let t = tx.open_table(table).map_err(unavailable)?;
    let mut out = Vec::new();
    for entry in t.iter().map_err(unavailable)? {
        let (_, v) = entry.map_err(unavailable)?;
        out.push(decode(v.value())?);
    }
    Ok(out)
}

/// Keys of a table's rows for one device.
fn keys_with_prefix<V: redb::Value + 'static>(
    table: &impl ReadableTable<&'static str, V>,
    prefix: &str,
) -> Result<Vec<String>, StoreError> {
    let mut keys = Vec::new();
    for entry in table.range::<&str>(prefix..).map_err(unavailable)? {
        let (k, _) = entry.map_err(unavailable)?;
        if !k.value().starts_with(prefix) {
            break;
        }
        keys.push(k.value().to_owned());
    }
    Ok(keys)
}

fn purge_expired_tokens(
    tokens: &mut redb::Table<&str, i64>,
    expiry: &mut redb::Table<&str, ()>,
    now: i64,
) -> Result<(), StoreError> {
    let mut expired = Vec::new();
    for entry in expiry.range::<&str>(..).map_err(unavailable)? {
        let (k, _) = entry.map_err(unavailable)?;
        let key = k.value().to_owned();
        let (exp, id) = key.split_once('/').unwrap_or(("0", ""));
        if exp.parse::<i64>().unwrap_or(0) >= now || expired.len() >= PURGE_BATCH {
            break;
        }
        expired.push((key.clone(), id.to_owned()));
    }
    for (key, id) in expired {
        expiry.remove(key.as_str()).map_err(unavailable)?;
        tokens.remove(id.as_str()).map_err(unavailable)?;
    }
    Ok(())
}
