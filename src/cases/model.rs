//! The rows of the store and the values written into it.
//!
//! Row types hold what the table holds, as plain data: texts stay texts (`ip`,
//! `status_code`) with typed accessors, so that one hand-edited row cannot make a whole
//! listing fail.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use jiff::Timestamp;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Row, ToSql};
use serde::Serialize;

use crate::decide::Action;
use crate::types::{CaseRef, Lang, StatusCode};

/// Row id of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct MessageId(pub i64);

/// Row id of a reply in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct OutboxId(pub i64);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Display for OutboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Declares a text-valued enum stored as its snake_case name.
macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s { $($s => Ok($name::$v),)+ _ => Err(format!("unknown {} {s:?}", stringify!($name))) }
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
                let s = v.as_str()?;
                s.parse().map_err(|e: String| FromSqlError::Other(e.into()))
            }
        }
    };
}

text_enum! {
    /// Where a case stands. See `schema.sql` for what each state means.
    CaseState {
        /// We asked the sender for what was missing; no SLA clock runs.
        AwaitingInfo = "awaiting_info",
        /// A complete request: staff must answer by `due_at`.
        Open = "open",
        Resolved = "resolved",
        Rejected = "rejected",
    }
}

impl CaseState {
    /// Still needs something to happen (from the sender or from staff).
    pub fn is_active(self) -> bool {
        matches!(self, CaseState::AwaitingInfo | CaseState::Open)
    }
}

text_enum! {
    /// What became of a message taken in.
    Outcome {
        /// Recorded, not yet handled (only seen inside a transaction).
        Received = "received",
        /// Handled: case opened or updated, reply queued when one was due.
        Processed = "processed",
        /// Nothing to do (auto-reply, list mail, ...), recorded so it is not seen again.
        Ignored = "ignored",
        /// Could not be handled; kept aside for staff (see `error`).
        Quarantined = "quarantined",
        Failed = "failed",
    }
}

text_enum! {
    /// The kinds of entries in a case's history.
    EventKind {
        Opened = "opened",
        /// An awaiting_info case got what was missing; the SLA clock started.
        Completed = "completed",
        /// A message about the case arrived (follow-up, delivery report of our reply).
        Message = "message",
        ReplyQueued = "reply_queued",
        ReplySent = "reply_sent",
        ReplyFailed = "reply_failed",
        Note = "note",
        Assigned = "assigned",
        Resolved = "resolved",
        Rejected = "rejected",
        Reopened = "reopened",
        /// Staff were warned that the case is due soon (escalation, first stage).
        EscalationDueSoon = "escalation_due_soon",
        /// Staff were warned that the case is overdue (escalation, second stage).
        EscalationOverdue = "escalation_overdue",
        /// A staff member wrote to the sender (the reply itself: `reply_queued`).
        StaffReply = "staff_reply",
        /// A staff member asked the sender for information; the SLA clock is paused.
        Asked = "asked",
        /// The sender answered a staff question; the SLA clock runs again.
        Answered = "answered",
    }
}

text_enum! {
    /// Where a reply in the outbox stands.
    OutboxState {
        Queued = "queued",
        Sent = "sent",
        /// Given up on; `last_error` says why.
        Failed = "failed",
    }
}

/// Where a message was taken from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MessageSource {
    /// An IMAP message: (mailbox, UIDVALIDITY, UID) names it for good (RFC 9051 §2.3.1.1).
    Imap {
        mailbox: String,
        uidvalidity: u32,
        uid: u32,
    },
    Maildir {
        path: String,
    },
    File {
        path: String,
    },
}

impl MessageSource {
    pub fn kind(&self) -> &'static str {
        match self {
            MessageSource::Imap { .. } => "imap",
            MessageSource::Maildir { .. } => "maildir",
            MessageSource::File { .. } => "file",
        }
    }
}

/// How the raw bytes of a message are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawMessage<'a> {
    /// In the database (`messages.raw`).
    Blob(&'a [u8]),
    /// On disk, at this path (`messages.raw_path`).
    Path(&'a str),
    /// Not kept.
    NotKept,
}

/// A message to record.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub source: MessageSource,
    /// Message-ID without angle brackets.
    pub message_id: Option<String>,
    pub sender: Option<String>,
    pub subject: Option<String>,
    pub received_at: Timestamp,
    pub size: u64,
    /// [`super::sha256_hex`] of the raw bytes.
    pub sha256: String,
    pub raw: RawMessage<'a>,
    /// The evidence and the decision, as JSON text (must be valid JSON).
    pub evidence: Option<String>,
    pub decision: Option<String>,
    pub action: Option<Action>,
    pub outcome: Outcome,
    pub error: Option<String>,
}

/// A recorded message, without its raw bytes (see [`super::Store::message_raw`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRow {
    pub id: MessageId,
    pub source: MessageSource,
    pub message_id: Option<String>,
    pub sender: Option<String>,
    pub subject: Option<String>,
    pub received_at: Timestamp,
    pub size: u64,
    pub sha256: String,
    pub has_raw: bool,
    pub raw_path: Option<String>,
    pub evidence: Option<String>,
    pub decision: Option<String>,
    pub action: Option<String>,
    pub outcome: String,
    pub error: Option<String>,
}

