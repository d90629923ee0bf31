//! The desk's rules, against an in-memory store.

use super::*;
use crate::cases::store::tests::{t, take_in};
use crate::cases::{NewCase, StoreOptions};
use crate::types::Lang;

fn store() -> Store {
    Store::open_in_memory(StoreOptions::default()).unwrap()
}

fn no_ip_case(s: &mut Store, now: Timestamp) -> CaseRef {
    let tx = s.transaction().unwrap();
    let c = tx
        .open_case(
            &NewCase {
                ip: None,
                status_code: None,
                ndr_line: None,
                sender: "a@example.com".into(),
                language: Lang::It,
                opened_by: None,
                awaiting_info: true,
            },
            now,
        )
        .unwrap();
    tx.commit().unwrap();
    c
}

fn how(resolution: Resolution) -> ResolveRequest<'static> {
    ResolveRequest { resolution, note: Some("n".into()), reply: false, note_for_sender: None, replies: None }
}

#[test]
fn delisted_needs_a_banned_ip() {
    let mut s = store();
    let now = t("2025-03-01T10:00:00Z");
    let c = no_ip_case(&mut s, now);
    let mut desk = Desk::new(&mut s);
    let bob = Actor::agent("bob");
    let e = desk.resolve(&bob, c, how(Resolution::Delisted), now).unwrap_err();
    assert!(matches!(e, DeskError::Refused(ref m) if m.contains("no banned IP")), "{e}");
    assert_eq!(desk.store.case(c).unwrap().unwrap().state, CaseState::AwaitingInfo, "nothing changed");
    // Rejecting it is fine.
    let done = desk.resolve(&bob, c, how(Resolution::Rejected), now).unwrap();
    assert_eq!((done.state, done.reply), (CaseState::Rejected, None));
}

#[test]
fn a_reply_without_reply_settings_is_refused_before_anything_changes() {
    let mut s = store();
    let now = t("2025-03-01T10:00:00Z");
    let (_, c) = take_in(&mut s, 1, "203.0.113.7", now);
    let mut desk = Desk::new(&mut s);
    let req = ResolveRequest { reply: true, ..how(Resolution::Delisted) };
    assert!(matches!(desk.resolve(&Actor::agent("bob"), c, req, now), Err(DeskError::RepliesOff)));
    assert_eq!(desk.store.case(c).unwrap().unwrap().state, CaseState::Open);
}

#[test]
fn viewers_cannot_act_and_actions_record_the_actor() {
    let mut s = store();
    let now = t("2025-03-01T10:00:00Z");
    let (_, c) = take_in(&mut s, 1, "203.0.113.7", now);
    let mut desk = Desk::new(&mut s);
    let vera = Actor { name: "vera".into(), role: Role::Viewer };
    assert!(matches!(desk.note(&vera, c, "hi", now), Err(DeskError::Forbidden(_))));
    assert!(matches!(desk.assign(&vera, c, Some("vera"), now), Err(DeskError::Forbidden(_))));
    assert!(matches!(desk.resolve(&vera, c, how(Resolution::Delisted), now), Err(DeskError::Forbidden(_))));
    assert!(matches!(desk.reopen(&vera, c, None, now), Err(DeskError::Forbidden(_))));
    let ann = Actor::agent("ann");
    desk.note(&ann, c, "called them", now).unwrap();
    desk.assign(&ann, c, Some("ann"), now).unwrap();
    let v = desk.case(c, now).unwrap();
    let mine: Vec<_> = v.events.iter().filter(|e| e.actor == "ann").map(|e| e.kind.as_str()).collect();
    assert_eq!(mine, ["note", "assigned"]);
    assert!(v.events.iter().all(|e| e.actor != "vera"));
    assert_eq!(v.case.assignee.as_deref(), Some("ann"));
}

#[test]
fn the_case_view_has_each_message_text() {
    let mut s = store();
    let now = t("2025-03-01T10:00:00Z");
    let (_, c) = take_in(&mut s, 1, "203.0.113.7", now);
    let v = Desk::new(&mut s).case(c, now).unwrap();
    assert_eq!(v.messages.len(), 1);
    assert!(v.messages[0].text.as_deref().unwrap_or("").contains("550 5.7.511 banned sender[203.0.113.7]"));
}

