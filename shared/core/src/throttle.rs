//! Limits on password guessing: failed sign-ins per UPN and per client address, with
//! exponential backoff.
//!
//! Every password check (the federated login page, the on-premise UsernameToken in XCEP
//! and WSTEP) goes through [`GuessLimiter::begin`] before argon2 runs. A key (the UPN, and
//! the client address when known) gets [`Backoff::free_failures`] failures, then has to
//! wait [`Backoff::first_wait`] before the next attempt, twice as long after each further
//! failure, up to [`Backoff::max_wait`]. A refused attempt costs no argon2 and does not
//! lengthen the wait. A correct password clears the UPN's record; it does not clear the
//! address's (one valid account must not buy an address more guesses at others).
//!
//! An attempt is counted while it runs: once a key has failed, no more attempts may be in
//! flight at once than it has failures left, so a burst of concurrent guesses cannot all
//! slip past a check that only looks at finished ones. A key that has never failed is not
//! limited in concurrency (one account enrolling many devices at once signs in many times
//! at once); such a burst is bounded by the argon2 pool's queue instead.
//!
//! Memory is fixed: at most [`LimiterConfig::max_keys`] UPNs and as many addresses are
//! tracked, the least recently used dropped first, and keys are 16 bytes (a hash of the
//! UPN; an IPv4 address, or an IPv6 /64 since one host commonly holds a whole /64). Only
//! keys with failures or attempts in flight are kept, so legitimate traffic does not use
//! the space.
//!
//! Honest limits:
//!
//! - The limiter lives in process memory. `winmdm-local` has one; on Lambda every
//!   execution environment of every function (login page, XCEP, WSTEP) has its own, so an
//!   attacker spread over N warm environments gets N times the allowance, and a cold
//!   start forgets. The fleet-wide layer is API Gateway's route throttling (and the
//!   functions' reserved concurrency, which caps N); this limiter bounds what each
//!   environment will spend on one UPN or one address.
//! - A store-backed counter (a DynamoDB item per UPN and address, updated conditionally)
//!   would be fleet-wide, but is not used: every failed guess would become a store write
//!   the attacker pays nothing for, adding latency and cost to exactly the requests we
//!   want to be cheap, and the [`crate::store::Store`] trait and both adapters would grow
//!   a counter API. Worth adding if per-UPN guess rates across the fleet must be bounded
//!   tighter than gateway throttling allows.
//! - Per-UPN backoff lets anyone who knows a UPN slow that user's sign-in down (to one
//!   attempt per [`Backoff::max_wait`] at worst). That is the usual trade against
//!   unbounded guessing; the wait is bounded and a success clears it.
//! - A flood of distinct UPNs from many addresses can push a UPN out of the table and so
//!   reset its backoff; from one address the address key stops the flood first.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// How one kind of key is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Failures allowed before the first wait.
    pub free_failures: u32,
    /// The wait after the last free failure; each further failure doubles it.
    pub first_wait: Duration,
    /// The longest wait.
    pub max_wait: Duration,
    /// A key whose last failure is this old starts over.
    pub forget_after: Duration,
}

impl Backoff {
    /// The wait after `failures` failures, if any.
    fn wait_after(&self, failures: u32) -> Option<Duration> {
        let over = failures.checked_sub(self.free_failures.max(1))?;
        let factor = 1i32 << over.min(30);
        Some(
            self.first_wait
                .checked_mul(factor)
                .unwrap_or(self.max_wait)
                .min(self.max_wait),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterConfig {
    pub per_upn: Backoff,
    /// Laxer than per UPN: many users may share an address (an office behind NAT).
    pub per_address: Backoff,
    /// UPNs tracked at most, and as many addresses.
    pub max_keys: usize,
}

impl Default for LimiterConfig {
    /// 5 free failures per UPN and 20 per address, then 1 s doubling to 15 min; forgotten
    /// an hour after the last failure; 4096 UPNs and 4096 addresses (a few hundred KiB).
    fn default() -> Self {
        let backoff = |free_failures| Backoff {
            free_failures,
            first_wait: Duration::seconds(1),
            max_wait: Duration::minutes(15),
            forget_after: Duration::hours(1),
        };
        Self {
            per_upn: backoff(5),
            per_address: backoff(20),
            max_keys: 4096,
        }
    }
}

/// An attempt refused without checking the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed sign-in attempts; retry in {retry_after}")]
pub struct Throttled {
    pub retry_after: Duration,
}

impl Throttled {
    /// Whole seconds to wait, at least 1 (for `Retry-After`).
    pub fn retry_after_secs(&self) -> u64 {
        let s = self.retry_after.whole_seconds();
        let s = if self.retry_after > Duration::seconds(s) {
            s + 1
        } else {
            s
        };
        s.max(1) as u64
    }
}

type Key = [u8; 16];

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    in_flight: u32,
    blocked_until: Option<OffsetDateTime>,
    last_failure: Option<OffsetDateTime>,
    tick: u64,
}

/// A map with a size cap that drops the least recently touched entry.
#[derive(Debug)]
struct Table {
    map: HashMap<Key, Entry>,
    order: BTreeMap<u64, Key>,
    cap: usize,
}

impl Table {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: BTreeMap::new(),
            cap: cap.max(1),
        }
    }

