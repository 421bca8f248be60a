//! Group commit for the embedded store: writes that arrive together share one
//! transaction and one fsync.
//!
//! redb allows one write transaction at a time and makes a commit durable with an fsync,
//! so committing each management message on its own queues every concurrent session
//! behind every other one's commit and fsync (and the CPU idles while it waits). Here a
//! write is a closure over a write transaction, queued; one caller at a time is the
//! leader: it takes every queued write, runs them in order in one transaction, commits it
//! durably, and answers each of them. Writes that arrive while it commits queue for the
//! next batch, which the next caller to find no leader runs. Alone, a write costs what it
//! did before (its transaction, one fsync); under load one fsync covers a whole batch.
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

use std::sync::{Arc, Condvar, Mutex};

use redb::{Database, Durability, ReadTransaction, WriteTransaction};
use winmdm_core::store::StoreError;

/// One queued write: runs against a transaction and keeps its own result.
type Run = Box<dyn Fn(&WriteTransaction) -> Result<(), StoreError> + Send + Sync>;

struct Job {
    run: Run,
    /// Set once the write's transaction is durable (or failed).
    outcome: Mutex<Option<Result<(), StoreError>>>,
}

/// The database with its queue of writes.
pub(crate) struct Db {
    db: Database,
    state: Mutex<Queue>,
    answered: Condvar,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Arc<Job>>,
    /// Whether a caller is running a batch now.
    leading: bool,
    /// Durable commits made, for the benchmarks: writes / flushes is the batch size.
    flushes: u64,
}

const POISONED: &str = "the store's commit state is poisoned by an earlier panic";

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl Db {
    pub(crate) fn new(db: Database) -> Self {
        Self {
            db,
            state: Mutex::new(Queue::default()),
            answered: Condvar::new(),
        }
    }

    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        self.db.begin_read().map_err(unavailable)
    }

    /// Durable commits made so far.
    pub(crate) fn flushes(&self) -> u64 {
        self.state.lock().map_or(0, |s| s.flushes)
    }

    /// Runs `write` in a transaction with the writes queued with it, and returns its
    /// result once that transaction is durable. Blocks: call it off the async executor.
    pub(crate) fn write<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&WriteTransaction) -> Result<T, StoreError> + Send + Sync + 'static,
    {
        let value: Arc<Mutex<Option<T>>> = Arc::new(Mutex::new(None));
        let slot = value.clone();
        let job = Arc::new(Job {
            run: Box::new(move |tx| {
                let v = write(tx)?;
                *slot.lock().map_err(|_| unavailable(POISONED))? = Some(v);
                Ok(())
            }),
            outcome: Mutex::new(None),
        });
        let mut q = self.state.lock().map_err(|_| unavailable(POISONED))?;
        q.pending.push(job.clone());
        loop {
            if let Some(outcome) = job
                .outcome
                .lock()
                .map_err(|_| unavailable(POISONED))?
                .take()
            {
                outcome?;
                return value
                    .lock()
                    .map_err(|_| unavailable(POISONED))?
                    .take()
                    .ok_or_else(|| unavailable("a committed write left no result"));
            }
            if q.leading {
                q = self.answered.wait(q).map_err(|_| unavailable(POISONED))?;
                continue;
            }
            q.leading = true;
            let batch = std::mem::take(&mut q.pending);
            drop(q);
            let durable = self.run_batch(&batch);
            q = self.state.lock().map_err(|_| unavailable(POISONED))?;
            q.leading = false;
            q.flushes += durable;
            self.answered.notify_all();
        }
    }

    /// Runs a batch and answers every write in it; returns the durable commits made.
    fn run_batch(&self, batch: &[Arc<Job>]) -> u64 {
        let answer = |job: &Job, outcome: Result<(), StoreError>| {
            if let Ok(mut o) = job.outcome.lock() {
                *o = Some(outcome);
            }
        };
        match self.try_together(batch) {
            Ok(()) => {
                for job in batch {
                    answer(job, Ok(()));
                }
                1
            }
            Err(Together::Commit(e)) => {
                for job in batch {
                    answer(job, Err(e.clone()));
                }
                0
            }
            Err(Together::WriteFailed) => {
                // One write failed: nothing of the batch was written. Each on its own.
                let mut durable = 0;
                for job in batch {
                    let outcome = self.try_together(std::slice::from_ref(job));
                    durable += u64::from(outcome.is_ok());
                    answer(
                        job,
                        outcome.map_err(|e| match e {
                            Together::Commit(e) => e,
                            Together::WriteFailed => {
                                StoreError::Unavailable("a write failed without an error".into())
                            }
                        }),
                    );
                }
                durable
            }
        }
    }

    /// Runs jobs in one durable transaction. A single job's own error is its answer (as
    /// `Commit`, meaning "final"); in a batch of several, any error drops the batch.
    fn try_together(&self, jobs: &[Arc<Job>]) -> Result<(), Together> {
        let mut tx = self
            .db
            .begin_write()
            .map_err(|e| Together::Commit(unavailable(e)))?;
        tx.set_durability(Durability::Immediate);
        for job in jobs {
            // A panicking write must not leave the others waiting for a leader.
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.run)(&tx)))
                .unwrap_or_else(|_| Err(unavailable("the write panicked")));
            if let Err(e) = run {
                return Err(if jobs.len() == 1 {
                    Together::Commit(e)
                } else {
                    Together::WriteFailed
                });
            }
        }
        tx.commit().map_err(|e| Together::Commit(unavailable(e)))
    }
}

