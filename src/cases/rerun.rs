//! What running a recorded message through again (`delistd reprocess --force`) needs to
//! know, so that it never answers twice nor opens a case twice for the same request.

use std::net::IpAddr;

use rusqlite::params;

use super::model::{CaseRow, MessageId};
use super::{Store, StoreError};
use crate::types::CaseRef;

impl Store {
    /// Replies queued because of this message, whatever became of them.
    pub fn replies_caused_by(&self, msg: MessageId) -> Result<u32, StoreError> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM outbox WHERE caused_by = ?1")?
            .query_row([msg.0], |r| r.get(0))?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Cases this message opened, oldest first.
    pub fn cases_opened_by(&self, msg: MessageId) -> Result<Vec<CaseRef>, StoreError> {
        let mut st = self.conn.prepare_cached("SELECT id FROM cases WHERE opened_by = ?1 ORDER BY id")?;
        let rows = st.query_map([msg.0], |r| r.get(0).map(CaseRef))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The latest case for this IP in any state (open, awaiting, resolved, rejected).
    pub fn latest_case_for_ip(&self, ip: IpAddr) -> Result<Option<CaseRow>, StoreError> {
        let id: Option<i64> = self
            .conn
            .prepare_cached("SELECT max(id) FROM cases WHERE ip = ?1")?
            .query_row(params![ip.to_string()], |r| r.get(0))?;
        id.map_or(Ok(None), |id| self.case(CaseRef(id)))
    }
}
