//! Escalation on a controlled clock, against a real SQLite file: a case crosses *due soon*
//! then *overdue*, one mail per stage and address, still one after a restart between passes;
//! quiet hours hold a warning back until they end; the digest lists what it should, and an
//! empty one is not sent; a reopened case gets its stages again; the daemon's loop runs on
//! the clock it is given.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

use delistd::cases::{CaseState, EventKind, NewCase, NewEvent, Resolution, Resolve, Store, StoreOptions, DAEMON_ACTOR};
use delistd::config::{Config, Secrets};
use delistd::escalation::{Escalator, Passed};
use delistd::types::{CaseRef, Lang};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

struct Desk {
    _dir: tempfile::TempDir,
    cfg: Config,
}

impl Desk {
    fn new(extra: &str) -> Desk {
        let dir = tempfile::tempdir().unwrap();
        let src = format!(
            "[intake]\nsource = \"maildir\"\n[maildir]\npath = \"mail\"\n[smtp]\nreply_dir = \"out\"\n\
             [store]\ndatabase = \"delistd.sqlite\"\n[replies]\nfrom = \"Delist desk <delist@provider.example>\"\n\
             [escalation]\nnotify = [\"team@provider.example\", \"oncall@provider.example\"]\nwarn_before = \"6h\"\n\
             digest_at = \"08:00\"\ntimezone = \"UTC\"\n{extra}"
        );
        let cfg = Config::parse_with(&src, &dir.path().join("delistd.toml"), Secrets::Skip).unwrap();
        Desk { _dir: dir, cfg }
    }

    /// A fresh process: the store opened again and a new escalator (a restart).
    fn open(&self) -> (Store, Escalator) {
        let store = Store::open(&self.cfg.store.database, StoreOptions::default()).unwrap();
        (store, Escalator::new(&self.cfg).unwrap().unwrap())
    }

    fn pass(&self, at: &str) -> Passed {
        let (mut store, e) = self.open();
        e.pass(&mut store, t(at)).unwrap()
    }

