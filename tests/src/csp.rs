//! A modelled CSP tree for the emulated Windows device, so configuration profiles can be
//! tested end to end against the answers a real device gives (PROTOCOL §8 "Status codes",
//! "Atomic on Windows"; §9 "Profiles and verification").
//!
//! Nodes are keyed by a normalized LocURI (see [`normalize`]): `./Device/Vendor/MSFT/X` and
//! `./Vendor/MSFT/X` are one device node, `./User/…` is the user scope and stays distinct.
//! Leaves hold a value and a [`Format`]; interior nodes exist implicitly above leaves (or
//! explicitly, when added with Format `node`). Only nodes under a known CSP root exist:
//! anything else is 404 for every verb.
//!
//! What the model does, per verb (first matching rule wins):
//!
//! | verb | rule | code |
//! |---|---|---|
//! | any | not under a known root | 404 |
//! | Add, Replace, Delete, Exec | node (or an ancestor) configured unsupported | 405 |
//! | Get | leaf: its value; interior node: child names joined by `/`, Format `node` | 200 |
//! | Get | missing (e.g. a Policy never set) | 404 |
//! | Add | node exists (leaf, interior or root) | 418 |
//! | Replace | interior or root node, or Format `node` | 405 |
//! | Replace | missing leaf under a strict root (no implicit Add) | 404 |
//! | Add, Replace | unknown Format | 415 |
//! | Add, Replace | Format differs from the node's declared one, value not of its Format (`int`, `bool` `true`/`false`, `b64`), value outside the node's range | 400 |
//! | Add, Replace | otherwise: sets the node | 200 |
//! | Delete | root node, undeletable node, or a node with an undeletable node under it | 405 |
//! | Delete | missing | 404 |
//! | Delete | otherwise: removes the node and its subtree | 200 |
//! | Exec | recorded in [`CspTree::execs`] | 200 |
//!
//! A command with several items runs each; its status is the first failure, else 200 (a
//! Get's Results are sent only when every item was found). An item with `MoreData` is a
//! chunk of a large object: answered 213 and buffered; the last chunk runs the command on
//! the whole value (424 if it differs from the first chunk's `Meta/Size`).
//!
//! Atomic runs its commands on a copy: if all succeed the copy is kept (Atomic 200, each
//! inner its own code); otherwise nothing changes, the Atomic gets 507, failed inner
//! commands keep their codes and the ones that had succeeded get 216. Inside an Atomic a
//! Get gets 500, a nested Atomic or Sequence 500 (the commands inside it 215), and a
//! Replace of a node Added earlier in the same Atomic 500 (Windows does not support it;
//! Learn gives no code): each makes the Atomic fail. Sequence runs its commands in order,
//! each with its own status (the Sequence 200; containers nested in it 500).
//!
//! Writes under `Vendor/MSFT/Policy/Config/` (either scope) are mirrored to
//! `Vendor/MSFT/Policy/Result/` (read-only), as if this MDM were the only policy source.
//! A Delete removes the Result node too, where a real device would report the policy's
//! default: `set` one if a test needs that.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use winmdm_wire::syncml::{Command, Container, ContainerKind, Item, ItemCommand, ItemVerb, Meta};

/// The status codes the tree answers with.
pub mod code {
    pub const OK: u16 = 200;
    pub const CHUNK_ACCEPTED: u16 = 213;
    pub const NOT_EXECUTED: u16 = 215;
    pub const ROLLED_BACK: u16 = 216;
    pub const BAD_REQUEST: u16 = 400;
    pub const NOT_FOUND: u16 = 404;
    pub const NOT_ALLOWED: u16 = 405;
    pub const UNSUPPORTED_FORMAT: u16 = 415;
    pub const ALREADY_EXISTS: u16 = 418;
    pub const SIZE_MISMATCH: u16 = 424;
    pub const COMMAND_FAILED: u16 = 500;
    pub const ATOMIC_FAILED: u16 = 507;
}

const POLICY_CONFIG: &str = "Vendor/MSFT/Policy/Config";
const POLICY_RESULT: &str = "Vendor/MSFT/Policy/Result";
const USER: &str = "User";

/// `Meta/Format` of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    Chr,
    Int,
    Bool,
    B64,
    Xml,
    Node,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Chr => "chr",
            Format::Int => "int",
            Format::Bool => "bool",
            Format::B64 => "b64",
            Format::Xml => "xml",
            Format::Node => "node",
        }
    }

    /// Case-insensitive; `None` for formats the model does not know (`float`, `date`, …).
    pub fn parse(s: &str) -> Option<Self> {
        [
            Format::Chr,
            Format::Int,
            Format::Bool,
            Format::B64,
            Format::Xml,
            Format::Node,
        ]
        .into_iter()
        .find(|f| f.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// A stored node: a leaf's value, or an explicit interior node (Format `node`, empty value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The value as received in `Data` (raw XML verbatim, or the unescaped text).
    pub value: String,
    pub format: Format,
}

/// An `Exec` the device ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCall {
    /// The normalized node.
    pub uri: String,
    pub data: Option<String>,
}

/// The device's answer to one command: the Status to send and, for a successful Get, the
/// Results items (`Source` = the Get's target as sent, `Meta/Format` the node's format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The command's CmdID.
    pub cmd_ref: String,
    /// The command's element name (`Status/Cmd`).
    pub cmd: &'static str,
    pub code: u16,
    pub results: Option<Vec<Item>>,
}

impl Answer {
    fn new(cmd_ref: &str, cmd: &'static str, code: u16) -> Self {
        Self {
            cmd_ref: cmd_ref.to_owned(),
            cmd,
            code,
            results: None,
        }
    }

    /// Whether this answers an Atomic or a Sequence.
    pub fn is_container(&self) -> bool {
        matches!(self.cmd, "Atomic" | "Sequence")
    }
}

/// The node a LocURI names: a leading `./` and trailing `/` removed, the `Device/` scope
/// prefix dropped (the device scope is the default), `User/…` kept.
pub fn normalize(uri: &str) -> String {
    let s = uri.trim();
    let s = if s == "." {
        ""
    } else {
        s.strip_prefix("./").unwrap_or(s)
    };
    let s = s.trim_end_matches('/');
    let s = if s == "Device" {
        ""
    } else {
        s.strip_prefix("Device/").unwrap_or(s)
    };
    s.to_owned()
}