impl MessageRow {
    pub(crate) const COLUMNS: &'static str = "id, source_kind, mailbox, uidvalidity, uid, path, message_id, sender, \
         subject, received_at, size, sha256, raw IS NOT NULL, raw_path, evidence, decision, action, outcome, error";

    pub(crate) fn from_row(r: &Row<'_>) -> rusqlite::Result<MessageRow> {
        let kind: String = r.get(1)?;
        let path = || -> rusqlite::Result<String> { Ok(r.get::<_, Option<String>>(5)?.unwrap_or_default()) };
        let source = match kind.as_str() {
            "imap" => MessageSource::Imap {
                mailbox: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                uidvalidity: r.get::<_, Option<u32>>(3)?.unwrap_or_default(),
                uid: r.get::<_, Option<u32>>(4)?.unwrap_or_default(),
            },
            "maildir" => MessageSource::Maildir { path: path()? },
            _ => MessageSource::File { path: path()? },
        };
        Ok(MessageRow {
            id: MessageId(r.get(0)?),
            source,
            message_id: r.get(6)?,
            sender: r.get(7)?,
            subject: r.get(8)?,
            received_at: ts(r, 9)?,
            size: r.get::<_, i64>(10)?.max(0) as u64,
            sha256: r.get(11)?,
            has_raw: r.get(12)?,
            raw_path: r.get(13)?,
            evidence: r.get(14)?,
            decision: r.get(15)?,
            action: r.get(16)?,
            outcome: r.get(17)?,
            error: r.get(18)?,
        })
    }
}

/// A case to open.
#[derive(Debug, Clone)]
pub struct NewCase {
    /// The banned IP; required unless `awaiting_info`.
    pub ip: Option<IpAddr>,
    pub status_code: Option<StatusCode>,
    pub ndr_line: Option<String>,
    /// The address replies go to.
    pub sender: String,
    pub language: Lang,
    /// The message that opened it.
    pub opened_by: Option<MessageId>,
    /// A request we asked the sender to complete: no SLA clock until it is.
    pub awaiting_info: bool,
}

/// A case as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseRow {
    pub case_ref: CaseRef,
    /// Canonical text of the banned IP.
    pub ip: Option<String>,
    pub status_code: Option<String>,
    pub ndr_line: Option<String>,
    pub sender: String,
    pub language: String,
    pub state: CaseState,
    pub opened_at: Timestamp,
    pub sla_started_at: Option<Timestamp>,
    pub due_at: Option<Timestamp>,
    pub first_response_at: Option<Timestamp>,
    pub resolved_at: Option<Timestamp>,
    pub assignee: Option<String>,
    pub opened_by: Option<MessageId>,
    /// What the blocklist said of the IP when last looked up (schema version 3).
    pub listing: Option<CaseListing>,
    /// How a closed case was closed: `delisted`, `not_listed`, `rejected` (NULL before v3).
    pub resolution: Option<String>,
    /// A person wrote since the last staff action (schema version 8).
    pub needs_attention: bool,
    /// Seconds left on the SLA clock, kept while staff wait for the answer to a question.
    pub sla_remaining: Option<i64>,
}

/// The blocklist's listing of a case's IP, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseListing {
    /// A DNSBL zone, or `cidr:<path>`.
    pub source: String,
    pub reason: Option<String>,
    pub since: Option<Timestamp>,
    pub checked_at: Option<Timestamp>,
}

impl CaseRow {
    pub(crate) const COLUMNS: &'static str = "id, ip, status_code, ndr_line, sender, language, state, opened_at, \
         sla_started_at, due_at, first_response_at, resolved_at, assignee, opened_by, \
         listing_source, listing_reason, listing_since, listing_checked_at, resolution, needs_attention, sla_remaining";

    pub(crate) fn from_row(r: &Row<'_>) -> rusqlite::Result<CaseRow> {
        Ok(CaseRow {
            case_ref: CaseRef(r.get(0)?),
            ip: r.get(1)?,
            status_code: r.get(2)?,
            ndr_line: r.get(3)?,
            sender: r.get(4)?,
            language: r.get(5)?,
            state: r.get(6)?,
            opened_at: ts(r, 7)?,
            sla_started_at: opt_ts(r, 8)?,
            due_at: opt_ts(r, 9)?,
            first_response_at: opt_ts(r, 10)?,
            resolved_at: opt_ts(r, 11)?,
            assignee: r.get(12)?,
            opened_by: r.get::<_, Option<i64>>(13)?.map(MessageId),
            listing: match r.get::<_, Option<String>>(14)? {
                None => None,
                Some(source) => Some(CaseListing {
                    source,
                    reason: r.get(15)?,
                    since: opt_ts(r, 16)?,
                    checked_at: opt_ts(r, 17)?,
                }),
            },
            resolution: r.get(18)?,
            needs_attention: r.get::<_, i64>(19)? != 0,
            sla_remaining: r.get(20)?,
        })
    }

