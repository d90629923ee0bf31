//! The 48-hour SLA: due times, "time left", and statistics.
//!
//! What the SLA means here: a complete request (state `open`) must be *resolved* —
//! delisted or rejected by staff — by `due_at = sla_started_at + SLA`. A case is
//! **overdue** when it is still open after `due_at`, and the SLA was **met** when it was
//! resolved at or before `due_at`. Time to first response (first staff action or staff
//! reply; the automatic acknowledgement does not count) is reported beside it.
//! An `awaiting_info` case has no clock: we are waiting for the sender.

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::model::{CaseRow, CaseState};
use super::{Store, StoreError};

/// `start + sla`, refusing instants jiff cannot represent.
pub fn due_at(start: Timestamp, sla: SignedDuration) -> Result<Timestamp, StoreError> {
    start.checked_add(sla).map_err(|e| StoreError::Invalid(format!("due time out of range: {e}")))
}

/// Where a case stands against its SLA at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlaStatus {
    /// Waiting for the sender, or closed while waiting: no clock.
    NoClock,
    /// Open, due in `left`.
    Due { left: SignedDuration },
    /// Open past its due time by `by`.
    Overdue { by: SignedDuration },
    /// Resolved or rejected; `met` when at or before the due time.
    Closed { met: bool },
}

impl SlaStatus {
    pub fn of(case: &CaseRow, now: Timestamp) -> SlaStatus {
        match (case.state, case.due_at) {
            (_, None) => SlaStatus::NoClock,
            (CaseState::Resolved | CaseState::Rejected, Some(due)) => {
                SlaStatus::Closed { met: case.resolved_at.is_some_and(|r| r <= due) }
            }
            (_, Some(due)) if now > due => SlaStatus::Overdue { by: now.duration_since(due) },
            (_, Some(due)) => SlaStatus::Due { left: due.duration_since(now) },
        }
    }

    /// For people: "in 5h12m", "overdue by 3h12m", "met", "missed", "-".
    pub fn describe(self) -> String {
        match self {
            SlaStatus::NoClock => "-".into(),
            SlaStatus::Due { left } => format!("in {}", short_duration(left)),
            SlaStatus::Overdue { by } => format!("overdue by {}", short_duration(by)),
            SlaStatus::Closed { met: true } => "met".into(),
            SlaStatus::Closed { met: false } => "missed".into(),
        }
    }
}

/// A duration for a table cell, two units at most: `2d4h`, `3h12m`, `45m`, `20s`.
pub fn short_duration(d: SignedDuration) -> String {
    let secs = d.as_secs().unsigned_abs();
    let sign = if d.is_negative() { "-" } else { "" };
    let (days, hours, mins) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    if days > 0 {
        format!("{sign}{days}d{hours}h")
    } else if hours > 0 {
        format!("{sign}{hours}h{mins:02}m")
    } else if mins > 0 {
        format!("{sign}{mins}m")
    } else {
        format!("{sign}{secs}s")
    }
}

/// Median and 95th percentile of a set of durations (nearest rank).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Spread {
    pub count: u64,
    pub median_secs: Option<i64>,
    pub p95_secs: Option<i64>,
}

impl Spread {
    /// `values` is sorted in place.
    pub fn of(values: &mut [i64]) -> Spread {
        values.sort_unstable();
        Spread { count: values.len() as u64, median_secs: nearest_rank(values, 50), p95_secs: nearest_rank(values, 95) }
    }
}

/// The nearest-rank percentile of sorted values: the smallest value with at least `pct`%
/// of the values at or below it.
fn nearest_rank(sorted: &[i64], pct: usize) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// The figures of `cases stats`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub now: Timestamp,
    /// Start of the window the SLA figures cover (cases whose clock started since).
    pub since: Timestamp,
    pub open: u64,
    pub awaiting_info: u64,
    pub overdue: u64,
    /// Open and due within `due_soon_secs` from now (not yet overdue).
    pub due_soon: u64,
    pub due_soon_secs: i64,
    /// Cases whose SLA clock started in the window.
    pub window_cases: u64,
    /// Of those, the ones whose outcome is known: resolved, or past due.
    pub sla_decided: u64,
    pub sla_met: u64,
    /// `sla_met / sla_decided`, in percent.
    pub sla_met_pct: Option<f64>,
    pub first_response: Spread,
    pub resolution: Spread,
    /// Of the window's cases, those answered at once because their IP was on no source of
    /// the blocklist (resolved `not_listed`), and those resolved by the blocklist link itself
    /// (the IP left the list, or `delist_command` took it off).
    pub not_listed: u64,
    pub delisted_by_blocklist: u64,
}

