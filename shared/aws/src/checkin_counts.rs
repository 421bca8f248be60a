//! Check-in counts from the table's stream: the `seen:<hour>` fleet counters
//! (`winmdm_core::fleet_stats`) kept by a function that reads the DynamoDB stream of
//! device items, instead of by the writes themselves.
//!
//! Why: at the default poll schedule nearly every session is an hourly `last_seen_at`
//! bump, and each bump moves its device from one check-in hour to the next: two counter
//! updates (2 write units) on top of the device item and its listing entry (2 units). Read
//! from the stream instead, the moves of every bump in a batch (Lambda gathers up to
//! `MaximumBatchingWindowInSeconds` of them) net out per hour, and the hours of a day are
//! fields of one item (`seen:<YYYY-MM-DD>`, fields `h00`…`h23`), so a batch writes a few
//! items whatever the number of bumps in it. Stream reads by a Lambda trigger are free;
//! the template's filter passes only device items (`SK = D`) to the function.
//!
//! What it costs in accuracy: the counts trail the writes by up to the batching window.
//! Lambda delivers a batch at least once; the batch's writes are one transaction per 100
//! items with a `ClientRequestToken` derived from the batch, so a retry within DynamoDB's
//! 10-minute idempotency window (the usual case: the function failed, or its answer was
//! lost) applies nothing twice. A retry later than that counts the batch again; the
//! overview's "earlier than 7 days" comes from the exact status totals, so such an error
//! ages out of every bucket within 7 days. Status, expiry and enrollment counters are not
//! affected: they stay in the writes' own transactions.
//!
//! A store writes its check-in counters this way only when told to
//! ([`crate::DynamoStore::with_checkin_counts_from_stream`], `WINMDM_CHECKIN_COUNTS=stream`,
//! which the template sets together with the stream and this function): a store so
//! configured without the function running would leave check-in counts unchanged.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use serde::Deserialize;
use winmdm_core::fleet_stats::{self, NEVER_SEEN};
use winmdm_core::model::Device;

use crate::dynamo::COUNTER_SHARDS;

/// The most items DynamoDB takes in one transaction.
const MAX_TRANSACTION_ITEMS: usize = 100;

/// The Lambda event of a DynamoDB stream (and the shape of `GetRecords`' answer): only the
/// fields this function reads.
#[derive(Debug, Clone, Deserialize)]
pub struct StreamEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<StreamRecord>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamRecord {
    #[serde(rename = "eventName", default)]
    pub event_name: String,
    pub dynamodb: StreamChange,
}

/// One item's change; images in DynamoDB's JSON (`{"attr": {"S": "…"}}`).
#[derive(Debug, Clone, Deserialize)]
pub struct StreamChange {
    #[serde(rename = "Keys", default)]
    pub keys: HashMap<String, serde_json::Value>,
    #[serde(rename = "NewImage", default)]
    pub new_image: Option<HashMap<String, serde_json::Value>>,
    #[serde(rename = "OldImage", default)]
    pub old_image: Option<HashMap<String, serde_json::Value>>,
    #[serde(rename = "SequenceNumber", default)]
    pub sequence_number: String,
}

impl StreamRecord {
    /// Whether the record is a device item's (`SK = D`): the only ones the template's
    /// event filter passes.
    pub fn is_device_item(&self) -> bool {
        self.dynamodb
            .keys
            .get("SK")
            .and_then(|v| v.get("S")?.as_str())
            == Some("D")
    }
}

fn string_attr<'a>(image: &'a HashMap<String, serde_json::Value>, name: &str) -> Option<&'a str> {
    image.get(name)?.get("S")?.as_str()
}

/// The device record an image holds; `Err` for a device item whose record does not parse.
fn device_of(image: Option<&HashMap<String, serde_json::Value>>) -> Result<Option<Device>, String> {
    let Some(image) = image else {
        return Ok(None);
    };
    let data = string_attr(image, "data").ok_or("device item without data")?;
    serde_json::from_str(data)
        .map(Some)
        .map_err(|e| format!("device record does not parse: {e}"))
}

/// What a batch changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeenChanges {
    /// Net change per check-in counter (`seen:<YYYY-MM-DD>T<HH>`, `seen:never`); zero
    /// nets left out.
    pub net: BTreeMap<String, i64>,
    /// Device-item records read.
    pub devices: usize,
    /// Records skipped: not device items, or device items whose record did not parse
    /// (logged; a batch is never refused for one, which would stall the stream).
    pub skipped: usize,
}

