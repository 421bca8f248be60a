//! A value read from the store and kept for a while by one process: the profile catalog
//! every profile message needs, so that a fleet's sessions read it about once per TTL
//! rather than once each (sessions that miss together, at its expiry, each read: there is
//! no single flight; on Lambda an instance serves one request at a time anyway).
//!
//! An admin change made in the same process (winmdm-local) invalidates it at once. A read
//! that was already under way when that happened may have seen the store before the
//! change: it still answers its own caller, but it is not kept — otherwise the stale
//! catalog would be cached as fresh for a whole TTL, and the change would reach no device
//! until it ran out. Across processes (the Lambda functions) and where the store's listing
//! trails its writes (DynamoDB's index), the TTL is what bounds how stale a catalog gets.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) struct CatalogCache<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    /// Bumped by every invalidation: a read keeps its result only if none came between.
    generation: u64,
    /// The value, and when the read that produced it began.
    cached: Option<(Instant, Arc<T>)>,
}

impl<T> CatalogCache<T> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                generation: 0,
                cached: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<T>> {
        // The lock guards two plain fields updated in one statement each: a panic
        // elsewhere cannot leave them half-written, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the value; reads under way when this is called are not kept.
    pub(crate) fn invalidate(&self) {
        let mut s = self.state();
        s.generation = s.generation.wrapping_add(1);
        s.cached = None;
    }

    /// The value if it was read less than `ttl` ago, else `read()`'s (kept unless the
    /// cache was invalidated while it ran).
    pub(crate) async fn get<E, F, Fut>(&self, ttl: Duration, read: F) -> Result<Arc<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let generation = {
            let s = self.state();
            if let Some((at, value)) = &s.cached
                && at.elapsed() < ttl
            {
                return Ok(value.clone());
            }
            s.generation
        };
        let started = Instant::now();
        let fresh = Arc::new(read().await?);
        let mut s = self.state();
        // Not over a newer read's value (two reads that overlapped), nor after an
        // invalidation.
        let newer = s.cached.as_ref().is_some_and(|(at, _)| *at > started);
        if s.generation == generation && !newer {
            s.cached = Some((started, fresh.clone()));
        }
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn a_value_is_read_once_per_ttl_and_again_after_invalidation() {
        let cache = CatalogCache::new();
        let reads = std::sync::atomic::AtomicUsize::new(0);
        let read = || async {
            let n = reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, ()>(vec![n])
        };
        assert_eq!(*cache.get(TTL, read).await.unwrap(), vec![0]);
        assert_eq!(*cache.get(TTL, read).await.unwrap(), vec![0], "cached");
        cache.invalidate();
        assert_eq!(*cache.get(TTL, read).await.unwrap(), vec![1], "read again");
        assert_eq!(
            *cache.get(Duration::ZERO, read).await.unwrap(),
            vec![2],
            "expired"
        );
    }

    type Held = tokio::task::JoinHandle<Result<Arc<&'static str>, ()>>;

    /// Starts a read of `value` that holds until the returned sender fires; returns once
    /// the read is under way.
    async fn held_read(
        cache: &Arc<CatalogCache<&'static str>>,
        ttl: Duration,
        value: &'static str,
    ) -> (Held, tokio::sync::oneshot::Sender<()>) {
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let cache = cache.clone();
        let read = tokio::spawn(async move {
            cache
                .get(ttl, || async move {
                    started_tx.send(()).unwrap();
                    wait.await.unwrap();
                    Ok(value)
                })
                .await
        });
        started.await.unwrap();
        (read, release)
    }

    async fn read_now(
        cache: &CatalogCache<&'static str>,
        ttl: Duration,
        value: &'static str,
    ) -> &'static str {
        *cache
            .get(ttl, || async move { Ok::<_, ()>(value) })
            .await
            .unwrap()
    }

    /// The race: a read starts, an admin change lands and invalidates the cache, then the
    /// read (which saw the store before the change) finishes. Its caller gets it, but the
    /// next caller must read the store again rather than get the stale value for a TTL.
    #[tokio::test]
    async fn a_read_overtaken_by_an_invalidation_is_not_kept() {
        let cache = Arc::new(CatalogCache::new());
        let (slow, release) = held_read(&cache, TTL, "before the change").await;
        cache.invalidate();
        release.send(()).unwrap();
        assert_eq!(*slow.await.unwrap().unwrap(), "before the change");
        assert_eq!(
            read_now(&cache, TTL, "after the change").await,
            "after the change"
        );
    }

    /// Two reads overlap: the one that started later finishes first. The earlier one,
    /// finishing last, must not replace the newer value.
    #[tokio::test]
    async fn an_older_read_finishing_last_does_not_replace_a_newer_one() {
        let cache = Arc::new(CatalogCache::new());
        let (older, release) = held_read(&cache, Duration::ZERO, "older").await;
        assert_eq!(read_now(&cache, Duration::ZERO, "newer").await, "newer");
        release.send(()).unwrap();
        assert_eq!(*older.await.unwrap().unwrap(), "older");
        assert_eq!(
            read_now(&cache, TTL, "read again").await,
            "newer",
            "the newer read's value is the one kept"
        );
    }

    #[tokio::test]
    async fn a_failed_read_is_not_kept() {
        let cache = CatalogCache::<u8>::new();
        assert_eq!(cache.get(TTL, || async { Err("down") }).await, Err("down"));
        assert_eq!(
            *cache.get(TTL, || async { Ok::<_, &str>(7) }).await.unwrap(),
            7
        );
    }
}
