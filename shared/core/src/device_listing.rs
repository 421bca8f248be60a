//! The device listing the console and the admin API page, search, filter and sort.
//!
//! Each device has a [`DeviceSummary`]: the few fields a row shows and a search matches,
//! kept by the store beside the device record and rewritten only when one of them changes
//! (on DynamoDB it is the only part of the device projected into the listing index, so an
//! unchanged summary costs the index nothing). Summaries are spread over
//! [`Store::listing_shards`] runs by a stable hash of the DeviceID, each run in DeviceID
//! order; no single partition takes every device's writes (one run on the embedded store,
//! which has no partitions).
//!
//! What a request reads:
//! - the plain listing in DeviceID order merges the runs lazily: a page of `n` reads about
//!   `n` summaries (plus a small batch per run), whatever the fleet's size;
//! - a search or filter in DeviceID order examines summaries in that same order until the
//!   page is full or [`SEARCH_BUDGET`] summaries were examined, and hands back a cursor to
//!   go on from there, so no request reads an unbounded number of records;
//! - any other order needs every match first: it examines at most [`SORT_LIMIT`] summaries
//!   and otherwise asks for a narrower filter ([`ListingError::TooManyToSort`]).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::model::{Compliance, Device, DeviceStatus, EnrollmentType};
use crate::store::{Store, StoreError};

/// Summaries examined by one search or filter request in DeviceID order.
pub const SEARCH_BUDGET: usize = 20_000;
/// The most summaries a request sorted by anything but DeviceID may examine.
pub const SORT_LIMIT: usize = 20_000;
/// The longest search text accepted (device-supplied values are capped at 256).
pub const MAX_SEARCH_CHARS: usize = 128;

/// One device as the listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSummary {
    pub id: String,
    pub upn: String,
    pub status: DeviceStatus,
    pub enrollment_type: EnrollmentType,
    /// The name the device last reported, else the one it enrolled with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The OS build the device last reported, else the one it enrolled with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub last_seen_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub cert_not_after: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliance: Option<Compliance>,
}

impl DeviceSummary {
    pub fn of(d: &Device) -> Self {
        Self {
            id: d.id.clone(),
            upn: d.upn.clone(),
            status: d.status,
            enrollment_type: d.enrollment_type,
            name: d
                .dm_info
                .device_name
                .clone()
                .or_else(|| d.os.device_name.clone()),
            serial: d.dm_info.serial.clone(),
            os_version: d
                .dm_info
                .os_version
                .clone()
                .or_else(|| d.os.os_version.clone()),
            enrolled_at: d.enrolled_at,
            last_seen_at: d.last_seen_at,
            cert_not_after: d.cert.not_after,
            groups: d.groups.clone(),
            compliance: d.compliance,
        }
    }
}

/// The listing run a device's summary is kept in: FNV-1a of the DeviceID. Stored keys
/// depend on it, so it must never change.
pub fn shard_of(device_id: &str, shards: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in device_id.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % shards.max(1)
}

/// Summaries of one run read in one go, in DeviceID order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SummaryBatch {
    pub items: Vec<DeviceSummary>,
    /// Whether the run has summaries after the last of `items`.
    pub more: bool,
}

/// One run's read: summaries of `shard` with DeviceIDs after `after`, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRead {
    pub shard: u32,
    pub after: Option<String>,
    pub limit: usize,
}

/// Last check-in, as the listing filters it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeenFilter {
    WithinHour,
    WithinDay,
    WithinWeek,
    /// Seen, but not in the last 7 days.
    OlderThanWeek,
    Never,
}

impl SeenFilter {
    pub const ALL: [(&'static str, SeenFilter); 5] = [
        ("1h", SeenFilter::WithinHour),
        ("24h", SeenFilter::WithinDay),
        ("7d", SeenFilter::WithinWeek),
        ("older", SeenFilter::OlderThanWeek),
        ("never", SeenFilter::Never),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("", |(n, _)| n)
    }

    fn matches(self, seen: Option<OffsetDateTime>, now: OffsetDateTime) -> bool {
        let within = |d: Duration| seen.is_some_and(|t| now - t < d);
        match self {
            Self::WithinHour => within(Duration::hours(1)),
            Self::WithinDay => within(Duration::days(1)),
            Self::WithinWeek => within(Duration::days(7)),
            Self::OlderThanWeek => seen.is_some() && !within(Duration::days(7)),
            Self::Never => seen.is_none(),
        }
    }
}

/// The column a listing is ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    #[default]
    Id,
    Name,
    Upn,
    Status,
    OsVersion,
    LastSeen,
    EnrolledAt,
}

