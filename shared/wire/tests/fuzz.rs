//! Fuzzing of every wire parser that sees network bytes — the XML tree, SOAP envelopes
//! with the Discover, GetPolicies and RequestSecurityToken bodies, and SyncML — plus the
//! catalogue of worst-case inputs the parser's bounds are there for.
//!
//! `cargo test -p winmdm-wire --test fuzz` runs a few thousand inputs per target (a few
//! seconds); `WINMDM_FUZZ_ITERATIONS=200000 cargo test --release -p winmdm-wire --test fuzz`
//! runs a long campaign. The worst-case timings are printed by
//! `cargo test --release -p winmdm-wire --test fuzz -- --ignored --nocapture worst_case_timings`.

#[path = "support/mutate.rs"]
mod mutate;

use std::time::{Duration, Instant};

use mutate::{Mutator, assert_clear_error, iterations, run};
use winmdm_wire::discovery::DiscoverRequest;
use winmdm_wire::ns;
use winmdm_wire::soap::{Envelope, Fault, FaultCode};
use winmdm_wire::syncml::{self, SyncMl, SyncMlError};
use winmdm_wire::wstep::{self, RequestSecurityToken, RstError};
use winmdm_wire::xcep::GetPoliciesRequest;
use winmdm_wire::xml::{self, Element, Limit, XML_NS, XmlError, escape};

/// The HTTP layer's body limit: the largest input an attacker can send.
const BODY: usize = 1024 * 1024;
/// Default inputs per target: keeps the debug-build run to a few seconds.
const DEFAULT_ITERATIONS: usize = 3_000;

// ---------------------------------------------------------------------------------------
// Seeds: the messages Windows sends (shapes from tests/src/messages.rs and the captures in
// the parsers' own tests), and what our writers produce.

fn envelope(action: &str, security: &str, body: &str) -> String {
    format!(
        r#"<s:Envelope xmlns:s="{soap}" xmlns:a="{a}" xmlns:u="{u}" xmlns:wsse="{wsse}" xmlns:wst="{wst}" xmlns:ac="{ac}">
  <s:Header>
    <a:Action s:mustUnderstand="1">{action}</a:Action>
    <a:MessageID>urn:uuid:0d5a1441-5891-453b-becf-a2e5f6ea3749</a:MessageID>
    <a:ReplyTo><a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address></a:ReplyTo>
    <a:To s:mustUnderstand="1">https://enterpriseenrollment.example.com/EnrollmentServer/Enrollment.svc</a:To>
    {security}
  </s:Header>
  <s:Body>{body}</s:Body>
</s:Envelope>"#,
        soap = ns::SOAP,
        a = ns::ADDRESSING,
        u = ns::WSU,
        wsse = ns::WSSE,
        wst = ns::WST,
        ac = ns::AC,
    )
}

fn username_token() -> String {
    format!(
        r#"<wsse:Security s:mustUnderstand="1"><wsse:UsernameToken u:Id="uuid-cc1ccc1f-2fba-4bcf-b063-ffc0cac77917-4"><wsse:Username>alice@example.com</wsse:Username><wsse:Password wsse:Type="{}">correct &amp; horse</wsse:Password></wsse:UsernameToken></wsse:Security>"#,
        ns::token::PASSWORD_TEXT
    )
}

fn binary_token() -> String {
    format!(
        r#"<wsse:Security s:mustUnderstand="1"><wsse:BinarySecurityToken ValueType="{}" EncodingType="{}">dG9rZW4=</wsse:BinarySecurityToken></wsse:Security>"#,
        ns::token::DEVICE_ENROLLMENT_USER_TOKEN,
        ns::token::BASE64_BINARY
    )
}

/// A PKCS#10 header and some body, base64: the parsers only decode it.
const FAKE_DER_B64: &str = "MIICrzCCAZcCAQAwajFoMGYGA1UEAx5fAEIAOAA1ADYAQwA4ADgAMQAtADMANwBC\nADAALQA0ADkAQQA1AC0AOQA0ADUAMQAtADEAMgA2ADkARQA4AEQAMgA0ADYAOAAw\nAAAAMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA";

