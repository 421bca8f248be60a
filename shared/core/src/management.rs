//! OMA-DM management sessions (MS-MDM, PROTOCOL §8): authenticate the device, answer its
//! commands with statuses, record what it reports, and send it queued commands, within its
//! message size. One store read and one store write per message.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};
use tracing::{info, warn};
use winmdm_wire::syncml::{
    self, Alert, Command, Container, ContainerKind, Item, ItemCommand, Location, Meta, Status,
    SyncHdr, SyncMl,
};

use crate::ca::{CertificateAuthority, ClientCertificate, check_client_certificate};
use crate::clock::Clock;
use crate::commands::{
    CommandResult, CommandSpec, CommandState, ItemSpec, QueuedCommand, SentIn, Verb, VerbSpec,
};
use crate::dm_auth::{self, NonceKind};
use crate::enrollment::random_nonce_b64;
use crate::identity;
use crate::model::{Device, DeviceStatus, DmDeviceInfo};
use crate::profile_engine::{MESSAGE_OVERHEAD, Outbox, ProfileConfig, ProfileRun};
use crate::profiles::Profile;
use crate::session::{
    DevicePatch, EnrollmentMark, IncomingChunk, ManagementSnapshot, ManagementUpdate,
    OutgoingChunk, SentCommand, SentKind, SessionState, SessionWrite,
};
use crate::store::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct ManagementConfig {
    /// Our URL as devices address it (the SyncHdr Source of our replies).
    pub server_url: String,
    /// Used when the device does not state a MaxMsgSize.
    pub default_max_msg_size: u64,
    pub session_ttl: Duration,
    /// How long a NextNonce stays usable.
    pub nonce_ttl: Duration,
    /// Largest object reassembled from chunks, and largest Results kept per command (their
    /// addresses and types counted with their data: `CommandResult::stored_len`).
    pub max_incoming_object: usize,
    /// Largest total of chunks buffered by one session, their addresses counted with their
    /// data (`IncomingChunk::stored_len`; one device: a device has one live session).
    pub max_session_buffer: usize,
    /// Objects being reassembled at once in a session.
    pub max_open_objects: usize,
    /// Times a command is sent without the device ever answering it with a Status before
    /// it fails with "no status from device".
    pub max_delivery_attempts: u32,
    /// Commands sent in one session; the rest wait for the next session.
    pub max_commands_per_session: usize,
    /// Profile retries and drift checks.
    pub profiles: ProfileConfig,
    /// How long a process keeps the profile catalog before reading it again (profile edits
    /// reach devices within this; `winmdm-local` also drops it on every admin change).
    pub catalog_ttl: std::time::Duration,
    /// How stale a device's `last_seen_at` may get before a message that changes nothing
    /// else writes it (the only write of an idle poll).
    pub last_seen_interval: Duration,
    /// The most records one message's write may hold (DynamoDB: 100 per transaction),
    /// from the store; a message sends no more than the write it causes, and the write
    /// of the answer that settles it, can hold. `None`: no limit.
    pub max_items_per_write: Option<usize>,
}

/// Records a management write holds besides commands and profile states: the device, the
/// session, and the index entries a message can change (HWDevID, blocked-user), with room
/// to spare.
const FIXED_WRITE_ITEMS: usize = 6;

/// Records a settled command takes in a write: the settled record, the open one's
/// delete and, when it failed, the failure's note for the overview.
const WRITE_ITEMS_PER_COMMAND: usize = 3;

/// Records a profile state change takes in a write: the state, and the profile's
/// counters it moves (one down, one up).
const WRITE_ITEMS_PER_PROFILE: usize = 3;

impl ManagementConfig {
    pub fn new(server_url: String) -> Self {
        Self {
            server_url,
            default_max_msg_size: 512 * 1024,
            session_ttl: Duration::minutes(30),
            nonce_ttl: Duration::days(7),
            // What a command can store of its results anyway.
            max_incoming_object: crate::commands::MAX_RESULTS_BYTES,
            max_session_buffer: 1024 * 1024,
            max_open_objects: 4,
            max_delivery_attempts: 3,
            max_commands_per_session: 500,
            profiles: ProfileConfig::default(),
            catalog_ttl: std::time::Duration::from_secs(30),
            last_seen_interval: Duration::hours(1),
            max_items_per_write: None,
        }
    }

    /// Lowers the buffering limits to what a store can hold in one record (DynamoDB items
    /// are at most 400 KB): a large object then gets a 413 instead of breaking every later
    /// session of the device with a failed write.
    pub fn fit_store(
        mut self,
        max_record_bytes: Option<usize>,
        max_items_per_write: Option<usize>,
    ) -> Self {
        self.max_items_per_write = max_items_per_write;
        if let Some(max) = max_record_bytes {
            // Room for the rest of the record (session or command) beside the data.
            let room = max.saturating_sub(64 * 1024);
            self.max_incoming_object = self.max_incoming_object.min(room);
            self.max_session_buffer = self.max_session_buffer.min(room);
        }
        self
    }
}

/// The reply to one management message.
#[derive(Debug, Clone)]
pub struct ManageReply {
    pub xml: String,
    /// The device the message claimed to come from, once authenticated.
    pub device_id: Option<String>,
    /// The SyncHdr status: 200, or 401/407 when the device was not trusted, 500 on a
    /// storage failure.
    pub header_status: u16,
    pub commands_sent: usize,
    /// Queued commands this message settled, by outcome.
    pub commands_succeeded: usize,
    pub commands_failed: usize,
    /// Whether this message opened a session.
    pub session_started: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// Not SyncML at all: there is no header to answer with a SyncML status.
    #[error("malformed SyncML: {0}")]
    Malformed(String),
}

/// How the device proved who it is.
enum Trust {
    Certificate,
    /// A `syncml:auth-md5` digest over this nonce.
    Digest {
        kind: NonceKind,
        nonce: String,
    },
}

enum AuthOutcome {
    Trusted(Trust),
    /// 407 (no credentials) or 401 (wrong ones), with the challenge nonce to use.
    Refused {
        code: u16,
        nonce: String,
    },
}

pub struct ManagementService {
    config: ManagementConfig,
    store: Arc<dyn Store>,
    ca: Arc<dyn CertificateAuthority>,
    clock: Arc<dyn Clock>,
    /// Keys the challenge nonces of unknown devices, so they look like known ones'.
    unknown_device_key: [u8; 32],
    /// The profile catalog, read about once per `catalog_ttl` (see `catalog_cache`).
    catalog: crate::catalog_cache::CatalogCache<Vec<Profile>>,
    /// Verifies the Entra user tokens devices send in sessions, when Entra is on.
    entra: Option<Arc<crate::entra::EntraVerifier>>,
}

