//! Where messages come from: an IMAP mailbox (TLS, IDLE, UIDs) or a Maildir.
//!
//! A source hands out [`Fetched`] messages, each with a [`SourceKey`] that names it for good
//! (mailbox + UIDVALIDITY + UID, or the Maildir unique name), and is told afterwards to file
//! the message away. Filing happens only after its outcome is committed to the store, so a
//! crash in between leaves the message in place, and the key finds its record on restart.

pub mod imap;
pub mod maildir;

use std::fmt;

/// Names one message in its source, stably across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SourceKey {
    /// RFC 3501 §2.3.1.1: (mailbox, UIDVALIDITY, UID) never names two different messages.
    Imap { mailbox: String, uidvalidity: u32, uid: u32 },
    /// The Maildir unique name (the file name up to `:2,`), stable across flag changes.
    Maildir { dir: String, unique: String },
    /// A file given on the command line (`delistd reprocess`, tests).
    File { path: String },
}

impl SourceKey {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceKey::Imap { .. } => "imap",
            SourceKey::Maildir { .. } => "maildir",
            SourceKey::File { .. } => "file",
        }
    }
}

impl fmt::Display for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceKey::Imap { mailbox, uidvalidity, uid } => write!(f, "imap:{mailbox};UIDVALIDITY={uidvalidity};UID={uid}"),
            SourceKey::Maildir { dir, unique } => write!(f, "maildir:{dir}/{unique}"),
            SourceKey::File { path } => write!(f, "file:{path}"),
        }
    }
}

/// One message taken from a source.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub key: SourceKey,
    /// The bytes, at most the extraction cap (a larger message is fetched partially).
    pub raw: Vec<u8>,
    /// The message's full size as the source reports it.
    pub size: u64,
}

/// Where a message goes once its outcome is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Processed,
    Quarantine,
}