impl SortKey {
    pub const ALL: [(&'static str, SortKey); 7] = [
        ("id", SortKey::Id),
        ("name", SortKey::Name),
        ("upn", SortKey::Upn),
        ("status", SortKey::Status),
        ("os", SortKey::OsVersion),
        ("last_seen", SortKey::LastSeen),
        ("enrolled", SortKey::EnrolledAt),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("id", |(n, _)| n)
    }
}

/// What to list: filters, order and where to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceQuery {
    /// Case-insensitive text found in the DeviceID, UPN, name or serial number.
    pub text: Option<String>,
    pub status: Option<DeviceStatus>,
    /// Case-insensitive text found in the OS version (`10.0.22631` matches every 23H2
    /// build).
    pub os: Option<String>,
    pub seen: Option<SeenFilter>,
    pub group: Option<String>,
    /// Profile compliance; `Some(None)` lists devices with no profile assigned.
    pub compliance: Option<Option<Compliance>>,
    pub sort: SortKey,
    pub descending: bool,
    /// A cursor from the previous page of the same query.
    pub cursor: Option<String>,
    pub limit: usize,
}

impl Default for DeviceQuery {
    fn default() -> Self {
        Self {
            text: None,
            status: None,
            os: None,
            seen: None,
            group: None,
            compliance: None,
            sort: SortKey::Id,
            descending: false,
            cursor: None,
            limit: 50,
        }
    }
}

/// A query parameter the listing cannot take, with the message to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

impl DeviceQuery {
    pub const MAX_LIMIT: usize = 500;

    /// From query-string pairs (`q`, `status`, `os`, `seen`, `group`, `sort`, `order`,
    /// `cursor`, `limit`); empty values mean "any". Unknown names are refused, so a typo
    /// does not silently list every device.
    pub fn from_params<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, QueryError> {
        let mut q = Self {
            limit: 100,
            ..Self::default()
        };
        let bad = |m: String| Err(QueryError(m));
        for (k, v) in params {
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            match k {
                "q" => {
                    if v.chars().count() > MAX_SEARCH_CHARS {
                        return bad(format!(
                            "the search text is longer than {MAX_SEARCH_CHARS} characters"
                        ));
                    }
                    q.text = Some(v.to_lowercase());
                }
                "status" => {
                    q.status = Some(match v {
                        "enrolled" => DeviceStatus::Enrolled,
                        "unenrolled" => DeviceStatus::Unenrolled,
                        "blocked" => DeviceStatus::Blocked,
                        "removed" => DeviceStatus::Removed,
                        _ => {
                            return bad(
                                "status is one of enrolled, unenrolled, blocked, removed".into()
                            );
                        }
                    })
                }
                "os" => {
                    if v.chars().count() > MAX_SEARCH_CHARS {
                        return bad(format!(
                            "the OS version filter is longer than {MAX_SEARCH_CHARS} characters"
                        ));
                    }
                    q.os = Some(v.to_lowercase());
                }
                "seen" => {
                    q.seen = Some(match SeenFilter::ALL.iter().find(|(n, _)| *n == v) {
                        Some((_, f)) => *f,
                        None => return bad("seen is one of 1h, 24h, 7d, older, never".into()),
                    })
                }
                "group" => q.group = Some(v.to_owned()),
                "compliance" => {
                    q.compliance = Some(match v {
                        "compliant" => Some(Compliance::Compliant),
                        "pending" => Some(Compliance::Pending),
                        "failed" => Some(Compliance::Failed),
                        "none" => None,
                        _ => {
                            return bad(
                                "compliance is one of compliant, pending, failed, none".into()
                            );
                        }
                    })
                }
                "sort" => {
                    q.sort = match SortKey::ALL.iter().find(|(n, _)| *n == v) {
                        Some((_, s)) => *s,
                        None => {
                            return bad(
                                "sort is one of id, name, upn, status, os, last_seen, enrolled"
                                    .into(),
                            );
                        }
                    }
                }
                "order" => {
                    q.descending = match v {
                        "asc" => false,
                        "desc" => true,
                        _ => return bad("order is asc or desc".into()),
                    }
                }
                "cursor" => q.cursor = Some(v.to_owned()),
                "limit" => {
                    q.limit = match v.parse::<usize>() {
                        Ok(n) if n >= 1 => n.min(Self::MAX_LIMIT),
                        _ => return bad("limit must be a positive number".into()),
                    }
                }
                other => return bad(format!("unknown listing parameter {other:?}")),
            }
        }
        Ok(q)
    }

