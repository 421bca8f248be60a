//! Requests as a Windows device writes them (shapes from MS-MDE2 and real captures).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use winmdm_wire::ns;
use winmdm_wire::xml::escape;

/// What the device puts in `wsse:Security`.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// OnPremise: UsernameToken with a plaintext password.
    Password {
        username: String,
        password: String,
    },
    /// Federated: the `wresult` from the login page, base64-encoded as Windows does.
    Federated {
        token: String,
    },
    /// Entra ID: the access token (a JWT), base64-encoded, as Windows sends it after an
    /// Entra join or when a work account is added.
    EntraJwt {
        token: String,
    },
    None,
}

fn security_header(creds: &Credentials) -> String {
    match creds {
        Credentials::Password { username, password } => format!(
            r#"<wsse:Security s:mustUnderstand="1"><wsse:UsernameToken u:Id="uuid-cc1ccc1f-2fba-4bcf-b063-ffc0cac77917-4"><wsse:Username>{}</wsse:Username><wsse:Password wsse:Type="{}">{}</wsse:Password></wsse:UsernameToken></wsse:Security>"#,
            escape(username),
            ns::token::PASSWORD_TEXT,
            escape(password)
        ),
        Credentials::Federated { token } => format!(
            r#"<wsse:Security s:mustUnderstand="1"><wsse:BinarySecurityToken ValueType="{}" EncodingType="{}">{}</wsse:BinarySecurityToken></wsse:Security>"#,
            ns::token::DEVICE_ENROLLMENT_USER_TOKEN,
            ns::token::BASE64_BINARY,
            B64.encode(token.as_bytes())
        ),
        Credentials::EntraJwt { token } => format!(
            r#"<wsse:Security s:mustUnderstand="1"><wsse:BinarySecurityToken ValueType="urn:ietf:params:oauth:token-type:jwt" EncodingType="{}">{}</wsse:BinarySecurityToken></wsse:Security>"#,
            ns::token::BASE64_BINARY,
            B64.encode(token.as_bytes())
        ),
        Credentials::None => String::new(),
    }
}

