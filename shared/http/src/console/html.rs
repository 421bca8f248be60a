//! HTML output. Every value that did not come from this file goes through [`Esc`] (text
//! and attribute values alike): device names, UPNs, LocURIs and command results are
//! written by devices and operators, and a device called `<script>` must show as text.

use std::fmt::{self, Display, Write as _};

/// A value HTML-escaped for text and double-quoted attribute values.
pub struct Esc<'a>(pub &'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

pub fn esc(s: &str) -> Esc<'_> {
    Esc(s)
}

/// A path segment or query value, percent-encoded, a space as `%20` (so it reads the
/// same in a path, where `+` is a plus, and in a query); then still HTML-escaped where it
/// goes into an attribute.
pub fn url_part(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The page navigation, in order.
pub const NAV: &[(&str, &str)] = &[
    ("overview", "Overview"),
    ("devices", "Devices"),
    ("profiles", "Profiles"),
    ("groups", "Groups"),
    ("users", "Users"),
    ("enroll", "Enroll a device"),
];

/// A whole page: the layout around `body`, with the navigation when signed in.
pub struct Page<'a> {
    pub title: &'a str,
    /// The navigation entry to mark current, if any.
    pub section: Option<&'a str>,
    /// The signed-in admin and the CSRF token for the sign-out form.
    pub signed_in: Option<(&'a str, &'a str)>,
    pub body: String,
}

impl Page<'_> {
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(self.body.len() + 2048);
        let _ = write!(
            out,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{} · winmdm</title>\
             <link rel=\"stylesheet\" href=\"/console/assets/console.css\">\
             <link rel=\"icon\" href=\"/console/assets/icon.svg\" type=\"image/svg+xml\">\
             <script src=\"/console/assets/console.js\" defer></script></head><body>\
             <a class=\"skip\" href=\"#main\">Skip to content</a>\
             <header class=\"top\"><a class=\"brand\" href=\"/console/overview\">winmdm</a>",
            esc(self.title)
        );
        if let Some((user, csrf)) = self.signed_in {
            out.push_str("<nav aria-label=\"Main\"><ul>");
            for (slug, label) in NAV {
                let current = if self.section == Some(*slug) {
                    " aria-current=\"page\""
                } else {
                    ""
                };
                let _ = write!(
                    out,
                    "<li><a href=\"/console/{slug}\"{current}>{label}</a></li>"
                );
            }
            let _ = write!(
                out,
                "</ul></nav><form class=\"signout\" method=\"post\" action=\"/console/logout\">\
                 <input type=\"hidden\" name=\"_csrf\" value=\"{}\">\
                 <span class=\"who\">{}</span> <button type=\"submit\">Sign out</button></form>",
                esc(csrf),
                esc(user)
            );
        }
        let _ = writeln!(
            out,
            "</header><main id=\"main\"><h1>{}</h1>{}</main></body></html>",
            esc(self.title),
            self.body
        );
        out
    }
}

/// A time for display: RFC 3339 cut to the minute, in UTC (`2026-12-02 04:15Z`).
pub fn when(rfc3339: Option<&str>) -> String {
    match rfc3339 {
        Some(t) if t.len() >= 16 => format!("{} {}Z", &t[..10], &t[11..16]),
        Some(t) => t.to_owned(),
        None => "never".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts_keep_spaces_and_pluses_apart() {
        assert_eq!(url_part("a b+c/d"), "a%20b%2Bc%2Fd");
    }

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert(\"x\")</script>&'").to_string(),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
        assert_eq!(esc("plain").to_string(), "plain");
    }
}