#[test]
fn the_board_filters_by_cidr_sender_and_assignee_and_pages_by_keyset() {
    let mut s = store();
    let now = t("2025-03-01T10:00:00Z");
    let mut refs = Vec::new();
    for i in 1..=7u32 {
        let at = now.checked_add(SignedDuration::from_mins(i64::from(i))).unwrap();
        refs.push(take_in(&mut s, i, &format!("203.0.113.{i}"), at).1);
    }
    let mut desk = Desk::new(&mut s);
    desk.assign(&Actor::agent("ann"), refs[2], Some("ann"), now).unwrap();
    let later = t("2025-03-01T12:00:00Z");
    // Keyset pages of 3 cover all 7 in due order, without repeats.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = desk.list(&Query { limit: Some(3), after: after.clone(), ..Query::default() }, later).unwrap();
        seen.extend(page.cases.iter().map(|c| c.case_ref.clone()));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let want: Vec<String> = refs.iter().map(|r| r.to_string()).collect();
    assert_eq!(seen, want);
    let q = |q: Query| desk.list(&q, later).unwrap().cases.into_iter().map(|c| c.case_ref).collect::<Vec<_>>();
    let cidr = q(Query { ip: "203.0.113.4/31".parse().ok(), ..Query::default() });
    assert_eq!(cidr, [refs[3].to_string(), refs[4].to_string()], "203.0.113.4 and .5");
    assert_eq!(q(Query { ip: "203.0.113.6".parse().ok(), ..Query::default() }), [refs[5].to_string()]);
    assert_eq!(q(Query { assignee: Some("ann".into()), ..Query::default() }), [refs[2].to_string()]);
    assert_eq!(q(Query { sender: Some("EXAMPLE.COM".into()), ..Query::default() }).len(), 7);
    assert!(q(Query { sender: Some("%".into()), ..Query::default() }).is_empty(), "LIKE wildcards are literal");
    assert!(matches!(desk.list(&Query { after: Some("i3".into()), ..Query::default() }, later), Err(DeskError::Invalid(_))));
    let counts = desk.counts(later).unwrap();
    assert_eq!((counts.open, counts.overdue, counts.awaiting_info), (7, 0, 0));
}

#[test]
fn ip_match_parses_and_contains() {
    let m: IpMatch = "10.1.0.0/16".parse().unwrap();
    assert!(m.contains("10.1.200.3".parse().unwrap()) && !m.contains("10.2.0.1".parse().unwrap()));
    let m6: IpMatch = "2001:db8::/32".parse().unwrap();
    assert!(m6.contains("2001:db8:1::5".parse().unwrap()) && !m6.contains("10.1.0.1".parse().unwrap()));
    assert!("0.0.0.0/0".parse::<IpMatch>().unwrap().contains("192.0.2.1".parse().unwrap()));
    for bad in ["10.0.0.0/33", "x", "10.0.0.1/", "::/129"] {
        assert!(bad.parse::<IpMatch>().is_err(), "{bad}");
    }
}

#[test]
fn bulk_actions_apply_case_by_case() {
    let mut s = store();
    let now = t("2025-03-01T10:00:00Z");
    let (_, a) = take_in(&mut s, 1, "203.0.113.1", now);
    let (_, b) = take_in(&mut s, 2, "203.0.113.2", now);
    let c = no_ip_case(&mut s, now);
    let mut desk = Desk::new(&mut s);
    let ann = Actor::agent("ann");
    let out = desk.bulk(&ann, &[a, b, c], &Bulk::Assign(Some("ann".into())), now).unwrap();
    assert!(out.iter().all(|o| o.error.is_none()), "{out:?}");
    let how = Bulk::Resolve { resolution: Resolution::Delisted, note: Some("portal".into()) };
    let out = desk.bulk(&ann, &[a, c, b], &how, now).unwrap();
    let refused: Vec<&str> = out.iter().filter(|o| o.error.is_some()).map(|o| o.case.as_str()).collect();
    assert_eq!(refused, [c.to_string()], "only the case without an IP: {out:?}");
    assert_eq!(desk.store.case(b).unwrap().unwrap().state, CaseState::Resolved, "the one after it still done");
    let vera = Actor { name: "vera".into(), role: Role::Viewer };
    assert!(matches!(desk.bulk(&vera, &[a], &Bulk::Assign(None), now), Err(DeskError::Forbidden(_))));
}

/// A request with its own text, taken in as the pipeline does (message + case, one commit).
fn take_in_text(s: &mut Store, uid: u32, ip: &str, body: &str, now: Timestamp) -> CaseRef {
    use crate::cases::store::tests::{imap_message, new_case};
    let raw = format!("Subject: delist {uid}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n");
    let tx = s.transaction().unwrap();
    let m = crate::cases::NewMessage { subject: Some(format!("delist {uid}")), ..imap_message(uid, raw.as_bytes(), now) };
    let m = tx.insert_message(&m).unwrap();
    let c = tx.open_case(&new_case(ip, Some(m)), now).unwrap();
    tx.commit().unwrap();
    c
}

