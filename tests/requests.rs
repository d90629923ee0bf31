//! Requests through the whole pipeline (extract → decide → one SQLite transaction) on a real
//! store, without a mail server: what is recorded, which cases open, which replies queue.
//! Issue 10: duplicates, automatic forwards, several rejections, backscatter.

use std::path::Path;

use delistd::cases::Store;
use delistd::config::Config;
use delistd::intake::{Fetched, SourceKey};
use delistd::pipeline::Pipeline;

const CONFIG: &str = "[intake]\nsource = \"maildir\"\n[maildir]\npath = \"mail\"\n[smtp]\nreply_dir = \"out\"\n\
[store]\ndatabase = \"d.sqlite\"\n[replies]\nfrom = \"Delist desk <delist@example.test>\"\n";

struct Desk {
    pipeline: Pipeline,
    store: Store,
    next_uid: u32,
}

impl Desk {
    fn new(extra_config: &str) -> Desk {
        let src = format!("{CONFIG}{extra_config}");
        let cfg = Config::parse(&src, Path::new("/nonexistent/delistd.toml")).expect("config");
        let pipeline = Pipeline::new(&cfg).expect("pipeline");
        let store = Store::open_in_memory(pipeline.store_options()).expect("store");
        Desk { pipeline, store, next_uid: 1 }
    }

    fn take(&mut self, raw: &str) -> delistd::pipeline::Processed {
        self.take_at(raw, jiff::Timestamp::now())
    }

    fn count(&self, sql: &str) -> i64 {
        self.store.connection().query_row(sql, [], |r| r.get(0)).expect("count")
    }
}

fn bounce(message_id: &str, resent: Option<&str>, ip: &str) -> String {
    let resent = resent
        .map(|who| format!("Return-Path: <{who}>\nResent-From: {who}\nResent-Message-ID: <r.{who}>\n"))
        .unwrap_or_else(|| "Return-Path: <>\n".into());
    format!(
        "{resent}From: MAILER-DAEMON <>\nTo: someone@example.org\nSubject: failure notice\nMessage-ID: <{message_id}>\n\n\
         Hi. This is the qmail-send program.\n\n<x@customer.example.net>:\n\
         550 5.7.511 Access denied, banned sender[{ip}]. To request removal from this list, forward this message.\n"
    )
}

#[test]
fn a_reused_message_id_is_not_a_duplicate_unless_it_is_the_same_message() {
    let mut desk = Desk::new("");
    // The same bounce resent by two different people: two requests, one case.
    let a = desk.take(&bounce("4@mx.example.org", Some("ann@example.org"), "203.0.113.10"));
    let b = desk.take(&bounce("4@mx.example.org", Some("bob@example.net"), "203.0.113.10"));
    assert!(a.queued_reply && b.queued_reply, "{a:?} {b:?}");
    // A small MTA reusing `<4@host>` for another person's bounce about another IP.
    let c = desk.take(&bounce("4@mx.example.org", Some("cy@example.com"), "203.0.113.11"));
    assert_eq!(c.cases.len(), 1);
    assert_eq!(desk.count("SELECT count(*) FROM cases"), 2);
    // The very same redirect delivered again (another Received: line): a duplicate.
    let again = bounce("4@mx.example.org", Some("cy@example.com"), "203.0.113.11");
    let d = desk.take(&format!("Received: from relay2.example.com\n{again}"));
    assert!(!d.queued_reply && d.cases.is_empty(), "{d:?}");
    assert_eq!(desk.count("SELECT count(*) FROM messages WHERE error LIKE 'duplicate of message%'"), 1);
}

#[test]
fn an_automatic_forward_opens_a_marked_case_without_reply() {
    let mut desk = Desk::new("");
    let p = desk.take(
        "Return-Path: <ops@example.com>\nFrom: Ops <ops@example.com>\nTo: delist@example.test\nSubject: FW: Undeliverable\n\
         Message-ID: <fw-1@example.com>\nAuto-Submitted: auto-generated\nX-MS-Exchange-Inbox-Rules-Loop: ops@example.com\n\n\
         Remote Server returned '550 5.7.511 Access denied, banned sender[198.51.100.33]. To request removal'\n",
    );
    assert_eq!((p.cases.len(), p.queued_reply), (1, false), "{p:?}");
    assert_eq!(desk.count("SELECT count(*) FROM outbox"), 0);
    let notes = desk.count("SELECT count(*) FROM events WHERE kind = 'note' AND text LIKE '%nobody has told the sender%'");
    assert_eq!(notes, 1, "the case says nobody was told");
}