fn rst(request_type: &str, value_type: &str, security: &str) -> String {
    let items: String = [
        ("UXInitiated", "true"),
        ("HWDevID", "B8567F0A7D4C6C5C4D7E0E7E4F3A2B1C"),
        ("Locale", "en-US"),
        ("TargetedUserLoggedIn", "true"),
        ("EnrollmentData", ""),
        ("OSEdition", "48"),
        ("DeviceName", "DESKTOP-EMU01"),
        ("MAC", "00-15-5D-01-02-03"),
        ("DeviceID", "B8A1C9D2E3F4"),
        ("EnrollmentType", "Full"),
        ("DeviceType", "CIMClient_Windows"),
        ("OSVersion", "10.0.22621.2"),
        ("ApplicationVersion", "10.0.22621.2"),
        ("NotInOobe", "false"),
    ]
    .iter()
    .map(|(k, v)| {
        format!(r#"<ac:ContextItem Name="{k}"><ac:Value>{v}</ac:Value></ac:ContextItem>"#)
    })
    .collect();
    let body = format!(
        r#"<wst:RequestSecurityToken>
      <wst:TokenType>{tt}</wst:TokenType>
      <wst:RequestType>{request_type}</wst:RequestType>
      <wsse:BinarySecurityToken ValueType="{value_type}" EncodingType="{et}">{FAKE_DER_B64}</wsse:BinarySecurityToken>
      <ac:AdditionalContext xmlns="{ac}">{items}</ac:AdditionalContext>
    </wst:RequestSecurityToken>"#,
        tt = ns::token::DEVICE_ENROLLMENT_TOKEN,
        et = ns::token::BASE64_BINARY,
        ac = ns::AC,
    );
    envelope(ns::action::RST, security, &body)
}

fn discover(ns_uri: &str) -> String {
    let body = format!(
        r#"<Discover xmlns="{ns_uri}">
      <request xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
        <EmailAddress>alice@example.com</EmailAddress>
        <RequestVersion>5.0</RequestVersion>
        <DeviceType>CIMClient_Windows</DeviceType>
        <ApplicationVersion>10.0.22621.2</ApplicationVersion>
        <OSEdition>48</OSEdition>
        <AuthPolicies><AuthPolicy>OnPremise</AuthPolicy><AuthPolicy>Federated</AuthPolicy></AuthPolicies>
      </request>
    </Discover>"#
    );
    envelope(ns::action::DISCOVER, "", &body)
}

fn get_policies(security: &str) -> String {
    let body = format!(
        r#"<GetPolicies xmlns="{}"><client><lastUpdate xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/><preferredLanguage xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/></client><requestFilter xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/></GetPolicies>"#,
        ns::XCEP
    );
    envelope(ns::action::GET_POLICIES, security, &body)
}

/// Package #1 as a Windows 11 client sends it.
const PACKAGE1: &str = r#"<SyncML xmlns="SYNCML:SYNCML1.2" xmlns:msft="http://schemas.microsoft.com/MobileDevice/MDM">
  <SyncHdr>
    <VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1D</SessionID><MsgID>1</MsgID>
    <Target><LocURI>https://mdm.example.com/ManagementServer/MDM.svc</LocURI></Target>
    <Source><LocURI>DEV123</LocURI><LocName>dummy</LocName></Source>
    <Cred><Meta><Format xmlns="syncml:metinf">b64</Format><Type xmlns="syncml:metinf">syncml:auth-md5</Type></Meta><Data>bm9uY2U=</Data></Cred>
    <Meta><MaxMsgSize xmlns="syncml:metinf">524288</MaxMsgSize></Meta>
  </SyncHdr>
  <SyncBody>
    <Alert><CmdID>2</CmdID><Data>1201</Data></Alert>
    <Alert><CmdID>3</CmdID><Data>1224</Data><Item><Meta><Type xmlns="syncml:metinf">com.microsoft/MDM/LoginStatus</Type></Meta><Data>user</Data></Item></Alert>
    <Replace><CmdID>4</CmdID>
      <Item><Source><LocURI>./DevInfo/DevId</LocURI></Source><Data>DEV123</Data></Item>
      <Item><Source><LocURI>./DevInfo/Man</LocURI></Source><Data>Contoso &amp; Co</Data></Item>
    </Replace>
    <Status><CmdID>5</CmdID><MsgRef>1</MsgRef><CmdRef>3</CmdRef><Cmd>Replace</Cmd><TargetRef>./Vendor/MSFT/Policy/Config/X</TargetRef><Data>200</Data></Status>
    <Results><CmdID>6</CmdID><MsgRef>1</MsgRef><CmdRef>3</CmdRef>
      <Item><Source><LocURI>./Vendor/MSFT/Policy/Config</LocURI></Source><Meta><Format xmlns="syncml:metinf">xml</Format></Meta><Data><wap-provisioningdoc><characteristic type="x"/></wap-provisioningdoc></Data></Item>
      <Item><Source><LocURI>./a</LocURI></Source><Data msft:originalerror="0x86000002"><![CDATA[<raw & text>]]></Data><MoreData/></Item>
    </Results>
    <Atomic><CmdID>7</CmdID><Sequence><CmdID>8</CmdID><Exec><CmdID>9</CmdID><Item><Target><LocURI>./x</LocURI></Target></Item></Exec></Sequence></Atomic>
    <Get><Item><Target><LocURI>./x</LocURI></Target></Item></Get>
    <Final/>
  </SyncBody>
</SyncML>"#;

const SYNCML11: &str = r#"<s:SyncML xmlns:s="syncml:syncml1.1"><s:SyncHdr><s:SessionID>1</s:SessionID><s:MsgID>1</s:MsgID><s:Target><s:LocURI>a</s:LocURI></s:Target><s:Source><s:LocURI>b</s:LocURI></s:Source></s:SyncHdr><s:SyncBody><s:Status><s:CmdID>1</s:CmdID><s:MsgRef>1</s:MsgRef><s:CmdRef>0</s:CmdRef><s:Cmd>SyncHdr</s:Cmd><s:Chal><s:Meta><m:NextNonce xmlns:m="syncml:metinf">AAE=</m:NextNonce></s:Meta></s:Chal><s:Data>212</s:Data></s:Status><s:Final/></s:SyncBody></s:SyncML>"#;

const PROVISIONING: &str = r#"<wap-provisioningdoc version="1.1"><characteristic type="CertificateStore"><characteristic type="Root"><characteristic type="System"><characteristic type="0A1B"><parm name="EncodedCertificate" value="MIIBszCCAVmgAwIBAgIU"/></characteristic></characteristic></characteristic></characteristic><characteristic type="APPLICATION"><parm name="APPID" value="w7"/><parm name="ADDR" value="https://manage.example.com/ManagementServer/MDM.svc"/><characteristic type="APPAUTH"><parm name="AAUTHLEVEL" value="CLIENT"/><parm name="AAUTHDATA" value="AAE=" datatype="string"/></characteristic></characteristic></wap-provisioningdoc>"#;

fn soap_seeds() -> Vec<Vec<u8>> {
    [
        discover(ns::DISCOVERY),
        discover(&format!("{}/", ns::DISCOVERY)),
        get_policies(&username_token()),
        get_policies(&binary_token()),
        rst(
            ns::token::REQUEST_ISSUE,
            ns::token::PKCS10,
            &username_token(),
        ),
        rst(ns::token::REQUEST_ISSUE, ns::token::PKCS10, &binary_token()),
        rst(ns::token::REQUEST_RENEW, ns::token::PKCS7_SECEXT, ""),
        rst(ns::token::REQUEST_RECOVERY, ns::token::PKCS7_ENROLL, ""),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}

fn syncml_seeds() -> Vec<Vec<u8>> {
    let reparsed = SyncMl::parse(PACKAGE1.as_bytes()).expect("seed parses");
    [
        PACKAGE1.to_owned(),
        SYNCML11.to_owned(),
        reparsed.message.to_xml(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}

fn xml_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<String> = vec![
        discover(ns::DISCOVERY),
        discover(&format!("{}/", ns::DISCOVERY)),
        get_policies(&username_token()),
        get_policies(&binary_token()),
        rst(
            ns::token::REQUEST_ISSUE,
            ns::token::PKCS10,
            &username_token(),
        ),
        rst(ns::token::REQUEST_ISSUE, ns::token::PKCS10, &binary_token()),
        rst(ns::token::REQUEST_RENEW, ns::token::PKCS7_SECEXT, ""),
        rst(ns::token::REQUEST_RECOVERY, ns::token::PKCS7_ENROLL, ""),
        PACKAGE1.to_owned(),
        SYNCML11.to_owned(),
        PROVISIONING.to_owned(),
        Fault::new(FaultCode::Authentication, "bad <creds>").to_xml(
            ns::action::RSTRC,
            Some("urn:uuid:9"),
            "t1",
        ),
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?><!-- c --><?pi x?><a xml:lang="en" xmlns:x="urn:x" x:y="&#65;&#x42;&lt;"><![CDATA[<raw>]]>&amp;<b/></a>"#
        ),
    ];
    // What our SyncML writer produces, which devices echo back in shape.
    let reparsed = SyncMl::parse(PACKAGE1.as_bytes()).expect("seed parses");
    seeds.push(reparsed.message.to_xml());
    seeds.into_iter().map(String::into_bytes).collect()
}

const XML_DICTIONARY: &[&[u8]] = &[
    b"<!DOCTYPE a [<!ENTITY x \"y\">]>",
    b"<!DOCTYPE a SYSTEM \"file:///etc/passwd\">",
    b"<!ENTITY lol \"lol\">",
    b"&lol;",
    b"&amp;",
    b"&lt;",
    b"&#x0;",
    b"&#0;",
    b"&#x110000;",
    b"&#xD800;",
    b"&#65;",
    b"&#x1F600;",
    b"&#;",
    b"&#x;",
    b"&",
    b"<![CDATA[",
    b"]]>",
    b"<![CDATA[x]]>",
    b"<!--",
    b"-->",
    b"<!---->",
    b"<?pi x?>",
    b"<?xml version=\"1.0\"?>",
    b"<a>",
    b"</a>",
    b"<a/>",
    b"<a:b>",
    b"</a:b>",
    b"/>",
    b"</",
    b"<",
    b">",
    b"=\"\"",
    b" x=\"1\"",
    b" x=\"1\" x=\"2\"",
    b" a:x=\"1\" b:x=\"2\"",
    b" xmlns=\"urn:x\"",
    b" xmlns=\"\"",
    b" xmlns:a=\"urn:a\"",
    b" xmlns:b=\"urn:a\"",
    b" xmlns:a=\"\"",
    b" xmlns:=\"urn:e\"",
    b" xmlns:xml=\"urn:x\"",
    b" xmlns:xml=\"http://www.w3.org/XML/1998/namespace\"",
    b" xmlns:xmlns=\"urn:x\"",
    b" xmlns:p=\"http://www.w3.org/2000/xmlns/\"",
    b" xml:lang=\"en\"",
    b" xsi:nil=\"true\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"",
    b"<Item><Data>x</Data></Item>",
    b"<CmdID>1</CmdID>",
    b"<Atomic><CmdID>1</CmdID>",
    b"</Atomic>",
    b"<Sequence><CmdID>2</CmdID>",
    b"<Status><CmdID>1</CmdID><Cmd>SyncHdr</Cmd></Status>",
    b"<ac:ContextItem Name=\"DeviceID\"><ac:Value>x</ac:Value></ac:ContextItem>",
    b"<AuthPolicy>Federated</AuthPolicy>",
    b"<MoreData/>",
    b"SYNCML:SYNCML1.2",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\xc3\x28",
    b"\x00",
    b"\r\n",
    b"a:b:c",
    b"xmlns",
];

fn xml_mutator(seeds: &[Vec<u8>]) -> Mutator<'_> {
    Mutator {
        seeds,
        dictionary: XML_DICTIONARY,
        max_len: BODY,
    }
}

// ---------------------------------------------------------------------------------------
// The tree written back out: every element and attribute with an explicit prefix, so a
// parse of the output must give the same tree.

fn qualified(
    ns: Option<&str>,
    name: &str,
    prefix: &str,
    decls: &mut Vec<(String, String)>,
) -> String {
    match ns {
        // An undeclared prefix resolves to no namespace and keeps the rest as the name.
        // (An attribute `p:xmlns` with `p` undeclared is one such.)
        None if name.contains(':') || (prefix != "e" && name == "xmlns") => {
            format!("undeclared:{name}")
        }
        None => name.to_owned(),
        Some(XML_NS) => format!("xml:{name}"),
        Some("http://www.w3.org/2000/xmlns/") => format!("xmlns:{name}"),
        Some(uri) => {
            decls.push((prefix.to_owned(), uri.to_owned()));
            format!("{prefix}:{name}")
        }
    }
}

/// Escapes an attribute value for double quotes: only what must be escaped, so the value
/// grows as little as possible (a raw `<` or `'` in the input still grows).
fn escape_attr(v: &str) -> String {
    v.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;")
}

/// Writes the tree out; returns the longest attribute value written, which may exceed the
/// parser's bound where escaping grew it.
fn write_tree(el: &Element, out: &mut String) -> usize {
    let mut decls = Vec::new();
    let tag = qualified(el.ns.as_deref(), &el.name, "e", &mut decls);
    let attrs: Vec<(String, &str)> = el
        .attrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            (
                qualified(a.ns.as_deref(), &a.name, &format!("a{i}"), &mut decls),
                a.value.as_str(),
            )
        })
        .collect();
    out.push('<');
    out.push_str(&tag);
    let mut longest = 0;
    for (p, uri) in &decls {
        let v = escape_attr(uri);
        longest = longest.max(v.len());
        out.push_str(&format!(" xmlns:{p}=\"{v}\""));
    }
    for (k, v) in attrs {
        let v = escape_attr(v);
        longest = longest.max(v.len());
        out.push_str(&format!(" {k}=\"{v}\""));
    }
    out.push('>');
    out.push_str(&escape(&el.raw_text()));
    for c in el.elements() {
        longest = longest.max(write_tree(c, out));
    }
    out.push_str(&format!("</{tag}>"));
    longest
}

