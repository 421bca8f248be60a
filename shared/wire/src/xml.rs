//! A small, namespace-aware element tree over quick-xml, and an escaping writer.
//!
//! Every request we parse is small (bodies are capped long before they get here), so a
//! tree is simpler and safer than streaming: parsers match elements by namespace and local
//! name, never by prefix, and simply ignore what they do not know.
//!
//! Hardening: DOCTYPE declarations are refused outright (so no entity can be defined, let
//! alone expanded), only the five predefined entities and character references are
//! resolved, and depth and element count are bounded.

use std::fmt::Write as _;
use std::sync::Arc;

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

/// Deepest element nesting accepted; real messages nest fewer than 15 levels.
const MAX_DEPTH: usize = 64;
/// Most elements accepted in one document.
const MAX_ELEMENTS: usize = 20_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XmlError {
    #[error("malformed XML: {0}")]
    Syntax(String),
    #[error("DOCTYPE declarations are not accepted")]
    Doctype,
    #[error("unknown entity reference &{0};")]
    UnknownEntity(String),
    #[error("XML nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("XML has more than {MAX_ELEMENTS} elements")]
    TooManyElements,
    #[error("document has no root element")]
    Empty,
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
/// real clients (`…/2012/01/enrollment` vs `…/2012/01/enrollment/`).
pub fn ns_eq(actual: Option<&str>, wanted: &str) -> bool {
    match actual {
        Some(a) => a.trim_end_matches('/') == wanted.trim_end_matches('/'),
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

/// Parses a whole document into its root element.
pub fn parse(input: &[u8]) -> Result<Element, XmlError> {
    let mut reader = NsReader::from_reader(input);
    let config = reader.config_mut();
    config.trim_text(false);
    config.expand_empty_elements = true;
    config.check_end_names = true;

    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    let mut names = Interner::new();
    loop {
        // Events borrow from the input: nothing is copied until it becomes part of the tree.
        let event = reader
            .read_event()
            .map_err(|e| XmlError::Syntax(e.to_string()))?;
        match event {
            Event::Start(start) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(XmlError::TooManyElements);
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                if root.is_some() && stack.is_empty() {
                    return Err(XmlError::Syntax("more than one root element".into()));
                }
                let mut el = start_element(&reader, &start, &mut names)?;
                let pos = reader.buffer_position() as usize;
                el.inner = pos..pos;
                stack.push(el);
            }
            Event::End(_) => {
                let mut done = stack
                    .pop()
                    .ok_or_else(|| XmlError::Syntax("unbalanced end tag".into()))?;
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
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            Event::Text(t) => {
                let s = t.decode().map_err(|e| XmlError::Syntax(e.to_string()))?;
                push_text(&mut stack, &s)?;
            }
            Event::CData(c) => {
                let s = c.decode().map_err(|e| XmlError::Syntax(e.to_string()))?;
                push_text(&mut stack, &s)?;
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(ch)) => ch.to_string(),
                    Ok(None) => {
                        let name = r.decode().map_err(|e| XmlError::Syntax(e.to_string()))?;
                        predefined_entity(&name)
                            .ok_or_else(|| XmlError::UnknownEntity(name.to_string()))?
                            .to_owned()
                    }
                    Err(e) => return Err(XmlError::Syntax(e.to_string())),
                };
                push_text(&mut stack, &resolved)?;
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

fn push_text(stack: &mut [Element], s: &str) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(el) => {
            el.text.push_str(s);
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

fn start_element(
    reader: &NsReader<&[u8]>,
    start: &BytesStart<'_>,
    names: &mut Interner,
) -> Result<Element, XmlError> {
    let (ns, _) = reader.resolve_element(start.name());
    let name = names.intern(start.local_name().as_ref())?;
    let ns = names.namespace(ns)?;
    let mut attrs = Vec::new();
    for a in start.attributes() {
        let a = a.map_err(|e| XmlError::Syntax(e.to_string()))?;
        if a.key.as_namespace_binding().is_some() {
            continue;
        }
        let (ans, local) = reader.resolve_attribute(a.key);
        let value = a.unescape_value().map_err(|e| match e {
            quick_xml::Error::Escape(quick_xml::escape::EscapeError::UnrecognizedEntity(
                _,
                name,
            )) => XmlError::UnknownEntity(name),
            other => XmlError::Syntax(other.to_string()),
        })?;
        attrs.push(Attr {
            ns: names.namespace(ans)?,
            name: names.intern(local.as_ref())?,
            value: value.into_owned(),
        });
    }
    Ok(Element {
        ns,
        name,
        attrs,
        children: Vec::new(),
        text: String::new(),
        inner: 0..0,
    })
}

fn utf8(bytes: &[u8]) -> Result<&str, XmlError> {
    std::str::from_utf8(bytes).map_err(|e| XmlError::Syntax(e.to_string()))
}

/// Element names, attribute names and namespace URIs repeat across a document's elements
/// (a SyncML message is hundreds of `CmdID`, `Item`, `LocURI`…), so each distinct one is
/// allocated once. The table is direct-mapped and fixed in size: a lookup is one hash and
/// one comparison whatever the input, and a collision merely allocates again.
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

    fn intern(&mut self, bytes: &[u8]) -> Result<Arc<str>, XmlError> {
        // FNV-1a: names are short, and this needs no resistance to chosen collisions.
        let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let slot = &mut self.slots[(hash % INTERNER_SLOTS as u64) as usize];
        if let Some(known) = slot
            && known.as_bytes() == bytes
        {
            return Ok(known.clone());
        }
        let new: Arc<str> = Arc::from(utf8(bytes)?);
        *slot = Some(new.clone());
        Ok(new)
    }

    fn namespace(&mut self, r: ResolveResult<'_>) -> Result<Option<Arc<str>>, XmlError> {
        match r {
            ResolveResult::Bound(ns) => self.intern(ns.as_ref()).map(Some),
            _ => Ok(None),
        }
    }
}

/// Escapes text for element content and double-quoted attribute values.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
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
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(deep.as_bytes()), Err(XmlError::TooDeep));
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
