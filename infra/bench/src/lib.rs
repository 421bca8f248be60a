//! Support for the benchmarks: a store in memory, so management messages are measured
//! without storage latency ("handler time plus the store"), counting its calls.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use winmdm_core::commands::QueuedCommand;
use winmdm_core::model::{Device, Page, PageRequest, User};
use winmdm_core::profiles::{DeviceProfile, Group, Profile};
use winmdm_core::session::{ManagementSnapshot, ManagementUpdate, SessionState, SessionWrite};
use winmdm_core::store::{EnrollmentCommit, Store, StoreError};

/// Counts the CA calls of the CA it wraps.
pub struct CountingCa<C> {
    pub inner: C,
    pub issued: AtomicUsize,
}

#[async_trait]
impl<C: winmdm_core::ca::CertificateAuthority> winmdm_core::ca::CertificateAuthority
    for CountingCa<C>
{
    async fn chain(
        &self,
    ) -> Result<std::sync::Arc<winmdm_core::ca::CaChain>, winmdm_core::ca::CaError> {
        self.inner.chain().await
    }
    async fn issue(
        &self,
        r: &winmdm_core::ca::IssueRequest<'_>,
    ) -> Result<winmdm_core::ca::IssuedCertificate, winmdm_core::ca::CaError> {
        self.issued.fetch_add(1, Ordering::Relaxed);
        self.inner.issue(r).await
    }
}

/// Devices, sessions and commands in memory, with call counters (reads and writes).
#[derive(Default)]
pub struct MemStore {
    users: Mutex<HashMap<String, User>>,
    tokens: Mutex<std::collections::HashSet<String>>,
    devices: Mutex<HashMap<String, Device>>,
    /// Lower-case HWDevID → device id, as the DynamoDB store keeps a lookup item.
    hw_index: Mutex<HashMap<String, String>>,
    /// Blocked device id → its user, as the DynamoDB store keeps `UBLOCK#` items: the
    /// blocked-device check is a lookup, not a scan that slows as a benchmark adds devices.
    blocked: Mutex<HashMap<String, String>>,
    sessions: Mutex<HashMap<(String, String), SessionState>>,
    commands: Mutex<Vec<QueuedCommand>>,
    profiles: Mutex<Vec<Profile>>,
    /// Profile states by (device id, profile id), loaded with the device as DynamoDB does.
    device_profiles: Mutex<HashMap<(String, String), DeviceProfile>>,
    pub reads: AtomicUsize,
    pub writes: AtomicUsize,
}

impl MemStore {
    fn note_status(&self, d: &Device) {
        let mut blocked = self.blocked.lock().unwrap();
        if d.status == winmdm_core::model::DeviceStatus::Blocked {
            blocked.insert(d.id.clone(), d.upn.clone());
        } else {
            blocked.remove(&d.id);
        }
    }

    pub fn add_device(&self, d: Device) {
        self.note_status(&d);
        if let Some(hw) = &d.hw_dev_id {
            self.hw_index
                .lock()
                .unwrap()
                .insert(hw.to_ascii_lowercase(), d.id.clone());
        }
        self.devices.lock().unwrap().insert(d.id.clone(), d);
    }
    pub fn add_command(&self, c: QueuedCommand) {
        self.commands.lock().unwrap().push(c);
    }
    pub fn add_profile(&self, p: Profile) {
        self.profiles.lock().unwrap().push(p);
    }
    /// The device's profile states (for checking what a benchmark session did).
    pub fn device_profiles(&self, device_id: &str) -> Vec<DeviceProfile> {
        let mut v: Vec<DeviceProfile> = self
            .device_profiles
            .lock()
            .unwrap()
            .values()
            .filter(|p| p.device_id == device_id)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.profile_id.cmp(&b.profile_id));
        v
    }
    /// Forgets the device's sessions and profile states, as if it had never connected.
    pub fn forget_sessions_and_profiles(&self, device_id: &str) {
        self.sessions
            .lock()
            .unwrap()
            .retain(|(d, _), _| d != device_id);
        self.device_profiles
            .lock()
            .unwrap()
            .retain(|(d, _), _| d != device_id);
    }
    pub fn calls(&self) -> (usize, usize) {
        (
            self.reads.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
        )
    }
}

/// A management service over a [`MemStore`] holding one enrolled device, whose current
/// certificate is `cert` (for mTLS messages).
pub struct Managed {
    pub store: std::sync::Arc<MemStore>,
    pub service: winmdm_core::management::ManagementService,
    pub cert: Vec<u8>,
    pub device_id: String,
}