/// Tree equality without the byte spans (which differ between two serialisations).
fn same_tree(a: &Element, b: &Element) -> Result<(), String> {
    if a.ns != b.ns || a.name != b.name {
        return Err(format!(
            "element {{{:?}}}{} became {{{:?}}}{}",
            a.ns, a.name, b.ns, b.name
        ));
    }
    if a.attrs != b.attrs {
        return Err(format!("attributes {:?} became {:?}", a.attrs, b.attrs));
    }
    if a.raw_text() != b.raw_text() {
        return Err(format!(
            "text {:?} became {:?} in {}",
            a.raw_text(),
            b.raw_text(),
            a.name
        ));
    }
    let (ca, cb): (Vec<_>, Vec<_>) = (a.elements().collect(), b.elements().collect());
    if ca.len() != cb.len() {
        return Err(format!("{} children became {}", ca.len(), cb.len()));
    }
    ca.iter().zip(&cb).try_for_each(|(x, y)| same_tree(x, y))
}

/// The properties every XML input must have: a refusal explains itself, an error quotes
/// no more than a short excerpt, and an accepted tree survives being written back out.
fn check_xml(input: &[u8]) -> bool {
    match xml::parse(input) {
        Ok(root) => {
            let mut out = String::new();
            let longest = write_tree(&root, &mut out);
            let back = match xml::parse(out.as_bytes()) {
                Ok(back) => back,
                // Escaping grew a value or the document past a bound: not the parser's fault.
                Err(XmlError::Limit(Limit::AttributeValueBytes))
                    if longest > Limit::AttributeValueBytes.max() =>
                {
                    return true;
                }
                Err(XmlError::Limit(Limit::DocumentBytes)) if out.len() > input.len() => {
                    return true;
                }
                Err(e) => panic!("re-serialised tree does not parse ({e}): {out}"),
            };
            if let Err(diff) = same_tree(&root, &back) {
                panic!("re-serialised tree differs: {diff}\n{out}");
            }
            true
        }
        Err(e) => {
            assert_clear_error("xml", &e);
            assert!(e.to_string().len() < 1024, "error message too long: {e}");
            false
        }
    }
}

