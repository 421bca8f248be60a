//! Fleet counters: what the console's overview shows (devices by status, last check-in,
//! enrollments per day, certificates about to expire), kept as counters that every write
//! changing a device updates in the same transaction, so the overview reads a bounded
//! number of small records whatever the fleet's size, and never scans devices.
//!
//! Counters are named by sortable keys; a store keeps `key → count` and reads key ranges:
//! - `status:<status>`: devices in each status;
//! - `compliance:<compliant|pending|failed>`: enrolled devices with profiles assigned, by
//!   their profile compliance after their latest session;
//! - `seen:<YYYY-MM-DDTHH>`: devices holding their hardware (enrolled or blocked) by the
//!   UTC hour of their last check-in, and `seen:never` for those not seen since enrolling;
//! - `expires:<YYYY-MM-DD>`: devices holding their hardware by their certificate's expiry
//!   day;
//! - `enrolled:<YYYY-MM-DD>`: enrollments completed that day (events: never decremented);
//! - `profile:<profile id>:<state>`: devices holding a state record of that profile, by
//!   its delivery state as their latest session left it (a `removed` state is not
//!   counted: the device no longer has the profile). Changed by the write that changes a
//!   state record, from the record it replaces.
//!
//! A device changes a counter only when the value it is counted under changes: the
//! `last_seen_at` bump (at most hourly for an idle device) moves one device from one hour
//! to the next; nothing else does. Check-in buckets are therefore exact to the hour.

use std::collections::BTreeMap;

use time::{Date, Duration, OffsetDateTime};

use crate::model::{Device, DeviceStatus};
use crate::profiles::{DeliveryState, DeviceProfile};

/// One counter change.
pub type CounterDelta = (String, i64);

/// A range of counter keys, `from` inclusive, `to` exclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub from: String,
    pub to: String,
}

impl KeyRange {
    fn prefix(p: &str) -> Self {
        Self {
            from: p.to_owned(),
            // ';' sorts right after ':', so this bounds every `<p>…` key.
            to: format!("{};", p.trim_end_matches(':')),
        }
    }
}

pub const NEVER_SEEN: &str = "seen:never";

/// Whether a counter is a check-in counter (`seen:…`): the ones the hourly `last_seen_at`
/// bump moves, which a store may keep outside the writes' transactions (DynamoDB keeps
/// them from its stream: `winmdm_aws::checkin_counts`).
pub fn is_check_in(key: &str) -> bool {
    key.starts_with("seen:")
}

pub fn status_name(s: DeviceStatus) -> &'static str {
    match s {
        DeviceStatus::Enrolled => "enrolled",
        DeviceStatus::Unenrolled => "unenrolled",
        DeviceStatus::Blocked => "blocked",
        DeviceStatus::Removed => "removed",
    }
}

fn day_key(prefix: &str, d: Date) -> String {
    format!(
        "{prefix}:{:04}-{:02}-{:02}",
        d.year(),
        u8::from(d.month()),
        d.day()
    )
}

fn hour_key(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!("{}T{:02}", day_key("seen", t.date()), t.hour())
}

/// A profile state's counter, if it is counted.
fn profile_key(s: &DeviceProfile) -> Option<String> {
    (s.state != DeliveryState::Removed)
        .then(|| format!("profile:{}:{}", s.profile_id, s.state.name()))
}

/// The counter changes of a write that replaces a device's state record of a profile
/// (`before`: the stored record, if any) with `after`.
pub fn profile_deltas(before: Option<&DeviceProfile>, after: &DeviceProfile) -> Vec<CounterDelta> {
    let old = before.and_then(profile_key);
    let new = profile_key(after);
    if old == new {
        return Vec::new();
    }
    old.map(|k| (k, -1))
        .into_iter()
        .chain(new.map(|k| (k, 1)))
        .collect()
}

