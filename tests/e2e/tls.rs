//! Connection security against the real servers: STARTTLS on the plain IMAP port and
//! implicit TLS with AUTH for SMTP work; an untrusted certificate and a wrong password stop
//! the daemon with a clear message and an exit code scripts can act on.

use crate::common::*;

fn request(d: &Delistd, sender: &Account, ip: &str) -> Vec<u8> {
    text_message(
        &format!("Sam <{}>", sender.address),
        &d.delist.address,
        "please delist",
        &format!("{ip}@senders.example.test"),
        &[],
        &format!("Hello,\n\nwe get: 550 5.7.511 Access denied, banned sender[{ip}].\n\nPlease remove us.\n"),
    )
}

#[test]
fn starttls_imap_and_implicit_tls_smtp_with_auth() {
    let d = Delistd::with("starttls", Options { imap_security: "starttls", smtp_security: "tls", ..Options::default() });
    let sender = d.account("s1");
    send_mail(&sender.address, &d.delist.address, &request(&d, &sender, "203.0.113.40"));
    wait_for_mail(&d.delist, "INBOX", 1);

    let run = d.run_once_ok();
    assert!(run.stderr.contains("IMAP connected"), "{}", run.stderr);

    let got = wait_for_mail(&sender, "INBOX", 1);
    assert_eq!(header(&got[0], "Return-Path").as_deref(), Some("<>"));
    assert!(subject(&got[0]).contains("[DL-000001]"), "{}", subject(&got[0]));
    let mut inbox = ImapReader::login(&d.delist);
    assert_eq!((inbox.count("INBOX"), inbox.count("Processed")), (0, 1));
    assert_eq!(d.count("SELECT count(*) FROM outbox WHERE state = 'sent'"), 1);
}

#[test]
fn untrusted_certificate_is_a_temporary_failure_with_a_tls_error() {
    // Without ca_file only the public roots are trusted: the test CA's certificate is not.
    for security in ["tls", "starttls"] {
        let d = Delistd::with(&format!("badca-{security}"), Options { imap_security: security, imap_ca_file: false, ..Options::default() });
        let sender = d.account("s1");
        send_mail(&sender.address, &d.delist.address, &request(&d, &sender, "203.0.113.41"));
        wait_for_mail(&d.delist, "INBOX", 1);

        let run = d.run_once();
        assert_eq!(run.status.code(), Some(75), "{security}: expected EX_TEMPFAIL:\n{}", run.stderr);
        let last = run.stderr.lines().last().unwrap_or_default();
        assert!(last.contains("TLS handshake with localhost"), "{security}: {last:?}");
        assert!(last.contains("certificate"), "{security}: the reason should name the certificate: {last:?}");
        // Nothing was taken in.
        assert_eq!(d.count("SELECT count(*) FROM messages"), 0);
        assert_eq!(ImapReader::login(&d.delist).count("INBOX"), 1);
    }
}

#[test]
fn wrong_password_is_a_clear_login_error_that_does_not_print_the_password() {
    let wrong = "not-the-Secret-42";
    let d = Delistd::with("badpw", Options { imap_password: Some(wrong.into()), ..Options::default() });
    let run = d.run_once();
    assert!(!run.status.success(), "a wrong password must fail:\n{}", run.stderr);
    assert_eq!(run.status.code(), Some(77), "refused credentials are EX_NOPERM, not worth retrying:\n{}", run.stderr);
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(last.contains(&format!("IMAP login as {} refused", d.delist.address)), "{last:?}");
    assert!(last.contains("Authentication failed"), "Dovecot's reason should be shown: {last:?}");
    assert!(!run.stderr.contains(wrong) && !run.stdout.contains(wrong), "the password was printed:\n{}", run.stderr);
}
