//! What the store keeps of the blocklist link (schema version 3): the listing of a case's
//! IP, cases answered at once because their IP was not listed, and the first-request
//! `delist_command` waiting to run. The store stays ignorant of where listings come from:
//! it takes plain values, and never reads the clock.

use std::net::IpAddr;

use jiff::Timestamp;
use rusqlite::{params, OptionalExtension};

use super::model::{CaseRow, CaseState, EventKind, NewEvent};
use super::store::case_row;
use super::{Store, StoreError, Tx, BLOCKLIST_ACTOR};
use crate::types::CaseRef;

/// A listing to record on a case.
#[derive(Debug, Clone, Copy)]
pub struct ListingRecord<'a> {
    pub source: &'a str,
    pub reason: Option<&'a str>,
    pub since: Option<Timestamp>,
}

impl Tx<'_> {
    /// Record what the list says of the case's IP, looked up at `now`.
    pub fn record_listing(&self, r: CaseRef, l: ListingRecord<'_>, now: Timestamp) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "UPDATE cases SET listing_source = ?2, listing_reason = ?3, listing_since = ?4, \
                 listing_checked_at = ?5 WHERE id = ?1",
            )?
            .execute(params![r.0, l.source, l.reason, l.since.map(|t| t.as_second()), now.as_second()])?;
        Ok(())
    }

    /// Close a just-opened case whose IP is on no source: resolved `not_listed`, answered
    /// now (the `not_listed` reply is the first response), with the sources in the history.
    pub fn resolve_not_listed(&self, r: CaseRef, sources: &str, now: Timestamp) -> Result<(), StoreError> {
        let case = case_row(&self.tx, r)?.ok_or(StoreError::NotFound(r))?;
        if case.state != CaseState::Open {
            return Err(StoreError::WrongState { case: r, state: case.state, action: "resolve as not listed" });
        }
        self.tx
            .prepare_cached(
                "UPDATE cases SET state = 'resolved', resolved_at = ?2, resolution = 'not_listed', \
                 first_response_at = coalesce(first_response_at, ?2), listing_source = NULL, \
                 listing_checked_at = ?2 WHERE id = ?1",
            )?
            .execute(params![r.0, now.as_second()])?;
        self.add_event(&NewEvent {
            case: r,
            kind: EventKind::Resolved,
            actor: BLOCKLIST_ACTOR.into(),
            text: Some(format!(
                "not_listed: {} is on no source ({sources}); answered at once",
                case.ip.unwrap_or_default()
            )),
            message: None,
            outbox: None,
            at: now,
        })
    }

    /// Ask for the `delist_command` to run for this case (auto_delist_first).
    pub fn mark_auto_delist(&self, r: CaseRef) -> Result<(), StoreError> {
        self.tx.prepare_cached("UPDATE cases SET auto_delist = 1 WHERE id = ?1")?.execute([r.0])?;
        Ok(())
    }

    /// A history entry by the blocklist link (not a staff action: the first response stays).
    pub fn blocklist_note(&self, r: CaseRef, text: String, now: Timestamp) -> Result<(), StoreError> {
        self.add_event(&NewEvent {
            case: r,
            kind: EventKind::Note,
            actor: BLOCKLIST_ACTOR.into(),
            text: Some(text),
            message: None,
            outbox: None,
            at: now,
        })
    }
}

impl Store {
    /// Whether this IP ever had a case, in any state (auto_delist_first honours only a first).
    pub fn ip_had_case(&self, ip: IpAddr) -> Result<bool, StoreError> {
        let found: Option<i64> = self
            .conn
            .prepare_cached("SELECT 1 FROM cases WHERE ip = ?1 LIMIT 1")?
            .query_row([ip.to_string()], |r| r.get(0))
            .optional()?;
        Ok(found.is_some())
    }

    /// Open cases with an IP, the ones looked at longest ago first, after `after` (paging).
    pub fn open_cases_to_recheck(&self, after: i64, limit: u32) -> Result<Vec<CaseRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM cases WHERE state = 'open' AND ip IS NOT NULL AND id > ?1 ORDER BY id LIMIT ?2",
            CaseRow::COLUMNS
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map(params![after, limit], CaseRow::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Cases whose first-request `delist_command` has not run yet.
    pub fn auto_delist_pending(&self) -> Result<Vec<CaseRow>, StoreError> {
        let sql = format!("SELECT {} FROM cases WHERE auto_delist = 1 ORDER BY id LIMIT 100", CaseRow::COLUMNS);
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map([], CaseRow::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The command ran (whatever its result): record it, and do not run it again.
    pub fn auto_delist_done(&mut self, r: CaseRef, history: &str, now: Timestamp) -> Result<(), StoreError> {
        let tx = self.transaction()?;
        tx.tx.prepare_cached("UPDATE cases SET auto_delist = 0 WHERE id = ?1")?.execute([r.0])?;
        tx.blocklist_note(r, history.to_string(), now)?;
        tx.commit()
    }

    /// Record a re-check of an open case's IP that found it still listed.
    pub fn refresh_listing(&mut self, r: CaseRef, l: ListingRecord<'_>, now: Timestamp) -> Result<(), StoreError> {
        let tx = self.transaction()?;
        tx.record_listing(r, l, now)?;
        tx.commit()
    }

    /// A note by the blocklist link, in a transaction of its own.
    pub fn add_blocklist_note(&mut self, r: CaseRef, text: &str, now: Timestamp) -> Result<(), StoreError> {
        let tx = self.transaction()?;
        if case_row(&tx.tx, r)?.is_none() {
            return Err(StoreError::NotFound(r));
        }
        tx.blocklist_note(r, text.to_string(), now)?;
        tx.commit()
    }
}
