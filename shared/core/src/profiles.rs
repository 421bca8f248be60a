//! Configuration profiles: the desired state of a set of CSP nodes, assigned to groups of
//! devices. A profile is written as the SyncML fragment Fleet and Intune's custom OMA-URI
//! settings use (top-level `<Replace>`/`<Add>` elements) or as JSON; it is validated here,
//! versioned by revision, and delivered and verified per device by
//! [`crate::profile_engine`].

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use winmdm_wire::xml;

use crate::commands::{ItemSpec, MAX_COMMAND_DATA, Verb, check_xml_text, validate_target};

/// Settings in one profile.
pub const MAX_SETTINGS: usize = 100;
/// Largest profile source (fragment or JSON) accepted.
pub const MAX_PROFILE_BYTES: usize = 256 * 1024;
/// The group every device is in.
pub const ALL_GROUP: &str = "all";

/// Which half of the CSP tree a profile configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileScope {
    /// `./Device/…` and `./Vendor/…` (and other device-wide roots).
    Device,
    /// `./User/…`: applied only while a user is logged in.
    User,
}

/// One CSP node a profile sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    /// `Replace` or `Add` as written; the engine may switch once on a 404 or 418.
    pub verb: Verb,
    #[serde(flatten)]
    pub item: ItemSpec,
}

/// Which groups a profile goes to: devices in any included group and in no excluded one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl Assignment {
    /// Whether a device in `groups` (besides `all`) is targeted.
    pub fn targets(&self, groups: &[String]) -> bool {
        let member = |g: &String| g == ALL_GROUP || groups.iter().any(|d| d == g);
        self.include.iter().any(member) && !self.exclude.iter().any(member)
    }

    /// Whether some device could be targeted by both (conservative: only disjoint include
    /// lists without `all`, or an exclusion of everything the other includes, rule it out).
    pub fn may_overlap(&self, other: &Assignment) -> bool {
        let covers = |a: &Assignment, b: &Assignment| {
            !b.include.is_empty()
                && b.include
                    .iter()
                    .all(|g| a.exclude.contains(g) || a.exclude.iter().any(|e| e == ALL_GROUP))
        };
        if self.include.is_empty() || other.include.is_empty() {
            return false;
        }
        if covers(self, other) || covers(other, self) {
            return false;
        }
        let all = |a: &Assignment| a.include.iter().any(|g| g == ALL_GROUP);
        all(self) || all(other) || self.include.iter().any(|g| other.include.contains(g))
    }
}

/// A profile at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Stable id (URL-safe), chosen at creation.
    pub id: String,
    /// Unique, case-insensitively.
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub scope: ProfileScope,
    /// Starts at 1; every edit of the settings is a new revision devices converge to.
    pub revision: u32,
    /// Bumped by every write (settings or assignment): writes are conditional on it.
    #[serde(default)]
    pub version: u64,
    pub settings: Vec<Setting>,
    #[serde(default)]
    pub assignment: Assignment,
    /// The template and parameters it was made from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<serde_json::Value>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Profile {
    pub fn targets_device(&self, groups: &[String]) -> bool {
        self.assignment.targets(groups)
    }
}

/// Where a profile stands on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Assigned, not sent yet (or to be sent again).
    Pending,
    /// Sent in a session; waiting for the device's statuses.
    Sent,
    /// The device applied it (Atomic 200); waiting for the Gets that verify it.
    Verifying,
    /// Every node reads back as desired.
    Verified,
    /// Applying or verifying failed; `reason` says how.
    Failed,
    /// No longer assigned: its nodes are being deleted.
    Removing,
    /// No longer assigned, and its nodes are gone (or could not be deleted: `reason`).
    Removed,
}

impl DeliveryState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Verifying => "verifying",
            Self::Verified => "verified",
            Self::Failed => "failed",
            Self::Removing => "removing",
            Self::Removed => "removed",
        }
    }
}

/// A drift the periodic check found and repaired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftEvent {
    pub target: String,
    pub wanted: Option<String>,
    pub found: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// What the device answered for one node in the current attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeOutcome {
    pub target: String,
    /// The status of the Replace/Add/Delete, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The status of the verifying Get, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub get_status: Option<u16>,
    /// The value the Get returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<String>,
}

