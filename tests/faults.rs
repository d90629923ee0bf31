//! Fault injection against the real mail stack: Dovecot restarted under a serving daemon
//! and down when it starts, Postfix stopped while replies are due.
//!
//! These stop shared servers, so they must not overlap with other tests that use the stack.
//! cargo runs test binaries one after another (never two at once), and the scenarios here
//! run in order inside one `#[test]`; `scripts/test.sh` relies on both (see there).

mod common;

use std::time::Duration;

use common::*;

/// Puts the stack back up however a scenario ends, so a failure here does not take the
/// tests after it down too.
struct RestoreStack;

impl Drop for RestoreStack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let st = stack();
            let _ = std::process::Command::new("bash")
                .arg(&st.mailstack)
                .arg("start")
                .env("DELISTD_STACK_DIR", &st.stack_dir)
                .output();
        }
    }
}

fn request(d: &Delistd, sender: &Account, n: u32) -> Vec<u8> {
    text_message(
        &format!("Sender {n} <{}>", sender.address),
        &d.delist.address,
        &format!("delist request {n}"),
        &format!("req-{n}@senders.example.test"),
        &[],
        &format!("Hello,\n\nwe get: 550 5.7.511 Access denied, banned sender[203.0.113.{n}].\n\nPlease remove us.\n"),
    )
}

fn sent(d: &Delistd) -> i64 {
    d.count("SELECT count(*) FROM outbox WHERE state = 'sent'")
}

#[test]
fn servers_going_away_under_a_serving_daemon() {
    let _restore = RestoreStack;
    let scenarios: [(&str, fn()); 3] = [
        ("dovecot_restart_under_an_idling_daemon", dovecot_restart_under_an_idling_daemon),
        ("dovecot_down_at_start_is_retried_with_backoff", dovecot_down_at_start_is_retried_with_backoff),
        ("postfix_outage_keeps_replies_queued_until_it_is_back", postfix_outage_keeps_replies_queued_until_it_is_back),
    ];
    for (name, scenario) in scenarios {
        let start = std::time::Instant::now();
        scenario();
        eprintln!("faults: {name} ok in {:.1} s", start.elapsed().as_secs_f64());
    }
}

/// The daemon idles on the mailbox (IDLE) and Dovecot restarts: once the old session is
/// gone it reconnects and takes what arrives afterwards.
fn dovecot_restart_under_an_idling_daemon() {
    let d = Delistd::with("dovecot-restart", Options { poll_interval: "60s", ..Options::default() });
    let sender = d.account("s1");
    let mut serving = d.serve();
    serving.wait_for_log("IMAP connected", PATIENCE);

    // Served through IDLE before the fault.
    send_mail(&sender.address, &d.delist.address, &request(&d, &sender, 1));
    wait_until(PATIENCE, || serving_state(&d), || sent(&d) == 1);

    mailstack("restart-dovecot");
    // Dovecot 2.3's imap process outlives its master by some seconds (it keeps serving
    // the session, on the same Maildir), then says BYE: only then must the daemon
    // reconnect.
    wait_until(
        Duration::from_secs(60),
        || format!("no reconnection after the restart:\n{}", serving.log_text()),
        || serving.log_text().matches("IMAP connected").count() >= 2,
    );
    send_mail(&sender.address, &d.delist.address, &request(&d, &sender, 2));
    wait_until(PATIENCE, || serving_state(&d), || sent(&d) == 2);

    let log = serving.terminate();
    assert!(log.contains("reconnecting"), "the lost session should be logged:\n{log}");
    assert_eq!(d.count("SELECT count(*) FROM messages"), 2);
    assert_eq!(wait_for_mail(&sender, "INBOX", 2).len(), 2);
    let mut inbox = ImapReader::login(&d.delist);
    assert_eq!((inbox.count("INBOX"), inbox.count("Processed")), (0, 2));
}

