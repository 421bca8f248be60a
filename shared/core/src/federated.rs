//! The federated sign-in pages (PROTOCOL §2): the login form the Web Authentication Broker
//! shows at AuthenticationServiceUrl, and the page that auto-posts `wresult` to `appru`.
//! Everything echoed is HTML-escaped.

use winmdm_wire::xml::escape;

/// Why an `appru` is refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AppruError {
    #[error("appru is missing")]
    Missing,
    #[error("appru must be an ms-app:// URI or an allowed https URL")]
    NotAllowed,
}

/// Only `ms-app://` (the Windows enrollment app) or an https URL on the allow-list may
/// receive a token: anything else would hand sign-in tokens to a third party.
pub fn check_appru(appru: Option<&str>, allow_list: &[String]) -> Result<(), AppruError> {
    let appru = appru
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .ok_or(AppruError::Missing)?;
    let lower = appru.to_ascii_lowercase();
    if lower.starts_with("ms-app://") && appru.len() > "ms-app://".len() {
        return Ok(());
    }
    if lower.starts_with("https://") && allow_list.iter().any(|a| a == appru) {
        return Ok(());
    }
    Err(AppruError::NotAllowed)
}

const STYLE: &str = "body{font-family:Segoe UI,system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem}\
label{display:block;margin-top:1rem}input[type=text],input[type=password]{width:100%;padding:.5rem;box-sizing:border-box}\
button{margin-top:1.5rem;padding:.5rem 1.5rem}.error{color:#a4262c}";

/// The sign-in form. It posts back to `action` with `appru` carried in a hidden field.
pub fn login_page(
    action: &str,
    provider_name: &str,
    appru: &str,
    login_hint: Option<&str>,
    error: Option<&str>,
) -> String {
    let error_html = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign in to {name}</title>\
<meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head><body>\
<h1>Sign in to {name}</h1>{error_html}\
<form method=\"post\" action=\"{action}\">\
<input type=\"hidden\" name=\"appru\" value=\"{appru}\">\
<label for=\"upn\">Work account</label><input type=\"text\" id=\"upn\" name=\"upn\" value=\"{hint}\" autocomplete=\"username\" required>\
<label for=\"password\">Password</label><input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>\
<button type=\"submit\">Sign in</button></form></body></html>",
        name = escape(provider_name),
        action = escape(action),
        appru = escape(appru),
        hint = escape(login_hint.unwrap_or("")),
    )
}

/// The page that hands the token to the enrollment app: a form posting `wresult` to
/// `appru` exactly, submitted by script (with a button for when script is off).
pub fn autopost_page(appru: &str, token: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Signing in</title></head>\
<body onload=\"document.forms[0].submit()\"><form method=\"post\" action=\"{appru}\">\
<input type=\"hidden\" name=\"wresult\" value=\"{token}\">\
<noscript><button type=\"submit\">Continue</button></noscript></form></body></html>",
        appru = escape(appru),
        token = escape(token),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appru_rules() {
        let allow = vec!["https://ok.example.com/cb".to_owned()];
        assert!(check_appru(Some("ms-app://windows.immersivecontrolpanel"), &allow).is_ok());
        assert!(check_appru(Some("https://ok.example.com/cb"), &allow).is_ok());
        assert_eq!(
            check_appru(Some("https://evil.example.com/cb"), &allow),
            Err(AppruError::NotAllowed)
        );
        assert_eq!(
            check_appru(Some("javascript:alert(1)"), &allow),
            Err(AppruError::NotAllowed)
        );
        assert_eq!(check_appru(None, &allow), Err(AppruError::Missing));
    }

    #[test]
    fn escapes_everything_echoed() {
        let page = login_page("/a", "n", "ms-app://x\"><script>", Some("<b>"), Some("<i>"));
        assert!(!page.contains("<script>"));
        assert!(!page.contains("<b>"));
        assert!(page.contains("&lt;i&gt;"));
    }
}
