//! What staff do with cases: list, look at one, and act on it.
//!
//! Every staff action is one short transaction that changes the case and writes its
//! history entry, and counts as the case's first response when it is the first.

use std::net::IpAddr;

use jiff::{SignedDuration, Timestamp};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter};

use super::model::{CaseRow, CaseState, EventKind, EventRow, MessageRow, NewEvent, NewReply, OutboxId, OutboxRow};
use super::store::{add_event, case_row};
use super::{sla, Store, StoreError, Tx};
use crate::types::CaseRef;

/// Which cases to list. All conditions must hold.
#[derive(Debug, Clone, Default)]
pub struct CaseFilter {
    /// Any of these states; empty means any state.
    pub states: Vec<CaseState>,
    /// Open and past due.
    pub overdue: bool,
    /// Open and due within this much from now (not yet overdue). With `overdue` as well:
    /// both, i.e. everything due before now + this.
    pub due_within: Option<SignedDuration>,
    pub ip: Option<IpAddr>,
    /// Sender address, compared without regard to case.
    pub sender: Option<String>,
    /// Assigned to this staff member.
    pub assignee: Option<String>,
    /// Opened at or after.
    pub since: Option<Timestamp>,
    /// At most this many rows (`None`: all, for export).
    pub limit: Option<u32>,
    pub offset: u32,
    /// Only cases a person wrote on since the last staff action.
    pub needs_attention: bool,
}

impl CaseFilter {
    /// Listing by urgency (due time) rather than by age: when only open or waiting cases
    /// can match.
    fn by_due(&self) -> bool {
        self.overdue
            || self.due_within.is_some()
            || (!self.states.is_empty() && self.states.iter().all(|s| s.is_active()))
    }

    /// The SQL after `FROM cases`, and its parameters.
    ///
    /// The orderings are chosen so an index gives them: `(state, due_at)` for the work
    /// list, `(opened_at)` for the rest; with a LIMIT, SQLite then stops after a page
    /// instead of sorting a million rows.
    fn to_sql(&self, now: Timestamp) -> (String, Vec<Value>) {
        let mut cond: Vec<String> = Vec::new();
        let mut p: Vec<Value> = Vec::new();
        // One condition with one parameter, numbered as it is added.
        fn push(cond: &mut Vec<String>, c: &str, v: Value, p: &mut Vec<Value>) {
            p.push(v);
            cond.push(c.replace('?', &format!("?{}", p.len())));
        }
        let due_bounded = self.overdue || self.due_within.is_some();
        if due_bounded {
            push(&mut cond, "state = ?", Value::Text("open".into()), &mut p);
            let upper = match self.due_within {
                Some(d) => now.checked_add(d).unwrap_or(Timestamp::MAX),
                None => now,
            };
            if !self.overdue {
                push(&mut cond, "due_at >= ?", Value::Integer(now.as_second()), &mut p);
            }
            push(&mut cond, "due_at < ?", Value::Integer(upper.as_second()), &mut p);
        }
        // With a due bound the state is already `open`; a list that allows it adds nothing.
        let implied = due_bounded && self.states.contains(&CaseState::Open);
        if !(self.states.is_empty() || implied) {
            let list: Vec<String> = self.states.iter().map(|s| format!("'{}'", s.as_str())).collect();
            // Listed by age, closed states match most of the table: walking the opened_at
            // index newest first and stopping after a page beats collecting every resolved
            // case from the state index and sorting them. The unary `+` keeps SQLite from
            // choosing the state index when it has no statistics to know better.
            let column = if self.by_due() { "state" } else { "+state" };
            cond.push(format!("{column} IN ({})", list.join(", ")));
        }
        if let Some(ip) = self.ip {
            push(&mut cond, "ip = ?", Value::Text(ip.to_string()), &mut p);
        }
        if let Some(s) = &self.sender {
            push(&mut cond, "sender = ?", Value::Text(s.clone()), &mut p);
        }
        if let Some(a) = &self.assignee {
            push(&mut cond, "assignee = ?", Value::Text(a.clone()), &mut p);
        }
        if let Some(t) = self.since {
            push(&mut cond, "opened_at >= ?", Value::Integer(t.as_second()), &mut p);
        }
        if self.needs_attention {
            cond.push("needs_attention = 1".into());
        }
        let mut sql = String::new();
        if !cond.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&cond.join(" AND "));
        }
        let only_open = due_bounded || self.states == [CaseState::Open];
        sql.push_str(if only_open {
            // Exactly the order of the (state, due_at, rowid) index: no sort at all.
            " ORDER BY due_at, id"
        } else if self.by_due() {
            // NULL due times (awaiting_info) after the clocked ones.
            " ORDER BY due_at IS NULL, due_at, id"
        } else {
            " ORDER BY opened_at DESC, id DESC"
        });
        if let Some(n) = self.limit {
            p.push(Value::Integer(i64::from(n)));
            sql.push_str(&format!(" LIMIT ?{}", p.len()));
            p.push(Value::Integer(i64::from(self.offset)));
            sql.push_str(&format!(" OFFSET ?{}", p.len()));
        }
        (sql, p)
    }
}

