//! The whole path, end to end: each kind of request gets its reply, in its language, at its
//! envelope sender, threaded and marked automatic; automatic mail gets none; a missing-info
//! request is completed by the sender's follow-up.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::common::*;

/// One request sent and what must become of it.
struct Request {
    role: &'static str,
    /// Envelope sender (becomes Return-Path at delivery); `None`: the null sender `<>`.
    mail_from: Option<Account>,
    message_id: String,
    raw: Vec<u8>,
    /// The action recorded for it.
    action: &'static str,
    /// Where the reply must go, with its language and a phrase of its subject and body.
    reply: Option<(Account, &'static str, &'static str, String)>,
}

fn ndr(code: &str, ip: &str) -> String {
    format!(
        "550 {code} Access denied, banned sender[{ip}]. To request removal from this list, forward this message to delist@example.test."
    )
}

/// RFC 2047 B-encoding needs base64; the dev-dependencies have none, and this is short.
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A Japanese request the way Japanese mail clients still write it: ISO-2022-JP, 7bit,
/// with B-encoded header words (RFC 1468, RFC 2047).
fn japanese_request(from: &Account, message_id: &str, ip: &str) -> Vec<u8> {
    let jis = |s: &str| encoding_rs::ISO_2022_JP.encode(s).0.into_owned();
    let word = |s: &str| format!("=?ISO-2022-JP?B?{}?=", base64(&jis(s)));
    let body = format!(
        "ご担当者様\n\n弊社のメールサーバーからの送信が拒否されています。\nエラーメッセージは以下のとおりです。\n\n{}\n\n\
         ブロックの解除をお願いいたします。\n\n山田\n",
        ndr("5.7.511", ip)
    );
    let mut m = format!(
        "From: {} <{}>\nTo: delist@example.test\nSubject: {}\nMessage-ID: <{message_id}>\n\
         MIME-Version: 1.0\nContent-Type: text/plain; charset=ISO-2022-JP\nContent-Transfer-Encoding: 7bit\n\n",
        word("山田"),
        from.address,
        word("ブロックリストからの削除のお願い"),
    )
    .into_bytes();
    m.extend_from_slice(&jis(&body));
    m
}