const AUTH_MD5: &str = "syncml:auth-md5";
const LOGIN_STATUS: &str = "com.microsoft/MDM/LoginStatus";
/// 1224 alert item carrying the signed-in Entra user's token (Learn: "Azure AD
/// integration with MDM"; it may be absent right after a join).
const AAD_USER_TOKEN: &str = "com.microsoft/MDM/AADUserToken";
const REQUEST_PENDING: &str = "com.microsoft.mdm.requestpending";
const USER_UNENROLLMENT: &str = "com.microsoft:mdm.unenrollment.userrequest";
/// The store slot of a device's session: a device runs one session at a time, so its
/// session state is bounded by one session's limits, and a new session replaces the last.
pub const SESSION_SLOT: &str = "dm";
/// Why a command failed when the device never answered it.
pub const NO_STATUS_REASON: &str = "no status from device";

impl ManagementService {
    pub fn new(
        config: ManagementConfig,
        store: Arc<dyn Store>,
        ca: Arc<dyn CertificateAuthority>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let mut unknown_device_key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut unknown_device_key);
        let config = config.fit_store(store.max_record_bytes(), store.max_items_per_write());
        Self {
            config,
            store,
            ca,
            clock,
            unknown_device_key,
            catalog: crate::catalog_cache::CatalogCache::new(),
            entra: None,
        }
    }

    /// Reads the signed-in Entra user from `AADUserToken` alerts, verified like an
    /// enrollment token.
    pub fn enable_entra(&mut self, verifier: Arc<crate::entra::EntraVerifier>) {
        self.entra = Some(verifier);
    }

    /// The UPN an `AADUserToken` alert's token names, if it verifies; otherwise `None`
    /// (logged: a bad or expired user token never fails the session, it just does not
    /// count as a signed-in user). The device's own Entra tenant, if it has one, must be
    /// the token's.
    async fn entra_user(&self, device: &Device, data: &str) -> Option<String> {
        let verifier = self.entra.as_ref()?;
        let data = data.trim();
        // The JWT itself, or base64 of it.
        let token = if data.matches('.').count() == 2 {
            data.to_owned()
        } else {
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(data)
                .ok()?;
            String::from_utf8(raw).ok()?
        };
        match verifier.verify(token.trim(), self.clock.now()).await {
            Ok(id)
                if device
                    .entra
                    .as_ref()
                    .is_none_or(|b| b.tenant_id == id.tenant_id) =>
            {
                Some(id.upn)
            }
            Ok(id) => {
                warn!(device_id = %device.id, tenant = %id.tenant_id, "AADUserToken of another tenant than the device's");
                None
            }
            Err(e) => {
                warn!(device_id = %device.id, error = %e, "AADUserToken refused");
                None
            }
        }
    }

    /// Forgets the cached profile catalog (after an admin change in the same process).
    pub fn invalidate_profiles(&self) {
        self.catalog.invalidate();
    }

    /// Every profile, from the per-process cache or the store: read about once per
    /// `catalog_ttl` per process, whatever the number of devices (`catalog_cache`).
    async fn profile_catalog(&self) -> Result<Arc<Vec<Profile>>, StoreError> {
        self.catalog
            .get(self.config.catalog_ttl, || self.store.list_profiles())
            .await
    }

    pub fn config(&self) -> &ManagementConfig {
        &self.config
    }

    /// Handles one message. `client_cert` is the DER of the TLS client certificate, when
    /// the request came over mutual TLS.
    pub async fn handle(
        &self,
        body: &[u8],
        client_cert: Option<&[u8]>,
    ) -> Result<ManageReply, ManageError> {
        self.handle_with_bearer(body, client_cert, None).await
    }

    /// [`handle`](Self::handle) with the request's `Authorization: Bearer` token, which
    /// Windows sends on an Entra-joined device's sessions: verified like an `AADUserToken`
    /// alert (see [`ManagementService::enable_entra`]); it never authenticates the device
    /// (the certificate or digest does), it only says which user is signed in.
    pub async fn handle_with_bearer(
        &self,
        body: &[u8],
        client_cert: Option<&[u8]>,
        bearer: Option<&str>,
    ) -> Result<ManageReply, ManageError> {
        let parsed = SyncMl::parse(body).map_err(|e| ManageError::Malformed(e.to_string()))?;
        let msg = parsed.message;
        let now = self.clock.now();
        let device_id = msg.hdr.source.loc_uri.clone();
        let new_session = starts_new_session(&msg);

        // A Source no enrollment could have issued is refused as an unknown device is,
        // before it becomes a storage key (DynamoDB would fail a long one as a store error)
        // or a log field.
        let well_formed = identity::device_id_is_well_formed(&device_id);
        let mut snapshot = if well_formed {
            match self.store.load_management(&device_id, SESSION_SLOT).await {
                Ok(s) => s,
                Err(e) => return Ok(self.storage_failure(&msg.hdr, &e)),
            }
        } else {
            None
        };
        // Whether a session record is stored at all (this session's or a stale one): a
        // reply that ends the session must delete it, which is a write.
        let stored_session = snapshot.as_ref().is_some_and(|s| s.session.is_some());
        if let Some(s) = snapshot.as_mut() {
            // The stored session is this one only if the SessionID matches and this message
            // does not start a new session (Windows' SessionID counter wraps, and some
            // clients always use 1): a new session never inherits an old one's nonces. And
            // only if it began under the device's current enrollment: whoever enrolls a
            // freed DeviceID does not take over its last owner's session.
            let enrollment = EnrollmentMark::of(&s.device);
            let same = s.session.as_ref().is_some_and(|st| {
                st.session_id == msg.hdr.session_id
                    && !new_session
                    && st.enrollment.as_ref() == Some(&enrollment)
            });
            if !same {
                s.session = None;
            }
        }
        // The CA's certificate is needed only to check a client certificate.
        let issuer = match client_cert {
            Some(_) => match self.ca.chain().await {
                Ok(chain) => Some(chain),
                Err(e) => {
                    warn!(error = %e, "CA certificate unavailable");
                    return Ok(self.header_only(&msg.hdr, 500));
                }
            },
            None => None,
        };
        let cert = client_cert.zip(issuer.as_ref().map(|c| c.issuer_der()));
        match self.authenticate(snapshot.as_ref(), &msg.hdr, cert, now) {
            AuthOutcome::Trusted(trust) => {
                let snapshot = snapshot.expect("trusted implies a known device");
                Ok(self
                    .process(
                        msg,
                        parsed.rejected,
                        snapshot,
                        stored_session,
                        trust,
                        now,
                        bearer,
                    )
                    .await)
            }
            AuthOutcome::Refused { code, nonce } => {
                if code == 401 && well_formed {
                    warn!(claimed_device = %device_id, "management request denied");
                } else if code == 401 {
                    warn!(
                        claimed_device_len = device_id.len(),
                        "management request denied: Source is not a DeviceID"
                    );
                }
                Ok(self.refuse(&msg, code, nonce))
            }
        }
    }

    fn authenticate(
        &self,
        snapshot: Option<&ManagementSnapshot>,
        hdr: &SyncHdr,
        cert: Option<(&[u8], &[u8])>,
        now: OffsetDateTime,
    ) -> AuthOutcome {
        let device = snapshot
            .map(|s| &s.device)
            .filter(|d| d.status == DeviceStatus::Enrolled);
        let session = snapshot.and_then(|s| s.session.as_ref());
        let digest_session = session.and_then(|s| s.digest.as_ref());
        // The nonce a refusal offers. In a live digest session, its offered nonce (usable
        // from the next message on); otherwise this period's challenge. Computing it costs
        // the same for known and unknown devices, and writes nothing.
        let refuse = |code: u16| AuthOutcome::Refused {
            code,
            nonce: match (device, digest_session) {
                (Some(_), Some(ds)) => ds.offered_nonce.clone(),
                (Some(d), None) => dm_auth::device_challenge(d, now),
                (None, _) => dm_auth::challenge_nonce(
                    &self.unknown_device_key,
                    &hdr.source.loc_uri,
                    dm_auth::challenge_period(now),
                ),
            },
        };
        if let Some((der, issuer)) = cert {
            if let Some(d) = device
                && certificate_is_current(der, issuer, d, &hdr.source.loc_uri, now)
            {
                return AuthOutcome::Trusted(Trust::Certificate);
            }
            if hdr.cred.is_none() {
                return refuse(401);
            }
        }
        let Some(cred) = &hdr.cred else {
            return refuse(407);
        };
        let Some(device) = device else {
            return refuse(401);
        };
        if cred.meta.type_.as_deref().map(str::trim) != Some(AUTH_MD5) {
            return refuse(401);
        }
        // A message of a digest session must come after the last one: a recorded message
        // cannot be played into the session again.
        if let (Some(s), Some(_)) = (session, digest_session)
            && parse_msg_id(&hdr.msg_id).is_none_or(|m| m <= s.client_msg_id)
        {
            return refuse(401);
        }
        let accepted = dm_auth::accepted_nonces(device, digest_session, now);
        match dm_auth::check_digest(
            &device.dm_credentials.client_digest_key,
            &cred.data,
            &accepted,
        ) {
            Some((kind, nonce)) => AuthOutcome::Trusted(Trust::Digest { kind, nonce }),
            None => refuse(401),
        }
    }
}

