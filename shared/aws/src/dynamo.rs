//! The DynamoDB store: one table, single-table design.
//!
//! Keys are `PK`/`SK` strings; records are JSON in `data` (the same shape as the embedded
//! store), so the item layout only carries what the access patterns need. `expires` is the
//! table's TTL attribute (epoch seconds); `GSI1` (`GSI1PK`/`GSI1SK`) serves the small
//! listings (users, commands, profiles, groups); `LIST` (`LPK`/`LSK`, projecting only the
//! device summary `LS`) serves the device listing.
//!
//! | item | PK | SK | other |
//! |---|---|---|---|
//! | user | `USER#<upn>` | `USER` | GSI1: `USERS` / upn |
//! | device | `DEV#<id>` | `D` | LIST: `DLIST#<shard>` / id, with `LS`; `version` for optimistic locking |
//! | HWDevID index | `HW#<hwdevid>` | `HW` | `device_id` |
//! | blocked device of a user | `UBLOCK#<upn>` | `D#<device id>` | |
//! | open command | `DEV#<id>` | `C#<command id>` | GSI1: `CMDS#<id>` / command id |
//! | settled command | `DEV#<id>` | `X#<command id>` | GSI1: `CMDS#<id>` / command id |
//! | session | `DEV#<id>` | `S#<session id>` | `expires` |
//! | profile state on a device | `DEV#<id>` | `P#<profile id>` | GSI1: `PDEV#<profile id>#<0…15>` / device id |
//! | spent sign-in token | `TOKEN#<id>` | `TOKEN` | `expires` |
//! | profile | `PROFILE#<id>` | `PROFILE` | GSI1: `PROFILES` / id; `version` for conditional updates |
//! | profile name (uniqueness) | `PNAME#<lower-cased name>` | `PNAME` | `profile_id` |
//! | group | `GROUP#<name>` | `GROUP` | GSI1: `GROUPS` / name |
//! | group member | `GMEM#<group>` | `D#<device id>` | |
//!
//! Access patterns, none of them a Scan:
//! - device by id: GetItem `DEV#id`/`D`; by HWDevID: GetItem `HW#…`, then the device.
//! - whether a user has a blocked device: Query `UBLOCK#upn`, Limit 1 (the items are
//!   written and deleted in the transaction that changes a device's status).
//! - users page by page: Query GSI1 `USERS`.
//! - devices page by page, searched, filtered: Query `LIST` `DLIST#0…15`, each run in
//!   DeviceID order, merged by `winmdm_core::device_listing`. The index holds only the
//!   summary (`LS`, ≈ 200 bytes), so a device write that leaves the summary as it was
//!   does not write the index at all (DynamoDB propagates a write to an index only when a
//!   projected or key attribute changes), and the writes that do change it spread over 16
//!   partition keys instead of one.
//! - a management message's snapshot: one Query on `DEV#id` with `SK < "T"`, which
//!   returns the open commands (`C#…`, oldest first), the device (`D`), the profile states
//!   (`P#…`, by profile id) and the sessions (`S#…`), but not the settled history (`X#…`).
//! - command by id: GetItem `C#…`, else `X#…`; a device's commands: Query GSI1 `CMDS#id`.
//! - spent tokens: conditional Put (`attribute_not_exists`) inside the enrollment
//!   transaction; expired ones vanish through TTL.
//! - profile / group by id: GetItem; the whole catalog: Query GSI1 `PROFILES` / `GROUPS`
//!   (every page; both are bounded by the admin API).
//! - a group's devices page by page: Query `GMEM#group` (strongly consistent). The items
//!   are written and deleted in the transaction that changes a device's `groups`
//!   (`save_management`, `commit_enrollment`), as for `UBLOCK#`.
//! - one profile's state on every device, page by page: Query GSI1 `PDEV#<profile id>#0…15`
//!   (and the unsharded `PDEV#<profile id>` of older records) concurrently, merged.
//!
//! Multi-item changes are transactions: enrollment (token, device, HWDevID index, the
//! replaced device, group members), command settlement (open → settled) with the session,
//! device, group members and profile states, enqueueing (with a check that the device
//! exists), and profile writes with their name item. Device and profile records carry a
//! version number; writes are conditional on it (concurrent device writers retry).
//!
//! A TransactWriteItems holds at most [`MAX_TRANSACTION_ITEMS`] items (and 4 MB); a
//! management message writes one item for the device (or its version check), one per
//! index entry it changes (`UBLOCK#`, `HW#`, each `GMEM#`), one for the session, one per
//! sent command and two per settled one (put `X#`, delete `C#`), and one per profile
//! state. A write over the limit is refused before it is sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, Put, ScalarAttributeType,
    TimeToLiveSpecification, TransactWriteItem,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use winmdm_core::commands::{CommandState, FailedCommandNote, QueuedCommand};
use winmdm_core::device_listing::{DeviceSummary, ShardRead, SummaryBatch};
use winmdm_core::identity;
use winmdm_core::model::{Device, DeviceStatus, Page, PageRequest, User};
use winmdm_core::profiles::{DeviceProfile, Group, Profile};
use winmdm_core::session::{ManagementSnapshot, ManagementUpdate, SessionState, SessionWrite};
use winmdm_core::store::{EnrollmentCommit, Store, StoreError};

type Item = HashMap<String, AttributeValue>;

const GSI1: &str = "GSI1";
/// The most items one TransactWriteItems may hold.
pub const MAX_TRANSACTION_ITEMS: usize = 100;
/// Attempts at an optimistic read-modify-write before giving up.
const MAX_ATTEMPTS: u32 = 12;

/// What a [`DynamoStore::backfill_listing`] run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backfill {
    /// Listing entries added.
    pub added: usize,
    /// Whether the whole table was read before the deadline.
    pub complete: bool,
    /// Devices read (when complete).
    pub devices: usize,
    /// Whether the fleet counters were counted from scratch.
    pub counted: bool,
}

/// What `load_management` read of a device, kept for the message's `save_management`.
#[derive(Clone, Debug)]
struct LoadedDevice {
    version: i64,
    device: Device,
    /// The device's profile state records, for the fleet counters' changes.
    profiles: Vec<DeviceProfile>,
}

#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    /// Device records (with their version) as `load_management` read them, taken by the
    /// `save_management` of the same message, so a message costs one read: the write is
    /// conditional on that version and re-reads only if someone changed the device since.
    loaded: Arc<Mutex<HashMap<String, LoadedDevice>>>,
    /// Capacity units the management path used, computed from item sizes (see
    /// [`Capacity`]).
    capacity: Arc<Mutex<Capacity>>,
    /// Whether check-in counters (`seen:…`) are left to the table's stream
    /// ([`crate::checkin_counts`]) instead of written with each device write.
    checkin_counts_from_stream: bool,
}

/// Read and write request units, computed from the sizes of the items read and written
/// with DynamoDB's published rules, not reported by DynamoDB (emulators report constants):
/// a strongly consistent read costs 1 unit per 4 KB of the items a Query returns; a
/// transactional write 2 units per KB of each item put, and 2 per delete or condition
/// check (their items' sizes are not known here; 1 KB is assumed); a single put (sent as
/// a plain conditional PutItem) 1 unit per KB; a put of an item in the listing index
/// (`GSI1PK`) 1 more unit per KB for the index copy. Only the management
/// path is counted (`load_management`, and transactions).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Capacity {
    pub read_units: f64,
    pub write_units: f64,
}

/// An item's size as DynamoDB bills it: attribute names plus values (strings and binary
/// by length, numbers by about one byte per two digits plus one, lists and maps with 3
/// bytes of overhead plus 1 per element).
pub fn item_size(item: &Item) -> usize {
    fn value(v: &AttributeValue) -> usize {
        match v {
            AttributeValue::S(s) => s.len(),
            AttributeValue::N(n) => n.len().div_ceil(2) + 1,
            AttributeValue::B(b) => b.as_ref().len(),
            AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
            AttributeValue::L(l) => 3 + l.iter().map(|v| value(v) + 1).sum::<usize>(),
            AttributeValue::M(m) => {
                3 + m.iter().map(|(k, v)| k.len() + value(v) + 1).sum::<usize>()
            }
            AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
            AttributeValue::Ns(v) => v.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
            AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
            _ => 0,
        }
    }
    item.iter().map(|(k, v)| k.len() + value(v)).sum()
}

fn kb(n: usize) -> f64 {
    n.div_ceil(1024).max(1) as f64
}