    /// Whether anything but the DeviceID order narrows the listing.
    pub fn is_filtered(&self) -> bool {
        self.text.is_some()
            || self.status.is_some()
            || self.os.is_some()
            || self.seen.is_some()
            || self.group.is_some()
            || self.compliance.is_some()
    }

    fn in_id_order(&self) -> bool {
        self.sort == SortKey::Id && !self.descending
    }

    pub fn matches(&self, s: &DeviceSummary, now: OffsetDateTime) -> bool {
        let contains = |hay: Option<&str>, needle: &str| {
            hay.is_some_and(|h| h.to_lowercase().contains(needle))
        };
        if let Some(t) = &self.text
            && !(contains(Some(&s.id), t)
                || contains(Some(&s.upn), t)
                || contains(s.name.as_deref(), t)
                || contains(s.serial.as_deref(), t))
        {
            return false;
        }
        if self.status.is_some_and(|st| st != s.status) {
            return false;
        }
        if let Some(os) = &self.os
            && !contains(s.os_version.as_deref(), os)
        {
            return false;
        }
        if self.seen.is_some_and(|f| !f.matches(s.last_seen_at, now)) {
            return false;
        }
        if self.compliance.is_some_and(|c| c != s.compliance) {
            return false;
        }
        if let Some(g) = &self.group
            && g != crate::profiles::ALL_GROUP
            && !s.groups.iter().any(|m| m == g)
        {
            return false;
        }
        true
    }
}

/// A page of the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub items: Vec<DeviceSummary>,
    /// Where the next page starts; `None` when nothing follows.
    pub next: Option<String>,
    /// Summaries read to make this page.
    pub examined: usize,
    /// A search that stopped at [`SEARCH_BUDGET`] before filling the page: `next` goes on.
    pub budget_spent: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the cursor is not one this listing gave out")]
    BadCursor,
    #[error(
        "more than {0} devices to sort: narrow the search or filters, or list in DeviceID order"
    )]
    TooManyToSort(usize),
}

/// Cursors: `i.<hex DeviceID>` (DeviceID order: everything up to it was examined) or
/// `o.<offset>` (any other order). Hex keeps a hostile DeviceID out of URLs and markup.
fn id_cursor(id: &str) -> String {
    let mut c = String::with_capacity(2 + id.len() * 2);
    c.push_str("i.");
    for b in id.as_bytes() {
        c.push_str(&format!("{b:02x}"));
    }
    c
}

fn parse_id_cursor(c: &str) -> Result<String, ListingError> {
    let hex = c.strip_prefix("i.").ok_or(ListingError::BadCursor)?;
    // ASCII only: the pairs below are sliced by byte, and a cursor is client input.
    if !hex.is_ascii() || hex.len() % 2 != 0 || hex.len() > 2048 {
        return Err(ListingError::BadCursor);
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| ListingError::BadCursor)?;
    String::from_utf8(bytes).map_err(|_| ListingError::BadCursor)
}

fn parse_offset_cursor(c: &str) -> Result<usize, ListingError> {
    c.strip_prefix("o.")
        .and_then(|n| n.parse().ok())
        .ok_or(ListingError::BadCursor)
}

/// The runs merged in DeviceID order, read a batch at a time.
struct Merge<'a> {
    store: &'a dyn Store,
    runs: Vec<Run>,
    batch: usize,
}

struct Run {
    shard: u32,
    buf: VecDeque<DeviceSummary>,
    after: Option<String>,
    more: bool,
}

impl<'a> Merge<'a> {
    fn new(store: &'a dyn Store, after: Option<String>, batch: usize) -> Self {
        let runs = (0..store.listing_shards().max(1))
            .map(|shard| Run {
                shard,
                buf: VecDeque::new(),
                after: after.clone(),
                more: true,
            })
            .collect();
        Self { store, runs, batch }
    }

