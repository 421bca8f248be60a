//! Group commit for the embedded store: writes that arrive together share one
//! transaction and one fsync.
//!
//! redb allows one write transaction at a time and makes a commit durable with an fsync,
//! so committing each management message on its own queues every concurrent session
//! behind every other one's commit and fsync (and the CPU idles while it waits). Here a
//! write is a closure over a write transaction, sent to the store's one writer thread.
//! The writer takes every write queued (up to [`MAX_BATCH`]), runs them in order in one
//! transaction, commits it durably, and answers each caller; writes that arrive while it
//! commits make the next batch. Alone, a write costs what it did before (its transaction,
//! one fsync); under load one fsync covers a whole batch.
//!
//! One thread rather than "the first caller leads": a caller only queues its write and
//! awaits its answer, so no executor thread blocks, and a batch wakes exactly its own
//! callers (with a leader, every waiter woke on every commit to see whether it was its
//! own: on 2 cores that thundering herd cost more than the writes).
//!
//! The writes of a batch run one after the other, each seeing the ones before it: the
//! same as committing them one at a time in that order. If one of them fails, the batch's
//! transaction is dropped (nothing of it is written) and each write of the batch is run
//! again on its own transaction, so a failure stays the failing caller's. That is why a
//! write is `Fn`: it may run twice, and must depend only on what it captured and read.
//!
//! ⚠ A caller is answered only after its write is durable. Answering before the fsync
//! would make this faster and would lose acknowledged enrollments and command results on
//! a crash: do not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::{Database, Durability, ReadTransaction, WriteTransaction};
use tokio::sync::{mpsc, oneshot};
use winmdm_core::store::StoreError;

/// Writes run in one transaction at most: bounds a batch's latency and memory.
pub(crate) const MAX_BATCH: usize = 128;
/// Writes waiting for the writer at most; a caller beyond it waits to queue.
const QUEUE: usize = 1024;

/// One queued write: runs against a transaction and keeps its own result.
type Run = Box<dyn Fn(&WriteTransaction) -> Result<(), StoreError> + Send + Sync>;

struct Job {
    run: Run,
    /// Answered once the write's transaction is durable (or failed).
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The database with its writer thread.
pub(crate) struct Db {
    db: Arc<Database>,
    /// `None` only while dropping: closing it stops the writer.
    queue: Option<mpsc::Sender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Durable commits made, for the benchmarks: writes / flushes is the batch size.
    flushes: Arc<AtomicU64>,
}

const POISONED: &str = "a write's result slot is poisoned by an earlier panic";
const STOPPED: &str = "the store's writer has stopped";

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl Db {
    pub(crate) fn new(db: Database) -> Self {
        let db = Arc::new(db);
        let flushes = Arc::new(AtomicU64::new(0));
        let (queue, jobs) = mpsc::channel(QUEUE);
        let writer = {
            let (db, flushes) = (db.clone(), flushes.clone());
            std::thread::Builder::new()
                .name("winmdm-store-writer".into())
                .spawn(move || write_batches(&db, jobs, &flushes))
                .expect("the store's writer thread starts")
        };
        Self {
            db,
            queue: Some(queue),
            writer: Some(writer),
            flushes,
        }
    }

    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        self.db.begin_read().map_err(unavailable)
    }

    /// Durable commits made so far.
    pub(crate) fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Acquire)
    }

    /// Runs `write` in a transaction with the writes queued with it, and returns its
    /// result once that transaction is durable.
    pub(crate) async fn write<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&WriteTransaction) -> Result<T, StoreError> + Send + Sync + 'static,
    {
        let value: Arc<Mutex<Option<T>>> = Arc::new(Mutex::new(None));
        let slot = value.clone();
        let (done, answer) = oneshot::channel();
        let job = Job {
            run: Box::new(move |tx| {
                let v = write(tx)?;
                *slot.lock().map_err(|_| unavailable(POISONED))? = Some(v);
                Ok(())
            }),
            done,
        };
        let queue = self.queue.as_ref().ok_or_else(|| unavailable(STOPPED))?;
        queue.send(job).await.map_err(|_| unavailable(STOPPED))?;
        answer.await.map_err(|_| unavailable(STOPPED))??;
        let v = value.lock().map_err(|_| unavailable(POISONED))?.take();
        v.ok_or_else(|| unavailable("a committed write left no result"))
    }
}

impl Drop for Db {
    /// Stops the writer after the writes already queued, so that the file is closed when
    /// the store is dropped (and can be opened again at once).
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread: batches of queued writes, until every sender is gone.
fn write_batches(db: &Database, mut jobs: mpsc::Receiver<Job>, flushes: &AtomicU64) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(db, &mut batch, flushes);
    }
}