/// One profile's state on one device. Written only by that device's management messages
/// (and the operator's resend), as part of the message's single write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceProfile {
    pub device_id: String,
    pub profile_id: String,
    /// The revision this state is about.
    pub revision: u32,
    pub state: DeliveryState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Failed attempts at this revision; retried with backoff up to the configured limit.
    #[serde(default)]
    pub failures: u32,
    #[serde(
        with = "time::serde::rfc3339::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_at: Option<OffsetDateTime>,
    #[serde(
        with = "time::serde::rfc3339::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_verified_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub drift_count: u32,
    /// The latest drifts (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<DriftEvent>,
    /// Nodes this profile has set on the device: what a removal, or a revision that drops
    /// a setting, deletes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied: Vec<String>,
    /// Settings to send with the other verb than written (after a 404 on Replace or a 418
    /// on Add); each switches once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub switched: Vec<String>,
    /// The session instance the current attempt went out in: one that dropped is sent again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_in: Option<String>,
    /// What the device answered in the current attempt, per setting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outcome: Vec<NodeOutcome>,
    /// The status of the current attempt's Atomic, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_status: Option<u16>,
    /// Deletes of the current attempt, per node (a removal, or nodes a new revision drops).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removals: Vec<NodeOutcome>,
    /// Whether the current attempt is only a drift check (Gets, no writes).
    #[serde(default)]
    pub checking: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl DeviceProfile {
    pub fn new(device_id: &str, profile_id: &str, revision: u32, now: OffsetDateTime) -> Self {
        Self {
            device_id: device_id.to_owned(),
            profile_id: profile_id.to_owned(),
            revision,
            state: DeliveryState::Pending,
            reason: None,
            failures: 0,
            retry_at: None,
            last_verified_at: None,
            drift_count: 0,
            drift: Vec::new(),
            applied: Vec::new(),
            switched: Vec::new(),
            sent_in: None,
            outcome: Vec::new(),
            apply_status: None,
            removals: Vec::new(),
            checking: false,
            updated_at: now,
        }
    }
}

/// A static group of devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Why a profile or group is refused; the message names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("{0}")]
    Invalid(String),
    #[error("profile {other:?} assigned to the same devices sets {target} to a different value")]
    Conflict { other: String, target: String },
}

fn invalid(m: impl Into<String>) -> ProfileError {
    ProfileError::Invalid(m.into())
}

/// Reads a profile written as a SyncML fragment: top-level `<Replace>` and `<Add>`
/// elements (CmdID optional, as Fleet and Intune write them), each with one or more
/// `<Item>`s (`Target/LocURI`, optional `Meta/Format`/`Meta/Type` in `syncml:metinf`, and
/// `Data`: text, escaped or CDATA XML, or raw XML kept verbatim). It is parsed by the same
/// hardened XML reader as device messages; nothing of its text is copied into what we send
/// except each Data value, which the SyncML writer escapes.
pub fn parse_syncml_fragment(fragment: &str) -> Result<Vec<Setting>, ProfileError> {
    if fragment.len() > MAX_PROFILE_BYTES {
        return Err(invalid(format!(
            "the profile is larger than {MAX_PROFILE_BYTES} bytes"
        )));
    }
    let body = fragment.trim();
    let body = body
        .strip_prefix("<?xml")
        .map_or(body, |rest| rest.split_once("?>").map_or("", |(_, b)| b));
    const OPEN: &str = "<Profile xmlns=\"SYNCML:SYNCML1.2\">";
    let doc = format!("{OPEN}{body}</Profile>");
    let root = xml::parse(doc.as_bytes()).map_err(|e| {
        invalid(format!(
            "the profile is not a well-formed SyncML fragment: {e}"
        ))
    })?;
    let mut settings = Vec::new();
    for cmd in root.elements() {
        let verb = match &*cmd.name {
            "Replace" => Verb::Replace,
            "Add" => Verb::Add,
            other => {
                return Err(invalid(format!(
                    "<{other}> is not allowed in a profile: only top-level <Replace> and <Add>"
                )));
            }
        };
        let cmd_meta = cmd.child_local("Meta");
        let mut items = 0;
        for el in cmd.elements() {
            match &*el.name {
                "CmdID" | "Meta" => continue,
                "Item" => {}
                "Replace" | "Add" | "Atomic" | "Sequence" | "Exec" | "Get" | "Delete" => {
                    return Err(invalid(format!(
                        "<{}> inside <{}> is not allowed: commands cannot be nested",
                        el.name, cmd.name
                    )));
                }
                other => {
                    return Err(invalid(format!(
                        "<{other}> is not allowed inside <{}>",
                        cmd.name
                    )));
                }
            }
            items += 1;
            let target = el
                .child_local("Target")
                .and_then(|t| t.child_local("LocURI"))
                .map(|l| l.text())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| invalid("every <Item> needs <Target><LocURI>"))?;
            let meta = el.child_local("Meta").or(cmd_meta);
            let meta_field = |name: &str| {
                meta.and_then(|m| m.child_local(name))
                    .map(|f| f.text())
                    .filter(|v| !v.is_empty())
            };
            let data = el.child_local("Data").map(|d| {
                if d.elements().next().is_some() {
                    doc[d.inner.clone()].trim().to_owned()
                } else {
                    d.raw_text()
                }
            });
            settings.push(Setting {
                verb,
                item: ItemSpec {
                    target,
                    format: meta_field("Format"),
                    type_: meta_field("Type"),
                    data,
                },
            });
        }
        if items == 0 {
            return Err(invalid(format!("<{}> has no <Item>", cmd.name)));
        }
    }
    Ok(settings)
}