fn check_soap(input: &[u8]) -> bool {
    match Envelope::parse(input) {
        Ok(env) => {
            // Debug output never shows secrets.
            let _ = format!("{env:?}");
            let mut any = false;
            match DiscoverRequest::from_envelope(&env) {
                Ok(d) => any |= d.message_id == env.message_id,
                Err(e) => assert_clear_error("discover", &e),
            }
            match GetPoliciesRequest::from_envelope(&env) {
                Ok(_) => any = true,
                Err(e) => assert_clear_error("xcep", &e),
            }
            match RequestSecurityToken::from_envelope(&env) {
                Ok(r) => {
                    assert!(r.context.iter().count() <= wstep::MAX_CONTEXT_ITEMS);
                    any = true;
                }
                Err(e) => assert_clear_error("wstep", &e),
            }
            let _ = env.security;
            any
        }
        Err(e) => {
            assert_clear_error("soap", &e);
            let _ = e.fault_code();
            false
        }
    }
}

fn check_syncml(input: &[u8]) -> bool {
    match SyncMl::parse(input) {
        Ok(parsed) => {
            for r in &parsed.rejected {
                assert!(!r.reason.is_empty(), "a rejected command without a reason");
            }
            let msg = &parsed.message;
            let xml = msg.to_xml();
            let back = SyncMl::parse(xml.as_bytes())
                .unwrap_or_else(|e| panic!("re-serialised SyncML does not parse ({e}): {xml}"));
            assert!(
                back.rejected.is_empty(),
                "re-serialised SyncML has unreadable commands {:?}: {xml}",
                back.rejected
            );
            assert_eq!(&back.message, msg, "SyncML changed on a round trip: {xml}");
            let _ = syncml::commands_len(&msg.commands);
            true
        }
        Err(e) => {
            assert_clear_error("syncml", &e);
            false
        }
    }
}

#[test]
fn fuzz_xml_tree() {
    let seeds = xml_seeds();
    let stats = run(
        "xml",
        iterations(DEFAULT_ITERATIONS),
        &xml_mutator(&seeds),
        check_xml,
    );
    assert!(
        stats.inputs < 100 || stats.accepted > 0,
        "the fuzzer never produced valid XML"
    );
}

