//! [`Store`]: one connection to the case database, and [`Tx`], its write transaction.
//!
//! The pipeline writes a message, the case it opens and the reply it queues through one
//! [`Tx`], so either all of it is recorded or none of it is. Transactions are IMMEDIATE:
//! they take the write lock when they begin, so a busy database makes them wait (busy
//! timeout) instead of failing half-way when a read would have to become a write.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use super::model::{CaseRow, EventKind, MessageId, MessageRow, MessageSource, NewCase, NewEvent, NewMessage, RawMessage};
use super::model::{NewReply, OutboxId};
use super::{schema, sla, StoreError, DAEMON_ACTOR};
use crate::types::{CaseRef, StatusCode};

/// How a store behaves.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Time staff have to answer a complete request.
    pub sla: SignedDuration,
    /// How long to wait for another connection's write lock before giving up.
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { sla: SignedDuration::from_hours(48), busy_timeout: Duration::from_secs(5) }
    }
}

/// The case store. One per thread: a connection is not shared (open another one).
pub struct Store {
    pub(crate) conn: Connection,
    pub(crate) sla: SignedDuration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.conn.path()).field("sla", &self.sla).finish()
    }
}

impl Store {
    /// Open (creating it if needed) and migrate the database at `path`.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        Store::setup(Connection::open(path)?, opts)
    }

    /// A private in-memory database (tests, `inspect`-like dry runs).
    pub fn open_in_memory(opts: StoreOptions) -> Result<Store, StoreError> {
        Store::setup(Connection::open_in_memory()?, opts)
    }

    fn setup(mut conn: Connection, opts: StoreOptions) -> Result<Store, StoreError> {
        if opts.sla <= SignedDuration::ZERO {
            return Err(StoreError::Invalid(format!("SLA must be positive, got {:?}", opts.sla)));
        }
        schema::configure(&conn, opts.busy_timeout)?;
        schema::migrate(&mut conn, &schema::migrations()?)?;
        Ok(Store { conn, sla: opts.sla })
    }

    pub fn sla(&self) -> SignedDuration {
        self.sla
    }

    /// `PRAGMA user_version` of the open database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        schema::user_version(&self.conn)
    }

    /// The underlying connection, for read-only use by callers that need a query the store
    /// does not offer (keep writes in the store).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    // -- intake dedupe: the daemon asks before handling a message --------------------------

    pub fn find_message_by_source(
        &self,
        mailbox: &str,
        uidvalidity: u32,
        uid: u32,
    ) -> Result<Option<MessageRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM messages WHERE mailbox = ?1 AND uidvalidity = ?2 AND uid = ?3",
            MessageRow::COLUMNS
        );
        Ok(self.conn.prepare_cached(&sql)?.query_row(params![mailbox, uidvalidity, uid], MessageRow::from_row).optional()?)
    }

    pub fn find_message_by_sha256(&self, sha256: &str) -> Result<Option<MessageRow>, StoreError> {
        let sql = format!("SELECT {} FROM messages WHERE sha256 = ?1", MessageRow::COLUMNS);
        Ok(self.conn.prepare_cached(&sql)?.query_row([sha256], MessageRow::from_row).optional()?)
    }

    /// The latest message recorded with this Message-ID (brackets optional). Message-IDs
    /// are not unique in practice (clients reuse them, resends keep them), hence "latest".
    pub fn find_message_by_message_id(&self, message_id: &str) -> Result<Option<MessageRow>, StoreError> {
        let mid = strip_brackets(message_id);
        let sql =
            format!("SELECT {} FROM messages WHERE message_id = ?1 ORDER BY id DESC LIMIT 1", MessageRow::COLUMNS);
        Ok(self.conn.prepare_cached(&sql)?.query_row([mid], MessageRow::from_row).optional()?)
    }

    pub fn message(&self, id: MessageId) -> Result<Option<MessageRow>, StoreError> {
        let sql = format!("SELECT {} FROM messages WHERE id = ?1", MessageRow::COLUMNS);
        Ok(self.conn.prepare_cached(&sql)?.query_row([id.0], MessageRow::from_row).optional()?)
    }

    /// The raw bytes of a message kept in the database (`None` when kept on disk or not kept).
    pub fn message_raw(&self, id: MessageId) -> Result<Option<Vec<u8>>, StoreError> {
        let raw: Option<Option<Vec<u8>>> =
            self.conn.query_row("SELECT raw FROM messages WHERE id = ?1", [id.0], |r| r.get(0)).optional()?;
        Ok(raw.flatten())
    }

    // -- cases ----------------------------------------------------------------------------

    pub fn case(&self, r: CaseRef) -> Result<Option<CaseRow>, StoreError> {
        case_row(&self.conn, r)
    }

    /// The active case (open or awaiting_info) for this IP, the latest if several.
    pub fn open_case_for_ip(&self, ip: IpAddr) -> Result<Option<CaseRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM cases WHERE ip = ?1 AND state IN ('open', 'awaiting_info') ORDER BY id DESC LIMIT 1",
            CaseRow::COLUMNS
        );
        Ok(self.conn.prepare_cached(&sql)?.query_row([ip.to_string()], CaseRow::from_row).optional()?)
    }

    /// Replies to `recipient` queued or sent since `since` (for the per-sender rate limit;
    /// failed ones do not count, they never reached anyone). Address compared without case.
    pub fn replies_sent_to_since(&self, recipient: &str, since: Timestamp) -> Result<u32, StoreError> {
        let n: i64 = self.conn.prepare_cached(
            "SELECT count(*) FROM outbox WHERE recipient = ?1 AND queued_at >= ?2 AND state IN ('queued', 'sent')",
        )?
        .query_row(params![recipient, since.as_second()], |r| r.get(0))?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Begin a write transaction (IMMEDIATE; waits up to the busy timeout for the lock).
    pub fn transaction(&mut self) -> Result<Tx<'_>, StoreError> {
        let sla = self.sla;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        Ok(Tx { tx, sla })
    }
}

