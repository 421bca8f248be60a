//! OMA-DM SyncML 1.2 messages as Windows speaks them (MS-MDM, PROTOCOL §8): a parser that
//! accepts the `SYNCML:SYNCML1.1`/`1.2` namespaces with any prefixes, and a writer that
//! emits elements in DTD order.

use crate::xml::{self, Element, XmlWriter};

/// The `syncml:metinf` namespace of Meta children.
pub const METINF_NS: &str = "syncml:metinf";
pub const SYNCML12_NS: &str = "SYNCML:SYNCML1.2";
pub const MSFT_NS: &str = "http://schemas.microsoft.com/MobileDevice/MDM";

/// Alert codes (MS-MDM 2.2.7.2).
pub mod alert {
    pub const SERVER_INITIATED: &str = "1200";
    pub const CLIENT_INITIATED: &str = "1201";
    pub const NEXT_MESSAGE: &str = "1222";
    pub const SESSION_ABORT: &str = "1223";
    pub const CLIENT_EVENT: &str = "1224";
    pub const NO_END_OF_DATA: &str = "1225";
    pub const GENERIC: &str = "1226";
}

/// `Meta` contents (`syncml:metinf`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub format: Option<String>,
    pub type_: Option<String>,
    pub size: Option<u64>,
    pub next_nonce: Option<String>,
    pub max_msg_size: Option<u64>,
}

impl Meta {
    pub fn is_empty(&self) -> bool {
        *self == Meta::default()
    }
    pub fn format(format: &str) -> Self {
        Self {
            format: Some(format.into()),
            ..Self::default()
        }
    }
}

/// `Target` or `Source`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    pub loc_uri: String,
    pub loc_name: Option<String>,
}

impl Location {
    pub fn uri(uri: impl Into<String>) -> Self {
        Self {
            loc_uri: uri.into(),
            loc_name: None,
        }
    }
}

/// `Cred`: DM authentication (`syncml:auth-md5` or `syncml:auth-basic`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cred {
    pub meta: Meta,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncHdr {
    pub ver_dtd: String,
    pub ver_proto: String,
    /// Opaque, copied verbatim (it may be hex).
    pub session_id: String,
    pub msg_id: String,
    pub target: Location,
    pub source: Location,
    pub cred: Option<Cred>,
    pub meta: Option<Meta>,
}

/// An `Item`. `data` holds text (entities resolved, CDATA unwrapped) or, when the element
/// held raw XML, that XML verbatim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Item {
    pub target: Option<String>,
    pub source: Option<String>,
    pub meta: Option<Meta>,
    pub data: Option<String>,
    pub more_data: bool,
    /// `msft:originalerror` on Data (SyncApplicationVersion ≥ 3.0).
    pub original_error: Option<String>,
}

