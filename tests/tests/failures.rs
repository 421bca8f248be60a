//! Failures of the store and the CA, and time passing, driven through the same handlers
//! the Lambda functions run (in process, with wrappers that fail on demand).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

use async_trait::async_trait;
use time::OffsetDateTime;
use winmdm_core::ca::{CaChain, CaError, CertificateAuthority, IssueRequest, IssuedCertificate};
use winmdm_core::clock::ManualClock;
use winmdm_core::commands::QueuedCommand;
use winmdm_core::config::{EnrollmentConfig, PreferredAuth};
use winmdm_core::model::{Device, Page, PageRequest, User};
use winmdm_core::password::hash_password;
use winmdm_core::profiles::{DeviceProfile, Group, Profile};
use winmdm_core::session::{ManagementSnapshot, ManagementUpdate};
use winmdm_core::store::{EnrollmentCommit, Store, StoreError};
use winmdm_e2e::HttpResponse;
use winmdm_e2e::device::{CsrSignature, CsrSubject, Device as EmulatedDevice};
use winmdm_e2e::messages::{self, Credentials};
use winmdm_e2e::verify;
use winmdm_embedded::{LocalCa, RedbStore};
use winmdm_http::AppState;
use winmdm_http::state::AdminAuth;

/// A store whose enrollment commit and management writes fail while `down` is set, and
/// whose management reads fail while `reads_down` is.
struct FlakyStore {
    inner: RedbStore,
    down: AtomicBool,
    reads_down: AtomicBool,
}

#[async_trait]
impl Store for FlakyStore {
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        self.inner.create_user(user).await
    }
    async fn get_user(&self, upn: &str) -> Result<Option<User>, StoreError> {
        self.inner.get_user(upn).await
    }
    async fn list_users(&self, page: &PageRequest) -> Result<Page<User>, StoreError> {
        self.inner.list_users(page).await
    }
    async fn delete_user(&self, upn: &str) -> Result<bool, StoreError> {
        self.inner.delete_user(upn).await
    }
    async fn get_device(&self, id: &str) -> Result<Option<Device>, StoreError> {
        self.inner.get_device(id).await
    }
    async fn get_device_by_hw_dev_id(&self, hw: &str) -> Result<Option<Device>, StoreError> {
        self.inner.get_device_by_hw_dev_id(hw).await
    }
    async fn user_has_blocked_device(&self, upn: &str) -> Result<bool, StoreError> {
        self.inner.user_has_blocked_device(upn).await
    }
    async fn recent_failed_commands(
        &self,
        limit: usize,
    ) -> Result<Vec<winmdm_core::commands::FailedCommandNote>, StoreError> {
        self.inner.recent_failed_commands(limit).await
    }
    fn listing_shards(&self) -> u32 {
        self.inner.listing_shards()
    }
    async fn read_device_summaries(
        &self,
        reads: &[winmdm_core::device_listing::ShardRead],
    ) -> Result<Vec<winmdm_core::device_listing::SummaryBatch>, StoreError> {
        self.inner.read_device_summaries(reads).await
    }
    async fn read_counters(
        &self,
        ranges: &[winmdm_core::fleet_stats::KeyRange],
    ) -> Result<Vec<(String, i64)>, StoreError> {
        self.inner.read_counters(ranges).await
    }
    async fn is_token_consumed(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.is_token_consumed(id).await
    }
    async fn commit_enrollment(&self, c: &EnrollmentCommit) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("throttled".into()));
        }
        self.inner.commit_enrollment(c).await
    }
    async fn load_management(
        &self,
        d: &str,
        s: &str,
    ) -> Result<Option<ManagementSnapshot>, StoreError> {
        if self.reads_down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("throttled".into()));
        }
        self.inner.load_management(d, s).await
    }
    async fn save_management(&self, u: &ManagementUpdate) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("throttled".into()));
        }
        self.inner.save_management(u).await
    }
    async fn enqueue_command(&self, c: &QueuedCommand) -> Result<(), StoreError> {
        self.inner.enqueue_command(c).await
    }
    async fn get_command(&self, d: &str, c: &str) -> Result<Option<QueuedCommand>, StoreError> {
        self.inner.get_command(d, c).await
    }
    async fn list_commands(
        &self,
        d: &str,
        p: &PageRequest,
    ) -> Result<Page<QueuedCommand>, StoreError> {
        self.inner.list_commands(d, p).await
    }
    async fn create_profile(&self, p: &Profile) -> Result<(), StoreError> {
        self.inner.create_profile(p).await
    }
    async fn update_profile(&self, p: &Profile, v: u64) -> Result<(), StoreError> {
        self.inner.update_profile(p, v).await
    }
    async fn get_profile(&self, id: &str) -> Result<Option<Profile>, StoreError> {
        self.inner.get_profile(id).await
    }
    async fn list_profiles(&self) -> Result<Vec<Profile>, StoreError> {
        self.inner.list_profiles().await
    }
    async fn delete_profile(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.delete_profile(id).await
    }
    async fn create_group(&self, g: &Group) -> Result<(), StoreError> {
        self.inner.create_group(g).await
    }
    async fn get_group(&self, n: &str) -> Result<Option<Group>, StoreError> {
        self.inner.get_group(n).await
    }
    async fn list_groups(&self) -> Result<Vec<Group>, StoreError> {
        self.inner.list_groups().await
    }
    async fn delete_group(&self, n: &str) -> Result<bool, StoreError> {
        self.inner.delete_group(n).await
    }
    async fn list_group_devices(
        &self,
        g: &str,
        p: &PageRequest,
    ) -> Result<Page<String>, StoreError> {
        self.inner.list_group_devices(g, p).await
    }
    async fn list_profile_devices(
        &self,
        id: &str,
        p: &PageRequest,
    ) -> Result<Page<DeviceProfile>, StoreError> {
        self.inner.list_profile_devices(id, p).await
    }
}

