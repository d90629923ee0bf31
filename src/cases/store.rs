//! [`Store`]: one connection to the case database, and [`Tx`], its write transaction.
//!
//! The pipeline writes a message, the case it opens and the reply it queues through one
//! [`Tx`], so either all of it is recorded or none of it is. Transactions are IMMEDIATE:
//! they take the write lock when they begin, so a busy database makes them wait (busy
//! timeout) instead of failing half-way when a read would have to become a write.
//!
//! A [`Batch`] groups the transactions of several messages into one, committed together
//! with one sync of the log instead of one per message. A message is still all or nothing:
//! a [`Tx`] of the batch dropped without committing makes the whole batch roll back.

use std::cell::Cell;
use std::net::IpAddr;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use super::model::{
    CaseRow, EventKind, MessageId, MessageRow, MessageSource, NewCase, NewEvent, NewMessage, RawMessage,
};
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
    /// A transaction inside the open [`Batch`] was dropped without committing.
    batch_failed: Cell<bool>,
    /// Device and inode of the file when it was opened (see [`Store::check_file`]).
    pub(crate) file: Option<super::integrity::FileId>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.conn.path()).field("sla", &self.sla).finish()
    }
}

/// Replies queued or sent since a time to a domain (see `Store::replies_to_mailbox_since`).
const REPLIES_TO_DOMAIN_SINCE: &str = "SELECT recipient, queued_at FROM outbox WHERE queued_at >= ?1 \
     AND queued_at <= ?3 AND state IN ('queued', 'sent') AND to_staff = 0 AND recipient LIKE ?2 ESCAPE '\\'";

/// The mailbox an address delivers to, for counting: case-folded, the sub-address
/// (`+tag`, RFC 5233) removed. `Victim+1@Example.org` and `victim@example.org` are one.
pub fn mailbox_key(addr: &str) -> String {
    let a = addr.trim().trim_start_matches('<').trim_end_matches('>').to_lowercase();
    match a.rsplit_once('@') {
        Some((local, domain)) => format!("{}@{domain}", local.split('+').next().unwrap_or(local)),
        None => a,
    }
}

/// How many automatic replies went lately to a mailbox and to its domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentReplies {
    /// To the same mailbox ([`mailbox_key`]) since the day's start.
    pub mailbox: u32,
    /// To any address of the domain since the hour's start.
    pub domain: u32,
}

/// The rate limit's count (see `Store::replies_sent_to_since`).
const REPLIES_TO_SINCE: &str =
    "SELECT count(*) FROM outbox WHERE recipient = ?1 AND queued_at >= ?2 AND queued_at <= ?3 \
     AND state IN ('queued', 'sent') AND to_staff = 0";

