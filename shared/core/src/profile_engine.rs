//! Delivers configuration profiles inside a management session and verifies them: for each
//! profile assigned to the device, an `Atomic` with its settings followed by a `Get` per
//! node; the device's statuses and results move the device's [`DeviceProfile`] through
//! `pending → sent → verifying → verified | failed`, a profile no longer assigned is
//! removed with a `Delete` per node it set, and verified profiles are re-read on a
//! schedule to catch drift.
//!
//! The management service calls [`ProfileRun::on_status`] and [`ProfileRun::on_results`]
//! for the statuses and results that answer profile commands, [`ProfileRun::settle`] once
//! the message's commands are processed, and [`ProfileRun::send`] to add profile commands
//! to its reply. Everything it changes goes out in the message's single write.
//!
//! At-least-once and idempotent: an attempt records the session instance it went out in;
//! a session that dropped leaves the profile `sent` and the next session sends it again.

use std::collections::{BTreeMap, BTreeSet};

use time::{Duration, OffsetDateTime};
use winmdm_wire::syncml::{self, Command, Container, ContainerKind, Item, ItemCommand, Meta};

use crate::commands::{ItemSpec, Verb};
use crate::model::Compliance;
use crate::profiles::{
    DeliveryState, DeviceProfile, DriftEvent, NodeOutcome, Profile, ProfileScope, Setting,
    values_match,
};
use crate::session::{SentCommand, SentKind};

/// How profiles are retried and re-checked.
#[derive(Debug, Clone)]
pub struct ProfileConfig {
    /// Failed attempts at one revision before the profile stays `failed` until the operator
    /// edits or re-sends it.
    pub max_failures: u32,
    /// Wait after the first failure; doubles after each.
    pub retry_base: Duration,
    /// How often a verified profile is read back to catch drift.
    pub drift_interval: Duration,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        Self {
            max_failures: 3,
            retry_base: Duration::minutes(15),
            drift_interval: Duration::hours(24),
        }
    }
}

/// Drift events kept per device profile.
const MAX_DRIFT_EVENTS: usize = 10;

/// The profile work of one management message.
pub struct ProfileRun<'a> {
    config: &'a ProfileConfig,
    device_id: String,
    /// The profiles assigned to this device, by id.
    assigned: BTreeMap<String, &'a Profile>,
    states: BTreeMap<String, DeviceProfile>,
    /// Profiles whose state this message changed (each written once).
    changed: BTreeSet<String>,
    now: OffsetDateTime,
}

/// What a reply needs to send profile commands: the command list, CmdIDs, the session
/// bookkeeping and the room left in the message.
/// Bytes of a message that are not commands: the header, the header's Status, `Final`.
pub const MESSAGE_OVERHEAD: usize = 600;

pub struct Outbox<'o> {
    pub out: &'o mut Vec<Command>,
    pub next_cmd_id: &'o mut u32,
    pub sent: &'o mut Vec<SentCommand>,
    pub msg_id: u32,
    pub session_key: &'o str,
    pub budget: usize,
    /// The most an otherwise empty message holds (MaxMsgSize less
    /// [`MESSAGE_OVERHEAD`]): a profile bigger than this can never go out.
    pub capacity: usize,
    /// `./User/…` profiles only go out while a user is logged in.
    pub user_logged_in: bool,
    /// Commands a session may have sent in all; the rest wait for the next session.
    pub max_sent: usize,
    /// Profile states this message's write may hold (the store's per-write limit less
    /// what the message already writes); the rest go in the next message.
    pub max_state_writes: usize,
}

impl Outbox<'_> {
    fn id(&mut self) -> String {
        let i = *self.next_cmd_id;
        *self.next_cmd_id += 1;
        i.to_string()
    }

    fn record(&mut self, cmd_id: &str, profile: &str, kind: SentKind) {
        self.sent.push(SentCommand {
            msg_id: self.msg_id,
            cmd_id: cmd_id.to_owned(),
            command_id: profile.to_owned(),
            kind,
        });
    }
}

