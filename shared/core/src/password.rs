//! Password hashing with argon2id (RFC 9106 second recommended parameters, the argon2
//! crate's defaults), stored as PHC strings.
//!
//! One hash or verification costs about 15 ms of CPU and 19 MiB of memory. On an async
//! executor that is 15 ms during which no other request on that worker makes progress, so
//! the server runs them through a [`PasswordPool`]: on tokio's blocking threads, at most
//! as many at once as there are CPUs, with a short bounded queue behind them. When the
//! queue is full the caller is refused at once ([`Busy`]) instead of piling up work and
//! memory. The synchronous [`hash_password`] and [`verify_password`] are for code that
//! is not on an executor (tests, benchmarks, tools).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::rngs::OsRng;
use tokio::sync::Semaphore;

pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// A hash with the same parameters as real ones, for unknown users. Precomputed so the
/// first sign-in after a cold start does not pay for hashing it (see `print_dummy_phc`).
const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$Le6F3IXEVgk9Isxq4Wftiw$2Uj+RVHbYzd2YE3KwXKDbZA+iGqaGYFQf92QIe9OnGI";

/// Constant-effort check: an unknown user is checked against a dummy hash so response
/// time does not reveal which UPNs exist. Blocks for the whole argon2 run: on an async
/// executor use [`PasswordPool::verify`].
pub fn verify_password(password: &[u8], phc: Option<&str>) -> bool {
    let (hash, usable) = hash_to_check(phc);
    let ok = Argon2::default().verify_password(password, &hash).is_ok();
    ok && usable
}

/// The hash a check runs against, and whether a match counts. A user without a usable
/// hash — unknown, or recorded without a password (an Entra ID user, `!entra:<tenant>`) —
/// is checked against [`DUMMY_PHC`], so the time taken does not tell which UPNs exist or
/// which are Entra users.
fn hash_to_check(phc: Option<&str>) -> (PasswordHash<'_>, bool) {
    match phc.and_then(|p| PasswordHash::new(p).ok()) {
        Some(h) => (h, true),
        None => (
            PasswordHash::new(DUMMY_PHC).expect("the dummy hash parses"),
            false,
        ),
    }
}

/// Too many password checks are running and waiting: try again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks in progress")]
pub struct Busy;

/// What a [`PasswordPool`] has done, for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// argon2 runs in progress now.
    pub running: usize,
    /// The most that ever ran at once.
    pub peak_running: usize,
    /// Callers waiting for a slot now.
    pub waiting: usize,
    /// argon2 runs finished.
    pub completed: u64,
    /// Callers refused with [`Busy`].
    pub refused: u64,
}

#[derive(Debug, Default)]
struct Gauges {
    running: AtomicUsize,
    peak_running: AtomicUsize,
    waiting: AtomicUsize,
    completed: AtomicU64,
    refused: AtomicU64,
}

/// Runs argon2 off the async executor, at most `concurrency` at once, with at most
/// `max_waiting` callers queued behind them.
///
/// A slot is held by the blocking task itself, not by the caller's future: when a client
/// goes away mid-check the hash still runs to the end (tokio cannot stop a blocking
/// task), and its slot stays taken until it does, so the bound is on CPU actually in use.
///
/// On Lambda an execution environment serves one request at a time, so the bound matters
/// little there (the executor and the argon2 run share that one request anyway); it is
/// what keeps `winmdm-local`, which serves everything from one process, responsive.
#[derive(Debug, Clone)]
pub struct PasswordPool {
    permits: Arc<Semaphore>,
    concurrency: usize,
    max_waiting: usize,
    gauges: Arc<Gauges>,
}

impl Default for PasswordPool {
    /// One slot per CPU, and a queue sixteen times that long: a caller waits at most
    /// about 16 × 15 ms, and a burst of sign-ins (a room enrolling at once) is queued
    /// rather than refused. Waiting costs only the request itself; argon2's memory is
    /// taken only by the runs.
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(cpus, cpus * 16)
    }
}