/// Every profile's counts by delivery state (`profile id → state → devices`), from
/// counters read with [`profile_ranges`].
pub fn profile_counts(counters: &[(String, i64)]) -> BTreeMap<String, BTreeMap<String, i64>> {
    let mut out: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (k, v) in counters {
        if let Some((id, state)) = k
            .strip_prefix("profile:")
            .and_then(|rest| rest.rsplit_once(':'))
            && *v > 0
        {
            *out.entry(id.to_owned())
                .or_default()
                .entry(state.to_owned())
                .or_default() += v;
        }
    }
    out
}

/// The counter ranges of every profile's counts, or of one profile's.
pub fn profile_ranges(profile_id: Option<&str>) -> Vec<KeyRange> {
    vec![match profile_id {
        Some(id) => KeyRange::prefix(&format!("profile:{id}:")),
        None => KeyRange::prefix("profile:"),
    }]
}

/// The counters one device record is counted under.
fn counted_under(d: &Device) -> Vec<String> {
    let mut keys = vec![format!("status:{}", status_name(d.status))];
    if d.status == DeviceStatus::Enrolled
        && let Some(c) = d.compliance
    {
        keys.push(format!("compliance:{}", c.name()));
    }
    if d.holds_its_hardware() {
        keys.push(match d.last_seen_at {
            Some(t) => hour_key(t),
            None => NEVER_SEEN.to_owned(),
        });
        keys.push(day_key(
            "expires",
            d.cert.not_after.to_offset(time::UtcOffset::UTC).date(),
        ));
    }
    keys
}

/// The counter changes of a write that replaces the records `before` with `after` (the
/// same device patched, or an enrollment replacing older records), plus one enrollment
/// event when `enrolled` is set. Changes that cancel out are left out, so a write that
/// moves nothing carries no counter update.
pub fn deltas(before: &[&Device], after: Option<&Device>, enrolled: bool) -> Vec<CounterDelta> {
    let mut net: BTreeMap<String, i64> = BTreeMap::new();
    for d in before {
        for k in counted_under(d) {
            *net.entry(k).or_default() -= 1;
        }
    }
    if let Some(d) = after {
        for k in counted_under(d) {
            *net.entry(k).or_default() += 1;
        }
        if enrolled {
            let day = d.enrolled_at.to_offset(time::UtcOffset::UTC).date();
            *net.entry(day_key("enrolled", day)).or_default() += 1;
        }
    }
    net.into_iter().filter(|(_, v)| *v != 0).collect()
}

/// Every counter of a set of devices, from scratch (a store that has devices but no
/// counters yet, e.g. one written by an earlier version, rebuilds them once with this).
pub fn rebuild<'a>(devices: impl IntoIterator<Item = &'a Device>) -> BTreeMap<String, i64> {
    let mut all = BTreeMap::new();
    for d in devices {
        for (k, v) in deltas(&[], Some(d), true) {
            *all.entry(k).or_default() += v;
        }
    }
    all
}

/// Days of enrollments and of coming expiries the overview shows.
pub const OVERVIEW_DAYS: i64 = 30;

/// The counter ranges the overview at `now` reads: status, the last 7 days of check-in
/// hours (and never-seen), the last 30 days of enrollments, the next 30 days of expiries.
/// Bounded: at most 4 + 169 + 30 + 31 counters, whatever the fleet size.
pub fn overview_ranges(now: OffsetDateTime) -> Vec<KeyRange> {
    let now = now.to_offset(time::UtcOffset::UTC);
    let today = now.date();
    vec![
        KeyRange::prefix("status:"),
        KeyRange::prefix("compliance:"),
        KeyRange {
            from: NEVER_SEEN.to_owned(),
            to: format!("{NEVER_SEEN}~"),
        },
        KeyRange {
            from: hour_key(now - Duration::days(7)),
            to: format!("{}~", hour_key(now)),
        },
        KeyRange {
            from: day_key("enrolled", today - Duration::days(OVERVIEW_DAYS - 1)),
            to: format!("{}~", day_key("enrolled", today)),
        },
        KeyRange {
            from: day_key("expires", today),
            to: format!(
                "{}~",
                day_key("expires", today + Duration::days(OVERVIEW_DAYS))
            ),
        },
    ]
}

