//! What monitoring reads and escalation writes.
//!
//! * [`Store::gauges`]: the figures `/metrics` reads at scrape time (cases by state, overdue
//!   and due soon, the outbox queue and its oldest reply), each answered from an index.
//! * Escalation: which open cases crossed a stage (*due soon*, *overdue*) without its entry
//!   in their history, and [`Tx::record_stage`], which writes that entry and queues the
//!   staff mail in one transaction, so a stage is mailed once whatever crashes (the entry
//!   and the mail are both there, or neither is). A stage counts from the case's
//!   `sla_started_at`: a reopened case starts a new clock, and gets its stages again.
//! * The daily digest's cases, and [`Tx::record_digest`], which marks the local day done.

use jiff::{SignedDuration, Timestamp};
use rusqlite::{params, OptionalExtension};

use super::model::{CaseRow, CaseState, EventKind, NewEvent, OutboxId};
use super::store::{add_event, Tx};
use super::{Store, StoreError, DAEMON_ACTOR};
use crate::types::CaseRef;

/// Figures read at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Every state, zero included, in [`CaseState::ALL`] order.
    pub cases_by_state: Vec<(CaseState, u64)>,
    /// Open past their due time.
    pub overdue: u64,
    /// Open, due within the window given (and not overdue yet).
    pub due_soon: u64,
    /// Outbox rows waiting to be sent (first attempt or retry).
    pub outbox_queued: u64,
    /// When the oldest of those was queued.
    pub oldest_queued_at: Option<Timestamp>,
}

/// An escalation stage of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// `due_at - warn_before` has passed.
    DueSoon,
    /// `due_at` has passed.
    Overdue,
}

impl Stage {
    pub fn event(self) -> EventKind {
        match self {
            Stage::DueSoon => EventKind::EscalationDueSoon,
            Stage::Overdue => EventKind::EscalationOverdue,
        }
    }
    /// `outbox.kind` and the template name of the warning.
    pub fn name(self) -> &'static str {
        self.event().as_str()
    }
}

/// A mail to staff, complete (Message-ID fixed) when queued, like a reply.
#[derive(Debug, Clone)]
pub struct StaffMail {
    pub recipient: String,
    pub message_id: String,
    pub subject: String,
    pub raw: Vec<u8>,
    /// `outbox.kind`: `escalation_due_soon`, `escalation_overdue`, `escalation_digest`.
    pub kind: &'static str,
}

/// The cases of a daily digest, each list by due time (or age).
#[derive(Debug, Clone, Default)]
pub struct DigestCases {
    pub overdue: Vec<CaseRow>,
    /// Open, due before the end of the local day.
    pub due_today: Vec<CaseRow>,
    /// Active cases with something staff have not acted on since: a message about the
    /// case arrived, or a reply to the sender failed, after the last staff action.
    pub needs_attention: Vec<CaseRow>,
    /// Awaiting information from the sender for longer than the configured time.
    pub awaiting_info: Vec<CaseRow>,
}