impl Managed {
    pub fn new(
        config: winmdm_core::management::ManagementConfig,
        ca: std::sync::Arc<dyn winmdm_core::ca::CertificateAuthority>,
        clock: std::sync::Arc<dyn winmdm_core::clock::Clock>,
        device: &winmdm_e2e::device::Device,
        cert: &[u8],
    ) -> Self {
        let store = std::sync::Arc::new(MemStore::default());
        let mut record =
            winmdm_e2e::conformance::device(&device.device_id, Some(&device.hw_dev_id));
        record.cert.thumbprint = winmdm_core::ca::thumbprint(cert);
        store.add_device(record);
        let service =
            winmdm_core::management::ManagementService::new(config, store.clone(), ca, clock);
        Self {
            store,
            service,
            cert: cert.to_vec(),
            device_id: device.device_id.clone(),
        }
    }
}

fn unused() -> StoreError {
    StoreError::Unavailable("not used by the benchmarks".into())
}

#[async_trait]
impl Store for MemStore {
    async fn create_user(&self, u: &User) -> Result<(), StoreError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.users.lock().unwrap().insert(u.upn.clone(), u.clone());
        Ok(())
    }
    async fn get_user(&self, upn: &str) -> Result<Option<User>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(self.users.lock().unwrap().get(upn).cloned())
    }
    async fn list_users(&self, _: &PageRequest) -> Result<Page<User>, StoreError> {
        Err(unused())
    }
    async fn delete_user(&self, _: &str) -> Result<bool, StoreError> {
        Err(unused())
    }
    async fn get_device(&self, id: &str) -> Result<Option<Device>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(self.devices.lock().unwrap().get(id).cloned())
    }
    async fn user_has_blocked_device(&self, upn: &str) -> Result<bool, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(self.blocked.lock().unwrap().values().any(|u| u == upn))
    }
    async fn get_device_by_hw_dev_id(&self, hw: &str) -> Result<Option<Device>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let id = self
            .hw_index
            .lock()
            .unwrap()
            .get(&hw.to_ascii_lowercase())
            .cloned();
        Ok(id.and_then(|id| self.devices.lock().unwrap().get(&id).cloned()))
    }
    async fn recent_failed_commands(
        &self,
        _: usize,
    ) -> Result<Vec<winmdm_core::commands::FailedCommandNote>, StoreError> {
        Err(unused())
    }
    async fn read_device_summaries(
        &self,
        _: &[winmdm_core::device_listing::ShardRead],
    ) -> Result<Vec<winmdm_core::device_listing::SummaryBatch>, StoreError> {
        Err(unused())
    }
    async fn read_counters(
        &self,
        ranges: &[winmdm_core::fleet_stats::KeyRange],
    ) -> Result<Vec<(String, i64)>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let _ = ranges;
        Ok(Vec::new())
    }
    async fn is_token_consumed(&self, id: &str) -> Result<bool, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(self.tokens.lock().unwrap().contains(id))
    }
    async fn commit_enrollment(&self, c: &EnrollmentCommit) -> Result<(), StoreError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = &c.token
            && !self.tokens.lock().unwrap().insert(t.id.clone())
        {
            return Err(StoreError::TokenReplayed);
        }
        self.add_device(c.device.clone());
        Ok(())
    }
    async fn load_management(
        &self,
        device_id: &str,
        session_id: &str,
    ) -> Result<Option<ManagementSnapshot>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let Some(device) = self.devices.lock().unwrap().get(device_id).cloned() else {
            return Ok(None);
        };
        let session = self
            .sessions
            .lock()
            .unwrap()
            .get(&(device_id.to_owned(), session_id.to_owned()))
            .cloned();
        let open_commands = self
            .commands
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.device_id == device_id && c.state.is_open())
            .cloned()
            .collect();
        let profiles = self.device_profiles(device_id);
        Ok(Some(ManagementSnapshot {
            device,
            session,
            open_commands,
            profiles,
        }))
    }
    async fn save_management(&self, u: &ManagementUpdate) -> Result<(), StoreError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        if let Some(d) = self.devices.lock().unwrap().get_mut(&u.device_id) {
            u.device
                .apply(d)
                .map_err(|e| StoreError::Conflict(e.to_string()))?;
            self.note_status(d);
        }
        match &u.session {
            SessionWrite::Keep => {}
            SessionWrite::Put(s) => {
                self.sessions
                    .lock()
                    .unwrap()
                    .insert((u.device_id.clone(), s.slot.clone()), s.as_ref().clone());
            }
            SessionWrite::Delete { slot } => {
                self.sessions
                    .lock()
                    .unwrap()
                    .remove(&(u.device_id.clone(), slot.clone()));
            }
        }
        let mut cmds = self.commands.lock().unwrap();
        for c in &u.commands {
            if let Some(existing) = cmds.iter_mut().find(|x| x.id == c.id) {
                *existing = c.clone();
            }
        }
        let mut states = self.device_profiles.lock().unwrap();
        for p in &u.profiles {
            states.insert((p.device_id.clone(), p.profile_id.clone()), p.clone());
        }
        Ok(())
    }
    async fn enqueue_command(&self, c: &QueuedCommand) -> Result<(), StoreError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.commands.lock().unwrap().push(c.clone());
        Ok(())
    }
    async fn get_command(&self, _: &str, _: &str) -> Result<Option<QueuedCommand>, StoreError> {
        Err(unused())
    }
    async fn list_commands(
        &self,
        _: &str,
        _: &PageRequest,
    ) -> Result<Page<QueuedCommand>, StoreError> {
        Err(unused())
    }
    async fn create_profile(&self, p: &Profile) -> Result<(), StoreError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.add_profile(p.clone());
        Ok(())
    }
    async fn update_profile(&self, _: &Profile, _: u64) -> Result<(), StoreError> {
        Err(unused())
    }
    async fn get_profile(&self, id: &str) -> Result<Option<Profile>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .profiles
            .lock()
            .unwrap()
            .iter()
            .find(|p| p.id == id)
            .cloned())
    }
    async fn list_profiles(&self) -> Result<Vec<Profile>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(self.profiles.lock().unwrap().clone())
    }
    async fn delete_profile(&self, _: &str) -> Result<bool, StoreError> {
        Err(unused())
    }
    async fn create_group(&self, _: &Group) -> Result<(), StoreError> {
        Err(unused())
    }
    async fn get_group(&self, _: &str) -> Result<Option<Group>, StoreError> {
        Err(unused())
    }
    async fn list_groups(&self) -> Result<Vec<Group>, StoreError> {
        Err(unused())
    }
    async fn delete_group(&self, _: &str) -> Result<bool, StoreError> {
        Err(unused())
    }
    async fn list_group_devices(
        &self,
        _: &str,
        _: &PageRequest,
    ) -> Result<Page<String>, StoreError> {
        Err(unused())
    }
    async fn list_profile_devices(
        &self,
        _: &str,
        _: &PageRequest,
    ) -> Result<Page<DeviceProfile>, StoreError> {
        Err(unused())
    }
}