/// Whether `key` is `prefix` or below it.
fn under(key: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || key == prefix
        || (key.starts_with(prefix) && key.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// `key` without its `User/` scope, if it has one.
fn unscoped(key: &str) -> Option<&str> {
    key.strip_prefix("User/")
        .or_else(|| (key == USER).then_some(""))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RootConfig {
    /// Replace of a missing leaf creates it (Policy CSP); strict roots answer 404.
    implicit_add: bool,
}

/// A large object being received in chunks.
#[derive(Debug, Clone)]
struct PendingChunks {
    verb: ItemVerb,
    key: String,
    item: Item,
    cmd_meta: Option<Meta>,
    data: String,
    size: Option<u64>,
}

/// The device's CSP tree and how its CSPs behave.
#[derive(Debug, Clone)]
pub struct CspTree {
    nodes: BTreeMap<String, Node>,
    roots: BTreeMap<String, RootConfig>,
    undeletable: BTreeSet<String>,
    unsupported: BTreeSet<String>,
    ranges: BTreeMap<String, RangeInclusive<i64>>,
    formats: BTreeMap<String, Format>,
    execs: Vec<ExecCall>,
    mirror_policy_results: bool,
    pending: Option<PendingChunks>,
}

impl Default for CspTree {
    fn default() -> Self {
        Self::new()
    }
}

impl CspTree {
    /// A tree with no roots (every command 404) and no nodes.
    pub fn empty() -> Self {
        Self {
            nodes: BTreeMap::new(),
            roots: BTreeMap::new(),
            undeletable: BTreeSet::new(),
            unsupported: BTreeSet::new(),
            ranges: BTreeMap::new(),
            formats: BTreeMap::new(),
            execs: Vec::new(),
            mirror_policy_results: true,
            pending: None,
        }
    }

    /// A Windows device's usual roots: `Vendor/MSFT/{Policy/Config, Policy/Result,
    /// BitLocker, DeviceLock, Firewall, Defender, WiFi, DMClient, Test}`, `DevDetail`,
    /// `DevInfo` (all with implicit Add on Replace) and the strict `Vendor/MSFT/Test/Strict`.
    /// `Policy/Result`, `DevInfo` and `DevDetail` are read-only (405 on writes). DevInfo
    /// holds what [`crate::dm::DmClient::package1`] reports, DevDetail an OS build.
    pub fn new() -> Self {
        let mut t = Self::empty();
        for root in [
            "./Vendor/MSFT/Policy/Config/",
            "./Vendor/MSFT/Policy/Result/",
            "./Vendor/MSFT/BitLocker/",
            "./Vendor/MSFT/DeviceLock/",
            "./Vendor/MSFT/Firewall/",
            "./Vendor/MSFT/Defender/",
            "./Vendor/MSFT/WiFi/",
            "./DevDetail/",
            "./DevInfo/",
            "./Vendor/MSFT/DMClient/",
            "./Vendor/MSFT/Test/",
        ] {
            t.add_root(root);
        }
        t.strict_root("./Vendor/MSFT/Test/Strict/");
        for ro in [
            "./Vendor/MSFT/Policy/Result",
            "./User/Vendor/MSFT/Policy/Result",
            "./DevInfo",
            "./DevDetail",
        ] {
            t.set_unsupported(ro);
        }
        for (uri, v) in [
            ("./DevInfo/Man", "Contoso Ltd."),
            ("./DevInfo/Mod", "Surface Laptop 7"),
            ("./DevInfo/DmV", "1.3"),
            ("./DevInfo/Lang", "en-US"),
            ("./DevDetail/SwV", "10.0.26100.2605"),
            ("./DevDetail/OEM", "Contoso Ltd."),
            ("./DevDetail/DevTyp", "Surface Laptop 7"),
            ("./DevDetail/Ext/Microsoft/OSPlatform", "Windows 11 Pro"),
        ] {
            t.set(uri, v, Format::Chr);
        }
        t
    }

    /// [`CspTree::new`] with `DevInfo/DevId` and `DMClient/HWDevID` of this device.
    pub fn for_device(device_id: &str, hw_dev_id: &str) -> Self {
        let mut t = Self::new();
        t.set("./DevInfo/DevId", device_id, Format::Chr);
        t.set("./Vendor/MSFT/DMClient/HWDevID", hw_dev_id, Format::Chr);
        // The rest of what a Windows 11 machine answers to the `inventory` action.
        t.add_root("./Vendor/MSFT/DeviceStatus/");
        let name = format!("DESKTOP-{}", &device_id.get(..7).unwrap_or(device_id));
        let serial = Self::serial_number(hw_dev_id);
        for (uri, v) in [
            ("./DevDetail/HwV", "1.0"),
            ("./DevDetail/FwV", "UEFI 14.2.0"),
            ("./DevDetail/Ext/Microsoft/DeviceName", name.as_str()),
            ("./DevDetail/Ext/Microsoft/ProcessorArchitecture", "9"),
            ("./DevDetail/Ext/Microsoft/TotalRAM", "16384"),
            ("./DevDetail/Ext/Microsoft/TotalStorage", "512000"),
            (
                "./DevDetail/Ext/Microsoft/SMBIOSSerialNumber",
                serial.as_str(),
            ),
            ("./Vendor/MSFT/DeviceStatus/OS/Edition", "48"),
            ("./Vendor/MSFT/DeviceStatus/OS/Mode", "0"),
            (
                "./Vendor/MSFT/DeviceStatus/Compliance/EncryptionCompliance",
                "1",
            ),
        ] {
            t.set(uri, v, Format::Chr);
        }
        t
    }

    /// The SMBIOS serial number the emulated device reports: made from its HWDevID.
    pub fn serial_number(hw_dev_id: &str) -> String {
        let tail: String = hw_dev_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(10)
            .collect();
        format!("SN{}", tail.to_ascii_uppercase())
    }

    // --- configuration ---

    /// Makes `root` (e.g. `./Vendor/MSFT/Firewall/`) a known CSP root, in both scopes
    /// (a `./User/…` root only in the user scope); Replace of a missing leaf adds it. An
    /// existing root keeps its strictness.
    pub fn add_root(&mut self, root: &str) -> &mut Self {
        self.roots
            .entry(normalize(root))
            .or_insert(RootConfig { implicit_add: true });
        self
    }

    /// Makes `root` a known root where Replace of a missing leaf is 404 (no implicit Add);
    /// the innermost root of a node decides.
    pub fn strict_root(&mut self, root: &str) -> &mut Self {
        self.roots.insert(
            normalize(root),
            RootConfig {
                implicit_add: false,
            },
        );
        self
    }

    /// Forgets a root (the CSP is absent on this device: everything under it is 404).
    pub fn remove_root(&mut self, root: &str) -> &mut Self {
        self.roots.remove(&normalize(root));
        self
    }

    /// Delete of this node, anything under it or any of its ancestors answers 405.
    pub fn set_undeletable(&mut self, uri: &str) -> &mut Self {
        self.undeletable.insert(normalize(uri));
        self
    }

    /// Add, Replace, Delete and Exec of this node or anything under it answer 405 (e.g. a
    /// policy not supported on this edition); Get still answers.
    pub fn set_unsupported(&mut self, uri: &str) -> &mut Self {
        self.unsupported.insert(normalize(uri));
        self
    }

    /// Undoes `set_unsupported` (an edition upgrade, a fixed device).
    pub fn set_supported(&mut self, uri: &str) -> &mut Self {
        self.unsupported.remove(&normalize(uri));
        self
    }

    /// This node accepts only integers in `range` (400 otherwise).
    pub fn set_range(&mut self, uri: &str, range: RangeInclusive<i64>) -> &mut Self {
        self.ranges.insert(normalize(uri), range);
        self
    }

    /// This node's format, as its CSP's DDF declares it: an Add/Replace with another
    /// `Meta/Format` answers 400, and one without is validated as `format`.
    pub fn set_format(&mut self, uri: &str, format: Format) -> &mut Self {
        self.formats.insert(normalize(uri), format);
        self
    }

    /// Whether writes under `Policy/Config` are mirrored to `Policy/Result` (on by default).
    pub fn set_policy_result_mirror(&mut self, on: bool) -> &mut Self {
        self.mirror_policy_results = on;
        self
    }

    // --- the test's side: changes behind the server's back, and reads ---

    /// Sets a node directly (no root, format or range checks; `Policy/Config` is mirrored).
    pub fn set(&mut self, uri: &str, value: &str, format: Format) -> &mut Self {
        let key = normalize(uri);
        let node = Node {
            value: if format == Format::Node {
                String::new()
            } else {
                value.to_owned()
            },
            format,
        };
        self.store(key, node);
        self
    }

    /// Removes a node and its subtree directly; whether anything was there.
    pub fn remove(&mut self, uri: &str) -> bool {
        self.remove_subtree(&normalize(uri))
    }

    /// A stored node (a leaf, or an interior node added explicitly).
    pub fn get(&self, uri: &str) -> Option<&Node> {
        self.nodes.get(&normalize(uri))
    }

    /// A stored leaf's value.
    pub fn value(&self, uri: &str) -> Option<&str> {
        self.get(uri)
            .filter(|n| n.format != Format::Node)
            .map(|n| n.value.as_str())
    }

    /// Stored nodes at or under `prefix`, by normalized key, in key order.
    pub fn list(&self, prefix: &str) -> Vec<(&str, &Node)> {
        let p = normalize(prefix);
        self.nodes
            .iter()
            .filter(|(k, _)| under(k, &p))
            .map(|(k, n)| (k.as_str(), n))
            .collect()
    }

    /// The Execs the device ran (rolled-back Atomics excluded), in order.
    pub fn execs(&self) -> &[ExecCall] {
        &self.execs
    }

    // --- commands ---

    /// Runs one server command and returns the answers it gets: one per command, the
    /// command's first, then one for each command inside an Atomic or Sequence. A Status
    /// gets none; an Alert or Results 200.
    pub fn apply(&mut self, cmd: &Command) -> Vec<Answer> {
        match cmd {
            Command::Status(_) => Vec::new(),
            Command::Alert(a) => vec![Answer::new(&a.cmd_id, "Alert", code::OK)],
            Command::Results(r) => vec![Answer::new(&r.cmd_id, "Results", code::OK)],
            Command::Item(ic) => vec![self.apply_item_command(ic)],
            Command::Container(ct) => match ct.kind {
                ContainerKind::Atomic => self.apply_atomic(ct),
                ContainerKind::Sequence => self.apply_sequence(ct),
            },
        }
    }

    /// Runs commands in order ([`CspTree::apply`] on each).
    pub fn apply_all<'a>(&mut self, cmds: impl IntoIterator<Item = &'a Command>) -> Vec<Answer> {
        cmds.into_iter().flat_map(|c| self.apply(c)).collect()
    }

    fn apply_atomic(&mut self, ct: &Container) -> Vec<Answer> {
        let mut copy = self.clone();
        let mut inner = Vec::new();
        // Indexes in `inner` of the commands that succeeded (to be marked 216).
        let mut succeeded = Vec::new();
        let mut failed = false;
        let mut added = BTreeSet::new();
        for c in &ct.commands {
            match c {
                Command::Status(_) => {}
                Command::Container(nested) => {
                    failed = true;
                    inner.extend(not_executed_nested(nested));
                }
                Command::Item(ic) if ic.verb == ItemVerb::Get => {
                    failed = true;
                    inner.push(Answer::new(&ic.cmd_id, "Get", code::COMMAND_FAILED));
                }
                Command::Item(ic)
                    if ic.verb == ItemVerb::Replace
                        && ic
                            .items
                            .iter()
                            .any(|i| added.contains(&normalize(target(i)))) =>
                {
                    failed = true;
                    inner.push(Answer::new(&ic.cmd_id, "Replace", code::COMMAND_FAILED));
                }
                c => {
                    let answers = copy.apply(c);
                    for a in answers {
                        if a.code == code::OK {
                            succeeded.push(inner.len());
                            if let Command::Item(ic) = c
                                && ic.verb == ItemVerb::Add
                            {
                                added.extend(ic.items.iter().map(|i| normalize(target(i))));
                            }
                        } else if !is_success(a.code) {
                            failed = true;
                        }
                        inner.push(a);
                    }
                }
            }
        }
        let outer = if failed {
            for i in succeeded {
                inner[i].code = code::ROLLED_BACK;
            }
            code::ATOMIC_FAILED
        } else {
            *self = copy;
            code::OK
        };
        let mut out = vec![Answer::new(&ct.cmd_id, "Atomic", outer)];
        out.extend(inner);
        out
    }

    fn apply_sequence(&mut self, ct: &Container) -> Vec<Answer> {
        let mut out = vec![Answer::new(&ct.cmd_id, "Sequence", code::OK)];
        for c in &ct.commands {
            match c {
                Command::Container(nested) => out.extend(not_executed_nested(nested)),
                c => out.extend(self.apply(c)),
            }
        }
        out
    }

    fn apply_item_command(&mut self, ic: &ItemCommand) -> Answer {
        let name = ic.verb.as_str();
        if ic.items.is_empty() {
            return Answer::new(&ic.cmd_id, name, code::BAD_REQUEST);
        }
        if ic.verb != ItemVerb::Get
            && let [item] = ic.items.as_slice()
        {
            match self.chunk(ic, item) {
                Chunk::Buffered => return Answer::new(&ic.cmd_id, name, code::CHUNK_ACCEPTED),
                Chunk::SizeMismatch => return Answer::new(&ic.cmd_id, name, code::SIZE_MISMATCH),
                Chunk::Whole(whole) => {
                    let (item, cmd_meta) = *whole;
                    let c = self.apply_item(ic.verb, &item, cmd_meta.as_ref());
                    return Answer::new(&ic.cmd_id, name, c);
                }
                Chunk::NotChunked => {}
            }
        }
        let mut first_failure = None;
        let mut results = Vec::new();
        for item in &ic.items {
            let c = if ic.verb == ItemVerb::Get {
                match self.get_item(item) {
                    Ok(r) => {
                        results.push(r);
                        code::OK
                    }
                    Err(c) => c,
                }
            } else {
                self.apply_item(ic.verb, item, ic.meta.as_ref())
            };
            if c != code::OK && first_failure.is_none() {
                first_failure = Some(c);
            }
        }
        let mut a = Answer::new(&ic.cmd_id, name, first_failure.unwrap_or(code::OK));
        if ic.verb == ItemVerb::Get && first_failure.is_none() {
            a.results = Some(results);
        }
        a
    }

    /// Buffers chunks of a large object; the last one yields the whole item.
    fn chunk(&mut self, ic: &ItemCommand, item: &Item) -> Chunk {
        let key = normalize(target(item));
        let continues = self
            .pending
            .as_ref()
            .is_some_and(|p| p.verb == ic.verb && p.key == key);
        let piece = item.data.as_deref().unwrap_or("");
        if item.more_data {
            match self.pending.as_mut() {
                Some(p) if continues => p.data.push_str(piece),
                _ => {
                    self.pending = Some(PendingChunks {
                        verb: ic.verb,
                        key,
                        item: item.clone(),
                        cmd_meta: ic.meta.clone(),
                        data: piece.to_owned(),
                        size: item
                            .meta
                            .as_ref()
                            .and_then(|m| m.size)
                            .or_else(|| ic.meta.as_ref().and_then(|m| m.size)),
                    })
                }
            }
            return Chunk::Buffered;
        }
        if !continues {
            return Chunk::NotChunked;
        }
        let Some(mut p) = self.pending.take() else {
            return Chunk::NotChunked;
        };
        p.data.push_str(piece);
        if p.size.is_some_and(|s| s != p.data.len() as u64) {
            return Chunk::SizeMismatch;
        }
        p.item.data = Some(p.data);
        p.item.more_data = false;
        Chunk::Whole(Box::new((p.item, p.cmd_meta)))
    }

    fn get_item(&self, item: &Item) -> Result<Item, u16> {
        let uri = target(item);
        if uri.is_empty() {
            return Err(code::BAD_REQUEST);
        }
        let key = normalize(uri);
        self.root_of(&key).ok_or(code::NOT_FOUND)?;
        let (value, format) = match self.nodes.get(&key) {
            Some(n) if n.format != Format::Node => (n.value.clone(), n.format),
            _ if self.is_interior(&key) => (self.children(&key).join("/"), Format::Node),
            _ => return Err(code::NOT_FOUND),
        };
        Ok(Item {
            source: Some(uri.to_owned()),
            meta: Some(Meta {
                format: Some(format.as_str().into()),
                type_: (format != Format::Node).then(|| "text/plain".into()),
                ..Meta::default()
            }),
            data: Some(value),
            ..Item::default()
        })
    }

    /// Add, Replace, Delete or Exec of one item; its status code.
    fn apply_item(&mut self, verb: ItemVerb, item: &Item, cmd_meta: Option<&Meta>) -> u16 {
        match self.try_item(verb, item, cmd_meta) {
            Ok(()) => code::OK,
            Err(c) => c,
        }
    }

    fn try_item(
        &mut self,
        verb: ItemVerb,
        item: &Item,
        cmd_meta: Option<&Meta>,
    ) -> Result<(), u16> {
        let uri = target(item);
        if uri.is_empty() {
            return Err(code::BAD_REQUEST);
        }
        let key = normalize(uri);
        let root = self.root_of(&key).ok_or(code::NOT_FOUND)?;
        if self.unsupported.iter().any(|u| under(&key, u)) {
            return Err(code::NOT_ALLOWED);
        }
        match verb {
            ItemVerb::Get => unreachable!("Gets are answered by get_item"),
            ItemVerb::Add => {
                if self.exists(&key) {
                    return Err(code::ALREADY_EXISTS);
                }
                let node = self.validated(&key, item, cmd_meta)?;
                self.store(key, node);
            }
            ItemVerb::Replace => {
                if self.is_interior(&key) {
                    return Err(code::NOT_ALLOWED);
                }
                if !self.nodes.contains_key(&key) && !root.implicit_add {
                    return Err(code::NOT_FOUND);
                }
                let node = self.validated(&key, item, cmd_meta)?;
                if node.format == Format::Node {
                    return Err(code::NOT_ALLOWED);
                }
                self.store(key, node);
            }
            ItemVerb::Delete => {
                let blocked = self.is_root(&key)
                    || self
                        .undeletable
                        .iter()
                        .any(|u| under(&key, u) || under(u, &key));
                if blocked {
                    return Err(code::NOT_ALLOWED);
                }
                if !self.remove_subtree(&key) {
                    return Err(code::NOT_FOUND);
                }
            }
            ItemVerb::Exec => self.execs.push(ExecCall {
                uri: key,
                data: item.data.clone(),
            }),
        }
        Ok(())
    }

    /// The node an Add or Replace would store, or its error code.
    fn validated(&self, key: &str, item: &Item, cmd_meta: Option<&Meta>) -> Result<Node, u16> {
        let given = item
            .meta
            .as_ref()
            .and_then(|m| m.format.as_deref())
            .or_else(|| cmd_meta.and_then(|m| m.format.as_deref()));
        let given = match given {
            Some(f) => Some(Format::parse(f).ok_or(code::UNSUPPORTED_FORMAT)?),
            None => None,
        };
        let declared = self.formats.get(key).copied();
        if let (Some(g), Some(d)) = (given, declared)
            && g != d
        {
            return Err(code::BAD_REQUEST);
        }
        let existing = self
            .nodes
            .get(key)
            .map(|n| n.format)
            .filter(|f| *f != Format::Node);
        let format = given.or(declared).or(existing).unwrap_or(Format::Chr);
        let value = item.data.clone().unwrap_or_default();
        let valid = match format {
            Format::Int => value.parse::<i64>().is_ok(),
            Format::Bool => value == "true" || value == "false",
            Format::B64 => {
                let compact: String = value.split_ascii_whitespace().collect();
                B64.decode(compact).is_ok()
            }
            Format::Chr | Format::Xml | Format::Node => true,
        };
        if !valid {
            return Err(code::BAD_REQUEST);
        }
        if format != Format::Node
            && let Some(range) = self.ranges.get(key)
            && !value.parse::<i64>().is_ok_and(|n| range.contains(&n))
        {
            return Err(code::BAD_REQUEST);
        }
        Ok(Node {
            value: if format == Format::Node {
                String::new()
            } else {
                value
            },
            format,
        })
    }

    // --- the tree ---

    /// The innermost root `key` is at or under (device roots apply to the user scope too).
    fn root_of(&self, key: &str) -> Option<RootConfig> {
        let mut best: Option<(usize, RootConfig)> = None;
        let mut consider = |k: &str| {
            for (r, cfg) in &self.roots {
                if under(k, r) && best.is_none_or(|(len, _)| r.len() > len) {
                    best = Some((r.len(), *cfg));
                }
            }
        };
        consider(key);
        if let Some(rest) = unscoped(key) {
            consider(rest);
        }
        best.map(|(_, c)| c)
    }

    fn is_root(&self, key: &str) -> bool {
        self.roots.contains_key(key) || unscoped(key).is_some_and(|k| self.roots.contains_key(k))
    }

    fn has_children(&self, key: &str) -> bool {
        let p = format!("{key}/");
        self.nodes
            .range(p.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&p))
    }

    /// Names of the direct children of `key`, sorted.
    fn children(&self, key: &str) -> Vec<String> {
        let p = format!("{key}/");
        let mut names: Vec<String> = self
            .nodes
            .range(p.clone()..)
            .take_while(|(k, _)| k.starts_with(&p))
            .map(|(k, _)| k[p.len()..].split('/').next().unwrap_or("").to_owned())
            .collect();
        names.dedup();
        names
    }

    fn is_interior(&self, key: &str) -> bool {
        self.nodes
            .get(key)
            .is_some_and(|n| n.format == Format::Node)
            || self.has_children(key)
            || self.is_root(key)
    }

    fn exists(&self, key: &str) -> bool {
        self.nodes.contains_key(key) || self.is_interior(key)
    }

    fn store(&mut self, key: String, node: Node) {
        if node.format != Format::Node
            && let Some(r) = self.result_key(&key)
        {
            self.nodes.insert(r, node.clone());
        }
        self.nodes.insert(key, node);
    }

    fn remove_subtree(&mut self, key: &str) -> bool {
        if let Some(r) = self.result_key(key) {
            self.remove_keys(&r);
        }
        self.remove_keys(key)
    }

    fn remove_keys(&mut self, key: &str) -> bool {
        let doomed: Vec<String> = self
            .nodes
            .keys()
            .filter(|k| under(k, key))
            .cloned()
            .collect();
        for k in &doomed {
            self.nodes.remove(k);
        }
        !doomed.is_empty()
    }

    /// The `Policy/Result` node mirroring a `Policy/Config` one.
    fn result_key(&self, key: &str) -> Option<String> {
        if !self.mirror_policy_results {
            return None;
        }
        let (scope, rest) = match unscoped(key) {
            Some(rest) => ("User/", rest),
            None => ("", key),
        };
        let tail = rest.strip_prefix(POLICY_CONFIG)?.strip_prefix('/')?;
        Some(format!("{scope}{POLICY_RESULT}/{tail}"))
    }
}

enum Chunk {
    NotChunked,
    Buffered,
    SizeMismatch,
    Whole(Box<(Item, Option<Meta>)>),
}

/// The node an item addresses: its Target (server commands), else its Source.
fn target(item: &Item) -> &str {
    item.target
        .as_deref()
        .or(item.source.as_deref())
        .unwrap_or("")
}

fn is_success(code: u16) -> bool {
    (200..300).contains(&code)
}

/// A container nested in another: 500, everything inside it 215.
fn not_executed_nested(ct: &Container) -> Vec<Answer> {
    fn inside(c: &Command, out: &mut Vec<Answer>) {
        match c {
            Command::Status(_) => {}
            Command::Container(ct) => {
                out.push(Answer::new(&ct.cmd_id, c.name(), code::NOT_EXECUTED));
                ct.commands.iter().for_each(|c| inside(c, out));
            }
            c => out.push(Answer::new(c.cmd_id(), c.name(), code::NOT_EXECUTED)),
        }
    }
    let mut out = vec![Answer::new(
        &ct.cmd_id,
        ct.kind.as_str(),
        code::COMMAND_FAILED,
    )];
    ct.commands.iter().for_each(|c| inside(c, &mut out));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dm::{ClientMode, DmClient, Reply};
    use winmdm_wire::syncml::{Alert, Location, SyncHdr, SyncMl};

    fn item(uri: &str, format: Option<&str>, data: Option<&str>) -> Item {
        Item {
            target: Some(uri.into()),
            meta: format.map(Meta::format),
            data: data.map(Into::into),
            ..Item::default()
        }
    }

    fn cmd(verb: ItemVerb, id: &str, items: Vec<Item>) -> Command {
        Command::Item(ItemCommand {
            verb,
            cmd_id: id.into(),
            meta: None,
            items,
        })
    }

    fn get(id: &str, uri: &str) -> Command {
        cmd(ItemVerb::Get, id, vec![item(uri, None, None)])
    }
    fn add(id: &str, uri: &str, format: &str, data: &str) -> Command {
        cmd(ItemVerb::Add, id, vec![item(uri, Some(format), Some(data))])
    }
    fn replace(id: &str, uri: &str, format: &str, data: &str) -> Command {
        cmd(
            ItemVerb::Replace,
            id,
            vec![item(uri, Some(format), Some(data))],
        )
    }
    fn delete(id: &str, uri: &str) -> Command {
        cmd(ItemVerb::Delete, id, vec![item(uri, None, None)])
    }
    fn exec(id: &str, uri: &str, data: &str) -> Command {
        cmd(ItemVerb::Exec, id, vec![item(uri, Some("chr"), Some(data))])
    }
    fn container(kind: ContainerKind, id: &str, commands: Vec<Command>) -> Command {
        Command::Container(Container {
            kind,
            cmd_id: id.into(),
            meta: None,
            commands,
        })
    }

    /// The single answer's code.
    fn code_of(t: &mut CspTree, c: Command) -> u16 {
        let a = t.apply(&c);
        assert_eq!(a.len(), 1, "{a:?}");
        a[0].code
    }

    fn codes(a: &[Answer]) -> Vec<(&str, &str, u16)> {
        a.iter()
            .map(|a| (a.cmd_ref.as_str(), a.cmd, a.code))
            .collect()
    }

    const CAMERA: &str = "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera";

    #[test]
    fn normalize_merges_device_scope_and_keeps_user_scope() {
        assert_eq!(normalize("./Device/Vendor/MSFT/X"), "Vendor/MSFT/X");
        assert_eq!(normalize("./Vendor/MSFT/X/"), "Vendor/MSFT/X");
        assert_eq!(normalize("Vendor/MSFT/X"), "Vendor/MSFT/X");
        assert_eq!(normalize("./User/Vendor/MSFT/X"), "User/Vendor/MSFT/X");
        let mut t = CspTree::new();
        t.set("./Device/Vendor/MSFT/Test/A", "1", Format::Int);
        assert_eq!(t.value("./Vendor/MSFT/Test/A"), Some("1"));
        assert_eq!(t.value("./User/Vendor/MSFT/Test/A"), None);
        t.set("./User/Vendor/MSFT/Test/A", "2", Format::Int);
        assert_eq!(t.value("./Vendor/MSFT/Test/A"), Some("1"));
        assert_eq!(t.value("./User/Vendor/MSFT/Test/A"), Some("2"));
    }

    #[test]
    fn get_returns_the_value_and_format_or_404() {
        let mut t = CspTree::new();
        t.set("./Vendor/MSFT/Test/N", "42", Format::Int);
        let a = t.apply(&get("3", "./Device/Vendor/MSFT/Test/N"));
        assert_eq!(codes(&a), [("3", "Get", 200)]);
        let r = a[0].results.as_ref().expect("results");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].source.as_deref(), Some("./Device/Vendor/MSFT/Test/N"));
        assert_eq!(r[0].data.as_deref(), Some("42"));
        assert_eq!(r[0].meta.as_ref().unwrap().format.as_deref(), Some("int"));
        // Missing leaf, and a policy never set.
        assert_eq!(code_of(&mut t, get("4", "./Vendor/MSFT/Test/Other")), 404);
        assert_eq!(code_of(&mut t, get("5", CAMERA)), 404);
        assert!(t.apply(&get("5", CAMERA))[0].results.is_none());
    }

    #[test]
    fn get_of_an_interior_node_lists_its_children() {
        let mut t = CspTree::new();
        t.set("./Vendor/MSFT/Test/Area/A", "1", Format::Int);
        t.set("./Vendor/MSFT/Test/Area/B/C", "x", Format::Chr);
        let a = t.apply(&get("1", "./Vendor/MSFT/Test/Area"));
        assert_eq!(a[0].code, 200);
        let r = &a[0].results.as_ref().unwrap()[0];
        assert_eq!(r.data.as_deref(), Some("A/B"));
        assert_eq!(r.meta.as_ref().unwrap().format.as_deref(), Some("node"));
        // A root exists even when empty.
        let a = t.apply(&get("2", "./Vendor/MSFT/Defender"));
        assert_eq!(a[0].code, 200);
        assert_eq!(a[0].results.as_ref().unwrap()[0].data.as_deref(), Some(""));
    }

    #[test]
    fn unknown_roots_are_404_for_every_verb() {
        let mut t = CspTree::new();
        let uri = "./Vendor/MSFT/NoSuchCsp/Node";
        t.set(uri, "1", Format::Int);
        assert_eq!(code_of(&mut t, get("1", uri)), 404);
        assert_eq!(code_of(&mut t, add("2", uri, "int", "1")), 404);
        assert_eq!(code_of(&mut t, replace("3", uri, "int", "1")), 404);
        assert_eq!(code_of(&mut t, delete("4", uri)), 404);
        assert_eq!(code_of(&mut t, exec("5", uri, "")), 404);
        t.remove_root("./Vendor/MSFT/Defender/");
        assert_eq!(
            code_of(&mut t, replace("6", "./Vendor/MSFT/Defender/X", "int", "1")),
            404
        );
        t.add_root("./Vendor/MSFT/NoSuchCsp/");
        assert_eq!(code_of(&mut t, get("7", uri)), 200);
    }

    #[test]
    fn replace_adds_implicitly_except_under_strict_roots() {
        let mut t = CspTree::new();
        assert_eq!(code_of(&mut t, replace("1", CAMERA, "int", "0")), 200);
        let n = t.get(CAMERA).unwrap();
        assert_eq!((n.value.as_str(), n.format), ("0", Format::Int));
        assert_eq!(code_of(&mut t, replace("2", CAMERA, "int", "1")), 200);
        assert_eq!(t.value(CAMERA), Some("1"));

        let strict = "./Vendor/MSFT/Test/Strict/Leaf";
        assert_eq!(code_of(&mut t, replace("3", strict, "chr", "v")), 404);
        assert_eq!(t.get(strict), None);
        t.set(strict, "old", Format::Chr);
        assert_eq!(code_of(&mut t, replace("4", strict, "chr", "new")), 200);
        assert_eq!(t.value(strict), Some("new"));

        t.strict_root("./Vendor/MSFT/DeviceLock/");
        let dl = "./Vendor/MSFT/DeviceLock/DevicePolicy/DevicePasswordEnabled";
        assert_eq!(code_of(&mut t, replace("5", dl, "int", "0")), 404);
        // Replace of an interior node is not allowed.
        t.set("./Vendor/MSFT/Test/Area/A", "1", Format::Int);
        assert_eq!(
            code_of(&mut t, replace("6", "./Vendor/MSFT/Test/Area", "chr", "x")),
            405
        );
    }

    #[test]
    fn add_creates_or_answers_418() {
        let mut t = CspTree::new();
        let uri = "./Vendor/MSFT/Test/New";
        assert_eq!(code_of(&mut t, add("1", uri, "chr", "a")), 200);
        assert_eq!(t.value(uri), Some("a"));
        assert_eq!(code_of(&mut t, add("2", uri, "chr", "b")), 418);
        assert_eq!(t.value(uri), Some("a"), "a refused Add changes nothing");
        // Interior nodes exist too.
        let wifi = "./Vendor/MSFT/WiFi/Profile/Corp";
        assert_eq!(code_of(&mut t, add("3", wifi, "node", "")), 200);
        assert_eq!(t.get(wifi).unwrap().format, Format::Node);
        assert_eq!(code_of(&mut t, add("4", wifi, "node", "")), 418);
        t.set("./Vendor/MSFT/Test/Area/A", "1", Format::Int);
        assert_eq!(
            code_of(&mut t, add("5", "./Vendor/MSFT/Test/Area", "node", "")),
            418
        );
    }

    #[test]
    fn delete_removes_the_subtree_or_answers_405_or_404() {
        let mut t = CspTree::new();
        t.set("./Vendor/MSFT/Test/Area/A", "1", Format::Int);
        t.set("./Vendor/MSFT/Test/Area/B/C", "x", Format::Chr);
        t.set("./Vendor/MSFT/Test/Keep", "k", Format::Chr);
        assert_eq!(code_of(&mut t, delete("1", "./Vendor/MSFT/Test/Area")), 200);
        assert!(t.list("./Vendor/MSFT/Test/Area").is_empty());
        assert_eq!(t.value("./Vendor/MSFT/Test/Keep"), Some("k"));
        assert_eq!(code_of(&mut t, delete("2", "./Vendor/MSFT/Test/Area")), 404);

        t.set(
            "./Vendor/MSFT/Firewall/MdmStore/Global/PolicyVersion",
            "1",
            Format::Int,
        );
        t.set_undeletable("./Vendor/MSFT/Firewall/MdmStore/Global");
        for (id, uri) in [
            ("3", "./Vendor/MSFT/Firewall/MdmStore/Global/PolicyVersion"),
            ("4", "./Vendor/MSFT/Firewall/MdmStore/Global"),
            ("5", "./Vendor/MSFT/Firewall/MdmStore"),
        ] {
            assert_eq!(code_of(&mut t, delete(id, uri)), 405, "{uri}");
        }
        assert_eq!(
            t.value("./Vendor/MSFT/Firewall/MdmStore/Global/PolicyVersion"),
            Some("1")
        );
        // A root node cannot be deleted.
        assert_eq!(code_of(&mut t, delete("6", "./Vendor/MSFT/Test")), 405);
    }

    #[test]
    fn exec_answers_200_and_is_recorded() {
        let mut t = CspTree::new();
        let uri = "./Vendor/MSFT/DMClient/Provider/winmdm/Unenroll";
        assert_eq!(code_of(&mut t, exec("1", uri, "winmdm")), 200);
        assert_eq!(
            t.execs(),
            [ExecCall {
                uri: "Vendor/MSFT/DMClient/Provider/winmdm/Unenroll".into(),
                data: Some("winmdm".into()),
            }]
        );
    }

    #[test]
    fn values_are_validated_by_format_range_and_support() {
        let mut t = CspTree::new();
        let n = "./Vendor/MSFT/Test/V";
        assert_eq!(code_of(&mut t, replace("1", n, "int", "abc")), 400);
        assert_eq!(code_of(&mut t, replace("2", n, "int", "-7")), 200);
        assert_eq!(code_of(&mut t, replace("3", n, "bool", "yes")), 400);
        assert_eq!(code_of(&mut t, replace("4", n, "bool", "true")), 200);
        assert_eq!(code_of(&mut t, replace("5", n, "b64", "not base64!")), 400);
        assert_eq!(code_of(&mut t, replace("6", n, "b64", "aGVsbG8=")), 200);
        assert_eq!(code_of(&mut t, replace("7", n, "float", "1.5")), 415);
        assert_eq!(
            code_of(&mut t, add("8", "./Vendor/MSFT/Test/W", "int", "x")),
            400
        );
        assert_eq!(t.get("./Vendor/MSFT/Test/W"), None);
        // Without Meta/Format the node's existing format applies.
        t.set(n, "1", Format::Int);
        assert_eq!(
            code_of(
                &mut t,
                cmd(ItemVerb::Replace, "9", vec![item(n, None, Some("x"))])
            ),
            400
        );
        // Command-level Meta/Format counts too.
        let c = Command::Item(ItemCommand {
            verb: ItemVerb::Replace,
            cmd_id: "10".into(),
            meta: Some(Meta::format("int")),
            items: vec![item("./Vendor/MSFT/Test/Z", None, Some("x"))],
        });
        assert_eq!(code_of(&mut t, c), 400);

        t.set_range(CAMERA, 0..=1);
        assert_eq!(code_of(&mut t, replace("11", CAMERA, "int", "2")), 400);
        assert_eq!(code_of(&mut t, replace("12", CAMERA, "int", "1")), 200);
        assert_eq!(t.value(CAMERA), Some("1"));

        t.set_format("./Vendor/MSFT/Test/Declared", Format::Int);
        let d = "./Vendor/MSFT/Test/Declared";
        assert_eq!(code_of(&mut t, replace("13", d, "chr", "1")), 400);
        assert_eq!(
            code_of(
                &mut t,
                cmd(ItemVerb::Replace, "14", vec![item(d, None, Some("x"))])
            ),
            400
        );
        assert_eq!(
            code_of(
                &mut t,
                cmd(ItemVerb::Replace, "15", vec![item(d, None, Some("3"))])
            ),
            200
        );
        assert_eq!(t.get(d).unwrap().format, Format::Int);

        let edu = "./Vendor/MSFT/Policy/Config/Education/DefaultPrinterName";
        t.set_unsupported(edu);
        assert_eq!(code_of(&mut t, replace("16", edu, "chr", "p")), 405);
        assert_eq!(code_of(&mut t, add("17", edu, "chr", "p")), 405);
        assert_eq!(code_of(&mut t, delete("18", edu)), 405);
        assert_eq!(code_of(&mut t, get("19", edu)), 404);
        // Read-only CSPs by default.
        assert_eq!(
            code_of(&mut t, replace("20", "./DevDetail/SwV", "chr", "1")),
            405
        );
        assert_eq!(code_of(&mut t, get("21", "./DevDetail/SwV")), 200);
    }

    #[test]
    fn atomic_commits_when_everything_succeeds() {
        let mut t = CspTree::new();
        let a = t.apply(&container(
            ContainerKind::Atomic,
            "1",
            vec![
                replace("2", CAMERA, "int", "0"),
                add("3", "./Vendor/MSFT/Test/A", "chr", "a"),
                exec("4", "./Vendor/MSFT/Test/Run", ""),
            ],
        ));
        assert_eq!(
            codes(&a),
            [
                ("1", "Atomic", 200),
                ("2", "Replace", 200),
                ("3", "Add", 200),
                ("4", "Exec", 200)
            ]
        );
        assert_eq!(t.value(CAMERA), Some("0"));
        assert_eq!(t.value("./Vendor/MSFT/Test/A"), Some("a"));
        assert_eq!(t.execs().len(), 1);
    }

    #[test]
    fn atomic_rolls_back_when_one_fails() {
        let mut t = CspTree::new();
        t.set("./Vendor/MSFT/Test/Exists", "e", Format::Chr);
        let before = t.list("");
        let before: Vec<(String, Node)> = before
            .into_iter()
            .map(|(k, n)| (k.to_owned(), n.clone()))
            .collect();
        let a = t.apply(&container(
            ContainerKind::Atomic,
            "1",
            vec![
                replace("2", CAMERA, "int", "0"),
                add("3", "./Vendor/MSFT/Test/Exists", "chr", "x"),
                delete("4", "./Vendor/MSFT/Test/Exists"),
                exec("5", "./Vendor/MSFT/Test/Run", ""),
            ],
        ));
        assert_eq!(
            codes(&a),
            [
                ("1", "Atomic", 507),
                ("2", "Replace", 216),
                ("3", "Add", 418),
                ("4", "Delete", 216),
                ("5", "Exec", 216)
            ]
        );
        let after: Vec<(String, Node)> = t
            .list("")
            .into_iter()
            .map(|(k, n)| (k.to_owned(), n.clone()))
            .collect();
        assert_eq!(before, after, "nothing changed");
        assert!(t.execs().is_empty());
    }

    #[test]
    fn get_and_nested_containers_fail_an_atomic() {
        let mut t = CspTree::new();
        t.set(CAMERA, "1", Format::Int);
        let a = t.apply(&container(
            ContainerKind::Atomic,
            "1",
            vec![replace("2", CAMERA, "int", "0"), get("3", CAMERA)],
        ));
        assert_eq!(
            codes(&a),
            [
                ("1", "Atomic", 507),
                ("2", "Replace", 216),
                ("3", "Get", 500)
            ]
        );
        assert!(a[2].results.is_none());
        assert_eq!(t.value(CAMERA), Some("1"));

        let a = t.apply(&container(
            ContainerKind::Atomic,
            "10",
            vec![
                replace("11", CAMERA, "int", "0"),
                container(
                    ContainerKind::Atomic,
                    "12",
                    vec![replace("13", "./Vendor/MSFT/Test/A", "chr", "a")],
                ),
            ],
        ));
        assert_eq!(
            codes(&a),
            [
                ("10", "Atomic", 507),
                ("11", "Replace", 216),
                ("12", "Atomic", 500),
                ("13", "Replace", 215)
            ]
        );
        assert_eq!(t.value(CAMERA), Some("1"));
        assert_eq!(t.get("./Vendor/MSFT/Test/A"), None);
    }

    #[test]
    fn add_then_replace_of_one_node_fails_an_atomic() {
        let mut t = CspTree::new();
        let n = "./Vendor/MSFT/Test/A";
        let a = t.apply(&container(
            ContainerKind::Atomic,
            "1",
            vec![add("2", n, "chr", "a"), replace("3", n, "chr", "b")],
        ));
        assert_eq!(
            codes(&a),
            [
                ("1", "Atomic", 507),
                ("2", "Add", 216),
                ("3", "Replace", 500)
            ]
        );
        assert_eq!(t.get(n), None);
    }

    #[test]
    fn sequence_runs_in_order_with_its_own_statuses() {
        let mut t = CspTree::new();
        let n = "./Vendor/MSFT/Test/S";
        let a = t.apply(&container(
            ContainerKind::Sequence,
            "1",
            vec![
                add("2", n, "int", "1"),
                get("3", n),
                add("4", n, "int", "2"),
                replace("5", n, "int", "3"),
                get("6", n),
            ],
        ));
        assert_eq!(
            codes(&a),
            [
                ("1", "Sequence", 200),
                ("2", "Add", 200),
                ("3", "Get", 200),
                ("4", "Add", 418),
                ("5", "Replace", 200),
                ("6", "Get", 200)
            ]
        );
        let data = |i: usize| a[i].results.as_ref().unwrap()[0].data.clone().unwrap();
        assert_eq!((data(2), data(5)), ("1".into(), "3".into()));
        assert_eq!(t.value(n), Some("3"), "not rolled back");
    }

    #[test]
    fn policy_config_is_mirrored_to_policy_result() {
        let mut t = CspTree::new();
        let result = "./Vendor/MSFT/Policy/Result/Camera/AllowCamera";
        assert_eq!(code_of(&mut t, get("1", result)), 404);
        assert_eq!(code_of(&mut t, replace("2", CAMERA, "int", "0")), 200);
        let a = t.apply(&get("3", result));
        assert_eq!(a[0].results.as_ref().unwrap()[0].data.as_deref(), Some("0"));
        assert_eq!(code_of(&mut t, replace("4", result, "int", "1")), 405);
        assert_eq!(code_of(&mut t, delete("5", CAMERA)), 200);
        assert_eq!(code_of(&mut t, get("6", result)), 404);
        let user = "./User/Vendor/MSFT/Policy/Config/Browser/AllowCookies";
        assert_eq!(code_of(&mut t, replace("7", user, "int", "2")), 200);
        assert_eq!(
            t.value("./User/Vendor/MSFT/Policy/Result/Browser/AllowCookies"),
            Some("2")
        );
        assert_eq!(
            t.value("./Vendor/MSFT/Policy/Result/Browser/AllowCookies"),
            None
        );
    }

    #[test]
    fn several_items_answer_the_first_failure() {
        let mut t = CspTree::new();
        t.set("./Vendor/MSFT/Test/A", "a", Format::Chr);
        let c = cmd(
            ItemVerb::Get,
            "1",
            vec![
                item("./Vendor/MSFT/Test/A", None, None),
                item("./Vendor/MSFT/Test/B", None, None),
            ],
        );
        let a = t.apply(&c);
        assert_eq!(codes(&a), [("1", "Get", 404)]);
        assert!(a[0].results.is_none());
        t.set("./Vendor/MSFT/Test/B", "b", Format::Chr);
        let a = t.apply(&c);
        let r = a[0].results.as_ref().unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].data.as_deref(), Some("b"));
    }

    #[test]
    fn large_objects_arrive_in_chunks() {
        let mut t = CspTree::new();
        let n = "./Vendor/MSFT/Test/Blob";
        let chunk = |id: &str, data: &str, size: Option<u64>, more: bool| {
            Command::Item(ItemCommand {
                verb: ItemVerb::Replace,
                cmd_id: id.into(),
                meta: None,
                items: vec![Item {
                    target: Some(n.into()),
                    meta: Some(Meta {
                        format: Some("chr".into()),
                        size,
                        ..Meta::default()
                    }),
                    data: Some(data.into()),
                    more_data: more,
                    ..Item::default()
                }],
            })
        };
        assert_eq!(code_of(&mut t, chunk("1", "abc", Some(9), true)), 213);
        assert_eq!(code_of(&mut t, chunk("2", "def", None, true)), 213);
        assert_eq!(t.get(n), None);
        assert_eq!(code_of(&mut t, chunk("3", "ghi", None, false)), 200);
        assert_eq!(t.value(n), Some("abcdefghi"));
        assert_eq!(code_of(&mut t, chunk("4", "abc", Some(5), true)), 213);
        assert_eq!(code_of(&mut t, chunk("5", "d", None, false)), 424);
        assert_eq!(t.value(n), Some("abcdefghi"));
    }

    #[test]
    fn test_side_set_remove_get_list() {
        let mut t = CspTree::new();
        t.set("./Vendor/MSFT/Test/A/1", "x", Format::Chr)
            .set("./Vendor/MSFT/Test/A/2", "true", Format::Bool)
            .set("./Vendor/MSFT/Test/AB", "y", Format::Chr);
        let keys: Vec<&str> = t
            .list("./Vendor/MSFT/Test/A")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["Vendor/MSFT/Test/A/1", "Vendor/MSFT/Test/A/2"]);
        assert_eq!(
            t.get("./Vendor/MSFT/Test/A/2").unwrap().format,
            Format::Bool
        );
        assert!(t.remove("./Device/Vendor/MSFT/Test/A"));
        assert!(!t.remove("./Vendor/MSFT/Test/A"));
        assert_eq!(t.list("./Vendor/MSFT/Test/A").len(), 0);
        assert_eq!(t.value("./Vendor/MSFT/Test/AB"), Some("y"));
        let t = CspTree::for_device("DEV1", "HW1");
        assert_eq!(t.value("./DevInfo/DevId"), Some("DEV1"));
        assert_eq!(t.value("./Vendor/MSFT/DMClient/HWDevID"), Some("HW1"));
    }

    fn server_message(commands: Vec<Command>) -> Reply {
        let msg = SyncMl {
            hdr: SyncHdr {
                ver_dtd: "1.2".into(),
                ver_proto: "DM/1.2".into(),
                session_id: "1".into(),
                msg_id: "2".into(),
                target: Location::uri("DEV1"),
                source: Location::uri("https://mdm.example.com/ManagementServer/MDM.svc"),
                cred: None,
                meta: None,
            },
            commands,
            final_: true,
        };
        Reply::parse(msg.to_xml().as_bytes())
    }

    fn statuses(out: &[Command]) -> Vec<(String, String, String)> {
        out.iter()
            .filter_map(|c| match c {
                Command::Status(s) => Some((s.cmd_ref.clone(), s.cmd.clone(), s.data.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn dm_client_answers_a_reply_from_the_tree() {
        let wlan = r#"<WLANProfile xmlns="http://www.microsoft.com/networking/WLAN/profile/v1"><name>Corp &amp; Co</name></WLANProfile>"#;
        let wlan_uri = "./Vendor/MSFT/WiFi/Profile/Corp/WlanXml";
        let reply = server_message(vec![
            Command::Status(winmdm_wire::syncml::Status {
                cmd_id: "1".into(),
                msg_ref: "1".into(),
                cmd_ref: "0".into(),
                cmd: "SyncHdr".into(),
                target_ref: None,
                source_ref: None,
                chal: None,
                data: "200".into(),
                items: vec![],
            }),
            replace("2", wlan_uri, "chr", wlan),
            container(
                ContainerKind::Atomic,
                "3",
                vec![
                    replace("4", CAMERA, "int", "0"),
                    replace("5", "./Vendor/MSFT/Test/Strict/X", "int", "1"),
                ],
            ),
            get("6", "./DevDetail/SwV"),
            get("7", wlan_uri),
            get("8", CAMERA),
            Command::Alert(Alert {
                cmd_id: "9".into(),
                data: "1223".into(),
                items: vec![],
            }),
        ]);
        let mut tree = CspTree::new();
        let mut c = DmClient::new("DEV1", "https://mdm.example.com/ManagementServer/MDM.svc");
        let out = c.answer_from(&reply, &mut tree);
        assert_eq!(tree.value(wlan_uri), Some(wlan), "XML stored as received");
        let s = |r: &str, n: &str, d: &str| (r.to_owned(), n.to_owned(), d.to_owned());
        assert_eq!(
            statuses(&out),
            [
                s("2", "Replace", "200"),
                s("3", "Atomic", "507"),
                s("4", "Replace", "216"),
                s("5", "Replace", "404"),
                s("6", "Get", "200"),
                s("7", "Get", "200"),
                s("8", "Get", "404"),
                s("9", "Alert", "200"),
            ]
        );
        for cmd in &out {
            if let Command::Status(st) = cmd {
                assert_eq!(st.msg_ref, "2");
            }
        }
        let results: Vec<&winmdm_wire::syncml::Results> = out
            .iter()
            .filter_map(|c| match c {
                Command::Results(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].cmd_ref, "6");
        assert_eq!(results[0].msg_ref.as_deref(), Some("2"));
        let i = &results[1].items[0];
        assert_eq!(results[1].cmd_ref, "7");
        assert_eq!(i.source.as_deref(), Some(wlan_uri));
        assert_eq!(i.meta.as_ref().unwrap().format.as_deref(), Some("chr"));
        assert_eq!(i.data.as_deref(), Some(wlan));
        // Results follow their Get's Status; CmdIDs run in order.
        let pos = |f: &dyn Fn(&Command) -> bool| out.iter().position(f).unwrap();
        let get6 = pos(&|c| matches!(c, Command::Status(s) if s.cmd_ref == "6"));
        let res6 = pos(&|c| matches!(c, Command::Results(r) if r.cmd_ref == "6"));
        assert_eq!(res6, get6 + 1);
        let ids: Vec<String> = out.iter().map(|c| c.cmd_id().to_owned()).collect();
        let expected: Vec<String> = (1..=out.len()).map(|i| i.to_string()).collect();
        assert_eq!(ids, expected);

        // The message survives XML both ways: the server reads the XML back unchanged.
        let xml = c.message(|_| out, true);
        let back = Reply::parse(xml.as_bytes());
        let data: Vec<String> = back
            .msg
            .commands
            .iter()
            .filter_map(|c| match c {
                Command::Results(r) if r.cmd_ref == "7" => r.items[0].data.clone(),
                _ => None,
            })
            .collect();
        assert_eq!(data, [wlan]);
    }

    #[test]
    fn raw_xml_data_is_stored_verbatim() {
        let uri = "./Vendor/MSFT/WiFi/Profile/Corp/WlanXml";
        let raw = r#"<WLANProfile xmlns="http://www.microsoft.com/networking/WLAN/profile/v1"><name>Corp</name></WLANProfile>"#;
        let xml = format!(
            r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>DEV1</LocURI></Target><Source><LocURI>https://mdm.example.com</LocURI></Source></SyncHdr><SyncBody><Add><CmdID>2</CmdID><Item><Target><LocURI>{uri}</LocURI></Target><Meta><Format xmlns="syncml:metinf">xml</Format></Meta><Data>{raw}</Data></Item></Add><Final/></SyncBody></SyncML>"#
        );
        let reply = Reply::parse(xml.as_bytes());
        let mut tree = CspTree::new();
        let mut c = DmClient::new("DEV1", "https://mdm.example.com");
        let out = c.answer_from(&reply, &mut tree);
        assert_eq!(statuses(&out), [("2".into(), "Add".into(), "200".into())]);
        let n = tree.get(uri).unwrap();
        assert_eq!((n.value.as_str(), n.format), (raw, Format::Xml));
    }

    #[test]
    fn strict_clients_send_no_status_for_containers() {
        let reply = server_message(vec![container(
            ContainerKind::Atomic,
            "2",
            vec![replace("3", CAMERA, "int", "1")],
        )]);
        let mut tree = CspTree::new();
        let mut c = DmClient::new("DEV1", "https://mdm.example.com").with_mode(ClientMode::Strict);
        let out = c.answer_from(&reply, &mut tree);
        assert_eq!(
            statuses(&out),
            [("3".into(), "Replace".into(), "200".into())]
        );
        assert_eq!(tree.value(CAMERA), Some("1"));
    }
}