impl Store {
    /// Counts now, and SLA figures for cases whose clock started in `[since, now]`.
    ///
    /// Cost: the counts walk the `(state, due_at)` index over active cases only; the window
    /// walks the covering `cases_sla_window` index, one entry per case in the window, so
    /// the window (not the table) sets the time taken.
    pub fn stats(&self, since: Timestamp, now: Timestamp, due_soon: SignedDuration) -> Result<Stats, StoreError> {
        let now_s = now.as_second();
        let soon_s = now.checked_add(due_soon).unwrap_or(now).as_second();
        let count = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<u64, StoreError> {
            let n: i64 = self.conn.prepare_cached(sql)?.query_row(p, |r| r.get(0))?;
            Ok(n.max(0) as u64)
        };
        let open = count("SELECT count(*) FROM cases WHERE state = 'open'", &[])?;
        let awaiting_info = count("SELECT count(*) FROM cases WHERE state = 'awaiting_info'", &[])?;
        let overdue = count("SELECT count(*) FROM cases WHERE state = 'open' AND due_at < ?1", &[&now_s])?;
        let due_soon_n = count(
            "SELECT count(*) FROM cases WHERE state = 'open' AND due_at >= ?1 AND due_at < ?2",
            &[&now_s, &soon_s],
        )?;

        let mut window_cases = 0u64;
        let (mut decided, mut met) = (0u64, 0u64);
        let mut first = Vec::new();
        let mut resolution = Vec::new();
        let mut st = self.conn.prepare_cached(
            "SELECT sla_started_at, due_at, first_response_at, resolved_at FROM cases \
             WHERE sla_started_at >= ?1 AND sla_started_at <= ?2",
        )?;
        let mut rows = st.query([since.as_second(), now_s])?;
        while let Some(r) = rows.next()? {
            let start: i64 = r.get(0)?;
            let due: i64 = r.get(1)?;
            let first_at: Option<i64> = r.get(2)?;
            let resolved_at: Option<i64> = r.get(3)?;
            window_cases += 1;
            // A first response before the clock started (a note on a case awaiting info,
            // before a reopen) counts as immediate.
            if let Some(f) = first_at {
                first.push((f - start).max(0));
            }
            match resolved_at {
                Some(res) => {
                    decided += 1;
                    met += u64::from(res <= due);
                    resolution.push((res - start).max(0));
                }
                None if due < now_s => decided += 1,
                None => {}
            }
        }
        let not_listed = count(
            "SELECT count(*) FROM cases WHERE sla_started_at >= ?1 AND sla_started_at <= ?2 AND resolution = 'not_listed'",
            &[&since.as_second(), &now_s],
        )?;
        let delisted_by_blocklist = count(
            "SELECT count(*) FROM cases c WHERE c.sla_started_at >= ?1 AND c.sla_started_at <= ?2 \
             AND c.resolution = 'delisted' AND EXISTS (SELECT 1 FROM events e WHERE e.case_id = c.id \
             AND e.kind = 'resolved' AND e.actor = 'blocklist')",
            &[&since.as_second(), &now_s],
        )?;
        Ok(Stats {
            not_listed,
            delisted_by_blocklist,
            now,
            since,
            open,
            awaiting_info,
            overdue,
            due_soon: due_soon_n,
            due_soon_secs: due_soon.as_secs(),
            window_cases,
            sla_decided: decided,
            sla_met: met,
            sla_met_pct: (decided > 0).then(|| met as f64 * 100.0 / decided as f64),
            first_response: Spread::of(&mut first),
            resolution: Spread::of(&mut resolution),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::CaseRef;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn case(state: CaseState, due: Option<&str>, resolved: Option<&str>) -> CaseRow {
        CaseRow {
            case_ref: CaseRef(1),
            ip: Some("203.0.113.7".into()),
            status_code: Some("5.7.511".into()),
            ndr_line: None,
            sender: "a@example.com".into(),
            language: "en".into(),
            state,
            opened_at: t("2025-03-01T00:00:00Z"),
            sla_started_at: due.map(|_| t("2025-03-01T00:00:00Z")),
            due_at: due.map(t),
            first_response_at: None,
            resolved_at: resolved.map(t),
            assignee: None,
            opened_by: None,
            listing: None,
            resolution: None,
            needs_attention: false,
            sla_remaining: None,
        }
    }

    #[test]
    fn status_follows_the_clock() {
        let c = case(CaseState::Open, Some("2025-03-03T00:00:00Z"), None);
        assert_eq!(
            SlaStatus::of(&c, t("2025-03-02T18:48:00Z")),
            SlaStatus::Due { left: SignedDuration::from_mins(5 * 60 + 12) }
        );
        assert_eq!(SlaStatus::of(&c, t("2025-03-03T00:00:00Z")), SlaStatus::Due { left: SignedDuration::ZERO });
        let late = SlaStatus::of(&c, t("2025-03-03T03:12:00Z"));
        assert_eq!(late, SlaStatus::Overdue { by: SignedDuration::from_mins(192) });
        assert_eq!(late.describe(), "overdue by 3h12m");
        let waiting = case(CaseState::AwaitingInfo, None, None);
        assert_eq!(SlaStatus::of(&waiting, t("2030-01-01T00:00:00Z")), SlaStatus::NoClock);
        let met = case(CaseState::Resolved, Some("2025-03-03T00:00:00Z"), Some("2025-03-02T00:00:00Z"));
        assert_eq!(SlaStatus::of(&met, t("2030-01-01T00:00:00Z")), SlaStatus::Closed { met: true });
        let missed = case(CaseState::Rejected, Some("2025-03-03T00:00:00Z"), Some("2025-03-03T00:00:01Z"));
        assert_eq!(SlaStatus::of(&missed, t("2030-01-01T00:00:00Z")).describe(), "missed");
    }

    #[test]
    fn short_durations_keep_two_units() {
        assert_eq!(short_duration(SignedDuration::from_secs(2 * 86_400 + 4 * 3600 + 59)), "2d4h");
        assert_eq!(short_duration(SignedDuration::from_secs(3 * 3600 + 12 * 60 + 9)), "3h12m");
        assert_eq!(short_duration(SignedDuration::from_secs(3600 + 60)), "1h01m");
        assert_eq!(short_duration(SignedDuration::from_secs(45 * 60)), "45m");
        assert_eq!(short_duration(SignedDuration::from_secs(20)), "20s");
        assert_eq!(short_duration(SignedDuration::from_secs(-90)), "-1m");
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut v: Vec<i64> = (1..=100).rev().collect();
        let s = Spread::of(&mut v);
        assert_eq!((s.count, s.median_secs, s.p95_secs), (100, Some(50), Some(95)));
        let s = Spread::of(&mut [7]);
        assert_eq!((s.median_secs, s.p95_secs), (Some(7), Some(7)));
        let s = Spread::of(&mut [1, 2, 3, 4]);
        assert_eq!((s.median_secs, s.p95_secs), (Some(2), Some(4)));
        assert_eq!(Spread::of(&mut []), Spread::default());
    }

    #[test]
    fn due_at_refuses_the_end_of_time() {
        assert!(due_at(Timestamp::MAX, SignedDuration::from_hours(48)).is_err());
        assert_eq!(
            due_at(t("2025-03-01T00:00:00Z"), SignedDuration::from_hours(48)).unwrap(),
            t("2025-03-03T00:00:00Z")
        );
    }
}