/// A CA whose certificates are issued beforehand (by `inner`, in a benchmark's untimed
/// setup), so an enrollment can be timed without the CA ("handler time plus the CA").
/// Each is for one DeviceID, as the enrollment checks; issuing for an unprepared one fails.
pub struct PresignedCa {
    inner: std::sync::Arc<dyn winmdm_core::ca::CertificateAuthority>,
    ready: std::sync::Mutex<std::collections::HashMap<String, winmdm_core::ca::IssuedCertificate>>,
}

impl PresignedCa {
    pub fn new(inner: std::sync::Arc<dyn winmdm_core::ca::CertificateAuthority>) -> Self {
        Self {
            inner,
            ready: Default::default(),
        }
    }

    /// Issues the certificate the next request for `req.common_name` will be answered with.
    pub async fn prepare(&self, req: &winmdm_core::ca::IssueRequest<'_>) {
        let cert = self.inner.issue(req).await.expect("issued beforehand");
        self.ready
            .lock()
            .unwrap()
            .insert(req.common_name.to_owned(), cert);
    }
}

#[async_trait]
impl winmdm_core::ca::CertificateAuthority for PresignedCa {
    async fn chain(
        &self,
    ) -> Result<std::sync::Arc<winmdm_core::ca::CaChain>, winmdm_core::ca::CaError> {
        self.inner.chain().await
    }
    async fn issue(
        &self,
        req: &winmdm_core::ca::IssueRequest<'_>,
    ) -> Result<winmdm_core::ca::IssuedCertificate, winmdm_core::ca::CaError> {
        self.ready
            .lock()
            .unwrap()
            .remove(req.common_name)
            .ok_or_else(|| winmdm_core::ca::CaError::Internal("not prepared".into()))
    }
}
