//! Embedded adapters for running without AWS: a redb-backed [`store::RedbStore`] and a
//! file-backed [`ca::LocalCa`], both kept in one data directory.

pub mod ca;
mod group_commit;
pub mod store;

pub use ca::{LocalCa, LocalCaKey};
pub use store::RedbStore;
