//! Hostile and huge input over the real path: each message gets a recorded outcome and
//! leaves the INBOX; none stops the daemon or the messages after it.

use crate::common::*;

const CAP: usize = 1024 * 1024;

/// A request followed by ~5 MB of attachment: over the 1 MiB cap set in the config.
fn huge_request(from: &Account, to: &str) -> Vec<u8> {
    let mut m = format!(
        "From: Big Sender <{}>\nTo: {to}\nSubject: delist please (logs attached)\nMessage-ID: <huge-1@senders.example.test>\n\
         MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"HUGE\"\n\n\
         --HUGE\nContent-Type: text/plain; charset=utf-8\n\n\
         Hello,\n\nwe get: 550 5.7.511 Access denied, banned sender[203.0.113.50]. To request removal from this list,\n\
         forward this message to delist@example.test.\n\nOur logs are attached.\n\n\
         --HUGE\nContent-Type: application/octet-stream; name=\"maillog.bin\"\nContent-Transfer-Encoding: base64\n\n",
        from.address
    );
    let line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\n";
    while m.len() < 5 * 1024 * 1024 {
        m.push_str(line);
    }
    m.push_str("--HUGE--\n");
    m.into_bytes()
}

/// MIME that lies about itself in several ways at once.
fn malformed(from: &Account, to: &str) -> Vec<Vec<u8>> {
    let head = |n: u32, ct: &str| {
        format!("From: <{}>\nTo: {to}\nSubject: broken {n}\nMessage-ID: <broken-{n}@senders.example.test>\nMIME-Version: 1.0\nContent-Type: {ct}\n", from.address)
    };
    let mut v = Vec::new();
    // A boundary that is never closed, base64 that is not, a charset that does not exist,
    // and header bytes that are not UTF-8.
    let mut m = head(1, "multipart/mixed; boundary=\"OPEN\"").into_bytes();
    m.extend_from_slice(b"X-Junk: \xff\xfe\xc3(\n\n--OPEN\nContent-Type: text/plain; charset=x-no-such-charset\nContent-Transfer-Encoding: base64\n\n!!!! not base64 at all ****\n550 5.7.511 Access denied, banned sender[203.0.113.51].\n--OPEN\nContent-Type: text/html\nContent-Transfer-Encoding: quoted-printable\n\n<p>=ZZ=\n=E9=\n<b><i><table>");
    v.push(m);
    // multipart without a boundary parameter.
    v.push(format!("{}\nno boundary here\n550 5.7.511 Access denied, banned sender[203.0.113.52].\n", head(2, "multipart/alternative")).into_bytes());
    // Sixty nested multiparts (Postfix itself refuses nesting beyond 100).
    let mut body = String::new();
    for i in 0..60 {
        body.push_str(&format!("--b{i}\nContent-Type: multipart/mixed; boundary=\"b{}\"\n\n", i + 1));
    }
    body.push_str("--b60\nContent-Type: text/plain\n\n550 5.7.511 Access denied, banned sender[203.0.113.53].\n");
    v.push(format!("{}\n{body}", head(3, "multipart/mixed; boundary=\"b0\"")).into_bytes());
    v
}

#[test]
fn huge_and_malformed_messages_get_recorded_outcomes() {
    let d = Delistd::with("hostile", Options { max_message_bytes: Some(CAP), ..Options::default() });
    let (big, broken) = (d.account("big"), d.account("broken"));
    let huge = huge_request(&big, &d.delist.address);
    let mut smtp = SmtpClient::connect();
    smtp.send(&big.address, &d.delist.address, &huge);
    let bad = malformed(&broken, &d.delist.address);
    for m in &bad {
        smtp.send(&broken.address, &d.delist.address, m);
    }
    smtp.quit();
    wait_for_mail(&d.delist, "INBOX", 1 + bad.len());

    d.run_once_ok();

    let rows = d.rows("SELECT message_id, outcome, size, length(raw), action, coalesce(error, '') FROM messages ORDER BY id");
    assert_eq!(rows.len(), 1 + bad.len(), "{rows:#?}");
    for r in &rows {
        assert!(["processed", "ignored", "quarantined"].contains(&r[1].as_str()), "no outcome recorded: {r:?}");
    }
    // The huge one: its full size is known, only the cap was fetched, and the request at
    // its start was still read and answered.
    let h = rows.iter().find(|r| r[0] == "huge-1@senders.example.test").unwrap_or_else(|| panic!("{rows:#?}"));
    let (size, stored): (usize, usize) = (h[2].parse().unwrap(), h[3].parse().unwrap());
    assert!(size > 5_000_000, "recorded size {size} is not the message's");
    assert!(stored <= CAP, "{stored} bytes fetched, more than the {CAP}-byte cap");
    assert_eq!(h[4], "acknowledge", "{h:?}");
    let reply = wait_for_mail(&big, "INBOX", 1);
    assert!(subject(&reply[0]).contains("[DL-"), "{}", subject(&reply[0]));

    let mut inbox = ImapReader::login(&d.delist);
    assert_eq!(inbox.count("INBOX"), 0, "left behind:\n{}", summary(&inbox.messages("INBOX")));
    assert_eq!((inbox.count("Processed") + inbox.count("Quarantine")) as usize, 1 + bad.len());
}
