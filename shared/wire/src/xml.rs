//! A small, namespace-aware element tree over quick-xml, and an escaping writer.
//!
//! Every request we parse is small (bodies are capped long before they get here), so a
//! tree is simpler and safer than streaming: parsers match elements by namespace and local
//! name, never by prefix, and simply ignore what they do not know.
//!
//! Hardening: DOCTYPE declarations are refused outright (so no entity can be defined, let
//! alone expanded), and only the five predefined entities and character references are
//! resolved. Every dimension of a document is bounded (see [`Limit`]) and every step is
//! linear in the input, so any body the HTTP layer lets through (1 MiB) is parsed or
//! refused in a few milliseconds:
//!
//! - quick-xml's duplicate-attribute check is quadratic in the attribute count, so it is
//!   off; duplicates are found here by sorting the (at most [`Limit::AttributesPerElement`])
//!   names of an element.
//! - Namespaces are resolved here rather than by quick-xml's `NsReader`: each declaration's
//!   URI is checked and interned once, where it is declared (interning the resolved URI
//!   of every element hashed a long URI once per element: 25 s for one 1 MiB document),
//!   and a lookup scans at most [`Limit::NamespacesInScope`] bindings.
//! - [`ns_eq`] ignores one trailing slash, not a run of them, so a comparison costs no
//!   more than comparing the strings.
//! - Names must be qualified names of at most [`Limit::NameBytes`]: quick-xml takes
//!   anything up to a blank as a name.
//! - Errors quote at most a short excerpt of the input.

use std::fmt::Write as _;
use std::sync::Arc;

use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{PrefixDeclaration, QName};
use quick_xml::reader::Reader;

/// A bound on one dimension of a document. Real messages stay far below all of them
/// (the largest SOAP and SyncML messages nest under 15 levels, carry a handful of
/// attributes per element and declare about ten namespaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Bytes in the whole document.
    DocumentBytes,
    /// Element nesting depth.
    Depth,
    /// Elements in the document.
    Elements,
    /// Attributes (namespace declarations included) on one element.
    AttributesPerElement,
    /// Attributes (namespace declarations included) in the document.
    Attributes,
    /// Namespace declarations in scope at once (on an element and its ancestors).
    NamespacesInScope,
    /// Bytes in an element, attribute or entity name (prefix included).
    NameBytes,
    /// Bytes in one attribute value, as written.
    AttributeValueBytes,
    /// Bytes in a namespace URI.
    NamespaceUriBytes,
}

impl Limit {
    /// The largest accepted value.
    pub const fn max(self) -> usize {
        match self {
            Limit::DocumentBytes => 4 * 1024 * 1024,
            Limit::Depth => 64,
            Limit::Elements => 20_000,
            Limit::AttributesPerElement => 64,
            Limit::Attributes => 20_000,
            Limit::NamespacesInScope => 64,
            Limit::NameBytes => 256,
            Limit::AttributeValueBytes => 64 * 1024,
            Limit::NamespaceUriBytes => 1024,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Limit::DocumentBytes => "bytes in the document",
            Limit::Depth => "levels of element nesting",
            Limit::Elements => "elements in the document",
            Limit::AttributesPerElement => "attributes on one element",
            Limit::Attributes => "attributes in the document",
            Limit::NamespacesInScope => "namespace declarations in scope",
            Limit::NameBytes => "bytes in a name",
            Limit::AttributeValueBytes => "bytes in an attribute value",
            Limit::NamespaceUriBytes => "bytes in a namespace URI",
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.max(), self.what())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XmlError {
    #[error("malformed XML: {0}")]
    Syntax(String),
    #[error("DOCTYPE declarations are not accepted")]
    Doctype,
    #[error("unknown entity reference &{0};")]
    UnknownEntity(String),
    #[error("XML exceeds the limit of {0}")]
    Limit(Limit),
    #[error("document has no root element")]
    Empty,
}

/// Longest excerpt of the input quoted in an error: messages end up in logs and faults.
const MAX_QUOTED: usize = 64;

/// `s`, cut to [`MAX_QUOTED`] bytes (on a character boundary) with an ellipsis.
fn clip(s: &str) -> String {
    if s.len() <= MAX_QUOTED {
        return s.to_owned();
    }
    let mut end = MAX_QUOTED;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A value a client sent, for an error message or a log line: its first [`MAX_QUOTED`]
/// bytes, quoted, with control characters escaped (which can lengthen it a few times, no
/// more) — so a fault that echoes it stays well-formed XML and small, and a log line stays
/// one line.
pub fn quote_claim(s: &str) -> String {
    format!("{:?}", clip(s))
}

fn syntax(e: impl std::fmt::Display) -> XmlError {
    // quick-xml's messages quote names from the input (e.g. a mismatched end tag).
    let msg = e.to_string();
    if msg.len() <= 4 * MAX_QUOTED {
        return XmlError::Syntax(msg);
    }
    let mut end = 4 * MAX_QUOTED;
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    XmlError::Syntax(format!("{}…", &msg[..end]))
}

/// One element: its namespace URI (if bound), local name, attributes, child elements and
/// character data. None of our vocabularies has mixed content, so the text directly inside
/// an element is kept as one string rather than interleaved with the children.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// Shared between the elements of one document: a message names a handful of
    /// namespaces across hundreds of elements.
    pub ns: Option<Arc<str>>,
    pub name: Arc<str>,
    pub attrs: Vec<Attr>,
    children: Vec<Element>,
    /// Character data directly inside this element, entity-resolved, CDATA included.
    text: String,
    /// Byte range of the element's content (between its start and end tags) in the parsed
    /// input, so a payload such as an XML blob inside SyncML `Data` can be taken verbatim.
    pub inner: std::ops::Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ns: Option<Arc<str>>,
    pub name: Arc<str>,
    pub value: String,
}

/// Namespace matching that tolerates the trailing-slash variants seen between the specs and
/// real clients (`…/2012/01/enrollment` vs `…/2012/01/enrollment/`). One slash at most is
/// ignored, so a comparison costs no more than comparing the strings.
pub fn ns_eq(actual: Option<&str>, wanted: &str) -> bool {
    fn trim(s: &str) -> &str {
        s.strip_suffix('/').unwrap_or(s)
    }
    match actual {
        Some(a) => trim(a) == trim(wanted),
        None => false,
    }
}

impl Element {
    /// Whether this element is `{ns}local`.
    pub fn is(&self, ns: &str, local: &str) -> bool {
        &*self.name == local && ns_eq(self.ns.as_deref(), ns)
    }

    /// Child elements, skipping text.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter()
    }

    /// First child `{ns}local`.
    pub fn child(&self, ns: &str, local: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(ns, local))
    }