#[test]
fn the_board_searches_message_text_in_urgency_order_and_pages() {
    let mut s = store();
    let now = t("2025-03-01T10:00:00Z");
    let mut refs = Vec::new();
    for i in 1..=6u32 {
        let at = now.checked_add(SignedDuration::from_mins(i64::from(i))).unwrap();
        let ip = format!("198.51.100.{i}");
        let body =
            if i % 2 == 0 { "Our relay at Zürich-Mail GmbH was blocked".to_string() } else { format!("please remove {ip}, ACME AND sons") };
        refs.push(take_in_text(&mut s, i, &ip, &body, at));
    }
    let desk = Desk::new(&mut s);
    let later = t("2025-03-01T12:00:00Z");
    let q = |text: &str| -> Result<Vec<String>, DeskError> {
        let page = desk.list(&Query { text: Some(text.into()), ..Query::default() }, later)?;
        Ok(page.cases.into_iter().map(|c| c.case_ref).collect())
    };
    let even: Vec<String> = refs.iter().skip(1).step_by(2).map(|r| r.to_string()).collect();
    assert_eq!(q("zurich").unwrap(), even, "diacritics folded, case ignored");
    assert_eq!(q("\"relay at\"").unwrap(), even, "a phrase");
    assert_eq!(q("gmb*").unwrap(), even, "a prefix");
    assert_eq!(q("acme and").unwrap().len(), 3, "AND is a word here, not an operator");
    assert!(q("acme zurich").unwrap().is_empty(), "every word must match");
    assert_eq!(q("\"delist 4\"").unwrap(), [refs[3].to_string()], "subjects are searched");
    assert_eq!(q("198.51.100.5").unwrap(), [refs[4].to_string()], "an IP in the text");
    // Whatever a person types is a search, never an SQL error.
    for odd in ["\"", "*", "NOT", "a OR", "(x", "x:y", "NEAR(a b)", "'; --", "^"] {
        match desk.list(&Query { text: Some(odd.into()), ..Query::default() }, later) {
            Ok(_) | Err(DeskError::Invalid(_)) => {}
            Err(e) => panic!("{odd:?}: {e}"),
        }
    }
    assert!(matches!(q("*"), Err(DeskError::Invalid(ref m)) if m.contains("no words")));
    assert!(matches!(q("\"open"), Err(DeskError::Invalid(ref m)) if m.contains("quote")));
    // Keyset pages over a search.
    let first = desk.list(&Query { text: Some("zurich".into()), limit: Some(2), ..Query::default() }, later).unwrap();
    assert_eq!(first.cases.len(), 2);
    let rest = desk
        .list(&Query { text: Some("zurich".into()), limit: Some(2), after: first.next.clone(), ..Query::default() }, later)
        .unwrap();
    let all: Vec<String> = first.cases.iter().chain(&rest.cases).map(|c| c.case_ref.clone()).collect();
    assert_eq!((all, rest.next), (even, None));
}

#[test]
fn a_cidr_filter_reads_a_range_of_the_ip_key_index() {
    let mut s = store();
    let now = t("2025-03-01T10:00:00Z");
    let (_, v6) = take_in(&mut s, 1, "2001:db8:5::9", now);
    let (_, v4) = take_in(&mut s, 2, "10.9.8.7", now);
    let desk = Desk::new(&mut s);
    let all = Query { states: CaseState::ALL.to_vec(), ..Query::default() };
    let cases = [
        ("2001:db8:5::/48", Some(v6), true),
        ("10.9.0.0/16", Some(v4), true),
        ("10.9.9.0/24", None, true),
        // Wide blocks: the state index leads, the block is a filter.
        ("2001:db8::/32", Some(v6), false),
        ("10.0.0.0/8", Some(v4), false),
        ("::/0", Some(v6), false),
    ];
    for (block, want, by_key) in cases {
        let q = Query { ip: block.parse().ok(), ..all.clone() };
        let got: Vec<String> = desk.list(&q, now).unwrap().cases.into_iter().map(|c| c.case_ref).collect();
        assert_eq!(got, want.map(|r| r.to_string()).into_iter().collect::<Vec<_>>(), "{block}");
        let plan = desk.explain_list(&q, now).unwrap().join(" / ");
        assert_eq!(plan.contains("cases_by_ip_key"), by_key, "{block}: {plan}");
    }
}