#[test]
fn several_rejections_open_cases_only_for_5_7_511() {
    let mut desk = Desk::new("");
    let p = desk.take(
        "Return-Path: <nina@example.net>\nFrom: Nina <nina@example.net>\nTo: delist@example.test\nSubject: blocked\n\
         Message-ID: <mix-1@example.net>\n\n\
         550 5.7.606 Access denied, banned sending IP [198.51.100.61]. Visit the portal.\n\n\
         550 5.7.511 Access denied, banned sender[203.0.113.62]. To request removal from this list.\n",
    );
    assert_eq!(p.cases.len(), 1);
    assert!(p.queued_reply);
    assert_eq!(desk.count("SELECT count(*) FROM cases WHERE ip = '203.0.113.62'"), 1);
    assert_eq!(desk.count("SELECT count(*) FROM cases WHERE ip = '198.51.100.61'"), 0);
    let raw: Vec<u8> = desk.store.connection().query_row("SELECT raw FROM outbox", [], |r| r.get(0)).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("198.51.100.61"), "the reply points to the portal for the other IP:\n{text}");
}

fn request(from: &str, message_id: &str, ip: &str, extra: &str) -> String {
    format!(
        "Return-Path: <{from}>\nFrom: Someone <{from}>\nTo: delist@example.test\nSubject: delist\nMessage-ID: <{message_id}>\n{extra}\n\
         550 5.7.511 Access denied, banned sender[{ip}]. To request removal from this list.\n"
    )
}

#[test]
fn the_rate_limit_counts_the_real_mailbox_and_each_domain() {
    let mut desk = Desk::new("");
    // Default: 5 a day per mailbox. Case and +tags do not buy more.
    let variants = ["victim@example.org", "Victim@example.org", "victim+1@example.org", "VICTIM+2@Example.ORG", "victim+x@example.org", "victim+y@example.org", "victim+z@example.org"];
    let mut queued = 0;
    for (i, to) in variants.iter().enumerate() {
        queued += usize::from(desk.take(&request(to, &format!("v{i}@x"), &format!("203.0.113.{}", 100 + i), "")).queued_reply);
    }
    assert_eq!(queued, 5, "five replies to one mailbox, whatever its spelling");
    assert_eq!(desk.count("SELECT count(*) FROM events WHERE kind = 'note' AND text LIKE 'automatic reply suppressed: % victim@example.org %'"), 2);

    // Per domain and hour.
    let mut desk = Desk::new("max_per_domain_per_hour = 3\n");
    let mut queued = 0;
    for i in 0..5 {
        queued += usize::from(desk.take(&request(&format!("user{i}@target.example"), &format!("t{i}@x"), &format!("198.51.100.{}", 10 + i), "")).queued_reply);
    }
    assert_eq!(queued, 3);
    assert!(desk.take(&request("someone@other.example", "o1@x", "198.51.100.99", "")).queued_reply, "other domains are not held back");
}

#[test]
fn a_forged_request_gets_a_case_but_no_reply_when_our_mx_says_so() {
    let mut desk = Desk::new("[auth]\ntrusted_authserv_id = \"mx.delist.example\"\n");
    let forged = "Authentication-Results: mx.delist.example; spf=fail smtp.mailfrom=victim@example.org; dkim=none; dmarc=fail header.from=example.org\n";
    let p = desk.take(&request("victim@example.org", "f1@x", "203.0.113.50", forged));
    assert_eq!((p.cases.len(), p.queued_reply), (1, false), "{p:?}");
    let notes = desk.count("SELECT count(*) FROM events WHERE kind = 'note' AND text LIKE '%unauthenticated (spf=fail, dkim=none, dmarc=fail)%'");
    assert_eq!(notes, 1, "staff see why nobody was answered");

    // A field from anyone else is ignored (RFC 8601 §5): the request is answered.
    let foreign = "Authentication-Results: mx.attacker.example; spf=fail smtp.mailfrom=x@example.net\n";
    assert!(desk.take(&request("ops@example.net", "f2@x", "203.0.113.51", foreign)).queued_reply);
    // An authenticated sender is answered.
    let good = "Authentication-Results: mx.delist.example; spf=pass smtp.mailfrom=ops@example.com; dkim=pass header.d=example.com\n";
    assert!(desk.take(&request("ops@example.com", "f3@x", "203.0.113.52", good)).queued_reply);
}