impl Store {
    /// Open (creating it if needed) and migrate the database at `path`.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        // Made by us, not by SQLite, so that the staff group may write it (see access.rs).
        // Best effort: where we cannot create it, neither can SQLite, which says why.
        let _ = super::access::create_file(path);
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
        schema::configure(&mut conn, opts.busy_timeout)?;
        schema::migrate(&mut conn, &schema::migrations()?)?;
        let file = super::integrity::FileId::of_connection(&conn);
        Ok(Store { conn, sla: opts.sla, batch_failed: Cell::new(false), file })
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
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row(params![mailbox, uidvalidity, uid], MessageRow::from_row)
            .optional()?)
    }

    /// Messages kept aside, oldest first (`delistd reprocess`).
    pub fn quarantined_messages(&self) -> Result<Vec<MessageId>, StoreError> {
        let mut st = self.conn.prepare_cached("SELECT id FROM messages WHERE outcome = 'quarantined' ORDER BY id")?;
        let rows = st.query_map([], |r| r.get(0).map(MessageId))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn find_message_by_sha256(&self, sha256: &str) -> Result<Option<MessageRow>, StoreError> {
        let sql = format!("SELECT {} FROM messages WHERE sha256 = ?1", MessageRow::COLUMNS);
        Ok(self.conn.prepare_cached(&sql)?.query_row([sha256], MessageRow::from_row).optional()?)
    }

    /// The latest message recorded with this Message-ID (brackets optional). Message-IDs
    /// are not unique in practice (clients reuse them, resends keep them), hence "latest".
    pub fn find_message_by_message_id(&self, message_id: &str) -> Result<Option<MessageRow>, StoreError> {
        let mid = strip_brackets(message_id);
        let latest = latest_id(&self.conn, "SELECT id FROM messages WHERE message_id = ?1", mid)?;
        latest.map_or(Ok(None), |id| self.message(MessageId(id)))
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
        let latest = latest_id(&self.conn, OPEN_CASE_FOR_IP, &ip.to_string())?;
        latest.map_or(Ok(None), |id| case_row(&self.conn, CaseRef(id)))
    }

    /// Replies to `recipient` queued or sent since `since` (for the per-sender rate limit;
    /// failed ones do not count, they never reached anyone). Address compared without case.
    ///
    /// Runs for every message that would get a reply, so it is answered from the
    /// `outbox_by_recipient` index alone (schema version 2), without a table row per reply.
    pub fn replies_sent_to_since(&self, recipient: &str, since: Timestamp) -> Result<u32, StoreError> {
        self.replies_sent_to_between(recipient, since, Timestamp::MAX)
    }

    /// [`Store::replies_sent_to_since`], and not after `until` (the window ends now: replies
    /// stamped later were queued while the clock ran ahead).
    pub fn replies_sent_to_between(&self, recipient: &str, since: Timestamp, until: Timestamp) -> Result<u32, StoreError> {
        let n: i64 = self
            .conn
            .prepare_cached(REPLIES_TO_SINCE)?
            .query_row(params![recipient, since.as_second(), until.as_second()], |r| r.get(0))?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Replies queued or sent to `recipient`'s mailbox (any case, any `+tag`) since `day`,
    /// and to its domain since `hour`: what the rate limit counts.
    ///
    /// Both windows end at `now`: replies stamped later were queued while the clock ran
    /// ahead, and must not hold a sender back until it catches up. Mail to our own staff
    /// (escalation warnings) never counts.
    pub fn replies_to_mailbox_since(
        &self,
        recipient: &str,
        day: Timestamp,
        hour: Timestamp,
        now: Timestamp,
    ) -> Result<RecentReplies, StoreError> {
        let key = mailbox_key(recipient);
        let domain = key.rsplit_once('@').map_or("", |(_, d)| d);
        let pattern = format!("%@{}", domain.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        let mut stmt = self.conn.prepare_cached(REPLIES_TO_DOMAIN_SINCE)?;
        let rows = stmt.query_map(params![day.min(hour).as_second(), pattern, now.as_second()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut n = RecentReplies { mailbox: 0, domain: 0 };
        for row in rows {
            let (to, at) = row?;
            let k = mailbox_key(&to);
            if k.rsplit_once('@').map(|(_, d)| d) != Some(domain) {
                continue; // `LIKE` is case-insensitive for ASCII only; the key decides.
            }
            if at >= day.as_second() && k == key {
                n.mailbox += 1;
            }
            if at >= hour.as_second() {
                n.domain += 1;
            }
        }
        Ok(n)
    }

    /// Refresh the query planner's statistics where they are stale (`PRAGMA optimize`,
    /// bounded by `analysis_limit` so it stays fast on a large table). For a long-running
    /// process to call now and then (e.g. daily); the queries do not depend on it.
    pub fn optimize(&self) -> Result<(), StoreError> {
        self.conn.execute_batch("PRAGMA analysis_limit = 1000; PRAGMA optimize;")?;
        Ok(())
    }

    /// Begin a write transaction (IMMEDIATE; waits up to the busy timeout for the lock).
    /// Inside a [`Batch`], a part of the batch's transaction.
    pub fn transaction(&mut self) -> Result<Tx<'_>, StoreError> {
        let sla = self.sla;
        let tx = if self.conn.is_autocommit() {
            TxScope::Own(self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
        } else {
            TxScope::InBatch(BatchPart { conn: &self.conn, failed: &self.batch_failed, committed: false })
        };
        Ok(Tx { tx, sla })
    }

    /// Run `f` with commits that are not synced to disk: with the WAL, `synchronous = NORMAL`
    /// (SQLite, "PRAGMA synchronous"). Such a commit survives the process being killed (the
    /// log is written before the commit returns) and reaches the disk with the next synced
    /// commit or checkpoint; only a power cut or an OS crash before then can lose it. For
    /// records whose loss costs a repeat, not a loss: the outbox marking a reply sent.
    pub fn without_sync<T>(&mut self, f: impl FnOnce(&mut Store) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let out = f(self);
        // FULL again whatever happened: the intake's commits must be durable before it
        // files messages away.
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        out
    }

    /// Begin a batch: until [`Batch::commit`], what [`Store::transaction`]s commit is kept in
    /// one IMMEDIATE transaction, durable (and visible to other connections) only when the
    /// batch commits. Dropped without committing, or with one of its transactions dropped
    /// uncommitted, the whole batch rolls back. A caller that acts on the outside world once
    /// a message is recorded (filing it away in the mailbox) must wait for the batch's commit.
    pub fn batch(&mut self) -> Result<Batch<'_>, StoreError> {
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        self.batch_failed.set(false);
        Ok(Batch { store: self, open: true })
    }
}

/// Several messages' transactions committed as one (see [`Store::batch`]). Derefs to the
/// [`Store`], so the pipeline takes it where it takes a store.
pub struct Batch<'s> {
    store: &'s mut Store,
    open: bool,
}

impl Batch<'_> {
    /// Commit every transaction of the batch, or, if one of them failed, none.
    pub fn commit(mut self) -> Result<(), StoreError> {
        if self.store.batch_failed.get() {
            return Err(StoreError::Invalid("a transaction of the batch failed; the batch was rolled back".into()));
        }
        self.store.conn.prepare_cached("COMMIT")?.execute([])?;
        self.open = false;
        Ok(())
    }
}

impl Deref for Batch<'_> {
    type Target = Store;
    fn deref(&self) -> &Store {
        self.store
    }
}

