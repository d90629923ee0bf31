//! Retention: what is dropped from the database, and when (`[retention]`, `delistd purge`).
//!
//! * The raw bytes of a message go `raw_days` after it was received, once no case it
//!   belongs to is open or closed less than `raw_days` ago. The row stays (Message-ID,
//!   SHA-256, source key: what keeps intake exactly-once), with its evidence and decision;
//!   `raw_purged_at` says when the bytes went. Quarantined messages keep theirs:
//!   `reprocess` needs them.
//! * With `case_days`, a case closed that long ago is deleted with its history, its replies
//!   and the messages that belong to no other case.
//! * The search index follows: a message whose bytes went is searchable by its subject
//!   only; a deleted message leaves the index.
//!
//! Work is done in small batches (one short transaction each), so the daemon's intake never
//! waits long for the lock; freed pages are returned to the file system with incremental
//! vacuum, so the file shrinks. Like the rest of the store, nothing here reads the clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rusqlite::{params, OptionalExtension};

use super::{MessageId, Store, StoreError};
use crate::config::Retention;

/// Rows handled per transaction.
pub const BATCH: usize = 200;

/// What a purge removed (or, dry, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PurgeReport {
    /// Messages whose raw bytes were dropped, and how many bytes that was.
    pub raw_messages: u64,
    pub raw_bytes: u64,
    /// Closed cases deleted, with their events, replies and messages.
    pub cases: u64,
    pub events: u64,
    pub replies: u64,
    pub messages: u64,
    /// Pages given back to the file system by incremental vacuum.
    pub pages_freed: u64,
}

impl PurgeReport {
    pub fn is_empty(&self) -> bool {
        self.raw_messages == 0 && self.cases == 0
    }

    fn add(&mut self, o: &PurgeReport) {
        self.raw_messages += o.raw_messages;
        self.raw_bytes += o.raw_bytes;
        self.cases += o.cases;
        self.events += o.events;
        self.replies += o.replies;
        self.messages += o.messages;
        self.pages_freed += o.pages_freed;
    }
}

impl std::fmt::Display for PurgeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} raw message(s) ({} bytes); {} closed case(s) with {} event(s), {} reply(ies), {} message(s)",
            self.raw_messages, self.raw_bytes, self.cases, self.events, self.replies, self.messages
        )
    }
}

fn days(n: u32) -> SignedDuration {
    SignedDuration::from_hours(i64::from(n) * 24)
}

/// Messages whose raw bytes are due to go (at most `limit`): received before `cutoff`,
/// not quarantined, and no case of theirs open or closed after `cutoff`.
const RAW_DUE: &str = "
SELECT m.id, coalesce(length(m.raw), 0), m.raw_path FROM messages m
WHERE (m.raw IS NOT NULL OR m.raw_path IS NOT NULL)
  AND m.received_at <= ?1
  AND m.outcome NOT IN ('quarantined', 'received')
  AND NOT EXISTS (SELECT 1 FROM events e JOIN cases c ON c.id = e.case_id
                  WHERE e.message_ref = m.id AND (c.resolved_at IS NULL OR c.resolved_at > ?1))
  AND NOT EXISTS (SELECT 1 FROM cases c
                  WHERE c.opened_by = m.id AND (c.resolved_at IS NULL OR c.resolved_at > ?1))
ORDER BY m.id LIMIT ?2";

const CASES_DUE: &str = "
SELECT id FROM cases WHERE state IN ('resolved', 'rejected') AND resolved_at <= ?1 ORDER BY id LIMIT ?2";

impl Store {
    /// When the raw bytes of a message were dropped by retention, if they were.
    pub fn raw_purged_at(&self, id: MessageId) -> Result<Option<Timestamp>, StoreError> {
        let t: Option<Option<i64>> = self
            .conn
            .query_row("SELECT raw_purged_at FROM messages WHERE id = ?1", [id.0], |r| r.get(0))
            .optional()?;
        Ok(t.flatten().and_then(|s| Timestamp::from_second(s).ok()))
    }

