//! Replies waiting to be sent (made by [`crate::reply::Builder`]).
//!
//! A reply is queued complete (recipient, Message-ID, raw bytes) in the transaction that
//! decided to send it; the sender loop takes [`Store::due_replies`], sends, and marks each
//! sent, to retry, or failed. Every step leaves an entry in the case's history.

use jiff::Timestamp;
use rusqlite::{params, Connection};

use super::model::{EventKind, NewEvent, NewReply, OutboxId, OutboxRow, OutboxState};
use super::store::add_event;
use super::{Store, StoreError, DAEMON_ACTOR};
use crate::types::CaseRef;

pub(crate) fn queue(conn: &Connection, r: &NewReply, now: Timestamp) -> Result<OutboxId, StoreError> {
    conn.prepare_cached(
        "INSERT INTO outbox (case_id, caused_by, recipient, message_id, subject, raw, state, attempts, queued_at, \
         next_attempt_at, kind) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', 0, ?7, ?7, ?8)",
    )?
    .execute(params![
        r.case.map(|c| c.0),
        r.caused_by.map(|m| m.0),
        r.recipient,
        r.message_id,
        r.subject,
        r.raw,
        now.as_second(),
        r.kind.map(|k| k.name())
    ])?;
    let id = OutboxId(conn.last_insert_rowid());
    if let Some(case) = r.case {
        add_event(
            conn,
            &NewEvent {
                case,
                kind: EventKind::ReplyQueued,
                actor: r.actor.clone(),
                text: Some(format!("to {}: {}", r.recipient, r.subject)),
                message: r.caused_by,
                outbox: Some(id),
                at: now,
            },
        )?;
    }
    Ok(id)
}

