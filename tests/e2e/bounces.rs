//! Issue 10, end to end. Bounces as a real MTA writes them: this stack's Postfix sends to
//! the `*.refuse.test` domains, whose MX (a second smtpd of the stack, see
//! `scripts/mailstack.sh`) refuses with the provider's 5.7.511 / 5.7.606 / 5.7.750 texts,
//! so Postfix writes genuine bounces (reply wrapped at 78 columns with a 4-space indent,
//! folded Diagnostic-Code, the code on one line and the IP on the next). Their owners then
//! send them to the delist mailbox inline, as an attachment and resent (mutt's `b`).
//!
//! And the anti-backscatter rule: with `[auth] trusted_authserv_id` set to the stack's MX
//! (`mx.example.test`, which vouches for senders that authenticated on the SMTPS port and
//! fails the rest), a forged request gets its case and no reply, even when it carries a
//! forged `Authentication-Results` of our MX; an authenticated one gets its reply.

use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{address::Envelope, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::Value;

use crate::common::*;

/// Send a message to `someone@<domain>` and return the bounce Postfix writes back.
fn genuine_bounce(sender: &Account, domain: &str) -> Vec<u8> {
    let to = format!("someone@{domain}");
    let msg = text_message(&sender.address, &to, "Quarterly figures", &format!("q-{domain}@example.test"), &[], "Hello,\n\nthe figures.\n");
    send_mail(&sender.address, &to, &msg);
    let got = wait_for_mail(sender, "INBOX", 1);
    let bounce = got.into_iter().next().expect("a bounce");
    let text = String::from_utf8_lossy(&bounce);
    assert!(text.contains("Undelivered Mail Returned to Sender") && text.contains("Diagnostic-Code:"), "not a Postfix bounce:\n{text}");
    bounce
}

/// The bounce's notification text (its first part), as a mail client shows it.
fn notification(bounce: &[u8]) -> String {
    let text = String::from_utf8_lossy(bounce);
    let start = text.find("This is the mail system").expect("notification part");
    let end = text[start..].find("\n--").map_or(text.len(), |e| start + e);
    text[start..end].replace("\r\n", "\n")
}

fn inline_forward(from: &Account, to: &str, bounce: &[u8], mid: &str) -> Vec<u8> {
    let body = format!(
        "Hello,\n\nour mail to a customer bounces, please lift the block.\n\nThanks\n\n\
         -------- Forwarded Message --------\nSubject: Undelivered Mail Returned to Sender\n\
         From: Mail Delivery System <MAILER-DAEMON@example.test>\n\n{}",
        notification(bounce)
    );
    text_message(&format!("Ops <{}>", from.address), to, "Fwd: Undelivered Mail Returned to Sender", mid, &[], &body)
}

fn attached_forward(from: &Account, to: &str, bounce: &[u8], mid: &str) -> Vec<u8> {
    let mut m = format!(
        "From: Ops <{}>\nTo: {to}\nSubject: Fwd: Undelivered Mail Returned to Sender\nMessage-ID: <{mid}>\n\
         MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"fw1\"\n\n\
         --fw1\nContent-Type: text/plain; charset=utf-8\n\nPlease see the attached bounce.\n\n\
         --fw1\nContent-Type: message/rfc822\nContent-Disposition: attachment; filename=\"bounce.eml\"\n\n",
        from.address
    )
    .into_bytes();
    m.extend_from_slice(&bounce.iter().copied().filter(|b| *b != b'\r').collect::<Vec<u8>>());
    m.extend_from_slice(b"\n--fw1--\n");
    m
}

/// mutt's `b`: the bounce unchanged, with a Resent-* block on top (RFC 5322 §3.6.6). Its old
/// `Return-Path: <>` and `Delivered-To:` stay below the block.
fn resent(from: &Account, to: &str, bounce: &[u8], mid: &str) -> Vec<u8> {
    let mut m = format!(
        "Resent-From: Ops Team <{}>\nResent-To: {to}\nResent-Date: Mon, 30 Nov 2026 10:00:00 +0000\nResent-Message-ID: <{mid}>\n",
        from.address
    )
    .into_bytes();
    m.extend_from_slice(&bounce.iter().copied().filter(|b| *b != b'\r').collect::<Vec<u8>>());
    m
}

fn case_by_ip<'a>(cases: &'a [Value], ip: &str) -> Option<&'a Value> {
    cases.iter().find(|c| c["ip"].as_str() == Some(ip))
}

