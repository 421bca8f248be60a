//! An emulated Windows OMA-DM client: builds the messages a Windows DM client sends
//! (package #1, statuses, results, chunked large objects) and reads the server's replies.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest, Md5};
use winmdm_wire::syncml::{
    Alert, Command, Cred, Item, ItemCommand, ItemVerb, Location, Meta, Results, Status, SyncHdr,
    SyncMl,
};

/// The APPSRV digest credentials from the provisioning doc.
#[derive(Debug, Clone)]
pub struct DigestCredentials {
    pub name: String,
    pub secret: String,
    /// Base64 nonce to use next (AAUTHDATA first, then each NextNonce).
    pub nonce_b64: String,
}

impl DigestCredentials {
    /// `b64(md5(b64(md5(name:secret)):nonce))`, written out independently of the server.
    pub fn digest(&self) -> String {
        let inner = B64.encode(Md5::digest(format!("{}:{}", self.name, self.secret)));
        let nonce = B64.decode(&self.nonce_b64).expect("nonce is base64");
        let mut h = Md5::new();
        h.update(inner.as_bytes());
        h.update(b":");
        h.update(&nonce);
        B64.encode(h.finalize())
    }
}

/// How the client handles credentials, nonces and sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMode {
    /// Windows: `Cred` on every message, a 200's `NextNonce` from the next session on, a
    /// new SessionID per session, a Status for every command.
    Windows,
    /// A strict OMA-DM 1.2 client (the reference toolkit's): `Cred` until the server
    /// answers 212, a `NextNonce` on its very next message, the same SessionID (1) for
    /// every session, and no Status for an Atomic.
    Strict,
}

pub struct DmClient {
    pub mode: ClientMode,
    pub device_id: String,
    pub server_url: String,
    pub session_id: u32,
    pub msg_id: u32,
    pub digest: Option<DigestCredentials>,
    /// Whether to send Cred (the digest) with each message.
    pub send_cred: bool,
    pub max_msg_size: Option<u64>,
    next_cmd: u32,
    /// A NextNonce received in this session, used from the next session on.
    pending_nonce: Option<String>,
    /// Strict mode: the server answered 212 in this session.
    session_authenticated: bool,
}

/// A parsed server reply.
pub struct Reply {
    pub msg: SyncMl,
}

impl Reply {
    pub fn parse(body: &[u8]) -> Self {
        let parsed = SyncMl::parse(body)
            .unwrap_or_else(|e| panic!("reply is SyncML ({e}): {}", String::from_utf8_lossy(body)));
        assert!(
            parsed.rejected.is_empty(),
            "every server command has a CmdID"
        );
        Self {
            msg: parsed.message,
        }
    }

    pub fn header_status(&self) -> &Status {
        match self.msg.commands.first() {
            Some(Command::Status(s)) if s.cmd == "SyncHdr" => s,
            other => panic!("first command must be the SyncHdr status, got {other:?}"),
        }
    }

