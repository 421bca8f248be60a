//! Maps a path to its endpoint. The local runner uses it to serve every function on one
//! port; on AWS, API Gateway routes each path to its own function instead.

use lambda_http::Request;
use winmdm_core::config::paths;

use crate::respond::{self, Response};
use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Discovery,
    Policy,
    Enroll,
    Auth,
    Terms,
    Manage,
    Renew,
    Admin,
    Console,
}

impl Endpoint {
    /// Enrollment paths match without regard to case: Windows uses both
    /// `/EnrollmentServer/Discovery.svc` and the lower-case spelling.
    pub fn for_path(path: &str) -> Option<Self> {
        let eq = |p: &str| path.eq_ignore_ascii_case(p);
        if eq(paths::DISCOVERY) {
            Some(Self::Discovery)
        } else if eq(paths::POLICY) {
            Some(Self::Policy)
        } else if eq(paths::ENROLL) {
            Some(Self::Enroll)
        } else if eq(paths::AUTH) {
            Some(Self::Auth)
        } else if eq(paths::TERMS) {
            Some(Self::Terms)
        } else if path == paths::MANAGE {
            Some(Self::Manage)
        } else if path == paths::RENEW {
            Some(Self::Renew)
        } else if path == paths::ADMIN_PREFIX
            || path.starts_with(&format!("{}/", paths::ADMIN_PREFIX))
        {
            Some(Self::Admin)
        } else if path == "/console" || path.starts_with("/console/") {
            Some(Self::Console)
        } else {
            None
        }
    }
}

/// Serves any endpoint: what `winmdm-local` calls for every request.
pub async fn dispatch(state: &AppState, req: Request) -> Response {
    match Endpoint::for_path(req.uri().path()) {
        Some(Endpoint::Discovery) => crate::discovery::handle(state, req).await,
        Some(Endpoint::Policy) => crate::policy::handle(state, req).await,
        Some(Endpoint::Enroll) => crate::enroll::handle(state, req).await,
        Some(Endpoint::Auth) => crate::auth::handle(state, req).await,
        Some(Endpoint::Terms) => crate::terms::handle(state, req).await,
        Some(Endpoint::Manage) => crate::manage::handle(state, req).await,
        Some(Endpoint::Renew) => crate::renew::handle(state, req).await,
        Some(Endpoint::Admin) => crate::admin::handle(state, req).await,
        Some(Endpoint::Console) => crate::console::handle(state, req).await,
        None => respond::text(http::StatusCode::NOT_FOUND, "not found"),
    }
}

/// The segments of a request path below some prefix, each percent-decoded as RFC 3986
/// decodes paths: `+`, `&` and `=` are themselves (a form's decoding would make `+` a space
/// and stop at `&`, so `/users/a+b@example.com` would name `a b@example.com`). Bytes that
/// are not UTF-8 become U+FFFD and so name nothing.
pub(crate) fn path_segments(rest: &str) -> Vec<String> {
    rest.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_both_discovery_spellings() {
        assert_eq!(
            Endpoint::for_path("/EnrollmentServer/Discovery.svc"),
            Some(Endpoint::Discovery)
        );
        assert_eq!(
            Endpoint::for_path("/enrollmentserver/discovery.svc"),
            Some(Endpoint::Discovery)
        );
        assert_eq!(
            Endpoint::for_path("/admin/v1/devices/x"),
            Some(Endpoint::Admin)
        );
        assert_eq!(Endpoint::for_path("/admin/v10"), None);
        assert_eq!(Endpoint::for_path("/"), None);
    }
}