#[test]
fn the_reply_quotes_little_of_the_senders_text() {
    let mut desk = Desk::new("");
    let raw = "Return-Path: <victim@example.org>\nFrom: \"Win a prize at https://spam.example\" <victim@example.org>\n\
               To: delist@example.test\nSubject: delist\nMessage-ID: <q1@x>\n\n\
               550 5.7.511 Access denied, banned sender[203.0.113.60]. CHEAP PILLS https://spam.example/buy\n";
    assert!(desk.take(raw).queued_reply);
    let out: Vec<u8> = desk.store.connection().query_row("SELECT raw FROM outbox", [], |r| r.get(0)).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains("spam.example") && !text.contains("PILLS"), "{text}");
    assert!(text.contains("Hello,"), "a neutral greeting:\n{text}");
    assert!(text.contains("banned sender[203.0.113.60]"));
}

#[test]
fn an_answer_to_our_question_completes_the_case_with_any_ip_in_its_new_text() {
    let mut desk = Desk::new("");
    let first = desk.take(
        "Return-Path: <uma@example.org>\nFrom: Uma <uma@example.org>\nTo: delist@example.test\nSubject: blocked\n\
         Message-ID: <ask-1@example.org>\n\nWe get 5.7.511 errors since this morning, please help.\n",
    );
    assert_eq!(first.cases.len(), 1);
    let case = first.cases[0];
    let answer = desk.take(&format!(
        "Return-Path: <uma@example.org>\nFrom: Uma <uma@example.org>\nTo: delist@example.test\n\
         Subject: Re: [{case}] Delisting request: information missing\nMessage-ID: <ask-2@example.org>\n\n\
         Sorry, here it is: 198.51.100.44\n\n> 550 5.7.511 Access denied, banned sender[a.b.c.d]. To request removal\n"
    ));
    assert!(answer.queued_reply, "{answer:?}");
    let c = desk.store.case(case).unwrap().unwrap();
    assert_eq!(c.ip.as_deref(), Some("198.51.100.44"));
}

#[test]
fn a_redirected_bounce_is_answered_to_and_greets_the_person_who_redirected_it() {
    let mut desk = Desk::new("");
    let p = desk.take(
        "Resent-From: Judy Ray <judy@example.org>\nResent-Message-ID: <rs-9@example.org>\nReturn-Path: <>\n\
         From: Microsoft Outlook <MAILER-DAEMON@mail.example.org>\nTo: judy@example.org\nSubject: Undeliverable: x\n\
         Auto-Submitted: auto-replied\nMessage-ID: <b-9@mail.example.org>\n\n\
         550 5.7.511 Access denied, banned sender[203.0.113.90]. To request removal from this list.\n",
    );
    assert!(p.queued_reply, "{p:?}");
    let (to, raw): (String, Vec<u8>) =
        desk.store.connection().query_row("SELECT recipient, raw FROM outbox", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!(to, "judy@example.org");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("Hello Judy Ray,") && !text.contains("Outlook,"), "{text}");
}

// -- threads (issue 11) ------------------------------------------------------------------------