/// Table write units of `items` as a transaction (2 per KB of each put; 2 per delete or
/// condition check).
fn write_units(items: &[TransactWriteItem]) -> f64 {
    items
        .iter()
        .map(|t| match t.put() {
            Some(p) => 2.0 * kb(item_size(p.item())),
            None => 2.0,
        })
        .sum()
}

/// Write units of a put's copy in the listing index (not doubled by transactions).
fn index_units(item: &Item) -> f64 {
    if item.contains_key("GSI1PK") {
        kb(item_size(item))
    } else {
        0.0
    }
}

/// The listing entry's `LS`: the device summary as a JSON array without the DeviceID
/// (that is `LSK`) and with times in epoch seconds, ≈ 120 bytes, so that the device item
/// with it stays within one 1 KB write unit for a typical device.
#[derive(Serialize, serde::Deserialize)]
struct StoredSummary(
    String,
    DeviceStatus,
    winmdm_core::model::EnrollmentType,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    Option<i64>,
    i64,
    #[serde(default)] Vec<String>,
    #[serde(default)] Option<winmdm_core::model::Compliance>,
);

fn summary_json(d: &Device) -> Result<String, StoreError> {
    let s = DeviceSummary::of(d);
    serde_json::to_string(&StoredSummary(
        s.upn,
        s.status,
        s.enrollment_type,
        s.name,
        s.serial,
        s.os_version,
        s.enrolled_at.unix_timestamp(),
        s.last_seen_at.map(OffsetDateTime::unix_timestamp),
        s.cert_not_after.unix_timestamp(),
        s.groups,
        s.compliance,
    ))
    .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn summary_from_json(id: &str, json: &str) -> Result<DeviceSummary, StoreError> {
    let corrupt = |e: String| StoreError::Corrupt(format!("listing entry of {id}: {e}"));
    let StoredSummary(
        upn,
        status,
        enrollment_type,
        name,
        serial,
        os_version,
        enrolled,
        seen,
        cert,
        groups,
        compliance,
    ) = serde_json::from_str(json).map_err(|e| corrupt(e.to_string()))?;
    let at = |t: i64| OffsetDateTime::from_unix_timestamp(t).map_err(|e| corrupt(e.to_string()));
    Ok(DeviceSummary {
        id: id.to_owned(),
        upn,
        status,
        enrollment_type,
        name,
        serial,
        os_version,
        enrolled_at: at(enrolled)?,
        last_seen_at: seen.map(at).transpose()?,
        cert_not_after: at(cert)?,
        groups,
        compliance,
    })
}

/// One listing run: summaries of `DLIST#<shard>` after `r.after`, in DeviceID order.
async fn read_listing_run(
    client: &Client,
    table: &str,
    r: &ShardRead,
) -> Result<SummaryBatch, StoreError> {
    if r.shard >= LISTING_SHARDS {
        return Err(StoreError::Corrupt(format!("no listing run {}", r.shard)));
    }
    let mut q = client
        .query()
        .table_name(table)
        .index_name(LIST_INDEX)
        .expression_attribute_values(":p", s(format!("DLIST#{}", r.shard)))
        .limit(i32::try_from(r.limit.clamp(1, 1000)).unwrap_or(1000));
    q = match &r.after {
        Some(a) => q
            .key_condition_expression("LPK = :p AND LSK > :a")
            .expression_attribute_values(":a", s(a.clone())),
        None => q.key_condition_expression("LPK = :p"),
    };
    let out = q.send().await.map_err(unavailable)?;
    let items = out
        .items()
        .iter()
        .map(|i| {
            let field = |k: &str| i.get(k).and_then(|v| v.as_s().ok());
            match (field("LSK"), field("LS")) {
                (Some(id), Some(json)) => summary_from_json(id, json),
                _ => Err(StoreError::Corrupt(
                    "listing entry without LSK or LS".into(),
                )),
            }
        })
        .collect::<Result<Vec<DeviceSummary>, _>>()?;
    Ok(SummaryBatch {
        items,
        more: out.last_evaluated_key().is_some(),
    })
}

/// Partition keys of one profile's device states in GSI1 (`PDEV#<profile>#<n>`), chosen
/// by device: rolling a profile out to a million devices polling every 15 minutes writes
/// ≈ 2,800 KB of state a second, nearly 3× one partition's limit; 16 keys take ≈ 175 each.
/// Records written before the sharding keep `PDEV#<profile>` until their next write.
const PROFILE_STATE_SHARDS: u32 = 16;

fn profile_state_pk(profile_id: &str, device_id: &str) -> String {
    format!(
        "PDEV#{profile_id}#{}",
        winmdm_core::device_listing::shard_of(device_id, PROFILE_STATE_SHARDS)
    )
}

/// How long the overview's failure notes are kept (TTL).
const FAILURE_NOTE_DAYS: i64 = 30;
/// Days of failure notes the overview looks back over.
const FAILURE_LOOKBACK_DAYS: i64 = 7;

/// Partition keys per day of failure notes, chosen by device. A mass action that fails on
/// a million devices polling every 15 minutes writes ≈ 1,100 notes a second: one key
/// would be over DynamoDB's 1,000 writes a second per partition; 8 take ≈ 140 each.
const FAILURE_SHARDS: u32 = 8;

fn failures_pk(day: time::Date, shard: u32) -> String {
    format!(
        "FAILS#{:04}-{:02}-{:02}#{shard}",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

/// The note of a failed command: `FAILS#<UTC day>#<shard>` / `<epoch ns>#<device>#<command>`,
/// expiring after [`FAILURE_NOTE_DAYS`].
fn failure_note_item(c: &QueuedCommand) -> Result<Item, StoreError> {
    let note = FailedCommandNote::of(c);
    let at = note.failed_at.to_offset(time::UtcOffset::UTC);
    let sk = format!(
        "{:020}#{}#{}",
        at.unix_timestamp_nanos().max(0),
        c.device_id,
        c.id
    );
    let shard = winmdm_core::device_listing::shard_of(&c.device_id, FAILURE_SHARDS);
    let mut item = record(failures_pk(at.date(), shard), sk, &note)?;
    item.insert(
        "expires".into(),
        n((at + time::Duration::days(FAILURE_NOTE_DAYS)).unix_timestamp()),
    );
    Ok(item)
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([("PK".to_owned(), s(pk)), ("SK".to_owned(), s(sk))])
}

/// The device listing index: name, and the number of partition keys (`DLIST#<n>`) the
/// summaries are spread over by `winmdm_core::device_listing::shard_of`. At a million
/// devices polling every 15 minutes the hourly `last_seen_at` bump changes ≈ 280 summaries
/// a second: ≈ 18 writes a second per key, against DynamoDB's 1,000 per partition.
/// Changing the count re-keys every device: it is fixed.
const LIST_INDEX: &str = "LIST";
pub const LISTING_SHARDS: u32 = 16;

fn listing_pk(device_id: &str) -> String {
    format!(
        "DLIST#{}",
        winmdm_core::device_listing::shard_of(device_id, LISTING_SHARDS)
    )
}

/// Fleet counters (`winmdm_core::fleet_stats`) are spread over this many partitions
/// (`STATS#0`…), chosen by device id: at a million devices the busiest counter (the
/// current check-in hour) takes a few hundred increments a second, which one partition
/// could take, but not with headroom. The overview reads every shard's ranges.
pub const COUNTER_SHARDS: u64 = 8;

fn counter_pk(device_id: &str) -> String {
    // FNV-1a: stable across processes and versions (std's hasher is not).
    let h = device_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("STATS#{}", h % COUNTER_SHARDS)
}

/// A write's counter changes, as `ADD` updates in its transaction.
fn counter_updates(
    device_id: &str,
    deltas: &[winmdm_core::fleet_stats::CounterDelta],
    table: &str,
) -> Result<Vec<TransactWriteItem>, StoreError> {
    let pk = counter_pk(device_id);
    deltas
        .iter()
        .map(|(k, d)| {
            Ok(TransactWriteItem::builder()
                .update(
                    aws_sdk_dynamodb::types::Update::builder()
                        .table_name(table)
                        .set_key(Some(key(pk.clone(), k.clone())))
                        .update_expression("ADD c :d")
                        .expression_attribute_values(":d", n(*d))
                        .build()
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                )
                .build())
        })
        .collect()
}

fn dev_pk(id: &str) -> String {
    format!("DEV#{id}")
}

fn hw_pk(hw: &str) -> String {
    format!("HW#{}", hw.to_ascii_lowercase())
}

fn user_pk(upn: &str) -> String {
    format!("USER#{upn}")
}

fn profile_pk(id: &str) -> String {
    format!("PROFILE#{id}")
}

fn profile_name_pk(name: &str) -> String {
    format!("PNAME#{}", name.to_lowercase())
}

fn group_pk(name: &str) -> String {
    format!("GROUP#{name}")
}

/// The group-member index entry of a device.
fn member_key(group: &str, device_id: &str) -> Item {
    key(format!("GMEM#{group}"), format!("D#{device_id}"))
}

/// Index entries to write and delete when a device's groups go from `old` to `new`.
fn group_changes(
    device_id: &str,
    old: &[String],
    new: &[String],
    table: &str,
) -> Result<Vec<TransactWriteItem>, StoreError> {
    let mut items = Vec::new();
    for g in old.iter().filter(|g| !new.contains(g)) {
        items.push(delete(member_key(g, device_id), None, &[], table)?);
    }
    for g in new.iter().filter(|g| !old.contains(g)) {
        items.push(put(member_key(g, device_id), None, &[], table)?);
    }
    Ok(items)
}

fn too_many_items(what: &str, count: usize) -> StoreError {
    StoreError::Unavailable(format!(
        "{what} would write {count} items; a DynamoDB transaction holds at most \
         {MAX_TRANSACTION_ITEMS}"
    ))
}

fn nu(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn record<T: Serialize>(pk: String, sk: String, value: &T) -> Result<Item, StoreError> {
    let mut item = key(pk, sk);
    let json = serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    item.insert("data".into(), s(json));
    Ok(item)
}

fn data<T: DeserializeOwned>(item: &Item) -> Result<T, StoreError> {
    match item.get("data") {
        Some(AttributeValue::S(json)) => {
            serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))
        }
        _ => Err(StoreError::Corrupt("item without data".into())),
    }
}

fn str_attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v),
        _ => None,
    }
}