impl<'a> ProfileRun<'a> {
    /// `catalog` is every profile; only those assigned to `groups` (and of a scope the
    /// device can take) are delivered.
    pub fn new(
        config: &'a ProfileConfig,
        catalog: &'a [Profile],
        device_id: &str,
        groups: &[String],
        states: Vec<DeviceProfile>,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            config,
            device_id: device_id.to_owned(),
            assigned: catalog
                .iter()
                .filter(|p| p.targets_device(groups))
                .map(|p| (p.id.clone(), p))
                .collect(),
            states: states
                .into_iter()
                .map(|s| (s.profile_id.clone(), s))
                .collect(),
            changed: BTreeSet::new(),
            now,
        }
    }

    /// The device's compliance with its assigned profiles as this message leaves them
    /// (see [`Compliance`]); `None` when none is assigned.
    pub fn compliance(&self) -> Option<Compliance> {
        if self.assigned.is_empty() {
            return None;
        }
        let mut pending = false;
        for (id, p) in &self.assigned {
            match self.states.get(id) {
                Some(s) if s.state == DeliveryState::Failed => return Some(Compliance::Failed),
                Some(s) if s.state == DeliveryState::Verified && s.revision == p.revision => {}
                _ => pending = true,
            }
        }
        Some(if pending {
            Compliance::Pending
        } else {
            Compliance::Compliant
        })
    }

    /// How many profile states this message has changed so far.
    pub fn changed_count(&self) -> usize {
        self.changed.len()
    }

    /// The states this message changed, to be written with it.
    pub fn into_changed(mut self) -> Vec<DeviceProfile> {
        self.changed
            .iter()
            .filter_map(|id| self.states.remove(id))
            .collect()
    }

    fn touch(&mut self, id: &str) -> Option<&mut DeviceProfile> {
        let s = self.states.get_mut(id)?;
        s.updated_at = self.now;
        self.changed.insert(id.to_owned());
        Some(s)
    }

    /// A device Status for one of the profile commands.
    pub fn on_status(&mut self, entry: &SentCommand, code: u16) {
        let Some(s) = self.touch(&entry.command_id) else {
            return;
        };
        match &entry.kind {
            SentKind::ProfileApply => s.apply_status = Some(code),
            SentKind::ProfileSet { index } => {
                if let Some(o) = s.outcome.get_mut(*index) {
                    o.status = Some(code);
                }
            }
            SentKind::ProfileGet { index } => {
                if let Some(o) = s.outcome.get_mut(*index) {
                    o.get_status = Some(code);
                }
            }
            SentKind::ProfileDelete { target } => {
                if let Some(o) = s.removals.iter_mut().find(|o| &o.target == target) {
                    o.status = Some(code);
                }
            }
            _ => {}
        }
    }

    /// The value a verifying Get returned.
    pub fn on_results(&mut self, entry: &SentCommand, data: Option<String>) {
        let SentKind::ProfileGet { index } = entry.kind else {
            return;
        };
        if let Some(s) = self.touch(&entry.command_id)
            && let Some(o) = s.outcome.get_mut(index)
        {
            o.reported = data;
            o.get_status.get_or_insert(200);
        }
    }

    /// Moves every profile on by what the device answered in this message.
    pub fn settle(&mut self) {
        let ids: Vec<String> = self.states.keys().cloned().collect();
        for id in ids {
            let profile = self.assigned.get(&id).copied();
            let config = self.config;
            let now = self.now;
            let Some(s) = self.states.get_mut(&id) else {
                continue;
            };
            let before = s.clone();
            settle_one(s, profile, config, now);
            if *s != before {
                s.updated_at = now;
                self.changed.insert(id);
            }
        }
    }

    /// Adds profile commands to the reply while they fit. Returns how many profiles went
    /// out and whether more wait for the next message.
    pub fn send(&mut self, ob: &mut Outbox<'_>) -> (usize, bool) {
        let mut sent = 0;
        // New assignments get a state.
        for (id, p) in &self.assigned {
            if !self.states.contains_key(id) {
                self.states.insert(
                    id.clone(),
                    DeviceProfile::new(&self.device_id, id, p.revision, self.now),
                );
            }
        }
        let ids: Vec<String> = self.states.keys().cloned().collect();
        for id in ids {
            let profile = self.assigned.get(&id).copied();
            let wanted = profile.filter(|p| p.scope == ProfileScope::Device || ob.user_logged_in);
            if ob.sent.len() >= ob.max_sent {
                return (sent, false);
            }
            if self.changed_count() >= ob.max_state_writes {
                return (sent, true);
            }
            let s = self.states.get_mut(&id).expect("listed");
            let before = s.clone();
            let work = match (profile, wanted) {
                (Some(p), Some(_)) => next_work(s, p, self.config, self.now, ob.session_key),
                // User profile while no user is logged in: wait.
                (Some(_), None) => Work::None,
                // Removing a user profile's nodes needs the user too (without one, a
                // Delete of `./User/…` answers 404 and would count as gone).
                (None, _)
                    if !ob.user_logged_in && s.applied.iter().any(|t| t.starts_with("./User/")) =>
                {
                    Work::None
                }
                (None, _) => removal_work(s, ob.session_key),
            };
            let commands = match &work {
                Work::None => {
                    if *s != before {
                        s.updated_at = self.now;
                        self.changed.insert(id.clone());
                    }
                    continue;
                }
                Work::Apply => apply_commands(s, wanted.expect("apply needs the profile"), ob),
                Work::Check => gets(wanted.expect("check needs the profile"), ob),
                Work::Remove => remove_commands(s, ob),
            };
            let size: usize = commands
                .iter()
                .map(|(c, _)| syncml::command_xml(c).len())
                .sum();
            if size > ob.capacity && work == Work::Apply {
                // Not even an otherwise empty message holds it, and an Atomic cannot be
                // split: waiting would stall every message of every session. It fails
                // for good, with the numbers; an edit (a smaller revision) or a resend
                // after the device reports a larger MaxMsgSize tries again.
                let s = self.states.get_mut(&id).expect("listed");
                s.state = DeliveryState::Failed;
                s.reason = Some(format!(
                    "the profile's commands take {size} bytes; the device accepts messages \
                     of at most {} bytes (MaxMsgSize)",
                    ob.capacity + MESSAGE_OVERHEAD
                ));
                s.failures = self.config.max_failures.max(s.failures + 1);
                s.retry_at = None;
                s.sent_in = None;
                s.updated_at = self.now;
                self.changed.insert(id.clone());
                continue;
            }
            if size > ob.budget {
                // Not this message; the ids it drew are not reused, which is harmless.
                return (sent, true);
            }
            ob.budget -= size;
            for (c, kinds) in commands {
                for (cmd_id, kind) in kinds {
                    ob.record(&cmd_id, &id, kind);
                }
                ob.out.push(c);
            }
            let s = self.states.get_mut(&id).expect("listed");
            begin_attempt(s, &work, profile, ob.session_key, self.now);
            self.changed.insert(id.clone());
            sent += 1;
        }
        (sent, false)
    }
}