fn at(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

impl Desk {
    fn take_at(&mut self, raw: &str, now: jiff::Timestamp) -> delistd::pipeline::Processed {
        let uid = self.next_uid;
        self.next_uid += 1;
        let f = Fetched {
            key: SourceKey::Imap { mailbox: "INBOX".into(), uidvalidity: 1, uid },
            raw: raw.replace('\n', "\r\n").into_bytes(),
            size: raw.len() as u64,
        };
        self.pipeline.process(&mut self.store, &f, now).expect("processed")
    }

    fn case(&self) -> delistd::cases::CaseRow {
        self.store.case(delistd::types::CaseRef(1)).unwrap().unwrap()
    }

    fn reply_kinds(&self) -> Vec<String> {
        let mut st = self.store.connection().prepare("SELECT coalesce(kind, '') FROM outbox ORDER BY id").unwrap();
        st.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }
}

const REQUEST: &str = "Return-Path: <alice@example.org>\nFrom: Alice <alice@example.org>\nTo: delist@example.test\n\
    Subject: please delist\nMessage-ID: <req-1@example.org>\n\n\
    Our mail is refused: 550 5.7.511 Access denied, banned sender[203.0.113.7].\n";

/// A person's message in the thread of DL-000001 (the tag in the subject, threaded).
fn person(n: u32, extra_headers: &str) -> String {
    format!(
        "Return-Path: <alice@example.org>\nFrom: Alice <alice@example.org>\nTo: delist@example.test\n\
         Subject: Re: [DL-000001] your request\nMessage-ID: <p{n}@example.org>\nIn-Reply-To: <req-1@example.org>\n\
         {extra_headers}\nWe are still blocked, please look again.\n"
    )
}

fn staff() -> delistd::desk::Actor {
    delistd::desk::Actor::agent("bob")
}

/// Staff close DL-000001 without a reply.
fn close_first_case(desk: &mut Desk, resolution: delistd::cases::Resolution, now: jiff::Timestamp) {
    let how = delistd::desk::ResolveRequest { resolution, note: None, reply: false, note_for_sender: None, replies: None };
    delistd::desk::Desk::new(&mut desk.store).resolve(&staff(), delistd::types::CaseRef(1), how, now).unwrap();
}

#[test]
fn a_person_writing_on_a_closed_case_reopens_it_with_a_fresh_sla_and_the_reopened_reply() {
    let mut desk = Desk::new("");
    let t0 = at("2025-03-01T10:00:00Z");
    desk.take_at(REQUEST, t0);
    close_first_case(&mut desk, delistd::cases::Resolution::Delisted, t0);
    // An automatic message (an out-of-office) on the closed case changes nothing.
    let t1 = t0 + jiff::SignedDuration::from_hours(30);
    let p = desk.take_at(&person(1, "Auto-Submitted: auto-replied\n"), t1);
    assert!(!p.queued_reply);
    let c = desk.case();
    assert_eq!((c.state, c.needs_attention), (delistd::cases::CaseState::Resolved, false));

    // A person: open again, due 48 h from now, marked, answered with `reopened`.
    let t2 = t0 + jiff::SignedDuration::from_hours(100);
    let p = desk.take_at(&person(2, ""), t2);
    assert!(p.queued_reply, "{p:?}");
    let c = desk.case();
    assert_eq!(c.state, delistd::cases::CaseState::Open);
    assert_eq!((c.sla_started_at, c.due_at, c.resolved_at), (Some(t2), Some(t2 + jiff::SignedDuration::from_hours(48)), None));
    assert!(c.needs_attention);
    assert_eq!(desk.reply_kinds(), ["acknowledge", "reopened"]);
    let raw: Vec<u8> = desk.store.connection().query_row("SELECT raw FROM outbox WHERE kind = 'reopened'", [], |r| r.get(0)).unwrap();
    let m = mail_parser::MessageParser::default().parse(&raw).unwrap();
    assert_eq!(m.in_reply_to().as_text(), Some("p2@example.org"));
    assert_eq!(m.header_raw("Auto-Submitted").map(str::trim), Some("auto-replied"), "an automatic reply (RFC 3834)");
    assert!(m.subject().unwrap().starts_with("[DL-000001] "));
    let reopened: String = desk
        .store
        .connection()
        .query_row("SELECT actor || ': ' || text FROM events WHERE kind = 'reopened'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(reopened, "delistd: was resolved; the sender wrote again");
}

#[test]
fn a_closed_case_whose_ip_has_a_newer_active_case_is_not_reopened_the_newer_one_is_marked() {
    let mut desk = Desk::new("");
    let t0 = at("2025-03-01T10:00:00Z");
    desk.take_at(REQUEST, t0);
    close_first_case(&mut desk, delistd::cases::Resolution::Rejected, t0);
    // A new request for the same IP opens DL-000002 (acknowledged as usual).
    let again = REQUEST.replace("req-1@", "req-2@");
    desk.take_at(&again, t0 + jiff::SignedDuration::from_hours(2));
    let second = delistd::types::CaseRef(2);
    assert_eq!(desk.store.case(second).unwrap().unwrap().state, delistd::cases::CaseState::Open);

    // Then the sender answers in the old thread: one IP keeps one active case.
    let p = desk.take_at(&person(1, ""), t0 + jiff::SignedDuration::from_hours(3));
    assert!(!p.queued_reply, "nothing was reopened, so no `reopened` reply: {p:?}");
    assert_eq!(desk.case().state, delistd::cases::CaseState::Rejected);
    assert!(desk.store.case(second).unwrap().unwrap().needs_attention, "the active case is marked");
    assert_eq!(desk.reply_kinds(), ["acknowledge", "acknowledge"]);
    let note: String = desk
        .store
        .connection()
        .query_row("SELECT text FROM events WHERE case_id = 1 AND kind = 'note' ORDER BY id DESC LIMIT 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(note, "not reopened: DL-000002 is already open for its IP");

    // Staff cannot reopen it either; the error names the case to work on.
    let err = delistd::desk::Desk::new(&mut desk.store)
        .reopen(&staff(), delistd::types::CaseRef(1), None, t0 + jiff::SignedDuration::from_hours(4))
        .unwrap_err();
    assert!(err.to_string().contains("work on DL-000002 instead"), "{err}");
    assert_eq!(desk.case().state, delistd::cases::CaseState::Rejected);
}

#[test]
fn a_person_writing_on_an_open_case_marks_it_and_the_clock_runs_on() {
    let mut desk = Desk::new("");
    let t0 = at("2025-03-01T10:00:00Z");
    desk.take_at(REQUEST, t0);
    let due = desk.case().due_at;
    let p = desk.take_at(&person(1, ""), t0 + jiff::SignedDuration::from_hours(5));
    assert!(!p.queued_reply, "no reply: staff will answer");
    let c = desk.case();
    assert!(c.needs_attention);
    assert_eq!(c.due_at, due, "the SLA does not restart");
    // A staff note clears the mark; a delivery report of our reply never sets it.
    delistd::desk::Desk::new(&mut desk.store).note(&staff(), delistd::types::CaseRef(1), "seen", t0).unwrap();
    assert!(!desk.case().needs_attention);
    let mid: String = desk.store.connection().query_row("SELECT message_id FROM outbox LIMIT 1", [], |r| r.get(0)).unwrap();
    let report = format!(
        "Return-Path: <>\nFrom: MAILER-DAEMON@example.org\nTo: delist@example.test\nSubject: Undelivered Mail Returned to Sender\n\
         Message-ID: <dsn-1@example.org>\nAuto-Submitted: auto-replied\nIn-Reply-To: <{mid}>\nReferences: <{mid}>\n\n\
         Your message to alice@example.org could not be delivered.\n"
    );
    desk.take_at(&report, t0 + jiff::SignedDuration::from_hours(6));
    assert!(!desk.case().needs_attention);
}

#[test]
fn the_answer_to_a_staff_question_resumes_the_clock_without_an_automatic_reply() {
    let mut desk = Desk::new("");
    let t0 = at("2025-03-01T10:00:00Z");
    desk.take_at(REQUEST, t0);
    let builder = delistd::reply::Builder::embedded();
    let asked = t0 + jiff::SignedDuration::from_hours(8);
    delistd::desk::Desk::new(&mut desk.store)
        .ask(&staff(), delistd::types::CaseRef(1), "Which host sends from this IP?", &builder, asked)
        .unwrap();
    assert_eq!(desk.case().state, delistd::cases::CaseState::AwaitingInfo);
    let answered = asked + jiff::SignedDuration::from_hours(50);
    let p = desk.take_at(&person(1, ""), answered);
    assert!(!p.queued_reply, "staff answer it themselves: {p:?}");
    let c = desk.case();
    assert_eq!(c.state, delistd::cases::CaseState::Open);
    assert_eq!(c.due_at, Some(answered + jiff::SignedDuration::from_hours(40)), "40 h were left when staff asked");
    assert!(c.needs_attention && c.sla_remaining.is_none());
    assert_eq!(desk.reply_kinds(), ["acknowledge", "staff_question"]);
}

#[test]
fn the_answer_completing_an_incomplete_request_is_still_acknowledged() {
    let mut desk = Desk::new("");
    let t0 = at("2025-03-01T10:00:00Z");
    desk.take_at(
        "Return-Path: <alice@example.org>\nFrom: Alice <alice@example.org>\nTo: delist@example.test\n\
         Subject: please delist\nMessage-ID: <req-1@example.org>\n\nOur mail is refused with 550 5.7.511. Help!\n",
        t0,
    );
    assert_eq!(desk.case().state, delistd::cases::CaseState::AwaitingInfo);
    let answer = "Return-Path: <alice@example.org>\nFrom: Alice <alice@example.org>\nTo: delist@example.test\n\
         Subject: Re: [DL-000001] more information needed\nMessage-ID: <p1@example.org>\n\n\
         550 5.7.511 Access denied, banned sender[203.0.113.7]\n";
    let t1 = t0 + jiff::SignedDuration::from_hours(3);
    let p = desk.take_at(answer, t1);
    assert!(p.queued_reply);
    let c = desk.case();
    assert_eq!((c.state, c.due_at), (delistd::cases::CaseState::Open, Some(t1 + jiff::SignedDuration::from_hours(48))));
    assert_eq!(desk.reply_kinds(), ["missing_info", "acknowledge"]);
}