fn requests(d: &Delistd) -> Vec<Request> {
    let a = |role: &str| d.account(role);
    let to = d.delist.address.as_str();
    let mid = |role: &str| format!("{role}-1@senders.example.test");
    // A plain-text request from the account named `role`, also its envelope sender; the
    // action and the reply are set by each request below.
    let typed = |role: &'static str, name: &str, subject: &str, extra: &[(&str, &str)], body: &str| {
        let from = a(role);
        Request {
            role,
            raw: text_message(&format!("{name} <{}>", from.address), to, subject, &mid(role), extra, body),
            mail_from: Some(from),
            message_id: mid(role),
            action: "ignore",
            reply: None,
        }
    };
    let mut v = Vec::new();

    // English, with an envelope sender other than From: the reply follows Return-Path
    // (RFC 3834 §4), so it goes to en-rp and never to en.
    let en_rp = a("en-rp");
    v.push(Request {
        mail_from: Some(en_rp.clone()),
        action: "acknowledge",
        reply: Some((en_rp, "en", "Delisting request received", "203.0.113.7".into())),
        ..typed(
            "en",
            "Alice Martin",
            "Delisting request for our mail server",
            &[],
            &format!(
                "Hello,\n\nOur outgoing server is rejected since this morning. Here is the bounce:\n\n\
                 <bob@customer.example>: host mx1.provider.example[198.51.100.25] said:\n    {}\n\n\
                 Please remove us.\n\nAlice\n",
                ndr("5.7.511", "203.0.113.7")
            ),
        )
    });

    v.push(Request {
        action: "acknowledge",
        reply: Some((a("fr"), "fr", "Demande de retrait de la liste de blocage bien reçue", "198.51.100.44".into())),
        ..typed(
            "fr",
            "=?utf-8?q?J=C3=A9r=C3=B4me_Dupont?=",
            "Demande de retrait de la liste des expéditeurs bloqués",
            &[],
            &format!(
                "Bonjour,\n\nNos messages sont refusés depuis hier. Voici le message d'erreur complet que\n\
                 nous avons reçu :\n\n{}\n\nMerci de bien vouloir nous retirer de la liste.\n\nCordialement,\nJérôme\n",
                ndr("5.7.511", "198.51.100.44")
            ),
        )
    });

    let ja = a("ja");
    v.push(Request {
        role: "ja",
        raw: japanese_request(&ja, &mid("ja"), "192.0.2.80"),
        mail_from: Some(ja.clone()),
        message_id: mid("ja"),
        action: "acknowledge",
        reply: Some((ja, "ja", "リスト解除のご依頼を受け付けました", "192.0.2.80".into())),
    });

    // 5.7.606: the portal, in German.
    v.push(Request {
        action: "redirect_portal",
        reply: Some((a("de"), "de", "Self-Service-Portal", PORTAL_URL.into())),
        ..typed(
            "de",
            "Petra Schulz",
            "Bitte um Entsperrung unserer IP",
            &[],
            "Guten Tag,\n\nunsere E-Mails werden mit folgender Fehlermeldung abgewiesen:\n\n\
             550 5.7.606 Access denied, banned sending IP [198.51.100.61]. To request removal from this list please visit \
             https://sender.office.com/ and follow the directions.\n\n\
             Bitte entsperren Sie unsere IP-Adresse. Vielen Dank!\n\nMit freundlichen Grüßen\nPetra Schulz\n",
        )
    });

    // 5.7.705: a tenant block, in Italian.
    v.push(Request {
        action: "tenant_support",
        reply: Some((a("it"), "it", "Blocco del tenant", SUPPORT_URL.into())),
        ..typed(
            "it",
            "Marco Rossi",
            "Tutti i nostri utenti sono bloccati",
            &[],
            "Buongiorno,\n\nda un'ora nessuno dei nostri utenti riesce a inviare messaggi. Ogni messaggio\n\
             viene rifiutato con questo errore:\n\n\
             Remote Server returned '550 5.7.705 Access denied, tenant has exceeded threshold'\n\n\
             Potete sbloccarci? Grazie mille.\n\nCordiali saluti,\nMarco Rossi\n",
        )
    });

    // The code but no IP: we ask for it.
    v.push(Request {
        action: "missing_info",
        reply: Some((a("miss"), "en", "information missing", "IP".into())),
        ..typed(
            "miss",
            "Noc Team",
            "please delist our server",
            &[],
            "Hello,\n\nsince this morning our mail is rejected with 5.7.511. Please remove us from\nyour block list.\n\nThanks,\nNoc Team\n",
        )
    });

    // RFC 3834 §2: automatic mail is never answered, whatever it carries.
    v.push(typed(
        "ooo",
        "Bob",
        "Automatic reply: Out of office",
        &[("Auto-Submitted", "auto-replied")],
        "I am out of the office until December 1st with limited access to e-mail.\n",
    ));
    // A list post that quotes a complete request is not a request (decide.rs).
    v.push(typed(
        "list",
        "Ops list",
        "[ops] please delist",
        &[("List-Id", "Ops team <ops.example.test>"), ("Precedence", "list")],
        &format!("{}\n", ndr("5.7.511", "198.51.100.90")),
    ));
    v.push(typed(
        "spam",
        "Someone",
        "please delist",
        &[("X-Spam-Flag", "YES")],
        &format!("{}\n", ndr("5.7.511", "198.51.100.91")),
    ));
    let bounce = format!(
        "From: Mail Delivery System <MAILER-DAEMON@example.test>\nTo: {to}\nSubject: Undelivered Mail Returned to Sender\n\
         Message-ID: <{}>\nAuto-Submitted: auto-replied\nMIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"B1\"\n\n\
         --B1\nContent-Type: text/plain; charset=us-ascii\n\n\
         I'm sorry to have to inform you that your message could not be delivered.\n\n\
         <nobody@example.net>: host mx.example.net[198.51.100.7] said: 550 5.1.1 User unknown\n\n\
         --B1\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.test\n\n\
         Final-Recipient: rfc822; nobody@example.net\nAction: failed\nStatus: 5.1.1\n\n--B1--\n",
        mid("bounce")
    );
    v.push(Request {
        role: "bounce",
        raw: bounce.into_bytes(),
        mail_from: None,
        message_id: mid("bounce"),
        action: "ignore",
        reply: None,
    });
    v
}