/// Runs a batch, counts its durable commits and answers every write in it (emptying it).
/// The count comes first: a caller that reads it after its answer sees its own commit.
fn run_batch(db: &Database, batch: &mut Vec<Job>, flushes: &AtomicU64) {
    let runs: Vec<&Run> = batch.iter().map(|j| &j.run).collect();
    let (outcomes, durable): (Vec<Result<(), StoreError>>, u64) = match try_together(db, &runs) {
        Ok(()) => (batch.iter().map(|_| Ok(())).collect(), 1),
        Err(Together::Commit(e)) => (batch.iter().map(|_| Err(e.clone())).collect(), 0),
        Err(Together::WriteFailed) => {
            // One write failed: nothing of the batch was written. Each on its own.
            let outcomes: Vec<_> = runs
                .iter()
                .map(|run| {
                    try_together(db, std::slice::from_ref(run)).map_err(|e| match e {
                        Together::Commit(e) => e,
                        Together::WriteFailed => {
                            StoreError::Unavailable("a write failed without an error".into())
                        }
                    })
                })
                .collect();
            let durable = outcomes.iter().filter(|o| o.is_ok()).count() as u64;
            (outcomes, durable)
        }
    };
    flushes.fetch_add(durable, Ordering::Release);
    for (job, outcome) in batch.drain(..).zip(outcomes) {
        // A caller that stopped waiting (its request was dropped) needs no answer.
        let _ = job.done.send(outcome);
    }
}

/// Runs writes in one durable transaction. A single write's own error is its answer (as
/// `Commit`, meaning "final"); in a batch of several, any error drops the batch.
fn try_together(db: &Database, runs: &[&Run]) -> Result<(), Together> {
    let mut tx = db
        .begin_write()
        .map_err(|e| Together::Commit(unavailable(e)))?;
    tx.set_durability(Durability::Immediate);
    for run in runs {
        // A panicking write must not take the writer thread (and every later write) down.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&tx)))
            .unwrap_or_else(|_| Err(unavailable("the write panicked")));
        if let Err(e) = outcome {
            return Err(if runs.len() == 1 {
                Together::Commit(e)
            } else {
                Together::WriteFailed
            });
        }
    }
    tx.commit().map_err(|e| Together::Commit(unavailable(e)))
}

enum Together {
    /// The answer for every write of the attempt.
    Commit(StoreError),
    /// A write of a batch failed; the batch was not written.
    WriteFailed,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};

    use super::*;

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    /// Runs `write(i)` for i in 0..n, all at once, and returns each caller's answer.
    async fn concurrently<T, F>(db: &Arc<Db>, n: u64, write: F) -> Vec<Result<T, StoreError>>
    where
        T: Send + 'static,
        F: Fn(u64, &WriteTransaction) -> Result<T, StoreError> + Send + Sync + Copy + 'static,
    {
        let callers: Vec<_> = (0..n)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move { db.write(move |tx| write(i, tx)).await })
            })
            .collect();
        let mut answers = Vec::new();
        for c in callers {
            answers.push(c.await.unwrap());
        }
        answers
    }

    fn put(tx: &WriteTransaction, k: u64, v: u64) -> Result<(), StoreError> {
        tx.open_table(T)
            .map_err(unavailable)?
            .insert(k, v)
            .map_err(unavailable)?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_fsyncs_and_all_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.redb");
        let db = Arc::new(Db::new(Database::create(&path).unwrap()));
        let answers = concurrently(&db, 64, |i, tx| {
            put(tx, i, i * 2)?;
            Ok(i)
        })
        .await;
        for (i, a) in answers.into_iter().enumerate() {
            assert_eq!(
                a.unwrap(),
                i as u64,
                "each caller gets its own write's result"
            );
        }
        let flushes = db.flushes();
        assert!((1..=64).contains(&flushes), "{flushes} fsyncs");
        // Dropping the store stops its writer and closes the file: it opens again at once.
        drop(Arc::into_inner(db).expect("the only handle"));
        let reopened = Database::open(&path).unwrap();
        let t = reopened.begin_read().unwrap().open_table(T).unwrap();
        assert_eq!(t.len().unwrap(), 64, "every acknowledged write is durable");
    }

    /// A write that fails (or panics) in a batch fails alone: the others of its batch
    /// are written, and the failed one leaves nothing, not even what it wrote first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_fails_alone_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::new(
            Database::create(dir.path().join("g.redb")).unwrap(),
        ));
        let answers = concurrently(&db, 48, |i, tx| {
            put(tx, i, i)?;
            match i % 8 {
                3 => Err(StoreError::Conflict(format!("write {i} refused"))),
                5 => panic!("write {i} panics"),
                _ => Ok(()),
            }
        })
        .await;
        for (i, r) in answers.into_iter().enumerate() {
            match i % 8 {
                3 => assert!(matches!(r, Err(StoreError::Conflict(_))), "{i}: {r:?}"),
                5 => assert!(matches!(r, Err(StoreError::Unavailable(_))), "{i}: {r:?}"),
                _ => assert!(r.is_ok(), "{i}: {r:?}"),
            }
        }
        // The writer survived the panics: a later write still lands.
        db.write(|tx| put(tx, 1000, 1)).await.unwrap();
        let read = db.begin_read().unwrap();
        let t = read.open_table(T).unwrap();
        let keys: Vec<u64> = t.iter().unwrap().map(|e| e.unwrap().0.value()).collect();
        let mut expected: Vec<u64> = (0..48).filter(|i| i % 8 != 3 && i % 8 != 5).collect();
        expected.push(1000);
        assert_eq!(keys, expected);
    }
}