    /// Refills every run that is empty but not finished, in one store call.
    async fn refill(&mut self) -> Result<(), StoreError> {
        let reads: Vec<ShardRead> = self
            .runs
            .iter()
            .filter(|r| r.buf.is_empty() && r.more)
            .map(|r| ShardRead {
                shard: r.shard,
                after: r.after.clone(),
                limit: self.batch,
            })
            .collect();
        if reads.is_empty() {
            return Ok(());
        }
        let batches = self.store.read_device_summaries(&reads).await?;
        if batches.len() != reads.len() {
            return Err(StoreError::Corrupt(
                "the store answered a different number of listing reads".into(),
            ));
        }
        for (read, batch) in reads.iter().zip(batches) {
            let run = self
                .runs
                .iter_mut()
                .find(|r| r.shard == read.shard)
                .expect("a run per read");
            run.more = batch.more && !batch.items.is_empty();
            if let Some(last) = batch.items.last() {
                run.after = Some(last.id.clone());
            }
            // A store must answer in order and after the cursor; anything else would make
            // the merge skip or repeat devices.
            if batch.items.windows(2).any(|w| w[0].id >= w[1].id)
                || batch
                    .items
                    .first()
                    .zip(read.after.as_ref())
                    .is_some_and(|(f, a)| f.id <= *a)
            {
                return Err(StoreError::Corrupt("listing run out of order".into()));
            }
            run.buf.extend(batch.items);
        }
        Ok(())
    }

    /// The next summary in DeviceID order, or `None` when every run is done.
    async fn next(&mut self) -> Result<Option<DeviceSummary>, StoreError> {
        if self.runs.iter().any(|r| r.buf.is_empty() && r.more) {
            self.refill().await?;
        }
        let best = self
            .runs
            .iter_mut()
            .filter(|r| !r.buf.is_empty())
            .min_by(|a, b| a.buf[0].id.cmp(&b.buf[0].id));
        Ok(best.and_then(|r| r.buf.pop_front()))
    }

    fn exhausted(&self) -> bool {
        self.runs.iter().all(|r| r.buf.is_empty() && !r.more)
    }
}

/// One page of the listing for `q`, as of `now` (for the last-seen filter).
pub async fn list(
    store: &dyn Store,
    q: &DeviceQuery,
    now: OffsetDateTime,
) -> Result<Listing, ListingError> {
    let limit = q.limit.clamp(1, DeviceQuery::MAX_LIMIT);
    let shards = store.listing_shards().max(1) as usize;
    if q.in_id_order() {
        let after = q.cursor.as_deref().map(parse_id_cursor).transpose()?;
        // Unfiltered, each run holds about limit/shards of the page; a few more spare a
        // second round trip. Filtered, most summaries are skipped: read bigger batches.
        let batch = if q.is_filtered() {
            (SEARCH_BUDGET / shards).clamp(1, 1000)
        } else {
            limit.div_ceil(shards) + 4
        };
        let mut merge = Merge::new(store, after, batch);
        let mut items = Vec::new();
        let mut examined = 0;
        let mut last = None;
        while items.len() < limit && examined < SEARCH_BUDGET {
            let Some(s) = merge.next().await? else { break };
            examined += 1;
            last = Some(s.id.clone());
            if q.matches(&s, now) {
                items.push(s);
            }
        }
        let budget_spent = items.len() < limit && examined >= SEARCH_BUDGET;
        let next = if merge.exhausted() {
            None
        } else {
            last.map(|id| id_cursor(&id))
        };
        return Ok(Listing {
            items,
            next,
            examined,
            budget_spent,
        });
    }

    let offset = q.cursor.as_deref().map(parse_offset_cursor).transpose()?;
    let mut merge = Merge::new(store, None, (SORT_LIMIT / shards).clamp(1, 1000));
    let mut matches = Vec::new();
    let mut examined = 0;
    while let Some(s) = merge.next().await? {
        examined += 1;
        if examined > SORT_LIMIT {
            return Err(ListingError::TooManyToSort(SORT_LIMIT));
        }
        if q.matches(&s, now) {
            matches.push(s);
        }
    }
    sort(&mut matches, q.sort, q.descending);
    let start = offset.unwrap_or(0).min(matches.len());
    let end = (start + limit).min(matches.len());
    let next = (end < matches.len()).then(|| format!("o.{end}"));
    Ok(Listing {
        items: matches.drain(start..end).collect(),
        next,
        examined,
        budget_spent: false,
    })
}