/// What a profile needs next.
#[derive(Debug, PartialEq, Eq)]
enum Work {
    None,
    Apply,
    Check,
    Remove,
}

fn next_work(
    s: &mut DeviceProfile,
    p: &Profile,
    config: &ProfileConfig,
    now: OffsetDateTime,
    session_key: &str,
) -> Work {
    if s.revision != p.revision
        || matches!(s.state, DeliveryState::Removing | DeliveryState::Removed)
    {
        // A new revision (or a profile assigned again): start over; nodes the old revision
        // set and the new one does not are deleted with it.
        s.revision = p.revision;
        s.state = DeliveryState::Pending;
        s.failures = 0;
        s.retry_at = None;
        s.reason = None;
        s.switched.clear();
    }
    let in_this_session = s.sent_in.as_deref() == Some(session_key);
    match s.state {
        DeliveryState::Pending => Work::Apply,
        DeliveryState::Sent | DeliveryState::Verifying if !in_this_session => {
            // The session it went out in ended before the device answered.
            if s.checking { Work::Check } else { Work::Apply }
        }
        DeliveryState::Failed
            if s.failures < config.max_failures && s.retry_at.is_some_and(|t| t <= now) =>
        {
            Work::Apply
        }
        DeliveryState::Verified
            if s.last_verified_at
                .is_none_or(|t| t + config.drift_interval <= now) =>
        {
            Work::Check
        }
        _ => Work::None,
    }
}

fn removal_work(s: &mut DeviceProfile, session_key: &str) -> Work {
    match s.state {
        DeliveryState::Removed => Work::None,
        DeliveryState::Removing if s.sent_in.as_deref() == Some(session_key) => Work::None,
        _ if s.applied.is_empty() => {
            s.state = DeliveryState::Removed;
            s.sent_in = None;
            Work::None
        }
        _ => Work::Remove,
    }
}

fn begin_attempt(
    s: &mut DeviceProfile,
    work: &Work,
    profile: Option<&Profile>,
    session_key: &str,
    now: OffsetDateTime,
) {
    s.sent_in = Some(session_key.to_owned());
    s.updated_at = now;
    s.apply_status = None;
    match work {
        Work::Apply => {
            s.state = DeliveryState::Sent;
            s.checking = false;
            if let Some(p) = profile {
                s.outcome = outcomes(p);
                // Recorded as the attempt goes out, not when its success comes back: the
                // device may apply it and the answer never arrive, or the profile be
                // unassigned or edited first, and a removal deletes what `applied` lists
                // (a node never set answers the Delete 404, which counts as gone).
                note_applied(s, p);
            }
        }
        Work::Check => {
            s.state = DeliveryState::Verifying;
            s.checking = true;
            if let Some(p) = profile {
                s.outcome = outcomes(p);
            }
        }
        Work::Remove => s.state = DeliveryState::Removing,
        Work::None => {}
    }
}

