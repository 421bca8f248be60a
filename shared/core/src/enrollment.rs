//! The enrollment service: Discovery, XCEP GetPolicies, WSTEP RequestSecurityToken and the
//! federated sign-in, over the [`Store`], [`CertificateAuthority`] and [`Clock`] traits.
//! Bytes of a SOAP request in, bytes of a SOAP reply (or fault) out.

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
    CaError, CertificateAuthority, ClientCertificate, IssueRequest, check_client_certificate,
    thumbprint,
};
use crate::clock::Clock;
use crate::config::{EnrollmentConfig, MAX_ENROLLMENT_VERSION, PreferredAuth};
use crate::csr::{CsrError, verify_csr};
use crate::digest::digest_key;
use crate::model::{
    Device, DeviceCertificate, DeviceStatus, DmCredentials, EnrollmentType, OsInfo,
    PreviousCertificate, normalize_upn,
};
use crate::password::verify_password;
use crate::pkcs7::{Pkcs7Error, verify_signed_data};
use crate::session::{CertificateSwitch, DevicePatch, ManagementUpdate, SessionWrite};
use crate::store::{ConsumedToken, EnrollmentCommit, Store, StoreError};
use crate::token::{TokenError, TokenSigner};

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
    #[error("not authorized: {0}")]
    Authorization(String),
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
            EnrollError::Authorization(m) => Fault::new(FaultCode::Authorization, m.clone()),
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
}

pub struct EnrollmentService {
    config: Arc<EnrollmentConfig>,
    store: Arc<dyn Store>,
    ca: Arc<dyn CertificateAuthority>,
    clock: Arc<dyn Clock>,
    tokens: TokenSigner,
}

impl EnrollmentService {
    pub fn new(
        config: Arc<EnrollmentConfig>,
        store: Arc<dyn Store>,
        ca: Arc<dyn CertificateAuthority>,
        clock: Arc<dyn Clock>,
        tokens: TokenSigner,
    ) -> Self {
        Self {
            config,
            store,
            ca,
            clock,
            tokens,
        }
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
                "none of the offered authentication policies ({}) is supported; this server accepts Federated and OnPremise",
                req.auth_policies
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
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
    pub async fn sign_in(&self, upn: &str, password: &str) -> Result<String, EnrollError> {
        let upn = normalize_upn(upn);
        let user = self.store.get_user(&upn).await?;
        if !verify_password(
            password.as_bytes(),
            user.as_ref().map(|u| u.password_hash.as_str()),
        ) {
            return Err(EnrollError::Authentication("wrong user name or password"));
        }
        info!(upn = %upn, "federated sign-in");
        Ok(self.tokens.issue(&upn, self.clock.now()))
    }

    async fn authenticate(&self, security: &Security) -> Result<Principal, EnrollError> {
        match security {
            Security::None => Err(EnrollError::Authentication("no credentials in the request")),
            Security::UsernameToken { username, password } => {
                let upn = normalize_upn(username);
                let user = self.store.get_user(&upn).await?;
                if verify_password(
                    password.expose(),
                    user.as_ref().map(|u| u.password_hash.as_str()),
                ) {
                    Ok(Principal { upn, token: None })
                } else {
                    Err(EnrollError::Authentication("wrong user name or password"))
                }
            }
            Security::BinaryToken { value_type, data } => {
                if value_type != ns::token::DEVICE_ENROLLMENT_USER_TOKEN {
                    return Err(EnrollError::Authentication(
                        "unsupported security token type",
                    ));
                }
                let claims = self
                    .tokens
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
                })
            }
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
                rst.token_type
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

        // A blocked machine stays out until an operator unblocks it, under any DeviceID.
        let by_hw = match &ctx.hw_dev_id {
            Some(hw) => self.store.get_device_by_hw_dev_id(hw).await?,
            None => None,
        };
        let by_id = self.store.get_device(&ctx.device_id).await?;
        if by_hw
            .iter()
            .chain(by_id.iter())
            .any(|d| d.status == DeviceStatus::Blocked)
        {
            return Err(EnrollError::Authorization(
                "this device is blocked; ask your administrator to unblock it".into(),
            ));
        }
        // Refuse early, before asking the CA, when the id belongs to other hardware; the
        // store checks again atomically when committing.
        if let Some(existing) = by_id
            && let (Some(old), Some(new)) = (&existing.hw_dev_id, &ctx.hw_dev_id)
            && !old.eq_ignore_ascii_case(new)
        {
            return Err(EnrollError::Authorization(
                "this DeviceID is enrolled for other hardware".into(),
            ));
        }

        let now = self.clock.now();
        let idempotency = hex_prefix(&Sha256::digest(csr.der()), 16);
        let issued = self
            .ca
            .issue(&IssueRequest {
                csr: &csr,
                common_name: &ctx.device_id,
                // Allow for clocks a little behind ours.
                not_before: now - time::Duration::minutes(5),
                not_after: now + self.config.cert_validity,
                idempotency_token: &idempotency,
            })
            .await?;

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
        };
        self.store
            .commit_enrollment(&EnrollmentCommit {
                device,
                token: principal.token,
            })
            .await?;
        info!(serial = %issued.serial_hex, "device enrolled");

