//! Management session state, persisted between the messages of one OMA-DM session.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::commands::QueuedCommand;
use crate::model::{Device, DeviceCertificate, DeviceStatus, DmDeviceInfo, PreviousCertificate};
use crate::profiles::DeviceProfile;

/// How a sent SyncML command relates to the queued command it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SentKind {
    /// The command itself: its Status settles the queued command.
    Whole,
    /// A command inside an Atomic: its Status is informative.
    Inner,
    /// One chunk of a large object; `last` settles the command.
    Chunk { last: bool },
    /// A profile's Atomic (`command_id` is the profile id).
    ProfileApply,
    /// The setting at `index` inside a profile's Atomic.
    ProfileSet { index: usize },
    /// The Get verifying the setting at `index`.
    ProfileGet { index: usize },
    /// The Delete of a node a profile set.
    ProfileDelete { target: String },
}

impl SentKind {
    pub fn is_profile(&self) -> bool {
        matches!(
            self,
            SentKind::ProfileApply
                | SentKind::ProfileSet { .. }
                | SentKind::ProfileGet { .. }
                | SentKind::ProfileDelete { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentCommand {
    pub msg_id: u32,
    pub cmd_id: String,
    pub command_id: String,
    pub kind: SentKind,
}

/// Which enrollment of a DeviceID something belongs to: who enrolled it, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentMark {
    pub upn: String,
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled_at: OffsetDateTime,
}

impl EnrollmentMark {
    pub fn of(device: &crate::model::Device) -> Self {
        Self {
            upn: device.upn.clone(),
            enrolled_at: device.enrolled_at,
        }
    }
}

/// A large object the device is sending in chunks, reassembled across messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingChunk {
    /// `Results` (with the CmdRef/MsgRef of our Get) or the client command's name.
    pub cmd: String,
    pub cmd_ref: Option<String>,
    pub msg_ref: Option<String>,
    pub uri: String,
    pub format: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub data: String,
    /// Over a buffering limit: its chunks are answered 413 and not kept.
    #[serde(default)]
    pub refused: bool,
}

impl IncomingChunk {
    /// What the chunk takes in the session record: its data and every device-supplied
    /// field that names it, and a fixed allowance for the record's own shape.
    pub fn stored_len(&self) -> usize {
        const PER_CHUNK: usize = 64;
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        PER_CHUNK
            + self.cmd.len()
            + opt(&self.cmd_ref)
            + opt(&self.msg_ref)
            + self.uri.len()
            + opt(&self.format)
            + opt(&self.type_)
            + self.data.len()
    }
}

/// A large command being sent to the device in chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingChunk {
    pub command_id: String,
    /// Bytes of the item's data already sent.
    pub offset: usize,
    /// Bytes sent in the last chunk, not yet acknowledged with 213.
    pub in_flight: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    pub device_id: String,
    /// The key the store keeps this state under (with the device id): the management
    /// service uses one slot per device, whatever the SessionID.
    #[serde(default)]
    pub slot: String,
    /// The SyncHdr SessionID.
    pub session_id: String,
    /// Random per session instance: tells this session from a later one that reuses the
    /// SessionID, so commands sent in an earlier one are sent again.
    pub instance: String,
    /// The enrollment the session belongs to. A DeviceID enrolled again since — by
    /// another user, once the record was freed — never continues the old enrollment's
    /// session (its sent commands, its signed-in user). `None` (a record written before
    /// this field) matches nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<EnrollmentMark>,
    /// The MsgID of our last reply.
    pub server_msg_id: u32,
    /// The MsgID of the device's last message: a later message must carry a higher one,
    /// so a recorded message cannot be played again within the session.
    #[serde(default)]
    pub client_msg_id: u32,
    /// `user`, `others` or `none` from the 1224 LoginStatus alert.
    pub login_status: Option<String>,
    /// The Entra ID user signed in on the device (UPN), from a verified 1224
    /// `com.microsoft/MDM/AADUserToken` alert (`crate::entra`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entra_user: Option<String>,
    /// Set when the session was authenticated with a digest rather than a certificate:
    /// its later messages must carry `Cred` too (see `crate::dm_auth`).
    #[serde(default)]
    pub digest: Option<DigestSession>,
    pub max_msg_size: Option<u64>,
    pub sent: Vec<SentCommand>,
    pub incoming: Vec<IncomingChunk>,
    pub outgoing: Option<OutgoingChunk>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl SessionState {
    /// Whether a user is signed in on the device, so `./User/…` commands and user-scope
    /// profiles may go: the LoginStatus alert says `user`, or a verified Entra user token
    /// came with the session.
    pub fn user_signed_in(&self) -> bool {
        self.login_status.as_deref() == Some("user") || self.entra_user.is_some()
    }

    /// A session stored under its own SessionID.
    pub fn new(device_id: &str, session_id: &str, expires_at: OffsetDateTime) -> Self {
        Self::in_slot(device_id, session_id, session_id, expires_at)
    }

    /// A session stored under `slot`.
    pub fn in_slot(
        device_id: &str,
        session_id: &str,
        slot: &str,
        expires_at: OffsetDateTime,
    ) -> Self {
        Self {
            device_id: device_id.to_owned(),
            slot: slot.to_owned(),
            session_id: session_id.to_owned(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            enrollment: None,
            server_msg_id: 0,
            client_msg_id: 0,
            login_status: None,
            entra_user: None,
            digest: None,
            max_msg_size: None,
            sent: Vec::new(),
            incoming: Vec::new(),
            outgoing: None,
            expires_at,
        }
    }

    /// Identifies this session instance in [`crate::commands::SentIn`].
    pub fn key(&self) -> String {
        format!("{}/{}", self.session_id, self.instance)
    }
}

/// The nonces of a digest-authenticated session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestSession {
    /// The nonce the device last authenticated with in this session (Windows keeps using
    /// the session's first nonce for every message).
    pub auth_nonce: String,
    /// The `NextNonce` offered in this session's replies: a strict OMA-DM client uses it on
    /// its very next message, Windows from the next session on.
    pub offered_nonce: String,
}

/// Everything one management message needs, read in one go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementSnapshot {
    pub device: Device,
    /// This session's state, if it is not the session's first message (and not expired).
    pub session: Option<SessionState>,
    /// Pending and sent commands, oldest first, plus any other command this session sent
    /// (its Results may arrive after its Status settled it).
    pub open_commands: Vec<QueuedCommand>,
    /// The device's profile states, by profile id.
    pub profiles: Vec<DeviceProfile>,
}

/// Changes to a device made by a management message; applied inside the write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevicePatch {
    pub last_seen_at: Option<OffsetDateTime>,
    pub dm_info: Option<DmDeviceInfo>,
    /// The HWDevID the device reported, recorded if the device had none.
    pub hw_dev_id: Option<String>,
    pub status: Option<DeviceStatus>,
    pub nonces: Option<NonceUpdate>,
    /// Group membership changes: `(group, member)`.
    pub groups: Vec<(String, bool)>,
    pub certificate: Option<CertificateSwitch>,
    /// A new profile compliance (`Some(None)`: no profile is assigned any more).
    pub compliance: Option<Option<crate::model::Compliance>>,
}