impl Item {
    /// The node the item is about: its Source (what the device reports), else its Target.
    pub fn uri(&self) -> &str {
        self.source
            .as_deref()
            .or(self.target.as_deref())
            .unwrap_or("")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemVerb {
    Add,
    Delete,
    Exec,
    Get,
    Replace,
}

impl ItemVerb {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemVerb::Add => "Add",
            ItemVerb::Delete => "Delete",
            ItemVerb::Exec => "Exec",
            ItemVerb::Get => "Get",
            ItemVerb::Replace => "Replace",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Add" => ItemVerb::Add,
            "Delete" => ItemVerb::Delete,
            "Exec" => ItemVerb::Exec,
            "Get" => ItemVerb::Get,
            "Replace" => ItemVerb::Replace,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemCommand {
    pub verb: ItemVerb,
    pub cmd_id: String,
    pub meta: Option<Meta>,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub cmd_id: String,
    pub data: String,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub cmd_id: String,
    pub msg_ref: String,
    pub cmd_ref: String,
    pub cmd: String,
    pub target_ref: Option<String>,
    pub source_ref: Option<String>,
    pub chal: Option<Meta>,
    pub data: String,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Results {
    pub cmd_id: String,
    pub msg_ref: Option<String>,
    pub cmd_ref: String,
    pub meta: Option<Meta>,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    Atomic,
    Sequence,
}

impl ContainerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerKind::Atomic => "Atomic",
            ContainerKind::Sequence => "Sequence",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub kind: ContainerKind,
    pub cmd_id: String,
    pub meta: Option<Meta>,
    pub commands: Vec<Command>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Alert(Alert),
    Status(Status),
    Results(Results),
    Item(ItemCommand),
    Container(Container),
}

impl Command {
    pub fn cmd_id(&self) -> &str {
        match self {
            Command::Alert(a) => &a.cmd_id,
            Command::Status(s) => &s.cmd_id,
            Command::Results(r) => &r.cmd_id,
            Command::Item(c) => &c.cmd_id,
            Command::Container(c) => &c.cmd_id,
        }
    }

    /// The element name, as used in `Status/Cmd`.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Alert(_) => "Alert",
            Command::Status(_) => "Status",
            Command::Results(_) => "Results",
            Command::Item(c) => c.verb.as_str(),
            Command::Container(c) => c.kind.as_str(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncMl {
    pub hdr: SyncHdr,
    pub commands: Vec<Command>,
    pub final_: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SyncMlError {
    #[error(transparent)]
    Xml(#[from] xml::XmlError),
    #[error("not a SyncML 1.1/1.2 message")]
    NotSyncMl,
    #[error("SyncHdr is missing {0}")]
    Header(&'static str),
    #[error("SyncBody is missing")]
    NoBody,
    #[error("SyncML message has more than {max} {what}")]
    TooMany { what: &'static str, max: usize },
}

/// Most commands in one message, commands inside Atomic and Sequence and unreadable ones
/// included. Each is answered with a Status, so this also bounds the reply. A Status takes
/// at least five elements, so the XML element bound leaves room for no more than about
/// 4,000 real ones: this bites on degenerate commands (`<Get/>`…) only.
pub const MAX_COMMANDS: usize = 4_000;
/// Most `Item`s in one message; again above what well-formed items fit in the element
/// bound.
pub const MAX_ITEMS: usize = 5_000;
/// Deepest nesting of Atomic and Sequence (Windows accepts no nesting at all); a deeper
/// container is rejected like any other unreadable command.
pub const MAX_CONTAINER_DEPTH: usize = 4;

/// What a message may still hold: counted as it is read, so reading stops at the limit.
struct Budget {
    commands: usize,
    items: usize,
}

impl Budget {
    fn command(&mut self) -> Result<(), SyncMlError> {
        self.commands += 1;
        if self.commands > MAX_COMMANDS {
            return Err(SyncMlError::TooMany {
                what: "commands",
                max: MAX_COMMANDS,
            });
        }
        Ok(())
    }

    fn items(&mut self, n: usize) -> Result<(), SyncMlError> {
        self.items += n;
        if self.items > MAX_ITEMS {
            return Err(SyncMlError::TooMany {
                what: "items",
                max: MAX_ITEMS,
            });
        }
        Ok(())
    }
}

/// A SyncML command that could not be read (a missing CmdID, an unknown element): it is
/// answered with its own status instead of failing the whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedCommand {
    pub cmd_id: String,
    pub name: String,
    pub reason: String,
}

/// A parsed message, with whatever commands were unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub message: SyncMl,
    pub rejected: Vec<RejectedCommand>,
}

fn is_syncml_ns(ns: Option<&str>) -> bool {
    ns.is_some_and(|n| {
        n.eq_ignore_ascii_case("SYNCML:SYNCML1.2") || n.eq_ignore_ascii_case("SYNCML:SYNCML1.1")
    })
}

/// Children by local name: SyncML content is matched on local names so any prefix and the
/// 1.1 and 1.2 namespaces work alike.
fn child<'a>(el: &'a Element, local: &str) -> Option<&'a Element> {
    el.child_local(local)
}

fn child_text(el: &Element, local: &str) -> Option<String> {
    child(el, local).map(Element::text)
}

fn parse_meta(el: &Element) -> Meta {
    // Meta children may sit in syncml:metinf or (older samples) in the SyncML namespace.
    let t = |n: &str| child_text(el, n).filter(|s| !s.is_empty());
    Meta {
        format: t("Format"),
        type_: t("Type"),
        size: t("Size").and_then(|s| s.parse().ok()),
        next_nonce: t("NextNonce"),
        max_msg_size: t("MaxMsgSize").and_then(|s| s.parse().ok()),
    }
}

/// `Meta` of an element, also accepting MS-MDM's shape with `Type` beside an empty `Meta`.
fn meta_of(el: &Element) -> Option<Meta> {
    let mut meta = child(el, "Meta").map(parse_meta).unwrap_or_default();
    if meta.type_.is_none() {
        meta.type_ = child_text(el, "Type").filter(|s| !s.is_empty());
    }
    if meta.format.is_none() {
        meta.format = child_text(el, "Format").filter(|s| !s.is_empty());
    }
    (!meta.is_empty()).then_some(meta)
}

fn loc_uri(el: &Element) -> Option<String> {
    child_text(el, "LocURI")
}

fn parse_item(el: &Element, input: &[u8]) -> Item {
    let data_el = child(el, "Data");
    let data = data_el.map(|d| {
        if d.elements().next().is_some() {
            // Raw XML payload: keep it verbatim.
            String::from_utf8_lossy(&input[d.inner.clone()]).into_owned()
        } else {
            d.raw_text()
        }
    });
    let original_error = data_el.and_then(|d| {
        d.attrs
            .iter()
            .find(|a| &*a.name == "originalerror")
            .map(|a| a.value.clone())
    });
    Item {
        target: child(el, "Target").and_then(loc_uri),
        source: child(el, "Source").and_then(loc_uri),
        meta: meta_of(el),
        data,
        more_data: child(el, "MoreData").is_some(),
        original_error,
    }
}

fn items(el: &Element, input: &[u8], budget: &mut Budget) -> Result<Vec<Item>, SyncMlError> {
    let is_item = |e: &&Element| &*e.name == "Item";
    budget.items(el.elements().filter(is_item).count())?;
    Ok(el
        .elements()
        .filter(is_item)
        .map(|e| parse_item(e, input))
        .collect())
}

/// Reads one command: `Ok(Err(_))` when the command is unreadable (answered with its own
/// status), `Err(_)` when the message is over a limit.
fn parse_command(
    el: &Element,
    input: &[u8],
    depth: usize,
    budget: &mut Budget,
) -> Result<Result<Command, RejectedCommand>, SyncMlError> {
    budget.command()?;
    let cmd_id = child_text(el, "CmdID").unwrap_or_default();
    let reject = |reason: &str| RejectedCommand {
        cmd_id: cmd_id.clone(),
        name: el.name.to_string(),
        reason: reason.into(),
    };
    if cmd_id.is_empty() || cmd_id == "0" {
        return Ok(Err(reject("CmdID is missing or 0")));
    }
    let cmd = match &*el.name {
        "Alert" => Command::Alert(Alert {
            cmd_id,
            data: child_text(el, "Data").unwrap_or_default(),
            items: items(el, input, budget)?,
        }),
        "Status" => Command::Status(Status {
            cmd_id,
            msg_ref: child_text(el, "MsgRef").unwrap_or_default(),
            cmd_ref: child_text(el, "CmdRef").unwrap_or_default(),
            cmd: child_text(el, "Cmd").unwrap_or_default(),
            target_ref: child_text(el, "TargetRef"),
            source_ref: child_text(el, "SourceRef"),
            chal: child(el, "Chal").and_then(meta_of),
            data: child_text(el, "Data").unwrap_or_default(),
            items: items(el, input, budget)?,
        }),
        "Results" => Command::Results(Results {
            cmd_id,
            msg_ref: child_text(el, "MsgRef"),
            cmd_ref: child_text(el, "CmdRef").unwrap_or_default(),
            meta: meta_of(el),
            items: items(el, input, budget)?,
        }),
        "Atomic" | "Sequence" => {
            let kind = if &*el.name == "Atomic" {
                ContainerKind::Atomic
            } else {
                ContainerKind::Sequence
            };
            if depth >= MAX_CONTAINER_DEPTH {
                return Ok(Err(reject(&format!(
                    "Atomic and Sequence nest deeper than {MAX_CONTAINER_DEPTH} levels"
                ))));
            }
            let mut commands = Vec::new();
            for c in el.elements().filter(|c| is_command(&c.name)) {
                match parse_command(c, input, depth + 1, budget)? {
                    Ok(c) => commands.push(c),
                    Err(rejected) => return Ok(Err(rejected)),
                }
            }
            Command::Container(Container {
                kind,
                cmd_id,
                meta: meta_of(el),
                commands,
            })
        }
        other => match ItemVerb::parse(other) {
            Some(verb) => Command::Item(ItemCommand {
                verb,
                cmd_id,
                meta: meta_of(el),
                items: items(el, input, budget)?,
            }),
            None => return Ok(Err(reject("unknown command"))),
        },
    };
    Ok(Ok(cmd))
}

fn is_command(name: &str) -> bool {
    matches!(
        name,
        "Alert"
            | "Status"
            | "Results"
            | "Atomic"
            | "Sequence"
            | "Add"
            | "Delete"
            | "Exec"
            | "Get"
            | "Replace"
            | "Copy"
            | "Map"
            | "Put"
            | "Search"
            | "Sync"
    )
}

impl SyncMl {
    pub fn parse(input: &[u8]) -> Result<Parsed, SyncMlError> {
        let root = xml::parse(input)?;
        if &*root.name != "SyncML" || !is_syncml_ns(root.ns.as_deref()) {
            return Err(SyncMlError::NotSyncMl);
        }
        let h = child(&root, "SyncHdr").ok_or(SyncMlError::Header("SyncHdr"))?;
        let location = |name: &'static str| -> Result<Location, SyncMlError> {
            let el = child(h, name).ok_or(SyncMlError::Header(name))?;
            Ok(Location {
                loc_uri: loc_uri(el).ok_or(SyncMlError::Header("LocURI"))?,
                loc_name: child_text(el, "LocName"),
            })
        };
        let hdr = SyncHdr {
            ver_dtd: child_text(h, "VerDTD").unwrap_or_else(|| "1.2".into()),
            ver_proto: child_text(h, "VerProto").unwrap_or_else(|| "DM/1.2".into()),
            session_id: child_text(h, "SessionID").ok_or(SyncMlError::Header("SessionID"))?,
            msg_id: child_text(h, "MsgID").ok_or(SyncMlError::Header("MsgID"))?,
            target: location("Target")?,
            source: location("Source")?,
            cred: child(h, "Cred").map(|c| Cred {
                meta: meta_of(c).unwrap_or_default(),
                data: child_text(c, "Data").unwrap_or_default(),
            }),
            meta: child(h, "Meta").map(parse_meta),
        };
        let body = child(&root, "SyncBody").ok_or(SyncMlError::NoBody)?;
        let mut commands = Vec::new();
        let mut rejected = Vec::new();
        let mut budget = Budget {
            commands: 0,
            items: 0,
        };
        for el in body.elements() {
            if &*el.name == "Final" {
                continue;
            }
            match parse_command(el, input, 0, &mut budget)? {
                Ok(c) => commands.push(c),
                Err(r) => rejected.push(r),
            }
        }
        Ok(Parsed {
            message: SyncMl {
                hdr,
                commands,
                final_: child(body, "Final").is_some(),
            },
            rejected,
        })
    }

    /// The message as XML, in DTD order.
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::with_capacity(2048);
        w.start("SyncML", &[("xmlns", SYNCML12_NS)]);
        write_hdr(&mut w, &self.hdr);
        w.start("SyncBody", &[]);
        for c in &self.commands {
            write_command(&mut w, c);
        }
        if self.final_ {
            w.empty("Final", &[]);
        }
        w.end();
        w.end();
        w.finish()
    }
}

/// The length of these commands as XML, to measure them against a message size limit.
pub fn commands_len(commands: &[Command]) -> usize {
    let mut w = XmlWriter::with_capacity(commands.len() * 256);
    for c in commands {
        write_command(&mut w, c);
    }
    w.finish().len()
}

/// One command as XML, e.g. to measure it against a message size limit.
pub fn command_xml(c: &Command) -> String {
    let mut w = XmlWriter::with_capacity(256);
    write_command(&mut w, c);
    w.finish()
}

fn write_location(w: &mut XmlWriter, name: &'static str, l: &Location) {
    w.start(name, &[]);
    w.leaf("LocURI", &[], &l.loc_uri);
    if let Some(n) = &l.loc_name {
        w.leaf("LocName", &[], n);
    }
    w.end();
}

fn write_meta(w: &mut XmlWriter, name: &'static str, m: &Meta) {
    w.start(name, &[]);
    let ns = [("xmlns", METINF_NS)];
    if let Some(f) = &m.format {
        w.leaf("Format", &ns, f);
    }
    if let Some(t) = &m.type_ {
        w.leaf("Type", &ns, t);
    }
    if let Some(s) = m.size {
        w.leaf("Size", &ns, &s.to_string());
    }
    if let Some(n) = &m.next_nonce {
        w.leaf("NextNonce", &ns, n);
    }
    if let Some(s) = m.max_msg_size {
        w.leaf("MaxMsgSize", &ns, &s.to_string());
    }
    w.end();
}

fn write_hdr(w: &mut XmlWriter, h: &SyncHdr) {
    w.start("SyncHdr", &[]);
    w.leaf("VerDTD", &[], &h.ver_dtd);
    w.leaf("VerProto", &[], &h.ver_proto);
    w.leaf("SessionID", &[], &h.session_id);
    w.leaf("MsgID", &[], &h.msg_id);
    write_location(w, "Target", &h.target);
    write_location(w, "Source", &h.source);
    if let Some(c) = &h.cred {
        w.start("Cred", &[]);
        write_meta(w, "Meta", &c.meta);
        w.leaf("Data", &[], &c.data);
        w.end();
    }
    if let Some(m) = &h.meta {
        write_meta(w, "Meta", m);
    }
    w.end();
}

fn write_item(w: &mut XmlWriter, i: &Item) {
    w.start("Item", &[]);
    if let Some(t) = &i.target {
        w.start("Target", &[]);
        w.leaf("LocURI", &[], t);
        w.end();
    }
    if let Some(s) = &i.source {
        w.start("Source", &[]);
        w.leaf("LocURI", &[], s);
        w.end();
    }
    if let Some(m) = &i.meta {
        write_meta(w, "Meta", m);
    }
    if let Some(d) = &i.data {
        match &i.original_error {
            Some(e) => w.leaf(
                "Data",
                &[("xmlns:msft", MSFT_NS), ("msft:originalerror", e)],
                d,
            ),
            None => w.leaf("Data", &[], d),
        };
    }
    if i.more_data {
        w.empty("MoreData", &[]);
    }
    w.end();
}

fn write_command(w: &mut XmlWriter, c: &Command) {
    match c {
        Command::Alert(a) => {
            w.start("Alert", &[]);
            w.leaf("CmdID", &[], &a.cmd_id);
            w.leaf("Data", &[], &a.data);
            for i in &a.items {
                write_item(w, i);
            }
            w.end();
        }
        Command::Status(s) => {
            w.start("Status", &[]);
            w.leaf("CmdID", &[], &s.cmd_id);
            w.leaf("MsgRef", &[], &s.msg_ref);
            w.leaf("CmdRef", &[], &s.cmd_ref);
            w.leaf("Cmd", &[], &s.cmd);
            if let Some(t) = &s.target_ref {
                w.leaf("TargetRef", &[], t);
            }
            if let Some(t) = &s.source_ref {
                w.leaf("SourceRef", &[], t);
            }
            if let Some(ch) = &s.chal {
                w.start("Chal", &[]);
                write_meta(w, "Meta", ch);
                w.end();
            }
            w.leaf("Data", &[], &s.data);
            for i in &s.items {
                write_item(w, i);
            }
            w.end();
        }
        Command::Results(r) => {
            w.start("Results", &[]);
            w.leaf("CmdID", &[], &r.cmd_id);
            if let Some(m) = &r.msg_ref {
                w.leaf("MsgRef", &[], m);
            }
            w.leaf("CmdRef", &[], &r.cmd_ref);
            if let Some(m) = &r.meta {
                write_meta(w, "Meta", m);
            }
            for i in &r.items {
                write_item(w, i);
            }
            w.end();
        }
        Command::Item(ic) => {
            w.start(ic.verb.as_str(), &[]);
            w.leaf("CmdID", &[], &ic.cmd_id);
            if let Some(m) = &ic.meta {
                write_meta(w, "Meta", m);
            }
            for i in &ic.items {
                write_item(w, i);
            }
            w.end();
        }
        Command::Container(ct) => {
            w.start(
                match ct.kind {
                    ContainerKind::Atomic => "Atomic",
                    ContainerKind::Sequence => "Sequence",
                },
                &[],
            );
            w.leaf("CmdID", &[], &ct.cmd_id);
            if let Some(m) = &ct.meta {
                write_meta(w, "Meta", m);
            }
            for c in &ct.commands {
                write_command(w, c);
            }
            w.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Package #1 as a Windows 11 client sends it (shape from real captures).
    const PACKAGE1: &str = r#"<SyncML xmlns="SYNCML:SYNCML1.2" xmlns:msft="http://schemas.microsoft.com/MobileDevice/MDM">
  <SyncHdr>
    <VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1D</SessionID><MsgID>1</MsgID>
    <Target><LocURI>https://mdm.example.com/ManagementServer/MDM.svc</LocURI></Target>
    <Source><LocURI>DEV123</LocURI><LocName>dummy</LocName></Source>
    <Meta><MaxMsgSize xmlns="syncml:metinf">524288</MaxMsgSize></Meta>
  </SyncHdr>
  <SyncBody>
    <Alert><CmdID>2</CmdID><Data>1201</Data></Alert>
    <Alert><CmdID>3</CmdID><Data>1224</Data><Item><Meta><Type xmlns="syncml:metinf">com.microsoft/MDM/LoginStatus</Type></Meta><Data>user</Data></Item></Alert>
    <Replace><CmdID>4</CmdID>
      <Item><Source><LocURI>./DevInfo/DevId</LocURI></Source><Data>DEV123</Data></Item>
      <Item><Source><LocURI>./DevInfo/Man</LocURI></Source><Data>Contoso &amp; Co</Data></Item>
    </Replace>
    <Results><CmdID>5</CmdID><MsgRef>1</MsgRef><CmdRef>3</CmdRef>
      <Item><Source><LocURI>./Vendor/MSFT/Policy/Config</LocURI></Source><Meta><Format xmlns="syncml:metinf">xml</Format></Meta><Data><wap-provisioningdoc><characteristic type="x"/></wap-provisioningdoc></Data></Item>
      <Item><Source><LocURI>./a</LocURI></Source><Data msft:originalerror="0x86000002"><![CDATA[<raw & text>]]></Data><MoreData/></Item>
    </Results>
    <Get><Item><Target><LocURI>./x</LocURI></Target></Item></Get>
    <Final/>
  </SyncBody>
</SyncML>"#;

    #[test]
    fn parses_package_one() {
        let p = SyncMl::parse(PACKAGE1.as_bytes()).unwrap();
        let m = &p.message;
        assert_eq!(m.hdr.session_id, "1D");
        assert_eq!(m.hdr.source.loc_uri, "DEV123");
        assert_eq!(m.hdr.meta.as_ref().unwrap().max_msg_size, Some(524288));
        assert!(m.final_);
        assert_eq!(m.commands.len(), 4);
        assert_eq!(
            p.rejected.len(),
            1,
            "Get without CmdID is rejected, not fatal"
        );
        let Command::Alert(a) = &m.commands[1] else {
            panic!()
        };
        assert_eq!(
            a.items[0].meta.as_ref().unwrap().type_.as_deref(),
            Some("com.microsoft/MDM/LoginStatus")
        );
        let Command::Item(r) = &m.commands[2] else {
            panic!()
        };
        assert_eq!(r.items[1].data.as_deref(), Some("Contoso & Co"));
        let Command::Results(res) = &m.commands[3] else {
            panic!()
        };
        assert_eq!(
            res.items[0].data.as_deref(),
            Some(r#"<wap-provisioningdoc><characteristic type="x"/></wap-provisioningdoc>"#)
        );
        assert_eq!(res.items[1].data.as_deref(), Some("<raw & text>"));
        assert!(res.items[1].more_data);
        assert_eq!(res.items[1].original_error.as_deref(), Some("0x86000002"));
    }

    #[test]
    fn accepts_syncml_1_1_and_prefixes() {
        let doc = r#"<s:SyncML xmlns:s="syncml:syncml1.1"><s:SyncHdr><s:SessionID>1</s:SessionID><s:MsgID>1</s:MsgID><s:Target><s:LocURI>a</s:LocURI></s:Target><s:Source><s:LocURI>b</s:LocURI></s:Source></s:SyncHdr><s:SyncBody><s:Final/></s:SyncBody></s:SyncML>"#;
        let p = SyncMl::parse(doc.as_bytes()).unwrap();
        assert!(p.message.final_);
        assert!(matches!(
            SyncMl::parse(b"<SyncML xmlns=\"other\"/>"),
            Err(SyncMlError::NotSyncMl)
        ));
    }

    #[test]
    fn round_trips_in_dtd_order_with_xml_payloads() {
        let blob = r#"<wap-provisioningdoc version="1.1"><characteristic type="A&amp;B"/></wap-provisioningdoc>"#;
        let msg = SyncMl {
            hdr: SyncHdr {
                ver_dtd: "1.2".into(),
                ver_proto: "DM/1.2".into(),
                session_id: "A".into(),
                msg_id: "1".into(),
                target: Location::uri("DEV"),
                source: Location::uri("https://s/ManagementServer/MDM.svc"),
                cred: None,
                meta: Some(Meta {
                    max_msg_size: Some(1000),
                    ..Meta::default()
                }),
            },
            commands: vec![
                Command::Status(Status {
                    cmd_id: "1".into(),
                    msg_ref: "1".into(),
                    cmd_ref: "0".into(),
                    cmd: "SyncHdr".into(),
                    target_ref: None,
                    source_ref: None,
                    chal: Some(Meta {
                        format: Some("b64".into()),
                        type_: Some("syncml:auth-md5".into()),
                        next_nonce: Some("bm9uY2U=".into()),
                        ..Meta::default()
                    }),
                    data: "407".into(),
                    items: vec![],
                }),
                Command::Container(Container {
                    kind: ContainerKind::Atomic,
                    cmd_id: "2".into(),
                    meta: None,
                    commands: vec![Command::Item(ItemCommand {
                        verb: ItemVerb::Replace,
                        cmd_id: "3".into(),
                        meta: None,
                        items: vec![Item {
                            target: Some("./Vendor/MSFT/Policy/Config/X".into()),
                            meta: Some(Meta {
                                format: Some("xml".into()),
                                type_: Some("text/plain".into()),
                                ..Meta::default()
                            }),
                            data: Some(blob.into()),
                            ..Item::default()
                        }],
                    })],
                }),
            ],
            final_: true,
        };
        let xml = msg.to_xml();
        assert!(xml.starts_with("<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>A</SessionID><MsgID>1</MsgID><Target>"));
        assert!(xml.contains(
            "<CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><Chal>"
        ));
        let back = SyncMl::parse(xml.as_bytes()).unwrap();
        assert!(back.rejected.is_empty());
        assert_eq!(back.message, msg);
    }
}
