//! The command queue's records: what an operator asked a device to do, how far it got, and
//! what the device answered.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use winmdm_wire::syncml::ItemVerb;

/// Largest `data` accepted in one command (larger ones would not fit a DynamoDB item).
pub const MAX_COMMAND_DATA: usize = 256 * 1024;
/// Largest total of results kept for one command.
pub const MAX_RESULTS_BYTES: usize = 320 * 1024;
/// Most commands inside one Atomic.
pub const MAX_ATOMIC_COMMANDS: usize = 100;

/// The SyncML verbs an operator may send as single commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verb {
    Get,
    Add,
    Replace,
    Delete,
    Exec,
}

impl Verb {
    pub fn item_verb(self) -> ItemVerb {
        match self {
            Verb::Get => ItemVerb::Get,
            Verb::Add => ItemVerb::Add,
            Verb::Replace => ItemVerb::Replace,
            Verb::Delete => ItemVerb::Delete,
            Verb::Exec => ItemVerb::Exec,
        }
    }
}

/// One target with optional payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemSpec {
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// A verb applied to one or more items (inventory is one Get with several items).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerbSpec {
    pub verb: Verb,
    pub items: Vec<ItemSpec>,
}

/// What goes out to the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum CommandSpec {
    Single(VerbSpec),
    /// All-or-nothing on the device; Windows refuses Get and nested Atomic inside.
    Atomic {
        commands: Vec<VerbSpec>,
    },
}