    /// All children `{ns}local`.
    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        local: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.elements().filter(move |e| e.is(ns, local))
    }

    /// First child with this local name in any namespace or none: for vocabularies whose
    /// namespace handling differs between client versions.
    pub fn child_local(&self, local: &str) -> Option<&Element> {
        self.elements().find(|e| &*e.name == local)
    }

    /// Follows a path of `{ns}local` steps.
    pub fn path(&self, steps: &[(&str, &str)]) -> Option<&Element> {
        steps
            .iter()
            .try_fold(self, |el, (ns, local)| el.child(ns, local))
    }

    /// All text directly inside this element, concatenated, untrimmed.
    pub fn raw_text(&self) -> String {
        self.text.clone()
    }

    /// Text content with surrounding whitespace removed: spec examples wrap values in
    /// newlines and indentation.
    pub fn text(&self) -> String {
        self.text.trim().to_owned()
    }

    /// Attribute by local name, in no namespace or any namespace (clients vary in whether
    /// they qualify attributes such as `Type` and `ValueType`).
    pub fn attr(&self, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| &*a.name == local && a.ns.is_none())
            .or_else(|| self.attrs.iter().find(|a| &*a.name == local))
            .map(|a| a.value.as_str())
    }

    /// Whether the element is `xsi:nil="true"`.
    pub fn is_nil(&self) -> bool {
        self.attrs.iter().any(|a| {
            &*a.name == "nil"
                && a.ns.as_deref() == Some(XSI_NS)
                && matches!(a.value.trim(), "true" | "1")
        })
    }
}

pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// The namespace the `xml` prefix is bound to by definition.
pub const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
/// The namespace of `xmlns` declarations, which nothing may be bound to.
const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

fn over(limit: Limit) -> XmlError {
    XmlError::Limit(limit)
}

/// An element being read: the element, and how many namespace declarations it added to
/// the scope (taken off again at its end tag).
struct Open {
    el: Element,
    declared: usize,
}