    fn get_mut(&mut self, key: &Key) -> Option<&mut Entry> {
        self.map.get_mut(key)
    }

    /// Moves `key` to the most recently used end.
    fn touch(&mut self, key: &Key, tick: u64) {
        if let Some(e) = self.map.get_mut(key) {
            self.order.remove(&e.tick);
            e.tick = tick;
            self.order.insert(tick, *key);
        }
    }

    fn get_or_insert(&mut self, key: &Key, tick: u64) -> &mut Entry {
        if !self.map.contains_key(key) {
            while self.map.len() >= self.cap {
                let Some((_, oldest)) = self.order.pop_first() else {
                    break;
                };
                self.map.remove(&oldest);
            }
            self.map.insert(
                *key,
                Entry {
                    failures: 0,
                    in_flight: 0,
                    blocked_until: None,
                    last_failure: None,
                    tick,
                },
            );
            self.order.insert(tick, *key);
        } else {
            self.touch(key, tick);
        }
        self.map.get_mut(key).expect("just inserted")
    }

    fn remove(&mut self, key: &Key) {
        if let Some(e) = self.map.remove(key) {
            self.order.remove(&e.tick);
        }
    }

    /// Drops an entry that holds nothing worth remembering.
    fn remove_if_idle(&mut self, key: &Key) {
        if self
            .map
            .get(key)
            .is_some_and(|e| e.failures == 0 && e.in_flight == 0)
        {
            self.remove(key);
        }
    }
}

#[derive(Debug)]
struct Tables {
    upns: Table,
    addrs: Table,
    tick: u64,
}

impl Tables {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }
}

/// Whether `e` may start an attempt now; forgets old failures first.
fn admit(e: &mut Entry, b: &Backoff, now: OffsetDateTime) -> Result<(), Duration> {
    if e.in_flight == 0
        && e.last_failure
            .is_some_and(|last| now - last >= b.forget_after)
    {
        e.failures = 0;
        e.blocked_until = None;
        e.last_failure = None;
    }
    if let Some(until) = e.blocked_until
        && until > now
    {
        return Err(until - now);
    }
    if e.failures > 0 && e.in_flight > 0 && e.failures + e.in_flight >= b.free_failures {
        return Err(b.first_wait);
    }
    Ok(())
}

fn fail(e: &mut Entry, b: &Backoff, now: OffsetDateTime) {
    e.failures = e.failures.saturating_add(1);
    e.last_failure = Some(now);
    if let Some(wait) = b.wait_after(e.failures) {
        e.blocked_until = Some(now + wait);
    }
}

/// The limiter; cheap to share (`Arc` inside).
#[derive(Debug, Clone)]
pub struct GuessLimiter {
    tables: Arc<Mutex<Tables>>,
    config: LimiterConfig,
}

impl Default for GuessLimiter {
    fn default() -> Self {
        Self::new(LimiterConfig::default())
    }
}

impl GuessLimiter {
    pub fn new(config: LimiterConfig) -> Self {
        Self {
            tables: Arc::new(Mutex::new(Tables {
                upns: Table::new(config.max_keys),
                addrs: Table::new(config.max_keys),
                tick: 0,
            })),
            config,
        }
    }