/// The check-in counter changes of a batch of stream records: each device item's old
/// image leaves the counters it was counted under, its new image joins its own (the
/// same rule as the writes use, `fleet_stats::deltas`), netted over the batch.
pub fn seen_changes(records: &[StreamRecord]) -> SeenChanges {
    let mut out = SeenChanges::default();
    for r in records {
        if !r.is_device_item() {
            out.skipped += 1;
            continue;
        }
        let (old, new) = match (
            device_of(r.dynamodb.old_image.as_ref()),
            device_of(r.dynamodb.new_image.as_ref()),
        ) {
            (Ok(old), Ok(new)) => (old, new),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, event = %r.event_name, "check-in counts: record skipped");
                out.skipped += 1;
                continue;
            }
        };
        out.devices += 1;
        let before: Vec<&Device> = old.iter().collect();
        for (k, d) in fleet_stats::deltas(&before, new.as_ref(), false) {
            if fleet_stats::is_check_in(&k) {
                *out.net.entry(k).or_default() += d;
            }
        }
    }
    out.net.retain(|_, v| *v != 0);
    out
}

/// The stored form: `seen:<day>T<HH>` is field `h<HH>` of the item `seen:<day>`;
/// `seen:never` is the plain counter item (field `c`).
fn stored_as(key: &str) -> (String, String) {
    match key.rsplit_once('T') {
        Some((day, hour)) if key != NEVER_SEEN && hour.len() == 2 => {
            (day.to_owned(), format!("h{hour}"))
        }
        _ => (key.to_owned(), "c".to_owned()),
    }
}

/// The counters one stored counter item holds: `c` under its own key, and each hour field
/// of a day item under `<day>T<HH>`.
pub fn counters_of(sk: &str, item: &HashMap<String, AttributeValue>) -> Vec<(String, i64)> {
    let num = |v: &AttributeValue| v.as_n().ok().and_then(|n| n.parse::<i64>().ok());
    let mut out = Vec::new();
    for (name, v) in item {
        let Some(v) = num(v) else { continue };
        if name == "c" {
            out.push((sk.to_owned(), v));
        } else if let Some(hour) = name.strip_prefix('h')
            && hour.len() == 2
            && hour.bytes().all(|b| b.is_ascii_digit())
        {
            out.push((format!("{sk}T{hour}"), v));
        }
    }
    out
}

/// The sort key to start a counter range's Query from so that it also reads the day items
/// holding its first hours (`seen:2026-12-01T05` → `seen:2026-12-01`).
pub fn range_start(from: &str) -> &str {
    match from.rsplit_once('T') {
        Some((day, _)) if from.starts_with("seen:") && from != NEVER_SEEN => day,
        _ => from,
    }
}

/// One counter item's update: `ADD` of every field that changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterItemUpdate {
    pub sk: String,
    pub fields: BTreeMap<String, i64>,
}

/// The item updates for a batch's net changes, one per counter item.
pub fn item_updates(net: &BTreeMap<String, i64>) -> Vec<CounterItemUpdate> {
    let mut by_item: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (k, d) in net {
        let (sk, field) = stored_as(k);
        *by_item.entry(sk).or_default().entry(field).or_default() += d;
    }
    by_item
        .into_iter()
        .map(|(sk, fields)| CounterItemUpdate { sk, fields })
        .collect()
}