/// A message starts a new session when it is the first message (MsgID 1) and opens the
/// session with Alert 1201 (client-initiated) or 1200 (server-initiated).
fn starts_new_session(msg: &SyncMl) -> bool {
    parse_msg_id(&msg.hdr.msg_id) == Some(1) && opens_session(msg)
}

fn opens_session(msg: &SyncMl) -> bool {
    msg.commands.iter().any(|c| {
        matches!(c, Command::Alert(a) if a.data == syncml::alert::CLIENT_INITIATED || a.data == syncml::alert::SERVER_INITIATED)
    })
}

fn parse_msg_id(id: &str) -> Option<u32> {
    id.trim().parse::<u32>().ok().filter(|m| *m > 0)
}

/// The client certificate chains to our CA and is within its validity, and the identity
/// rules let it manage the device the SyncHdr claims.
fn certificate_is_current(
    der: &[u8],
    issuer_der: &[u8],
    device: &Device,
    source: &str,
    now: OffsetDateTime,
) -> bool {
    match check_client_certificate(der, issuer_der, now) {
        ClientCertificate::Valid { cn, thumbprint } => {
            identity::certificate_may_manage(device, &cn, &thumbprint, source, now)
        }
        ClientCertificate::Expired { .. } | ClientCertificate::Untrusted => false,
    }
}

impl ManagementService {
    /// 401/407 with a challenge, and a 407 for each command that was not executed (every
    /// one but Statuses, which are never answered), so the client knows to send them again
    /// with credentials (SyncML RepPro: commands of an unauthenticated message are not
    /// processed). Writes nothing.
    fn refuse(&self, msg: &SyncMl, code: u16, nonce: String) -> ManageReply {
        let hdr = &msg.hdr;
        let mut next = 1u32;
        let mut id = || {
            let i = next;
            next += 1;
            i.to_string()
        };
        let mut commands = vec![header_status(hdr, &id(), code, Some(challenge_meta(nonce)))];
        for c in &msg.commands {
            if !matches!(c, Command::Status(_)) {
                commands.push(status(&id(), &hdr.msg_id, c.cmd_id(), c.name(), 407));
            }
        }
        let reply = SyncMl {
            hdr: self.reply_header(hdr, reply_msg_id(hdr, None)),
            commands,
            final_: true,
        };
        ManageReply {
            xml: reply.to_xml(),
            device_id: None,
            header_status: code,
            commands_sent: 0,
            commands_succeeded: 0,
            commands_failed: 0,
            session_started: false,
        }
    }

    fn storage_failure(&self, hdr: &SyncHdr, e: &StoreError) -> ManageReply {
        warn!(error = %e, "management storage failure");
        self.header_only(hdr, 500)
    }

    fn reply_header(&self, hdr: &SyncHdr, msg_id: u32) -> SyncHdr {
        SyncHdr {
            ver_dtd: "1.2".into(),
            ver_proto: "DM/1.2".into(),
            session_id: hdr.session_id.clone(),
            msg_id: msg_id.to_string(),
            target: Location::uri(hdr.source.loc_uri.clone()),
            source: Location::uri(hdr.target.loc_uri.clone()),
            cred: None,
            meta: Some(Meta {
                max_msg_size: Some(self.config.default_max_msg_size),
                ..Meta::default()
            }),
        }
    }

    fn header_only(&self, hdr: &SyncHdr, code: u16) -> ManageReply {
        let reply = SyncMl {
            hdr: self.reply_header(hdr, reply_msg_id(hdr, None)),
            commands: vec![header_status(hdr, "1", code, None)],
            final_: true,
        };
        ManageReply {
            xml: reply.to_xml(),
            device_id: None,
            header_status: code,
            commands_sent: 0,
            commands_succeeded: 0,
            commands_failed: 0,
            session_started: false,
        }
    }