/// The overview, from the counters [`overview_ranges`] selected.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Overview {
    pub by_status: BTreeMap<String, i64>,
    /// Devices holding their hardware by last check-in, to the hour: within the current
    /// or previous UTC hour, the last 24 hours, the last 7 days, earlier, never.
    pub last_seen: LastSeen,
    /// Enrollments per UTC day, oldest first, `OVERVIEW_DAYS` days ending today.
    pub enrollments_per_day: Vec<(String, i64)>,
    /// Devices holding their hardware whose certificate expires in the next 30 days.
    pub expiring_certificates: i64,
    /// Enrolled devices with profiles assigned, by compliance after their latest session
    /// (`compliant`, `pending`, `failed`).
    pub compliance: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LastSeen {
    pub hour: i64,
    pub day: i64,
    pub week: i64,
    pub older: i64,
    pub never: i64,
}

impl Overview {
    pub fn from_counters(now: OffsetDateTime, counters: &[(String, i64)]) -> Self {
        let now = now.to_offset(time::UtcOffset::UTC);
        let get = |k: &str| counters.iter().find(|(c, _)| c == k).map_or(0, |(_, v)| *v);
        let mut by_status = BTreeMap::new();
        for s in [
            DeviceStatus::Enrolled,
            DeviceStatus::Blocked,
            DeviceStatus::Unenrolled,
            DeviceStatus::Removed,
        ] {
            let n = status_name(s);
            by_status.insert(n.to_owned(), get(&format!("status:{n}")).max(0));
        }
        let holding = by_status["enrolled"] + by_status["blocked"];
        let (hour_from, day_from, week_from) = (
            hour_key(now - Duration::hours(1)),
            hour_key(now - Duration::hours(24)),
            hour_key(now - Duration::days(7)),
        );
        let mut last_seen = LastSeen {
            never: get(NEVER_SEEN).max(0),
            ..LastSeen::default()
        };
        for (k, v) in counters {
            if !k.starts_with("seen:") || k == NEVER_SEEN || *k < week_from {
                continue;
            }
            last_seen.week += v;
            if *k >= day_from {
                last_seen.day += v;
            }
            if *k >= hour_from {
                last_seen.hour += v;
            }
        }
        last_seen.older = (holding - last_seen.never - last_seen.week).max(0);
        let today = now.date();
        let enrollments_per_day = (0..OVERVIEW_DAYS)
            .rev()
            .map(|back| {
                let k = day_key("enrolled", today - Duration::days(back));
                let v = get(&k);
                (k["enrolled:".len()..].to_owned(), v)
            })
            .collect();
        let expiring_certificates = counters
            .iter()
            .filter(|(k, _)| k.starts_with("expires:"))
            .map(|(_, v)| *v)
            .sum::<i64>()
            .max(0);
        let compliance = ["compliant", "pending", "failed"]
            .into_iter()
            .map(|c| (c.to_owned(), get(&format!("compliance:{c}")).max(0)))
            .collect();
        Self {
            by_status,
            last_seen,
            enrollments_per_day,
            expiring_certificates,
            compliance,
        }
    }
}