#[test]
fn a_common_word_is_searched_case_by_case_with_the_same_answers() {
    // More matching messages than DENSE_HITS: the listing walks the cases in its order and
    // asks the index about each; the answers must be those of the other way.
    let mut s = store();
    let now = t("2025-03-01T10:00:00Z");
    let n = DENSE_HITS as u32 + 40;
    let tx = s.transaction().unwrap();
    for i in 1..=n {
        use crate::cases::store::tests::{imap_message, new_case};
        let rare = if i % 500 == 0 { " quetzal" } else { "" };
        let raw = format!("Subject: x\r\nMessage-ID: <{i}@example.com>\r\n\r\nplease delist us{rare}\r\n");
        let m = tx.insert_message(&imap_message(i, raw.as_bytes(), now)).unwrap();
        let at = now.checked_add(SignedDuration::from_secs(i64::from(i))).unwrap();
        let c = tx.open_case(&new_case(&format!("10.0.{}.{}", i / 250, i % 250), Some(m)), at).unwrap();
        if i % 3 == 0 {
            tx.tx.execute("UPDATE cases SET state = 'resolved', resolved_at = ?2 WHERE id = ?1", rusqlite::params![c.0, now.as_second()]).unwrap();
        }
    }
    tx.commit().unwrap();
    let desk = Desk::new(&mut s);
    let dense = Query { text: Some("delist".into()), ..Query::default() };
    assert!(desk.dense_search(&dense).unwrap().text);
    assert!(!desk.dense_search(&Query { text: Some("quetzal".into()), ..Query::default() }).unwrap().text);
    let plan = desk.explain_list(&dense, now).unwrap().join(" / ");
    assert!(plan.contains("CHECKED") && !plan.contains("message_search VIRTUAL"), "case by case: {plan}");
    // Active, by urgency: the first page is the first active cases.
    let page = desk.list(&Query { limit: Some(5), ..dense.clone() }, now).unwrap();
    let want: Vec<String> = (1..=n).filter(|i| i % 3 != 0).take(5).map(|i| CaseRef(i64::from(i)).to_string()).collect();
    assert_eq!(page.cases.iter().map(|c| c.case_ref.clone()).collect::<Vec<_>>(), want);
    // A part of the sender every case has: one sender, one row of the sender index, and
    // its cases listed in the same order.
    let everyone = Query { sender: Some("EXAMPLE.com".into()), limit: Some(5), ..Query::default() };
    assert!(!desk.dense_search(&everyone).unwrap().sender);
    let page = desk.list(&everyone, now).unwrap();
    assert_eq!(page.cases.iter().map(|c| c.case_ref.clone()).collect::<Vec<_>>(), want);
    // All states, newest first, paged to the end: every case, once.
    let all = Query { states: CaseState::ALL.to_vec(), limit: Some(500), ..dense.clone() };
    let (mut seen, mut after) = (0, None);
    loop {
        let page = desk.list(&Query { after: after.clone(), ..all.clone() }, now).unwrap();
        seen += page.cases.len();
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, n as usize);
    // A word in both ways of searching gives the same cases.
    let rare = desk.list(&Query { text: Some("quetzal delist".into()), states: CaseState::ALL.to_vec(), ..Query::default() }, now).unwrap();
    let want: Vec<String> = (1..=n).rev().filter(|i| i % 500 == 0).map(|i| CaseRef(i64::from(i)).to_string()).collect();
    assert_eq!(rare.cases.iter().map(|c| c.case_ref.clone()).collect::<Vec<_>>(), want);
}

#[test]
fn the_board_counts_read_only_todays_closed_cases() {
    let mut s = store();
    let now = t("2025-03-01T10:00:00Z");
    let before = t("2025-02-28T20:00:00Z");
    let (_, a) = take_in(&mut s, 1, "203.0.113.1", before);
    let (_, b) = take_in(&mut s, 2, "203.0.113.2", before);
    let mut desk = Desk::new(&mut s);
    let ann = Actor::agent("ann");
    desk.resolve(&ann, a, how(Resolution::Delisted), t("2025-02-28T23:00:00Z")).unwrap();
    desk.resolve(&ann, b, how(Resolution::Rejected), now).unwrap();
    assert_eq!(desk.counts(now).unwrap().resolved_today, 1, "yesterday's does not count");
    let plan: Vec<String> = desk
        .store
        .connection()
        .prepare("EXPLAIN QUERY PLAN SELECT count(*) FROM cases WHERE +state IN ('resolved', 'rejected') AND resolved_at >= 1")
        .unwrap()
        .query_map([], |r| r.get(3))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(plan.join(" ").contains("cases_by_resolved_at"), "{plan:?}");
}