impl PasswordPool {
    pub fn new(concurrency: usize, max_waiting: usize) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            max_waiting,
            gauges: Arc::default(),
        }
    }

    /// How many argon2 runs may go at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    pub fn stats(&self) -> PoolStats {
        let g = &self.gauges;
        PoolStats {
            running: g.running.load(Ordering::Relaxed),
            peak_running: g.peak_running.load(Ordering::Relaxed),
            waiting: g.waiting.load(Ordering::Relaxed),
            completed: g.completed.load(Ordering::Relaxed),
            refused: g.refused.load(Ordering::Relaxed),
        }
    }

    /// [`verify_password`] on a blocking thread, with the same constant effort for
    /// unknown users (`phc` = `None`).
    pub async fn verify(&self, password: Vec<u8>, phc: Option<String>) -> Result<bool, Busy> {
        self.run(move || verify_password(&password, phc.as_deref()))
            .await
    }

    /// [`hash_password`] on a blocking thread.
    pub async fn hash(&self, password: String) -> Result<Result<String, String>, Busy> {
        self.run(move || hash_password(&password)).await
    }

    async fn run<T, F>(&self, work: F) -> Result<T, Busy>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let g = &self.gauges;
                if g.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
                    g.waiting.fetch_sub(1, Ordering::AcqRel);
                    g.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(Busy);
                }
                // Leaves the queue however this wait ends, including the caller going away.
                struct Waiting<'a>(&'a AtomicUsize);
                impl Drop for Waiting<'_> {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::AcqRel);
                    }
                }
                let _waiting = Waiting(&g.waiting);
                self.permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| Busy)?
            }
        };
        let gauges = self.gauges.clone();
        let task = tokio::task::spawn_blocking(move || {
            let now = gauges.running.fetch_add(1, Ordering::AcqRel) + 1;
            gauges.peak_running.fetch_max(now, Ordering::AcqRel);
            let out = work();
            gauges.running.fetch_sub(1, Ordering::AcqRel);
            gauges.completed.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            out
        });
        match task.await {
            Ok(out) => Ok(out),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down.
            Err(_) => Err(Busy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Entra user's record (no password) and an unreadable hash cost the same argon2
    /// run as a real check: they used to return at once, telling Entra-recorded UPNs
    /// apart from unknown ones by response time.
    #[test]
    fn users_without_a_usable_hash_are_checked_against_the_dummy() {
        for phc in [
            None,
            Some("!entra:7f3c1d2e"),
            Some(""),
            Some("not a PHC string"),
        ] {
            let (hash, usable) = hash_to_check(phc);
            assert!(!usable, "{phc:?}");
            assert_eq!(hash.to_string(), DUMMY_PHC, "{phc:?}");
            assert!(!verify_password(b"anything", phc));
        }
        let real = hash_password("pw").unwrap();
        assert!(hash_to_check(Some(&real)).1);
        assert!(verify_password(b"pw", Some(&real)));
    }

    #[test]
    fn round_trip() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(b"correct horse", Some(&h)));
        assert!(!verify_password(b"wrong", Some(&h)));
        assert!(!verify_password(b"winmdm-dummy-password", None));
        // The dummy hash is a valid hash with the current parameters.
        assert!(verify_password(b"winmdm-dummy-password", Some(DUMMY_PHC)));
        assert_eq!(
            PasswordHash::new(DUMMY_PHC).unwrap().params.to_string(),
            PasswordHash::new(&h).unwrap().params.to_string()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_pool_verifies_off_the_executor() {
        let pool = PasswordPool::new(2, 8);
        let h = pool.hash("correct horse".into()).await.unwrap().unwrap();
        assert_eq!(
            pool.verify(b"correct horse".to_vec(), Some(h.clone()))
                .await,
            Ok(true)
        );
        assert_eq!(pool.verify(b"wrong".to_vec(), Some(h)).await, Ok(false));
        // Unknown users: the dummy hash is checked, and never matches.
        assert_eq!(
            pool.verify(b"winmdm-dummy-password".to_vec(), None).await,
            Ok(false)
        );
        let s = pool.stats();
        assert_eq!((s.completed, s.running, s.waiting), (4, 0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_pool_bounds_running_and_refuses_past_its_queue() {
        // 1 running + 2 waiting; everything beyond is refused without hashing.
        let pool = PasswordPool::new(1, 2);
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Arc::new(std::sync::Mutex::new(hold));
        let blocker = {
            let pool = pool.clone();
            let hold = hold.clone();
            tokio::spawn(
                async move { pool.run(move || hold.lock().unwrap().recv().unwrap()).await },
            )
        };
        while pool.stats().running < 1 {
            tokio::task::yield_now().await;
        }
        let queued: Vec<_> = (0..2)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.verify(b"x".to_vec(), None).await })
            })
            .collect();
        while pool.stats().waiting < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.verify(b"x".to_vec(), None).await, Err(Busy));
        assert_eq!(pool.stats().refused, 1);
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        for q in queued {
            assert_eq!(q.await.unwrap(), Ok(false));
        }
        let s = pool.stats();
        assert_eq!(s.peak_running, 1);
        assert_eq!((s.running, s.waiting, s.completed), (0, 0, 3));
    }
}

#[cfg(test)]
mod dummy {
    #[test]
    #[ignore = "prints a fresh dummy hash for DUMMY_PHC"]
    fn print_dummy_phc() {
        println!("{}", super::hash_password("winmdm-dummy-password").unwrap());
    }
}