/// New digest nonces for a device (see `crate::dm_auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceUpdate {
    /// The nonce the device now holds, when it authenticated with a newer one.
    pub current: Option<String>,
    /// The `NextNonce` offered to it.
    pub next: Option<String>,
    pub expires_at: OffsetDateTime,
    /// A challenge period whose nonce was just spent.
    pub challenge_spent_period: Option<i64>,
}

/// A renewal's switch to a new certificate, applied only if the device's current
/// certificate is still the one the renewal was decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSwitch {
    pub expect_current: String,
    pub new: DeviceCertificate,
    /// The certificate the device renewed with, accepted during the grace period.
    pub previous: PreviousCertificate,
}

/// The device changed under a conditional patch (e.g. a concurrent renewal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the device's certificate changed concurrently")]
pub struct PatchConflict;

impl DevicePatch {
    pub fn is_empty(&self) -> bool {
        *self == DevicePatch::default()
    }

    /// Applies the patch to a device record; a certificate switch whose precondition no
    /// longer holds changes nothing.
    pub fn apply(&self, d: &mut Device) -> Result<(), PatchConflict> {
        if let Some(sw) = &self.certificate {
            if !d.cert.thumbprint.eq_ignore_ascii_case(&sw.expect_current) {
                return Err(PatchConflict);
            }
            d.cert = sw.new.clone();
            d.previous_cert = Some(sw.previous.clone());
        }
        if let Some(t) = self.last_seen_at {
            d.last_seen_at = Some(t);
        }
        if let Some(i) = &self.dm_info {
            d.dm_info = i.clone();
        }
        if let (None, Some(hw)) = (&d.hw_dev_id, &self.hw_dev_id) {
            d.hw_dev_id = Some(hw.clone());
        }
        if let Some(s) = self.status {
            d.status = s;
        }
        if let Some(c) = self.compliance {
            d.compliance = c;
        }
        for (g, member) in &self.groups {
            let has = d.groups.iter().any(|x| x == g);
            if *member && !has {
                d.groups.push(g.clone());
                d.groups.sort();
            } else if !*member && has {
                d.groups.retain(|x| x != g);
            }
        }
        if let Some(n) = &self.nonces {
            let c = &mut d.dm_credentials;
            if let Some(current) = &n.current {
                c.client_nonce = current.clone();
                c.client_nonce_expires_at = Some(n.expires_at);
            }
            if let Some(next) = &n.next {
                c.client_next_nonce = Some(next.clone());
                c.client_next_nonce_expires_at = Some(n.expires_at);
            } else if n.current.is_some() {
                // The offered nonce was the one just used.
                c.client_next_nonce = None;
                c.client_next_nonce_expires_at = None;
            }
            if let Some(p) = n.challenge_spent_period {
                c.challenge_spent_period = Some(c.challenge_spent_period.map_or(p, |q| q.max(p)));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionWrite {
    Keep,
    Put(Box<SessionState>),
    /// The session ended: forget the state in this slot.
    Delete {
        slot: String,
    },
}

/// Everything one management message writes, committed as one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementUpdate {
    pub device_id: String,
    pub device: DevicePatch,
    pub session: SessionWrite,
    /// Queued commands whose state, status or results changed (whole records).
    pub commands: Vec<QueuedCommand>,
    /// Profile states that changed (whole records, upserted).
    pub profiles: Vec<DeviceProfile>,
}