/// Parses a whole document into its root element.
pub fn parse(input: &[u8]) -> Result<Element, XmlError> {
    if input.len() > Limit::DocumentBytes.max() {
        return Err(over(Limit::DocumentBytes));
    }
    let mut reader = Reader::from_reader(input);
    let config = reader.config_mut();
    config.trim_text(false);
    config.expand_empty_elements = true;
    config.check_end_names = true;

    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Element> = None;
    let mut doc = Document {
        names: Interner::new(),
        scope: Scope::default(),
        elements: 0,
        attributes: 0,
    };
    loop {
        // Events borrow from the input: nothing is copied until it becomes part of the tree.
        let event = reader.read_event().map_err(syntax)?;
        match event {
            Event::Start(start) => {
                doc.elements += 1;
                if doc.elements > Limit::Elements.max() {
                    return Err(over(Limit::Elements));
                }
                if stack.len() >= Limit::Depth.max() {
                    return Err(over(Limit::Depth));
                }
                if root.is_some() && stack.is_empty() {
                    return Err(XmlError::Syntax("more than one root element".into()));
                }
                let (mut el, declared) = doc.start_element(&start)?;
                let pos = reader.buffer_position() as usize;
                el.inner = pos..pos;
                stack.push(Open { el, declared });
            }
            Event::End(_) => {
                let Open {
                    el: mut done,
                    declared,
                } = stack
                    .pop()
                    .ok_or_else(|| XmlError::Syntax("unbalanced end tag".into()))?;
                doc.scope.pop(declared);
                let end = reader.buffer_position() as usize;
                // Content ends where this end tag starts: at the last `<` before its end
                // (an end tag holds no other `<`).
                let start = done.inner.start.min(end);
                let content_end = input[start..end]
                    .iter()
                    .rposition(|&b| b == b'<')
                    .map_or(end, |i| start + i);
                done.inner.end = content_end;
                match stack.last_mut() {
                    Some(parent) => parent.el.children.push(done),
                    None => root = Some(done),
                }
            }
            Event::Text(t) => {
                let s = t.decode().map_err(syntax)?;
                push_text(&mut stack, &s)?;
            }
            Event::CData(c) => {
                let s = c.decode().map_err(syntax)?;
                push_text(&mut stack, &s)?;
            }
            Event::GeneralRef(r) => {
                if r.len() > Limit::NameBytes.max() {
                    return Err(over(Limit::NameBytes));
                }
                let mut buf = [0u8; 4];
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(ch)) => &*ch.encode_utf8(&mut buf),
                    Ok(None) => {
                        let name = r.decode().map_err(syntax)?;
                        predefined_entity(&name)
                            .ok_or_else(|| XmlError::UnknownEntity(clip(&name)))?
                    }
                    Err(e) => return Err(syntax(e)),
                };
                push_text(&mut stack, resolved)?;
            }
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Eof => break,
            // Declarations, comments and processing instructions carry nothing we use.
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Empty(_) => unreachable!("expand_empty_elements is on"),
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Syntax("unexpected end of document".into()));
    }
    root.ok_or(XmlError::Empty)
}

fn push_text(stack: &mut [Open], s: &str) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(open) => {
            open.el.text.push_str(s);
            Ok(())
        }
        None if s.trim().is_empty() => Ok(()),
        None => Err(XmlError::Syntax("text outside the root element".into())),
    }
}

fn predefined_entity(name: &str) -> Option<&'static str> {
    Some(match name {
        "amp" => "&",
        "lt" => "<",
        "gt" => ">",
        "apos" => "'",
        "quot" => "\"",
        _ => return None,
    })
}

/// Checks an element or attribute name: bounded, and a qualified name (`local` or
/// `prefix:local`, each part a name that starts with a letter or `_`). quick-xml takes
/// whatever precedes the first blank as the name, quotes and slashes included.
fn check_name(name: QName<'_>) -> Result<(), XmlError> {
    let bytes = name.as_ref();
    if bytes.len() > Limit::NameBytes.max() {
        return Err(over(Limit::NameBytes));
    }
    // Non-ASCII bytes are left to the UTF-8 check: XML names may hold most letters.
    let start = |c: u8| c >= 0x80 || c.is_ascii_alphabetic() || c == b'_';
    let rest = |c: u8| start(c) || c.is_ascii_digit() || c == b'-' || c == b'.';
    let part = |p: &[u8]| p.first().is_some_and(|&c| start(c)) && p.iter().all(|&c| rest(c));
    let valid = match bytes.iter().position(|&c| c == b':') {
        None => part(bytes),
        Some(i) => part(&bytes[..i]) && part(&bytes[i + 1..]),
    };
    if valid {
        Ok(())
    } else {
        Err(XmlError::Syntax(format!(
            "invalid name {:?}",
            clip(&String::from_utf8_lossy(bytes))
        )))
    }
}

fn unescape(a: &Attribute<'_>) -> Result<String, XmlError> {
    a.unescape_value()
        .map(|v| v.into_owned())
        .map_err(|e| match e {
            quick_xml::Error::Escape(quick_xml::escape::EscapeError::UnrecognizedEntity(
                _,
                name,
            )) => XmlError::UnknownEntity(clip(&name)),
            other => syntax(other),
        })
}

/// Per-document state: interned names, the namespace scope and the running counts.
struct Document {
    names: Interner,
    scope: Scope,
    elements: usize,
    attributes: usize,
}

impl Document {
    /// Reads a start tag: declares its namespaces, then resolves its name and attributes.
    /// Returns the element and how many declarations it added to the scope.
    fn start_element(&mut self, start: &BytesStart<'_>) -> Result<(Element, usize), XmlError> {
        let qname = start.name();
        check_name(qname)?;
        // Declarations apply to the element's own name and attributes wherever they are
        // written in the tag, so they are taken first and the attributes kept for after.
        let mut keys: Vec<&[u8]> = Vec::new();
        let mut plain: Vec<Attribute<'_>> = Vec::new();
        let mut declared = 0;
        // quick-xml's duplicate check compares each attribute with all earlier ones.
        for a in start.attributes().with_checks(false) {
            if keys.len() == Limit::AttributesPerElement.max() {
                return Err(over(Limit::AttributesPerElement));
            }
            self.attributes += 1;
            if self.attributes > Limit::Attributes.max() {
                return Err(over(Limit::Attributes));
            }
            let a = a.map_err(syntax)?;
            check_name(a.key)?;
            if a.value.len() > Limit::AttributeValueBytes.max() {
                return Err(over(Limit::AttributeValueBytes));
            }
            keys.push(a.key.into_inner());
            match a.key.as_namespace_binding() {
                Some(decl) => {
                    if self.scope.declare(decl, &a, &mut self.names)? {
                        declared += 1;
                    }
                }
                None => plain.push(a),
            }
        }
        if self.scope.bindings.len() > Limit::NamespacesInScope.max() {
            return Err(over(Limit::NamespacesInScope));
        }
        // At most AttributesPerElement names: sorting them finds duplicates in n log n.
        keys.sort_unstable();
        if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
            return Err(XmlError::Syntax(format!(
                "duplicate attribute {}",
                clip(&String::from_utf8_lossy(w[0]))
            )));
        }

