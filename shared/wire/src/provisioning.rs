//! The `wap-provisioningdoc` returned by WSTEP (PROTOCOL §6): trusted root, client
//! certificate, the w7 APPLICATION (management URL and APPAUTH), and the DMClient provider.

use std::fmt;

use crate::xml::XmlWriter;

/// A certificate as the CertificateStore CSP wants it: uppercase hex SHA-1 thumbprint and
/// base64 DER without line breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreCertificate {
    pub thumbprint: String,
    pub der_base64: String,
}

/// Where the client certificate goes: `My/User` for `EnrollmentType=Full`, `My/System` for
/// `EnrollmentType=Device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertStore {
    User,
    System,
}

impl ClientCertStore {
    fn as_str(self) -> &'static str {
        match self {
            ClientCertStore::User => "User",
            ClientCertStore::System => "System",
        }
    }
}

/// A DM provider id: identical in `APPLICATION/PROVIDER-ID` and `DMClient/Provider`, so it
/// must be free of anything that needs escaping (PROTOCOL §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderId(String);

impl ProviderId {
    pub fn new(id: &str) -> Result<Self, String> {
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(Self(id.to_owned()))
        } else {
            Err(format!(
                "provider id {id:?} must be 1-64 characters of A-Z a-z 0-9 - _ ."
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// DMClient polling schedule, intervals in minutes. Construct through [`PollSchedule::new`],
/// which enforces MS-MDE2's constraints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollSchedule {
    number_of_first_retries: u32,
    interval_for_first_set_of_retries: u32,
    number_of_second_retries: u32,
    interval_for_second_set_of_retries: u32,
    number_of_remaining_scheduled_retries: u32,
    interval_for_remaining_scheduled_retries: u32,
    poll_on_login: bool,
    all_users_poll_on_first_login: bool,
}

impl PollSchedule {
    /// `(count, interval)` for the first, second and remaining sets of polls; a remaining
    /// count of 0 means "forever".
    pub fn new(
        first: (u32, u32),
        second: (u32, u32),
        remaining: (u32, u32),
        poll_on_login: bool,
    ) -> Result<Self, String> {
        if first.0 == 0 {
            return Err("NumberOfFirstRetries must not be 0".into());
        }
        if first.1 == 0 || (second.0 > 0 && second.1 == 0) {
            return Err("poll intervals must be at least one minute".into());
        }
        if remaining.1 < 1440 {
            return Err(
                "IntervalForRemainingScheduledRetries must be at least 1440 minutes".into(),
            );
        }
        Ok(Self {
            number_of_first_retries: first.0,
            interval_for_first_set_of_retries: first.1,
            number_of_second_retries: second.0,
            interval_for_second_set_of_retries: second.1,
            number_of_remaining_scheduled_retries: remaining.0,
            interval_for_remaining_scheduled_retries: remaining.1,
            poll_on_login,
            all_users_poll_on_first_login: poll_on_login,
        })
    }
}

impl Default for PollSchedule {
    /// Every 15 minutes for two hours, hourly for the next five, then daily for ever.
    fn default() -> Self {
        Self::new((8, 15), (5, 60), (0, 1440), true).expect("valid default")
    }
}

/// ROBO renewal settings under `CertificateStore/My/WSTEP/Renew`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalSchedule {
    /// Days before expiry at which the client starts renewing.
    pub renew_period_days: u32,
    /// Days between renewal retries.
    pub retry_interval_days: u32,
    /// Where renewal requests go.
    pub server_url: String,
}

/// A DIGEST credential for one direction of OMA-DM authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestCredential {
    pub name: String,
    pub secret: String,
    /// Base64 of the initial nonce.
    pub nonce_b64: String,
}

impl fmt::Debug for DigestCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestCredential")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Everything the device needs to trust us and be managed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisioningDoc {
    pub root: StoreCertificate,
    /// An issuing CA below the root, installed under `CA/System`.
    pub intermediate: Option<StoreCertificate>,
    pub client: StoreCertificate,
    pub client_store: ClientCertStore,
    pub renewal: Option<RenewalSchedule>,
    pub provider_id: ProviderId,
    /// `APPLICATION/NAME`, shown in Settings.
    pub name: String,
    /// The management URL (`ADDR`); the client appends `?mode=…&Platform=WoA`.
    pub management_url: String,
    /// `AAUTHLEVEL=CLIENT`: how the server authenticates to the client.
    pub server_to_client: DigestCredential,
    /// `AAUTHLEVEL=APPSRV`: how the client authenticates to the server.
    pub client_to_server: DigestCredential,
    pub upn: String,
    /// `EntDMID`: the server's id for this enrollment; required before any renewal.
    pub ent_dm_id: String,
    pub ent_device_name: Option<String>,
    pub poll: PollSchedule,
}

