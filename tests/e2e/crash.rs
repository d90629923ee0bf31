//! kill -9 in the middle of a backlog, twice: nothing is lost and nothing is handled twice.
//!
//! The pipeline commits each message (its row, case and queued reply) in one transaction
//! before the message is moved out of the INBOX, and the outbox marks a reply sent only
//! after the server's 250. So after any kill: every request has exactly one row, a case is
//! opened once per IP, and every reply is delivered. The one duplicate a kill can cause is
//! a reply the server accepted just before the kill and that was not yet marked sent: with
//! one SMTP connection, at most one per kill.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::backlog::{replies_by, send_backlog};
use crate::common::*;

const REQUESTS: usize = 200;
const SENDERS: usize = 4;
/// Fewer IPs than requests: repeats must join the case already open for their IP.
const IPS: usize = 160;
/// Kill when this many messages are recorded.
const KILL_AT: [i64; 2] = [40, 120];

fn recorded(d: &Delistd) -> i64 {
    d.try_count("SELECT count(*) FROM messages").unwrap_or(0)
}

#[test]
fn kill_9_mid_backlog_loses_nothing_and_doubles_nothing() {
    let d = Delistd::with("kill9", Options { max_per_recipient_per_day: 1000, smtp_connections: 1, ..Options::default() });
    let senders: Vec<Account> = (0..SENDERS).map(|i| d.account(&format!("s{i}"))).collect();
    let mut inbox = send_backlog(&d, &senders, REQUESTS, "req", |i| format!("203.0.113.{}", 1 + i % IPS));

    let mut kills = 0;
    for at in KILL_AT {
        let mut serving = d.serve();
        let start = Instant::now();
        while recorded(&d) < at {
            serving.assert_running();
            assert!(start.elapsed() < PATIENCE, "only {} of {at} messages recorded:\n{}", recorded(&d), serving.log_text());
            std::thread::sleep(Duration::from_millis(5));
        }
        serving.kill9();
        kills += 1;
        eprintln!("kill -9 #{kills} with {} messages recorded", recorded(&d));
    }

    let serving = d.serve();
    let queued = || d.count("SELECT count(*) FROM outbox WHERE state <> 'sent'");
    wait_until(
        Duration::from_secs(90),
        || format!("{} messages recorded, {} replies not sent", recorded(&d), queued()),
        || recorded(&d) >= REQUESTS as i64 && queued() == 0,
    );
    serving.terminate();

    // The mailbox: every request filed exactly once.
    assert_eq!(inbox.count("INBOX"), 0);
    assert_eq!(inbox.count("Processed") as usize, REQUESTS);
    assert_eq!(inbox.count("Quarantine"), 0);

    // The database: one row per request, all acknowledged.
    let per_request = d.rows("SELECT message_id, count(*), group_concat(action), group_concat(outcome) FROM messages GROUP BY message_id");
    assert_eq!(per_request.len(), REQUESTS, "requests recorded: {}", per_request.len());
    for r in &per_request {
        assert_eq!((r[1].as_str(), r[2].as_str(), r[3].as_str()), ("1", "acknowledge", "processed"), "{r:?}");
    }
    // One case per IP, never two.
    let twice = d.rows("SELECT ip, count(*) FROM cases GROUP BY ip HAVING count(*) > 1");
    assert!(twice.is_empty(), "IPs with more than one case: {twice:?}");
    assert_eq!(d.count("SELECT count(*) FROM cases"), IPS as i64);
    assert_eq!(d.count("SELECT count(*) FROM cases WHERE state = 'open'"), IPS as i64);
    // One reply per request, all sent.
    assert_eq!(d.count("SELECT count(DISTINCT caused_by) FROM outbox WHERE state = 'sent'"), REQUESTS as i64);
    assert_eq!(d.count("SELECT count(*) FROM outbox"), REQUESTS as i64);

    // The senders' mailboxes: every reply delivered; a second copy only from a kill.
    let sent: BTreeSet<String> = d.rows("SELECT message_id FROM outbox").into_iter().map(|r| format!("<{}>", r[0])).collect();
    let delivered = replies_by(&senders, REQUESTS, "Message-ID");
    let missing: Vec<&String> = sent.iter().filter(|id| !delivered.contains_key(*id)).collect();
    assert!(missing.is_empty(), "replies marked sent but never delivered: {missing:?}");
    let strangers: Vec<&String> = delivered.keys().filter(|id| !sent.contains(*id)).collect();
    assert!(strangers.is_empty(), "delivered replies the outbox does not know: {strangers:?}");
    let doubles: usize = delivered.values().map(|n| n - 1).sum();
    eprintln!("{kills} kills: {doubles} reply(ies) delivered twice");
    assert!(doubles <= kills, "{doubles} replies delivered twice after {kills} kills");
}