impl Store {
    /// Queued replies whose time has come, oldest due first.
    pub fn due_replies(&self, now: Timestamp, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM outbox WHERE state = 'queued' AND next_attempt_at <= ?1 \
             ORDER BY next_attempt_at, id LIMIT ?2",
            OutboxRow::COLUMNS
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map(params![now.as_second(), limit], OutboxRow::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Move retry targets that lie further ahead than `max` back to `now + max`.
    ///
    /// A target can only lie that far ahead if it was computed while the clock was ahead
    /// (a year, say): without this, a reply that failed then would wait until the clock
    /// catches up. Cheap: a range of the `outbox_due` index, empty in normal operation.
    pub fn clamp_retry_targets(&self, now: Timestamp, max: std::time::Duration) -> Result<(), StoreError> {
        let limit = now.as_second().saturating_add(i64::try_from(max.as_secs()).unwrap_or(i64::MAX));
        let n = self
            .conn
            .prepare_cached("UPDATE outbox SET next_attempt_at = ?1 WHERE state = 'queued' AND next_attempt_at > ?1")?
            .execute(params![limit])?;
        if n > 0 {
            tracing::warn!(replies = n, "retry times lay beyond the longest backoff (the clock was ahead); brought forward");
        }
        Ok(())
    }

    /// Replies for `delistd outbox list`: the newest first, of one state or all.
    pub fn outbox_rows(&self, state: Option<OutboxState>, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM outbox WHERE (?1 IS NULL OR state = ?1) ORDER BY id DESC LIMIT ?2",
            OutboxRow::COLUMNS
        );
        let mut st = self.conn.prepare(&sql)?;
        let rows = st.query_map(params![state.map(|s| s.as_str()), limit], OutboxRow::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Put failed replies back in the queue, due now, with their attempts counted afresh
    /// (`delistd outbox retry`). The bytes are not touched: the reply keeps its Message-ID,
    /// so a recipient who got an earlier copy after all sees the same message. `ids` empty:
    /// every failed reply. Returns the ids requeued; an id that is not failed is an error
    /// naming its state, and nothing is requeued.
    pub fn requeue_failed(&mut self, ids: &[OutboxId], actor: &str, now: Timestamp) -> Result<Vec<OutboxId>, StoreError> {
        let tx = self.transaction()?;
        let ids: Vec<OutboxId> = if ids.is_empty() {
            let mut st = tx.tx.prepare("SELECT id FROM outbox WHERE state = 'failed' ORDER BY id")?;
            let rows = st.query_map([], |r| r.get(0).map(OutboxId))?;
            rows.collect::<Result<_, _>>()?
        } else {
            ids.to_vec()
        };
        for id in &ids {
            use rusqlite::OptionalExtension;
            let row: Option<(String, Option<i64>, Option<i64>)> = tx
                .tx
                .query_row("SELECT state, case_id, caused_by FROM outbox WHERE id = ?1", [id.0], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            let (state, case, caused_by) = row.ok_or_else(|| StoreError::Invalid(format!("no reply {id}")))?;
            if state != "failed" {
                return Err(StoreError::ReplyState { id: *id, state });
            }
            tx.tx
                .prepare_cached(
                    "UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_at = ?2 WHERE id = ?1",
                )?
                .execute(params![id.0, now.as_second()])?;
            if let Some(case) = case {
                tx.add_event(&NewEvent {
                    case: CaseRef(case),
                    kind: EventKind::ReplyQueued,
                    actor: actor.to_string(),
                    text: Some(format!("failed reply {id} queued again")),
                    message: caused_by.map(super::MessageId),
                    outbox: Some(*id),
                    at: now,
                })?;
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    /// The server could not be used for these replies (down, TLS, greeting, login): say so on
    /// each one still queued, for staff (`cases show`, `outbox list`), without charging it an
    /// attempt or moving its retry time. Not a history entry: the outcome gets one.
    pub fn note_server_error(&self, ids: &[OutboxId], error: &str) -> Result<(), StoreError> {
        let mut st = self.conn.prepare_cached("UPDATE outbox SET last_error = ?2 WHERE id = ?1 AND state = 'queued'")?;
        for id in ids {
            st.execute(params![id.0, error])?;
        }
        Ok(())
    }

    pub fn outbox_row(&self, id: OutboxId) -> Result<Option<OutboxRow>, StoreError> {
        use rusqlite::OptionalExtension;
        let sql = format!("SELECT {} FROM outbox WHERE id = ?1", OutboxRow::COLUMNS);
        Ok(self.conn.prepare_cached(&sql)?.query_row([id.0], OutboxRow::from_row).optional()?)
    }

    /// The server accepted the reply.
    pub fn mark_sent(&mut self, id: OutboxId, now: Timestamp) -> Result<(), StoreError> {
        self.outbox_step(
            id,
            "UPDATE outbox SET state = 'sent', attempts = attempts + 1, sent_at = ?2, last_error = NULL \
             WHERE id = ?1 AND state = 'queued'",
            params![id.0, now.as_second()],
            EventKind::ReplySent,
            None,
            now,
        )
    }

    /// A temporary failure: try again at `next_at`. No history entry (the final outcome gets one).
    pub fn mark_retry(&mut self, id: OutboxId, error: &str, next_at: Timestamp) -> Result<(), StoreError> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3 \
             WHERE id = ?1 AND state = 'queued'",
            )?
            .execute(params![id.0, error, next_at.as_second()])?;
        if n == 0 {
            return Err(self.not_queued(id)?);
        }
        Ok(())
    }

    /// Why a step that expects a queued reply found none: the reply's current state.
    fn not_queued(&self, id: OutboxId) -> Result<StoreError, StoreError> {
        use rusqlite::OptionalExtension;
        let state: Option<String> =
            self.conn.query_row("SELECT state FROM outbox WHERE id = ?1", [id.0], |r| r.get(0)).optional()?;
        Ok(match state {
            Some(state) => StoreError::ReplyState { id, state },
            None => StoreError::Invalid(format!("no reply {id}")),
        })
    }

    /// A permanent failure, or too many attempts: give up.
    pub fn mark_failed(&mut self, id: OutboxId, error: &str, now: Timestamp) -> Result<(), StoreError> {
        self.outbox_step(
            id,
            "UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = ?2 \
             WHERE id = ?1 AND state = 'queued'",
            params![id.0, error],
            EventKind::ReplyFailed,
            Some(error),
            now,
        )
    }

    fn outbox_step(
        &mut self,
        id: OutboxId,
        sql: &str,
        p: &[&dyn rusqlite::ToSql],
        kind: EventKind,
        text: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let tx = self.transaction()?;
        let n = tx.tx.prepare_cached(sql)?.execute(p)?;
        if n == 0 {
            drop(tx);
            return match self.not_queued(id)? {
                // Marked so already (by an earlier attempt whose commit we did not see, or by
                // another process): nothing to do, and no second history entry.
                StoreError::ReplyState { state, .. } if state == kind_target(kind) => {
                    tracing::debug!(reply = %id, state, "reply already marked");
                    Ok(())
                }
                e => Err(e),
            };
        }
        let (case, caused_by): (Option<i64>, Option<i64>) =
            tx.tx.query_row("SELECT case_id, caused_by FROM outbox WHERE id = ?1", [id.0], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        if let Some(case) = case {
            tx.add_event(&NewEvent {
                case: CaseRef(case),
                kind,
                actor: DAEMON_ACTOR.into(),
                text: text.map(str::to_string),
                message: caused_by.map(super::MessageId),
                outbox: Some(id),
                at: now,
            })?;
        }
        tx.commit()
    }
}

/// The outbox state an outbox history entry records.
fn kind_target(kind: EventKind) -> &'static str {
    match kind {
        EventKind::ReplySent => "sent",
        EventKind::ReplyFailed => "failed",
        _ => "queued",
    }
}