fn num_attr(item: &Item, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().ok(),
        _ => None,
    }
}

/// Throttling, outages and any other service error: the request fails, nothing is
/// half-written, and the caller answers with a retryable error.
fn unavailable<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    e: SdkError<E, R>,
) -> StoreError {
    StoreError::Unavailable(DisplayErrorContext(&e).to_string())
}

/// Runs independent Queries (one per shard or key) concurrently and returns their
/// pages, in no particular order: the sharded reads merge them.
async fn query_together(
    queries: impl IntoIterator<Item = aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder>,
    what: &str,
) -> Result<Vec<aws_sdk_dynamodb::operation::query::QueryOutput>, StoreError> {
    let mut tasks = tokio::task::JoinSet::new();
    for q in queries {
        tasks.spawn(q.send());
    }
    let mut pages = Vec::with_capacity(tasks.len());
    while let Some(done) = tasks.join_next().await {
        pages.push(
            done.map_err(|e| StoreError::Unavailable(format!("{what}: {e}")))?
                .map_err(unavailable)?,
        );
    }
    Ok(pages)
}

fn put(
    item: Item,
    condition: Option<&str>,
    values: &[(&str, AttributeValue)],
    table: &str,
) -> Result<TransactWriteItem, StoreError> {
    let mut p = Put::builder().table_name(table).set_item(Some(item));
    if let Some(c) = condition {
        p = p.condition_expression(c);
    }
    for (k, v) in values {
        p = p.expression_attribute_values(*k, v.clone());
    }
    Ok(TransactWriteItem::builder()
        .put(p.build().map_err(|e| StoreError::Corrupt(e.to_string()))?)
        .build())
}

fn delete(
    k: Item,
    condition: Option<&str>,
    values: &[(&str, AttributeValue)],
    table: &str,
) -> Result<TransactWriteItem, StoreError> {
    let mut d = Delete::builder().table_name(table).set_key(Some(k));
    if let Some(c) = condition {
        d = d.condition_expression(c);
    }
    for (kk, v) in values {
        d = d.expression_attribute_values(*kk, v.clone());
    }
    Ok(TransactWriteItem::builder()
        .delete(d.build().map_err(|e| StoreError::Corrupt(e.to_string()))?)
        .build())
}

/// Why a transaction did not happen.
enum TxError {
    /// Condition `i` (in item order) failed.
    Condition(Vec<usize>),
    Store(StoreError),
}

fn encode_cursor(k: &Item) -> String {
    let m: HashMap<&str, &str> = k
        .iter()
        .filter_map(|(name, v)| match v {
            AttributeValue::S(s) => Some((name.as_str(), s.as_str())),
            _ => None,
        })
        .collect();
    B64URL.encode(serde_json::to_vec(&m).unwrap_or_default())
}