/// A CA that is busy while `down` is set.
struct FlakyCa {
    inner: LocalCa,
    down: AtomicBool,
    /// Answers with a certificate for another DeviceID (as a CA that deduplicates by
    /// token would, given a token it saw for another request).
    confused: AtomicBool,
    /// Holds the next issue: says when it is reached, and waits to be let go (a CA that
    /// takes seconds, while other requests run).
    hold_next: std::sync::Mutex<Option<(Arc<Notify>, Arc<Notify>)>>,
}

#[async_trait]
impl CertificateAuthority for FlakyCa {
    async fn chain(&self) -> Result<std::sync::Arc<CaChain>, CaError> {
        self.inner.chain().await
    }
    async fn issue(&self, r: &IssueRequest<'_>) -> Result<IssuedCertificate, CaError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(CaError::Unavailable("rate exceeded".into()));
        }
        let held = self.hold_next.lock().unwrap().take();
        if let Some((reached, release)) = held {
            reached.notify_one();
            release.notified().await;
        }
        if self.confused.load(Ordering::SeqCst) {
            let other = IssueRequest {
                common_name: "SOMEONE-ELSES-DEVICE",
                ..*r
            };
            return self.inner.issue(&other).await;
        }
        self.inner.issue(r).await
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    state: AppState,
    store: Arc<FlakyStore>,
    ca: Arc<FlakyCa>,
    clock: Arc<ManualClock>,
}

const UPN: &str = "alice@example.com";
const PASSWORD: &str = "correct horse battery";

async fn harness() -> Harness {
    harness_with(PreferredAuth::OnPremise).await
}