    /// The banned IP, when the stored text is one.
    pub fn ip_addr(&self) -> Option<IpAddr> {
        self.ip.as_deref().and_then(|t| t.parse().ok())
    }

    pub fn status(&self) -> Option<StatusCode> {
        self.status_code.as_deref().and_then(|t| t.parse().ok())
    }

    /// The reply language; English when the stored code is not one we write.
    pub fn lang(&self) -> Lang {
        Lang::from_tag(&self.language).unwrap_or_default()
    }
}

/// An entry to add to a case's history.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub case: CaseRef,
    pub kind: EventKind,
    pub actor: String,
    pub text: Option<String>,
    pub message: Option<MessageId>,
    pub outbox: Option<OutboxId>,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub id: i64,
    pub case_ref: CaseRef,
    /// Text, not [`EventKind`]: a history written by a later version may hold kinds this
    /// one does not know, and must still be shown.
    pub kind: String,
    pub actor: String,
    pub text: Option<String>,
    pub message: Option<MessageId>,
    pub outbox: Option<OutboxId>,
    pub at: Timestamp,
}

impl EventRow {
    pub(crate) const COLUMNS: &'static str = "id, case_id, kind, actor, text, message_ref, outbox_ref, at";

    pub(crate) fn from_row(r: &Row<'_>) -> rusqlite::Result<EventRow> {
        Ok(EventRow {
            id: r.get(0)?,
            case_ref: CaseRef(r.get(1)?),
            kind: r.get(2)?,
            actor: r.get(3)?,
            text: r.get(4)?,
            message: r.get::<_, Option<i64>>(5)?.map(MessageId),
            outbox: r.get::<_, Option<i64>>(6)?.map(OutboxId),
            at: ts(r, 7)?,
        })
    }
}

/// A reply to queue. Complete when queued: the Message-ID and bytes never change, so a
/// retry sends the same message.
#[derive(Debug, Clone)]
pub struct NewReply {
    pub case: Option<CaseRef>,
    /// The message this answers.
    pub caused_by: Option<MessageId>,
    pub recipient: String,
    /// Message-ID of the reply, without angle brackets.
    pub message_id: String,
    pub subject: String,
    /// The whole RFC 5322 message.
    pub raw: Vec<u8>,
    /// Who queued it: [`super::DAEMON_ACTOR`] or a staff member (recorded in the history).
    pub actor: String,
    /// What reply it is (`outbox.kind`, for the metrics); `None` when not known.
    pub kind: Option<crate::decide::ReplyKind>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: OutboxId,
    pub case_ref: Option<CaseRef>,
    pub caused_by: Option<MessageId>,
    pub recipient: String,
    pub message_id: String,
    pub subject: String,
    pub raw: Vec<u8>,
    pub state: OutboxState,
    pub attempts: u32,
    pub queued_at: Timestamp,
    pub next_attempt_at: Timestamp,
    pub last_error: Option<String>,
    pub sent_at: Option<Timestamp>,
    /// `outbox.kind`: the reply kind or the staff mail kind; `None` on rows from before
    /// schema version 3.
    pub kind: Option<String>,
}

impl OutboxRow {
    pub(crate) const COLUMNS: &'static str = "id, case_id, caused_by, recipient, message_id, subject, raw, state, \
         attempts, queued_at, next_attempt_at, last_error, sent_at, kind";

    pub(crate) fn from_row(r: &Row<'_>) -> rusqlite::Result<OutboxRow> {
        Ok(OutboxRow {
            id: OutboxId(r.get(0)?),
            case_ref: r.get::<_, Option<i64>>(1)?.map(CaseRef),
            caused_by: r.get::<_, Option<i64>>(2)?.map(MessageId),
            recipient: r.get(3)?,
            message_id: r.get(4)?,
            subject: r.get(5)?,
            raw: r.get(6)?,
            state: r.get(7)?,
            attempts: r.get::<_, i64>(8)?.clamp(0, i64::from(u32::MAX)) as u32,
            queued_at: ts(r, 9)?,
            next_attempt_at: ts(r, 10)?,
            last_error: r.get(11)?,
            sent_at: opt_ts(r, 12)?,
            kind: r.get(13)?,
        })
    }
}

/// A unix-seconds column as a timestamp.
pub(crate) fn ts(r: &Row<'_>, i: usize) -> rusqlite::Result<Timestamp> {
    let s: i64 = r.get(i)?;
    Timestamp::from_second(s)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Integer, Box::new(e)))
}

pub(crate) fn opt_ts(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<Timestamp>> {
    match r.get::<_, Option<i64>>(i)? {
        None => Ok(None),
        Some(_) => ts(r, i).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_enums_round_trip_through_their_names() {
        for s in CaseState::ALL {
            assert_eq!(s.as_str().parse::<CaseState>(), Ok(*s));
        }
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>(), Ok(*k));
        }
        assert!("closed".parse::<CaseState>().is_err());
        assert_eq!(CaseState::AwaitingInfo.to_string(), "awaiting_info");
        assert!(CaseState::Open.is_active() && !CaseState::Rejected.is_active());
    }
}