        Ok((
            self.token_response(doc.to_xml(), now, env.message_id.as_deref()),
            ctx.device_id,
        ))
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
        if device.status != DeviceStatus::Enrolled {
            return Err(EnrollError::Authorization(format!(
                "the device is {}",
                serde_json::to_value(device.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            )));
        }
        if !device.accepts_certificate(&presented, now) {
            return Err(EnrollError::Authentication(
                "not the device's current certificate",
            ));
        }
        let csr = verify_csr(&signed.content, self.config.min_key_bits)?;
        let idempotency = hex_prefix(&Sha256::digest(csr.der()), 16);
        let issued = self
            .ca
            .issue(&IssueRequest {
                csr: &csr,
                common_name: &device.id,
                not_before: now - time::Duration::minutes(5),
                not_after: now + self.config.cert_validity,
                idempotency_token: &idempotency,
            })
            .await?;
        // Keep accepting what the device holds now until the grace period ends.
        let held = if device.cert.thumbprint.eq_ignore_ascii_case(&presented) {
            device.cert.clone()
        } else {
            device
                .previous_cert
                .as_ref()
                .map(|p| p.cert.clone())
                .unwrap_or_else(|| device.cert.clone())
        };
        let update = ManagementUpdate {
            device_id: device.id.clone(),
            device: DevicePatch {
                certificate: Some(CertificateSwitch {
                    expect_current: device.cert.thumbprint.clone(),
                    new: DeviceCertificate {
                        serial: issued.serial_hex.clone(),
                        thumbprint: thumbprint(&issued.der),
                        not_after: issued.not_after,
                    },
                    previous: PreviousCertificate {
                        cert: held,
                        accepted_until: now + self.config.renewal_grace,
                    },
                }),
                ..DevicePatch::default()
            },
            session: SessionWrite::Keep,
            commands: Vec::new(),
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

/// Picks the auth policy: the configured one if offered, else the other supported one if
/// offered, else none. A device that lists nothing gets the configured one.
fn choose_auth(preferred: PreferredAuth, offered: &[AuthPolicy]) -> Option<PreferredAuth> {
    if offered.is_empty() || offered.contains(&preferred.policy()) {
        return Some(preferred);
    }
    let other = preferred.other();
    offered.contains(&other.policy()).then_some(other)
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
        // The id becomes a certificate CN, a SyncML address and a storage key.
        let id_ok = device_id.len() <= 128
            && device_id.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'{' | b'}')
            });
        if !id_ok {
            return Err(EnrollError::InvalidEnrollmentData(
                "DeviceID must be at most 128 characters of A-Z a-z 0-9 - _ . { }".into(),
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
                    "EnrollmentType {other:?} is neither Full nor Device"
                )));
            }
            None => {
                return Err(EnrollError::InvalidEnrollmentData(
                    "EnrollmentType is missing".into(),
                ));
            }
        };
        let hw_dev_id = c.get("HWDevID").map(str::to_owned);
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

/// How long the nonce in the provisioning doc stays usable for a first digest session.
const INITIAL_NONCE_TTL: time::Duration = time::Duration::days(30);

pub(crate) fn random_nonce_b64() -> String {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    B64.encode(b)
}

fn hex_prefix(bytes: &[u8], n: usize) -> String {
    bytes.iter().take(n).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_choice_follows_config_then_falls_back() {
        use AuthPolicy::*;
        let fed = PreferredAuth::Federated;
        assert_eq!(choose_auth(fed, &[OnPremise, Federated]), Some(fed));
        assert_eq!(
            choose_auth(fed, &[OnPremise]),
            Some(PreferredAuth::OnPremise)
        );
        assert_eq!(
            choose_auth(PreferredAuth::OnPremise, &[Federated]),
            Some(fed)
        );
        assert_eq!(choose_auth(fed, &[Certificate]), None);
        assert_eq!(choose_auth(fed, &[]), Some(fed));
    }
}