/// Adds the profile's targets to the nodes a removal deletes.
fn note_applied(s: &mut DeviceProfile, p: &Profile) {
    for st in &p.settings {
        if !s.applied.iter().any(|t| t == &st.item.target) {
            s.applied.push(st.item.target.clone());
        }
    }
}

fn outcomes(p: &Profile) -> Vec<NodeOutcome> {
    p.settings
        .iter()
        .map(|st| NodeOutcome {
            target: st.item.target.clone(),
            status: None,
            get_status: None,
            reported: None,
        })
        .collect()
}

fn verb_for(s: &DeviceProfile, setting: &Setting) -> Verb {
    let switched = s.switched.iter().any(|t| t == &setting.item.target);
    match (setting.verb, switched) {
        (Verb::Replace, true) => Verb::Add,
        (Verb::Add, true) => Verb::Replace,
        (v, _) => v,
    }
}

fn item(spec: &ItemSpec, with_data: bool) -> Item {
    let meta = Meta {
        format: spec.format.clone(),
        type_: spec.type_.clone(),
        ..Meta::default()
    };
    Item {
        target: Some(spec.target.clone()),
        meta: (with_data && !meta.is_empty()).then_some(meta),
        data: if with_data { spec.data.clone() } else { None },
        ..Item::default()
    }
}

type Planned = Vec<(Command, Vec<(String, SentKind)>)>;

/// The Atomic with the settings, a Delete for each node an earlier revision set that this
/// one drops, and a Get per setting to verify.
fn apply_commands(s: &mut DeviceProfile, p: &Profile, ob: &mut Outbox<'_>) -> Planned {
    let mut planned = Vec::new();
    let atomic_id = ob.id();
    let mut kinds = vec![(atomic_id.clone(), SentKind::ProfileApply)];
    let mut inner = Vec::with_capacity(p.settings.len());
    for (index, st) in p.settings.iter().enumerate() {
        let id = ob.id();
        kinds.push((id.clone(), SentKind::ProfileSet { index }));
        inner.push(Command::Item(ItemCommand {
            verb: verb_for(s, st).item_verb(),
            cmd_id: id,
            meta: None,
            items: vec![item(&st.item, true)],
        }));
    }
    planned.push((
        Command::Container(Container {
            kind: ContainerKind::Atomic,
            cmd_id: atomic_id,
            meta: None,
            commands: inner,
        }),
        kinds,
    ));
    let dropped: Vec<String> = s
        .applied
        .iter()
        .filter(|t| {
            !p.settings
                .iter()
                .any(|st| crate::profiles::same_node(&st.item.target, t))
        })
        .cloned()
        .collect();
    planned.extend(deletes(s, dropped, ob));
    planned.extend(gets(p, ob));
    planned
}

fn gets(p: &Profile, ob: &mut Outbox<'_>) -> Planned {
    p.settings
        .iter()
        .enumerate()
        .map(|(index, st)| {
            let id = ob.id();
            (
                Command::Item(ItemCommand {
                    verb: syncml::ItemVerb::Get,
                    cmd_id: id.clone(),
                    meta: None,
                    items: vec![item(&st.item, false)],
                }),
                vec![(id, SentKind::ProfileGet { index })],
            )
        })
        .collect()
}

fn remove_commands(s: &mut DeviceProfile, ob: &mut Outbox<'_>) -> Planned {
    let targets = s.applied.clone();
    deletes(s, targets, ob)
}

/// A Delete of each of `targets`, recorded as the profile's pending removals.
fn deletes(s: &mut DeviceProfile, targets: Vec<String>, ob: &mut Outbox<'_>) -> Planned {
    s.removals = targets
        .iter()
        .map(|t| NodeOutcome {
            target: t.clone(),
            status: None,
            get_status: None,
            reported: None,
        })
        .collect();
    targets
        .into_iter()
        .map(|t| {
            let id = ob.id();
            (
                delete(&id, &t),
                vec![(id, SentKind::ProfileDelete { target: t })],
            )
        })
        .collect()
}

fn delete(cmd_id: &str, target: &str) -> Command {
    Command::Item(ItemCommand {
        verb: syncml::ItemVerb::Delete,
        cmd_id: cmd_id.to_owned(),
        meta: None,
        items: vec![Item {
            target: Some(target.to_owned()),
            ..Item::default()
        }],
    })
}