/// Dovecot is down when the daemon starts: it retries with growing delays, then connects
/// and takes the request that Postfix held while LMTP was down.
fn dovecot_down_at_start_is_retried_with_backoff() {
    let d = Delistd::new("dovecot-down");
    let sender = d.account("s1");
    mailstack("stop-dovecot");
    send_mail(&sender.address, &d.delist.address, &request(&d, &sender, 3));
    let mut serving = d.serve();
    serving.wait_for_log("retry_in_s=2", PATIENCE);
    serving.assert_running();
    mailstack("start-dovecot");
    wait_until(PATIENCE, || serving_state(&d), || d.try_count("SELECT count(*) FROM outbox WHERE state = 'sent'") == Some(1));

    let log = serving.terminate();
    let waits: Vec<&str> = log.lines().filter(|l| l.contains("IMAP unavailable")).filter_map(|l| l.split("retry_in_s=").nth(1)).collect();
    assert!(waits.starts_with(&["1", "2"]), "backoff should double from 1 s: {waits:?}\n{log}");
    assert_eq!(d.count("SELECT count(*) FROM messages"), 1);
    assert_eq!(wait_for_mail(&sender, "INBOX", 1).len(), 1);
}

fn serving_state(d: &Delistd) -> String {
    format!(
        "messages {:?}, outbox {:?}",
        d.rows("SELECT message_id, action FROM messages"),
        d.rows("SELECT recipient, state, attempts, last_error FROM outbox")
    )
}

/// Requests come in while Postfix is down: outcomes are recorded, replies stay queued with
/// the error; when Postfix is back each is delivered once. A server that cannot be reached
/// is not the reply's fault (issue 9): no attempt is charged, so an outage, however long,
/// never makes a reply be given up.
fn postfix_outage_keeps_replies_queued_until_it_is_back() {
    let d = Delistd::new("postfix");
    let senders: Vec<Account> = (1..=3).map(|i| d.account(&format!("s{i}"))).collect();
    let mut smtp = SmtpClient::connect();
    for (i, s) in senders.iter().enumerate() {
        smtp.send(&s.address, &d.delist.address, &request(&d, s, 10 + i as u32));
    }
    smtp.quit();
    wait_for_mail(&d.delist, "INBOX", senders.len());

    mailstack("stop-postfix");
    let mut serving = d.serve();
    let n = senders.len() as i64;
    wait_until(
        PATIENCE,
        || serving_state(&d),
        || d.try_count("SELECT count(*) FROM outbox WHERE state = 'queued' AND attempts = 0 AND last_error IS NOT NULL") == Some(n),
    );
    serving.assert_running();
    assert_eq!(d.count("SELECT count(*) FROM messages WHERE outcome = 'processed'"), n);
    // Staff see it too: the case's reply is queued, with the reason.
    let shown = d.show("DL-000001");
    let reply = &shown["replies"][0];
    assert_eq!(reply["state"], "queued", "{shown:#}");
    assert_eq!(reply["attempts"].as_i64(), Some(0), "{shown:#}");
    assert!(reply["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{shown:#}");
    let mut inbox = ImapReader::login(&d.delist);
    assert_eq!((inbox.count("INBOX") as i64, inbox.count("Processed") as i64), (0, n));

    mailstack("start-postfix");
    // The server is tried again with backoff (1 s doubling, at most 64 s).
    wait_until(Duration::from_secs(75), || serving_state(&d), || sent(&d) == n);
    let log = serving.terminate();
    assert!(log.contains("will retry"), "{log}");

    for s in &senders {
        let got = wait_for_mail(s, "INBOX", 1);
        // A second copy would come right behind the first.
        std::thread::sleep(Duration::from_millis(500));
        let again = ImapReader::login(s).messages("INBOX");
        assert_eq!(again.len(), 1, "{}: {} replies:\n{}", s.address, again.len(), summary(&again));
        assert_eq!(header(&got[0], "Message-ID"), header(&again[0], "Message-ID"));
    }
}