/// What every automatic reply must carry (RFC 3834 §3, §5; RFC 5322 §3.6.4).
fn assert_reply_headers(raw: &[u8], d: &Delistd, to: &Account, request_mid: &str, lang: &str) {
    let show = || String::from_utf8_lossy(raw).chars().take(3000).collect::<String>();
    // Dovecot's LMTP writes the envelope sender as Return-Path: <> is the null sender.
    assert_eq!(header(raw, "Return-Path").as_deref(), Some("<>"), "reply not sent with MAIL FROM:<>:\n{}", show());
    assert_eq!(header(raw, "Auto-Submitted").as_deref(), Some("auto-replied"), "{}", show());
    assert_eq!(header(raw, "In-Reply-To"), Some(format!("<{request_mid}>")), "{}", show());
    let refs = header(raw, "References").unwrap_or_default();
    assert!(refs.split_whitespace().any(|r| r == format!("<{request_mid}>")), "References {refs:?} lacks the request:\n{}", show());
    assert_eq!(header(raw, "Content-Language").as_deref(), Some(lang), "{}", show());
    let to_header = header(raw, "To").unwrap_or_default();
    assert!(to_header.contains(&to.address), "To: {to_header:?}, expected {}", to.address);
    let from = header(raw, "From").unwrap_or_default();
    assert!(from.contains(&d.delist.address), "From: {from:?}");
}

fn case_by_ip<'a>(cases: &'a [Value], ip: &str) -> &'a Value {
    let found: Vec<&Value> = cases.iter().filter(|c| c["ip"] == ip).collect();
    assert_eq!(found.len(), 1, "expected one case for {ip}: {cases:#?}");
    found[0]
}

#[test]
fn every_request_gets_its_reply_and_automatic_mail_none() {
    let d = Delistd::new("flow");
    let reqs = requests(&d);
    let mut smtp = SmtpClient::connect();
    for r in &reqs {
        let from = r.mail_from.as_ref().map(|a| a.address.as_str()).unwrap_or("");
        smtp.send(from, &d.delist.address, &r.raw);
    }
    smtp.quit();
    wait_for_mail(&d.delist, "INBOX", reqs.len());

    d.run_once_ok();

    // The delist mailbox: everything handled and filed, nothing left or quarantined.
    let mut inbox = ImapReader::login(&d.delist);
    assert_eq!(inbox.count("INBOX"), 0, "left in INBOX:\n{}", summary(&inbox.messages("INBOX")));
    assert_eq!(inbox.count("Processed") as usize, reqs.len());
    assert_eq!(inbox.count("Quarantine"), 0);

    // The database: one row per request, with its action.
    let recorded: BTreeMap<String, (String, String)> = d
        .rows("SELECT message_id, action, outcome FROM messages")
        .into_iter()
        .map(|r| (r[0].clone(), (r[1].clone(), r[2].clone())))
        .collect();
    assert_eq!(recorded.len(), reqs.len(), "{recorded:#?}");
    for r in &reqs {
        let (action, outcome) = recorded.get(&r.message_id).unwrap_or_else(|| panic!("{} not recorded: {recorded:#?}", r.role));
        assert_eq!(action, r.action, "{}: {recorded:#?}", r.role);
        let want_outcome = if r.action == "ignore" { "ignored" } else { "processed" };
        assert_eq!(outcome, want_outcome, "{}", r.role);
    }
    let cases = d.cases();

    // Each reply, read back from its recipient's mailbox.
    for r in &reqs {
        let Some((to, lang, subject_has, body_has)) = &r.reply else { continue };
        let got = wait_for_mail(to, "INBOX", 1);
        assert_eq!(got.len(), 1, "{}: more than one reply:\n{}", r.role, summary(&got));
        let reply = &got[0];
        assert_reply_headers(reply, &d, to, &r.message_id, lang);
        let (subject, body) = (subject(reply), body_text(reply));
        assert!(subject.contains(subject_has), "{}: subject {subject:?} lacks {subject_has:?}", r.role);
        assert!(body.contains(body_has.as_str()), "{}: body lacks {body_has:?}:\n{body}", r.role);
        if r.action == "acknowledge" {
            // The case tag in the subject, so that the sender's answer threads into the case.
            let case = case_by_ip(&cases, body_has);
            let tag = format!("[{}]", case["ref"].as_str().unwrap());
            assert!(subject.contains(&tag), "{}: subject {subject:?} lacks {tag}", r.role);
            assert_eq!(case["state"], "open");
            assert!(case["due_at"].is_string(), "{case}");
        }
    }
    // Japanese came in as ISO-2022-JP; the reply must read as Japanese once decoded.
    let ja = wait_for_mail(&d.account("ja"), "INBOX", 1);
    assert!(body_text(&ja[0]).contains("山田 様"), "{}", body_text(&ja[0]));

    // Nobody else got mail: not From when Return-Path differs, not automatic mail.
    for role in ["en", "ooo", "list", "spam"] {
        let n = ImapReader::login(&d.account(role)).count("INBOX");
        assert_eq!(n, 0, "{role} got a reply it must not get");
    }
    // Cases only for the requests that asked for one (en, fr, ja; miss awaiting info).
    assert_eq!(cases.len(), 4, "{cases:#?}");
    let replies = d.rows("SELECT recipient, state FROM outbox ORDER BY id");
    assert_eq!(replies.len(), 6, "{replies:?}");
    assert!(replies.iter().all(|r| r[1] == "sent"), "{replies:?}");

    follow_up_completes_the_missing_info_case(&d, &cases);
}