    // One message's inputs, each from a different step of `handle_with_bearer` (parse,
    // load, authenticate, clock, header); bundling them would only rename the list.
    #[allow(clippy::too_many_arguments)]
    async fn process(
        &self,
        msg: SyncMl,
        rejected: Vec<syncml::RejectedCommand>,
        snapshot: ManagementSnapshot,
        stored_session: bool,
        trust: Trust,
        now: OffsetDateTime,
        bearer: Option<&str>,
    ) -> ManageReply {
        let ManagementSnapshot {
            device,
            session,
            open_commands,
            profiles: profile_states,
        } = snapshot;
        let bearer_user = match bearer {
            Some(token) => self.entra_user(&device, token).await,
            None => None,
        };
        // Without the catalog, profile work waits for the next message: an empty catalog
        // would look like every profile was unassigned.
        let catalog = if device.status == DeviceStatus::Enrolled {
            match self.profile_catalog().await {
                Ok(c) => Some(c),
                Err(e) => {
                    warn!(error = %e, "profile catalog unavailable; profiles wait");
                    None
                }
            }
        } else {
            None
        };
        let mut profiles = catalog.as_deref().map(|c| {
            ProfileRun::new(
                &self.config.profiles,
                c,
                &device.id,
                &device.groups,
                profile_states,
                now,
            )
        });
        let hdr = &msg.hdr;
        let starts_session = opens_session(&msg);
        // `handle` dropped the stored state unless it is this session's.
        let mut session = session.unwrap_or_else(|| {
            let mut s =
                SessionState::new(&device.id, &hdr.session_id, now + self.config.session_ttl);
            s.enrollment = Some(EnrollmentMark::of(&device));
            s
        });
        session.expires_at = now + self.config.session_ttl;
        if let Some(m) = hdr.meta.as_ref().and_then(|m| m.max_msg_size) {
            session.max_msg_size = Some(m);
        }
        if bearer_user.is_some() {
            session.entra_user = bearer_user;
        }
        let msg_id = reply_msg_id(hdr, Some(session.server_msg_id));
        session.server_msg_id = msg_id;
        if let Some(m) = parse_msg_id(&hdr.msg_id) {
            session.client_msg_id = m;
        }

        // `last_seen_at` is written when it is older than the configured interval, so a
        // device polling with nothing to do costs no write (the listing's "last seen" is
        // as fresh as that interval).
        let mut patch = DevicePatch {
            last_seen_at: device
                .last_seen_at
                .is_none_or(|t| now - t >= self.config.last_seen_interval)
                .then_some(now),
            ..DevicePatch::default()
        };
        let mut chal = None;
        if let Trust::Digest { kind, nonce } = &trust {
            let mut digest = session.digest.take();
            patch.nonces = dm_auth::after_digest_auth(
                *kind,
                nonce,
                &mut digest,
                random_nonce_b64,
                now + self.config.nonce_ttl,
            );
            // Every reply of a digest session offers the session's NextNonce.
            chal = digest
                .as_ref()
                .map(|d| challenge_meta(d.offered_nonce.clone()));
            session.digest = digest;
        }

        let mut run = Run {
            out: Vec::new(),
            next_cmd_id: 1,
            commands: open_commands,
            changed: Vec::new(),
            info: device.dm_info.clone(),
            info_changed: false,
            succeeded: 0,
            failed: 0,
            succeeded_actions: Vec::new(),
        };
        let hdr_cmd_id = run.cmd_id();
        run.out.push(header_status(hdr, &hdr_cmd_id, 200, chal));

        for r in &rejected {
            let id = run.cmd_id();
            run.out
                .push(status(&id, &hdr.msg_id, &r.cmd_id, &r.name, 400));
        }

        let mut abort = false;
        let mut request_pending = false;
        let mut awaiting_chunks = false;
        for cmd in &msg.commands {
            match cmd {
                Command::Alert(a) => {
                    let id = run.cmd_id();
                    run.out
                        .push(status(&id, &hdr.msg_id, &a.cmd_id, "Alert", 200));
                    match a.data.as_str() {
                        syncml::alert::SESSION_ABORT => abort = true,
                        syncml::alert::CLIENT_EVENT => {
                            for item in &a.items {
                                let ty = item
                                    .meta
                                    .as_ref()
                                    .and_then(|m| m.type_.as_deref())
                                    .unwrap_or("");
                                if ty == LOGIN_STATUS {
                                    session.login_status =
                                        item.data.as_deref().map(|d| d.trim().to_ascii_lowercase());
                                } else if ty == AAD_USER_TOKEN {
                                    session.entra_user = match item.data.as_deref() {
                                        Some(d) => self.entra_user(&device, d).await,
                                        None => None,
                                    };
                                    if let Some(upn) = &session.entra_user {
                                        info!(device_id = %device.id, upn, "Entra user signed in");
                                    }
                                } else if ty.ends_with(REQUEST_PENDING) {
                                    request_pending = true;
                                }
                            }
                        }
                        syncml::alert::GENERIC => {
                            let unenroll = a.items.iter().any(|i| {
                                i.meta
                                    .as_ref()
                                    .and_then(|m| m.type_.as_deref())
                                    .is_some_and(|t| t.trim() == USER_UNENROLLMENT)
                            });
                            if unenroll {
                                info!(device_id = %device.id, "user unenrolled the device");
                                patch.status = Some(DeviceStatus::Unenrolled);
                            }
                        }
                        _ => {}
                    }
                }
                Command::Item(ic)
                    if matches!(ic.verb, syncml::ItemVerb::Replace | syncml::ItemVerb::Add) =>
                {
                    let mut code = 200;
                    for item in &ic.items {
                        let uri = item.uri();
                        if item.more_data
                            || session
                                .incoming
                                .iter()
                                .any(|c| c.cmd == ic.verb.as_str() && c.uri == uri)
                        {
                            match self.reassemble(&mut session, ic.verb.as_str(), None, None, item)
                            {
                                Chunked::Pending => {
                                    code = 213;
                                    awaiting_chunks = true;
                                    continue;
                                }
                                Chunked::TooLarge => {
                                    code = 413;
                                    continue;
                                }
                                Chunked::Complete(_) => {}
                            }
                        }
                        run.record_device_info(uri, item.data.as_deref(), &mut patch);
                    }
                    let id = run.cmd_id();
                    run.out
                        .push(status(&id, &hdr.msg_id, &ic.cmd_id, ic.verb.as_str(), code));
                }
                Command::Item(ic) => {
                    // The server does not serve Get/Exec/Delete from the client.
                    let id = run.cmd_id();
                    run.out
                        .push(status(&id, &hdr.msg_id, &ic.cmd_id, ic.verb.as_str(), 406));
                }
                Command::Container(c) => {
                    let id = run.cmd_id();
                    run.out
                        .push(status(&id, &hdr.msg_id, &c.cmd_id, c.kind.as_str(), 406));
                }
                Command::Status(s) => match sent_entry(&session, &s.cmd_ref, Some(&s.msg_ref)) {
                    Some(e) if e.kind.is_profile() => {
                        if let Some(p) = profiles.as_mut() {
                            p.on_status(&e, s.data.trim().parse().unwrap_or(500));
                        }
                    }
                    _ => run.settle_status(&mut session, s, now),
                },
                Command::Results(r)
                    if sent_entry(&session, &r.cmd_ref, r.msg_ref.as_deref())
                        .is_some_and(|e| e.kind.is_profile()) =>
                {
                    let e = sent_entry(&session, &r.cmd_ref, r.msg_ref.as_deref())
                        .expect("matched above");
                    if let Some(p) = profiles.as_mut() {
                        let data = r.items.first().and_then(|i| i.data.clone());
                        p.on_results(&e, data);
                    }
                }
                Command::Results(r) => {
                    if self.take_results(&mut run, &mut session, &hdr.msg_id, r) {
                        awaiting_chunks = true;
                    }
                }
            }
        }

        if let Some(p) = profiles.as_mut() {
            p.settle();
        }
        if run.info_changed {
            patch.dm_info = Some(run.info.clone());
        }
        // The HWDevID is recorded only for a device that has none (the store ignores it
        // otherwise), so a report of it is no reason to write.
        if device.hw_dev_id.is_some() {
            patch.hw_dev_id = None;
        }
        // The device acknowledged the DMClient Unenroll: it is no longer managed.
        for action in &run.succeeded_actions {
            match action.as_str() {
                "remove" => patch.status = Some(DeviceStatus::Removed),
                "unenroll" if patch.status.is_none() => {
                    patch.status = Some(DeviceStatus::Unenrolled)
                }
                _ => {}
            }
        }

        let enrolled = device.status == DeviceStatus::Enrolled && patch.status.is_none();
        let mut sent = 0;
        let mut more_remaining = false;
        // The client's package is not complete (chunks pending, or a message without
        // Final): ask for its next message before sending a package of ours.
        let awaiting_chunks = awaiting_chunks || (!msg.final_ && !request_pending && !abort);
        if awaiting_chunks {
            let id = run.cmd_id();
            run.out.push(Command::Alert(Alert {
                cmd_id: id,
                data: syncml::alert::NEXT_MESSAGE.into(),
                items: Vec::new(),
            }));
        } else if enrolled && !abort && !request_pending {
            // What the write may still hold: each command changed or sent counts as
            // `WRITE_ITEMS_PER_COMMAND` records, each profile state as
            // `WRITE_ITEMS_PER_PROFILE`.
            let write_room = self.config.max_items_per_write.map(|max| {
                max.saturating_sub(
                    FIXED_WRITE_ITEMS
                        + WRITE_ITEMS_PER_PROFILE
                            * profiles.as_ref().map_or(0, ProfileRun::changed_count),
                )
            });
            (sent, more_remaining) =
                self.send_commands(&mut run, &mut session, msg_id, now, write_room);
            if !more_remaining
                && session.outgoing.is_none()
                && let Some(p) = profiles.as_mut()
            {
                let max = session
                    .max_msg_size
                    .unwrap_or(self.config.default_max_msg_size) as usize;
                let session_key = session.key();
                let user_logged_in = session.user_signed_in();
                let budget = max.saturating_sub(MESSAGE_OVERHEAD + syncml::commands_len(&run.out));
                let (n, more) = p.send(&mut Outbox {
                    out: &mut run.out,
                    next_cmd_id: &mut run.next_cmd_id,
                    sent: &mut session.sent,
                    msg_id,
                    session_key: &session_key,
                    budget,
                    capacity: max.saturating_sub(MESSAGE_OVERHEAD),
                    user_logged_in,
                    max_sent: self.config.max_commands_per_session,
                    max_state_writes: self.config.max_items_per_write.map_or(usize::MAX, |max| {
                        max.saturating_sub(
                            FIXED_WRITE_ITEMS + WRITE_ITEMS_PER_COMMAND * run.changed.len(),
                        ) / WRITE_ITEMS_PER_PROFILE
                    }),
                });
                sent += n;
                more_remaining = more;
            }
        }
        let final_ = !awaiting_chunks && !more_remaining && session.outgoing.is_none();
        // The device's profile compliance, recorded when it changes (the overview counts
        // devices by it, like by status).
        if let Some(p) = profiles.as_ref() {
            let compliance = p.compliance();
            if compliance != device.compliance {
                patch.compliance = Some(compliance);
            }
        }

        let changed = run.changed_commands();
        let reply = SyncMl {
            hdr: self.reply_header(hdr, msg_id),
            commands: run.out,
            final_,
        };
        let xml = reply.to_xml();
        let update = ManagementUpdate {
            device_id: device.id.clone(),
            device: patch,
            // A session that was aborted or that this reply ends is forgotten: nothing of
            // it (nonces, buffers) outlives it.
            session: if abort || (final_ && msg.final_ && sent == 0 && !request_pending) {
                if stored_session {
                    SessionWrite::Delete {
                        slot: SESSION_SLOT.into(),
                    }
                } else {
                    // Nothing stored to forget: a delete would be a write for nothing.
                    SessionWrite::Keep
                }
            } else {
                session.slot = SESSION_SLOT.into();
                SessionWrite::Put(Box::new(session))
            },
            commands: changed,
            profiles: profiles.map(ProfileRun::into_changed).unwrap_or_default(),
        };
        // A message that changed nothing (mTLS, nothing queued or settled, DevInfo as
        // stored, last_seen_at recent, no session to keep or delete) writes nothing.
        let writes_nothing = update.device.is_empty()
            && update.commands.is_empty()
            && update.profiles.is_empty()
            && update.session == SessionWrite::Keep;
        if !writes_nothing && let Err(e) = self.store.save_management(&update).await {
            // Nothing was written: the device gets a 500 and retries; the commands it was
            // about to receive stay queued.
            return self.storage_failure(hdr, &e);
        }
        info!(
            device_id = %device.id,
            session_id = %hdr.session_id,
            msg_id,
            commands_sent = sent,
            r#final = final_,
            "management message"
        );
        ManageReply {
            xml,
            device_id: Some(device.id),
            header_status: 200,
            commands_sent: sent,
            commands_succeeded: run.succeeded,
            commands_failed: run.failed,
            session_started: starts_session,
        }
    }