/// A case with everything about it, for `cases show`.
#[derive(Debug, Clone)]
pub struct CaseDetail {
    pub case: CaseRow,
    /// History, oldest first.
    pub events: Vec<EventRow>,
    /// Messages about the case (the one that opened it, follow-ups), oldest first.
    pub messages: Vec<MessageRow>,
    pub replies: Vec<OutboxRow>,
}

/// How staff closed a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The IP was delisted.
    Delisted,
    /// The request was refused.
    Rejected,
}

impl Resolution {
    /// As stored in `cases.resolution`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Delisted => "delisted",
            Resolution::Rejected => "rejected",
        }
    }
}

/// A staff resolution.
#[derive(Debug, Clone)]
pub struct Resolve {
    pub actor: String,
    /// Internal note for the history (never sent).
    pub note: Option<String>,
    pub resolution: Resolution,
    /// The reply to queue with it, already composed.
    pub reply: Option<NewReply>,
}

impl Store {
    /// Cases matching `filter`, in its order (see [`CaseFilter`]).
    pub fn list_cases(&self, filter: &CaseFilter, now: Timestamp) -> Result<Vec<CaseRow>, StoreError> {
        let mut out = Vec::new();
        self.for_each_case(filter, now, |c| {
            out.push(c);
            Ok::<(), StoreError>(())
        })?;
        Ok(out)
    }