impl DigestCases {
    pub fn len(&self) -> usize {
        self.overdue.len() + self.due_today.len() + self.needs_attention.len() + self.awaiting_info.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn count(store: &Store, sql: &str, p: &[&dyn rusqlite::ToSql]) -> Result<u64, StoreError> {
    let n: i64 = store.conn.prepare_cached(sql)?.query_row(p, |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

/// A stage is missing from a case's history when no entry of its kind was written since
/// the case's clock started.
const NO_STAGE_YET: &str = "NOT EXISTS (SELECT 1 FROM events e WHERE e.case_id = c.id AND e.kind = ?3 \
     AND e.at >= c.sla_started_at)";

impl Store {
    /// The database answers (readiness).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.conn.prepare_cached("SELECT 1")?.query_row([], |_| Ok(()))?;
        Ok(())
    }

    pub fn gauges(&self, now: Timestamp, due_soon_within: SignedDuration) -> Result<Gauges, StoreError> {
        let mut g = Gauges::default();
        for state in CaseState::ALL {
            g.cases_by_state.push((*state, count(self, "SELECT count(*) FROM cases WHERE state = ?1", &[state])?));
        }
        let now_s = now.as_second();
        g.overdue = count(self, "SELECT count(*) FROM cases WHERE state = 'open' AND due_at <= ?1", &[&now_s])?;
        g.due_soon = count(
            self,
            "SELECT count(*) FROM cases WHERE state = 'open' AND due_at > ?1 AND due_at <= ?2",
            &[&now_s, &(now_s + due_soon_within.as_secs())],
        )?;
        let (n, oldest): (i64, Option<i64>) = self
            .conn
            .prepare_cached("SELECT count(*), min(queued_at) FROM outbox WHERE state = 'queued'")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        g.outbox_queued = n.max(0) as u64;
        g.oldest_queued_at = oldest.and_then(|s| Timestamp::from_second(s).ok());
        Ok(g)
    }

    /// Open cases that crossed a stage not yet in their history, by due time. A case past
    /// its due time is only *overdue*: a *due soon* warning would come too late to help.
    pub fn stages_due(&self, now: Timestamp, warn_before: SignedDuration) -> Result<Vec<(CaseRow, Stage)>, StoreError> {
        let mut out = Vec::new();
        let cols = CaseRow::COLUMNS.split(", ").map(|c| format!("c.{c}")).collect::<Vec<_>>().join(", ");
        let now_s = now.as_second();
        for (stage, cond) in [
            (Stage::Overdue, "c.due_at <= ?1"),
            (Stage::DueSoon, "c.due_at > ?1 AND c.due_at <= ?1 + ?2"),
        ] {
            let sql = format!(
                "SELECT {cols} FROM cases c WHERE c.state = 'open' AND {cond} AND {NO_STAGE_YET} ORDER BY c.due_at, c.id"
            );
            let mut st = self.conn.prepare_cached(&sql)?;
            let rows = st.query_map(params![now_s, warn_before.as_secs(), stage.event()], CaseRow::from_row)?;
            for row in rows {
                out.push((row?, stage));
            }
        }
        Ok(out)
    }

    /// The e-mail address of the staff account `name`, if the account exists and has one:
    /// escalation warnings for a case also go to the staff member it is assigned to.
    pub fn staff_email(&self, name: &str) -> Result<Option<String>, StoreError> {
        let email: Option<Option<String>> = self
            .connection()
            .query_row("SELECT email FROM staff WHERE name = ?1", [name], |r| r.get(0))
            .optional()?;
        Ok(email.flatten().filter(|e| !e.trim().is_empty()))
    }

    /// The day's digest was handled already (queued, or found empty).
    pub fn digest_done(&self, day: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM escalation_digests WHERE day = ?1")?
            .query_row([day], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// The cases a digest lists at `now`: `end_of_day` bounds "due today", and cases
    /// awaiting information since before `now - awaiting_after` are listed.
    pub fn digest_cases(
        &self,
        now: Timestamp,
        end_of_day: Timestamp,
        awaiting_after: SignedDuration,
    ) -> Result<DigestCases, StoreError> {
        let cols = CaseRow::COLUMNS.split(", ").map(|c| format!("c.{c}")).collect::<Vec<_>>().join(", ");
        let list = |cond: &str, order: &str, p: &[&dyn rusqlite::ToSql]| -> Result<Vec<CaseRow>, StoreError> {
            let sql = format!("SELECT {cols} FROM cases c WHERE {cond} ORDER BY {order}");
            let mut st = self.conn.prepare_cached(&sql)?;
            let rows = st.query_map(p, CaseRow::from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        };
        let now_s = now.as_second();
        Ok(DigestCases {
            overdue: list("c.state = 'open' AND c.due_at <= ?1", "c.due_at, c.id", &[&now_s])?,
            due_today: list(
                "c.state = 'open' AND c.due_at > ?1 AND c.due_at <= ?2",
                "c.due_at, c.id",
                &[&now_s, &end_of_day.as_second()],
            )?,
            needs_attention: list(
                "c.state IN ('open', 'awaiting_info') AND EXISTS (SELECT 1 FROM events e WHERE e.case_id = c.id \
                 AND e.actor = ?1 AND e.kind IN ('message', 'reply_failed') AND e.at > coalesce((SELECT max(s.at) \
                 FROM events s WHERE s.case_id = c.id AND s.actor <> ?1), 0))",
                "c.id",
                &[&DAEMON_ACTOR],
            )?,
            awaiting_info: list(
                "c.state = 'awaiting_info' AND c.opened_at <= ?1",
                "c.opened_at, c.id",
                &[&(now_s - awaiting_after.as_secs())],
            )?,
        })
    }
}

/// Queue a mail to staff. No case history entry of its own: the caller writes the one that
/// says why (the stage), and a staff mail never counts as a reply to the sender.
fn queue_staff(tx: &Tx<'_>, m: &StaffMail, now: Timestamp) -> Result<OutboxId, StoreError> {
    tx.tx
        .prepare_cached(
            "INSERT INTO outbox (case_id, caused_by, recipient, message_id, subject, raw, state, attempts, queued_at, \
             next_attempt_at, kind, to_staff) VALUES (NULL, NULL, ?1, ?2, ?3, ?4, 'queued', 0, ?5, ?5, ?6, 1)",
        )?
        .execute(params![m.recipient, m.message_id, m.subject, m.raw, now.as_second(), m.kind])?;
    Ok(OutboxId(tx.tx.last_insert_rowid()))
}

impl Tx<'_> {
    /// Write the stage in the case's history and queue its mails, in this transaction.
    /// Refuses ([`StoreError::Duplicate`]) a stage already recorded since the clock started,
    /// so a second pass racing the first cannot mail it twice.
    pub fn record_stage(&self, case: CaseRef, stage: Stage, mails: &[StaffMail], now: Timestamp) -> Result<(), StoreError> {
        let sql = "SELECT 1 FROM cases c WHERE c.id = ?1 AND NOT EXISTS (SELECT 1 FROM events e \
                   WHERE e.case_id = c.id AND e.kind = ?2 AND e.at >= c.sla_started_at)";
        let missing = self
            .tx
            .prepare_cached(sql)?
            .query_row(params![case.0, stage.event()], |_| Ok(()))
            .optional()?
            .is_some();
        if !missing {
            return Err(StoreError::Duplicate(format!("{} of {case}", stage.name())));
        }
        let mut first = None;
        for m in mails {
            let id = queue_staff(self, m, now)?;
            first.get_or_insert(id);
        }
        let to: Vec<&str> = mails.iter().map(|m| m.recipient.as_str()).collect();
        add_event(
            &self.tx,
            &NewEvent {
                case,
                kind: stage.event(),
                actor: DAEMON_ACTOR.into(),
                text: Some(if to.is_empty() { "no staff address to warn".into() } else { format!("staff warned: {}", to.join(", ")) }),
                message: None,
                outbox: first,
                at: now,
            },
        )
    }

    /// Mark the local `day`'s digest handled, queuing its mails (none for an empty digest).
    pub fn record_digest(&self, day: &str, cases: usize, mails: &[StaffMail], now: Timestamp) -> Result<(), StoreError> {
        let n = self
            .tx
            .prepare_cached("INSERT OR IGNORE INTO escalation_digests (day, at, cases) VALUES (?1, ?2, ?3)")?
            .execute(params![day, now.as_second(), cases as i64])?;
        if n == 0 {
            return Err(StoreError::Duplicate(format!("digest of {day}")));
        }
        for m in mails {
            queue_staff(self, m, now)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::store::tests::{t, take_in};
    use crate::cases::StoreOptions;

    fn mail(kind: &'static str, n: u32) -> StaffMail {
        StaffMail {
            recipient: "team@example.net".into(),
            message_id: format!("{kind}.{n}@example.net"),
            subject: "warning".into(),
            raw: b"Subject: warning\r\n\r\nx\r\n".to_vec(),
            kind,
        }
    }

    #[test]
    fn a_stage_is_due_once_per_clock() {
        let mut s = Store::open_in_memory(StoreOptions::default()).unwrap();
        let t0 = t("2030-01-01T00:00:00Z");
        let (_, c) = take_in(&mut s, 1, "203.0.113.9", t0);
        let warn = SignedDuration::from_hours(6);
        assert!(s.stages_due(t("2030-01-02T17:59:00Z"), warn).unwrap().is_empty());
        let soon = t("2030-01-02T18:00:00Z");
        let due = s.stages_due(soon, warn).unwrap();
        assert_eq!(due.iter().map(|(c, st)| (c.case_ref, *st)).collect::<Vec<_>>(), vec![(c, Stage::DueSoon)]);
        let tx = s.transaction().unwrap();
        tx.record_stage(c, Stage::DueSoon, &[mail("escalation_due_soon", 1)], soon).unwrap();
        tx.commit().unwrap();
        assert!(s.stages_due(soon, warn).unwrap().is_empty());
        // Recording it again is refused.
        let tx = s.transaction().unwrap();
        assert!(matches!(tx.record_stage(c, Stage::DueSoon, &[], soon), Err(StoreError::Duplicate(_))));
        drop(tx);
        let late = t("2030-01-03T00:00:00Z");
        assert_eq!(s.stages_due(late, warn).unwrap().len(), 1);
        let tx = s.transaction().unwrap();
        tx.record_stage(c, Stage::Overdue, &[mail("escalation_overdue", 1)], late).unwrap();
        tx.commit().unwrap();
        assert!(s.stages_due(t("2030-01-09T00:00:00Z"), warn).unwrap().is_empty());
        let g = s.gauges(late, warn).unwrap();
        assert_eq!((g.overdue, g.due_soon, g.outbox_queued), (1, 0, 3), "{g:?}");
        // Staff mail never counts against the recipient's reply limit.
        assert_eq!(s.replies_sent_to_since("team@example.net", t0).unwrap(), 0);

        // Resolved, then reopened: a new clock, new stages.
        s.resolve(c, &crate::cases::Resolve { resolution: crate::cases::Resolution::Delisted, actor: "bob".into(), note: None, reply: None }, late)
            .unwrap();
        let reopened = t("2030-01-05T00:00:00Z");
        s.reopen(c, "bob", None, reopened).unwrap();
        assert!(s.stages_due(reopened, warn).unwrap().is_empty());
        assert_eq!(s.stages_due(t("2030-01-07T00:00:01Z"), warn).unwrap()[0].1, Stage::Overdue);
    }

    #[test]
    fn a_digest_day_is_recorded_once() {
        let mut s = Store::open_in_memory(StoreOptions::default()).unwrap();
        assert!(!s.digest_done("2030-01-01").unwrap());
        let tx = s.transaction().unwrap();
        tx.record_digest("2030-01-01", 0, &[], t("2030-01-01T08:00:00Z")).unwrap();
        tx.commit().unwrap();
        assert!(s.digest_done("2030-01-01").unwrap());
        let tx = s.transaction().unwrap();
        assert!(matches!(tx.record_digest("2030-01-01", 0, &[], t("2030-01-01T09:00:00Z")), Err(StoreError::Duplicate(_))));
    }
}