pub(crate) fn case_row(conn: &Connection, r: CaseRef) -> Result<Option<CaseRow>, StoreError> {
    let sql = format!("SELECT {} FROM cases WHERE id = ?1", CaseRow::COLUMNS);
    Ok(conn.prepare_cached(&sql)?.query_row([r.0], CaseRow::from_row).optional()?)
}

fn strip_brackets(mid: &str) -> &str {
    let t = mid.trim();
    t.strip_prefix('<').and_then(|s| s.strip_suffix('>')).unwrap_or(t)
}

/// A write transaction. Dropped without [`Tx::commit`], it rolls back: nothing of it stays.
pub struct Tx<'c> {
    pub(crate) tx: rusqlite::Transaction<'c>,
    pub(crate) sla: SignedDuration,
}

impl Tx<'_> {
    /// Record a message. A message already recorded (same IMAP UID or same content) is
    /// [`StoreError::Duplicate`]: the caller lost a race with another intake and must skip it.
    pub fn insert_message(&self, m: &NewMessage<'_>) -> Result<MessageId, StoreError> {
        let (mailbox, uidvalidity, uid, path) = match &m.source {
            MessageSource::Imap { mailbox, uidvalidity, uid } => (Some(mailbox.as_str()), Some(*uidvalidity), Some(*uid), None),
            MessageSource::Maildir { path } | MessageSource::File { path } => (None, None, None, Some(path.as_str())),
        };
        let (raw, raw_path) = match m.raw {
            RawMessage::Blob(b) => (Some(b), None),
            RawMessage::Path(p) => (None, Some(p)),
            RawMessage::NotKept => (None, None),
        };
        let size = i64::try_from(m.size).map_err(|_| StoreError::Invalid(format!("message size {}", m.size)))?;
        let res = self
            .tx
            .prepare_cached(
                "INSERT INTO messages (source_kind, mailbox, uidvalidity, uid, path, message_id, sender, subject, \
                 received_at, size, sha256, raw, raw_path, evidence, decision, action, outcome, error) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            )?
            .execute(params![
                m.source.kind(),
                mailbox,
                uidvalidity,
                uid,
                path,
                m.message_id.as_deref().map(strip_brackets),
                m.sender,
                m.subject,
                m.received_at.as_second(),
                size,
                m.sha256,
                raw,
                raw_path,
                m.evidence,
                m.decision,
                m.action.map(|a| a.as_str()),
                m.outcome,
                m.error,
            ]);
        match res {
            Ok(_) => Ok(MessageId(self.tx.last_insert_rowid())),
            Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
                if e.code == ErrorCode::ConstraintViolation && msg.starts_with("UNIQUE") =>
            {
                Err(StoreError::Duplicate(msg))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Record what became of a message.
    pub fn set_outcome(&self, msg: MessageId, outcome: super::Outcome, error: Option<&str>) -> Result<(), StoreError> {
        let n = self
            .tx
            .prepare_cached("UPDATE messages SET outcome = ?2, error = ?3 WHERE id = ?1")?
            .execute(params![msg.0, outcome, error])?;
        if n == 0 {
            return Err(StoreError::Invalid(format!("no message {msg}")));
        }
        Ok(())
    }

    /// Open a case: `open` with `due_at = now + SLA`, or `awaiting_info` with no clock.
    /// Writes the `opened` event.
    pub fn open_case(&self, c: &NewCase, now: Timestamp) -> Result<CaseRef, StoreError> {
        let (state, started, due) = if c.awaiting_info {
            ("awaiting_info", None, None)
        } else {
            if c.ip.is_none() {
                return Err(StoreError::Invalid("an open case needs the banned IP".into()));
            }
            (("open"), Some(now.as_second()), Some(sla::due_at(now, self.sla)?.as_second()))
        };
        self.tx
            .prepare_cached(
                "INSERT INTO cases (ip, status_code, ndr_line, sender, language, state, opened_at, sla_started_at, \
                 due_at, opened_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                c.ip.map(|ip| ip.to_string()),
                c.status_code.map(|s| s.to_string()),
                c.ndr_line,
                c.sender,
                c.language.code(),
                state,
                now.as_second(),
                started,
                due,
                c.opened_by.map(|m| m.0),
            ])?;
        let r = CaseRef(self.tx.last_insert_rowid());
        let text = match (c.awaiting_info, c.ip) {
            (true, _) => "request incomplete; asked the sender for what is missing".to_string(),
            (false, Some(ip)) => format!("request for {ip}"),
            (false, None) => String::new(),
        };
        self.add_event(&NewEvent {
            case: r,
            kind: EventKind::Opened,
            actor: DAEMON_ACTOR.into(),
            text: Some(text),
            message: c.opened_by,
            outbox: None,
            at: now,
        })?;
        Ok(r)
    }

    /// An awaiting_info case got what was missing: it becomes `open` and its SLA clock
    /// starts now. Writes the `completed` event (with the message that completed it).
    pub fn complete_case(
        &self,
        r: CaseRef,
        code: StatusCode,
        ip: IpAddr,
        ndr_line: Option<&str>,
        message: Option<MessageId>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let case = case_row(&self.tx, r)?.ok_or(StoreError::NotFound(r))?;
        if case.state != super::CaseState::AwaitingInfo {
            return Err(StoreError::WrongState { case: r, state: case.state, action: "complete" });
        }
        self.tx
            .prepare_cached(
                "UPDATE cases SET state = 'open', ip = ?2, status_code = ?3, ndr_line = coalesce(?4, ndr_line), \
                 sla_started_at = ?5, due_at = ?6 WHERE id = ?1",
            )?
            .execute(params![
                r.0,
                ip.to_string(),
                code.to_string(),
                ndr_line,
                now.as_second(),
                sla::due_at(now, self.sla)?.as_second()
            ])?;
        self.add_event(&NewEvent {
            case: r,
            kind: EventKind::Completed,
            actor: DAEMON_ACTOR.into(),
            text: Some(format!("request completed: {code} for {ip}")),
            message,
            outbox: None,
            at: now,
        })
    }

    pub fn add_event(&self, e: &NewEvent) -> Result<(), StoreError> {
        add_event(&self.tx, e)
    }

    /// Queue a reply, sendable from `now`. Writes a `reply_queued` event on its case.
    pub fn queue_reply(&self, r: &NewReply, now: Timestamp) -> Result<OutboxId, StoreError> {
        super::outbox::queue(&self.tx, r, now)
    }

    /// The case, read inside this transaction.
    pub fn case(&self, r: CaseRef) -> Result<Option<CaseRow>, StoreError> {
        case_row(&self.tx, r)
    }

    pub fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit()?)
    }
}

pub(crate) fn add_event(conn: &Connection, e: &NewEvent) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO events (case_id, kind, actor, text, message_ref, outbox_ref, at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        e.case.0,
        e.kind,
        e.actor,
        e.text,
        e.message.map(|m| m.0),
        e.outbox.map(|o| o.0),
        e.at.as_second()
    ])?;
    Ok(())
}