    pub fn config(&self) -> &LimiterConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // The tables are consistent after every statement; a panic elsewhere leaves
        // nothing half-done worth refusing service over.
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks to check a password for `upn` (normalized) from `client`. Refused while
    /// either key is waiting out its backoff; otherwise the attempt is counted as in
    /// flight until settled with [`Attempt::succeeded`] or [`Attempt::failed`] (or
    /// dropped, for an attempt that never got a verdict: a store error, a busy argon2
    /// pool, a client that went away).
    pub fn begin(
        &self,
        upn: &str,
        client: Option<IpAddr>,
        now: OffsetDateTime,
    ) -> Result<Attempt, Throttled> {
        let upn_key = upn_key(upn);
        let addr_key = client.map(addr_key);
        let mut t = self.lock();
        let tick = t.next_tick();
        // Check both before counting either.
        let mut wait = Duration::ZERO;
        if let Some(e) = t.upns.get_mut(&upn_key)
            && let Err(w) = admit(e, &self.config.per_upn, now)
        {
            wait = wait.max(w);
        }
        if let Some(k) = &addr_key
            && let Some(e) = t.addrs.get_mut(k)
            && let Err(w) = admit(e, &self.config.per_address, now)
        {
            wait = wait.max(w);
        }
        if wait > Duration::ZERO {
            // Keep hammered keys resident.
            t.upns.touch(&upn_key, tick);
            if let Some(k) = &addr_key {
                t.addrs.touch(k, tick);
            }
            return Err(Throttled { retry_after: wait });
        }
        t.upns.get_or_insert(&upn_key, tick).in_flight += 1;
        if let Some(k) = &addr_key {
            t.addrs.get_or_insert(k, tick).in_flight += 1;
        }
        Ok(Attempt {
            limiter: self.clone(),
            upn: upn_key,
            addr: addr_key,
            settled: false,
        })
    }

    /// UPNs and addresses tracked now.
    pub fn tracked(&self) -> (usize, usize) {
        let t = self.lock();
        (t.upns.map.len(), t.addrs.map.len())
    }

