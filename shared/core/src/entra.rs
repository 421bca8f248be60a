//! Microsoft Entra ID (Azure AD) tokens: the access token Windows presents when a device
//! joins Entra (or adds a work account) and enrolls into the MDM registered in the tenant,
//! in WSTEP's `BinarySecurityToken` (ValueType `urn:ietf:params:oauth:token-type:jwt`,
//! base64) and on the terms-of-use page (`Authorization: Bearer`).
//!
//! Sources: Microsoft Learn, "Azure AD integration with MDM" (terms of use, the token in
//! enrollment, `mdm_delegation`); MS-MDE2 3.4.4; the issuer forms of the Microsoft
//! identity platform's access tokens (v1 `https://sts.windows.net/<tid>/`, v2
//! `https://login.microsoftonline.com/<tid>/v2.0`). See `docs/entra.md`.
//!
//! What is checked, strictly ([`crate::jwt`] for the first three):
//! - RS256 only, never `none`, `HS*` or any algorithm the token names;
//! - the signature, with the tenant key set's key named by `kid` (the key set is fetched
//!   by the [`KeySource`], refetched at a bounded rate when an unknown `kid` appears);
//! - `exp` / `nbf` with 2 minutes of skew;
//! - `iss` is one of the two issuer forms of a tenant in the allow-list, and `tid` is that
//!   same tenant (a token of tenant A never enrolls into tenant B's list);
//! - `aud` is one of the configured audiences (application ID URI or client id);
//! - `scp` includes `mdm_delegation`;
//! - the user is `upn`, else `preferred_username`, and the object id `oid` is present.

use async_trait::async_trait;
use serde_json::Value;
use time::OffsetDateTime;

use crate::jwt::{self, Expect, JwtError, KeySet};

/// The BinarySecurityToken ValueType of an Entra access token.
pub const JWT_VALUE_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// The delegated scope an MDM enrollment token carries.
pub const MDM_SCOPE: &str = "mdm_delegation";
/// Microsoft's key set for every tenant (common endpoint).
pub const DEFAULT_JWKS_URL: &str = "https://login.microsoftonline.com/common/discovery/v2.0/keys";

/// Which tokens are accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraConfig {
    /// Tenant ids (GUIDs, lower case) whose users may enroll.
    pub tenants: Vec<String>,
    /// The MDM application's ID URI and/or client id.
    pub audiences: Vec<String>,
}

impl EntraConfig {
    fn issuers(&self) -> Vec<String> {
        self.tenants
            .iter()
            .flat_map(|t| {
                [
                    format!("https://sts.windows.net/{t}/"),
                    format!("https://login.microsoftonline.com/{t}/v2.0"),
                ]
            })
            .collect()
    }
}

/// Where the tenant's signing keys come from (HTTPS with a cache, in `winmdm-http`).
#[async_trait]
pub trait KeySource: Send + Sync {
    /// The key set; with `refresh`, fetched again unless that happened too recently.
    async fn keys(&self, refresh: bool) -> Result<KeySet, String>;
}