async fn harness_with(auth_policy: PreferredAuth) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FlakyStore {
        inner: RedbStore::open(&dir.path().join("s.redb")).unwrap(),
        down: AtomicBool::new(false),
        reads_down: AtomicBool::new(false),
    });
    let ca = Arc::new(FlakyCa {
        inner: LocalCa::open_or_create(&dir.path().join("ca")).unwrap(),
        down: AtomicBool::new(false),
        confused: AtomicBool::new(false),
        hold_next: std::sync::Mutex::new(None),
    });
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let mut config =
        EnrollmentConfig::new("https://enterpriseenrollment.example.com".parse().unwrap());
    config.auth_policy = auth_policy;
    let state = AppState::new(
        config,
        store.clone(),
        ca.clone(),
        clock.clone(),
        vec![9; 32],
        AdminAuth::Bearer("t".into()),
    )
    .unwrap();
    store
        .create_user(&User {
            upn: UPN.into(),
            password_hash: hash_password(PASSWORD).unwrap(),
            created_at: OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
    Harness {
        _dir: dir,
        state,
        store,
        ca,
        clock,
    }
}

async fn call(
    state: &AppState,
    method: &str,
    path: &str,
    content_type: &str,
    body: String,
) -> HttpResponse {
    winmdm_e2e::inprocess::call(state, method, path, &[("content-type", content_type)], body).await
}

async fn enroll(h: &Harness, device: &EmulatedDevice, creds: &Credentials) -> HttpResponse {
    let csr = device.csr(CsrSignature::Sha256, CsrSubject::Windows);
    let ctx = messages::context_items(&device.device_id, &device.hw_dev_id, "Full");
    let msg = messages::request_security_token("urn:uuid:1", "https://e/x", creds, &csr, &ctx);
    call(
        &h.state,
        "POST",
        "/EnrollmentServer/Enrollment.svc",
        "application/soap+xml; charset=utf-8",
        msg,
    )
    .await
}

fn creds() -> Credentials {
    Credentials::Password {
        username: UPN.into(),
        password: PASSWORD.into(),
    }
}

#[tokio::test]
async fn store_outage_is_an_enrollment_server_fault_and_writes_nothing() {
    let h = harness().await;
    let d = EmulatedDevice::new();
    h.store.down.store(true, Ordering::SeqCst);
    let r = enroll(&h, &d, &creds()).await;
    assert_eq!(verify::fault_subcode(&r), "s:EnrollmentServer");
    assert!(r.text().contains("InMaintenance"));
    assert_eq!(h.store.get_device(&d.device_id).await.unwrap(), None);
    h.store.down.store(false, Ordering::SeqCst);
    verify::soap_ok(&enroll(&h, &d, &creds()).await);
    assert!(h.store.get_device(&d.device_id).await.unwrap().is_some());
}

#[tokio::test]
async fn ca_outage_is_an_enrollment_server_fault_and_writes_nothing() {
    let h = harness().await;
    let d = EmulatedDevice::new();
    h.ca.down.store(true, Ordering::SeqCst);
    let r = enroll(&h, &d, &creds()).await;
    assert_eq!(verify::fault_subcode(&r), "s:EnrollmentServer");
    assert!(r.text().contains("InMaintenance"));
    assert_eq!(h.store.get_device(&d.device_id).await.unwrap(), None);
}

async fn admin(h: &Harness, method: &str, path: &str, body: String) -> HttpResponse {
    winmdm_e2e::inprocess::call(
        &h.state,
        method,
        path,
        &[
            ("authorization", "Bearer t"),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await
}

/// An enrollment decided on a freed record, whose certificate takes a while, while
/// another user enrolls that DeviceID and is sent a command: it is refused at commit, and
/// leaves the other user's queue alone. It used to cancel that queue (as the freed
/// record's) before its own commit was refused.
#[tokio::test]
async fn an_enrollment_refused_at_commit_cancels_no_one_elses_commands() {
    let h = harness().await;
    let bob = "bob@example.com";
    h.store
        .create_user(&User {
            upn: bob.into(),
            password_hash: hash_password(PASSWORD).unwrap(),
            created_at: OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
    let d = EmulatedDevice::new();
    verify::soap_ok(&enroll(&h, &d, &creds()).await);
    let r = admin(
        &h,
        "DELETE",
        &format!("/admin/v1/devices/{}?force=true", d.device_id),
        String::new(),
    )
    .await;
    assert_eq!(r.json()["status"], "removed");

    let (reached, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    *h.ca.hold_next.lock().unwrap() = Some((reached.clone(), release.clone()));
    let alice = creds();
    let alice_again = enroll(&h, &d, &alice);
    let meanwhile = async {
        reached.notified().await;
        let bobs = EmulatedDevice::new().with_ids(&d.device_id, "BOBS-HW");
        let bob_creds = Credentials::Password {
            username: bob.into(),
            password: PASSWORD.into(),
        };
        verify::soap_ok(&enroll(&h, &bobs, &bob_creds).await);
        let r = admin(
            &h,
            "POST",
            &format!("/admin/v1/devices/{}/commands", d.device_id),
            serde_json::json!({"action": "reboot"}).to_string(),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text());
        release.notify_one();
        r.json()["id"].as_str().unwrap().to_owned()
    };
    let (refused, bobs_command) = tokio::join!(alice_again, meanwhile);
    assert_eq!(verify::fault_subcode(&refused), "s:Authorization");
    let cmd = h
        .store
        .get_command(&d.device_id, &bobs_command)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        cmd.state,
        winmdm_core::commands::CommandState::Pending,
        "{cmd:?}"
    );
    assert_eq!(
        h.store.get_device(&d.device_id).await.unwrap().unwrap().upn,
        bob
    );
}

/// A certificate the CA answers with is checked before anything is written: one for
/// another DeviceID is a server fault, and no record is made with it.
#[tokio::test]
async fn a_certificate_for_another_device_is_never_recorded() {
    let h = harness().await;
    let d = EmulatedDevice::new();
    h.ca.confused.store(true, Ordering::SeqCst);
    let r = enroll(&h, &d, &creds()).await;
    assert_eq!(
        verify::fault_subcode(&r),
        "s:EnrollmentServer",
        "{}",
        r.text()
    );
    assert_eq!(h.store.get_device(&d.device_id).await.unwrap(), None);
    h.ca.confused.store(false, Ordering::SeqCst);
    verify::soap_ok(&enroll(&h, &d, &creds()).await);
}

#[tokio::test]
async fn an_expired_sign_in_token_is_refused() {
    let h = harness_with(PreferredAuth::Federated).await;
    let form = messages::sign_in_form(
        "ms-app://windows.immersivecontrolpanel",
        UPN,
        "correct horse battery",
    );
    let page = call(
        &h.state,
        "POST",
        "/EnrollmentServer/Auth",
        "application/x-www-form-urlencoded",
        form,
    )
    .await;
    assert_eq!(page.status, 200);
    let html = page.text();
    let (_, token) = messages::autopost_fields(&html);

    h.clock.advance(time::Duration::minutes(16));
    let d = EmulatedDevice::new();
    let r = enroll(
        &h,
        &d,
        &Credentials::Federated {
            token: token.clone(),
        },
    )
    .await;
    assert_eq!(verify::fault_subcode(&r), "s:Authentication");
    assert_eq!(h.store.get_device(&d.device_id).await.unwrap(), None);
}

/// A SyncHdr Source no enrollment could have issued is refused like an unknown device
/// without touching the store: with the store's reads failing, it still gets 401, where a
/// real DeviceID gets 500. (DynamoDB refuses keys over 2,048 bytes: such a Source used to be
/// a storage failure, answered 500 and logged as one, for anyone who sent it.)
#[tokio::test]
async fn a_source_that_is_not_a_device_id_never_reaches_the_store() {
    let h = harness().await;
    let d = EmulatedDevice::new();
    let enrolled = winmdm_e2e::EnrolledDevice::from_response(
        EmulatedDevice::new().with_ids(&d.device_id, &d.hw_dev_id),
        &enroll(&h, &d, &creds()).await,
    );
    let mut c = enrolled.dm_client();
    c.start_session();
    let body = c.message(|c| c.package1("user", "HW"), true);
    let source = format!("<LocURI>{}</LocURI>", d.device_id);
    assert!(body.contains(&source));
    h.store.reads_down.store(true, Ordering::SeqCst);
    for (claim, expected) in [
        ("x".repeat(3000), "401"),
        (format!("{}/../x", d.device_id), "401"),
        ("a b".into(), "401"),
        (d.device_id.clone(), "500"),
    ] {
        let forged = body.replace(&source, &format!("<LocURI>{claim}</LocURI>"));
        let r = call(
            &h.state,
            "POST",
            "/ManagementServer/MDM.svc",
            "application/vnd.syncml.dm+xml",
            forged,
        )
        .await;
        assert_eq!(r.status, 200);
        let reply = winmdm_e2e::dm::Reply::parse(&r.body);
        assert_eq!(reply.header_status().data, expected, "{claim:.40}");
    }
}

#[tokio::test]
async fn store_outage_during_management_answers_500_and_loses_nothing() {
    let h = harness().await;
    let d = EmulatedDevice::new();
    let enrolled = winmdm_e2e::EnrolledDevice::from_response(
        EmulatedDevice::new().with_ids(&d.device_id, &d.hw_dev_id),
        &enroll(&h, &d, &creds()).await,
    );
    let queued = winmdm_e2e::inprocess::call(
        &h.state,
        "POST",
        &format!("/admin/v1/devices/{}/commands", d.device_id),
        &[("authorization", "Bearer t")],
        serde_json::json!({"action": "reboot"}).to_string(),
    )
    .await;
    assert_eq!(queued.status, 202);
    let id = queued.json()["id"].as_str().unwrap().to_owned();

    let mut c = enrolled.dm_client();
    c.start_session();
    let body = c.message(|c| c.package1("user", "HW"), true);
    h.store.down.store(true, Ordering::SeqCst);
    let r = call(
        &h.state,
        "POST",
        "/ManagementServer/MDM.svc",
        "application/vnd.syncml.dm+xml",
        body,
    )
    .await;
    assert_eq!(r.status, 200);
    let reply = winmdm_e2e::dm::Reply::parse(&r.body);
    assert_eq!(reply.header_status().data, "500");
    assert!(reply.item_commands().is_empty());
    let cmd = h
        .store
        .get_command(&d.device_id, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        cmd.state,
        winmdm_core::commands::CommandState::Pending,
        "not marked sent"
    );

    h.store.down.store(false, Ordering::SeqCst);
    c.start_session();
    let body = c.message(|c| c.package1("user", "HW"), true);
    let r = call(
        &h.state,
        "POST",
        "/ManagementServer/MDM.svc",
        "application/vnd.syncml.dm+xml",
        body,
    )
    .await;
    let reply = winmdm_e2e::dm::Reply::parse(&r.body);
    assert_eq!(reply.header_status().data, "200");
    assert_eq!(
        reply.item_commands().len(),
        1,
        "the command goes out once storage is back"
    );
}

#[tokio::test]
async fn management_rejects_wbxml_garbage_and_oversized_bodies() {
    let h = harness().await;
    let r = call(
        &h.state,
        "POST",
        "/ManagementServer/MDM.svc",
        "application/vnd.syncml.dm+wbxml",
        "x".into(),
    )
    .await;
    assert_eq!(r.status, 415);
    let r = call(
        &h.state,
        "POST",
        "/ManagementServer/MDM.svc",
        "application/vnd.syncml.dm+xml",
        "<nope/>".into(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("SyncML"));
    let r = call(
        &h.state,
        "GET",
        "/ManagementServer/MDM.svc",
        "",
        String::new(),
    )
    .await;
    assert_eq!(r.status, 405);
    let big = "x".repeat(1024 * 1024 + 1);
    let r = call(
        &h.state,
        "POST",
        "/ManagementServer/MDM.svc",
        "application/vnd.syncml.dm+xml",
        big,
    )
    .await;
    assert_eq!(r.status, 413);
}
