//! The console's stylesheet, script and icon, compiled into the binary (nothing loads from
//! anywhere else; the Content-Security-Policy allows only these).

use http::{HeaderValue, StatusCode, header};

use crate::respond::{self, Response};

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");
const ICON: &str = include_str!("assets/icon.svg");

pub fn serve(name: &str) -> Response {
    let (ctype, body) = match name {
        "console.css" => ("text/css; charset=utf-8", CSS),
        "console.js" => ("text/javascript; charset=utf-8", JS),
        "icon.svg" => ("image/svg+xml", ICON),
        _ => return respond::text(StatusCode::NOT_FOUND, "no such asset"),
    };
    let mut r = respond::bytes(StatusCode::OK, ctype, body.as_bytes().to_vec());
    let h = r.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}