    /// Stores the items of a Results against the command they answer. Returns whether a
    /// chunked item is still being reassembled.
    fn take_results(
        &self,
        run: &mut Run,
        session: &mut SessionState,
        client_msg_id: &str,
        r: &syncml::Results,
    ) -> bool {
        // Without MsgRef, the Results answer a command of any message of the session.
        let msg_ref = r.msg_ref.as_deref().map(|m| m.trim().parse::<u32>().ok());
        let command_id = session
            .sent
            .iter()
            .rev()
            .find(|s| s.cmd_id == r.cmd_ref && msg_ref.is_none_or(|m| m == Some(s.msg_id)))
            .map(|s| s.command_id.clone());
        let mut pending = false;
        let mut code = None;
        let mut results = Vec::new();
        let mut results_bytes = command_id
            .as_deref()
            .and_then(|id| run.commands.iter().find(|c| c.id == id))
            .map_or(0, QueuedCommand::results_len);
        for item in &r.items {
            let uri = item.uri().to_owned();
            let meta = item.meta.clone().or_else(|| r.meta.clone());
            let data = if item.more_data
                || session.incoming.iter().any(|c| {
                    c.cmd == "Results" && c.cmd_ref.as_deref() == Some(&r.cmd_ref) && c.uri == uri
                }) {
                match self.reassemble(
                    session,
                    "Results",
                    Some(&r.cmd_ref),
                    r.msg_ref.as_deref(),
                    item,
                ) {
                    Chunked::Pending => {
                        pending = true;
                        code = Some(213);
                        continue;
                    }
                    Chunked::TooLarge => {
                        code = Some(413);
                        if !item.more_data {
                            results.push(refused_result(uri, self.config.max_incoming_object));
                        }
                        continue;
                    }
                    Chunked::Complete(c) => Some(c.data),
                }
            } else {
                item.data.clone()
            };
            let result = CommandResult {
                target: uri,
                format: meta.as_ref().and_then(|m| m.format.clone()),
                type_: meta.as_ref().and_then(|m| m.type_.clone()),
                data,
            };
            // A command's results are stored with it: keep them within a record, the
            // addresses and types the device sends counted with the values.
            if results_bytes + result.stored_len() > self.config.max_incoming_object {
                code = Some(413);
                results.push(refused_result(
                    result.target,
                    self.config.max_incoming_object,
                ));
                continue;
            }
            results_bytes += result.stored_len();
            if command_id.is_some() {
                run.record_reported_detail(&result.target, result.data.as_deref());
            }
            results.push(result);
        }
        if let Some(code) = code {
            let id = run.cmd_id();
            run.out
                .push(status(&id, client_msg_id, &r.cmd_id, "Results", code));
        }
        if let Some(cid) = command_id
            && let Some(cmd) = run.command_mut(&cid)
            && !results.is_empty()
        {
            cmd.add_results(results);
        }
        pending
    }