    fn settle(&self, upn: &Key, addr: Option<&Key>, outcome: Outcome) {
        let mut t = self.lock();
        let tick = t.next_tick();
        let cfg = &self.config;
        if let Some(e) = t.upns.get_mut(upn) {
            e.in_flight = e.in_flight.saturating_sub(1);
            match outcome {
                Outcome::Success => {
                    e.failures = 0;
                    e.blocked_until = None;
                    e.last_failure = None;
                }
                Outcome::Failure(now) => fail(e, &cfg.per_upn, now),
                Outcome::NoVerdict => {}
            }
            t.upns.touch(upn, tick);
            t.upns.remove_if_idle(upn);
        }
        if let Some(k) = addr
            && let Some(e) = t.addrs.get_mut(k)
        {
            e.in_flight = e.in_flight.saturating_sub(1);
            if let Outcome::Failure(now) = outcome {
                fail(e, &cfg.per_address, now);
            }
            t.addrs.touch(k, tick);
            t.addrs.remove_if_idle(k);
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Success,
    Failure(OffsetDateTime),
    NoVerdict,
}

/// A password check admitted by [`GuessLimiter::begin`].
#[derive(Debug)]
#[must_use = "settle the attempt with succeeded() or failed()"]
pub struct Attempt {
    limiter: GuessLimiter,
    upn: Key,
    addr: Option<Key>,
    settled: bool,
}

impl Attempt {
    /// The password was right: the UPN starts over.
    pub fn succeeded(mut self) {
        self.settled = true;
        self.limiter
            .settle(&self.upn, self.addr.as_ref(), Outcome::Success);
    }

    /// The password (or the user) was wrong.
    pub fn failed(mut self, now: OffsetDateTime) {
        self.settled = true;
        self.limiter
            .settle(&self.upn, self.addr.as_ref(), Outcome::Failure(now));
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.settled {
            self.limiter
                .settle(&self.upn, self.addr.as_ref(), Outcome::NoVerdict);
        }
    }
}

fn upn_key(upn: &str) -> Key {
    let d = Sha256::digest(upn.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

/// IPv4 as its mapped IPv6 form; IPv6 cut to its /64.
fn addr_key(ip: IpAddr) -> Key {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => {
            let mut k = v6.octets();
            k[8..].fill(0);
            k
        }
    }
}

tokio::task_local! {
    static CLIENT_ADDR: Option<IpAddr>;
}

/// Runs `f` with `client` as the address [`client_addr`] reports: how the HTTP layer tells
/// the XCEP and WSTEP password checks who is calling without threading it through every
/// signature between the endpoint and the check.
pub async fn with_client_addr<F: std::future::Future>(client: Option<IpAddr>, f: F) -> F::Output {
    CLIENT_ADDR.scope(client, f).await
}

/// The calling client's address, inside [`with_client_addr`]; `None` elsewhere or when
/// the address is not known.
pub fn client_addr() -> Option<IpAddr> {
    CLIENT_ADDR.try_with(|a| *a).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::days(20_000)
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn throttle_backs_off_per_upn_and_a_success_clears_it() {
        let l = GuessLimiter::default();
        let now = t0();
        for _ in 0..5 {
            l.begin("a@x", ip("192.0.2.1"), now).unwrap().failed(now);
        }
        let t = l.begin("a@x", ip("192.0.2.2"), now).unwrap_err();
        assert_eq!(t.retry_after, Duration::seconds(1));
        assert_eq!(t.retry_after_secs(), 1);
        // Refusals do not lengthen the wait; other UPNs are unaffected.
        let _ = l.begin("a@x", None, now).unwrap_err();
        l.begin("b@x", None, now).unwrap().succeeded();
        // Each further failure doubles the wait, up to 15 minutes.
        let (mut now, mut wait) = (now, t.retry_after);
        let mut waits = Vec::new();
        for _ in 0..12 {
            now += wait;
            l.begin("a@x", None, now).unwrap().failed(now);
            wait = l.begin("a@x", None, now).unwrap_err().retry_after;
            waits.push(wait.whole_seconds());
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900]);
        now += Duration::minutes(15);
        l.begin("a@x", None, now).unwrap().succeeded();
        for _ in 0..5 {
            l.begin("a@x", None, now).unwrap().failed(now);
        }
        assert!(l.begin("a@x", None, now).is_err());
        assert_eq!(l.tracked(), (1, 1), "b@x left no trace");
    }

    #[test]
    fn throttle_limits_an_address_across_upns_and_forgets_after_an_hour() {
        let l = GuessLimiter::default();
        let now = t0();
        for i in 0..20 {
            l.begin(&format!("u{i}@x"), ip("2001:db8::1"), now)
                .unwrap()
                .failed(now);
        }
        // The same /64, another UPN: refused. Another address: fine.
        assert!(l.begin("new@x", ip("2001:db8::ffff"), now).is_err());
        l.begin("new@x", ip("2001:db8:1::1"), now)
            .unwrap()
            .succeeded();
        // A success does not clear the address.
        let later = now + Duration::seconds(1);
        l.begin("v@x", ip("2001:db8::1"), later)
            .unwrap()
            .succeeded();
        l.begin("w@x", ip("2001:db8::1"), later)
            .unwrap()
            .failed(later);
        assert!(l.begin("w2@x", ip("2001:db8::1"), later).is_err());
        // IPv4 and its mapped form are one key.
        for i in 0..20 {
            l.begin(&format!("m{i}@x"), ip("198.51.100.7"), now)
                .unwrap()
                .failed(now);
        }
        assert!(l.begin("z@x", ip("::ffff:198.51.100.7"), now).is_err());
        let hour = now + Duration::hours(1) + Duration::seconds(2);
        l.begin("w3@x", ip("2001:db8::1"), hour)
            .unwrap()
            .failed(hour);
        assert!(l.begin("w4@x", ip("2001:db8::1"), hour).is_ok());
    }

    #[test]
    fn throttle_counts_attempts_in_flight_once_a_key_has_failed() {
        let l = GuessLimiter::default();
        let now = t0();
        // Never failed: any number at once (one account enrolling many devices).
        let many: Vec<_> = (0..10)
            .map(|_| l.begin("a@x", None, now).unwrap())
            .collect();
        for a in many {
            a.succeeded();
        }
        l.begin("a@x", None, now).unwrap().failed(now);
        let held: Vec<_> = (0..4).map(|_| l.begin("a@x", None, now).unwrap()).collect();
        assert!(
            l.begin("a@x", None, now).is_err(),
            "1 failure + 4 in flight"
        );
        // An attempt without a verdict frees its place and counts nothing.
        drop(held);
        for _ in 0..4 {
            l.begin("a@x", None, now).unwrap().failed(now);
        }
        assert!(l.begin("a@x", None, now).is_err());
    }

    #[test]
    fn throttle_memory_is_bounded_and_drops_the_least_recently_used() {
        let l = GuessLimiter::new(LimiterConfig {
            max_keys: 3,
            ..LimiterConfig::default()
        });
        let now = t0();
        for u in ["a", "b", "c", "d"] {
            l.begin(u, None, now).unwrap().failed(now);
        }
        assert_eq!(l.tracked(), (3, 0));
        for _ in 0..4 {
            l.begin("b", None, now).unwrap().failed(now);
        }
        assert!(l.begin("b", None, now).is_err());
        for u in ["e", "f"] {
            l.begin(u, None, now).unwrap().failed(now);
        }
        // "b" was touched last before e and f came in; "c" and "d" went.
        assert!(l.begin("b", None, now).is_err());
        assert_eq!(l.tracked(), (3, 0));
    }

    #[tokio::test]
    async fn client_addr_is_scoped_to_the_request() {
        assert_eq!(client_addr(), None);
        let inside = with_client_addr(ip("192.0.2.9"), async { client_addr() }).await;
        assert_eq!(inside, ip("192.0.2.9"));
        assert_eq!(client_addr(), None);
    }
}