impl CommandSpec {
    /// Whether any target addresses the user scope (sent only when a user is logged in).
    pub fn targets_user(&self) -> bool {
        let user = |v: &VerbSpec| v.items.iter().any(|i| i.target.starts_with("./User/"));
        match self {
            CommandSpec::Single(v) => user(v),
            CommandSpec::Atomic { commands } => commands.iter().any(user),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandState {
    Pending,
    Sent,
    Succeeded,
    Failed,
}

impl CommandState {
    pub fn is_open(self) -> bool {
        matches!(self, CommandState::Pending | CommandState::Sent)
    }
}

/// One item of a device's `Results`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    pub target: String,
    pub format: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub data: Option<String>,
}

impl CommandResult {
    /// What the result takes in its command's record: every device-supplied field, and
    /// a fixed allowance for the record's own shape, so that many empty items count too.
    pub fn stored_len(&self) -> usize {
        const PER_RESULT: usize = 64;
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        PER_RESULT + self.target.len() + opt(&self.format) + opt(&self.type_) + opt(&self.data)
    }
}

/// Where a command was last sent: it is answered in that session or sent again later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentIn {
    pub session_id: String,
    pub msg_id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedCommand {
    /// Sortable: time-ordered ids give FIFO order per device.
    pub id: String,
    pub device_id: String,
    /// The typed action this came from, if any (`reboot`, `wipe`, …), for display.
    pub action: Option<String>,
    pub spec: CommandSpec,
    pub state: CommandState,
    /// The device's status code for the command.
    pub status: Option<u16>,
    pub results: Vec<CommandResult>,
    pub sent_in: Option<SentIn>,
    /// Times sent; a 418 on Add is retried once as Replace.
    pub attempts: u32,
    /// Why the command failed when no device status says it (e.g. "no status from
    /// device").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A failed command as the overview lists it: small, so the stores keep a note per
/// failure beside the command (bounded: the newest [`FailedCommandNote::KEPT`] locally,
/// 30 days on DynamoDB) and the overview reads the newest few without touching devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedCommandNote {
    pub device_id: String,
    pub command_id: String,
    /// The action (`inventory`, `wipe`, …), else the verb and first target.
    pub what: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub failed_at: OffsetDateTime,
}

impl FailedCommandNote {
    /// Notes the embedded store keeps.
    pub const KEPT: usize = 1000;

    pub fn of(c: &QueuedCommand) -> Self {
        let first = match &c.spec {
            CommandSpec::Single(v) => Some(v),
            CommandSpec::Atomic { commands } => commands.first(),
        };
        let what = match (&c.action, first) {
            (Some(a), _) => a.clone(),
            (None, Some(v)) => {
                let target = v.items.first().map_or("", |i| i.target.as_str());
                let verb = format!("{:?}", v.verb);
                let atomic = matches!(c.spec, CommandSpec::Atomic { .. });
                // A target is device-supplied text only in results; here it is the
                // operator's, but bounded all the same.
                let target: String = target.chars().take(200).collect();
                if atomic {
                    format!("Atomic: {verb} {target}")
                } else {
                    format!("{verb} {target}")
                }
            }
            (None, None) => "command".into(),
        };
        Self {
            device_id: c.device_id.clone(),
            command_id: c.id.clone(),
            what,
            status: c.status,
            reason: c.reason.as_ref().map(|r| r.chars().take(300).collect()),
            failed_at: c.updated_at,
        }
    }
}

impl QueuedCommand {
    pub fn new(
        device_id: &str,
        action: Option<&str>,
        spec: CommandSpec,
        now: OffsetDateTime,
    ) -> Self {
        // Nanoseconds since the epoch, then randomness: sorts by creation time.
        let nanos = now.unix_timestamp_nanos().max(0) as u128;
        let rand = uuid::Uuid::new_v4().simple().to_string();
        Self {
            id: format!("{nanos:020x}{}", &rand[..12]),
            device_id: device_id.to_owned(),
            action: action.map(str::to_owned),
            spec,
            state: CommandState::Pending,
            status: None,
            results: Vec::new(),
            sent_in: None,
            attempts: 0,
            reason: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// What the results kept so far take ([`CommandResult::stored_len`]).
    pub fn results_len(&self) -> usize {
        self.results.iter().map(CommandResult::stored_len).sum()
    }

    /// Appends results, keeping their total within [`MAX_RESULTS_BYTES`] however often a
    /// device answers: one that does not fit is kept as a short note (its address cut to
    /// 256 characters) while there is room for the note, and dropped after that.
    pub fn add_results(&mut self, results: impl IntoIterator<Item = CommandResult>) {
        let mut used = self.results_len();
        for r in results {
            let r = if used + r.stored_len() <= MAX_RESULTS_BYTES {
                r
            } else {
                CommandResult {
                    target: r.target.chars().take(256).collect(),
                    format: None,
                    type_: None,
                    data: Some("(truncated: results exceed the stored limit)".into()),
                }
            };
            if used + r.stored_len() > MAX_RESULTS_BYTES {
                continue;
            }
            used += r.stored_len();
            self.results.push(r);
        }
    }
}

/// An operator's request, as the admin API takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    pub verb: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub format: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub data: Option<String>,
    pub commands: Option<Vec<CommandRequest>>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CommandError {
    #[error("{0}")]
    Invalid(String),
}

fn invalid(m: impl Into<String>) -> CommandError {
    CommandError::Invalid(m.into())
}

const FORMATS: &[&str] = &[
    "chr", "int", "bool", "b64", "xml", "node", "null", "float", "date", "time",
];

/// Checks an OMA-DM URI: relative (`./…`), never starting with `/`, no empty segments,
/// and only the first segment may be `.`.
pub fn validate_target(target: &str) -> Result<(), CommandError> {
    if target.len() > 1024 {
        return Err(invalid("target is longer than 1024 characters"));
    }
    if !target.starts_with("./") {
        return Err(invalid(format!(
            "target {target:?} must be a relative URI starting with ./"
        )));
    }
    let mut segments = target.split('/');
    segments.next(); // "."
    for seg in segments {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(invalid(format!(
                "target {target:?} has an empty, . or .. segment"
            )));
        }
        if seg.chars().any(|c| c.is_control() || c == '?' || c == '#')
            || !winmdm_wire::xml::is_xml_text(seg)
        {
            return Err(invalid(format!(
                "target {target:?} has characters that need percent-encoding"
            )));
        }
    }
    Ok(())
}

/// A value we will write into a SyncML message: characters XML can carry only. A control
/// character would make the message unreadable to the device, and with it every command
/// queued beside this one (a wipe, an unenroll).
pub fn check_xml_text(field: &str, value: Option<&str>) -> Result<(), CommandError> {
    match value {
        Some(v) if !winmdm_wire::xml::is_xml_text(v) => Err(invalid(format!(
            "{field} has a control character XML cannot carry (only tab, newline and carriage return are allowed)"
        ))),
        _ => Ok(()),
    }
}

fn parse_verb(v: &str) -> Result<Verb, CommandError> {
    Ok(match v {
        "Get" => Verb::Get,
        "Add" => Verb::Add,
        "Replace" => Verb::Replace,
        "Delete" => Verb::Delete,
        "Exec" => Verb::Exec,
        other => {
            return Err(invalid(format!(
                "verb must be Get, Add, Replace, Delete, Exec or Atomic, not {other:?}"
            )));
        }
    })
}

fn verb_spec(r: &CommandRequest, verb: Verb) -> Result<VerbSpec, CommandError> {
    if r.commands.is_some() || r.action.is_some() {
        return Err(invalid("commands and action are only allowed on their own"));
    }
    let target = r
        .target
        .as_deref()
        .ok_or_else(|| invalid("target is required"))?;
    validate_target(target)?;
    if let Some(f) = &r.format
        && !FORMATS.contains(&f.as_str())
    {
        return Err(invalid(format!(
            "format must be one of {}, not {f:?}",
            FORMATS.join(", ")
        )));
    }
    check_xml_text("type", r.type_.as_deref())?;
    check_xml_text("data", r.data.as_deref())?;
    if let Some(d) = &r.data
        && d.len() > MAX_COMMAND_DATA
    {
        return Err(invalid(format!(
            "data is larger than {MAX_COMMAND_DATA} bytes"
        )));
    }
    match verb {
        Verb::Get | Verb::Delete if r.data.is_some() => {
            return Err(invalid(format!("{verb:?} takes no data")));
        }
        Verb::Add | Verb::Replace if r.data.is_none() && r.format.as_deref() != Some("node") => {
            return Err(invalid(format!("{verb:?} needs data (or format \"node\")")));
        }
        _ => {}
    }
    if r.format.as_deref() == Some("int")
        && r.data
            .as_deref()
            .is_some_and(|d| d.trim().parse::<i64>().is_err())
    {
        return Err(invalid("format int needs integer data"));
    }
    if r.format.as_deref() == Some("bool")
        && !matches!(r.data.as_deref(), None | Some("true" | "false"))
    {
        return Err(invalid("format bool needs true or false"));
    }
    Ok(VerbSpec {
        verb,
        items: vec![ItemSpec {
            target: target.to_owned(),
            format: r.format.clone(),
            type_: r.type_.clone(),
            data: r.data.clone(),
        }],
    })
}

/// Targets read by the `inventory` action.
pub const INVENTORY_TARGETS: &[&str] = &[
    "./DevDetail/SwV",
    "./DevDetail/OEM",
    "./DevDetail/HwV",
    "./DevDetail/FwV",
    "./DevDetail/Ext/Microsoft/OSPlatform",
    "./DevDetail/Ext/Microsoft/DeviceName",
    "./DevDetail/Ext/Microsoft/ProcessorArchitecture",
    "./DevDetail/Ext/Microsoft/TotalRAM",
    "./DevDetail/Ext/Microsoft/TotalStorage",
    "./DevDetail/Ext/Microsoft/SMBIOSSerialNumber",
    "./Vendor/MSFT/DeviceStatus/OS/Edition",
    "./Vendor/MSFT/DeviceStatus/OS/Mode",
    "./Vendor/MSFT/DeviceStatus/Compliance/EncryptionCompliance",
];

fn exec(target: String, format: &str, data: &str) -> CommandSpec {
    CommandSpec::Single(VerbSpec {
        verb: Verb::Exec,
        items: vec![ItemSpec {
            target,
            format: Some(format.into()),
            type_: Some("text/plain".into()),
            data: Some(data.into()),
        }],
    })
}

/// Turns an admin request into what to queue: a raw verb, an Atomic, or a typed action.
/// `provider_id` names our DMClient provider (for `unenroll`).
pub fn parse_request(
    r: &CommandRequest,
    provider_id: &str,
) -> Result<(Option<String>, CommandSpec), CommandError> {
    if let Some(action) = &r.action {
        if r.verb.is_some() || r.target.is_some() || r.data.is_some() || r.commands.is_some() {
            return Err(invalid("an action takes no other fields"));
        }
        let spec = match action.as_str() {
            "reboot" => exec("./Device/Vendor/MSFT/Reboot/RebootNow".into(), "null", ""),
            "wipe" => exec("./Device/Vendor/MSFT/RemoteWipe/doWipe".into(), "chr", ""),
            "wipe_protected" => exec(
                "./Device/Vendor/MSFT/RemoteWipe/doWipeProtected".into(),
                "chr",
                "",
            ),
            "unenroll" => exec(
                format!("./Vendor/MSFT/DMClient/Provider/{provider_id}/Unenroll"),
                "chr",
                provider_id,
            ),
            "inventory" => CommandSpec::Single(VerbSpec {
                verb: Verb::Get,
                items: INVENTORY_TARGETS
                    .iter()
                    .map(|t| ItemSpec {
                        target: (*t).into(),
                        format: None,
                        type_: None,
                        data: None,
                    })
                    .collect(),
            }),
            other => {
                return Err(invalid(format!(
                    "action must be reboot, wipe, wipe_protected, unenroll or inventory, not {other:?}"
                )));
            }
        };
        return Ok((Some(action.clone()), spec));
    }
    let verb = r
        .verb
        .as_deref()
        .ok_or_else(|| invalid("either verb or action is required"))?;
    if verb == "Atomic" {
        if r.target.is_some() || r.data.is_some() {
            return Err(invalid("Atomic takes only commands"));
        }
        let inner = r.commands.as_deref().unwrap_or_default();
        if inner.is_empty() || inner.len() > MAX_ATOMIC_COMMANDS {
            return Err(invalid(format!(
                "Atomic needs 1 to {MAX_ATOMIC_COMMANDS} commands"
            )));
        }
        let mut commands = Vec::with_capacity(inner.len());
        for c in inner {
            let v = c
                .verb
                .as_deref()
                .ok_or_else(|| invalid("each Atomic command needs a verb"))?;
            let verb = match v {
                "Get" => return Err(invalid("Windows does not allow Get inside Atomic")),
                "Atomic" => return Err(invalid("Atomic cannot be nested")),
                other => parse_verb(other)?,
            };
            commands.push(verb_spec(c, verb)?);
        }
        return Ok((None, CommandSpec::Atomic { commands }));
    }
    let verb = parse_verb(verb)?;
    Ok((None, CommandSpec::Single(verb_spec(r, verb)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: serde_json::Value) -> CommandRequest {
        serde_json::from_value(v).unwrap()
    }

    /// A control character in a command's data or type would make the message carrying
    /// it (and every command beside it) unreadable to the device: refused when queued.
    #[test]
    fn refuses_characters_xml_cannot_carry() {
        for (field, value) in [
            ("data", "a\u{1}b"),
            ("data", "\u{0}"),
            ("type", "text/\u{1b}x"),
        ] {
            let mut r = serde_json::json!({"verb":"Replace","target":"./Vendor/MSFT/X","format":"chr","data":"ok"});
            r[field] = value.into();
            let e = parse_request(&req(r), "winmdm").unwrap_err().to_string();
            assert!(e.contains("control character"), "{field}: {e}");
        }
        let r = req(
            serde_json::json!({"verb":"Replace","target":"./Vendor/MSFT/X","format":"chr","data":"tab\tnewline\r\n é 😀"}),
        );
        assert!(parse_request(&r, "winmdm").is_ok());
    }

    #[test]
    fn validates_targets() {
        assert!(validate_target("./Device/Vendor/MSFT/Reboot/RebootNow").is_ok());
        for bad in [
            "/Vendor",
            "Vendor/x",
            "./a//b",
            "./a/../b",
            "./",
            "./a/./b",
            "./a/\u{FFFF}",
            "./a/b\u{FFFE}c",
        ] {
            assert!(validate_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_verbs_atomic_and_actions() {
        let (_, s) = parse_request(&req(serde_json::json!({"verb":"Replace","target":"./Vendor/MSFT/Policy/Config/X/Y","format":"int","data":"1"})), "winmdm").unwrap();
        assert!(matches!(
            s,
            CommandSpec::Single(VerbSpec {
                verb: Verb::Replace,
                ..
            })
        ));
        let (a, s) =
            parse_request(&req(serde_json::json!({"action":"unenroll"})), "winmdm").unwrap();
        assert_eq!(a.as_deref(), Some("unenroll"));
        let CommandSpec::Single(v) = s else { panic!() };
        assert_eq!(
            v.items[0].target,
            "./Vendor/MSFT/DMClient/Provider/winmdm/Unenroll"
        );
        assert!(
            parse_request(
                &req(
                    serde_json::json!({"verb":"Atomic","commands":[{"verb":"Get","target":"./a"}]})
                ),
                "w"
            )
            .is_err()
        );
        assert!(
            parse_request(&req(serde_json::json!({"verb":"Add","target":"./a"})), "w").is_err()
        );
        assert!(
            parse_request(
                &req(serde_json::json!({"verb":"Get","target":"./a","format":"weird"})),
                "w"
            )
            .is_err()
        );
        assert!(parse_request(&req(serde_json::json!({"action":"explode"})), "w").is_err());
        let (_, s) = parse_request(&req(serde_json::json!({"verb":"Atomic","commands":[{"verb":"Add","target":"./a","format":"chr","data":"x"},{"verb":"Replace","target":"./User/b","format":"chr","data":"y"}]})), "w").unwrap();
        assert!(s.targets_user());
    }
}