    fn count(&self, sql: &str) -> i64 {
        let (store, _) = self.open();
        store.connection().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    fn mails(&self, kind: &str) -> Vec<(String, String, String)> {
        let (store, _) = self.open();
        let mut st = store
            .connection()
            .prepare("SELECT recipient, message_id, CAST(raw AS TEXT) FROM outbox WHERE kind = ?1 ORDER BY id")
            .unwrap();
        st.query_map([kind], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
    }
}

fn open_case(store: &mut Store, ip: &str, awaiting: bool, at: &str) -> CaseRef {
    let tx = store.transaction().unwrap();
    let c = tx
        .open_case(
            &NewCase {
                ip: (!awaiting).then(|| ip.parse().unwrap()),
                status_code: Some("5.7.511".parse().unwrap()),
                ndr_line: None,
                sender: format!("postmaster@{ip}.example"),
                language: Lang::En,
                opened_by: None,
                awaiting_info: awaiting,
            },
            t(at),
        )
        .unwrap();
    tx.commit().unwrap();
    c
}

fn stage_events(d: &Desk, c: CaseRef, kind: EventKind) -> i64 {
    d.count(&format!("SELECT count(*) FROM events WHERE case_id = {} AND kind = '{kind}'", c.0))
}

#[test]
fn each_stage_is_mailed_once_across_restarts_and_quiet_hours_hold_it_back() {
    let d = Desk::new("quiet_hours = \"22:00-07:00\"\n");
    let (mut store, _) = d.open();
    // Opened Jan 1, 10:00 UTC: due Jan 3, 10:00; due soon from Jan 3, 04:00 (quiet until 07:00).
    let c = open_case(&mut store, "203.0.113.9", false, "2030-01-01T10:00:00Z");
    drop(store);

    // Jan 1, 11:00: the digest's time has come, but there is nothing to report.
    let p = d.pass("2030-01-01T11:00:00Z");
    assert_eq!(p.empty_digest.as_deref(), Some("2030-01-01"), "{p:?}");
    assert_eq!((p.mails, d.count("SELECT count(*) FROM outbox")), (0, 0));
    assert_eq!(d.pass("2030-01-01T12:00:00Z"), Passed::default(), "the day is done");

    // Jan 3, 04:30: due soon, but inside the quiet hours: held.
    let p = d.pass("2030-01-03T04:30:00Z");
    assert!(p.quiet && p.warned.is_empty(), "{p:?}");
    assert_eq!(stage_events(&d, c, EventKind::EscalationDueSoon), 0);

    // 07:00, the quiet hours are over: the warning goes out, with the day's digest.
    let p = d.pass("2030-01-03T07:00:00Z");
    assert_eq!(p.warned, vec![(c.to_string(), "escalation_due_soon")], "{p:?}");
    assert_eq!(p.digest, None, "the digest waits for 08:00");
    let soon = d.mails("escalation_due_soon");
    assert_eq!(soon.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(), ["team@provider.example", "oncall@provider.example"]);
    let raw = &soon[0].2;
    assert!(raw.contains("Auto-Submitted: auto-generated\r\n"), "{raw}");
    assert!(raw.contains(&format!("Subject: [{c}] due in 3h00m: 203.0.113.9\r\n")), "{raw}");
    assert!(raw.contains("Due:       2030-01-03 10:00 UTC"), "{raw}");
    assert!(raw.contains("To: team@provider.example\r\n"), "{raw}");

    // A restart, another pass: nothing more.
    assert!(d.pass("2030-01-03T07:05:00Z").warned.is_empty());
    assert_eq!(d.mails("escalation_due_soon").len(), 2);
    assert_eq!(stage_events(&d, c, EventKind::EscalationDueSoon), 1);

    // 08:00: the digest, with the case due today.
    let p = d.pass("2030-01-03T08:00:00Z");
    assert_eq!(p.digest, Some(("2030-01-03".into(), 1)), "{p:?}");
    let digest = d.mails("escalation_digest");
    assert_eq!(digest.len(), 2);
    assert!(digest[0].2.contains(&format!("  {c}  203.0.113.9  due in 2h00m  assignee: nobody")), "{}", digest[0].2);

    // 10:00:01: overdue, once, whatever the restarts.
    let p = d.pass("2030-01-03T10:00:01Z");
    assert_eq!(p.warned, vec![(c.to_string(), "escalation_overdue")]);
    for at in ["2030-01-03T10:01:00Z", "2030-01-03T15:00:00Z", "2030-01-03T23:00:00Z"] {
        assert!(d.pass(at).warned.is_empty(), "{at}");
    }
    assert_eq!(stage_events(&d, c, EventKind::EscalationOverdue), 1);
    let over = d.mails("escalation_overdue");
    assert_eq!(over.len(), 2);
    assert!(over[0].2.contains(&format!("Subject: [{c}] OVERDUE by 1s: 203.0.113.9")), "{}", over[0].2);
    // The stage entry points at its mail; Message-IDs are derived from the stage and clock.
    let start = t("2030-01-01T10:00:00Z").as_second();
    assert_eq!(over[0].1, format!("escalation_overdue.{c}.{start}.0@provider.example"));
    assert_eq!(over[1].1, format!("escalation_overdue.{c}.{start}.1@provider.example"));
    // Staff mail is not a reply: no reply limit, no reply entry in the history.
    let (store, _) = d.open();
    assert_eq!(store.replies_sent_to_since("team@provider.example", t("2030-01-01T00:00:00Z")).unwrap(), 0);
    drop(store);
    assert_eq!(d.count(&format!("SELECT count(*) FROM events WHERE case_id = {} AND kind LIKE 'reply%'", c.0)), 0);
    assert_eq!(d.count("SELECT count(*) FROM outbox WHERE to_staff = 1"), d.count("SELECT count(*) FROM outbox"));

    // Resolved, then reopened: a new clock, and the stages again.
    let (mut store, _) = d.open();
    let resolve = Resolve { actor: "alice".into(), note: None, resolution: Resolution::Delisted, reply: None };
    store.resolve(c, &resolve, t("2030-01-04T09:00:00Z")).unwrap();
    store.reopen(c, "alice", Some("the sender wrote again"), t("2030-01-04T09:30:00Z")).unwrap();
    assert_eq!(store.case(c).unwrap().unwrap().state, CaseState::Open);
    drop(store);
    let p = d.pass("2030-01-06T07:00:00Z");
    assert_eq!(p.warned, vec![(c.to_string(), "escalation_due_soon")], "{p:?}");
    assert_eq!(stage_events(&d, c, EventKind::EscalationDueSoon), 2);
    assert!(d.pass("2030-01-06T09:30:01Z").warned == vec![(c.to_string(), "escalation_overdue")]);
    assert_eq!(d.mails("escalation_overdue").len(), 4);
}

#[test]
fn the_digest_lists_overdue_due_today_needing_attention_and_waiting_cases() {
    let d = Desk::new("awaiting_info_after = \"72h\"\n");
    let (mut store, _) = d.open();
    let overdue = open_case(&mut store, "192.0.2.1", false, "2030-03-01T06:00:00Z"); // due Mar 3, 06:00
    let today = open_case(&mut store, "192.0.2.2", false, "2030-03-02T20:00:00Z"); // due Mar 4, 20:00
    let later = open_case(&mut store, "192.0.2.3", false, "2030-03-03T09:00:00Z"); // due Mar 5, 09:00
    let waiting = open_case(&mut store, "192.0.2.4", true, "2030-02-28T09:00:00Z");
    let fresh_wait = open_case(&mut store, "192.0.2.5", true, "2030-03-03T09:00:00Z");
    // A follow-up arrived on `later` after staff last touched it: it needs attention.
    store.assign(later, "bob", Some("bob"), t("2030-03-03T10:00:00Z")).unwrap();
    let tx = store.transaction().unwrap();
    tx.add_event(&NewEvent {
        case: later,
        kind: EventKind::Message,
        actor: DAEMON_ACTOR.into(),
        text: Some("follow-up from the sender".into()),
        message: None,
        outbox: None,
        at: t("2030-03-03T11:00:00Z"),
    })
    .unwrap();
    tx.commit().unwrap();
    drop(store);

    let p = d.pass("2030-03-04T08:00:00Z");
    assert_eq!(p.digest, Some(("2030-03-04".into(), 4)), "{p:?}");
    let digest = d.mails("escalation_digest");
    assert_eq!(digest.len(), 2, "one per notify address");
    let body = &digest[0].2;
    let section = |title: &str| -> String {
        let start = body.find(title).unwrap_or_else(|| panic!("{title} missing:\n{body}"));
        body[start..].split("\r\n\r\n").next().unwrap().to_string()
    };
    assert!(body.contains("Subject: Delist desk digest for 2030-03-04: 4 case(s) to look at"), "{body}");
    let s = section("OVERDUE (1)");
    assert!(s.contains(&format!("{overdue}  192.0.2.1  overdue by 1d2h  assignee: nobody")), "{s}");
    let s = section("DUE TODAY (1)");
    assert!(s.contains(&format!("{today}  192.0.2.2  due in 12h00m")), "{s}");
    let s = section("NEEDS ATTENTION");
    assert!(s.contains(&format!("{later}  192.0.2.3  due in 1d1h  assignee: bob")), "{s}");
    let s = section("AWAITING INFORMATION for more than 3d0h (1)");
    assert!(s.contains(&format!("{waiting}  postmaster@192.0.2.4.example  waiting 3d23h")), "{s}");
    assert!(!body.contains(&fresh_wait.to_string()), "waiting less than 72 h: not listed\n{body}");
    // The digest also went through the overdue case's stage, in the same pass.
    assert_eq!(p.warned, vec![(overdue.to_string(), "escalation_overdue")]);
    // Once a day.
    assert_eq!(d.pass("2030-03-04T20:00:00Z").digest, None);
    assert_eq!(d.pass("2030-03-05T08:00:00Z").digest.map(|d| d.0), Some("2030-03-05".into()));
}

#[test]
fn the_staff_language_is_used() {
    let d = Desk::new("language = \"fr\"\n");
    let (mut store, _) = d.open();
    let c = open_case(&mut store, "198.51.100.7", false, "2030-05-01T00:00:00Z");
    drop(store);
    d.pass("2030-05-03T00:00:01Z");
    let m = d.mails("escalation_overdue");
    assert!(m[0].2.contains("Content-Language: fr"), "{}", m[0].2);
    assert!(m[0].2.contains(&format!("Le dossier de retrait {c} a d")), "{}", m[0].2);
}

/// The daemon's loop: it runs a pass at once on the clock it is given, wakes the outbox, and
/// stops when told.
#[test]
fn the_daemon_loop_runs_on_its_injected_clock() {
    let d = Desk::new("");
    let (mut store, escalator) = d.open();
    let c = open_case(&mut store, "203.0.113.77", false, "2030-07-01T00:00:00Z");
    let store = Arc::new(Mutex::new(store));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let wake = Arc::new(tokio::sync::Notify::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Three days later: overdue on this clock, whatever the wall clock says.
    let clock: delistd::escalation::Clock = Arc::new(|| "2030-07-04T00:00:00Z".parse().unwrap());
    let task = rt.spawn(delistd::escalation::run(escalator, store.clone(), wake.clone(), stop_rx, clock, Box::new(|| {})));
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), wake.notified()).await.expect("the outbox was woken");
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("the loop stops").unwrap();
    });
    let events: i64 = store
        .lock()
        .unwrap()
        .connection()
        .query_row(&format!("SELECT count(*) FROM events WHERE case_id = {} AND kind = 'escalation_overdue'", c.0), [], |r| r.get(0))
        .unwrap();
    assert_eq!(events, 1);
    assert!(Path::new(&d.cfg.store.database).exists());
}

