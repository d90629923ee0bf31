//! The SQLite case store: schema and migrations, messages, cases, history, outbox, SLA.
//!
//! * [`access`]  who may open the database file; a new file made group-writable under the umask.
//! * [`schema`]  opening a database: pragmas (WAL, busy timeout, foreign keys) and the
//!   migrations of `schema.sql`, tracked with `PRAGMA user_version`.
//! * [`model`]   the rows and the values written (`NewMessage`, `NewCase`, ...).
//! * [`store`]   [`Store`] and its write transaction [`Tx`]: what the pipeline and the daemon use.
//! * [`outbox`]  replies waiting to be sent, and the seam to the reply composer.
//! * [`staff`]   what the staff CLI needs: listing, detail, staff actions.
//! * [`sla`]     due times, "time left", SLA statistics.
//! * [`monitor`] what metrics read at scrape time; escalation stages and digests.
//! * [`search`]  the full-text index of messages (FTS5) and the IP range key (schema 9).
//!
//! Times are unix seconds in the database (see the head of `schema.sql` for why) and
//! [`jiff::Timestamp`] in Rust. No method reads the clock: every one that depends on time
//! takes `now`, so tests and replays control it.

pub mod access;
pub mod backup;
pub mod integrity;
pub mod listing;
pub mod model;
pub mod monitor;
pub mod outbox;
pub mod rerun;
pub mod retention;
pub mod schema;
pub mod search;
pub mod shared;
pub mod sla;
pub mod staff;
pub mod store;
pub mod threads;

use sha2::{Digest, Sha256};

use crate::types::CaseRef;

pub use model::{
    CaseListing, CaseRow, CaseState, EventKind, EventRow, MessageId, MessageRow, MessageSource, NewCase, NewEvent, NewMessage,
    NewReply, OutboxId, OutboxRow, OutboxState, Outcome, RawMessage,
};
pub use listing::ListingRecord;
pub use shared::{lock, with_store, SharedStore};
pub use sla::{SlaStatus, Stats};
pub use staff::{CaseDetail, CaseFilter, Resolution, Resolve};
pub use threads::StaffMessage;
pub use store::{mailbox_key, RecentReplies, Store, StoreOptions, Tx};

/// The actor recorded on events written by the daemon itself.
pub const DAEMON_ACTOR: &str = "delistd";

/// The actor recorded on what the blocklist link does by itself (a case resolved because
/// its IP left the list, a `delist_command` run for a first request).
pub const BLOCKLIST_ACTOR: &str = "blocklist";

/// Errors of the case store. Callers branch on `NotFound`, `WrongState`, `Duplicate` and
/// `TooNew`; the rest are reported.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no case {0}")]
    NotFound(CaseRef),
    #[error(
        "the database has schema version {found}, newer than this delistd supports ({supported}); \
         it was written by a newer delistd: upgrade delistd rather than downgrading the database"
    )]
    TooNew { found: u32, supported: u32 },
    #[error("{case} is {state}: cannot {action} it")]
    WrongState { case: CaseRef, state: CaseState, action: &'static str },
    /// Reopening `case` would give its IP a second active case: `other` is already being
    /// worked on for it, and one IP has one case at a time.
    #[error("{case} cannot be reopened: {other} is already {state} for {ip}; work on {other} instead")]
    AnotherActive { case: CaseRef, other: CaseRef, state: CaseState, ip: String },
    /// The message is already recorded (same IMAP UID or same content).
    #[error("message already recorded ({0})")]
    Duplicate(String),
    #[error("invalid value: {0}")]
    Invalid(String),
    #[error("schema migration to version {version} failed: {source}")]
    Migration { version: u32, source: rusqlite::Error },
    /// `schema.sql` does not split into numbered migrations (a build-time mistake).
    #[error("schema.sql is malformed: {0}")]
    BadSchema(String),
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// `PRAGMA quick_check` found the file damaged: nothing is written to it.
    #[error("the database {path} is damaged ({detail}); restore it from a backup, or move it aside to start a new one")]
    Corrupt { path: String, detail: String },
    /// The file the store opened is no longer the one at its path (deleted, or replaced).
    #[error("the database {path} {what} while delistd was using it; stopping rather than writing into a file nobody will read")]
    FileChanged { path: String, what: &'static str },
    /// A reply is not in the state an outbox step expects (another process moved it).
    #[error("reply {id} is {state}, not queued")]
    ReplyState { id: OutboxId, state: String },
}

impl StoreError {
    /// Another connection holds the lock beyond the busy timeout: the same step can succeed
    /// later. Everything else is about the data or the file, and a retry would not help.
    pub fn is_transient(&self) -> bool {
        use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(e.code, DatabaseBusy | DatabaseLocked),
            StoreError::Migration { source: rusqlite::Error::SqliteFailure(e, _), .. } => {
                matches!(e.code, DatabaseBusy | DatabaseLocked)
            }
            _ => false,
        }
    }
}

/// Lower-case hex SHA-256 of a raw message: the content key of `messages.sha256`.
pub fn sha256_hex(raw: &[u8]) -> String {
    let digest = Sha256::digest(raw);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_matches_the_known_digest() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
