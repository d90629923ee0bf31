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

/// Run `f` on the locked store from async code without starving the runtime.
///
/// A query can wait up to the busy timeout for another process's write lock, and the
/// mutex can wait for the other task's query. Done on a runtime worker as is, both workers
/// of the daemon's runtime may sit in such a wait at once, and every other task (signals,
/// the watchdog) waits with them: a lock held by `sqlite3` for 8 s silenced the watchdog
/// for 8 s in `scripts/crash-loop.sh`. `block_in_place` hands the worker's other tasks to
/// another thread first. On a current-thread runtime (tests) it cannot, and `f` just runs.
pub fn with_store<T>(store: &SharedStore, f: impl FnOnce(&mut Store) -> T) -> T {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi {
        tokio::task::block_in_place(|| f(&mut lock(store)))
    } else {
        f(&mut lock(store))
    }
}
