//! Clock jumps (issue 9): the pipeline and the store take `now` from the caller and never
//! read the clock, so these tests drive time by hand: a run with the clock a year ahead,
//! then back to today.
//!
//! * the rate limit counts replies in [now - 24 h, now]: those stamped a year ahead do not
//!   hold the sender back for a year;
//! * a retry time computed while the clock was ahead is brought back to now + the longest
//!   backoff, not left a year away;
//! * a response or resolution is never recorded before the case's opening.

use jiff::{SignedDuration, Timestamp};

use delistd::cases::{Resolution, Resolve, Store};
use delistd::demo::{self, DemoPaths};
use delistd::intake::{Fetched, SourceKey};
use delistd::pipeline::Pipeline;
use delistd::reply::outbox::MAX_RETRY_DELAY;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn request(n: u32, from: &str) -> Fetched {
    let raw = format!(
        "Return-Path: <{from}>\r\nFrom: <{from}>\r\nTo: delist@example.test\r\nSubject: delist {n}\r\n\
         Message-ID: <clock-{n}@example.org>\r\n\r\n550 5.7.511 Access denied, banned sender[198.51.100.{n}].\r\n"
    )
    .into_bytes();
    Fetched { key: SourceKey::File { path: format!("clock-{n}.eml") }, size: raw.len() as u64, raw }
}

struct Desk {
    _dir: tempfile::TempDir,
    pipeline: Pipeline,
    store: Store,
}

fn desk() -> Desk {
    let dir = tempfile::tempdir().unwrap();
    // The demo config: 5 replies per sender per 24 h.
    let cfg = demo::config(&DemoPaths::new(dir.path()));
    let pipeline = Pipeline::new(&cfg).unwrap();
    let store = Store::open(&cfg.store.database, pipeline.store_options()).unwrap();
    Desk { _dir: dir, pipeline, store }
}

#[test]
fn replies_stamped_a_year_ahead_do_not_rate_limit_today() {
    let mut d = desk();
    let today = t("2026-11-30T10:00:00Z");
    let ahead = today + SignedDuration::from_hours(24 * 365);
    for n in 1..=5 {
        let p = d.pipeline.process(&mut d.store, &request(n, "ops@clock.example.org"), ahead).unwrap();
        assert!(p.queued_reply, "request {n} a year ahead");
    }
    // A year ahead the limit holds (5 per 24 h)...
    let p = d.pipeline.process(&mut d.store, &request(6, "ops@clock.example.org"), ahead).unwrap();
    assert!(!p.queued_reply, "the sixth within 24 h is suppressed");
    // ...but back to today, the five "future" replies are not in the last 24 h.
    let p = d.pipeline.process(&mut d.store, &request(7, "ops@clock.example.org"), today).unwrap();
    assert!(p.queued_reply, "a reply today is held back by replies stamped a year ahead");
}

#[test]
fn a_retry_time_from_a_clock_ahead_is_brought_back() {
    let mut d = desk();
    let today = t("2026-11-30T10:00:00Z");
    let ahead = today + SignedDuration::from_hours(24 * 365);
    d.pipeline.process(&mut d.store, &request(1, "a@clock.example.org"), ahead).unwrap();
    let id = d.store.due_replies(ahead, 10).unwrap()[0].id;
    d.store.mark_retry(id, "421 try later", ahead + SignedDuration::from_secs(30)).unwrap();
    assert!(d.store.due_replies(today, 10).unwrap().is_empty(), "not due a year early");

    d.store.clamp_retry_targets(today, MAX_RETRY_DELAY).unwrap();
    let max = SignedDuration::try_from(MAX_RETRY_DELAY).unwrap();
    assert!(d.store.due_replies(today + max - SignedDuration::from_secs(1), 10).unwrap().is_empty());
    assert_eq!(d.store.due_replies(today + max, 10).unwrap().len(), 1, "due within the longest backoff");
    // A target within the backoff is left alone.
    d.store.mark_retry(id, "421 again", today + SignedDuration::from_secs(60)).unwrap();
    d.store.clamp_retry_targets(today, MAX_RETRY_DELAY).unwrap();
    assert_eq!(d.store.outbox_row(id).unwrap().unwrap().next_attempt_at, today + SignedDuration::from_secs(60));
}

#[test]
fn a_case_is_never_answered_before_it_opened() {
    let mut d = desk();
    let ahead = t("2027-11-30T10:00:00Z");
    let back = t("2026-11-30T10:00:00Z");
    let p = d.pipeline.process(&mut d.store, &request(1, "b@clock.example.org"), ahead).unwrap();
    let case = p.cases[0];
    d.store.note(case, "staff", "looking", back).unwrap();
    d.store
        .resolve(
            case,
            &Resolve { actor: "staff".into(), note: None, resolution: Resolution::Delisted, reply: None },
            back,
        )
        .unwrap();
    let row = d.store.case(case).unwrap().unwrap();
    assert_eq!(row.first_response_at, Some(row.opened_at), "clamped to the opening");
    assert_eq!(row.resolved_at, Some(row.opened_at));
    let stats = d
        .store
        .stats(
            back - SignedDuration::from_hours(1),
            ahead + SignedDuration::from_hours(1),
            SignedDuration::from_hours(4),
        )
        .unwrap();
    assert_eq!(stats.window_cases, 1);
    assert_eq!(stats.sla_met, 1);
}