    fn reassemble(
        &self,
        session: &mut SessionState,
        cmd: &str,
        cmd_ref: Option<&str>,
        msg_ref: Option<&str>,
        item: &Item,
    ) -> Chunked {
        let uri = item.uri().to_owned();
        let pos = session
            .incoming
            .iter()
            .position(|c| c.cmd == cmd && c.uri == uri && c.cmd_ref.as_deref() == cmd_ref);
        let max_open = self.config.max_open_objects;
        let idx = match pos {
            Some(i) => i,
            None => {
                let open = session.incoming.iter().filter(|c| !c.refused).count();
                let chunk = IncomingChunk {
                    cmd: cmd.into(),
                    cmd_ref: cmd_ref.map(Into::into),
                    msg_ref: msg_ref.map(Into::into),
                    uri,
                    format: item.meta.as_ref().and_then(|m| m.format.clone()),
                    type_: item.meta.as_ref().and_then(|m| m.type_.clone()),
                    data: String::new(),
                    refused: open >= max_open,
                };
                let buffered: usize = session.incoming.iter().map(IncomingChunk::stored_len).sum();
                if session.incoming.len() >= max_open * 4
                    || buffered + chunk.stored_len() > self.config.max_session_buffer
                {
                    // Even refusals are no longer tracked (too many, or their addresses
                    // alone would overfill the session record): refuse without remembering.
                    return Chunked::TooLarge;
                }
                session.incoming.push(chunk);
                session.incoming.len() - 1
            }
        };
        let piece = item.data.as_deref().unwrap_or("");
        if !session.incoming[idx].refused {
            let buffered: usize = session.incoming.iter().map(IncomingChunk::stored_len).sum();
            let chunk = &mut session.incoming[idx];
            if chunk.data.len() + piece.len() > self.config.max_incoming_object
                || buffered + piece.len() > self.config.max_session_buffer
            {
                // Refused: its later chunks get 413 too, until its last one.
                chunk.refused = true;
                chunk.data = String::new();
            } else {
                chunk.data.push_str(piece);
            }
        }
        match (item.more_data, session.incoming[idx].refused) {
            (true, false) => Chunked::Pending,
            (true, true) => Chunked::TooLarge,
            (false, false) => Chunked::Complete(session.incoming.remove(idx)),
            (false, true) => {
                session.incoming.remove(idx);
                Chunked::TooLarge
            }
        }
    }

    /// Adds queued commands to the reply in FIFO order while they fit the device's
    /// MaxMsgSize; a single command too large for any message goes out in chunks.
    /// Returns how many were sent and whether more remain for this package.
    fn send_commands(
        &self,
        run: &mut Run,
        session: &mut SessionState,
        msg_id: u32,
        now: OffsetDateTime,
        write_room: Option<usize>,
    ) -> (usize, bool) {
        let max = session
            .max_msg_size
            .unwrap_or(self.config.default_max_msg_size) as usize;
        // Room for the header, Final and what is already in the message.
        let used = 600 + syncml::commands_len(&run.out);
        let mut budget = max.saturating_sub(used);
        let session_key = session.key();

        if let Some(out) = session.outgoing.clone() {
            if out.in_flight > 0 {
                // Waiting for the device's 213 on the previous chunk.
                return (0, true);
            }
            return match run.commands.iter().position(|c| c.id == out.command_id) {
                Some(i) => {
                    self.send_chunk(run, session, i, out.offset, budget, msg_id);
                    (1, session.outgoing.is_some())
                }
                None => {
                    session.outgoing = None;
                    (0, false)
                }
            };
        }

        let mut sent = 0;
        for i in 0..run.commands.len() {
            let cmd = &run.commands[i];
            let awaiting_here = cmd.state == CommandState::Sent
                && cmd
                    .sent_in
                    .as_ref()
                    .is_some_and(|s| s.session_id == session_key);
            if !cmd.state.is_open() || awaiting_here {
                continue;
            }
            if cmd.attempts >= self.config.max_delivery_attempts && session.outgoing.is_none() {
                // Sent that often and never answered (a Status lost, or a client that never
                // answers this kind of command): stop sending it, so its inner commands do
                // not run again in every session.
                let c = &mut run.commands[i];
                c.state = CommandState::Failed;
                c.reason = Some(NO_STATUS_REASON.into());
                c.updated_at = now;
                let id = c.id.clone();
                run.touch(&id);
                run.failed += 1;
                continue;
            }
            if session.sent.len() >= self.config.max_commands_per_session {
                return (sent, false);
            }
            if write_room
                .is_some_and(|room| WRITE_ITEMS_PER_COMMAND * (run.changed.len() + 1) > room)
            {
                // The rest go in the next message, so that this message's write and the
                // answer's settling write each fit the store's limit.
                return (sent, true);
            }
            let cmd = &run.commands[i];
            if cmd.spec.targets_user() && !session.user_signed_in() {
                continue;
            }
            let first_id = run.next_cmd_id;
            let (syncml_cmd, sent_entries) = build_command(cmd, &mut run.next_cmd_id, msg_id);
            let size = syncml::command_xml(&syncml_cmd).len();
            if size <= budget {
                budget -= size;
                run.out.push(syncml_cmd);
                session.sent.extend(sent_entries);
                run.mark_sent(i, &session_key, msg_id, true);
                sent += 1;
                continue;
            }
            run.next_cmd_id = first_id;
            let chunkable = matches!(&cmd.spec, CommandSpec::Single(v) if v.items.len() == 1 && v.items[0].data.is_some());
            if sent == 0 && chunkable {
                self.send_chunk(run, session, i, 0, budget, msg_id);
                return (1, session.outgoing.is_some());
            }
            return (sent, true);
        }
        (sent, false)
    }