#[test]
fn fuzz_soap_envelope_discovery_xcep_wstep() {
    let seeds = soap_seeds();
    let stats = run(
        "soap",
        iterations(DEFAULT_ITERATIONS),
        &xml_mutator(&seeds),
        check_soap,
    );
    assert!(
        stats.inputs < 100 || stats.accepted > 0,
        "the fuzzer never produced a readable request"
    );
}

#[test]
fn fuzz_syncml() {
    let seeds = syncml_seeds();
    let stats = run(
        "syncml",
        iterations(DEFAULT_ITERATIONS),
        &xml_mutator(&seeds),
        check_syncml,
    );
    assert!(
        stats.inputs < 100 || stats.accepted > 0,
        "the fuzzer never produced valid SyncML"
    );
}

/// The seeds themselves pass the checks (and parse): the fuzzer starts from real messages.
#[test]
fn seeds_are_valid() {
    for seed in xml_seeds() {
        assert!(check_xml(&seed), "{}", String::from_utf8_lossy(&seed));
    }
    assert!(check_syncml(PACKAGE1.as_bytes()));
    assert!(check_syncml(SYNCML11.as_bytes()));
    assert!(check_soap(
        rst(
            ns::token::REQUEST_ISSUE,
            ns::token::PKCS10,
            &username_token()
        )
        .as_bytes()
    ));
}

// ---------------------------------------------------------------------------------------
// Worst cases: the largest damage each dimension of XML allows within the 1 MiB body.

/// `head`, then `unit(i)` for i = 0.. while the document stays within `BODY`, then `tail`.
fn fill(head: &str, unit: impl Fn(usize) -> String, tail: &str) -> Vec<u8> {
    let mut out = String::from(head);
    for i in 0.. {
        let u = unit(i);
        if out.len() + u.len() + tail.len() > BODY {
            break;
        }
        out.push_str(&u);
    }
    out.push_str(tail);
    out.into_bytes()
}

/// Pads a document with a trailing comment up to `BODY`.
fn pad(mut doc: String) -> Vec<u8> {
    if doc.len() + 7 < BODY {
        let n = BODY - doc.len() - 7;
        doc.push_str("<!--");
        doc.push_str(&"x".repeat(n));
        doc.push_str("-->");
    }
    doc.into_bytes()
}

fn syncml_wrap(body: &str) -> String {
    format!(
        "<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>a</LocURI></Target><Source><LocURI>b</LocURI></Source></SyncHdr><SyncBody>{body}<Final/></SyncBody></SyncML>"
    )
}

fn soap_wrap(body: &str) -> String {
    format!(
        "<s:Envelope xmlns:s=\"{}\"><s:Body>{body}</s:Body></s:Envelope>",
        ns::SOAP
    )
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Parses.
    Ok,
    /// Refused at this bound.
    Limit(Limit),
    /// Refused as malformed.
    Syntax,
    Doctype,
    UnknownEntity,
}

struct Attack {
    name: &'static str,
    input: Vec<u8>,
    expect: Expect,
}

fn attack(name: &'static str, input: Vec<u8>, expect: Expect) -> Attack {
    assert!(input.len() <= BODY, "{name} is {} bytes", input.len());
    Attack {
        name,
        input,
        expect,
    }
}