impl ProvisioningDoc {
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::with_capacity(6 * 1024);
        w.start("wap-provisioningdoc", &[("version", "1.1")]);

        w.start("characteristic", &[("type", "CertificateStore")]);
        w.start("characteristic", &[("type", "Root")]);
        w.start("characteristic", &[("type", "System")]);
        write_cert(&mut w, &self.root);
        w.end();
        w.end();
        w.end();

        if let Some(ca) = &self.intermediate {
            w.start("characteristic", &[("type", "CertificateStore")]);
            w.start("characteristic", &[("type", "CA")]);
            w.start("characteristic", &[("type", "System")]);
            write_cert(&mut w, ca);
            w.end();
            w.end();
            w.end();
        }

        write_my_store(
            &mut w,
            &self.client,
            self.client_store,
            self.renewal.as_ref(),
        );

        w.start("characteristic", &[("type", "APPLICATION")]);
        parm(&mut w, "APPID", "w7", None);
        parm(&mut w, "PROVIDER-ID", self.provider_id.as_str(), None);
        parm(&mut w, "NAME", &self.name, None);
        parm(&mut w, "ADDR", &self.management_url, None);
        parm(&mut w, "CONNRETRYFREQ", "6", None);
        parm(&mut w, "INITIALBACKOFFTIME", "30000", None);
        parm(&mut w, "MAXBACKOFFTIME", "120000", None);
        w.empty("parm", &[("name", "BACKCOMPATRETRYDISABLED")]);
        parm(
            &mut w,
            "DEFAULTENCODING",
            "application/vnd.syncml.dm+xml",
            None,
        );
        w.start("characteristic", &[("type", "APPAUTH")]);
        parm(&mut w, "AAUTHLEVEL", "CLIENT", None);
        parm(&mut w, "AAUTHTYPE", "DIGEST", None);
        parm(&mut w, "AAUTHSECRET", &self.server_to_client.secret, None);
        parm(&mut w, "AAUTHDATA", &self.server_to_client.nonce_b64, None);
        w.end();
        w.start("characteristic", &[("type", "APPAUTH")]);
        parm(&mut w, "AAUTHLEVEL", "APPSRV", None);
        parm(&mut w, "AAUTHTYPE", "DIGEST", None);
        parm(&mut w, "AAUTHNAME", &self.client_to_server.name, None);
        parm(&mut w, "AAUTHSECRET", &self.client_to_server.secret, None);
        parm(&mut w, "AAUTHDATA", &self.client_to_server.nonce_b64, None);
        w.end();
        w.end();