fn status_text(code: u16) -> &'static str {
    match code {
        400 => "bad request",
        401 | 403 | 425 => "permission denied",
        404 => "node not found",
        405 => "command not allowed",
        406 => "optional feature not supported",
        415 => "unsupported type or format",
        418 => "already exists",
        500 => "command failed",
        507 => "atomic failed",
        516 => "atomic rollback failed",
        _ => "error",
    }
}

/// Moves one profile on by what is known of its current attempt.
fn settle_one(
    s: &mut DeviceProfile,
    profile: Option<&Profile>,
    config: &ProfileConfig,
    now: OffsetDateTime,
) {
    // Deletes of dropped nodes (with an apply) or of every node (a removal).
    if !s.removals.is_empty() && s.removals.iter().all(|o| o.status.is_some()) {
        let mut undeletable = Vec::new();
        for o in std::mem::take(&mut s.removals) {
            match o.status {
                // Gone, or never there.
                Some(200..=299 | 404) => s.applied.retain(|t| t != &o.target),
                Some(code) => {
                    undeletable.push(format!("{}: {code} ({})", o.target, status_text(code)))
                }
                None => {}
            }
        }
        if s.state == DeliveryState::Removing {
            // Some CSP nodes cannot be deleted: report it, don't loop.
            s.state = DeliveryState::Removed;
            s.sent_in = None;
            s.reason = (!undeletable.is_empty())
                .then(|| format!("could not delete {}", undeletable.join("; ")));
            if undeletable.is_empty() {
                s.applied.clear();
            }
            return;
        }
        if !undeletable.is_empty() {
            s.reason = Some(format!("could not delete {}", undeletable.join("; ")));
        }
    }
    let Some(p) = profile else {
        return;
    };
    if !matches!(s.state, DeliveryState::Sent | DeliveryState::Verifying) {
        return;
    }
    if s.revision != p.revision {
        // The answer is to an earlier revision (edited since it went out): its outcomes do
        // not line up with these settings. `next_work` starts the new revision over.
        return;
    }
    if s.checking {
        settle_check(s, p, now);
        return;
    }
    match s.apply_status {
        None => {}
        Some(code) if (200..300).contains(&code) => {
            s.state = DeliveryState::Verifying;
            // Already noted when the attempt went out, unless the state was written
            // before attempts noted it.
            note_applied(s, p);
            settle_verification(s, p, config, now);
        }
        Some(code) => {
            // Find the node that failed: the first inner status that is not a success or a
            // rollback.
            let failed = s.outcome.iter().enumerate().find(|(_, o)| {
                o.status
                    .is_some_and(|c| !(200..300).contains(&c) && c != 216)
            });
            if let Some((i, o)) = failed
                && let Some(st) = p.settings.get(i)
            {
                let c = o.status.unwrap_or(code);
                let switchable = matches!(
                    (verb_for(s, st), c),
                    (Verb::Replace, 404) | (Verb::Add, 418)
                );
                if switchable && !s.switched.contains(&st.item.target) {
                    // As real servers do: a missing node is added, an existing one replaced,
                    // once.
                    s.switched.push(st.item.target.clone());
                    s.state = DeliveryState::Pending;
                    s.sent_in = None;
                    return;
                }
                let reason = format!("{}: {c} ({})", st.item.target, status_text(c));
                fail(s, reason, config, now);
            } else {
                fail(
                    s,
                    format!("the device answered {code} ({})", status_text(code)),
                    config,
                    now,
                );
            }
        }
    }
}

fn settle_verification(
    s: &mut DeviceProfile,
    p: &Profile,
    config: &ProfileConfig,
    now: OffsetDateTime,
) {
    if !s.outcome.iter().all(|o| o.get_status.is_some()) {
        return;
    }
    match mismatch(s, p) {
        None => {
            s.state = DeliveryState::Verified;
            s.reason = None;
            s.failures = 0;
            s.retry_at = None;
            s.last_verified_at = Some(now);
            s.sent_in = None;
        }
        Some(reason) => fail(s, reason, config, now),
    }
}