/// Formats a setting may have.
pub const SETTING_FORMATS: &[&str] = &["chr", "int", "bool", "b64", "xml", "node"];

/// Checks settings against a scope: relative targets in the scope's half of the tree,
/// known formats, typed data that parses, no LocURI twice, bounded sizes.
pub fn validate_settings(scope: ProfileScope, settings: &[Setting]) -> Result<(), ProfileError> {
    if settings.is_empty() {
        return Err(invalid("a profile needs at least one setting"));
    }
    if settings.len() > MAX_SETTINGS {
        return Err(invalid(format!(
            "a profile has at most {MAX_SETTINGS} settings"
        )));
    }
    let mut total = 0;
    for (i, s) in settings.iter().enumerate() {
        let t = &s.item.target;
        validate_target(t).map_err(|e| invalid(e.to_string()))?;
        let user = t.starts_with("./User/");
        match (scope, user) {
            (ProfileScope::Device, true) => {
                return Err(invalid(format!(
                    "{t} is a user setting in a device profile"
                )));
            }
            (ProfileScope::User, false) => {
                return Err(invalid(format!(
                    "{t} is not a ./User/ setting, in a user profile"
                )));
            }
            _ => {}
        }
        if !matches!(s.verb, Verb::Replace | Verb::Add) {
            return Err(invalid(format!(
                "{t}: only Replace and Add settings are allowed"
            )));
        }
        match s.item.format.as_deref() {
            None => {}
            Some(f) if SETTING_FORMATS.contains(&f) => {}
            Some(f) => {
                return Err(invalid(format!(
                    "{t}: format must be one of {}, not {f:?}",
                    SETTING_FORMATS.join(", ")
                )));
            }
        }
        let data = s.item.data.as_deref();
        for (field, v) in [("type", s.item.type_.as_deref()), ("data", data)] {
            check_xml_text(field, v).map_err(|e| invalid(format!("{t}: {e}")))?;
        }
        if data.is_none() && s.item.format.as_deref() != Some("node") {
            return Err(invalid(format!("{t}: a setting needs <Data>")));
        }
        if s.item.format.as_deref() == Some("int")
            && data.is_some_and(|d| d.trim().parse::<i64>().is_err())
        {
            return Err(invalid(format!("{t}: format int needs integer data")));
        }
        if s.item.format.as_deref() == Some("bool")
            && !matches!(data.map(str::trim), Some("true" | "false"))
        {
            return Err(invalid(format!("{t}: format bool needs true or false")));
        }
        let len = data.map_or(0, str::len);
        if len > MAX_COMMAND_DATA {
            return Err(invalid(format!(
                "{t}: data is larger than {MAX_COMMAND_DATA} bytes"
            )));
        }
        total += len + t.len();
        if settings[..i].iter().any(|o| same_node(&o.item.target, t)) {
            return Err(invalid(format!("{t} is set twice")));
        }
    }
    if total > MAX_PROFILE_BYTES {
        return Err(invalid(format!(
            "the profile's settings are larger than {MAX_PROFILE_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Whether two LocURIs name the same node: `./Vendor/…` is `./Device/Vendor/…`.
pub fn same_node(a: &str, b: &str) -> bool {
    canonical_uri(a) == canonical_uri(b)
}

fn canonical_uri(u: &str) -> &str {
    let u = u.trim_end_matches('/');
    u.strip_prefix("./Device/")
        .map_or(u, |rest| rest)
        .trim_start_matches("./")
}

/// Validates a profile name: 1–128 printable characters.
pub fn validate_name(name: &str) -> Result<(), ProfileError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 128 || n.chars().any(char::is_control) {
        return Err(invalid("name must be 1 to 128 printable characters"));
    }
    Ok(())
}

/// Validates a group name: 1–64 of `A-Z a-z 0-9 - _ .` (it appears in URLs and keys).
pub fn validate_group_name(name: &str) -> Result<(), ProfileError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "group names are 1 to 64 characters of A-Z a-z 0-9 - _ .",
        ))
    }
}