    pub fn statuses(&self) -> Vec<&Status> {
        self.msg
            .commands
            .iter()
            .filter_map(|c| match c {
                Command::Status(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    /// Server commands that need an answer (everything but Status).
    pub fn commands(&self) -> Vec<&Command> {
        self.msg
            .commands
            .iter()
            .filter(|c| !matches!(c, Command::Status(_)))
            .collect()
    }

    /// Item commands (Get/Add/Replace/Delete/Exec), flattening Atomic.
    pub fn item_commands(&self) -> Vec<&ItemCommand> {
        fn walk<'a>(c: &'a Command, out: &mut Vec<&'a ItemCommand>) {
            match c {
                Command::Item(i) => out.push(i),
                Command::Container(ct) => ct.commands.iter().for_each(|c| walk(c, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        self.msg.commands.iter().for_each(|c| walk(c, &mut out));
        out
    }

    /// Whether the reply ends the session: nothing in it needs an answer.
    pub fn ends_session(&self) -> bool {
        self.commands().is_empty() && self.msg.final_
    }
}

impl DmClient {
    pub fn new(device_id: &str, server_url: &str) -> Self {
        Self {
            mode: ClientMode::Windows,
            device_id: device_id.into(),
            server_url: server_url.into(),
            session_id: 0,
            msg_id: 0,
            digest: None,
            send_cred: false,
            max_msg_size: None,
            next_cmd: 1,
            pending_nonce: None,
            session_authenticated: false,
        }
    }

    /// The same client behaving as `mode`.
    pub fn with_mode(mut self, mode: ClientMode) -> Self {
        self.mode = mode;
        self
    }

    /// Starts a new session: a new SessionID (hex, as newer Windows sends) and MsgID 1.
    pub fn start_session(&mut self) {
        self.session_id = match self.mode {
            ClientMode::Windows => self.session_id + 1,
            ClientMode::Strict => 1,
        };
        self.msg_id = 0;
        self.session_authenticated = false;
        if let (Some(n), Some(d)) = (self.pending_nonce.take(), self.digest.as_mut()) {
            d.nonce_b64 = n;
        }
    }

    pub fn cmd_id(&mut self) -> String {
        let id = self.next_cmd;
        self.next_cmd += 1;
        id.to_string()
    }

    /// A message with the given commands (CmdIDs restart per message).
    pub fn message(
        &mut self,
        build: impl FnOnce(&mut Self) -> Vec<Command>,
        final_: bool,
    ) -> String {
        self.msg_id += 1;
        self.next_cmd = 1;
        let commands = build(self);
        let cred = match (&self.digest, self.send_cred && !self.session_authenticated) {
            (Some(d), true) => Some(Cred {
                meta: Meta {
                    format: Some("b64".into()),
                    type_: Some("syncml:auth-md5".into()),
                    ..Meta::default()
                },
                data: d.digest(),
            }),
            _ => None,
        };
        let msg = SyncMl {
            hdr: SyncHdr {
                ver_dtd: "1.2".into(),
                ver_proto: "DM/1.2".into(),
                session_id: format!("{:X}", self.session_id),
                msg_id: self.msg_id.to_string(),
                target: Location::uri(self.server_url.clone()),
                source: Location {
                    loc_uri: self.device_id.clone(),
                    loc_name: Some("dummy".into()),
                },
                cred,
                meta: self.max_msg_size.map(|m| Meta {
                    max_msg_size: Some(m),
                    ..Meta::default()
                }),
            },
            commands,
            final_,
        };
        msg.to_xml()
    }

    /// Package #1: Alert 1201, the LoginStatus alert, the DevInfo Replace with HWDevID.
    pub fn package1(&mut self, login_status: &str, hw_dev_id: &str) -> Vec<Command> {
        let devinfo = |uri: &str, v: &str| Item {
            source: Some(uri.into()),
            data: Some(v.into()),
            ..Item::default()
        };
        vec![
            Command::Alert(Alert {
                cmd_id: self.cmd_id(),
                data: "1201".into(),
                items: vec![],
            }),
            Command::Alert(Alert {
                cmd_id: self.cmd_id(),
                data: "1224".into(),
                items: vec![Item {
                    meta: Some(Meta {
                        type_: Some("com.microsoft/MDM/LoginStatus".into()),
                        ..Meta::default()
                    }),
                    data: Some(login_status.into()),
                    ..Item::default()
                }],
            }),
            Command::Item(ItemCommand {
                verb: ItemVerb::Replace,
                cmd_id: self.cmd_id(),
                meta: None,
                items: vec![
                    devinfo("./DevInfo/DevId", &self.device_id.clone()),
                    devinfo("./DevInfo/Man", "Contoso Ltd."),
                    devinfo("./DevInfo/Mod", "Surface Laptop 7"),
                    devinfo("./DevInfo/DmV", "1.3"),
                    devinfo("./DevInfo/Lang", "en-US"),
                    devinfo("./Vendor/MSFT/DMClient/HWDevID", hw_dev_id),
                ],
            }),
        ]
    }

    /// Alert 1224 carrying the signed-in Entra user's token.
    pub fn aad_user_token_alert(&mut self, token: &str) -> Command {
        Command::Alert(Alert {
            cmd_id: self.cmd_id(),
            data: "1224".into(),
            items: vec![Item {
                meta: Some(Meta {
                    type_: Some("com.microsoft/MDM/AADUserToken".into()),
                    ..Meta::default()
                }),
                data: Some(token.into()),
                ..Item::default()
            }],
        })
    }

    /// A Status for one server command.
    pub fn status_for(&mut self, reply: &Reply, cmd_ref: &str, cmd: &str, code: u16) -> Command {
        Command::Status(Status {
            cmd_id: self.cmd_id(),
            msg_ref: reply.msg.hdr.msg_id.clone(),
            cmd_ref: cmd_ref.into(),
            cmd: cmd.into(),
            target_ref: None,
            source_ref: None,
            chal: None,
            data: code.to_string(),
            items: vec![],
        })
    }

    /// Answers every server command with `code` (or what `code_for` says), and every Get
    /// with Results from `value`.
    pub fn answer(
        &mut self,
        reply: &Reply,
        code_for: impl Fn(&Command) -> u16,
        value: impl Fn(&str) -> String,
    ) -> Vec<Command> {
        let mut out = Vec::new();
        for c in reply.commands() {
            let code = code_for(c);
            let atomic = matches!(c, Command::Container(_));
            if !(atomic && self.mode == ClientMode::Strict) {
                out.push(self.status_for(reply, c.cmd_id(), c.name(), code));
            }
            if let Command::Container(ct) = c {
                for inner in &ct.commands {
                    out.push(self.status_for(reply, inner.cmd_id(), inner.name(), code));
                }
            }
            if let Command::Item(ic) = c
                && ic.verb == ItemVerb::Get
                && code == 200
            {
                let items = ic
                    .items
                    .iter()
                    .map(|i| {
                        let uri = i.target.clone().unwrap_or_default();
                        Item {
                            source: Some(uri.clone()),
                            meta: Some(Meta {
                                format: Some("chr".into()),
                                type_: Some("text/plain".into()),
                                ..Meta::default()
                            }),
                            data: Some(value(&uri)),
                            ..Item::default()
                        }
                    })
                    .collect();
                out.push(Command::Results(Results {
                    cmd_id: self.cmd_id(),
                    msg_ref: Some(reply.msg.hdr.msg_id.clone()),
                    cmd_ref: ic.cmd_id.clone(),
                    meta: None,
                    items,
                }));
            }
        }
        out
    }

    /// Takes the NextNonce a reply's SyncHdr status offers. Windows uses a 401/407's at
    /// once (the retry is a new session) and a 200's from the next session on; a strict
    /// client uses any of them on its very next message, and stops sending `Cred` after a
    /// 212.
    pub fn take_next_nonce(&mut self, reply: &Reply) {
        let hs = reply.header_status();
        if self.mode == ClientMode::Strict && hs.data == "212" {
            self.session_authenticated = true;
        }
        if let Some(n) = hs.chal.as_ref().and_then(|c| c.next_nonce.clone()) {
            let now = self.mode == ClientMode::Strict || hs.data == "407" || hs.data == "401";
            if now {
                if let Some(d) = self.digest.as_mut() {
                    d.nonce_b64 = n;
                }
                self.pending_nonce = None;
            } else {
                self.pending_nonce = Some(n);
            }
        }
    }

    /// Forgets a NextNonce received in this session, as if its reply was lost.
    pub fn lose_next_nonce(&mut self) {
        self.pending_nonce = None;
    }

    /// The nonce the next session will use.
    pub fn next_nonce(&self) -> Option<&str> {
        self.pending_nonce.as_deref()
    }
}

impl DmClient {
    /// Answers every server command in `reply` from a modelled CSP tree, as the device
    /// would: one Status per command in order (one for each command inside an Atomic or
    /// Sequence too, CmdRef = its CmdID; a strict client sends none for the container
    /// itself), each successful Get followed by its Results (`Item/Source/LocURI` = the
    /// Get's target, `Meta/Format` the node's). The tree changes as the commands say (see
    /// [`crate::csp`]).
    pub fn answer_from(&mut self, reply: &Reply, tree: &mut crate::csp::CspTree) -> Vec<Command> {
        let mut out = Vec::new();
        for c in reply.commands() {
            for a in tree.apply(c) {
                if !(a.is_container() && self.mode == ClientMode::Strict) {
                    out.push(self.status_for(reply, &a.cmd_ref, a.cmd, a.code));
                }
                if let Some(items) = a.results {
                    out.push(Command::Results(Results {
                        cmd_id: self.cmd_id(),
                        msg_ref: Some(reply.msg.hdr.msg_id.clone()),
                        cmd_ref: a.cmd_ref,
                        meta: None,
                        items,
                    }));
                }
            }
        }
        out
    }
}