    /// Stream matching cases to `f` without holding them all (export). Runs in one read
    /// snapshot; in WAL mode that never blocks the daemon's writes.
    pub fn for_each_case<E>(
        &self,
        filter: &CaseFilter,
        now: Timestamp,
        mut f: impl FnMut(CaseRow) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<StoreError>,
    {
        let (tail, p) = filter.to_sql(now);
        let sql = format!("SELECT {} FROM cases{tail}", CaseRow::COLUMNS);
        let mut st = self.conn.prepare(&sql).map_err(StoreError::from)?;
        let mut rows = st.query(params_from_iter(p)).map_err(StoreError::from)?;
        while let Some(r) = rows.next().map_err(StoreError::from)? {
            f(CaseRow::from_row(r).map_err(StoreError::from)?)?;
        }
        Ok(())
    }

    /// The query plan of a listing, for the benchmark and for anyone wondering why a
    /// listing is slow (`EXPLAIN QUERY PLAN`).
    pub fn explain_list(&self, filter: &CaseFilter, now: Timestamp) -> Result<Vec<String>, StoreError> {
        let (tail, p) = filter.to_sql(now);
        let sql = format!("EXPLAIN QUERY PLAN SELECT {} FROM cases{tail}", CaseRow::COLUMNS);
        let mut st = self.conn.prepare(&sql)?;
        let rows = st.query_map(params_from_iter(p), |r| r.get::<_, String>(3))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A case, its history, messages and replies, read in one snapshot.
    pub fn case_detail(&self, r: CaseRef) -> Result<Option<CaseDetail>, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let Some(case) = case_row(&tx, r)? else { return Ok(None) };
        let events = {
            let sql = format!("SELECT {} FROM events WHERE case_id = ?1 ORDER BY at, id", EventRow::COLUMNS);
            let mut st = tx.prepare_cached(&sql)?;
            let rows = st.query_map([r.0], EventRow::from_row)?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let messages = {
            let sql = format!(
                "SELECT {} FROM messages WHERE id IN \
                 (SELECT message_ref FROM events WHERE case_id = ?1 AND message_ref IS NOT NULL \
                  UNION SELECT opened_by FROM cases WHERE id = ?1) ORDER BY id",
                MessageRow::COLUMNS
            );
            let mut st = tx.prepare_cached(&sql)?;
            let rows = st.query_map([r.0], MessageRow::from_row)?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let replies = {
            let sql = format!("SELECT {} FROM outbox WHERE case_id = ?1 ORDER BY id", OutboxRow::COLUMNS);
            let mut st = tx.prepare_cached(&sql)?;
            let rows = st.query_map([r.0], OutboxRow::from_row)?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        tx.commit()?;
        Ok(Some(CaseDetail { case, events, messages, replies }))
    }

    /// Close an open (or awaiting) case as delisted or rejected, with an optional reply
    /// queued in the same transaction. Returns the reply's outbox id.
    pub fn resolve(&mut self, r: CaseRef, res: &Resolve, now: Timestamp) -> Result<Option<OutboxId>, StoreError> {
        let tx = self.transaction()?;
        let case = active_case(&tx, r, "resolve")?;
        warn_if_before_opening(&case, now);
        let (state, kind) = match res.resolution {
            Resolution::Delisted => (CaseState::Resolved, EventKind::Resolved),
            Resolution::Rejected => (CaseState::Rejected, EventKind::Rejected),
        };
        tx.tx
            .prepare_cached(
                "UPDATE cases SET state = ?2, resolved_at = max(?3, opened_at), \
                 first_response_at = coalesce(first_response_at, max(?3, opened_at)), resolution = ?4, \
                 needs_attention = 0, sla_remaining = NULL WHERE id = ?1",
            )?
            .execute(params![case.case_ref.0, state, now.as_second(), res.resolution.as_str()])?;
        let outbox = match &res.reply {
            Some(reply) => Some(tx.queue_reply(reply, now)?),
            None => None,
        };
        tx.add_event(&NewEvent {
            case: r,
            kind,
            actor: res.actor.clone(),
            text: res.note.clone(),
            message: None,
            outbox,
            at: now,
        })?;
        tx.commit()?;
        Ok(outbox)
    }

    /// Put a resolved or rejected case back to `open` with a fresh SLA clock (a reopened
    /// request is a new request to answer).
    pub fn reopen(&mut self, r: CaseRef, actor: &str, note: Option<&str>, now: Timestamp) -> Result<(), StoreError> {
        let tx = self.transaction()?;
        let case = case_row(&tx.tx, r)?.ok_or(StoreError::NotFound(r))?;
        if case.state.is_active() {
            return Err(StoreError::WrongState { case: r, state: case.state, action: "reopen" });
        }
        if case.ip.is_none() {
            // Closed while awaiting info: there is nothing to work on without the IP.
            return Err(StoreError::WrongState { case: r, state: case.state, action: "reopen (no banned IP)" });
        }
        // A newer request for the same IP may have opened a case since this one closed: the
        // work is there, and a second active case for one IP would be answered twice.
        if let Some(other) = case.ip_addr().map(|ip| tx.open_case_for_ip(ip)).transpose()?.flatten() {
            let ip = case.ip.clone().unwrap_or_default();
            return Err(StoreError::AnotherActive { case: r, other: other.case_ref, state: other.state, ip });
        }
        let due = sla::due_at(now, tx.sla)?;
        tx.tx
            .prepare_cached(
                "UPDATE cases SET state = 'open', resolved_at = NULL, sla_started_at = ?2, due_at = ?3, \
                 first_response_at = coalesce(first_response_at, max(?2, opened_at)), needs_attention = 0 WHERE id = ?1",
            )?
            .execute(params![r.0, now.as_second(), due.as_second()])?;
        let text = match note {
            Some(n) => format!("was {}; {n}", case.state),
            None => format!("was {}", case.state),
        };
        tx.add_event(&NewEvent {
            case: r,
            kind: EventKind::Reopened,
            actor: actor.into(),
            text: Some(text),
            message: None,
            outbox: None,
            at: now,
        })?;
        tx.commit()
    }

    /// Add a note to a case's history. Allowed in any state.
    pub fn note(&mut self, r: CaseRef, actor: &str, text: &str, now: Timestamp) -> Result<(), StoreError> {
        self.staff_step(r, now, |tx| {
            add_event(
                &tx.tx,
                &NewEvent {
                    case: r,
                    kind: EventKind::Note,
                    actor: actor.into(),
                    text: Some(text.into()),
                    message: None,
                    outbox: None,
                    at: now,
                },
            )
        })
    }

    /// Give the case to someone (`None`: nobody).
    pub fn assign(
        &mut self,
        r: CaseRef,
        actor: &str,
        assignee: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.staff_step(r, now, |tx| {
            tx.tx.prepare_cached("UPDATE cases SET assignee = ?2 WHERE id = ?1")?.execute(params![r.0, assignee])?;
            add_event(
                &tx.tx,
                &NewEvent {
                    case: r,
                    kind: EventKind::Assigned,
                    actor: actor.into(),
                    text: Some(match assignee {
                        Some(a) => format!("assigned to {a}"),
                        None => "unassigned".into(),
                    }),
                    message: None,
                    outbox: None,
                    at: now,
                },
            )
        })
    }

    /// One staff action on an existing case: the change, its history entry, and the first
    /// response time, together.
    fn staff_step(
        &mut self,
        r: CaseRef,
        now: Timestamp,
        f: impl FnOnce(&Tx<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let tx = self.transaction()?;
        let case = case_row(&tx.tx, r)?.ok_or(StoreError::NotFound(r))?;
        warn_if_before_opening(&case, now);
        f(&tx)?;
        tx.tx
            .prepare_cached(
                "UPDATE cases SET first_response_at = coalesce(first_response_at, max(?2, opened_at)), \
                 needs_attention = 0 WHERE id = ?1",
            )?
            .execute(params![r.0, now.as_second()])?;
        tx.commit()
    }
}

/// A response or resolution is never recorded before the case opened: if the clock says
/// otherwise, it went backwards (or was ahead when the case opened), and the SLA figures
/// would show a negative time. The time is clamped to the opening (in the SQL) and logged.
fn warn_if_before_opening(case: &CaseRow, now: Timestamp) {
    if now < case.opened_at {
        tracing::warn!(
            case = %case.case_ref, opened_at = %case.opened_at, now = %now,
            "the clock is before the case's opening (it went backwards); recording the opening time instead"
        );
    }
}

fn active_case(tx: &Tx<'_>, r: CaseRef, action: &'static str) -> Result<CaseRow, StoreError> {
    let case = case_row(&tx.tx, r)?.ok_or(StoreError::NotFound(r))?;
    if !case.state.is_active() {
        return Err(StoreError::WrongState { case: r, state: case.state, action });
    }
    Ok(case)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::store::tests::{t, take_in};
    use crate::cases::StoreOptions;

    fn plan(s: &Store, f: CaseFilter) -> String {
        s.explain_list(&CaseFilter { limit: Some(50), ..f }, t("2025-03-05T00:00:00Z")).unwrap().join(" / ")
    }

    #[test]
    fn listings_are_served_by_indexes_without_sorting_the_table() {
        let s = Store::open_in_memory(StoreOptions::default()).unwrap();
        let p = plan(&s, CaseFilter { overdue: true, ..Default::default() });
        assert!(p.contains("cases_by_state_due (state=? AND due_at<?)") && !p.contains("TEMP B-TREE"), "{p}");
        let p = plan(&s, CaseFilter { due_within: Some(SignedDuration::from_hours(6)), ..Default::default() });
        assert!(p.contains("cases_by_state_due (state=? AND due_at>? AND due_at<?)"), "{p}");
        let p = plan(&s, CaseFilter { states: vec![CaseState::Resolved], ..Default::default() });
        assert!(p.contains("cases_by_opened") && !p.contains("TEMP B-TREE"), "{p}");
        let p = plan(&s, CaseFilter { ip: "203.0.113.7".parse().ok(), ..Default::default() });
        assert!(p.contains("cases_by_ip"), "{p}");
        let p = plan(&s, CaseFilter { sender: Some("a@example.com".into()), ..Default::default() });
        assert!(p.contains("cases_by_sender"), "{p}");
    }

    #[test]
    fn staff_actions_refuse_what_the_state_does_not_allow() {
        let mut s = Store::open_in_memory(StoreOptions::default()).unwrap();
        let now = t("2025-03-01T10:00:00Z");
        let (_, c) = take_in(&mut s, 1, "203.0.113.7", now);
        let res = |r| Resolve { actor: "bob".into(), note: Some("n".into()), resolution: r, reply: None };
        assert!(matches!(s.reopen(c, "bob", None, now), Err(StoreError::WrongState { .. })));
        assert_eq!(s.resolve(c, &res(Resolution::Rejected), now).unwrap(), None);
        assert_eq!(s.case(c).unwrap().unwrap().state, CaseState::Rejected);
        assert!(matches!(s.resolve(c, &res(Resolution::Delisted), now), Err(StoreError::WrongState { .. })));
        assert!(matches!(s.note(CaseRef(9), "bob", "x", now), Err(StoreError::NotFound(CaseRef(9)))));
        assert!(matches!(s.assign(CaseRef(9), "bob", None, now), Err(StoreError::NotFound(CaseRef(9)))));
        // Notes are allowed on a closed case, and do not move its first response.
        let first = s.case(c).unwrap().unwrap().first_response_at;
        s.note(c, "bob", "for the record", t("2025-03-09T00:00:00Z")).unwrap();
        assert_eq!(s.case(c).unwrap().unwrap().first_response_at, first);
    }

    #[test]
    fn a_case_closed_while_awaiting_info_cannot_be_reopened_without_an_ip() {
        let mut s = Store::open_in_memory(StoreOptions::default()).unwrap();
        let now = t("2025-03-01T10:00:00Z");
        let tx = s.transaction().unwrap();
        let c = tx
            .open_case(
                &crate::cases::NewCase {
                    ip: None,
                    status_code: None,
                    ndr_line: None,
                    sender: "a@example.com".into(),
                    language: crate::types::Lang::En,
                    opened_by: None,
                    awaiting_info: true,
                },
                now,
            )
            .unwrap();
        tx.commit().unwrap();
        let res = Resolve { actor: "bob".into(), note: None, resolution: Resolution::Rejected, reply: None };
        s.resolve(c, &res, now).unwrap();
        let case = s.case(c).unwrap().unwrap();
        assert_eq!((case.state, case.due_at), (CaseState::Rejected, None));
        assert!(matches!(s.reopen(c, "bob", None, now), Err(StoreError::WrongState { .. })));
    }
}