/// Refuses a profile that sets a node another profile, assigned to possibly the same
/// devices, sets to a different value.
pub fn check_conflicts<'a>(
    profile: &Profile,
    others: impl IntoIterator<Item = &'a Profile>,
) -> Result<(), ProfileError> {
    for other in others {
        if other.id == profile.id || !profile.assignment.may_overlap(&other.assignment) {
            continue;
        }
        for s in &profile.settings {
            for o in &other.settings {
                if same_node(&s.item.target, &o.item.target)
                    && !values_match(
                        s.item.format.as_deref(),
                        s.item.data.as_deref(),
                        o.item.data.as_deref(),
                    )
                {
                    return Err(ProfileError::Conflict {
                        other: other.name.clone(),
                        target: s.item.target.clone(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Whether the value a device reports is the desired one: exact for scalars (after
/// trimming; case-insensitive for bool), and for XML data equal after parsing, whatever the
/// whitespace between elements and the order of attributes.
pub fn values_match(format: Option<&str>, desired: Option<&str>, reported: Option<&str>) -> bool {
    let (d, r) = (desired.unwrap_or("").trim(), reported.unwrap_or("").trim());
    match format {
        Some("bool") => d.eq_ignore_ascii_case(r),
        Some("int") => match (d.parse::<i64>(), r.parse::<i64>()) {
            (Ok(a), Ok(b)) => a == b,
            _ => d == r,
        },
        Some("xml") => d == r || xml_equivalent(d, r),
        _ => d == r || (looks_like_xml(d) && xml_equivalent(d, r)),
    }
}

fn looks_like_xml(s: &str) -> bool {
    s.starts_with('<') && s.ends_with('>')
}

/// XML equality ignoring insignificant whitespace and attribute order.
pub fn xml_equivalent(a: &str, b: &str) -> bool {
    let parse = |s: &str| {
        // Data of format xml arrives unescaped; a document may or may not have one root.
        xml::parse(format!("<r>{s}</r>").as_bytes()).ok()
    };
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => canonical(&x) == canonical(&y),
        _ => false,
    }
}

fn canonical(e: &xml::Element) -> String {
    let mut attrs: Vec<(String, String)> = e
        .attrs
        .iter()
        .filter(|a| !(a.ns.is_none() && &*a.name == "xmlns") && a.ns.as_deref() != Some(XMLNS_NS))
        .map(|a| {
            (
                format!("{}|{}", a.ns.as_deref().unwrap_or(""), a.name),
                a.value.clone(),
            )
        })
        .collect();
    attrs.sort();
    let mut out = format!("<{}|{}", e.ns.as_deref().unwrap_or(""), e.name);
    for (k, v) in attrs {
        out.push_str(&format!(" {k}={v:?}"));
    }
    out.push('>');
    out.push_str(e.text().trim());
    for c in e.elements() {
        out.push_str(&canonical(c));
    }
    out.push_str("</>");
    out
}

const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fleet_and_intune_style_fragments() {
        let f = r#"<Replace>
              <Item>
                <Meta><Format xmlns="syncml:metinf">int</Format></Meta>
                <Target><LocURI>./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera</LocURI></Target>
                <Data>0</Data>
              </Item>
            </Replace>
            <Add>
              <Item>
                <Target><LocURI>./Device/Vendor/MSFT/Policy/Config/ADMX_Install/Thing</LocURI></Target>
                <Meta><Format xmlns="syncml:metinf">chr</Format><Type xmlns="syncml:metinf">text/plain</Type></Meta>
                <Data><![CDATA[<enabled/><data id="x" value="1"/>]]></Data>
              </Item>
            </Add>"#;
        let s = parse_syncml_fragment(f).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].verb, Verb::Replace);
        assert_eq!(s[0].item.format.as_deref(), Some("int"));
        assert_eq!(s[0].item.data.as_deref(), Some("0"));
        assert_eq!(s[1].verb, Verb::Add);
        assert_eq!(s[1].item.type_.as_deref(), Some("text/plain"));
        assert_eq!(
            s[1].item.data.as_deref(),
            Some(r#"<enabled/><data id="x" value="1"/>"#)
        );
        validate_settings(ProfileScope::Device, &s).unwrap();
        // An XML declaration in front is fine.
        assert!(parse_syncml_fragment(&format!("<?xml version=\"1.0\"?>{f}")).is_ok());
    }

    #[test]
    fn refuses_what_a_profile_cannot_hold() {
        let item =
            "<Item><Target><LocURI>./Device/Vendor/MSFT/X</LocURI></Target><Data>1</Data></Item>";
        for (frag, needle) in [
            (format!("<Exec>{item}</Exec>"), "Exec"),
            (format!("<Get>{item}</Get>"), "Get"),
            (format!("<Delete>{item}</Delete>"), "Delete"),
            (
                format!("<Atomic><Replace>{item}</Replace></Atomic>"),
                "Atomic",
            ),
            ("<Replace><Item>".to_string(), "well-formed"),
            ("<Sequence/>".to_string(), "Sequence"),
            ("<Replace></Replace>".to_string(), "Item"),
        ] {
            let e = parse_syncml_fragment(&frag).unwrap_err().to_string();
            assert!(e.contains(needle), "{frag}: {e}");
        }
        let too_big = "x".repeat(MAX_PROFILE_BYTES + 1);
        assert!(parse_syncml_fragment(&too_big).is_err());
    }

    fn setting(target: &str, format: &str, data: &str) -> Setting {
        Setting {
            verb: Verb::Replace,
            item: ItemSpec {
                target: target.into(),
                format: Some(format.into()),
                type_: None,
                data: Some(data.into()),
            },
        }
    }

    #[test]
    fn refuses_characters_xml_cannot_carry() {
        let t = "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera";
        let bad = setting(t, "chr", "a\u{1}b");
        let e = validate_settings(ProfileScope::Device, &[bad])
            .unwrap_err()
            .to_string();
        assert!(e.contains("control character"), "{e}");
        let mut typed = setting(t, "chr", "ok");
        typed.item.type_ = Some("text/\u{7}".into());
        assert!(validate_settings(ProfileScope::Device, &[typed]).is_err());
    }

    #[test]
    fn validation() {
        use ProfileScope::*;
        let ok = setting(
            "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera",
            "int",
            "0",
        );
        assert!(validate_settings(Device, std::slice::from_ref(&ok)).is_ok());
        let cases = [
            (Device, setting("/Vendor/MSFT/X", "int", "0"), "relative"),
            (
                Device,
                setting("./User/Vendor/MSFT/X", "int", "0"),
                "user setting",
            ),
            (
                User,
                setting("./Device/Vendor/MSFT/X", "int", "0"),
                "./User/",
            ),
            (Device, setting("./Vendor/MSFT/X", "weird", "0"), "format"),
            (Device, setting("./Vendor/MSFT/X", "int", "zero"), "integer"),
            (
                Device,
                setting("./Vendor/MSFT/X", "bool", "1"),
                "true or false",
            ),
        ];
        for (scope, s, needle) in cases {
            let e = validate_settings(scope, &[s]).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        let twice = [
            setting("./Device/Vendor/MSFT/A", "int", "1"),
            setting("./Vendor/MSFT/A", "int", "1"),
        ];
        assert!(
            validate_settings(Device, &twice)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert!(validate_settings(Device, &[]).is_err());
    }

    fn profile(id: &str, include: &[&str], exclude: &[&str], s: Vec<Setting>) -> Profile {
        let now = OffsetDateTime::UNIX_EPOCH;
        Profile {
            id: id.into(),
            name: format!("name-{id}"),
            description: String::new(),
            scope: ProfileScope::Device,
            revision: 1,
            version: 1,
            settings: s,
            assignment: Assignment {
                include: include.iter().map(|s| s.to_string()).collect(),
                exclude: exclude.iter().map(|s| s.to_string()).collect(),
            },
            template: None,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn targeting_and_conflicts() {
        let a = Assignment {
            include: vec!["finance".into()],
            exclude: vec!["kiosk".into()],
        };
        assert!(a.targets(&["finance".into()]));
        assert!(!a.targets(&["finance".into(), "kiosk".into()]));
        assert!(!a.targets(&["hr".into()]));
        let all = Assignment {
            include: vec![ALL_GROUP.into()],
            exclude: vec![],
        };
        assert!(all.targets(&[]));
        assert!(!Assignment::default().targets(&["x".into()]));

        let cam = "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera";
        let p1 = profile("p1", &["finance"], &[], vec![setting(cam, "int", "0")]);
        let p2 = profile("p2", &["all"], &[], vec![setting(cam, "int", "1")]);
        let e = check_conflicts(&p1, [&p2]).unwrap_err();
        assert_eq!(
            e,
            ProfileError::Conflict {
                other: "name-p2".into(),
                target: cam.into()
            }
        );
        // Same value: no conflict. Disjoint groups: none. Excluded: none.
        let p3 = profile("p3", &["all"], &[], vec![setting(cam, "int", " 0")]);
        assert!(check_conflicts(&p1, [&p3]).is_ok());
        let p4 = profile("p4", &["hr"], &[], vec![setting(cam, "int", "1")]);
        assert!(check_conflicts(&p1, [&p4]).is_ok());
        let p5 = profile("p5", &["all"], &["finance"], vec![setting(cam, "int", "1")]);
        assert!(check_conflicts(&p1, [&p5]).is_ok());
        // Unassigned profiles conflict with nothing.
        let p6 = profile("p6", &[], &[], vec![setting(cam, "int", "1")]);
        assert!(check_conflicts(&p1, [&p6]).is_ok());
    }

    #[test]
    fn comparing_reported_values() {
        assert!(values_match(Some("int"), Some("1"), Some(" 1\n")));
        assert!(!values_match(Some("int"), Some("1"), Some("0")));
        assert!(values_match(Some("bool"), Some("true"), Some("True")));
        assert!(values_match(Some("chr"), Some("abc"), Some("abc")));
        assert!(!values_match(Some("chr"), Some("abc"), Some("abd")));
        assert!(!values_match(Some("chr"), Some("abc"), None));
        let a = r#"<WLANProfile xmlns="http://www.microsoft.com/networking/WLAN/profile/v1"><name>corp</name><SSIDConfig><SSID><name>corp</name></SSID></SSIDConfig></WLANProfile>"#;
        let b = "<WLANProfile xmlns=\"http://www.microsoft.com/networking/WLAN/profile/v1\">\n  <name>corp</name>\n  <SSIDConfig>\n    <SSID><name>corp</name></SSID>\n  </SSIDConfig>\n</WLANProfile>";
        assert!(values_match(Some("xml"), Some(a), Some(b)));
        let c = b.replace(
            "<name>corp</name>\n  <SSIDConfig>",
            "<name>guest</name>\n  <SSIDConfig>",
        );
        assert!(!values_match(Some("xml"), Some(a), Some(&c)));
        assert!(xml_equivalent(
            r#"<enabled/><data id="x" value="1"/>"#,
            r#"<enabled />  <data value="1" id="x"/>"#
        ));
        assert!(!xml_equivalent(
            r#"<data id="x" value="1"/>"#,
            r#"<data id="x" value="2"/>"#
        ));
    }
}