fn decode_cursor(c: &str) -> Result<Item, StoreError> {
    let bytes = B64URL
        .decode(c)
        .map_err(|_| StoreError::Corrupt("invalid page cursor".into()))?;
    let m: HashMap<String, String> = serde_json::from_slice(&bytes)
        .map_err(|_| StoreError::Corrupt("invalid page cursor".into()))?;
    Ok(m.into_iter().map(|(k, v)| (k, s(v))).collect())
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            loaded: Arc::new(Mutex::new(HashMap::new())),
            capacity: Arc::new(Mutex::new(Capacity::default())),
            checkin_counts_from_stream: false,
        }
    }

    /// Leaves the check-in counters (`seen:…`) to the table's stream: the writes stop
    /// updating them, and the `checkin-counts` function ([`crate::checkin_counts`]) keeps
    /// them from the device items' changes, a batch at a time. Saves 2 write units on
    /// every hourly `last_seen_at` bump. Only for a table whose stream (new and old
    /// images) feeds that function, as the template sets it up: otherwise the overview's
    /// check-in buckets stop moving.
    pub fn with_checkin_counts_from_stream(mut self, on: bool) -> Self {
        self.checkin_counts_from_stream = on;
        self
    }

    /// A write's counter changes without the check-in ones when the stream keeps those.
    fn counted_by_writes(
        &self,
        deltas: Vec<winmdm_core::fleet_stats::CounterDelta>,
    ) -> Vec<winmdm_core::fleet_stats::CounterDelta> {
        if self.checkin_counts_from_stream {
            deltas
                .into_iter()
                .filter(|(k, _)| !winmdm_core::fleet_stats::is_check_in(k))
                .collect()
        } else {
            deltas
        }
    }

    /// The capacity units the management path has used so far (computed, see
    /// [`Capacity`]).
    pub fn capacity(&self) -> Capacity {
        *self.capacity.lock().expect("capacity lock")
    }

    /// Creates the table with its index and TTL if it does not exist: for local runs and
    /// tests (the SAM template creates it on AWS).
    pub async fn create_table_if_missing(&self) -> Result<(), StoreError> {
        if self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        let attr = |n: &str| {
            AttributeDefinition::builder()
                .attribute_name(n)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute")
        };
        let ks = |n: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(n)
                .key_type(t)
                .build()
                .expect("key")
        };
        self.client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("PK"))
            .attribute_definitions(attr("SK"))
            .attribute_definitions(attr("GSI1PK"))
            .attribute_definitions(attr("GSI1SK"))
            .attribute_definitions(attr("LPK"))
            .attribute_definitions(attr("LSK"))
            .key_schema(ks("PK", KeyType::Hash))
            .key_schema(ks("SK", KeyType::Range))
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(GSI1)
                    .key_schema(ks("GSI1PK", KeyType::Hash))
                    .key_schema(ks("GSI1SK", KeyType::Range))
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build()
                    .expect("gsi"),
            )
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(LIST_INDEX)
                    .key_schema(ks("LPK", KeyType::Hash))
                    .key_schema(ks("LSK", KeyType::Range))
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::Include)
                            .non_key_attributes("LS")
                            .build(),
                    )
                    .build()
                    .expect("gsi"),
            )
            // As the template has it: the stream the check-in counts are kept from.
            .stream_specification(
                aws_sdk_dynamodb::types::StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(aws_sdk_dynamodb::types::StreamViewType::NewAndOldImages)
                    .build()
                    .expect("stream"),
            )
            .send()
            .await
            .map_err(unavailable)?;
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name("expires")
                    .enabled(true)
                    .build()
                    .expect("ttl"),
            )
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn get(&self, k: Item) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(k))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item)
    }

    /// Adds counter changes outside any transaction, concurrently, 1 write unit each; a
    /// failure is logged, not returned (the write they follow has committed).
    async fn add_counters(
        &self,
        device_id: &str,
        deltas: &[winmdm_core::fleet_stats::CounterDelta],
    ) {
        if deltas.is_empty() {
            return;
        }
        let pk = counter_pk(device_id);
        let mut updates = tokio::task::JoinSet::new();
        for (k, d) in deltas {
            updates.spawn(
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(key(pk.clone(), k.clone())))
                    .update_expression("ADD c :d")
                    .expression_attribute_values(":d", n(*d))
                    .send(),
            );
        }
        self.capacity.lock().expect("capacity lock").write_units += deltas.len() as f64;
        while let Some(r) = updates.join_next().await {
            match r {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %DisplayErrorContext(&e), device_id, "fleet counter update failed")
                }
                Err(e) => tracing::warn!(error = %e, device_id, "fleet counter update failed"),
            }
        }
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), TxError> {
        use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
        if let [only] = items.as_slice()
            && let Some(p) = only.put()
        {
            // One item needs no transaction, which would bill it twice: a conditional
            // PutItem is just as atomic (the typical write of a poll: the device item
            // with its new last_seen_at, conditional on its version).
            self.capacity.lock().expect("capacity lock").write_units +=
                write_units(&items) / 2.0 + index_units(p.item());
            return self.put_one(p).await;
        }
        self.capacity.lock().expect("capacity lock").write_units += write_units(&items)
            + items
                .iter()
                .filter_map(|t| t.put())
                .map(|p| index_units(p.item()))
                .sum::<f64>();
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(se)) => match se.err() {
                TransactWriteItemsError::TransactionCanceledException(c) => {
                    let failed: Vec<usize> = c
                        .cancellation_reasons()
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
                        .map(|(i, _)| i)
                        .collect();
                    if failed.is_empty() {
                        // Cancelled for a conflict with another transaction: retryable.
                        Err(TxError::Condition(Vec::new()))
                    } else {
                        Err(TxError::Condition(failed))
                    }
                }
                other => Err(TxError::Store(StoreError::Unavailable(format!(
                    "{}: {}",
                    other.code().unwrap_or("error"),
                    other.message().unwrap_or("")
                )))),
            },
            Err(e) => Err(TxError::Store(unavailable(e))),
        }
    }

    /// Puts an item that must not exist yet; `Conflict` naming `what` if it does.
    async fn put_new(&self, item: Item, what: String) -> Result<(), StoreError> {
        let r = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::Conflict(what))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// A transaction's single Put as a conditional PutItem.
    async fn put_one(&self, p: &aws_sdk_dynamodb::types::Put) -> Result<(), TxError> {
        match self
            .client
            .put_item()
            .table_name(p.table_name())
            .set_item(Some(p.item().clone()))
            .set_condition_expression(p.condition_expression().map(str::to_owned))
            .set_expression_attribute_names(p.expression_attribute_names().cloned())
            .set_expression_attribute_values(p.expression_attribute_values().cloned())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(se)) if se.err().is_conditional_check_failed_exception() => {
                Err(TxError::Condition(vec![0]))
            }
            Err(e) => Err(TxError::Store(unavailable(e))),
        }
    }

    async fn query_page<T: DeserializeOwned>(
        &self,
        gsi1pk: &str,
        page: &PageRequest,
    ) -> Result<Page<T>, StoreError> {
        let start = match &page.after {
            Some(c) => Some(decode_cursor(c)?),
            None => None,
        };
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI1)
            .key_condition_expression("GSI1PK = :p")
            .expression_attribute_values(":p", s(gsi1pk))
            .set_exclusive_start_key(start)
            .limit(page.limit as i32)
            .send()
            .await
            .map_err(unavailable)?;
        let items = out
            .items()
            .iter()
            .map(data)
            .collect::<Result<Vec<T>, _>>()?;
        Ok(Page {
            items,
            next: out.last_evaluated_key().map(encode_cursor),
        })
    }

    /// Every record of a GSI1 partition (all pages), in GSI1SK order.
    async fn query_all<T: DeserializeOwned>(&self, gsi1pk: &str) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(GSI1)
                .key_condition_expression("GSI1PK = :p")
                .expression_attribute_values(":p", s(gsi1pk))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            for item in page.items() {
                out.push(data(item)?);
            }
            match page.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok(out),
            }
        }
    }

    /// A page of an index partition of the table (`pk`, sort keys `D#<device id>`): the
    /// device ids, in order.
    async fn query_device_ids(
        &self,
        pk: &str,
        page: &PageRequest,
    ) -> Result<Page<String>, StoreError> {
        let start = match &page.after {
            Some(c) => {
                let k = decode_cursor(c)?;
                if str_attr(&k, "PK") != Some(pk) || k.len() != 2 || !k.contains_key("SK") {
                    return Err(StoreError::Corrupt("invalid page cursor".into()));
                }
                Some(k)
            }
            None => None,
        };
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", s(pk))
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .limit(page.limit as i32)
            .send()
            .await
            .map_err(unavailable)?;
        let items = out
            .items()
            .iter()
            .filter_map(|i| str_attr(i, "SK").and_then(|sk| sk.strip_prefix("D#")))
            .map(str::to_owned)
            .collect();
        Ok(Page {
            items,
            next: out.last_evaluated_key().map(encode_cursor),
        })
    }

    fn profile_item(&self, p: &Profile) -> Result<Item, StoreError> {
        let mut item = record(profile_pk(&p.id), "PROFILE".into(), p)?;
        item.insert("GSI1PK".into(), s("PROFILES"));
        item.insert("GSI1SK".into(), s(p.id.clone()));
        item.insert("version".into(), nu(p.version));
        Ok(item)
    }

    fn profile_name_item(&self, p: &Profile) -> Item {
        let mut item = key(profile_name_pk(&p.name), "PNAME");
        item.insert("profile_id".into(), s(p.id.clone()));
        item
    }

    fn profile_state_item(&self, p: &DeviceProfile) -> Result<Item, StoreError> {
        let mut item = record(dev_pk(&p.device_id), format!("P#{}", p.profile_id), p)?;
        item.insert(
            "GSI1PK".into(),
            s(profile_state_pk(&p.profile_id, &p.device_id)),
        );
        item.insert("GSI1SK".into(), s(p.device_id.clone()));
        Ok(item)
    }

    fn device_item(&self, d: &Device, version: i64) -> Result<Item, StoreError> {
        let mut item = record(dev_pk(&d.id), "D".into(), d)?;
        item.insert("LPK".into(), s(listing_pk(&d.id)));
        item.insert("LSK".into(), s(d.id.clone()));
        item.insert("LS".into(), s(summary_json(d)?));
        item.insert("version".into(), n(version));
        Ok(item)
    }

    /// Migrates a table written before the `LIST` index: gives every device item that has
    /// no listing entry yet (`LPK`) its entry, and, if the table has no fleet counters
    /// yet and the whole table was read, counts its devices once. Run by the stack on
    /// deploy (`Custom::WinmdmMigrate`), never on a request path: it is the one place that
    /// Scans, a page at a time, and it writes each entry with a condition on the item's
    /// version, so a device written meanwhile keeps what its own write made (which
    /// includes the entry). It stops at `deadline` (a deploy must not wait on a large
    /// table): devices not reached get their entry at their next check-in.
    pub async fn backfill_listing(
        &self,
        deadline: std::time::Instant,
    ) -> Result<Backfill, StoreError> {
        let mut out = Backfill::default();
        let mut devices: Vec<Device> = Vec::new();
        let mut start = None;
        loop {
            if std::time::Instant::now() >= deadline {
                out.complete = false;
                return Ok(out);
            }
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("SK = :d")
                .expression_attribute_values(":d", s("D"))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            let mut missing = Vec::new();
            for item in page.items() {
                let device: Device = data(item)?;
                if !item.contains_key("LPK") {
                    missing.push((num_attr(item, "version").unwrap_or(0), device.clone()));
                }
                devices.push(device);
            }
            // 32 conditional updates at a time.
            for chunk in missing.chunks(32) {
                let mut updates = tokio::task::JoinSet::new();
                for (version, device) in chunk {
                    let update = self
                        .client
                        .update_item()
                        .table_name(&self.table)
                        .set_key(Some(key(dev_pk(&device.id), "D")))
                        .update_expression("SET LPK = :lpk, LSK = :lsk, LS = :ls")
                        .condition_expression(
                            "attribute_not_exists(LPK) AND (attribute_not_exists(version) OR version = :v)",
                        )
                        .expression_attribute_values(":lpk", s(listing_pk(&device.id)))
                        .expression_attribute_values(":lsk", s(device.id.clone()))
                        .expression_attribute_values(":ls", s(summary_json(device)?))
                        .expression_attribute_values(":v", n(*version));
                    updates.spawn(async move { update.send().await });
                }
                while let Some(r) = updates.join_next().await {
                    match r.map_err(|e| StoreError::Unavailable(format!("backfill: {e}")))? {
                        Ok(_) => out.added += 1,
                        // Written meanwhile: that write gave it its entry.
                        Err(e)
                            if e.as_service_error()
                                .is_some_and(|se| se.is_conditional_check_failed_exception()) => {}
                        Err(e) => return Err(unavailable(e)),
                    }
                }
            }
            match page.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => break,
            }
        }
        out.complete = true;
        out.devices = devices.len();
        // Fleet counters for a table that has none, counted from the devices just read.
        // A device written during the scan may end an hour off in the check-in counts,
        // which age out within 7 days (see `fleet_stats`).
        let counted = self
            .read_counters(&[winmdm_core::fleet_stats::KeyRange {
                from: "status:".into(),
                to: "status;".into(),
            }])
            .await?;
        if counted.is_empty() && !devices.is_empty() {
            for d in &devices {
                let deltas = winmdm_core::fleet_stats::deltas(&[], Some(d), false);
                self.add_counters(&d.id, &deltas).await;
            }
            out.counted = true;
        }
        Ok(out)
    }

    /// Counts the listing index's write for a device write that changes its summary
    /// (DynamoDB writes the index only then): 1 unit per KB of the projected entry.
    fn note_listing_write(
        &self,
        before: Option<&Device>,
        after: &Device,
    ) -> Result<(), StoreError> {
        if before.is_some_and(|b| DeviceSummary::of(b) == DeviceSummary::of(after)) {
            return Ok(());
        }
        // The projected entry: the table keys, the index keys and `LS` (names + values).
        let size = "PK".len()
            + dev_pk(&after.id).len()
            + "SK".len()
            + "D".len()
            + "LPK".len()
            + listing_pk(&after.id).len()
            + "LSK".len()
            + after.id.len()
            + "LS".len()
            + summary_json(after)?.len();
        self.capacity.lock().expect("capacity lock").write_units += kb(size);
        Ok(())
    }

    fn command_item(&self, c: &QueuedCommand) -> Result<Item, StoreError> {
        let sk = if c.state.is_open() {
            format!("C#{}", c.id)
        } else {
            format!("X#{}", c.id)
        };
        let mut item = record(dev_pk(&c.device_id), sk, c)?;
        item.insert("GSI1PK".into(), s(format!("CMDS#{}", c.device_id)));
        item.insert("GSI1SK".into(), s(c.id.clone()));
        Ok(item)
    }

    /// Commits an enrollment once, from a fresh read; `Ok(false)` means a condition
    /// failed because of a concurrent change, and the caller retries.
    async fn try_commit_enrollment(&self, commit: &EnrollmentCommit) -> Result<bool, StoreError> {
        let t = &self.table;
        let device = &commit.device;
        let existing = self.get(key(dev_pk(&device.id), "D")).await?;
        let existing_dev: Option<Device> = existing.as_ref().map(data).transpose()?;
        let existing_version = existing
            .as_ref()
            .and_then(|i| num_attr(i, "version"))
            .unwrap_or(0);
        let hw_owner = match &device.hw_dev_id {
            Some(hw) => self
                .get(key(hw_pk(hw), "HW"))
                .await?
                .and_then(|i| str_attr(&i, "device_id").map(str::to_owned)),
            None => None,
        };
        // The record this enrollment supersedes (same hardware, other id): read for its
        // groups, whose index entries go with it; its delete is conditional on this read.
        let superseded = match &hw_owner {
            Some(owner) if owner != &device.id => {
                let item = self.get(key(dev_pk(owner), "D")).await?;
                let version = item.as_ref().and_then(|i| num_attr(i, "version"));
                let dev: Option<Device> = item.as_ref().map(data).transpose()?;
                Some((version, dev))
            }
            _ => None,
        };
        // The decision again, from these reads (which the writes below are conditional
        // on): a block, or another user's enrollment, since the first one stands.
        identity::recheck_at_commit(
            device,
            existing_dev.as_ref(),
            superseded.as_ref().and_then(|(_, d)| d.as_ref()),
        )
        .map_err(StoreError::EnrollmentRefused)?;
        if let Some(old) = &existing_dev
            && old.holds_its_hardware()
            && let (Some(a), Some(b)) = (&old.hw_dev_id, &device.hw_dev_id)
            && !a.eq_ignore_ascii_case(b)
        {
            return Err(StoreError::Conflict(format!(
                "device {} on other hardware",
                device.id
            )));
        }

        let mut items = Vec::new();
        let mut token_index = None;
        if let Some(token) = &commit.token {
            let mut item = key(format!("TOKEN#{}", token.id), "TOKEN");
            item.insert("expires".into(), n(token.expires_at.unix_timestamp()));
            token_index = Some(items.len());
            items.push(put(item, Some("attribute_not_exists(PK)"), &[], t)?);
        }
        let device_cond = if existing.is_some() {
            "version = :v"
        } else {
            "attribute_not_exists(PK)"
        };
        let dv = [(":v", n(existing_version))];
        self.note_listing_write(existing_dev.as_ref(), device)?;
        items.push(put(
            self.device_item(device, existing_version + 1)?,
            Some(device_cond),
            if existing.is_some() { &dv } else { &[] },
            t,
        )?);
        // The old HWDevID of this record, if it changes (a record that had none).
        if let (Some(old), Some(new)) = (
            existing_dev.as_ref().and_then(|d| d.hw_dev_id.clone()),
            &device.hw_dev_id,
        ) && !old.eq_ignore_ascii_case(new)
        {
            items.push(delete(key(hw_pk(&old), "HW"), None, &[], t)?);
        }
        if let Some(hw) = &device.hw_dev_id {
            let mut idx = key(hw_pk(hw), "HW");
            idx.insert("device_id".into(), s(device.id.clone()));
            match &hw_owner {
                Some(owner) => {
                    items.push(put(
                        idx,
                        Some("device_id = :o"),
                        &[(":o", s(owner.clone()))],
                        t,
                    )?);
                    if owner != &device.id {
                        // Re-enrollment of this hardware under a new id: the old record
                        // is superseded, and leaves its groups. The index condition above
                        // and the version condition here make this consistent.
                        let (version, dev) = superseded.clone().unwrap_or((None, None));
                        let gone = key(dev_pk(owner), "D");
                        items.push(match (version, &dev) {
                            (Some(v), Some(_)) => {
                                delete(gone, Some("version = :v"), &[(":v", n(v))], t)?
                            }
                            (None, Some(_)) => {
                                delete(gone, Some("attribute_not_exists(version)"), &[], t)?
                            }
                            (_, None) => delete(gone, Some("attribute_not_exists(PK)"), &[], t)?,
                        });
                        if let Some(dev) = &dev {
                            items.extend(group_changes(owner, &dev.groups, &[], t)?);
                        }
                    }
                }
                None => items.push(put(idx, Some("attribute_not_exists(PK)"), &[], t)?),
            }
        }
        let old_groups = existing_dev.as_ref().map_or(&[][..], |d| &d.groups[..]);
        items.extend(group_changes(&device.id, old_groups, &device.groups, t)?);
        let mut before: Vec<&Device> = existing_dev.iter().collect();
        if let Some((_, Some(dev))) = &superseded
            && dev.id != device.id
        {
            before.push(dev);
        }
        let deltas = self.counted_by_writes(winmdm_core::fleet_stats::deltas(
            &before,
            Some(device),
            true,
        ));
        items.extend(counter_updates(&device.id, &deltas, t)?);
        if items.len() > MAX_TRANSACTION_ITEMS {
            return Err(too_many_items("this enrollment", items.len()));
        }
        match self.transact(items).await {
            Ok(()) => Ok(true),
            Err(TxError::Condition(failed)) => {
                if token_index.is_some_and(|i| failed.contains(&i)) {
                    return Err(StoreError::TokenReplayed);
                }
                Ok(false)
            }
            Err(TxError::Store(e)) => Err(e),
        }
    }
}