        w.start("characteristic", &[("type", "DMClient")]);
        w.start("characteristic", &[("type", "Provider")]);
        w.start("characteristic", &[("type", self.provider_id.as_str())]);
        parm(&mut w, "EntDMID", &self.ent_dm_id, Some("string"));
        parm(&mut w, "UPN", &self.upn, Some("string"));
        if let Some(name) = &self.ent_device_name {
            parm(&mut w, "EntDeviceName", name, Some("string"));
        }
        let p = &self.poll;
        w.start("characteristic", &[("type", "Poll")]);
        int_parm(&mut w, "NumberOfFirstRetries", p.number_of_first_retries);
        int_parm(
            &mut w,
            "IntervalForFirstSetOfRetries",
            p.interval_for_first_set_of_retries,
        );
        int_parm(&mut w, "NumberOfSecondRetries", p.number_of_second_retries);
        int_parm(
            &mut w,
            "IntervalForSecondSetOfRetries",
            p.interval_for_second_set_of_retries,
        );
        int_parm(
            &mut w,
            "NumberOfRemainingScheduledRetries",
            p.number_of_remaining_scheduled_retries,
        );
        int_parm(
            &mut w,
            "IntervalForRemainingScheduledRetries",
            p.interval_for_remaining_scheduled_retries,
        );
        parm(
            &mut w,
            "PollOnLogin",
            bool_str(p.poll_on_login),
            Some("boolean"),
        );
        parm(
            &mut w,
            "AllUsersPollOnFirstLogin",
            bool_str(p.all_users_poll_on_first_login),
            Some("boolean"),
        );
        w.end();
        w.end();
        w.end();
        w.end();

        w.end();
        w.finish()
    }
}

/// The document answering a renewal (ROBO): the new client certificate in the same store,
/// and the renewal schedule again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalDoc {
    pub client: StoreCertificate,
    pub client_store: ClientCertStore,
    pub renewal: Option<RenewalSchedule>,
}

impl RenewalDoc {
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::with_capacity(3 * 1024);
        w.start("wap-provisioningdoc", &[("version", "1.1")]);
        write_my_store(
            &mut w,
            &self.client,
            self.client_store,
            self.renewal.as_ref(),
        );
        w.end();
        w.finish()
    }
}

/// `CertificateStore/My/<User|System>` with the client certificate and its
/// PrivateKeyContainer, plus `My/WSTEP/Renew` when renewal is served.
fn write_my_store(
    w: &mut XmlWriter,
    client: &StoreCertificate,
    store: ClientCertStore,
    renewal: Option<&RenewalSchedule>,
) {
    w.start("characteristic", &[("type", "CertificateStore")]);
    w.start("characteristic", &[("type", "My")]);
    w.start("characteristic", &[("type", store.as_str())]);
    write_cert(w, client);
    w.empty("characteristic", &[("type", "PrivateKeyContainer")]);
    w.end();
    if let Some(r) = renewal {
        w.start("characteristic", &[("type", "WSTEP")]);
        w.start("characteristic", &[("type", "Renew")]);
        parm(w, "ROBOSupport", "true", Some("boolean"));
        parm(
            w,
            "RenewPeriod",
            &r.renew_period_days.to_string(),
            Some("integer"),
        );
        parm(
            w,
            "RetryInterval",
            &r.retry_interval_days.to_string(),
            Some("integer"),
        );
        parm(w, "ServerURL", &r.server_url, Some("string"));
        w.end();
        w.end();
    }
    w.end();
    w.end();
}

fn write_cert(w: &mut XmlWriter, c: &StoreCertificate) {
    w.start("characteristic", &[("type", &c.thumbprint)]);
    parm(w, "EncodedCertificate", &c.der_base64, None);
    w.end();
}

fn parm(w: &mut XmlWriter, name: &str, value: &str, datatype: Option<&str>) {
    match datatype {
        Some(dt) => w.empty(
            "parm",
            &[("name", name), ("value", value), ("datatype", dt)],
        ),
        None => w.empty("parm", &[("name", name), ("value", value)]),
    };
}

