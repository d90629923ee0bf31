//! The SQLite case store: schema and migrations, messages, cases, history, outbox, SLA.
//!
//! * [`schema`]  opening a database: pragmas (WAL, busy timeout, foreign keys) and the
//!   migrations of `schema.sql`, tracked with `PRAGMA user_version`.
//! * [`model`]   the rows and the values written (`NewMessage`, `NewCase`, ...).
//! * [`store`]   [`Store`] and its write transaction [`Tx`]: what the pipeline and the daemon use.
//! * [`outbox`]  replies waiting to be sent, and the seam to the reply composer.
//! * [`staff`]   what the staff CLI needs: listing, detail, staff actions.
//! * [`sla`]     due times, "time left", SLA statistics.
//!
//! Times are unix seconds in the database (see the head of `schema.sql` for why) and
//! [`jiff::Timestamp`] in Rust. No method reads the clock: every one that depends on time
//! takes `now`, so tests and replays control it.

pub mod backup;
pub mod model;
pub mod outbox;
pub mod retention;
pub mod schema;
pub mod sla;
pub mod staff;
pub mod store;

use sha2::{Digest, Sha256};

use crate::types::CaseRef;

pub use model::{
    CaseRow, CaseState, EventKind, EventRow, MessageId, MessageRow, MessageSource, NewCase, NewEvent, NewMessage,
    NewReply, OutboxId, OutboxRow, OutboxState, Outcome, RawMessage,
};
pub use outbox::{ComposeError, ComposeRequest, ComposedReply, ReplyComposer};
pub use sla::{SlaStatus, Stats};
pub use staff::{CaseDetail, CaseFilter, Resolution, Resolve};
pub use store::{Store, StoreOptions, Tx};

/// The actor recorded on events written by the daemon itself.
pub const DAEMON_ACTOR: &str = "delistd";

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