    fn send_chunk(
        &self,
        run: &mut Run,
        session: &mut SessionState,
        index: usize,
        offset: usize,
        budget: usize,
        msg_id: u32,
    ) {
        let session_key = session.key();
        let cmd = run.commands[index].clone();
        let CommandSpec::Single(v) = &cmd.spec else {
            return;
        };
        let item = &v.items[0];
        let data = item.data.as_deref().unwrap_or("");
        let room = budget.saturating_sub(400 + item.target.len()).max(1024);
        let mut end = (offset + room).min(data.len());
        while !data.is_char_boundary(end) {
            end -= 1;
        }
        let last = end >= data.len();
        let cmd_id = run.cmd_id();
        let meta = Meta {
            format: item.format.clone(),
            type_: item.type_.clone(),
            size: (offset == 0).then_some(data.len() as u64),
            ..Meta::default()
        };
        run.out.push(Command::Item(ItemCommand {
            verb: v.verb.item_verb(),
            cmd_id: cmd_id.clone(),
            meta: None,
            items: vec![Item {
                target: Some(item.target.clone()),
                meta: Some(meta),
                data: Some(data[offset..end].to_owned()),
                more_data: !last,
                ..Item::default()
            }],
        }));
        session.sent.push(SentCommand {
            msg_id,
            cmd_id,
            command_id: cmd.id.clone(),
            kind: SentKind::Chunk { last },
        });
        session.outgoing = if last {
            None
        } else {
            Some(OutgoingChunk {
                command_id: cmd.id.clone(),
                offset,
                in_flight: end - offset,
            })
        };
        run.mark_sent(index, &session_key, msg_id, offset == 0);
    }
}

enum Chunked {
    Pending,
    TooLarge,
    Complete(IncomingChunk),
}

/// The working state of one message.
struct Run {
    out: Vec<Command>,
    next_cmd_id: u32,
    commands: Vec<QueuedCommand>,
    changed: Vec<String>,
    info: DmDeviceInfo,
    info_changed: bool,
    succeeded: usize,
    failed: usize,
    /// Typed actions of the commands this message settled as succeeded.
    succeeded_actions: Vec<String>,
}

impl Run {
    fn cmd_id(&mut self) -> String {
        let id = self.next_cmd_id;
        self.next_cmd_id += 1;
        id.to_string()
    }

    fn touch(&mut self, id: &str) {
        if !self.changed.iter().any(|c| c == id) {
            self.changed.push(id.to_owned());
        }
    }

    fn command_mut(&mut self, id: &str) -> Option<&mut QueuedCommand> {
        self.touch(id);
        self.commands.iter_mut().find(|c| c.id == id)
    }

    /// Marks a command sent; `new_attempt` is false for the later chunks of a large object.
    fn mark_sent(&mut self, index: usize, session_key: &str, msg_id: u32, new_attempt: bool) {
        let c = &mut self.commands[index];
        c.state = CommandState::Sent;
        c.sent_in = Some(SentIn {
            session_id: session_key.to_owned(),
            msg_id,
        });
        if new_attempt {
            c.attempts += 1;
        }
        let id = c.id.clone();
        self.touch(&id);
    }

    fn changed_commands(&self) -> Vec<QueuedCommand> {
        self.commands
            .iter()
            .filter(|c| self.changed.contains(&c.id))
            .cloned()
            .collect()
    }

    fn record_device_info(&mut self, uri: &str, value: Option<&str>, patch: &mut DevicePatch) {
        let v = value.map(|v| v.trim().chars().take(256).collect::<String>());
        let slot = match uri.trim_start_matches("./") {
            "DevInfo/DevId" => &mut self.info.dev_id,
            "DevInfo/Man" => &mut self.info.manufacturer,
            "DevInfo/Mod" => &mut self.info.model,
            "DevInfo/DmV" => &mut self.info.dm_version,
            "DevInfo/Lang" => &mut self.info.language,
            "Vendor/MSFT/DMClient/HWDevID" | "Device/Vendor/MSFT/DMClient/HWDevID" => {
                patch.hw_dev_id = v.clone();
                return;
            }
            _ => return,
        };
        if *slot != v {
            *slot = v;
            self.info_changed = true;
        }
    }

    /// Results of ours (the `inventory` action, a raw Get) that carry what the device
    /// listing shows and searches: its serial number, current name and OS build.
    fn record_reported_detail(&mut self, uri: &str, value: Option<&str>) {
        let slot = match uri.trim_start_matches("./") {
            "DevDetail/Ext/Microsoft/SMBIOSSerialNumber" => &mut self.info.serial,
            "DevDetail/Ext/Microsoft/DeviceName" => &mut self.info.device_name,
            "DevDetail/SwV" => &mut self.info.os_version,
            _ => return,
        };
        // Device-supplied: bounded like DevInfo, and an empty value records nothing.
        let v = value
            .map(|v| v.trim().chars().take(256).collect::<String>())
            .filter(|v| !v.is_empty());
        if v.is_some() && *slot != v {
            *slot = v;
            self.info_changed = true;
        }
    }

