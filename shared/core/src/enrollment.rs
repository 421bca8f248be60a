//! The enrollment service: Discovery, XCEP GetPolicies, WSTEP RequestSecurityToken and the
//! federated sign-in, over the [`Store`], [`CertificateAuthority`] and [`Clock`] traits.
//! Bytes of a SOAP request in, bytes of a SOAP reply (or fault) out.

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::macros::format_description;
use tracing::{info, warn};
use winmdm_wire::discovery::{AuthPolicy, DiscoverRequest, DiscoverResponse, DiscoveredAuth};
use winmdm_wire::ns;
use winmdm_wire::provisioning::{
    ClientCertStore, DigestCredential, ProvisioningDoc, RenewalDoc, RenewalSchedule,
    StoreCertificate,
};
use winmdm_wire::soap::{Envelope, EnvelopeError, ErrorType, Fault, FaultCode, Security};
use winmdm_wire::wstep::{
    CertificateRequest, RequestSecurityToken, RequestSecurityTokenResponse, RequestType,
};
use winmdm_wire::xcep::{GetPoliciesRequest, GetPoliciesResponse};

use crate::ca::{
    CaError, CertificateAuthority, ClientCertificate, IssueRequest, IssuedCertificate,
    check_client_certificate, thumbprint,
};
use crate::clock::Clock;
use crate::commands::CommandState;
use crate::config::{EnrollmentConfig, MAX_ENROLLMENT_VERSION, PreferredAuth};
use crate::csr::{CsrError, VerifiedCsr, verify_csr};
use crate::digest::digest_key;
use crate::identity::{
    EnrollmentClaim, EnrollmentDecision, EnrollmentRefusal, RenewalDecision, RenewalRefusal,
    decide_enrollment, decide_renewal,
};
use crate::model::{
    Device, DeviceCertificate, DeviceStatus, DmCredentials, EnrollmentType, OsInfo,
    PreviousCertificate, normalize_upn,
};
use crate::password::{Busy, PasswordPool};
use crate::pkcs7::{Pkcs7Error, verify_signed_data};
use crate::session::{
    CertificateSwitch, DevicePatch, EnrollmentMark, ManagementUpdate, SessionWrite,
};
use crate::store::{ConsumedToken, EnrollmentCommit, Store, StoreError};
use crate::throttle::{GuessLimiter, Throttled};
use crate::token::{TokenError, TokenKey};

/// A SOAP reply and what it meant, for the HTTP layer's status code, logs and metrics.
#[derive(Debug, Clone)]
pub struct SoapReply {
    pub xml: String,
    pub fault: Option<Fault>,
    pub device_id: Option<String>,
}

impl SoapReply {
    fn ok(xml: String) -> Self {
        Self {
            xml,
            fault: None,
            device_id: None,
        }
    }
}