fn attacks() -> Vec<Attack> {
    let depth = Limit::Depth.max();
    let in_scope = Limit::NamespacesInScope.max();
    let per_element = Limit::AttributesPerElement.max();
    let name_max = Limit::NameBytes.max();
    let long_name = |i: usize| format!("{:a<width$}", format!("n{i}_"), width = name_max);
    let mut v = vec![
        // The reported case: ~90,000 attributes on one element.
        attack(
            "attributes on one element",
            fill("<a", |i| format!(" a{i}=\"\""), "/>"),
            Expect::Limit(Limit::AttributesPerElement),
        ),
        attack(
            "one attribute repeated",
            fill("<a", |_| " a=\"\"".into(), "/>"),
            Expect::Limit(Limit::AttributesPerElement),
        ),
        attack(
            "duplicate attribute within the bound",
            b"<a b=\"1\" c=\"\" b=\"2\"/>".to_vec(),
            Expect::Syntax,
        ),
        attack(
            "duplicate expanded attribute name",
            b"<a xmlns:p=\"urn:x\" xmlns:q=\"urn:x\" p:b=\"1\" q:b=\"2\"/>".to_vec(),
            Expect::Syntax,
        ),
        attack(
            "elements full of attributes",
            fill(
                "<r>",
                |i| {
                    let attrs: String = (0..per_element).map(|j| format!(" a{j}=\"{i}\"")).collect();
                    format!("<e{attrs}/>")
                },
                "</r>",
            ),
            Expect::Limit(Limit::Attributes),
        ),
        attack(
            "namespace declarations on one element",
            fill("<a", |i| format!(" xmlns:p{i}=\"urn:{i}\""), "/>"),
            Expect::Limit(Limit::AttributesPerElement),
        ),
        attack(
            "namespace declarations piling up in scope",
            fill(
                "",
                |i| {
                    let decls: String = (0..per_element - 1)
                        .map(|j| format!(" xmlns:p{i}_{j}=\"urn:{j}\""))
                        .collect();
                    format!("<a{decls}>")
                },
                "",
            ),
            Expect::Limit(Limit::NamespacesInScope),
        ),
        attack(
            "long namespace URI",
            fill(
                &format!("<a xmlns=\"urn:{}\">", "u".repeat(Limit::NamespaceUriBytes.max())),
                |_| "<a/>".into(),
                "</a>",
            ),
            Expect::Limit(Limit::NamespaceUriBytes),
        ),
        attack(
            "deep nesting",
            fill("", |_| "<a>".into(), ""),
            Expect::Limit(Limit::Depth),
        ),
        attack(
            "tiny elements",
            fill("<r>", |_| "<a/>".into(), "</r>"),
            Expect::Limit(Limit::Elements),
        ),
        attack(
            "long element name",
            format!("<{}/>", "a".repeat(BODY - 3)).into_bytes(),
            Expect::Limit(Limit::NameBytes),
        ),
        attack(
            "long attribute name",
            format!("<a {}=\"\"/>", "b".repeat(BODY - 10)).into_bytes(),
            Expect::Limit(Limit::NameBytes),
        ),
        attack(
            "long attribute value",
            format!("<a b=\"{}\"/>", "v".repeat(BODY - 10)).into_bytes(),
            Expect::Limit(Limit::AttributeValueBytes),
        ),
        attack(
            "long unknown entity name",
            format!("<a>&{};</a>", "x".repeat(BODY - 10)).into_bytes(),
            Expect::Limit(Limit::NameBytes),
        ),
        attack(
            "long mismatched end tag",
            format!("<a></{}>", "b".repeat(BODY - 10)).into_bytes(),
            Expect::Syntax,
        ),
        attack(
            "unterminated comment",
            format!("<a><!--{}", "-".repeat(BODY - 10)).into_bytes(),
            Expect::Syntax,
        ),
        attack(
            "unterminated attribute value",
            format!("<a b=\"{}", "&amp;".repeat((BODY - 10) / 5)).into_bytes(),
            Expect::Syntax,
        ),
        attack(
            "entity expansion bomb",
            b"<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">]><a>&lol2;</a>".to_vec(),
            Expect::Doctype,
        ),
        attack(
            "unknown entity",
            b"<a>&xxe;</a>".to_vec(),
            Expect::UnknownEntity,
        ),
        attack(
            "many XML declarations",
            fill("", |_| "<?xml version=\"1.0\"?>".into(), "<a/>"),
            Expect::Ok,
        ),
        // Accepted worst cases: as much work as the bounds allow.
        attack(
            "namespaces at the scope bound, prefixed lookups",
            {
                // p0 is declared first, so every lookup scans all bindings in scope.
                let decls: String = (0..in_scope - 1)
                    .map(|j| format!(" xmlns:p{j}=\"urn:{j}\""))
                    .collect();
                let mut doc = format!("<p0:r{decls} xmlns:q=\"urn:q\">");
                let attrs: String = (0..per_element).map(|j| format!(" p0:a{j}=\"\"")).collect();
                let attr_elements = (Limit::Attributes.max() - in_scope) / per_element;
                for _ in 0..attr_elements {
                    doc.push_str(&format!("<p0:e{attrs}/>"));
                }
                for _ in 0..Limit::Elements.max() - attr_elements - 1 {
                    doc.push_str("<p0:e/>");
                }
                doc.push_str("</p0:r>");
                pad(doc)
            },
            Expect::Ok,
        ),
        attack(
            "undeclared prefixes",
            fill("<r>", |i| format!("<q{}:e q:a=\"\"/>", i % 10), "</r>"),
            Expect::Limit(Limit::Elements),
        ),
        attack(
            "elements at the depth bound",
            {
                let chain = "<a>".repeat(depth - 1) + &"</a>".repeat(depth - 1);
                let mut doc = String::from("<r>");
                for _ in 0..(Limit::Elements.max() - 1) / (depth - 1) {
                    doc.push_str(&chain);
                }
                doc.push_str("</r>");
                pad(doc)
            },
            Expect::Ok,
        ),
        attack(
            "elements up to the element bound",
            {
                let mut doc = String::from("<r>");
                for _ in 0..Limit::Elements.max() - 1 {
                    doc.push_str("<a/>");
                }
                doc.push_str("</r>");
                pad(doc)
            },
            Expect::Ok,
        ),
        attack(
            "distinct names at the name bound",
            fill(
                "<r>",
                |i| format!("<{n} {n}=\"\"/>", n = long_name(i)),
                "</r>",
            ),
            Expect::Ok,
        ),
        attack(
            "end tag padded with whitespace",
            format!("<a></a{}>", " ".repeat(BODY - 16)).into_bytes(),
            Expect::Ok,
        ),
        attack(
            "entity references",
            fill("<a>", |_| "&amp;".into(), "</a>"),
            Expect::Ok,
        ),
        attack(
            "character references",
            fill("<a>", |_| "&#65;".into(), "</a>"),
            Expect::Ok,
        ),
        attack(
            "astral character references",
            fill("<a>", |_| "&#x1F600;".into(), "</a>"),
            Expect::Ok,
        ),
        attack(
            "entities in attribute values",
            fill(
                "<r>",
                |_| format!("<a b=\"{}\"/>", "&lt;".repeat(Limit::AttributeValueBytes.max() / 4 - 1)),
                "</r>",
            ),
            Expect::Ok,
        ),
        attack(
            "CDATA sections",
            fill("<a>", |_| "<![CDATA[x]]>".into(), "</a>"),
            Expect::Ok,
        ),
        attack(
            "one large CDATA section",
            format!("<a><![CDATA[{}]]></a>", "x".repeat(BODY - 20)).into_bytes(),
            Expect::Ok,
        ),
        attack(
            "comments",
            fill("<a>", |_| "<!---->".into(), "</a>"),
            Expect::Ok,
        ),
        attack(
            "text split by comments",
            fill("<a>", |_| "x<!---->".into(), "</a>"),
            Expect::Ok,
        ),
        attack(
            "processing instructions",
            fill("<a>", |_| "<?p?>".into(), "</a>"),
            Expect::Ok,
        ),
        attack(
            "whitespace before the root",
            format!("{}<a/>", " ".repeat(BODY - 4)).into_bytes(),
            Expect::Ok,
        ),
        attack(
            "a long text",
            format!("<a>{}</a>", " x".repeat((BODY - 7) / 2)).into_bytes(),
            Expect::Ok,
        ),
        attack(
            "namespace redeclared on every element",
            fill("<r>", |i| format!("<e xmlns=\"urn:{}\"/>", i % 1000), "</r>"),
            Expect::Limit(Limit::Elements),
        ),
        attack(
            "long slash-ended URI and many children to compare it with",
            {
                let uri = format!("{}{}", ns::AC, "/".repeat(Limit::NamespaceUriBytes.max() - ns::AC.len()));
                let mut doc = format!(
                    "<wst:RequestSecurityToken xmlns:wst=\"{}\"><ac:AdditionalContext xmlns:ac=\"{uri}\">",
                    ns::WST
                );
                for _ in 0..Limit::Elements.max() - 10 {
                    doc.push_str("<ac:ContextItem/>");
                }
                doc.push_str("</ac:AdditionalContext></wst:RequestSecurityToken>");
                pad(soap_wrap(&doc))
            },
            Expect::Ok,
        ),
        attack(
            "many context items",
            {
                let mut doc = format!(
                    "<wst:RequestSecurityToken xmlns:wst=\"{}\" xmlns:wsse=\"{}\"><wst:TokenType>t</wst:TokenType><wst:RequestType>{}</wst:RequestType><wsse:BinarySecurityToken ValueType=\"{}\">AAAA</wsse:BinarySecurityToken><ac:AdditionalContext xmlns:ac=\"{}\">",
                    ns::WST,
                    ns::WSSE,
                    ns::token::REQUEST_ISSUE,
                    ns::token::PKCS10,
                    ns::AC
                );
                for i in 0..(Limit::Elements.max() - 20) / 2 {
                    doc.push_str(&format!("<ac:ContextItem Name=\"n{i}\"><ac:Value>v</ac:Value></ac:ContextItem>"));
                }
                doc.push_str("</ac:AdditionalContext></wst:RequestSecurityToken>");
                pad(soap_wrap(&doc))
            },
            Expect::Ok,
        ),
        attack(
            "many auth policies",
            {
                let mut doc = format!(
                    "<Discover xmlns=\"{}\"><request><AuthPolicies>",
                    ns::DISCOVERY
                );
                for _ in 0..Limit::Elements.max() - 10 {
                    doc.push_str("<AuthPolicy>OnPremise</AuthPolicy>");
                }
                doc.push_str("</AuthPolicies></request></Discover>");
                pad(soap_wrap(&doc))
            },
            Expect::Ok,
        ),
        attack(
            "many SyncML commands",
            fill(
                "<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>a</LocURI></Target><Source><LocURI>b</LocURI></Source></SyncHdr><SyncBody>",
                |i| format!("<Status><CmdID>{i}</CmdID></Status>"),
                "</SyncBody></SyncML>",
            ),
            Expect::Limit(Limit::Elements),
        ),
        attack(
            "SyncML commands within the element bound",
            pad(syncml_wrap(
                &(1..=(Limit::Elements.max() - 20) / 2)
                    .map(|i| format!("<Status><CmdID>{i}</CmdID></Status>"))
                    .collect::<String>(),
            )),
            Expect::Ok,
        ),
        attack(
            "unreadable SyncML commands",
            pad(syncml_wrap(&"<Get/>".repeat(Limit::Elements.max() - 20))),
            Expect::Ok,
        ),
        attack(
            "many SyncML items",
            pad(syncml_wrap(&format!(
                "<Results><CmdID>1</CmdID>{}</Results>",
                "<Item/>".repeat(Limit::Elements.max() - 20)
            ))),
            Expect::Ok,
        ),
        attack(
            "nested Atomic",
            pad(syncml_wrap(&format!(
                "{}{}",
                "<Atomic><CmdID>1</CmdID>".repeat(depth - 6),
                "</Atomic>".repeat(depth - 6)
            ))),
            Expect::Ok,
        ),
        attack(
            "raw XML payloads in items",
            pad(syncml_wrap(&format!(
                "<Results><CmdID>1</CmdID>{}</Results>",
                "<Item><Data><a><b/></a></Data></Item>".repeat((Limit::Elements.max() - 20) / 4)
            ))),
            Expect::Ok,
        ),
    ];
    v.retain(|a| !a.input.is_empty());
    v
}