/// Issue 12 with issue 11's accounts: the staff member a case is assigned to also gets its
/// warnings when their account has an e-mail (once, even if it is also a team address),
/// and with the desk's public URL configured each case line links to its page.
#[test]
fn the_assignee_is_warned_too_and_the_mail_links_to_the_case_page() {
    let d = Desk::new("[web]\nlisten = \"127.0.0.1:8080\"\npublic_url = \"https://desk.provider.example/\"\n");
    let (mut store, _) = d.open();
    let c = open_case(&mut store, "203.0.113.44", false, "2030-01-01T10:00:00Z");
    let other = open_case(&mut store, "203.0.113.45", false, "2030-01-01T10:00:00Z");
    store
        .connection()
        .execute_batch(&format!(
            "INSERT INTO staff (name, email, role, password_hash, created_at) VALUES \
               ('ann', 'ann@provider.example', 'agent', 'x', 0), ('bob', NULL, 'agent', 'x', 0); \
             UPDATE cases SET assignee = 'ann' WHERE id = {}; UPDATE cases SET assignee = 'bob' WHERE id = {};",
            c.0, other.0
        ))
        .unwrap();
    drop(store);

    // Jan 3, 05:00: both cases are due soon.
    let p = d.pass("2030-01-03T05:00:00Z");
    assert_eq!(p.warned.len(), 2, "{p:?}");
    let mails = d.mails("escalation_due_soon");
    let to = |case: CaseRef| -> Vec<String> {
        mails.iter().filter(|(_, _, raw)| raw.contains(&case.to_string())).map(|(r, _, _)| r.clone()).collect()
    };
    assert_eq!(to(c), ["team@provider.example", "oncall@provider.example", "ann@provider.example"], "{mails:#?}");
    // bob has no e-mail: the team only.
    assert_eq!(to(other), ["team@provider.example", "oncall@provider.example"], "{mails:#?}");
    let (_, mid, raw) = mails.iter().find(|(r, _, _)| r == "ann@provider.example").unwrap();
    assert!(mid.contains(".assignee@"), "{mid}");
    assert!(raw.contains(&format!("https://desk.provider.example/cases/{c}")), "{raw}");
    // Again after a restart: nothing more.
    d.pass("2030-01-03T05:30:00Z");
    assert_eq!(d.mails("escalation_due_soon").len(), 5);
}