enum Together {
    /// The answer for every job of the attempt.
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

    #[test]
    fn concurrent_writes_share_fsyncs_and_all_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.redb");
        let db = Arc::new(Db::new(Database::create(&path).unwrap()));
        let writers: Vec<_> = (0..64u64)
            .map(|i| {
                let db = db.clone();
                std::thread::spawn(move || {
                    let got = db
                        .write(move |tx| {
                            tx.open_table(T)
                                .map_err(unavailable)?
                                .insert(i, i * 2)
                                .map_err(unavailable)?;
                            Ok(i)
                        })
                        .unwrap();
                    assert_eq!(got, i, "each caller gets its own write's result");
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let flushes = db.flushes();
        assert!((1..=64).contains(&flushes), "{flushes} fsyncs");
        drop(db);
        let reopened = Database::open(&path).unwrap();
        let t = reopened.begin_read().unwrap().open_table(T).unwrap();
        assert_eq!(t.len().unwrap(), 64, "every acknowledged write is durable");
    }

    /// A write that fails (or panics) in a batch fails alone: the others of its batch
    /// are written, and the failed one leaves nothing, not even what it wrote first.
    #[test]
    fn a_failing_write_fails_alone_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.redb");
        let db = Arc::new(Db::new(Database::create(&path).unwrap()));
        let writers: Vec<_> = (0..48u64)
            .map(|i| {
                let db = db.clone();
                std::thread::spawn(move || {
                    db.write(move |tx| {
                        tx.open_table(T)
                            .map_err(unavailable)?
                            .insert(i, i)
                            .map_err(unavailable)?;
                        match i % 8 {
                            3 => Err(StoreError::Conflict(format!("write {i} refused"))),
                            5 => panic!("write {i} panics"),
                            _ => Ok(()),
                        }
                    })
                })
            })
            .collect();
        for (i, w) in writers.into_iter().enumerate() {
            let r = w.join().unwrap();
            match i % 8 {
                3 => assert!(matches!(r, Err(StoreError::Conflict(_))), "{i}: {r:?}"),
                5 => assert!(matches!(r, Err(StoreError::Unavailable(_))), "{i}: {r:?}"),
                _ => assert!(r.is_ok(), "{i}: {r:?}"),
            }
        }
        let read = db.begin_read().unwrap();
        let t = read.open_table(T).unwrap();
        let keys: Vec<u64> = t.iter().unwrap().map(|e| e.unwrap().0.value()).collect();
        let expected: Vec<u64> = (0..48).filter(|i| i % 8 != 3 && i % 8 != 5).collect();
        assert_eq!(keys, expected);
    }
}