/// A drift check: every node read back; a difference is recorded and the profile applied
/// again.
fn settle_check(s: &mut DeviceProfile, p: &Profile, now: OffsetDateTime) {
    if !s.outcome.iter().all(|o| o.get_status.is_some()) {
        return;
    }
    let mut drifted = false;
    for (o, st) in s.outcome.iter().zip(&p.settings) {
        if matches!(o.get_status, Some(405 | 406)) {
            continue;
        }
        let same = o.get_status == Some(200)
            && values_match(
                st.item.format.as_deref(),
                st.item.data.as_deref(),
                o.reported.as_deref(),
            );
        if !same {
            drifted = true;
            s.drift.push(DriftEvent {
                target: st.item.target.clone(),
                wanted: st.item.data.clone(),
                found: o.reported.clone(),
                at: now,
            });
        }
    }
    let excess = s.drift.len().saturating_sub(MAX_DRIFT_EVENTS);
    s.drift.drain(..excess);
    s.checking = false;
    s.sent_in = None;
    if drifted {
        s.drift_count += 1;
        s.state = DeliveryState::Pending;
    } else {
        s.state = DeliveryState::Verified;
        s.last_verified_at = Some(now);
    }
}

fn mismatch(s: &DeviceProfile, p: &Profile) -> Option<String> {
    for (o, st) in s.outcome.iter().zip(&p.settings) {
        match o.get_status {
            Some(200) => {}
            // Write-only nodes (the Firewall CSP's EnableFirewall, for one) refuse Get: the
            // Atomic's success is all the device will say.
            Some(405 | 406) => continue,
            Some(code) => {
                return Some(format!(
                    "{}: reading it back gave {code} ({})",
                    st.item.target,
                    status_text(code)
                ));
            }
            None => return Some(format!("{}: not read back", st.item.target)),
        }
        if !values_match(
            st.item.format.as_deref(),
            st.item.data.as_deref(),
            o.reported.as_deref(),
        ) {
            return Some(format!(
                "{}: value differs: wanted {}, device reports {}",
                st.item.target,
                shorten(st.item.data.as_deref()),
                shorten(o.reported.as_deref())
            ));
        }
    }
    None
}

fn shorten(v: Option<&str>) -> String {
    match v {
        None => "nothing".into(),
        Some(v) if v.chars().count() > 80 => {
            format!("{:?}…", v.chars().take(80).collect::<String>())
        }
        Some(v) => format!("{v:?}"),
    }
}

fn fail(s: &mut DeviceProfile, reason: String, config: &ProfileConfig, now: OffsetDateTime) {
    s.state = DeliveryState::Failed;
    s.reason = Some(reason);
    s.failures += 1;
    s.sent_in = None;
    s.retry_at = (s.failures < config.max_failures).then(|| {
        let factor = 1i32 << (s.failures - 1).min(10);
        now + config.retry_base * factor
    });
}

