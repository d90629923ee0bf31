//! A backlog of delist requests, and the replies to it in the senders' mailboxes: for the
//! tests that interrupt the daemon in the middle of one (`crash`, `backup`, `standby`).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;

/// Send `n` requests from `senders` in turn (Message-IDs `<id_prefix>-<i>@senders.example.test`,
/// request `i` naming the banned IP `ip(i)`) and wait until all are in the delist mailbox,
/// whose reader is returned.
pub fn send_backlog(d: &Delistd, senders: &[Account], n: usize, id_prefix: &str, ip: impl Fn(usize) -> String) -> ImapReader {
    let mut smtp = SmtpClient::connect();
    for i in 0..n {
        let s = &senders[i % senders.len()];
        let m = text_message(
            &format!("Sender {i} <{}>", s.address),
            &d.delist.address,
            &format!("delist request {i}"),
            &format!("{id_prefix}-{i}@senders.example.test"),
            &[],
            &format!("Hello,\n\nour server gets: 550 5.7.511 Access denied, banned sender[{}].\n\nPlease remove us.\n", ip(i)),
        );
        smtp.send(&s.address, &d.delist.address, &m);
    }
    smtp.quit();
    let mut inbox = ImapReader::login(&d.delist);
    wait_for_count_in(&mut inbox, "INBOX", n, Duration::from_secs(90));
    inbox
}

/// Once the senders' mailboxes hold `n` replies (within 60 s), and 1.5 s more so that a late
/// second copy is counted too: how many replies carry each value of header `name`.
pub fn replies_by(senders: &[Account], n: usize, name: &str) -> BTreeMap<String, usize> {
    let mut readers: Vec<ImapReader> = senders.iter().map(ImapReader::login).collect();
    wait_until(
        Duration::from_secs(60),
        || "replies still on their way".into(),
        || readers.iter_mut().map(|r| r.count("INBOX") as usize).sum::<usize>() >= n,
    );
    std::thread::sleep(Duration::from_millis(1500));
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for r in &mut readers {
        for m in r.messages("INBOX") {
            *by.entry(header(&m, name).unwrap_or_default()).or_default() += 1;
        }
    }
    by
}