/// Why an enrollment step failed. Each variant maps to the fault a Windows client expects
/// (PROTOCOL §7); the internal detail is logged, the device gets a plain reason.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("malformed request: {0}")]
    Message(String),
    #[error("invalid enrollment data: {0}")]
    InvalidEnrollmentData(String),
    #[error("authentication failed: {0}")]
    Authentication(&'static str),
    /// Too many failed password attempts for this UPN or from this address; refused
    /// without checking the password.
    #[error(transparent)]
    Throttled(#[from] Throttled),
    /// The password checks are saturated; refused without checking the password.
    #[error("password checks are saturated: {0}")]
    Busy(#[from] Busy),
    #[error("not authorized: {0}")]
    Authorization(String),
    /// The Entra ID key set could not be read (retryable).
    #[error("Entra ID keys unavailable: {0}")]
    KeysUnavailable(String),
    /// The sign-in token key could not be read (retryable).
    #[error("the sign-in token key is unavailable: {0}")]
    KeyUnavailable(String),
    /// The identity rules refuse this enrollment (`crate::identity`).
    #[error("enrollment refused: {0}")]
    Refused(EnrollmentRefusal),
    #[error(transparent)]
    Csr(#[from] CsrError),
    #[error("not supported: {0}")]
    NotSupported(String),
    #[error("the certificate has expired and cannot be renewed")]
    NotEligibleToRenew,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ca(#[from] CaError),
}

impl EnrollError {
    pub fn to_fault(&self) -> Fault {
        match self {
            EnrollError::Envelope(e) => Fault::new(e.fault_code(), e.to_string()),
            EnrollError::Message(m) => Fault::new(FaultCode::MessageFormat, m.clone()),
            EnrollError::InvalidEnrollmentData(m) => {
                Fault::new(FaultCode::MessageFormat, m.clone())
                    .with_detail(ErrorType::InvalidEnrollmentData)
            }
            EnrollError::Authentication(_) => Fault::new(
                FaultCode::Authentication,
                "The user name, password or sign-in is not valid. Sign in again.",
            ),
            EnrollError::Throttled(t) => Fault::new(
                FaultCode::Authentication,
                format!(
                    "Too many failed sign-in attempts. Try again in {} seconds.",
                    t.retry_after_secs()
                ),
            ),
            EnrollError::Busy(_) => Fault::new(
                FaultCode::EnrollmentServer,
                "The sign-in service is busy. Try again later.",
            )
            .with_detail(ErrorType::InMaintenance),
            EnrollError::Authorization(m) => Fault::new(FaultCode::Authorization, m.clone()),
            EnrollError::KeyUnavailable(_) => Fault::new(
                FaultCode::EnrollmentServer,
                "The sign-in service is starting. Try again later.",
            )
            .with_detail(ErrorType::InMaintenance),
            EnrollError::KeysUnavailable(_) => Fault::new(
                FaultCode::EnrollmentServer,
                "Microsoft Entra ID could not be reached to check the sign-in. Try again later.",
            )
            .with_detail(ErrorType::InMaintenance),
            // Windows 10 20H2 and later show a CustomServerError's text to the user.
            EnrollError::Refused(r) => Fault::new(FaultCode::Authorization, r.to_string())
                .with_detail(ErrorType::CustomServerError),
            EnrollError::Csr(e) => Fault::new(FaultCode::CertificateRequest, e.to_string()),
            EnrollError::NotSupported(m) => Fault::new(FaultCode::EnrollmentServer, m.clone())
                .with_detail(ErrorType::NotSupported),
            EnrollError::NotEligibleToRenew => Fault::new(
                FaultCode::Authorization,
                "The device certificate has expired; enroll the device again.",
            )
            .with_detail(ErrorType::NotEligibleToRenew),
            EnrollError::Store(StoreError::TokenReplayed) => Fault::new(
                FaultCode::Authentication,
                "This sign-in was already used. Sign in again.",
            ),
            EnrollError::Store(StoreError::Conflict(m)) => {
                Fault::new(FaultCode::Authorization, format!("{m} already exists"))
            }
            EnrollError::Store(_) => Fault::new(
                FaultCode::EnrollmentServer,
                "The enrollment service is temporarily unavailable. Try again later.",
            )
            .with_detail(ErrorType::InMaintenance),
            EnrollError::Ca(CaError::Unavailable(_)) => Fault::new(
                FaultCode::EnrollmentServer,
                "The certificate service is busy. Try again later.",
            )
            .with_detail(ErrorType::InMaintenance),
            EnrollError::Ca(_) => Fault::new(
                FaultCode::EnrollmentServer,
                "The certificate could not be issued.",
            ),
        }
    }
}

/// The authenticated user behind a request.
#[derive(Debug, Clone)]
struct Principal {
    upn: String,
    /// The federated token, to be spent when the enrollment commits.
    token: Option<ConsumedToken>,
    /// Who Entra ID says signed in, for an Entra enrollment.
    entra: Option<crate::entra::EntraIdentity>,
}

pub struct EnrollmentService {
    config: Arc<EnrollmentConfig>,
    store: Arc<dyn Store>,
    ca: Arc<dyn CertificateAuthority>,
    clock: Arc<dyn Clock>,
    tokens: TokenKey,
    /// Where argon2 runs (off the executor, bounded).
    passwords: PasswordPool,
    /// Failed password attempts per UPN and per address.
    guesses: GuessLimiter,
    /// Entra ID enrollment, when configured (`crate::entra`).
    entra: Option<Arc<crate::entra::EntraVerifier>>,
}

impl EnrollmentService {
    pub fn new(
        config: Arc<EnrollmentConfig>,
        store: Arc<dyn Store>,
        ca: Arc<dyn CertificateAuthority>,
        clock: Arc<dyn Clock>,
        tokens: TokenKey,
    ) -> Self {
        Self {
            config,
            store,
            ca,
            clock,
            tokens,
            passwords: PasswordPool::default(),
            guesses: GuessLimiter::default(),
            entra: None,
        }
    }

    /// The sign-in token key (the terms-of-use page derives its own key from it).
    pub fn token_key(&self) -> &TokenKey {
        &self.tokens
    }

    /// Accepts Entra ID access tokens (BinarySecurityToken of type
    /// [`crate::entra::JWT_VALUE_TYPE`]) besides the configured sign-in policy.
    pub fn enable_entra(&mut self, verifier: Arc<crate::entra::EntraVerifier>) {
        self.entra = Some(verifier);
    }

    /// The Entra verifier, for the terms-of-use page.
    pub fn entra(&self) -> Option<&crate::entra::EntraVerifier> {
        self.entra.as_deref()
    }

    /// Replaces the argon2 pool (default: one slot per CPU).
    pub fn with_password_pool(mut self, pool: PasswordPool) -> Self {
        self.passwords = pool;
        self
    }

    /// Replaces the guess limiter (default: [`crate::throttle::LimiterConfig::default`]).
    pub fn with_guess_limiter(mut self, limiter: GuessLimiter) -> Self {
        self.guesses = limiter;
        self
    }

    /// The argon2 pool, also for hashing new users' passwords off the executor.
    pub fn password_pool(&self) -> &PasswordPool {
        &self.passwords
    }

    pub fn guess_limiter(&self) -> &GuessLimiter {
        &self.guesses
    }

    pub fn config(&self) -> &EnrollmentConfig {
        &self.config
    }

    fn fault_reply(
        &self,
        err: &EnrollError,
        action: &str,
        relates_to: Option<&str>,
        trace_id: &str,
    ) -> SoapReply {
        let fault = err.to_fault();
        warn!(fault = fault.code.name(), error = %err, "enrollment request refused");
        SoapReply {
            xml: fault.to_xml(action, relates_to, trace_id),
            fault: Some(fault),
            device_id: None,
        }
    }

    // ---- Discovery ------------------------------------------------------------------

    /// Answers a Discover POST.
    pub fn discover(&self, body: &[u8], trace_id: &str) -> SoapReply {
        let action = ns::action::DISCOVER_RESPONSE;
        let env = match Envelope::parse(body) {
            Ok(e) => e,
            Err(e) => return self.fault_reply(&e.into(), action, None, trace_id),
        };
        let relates = env.message_id.clone();
        match self.discover_inner(&env) {
            Ok(resp) => SoapReply::ok(resp.to_xml(relates.as_deref())),
            Err(e) => self.fault_reply(&e, action, relates.as_deref(), trace_id),
        }
    }

    fn discover_inner(&self, env: &Envelope) -> Result<DiscoverResponse, EnrollError> {
        let req =
            DiscoverRequest::from_envelope(env).map_err(|e| EnrollError::Message(e.to_string()))?;
        let chosen = choose_auth(self.config.auth_policy, &req.auth_policies).ok_or_else(|| {
            EnrollError::NotSupported(format!(
                "none of the offered authentication policies ({}) is supported; this server accepts {}",
                req.auth_policies
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.config.auth_policy.policy().as_str()
            ))
        })?;
        let enrollment_version = req
            .request_version
            .map_or(MAX_ENROLLMENT_VERSION, |v| v.min(MAX_ENROLLMENT_VERSION));
        info!(
            auth_policy = chosen.policy().as_str(),
            requested = ?req.request_version.map(|v| v.to_string()),
            answered = %enrollment_version,
            "discovery"
        );
        Ok(DiscoverResponse {
            auth: match chosen {
                PreferredAuth::Federated => DiscoveredAuth::Federated {
                    authentication_service_url: self.config.auth_url(),
                },
                PreferredAuth::OnPremise => DiscoveredAuth::OnPremise,
            },
            enrollment_version,
            enrollment_policy_service_url: self.config.policy_url(),
            enrollment_service_url: self.config.enrollment_url(),
        })
    }

    // ---- Federated sign-in ------------------------------------------------------------

    /// Checks a user's credentials from the login page and issues a sign-in token.
    /// `client` is the caller's address, for the guess limiter. Only a federated server
    /// has a login page: an on-premise one takes passwords only as the UsernameToken (see
    /// [`choose_auth`]), so here it refuses with [`EnrollError::NotSupported`].
    pub async fn sign_in(
        &self,
        upn: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<String, EnrollError> {
        if self.config.auth_policy != PreferredAuth::Federated {
            return Err(EnrollError::NotSupported(
                "this server does not use federated sign-in".into(),
            ));
        }
        let upn = normalize_upn(upn);
        self.check_password(&upn, password.as_bytes(), client)
            .await?;
        let signer = self
            .tokens
            .signer()
            .await
            .map_err(EnrollError::KeyUnavailable)?;
        info!(upn = %upn, "federated sign-in");
        Ok(signer.issue(&upn, self.clock.now()))
    }

    /// The password check behind the login page and the UsernameToken. Refused before
    /// any argon2 while the UPN or the address is backing off ([`EnrollError::Throttled`])
    /// or the argon2 pool is saturated ([`EnrollError::Busy`]); otherwise argon2 runs off
    /// the executor, against a dummy hash for an unknown user (constant effort), and a
    /// wrong password or unknown user counts as a failure for both keys.
    async fn check_password(
        &self,
        upn: &str,
        password: &[u8],
        client: Option<IpAddr>,
    ) -> Result<(), EnrollError> {
        let attempt = self.guesses.begin(upn, client, self.clock.now())?;
        let phc = self.store.get_user(upn).await?.map(|u| u.password_hash);
        if self.passwords.verify(password.to_vec(), phc).await? {
            attempt.succeeded();
            Ok(())
        } else {
            attempt.failed(self.clock.now());
            Err(EnrollError::Authentication("wrong user name or password"))
        }
    }

    /// Checks the credentials of an XCEP or WSTEP request. Only the configured policy's
    /// are accepted (see [`choose_auth`]): a federated server takes the login page's
    /// token and refuses a UsernameToken, an on-premise one the reverse. The caller's
    /// address for the guess limiter comes from [`crate::throttle::client_addr`].
    async fn authenticate(&self, security: &Security) -> Result<Principal, EnrollError> {
        if let Security::BinaryToken { value_type, data } = security
            && value_type == crate::entra::JWT_VALUE_TYPE
        {
            return self.authenticate_entra(data.expose()).await;
        }
        match (security, self.config.auth_policy) {
            (Security::None, _) => {
                Err(EnrollError::Authentication("no credentials in the request"))
            }
            (Security::UsernameToken { .. }, PreferredAuth::Federated) => {
                Err(EnrollError::Authentication(
                    "a federated server does not take user names and passwords",
                ))
            }
            (Security::BinaryToken { .. }, PreferredAuth::OnPremise) => Err(
                EnrollError::Authentication("an on-premise server does not take sign-in tokens"),
            ),
            (Security::UsernameToken { username, password }, PreferredAuth::OnPremise) => {
                let upn = normalize_upn(username);
                self.check_password(&upn, password.expose(), crate::throttle::client_addr())
                    .await?;
                Ok(Principal {
                    upn,
                    token: None,
                    entra: None,
                })
            }
            (Security::BinaryToken { value_type, data }, PreferredAuth::Federated) => {
                if value_type != ns::token::DEVICE_ENROLLMENT_USER_TOKEN {
                    return Err(EnrollError::Authentication(
                        "unsupported security token type",
                    ));
                }
                let claims = self
                    .tokens
                    .signer()
                    .await
                    .map_err(EnrollError::KeyUnavailable)?
                    .verify(data.expose(), self.clock.now())
                    .map_err(|e| {
                        EnrollError::Authentication(match e {
                            TokenError::Expired => "sign-in token expired",
                            TokenError::BadSignature => "sign-in token signature invalid",
                            TokenError::Malformed => "sign-in token malformed",
                        })
                    })?;
                if self.store.get_user(&claims.upn).await?.is_none() {
                    return Err(EnrollError::Authentication("user no longer exists"));
                }
                if self.store.is_token_consumed(&claims.jti).await? {
                    return Err(EnrollError::Store(StoreError::TokenReplayed));
                }
                Ok(Principal {
                    upn: claims.upn.clone(),
                    token: Some(ConsumedToken {
                        expires_at: claims.expires_at(),
                        id: claims.jti,
                    }),
                    entra: None,
                })
            }
        }
    }

    /// An Entra ID access token (Entra join, or a work account): verified against the
    /// tenant's keys and the allow-lists. Its user need not exist here: it is recorded when
    /// the enrollment commits. A token is not single-use (Windows presents the same one to
    /// XCEP and WSTEP); it is bound to its tenant, audience and a short lifetime instead.
    async fn authenticate_entra(&self, data: &[u8]) -> Result<Principal, EnrollError> {
        use crate::entra::EntraError;
        let Some(verifier) = &self.entra else {
            return Err(EnrollError::Authentication(
                "Entra ID enrollment is not configured on this server",
            ));
        };
        let token = std::str::from_utf8(data)
            .map_err(|_| EnrollError::Authentication("Entra token is not text"))?
            .trim();
        match verifier.verify(token, self.clock.now()).await {
            Ok(id) => {
                info!(upn = %id.upn, tenant = %id.tenant_id, "Entra ID token accepted");
                Ok(Principal {
                    upn: id.upn.clone(),
                    token: None,
                    entra: Some(id),
                })
            }
            Err(EntraError::KeysUnavailable(e)) => Err(EnrollError::KeysUnavailable(e)),
            Err(e) => {
                tracing::warn!(error = %e, "Entra ID token refused");
                Err(EnrollError::Authentication(match e {
                    EntraError::Tenant(_) => "Entra token of a tenant not allowed here",
                    EntraError::Scope => "Entra token without the mdm_delegation scope",
                    EntraError::NoUser => "Entra token names no user",
                    EntraError::Token(crate::jwt::JwtError::Expired) => "Entra token expired",
                    EntraError::Token(crate::jwt::JwtError::NotYetValid) => {
                        "Entra token not valid yet"
                    }
                    EntraError::Token(crate::jwt::JwtError::Audience) => {
                        "Entra token for another application"
                    }
                    EntraError::Token(_) => "Entra token invalid",
                    EntraError::KeysUnavailable(_) => unreachable!("handled above"),
                }))
            }
        }
    }

    /// Records an Entra user on their first enrollment, so the console and API list them.
    /// The record has no password (an unusable hash): such a user signs in through Entra
    /// only, never on the login page or with a UsernameToken.
    async fn record_entra_user(
        &self,
        id: &crate::entra::EntraIdentity,
        now: OffsetDateTime,
    ) -> Result<(), EnrollError> {
        if self.store.get_user(&id.upn).await?.is_some() {
            return Ok(());
        }
        let user = crate::model::User {
            upn: id.upn.clone(),
            password_hash: format!("{}{}", crate::model::ENTRA_USER_MARK, id.tenant_id),
            created_at: now,
        };
        match self.store.create_user(&user).await {
            Ok(()) | Err(StoreError::Conflict(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    // ---- XCEP -------------------------------------------------------------------------

    pub async fn get_policies(&self, body: &[u8], trace_id: &str) -> SoapReply {
        let action = ns::action::GET_POLICIES_RESPONSE;
        let env = match Envelope::parse(body) {
            Ok(e) => e,
            Err(e) => return self.fault_reply(&e.into(), action, None, trace_id),
        };
        let relates = env.message_id.clone();
        let result = async {
            GetPoliciesRequest::from_envelope(&env)
                .map_err(|e| EnrollError::Message(e.to_string()))?;
            let principal = self.authenticate(&env.security).await?;
            info!(upn = %principal.upn, "policy request");
            Ok::<_, EnrollError>(GetPoliciesResponse {
                common_name: self.config.provider_name.clone(),
                validity_period_seconds: self.config.cert_validity.whole_seconds().max(1) as u64,
                renewal_period_seconds: self.config.renewal_period.whole_seconds().max(1) as u64,
                minimal_key_length: self.config.min_key_bits as u32,
                next_update_hours: None,
            })
        }
        .await;
        match result {
            Ok(resp) => SoapReply::ok(resp.to_xml(relates.as_deref())),
            Err(e) => self.fault_reply(&e, action, relates.as_deref(), trace_id),
        }
    }

    // ---- WSTEP ------------------------------------------------------------------------

    pub async fn request_security_token(&self, body: &[u8], trace_id: &str) -> SoapReply {
        let action = ns::action::RSTRC;
        let env = match Envelope::parse(body) {
            Ok(e) => e,
            Err(e) => return self.fault_reply(&e.into(), action, None, trace_id),
        };
        let relates = env.message_id.clone();
        match self.enroll(&env).await {
            Ok((xml, device_id)) => SoapReply {
                xml,
                fault: None,
                device_id: Some(device_id),
            },
            Err(e) => self.fault_reply(&e, action, relates.as_deref(), trace_id),
        }
    }

    async fn enroll(&self, env: &Envelope) -> Result<(String, String), EnrollError> {
        let rst = RequestSecurityToken::from_envelope(env)
            .map_err(|e| EnrollError::Message(e.to_string()))?;
        if rst.token_type != ns::token::DEVICE_ENROLLMENT_TOKEN {
            return Err(EnrollError::Message(format!(
                "unsupported TokenType {}",
                winmdm_wire::xml::quote_claim(&rst.token_type)
            )));
        }
        match rst.request_type {
            RequestType::Issue => {}
            RequestType::Renew | RequestType::Recovery => {
                return Err(EnrollError::NotSupported(
                    "certificate renewal is served on the management host".into(),
                ));
            }
        }
        let csr_der = match &rst.request {
            CertificateRequest::Pkcs10(der) => der,
            CertificateRequest::Pkcs7(_) => {
                return Err(EnrollError::Message(
                    "an Issue request carries a PKCS#10".into(),
                ));
            }
        };
        let principal = self.authenticate(&env.security).await?;
        let ctx = DeviceContext::from_rst(&rst)?;
        let span = tracing::info_span!("enroll", device_id = %ctx.device_id, upn = %principal.upn);
        let _guard = span.enter();

        let csr = verify_csr(csr_der, self.config.min_key_bits)?;

        // Who may enroll over what is decided in one place (`identity`), before the CA is
        // asked; the store checks the hardware binding again atomically when committing.
        let by_hw = match &ctx.hw_dev_id {
            Some(hw) => self.store.get_device_by_hw_dev_id(hw).await?,
            None => None,
        };
        let by_id = self.store.get_device(&ctx.device_id).await?;
        let user_blocked = self.store.user_has_blocked_device(&principal.upn).await?;
        let decision = decide_enrollment(
            EnrollmentClaim {
                upn: &principal.upn,
                device_id: &ctx.device_id,
                hw_dev_id: ctx.hw_dev_id.as_deref(),
                entra: principal
                    .entra
                    .as_ref()
                    .map(|e| (e.tenant_id.as_str(), e.object_id.as_str())),
            },
            by_id.as_ref(),
            by_hw.as_ref(),
            user_blocked,
        )
        .map_err(EnrollError::Refused)?;

        let now = self.clock.now();
        let issued = self.issue_certificate(&csr, &ctx.device_id, now).await?;

        let client_secret = random_secret();
        let client_nonce = random_nonce_b64();
        let server_secret = random_secret();
        let client_name = ctx.device_id.clone();
        let server_name = self.config.provider_id.to_string();
        let chain = self.ca.chain().await?;
        let doc = ProvisioningDoc {
            root: store_cert(&chain.root_der),
            intermediate: chain.intermediate_der.as_deref().map(store_cert),
            client: store_cert(&issued.der),
            client_store: match ctx.enrollment_type {
                EnrollmentType::Full => ClientCertStore::User,
                EnrollmentType::Device => ClientCertStore::System,
            },
            renewal: Some(self.renewal_schedule()),
            provider_id: self.config.provider_id.clone(),
            name: self.config.provider_name.clone(),
            management_url: self.config.management_url(),
            server_to_client: DigestCredential {
                name: server_name.clone(),
                secret: server_secret.clone(),
                nonce_b64: random_nonce_b64(),
            },
            client_to_server: DigestCredential {
                name: client_name.clone(),
                secret: client_secret.clone(),
                nonce_b64: client_nonce.clone(),
            },
            upn: principal.upn.clone(),
            ent_dm_id: ctx.device_id.clone(),
            ent_device_name: ctx.os.device_name.clone(),
            poll: self.config.poll,
        };

        if decision == EnrollmentDecision::Fresh {
            // The record was free (unenrolled or removed): whatever was queued for it is not
            // for whoever enrolls now. Cancelled before the new record is written, so a
            // failure in between never hands the old queue to the new enrollment.
            if let Some(old) = &by_id {
                self.cancel_open_commands(old, now).await?;
            }
        }
        if let Some(old) = by_hw.as_ref().filter(|d| d.id != ctx.device_id) {
            // This hardware's record under its earlier DeviceID goes with this commit; so
            // does its queue, or a later enrollment claiming that DeviceID (any client may
            // claim any free one) would be handed it.
            self.cancel_open_commands(old, now).await?;
        }
        let device = Device {
            id: ctx.device_id.clone(),
            hw_dev_id: ctx.hw_dev_id.clone(),
            upn: principal.upn.clone(),
            enrollment_type: ctx.enrollment_type,
            status: DeviceStatus::Enrolled,
            cert: DeviceCertificate {
                serial: issued.serial_hex.clone(),
                thumbprint: thumbprint(&issued.der),
                not_after: issued.not_after,
                spki_sha256: Some(spki_hash(csr.spki_der())),
            },
            os: ctx.os,
            dm_credentials: DmCredentials {
                client_digest_key: digest_key(&client_name, &client_secret),
                client_name,
                server_digest_key: digest_key(&server_name, &server_secret),
                server_name,
                client_nonce: client_nonce.clone(),
                client_nonce_expires_at: Some(now + INITIAL_NONCE_TTL),
                ..DmCredentials::default()
            },
            enrolled_at: now,
            last_seen_at: None,
            dm_info: Default::default(),
            previous_cert: None,
            // The same device enrolling again keeps its groups; a fresh one starts in none.
            groups: match decision {
                EnrollmentDecision::ReEnroll => by_id.map(|d| d.groups).unwrap_or_default(),
                EnrollmentDecision::New => by_hw
                    .filter(|d| d.upn == principal.upn && d.holds_its_hardware())
                    .map(|d| d.groups)
                    .unwrap_or_default(),
                EnrollmentDecision::Fresh => Vec::new(),
            },
            entra: None,
            compliance: None,
        };
        if let Some(id) = &principal.entra {
            self.record_entra_user(id, now).await?;
        }
        let mut device = device;
        device.entra = principal
            .entra
            .as_ref()
            .map(|id| crate::model::EntraBinding {
                tenant_id: id.tenant_id.clone(),
                object_id: id.object_id.clone(),
                device_id: id.device_id.clone(),
            });
        self.store
            .commit_enrollment(&EnrollmentCommit {
                device,
                token: principal.token,
            })
            .await
            .map_err(|e| match e {
                StoreError::EnrollmentRefused(r) => EnrollError::Refused(r),
                e => EnrollError::Store(e),
            })?;
        info!(serial = %issued.serial_hex, "device enrolled");

        Ok((
            self.token_response(doc.to_xml(), now, env.message_id.as_deref()),
            ctx.device_id,
        ))
    }

    /// Fails the open commands of the device record `decided_on` (as this enrollment's
    /// decision read it), which the enrollment takes over or supersedes. If the record is
    /// another enrollment's by now (enrolled again meanwhile), its queue is left alone: the
    /// commit decides again and refuses this enrollment.
    async fn cancel_open_commands(
        &self,
        decided_on: &Device,
        now: OffsetDateTime,
    ) -> Result<(), EnrollError> {
        let device_id = decided_on.id.as_str();
        let Some(old) = self.store.load_management(device_id, "").await? else {
            return Ok(());
        };
        if EnrollmentMark::of(&old.device) != EnrollmentMark::of(decided_on) {
            return Ok(());
        }
        let commands: Vec<_> = old
            .open_commands
            .into_iter()
            .filter(|c| c.state.is_open())
            .map(|mut c| {
                c.state = CommandState::Failed;
                c.reason = Some(SUPERSEDED_REASON.into());
                c.updated_at = now;
                c
            })
            .collect();
        if commands.is_empty() {
            return Ok(());
        }
        info!(
            cancelled = commands.len(),
            "open commands of the old record cancelled"
        );
        self.store
            .save_management(&ManagementUpdate {
                device_id: device_id.to_owned(),
                device: DevicePatch::default(),
                session: SessionWrite::Keep,
                commands,
                profiles: Vec::new(),
            })
            .await?;
        Ok(())
    }

    /// A device certificate for `device_id`'s key, as enrollment and renewal issue it,
    /// checked before anything is written: the CA's answer must certify that DeviceID and
    /// that key. (A CA that deduplicates by token answers a repeated token with the first
    /// certificate, whatever was asked the second time: the token covers the CSR and the
    /// DeviceID both, so that answer is the right one; the check catches any other.)
    async fn issue_certificate(
        &self,
        csr: &VerifiedCsr,
        device_id: &str,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, EnrollError> {
        let mut token = Sha256::new();
        token.update(csr.der());
        token.update([0]);
        token.update(device_id.as_bytes());
        let idempotency = hex_prefix(&token.finalize(), 16);
        let issued = self
            .ca
            .issue(&IssueRequest {
                csr,
                common_name: device_id,
                // Allow for clocks a little behind ours.
                not_before: now - time::Duration::minutes(5),
                not_after: now + self.config.cert_validity,
                idempotency_token: &idempotency,
            })
            .await?;
        if !crate::ca::certifies(&issued.der, device_id, csr.spki_der()) {
            return Err(EnrollError::Ca(CaError::Internal(format!(
                "the certificate issued (serial {}) is not for DeviceID {device_id} and this key",
                issued.serial_hex
            ))));
        }
        Ok(issued)
    }

    fn renewal_schedule(&self) -> RenewalSchedule {
        RenewalSchedule {
            renew_period_days: self.config.renewal_period.whole_days().max(1) as u32,
            retry_interval_days: self.config.renewal_retry_days.max(1),
            server_url: self.config.renewal_url(),
        }
    }

    // ---- Renewal (ROBO) ---------------------------------------------------------------

    /// Answers a WSTEP Renew from a device over mutual TLS. `client_cert` is the DER of
    /// the TLS client certificate.
    pub async fn renew(
        &self,
        body: &[u8],
        client_cert: Option<&[u8]>,
        trace_id: &str,
    ) -> SoapReply {
        let action = ns::action::RSTRC;
        let env = match Envelope::parse(body) {
            Ok(e) => e,
            Err(e) => return self.fault_reply(&e.into(), action, None, trace_id),
        };
        let relates = env.message_id.clone();
        match self.renew_inner(&env, client_cert).await {
            Ok((xml, device_id)) => SoapReply {
                xml,
                fault: None,
                device_id: Some(device_id),
            },
            Err(e) => self.fault_reply(&e, action, relates.as_deref(), trace_id),
        }
    }

    async fn renew_inner(
        &self,
        env: &Envelope,
        client_cert: Option<&[u8]>,
    ) -> Result<(String, String), EnrollError> {
        let rst = RequestSecurityToken::from_envelope(env)
            .map_err(|e| EnrollError::Message(e.to_string()))?;
        if rst.request_type != RequestType::Renew {
            return Err(EnrollError::Message(
                "this endpoint serves certificate renewals".into(),
            ));
        }
        let CertificateRequest::Pkcs7(p7) = &rst.request else {
            return Err(EnrollError::Message("a renewal carries a PKCS#7".into()));
        };
        let tls = client_cert.ok_or(EnrollError::Authentication(
            "renewal without a client certificate",
        ))?;
        let signed = verify_signed_data(p7).map_err(|e| match e {
            Pkcs7Error::BadSignature
            | Pkcs7Error::DigestMismatch
            | Pkcs7Error::SignerCertificateMissing => {
                EnrollError::Authentication("the renewal's signature does not verify")
            }
            other => EnrollError::Message(format!("renewal request: {other}")),
        })?;
        if signed.signer_der != tls {
            return Err(EnrollError::Authentication(
                "the renewal is not signed by the presented certificate",
            ));
        }
        let now = self.clock.now();
        let chain = self.ca.chain().await?;
        let (device_id, presented) = match check_client_certificate(tls, chain.issuer_der(), now) {
            ClientCertificate::Valid { cn, thumbprint } => (cn, thumbprint),
            ClientCertificate::Expired { .. } => return Err(EnrollError::NotEligibleToRenew),
            ClientCertificate::Untrusted => {
                return Err(EnrollError::Authentication(
                    "client certificate not issued by this server",
                ));
            }
        };
        let device = self
            .store
            .get_device(&device_id)
            .await?
            .ok_or(EnrollError::Authentication("unknown device"))?;
        let span = tracing::info_span!("renew", device_id = %device.id);
        let _guard = span.enter();
        let csr = verify_csr(&signed.content, self.config.min_key_bits)?;
        let user_exists = self.store.get_user(&device.upn).await?.is_some();
        let decision = decide_renewal(
            &device,
            user_exists,
            &presented,
            &spki_hash(csr.spki_der()),
            now,
        )
        .map_err(|e| match e {
            RenewalRefusal::NotEnrolled => EnrollError::Authorization(format!(
                "the device is {}",
                serde_json::to_value(device.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            )),
            RenewalRefusal::UserDeleted => EnrollError::NotEligibleToRenew,
            RenewalRefusal::NotCurrent => {
                EnrollError::Authentication("only the device's current certificate may renew")
            }
        })?;
        let issued = self.issue_certificate(&csr, &device.id, now).await?;
        let new = DeviceCertificate {
            serial: issued.serial_hex.clone(),
            thumbprint: thumbprint(&issued.der),
            not_after: issued.not_after,
            spki_sha256: Some(spki_hash(csr.spki_der())),
        };
        // From the current certificate, it is kept for the grace period. A retry after a
        // lost reply replaces the current certificate (same key) and leaves the previous
        // one's grace period as it was: it never extends.
        let previous = match decision {
            RenewalDecision::FromCurrent => PreviousCertificate {
                cert: device.cert.clone(),
                accepted_until: now + self.config.renewal_grace,
            },
            RenewalDecision::RetryOfLostReply => {
                device
                    .previous_cert
                    .clone()
                    .ok_or(EnrollError::Authentication(
                        "only the device's current certificate may renew",
                    ))?
            }
        };
        let update = ManagementUpdate {
            device_id: device.id.clone(),
            device: DevicePatch {
                certificate: Some(CertificateSwitch {
                    expect_current: device.cert.thumbprint.clone(),
                    new,
                    previous,
                }),
                ..DevicePatch::default()
            },
            session: SessionWrite::Keep,
            commands: Vec::new(),
            profiles: Vec::new(),
        };
        self.store
            .save_management(&update)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => EnrollError::Store(StoreError::Unavailable(
                    "the certificate was renewed concurrently; try again".into(),
                )),
                other => EnrollError::Store(other),
            })?;
        info!(serial = %issued.serial_hex, "certificate renewed");
        let doc = RenewalDoc {
            client: store_cert(&issued.der),
            client_store: match device.enrollment_type {
                EnrollmentType::Full => ClientCertStore::User,
                EnrollmentType::Device => ClientCertStore::System,
            },
            renewal: Some(self.renewal_schedule()),
        };
        Ok((
            self.token_response(doc.to_xml(), now, env.message_id.as_deref()),
            device.id,
        ))
    }

    /// The RSTRC carrying a provisioning document.
    fn token_response(
        &self,
        doc_xml: String,
        now: OffsetDateTime,
        relates_to: Option<&str>,
    ) -> String {
        let fmt = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let utc = now.to_offset(time::UtcOffset::UTC);
        RequestSecurityTokenResponse {
            provisioning_doc_xml: doc_xml,
            created: utc.format(&fmt).unwrap_or_default(),
            expires: (utc + time::Duration::minutes(5))
                .format(&fmt)
                .unwrap_or_default(),
        }
        .to_xml(relates_to)
    }

    /// The current time, for handlers that need it.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }
}

/// Picks the auth policy: the configured one if the device offers it (or lists nothing),
/// else none.
///
/// There is no fallback to the other policy, because the credential rule follows the
/// configuration, not the discovery answer: XCEP and WSTEP are separate stateless
/// requests, so "accept what discovery would have chosen" is the same as "accept both"
/// (an attacker just offers only the other policy). Accepting both would turn a
/// federated server's XCEP and WSTEP into password-guessing endpoints beside its login
/// page, and an on-premise server's login page into one beside them. So a federated
/// server takes only its login page's token and an on-premise server only the
/// UsernameToken ([`EnrollmentService::authenticate`]), and discovery offers only that
/// policy: a device that does not offer it gets a NotSupported fault rather than a
/// policy whose credentials would then be refused. (Windows 10 and later offer both.)
fn choose_auth(configured: PreferredAuth, offered: &[AuthPolicy]) -> Option<PreferredAuth> {
    (offered.is_empty() || offered.contains(&configured.policy())).then_some(configured)
}

/// The WSTEP context items we use, validated.
struct DeviceContext {
    device_id: String,
    hw_dev_id: Option<String>,
    enrollment_type: EnrollmentType,
    os: OsInfo,
}

impl DeviceContext {
    fn from_rst(rst: &RequestSecurityToken) -> Result<Self, EnrollError> {
        let c = &rst.context;
        let device_id = c
            .get("DeviceID")
            .ok_or_else(|| EnrollError::InvalidEnrollmentData("DeviceID is missing".into()))?
            .to_owned();
        if !crate::identity::device_id_is_well_formed(&device_id) {
            return Err(EnrollError::InvalidEnrollmentData(
                "DeviceID must be 1 to 128 characters of A-Z a-z 0-9 - _ . { }".into(),
            ));
        }
        let enrollment_type = match c
            .get("EnrollmentType")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("full") => EnrollmentType::Full,
            Some("device") => EnrollmentType::Device,
            Some(other) => {
                return Err(EnrollError::InvalidEnrollmentData(format!(
                    "EnrollmentType {} is neither Full nor Device",
                    winmdm_wire::xml::quote_claim(other)
                )));
            }
            None => {
                return Err(EnrollError::InvalidEnrollmentData(
                    "EnrollmentType is missing".into(),
                ));
            }
        };
        // An empty HWDevID is no HWDevID: it must not match another empty one.
        let hw_dev_id = c
            .get("HWDevID")
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned);
        if let Some(hw) = &hw_dev_id
            && (hw.len() > 128 || !hw.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(EnrollError::InvalidEnrollmentData(
                "HWDevID is not valid".into(),
            ));
        }
        let field = |name: &str| c.get(name).map(|v| v.chars().take(256).collect::<String>());
        Ok(Self {
            device_id,
            hw_dev_id,
            enrollment_type,
            os: OsInfo {
                device_type: field("DeviceType"),
                os_edition: field("OSEdition"),
                os_version: field("OSVersion"),
                application_version: field("ApplicationVersion"),
                device_name: field("DeviceName"),
            },
        })
    }
}

fn store_cert(der: &[u8]) -> StoreCertificate {
    StoreCertificate {
        thumbprint: thumbprint(der),
        der_base64: B64.encode(der),
    }
}

fn random_secret() -> String {
    let mut b = [0u8; 24];
    OsRng.fill_bytes(&mut b);
    B64URL.encode(b)
}

/// Why the open commands of a re-enrolled device record failed.
pub const SUPERSEDED_REASON: &str =
    "the device was enrolled again; its earlier queue was cancelled";

/// How long the nonce in the provisioning doc stays usable for a first digest session.
const INITIAL_NONCE_TTL: time::Duration = time::Duration::days(30);

pub(crate) fn random_nonce_b64() -> String {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    B64.encode(b)
}

/// Lowercase hex SHA-256 of a SubjectPublicKeyInfo.
fn spki_hash(spki_der: &[u8]) -> String {
    hex_prefix(&Sha256::digest(spki_der), 32)
}

fn hex_prefix(bytes: &[u8], n: usize) -> String {
    bytes.iter().take(n).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_choice_is_the_configured_policy_without_fallback() {
        use AuthPolicy::*;
        let fed = PreferredAuth::Federated;
        let onprem = PreferredAuth::OnPremise;
        assert_eq!(choose_auth(fed, &[OnPremise, Federated]), Some(fed));
        assert_eq!(choose_auth(onprem, &[OnPremise, Federated]), Some(onprem));
        // Its credentials would be refused, so the other policy is never answered.
        assert_eq!(choose_auth(fed, &[OnPremise]), None);
        assert_eq!(choose_auth(onprem, &[Federated]), None);
        assert_eq!(choose_auth(fed, &[Certificate]), None);
        assert_eq!(choose_auth(fed, &[]), Some(fed));
    }
}