/// Orders by the column, then DeviceID; devices without a value come last either way.
fn sort(items: &mut [DeviceSummary], key: SortKey, descending: bool) {
    use std::cmp::Ordering;
    fn opt<T: Ord>(a: Option<T>, b: Option<T>, desc: bool) -> Ordering {
        match (a, b) {
            (Some(a), Some(b)) if desc => b.cmp(&a),
            (Some(a), Some(b)) => a.cmp(&b),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    }
    let lower = |s: &Option<String>| s.as_ref().map(|v| v.to_lowercase());
    items.sort_by(|a, b| {
        let by = match key {
            SortKey::Id => opt(Some(&a.id), Some(&b.id), descending),
            SortKey::Name => opt(lower(&a.name), lower(&b.name), descending),
            SortKey::Upn => opt(
                Some(a.upn.to_lowercase()),
                Some(b.upn.to_lowercase()),
                descending,
            ),
            SortKey::Status => opt(
                Some(crate::fleet_stats::status_name(a.status)),
                Some(crate::fleet_stats::status_name(b.status)),
                descending,
            ),
            SortKey::OsVersion => opt(
                a.os_version.as_deref().map(version_key),
                b.os_version.as_deref().map(version_key),
                descending,
            ),
            SortKey::LastSeen => opt(a.last_seen_at, b.last_seen_at, descending),
            SortKey::EnrolledAt => opt(Some(a.enrolled_at), Some(b.enrolled_at), descending),
        };
        by.then_with(|| a.id.cmp(&b.id))
    });
}

/// `10.0.22631.4460` sorts after `10.0.9200.1`: numeric parts compare as numbers.
fn version_key(v: &str) -> Vec<(u64, String)> {
    v.split(['.', '-', ' '])
        .map(|p| (p.parse::<u64>().unwrap_or(u64::MAX), p.to_lowercase()))
        .collect()
}

/// Every device's summary, for the few callers that must see the whole fleet (a profile
/// assigned to all devices, counting its targets). Reads the whole listing.
pub async fn all(store: &dyn Store) -> Result<Vec<DeviceSummary>, StoreError> {
    let shards = store.listing_shards().max(1) as usize;
    let mut merge = Merge::new(store, None, (5_000 / shards).clamp(50, 1000));
    let mut out = Vec::new();
    while let Some(s) = merge.next().await? {
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_hostile_ids() {
        for id in ["A", "<script>&\"'", "ünï/çødé", ""] {
            assert_eq!(parse_id_cursor(&id_cursor(id)).unwrap(), id);
        }
        for bad in ["", "i.zz", "i.abc", "o.x", "x.00", "i.ff", "i.aé0", "i.é"] {
            assert!(parse_id_cursor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn params_are_checked() {
        let q = DeviceQuery::from_params([
            ("q", " Laptop "),
            ("status", "blocked"),
            ("seen", "7d"),
            ("sort", "last_seen"),
            ("order", "desc"),
            ("limit", "9999"),
            ("os", ""),
        ])
        .unwrap();
        assert_eq!(q.text.as_deref(), Some("laptop"));
        assert_eq!(q.status, Some(DeviceStatus::Blocked));
        assert_eq!(q.seen, Some(SeenFilter::WithinWeek));
        assert_eq!(q.sort, SortKey::LastSeen);
        assert!(q.descending);
        assert_eq!(q.limit, DeviceQuery::MAX_LIMIT);
        assert_eq!(q.os, None);
        for bad in [
            ("status", "gone"),
            ("sort", "hw_dev_id"),
            ("seen", "2d"),
            ("order", "up"),
            ("limit", "0"),
            ("colour", "red"),
        ] {
            assert!(DeviceQuery::from_params([bad]).is_err(), "{bad:?}");
        }
        let long = "x".repeat(MAX_SEARCH_CHARS + 1);
        assert!(DeviceQuery::from_params([("q", long.as_str())]).is_err());
    }

    #[test]
    fn versions_sort_numerically() {
        let mut v = ["10.0.9200.1", "10.0.22631.4460", "10.0.19045.5011"];
        v.sort_by_key(|s| version_key(s));
        assert_eq!(v, ["10.0.9200.1", "10.0.19045.5011", "10.0.22631.4460"]);
    }

    #[test]
    fn shards_are_stable() {
        // Stored keys depend on these values: they must never change.
        assert_eq!(shard_of("", 16), 0x811c_9dc5 % 16);
        assert_eq!(shard_of("DEVICE-1", 1), 0);
        let spread: std::collections::BTreeSet<u32> =
            (0..200).map(|i| shard_of(&format!("D{i}"), 16)).collect();
        assert_eq!(spread.len(), 16);
    }
}
