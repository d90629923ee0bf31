//! Threads through the real mail stack (issue 11): a sender writing again on a resolved case
//! reopens it and gets the "reopened" reply; a staff question (`cases ask`) reaches the
//! sender as a person's mail, threaded; the sender's answer moves the case back to open,
//! marked as needing attention, with no automatic reply.

use std::io::Write as _;
use std::process::Stdio;

use crate::common::*;

const IP: &str = "203.0.113.77";

/// `delistd cases ARGS` with `text` on standard input (not a terminal: no editor).
fn cases_with_stdin(d: &Delistd, args: &[&str], text: &str) -> String {
    let mut child = d
        .command()
        .arg("cases")
        .arg("--config")
        .arg(&d.config)
        .arg("--db")
        .arg(&d.db)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "delistd cases {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The sender answers `ours` (a message of ours in their mailbox), threaded to it.
fn answer(d: &Delistd, from: &Account, ours: &[u8], message_id: &str, body: &str) {
    let ours_id = header(ours, "Message-ID").unwrap();
    let m = text_message(
        &format!("Alice Martin <{}>", from.address),
        &d.delist.address,
        &format!("Re: {}", subject(ours)),
        message_id,
        &[("In-Reply-To", &ours_id), ("References", &ours_id)],
        body,
    );
    send_mail(&from.address, &d.delist.address, &m);
    wait_for_mail(&d.delist, "INBOX", 1);
}

#[test]
fn a_resolved_case_reopens_and_a_staff_question_is_answered_in_the_thread() {
    let d = Delistd::new("threads");
    let alice = d.account("alice");
    let request = text_message(
        &format!("Alice Martin <{}>", alice.address),
        &d.delist.address,
        "Please remove our server",
        "thr-1@senders.example.test",
        &[],
        &format!("Hello,\n\nwe are refused:\n\n550 5.7.511 Access denied, banned sender[{IP}].\n\nAlice\n"),
    );
    send_mail(&alice.address, &d.delist.address, &request);
    wait_for_mail(&d.delist, "INBOX", 1);
    d.run_once_ok();
    let ack = wait_for_mail(&alice, "INBOX", 1).remove(0);
    let cases = d.cases();
    assert_eq!(cases.len(), 1, "{cases:#?}");
    let r = cases[0]["ref"].as_str().unwrap().to_string();
    d.cases_cmd(&["resolve", &r, "--note", "delisted by hand"]);
    assert_eq!(d.show(&r)["case"]["state"], "resolved");

    // "Still blocked": the case opens again with a fresh SLA, and Alice is told so.
    answer(&d, &alice, &ack, "thr-2@senders.example.test", "Hello,\n\nwe are still blocked since this morning.\n\nAlice\n");
    d.run_once_ok();
    let shown = d.show(&r);
    assert_eq!(shown["case"]["state"], "open", "{shown:#}");
    assert_eq!(shown["case"]["needs_attention"], true, "{shown:#}");
    assert!(shown["case"]["due_at"].is_string() && shown["case"]["resolved_at"].is_null(), "{shown:#}");
    let got = wait_for_mail(&alice, "INBOX", 2);
    assert_eq!(got.len(), 2, "{}", summary(&got));
    let reopened = &got[1];
    let s = subject(reopened);
    assert!(s.contains(&format!("[{r}]")) && s.contains("open again"), "{s:?}");
    assert_eq!(header(reopened, "In-Reply-To").as_deref(), Some("<thr-2@senders.example.test>"));
    assert_eq!(header(reopened, "Auto-Submitted").as_deref(), Some("auto-replied"));
    assert!(body_text(reopened).contains(IP), "{}", body_text(reopened));

    // A staff question: a person's mail (no Auto-Submitted), threaded to Alice's latest
    // message, the case tag in the subject; the case waits for the answer.
    let question = "Which host sends from this address, and is it a relay?";
    let out = cases_with_stdin(&d, &["ask", &r], question);
    assert!(out.contains("awaiting_info"), "{out}");
    assert_eq!(d.show(&r)["case"]["state"], "awaiting_info");
    d.run_once_ok(); // sends the outbox
    let got = wait_for_mail(&alice, "INBOX", 3);
    assert_eq!(got.len(), 3, "{}", summary(&got));
    let asked = &got[2];
    assert!(header(asked, "Auto-Submitted").is_none(), "a person's question is not automatic (RFC 3834 §5)");
    assert_eq!(header(asked, "In-Reply-To").as_deref(), Some("<thr-2@senders.example.test>"));
    assert!(subject(asked).contains(&format!("[{r}]")), "{}", subject(asked));
    assert!(body_text(asked).contains(question), "{}", body_text(asked));
    assert!(body_text(asked).starts_with("Hello Alice Martin,"), "{}", body_text(asked));

    // Alice answers: open again, marked, no automatic reply.
    answer(&d, &alice, asked, "thr-3@senders.example.test", "It is our relay mx2, now fixed.\n\nAlice\n");
    d.run_once_ok();
    let shown = d.show(&r);
    assert_eq!(shown["case"]["state"], "open", "{shown:#}");
    assert_eq!(shown["case"]["needs_attention"], true, "{shown:#}");
    let kinds: Vec<&str> = shown["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for k in ["reopened", "asked", "answered"] {
        assert!(kinds.contains(&k), "{k} missing: {kinds:?}");
    }
    assert_eq!(d.count("SELECT count(*) FROM outbox"), 3, "ack, reopened, question: nothing more");
    assert_eq!(ImapReader::login(&alice).count("INBOX"), 3);
    let listed = d.cases_cmd(&["list", "--attention"]);
    assert!(listed.contains(&r) && listed.lines().all(|l| l.chars().count() <= 80), "{listed}");
}