fn fnv1a(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h = seed;
    for p in parts {
        for b in p.iter().chain(&[0xff]) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The idempotency token of one transaction of a batch: the same for the same records (a
/// Lambda retry), different for any other batch. 32 hex digits (DynamoDB allows 36).
pub fn batch_token(records: &[StreamRecord], chunk: usize) -> String {
    let first = records
        .first()
        .map_or("", |r| r.dynamodb.sequence_number.as_str());
    let last = records
        .last()
        .map_or("", |r| r.dynamodb.sequence_number.as_str());
    let count = records.len().to_string();
    let chunk = chunk.to_string();
    let parts: [&[u8]; 4] = [
        first.as_bytes(),
        last.as_bytes(),
        count.as_bytes(),
        chunk.as_bytes(),
    ];
    format!(
        "{:016x}{:016x}",
        fnv1a(0xcbf2_9ce4_8422_2325, &parts),
        fnv1a(0x6c62_272e_07bb_0142, &parts)
    )
}

/// The counter partition a batch writes to: spread by the batch, so that concurrent
/// batches (one per stream shard) do not all update one partition's items.
fn counter_partition(records: &[StreamRecord]) -> String {
    let first = records
        .first()
        .map_or("", |r| r.dynamodb.sequence_number.as_str());
    format!(
        "STATS#{}",
        fnv1a(0xcbf2_9ce4_8422_2325, &[first.as_bytes()]) % COUNTER_SHARDS
    )
}

#[derive(Debug, thiserror::Error)]
pub enum CheckinCountError {
    #[error("counter update: {0}")]
    Update(String),
}

/// What [`CheckinCounts::apply`] did with one batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub records: usize,
    pub devices: usize,
    pub skipped: usize,
    /// Counter items written (each an `ADD` of one or more fields).
    pub items_written: usize,
    pub transactions: usize,
}

impl std::ops::AddAssign for Applied {
    fn add_assign(&mut self, b: Self) {
        self.records += b.records;
        self.devices += b.devices;
        self.skipped += b.skipped;
        self.items_written += b.items_written;
        self.transactions += b.transactions;
    }
}

/// Applies stream batches to the check-in counters of one table.
#[derive(Clone)]
pub struct CheckinCounts {
    client: Client,
    table: String,
}

impl CheckinCounts {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Applies one batch: its net check-in moves, as `ADD` updates in transactions of at
    /// most 100 items, each idempotent for a retry of the same batch. An error means no
    /// transaction after the first failed one committed: Lambda retries the batch, and
    /// the ones that did commit are recognised by their tokens.
    pub async fn apply(&self, records: &[StreamRecord]) -> Result<Applied, CheckinCountError> {
        let changes = seen_changes(records);
        let updates = item_updates(&changes.net);
        let pk = counter_partition(records);
        let mut applied = Applied {
            records: records.len(),
            devices: changes.devices,
            skipped: changes.skipped,
            ..Applied::default()
        };
        for (i, chunk) in updates.chunks(MAX_TRANSACTION_ITEMS).enumerate() {
            let items = chunk
                .iter()
                .map(|u| self.update_item(&pk, u))
                .collect::<Result<Vec<_>, _>>()?;
            self.client
                .transact_write_items()
                .set_transact_items(Some(items))
                .client_request_token(batch_token(records, i))
                .send()
                .await
                .map_err(|e| CheckinCountError::Update(DisplayErrorContext(&e).to_string()))?;
            applied.items_written += chunk.len();
            applied.transactions += 1;
        }
        Ok(applied)
    }

    fn update_item(
        &self,
        pk: &str,
        u: &CounterItemUpdate,
    ) -> Result<TransactWriteItem, CheckinCountError> {
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("PK", AttributeValue::S(pk.to_owned()))
            .key("SK", AttributeValue::S(u.sk.clone()));
        let mut adds = Vec::new();
        for (i, (field, d)) in u.fields.iter().enumerate() {
            adds.push(format!("#f{i} :d{i}"));
            update = update
                .expression_attribute_names(format!("#f{i}"), field)
                .expression_attribute_values(format!(":d{i}"), AttributeValue::N(d.to_string()));
        }
        let update = update
            .update_expression(format!("ADD {}", adds.join(", ")))
            .build()
            .map_err(|e| CheckinCountError::Update(e.to_string()))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> StreamEvent {
        serde_json::from_str(json).unwrap()
    }

    /// A device item's image as the store writes it, seen at `seen` (or never).
    fn device_image(id: &str, seen: Option<&str>) -> serde_json::Value {
        use time::format_description::well_known::Rfc3339;
        use winmdm_core::model::{DeviceCertificate, DeviceStatus, EnrollmentType};
        let t = |s: &str| time::OffsetDateTime::parse(s, &Rfc3339).unwrap();
        let d = Device {
            id: id.into(),
            hw_dev_id: Some(format!("HW-{id}")),
            upn: "user@example.com".into(),
            enrollment_type: EnrollmentType::Full,
            status: DeviceStatus::Enrolled,
            cert: DeviceCertificate {
                serial: "01".into(),
                thumbprint: "AA".into(),
                not_after: t("2027-11-01T10:00:00Z"),
                spki_sha256: None,
            },
            os: Default::default(),
            dm_credentials: Default::default(),
            enrolled_at: t("2026-11-01T10:00:00Z"),
            last_seen_at: seen.map(t),
            dm_info: Default::default(),
            previous_cert: None,
            groups: vec![],
            entra: None,
            compliance: None,
        };
        serde_json::json!({
            "PK": {"S": format!("DEV#{id}")},
            "SK": {"S": "D"},
            "data": {"S": serde_json::to_string(&d).unwrap()}
        })
    }

    fn record(
        name: &str,
        seq: u64,
        old: Option<serde_json::Value>,
        new: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let mut change = serde_json::json!({
            "Keys": {"PK": {"S": "DEV#x"}, "SK": {"S": "D"}},
            "SequenceNumber": seq.to_string(),
            "StreamViewType": "NEW_AND_OLD_IMAGES"
        });
        if let Some(o) = old {
            change["OldImage"] = o;
        }
        if let Some(n) = new {
            change["NewImage"] = n;
        }
        serde_json::json!({"eventID": seq.to_string(), "eventName": name, "eventSource": "aws:dynamodb", "dynamodb": change})
    }

    #[test]
    fn a_batch_nets_its_moves_per_hour_and_skips_what_is_not_a_device() {
        let t1 = "2026-12-01T05:10:00Z";
        let t2 = "2026-12-02T09:30:00Z";
        let t3 = "2026-12-02T09:50:00Z";
        let records = serde_json::json!({"Records": [
            // Enrolled: never seen.
            record("INSERT", 1, None, Some(device_image("A", None))),
            // First check-in.
            record("MODIFY", 2, Some(device_image("A", None)), Some(device_image("A", Some(t2)))),
            // Another device: yesterday 05 → today 09, then a write within the same hour.
            record("MODIFY", 3, Some(device_image("B", Some(t1))), Some(device_image("B", Some(t2)))),
            record("MODIFY", 4, Some(device_image("B", Some(t2))), Some(device_image("B", Some(t3)))),
            // Removed from the table: leaves its hour.
            record("REMOVE", 5, Some(device_image("C", Some(t1))), None),
            // Not a device item.
            serde_json::json!({"eventName": "INSERT", "dynamodb": {"Keys": {"PK": {"S": "DEV#A"}, "SK": {"S": "C#1"}}, "SequenceNumber": "6"}}),
            // A device item whose record does not parse.
            serde_json::json!({"eventName": "MODIFY", "dynamodb": {"Keys": {"SK": {"S": "D"}}, "NewImage": {"data": {"S": "{"}}, "SequenceNumber": "7"}}),
        ]});
        let e = event(&records.to_string());
        let c = seen_changes(&e.records);
        assert_eq!(c.devices, 5);
        assert_eq!(c.skipped, 2);
        assert_eq!(
            c.net,
            BTreeMap::from([
                ("seen:2026-12-01T05".to_owned(), -2),
                ("seen:2026-12-02T09".to_owned(), 2),
            ])
        );
        let u = item_updates(&c.net);
        assert_eq!(
            u,
            vec![
                CounterItemUpdate {
                    sk: "seen:2026-12-01".into(),
                    fields: BTreeMap::from([("h05".to_owned(), -2)])
                },
                CounterItemUpdate {
                    sk: "seen:2026-12-02".into(),
                    fields: BTreeMap::from([("h09".to_owned(), 2)])
                },
            ]
        );
    }

    #[test]
    fn never_seen_is_a_plain_counter_and_day_items_read_back_as_hours() {
        let net = BTreeMap::from([
            (NEVER_SEEN.to_owned(), 3),
            ("seen:2026-12-02T00".to_owned(), 1),
            ("seen:2026-12-02T23".to_owned(), -1),
        ]);
        let u = item_updates(&net);
        assert_eq!(u[0].sk, "seen:2026-12-02");
        assert_eq!(u[0].fields.len(), 2);
        assert_eq!(u[1].sk, NEVER_SEEN);
        assert_eq!(u[1].fields, BTreeMap::from([("c".to_owned(), 3)]));

        let item = HashMap::from([
            ("PK".to_owned(), AttributeValue::S("STATS#1".into())),
            ("SK".to_owned(), AttributeValue::S("seen:2026-12-02".into())),
            ("h00".to_owned(), AttributeValue::N("4".into())),
            ("h23".to_owned(), AttributeValue::N("-1".into())),
            ("hxx".to_owned(), AttributeValue::N("9".into())),
        ]);
        let mut got = counters_of("seen:2026-12-02", &item);
        got.sort();
        assert_eq!(
            got,
            [
                ("seen:2026-12-02T00".to_owned(), 4),
                ("seen:2026-12-02T23".to_owned(), -1)
            ]
        );
        assert_eq!(range_start("seen:2026-12-02T05"), "seen:2026-12-02");
        assert_eq!(range_start(NEVER_SEEN), NEVER_SEEN);
        assert_eq!(range_start("status:"), "status:");
    }

    #[test]
    fn a_retried_batch_has_the_same_tokens_and_another_batch_others() {
        let batch = |from: u64| {
            event(
                &serde_json::json!({"Records": (from..from + 3)
                    .map(|i| record("MODIFY", i, None, None))
                    .collect::<Vec<_>>()})
                .to_string(),
            )
            .records
        };
        let a = batch(100);
        assert_eq!(batch_token(&a, 0), batch_token(&batch(100), 0));
        assert_ne!(batch_token(&a, 0), batch_token(&a, 1));
        assert_ne!(batch_token(&a, 0), batch_token(&batch(101), 0));
        assert_ne!(batch_token(&a, 0), batch_token(&a[..2], 0));
        assert_eq!(batch_token(&a, 0).len(), 32);
    }
}