/// The counters in `ranges` from a full map (what an adapter without range reads does).
pub fn select(all: &BTreeMap<String, i64>, ranges: &[KeyRange]) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for r in ranges {
        out.extend(
            all.range(r.from.clone()..r.to.clone())
                .map(|(k, v)| (k.clone(), *v)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceCertificate, EnrollmentType};
    use time::macros::datetime;

    fn device(status: DeviceStatus, seen: Option<OffsetDateTime>) -> Device {
        Device {
            id: "d1".into(),
            hw_dev_id: None,
            upn: "a@example.com".into(),
            enrollment_type: EnrollmentType::Full,
            status,
            cert: DeviceCertificate {
                serial: "01".into(),
                thumbprint: "AA".into(),
                not_after: datetime!(2026-12-20 10:00 UTC),
                spki_sha256: None,
            },
            os: Default::default(),
            dm_credentials: Default::default(),
            enrolled_at: datetime!(2026-12-01 09:30 UTC),
            last_seen_at: seen,
            dm_info: Default::default(),
            previous_cert: None,
            groups: vec![],
            entra: None,
            compliance: None,
        }
    }

    #[test]
    fn an_enrollment_counts_status_never_seen_expiry_and_the_event() {
        let d = device(DeviceStatus::Enrolled, None);
        let got = deltas(&[], Some(&d), true);
        assert_eq!(
            got,
            vec![
                ("enrolled:2026-12-01".to_owned(), 1),
                ("expires:2026-12-20".to_owned(), 1),
                ("seen:never".to_owned(), 1),
                ("status:enrolled".to_owned(), 1),
            ]
        );
    }

    #[test]
    fn a_check_in_within_the_same_hour_changes_nothing_and_a_new_hour_moves_one_device() {
        let a = device(
            DeviceStatus::Enrolled,
            Some(datetime!(2026-12-02 04:05 UTC)),
        );
        let b = device(
            DeviceStatus::Enrolled,
            Some(datetime!(2026-12-02 04:55 UTC)),
        );
        assert!(deltas(&[&a], Some(&b), false).is_empty());
        let c = device(
            DeviceStatus::Enrolled,
            Some(datetime!(2026-12-02 05:01 UTC)),
        );
        assert_eq!(
            deltas(&[&b], Some(&c), false),
            vec![
                ("seen:2026-12-02T04".to_owned(), -1),
                ("seen:2026-12-02T05".to_owned(), 1)
            ]
        );
    }

    #[test]
    fn removal_leaves_the_hardware_counters() {
        let a = device(
            DeviceStatus::Enrolled,
            Some(datetime!(2026-12-02 04:05 UTC)),
        );
        let mut r = a.clone();
        r.status = DeviceStatus::Removed;
        assert_eq!(
            deltas(&[&a], Some(&r), false),
            vec![
                ("expires:2026-12-20".to_owned(), -1),
                ("seen:2026-12-02T04".to_owned(), -1),
                ("status:enrolled".to_owned(), -1),
                ("status:removed".to_owned(), 1),
            ]
        );
    }

    #[test]
    fn the_overview_buckets_check_ins_and_reads_only_its_ranges() {
        let now = datetime!(2026-12-02 12:30 UTC);
        let mut fleet = Vec::new();
        for (i, seen) in [
            Some(now - Duration::minutes(10)),
            Some(now - Duration::hours(5)),
            Some(now - Duration::days(3)),
            Some(now - Duration::days(30)),
            None,
        ]
        .into_iter()
        .enumerate()
        {
            let mut d = device(DeviceStatus::Enrolled, seen);
            d.id = format!("d{i}");
            fleet.push(d);
        }
        let mut blocked = device(DeviceStatus::Removed, None);
        blocked.cert.not_after = now + Duration::days(90);
        fleet.push(blocked);
        let all = rebuild(&fleet);
        let o = Overview::from_counters(now, &select(&all, &overview_ranges(now)));
        assert_eq!(o.by_status["enrolled"], 5);
        assert_eq!(o.by_status["removed"], 1);
        assert_eq!(
            o.last_seen,
            LastSeen {
                hour: 1,
                day: 2,
                week: 3,
                older: 1,
                never: 1
            }
        );
        assert_eq!(o.expiring_certificates, 5);
        assert_eq!(o.enrollments_per_day.len(), 30);
        assert_eq!(o.enrollments_per_day[28], ("2026-12-01".to_owned(), 6));
        assert_eq!(o.enrollments_per_day[29].1, 0);
    }
}
