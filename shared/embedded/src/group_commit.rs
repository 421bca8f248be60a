//! Group commit for the embedded store: writes that arrive together share one fsync.
//!
//! redb makes a commit durable with an fsync, and allows one write transaction at a time,
//! so committing each management message on its own queues every concurrent session
//! behind every other one's fsync. Here each write commits with `Durability::None` —
//! visible to every later transaction at once, but not yet on disk — and its caller then
//! waits for a durable commit that started after its own: one caller at a time runs an
//! empty `Durability::Immediate` commit, which persists every non-durable commit before
//! it (redb's documented behaviour), and wakes everyone it covered. Writes that arrive
//! while an fsync runs wait for the next one, so under load one fsync covers a whole
//! batch; alone, a write costs what it did before (its commit, then one fsync).
//!
//! ⚠ A caller is answered only after its write is durable. Returning earlier would
//! make this faster and would lose acknowledged enrollments and command results on a
//! crash: do not.

use std::ops::Deref;
use std::sync::{Condvar, Mutex};

use redb::{Database, Durability, ReadTransaction, WriteTransaction};

/// The database with its group-commit state.
pub(crate) struct Db {
    db: Database,
    state: Mutex<Progress>,
    flushed: Condvar,
}

#[derive(Default)]
struct Progress {
    /// Sequence number of the latest non-durable commit.
    committed: u64,
    /// Every commit up to this number is durable.
    durable: u64,
    /// Whether a caller is running the durable commit now.
    flushing: bool,
    /// Durable commits made, for the benchmarks: writes / flushes is the batch size.
    flushes: u64,
}

/// A write transaction whose commit returns once the write is durable.
pub(crate) struct GroupTx<'a> {
    tx: WriteTransaction,
    db: &'a Db,
}

impl Deref for GroupTx<'_> {
    type Target = WriteTransaction;
    fn deref(&self) -> &WriteTransaction {
        &self.tx
    }
}

/// A redb error on the write path, as its message (redb's own errors are large values).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct GroupError(String);

impl From<redb::TransactionError> for GroupError {
    fn from(e: redb::TransactionError) -> Self {
        Self(e.to_string())
    }
}

impl From<redb::CommitError> for GroupError {
    fn from(e: redb::CommitError) -> Self {
        Self(e.to_string())
    }
}

const POISONED: &str = "the store's commit state is poisoned by an earlier panic";

impl Db {
    pub(crate) fn new(db: Database) -> Self {
        Self {
            db,
            state: Mutex::new(Progress::default()),
            flushed: Condvar::new(),
        }
    }

    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, GroupError> {
        Ok(self.db.begin_read()?)
    }

    pub(crate) fn begin_write(&self) -> Result<GroupTx<'_>, GroupError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::None);
        Ok(GroupTx { tx, db: self })
    }

    /// Durable commits made so far.
    pub(crate) fn flushes(&self) -> u64 {
        self.state.lock().map_or(0, |s| s.flushes)
    }

    /// Blocks until commit `seq` is durable, running the durable commit if nobody is.
    fn wait_durable(&self, seq: u64) -> Result<(), GroupError> {
        let mut s = self.state.lock().map_err(|_| GroupError(POISONED.into()))?;
        loop {
            if s.durable >= seq {
                return Ok(());
            }
            if s.flushing {
                s = self
                    .flushed
                    .wait(s)
                    .map_err(|_| GroupError(POISONED.into()))?;
                continue;
            }
            s.flushing = true;
            // Every commit numbered up to here finished before this durable commit
            // begins, so it persists them all.
            let target = s.committed;
            drop(s);
            let result = self
                .db
                .begin_write()
                .map_err(GroupError::from)
                .and_then(|mut tx| {
                    tx.set_durability(Durability::Immediate);
                    tx.commit().map_err(GroupError::from)
                });
            s = self.state.lock().map_err(|_| GroupError(POISONED.into()))?;
            s.flushing = false;
            if result.is_ok() {
                s.durable = s.durable.max(target);
                s.flushes += 1;
            }
            self.flushed.notify_all();
            // A failed fsync answers this caller with the error; the others retry it.
            result?;
        }
    }
}

impl GroupTx<'_> {
    /// Commits, then returns once the commit is on disk.
    pub(crate) fn commit(self) -> Result<(), GroupError> {
        let GroupTx { tx, db } = self;
        tx.commit()?;
        let seq = {
            let mut s = db.state.lock().map_err(|_| GroupError(POISONED.into()))?;
            s.committed += 1;
            s.committed
        };
        db.wait_durable(seq)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use redb::{ReadableTableMetadata, TableDefinition};

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
                    let tx = db.begin_write().unwrap();
                    tx.open_table(T).unwrap().insert(i, i * 2).unwrap();
                    tx.commit().unwrap();
                    // Answered only once durable: the count covers this write.
                    let s = db.state.lock().unwrap();
                    assert!(s.durable >= 1);
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let flushes = db.flushes();
        assert!((1..=64).contains(&flushes), "{flushes} fsyncs");
        {
            let s = db.state.lock().unwrap();
            assert_eq!(s.committed, 64);
            assert_eq!(s.durable, 64, "every acknowledged write is durable");
        }
        drop(db);
        let reopened = Database::open(&path).unwrap();
        let t = reopened.begin_read().unwrap().open_table(T).unwrap();
        assert_eq!(t.len().unwrap(), 64);
    }
}