fn outcome(r: &Result<Element, XmlError>) -> Expect {
    match r {
        Ok(_) => Expect::Ok,
        Err(XmlError::Limit(l)) => Expect::Limit(*l),
        Err(XmlError::Doctype) => Expect::Doctype,
        Err(XmlError::UnknownEntity(_)) => Expect::UnknownEntity,
        Err(_) => Expect::Syntax,
    }
}

/// Every worst case is refused at the right bound, or parsed; and the layers above stay
/// within their own bounds.
#[test]
fn worst_cases_are_refused_or_parsed() {
    for a in attacks() {
        let r = xml::parse(&a.input);
        assert_eq!(outcome(&r), a.expect, "{}: {:?}", a.name, r.as_ref().err());
        if let Err(e) = &r {
            assert!(e.to_string().len() < 400, "{}: long error {e}", a.name);
        }
        // The layers above never panic and explain their refusals.
        if let Err(e) = Envelope::parse(&a.input) {
            assert_clear_error(a.name, &e);
        }
        if let Err(e) = SyncMl::parse(&a.input) {
            assert_clear_error(a.name, &e);
        }
    }
}

#[test]
fn syncml_bounds_commands_items_and_nesting() {
    let commands = pad(syncml_wrap(
        &(1..=(Limit::Elements.max() - 20) / 2)
            .map(|i| format!("<Status><CmdID>{i}</CmdID></Status>"))
            .collect::<String>(),
    ));
    assert_eq!(
        SyncMl::parse(&commands).unwrap_err(),
        SyncMlError::TooMany {
            what: "commands",
            max: syncml::MAX_COMMANDS
        }
    );
    let unreadable = syncml_wrap(&"<Get/>".repeat(syncml::MAX_COMMANDS + 1));
    assert!(matches!(
        SyncMl::parse(unreadable.as_bytes()),
        Err(SyncMlError::TooMany {
            what: "commands",
            ..
        })
    ));
    let within = syncml_wrap(&"<Get/>".repeat(syncml::MAX_COMMANDS));
    assert_eq!(
        SyncMl::parse(within.as_bytes()).unwrap().rejected.len(),
        syncml::MAX_COMMANDS
    );
    let items = |n: usize| {
        syncml_wrap(&format!(
            "<Results><CmdID>1</CmdID>{}</Results>",
            "<Item/>".repeat(n)
        ))
    };
    assert!(SyncMl::parse(items(syncml::MAX_ITEMS).as_bytes()).is_ok());
    assert_eq!(
        SyncMl::parse(items(syncml::MAX_ITEMS + 1).as_bytes()).unwrap_err(),
        SyncMlError::TooMany {
            what: "items",
            max: syncml::MAX_ITEMS
        }
    );
    let nested = |n: usize| {
        syncml_wrap(&format!(
            "{}<Replace><CmdID>9</CmdID></Replace>{}",
            "<Atomic><CmdID>1</CmdID>".repeat(n),
            "</Atomic>".repeat(n)
        ))
    };
    let ok = SyncMl::parse(nested(syncml::MAX_CONTAINER_DEPTH).as_bytes()).unwrap();
    assert!(ok.rejected.is_empty());
    assert_eq!(ok.message.commands.len(), 1);
    let deep = SyncMl::parse(nested(syncml::MAX_CONTAINER_DEPTH + 1).as_bytes()).unwrap();
    assert!(deep.message.commands.is_empty());
    assert_eq!(deep.rejected.len(), 1);
    assert!(
        deep.rejected[0].reason.contains("nest deeper"),
        "{:?}",
        deep.rejected
    );
}