        let (local, prefix) = qname.decompose();
        let ns = self
            .scope
            .resolve(prefix.map(|p| p.into_inner()), true, &mut self.names)?;
        let name = self.names.intern(local.into_inner())?;
        let mut attrs = Vec::with_capacity(plain.len());
        for a in &plain {
            let (local, prefix) = a.key.decompose();
            attrs.push(Attr {
                ns: self
                    .scope
                    .resolve(prefix.map(|p| p.into_inner()), false, &mut self.names)?,
                name: self.names.intern(local.into_inner())?,
                value: unescape(a)?,
            });
        }
        // Two prefixes bound to one namespace can still name the same attribute twice.
        if attrs.len() > 1 {
            let mut expanded: Vec<(Option<&str>, &str)> =
                attrs.iter().map(|a| (a.ns.as_deref(), &*a.name)).collect();
            expanded.sort_unstable();
            if let Some(w) = expanded.windows(2).find(|w| w[0] == w[1]) {
                return Err(XmlError::Syntax(format!(
                    "duplicate attribute {{{}}}{}",
                    clip(w[0].0.unwrap_or_default()),
                    w[0].1
                )));
            }
        }
        Ok((
            Element {
                ns,
                name,
                attrs,
                children: Vec::new(),
                text: String::new(),
                inner: 0..0,
            },
            declared,
        ))
    }
}

/// One namespace declaration in scope: `prefix` is `None` for the default namespace, and
/// `ns` is `None` where `xmlns=""` undeclares it.
struct Binding {
    prefix: Option<Arc<str>>,
    ns: Option<Arc<str>>,
}

/// The namespace declarations in scope, innermost last. Lookups scan it from the end;
/// it holds at most [`Limit::NamespacesInScope`] bindings (plus those of the element being
/// read, which is refused if it takes the scope over the limit).
#[derive(Default)]
struct Scope {
    bindings: Vec<Binding>,
    xml_ns: Option<Arc<str>>,
    xmlns_ns: Option<Arc<str>>,
}

impl Scope {
    /// Adds a declaration; returns whether a binding was added (`xmlns:xml` with its
    /// predefined value adds none).
    fn declare(
        &mut self,
        decl: PrefixDeclaration<'_>,
        attr: &Attribute<'_>,
        names: &mut Interner,
    ) -> Result<bool, XmlError> {
        let uri = unescape(attr)?;
        if uri.len() > Limit::NamespaceUriBytes.max() {
            return Err(over(Limit::NamespaceUriBytes));
        }
        let reserved = uri == XML_NS || uri == XMLNS_NS;
        let prefix = match decl {
            PrefixDeclaration::Default => None,
            PrefixDeclaration::Named(b"xml") if uri == XML_NS => return Ok(false),
            PrefixDeclaration::Named(b"xml") | PrefixDeclaration::Named(b"xmlns") => {
                return Err(XmlError::Syntax(format!(
                    "the {} prefix cannot be declared",
                    String::from_utf8_lossy(attr.key.local_name().into_inner())
                )));
            }
            PrefixDeclaration::Named(b"") => {
                return Err(XmlError::Syntax("xmlns: declares an empty prefix".into()));
            }
            PrefixDeclaration::Named(p) => {
                if uri.is_empty() {
                    return Err(XmlError::Syntax(format!(
                        "prefix {} is bound to an empty namespace",
                        clip(&String::from_utf8_lossy(p))
                    )));
                }
                Some(names.intern(p)?)
            }
        };
        if reserved {
            return Err(XmlError::Syntax(format!(
                "{} cannot be bound to another prefix",
                clip(&uri)
            )));
        }
        let ns = if uri.is_empty() {
            None
        } else {
            Some(names.intern(uri.as_bytes())?)
        };
        self.bindings.push(Binding { prefix, ns });
        Ok(true)
    }

    fn pop(&mut self, declared: usize) {
        let keep = self.bindings.len().saturating_sub(declared);
        self.bindings.truncate(keep);
    }