async fn backoff(attempt: u32) {
    use rand::Rng;
    let base = 5u64 << attempt.min(6);
    let jitter = rand::thread_rng().gen_range(0..=base);
    tokio::time::sleep(std::time::Duration::from_millis(base + jitter)).await;
}

#[async_trait]
impl Store for DynamoStore {
    /// DynamoDB items are at most 400 KB.
    fn max_record_bytes(&self) -> Option<usize> {
        Some(400 * 1024)
    }

    fn max_items_per_write(&self) -> Option<usize> {
        Some(MAX_TRANSACTION_ITEMS)
    }

    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let mut item = record(user_pk(&user.upn), "USER".into(), user)?;
        item.insert("GSI1PK".into(), s("USERS"));
        item.insert("GSI1SK".into(), s(user.upn.clone()));
        self.put_new(item, format!("user {}", user.upn)).await
    }

    async fn get_user(&self, upn: &str) -> Result<Option<User>, StoreError> {
        self.get(key(user_pk(upn), "USER"))
            .await?
            .as_ref()
            .map(data)
            .transpose()
    }

    async fn list_users(&self, page: &PageRequest) -> Result<Page<User>, StoreError> {
        self.query_page("USERS", page).await
    }

    async fn delete_user(&self, upn: &str) -> Result<bool, StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(upn), "USER")))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    /// One Query per shard and range (`COUNTER_SHARDS` × ranges, run together); each reads
    /// a handful of ~40-byte items.
    async fn read_counters(
        &self,
        ranges: &[winmdm_core::fleet_stats::KeyRange],
    ) -> Result<Vec<(String, i64)>, StoreError> {
        use crate::checkin_counts::{counters_of, range_start};
        let queries = ranges.iter().flat_map(|r| {
            (0..COUNTER_SHARDS).map(move |shard| {
                self.client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("PK = :pk AND SK BETWEEN :a AND :b")
                    .expression_attribute_values(":pk", s(format!("STATS#{shard}")))
                    // Check-in hours kept from the stream are fields of day items
                    // (`seen:<day>`), which sort before their first hour.
                    .expression_attribute_values(":a", s(range_start(&r.from)))
                    .expression_attribute_values(":b", s(r.to.clone()))
            })
        });
        let mut sums: std::collections::BTreeMap<String, i64> = Default::default();
        for out in query_together(queries, "fleet counters").await? {
            for item in out.items() {
                let Some(sk) = str_attr(item, "SK") else {
                    continue;
                };
                for (k, v) in counters_of(sk, item) {
                    *sums.entry(k).or_default() += v;
                }
            }
        }
        // Only what the ranges ask for (`to` is exclusive, and a day item read for its
        // later hours holds earlier ones too).
        Ok(sums
            .into_iter()
            .filter(|(k, _)| ranges.iter().any(|r| r.from <= *k && *k < r.to))
            .collect())
    }

    async fn get_device(&self, id: &str) -> Result<Option<Device>, StoreError> {
        self.get(key(dev_pk(id), "D"))
            .await?
            .as_ref()
            .map(data)
            .transpose()
    }

    async fn user_has_blocked_device(&self, upn: &str) -> Result<bool, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", s(format!("UBLOCK#{upn}")))
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.count() > 0)
    }

    async fn get_device_by_hw_dev_id(&self, hw_dev_id: &str) -> Result<Option<Device>, StoreError> {
        let Some(idx) = self.get(key(hw_pk(hw_dev_id), "HW")).await? else {
            return Ok(None);
        };
        match str_attr(&idx, "device_id") {
            Some(id) => self.get_device(id).await,
            None => Ok(None),
        }
    }

    async fn recent_failed_commands(
        &self,
        limit: usize,
    ) -> Result<Vec<FailedCommandNote>, StoreError> {
        let today = OffsetDateTime::now_utc().date();
        let limit = limit.clamp(1, 100);
        let mut out: Vec<FailedCommandNote> = Vec::new();
        for back in 0..FAILURE_LOOKBACK_DAYS {
            if out.len() >= limit {
                break;
            }
            let day = today - time::Duration::days(back);
            // The day's shards, concurrently; each newest first, merged below.
            let queries = (0..FAILURE_SHARDS).map(|shard| {
                self.client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("PK = :p")
                    .expression_attribute_values(":p", s(failures_pk(day, shard)))
                    .scan_index_forward(false)
                    .limit(limit as i32)
            });
            let mut day_notes: Vec<FailedCommandNote> = Vec::new();
            for r in query_together(queries, "failure notes").await? {
                for item in r.items() {
                    day_notes.push(data(item)?);
                }
            }
            day_notes.sort_by(|a, b| {
                b.failed_at
                    .cmp(&a.failed_at)
                    .then_with(|| b.command_id.cmp(&a.command_id))
            });
            for note in day_notes {
                if out.len() < limit && !out.iter().any(|n| n.command_id == note.command_id) {
                    out.push(note);
                }
            }
        }
        Ok(out)
    }

    fn listing_shards(&self) -> u32 {
        LISTING_SHARDS
    }

    async fn read_device_summaries(
        &self,
        reads: &[ShardRead],
    ) -> Result<Vec<SummaryBatch>, StoreError> {
        // The runs are independent partitions: read them concurrently.
        let mut tasks = tokio::task::JoinSet::new();
        for (i, r) in reads.iter().enumerate() {
            let client = self.client.clone();
            let table = self.table.clone();
            let r = r.clone();
            tasks.spawn(async move { (i, read_listing_run(&client, &table, &r).await) });
        }
        let mut out = vec![SummaryBatch::default(); reads.len()];
        while let Some(done) = tasks.join_next().await {
            let (i, batch) =
                done.map_err(|e| StoreError::Unavailable(format!("listing read failed: {e}")))?;
            out[i] = batch?;
        }
        Ok(out)
    }

    async fn is_token_consumed(&self, token_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .get(key(format!("TOKEN#{token_id}"), "TOKEN"))
            .await?
            .is_some())
    }

    async fn commit_enrollment(&self, commit: &EnrollmentCommit) -> Result<(), StoreError> {
        for attempt in 0..MAX_ATTEMPTS {
            if self.try_commit_enrollment(commit).await? {
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(StoreError::Unavailable(
            "too much contention on this device; try again".into(),
        ))
    }

    async fn load_management(
        &self,
        device_id: &str,
        session_id: &str,
    ) -> Result<Option<ManagementSnapshot>, StoreError> {
        let pk = dev_pk(device_id);
        let mut items: Vec<Item> = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk AND SK < :t")
                .expression_attribute_values(":pk", s(pk.clone()))
                .expression_attribute_values(":t", s("T"))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            let page = out.items.unwrap_or_default();
            let bytes: usize = page.iter().map(item_size).sum();
            self.capacity.lock().expect("capacity lock").read_units +=
                bytes.div_ceil(4096).max(1) as f64;
            items.extend(page);
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        let mut device = None;
        let mut session = None;
        let mut open_commands = Vec::new();
        let mut profiles = Vec::new();
        let wanted_session = format!("S#{session_id}");
        let now = OffsetDateTime::now_utc();
        for item in &items {
            match str_attr(item, "SK") {
                Some("D") => device = Some(data::<Device>(item)?),
                Some(sk) if sk.starts_with("C#") => {
                    open_commands.push(data::<QueuedCommand>(item)?)
                }
                // In SK order, which is profile id order.
                Some(sk) if sk.starts_with("P#") => profiles.push(data::<DeviceProfile>(item)?),
                Some(sk) if sk == wanted_session => {
                    session = Some(data::<SessionState>(item)?).filter(|s| s.expires_at > now)
                }
                _ => {}
            }
        }
        let Some(device) = device else {
            return Ok(None);
        };
        let version = items
            .iter()
            .find(|i| str_attr(i, "SK") == Some("D"))
            .and_then(|i| num_attr(i, "version"))
            .unwrap_or(0);
        {
            let mut loaded = self.loaded.lock().expect("loaded-device cache");
            // Entries live from a message's read to its write; messages that end without
            // a write (refused devices) leave theirs behind, so keep the map bounded.
            if loaded.len() >= 1024 {
                loaded.clear();
            }
            loaded.insert(
                device_id.to_owned(),
                LoadedDevice {
                    version,
                    device: device.clone(),
                    profiles: profiles.clone(),
                },
            );
        }
        // Commands this session sent that have since settled (their Results may follow).
        if let Some(s) = &session {
            for sent in &s.sent {
                if !open_commands.iter().any(|c| c.id == sent.command_id)
                    && let Some(item) = self
                        .get(key(pk.clone(), format!("X#{}", sent.command_id)))
                        .await?
                {
                    open_commands.push(data(&item)?);
                }
            }
            open_commands.sort_by(|a, b| a.id.cmp(&b.id));
            open_commands.dedup_by(|a, b| a.id == b.id);
        }
        Ok(Some(ManagementSnapshot {
            device,
            session,
            open_commands,
            profiles,
        }))
    }

    async fn save_management(&self, update: &ManagementUpdate) -> Result<(), StoreError> {
        let t = &self.table;
        let pk = dev_pk(&update.device_id);
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
        // One write per profile (a transaction may not touch an item twice): the last wins.
        let mut profiles: Vec<&DeviceProfile> = Vec::with_capacity(update.profiles.len());
        for p in update.profiles.iter().rev() {
            if !profiles.iter().any(|q| q.profile_id == p.profile_id) {
                profiles.push(p);
            }
        }
        // The record load_management read for this message, if any; a failed condition
        // below means it changed since, and the next attempt reads it afresh.
        let mut cached = self
            .loaded
            .lock()
            .expect("loaded-device cache")
            .remove(&update.device_id);
        for attempt in 0..MAX_ATTEMPTS {
            let (version, mut device, stored_profiles) = match cached.take() {
                Some(c) => (c.version, c.device, c.profiles),
                None => {
                    let Some(current) = self.get(key(pk.clone(), "D")).await? else {
                        return Err(StoreError::NotFound(format!("device {}", update.device_id)));
                    };
                    // The state records this write replaces, read after the device: a
                    // change to them since bumps the device's version, failing the write.
                    let mut stored = Vec::new();
                    for p in &profiles {
                        if let Some(item) = self
                            .get(key(pk.clone(), format!("P#{}", p.profile_id)))
                            .await?
                        {
                            stored.push(data::<DeviceProfile>(&item)?);
                        }
                    }
                    (
                        num_attr(&current, "version").unwrap_or(0),
                        data::<Device>(&current)?,
                        stored,
                    )
                }
            };
            let mut items = Vec::new();
            let mut hw_added = None;
            let mut seen_after = Vec::new();
            if update.device.is_empty() && !profiles.is_empty() {
                // Profile state changes move counters computed from the records read with
                // this version: the write bumps it, so a concurrent writer of the same
                // records fails its condition and recomputes from what this one wrote.
                items.push(
                    TransactWriteItem::builder()
                        .update(
                            aws_sdk_dynamodb::types::Update::builder()
                                .table_name(t)
                                .set_key(Some(key(pk.clone(), "D")))
                                .update_expression("SET version = :nv")
                                .condition_expression("version = :v")
                                .expression_attribute_values(":v", n(version))
                                .expression_attribute_values(":nv", n(version + 1))
                                .build()
                                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        )
                        .build(),
                );
            } else if update.device.is_empty() {
                items.push(
                    TransactWriteItem::builder()
                        .condition_check(
                            ConditionCheck::builder()
                                .table_name(t)
                                .set_key(Some(key(pk.clone(), "D")))
                                .condition_expression("version = :v")
                                .expression_attribute_values(":v", n(version))
                                .build()
                                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        )
                        .build(),
                );
            } else {
                let before = device.clone();
                let had_hw = device.hw_dev_id.is_some();
                let was_blocked = device.status == DeviceStatus::Blocked;
                let old_groups = device.groups.clone();
                update
                    .device
                    .apply(&mut device)
                    .map_err(|e| StoreError::Conflict(e.to_string()))?;
                items.extend(group_changes(&device.id, &old_groups, &device.groups, t)?);
                let blocked = device.status == DeviceStatus::Blocked;
                if was_blocked != blocked {
                    let idx = key(format!("UBLOCK#{}", device.upn), format!("D#{}", device.id));
                    items.push(if blocked {
                        put(idx, None, &[], t)?
                    } else {
                        delete(idx, None, &[], t)?
                    });
                }
                if let (false, Some(hw)) = (had_hw, device.hw_dev_id.clone()) {
                    hw_added = Some(hw);
                }
                items.push(put(
                    self.device_item(&device, version + 1)?,
                    Some("version = :v"),
                    &[(":v", n(version))],
                    t,
                )?);
                self.note_listing_write(Some(&before), &device)?;
                let deltas = self.counted_by_writes(winmdm_core::fleet_stats::deltas(
                    &[&before],
                    Some(&device),
                    false,
                ));
                // Check-in hours move with nearly every session that writes (the hourly
                // `last_seen_at` bump): those two counters are added after the commit,
                // 1 unit each, instead of inside the transaction, where they would make
                // the bump a transaction (the device put billed twice, and 2 units per
                // counter). A crash in between leaves one device in the wrong hour; the
                // overview derives "earlier than 7 days" from the totals, so any such
                // error ages out within 7 days. Status and expiry counts stay exact.
                let (seen, exact): (Vec<_>, Vec<_>) = deltas
                    .into_iter()
                    .partition(|(k, _)| k.starts_with("seen:"));
                items.extend(counter_updates(&device.id, &exact, t)?);
                seen_after = seen;
            }
            let hw_index = hw_added.as_ref().map(|_| items.len());
            if let Some(hw) = &hw_added {
                let mut idx = key(hw_pk(hw), "HW");
                idx.insert("device_id".into(), s(device.id.clone()));
                items.push(put(idx, Some("attribute_not_exists(PK)"), &[], t)?);
            }
            match &update.session {
                SessionWrite::Keep => {}
                SessionWrite::Put(state) => {
                    let mut item = record(pk.clone(), format!("S#{}", state.slot), state.as_ref())?;
                    item.insert("expires".into(), n(state.expires_at.unix_timestamp()));
                    items.push(put(item, None, &[], t)?);
                }
                SessionWrite::Delete { slot } => {
                    items.push(delete(key(pk.clone(), format!("S#{slot}")), None, &[], t)?);
                }
            }
            let mut open_command_items = Vec::new();
            for c in &update.commands {
                if c.state.is_open() {
                    // Only over the open record: a message that read the command before
                    // another settled it (a device's retry overlapping its first attempt)
                    // must not bring it back as open, to be delivered again.
                    open_command_items.push(items.len());
                    items.push(put(
                        self.command_item(c)?,
                        Some("attribute_exists(PK)"),
                        &[],
                        t,
                    )?);
                } else {
                    items.push(put(self.command_item(c)?, None, &[], t)?);
                }
                if c.state == CommandState::Failed {
                    // It failed in this message, or a late Results was added to it (which
                    // leaves `updated_at`, and so the note's key, as they were): writing the
                    // note again replaces it.
                    items.push(put(failure_note_item(c)?, None, &[], t)?);
                }
                if !c.state.is_open() {
                    items.push(delete(
                        key(pk.clone(), format!("C#{}", c.id)),
                        None,
                        &[],
                        t,
                    )?);
                }
            }
            let mut profile_deltas = Vec::new();
            for p in profiles.iter().rev() {
                items.push(put(self.profile_state_item(p)?, None, &[], t)?);
                let before = stored_profiles
                    .iter()
                    .find(|s| s.profile_id == p.profile_id);
                profile_deltas.extend(winmdm_core::fleet_stats::profile_deltas(before, p));
            }
            items.extend(counter_updates(&update.device_id, &profile_deltas, t)?);
            if items.len() > MAX_TRANSACTION_ITEMS {
                return Err(too_many_items("this management message", items.len()));
            }
            match self.transact(items).await {
                Ok(()) => {
                    self.add_counters(&update.device_id, &seen_after).await;
                    return Ok(());
                }
                Err(TxError::Condition(failed)) => {
                    if open_command_items.iter().any(|i| failed.contains(i)) {
                        // Computed from a read that is out of date: the device resends.
                        return Err(StoreError::Unavailable(
                            "a command of this message was settled by another; try again".into(),
                        ));
                    }
                    if hw_index.is_some_and(|i| failed.contains(&i)) {
                        // Another record owns that hardware id: keep the device without it.
                        let mut retry = update.clone();
                        retry.device.hw_dev_id = None;
                        return Box::pin(self.save_management(&retry)).await;
                    }
                    backoff(attempt).await;
                }
                Err(TxError::Store(e)) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(
            "too much contention on this device; try again".into(),
        ))
    }

    async fn create_profile(&self, profile: &Profile) -> Result<(), StoreError> {
        let t = &self.table;
        for attempt in 0..MAX_ATTEMPTS {
            let items = vec![
                put(
                    self.profile_item(profile)?,
                    Some("attribute_not_exists(PK)"),
                    &[],
                    t,
                )?,
                put(
                    self.profile_name_item(profile),
                    Some("attribute_not_exists(PK)"),
                    &[],
                    t,
                )?,
            ];
            match self.transact(items).await {
                Ok(()) => return Ok(()),
                Err(TxError::Condition(failed)) if failed.contains(&0) => {
                    return Err(StoreError::Conflict(format!("profile {}", profile.id)));
                }
                Err(TxError::Condition(failed)) if failed.contains(&1) => {
                    return Err(StoreError::Conflict(format!(
                        "a profile named {:?}",
                        profile.name
                    )));
                }
                // Cancelled by a concurrent transaction on the same items.
                Err(TxError::Condition(_)) => backoff(attempt).await,
                Err(TxError::Store(e)) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(
            "too much contention on this profile; try again".into(),
        ))
    }

    async fn update_profile(
        &self,
        profile: &Profile,
        expect_version: u64,
    ) -> Result<(), StoreError> {
        let t = &self.table;
        for attempt in 0..MAX_ATTEMPTS {
            let Some(current) = self.get(key(profile_pk(&profile.id), "PROFILE")).await? else {
                return Err(StoreError::NotFound(format!("profile {}", profile.id)));
            };
            let stored: Profile = data(&current)?;
            if stored.version != expect_version {
                return Err(StoreError::Conflict(format!(
                    "profile {} at version {} (not {expect_version})",
                    profile.id, stored.version
                )));
            }
            let mut items = vec![put(
                self.profile_item(profile)?,
                Some("version = :v"),
                &[(":v", nu(expect_version))],
                t,
            )?];
            let mut name_index = None;
            if profile_name_pk(&stored.name) != profile_name_pk(&profile.name) {
                // The name moves with the record, in the same transaction.
                items.push(delete(
                    key(profile_name_pk(&stored.name), "PNAME"),
                    Some("attribute_not_exists(PK) OR profile_id = :id"),
                    &[(":id", s(profile.id.clone()))],
                    t,
                )?);
                name_index = Some(items.len());
                items.push(put(
                    self.profile_name_item(profile),
                    Some("attribute_not_exists(PK)"),
                    &[],
                    t,
                )?);
            }
            match self.transact(items).await {
                Ok(()) => return Ok(()),
                Err(TxError::Condition(failed))
                    if name_index.is_some_and(|i| failed.contains(&i)) =>
                {
                    return Err(StoreError::Conflict(format!(
                        "a profile named {:?}",
                        profile.name
                    )));
                }
                // The record changed (or went) since the read: the next read tells which.
                Err(TxError::Condition(_)) => backoff(attempt).await,
                Err(TxError::Store(e)) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(
            "too much contention on this profile; try again".into(),
        ))
    }

    async fn get_profile(&self, id: &str) -> Result<Option<Profile>, StoreError> {
        self.get(key(profile_pk(id), "PROFILE"))
            .await?
            .as_ref()
            .map(data)
            .transpose()
    }

    async fn list_profiles(&self) -> Result<Vec<Profile>, StoreError> {
        self.query_all("PROFILES").await
    }

    async fn delete_profile(&self, id: &str) -> Result<bool, StoreError> {
        let t = &self.table;
        for attempt in 0..MAX_ATTEMPTS {
            let Some(current) = self.get(key(profile_pk(id), "PROFILE")).await? else {
                return Ok(false);
            };
            let stored: Profile = data(&current)?;
            let version = match current.get("version") {
                Some(v) => v.clone(),
                None => nu(stored.version),
            };
            let items = vec![
                delete(
                    key(profile_pk(id), "PROFILE"),
                    Some("version = :v"),
                    &[(":v", version)],
                    t,
                )?,
                delete(
                    key(profile_name_pk(&stored.name), "PNAME"),
                    Some("attribute_not_exists(PK) OR profile_id = :id"),
                    &[(":id", s(id))],
                    t,
                )?,
            ];
            match self.transact(items).await {
                Ok(()) => return Ok(true),
                Err(TxError::Condition(_)) => backoff(attempt).await,
                Err(TxError::Store(e)) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(
            "too much contention on this profile; try again".into(),
        ))
    }

    async fn create_group(&self, group: &Group) -> Result<(), StoreError> {
        let mut item = record(group_pk(&group.name), "GROUP".into(), group)?;
        item.insert("GSI1PK".into(), s("GROUPS"));
        item.insert("GSI1SK".into(), s(group.name.clone()));
        self.put_new(item, format!("group {}", group.name)).await
    }

    async fn get_group(&self, name: &str) -> Result<Option<Group>, StoreError> {
        self.get(key(group_pk(name), "GROUP"))
            .await?
            .as_ref()
            .map(data)
            .transpose()
    }

    async fn list_groups(&self) -> Result<Vec<Group>, StoreError> {
        self.query_all("GROUPS").await
    }

    async fn delete_group(&self, name: &str) -> Result<bool, StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(group_pk(name), "GROUP")))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    async fn list_group_devices(
        &self,
        group: &str,
        page: &PageRequest,
    ) -> Result<Page<String>, StoreError> {
        self.query_device_ids(&format!("GMEM#{group}"), page).await
    }

    async fn list_profile_devices(
        &self,
        profile_id: &str,
        page: &PageRequest,
    ) -> Result<Page<DeviceProfile>, StoreError> {
        let after = match &page.after {
            Some(c) => Some(
                c.strip_prefix("p.")
                    .and_then(|b| B64URL.decode(b).ok())
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| StoreError::Corrupt("invalid page cursor".into()))?,
            ),
            None => None,
        };
        // Every run of the profile's states (and the unsharded key of records written
        // before the sharding), each from the cursor on, concurrently; the page is the
        // first `limit` of their union in device order.
        let mut keys: Vec<String> = (0..PROFILE_STATE_SHARDS)
            .map(|n| format!("PDEV#{profile_id}#{n}"))
            .collect();
        keys.push(format!("PDEV#{profile_id}"));
        let queries = keys.into_iter().map(|k| {
            let q = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(GSI1)
                .expression_attribute_values(":p", s(k))
                .limit(page.limit as i32);
            match &after {
                Some(a) => q
                    .key_condition_expression("GSI1PK = :p AND GSI1SK > :a")
                    .expression_attribute_values(":a", s(a.clone())),
                None => q.key_condition_expression("GSI1PK = :p"),
            }
        });
        let mut states: Vec<DeviceProfile> = Vec::new();
        let mut more = false;
        for r in query_together(queries, "profile states").await? {
            more |= r.last_evaluated_key().is_some();
            for item in r.items() {
                states.push(data(item)?);
            }
        }
        states.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        more |= states.len() > page.limit;
        states.truncate(page.limit);
        let next = match states.last() {
            Some(last) if more => Some(format!("p.{}", B64URL.encode(&last.device_id))),
            _ => None,
        };
        Ok(Page {
            items: states,
            next,
        })
    }

    async fn enqueue_command(&self, command: &QueuedCommand) -> Result<(), StoreError> {
        let t = &self.table;
        let items = vec![
            TransactWriteItem::builder()
                .condition_check(
                    ConditionCheck::builder()
                        .table_name(t)
                        .set_key(Some(key(dev_pk(&command.device_id), "D")))
                        .condition_expression("attribute_exists(PK)")
                        .build()
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                )
                .build(),
            put(
                self.command_item(command)?,
                Some("attribute_not_exists(PK)"),
                &[],
                t,
            )?,
        ];
        match self.transact(items).await {
            Ok(()) => Ok(()),
            Err(TxError::Condition(failed)) if failed.contains(&0) => Err(StoreError::NotFound(
                format!("device {}", command.device_id),
            )),
            Err(TxError::Condition(_)) => {
                Err(StoreError::Conflict(format!("command {}", command.id)))
            }
            Err(TxError::Store(e)) => Err(e),
        }
    }

    async fn get_command(
        &self,
        device_id: &str,
        command_id: &str,
    ) -> Result<Option<QueuedCommand>, StoreError> {
        for prefix in ["C#", "X#"] {
            if let Some(item) = self
                .get(key(dev_pk(device_id), format!("{prefix}{command_id}")))
                .await?
            {
                return data(&item).map(Some);
            }
        }
        Ok(None)
    }

    async fn list_commands(
        &self,
        device_id: &str,
        page: &PageRequest,
    ) -> Result<Page<QueuedCommand>, StoreError> {
        self.query_page(&format!("CMDS#{device_id}"), page).await
    }
}
