//! Threads (issue 11): what a person's new message does to a case, and the staff messages
//! to the sender. Each is one change of the case, its history entry and (for staff) the
//! queued message, in one transaction.
//!
//! * A staff reply or question ([`Store::staff_message`]): queued with the history entry;
//!   a question pauses the SLA clock (awaiting_info, the time left kept in `sla_remaining`).
//! * The sender's answer to a question ([`Tx::resume_answered`]): open again, the clock
//!   given back what it had left, marked for staff.
//! * A person on an open case ([`Tx::mark_needs_attention`]): marked; the clock runs on.
//! * A person on a closed case ([`Tx::reopen_by_sender`]): open with a fresh SLA, marked.
//!
//! Any staff action clears the mark (see `staff.rs`).

use jiff::{SignedDuration, Timestamp};
use rusqlite::params;

use super::model::{CaseState, EventKind, MessageId, NewEvent, NewReply, OutboxId};
use super::store::{add_event, case_row};
use super::{sla, Store, StoreError, Tx, DAEMON_ACTOR};
use crate::types::CaseRef;

/// A staff message to the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaffMessage {
    /// Free text; the case's state does not change.
    Reply,
    /// A question: the case waits for the answer (awaiting_info), its clock paused.
    Ask,
}

impl Store {
    /// Queue a staff member's message with its history entry (`staff_reply` or `asked`,
    /// holding the staff text). Counts as a response; clears the attention mark.
    ///
    /// A question on an open case moves it to awaiting_info: `due_at` goes (an
    /// awaiting_info case has none) and the time left, overdue time included as a negative
    /// number, is kept in `sla_remaining` until the answer. A question on a case already
    /// awaiting info keeps what it kept. A closed case cannot be asked.
    pub fn staff_message(
        &mut self,
        r: CaseRef,
        what: StaffMessage,
        actor: &str,
        text: &str,
        reply: &NewReply,
        now: Timestamp,
    ) -> Result<OutboxId, StoreError> {
        let tx = self.transaction()?;
        let case = case_row(&tx.tx, r)?.ok_or(StoreError::NotFound(r))?;
        if what == StaffMessage::Ask && !case.state.is_active() {
            return Err(StoreError::WrongState { case: r, state: case.state, action: "ask" });
        }
        let outbox = tx.queue_reply(reply, now)?;
        if what == StaffMessage::Ask && case.state == CaseState::Open {
            let remaining = case.due_at.map_or(tx.sla.as_secs(), |d| d.as_second() - now.as_second());
            tx.tx
                .prepare_cached(
                    "UPDATE cases SET state = 'awaiting_info', due_at = NULL, sla_started_at = NULL, \
                     sla_remaining = ?2 WHERE id = ?1",
                )?
                .execute(params![r.0, remaining])?;
        }
        tx.tx
            .prepare_cached(
                "UPDATE cases SET needs_attention = 0, \
                 first_response_at = coalesce(first_response_at, max(?2, opened_at)) WHERE id = ?1",
            )?
            .execute(params![r.0, now.as_second()])?;
        tx.add_event(&NewEvent {
            case: r,
            kind: match what {
                StaffMessage::Reply => EventKind::StaffReply,
                StaffMessage::Ask => EventKind::Asked,
            },
            actor: actor.into(),
            text: Some(text.into()),
            message: None,
            outbox: Some(outbox),
            at: now,
        })?;
        tx.commit()?;
        Ok(outbox)
    }
}