impl DerefMut for Batch<'_> {
    fn deref_mut(&mut self) -> &mut Store {
        self.store
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if self.open {
            // Nothing of the batch stays; a failure here leaves the transaction to SQLite,
            // which rolls it back when the connection closes.
            let _ = self.store.conn.execute_batch("ROLLBACK");
        }
    }
}

pub(crate) fn case_row(conn: &Connection, r: CaseRef) -> Result<Option<CaseRow>, StoreError> {
    let sql = format!("SELECT {} FROM cases WHERE id = ?1", CaseRow::COLUMNS);
    Ok(conn.prepare_cached(&sql)?.query_row([r.0], CaseRow::from_row).optional()?)
}

/// The highest id `sql` (one `?1` parameter, selecting ids) returns.
///
/// The "latest" look-ups take the ids from their index and pick the highest here rather than
/// with `ORDER BY id DESC LIMIT 1`: SQLite compiles a statement that orders and has a bound
/// parameter again after every transaction of the connection (measured with
/// `SQLITE_STMTSTATUS_REPREPARE`), which cost 7 % of the daemon's time on a backlog.
const OPEN_CASE_FOR_IP: &str = "SELECT id FROM cases WHERE ip = ?1 AND state IN ('open', 'awaiting_info')";

fn latest_id(conn: &Connection, sql: &str, value: &str) -> Result<Option<i64>, StoreError> {
    let mut st = conn.prepare_cached(sql)?;
    let ids = st.query_map([value], |r| r.get::<_, i64>(0))?;
    let mut latest = None;
    for id in ids {
        latest = latest.max(Some(id?));
    }
    Ok(latest)
}

fn strip_brackets(mid: &str) -> &str {
    let t = mid.trim();
    t.strip_prefix('<').and_then(|s| s.strip_suffix('>')).unwrap_or(t)
}

/// A write transaction. Dropped without [`Tx::commit`], it rolls back: nothing of it stays.
pub struct Tx<'c> {
    pub(crate) tx: TxScope<'c>,
    pub(crate) sla: SignedDuration,
}

/// A transaction of its own, or a part of a [`Batch`]; either way a connection.
pub(crate) enum TxScope<'c> {
    Own(rusqlite::Transaction<'c>),
    InBatch(BatchPart<'c>),
}

impl Deref for TxScope<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            TxScope::Own(t) => t,
            TxScope::InBatch(p) => p.conn,
        }
    }
}

/// One message's share of a batch. Not a savepoint: nothing is undone when it fails, the
/// batch is marked failed instead, and refuses to commit (a savepoint would copy every page
/// it touches to the statement journal, for a rollback the daemon never needs: a failed
/// message stops the batch anyway).
pub(crate) struct BatchPart<'c> {
    conn: &'c Connection,
    failed: &'c Cell<bool>,
    committed: bool,
}

impl Drop for BatchPart<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.failed.set(true);
        }
    }
}