#[test]
fn genuine_bounces_forwarded_inline_attached_and_resent_are_read() {
    let d = Delistd::new("bounces");
    let to = d.delist.address.clone();
    let inline = d.account("inline");
    let attached = d.account("attached");
    let redirect = d.account("resent");
    let portal = d.account("portal");
    let tenant = d.account("tenant");

    let b = genuine_bounce(&inline, "ban4.refuse.test");
    send_mail(&inline.address, &to, &inline_forward(&inline, &to, &b, "bn-inline@example.test"));
    let b = genuine_bounce(&attached, "ban6.refuse.test");
    send_mail(&attached.address, &to, &attached_forward(&attached, &to, &b, "bn-attached@example.test"));
    let b = genuine_bounce(&redirect, "ban4r.refuse.test");
    send_mail(&redirect.address, &to, &resent(&redirect, &to, &b, "bn-resent@example.test"));
    let b = genuine_bounce(&portal, "portal.refuse.test");
    send_mail(&portal.address, &to, &inline_forward(&portal, &to, &b, "bn-portal@example.test"));
    let b = genuine_bounce(&tenant, "tenant.refuse.test");
    send_mail(&tenant.address, &to, &attached_forward(&tenant, &to, &b, "bn-tenant@example.test"));

    wait_for_mail(&d.delist, "INBOX", 5);
    d.run_once_ok();

    let cases = d.cases();
    let summary = || serde_json::to_string_pretty(&cases).unwrap();
    for (ip, who) in [("203.0.113.201", &inline), ("2001:db8::202", &attached), ("203.0.113.205", &redirect)] {
        let c = case_by_ip(&cases, ip).unwrap_or_else(|| panic!("no case for {ip}:\n{}", summary()));
        assert_eq!(c["status_code"].as_str(), Some("5.7.511"), "{ip}: {c}");
        assert_eq!(c["sender"].as_str(), Some(who.address.as_str()), "{ip}: the reply goes to the person: {c}");
    }
    assert!(case_by_ip(&cases, "203.0.113.203").is_none(), "5.7.606 opens no case:\n{}", summary());
    assert_eq!(cases.len(), 3, "{}", summary());

    // Everyone hears back, in the reply their rejection calls for.
    for (who, subject) in [
        (&inline, "Delisting request received"),
        (&attached, "Delisting request received"),
        (&redirect, "Delisting request received"),
        (&portal, "self-service delist portal"),
        (&tenant, "Tenant block"),
    ] {
        // The bounce is the first message of each mailbox; the reply the second.
        let got = wait_for_mail(who, "INBOX", 2);
        let reply = got.iter().find(|m| header(m, "Auto-Submitted").as_deref() == Some("auto-replied") && subject_of(m).contains(subject));
        assert!(reply.is_some(), "{}: no {subject:?} reply:\n{}", who.address, summary_of(&got));
    }
    // The resent one greets the person who redirected it, not the mail system.
    let got = wait_for_mail(&redirect, "INBOX", 2);
    let reply = got.iter().find(|m| subject_of(m).contains("Delisting request received")).expect("reply");
    let text = body_text(reply);
    assert!(text.contains("Hello Ops Team,") && !text.contains("Mail Delivery System"), "{text}");
}

fn subject_of(m: &[u8]) -> String {
    subject(m)
}

fn summary_of(msgs: &[Vec<u8>]) -> String {
    summary(msgs)
}

/// Submit on the SMTPS port with SMTP AUTH, as a real user's mail client does.
fn send_authenticated(account: &Account, rcpt: &str, message: &[u8]) {
    let st = stack();
    let pem = std::fs::read(&st.ca_file).expect("CA file");
    let tls = TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(&pem).expect("CA"))
        .build_rustls()
        .expect("TLS parameters");
    let envelope = Envelope::new(Some(account.address.parse().unwrap()), vec![rcpt.parse().unwrap()]).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Built inside the runtime: lettre's connection pool spawns a task.
    rt.block_on(async {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(st.smtps_port)
            .tls(Tls::Wrapper(tls))
            .credentials(Credentials::new(account.address.clone(), account.password.clone()))
            .timeout(Some(Duration::from_secs(30)))
            .build();
        transport.send_raw(&envelope, message).await
    })
    .unwrap_or_else(|e| panic!("SMTPS submission as {}: {e}", account.address));
}

#[test]
fn a_forged_request_gets_a_case_and_no_reply_an_authenticated_one_its_reply() {
    let d = Delistd::with("backscatter", Options { trusted_authserv_id: Some("mx.example.test"), ..Options::default() });
    let to = d.delist.address.clone();
    let victim = d.account("victim");
    let real = d.account("real");

    // Anyone can put the victim's address in MAIL FROM and From, and forge our MX's verdict
    // below the one our MX prepends.
    let forged = text_message(
        &format!("Victim <{}>", victim.address),
        &to,
        "please delist",
        "forged-1@example.test",
        &[("Authentication-Results", "mx.example.test; spf=pass smtp.mailfrom=example.test; dkim=pass header.d=example.test; dmarc=pass")],
        "550 5.7.511 Access denied, banned sender[203.0.113.210]. Visit https://spam.example/ for cheap pills\n",
    );
    send_mail(&victim.address, &to, &forged);
    let genuine = text_message(
        &format!("Real Sender <{}>", real.address),
        &to,
        "please delist",
        "real-1@example.test",
        &[],
        "550 5.7.511 Access denied, banned sender[203.0.113.211]. To request removal from this list.\n",
    );
    send_authenticated(&real, &to, &genuine);
    wait_for_mail(&d.delist, "INBOX", 2);
    d.run_once_ok();

    let cases = d.cases();
    let forged_case = case_by_ip(&cases, "203.0.113.210").expect("the forged request still gets its case");
    let authentic_case = case_by_ip(&cases, "203.0.113.211").expect("the authenticated request gets its case");
    let shown = d.show(forged_case["ref"].as_str().unwrap());
    let history = shown.to_string();
    assert!(history.contains("no automatic reply") && history.contains("spf=fail"), "staff see why:\n{history}");
    assert_eq!(
        d.count(&format!("SELECT count(*) FROM outbox WHERE recipient = '{}'", victim.address)),
        0,
        "nothing may go to the victim"
    );
    // The authenticated sender's reply arrives.
    let got = wait_for_mail(&real, "INBOX", 1);
    assert!(subject(&got[0]).contains(authentic_case["ref"].as_str().unwrap()), "{}", summary(&got));
    // And the victim's mailbox stays empty.
    let mut r = ImapReader::login(&victim);
    assert_eq!(r.count("INBOX"), 0, "backscatter reached the victim");
}
