//! Escalation through the real stack: requests drained over IMAP, the daemon warns staff of
//! the case due soon and sends the digest through Postfix to a staff mailbox, read back over
//! IMAP with their headers; a later `delistd escalate --once` sends nothing more, and the
//! senders never see a staff mail.

use std::time::Duration;

use crate::common::*;

#[test]
fn staff_get_exactly_the_warnings_and_digest_due() {
    let d = Delistd::new("escalate");
    let staff = d.account("staff");
    // A one-hour SLA and a two-hour warning: a case is due soon as soon as it is opened.
    let cfg = read(&d.config).replace("database = \"delistd.sqlite\"\n", "database = \"delistd.sqlite\"\nsla_hours = 1\n");
    let cfg = format!(
        "{cfg}\n[escalation]\nnotify = [{:?}]\nwarn_before = \"2h\"\ndigest_at = \"00:00\"\ntimezone = \"UTC\"\n\
         awaiting_info_after = \"1s\"\n",
        staff.address
    );
    std::fs::write(&d.config, cfg).unwrap();

    let (full, partial) = (d.account("full"), d.account("partial"));
    send_mail(
        &full.address,
        &d.delist.address,
        &text_message(
            &full.address,
            &d.delist.address,
            "delist request",
            "esc-full@senders.example.test",
            &[],
            "Hello,\n\n550 5.7.511 Access denied, banned sender[198.51.100.171]. Please remove us.\n",
        ),
    );
    send_mail(
        &partial.address,
        &d.delist.address,
        &text_message(&partial.address, &d.delist.address, "please delist", "esc-partial@senders.example.test", &[], "We get 5.7.511, please remove us.\n"),
    );
    let mut inbox = ImapReader::login(&d.delist);
    wait_for_count_in(&mut inbox, "INBOX", 2, PATIENCE);
    d.run_once_ok();
    assert_eq!(d.count("SELECT count(*) FROM cases WHERE state = 'open'"), 1);
    assert_eq!(d.count("SELECT count(*) FROM cases WHERE state = 'awaiting_info'"), 1);
    // The awaiting case must wait longer than awaiting_info_after to be in the digest.
    std::thread::sleep(Duration::from_millis(1100));

    let mut serving = d.serve();
    let got = wait_for_mail(&staff, "INBOX", 2);
    serving.wait_for_log("escalation pass done", PATIENCE);
    serving.terminate();

    let case = d.rows("SELECT printf('DL-%06d', id) FROM cases WHERE state = 'open'")[0][0].clone();
    let waiting = d.rows("SELECT printf('DL-%06d', id) FROM cases WHERE state = 'awaiting_info'")[0][0].clone();
    let warning = got.iter().find(|m| subject(m).starts_with(&format!("[{case}] due in"))).unwrap_or_else(|| panic!("no warning:\n{}", summary(&got)));
    let digest = got.iter().find(|m| subject(m).starts_with("Delist desk digest for")).unwrap_or_else(|| panic!("no digest:\n{}", summary(&got)));
    for m in [warning, digest] {
        assert_eq!(header(m, "Auto-Submitted").as_deref(), Some("auto-generated"));
        assert!(header(m, "From").unwrap().contains(&d.delist.address));
        assert_eq!(header(m, "To").as_deref(), Some(staff.address.as_str()));
        let mid = header(m, "Message-ID").unwrap();
        let mid = mid.trim_matches(['<', '>']);
        assert_eq!(d.count(&format!("SELECT count(*) FROM outbox WHERE message_id = '{mid}' AND state = 'sent' AND to_staff = 1")), 1, "{mid}");
    }
    let text = body_text(warning);
    assert!(text.contains("198.51.100.171") && text.contains(&full.address), "{text}");
    let text = body_text(digest);
    assert!(text.contains(&format!("{waiting}  {}", partial.address)), "{text}");

    // One stage entry, one warning, one digest; a second pass from the command line adds none.
    assert_eq!(d.count("SELECT count(*) FROM events WHERE kind = 'escalation_due_soon'"), 1);
    let out = d.command().args(["escalate", "--once", "--config"]).arg(&d.config).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "escalate --once: {}\n{stdout}{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("0 mail(s) queued"), "{stdout}");
    std::thread::sleep(Duration::from_secs(2));
    let mut r = ImapReader::login(&staff);
    assert_eq!(r.count("INBOX"), 2, "exactly the warning and the digest:\n{}", summary(&r.messages("INBOX")));
    // The senders got their replies and nothing else.
    for (who, n) in [(&full, 1), (&partial, 1)] {
        let msgs = wait_for_mail(who, "INBOX", n);
        assert_eq!(msgs.len(), n, "{}:\n{}", who.address, summary(&msgs));
        assert!(msgs.iter().all(|m| header(m, "Auto-Submitted").as_deref() == Some("auto-replied")));
    }
}