    /// A device Status for one of our commands.
    fn settle_status(&mut self, session: &mut SessionState, s: &Status, now: OffsetDateTime) {
        if s.cmd_ref == "0" {
            return;
        }
        // The entry stays for the session's life: Results may follow the Status.
        let msg_ref = s.msg_ref.trim().parse::<u32>().ok();
        let Some(entry) = session
            .sent
            .iter()
            .find(|e| e.cmd_id == s.cmd_ref && Some(e.msg_id) == msg_ref)
            .cloned()
        else {
            return;
        };
        let code: u16 = s.data.trim().parse().unwrap_or(500);
        // Only the answer to where the command was last sent, while it waits for one: a
        // status repeated for a settled command (or for an earlier chunk or attempt) would
        // flip its outcome, resend an Add answered 418 or advance a large object twice.
        let awaited = SentIn {
            session_id: session.key(),
            msg_id: entry.msg_id,
        };
        let waiting = self.commands.iter().any(|c| {
            c.id == entry.command_id
                && c.state == CommandState::Sent
                && c.sent_in.as_ref() == Some(&awaited)
        });
        if !waiting {
            return;
        }
        let Some(cmd) = self.command_mut(&entry.command_id) else {
            return;
        };
        cmd.updated_at = now;
        let before = cmd.state;
        Self::apply_status(cmd, session, entry.kind.clone(), code);
        let action = cmd.action.clone();
        match (before, cmd.state) {
            (b, CommandState::Succeeded) if b != CommandState::Succeeded => {
                self.succeeded += 1;
                self.succeeded_actions.extend(action);
            }
            (b, CommandState::Failed) if b != CommandState::Failed => self.failed += 1,
            _ => {}
        }
    }

    /// Moves a command on by the device's status for one of its SyncML commands.
    fn apply_status(
        cmd: &mut QueuedCommand,
        session: &mut SessionState,
        kind: SentKind,
        code: u16,
    ) {
        match kind {
            SentKind::Inner
            | SentKind::ProfileApply
            | SentKind::ProfileSet { .. }
            | SentKind::ProfileGet { .. }
            | SentKind::ProfileDelete { .. } => {}
            SentKind::Chunk { last: false } => {
                if code == 213 {
                    if let Some(o) = session.outgoing.as_mut().filter(|o| o.command_id == cmd.id) {
                        o.offset += o.in_flight;
                        o.in_flight = 0;
                    }
                } else {
                    cmd.state = CommandState::Failed;
                    cmd.status = Some(code);
                    session.outgoing = None;
                }
            }
            SentKind::Whole | SentKind::Chunk { last: true } => {
                let add = matches!(
                    &cmd.spec,
                    CommandSpec::Single(VerbSpec {
                        verb: Verb::Add,
                        ..
                    })
                );
                if code == 418 && add {
                    // Already exists: resend once, as Replace.
                    if let CommandSpec::Single(v) = &mut cmd.spec {
                        v.verb = Verb::Replace;
                    }
                    cmd.state = CommandState::Pending;
                    cmd.sent_in = None;
                    cmd.status = Some(code);
                    return;
                }
                cmd.status = Some(code);
                cmd.state = if (200..300).contains(&code) {
                    CommandState::Succeeded
                } else {
                    CommandState::Failed
                };
            }
        }
    }
}

/// The command of ours a device's Status or Results answers (without MsgRef, a command of
/// any message of the session, the latest first).
fn sent_entry(session: &SessionState, cmd_ref: &str, msg_ref: Option<&str>) -> Option<SentCommand> {
    let msg_ref = msg_ref.map(|m| m.trim().parse::<u32>().ok());
    session
        .sent
        .iter()
        .rev()
        .find(|e| e.cmd_id == cmd_ref && msg_ref.is_none_or(|m| m == Some(e.msg_id)))
        .cloned()
}

/// What a command records of a result too large to keep, so the operator sees why.
fn refused_result(target: String, limit: usize) -> CommandResult {
    CommandResult {
        target: target.chars().take(256).collect(),
        format: None,
        type_: None,
        data: Some(format!(
            "(refused: the device's result is larger than the {limit}-byte limit)"
        )),
    }
}

/// Our MsgID for the reply to a message: the client's MsgID (the two sides alternate, so
/// both count up together and restart with each session; a header-only reply needs no
/// stored counter), else one past our last.
fn reply_msg_id(hdr: &SyncHdr, last: Option<u32>) -> u32 {
    parse_msg_id(&hdr.msg_id).unwrap_or(last.unwrap_or(0) + 1)
}

fn header_status(hdr: &SyncHdr, cmd_id: &str, code: u16, chal: Option<Meta>) -> Command {
    Command::Status(Status {
        cmd_id: cmd_id.into(),
        msg_ref: hdr.msg_id.clone(),
        cmd_ref: "0".into(),
        cmd: "SyncHdr".into(),
        target_ref: None,
        source_ref: None,
        chal,
        data: code.to_string(),
        items: Vec::new(),
    })
}

fn status(cmd_id: &str, msg_ref: &str, cmd_ref: &str, cmd: &str, code: u16) -> Command {
    Command::Status(Status {
        cmd_id: cmd_id.into(),
        msg_ref: msg_ref.into(),
        cmd_ref: cmd_ref.into(),
        cmd: cmd.into(),
        target_ref: None,
        source_ref: None,
        chal: None,
        data: code.to_string(),
        items: Vec::new(),
    })
}

fn challenge_meta(nonce: String) -> Meta {
    Meta {
        format: Some("b64".into()),
        type_: Some(AUTH_MD5.into()),
        next_nonce: Some(nonce),
        ..Meta::default()
    }
}

fn item_of(spec: &ItemSpec) -> Item {
    let meta = Meta {
        format: spec.format.clone(),
        type_: spec.type_.clone(),
        ..Meta::default()
    };
    Item {
        target: Some(spec.target.clone()),
        meta: (!meta.is_empty()).then_some(meta),
        data: spec.data.clone(),
        ..Item::default()
    }
}

fn verb_command(v: &VerbSpec, cmd_id: String) -> Command {
    Command::Item(ItemCommand {
        verb: v.verb.item_verb(),
        cmd_id,
        meta: None,
        items: v.items.iter().map(item_of).collect(),
    })
}

/// The SyncML for a queued command, with CmdIDs from `next`, and what to remember of it.
fn build_command(cmd: &QueuedCommand, next: &mut u32, msg_id: u32) -> (Command, Vec<SentCommand>) {
    let mut take = || {
        let id = *next;
        *next += 1;
        id.to_string()
    };
    match &cmd.spec {
        CommandSpec::Single(v) => {
            let id = take();
            let sent = vec![SentCommand {
                msg_id,
                cmd_id: id.clone(),
                command_id: cmd.id.clone(),
                kind: SentKind::Whole,
            }];
            (verb_command(v, id), sent)
        }
        CommandSpec::Atomic { commands } => {
            let outer = take();
            let mut sent = vec![SentCommand {
                msg_id,
                cmd_id: outer.clone(),
                command_id: cmd.id.clone(),
                kind: SentKind::Whole,
            }];
            let mut inner = Vec::with_capacity(commands.len());
            for v in commands {
                let id = take();
                sent.push(SentCommand {
                    msg_id,
                    cmd_id: id.clone(),
                    command_id: cmd.id.clone(),
                    kind: SentKind::Inner,
                });
                inner.push(verb_command(v, id));
            }
            (
                Command::Container(Container {
                    kind: ContainerKind::Atomic,
                    cmd_id: outer,
                    meta: None,
                    commands: inner,
                }),
                sent,
            )
        }
    }
}