    /// The namespace of a name with this prefix. Unprefixed element names take the default
    /// namespace; unprefixed attribute names have none. An undeclared prefix resolves to
    /// no namespace, so the name matches nothing a parser looks for.
    fn resolve(
        &mut self,
        prefix: Option<&[u8]>,
        use_default: bool,
        names: &mut Interner,
    ) -> Result<Option<Arc<str>>, XmlError> {
        let wanted = match prefix {
            None if !use_default => return Ok(None),
            None => None,
            Some(b"xml") => {
                let ns = self.xml_ns.get_or_insert_with(|| names.intern_str(XML_NS));
                return Ok(Some(ns.clone()));
            }
            Some(b"xmlns") => {
                let ns = self
                    .xmlns_ns
                    .get_or_insert_with(|| names.intern_str(XMLNS_NS));
                return Ok(Some(ns.clone()));
            }
            Some(p) => Some(p),
        };
        Ok(self
            .bindings
            .iter()
            .rev()
            .find(|b| b.prefix.as_deref().map(str::as_bytes) == wanted)
            .and_then(|b| b.ns.clone()))
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, XmlError> {
    std::str::from_utf8(bytes).map_err(syntax)
}

/// Element names, attribute names and namespace URIs repeat across a document's elements
/// (a SyncML message is hundreds of `CmdID`, `Item`, `LocURI`…), so each distinct one is
/// allocated once. The table is direct-mapped and fixed in size: a lookup is one hash and
/// one comparison whatever the input, and a collision merely allocates again. Names are at
/// most [`Limit::NameBytes`] long and URIs are interned once per declaration, so hashing
/// stays linear in the input.
struct Interner {
    slots: Vec<Option<Arc<str>>>,
}

const INTERNER_SLOTS: usize = 128;

impl Interner {
    fn new() -> Self {
        Self {
            slots: vec![None; INTERNER_SLOTS],
        }
    }

    fn slot(&mut self, bytes: &[u8]) -> &mut Option<Arc<str>> {
        // FNV-1a: names are short, and this needs no resistance to chosen collisions.
        let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        &mut self.slots[(hash % INTERNER_SLOTS as u64) as usize]
    }

    fn intern(&mut self, bytes: &[u8]) -> Result<Arc<str>, XmlError> {
        let slot = self.slot(bytes);
        if let Some(known) = slot
            && known.as_bytes() == bytes
        {
            return Ok(known.clone());
        }
        let new: Arc<str> = Arc::from(utf8(bytes)?);
        *slot = Some(new.clone());
        Ok(new)
    }

    fn intern_str(&mut self, s: &str) -> Arc<str> {
        self.intern(s.as_bytes()).expect("a str is UTF-8")
    }
}

/// Whether every character of `s` may appear in an XML 1.0 document (tab, newline and
/// carriage return are the only control characters allowed; escaping cannot represent the
/// others, not even as character references). Text we put in a message must pass, or the
/// device cannot parse the message — nor anything else queued in it.
pub fn is_xml_text(s: &str) -> bool {
    s.chars().all(|c| {
        matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
            || c >= '\u{10000}'
    })
}

/// Escapes text for element content and double-quoted attribute values.
/// A carriage return is written as `&#xD;`: a parser turns a literal CR LF into LF (XML's
/// end-of-line handling), so a value with CR LF would read back changed on the device.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'', '\r']) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A minimal XML writer: the element order of every response is fixed by its schema, so
/// the builders write elements in order and this only takes care of escaping and nesting.
#[derive(Debug, Default)]
pub struct XmlWriter {
    out: String,
    open: Vec<&'static str>,
}

impl XmlWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Self {
            out: String::with_capacity(n),
            open: Vec::new(),
        }
    }

    fn start_tag(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.out.push('<');
        self.out.push_str(name);
        for (k, v) in attrs {
            let _ = write!(self.out, " {k}=\"{}\"", escape(v));
        }
    }

    /// Opens `<name attrs…>`; close it with [`XmlWriter::end`].
    pub fn start(&mut self, name: &'static str, attrs: &[(&str, &str)]) -> &mut Self {
        self.start_tag(name, attrs);
        self.out.push('>');
        self.open.push(name);
        self
    }

    /// Closes the innermost open element.
    pub fn end(&mut self) -> &mut Self {
        let name = self.open.pop().expect("end() without start()");
        let _ = write!(self.out, "</{name}>");
        self
    }

    /// `<name attrs…>text</name>`.
    pub fn leaf(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) -> &mut Self {
        self.start_tag(name, attrs);
        let _ = write!(self.out, ">{}</{name}>", escape(text));
        self
    }