#[test]
fn wstep_bounds_context_items() {
    let body = |n: usize| {
        let items: String = (0..n)
            .map(|i| {
                format!("<ac:ContextItem Name=\"n{i}\"><ac:Value>v</ac:Value></ac:ContextItem>")
            })
            .collect();
        soap_wrap(&format!(
            "<wst:RequestSecurityToken xmlns:wst=\"{}\" xmlns:wsse=\"{}\"><wst:TokenType>t</wst:TokenType><wst:RequestType>{}</wst:RequestType><wsse:BinarySecurityToken ValueType=\"{}\">AAAA</wsse:BinarySecurityToken><ac:AdditionalContext xmlns:ac=\"{}\">{items}</ac:AdditionalContext></wst:RequestSecurityToken>",
            ns::WST,
            ns::WSSE,
            ns::token::REQUEST_ISSUE,
            ns::token::PKCS10,
            ns::AC
        ))
    };
    let ok = Envelope::parse(body(wstep::MAX_CONTEXT_ITEMS).as_bytes()).unwrap();
    assert_eq!(
        RequestSecurityToken::from_envelope(&ok)
            .unwrap()
            .context
            .iter()
            .count(),
        wstep::MAX_CONTEXT_ITEMS
    );
    let over = Envelope::parse(body(wstep::MAX_CONTEXT_ITEMS + 1).as_bytes()).unwrap();
    assert_eq!(
        RequestSecurityToken::from_envelope(&over).unwrap_err(),
        RstError::TooManyContextItems
    );
}

/// Time of the slowest of a few runs of `f` (the first run warms the allocator).
fn slowest(mut f: impl FnMut()) -> Duration {
    f();
    (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .max()
        .unwrap()
}

/// Prints how long each worst case takes through each parser. Run in release:
/// `cargo test --release -p winmdm-wire --test fuzz -- --ignored --nocapture worst_case_timings`
#[test]
#[ignore = "a measurement; run in release with --nocapture"]
fn worst_case_timings() {
    println!(
        "{:<58} {:>8} {:<28} {:>9} {:>9} {:>9}",
        "input", "bytes", "xml::parse", "xml", "soap", "syncml"
    );
    let mut worst = (Duration::ZERO, "");
    for a in attacks() {
        let r = xml::parse(&a.input);
        let xml_t = slowest(|| {
            let _ = std::hint::black_box(xml::parse(&a.input));
        });
        let soap_t = slowest(|| {
            if let Ok(env) = Envelope::parse(&a.input) {
                let _ = std::hint::black_box(DiscoverRequest::from_envelope(&env));
                let _ = std::hint::black_box(GetPoliciesRequest::from_envelope(&env));
                let _ = std::hint::black_box(RequestSecurityToken::from_envelope(&env));
            }
        });
        let syncml_t = slowest(|| {
            let _ = std::hint::black_box(SyncMl::parse(&a.input));
        });
        let outcome = match &r {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.to_string(),
        };
        let max = xml_t.max(soap_t).max(syncml_t);
        if max > worst.0 {
            worst = (max, a.name);
        }
        println!(
            "{:<58} {:>8} {:<28.28} {:>7.2}ms {:>7.2}ms {:>7.2}ms{}",
            a.name,
            a.input.len(),
            outcome,
            xml_t.as_secs_f64() * 1e3,
            soap_t.as_secs_f64() * 1e3,
            syncml_t.as_secs_f64() * 1e3,
            if max > Duration::from_millis(20) {
                "  > 20 ms"
            } else {
                ""
            }
        );
    }
    println!(
        "slowest: {} in {:.2} ms",
        worst.1,
        worst.0.as_secs_f64() * 1e3
    );
}