/// The missing-info sender answers our reply with the IP: the case opens, and they get an
/// acknowledgement in the same thread.
fn follow_up_completes_the_missing_info_case(d: &Delistd, cases: &[Value]) {
    let miss = d.account("miss");
    let waiting: Vec<&Value> = cases.iter().filter(|c| c["state"] == "awaiting_info").collect();
    assert_eq!(waiting.len(), 1, "{cases:#?}");
    let case_ref = waiting[0]["ref"].as_str().unwrap().to_string();
    assert_eq!(waiting[0]["sender"].as_str().unwrap(), miss.address);

    let ours = wait_for_mail(&miss, "INBOX", 1).remove(0);
    let ours_id = header(&ours, "Message-ID").unwrap();
    let follow_up_mid = "miss-2@senders.example.test";
    let follow_up = text_message(
        &format!("Noc Team <{}>", miss.address),
        &d.delist.address,
        &format!("Re: {}", subject(&ours)),
        follow_up_mid,
        &[("In-Reply-To", &ours_id), ("References", &format!("<miss-1@senders.example.test> {ours_id}"))],
        &format!("Hello,\n\nhere is the full line we got:\n\n{}\n\nThanks,\nNoc Team\n", ndr("5.7.511", "203.0.113.99")),
    );
    send_mail(&miss.address, &d.delist.address, &follow_up);
    wait_for_mail(&d.delist, "INBOX", 1);

    d.run_once_ok();

    let shown = d.show(&case_ref);
    assert_eq!(shown["case"]["state"], "open", "{shown:#}");
    assert_eq!(shown["case"]["ip"], "203.0.113.99", "{shown:#}");
    assert!(shown["case"]["due_at"].is_string(), "{shown:#}");
    let kinds: Vec<&str> = shown["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"completed"), "{kinds:?}");
    let replies = shown["replies"].as_array().unwrap();
    assert_eq!(replies.len(), 2, "{shown:#}");
    assert!(replies.iter().all(|r| r["state"] == "sent"), "{shown:#}");
    let recorded = d.rows(&format!("SELECT action FROM messages WHERE message_id = '{follow_up_mid}'"));
    assert_eq!(recorded, vec![vec!["follow_up".to_string()]]);

    let got = wait_for_mail(&miss, "INBOX", 2);
    assert_eq!(got.len(), 2, "{}", summary(&got));
    let ack = &got[1];
    assert_reply_headers(ack, d, &miss, follow_up_mid, "en");
    let s = subject(ack);
    assert!(s.contains(&format!("[{case_ref}]")) && s.contains("Delisting request received"), "{s:?}");
    assert!(body_text(ack).contains("203.0.113.99"), "{}", body_text(ack));
    // The thread goes back to the first request.
    let refs = header(ack, "References").unwrap_or_default();
    assert!(refs.contains("<miss-1@senders.example.test>") && refs.contains(&ours_id), "{refs:?}");

    let mut inbox = ImapReader::login(&d.delist);
    assert_eq!(inbox.count("INBOX"), 0);
    assert_eq!(inbox.count("Processed"), 11);
}
