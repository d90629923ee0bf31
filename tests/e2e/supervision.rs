//! Issue 9 against the real servers: a wrong SMTP password keeps replies queued (not failed)
//! until it is corrected, `outbox retry` brings back a failed reply with its Message-ID, and
//! no password reaches the log even at trace level.

use crate::common::*;

fn request(d: &Delistd, sender: &Account, n: u32) -> Vec<u8> {
    text_message(
        &format!("Sam {n} <{}>", sender.address),
        &d.delist.address,
        &format!("please delist {n}"),
        &format!("auth-{n}@senders.example.test"),
        &[],
        &format!(
            "Hello,\n\nwe get: 550 5.7.511 Access denied, banned sender[203.0.113.{}].\n\nPlease remove us.\n",
            60 + n
        ),
    )
}

fn states(d: &Delistd) -> (i64, i64, i64) {
    (
        d.count("SELECT count(*) FROM outbox WHERE state = 'queued'"),
        d.count("SELECT count(*) FROM outbox WHERE state = 'sent'"),
        d.count("SELECT count(*) FROM outbox WHERE state = 'failed'"),
    )
}

#[test]
fn a_wrong_smtp_password_keeps_replies_queued_until_it_is_corrected() {
    let d = Delistd::with("smtpauth", Options { smtp_security: "tls", ..Options::default() });
    let sender = d.account("s1");
    std::fs::write(d.root.join("smtp-password"), "not-the-password\n").unwrap();
    for n in 0..3 {
        send_mail(&sender.address, &d.delist.address, &request(&d, &sender, n));
    }
    wait_for_mail(&d.delist, "INBOX", 3);

    // Twice with the wrong password: the 535 is about the server, not the replies.
    for _ in 0..2 {
        let run = d.run_once_ok();
        assert!(run.stderr.contains("SMTP login refused"), "{}", run.stderr);
        assert_eq!(states(&d), (3, 0, 0), "{}", run.stderr);
    }
    assert_eq!(d.count("SELECT max(attempts) FROM outbox"), 0, "a server failure is not charged to the replies");

    std::fs::write(d.root.join("smtp-password"), format!("{}\n", d.delist.password)).unwrap();
    d.run_once_ok();
    assert_eq!(states(&d), (0, 3, 0));
    let got = wait_for_mail(&sender, "INBOX", 3);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(ImapReader::login(&sender).count("INBOX"), 3, "delivered more than once:\n{}", summary(&got));

    // A reply that an earlier delistd gave up on (as it did on a 535): `outbox list` shows
    // it, `outbox retry` queues it again with its Message-ID, and it is delivered once.
    send_mail(&sender.address, &d.delist.address, &request(&d, &sender, 3));
    wait_for_mail(&d.delist, "INBOX", 1);
    std::fs::write(d.root.join("smtp-password"), "not-the-password\n").unwrap();
    d.run_once_ok();
    let (id, mid): (i64, String) = {
        let db = d.db();
        db.execute(
            "UPDATE outbox SET state = 'failed', last_error = '535 5.7.8 (an earlier delistd)' WHERE state = 'queued'",
            [],
        )
        .unwrap();
        db.query_row("SELECT id, message_id FROM outbox WHERE state = 'failed'", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
    };
    let outbox = |args: &[&str]| -> String {
        let out = d.command().arg("outbox").arg("--config").arg(&d.config).args(args).output().unwrap();
        assert!(out.status.success(), "outbox {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = outbox(&["list", "--state", "failed"]);
    assert!(listed.contains("535 5.7.8") && listed.lines().count() == 2, "{listed}");
    let retried = outbox(&["retry", "--failed"]);
    assert!(retried.contains(&format!("reply #{id} ")) && retried.contains(&mid), "{retried}");
    assert!(outbox(&["list", "--state", "failed"]).contains("no replies"));

    std::fs::write(d.root.join("smtp-password"), format!("{}\n", d.delist.password)).unwrap();
    d.run_once_ok();
    assert_eq!(states(&d), (0, 4, 0));
    let got = wait_for_mail(&sender, "INBOX", 4);
    let ids: Vec<String> = got.iter().filter_map(|m| header(m, "Message-ID")).collect();
    assert!(ids.contains(&format!("<{mid}>")), "requeueing kept the Message-ID <{mid}>: {ids:?}");
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(ImapReader::login(&sender).count("INBOX"), 4, "delivered more than once");
}

#[test]
fn no_password_in_the_log_at_trace_level() {
    let d = Delistd::with("trace", Options { smtp_security: "tls", ..Options::default() });
    let sender = d.account("s1");
    send_mail(&sender.address, &d.delist.address, &request(&d, &sender, 9));
    wait_for_mail(&d.delist, "INBOX", 1);
    let out =
        d.command().env("DELISTD_LOG", "trace").args(["run", "--once", "--config"]).arg(&d.config).output().unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{log}");
    wait_for_mail(&sender, "INBOX", 1);
    // The test sees what it must: async-imap traced the LOGIN command (and the reply went
    // out through an SMTP AUTH, which lettre logs at debug level when built with tracing)...
    assert!(log.contains("LOGIN \\\""), "no IMAP LOGIN in the trace; the test proves nothing:\n{log}");
    assert!(log.contains("[REDACTED]"));
    // ...and the password in none of its forms.
    let pw = &d.delist.password;
    let plain = format!("\0{}\0{pw}", d.delist.address);
    for form in [pw.clone(), b64(pw.as_bytes()), b64(plain.as_bytes())] {
        assert!(!log.contains(&form), "{form:?} is in the log");
    }
}

fn b64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() { char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]) } else { '=' });
        }
    }
    out
}