    /// `<name attrs…/>`.
    pub fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.start_tag(name, attrs);
        self.out.push_str("/>");
        self
    }

    /// `<name xsi:nil="true"/>`; the `xsi` prefix must be declared by an ancestor.
    pub fn nil(&mut self, name: &str) -> &mut Self {
        self.empty(name, &[("xsi:nil", "true")])
    }

    /// Escaped character data.
    pub fn text(&mut self, text: &str) -> &mut Self {
        self.out.push_str(&escape(text));
        self
    }

    pub fn finish(self) -> String {
        debug_assert!(self.open.is_empty(), "unclosed elements: {:?}", self.open);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CR LF in a value reads back as CR LF: written as a character reference, which
    /// end-of-line handling leaves alone.
    #[test]
    fn carriage_returns_survive_the_round_trip() {
        let value = "line 1\r\nline 2";
        assert_eq!(escape(value), "line 1&#xD;\nline 2");
        let doc = format!("<a>{}</a>", escape(value));
        assert!(!doc.contains('\r'));
        assert_eq!(parse(doc.as_bytes()).unwrap().text(), value);
    }

    #[test]
    fn xml_text_is_what_xml_1_0_can_carry() {
        for ok in ["", "a\tb\r\n", "é 😀 \u{E000} \u{FFFD}"] {
            assert!(is_xml_text(ok), "{ok:?}");
        }
        for bad in [
            "\u{0}", "a\u{1}", "\u{1b}", "x\u{8}", "\u{FFFE}", "\u{FFFF}",
        ] {
            assert!(!is_xml_text(bad), "{bad:?}");
        }
    }

    #[test]
    fn matches_by_namespace_not_prefix() {
        let doc =
            br#"<x:a xmlns:x="urn:one" xmlns:y="urn:two"><y:b>  hi  </y:b><x:b>there</x:b></x:a>"#;
        let root = parse(doc).unwrap();
        assert!(root.is("urn:one", "a"));
        assert_eq!(root.child("urn:two", "b").unwrap().text(), "hi");
        assert_eq!(root.child("urn:one", "b").unwrap().text(), "there");
    }

    #[test]
    fn trailing_slash_namespaces_match() {
        let root = parse(br#"<a xmlns="urn:x/y/"/>"#).unwrap();
        assert!(root.is("urn:x/y", "a"));
    }

    #[test]
    fn refuses_doctype_and_unknown_entities() {
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><a>&lol;</a>"#;
        assert_eq!(parse(bomb), Err(XmlError::Doctype));
        assert!(matches!(
            parse(b"<a>&lol;</a>"),
            Err(XmlError::UnknownEntity(_))
        ));
        assert!(matches!(
            parse(b"<a b=\"&lol;\"/>"),
            Err(XmlError::UnknownEntity(_))
        ));
    }

    #[test]
    fn resolves_predefined_and_char_refs_and_cdata() {
        let root = parse(b"<a>x &amp; y &#65;&#x42;<![CDATA[<raw>]]></a>").unwrap();
        assert_eq!(root.raw_text(), "x & y AB<raw>");
    }

    #[test]
    fn records_inner_spans() {
        let doc = b"<a><b x=\"1\"><c>t</c> &amp; </b><e/></a>";
        let root = parse(doc).unwrap();
        let b = root.elements().next().unwrap();
        assert_eq!(&doc[b.inner.clone()], b"<c>t</c> &amp; ");
        let e = root.elements().nth(1).unwrap();
        assert!(e.inner.is_empty());
    }

    #[test]
    fn interns_repeated_names_and_namespaces() {
        let root = parse(br#"<a xmlns="urn:x"><b>1</b><b>2</b><c xmlns="urn:y"/></a>"#).unwrap();
        let bs: Vec<_> = root.children_named("urn:x", "b").collect();
        assert_eq!(bs.len(), 2);
        assert!(Arc::ptr_eq(&bs[0].name, &bs[1].name));
        assert!(Arc::ptr_eq(
            bs[0].ns.as_ref().unwrap(),
            root.ns.as_ref().unwrap()
        ));
        assert!(root.child("urn:y", "c").is_some());
    }

    #[test]
    fn more_distinct_names_than_interner_slots_still_parse() {
        let mut doc = String::from("<r>");
        for i in 0..(INTERNER_SLOTS * 3) {
            doc.push_str(&format!("<n{i} xmlns=\"urn:{i}\">{i}</n{i}>"));
        }
        doc.push_str("</r>");
        let root = parse(doc.as_bytes()).unwrap();
        for (i, el) in root.elements().enumerate() {
            assert_eq!(&*el.name, format!("n{i}"));
            assert_eq!(el.ns.as_deref(), Some(format!("urn:{i}").as_str()));
            assert_eq!(el.text(), i.to_string());
        }
    }

    #[test]
    fn text_around_child_elements_is_kept_in_order() {
        let root = parse(b"<a> x <b>in</b> y&amp;z </a>").unwrap();
        assert_eq!(root.raw_text(), " x  y&z ");
        assert_eq!(root.child_local("b").unwrap().text(), "in");
    }

    #[test]
    fn refuses_names_that_are_not_utf8() {
        assert!(matches!(parse(b"<a\xff/>"), Err(XmlError::Syntax(_))));
    }

    #[test]
    fn bounds_depth() {
        let max = Limit::Depth.max();
        let ok = "<a>".repeat(max) + &"</a>".repeat(max);
        assert!(parse(ok.as_bytes()).is_ok());
        let deep = "<a>".repeat(max + 1) + &"</a>".repeat(max + 1);
        assert_eq!(parse(deep.as_bytes()), Err(XmlError::Limit(Limit::Depth)));
    }

    fn attrs(n: usize, f: impl Fn(usize) -> String) -> String {
        (0..n).map(f).collect()
    }

    #[test]
    fn bounds_attributes_per_element() {
        let max = Limit::AttributesPerElement.max();
        let ok = format!("<a{}/>", attrs(max, |i| format!(" a{i}=\"\"")));
        assert_eq!(parse(ok.as_bytes()).unwrap().attrs.len(), max);
        let over = format!("<a{}/>", attrs(max + 1, |i| format!(" a{i}=\"\"")));
        assert_eq!(
            parse(over.as_bytes()),
            Err(XmlError::Limit(Limit::AttributesPerElement))
        );
        // Namespace declarations are attributes too.
        let decls = format!(
            "<a{}/>",
            attrs(max + 1, |i| format!(" xmlns:p{i}=\"urn:{i}\""))
        );
        assert_eq!(
            parse(decls.as_bytes()),
            Err(XmlError::Limit(Limit::AttributesPerElement))
        );
    }

    #[test]
    fn the_reported_attribute_flood_is_refused() {
        // ~90,000 attributes in under 1 MiB: quadratic in quick-xml's duplicate check.
        let mut doc = String::from("<a");
        let mut i = 0;
        while doc.len() < 1_000_000 {
            doc.push_str(&format!(" a{i}=\"\""));
            i += 1;
        }
        doc.push_str("/>");
        let err = parse(doc.as_bytes()).unwrap_err();
        assert_eq!(err, XmlError::Limit(Limit::AttributesPerElement));
        assert_eq!(
            err.to_string(),
            "XML exceeds the limit of 64 attributes on one element"
        );
    }

    #[test]
    fn bounds_attributes_in_the_document() {
        let per = Limit::AttributesPerElement.max();
        let elements = Limit::Attributes.max() / per;
        let rest = Limit::Attributes.max() - elements * per;
        let el = format!("<e{}/>", attrs(per, |i| format!(" a{i}=\"\"")));
        let doc = |on_root: usize| {
            format!(
                "<r{}>{}</r>",
                attrs(on_root, |i| format!(" r{i}=\"\"")),
                el.repeat(elements)
            )
        };
        assert!(parse(doc(rest).as_bytes()).is_ok());
        assert!(matches!(
            parse(doc(rest + 1).as_bytes()),
            Err(XmlError::Limit(Limit::Attributes))
        ));
    }

    #[test]
    fn refuses_duplicate_attributes() {
        for doc in [
            &b"<a x=\"1\" y=\"\" x=\"2\"/>"[..],
            b"<a xmlns:p=\"urn:p\" xmlns:p=\"urn:q\"/>",
            b"<a xmlns=\"urn:p\" xmlns=\"urn:q\"/>",
            // Same expanded name through two prefixes.
            b"<a xmlns:p=\"urn:x\" xmlns:q=\"urn:x\" p:b=\"1\" q:b=\"2\"/>",
        ] {
            let err = parse(doc).unwrap_err();
            assert!(
                matches!(&err, XmlError::Syntax(m) if m.contains("duplicate attribute")),
                "{err:?}"
            );
        }
        // The same local name in different namespaces is two attributes.
        let root = parse(b"<a xmlns:p=\"urn:p\" b=\"1\" p:b=\"2\"/>").unwrap();
        assert_eq!(root.attrs.len(), 2);
    }

    #[test]
    fn bounds_namespaces_in_scope() {
        let max = Limit::NamespacesInScope.max();
        // Half on the root, half on a child: 64 in scope is fine…
        let half = |from: usize| attrs(max / 2, |i| format!(" xmlns:p{}=\"urn:{i}\"", from + i));
        let ok = format!(
            "<a{}><b{}/><b{}/></a>",
            half(0),
            half(max / 2),
            half(max / 2)
        );
        assert!(
            parse(ok.as_bytes()).is_ok(),
            "siblings' declarations go out of scope"
        );
        // …one more on the child is not.
        let over = format!("<a{}><b{} xmlns:z=\"urn:z\"/></a>", half(0), half(max / 2));
        assert_eq!(
            parse(over.as_bytes()),
            Err(XmlError::Limit(Limit::NamespacesInScope))
        );
    }

    #[test]
    fn bounds_name_lengths() {
        let max = Limit::NameBytes.max();
        let ok = "n".repeat(max);
        let long = "n".repeat(max + 1);
        assert!(parse(format!("<{ok} {ok}=\"\"/>").as_bytes()).is_ok());
        assert!(
            parse(format!("<p:{} xmlns:p=\"urn:p\"/>", "n".repeat(max - 2)).as_bytes()).is_ok()
        );
        for doc in [
            format!("<{long}/>"),
            format!("<a {long}=\"\"/>"),
            format!("<a>&{long};</a>"),
        ] {
            assert_eq!(
                parse(doc.as_bytes()),
                Err(XmlError::Limit(Limit::NameBytes)),
                "{doc}"
            );
        }
    }

    #[test]
    fn bounds_values_uris_elements_and_size() {
        let value = Limit::AttributeValueBytes.max();
        assert!(parse(format!("<a b=\"{}\"/>", "v".repeat(value)).as_bytes()).is_ok());
        assert_eq!(
            parse(format!("<a b=\"{}\"/>", "v".repeat(value + 1)).as_bytes()),
            Err(XmlError::Limit(Limit::AttributeValueBytes))
        );
        let uri = Limit::NamespaceUriBytes.max();
        assert!(parse(format!("<a xmlns=\"{}\"/>", "u".repeat(uri)).as_bytes()).is_ok());
        assert_eq!(
            parse(format!("<a xmlns:p=\"{}\"/>", "u".repeat(uri + 1)).as_bytes()),
            Err(XmlError::Limit(Limit::NamespaceUriBytes))
        );
        let n = Limit::Elements.max();
        assert!(parse(format!("<r>{}</r>", "<a/>".repeat(n - 1)).as_bytes()).is_ok());
        assert_eq!(
            parse(format!("<r>{}</r>", "<a/>".repeat(n)).as_bytes()),
            Err(XmlError::Limit(Limit::Elements))
        );
        let big = format!("<a>{}</a>", " ".repeat(Limit::DocumentBytes.max()));
        assert_eq!(
            parse(big.as_bytes()),
            Err(XmlError::Limit(Limit::DocumentBytes))
        );
    }

    #[test]
    fn checks_namespace_declarations() {
        for bad in [
            &b"<a xmlns:xml=\"urn:x\"/>"[..],
            b"<a xmlns:xmlns=\"urn:x\"/>",
            b"<a xmlns:p=\"\"/>",
            b"<a xmlns:=\"urn:x\"/>",
            b"<a xmlns:p=\"http://www.w3.org/XML/1998/namespace\"/>",
            b"<a xmlns=\"http://www.w3.org/2000/xmlns/\"/>",
        ] {
            assert!(
                matches!(parse(bad), Err(XmlError::Syntax(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // xml: is bound by definition, and may be declared with its own value.
        let root =
            parse(b"<a xmlns:xml=\"http://www.w3.org/XML/1998/namespace\" xml:lang=\"en\"/>")
                .unwrap();
        assert_eq!(root.attrs[0].ns.as_deref(), Some(XML_NS));
        // Declarations apply to their own element wherever they are written, and
        // xmlns="" undeclares the default namespace.
        let root =
            parse(b"<p:a p:x=\"1\" xmlns:p=\"urn:p\" xmlns=\"urn:d\"><b xmlns=\"\"/><c/></p:a>")
                .unwrap();
        assert!(root.is("urn:p", "a"));
        assert_eq!(root.attrs[0].ns.as_deref(), Some("urn:p"));
        assert_eq!(root.child_local("b").unwrap().ns, None);
        assert!(root.child("urn:d", "c").is_some());
        // An undeclared prefix matches no namespace (as before).
        let root = parse(b"<q:a q:b=\"1\"/>").unwrap();
        assert_eq!((root.ns.clone(), &*root.name), (None, "a"));
        assert_eq!(root.attrs[0].ns, None);
    }

    #[test]
    fn errors_quote_short_excerpts() {
        let long = "b".repeat(100_000);
        for doc in [
            format!("<a></{long}>"),
            format!("<a>&{};</a>", &long[..200]),
        ] {
            let err = parse(doc.as_bytes()).unwrap_err();
            assert!(err.to_string().len() < 300, "{err}");
        }
        assert!(clip(&"é".repeat(100)).ends_with('…'));
    }

    #[test]
    fn ns_eq_ignores_one_trailing_slash() {
        assert!(ns_eq(Some("urn:a/"), "urn:a"));
        assert!(ns_eq(Some("urn:a"), "urn:a/"));
        assert!(!ns_eq(Some("urn:a//"), "urn:a"));
        assert!(!ns_eq(None, "urn:a"));
    }

    #[test]
    fn refuses_names_that_are_not_qualified_names() {
        for bad in [
            &b"<\"urn:x\"/>"[..],
            b"<a:b:c/>",
            b"<:a/>",
            b"<a:/>",
            b"<1a/>",
            b"<a b&c=\"1\"/>",
            b"<a p:=\"1\"/>",
            b"<a -x=\"1\"/>",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(
                matches!(&err, XmlError::Syntax(m) if m.contains("invalid name")),
                "{}: {err:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let root = parse(
            "<wap-provisioningdoc _a.b-1=\"\" xml:lang=\"en\"><caf\u{e9}/></wap-provisioningdoc>"
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            root.child_local("caf\u{e9}").map(|e| &*e.name),
            Some("caf\u{e9}")
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(b"").is_err());
        assert!(parse(b"<a><b></a>").is_err());
        assert!(parse(b"not xml").is_err());
    }

    #[test]
    fn writer_escapes() {
        let mut w = XmlWriter::new();
        w.start("a", &[("k", "\"<&>")])
            .leaf("b", &[], "1 < 2")
            .end();
        assert_eq!(
            w.finish(),
            r#"<a k="&quot;&lt;&amp;&gt;"><b>1 &lt; 2</b></a>"#
        );
    }
}