/// Who the token says signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraIdentity {
    /// Lower-cased UPN.
    pub upn: String,
    pub tenant_id: String,
    pub object_id: String,
    /// The Entra device object id (`deviceid`), when the token has one.
    pub device_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntraError {
    #[error("{0}")]
    Token(#[from] JwtError),
    #[error("tenant {0:?} is not allowed to enroll here")]
    Tenant(String),
    #[error("the token does not carry the mdm_delegation scope")]
    Scope,
    #[error("the token names no user (upn, preferred_username) or object id")]
    NoUser,
    /// The key set could not be read: retryable.
    #[error("Entra ID's signing keys are unavailable: {0}")]
    KeysUnavailable(String),
}

/// Verifies Entra access tokens for enrollment.
pub struct EntraVerifier {
    config: EntraConfig,
    keys: std::sync::Arc<dyn KeySource>,
}

impl EntraVerifier {
    pub fn new(config: EntraConfig, keys: std::sync::Arc<dyn KeySource>) -> Self {
        Self { config, keys }
    }

    pub fn config(&self) -> &EntraConfig {
        &self.config
    }

    pub async fn verify(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<EntraIdentity, EntraError> {
        let issuers = self.config.issuers();
        let expect = Expect {
            issuers: &issuers,
            audiences: &self.config.audiences,
        };
        // Refused before any key is fetched if it is not an RS256 JWT.
        jwt::decode(token)?;
        let keys = self
            .keys
            .keys(false)
            .await
            .map_err(EntraError::KeysUnavailable)?;
        let claims = match jwt::decode(token)?.verify(&keys, &expect, now) {
            Err(JwtError::UnknownKey(_)) => {
                let keys = self
                    .keys
                    .keys(true)
                    .await
                    .map_err(EntraError::KeysUnavailable)?;
                jwt::decode(token)?.verify(&keys, &expect, now)?
            }
            Err(JwtError::Issuer(iss)) => {
                // Say "tenant" when the issuer is an Entra issuer of another tenant.
                return Err(match tenant_of_issuer(&iss) {
                    Some(t) => EntraError::Tenant(t),
                    None => EntraError::Token(JwtError::Issuer(iss)),
                });
            }
            other => other?,
        };
        check_claims(&claims)
    }
}

/// The tenant id in an Entra issuer URL, if it is one.
fn tenant_of_issuer(iss: &str) -> Option<String> {
    iss.strip_prefix("https://sts.windows.net/")
        .and_then(|r| r.strip_suffix('/'))
        .or_else(|| {
            iss.strip_prefix("https://login.microsoftonline.com/")
                .and_then(|r| r.strip_suffix("/v2.0"))
        })
        .map(str::to_owned)
}

fn check_claims(c: &Value) -> Result<EntraIdentity, EntraError> {
    let s = |k: &str| c.get(k).and_then(Value::as_str).map(str::trim);
    let iss = s("iss").unwrap_or("");
    let tid = s("tid").unwrap_or("").to_ascii_lowercase();
    // The verifier accepted the issuer for some allowed tenant; `tid` must be that one.
    if tenant_of_issuer(iss).map(|t| t.to_ascii_lowercase()) != Some(tid.clone()) {
        return Err(EntraError::Tenant(tid));
    }
    let scopes = s("scp").unwrap_or("");
    if !scopes.split(' ').any(|x| x == MDM_SCOPE) {
        return Err(EntraError::Scope);
    }
    let upn = s("upn")
        .or_else(|| s("preferred_username"))
        .filter(|u| !u.is_empty() && u.len() <= 256 && u.contains('@'))
        .ok_or(EntraError::NoUser)?;
    let object_id = s("oid")
        .filter(|o| !o.is_empty() && o.len() <= 64)
        .ok_or(EntraError::NoUser)?;
    Ok(EntraIdentity {
        upn: crate::model::normalize_upn(upn),
        tenant_id: tid,
        object_id: object_id.to_owned(),
        device_id: s("deviceid")
            .filter(|d| !d.is_empty() && d.len() <= 64)
            .map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_come_from_both_issuer_forms() {
        assert_eq!(
            tenant_of_issuer("https://sts.windows.net/abc/").as_deref(),
            Some("abc")
        );
        assert_eq!(
            tenant_of_issuer("https://login.microsoftonline.com/abc/v2.0").as_deref(),
            Some("abc")
        );
        assert_eq!(tenant_of_issuer("https://evil.example.com/abc/"), None);
    }

    #[test]
    fn claims_need_the_scope_a_user_and_a_matching_tenant() {
        let good = serde_json::json!({"iss": "https://sts.windows.net/t1/", "tid": "t1",
            "scp": "openid mdm_delegation", "upn": "Alice@Contoso.com", "oid": "o1"});
        let id = check_claims(&good).unwrap();
        assert_eq!(id.upn, "alice@contoso.com");
        assert_eq!(id.tenant_id, "t1");
        let mut other_tid = good.clone();
        other_tid["tid"] = "t2".into();
        assert_eq!(
            check_claims(&other_tid),
            Err(EntraError::Tenant("t2".into()))
        );
        let mut no_scope = good.clone();
        no_scope["scp"] = "openid".into();
        assert_eq!(check_claims(&no_scope), Err(EntraError::Scope));
        let mut no_user = good.clone();
        no_user.as_object_mut().unwrap().remove("upn");
        assert_eq!(check_claims(&no_user), Err(EntraError::NoUser));
        no_user["preferred_username"] = "bob@contoso.com".into();
        assert_eq!(check_claims(&no_user).unwrap().upn, "bob@contoso.com");
    }
}