impl Tx<'_> {
    /// A person wrote on a case: marked for staff until their next action.
    pub fn mark_needs_attention(&self, r: CaseRef) -> Result<(), StoreError> {
        self.tx.prepare_cached("UPDATE cases SET needs_attention = 1 WHERE id = ?1")?.execute([r.0])?;
        Ok(())
    }

    /// The sender answered a staff question: the case is open again with the time its clock
    /// had left when staff asked (`due_at = now + sla_remaining`; `sla_started_at` is put
    /// back one SLA before that, so the pause is not counted), and marked for staff.
    pub fn resume_answered(&self, r: CaseRef, message: Option<MessageId>, now: Timestamp) -> Result<Timestamp, StoreError> {
        let case = case_row(&self.tx, r)?.ok_or(StoreError::NotFound(r))?;
        if case.state != CaseState::AwaitingInfo || case.ip.is_none() {
            return Err(StoreError::WrongState { case: r, state: case.state, action: "resume" });
        }
        let left = case.sla_remaining.unwrap_or(self.sla.as_secs());
        let due = now
            .checked_add(SignedDuration::from_secs(left))
            .map_err(|e| StoreError::Invalid(format!("due time out of range: {e}")))?;
        let started = due
            .checked_sub(self.sla)
            .map_err(|e| StoreError::Invalid(format!("start time out of range: {e}")))?;
        self.tx
            .prepare_cached(
                "UPDATE cases SET state = 'open', due_at = ?2, sla_started_at = ?3, sla_remaining = NULL, \
                 needs_attention = 1 WHERE id = ?1",
            )?
            .execute(params![r.0, due.as_second(), started.as_second()])?;
        self.add_event(&NewEvent {
            case: r,
            kind: EventKind::Answered,
            actor: DAEMON_ACTOR.into(),
            text: Some(format!(
                "the sender answered the question; open again, the clock resumed with {} left",
                sla::short_duration(SignedDuration::from_secs(left))
            )),
            message,
            outbox: None,
            at: now,
        })?;
        Ok(due)
    }

    /// A person wrote on a resolved or rejected case: it is open again with a fresh SLA (a
    /// problem come back is a new request to answer), and marked for staff.
    pub fn reopen_by_sender(&self, r: CaseRef, message: Option<MessageId>, now: Timestamp) -> Result<(), StoreError> {
        let case = case_row(&self.tx, r)?.ok_or(StoreError::NotFound(r))?;
        if case.state.is_active() || case.ip.is_none() {
            return Err(StoreError::WrongState { case: r, state: case.state, action: "reopen" });
        }
        let due = sla::due_at(now, self.sla)?;
        self.tx
            .prepare_cached(
                "UPDATE cases SET state = 'open', resolved_at = NULL, sla_started_at = ?2, due_at = ?3, \
                 sla_remaining = NULL, needs_attention = 1 WHERE id = ?1",
            )?
            .execute(params![r.0, now.as_second(), due.as_second()])?;
        add_event(
            &self.tx,
            &NewEvent {
                case: r,
                kind: EventKind::Reopened,
                actor: DAEMON_ACTOR.into(),
                text: Some(format!("was {}; the sender wrote again", case.state)),
                message,
                outbox: None,
                at: now,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::store::tests::{reply, t, take_in};
    use crate::cases::StoreOptions;

    fn store() -> Store {
        Store::open_in_memory(StoreOptions::default()).unwrap()
    }

    #[test]
    fn a_question_pauses_the_clock_and_the_answer_gives_back_what_was_left() {
        let mut s = store();
        let t0 = t("2025-03-01T10:00:00Z");
        let (_, c) = take_in(&mut s, 1, "203.0.113.7", t0);
        // Asked 10 h in: 38 h were left.
        let asked = t0 + SignedDuration::from_hours(10);
        s.staff_message(c, StaffMessage::Ask, "bob", "Which host?", &reply(Some(c), None, 2), asked).unwrap();
        let row = s.case(c).unwrap().unwrap();
        assert_eq!((row.state, row.due_at, row.sla_started_at), (CaseState::AwaitingInfo, None, None));
        assert_eq!(row.sla_remaining, Some(38 * 3600));
        assert_eq!(row.first_response_at, Some(asked));
        // The answer comes 3 days later: 38 h from then, and marked.
        let answered = asked + SignedDuration::from_hours(72);
        let tx = s.transaction().unwrap();
        let due = tx.resume_answered(c, None, answered).unwrap();
        tx.commit().unwrap();
        let row = s.case(c).unwrap().unwrap();
        assert_eq!((row.state, row.due_at), (CaseState::Open, Some(answered + SignedDuration::from_hours(38))));
        assert_eq!(Some(due), row.due_at);
        assert_eq!(row.sla_started_at, Some(answered - SignedDuration::from_hours(10)));
        assert!(row.needs_attention && row.sla_remaining.is_none());
        let kinds: Vec<String> = s.case_detail(c).unwrap().unwrap().events.iter().map(|e| e.kind.clone()).collect();
        assert!(kinds.ends_with(&["reply_queued".into(), "asked".into(), "answered".into()]), "{kinds:?}");
    }

    #[test]
    fn an_overdue_case_asked_stays_overdue_when_answered() {
        let mut s = store();
        let t0 = t("2025-03-01T10:00:00Z");
        let (_, c) = take_in(&mut s, 1, "203.0.113.7", t0);
        let asked = t0 + SignedDuration::from_hours(50);
        s.staff_message(c, StaffMessage::Ask, "bob", "?", &reply(Some(c), None, 2), asked).unwrap();
        assert_eq!(s.case(c).unwrap().unwrap().sla_remaining, Some(-2 * 3600));
        let tx = s.transaction().unwrap();
        let due = tx.resume_answered(c, None, asked + SignedDuration::from_hours(5)).unwrap();
        tx.commit().unwrap();
        assert_eq!(due, asked + SignedDuration::from_hours(3));
    }

    #[test]
    fn a_closed_case_cannot_be_asked_but_can_be_written_to_and_reopens_by_itself() {
        let mut s = store();
        let t0 = t("2025-03-01T10:00:00Z");
        let (_, c) = take_in(&mut s, 1, "203.0.113.7", t0);
        s.resolve(c, &crate::cases::Resolve { actor: "bob".into(), note: None, resolution: crate::cases::Resolution::Delisted, reply: None }, t0).unwrap();
        let e = s.staff_message(c, StaffMessage::Ask, "bob", "?", &reply(Some(c), None, 2), t0).unwrap_err();
        assert!(matches!(e, StoreError::WrongState { action: "ask", .. }), "{e}");
        s.staff_message(c, StaffMessage::Reply, "bob", "Done.", &reply(Some(c), None, 3), t0).unwrap();
        assert_eq!(s.case(c).unwrap().unwrap().state, CaseState::Resolved, "a reply leaves the state alone");
        let later = t0 + SignedDuration::from_hours(100);
        let tx = s.transaction().unwrap();
        tx.reopen_by_sender(c, None, later).unwrap();
        tx.commit().unwrap();
        let row = s.case(c).unwrap().unwrap();
        assert_eq!((row.state, row.due_at, row.resolved_at), (CaseState::Open, Some(later + SignedDuration::from_hours(48)), None));
        assert!(row.needs_attention);
        // Any staff action clears the mark.
        s.note(c, "bob", "seen", later).unwrap();
        assert!(!s.case(c).unwrap().unwrap().needs_attention);
    }
}
