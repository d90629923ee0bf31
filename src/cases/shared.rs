//! The daemon's one connection to the database, shared by its tasks (intake, outbox, and any
//! later one). It lives here, beside the store, so that every user of it imports downwards:
//! `daemon` and `reply::outbox` both depend on `cases`, never on each other.

use std::sync::{Arc, Mutex, MutexGuard};

use super::Store;

/// The daemon's one connection to the database, shared by intake and outbox.
///
/// Two connections writing the same file in turn cost more than they save: SQLite makes the
/// one that finds the write lock taken sleep (1 ms, then 2, 5, 10 ms …) instead of waking it
/// when the lock is free, and each commit empties the other connection's page cache. A mutex
/// wakes the waiter at once, and one cache stays warm. Nobody holds it across an `.await`
/// (a `MutexGuard` cannot cross one in a spawned task), so it is held for queries only.
pub type SharedStore = Arc<Mutex<Store>>;

/// Lock the shared store. A panic while it was held cannot have left a transaction half
/// done (an uncommitted one is rolled back when dropped), so a poisoned lock is still usable.
pub fn lock(store: &SharedStore) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