fn envelope(action: &str, message_id: &str, to: &str, security: &str, body: &str) -> String {
    format!(
        r#"<s:Envelope xmlns:s="{soap}" xmlns:a="{a}" xmlns:u="{u}" xmlns:wsse="{wsse}" xmlns:wst="{wst}" xmlns:ac="{ac}">
  <s:Header>
    <a:Action s:mustUnderstand="1">{action}</a:Action>
    <a:MessageID>{message_id}</a:MessageID>
    <a:ReplyTo><a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address></a:ReplyTo>
    <a:To s:mustUnderstand="1">{to}</a:To>
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

/// A Discover request; `ns_uri` lets tests use the trailing-slash spelling.
pub fn discover(
    message_id: &str,
    to: &str,
    email: &str,
    version: &str,
    policies: &[&str],
    ns_uri: &str,
) -> String {
    let policies: String = policies
        .iter()
        .map(|p| format!("<AuthPolicy>{p}</AuthPolicy>"))
        .collect();
    let body = format!(
        r#"<Discover xmlns="{ns_uri}">
      <request xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
        <EmailAddress>{}</EmailAddress>
        <RequestVersion>{version}</RequestVersion>
        <DeviceType>CIMClient_Windows</DeviceType>
        <ApplicationVersion>10.0.22621.2</ApplicationVersion>
        <OSEdition>48</OSEdition>
        <AuthPolicies>{policies}</AuthPolicies>
      </request>
    </Discover>"#,
        escape(email)
    );
    envelope(ns::action::DISCOVER, message_id, to, "", &body)
}

pub fn get_policies(message_id: &str, to: &str, creds: &Credentials) -> String {
    let body = format!(
        r#"<GetPolicies xmlns="{}"><client><lastUpdate xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/><preferredLanguage xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/></client><requestFilter xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/></GetPolicies>"#,
        ns::XCEP
    );
    envelope(
        ns::action::GET_POLICIES,
        message_id,
        to,
        &security_header(creds),
        &body,
    )
}

/// The context items a Windows 11 device sends; `overrides` replace or add items by name.
pub fn context_items(
    device_id: &str,
    hw_dev_id: &str,
    enrollment_type: &str,
) -> Vec<(String, String)> {
    [
        ("UXInitiated", "true"),
        ("HWDevID", hw_dev_id),
        ("Locale", "en-US"),
        ("TargetedUserLoggedIn", "true"),
        ("EnrollmentData", ""),
        ("OSEdition", "48"),
        ("DeviceName", "DESKTOP-EMU01"),
        ("MAC", "00-15-5D-01-02-03"),
        ("DeviceID", device_id),
        ("EnrollmentType", enrollment_type),
        ("DeviceType", "CIMClient_Windows"),
        ("OSVersion", "10.0.22621.2"),
        ("ApplicationVersion", "10.0.22621.2"),
        ("NotInOobe", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

pub fn request_security_token(
    message_id: &str,
    to: &str,
    creds: &Credentials,
    csr_der: &[u8],
    context: &[(String, String)],
) -> String {
    let items: String = context
        .iter()
        .map(|(k, v)| {
            format!(
                r#"<ac:ContextItem Name="{}"><ac:Value>{}</ac:Value></ac:ContextItem>"#,
                escape(k),
                escape(v)
            )
        })
        .collect();
    let body = format!(
        r#"<wst:RequestSecurityToken>
      <wst:TokenType>{tt}</wst:TokenType>
      <wst:RequestType>{rt}</wst:RequestType>
      <wsse:BinarySecurityToken ValueType="{vt}" EncodingType="{et}">{csr}</wsse:BinarySecurityToken>
      <ac:AdditionalContext xmlns="{ac}">{items}</ac:AdditionalContext>
    </wst:RequestSecurityToken>"#,
        tt = ns::token::DEVICE_ENROLLMENT_TOKEN,
        rt = ns::token::REQUEST_ISSUE,
        vt = ns::token::PKCS10,
        et = ns::token::BASE64_BINARY,
        csr = B64.encode(csr_der),
        ac = ns::AC,
    );
    envelope(
        ns::action::RST,
        message_id,
        to,
        &security_header(creds),
        &body,
    )
}

/// A ROBO renewal: RequestType Renew with the PKCS#7 in the body; the device authenticates
/// with its client certificate, so there is no security header.
pub fn renew_request(message_id: &str, to: &str, pkcs7_der: &[u8], value_type: &str) -> String {
    let body = format!(
        r#"<wst:RequestSecurityToken>
      <wst:TokenType>{tt}</wst:TokenType>
      <wst:RequestType>{rt}</wst:RequestType>
      <wsse:BinarySecurityToken ValueType="{vt}" EncodingType="{et}">{p7}</wsse:BinarySecurityToken>
      <ac:AdditionalContext xmlns="{ac}"><ac:ContextItem Name="DeviceType"><ac:Value>CIMClient_Windows</ac:Value></ac:ContextItem></ac:AdditionalContext>
    </wst:RequestSecurityToken>"#,
        tt = ns::token::DEVICE_ENROLLMENT_TOKEN,
        rt = ns::token::REQUEST_RENEW,
        vt = value_type,
        et = ns::token::BASE64_BINARY,
        p7 = B64.encode(pkcs7_der),
        ac = ns::AC,
    );
    envelope(ns::action::RST, message_id, to, "", &body)
}

/// The login form a user submits on the federated AuthenticationServiceUrl page.
pub fn sign_in_form(appru: &str, upn: &str, password: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("appru", appru)
        .append_pair("upn", upn)
        .append_pair("password", password)
        .finish()
}

/// Pulls the form action and the hidden `wresult` out of the auto-post page the login
/// page answers with, as the Windows enrollment web view does.
pub fn autopost_fields(html: &str) -> (String, String) {
    let attr = |after: &str, name: &str| {
        let start = html
            .find(after)
            .unwrap_or_else(|| panic!("{after} in {html}"));
        let rest = &html[start..];
        let v = rest.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        let end = rest[v..].find('"').unwrap();
        rest[v..v + end].replace("&amp;", "&")
    };
    (attr("<form", "action"), attr("name=\"wresult\"", "value"))
}