fn int_parm(w: &mut XmlWriter, name: &str, value: u32) {
    parm(w, name, &value.to_string(), Some("integer"));
}

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{self, Element};

    fn doc(store: ClientCertStore) -> ProvisioningDoc {
        ProvisioningDoc {
            root: StoreCertificate {
                thumbprint: "AA11".into(),
                der_base64: "Uk9PVA==".into(),
            },
            intermediate: None,
            client: StoreCertificate {
                thumbprint: "BB22".into(),
                der_base64: "Q0xJRU5U".into(),
            },
            client_store: store,
            renewal: None,
            provider_id: ProviderId::new("winmdm").unwrap(),
            name: "winmdm".into(),
            management_url: "https://m.example.com/ManagementServer/MDM.svc".into(),
            server_to_client: DigestCredential {
                name: "srv".into(),
                secret: "s1".into(),
                nonce_b64: "bm9uY2U=".into(),
            },
            client_to_server: DigestCredential {
                name: "dev".into(),
                secret: "s2&<".into(),
                nonce_b64: "bm9uY2U=".into(),
            },
            upn: "alice@example.com".into(),
            ent_dm_id: "DEV1".into(),
            ent_device_name: Some("PC".into()),
            poll: PollSchedule::default(),
        }
    }

    fn find<'a>(el: &'a Element, ty: &str) -> Option<&'a Element> {
        el.elements().find(|c| c.attr("type") == Some(ty))
    }

    #[test]
    fn places_client_cert_by_enrollment_type() {
        for (store, name) in [
            (ClientCertStore::User, "User"),
            (ClientCertStore::System, "System"),
        ] {
            let root = xml::parse(doc(store).to_xml().as_bytes()).unwrap();
            let my = root
                .elements()
                .filter_map(|cs| find(cs, "My"))
                .next()
                .unwrap();
            let s = find(my, name).unwrap();
            assert!(find(s, "BB22").is_some());
            assert!(find(s, "PrivateKeyContainer").is_some());
        }
    }

    #[test]
    fn provider_id_matches_and_escapes_values() {
        let xml_text = doc(ClientCertStore::User).to_xml();
        let root = xml::parse(xml_text.as_bytes()).unwrap();
        let app = find(&root, "APPLICATION").unwrap();
        let pid = app
            .elements()
            .find(|p| p.attr("name") == Some("PROVIDER-ID"))
            .unwrap()
            .attr("value")
            .unwrap();
        let dm = find(&root, "DMClient").unwrap();
        assert!(find(find(dm, "Provider").unwrap(), pid).is_some());
        assert_eq!(
            app.elements()
                .filter(|c| c.attr("type") == Some("APPAUTH"))
                .count(),
            2
        );
        assert!(xml_text.contains("s2&amp;&lt;"));
    }

    #[test]
    fn renewal_schedule_has_typed_parms() {
        let mut d = doc(ClientCertStore::User);
        d.renewal = Some(RenewalSchedule {
            renew_period_days: 42,
            retry_interval_days: 7,
            server_url: "https://m/ManagementServer/Renew.svc".into(),
        });
        for xml in [
            d.to_xml(),
            RenewalDoc {
                client: d.client.clone(),
                client_store: ClientCertStore::User,
                renewal: d.renewal.clone(),
            }
            .to_xml(),
        ] {
            let root = xml::parse(xml.as_bytes()).unwrap();
            let renew = root
                .elements()
                .filter_map(|cs| find(cs, "My"))
                .find_map(|my| find(my, "WSTEP"))
                .and_then(|w| find(w, "Renew"))
                .expect("My/WSTEP/Renew");
            let parm = |n: &str| {
                renew
                    .elements()
                    .find(|p| p.attr("name") == Some(n))
                    .map(|p| {
                        (
                            p.attr("value").unwrap().to_owned(),
                            p.attr("datatype").unwrap().to_owned(),
                        )
                    })
                    .unwrap()
            };
            assert_eq!(parm("ROBOSupport"), ("true".into(), "boolean".into()));
            assert_eq!(parm("RenewPeriod"), ("42".into(), "integer".into()));
            assert_eq!(parm("RetryInterval"), ("7".into(), "integer".into()));
            assert_eq!(parm("ServerURL").0, "https://m/ManagementServer/Renew.svc");
        }
    }

    #[test]
    fn validates_provider_id_and_poll() {
        assert!(ProviderId::new("a b").is_err());
        assert!(ProviderId::new("").is_err());
        assert!(PollSchedule::new((0, 15), (0, 0), (0, 1440), true).is_err());
        assert!(PollSchedule::new((1, 15), (0, 0), (0, 60), true).is_err());
    }
}