impl Tx<'_> {
    /// Record a message. A message already recorded (same IMAP UID or same content) is
    /// [`StoreError::Duplicate`]: the caller lost a race with another intake and must skip it.
    /// Record a new evidence, decision and outcome for a message recorded before
    /// (`delistd reprocess` of a quarantined message). Its source, content and raw bytes stay.
    pub fn rerecord_message(&self, id: MessageId, m: &NewMessage<'_>) -> Result<(), StoreError> {
        let n = self
            .tx
            .prepare_cached(
                "UPDATE messages SET message_id = ?2, sender = ?3, subject = ?4, evidence = ?5, decision = ?6, \
                 action = ?7, outcome = ?8, error = ?9 WHERE id = ?1",
            )?
            .execute(params![
                id.0,
                m.message_id.as_deref().map(strip_brackets),
                m.sender,
                m.subject,
                m.evidence,
                m.decision,
                m.action.map(|a| a.as_str()),
                m.outcome,
                m.error,
            ])?;
        if n == 0 {
            return Err(StoreError::Invalid(format!("no message {}", id.0)));
        }
        // The subject may read differently now: index the message again.
        let raw: Option<Vec<u8>> = self.tx.query_row("SELECT raw FROM messages WHERE id = ?1", [id.0], |r| r.get(0))?;
        super::search::unindex_message(&self.tx, id.0)?;
        super::search::index_message(&self.tx, id.0, m.subject.as_deref(), raw.as_deref())?;
        Ok(())
    }

    pub fn insert_message(&self, m: &NewMessage<'_>) -> Result<MessageId, StoreError> {
        let (mailbox, uidvalidity, uid, path) = match &m.source {
            MessageSource::Imap { mailbox, uidvalidity, uid } => {
                (Some(mailbox.as_str()), Some(*uidvalidity), Some(*uid), None)
            }
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
            Ok(_) => {
                let id = self.tx.last_insert_rowid();
                // Searchable from the moment it is recorded, in the same transaction. Bytes
                // kept on disk are not read back here: the subject is indexed.
                let raw = match m.raw {
                    RawMessage::Blob(b) => Some(b),
                    RawMessage::Path(_) | RawMessage::NotKept => None,
                };
                super::search::index_message(&self.tx, id, m.subject.as_deref(), raw)?;
                Ok(MessageId(id))
            }
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
                 due_at, opened_by, ip_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
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
                c.ip.map(super::search::ip_key),
            ])?;
        let r = CaseRef(self.tx.last_insert_rowid());
        super::search::index_sender(&self.tx, r.0, &c.sender)?;
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
                 sla_started_at = ?5, due_at = ?6, ip_key = ?7 WHERE id = ?1",
            )?
            .execute(params![
                r.0,
                ip.to_string(),
                code.to_string(),
                ndr_line,
                now.as_second(),
                sla::due_at(now, self.sla)?.as_second(),
                super::search::ip_key(ip),
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

    /// [`Store::open_case_for_ip`], read inside this transaction.
    pub fn open_case_for_ip(&self, ip: IpAddr) -> Result<Option<CaseRow>, StoreError> {
        let latest = latest_id(&self.tx, OPEN_CASE_FOR_IP, &ip.to_string())?;
        latest.map_or(Ok(None), |id| case_row(&self.tx, CaseRef(id)))
    }

    pub fn commit(self) -> Result<(), StoreError> {
        match self.tx {
            TxScope::Own(t) => t.commit()?,
            TxScope::InBatch(mut p) => p.committed = true,
        }
        Ok(())
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cases::{sha256_hex, CaseState, OutboxState, Outcome};
    use crate::decide::Action;
    use crate::types::Lang;

    pub(crate) fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    pub(crate) fn imap_message(uid: u32, raw: &[u8], now: Timestamp) -> NewMessage<'_> {
        NewMessage {
            source: MessageSource::Imap { mailbox: "INBOX".into(), uidvalidity: 7, uid },
            message_id: Some(format!("<m{uid}@example.com>")),
            sender: Some("alice@example.com".into()),
            subject: Some("Please delist".into()),
            received_at: now,
            size: raw.len() as u64,
            sha256: sha256_hex(raw),
            raw: RawMessage::Blob(raw),
            evidence: Some(r#"{"status_code":"5.7.511"}"#.into()),
            decision: Some(r#"{"action":"acknowledge"}"#.into()),
            action: Some(Action::Acknowledge),
            outcome: Outcome::Received,
            error: None,
        }
    }

    pub(crate) fn new_case(ip: &str, msg: Option<MessageId>) -> NewCase {
        NewCase {
            ip: Some(ip.parse().unwrap()),
            status_code: Some(StatusCode::BANNED_SENDER),
            ndr_line: Some(format!("550 5.7.511 Access denied, banned sender[{ip}]")),
            sender: "Alice@Example.com".into(),
            language: Lang::Fr,
            opened_by: msg,
            awaiting_info: false,
        }
    }

    pub(crate) fn reply(case: Option<CaseRef>, msg: Option<MessageId>, n: u32) -> NewReply {
        NewReply {
            case,
            caused_by: msg,
            recipient: "alice@example.com".into(),
            message_id: format!("DL-{n}.reply@delist.example"),
            subject: format!("Re: Please delist [{}]", case.map(|c| c.to_string()).unwrap_or_default()),
            raw: b"From: delist@example.net\r\nTo: alice@example.com\r\nSubject: ack\r\n\r\nok\r\n".to_vec(),
            actor: DAEMON_ACTOR.into(),
            kind: None,
        }
    }

    /// One message handled the way the pipeline does it: message + case + reply, one commit.
    pub(crate) fn take_in(store: &mut Store, uid: u32, ip: &str, now: Timestamp) -> (MessageId, CaseRef) {
        let raw = format!("Subject: delist {uid}\r\n\r\n550 5.7.511 banned sender[{ip}]\r\n");
        let tx = store.transaction().unwrap();
        let m = tx.insert_message(&imap_message(uid, raw.as_bytes(), now)).unwrap();
        let c = tx.open_case(&new_case(ip, Some(m)), now).unwrap();
        tx.queue_reply(&reply(Some(c), Some(m), uid), now).unwrap();
        tx.set_outcome(m, Outcome::Processed, None).unwrap();
        tx.commit().unwrap();
        (m, c)
    }

    fn store() -> Store {
        Store::open_in_memory(StoreOptions::default()).unwrap()
    }

    fn count(s: &Store, table: &str) -> i64 {
        s.conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn mailbox_keys_fold_case_and_drop_the_tag() {
        assert_eq!(mailbox_key("Victim+1@Example.ORG"), "victim@example.org");
        assert_eq!(mailbox_key("<victim@example.org>"), "victim@example.org");
        assert_eq!(mailbox_key("a+b+c@x.example"), "a@x.example");
    }

    #[test]
    fn a_message_its_case_and_its_reply_are_recorded_together() {
        let mut s = store();
        let now = t("2025-03-01T10:00:00Z");
        let (m, c) = take_in(&mut s, 1, "203.0.113.7", now);
        let case = s.case(c).unwrap().unwrap();
        assert_eq!(case.state, CaseState::Open);
        assert_eq!(case.ip_addr(), Some("203.0.113.7".parse().unwrap()));
        assert_eq!(case.due_at, Some(t("2025-03-03T10:00:00Z")));
        assert_eq!(case.first_response_at, None, "the automatic acknowledgement is not a response");
        assert_eq!(case.opened_by, Some(m));
        assert_eq!(case.lang(), Lang::Fr);
        let msg = s.message(m).unwrap().unwrap();
        assert_eq!(msg.outcome, "processed");
        assert_eq!(msg.message_id.as_deref(), Some("m1@example.com"), "stored without brackets");
        assert!(msg.has_raw);
        assert_eq!(s.message_raw(m).unwrap().unwrap().len() as u64, msg.size);
        let kinds: Vec<String> = s.case_detail(c).unwrap().unwrap().events.into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["opened", "reply_queued"]);
    }

    #[test]
    fn a_failure_mid_transaction_leaves_nothing() {
        let mut s = store();
        let now = t("2025-03-01T10:00:00Z");
        {
            let tx = s.transaction().unwrap();
            let m = tx.insert_message(&imap_message(1, b"raw one", now)).unwrap();
            let c = tx.open_case(&new_case("203.0.113.7", Some(m)), now).unwrap();
            tx.queue_reply(&reply(Some(c), Some(m), 1), now).unwrap();
            // The same reply Message-ID twice: the second insert fails ...
            assert!(tx.queue_reply(&reply(Some(c), Some(m), 1), now).is_err());
            // ... and the caller returns with `?`, dropping the transaction.
        }
        for table in ["messages", "cases", "events", "outbox"] {
            assert_eq!(count(&s, table), 0, "{table}");
        }
        // The store is usable afterwards, and case ids are not reused (AUTOINCREMENT).
        let (_, c) = take_in(&mut s, 2, "203.0.113.8", now);
        assert_eq!(c, CaseRef(1), "a rolled-back case did not consume an id");
    }

    #[test]
    fn messages_are_found_by_uid_content_and_message_id() {
        let mut s = store();
        let now = t("2025-03-01T10:00:00Z");
        let (m, _) = take_in(&mut s, 42, "203.0.113.7", now);
        assert_eq!(s.find_message_by_source("INBOX", 7, 42).unwrap().map(|r| r.id), Some(m));
        assert!(s.find_message_by_source("INBOX", 8, 42).unwrap().is_none(), "new UIDVALIDITY, new message");
        assert!(s.find_message_by_source("Other", 7, 42).unwrap().is_none());
        let sha = s.message(m).unwrap().unwrap().sha256;
        assert_eq!(s.find_message_by_sha256(&sha).unwrap().map(|r| r.id), Some(m));
        assert!(s.find_message_by_sha256(&sha256_hex(b"other")).unwrap().is_none());
        assert_eq!(s.find_message_by_message_id("<m42@example.com>").unwrap().map(|r| r.id), Some(m));
        assert_eq!(s.find_message_by_message_id("m42@example.com").unwrap().map(|r| r.id), Some(m));
        assert!(s.find_message_by_message_id("m43@example.com").unwrap().is_none());
    }

    #[test]
    fn recording_a_message_twice_is_a_duplicate() {
        let mut s = store();
        let now = t("2025-03-01T10:00:00Z");
        take_in(&mut s, 1, "203.0.113.7", now);
        let tx = s.transaction().unwrap();
        // Same UID, other bytes.
        let err = tx.insert_message(&imap_message(1, b"different bytes", now)).unwrap_err();
        assert!(matches!(err, StoreError::Duplicate(_)), "{err}");
        drop(tx);
        // Same bytes from a file.
        let raw = b"Subject: delist 1\r\n\r\n550 5.7.511 banned sender[203.0.113.7]\r\n";
        let mut m = imap_message(0, raw, now);
        m.source = MessageSource::File { path: "/tmp/x.eml".into() };
        let tx = s.transaction().unwrap();
        assert!(matches!(tx.insert_message(&m), Err(StoreError::Duplicate(_))));
    }

    #[test]
    fn awaiting_info_has_no_clock_until_completed() {
        let mut s = store();
        let t0 = t("2025-03-01T10:00:00Z");
        let tx = s.transaction().unwrap();
        let c = tx
            .open_case(
                &NewCase { ip: None, awaiting_info: true, status_code: None, ..new_case("203.0.113.7", None) },
                t0,
            )
            .unwrap();
        tx.commit().unwrap();
        let case = s.case(c).unwrap().unwrap();
        assert_eq!((case.state, case.due_at, case.ip), (CaseState::AwaitingInfo, None, None));

        let t1 = t("2025-03-04T08:00:00Z");
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let tx = s.transaction().unwrap();
        tx.complete_case(c, StatusCode::BANNED_SENDER, ip, None, None, t1).unwrap();
        tx.commit().unwrap();
        let case = s.case(c).unwrap().unwrap();
        assert_eq!(case.state, CaseState::Open);
        assert_eq!(case.sla_started_at, Some(t1));
        assert_eq!(case.due_at, Some(t("2025-03-06T08:00:00Z")));
        assert_eq!(case.opened_at, t0);
        assert_eq!(s.open_case_for_ip(ip).unwrap().map(|c| c.case_ref), Some(c));

        let tx = s.transaction().unwrap();
        let err = tx.complete_case(c, StatusCode::BANNED_SENDER, ip, None, None, t1).unwrap_err();
        assert!(matches!(err, StoreError::WrongState { state: CaseState::Open, .. }), "{err}");
        assert!(matches!(
            tx.complete_case(CaseRef(99), StatusCode::BANNED_SENDER, ip, None, None, t1),
            Err(StoreError::NotFound(CaseRef(99)))
        ));
    }

    #[test]
    fn an_open_case_needs_an_ip() {
        let mut s = store();
        let tx = s.transaction().unwrap();
        let c = NewCase { ip: None, ..new_case("203.0.113.7", None) };
        assert!(matches!(tx.open_case(&c, t("2025-03-01T10:00:00Z")), Err(StoreError::Invalid(_))));
    }

    #[test]
    fn open_case_for_ip_ignores_closed_cases() {
        let mut s = store();
        let now = t("2025-03-01T10:00:00Z");
        let (_, c) = take_in(&mut s, 1, "203.0.113.7", now);
        let ip = "203.0.113.7".parse().unwrap();
        assert_eq!(s.open_case_for_ip(ip).unwrap().map(|c| c.case_ref), Some(c));
        let res = crate::cases::Resolve {
            actor: "bob".into(),
            note: None,
            resolution: crate::cases::Resolution::Delisted,
            reply: None,
        };
        s.resolve(c, &res, now).unwrap();
        assert!(s.open_case_for_ip(ip).unwrap().is_none());
    }

    #[test]
    fn rate_limit_counts_queued_and_sent_replies_since() {
        let mut s = store();
        let t0 = t("2025-03-01T10:00:00Z");
        take_in(&mut s, 1, "203.0.113.7", t0);
        take_in(&mut s, 2, "203.0.113.8", t("2025-03-01T11:00:00Z"));
        let (_, c3) = take_in(&mut s, 3, "203.0.113.9", t("2025-03-01T12:00:00Z"));
        assert_eq!(s.replies_sent_to_since("ALICE@example.com", t0).unwrap(), 3, "address without case");
        assert_eq!(s.replies_sent_to_since("alice@example.com", t("2025-03-01T10:30:00Z")).unwrap(), 2);
        assert_eq!(s.replies_sent_to_since("bob@example.com", t0).unwrap(), 0);
        let id = s.case_detail(c3).unwrap().unwrap().replies[0].id;
        s.mark_failed(id, "550 no such user", t("2025-03-01T12:01:00Z")).unwrap();
        assert_eq!(s.replies_sent_to_since("alice@example.com", t0).unwrap(), 2, "failed ones do not count");
    }

    #[test]
    fn rate_limit_is_counted_from_the_index_alone() {
        let s = store();
        let plan: Vec<String> = s
            .connection()
            .prepare(&format!("EXPLAIN QUERY PLAN {REPLIES_TO_SINCE}"))
            .unwrap()
            .query_map(params!["a@example.com", 0, 1], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join(" / ");
        assert!(plan.contains("COVERING INDEX outbox_by_recipient"), "{plan}");
    }

    #[test]
    fn outbox_hands_out_due_replies_and_records_each_step() {
        let mut s = store();
        let t0 = t("2025-03-01T10:00:00Z");
        let (_, c1) = take_in(&mut s, 1, "203.0.113.7", t0);
        let (_, c2) = take_in(&mut s, 2, "203.0.113.8", t0);
        let due = s.due_replies(t0, 10).unwrap();
        assert_eq!(due.len(), 2);
        assert_eq!(due[0].state, OutboxState::Queued);
        assert_eq!(s.due_replies(t0, 1).unwrap().len(), 1);

        s.mark_sent(due[0].id, t("2025-03-01T10:00:05Z")).unwrap();
        s.mark_retry(due[1].id, "421 try later", t("2025-03-01T10:05:00Z")).unwrap();
        assert!(s.due_replies(t("2025-03-01T10:01:00Z"), 10).unwrap().is_empty(), "retry not yet due");
        let again = s.due_replies(t("2025-03-01T10:05:00Z"), 10).unwrap();
        assert_eq!((again.len(), again[0].attempts), (1, 1));
        assert_eq!(again[0].last_error.as_deref(), Some("421 try later"));
        s.mark_failed(again[0].id, "550 mailbox unavailable", t("2025-03-01T10:05:01Z")).unwrap();
        assert!(s.due_replies(t("2030-01-01T00:00:00Z"), 10).unwrap().is_empty());
        // Marked the same way again (an earlier commit we did not see, another process):
        // nothing happens, and the history keeps one entry. Marked otherwise: an error that
        // names the state.
        s.mark_sent(due[0].id, t0).unwrap();
        assert!(matches!(s.mark_failed(due[0].id, "late", t0), Err(StoreError::ReplyState { ref state, .. }) if state == "sent"));
        assert!(matches!(s.mark_retry(due[0].id, "late", t0), Err(StoreError::ReplyState { .. })));
        s.mark_failed(again[0].id, "550 again", t("2025-03-01T10:05:02Z")).unwrap();

        let sent = s.outbox_row(due[0].id).unwrap().unwrap();
        assert_eq!((sent.state, sent.sent_at), (OutboxState::Sent, Some(t("2025-03-01T10:00:05Z"))));
        let kinds =
            |c| -> Vec<String> { s.case_detail(c).unwrap().unwrap().events.into_iter().map(|e| e.kind).collect() };
        assert_eq!(kinds(c1), ["opened", "reply_queued", "reply_sent"]);
        assert_eq!(kinds(c2), ["opened", "reply_queued", "reply_failed"]);
    }

    #[test]
    fn case_ids_are_never_reused() {
        let mut s = store();
        let now = t("2025-03-01T10:00:00Z");
        let (_, c1) = take_in(&mut s, 1, "203.0.113.7", now);
        s.conn.execute_batch("DELETE FROM events; DELETE FROM outbox; DELETE FROM cases;").unwrap();
        let (_, c2) = take_in(&mut s, 2, "203.0.113.8", now);
        assert!(c2 > c1);
    }

    #[test]
    fn a_batch_is_seen_by_other_connections_only_once_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sqlite");
        let mut w = Store::open(&path, StoreOptions::default()).unwrap();
        let r = Store::open(&path, StoreOptions::default()).unwrap();
        let now = t("2025-03-01T10:00:00Z");
        let mut batch = w.batch().unwrap();
        for uid in 1..=3 {
            take_in(&mut batch, uid, &format!("203.0.113.{uid}"), now);
        }
        // Inside the batch its own messages are there (the pipeline looks them up) ...
        assert_eq!(count(&batch, "messages"), 3);
        // ... but nobody else sees them, and they are not durable, until it commits.
        assert_eq!(count(&r, "messages"), 0);
        batch.commit().unwrap();
        assert_eq!((count(&r, "messages"), count(&r, "cases"), count(&r, "outbox")), (3, 3, 3));
        // The connection is back to a transaction per call.
        take_in(&mut w, 4, "203.0.113.4", now);
        assert_eq!(count(&r, "messages"), 4);
    }

    #[test]
    fn a_batch_with_a_failed_message_or_dropped_leaves_nothing() {
        let mut s = store();
        let now = t("2025-03-01T10:00:00Z");
        {
            let mut batch = s.batch().unwrap();
            take_in(&mut batch, 1, "203.0.113.1", now);
            {
                // A message that fails half-way: its transaction is dropped uncommitted.
                let tx = batch.transaction().unwrap();
                tx.insert_message(&imap_message(2, b"half done", now)).unwrap();
            }
            take_in(&mut batch, 3, "203.0.113.3", now);
            let err = batch.commit().unwrap_err();
            assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        }
        for table in ["messages", "cases", "events", "outbox"] {
            assert_eq!(count(&s, table), 0, "{table}");
        }
        {
            let mut batch = s.batch().unwrap();
            take_in(&mut batch, 1, "203.0.113.1", now);
            // Dropped without commit (an error returned with `?` half-way through a fetch).
        }
        assert_eq!(count(&s, "messages"), 0);
        // A new batch starts clean.
        let mut batch = s.batch().unwrap();
        take_in(&mut batch, 1, "203.0.113.1", now);
        batch.commit().unwrap();
        assert_eq!(count(&s, "messages"), 1);
    }

    #[test]
    fn the_latest_message_and_open_case_win() {
        let mut s = store();
        let now = t("2025-03-01T10:00:00Z");
        let tx = s.transaction().unwrap();
        let first = tx.insert_message(&imap_message(1, b"one", now)).unwrap();
        let mut again = imap_message(2, b"two", now);
        again.message_id = Some("<m1@example.com>".into());
        let second = tx.insert_message(&again).unwrap();
        let c1 = tx.open_case(&new_case("203.0.113.7", Some(first)), now).unwrap();
        let c2 = tx.open_case(&new_case("203.0.113.7", Some(second)), now).unwrap();
        tx.commit().unwrap();
        assert!(second > first && c2 > c1);
        assert_eq!(s.find_message_by_message_id("m1@example.com").unwrap().map(|m| m.id), Some(second));
        assert_eq!(s.open_case_for_ip("203.0.113.7".parse().unwrap()).unwrap().map(|c| c.case_ref), Some(c2));
    }

    #[test]
    fn unsynced_commits_are_commits_and_the_store_syncs_again_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sqlite");
        let mut s = Store::open(&path, StoreOptions::default()).unwrap();
        let now = t("2025-03-01T10:00:00Z");
        let (_, c) = take_in(&mut s, 1, "203.0.113.1", now);
        let id = s.case_detail(c).unwrap().unwrap().replies[0].id;
        let sync = |s: &Store| -> i64 { s.conn.pragma_query_value(None, "synchronous", |r| r.get(0)).unwrap() };
        let seen = s
            .without_sync(|s| {
                let inside = sync(s);
                s.mark_sent(id, now)?;
                Ok(inside)
            })
            .unwrap();
        assert_eq!((seen, sync(&s)), (1, 2), "NORMAL inside, FULL after");
        // Committed: another connection sees it.
        let other = Store::open(&path, StoreOptions::default()).unwrap();
        assert_eq!(other.outbox_row(id).unwrap().unwrap().state, OutboxState::Sent);
        // And FULL again after a failure inside.
        assert!(s.without_sync(|s| s.mark_failed(id, "late", now)).is_err());
        assert_eq!(sync(&s), 2);
    }
}