    /// One batch of retention work (at most `limit` messages and `limit` cases). Returns
    /// what it did; an empty report means nothing more is due.
    pub fn purge_batch(&mut self, r: &Retention, now: Timestamp, limit: usize, dry_run: bool) -> Result<PurgeReport, StoreError> {
        let mut rep = PurgeReport::default();
        let raw_cutoff = (now - days(r.raw_days)).as_second();
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let due: Vec<(i64, i64, Option<String>)> = {
            let mut st = tx.prepare_cached(RAW_DUE)?;
            let rows = st.query_map(params![raw_cutoff, limit as i64], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (id, bytes, path) in &due {
            rep.raw_messages += 1;
            rep.raw_bytes += *bytes as u64;
            if !dry_run {
                tx.execute("UPDATE messages SET raw = NULL, raw_path = NULL, raw_purged_at = ?2 WHERE id = ?1", params![id, now.as_second()])?;
                // The text goes from the search index with the bytes; the subject, which
                // the row keeps, stays searchable.
                let subject: Option<String> = tx.query_row("SELECT subject FROM messages WHERE id = ?1", [id], |r| r.get(0))?;
                super::search::unindex_message(&tx, *id)?;
                super::search::index_message(&tx, *id, subject.as_deref(), None)?;
                if let Some(p) = path {
                    // Kept on disk: the file goes too. Already gone is fine.
                    if let Err(e) = std::fs::remove_file(p) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            tracing::warn!(message = id, path = %p, error = %e, "could not remove a raw message file");
                        }
                    }
                }
            }
        }
        if let Some(case_days) = r.case_days {
            let cutoff = (now - days(case_days)).as_second();
            let cases: Vec<i64> = {
                let mut st = tx.prepare_cached(CASES_DUE)?;
                let rows = st.query_map(params![cutoff, limit as i64], |row| row.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            for case in cases {
                rep.cases += 1;
                let messages: Vec<i64> = {
                    let mut st = tx.prepare_cached(
                        "SELECT message_ref FROM events WHERE case_id = ?1 AND message_ref IS NOT NULL
                         UNION SELECT opened_by FROM cases WHERE id = ?1 AND opened_by IS NOT NULL
                         UNION SELECT caused_by FROM outbox WHERE case_id = ?1 AND caused_by IS NOT NULL",
                    )?;
                    let rows = st.query_map([case], |row| row.get(0))?;
                    rows.collect::<Result<_, _>>()?
                };
                let count = |q: &str| tx.query_row(q, [case], |row| row.get::<_, i64>(0));
                rep.events += count("SELECT count(*) FROM events WHERE case_id = ?1")? as u64;
                rep.replies += count("SELECT count(*) FROM outbox WHERE case_id = ?1")? as u64;
                // Foreign keys are on: what refers to a row goes before the row.
                tx.execute("DELETE FROM events WHERE case_id = ?1", [case])?;
                tx.execute("DELETE FROM outbox WHERE case_id = ?1", [case])?;
                let sender: String = tx.query_row("SELECT sender FROM cases WHERE id = ?1", [case], |r| r.get(0))?;
                tx.execute("DELETE FROM cases WHERE id = ?1", [case])?;
                super::search::unindex_sender(&tx, case, &sender)?;
                for m in messages {
                    // A message that also concerns another case (two IPs in one request)
                    // stays until that case goes too.
                    let n = tx.execute(
                        "DELETE FROM messages WHERE id = ?1
                         AND NOT EXISTS (SELECT 1 FROM events WHERE message_ref = ?1)
                         AND NOT EXISTS (SELECT 1 FROM cases WHERE opened_by = ?1)
                         AND NOT EXISTS (SELECT 1 FROM outbox WHERE caused_by = ?1)",
                        [m],
                    )?;
                    if n > 0 {
                        super::search::unindex_message(&tx, m)?;
                    }
                    rep.messages += n as u64;
                }
            }
        }
        if dry_run {
            // Nothing written; rolled back when dropped.
            return Ok(rep);
        }
        tx.commit()?;
        Ok(rep)
    }

    /// Give free pages back to the file system. A database created before retention existed
    /// has auto_vacuum off: it is switched to incremental once, with a full VACUUM (the only
    /// way to change it), the first time something was purged.
    pub fn reclaim_space(&mut self) -> Result<u64, StoreError> {
        let mode: i64 = self.conn.pragma_query_value(None, "auto_vacuum", |r| r.get(0))?;
        let free_before: i64 = self.conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
        if mode != 2 {
            tracing::info!("switching the database to incremental vacuum (one full VACUUM)");
            self.conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
            self.conn.execute_batch("VACUUM")?;
        } else {
            // One page per step: step it to the end (a single execute would free one page).
            let mut st = self.conn.prepare("PRAGMA incremental_vacuum")?;
            let mut rows = st.query([])?;
            while rows.next()?.is_some() {}
        }
        let free_after: i64 = self.conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
        // The truncation reaches the main file at the next checkpoint.
        self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        Ok((free_before - free_after).max(0) as u64)
    }

    /// Everything due, batch by batch (for `delistd purge`). A dry run counts one pass over
    /// what is due without changing anything.
    pub fn purge(&mut self, r: &Retention, now: Timestamp, dry_run: bool) -> Result<PurgeReport, StoreError> {
        if dry_run {
            return self.purge_batch(r, now, usize::MAX >> 1, true);
        }
        let mut total = PurgeReport::default();
        loop {
            let rep = self.purge_batch(r, now, BATCH, false)?;
            total.add(&rep);
            if rep.is_empty() {
                break;
            }
        }
        if !total.is_empty() {
            total.pages_freed = self.reclaim_space()?;
        }
        Ok(total)
    }
}

/// The daemon's retention task: once shortly after start, then every day, in batches with
/// a pause between them so intake and the outbox get the store in between. Self-contained:
/// it takes the shared store, the settings, a stop signal and a clock.
pub async fn daily(
    store: Arc<Mutex<Store>>,
    retention: Retention,
    mut stop: tokio::sync::watch::Receiver<bool>,
    clock: fn() -> Timestamp,
) {
    const FIRST_RUN_AFTER: Duration = Duration::from_secs(60);
    const EVERY: Duration = Duration::from_secs(24 * 3600);
    const PAUSE: Duration = Duration::from_millis(200);
    let mut wait = FIRST_RUN_AFTER;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        wait = EVERY;
        let mut total = PurgeReport::default();
        loop {
            if *stop.borrow() {
                return;
            }
            let rep = {
                let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
                s.purge_batch(&retention, clock(), BATCH, false)
            };
            match rep {
                Ok(rep) if rep.is_empty() => break,
                Ok(rep) => total.add(&rep),
                Err(e) => {
                    tracing::warn!(error = %e, "retention: batch failed; trying again tomorrow");
                    break;
                }
            }
            tokio::time::sleep(PAUSE).await;
        }
        if !total.is_empty() {
            let freed = store.lock().unwrap_or_else(|p| p.into_inner()).reclaim_space();
            match freed {
                Ok(pages) => tracing::info!(purged = %total, pages_freed = pages, "retention"),
                Err(e) => tracing::warn!(purged = %total, error = %e, "retention: space not reclaimed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::{NewCase, NewEvent, StoreOptions};

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    const DAY: i64 = 86_400;
    const T0: i64 = 1_700_000_000;

    /// A message of `size` bytes, opening a case that closes at `closed` (or stays open).
    fn message_with_case(s: &mut Store, n: i64, size: usize, closed: Option<i64>) -> (i64, i64) {
        let raw = vec![b'x'; size];
        s.conn
            .execute(
                "INSERT INTO messages (source_kind, path, received_at, size, sha256, raw, outcome)
                 VALUES ('file', ?1, ?2, ?3, ?4, ?5, 'processed')",
                params![format!("m{n}"), T0, size as i64, format!("sha{n}"), raw],
            )
            .unwrap();
        let msg = s.conn.last_insert_rowid();
        let tx = s.transaction().unwrap();
        let case = tx
            .open_case(
                &NewCase {
                    ip: Some(format!("192.0.2.{n}").parse().unwrap()),
                    status_code: None,
                    ndr_line: None,
                    sender: format!("s{n}@example.org"),
                    language: crate::types::Lang::En,
                    awaiting_info: false,
                    opened_by: Some(MessageId(msg)),
                },
                ts(T0),
            )
            .unwrap();
        tx.add_event(&NewEvent {
            case,
            kind: crate::cases::EventKind::Message,
            actor: "delistd".into(),
            text: None,
            message: Some(MessageId(msg)),
            outbox: None,
            at: ts(T0),
        })
        .unwrap();
        tx.commit().unwrap();
        if let Some(at) = closed {
            s.conn.execute("UPDATE cases SET state = 'resolved', resolved_at = ?2 WHERE id = ?1", params![case.0, at]).unwrap();
        }
        (msg, case.0)
    }

    #[test]
    fn raw_bytes_go_only_after_the_case_closed_long_enough() {
        let mut s = Store::open_in_memory(StoreOptions::default()).unwrap();
        let (old, _) = message_with_case(&mut s, 1, 100, Some(T0 + DAY));
        let (young, _) = message_with_case(&mut s, 2, 100, Some(T0 + 80 * DAY));
        let (open, _) = message_with_case(&mut s, 3, 100, None);
        let r = Retention { raw_days: 90, case_days: None };
        let now = ts(T0 + 100 * DAY);
        let dry = s.purge(&r, now, true).unwrap();
        assert_eq!((dry.raw_messages, dry.raw_bytes), (1, 100));
        assert!(s.message_raw(MessageId(old)).unwrap().is_some(), "a dry run changes nothing");
        let done = s.purge(&r, now, false).unwrap();
        assert_eq!(done.raw_messages, 1);
        assert!(s.message_raw(MessageId(old)).unwrap().is_none());
        assert_eq!(s.raw_purged_at(MessageId(old)).unwrap(), Some(now));
        assert!(s.message(MessageId(old)).unwrap().is_some(), "the row and its evidence stay");
        for kept in [young, open] {
            assert!(s.message_raw(MessageId(kept)).unwrap().is_some());
        }
        assert!(s.purge(&r, now, false).unwrap().is_empty(), "nothing twice");
    }

    #[test]
    fn closed_cases_go_with_their_history_after_case_days() {
        let mut s = Store::open_in_memory(StoreOptions::default()).unwrap();
        let (msg, case) = message_with_case(&mut s, 1, 10, Some(T0 + DAY));
        let (_, kept) = message_with_case(&mut s, 2, 10, None);
        let r = Retention { raw_days: 90, case_days: Some(365) };
        assert_eq!(s.purge(&r, ts(T0 + 300 * DAY), false).unwrap().cases, 0);
        let rep = s.purge(&r, ts(T0 + 400 * DAY), false).unwrap();
        assert_eq!((rep.cases, rep.messages), (1, 1), "{rep:?}");
        assert!(s.case(crate::types::CaseRef(case)).unwrap().is_none());
        assert!(s.message(MessageId(msg)).unwrap().is_none());
        assert!(s.case(crate::types::CaseRef(kept)).unwrap().is_some());
    }

    /// Messages whose search-index row holds `word`.
    fn found(s: &Store, word: &str) -> Vec<i64> {
        let q = crate::cases::search::match_expression(word).unwrap();
        let mut st = s.conn.prepare("SELECT rowid FROM message_search WHERE message_search MATCH ?1").unwrap();
        st.query_map([q], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }

    #[test]
    fn purged_text_leaves_the_search_index() {
        use crate::cases::store::tests::{imap_message, new_case};
        let mut s = Store::open_in_memory(StoreOptions::default()).unwrap();
        let raw = b"Subject: Please delist\r\n\r\nOur server zanzibar-relay sends invoices.\r\n";
        let tx = s.transaction().unwrap();
        let m = tx.insert_message(&imap_message(1, raw, ts(T0))).unwrap();
        let c = tx.open_case(&new_case("192.0.2.1", Some(m)), ts(T0)).unwrap();
        tx.set_outcome(m, crate::cases::Outcome::Processed, None).unwrap();
        tx.commit().unwrap();
        assert_eq!(found(&s, "zanzibar"), [m.0]);
        s.conn.execute("UPDATE cases SET state = 'resolved', resolved_at = ?2 WHERE id = ?1", params![c.0, T0 + DAY]).unwrap();
        let r = Retention { raw_days: 90, case_days: Some(365) };
        assert_eq!(s.purge(&r, ts(T0 + 100 * DAY), false).unwrap().raw_messages, 1);
        assert!(found(&s, "zanzibar").is_empty(), "the purged text is not searchable");
        assert_eq!(found(&s, "delist"), [m.0], "the subject, which the row keeps, is");
        assert_eq!(s.purge(&r, ts(T0 + 400 * DAY), false).unwrap().messages, 1);
        assert!(found(&s, "delist").is_empty(), "a deleted message leaves the index");
        let rows: i64 = s.conn.query_row("SELECT count(*) FROM message_search", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 0);
        let senders: i64 = s.conn.query_row("SELECT count(*) FROM case_senders", [], |r| r.get(0)).unwrap();
        assert_eq!(senders, 0, "the sender's address leaves the sender index with its last case");
    }

    #[test]
    fn the_file_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let mut s = Store::open(&path, StoreOptions::default()).unwrap();
        for n in 1..=60 {
            message_with_case(&mut s, n, 64 * 1024, Some(T0 + DAY));
        }
        s.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        let rep = s.purge(&Retention { raw_days: 30, case_days: None }, ts(T0 + 60 * DAY), false).unwrap();
        assert_eq!(rep.raw_messages, 60);
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(after < before / 4, "file {before} -> {after} bytes");
    }
}