/// An operator's resend: the profile goes out again at the device's next session, with a
/// fresh attempt count.
pub fn resend(s: &mut DeviceProfile, now: OffsetDateTime) {
    s.state = DeliveryState::Pending;
    s.failures = 0;
    s.retry_at = None;
    s.reason = None;
    s.sent_in = None;
    s.switched.clear();
    s.updated_at = now;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::{Assignment, Profile};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-01 10:00 UTC);

    fn profile(settings: &[(&str, &str)]) -> Profile {
        Profile {
            id: "p1".into(),
            name: "P1".into(),
            description: String::new(),
            scope: ProfileScope::Device,
            revision: 1,
            version: 1,
            settings: settings
                .iter()
                .map(|(t, d)| Setting {
                    verb: Verb::Replace,
                    item: ItemSpec {
                        target: (*t).into(),
                        format: Some("int".into()),
                        type_: None,
                        data: Some((*d).into()),
                    },
                })
                .collect(),
            assignment: Assignment {
                include: vec!["all".into()],
                exclude: vec![],
            },
            template: None,
            created_at: NOW,
            updated_at: NOW,
        }
    }

    /// Sends what is due and returns the recorded sent entries and the commands.
    fn send(run: &mut ProfileRun<'_>, key: &str) -> (Vec<SentCommand>, Vec<Command>) {
        send_as(run, key, false)
    }

    /// [`send`], with a user signed in or not.
    fn send_as(
        run: &mut ProfileRun<'_>,
        key: &str,
        user_logged_in: bool,
    ) -> (Vec<SentCommand>, Vec<Command>) {
        let (mut out, mut sent, mut next) = (Vec::new(), Vec::new(), 1);
        run.send(&mut Outbox {
            out: &mut out,
            next_cmd_id: &mut next,
            sent: &mut sent,
            msg_id: 2,
            session_key: key,
            budget: 100_000,
            capacity: 100_000,
            user_logged_in,
            max_sent: 500,
            max_state_writes: usize::MAX,
        });
        (sent, out)
    }

    fn answer(
        run: &mut ProfileRun<'_>,
        sent: &[SentCommand],
        code: impl Fn(&SentKind) -> u16,
        value: &str,
    ) {
        for e in sent {
            let c = code(&e.kind);
            run.on_status(e, c);
            if matches!(e.kind, SentKind::ProfileGet { .. }) && c == 200 {
                run.on_results(e, Some(value.into()));
            }
        }
        run.settle();
    }

    #[test]
    fn applies_verifies_and_then_rests() {
        let config = ProfileConfig::default();
        let catalog = vec![profile(&[
            ("./Device/Vendor/MSFT/A", "1"),
            ("./Device/Vendor/MSFT/B", "1"),
        ])];
        let mut run = ProfileRun::new(&config, &catalog, "D1", &[], vec![], NOW);
        let (sent, out) = send(&mut run, "s1");
        // One Atomic with both settings, then a Get for each.
        assert_eq!(out.len(), 3);
        assert!(matches!(&out[0], Command::Container(c) if c.commands.len() == 2));
        assert_eq!(sent.len(), 5);
        answer(&mut run, &sent, |_| 200, "1");
        let states = run.into_changed();
        assert_eq!(states[0].state, DeliveryState::Verified);
        assert_eq!(states[0].applied.len(), 2);
        assert_eq!(states[0].device_id, "D1");
        // The next message has nothing to send.
        let mut run = ProfileRun::new(&config, &catalog, "D1", &[], states, NOW);
        assert!(send(&mut run, "s2").1.is_empty());
    }

    /// A profile unassigned while its Atomic was out (the device applied it; the answer
    /// came after, or never): the removal still deletes its nodes. It used to mark the
    /// profile removed with nothing deleted, the setting left on the device.
    #[test]
    fn unassigned_in_flight_still_deletes_what_it_set() {
        let config = ProfileConfig::default();
        let catalog = vec![profile(&[("./Device/Vendor/MSFT/A", "1")])];
        let mut run = ProfileRun::new(&config, &catalog, "D1", &[], vec![], NOW);
        let (sent, _) = send(&mut run, "s1");
        let states = run.into_changed();
        // Unassigned (gone from the catalog); the device's 200 arrives.
        let empty: Vec<Profile> = Vec::new();
        let mut run = ProfileRun::new(&config, &empty, "D1", &[], states, NOW);
        answer(&mut run, &sent, |_| 200, "1");
        let (_, out) = send(&mut run, "s1");
        let deleted: Vec<_> = out
            .iter()
            .filter_map(|c| match c {
                Command::Item(i) if i.verb == syncml::ItemVerb::Delete => i.items[0].target.clone(),
                _ => None,
            })
            .collect();
        assert_eq!(deleted, ["./Device/Vendor/MSFT/A"], "{out:?}");
    }

    /// An unassigned user profile's nodes are deleted when a user is signed in, as they
    /// were set: without one, a Delete of `./User/…` answers 404, which used to count as
    /// gone and leave the user's setting in place.
    #[test]
    fn a_user_profile_is_removed_with_a_user_signed_in() {
        let config = ProfileConfig::default();
        let mut p = profile(&[("./User/Vendor/MSFT/A", "1")]);
        p.scope = ProfileScope::User;
        let catalog = vec![p];
        let mut run = ProfileRun::new(&config, &catalog, "D1", &[], vec![], NOW);
        let (sent, _) = send_as(&mut run, "s1", true);
        answer(&mut run, &sent, |_| 200, "1");
        let states = run.into_changed();
        assert_eq!(states[0].state, DeliveryState::Verified);
        let empty: Vec<Profile> = Vec::new();
        let mut run = ProfileRun::new(&config, &empty, "D1", &[], states.clone(), NOW);
        assert!(send_as(&mut run, "s2", false).1.is_empty(), "waits");
        assert!(run.into_changed().is_empty(), "nothing changes meanwhile");
        let mut run = ProfileRun::new(&config, &empty, "D1", &[], states, NOW);
        let (_, out) = send_as(&mut run, "s3", true);
        assert!(syncml::command_xml(&out[0]).contains("<Delete>"), "{out:?}");
    }

    /// A profile edited between sending revision 1 and the device's answer: the answer is
    /// not read against revision 2's settings (a failed node's index past them used to
    /// panic the message, on every retry), and revision 2 goes out, deleting what only
    /// revision 1 set.
    #[test]
    fn an_answer_to_an_earlier_revision_starts_the_new_one() {
        let config = ProfileConfig::default();
        let rev1 = vec![profile(&[
            ("./Device/Vendor/MSFT/A", "1"),
            ("./Device/Vendor/MSFT/B", "1"),
            ("./Device/Vendor/MSFT/C", "1"),
        ])];
        let mut run = ProfileRun::new(&config, &rev1, "D1", &[], vec![], NOW);
        let (sent, _) = send(&mut run, "s1");
        let states = run.into_changed();
        let mut rev2 = vec![profile(&[("./Device/Vendor/MSFT/A", "1")])];
        rev2[0].revision = 2;
        let mut run = ProfileRun::new(&config, &rev2, "D1", &[], states, NOW);
        answer(
            &mut run,
            &sent,
            |k| match k {
                SentKind::ProfileApply => 507,
                SentKind::ProfileSet { index: 2 } => 500,
                SentKind::ProfileSet { .. } => 216,
                _ => 200,
            },
            "1",
        );
        let (_, out) = send(&mut run, "s1");
        let text: String = out.iter().map(syncml::command_xml).collect();
        assert!(text.contains("<Atomic>"), "revision 2 goes out: {text}");
        for dropped in ["./Device/Vendor/MSFT/B", "./Device/Vendor/MSFT/C"] {
            // Only a Delete names a node revision 2 does not set.
            assert!(text.contains(dropped), "{dropped}: {text}");
        }
        let states = run.into_changed();
        assert_eq!(states[0].revision, 2);
        assert!(states[0].reason.is_none(), "{:?}", states[0].reason);
    }

    #[test]
    fn a_wrong_value_fails_with_the_values_and_retries_later() {
        let config = ProfileConfig::default();
        let catalog = vec![profile(&[("./Device/Vendor/MSFT/A", "1")])];
        let mut run = ProfileRun::new(&config, &catalog, "D1", &[], vec![], NOW);
        let (sent, _) = send(&mut run, "s1");
        answer(&mut run, &sent, |_| 200, "7");
        let states = run.into_changed();
        assert_eq!(states[0].state, DeliveryState::Failed);
        let reason = states[0].reason.clone().unwrap();
        assert!(
            reason.contains("wanted \"1\", device reports \"7\""),
            "{reason}"
        );
        assert_eq!(states[0].retry_at, Some(NOW + Duration::minutes(15)));
        let mut run = ProfileRun::new(&config, &catalog, "D1", &[], states.clone(), NOW);
        assert!(
            send(&mut run, "s2").1.is_empty(),
            "not before the retry time"
        );
        let later = NOW + Duration::minutes(16);
        let mut run = ProfileRun::new(&config, &catalog, "D1", &[], states, later);
        assert!(!send(&mut run, "s3").1.is_empty());
    }

    #[test]
    fn a_404_on_replace_is_retried_once_as_add() {
        let config = ProfileConfig::default();
        let catalog = vec![profile(&[("./Device/Vendor/MSFT/A", "1")])];
        let mut run = ProfileRun::new(&config, &catalog, "D1", &[], vec![], NOW);
        let (sent, _) = send(&mut run, "s1");
        answer(
            &mut run,
            &sent,
            |k| match k {
                SentKind::ProfileApply => 507,
                SentKind::ProfileSet { .. } => 404,
                _ => 404,
            },
            "",
        );
        // Pending again, within the same message: it goes out as Add.
        let (_, out) = send(&mut run, "s1");
        let Command::Container(c) = &out[0] else {
            panic!("{out:?}")
        };
        assert!(matches!(&c.commands[0], Command::Item(i) if i.verb == syncml::ItemVerb::Add));
        let states = run.into_changed();
        assert_eq!(states[0].state, DeliveryState::Sent);
        assert_eq!(states[0].failures, 0);
    }

    #[test]
    fn an_unassigned_profile_is_removed() {
        let config = ProfileConfig::default();
        let catalog = vec![profile(&[("./Device/Vendor/MSFT/A", "1")])];
        let mut run = ProfileRun::new(&config, &catalog, "D1", &[], vec![], NOW);
        let (sent, _) = send(&mut run, "s1");
        answer(&mut run, &sent, |_| 200, "1");
        let states = run.into_changed();
        let mut run = ProfileRun::new(&config, &[], "D1", &[], states, NOW);
        let (sent, out) = send(&mut run, "s2");
        assert!(matches!(&out[0], Command::Item(i) if i.verb == syncml::ItemVerb::Delete));
        answer(&mut run, &sent, |_| 200, "");
        let states = run.into_changed();
        assert_eq!(states[0].state, DeliveryState::Removed);
        assert!(states[0].applied.is_empty());
    }
}
